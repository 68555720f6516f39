import Logging

/// The shape every consumer-group processor shares: poll a batch, turn it into records
/// to append, append them together with the batch's offsets in one atomic unit, repeat.
/// One batch shares one durable write (group commit), so a busy log costs one fsync per
/// batch, not per record.
struct GroupLoop: Sendable {
    let engine: any LogEngine
    let group: String
    let topic: String
    let logger: Logger
    var maxBatch = 1000
    var pollTimeout: Duration = .milliseconds(500)
    /// Whether the next batch is polled and handled while the previous one's append is in
    /// flight; nil: only on an engine that runs derivations in its appends (the embedded
    /// one, whose fsync the next batch then overlaps). Not on Kafka, where a poll may bring
    /// an assignment at any time (cooperative rebalancing) and the engine then claims the
    /// partitions' transactional ids, which must not race an append in flight. Off, too,
    /// for a loop that consumes what it appends itself: its records show up only once the
    /// append is done, so polling after it gets them a batch earlier.
    var overlapsAppends: Bool? = nil

    /// Runs until the task is cancelled. `handle` sees the records of one batch in offset
    /// order per partition, and is told when partitions change hands so it can drop
    /// caches, and where what it returned landed once appended. `onAssigned` runs with the
    /// partitions newly assigned before any of their records is handled; a throw ends the
    /// member like an engine error. Engine errors are logged and retried with backoff.
    func run(
        onAssignmentChange: @Sendable () async -> Void = {},
        onAssigned: @Sendable ([Int]) async throws -> Void = { _ in },
        onAppended: @escaping @Sendable ([OutgoingRecord], [RecordAddress]) -> Void = { _, _ in },
        handle: @Sendable ([LogRecord]) async throws -> [OutgoingRecord]
    ) async throws {
        var backoff: Duration = .milliseconds(50)
        let overlaps = overlapsAppends ?? (engine is any DerivingLogEngine)
        while !Task.isCancelled {
            let consumer: any GroupConsumer
            do {
                consumer = try await engine.joinGroup(group, topic: topic)
            } catch {
                if Task.isCancelled { return }
                logger.error("\(group) could not join, retrying in \(backoff)", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
                continue
            }
            // One append in flight while the next batch is polled and handled (where
            // `overlapsAppends` allows): the batch's work overlaps the previous batch's
            // fsync. Appends stay in order (each starts after the previous finished), and a
            // failed one ends this member, whose successor resumes from the committed
            // offsets (and clears the handler's caches on `.assigned`).
            let inFlight = InFlightAppend()
            let failure: (any Error)?
            do {
                try await serve(
                    consumer, inFlight: inFlight, overlaps: overlaps, resetBackoff: { backoff = .milliseconds(50) },
                    onAssignmentChange: onAssignmentChange, onAssigned: onAssigned, onAppended: onAppended, handle: handle)
                failure = nil
            } catch {
                failure = error
            }
            // The member goes only once its last append is over: the append may still
            // commit through it (Kafka: its group metadata, its offsets), and a successor
            // joining meanwhile would be a second member of the group in this process.
            await inFlight.settle()
            await consumer.close()
            guard let failure else { return }
            if failure is CancellationError || Task.isCancelled { return }
            logger.error("\(group) failed, retrying in \(backoff)", metadata: ["error": "\(failure)"])
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// One member's life: polls and handles batches until cancelled or until anything fails.
    private func serve(
        _ consumer: any GroupConsumer, inFlight: InFlightAppend, overlaps: Bool, resetBackoff: () -> Void,
        onAssignmentChange: @Sendable () async -> Void,
        onAssigned: @Sendable ([Int]) async throws -> Void,
        onAppended: @escaping @Sendable ([OutgoingRecord], [RecordAddress]) -> Void,
        handle: @Sendable ([LogRecord]) async throws -> [OutgoingRecord]
    ) async throws {
        while !Task.isCancelled {
            if !overlaps { try await inFlight.finish() }
            switch try await consumer.poll(maxRecords: maxBatch, timeout: pollTimeout) {
            case .idle:
                try await inFlight.finish()
            case .assigned(let partitions):
                try await inFlight.finish()
                logger.debug("partitions assigned", metadata: ["group": "\(group)", "partitions": "\(partitions)"])
                await onAssignmentChange()
                try await onAssigned(partitions)
            case .revoked(let partitions):
                try await inFlight.finish()
                logger.debug("partitions revoked", metadata: ["group": "\(group)", "partitions": "\(partitions)"])
                await onAssignmentChange()
            case .records(let records):
                let out = try await handle(records)
                var offsets: [Int: Int64] = [:]
                for r in records { offsets[r.partition] = max(offsets[r.partition] ?? 0, r.offset + 1) }
                try await inFlight.finish()
                let commit = OffsetCommit(group: group, topic: topic, offsets: offsets)
                let engine = engine
                inFlight.start { [offsets] in
                    if out.isEmpty {
                        try await consumer.commit(offsets)
                    } else {
                        // Derived from the log and behind it: a crash that takes these
                        // back takes their offsets too, and the batch is redone.
                        onAppended(out, try await engine.append(out, commit: commit, durability: .deferred))
                    }
                }
                resetBackoff()
            }
        }
    }
}

/// The loop's one append in flight (a task), owned by the loop's task alone.
private final class InFlightAppend {
    private var task: Task<Void, any Error>?

    func start(_ body: @escaping @Sendable () async throws -> Void) {
        precondition(task == nil, "an append is already in flight")
        task = Task(operation: body)
    }

    /// Waits for the append in flight, if any; rethrows its failure.
    func finish() async throws {
        guard let task else { return }
        self.task = nil
        try await task.value
    }

    /// Waits for the append in flight, if any, whatever its outcome (the member is ending).
    func settle() async {
        guard let task else { return }
        self.task = nil
        _ = await task.result
    }
}
