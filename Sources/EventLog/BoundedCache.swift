/// A map that forgets its least recently written entries beyond `capacity` entries or
/// `maxBytes` bytes (each entry's size as `size` estimates it when written).
///
/// Writing a key, new or not, makes it the newest: callers rely on what they wrote last
/// staying (the projector's views until the store has them, the aggregator's rows while
/// the next batch builds on them). Evicting by first insertion instead once dropped an
/// order's row a moment after it was updated, and the next row of that order started an
/// empty history. The newest entry is never evicted, and entries a caller holds
/// (`holdNewWrites`, `release(through:)`) only once released.
///
/// Why bytes as well as entries: the entries hold an order's data (its route: up to 100
/// addresses of 1,000 bytes; its lists: every command and event), so a count alone let a
/// client fill gigabytes with maximal orders (about 1.5 MB of cached copies per order).
package struct BoundedCache<Key: Hashable, Value> {
    package let capacity: Int
    package let maxBytes: Int
    private let size: (Key, Value) -> Int
    /// The estimated size of the entries held.
    package private(set) var bytes = 0
    /// Each value with the stamp of its last write and its size.
    private var values: [Key: (value: Value, stamp: UInt64, bytes: Int)] = [:]
    /// Writes in order, oldest first from `head`; an entry whose stamp is not its key's
    /// current one was overwritten since and is skipped.
    private var order: [(key: Key, stamp: UInt64)] = []
    private var head = 0
    private var nextStamp: UInt64 = 0
    /// Entries written after this stamp are held: never evicted, whatever the bounds.
    private var releasedThrough = UInt64.max

    /// `size` is called once per write; without it only `capacity` bounds the cache.
    package init(capacity: Int, maxBytes: Int = .max, size: @escaping (Key, Value) -> Int = { _, _ in 0 }) {
        self.capacity = capacity
        self.maxBytes = maxBytes
        self.size = size
    }

    package var count: Int { values.count }

    /// The stamp of the last write (for `release(through:)`).
    package var stamp: UInt64 { nextStamp }

    package subscript(key: Key) -> Value? {
        get { values[key]?.value }
        set {
            guard let newValue else {
                if let old = values.removeValue(forKey: key) { bytes -= old.bytes }
                return
            }
            nextStamp &+= 1
            let entryBytes = size(key, newValue)
            if let old = values.updateValue((newValue, nextStamp, entryBytes), forKey: key) { bytes -= old.bytes }
            bytes += entryBytes
            order.append((key, nextStamp))
            if values.count > capacity || bytes > maxBytes { evict() }
            if order.count - head > 2 * max(capacity, values.count, 16) { compact() }
        }
    }

    /// Removes and returns `key`'s value: the caller then holds it alone (its arrays grow
    /// in place), and writes it back when done.
    package mutating func take(_ key: Key) -> Value? {
        guard let old = values.removeValue(forKey: key) else { return nil }
        bytes -= old.bytes
        return old.value
    }

    /// Holds every entry written from now on until `release(through:)` passes its stamp
    /// (the projector's views until the store has them).
    package mutating func holdNewWrites() { releasedThrough = nextStamp }

    /// Lets the entries written up to `stamp` be evicted again, and evicts what the bounds
    /// then require.
    package mutating func release(through stamp: UInt64) {
        releasedThrough = max(releasedThrough, stamp)
        if values.count > capacity || bytes > maxBytes { evict() }
    }

    package mutating func removeAll() {
        values.removeAll()
        order.removeAll()
        head = 0
        bytes = 0
    }

    private mutating func evict() {
        while values.count > capacity || bytes > maxBytes, values.count > 1, head < order.count {
            let (key, stamp) = order[head]
            if stamp > releasedThrough { return }  // held, and so is every newer one
            head += 1
            if values[key]?.stamp == stamp, let old = values.removeValue(forKey: key) { bytes -= old.bytes }
        }
    }

    /// Drops the write log's overwritten and evicted entries (amortized: it runs once the
    /// log holds twice the capacity, or twice the entries held).
    private mutating func compact() {
        order = order[head...].filter { values[$0.key]?.stamp == $0.stamp }
        head = 0
    }
}
