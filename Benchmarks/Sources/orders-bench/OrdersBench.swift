import ArgumentParser
import BenchProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import Histogram
import SwiftProtobuf
import Synchronization

/// `orders-bench`: load generator for orders-server (Scripts/bench.sh). Every measuring
/// subcommand ends with one parseable `key=value` summary line on stdout; progress goes to
/// stderr.
@main
struct OrdersBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orders-bench",
        abstract: "Load generator for orders-server.",
        subcommands: [Seed.self, Probe.self, Place.self, Accept.self, Stream.self, IdleConnections.self])
}

struct Common: ParsableArguments {
    @Option(help: "The server, HOST:PORT.") var target = "127.0.0.1:50051"
    @Option(help: "HTTP/2 connections (0: one per 32 in flight).") var connections = 0

    func connectionCount(inFlight: Int) -> Int {
        connections > 0 ? connections : max(1, (inFlight + 31) / 32)
    }
}

// MARK: seed

/// Places one order and writes the framed GetOrder request bodies (protobuf and JSON) for h2load.
struct Seed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Place one order; write get-proto.bin and get-json.bin (framed GetOrder requests) to --out-dir.")
    @OptionGroup var common: Common
    @Option(help: "Directory for the request bodies.") var outDir: String

    func run() async throws {
        let response = try await ClientPool.run(target: common.target, connections: 1) { pool in
            try await pool.placeOrder(Requests.place(), via: 0)
        }
        var get = Ridehailing_Orders_V1_GetOrderRequest()
        get.orderID = response.orderID
        let proto: [UInt8] = try get.serializedBytes()
        let json = Array(try get.jsonString().utf8)
        try framed(proto).write(to: URL(fileURLWithPath: outDir + "/get-proto.bin"))
        try framed(json).write(to: URL(fileURLWithPath: outDir + "/get-json.bin"))
        // The Order as the server returned it, for the grpc-swift-2 peer's fixed response.
        try Data(try response.order.serializedBytes() as [UInt8]).write(to: URL(fileURLWithPath: outDir + "/order.pb"))
        emit("order_id=\(response.orderID)")
    }

    private func framed(_ body: [UInt8]) -> Data {
        var d = Data([0])
        let n = UInt32(body.count).bigEndian
        withUnsafeBytes(of: n) { d.append(contentsOf: $0) }
        d.append(contentsOf: body)
        return d
    }
}

// MARK: probe

/// Shows that a server serves stored data: the first COMPLETED order from ListOrders, then
/// GetOrder of it.
struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "ListOrders(status COMPLETED, page_size 1), then GetOrder of that order; prints its id, version and status.")
    @OptionGroup var common: Common

    func run() async throws {
        let line = try await ClientPool.run(target: common.target, connections: 1) { pool in
            var list = Ridehailing_Orders_V1_ListOrdersRequest()
            list.pageSize = 1
            list.status = .completed
            let page = try await pool.client(0).unary(
                request: ClientRequest(message: list), descriptor: Methods.listOrders,
                serializer: ProtobufSerializer<Ridehailing_Orders_V1_ListOrdersRequest>(),
                deserializer: ProtobufDeserializer<Ridehailing_Orders_V1_ListOrdersResponse>(), options: .defaults
            ) { try $0.message }
            guard let first = page.orders.first else { return "order_id= version=0 status=none" }
            var get = Ridehailing_Orders_V1_GetOrderRequest()
            get.orderID = first.id
            let order = try await pool.client(0).unary(
                request: ClientRequest(message: get), descriptor: Methods.getOrder,
                serializer: ProtobufSerializer<Ridehailing_Orders_V1_GetOrderRequest>(),
                deserializer: ProtobufDeserializer<Order>(), options: .defaults
            ) { try $0.message }
            return "order_id=\(order.id) version=\(order.version) status=\(order.status)"
        }
        emit(line)
    }
}

// MARK: place / accept

/// Closed loop: `inFlight` workers, each sending its next call as soon as the last returns.
func closedLoop(
    pool: ClientPool, inFlight: Int, seconds: Double, limit: Int = .max,
    _ call: @escaping @Sendable (_ worker: Int, _ index: Int) async throws -> Void
) async throws -> (count: Int, elapsed: Duration, histogram: Histogram<UInt64>, errors: ErrorTally, cpu: Double) {
    let cpu0 = processCPUSeconds()
    let clock = ContinuousClock()
    let start = clock.now
    let deadline = start + .milliseconds(Int(seconds * 1000))
    let errors = ErrorTally()
    let next = SharedCounter()
    var histogram = newHistogram()
    let (count, lastEnd) = try await withThrowingTaskGroup(of: (Int, Histogram<UInt64>, ContinuousClock.Instant).self) { group in
        for w in 0..<inFlight {
            group.addTask {
                var h = newHistogram()
                var n = 0
                var last = start
                while clock.now < deadline {
                    let i = next.add()
                    if i >= limit { break }
                    let t0 = clock.now
                    do {
                        try await call(w, i)
                        last = clock.now
                        h.recordMicros(last - t0)
                        n += 1
                    } catch {
                        last = clock.now
                        errors.add(error)
                    }
                }
                return (n, h, last)
            }
        }
        var total = 0
        var lastEnd = start
        for try await (n, h, last) in group {
            total += n
            histogram.add(h)
            if last > lastEnd { lastEnd = last }
        }
        return (total, lastEnd)
    }
    return (count, lastEnd - start, histogram, errors, processCPUSeconds() - cpu0)
}

func summary(
    op: String, inFlight: Int, connections: Int,
    _ r: (count: Int, elapsed: Duration, histogram: Histogram<UInt64>, errors: ErrorTally, cpu: Double)
) -> String {
    let secs = secondsOf(r.elapsed)
    let h = r.histogram
    return String(
        format: "op=%@ in-flight=%d connections=%d commands=%d seconds=%.2f commands/s=%.0f p50=%@ms p99=%@ms p99.9=%@ms max=%@ms errors=%d error-kinds=%@ client-cores=%.2f",
        op, inFlight, connections, r.count, secs, Double(r.count) / secs, h.ms(50), h.ms(99), h.ms(99.9), h.ms(100),
        r.errors.total, r.errors.summary, r.cpu / secs)
}

struct Place: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "PlaceOrder, each with a fresh request_id: commands/s and latency percentiles.")
    @OptionGroup var common: Common
    @Option(help: "Calls in flight.") var inFlight = 16
    @Option(help: "Measured seconds.") var seconds: Double = 10
    @Option(help: "Unmeasured warm-up seconds first.") var warmup: Double = 1

    func run() async throws {
        let conns = common.connectionCount(inFlight: inFlight)
        let line = try await ClientPool.run(target: common.target, connections: conns) { pool in
            if warmup > 0 {
                _ = try await closedLoop(pool: pool, inFlight: inFlight, seconds: warmup) { w, _ in
                    _ = try await pool.placeOrder(Requests.place(), via: w)
                }
            }
            let r = try await closedLoop(pool: pool, inFlight: inFlight, seconds: seconds) { w, _ in
                _ = try await pool.placeOrder(Requests.place(), via: w)
            }
            return summary(op: "place", inFlight: inFlight, connections: conns, r)
        }
        emit(line)
    }
}

struct Accept: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Places --orders orders first (unmeasured), then accepts each at version 1: commands/s and latency percentiles.")
    @OptionGroup var common: Common
    @Option(help: "Calls in flight.") var inFlight = 16
    @Option(help: "Measured seconds at most (stops earlier when every order is accepted).") var seconds: Double = 10
    @Option(help: "Orders to place first.") var orders = 20000
    @Option(help: "Calls in flight while placing.") var placeInFlight = 64

    func run() async throws {
        let conns = common.connectionCount(inFlight: max(inFlight, placeInFlight))
        let total = orders
        let line = try await ClientPool.run(target: common.target, connections: conns) { pool in
            let ids = Locked<[String]>([])
            let placed = try await closedLoop(pool: pool, inFlight: placeInFlight, seconds: 3600, limit: total) { w, _ in
                let r = try await pool.placeOrder(Requests.place(), via: w)
                ids.withLock { $0.append(r.orderID) }
            }
            let orderIds = ids.withLock { $0 }
            note("placed \(orderIds.count) orders in \(String(format: "%.1f", secondsOf(placed.elapsed))) s (\(placed.errors.total) errors)")
            let r = try await closedLoop(pool: pool, inFlight: inFlight, seconds: seconds, limit: orderIds.count) { w, i in
                _ = try await pool.updateOrder(Requests.accept(orderId: orderIds[i]), via: w)
            }
            return summary(op: "accept", inFlight: inFlight, connections: conns, r)
                + " orders=\(orderIds.count)"
        }
        emit(line)
    }
}
