import Logging
import Synchronization

/// Checkpoints a WAL database mostly from a connection and a thread of its own, so its
/// writer stops for a sliver of each checkpoint instead of all of it.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses the threshold: the
/// writer copies thousands of pages into the database and fsyncs it before its next
/// batch, a stall of 15–40 ms several times a second under load here, and a tenth of
/// the log writer's CPU. Here the writer's WAL hook schedules the copy on this connection instead
/// (PASSIVE: it waits for no lock, so the writer and the readers go on meanwhile). The
/// writer cannot be left out altogether: SQLite starts the WAL from the beginning again
/// only when a write transaction begins with every frame copied, and a writer under load
/// commits during any copy. So after the copy, the writer's next commit copies the
/// frames committed meanwhile itself (a few commits' worth), and its next transaction
/// restarts the WAL, as after SQLite's own checkpoint. (A reader still on the WAL can
/// prevent that restart either way; the WAL then grows until a later round.)
///
/// Durability is unchanged: both connections use `synchronous=NORMAL`, so a checkpoint
/// syncs the WAL before copying and the database after, as the writer's own did (which is
/// what `WALSyncer`'s reasoning rests on).
package final class WALCheckpointer: Sendable {
    private let lane: SQLiteQueue
    private let threshold: Int
    private let state = Mutex(State())
    private let logger: Logger

    private struct State {
        var copying = false
        /// The background copy is done; the writer copies the rest at its next commit.
        var writerToFinish = false
        var closed = false
        var count = 0
        /// The WAL's size when the last round ended: everything below it is copied.
        var copiedTo = 0
    }

    init(label: String, path: String, threshold: Int) throws {
        lane = try SQLiteQueue(label: label, path: path, options: .init(cacheKiB: 1024, synchronousFull: false))
        self.threshold = max(1, threshold)
        logger = Logger(label: label)
    }

    /// Rounds finished so far.
    var count: Int { state.withLock { $0.count } }

    /// From the writer's WAL hook, on the writer's thread, after every commit.
    func committed(walPages pages: Int, writer: SQLiteConnection) {
        enum Step { case none, copy, finish }
        let step = state.withLock { s -> Step in
            if s.writerToFinish {
                s.writerToFinish = false
                return .finish
            }
            // Every `threshold` pages of new frames (or of a WAL started again), as
            // SQLite's automatic checkpoint: a page rewritten at every commit (an index's
            // last leaf) is copied once per round, so rounds back to back would copy it
            // over and over.
            let grown = pages < s.copiedTo ? pages : pages - s.copiedTo
            guard !s.copying, !s.closed, grown >= threshold else { return .none }
            s.copying = true
            return .copy
        }
        switch step {
        case .none: break
        case .copy: lane.async { conn in self.copy(conn) }
        case .finish:
            let copiedTo = (try? writer.checkpoint())?.walPages ?? 0
            state.withLock { s in
                s.copying = false
                s.copiedTo = copiedTo
                s.count += 1
            }
        }
    }

    private func copy(_ conn: SQLiteConnection) {
        do {
            try conn.checkpoint()
            state.withLock { $0.writerToFinish = true }
        } catch {
            // An I/O error, or BUSY from a lock held past the busy timeout: the frames
            // stay in the WAL, and a later commit starts another round.
            logger.warning("checkpoint failed", metadata: ["path": "\(conn.path)", "error": "\(error)"])
            state.withLock { $0.copying = false }
        }
    }

    /// Lets a running copy finish and closes the connection.
    func close() async {
        state.withLock { $0.closed = true }
        await lane.close()
    }
}
