import Foundation
import OrderDomain

/// The JSON written to the logs, as the seed's ksqlDB statements define it:
///
/// - `order-commands-and-events` value: `{"TYPE": "COMMAND"|"EVENT", "SUB_TYPE": <name>,
///   "DETAILS": <JSON text>}`, key = order id.
/// - `order-aggregates` value: ORDER_AGGREGATES' columns `LATEST_TYPE`, `LATEST_SUB_TYPE`,
///   `LATEST_DETAILS` (LATEST_BY_OFFSET) and `TYPE_LIST`, `SUB_TYPE_LIST`, `DETAILS_LIST`
///   (COLLECT_LIST, in offset order), key = order id.
public enum LogFormat {
    public static let command = "COMMAND"
    public static let event = "EVENT"

    /// One entry of the commands-and-events log, undecoded.
    public struct Entry: Sendable, Hashable, Codable {
        public var type: String
        public var subType: String
        public var details: String

        public init(type: String, subType: String, details: String) {
            self.type = type
            self.subType = subType
            self.details = details
        }

        enum CodingKeys: String, CodingKey {
            case type = "TYPE"
            case subType = "SUB_TYPE"
            case details = "DETAILS"
        }
    }

    /// An ORDER_AGGREGATES row.
    public struct Aggregate: Sendable, Hashable, Codable {
        public var latestType: String
        public var latestSubType: String
        public var latestDetails: String
        public var typeList: [String]
        public var subTypeList: [String]
        public var detailsList: [String]

        public init(entries: [Entry]) {
            let last = entries.last ?? Entry(type: "", subType: "", details: "")
            latestType = last.type
            latestSubType = last.subType
            latestDetails = last.details
            typeList = entries.map(\.type)
            subTypeList = entries.map(\.subType)
            detailsList = entries.map(\.details)
        }

        /// The entries in offset order; throws when the lists disagree in length.
        public func entries() throws(FormatError) -> [Entry] {
            guard typeList.count == subTypeList.count, typeList.count == detailsList.count else {
                throw FormatError(
                    "aggregate lists differ in length (TYPE_LIST \(typeList.count), SUB_TYPE_LIST \(subTypeList.count), DETAILS_LIST \(detailsList.count))"
                )
            }
            return (0..<typeList.count).map { Entry(type: typeList[$0], subType: subTypeList[$0], details: detailsList[$0]) }
        }

        enum CodingKeys: String, CodingKey {
            case latestType = "LATEST_TYPE"
            case latestSubType = "LATEST_SUB_TYPE"
            case latestDetails = "LATEST_DETAILS"
            case typeList = "TYPE_LIST"
            case subTypeList = "SUB_TYPE_LIST"
            case detailsList = "DETAILS_LIST"
        }
    }

    /// A record that does not follow the format: reported, then skipped.
    public struct FormatError: Error, Sendable, Hashable, CustomStringConvertible {
        public var message: String
        public init(_ message: String) { self.message = message }
        public var description: String { message }
    }

    // MARK: Encoding

    public static func entry(_ command: OrderCommand) -> Entry {
        Entry(type: Self.command, subType: command.typeName, details: text(Details(command)))
    }

    public static func entry(_ event: OrderEvent) -> Entry {
        Entry(type: Self.event, subType: event.typeName, details: text(Details(event)))
    }

    public static func encode(_ entry: Entry) -> [UInt8] { bytes(entry) }
    public static func encode(_ aggregate: Aggregate) -> [UInt8] { bytes(aggregate) }

    // MARK: Decoding

    public static func decodeEntry(_ value: [UInt8]) throws(FormatError) -> Entry {
        let entry: Entry = try decode(value, what: "commands-and-events record")
        guard entry.type == command || entry.type == event else {
            throw FormatError("TYPE must be COMMAND or EVENT, got '\(entry.type)'")
        }
        return entry
    }

    public static func decodeAggregate(_ value: [UInt8]) throws(FormatError) -> Aggregate {
        try decode(value, what: "order-aggregates record")
    }

    /// A decoded entry of an order's list.
    public enum Decoded: Sendable, Hashable {
        case command(OrderCommand)
        case event(OrderEvent)
    }

    /// Decodes one entry for the order `orderId`.
    public static func decode(_ entry: Entry, orderId: String) throws(FormatError) -> Decoded {
        let d: Details = try decode(Array(entry.details.utf8), what: "\(entry.subType) DETAILS")
        func need<T>(_ value: T?, _ name: String) throws(FormatError) -> T {
            guard let value else { throw FormatError("\(entry.subType) DETAILS lacks \(name)") }
            return value
        }
        if let id = d.orderId, id != orderId {
            throw FormatError("\(entry.subType) DETAILS names order \(id), recorded under key \(orderId)")
        }
        switch entry.type {
        case command:
            let kind: OrderCommand.Kind
            switch entry.subType {
            case "PlaceOrder":
                kind = .place(riderId: try need(d.riderId, "riderId"), price: try need(d.price, "price"), route: try need(d.route, "route"))
            case "AcceptOrder": kind = .accept(driverId: try need(d.driverId, "driverId"))
            case "CompleteOrder": kind = .complete
            case "CancelOrder": kind = .cancel
            default: throw FormatError("unknown command SUB_TYPE '\(entry.subType)'")
            }
            return .command(
                OrderCommand(
                    commandId: try need(d.commandId, "commandId"), orderId: orderId,
                    expectedVersion: try need(d.expectedVersion, "expectedVersion"), kind: kind))
        case event:
            let kind: OrderEvent.Kind
            switch entry.subType {
            case "OrderPlacedEvent":
                kind = .placed(riderId: try need(d.riderId, "riderId"), price: try need(d.price, "price"), route: try need(d.route, "route"))
            case "OrderAcceptedEvent": kind = .accepted(driverId: try need(d.driverId, "driverId"))
            case "OrderCompletedEvent": kind = .completed
            case "OrderCancelledEvent": kind = .cancelled
            case "ErrorEvent":
                let reason = OrderRejection.Reason(rawValue: d.reason ?? "") ?? .transitionNotAllowed
                kind = .rejected(
                    OrderRejection(
                        reason: reason, message: try need(d.errorMessage, "errorMessage"), field: d.field,
                        commandType: try need(d.commandType, "commandType"),
                        expectedVersion: try need(d.expectedVersion, "expectedVersion"),
                        actualVersion: d.actualVersion ?? d.version ?? 0))
            default: throw FormatError("unknown event SUB_TYPE '\(entry.subType)'")
            }
            return .event(
                OrderEvent(
                    orderId: orderId, version: try need(d.version, "version"),
                    createdDate: try need(d.createdDate, "createdDate"),
                    commandId: try need(d.commandId, "commandId"), kind: kind))
        default:
            throw FormatError("TYPE must be COMMAND or EVENT, got '\(entry.type)'")
        }
    }

    // MARK: DETAILS

    /// The DETAILS JSON of every command and event (camelCase, as the seed's Jackson wrote it).
    struct Details: Codable {
        var commandId: String?
        var orderId: String?
        var expectedVersion: Int?
        var version: Int?
        var createdDate: Timestamp?
        var riderId: String?
        var price: String?
        var route: [Waypoint]?
        var driverId: String?
        var errorMessage: String?
        var commandType: String?
        var reason: String?
        var actualVersion: Int?
        var field: String?

        init(_ c: OrderCommand) {
            commandId = c.commandId
            orderId = c.orderId
            expectedVersion = c.expectedVersion
            switch c.kind {
            case .place(let riderId, let price, let route):
                self.riderId = riderId
                self.price = price
                self.route = route
            case .accept(let driverId): self.driverId = driverId
            case .complete, .cancel: break
            }
        }

        init(_ e: OrderEvent) {
            commandId = e.commandId
            orderId = e.orderId
            version = e.version
            createdDate = e.createdDate
            switch e.kind {
            case .placed(let riderId, let price, let route):
                self.riderId = riderId
                self.price = price
                self.route = route
            case .accepted(let driverId): self.driverId = driverId
            case .completed, .cancelled: break
            case .rejected(let r):
                errorMessage = r.message
                commandType = r.commandType
                expectedVersion = r.expectedVersion
                reason = r.reason.rawValue
                actualVersion = r.actualVersion
                field = r.field
            }
        }
    }

    // MARK: JSON plumbing

    private static func text(_ value: some Encodable) -> String {
        String(decoding: bytes(value), as: UTF8.self)
    }

    private static func bytes(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding these value types cannot fail: no floats outside JSON's range reach
        // here (validation bounds lat/lon) and every key is a String.
        return Array(try! encoder.encode(value))
    }

    private static func decode<T: Decodable>(_ bytes: [UInt8], what: String) throws(FormatError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw FormatError("\(what) is not valid: \(describe(error))")
        } catch {
            throw FormatError("\(what) is not valid: \(error)")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .keyNotFound(let key, let c): return "missing \(path(c)).\(key.stringValue)"
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
            return "\(path(c)): \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
