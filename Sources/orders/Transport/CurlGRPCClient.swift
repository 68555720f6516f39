import CCurl

// The only file that touches libcurl. Everything above it sees `HTTP2Request`,
// `HTTP2Response` and `TransportError`, never a C type.

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
}

/// Why an exchange failed before a complete response came back.
struct TransportError: Error, CustomStringConvertible {
    enum Kind {
        /// No connection was made: refused, unresolvable, connect timeout.
        case cannotConnect
        /// The transfer limit ran out.
        case timedOut
        /// `isCancelled` said so.
        case cancelled
        /// The peer reset the stream; `code` is the HTTP/2 error code when
        /// libcurl reported it.
        case streamReset(code: UInt32?)
        /// The connection broke or the peer does not speak HTTP/2.
        case connectionLost
        /// The data handler threw; the error is in `cause`.
        case handlerFailed
        case other
    }

    var kind: Kind
    var message: String
    var cause: (any Error)?

    var description: String { message }
}

/// gRPC's HTTP/2 exchange on libcurl: h2c with prior knowledge, one POST per
/// call, body streamed to a handler as DATA frames arrive, trailers collected
/// from the header callback.
///
/// - Important: `perform` blocks the calling thread until the stream ends; the
///   handlers run on that thread, inside `curl_easy_perform`.
struct CurlGRPCClient {
    /// `host:port`.
    var authority: String
    var userAgent: String
    /// libcurl's own trace of the exchange (headers, trailers) on stderr.
    var verbose = false

    /// Runs once per process, before the first handle: libcurl wants its global
    /// state set up while the process is still single-threaded.
    private static let globalInit: Void = {
        let code = curl_global_init(Int(CURL_GLOBAL_DEFAULT))
        precondition(code == CURLE_OK, "curl_global_init failed: \(code)")
    }()

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
        _ = Self.globalInit
        // The context holds the closures only while curl_easy_perform runs;
        // withoutActuallyEscaping rethrows untyped errors, hence the Result.
        let outcome = withoutActuallyEscaping(onData) { onData in
            withoutActuallyEscaping(isCancelled) { isCancelled in
                Result { () throws(TransportError) -> HTTP2Response in
                    try transfer(request, context: TransferContext(onData: onData, isCancelled: isCancelled))
                }
            }
        }
        return try outcome.get()
    }

    private func transfer(_ request: HTTP2Request, context: TransferContext) throws(TransportError) -> HTTP2Response {
        // Both must outlive the handle: CURLOPT_ERRORBUFFER is written until
        // curl_easy_cleanup, and CURLOPT_HTTPHEADER is not copied. Created
        // first, so their deferred releases run after the handle's.
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
        defer { errorBuffer.deallocate() }
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }
        for (name, value) in request.headers {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        // curl adds `accept: */*` by default; a gRPC request has no use for it.
        headerList = curl_slist_append(headerList, "accept:")

        guard let handle = curl_easy_init() else {
            throw TransportError(kind: .other, message: "curl_easy_init failed")
        }
        defer { curl_easy_cleanup(handle) }

        // The callbacks get the context unretained: the caller's reference
        // keeps it alive through curl_easy_perform (withExtendedLifetime
        // below), and no callback runs after perform returns.
        let contextPointer = Unmanaged.passUnretained(context).toOpaque()
        if let failure = configure(
            handle, for: request, headers: headerList, errorBuffer: errorBuffer, context: contextPointer
        ) {
            throw TransportError(kind: .other, message: "libcurl rejected an option: \(describe(failure))")
        }

        let result = withExtendedLifetime(context) { curl_easy_perform(handle) }

        if result != CURLE_OK {
            throw transportError(result, handle: handle, detail: String(cString: errorBuffer), context: context)
        }
        var status = 0
        if CCurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK {
            status = context.statusFromHeaders
        }
        return HTTP2Response(status: status, headers: context.headers, trailers: context.trailers)
    }

    /// Sets every option of one call; returns the first failure, if any.
    private func configure(
        _ handle: UnsafeMutableRawPointer,
        for request: HTTP2Request,
        headers: UnsafeMutablePointer<curl_slist>?,
        errorBuffer: UnsafeMutablePointer<CChar>,
        context: UnsafeMutableRawPointer
    ) -> CURLcode? {
        var setup = SetoptChecker()
        setup.check(CCurl_setopt_str(handle, CURLOPT_URL, "http://\(authority)\(request.path)"))
        // h2c without an Upgrade dance: gRPC servers expect the preface at once.
        setup.check(CCurl_setopt_long(handle, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE))
        setup.check(CCurl_setopt_str(handle, CURLOPT_USERAGENT, userAgent))
        setup.check(CCurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headers))
        // Binary body: the size first, so COPYPOSTFIELDS does not stop at the
        // first zero byte; curl copies it, so the array need not outlive this.
        setup.check(CCurl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)))
        request.body.withUnsafeBytes { bytes in
            setup.check(CCurl_setopt_ptr(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress)))
        }
        // The process ignores SIGPIPE itself (see Terminal.swift); without this
        // libcurl would install and restore handlers around every call.
        setup.check(CCurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        setup.check(CCurl_setopt_ptr(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        setup.check(CCurl_setopt_long(handle, CURLOPT_VERBOSE, verbose ? 1 : 0))
        if let limit = request.transferLimit {
            let (seconds, attoseconds) = limit.components
            let ms = max(1, Int(seconds * 1000 + attoseconds / 1_000_000_000_000_000))
            setup.check(CCurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, ms))
            setup.check(CCurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, min(ms, 10_000)))
        } else {
            setup.check(CCurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, 10_000))
        }

        setup.check(CCurl_setopt_write_function(handle, CURLOPT_WRITEFUNCTION) { buffer, size, count, userdata in
            let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
            let length = size * count
            do {
                try context.onData(UnsafeRawBufferPointer(start: buffer, count: length))
                return length
            } catch {
                // Stash the handler's error; returning a short count makes
                // curl fail the transfer with CURLE_WRITE_ERROR.
                context.handlerError = error
                return 0
            }
        })
        setup.check(CCurl_setopt_ptr(handle, CURLOPT_WRITEDATA, context))

        // With HTTP/2 the response headers and then, after the body, the
        // trailers both come through here, one line per call.
        setup.check(CCurl_setopt_write_function(handle, CURLOPT_HEADERFUNCTION) { buffer, size, count, userdata in
            let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
            let length = size * count
            context.receiveHeaderLine(String(decoding: UnsafeRawBufferPointer(start: buffer, count: length), as: UTF8.self))
            return length
        })
        setup.check(CCurl_setopt_ptr(handle, CURLOPT_HEADERDATA, context))

        setup.check(CCurl_setopt_long(handle, CURLOPT_NOPROGRESS, 0))
        setup.check(CCurl_setopt_xferinfo_function(handle) { userdata, _, _, _, _ in
            let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
            // Non-zero aborts the transfer with CURLE_ABORTED_BY_CALLBACK.
            return context.isCancelled() ? 1 : 0
        })
        setup.check(CCurl_setopt_ptr(handle, CURLOPT_XFERINFODATA, context))
        return setup.failure
    }

    private func transportError(
        _ code: CURLcode, handle: UnsafeMutableRawPointer, detail: String, context: TransferContext
    ) -> TransportError {
        let detail = detail.isEmpty ? describe(code) : detail
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST:
            return TransportError(kind: .cannotConnect, message: detail)
        case CURLE_OPERATION_TIMEDOUT:
            // A timeout before the TCP connection was up is a connect failure.
            var connectTime: curl_off_t = 0
            if CCurl_getinfo_off(handle, CURLINFO_CONNECT_TIME_T, &connectTime) == CURLE_OK, connectTime == 0 {
                return TransportError(kind: .cannotConnect, message: detail)
            }
            return TransportError(kind: .timedOut, message: detail)
        case CURLE_ABORTED_BY_CALLBACK:
            return TransportError(kind: .cancelled, message: "cancelled")
        case CURLE_WRITE_ERROR where context.handlerError != nil:
            return TransportError(kind: .handlerFailed, message: "\(context.handlerError!)", cause: context.handlerError)
        case CURLE_HTTP2_STREAM:
            // libcurl 7.88 words a reset as "HTTP/2 stream 1 was not closed
            // cleanly: CANCEL (err 8)"; the code is only in that text.
            return TransportError(kind: .streamReset(code: Self.http2ErrorCode(in: detail)), message: detail)
        case CURLE_HTTP2, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE,
             CURLE_WEIRD_SERVER_REPLY:
            return TransportError(kind: .connectionLost, message: detail)
        default:
            return TransportError(kind: .other, message: detail)
        }
    }

    private static func http2ErrorCode(in text: String) -> UInt32? {
        let parts = text.split(separator: "(err ", omittingEmptySubsequences: false)
        guard parts.count > 1, let last = parts.last else { return nil }
        return UInt32(last.prefix { $0.isNumber })
    }
}

private func describe(_ code: CURLcode) -> String {
    String(cString: curl_easy_strerror(code))
}

/// Collects the first failing `curl_easy_setopt` so setup reads as a list.
private struct SetoptChecker {
    var failure: CURLcode?
    mutating func check(_ code: CURLcode) {
        if code != CURLE_OK, failure == nil { failure = code }
    }
}

/// Per-transfer state the C callbacks reach through their userdata pointer.
private final class TransferContext {
    let onData: (UnsafeRawBufferPointer) throws -> Void
    let isCancelled: () -> Bool
    var handlerError: (any Error)?

    var headers: [(name: String, value: String)] = []
    var trailers: [(name: String, value: String)] = []
    var statusFromHeaders = 0
    /// Set by the blank line that ends the response headers: every field line
    /// after it is a trailer.
    private var headersComplete = false

    init(onData: @escaping (UnsafeRawBufferPointer) throws -> Void, isCancelled: @escaping () -> Bool) {
        self.onData = onData
        self.isCancelled = isCancelled
    }

    func receiveHeaderLine(_ raw: String) {
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
            if fields.count >= 2, let status = Int(fields[1]) { statusFromHeaders = status }
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
