import Logging
import Synchronization

/// The aggregator, the command handler and the integration publisher as one consumer of
/// `order-commands-and-events`, on engines that cannot run them inside their appends
/// (Kafka; `DerivingLogEngine` is the embedded engine's way to the same end).
///
/// For every record of a batch the aggregator makes the order's row; the handler and the
/// publisher take that row as it is written, not after reading it back; the rows, the
/// decisions and the integration events go out in one atomic append with the aggregator's
/// offsets. The log holds the same records as with three consumers, with two hops fewer
/// per entry: on Kafka that is one transaction and one fetch instead of three. A decision
/// is itself a record of `order-commands-and-events`, aggregated when the loop reaches it
/// in the log. (Aggregating it in the transaction that writes it would need its offset
/// first, and a command appended meanwhile can land before it: the row would list the
/// two out of offset order, and the command would then be taken as aggregated already.)
///
/// The handler's and the publisher's groups stay where fusing began. Rows written this
/// way carry the `handledHeader`; rows without it, left by three separate consumers (a
/// build before this one), are caught up on when partitions are assigned: read from those
/// groups' committed offsets up to the first row that carries it, handled, and the
/// groups' offsets committed past them, before any new record of those partitions.
struct FusedProcessors: Sendable {
    /// On an `order-aggregates` row whose decision and integration event were written with
    /// it.
    static let handledHeader = "handled-with-row"

    let engine: any LogEngine
    let topics: Topics
    let aggregator: Aggregator
    let handler: CommandHandler
    let publisher: IntegrationPublisher
    let logger: Logger
    /// How long catching up may take to read the rows it knows are there (past the
    /// handler's or the publisher's offset, before the end it read at the start); past it
    /// the member ends, and its successor tries again.
    var catchUpTimeout: Duration = .seconds(15)
    /// Per partition, where `order-commands-and-events` ended when this process last took
    /// it (`CommandHandler.handle`'s `fencedEnds`).
    private let fencedEnds = Shared<[Int: Int64]>([:])

    func run() async throws {
        var loop = GroupLoop(engine: engine, group: Aggregator.group, topic: topics.commandsAndEvents, logger: logger)
        // A decision is aggregated when the loop reads it back: polling only once the
        // transaction that wrote it is committed saves a batch's round trip on every
        // command (on tansu, 353-384 PlaceOrder/s against 255-297 with the next batch
        // polled while the transaction is in flight).
        loop.overlapsAppends = false
        try await loop.run(
            onAssignmentChange: { aggregator.forget() },
            onAssigned: { partitions in
                try await noteFencedEnds(partitions)
                try await catchUp(partitions)
            },
            onAppended: { records, addresses in handler.decisions.appended(records, at: addresses) }
        ) { records in
            try await handle(records)
        }
    }

    func handle(_ records: [LogRecord]) async throws -> [OutgoingRecord] {
        let rows = try await aggregator.aggregate(records)
        var out: [OutgoingRecord] = []
        out.reserveCapacity(rows.count * 3)
        var written: [LogRecord] = []
        written.reserveCapacity(rows.count)
        for var row in rows {
            row.headers[Self.handledHeader] = "1"
            out.append(row)
            // The row as its consumers would read it; its offset is not known yet, and
            // neither of them needs it.
            written.append(
                LogRecord(
                    topic: row.topic, partition: row.partition ?? 0, offset: -1, key: row.key, value: row.value,
                    headers: row.headers, timestamp: 0, memo: row.memo))
        }
        // The handler sees the batch's rows at once: a command decided at one of them is
        // not decided again at a later one (its decision is not appended yet).
        out.append(contentsOf: handler.handle(written, fencedEnds: fencedEnds.value.withLock { $0 }))
        out.append(contentsOf: publisher.handle(written))
        return out
    }

    /// Notes where `order-commands-and-events` ends in `partitions`, just assigned. Their
    /// previous owners can write nothing more there: a live one gave them up only once its
    /// last append was over (`GroupLoop`), a dead or stalled one is fenced (Kafka: the
    /// partitions' transactional ids claimed before `.assigned`). So every decision this
    /// process does not know of lies before that end: the handler tells from it a decision
    /// that can still come from one that never will.
    func noteFencedEnds(_ partitions: [Int]) async throws {
        guard !partitions.isEmpty else { return }
        let ends = try await engine.endOffsets(topics.commandsAndEvents)
        fencedEnds.value.withLock { for p in partitions where p < ends.count { $0[p] = ends[p] } }
    }

    /// Handles the rows of `partitions` that three separate consumers left to the
    /// handler's or the publisher's group, and commits those groups past them.
    func catchUp(_ partitions: [Int]) async throws {
        guard !partitions.isEmpty else { return }
        let started = ContinuousClock.now
        let topic = topics.aggregates
        async let handledOffsets = engine.committedOffsets(group: CommandHandler.group, topic: topic)
        async let publishedOffsets = engine.committedOffsets(group: IntegrationPublisher.group, topic: topic)
        // The other partitions are read from their ends (their records are skipped anyway).
        async let ends = engine.endOffsets(topic)
        let (handled, published) = try await (handledOffsets, publishedOffsets)
        let end = try await ends
        var from = end
        for p in partitions where p < from.count { from[p] = min(handled[p], published[p]) }
        // Partitions with no row past those offsets need no read (nobody else writes
        // their rows now: the assignment fenced their previous owner).
        var reading = Set(partitions.filter { $0 < from.count && from[$0] < end[$0] })
        guard !reading.isEmpty else {
            logger.debug(
                "no rows left to the command handler or the integration publisher",
                metadata: ["partitions": "\(partitions)", "elapsed": "\(ContinuousClock.now - started)"])
            return
        }
        let reader = try await engine.openReader(topic: topic, from: from)
        var decisions: [OutgoingRecord] = []
        var integration: [OutgoingRecord] = []
        var handlerNext: [Int: Int64] = [:]
        var publisherNext: [Int: Int64] = [:]
        let deadline = ContinuousClock.now + catchUpTimeout
        do {
            while !reading.isEmpty {
                let records = try await reader.next(maxRecords: 1000, timeout: .milliseconds(200))
                if records.isEmpty && ContinuousClock.now >= deadline {
                    throw LogError(
                        .unavailable,
                        "could not read \(topic) partitions \(reading.sorted()) to their ends within "
                            + "\(catchUpTimeout) to catch up on rows left to the command handler")
                }
                for r in records where reading.contains(r.partition) {
                    if r.headers[Self.handledHeader] != nil {
                        reading.remove(r.partition)
                        continue
                    }
                    if r.offset >= handled[r.partition] {
                        decisions.append(contentsOf: handler.handle([r]))
                        handlerNext[r.partition] = r.offset + 1
                    }
                    if r.offset >= published[r.partition] {
                        integration.append(contentsOf: publisher.handle([r]))
                        publisherNext[r.partition] = r.offset + 1
                    }
                    if r.offset + 1 >= end[r.partition] { reading.remove(r.partition) }
                }
            }
        } catch {
            await reader.close()
            throw error
        }
        await reader.close()
        if !handlerNext.isEmpty {
            let landed = try await engine.append(
                decisions, commit: OffsetCommit(group: CommandHandler.group, topic: topic, offsets: handlerNext),
                durability: .deferred)
            handler.decisions.appended(decisions, at: landed)
        }
        if !publisherNext.isEmpty {
            try await engine.append(
                integration, commit: OffsetCommit(group: IntegrationPublisher.group, topic: topic, offsets: publisherNext),
                durability: .deferred)
        }
        let metadata: Logger.Metadata = [
            "partitions": "\(partitions)", "decisions": "\(decisions.count)", "integration-events": "\(integration.count)",
            "elapsed": "\(ContinuousClock.now - started)",
        ]
        if !handlerNext.isEmpty || !publisherNext.isEmpty {
            logger.info("caught up on rows left to the command handler and the integration publisher", metadata: metadata)
        } else {
            logger.debug("no rows left to the command handler or the integration publisher", metadata: metadata)
        }
    }
}

/// A value shared by the copies of a struct (a `Mutex` would make the struct noncopyable).
private final class Shared<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
}
