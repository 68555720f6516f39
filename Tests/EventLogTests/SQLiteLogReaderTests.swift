import EngineSQLite
import EventLog
import Foundation
import Testing

@Suite("SQLiteLogEngine readers and groups")
struct SQLiteLogReaderTests {
    @Test("a waiting reader wakes on append, well before its timeout")
    func wakesOnAppend() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 3)
            let reader = try await engine.openReader(topic: "t", from: [0, 0, 0])
            let started = ContinuousClock.now
            let got = Task { try await reader.next(maxRecords: 10, timeout: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(200))
            try await engine.append([OutgoingRecord(topic: "t", key: "k", value: bytes("hello"))], commit: nil)
            let records = try await withDeadline(.seconds(10)) { try await got.value }
            #expect(records.map { text($0.value) } == ["hello"])
            #expect(ContinuousClock.now - started < .seconds(10))
            var expected: [Int64] = [0, 0, 0]
            expected[records[0].partition] = 1
            #expect(await reader.positions() == expected)
            await reader.close()
            await engine.close()
        }
    }

    @Test("a reader times out with [] when nothing arrives")
    func timesOut() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 2)
            try await engine.createTopic("busy", partitions: 1)
            let reader = try await engine.openReader(topic: "t", from: [0, 0])
            // Appends to another topic wake nobody here.
            let noise = Task {
                for i in 0..<20 {
                    try await engine.append([OutgoingRecord(topic: "busy", key: "k", value: bytes("\(i)"))], commit: nil)
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            let started = ContinuousClock.now
            let records = try await reader.next(maxRecords: 10, timeout: .milliseconds(300))
            let elapsed = ContinuousClock.now - started
            #expect(records.isEmpty)
            #expect(elapsed >= .milliseconds(290))
            #expect(elapsed < .seconds(5))
            try await noise.value
            await engine.close()
        }
    }

    @Test("cancelling the task ends a reader's wait promptly")
    func cancellation() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 2)
            let reader = try await engine.openReader(topic: "t", from: [0, 0])
            let waiting = Task { try await reader.next(maxRecords: 10, timeout: .seconds(60)) }
            try await Task.sleep(for: .milliseconds(200))
            let cancelled = ContinuousClock.now
            waiting.cancel()
            let result = try await withDeadline(.seconds(10)) { await waiting.result }
            #expect(ContinuousClock.now - cancelled < .seconds(2))
            #expect(throws: CancellationError.self) { try result.get() }
            // The reader still works afterwards.
            try await engine.append([OutgoingRecord(topic: "t", key: "k", value: bytes("x"))], commit: nil)
            #expect(try await reader.next(maxRecords: 10, timeout: .seconds(5)).count == 1)
            await engine.close()
        }
    }

    @Test("closing the engine ends a reader's wait with .closed")
    func closeEndsWait() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 1)
            let reader = try await engine.openReader(topic: "t", from: [0])
            let waiting = Task { try await reader.next(maxRecords: 10, timeout: .seconds(60)) }
            try await Task.sleep(for: .milliseconds(100))
            await engine.close()
            let result = try await withDeadline(.seconds(10)) { await waiting.result }
            #expect(throws: LogError.self) { try result.get() }
        }
    }

    @Test("a reader starts from the given offsets and pages fairly across partitions")
    func resumesFromOffsets() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 3)
            for p in 0..<3 {
                try await engine.append(
                    (0..<10).map { OutgoingRecord(topic: "t", key: "k", value: bytes("\(p):\($0)"), partition: p) },
                    commit: nil)
            }
            let reader = try await engine.openReader(topic: "t", from: [5, 0, 10])
            let first = try await reader.next(maxRecords: 6, timeout: .zero)
            // 6 records shared by the two partitions that have any: 3 each.
            #expect(first.map { text($0.value) } == ["0:5", "0:6", "0:7", "1:0", "1:1", "1:2"])
            #expect(await reader.positions() == [8, 3, 10])
            let rest = try await reader.next(maxRecords: 100, timeout: .zero)
            #expect(rest.map { text($0.value) } == ["0:8", "0:9"] + (3..<10).map { "1:\($0)" })
            #expect(await reader.positions() == [10, 10, 10])
            #expect(try await reader.next(maxRecords: 100, timeout: .zero).isEmpty)

            await #expect(throws: LogError.self) { try await engine.openReader(topic: "t", from: [0, 0]) }
            await #expect(throws: LogError.self) { try await engine.openReader(topic: "missing", from: [0]) }
            await engine.close()
        }
    }

    @Test("a group consumer resumes from its committed offsets after the engine is reopened")
    func groupResumesAfterReopen() async throws {
        try await withTemporaryDirectory { dir in
            do {
                let engine = try await openLog(dir)
                try await engine.createTopic("t", partitions: 2)
                try await engine.append(
                    (0..<10).map { OutgoingRecord(topic: "t", key: "k", value: bytes("\($0)"), partition: $0 % 2) },
                    commit: nil)
                let consumer = try await engine.joinGroup("g", topic: "t")
                #expect(consumer.group == "g" && consumer.topic == "t")
                #expect(try await consumer.poll(maxRecords: 100, timeout: .seconds(1)) == .assigned([0, 1]))
                // A second member waits while the first owns every partition.
                let second = try await engine.joinGroup("g", topic: "t")
                #expect(try await second.poll(maxRecords: 100, timeout: .milliseconds(50)) == .idle)

                guard case .records(let records) = try await consumer.poll(maxRecords: 4, timeout: .seconds(1)) else {
                    Issue.record("expected records")
                    return
                }
                #expect(records.map { text($0.value) } == ["0", "2", "1", "3"])
                try await consumer.commit([0: 2, 1: 2])
                #expect(try await engine.committedOffsets(group: "g", topic: "t") == [2, 2])
                // Read further but do not commit: these come again after the reopen.
                _ = try await consumer.poll(maxRecords: 4, timeout: .seconds(1))
                await consumer.close()
                #expect(try await second.poll(maxRecords: 100, timeout: .milliseconds(50)) == .assigned([0, 1]))
                await second.close()
                await engine.close()
            }
            let engine = try await openLog(dir)
            #expect(try await engine.committedOffsets(group: "g", topic: "t") == [2, 2])
            let consumer = try await engine.joinGroup("g", topic: "t")
            #expect(try await consumer.poll(maxRecords: 100, timeout: .seconds(1)) == .assigned([0, 1]))
            guard case .records(let records) = try await consumer.poll(maxRecords: 100, timeout: .seconds(1)) else {
                Issue.record("expected records")
                return
            }
            #expect(records.map { text($0.value) } == ["4", "6", "8", "5", "7", "9"])
            #expect(try await consumer.poll(maxRecords: 100, timeout: .milliseconds(50)) == .idle)
            await consumer.close()
            await engine.close()
        }
    }
}
