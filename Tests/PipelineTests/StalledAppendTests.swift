import EventLog
import OrderDomain
import Synchronization
import Testing

/// An append that does not end (a Kafka broker that stopped answering holds one until
/// librdkafka's own timeout, whatever cancellation) must not hold the command's call: the
/// client hears within the engine's patience that the event store is unavailable, or
/// within its own timeout, and the append runs on. Once it lands, a retry with the same
/// request_id returns the one outcome.
@Suite struct StalledAppendTests {
    /// How long the stalled append is held: the old gateway returned only then.
    static let stall: Duration = .seconds(3)

    @Test func aStalledAppendIsReportedUnavailableAfterTheEnginesPatience() async throws {
        let engine = StallingEngine(InMemoryLogEngine(), appendPatience: .milliseconds(300))
        try await Harness.run(engine: engine) { h in
            let command = Harness.placeCommand()
            engine.stall(command.commandId)
            let release = Task { try await Task.sleep(for: Self.stall); engine.release() }
            let started = ContinuousClock.now
            await #expect {
                try await h.gateway.submit(command, timeout: .seconds(20))
            } throws: { error in
                let e = error as? LogError
                return e?.code == .unavailable && e?.message.contains("retrying with the same request_id is safe") == true
            }
            #expect(ContinuousClock.now - started < .seconds(2), "answered after \(ContinuousClock.now - started)")
            try await release.value
            try await expectOneOutcome(command, h)
        }
    }

    @Test func aStalledAppendDoesNotHoldTheCallPastItsTimeout() async throws {
        // A patience longer than the call's timeout: the call's own timeout bounds the wait.
        let engine = StallingEngine(InMemoryLogEngine(), appendPatience: .seconds(10))
        try await Harness.run(engine: engine) { h in
            let command = Harness.placeCommand()
            engine.stall(command.commandId)
            let release = Task { try await Task.sleep(for: Self.stall); engine.release() }
            let started = ContinuousClock.now
            await #expect {
                try await h.gateway.submit(command, timeout: .milliseconds(500))
            } throws: { error in
                error is CommandGateway.OutcomeTimeout && "\(error)".contains("may or may not have been written")
            }
            #expect(ContinuousClock.now - started < .seconds(2), "answered after \(ContinuousClock.now - started)")
            try await release.value
            try await expectOneOutcome(command, h)
        }
    }

    /// An update of an order this instance has not seen asks the log whether it exists; a
    /// log that does not answer makes that UNAVAILABLE within the patience, not NOT_FOUND
    /// (the order may well exist) after the engine's own timeout.
    @Test func aStalledLookupOfAnUnknownOrderIsUnavailable() async throws {
        try await expectStalledLookupUnavailable(patience: .milliseconds(300), timeout: .seconds(20))
    }

    /// The lookup's wait is capped by the call's timeout too, not only by the patience.
    @Test func aStalledLookupDoesNotHoldTheCallPastItsTimeout() async throws {
        try await expectStalledLookupUnavailable(patience: .seconds(10), timeout: .milliseconds(500))
    }

    /// A lookup held for `stall` is answered UNAVAILABLE well before it ends; once the log
    /// answers again, an unknown order is NOT_FOUND.
    private func expectStalledLookupUnavailable(patience: Duration, timeout: Duration) async throws {
        let engine = StallingEngine(InMemoryLogEngine(), appendPatience: patience)
        try await Harness.run(engine: engine) { h in
            engine.stallLookups()
            let release = Task { try await Task.sleep(for: Self.stall); engine.release() }
            let started = ContinuousClock.now
            let update = OrderCommand(
                commandId: OrderIdentity.random(), orderId: OrderIdentity.random(), expectedVersion: 1, kind: .cancel)
            await #expect {
                try await h.gateway.submit(update, timeout: timeout)
            } throws: { error in
                (error as? LogError)?.code == .unavailable
            }
            #expect(ContinuousClock.now - started < .seconds(2), "answered after \(ContinuousClock.now - started)")
            try await release.value
            await #expect {
                try await h.gateway.submit(update, timeout: .seconds(5))
            } throws: { error in
                (error as? OrderRejection)?.reason == .notFound
            }
        }
    }

    /// The stalled append landed: a retry gets the command's outcome, and the log has one
    /// decision of it.
    private func expectOneOutcome(_ command: OrderCommand, _ h: Harness) async throws {
        let placed = try await h.gateway.submit(command, timeout: .seconds(10))
        #expect(placed.order?.version == 1)
        await h.pipeline.projector.waitUntilWritten()
        #expect(try await h.eventsByOrder()[placed.orderId]?.map(\.version) == [1])
        #expect(engine(h).stalledAppends == 1)
    }

    private func engine(_ h: Harness) -> StallingEngine { h.engine as! StallingEngine }
}

/// Holds the appends of a chosen command, without regard to cancellation, until `release()`.
final class StallingEngine: WrappingEngine {
    let inner: any LogEngine
    let appendPatience: Duration?
    private let state = Mutex((commandId: String?.none, held: 0, waiting: [CheckedContinuation<Void, Never>]()))

    init(_ inner: any LogEngine, appendPatience: Duration?) {
        self.inner = inner
        self.appendPatience = appendPatience
    }

    func stall(_ commandId: String) { state.withLock { $0.commandId = commandId } }

    /// Holds `currentRecord` calls too, until `release()`.
    func stallLookups() { lookups.withLock { $0 = true } }
    private let lookups = Mutex(false)

    func release() {
        let waiting = state.withLock { s in
            lookups.withLock { $0 = false }
            defer { (s.commandId, s.waiting) = (nil, []) }
            return s.waiting
        }
        for c in waiting { c.resume() }
    }

    /// Appends that were held.
    var stalledAppends: Int { state.withLock { $0.held } }

    func currentRecord(topic: String, key: String) async throws -> LogRecord? {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            // Under `state`'s lock, as `release()` clears the flag: a lookup either sees it
            // cleared or is in `waiting` when `release()` resumes them.
            let hold = state.withLock { s in
                guard lookups.withLock({ $0 }) else { return false }
                s.waiting.append(c)
                return true
            }
            if !hold { c.resume() }
        }
        return try await inner.currentRecord(topic: topic, key: key)
    }

    func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress] {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let hold = state.withLock { s in
                guard let id = s.commandId, records.contains(where: { $0.headers["command-id"] == id }) else { return false }
                s.held += 1
                s.waiting.append(c)
                return true
            }
            if !hold { c.resume() }
        }
        return try await inner.append(records, commit: commit, durability: durability)
    }
}
