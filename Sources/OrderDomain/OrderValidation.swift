/// The input rules of DESIGN §3, checked before a command is written anywhere:
/// a command that fails them changes nothing.
public enum OrderValidation {
    /// Bounds on a route. Every row of an order's aggregates carries its placement twice
    /// (the command and the event): unbounded, one PlaceOrder could make rows no broker
    /// takes (Kafka's message.max.bytes is 1 MB by default). At these bounds a placement
    /// is at most about 100 KB.
    public static let maxWaypoints = 100
    public static let maxAddressBytes = 1000

    /// Throws the first rule the command breaks, naming the request field.
    public static func validate(_ command: OrderCommand) throws(OrderRejection) {
        func fail(_ field: String, _ message: String) -> OrderRejection {
            OrderRejection(
                reason: .invalidArgument, message: message, field: field, commandType: command.typeName,
                expectedVersion: command.expectedVersion, actualVersion: 0)
        }
        if command.commandId.isEmpty || command.commandId.utf8.count > 128 {
            throw fail("request_id", "request_id must be 1 to 128 bytes")
        }
        if !isUUID(command.orderId) {
            throw fail("order_id", "order_id must be a UUID, got '\(clip(command.orderId))'")
        }
        switch command.kind {
        case .place(let riderId, let price, let route):
            if command.expectedVersion != 0 {
                throw fail("version", "a new order's expected version is 0")
            }
            if !isUUID(riderId) { throw fail("rider_id", "rider_id must be a UUID, got '\(clip(riderId))'") }
            if let problem = priceProblem(price) { throw fail("price", problem) }
            if route.count < 2 || route.count > maxWaypoints {
                throw fail("route", "a route has 2 to \(maxWaypoints) waypoints, got \(route.count)")
            }
            for (i, point) in route.enumerated() {
                if point.address.allSatisfy({ $0.isWhitespace }) {
                    throw fail("route[\(i)].address", "route[\(i)].address must not be empty")
                }
                if point.address.utf8.count > maxAddressBytes {
                    throw fail(
                        "route[\(i)].address",
                        "route[\(i)].address is at most \(maxAddressBytes) bytes of UTF-8, got \(point.address.utf8.count)")
                }
                if !(point.lat >= -90 && point.lat <= 90) {
                    throw fail("route[\(i)].lat", "route[\(i)].lat must be within [-90, 90], got \(point.lat)")
                }
                if !(point.lon >= -180 && point.lon <= 180) {
                    throw fail("route[\(i)].lon", "route[\(i)].lon must be within [-180, 180], got \(point.lon)")
                }
            }
        case .accept(let driverId):
            if !isUUID(driverId) {
                throw fail("driver_id", "accepting needs driver_id, a UUID; got '\(clip(driverId))'")
            }
            fallthrough
        case .complete, .cancel:
            if command.expectedVersion < 1 {
                throw fail("version", "version must be the order's current version (1 or more), got \(command.expectedVersion)")
            }
        }
    }

    /// A UUID written with capital letters in lowercase, the form every id is stored and
    /// compared in (RFC 9562: UUIDs are case-insensitive on input, lowercase on output;
    /// Swift's `UUID().uuidString` is uppercase). Any other text as it is.
    public static func canonicalUUID(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "F") }), isUUID(text) else { return text }
        return text.lowercased()
    }

    /// UUID text: 8-4-4-4-12 hexadecimal digits.
    public static func isUUID(_ text: String) -> Bool {
        // Over the string's own UTF-8 bytes: copying them into an Array cost an allocation
        // per GetOrder, and iterating the UTF8View element by element was slower still.
        if let result = text.utf8.withContiguousStorageIfAvailable(isUUIDBytes) { return result }
        return Array(text.utf8).withUnsafeBufferPointer(isUUIDBytes)
    }

    private static func isUUIDBytes(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard b.count == 36 else { return false }
        for i in 0..<36 {
            let c = b[i]
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if c != UInt8(ascii: "-") { return false }
            } else if !((c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70)) {
                return false
            }
        }
        return true
    }

    /// Why `text` is not a positive decimal with at most 2 fractional digits, or nil.
    public static func priceProblem(_ text: String) -> String? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        let digits: (Substring) -> Bool = { !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } }
        guard parts.count <= 2, digits(parts[0]), parts.count == 1 || digits(parts[1]) else {
            return "price must be a decimal like \"123.45\", got '\(clip(text))'"
        }
        if parts.count == 2, parts[1].count > 2 {
            return "price has at most 2 fractional digits, got '\(clip(text))'"
        }
        if parts[0].drop(while: { $0 == "0" }).count > 15 {
            return "price is too large: '\(clip(text))'"
        }
        if text.utf8.allSatisfy({ $0 == 48 || $0 == 46 }) {
            return "price must be positive, got '\(clip(text))'"
        }
        return nil
    }

    private static func clip(_ text: String) -> String {
        text.count <= 64 ? text : String(text.prefix(64)) + "…"
    }
}
