@testable import EngineSQLite
import EventLog
import Foundation
import Synchronization
import Testing

@Suite("SQLiteLogEngine durability (WALSyncer) and tail cache")
struct SQLiteDurabilityTests {
    @Test("a failed fsync stops the log for appends already queued too")
    func failedSyncStopsQueuedAppends() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 1)
            // The writer busy: the next append queues behind it.
            let blocker = DispatchSemaphore(value: 0)
            engine.writer.async { _ in blocker.wait() }
            let append = Task {
                try await engine.append([OutgoingRecord(topic: "t", key: "k", value: bytes("a"))], commit: nil, durability: .deferred)
            }
            let queued = ContinuousClock.now + .seconds(10)
            while engine.queue.withLock({ $0.pending.isEmpty }), ContinuousClock.now < queued {
                try await Task.sleep(for: .milliseconds(5))
            }
            engine.syncer.fail(LogError(.io, "fdatasync failed (simulated)"))
            blocker.signal()
            await #expect(throws: LogError.self) { try await append.value }
            #expect(try await engine.endOffsets("t") == [0])
            await engine.close()
        }
    }

    @Test("deferred appends reach group consumers at once, plain readers only after the fsync")
    func deferredVisibility() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 1)
            let reader = try await engine.openReader(topic: "t", from: [0])
            let consumer = try await engine.joinGroup("g", topic: "t")
            #expect(try await consumer.poll(maxRecords: 10, timeout: .seconds(5)) == .assigned([0]))

            engine.syncer.hold()
            let syncsBefore = engine.syncer.syncCount
            _ = try await withDeadline(.seconds(10)) {
                try await engine.append([OutgoingRecord(topic: "t", key: "k", value: bytes("a"))], commit: nil, durability: .deferred)
            }
            // Committed: the group sees it; not yet fsync'd: the reader does not.
            guard case .records(let seen) = try await consumer.poll(maxRecords: 10, timeout: .seconds(5)) else {
                Issue.record("the group consumer did not see the deferred record")
                return
            }
            #expect(seen.map { text($0.value) } == ["a"])
            #expect(try await reader.next(maxRecords: 10, timeout: .milliseconds(300)).isEmpty)
            #expect(engine.syncer.syncCount == syncsBefore)

            engine.syncer.release()
            let read = try await reader.next(maxRecords: 10, timeout: .seconds(10))
            #expect(read.map { text($0.value) } == ["a"])
            #expect(engine.syncer.syncCount > syncsBefore)
            await consumer.close()
            await reader.close()
            await engine.close()
        }
    }

    @Test("a durable append returns only once an fsync covers it")
    func durableWaitsForFsync() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 1)
            engine.syncer.hold()
            let done = Atomic<Bool>(false)
            let append = Task {
                try await engine.append([OutgoingRecord(topic: "t", key: "k", value: bytes("a"))], commit: nil)
                done.store(true, ordering: .sequentiallyConsistent)
            }
            try await Task.sleep(for: .milliseconds(300))
            let returnedEarly = done.load(ordering: .sequentiallyConsistent)
            #expect(!returnedEarly)
            // Committed all the same: visible to `endOffsets` and group consumers.
            #expect(try await engine.endOffsets("t") == [1])
            engine.syncer.release()
            try await withDeadline(.seconds(10)) { try await append.value }
            let returned = done.load(ordering: .sequentiallyConsistent)
            #expect(returned)
            await engine.close()
        }
    }

    @Test("concurrent durable appends share fsyncs")
    func fsyncsAreShared() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 4)
            let before = engine.syncer.syncCount
            let appends = 400
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<appends {
                    group.addTask {
                        try await engine.append([OutgoingRecord(topic: "t", key: "k\(i)", value: bytes("\(i)"))], commit: nil)
                    }
                }
                try await group.waitForAll()
            }
            let syncs = engine.syncer.syncCount - before
            #expect(syncs >= 1)
            #expect(syncs < appends / 2, "\(syncs) fsyncs for \(appends) appends")
            #expect(try await engine.endOffsets("t").reduce(0, +) == Int64(appends))
            await engine.close()
        }
    }

    @Test("readers close behind the writer get the same records from the tail cache as from SQLite")
    func tailCacheMatchesDisk() async throws {
        try await withTemporaryDirectory { dir in
            var options = SQLiteLogEngine.Options()
            options.tailRecordsPerPartition = 8  // small, so reads mix cache and SQLite
            let engine = try await SQLiteLogEngine.open(path: dir + "/log.sqlite", logger: testLogger, options: options)
            try await engine.createTopic("t", partitions: 3)
            let total = 600
            let reader = try await engine.openReader(topic: "t", from: [0, 0, 0])
            let writer = Task {
                for batch in 0..<(total / 20) {
                    let records = (0..<20).map { i in
                        let n = batch * 20 + i
                        return OutgoingRecord(topic: "t", key: "k\(n % 7)", value: bytes("v\(n)"), headers: ["n": "\(n)"], partition: n % 3)
                    }
                    try await engine.append(records, commit: nil, durability: batch % 2 == 0 ? .deferred : .durable)
                    if batch % 5 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                }
            }
            let got = try await withDeadline(.seconds(30)) {
                var records: [LogRecord] = []
                while records.count < total {
                    records += try await reader.next(maxRecords: 7, timeout: .seconds(5))
                }
                return records
            }
            try await writer.value
            // Per partition: offsets 0, 1, 2 … and the values and headers written there.
            for p in 0..<3 {
                let mine = got.filter { $0.partition == p }
                #expect(mine.map(\.offset) == (0..<Int64(total / 3)).map { $0 })
                let expected = stride(from: p, to: total, by: 3).map { "v\($0)" }
                #expect(mine.map { text($0.value) } == expected)
                #expect(mine.map { $0.headers["n"] ?? "" } == stride(from: p, to: total, by: 3).map { "\($0)" })
            }
            // The same records read back from disk by a fresh reader after reopening.
            await reader.close()
            await engine.close()
            let reopened = try await openLog(dir)
            let disk = try await reopened.openReader(topic: "t", from: [0, 0, 0])
            var fromDisk: [LogRecord] = []
            while fromDisk.count < total {
                let page = try await disk.next(maxRecords: 1000, timeout: .seconds(5))
                if page.isEmpty { break }
                fromDisk += page
            }
            func key(_ r: LogRecord) -> String { "\(r.partition)/\(r.offset)/\(r.key)/\(text(r.value))/\(r.headers)/\(r.timestamp)" }
            #expect(Set(fromDisk.map(key)) == Set(got.map(key)))
            await disk.close()
            await reopened.close()
        }
    }
}
