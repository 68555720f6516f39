import SwiftProtobuf

/// A service to register with ``GRPCServer``: its full name and a handler per method.
///
/// ```swift
/// var echo = ServiceDefinition(name: "echo.Echo")
/// echo.unary("Get") { (request: EchoRequest, context) in EchoResponse.with { $0.text = request.text } }
/// ```
public struct ServiceDefinition: Sendable {
    /// The full service name, `pkg.Service`.
    public let name: String
    /// Method name → handler.
    var methods: [String: RegisteredMethod] = [:]

    public init(name: String) {
        self.name = name
    }

    /// The registered method names.
    public var methodNames: [String] { methods.keys.sorted() }

    /// One request, one response.
    public mutating func unary<Req: SwiftProtobuf.Message, Res: SwiftProtobuf.Message>(
        _ method: String, _ handler: @escaping @Sendable (Req, ServerContext) async throws -> Res
    ) {
        methods[method] = RegisteredMethod(kind: .unary) { call, context in
            let request: Req = try call.decode(call.unaryRequest!)
            let response = try await handler(request, context)
            try call.writeLast(call.encode(response))
        }
    }

    /// One request, one response, with a fast path for answers that are ready at once (a
    /// cached read): `immediate` runs synchronously as soon as the request is complete, on
    /// the connection's event loop and without creating a task when no interceptor is
    /// registered. It returns the response, or nil to hand the call (and the decoded request)
    /// to `handler`. `immediate` must not block or wait; what it throws ends the call like an
    /// error thrown by `handler`.
    ///
    /// Both return an ``EncodedMessage``, so a response shared by many calls is serialized
    /// once per codec.
    public mutating func unary<Req: SwiftProtobuf.Message, Res: SwiftProtobuf.Message>(
        _ method: String,
        immediate: @escaping @Sendable (Req, ServerContext) throws -> EncodedMessage<Res>?,
        _ handler: @escaping @Sendable (Req, ServerContext) async throws -> EncodedMessage<Res>
    ) {
        methods[method] = RegisteredMethod(
            kind: .unary,
            run: { call, context in
                // The path taken under interceptors: same order, inside the task.
                let request: Req = try call.decode(call.unaryRequest!)
                var response = try immediate(request, context)
                if response == nil { response = try await handler(request, context) }
                try call.writeLast(call.encode(response!))
            },
            immediate: { call, context in
                let request: Req = try call.decode(call.unaryRequest!)
                if let response = try immediate(request, context) {
                    try call.writeLast(call.encode(response))
                    return nil
                }
                return { call, context in
                    try call.writeLast(call.encode(try await handler(request, context)))
                }
            })
    }

    /// One request, a stream of responses.
    ///
    /// `endingOnShutdown`: the status its calls end with as soon as the server begins a
    /// graceful shutdown, rather than after the grace period, for a stream that never ends
    /// by itself and that clients resume elsewhere (a subscription). Nil: they get the grace
    /// period like any call.
    public mutating func serverStreaming<Req: SwiftProtobuf.Message, Res: SwiftProtobuf.Message>(
        _ method: String,
        endingOnShutdown: GRPCStatus? = nil,
        _ handler: @escaping @Sendable (Req, ResponseStream<Res>, ServerContext) async throws -> Void
    ) {
        methods[method] = RegisteredMethod(
            kind: .serverStreaming,
            run: { call, context in
                let request: Req = try call.decode(call.unaryRequest!)
                try await handler(request, ResponseStream(call: call), context)
            }, endingOnShutdown: endingOnShutdown)
    }

    /// A stream of requests, one response (sent after the handler returns).
    public mutating func clientStreaming<Req: SwiftProtobuf.Message, Res: SwiftProtobuf.Message>(
        _ method: String,
        _ handler: @escaping @Sendable (RequestStream<Req>, ServerContext) async throws -> Res
    ) {
        methods[method] = RegisteredMethod(kind: .clientStreaming) { call, context in
            let response = try await handler(RequestStream(call: call), context)
            try call.writeLast(call.encode(response))
        }
    }

    /// Streams both ways, independently.
    public mutating func bidirectionalStreaming<Req: SwiftProtobuf.Message, Res: SwiftProtobuf.Message>(
        _ method: String,
        _ handler: @escaping @Sendable (RequestStream<Req>, ResponseStream<Res>, ServerContext) async throws -> Void
    ) {
        methods[method] = RegisteredMethod(kind: .bidirectionalStreaming) { call, context in
            try await handler(RequestStream(call: call), ResponseStream(call: call), context)
        }
    }
}

/// A type-erased method: how its requests arrive and the closure that runs it.
struct RegisteredMethod: Sendable {
    typealias Body = @Sendable (ServerCall, ServerContext) async throws -> Void
    /// Answers the call synchronously and returns nil, or returns what is left to run in a
    /// task (see ``ServiceDefinition/unary(_:immediate:_:)``).
    typealias Immediate = @Sendable (ServerCall, ServerContext) throws -> Body?

    enum Kind: Sendable {
        case unary, serverStreaming, clientStreaming, bidirectionalStreaming

        /// Requests are streamed to the handler (started on HEADERS) rather than collected
        /// first (started on END_STREAM).
        var clientStreams: Bool { self == .clientStreaming || self == .bidirectionalStreaming }
    }

    let kind: Kind
    /// The whole call, as a task (always used when interceptors are registered).
    let run: Body
    /// The synchronous fast path, when the method has one.
    let immediate: Immediate?
    /// Ends calls in flight with this status when a graceful shutdown begins.
    let endingOnShutdown: GRPCStatus?

    init(kind: Kind, run: @escaping Body, immediate: Immediate? = nil, endingOnShutdown: GRPCStatus? = nil) {
        self.kind = kind
        self.run = run
        self.immediate = immediate
        self.endingOnShutdown = endingOnShutdown
    }
}

/// The responses of a server-streaming or bidirectional call.
public struct ResponseStream<Message: SwiftProtobuf.Message>: Sendable {
    private enum Backing: Sendable {
        case call(ServerCall)
        case sink(@Sendable (Message) async throws -> Void)
    }

    private let backing: Backing

    init(call: ServerCall) {
        backing = .call(call)
    }

    /// A stream that hands every message to `sink`, for calling handlers directly in tests.
    public init(_ sink: @escaping @Sendable (Message) async throws -> Void) {
        backing = .sink(sink)
    }

    /// Sends one message. Suspends while the client is not reading (HTTP/2 flow control plus
    /// a small per-stream buffer); throws a ``GRPCStatus`` once the call has ended (client
    /// cancelled, deadline passed, connection lost).
    public func send(_ message: Message) async throws {
        switch backing {
        case .call(let call): try await call.write(call.encode(message))
        case .sink(let sink): try await sink(message)
        }
    }

    /// Sends a message prepared once for many calls (a broadcast: the same event to every
    /// subscriber). The message is serialized at most once per codec and those bytes are
    /// shared by every call that sends it; gzip, when the call uses it, still compresses per
    /// call. Otherwise the same as ``send(_:)``.
    public func send(_ encoded: EncodedMessage<Message>) async throws {
        switch backing {
        case .call(let call): try await call.write(call.encode(encoded))
        case .sink(let sink): try await sink(encoded.message)
        }
    }

    /// Sends one message, compressed or not regardless of
    /// ``ResponseMetadata/setCompression(_:)``. Compression still needs the client to accept
    /// gzip and, if this is not the first message, the response headers to have announced it.
    public func send(_ message: Message, compress: Bool) async throws {
        switch backing {
        case .call(let call): try await call.write(call.encode(message, compress: compress))
        case .sink(let sink): try await sink(message)
        }
    }
}

/// The requests of a client-streaming or bidirectional call. Ends (returns nil) when the
/// client half-closes; throws a ``GRPCStatus`` on bad input or when the call is cancelled.
public struct RequestStream<Message: SwiftProtobuf.Message>: AsyncSequence, Sendable {
    public typealias Element = Message

    fileprivate enum Backing: Sendable {
        case call(ServerCall)
        case messages([Message])
    }

    private let backing: Backing

    init(call: ServerCall) {
        backing = .call(call)
    }

    /// A stream of fixed messages, for calling handlers directly in tests.
    public init(_ messages: [Message]) {
        backing = .messages(messages)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        private let call: ServerCall?
        private var messages: IndexingIterator<[Message]>

        fileprivate init(_ backing: Backing) {
            switch backing {
            case .call(let call):
                self.call = call
                self.messages = [].makeIterator()
            case .messages(let messages):
                self.call = nil
                self.messages = messages.makeIterator()
            }
        }

        public mutating func next() async throws -> Message? {
            guard let call else { return messages.next() }
            guard let framed = try await call.nextRequestMessage() else { return nil }
            return try call.decode(framed)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(backing)
    }
}

/// Code that runs around every handler: logging, authentication, metrics.
///
/// Call `next` to run the rest of the chain and the handler (possibly with a changed
/// context); throw a ``GRPCStatus`` to end the call with that status instead.
public protocol ServerInterceptor: Sendable {
    func intercept(
        _ context: ServerContext, next: @Sendable (ServerContext) async throws -> Void
    ) async throws
}
