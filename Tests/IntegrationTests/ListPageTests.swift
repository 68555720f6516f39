import EventLog
import OrderDomain
import OrderProto
@testable import OrderService
import Testing

/// ListOrders pages are bounded in encoded bytes as well as in orders (found by a client
/// team's review: 45 orders at the validation maxima made the default page 4.6 MB, over the
/// 4 MiB that stock grpcio and `buf curl` accept, so the call failed with RESOURCE_EXHAUSTED).
@Suite struct ListPageTests {
    static let rider = "63770803-38f4-4594-aec2-4c74918f7165"
    static let fourMiB = 4 << 20

    static func id(_ i: Int) -> String { "00000000-0000-0000-0000-\(String(100_000_000_000 + i).suffix(12))" }

    /// At the validation maxima, with every address byte a control character (six bytes
    /// each in JSON, `\u0001`) and, with `errors`, the most ErrorEvents an order takes at
    /// the default --max-commands-per-order (100 commands, one of them the placement).
    static func maximal(_ i: Int, errors: Bool = false) -> Order {
        let address = String(repeating: "\u{1}", count: OrderValidation.maxAddressBytes)
        let route = (0..<OrderValidation.maxWaypoints).map { _ in
            Waypoint(address: address, lat: -89.12345678901234, lon: -179.12345678901234)
        }
        let date = Timestamp(microseconds: 1_790_000_000_123_456)
        let error = OrderError(
            commandId: String(repeating: "\u{1}", count: 128), commandType: "CompleteOrder", reason: .versionMismatch,
            expectedVersion: -2_147_483_648, actualVersion: 2_147_483_647,
            message: "Actual version 2147483647 doesn't match expected version -2147483648", createdDate: date)
        return Order(
            id: id(i), version: 3, status: .completed, riderId: rider, price: "999999999999999.99", route: route,
            driverId: "2c068a1a-9263-433f-a70b-067d51b98378", placedDate: date, acceptedDate: date, completedDate: date,
            cancelledDate: date, errors: errors ? Array(repeating: error, count: 99) : [])
    }

    /// The README's walkthrough order, accepted.
    static func ordinary(_ i: Int) -> Order {
        let date = Timestamp(microseconds: 1_790_000_000_123_456)
        return Order(
            id: id(i), version: 2, status: .accepted, riderId: rider, price: "123.45",
            route: [
                Waypoint(address: "Київ, вулиця Полярна, 17А", lat: 50.51980052414157, lon: 30.467197278948536),
                Waypoint(address: "Київ, вулиця Новокостянтинівська, 18В", lat: 50.48509161169076, lon: 30.485170724431292),
            ],
            driverId: "2c068a1a-9263-433f-a70b-067d51b98378", placedDate: date, acceptedDate: date)
    }

    /// Lists `orders` (at cursors 1, 2, 3 …) as the stores do, counting the orders read.
    final class Store {
        let orders: [Order]
        var read = 0
        init(_ orders: [Order]) { self.orders = orders }

        func page(after cursor: Int64, limit: Int) -> OrderPage {
            let rest = orders.indices.dropFirst(Int(cursor))
            let taken = Array(rest.prefix(limit))
            read += taken.count
            return OrderPage(
                orders: taken.map { orders[$0] }, cursors: taken.map { Int64($0 + 1) },
                nextCursor: rest.count > limit ? Int64(taken.last! + 1) : nil)
        }
    }

    /// Every page of a listing, following the cursors as clients follow next_page_token.
    static func pages(_ store: Store, pageSize: Int, json: Bool, budget: Int = ListPage.byteBudget) async throws
        -> [Ridehailing_Orders_V1_ListOrdersResponse]
    {
        var pages: [Ridehailing_Orders_V1_ListOrdersResponse] = []
        var cursor: Int64 = 0
        while true {
            let page = try await ListPage.assemble(after: cursor, limit: pageSize, json: json, budget: budget) {
                store.page(after: $0, limit: $1)
            }
            var res = Ridehailing_Orders_V1_ListOrdersResponse()
            res.orders = page.orders
            if let next = page.nextCursor { res.nextPageToken = PageToken(cursor: next, status: 0).text }
            pages.append(res)
            guard let next = page.nextCursor, pages.count < 10_000 else { return pages }
            cursor = next
        }
    }

    static func size(_ page: Ridehailing_Orders_V1_ListOrdersResponse, json: Bool) throws -> Int {
        let bytes: [UInt8] = json ? try page.jsonUTF8Bytes() : try page.serializedBytes()
        return bytes.count
    }

    @Test(arguments: [false, true])
    func maximalOrdersComeInPagesUnderTheBudget(json: Bool) async throws {
        let store = Store((1...45).map { Self.maximal($0) })
        let pages = try await Self.pages(store, pageSize: 100, json: json)
        #expect(pages.count > 1)
        for page in pages {
            #expect(!page.orders.isEmpty)
            // The budget counts the orders; the rest is the token and the list's brackets.
            #expect(try Self.size(page, json: json) <= ListPage.byteBudget + 64)
        }
        #expect(pages.flatMap { $0.orders.map(\.id) } == (1...45).map(Self.id))
        // Before, all 45 in one page: over what stock clients accept.
        var whole = Ridehailing_Orders_V1_ListOrdersResponse()
        whole.orders = store.orders.map(ProtoMapping.order)
        #expect(try Self.size(whole, json: false) > Self.fourMiB)
    }

    /// The largest order validation allows (at the default --max-commands-per-order) fits
    /// the budget in either codec: 129,029 bytes binary, 708,991 JSON.
    @Test func theLargestOrderFitsInAPage() throws {
        let order = ProtoMapping.order(Self.maximal(1, errors: true))
        let binary = try ListPage.encodedSize(order, json: false)
        let json = try ListPage.encodedSize(order, json: true)
        #expect(binary < 130_000, "\(binary)")
        #expect(json < 720_000 && json < ListPage.byteBudget, "\(json)")
    }

    @Test func aPageHoldsAtLeastOneOrderWhateverTheBudget() async throws {
        let store = Store((1...5).map { Self.maximal($0) })
        let pages = try await Self.pages(store, pageSize: 100, json: false, budget: 1)
        #expect(pages.map(\.orders.count) == [1, 1, 1, 1, 1])
        #expect(pages.flatMap { $0.orders.map(\.id) } == (1...5).map(Self.id))
    }

    /// Ordinary orders never reach the budget: a page of 1,000 comes whole, in either codec.
    @Test(arguments: [false, true])
    func ordinaryOrdersFillAFullPage(json: Bool) async throws {
        let store = Store((1...1001).map(Self.ordinary))
        let pages = try await Self.pages(store, pageSize: 1000, json: json)
        #expect(pages.map(\.orders.count) == [1000, 1])
        #expect(pages.flatMap { $0.orders.map(\.id) } == (1...1001).map(Self.id))
    }

    /// A page cut after a few large orders reads a chunk of them, not page_size.
    @Test func aCutPageReadsOneChunk() async throws {
        let store = Store((1...1000).map { Self.maximal($0) })
        let page = try await ListPage.assemble(after: 0, limit: 1000, json: false) { store.page(after: $0, limit: $1) }
        #expect(page.orders.count > 1 && page.orders.count < 20)
        #expect(page.nextCursor == Int64(page.orders.count))
        #expect(store.read == ListPage.readChunk)
    }
}
