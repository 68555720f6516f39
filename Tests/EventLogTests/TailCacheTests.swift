@testable import EngineSQLite
import EventLog
import Testing

/// The engine's tail cache is bounded per partition in bytes as well as in records: 256
/// aggregates rows of orders with maximal routes (each with its memo, the order's history)
/// were about 100 MB a partition, 30 partitions in all (found by a review).
@Suite struct TailCacheTests {
    static func records(topic: String = "t", from: Int64, count: Int, bytes: Int) -> [LogRecord] {
        (0..<count).map { i in
            LogRecord(topic: topic, partition: 0, offset: from + Int64(i), key: "k", value: Array(repeating: 1, count: bytes), timestamp: 0)
        }
    }

    @Test func largeRecordsAreKeptWithinTheByteBudget() {
        let budget = 1 << 20
        let cache = TailCache(capacity: 256, maxBytes: budget)
        for batch in 0..<10 { cache.add(Self.records(from: Int64(batch * 10), count: 10, bytes: 200_000)) }
        let usage = cache.usage(topic: "t", partition: 0)
        #expect(usage.bytes <= budget && usage.count == 5, "\(usage)")
        #expect(cache.records(topic: "t", partition: 0, from: 95, count: 5)?.map(\.offset) == Array(95..<100))
        #expect(cache.records(topic: "t", partition: 0, from: 94, count: 1)?.map(\.offset) == nil)  // in SQLite only
    }

    @Test func theNewestRecordStaysWhateverItsSize() {
        let cache = TailCache(capacity: 256, maxBytes: 1000)
        cache.add(Self.records(from: 0, count: 3, bytes: 5000))
        #expect(cache.usage(topic: "t", partition: 0).count == 1)
        #expect(cache.records(topic: "t", partition: 0, from: 2, count: 1)?.first?.offset == 2)
    }

    /// Small records: the record count bounds, as before.
    @Test func smallRecordsAreKeptByCount() {
        let cache = TailCache(capacity: 256, maxBytes: 2 << 20)
        cache.add(Self.records(from: 0, count: 300, bytes: 500))
        #expect(cache.usage(topic: "t", partition: 0).count == 256)
        #expect(cache.records(topic: "t", partition: 0, from: 44, count: 256) != nil)
    }

    /// The ring wraps around many times, and byte evictions move its start: every range
    /// asked for still comes back whole and in order, and nothing older than the kept
    /// records does.
    @Test func rangesAreReadAcrossTheRingsWrapAround() {
        let cache = TailCache(capacity: 7, maxBytes: 5 * 700)
        var next: Int64 = 0
        for round in 0..<40 {
            // Sizes vary so that the byte budget, not only the count, pushes records out.
            let size = round % 3 == 0 ? 1200 : 300
            cache.add(Self.records(from: next, count: 1 + round % 4, bytes: size))
            next += Int64(1 + round % 4)
            let usage = cache.usage(topic: "t", partition: 0)
            #expect(usage.count >= 1 && usage.count <= 7, "\(usage)")
            let first = next - Int64(usage.count)
            #expect(cache.records(topic: "t", partition: 0, from: first, count: usage.count)?.map(\.offset) == Array(first..<next))
            #expect(cache.records(topic: "t", partition: 0, from: next - 1, count: 1)?.first?.offset == next - 1)
            #expect(cache.records(topic: "t", partition: 0, from: first - 1, count: 1) == nil)
            #expect(cache.records(topic: "t", partition: 0, from: next, count: 1) == nil)
        }
    }

    /// Records of several topics interleaved in one batch (as the writer's derivations
    /// make them) go to their own topics.
    @Test func interleavedTopicsStayApart() {
        let cache = TailCache(capacity: 16)
        var batch: [LogRecord] = []
        for i in 0..<10 {
            batch += Self.records(topic: "a", from: Int64(i), count: 1, bytes: 10)
            batch += Self.records(topic: "b", from: Int64(i), count: 1, bytes: 20)
        }
        cache.add(batch)
        #expect(cache.records(topic: "a", partition: 0, from: 0, count: 10)?.map(\.value.count) == Array(repeating: 10, count: 10))
        #expect(cache.records(topic: "b", partition: 0, from: 0, count: 10)?.map(\.value.count) == Array(repeating: 20, count: 10))
    }
}
