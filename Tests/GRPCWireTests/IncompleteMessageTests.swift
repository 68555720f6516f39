import NIOCore
import NIOPosix
import SwiftProtobuf
import Testing

@testable import GRPCWire

/// What a connection's incomplete request messages may make the server hold: a unary
/// message must be whole to be decoded, so its stream window reopens as it arrives, and a
/// client that never sends the last bytes of many large messages would otherwise have the
/// server hold every one of them for as long as it keeps the connection.
@Suite(.serialized) struct IncompleteMessageTests {
    static let window = 16 * 1024
    static let budget = 64 * 1024

    private func configure(_ config: inout GRPCServer.Config) {
        config.maxReceiveMessageBytes = 1 << 20
        config.streamWindowBytes = Self.window
        config.partialMessageBytesPerConnection = Self.budget
    }

    /// Eight streams each fill their window with the start of a 1 MiB message: the first
    /// four (the budget) get their windows back, the others wait, and they go on once the
    /// first four are reset. Before the budget, all eight got their windows back, and would
    /// have up to 1 MiB each.
    @Test func streamsWaitAtTheirWindowsWhileTheConnectionHoldsItsBudget() async throws {
        try await withTestServer(configure: configure) { server in
            let streams: [UInt32] = Array(stride(from: 1, through: 15, by: 2))
            var bytes = RawHTTP2.preface + RawHTTP2.settings()
            // Acknowledging the server's SETTINGS makes its 16 KiB stream window apply.
            bytes += RawHTTP2.frame(type: 4, flags: 0x1, stream: 0)
            let start = [0] + withUnsafeBytes(of: UInt32((1 << 20) - 1).bigEndian, Array.init)
            for stream in streams {
                bytes += RawHTTP2.headers(stream: stream, path: "/test.Test/Echo", endStream: false)
                bytes += RawHTTP2.data(stream: stream, start + [UInt8](repeating: 0, count: Self.window - 5), endStream: false)
            }
            let received = RawHTTP2.Received()
            let channel = try await RawHTTP2.connect(port: server.port, group: MultiThreadedEventLoopGroup.singleton, sending: bytes, received: received)
            #expect(try await pingPong(channel, received, 1))
            #expect(grantedStreams(received) == [1, 3, 5, 7])
            // Another call on another connection is served meanwhile.
            let out = try await nghttp(port: server.port, path: "/test.Test/Echo", body: try framed(Google_Protobuf_StringValue()))
            #expect(out.contains("grpc-status: 0"))

            for stream in streams.prefix(4) { try await RawHTTP2.send(RawHTTP2.reset(stream: stream), on: channel) }
            #expect(try await pingPong(channel, received, 2))
            #expect(grantedStreams(received) == Set(streams))
            try await channel.close()
        }
    }

    /// Messages several times the budget, six at once on one connection, all arrive: the
    /// oldest incomplete one always gets its window back.
    @Test func messagesLargerThanTheBudgetStillArriveOneAfterAnother() async throws {
        try await withTestServer(configure: configure) { server in
            var big = Google_Protobuf_StringValue()
            big.value = String(repeating: "m", count: 200 * 1024)
            let out = try await nghttp(port: server.port, path: "/test.Test/Echo", body: try framed(big), timeout: 20, times: 6)
            #expect(out.components(separatedBy: "grpc-status: 0").count - 1 == 6, "\(out.suffix(600))")
        }
    }

    /// Sends PING `n` and waits for its ACK: the server has then handled every frame sent
    /// before it and written what it answered.
    private func pingPong(_ channel: any Channel, _ received: RawHTTP2.Received, _ n: UInt8) async throws -> Bool {
        let payload: [UInt8] = [0, 0, 0, 0, 0, 0, 0, n]
        try await RawHTTP2.send(RawHTTP2.frame(type: 6, flags: 0, stream: 0, payload: payload), on: channel)
        return await Probe().wait { received.frames.contains { $0.type == 6 && $0.flags == 0x1 && $0.payload == payload } }
    }

    /// The streams the server sent a WINDOW_UPDATE for.
    private func grantedStreams(_ received: RawHTTP2.Received) -> Set<UInt32> {
        Set(received.frames.filter { $0.type == 8 && $0.stream != 0 }.map(\.stream))
    }
}
