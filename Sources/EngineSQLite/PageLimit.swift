import Logging

/// Tests: a cap on a database's pages (SQLite's `max_page_count`), past which an insert
/// fails with SQLITE_FULL as on a full disk. `limit` is asked before every write
/// transaction, so a test fills the "disk" and later gives the space back, without root
/// or a small file system; nil from it: SQLite's own limit.
///
/// - Important: only used on its database's writer queue; `@unchecked Sendable` rests on that.
package final class PageLimit: @unchecked Sendable {
    private let limit: @Sendable () -> Int?
    private var applied: Int?
    private var sqliteDefault: Int?

    package init(_ limit: @escaping @Sendable () -> Int?) {
        self.limit = limit
    }

    /// Sets the writer connection's `max_page_count` when `limit` changed (SQLite keeps it
    /// per connection, not in the file).
    func apply(to conn: SQLiteConnection, logger: Logger) {
        do {
            if sqliteDefault == nil { sqliteDefault = Int(try conn.scalarText("PRAGMA max_page_count") ?? "") }
            // SQLite never sets it below the pages in use: 1 caps the file at its size.
            guard let wanted = limit() ?? sqliteDefault, wanted != applied else { return }
            try conn.execute("PRAGMA max_page_count = \(wanted)")
            applied = wanted
        } catch {
            logger.warning("cannot set max_page_count", metadata: ["path": "\(conn.path)", "error": "\(error)"])
        }
    }
}
