#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A gRPC server over HTTP/2 (cleartext, prior knowledge): nghttp2 for the protocol, SwiftNIO
/// for the sockets.
///
/// ```swift
/// let server = GRPCServer(config: .defaults, services: [orders], descriptorSets: [OrderProtoDescriptors.fileDescriptorSetBase64], logger: logger)
/// let port = try await server.start()
/// try await server.run()          // until beginGracefulShutdown() (or task cancellation)
/// ```
///
/// `grpc.health.v1.Health` (see ``health``) and server reflection (`grpc.reflection.v1` and
/// `v1alpha`) are registered automatically.
///
/// - Important: handlers run as Swift tasks that prefer the connection's event loop as their
///   executor (``Config/runsHandlersOnEventLoop``): a handler that never suspends runs
///   entirely inside the read that delivered its request. Handlers must therefore not block
///   the thread; move blocking work to your own executor or thread.
public final class GRPCServer: Sendable {
    public struct Config: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port (``GRPCServer/start()`` returns it).
        public var port = 50051
        /// SETTINGS_MAX_CONCURRENT_STREAMS per connection.
        public var maxConcurrentStreams = 100
        /// Larger request messages (by their length prefix, or once decompressed) end the call
        /// with RESOURCE_EXHAUSTED.
        public var maxReceiveMessageBytes = 4 << 20
        /// One per CPU this process may run on (its affinity mask, not only its cgroup:
        /// two loops pinned to one core would just take turns).
        public var eventLoopThreads = GRPCServer.usableCores
        /// The connection-level receive window.
        public var connectionWindowBytes = 1 << 24
        /// SETTINGS_INITIAL_WINDOW_SIZE: per-stream receive window; also bounds what an unread
        /// request stream can make the server buffer.
        public var streamWindowBytes = 1 << 20
        /// Bytes of incomplete request messages one connection may hold before the streams
        /// sending them wait at their flow-control windows. An incomplete message has its
        /// stream window reopened as it arrives (it must be whole to be decoded), so without
        /// this a client sending `maxConcurrentStreams` messages of `maxReceiveMessageBytes`
        /// less their last byte made the server hold all of them (400 MiB by default) for as
        /// long as it kept the connection. The oldest incomplete message always goes on, so
        /// several large ones still arrive, one after another. A connection then holds at most
        /// about this, plus what each stream's window lets it send (`streamWindowBytes` ×
        /// `maxConcurrentStreams`), plus one message.
        public var partialMessageBytesPerConnection = 16 << 20
        /// How long in-flight calls may run after ``GRPCServer/beginGracefulShutdown()``.
        public var shutdownGracePeriod: Duration = .seconds(10)
        /// A connection with no open stream and no input for this long is closed (GOAWAY).
        /// Also ends connections that never send anything. nil disables it.
        public var idleTimeout: Duration? = .seconds(300)
        /// A connection whose client has not sent the HTTP/2 preface and its SETTINGS this
        /// long after connecting is closed: it is no gRPC client (or a stuck one), and it holds
        /// a file descriptor the idle timeout would leave it for 5 minutes. grpc-go allows
        /// 120 s; clients send both at once. nil disables it.
        public var handshakeTimeout: Duration? = .seconds(20)
        /// Run handlers on their connection's event loop (task executor preference). When
        /// false they run on the global concurrent executor and every interaction with the
        /// connection hops threads. Either way, the `immediate` closures of
        /// ``ServiceDefinition/unary(_:immediate:_:)`` run on the loop, without a task.
        public var runsHandlersOnEventLoop = true

        public static var defaults: Config { Config() }

        public init() {}
    }

    /// The health service's state: set it as the application becomes ready or not.
    public let health: HealthStatus

    private let runtime: ServerRuntime
    private let connections = ConnectionRegistry()
    private let lifecycle = Mutex(Lifecycle.idle)

    private enum Lifecycle {
        case idle
        case starting
        case started(group: MultiThreadedEventLoopGroup, channel: any Channel)
        case shuttingDown(group: MultiThreadedEventLoopGroup, channel: any Channel)
        case stopped
    }

    /// - Parameters:
    ///   - descriptorSets: base64 serialized `FileDescriptorSet`s (with imports) of the
    ///     registered services, for reflection (the generated `…Descriptors.fileDescriptorSetBase64`).
    public init(
        config: Config, services: [ServiceDefinition], descriptorSets: [String],
        interceptors: [any ServerInterceptor] = [], logger: Logger
    ) {
        let health = HealthStatus(services: services.map(\.name))
        self.health = health
        var all = services
        all.append(health.serviceDefinition)
        let reflection = ReflectionService(
            descriptorSets: descriptorSets + [GRPCWireDescriptors.fileDescriptorSetBase64],
            serviceNames: all.map(\.name) + ReflectionService.serviceNames, logger: logger)
        all.append(contentsOf: reflection.serviceDefinitions)
        self.runtime = ServerRuntime(config: config, services: all, interceptors: interceptors, logger: logger)
    }

    /// Binds the listening socket and starts accepting connections. Returns the bound port.
    public func start() async throws -> Int {
        let proceed = lifecycle.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .starting
            return true
        }
        guard proceed else { throw GRPCStatus(.failedPrecondition, "The server was already started") }

        let config = runtime.config
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, config.eventLoopThreads))
        let runtime = self.runtime
        let connections = self.connections
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // A failed accept (no file descriptor left) pauses accepting instead of spinning.
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptPause(logger: runtime.logger))
                }
            }
            // A TCP-level option: `.socketOption` would set option 1 of SOL_SOCKET, SO_DEBUG,
            // which only CAP_NET_ADMIN may set; NIO closes a connection whose option fails.
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(GRPCConnectionHandler(runtime: runtime))
                    connections.add(channel)
                }
            }
        do {
            let channel = try await bootstrap.bind(host: config.host, port: config.port).get()
            lifecycle.withLock { $0 = .started(group: group, channel: channel) }
            let port = channel.localAddress?.port ?? config.port
            runtime.logger.info("gRPC server listening", metadata: ["host": "\(config.host)", "port": "\(port)"])
            return port
        } catch {
            lifecycle.withLock { $0 = .idle }
            try? await group.shutdownGracefully()
            throw BindError(host: config.host, port: config.port, underlying: error)
        }
    }

    /// `start()` could not listen: the address is taken, not local, or not allowed.
    public struct BindError: Error, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var underlying: any Error
        /// The system's words for it ("Address already in use"), not NIO's description
        /// ("bind(descriptor:ptr:bytes:): Address already in use) (errno: 98)").
        public var description: String {
            (underlying as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(underlying)"
        }
    }

    /// Serves until a graceful shutdown has finished (starting the server first if needed).
    /// Cancelling the calling task begins a graceful shutdown.
    public func run() async throws {
        let needsStart = lifecycle.withLock { state -> Bool in
            if case .idle = state { return true }
            return false
        }
        if needsStart { _ = try await start() }
        let current: (MultiThreadedEventLoopGroup, any Channel)? = lifecycle.withLock { state in
            switch state {
            case .started(let group, let channel), .shuttingDown(let group, let channel): return (group, channel)
            default: return nil
            }
        }
        guard let (group, channel) = current else { return }
        await withTaskCancellationHandler {
            try? await channel.closeFuture.get()
            await connections.waitUntilEmpty()
        } onCancel: {
            self.beginGracefulShutdown()
        }
        try? await group.shutdownGracefully()
        lifecycle.withLock { $0 = .stopped }
        runtime.logger.info("gRPC server stopped")
    }

    /// How many calls ended with each status since the server started: cheap to keep (one
    /// relaxed atomic add per OK call), for metrics and for checking load tests (h2load only
    /// looks at HTTP statuses). Calls the client cancelled count as CANCELLED.
    public func finishedCallCounts() -> [GRPCStatus.Code: Int] {
        runtime.counters.snapshot()
    }

    /// Stops accepting connections, sends GOAWAY on every connection, lets in-flight calls
    /// finish for up to ``Config/shutdownGracePeriod``, then closes. ``run()`` returns once
    /// every connection is closed. Health watchers get NOT_SERVING and their streams end.
    public func beginGracefulShutdown() {
        let channel: (any Channel)? = lifecycle.withLock { state in
            switch state {
            case .started(let group, let channel):
                state = .shuttingDown(group: group, channel: channel)
                return channel
            case .idle:
                state = .stopped
                return nil
            default:
                return nil
            }
        }
        guard let channel else { return }
        runtime.logger.info("gRPC server shutting down")
        health.enterShutdown()
        channel.close(promise: nil)
        connections.shutDown(gracePeriod: runtime.config.shutdownGracePeriod)
    }

    /// Cuts a graceful shutdown short: every connection closes now and the calls still in
    /// flight are cancelled (their clients lose the connection). Does nothing unless
    /// ``beginGracefulShutdown()`` came first.
    public func endGracePeriod() {
        let draining = lifecycle.withLock { state -> Bool in
            if case .shuttingDown = state { return true }
            return false
        }
        guard draining else { return }
        runtime.logger.info("gRPC server closing its connections without waiting for their calls")
        connections.closeAll()
    }
}

/// What every connection of one server shares (immutable).
final class ServerRuntime: Sendable {
    let config: GRPCServer.Config
    /// `/pkg.Service/Method` → method.
    let methods: [String: RegisteredMethod]
    let serviceNames: Set<String>
    let interceptors: [any ServerInterceptor]
    let logger: Logger
    let http2Settings: NGHTTP2Settings
    let counters = CallCounters()

    init(config: GRPCServer.Config, services: [ServiceDefinition], interceptors: [any ServerInterceptor], logger: Logger) {
        self.config = config
        var methods: [String: RegisteredMethod] = [:]
        for service in services {
            for (name, method) in service.methods {
                methods["/\(service.name)/\(name)"] = method
            }
        }
        self.methods = methods
        self.serviceNames = Set(services.map(\.name))
        self.interceptors = interceptors
        self.logger = logger
        self.http2Settings = NGHTTP2Settings(
            maxConcurrentStreams: config.maxConcurrentStreams,
            initialStreamWindow: config.streamWindowBytes,
            connectionWindow: config.connectionWindowBytes,
            maxHeaderListSize: 16 * 1024)
    }

    func unimplementedMessage(for path: String) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count == 2 else { return "Malformed method path \"\(path)\"" }
        if serviceNames.contains(String(parts[0])) {
            return "Unknown method \(parts[1]) for service \(parts[0])"
        }
        return "Unknown service \(parts[0])"
    }

    /// Runs one call through the interceptors and its handler (`body`: the method's `run`, or
    /// what its immediate path left to do), then sends its status.
    func run(call: ServerCall, body: @escaping RegisteredMethod.Body, context: ServerContext) async {
        do {
            if interceptors.isEmpty {
                try await body(call, context)
            } else {
                try await intercept(from: 0, context) { try await body(call, $0) }
            }
            call.finish(.ok)
        } catch {
            finish(call, context: context, error: error)
        }
    }

    /// Ends a call whose handler threw `error`.
    func finish(_ call: ServerCall, context: ServerContext, error: any Error) {
        if !(error is GRPCStatus), !(error is CancellationError) {
            logger.warning(
                "Handler failed", metadata: ["path": "\(context.path)", "error": "\(String(reflecting: error))"])
        }
        call.finish(GRPCStatus(mapping: error))
    }

    private func intercept(
        from index: Int, _ context: ServerContext, _ handler: @Sendable (ServerContext) async throws -> Void
    ) async throws {
        if index == interceptors.count {
            try await handler(context)
        } else {
            try await interceptors[index].intercept(context) { next in
                try await self.intercept(from: index + 1, next, handler)
            }
        }
    }
}

/// The open connections, so shutdown can reach them and `run()` can wait for them.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var gracePeriod: Duration?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let grace = state.withLock { state in
            state.channels[id] = channel
            return state.gracePeriod
        }
        if let grace {
            channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent(gracePeriod: grace))
        }
        channel.closeFuture.whenComplete { _ in self.remove(id) }
    }

    private func remove(_ id: ObjectIdentifier) {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { state in
            state.channels[id] = nil
            guard state.channels.isEmpty else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func shutDown(gracePeriod: Duration) {
        let channels = state.withLock { state in
            state.gracePeriod = gracePeriod
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent(gracePeriod: gracePeriod))
        }
    }

    /// Closes every connection now, calls and all; one accepted meanwhile gets no grace either.
    func closeAll() {
        let channels = state.withLock { state in
            state.gracePeriod = .zero
            return Array(state.channels.values)
        }
        for channel in channels { channel.close(promise: nil) }
    }

    /// Returns once shutdown has begun and no connection is left.
    func waitUntilEmpty() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.channels.isEmpty { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// Finished calls by status code. OK, by far the most common, is a lone atomic; the rest
/// share a lock.
final class CallCounters: Sendable {
    private let ok = Atomic<Int>(0)
    private let others = Mutex<[Int: Int]>([:])

    func record(_ code: GRPCStatus.Code) {
        if code == .ok {
            ok.add(1, ordering: .relaxed)
        } else {
            others.withLock { $0[code.rawValue, default: 0] += 1 }
        }
    }

    func snapshot() -> [GRPCStatus.Code: Int] {
        var result: [GRPCStatus.Code: Int] = [:]
        let okCount = ok.load(ordering: .relaxed)
        if okCount > 0 { result[.ok] = okCount }
        for (code, count) in others.withLock({ $0 }) {
            result[GRPCStatus.Code(rawValue: code)] = count
        }
        return result
    }
}

extension GRPCServer {
    /// The CPUs this process may run on: the smaller of NIO's count (cgroup limits) and
    /// the scheduler affinity mask (`taskset`, `sched_setaffinity`).
    public static var usableCores: Int {
        var count = System.coreCount
        if let inMask = affinityCPUCount(), inMask > 0 { count = min(count, inMask) }
        return max(1, count)
    }

    /// The bits of `Cpus_allowed` in /proc/self/status (Glibc's `sched_getaffinity` is
    /// behind _GNU_SOURCE, which Swift's Glibc module does not define). nil elsewhere.
    private static func affinityCPUCount() -> Int? {
        #if canImport(Glibc)
        guard let file = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            guard text.hasPrefix("Cpus_allowed:") else { continue }
            return text.dropFirst("Cpus_allowed:".count).reduce(0) { n, c in n + (c.hexDigitValue?.nonzeroBitCount ?? 0) }
        }
        #endif
        return nil
    }
}
