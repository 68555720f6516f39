@testable import EventLog
import Foundation
import OrderDomain
import Testing

/// The caches are bounded in bytes as well as in entries: their entries hold an order's
/// data (a route of up to 100 addresses of 1,000 bytes, lists of every command and event),
/// and bounded by count alone they let a client grow the server by about 1.5 MB per
/// maximal order, without limit (1.9 GB after 1,000 PlaceOrders; found by a review).
@Suite struct CacheByteBudgetTests {
    /// A PlaceOrder at the validation maxima (`OrderValidation`).
    static func maximalPlace() -> OrderCommand {
        let request = OrderIdentity.random()
        let route = (0..<OrderValidation.maxWaypoints).map { i in
            Waypoint(address: String(repeating: "x", count: OrderValidation.maxAddressBytes - 8) + String(format: "%08d", i), lat: 50, lon: 30)
        }
        return OrderCommand(
            commandId: request, orderId: OrderIdentity.orderId(forRequest: request), expectedVersion: 0,
            kind: .place(riderId: OrderIdentity.random(), price: "12.50", route: route))
    }

    @Test func theLeastRecentlyWrittenGoesFirstPastTheByteBudget() {
        var cache = BoundedCache<String, Int>(capacity: 100, maxBytes: 10) { _, size in size }
        cache["a"] = 4
        cache["b"] = 4
        cache["c"] = 4  // 12 bytes: a goes
        #expect(cache["a"] == nil && cache.count == 2 && cache.bytes == 8)
        cache["b"] = 1  // rewritten: its old size no longer counts, and it is the newest
        cache["d"] = 5
        #expect(cache.bytes == 10 && cache.count == 3)
        cache["e"] = 3  // c goes, the oldest write now
        #expect(cache["c"] == nil && cache["b"] == 1 && cache["d"] == 5 && cache["e"] == 3 && cache.bytes == 9)
        cache["d"] = nil
        #expect(cache.bytes == 4 && cache.count == 2)
    }

    @Test func theNewestEntryStaysEvenAloneOverTheBudget() {
        var cache = BoundedCache<String, Int>(capacity: 100, maxBytes: 10) { _, size in size }
        cache["a"] = 1
        cache["big"] = 100
        #expect(cache["a"] == nil && cache["big"] == 100 && cache.bytes == 100)
    }

    /// The projector's views until the store has them: held entries stay whatever the
    /// bounds, and go once released (oldest first, as far as the bounds need).
    @Test func heldEntriesStayUntilReleased() {
        var cache = BoundedCache<String, Int>(capacity: 2, maxBytes: 10) { _, size in size }
        cache["a"] = 5
        cache.holdNewWrites()
        cache["b"] = 5
        cache["c"] = 5  // a goes (not held); b and c are held
        #expect(cache["a"] == nil && cache.count == 2)
        let throughC = cache.stamp
        cache["d"] = 5  // over both bounds, but everything left is held
        #expect(cache.count == 3 && cache.bytes == 15)
        cache.release(through: throughC)
        #expect(cache["b"] == nil && cache["c"] == 5 && cache["d"] == 5 && cache.bytes == 10)
    }

    /// The aggregator's rows (each carries the order's whole lists) stay within its budget;
    /// the rows themselves are unchanged.
    @Test func aggregatorRowsStayWithinTheirByteBudget() async throws {
        let engine = InMemoryLogEngine()
        let topics = Topics()
        try await topics.provision(on: engine)
        let budget = 1 << 20
        let aggregator = Aggregator(engine: engine, topics: topics, logger: Harness.logger, cacheMaxBytes: budget)
        var rows: [OutgoingRecord] = []
        for offset in 0..<20 {
            let command = Self.maximalPlace()
            rows += try await aggregator.aggregate([CacheEvictionTests.record(command, topic: topics.commandsAndEvents, offset: Int64(offset))])
        }
        let usage = aggregator.cacheUsage
        #expect(rows.count == 20)
        #expect(usage.bytes <= budget && usage.count < 20 && usage.count > 0, "\(usage)")
    }

    /// The projector's views stay within the budget once written, and those not yet
    /// written stay cached over it: a read right after an acknowledged update never goes
    /// to the store's older copy.
    @Test func viewsStayWithinTheirBudgetExceptThoseNotYetWritten() async throws {
        let store = GatedReadModelStore()
        var config = OrderPipeline.Config()
        let budget = 512 << 10  // about one maximal view and a half
        config.viewCacheMaxBytes = budget
        try await Harness.run(engine: InMemoryLogEngine(), store: store, config: config) { h in
            var ids: [String] = []
            for _ in 0..<12 { ids.append(try await h.gateway.submit(Self.maximalPlace(), timeout: .seconds(30)).orderId) }
            await h.pipeline.projector.waitUntilWritten()
            let written = h.pipeline.projector.viewCacheUsage
            #expect(written.bytes <= budget && written.count < 12, "\(written)")

            // Batches the store does not take yet (up to two per command, fewer than
            // `maxUnwrittenBatches` in all).
            store.hold()
            var accepted: [CommandOutcome] = []
            for id in ids.prefix(3) { accepted.append(try await h.update(id, .accept(driverId: OrderIdentity.random()), version: 1)) }
            let held = h.pipeline.projector.viewCacheUsage
            for id in ids.prefix(3) {
                let read = try await h.pipeline.queries.order(id: id, deadline: .now + .seconds(1))
                #expect(read?.version == 2)
            }
            store.release()
            await h.pipeline.projector.waitUntilWritten()
            let after = h.pipeline.projector.viewCacheUsage
            #expect(accepted.allSatisfy { $0.order?.version == 2 })
            #expect(held.count >= 3 && held.bytes > budget, "unwritten views held: \(held)")
            #expect(after.bytes <= budget && after.count < 3, "released once written: \(after)")
        }
        #expect(AggregateRow.cacheUsage.bytes <= AggregateRow.cacheUsage.maxBytes)
        #expect(LogFormat.decodedCacheUsage.bytes <= LogFormat.decodedCacheUsage.maxBytes)
    }

    /// StreamEvents' ring keeps fewer large events, and its floor says exactly which.
    @Test func theTailRingKeepsFewerLargeEventsWithinItsBudget() {
        let command = Self.maximalPlace()
        guard case .place(let rider, let price, let route) = command.kind else { return }
        let event = OrderEvent(
            orderId: command.orderId, version: 1, createdDate: Timestamp(microseconds: 0), commandId: command.commandId,
            kind: .placed(riderId: rider, price: price, route: route))
        let one = TailRing.Entry(partition: 0, offset: 0, event: event).estimatedBytes
        var ring = TailRing(capacity: 100, maxBytes: 3 * one + one / 2, start: [0], seq: 0)
        for offset in 0..<10 { ring.append(TailRing.Entry(partition: 0, offset: Int64(offset), event: event)) }
        #expect(ring.count == 3 && ring.bytes == 3 * one)
        #expect(ring.floor == [7] && ring.covers([7]) && !ring.covers([6]))
        #expect(ring.entries(from: ring.firstSeq, max: 10).map(\.offset) == [7, 8, 9])
        // Small records past the capacity reuse the freed slots, in order.
        for offset in 10..<250 { ring.append(TailRing.Entry(partition: 0, offset: Int64(offset), event: nil)) }
        #expect(ring.count == 100 && ring.floor == [150])
        #expect(ring.entries(from: ring.firstSeq, max: 200).map(\.offset) == Array(150..<250))
    }
}
