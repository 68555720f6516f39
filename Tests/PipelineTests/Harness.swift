import EngineSQLite
import EventLog
import Foundation
import Logging
import OrderDomain
import Testing

/// Runs an `OrderPipeline` on an engine for the duration of a test body.
struct Harness {
    let engine: any LogEngine
    let store: any ReadModelStore
    let pipeline: OrderPipeline

    static let logger: Logger = {
        var l = Logger(label: "pipeline-tests")
        l.logLevel = .critical
        return l
    }()

    /// The engines the pipeline tests run on: in memory, embedded (the aggregator and the
    /// command handler inside the log's appends) and embedded with them polling.
    enum Kind: String, CaseIterable, Sendable {
        case inMemory, embedded, embeddedPolling
    }

    static func run(
        _ kind: Kind, config: OrderPipeline.Config = .defaults, _ body: (Harness) async throws -> Void
    ) async throws {
        guard kind != .inMemory else { return try await run(config: config, body) }
        var config = config
        config.deriveInEngine = kind == .embedded
        try await withEmbeddedEngine { embedded in
            try await run(engine: embedded.log, store: embedded.readModel, config: config, body)
        }
    }

    /// Opens an embedded engine in `directory` (a fresh temporary one when nil, removed
    /// afterwards) for the body, and closes it however the body ends.
    static func withEmbeddedEngine<T>(in directory: String? = nil, _ body: (EmbeddedEngine) async throws -> T) async throws -> T {
        let dir = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString)").path
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: dir) } }
        let embedded = try await EmbeddedEngine.open(directory: dir, logger: logger)
        do {
            let result = try await body(embedded)
            await embedded.close()
            return result
        } catch {
            await embedded.close()
            throw error
        }
    }

    /// A PlaceOrder command with a two-stop route; its order id follows from `request`.
    /// Every order's rider unless a test names one: a retry must repeat its request's fields.
    static let rider = "7a3f5c2e-1b4d-4e8f-9a6c-3d2e1f0a9b8c"

    static func placeCommand(request: String = OrderIdentity.random(), rider: String = Harness.rider, price: String = "12.50")
        -> OrderCommand
    {
        OrderCommand(
            commandId: request, orderId: OrderIdentity.orderId(forRequest: request), expectedVersion: 0,
            kind: .place(
                riderId: rider, price: price,
                route: [Waypoint(address: "A", lat: 50.5, lon: 30.4), Waypoint(address: "B", lat: 50.4, lon: 30.5)]))
    }

    static func run(
        engine: any LogEngine = InMemoryLogEngine(), store: any ReadModelStore = InMemoryReadModelStore(),
        config: OrderPipeline.Config = .defaults,
        _ body: (Harness) async throws -> Void
    ) async throws {
        let pipeline = OrderPipeline(engine: engine, store: store, config: config, logger: logger)
        let task = Task { try await pipeline.run() }
        defer { task.cancel() }
        try await waitUntil { (try? await engine.partitionCount(config.topics.aggregates)) != nil }
        await pipeline.projector.waitUntilReady()
        try await body(Harness(engine: engine, store: store, pipeline: pipeline))
        task.cancel()
        _ = await task.result
    }

    var gateway: CommandGateway { pipeline.gateway }

    func place(request: String = OrderIdentity.random(), rider: String = Harness.rider, price: String = "12.50")
        async throws -> CommandOutcome
    {
        try await gateway.submit(Self.placeCommand(request: request, rider: rider, price: price), timeout: .seconds(10))
    }

    func update(_ orderId: String, _ kind: OrderCommand.Kind, version: Int, request: String = OrderIdentity.random())
        async throws -> CommandOutcome
    {
        try await gateway.submit(
            OrderCommand(commandId: request, orderId: orderId, expectedVersion: version, kind: kind), timeout: .seconds(10))
    }

    /// Every record of a topic, in offset order per partition.
    func records(_ topic: String) async throws -> [LogRecord] {
        let ends = try await engine.endOffsets(topic)
        let reader = try await engine.openReader(topic: topic, from: ends.map { _ in 0 })
        var all: [LogRecord] = []
        // Until the reader is past every end (offsets may skip, e.g. Kafka's transaction markers).
        while await !zip(reader.positions(), ends).allSatisfy({ $0 >= $1 }) {
            all += try await reader.next(maxRecords: 10_000, timeout: .seconds(1))
        }
        return all
    }

    /// The event records of `order-commands-and-events`, decoded, per order.
    func eventsByOrder() async throws -> [String: [OrderEvent]] {
        var out: [String: [OrderEvent]] = [:]
        for r in try await records(pipeline.topics.commandsAndEvents) {
            let entry = try LogFormat.decodeEntry(r.value)
            if case .event(let e) = try LogFormat.decode(entry, orderId: r.key) { out[r.key, default: []].append(e) }
        }
        return out
    }
}

func waitUntil(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

extension OrderEvent.Kind {
    var rejection: OrderRejection? {
        if case .rejected(let r) = self { return r }
        return nil
    }
}
