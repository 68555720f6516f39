import BenchProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import Histogram
import Synchronization

typealias Order = Ridehailing_Orders_V1_Order
typealias PlaceOrderRequest = Ridehailing_Orders_V1_PlaceOrderRequest
typealias PlaceOrderResponse = Ridehailing_Orders_V1_PlaceOrderResponse
typealias UpdateOrderRequest = Ridehailing_Orders_V1_UpdateOrderRequest
typealias UpdateOrderResponse = Ridehailing_Orders_V1_UpdateOrderResponse
typealias StreamEventsRequest = Ridehailing_Orders_V1_StreamEventsRequest
typealias StreamEventsResponse = Ridehailing_Orders_V1_StreamEventsResponse

/// The OrderService methods, registered by hand (no protoc-gen-grpc-swift-2 here).
enum Methods {
    static let service = "ridehailing.orders.v1.OrderService"
    static let placeOrder = MethodDescriptor(fullyQualifiedService: service, method: "PlaceOrder", type: .unary)
    static let updateOrder = MethodDescriptor(fullyQualifiedService: service, method: "UpdateOrder", type: .unary)
    static let getOrder = MethodDescriptor(fullyQualifiedService: service, method: "GetOrder", type: .unary)
    static let listOrders = MethodDescriptor(fullyQualifiedService: service, method: "ListOrders", type: .unary)
    static let streamEvents = MethodDescriptor(fullyQualifiedService: service, method: "StreamEvents", type: .serverStreaming)
}

/// Several grpc-swift-2 clients, one HTTP/2 connection each (the server allows 100 streams
/// per connection), used round robin. `run` starts their connections, runs `body`, then
/// shuts them down.
struct ClientPool: Sendable {
    let clients: [GRPCClient<HTTP2ClientTransport.Posix>]

    static func run<T: Sendable>(
        target: String, connections: Int, _ body: @Sendable (ClientPool) async throws -> T
    ) async throws -> T {
        let (host, port) = try parseTarget(target)
        var clients: [GRPCClient<HTTP2ClientTransport.Posix>] = []
        for _ in 0..<max(1, connections) {
            var config = HTTP2ClientTransport.Posix.Config.defaults
            // Large windows: StreamEvents pushes many small messages.
            config.http2.targetWindowSize = 16 << 20
            let transport = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: host, port: port), transportSecurity: .plaintext, config: config)
            clients.append(GRPCClient(transport: transport))
        }
        let pool = ClientPool(clients: clients)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients {
                group.addTask { try await client.runConnections() }
            }
            defer {
                for client in clients { client.beginGracefulShutdown() }
            }
            let result = try await body(pool)
            for client in clients { client.beginGracefulShutdown() }
            try await group.waitForAll()
            return result
        }
    }

    func client(_ i: Int) -> GRPCClient<HTTP2ClientTransport.Posix> { clients[i % clients.count] }

    func placeOrder(_ req: PlaceOrderRequest, via i: Int, timeout: Duration = .seconds(30)) async throws -> PlaceOrderResponse {
        var options = CallOptions.defaults
        options.timeout = timeout
        return try await client(i).unary(
            request: ClientRequest(message: req), descriptor: Methods.placeOrder,
            serializer: ProtobufSerializer<PlaceOrderRequest>(), deserializer: ProtobufDeserializer<PlaceOrderResponse>(),
            options: options
        ) { try $0.message }
    }

    func updateOrder(_ req: UpdateOrderRequest, via i: Int, timeout: Duration = .seconds(30)) async throws -> UpdateOrderResponse {
        var options = CallOptions.defaults
        options.timeout = timeout
        return try await client(i).unary(
            request: ClientRequest(message: req), descriptor: Methods.updateOrder,
            serializer: ProtobufSerializer<UpdateOrderRequest>(), deserializer: ProtobufDeserializer<UpdateOrderResponse>(),
            options: options
        ) { try $0.message }
    }
}

func parseTarget(_ target: String) throws -> (String, Int) {
    guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
        throw BenchError("--target must be HOST:PORT, got \(target)")
    }
    return (String(target[..<colon]), port)
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

// MARK: Requests

enum Requests {
    static let rider = "63770803-38f4-4594-aec2-4c74918f7165"
    static let driver = "2c068a1a-9263-433f-a70b-067d51b98378"

    /// The README's order: two Kyiv addresses, price 123.45, a fresh request_id.
    static func place(requestId: String = UUID().uuidString.lowercased()) -> PlaceOrderRequest {
        var req = PlaceOrderRequest()
        req.requestID = requestId
        req.riderID = rider
        req.price = "123.45"
        var a = Ridehailing_Orders_V1_Waypoint()
        a.address = "Київ, вулиця Полярна, 17А"
        a.lat = 50.51980052414157
        a.lon = 30.467197278948536
        var b = Ridehailing_Orders_V1_Waypoint()
        b.address = "Київ, вулиця Новокостянтинівська, 18В"
        b.lat = 50.48509161169076
        b.lon = 30.485170724431292
        req.route = [a, b]
        return req
    }

    static func accept(orderId: String) -> UpdateOrderRequest {
        var req = UpdateOrderRequest()
        req.requestID = UUID().uuidString.lowercased()
        req.orderID = orderId
        req.status = .accepted
        req.driverID = driver
        req.version = 1
        return req
    }
}

// MARK: Measuring

/// Microsecond latencies, 1 µs .. 120 s, 3 significant digits.
func newHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
}

extension Histogram<UInt64> {
    mutating func recordMicros(_ d: Duration) {
        let us = d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
        _ = record(UInt64(Swift.max(1, Swift.min(us, 120_000_000))))
    }

    func ms(_ p: Double) -> String { String(format: "%.2f", Double(valueAtPercentile(p)) / 1000) }
}

func secondsOf(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// Wall-clock microseconds since the epoch (comparable with the server's created_date).
func wallMicros() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
}

/// Counts errors by a short description, for the summary line.
final class ErrorTally: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    func add(_ error: any Error) {
        let key: String
        if let rpc = error as? RPCError { key = "\(rpc.code)" } else { key = "\(type(of: error))" }
        counts.withLock { $0[key, default: 0] += 1 }
    }
    /// An error that is not a Swift error (a stream's status, a protocol problem), by kind.
    func add(kind: String) {
        counts.withLock { $0[kind, default: 0] += 1 }
    }
    var total: Int { counts.withLock { $0.values.reduce(0, +) } }
    var summary: String {
        let c = counts.withLock { $0 }
        return c.isEmpty ? "none" : c.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
    }
}

func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func note(_ line: String) {
    FileHandle.standardError.write(Data(("orders-bench: " + line + "\n").utf8))
}

/// Shared across tasks: an atomic counter and a locked value (Atomic and Mutex themselves
/// cannot be captured by escaping task closures).
final class SharedCounter: Sendable {
    private let value = Atomic<Int>(0)
    @discardableResult func add(_ n: Int = 1) -> Int { value.wrappingAdd(n, ordering: .relaxed).oldValue }
    var load: Int { value.load(ordering: .relaxed) }
}

final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

/// CPU seconds (user + system) this process has used so far.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}
