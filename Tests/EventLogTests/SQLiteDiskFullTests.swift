import EngineSQLite
import EventLog
import Foundation
import Synchronization
import Testing

/// The "disk" of these tests is the database's page limit (`PageLimit`): SQLite fails an
/// insert past it with SQLITE_FULL, as on a full disk, and the test raises it again to give
/// the space back.
@Suite("SQLite engine on a full disk (writeFailure)")
struct SQLiteDiskFullTests {
    /// Longer than the engine leaves between two probes of its own (a second).
    static let probeInterval: Duration = .milliseconds(1200)

    /// The page limit a test sets; nil: none.
    final class Space: Sendable {
        let pages = Mutex<Int?>(nil)
        /// No page more than the file has now.
        func fill() { pages.withLock { $0 = 1 } }
        func free() { pages.withLock { $0 = nil } }
    }

    func openLog(_ dir: String, _ space: Space) async throws -> SQLiteLogEngine {
        var options = SQLiteLogEngine.Options()
        options.pageLimit = { space.pages.withLock { $0 } }
        return try await SQLiteLogEngine.open(path: dir + "/log.sqlite", logger: testLogger, options: options)
    }

    func record(_ i: Int) -> OutgoingRecord {
        OutgoingRecord(topic: "t", key: "k\(i)", value: Array(repeating: UInt8(i % 256), count: 1000))
    }

    /// Appends until one fails (the page limit reached); its error.
    func appendUntilFull(_ engine: SQLiteLogEngine) async throws -> LogError? {
        for i in 0..<10_000 {
            do {
                try await engine.append([record(i)], commit: nil)
            } catch let error as LogError {
                return error
            }
        }
        return nil
    }

    /// `writeFailure()` until it answers nil, for up to `limit`.
    func waitForRecovery(_ engine: SQLiteLogEngine, within limit: Duration) async throws -> LogError? {
        let deadline = ContinuousClock.now + limit
        var failure = await engine.writeFailure()
        while failure != nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            failure = await engine.writeFailure()
        }
        return failure
    }

    @Test("a full disk is reported until the space is back, learnt by a probe without any append")
    func fullDiskWithoutTraffic() async throws {
        try await withTemporaryDirectory { dir in
            let space = Space()
            let engine = try await openLog(dir, space)
            try await engine.createTopic("t", partitions: 1)
            try await engine.append([record(0)], commit: nil)
            #expect(await engine.writeFailure() == nil)
            // Reads go on: what the health check asked before, and what kept it SERVING.
            #expect(try await engine.endOffsets("t") == [1])

            space.fill()
            let appendError = try await appendUntilFull(engine)
            #expect(appendError?.message.contains("database or disk is full") == true)
            let failure = await engine.writeFailure()
            #expect(failure?.message.hasPrefix("the disk is full: \(engine.path)") == true, "\(String(describing: failure))")
            // Still full: the probes fail as the appends did.
            try await Task.sleep(for: Self.probeInterval)
            #expect(await engine.writeFailure() != nil)
            try await Task.sleep(for: Self.probeInterval)
            #expect(await engine.writeFailure() != nil)

            space.free()
            #expect(try await waitForRecovery(engine, within: .seconds(5)) == nil)
            try await engine.append([record(1)], commit: nil)
            await engine.close()
        }
    }

    @Test("a group commit that succeeds ends the failure at once")
    func commitEndsFailure() async throws {
        try await withTemporaryDirectory { dir in
            let space = Space()
            let engine = try await openLog(dir, space)
            try await engine.createTopic("t", partitions: 1)
            space.fill()
            #expect(try await appendUntilFull(engine) != nil)
            // The first look probes at once (and fails); the next one only a second later.
            #expect(await engine.writeFailure() != nil)
            #expect(await engine.writeFailure() != nil)
            space.free()
            try await engine.append([record(1)], commit: nil)
            #expect(await engine.writeFailure() == nil)
            await engine.close()
        }
    }

    @Test("an append failing for another reason than the disk says nothing of it")
    func otherFailuresAreNotTheDisk() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir, Space())
            try await engine.createTopic("t", partitions: 1)
            try await engine.append([record(0)], commit: nil)
            // Offset 1 taken behind the engine's back: its next insert hits the UNIQUE index.
            try plantRecord(path: engine.path, partition: 0, offset: 1)
            await #expect(throws: LogError.self) { try await engine.append([record(1)], commit: nil) }
            #expect(await engine.writeFailure() == nil)
            await engine.close()
        }
    }

    @Test("a failed fsync is reported for good")
    func failedSync() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir, Space())
            try await engine.createTopic("t", partitions: 1)
            engine.syncer.fail(LogError(.io, "fdatasync failed (simulated)"))
            #expect(await engine.writeFailure()?.message == "fdatasync failed (simulated)")
            try await Task.sleep(for: Self.probeInterval)
            #expect(await engine.writeFailure()?.message == "fdatasync failed (simulated)")
            await engine.close()
        }
    }

    @Test("the read model reports a full disk until an update is applied again")
    func readModelFullDisk() async throws {
        try await withTemporaryDirectory { dir in
            let space = Space()
            let store = try await SQLiteReadModelStore.open(
                path: dir + "/readmodel.sqlite", logger: testLogger, pageLimit: { space.pages.withLock { $0 } })
            func apply(_ i: Int) async throws {
                let (view, outcome) = SQLiteReadModelStoreTests.placed(i)
                try await store.apply(ReadModelUpdate(views: [view], outcomes: [outcome], checkpoint: outcome.position))
            }
            try await apply(1)
            #expect(await store.writeFailure() == nil)
            space.fill()
            var failed = false
            for i in 2..<10_000 where !failed {
                do { try await apply(i) } catch { failed = true }
            }
            #expect(failed)
            #expect(await store.writeFailure()?.message.hasPrefix("the disk is full: ") == true)
            space.free()
            try await apply(10_001)
            #expect(await store.writeFailure() == nil)
            await store.close()
        }
    }
}
