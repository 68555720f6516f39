#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import EventLog
import Synchronization

/// Makes the log durable behind the writer: the writer commits with `synchronous=NORMAL`
/// (COMMIT only writes the WAL into the page cache) and this syncer fdatasyncs the WAL
/// on its own thread, then publishes the durable ends to the catalog and resumes the
/// `.durable` appends the fsync covered.
///
/// Pipelined group commit: the writer never waits for the disk, and while one fsync runs
/// the commits after it pile up for the next, so the fsyncs per second stay about constant
/// whatever the load. Why one fsync of our own descriptor is enough: fsync flushes the
/// file, not the descriptor; SQLite only appends frames to the WAL, or rewrites it from
/// the start after a checkpoint that synced the WAL and the database first; and WAL
/// recovery keeps the longest prefix of valid, checksum-chained commits. So every commit
/// that returned before an fsync began is durable when it ends, and a crash before then
/// takes back a suffix of the log, never a record from the middle.
///
/// A failed fsync stops the log (PostgreSQL's lesson: after a failed fsync the page cache
/// may have dropped the data, and a retry that succeeds proves nothing): every later
/// append throws, and the durable ends stay where they were.
package final class WALSyncer: Sendable {
    typealias Waiter = (continuation: UnsafeContinuation<[RecordAddress], any Error>, addresses: [RecordAddress])

    private struct State: @unchecked Sendable {
        // @unchecked: continuations are Sendable; the tuple array is only touched under the lock.
        var ends: [String: [Int64]] = [:]
        var waiting: [Waiter] = []
        var dirty = false
        var syncing = false
        var failure: LogError?
        var idle: [UnsafeContinuation<Void, Never>] = []
        var syncs = 0
        /// Tests hold the syncer to see the log between a commit and its fsync.
        var held = false
    }

    private let fd: Int32
    private let walPath: String
    private let catalog: LogCatalog
    private let queue = DispatchQueue(label: "EngineSQLite.log.syncer", qos: .userInitiated)
    private let state = Mutex(State())
    /// Least time between the starts of two fsyncs.
    private let minimumInterval: Duration
    private let lastStart = Mutex(ContinuousClock.now)

    /// Opens the WAL of the database at `path` (it exists once the database was opened in
    /// WAL mode and read) and makes everything in it durable now: a process killed before
    /// its last fsync may have left committed frames in the page cache.
    init(databasePath path: String, catalog: LogCatalog, minimumInterval: Duration) throws {
        self.minimumInterval = minimumInterval
        walPath = path + "-wal"
        self.catalog = catalog
        fd = open(walPath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw LogError(.io, "cannot open \(walPath): \(String(cString: strerror(errno)))") }
        for file in [walPath, path, Self.directory(of: path)] {
            let handle = file == walPath ? fd : open(file, O_RDONLY | O_CLOEXEC)
            defer { if handle != fd && handle >= 0 { Glibc.close(handle) } }
            guard handle >= 0, fsync(handle) == 0 else {
                let message = String(cString: strerror(errno))
                Glibc.close(fd)
                throw LogError(.io, "cannot sync \(file) at open: \(message)")
            }
        }
    }

    private static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Set once an fsync failed: the log accepts no more appends.
    package var failure: LogError? { state.withLock { $0.failure } }

    /// fsyncs done since open (for tests and benchmarks).
    package var syncCount: Int { state.withLock { $0.syncs } }

    /// After a commit (on the writer queue): `ends` are every topic's committed ends,
    /// `waiting` the `.durable` appends of that commit.
    func committed(ends: [String: [Int64]], waiting: [Waiter]) {
        let (start, failure) = state.withLock { s -> (Bool, LogError?) in
            if let failure = s.failure { return (false, failure) }
            s.ends = ends
            s.waiting.append(contentsOf: waiting)
            s.dirty = true
            if s.syncing || s.held { return (false, nil) }
            s.syncing = true
            return (true, nil)
        }
        if let failure {
            for w in waiting { w.continuation.resume(throwing: failure) }
        } else if start {
            queue.async { self.syncLoop() }
        }
    }

    /// Returns once every commit noted so far is durable (or the syncer failed).
    func flush() async {
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            let idle = state.withLock { s -> Bool in
                if !s.syncing { return true }
                s.idle.append(c)
                return false
            }
            if idle { c.resume() }
        }
    }

    /// Stops the log as a failed fsync does, without one (for tests).
    package func fail(_ error: LogError) {
        let waiting = state.withLock { s -> [Waiter] in
            s.failure = error
            defer { s.waiting = [] }
            return s.waiting
        }
        for w in waiting { w.continuation.resume(throwing: error) }
    }

    /// Stops starting fsyncs until `release()` (tests: the window between a commit and
    /// its fsync, which is otherwise a few hundred microseconds).
    package func hold() {
        state.withLock { $0.held = true }
    }

    package func release() {
        let start = state.withLock { s -> Bool in
            s.held = false
            guard s.dirty, !s.syncing else { return false }
            s.syncing = true
            return true
        }
        if start { queue.async { self.syncLoop() } }
    }

    /// Closes the WAL descriptor; call after `flush()`, once nothing commits any more.
    func close() {
        _ = Glibc.close(fd)
    }

    private func syncLoop() {
        while true {
            // Paced: an fsync costs CPU in the kernel whatever it carries, and a few hundred
            // microseconds more of collecting commits cost little next to its own latency.
            if minimumInterval > .zero {
                let wait = lastStart.withLock { $0 } + minimumInterval - .now
                if wait > .zero { usleep(UInt32(wait.components.attoseconds / 1_000_000_000_000)) }
            }
            lastStart.withLock { $0 = .now }
            // Stopping is decided under the same lock `committed` checks `syncing` under, so
            // a commit noted meanwhile either lands in this batch or starts a new loop.
            let next = state.withLock { s -> (ends: [String: [Int64]], waiting: [Waiter])? in
                guard s.dirty, s.failure == nil, !s.held else {
                    s.syncing = false
                    return nil
                }
                s.dirty = false
                defer { s.waiting = [] }
                return (s.ends, s.waiting)
            }
            guard let batch = next else { break }
            if fdatasync(fd) == 0 {
                state.withLock { $0.syncs += 1 }
                catalog.publishDurable(batch.ends)
                for w in batch.waiting { w.continuation.resume(returning: w.addresses) }
            } else {
                let error = LogError(.io, "fdatasync of \(walPath) failed: \(String(cString: strerror(errno))); the log stops")
                let failed = state.withLock { s -> [Waiter] in
                    s.failure = error
                    defer { s.waiting = [] }
                    return s.waiting
                }
                for w in batch.waiting + failed { w.continuation.resume(throwing: error) }
            }
        }
        let idle = state.withLock { s -> [UnsafeContinuation<Void, Never>] in
            if s.syncing { return [] }  // a new loop was started and will answer them
            defer { s.idle = [] }
            return s.idle
        }
        for c in idle { c.resume() }
    }
}
