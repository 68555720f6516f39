import EngineSQLite
import EventLog
import Foundation
import Logging

/// A fresh directory under the system temp dir, removed when `body` returns or throws.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("EventLogTests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// Tests log nothing below warnings (the engine logs opens and closes at info).
let testLogger: Logger = {
    var logger = Logger(label: "EventLogTests", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = .warning
    return logger
}()

func openLog(_ directory: String) async throws -> SQLiteLogEngine {
    try await SQLiteLogEngine.open(path: directory + "/log.sqlite", logger: testLogger)
}

/// Every record of `topic`, read through a reader from offset 0 in pages.
func readAll(_ engine: SQLiteLogEngine, _ topic: String, page: Int = 500) async throws -> [LogRecord] {
    let partitions = try await engine.partitionCount(topic)
    let reader = try await engine.openReader(topic: topic, from: Array(repeating: 0, count: partitions))
    defer { Task { await reader.close() } }
    var all: [LogRecord] = []
    while true {
        let batch = try await reader.next(maxRecords: page, timeout: .zero)
        if batch.isEmpty { return all }
        all += batch
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// Runs `body` and fails when it does not finish within `limit` (a hung wait would
/// otherwise hang the whole test run).
func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw DeadlineExceeded(limit: limit)
        }
        group.cancelAll()
        return value
    }
}

struct DeadlineExceeded: Error, CustomStringConvertible {
    var limit: Duration
    var description: String { "did not finish within \(limit)" }
}

/// Runs SQL on a database through a second connection, behind the engine's back.
func execute(path: String, _ sql: String) throws {
    let conn = try SQLiteConnection(path: path)
    defer { conn.close() }
    try conn.execute(sql)
}

/// Writes a record into topic "t" through a second connection, bypassing the engine.
func plantRecord(path: String, partition: Int, offset: Int64) throws {
    try execute(path: path, """
        INSERT INTO records(topic, part, off, key, value, headers, ts)
        SELECT id, \(partition), \(offset), 'planted', x'00', NULL, 0 FROM topics WHERE name = 't'
        """)
}
