import CurlTransfer

// The CLI's transport. Everything above it sees `HTTP2Request`, `HTTP2Response` and
// `TransportError`; libcurl itself is wrapped in `CurlTransfer`.

/// One gRPC call's HTTP/2 request: a POST of already-framed messages.
struct HTTP2Request {
    /// `/package.Service/Method`.
    var path: String
    /// Request headers besides the pseudo-headers (lowercase names).
    var headers: [(name: String, value: String)]
    /// The length-prefixed messages, sent with END_STREAM after them.
    var body: [UInt8]
    /// The whole exchange is abandoned after this long; nil waits forever.
    var transferLimit: Duration?
}

/// What came back, besides the body (which went to the data handler).
struct HTTP2Response {
    /// The `:status` pseudo-header.
    var status: Int
    /// The response HEADERS block. For a Trailers-Only response it holds
    /// `grpc-status` too.
    var headers: [(name: String, value: String)]
    /// The trailing HEADERS block, empty for a Trailers-Only response.
    var trailers: [(name: String, value: String)]
    /// The server sent GOAWAY (it is shutting down) during the call. libcurl 7.88 drops the
    /// trailers of a stream that ends after it, or in the same read (it closes the session
    /// before handing them over), so a missing status then means the status was lost, not
    /// that the server sent none.
    var goAwayReceived = false
}

/// Why an exchange failed before a complete response came back.
typealias TransportError = CurlTransfer.Failure

/// gRPC's HTTP/2 exchange on libcurl: h2c with prior knowledge, one POST per
/// call, body streamed to a handler as DATA frames arrive, trailers collected
/// from the header lines.
///
/// - Important: `perform` blocks the calling thread until the stream ends; the
///   handlers run on that thread, inside `curl_easy_perform`.
struct CurlGRPCClient {
    /// `host:port`.
    var authority: String
    var userAgent: String
    /// libcurl's own trace of the exchange (headers, trailers) on stderr.
    var verbose = false

    /// Sends `request` and feeds every chunk of the response body to `onData`
    /// as it arrives. Returns once the server has closed the stream.
    ///
    /// `isCancelled` is polled while waiting (libcurl calls its progress
    /// callback at least once a second); returning true resets the stream.
    func perform(
        _ request: HTTP2Request,
        onData: (UnsafeRawBufferPointer) throws -> Void,
        isCancelled: () -> Bool
    ) throws(TransportError) -> HTTP2Response {
        let head = ResponseHead()
        var goAwayReceived = false
        let status = try CurlTransfer.perform(
            CurlTransfer.Request(
                url: "http://\(authority)\(request.path)", version: .http2PriorKnowledge, headers: request.headers,
                // curl adds `accept: */*` by default; a gRPC request has no use for it.
                suppressedHeaders: ["accept"], body: request.body, userAgent: userAgent,
                timeout: request.transferLimit, connectTimeout: .seconds(10), verbose: verbose),
            onData: onData,
            onHeaderLine: { head.receive(String(decoding: $0, as: UTF8.self)) },
            onGoAway: { goAwayReceived = true },
            isCancelled: isCancelled)
        return HTTP2Response(
            status: status ?? head.status, headers: head.headers, trailers: head.trailers, goAwayReceived: goAwayReceived)
    }
}

/// The response head and trailers, from libcurl's header lines.
private final class ResponseHead {
    var headers: [(name: String, value: String)] = []
    var trailers: [(name: String, value: String)] = []
    /// From the status line, for when libcurl cannot say.
    var status = 0
    /// Set by the blank line that ends the response headers: every field line
    /// after it is a trailer.
    private var headersComplete = false

    func receive(_ raw: String) {
        let line = raw.trimmingSuffix { $0.isNewline || $0 == " " || $0 == "\t" }
        if line.isEmpty {
            headersComplete = true
            return
        }
        if line.hasPrefix("HTTP/") {
            // A new status line starts a new response head (an interim 1xx
            // would come before the final one).
            headers = []
            headersComplete = false
            let fields = line.split(separator: " ")
            if fields.count >= 2, let code = Int(fields[1]) { status = code }
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = line[..<colon].lowercased()
        let value = String(line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" })
        if headersComplete {
            trailers.append((name, value))
        } else {
            headers.append((name, value))
        }
    }
}

extension String {
    fileprivate func trimmingSuffix(while predicate: (Character) -> Bool) -> String {
        var end = endIndex
        while end > startIndex, predicate(self[index(before: end)]) { end = index(before: end) }
        return String(self[..<end])
    }
}
