import EngineSQLite
import EventLog
import Foundation
import Testing

@Suite("SQLiteLogEngine")
struct SQLiteLogEngineTests {
    @Test("offsets are gapless per partition under 50 × 200 concurrent appends; every ack is read back once, in order")
    func concurrentAppends() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 4)
            let tasks = 50
            let perTask = 200
            let acked = try await withThrowingTaskGroup(of: [(RecordAddress, String)].self) { group in
                for t in 0..<tasks {
                    group.addTask {
                        var acked: [(RecordAddress, String)] = []
                        for i in 0..<perTask {
                            let value = "\(t)-\(i)"
                            // Keys spread over partitions; one task keeps its key, so its
                            // records must come back in its own order.
                            let address = try await engine.append(
                                [OutgoingRecord(topic: "t", key: "key-\(t)", value: bytes(value), headers: ["i": "\(i)"])],
                                commit: nil)
                            #expect(address.count == 1)
                            acked.append((address[0], value))
                        }
                        return acked
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(acked.count == tasks * perTask)

            // Per partition the acknowledged offsets are exactly 0..<n.
            var byPartition: [Int: [Int64]] = [:]
            for (address, _) in acked { byPartition[address.partition, default: []].append(address.offset) }
            let ends = try await engine.endOffsets("t")
            for (partition, offsets) in byPartition {
                #expect(offsets.sorted() == Array(0..<Int64(offsets.count)))
                #expect(ends[partition] == Int64(offsets.count))
            }
            #expect(ends.reduce(0, +) == Int64(tasks * perTask))

            // Everything reads back once, at its address, per task in append order.
            let records = try await readAll(engine, "t", page: 777)
            #expect(records.count == tasks * perTask)
            let expected = Dictionary(uniqueKeysWithValues: acked.map { ($0.0, $0.1) })
            var seen = Set<RecordAddress>()
            var lastPerTask: [String: Int] = [:]
            var lastOffset: [Int: Int64] = [:]
            for record in records {
                let address = RecordAddress(topic: "t", partition: record.partition, offset: record.offset)
                #expect(seen.insert(address).inserted)
                #expect(expected[address] == text(record.value))
                #expect(record.offset == (lastOffset[record.partition] ?? -1) + 1)
                lastOffset[record.partition] = record.offset
                let i = Int(record.headers["i"]!)!
                #expect(i == (lastPerTask[record.key] ?? -1) + 1)
                lastPerTask[record.key] = i
            }
            await engine.close()
        }
    }

    @Test("a multi-record append moves the group's offsets in the same transaction")
    func appendWithOffsetCommit() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("in", partitions: 2)
            try await engine.createTopic("out", partitions: 3)
            let addresses = try await engine.append(
                [
                    OutgoingRecord(topic: "out", key: "a", value: bytes("1"), partition: 0),
                    OutgoingRecord(topic: "out", key: "b", value: bytes("2"), partition: 2),
                    OutgoingRecord(topic: "out", key: "c", value: bytes("3"), partition: 0),
                ],
                commit: OffsetCommit(group: "g", topic: "in", offsets: [0: 7, 1: 3]))
            #expect(addresses.map(\.offset) == [0, 0, 1])
            #expect(addresses.map(\.partition) == [0, 2, 0])
            #expect(try await engine.committedOffsets(group: "g", topic: "in") == [7, 3])
            #expect(try await engine.committedOffsets(group: "other", topic: "in") == [0, 0])
            #expect(try await engine.endOffsets("out") == [2, 0, 1])

            // A failing call (unknown commit topic) writes none of its records.
            await #expect(throws: LogError.self) {
                try await engine.append(
                    [OutgoingRecord(topic: "out", key: "a", value: bytes("x"))],
                    commit: OffsetCommit(group: "g", topic: "missing", offsets: [0: 1]))
            }
            #expect(try await engine.endOffsets("out") == [2, 0, 1])
            #expect(try await engine.committedOffsets(group: "g", topic: "in") == [7, 3])
            await engine.close()
        }
    }

    @Test("calls that fail validation fail alone among concurrent appends")
    func failingCallsAmongConcurrentAppends() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 2)
            let outcomes = await withTaskGroup(of: (Int, Result<[RecordAddress], any Error>).self) { group in
                for i in 0..<300 {
                    group.addTask {
                        let record: OutgoingRecord
                        switch i % 10 {
                        case 3: record = OutgoingRecord(topic: "nope", key: "k", value: bytes("\(i)"))
                        case 7: record = OutgoingRecord(topic: "t", key: "k", value: bytes("\(i)"), partition: 5)
                        default: record = OutgoingRecord(topic: "t", key: "k\(i)", value: bytes("\(i)"))
                        }
                        do {
                            return (i, .success(try await engine.append([record], commit: nil)))
                        } catch {
                            return (i, .failure(error))
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            for (i, outcome) in outcomes {
                switch (i % 10, outcome) {
                case (3, .failure(let error)), (7, .failure(let error)):
                    #expect((error as? LogError)?.code == .unknownTopic)
                case (3, .success), (7, .success):
                    Issue.record("call \(i) should have failed")
                case (_, .failure(let error)):
                    Issue.record("call \(i) failed: \(error)")
                case (_, .success):
                    break
                }
            }
            let records = try await readAll(engine, "t")
            #expect(records.count == 240)
            #expect(Set(records.map { text($0.value) }).count == 240)
            await engine.close()
        }
    }

    @Test("a call failing inside the writer's transaction fails alone; its other records are rolled back")
    func failureInsideGroupCommit() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("t", partitions: 2)
            try await engine.append([OutgoingRecord(topic: "t", key: "k", value: bytes("first"), partition: 0)], commit: nil)
            // Another connection takes offset 1 of partition 0 behind the engine's back: the
            // engine's next insert there hits the UNIQUE index, inside the group commit.
            try plantRecord(path: engine.path, partition: 0, offset: 1)

            let results = await withTaskGroup(of: (String, Bool).self) { group in
                for i in 0..<40 {
                    group.addTask {
                        let name = "ok-\(i)"
                        let ok = (try? await engine.append(
                            [OutgoingRecord(topic: "t", key: name, value: bytes(name), partition: 1)], commit: nil)) != nil
                        return (name, ok)
                    }
                }
                group.addTask {
                    // Atomic: its partition-1 record must not survive its partition-0 failure.
                    let ok = (try? await engine.append(
                        [
                            OutgoingRecord(topic: "t", key: "doomed", value: bytes("doomed-1"), partition: 1),
                            OutgoingRecord(topic: "t", key: "doomed", value: bytes("doomed-0"), partition: 0),
                        ],
                        commit: OffsetCommit(group: "g", topic: "t", offsets: [1: 99]))) != nil
                    return ("doomed", ok)
                }
                return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            #expect(results["doomed"] == false)
            let others = results.filter { $0.key != "doomed" }
            #expect(others.count == 40 && others.values.allSatisfy { $0 })
            let partition1 = try await readAll(engine, "t").filter { $0.partition == 1 }
            #expect(partition1.count == 40)
            #expect(!partition1.contains { $0.key == "doomed" })
            #expect(partition1.map(\.offset) == Array(0..<40))
            #expect(try await engine.committedOffsets(group: "g", topic: "t") == [0, 0])
            await engine.close()
        }
    }

    @Test("latestRecord returns the newest record per key")
    func latestRecord() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await openLog(dir)
            try await engine.createTopic("agg", partitions: 3)
            try await engine.createTopic("other", partitions: 1)
            for v in 0..<5 {
                for key in ["a", "b", "c"] {
                    try await engine.append(
                        [OutgoingRecord(topic: "agg", key: key, value: bytes("\(key)\(v)"), headers: ["v": "\(v)"])],
                        commit: nil)
                }
            }
            try await engine.append([OutgoingRecord(topic: "other", key: "a", value: bytes("elsewhere"))], commit: nil)
            // Same key on an explicit other partition: still the newest.
            try await engine.append(
                [OutgoingRecord(topic: "agg", key: "c", value: bytes("c-moved"), partition: (Partitioner.partition(forKey: "c", count: 3) + 1) % 3)],
                commit: nil)

            let a = try #require(try await engine.latestRecord(topic: "agg", key: "a"))
            #expect(text(a.value) == "a4")
            #expect(a.headers == ["v": "4"])
            #expect(a.partition == Partitioner.partition(forKey: "a", count: 3))
            #expect(text(try #require(try await engine.latestRecord(topic: "agg", key: "c")).value) == "c-moved")
            #expect(text(try #require(try await engine.latestRecord(topic: "other", key: "a")).value) == "elsewhere")
            #expect(try await engine.latestRecord(topic: "agg", key: "zzz") == nil)
            await #expect(throws: LogError.self) { try await engine.latestRecord(topic: "missing", key: "a") }
            await engine.close()

            // The same after a reopen (the hash secret is the database's, not the process's).
            let reopened = try await openLog(dir)
            #expect(text(try #require(try await reopened.latestRecord(topic: "agg", key: "b")).value) == "b4")
            await reopened.close()
        }
    }

    @Test("latestRecord stays right when two keys share a hash (falls back to a scan)")
    func latestRecordHashCollision() async throws {
        try await withTemporaryDirectory { dir in
            do {
                let engine = try await openLog(dir)
                try await engine.createTopic("t", partitions: 2)
                try await engine.append([OutgoingRecord(topic: "t", key: "a", value: bytes("a1"))], commit: nil)
                try await engine.append([OutgoingRecord(topic: "t", key: "b", value: bytes("b1"))], commit: nil)
                // In the in-memory delta: make "a"'s entry point at "b"'s record.
                let topicID = try #require(engine.catalog.topic("t")?.id)
                let idOfB: Int64 = 2  // records.id counts appends from 1
                engine.latest.record([(.init(topic: topicID, hash: engine.keyHash("a")), idOfB)])
                #expect(text(try #require(try await engine.latestRecord(topic: "t", key: "a")).value) == "a1")
                #expect(text(try #require(try await engine.latestRecord(topic: "t", key: "b")).value) == "b1")
                await engine.close()  // folds the delta into the table
            }
            // In the table: the same collision, made by hand.
            try execute(path: dir + "/log.sqlite", """
                UPDATE latest SET id = (SELECT max(id) FROM records WHERE key = 'b')
                WHERE id = (SELECT max(id) FROM records WHERE key = 'a')
                """)
            let engine = try await openLog(dir)
            #expect(text(try #require(try await engine.latestRecord(topic: "t", key: "a")).value) == "a1")
            #expect(text(try #require(try await engine.latestRecord(topic: "t", key: "b")).value) == "b1")
            #expect(try await engine.latestRecord(topic: "t", key: "c") == nil)
            await engine.close()
        }
    }

    @Test("latestRecord stays right while the delta is folded into the table in slices, and after reopens")
    func latestRecordAcrossFolds() async throws {
        try await withTemporaryDirectory { dir in
            var options = SQLiteLogEngine.Options()
            options.latestFlushPolicy.maxEntries = 7
            options.latestFlushPolicy.chunk = 3
            var engine = try await SQLiteLogEngine.open(path: dir + "/log.sqlite", logger: testLogger, options: options)
            try await engine.createTopic("agg", partitions: 3)
            try await engine.createTopic("other", partitions: 2)
            var newest: [String: String] = [:]
            for round in 0..<3 {
                for i in 0..<300 {
                    let key = "k\((i * 37) % 50)"
                    let value = "\(round)-\(i)"
                    let topic = i % 4 == 0 ? "other" : "agg"
                    try await engine.append([OutgoingRecord(topic: topic, key: key, value: bytes(value))], commit: nil)
                    if topic == "agg" { newest[key] = value }
                    if i % 25 == 0 {
                        // Mid-fold: every key still answers with its newest record.
                        for (key, value) in newest.prefix(10) {
                            #expect(try await engine.latestRecord(topic: "agg", key: key).map { text($0.value) } == value)
                        }
                    }
                }
                for (key, value) in newest {
                    #expect(try await engine.latestRecord(topic: "agg", key: key).map { text($0.value) } == value)
                }
                // The batched form: recent keys, folded keys and a missing one in one call.
                let batch = try await engine.latestRecords(topic: "agg", keys: Set(newest.keys).union(["missing"]))
                #expect(batch.mapValues { text($0.value) } == newest)
                #expect(try await engine.latestRecord(topic: "other", key: "k0") != nil)
                #expect(await engine.writerStatistics().folds > 0)
                await engine.close()
                engine = try await SQLiteLogEngine.open(path: dir + "/log.sqlite", logger: testLogger, options: options)
                for (key, value) in newest {
                    #expect(try await engine.latestRecord(topic: "agg", key: key).map { text($0.value) } == value)
                }
            }
            await engine.close()
        }
    }

    @Test("latestRecord is refused on topics created without key tracking")
    func untrackedTopic() async throws {
        try await withTemporaryDirectory { dir in
            let engine = try await SQLiteLogEngine.open(
                path: dir + "/log.sqlite", logger: testLogger, options: .init(keyIndexedTopics: ["tracked"]))
            try await engine.createTopic("tracked", partitions: 1)
            try await engine.createTopic("plain", partitions: 1)
            try await engine.append(
                [OutgoingRecord(topic: "tracked", key: "k", value: bytes("1")), OutgoingRecord(topic: "plain", key: "k", value: bytes("2"))],
                commit: nil)
            #expect(text(try #require(try await engine.latestRecord(topic: "tracked", key: "k")).value) == "1")
            await #expect {
                try await engine.latestRecord(topic: "plain", key: "k")
            } throws: { ($0 as? LogError)?.code == .unavailable }
            await engine.close()
        }
    }

    @Test("KeyHash is SipHash-2-4 (reference vectors)")
    func sipHashVectors() {
        // From the SipHash paper: key 00 01 … 0f; messages 00 01 … (n-1).
        let hash = KeyHash(k0: 0x0706_0504_0302_0100, k1: 0x0f0e_0d0c_0b0a_0908)
        func message(_ n: Int) -> String { String(decoding: (0..<n).map { UInt8($0) }, as: UTF8.self) }
        #expect(UInt64(bitPattern: hash(message(0))) == 0x726f_db47_dd0e_0e31)
        #expect(UInt64(bitPattern: hash(message(8))) == 0x93f5_f579_9a93_2462)
        #expect(UInt64(bitPattern: hash(message(15))) == 0xa129_ca61_49be_45e5)
    }

    @Test("headers survive the JSON codec, including escapes and non-ASCII")
    func headersCodec() {
        let cases: [[String: String]] = [
            ["a": "b"], ["": ""], ["z": "1", "a": "2", "m": "3"],
            ["q\"uote": "back\\slash/", "ctl": "\u{0}\u{1}\u{1f}\n\r\t", "uni": "é😀中"],
        ]
        for headers in cases {
            let encoded = HeadersCodec.encode(headers)
            #expect(encoded != nil)
            #expect(encoded.flatMap(HeadersCodec.decode) == headers)
        }
        #expect(HeadersCodec.encode([:]) == nil)
        #expect(HeadersCodec.encode(["z": "1", "a": "2"]) == #"{"a":"2","z":"1"}"#)
        #expect(HeadersCodec.decode(#"{"x":"\ud83d\ude00"}"#) == ["x": "😀"])
        for bad in ["", "{", #"{"a":1}"#, #"{"a":"b",}"#, #"{"a":"b"} x"#, #"{"a":"\ud83d"}"#] {
            #expect(HeadersCodec.decode(bad) == nil, "\(bad)")
        }
    }

    @Test("topics, partitions and records survive a reopen; headers round-trip")
    func reopen() async throws {
        try await withTemporaryDirectory { dir in
            let headers = ["quote\"back\\slash": "line\nbreak\ttab\u{1}é😀", "": ""]
            do {
                let engine = try await openLog(dir)
                try await engine.createTopic("t", partitions: 3)
                try await engine.createTopic("t", partitions: 5)  // exists: kept as is
                try await engine.append(
                    (0..<30).map { OutgoingRecord(topic: "t", key: "k\($0)", value: bytes("\($0)"), headers: headers) },
                    commit: nil)
                try await engine.append([OutgoingRecord(topic: "t", key: "empty", value: [])], commit: nil)
                await engine.close()
                await #expect(throws: LogError.self) {
                    try await engine.append([OutgoingRecord(topic: "t", key: "k", value: [])], commit: nil)
                }
            }
            let engine = try await openLog(dir)
            #expect(try await engine.partitionCount("t") == 3)
            await #expect(throws: LogError.self) { try await engine.partitionCount("missing") }
            let records = try await readAll(engine, "t")
            #expect(records.count == 31)
            #expect(records.filter { $0.key != "empty" }.allSatisfy { $0.headers == headers })
            #expect(records.first { $0.key == "empty" }?.value == [])
            #expect(records.first { $0.key == "empty" }?.headers == [:])
            #expect(try await engine.endOffsets("t").reduce(0, +) == 31)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            #expect(records.allSatisfy { abs($0.timestamp - now) < 60_000 })
            // Appends continue after the recovered end offsets.
            let next = try await engine.append([OutgoingRecord(topic: "t", key: "k0", value: bytes("again"))], commit: nil)
            #expect(next[0].offset == records.filter { $0.partition == next[0].partition }.count)
            await engine.close()
        }
    }
}
