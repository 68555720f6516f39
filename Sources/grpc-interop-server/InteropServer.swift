import ArgumentParser
import Dispatch
import Foundation
import GRPCWire
import Logging
import Synchronization

/// grpc.testing.TestService on GRPCWire, for grpc's interop tests (Tests/python/interop) and
/// the benchmark (Scripts/bench-grpc.sh).
@main
struct InteropServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-interop-server",
        abstract: "Serves grpc.testing.TestService over h2c; prints 'listening on PORT' first.")

    @Option(help: "Port to listen on; 0 picks a free one.")
    var port = 50051

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "Event loop threads (default: one per core).")
    var threads: Int?

    @Option(help: "Largest accepted request message, in bytes.")
    var maxReceiveBytes = 4 << 20

    @Option(help: "Close connections idle for this many seconds (0 = never).")
    var idleTimeoutSeconds = 300.0

    @Option(help: "Grace period for in-flight calls on SIGTERM/SIGINT, in seconds.")
    var shutdownGraceSeconds = 5.0

    @Flag(help: "Count calls by status and print the counts to stderr at shutdown.")
    var stats = false

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel = "warning"

    func run() async throws {
        var logger = Logger(label: "grpc-interop-server")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .warning

        var config = GRPCServer.Config.defaults
        config.host = host
        config.port = port
        config.maxReceiveMessageBytes = maxReceiveBytes
        config.idleTimeout = idleTimeoutSeconds > 0 ? .milliseconds(Int64(idleTimeoutSeconds * 1000)) : nil
        config.shutdownGracePeriod = .milliseconds(Int64(shutdownGraceSeconds * 1000))
        if let threads { config.eventLoopThreads = threads }

        let counter = stats ? StatusCounter() : nil
        var interceptors: [any ServerInterceptor] = [EchoMetadataInterceptor()]
        if let counter { interceptors.insert(counter, at: 0) }

        let server = GRPCServer(
            config: config, services: [TestService.definition], descriptorSets: [InteropDescriptors.fileDescriptorSetBase64],
            interceptors: interceptors, logger: logger)
        let bound = try await server.start()
        // Written straight to fd 1, unbuffered: the test harness waits for this line.
        FileHandle.standardOutput.write(Data("listening on \(bound)\n".utf8))

        // Signals end the server gracefully (the default action would kill it mid-call).
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let sources = [SIGTERM, SIGINT].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { server.beginGracefulShutdown() }
            source.resume()
            return source
        }
        try await server.run()
        sources.forEach { $0.cancel() }
        if let counter { FileHandle.standardError.write(Data((counter.report() + "\n").utf8)) }
    }
}

/// Echoes `x-grpc-test-echo-initial` into the response headers and
/// `x-grpc-test-echo-trailing-bin` into the trailers (interop case custom_metadata).
struct EchoMetadataInterceptor: ServerInterceptor {
    func intercept(_ context: ServerContext, next: @Sendable (ServerContext) async throws -> Void) async throws {
        // One pass, no allocation for the usual request without echo headers (this server is
        // also the benchmark subject).
        for (name, value) in context.metadata where name.hasPrefix("x-grpc-test-echo-") {
            switch (name, value) {
            case ("x-grpc-test-echo-initial", .string(let text)):
                context.response.setInitial(["x-grpc-test-echo-initial": .string(text)])
            case ("x-grpc-test-echo-trailing-bin", .binary(let bytes)):
                context.response.addTrailing("x-grpc-test-echo-trailing-bin", binary: bytes)
            default:
                break
            }
        }
        try await next(context)
    }
}

/// Counts finished calls by status code (the benchmark's check that calls really succeed:
/// h2load only looks at the HTTP status).
final class StatusCounter: ServerInterceptor {
    private let ok = Atomic<Int>(0)
    private let failed = Atomic<Int>(0)

    func intercept(_ context: ServerContext, next: @Sendable (ServerContext) async throws -> Void) async throws {
        do {
            try await next(context)
            ok.add(1, ordering: .relaxed)
        } catch {
            failed.add(1, ordering: .relaxed)
            throw error
        }
    }

    func report() -> String {
        "calls: ok=\(ok.load(ordering: .relaxed)) failed=\(failed.load(ordering: .relaxed))"
    }
}
