import EventLog
import Foundation
import Logging
import Synchronization

/// The embedded `LogEngine`: topics, partitions, offsets and consumer-group checkpoints in
/// one SQLite database (WAL mode).
///
/// - One writer (a serial queue with its own connection) does every write. Concurrent
///   `append` calls queue up while it is busy and are written together, one transaction
///   per batch (group commit); each call still succeeds or fails alone.
/// - The writer does not wait for the disk: a `WALSyncer` fsyncs the WAL on its own
///   thread, one fsync covering every commit before it, and only then are `.durable`
///   appends resumed and their records shown to plain readers.
/// - Reads go to a small pool of read-only connections; in WAL mode they see the last
///   committed state and never block the writer.
/// - The committed end offsets live in memory (`LogCatalog`), loaded at open by one index
///   probe per partition, so opening a big log costs no scan, and readers wait on them
///   instead of polling the database.
/// - `latestRecord` looks the key's hash up in a small in-memory delta, then in the
///   `latest` table, then reads the record by id (`LatestIndex`, `KeyHash`).
///
/// - Important: call `close()` before dropping the engine; it finishes the queued appends
///   and closes the files. An `append` in flight is not cancellable: once queued it is
///   written, and its caller resumed, whether or not the task was cancelled.
public final class SQLiteLogEngine: LogEngine {
    public struct Options: Sendable {
        /// Read-only connections for readers, consumers and look-ups.
        public var readConnections: Int = 3
        /// Upper bound on the records of one group-commit transaction; more waits for the
        /// next one (bounds the writer's memory and the latency of one commit).
        public var maxRecordsPerCommit: Int = 20_000
        /// Topics whose newest record per key is tracked, for `latestRecord`; nil: every
        /// topic.
        ///
        /// Tracking costs a SipHash per appended record, an entry in a bounded in-memory
        /// delta and a periodic fold into the `latest` table (`LatestIndex`). Topics only
        /// ever read in order (commands and events, integration events) can skip it.
        /// Decided when a topic is created and kept with it; `latestRecord` on a topic
        /// without it throws `.unavailable`.
        public var keyIndexedTopics: Set<String>?
        /// Recent records kept in memory per partition for readers close behind the
        /// writer (`TailCache`); 0 turns the cache off.
        public var tailRecordsPerPartition = 256
        /// …and at most this many bytes of them (estimated, memos included), fewer
        /// records when they are large (orders with long routes or many commands).
        public var tailBytesPerPartition = 2 << 20
        /// Page size of a log database created by this engine (an existing one keeps its
        /// own). Records are appended, not updated in place, so bigger pages mean fewer
        /// pages per record batch: fewer WAL frames (one write each), B-tree splits and
        /// checkpoint copies per command.
        public var pageSize = 16 << 10
        /// Least time between the starts of two fsyncs of the log (each waits for the
        /// commits of that time to share it).
        public var minimumSyncInterval: Duration = .milliseconds(1)
        /// When the in-memory delta of `latest` is folded into the table (tests shrink it).
        package var latestFlushPolicy = LatestIndex.FlushPolicy.defaults
        /// Tests: the most pages the database may have, asked before every group commit
        /// and space probe (see `PageLimit`).
        package var pageLimit: (@Sendable () -> Int?)?
        public init(keyIndexedTopics: Set<String>? = nil) {
            self.keyIndexedTopics = keyIndexedTopics
        }
        public static let defaults = Options()
    }

    package let path: String
    package let logger: Logger
    package let options: Options
    package let catalog: LogCatalog
    package let writer: SQLiteQueue
    package let readers: SQLiteReadPool
    /// Owned by the writer queue (see `WriterState`).
    package let writerState: WriterState
    package let queue = Mutex(PendingQueue())
    /// Hashes keys for the `latest` table, with this database's secret.
    package let keyHash: KeyHash
    /// Newest record per key, committed but not yet folded into `latest`.
    package let latest: LatestIndex
    /// Resumes the callers of committed appends, off the writer's critical path.
    package let completions = DispatchQueue(label: "EngineSQLite.log.completions", qos: .userInitiated)
    /// Makes commits durable and says when (see `WALSyncer`).
    package let syncer: WALSyncer
    /// The newest records of each partition (see `TailCache`).
    package let tailCache: TailCache
    /// The disk error of the last group commit, until one commits (see `writeFailure`).
    package let diskHealth: DiskHealth
    /// Tests: `Options.pageLimit`. Only used on the writer queue.
    let pageLimit: PageLimit?
    /// group + "\0" + topic → the member that owns all its partitions.
    private let owners = Mutex<[String: UInt64]>([:])
    private let nextMember = Atomic<UInt64>(1)

    private init(path: String, logger: Logger, options: Options, catalog: LogCatalog, writer: SQLiteQueue,
                 readers: SQLiteReadPool, writerState: WriterState, keyHash: KeyHash, syncer: WALSyncer) {
        self.keyHash = keyHash
        self.syncer = syncer
        self.tailCache = TailCache(capacity: options.tailRecordsPerPartition, maxBytes: options.tailBytesPerPartition)
        self.latest = LatestIndex(policy: options.latestFlushPolicy)
        self.diskHealth = DiskHealth(path: path)
        self.pageLimit = options.pageLimit.map(PageLimit.init)
        self.path = path
        self.logger = logger
        self.options = options
        self.catalog = catalog
        self.writer = writer
        self.readers = readers
        self.writerState = writerState
    }

    /// Opens (creating if needed) the log database at `path`.
    public static func open(path: String, logger: Logger, options: Options = .defaults) async throws -> SQLiteLogEngine {
        let started = ContinuousClock.now
        do {
            // The writer gets the big cache: random key-index inserts read index pages, and
            // a miss there stalls every append in the batch.
            let writer = try await SQLiteQueue.open(
                label: "EngineSQLite.log.writer", path: path, options: .init(cacheKiB: 64 * 1024, synchronousFull: false, checkpointInBackground: true, pageSize: options.pageSize))
            let catalog = LogCatalog()
            let writerState = WriterState()
            let (topics, keyHash) = try await writer.run { conn in
                let keyHash = try Self.migrate(conn, keyIndexedTopics: options.keyIndexedTopics)
                let topics = try Self.loadTopics(conn)
                writerState.lastCommittedID = try Self.refoldLatest(conn, topics: topics.map(\.0), keyHash: keyHash)
                for (info, ends) in topics {
                    catalog.add(info, ends: ends)
                    writerState.topics[info.name] = info
                    writerState.ends[info.name] = ends
                }
                return (topics, keyHash)
            }
            // After the writer has opened (and, after a crash, recovered) the WAL.
            let syncer: WALSyncer
            do {
                syncer = try await offPool {
                    try WALSyncer(databasePath: path, catalog: catalog, minimumInterval: options.minimumSyncInterval)
                }
            } catch {
                await writer.close()
                throw error
            }
            let readers = try await SQLiteReadPool.open(
                label: "EngineSQLite.log", path: path, count: options.readConnections)
            let engine = SQLiteLogEngine(
                path: path, logger: logger, options: options, catalog: catalog, writer: writer,
                readers: readers, writerState: writerState, keyHash: keyHash, syncer: syncer)
            logger.info(
                "opened log",
                metadata: [
                    "path": "\(path)", "topics": "\(topics.count)",
                    "records": "\(topics.reduce(Int64(0)) { $0 + $1.1.reduce(0, +) })",
                    "sqlite": "\(sqliteLibraryVersion)", "elapsed": "\(ContinuousClock.now - started)",
                ])
            return engine
        } catch {
            throw error.asLogError
        }
    }

    // MARK: Schema

    /// Format version in `PRAGMA user_version`; a newer file is refused, not guessed at.
    static let schemaVersion = 1

    /// Creates or checks the schema; returns the key-hash secret. `keyIndexedTopics`: see
    /// `Options`, for the topics of a file from before the choice existed.
    private static func migrate(_ conn: SQLiteConnection, keyIndexedTopics: Set<String>?) throws -> KeyHash {
        let version = Int(try conn.scalarText("PRAGMA user_version") ?? "0") ?? 0
        guard version <= schemaVersion else {
            throw LogError(.corrupt, "\(conn.path) has log format \(version), newer than this build's \(schemaVersion)")
        }
        let beforeLatestIndex = try isFormat1BeforeLatestIndex(conn, version: version)
        if version < schemaVersion || beforeLatestIndex {
            try conn.transaction {
                if beforeLatestIndex {
                    // The tables the statements below create where missing give the old file
                    // what it lacks, and refoldLatest then fills `latest` from every record
                    // (latest_flushed_id 0). Its topics are key-indexed as a new file's would
                    // be, and its index of every record's key goes: nothing reads it now.
                    try conn.execute(
                        """
                        ALTER TABLE topics ADD COLUMN key_indexed INTEGER NOT NULL DEFAULT 1;
                        DROP INDEX IF EXISTS records_key;
                        """)
                    if let keyIndexedTopics {
                        let names = try conn.withStatement("SELECT name FROM topics") { stmt in
                            var names: [String] = []
                            while try stmt.step() { names.append(stmt.text(0)) }
                            return names
                        }
                        for name in names where !keyIndexedTopics.contains(name) {
                            try conn.withStatement("UPDATE topics SET key_indexed = 0 WHERE name = ?") { stmt in
                                stmt.bind(1, name)
                                try stmt.run()
                            }
                        }
                    }
                }
                // records.id: the global append order (an alias of the rowid, so VACUUM
                // keeps it); records_position makes offsets unique per partition once more.
                // latest: for key-tracked topics, the id of the newest record per hash of
                // its key (see KeyHash).
                try conn.execute(
                    """
                    CREATE TABLE IF NOT EXISTS meta(
                        name TEXT PRIMARY KEY,
                        value INTEGER NOT NULL) WITHOUT ROWID;
                    CREATE TABLE IF NOT EXISTS topics(
                        id INTEGER PRIMARY KEY,
                        name TEXT NOT NULL UNIQUE,
                        partitions INTEGER NOT NULL CHECK (partitions > 0),
                        key_indexed INTEGER NOT NULL DEFAULT 1);
                    CREATE TABLE IF NOT EXISTS records(
                        id INTEGER PRIMARY KEY,
                        topic INTEGER NOT NULL,
                        part INTEGER NOT NULL,
                        off INTEGER NOT NULL,
                        key TEXT NOT NULL,
                        value BLOB NOT NULL,
                        headers TEXT,
                        ts INTEGER NOT NULL);
                    CREATE UNIQUE INDEX IF NOT EXISTS records_position ON records(topic, part, off);
                    CREATE TABLE IF NOT EXISTS latest(
                        topic INTEGER NOT NULL,
                        hash INTEGER NOT NULL,
                        id INTEGER NOT NULL,
                        PRIMARY KEY (topic, hash)) WITHOUT ROWID;
                    CREATE TABLE IF NOT EXISTS group_offsets(
                        grp TEXT NOT NULL,
                        topic INTEGER NOT NULL,
                        part INTEGER NOT NULL,
                        off INTEGER NOT NULL,
                        PRIMARY KEY (grp, topic, part)) WITHOUT ROWID;
                    PRAGMA user_version = \(schemaVersion);
                    """)
                try conn.execute("INSERT OR IGNORE INTO meta(name, value) VALUES ('latest_flushed_id', 0)")
                let secret = KeyHash.random().secret
                for (name, value) in [("key_hash_k0", secret.0), ("key_hash_k1", secret.1)] {
                    try conn.withStatement("INSERT OR IGNORE INTO meta(name, value) VALUES (?, ?)") { stmt in
                        stmt.bind(1, name)
                        stmt.bind(2, Int64(bitPattern: value))
                        try stmt.run()
                    }
                }
            }
        }
        func secret(_ name: String) throws -> UInt64 {
            try conn.withStatement("SELECT value FROM meta WHERE name = ?") { stmt in
                stmt.bind(1, name)
                guard try stmt.step() else { throw LogError(.corrupt, "\(conn.path): no \(name) in meta") }
                return UInt64(bitPattern: stmt.int64(0))
            }
        }
        return KeyHash(k0: try secret("key_hash_k0"), k1: try secret("key_hash_k1"))
    }

    /// Whether the file is format 1 as written before the newest-record-per-key index
    /// (builds up to 518c9f5): the same `user_version`, but no `meta` (hence no key-hash
    /// secret), no `latest` and no `topics.key_indexed`, so opening it as format 1 failed
    /// with "no such table: meta" and the server would not start on its data.
    private static func isFormat1BeforeLatestIndex(_ conn: SQLiteConnection, version: Int) throws -> Bool {
        guard version == 1 else { return false }
        return try conn.scalarText("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'") == nil
    }

    /// Folds into `latest` the keyed records committed after the last fold (those whose
    /// delta was lost with the process). Bounded by `LatestIndex.FlushPolicy`: a range
    /// scan of the newest records by id, not of the log. Returns the last record id.
    private static func refoldLatest(_ conn: SQLiteConnection, topics: [TopicInfo], keyHash: KeyHash) throws -> Int64 {
        let keyed = Set(topics.filter(\.keyIndexed).map(\.id))
        let lastID = try conn.withStatement("SELECT max(id) FROM records") { stmt in
            try stmt.step() && !stmt.isNull(0) ? stmt.int64(0) : 0
        }
        let flushed = try conn.withStatement("SELECT value FROM meta WHERE name = 'latest_flushed_id'") { stmt in
            try stmt.step() ? stmt.int64(0) : 0
        }
        guard lastID > flushed else { return lastID }
        try conn.transaction {
            var newest: [LatestIndex.Entry: Int64] = [:]
            try conn.withStatement("SELECT id, topic, key FROM records WHERE id > ? ORDER BY id") { stmt in
                stmt.bind(1, flushed)
                while try stmt.step() {
                    let topic = stmt.int64(1)
                    guard keyed.contains(topic) else { continue }
                    newest[LatestIndex.Entry(topic: topic, hash: keyHash(stmt.text(2)))] = stmt.int64(0)
                }
            }
            try conn.withStatement(upsertLatest) { upsert in
                for (entry, id) in newest.sorted(by: { ($0.key.topic, $0.key.hash) < ($1.key.topic, $1.key.hash) }) {
                    upsert.bind(1, entry.topic)
                    upsert.bind(2, entry.hash)
                    upsert.bind(3, id)
                    try upsert.run()
                }
            }
            try conn.withStatement("UPDATE meta SET value = ? WHERE name = 'latest_flushed_id'") { stmt in
                stmt.bind(1, lastID)
                try stmt.run()
            }
        }
        return lastID
    }

    /// Topics with their end offsets: one index probe per partition (the last entry of
    /// records_position), never a scan, so opening costs the same at 1 M or 1 G records.
    private static func loadTopics(_ conn: SQLiteConnection) throws -> [(TopicInfo, [Int64])] {
        let topics = try conn.withStatement("SELECT id, name, partitions, key_indexed FROM topics ORDER BY id") { stmt in
            var topics: [TopicInfo] = []
            while try stmt.step() {
                topics.append(
                    TopicInfo(name: stmt.text(1), id: stmt.int64(0), partitions: stmt.int(2), keyIndexed: stmt.int(3) != 0))
            }
            return topics
        }
        return try topics.map { topic in
            let ends = try (0..<topic.partitions).map { partition in
                try conn.withStatement(
                    "SELECT off FROM records WHERE topic = ? AND part = ? ORDER BY off DESC LIMIT 1"
                ) { stmt -> Int64 in
                    stmt.bind(1, topic.id)
                    stmt.bind(2, partition)
                    return try stmt.step() ? stmt.int64(0) + 1 : 0
                }
            }
            return (topic, ends)
        }
    }

    // MARK: LogEngine

    public func createTopic(_ topic: String, partitions: Int) async throws {
        guard partitions > 0 else {
            // LogError has no invalid-argument code; unknownTopic is the nearest.
            throw LogError(.unknownTopic, "topic '\(topic)' needs at least one partition, got \(partitions)")
        }
        if catalog.isClosed { throw LogError(.closed, "the log engine is closed") }
        // An existing topic keeps its partitions; the caller compares (`Topics.provision`
        // refuses a mismatch).
        if catalog.topic(topic) != nil { return }
        let state = writerState
        let catalog = catalog
        let keyIndexed = options.keyIndexedTopics?.contains(topic) ?? true
        do {
            try await writer.run { conn in
                // On the writer queue: serialized with the group commits, which read
                // `state.topics`.
                if state.topics[topic] != nil { return }
                let info = try conn.transaction { () throws -> TopicInfo in
                    try conn.withStatement(
                        "INSERT OR IGNORE INTO topics(name, partitions, key_indexed) VALUES (?, ?, ?)"
                    ) { stmt in
                        stmt.bind(1, topic)
                        stmt.bind(2, partitions)
                        stmt.bind(3, keyIndexed ? 1 : 0)
                        try stmt.run()
                    }
                    return try conn.withStatement("SELECT id, partitions, key_indexed FROM topics WHERE name = ?") { stmt in
                        stmt.bind(1, topic)
                        guard try stmt.step() else { throw LogError(.corrupt, "topic '\(topic)' vanished after insert") }
                        return TopicInfo(name: topic, id: stmt.int64(0), partitions: stmt.int(1), keyIndexed: stmt.int(2) != 0)
                    }
                }
                let ends = [Int64](repeating: 0, count: info.partitions)
                state.topics[topic] = info
                state.ends[topic] = ends
                catalog.add(info, ends: ends)
            }
            try await syncCommitted()
        } catch {
            throw error.asLogError
        }
        logger.info("created topic", metadata: ["topic": "\(topic)", "partitions": "\(partitions)"])
    }

    public func partitionCount(_ topic: String) async throws -> Int {
        try catalog.require(topic).partitions
    }

    public func endOffsets(_ topic: String) async throws -> [Int64] {
        _ = try catalog.require(topic)
        guard let ends = catalog.ends(topic) else { throw LogError.unknownTopic(topic) }
        return ends
    }

    public func durableEndOffsets(_ topic: String) async throws -> [Int64] {
        guard let ends = catalog.ends(topic, durableOnly: true) else { throw LogError.unknownTopic(topic) }
        return ends
    }

    @discardableResult
    public func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress] {
        if let failure = syncer.failure { throw failure }
        let prepared = try prepare(records, commit: commit)
        if prepared.records.isEmpty && prepared.commit == nil { return [] }
        return try await withUnsafeThrowingContinuation { continuation in
            enqueue(
                PendingAppend(
                    records: prepared.records, commit: prepared.commit, durable: durability == .durable,
                    continuation: continuation))
        }
    }

    public func openReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        let info = try catalog.require(topic)
        try Self.checkPositions(offsets, for: info)
        return SQLiteLogReader(engine: self, topic: info, positions: offsets)
    }

    public func joinGroup(_ group: String, topic: String) async throws -> any GroupConsumer {
        let info = try catalog.require(topic)
        let member = nextMember.wrappingAdd(1, ordering: .relaxed).oldValue
        return SQLiteGroupConsumer(engine: self, group: group, topic: info, member: member)
    }

    public func committedOffsets(group: String, topic: String) async throws -> [Int64] {
        let info = try catalog.require(topic)
        do {
            return try await readers.run { conn in try Self.committedOffsets(conn, group: group, topic: info) }
        } catch {
            throw error.asLogError
        }
    }

    public func latestRecord(topic: String, key: String) async throws -> LogRecord? {
        try await latestRecords(topic: topic, keys: [key])[key]
    }

    /// Derivations and readers served from the tail cache get the appender's memos;
    /// records older than the tail are read back without.
    public var keepsMemos: Bool { true }

    /// The newest record per key, for a batch of keys in one hop to a reader and one read
    /// transaction. Per key: the in-memory delta (recent keys), else one probe of
    /// `latest`; then the record by its id.
    public func latestRecords(topic: String, keys: Set<String>) async throws -> [String: LogRecord] {
        guard !keys.isEmpty else { return [:] }
        let info = try catalog.require(topic)
        guard info.keyIndexed else {
            throw LogError(.unavailable, "topic '\(topic)' is not key-indexed (SQLiteLogEngine.Options.keyIndexedTopics)")
        }
        // The delta is read before the database: an entry leaves it only after the fold
        // that wrote it into `latest` committed, so a miss here is found there.
        let lookups = keys.map { key in
            let hash = keyHash(key)
            return (key: key, hash: hash, recentID: latest.lookup(topic: info.id, hash: hash))
        }
        do {
            let (found, collisions) = try await readers.run { conn -> ([String: LogRecord], [String]) in
                try conn.transaction(.deferred) {
                    var found: [String: LogRecord] = [:]
                    var collisions: [String] = []
                    for lookup in lookups {
                        let (record, collided) = try Self.newest(
                            conn, topic: info, key: lookup.key, hash: lookup.hash, recentID: lookup.recentID)
                        if let record { found[lookup.key] = record }
                        if collided { collisions.append(lookup.key) }
                    }
                    return (found, collisions)
                }
            }
            for key in collisions {
                logger.warning("key hash collision in latest; answered by a scan", metadata: ["topic": "\(topic)", "key": "\(key)"])
            }
            return found
        } catch {
            throw error.asLogError
        }
    }

    /// The newest record of `key`, and whether its hash collided with another key's.
    static func newest(
        _ conn: SQLiteConnection, topic info: TopicInfo, key: String, hash: Int64, recentID: Int64?
    ) throws -> (LogRecord?, Bool) {
        if let recentID {
            let found = try conn.withStatement(
                "SELECT part, off, key, value, headers, ts FROM records WHERE id = ?"
            ) { stmt -> (LogRecord?, Bool)? in
                stmt.bind(1, recentID)
                guard try stmt.step() else { return nil }
                guard stmt.text(2) == key else { return (nil, true) }
                return (try record(stmt, topic: info.name, key: key), false)
            }
            guard let found else { throw LogError(.corrupt, "record \(recentID) of '\(info.name)' vanished") }
            return found.1 ? try scanForKey(conn, topic: info, key: key) : found
        }
        let found = try conn.withStatement(
            """
            SELECT r.part, r.off, r.key, r.value, r.headers, r.ts FROM latest l JOIN records r ON r.id = l.id
            WHERE l.topic = ? AND l.hash = ?
            """
        ) { stmt -> (LogRecord?, Bool) in
            stmt.bind(1, info.id)
            stmt.bind(2, hash)
            guard try stmt.step() else { return (nil, false) }
            guard stmt.text(2) == key else { return (nil, true) }
            return (try record(stmt, topic: info.name, key: key), false)
        }
        return found.1 ? try scanForKey(conn, topic: info, key: key) : found
    }

    /// Another key with the same hash holds the slot: find ours the slow way, newest
    /// first (correct; practically never happens, see KeyHash).
    private static func scanForKey(_ conn: SQLiteConnection, topic: TopicInfo, key: String) throws -> (LogRecord?, Bool) {
        try conn.withStatement(
            """
            SELECT part, off, key, value, headers, ts FROM records
            WHERE topic = ? AND key = ? ORDER BY id DESC LIMIT 1
            """
        ) { stmt in
            stmt.bind(1, topic.id)
            stmt.bind(2, key)
            return (try stmt.step() ? try record(stmt, topic: topic.name, key: key) : nil, true)
        }
    }

    /// A record from the columns part, off, key, value, headers, ts.
    private static func record(_ stmt: SQLiteStatement, topic: String, key: String) throws -> LogRecord {
        LogRecord(
            topic: topic, partition: stmt.int(0), offset: stmt.int64(1), key: key, value: stmt.blob(3),
            headers: try headers(stmt, column: 4), timestamp: stmt.int64(5))
    }

    /// Finishes the queued appends, wakes every waiting reader (they throw `.closed`) and
    /// closes the database. Later calls throw `LogError.closed`.
    public func close() async {
        let alreadyClosed = queue.withLock { q in
            defer { q.closed = true }
            return q.closed
        }
        guard !alreadyClosed else { return }
        // The writer drains whatever was queued before `closed` was set; wait until it is
        // idle (a drain may be scheduled but not yet started, hence the loop).
        while queue.withLock({ $0.draining || !$0.pending.isEmpty }) {
            _ = try? await writer.run { _ in }
        }
        await syncer.flush()
        // Fold what is left, so the next open has nothing to redo. (Closing the last
        // connection checkpoints, which syncs the WAL and the database.)
        _ = try? await writer.run { conn in self.foldLatest(conn) }
        catalog.close()
        await readers.close()
        await writer.close()
        syncer.close()
        logger.info("closed log", metadata: ["path": "\(path)"])
    }

    /// Writer statistics since open: commits, records, time in inserts and in COMMIT.
    package struct WriterStatistics: Sendable {
        package var commits = 0
        package var records = 0
        package var insertTime = Duration.zero
        package var commitTime = Duration.zero
        package var folds = 0
        package var foldedEntries = 0
        package var foldTime = Duration.zero
    }

    /// Writer statistics since open (for benchmarks).
    package func writerStatistics() async -> WriterStatistics {
        let state = writerState
        return (try? await writer.run { _ in
            WriterStatistics(
                commits: state.commits, records: state.committedRecords, insertTime: state.insertTime,
                commitTime: state.commitTime, folds: state.folds, foldedEntries: state.foldedEntries, foldTime: state.foldTime)
        }) ?? WriterStatistics()
    }

    // MARK: Reading (shared by readers and group consumers)

    static func checkPositions(_ offsets: [Int64], for topic: TopicInfo) throws {
        guard offsets.count == topic.partitions else {
            throw LogError(.unknownTopic, "topic '\(topic.name)' has \(topic.partitions) partitions, got \(offsets.count) offsets")
        }
        if let bad = offsets.first(where: { $0 < 0 }) {
            throw LogError(.unknownTopic, "negative offset \(bad) for topic '\(topic.name)'")
        }
    }

    /// Up to `maxRecords` committed (or, with `durableOnly`, durable) records past
    /// `positions`, waiting up to `timeout` for the first. Per partition in offset order;
    /// partitions share `maxRecords` fairly, so a long backlog on one cannot starve the
    /// others.
    func fetch(
        _ topic: TopicInfo, from positions: [Int64], durableOnly: Bool, maxRecords: Int, timeout: Duration
    ) async throws -> [LogRecord] {
        let deadline = ContinuousClock.now + timeout
        while true {
            if catalog.isClosed { throw LogError(.closed, "the log engine is closed") }
            try Task.checkCancellation()
            let ends = catalog.ends(topic.name, durableOnly: durableOnly) ?? []
            let plan = Self.plan(positions: positions, ends: ends, maxRecords: max(1, maxRecords))
            if !plan.isEmpty {
                var cached: [LogRecord] = []
                var rest: [ReadRange] = []
                for range in plan {
                    if let records = tailCache.records(topic: topic.name, partition: range.partition, from: range.from, count: range.count) {
                        cached.append(contentsOf: records)
                    } else {
                        rest.append(range)
                    }
                }
                if rest.isEmpty { return cached }
                let uncached = rest
                do {
                    return try await cached + readers.run { conn in try Self.read(conn, topic: topic, plan: uncached) }
                } catch {
                    throw error.asLogError
                }
            }
            if ContinuousClock.now >= deadline { return [] }
            await catalog.waitForRecords(topic: topic.name, beyond: positions, durableOnly: durableOnly, until: deadline)
        }
    }

    struct ReadRange: Sendable {
        var partition: Int
        var from: Int64
        var count: Int
    }

    static func plan(positions: [Int64], ends: [Int64], maxRecords: Int) -> [ReadRange] {
        var available: [(partition: Int, from: Int64, count: Int64)] = []
        for (p, end) in ends.enumerated() where p < positions.count && end > positions[p] {
            available.append((p, positions[p], end - positions[p]))
        }
        guard !available.isEmpty else { return [] }
        // First an equal share each, then what is left to whoever still has records.
        let share = Int64(max(1, maxRecords / available.count))
        var left = Int64(maxRecords)
        var take = available.map { entry -> Int64 in
            let n = min(entry.count, share, left)
            left -= n
            return n
        }
        for i in available.indices where left > 0 {
            let more = min(available[i].count - take[i], left)
            take[i] += more
            left -= more
        }
        return available.indices.compactMap { i in
            take[i] > 0 ? ReadRange(partition: available[i].partition, from: available[i].from, count: Int(take[i])) : nil
        }
    }

    private static func read(_ conn: SQLiteConnection, topic: TopicInfo, plan: [ReadRange]) throws -> [LogRecord] {
        // One read transaction: one snapshot, one WAL lookup, for all partitions.
        try conn.transaction(.deferred) {
            var records: [LogRecord] = []
            records.reserveCapacity(plan.reduce(0) { $0 + $1.count })
            for range in plan {
                try conn.withStatement(
                    """
                    SELECT off, key, value, headers, ts FROM records
                    WHERE topic = ? AND part = ? AND off >= ? ORDER BY off LIMIT ?
                    """
                ) { stmt in
                    stmt.bind(1, topic.id)
                    stmt.bind(2, range.partition)
                    stmt.bind(3, range.from)
                    stmt.bind(4, range.count)
                    var expected = range.from
                    while try stmt.step() {
                        let offset = stmt.int64(0)
                        guard offset == expected else {
                            throw LogError(.corrupt, "\(topic.name)[\(range.partition)]: offset \(expected) missing, found \(offset)")
                        }
                        expected += 1
                        records.append(
                            LogRecord(
                                topic: topic.name, partition: range.partition, offset: offset, key: stmt.text(1),
                                value: stmt.blob(2), headers: try headers(stmt, column: 3), timestamp: stmt.int64(4)))
                    }
                }
            }
            return records
        }
    }

    static func headers(_ stmt: SQLiteStatement, column: Int32) throws -> [String: String] {
        guard let text = stmt.optionalText(column) else { return [:] }
        guard let headers = HeadersCodec.decode(text) else {
            throw LogError(.corrupt, "malformed headers: \(text.prefix(80))")
        }
        return headers
    }

    static func committedOffsets(_ conn: SQLiteConnection, group: String, topic: TopicInfo) throws -> [Int64] {
        try conn.withStatement("SELECT part, off FROM group_offsets WHERE grp = ? AND topic = ?") { stmt in
            stmt.bind(1, group)
            stmt.bind(2, topic.id)
            var offsets = [Int64](repeating: 0, count: topic.partitions)
            while try stmt.step() {
                let p = stmt.int(0)
                if p >= 0 && p < offsets.count { offsets[p] = stmt.int64(1) }
            }
            return offsets
        }
    }

    // MARK: Group membership

    /// Takes all partitions of the group's topic for `member` if nobody holds them.
    func claim(group: String, topic: String, member: UInt64) -> Bool {
        owners.withLock { owners in
            let key = group + "\u{0}" + topic
            if let owner = owners[key] { return owner == member }
            owners[key] = member
            return true
        }
    }

    /// Gives the group to the engine itself (member 0 is never handed out): its consumers
    /// are never assigned again (`startDerivations`).
    func takeOver(group: String, topic: String) {
        owners.withLock { $0[group + "\u{0}" + topic] = 0 }
    }

    func release(group: String, topic: String, member: UInt64) {
        owners.withLock { owners in
            let key = group + "\u{0}" + topic
            if owners[key] == member { owners[key] = nil }
        }
    }
}
