import Dispatch
import EventLog
import Synchronization

/// A serial DispatchQueue for blocking librdkafka calls, so they never run on the Swift
/// cooperative pool. One per consumer (librdkafka's consumer calls must not overlap),
/// one for the engine's control handle.
final class BlockingQueue: Sendable {
    private let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    /// Runs `body` on the queue and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Runs `body` on the queue; for work that cannot fail.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: body()) }
        }
    }
}

/// A loop on its own thread (a dedicated serial queue) until stopped: the producers'
/// delivery-report pollers and the key index's followers.
final class BackgroundLoop: Sendable {
    private let stopped = CancelFlag()
    private let done = DispatchGroup()

    /// Starts `iteration` repeatedly until stopped; each iteration should block at most
    /// ~100 ms so stopping is prompt.
    init(label: String, iteration: @escaping @Sendable () -> Void) {
        done.enter()
        DispatchQueue(label: label).async { [stopped, done] in
            while !stopped.isSet { iteration() }
            done.leave()
        }
    }

    /// Asks the loop to end and waits until its current iteration returned.
    func stop() async {
        stopped.set()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            done.notify(queue: .global()) { c.resume() }
        }
    }

    /// `stop()` for code already on a blocking queue.
    func stopBlocking() {
        stopped.set()
        done.wait()
    }
}

/// A flag set from a task-cancellation handler, read by blocking loops.
final class CancelFlag: Sendable {
    private let flag = Atomic(false)
    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}

/// Collects the delivery reports of one append.
final class DeliveryBatch: Sendable {
    typealias Outcome = Result<(partition: Int, offset: Int64), RDKafkaError>
    private struct State {
        var outcomes: [Outcome?]
        var remaining: Int
        var waiter: CheckedContinuation<[Outcome], Never>?
    }
    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(outcomes: Array(repeating: nil, count: count), remaining: count))
    }

    func ticket(_ index: Int) -> RDKafkaDeliveryTicket {
        RDKafkaDeliveryTicket { [self] outcome in complete(index, outcome) }
    }

    /// Records an outcome (a delivery report, or a refusal at produce time).
    func complete(_ index: Int, _ outcome: Outcome) {
        let resume = state.withLock { s -> (CheckedContinuation<[Outcome], Never>, [Outcome])? in
            guard s.outcomes[index] == nil else { return nil }
            s.outcomes[index] = outcome
            s.remaining -= 1
            guard s.remaining == 0, let w = s.waiter else { return nil }
            s.waiter = nil
            return (w, s.outcomes.map { $0! })
        }
        if let (w, outcomes) = resume { w.resume(returning: outcomes) }
    }

    /// The first failure recorded so far: a record librdkafka refused when it was
    /// produced (too large, unknown partition), or a delivery that failed.
    var firstFailure: RDKafkaError? {
        state.withLock { s in
            for case .failure(let error)? in s.outcomes { return error }
            return nil
        }
    }

    /// Every outcome, once all are in (librdkafka reports every record, bounded by
    /// message.timeout.ms).
    func wait() async -> [Outcome] {
        await withCheckedContinuation { c in
            let ready = state.withLock { s -> [Outcome]? in
                if s.remaining == 0 { return s.outcomes.map { $0! } }
                s.waiter = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}

extension LogError {
    /// A librdkafka failure as the engine's error: the broker or cluster is not
    /// reachable or refused; the caller may retry.
    static func kafka(_ error: RDKafkaError, _ context: String, file: String = #fileID, line: Int = #line) -> LogError {
        LogError(.unavailable, "kafka: \(context): \(error)", file: file, line: line)
    }
}

extension Duration {
    /// Whole milliseconds, at least 0, for librdkafka's `int timeout_ms` arguments.
    var milliseconds: Int {
        let (s, atto) = components
        return max(0, Int(s) * 1000 + Int(atto / 1_000_000_000_000_000))
    }
}
