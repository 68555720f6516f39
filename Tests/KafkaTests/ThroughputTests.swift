@testable import EngineKafka
import EventLog
import Foundation
import Testing

/// Append throughput on tansu, printed; not a pass/fail measure. Opt in with
/// ORDERS_KAFKA_BENCH=1 (records per run: ORDERS_KAFKA_BENCH_RECORDS, default 20000):
///
///     ORDERS_KAFKA_BENCH=1 LD_LIBRARY_PATH="$(Scripts/kafka-test-broker.sh env)" \
///         swift test --filter KafkaTests.ThroughputTests
@Suite(
    "append throughput on tansu", .serialized,
    .enabled(if: KafkaTestEnvironment.librdkafkaTalksToTansu, KafkaTestEnvironment.skipReason),
    .enabled(if: ProcessInfo.processInfo.environment["ORDERS_KAFKA_BENCH"] == "1", "set ORDERS_KAFKA_BENCH=1 to measure"))
struct ThroughputTests {
    static let total = ProcessInfo.processInfo.environment["ORDERS_KAFKA_BENCH_RECORDS"].flatMap(Int.init) ?? 20_000
    static let value = [UInt8](repeating: 0x61, count: 200)

    func measure(_ label: String, transactions: Bool = true, _ body: @escaping @Sendable (KafkaLogEngine, String) async throws -> Void) async throws {
        try await withTansu(configure: { $0.transactions = transactions }) { _, engine in
            let topic = uniqueTopic("bench")
            try await engine.createTopic(topic, partitions: 10)
            try await engine.append([OutgoingRecord(topic: topic, key: "warm", value: Self.value)], commit: nil)
            let t0 = ContinuousClock.now
            try await body(engine, topic)
            let elapsed = ContinuousClock.now - t0
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let ends = try await engine.endOffsets(topic)
            print("THROUGHPUT \(label): \(Self.total) records of \(Self.value.count) B in \(String(format: "%.2f", seconds)) s = \(Int(Double(Self.total) / seconds)) records/s (ends sum \(ends.reduce(0, +)))")
        }
    }

    @Test("single-record appends, 64 concurrent callers (idempotent producer, acks=all)")
    func singleRecordAppends() async throws {
        try await measure("1 record/append x 64 callers") { engine, topic in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for c in 0..<64 {
                    group.addTask {
                        for i in stride(from: c, to: Self.total, by: 64) {
                            try await engine.append([OutgoingRecord(topic: topic, key: "k\(i)", value: Self.value)], commit: nil)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("500-record appends, one caller (a transaction each)")
    func batchedTransactional() async throws {
        try await measure("500 records/append, transactional") { engine, topic in
            for start in stride(from: 0, to: Self.total, by: 500) {
                try await engine.append(
                    (start..<min(start + 500, Self.total)).map { OutgoingRecord(topic: topic, key: "k\($0)", value: Self.value) }, commit: nil)
            }
        }
    }

    @Test("500-record appends, one caller, transactions off")
    func batchedIdempotent() async throws {
        try await measure("500 records/append, idempotent only", transactions: false) { engine, topic in
            for start in stride(from: 0, to: Self.total, by: 500) {
                try await engine.append(
                    (start..<min(start + 500, Self.total)).map { OutgoingRecord(topic: topic, key: "k\($0)", value: Self.value) }, commit: nil)
            }
        }
    }
}
