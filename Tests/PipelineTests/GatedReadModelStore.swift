import EventLog
import OrderDomain
import Synchronization

/// A read-model store whose writes can be held back: `hold()` parks every `apply` until
/// `release()`; `refuse()` makes them fail. It keeps every update it wrote. Tests use it
/// to show what callers get while the store is behind, and what its writers hand it.
final class GatedReadModelStore: ReadModelStore {
    struct Refused: Error {}

    private let inner = InMemoryReadModelStore()
    private let state = Mutex(
        (held: false, refusing: false, parked: [CheckedContinuation<Void, Never>](), updates: [ReadModelUpdate]()))

    func hold() { state.withLock { $0.held = true } }
    func refuse() { state.withLock { $0.refusing = true } }
    /// Writes succeed again after `refuse()`.
    func accept() { state.withLock { $0.refusing = false } }
    /// Applies parked by `hold()` right now.
    var parkedCount: Int { state.withLock { $0.parked.count } }
    /// The updates written, in order.
    var updates: [ReadModelUpdate] { state.withLock { $0.updates } }

    func release() {
        let parked = state.withLock { s in
            s.held = false
            defer { s.parked.removeAll() }
            return s.parked
        }
        for c in parked { c.resume() }
    }

    func apply(_ update: ReadModelUpdate) async throws {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let held = state.withLock { s in
                if s.held { s.parked.append(c) }
                return s.held
            }
            if !held { c.resume() }
        }
        if state.withLock({ $0.refusing }) { throw Refused() }
        state.withLock { $0.updates.append(update) }
        try await inner.apply(update)
    }

    func checkpoint() async throws -> LogPosition? { try await inner.checkpoint() }
    func view(orderId: String) async throws -> OrderView? { try await inner.view(orderId: orderId) }
    func outcome(commandId: String) async throws -> CommandOutcome? { try await inner.outcome(commandId: commandId) }
    func listOrders(status: OrderStatus?, after cursor: Int64, limit: Int) async throws -> OrderPage {
        try await inner.listOrders(status: status, after: cursor, limit: limit)
    }
}
