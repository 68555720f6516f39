/// gRPC's length-prefixed messages: a compressed-flag byte, a 4-byte
/// big-endian length, then the message. DATA frame boundaries mean nothing, so
/// bytes are buffered until a whole message is there.
struct GRPCMessageDeframer {
    /// Larger announced messages fail the call with RESOURCE_EXHAUSTED before
    /// any of them is buffered.
    var maxMessageBytes: Int

    private var buffer: [UInt8] = []
    private var start = 0

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    /// True when bytes of an unfinished message are waiting.
    var hasPartialMessage: Bool { start < buffer.count }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        // Drop what was consumed before growing, so a long stream does not
        // keep every message it ever received.
        if start > 0, start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 65_536 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete message, or nil until more bytes arrive.
    mutating func next() throws(GRPCStatusError) -> [UInt8]? {
        guard buffer.count - start >= 5 else { return nil }
        let flag = buffer[start]
        let length = buffer[start + 1 ..< start + 5].reduce(0) { $0 << 8 | Int($1) }
        if flag & 1 != 0 {
            // The client sends no grpc-accept-encoding, so a server must not compress.
            throw GRPCStatusError(.internalError, "the server sent a compressed message, which this client never asked for")
        }
        guard length <= maxMessageBytes else {
            throw GRPCStatusError(
                .resourceExhausted,
                "the server sent a message of \(length) bytes, over this client's limit of \(maxMessageBytes)")
        }
        guard buffer.count - start - 5 >= length else { return nil }
        let message = Array(buffer[start + 5 ..< start + 5 + length])
        start += 5 + length
        return message
    }

    /// Frames one uncompressed message.
    static func frame(_ message: [UInt8]) -> [UInt8] {
        let length = UInt32(message.count)
        return [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            + message
    }
}
