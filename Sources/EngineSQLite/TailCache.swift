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
    /// One partition's newest records, in a ring: appending never copies the records kept
    /// (a compacting array copied, and retained, all of them every `capacity` appends).
    fileprivate struct Partition {
        struct Slot {
            var record: LogRecord
            /// `record.estimatedBytes`, worked out once (it walks the memo: a whole
            /// order history on an aggregates row).
            var bytes: Int
        }

        /// Offset of the oldest record kept.
        var base: Int64 = 0
        /// Where the oldest record kept is in `ring`, and how many are kept from there on.
        var head = 0
        var count = 0
        /// Grows up to `capacity` slots, then wraps around.
        var ring: [Slot?] = []
        /// Estimated bytes of the records kept.
        var bytes = 0

        var end: Int64 { base + Int64(count) }

        func slot(_ i: Int) -> Int { (head + i) % ring.count }
    }

    /// The partitions of one topic (a class, so the writer appends to them in place).
    fileprivate final class TopicTail {
        let name: String
        var partitions: [Partition] = []
        init(name: String) { self.name = name }
    }

    /// Records kept per partition.
    let capacity: Int
    /// Estimated bytes kept per partition (the newest record stays whatever its size).
    let maxBytes: Int
    /// Few topics (three): a list searched in order beats hashing the name per record.
    private let topics = Mutex<[TopicTail]>([])

    init(capacity: Int, maxBytes: Int = .max) {
        self.capacity = capacity
        self.maxBytes = maxBytes
    }

    /// After a commit (on the writer queue): the records in offset order per partition,
    /// each partition's first one following what was committed before. Taken, not
    /// copied: each record moves into its slot without retaining its fields again.
    func add(_ records: consuming [LogRecord]) {
        guard capacity > 0, !records.isEmpty else { return }
        var aged: [LogRecord] = []
        records.reverse()
        topics.withLock { all in
            var topic = Self.tail(records.last!.topic, in: &all)
            while let record = records.popLast() {
                if record.topic != topic.name { topic = Self.tail(record.topic, in: &all) }
                if record.partition >= topic.partitions.count {
                    topic.partitions.append(contentsOf: repeatElement(Partition(), count: record.partition + 1 - topic.partitions.count))
                }
                let partition = record.partition
                topic.partitions[partition].append(record, capacity: capacity, maxBytes: maxBytes, aged: &aged)
            }
        }
        if !aged.isEmpty { reclaim(consume aged) }
    }

    private static func tail(_ name: String, in all: inout [TopicTail]) -> TopicTail {
        if let found = all.first(where: { $0.name == name }) { return found }
        let made = TopicTail(name: name)
        all.append(made)
        return made
    }

    /// Aged records waiting to be freed, and whether the reclaimer is on its way.
    private let garbage = Mutex<(batches: [[LogRecord]], scheduled: Bool)>(([], false))
    private static let reclaimer = DispatchQueue(label: "tail-cache.reclaim", qos: .utility)

    /// Frees aged records (their memos are whole order histories) on another thread:
    /// the writer calling `add` is the log's bottleneck. Handed over under a lock, so the
    /// reclaimer, never the writer, lets go of them last.
    private func reclaim(_ aged: consuming [LogRecord]) {
        var aged = Optional(aged)
        let schedule = garbage.withLock { g in
            g.batches.append(aged.take()!)
            defer { g.scheduled = true }
            return !g.scheduled
        }
        guard schedule else { return }
        Self.reclaimer.async {
            let batches = self.garbage.withLock { g in
                g.scheduled = false
                var taken: [[LogRecord]] = []
                swap(&taken, &g.batches)
                return taken
            }
            withExtendedLifetime(batches) {}
        }
    }

    /// `count` records of one partition from `offset`, or nil unless all are here.
    func records(topic: String, partition: Int, from offset: Int64, count: Int) -> [LogRecord]? {
        topics.withLock { all -> [LogRecord]? in
            guard let t = all.first(where: { $0.name == topic }), partition < t.partitions.count else { return nil }
            let p = t.partitions[partition]
            guard offset >= p.base, offset + Int64(count) <= p.end else { return nil }
            let first = Int(offset - p.base)
            var out: [LogRecord] = []
            out.reserveCapacity(count)
            for i in first..<(first + count) { out.append(p.ring[p.slot(i)]!.record) }
            return out
        }
    }
}

extension TailCache {
    /// One partition's records kept and their estimated bytes, for tests.
    func usage(topic: String, partition: Int) -> (count: Int, bytes: Int) {
        topics.withLock { all in
            guard let t = all.first(where: { $0.name == topic }), partition < t.partitions.count else { return (0, 0) }
            return (t.partitions[partition].count, t.partitions[partition].bytes)
        }
    }
}

extension TailCache.Partition {
    /// Appends `record`, moving the records it pushes out to `aged`.
    mutating func append(_ record: consuming LogRecord, capacity: Int, maxBytes: Int, aged: inout [LogRecord]) {
        if record.offset != end {
            // A gap (the cache started late): start afresh here.
            while count > 0 { dropOldest(into: &aged) }
            ring = []
            head = 0
            base = record.offset
        }
        if count == capacity { dropOldest(into: &aged) }
        let size = record.estimatedBytes
        let record = Slot(record: record, bytes: size)
        if count < ring.count {
            ring[slot(count)] = record
        } else {
            // Full below capacity: grow, the oldest first.
            if head != 0 {
                ring = Array(ring[head...] + ring[..<head])
                head = 0
            }
            ring.append(record)
        }
        count += 1
        bytes += size
        while bytes > maxBytes && count > 1 { dropOldest(into: &aged) }
    }

    private mutating func dropOldest(into aged: inout [LogRecord]) {
        let slot = ring[head].take()!
        aged.append(slot.record)
        bytes -= slot.bytes
        head = (head + 1) % ring.count
        count -= 1
        base += 1
    }
}
