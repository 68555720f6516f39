import EventLog
import OrderProto
import SwiftProtobuf

/// Assembles a ListOrders page, bounded in encoded bytes as well as by page_size: by count
/// alone, 45 orders at the validation maxima (100 waypoints of 1,000-byte addresses) made
/// the default page 4.6 MB, which stock grpcio and `buf curl` refuse (RESOURCE_EXHAUSTED:
/// they accept 4 MiB by default), and a page of 1,000 of them about 100 MB.
enum ListPage {
    /// Encoded orders per page, measured in the codec the call uses: a quarter of the
    /// 4 MiB that gRPC clients accept by default, so the envelope and clients configured
    /// lower still have room. Ordinary orders (about 0.3 KB binary, 0.55 KB JSON) fill a page
    /// of 1,000 before the budget, so only pages of large orders come back short. The
    /// largest order validation allows (about 129 KB binary, 709 KB JSON when every address
    /// byte needs a `\u00XX` escape; `ListPageTests`) fits, and a page holds at least one
    /// order anyway.
    static let byteBudget = 1 << 20
    /// Orders read from the store at a time: a page the budget cuts after a few large orders
    /// has read one chunk, not page_size of them; a default page is still one read.
    static let readChunk = 100

    struct Result {
        var orders: [Ridehailing_Orders_V1_Order]
        /// Continues the listing after the last order returned; nil on the last page.
        var nextCursor: Int64?
    }

    /// Up to `limit` orders after `cursor`, stopping before the one that would take the
    /// page's encoded orders past `budget` (never before the first); `read` lists the store.
    static func assemble(
        after cursor: Int64, limit: Int, json: Bool, budget: Int = byteBudget,
        read: (_ after: Int64, _ limit: Int) async throws -> OrderPage
    ) async throws -> Result {
        var orders: [Ridehailing_Orders_V1_Order] = []
        var bytes = 0
        var last = cursor
        while orders.count < limit {
            let chunk = try await read(last, min(limit - orders.count, readChunk))
            for (order, orderCursor) in zip(chunk.orders, chunk.cursors) {
                let mapped = ProtoMapping.order(order)
                let size = try encodedSize(mapped, json: json)
                // Not taken, so the token continues right before it.
                if !orders.isEmpty, bytes + size > budget { return Result(orders: orders, nextCursor: last) }
                orders.append(mapped)
                bytes += size
                last = orderCursor
            }
            guard let next = chunk.nextCursor else { return Result(orders: orders, nextCursor: nil) }
            // Past the chunk's last row, even one the store left out of `orders`.
            last = next
        }
        return Result(orders: orders, nextCursor: last)
    }

    /// What `order` adds to a ListOrdersResponse in the call's codec: its bytes, plus the
    /// field's tag and length prefix (binary, at most 6 bytes) or the separating comma (JSON).
    static func encodedSize(_ order: Ridehailing_Orders_V1_Order, json: Bool) throws -> Int {
        let bytes: [UInt8] = json ? try order.jsonUTF8Bytes() : try order.serializedBytes()
        return bytes.count + (json ? 1 : 6)
    }
}
