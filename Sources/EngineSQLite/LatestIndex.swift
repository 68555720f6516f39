import Synchronization

/// The newest record id per (topic, key hash) that is committed but not yet in the
/// `latest` table: a bounded in-memory delta, folded into the table now and then.
///
/// Why not update `latest` in every group commit: keys (order ids) are random, so each
/// keyed record dirties a different page of the table, and every dirty page is written
/// and fsync'd at commit — about 4 KiB of WAL per record, which on this disk capped keyed
/// appends far below unkeyed ones. Folding a snapshot of the delta in key order, a slice
/// per group commit, writes each page of the table about once per fold.
///
/// Crash safety: the transaction with a fold's last slice records the highest record id
/// the fold covers (`meta.latest_flushed_id`); at open, records after it are folded in
/// again (bounded by `FlushPolicy`, so opening stays fast). Readers see the delta first,
/// then the table; an entry leaves the delta only after the slice that wrote it committed,
/// and only if no newer record for its key arrived meanwhile.
package final class LatestIndex: Sendable {
    package struct Entry: Sendable, Hashable {
        var topic: Int64
        var hash: Int64
        package init(topic: Int64, hash: Int64) {
            self.topic = topic
            self.hash = hash
        }
    }

    /// When the writer starts a fold (which then proceeds a chunk per group commit).
    package struct FlushPolicy: Sendable {
        /// When the delta holds this many keys (bounds its memory: ~50 bytes a key)…
        package var maxEntries = 100_000
        /// …or this many keyed records were committed since the last fold's watermark
        /// (bounds what an open after a crash refolds)…
        package var maxRecordsSinceWatermark = 200_000
        /// …or this long after the last fold ended.
        package var maxAge = Duration.seconds(2)
        /// Entries written per group commit while a fold runs. Sorted, so one slice covers
        /// a narrow range of the table and dirties few pages.
        package var chunk = 4_096
        package init() {}
        package static let defaults = FlushPolicy()
    }

    private struct State {
        var delta: [Entry: Int64] = [:]
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
        }
    }

    package func lookup(topic: Int64, hash: Int64) -> Int64? {
        state.withLock { $0.delta[Entry(topic: topic, hash: hash)] }
    }

    var count: Int { state.withLock { $0.delta.count } }

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
        }
    }
}
