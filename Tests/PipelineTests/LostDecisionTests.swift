import EventLog
import Foundation
import OrderDomain
import Synchronization
import Testing

/// A decision that never reaches the aggregates table (a Kafka broker was seen to skip a
/// committed transaction's records for a read_committed consumer) must not leave its
/// command, and every later command of the order, unanswered for good. A retry in flight
/// is not decided twice (PipelineTests.retriesReturnTheFirstOutcome).
@Suite struct LostDecisionTests {
    @Test func aRetriedCommandIsDecidedAgain() async throws {
        var config = OrderPipeline.Config.defaults
        config.resendCommandAfter = nil
        let engine = DroppingEngine(InMemoryLogEngine())
        try await Harness.run(engine: engine, config: config) { h in
            let command = Harness.placeCommand()
            engine.dropFirstEvent(of: command.commandId)
            await #expect(throws: CommandGateway.OutcomeTimeout.self) {
                try await h.gateway.submit(command, timeout: .milliseconds(500))
            }
            // On a loaded machine the decision can come after that timeout: the retry
            // below must come after it.
            let deadline = ContinuousClock.now + .seconds(10)
            while engine.dropped == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(engine.dropped == 1)
            // The client's retry (same request) gets its outcome, and the order moves on.
            let placed = try await h.gateway.submit(command, timeout: .seconds(10))
            #expect(placed.order?.status == .placed)
            let accepted = try await h.update(placed.orderId, .accept(driverId: OrderIdentity.random()), version: 1)
            #expect(accepted.order?.status == .accepted)
            // The table (and so the read model) has each decision once; the log keeps the
            // hidden first decision too.
            await h.pipeline.projector.waitUntilWritten()
            let view = try await h.store.view(orderId: placed.orderId)
            #expect(view?.events.map(\.event.version) == [1, 2])
            #expect(try await h.eventsByOrder()[placed.orderId]?.map(\.version) == [1, 1, 2])
        }
    }

    @Test func theGatewayResendsACommandWhoseOutcomeIsLate() async throws {
        var config = OrderPipeline.Config.defaults
        config.resendCommandAfter = .milliseconds(200)
        let engine = DroppingEngine(InMemoryLogEngine())
        try await Harness.run(engine: engine, config: config) { h in
            let command = Harness.placeCommand()
            engine.dropFirstEvent(of: command.commandId)
            let placed = try await h.gateway.submit(command, timeout: .seconds(10))
            #expect(placed.order?.status == .placed)
            #expect(engine.dropped == 1)
            let commands = try await h.records(h.pipeline.topics.commandsAndEvents).filter {
                $0.headers["command-id"] == command.commandId
            }
            #expect(commands.count >= 2)  // the command, and its re-sends until one was decided again
        }
    }
}

/// Hides from the aggregator's consumer the first event record answering a chosen
/// command: the record is in the log, the aggregator never sees it (what tansu did).
final class DroppingEngine: WrappingEngine {
    let inner: any LogEngine
    fileprivate let state = Mutex((target: String?.none, dropped: 0))

    init(_ inner: any LogEngine) { self.inner = inner }

    func dropFirstEvent(of commandId: String) { state.withLock { $0.target = commandId } }
    var dropped: Int { state.withLock { $0.dropped } }

    func joinGroup(_ group: String, topic: String) async throws -> any GroupConsumer {
        let consumer = try await inner.joinGroup(group, topic: topic)
        return group == Aggregator.group ? DroppingConsumer(inner: consumer, engine: self) : consumer
    }
}

private final class DroppingConsumer: WrappingConsumer {
    let inner: any GroupConsumer
    let engine: DroppingEngine
    init(inner: any GroupConsumer, engine: DroppingEngine) {
        self.inner = inner
        self.engine = engine
    }
    func poll(maxRecords: Int, timeout: Duration) async throws -> GroupPoll {
        let result = try await inner.poll(maxRecords: maxRecords, timeout: timeout)
        guard case .records(let records) = result else { return result }
        let kept = engine.state.withLock { s in
            records.filter { r in
                guard let target = s.target, let entry = try? LogFormat.decodeEntry(r.value), entry.type == LogFormat.event,
                    entry.details.contains(target)
                else { return true }
                s.target = nil
                s.dropped += 1
                return false
            }
        }
        return kept.isEmpty ? .idle : .records(kept)
    }
}
