/// Builds response header blocks. The overwhelmingly common shapes (no metadata, OK status)
/// are built once and reused, so the hot unary path allocates nothing for its headers.
enum ResponseHeaders {
    private static let plainInitial: [HTTP2Headers] = [GRPCContentType.grpc, .grpcProto, .grpcJSON].map {
        build(contentType: $0, gzip: false, metadata: [:])
    }

    private static let okTrailers: HTTP2Headers = {
        var headers = HTTP2Headers(capacity: 1)
        headers.add("grpc-status", "0")
        return headers
    }()

    static func initial(contentType: GRPCContentType, gzip: Bool, metadata: Metadata) -> HTTP2Headers {
        if !gzip && metadata.isEmpty {
            switch contentType {
            case .grpc: return plainInitial[0]
            case .grpcProto: return plainInitial[1]
            case .grpcJSON: return plainInitial[2]
            }
        }
        return build(contentType: contentType, gzip: gzip, metadata: metadata)
    }

    private static func build(contentType: GRPCContentType, gzip: Bool, metadata: Metadata) -> HTTP2Headers {
        var headers = HTTP2Headers(capacity: 3 + metadata.count)
        headers.add(":status", literal: "200")
        headers.add("content-type", literal: contentType.literal)
        if gzip { headers.add("grpc-encoding", literal: "gzip") }
        append(metadata, to: &headers)
        return headers
    }

    /// Trailers for `status`; with `trailersOnly` set, a complete Trailers-Only response
    /// (`:status` and `content-type` included) for that content type.
    static func trailers(_ status: GRPCStatus, metadata: Metadata, trailersOnly: GRPCContentType?) -> HTTP2Headers {
        if trailersOnly == nil, status.code == .ok, status.message.isEmpty, status.details.isEmpty,
            status.trailers.isEmpty, metadata.isEmpty
        {
            return okTrailers
        }
        var headers = HTTP2Headers(capacity: 6 + metadata.count + status.trailers.count)
        if let contentType = trailersOnly {
            headers.add(":status", literal: "200")
            headers.add("content-type", literal: contentType.literal)
        }
        headers.add("grpc-status", String(status.code.rawValue))
        if !status.message.isEmpty {
            headers.add("grpc-message", PercentEncoding.encode(bounded(status.message)))
        }
        if let rich = status.richStatus, let bytes: [UInt8] = try? rich.serializedBytes() {
            headers.add("grpc-status-details-bin", Base64.encode(bytes))
        }
        append(metadata, to: &headers)
        append(status.trailers, to: &headers)
        return headers
    }

    /// The most of a status message that is sent, in UTF-8 bytes before percent-encoding
    /// (which can triple it): nghttp2 cannot send a header block over 64 KiB, and a status
    /// message echoing a huge input (Health/Check's service name) helps no one.
    static let maxMessageBytes = 8 * 1024

    /// `message`, cut at a character boundary to `maxMessageBytes` and marked as cut.
    static func bounded(_ message: String) -> String {
        guard message.utf8.count > maxMessageBytes else { return message }
        let bytes = Array(message.utf8)
        var end = maxMessageBytes
        while end > 0 && bytes[end] & 0xC0 == 0x80 { end -= 1 }  // not inside a character
        return String(decoding: bytes[..<end], as: UTF8.self) + " …(truncated)"
    }

    /// A Trailers-Only error that also lists the encodings we accept (unsupported grpc-encoding).
    static func unsupportedEncoding(_ status: GRPCStatus, contentType: GRPCContentType) -> HTTP2Headers {
        var headers = trailers(status, metadata: [:], trailersOnly: contentType)
        headers.add("grpc-accept-encoding", literal: "identity,gzip")
        return headers
    }

    /// A bare HTTP error (415 for a non-gRPC content type, 405 for a non-POST request).
    static func httpError(_ status: StaticString) -> HTTP2Headers {
        var headers = HTTP2Headers(capacity: 2)
        headers.add(":status", literal: status)
        headers.add("content-type", literal: "text/plain")
        return headers
    }

    /// Appends user metadata, dropping names the transport owns: pseudo-headers, `grpc-*`
    /// (reserved by gRPC), and the connection-level headers HTTP/2 forbids.
    static func append(_ metadata: Metadata, to headers: inout HTTP2Headers) {
        for (name, value) in metadata {
            if name.isEmpty || name.hasPrefix(":") || name.hasPrefix("grpc-") || reservedNames.contains(name) {
                continue
            }
            switch value {
            case .string(let s):
                headers.add(name, s)
            case .binary(let bytes):
                headers.add(name, Base64.encode(bytes))
            }
        }
    }

    private static let reservedNames: Set<String> = [
        "content-type", "te", "content-length", "connection", "keep-alive", "proxy-connection",
        "transfer-encoding", "upgrade",
    ]
}
