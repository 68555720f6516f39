/// One gRPC length-prefixed message as received: the compressed flag and the payload.
struct FramedMessage: Sendable, Equatable {
    var compressed: Bool
    var bytes: [UInt8]
}

/// Why a request body could not be split into messages.
enum DeframeError: Error, Equatable {
    /// The length prefix announced more than the configured maximum (RESOURCE_EXHAUSTED).
    case messageTooLarge(length: Int, limit: Int)
    /// The flag byte was neither 0 nor 1 (INTERNAL).
    case invalidFlag(UInt8)
}

/// Splits a request body into gRPC messages: each a 1-byte compressed flag, a 4-byte
/// big-endian length, then that many bytes. DATA frame boundaries are unrelated to message
/// boundaries, so bytes are fed in chunks of any size and messages come out whole.
///
/// The size limit is checked on the length prefix, before any of the body is buffered, so a
/// client announcing a huge message costs the server nothing.
struct MessageDeframer {
    let maxMessageBytes: Int

    private var header: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
    private var headerCount = 0
    /// The message being assembled once its header is known.
    private(set) var body: [UInt8] = []
    private var bodyLength = 0
    private var compressed = false

    init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    /// True when some bytes of an incomplete message are buffered: at the end of the request
    /// this means the body was truncated.
    var hasPartialMessage: Bool { headerCount > 0 }

    /// What the incomplete message holds so far (its header and body bytes): 0 between
    /// messages. Up to `maxMessageBytes` while the client keeps the last byte back.
    var partialBytes: Int { headerCount == 0 ? 0 : headerCount + body.count }

    /// Feeds one chunk; `emit` is called for every message completed by it, in order.
    mutating func process(
        _ chunk: UnsafeRawBufferPointer, _ emit: (FramedMessage) throws -> Void
    ) throws {
        var offset = 0
        let count = chunk.count
        while offset < count {
            if headerCount < 5 {
                // Fast path: a whole message (header and body) inside this chunk.
                if headerCount == 0, count - offset >= 5 {
                    let flag = chunk[offset]
                    let length = Self.length(chunk[offset + 1], chunk[offset + 2], chunk[offset + 3], chunk[offset + 4])
                    try check(flag: flag, length: length)
                    if count - offset - 5 >= length {
                        let start = offset + 5
                        let bytes = [UInt8](UnsafeRawBufferPointer(rebasing: chunk[start..<(start + length)]))
                        offset = start + length
                        try emit(FramedMessage(compressed: flag == 1, bytes: bytes))
                        continue
                    }
                }
                // Slow path: collect the header byte by byte.
                setHeaderByte(headerCount, chunk[offset])
                headerCount += 1
                offset += 1
                if headerCount == 5 {
                    let length = Self.length(header.1, header.2, header.3, header.4)
                    try check(flag: header.0, length: length)
                    compressed = header.0 == 1
                    bodyLength = length
                    body = []
                    // Not all of an announced length up front: a prefix alone costs little.
                    body.reserveCapacity(min(length, 64 * 1024))
                    if length == 0 {
                        headerCount = 0
                        try emit(FramedMessage(compressed: compressed, bytes: []))
                    }
                }
                continue
            }
            // Collecting a body.
            let take = min(bodyLength - body.count, count - offset)
            body.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[offset..<(offset + take)]))
            offset += take
            if body.count == bodyLength {
                headerCount = 0
                let message = FramedMessage(compressed: compressed, bytes: body)
                body = []
                try emit(message)
            }
        }
    }

    /// Convenience for tests and callers holding arrays.
    mutating func process(_ bytes: [UInt8], _ emit: (FramedMessage) throws -> Void) throws {
        try bytes.withUnsafeBytes { try process($0, emit) }
    }

    private func check(flag: UInt8, length: Int) throws(DeframeError) {
        guard flag <= 1 else { throw .invalidFlag(flag) }
        guard length <= maxMessageBytes else {
            throw .messageTooLarge(length: length, limit: maxMessageBytes)
        }
    }

    private mutating func setHeaderByte(_ index: Int, _ byte: UInt8) {
        switch index {
        case 0: header.0 = byte
        case 1: header.1 = byte
        case 2: header.2 = byte
        case 3: header.3 = byte
        default: header.4 = byte
        }
    }

    private static func length(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> Int {
        Int(a) << 24 | Int(b) << 16 | Int(c) << 8 | Int(d)
    }
}

/// Writes the 5-byte gRPC message header.
enum MessageFraming {
    static func header(compressed: Bool, length: Int) -> (UInt8, UInt8, UInt8, UInt8, UInt8) {
        (
            compressed ? 1 : 0, UInt8(truncatingIfNeeded: length >> 24),
            UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8),
            UInt8(truncatingIfNeeded: length)
        )
    }

    /// A whole framed message, for tests and small payloads.
    static func frame(_ bytes: [UInt8], compressed: Bool = false) -> [UInt8] {
        let h = header(compressed: compressed, length: bytes.count)
        return [h.0, h.1, h.2, h.3, h.4] + bytes
    }
}
