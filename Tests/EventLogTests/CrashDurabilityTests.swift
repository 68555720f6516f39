import EngineSQLite
import EventLog
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Durability across kill -9.
///
/// The writer must be a separate process that can be killed mid-append, and `swift test`
/// gives us exactly one binary: the test bundle itself. So the parent test re-runs that
/// binary (`/proc/self/exe`) with Swift Testing's own arguments, filtered to
/// `crashWriterChild`, and an environment variable that enables that otherwise-skipped
/// test. The child appends under concurrent load and writes "ACK partition offset value"
/// to stdout (one `write(2)` per call, after `append` returned); the parent SIGKILLs it at
/// a random moment, several times on the same files, then checks that every acknowledged
/// record is there, offsets are gapless, and multi-record appends are all-or-nothing.
@Suite("SQLiteLogEngine crash durability")
struct CrashDurabilityTests {
    static let childDirectory = "ENGINE_SQLITE_CRASH_CHILD_DIR"
    static let childRound = "ENGINE_SQLITE_CRASH_CHILD_ROUND"
    static let isChild = ProcessInfo.processInfo.environment[childDirectory] != nil

    @Test(.enabled(if: isChild, "runs only as the child of acknowledgedRecordsSurviveKill"))
    func crashWriterChild() async throws {
        let env = ProcessInfo.processInfo.environment
        let dir = try #require(env[Self.childDirectory])
        let round = env[Self.childRound] ?? "0"
        let engine = try await openLog(dir)
        try await engine.createTopic("t", partitions: 4)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<32 {
                group.addTask {
                    var seq = 0
                    // Bounded, in case the parent never kills us.
                    let end = ContinuousClock.now + .seconds(60)
                    while ContinuousClock.now < end {
                        seq += 1
                        let n = 1 + seq % 3
                        let call = "\(round)-\(task)-\(seq)"
                        let records = (0..<n).map {
                            OutgoingRecord(topic: "t", key: "key-\(task)-\($0)", value: bytes("\(call)/\($0)/\(n)"))
                        }
                        let addresses = try await engine.append(records, commit: nil)
                        var line = ""
                        for (address, record) in zip(addresses, records) {
                            line += "ACK \(address.partition) \(address.offset) \(text(record.value))\n"
                        }
                        // One write(2) per call, well under PIPE_BUF, so lines never interleave.
                        let written = line.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
                        if written < 0 { return }  // the parent is gone
                    }
                }
            }
            try await group.waitForAll()
        }
        await engine.close()
    }

    @Test("every acknowledged record survives SIGKILL of the writer, several times")
    func acknowledgedRecordsSurviveKill() async throws {
        try await withTemporaryDirectory { dir in
            let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            var acked: [RecordAddress: String] = [:]
            for round in 0..<5 {
                let lines = try await runChildAndKill(executable: executable, dir: dir, round: round)
                let ackLines = lines.filter { $0.hasPrefix("ACK ") }
                #expect(ackLines.count > 0, "round \(round): the child acknowledged nothing")
                for line in ackLines {
                    let parts = line.split(separator: " ")
                    try #require(parts.count == 4, "malformed line \(line)")
                    let address = RecordAddress(topic: "t", partition: Int(parts[1])!, offset: Int64(parts[2])!)
                    #expect(acked[address] == nil, "offset acknowledged twice: \(address)")
                    acked[address] = String(parts[3])
                }
            }

            let engine = try await openLog(dir)
            let records = try await readAll(engine, "t", page: 1000)
            var stored: [RecordAddress: String] = [:]
            for record in records {
                stored[RecordAddress(topic: "t", partition: record.partition, offset: record.offset)] = text(record.value)
            }
            // Every acknowledged record is there, at its offset, with its value.
            let missing = acked.filter { stored[$0.key] != $0.value }
            #expect(missing.isEmpty, "\(missing.count) of \(acked.count) acknowledged records lost, e.g. \(missing.first.map { "\($0)" } ?? "")")
            // Offsets are gapless from 0 and agree with the end offsets.
            let ends = try await engine.endOffsets("t")
            for partition in 0..<4 {
                let offsets = records.filter { $0.partition == partition }.map(\.offset)
                #expect(offsets == Array(0..<ends[partition]))
            }
            // No record twice; every call is all-or-nothing ("call/index/count").
            let values = records.map { text($0.value) }
            #expect(Set(values).count == values.count)
            var perCall: [String: (seen: Int, count: Int)] = [:]
            for value in values {
                let parts = value.split(separator: "/")
                perCall[String(parts[0]), default: (0, Int(parts[2])!)].seen += 1
            }
            let torn = perCall.filter { $0.value.seen != $0.value.count }
            #expect(torn.isEmpty, "torn appends: \(torn.prefix(3))")
            #expect(acked.count > 1000, "too little load to mean much: \(acked.count) acks")
            // latestRecord: the delta of newest-record-per-key died with each child; the
            // open folded the tail of the log back in.
            var newest: [String: String] = [:]
            for record in records { newest[record.key] = text(record.value) }  // in offset order per partition
            for (key, value) in newest {
                let latest = try await engine.latestRecord(topic: "t", key: key)
                #expect(latest.map { text($0.value) } == value, "latestRecord(\(key))")
            }
            await engine.close()
        }
    }

    /// Starts the child, waits until it has acknowledged some records, SIGKILLs it after a
    /// random extra delay, and returns everything it wrote to stdout.
    private func runChildAndKill(executable: String, dir: String, round: Int) async throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--testing-library", "swift-testing", "--filter", "crashWriterChild"]
        var env = ProcessInfo.processInfo.environment
        env[Self.childDirectory] = dir
        env[Self.childRound] = "\(round)"
        process.environment = env
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        let output = OutputCollector()
        let readerDone = output.drain(stdout.fileHandleForReading)
        try process.run()

        let deadline = ContinuousClock.now + .seconds(60)
        while output.ackCount < 300 + round * 50 && ContinuousClock.now < deadline && process.isRunning {
            try await Task.sleep(for: .milliseconds(5))
        }
        try await Task.sleep(for: .milliseconds(Int.random(in: 0...250)))
        kill(process.processIdentifier, SIGKILL)
        await readerDone.value
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "round \(round): the child was not killed but exited (\(process.terminationStatus))")
        return output.lines
    }
}

/// Collects a child's stdout on a Dispatch thread (the reads block).
private final class OutputCollector: Sendable {
    private let state = Mutex((buffer: [UInt8](), acks: 0))

    var ackCount: Int { state.withLock { $0.acks } }

    var lines: [String] {
        state.withLock { text($0.buffer) }.split(separator: "\n").map(String.init)
    }

    /// Reads until EOF (the child died and the pipe's last writer is gone).
    func drain(_ handle: FileHandle) -> Task<Void, Never> {
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        DispatchQueue.global().async {
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                self.state.withLock { s in
                    s.buffer += data
                    s.acks += data.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
                }
            }
            continuation.finish()
        }
        return Task { for await _ in stream {} }
    }
}
