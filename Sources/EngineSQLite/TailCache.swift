import Dispatch
import EventLog
import Synchronization

/// The last records committed to each partition, in memory: the processors and readers
/// of a busy log read right behind the writer, and serving them from here skips a hop to
/// a reader thread, a read transaction (which, in WAL mode, re-reads pages another
/// connection changed) and decoding the rows again.
///
/// The writer adds records after their commit and before it publishes the new ends, so a
/// reader that sees an end finds the records here or, once they have aged out, in SQLite.
///
/// Bounded per partition by records and by bytes (`LogRecord.estimatedBytes`: the value
/// and its memo, a whole order history on an aggregates row): 256 rows of orders with
/// maximal routes were 100 MB a partition.
package final class TailCache: Sendable {
    fileprivate struct Partition {
        /// Offset of `records[start]`.
        var base: Int64 = 0
        var start = 0
        var records: [LogRecord] = []
        /// Estimated bytes of the records kept (from `start`), and of those before `start`
        /// (forgotten, not yet dropped).
        var bytes = 0
        var forgottenBytes = 0

        var count: Int { records.count - start }
        var end: Int64 { base + Int64(count) }
    }

    /// Records kept per partition (at least; up to twice as many between trims).
    let capacity: Int
    /// Estimated bytes kept per partition (the newest record stays whatever its size; up
    /// to half as much again between trims).
    let maxBytes: Int
    private let partitions = Mutex<[String: [Partition]]>([:])

    init(capacity: Int, maxBytes: Int = .max) {
        self.capacity = capacity
        self.maxBytes = maxBytes
    }

    /// After a commit (on the writer queue): the records in offset order per partition,
    /// each partition's first one following what was committed before.
    func add(_ records: [LogRecord]) {
        guard capacity > 0, !records.isEmpty else { return }
        var aged: [[LogRecord]] = []
        partitions.withLock { all in
            // Taken out of the dictionary while appending, so its arrays stay uniquely
            // referenced and grow in place; a batch is mostly one topic.
            var name = records[0].topic
            var topic = all.removeValue(forKey: name) ?? []
            for record in records {
                if record.topic != name {
                    all[name] = topic
                    name = record.topic
                    topic = all.removeValue(forKey: name) ?? []
                }
                if record.partition >= topic.count {
                    topic.append(contentsOf: repeatElement(Partition(), count: record.partition + 1 - topic.count))
                }
                if let old = topic[record.partition].append(record, capacity: capacity, maxBytes: maxBytes) { aged.append(old) }
            }
            all[name] = topic
        }
        // Freeing aged records (their memos are whole order histories) is left to another
        // thread: the writer calling this is the log's bottleneck.
        if !aged.isEmpty { Self.reclaimer.async { [aged] in withExtendedLifetime(aged) {} } }
    }

    private static let reclaimer = DispatchQueue(label: "tail-cache.reclaim", qos: .utility)

    /// `count` records of one partition from `offset`, or nil unless all are here.
    /// Copied under the lock: a slice kept outside would share the partition's buffer and
    /// make the writer's next append copy all of it.
    func records(topic: String, partition: Int, from offset: Int64, count: Int) -> [LogRecord]? {
        partitions.withLock { all -> [LogRecord]? in
            guard let t = all[topic], partition < t.count else { return nil }
            let p = t[partition]
            guard offset >= p.base, offset + Int64(count) <= p.end else { return nil }
            let first = p.start + Int(offset - p.base)
            return Array(p.records[first..<(first + count)])
        }
    }
}

extension TailCache {
    /// One partition's records kept, their estimated bytes, and the records still in
    /// memory (kept or forgotten, not yet dropped), for tests.
    func usage(topic: String, partition: Int) -> (count: Int, bytes: Int, inMemory: Int) {
        partitions.withLock { all in
            guard let t = all[topic], partition < t.count else { return (0, 0, 0) }
            return (t[partition].count, t[partition].bytes, t[partition].records.count)
        }
    }
}

extension TailCache.Partition {
    /// Appends `record`; returns the old buffer, holding the records now dropped for good,
    /// when it was replaced (for the caller to free elsewhere).
    mutating func append(_ record: LogRecord, capacity: Int, maxBytes: Int) -> [LogRecord]? {
        var replaced: [LogRecord]?
        if record.offset != end {
            // A gap (the cache started late): start afresh here.
            replaced = records
            records = []
            start = 0
            base = record.offset
            bytes = 0
            forgottenBytes = 0
        }
        records.append(record)
        bytes += record.estimatedBytes
        while count > capacity || (bytes > maxBytes && count > 1) {  // forget the oldest
            let size = records[start].estimatedBytes
            bytes -= size
            forgottenBytes += size
            start += 1
            base += 1
        }
        if start >= capacity || (start > 0 && forgottenBytes > maxBytes / 2) {  // and now and then drop them for good
            replaced = records
            records = Array(records[start...])
            start = 0
            forgottenBytes = 0
        }
        return replaced
    }
}
