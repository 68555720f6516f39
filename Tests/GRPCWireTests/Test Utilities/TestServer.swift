import Foundation
import GRPCWire
import Logging
import SwiftProtobuf
import Synchronization

/// A GRPCServer on port 0 with a small test service, torn down by `withTestServer`.
struct TestServer {
    let server: GRPCServer
    let port: Int
    let probe: Probe
}

/// What handlers observed, for tests to check.
final class Probe: Sendable {
    let cancelled = Atomic<Int>(0)
    let sent = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    let handlerReturned = Atomic<Int>(0)
    /// Immediate-path calls that ran outside any task (on the connection's loop, directly).
    let immediateWithoutTask = Atomic<Int>(0)

    /// Waits until `condition` holds, for up to `timeout`.
    func wait(timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }
}

struct PlainFailure: Error {}

func testService(probe: Probe) -> ServiceDefinition {
    var service = ServiceDefinition(name: "test.Test")
    service.unary("Echo") { (request: Google_Protobuf_StringValue, context: ServerContext) in
        var initial: Metadata = [:]
        for (name, value) in context.metadata where name.hasPrefix("x-") {
            initial.add(name, value)
            switch value {
            case .string(let s): context.response.addTrailing(name, s)
            case .binary(let b): context.response.addTrailing(name, binary: b)
            }
        }
        context.response.setInitial(initial)
        return request
    }
    // "miss" goes on to the async handler, "bad" fails in the immediate path, anything else
    // is answered at once with one shared, pre-encoded reply.
    let cachedReply = EncodedMessage(Google_Protobuf_StringValue(stringLiteral: "cached"))
    service.unary(
        "Cached",
        immediate: { (request: Google_Protobuf_StringValue, context: ServerContext) -> EncodedMessage<Google_Protobuf_StringValue>? in
            if withUnsafeCurrentTask(body: { $0 == nil }) { probe.immediateWithoutTask.add(1, ordering: .relaxed) }
            switch request.value {
            case "miss": return nil
            case "bad": throw GRPCStatus(.invalidArgument, "bad request")
            default:
                context.response.addTrailing("x-path", "immediate")
                return cachedReply
            }
        },
        { request, context in
            context.response.addTrailing("x-path", "handler")
            return EncodedMessage(request)
        })
    service.unary("Sleep") { (request: Google_Protobuf_Empty, _: ServerContext) in
        do {
            try await Task.sleep(for: .seconds(30))
        } catch {
            probe.cancelled.add(1, ordering: .relaxed)
            throw error
        }
        return request
    }
    service.unary("SlowOK") { (request: Google_Protobuf_Empty, _: ServerContext) in
        try await Task.sleep(for: .milliseconds(500))
        probe.finished.add(1, ordering: .relaxed)
        return request
    }
    service.unary("Fail") { (_: Google_Protobuf_Empty, _: ServerContext) -> Google_Protobuf_Empty in
        throw PlainFailure()
    }
    // A status message or metadata of the size the request asks for (Int64Value).
    service.unary("LongStatus") { (request: Google_Protobuf_Int64Value, _: ServerContext) -> Google_Protobuf_Empty in
        throw GRPCStatus(.invalidArgument, String(repeating: "é", count: Int(request.value) / 2))
    }
    service.unary("BigTrailers") { (request: Google_Protobuf_Int64Value, context: ServerContext) -> Google_Protobuf_Empty in
        context.response.addTrailing("x-big", String(repeating: "t", count: Int(request.value)))
        return Google_Protobuf_Empty()
    }
    service.unary("Rich") { (_: Google_Protobuf_Empty, _: ServerContext) -> Google_Protobuf_Empty in
        var info = Google_Rpc_ErrorInfo()
        info.reason = "TEST"
        throw GRPCStatus(.failedPrecondition, "rich failure", details: [try Google_Protobuf_Any(message: info)])
    }
    // Reads only after a while (the requests pile up meanwhile), then checks they came in
    // order ("0", "1", …) and says how many in the trailer x-count.
    service.clientStreaming("CountLater") {
        (requests: RequestStream<Google_Protobuf_StringValue>, context: ServerContext) -> Google_Protobuf_Empty in
        try await Task.sleep(for: .milliseconds(300))
        var count = 0
        for try await request in requests {
            guard request.value == String(count) else { throw GRPCStatus(.dataLoss, "message \(count) was \(request.value)") }
            count += 1
        }
        context.response.addTrailing("x-count", String(count))
        return Google_Protobuf_Empty()
    }
    service.bidirectionalStreaming("Wait") {
        (requests: RequestStream<Google_Protobuf_Empty>, _: ResponseStream<Google_Protobuf_Empty>, _: ServerContext) in
        do {
            for try await _ in requests {}
            try await Task.sleep(for: .seconds(30))
        } catch {
            probe.cancelled.add(1, ordering: .relaxed)
            throw error
        }
    }
    /// 1,000 messages of 16 KiB, each counted once sent; a failed send counts as cancelled.
    @Sendable func flood(_ responses: ResponseStream<Google_Protobuf_BytesValue>) async throws {
        var message = Google_Protobuf_BytesValue()
        message.value = Data(count: 16 * 1024)
        do {
            for _ in 0..<1000 {
                try await responses.send(message)
                probe.sent.add(1, ordering: .relaxed)
            }
        } catch {
            probe.cancelled.add(1, ordering: .relaxed)
            throw error
        }
    }
    service.serverStreaming("Flood") {
        (_: Google_Protobuf_Empty, responses: ResponseStream<Google_Protobuf_BytesValue>, _: ServerContext) in
        try await flood(responses)
    }
    // Two tasks sending on one response stream at once (it is Sendable); the handler
    // returns once both stopped.
    service.serverStreaming("ParallelFlood") {
        (_: Google_Protobuf_Empty, responses: ResponseStream<Google_Protobuf_BytesValue>, _: ServerContext) in
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<2 { group.addTask { try? await flood(responses) } }
        }
        probe.handlerReturned.add(1, ordering: .relaxed)
    }
    // A subscription: one message, then nothing until the call ends; on a graceful
    // shutdown it ends at once with UNAVAILABLE.
    service.serverStreaming("Subscribe", endingOnShutdown: GRPCStatus(.unavailable, "shutting down; resume elsewhere")) {
        (_: Google_Protobuf_Empty, responses: ResponseStream<Google_Protobuf_Empty>, _: ServerContext) in
        try await responses.send(Google_Protobuf_Empty())
        probe.sent.add(1, ordering: .relaxed)
        do {
            try await Task.sleep(for: .seconds(60))
        } catch {
            probe.cancelled.add(1, ordering: .relaxed)
            throw error
        }
    }
    // One message prepared for every call (a broadcast): each call sends it twice, in its
    // own codec; `x-gzip` asks for compressed messages.
    let broadcast = EncodedMessage(Google_Protobuf_StringValue.with { $0.value = "broadcast" })
    service.serverStreaming("Broadcast") {
        (_: Google_Protobuf_Empty, responses: ResponseStream<Google_Protobuf_StringValue>, context: ServerContext) in
        context.response.setCompression(context.metadata[first: "x-gzip"] != nil)
        try await responses.send(broadcast)
        try await responses.send(broadcast)
        probe.sent.add(2, ordering: .relaxed)
    }
    return service
}

func withTestServer(
    configure: (inout GRPCServer.Config) -> Void = { _ in },
    interceptors: [any ServerInterceptor] = [],
    _ body: (TestServer) async throws -> Void
) async throws {
    var config = GRPCServer.Config.defaults
    config.port = 0
    config.eventLoopThreads = 1
    config.shutdownGracePeriod = .seconds(2)
    configure(&config)
    let probe = Probe()
    var logger = Logger(label: "GRPCWireTests")
    logger.logLevel = .critical
    let server = GRPCServer(
        config: config, services: [testService(probe: probe)], descriptorSets: [], interceptors: interceptors, logger: logger)
    let port = try await server.start()
    let running = Task { try await server.run() }
    do {
        try await body(TestServer(server: server, port: port, probe: probe))
    } catch {
        server.beginGracefulShutdown()
        _ = try? await running.value
        throw error
    }
    server.beginGracefulShutdown()
    try await running.value
}

// MARK: - nghttp (the nghttp2 command-line client) as a test client

/// Runs `nghttp -v` against the test server and returns its verbose output (frames,
/// headers and trailers). With `times` > 1 the same request goes that many times at once, on
/// one connection.
func nghttp(
    port: Int, path: String, body: [UInt8]? = nil, headers: [String] = ["content-type: application/grpc"],
    timeout: Int = 20, times: Int = 1
) async throws -> String {
    var arguments = ["-v", "-t", String(timeout), "-H", ":method: POST", "-H", "te: trailers", "-m", String(times)]
    for header in headers { arguments += ["-H", header] }
    var bodyFile: URL?
    if let body {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("grpcwire-\(UUID().uuidString).bin")
        try Data(body).write(to: url)
        arguments += ["-d", url.path]
        bodyFile = url
    }
    defer { if let bodyFile { try? FileManager.default.removeItem(at: bodyFile) } }
    arguments.append("http://127.0.0.1:\(port)\(path)")
    let arguments2 = arguments
    // Process.waitUntilExit blocks; keep it off the cooperative pool.
    return try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            do {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/nghttp")
                process.arguments = arguments2
                let pipe = Pipe()
                process.standardOutput = pipe
                process.standardError = pipe
                try process.run()
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(returning: String(decoding: data, as: UTF8.self))
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}

/// A framed protobuf message (5-byte prefix).
func framed(_ message: some SwiftProtobuf.Message, compressedFlag: Bool = false) throws -> [UInt8] {
    let bytes: [UInt8] = try message.serializedBytes()
    return [compressedFlag ? 1 : 0] + withUnsafeBytes(of: UInt32(bytes.count).bigEndian, Array.init) + bytes
}

/// Rejects calls without `x-token: secret` (UNAUTHENTICATED) and stamps every response with a
/// trailer, before and after the handler.
struct TokenInterceptor: ServerInterceptor {
    func intercept(_ context: ServerContext, next: @Sendable (ServerContext) async throws -> Void) async throws {
        guard context.metadata[first: "x-token"] == "secret" else {
            throw GRPCStatus(.unauthenticated, "missing token")
        }
        context.response.addTrailing("x-intercepted", "before")
        try await next(context)
        context.response.addTrailing("x-intercepted", "after")
    }
}
