import Logging
import OrderDomain

/// An `ORDER_AGGREGATES` table that answers for one order directly: ksqlDB's pull query
/// when ksqlDB runs the aggregation. Nil when the table has no row for the order.
public protocol AggregateTable: Sendable {
    func aggregate(orderId: String) async throws -> LogFormat.Aggregate?
}

/// The read side: answers from this instance's read model, and for single orders also
/// from the aggregates table when one is configured.
public struct OrderQueries: Sendable {
    /// The order did not reach the requested version in time.
    public struct VersionTimeout: Error, Sendable, CustomStringConvertible {
        public var orderId: String
        public var minVersion: Int
        public var currentVersion: Int
        public var description: String {
            "order \(orderId) is at version \(currentVersion); version \(minVersion) was not reached in time"
        }
    }

    let store: any ReadModelStore
    let projector: Projector
    let table: (any AggregateTable)?
    let logger: Logger

    public init(
        store: any ReadModelStore, projector: Projector, table: (any AggregateTable)? = nil,
        logger: Logger = Logger(label: "order-queries")
    ) {
        self.store = store
        self.projector = projector
        self.table = table
        self.logger = logger
    }

    /// The order (nil if unknown), waiting until `deadline` for `minVersion`.
    ///
    /// With an aggregates table, the newer of its row and the read model: the table can
    /// be ahead (another instance decided the command and this read model has not caught
    /// up yet) or behind (ksqlDB's pull queries are eventually consistent), and a caller
    /// must never see an order older than one this instance already answered with.
    public func order(id: String, minVersion: Int = 0, deadline: ContinuousClock.Instant) async throws -> Order? {
        var current = try await projector.view(orderId: id)?.order
        if let fromTable = await tableOrder(id), fromTable.version > current?.version ?? 0 { current = fromTable }
        if minVersion <= 0 { return current }
        if let current, current.version >= minVersion { return current }
        // Listen, then read again: a projection between the two reads is not missed.
        let ticket = projector.versions.register(id) { $0 >= minVersion }
        if let order = try await projector.view(orderId: id)?.order, order.version >= minVersion {
            projector.versions.cancel(ticket)
            return order
        }
        _ = await projector.versions.wait(ticket, timeout: deadline - .now)
        try Task.checkCancellation()
        let order = try await projector.view(orderId: id)?.order
        guard let order, order.version >= minVersion else {
            throw VersionTimeout(orderId: id, minVersion: minVersion, currentVersion: order?.version ?? 0)
        }
        return order
    }

    /// The order when the projector's cache holds it at `minVersion` or later, else nil (ask
    /// `order(id:minVersion:deadline:)`): answers hot reads without suspending. Always nil
    /// with an aggregates table, which `order` must consult too (it may be ahead).
    public func cachedOrder(id: String, minVersion: Int = 0) -> Order? {
        guard table == nil else { return nil }
        guard let order = projector.cachedView(orderId: id)?.order, order.version >= minVersion else { return nil }
        return order
    }

    /// The order's whole history (errors included), nil if nothing was ever recorded.
    public func events(orderId: String) async throws -> [ProjectedEvent]? {
        try await projector.view(orderId: orderId)?.events
    }

    /// The order folded from the table's row; nil without a table, without a row, or
    /// when the table fails (the read model answers then, so a table outage degrades
    /// freshness, not availability).
    private func tableOrder(_ id: String) async -> Order? {
        guard let table else { return nil }
        do {
            guard let row = try await table.aggregate(orderId: id) else { return nil }
            return OrderHistory(orderId: id, entries: try row.entries()).state
        } catch {
            logger.warning(
                "the aggregates table did not answer; using the read model", metadata: ["order_id": "\(id)", "error": "\(error)"])
            return nil
        }
    }

    /// From the store only, once it holds every batch the projector has published: a
    /// caller that got an outcome finds the order listed.
    public func list(status: OrderStatus?, after cursor: Int64, limit: Int) async throws -> OrderPage {
        await projector.waitUntilWritten()
        return try await store.listOrders(status: status, after: cursor, limit: limit)
    }
}
