import EngineSQLite
import EventLog
import Foundation
import OrderDomain
import Testing

@Suite("StreamingJSON")
struct StreamingJSONTests {
    static let t0 = Timestamp(microseconds: 1_618_822_699_818_153)
    static let id = "00000000-0000-4000-8000-000000000001"

    static var events: [OrderEvent] {
        let rejection = OrderRejection(
            reason: .versionMismatch, message: "Actual version 2 doesn't match \"1\"\n\t\\ é😀", field: "version",
            commandType: "AcceptOrder", expectedVersion: 1, actualVersion: 2)
        let kinds: [OrderEvent.Kind] = [
            .placed(
                riderId: id, price: "12.50",
                route: [Waypoint(address: "A \u{1} street", lat: -90, lon: 180), Waypoint(address: "B", lat: 0.1, lon: -1e-7)]),
            .accepted(driverId: id), .completed, .cancelled, .rejected(rejection),
        ]
        return kinds.enumerated().map { i, kind in
            OrderEvent(orderId: id, version: i + 1, createdDate: t0, commandId: "c\(i)", kind: kind)
        }
    }

    func roundTrip<T: Codable & Equatable>(_ value: T) throws {
        let bytes = try StreamingJSON.encodeStreaming(value)
        let decoded = try JSONDecoder().decode(T.self, from: Data(bytes))
        #expect(decoded == value, "\(String(decoding: bytes, as: UTF8.self))")
        // Same JSON value as JSONEncoder's, whatever the key order.
        let ours = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) as? NSObject
        let theirs = try JSONSerialization.jsonObject(with: JSONEncoder().encode(value), options: [.fragmentsAllowed]) as? NSObject
        #expect(ours == theirs)
    }

    @Test("domain values round-trip through JSONDecoder without falling back")
    func domainValues() throws {
        var order: Order? = nil
        var history: [ProjectedEvent] = []
        for (i, event) in Self.events.enumerated() {
            order = OrderDecider.evolve(order ?? OrderDecider.evolve(nil, Self.events[0]), event)
            let position = LogPosition(offsets: [Int64(i), 0, 12_345_678_901])
            history.append(ProjectedEvent(event: event, position: position))
            try roundTrip(event)
            try roundTrip(CommandOutcome(commandId: "c\(i)", orderId: Self.id, event: event, order: order, position: position))
            try roundTrip(CommandOutcome(commandId: "c\(i)", orderId: Self.id, event: event, order: nil, position: position))
        }
        try roundTrip(OrderView(orderId: Self.id, order: order, events: history))
        try roundTrip(OrderView(orderId: Self.id, order: nil, events: []))
        try roundTrip(LogPosition(offsets: []))
    }

    struct Odd: Codable, Equatable {
        var ints: [Int8?] = [1, nil, -128]
        var unsigned: UInt64 = .max
        var float: Float = 0.1
        var doubles: [Double] = [0, -0.0, 1.5, 1e300, -2.5e-300, 123456789012345680, 0.1, 1e-7]
        var nested: [String: [String: Bool]] = ["a": ["x": true], "b": [:]]
        var empty: [Int] = []
        var optional: String? = nil
        var unit = Unit()
        struct Unit: Codable, Equatable {}
    }

    @Test("other shapes: optionals, nested dictionaries, extreme numbers, empty values")
    func otherShapes() throws {
        try roundTrip(Odd())
        try roundTrip([Odd(), Odd()])
        try roundTrip("just a string")
        try roundTrip(42)
    }

    class Base: Codable {
        var a = 1
    }
    final class Derived: Base, @unchecked Sendable {
        var b = 2
        override init() { super.init() }
        required init(from decoder: any Decoder) throws { try super.init(from: decoder) }
        override func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(b, forKey: .b)
            try super.encode(to: container.superEncoder())
        }
        enum CodingKeys: CodingKey { case b }
    }

    @Test("what it does not handle falls back to JSONEncoder")
    func fallback() throws {
        #expect(throws: StreamingJSON.Unsupported.self) { try StreamingJSON.encodeStreaming(Date(timeIntervalSince1970: 0)) }
        #expect(throws: StreamingJSON.Unsupported.self) { try StreamingJSON.encodeStreaming(["x": Double.nan]) }
        #expect(throws: StreamingJSON.Unsupported.self) { try StreamingJSON.encodeStreaming(Derived()) }
        let date = Date(timeIntervalSince1970: 1000)
        func object(_ bytes: [UInt8]) throws -> NSObject? {
            try JSONSerialization.jsonObject(with: Data(bytes)) as? NSObject
        }
        #expect(try object(StreamingJSON.encode(["d": date])) == object(Array(JSONEncoder().encode(["d": date]))))
        #expect(try object(StreamingJSON.encode(Derived())) == object(Array(JSONEncoder().encode(Derived()))))
    }
}
