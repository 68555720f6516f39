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

/// The server's address as given (`--server` or `ORDERS_SERVER`): HOST:PORT, an IPv6
/// host in brackets. It becomes `http://<address>/<method>`, so anything else would be
/// misread there rather than refused: a scheme taken for the host, `?` or `#` cutting the
/// method path, `user@` taken for credentials, a missing port meaning port 80.
enum ServerArgument {
    /// What is wrong with `text`, or nil when it is a valid address.
    static func problem(with text: String) -> String? {
        if text.contains("://") { return "no scheme (http://) is needed" }
        let forbidden = "?#@/\\".unicodeScalars
        if let bad = text.unicodeScalars.first(where: {
            forbidden.contains($0) || $0.properties.isWhitespace || $0.properties.generalCategory == .control
        }) {
            return "\"\(bad.escaped(asASCII: true))\" is not allowed"
        }
        guard let colon = text.lastIndex(of: ":") else { return "the port is missing" }
        let host = text[..<colon]
        let port = text[text.index(after: colon)...]
        guard !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(port), (1...65535).contains(number)
        else { return "the port must be a number from 1 to 65535" }
        if host.hasPrefix("[") {
            let inner = host.dropFirst().dropLast()
            guard host.hasSuffix("]"), inner.contains(":"), inner.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                return "the IPv6 address in brackets is malformed"
            }
            return nil
        }
        if host.contains(":") { return "an IPv6 address must be in brackets" }
        guard !host.isEmpty, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") })
        else { return "the host must be a name or an IP address" }
        return nil
    }
}

extension GRPCCodec: ExpressibleByArgument {}

extension StringProtocol {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
