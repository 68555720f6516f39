import OrderProto
import SwiftProtobuf

/// The readable (non-JSON) output: aligned `key: value` blocks for orders, one
/// line per event, a table for lists. What the server sent is shown with its control
/// characters escaped (`escapingControlCharacters`); `--json` shows it as sent.
enum Formatting {
    /// `key: value` lines with the values aligned; an empty key continues the
    /// previous entry on a new line.
    static func block(_ entries: [(key: String, value: String)]) -> String {
        let width = entries.map(\.key.count).max() ?? 0
        return entries.map { entry in
            let label = entry.key.isEmpty ? "" : entry.key + ":"
            return (label.padding(to: width + 2) + entry.value.escapingControlCharacters).trimmingTrailingSpaces()
        }.joined(separator: "\n")
    }

    static func orderEntries(_ order: Ridehailing_Orders_V1_Order) -> [(key: String, value: String)] {
        var entries: [(key: String, value: String)] = [
            ("id", order.id),
            ("version", "\(order.version)"),
            ("status", statusName(order.status)),
            ("rider_id", order.riderID),
            ("price", order.price),
        ]
        for (index, stop) in order.route.enumerated() {
            entries.append((index == 0 ? "route" : "", waypoint(stop)))
        }
        if !order.driverID.isEmpty { entries.append(("driver_id", order.driverID)) }
        if order.hasPlacedDate { entries.append(("placed_date", timestamp(order.placedDate))) }
        if order.hasAcceptedDate { entries.append(("accepted_date", timestamp(order.acceptedDate))) }
        if order.hasCompletedDate { entries.append(("completed_date", timestamp(order.completedDate))) }
        if order.hasCancelledDate { entries.append(("cancelled_date", timestamp(order.cancelledDate))) }
        for (index, error) in order.errors.enumerated() {
            // As `eventLine` shows an ErrorEvent. A server older than reason and
            // actual_version sends neither: show no made-up actual_version=0.
            var text = "\(error.commandType) expected_version=\(error.expectedVersion)"
            if !error.reason.isEmpty { text += " actual_version=\(error.actualVersion) reason=\(error.reason)" }
            text += ": \(error.errorMessage)"
            if error.hasCreatedDate { text += " (\(timestamp(error.createdDate)))" }
            entries.append((index == 0 ? "errors" : "", text))
        }
        return entries
    }

    static func waypoint(_ stop: Ridehailing_Orders_V1_Waypoint) -> String {
        "\(stop.address) (\(stop.lat), \(stop.lon))"
    }

    /// `PLACED`, `ACCEPTED`, …
    static func statusName(_ status: Ridehailing_Orders_V1_OrderStatus) -> String {
        switch status {
        case .unspecified: "UNSPECIFIED"
        case .placed: "PLACED"
        case .accepted: "ACCEPTED"
        case .completed: "COMPLETED"
        case .cancelled: "CANCELLED"
        case .UNRECOGNIZED(let value): "STATUS_\(value)"
        }
    }

    /// RFC 3339 in UTC, as the proto3 JSON mapping writes it.
    static func timestamp(_ time: Google_Protobuf_Timestamp) -> String {
        guard let json = try? time.jsonString() else { return "\(time.seconds)s" }
        return String(json.dropFirst().dropLast())
    }

    /// One event on one line: version, type, position, time, then what the
    /// event says. `withOrderID` puts the order first, for mixed streams.
    static func eventLine(_ event: Ridehailing_Orders_V1_OrderEvent, withOrderID: Bool) -> String {
        var columns: [String] = []
        if withOrderID { columns.append(event.orderID) }
        columns.append("v\(event.version)".padding(to: 4))
        columns.append(event.eventType.padding(to: 19))
        columns.append("position=\(event.position)")
        if event.hasCreatedDate { columns.append(timestamp(event.createdDate)) }
        switch event.payload {
        case .orderPlaced(let placed)?:
            columns.append("rider_id=\(placed.riderID) price=\(placed.price) route=["
                + placed.route.map(waypoint).joined(separator: "; ") + "]")
        case .orderAccepted(let accepted)?:
            columns.append("driver_id=\(accepted.driverID)")
        case .errorEvent(let error)?:
            var text = "\(error.commandType) expected_version=\(error.expectedVersion)"
                + " actual_version=\(error.actualVersion)"
            if !error.reason.isEmpty { text += " reason=\(error.reason)" }
            columns.append(text + ": \(error.errorMessage)")
        case .orderCompleted?, .orderCancelled?, nil:
            break
        }
        if !event.commandID.isEmpty { columns.append("request_id=\(event.commandID)") }
        return columns.joined(separator: "  ").escapingControlCharacters
    }

    /// A table with a header row, columns padded to their widest cell.
    static func table(header: [String], rows: [[String]]) -> String {
        let all = [header] + rows.map { $0.map(\.escapingControlCharacters) }
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { column, cell in cell.padding(to: widths[column]) }
                .joined(separator: "  ").trimmingTrailingSpaces()
        }.joined(separator: "\n")
    }
}

extension String {
    /// Control characters (newline, carriage return, ESC, the other C0 and C1 codes, DEL,
    /// the Unicode line and paragraph separators) as escapes (`\n`, `\u{1B}`): text from
    /// the server must neither start lines that look like output of their own (one event
    /// per line) nor send escape sequences to the terminal.
    var escapingControlCharacters: String {
        func isControl(_ scalar: Unicode.Scalar) -> Bool {
            switch scalar.properties.generalCategory {
            case .control, .lineSeparator, .paragraphSeparator: true
            default: false
            }
        }
        guard unicodeScalars.contains(where: isControl) else { return self }
        var out = String.UnicodeScalarView()
        for scalar in unicodeScalars {
            guard isControl(scalar) else {
                out.append(scalar)
                continue
            }
            let escape = switch scalar {
            case "\n": "\\n"
            case "\r": "\\r"
            case "\t": "\\t"
            default: "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            }
            out.append(contentsOf: escape.unicodeScalars)
        }
        return String(out)
    }

    func trimmingTrailingSpaces() -> String {
        var result = self
        while result.last == " " { result.removeLast() }
        return result
    }

    /// Pads with spaces on the right up to `width` characters.
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
