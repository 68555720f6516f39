import OrderDomain

/// The shared tail's memory: the last `capacity` records of `order-aggregates` it read,
/// decoded once, in read order, each under a sequence number; fewer when they would take
/// more than `maxBytes` (an event's estimated size, and its shared delivery's: a placed
/// event holds the route, up to 100 KB, so 8,192 of them were most of a GB). The newest
/// record always stays.
///
/// `floor` says exactly what is retained: every record of partition p with an offset in
/// `floor[p]..<tail[p]` is in the ring. A subscriber at position P (next offset per
/// partition) can therefore switch to the ring without a gap exactly when
/// `P[p] >= floor[p]` for every p. Positions, not record counts, decide, because offsets
/// may skip (Kafka's transaction markers are never delivered).
struct TailRing: Sendable {
    struct Entry: Sendable {
        var partition: Int
        var offset: Int64
        /// nil for a record that adds no event (a command, an unreadable row): it still
        /// moves a subscriber's position.
        var event: OrderEvent?
        /// For an event: the delivery every subscriber at the ring's position gets, set
        /// when the ring appends it (nil on an own reader's entries).
        var shared: SharedDelivery?

        init(partition: Int, offset: Int64, event: OrderEvent?) {
            self.partition = partition
            self.offset = offset
            self.event = event
        }

        /// The event, and twice as much again for what its delivery makes once shared
        /// (the response message and its encoding).
        var estimatedBytes: Int { 64 + (event.map { 3 * $0.estimatedBytes } ?? 0) }
    }

    let capacity: Int
    let maxBytes: Int
    /// The estimated size of the entries held.
    private(set) var bytes = 0
    private(set) var floor: [Int64]
    private(set) var tail: [Int64]
    private(set) var firstSeq: Int64
    private(set) var nextSeq: Int64
    private let baseSeq: Int64
    private var slots: [Entry] = []

    /// An empty ring whose reader starts at `start`; sequence numbers continue from `seq`.
    init(capacity: Int, maxBytes: Int = .max, start: [Int64], seq: Int64) {
        self.capacity = max(1, capacity)
        self.maxBytes = maxBytes
        floor = start
        tail = start
        firstSeq = seq
        nextSeq = seq
        baseSeq = seq
        slots.reserveCapacity(min(self.capacity, 4096))
    }

    private func slot(_ seq: Int64) -> Int { Int((seq - baseSeq) % Int64(capacity)) }

    var count: Int { Int(nextSeq - firstSeq) }

    /// Appends the next record the tail read, evicting the oldest while full or over the
    /// byte budget.
    mutating func append(_ entry: Entry) {
        var entry = entry
        tail[entry.partition] = entry.offset + 1
        if entry.event != nil { entry.shared = SharedDelivery(position: LogPosition(offsets: tail)) }
        if count == capacity { evictOldest() }
        let i = slot(nextSeq)
        if i == slots.count { slots.append(entry) } else { slots[i] = entry }
        nextSeq += 1
        bytes += entry.estimatedBytes
        while bytes > maxBytes, count > 1 { evictOldest() }
    }

    private mutating func evictOldest() {
        let i = slot(firstSeq)
        let evicted = slots[i]
        // The evicted record is no longer here: a subscriber must be past it to switch.
        floor[evicted.partition] = evicted.offset + 1
        bytes -= evicted.estimatedBytes
        // Its slot keeps only the position (reused by a later append), not the event.
        slots[i] = Entry(partition: evicted.partition, offset: evicted.offset, event: nil)
        firstSeq += 1
    }

    /// Whether everything a subscriber at `position` has not seen yet is still here.
    func covers(_ position: [Int64]) -> Bool {
        position.count == floor.count && zip(position, floor).allSatisfy { $0 >= $1 }
    }

    /// The first sequence number holding a record a subscriber at `position` has not seen
    /// (`nextSeq` when none). Earlier entries are all behind it; later ones it may still
    /// have seen (its own reader ran ahead in some partition), which it skips by offset.
    func cursor(for position: [Int64]) -> Int64 {
        // At or past the tail everywhere (a from_end subscriber, a reader that caught up):
        // nothing here is new to it, and 1,000 of them attaching need not scan the ring.
        if zip(position, tail).allSatisfy({ $0 >= $1 }) { return nextSeq }
        var seq = firstSeq
        while seq < nextSeq {
            let entry = slots[slot(seq)]
            if entry.offset >= position[entry.partition] { return seq }
            seq += 1
        }
        return nextSeq
    }

    /// Up to `max` entries from `seq` (which must be in `firstSeq...nextSeq`).
    func entries(from seq: Int64, max: Int) -> [Entry] {
        let end = min(nextSeq, seq + Int64(max))
        var out: [Entry] = []
        out.reserveCapacity(Int(end - seq))
        var s = seq
        while s < end {
            out.append(slots[slot(s)])
            s += 1
        }
        return out
    }
}
