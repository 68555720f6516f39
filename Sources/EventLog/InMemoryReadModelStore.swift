import OrderDomain
import Synchronization

/// A `ReadModelStore` in memory: the contract's reference behaviour, for fast tests.
public final class InMemoryReadModelStore: ReadModelStore {
    private struct State {
        var checkpoint: LogPosition?
        var views: [String: OrderView] = [:]
        var outcomes: [String: CommandOutcome] = [:]
        var sequence: [String: Int64] = [:]
        var nextSequence: Int64 = 0
    }
    private let state = Mutex(State())

    public init() {}

    public func checkpoint() async throws -> LogPosition? { state.withLock { $0.checkpoint } }

    public func apply(_ update: ReadModelUpdate) async throws {
        state.withLock { s in
            for view in update.views {
                s.views[view.orderId] = view
                if view.order != nil, s.sequence[view.orderId] == nil {
                    s.nextSequence += 1
                    s.sequence[view.orderId] = s.nextSequence
                }
            }
            for outcome in update.outcomes where s.outcomes[outcome.commandId] == nil {
                s.outcomes[outcome.commandId] = outcome
            }
            s.checkpoint = update.checkpoint
        }
    }

    public func view(orderId: String) async throws -> OrderView? { state.withLock { $0.views[orderId] } }

    public func outcome(commandId: String) async throws -> CommandOutcome? { state.withLock { $0.outcomes[commandId] } }

    public func listOrders(status: OrderStatus?, after cursor: Int64, limit: Int) async throws -> OrderPage {
        state.withLock { s in
            let rows = s.sequence.filter { $0.value > cursor }.sorted { $0.value < $1.value }.compactMap {
                id, seq -> (Int64, Order)? in
                guard let order = s.views[id]?.order, status == nil || order.status == status else { return nil }
                return (seq, order)
            }
            let page = rows.prefix(limit)
            return OrderPage(orders: page.map(\.1), cursors: page.map(\.0), nextCursor: rows.count > limit ? page.last?.0 : nil)
        }
    }
}
