import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A tiny HTTP/1.1 server on 127.0.0.1 for the ksqlDB client tests: records every request
/// and answers each with the next scripted response, then `Connection: close` — or, with
/// `keepAlive`, keeps the connection for the client's next request, as ksqlDB does. One
/// connection at a time.
final class KsqlDBFakeServer: Sendable {
    struct Request: Sendable {
        var method: String
        var path: String
        /// Lowercased names.
        var headers: [String: String]
        var body: Data

        var json: Any? { try? JSONSerialization.jsonObject(with: body) }
    }

    struct Response: Sendable {
        enum Action: Sendable {
            case answer
            /// Close the connection without answering (curl: "Empty reply from server").
            case drop
            /// Never answer; the connection stays open until `stop` (and the server
            /// accepts no other connection meanwhile).
            case hang
        }
        var status: Int
        var body: String
        var action: Action = .answer

        static let drop = Response(status: 0, body: "", action: .drop)
        static let hang = Response(status: 0, body: "", action: .hang)
    }

    let port: Int
    private let fd: Int32
    private let keepAlive: Bool
    private let state = Mutex<(requests: [Request], script: [Response], stopped: Bool)>(([], [], false))
    /// The connections accepted, and the one being served (shut down by `stop`).
    private let connections = Mutex<(accepted: Int, current: Int32?)>((0, nil))

    /// Starts listening; `script` answers the requests in order (500 once it runs out).
    init(script: [Response], keepAlive: Bool = false) throws {
        self.keepAlive = keepAlive
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: addr.sin_port))
        state.withLock { $0.script = script }
        let thread = Thread { [self] in self.acceptLoop() }
        thread.start()
    }

    var url: String { "http://127.0.0.1:\(port)" }
    var requests: [Request] { state.withLock { $0.requests } }
    var acceptedConnections: Int { connections.withLock { $0.accepted } }

    /// Wakes the accept loop, which closes the socket: closing it here could let its number
    /// be reused by another test's server before the loop's next `accept`, which would
    /// then answer that server's clients from this script.
    func stop() {
        state.withLock { $0.stopped = true }
        shutdown(fd, Int32(SHUT_RDWR))
        // A kept-alive connection would hold the loop in its read.
        connections.withLock { if let client = $0.current { shutdown(client, Int32(SHUT_RDWR)) } }
    }

    private func acceptLoop() {
        defer { close(fd) }
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if state.withLock({ $0.stopped }) { return }
                if errno == EINTR { continue }
                return
            }
            connections.withLock { $0 = ($0.accepted + 1, client) }
            while handle(client) && keepAlive && !state.withLock({ $0.stopped }) {}
            connections.withLock { $0.current = nil }
            close(client)
        }
    }

    /// Serves one request; true when it was answered (the connection may take another).
    private func handle(_ client: Int32) -> Bool {
        var buffer = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Range<Data.Index>? = nil
        var contentLength = 0
        var request: Request? = nil
        while true {
            let n = read(client, &chunk, chunk.count)
            if n <= 0 { return false }
            buffer.append(contentsOf: chunk[0..<n])
            if headerEnd == nil, let end = buffer.range(of: Data("\r\n\r\n".utf8)) {
                headerEnd = end
                let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
                var lines = head.components(separatedBy: "\r\n")
                let requestLine = lines.removeFirst().split(separator: " ")
                var headers: [String: String] = [:]
                for line in lines {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                contentLength = Int(headers["content-length"] ?? "0") ?? 0
                request = Request(
                    method: requestLine.count > 0 ? String(requestLine[0]) : "",
                    path: requestLine.count > 1 ? String(requestLine[1]) : "", headers: headers, body: Data())
            }
            if let end = headerEnd, buffer.count - end.upperBound >= contentLength { break }
        }
        guard var request, let end = headerEnd else { return false }
        request.body = Data(buffer[end.upperBound..<(end.upperBound + contentLength)])
        let response: Response = state.withLock {
            $0.requests.append(request)
            return $0.script.isEmpty ? Response(status: 500, body: #"{"message":"script exhausted"}"#) : $0.script.removeFirst()
        }
        switch response.action {
        case .answer: break
        case .drop: return false
        case .hang:
            while !state.withLock({ $0.stopped }) { usleep(10_000) }
            return false
        }
        let body = Array(response.body.utf8)
        let head = "HTTP/1.1 \(response.status) X\r\nContent-Type: application/vnd.ksql.v1+json\r\nContent-Length: \(body.count)\r\n\(keepAlive ? "" : "Connection: close\r\n")\r\n"
        let bytes = Array(head.utf8) + body
        var sent = 0
        while sent < bytes.count {
            // MSG_NOSIGNAL: a client that gave up on a large body must not SIGPIPE the tests.
            let n = bytes[sent...].withUnsafeBufferPointer { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }
}
