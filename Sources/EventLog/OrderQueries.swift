import OrderDomain

/// The read side: answers from this instance's read model.
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

    public init(store: any ReadModelStore, projector: Projector) {
        self.store = store
        self.projector = projector
    }

    /// The order (nil if unknown), waiting until `deadline` for `minVersion`.
    public func order(id: String, minVersion: Int = 0, deadline: ContinuousClock.Instant) async throws -> Order? {
        let current = try await view(id)?.order
        if minVersion <= 0 { return current }
        if let current, current.version >= minVersion { return current }
        // Listen, then read again: a projection between the two reads is not missed.
        let ticket = projector.versions.register(id) { $0 >= minVersion }
        if let order = try await view(id)?.order, order.version >= minVersion {
            projector.versions.cancel(ticket)
            return order
        }
        _ = await projector.versions.wait(ticket, timeout: deadline - .now)
        try Task.checkCancellation()
        let order = try await view(id)?.order
        guard let order, order.version >= minVersion else {
            throw VersionTimeout(orderId: id, minVersion: minVersion, currentVersion: order?.version ?? 0)
        }
        return order
    }

    /// The order when the projector's cache holds it at `minVersion` or later, else nil (ask
    /// `order(id:minVersion:deadline:)`): answers hot reads without suspending.
    public func cachedOrder(id: String, minVersion: Int = 0) -> Order? {
        guard let order = projector.cachedView(orderId: id)?.order, order.version >= minVersion else { return nil }
        return order
    }

    /// The order's whole history (errors included), nil if nothing was ever recorded.
    public func events(orderId: String) async throws -> [ProjectedEvent]? {
        try await view(orderId)?.events
    }

    /// From the projector's cache when it has the order, else from the store.
    private func view(_ id: String) async throws -> OrderView? {
        if let cached = projector.cachedView(orderId: id) { return cached }
        return try await store.view(orderId: id)
    }

    public func list(status: OrderStatus?, after cursor: Int64, limit: Int) async throws -> OrderPage {
        try await store.listOrders(status: status, after: cursor, limit: limit)
    }
}
