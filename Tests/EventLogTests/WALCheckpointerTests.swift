import EngineSQLite
import Foundation
import Testing

@Suite("WALCheckpointer")
struct WALCheckpointerTests {
    static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    @Test("checkpoints run beside the writer, and the WAL starts over instead of growing")
    func checkpointsBesideTheWriter() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/db.sqlite"
            var options = SQLiteConnection.Options(synchronousFull: false, checkpointInBackground: true)
            options.walAutocheckpointPages = 16
            let writer = try await SQLiteQueue.open(label: "test.writer", path: path, options: options)
            try await writer.run { conn in try conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)") }
            // 400 commits of two pages each: 3.2 MB through a WAL that is checkpointed
            // every 16 pages (64 KB).
            let rows = 400
            let blob = [UInt8](repeating: 7, count: 6000)
            for i in 0..<rows {
                try await writer.run { conn in
                    try conn.transaction {
                        try conn.withStatement("INSERT INTO t(id, v) VALUES (?, ?)") { stmt in
                            stmt.bind(1, i)
                            stmt.bind(2, blob)
                            try stmt.run()
                        }
                    }
                }
            }
            let written = rows * blob.count
            #expect(writer.backgroundCheckpoints >= 10)
            // Copied into the database while the writer is still open. The checkpointer
            // runs behind the commits: the last ones are copied once the writer is quiet.
            let copied = ContinuousClock.now + .seconds(10)
            while Self.fileSize(path) < written, ContinuousClock.now < copied {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(Self.fileSize(path) >= written)
            // How large the WAL gets depends on how many commits come during a copy (many,
            // when the checkpointer's thread waits for a core): what is sure is that each
            // finished round let the WAL start over, but the last two (the writer's and
            // the idle copy's, followed by no write).
            let rounds = writer.backgroundCheckpoints
            #expect(writer.walRestarts >= rounds - 2)
            #expect(Self.fileSize(path + "-wal") < written)
            let count = try await writer.run { conn in try conn.scalarText("SELECT count(*) FROM t") }
            #expect(count == "\(rows)")
            await writer.close()
        }
    }

    @Test("a writer gone quiet has its last frames copied, below the threshold too")
    func anIdleWriterIsCopiedInFull() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/db.sqlite"
            var options = SQLiteConnection.Options(synchronousFull: false, checkpointInBackground: true)
            // Far more than these commits write: no round starts while they run.
            options.walAutocheckpointPages = 10_000
            let writer = try await SQLiteQueue.open(label: "test.writer", path: path, options: options)
            try await writer.run { conn in try conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)") }
            let blob = [UInt8](repeating: 7, count: 6000)
            for i in 0..<20 {
                try await writer.run { conn in
                    try conn.withStatement("INSERT INTO t(id, v) VALUES (?, ?)") { stmt in
                        stmt.bind(1, i)
                        stmt.bind(2, blob)
                        try stmt.run()
                    }
                }
            }
            let written = 20 * blob.count
            let copied = ContinuousClock.now + .seconds(10)
            while Self.fileSize(path) < written, ContinuousClock.now < copied {
                try await Task.sleep(for: .milliseconds(20))
            }
            // One round, or more when a pause between these commits (a loaded machine)
            // looked like the writer had gone quiet.
            #expect(writer.backgroundCheckpoints >= 1)
            #expect(Self.fileSize(path) >= written)
            // The WAL starts over at the next write instead of growing past what it holds.
            let walBefore = Self.fileSize(path + "-wal")
            try await writer.run { conn in try conn.execute("INSERT INTO t(id, v) VALUES (100, x'00')") }
            #expect(Self.fileSize(path + "-wal") == walBefore)
            await writer.close()
        }
    }

    @Test("without a checkpointer, the WAL hook leaves the frames where they are")
    func theHookReplacesTheAutomaticCheckpoint() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/db.sqlite"
            var options = SQLiteConnection.Options(synchronousFull: false)
            options.walAutocheckpointPages = 16
            let conn = try SQLiteConnection(path: path, options: options)
            var sizes: [Int] = []
            try conn.onCommit { _, pages in sizes.append(pages) }
            try conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
            for i in 0..<50 {
                try conn.withStatement("INSERT INTO t(id, v) VALUES (?, ?)") { stmt in
                    stmt.bind(1, i)
                    stmt.bind(2, [UInt8](repeating: 1, count: 6000))
                    try stmt.run()
                }
            }
            // One call per commit, the WAL growing past the automatic threshold untouched.
            #expect(sizes.count == 51)
            #expect(sizes == sizes.sorted())
            #expect(sizes.last! > 100)
            let (wal, copied) = try conn.checkpoint()
            #expect(wal == sizes.last!)
            #expect(copied == wal)
            conn.close()
        }
    }
}
