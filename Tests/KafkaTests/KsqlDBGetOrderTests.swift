import EngineKafka
import EventLog
import Foundation
import Logging
import OrderDomain
import Testing

/// GetOrder's pull query: `OrderQueries` with ksqlDB's ORDER_AGGREGATES as its aggregates
/// table (the fake ksqlDB answers in the documented `/query` format).
@Suite("GetOrder through ksqlDB's pull query", .serialized)
struct KsqlDBGetOrderTests {
    static let logger = Logger(label: "ksqldb-get-order-test")
    static let orderId = "5ea059ac-63a7-5009-8cfe-9e5fd9da9126"

    /// An order's history made by the real decider: placed, then accepted when `accepted`.
    static func history(accepted: Bool) -> (entries: [LogFormat.Entry], state: Order, views: OrderView) {
        let place = OrderCommand(
            commandId: "c-place", orderId: orderId, expectedVersion: 0,
            kind: .place(riderId: "0b7c2d3e-1f2a-4b5c-8d9e-0f1a2b3c4d5e", price: "12.50", route: [
                Waypoint(address: "A", lat: 52.5, lon: 13.4), Waypoint(address: "B", lat: 52.6, lon: 13.5),
            ]))
        let now = Timestamp(microseconds: 1_700_000_000_000_000)
        var entries = [LogFormat.entry(place)]
        let placed = OrderDecider.decide(place, state: nil, now: now)
        entries.append(LogFormat.entry(placed))
        var state = OrderDecider.evolve(nil, placed)!
        var events = [placed]
        if accepted {
            let accept = OrderCommand(commandId: "c-accept", orderId: orderId, expectedVersion: 1, kind: .accept(driverId: "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9"))
            entries.append(LogFormat.entry(accept))
            let acceptedEvent = OrderDecider.decide(accept, state: state, now: now)
            entries.append(LogFormat.entry(acceptedEvent))
            state = OrderDecider.evolve(state, acceptedEvent)!
            events.append(acceptedEvent)
        }
        let position = LogPosition(offsets: [0])
        let view = OrderView(orderId: orderId, order: state, events: events.map { ProjectedEvent(event: $0, position: position) })
        return (entries, state, view)
    }

    /// The `/query` answer for one ORDER_AGGREGATES row holding `entries`.
    static func pullResponse(_ entries: [LogFormat.Entry]) throws -> KsqlDBFakeServer.Response {
        let header = ["header": ["queryId": "query_1", "schema": KsqlDBClientTests.schema]]
        let last = entries.last!
        let columns: [Any] = [
            orderId, last.type, last.subType, last.details, entries.map(\.type), entries.map(\.subType), entries.map(\.details),
        ]
        let body = try JSONSerialization.data(withJSONObject: [header, ["row": ["columns": columns]]])
        return .init(status: 200, body: String(decoding: body, as: UTF8.self))
    }

    func queries(table: KsqlDBFakeServer, readModel: OrderView?, pullQueryTimeout: Duration = .seconds(2)) async throws -> OrderQueries {
        let store = InMemoryReadModelStore()
        if let readModel {
            try await store.apply(ReadModelUpdate(views: [readModel], outcomes: [], checkpoint: LogPosition(offsets: [1])))
        }
        let projector = Projector(engine: InMemoryLogEngine(), store: store, topics: Topics(partitions: 1), logger: Self.logger)
        var config = KsqlDBClient.Config(url: table.url)
        config.pullQueryTimeout = pullQueryTimeout
        return OrderQueries(store: store, projector: projector, table: KsqlDBClient(config: config, logger: Self.logger), logger: Self.logger)
    }

    @Test func answersFromThePullQueryWhenTheReadModelHasNotCaughtUp() async throws {
        let (entries, state, _) = Self.history(accepted: true)
        let server = try KsqlDBFakeServer(script: [try Self.pullResponse(entries)])
        defer { server.stop() }
        let order = try await queries(table: server, readModel: nil).order(id: Self.orderId, deadline: .now + .seconds(5))
        #expect(order == state)
        #expect(order?.version == 2)
        #expect(order?.status == .accepted)
        let json = server.requests.first?.json as? [String: Any]
        #expect(json?["ksql"] as? String == "SELECT * FROM ORDER_AGGREGATES WHERE ORDER_ID = '\(Self.orderId)';")
    }

    @Test func aLaggingTableNeverHidesANewerReadModel() async throws {
        let (olderEntries, _, _) = Self.history(accepted: false)
        let (_, newer, newerView) = Self.history(accepted: true)
        let server = try KsqlDBFakeServer(script: [try Self.pullResponse(olderEntries)])
        defer { server.stop() }
        let order = try await queries(table: server, readModel: newerView).order(id: Self.orderId, deadline: .now + .seconds(5))
        #expect(order == newer)
        #expect(server.requests.count == 1)
    }

    @Test func aFailingTableFallsBackToTheReadModel() async throws {
        let (_, state, view) = Self.history(accepted: false)
        let server = try KsqlDBFakeServer(script: [.init(status: 503, body: #"{"message":"ksqlDB is starting"}"#)])
        defer { server.stop() }
        let order = try await queries(table: server, readModel: view).order(id: Self.orderId, deadline: .now + .seconds(5))
        #expect(order == state)
    }

    /// A ksqlDB that never answers costs each of many concurrent GetOrders at most the pull
    /// query's limit, counted from its call (not from when a thread got to it).
    @Test func aHungTableCostsEachCallerAtMostTheLimit() async throws {
        let (_, state, view) = Self.history(accepted: false)
        let server = try KsqlDBFakeServer(script: [.hang])
        defer { server.stop() }
        let queries = try await queries(table: server, readModel: view, pullQueryTimeout: .seconds(1))
        let results = try await withThrowingTaskGroup(of: (Duration, Order?).self) { group in
            for _ in 0..<32 {
                group.addTask {
                    let start = ContinuousClock.now
                    let order = try await queries.order(id: Self.orderId, deadline: .now + .seconds(10))
                    return (ContinuousClock.now - start, order)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 32)
        #expect(results.allSatisfy { $0.1 == state })
        let slowest = results.map { $0.0 }.max() ?? .zero
        #expect(slowest < .milliseconds(1500), "the slowest GetOrder took \(slowest)")
    }

    @Test func minVersionIsSatisfiedByTheTable() async throws {
        let (entries, state, _) = Self.history(accepted: true)
        let (_, _, olderView) = Self.history(accepted: false)
        let server = try KsqlDBFakeServer(script: [try Self.pullResponse(entries)])
        defer { server.stop() }
        let order = try await queries(table: server, readModel: olderView).order(
            id: Self.orderId, minVersion: 2, deadline: .now + .seconds(5))
        // Without the table this waits out the deadline and throws VersionTimeout.
        #expect(order == state)
    }
}
