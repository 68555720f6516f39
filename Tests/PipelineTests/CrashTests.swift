import EngineSQLite
import EventLog
import Foundation
import OrderDomain
import Testing

/// kill -9 under load: `pipeline-load --acks` (a child process running the embedded
/// pipeline) is killed at random moments; after each reopen every acknowledged command
/// has exactly one outcome, no history has a gap or a duplicate version, and the
/// processors resume from their checkpoints.
@Suite(.serialized) struct CrashTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    struct Ack: Hashable {
        var commandId: String
        var orderId: String
        var eventType: String
        var version: Int
    }

    @Test func killNineUnderLoadLosesNothingAcknowledged() async throws {
        let binary = ProcessInfo.processInfo.environment["PIPELINE_LOAD_BIN"]
            ?? Self.root.appendingPathComponent(".build/debug/pipeline-load").path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build pipeline-load first (swift build)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("crash-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }

        var acks: [Ack] = []
        for cycle in 0..<4 {
            let output = try await runAndKill(binary, ["--data-dir", dir, "--in-flight", "32", "--seconds", "60", "--acks"],
                after: .milliseconds(Int.random(in: 100...1200)))
            let lines = output.split(separator: "\n", omittingEmptySubsequences: false).dropLast()  // the last may be cut
            let cycleAcks = lines.compactMap { line -> Ack? in
                let f = line.split(separator: " ")
                guard f.count == 5, f[0] == "ACK", let v = Int(f[4]) else { return nil }
                return Ack(commandId: String(f[1]), orderId: String(f[2]), eventType: String(f[3]), version: v)
            }
            #expect(!cycleAcks.isEmpty, "cycle \(cycle) acknowledged nothing before the kill")
            acks += cycleAcks
        }

        var logger = Harness.logger
        logger.logLevel = .critical
        let engine = try await EmbeddedEngine.open(directory: dir, logger: logger)
        defer { Task { await engine.close() } }
        let committedAtReopen = try await engine.log.committedOffsets(group: CommandHandler.group, topic: Topics().aggregates)
        #expect(committedAtReopen.reduce(0, +) > 0, "the command handler had committed checkpoints")
        try await Harness.run(engine: engine.log, store: engine.readModel) { h in
            // Every acknowledged command has its outcome, the same one (in the store once
            // the projector's writes of what it caught up on are done).
            await h.pipeline.projector.waitUntilWritten()
            for ack in acks {
                let outcome = try #require(try await h.store.outcome(commandId: ack.commandId), "lost: \(ack)")
                #expect(outcome.orderId == ack.orderId)
                #expect(outcome.event.typeName == ack.eventType)
                #expect(outcome.event.version == ack.version)
            }
            // Every command ever written gets exactly one outcome once the pipeline drains.
            let commandIds = try await commandIdsInLog(h)
            try await waitUntil(timeout: .seconds(30)) {
                for id in commandIds where try await h.store.outcome(commandId: id) == nil { return false }
                return true
            }
            let events = try await h.eventsByOrder()
            for (order, history) in events {
                let versions = history.filter { !$0.isError }.map(\.version)
                #expect(versions == Array(1..<(versions.count + 1)), "order \(order): \(versions)")
                #expect(Set(history.map(\.commandId)).count == history.count, "order \(order): a command answered twice")
            }
        }
    }

    private func commandIdsInLog(_ h: Harness) async throws -> Set<String> {
        var ids: Set<String> = []
        for r in try await h.records(h.pipeline.topics.commandsAndEvents) {
            if case .command(let c) = try LogFormat.decode(try LogFormat.decodeEntry(r.value), orderId: r.key) {
                ids.insert(c.commandId)
            }
        }
        return ids
    }

    /// Runs `binary`, kills it with SIGKILL after `delay`, returns what it printed.
    /// Runs the child and SIGKILLs it `delay` after its first acknowledgement (on a busy
    /// machine start-up alone can take longer than any fixed delay), or after 60 s.
    private func runAndKill(_ binary: String, _ arguments: [String], after delay: Duration) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let firstAck = AsyncStream<Void>.makeStream()
        let reader = Task.detached { () -> Data in
            var output = Data()
            let handle = pipe.fileHandleForReading
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                if output.isEmpty { firstAck.continuation.yield() }
                output.append(chunk)
            }
            firstAck.continuation.finish()
            return output
        }
        let started = ContinuousClock.now
        for await _ in firstAck.stream { break }
        // Then kill at a random moment of the run.
        try await Task.sleep(until: min(.now + delay, started + .seconds(60)))
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return String(decoding: await reader.value, as: UTF8.self)
    }
}
