@testable import EngineKafka
import EventLog
import Foundation
import OrderDomain
import Synchronization
import Testing

// Producers that lost their state are replaced. A broker that does not answer for longer
// than the delivery timeout, then comes back with its state, leaves records timed out
// inside the producers, whose next produce on tansu is refused for good (the idempotent
// producer: PRODUCER_FENCED; a transactional one: an abort that never ends). The engine
// must get going again without a restart, and without fencing a partition's next owner.

/// Short timeouts: records time out within the outage, and the test stays short. (A
/// request already sent to the paused broker, as send_offsets_to_transaction's, waits
/// for `socket.timeout.ms`, which the engine sets to the request timeout.)
private func shortTimeouts(_ config: inout KafkaLogEngine.Config) {
    config.deliveryTimeout = .seconds(3)
    config.requestTimeout = .seconds(3)
}

/// Expects `body` to fail with `.unavailable`.
private func expectUnavailable(_ what: String, _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("\(what) succeeded while the broker was paused")
    } catch {
        #expect((error as? LogError)?.code == .unavailable, "\(what): \(error)")
    }
}

extension TansuTests {
    @Test("after an outage longer than the delivery timeout, every kind of append succeeds again without a restart")
    func appendsRecoverAfterAnOutage() async throws {
        try await withTansu(configure: shortTimeouts) { broker, engine in
            let source = uniqueTopic("src")
            let sink = uniqueTopic("dst")
            try await engine.createTopic(source, partitions: 2)
            try await engine.createTopic(sink, partitions: 2)
            // The three producers, each used once: the idempotent one (one record), this
            // instance's transactional one (several records), a group's (an offset commit).
            func plain(_ v: String) async throws {
                try await engine.append([OutgoingRecord(topic: sink, key: "k", value: bytes(v))], commit: nil)
            }
            func several(_ v: String) async throws {
                try await engine.append((0..<3).map { OutgoingRecord(topic: sink, key: "k\($0)", value: bytes(v)) }, commit: nil)
            }
            func committed(_ v: String) async throws {
                try await engine.append(
                    [OutgoingRecord(topic: sink, key: "c", value: bytes(v))],
                    commit: OffsetCommit(group: "copier", topic: source, offsets: [0: 1]))
            }
            try await plain("before")
            try await several("before")
            try await committed("before")

            try broker.pause()
            do {
                // Each times out inside its producer (records on the wire, unanswered).
                async let a: Void = expectUnavailable("a plain append") { try await plain("during") }
                async let b: Void = expectUnavailable("an append of several records") { try await several("during") }
                async let c: Void = expectUnavailable("an append with a commit") { try await committed("during") }
                _ = await (a, b, c)
            }
            try broker.resume()

            // Bounded: a new producer each, once the broker answers (not PRODUCER_FENCED,
            // nor a transaction stuck in its abort, forever).
            let back = ContinuousClock.now
            let kinds: [(String, (String) async throws -> Void)] = [
                ("a plain append", plain), ("an append of several records", several), ("an append with a commit", committed),
            ]
            for (what, append) in kinds {
                do {
                    try await eventually(timeout: .seconds(15)) { try await append("after") }
                } catch {
                    Issue.record("\(what) still fails \(ContinuousClock.now - back) after the broker came back: \(error)")
                }
            }
            #expect(ContinuousClock.now - back < .seconds(20), "took \(ContinuousClock.now - back)")
            #expect(try await engine.committedOffsets(group: "copier", topic: source) == [1, 0])
        }
    }
}

extension PipelineOnKafkaTests {
    @Test("after a broker outage longer than the delivery timeout, commands succeed again without a restart")
    func commandsRecoverAfterAnOutage() async throws {
        try await withPipeline(configure: shortTimeouts) { p, _, broker in
            #expect(try await place(p).order?.version == 1)
            try broker.pause()
            await expectUnavailable("a PlaceOrder") { _ = try await place(p) }
            try broker.resume()
            // The group rejoins (its session timed out meanwhile), then commands go through.
            let back = ContinuousClock.now
            try await eventually(timeout: .seconds(25)) {
                let placed = try await place(p, timeout: .seconds(5))
                #expect(placed.order?.version == 1)
            }
            #expect(ContinuousClock.now - back < .seconds(30), "took \(ContinuousClock.now - back)")
        }
    }
}

extension TansuTests {
    @Test("a fenced partition producer does not initialize its id again once the partition moved: that would fence its next owner")
    func fencedProducerLeavesTheNextOwnerAlone() async throws {
        try await withTansu { _, engine in
            let sink = uniqueTopic("dst")
            try await engine.createTopic(sink, partitions: 1)
            let properties = KafkaLogEngine.producerProperties(engine.config, transactionalId: "fencing-\(UUID().uuidString.prefix(8))")
            let record = [RDKafkaOutgoing(topic: sink, partition: 0, key: bytes("k"), value: bytes("v"), headers: [:])]
            let stillHeld = Mutex(true)
            let previous = TransactionalProducer(
                properties: properties, timeoutMs: 10_000, logger: KafkaTestEnvironment.logger, mayReplace: { stillHeld.withLock { $0 } })
            let next = TransactionalProducer(properties: properties, timeoutMs: 10_000, logger: KafkaTestEnvironment.logger)
            try await previous.claim()
            #expect(try await previous.transact(record, offsets: nil).allSatisfy { (try? $0.get()) != nil })

            // The partition moves: its next owner claims the id, which fences the previous.
            stillHeld.withLock { $0 = false }
            try await next.claim()
            await #expect(throws: LogError.self) { try await previous.transact(record, offsets: nil) }
            // Its handle is dropped, and not replaced: no init_transactions on the id.
            await #expect {
                try await previous.transact(record, offsets: nil)
            } throws: { ($0 as? LogError)?.message.contains("next owner") == true }
            #expect(try await next.transact(record, offsets: nil).allSatisfy { (try? $0.get()) != nil })
            await previous.shutdown(flushMs: 0)
            await next.shutdown(flushMs: 0)
        }
    }
}
