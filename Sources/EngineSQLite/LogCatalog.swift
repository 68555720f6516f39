import Dispatch
import EventLog
import Synchronization

/// A topic as the engine knows it: its row id in `topics` and its partition count.
package struct TopicInfo: Sendable, Hashable {
    package var name: String
    package var id: Int64
    package var partitions: Int
    /// Whether `records_key` indexes this topic's records (`latestRecord` needs it).
    package var keyIndexed: Bool
}

/// What is committed and what is durable, in memory: the topics and, per partition, the
/// offset the next record gets and the end of the fsync'd prefix. The writer publishes
/// the first after each commit, the `WALSyncer` the second after each fsync; everyone
/// else reads them.
///
/// It is also where readers wait for records: a reader that found nothing parks a
/// continuation on its topic and the next `publish` (group consumers) or
/// `publishDurable` (plain readers) for that topic resumes it — no polling. The check "is
/// there anything past my positions?" and the parking happen under one lock, so a
/// publish in between cannot be missed.
package final class LogCatalog: Sendable {
    private struct Topic {
        var info: TopicInfo
        var ends: [Int64]
        var durable: [Int64]
        var waiters: [UInt64: UnsafeContinuation<Void, Never>] = [:]
        var durableWaiters: [UInt64: UnsafeContinuation<Void, Never>] = [:]

        func limit(durableOnly: Bool) -> [Int64] { durableOnly ? durable : ends }
    }

    private struct State {
        var topics: [String: Topic] = [:]
        /// The same topics' infos, kept whole so `snapshot()` (every append) hands out a
        /// reference instead of building a dictionary.
        var infos: [String: TopicInfo] = [:]
        var nextWaiter: UInt64 = 0
        /// Waiters whose task was cancelled before they could park (see `waitForRecords`).
        var cancelled: Set<UInt64> = []
        var closed = false
    }

    private let state = Mutex(State())

    package init() {}

    package func topic(_ name: String) -> TopicInfo? {
        state.withLock { $0.topics[name]?.info }
    }

    /// The topic, or `LogError.unknownTopic` (and `.closed` once the engine is closed).
    package func require(_ name: String, file: String = #fileID, line: Int = #line) throws -> TopicInfo {
        try state.withLock { s in
            if s.closed { throw LogError(.closed, "the log engine is closed", file: file, line: line) }
            guard let topic = s.topics[name] else { throw LogError.unknownTopic(name, file: file, line: line) }
            return topic.info
        }
    }

    /// Several topics under one lock (an append touching many records looks them up once).
    package func snapshot() throws -> [String: TopicInfo] {
        try state.withLock { s in
            if s.closed { throw LogError(.closed, "the log engine is closed") }
            return s.infos
        }
    }

    package func ends(_ name: String) -> [Int64]? {
        state.withLock { $0.topics[name]?.ends }
    }

    /// The end of what readers may see: everything committed, or only the durable prefix.
    package func ends(_ name: String, durableOnly: Bool) -> [Int64]? {
        state.withLock { $0.topics[name]?.limit(durableOnly: durableOnly) }
    }

    package var isClosed: Bool { state.withLock { $0.closed } }

    /// Adds a topic (start-up, `createTopic`) whose records up to `ends` are durable. An
    /// existing topic is left as it is.
    package func add(_ info: TopicInfo, ends: [Int64]) {
        state.withLock { s in
            if s.topics[info.name] == nil {
                s.topics[info.name] = Topic(info: info, ends: ends, durable: ends)
                s.infos[info.name] = info
            }
        }
    }

    /// Publishes new end offsets after a commit and wakes the topic's waiting readers.
    package func publish(_ ends: [String: [Int64]]) {
        publish(ends, into: \.ends, waking: \.waiters)
    }

    /// Publishes the durable ends after an fsync and wakes the topic's waiting readers.
    package func publishDurable(_ ends: [String: [Int64]]) {
        publish(ends, into: \.durable, waking: \.durableWaiters)
    }

    private func publish(
        _ ends: [String: [Int64]], into limit: WritableKeyPath<Topic, [Int64]>,
        waking waiters: WritableKeyPath<Topic, [UInt64: UnsafeContinuation<Void, Never>]>
    ) {
        var wake: [UnsafeContinuation<Void, Never>] = []
        state.withLock { s in
            for (name, offsets) in ends {
                guard var topic = s.topics[name], topic[keyPath: limit] != offsets else { continue }
                topic[keyPath: limit] = offsets
                wake.append(contentsOf: topic[keyPath: waiters].values)
                topic[keyPath: waiters].removeAll(keepingCapacity: true)
                s.topics[name] = topic
            }
        }
        // Resumed outside the lock: a resumed task may come straight back for it.
        for continuation in wake { continuation.resume() }
    }

    /// Marks the catalog closed and wakes every waiter (they then see `.closed`).
    package func close() {
        var wake: [UnsafeContinuation<Void, Never>] = []
        state.withLock { s in
            s.closed = true
            for name in s.topics.keys {
                wake.append(contentsOf: s.topics[name]!.waiters.values)
                wake.append(contentsOf: s.topics[name]!.durableWaiters.values)
                s.topics[name]!.waiters.removeAll()
                s.topics[name]!.durableWaiters.removeAll()
            }
        }
        for continuation in wake { continuation.resume() }
    }

    /// Waits until some partition of `topic` ends (durably, if `durableOnly`) past
    /// `positions`, until `deadline`, or until the task is cancelled or the catalog closed
    /// — whichever comes first. Returns without telling which: the caller looks again.
    ///
    /// One parked continuation, resumed by whichever comes first: a publish, a Dispatch
    /// timer, cancellation. (A task group racing a sleeping child cost a task, a timer
    /// job and a cancellation per wait, on every hop of a busy pipeline.)
    package func waitForRecords(
        topic: String, beyond positions: [Int64], durableOnly: Bool, until deadline: ContinuousClock.Instant
    ) async {
        let id = state.withLock { s in
            defer { s.nextWaiter &+= 1 }
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let parked = state.withLock { s -> Bool in
                    // Cancelled before parking: onCancel found nothing to resume and left a
                    // note instead.
                    if s.closed || s.cancelled.remove(id) != nil { return false }
                    guard let t = s.topics[topic] else { return false }
                    for (p, end) in t.limit(durableOnly: durableOnly).enumerated() where p < positions.count && end > positions[p] {
                        return false
                    }
                    if durableOnly {
                        s.topics[topic]!.durableWaiters[id] = continuation
                    } else {
                        s.topics[topic]!.waiters[id] = continuation
                    }
                    return true
                }
                guard parked else {
                    continuation.resume()
                    return
                }
                let left = ContinuousClock.now.duration(to: deadline)
                let nanoseconds = max(0, left.components.seconds * 1_000_000_000 + left.components.attoseconds / 1_000_000_000)
                Self.timers.asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) {
                    self.unpark(topic: topic, id: id)?.resume()
                }
            }
        } onCancel: {
            let continuation = state.withLock { s -> UnsafeContinuation<Void, Never>? in
                if let c = Self.take(&s, topic: topic, id: id) { return c }
                s.cancelled.insert(id)
                return nil
            }
            continuation?.resume()
        }
        // onCancel may have run after we were resumed normally; drop its note.
        _ = state.withLock { $0.cancelled.remove(id) }
    }

    /// Fires the waiters' deadlines.
    private static let timers = DispatchQueue(label: "EngineSQLite.log.wait-timers")

    /// The waiter's continuation if it is still parked (each is resumed exactly once: by
    /// whoever takes it out).
    private func unpark(topic: String, id: UInt64) -> UnsafeContinuation<Void, Never>? {
        state.withLock { Self.take(&$0, topic: topic, id: id) }
    }

    private static func take(_ s: inout State, topic: String, id: UInt64) -> UnsafeContinuation<Void, Never>? {
        if let c = s.topics[topic]?.waiters.removeValue(forKey: id) { return c }
        if let c = s.topics[topic]?.durableWaiters.removeValue(forKey: id) { return c }
        return nil
    }
}
