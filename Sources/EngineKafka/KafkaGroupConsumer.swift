import EventLog
import Logging
import Synchronization

/// A member of a Kafka consumer group (`rd_kafka_subscribe` with a rebalance callback).
///
/// Rebalances become poll results: `.assigned` once librdkafka assigned the partitions
/// (reading starts at the committed offsets, else the earliest), `.revoked` before the
/// partitions are given up. The revocation is held back until the next `poll` (or
/// `close`): the group does not move on until then, so the caller can still commit what
/// it finished with its current generation. Before `.assigned` is returned, `onAssigned`
/// runs with every partition the member now holds (the engine fences their previous
/// owners there), and before revoked partitions are given up, `beforeGivingUp` runs with
/// those it keeps (with cooperative rebalancing a member keeps some and goes on).
///
/// - Important: `poll`, `commit` and `close` run one at a time on the member's own
///   queue; librdkafka's consumer calls must not overlap.
final class KafkaGroupConsumer: GroupConsumer {
    let group: String
    let topic: String
    /// The group id at the broker (the engine's prefix + `group`).
    let groupId: String
    private let client: RDKafkaClient
    private let queue: BlockingQueue
    private let logger: Logger
    private let rebalances: Rebalances
    private let onClose: @Sendable () -> Void
    private let onAssigned: @Sendable (_ held: Set<Int>) async throws -> Void
    private let beforeGivingUp: @Sendable (_ kept: Set<Int>) async throws -> Void

    /// Rebalance events from the callback (on the poll thread) to `poll`.
    final class Rebalances: Sendable {
        struct State {
            var events: [GroupPoll] = []
            /// Revoked partitions reported to the caller, to give up at the next poll.
            var reportedRevoke: [TopicPartition]?
            /// Revoked partitions not yet reported.
            var pendingRevoke: [TopicPartition]?
            var closing = false
            /// Partitions this member holds (assigned and not revoked).
            var assigned: Set<Int> = []
            /// Records polled after an event, handed out once the event was.
            var carried: [LogRecord] = []
        }
        let state = Mutex(State())
        let onChange: @Sendable () -> Void

        init(onChange: @escaping @Sendable () -> Void) { self.onChange = onChange }

        func handle(_ event: RDKafkaRebalance) -> RDKafkaRevokeHandling {
            defer { onChange() }
            return state.withLock { s in
                switch event {
                case .assign(let partitions):
                    s.events.append(.assigned(partitions.map(\.partition).sorted()))
                    s.assigned.formUnion(partitions.map(\.partition))
                    return .now
                case .revoke(let partitions, let lost):
                    s.assigned.subtract(partitions.map(\.partition))
                    if s.closing { return .now }
                    s.events.append(.revoked(partitions.map(\.partition).sorted()))
                    // A lost assignment is given up in the callback (there is nothing to
                    // commit against). Queued for the later release as well, it would be
                    // released again after a new assignment handed the partitions back, and
                    // they would go unread while the group thinks this member reads them.
                    if lost { return .now }
                    s.pendingRevoke = (s.pendingRevoke ?? []) + partitions
                    return .deferred
                }
            }
        }

        /// A rebalance to report, or `close` waiting: the current poll should return.
        var shouldReturn: Bool { state.withLock { !$0.events.isEmpty || $0.closing } }
    }

    init(
        group: String, groupId: String, topic: String, properties: [String: String], logger: Logger,
        onChange: @escaping @Sendable () -> Void, onClose: @escaping @Sendable () -> Void,
        onAssigned: @escaping @Sendable (_ held: Set<Int>) async throws -> Void = { _ in },
        beforeGivingUp: @escaping @Sendable (_ kept: Set<Int>) async throws -> Void = { _ in }
    ) throws(LogError) {
        self.onAssigned = onAssigned
        self.beforeGivingUp = beforeGivingUp
        self.group = group
        self.groupId = groupId
        self.topic = topic
        self.logger = logger
        self.onClose = onClose
        let rebalances = Rebalances(onChange: onChange)
        self.rebalances = rebalances
        do throws(RDKafkaError) {
            client = try RDKafkaClient(kind: .consumer, properties: properties, logger: logger) { rebalances.handle($0) }
            try client.subscribe(topic: topic)
        } catch {
            throw LogError.kafka(error, "joining group \(groupId) on \(topic)")
        }
        queue = BlockingQueue(label: "kafka.group.\(groupId)")
    }

    func poll(maxRecords: Int, timeout: Duration) async throws -> GroupPoll {
        try Task.checkCancellation()
        // The caller has seen a revocation and committed; before the partitions go (in
        // this poll), the engine moves the member's commits off any of them.
        if let kept = rebalances.state.withLock({ $0.reportedRevoke != nil ? $0.assigned : nil }) {
            try await beforeGivingUp(kept)
        }
        let cancelled = CancelFlag()
        let result = try await withTaskCancellationHandler {
            try await queue.run { [self] () throws -> GroupPoll in
                try pollOnQueue(maxRecords: maxRecords, timeout: timeout, cancelled: cancelled)
            }
        } onCancel: {
            cancelled.set()
            client.yield()
        }
        if case .assigned = result {
            try await onAssigned(rebalances.state.withLock { $0.assigned })
        }
        return result
    }

    /// On `queue`.
    private func pollOnQueue(maxRecords: Int, timeout: Duration, cancelled: CancelFlag) throws -> GroupPoll {
        try Self.refuseOnceClosing(rebalances)
        // The caller has seen the revocation and committed: let the rebalance go on.
        if let revoked = rebalances.state.withLock({ s -> [TopicPartition]? in
            defer { s.reportedRevoke = nil }
            return s.reportedRevoke
        }) {
            client.completeRevoke(revoked)
        }
        if let event = nextEvent() { return event }
        // Records polled together with an event, once the event is out; those of
        // partitions revoked meanwhile are dropped (the next owner reads them again).
        let carried = rebalances.state.withLock { s -> [LogRecord] in
            defer { s.carried = [] }
            return s.carried.filter { s.assigned.contains($0.partition) }
        }
        if !carried.isEmpty { return .records(carried) }
        let batch = try client.pollBatch(
            maxRecords: maxRecords, timeout: timeout, cancelled: cancelled, logger: logger, stop: { rebalances.shouldReturn })
        if !batch.afterStop.isEmpty { rebalances.state.withLock { $0.carried += batch.afterStop } }
        // Records polled before a rebalance came first: hand them out, the event next.
        if !batch.records.isEmpty { return .records(batch.records) }
        return nextEvent() ?? .idle
    }

    private func nextEvent() -> GroupPoll? {
        rebalances.state.withLock { s -> GroupPoll? in
            guard !s.events.isEmpty else { return nil }
            let event = s.events.removeFirst()
            if case .revoked = event, let pending = s.pendingRevoke {
                s.reportedRevoke = (s.reportedRevoke ?? []) + pending
                s.pendingRevoke = nil
            }
            return event
        }
    }

    func commit(_ offsets: [Int: Int64]) async throws {
        guard !offsets.isEmpty else { return }
        try await queue.run { [client, topic, groupId, rebalances] () throws in
            try Self.refuseOnceClosing(rebalances)
            do throws(RDKafkaError) {
                try client.commit(topic: topic, offsets: offsets)
            } catch {
                throw LogError.kafka(error, "committing offsets of group \(groupId) on \(topic)")
            }
        }
    }

    /// The partitions the member holds now (assigned and not revoked, nor lost).
    var held: Set<Int> { rebalances.state.withLock { $0.assigned } }

    /// The member's group metadata (generation, member id) for a transactional commit.
    func groupMetadata() async throws -> RDKafkaGroupMetadata? {
        try await queue.run { [client, rebalances] () throws in
            try Self.refuseOnceClosing(rebalances)
            return client.groupMetadata()
        }
    }

    /// On `queue`: once `close` began, the handle is (or is about to be) destroyed, and
    /// nothing may be committed in the name of a member that is leaving the group.
    private static func refuseOnceClosing(_ rebalances: Rebalances) throws(LogError) {
        if rebalances.state.withLock({ $0.closing }) { throw LogError(.closed, "group consumer closed") }
    }

    func close() async {
        let first = rebalances.state.withLock { s -> Bool in
            defer { s.closing = true }
            return !s.closing
        }
        guard first else { return }
        // Out of the engine's members at once: nothing commits through a leaving member.
        onClose()
        client.yield()
        await queue.run { [client, rebalances] in
            // A revocation still held back is given up now; leaving the group revokes the rest.
            let held = rebalances.state.withLock { s -> [TopicPartition] in
                defer {
                    s.reportedRevoke = nil
                    s.pendingRevoke = nil
                }
                return (s.reportedRevoke ?? []) + (s.pendingRevoke ?? [])
            }
            if !held.isEmpty { client.completeRevoke(held) }
            client.consumerClose()
            client.destroy()
        }
    }
}
