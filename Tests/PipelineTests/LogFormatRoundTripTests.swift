import EventLog
import OrderDomain
import Testing

/// Decoding an entry gives back exactly what was encoded: the aggregator relies on it
/// when it takes the gateway's and the command handler's decodings (record memos, or the
/// cache) instead of parsing their records (`LogFormat.encodeForLog`).
@Suite struct LogFormatRoundTripTests {
    static let route = [
        Waypoint(address: "Kreuzberg \"Ecke\" \\ 🚕", lat: 52.499_123_456_789, lon: 13.403_000_000_000_1),
        Waypoint(address: "", lat: -0.000_001, lon: 180),
        Waypoint(address: "tab\tnewline\n", lat: 1e-7, lon: -179.999_999_999),
    ]

    static func commands(_ orderId: String) -> [OrderCommand] {
        [
            OrderCommand(commandId: OrderIdentity.random(), orderId: orderId, expectedVersion: 0, kind: .place(riderId: OrderIdentity.random(), price: "12.50", route: route)),
            OrderCommand(commandId: OrderIdentity.random(), orderId: orderId, expectedVersion: 7, kind: .accept(driverId: OrderIdentity.random())),
            OrderCommand(commandId: OrderIdentity.random(), orderId: orderId, expectedVersion: 2, kind: .complete),
            OrderCommand(commandId: OrderIdentity.random(), orderId: orderId, expectedVersion: 3, kind: .cancel),
        ]
    }

    static func events(_ orderId: String) -> [OrderEvent] {
        let at = Timestamp(microseconds: 1_700_000_000_123_456)
        var events = [
            OrderEvent(orderId: orderId, version: 1, createdDate: at, commandId: OrderIdentity.random(), kind: .placed(riderId: OrderIdentity.random(), price: "0.01", route: route)),
            OrderEvent(orderId: orderId, version: 2, createdDate: at, commandId: OrderIdentity.random(), kind: .accepted(driverId: OrderIdentity.random())),
            OrderEvent(orderId: orderId, version: 3, createdDate: Timestamp(microseconds: 1), commandId: OrderIdentity.random(), kind: .completed),
            OrderEvent(orderId: orderId, version: 4, createdDate: at, commandId: OrderIdentity.random(), kind: .cancelled),
        ]
        for reason in [OrderRejection.Reason.invalidArgument, .notFound, .alreadyExists, .versionMismatch, .transitionNotAllowed] {
            events.append(
                OrderEvent(
                    orderId: orderId, version: 2, createdDate: at, commandId: OrderIdentity.random(),
                    kind: .rejected(
                        OrderRejection(
                            reason: reason, message: "refused: \"why\" \u{1}", field: reason == .invalidArgument ? "price" : nil,
                            commandType: "AcceptOrder", expectedVersion: 1, actualVersion: 2))))
        }
        return events
    }

    @Test func everyCommandAndEventDecodesToItself() throws {
        let orderId = OrderIdentity.random()
        for command in Self.commands(orderId) {
            let entry = try LogFormat.decodeEntry(LogFormat.encode(LogFormat.entry(command)))
            #expect(try LogFormat.decode(entry, orderId: orderId) == .command(command))
        }
        for event in Self.events(orderId) {
            let entry = try LogFormat.decodeEntry(LogFormat.encode(LogFormat.entry(event)))
            #expect(try LogFormat.decode(entry, orderId: orderId) == .event(event))
        }
    }
}
