import EngineSQLite
import Foundation
import Testing

@Suite("WALCheckpointer")
struct WALCheckpointerTests {
    static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    /// The database's size in pages × page size: what its file holds once every page
    /// left the WAL.
    static func databaseBytes(_ writer: SQLiteQueue) async throws -> Int {
        try await writer.run { conn in
            Int(try conn.scalarText("PRAGMA page_count") ?? "")! * Int(try conn.scalarText("PRAGMA page_size") ?? "")!
        }
    }

    @Test("checkpoints run beside the writer, and the WAL starts over instead of growing")
    func checkpointsBesideTheWriter() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/db.sqlite"
            var options = SQLiteConnection.Options(synchronousFull: false, checkpointInBackground: true)
            options.walAutocheckpointPages = 16
            let writer = try await SQLiteQueue.open(label: "test.writer", path: path, options: options)
            try await writer.run { conn in try conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)") }
            // 20 bursts of 20 commits of two pages each: 3.2 MB through a WAL checkpointed
            // every 16 pages (64 KB), and in full once the writer pauses after a burst.
            // How many rounds run within a burst depends on when the checkpointer's
            // thread gets a core; the pauses make the rest of the test independent of it.
            let bursts = 20, commits = 20
            let blob = [UInt8](repeating: 7, count: 6000)
            let quietBy = ContinuousClock.now + .seconds(60)
            for burst in 0..<bursts {
                for i in 0..<commits {
                    try await writer.run { conn in
                        try conn.transaction {
                            try conn.withStatement("INSERT INTO t(id, v) VALUES (?, ?)") { stmt in
                                stmt.bind(1, burst * commits + i)
                                stmt.bind(2, blob)
                                try stmt.run()
                            }
                        }
                    }
                }
                // Copied into the database while the writer is still open.
                while !writer.walCopied, ContinuousClock.now < quietBy {
                    try await Task.sleep(for: .milliseconds(10))
                }
                try #require(writer.walCopied, "burst \(burst): the WAL was not copied in full")
                #expect(Self.fileSize(path) >= (try await Self.databaseBytes(writer)))
            }
            let written = bursts * commits * blob.count
            #expect(writer.backgroundCheckpoints >= bursts)
            // Every burst but the first began with the WAL starting over, so it never held
            // much more than one burst (about 290 KB: three or four pages a commit), not
            // all that went through it (5.8 MB).
            #expect(writer.walRestarts >= bursts - 1)
            #expect(Self.fileSize(path + "-wal") < written / 4)
            let count = try await writer.run { conn in try conn.scalarText("SELECT count(*) FROM t") }
            #expect(count == "\(bursts * commits)")
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
            // Every page of the database, in its file: nothing is left only in the WAL.
            let copied = ContinuousClock.now + .seconds(10)
            while !writer.walCopied, ContinuousClock.now < copied {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(writer.walCopied)
            // One round, or more when a pause between these commits (a loaded machine)
            // looked like the writer had gone quiet.
            #expect(writer.backgroundCheckpoints >= 1)
            let database = try await Self.databaseBytes(writer)
            #expect(database >= 20 * blob.count)
            #expect(Self.fileSize(path) >= database)
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
