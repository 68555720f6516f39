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
///
/// When the writer goes quiet, the checkpointer copies what is left itself (the frames
/// below the threshold, or those committed during the last round), so an idle database
/// holds everything in its main file and the WAL starts over at the next write.
package final class WALCheckpointer: Sendable {
    private let lane: SQLiteQueue
    private let threshold: Int
    private let idleDelay: Int
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
        /// Commits so far: an idle check copies only if none came since it was set.
        var commits = 0
        /// The WAL's size at the last commit, and how often it was smaller than before:
        /// the times the WAL started over.
        var lastPages = 0
        var restarts = 0
        var idleCheckPending = false
    }

    /// `idleMilliseconds`: how long without a commit before the rest is copied.
    init(label: String, path: String, threshold: Int, idleMilliseconds: Int = 200) throws {
        lane = try SQLiteQueue(label: label, path: path, options: .init(cacheKiB: 1024, synchronousFull: false))
        self.threshold = max(1, threshold)
        idleDelay = max(1, idleMilliseconds)
        logger = Logger(label: label)
    }

    /// Rounds finished so far.
    var count: Int { state.withLock { $0.count } }

    /// No round is running or pending, and the last one ended after the last commit:
    /// every frame is in the database (unless a reader held some back).
    var settled: Bool {
        state.withLock { s in !s.copying && !s.writerToFinish && s.copiedTo == s.lastPages && s.count > 0 }
    }

    /// Times the WAL was seen starting from its beginning again.
    var restarts: Int { state.withLock { $0.restarts } }

    /// From the writer's WAL hook, on the writer's thread, after every commit.
    func committed(walPages pages: Int, writer: SQLiteConnection) {
        enum Step { case none, copy, finish }
        let (step, idleCheckFrom) = state.withLock { s -> (Step, Int?) in
            s.commits += 1
            if pages < s.lastPages { s.restarts += 1 }
            s.lastPages = pages
            var idleCheckFrom: Int? = nil
            if !s.idleCheckPending && !s.closed {
                s.idleCheckPending = true
                idleCheckFrom = s.commits
            }
            if s.writerToFinish {
                s.writerToFinish = false
                return (.finish, idleCheckFrom)
            }
            // Every `threshold` pages of new frames (or of a WAL started again), as
            // SQLite's automatic checkpoint: a page rewritten at every commit (an index's
            // last leaf) is copied once per round, so rounds back to back would copy it
            // over and over.
            let grown = pages < s.copiedTo ? pages : pages - s.copiedTo
            guard !s.copying, !s.closed, grown >= threshold else { return (.none, idleCheckFrom) }
            s.copying = true
            return (.copy, idleCheckFrom)
        }
        if let idleCheckFrom { scheduleIdleCheck(after: idleCheckFrom) }
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

    /// Copies the rest once no commit has come for `idleDelay`; while commits go on, looks
    /// again (one timer at a time, whatever the rate of commits).
    private func scheduleIdleCheck(after commits: Int) {
        lane.async(afterMilliseconds: idleDelay) { conn in
            enum Next { case stop, wait(Int), copy }
            let next = self.state.withLock { s -> Next in
                if s.closed {
                    s.idleCheckPending = false
                    return .stop
                }
                // Commits came meanwhile, or a background copy is still running: not idle.
                if s.commits != commits || (s.copying && !s.writerToFinish) { return .wait(s.commits) }
                s.idleCheckPending = false
                // The writer is quiet: this finishes the round it would have finished.
                s.copying = true
                s.writerToFinish = false
                return .copy
            }
            switch next {
            case .stop: return
            case .wait(let seen): self.scheduleIdleCheck(after: seen)
            case .copy:
                var copied: Int?
                do {
                    // What it copied, not the WAL's size: a commit that lands during the
                    // copy adds frames it may not reach.
                    copied = try conn.checkpoint().copied
                } catch {
                    self.logger.warning("checkpoint failed", metadata: ["path": "\(conn.path)", "error": "\(error)"])
                }
                let again = self.state.withLock { s -> Int? in
                    s.copying = false
                    if let copied {
                        s.copiedTo = copied
                        s.count += 1
                    }
                    // Frames left (a commit during the copy, a reader holding some back, a
                    // failure): look again, unless a commit already asked for a look.
                    guard (copied ?? -1) < s.lastPages, !s.idleCheckPending, !s.closed else { return nil }
                    s.idleCheckPending = true
                    return s.commits
                }
                if let again { self.scheduleIdleCheck(after: again) }
            }
        }
    }

    /// Lets a running copy finish and closes the connection.
    func close() async {
        state.withLock { $0.closed = true }
        await lane.close()
    }
}
