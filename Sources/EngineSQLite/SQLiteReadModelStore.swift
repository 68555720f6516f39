import EventLog
import Foundation
import Logging
import OrderDomain
import Synchronization

/// The embedded `ReadModelStore`: current state, history and outcomes in their own SQLite
/// database (`readmodel.sqlite` under `EmbeddedEngine`), separate from the log so the
/// projector's commits never queue behind the log's group commits: each file has its own
/// writer lock and its own fsyncs.
///
/// Views are stored as JSON (`ReadModelCodec`: the events in the log's DETAILS form; an
/// order's state is folded from them on read), encoded on the caller's task before the
/// write so the one writer thread only does SQL. An outcome is stored as the id of the
/// order whose view holds its event (`ReadModelCodec.outcome(of:in:)` derives it on read),
/// not as a copy of the event and the history (a row as big as the view, per command).
/// The checkpoint is its token.
/// Concurrent `apply` calls are group-committed (see "Group commit" below).
///
/// - Important: call `close()` before dropping the store.
public final class SQLiteReadModelStore: ReadModelStore {
    package let path: String
    private let logger: Logger
    private let writer: SQLiteQueue
    private let readers: SQLiteReadPool
    /// The next placement sequence. Only touched on the writer queue.
    private let sequence: Sequence
    private let queue = Mutex(ApplyQueue())
    /// Answers most "no outcome yet" checks without a read (see `OutcomeFilter`).
    private let outcomeFilter = OutcomeFilter()
    private let outcomeReadCount = Atomic<Int>(0)
    /// The file was written in format 1, whose outcomes stay in `outcomes_v1` (see `migrate`).
    private let hasFormat1Outcomes: Bool
    /// The disk error of the last group commit, until one commits (see `writeFailure`).
    private let diskHealth: DiskHealth
    /// Tests: a cap on the file's pages (see `PageLimit`). Only used on the writer queue.
    private let pageLimit: PageLimit?

    private final class Sequence: @unchecked Sendable {
        var next: Int64 = 1
    }

    private init(
        path: String, logger: Logger, writer: SQLiteQueue, readers: SQLiteReadPool, sequence: Sequence, hasFormat1Outcomes: Bool,
        pageLimit: PageLimit?
    ) {
        self.path = path
        self.logger = logger
        self.writer = writer
        self.readers = readers
        self.sequence = sequence
        self.hasFormat1Outcomes = hasFormat1Outcomes
        diskHealth = DiskHealth(path: path)
        self.pageLimit = pageLimit
    }

    public static func open(path: String, logger: Logger) async throws -> SQLiteReadModelStore {
        try await open(path: path, logger: logger, pageLimit: nil)
    }

    /// `pageLimit`: tests cap the file's pages (see `PageLimit`).
    package static func open(path: String, logger: Logger, pageLimit: (@Sendable () -> Int?)?) async throws -> SQLiteReadModelStore {
        do {
            // synchronous=NORMAL: the read model is rebuilt from the log, which the projector
            // reads durable records only from; a power failure may take back its last
            // applies (consistently: each carries its checkpoint), and the projector redoes
            // them from the checkpoint that survived.
            let writer = try await SQLiteQueue.open(
                label: "EngineSQLite.readmodel.writer", path: path, options: .init(synchronousFull: false, checkpointInBackground: true))
            let sequence = Sequence()
            let (next, hasFormat1Outcomes) = try await writer.run { conn -> (Int64, Bool) in
                try migrate(conn)
                // max(seq) is one probe of the UNIQUE index on seq, not a scan.
                let next = try conn.withStatement("SELECT max(seq) FROM orders") { stmt in
                    try stmt.step() && !stmt.isNull(0) ? stmt.int64(0) + 1 : 1
                }
                sequence.next = next
                let format1 = try conn.scalarText("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'outcomes_v1'")
                return (next, format1 != nil)
            }
            let readers = try await SQLiteReadPool.open(label: "EngineSQLite.readmodel", path: path, count: 2)
            logger.info("opened read model", metadata: ["path": "\(path)", "orders": "\(next - 1)"])
            let store = SQLiteReadModelStore(
                path: path, logger: logger, writer: writer, readers: readers, sequence: sequence,
                hasFormat1Outcomes: hasFormat1Outcomes, pageLimit: pageLimit.map(PageLimit.init))
            Task { await store.loadOutcomeFilter() }
            return store
        } catch {
            throw error.asLogError
        }
    }

    /// 2: outcomes point at their order's view instead of holding a copy of it.
    static let schemaVersion = 2

    private static func migrate(_ conn: SQLiteConnection) throws {
        let version = Int(try conn.scalarText("PRAGMA user_version") ?? "0") ?? 0
        guard version <= schemaVersion else {
            throw LogError(.corrupt, "\(conn.path) has read-model format \(version), newer than this build's \(schemaVersion)")
        }
        guard version < schemaVersion else { return }
        try conn.transaction {
            if version == 1 {
                // Format 1 kept every outcome whole. They stay where they are, renamed (not
                // copied: a million of them are gigabytes), and are looked up there after
                // the new table.
                try conn.execute(
                    """
                    ALTER TABLE outcomes RENAME TO outcomes_v1;
                    CREATE TABLE outcomes(
                        command_id TEXT PRIMARY KEY,
                        order_id TEXT NOT NULL,
                        outcome_json TEXT) WITHOUT ROWID;
                    PRAGMA user_version = \(schemaVersion);
                    """)
                return
            }
            // seq: placement order, set the first time a view has an order and kept after
            // (COALESCE in the upsert). status is NULL while the order does not exist.
            try conn.execute(
                """
                CREATE TABLE IF NOT EXISTS orders(
                    order_id TEXT PRIMARY KEY,
                    seq INTEGER UNIQUE,
                    status TEXT,
                    events_json TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS orders_status ON orders(status, seq);
                CREATE TABLE IF NOT EXISTS outcomes(
                    command_id TEXT PRIMARY KEY,
                    order_id TEXT NOT NULL,
                    outcome_json TEXT) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS meta(
                    name TEXT PRIMARY KEY,
                    value TEXT NOT NULL) WITHOUT ROWID;
                PRAGMA user_version = \(schemaVersion);
                """)
        }
    }

    /// Finishes queued updates and closes the files; later calls throw `.closed`.
    public func close() async {
        let alreadyClosed = queue.withLock { q in
            defer { q.closed = true }
            return q.closed
        }
        guard !alreadyClosed else { return }
        while queue.withLock({ $0.draining || !$0.pending.isEmpty }) {
            _ = try? await writer.run { _ in }
        }
        await readers.close()
        await writer.close()
        logger.info("closed read model", metadata: ["path": "\(path)"])
    }

    // MARK: ReadModelStore

    private struct EncodedView: Sendable {
        var orderId: String
        var status: String?
        var events: String
    }

    private struct EncodedOutcome: Sendable {
        var commandId: String
        var orderId: String
        /// Only for an outcome whose event is not in its order's view in the same update
        /// (no projector makes one): then the outcome is kept whole.
        var json: String?
    }

    private static func corrupt(_ error: any Error) -> LogError {
        LogError(.corrupt, "undecodable row in the read model: \(error)")
    }

    private static func decodeView(_ text: String) throws -> OrderView {
        do { return try ReadModelCodec.decodeView(Array(text.utf8)) } catch { throw corrupt(error) }
    }

    public func apply(_ update: ReadModelUpdate) async throws {
        // Encoding is CPU work: done here, on the caller's task, in parallel with other
        // callers; the writer only binds and steps.
        let views = update.views.map { view in
            EncodedView(
                orderId: view.orderId, status: view.order?.status.rawValue,
                events: String(decoding: ReadModelCodec.encode(view), as: UTF8.self))
        }
        let histories = Dictionary(update.views.map { ($0.orderId, $0.events) }, uniquingKeysWith: { $1 })
        let outcomes = update.outcomes.map { outcome in
            var history = histories[outcome.orderId] ?? []
            guard !history.contains(where: { $0.event.commandId == outcome.commandId }) else {
                return EncodedOutcome(commandId: outcome.commandId, orderId: outcome.orderId)
            }
            history.append(ProjectedEvent(event: outcome.event, position: outcome.position))
            return EncodedOutcome(
                commandId: outcome.commandId, orderId: outcome.orderId,
                json: String(decoding: ReadModelCodec.encode(outcome, history: history), as: UTF8.self))
        }
        let checkpoint = update.checkpoint.token
        // Before the write: the filter may say "maybe" too early, never "no" too late.
        outcomeFilter.insert(update.outcomes.lazy.map(\.commandId))
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            enqueue(PendingApply(views: views, outcomes: outcomes, checkpoint: checkpoint, continuation: continuation))
        }
    }

    // MARK: Group commit
    //
    // As in the log: concurrent `apply` calls queue while the writer is busy and are
    // written together, one transaction and one fsync, each call still all-or-nothing (a
    // call that fails is dropped and the rest written again). Calls are applied in queue
    // order, so the last one's checkpoint is the one stored. A single projector applying
    // one update at a time gets one fsync per update: it should put a whole page of
    // records into one update.

    private struct PendingApply: Sendable {
        var views: [EncodedView]
        var outcomes: [EncodedOutcome]
        var checkpoint: String
        var continuation: UnsafeContinuation<Void, any Error>
    }

    private struct ApplyQueue: Sendable {
        var pending: [PendingApply] = []
        var draining = false
        var closed = false
    }

    private func enqueue(_ call: PendingApply) {
        enum Action { case refuse, queued, startDrain }
        let action = queue.withLock { q -> Action in
            if q.closed { return .refuse }
            q.pending.append(call)
            if q.draining { return .queued }
            q.draining = true
            return .startDrain
        }
        switch action {
        case .refuse: call.continuation.resume(throwing: LogError(.closed, "the read model is closed"))
        case .queued: break
        case .startDrain: writer.async { conn in self.drain(conn) }
        }
    }

    /// Runs on the writer queue until nothing is pending.
    private func drain(_ conn: SQLiteConnection) {
        while true {
            let batch = queue.withLock { q -> [PendingApply] in
                if q.pending.isEmpty { q.draining = false }
                defer { q.pending = [] }
                return q.pending
            }
            if batch.isEmpty { return }
            write(batch, conn)
        }
    }

    private func write(_ batch: [PendingApply], _ conn: SQLiteConnection) {
        pageLimit?.apply(to: conn, logger: logger)
        var calls = batch
        while !calls.isEmpty {
            var next = sequence.next
            do {
                try conn.begin(.immediate)
            } catch {
                diskHealth.failed(error)
                for call in calls { call.continuation.resume(throwing: error.asLogError) }
                return
            }
            var failed: (index: Int, error: any Error)?
            for (i, call) in calls.enumerated() {
                do {
                    try write(call, conn, next: &next)
                } catch {
                    failed = (i, error)
                    break
                }
            }
            if let failed {
                conn.rollback()
                diskHealth.failed(failed.error)
                logger.warning("read-model update failed; retrying its batch without it", metadata: ["error": "\(failed.error)"])
                calls[failed.index].continuation.resume(throwing: failed.error.asLogError)
                calls.remove(at: failed.index)
                continue
            }
            do {
                try conn.commit()
            } catch {
                conn.rollback()
                diskHealth.failed(error)
                for call in calls { call.continuation.resume(throwing: error.asLogError) }
                return
            }
            diskHealth.succeeded()
            // Only after COMMIT: a rolled-back batch must not use up sequence numbers
            // (harmless for the order, but it keeps cursors dense and repeatable).
            sequence.next = next
            for call in calls { call.continuation.resume() }
            return
        }
    }

    private func write(_ call: PendingApply, _ conn: SQLiteConnection, next: inout Int64) throws {
        try conn.withStatement(
            """
            INSERT INTO orders(order_id, seq, status, events_json) VALUES (?, ?, ?, ?)
            ON CONFLICT (order_id) DO UPDATE SET
                seq = coalesce(orders.seq, excluded.seq), status = excluded.status,
                events_json = excluded.events_json
            RETURNING seq
            """
        ) { upsert in
            for view in call.views {
                upsert.bind(1, view.orderId)
                if view.status != nil { upsert.bind(2, next) } else { upsert.bindNull(2) }
                upsert.bind(3, view.status)
                upsert.bind(4, view.events)
                // The row comes back with its seq: ours when this was its first placement,
                // in which case the sequence moves on.
                if try upsert.step(), !upsert.isNull(0), upsert.int64(0) == next, view.status != nil {
                    next += 1
                }
                upsert.rewind()
            }
        }
        try conn.withStatement("INSERT OR IGNORE INTO outcomes(command_id, order_id, outcome_json) VALUES (?, ?, ?)") { insert in
            for outcome in call.outcomes {
                insert.bind(1, outcome.commandId)
                insert.bind(2, outcome.orderId)
                insert.bind(3, outcome.json)
                try insert.run()
            }
        }
        try conn.withStatement(
            "INSERT INTO meta(name, value) VALUES ('checkpoint', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        ) { stmt in
            stmt.bind(1, call.checkpoint)
            try stmt.run()
        }
    }

    /// The disk error of the last group commit while none has committed since. No probe of
    /// its own, unlike the log's: the projector redoes a failed update from its checkpoint
    /// (retrying with a backoff of at most 5 s), so a real write learns when the space is back.
    public func writeFailure() async -> LogError? { diskHealth.failure }

    public func checkpoint() async throws -> LogPosition? {
        let text = try await read { conn in
            try conn.withStatement("SELECT value FROM meta WHERE name = 'checkpoint'") { stmt in
                try stmt.step() ? stmt.text(0) : nil
            }
        }
        return try text.map { text in
            guard let position = LogPosition(token: text) else { throw LogError(.corrupt, "unreadable checkpoint '\(text)'") }
            return position
        }
    }

    public func view(orderId: String) async throws -> OrderView? {
        let text = try await read { conn -> String? in
            try conn.withStatement("SELECT events_json FROM orders WHERE order_id = ?") { stmt in
                stmt.bind(1, orderId)
                return try stmt.step() ? stmt.text(0) : nil
            }
        }
        return try text.map(Self.decodeView)
    }

    public func views(orderIds: Set<String>) async throws -> [String: OrderView] {
        guard !orderIds.isEmpty else { return [:] }
        let ids = Array(orderIds)
        let rows = try await read { conn -> [(String, String)] in
            try conn.withStatement("SELECT events_json FROM orders WHERE order_id = ?") { stmt in
                var rows: [(String, String)] = []
                for id in ids {
                    stmt.bind(1, id)
                    if try stmt.step() { rows.append((id, stmt.text(0))) }
                    stmt.rewind()
                }
                return rows
            }
        }
        var out: [String: OrderView] = [:]
        for (id, text) in rows { out[id] = try Self.decodeView(text) }
        return out
    }

    public func outcome(commandId: String) async throws -> CommandOutcome? {
        guard outcomeFilter.mayContain(commandId) else { return nil }
        outcomeReadCount.add(1, ordering: .relaxed)
        let row = try await read { [hasFormat1Outcomes] conn -> (whole: String?, view: String?)? in
            let row = try conn.withStatement(
                """
                SELECT c.outcome_json, o.events_json FROM outcomes c LEFT JOIN orders o ON o.order_id = c.order_id
                WHERE c.command_id = ?
                """
            ) { stmt -> (whole: String?, view: String?)? in
                stmt.bind(1, commandId)
                guard try stmt.step() else { return nil }
                return (stmt.isNull(0) ? nil : stmt.text(0), stmt.isNull(1) ? nil : stmt.text(1))
            }
            guard row == nil, hasFormat1Outcomes else { return row }
            return try conn.withStatement("SELECT outcome_json FROM outcomes_v1 WHERE command_id = ?") { stmt in
                stmt.bind(1, commandId)
                return try stmt.step() ? (stmt.text(0), nil) : nil
            }
        }
        guard let row else { return nil }
        if let whole = row.whole {
            do { return try ReadModelCodec.decodeOutcome(Array(whole.utf8)) } catch { throw Self.corrupt(error) }
        }
        // Written in the same transaction as the view holding its event.
        guard let text = row.view, let outcome = ReadModelCodec.outcome(of: commandId, in: try Self.decodeView(text)) else {
            throw LogError(.corrupt, "the read model has command \(commandId) but not the event it made")
        }
        return outcome
    }

    public func listOrders(status: OrderStatus?, after cursor: Int64, limit: Int) async throws -> OrderPage {
        guard limit > 0 else { return OrderPage(orders: [], cursors: [], nextCursor: nil) }
        // One row more than asked tells whether another page follows.
        let rows = try await read { conn -> [(seq: Int64, order: String)] in
            let sql =
                status == nil
                ? "SELECT seq, events_json FROM orders WHERE seq > ? AND status IS NOT NULL ORDER BY seq LIMIT ?"
                : "SELECT seq, events_json FROM orders WHERE status = ? AND seq > ? ORDER BY seq LIMIT ?"
            return try conn.withStatement(sql) { stmt in
                var i: Int32 = 1
                if let status {
                    stmt.bind(i, status.rawValue)
                    i += 1
                }
                stmt.bind(i, cursor)
                stmt.bind(i + 1, limit + 1)
                var rows: [(seq: Int64, order: String)] = []
                while try stmt.step() { rows.append((stmt.int64(0), stmt.text(1))) }
                return rows
            }
        }
        var orders: [Order] = []
        var cursors: [Int64] = []
        for row in rows.prefix(limit) {
            guard let order = try Self.decodeView(row.order).order else { continue }
            orders.append(order)
            cursors.append(row.seq)
        }
        return OrderPage(orders: orders, cursors: cursors, nextCursor: rows.count > limit ? rows[limit - 1].seq : nil)
    }

    /// Outcome look-ups that read the database (the filter could not say "no").
    package var outcomeReads: Int { outcomeReadCount.load(ordering: .relaxed) }

    /// True once the outcomes stored before this open are in the filter.
    package var outcomeFilterIsLoaded: Bool { outcomeFilter.isReady }

    /// Puts every stored command id into the filter, then lets it answer. On a connection
    /// of its own with a small page cache, closed after: the scan would otherwise fill the
    /// read pool's caches with pages nothing else reads (tens of MB at 1M commands).
    private func loadOutcomeFilter() async {
        let started = ContinuousClock.now
        let (path, filter) = (path, outcomeFilter)
        let tables = hasFormat1Outcomes ? ["outcomes", "outcomes_v1"] : ["outcomes"]
        do {
            let loaded = try await offPool { () -> Int in
                var options = SQLiteConnection.Options(cacheKiB: 256)
                options.readOnly = true
                let conn = try SQLiteConnection(path: path, options: options)
                defer { conn.close() }
                var loaded = 0
                for table in tables {
                    try conn.withStatement("SELECT command_id FROM \(table)") { stmt in
                        var ids: [String] = []
                        ids.reserveCapacity(4096)
                        while try stmt.step() {
                            ids.append(stmt.text(0))
                            if ids.count == 4096 {
                                filter.insert(ids)
                                loaded += ids.count
                                ids.removeAll(keepingCapacity: true)
                            }
                        }
                        filter.insert(ids)
                        loaded += ids.count
                    }
                }
                return loaded
            }
            filter.markReady()
            logger.debug("outcome filter loaded", metadata: ["outcomes": "\(loaded)", "elapsed": "\(ContinuousClock.now - started)"])
        } catch {
            // Unreadable (or the store closed and its files went): every check keeps
            // reading the database.
            let closed = queue.withLock { $0.closed }
            logger.log(
                level: closed ? .debug : .warning, "outcome filter not loaded; every outcome check reads the database",
                metadata: ["error": "\(error)"])
        }
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        if queue.withLock({ $0.closed }) { throw LogError(.closed, "the read model is closed") }
        do {
            return try await readers.run(body)
        } catch {
            throw error.asLogError
        }
    }
}
