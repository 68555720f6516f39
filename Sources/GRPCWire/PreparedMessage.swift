import Synchronization
import SwiftProtobuf

/// A response message to be sent unchanged on many calls, serialized at most once per codec.
///
/// A server-streaming broadcast (one event to 1,000 subscribers) would otherwise serialize
/// the same message once per call; with ``ResponseStream/send(_:)-(PreparedMessage<Message>)``
/// every call shares one byte array (binary protobuf or JSON, whichever its content type
/// asks for).
///
/// - Important: the first send serializes under a lock, so concurrent senders of the same
///   prepared message wait for one serialization instead of repeating it.
public final class PreparedMessage<Message: SwiftProtobuf.Message>: Sendable {
    public let message: Message

    private struct Encodings {
        var binary: [UInt8]?
        var json: [UInt8]?
    }

    private let encodings = Mutex(Encodings())

    public init(_ message: Message) {
        self.message = message
    }

    /// The serialized message for one codec, made on first use.
    func payload(json: Bool) throws -> [UInt8] {
        try encodings.withLock { e in
            if json {
                if let bytes = e.json { return bytes }
                let bytes: [UInt8] = try message.jsonUTF8Bytes()
                e.json = bytes
                return bytes
            }
            if let bytes = e.binary { return bytes }
            let bytes: [UInt8] = try message.serializedBytes()
            e.binary = bytes
            return bytes
        }
    }
}
