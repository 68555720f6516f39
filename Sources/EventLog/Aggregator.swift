import Logging
import Synchronization

/// The built-in replacement for ksqlDB's ORDER_AGGREGATES query: consumes
/// `order-commands-and-events` and, for every record, writes the order's row (the latest
/// entry plus all entries in offset order) to `order-aggregates`, in the same partition.
///
/// Exactly once: the row and the consumer offsets are written in one atomic append, and
/// every row carries the source record's offset in its `source-offset` header so a
/// redelivered source record (at-least-once engines) is recognized and skipped.
public final class Aggregator: Sendable {
    public static let group = "order-aggregator"
    static let sourceOffsetHeader = "source-offset"

    let engine: any LogEngine
    let topics: Topics
    let logger: Logger
    /// The latest entries per order, so consecutive records of an order need no lookup.
    /// Valid only while this member owns the partitions; cleared on any change.
    private let cache: Mutex<BoundedCache<String, Row>>

    struct Row: Sendable {
        /// The row's lists, encoded (the next row appends one entry).
        var lists: LogFormat.AggregateLists
        var sourceOffset: Int64
        /// The entries folded, so the next row's analysis is one more `apply`.
        var history: OrderHistory

        /// The history counted as twice the lists it was decoded from: walking it would
        /// cost the writer a pass over every entry per row (the derivation runs there).
        var estimatedBytes: Int { 64 + 3 * lists.byteCount }
    }

    /// `cacheMaxBytes` bounds the cached rows by size as well as by count: a row carries
    /// the order's whole lists (with a maximal route, hundreds of KB), so 50,000 of them
    /// could take gigabytes. A row evicted is read back from the log when needed again.
    public init(engine: any LogEngine, topics: Topics, logger: Logger, cacheCapacity: Int = 50_000, cacheMaxBytes: Int = 64 << 20) {
        self.engine = engine
        self.topics = topics
        self.logger = logger
        cache = Mutex(BoundedCache(capacity: cacheCapacity, maxBytes: cacheMaxBytes) { key, row in stringBytes(key) + row.estimatedBytes })
    }

    public func run() async throws {
        let loop = GroupLoop(engine: engine, group: Self.group, topic: topics.commandsAndEvents, logger: logger)
        try await loop.run(onAssignmentChange: { forget() }) { records in
            try await aggregate(records)
        }
    }

    /// Rows cached and their estimated bytes (for tests).
    var cacheUsage: (count: Int, bytes: Int) { cache.withLock { ($0.count, $0.bytes) } }

    /// Drops the cached rows (partitions changed hands: another member may have written).
    func forget() { cache.withLock { $0.removeAll() } }

    func aggregate(_ records: [LogRecord]) async throws -> [OutgoingRecord] {
        var out: [OutgoingRecord] = []
        out.reserveCapacity(records.count)
        // Every order's row as the batch starts, taken from the cache at once (the rows
        // this batch makes go into the cache and may push out another order of the same
        // batch before its turn), the others from the log in one round trip (new orders
        // have none). Rows made in the batch go on from this map.
        let (cached, missing) = cache.withLock { c in
            var cached: [String: Row] = [:]
            var missing: Set<String> = []
            for r in records where cached[r.key] == nil && !missing.contains(r.key) {
                if let row = c[r.key] { cached[r.key] = row } else { missing.insert(r.key) }
            }
            return (cached, missing)
        }
        var rows = cached
        for (key, record) in try await engine.latestRecords(topic: topics.aggregates, keys: missing) {
            rows[key] = row(from: record)
        }
        for record in records {
            guard let (next, row) = next(after: rows[record.key], record) else { continue }
            out.append(next)
            rows[record.key] = row
        }
        return out
    }

    /// The aggregator as a derivation the engine runs inside its appends
    /// (`DerivingLogEngine`): the same rows, written with the records they aggregate.
    public var derivation: LogDerivation {
        LogDerivation(
            group: Self.group, topic: topics.commandsAndEvents,
            derive: { record, latest in
                // Taken out of the cache (`next` writes the next one back), so its lists
                // are not shared and grow in place.
                var row = self.cache.withLock { $0.take(record.key) }
                if row == nil, let stored = try latest(self.topics.aggregates, record.key) { row = self.row(from: stored) }
                return self.next(after: consume row, record).map { [$0.record] } ?? []
            },
            reset: { self.cache.withLock { $0.removeAll() } })
    }

    /// The row `record` makes of the order's row before it (nil: none yet), remembered in
    /// the cache; nil when the record is skipped (unreadable, or aggregated already).
    /// `row` is written back to the cache when the record is skipped.
    private func next(after row: consuming Row?, _ record: LogRecord) -> (record: OutgoingRecord, row: Row)? {
        let memo = record.memo as? LogFormat.EntryMemo
        let entry: LogFormat.Entry
        do {
            entry = try memo?.entry ?? LogFormat.decodeEntry(record.value)
        } catch {
            logger.error(
                "skipping a malformed record",
                metadata: ["topic": "\(record.topic)", "partition": "\(record.partition)", "offset": "\(record.offset)", "error": "\(error)"])
            if let row { cache.withLock { $0[record.key] = row } }
            return nil
        }
        if let row, row.sourceOffset >= record.offset {  // already aggregated
            cache.withLock { $0[record.key] = row }
            return nil
        }
        var lists = LogFormat.AggregateLists()
        var history = OrderHistory(orderId: record.key)
        if var row = row.take() {
            // Moved, not copied: lists held nowhere else are appended to in place.
            swap(&lists, &row.lists)
            swap(&history, &row.history)
        }
        lists.append(entry, quotedDetails: memo?.quotedDetails)
        let value = lists.encoded
        // The decoding comes with the record (its memo) or from the cache the gateway and
        // the command handler fill; the analysis goes out the same two ways.
        let analysis = AggregateRow.appending(entry, decoded: memo?.decoded, to: history)
        if !engine.keepsMemos { AggregateRow.remember(analysis, orderId: record.key, value: value) }
        let made = Row(lists: lists, sourceOffset: record.offset, history: analysis.history)
        cache.withLock { $0[record.key] = made }
        let outgoing = OutgoingRecord(
            topic: topics.aggregates, key: record.key, value: value,
            headers: [Self.sourceOffsetHeader: String(record.offset)], partition: record.partition, memo: analysis)
        return (outgoing, made)
    }

    private func row(from record: LogRecord) -> Row? {
        let key = record.key
        do {
            let aggregate = try LogFormat.decodeAggregate(record.value)
            let offset = record.headers[Self.sourceOffsetHeader].flatMap { Int64($0) } ?? -1
            let entries = try aggregate.entries()
            return Row(
                lists: LogFormat.AggregateLists(entries: entries), sourceOffset: offset,
                history: OrderHistory(orderId: key, entries: entries))
        } catch {
            // The table's own row is unreadable: start the order's list afresh rather than
            // stop the partition, and say so.
            logger.error("unreadable aggregate row; restarting its list", metadata: ["key": "\(key)", "error": "\(error)"])
            return nil
        }
    }
}
