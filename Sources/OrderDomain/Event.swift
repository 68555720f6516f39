/// Events: what happened to an order, in the past tense. Every command has exactly one
/// outcome event: a state change, or an `ErrorEvent` that leaves the version unchanged.
public struct OrderEvent: Sendable, Hashable, Codable {
    public enum Kind: Sendable, Hashable, Codable {
        case placed(riderId: String, price: String, route: [Waypoint])
        case accepted(driverId: String)
        case completed
        case cancelled
        case rejected(OrderRejection)
    }

    public var orderId: String
    /// The order's version after the event; for an error, its unchanged version.
    public var version: Int
    public var createdDate: Timestamp
    /// The command this event answers.
    public var commandId: String
    public var kind: Kind

    public init(orderId: String, version: Int, createdDate: Timestamp, commandId: String, kind: Kind) {
        self.orderId = orderId
        self.version = version
        self.createdDate = createdDate
        self.commandId = commandId
        self.kind = kind
    }

    /// The seed's event names, used as SUB_TYPE in the log and `event_type` on the wire.
    public var typeName: String {
        switch kind {
        case .placed: "OrderPlacedEvent"
        case .accepted: "OrderAcceptedEvent"
        case .completed: "OrderCompletedEvent"
        case .cancelled: "OrderCancelledEvent"
        case .rejected: "ErrorEvent"
        }
    }

    public var isError: Bool {
        if case .rejected = kind { return true }
        return false
    }

    public static let typeNames: Set<String> = [
        "OrderPlacedEvent", "OrderAcceptedEvent", "OrderCompletedEvent", "OrderCancelledEvent", "ErrorEvent",
    ]
}
