/// The Order aggregate's state, as rebuilt by folding its events (`OrderDecider.evolve`).

public enum OrderStatus: String, Sendable, Hashable, Codable, CaseIterable {
    case placed = "PLACED"
    case accepted = "ACCEPTED"
    case completed = "COMPLETED"
    case cancelled = "CANCELLED"
}

public struct Waypoint: Sendable, Hashable, Codable {
    public var address: String
    public var lat: Double
    public var lon: Double
    public init(address: String, lat: Double, lon: Double) {
        self.address = address
        self.lat = lat
        self.lon = lon
    }
}

/// A rejected command as the order's history records it: what its `ErrorEvent` says, so
/// a client reading the order can tell a stale version from a transition not allowed.
public struct OrderError: Sendable, Hashable, Codable {
    public var commandId: String
    public var commandType: String
    public var reason: OrderRejection.Reason
    public var expectedVersion: Int
    /// The order's version when the command was decided.
    public var actualVersion: Int
    public var message: String
    public var createdDate: Timestamp
    public init(
        commandId: String, commandType: String, reason: OrderRejection.Reason, expectedVersion: Int,
        actualVersion: Int, message: String, createdDate: Timestamp
    ) {
        self.commandId = commandId
        self.commandType = commandType
        self.reason = reason
        self.expectedVersion = expectedVersion
        self.actualVersion = actualVersion
        self.message = message
        self.createdDate = createdDate
    }
}

public struct Order: Sendable, Hashable, Codable {
    public var id: String
    /// 1 after placing, +1 per state change; rejected commands leave it unchanged.
    public var version: Int
    public var status: OrderStatus
    public var riderId: String
    /// An exact decimal string, validated by `OrderValidation.price`.
    public var price: String
    public var route: [Waypoint]
    public var driverId: String?
    public var placedDate: Timestamp?
    public var acceptedDate: Timestamp?
    public var completedDate: Timestamp?
    public var cancelledDate: Timestamp?
    public var errors: [OrderError]

    public init(
        id: String, version: Int, status: OrderStatus, riderId: String, price: String,
        route: [Waypoint], driverId: String? = nil, placedDate: Timestamp? = nil,
        acceptedDate: Timestamp? = nil, completedDate: Timestamp? = nil,
        cancelledDate: Timestamp? = nil, errors: [OrderError] = []
    ) {
        self.id = id
        self.version = version
        self.status = status
        self.riderId = riderId
        self.price = price
        self.route = route
        self.driverId = driverId
        self.placedDate = placedDate
        self.acceptedDate = acceptedDate
        self.completedDate = completedDate
        self.cancelledDate = cancelledDate
        self.errors = errors
    }
}
