import NIOCore
import NIOPosix
import Testing

@testable import GRPCWire

/// Connections that hold a file descriptor without being used: one that never completes the
/// HTTP/2 handshake is closed after `handshakeTimeout`, one with no stream after `idleTimeout`.
@Suite struct ConnectionTimeoutTests {
    private func shortTimeouts(_ config: inout GRPCServer.Config) {
        config.handshakeTimeout = .milliseconds(200)
        config.idleTimeout = .seconds(60)
    }

    @Test("a client that never sends the preface is disconnected", arguments: [0, 10])
    func noPreface(prefaceBytes: Int) async throws {
        try await withTestServer(configure: shortTimeouts) { server in
            let channel = try await RawHTTP2.connect(
                port: server.port, group: MultiThreadedEventLoopGroup.singleton, sending: Array(RawHTTP2.preface.prefix(prefaceBytes)))
            #expect(await Probe().wait(timeout: .seconds(10)) { !channel.isActive }, "still connected 10 s after connecting")
            try? await channel.close()
        }
    }

    @Test("a client that sent its preface and SETTINGS stays connected past the handshake timeout")
    func handshakenClientStays() async throws {
        try await withTestServer(configure: shortTimeouts) { server in
            let received = RawHTTP2.Received()
            let channel = try await RawHTTP2.connect(
                port: server.port, group: MultiThreadedEventLoopGroup.singleton, sending: RawHTTP2.preface + RawHTTP2.settings(),
                received: received)
            try await Task.sleep(for: .seconds(1))  // five times the handshake timeout
            #expect(channel.isActive)
            #expect(!received.frames.contains { $0.type == 7 }, "GOAWAY")
            try await channel.close()
        }
    }

    @Test("a connection with no stream is closed with GOAWAY once idle")
    func idleConnectionIsClosed() async throws {
        try await withTestServer(configure: { $0.idleTimeout = .milliseconds(300) }) { server in
            let received = RawHTTP2.Received()
            let channel = try await RawHTTP2.connect(
                port: server.port, group: MultiThreadedEventLoopGroup.singleton, sending: RawHTTP2.preface + RawHTTP2.settings(),
                received: received)
            #expect(await Probe().wait(timeout: .seconds(10)) { !channel.isActive }, "still connected 10 s later")
            #expect(received.frames.contains { $0.type == 7 }, "no GOAWAY before the close")
            try? await channel.close()
        }
    }
}
