import Logging
import OrderDomain

/// The seed's integration events: for every state-changing event (not for errors), one
/// record on `order-integration-events` with the order's current state as public,
/// snake_case JSON, keyed by order id. Written atomically with the consumer offsets.
public struct IntegrationPublisher: Sendable {
    public static let group = "order-integration-publisher"

    let engine: any LogEngine
    let topics: Topics
    let logger: Logger

    public init(engine: any LogEngine, topics: Topics, logger: Logger) {
        self.engine = engine
        self.topics = topics
        self.logger = logger
    }

    public func run() async throws {
        let loop = GroupLoop(engine: engine, group: Self.group, topic: topics.aggregates, logger: logger)
        try await loop.run { records in handle(records) }
    }

    /// The publisher as a derivation the engine runs inside its appends
    /// (`DerivingLogEngine`): each integration event written with the row it publishes.
    public var derivation: LogDerivation {
        LogDerivation(group: Self.group, topic: topics.aggregates, derive: { record, _ in handle([record]) })
    }

    func handle(_ records: [LogRecord]) -> [OutgoingRecord] {
        records.compactMap { record in
            let row = AggregateRow.analyze(record)
            guard case .event(let event) = row.change, !event.isError, let order = row.history.state else { return nil }
            return OutgoingRecord(
                topic: topics.integrationEvents, key: record.key, value: Self.encode(IntegrationEvent(order: order, event: event)),
                headers: ["event-type": event.typeName], partition: record.partition)
        }
    }

    static func encode(_ e: IntegrationEvent) -> [UInt8] {
        var w = JSON.Writer(capacity: 512)
        w.beginObject()
        w.member("order_id", e.orderId)
        w.member("event_type", e.eventType)
        w.key("event_timestamp")
        w.int(Int(e.eventTimestamp))
        w.member("version", e.version)
        w.member("status", e.status)
        w.member("rider_id", e.riderId)
        w.member("price", e.price)
        w.member("route", e.route)
        w.member("driver_id", e.driverId)
        w.member("placed_date", e.placedDate?.rfc3339)
        w.member("accepted_date", e.acceptedDate?.rfc3339)
        w.member("completed_date", e.completedDate?.rfc3339)
        w.member("cancelled_date", e.cancelledDate?.rfc3339)
        w.endObject()
        return w.bytes
    }
}

/// The public shape of an integration event (snake_case on the wire).
public struct IntegrationEvent: Sendable, Hashable, Codable {
    public var orderId: String
    public var eventType: String
    /// Milliseconds since the Unix epoch.
    public var eventTimestamp: Int64
    public var version: Int
    public var status: String
    public var riderId: String
    public var price: String
    public var route: [Waypoint]
    public var driverId: String?
    public var placedDate: Timestamp?
    public var acceptedDate: Timestamp?
    public var completedDate: Timestamp?
    public var cancelledDate: Timestamp?

    public init(order: Order, event: OrderEvent) {
        orderId = order.id
        eventType = event.typeName
        eventTimestamp = event.createdDate.microseconds / 1000
        version = order.version
        status = order.status.rawValue
        riderId = order.riderId
        price = order.price
        route = order.route
        driverId = order.driverId
        placedDate = order.placedDate
        acceptedDate = order.acceptedDate
        completedDate = order.completedDate
        cancelledDate = order.cancelledDate
    }
}
