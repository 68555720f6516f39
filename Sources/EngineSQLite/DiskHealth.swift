import EventLog
import Synchronization

/// What a database's writer learned of its disk from its last write: the disk error that
/// failed it (full, failing, read-only), until a write commits again. Set on the writer's
/// queue; read by health checks from any task (`LogEngine.writeFailure`).
package final class DiskHealth: Sendable {
    private struct State {
        var failure: LogError?
        var probing = false
        var lastProbe: ContinuousClock.Instant?
    }

    private let path: String
    private let state = Mutex(State())

    init(path: String) {
        self.path = path
    }

    /// The disk error of the last write, while no write has committed since.
    package var failure: LogError? { state.withLock { $0.failure } }

    /// After a write failed: remembered when the disk caused it. Any other error (a
    /// constraint, BUSY) says nothing of the disk and leaves the state as it was.
    /// Returns whether it was the disk's.
    @discardableResult
    func failed(_ error: any Error) -> Bool {
        guard let error = error as? SQLiteError, let problem = error.diskProblem else { return false }
        let failure = LogError(
            .io, "\(problem): \(path) (SQLite \(error.extendedCode): \(error.message))", file: error.file, line: error.line)
        state.withLock { $0.failure = failure }
        return true
    }

    /// After a write committed.
    func succeeded() {
        state.withLock { $0.failure = nil }
    }

    /// Whether a write of the caller's own may test the disk now: while failing, one at a
    /// time and at most one per `interval`. Call `probed()` after it.
    func admitProbe(every interval: Duration) -> Bool {
        state.withLock { s in
            guard s.failure != nil, !s.probing else { return false }
            if let last = s.lastProbe, ContinuousClock.now - last < interval { return false }
            s.probing = true
            s.lastProbe = .now
            return true
        }
    }

    func probed() {
        state.withLock { $0.probing = false }
    }
}
