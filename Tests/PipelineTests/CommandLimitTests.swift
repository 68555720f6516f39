import EventLog
import OrderDomain
import Synchronization
import Testing

/// Past `maxCommandsPerOrder` the gateway refuses, unrecorded, what the order would reject,
/// deciding from the read model. A read model behind the log (catching up after a restart:
/// kill -9 leaves its last batches unwritten) must not decide: the command it refuses may
/// have been applied already, and its one outcome is in the log.
@Suite struct CommandLimitTests {
    @Test func aRetryWhileTheReadModelCatchesUpGetsItsFirstOutcome() async throws {
        var config = OrderPipeline.Config.defaults
        config.maxCommandsPerOrder = 2
        let log = InMemoryLogEngine()
        // The read model as a crash left it: it has the order's first two events (its
        // placement and a rejection), not the accept and the complete that came after.
        let behind = InMemoryReadModelStore()
        let placed = try await Harness.place(on: log, store: behind, config: config)
        let complete = OrderCommand(
            commandId: OrderIdentity.random(), orderId: placed, expectedVersion: 2, kind: .complete)
        var first: CommandOutcome?
        try await Harness.run(engine: log, store: InMemoryReadModelStore(), config: config) { h in
            _ = try await h.update(placed, .accept(driverId: OrderIdentity.random()), version: 1)
            first = try await h.gateway.submit(complete, timeout: .seconds(10))
        }
        let completed = try #require(first)
        #expect(completed.order?.status == .completed)

        // Restarted on that read model, held behind the log: the client retries.
        let engine = GatedEngine(log)
        engine.gateNextReader()  // the projector's
        let pipeline = OrderPipeline(engine: engine, store: behind, config: config, logger: Harness.logger)
        let running = Task { try await pipeline.run() }
        defer { running.cancel() }
        let appended = try await log.endOffsets(config.topics.commandsAndEvents).reduce(0, +)
        let answered = Mutex(false)
        let retry = Task {
            defer { answered.withLock { $0 = true } }
            return try await pipeline.gateway.submit(complete, timeout: .seconds(10))
        }
        // Until the retry is answered from the stale read model (the refusal needs no
        // outcome) or appended to be decided in the log; then the read model catches up.
        try await waitUntil {
            if answered.withLock({ $0 }) { return true }
            return try await log.endOffsets(config.topics.commandsAndEvents).reduce(0, +) > appended
        }
        engine.release()
        let again = try await retry.value
        #expect(again.event == completed.event, "the retry's outcome differs from the first")
        #expect(again.order?.version == 3)
        running.cancel()
        _ = await running.result
    }
}

extension Harness {
    /// Places an order and records one rejection of it, on `log` with `store` as the
    /// read model; returns the order id.
    static func place(on log: any LogEngine, store: any ReadModelStore, config: OrderPipeline.Config) async throws -> String {
        var placed = ""
        try await run(engine: log, store: store, config: config) { h in
            placed = try await h.place().orderId
            let rejected = try await h.update(placed, .cancel, version: 7)
            #expect(rejected.event.kind.rejection != nil)
            await h.pipeline.projector.waitUntilWritten()
        }
        return placed
    }
}
