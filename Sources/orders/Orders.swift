import ArgumentParser
import Foundation
import SwiftProtobuf

@main
struct Orders: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orders",
        abstract: "Command-line client of the ride-hailing order service (ridehailing.orders.v1.OrderService).",
        discussion: """
            Talks gRPC over HTTP/2 cleartext. On a non-OK status it prints \
            "error: <STATUS>: <message>" and the status details to standard error and exits \
            with the gRPC status code (e.g. 10 for ABORTED, 14 UNAVAILABLE when the server \
            cannot be reached); usage errors exit with 64.
            """,
        subcommands: [
            Place.self, Get.self, Accept.self, Complete.self, Cancel.self, Events.self, List.self, Watch.self,
        ]
    )

    @OptionGroup var global: GlobalOptions
}

/// Options every command takes, before or after the command name.
struct GlobalOptions: ParsableArguments {
    static let defaultServer = "127.0.0.1:50051"
    static let defaultUnaryTimeout = 30.0
    /// A stream fails (UNAVAILABLE) after this long without a byte: three of the server's
    /// 5-second heartbeats missed.
    static let streamIdleLimit: Duration = .seconds(15)

    @Option(name: .long, help: ArgumentHelp(
        "The server as HOST:PORT (default: $ORDERS_SERVER, else \(Self.defaultServer)).",
        valueName: "host:port"))
    var server: String?

    @Flag(name: .long, help: "Print proto3 JSON, one object per line.")
    var json = false

    @Option(name: .long, help: ArgumentHelp(
        "The call's deadline in seconds (default: \(Int(Self.defaultUnaryTimeout)) for single calls, none for watch).",
        valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, help: ArgumentHelp(
        "Wire encoding: proto (application/grpc) or json (application/grpc+json).", valueName: "codec"))
    var codec: GRPCCodec = .proto

    @Flag(name: .long, help: "Trace the HTTP/2 exchange (headers, trailers) on standard error.")
    var verbose = false

    func validate() throws {
        if let timeout, !(timeout > 0 && timeout <= 8_640_000) {
            throw ValidationError("--timeout must be a number of seconds above 0.")
        }
        // Whatever its source: the value is pasted into the request URL.
        let source = server != nil ? "--server" : "ORDERS_SERVER"
        if let problem = ServerArgument.problem(with: resolvedServer) {
            throw ValidationError(
                "\(source) must be HOST:PORT (an IPv6 host in brackets, e.g. [::1]:50051), got \"\(resolvedServer.escapingControlCharacters)\": \(problem).")
        }
    }

    var resolvedServer: String {
        if let server { return server }
        if let fromEnvironment = ProcessInfo.processInfo.environment["ORDERS_SERVER"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return Self.defaultServer
    }

    /// A client for one call; `streaming` calls get no default deadline.
    func client(streaming: Bool = false) -> OrderServiceClient {
        let seconds = timeout ?? (streaming ? nil : Self.defaultUnaryTimeout)
        var grpc = GRPCClient(authority: resolvedServer, codec: codec)
        grpc.timeout = seconds.map { .milliseconds(Int64(($0 * 1000).rounded(.up))) }
        if streaming { grpc.idleLimit = Self.streamIdleLimit }
        grpc.isCancelled = { Terminal.interrupted || Terminal.outputClosed }
        grpc.verbose = verbose
        return OrderServiceClient(grpc: grpc)
    }

    /// Runs one command: installs the signal handlers, and turns a failed call
    /// into an error report and the status code as the exit code.
    ///
    /// - Parameters:
    ///   - streaming: no default deadline, and Ctrl-C is a normal end (exit 0).
    ///   - commandHint: advice to add to a failure report, if any.
    func run(
        streaming: Bool = false,
        commandHint: ((GRPCStatusError) -> String?)? = nil,
        _ body: (OrderServiceClient) throws -> Void
    ) throws {
        Terminal.installSignalHandlers()
        do {
            try body(client(streaming: streaming))
        } catch is Terminal.OutputClosed {
            // The reader of our output went away: nothing left to do or say.
            return
        } catch let status as GRPCStatusError {
            if status.code == .cancelled, Terminal.outputClosed || (streaming && Terminal.interrupted) {
                return
            }
            var status = status
            if status.hint == nil { status.hint = commandHint?(status) }
            Self.report(status)
            throw ExitCode(Int32(status.code.rawValue))
        }
    }

    static func report(_ status: GRPCStatusError) {
        var lines = ["error: \(status.code.name): \(status.message)"]
        if let details = status.details {
            lines += details.describedDetails().map { "  " + $0 }
        }
        if let hint = status.hint { lines.append("hint: \(hint)") }
        Terminal.printError(lines.map(\.escapingControlCharacters).joined(separator: "\n"))
    }

    /// Prints `message` as one line of proto3 JSON.
    func printJSON(_ message: some SwiftProtobuf.Message) throws {
        try Terminal.print(try message.jsonString())
    }
}
