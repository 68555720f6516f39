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

extension TansuTests {
    @Test("a reader waits for records, wakes on an append, and honours cancellation and close")
    func readerWaitsAndWakes() async throws {
        try await withTansu { _, engine in
            let topic = uniqueTopic()
            try await engine.createTopic(topic, partitions: 2)
            let reader = try await engine.openReader(topic: topic, from: [0, 0])

            let t0 = ContinuousClock.now
            #expect(try await reader.next(maxRecords: 10, timeout: .milliseconds(300)).isEmpty)
            #expect(ContinuousClock.now - t0 >= .milliseconds(250))

            let waiting = Task { () -> (records: [LogRecord], at: ContinuousClock.Instant) in
                let records = try await reader.next(maxRecords: 10, timeout: .seconds(20))
                return (records, .now)
            }
            try await Task.sleep(for: .milliseconds(500))
            let appendedAt = ContinuousClock.now
            try await engine.append([OutgoingRecord(topic: topic, key: "k", value: bytes("hello"))], commit: nil)
            let (records, wokeAt) = try await waiting.value
            #expect(records.map(\.value) == [bytes("hello")])
            #expect(wokeAt - appendedAt < .seconds(2), "woke \(wokeAt - appendedAt) after the append")

            let cancelled = Task { try await reader.next(maxRecords: 10, timeout: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(200))
            let cancelAt = ContinuousClock.now
            cancelled.cancel()
            await #expect(throws: CancellationError.self) { try await cancelled.value }
            #expect(ContinuousClock.now - cancelAt < .seconds(1))

            // close ends a pending next at once.
            let pending = Task { try await reader.next(maxRecords: 10, timeout: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(200))
            let closeAt = ContinuousClock.now
            await reader.close()
            #expect(try await pending.value.isEmpty)
            #expect(ContinuousClock.now - closeAt < .seconds(1), "close took \(ContinuousClock.now - closeAt)")
            await #expect {
                try await reader.next(maxRecords: 1, timeout: .milliseconds(10))
            } throws: { ($0 as? LogError)?.code == .closed }
        }
    }

    @Test("a group member resumes from the committed offsets after close and rejoin")
    func groupResumes() async throws {
        try await withTansu { _, engine in
            let topic = uniqueTopic()
            try await engine.createTopic(topic, partitions: 3)
            for i in 0..<30 {
                try await engine.append([OutgoingRecord(topic: topic, key: "k\(i)", value: bytes("v\(i)"))], commit: nil)
            }
            let first = try await engine.joinGroup("resume", topic: topic)
            #expect(try await waitForAssignment(first) == [0, 1, 2])
            var seen: [LogRecord] = []
            let deadline = ContinuousClock.now + .seconds(20)
            while seen.count < 30 && ContinuousClock.now < deadline {
                if case .records(let r) = try await first.poll(maxRecords: 7, timeout: .milliseconds(500)) { seen += r }
            }
            #expect(seen.count == 30)
            // Commit half of each partition.
            var commit: [Int: Int64] = [:]
            for p in 0..<3 {
                let n = seen.filter { $0.partition == p }.count
                commit[p] = Int64(n / 2)
            }
            try await first.commit(commit)
            await first.close()
            #expect(try await engine.committedOffsets(group: "resume", topic: topic) == (0..<3).map { commit[$0]! })

            let second = try await engine.joinGroup("resume", topic: topic)
            #expect(try await waitForAssignment(second) == [0, 1, 2])
            var rest: [LogRecord] = []
            let expected = seen.filter { $0.offset >= commit[$0.partition]! }
            let deadline2 = ContinuousClock.now + .seconds(20)
            while rest.count < expected.count && ContinuousClock.now < deadline2 {
                if case .records(let r) = try await second.poll(maxRecords: 100, timeout: .milliseconds(500)) { rest += r }
            }
            #expect(Set(rest.map { "\($0.partition)/\($0.offset)" }) == Set(expected.map { "\($0.partition)/\($0.offset)" }))
            await second.close()
        }
    }

    @Test(
        "two members split the partitions through revoke and assign, and the survivor takes all back",
        arguments: [true, false])
    func twoMembersSplit(cooperative: Bool) async throws {
        try await withTansu(configure: { $0.cooperativeRebalancing = cooperative }) { _, engine in
            let topic = uniqueTopic()
            try await engine.createTopic(topic, partitions: 4)
            let a = try await engine.joinGroup("split", topic: topic)
            #expect(try await waitForAssignment(a) == [0, 1, 2, 3])
            let b = try await engine.joinGroup("split", topic: topic)

            let tracker = AssignmentTracker()
            tracker.assignments["a"] = [0, 1, 2, 3]
            let deadline = ContinuousClock.now + .seconds(40)
            while ContinuousClock.now < deadline {
                async let pa = a.poll(maxRecords: 100, timeout: .milliseconds(200))
                async let pb = b.poll(maxRecords: 100, timeout: .milliseconds(200))
                let (ea, eb) = try await (pa, pb)
                tracker.apply("a", ea)
                tracker.apply("b", eb)
                if tracker.isSplit(["a", "b"], of: 4) { break }
            }
            #expect(tracker.isSplit(["a", "b"], of: 4), "assignments: \(tracker.assignments)")
            if cooperative {
                // a went on with the partitions it kept; it gave up only those b took.
                #expect(tracker.revoked["a"] == tracker.assignments["b"], "revoked: \(tracker.revoked)")
            } else {
                #expect(tracker.revoked["a"] == [0, 1, 2, 3], "a gave up its partitions before the split")
            }

            // Records go to the member owning their partition.
            for i in 0..<20 {
                try await engine.append([OutgoingRecord(topic: topic, key: "k\(i)", value: bytes("v\(i)"))], commit: nil)
            }
            var got: [String: [LogRecord]] = [:]
            let readUntil = ContinuousClock.now + .seconds(20)
            while got.values.map(\.count).reduce(0, +) < 20 && ContinuousClock.now < readUntil {
                async let pa = a.poll(maxRecords: 100, timeout: .milliseconds(200))
                async let pb = b.poll(maxRecords: 100, timeout: .milliseconds(200))
                let (ea, eb) = try await (pa, pb)
                if case .records(let r) = ea { got["a", default: []] += r }
                if case .records(let r) = eb { got["b", default: []] += r }
            }
            for member in ["a", "b"] {
                let owned = tracker.assignments[member] ?? []
                #expect(got[member, default: []].allSatisfy { owned.contains($0.partition) })
            }
            #expect(got.values.map(\.count).reduce(0, +) == 20)

            // b leaves: a gets every partition back.
            await b.close()
            let back = ContinuousClock.now + .seconds(40)
            while ContinuousClock.now < back {
                tracker.apply("a", try await a.poll(maxRecords: 100, timeout: .milliseconds(200)))
                if tracker.assignments["a"] == [0, 1, 2, 3] { break }
            }
            #expect(tracker.assignments["a"] == [0, 1, 2, 3])
            await a.close()
        }
    }

    @Test("append with an offset commit: the records and the group's offsets land together", arguments: [true, false])
    func appendWithCommit(transactions: Bool) async throws {
        try await withTansu(configure: { $0.transactions = transactions }) { _, engine in
            let source = uniqueTopic("src")
            let sink = uniqueTopic("dst")
            try await engine.createTopic(source, partitions: 2)
            try await engine.createTopic(sink, partitions: 2)
            for i in 0..<10 {
                try await engine.append([OutgoingRecord(topic: source, key: "k\(i)", value: bytes("v\(i)"))], commit: nil)
            }
            let member = try await engine.joinGroup("copier", topic: source)
            _ = try await waitForAssignment(member)
            var copied = 0
            let deadline = ContinuousClock.now + .seconds(20)
            var committed: [Int: Int64] = [:]
            while copied < 10 && ContinuousClock.now < deadline {
                guard case .records(let records) = try await member.poll(maxRecords: 4, timeout: .milliseconds(500)) else { continue }
                var offsets: [Int: Int64] = [:]
                for r in records { offsets[r.partition] = r.offset + 1 }
                try await engine.append(
                    records.map { OutgoingRecord(topic: sink, key: $0.key, value: $0.value, headers: ["source-offset": String($0.offset)]) },
                    commit: OffsetCommit(group: "copier", topic: source, offsets: offsets))
                committed.merge(offsets) { $1 }
                copied += records.count
            }
            #expect(copied == 10)
            #expect(try await engine.committedOffsets(group: "copier", topic: source) == [committed[0] ?? 0, committed[1] ?? 0])
            await member.close()

            // A commit without a live member of the group in this engine.
            try await engine.append(
                [OutgoingRecord(topic: sink, key: "late", value: bytes("late"))],
                commit: OffsetCommit(group: "copier", topic: source, offsets: [0: committed[0] ?? 0, 1: (committed[1] ?? 0)]))

            let ends = try await engine.endOffsets(sink)
            let reader = try await engine.openReader(topic: sink, from: [0, 0])
            let records = try await read(reader, count: 11)
            await reader.close()
            #expect(records.count == 11)
            #expect(Set(records.map { String(decoding: $0.value, as: UTF8.self) }) == Set((0..<10).map { "v\($0)" } + ["late"]))
            // The reachable end: the last record's offset + 1 (transaction markers excluded).
            for p in 0..<2 {
                let last = records.filter { $0.partition == p }.map(\.offset).max()
                #expect(ends[p] == (last.map { $0 + 1 } ?? 0), "partition \(p)")
            }
        }
    }

    @Test("a partition's next owner ends the transaction its previous owner left open, so read_committed readers go on")
    func newOwnerEndsAnAbandonedTransaction() async throws {
        try await withTansu { _, engine in
            let source = uniqueTopic("src")
            let sink = uniqueTopic("dst")
            try await engine.createTopic(source, partitions: 2)
            try await engine.createTopic(sink, partitions: 1)
            // Another instance owned source[1] in group "copier" (so it committed on
            // partition 1's id) and died inside a transaction that wrote to sink[0]:
            // the transaction stays open.
            var other = engine.config
            other.instanceId = "the-dead-one"
            let id = KafkaLogEngine.transactionalId(other, group: "copier", topic: source, partition: 1)
            let dead = try PolledProducer(
                properties: KafkaLogEngine.producerProperties(other, transactionalId: id), logger: KafkaTestEnvironment.logger,
                label: "dead")
            defer { dead.shutdownBlocking(flushMs: 0) }
            try dead.client.initTransactions(timeoutMs: 10_000)
            try dead.client.beginTransaction()
            let open = DeliveryBatch(count: 1)
            _ = dead.enqueue(
                [RDKafkaOutgoing(topic: sink, partition: 0, key: bytes("k"), value: bytes("in the open transaction"), headers: [:])],
                into: open)
            #expect((try? await open.wait()[0].get()) != nil)

            // A record after it: read_committed readers stop at the open transaction.
            try await engine.append([OutgoingRecord(topic: sink, key: "k", value: bytes("after"), partition: 0)], commit: nil)
            let reader = try await engine.openReader(topic: sink, from: [0])
            #expect(try await read(reader, count: 1, timeout: .seconds(3)).isEmpty)

            // This instance is assigned both partitions: it fences their ids before
            // reading (it commits on partition 0's), which ends that transaction.
            let member = try await engine.joinGroup("copier", topic: source)
            #expect(try await waitForAssignment(member) == [0, 1])
            let seen = try await read(reader, count: 2, timeout: .seconds(20))
            #expect(seen.map { String(decoding: $0.value, as: UTF8.self) }.contains("after"))
            await reader.close()
            await member.close()
        }
    }

    @Test("latestRecord: the newest record of a key, through write-through and from another instance")
    func latestRecord() async throws {
        try await withTansu { broker, engine in
            let topic = uniqueTopic()
            try await engine.createTopic(topic, partitions: 3)
            #expect(try await engine.latestRecord(topic: topic, key: "nobody") == nil)
            for version in 1...3 {
                for k in 0..<5 {
                    try await engine.append([OutgoingRecord(topic: topic, key: "k\(k)", value: bytes("k\(k)v\(version)"))], commit: nil)
                }
                // Several records in one call too (a transaction).
                try await engine.append(
                    (0..<3).map { OutgoingRecord(topic: topic, key: "b\($0)", value: bytes("b\($0)v\(version)")) }, commit: nil)
            }
            for k in 0..<5 {
                let latest = try #require(try await engine.latestRecord(topic: topic, key: "k\(k)"))
                #expect(latest.value == bytes("k\(k)v3"))
                #expect(latest.partition == Partitioner.partition(forKey: "k\(k)", count: 3))
            }
            #expect(try await engine.latestRecord(topic: topic, key: "b1")?.value == bytes("b1v3"))
            #expect(try await engine.latestRecord(topic: topic, key: "nobody") == nil)

            // Another instance: no write-through, it reads the partition to its end.
            let other = try KafkaLogEngine(config: KafkaTestEnvironment.config(brokers: broker.brokers), logger: KafkaTestEnvironment.logger)
            #expect(try await other.latestRecord(topic: topic, key: "k2")?.value == bytes("k2v3"))
            try await engine.append([OutgoingRecord(topic: topic, key: "k2", value: bytes("k2v4"))], commit: nil)
            #expect(try await other.latestRecord(topic: topic, key: "k2")?.value == bytes("k2v4"))
            await #expect {
                try await other.latestRecord(topic: "missing-topic", key: "k")
            } throws: { ($0 as? LogError)?.code == .unknownTopic }

            // A batch: keys across partitions, a missing key, and two keys of one partition
            // far apart (two read rounds).
            let p = Partitioner.partition(forKey: "early", count: 3)
            let late = try #require((0..<1000).map { "late-\($0)" }.first { Partitioner.partition(forKey: $0, count: 3) == p })
            try await engine.append([OutgoingRecord(topic: topic, key: "early", value: bytes("early"))], commit: nil)
            try await engine.append(
                (0..<600).map { OutgoingRecord(topic: topic, key: "filler-\($0)", value: bytes("f"), partition: p) }, commit: nil)
            try await engine.append([OutgoingRecord(topic: topic, key: late, value: bytes("late"))], commit: nil)
            let batch = try await other.latestRecords(topic: topic, keys: ["early", late, "k0", "k2", "b2", "nobody"])
            #expect(batch.mapValues { String(decoding: $0.value, as: UTF8.self) } == [
                "early": "early", late: "late", "k0": "k0v3", "k2": "k2v4", "b2": "b2v3",
            ])
            await other.shutdown()
        }
    }

    @Test("no broker: requests fail with .unavailable in bounded time; a broker that comes up is used without a restart")
    func brokerAbsentThenPresent() async throws {
        let broker = try TansuBroker()  // a free port, not started yet
        defer { broker.stop() }
        var config = KafkaTestEnvironment.config(brokers: broker.brokers)
        config.requestTimeout = .seconds(3)
        config.deliveryTimeout = .seconds(3)
        let engine = try KafkaLogEngine(config: config, logger: KafkaTestEnvironment.logger)
        let topic = uniqueTopic()

        let t0 = ContinuousClock.now
        await #expect {
            try await engine.createTopic(topic, partitions: 2)
        } throws: { ($0 as? LogError)?.code == .unavailable }
        #expect(ContinuousClock.now - t0 < .seconds(8), "took \(ContinuousClock.now - t0)")
        let t1 = ContinuousClock.now
        await #expect {
            try await engine.append([OutgoingRecord(topic: topic, key: "k", value: [1])], commit: nil)
        } throws: { ($0 as? LogError)?.code == .unavailable }
        #expect(ContinuousClock.now - t1 < .seconds(8), "took \(ContinuousClock.now - t1)")

        try broker.start()
        try await eventually(timeout: .seconds(20)) { try await engine.createTopic(topic, partitions: 2) }
        let address = try await engine.append([OutgoingRecord(topic: topic, key: "k", value: bytes("after"))], commit: nil)
        #expect(address.first?.offset == 0)

        // The broker goes away with records in flight, then comes back (empty: memory storage).
        broker.stop()
        let t2 = ContinuousClock.now
        await #expect {
            try await engine.append([OutgoingRecord(topic: topic, key: "k", value: bytes("lost"))], commit: nil)
        } throws: { ($0 as? LogError)?.code == .unavailable }
        #expect(ContinuousClock.now - t2 < .seconds(8), "took \(ContinuousClock.now - t2)")
        try broker.start()
        try await eventually(timeout: .seconds(20)) { try await engine.createTopic(topic, partitions: 2) }
        try await eventually(timeout: .seconds(20)) {
            try await engine.append([OutgoingRecord(topic: topic, key: "k", value: bytes("again"))], commit: nil)
        }
        let reader = try await engine.openReader(topic: topic, from: [0, 0])
        let records = try await read(reader, count: 1)
        await reader.close()
        #expect(records.map(\.value).contains(bytes("again")))
        await engine.shutdown()
    }
}

/// Retries `body` until it succeeds or `timeout` passes (then rethrows its last error).
func eventually(timeout: Duration, _ body: () async throws -> Void) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        do {
            try await body()
            return
        } catch {
            if ContinuousClock.now >= deadline { throw error }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// Follows members' assignments from their poll results.
final class AssignmentTracker: @unchecked Sendable {
    // @unchecked: used from one test task at a time.
    var assignments: [String: Set<Int>] = [:]
    var revoked: [String: Set<Int>] = [:]

    func apply(_ member: String, _ poll: GroupPoll) {
        switch poll {
        case .assigned(let partitions): assignments[member, default: []].formUnion(partitions)
        case .revoked(let partitions):
            assignments[member, default: []].subtract(partitions)
            revoked[member, default: []].formUnion(partitions)
        case .records, .idle: break
        }
    }

    func isSplit(_ members: [String], of count: Int) -> Bool {
        let sets = members.map { assignments[$0] ?? [] }
        guard sets.allSatisfy({ !$0.isEmpty }) else { return false }
        let total = sets.map(\.count).reduce(0, +)
        return total == count && sets.reduce(Set<Int>()) { $0.union($1) } == Set(0..<count)
    }
}
