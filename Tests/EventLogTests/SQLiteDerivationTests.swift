import EngineSQLite
import EventLog
import Foundation
import Synchronization
import Testing

/// `LogDerivation`s run by the embedded engine's writer inside its appends.
@Suite("SQLiteLogEngine derivations")
struct SQLiteDerivationTests {
    struct Failure: Error {}
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    /// "in" → "out": every record becomes "row:<value>". "out" → "in": a row of a value
    /// that is not an echo yet comes back as "echo:<value>" (so each appended value makes
    /// four records, like a command making a row, an event and the event's row).
    static func derivations(resets: Counter? = nil) -> [LogDerivation] {
        [
            LogDerivation(
                group: "rows", topic: "in",
                derive: { record, _ in
                    if text(record.value) == "bad" { throw Failure() }
                    return [OutgoingRecord(topic: "out", key: record.key, value: bytes("row:" + text(record.value)))]
                },
                reset: { resets?.value.add(1, ordering: .relaxed) }),
            LogDerivation(
                group: "echoes", topic: "out",
                derive: { record, _ in
                    let value = text(record.value).dropFirst(4)
                    guard !value.hasPrefix("echo:") else { return [] }
                    return [OutgoingRecord(topic: "in", key: record.key, value: bytes("echo:" + value))]
                }),
        ]
    }

    func all(_ engine: SQLiteLogEngine, _ topic: String) async throws -> [String] {
        let reader = try await engine.openReader(topic: topic, from: [0])
        defer { Task { await reader.close() } }
        var values: [String] = []
        while true {
            let batch = try await reader.next(maxRecords: 100, timeout: .milliseconds(50))
            if batch.isEmpty { return values }
            values += batch.map { text($0.value) }
        }
    }

    /// A log with topics "in" and "out" of one partition each, in a temporary directory
    /// (passed on, for a test that reopens it).
    func withTopics(_ body: (SQLiteLogEngine, _ directory: String) async throws -> Void) async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("in", partitions: 1)
            try await engine.createTopic("out", partitions: 1)
            try await body(engine, dir)
            await engine.close()
        }
    }

    @Test("derived records go into the same append, depth first, and the groups' offsets move past them")
    func derivedInTheSameAppend() async throws {
        try await withTopics { engine, _ in
            #expect(try await engine.startDerivations(Self.derivations()))
            let addresses = try await engine.append(
                [OutgoingRecord(topic: "in", key: "k", value: bytes("a")), OutgoingRecord(topic: "in", key: "k", value: bytes("b"))],
                commit: nil)
            // The caller learns where its own records went; the derived ones sit right behind each.
            #expect(addresses.map(\.offset) == [0, 2])
            #expect(try await engine.endOffsets("in") == [4])
            #expect(try await all(engine, "in") == ["a", "echo:a", "b", "echo:b"])
            #expect(try await all(engine, "out") == ["row:a", "row:echo:a", "row:b", "row:echo:b"])
            #expect(try await engine.committedOffsets(group: "rows", topic: "in") == [4])
            #expect(try await engine.committedOffsets(group: "echoes", topic: "out") == [4])
        }
    }

    @Test("derivations start only once their groups have consumed everything")
    func startWaitsForTheGroups() async throws {
        try await withTopics { engine, _ in
            try await engine.append([OutgoingRecord(topic: "in", key: "k", value: bytes("early"))], commit: nil)
            #expect(try await !engine.startDerivations(Self.derivations()))
            // Nothing changed: a later append is not derived.
            try await engine.append([OutgoingRecord(topic: "in", key: "k", value: bytes("x"))], commit: nil)
            #expect(try await engine.endOffsets("out") == [0])

            // The polling consumer of "rows" finishes its work (committing with its output).
            try await engine.append(
                [OutgoingRecord(topic: "out", key: "k", value: bytes("row:early")), OutgoingRecord(topic: "out", key: "k", value: bytes("row:x"))],
                commit: OffsetCommit(group: "rows", topic: "in", offsets: [0: 2]))
            #expect(try await !engine.startDerivations(Self.derivations()))  // "echoes" has not read "out"
            try await engine.append([], commit: OffsetCommit(group: "echoes", topic: "out", offsets: [0: 2]))
            #expect(try await engine.startDerivations(Self.derivations()))

            try await engine.append([OutgoingRecord(topic: "in", key: "k", value: bytes("late"))], commit: nil)
            #expect(try await all(engine, "in") == ["early", "x", "late", "echo:late"])
            #expect(try await all(engine, "out") == ["row:early", "row:x", "row:late", "row:echo:late"])
        }
    }

    @Test("once started, the groups belong to the engine: no consumer is assigned, no offsets are committed for them")
    func groupsAreTakenOver() async throws {
        try await withTopics { engine, _ in
            let early = try await engine.joinGroup("rows", topic: "in")
            #expect(try await early.poll(maxRecords: 10, timeout: .seconds(5)) == .assigned([0]))
            #expect(try await engine.startDerivations(Self.derivations()))
            try await engine.append([OutgoingRecord(topic: "in", key: "k", value: bytes("a"))], commit: nil)

            // The consumer from before the hand-over may still poll; its commit is refused.
            await #expect(throws: LogError.self) {
                try await engine.append(
                    [OutgoingRecord(topic: "out", key: "k", value: bytes("row:a"))],
                    commit: OffsetCommit(group: "rows", topic: "in", offsets: [0: 1]))
            }
            #expect(try await all(engine, "out") == ["row:a", "row:echo:a"])
            await early.close()

            let late = try await engine.joinGroup("rows", topic: "in")
            #expect(try await late.poll(maxRecords: 10, timeout: .milliseconds(200)) == .idle)
            await late.close()
        }
    }

    @Test("a derivation that throws fails its own append only, and is reset")
    func throwingDerivation() async throws {
        try await withTopics { engine, _ in
            let resets = Counter()
            #expect(try await engine.startDerivations(Self.derivations(resets: resets)))
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for value in ["ok1", "bad", "ok2"] {
                    group.addTask {
                        do {
                            try await engine.append([OutgoingRecord(topic: "in", key: value, value: bytes(value))], commit: nil)
                            return true
                        } catch {
                            return false
                        }
                    }
                }
                var results: [Bool] = []
                for try await ok in group { results.append(ok) }
                #expect(results.filter { $0 }.count == 2 && results.count == 3)
            }
            #expect(resets.value.load(ordering: .relaxed) >= 1)
            let values = try await all(engine, "in")
            #expect(Set(values) == ["ok1", "echo:ok1", "ok2", "echo:ok2"])
            #expect(values.count == 4)
            #expect(try await engine.committedOffsets(group: "rows", topic: "in") == [4])
        }
    }

    @Test("a derivation's look-ups see the records its own transaction wrote")
    func lookupsSeeTheTransaction() async throws {
        try await withTopics { engine, _ in
            // "out" counts the records of each key by looking up its own newest count.
            let counter = LogDerivation(
                group: "counter", topic: "in",
                derive: { record, latest in
                    let previous = try latest("out", record.key).map { Int(text($0.value))! } ?? 0
                    return [OutgoingRecord(topic: "out", key: record.key, value: bytes(String(previous + 1)))]
                })
            #expect(try await engine.startDerivations([counter]))
            try await engine.append(["k", "j", "k", "k"].map { OutgoingRecord(topic: "in", key: $0, value: bytes("x")) }, commit: nil)
            try await engine.append([OutgoingRecord(topic: "in", key: "k", value: bytes("x"))], commit: nil)
            #expect(try await all(engine, "out") == ["1", "1", "2", "3", "4"])
        }
    }

    @Test("memos reach the derivations and readers served from memory, never the disk")
    func memosStayInProcess() async throws {
        try await withTopics { engine, dir in
            let seen = Mutex<[String?]>([])
            let tagger = LogDerivation(
                group: "tagger", topic: "in",
                derive: { record, _ in
                    seen.withLock { $0.append(record.memo as? String) }
                    return [OutgoingRecord(topic: "out", key: record.key, value: record.value, memo: "derived from \(text(record.value))")]
                })
            #expect(try await engine.startDerivations([tagger]))
            try await engine.append(
                [OutgoingRecord(topic: "in", key: "k", value: bytes("a"), memo: "memo of a"), OutgoingRecord(topic: "in", key: "k", value: bytes("b"))],
                commit: nil)
            #expect(seen.withLock { $0 } == ["memo of a", nil])
            #expect(try await readAll(engine, "in").map { $0.memo as? String } == ["memo of a", nil])
            #expect(try await readAll(engine, "out").map { $0.memo as? String } == ["derived from a", "derived from b"])
            await engine.close()

            let reopened = try await openLog(dir)
            let stored = try await readAll(reopened, "out")
            #expect(stored.map { text($0.value) } == ["a", "b"])
            #expect(stored.allSatisfy { $0.memo == nil })
            await reopened.close()
        }
    }
}
