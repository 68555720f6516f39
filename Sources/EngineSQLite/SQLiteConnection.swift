// The one file of this module that calls the SQLite C API (STYLE §3). Everything else
// talks to `SQLiteConnection` / `SQLiteStatement` and sees Swift types only.

import CSQLite
import EventLog

/// A failed SQLite call: the primary and extended result codes, SQLite's message and
/// where in our code it happened.
package struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The primary result code (`SQLITE_BUSY`, `SQLITE_IOERR`, …) as a plain integer, so
    /// callers never import CSQLite.
    package var code: Int32
    package var extendedCode: Int32
    package var message: String
    package var sql: String?
    package var file: String
    package var line: Int

    package init(code: Int32, extendedCode: Int32? = nil, message: String, sql: String? = nil,
                 file: String = #fileID, line: Int = #line) {
        self.code = code
        self.extendedCode = extendedCode ?? code
        self.message = message
        self.sql = sql
        self.file = file
        self.line = line
    }

    package var description: String {
        var text = "SQLite error \(code)/\(extendedCode): \(message)"
        if let sql { text += " [\(sql.prefix(120))]" }
        return text + " (\(file):\(line))"
    }

    /// A file that is not a database, or a damaged one: nothing a retry can fix.
    package var isCorruption: Bool { code == SQLITE_CORRUPT || code == SQLITE_NOTADB }
    /// Another connection holds a lock longer than the busy timeout.
    package var isBusy: Bool { code == SQLITE_BUSY || code == SQLITE_LOCKED }
    /// What the error says of the disk, when the disk caused it: no space left (also past
    /// `max_page_count`), an I/O error, or a file that can no longer be written (a file
    /// system remounted read-only after errors). nil for every other error.
    package var diskProblem: String? {
        switch code {
        case SQLITE_FULL: "the disk is full"
        case SQLITE_IOERR: "the disk fails"
        case SQLITE_READONLY: "the database cannot be written"
        default: nil
        }
    }

    /// How the error crosses the `LogEngine` protocol; the position stays the one where
    /// SQLite failed, which is the useful one when reading a log.
    package var logError: LogError {
        let kind: LogError.Code = isCorruption ? .corrupt : isBusy ? .unavailable : .io
        return LogError(kind, description, file: file, line: line)
    }
}

extension Error {
    /// Any error as a `LogError` (SQLite errors mapped, others wrapped as I/O).
    package var asLogError: LogError {
        if let e = self as? LogError { return e }
        if let e = self as? SQLiteError { return e.logError }
        return LogError(.io, "\(self)")
    }
}

/// SQLite's "copy this buffer now" destructor; the C macro is a cast Swift cannot import.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection and its prepared statements.
///
/// - Important: not thread-safe and not `Sendable`: a connection belongs to one serial
///   queue (`SQLiteQueue`) and is only touched there. It is opened with
///   `SQLITE_OPEN_NOMUTEX` for that reason: SQLite's own mutexes would only cost time.
package final class SQLiteConnection {
    package struct Options: Sendable {
        package var readOnly = false
        /// How long a statement waits for another connection's lock before `SQLITE_BUSY`.
        package var busyTimeoutMilliseconds: Int32 = 5_000
        /// Page cache size in KiB (SQLite's negative `cache_size`). Bounded: the OS page
        /// cache serves the rest.
        package var cacheKiB = 8 * 1024
        /// WAL pages before an automatic checkpoint (SQLite's default is 1000).
        package var walAutocheckpointPages = 4_000
        /// `synchronous=FULL` (the WAL fsync'd at every commit) when true; `NORMAL` (a
        /// commit only writes; the WAL is synced before checkpoints) when false, for a
        /// database whose durability comes from elsewhere: the log syncs its WAL itself
        /// (`WALSyncer`), the read model is rebuilt from the log.
        package var synchronousFull = true
        /// Checkpoints on a connection and thread of their own (`WALCheckpointer`, set up
        /// by `SQLiteQueue`) instead of inside the commit that crosses
        /// `walAutocheckpointPages`, where the writer would stop for the copy and the
        /// database's fsync.
        package var checkpointInBackground = false
        /// Page size in bytes of a database this connection creates (a power of two,
        /// 512…65536); nil: SQLite's default (4096). An existing file keeps its own: in WAL
        /// mode only a VACUUM could change it.
        package var pageSize: Int?
        package init(cacheKiB: Int = 8 * 1024, synchronousFull: Bool = true, checkpointInBackground: Bool = false, pageSize: Int? = nil) {
            self.cacheKiB = cacheKiB
            self.synchronousFull = synchronousFull
            self.checkpointInBackground = checkpointInBackground
            self.pageSize = pageSize
        }
        package static let defaults = Options()
    }

    private var db: OpaquePointer?
    private var statements: [String: SQLiteStatement] = [:]
    /// What `onCommit(walPages:)` installed; SQLite holds it unretained.
    private var walHook: WALHook?
    package let path: String

    /// Opens (creating unless read-only) a database in WAL mode, `synchronous=FULL` unless
    /// `options` say otherwise: in WAL mode FULL means the WAL is fsync'd at every commit,
    /// so a transaction is on disk before `commit()` returns.
    package init(path: String, options: Options = .defaults) throws {
        self.path = path
        var handle: OpaquePointer?
        let flags = (options.readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
            | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            // sqlite3_open_v2 hands back a handle even on failure (for the message); it
            // still has to be closed.
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw SQLiteError(code: rc & 0xff, extendedCode: rc, message: "cannot open \(path): \(message)")
        }
        db = handle
        sqlite3_extended_result_codes(handle, 1)
        sqlite3_busy_timeout(handle, options.busyTimeoutMilliseconds)
        do {
            if !options.readOnly, let pageSize = options.pageSize {
                // Before anything is written: on a new file it sets the size of every page to
                // come; on an existing one it is a no-op.
                try execute("PRAGMA page_size=\(pageSize)")
            }
            if !options.readOnly {
                // journal_mode answers with the mode in force; anything but "wal" means the
                // file system refused it, and the durability reasoning above would not hold.
                let mode = try scalarText("PRAGMA journal_mode=WAL")
                guard mode?.lowercased() == "wal" else {
                    throw SQLiteError(code: SQLITE_CANTOPEN, message: "WAL mode refused for \(path) (got \(mode ?? "nil"))")
                }
            }
            try execute(options.synchronousFull ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
            try execute("PRAGMA cache_size=-\(options.cacheKiB)")
            try execute("PRAGMA wal_autocheckpoint=\(options.walAutocheckpointPages)")
            try execute("PRAGMA foreign_keys=OFF")
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Finalizes the cached statements and closes the handle. Idempotent.
    package func close() {
        statements.removeAll()  // each statement finalizes itself in deinit
        if let db {
            if walHook != nil { sqlite3_wal_hook(db, nil, nil) }
            // close_v2 defers the close until any statement still alive is finalized,
            // instead of failing with SQLITE_BUSY.
            sqlite3_close_v2(db)
        }
        db = nil
    }

    private func handle(file: String = #fileID, line: Int = #line) throws -> OpaquePointer {
        guard let db else { throw SQLiteError(code: SQLITE_MISUSE, message: "connection to \(path) is closed", file: file, line: line) }
        return db
    }

    fileprivate func error(_ rc: Int32, sql: String?, file: String, line: Int) -> SQLiteError {
        let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "closed"
        return SQLiteError(code: rc & 0xff, extendedCode: rc, message: message, sql: sql, file: file, line: line)
    }

    /// Runs one or more statements without results (schema, pragmas, BEGIN/COMMIT).
    package func execute(_ sql: String, file: String = #fileID, line: Int = #line) throws {
        let db = try handle(file: file, line: line)
        var errmsg: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &errmsg)
        if rc != SQLITE_OK {
            let message = errmsg.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(errmsg)
            throw SQLiteError(code: rc & 0xff, extendedCode: rc, message: message, sql: sql, file: file, line: line)
        }
    }

    /// The first column of the first row as text, or nil (used for pragmas).
    package func scalarText(_ sql: String, file: String = #fileID, line: Int = #line) throws -> String? {
        try withStatement(sql, file: file, line: line) { stmt in
            try stmt.step() ? stmt.optionalText(0) : nil
        }
    }

    /// A prepared statement from the cache (prepared on first use). The statement is
    /// reset and its bindings cleared after `body`, even when it throws, so the cache
    /// never holds a statement mid-step (which would keep a read transaction open).
    package func withStatement<T>(
        _ sql: String, file: String = #fileID, line: Int = #line, _ body: (SQLiteStatement) throws -> T
    ) throws -> T {
        let stmt = try statement(sql, file: file, line: line)
        defer { stmt.reset() }
        return try body(stmt)
    }

    private func statement(_ sql: String, file: String, line: Int) throws -> SQLiteStatement {
        if let cached = statements[sql] { return cached }
        let db = try handle(file: file, line: line)
        var raw: OpaquePointer?
        // SQLITE_PREPARE_PERSISTENT: these statements live as long as the connection.
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &raw, nil)
        guard rc == SQLITE_OK, let raw else {
            throw error(rc, sql: sql, file: file, line: line)
        }
        let stmt = SQLiteStatement(raw, connection: self, sql: sql)
        statements[sql] = stmt
        return stmt
    }

    // MARK: Transactions

    package enum TransactionKind: String, Sendable {
        /// Takes the write lock at BEGIN, so a writer never fails half-way with BUSY.
        case immediate = "BEGIN IMMEDIATE"
        /// A read snapshot: every statement inside sees the same committed state.
        case deferred = "BEGIN DEFERRED"
    }

    package func begin(_ kind: TransactionKind = .immediate, file: String = #fileID, line: Int = #line) throws {
        try withStatement(kind.rawValue, file: file, line: line) { try $0.run() }
    }

    package func commit(file: String = #fileID, line: Int = #line) throws {
        try withStatement("COMMIT", file: file, line: line) { try $0.run() }
    }

    /// Rolls back if a transaction is open; never throws (used on error paths, where the
    /// first error is the one worth reporting).
    package func rollback() {
        guard let db, sqlite3_get_autocommit(db) == 0 else { return }
        _ = try? withStatement("ROLLBACK") { try $0.run() }
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    package func transaction<T>(
        _ kind: TransactionKind = .immediate, file: String = #fileID, line: Int = #line,
        _ body: () throws -> T
    ) throws -> T {
        try begin(kind, file: file, line: line)
        do {
            let result = try body()
            try commit(file: file, line: line)
            return result
        } catch {
            rollback()
            throw error
        }
    }

    // MARK: Checkpoints

    /// Calls `handler` with this connection and the number of pages in the WAL after
    /// every commit (from inside COMMIT, where it may checkpoint). This takes the place of
    /// SQLite's automatic checkpoint on this connection, which is itself a WAL hook.
    package func onCommit(walPages handler: @escaping (SQLiteConnection, Int) -> Void) throws {
        let db = try handle()
        let hook = WALHook(connection: self, handler: handler)
        walHook = hook
        sqlite3_wal_hook(
            db,
            { context, _, _, pages in
                let hook = Unmanaged<WALHook>.fromOpaque(context!).takeUnretainedValue()
                hook.handler(hook.connection, Int(pages))
                return SQLITE_OK
            }, Unmanaged.passUnretained(hook).toOpaque())
    }

    private final class WALHook {
        /// Unowned: the connection owns the hook.
        unowned let connection: SQLiteConnection
        let handler: (SQLiteConnection, Int) -> Void
        init(connection: SQLiteConnection, handler: @escaping (SQLiteConnection, Int) -> Void) {
            self.connection = connection
            self.handler = handler
        }
    }

    /// A PASSIVE checkpoint: copies into the database what no reader still needs, without
    /// waiting for any lock. Returns the WAL's size and how much of it is now copied, in
    /// pages.
    @discardableResult
    package func checkpoint(file: String = #fileID, line: Int = #line) throws -> (walPages: Int, copied: Int) {
        let db = try handle(file: file, line: line)
        var wal: Int32 = 0
        var copied: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, &wal, &copied)
        guard rc == SQLITE_OK else { throw error(rc, sql: "checkpoint", file: file, line: line) }
        return (Int(wal), Int(copied))
    }

    /// The rowid of the last row inserted through this connection.
    package var lastInsertRowID: Int64 {
        db.map { sqlite3_last_insert_rowid($0) } ?? 0
    }

}

/// A prepared statement owned by a `SQLiteConnection`'s cache. Parameters and columns are
/// numbered as in SQLite: parameters from 1, columns from 0.
package final class SQLiteStatement {
    private let stmt: OpaquePointer
    // Unowned: the connection's cache holds the statement, never the other way round.
    private unowned let connection: SQLiteConnection
    package let sql: String

    fileprivate init(_ stmt: OpaquePointer, connection: SQLiteConnection, sql: String) {
        self.stmt = stmt
        self.connection = connection
        self.sql = sql
    }

    deinit { sqlite3_finalize(stmt) }

    fileprivate func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    // MARK: Binding. A bind only fails for an index out of range or a value too big,
    // both programming errors here; the next step() reports them anyway.

    package func bind(_ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(stmt, index, value)
    }

    package func bind(_ index: Int32, _ value: Int) {
        sqlite3_bind_int64(stmt, index, Int64(value))
    }

    package func bind(_ index: Int32, _ value: String) {
        // The UTF-8 bytes in place, with their length: passing the String as a C string
        // made a NUL-terminated copy first (a malloc per bound text), which SQLite then
        // copied again.
        var value = value
        value.withUTF8 { bytes in
            guard let base = bytes.baseAddress, !bytes.isEmpty else {
                // A nil pointer would be stored as NULL, not as an empty text.
                _ = sqlite3_bind_text(stmt, index, "", 0, transient)
                return
            }
            base.withMemoryRebound(to: CChar.self, capacity: bytes.count) { text in
                _ = sqlite3_bind_text(stmt, index, text, Int32(bytes.count), transient)
            }
        }
    }

    package func bind(_ index: Int32, _ value: String?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    package func bind(_ index: Int32, _ value: [UInt8]) {
        value.withUnsafeBytes { bytes in
            // An empty buffer's base address may be nil, which SQLite would store as NULL
            // instead of an empty blob.
            if bytes.isEmpty {
                _ = sqlite3_bind_zeroblob(stmt, index, 0)
            } else {
                _ = sqlite3_bind_blob(stmt, index, bytes.baseAddress, Int32(bytes.count), transient)
            }
        }
    }

    package func bind(_ index: Int32, _ value: [UInt8]?) {
        if let value { bind(index, value) } else { bindNull(index) }
    }

    package func bindNull(_ index: Int32) {
        sqlite3_bind_null(stmt, index)
    }

    // MARK: Stepping

    /// Advances: true when a row is ready, false when done.
    package func step(file: String = #fileID, line: Int = #line) throws -> Bool {
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw connection.error(rc, sql: sql, file: file, line: line)
        }
    }

    /// Steps to completion, ignoring any rows (INSERT, UPDATE, BEGIN, …), then resets
    /// the statement (keeping its bindings) so a loop can bind and run it again.
    package func run(file: String = #fileID, line: Int = #line) throws {
        while try step(file: file, line: line) {}
        sqlite3_reset(stmt)
    }

    /// Rewinds a statement that returned rows, to run it again with new bindings.
    package func rewind() {
        sqlite3_reset(stmt)
    }

    // MARK: Columns

    package func isNull(_ column: Int32) -> Bool {
        sqlite3_column_type(stmt, column) == SQLITE_NULL
    }

    package func int64(_ column: Int32) -> Int64 {
        sqlite3_column_int64(stmt, column)
    }

    package func int(_ column: Int32) -> Int {
        Int(sqlite3_column_int64(stmt, column))
    }

    package func text(_ column: Int32) -> String {
        // Text first, then its length: column_bytes after column_text gives the UTF-8 size.
        guard let pointer = sqlite3_column_text(stmt, column) else { return "" }
        let count = Int(sqlite3_column_bytes(stmt, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    package func optionalText(_ column: Int32) -> String? {
        isNull(column) ? nil : text(column)
    }

    package func blob(_ column: Int32) -> [UInt8] {
        // Blob first, then its length (SQLite's documented order); a zero-length blob
        // comes back as a nil pointer.
        guard let pointer = sqlite3_column_blob(stmt, column) else { return [] }
        let count = Int(sqlite3_column_bytes(stmt, column))
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}

/// The SQLite library's version, for start-up logs.
package var sqliteLibraryVersion: String { String(cString: sqlite3_libversion()) }
