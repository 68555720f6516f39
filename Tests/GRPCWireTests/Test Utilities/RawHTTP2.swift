import NIOCore
import NIOPosix
import Synchronization

/// A raw HTTP/2 client that writes hand-made frames, for what real clients will not do
/// (reset streams on purpose, advertise a zero window).
enum RawHTTP2 {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags]
            + withUnsafeBytes(of: stream.bigEndian, Array.init) + payload
    }

    static func settings(_ values: [(UInt16, UInt32)] = []) -> [UInt8] {
        var payload: [UInt8] = []
        for (id, value) in values {
            payload += withUnsafeBytes(of: id.bigEndian, Array.init) + withUnsafeBytes(of: value.bigEndian, Array.init)
        }
        return frame(type: 4, flags: 0, stream: 0, payload: payload)
    }

    /// HPACK literal header fields without indexing or Huffman coding (all short here).
    static func headers(stream: UInt32, path: String, endStream: Bool, extra: [(String, String)] = []) -> [UInt8] {
        let fields = [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ] + extra
        var block: [UInt8] = []
        for (name, value) in fields {
            block += [0, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
        }
        return frame(type: 1, flags: 0x4 | (endStream ? 0x1 : 0), stream: stream, payload: block)
    }

    static func data(stream: UInt32, _ payload: [UInt8], endStream: Bool) -> [UInt8] {
        frame(type: 0, flags: endStream ? 0x1 : 0, stream: stream, payload: payload)
    }

    static func reset(stream: UInt32, code: UInt32 = 0x8) -> [UInt8] {
        frame(type: 3, flags: 0, stream: stream, payload: withUnsafeBytes(of: code.bigEndian, Array.init))
    }

    /// Connects and writes `bytes`; what the server sends goes to `received`, when given.
    static func connect(
        port: Int, group: any EventLoopGroup, sending bytes: [UInt8], received: Received? = nil
    ) async throws -> any Channel {
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let received { try channel.pipeline.syncOperations.addHandler(Collector(received: received)) }
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
        return channel
    }

    struct Frame: Equatable {
        var type: UInt8
        var flags: UInt8
        var stream: UInt32
        var payload: [UInt8]
    }

    /// Bytes received from the server.
    final class Received: Sendable {
        let bytes = Mutex<[UInt8]>([])

        var frames: [Frame] {
            let data = bytes.withLock { $0 }
            var frames: [Frame] = []
            var offset = 0
            while offset + 9 <= data.count {
                let length = Int(data[offset]) << 16 | Int(data[offset + 1]) << 8 | Int(data[offset + 2])
                guard offset + 9 + length <= data.count else { break }
                let stream = UInt32(data[offset + 5]) << 24 | UInt32(data[offset + 6]) << 16
                    | UInt32(data[offset + 7]) << 8 | UInt32(data[offset + 8])
                frames.append(Frame(
                    type: data[offset + 3], flags: data[offset + 4], stream: stream & 0x7FFF_FFFF,
                    payload: Array(data[(offset + 9)..<(offset + 9 + length)])))
                offset += 9 + length
            }
            return frames
        }
    }

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: Received

        init(received: Received) { self.received = received }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.bytes.withLock { $0 += buffer.readableBytesView }
        }
    }

    static func send(_ bytes: [UInt8], on channel: any Channel) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }
}
