import ArgumentParser
import Dispatch
import Foundation
import GRPCWire
import Logging

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

    @Flag(help: "Print the number of calls by status to stderr at shutdown.")
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

        let server = GRPCServer(
            config: config, services: [TestService.definition], descriptorSets: [InteropDescriptors.fileDescriptorSetBase64],
            logger: logger)
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
        if stats {
            let counts = server.finishedCallCounts()
            let others = counts.filter { $0.key != .ok }.map { "\($0.key.name)=\($0.value)" }.sorted()
            let line = "calls: ok=\(counts[.ok] ?? 0) failed=\(others.isEmpty ? "0" : others.joined(separator: ","))\n"
            FileHandle.standardError.write(Data(line.utf8))
        }
    }
}
