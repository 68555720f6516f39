@testable import EngineKafka
import EventLog
import Foundation
import Logging
import Testing

/// Fast tests on librdkafka's in-process mock cluster (`test.mock.num.brokers`): no
/// broker process, and they run on whichever librdkafka is loaded (Debian's 2.0.2 too).
@Suite("KafkaLogEngine on librdkafka's mock cluster", .serialized)
struct MockClusterTests {
    /// Runs `body` with an engine on a fresh mock cluster.
    func withMock(
        configure: (inout KafkaLogEngine.Config) -> Void = { _ in },
        _ body: (KafkaLogEngine, RDKafkaMockCluster) async throws -> Void
    ) async throws {
        let cluster = try RDKafkaMockCluster(logger: KafkaTestEnvironment.logger)
        var config = KafkaTestEnvironment.config(brokers: cluster.bootstrapServers)
        configure(&config)
        let engine = try KafkaLogEngine(config: config, logger: KafkaTestEnvironment.logger)
        do {
            try await body(engine, cluster)
        } catch {
            await engine.shutdown()
            throw error
        }
        await engine.shutdown()
        withExtendedLifetime(cluster) {}
    }

    @Test("create, append keyed records, read them back gapless")
    func appendAndRead() async throws {
        try await withMock { engine, cluster in
            let topic = uniqueTopic()
            try cluster.createTopic(topic, partitions: 3)
            try await engine.createTopic(topic, partitions: 3)  // exists: no admin request
            #expect(try await engine.partitionCount(topic) == 3)
            var counts = [0, 0, 0]
            for i in 0..<30 {
                let key = "order-\(i)"
                let address = try #require(
                    try await engine.append([OutgoingRecord(topic: topic, key: key, value: bytes("v\(i)"))], commit: nil).first)
                let p = Partitioner.partition(forKey: key, count: 3)
                #expect(address.partition == p)
                #expect(address.offset == Int64(counts[p]))
                counts[p] += 1
            }
            #expect(try await engine.endOffsets(topic) == counts.map(Int64.init))
            let reader = try await engine.openReader(topic: topic, from: [0, 0, 0])
            let records = try await read(reader, count: 30)
            await reader.close()
            #expect(records.count == 30)
            for p in 0..<3 {
                #expect(records.filter { $0.partition == p }.map(\.offset) == (0..<counts[p]).map(Int64.init))
            }
        }
    }

    /// Appends `count` keyed records to a new topic of `partitions`, 50 to a transaction;
    /// returns the topic and the offsets in each partition (markers take offsets between).
    func filledTopic(_ engine: KafkaLogEngine, _ cluster: RDKafkaMockCluster, partitions: Int, count: Int) async throws
        -> (String, [[Int64]])
    {
        let topic = uniqueTopic()
        try cluster.createTopic(topic, partitions: partitions)
        try await engine.createTopic(topic, partitions: partitions)
        var offsets = Array(repeating: [Int64](), count: partitions)
        for start in stride(from: 0, to: count, by: 50) {
            let batch = (start..<min(count, start + 50)).map { i in
                OutgoingRecord(topic: topic, key: "order-\(i)", value: bytes("v\(i)"))
            }
            for address in try await engine.append(batch, commit: nil) { offsets[address.partition].append(address.offset) }
        }
        return (topic, offsets.map { $0.sorted() })
    }

    @Test("catch-up readers share the pool's consumers: twelve read every record, in order, through two")
    func catchUpReadersShareConsumers() async throws {
        try await withMock(configure: { $0.catchUpReaders = 2 }) { engine, cluster in
            let (topic, offsets) = try await filledTopic(engine, cluster, partitions: 3, count: 300)
            let results = try await withThrowingTaskGroup(of: [LogRecord].self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        let reader = try await engine.openCatchUpReader(topic: topic, from: [0, 0, 0])
                        var all: [LogRecord] = []
                        while all.count < 300 {
                            // Small batches: the readers take turns many times.
                            let batch = try await reader.next(maxRecords: 40, timeout: .seconds(20))
                            if batch.isEmpty { break }
                            all += batch
                        }
                        await reader.close()
                        return all
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.count == 12)
            for records in results {
                #expect(records.count == 300)
                for p in 0..<3 {
                    #expect(records.filter { $0.partition == p }.map(\.offset) == offsets[p])
                }
            }
            #expect(engine.readerPool.created == 2)
        }
    }

    @Test("a lone catch-up reader keeps its consumer's assignment from batch to batch")
    func aLoneReaderIsAssignedOnce() async throws {
        try await withMock { engine, cluster in
            let (topic, _) = try await filledTopic(engine, cluster, partitions: 3, count: 200)
            let reader = try await engine.openCatchUpReader(topic: topic, from: [0, 0, 0])
            var all: [LogRecord] = []
            while all.count < 200 {
                let batch = try await reader.next(maxRecords: 20, timeout: .seconds(20))
                if batch.isEmpty { break }
                all += batch
            }
            #expect(all.count == 200)
            #expect(engine.readerPool.assigns == 1)
            await reader.close()
        }
    }

    @Test("a reader waiting at the end gives its consumer up to one with records to read")
    func aWaitingReaderYields() async throws {
        try await withMock(configure: { $0.catchUpReaders = 1 }) { engine, cluster in
            let (topic, _) = try await filledTopic(engine, cluster, partitions: 2, count: 20)
            let atEnd = try await engine.openCatchUpReader(topic: topic, from: try await engine.endOffsets(topic))
            let waiting = Task { try await atEnd.next(maxRecords: 10, timeout: .seconds(30)) }
            // Let it borrow the only consumer first.
            while engine.readerPool.created == 0 { try await Task.sleep(for: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(100))
            let behind = try await engine.openCatchUpReader(topic: topic, from: [0, 0])
            let records = try await behind.next(maxRecords: 100, timeout: .seconds(30))
            #expect(!records.isEmpty)
            // The first reader is still waiting for a record (for up to 30 s).
            let appended = try await engine.append([OutgoingRecord(topic: topic, key: "late", value: bytes("late"))], commit: nil)
            let late = try await waiting.value
            #expect(late.map(\.offset) == appended.map(\.offset))
            await atEnd.close()
            await behind.close()
        }
    }

    @Test("a group member is assigned every partition and resumes from its commit")
    func groupCommit() async throws {
        try await withMock { engine, cluster in
            let topic = uniqueTopic()
            try cluster.createTopic(topic, partitions: 2)
            for i in 0..<6 {
                try await engine.append([OutgoingRecord(topic: topic, key: "k\(i)", value: bytes("v\(i)"))], commit: nil)
            }
            let member = try await engine.joinGroup("g", topic: topic)
            #expect(try await waitForAssignment(member) == [0, 1])
            var seen: [LogRecord] = []
            let deadline = ContinuousClock.now + .seconds(20)
            while seen.count < 6 && ContinuousClock.now < deadline {
                if case .records(let r) = try await member.poll(maxRecords: 100, timeout: .milliseconds(300)) { seen += r }
            }
            #expect(seen.count == 6)
            var offsets: [Int: Int64] = [:]
            for r in seen { offsets[r.partition] = max(offsets[r.partition] ?? 0, r.offset + 1) }
            try await member.commit(offsets)
            await member.close()
            #expect(try await engine.committedOffsets(group: "g", topic: topic) == [offsets[0] ?? 0, offsets[1] ?? 0])
        }
    }

    @Test("latestRecord finds the newest record of a key")
    func latest() async throws {
        try await withMock { engine, cluster in
            let topic = uniqueTopic()
            try cluster.createTopic(topic, partitions: 2)
            for v in 1...3 {
                try await engine.append([OutgoingRecord(topic: topic, key: "a", value: bytes("a\(v)"))], commit: nil)
            }
            #expect(try await engine.latestRecord(topic: topic, key: "a")?.value == bytes("a3"))
            #expect(try await engine.latestRecord(topic: topic, key: "b") == nil)
        }
    }

    /// A source topic holding `records` records and an empty sink, both of `partitions`
    /// partitions, and a member of group "tx" on the source, assigned.
    func copyingSetup(_ engine: KafkaLogEngine, _ cluster: RDKafkaMockCluster, partitions: Int, records: Int) async throws
        -> (source: String, sink: String, member: any GroupConsumer)
    {
        let source = uniqueTopic("src")
        let sink = uniqueTopic("dst")
        try cluster.createTopic(source, partitions: partitions)
        try cluster.createTopic(sink, partitions: partitions)
        for i in 0..<records {
            try await engine.append([OutgoingRecord(topic: source, key: "k\(i)", value: bytes("v\(i)"))], commit: nil)
        }
        let member = try await engine.joinGroup("tx", topic: source)
        _ = try await waitForAssignment(member)
        return (source, sink, member)
    }

    @Test("a transactional append with an offset commit delivers its records; the end excludes markers")
    func transactionalCommit() async throws {
        try await withMock { engine, cluster in
            let (source, sink, member) = try await copyingSetup(engine, cluster, partitions: 2, records: 4)
            var copied: [LogRecord] = []
            let deadline = ContinuousClock.now + .seconds(20)
            while copied.count < 4 && ContinuousClock.now < deadline {
                guard case .records(let records) = try await member.poll(maxRecords: 100, timeout: .milliseconds(300)) else { continue }
                var offsets: [Int: Int64] = [:]
                for r in records { offsets[r.partition] = r.offset + 1 }
                try await engine.append(
                    records.map { OutgoingRecord(topic: sink, key: $0.key, value: $0.value) },
                    commit: OffsetCommit(group: "tx", topic: source, offsets: offsets))
                copied += records
            }
            #expect(copied.count == 4)
            // The mock cluster accepts TxnOffsetCommit but does not store the offsets
            // (the tansu suite checks them), so only the records are checked here.
            await member.close()
            let ends = try await engine.endOffsets(sink)
            let reader = try await engine.openReader(topic: sink, from: [0, 0])
            let records = try await read(reader, count: 4)
            await reader.close()
            #expect(records.count == 4)
            for p in 0..<2 {
                #expect(ends[p] == (records.filter { $0.partition == p }.map(\.offset).max().map { $0 + 1 } ?? 0))
            }
        }
    }

    @Test("a transactional append with a record librdkafka refuses commits nothing")
    func refusedRecordAbortsTheTransaction() async throws {
        try await withMock { engine, cluster in
            let (source, sink, member) = try await copyingSetup(engine, cluster, partitions: 1, records: 1)
            // Over message.max.bytes (1,000,000 by default): refused when produced.
            let tooLarge = [UInt8](repeating: 0x78, count: 1_200_000)
            await #expect(throws: LogError.self) {
                try await engine.append(
                    [OutgoingRecord(topic: sink, key: "k", value: bytes("small")), OutgoingRecord(topic: sink, key: "k", value: tooLarge)],
                    commit: OffsetCommit(group: "tx", topic: source, offsets: [0: 1]))
            }
            await member.close()
            // The small record was aborted with the transaction: a read_committed reader
            // finds nothing to read (an abort marker at most).
            let reader = try await engine.openReader(topic: sink, from: [0])
            let records = try await reader.next(maxRecords: 10, timeout: .seconds(2))
            await reader.close()
            #expect(records.isEmpty)
        }
    }
}

/// The rebalance bookkeeping between librdkafka's callback and `poll`, without a broker.
@Suite struct RebalanceBookkeepingTests {
    @Test("a lost assignment is given up at once, not again after it is handed back")
    func lostAssignmentIsNotReleasedTwice() {
        let rebalances = KafkaGroupConsumer.Rebalances(onChange: {})
        let partition = [TopicPartition("t", 0)]
        #expect(rebalances.handle(.assign(partition)) == .now)
        #expect(rebalances.handle(.revoke(partition, lost: true)) == .now)
        #expect(rebalances.handle(.assign(partition)) == .now)
        // Nothing left for the next poll to release: the partition stays assigned.
        #expect(rebalances.state.withLock { $0.pendingRevoke == nil && $0.assigned == [0] })
        // A revocation that is not lost waits for the caller to commit first.
        #expect(rebalances.handle(.revoke(partition, lost: false)) == .deferred)
        #expect(rebalances.state.withLock { $0.pendingRevoke?.map(\.partition) == [0] && $0.assigned.isEmpty })
    }
}

/// A reader (each StreamEvents subscriber behind the tail has one) prefetches a few MiB,
/// not librdkafka's default 64 MiB: twenty subscribers that did not read held 1.2 GB.
@Suite struct ReaderPrefetchTests {
    @Test func readersPrefetchLittleAndGroupMembersKeepTheDefaults() {
        let config = KafkaLogEngine.Config(brokers: "127.0.0.1:9092")
        let reader = KafkaLogEngine.consumerProperties(config, group: nil, partitionEOF: false, fetchWait: .milliseconds(100))
        #expect(Int(reader["queued.max.messages.kbytes"] ?? "") ?? .max <= 4096)
        #expect(Int(reader["fetch.max.bytes"] ?? "") ?? .max <= 4 << 20)
        #expect(Int(reader["queued.min.messages"] ?? "") ?? .max <= 1000)
        let member = KafkaLogEngine.consumerProperties(config, group: "g", partitionEOF: false, fetchWait: .milliseconds(100))
        #expect(member["queued.max.messages.kbytes"] == nil)
    }

    /// An operator's larger message.max.bytes raises the reader's fetch cap with it, which
    /// librdkafka requires; a reader then still starts.
    @Test func aLargerMessageSizeRaisesTheReadersFetchCap() throws {
        var config = KafkaLogEngine.Config(brokers: "127.0.0.1:9092")
        config.properties["message.max.bytes"] = String(10 << 20)
        let reader = KafkaLogEngine.consumerProperties(config, group: nil, partitionEOF: false, fetchWait: .milliseconds(100))
        #expect(reader["fetch.max.bytes"] == String(10 << 20))
        _ = try RDKafkaClient(kind: .consumer, properties: reader, logger: Logger(label: "test"))
    }
}
