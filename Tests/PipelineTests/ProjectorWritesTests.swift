@testable import EventLog
import OrderDomain
import Synchronization
import Testing

@Suite("ProjectorWrites")
struct ProjectorWritesTests {
    static let t0 = Timestamp(microseconds: 1_618_822_699_818_153)

    /// Order `id`'s view after `version` events, and the outcome of its last one.
    static func step(_ id: String, _ version: Int, at offset: Int64) -> (OrderView, CommandOutcome) {
        let position = LogPosition(offsets: [offset])
        var events: [ProjectedEvent] = []
        for v in 1...version {
            let kind: OrderEvent.Kind =
                v == 1 ? .placed(riderId: "r", price: "1.00", route: [Waypoint(address: "A", lat: 1, lon: 2), Waypoint(address: "B", lat: 3, lon: 4)])
                : .accepted(driverId: "d")
            events.append(
                ProjectedEvent(event: OrderEvent(orderId: id, version: v, createdDate: t0, commandId: "\(id)-\(v)", kind: kind), position: position))
        }
        let view = OrderView(orderId: id, order: OrderDecider.fold(events.map(\.event)), events: events)
        let last = events.last!
        return (view, CommandOutcome(commandId: last.event.commandId, orderId: id, event: last.event, order: view.order, position: position))
    }

    static func batch(_ number: Int, _ steps: [(OrderView, CommandOutcome)]) -> ProjectorWrites.Batch {
        ProjectorWrites.Batch(
            number: number, views: steps.map(\.0), outcomes: steps.map(\.1), checkpoint: LogPosition(offsets: [Int64(number)]))
    }

    @Test("batches queued behind a write go out as one update: each order once, newest view, first-touch order")
    func mergesWhatQueued() async throws {
        let store = GatedReadModelStore()
        let written = Mutex<[Int]>([])
        let writes = ProjectorWrites(store: store) { batch, _ in written.withLock { $0.append(batch) } }
        store.hold()
        try writes.enqueue(Self.batch(1, [Self.step("a", 1, at: 1), Self.step("b", 1, at: 1)]))
        while store.parkedCount == 0 { await Task.yield() }
        try writes.enqueue(Self.batch(2, [Self.step("a", 2, at: 2), Self.step("c", 1, at: 2)]))
        try writes.enqueue(Self.batch(3, [Self.step("b", 2, at: 3), Self.step("a", 3, at: 3)]))
        store.release()
        try await writes.drained()

        let updates = store.updates
        #expect(updates.count == 2)
        #expect(updates[0].views.map(\.orderId) == ["a", "b"])
        #expect(updates[1].views.map(\.orderId) == ["a", "c", "b"])
        #expect(updates[1].views.map { $0.events.count } == [3, 1, 2])
        #expect(updates[1].outcomes.map(\.commandId) == ["a-2", "c-1", "b-2", "a-3"])
        #expect(updates[1].checkpoint == LogPosition(offsets: [3]))
        #expect(written.withLock { $0 } == [1, 3])
        #expect(try await store.view(orderId: "a")?.events.count == 3)
    }

    @Test("waitForRoom waits while the backlog is at the limit")
    func backlogBound() async throws {
        let store = GatedReadModelStore()
        let writes = ProjectorWrites(store: store) { _, _ in }
        store.hold()
        try writes.enqueue(Self.batch(1, [Self.step("o1", 1, at: 1)]))
        while store.parkedCount == 0 { await Task.yield() }
        for n in 2...3 { try writes.enqueue(Self.batch(n, [Self.step("o\(n)", 1, at: Int64(n))])) }
        let roomMade = Mutex(false)
        let waited = Task {
            try await writes.waitForRoom(below: 2)
            roomMade.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(!roomMade.withLock { $0 })
        store.release()
        try await waited.value
        try await writes.drained()
        #expect(store.updates.map { $0.views.map(\.orderId) } == [["o1"], ["o2", "o3"]])
    }

    @Test("a failed write fails every later call")
    func failureEndsTheRun() async throws {
        let store = GatedReadModelStore()
        let writes = ProjectorWrites(store: store) { _, _ in }
        store.refuse()
        try writes.enqueue(Self.batch(1, [Self.step("a", 1, at: 1)]))
        await #expect(throws: GatedReadModelStore.Refused.self) { try await writes.drained() }
        #expect(throws: GatedReadModelStore.Refused.self) { try writes.enqueue(Self.batch(2, [Self.step("b", 1, at: 2)])) }
        await #expect(throws: GatedReadModelStore.Refused.self) { try await writes.waitForRoom(below: 10) }
    }
}
