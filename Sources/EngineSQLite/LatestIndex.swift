import Synchronization

/// The newest record id per (topic, key hash) that is committed but not yet in the
/// `latest` table: a bounded in-memory delta, folded into the table now and then.
///
/// Why not update `latest` in every group commit: keys (order ids) are random, so each
/// keyed record dirties a different page of the table, and every dirty page is written
/// and fsync'd at commit — about 4 KiB of WAL per record, which on this disk capped keyed
/// appends far below unkeyed ones. Folding a second's worth of keys at once, sorted,
/// writes each page of the table at most once per fold.
///
/// Crash safety: the fold records, in the same transaction, the highest record id it
/// covers (`meta.latest_flushed_id`); at open, records after it are folded in again
/// (bounded by `FlushPolicy`, so opening stays fast). Readers see the delta first, then
/// the table; an entry leaves the delta only after the fold that wrote it has committed.
package final class LatestIndex: Sendable {
    package struct Entry: Sendable, Hashable {
        var topic: Int64
        var hash: Int64
        package init(topic: Int64, hash: Int64) {
            self.topic = topic
            self.hash = hash
        }
    }

    package struct FlushPolicy: Sendable {
        /// Fold when the delta holds this many keys…
        package var maxEntries = 100_000
        /// …or when its oldest entry is this old.
        package var maxAge = Duration.seconds(2)
        package static let defaults = FlushPolicy()
    }

    private struct State {
        var delta: [Entry: Int64] = [:]
        var oldest: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    let policy: FlushPolicy

    package init(policy: FlushPolicy = .defaults) {
        self.policy = policy
    }

    /// Adds committed records (call after COMMIT, before anyone can learn of them).
    package func record(_ entries: [(Entry, Int64)]) {
        guard !entries.isEmpty else { return }
        state.withLock { s in
            for (entry, id) in entries { s.delta[entry] = id }
            if s.oldest == nil { s.oldest = .now }
        }
    }

    package func lookup(topic: Int64, hash: Int64) -> Int64? {
        state.withLock { $0.delta[Entry(topic: topic, hash: hash)] }
    }

    var shouldFlush: Bool {
        state.withLock { s in
            guard let oldest = s.oldest else { return false }
            return s.delta.count >= policy.maxEntries || ContinuousClock.now - oldest >= policy.maxAge
        }
    }

    var isEmpty: Bool { state.withLock { $0.delta.isEmpty } }

    /// The delta, sorted as the table's primary key so the fold walks the B-tree in order.
    func snapshot() -> [(Entry, Int64)] {
        state.withLock { s in
            s.delta.map { ($0.key, $0.value) }.sorted { ($0.0.topic, $0.0.hash) < ($1.0.topic, $1.0.hash) }
        }
    }

    /// Drops what a committed fold wrote, keeping entries that moved on meanwhile.
    func flushed(_ entries: [(Entry, Int64)]) {
        state.withLock { s in
            for (entry, id) in entries where s.delta[entry] == id { s.delta[entry] = nil }
            s.oldest = s.delta.isEmpty ? nil : .now
        }
    }
}
