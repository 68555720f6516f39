@testable import EngineKafka
import EventLog
import Foundation
import Logging
import OrderDomain
import Testing

/// The seed's processors (EventLog's OrderPipeline) on KafkaLogEngine + tansu: the
/// engine behaves enough like the contract's reference for the whole topology.
@Suite("OrderPipeline on Kafka (tansu)", .serialized, .enabled(if: KafkaTestEnvironment.librdkafkaTalksToTansu, KafkaTestEnvironment.skipReason))
struct PipelineOnKafkaTests {
    func withPipeline(
        configure: (inout KafkaLogEngine.Config) -> Void = { _ in },
        _ body: (OrderPipeline, KafkaLogEngine, TansuBroker) async throws -> Void
    ) async throws {
        try await withTansu(configure: configure) { broker, engine in
            var config = OrderPipeline.Config()
            config.topics = Topics(prefix: uniqueTopic("p") + "-", partitions: 4)
            config.heartbeat = .milliseconds(500)
            let pipeline = OrderPipeline(engine: engine, store: InMemoryReadModelStore(), config: config, logger: KafkaTestEnvironment.logger)
            let task = Task { try await pipeline.run() }
            defer { task.cancel() }
            let deadline = ContinuousClock.now + .seconds(30)
            while (try? await engine.partitionCount(config.topics.aggregates)) == nil && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            await pipeline.projector.waitUntilReady()
            try await body(pipeline, engine, broker)
            task.cancel()
            _ = await task.result
        }
    }

    func place(_ p: OrderPipeline, request: String = OrderIdentity.random(), timeout: Duration = .seconds(30)) async throws -> CommandOutcome {
        try await p.gateway.submit(
            OrderCommand(
                commandId: request, orderId: OrderIdentity.orderId(forRequest: request), expectedVersion: 0,
                kind: .place(
                    riderId: OrderIdentity.random(), price: "12.50",
                    route: [Waypoint(address: "A", lat: 50.5, lon: 30.4), Waypoint(address: "B", lat: 50.4, lon: 30.5)])),
            timeout: timeout)
    }

    func update(_ p: OrderPipeline, _ id: String, _ kind: OrderCommand.Kind, version: Int) async throws -> CommandOutcome {
        try await p.gateway.submit(
            OrderCommand(commandId: OrderIdentity.random(), orderId: id, expectedVersion: version, kind: kind), timeout: .seconds(30))
    }

    @Test("place, accept, a stale update refused, complete; one winner among concurrent updates; a subscription catches up")
    func lifecycle() async throws {
        try await withPipeline { p, engine, _ in
            let placed = try await place(p)
            let id = placed.orderId
            #expect(placed.order?.version == 1)
            let accepted = try await update(p, id, .accept(driverId: OrderIdentity.random()), version: 1)
            #expect(accepted.order?.status == .accepted)
            let stale = try await update(p, id, .cancel, version: 1)
            #expect(stale.event.kind.isRejected)
            let completed = try await update(p, id, .complete, version: 2)
            #expect(completed.order?.version == 3)

            let other = try await place(p).orderId
            let outcomes = try await withThrowingTaskGroup(of: CommandOutcome.self) { group in
                for _ in 0..<8 { group.addTask { try await update(p, other, .accept(driverId: OrderIdentity.random()), version: 1) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.filter { !$0.event.isError }.count == 1)

            // History then caught_up: the subscription reaches the aggregates' end even
            // though transactions put markers into its partitions.
            let sub = try await p.subscribe(start: .beginning, filter: .init())
            var events: [OrderEvent] = []
            let deadline = ContinuousClock.now + .seconds(20)
            var caughtUp = false
            while !caughtUp && ContinuousClock.now < deadline, let item = try await sub.next() {
                switch item {
                case .event(let e): events.append(e.event)
                case .caughtUp: caughtUp = true
                case .heartbeat: break
                }
            }
            await sub.close()
            #expect(caughtUp)
            let mine = events.filter { $0.orderId == id && !$0.isError }.map(\.version)
            #expect(mine == [1, 2, 3])
            _ = engine
        }
    }

    /// Rows an aggregator running alone (a build with three consumers, stopped between
    /// them) left to the command handler are decided once the fused consumer is assigned
    /// their partitions: read back from the handler's committed offsets on Kafka.
    @Test("rows left undecided by a separate aggregator are decided when their partitions are assigned")
    func leftRowsAreCaughtUpOn() async throws {
        try await withTansu { _, engine in
            let topics = Topics(prefix: uniqueTopic("c") + "-", partitions: 2)
            try await topics.provision(on: engine)
            let aggregator = Aggregator(engine: engine, topics: topics, logger: KafkaTestEnvironment.logger)
            let alone = Task { try await aggregator.run() }
            let commands = (0..<3).map { _ in
                let request = OrderIdentity.random()
                return OrderCommand(
                    commandId: request, orderId: OrderIdentity.orderId(forRequest: request), expectedVersion: 0,
                    kind: .place(
                        riderId: OrderIdentity.random(), price: "7.00",
                        route: [Waypoint(address: "A", lat: 1, lon: 2), Waypoint(address: "B", lat: 3, lon: 4)]))
            }
            try await engine.append(
                commands.map {
                    OutgoingRecord(topic: topics.commandsAndEvents, key: $0.orderId, value: LogFormat.encode(LogFormat.entry($0)))
                },
                commit: nil)
            let rows = try await engine.openReader(topic: topics.aggregates, from: [0, 0])
            var seen = 0
            let readBy = ContinuousClock.now + .seconds(30)
            while seen < 3 && ContinuousClock.now < readBy {
                seen += try await rows.next(maxRecords: 100, timeout: .milliseconds(500)).count
            }
            #expect(seen == 3)
            await rows.close()
            alone.cancel()
            _ = await alone.result

            var config = OrderPipeline.Config()
            config.topics = topics
            let store = InMemoryReadModelStore()
            let pipeline = OrderPipeline(engine: engine, store: store, config: config, logger: KafkaTestEnvironment.logger)
            let task = Task { try await pipeline.run() }
            defer { task.cancel() }
            let deadline = ContinuousClock.now + .seconds(60)
            var placed = 0
            while ContinuousClock.now < deadline {
                placed = 0
                for c in commands where try await store.view(orderId: c.orderId)?.order?.version == 1 { placed += 1 }
                if placed == commands.count { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(placed == commands.count)
            task.cancel()
            _ = await task.result
        }
    }
}

extension OrderEvent.Kind {
    var isRejected: Bool {
        if case .rejected = self { return true }
        return false
    }
}
