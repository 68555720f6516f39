import SwiftProtobuf
import Synchronization

/// A response message that keeps its wire forms once made, for handlers that answer many
/// calls with the same message: each codec serializes it once, not once per call. Return
/// it from the handlers of ``ServiceDefinition/unary(_:immediate:_:)`` (a cached read), or
/// send it on many streams with ``ResponseStream/send(_:)-(EncodedMessage<Message>)`` (one
/// event broadcast to 1,000 subscribers shares one byte array per codec).
///
/// Keep one per distinct message: the bytes are made from ``message`` on first use and never
/// refreshed.
public final class EncodedMessage<M: SwiftProtobuf.Message>: Sendable {
    public let message: M
    private let encodings = Mutex(Encodings())

    private struct Encodings {
        var binary: [UInt8]?
        var json: [UInt8]?
    }

    public init(_ message: M) {
        self.message = message
    }

    /// The protobuf binary or proto3 JSON form of ``message``, serialized on first use.
    func bytes(json: Bool) throws -> [UInt8] {
        if let cached = encodings.withLock({ json ? $0.json : $0.binary }) { return cached }
        // Serialized outside the lock; two racing first calls just produce equal bytes.
        let bytes: [UInt8] = json ? try message.jsonUTF8Bytes() : try message.serializedBytes()
        encodings.withLock {
            if json { $0.json = bytes } else { $0.binary = bytes }
        }
        return bytes
    }
}
