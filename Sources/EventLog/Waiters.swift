import Synchronization

/// Tasks waiting for a value under a key (a command's outcome, an order's next version),
/// resumed by whoever publishes it, or by their timeout or cancellation, exactly once.
///
/// Waiting is two steps, `register` then `wait`, so a caller can register before it
/// starts the work whose result it awaits: a value published in between is kept for it
/// rather than missed.
final class Waiters<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    struct Ticket: Sendable {
        fileprivate let key: Key
        fileprivate let id: UInt64
    }

    private struct Slot {
        let id: UInt64
        let accepts: @Sendable (Value) -> Bool
        var value: Value?
        var continuation: CheckedContinuation<Value?, Never>?
    }
    private struct State {
        var nextId: UInt64 = 0
        var slots: [Key: [Slot]] = [:]
    }
    private let state = Mutex(State())

    /// Starts listening for `key`; pair with `wait(_:timeout:)` or `cancel(_:)`.
    func register(_ key: Key, accepts: @escaping @Sendable (Value) -> Bool = { _ in true }) -> Ticket {
        state.withLock { s in
            s.nextId += 1
            s.slots[key, default: []].append(Slot(id: s.nextId, accepts: accepts))
            return Ticket(key: key, id: s.nextId)
        }
    }

    /// The first accepted value published since `register`, waiting up to `timeout`;
    /// nil on timeout or cancellation. Ends the ticket.
    func wait(_ ticket: Ticket, timeout: Duration) async -> Value? {
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group -> Value? in
                let value = await withCheckedContinuation { (c: CheckedContinuation<Value?, Never>) in
                    // Checked under the lock: the cancellation handler takes it too, so
                    // either it finds this continuation or this sees the cancellation.
                    let ready: Value?? = state.withLock { s in
                        guard var list = s.slots[ticket.key], let i = list.firstIndex(where: { $0.id == ticket.id }) else {
                            return .some(nil)
                        }
                        if let value = list[i].value {
                            list.remove(at: i)
                            s.slots[ticket.key] = list.isEmpty ? nil : list
                            return .some(value)
                        }
                        if Task.isCancelled {
                            list.remove(at: i)
                            s.slots[ticket.key] = list.isEmpty ? nil : list
                            return .some(nil)
                        }
                        list[i].continuation = c
                        s.slots[ticket.key] = list
                        return .none
                    }
                    if let ready {
                        c.resume(returning: ready)
                        return
                    }
                    group.addTask { [weak self] in
                        try? await Task.sleep(for: timeout)
                        self?.finish(ticket, with: nil)
                    }
                }
                group.cancelAll()
                return value
            }
        } onCancel: {
            finish(ticket, with: nil)
        }
    }

    /// Registers and waits in one step (for callers with nothing to start in between).
    func wait(for key: Key, timeout: Duration, accepts: @escaping @Sendable (Value) -> Bool = { _ in true }) async -> Value? {
        await wait(register(key, accepts: accepts), timeout: timeout)
    }

    /// Ends a ticket that will not be waited for.
    func cancel(_ ticket: Ticket) { finish(ticket, with: nil) }

    /// Hands `value` to every registered ticket of `key` that accepts it.
    func publish(_ key: Key, _ value: Value) {
        let resume = state.withLock { s -> [CheckedContinuation<Value?, Never>] in
            guard var list = s.slots[key] else { return [] }
            var resume: [CheckedContinuation<Value?, Never>] = []
            list.removeAll { slot in
                guard slot.value == nil, slot.accepts(value) else { return false }
                if let c = slot.continuation {
                    resume.append(c)
                    return true
                }
                return false
            }
            for i in list.indices where list[i].value == nil && list[i].continuation == nil && list[i].accepts(value) {
                list[i].value = value
            }
            s.slots[key] = list.isEmpty ? nil : list
            return resume
        }
        for c in resume { c.resume(returning: value) }
    }

    private func finish(_ ticket: Ticket, with value: Value?) {
        let continuation = state.withLock { s -> CheckedContinuation<Value?, Never>? in
            guard var list = s.slots[ticket.key], let i = list.firstIndex(where: { $0.id == ticket.id }) else { return nil }
            let slot = list.remove(at: i)
            s.slots[ticket.key] = list.isEmpty ? nil : list
            return slot.continuation
        }
        continuation?.resume(returning: value)
    }
}
