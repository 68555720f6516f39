import EventLog
import OrderDomain
import Synchronization

/// A read-model store whose writes can be held back: `hold()` parks every `apply` until
/// `release()`. Tests use it to show what callers get while the store is behind.
final class GatedReadModelStore: ReadModelStore {
    private let inner = InMemoryReadModelStore()
    private let state = Mutex((held: false, parked: [CheckedContinuation<Void, Never>]()))

    func hold() { state.withLock { $0.held = true } }

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
        try await inner.apply(update)
    }

    func checkpoint() async throws -> LogPosition? { try await inner.checkpoint() }
    func view(orderId: String) async throws -> OrderView? { try await inner.view(orderId: orderId) }
    func outcome(commandId: String) async throws -> CommandOutcome? { try await inner.outcome(commandId: commandId) }
    func listOrders(status: OrderStatus?, after cursor: Int64, limit: Int) async throws -> OrderPage {
        try await inner.listOrders(status: status, after: cursor, limit: limit)
    }
}
