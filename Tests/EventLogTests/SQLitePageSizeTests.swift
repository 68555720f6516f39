import EngineSQLite
import EventLog
import Foundation
import Testing

/// The log's page size applies to logs it creates; a log created with another keeps it.
@Suite("SQLite page size")
struct SQLitePageSizeTests {
    static func pageSize(_ path: String) throws -> Int {
        let conn = try SQLiteConnection(path: path, options: .init())
        defer { conn.close() }
        return Int(try conn.scalarText("PRAGMA page_size") ?? "") ?? 0
    }

    @Test("a new log gets the engine's page size")
    func aNewLogGetsTheEnginesPageSize() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 2)
            _ = try await engine.append([OutgoingRecord(topic: "t", key: "k", value: bytes("v"))], commit: nil)
            await engine.close()
            #expect(try Self.pageSize(dir + "/log.sqlite") == SQLiteLogEngine.Options.defaults.pageSize)
            #expect(SQLiteLogEngine.Options.defaults.pageSize == 16 << 10)
        }
    }

    @Test("a log created with 4 KiB pages keeps them, and its records, when opened again")
    func anExistingLogKeepsItsPages() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/log.sqlite"
            var old = SQLiteLogEngine.Options()
            old.pageSize = 4096
            let before = try await SQLiteLogEngine.open(path: path, logger: testLogger, options: old)
            try await before.createTopic("t", partitions: 2)
            for i in 0..<50 {
                _ = try await before.append([OutgoingRecord(topic: "t", key: "k\(i % 5)", value: bytes("v\(i)"))], commit: nil)
            }
            await before.close()
            #expect(try Self.pageSize(path) == 4096)

            let after = try await openLog(dir)
            _ = try await after.append([OutgoingRecord(topic: "t", key: "k0", value: bytes("v50"))], commit: nil)
            let values = try await readAll(after, "t").map { text($0.value) }
            #expect(Set(values) == Set((0...50).map { "v\($0)" }))
            let latest = try await after.latestRecord(topic: "t", key: "k0")
            #expect(latest.map { text($0.value) } == "v50")
            await after.close()
            #expect(try Self.pageSize(path) == 4096)
        }
    }
}
