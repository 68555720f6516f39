@testable import EventLog
import Foundation
import OrderDomain
import Testing

/// On an engine that cannot derive inside its appends (Kafka; here the in-memory engine),
/// the aggregator, the command handler and the integration publisher run as one consumer
/// (`FusedProcessors`).
@Suite struct FusedProcessorsTests {
    /// Each row is written with its decision and integration event, marked as such, and
    /// the handler's and the publisher's groups are not needed to get there.
    @Test func rowsAreHandledAsTheyAreWritten() async throws {
        let engine = InMemoryLogEngine()
        var ids: [String] = []
        try await Harness.run(engine: engine) { h in
            for _ in 0..<3 { ids.append(try await h.place().orderId) }
            _ = try await h.update(ids[0], .accept(driverId: OrderIdentity.random()), version: 1)
            let rows = try await h.records(h.pipeline.topics.aggregates)
            #expect(rows.count == 2 * 4)
            #expect(rows.allSatisfy { $0.headers[FusedProcessors.handledHeader] != nil })
            #expect(try await h.records(h.pipeline.topics.integrationEvents).count == 4)
            let topic = h.pipeline.topics.aggregates
            #expect(try await engine.committedOffsets(group: CommandHandler.group, topic: topic).allSatisfy { $0 == 0 })
        }
        // Started again (every partition assigned anew): nothing is decided twice.
        try await Harness.run(engine: engine) { h in
            let completed = try await h.update(ids[0], .complete, version: 2)
            #expect(completed.order?.version == 3)
            #expect(try await h.records(h.pipeline.topics.commandsAndEvents).count == 2 * 5)
            #expect(try await h.records(h.pipeline.topics.aggregates).count == 2 * 5)
            #expect(try await h.records(h.pipeline.topics.integrationEvents).count == 5)
        }
    }

    /// Rows a separate aggregator wrote and no handler or publisher read yet (a build that
    /// ran them as three consumers stopped there) are handled when the partitions are
    /// assigned: otherwise their commands, and every later command of those orders, would
    /// wait for good.
    @Test func rowsLeftByASeparateAggregatorAreCaughtUpOn() async throws {
        let engine = InMemoryLogEngine()
        let topics = Topics()
        try await topics.provision(on: engine)
        let aggregator = Aggregator(engine: engine, topics: topics, logger: Harness.logger)
        let alone = Task { try await aggregator.run() }
        let commands = (0..<4).map { _ in Harness.placeCommand() }
        try await engine.append(
            commands.map {
                OutgoingRecord(topic: topics.commandsAndEvents, key: $0.orderId, value: LogFormat.encode(LogFormat.entry($0)))
            },
            commit: nil)
        try await waitUntil { try await engine.endOffsets(topics.aggregates).reduce(0, +) == 4 }
        alone.cancel()
        _ = await alone.result
        #expect(try await engine.endOffsets(topics.commandsAndEvents).reduce(0, +) == 4)  // nothing decided yet

        try await Harness.run(engine: engine) { h in
            try await waitUntil { try await h.eventsByOrder().count == 4 }
            let events = try await h.eventsByOrder()
            for command in commands { #expect(events[command.orderId]?.map(\.typeName) == ["OrderPlacedEvent"]) }
            // Published once each, from the rows the fused consumer wrote for the decisions.
            try await waitUntil { try await h.records(topics.integrationEvents).count == 4 }
            // The left rows are the handler's and the publisher's no more.
            let ends = try await engine.endOffsets(topics.aggregates)
            let handled = try await engine.committedOffsets(group: CommandHandler.group, topic: topics.aggregates)
            let published = try await engine.committedOffsets(group: IntegrationPublisher.group, topic: topics.aggregates)
            for command in commands {
                let p = Partitioner.partition(forKey: command.orderId, count: topics.partitions)
                #expect(handled[p] > 0 && handled[p] < ends[p])
                #expect(published[p] == handled[p])
            }
            // A later command of one of those orders is decided as usual.
            try await waitUntil { try await h.store.view(orderId: commands[0].orderId) != nil }
            let accepted = try await h.update(commands[0].orderId, .accept(driverId: OrderIdentity.random()), version: 1)
            #expect(accepted.order?.version == 2)
        }
    }
}
