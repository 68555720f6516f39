import OrderDomain
@testable import OrderService
import Testing

/// GetOrder's cache of mapped and encoded orders is bounded in bytes as well as in orders:
/// an entry holds a maximal order three times (about 300 KB), and 10,000 of them could
/// reach 3 GB (found by a review).
@Suite struct MappedOrderCacheTests {
    static func order(_ i: Int, addressBytes: Int) -> Order {
        let route = (0..<100).map { _ in Waypoint(address: String(repeating: "a", count: addressBytes), lat: 1, lon: 2) }
        return Order(
            id: "00000000-0000-0000-0000-\(String(100_000_000_000 + i).suffix(12))", version: 1, status: .placed,
            riderId: "63770803-38f4-4594-aec2-4c74918f7165", price: "1.00", route: route)
    }

    @Test func largeOrdersStayWithinTheByteBudget() {
        let cache = MappedOrderCache(capacity: 10_000, maxBytes: 4 << 20)
        for i in 0..<100 { _ = cache.encoded(for: Self.order(i, addressBytes: 1000)) }
        let usage = cache.usage
        #expect(usage.bytes <= 4 << 20 && usage.count < 100 && usage.count > 0, "\(usage)")
    }

    @Test func smallOrdersAreKeptByCount() {
        let cache = MappedOrderCache(capacity: 10_000, maxBytes: 64 << 20)
        for i in 0..<1000 { _ = cache.encoded(for: Self.order(i, addressBytes: 1).with(route: 2)) }
        #expect(cache.usage.count == 1000)
    }
}

extension Order {
    fileprivate func with(route count: Int) -> Order {
        var order = self
        order.route = Array(order.route.prefix(count))
        return order
    }
}
