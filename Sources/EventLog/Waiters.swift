import Synchronization

/// Tasks waiting for a value under a key (a command's outcome, an order's next version),
/// resumed by whoever publishes it, or by their timeout or cancellation, exactly once.
final class Waiters<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Waiter {
        let id: UInt64
        let accepts: @Sendable (Value) -> Bool
        let continuation: CheckedContinuation<Value?, Never>
    }
    private struct State {
        var nextId: UInt64 = 0
        var waiters: [Key: [Waiter]] = [:]
    }
    private let state = Mutex(State())

    /// Waits until `publish(key, value)` with a value `accepts` takes, or `timeout`.
    func wait(
        for key: Key, timeout: Duration, accepts: @escaping @Sendable (Value) -> Bool = { _ in true }
    ) async -> Value? {
        let id = state.withLock { s -> UInt64 in
            s.nextId += 1
            return s.nextId
        }
        return await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group -> Value? in
                let value = await withCheckedContinuation { (c: CheckedContinuation<Value?, Never>) in
                    // Checked under the lock: the cancellation handler takes it too, so either
                    // it finds this waiter or this sees the cancellation.
                    let cancelled = state.withLock { s -> Bool in
                        if Task.isCancelled { return true }
                        s.waiters[key, default: []].append(Waiter(id: id, accepts: accepts, continuation: c))
                        return false
                    }
                    if cancelled {
                        c.resume(returning: nil)
                        return
                    }
                    group.addTask { [weak self] in
                        try? await Task.sleep(for: timeout)
                        self?.resume(key: key, id: id, with: nil)
                    }
                }
                group.cancelAll()
                return value
            }
        } onCancel: {
            resume(key: key, id: id, with: nil)
        }
    }

    /// Resumes every waiter of `key` that accepts `value`.
    func publish(_ key: Key, _ value: Value) {
        let ready = state.withLock { s -> [Waiter] in
            guard let list = s.waiters[key] else { return [] }
            var keep: [Waiter] = []
            var ready: [Waiter] = []
            for w in list {
                if w.accepts(value) { ready.append(w) } else { keep.append(w) }
            }
            s.waiters[key] = keep.isEmpty ? nil : keep
            return ready
        }
        for w in ready { w.continuation.resume(returning: value) }
    }

    private func resume(key: Key, id: UInt64, with value: Value?) {
        let waiter = state.withLock { s -> Waiter? in
            guard var list = s.waiters[key], let i = list.firstIndex(where: { $0.id == id }) else { return nil }
            let w = list.remove(at: i)
            s.waiters[key] = list.isEmpty ? nil : list
            return w
        }
        waiter?.continuation.resume(returning: value)
    }
}
