import Synchronization
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

    public static func encode(_ entry: Entry) -> [UInt8] { writeEntry(entry) }

    /// A commands-and-events record's memo (`OutgoingRecord.memo`): its entry, and that
    /// entry decoded, so the aggregator neither parses back what was just written nor
    /// decodes the DETAILS again (decoding an entry is lossless: `decode(entry(c)) == c`,
    /// tested).
    public struct EntryMemo: Sendable {
        public var entry: Entry
        public var decoded: Decoded
        /// DETAILS as the record's value holds it (a JSON string, quoted and escaped): the
        /// aggregator's lists take it as it is instead of escaping the text again on the
        /// log's writer.
        var quotedDetails: [UInt8]? = nil
    }

    /// A command's record value and memo. With `remember` its decoding also goes to the
    /// process-wide cache, for an engine that drops memos (`LogEngine.keepsMemos`).
    static func encodeForLog(_ command: OrderCommand, remember: Bool) -> (value: [UInt8], memo: EntryMemo) {
        encodeForLog(entry(command), .command(command), orderId: command.orderId, remember: remember)
    }

    /// An event's record value and memo (see the command's).
    static func encodeForLog(_ event: OrderEvent, remember: Bool) -> (value: [UInt8], memo: EntryMemo) {
        encodeForLog(entry(event), .event(event), orderId: event.orderId, remember: remember)
    }

    private static func encodeForLog(_ entry: Entry, _ decoded: Decoded, orderId: String, remember: Bool) -> (value: [UInt8], memo: EntryMemo) {
        if remember { decodedCache.withLock { $0[DecodedCacheKey(orderId: orderId, entry: entry)] = decoded } }
        let details = quoted(entry.details)
        return (writeEntry(entry, quotedDetails: details), EntryMemo(entry: entry, decoded: decoded, quotedDetails: details))
    }

    public static func encode(_ aggregate: Aggregate) -> [UInt8] { writeAggregate(aggregate) }

    // MARK: Decoding

    public static func decodeEntry(_ value: [UInt8]) throws(FormatError) -> Entry {
        let entry = try readEntry(value)
        guard entry.type == command || entry.type == event else {
            throw FormatError("TYPE must be COMMAND or EVENT, got '\(entry.type)'")
        }
        return entry
    }

    public static func decodeAggregate(_ value: [UInt8]) throws(FormatError) -> Aggregate {
        try readAggregate(value)
    }

    /// A decoded entry of an order's list.
    public enum Decoded: Sendable, Hashable {
        case command(OrderCommand)
        case event(OrderEvent)
    }

    /// Decodes one entry for the order `orderId`.
    public static func decode(_ entry: Entry, orderId: String) throws(FormatError) -> Decoded {
        // Every stage decodes every entry of an order's row on each new row: remembering
        // recent results turns those repeats into a hash lookup.
        let key = DecodedCacheKey(orderId: orderId, entry: entry)
        if let hit = decodedCache.withLock({ $0[key] }) { return hit }
        let what = "\(entry.subType) DETAILS"
        let decoded = try decode(
            type: entry.type, subType: entry.subType, details: try parse(Array(entry.details.utf8), what: what), orderId: orderId)
        decodedCache.withLock { $0[key] = decoded }
        return decoded
    }

    private struct DecodedCacheKey: Hashable {
        var orderId: String
        var entry: Entry
    }

    /// Bounded in bytes too: a PlaceOrder's entry and its decoding each hold the route (up
    /// to 100 KB), and 100,000 of them were gigabytes.
    private static let decodedCache = Mutex(
        BoundedCache<DecodedCacheKey, Decoded>(capacity: 100_000, maxBytes: 64 << 20) { key, decoded in
            stringBytes(key.orderId) + key.entry.estimatedBytes + decoded.estimatedBytes
        })

    /// Decodings cached and their estimated bytes (for tests).
    static var decodedCacheUsage: (count: Int, bytes: Int, maxBytes: Int) {
        decodedCache.withLock { ($0.count, $0.bytes, $0.maxBytes) }
    }

    /// Decodes an entry whose DETAILS are already parsed.
    static func decode(type: String, subType: String, details: JSON.Value, orderId: String) throws(FormatError) -> Decoded {
        let entry = (type: type, subType: subType)
        let d = try Details(json: details, what: "\(subType) DETAILS")
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
                let expectedVersion = try need(d.expectedVersion, "expectedVersion")
                let actualVersion = d.actualVersion ?? d.version ?? 0
                // DETAILS without a reason (the seed's): the one the decider gives, which
                // checks the version before the status. Orders' errors show it to clients.
                let reason = d.reason.flatMap(OrderRejection.Reason.init(rawValue:))
                    ?? (expectedVersion == actualVersion ? .transitionNotAllowed : .versionMismatch)
                kind = .rejected(
                    OrderRejection(
                        reason: reason, message: try need(d.errorMessage, "errorMessage"), field: d.field,
                        commandType: try need(d.commandType, "commandType"),
                        expectedVersion: expectedVersion, actualVersion: actualVersion))
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
    struct Details {
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

        init(json: JSON.Value, what: String) throws(FormatError) {
            guard case .object = json else { throw FormatError("\(what) is not a JSON object") }
            func text(_ key: String) throws(FormatError) -> String? {
                guard let v = json[key], v != .null else { return nil }
                guard let s = v.string else { throw FormatError("\(what): \(key) must be a string") }
                return s
            }
            func number(_ key: String) throws(FormatError) -> Int? {
                guard let v = json[key], v != .null else { return nil }
                guard let i = v.int else { throw FormatError("\(what): \(key) must be an integer") }
                return i
            }
            commandId = try text("commandId")
            orderId = try text("orderId")
            expectedVersion = try number("expectedVersion")
            version = try number("version")
            if let date = try text("createdDate") {
                guard let t = Timestamp(rfc3339: date) else { throw FormatError("\(what): createdDate is not RFC 3339: \(date)") }
                createdDate = t
            }
            riderId = try text("riderId")
            price = try text("price")
            if let r = json["route"], r != .null {
                guard let items = r.array else { throw FormatError("\(what): route must be an array") }
                var route: [Waypoint] = []
                for (i, item) in items.enumerated() {
                    guard let address = item["address"]?.string, let lat = item["lat"]?.double, let lon = item["lon"]?.double else {
                        throw FormatError("\(what): route[\(i)] needs address, lat and lon")
                    }
                    route.append(Waypoint(address: address, lat: lat, lon: lon))
                }
                self.route = route
            }
            driverId = try text("driverId")
            errorMessage = try text("errorMessage")
            commandType = try text("commandType")
            reason = try text("reason")
            actualVersion = try number("actualVersion")
            field = try text("field")
        }

        var text: String {
            var w = JSON.Writer()
            w.beginObject()
            w.member("actualVersion", actualVersion)
            w.member("commandId", commandId)
            w.member("commandType", commandType)
            w.member("createdDate", createdDate?.rfc3339)
            w.member("driverId", driverId)
            w.member("errorMessage", errorMessage)
            w.member("expectedVersion", expectedVersion)
            w.member("field", field)
            w.member("orderId", orderId)
            w.member("price", price)
            w.member("reason", reason)
            w.member("riderId", riderId)
            if let route { w.member("route", route) }
            w.member("version", version)
            w.endObject()
            return String(decoding: w.bytes, as: UTF8.self)
        }
    }

    /// An ORDER_AGGREGATES row kept as JSON list by list, so the next row of the order
    /// escapes only its new entry: the aggregator writes a row per record, and escaping
    /// every DETAILS of the history again (JSON inside a JSON string: quotes throughout)
    /// cost more than the rest of the row. `encoded` is byte for byte what
    /// `encode(Aggregate(entries:))` writes.
    public struct AggregateLists: Sendable {
        private var types: [UInt8] = []
        private var subTypes: [UInt8] = []
        private var details: [UInt8] = []
        private var latestType = Self.quoted("")
        private var latestSubType = Self.quoted("")
        private var latestDetails = Self.quoted("")

        public init(entries: some Sequence<Entry> = []) {
            for entry in entries { append(entry) }
        }

        /// `quotedDetails`: the entry's DETAILS already written as a JSON string, if at hand.
        public mutating func append(_ entry: Entry, quotedDetails: [UInt8]? = nil) {
            latestType = Self.quoted(entry.type)
            latestSubType = Self.quoted(entry.subType)
            latestDetails = quotedDetails ?? Self.quoted(entry.details)
            Self.add(latestType, to: &types)
            Self.add(latestSubType, to: &subTypes)
            Self.add(latestDetails, to: &details)
        }

        /// The bytes the lists hold (for the aggregator's cache budget).
        var byteCount: Int { types.count + subTypes.count + details.count + latestType.count + latestSubType.count + latestDetails.count }

        public var encoded: [UInt8] {
            var w = JSON.Writer(capacity: types.count + subTypes.count + details.count + latestDetails.count + 128)
            func list(_ name: String, _ items: [UInt8]) {
                w.key(name)
                w.beginArray()
                if !items.isEmpty { w.raw(items) }
                w.endArray()
            }
            w.beginObject()
            w.key("LATEST_TYPE")
            w.raw(latestType)
            w.key("LATEST_SUB_TYPE")
            w.raw(latestSubType)
            w.key("LATEST_DETAILS")
            w.raw(latestDetails)
            list("TYPE_LIST", types)
            list("SUB_TYPE_LIST", subTypes)
            list("DETAILS_LIST", details)
            w.endObject()
            return w.bytes
        }

        private static func quoted(_ s: String) -> [UInt8] { LogFormat.quoted(s) }

        private static func add(_ item: [UInt8], to list: inout [UInt8]) {
            if !list.isEmpty { list.append(UInt8(ascii: ",")) }
            list.append(contentsOf: item)
        }
    }

    // MARK: JSON plumbing

    private static func text(_ details: Details) -> String { details.text }

    static func writeEntry(_ entry: Entry) -> [UInt8] {
        writeEntry(entry, quotedDetails: quoted(entry.details))
    }

    /// The entry with its DETAILS already written as a JSON string.
    static func writeEntry(_ entry: Entry, quotedDetails: [UInt8]) -> [UInt8] {
        var w = JSON.Writer(capacity: quotedDetails.count + 64)
        w.beginObject()
        w.member("TYPE", entry.type)
        w.member("SUB_TYPE", entry.subType)
        w.key("DETAILS")
        w.raw(quotedDetails)
        w.endObject()
        return w.bytes
    }

    /// `s` as a JSON string.
    static func quoted(_ s: String) -> [UInt8] {
        var w = JSON.Writer(capacity: s.utf8.count + 16)
        w.string(s)
        return w.bytes
    }

    static func writeAggregate(_ a: Aggregate) -> [UInt8] {
        var w = JSON.Writer(capacity: a.detailsList.reduce(128) { $0 + $1.utf8.count + 24 } + a.latestDetails.utf8.count)
        func list(_ name: String, _ items: [String]) {
            w.key(name)
            w.beginArray()
            for item in items { w.string(item) }
            w.endArray()
        }
        w.beginObject()
        w.member("LATEST_TYPE", a.latestType)
        w.member("LATEST_SUB_TYPE", a.latestSubType)
        w.member("LATEST_DETAILS", a.latestDetails)
        list("TYPE_LIST", a.typeList)
        list("SUB_TYPE_LIST", a.subTypeList)
        list("DETAILS_LIST", a.detailsList)
        w.endObject()
        return w.bytes
    }

    private static func parse(_ bytes: [UInt8], what: String) throws(FormatError) -> JSON.Value {
        do {
            return try JSON.parse(bytes)
        } catch {
            throw FormatError("\(what) is not valid JSON: \(error)")
        }
    }

    static func readEntry(_ bytes: [UInt8]) throws(FormatError) -> Entry {
        let json = try parse(bytes, what: "commands-and-events record")
        guard let type = json["TYPE"]?.string, let subType = json["SUB_TYPE"]?.string, let details = json["DETAILS"]?.string else {
            throw FormatError("commands-and-events record needs string TYPE, SUB_TYPE and DETAILS")
        }
        return Entry(type: type, subType: subType, details: details)
    }

    static func readAggregate(_ bytes: [UInt8]) throws(FormatError) -> Aggregate {
        let json = try parse(bytes, what: "order-aggregates record")
        func list(_ name: String) throws(FormatError) -> [String] {
            guard let items = json[name]?.array else { throw FormatError("order-aggregates record lacks the list \(name)") }
            var out: [String] = []
            out.reserveCapacity(items.count)
            for item in items {
                guard let s = item.string else { throw FormatError("\(name) holds a non-string") }
                out.append(s)
            }
            return out
        }
        var a = Aggregate(entries: [])
        a.typeList = try list("TYPE_LIST")
        a.subTypeList = try list("SUB_TYPE_LIST")
        a.detailsList = try list("DETAILS_LIST")
        a.latestType = json["LATEST_TYPE"]?.string ?? a.typeList.last ?? ""
        a.latestSubType = json["LATEST_SUB_TYPE"]?.string ?? a.subTypeList.last ?? ""
        a.latestDetails = json["LATEST_DETAILS"]?.string ?? a.detailsList.last ?? ""
        return a
    }

}
