import Synchronization

/// The projector's store writes: batches, once published to callers, queue here and are
/// written in order by one task. Batches that queued while a write ran go out together as
/// one update: one transaction, one checkpoint, and each order's view once, with its
/// newest events (an order that changed in several of them is written once, not once per
/// batch).
///
/// A failed write fails every later call (`enqueue`, `waitForRoom`, `drained`), which ends
/// the projector's run; the next run starts again from the store's checkpoint.
final class ProjectorWrites: Sendable {
    struct Batch: Sendable {
        /// The projector's count of published batches (see `Projector.written`).
        var number: Int
        /// In the order the batch first touched them.
        var views: [OrderView]
        var outcomes: [CommandOutcome]
        var checkpoint: LogPosition
    }

    private struct State {
        var queued: [Batch] = []
        /// Batches taken by the write in flight.
        var inFlight = 0
        var writing = false
        var closed = false
        var failure: (any Error)?
        var roomWaiters: [(limit: Int, continuation: CheckedContinuation<Void, any Error>)] = []
        var drainWaiters: [CheckedContinuation<Void, any Error>] = []
    }

    private let store: any ReadModelStore
    private let onWritten: @Sendable (_ lastBatch: Int, _ outcomes: [CommandOutcome]) -> Void
    private let state = Mutex(State())

    init(store: any ReadModelStore, onWritten: @escaping @Sendable (_ lastBatch: Int, _ outcomes: [CommandOutcome]) -> Void) {
        self.store = store
        self.onWritten = onWritten
    }

    /// Queues `batch`; starts the writing task unless it runs already.
    func enqueue(_ batch: Batch) throws {
        let start = try state.withLock { s -> Bool in
            if let failure = s.failure { throw failure }
            if s.closed { throw CancellationError() }
            s.queued.append(batch)
            if s.writing { return false }
            s.writing = true
            return true
        }
        if start { Task { await self.writeAll() } }
    }

    /// Returns once fewer than `limit` batches are queued or being written.
    func waitForRoom(below limit: Int) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let result = state.withLock { s -> Result<Void, any Error>? in
                if let failure = s.failure { return .failure(failure) }
                if s.queued.count + s.inFlight < limit { return .success(()) }
                s.roomWaiters.append((limit, c))
                return nil
            }
            if let result { c.resume(with: result) }
        }
    }

    /// Returns once everything queued is written.
    func drained() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let result = state.withLock { s -> Result<Void, any Error>? in
                if let failure = s.failure { return .failure(failure) }
                if !s.writing { return .success(()) }
                s.drainWaiters.append(c)
                return nil
            }
            if let result { c.resume(with: result) }
        }
    }

    /// No write starts after this one; the one in flight finishes.
    func close() {
        state.withLock { $0.closed = true }
    }

    private func writeAll() async {
        while true {
            let (taken, drained) = state.withLock { s -> ([Batch], [CheckedContinuation<Void, any Error>]) in
                if s.closed { s.queued.removeAll() }
                guard !s.queued.isEmpty else {
                    s.writing = false
                    defer { s.drainWaiters.removeAll() }
                    return ([], s.drainWaiters)
                }
                defer { s.queued.removeAll() }
                s.inFlight = s.queued.count
                return (s.queued, [])
            }
            guard let last = taken.last else {
                for c in drained { c.resume() }
                return
            }
            do {
                let outcomes = taken.flatMap(\.outcomes)
                try await store.apply(ReadModelUpdate(views: Self.merged(taken), outcomes: outcomes, checkpoint: last.checkpoint))
                onWritten(last.number, outcomes)
                let ready = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                    s.inFlight = 0
                    let room = s.queued.count
                    let ready = s.roomWaiters.filter { room < $0.limit }.map(\.continuation)
                    s.roomWaiters.removeAll { room < $0.limit }
                    return ready
                }
                for c in ready { c.resume() }
            } catch {
                let waiting = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                    s.failure = error
                    s.writing = false
                    s.inFlight = 0
                    s.queued.removeAll()
                    defer {
                        s.roomWaiters.removeAll()
                        s.drainWaiters.removeAll()
                    }
                    return s.roomWaiters.map(\.continuation) + s.drainWaiters
                }
                for c in waiting { c.resume(throwing: error) }
                return
            }
        }
    }

    /// Every order's newest view, in the order the batches first touched them.
    static func merged(_ batches: [Batch]) -> [OrderView] {
        if batches.count == 1 { return batches[0].views }
        var index: [String: Int] = [:]
        var views: [OrderView] = []
        for batch in batches {
            for view in batch.views {
                if let i = index[view.orderId] {
                    views[i] = view
                } else {
                    index[view.orderId] = views.count
                    views.append(view)
                }
            }
        }
        return views
    }
}
