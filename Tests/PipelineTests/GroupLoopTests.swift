@testable import EventLog
import Logging
import Synchronization
import Testing

/// `GroupLoop` ends a member only once the member's last append is over: on Kafka an
/// append commits through the member (its group metadata, its offsets), so closing the
/// member under it would commit through a destroyed handle or a member that left.
@Suite struct GroupLoopTests {
    @Test(arguments: [true, false])
    func theMemberClosesOnlyAfterItsAppendInFlight(cancelled: Bool) async throws {
        let engine = HeldAppendEngine(InMemoryLogEngine())
        try await engine.createTopic("source", partitions: 1)
        try await engine.createTopic("sink", partitions: 1)
        try await engine.append([OutgoingRecord(topic: "source", key: "k", value: [1])], commit: nil)

        var loop = GroupLoop(engine: engine, group: "g", topic: "source", logger: Logger(label: "test"))
        loop.overlapsAppends = true
        loop.pollTimeout = .milliseconds(20)
        let handled = Mutex(0)
        let task = Task {
            try await loop.run { records in
                // The second batch fails, ending the member while the first batch's append
                // is still held (the error path); the first one only appends.
                let n = handled.withLock { h in
                    h += 1
                    return h
                }
                if n > 1 { throw TestFailure() }
                return records.map { OutgoingRecord(topic: "sink", key: $0.key, value: $0.value) }
            }
        }
        try await engine.events.waitFor("append started")
        if cancelled {
            task.cancel()
        } else {
            try await engine.append([OutgoingRecord(topic: "source", key: "k", value: [2])], commit: nil)
            try await waitUntil { handled.withLock { $0 } == 2 }
        }
        // Whatever ends the member, it must still be open while its append is held.
        try await Task.sleep(for: .milliseconds(200))
        #expect(!engine.events.all.contains("closed"), "closed under the append in flight: \(engine.events.all)")
        engine.releaseAppends()
        try await engine.events.waitFor("closed")
        task.cancel()
        _ = await task.result
        let events = engine.events.all
        let appendEnd = try #require(events.firstIndex(of: "append finished"))
        let close = try #require(events.firstIndex(of: "closed"))
        #expect(appendEnd < close, "\(events)")
    }

    private struct TestFailure: Error {}

    private func waitUntil(_ condition: () -> Bool) async throws {
        for _ in 0..<500 where !condition() { try await Task.sleep(for: .milliseconds(10)) }
        #expect(condition())
    }
}

/// Holds every append to "sink" until `releaseAppends()`, and records when appends start
/// and finish and when group members close.
private final class HeldAppendEngine: WrappingEngine {
    let inner: any LogEngine
    let events = EventRecorder()
    /// Whether appends are released, and the appends waiting for it.
    private let gate = Mutex((released: false, waiting: [CheckedContinuation<Void, Never>]()))

    init(_ inner: any LogEngine) { self.inner = inner }

    func releaseAppends() {
        let waiting = gate.withLock { g in
            defer { g = (true, []) }
            return g.waiting
        }
        for w in waiting { w.resume() }
    }

    func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress] {
        guard records.contains(where: { $0.topic == "sink" }) else {
            return try await inner.append(records, commit: commit, durability: durability)
        }
        events.add("append started")
        // Not cancellable: an append on a broker does not stop half-way either.
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = gate.withLock { g in
                if !g.released { g.waiting.append(c) }
                return g.released
            }
            if resumeNow { c.resume() }
        }
        let addresses = try await inner.append(records, commit: commit, durability: durability)
        events.add("append finished")
        return addresses
    }

    func joinGroup(_ group: String, topic: String) async throws -> any GroupConsumer {
        ClosingRecorded(inner: try await inner.joinGroup(group, topic: topic), events: events)
    }
}

private final class ClosingRecorded: WrappingConsumer {
    let inner: any GroupConsumer
    let events: EventRecorder
    init(inner: any GroupConsumer, events: EventRecorder) {
        self.inner = inner
        self.events = events
    }
    func close() async {
        await inner.close()
        events.add("closed")
    }
}

private final class EventRecorder: Sendable {
    private let events = Mutex<[String]>([])
    func add(_ event: String) { events.withLock { $0.append(event) } }
    var all: [String] { events.withLock { $0 } }
    func waitFor(_ event: String) async throws {
        for _ in 0..<500 where !all.contains(event) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(all.contains(event), "never saw \(event): \(all)")
    }
}
