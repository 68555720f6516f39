import CurlTransfer
import Dispatch

// EngineKafka's HTTP client. Everything above it sees `HTTPRequest`, `HTTPResponse` and
// `HTTPTransportError`; libcurl itself is wrapped in `CurlTransfer`.

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

/// ksqlDB's REST calls as blocking libcurl transfers (`CurlTransfer`), run on a
/// dedicated queue so that the Swift cooperative pool never waits on the network.
enum CurlHTTPClient {
    private static let queue = DispatchQueue(label: "ksqldb.curl", attributes: .concurrent)

    static func post(_ request: HTTPRequest) async throws(HTTPTransportError) -> HTTPResponse {
        let result: Result<HTTPResponse, HTTPTransportError> = await withCheckedContinuation { continuation in
            queue.async {
                continuation.resume(returning: Result { () throws(HTTPTransportError) in try perform(request) })
            }
        }
        return try result.get()
    }

    static func perform(_ request: HTTPRequest) throws(HTTPTransportError) -> HTTPResponse {
        var body: [UInt8] = []
        do {
            let status = try CurlTransfer.perform(
                CurlTransfer.Request(
                    url: request.url, version: .http1_1, headers: request.headers,
                    // No "Expect: 100-continue" round trip for larger bodies.
                    suppressedHeaders: ["Expect"], body: request.body, timeout: request.timeout,
                    connectTimeout: request.connectTimeout),
                onData: { body.append(contentsOf: $0) })
            return HTTPResponse(status: status ?? 0, body: body)
        } catch {
            let kind: HTTPTransportError.Kind
            switch error.kind {
            case .cannotConnect: kind = .cannotConnect
            case .timedOut: kind = .timedOut
            default: kind = .other
            }
            throw HTTPTransportError(kind: kind, message: "POST \(request.url): \(error.message)")
        }
    }
}
