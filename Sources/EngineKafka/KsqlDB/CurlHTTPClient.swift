import CCurl
import Dispatch

// The only file of EngineKafka that touches libcurl. Everything above it sees
// `HTTPRequest`, `HTTPResponse` and `HTTPTransportError`, never a C type.

/// One plain HTTP/1.1 POST.
struct HTTPRequest: Sendable {
    var url: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    /// The whole exchange is abandoned after this long.
    var timeout: Duration
    /// Connecting alone is abandoned after this long.
    var connectTimeout: Duration
}

struct HTTPResponse: Sendable {
    var status: Int
    var body: [UInt8]
}

/// Why no complete response came back.
struct HTTPTransportError: Error, Sendable, CustomStringConvertible {
    enum Kind: Sendable {
        /// Refused, unresolvable, connect timeout: the peer is not (yet) there.
        case cannotConnect
        case timedOut
        case other
    }
    var kind: Kind
    var message: String
    var description: String { message }
}

/// Blocking libcurl easy transfers, run on a dedicated queue so that the Swift
/// cooperative pool never waits on the network.
enum CurlHTTPClient {
    private static let globalInit: Void = {
        let code = curl_global_init(Int(CURL_GLOBAL_DEFAULT))
        precondition(code == CURLE_OK, "curl_global_init failed: \(code)")
    }()

    private static let queue = DispatchQueue(label: "ksqldb.curl", attributes: .concurrent)

    static func post(_ request: HTTPRequest) async throws(HTTPTransportError) -> HTTPResponse {
        let result: Result<HTTPResponse, HTTPTransportError> = await withCheckedContinuation { continuation in
            queue.async {
                continuation.resume(returning: Result { () throws(HTTPTransportError) in try perform(request) })
            }
        }
        return try result.get()
    }

    /// Collects the response body; reached through CURLOPT_WRITEDATA.
    private final class Sink {
        var body: [UInt8] = []
    }

    private static func milliseconds(_ d: Duration) -> Int {
        let (s, atto) = d.components
        return max(1, Int(s) * 1000 + Int(atto / 1_000_000_000_000_000))
    }

    static func perform(_ request: HTTPRequest) throws(HTTPTransportError) -> HTTPResponse {
        _ = globalInit
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
        defer { errorBuffer.deallocate() }
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }
        for (name, value) in request.headers {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        // No "Expect: 100-continue" round trip for larger bodies.
        headerList = curl_slist_append(headerList, "Expect:")

        guard let handle = curl_easy_init() else {
            throw HTTPTransportError(kind: .other, message: "curl_easy_init failed")
        }
        defer { curl_easy_cleanup(handle) }

        let sink = Sink()
        let sinkPointer = Unmanaged.passUnretained(sink).toOpaque()
        var failed: CURLcode? = nil
        func check(_ code: CURLcode) { if code != CURLE_OK, failed == nil { failed = code } }

        let body = request.body
        let status: Int? = body.withUnsafeBufferPointer { bodyPointer -> Int? in
            check(CCurl_setopt_str(handle, CURLOPT_URL, request.url))
            check(CCurl_setopt_long(handle, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1)))
            check(CCurl_setopt_long(handle, CURLOPT_POST, 1))
            // Not copied by curl: the buffer outlives curl_easy_perform below.
            check(CCurl_setopt_ptr(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bodyPointer.baseAddress)))
            check(CCurl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)))
            check(CCurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
            check(CCurl_setopt_ptr(handle, CURLOPT_ERRORBUFFER, errorBuffer))
            check(CCurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, milliseconds(request.timeout)))
            check(CCurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, milliseconds(request.connectTimeout)))
            check(CCurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
            check(CCurl_setopt_write_function(handle, CURLOPT_WRITEFUNCTION) { buffer, size, count, userdata in
                let sink = Unmanaged<Sink>.fromOpaque(userdata!).takeUnretainedValue()
                let length = size * count
                if length > 0, let buffer {
                    buffer.withMemoryRebound(to: UInt8.self, capacity: length) {
                        sink.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
                    }
                }
                return length
            })
            check(CCurl_setopt_ptr(handle, CURLOPT_WRITEDATA, sinkPointer))
            if failed != nil { return nil }
            let result = withExtendedLifetime(sink) { curl_easy_perform(handle) }
            if result != CURLE_OK {
                failed = result
                return nil
            }
            var status = 0
            _ = CCurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            return status
        }
        guard let status else {
            let code = failed ?? CURLE_FAILED_INIT
            let detail = String(cString: errorBuffer)
            let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            let kind: HTTPTransportError.Kind
            switch code {
            case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: kind = .cannotConnect
            case CURLE_OPERATION_TIMEDOUT: kind = .timedOut
            default: kind = .other
            }
            throw HTTPTransportError(kind: kind, message: "POST \(request.url): \(text)")
        }
        return HTTPResponse(status: status, body: sink.body)
    }
}
