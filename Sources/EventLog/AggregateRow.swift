import Synchronization

/// What one `order-aggregates` row means for its order: the history up to and including
/// its last entry, what that entry changed, and the command that was next in line just
/// before it. The command handler, the projector, the integration publisher and every
/// subscription all need this for the same rows, so it is worked out once per row and
/// remembered (keyed by the row's own bytes, so different logs in one process never mix).
struct AggregateRow: Sendable {
    /// The history after the row's last entry.
    var history: OrderHistory
    /// What the last entry did (`.invalid` also for an unreadable row).
    var change: OrderHistory.Change
    /// The first unanswered command before the last entry was applied.
    var nextBefore: String?

    static func analyze(_ record: LogRecord) -> AggregateRow {
        if let row = record.memo as? AggregateRow { return row }  // the aggregator's, in this process
        let key = CacheKey(orderId: record.key, value: record.value)
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let row = compute(record)
        cache.withLock { $0[key] = row }
        return row
    }

    /// Remembers the analysis of a row about to be written, worked out incrementally by
    /// the one who wrote it (the aggregator), so its readers find it instead of
    /// re-folding the whole list, when the engine drops the row's memo. It must equal
    /// what `analyze` would compute from `value`.
    static func remember(_ row: AggregateRow, orderId: String, value: [UInt8]) {
        cache.withLock { $0[CacheKey(orderId: orderId, value: value)] = row }
    }

    /// The analysis of `history` after applying `entry` (the row's last).
    static func appending(_ entry: LogFormat.Entry, decoded: LogFormat.Decoded? = nil, to history: OrderHistory) -> AggregateRow {
        var history = history
        let before = history.firstUnanswered?.commandId
        let change = history.apply(entry, decoded: decoded)
        return AggregateRow(history: history, change: change, nextBefore: before)
    }

    private static func compute(_ record: LogRecord) -> AggregateRow {
        let entries: [LogFormat.Entry]
        do {
            entries = try LogFormat.decodeAggregate(record.value).entries()
        } catch {
            return AggregateRow(history: OrderHistory(orderId: record.key), change: .invalid("unreadable aggregate row: \(error)"), nextBefore: nil)
        }
        guard let last = entries.last else {
            return AggregateRow(history: OrderHistory(orderId: record.key), change: .invalid("empty aggregate row"), nextBefore: nil)
        }
        return appending(last, to: OrderHistory(orderId: record.key, entries: entries.dropLast()))
    }

    /// Analyses cached and their estimated bytes (for tests).
    static var cacheUsage: (count: Int, bytes: Int, maxBytes: Int) { cache.withLock { ($0.count, $0.bytes, $0.maxBytes) } }

    private struct CacheKey: Hashable, Sendable {
        var orderId: String
        var value: [UInt8]

        // Hashes the length and the last bytes only (rows of one order differ in length,
        // and end with their newest entry's details): hashing a whole row cost more than
        // the lookup saved. Equality still compares every byte.
        func hash(into hasher: inout Hasher) {
            hasher.combine(orderId)
            hasher.combine(value.count)
            value.withUnsafeBytes { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0.suffix(48))) }
        }
    }

    /// Bounded in bytes too: each entry holds a whole row (its key) and the history folded
    /// from it, up to hundreds of KB for an order with a long route or many commands.
    private static let cache = Mutex(
        BoundedCache<CacheKey, AggregateRow>(capacity: 20_000, maxBytes: 64 << 20) { key, row in
            64 + stringBytes(key.orderId) + key.value.count + row.estimatedBytes
        })
}
