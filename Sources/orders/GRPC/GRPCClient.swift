import SwiftProtobuf

/// How messages are encoded on the wire.
enum GRPCCodec: String, CaseIterable, Sendable {
    case proto
    case json

    var contentType: String {
        switch self {
        case .proto: "application/grpc"
        case .json: "application/grpc+json"
        }
    }

    func encode(_ message: some SwiftProtobuf.Message) throws -> [UInt8] {
        switch self {
        case .proto: try message.serializedBytes()
        case .json: try message.jsonUTF8Bytes()
        }
    }

    func decode<M: SwiftProtobuf.Message>(_ bytes: [UInt8], as type: M.Type) throws -> M {
        switch self {
        case .proto:
            return try M(serializedBytes: bytes)
        case .json:
            // A newer server may add fields; proto binary skips them too.
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = true
            return try M(jsonUTF8Bytes: bytes, options: options)
        }
    }
}

/// A gRPC client for unary and server-streaming calls over `CurlGRPCClient`.
///
/// Errors thrown: `GRPCStatusError` for every non-OK outcome (including the
/// ones this client concludes itself, such as UNAVAILABLE when the server
/// cannot be reached); whatever a message handler throws passes through as is.
struct GRPCClient {
    /// `host:port`.
    var authority: String
    var codec: GRPCCodec = .proto
    /// The call's deadline, sent as `grpc-timeout`; nil means none.
    var timeout: Duration?
    var maxMessageBytes = 16 << 20
    /// Polled while a call is in flight; true cancels it (CANCELLED).
    var isCancelled: @Sendable () -> Bool = { false }
    /// The call fails with UNAVAILABLE when no byte of the response comes for this long:
    /// for streams, which have no deadline, so that a hung server or a dead connection
    /// does not leave the caller waiting forever in silence. Nil waits forever.
    var idleLimit: Duration?
    /// Trace the HTTP/2 exchange on stderr.
    var verbose = false

    static let userAgent = "orders-cli/1.0 (libcurl)"

    /// Sends one request, expects exactly one response message.
    func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ request: Request, as type: Response.Type = Response.self
    ) throws -> Response {
        var responses: [Response] = []
        try call(path, request) { (response: Response) in responses.append(response) }
        guard responses.count == 1 else {
            throw GRPCStatusError(
                .internalError, "the server answered a unary call with \(responses.count) messages")
        }
        return responses[0]
    }

    /// Sends one request and hands every response message to `onMessage` as
    /// soon as it is complete; returns when the server ends the stream with OK.
    func serverStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ request: Request, onMessage: (Response) throws -> Void
    ) throws {
        try call(path, request, onMessage: onMessage)
    }

    private func call<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ request: Request, onMessage: (Response) throws -> Void
    ) throws {
        let body: [UInt8]
        do {
            body = GRPCMessageDeframer.frame(try codec.encode(request))
        } catch {
            throw GRPCStatusError(.internalError, "could not encode the request: \(error)")
        }
        var headers: [(name: String, value: String)] = [
            ("content-type", codec.contentType),
            ("te", "trailers"),
        ]
        var transferLimit: Duration? = nil
        if let timeout {
            headers.append(("grpc-timeout", Self.grpcTimeout(timeout)))
            // A second of grace, so the server's own DEADLINE_EXCEEDED (which
            // may carry a better message) normally arrives before curl gives up.
            transferLimit = timeout + .seconds(1)
        }
        let http = HTTP2Request(path: path, headers: headers, body: body, transferLimit: transferLimit)

        var deframer = GRPCMessageDeframer(maxMessageBytes: maxMessageBytes)
        let transport = CurlGRPCClient(authority: authority, userAgent: Self.userAgent, verbose: verbose)
        let response: HTTP2Response
        // Polled with isCancelled, at least once a second (libcurl's progress callback).
        var lastByte = ContinuousClock.now
        var idle = false
        let isCancelled = { () -> Bool in
            if let idleLimit, ContinuousClock.now - lastByte > idleLimit { idle = true }
            return idle || self.isCancelled()
        }
        do {
            response = try transport.perform(http, onData: { chunk in
                lastByte = ContinuousClock.now
                deframer.append(chunk)
                while let bytes = try deframer.next() {
                    let message: Response
                    do {
                        message = try codec.decode(bytes, as: Response.self)
                    } catch {
                        throw GRPCStatusError(.internalError, "could not decode a \(Response.protoMessageName): \(error)")
                    }
                    try onMessage(message)
                }
            }, isCancelled: isCancelled)
        } catch {
            if idle, case .cancelled = error.kind, let idleLimit {
                throw GRPCStatusError(
                    .unavailable,
                    "nothing from \(authority) for \(idleLimit) (not even a heartbeat): the server is hung or the connection is dead")
            }
            throw statusError(for: error)
        }

        if let status = Self.status(of: response) { throw status }
        if deframer.hasPartialMessage {
            throw GRPCStatusError(.internalError, "the stream ended in the middle of a message")
        }
    }

    private func statusError(for error: TransportError) -> any Error {
        switch error.kind {
        case .cannotConnect:
            var status = GRPCStatusError(.unavailable, "cannot reach \(authority): \(error.message)")
            status.mayHaveReachedServer = false
            return status
        case .timedOut:
            return GRPCStatusError(.deadlineExceeded, "no answer within the deadline: \(error.message)")
        case .cancelled:
            return GRPCStatusError(.cancelled, "the call was cancelled by this client")
        case .streamReset(let code):
            // The client's side of the RST_STREAM mapping in PROTOCOL-HTTP2.md.
            switch code {
            case 7:
                // REFUSED_STREAM: the server did no processing (RFC 9113, 8.7).
                var status = GRPCStatusError(.unavailable, "the server refused the stream: \(error.message)")
                status.mayHaveReachedServer = false
                return status
            case 8: return GRPCStatusError(.cancelled, "the server cancelled the stream: \(error.message)")
            case 11: return GRPCStatusError(.resourceExhausted, "the server asked to slow down: \(error.message)")
            default: return GRPCStatusError(.internalError, "the server reset the stream: \(error.message)")
            }
        case .connectionLost:
            return GRPCStatusError(.unavailable, "lost the connection to \(authority): \(error.message)")
        case .handlerFailed:
            return error.cause ?? GRPCStatusError(.internalError, error.message)
        case .other:
            return GRPCStatusError(.internalError, "HTTP/2 transport to \(authority) failed: \(error.message)")
        }
    }

    /// The call's status from the response; nil when it is OK.
    static func status(of response: HTTP2Response) -> GRPCStatusError? {
        func field(_ name: String) -> String? {
            // Trailers-Only responses carry the status in the headers.
            response.trailers.last { $0.name == name }?.value ?? response.headers.last { $0.name == name }?.value
        }
        guard let statusText = field("grpc-status") else {
            if response.status != 200 {
                let type = field("content-type") ?? "none"
                return GRPCStatusError(
                    GRPCStatusCode(httpStatus: response.status),
                    "the server answered HTTP \(response.status) (content-type \(type)) without a gRPC status")
            }
            if response.goAwayReceived {
                // The server is shutting down (it ends subscriptions with UNAVAILABLE), and
                // libcurl 7.88 loses the trailers of a stream that ends after a GOAWAY: the
                // status went missing on this side, so answer as a lost connection would,
                // retryable, rather than blame the server with INTERNAL.
                return GRPCStatusError(
                    .unavailable, "the server is shutting down (HTTP/2 GOAWAY); the call's status did not reach this client")
            }
            return GRPCStatusError(.internalError, "the server closed the stream without a grpc-status")
        }
        guard let code = Int(statusText) else {
            return GRPCStatusError(.unknown, "the server sent an unreadable grpc-status \"\(statusText)\"")
        }
        if code == 0 { return nil }
        let message = field("grpc-message").map(GRPCMetadata.percentDecoded) ?? ""
        var details: RPCStatus? = nil
        if let encoded = field("grpc-status-details-bin"), let bytes = GRPCMetadata.base64Decoded(encoded) {
            details = try? RPCStatus(serialized: bytes)
        }
        return GRPCStatusError(GRPCStatusCode(rawValue: code), message, details: details)
    }

    /// `grpc-timeout`: at most 8 digits and a unit. Milliseconds (the CLI's
    /// precision) up to about 27 hours, then coarser units, rounded up: a
    /// deadline should never be shorter than asked.
    static func grpcTimeout(_ timeout: Duration) -> String {
        let (seconds, attoseconds) = timeout.components
        let milliseconds = max(0, seconds) * 1000 + (max(0, attoseconds) + 999_999_999_999_999) / 1_000_000_000_000_000
        for (unit, size) in [("m", Int64(1)), ("S", 1000), ("M", 60_000), ("H", 3_600_000)] {
            let value = (milliseconds + size - 1) / size
            if value <= 99_999_999 { return "\(value)\(unit)" }
        }
        return "99999999H"
    }
}
