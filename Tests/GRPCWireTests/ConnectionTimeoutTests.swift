import NIOCore
import NIOPosix
import Testing

@testable import GRPCWire

/// Connections that hold a file descriptor without being used: one that never completes the
/// HTTP/2 handshake is closed after `handshakeTimeout`, one with no stream after `idleTimeout`.
///
/// The timeouts are short, and a busy test run can take longer than them to connect and
/// write: a connection the server closed before the test's first write counts as closed.
@Suite struct ConnectionTimeoutTests {
    /// Connects and sends `bytes`; nil when the server had closed the connection before the
    /// bytes went out.
    private func connect(_ port: Int, sending bytes: [UInt8], received: RawHTTP2.Received? = nil) async throws -> (any Channel)? {
        do {
            return try await RawHTTP2.connect(port: port, group: MultiThreadedEventLoopGroup.singleton, sending: bytes, received: received)
        } catch ChannelError.ioOnClosedChannel {
            return nil
        }
    }

    @Test("a client that never sends the preface is disconnected", arguments: [0, 10])
    func noPreface(prefaceBytes: Int) async throws {
        try await withTestServer(configure: { $0.handshakeTimeout = .milliseconds(200) }) { server in
            guard let channel = try await connect(server.port, sending: Array(RawHTTP2.preface.prefix(prefaceBytes))) else { return }
            #expect(await Probe().wait(timeout: .seconds(10)) { !channel.isActive }, "still connected 10 s after connecting")
            try? await channel.close()
        }
    }

    @Test("a client that sent its preface and SETTINGS stays connected past the handshake timeout")
    func handshakenClientStays() async throws {
        try await withTestServer(configure: { $0.handshakeTimeout = .seconds(1) }) { server in
            // Until the server has acknowledged the client's SETTINGS within its timeout (a
            // slow start may miss it: then that connection is closed, and another is tried).
            for _ in 0..<5 {
                let received = RawHTTP2.Received()
                guard let channel = try await connect(server.port, sending: RawHTTP2.preface + RawHTTP2.settings(), received: received)
                else { continue }
                let acknowledged = await Probe().wait(timeout: .seconds(10)) {
                    received.frames.contains { $0.type == 4 && $0.flags & 0x1 != 0 } || !channel.isActive
                }
                guard acknowledged, channel.isActive else {
                    try? await channel.close()
                    continue
                }
                try await Task.sleep(for: .seconds(2))  // twice the handshake timeout
                #expect(channel.isActive)
                #expect(!received.frames.contains { $0.type == 7 }, "GOAWAY")
                try? await channel.close()
                return
            }
            Issue.record("no connection got its SETTINGS acknowledged within the handshake timeout in 5 tries")
        }
    }

    @Test("a connection with no stream is closed with GOAWAY once idle")
    func idleConnectionIsClosed() async throws {
        try await withTestServer(configure: { $0.idleTimeout = .milliseconds(300) }) { server in
            let received = RawHTTP2.Received()
            let channel = try await connect(server.port, sending: RawHTTP2.preface + RawHTTP2.settings(), received: received)
            if let channel {
                #expect(await Probe().wait(timeout: .seconds(10)) { !channel.isActive }, "still connected 10 s later")
                try? await channel.close()
            }
            #expect(await Probe().wait(timeout: .seconds(5)) { received.frames.contains { $0.type == 7 } }, "no GOAWAY before the close")
        }
    }
}
