import ArgumentParser
import OrderProto

/// Parses `address;lat;lon`. Addresses may hold commas and semicolons, so the
/// coordinates are the parts after the last two semicolons. Only the syntax is
/// checked here; ranges and empty addresses are the server's to judge (it
/// answers INVALID_ARGUMENT naming the field).
enum StopArgument {
    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    static func parse(_ text: String) throws -> Ridehailing_Orders_V1_Waypoint {
        let usage = "expected \"address;lat;lon\", e.g. \"1 Main St, Springfield;52.37;4.89\""
        guard let lonSeparator = text.lastIndex(of: ";") else {
            throw Malformed(description: usage)
        }
        let head = text[..<lonSeparator]
        guard let latSeparator = head.lastIndex(of: ";") else {
            throw Malformed(description: usage)
        }
        let address = head[..<latSeparator].trimmingSpaces()
        let latText = head[head.index(after: latSeparator)...].trimmingSpaces()
        let lonText = text[text.index(after: lonSeparator)...].trimmingSpaces()
        guard let lat = Double(latText), lat.isFinite else {
            throw Malformed(description: "latitude \"\(latText)\" is not a number; \(usage)")
        }
        guard let lon = Double(lonText), lon.isFinite else {
            throw Malformed(description: "longitude \"\(lonText)\" is not a number; \(usage)")
        }
        var stop = Ridehailing_Orders_V1_Waypoint()
        stop.address = address
        stop.lat = lat
        stop.lon = lon
        return stop
    }
}

/// An order status as typed by a user: `placed`, `PLACED` or `ORDER_STATUS_PLACED`.
enum StatusArgument {
    struct Unknown: Error, CustomStringConvertible {
        var description: String
    }

    static let choices: [(String, Ridehailing_Orders_V1_OrderStatus)] = [
        ("placed", .placed), ("accepted", .accepted), ("completed", .completed), ("cancelled", .cancelled),
    ]

    static func parse(_ text: String) throws -> Ridehailing_Orders_V1_OrderStatus {
        var name = text.lowercased()
        if name.hasPrefix("order_status_") { name.removeFirst("order_status_".count) }
        guard let match = choices.first(where: { $0.0 == name }) else {
            throw Unknown(description:
                "unknown status \"\(text)\"; one of \(choices.map(\.0).joined(separator: ", "))")
        }
        return match.1
    }
}

extension GRPCCodec: ExpressibleByArgument {}

extension StringProtocol {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
