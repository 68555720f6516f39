@testable import EventLog
import Foundation
import OrderDomain
import Testing

/// The caches evict the least recently written entry: what a processor wrote last stays
/// while it builds on it. They once evicted by first insertion, which dropped an order's
/// aggregates row a moment after it was updated (found by a code review).
@Suite struct BoundedCacheTests {
    @Test func theLeastRecentlyWrittenGoesFirst() {
        var cache = BoundedCache<String, Int>(capacity: 3)
        cache["a"] = 1
        cache["b"] = 2
        cache["c"] = 3
        cache["a"] = 10  // now the newest
        cache["d"] = 4  // evicts b, not a
        #expect(cache["a"] == 10 && cache["b"] == nil && cache["c"] == 3 && cache["d"] == 4)
        cache["e"] = 5  // evicts c
        #expect(cache["c"] == nil && cache.count == 3)
    }

    @Test func rewritingOneKeyKeepsTheRestAndTheLogBounded() {
        var cache = BoundedCache<Int, Int>(capacity: 100)
        for i in 0..<100 { cache[i] = i }
        for round in 0..<10_000 { cache[7] = round }
        #expect(cache.count == 100 && cache[0] == 0 && cache[99] == 99 && cache[7] == 9_999)
        cache[100] = 100  // evicts 0, the oldest write now
        #expect(cache[0] == nil && cache[1] == 1 && cache[7] == 9_999)
        cache[7] = nil
        #expect(cache[7] == nil && cache.count == 99)
    }
}

@Suite struct CacheEvictionTests {
    static func record(_ command: OrderCommand, topic: String, offset: Int64) -> LogRecord {
        LogRecord(
            topic: topic, partition: 0, offset: offset, key: command.orderId, value: LogFormat.encode(LogFormat.entry(command)),
            headers: [:], timestamp: 0)
    }

    /// `Aggregator.aggregate` (Kafka's fused processors, the polling aggregator): an order
    /// cached when a batch starts and pushed out by the batch's new orders before, or
    /// between, its own records still gets rows that carry its whole history.
    @Test func anOrderPushedOutOfTheCacheMidBatchKeepsItsHistory() async throws {
        let engine = InMemoryLogEngine()
        let topics = Topics()
        try await topics.provision(on: engine)
        let aggregator = Aggregator(engine: engine, topics: topics, logger: Harness.logger, cacheCapacity: 3)
        var offset: Int64 = 0
        func next(_ command: OrderCommand) -> LogRecord {
            defer { offset += 1 }
            return Self.record(command, topic: topics.commandsAndEvents, offset: offset)
        }
        let k = Harness.placeCommand()
        _ = try await aggregator.aggregate([next(k)])
        _ = try await aggregator.aggregate([next(Harness.placeCommand()), next(Harness.placeCommand())])  // full; k the oldest
        let accept = OrderCommand(
            commandId: OrderIdentity.random(), orderId: k.orderId, expectedVersion: 1, kind: .accept(driverId: OrderIdentity.random()))
        let cancel = OrderCommand(commandId: OrderIdentity.random(), orderId: k.orderId, expectedVersion: 1, kind: .cancel)
        // A new order first (it pushes k out), then k twice with another new order between.
        let rows = try await aggregator.aggregate([
            next(Harness.placeCommand()), next(accept), next(Harness.placeCommand()), next(Harness.placeCommand()), next(cancel),
        ])
        let counts = try rows.filter { $0.key == k.orderId }.map { try LogFormat.decodeAggregate($0.value).entries().count }
        #expect(counts == [2, 3])
    }

    /// The projector's views stay cached until the store has them: a read right after an
    /// acknowledged update never goes to the store's older copy.
    @Test func aViewNotYetWrittenStaysCached() async throws {
        let store = GatedReadModelStore()
        var config = OrderPipeline.Config()
        config.viewCacheCapacity = 4
        try await Harness.run(engine: InMemoryLogEngine(), store: store, config: config) { h in
            let a = try await h.place()
            for _ in 0..<3 { _ = try await h.place() }  // the cache is full, a's view the oldest
            await h.pipeline.projector.waitUntilWritten()
            store.hold()  // the store lags, as it does for a moment after every batch
            let accepted = try await h.update(a.orderId, .accept(driverId: OrderIdentity.random()), version: 1)
            _ = try await h.place()  // one new order: must push out another view, not a's unwritten one
            let read = try await h.pipeline.queries.order(id: a.orderId, deadline: .now + .seconds(1))
            store.release()
            #expect(accepted.order?.version == 2)
            #expect(read?.version == 2)
        }
    }
}
