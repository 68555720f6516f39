@testable import EngineKafka
import EventLog
import Foundation
import Synchronization
import Testing

/// Fails (rather than skips) the suite when CI asked for Kafka and the wrong
/// librdkafka is loaded.
@Test(
    "the run-time librdkafka can talk to tansu",
    .enabled(if: KafkaTestEnvironment.required, "ORDERS_REQUIRE_KAFKA is not set; the tansu suite skips itself when the environment is wrong"))
func environment() {
    #expect(
        KafkaTestEnvironment.librdkafkaTalksToTansu,
        "loaded librdkafka \(KafkaTestEnvironment.loadedVersion); run with LD_LIBRARY_PATH=\"$(Scripts/kafka-test-broker.sh env)\"")
}

@Suite("KafkaLogEngine on tansu", .serialized, .enabled(if: KafkaTestEnvironment.librdkafkaTalksToTansu, KafkaTestEnvironment.skipReason))
struct TansuTests {
    @Test("createTopic is idempotent; partitionCount reads metadata; unknown topics are named")
    func topics() async throws {
        try await withTansu { _, engine in
            let topic = uniqueTopic()
            try await engine.createTopic(topic, partitions: 3)
            try await engine.createTopic(topic, partitions: 3)  // already exists: fine
            #expect(try await engine.partitionCount(topic) == 3)
            #expect(try await engine.endOffsets(topic) == [0, 0, 0])
            await #expect {
                try await engine.partitionCount("missing-topic")
            } throws: { ($0 as? LogError)?.code == .unknownTopic }
        }
    }

    @Test("appends land in the key's murmur2 partition, gapless per partition, and read back in order")
    func appendAndRead() async throws {
        try await withTansu { _, engine in
            let topic = uniqueTopic()
            try await engine.createTopic(topic, partitions: 4)
            var expected: [Int: [String]] = [:]
            for i in 0..<40 {
                let key = "order-\(i % 13)"
                let address = try await engine.append(
                    [OutgoingRecord(topic: topic, key: key, value: bytes("v\(i)"), headers: ["n": String(i)])], commit: nil)
                let p = Partitioner.partition(forKey: key, count: 4)
                #expect(address == [RecordAddress(topic: topic, partition: p, offset: Int64(expected[p, default: []].count))])
                expected[p, default: []].append("v\(i)")
            }
            // A batch in one call (a transaction) and an explicit partition.
            let batch = try await engine.append(
                (0..<5).map { OutgoingRecord(topic: topic, key: "batch", value: bytes("b\($0)"), partition: 2) }, commit: nil)
            #expect(batch.map(\.partition) == Array(repeating: 2, count: 5))
            #expect(batch.map(\.offset) == (0..<5).map { Int64(expected[2, default: []].count + $0) })
            expected[2, default: []] += (0..<5).map { "b\($0)" }

            let ends = try await engine.endOffsets(topic)
            #expect(ends == (0..<4).map { Int64(expected[$0]?.count ?? 0) })

            let reader = try await engine.openReader(topic: topic, from: [0, 0, 0, 0])
            let records = try await read(reader, count: 45)
            await reader.close()
            for p in 0..<4 {
                let inPartition = records.filter { $0.partition == p }
                #expect(inPartition.map(\.offset) == (0..<inPartition.count).map(Int64.init), "gapless offsets in partition \(p)")
                #expect(inPartition.map { String(decoding: $0.value, as: UTF8.self) } == expected[p, default: []])
            }
            let first = try #require(records.first { $0.headers["n"] == "0" })
            #expect(first.key == "order-0")
            #expect(first.timestamp > 1_600_000_000_000)
            #expect(await reader.positions() == ends)
        }
    }
}
