import EngineSQLite
import EventLog
import Foundation
import Testing

/// Log files written by older builds open with this one, their records whole.
@Suite("SQLite log format")
struct SQLiteLogFormatTests {
    /// The schema builds up to 518c9f5 created (orders-server on the embedded engine since
    /// 7a9893a), verbatim: `user_version` 1 like today's, but no `meta` (key-hash secret),
    /// no `latest` and no `topics.key_indexed`; the newest record per key came from
    /// `records_key`.
    static let formatBeforeLatestIndex = """
        CREATE TABLE IF NOT EXISTS topics(
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            partitions INTEGER NOT NULL CHECK (partitions > 0));
        CREATE TABLE IF NOT EXISTS records(
            id INTEGER PRIMARY KEY,
            topic INTEGER NOT NULL,
            part INTEGER NOT NULL,
            off INTEGER NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            headers TEXT,
            ts INTEGER NOT NULL);
        CREATE UNIQUE INDEX IF NOT EXISTS records_position ON records(topic, part, off);
        CREATE INDEX IF NOT EXISTS records_key ON records(topic, key);
        CREATE TABLE IF NOT EXISTS group_offsets(
            grp TEXT NOT NULL,
            topic INTEGER NOT NULL,
            part INTEGER NOT NULL,
            off INTEGER NOT NULL,
            PRIMARY KEY (grp, topic, part)) WITHOUT ROWID;
        PRAGMA user_version = 1;
        """

    @Test("a log from before the latest-per-key index opens, keeps its records and finds each key's newest")
    func aLogFromBeforeTheLatestIndexOpens() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/log.sqlite"
            // Topic t of two partitions: k0 twice in partition 0, k1 once in partition 1, a
            // header on one record and a group's committed offsets; topic u, which this
            // build does not index by key (as orders-server indexes only order-aggregates).
            let old = try SQLiteConnection(path: path, options: .init())
            try old.execute(Self.formatBeforeLatestIndex)
            try old.execute(
                """
                INSERT INTO topics(id, name, partitions) VALUES (1, 't', 2), (2, 'u', 1);
                INSERT INTO records(id, topic, part, off, key, value, headers, ts) VALUES
                    (1, 1, 0, 0, 'k0', CAST('v1' AS BLOB), NULL, 1000),
                    (2, 1, 1, 0, 'k1', CAST('v2' AS BLOB), '{"h":"x"}', 1001),
                    (3, 2, 0, 0, 'k0', CAST('u1' AS BLOB), NULL, 1001),
                    (4, 1, 0, 1, 'k0', CAST('v3' AS BLOB), NULL, 1002);
                INSERT INTO group_offsets(grp, topic, part, off) VALUES ('g', 1, 0, 2), ('g', 1, 1, 1);
                """)
            old.close()

            let options = SQLiteLogEngine.Options(keyIndexedTopics: ["t"])
            let log = try await SQLiteLogEngine.open(path: path, logger: testLogger, options: options)
            #expect(try await log.endOffsets("t") == [2, 1])
            #expect(try await readAll(log, "u").map { text($0.value) } == ["u1"])
            await #expect(throws: LogError.self) { try await log.latestRecord(topic: "u", key: "k0") }
            #expect(try await log.committedOffsets(group: "g", topic: "t") == [2, 1])
            #expect(try await readAll(log, "t").map { text($0.value) }.sorted() == ["v1", "v2", "v3"])
            #expect(try await log.latestRecord(topic: "t", key: "k0").map { text($0.value) } == "v3")
            #expect(try await log.latestRecord(topic: "t", key: "k1")?.headers == ["h": "x"])
            // Appends go on at the old ends, and the newest per key follows them.
            _ = try await log.append([OutgoingRecord(topic: "t", key: "k0", value: bytes("v4"), partition: 0)], commit: nil)
            #expect(try await log.endOffsets("t") == [3, 1])
            #expect(try await log.latestRecord(topic: "t", key: "k0").map { text($0.value) } == "v4")
            await log.close()

            let reopened = try await SQLiteLogEngine.open(path: path, logger: testLogger, options: options)
            #expect(try await readAll(reopened, "t").map { text($0.value) }.sorted() == ["v1", "v2", "v3", "v4"])
            #expect(try await reopened.latestRecord(topic: "t", key: "k0").map { text($0.value) } == "v4")
            #expect(try await reopened.latestRecord(topic: "t", key: "k1").map { text($0.value) } == "v2")
            await reopened.close()
        }
    }
}
