#!/usr/bin/env bash
# Throughput of the embedded log (EngineSQLite) without the rest of the pipeline:
# concurrent small appends (group commit), paged reads, latestRecord, opening a big log,
# and read-model applies. Builds EngineSQLite in release, links a small driver against
# its objects, and runs it in a temporary directory (removed afterwards).
#
#   Scripts/bench-log.sh [records]        # default 400000 appended records per scenario
#
# Not a test: numbers depend on the disk (every commit is fsync'd) and on the load.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-400000}"
swift build -c release --target EngineSQLite | grep -E "error|warning" -A3 || true
BIN=.build/release
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/main.swift" <<'SWIFT'
import EngineSQLite
import EventLog
import Foundation
import Logging
import OrderDomain

let total = Int(CommandLine.arguments[2])!
let root = CommandLine.arguments[1]
var logger = Logger(label: "bench")
logger.logLevel = .warning

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
let value = [UInt8](repeating: 0x61, count: 300)

/// `tasks` concurrent appenders, `perCall` records each call, `total` records in all;
/// `keyedShare` of the calls (in fifths) go to the key-indexed topic.
func appendScenario(_ engine: SQLiteLogEngine, tasks: Int, perCall: Int, keyedFifths: Int) async throws {
    // One appender waits for every fsync alone: a small sample says enough.
    let calls = (tasks == 1 ? min(total, 2_000) : total) / perCall
    func count() async throws -> Int64 {
        try await engine.endOffsets("bench").reduce(0, +) + engine.endOffsets("bench-keyed").reduce(0, +)
    }
    let before = try await count()
    let stats0 = await engine.writerStatistics()
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for t in 0..<tasks {
            group.addTask {
                var i = t
                while i < calls {
                    let topic = i % 5 < keyedFifths ? "bench-keyed" : "bench"
                    let records = (0..<perCall).map { j in
                        OutgoingRecord(topic: topic, key: "order-\((i &* 7919) % 100_000)", value: value, headers: ["n": "\(j)"])
                    }
                    try await engine.append(records, commit: nil)
                    i += tasks
                }
            }
        }
        try await group.waitForAll()
    }
    let elapsed = seconds(ContinuousClock.now - start)
    let written = try await count() - before
    print(String(format: "append  tasks=%4d records/call=%d keyed=%d/5: %8.0f records/s  %7.0f calls/s  (%lld records, %.2f s)",
                 tasks, perCall, keyedFifths, Double(written) / elapsed, Double(written / Int64(perCall)) / elapsed, written, elapsed))
    let stats = await engine.writerStatistics()
    let commits = stats.commits - stats0.commits
    let folds = stats.folds - stats0.folds
    if folds > 0 {
        print(String(format: "        %d folds of latest: %.0f keys, %.0f ms each", folds,
                     Double(stats.foldedEntries - stats0.foldedEntries) / Double(folds),
                     1e3 * seconds(stats.foldTime - stats0.foldTime) / Double(folds)))
    }
    print(String(format: "        %d commits, %.0f records/commit; writer busy %.0f%%: inserts %.1f µs/record, COMMIT %.2f ms each",
                 commits, Double(written) / Double(commits),
                 100 * (seconds(stats.insertTime - stats0.insertTime) + seconds(stats.commitTime - stats0.commitTime)) / elapsed,
                 1e6 * seconds(stats.insertTime - stats0.insertTime) / Double(written),
                 1e3 * seconds(stats.commitTime - stats0.commitTime) / Double(commits)))
}

let dir = root + "/log"
try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
let options = SQLiteLogEngine.Options(keyIndexedTopics: ["bench-keyed"])
var engine = try await SQLiteLogEngine.open(path: dir + "/log.sqlite", logger: logger, options: options)
try await engine.createTopic("bench", partitions: 10)
try await engine.createTopic("bench-keyed", partitions: 10)
let scenarios = (ProcessInfo.processInfo.environment["BENCH_SCENARIOS"] ?? "1:1:0,64:1:0,256:1:0,1000:1:0,1000:1:5,1000:1:2,256:5:0,1000:5:2").split(separator: ",").map { s in let p = s.split(separator: ":").map { Int($0)! }; return (p[0], p[1], p[2]) }
for (tasks, perCall, keyed) in scenarios {
    try await appendScenario(engine, tasks: tasks, perCall: perCall, keyedFifths: keyed)
}
if ProcessInfo.processInfo.environment["BENCH_APPEND_ONLY"] != nil { exit(0) }

// Paged read of everything.
let count = try await engine.endOffsets("bench").reduce(0, +) + engine.endOffsets("bench-keyed").reduce(0, +)
let reader = try await engine.openReader(topic: "bench", from: Array(repeating: 0, count: 10))
var read = 0
var start = ContinuousClock.now
while true {
    let batch = try await reader.next(maxRecords: 1000, timeout: .zero)
    if batch.isEmpty { break }
    read += batch.count
}
print(String(format: "read    pages of 1000: %8.0f records/s  (%d records)", Double(read) / seconds(ContinuousClock.now - start), read))

// latestRecord, sequential and 16-way concurrent.
start = ContinuousClock.now
for i in 0..<20_000 { _ = try await engine.latestRecord(topic: "bench-keyed", key: "order-\(i * 7 % 100_000)") }
print(String(format: "latest  sequential:    %8.0f lookups/s", 20_000 / seconds(ContinuousClock.now - start)))
start = ContinuousClock.now
try await withThrowingTaskGroup(of: Void.self) { group in
    for t in 0..<16 {
        group.addTask { for i in 0..<2_000 { _ = try await engine.latestRecord(topic: "bench-keyed", key: "order-\((i * 16 + t) % 100_000)") } }
    }
    try await group.waitForAll()
}
print(String(format: "latest  16 concurrent: %8.0f lookups/s", 32_000 / seconds(ContinuousClock.now - start)))

// Reopen: no scan at start-up.
await engine.close()
for _ in 0..<3 {
    start = ContinuousClock.now
    engine = try await SQLiteLogEngine.open(path: dir + "/log.sqlite", logger: logger, options: options)
    print(String(format: "open    %lld records: %.3f s", count, seconds(ContinuousClock.now - start)))
    await engine.close()
}

// Read model: 25,000 orders placed, as updates of 5 views + 5 outcomes (4 concurrent
// appliers) and as updates of 250 (one applier, as a projector applying a page).
let store = try await SQLiteReadModelStore.open(path: root + "/readmodel.sqlite", logger: logger)
let t0 = Timestamp(microseconds: 1_618_822_699_818_153)
func update(_ n: Int, size: Int) -> ReadModelUpdate {
    var views: [OrderView] = []
    var outcomes: [CommandOutcome] = []
    for k in 0..<size {
        let id = String(format: "00000000-0000-4000-8000-%012d", n * size + k)
        let event = OrderEvent(orderId: id, version: 1, createdDate: t0, commandId: "c-\(n)-\(k)",
            kind: .placed(riderId: id, price: "12.50", route: [Waypoint(address: "A street 1", lat: 1, lon: 2), Waypoint(address: "B street 2", lat: 3, lon: 4)]))
        let order = OrderDecider.evolve(nil, event)
        let position = LogPosition(offsets: Array(repeating: Int64(n), count: 10))
        views.append(OrderView(orderId: id, order: order, events: [ProjectedEvent(event: event, position: position)]))
        outcomes.append(CommandOutcome(commandId: "c-\(n)-\(k)", orderId: id, event: event, order: order, position: position))
    }
    return ReadModelUpdate(views: views, outcomes: outcomes, checkpoint: LogPosition(offsets: Array(repeating: Int64(n), count: 10)))
}
let small = (0..<5000).map { update($0, size: 5) }
start = ContinuousClock.now
try await withThrowingTaskGroup(of: Void.self) { group in
    for t in 0..<4 {
        group.addTask { for i in stride(from: t, to: small.count, by: 4) { try await store.apply(small[i]) } }
    }
    try await group.waitForAll()
}
var elapsed = seconds(ContinuousClock.now - start)
print(String(format: "apply   5 views+outcomes per update, 4 appliers: %6.0f updates/s = %6.0f views/s", 5000 / elapsed, 25000 / elapsed))
let large = (0..<100).map { update(10_000 + $0, size: 250) }
start = ContinuousClock.now
for u in large { try await store.apply(u) }
elapsed = seconds(ContinuousClock.now - start)
print(String(format: "apply   250 views+outcomes per update, 1 applier: %6.0f views/s", 25000 / elapsed))
start = ContinuousClock.now
for u in small { for v in u.views { _ = ReadModelCodec.encode(v) }; for o in u.outcomes { _ = ReadModelCodec.encode(o, history: u.views.first { $0.orderId == o.orderId }!.events) } }
print(String(format: "codec   view+outcome encoded, 1 thread (ReadModelCodec): %6.0f/s", 25000 / seconds(ContinuousClock.now - start)))
start = ContinuousClock.now
for i in 0..<20_000 { _ = try await store.view(orderId: String(format: "00000000-0000-4000-8000-%012d", i)) }
print(String(format: "view    sequential: %6.0f/s", 20_000 / seconds(ContinuousClock.now - start)))
await store.close()
SWIFT

# SwiftPM names the package after its directory; `package` API needs the same name.
PACKAGE_NAME=$(basename "$PWD" | tr -c 'A-Za-z0-9_\n' '_')
# The objects of the modules' current sources (a build directory keeps those of deleted files).
OBJS=$(for m in EngineSQLite EventLog OrderDomain; do
    for f in Sources/$m/*.swift; do echo "$BIN/$m.build/$(basename "$f").o"; done
done; ls $BIN/Logging.build/*.o)
swiftc -O -package-name "$PACKAGE_NAME" -module-name BenchLog -I $BIN/Modules -I Sources/CSQLite \
    "$WORK/main.swift" $OBJS -lsqlite3 -o "$WORK/bench"
${BENCH_WRAPPER:-} "$WORK/bench" "$WORK" "$RECORDS"
