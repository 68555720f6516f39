import CCurl
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The only file that touches libcurl. The ksqlDB client (EngineKafka) and the `orders`
// CLI's gRPC transport see `CurlTransfer.Request` and `CurlTransfer.Failure`, never a
// C type.

/// One blocking libcurl easy transfer: a POST of a body, the response body handed to a
/// handler as it arrives, header lines (and, with HTTP/2, trailer lines) to another.
package enum CurlTransfer {
    package enum Version: Sendable {
        case http1_1
        /// h2c without an Upgrade dance (gRPC servers expect the preface at once).
        case http2PriorKnowledge
    }

    package struct Request: Sendable {
        package var url: String
        package var version: Version
        package var headers: [(name: String, value: String)]
        /// Headers libcurl adds on its own that this request goes without
        /// (`Expect` for larger bodies, `Accept`).
        package var suppressedHeaders: [String]
        package var body: [UInt8]
        package var userAgent: String?
        /// The whole exchange is abandoned after this long; nil waits forever.
        package var timeout: Duration?
        /// Connecting alone is abandoned after this long (or `timeout`, if shorter).
        package var connectTimeout: Duration
        /// libcurl's own trace of the exchange on stderr.
        package var verbose: Bool

        package init(
            url: String, version: Version, headers: [(name: String, value: String)], suppressedHeaders: [String] = [],
            body: [UInt8], userAgent: String? = nil, timeout: Duration?, connectTimeout: Duration, verbose: Bool = false
        ) {
            self.url = url
            self.version = version
            self.headers = headers
            self.suppressedHeaders = suppressedHeaders
            self.body = body
            self.userAgent = userAgent
            self.timeout = timeout
            self.connectTimeout = connectTimeout
            self.verbose = verbose
        }
    }

    /// Why no complete response came back.
    package struct Failure: Error, CustomStringConvertible {
        package enum Kind: Sendable {
            /// No connection was made: refused, unresolvable, connect timeout.
            case cannotConnect
            /// `timeout` ran out.
            case timedOut
            /// `isCancelled` said so.
            case cancelled
            /// The peer reset the stream; `code` is the HTTP/2 error code when libcurl
            /// reported it.
            case streamReset(code: UInt32?)
            /// The connection broke or the peer does not speak the protocol.
            case connectionLost
            /// The data handler threw; the error is in `cause`.
            case handlerFailed
            case other
        }

        package var kind: Kind
        package var message: String
        package var cause: (any Error)?
        package var description: String { message }
    }

    /// Runs once per process, before the first handle: libcurl wants its global state set
    /// up while the process is still single-threaded.
    private static let globalInit: Void = {
        let code = curl_global_init(Int(CURL_GLOBAL_DEFAULT))
        precondition(code == CURLE_OK, "curl_global_init failed: \(code)")
    }()

    /// Sends `request`, blocking the calling thread until the response is complete; the
    /// handlers run on this thread, inside `curl_easy_perform`. `isCancelled` is polled
    /// while waiting (at least once a second); true resets the transfer. `onGoAway` runs
    /// when the peer sent an HTTP/2 GOAWAY during the transfer. Returns the response status
    /// as libcurl parsed it (nil if it could not).
    package static func perform(
        _ request: Request,
        onData: (UnsafeRawBufferPointer) throws -> Void,
        onHeaderLine: (UnsafeRawBufferPointer) -> Void = { _ in },
        onGoAway: (() -> Void)? = nil,
        isCancelled: () -> Bool = { false }
    ) throws(Failure) -> Int? {
        _ = globalInit
        // The context holds the closures only while curl_easy_perform runs;
        // withoutActuallyEscaping rethrows untyped errors, hence the Result.
        let outcome = withoutActuallyEscaping(onData) { onData in
            withoutActuallyEscaping(onHeaderLine) { onHeaderLine in
                withoutActuallyEscaping(isCancelled) { isCancelled in
                    Result { () throws(Failure) -> Int? in
                        try transfer(
                            request,
                            context: Context(
                                onData: onData, onHeaderLine: onHeaderLine, onGoAway: onGoAway, isCancelled: isCancelled,
                                echoesTrace: request.verbose))
                    }
                }
            }
        }
        return try outcome.get()
    }

    private static func transfer(_ request: Request, context: Context) throws(Failure) -> Int? {
        // Both must outlive the handle: CURLOPT_ERRORBUFFER is written until
        // curl_easy_cleanup, and CURLOPT_HTTPHEADER is not copied. Created first, so
        // their deferred releases run after the handle's.
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
        defer { errorBuffer.deallocate() }
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }
        for (name, value) in request.headers { headerList = curl_slist_append(headerList, "\(name): \(value)") }
        for name in request.suppressedHeaders { headerList = curl_slist_append(headerList, "\(name):") }

        guard let handle = IdleHandles.take() ?? curl_easy_init() else {
            throw Failure(kind: .other, message: "curl_easy_init failed")
        }
        // Kept for the next transfer after a complete one (with its connection); a failed
        // one's may have a broken connection or a transfer abandoned midway.
        var reusable = false
        defer { reusable ? IdleHandles.put(handle) : curl_easy_cleanup(handle) }

        // The callbacks get the context unretained: the caller's reference keeps it alive
        // through curl_easy_perform (withExtendedLifetime below), and no callback runs
        // after perform returns.
        let pointer = Unmanaged.passUnretained(context).toOpaque()
        if let failure = configure(
            handle, request, headers: headerList, errorBuffer: errorBuffer, context: pointer,
            watchesGoAway: context.onGoAway != nil)
        {
            throw Failure(kind: .other, message: "libcurl rejected an option: \(describe(failure))")
        }
        let result = withExtendedLifetime(context) { curl_easy_perform(handle) }
        if result != CURLE_OK {
            throw failure(result, handle: handle, detail: String(cString: errorBuffer), context: context)
        }
        var status = 0
        let parsed = CCurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK
        reusable = true
        return parsed ? status : nil
    }

    /// Easy handles between transfers. Under the easy interface libcurl keeps a handle's
    /// connections in the handle, so a transfer on a used one reuses its connection to the
    /// same peer instead of connecting again: without this every ksqlDB pull query (one per
    /// GetOrder) made a TCP connection and left a socket in TIME_WAIT. One transfer at a
    /// time has a handle; the few idle ones are kept, the rest cleaned up.
    private enum IdleHandles {
        /// Used by one transfer at a time: taken out of the list before use.
        private struct Handle: @unchecked Sendable { let pointer: UnsafeMutableRawPointer }
        private static let idle = Mutex<[Handle]>([])
        private static let limit = 16

        static func take() -> UnsafeMutableRawPointer? { idle.withLock { $0.popLast()?.pointer } }

        /// Back to the list with every option cleared (the error buffer, header list and
        /// callback context they point to are gone after the transfer); the connections,
        /// DNS and TLS session caches stay.
        static func put(_ handle: UnsafeMutableRawPointer) {
            curl_easy_reset(handle)
            let kept = idle.withLock { list -> Bool in
                guard list.count < limit else { return false }
                list.append(Handle(pointer: handle))
                return true
            }
            if !kept { curl_easy_cleanup(handle) }
        }
    }

    /// Sets every option of one transfer; returns the first failure, if any.
    private static func configure(
        _ handle: UnsafeMutableRawPointer, _ request: Request, headers: UnsafeMutablePointer<curl_slist>?,
        errorBuffer: UnsafeMutablePointer<CChar>, context: UnsafeMutableRawPointer, watchesGoAway: Bool
    ) -> CURLcode? {
        var failure: CURLcode?
        func check(_ code: CURLcode) { if code != CURLE_OK, failure == nil { failure = code } }

        check(CCurl_setopt_str(handle, CURLOPT_URL, request.url))
        switch request.version {
        case .http1_1: check(CCurl_setopt_long(handle, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1)))
        case .http2PriorKnowledge: check(CCurl_setopt_long(handle, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE))
        }
        if let agent = request.userAgent { check(CCurl_setopt_str(handle, CURLOPT_USERAGENT, agent)) }
        check(CCurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headers))
        // Binary body: the size first, so COPYPOSTFIELDS does not stop at the first zero
        // byte; curl copies it, so the array need not outlive this.
        check(CCurl_setopt_long(handle, CURLOPT_POST, 1))
        check(CCurl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)))
        request.body.withUnsafeBytes { bytes in
            check(CCurl_setopt_ptr(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress)))
        }
        // The callers' processes ignore SIGPIPE themselves; without this libcurl would
        // install and restore handlers around every call.
        check(CCurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        check(CCurl_setopt_ptr(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        if watchesGoAway {
            // libcurl has no API for a received GOAWAY; it only says so in its trace text, which
            // reaches a debug function only with VERBOSE on (the trace is echoed as libcurl
            // would print it when `request.verbose`, and dropped otherwise).
            check(CCurl_setopt_long(handle, CURLOPT_VERBOSE, 1))
            check(CCurl_setopt_debug_function(handle, traceFunction))
            check(CCurl_setopt_ptr(handle, CURLOPT_DEBUGDATA, context))
        } else {
            check(CCurl_setopt_long(handle, CURLOPT_VERBOSE, request.verbose ? 1 : 0))
        }
        var connect = milliseconds(request.connectTimeout)
        if let timeout = request.timeout {
            let limit = milliseconds(timeout)
            check(CCurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, limit))
            connect = min(connect, limit)
        }
        check(CCurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, connect))
        // TCP keep-alive probes after 15 s of silence: a peer whose host died or whose
        // network went away then fails the transfer, instead of one without a timeout (a
        // stream) waiting on a connection that will never deliver again.
        check(CCurl_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1))
        check(CCurl_setopt_long(handle, CURLOPT_TCP_KEEPIDLE, 15))
        check(CCurl_setopt_long(handle, CURLOPT_TCP_KEEPINTVL, 5))

        check(CCurl_setopt_write_function(handle, CURLOPT_WRITEFUNCTION) { buffer, size, count, userdata in
            let context = Unmanaged<Context>.fromOpaque(userdata!).takeUnretainedValue()
            let length = size * count
            do {
                try context.onData(UnsafeRawBufferPointer(start: buffer, count: length))
                return length
            } catch {
                // Stash the handler's error; a short count makes curl fail the transfer
                // with CURLE_WRITE_ERROR.
                context.handlerError = error
                return 0
            }
        })
        check(CCurl_setopt_ptr(handle, CURLOPT_WRITEDATA, context))
        // With HTTP/2 the response headers and then, after the body, the trailers both
        // come through here, one line per call.
        check(CCurl_setopt_write_function(handle, CURLOPT_HEADERFUNCTION) { buffer, size, count, userdata in
            let context = Unmanaged<Context>.fromOpaque(userdata!).takeUnretainedValue()
            let length = size * count
            context.onHeaderLine(UnsafeRawBufferPointer(start: buffer, count: length))
            return length
        })
        check(CCurl_setopt_ptr(handle, CURLOPT_HEADERDATA, context))
        check(CCurl_setopt_long(handle, CURLOPT_NOPROGRESS, 0))
        check(CCurl_setopt_xferinfo_function(handle) { userdata, _, _, _, _ in
            let context = Unmanaged<Context>.fromOpaque(userdata!).takeUnretainedValue()
            // Non-zero aborts the transfer with CURLE_ABORTED_BY_CALLBACK.
            return context.isCancelled() ? 1 : 0
        })
        check(CCurl_setopt_ptr(handle, CURLOPT_XFERINFODATA, context))
        return failure
    }

    /// CURLOPT_DEBUGFUNCTION: spots libcurl's "received GOAWAY" note (7.88 spells it
    /// "recveived GOAWAY, error=0, last_stream=1") and echoes what libcurl's own trace shows.
    private static let traceFunction: curl_debug_callback = { _, type, data, size, userdata in
        let context = Unmanaged<Context>.fromOpaque(userdata!).takeUnretainedValue()
        let text = UnsafeRawBufferPointer(start: data, count: size)
        if type == CURLINFO_TEXT, text.contains(ascii: "GOAWAY") { context.onGoAway?() }
        guard context.echoesTrace, let data else { return 0 }
        // libcurl's default trace: only these three kinds, each line with its prefix.
        let prefix: String
        switch type {
        case CURLINFO_TEXT: prefix = "* "
        case CURLINFO_HEADER_IN: prefix = "< "
        case CURLINFO_HEADER_OUT: prefix = "> "
        default: return 0
        }
        // write(2), not stdio's shared `stderr`: one line, unbuffered, as libcurl's own trace.
        let line = Array(prefix.utf8) + UnsafeRawBufferPointer(start: data, count: size)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        return 0
    }

    private static func failure(_ code: CURLcode, handle: UnsafeMutableRawPointer, detail: String, context: Context) -> Failure {
        let detail = detail.isEmpty ? describe(code) : detail
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return Failure(kind: .cannotConnect, message: detail)
        case CURLE_OPERATION_TIMEDOUT:
            // A timeout before the TCP connection was up is a connect failure.
            var connectTime: curl_off_t = 0
            if CCurl_getinfo_off(handle, CURLINFO_CONNECT_TIME_T, &connectTime) == CURLE_OK, connectTime == 0 {
                return Failure(kind: .cannotConnect, message: detail)
            }
            return Failure(kind: .timedOut, message: detail)
        case CURLE_ABORTED_BY_CALLBACK:
            return Failure(kind: .cancelled, message: "cancelled")
        case CURLE_WRITE_ERROR where context.handlerError != nil:
            return Failure(kind: .handlerFailed, message: "\(context.handlerError!)", cause: context.handlerError)
        case CURLE_HTTP2_STREAM:
            // libcurl 7.88 words a reset as "HTTP/2 stream 1 was not closed cleanly:
            // CANCEL (err 8)"; the code is only in that text.
            return Failure(kind: .streamReset(code: http2ErrorCode(in: detail)), message: detail)
        case CURLE_HTTP2, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE,
            CURLE_WEIRD_SERVER_REPLY:
            return Failure(kind: .connectionLost, message: detail)
        default:
            return Failure(kind: .other, message: detail)
        }
    }

    private static func http2ErrorCode(in text: String) -> UInt32? {
        let parts = text.split(separator: "(err ", omittingEmptySubsequences: false)
        guard parts.count > 1, let last = parts.last else { return nil }
        return UInt32(last.prefix { $0.isNumber })
    }

    private static func describe(_ code: CURLcode) -> String {
        String(cString: curl_easy_strerror(code))
    }

    private static func milliseconds(_ d: Duration) -> Int {
        let (seconds, attoseconds) = d.components
        return max(1, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    /// Per-transfer state the C callbacks reach through their userdata pointer.
    private final class Context {
        let onData: (UnsafeRawBufferPointer) throws -> Void
        let onHeaderLine: (UnsafeRawBufferPointer) -> Void
        let onGoAway: (() -> Void)?
        let isCancelled: () -> Bool
        /// Print libcurl's trace on stderr (when the trace goes through `traceFunction`).
        let echoesTrace: Bool
        var handlerError: (any Error)?

        init(
            onData: @escaping (UnsafeRawBufferPointer) throws -> Void, onHeaderLine: @escaping (UnsafeRawBufferPointer) -> Void,
            onGoAway: (() -> Void)?, isCancelled: @escaping () -> Bool, echoesTrace: Bool
        ) {
            self.onData = onData
            self.onHeaderLine = onHeaderLine
            self.onGoAway = onGoAway
            self.isCancelled = isCancelled
            self.echoesTrace = echoesTrace
        }
    }
}

extension UnsafeRawBufferPointer {
    fileprivate func contains(ascii needle: StaticString) -> Bool {
        let pattern = UnsafeRawBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        guard pattern.count <= count else { return false }
        return (0...(count - pattern.count)).contains { start in
            self[start..<(start + pattern.count)].elementsEqual(pattern)
        }
    }
}
