import Foundation
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

    func handle(_ records: [LogRecord]) -> [OutgoingRecord] {
        records.compactMap { record in
            guard let entries = try? LogFormat.decodeAggregate(record.value).entries(), let last = entries.last else { return nil }
            var history = OrderHistory(orderId: record.key, entries: entries.dropLast())
            guard case .event(let event) = history.apply(last), !event.isError, let order = history.state else { return nil }
            return OutgoingRecord(
                topic: topics.integrationEvents, key: record.key, value: Self.encode(IntegrationEvent(order: order, event: event)),
                headers: ["event-type": event.typeName], partition: record.partition)
        }
    }

    static func encode(_ event: IntegrationEvent) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return Array(try! encoder.encode(event))
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
