import EngineSQLite
import EventLog
import Foundation
import Logging
import OrderDomain
import Synchronization
import Testing

/// StreamEvents' shared tail (`StreamHub`): subscribers switch between their own reader and
/// the shared ring without losing or repeating an event, a stalled subscriber neither
/// blocks the others nor loses events (it falls back to its own reader), and closed or
/// cancelled subscriptions are forgotten.
@Suite struct StreamHubTests {
    /// Many subscribers (from the beginning, from a position, from the end) while orders
    /// are placed and cancelled concurrently: each gets exactly the events a plain
    /// own-reader subscription from the same start gets, in the same order per order, with
    /// positions that only move forward; and all of them end on the shared tail.
    @Test(arguments: [false, true]) func manySubscribersGetEveryEventOnceInOrder(onSQLite: Bool) async throws {
        try await withEngine(sqlite: onSQLite) { engine, store in
            try await Harness.run(engine: engine, store: store) { h in
                // History longer than one page (256 records) of an own reader.
                try await placeConcurrently(h, count: 150)
                let history = try await collectUntilCaughtUp(try await h.pipeline.subscribe(start: .beginning, filter: .init()))
                let middle = history[history.count / 2].position

                var subs: [(start: EventSubscription.Start, sub: EventSubscription)] = []
                for _ in 0..<6 { subs.append((.beginning, try await h.pipeline.subscribe(start: .beginning, filter: .init()))) }
                for _ in 0..<6 { subs.append((.after(middle), try await h.pipeline.subscribe(start: .after(middle), filter: .init()))) }
                // From the end: the reference starts where its caught_up says it started.
                for _ in 0..<6 { subs.append((.end, try await h.pipeline.subscribe(start: .end, filter: .init()))) }
                let filtered = try await h.pipeline.subscribe(start: .beginning, filter: .init(eventTypes: ["OrderCancelledEvent"]))

                let collectors = subs.map { entry in Collector(entry.sub) }
                let cancelCollector = Collector(filtered)
                // Concurrent appends while the subscribers catch up and go live.
                let placed = try await placeConcurrently(h, count: 60)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for id in placed.prefix(30) { group.addTask { _ = try await h.update(id, .cancel, version: 1) } }
                    try await group.waitForAll()
                }

                for (i, entry) in subs.enumerated() {
                    var start = entry.start
                    if start == .end {
                        try await waitUntil { collectors[i].caughtUpAt != nil }
                        start = .after(try #require(collectors[i].caughtUpAt))
                    }
                    let reference = try await referenceEvents(h, start: start)
                    try await waitUntil(timeout: .seconds(30)) { collectors[i].events.count >= reference.count }
                    try await Task.sleep(for: .milliseconds(50))  // room for a duplicate to show up
                    let got = collectors[i].events
                    #expect(got.count == reference.count, "subscriber \(i): \(got.count) events, expected \(reference.count)")
                    #expect(Set(got.map(\.event)) == Set(reference.map(\.event)), "subscriber \(i): other events")
                    #expect(perOrder(got) == perOrder(reference), "subscriber \(i): order within an order differs")
                    #expect(isMonotonic(got.map(\.position)), "subscriber \(i): a position went backwards")
                }
                let cancels = try await referenceEvents(h, start: .beginning).filter { $0.event.typeName == "OrderCancelledEvent" }
                try await waitUntil { cancelCollector.events.count >= cancels.count }
                #expect(cancelCollector.events.count == cancels.count)
                #expect(Set(cancelCollector.events.map(\.event)) == Set(cancels.map(\.event)))

                for c in collectors + [cancelCollector] { await c.stop() }
                #expect(subs.allSatisfy { $0.sub.readsSharedTail }, "every subscriber ends on the shared tail")
                #expect(h.pipeline.streamHub.stats.attaches >= subs.count)
                for entry in subs { await entry.sub.close() }
                await filtered.close()
            }
        }
    }

    /// The shared tail can be behind a subscriber's own reader when it switches (the tail
    /// has not read the newest records yet): the records it already has must be skipped
    /// when the tail delivers them, not sent again.
    @Test func switchingWhileTheTailIsBehindRepeatsNothing() async throws {
        let engine = GatedEngine(InMemoryLogEngine())
        try await Harness.run(engine: engine) { h in
            let before = try await placeConcurrently(h, count: 5)
            engine.gateNextReader()  // the tail's reader, opened by the first subscription
            let first = Collector(try await h.pipeline.subscribe(start: .end, filter: .init()))
            let ids = try await placeConcurrently(h, count: 10)
            // Behind the tail's start, it reads all 15 orders with its own reader, which
            // puts it past the held-back tail, then switches to the (empty) ring.
            let late = try await h.pipeline.subscribe(start: .beginning, filter: .init())
            #expect(!late.readsSharedTail)
            let history = try await collectUntilCaughtUp(late)
            #expect(Set(history.map(\.event.orderId)) == Set(before + ids))
            #expect(late.readsSharedTail)
            #expect(first.events.isEmpty, "the tail was held back")

            engine.release()
            let last = try await h.place().orderId
            var live: [ProjectedEvent] = []
            var heartbeats = 0
            while heartbeats < 2, let item = try await late.next() {
                if case .event(let e) = item { live.append(e) }
                if case .heartbeat = item { heartbeats += 1 }
                if live.last?.event.orderId == last { break }
            }
            #expect(live.map(\.event.orderId) == [last], "nothing repeated from before the switch")
            #expect(late.readsSharedTail)
            try await waitUntil { first.events.count >= 11 }
            #expect(Set(first.events.map(\.event.orderId)) == Set(ids + [last]))
            #expect(first.events.count == 11)
            await first.stop()
            await first.subscription.close()
            await late.close()
        }
    }

    /// A subscriber that stops reading falls more than the ring's capacity behind: the
    /// others keep receiving, and when it reads again it gets every event once, from its
    /// own reader, then returns to the shared tail.
    /// Subscribers read behind the tail with the engine's catch-up readers, which Kafka
    /// shares among all of them (a plain reader there is a client with threads of its own).
    @Test func subscribersBehindTheTailUseCatchUpReaders() async throws {
        let engine = ReaderCountingEngine(inner: InMemoryLogEngine())
        let topics = Topics(partitions: 2)
        try await engine.createTopic(topics.aggregates, partitions: 2)
        let sub = try await EventSubscription.open(
            engine: engine, topics: topics, start: .beginning, filter: .init(), hub: nil, logger: Harness.logger)
        guard case .caughtUp = try await sub.next() else { Issue.record("an empty log: caught up at once"); return }
        await sub.close()
        #expect(engine.opened.withLock { $0 } == ReaderCountingEngine.Opened(plain: 0, catchUp: 1))
    }

    @Test func stalledSubscriberFallsBackAndResumesWithoutGaps() async throws {
        var config = OrderPipeline.Config.defaults
        config.streamTailCapacity = 16
        config.heartbeat = .milliseconds(500)  // a lost event ends the reads below by heartbeats, not a hang
        try await Harness.run(config: config) { h in
            let stalled = try await h.pipeline.subscribe(start: .end, filter: .init())
            guard case .caughtUp = try await stalled.next() else { Issue.record("from_end starts with caught_up"); return }
            #expect(stalled.readsSharedTail)
            let live = Collector(try await h.pipeline.subscribe(start: .end, filter: .init()))

            let ids = try await placeConcurrently(h, count: 60)
            // The live subscriber gets all 60 while the stalled one reads nothing.
            try await waitUntil(timeout: .seconds(20)) { live.events.count >= 60 }
            #expect(Set(live.events.map(\.event.orderId)) == Set(ids))

            var got: [ProjectedEvent] = []
            var heartbeats = 0
            while got.count < 60, heartbeats < 2, let item = try await stalled.next() {
                if case .event(let e) = item { got.append(e) }
                if case .heartbeat = item { heartbeats += 1 }
            }
            #expect(got.count == 60)
            #expect(Set(got.map(\.event.orderId)) == Set(ids), "every event once, none lost")
            #expect(isMonotonic(got.map(\.position)))
            #expect(h.pipeline.streamHub.stats.fallbacks >= 1, "the stalled subscriber overflowed the ring")

            // After catching up from the log it is back on the shared tail.
            let next = try await h.place().orderId
            heartbeats = 0
            while heartbeats < 2, let item = try await stalled.next() {
                if case .heartbeat = item { heartbeats += 1 }
                if case .event(let e) = item {
                    #expect(e.event.orderId == next)
                    break
                }
            }
            #expect(heartbeats < 2, "the next live event arrived")
            #expect(stalled.readsSharedTail)
            await live.stop()
            await live.subscription.close()
            await stalled.close()
        }
    }

    /// Waiting subscribers end when their task is cancelled, and the hub forgets closed
    /// subscriptions and ones dropped without `close()`.
    @Test func cancelledAndClosedSubscribersAreForgotten() async throws {
        try await Harness.run { h in
            let hub = h.pipeline.streamHub
            var subs: [EventSubscription] = []
            for _ in 0..<5 { subs.append(try await h.pipeline.subscribe(start: .end, filter: .init())) }
            let tasks = subs.map { sub in
                Task { () -> Int in
                    var n = 0
                    do { while try await sub.next() != nil { n += 1 } } catch {}
                    return n
                }
            }
            try await waitUntil { hub.stats.waiting == 5 }
            #expect(hub.stats.attached == 5)
            for t in tasks { t.cancel() }
            for t in tasks { #expect(await t.value == 1, "only caught_up before the cancellation") }
            #expect(hub.stats.waiting == 0)
            for s in subs { await s.close() }
            #expect(hub.stats.open == 0)
            #expect(hub.stats.attached == 0)

            // Dropped without close: forgotten when released.
            do {
                let dropped = try await h.pipeline.subscribe(start: .end, filter: .init())
                _ = try await dropped.next()
                #expect(hub.stats.open == 1)
            }
            try await waitUntil { hub.stats.open == 0 }
        }
    }

    /// Heartbeats still come while idle on the shared tail, carrying the position.
    @Test func heartbeatsOnTheSharedTail() async throws {
        var config = OrderPipeline.Config.defaults
        config.heartbeat = .milliseconds(200)
        try await Harness.run(config: config) { h in
            _ = try await h.place()
            let sub = try await h.pipeline.subscribe(start: .end, filter: .init())
            guard case .caughtUp(let p) = try await sub.next() else { Issue.record("caught_up first"); return }
            #expect(sub.readsSharedTail)
            let started = ContinuousClock.now
            guard case .heartbeat(let q) = try await sub.next() else { Issue.record("a heartbeat while idle"); return }
            #expect(q == p)
            #expect(ContinuousClock.now - started < .seconds(2))
            await sub.close()
        }
    }

    /// A filtered subscriber hears a heartbeat while events it does not want flow, on its
    /// own reader (history) as on the shared tail (live), carrying its advancing position.
    @Test func filteredSubscribersGetHeartbeatsWhileOtherEventsFlow() async throws {
        var config = OrderPipeline.Config.defaults
        config.heartbeat = .milliseconds(300)
        try await Harness.run(config: config) { h in
            let placing = Task {
                while !Task.isCancelled { _ = try await h.place() }
            }
            defer { placing.cancel() }
            try await Task.sleep(for: .milliseconds(200))
            for start in [EventSubscription.Start.beginning, .end] {
                let sub = try await h.pipeline.subscribe(start: start, filter: .init(eventTypes: ["OrderCancelledEvent"]))
                // Read for at most 10 s: without heartbeats, `next()` would not return at all.
                // Until a heartbeat stands further than the first: on a loaded machine one
                // PlaceOrder can take longer than a heartbeat's period.
                let reading = Task {
                    var heartbeats: [LogPosition] = []
                    while heartbeats.count < 2 || heartbeats.last == heartbeats.first, let item = try await sub.next() {
                        if case .heartbeat(let p) = item { heartbeats.append(p) }
                    }
                    return heartbeats
                }
                let timer = Task {
                    try await Task.sleep(for: .seconds(10))
                    reading.cancel()
                }
                let heartbeats = (try? await reading.value) ?? []
                timer.cancel()
                #expect(heartbeats.count >= 2, "\(start): heartbeats while orders are placed")
                #expect(zip(heartbeats, heartbeats.dropFirst()).allSatisfy { a, b in zip(a.offsets, b.offsets).allSatisfy { $0 <= $1 } })
                #expect(heartbeats.first != heartbeats.last, "the position moves on with the skipped events")
                await sub.close()
            }
        }
    }

    /// A subscriber is never told it stands past what is durable (embedded: fsync'd): after
    /// a power loss, new records reuse the offsets of those lost, and a position past them
    /// would skip the new ones.
    @Test func fromTheEndStartsAtTheDurableEnd() async throws {
        try await Harness.withEmbeddedEngine { engine in
            let topics = Topics(prefix: "durable-", partitions: 1)
            try await engine.log.createTopic(topics.aggregates, partitions: 1)
            let record = OutgoingRecord(topic: topics.aggregates, key: "k", value: Array("{}".utf8))
            try await engine.log.append([record], commit: nil)
            engine.log.syncer.hold()
            defer { engine.log.syncer.release() }
            try await engine.log.append([record], commit: nil, durability: .deferred)  // committed, not fsync'd
            #expect(try await engine.log.endOffsets(topics.aggregates) == [2])
            let sub = try await EventSubscription.open(
                engine: engine.log, topics: topics, start: .end, filter: .init(), logger: Logger(label: "test"))
            guard case .caughtUp(let position) = try await sub.next() else { Issue.record("caught_up first"); return }
            #expect(position.offsets == [1])
            await sub.close()
        }
    }

    /// Caught-up subscribers receive a live event identically (same event, same position
    /// after it), whatever their filters: they share one `SharedDelivery` per event, and
    /// what the RPC layer makes from it (the encoded response) is made once. A shared
    /// delivery's position is always the subscriber's own, and history read by a
    /// subscriber's own reader is never shared.
    @Test func caughtUpSubscribersShareOneDeliveryPerEvent() async throws {
        try await Harness.run { h in
            let historyId = try await h.place().orderId
            let a = try await h.pipeline.subscribe(start: .end, filter: .init())
            let b = try await h.pipeline.subscribe(start: .end, filter: .init())
            let cancelsOnly = try await h.pipeline.subscribe(start: .end, filter: .init(eventTypes: ["OrderCancelledEvent"]))
            let fromStart = try await h.pipeline.subscribe(start: .beginning, filter: .init())
            for s in [a, b, cancelsOnly] {
                guard case .caughtUp = try await s.nextDelivery()?.item else { Issue.record("caught_up first"); return }
            }
            let history = try await deliveries(fromStart, until: { if case .caughtUp = $0 { true } else { false } })
            #expect(history.contains { if case .event(let e) = $0.item { e.event.orderId == historyId } else { false } })
            #expect(history.allSatisfy { $0.shared == nil }, "history from its own reader is not shared")

            let id = try await h.place().orderId
            _ = try await h.update(id, .cancel, version: 1)
            let isCancel: (EventSubscription.Item) -> Bool = {
                if case .event(let e) = $0 { e.event.orderId == id && e.event.typeName == "OrderCancelledEvent" } else { false }
            }
            let da = try await deliveries(a, until: isCancel).filter(\.isEvent)
            let db = try await deliveries(b, until: isCancel).filter(\.isEvent)
            let dc = try await deliveries(cancelsOnly, until: isCancel).filter(\.isEvent)
            let ds = try await deliveries(fromStart, until: isCancel).filter(\.isEvent)
            #expect(da.count == 2 && db.count == 2 && dc.count == 1 && ds.count == 2)
            for (x, y) in zip(da, db) {
                let sx = try #require(x.shared, "a caught-up subscriber's live event is shared")
                #expect(sx === y.shared)
                #expect(x.item == y.item)
            }
            #expect(dc.first?.shared === da.last?.shared, "a filter does not change the delivery")
            for d in da + db + dc + ds {
                guard case .event(let e) = d.item, let shared = d.shared else { continue }
                #expect(shared.position == e.position, "a shared delivery carries the subscriber's own position")
            }

            // Made once, by whichever subscriber gets there first.
            let made = Mutex(0)
            let shared = try #require(da.first?.shared)
            let first = shared.value { made.withLock { $0 += 1 }; return "encoded" }
            let second = try #require(db.first?.shared).value { made.withLock { $0 += 1 }; return "again" }
            #expect(first == "encoded" && second == "encoded")
            #expect(made.withLock { $0 } == 1)
            for s in [a, b, cancelsOnly, fromStart] { await s.close() }
        }
    }
}

extension EventSubscription.Delivery {
    fileprivate var isEvent: Bool {
        if case .event = item { return true }
        return false
    }
}

/// Deliveries up to and including the first item for which `stop` holds (heartbeats skipped).
private func deliveries(
    _ sub: EventSubscription, until stop: (EventSubscription.Item) -> Bool
) async throws -> [EventSubscription.Delivery] {
    var out: [EventSubscription.Delivery] = []
    while let d = try await sub.nextDelivery() {
        if case .heartbeat = d.item { continue }
        out.append(d)
        if stop(d.item) { break }
    }
    return out
}

// MARK: Helpers

/// Reads a subscription in a task, keeping its events.
final class Collector: Sendable {
    let subscription: EventSubscription
    private let got = Mutex<(events: [ProjectedEvent], caughtUp: LogPosition?)>(([], nil))
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(_ subscription: EventSubscription) {
        self.subscription = subscription
        // Holds self until stopped (tests stop every collector).
        let t = Task { [self] in
            do {
                while let item = try await subscription.next() {
                    switch item {
                    case .event(let e): self.got.withLock { $0.events.append(e) }
                    case .caughtUp(let p): self.got.withLock { $0.caughtUp = p }
                    case .heartbeat: break
                    }
                }
            } catch {}
        }
        task.withLock { $0 = t }
    }

    var events: [ProjectedEvent] { got.withLock { $0.events } }
    var caughtUpAt: LogPosition? { got.withLock { $0.caughtUp } }

    func stop() async {
        guard let t = task.withLock({ $0 }) else { return }
        t.cancel()
        await t.value
    }
}

/// Places `count` orders, 16 at a time; returns their ids.
@discardableResult
private func placeConcurrently(_ h: Harness, count: Int) async throws -> [String] {
    var ids: [String] = []
    var next = 0
    while next < count {
        let batch = min(16, count - next)
        ids += try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<batch { group.addTask { try await h.place().orderId } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        next += batch
    }
    return ids
}

/// What a subscription without the shared tail (its own reader only, as before the hub)
/// delivers from `start` up to the log's current end.
private func referenceEvents(_ h: Harness, start: EventSubscription.Start) async throws -> [ProjectedEvent] {
    let sub = try await EventSubscription.open(
        engine: h.engine, topics: h.pipeline.topics, start: start, filter: .init(), hub: nil, logger: Harness.logger)
    defer { Task { await sub.close() } }
    return try await collectUntilCaughtUp(sub)
}

private func collectUntilCaughtUp(_ sub: EventSubscription) async throws -> [ProjectedEvent] {
    var events: [ProjectedEvent] = []
    while let item = try await sub.next() {
        if case .event(let e) = item { events.append(e) }
        if case .caughtUp = item { break }
    }
    return events
}

private func perOrder(_ events: [ProjectedEvent]) -> [String: [OrderEvent]] {
    Dictionary(grouping: events.map(\.event), by: \.orderId)
}

/// Each position is at or past the previous one in every partition, and moved in one.
private func isMonotonic(_ positions: [LogPosition]) -> Bool {
    zip(positions, positions.dropFirst()).allSatisfy { a, b in
        zip(a.offsets, b.offsets).allSatisfy { $0 <= $1 } && a != b
    }
}

private func withEngine(
    sqlite: Bool, _ body: (any LogEngine, any ReadModelStore) async throws -> Void
) async throws {
    guard sqlite else { return try await body(InMemoryLogEngine(), InMemoryReadModelStore()) }
    try await Harness.withEmbeddedEngine { engine in try await body(engine.log, engine.readModel) }
}

/// Counts the readers opened of each kind.
private final class ReaderCountingEngine: WrappingEngine {
    struct Opened: Equatable { var plain = 0, catchUp = 0 }
    let inner: any LogEngine
    let opened = Mutex(Opened())
    init(inner: any LogEngine) { self.inner = inner }
    func openReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        opened.withLock { $0.plain += 1 }
        return try await inner.openReader(topic: topic, from: offsets)
    }
    func openCatchUpReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        opened.withLock { $0.catchUp += 1 }
        return try await inner.openReader(topic: topic, from: offsets)
    }
}
