import Foundation
import GRPCWire
import NIOCore
import NIOPosix
import SwiftProtobuf
import Testing

/// A real GRPCServer on port 0, driven over real sockets by nghttp (nghttp2's client) or by
/// hand-made HTTP/2 frames.
@Suite(.serialized) struct ServerTests {
    private func stringValue(_ s: String) -> Google_Protobuf_StringValue {
        var value = Google_Protobuf_StringValue()
        value.value = s
        return value
    }

    @Test func unaryRoundTrip() async throws {
        try await withTestServer { server in
            let out = try await nghttp(port: server.port, path: "/test.Test/Echo", body: try framed(stringValue("hello")))
            #expect(out.contains(":status: 200"))
            #expect(out.contains("content-type: application/grpc"))
            #expect(out.contains("grpc-status: 0"))
            #expect(out.contains("recv DATA frame <length=12"))  // 5-byte prefix + 7-byte message
        }
    }

    @Test func nonGRPCContentTypeIs415() async throws {
        try await withTestServer { server in
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: try framed(stringValue("x")),
                headers: ["content-type: text/plain"])
            #expect(out.contains(":status: 415"))
            #expect(!out.contains("grpc-status"))
        }
    }

    @Test func unknownServiceAndMethodAreUnimplementedTrailersOnly() async throws {
        try await withTestServer { server in
            let empty = try framed(Google_Protobuf_Empty())
            let service = try await nghttp(port: server.port, path: "/no.Such/Method", body: empty)
            #expect(service.contains("grpc-status: 12"))
            #expect(service.contains("grpc-message: Unknown service no.Such"))
            // Trailers-Only: a single HEADERS frame with END_STREAM, no DATA.
            #expect(!service.contains("recv DATA frame"))
            #expect(service.contains("; END_STREAM | END_HEADERS"))
            let method = try await nghttp(port: server.port, path: "/test.Test/Nope", body: empty)
            #expect(method.contains("grpc-status: 12"))
            #expect(method.contains("grpc-message: Unknown method Nope for service test.Test"))
        }
    }

    @Test func deadlineEndsTheCallCancelsTheHandlerAndResetsTheStream() async throws {
        try await withTestServer { server in
            let started = ContinuousClock.now
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Sleep", body: try framed(Google_Protobuf_Empty()),
                headers: ["content-type: application/grpc", "grpc-timeout: 200m"])
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(out.contains("grpc-status: 4"))
            #expect(out.contains("grpc-message: Deadline exceeded"))
            #expect(await server.probe.wait { server.probe.cancelled.load(ordering: .relaxed) == 1 })

            // A client still sending (no END_STREAM): Trailers-Only DEADLINE_EXCEEDED, then
            // RST_STREAM(NO_ERROR) to stop its upload.
            let received = RawHTTP2.Received()
            let channel = try await RawHTTP2.connect(
                port: server.port, group: MultiThreadedEventLoopGroup.singleton,
                sending: RawHTTP2.preface + RawHTTP2.settings()
                    + RawHTTP2.headers(stream: 1, path: "/test.Test/Wait", endStream: false, extra: [("grpc-timeout", "100m")]),
                received: received)
            #expect(await server.probe.wait { received.frames.contains { $0.type == 3 } })
            let frames = received.frames.filter { $0.stream == 1 }
            #expect(frames.map(\.type) == [1, 3])
            #expect(frames.first?.flags == 0x5)  // END_STREAM | END_HEADERS
            #expect(frames.last?.payload == [0, 0, 0, 0])
            #expect(await server.probe.wait { server.probe.cancelled.load(ordering: .relaxed) == 2 })
            try await channel.close()
        }
    }

    /// A zero window: the responses can never leave, so neither could trailers. A server
    /// stream (Flood) still running, or a unary call (Echo) whose handler answered at once,
    /// must still end at the deadline, with RST_STREAM(CANCEL), not hold its responses for
    /// as long as the connection lives.
    @Test(arguments: ["Flood", "Echo"])
    func deadlineWithResponsesStuckBehindFlowControlResetsWithCancel(_ method: String) async throws {
        try await withTestServer { server in
            let request = method == "Flood" ? try framed(Google_Protobuf_Empty()) : try framed(stringValue("stuck"))
            let received = RawHTTP2.Received()
            let channel = try await RawHTTP2.connect(
                port: server.port, group: MultiThreadedEventLoopGroup.singleton,
                sending: RawHTTP2.preface + RawHTTP2.settings([(0x4, 0)])
                    + RawHTTP2.headers(stream: 1, path: "/test.Test/\(method)", endStream: false, extra: [("grpc-timeout", "200m")])
                    + RawHTTP2.data(stream: 1, request, endStream: true),
                received: received)
            #expect(await server.probe.wait { received.frames.contains { $0.stream == 1 && $0.type == 3 } })
            let reset = received.frames.first { $0.stream == 1 && $0.type == 3 }
            #expect(reset?.payload == [0, 0, 0, 8])  // CANCEL
            #expect(!received.frames.contains { $0.stream == 1 && $0.type == 0 })  // no DATA ever left
            if method == "Flood" {  // the handler, still sending, was cancelled
                #expect(await server.probe.wait { server.probe.cancelled.load(ordering: .relaxed) == 1 })
            }
            try await channel.close()
        }
    }

    @Test func oversizeMessageIsResourceExhaustedBeforeBuffering() async throws {
        try await withTestServer(configure: { $0.maxReceiveMessageBytes = 1024 }) { server in
            var big = Google_Protobuf_BytesValue()
            big.value = Data(count: 4096)
            let out = try await nghttp(port: server.port, path: "/test.Test/Echo", body: try framed(big))
            #expect(out.contains("grpc-status: 8"))
            #expect(out.contains("larger than the limit of 1024 bytes"))
        }
    }

    @Test func compressedFlagWithoutEncodingIsInternal() async throws {
        try await withTestServer { server in
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: try framed(stringValue("x"), compressedFlag: true))
            #expect(out.contains("grpc-status: 13"))
        }
    }

    @Test func unsupportedEncodingIsUnimplementedWithAcceptEncoding() async throws {
        try await withTestServer { server in
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: try framed(stringValue("x")),
                headers: ["content-type: application/grpc", "grpc-encoding: snappy"])
            #expect(out.contains("grpc-status: 12"))
            #expect(out.contains("grpc-accept-encoding: identity,gzip"))
        }
    }

    @Test func gzipRequestIsDecompressed() async throws {
        try await withTestServer { server in
            let bytes: [UInt8] = try stringValue("zipped").serializedBytes()
            let compressed = try gzipCompress(bytes)
            let body = [1] + withUnsafeBytes(of: UInt32(compressed.count).bigEndian, Array.init) + compressed
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: body,
                headers: ["content-type: application/grpc", "grpc-encoding: gzip"])
            #expect(out.contains("grpc-status: 0"))
            #expect(out.contains("recv DATA frame <length=13"))  // "zipped" echoed back, uncompressed
        }
    }

    @Test func handlerErrorIsUnknownAndRichDetailsAreSent() async throws {
        try await withTestServer { server in
            let empty = try framed(Google_Protobuf_Empty())
            let failed = try await nghttp(port: server.port, path: "/test.Test/Fail", body: empty)
            #expect(failed.contains("grpc-status: 2"))
            #expect(!failed.contains("PlainFailure("))
            let rich = try await nghttp(port: server.port, path: "/test.Test/Rich", body: empty)
            #expect(rich.contains("grpc-status: 9"))
            #expect(rich.contains("grpc-status-details-bin: "))
        }
    }

    /// nghttp2 cannot send a header block over 64 KiB and drops it silently: a status
    /// message is cut well below that, and metadata that still does not fit resets the
    /// stream, rather than leaving the client without a status until its deadline.
    @Test func statusMessagesAreCutAndOversizeTrailersResetTheStream() async throws {
        try await withTestServer { server in
            var size = Google_Protobuf_Int64Value()
            size.value = 70_000
            let long = try await nghttp(port: server.port, path: "/test.Test/LongStatus", body: try framed(size), timeout: 5)
            #expect(long.contains("grpc-status: 3"), "\(long.suffix(300))")
            #expect(long.contains("%E2%80%A6(truncated)"))
            let big = try await nghttp(port: server.port, path: "/test.Test/BigTrailers", body: try framed(size), timeout: 5)
            #expect(big.contains("error_code=INTERNAL_ERROR"), "\(big.suffix(300))")
            // Trailers that fit still go out.
            size.value = 100
            let small = try await nghttp(port: server.port, path: "/test.Test/BigTrailers", body: try framed(size), timeout: 5)
            #expect(small.contains("grpc-status: 0"))
        }
    }

    /// Request headers past the advertised SETTINGS_MAX_HEADER_LIST_SIZE get a status that
    /// says so, not a reset the client can only report as INTERNAL.
    @Test func oversizeRequestHeadersAreResourceExhausted() async throws {
        try await withTestServer { server in
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: try framed(stringValue("x")),
                headers: ["content-type: application/grpc", "x-big: " + String(repeating: "b", count: 20_000)], timeout: 5)
            #expect(out.contains("grpc-status: 8"), "\(out.suffix(400))")
            #expect(out.contains("header list is larger than the limit"))
        }
    }

    /// Many small messages the handler does not read at once: past a few dozen the server
    /// keeps the bytes as they came (not an object per message) and deframes them as the
    /// handler reads. Every message arrives, in order, then the end of the stream; a
    /// message cut short by the end is still an error.
    @Test func manySmallRequestMessagesArriveInOrderWhenReadLate() async throws {
        try await withTestServer { server in
            var body: [UInt8] = []
            for i in 0..<20_000 { body += try framed(stringValue(String(i))) }
            let out = try await nghttp(port: server.port, path: "/test.Test/CountLater", body: body, timeout: 10)
            #expect(out.contains("grpc-status: 0"), "\(out.suffix(400))")
            #expect(out.contains("x-count: 20000"))
            let cut = try await nghttp(port: server.port, path: "/test.Test/CountLater", body: body + [0, 0, 0, 0, 9, 1], timeout: 10)
            #expect(cut.contains("grpc-status: 13"), "\(cut.suffix(400))")
            #expect(cut.contains("in the middle of a message"))
        }
    }

    @Test func unaryWithoutMessageIsUnimplemented() async throws {
        try await withTestServer { server in
            let out = try await nghttp(port: server.port, path: "/test.Test/Echo", body: [])
            #expect(out.contains("grpc-status: 12"))
        }
    }

    @Test func metadataRoundTripWithBinaryValues() async throws {
        try await withTestServer { server in
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: try framed(stringValue("m")),
                headers: [
                    "content-type: application/grpc", "x-text: hello", "x-blob-bin: AQI",  // unpadded in
                    "x-padded-bin: AQ==", "grpc-custom: dropped",
                ])
            // Echoed as initial metadata and again as trailers; binary values go out unpadded.
            let received = out.split(separator: "\n").filter { $0.contains("recv (stream_id=13)") }.map {
                String($0.split(separator: ") ", maxSplits: 1).last ?? "")
            }
            #expect(received.filter { $0 == "x-text: hello" }.count == 2)
            #expect(received.filter { $0 == "x-blob-bin: AQI" }.count == 2)
            #expect(received.filter { $0 == "x-padded-bin: AQ" }.count == 2)
            #expect(!received.contains { $0.hasPrefix("grpc-custom") })
            #expect(received.contains("grpc-status: 0"))
        }
    }

    @Test func jsonCodec() async throws {
        try await withTestServer { server in
            let json = Array("\"as json\"".utf8)
            let body = [0] + withUnsafeBytes(of: UInt32(json.count).bigEndian, Array.init) + json
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: body, headers: ["content-type: application/grpc+json"])
            #expect(out.contains("content-type: application/grpc+json"))
            #expect(out.contains("grpc-status: 0"))
            let bad = Array("{\"nope\": 1}".utf8)
            let badBody = [0] + withUnsafeBytes(of: UInt32(bad.count).bigEndian, Array.init) + bad
            let rejected = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: badBody, headers: ["content-type: application/grpc+json"])
            #expect(rejected.contains("grpc-status: 3"))
        }
    }

    /// A message prepared once for many calls goes out on each call in that call's codec:
    /// protobuf, JSON for a JSON call, gzip when the call compresses.
    @Test func preparedMessageIsSentInEachCallsCodec() async throws {
        try await withTestServer { server in
            let path = "/test.Test/Broadcast"
            let proto = try await nghttp(port: server.port, path: path, body: try framed(Google_Protobuf_Empty()))
            #expect(proto.contains("grpc-status: 0"))
            #expect(proto.components(separatedBy: "broadcast").count - 1 == 2, "two messages")
            #expect(!proto.contains("\"broadcast\""))

            let json = Array("{}".utf8)
            let jsonOut = try await nghttp(
                port: server.port, path: path, body: [0] + withUnsafeBytes(of: UInt32(json.count).bigEndian, Array.init) + json,
                headers: ["content-type: application/grpc+json"])
            #expect(jsonOut.contains("grpc-status: 0"))
            #expect(jsonOut.components(separatedBy: "\"broadcast\"").count - 1 == 2, "two JSON messages")

            let gzipOut = try await nghttp(
                port: server.port, path: path, body: try framed(Google_Protobuf_Empty()),
                headers: ["content-type: application/grpc", "grpc-accept-encoding: gzip", "x-gzip: 1"])
            #expect(gzipOut.contains("grpc-encoding: gzip"))
            #expect(gzipOut.contains("grpc-status: 0"))
            #expect(server.probe.sent.load(ordering: .relaxed) == 6)
        }
    }

    @Test func clientResetCancelsTheHandlersTask() async throws {
        try await withTestServer { server in
            let group = MultiThreadedEventLoopGroup.singleton
            let channel = try await RawHTTP2.connect(
                port: server.port, group: group,
                sending: RawHTTP2.preface + RawHTTP2.settings() + RawHTTP2.headers(stream: 1, path: "/test.Test/Wait", endStream: true))
            try await Task.sleep(for: .milliseconds(200))
            #expect(server.probe.cancelled.load(ordering: .relaxed) == 0)
            try await RawHTTP2.send(RawHTTP2.reset(stream: 1), on: channel)
            #expect(await server.probe.wait { server.probe.cancelled.load(ordering: .relaxed) == 1 })
            try await channel.close()
        }
    }

    /// One sender, or two tasks sending on the same response stream at once: each waits
    /// while the client does not read, and the reset wakes every one of them.
    @Test(arguments: ["Flood", "ParallelFlood"])
    func sendSuspendsWhileTheClientDoesNotRead(method: String) async throws {
        let senders = method == "Flood" ? 1 : 2
        try await withTestServer { server in
            let group = MultiThreadedEventLoopGroup.singleton
            // SETTINGS_INITIAL_WINDOW_SIZE = 0: the server may not send a single DATA byte.
            let request = try framed(Google_Protobuf_Empty())
            let channel = try await RawHTTP2.connect(
                port: server.port, group: group,
                sending: RawHTTP2.preface + RawHTTP2.settings([(0x4, 0)])
                    + RawHTTP2.headers(stream: 1, path: "/test.Test/\(method)", endStream: false)
                    + RawHTTP2.data(stream: 1, request, endStream: true))
            try await Task.sleep(for: .milliseconds(500))
            // 16 KiB messages against a 64 KiB buffer: a handful of sends complete, then
            // `send` waits, instead of 1,000 messages (16 MiB) piling up in the server.
            let sent = server.probe.sent.load(ordering: .relaxed)
            #expect(sent >= 1 && sent <= 5 + senders, "sent \(sent)")
            // Another client is served meanwhile.
            let out = try await nghttp(port: server.port, path: "/test.Test/Echo", body: try framed(stringValue("other")))
            #expect(out.contains("grpc-status: 0"))
            // Resetting the stream wakes the suspended sends with an error.
            try await RawHTTP2.send(RawHTTP2.reset(stream: 1), on: channel)
            #expect(await server.probe.wait { server.probe.cancelled.load(ordering: .relaxed) == senders })
            if senders > 1 { #expect(await server.probe.wait { server.probe.handlerReturned.load(ordering: .relaxed) == 1 }) }
            try await channel.close()
        }
    }

    @Test func interceptorsRunAroundHandlers() async throws {
        try await withTestServer(interceptors: [TokenInterceptor()]) { server in
            let body = try framed(stringValue("i"))
            let denied = try await nghttp(port: server.port, path: "/test.Test/Echo", body: body)
            #expect(denied.contains("grpc-status: 16"))
            #expect(denied.contains("grpc-message: missing token"))
            let allowed = try await nghttp(
                port: server.port, path: "/test.Test/Echo", body: body,
                headers: ["content-type: application/grpc", "x-token: secret"])
            #expect(allowed.contains("grpc-status: 0"))
            #expect(allowed.contains("x-intercepted: before"))
            #expect(allowed.contains("x-intercepted: after"))
            // Unknown methods never reach interceptors.
            let unknown = try await nghttp(port: server.port, path: "/test.Test/Nope", body: body)
            #expect(unknown.contains("grpc-status: 12"))
            #expect(server.server.finishedCallCounts()[.unauthenticated] == 1)
            #expect(server.server.finishedCallCounts()[.ok] == 1)
        }
    }

    @Test func immediatePathAnswersWithoutATask() async throws {
        try await withTestServer { server in
            for _ in 0..<2 {
                let out = try await nghttp(port: server.port, path: "/test.Test/Cached", body: try framed(stringValue("hit")))
                #expect(out.contains("grpc-status: 0"))
                #expect(out.contains("x-path: immediate"))
                #expect(out.contains("recv DATA frame <length=13"))  // 5 + the 8-byte "cached" message
            }
            #expect(server.probe.immediateWithoutTask.load(ordering: .relaxed) == 2)
            // The shared reply is encoded per codec: JSON gets JSON.
            let json = Array("\"hit\"".utf8)
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Cached",
                body: [0] + withUnsafeBytes(of: UInt32(json.count).bigEndian, Array.init) + json,
                headers: ["content-type: application/grpc+json"])
            #expect(out.contains("grpc-status: 0"))
            #expect(out.contains("\"cached\""))
        }
    }

    @Test func immediatePathFallsBackToTheHandlerOrFails() async throws {
        try await withTestServer { server in
            let miss = try await nghttp(port: server.port, path: "/test.Test/Cached", body: try framed(stringValue("miss")))
            #expect(miss.contains("grpc-status: 0"))
            #expect(miss.contains("x-path: handler"))
            #expect(miss.contains("recv DATA frame <length=11"))  // the request echoed: 5 + 6
            let bad = try await nghttp(port: server.port, path: "/test.Test/Cached", body: try framed(stringValue("bad")))
            #expect(bad.contains("grpc-status: 3"))
            #expect(bad.contains("grpc-message: bad request"))
            #expect(!bad.contains("recv DATA frame"))
            #expect(server.server.finishedCallCounts()[.invalidArgument] == 1)
        }
    }

    @Test func immediatePathRunsInsideInterceptors() async throws {
        try await withTestServer(interceptors: [TokenInterceptor()]) { server in
            let out = try await nghttp(
                port: server.port, path: "/test.Test/Cached", body: try framed(stringValue("hit")),
                headers: ["content-type: application/grpc", "x-token: secret"])
            #expect(out.contains("grpc-status: 0"))
            #expect(out.contains("x-path: immediate"))
            #expect(out.contains("x-intercepted: after"))
            // Interceptors need a task, so the immediate closure ran inside one.
            #expect(server.probe.immediateWithoutTask.load(ordering: .relaxed) == 0)
        }
    }

    @Test func gracefulShutdownEndsSubscriptionsAtOnce() async throws {
        try await withTestServer { server in
            async let subscription = nghttp(
                port: server.port, path: "/test.Test/Subscribe", body: try framed(Google_Protobuf_Empty()))
            #expect(await server.probe.wait { server.probe.sent.load(ordering: .relaxed) == 1 })
            let started = ContinuousClock.now
            server.server.beginGracefulShutdown()
            let out = try await subscription
            // Not after the grace period (10 s): at once, with a status the client can act on.
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(out.contains("grpc-status: 14"))
            #expect(out.contains("grpc-message: shutting down; resume elsewhere"))
            #expect(await server.probe.wait { server.probe.cancelled.load(ordering: .relaxed) == 1 })
        }
    }

    @Test func healthWatchGetsEachStatusOnceThroughShutdown() async throws {
        try await withTestServer { server in
            let received = RawHTTP2.Received()
            let channel = try await RawHTTP2.connect(
                port: server.port, group: MultiThreadedEventLoopGroup.singleton,
                sending: RawHTTP2.preface + RawHTTP2.settings()
                    + RawHTTP2.headers(stream: 1, path: "/grpc.health.v1.Health/Watch", endStream: false)
                    + RawHTTP2.data(stream: 1, try framed(Grpc_Health_V1_HealthCheckRequest()), endStream: true),
                received: received)
            let serving = try framed(Grpc_Health_V1_HealthCheckResponse.with { $0.status = .serving })
            let notServing = try framed(Grpc_Health_V1_HealthCheckResponse.with { $0.status = .notServing })
            // The watch's messages, framed, as they came (DATA frames of stream 1).
            let sent = { received.frames.filter { $0.stream == 1 && $0.type == 0 }.flatMap(\.payload) }
            #expect(await server.probe.wait { sent() == serving })
            // What orders-server does on SIGTERM: NOT_SERVING first, then the shutdown, which
            // sets every service NOT_SERVING again.
            server.server.health.setStatus(.notServing)
            server.server.beginGracefulShutdown()
            let ended = { received.frames.contains { $0.stream == 1 && $0.type == 1 && $0.flags & 0x1 != 0 } }
            #expect(await server.probe.wait { ended() })
            #expect(sent() == serving + notServing)
            try? await channel.close()  // the server may have closed it already
        }
    }

    @Test func gracefulShutdownLetsInFlightCallsFinish() async throws {
        try await withTestServer { server in
            async let slow = nghttp(port: server.port, path: "/test.Test/SlowOK", body: try framed(Google_Protobuf_Empty()))
            #expect(await server.probe.wait { server.server.health.status() == .serving })
            try await Task.sleep(for: .milliseconds(150))
            server.server.beginGracefulShutdown()
            let out = try await slow
            #expect(out.contains("recv GOAWAY frame"))
            #expect(out.contains("grpc-status: 0"))
            #expect(server.probe.finished.load(ordering: .relaxed) == 1)
            #expect(server.server.health.status() == .notServing)
        }
    }
}

private func gzipCompress(_ bytes: [UInt8]) throws -> [UInt8] {
    let input = FileManager.default.temporaryDirectory.appendingPathComponent("grpcwire-gz-\(UUID().uuidString)")
    try Data(bytes).write(to: input)
    defer { try? FileManager.default.removeItem(at: input) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/gzip")
    process.arguments = ["-c", input.path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Array(data)
}
