/// Commands: what a client asks of an order. Each carries the client's idempotency key
/// (`commandId`, the RPC's request_id) and the version it expects the order to be at.
public struct OrderCommand: Sendable, Hashable, Codable {
    public enum Kind: Sendable, Hashable, Codable {
        case place(riderId: String, price: String, route: [Waypoint])
        case accept(driverId: String)
        case complete
        case cancel
    }

    public var commandId: String
    public var orderId: String
    /// The version the client expects the order to be at (0 for PlaceOrder).
    public var expectedVersion: Int
    public var kind: Kind

    public init(commandId: String, orderId: String, expectedVersion: Int, kind: Kind) {
        self.commandId = commandId
        self.orderId = orderId
        self.expectedVersion = expectedVersion
        self.kind = kind
    }

    /// The seed's class names, used as SUB_TYPE in the log.
    public var typeName: String {
        switch kind {
        case .place: "PlaceOrder"
        case .accept: "AcceptOrder"
        case .complete: "CompleteOrder"
        case .cancel: "CancelOrder"
        }
    }

    public static let typeNames: Set<String> = ["PlaceOrder", "AcceptOrder", "CompleteOrder", "CancelOrder"]
}
