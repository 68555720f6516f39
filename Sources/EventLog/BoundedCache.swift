/// A map that forgets its least recently written entries beyond `capacity`.
///
/// Writing a key, new or not, makes it the newest: callers rely on what they wrote last
/// staying (the projector's views until the store has them, the aggregator's rows while
/// the next batch builds on them). Evicting by first insertion instead once dropped an
/// order's row a moment after it was updated, and the next row of that order started an
/// empty history.
struct BoundedCache<Key: Hashable, Value> {
    let capacity: Int
    /// Each value with the stamp of its last write.
    private var values: [Key: (value: Value, stamp: UInt64)] = [:]
    /// Writes in order, oldest first from `head`; an entry whose stamp is not its key's
    /// current one was overwritten since and is skipped.
    private var order: [(key: Key, stamp: UInt64)] = []
    private var head = 0
    private var nextStamp: UInt64 = 0

    init(capacity: Int) { self.capacity = capacity }

    var count: Int { values.count }

    subscript(key: Key) -> Value? {
        get { values[key]?.value }
        set {
            guard let newValue else {
                values[key] = nil
                return
            }
            nextStamp &+= 1
            values[key] = (newValue, nextStamp)
            order.append((key, nextStamp))
            if values.count > capacity { evict() }
            if order.count - head > 2 * max(capacity, 16) { compact() }
        }
    }

    mutating func removeAll() {
        values.removeAll()
        order.removeAll()
        head = 0
    }

    private mutating func evict() {
        while values.count > capacity, head < order.count {
            let (key, stamp) = order[head]
            head += 1
            if values[key]?.stamp == stamp { values[key] = nil }
        }
    }

    /// Drops the write log's overwritten and evicted entries (amortized: it runs once the
    /// log holds twice the capacity).
    private mutating func compact() {
        order = order[head...].filter { values[$0.key]?.stamp == $0.stamp }
        head = 0
    }
}
