import Synchronization

/// Everything a handler knows about its call besides the messages.
public struct ServerContext: Sendable {
    /// The request path, `/pkg.Service/Method`.
    public let path: String
    /// Request metadata: every header except pseudo-headers, `content-type`, `te`,
    /// `content-length` and the reserved `grpc-*` transport headers. `-bin` values are decoded.
    public let metadata: Metadata
    /// When the client gives up (`grpc-timeout`); nil when it set no deadline. The server
    /// enforces it: at the deadline the call ends with DEADLINE_EXCEEDED and the handler's
    /// task is cancelled.
    public let deadline: ContinuousClock.Instant?
    /// The client's address, for example `ipv4:127.0.0.1:5555`.
    public let peer: String
    /// Response headers and trailers the handler may add.
    public let response: ResponseMetadata
    /// For unary and server-streaming calls: whether the request message arrived compressed
    /// (its compressed flag was set). Always false for client-streaming calls.
    public let requestMessageCompressed: Bool
    /// Whether the call's messages are proto3 JSON (`application/grpc+json`) rather than
    /// protobuf binary, so a handler that bounds a response's size can measure it in the
    /// codec it goes out in (JSON can take six times the bytes of binary).
    public let usesJSON: Bool

    init(
        path: String, metadata: Metadata, deadline: ContinuousClock.Instant?, peer: String,
        response: ResponseMetadata, requestMessageCompressed: Bool, usesJSON: Bool
    ) {
        self.path = path
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
        self.response = response
        self.requestMessageCompressed = requestMessageCompressed
        self.usesJSON = usesJSON
    }

    /// A context not tied to any connection, for calling handlers directly in tests. What the
    /// handler sets on ``response`` can be read back from it.
    public init(
        path: String, metadata: Metadata = [:], deadline: ContinuousClock.Instant? = nil,
        peer: String = "in-process", usesJSON: Bool = false
    ) {
        self.init(
            path: path, metadata: metadata, deadline: deadline, peer: peer,
            response: ResponseMetadata(storage: ResponseMetadataStorage()), requestMessageCompressed: false,
            usesJSON: usesJSON)
    }

    /// The service part of ``path`` (`pkg.Service`).
    public var serviceName: Substring {
        let trimmed = path.drop(while: { $0 == "/" })
        return trimmed.prefix(while: { $0 != "/" })
    }

    /// The method part of ``path`` (`Method`).
    public var methodName: Substring {
        guard let slash = path.lastIndex(of: "/") else { return path[...] }
        return path[path.index(after: slash)...]
    }
}

/// Response headers and trailers of one call: a `Sendable` handle that any task may use.
public struct ResponseMetadata: Sendable {
    let storage: ResponseMetadataStorage

    /// Sets the initial response metadata (sent in the response HEADERS). Only effective
    /// before the first response message; later calls are ignored, because the headers are
    /// already on the wire.
    public func setInitial(_ metadata: Metadata) {
        storage.state.withLock { state in
            if !state.headersSent { state.initial = metadata }
        }
    }

    /// Adds one text value to the trailers sent with the status.
    public func addTrailing(_ name: String, _ value: String) {
        storage.state.withLock { $0.trailing.add(name, value) }
    }

    /// Adds one binary value (name ending in `-bin`) to the trailers.
    public func addTrailing(_ name: String, binary: [UInt8]) {
        storage.state.withLock { $0.trailing.add(name, binary: binary) }
    }

    /// Asks for gzip-compressed response messages. Honoured only when the client listed gzip
    /// in `grpc-accept-encoding` and the response headers were not sent yet; otherwise
    /// messages go out uncompressed. Off by default.
    public func setCompression(_ enabled: Bool) {
        storage.state.withLock { $0.compress = enabled }
    }

    /// The initial metadata set so far.
    public var initial: Metadata { storage.state.withLock { $0.initial } }
    /// The trailing metadata added so far.
    public var trailing: Metadata { storage.state.withLock { $0.trailing } }
}

/// The lock-protected response metadata of a call. `ServerCall` inherits from it so that a
/// real call needs no extra allocation; tests use it on its own.
///
/// `@unchecked Sendable` because the class is not final (ServerCall extends it); its only
/// state is the `Mutex`.
class ResponseMetadataStorage: @unchecked Sendable {
    struct State {
        var initial: Metadata = [:]
        var trailing: Metadata = [:]
        /// The handler's default for compressing response messages.
        var compress = false
        /// Set when the response HEADERS were built; `initial` is frozen from then on.
        var headersSent = false
        /// Whether those headers announced `grpc-encoding: gzip`.
        var gzipInHeaders = false
    }

    let state = Mutex(State())

    init() {}
}
