import CurlTransfer
import Foundation
import Synchronization

// EngineKafka's HTTP client. Everything above it sees `HTTPRequest`, `HTTPResponse` and
// `HTTPTransportError`; libcurl itself is wrapped in `CurlTransfer`.

/// One plain HTTP/1.1 POST.
struct HTTPRequest: Sendable {
    var url: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    /// The whole exchange is abandoned after this long, counted from the call to `post`.
    var timeout: Duration
    /// Connecting alone is abandoned after this long.
    var connectTimeout: Duration
    /// A longer response body fails the call (`tooLarge`): a broken or hostile peer must
    /// not make the server buffer and parse gigabytes.
    var maxBodyBytes: Int
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
        /// Connected, then the peer closed or reset the connection without a complete
        /// answer (a ksqlDB restarting, a proxy in front of one that is not up yet).
        case connectionLost
        /// The response body went past `maxBodyBytes`.
        case tooLarge
        /// As many calls as `Admission` allows are running already; this one was not sent.
        case busy
        case other
    }
    var kind: Kind
    var message: String
    var description: String { message }
}

/// A bound on the transfers running at once, each holding a thread. Full means the call
/// fails at once (`busy`) instead of queueing behind transfers whose callers may have
/// given up already.
final class Admission: Sendable {
    let limit: Int
    private let running = Mutex(0)

    init(limit: Int) { self.limit = limit }

    func enter() -> Bool {
        running.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() { running.withLock { $0 -= 1 } }
}

/// ksqlDB's REST calls as blocking libcurl transfers (`CurlTransfer`), each on a thread of
/// its own so that the Swift cooperative pool never waits on the network, and none waits
/// for a thread either (a queue's threads come slowly, and a queued call's time would not
/// count against its limit).
enum CurlHTTPClient {
    /// Answers within `request.timeout` of this call, whatever the transfer does: past it
    /// the call fails with `timedOut` and the transfer, abandoned, stops at libcurl's next
    /// progress check (within a second). With `admission`, a call it refuses fails at once.
    static func post(_ request: HTTPRequest, admission: Admission? = nil) async throws(HTTPTransportError) -> HTTPResponse {
        if let admission, !admission.enter() {
            throw HTTPTransportError(
                kind: .busy, message: "POST \(request.url): \(admission.limit) requests are in flight already; not sent")
        }
        let call = PendingCall()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                call.start(continuation)
                let timer = Task {
                    do { try await Task.sleep(for: request.timeout) } catch { return }  // the transfer ended first
                    call.finish(.failure(HTTPTransportError(
                        kind: .timedOut, message: "POST \(request.url): no complete answer within \(request.timeout)")))
                }
                Thread.detachNewThread {
                    defer { admission?.leave() }
                    // A caller that gave up before this thread ran sends nothing.
                    guard !call.isFinished else { return }
                    let result = Result { () throws(HTTPTransportError) in try perform(request, isAbandoned: { call.isFinished }) }
                    call.finish(result)
                    timer.cancel()
                }
            }
        } onCancel: {
            call.finish(.failure(HTTPTransportError(kind: .other, message: "POST \(request.url): cancelled")))
        }
        return try result.get()
    }

    static func perform(_ request: HTTPRequest, isAbandoned: () -> Bool = { false }) throws(HTTPTransportError) -> HTTPResponse {
        var body: [UInt8] = []
        do {
            let status = try CurlTransfer.perform(
                CurlTransfer.Request(
                    url: request.url, version: .http1_1, headers: request.headers,
                    // No "Expect: 100-continue" round trip for larger bodies.
                    suppressedHeaders: ["Expect"], body: request.body, timeout: request.timeout,
                    connectTimeout: request.connectTimeout),
                onData: { chunk in
                    guard body.count + chunk.count <= request.maxBodyBytes else { throw BodyTooLarge() }
                    body.append(contentsOf: chunk)
                },
                isCancelled: isAbandoned)
            return HTTPResponse(status: status ?? 0, body: body)
        } catch {
            let kind: HTTPTransportError.Kind
            var message = error.message
            switch error.kind {
            case .cannotConnect: kind = .cannotConnect
            case .timedOut: kind = .timedOut
            case .connectionLost: kind = .connectionLost
            case .handlerFailed where error.cause is BodyTooLarge:
                kind = .tooLarge
                message = "the response body is over \(describe(bytes: request.maxBodyBytes)); abandoned"
            default: kind = .other
            }
            throw HTTPTransportError(kind: kind, message: "POST \(request.url): \(message)")
        }
    }

    private struct BodyTooLarge: Error {}

    static func describe(bytes: Int) -> String {
        bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}

/// One call's outcome, delivered once: by the transfer, the timer or cancellation,
/// whichever comes first.
private final class PendingCall: Sendable {
    typealias Outcome = Result<HTTPResponse, HTTPTransportError>
    private let state = Mutex<(continuation: CheckedContinuation<Outcome, Never>?, early: Outcome?, finished: Bool)>((nil, nil, false))

    var isFinished: Bool { state.withLock { $0.finished } }

    func start(_ continuation: CheckedContinuation<Outcome, Never>) {
        let early: Outcome? = state.withLock { state in
            if state.finished { return state.early }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    func finish(_ outcome: Outcome) {
        let continuation: CheckedContinuation<Outcome, Never>? = state.withLock { state in
            guard !state.finished else { return nil }
            state.finished = true
            guard let continuation = state.continuation else {
                // Cancelled before the continuation existed: `start` delivers it.
                state.early = outcome
                return nil
            }
            state.continuation = nil
            return continuation
        }
        continuation?.resume(returning: outcome)
    }
}
