import EventLog
import Foundation

// Group commit.
//
// `append` validates its records on the caller's task (topic known, partition in range,
// headers encoded), parks on a continuation and queues itself. One writer, a serial queue
// with the only read-write connection, drains the queue: everything pending goes into one
// IMMEDIATE transaction, then COMMIT (`synchronous=NORMAL`: written, not yet fsync'd),
// then the `.deferred` callers are resumed and the `.durable` ones handed to the
// `WALSyncer`, whose next fsync resumes them. While the writer is busy with one batch the
// next one queues up, and while the syncer waits for the disk the writer goes on: the
// fsyncs per second stay roughly constant while the records per fsync grow with the load.
//
// Each call still stands alone: if writing one call's records fails, the transaction is
// rolled back, that call fails and the rest are written again without it. After the
// checks in `prepare` a failure here means an I/O or constraint error, which is rare
// enough that retrying beats a SAVEPOINT per call on the hot path.

/// The writer's view of the log: topics and the end offset of every partition, including
/// records written but not yet committed. `LogCatalog` holds the committed copy.
///
/// - Important: only touched on the writer queue (`SQLiteLogEngine.writer`);
///   `@unchecked Sendable` rests on that.
package final class WriterState: @unchecked Sendable {
    var topics: [String: TopicInfo] = [:]
    var ends: [String: [Int64]] = [:]
    /// Failed appends and commits are logged at most once a second each.
    var appendFailureLog = LogThrottle()
    var commitFailureLog = LogThrottle()
    var commits = 0
    var committedRecords = 0
    var insertTime = Duration.zero
    var commitTime = Duration.zero
    var folds = 0
    var foldTime = Duration.zero
    var foldedEntries = 0
    /// The id of the last record committed (what a fold of `latest` covers).
    var lastCommittedID: Int64 = 0

    // The fold of `latest` in progress: a sorted snapshot of the delta, written a chunk
    // per group commit (see `nextFoldChunk`).
    var fold: [(LatestIndex.Entry, Int64)] = []
    var foldPosition = 0
    /// `lastCommittedID` when the fold's snapshot was taken: its watermark once done.
    var foldCovers: Int64 = 0
    var foldStarted = ContinuousClock.now
    var lastFoldEnded = ContinuousClock.now
    /// Keyed records committed since the watermark (they are what a restart refolds).
    var keyedSinceWatermark = 0
    var keyedAtFoldStart = 0

    /// Derivations by source topic, run inside every transaction (`LogDerivation`).
    var derivations: [String: [LogDerivation]] = [:]
    /// Their groups: no call may commit offsets for them any more.
    var derivedGroups: Set<String> = []
    /// The newest record per key hash inserted by the transaction in progress, while
    /// derivations run: the `latest` delta learns of them only after COMMIT.
    var uncommittedLatest: [LatestIndex.Entry: Int64] = [:]
}

/// Part of a fold of `latest`: `range` of `WriterState.fold`.
struct FoldChunk {
    var range: Range<Int>
    var isLast: Bool
}

/// An append validated and ready for the writer.
package struct PendingAppend: Sendable {
    struct Record: Sendable {
        var topic: TopicInfo
        var partition: Int
        var key: String
        var value: [UInt8]
        var headers: String?
        /// The same headers, for the tail cache.
        var headerValues: [String: String]
        /// For key-tracked topics, the key's hash in `latest`.
        var keyHash: Int64?
        /// For the derivations and the tail cache (not stored).
        var memo: (any Sendable)?
    }

    struct Commit: Sendable {
        var group: String
        var topic: TopicInfo
        var offsets: [(partition: Int, offset: Int64)]
    }

    var records: [Record]
    var commit: Commit?
    /// Resumed after the fsync that covers the commit, not right after the commit.
    var durable: Bool
    var continuation: UnsafeContinuation<[RecordAddress], any Error>
}

/// Appends waiting for the writer. `draining` is true while a drain is scheduled or running,
/// so exactly one is in flight.
package struct PendingQueue: Sendable {
    var pending: [PendingAppend] = []
    var draining = false
    var closed = false
}

extension SQLiteLogEngine {
    /// Checks an append against the catalog on the caller's task, so a bad call (unknown
    /// topic, partition out of range) fails alone and never reaches a transaction.
    func prepare(_ records: [OutgoingRecord], commit: OffsetCommit?) throws -> (records: [PendingAppend.Record], commit: PendingAppend.Commit?) {
        let topics = try catalog.snapshot()
        var prepared: [PendingAppend.Record] = []
        prepared.reserveCapacity(records.count)
        for record in records { prepared.append(try prepare(record, topics: topics)) }
        var preparedCommit: PendingAppend.Commit?
        if let commit {
            guard let topic = topics[commit.topic] else { throw LogError.unknownTopic(commit.topic) }
            var offsets: [(partition: Int, offset: Int64)] = []
            for (partition, offset) in commit.offsets.sorted(by: { $0.key < $1.key }) {
                guard partition >= 0 && partition < topic.partitions else {
                    throw LogError(.unknownTopic, "topic '\(topic.name)' has no partition \(partition) to commit")
                }
                guard offset >= 0 else {
                    throw LogError(.unknownTopic, "cannot commit negative offset \(offset) for \(topic.name)[\(partition)]")
                }
                offsets.append((partition, offset))
            }
            if !offsets.isEmpty {
                preparedCommit = PendingAppend.Commit(group: commit.group, topic: topic, offsets: offsets)
            }
        }
        return (prepared, preparedCommit)
    }

    /// One record checked against `topics` (unknown topic, partition out of range), its
    /// partition chosen, its headers encoded and its key hashed.
    func prepare(_ record: OutgoingRecord, topics: [String: TopicInfo]) throws -> PendingAppend.Record {
        guard let topic = topics[record.topic] else { throw LogError.unknownTopic(record.topic) }
        let partition = record.partition ?? Partitioner.partition(forKey: record.key, count: topic.partitions)
        guard partition >= 0 && partition < topic.partitions else {
            throw LogError(.unknownTopic, "topic '\(topic.name)' has no partition \(partition) (it has \(topic.partitions))")
        }
        return PendingAppend.Record(
            topic: topic, partition: partition, key: record.key, value: record.value,
            headers: HeadersCodec.encode(record.headers), headerValues: record.headers,
            keyHash: topic.keyIndexed ? keyHash(record.key) : nil, memo: record.memo)
    }

    func enqueue(_ append: PendingAppend) {
        enum Action { case refuse, queued, startDrain }
        let action = queue.withLock { q -> Action in
            if q.closed { return .refuse }
            q.pending.append(append)
            if q.draining { return .queued }
            q.draining = true
            return .startDrain
        }
        switch action {
        case .refuse: append.continuation.resume(throwing: LogError(.closed, "the log engine is closed"))
        case .queued: break
        case .startDrain: writer.async { conn in self.drain(conn) }
        }
    }

    /// Writes batches until the queue is empty. Runs on the writer queue.
    private func drain(_ conn: SQLiteConnection) {
        let limit = max(1, options.maxRecordsPerCommit)
        while true {
            let batch = queue.withLock { q -> [PendingAppend] in
                if q.pending.isEmpty {
                    q.draining = false
                    return []
                }
                var records = 0
                var count = 0
                for call in q.pending {
                    if count > 0 && records + call.records.count > limit { break }
                    records += call.records.count
                    count += 1
                }
                if count == q.pending.count {
                    defer { q.pending = [] }
                    return q.pending
                }
                defer { q.pending.removeFirst(count) }
                return Array(q.pending.prefix(count))
            }
            if batch.isEmpty { return }
            write(batch, conn)
        }
    }

    private static let insertRecord =
        "INSERT INTO records(topic, part, off, key, value, headers, ts) VALUES (?, ?, ?, ?, ?, ?, ?)"
    static let upsertLatest = """
        INSERT INTO latest(topic, hash, id) VALUES (?, ?, ?)
        ON CONFLICT (topic, hash) DO UPDATE SET id = excluded.id
        """
    static let upsertOffset = """
        INSERT INTO group_offsets(grp, topic, part, off) VALUES (?, ?, ?, ?)
        ON CONFLICT (grp, topic, part) DO UPDATE SET off = excluded.off
        """

    /// One group commit. Runs on the writer queue.
    private func write(_ batch: [PendingAppend], _ conn: SQLiteConnection) {
        pageLimit?.apply(to: conn, logger: logger)
        var calls = batch
        var skipFold = false
        while !calls.isEmpty {
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
            var ends = writerState.ends
            var results: [[RecordAddress]] = []
            results.reserveCapacity(calls.count)
            var keyed: [(LatestIndex.Entry, Int64)] = []
            var lastID = writerState.lastCommittedID
            var tail: [LogRecord] = []
            var touched: Set<TopicPartition> = []
            var failed: (index: Int, error: any Error)?
            writerState.uncommittedLatest.removeAll(keepingCapacity: true)
            // A failed fsync stops the log (see `WALSyncer`) for appends that queued before
            // it too: committed now, they would be reported written though never durable.
            if let failure = syncer.failure {
                fail(calls, failure)
                return
            }
            do {
                try conn.begin(.immediate)
            } catch {
                fail(calls, error)
                return
            }
            let t0 = ContinuousClock.now
            do {
                try conn.withStatement(Self.insertRecord) { insert in
                    for (i, call) in calls.enumerated() {
                        do {
                            results.append(
                                try write(
                                    call, insert: insert, conn: conn, ends: &ends, now: now, keyed: &keyed, lastID: &lastID,
                                    tail: &tail, touched: &touched))
                        } catch {
                            failed = (i, error)
                            return
                        }
                    }
                }
            } catch {
                // Preparing the insert failed: nothing call-specific, so nobody succeeds.
                conn.rollback()
                resetDerivations()
                fail(calls, error)
                return
            }
            if failed == nil {
                do {
                    try commitDerivedOffsets(touched: touched, ends: ends, conn: conn)
                } catch {
                    conn.rollback()
                    resetDerivations()
                    fail(calls, error)
                    return
                }
            }
            if let failed {
                conn.rollback()
                resetDerivations()
                // Out of space, every call fails this way in turn and none is left to commit
                // (a commit of the others would clear it).
                diskHealth.failed(failed.error)
                if let omitted = writerState.appendFailureLog.admit() {
                    logger.warning(
                        "append failed; retrying its batch without it",
                        metadata: ["error": "\(failed.error)", "similar-lines-omitted": "\(omitted)"])
                }
                calls[failed.index].continuation.resume(throwing: failed.error.asLogError)
                calls.remove(at: failed.index)
                continue
            }
            // A slice of the `latest` fold rides along in this transaction: no fsync of its
            // own, and the writer never stops for a whole fold at once.
            var folded: FoldChunk?
            if !skipFold, let chunk = nextFoldChunk() {
                do {
                    try writeFold(chunk, conn)
                    folded = chunk
                } catch {
                    conn.rollback()
                    resetDerivations()
                    diskHealth.failed(error)
                    logger.error("folding latest failed; writing the batch without it", metadata: ["error": "\(error)"])
                    skipFold = true
                    continue
                }
            }
            let t1 = ContinuousClock.now
            do {
                try conn.commit()
                writerState.insertTime += t1 - t0
                writerState.commitTime += ContinuousClock.now - t1
            } catch {
                conn.rollback()
                resetDerivations()
                fail(calls, error)
                return
            }
            // The disk took this commit: whatever failed before is over.
            diskHealth.succeeded()
            var published: [String: [Int64]] = [:]
            for (name, offsets) in ends where writerState.ends[name] != offsets { published[name] = offsets }
            writerState.ends = ends
            writerState.lastCommittedID = lastID
            writerState.keyedSinceWatermark += keyed.count
            // Committed: readers may now find these keys (before any caller learns of them).
            latest.record(keyed)
            if let folded { finishFoldChunk(folded) }
            writerState.commits += 1
            writerState.committedRecords += tail.count  // derived records included
            // Cached before the ends that reveal them are published.
            tailCache.add(consume tail)
            // Published before the callers resume, so an `append` that returned is already
            // visible to `endOffsets` and wakes the readers.
            catalog.publish(published)
            // Resuming a task costs a wake-up of a pool thread (a futex call) — hundreds per
            // batch. Handed to another queue, it overlaps with the next batch's writes
            // instead of delaying them.
            var deferred: [WALSyncer.Waiter] = []
            var durable: [WALSyncer.Waiter] = []
            for (call, addresses) in zip(calls, results) {
                if call.durable {
                    durable.append((call.continuation, addresses))
                } else {
                    deferred.append((call.continuation, addresses))
                }
            }
            syncer.committed(ends: ends, waiting: durable)
            if !deferred.isEmpty {
                let resume = deferred
                completions.async {
                    for w in resume { w.continuation.resume(returning: w.addresses) }
                }
            }
            return
        }
    }

    /// The next slice of the fold in progress, starting one when the delta is big or old
    /// enough, or when a restart would have too many records to refold.
    private func nextFoldChunk() -> FoldChunk? {
        let state = writerState
        if state.foldPosition >= state.fold.count {
            let policy = latest.policy
            let count = latest.count
            guard count > 0,
                count >= policy.maxEntries || state.keyedSinceWatermark >= policy.maxRecordsSinceWatermark
                    || ContinuousClock.now - state.lastFoldEnded >= policy.maxAge
            else { return nil }
            state.fold = latest.snapshot()
            state.foldPosition = 0
            state.foldCovers = state.lastCommittedID
            state.keyedAtFoldStart = state.keyedSinceWatermark
            state.foldStarted = .now
        }
        let end = min(state.foldPosition + max(1, latest.policy.chunk), state.fold.count)
        return FoldChunk(range: state.foldPosition..<end, isLast: end == state.fold.count)
    }

    private func writeFold(_ chunk: FoldChunk, _ conn: SQLiteConnection) throws {
        let fold = writerState.fold
        try conn.withStatement(Self.upsertLatest) { upsert in
            for (entry, id) in fold[chunk.range] {
                upsert.bind(1, entry.topic)
                upsert.bind(2, entry.hash)
                upsert.bind(3, id)
                try upsert.run()
            }
        }
        if chunk.isLast {
            // The whole snapshot is in the table once this commits: records up to its
            // watermark need no refold after a restart.
            try conn.withStatement("UPDATE meta SET value = ? WHERE name = 'latest_flushed_id'") { stmt in
                stmt.bind(1, writerState.foldCovers)
                try stmt.run()
            }
        }
    }

    /// After the commit that carried `chunk`.
    private func finishFoldChunk(_ chunk: FoldChunk) {
        let state = writerState
        latest.flushed(Array(state.fold[chunk.range]))
        state.foldPosition = chunk.range.upperBound
        state.foldedEntries += chunk.range.count
        guard chunk.isLast else { return }
        state.folds += 1
        state.foldTime += ContinuousClock.now - state.foldStarted
        state.keyedSinceWatermark -= state.keyedAtFoldStart
        state.fold = []
        state.foldPosition = 0
        state.lastFoldEnded = .now
    }

    /// Writes the whole in-memory delta of newest-record-per-key into `latest`, sorted, in
    /// one transaction that also moves `latest_flushed_id` (at close, so the next open has
    /// nothing to refold). Runs on the writer queue. A failure leaves the delta as it is.
    func foldLatest(_ conn: SQLiteConnection) {
        let entries = latest.snapshot()
        guard !entries.isEmpty else { return }
        let covered = writerState.lastCommittedID
        do {
            try conn.transaction {
                try conn.withStatement(Self.upsertLatest) { upsert in
                    for (entry, id) in entries {
                        upsert.bind(1, entry.topic)
                        upsert.bind(2, entry.hash)
                        upsert.bind(3, id)
                        try upsert.run()
                    }
                }
                try conn.withStatement("UPDATE meta SET value = ? WHERE name = 'latest_flushed_id'") { stmt in
                    stmt.bind(1, covered)
                    try stmt.run()
                }
            }
            latest.flushed(entries)
            // Whatever chunked fold was running is covered by this one.
            writerState.fold = []
            writerState.foldPosition = 0
            writerState.keyedSinceWatermark = 0
        } catch {
            logger.error("folding the latest-record delta failed; will retry", metadata: ["error": "\(error)"])
        }
    }

    private func write(
        _ call: PendingAppend, insert: SQLiteStatement, conn: SQLiteConnection, ends: inout [String: [Int64]], now: Int64,
        keyed: inout [(LatestIndex.Entry, Int64)], lastID: inout Int64, tail: inout [LogRecord], touched: inout Set<TopicPartition>
    ) throws -> [RecordAddress] {
        try checkNotDerived(call.commit)
        var addresses: [RecordAddress] = []
        addresses.reserveCapacity(call.records.count)
        for record in call.records {
            addresses.append(
                try insertRecord(
                    record, insert: insert, conn: conn, ends: &ends, now: now, keyed: &keyed, lastID: &lastID, tail: &tail,
                    touched: &touched))
        }
        if let commit = call.commit {
            try conn.withStatement(Self.upsertOffset) { upsert in
                for (partition, offset) in commit.offsets {
                    upsert.bind(1, commit.group)
                    upsert.bind(2, commit.topic.id)
                    upsert.bind(3, partition)
                    upsert.bind(4, offset)
                    try upsert.run()
                }
            }
        }
        return addresses
    }

    /// Inserts one record at the end of its partition, then what the derivations make of
    /// it, depth first: each derivation sees its topic's records in offset order.
    private func insertRecord(
        _ record: PendingAppend.Record, insert: SQLiteStatement, conn: SQLiteConnection, ends: inout [String: [Int64]],
        now: Int64, keyed: inout [(LatestIndex.Entry, Int64)], lastID: inout Int64, tail: inout [LogRecord],
        touched: inout Set<TopicPartition>
    ) throws -> RecordAddress {
        guard let offset = ends[record.topic.name]?[record.partition] else {
            throw LogError.unknownTopic(record.topic.name)
        }
        insert.bind(1, record.topic.id)
        insert.bind(2, record.partition)
        insert.bind(3, offset)
        insert.bind(4, record.key)
        insert.bind(5, record.value)
        insert.bind(6, record.headers)
        insert.bind(7, now)
        try insert.run()
        lastID = conn.lastInsertRowID
        if let hash = record.keyHash {
            let entry = LatestIndex.Entry(topic: record.topic.id, hash: hash)
            keyed.append((entry, lastID))
            if !writerState.derivations.isEmpty { writerState.uncommittedLatest[entry] = lastID }
        }
        ends[record.topic.name]![record.partition] = offset + 1
        let stored = LogRecord(
            topic: record.topic.name, partition: record.partition, offset: offset, key: record.key, value: record.value,
            headers: record.headerValues, timestamp: now, memo: record.memo)
        tail.append(stored)
        if !writerState.derivations.isEmpty {
            touched.insert(TopicPartition(record.topic.name, record.partition))
            for next in try derived(from: stored, conn: conn) {
                _ = try insertRecord(
                    next, insert: insert, conn: conn, ends: &ends, now: now, keyed: &keyed, lastID: &lastID, tail: &tail,
                    touched: &touched)
            }
        }
        return RecordAddress(topic: record.topic.name, partition: record.partition, offset: offset)
    }

    /// Returns once everything committed so far is durable (a topic just created, tests).
    package func syncCommitted() async throws {
        _ = try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<[RecordAddress], any Error>) in
            // On the writer queue: after every commit already queued, and `ends` is stable.
            writer.async { _ in self.syncer.committed(ends: self.writerState.ends, waiting: [(continuation, [])]) }
        }
    }

    private func fail(_ calls: [PendingAppend], _ error: any Error) {
        diskHealth.failed(error)
        let logError = error.asLogError
        if let omitted = writerState.commitFailureLog.admit() {
            logger.error(
                "group commit failed",
                metadata: ["calls": "\(calls.count)", "error": "\(logError)", "similar-lines-omitted": "\(omitted)"])
        }
        for call in calls { call.continuation.resume(throwing: logError) }
    }
}
