@testable import EventLog
import OrderDomain
import Synchronization
import Testing

/// A member of the fused processors killed in the middle of its transaction, on a broker
/// that keeps showing an aborted transaction's records (tansu): the row it made of a
/// command stays visible, the decision written with it may not be there, and its offsets
/// did not move. The next owner reads the command again, finds the row and takes the
/// command as aggregated (the row says so): the decision must still come, from whichever
/// instance owns the partition now, and only once. LostDecisionTests' sibling: there the
/// decision was written and hidden, here it was never written.
@Suite struct AbortedTransactionTests {
    /// What kill -9 left in a chaos run: the client waits, and its retries and the
    /// gateway's re-sends get the command decided by an instance that never decided it.
    @Test func aCommandWhoseDecisionWasAbortedIsDecidedByTheNextOwner() async throws {
        let inner = InMemoryLogEngine()
        let engine = AbortingEngine(inner)
        let command = Harness.placeCommand()
        var config = OrderPipeline.Config.defaults
        config.resendCommandAfter = nil
        try await Harness.run(engine: engine, config: config) { h in
            engine.abortTransaction(deciding: command.commandId)
            await #expect(throws: CommandGateway.OutcomeTimeout.self) {
                try await h.gateway.submit(command, timeout: .milliseconds(500))
            }
            try await waitUntil { engine.aborted == 1 }
        }
        let topics = config.topics
        #expect(try await inner.latestRecord(topic: topics.aggregates, key: command.orderId) != nil)
        #expect(try await Self.events(on: inner, topics).isEmpty)

        // Another instance (empty caches, no memory of deciding anything) owns the
        // partition; the client retries, the gateway re-sends while it waits.
        config.resendCommandAfter = .milliseconds(200)
        try await Harness.run(engine: inner, config: config) { h in
            let placed = try await h.gateway.submit(command, timeout: .seconds(10))
            #expect(placed.order?.status == .placed)
            try await Self.waitUntilAggregated(inner, topics)
            #expect(try await Self.events(on: inner, topics).map(\.commandId) == [command.commandId])
            await h.pipeline.projector.waitUntilWritten()
            #expect(try await h.store.view(orderId: command.orderId)?.events.map(\.event.version) == [1])
        }
    }

    /// Several re-sends read in one batch: one decision, not one per re-send.
    @Test func repeatsInOneBatchGetOneDecision() async throws {
        let (engine, topics, command) = try await Self.abortedDecision()
        var config = OrderPipeline.Config.defaults
        config.resendCommandAfter = nil
        try await Harness.run(engine: engine, config: config) { h in
            // The new owner has taken the partition (and skipped the command).
            try await Self.waitUntilAggregated(engine, topics)
            try await engine.append(Array(repeating: Self.record(command, topics), count: 3), commit: nil)
            let outcome = try await h.gateway.outcome(of: command.commandId, deadline: .now + .seconds(10))
            #expect(outcome.order?.version == 1)
            try await Self.waitUntilAggregated(engine, topics)
            #expect(try await Self.events(on: engine, topics).map(\.commandId) == [command.commandId])
        }
    }

    /// The client of the command whose decision is missing is gone (nothing re-sends it):
    /// the order's next command gets both decided, in order.
    @Test func aCommandQueuedBehindAMissingDecisionGetsBothDecided() async throws {
        let (engine, topics, command) = try await Self.abortedDecision()
        try await Harness.run(engine: engine) { h in
            try await Self.waitUntilAggregated(engine, topics)
            let accept = OrderCommand(
                commandId: OrderIdentity.random(), orderId: command.orderId, expectedVersion: 1,
                kind: .accept(driverId: OrderIdentity.random()))
            try await engine.append([Self.record(accept, topics)], commit: nil)
            let accepted = try await h.gateway.outcome(of: accept.commandId, deadline: .now + .seconds(10))
            #expect(accepted.order?.status == .accepted)
            #expect(accepted.order?.version == 2)
            try await Self.waitUntilAggregated(engine, topics)
            #expect(try await Self.events(on: engine, topics).map(\.commandId) == [command.commandId, accept.commandId])
        }
    }

    /// The other side: a re-send that landed before the decision a previous owner made
    /// and committed. The new owner reads the re-send first (the command unanswered in its
    /// row, no memory of the decision) and must wait for the decision, not make another.
    @Test func aRepeatAheadOfAnExistingDecisionIsNotDecidedAgain() async throws {
        let engine = InMemoryLogEngine()
        let topics = Topics()
        try await topics.provision(on: engine)
        let command = Harness.placeCommand()
        let p = Partitioner.partition(forKey: command.orderId, count: topics.partitions)
        try await engine.append([Self.record(command, topics)], commit: nil)  // offset 0
        try await engine.append([Self.record(command, topics)], commit: nil)  // 1: the re-send
        let decision = OrderDecider.decide(command, state: nil, now: Clock.now())
        try await engine.append(
            [
                Self.row(of: [command], sourceOffset: 0, topics),
                OutgoingRecord(
                    topic: topics.commandsAndEvents, key: command.orderId, value: LogFormat.encode(LogFormat.entry(decision))),
            ],
            commit: OffsetCommit(group: Aggregator.group, topic: topics.commandsAndEvents, offsets: [p: 1]))  // decision at 2
        try await Harness.run(engine: engine) { h in
            let outcome = try await h.gateway.outcome(of: command.commandId, deadline: .now + .seconds(10))
            #expect(outcome.order?.version == 1)
            try await Self.waitUntilAggregated(engine, topics)
            #expect(try await Self.events(on: engine, topics).map(\.commandId) == [command.commandId])
        }
    }

    /// The handler's memory of its decisions is bounded; what it forgot it must not take
    /// for never decided (and decide again).
    @Test func theDecisionLogKnowsWhatItForgot() {
        let log = DecisionLog(capacity: 2)
        let decisions = (0..<3).map { _ in OrderDecider.decide(Harness.placeCommand(), state: nil, now: Clock.now()) }
        log.appended(
            decisions.map { OutgoingRecord(topic: "t", key: $0.orderId, value: [], memo: LogFormat.encodeForLog($0, remember: false).memo) },
            at: (0..<3).map { RecordAddress(topic: "t", partition: 4, offset: Int64(10 + $0)) })
        #expect(log.address(of: decisions[0].commandId) == nil)
        #expect(log.address(of: decisions[2].commandId)?.offset == 12)
        #expect(log.mayHaveForgotten(partition: 4, after: 9))
        #expect(!log.mayHaveForgotten(partition: 4, after: 10))
        #expect(!log.mayHaveForgotten(partition: 3, after: 0))
    }

    // MARK: Helpers

    /// A log as an aborted transaction of the fused processors leaves it on tansu: a
    /// command, and the row made of it, as they write it; no decision, no offsets.
    static func abortedDecision() async throws -> (InMemoryLogEngine, Topics, OrderCommand) {
        let engine = InMemoryLogEngine()
        let topics = Topics()
        try await topics.provision(on: engine)
        let command = Harness.placeCommand()
        try await engine.append([record(command, topics)], commit: nil)  // offset 0
        try await engine.append([row(of: [command], sourceOffset: 0, topics)], commit: nil)
        return (engine, topics, command)
    }

    static func record(_ command: OrderCommand, _ topics: Topics) -> OutgoingRecord {
        OutgoingRecord(
            topic: topics.commandsAndEvents, key: command.orderId, value: LogFormat.encode(LogFormat.entry(command)),
            headers: ["command-id": command.commandId])
    }

    static func row(of commands: [OrderCommand], sourceOffset: Int64, _ topics: Topics) -> OutgoingRecord {
        OutgoingRecord(
            topic: topics.aggregates, key: commands[0].orderId,
            value: LogFormat.AggregateLists(entries: commands.map(LogFormat.entry)).encoded,
            headers: [Aggregator.sourceOffsetHeader: String(sourceOffset), FusedProcessors.handledHeader: "1"])
    }

    /// Until the aggregator has read every record of the log (and so has written whatever
    /// it would decide of them).
    static func waitUntilAggregated(_ engine: any LogEngine, _ topics: Topics) async throws {
        try await waitUntil {
            let ends = try await engine.endOffsets(topics.commandsAndEvents)
            return try await engine.committedOffsets(group: Aggregator.group, topic: topics.commandsAndEvents) == ends
        }
    }

    /// Every event record in the log, in offset order.
    static func events(on engine: any LogEngine, _ topics: Topics) async throws -> [OrderEvent] {
        let ends = try await engine.endOffsets(topics.commandsAndEvents)
        let reader = try await engine.openReader(topic: topics.commandsAndEvents, from: ends.map { _ in 0 })
        var events: [OrderEvent] = []
        var read = 0
        while read < ends.reduce(0, +) {
            for r in try await reader.next(maxRecords: 10_000, timeout: .seconds(1)) {
                read += 1
                if case .event(let e) = try LogFormat.decode(try LogFormat.decodeEntry(r.value), orderId: r.key) { events.append(e) }
            }
        }
        return events
    }
}

/// Fails the fused processors' append that carries the decision of a chosen command
/// half-way, as a member killed mid-transaction on a broker that shows aborted records:
/// the rows are written, the decisions (and anything else for
/// `order-commands-and-events`) are not, nor are the offsets committed.
final class AbortingEngine: WrappingEngine {
    let inner: any LogEngine
    private let state = Mutex((target: String?.none, aborted: 0))

    init(_ inner: any LogEngine) { self.inner = inner }

    func abortTransaction(deciding commandId: String) { state.withLock { $0.target = commandId } }
    var aborted: Int { state.withLock { $0.aborted } }

    func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress] {
        let aborting = state.withLock { s -> Bool in
            guard commit?.group == Aggregator.group, let target = s.target,
                records.contains(where: { Self.decision(in: $0)?.commandId == target })
            else { return false }
            s.target = nil
            s.aborted += 1
            return true
        }
        guard aborting else { return try await inner.append(records, commit: commit, durability: durability) }
        let commandsAndEvents = commit!.topic
        try await inner.append(records.filter { $0.topic != commandsAndEvents }, commit: nil, durability: durability)
        throw LogError(.unavailable, "killed in the middle of the transaction")
    }

    private static func decision(in record: OutgoingRecord) -> OrderEvent? {
        guard let entry = try? LogFormat.decodeEntry(record.value), entry.type == LogFormat.event,
            case .event(let event) = try? LogFormat.decode(entry, orderId: record.key)
        else { return nil }
        return event
    }
}
