import Synchronization

/// Tasks waiting for a value under a key (a command's outcome, an order's next version),
/// resumed by whoever publishes it, or by their timeout or cancellation, exactly once.
///
/// Waiting is two steps, `register` then `wait`, so a caller can register before it
/// starts the work whose result it awaits: a value published in between is kept for it
/// rather than missed.
///
/// Timeouts share one timer task (sleeping until the earliest deadline) instead of a
/// task group and a sleeping child task per wait: every command's gateway waits here.
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
        /// Deadlines of waits by ticket id, earliest first; entries of tickets already
        /// ended are skipped when they come due. Ids, not tickets: every wait passes
        /// through the heap (a command's every 3 s), and moving a ticket's key around in
        /// it cost a retain and a release per swap.
        var deadlines = DeadlineHeap()
        /// The keys of the tickets waiting with a deadline in `deadlines`.
        var waitingKeys: [UInt64: Key] = [:]
        /// The timer task in charge of the next wake-up (a new one takes over when a wait
        /// with an earlier deadline arrives) and its wake-up time.
        var timer: (id: UInt64, wakeUp: ContinuousClock.Instant)?

        /// Drops the deadlines of ended waits once they outnumber the waits still waiting.
        /// They would go when due anyway, but a deadline can be an hour away (a call's own
        /// timeout), and thousands of waits a second end by a value long before theirs: the
        /// heap would hold an hour of them. Rebuilding costs O(heap) and leaves at most half
        /// as many entries as it found, so it is O(1) per wait over time.
        mutating func compactDeadlines() {
            guard deadlines.count > 2 * waitingKeys.count + Self.deadlineSlack else { return }
            let waiting = waitingKeys
            deadlines.removeAll { waiting[$0] == nil }
        }
        /// Ended waits' deadlines kept before a rebuild is worth it.
        static var deadlineSlack: Int { 256 }
    }
    private let state = Mutex(State())

    private enum WaitStep {
        case resume(Value?)
        case waitForTimer
        case startTimer(UInt64)
    }

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
        let deadline = ContinuousClock.now + timeout
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Value?, Never>) in
                // Checked under the lock: the cancellation handler takes it too, so either
                // it finds this continuation or this sees the cancellation.
                let step = state.withLock { s -> WaitStep in
                    guard var list = s.slots[ticket.key], let i = list.firstIndex(where: { $0.id == ticket.id }) else {
                        return .resume(nil)
                    }
                    if let value = list[i].value {
                        list.remove(at: i)
                        s.slots[ticket.key] = list.isEmpty ? nil : list
                        return .resume(value)
                    }
                    if Task.isCancelled || deadline <= .now {
                        list.remove(at: i)
                        s.slots[ticket.key] = list.isEmpty ? nil : list
                        return .resume(nil)
                    }
                    list[i].continuation = c
                    s.slots[ticket.key] = list
                    s.deadlines.insert(deadline, ticket.id)
                    s.waitingKeys[ticket.id] = ticket.key
                    s.compactDeadlines()
                    if let timer = s.timer, timer.wakeUp <= deadline { return .waitForTimer }
                    s.nextId += 1
                    s.timer = (s.nextId, deadline)
                    return .startTimer(s.nextId)
                }
                switch step {
                case .resume(let value): c.resume(returning: value)
                case .waitForTimer: break
                case .startTimer(let id): startTimer(id, wakeUp: deadline)
                }
            }
        } onCancel: {
            finish(ticket, with: nil)
        }
    }

    /// Sleeps until `wakeUp`, ends the waits due by then, and goes on to the next
    /// deadline for as long as it is the timer in charge.
    private func startTimer(_ id: UInt64, wakeUp: ContinuousClock.Instant) {
        Task { [weak self] in
            var wakeUp = wakeUp
            while true {
                try? await Task.sleep(until: wakeUp, clock: .continuous)
                guard let self else { return }
                let (due, next) = self.state.withLock { s -> ([CheckedContinuation<Value?, Never>], ContinuousClock.Instant?) in
                    let now = ContinuousClock.now
                    var due: [CheckedContinuation<Value?, Never>] = []
                    while let (deadline, id) = s.deadlines.first, deadline <= now {
                        s.deadlines.removeFirst()
                        guard let key = s.waitingKeys[id] else { continue }  // ended already
                        if let c = Self.remove(Ticket(key: key, id: id), from: &s) { due.append(c) }
                    }
                    guard s.timer?.id == id else { return (due, nil) }  // another timer took over
                    // Most waits end by a value long before their deadline: sleeping until
                    // the first one still waiting, not the first entry, spares a wake-up
                    // per ended wait (thousands a second under load).
                    while let (_, ticketId) = s.deadlines.first, s.waitingKeys[ticketId] == nil { s.deadlines.removeFirst() }
                    s.timer = s.deadlines.first.map { (id, $0.deadline) }
                    return (due, s.timer?.wakeUp)
                }
                for c in due { c.resume(returning: nil) }
                guard let next else { return }
                wakeUp = next
            }
        }
    }

    /// Waits holding a deadline, for tests: each is forgotten when it ends, however.
    var waitingCount: Int { state.withLock { $0.waitingKeys.count } }
    /// Deadlines held, of waits still waiting or ended (tests: see `compactDeadlines`).
    var heldDeadlines: Int { state.withLock { $0.deadlines.count } }

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
                    s.waitingKeys[slot.id] = nil
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
        state.withLock { Self.remove(ticket, from: &$0) }?.resume(returning: value)
    }

    /// Ends `ticket`'s slot; its continuation, if it is waiting.
    private static func remove(_ ticket: Ticket, from s: inout State) -> CheckedContinuation<Value?, Never>? {
        guard var list = s.slots[ticket.key], let i = list.firstIndex(where: { $0.id == ticket.id }) else { return nil }
        let slot = list.remove(at: i)
        s.slots[ticket.key] = list.isEmpty ? nil : list
        if slot.continuation != nil { s.waitingKeys[ticket.id] = nil }
        return slot.continuation
    }
}

/// A binary min-heap of deadlines of ids (plain values: moving them costs no retains).
struct DeadlineHeap {
    private var items: [(deadline: ContinuousClock.Instant, id: UInt64)] = []

    var count: Int { items.count }

    var first: (deadline: ContinuousClock.Instant, id: UInt64)? { items.first }

    mutating func insert(_ deadline: ContinuousClock.Instant, _ element: UInt64) {
        items.append((deadline, element))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].deadline < items[parent].deadline else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes the entries whose id matches, then restores the heap order bottom-up (O(n)).
    mutating func removeAll(where drop: (UInt64) -> Bool) {
        items.removeAll { drop($0.id) }
        for start in stride(from: items.count / 2 - 1, through: 0, by: -1) { siftDown(from: start) }
    }

    mutating func removeFirst() {
        items.swapAt(0, items.count - 1)
        items.removeLast()
        siftDown(from: 0)
    }

    private mutating func siftDown(from start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count, items[left].deadline < items[smallest].deadline { smallest = left }
            if right < items.count, items[right].deadline < items[smallest].deadline { smallest = right }
            if smallest == parent { return }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
