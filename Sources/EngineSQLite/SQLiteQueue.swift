import Dispatch
import Synchronization

/// A `SQLiteConnection` confined to its own serial `DispatchQueue`.
///
/// `sqlite3_step` blocks (disk reads, fsync), so it must never run on Swift's cooperative
/// pool (STYLE §7): async callers hop onto the queue with a continuation and are resumed
/// when the work is done. The queue is also what makes the non-thread-safe connection
/// safe to share.
///
/// - Important: the connection is only touched inside blocks running on `queue`;
///   `@unchecked Sendable` rests on that.
package final class SQLiteQueue: @unchecked Sendable {
    package let queue: DispatchQueue
    private let connection: SQLiteConnection
    private let checkpointer: WALCheckpointer?

    package init(label: String, path: String, options: SQLiteConnection.Options = .defaults) throws {
        self.queue = DispatchQueue(label: label, qos: .userInitiated)
        let connection = try SQLiteConnection(path: path, options: options)
        if options.checkpointInBackground && !options.readOnly {
            do {
                let checkpointer = try WALCheckpointer(
                    label: label + ".checkpointer", path: path, threshold: options.walAutocheckpointPages)
                try connection.onCommit { conn, pages in checkpointer.committed(walPages: pages, writer: conn) }
                self.checkpointer = checkpointer
            } catch {
                connection.close()
                throw error
            }
        } else {
            checkpointer = nil
        }
        self.connection = connection
    }

    /// Opens the connection off the cooperative pool (opening reads the file, and a WAL
    /// left by a crash is recovered right then).
    package static func open(label: String, path: String, options: SQLiteConnection.Options = .defaults) async throws -> SQLiteQueue {
        try await offPool { try SQLiteQueue(label: label, path: path, options: options) }
    }

    /// Runs `body` on the queue and returns its result to the awaiting task.
    package func run<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        try await withUnsafeThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try body(self.connection) })
            }
        }
    }

    /// Schedules `body` without waiting (the writer's drain loop).
    package func async(_ body: @escaping @Sendable (SQLiteConnection) -> Void) {
        queue.async { body(self.connection) }
    }

    /// Schedules `body` after a delay (the checkpointer's idle check).
    package func async(afterMilliseconds delay: Int, _ body: @escaping @Sendable (SQLiteConnection) -> Void) {
        queue.asyncAfter(deadline: .now() + .milliseconds(delay)) { body(self.connection) }
    }

    /// Checkpoints run so far in the background (tests).
    package var backgroundCheckpoints: Int { checkpointer?.count ?? 0 }

    /// The checkpointer has copied every frame committed so far (tests).
    package var walCopied: Bool { checkpointer?.settled ?? false }

    /// Times the WAL started from its beginning again, with a checkpointer (tests).
    package var walRestarts: Int { checkpointer?.restarts ?? 0 }

    /// Closes the connection after the work already queued.
    package func close() async {
        // The checkpointer first: the last connection to close checkpoints everything.
        await checkpointer?.close()
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            queue.async {
                self.connection.close()
                continuation.resume()
            }
        }
    }
}

/// A few read connections, handed out round-robin, so readers neither wait for the writer
/// (WAL lets them read the last committed state) nor queue behind one another.
package final class SQLiteReadPool: Sendable {
    private let lanes: [SQLiteQueue]
    private let next = Atomic<Int>(0)

    package init(label: String, path: String, count: Int, options: SQLiteConnection.Options = .defaults) throws {
        var readOptions = options
        readOptions.readOnly = true
        lanes = try (0..<max(1, count)).map { i in
            try SQLiteQueue(label: "\(label).read\(i)", path: path, options: readOptions)
        }
    }

    package static func open(label: String, path: String, count: Int, options: SQLiteConnection.Options = .defaults) async throws -> SQLiteReadPool {
        try await offPool { try SQLiteReadPool(label: label, path: path, count: count, options: options) }
    }

    package func run<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return try await lanes[i % lanes.count].run(body)
    }

    package func close() async {
        for lane in lanes { await lane.close() }
    }
}

/// Runs blocking work (file-system calls, opening databases) on a Dispatch thread
/// rather than the cooperative pool.
package func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withUnsafeThrowingContinuation { continuation in
        DispatchQueue.global(qos: .userInitiated).async {
            continuation.resume(with: Result { try body() })
        }
    }
}
