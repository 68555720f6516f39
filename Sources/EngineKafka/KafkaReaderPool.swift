import EventLog
import Logging
import Synchronization

/// A few librdkafka consumers shared by the readers of StreamEvents subscribers behind
/// the tail (`openCatchUpReader`).
///
/// A reader of its own is a librdkafka client: about four threads and a broker
/// connection each. A thousand subscribers resuming at once after a restart would be four
/// thousand threads. Here a reader borrows a consumer for one batch, assigned at its own
/// positions, and gives it back. The consumer keeps its assignment (and what librdkafka
/// prefetched) while nobody else borrows it in between, so a lone reader reads as fast
/// as with a consumer of its own. Messages fetched for an earlier assignment never reach
/// the next borrower: librdkafka drops them by their assignment's version.
final class KafkaReaderPool: Sendable {
    /// One shared consumer. Touched only by the reader holding it (the lease is what
    /// `@unchecked Sendable` rests on): its batches run on `queue`, and after a failed
    /// batch the reader clears `assigned` off the queue, before giving the consumer back.
    final class Consumer: @unchecked Sendable {
        let client: RDKafkaClient
        let queue: BlockingQueue
        /// The reader whose positions the assignment goes on from, and those positions.
        var assigned: (reader: UInt64, positions: [Int64])?

        init(client: RDKafkaClient, label: String) {
            self.client = client
            queue = BlockingQueue(label: label)
        }
    }

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Consumer?, any Error>
    }

    private struct State {
        var idle: [Consumer] = []
        var created = 0
        var waiters: [Waiter] = []
        var nextId: UInt64 = 0
        var closed = false
        var assigns = 0
    }

    let size: Int
    /// How long a borrower with nothing to read keeps a consumer others wait for.
    let fairShare: Duration
    private let properties: [String: String]
    private let logger: Logger
    private let state = Mutex(State())

    init(size: Int, properties: [String: String], fairShare: Duration = .milliseconds(250), logger: Logger) {
        self.size = max(1, size)
        self.properties = properties
        self.fairShare = fairShare
        self.logger = logger
    }

    /// A new reader's id, which keeps a consumer's assignment its own between batches.
    func readerId() -> UInt64 {
        state.withLock { s in
            s.nextId += 1
            return s.nextId
        }
    }

    /// Consumers made so far, and assignments changed (tests).
    var created: Int { state.withLock { $0.created } }
    var assigns: Int { state.withLock { $0.assigns } }
    var hasWaiters: Bool { state.withLock { !$0.waiters.isEmpty } }

    /// A consumer, preferably the one still assigned for `reader`; nil when none came
    /// free by `deadline`, on cancellation, or once the pool is closed.
    func lease(for reader: UInt64, until deadline: ContinuousClock.Instant) async throws -> Consumer? {
        enum Step {
            case done(Consumer?)
            case create
            case wait(UInt64)
        }
        // The waiter's id for the cancellation handler, or that it ran first.
        let cancellation = Mutex<(waiter: UInt64?, cancelled: Bool)>((nil, false))
        return try await withTaskCancellationHandler {
            let consumer = try await withCheckedThrowingContinuation { (c: CheckedContinuation<Consumer?, any Error>) in
                let step = state.withLock { s -> Step in
                    if s.closed { return .done(nil) }
                    if let i = s.idle.firstIndex(where: { $0.assigned?.reader == reader }) ?? s.idle.indices.last {
                        return .done(s.idle.remove(at: i))
                    }
                    if s.created < size {
                        s.created += 1
                        return .create
                    }
                    s.nextId += 1
                    let id = s.nextId
                    let cancelled = cancellation.withLock { box in
                        box.waiter = id
                        return box.cancelled
                    }
                    if cancelled { return .done(nil) }
                    // Resumed with a consumer by `release`, or with nil by the timer,
                    // cancellation or `close`, whichever takes the waiter out first.
                    s.waiters.append(Waiter(id: id, continuation: c))
                    return .wait(id)
                }
                switch step {
                case .done(let consumer): c.resume(returning: consumer)
                case .create:
                    do {
                        let client = try RDKafkaClient(kind: .consumer, properties: properties, logger: logger)
                        c.resume(returning: Consumer(client: client, label: "kafka.catch-up-reader"))
                    } catch {
                        state.withLock { $0.created -= 1 }
                        c.resume(throwing: (error as? RDKafkaError).map { LogError.kafka($0, "opening a shared reader") } ?? error)
                    }
                case .wait(let id):
                    Task { [weak self] in
                        try? await Task.sleep(until: deadline, clock: .continuous)
                        self?.drop(waiter: id)
                    }
                }
            }
            if consumer == nil { try Task.checkCancellation() }
            return consumer
        } onCancel: {
            let waiter = cancellation.withLock { box in
                box.cancelled = true
                return box.waiter
            }
            if let waiter { drop(waiter: waiter) }
        }
    }

    /// Takes a waiter out (it timed out or was cancelled) and resumes it empty-handed.
    private func drop(waiter id: UInt64) {
        let waiter = state.withLock { s -> Waiter? in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        waiter?.continuation.resume(returning: nil)
    }

    /// Gives a consumer back: to the first waiter, else to the idle ones.
    func release(_ consumer: Consumer) {
        enum Step {
            case handOver(Waiter)
            case kept
            case destroy
        }
        let step = state.withLock { s -> Step in
            if s.closed { return .destroy }
            if !s.waiters.isEmpty { return .handOver(s.waiters.removeFirst()) }
            s.idle.append(consumer)
            return .kept
        }
        switch step {
        case .handOver(let waiter): waiter.continuation.resume(returning: consumer)
        case .kept: break
        case .destroy: Task { await consumer.queue.run { consumer.client.destroy() } }
        }
    }

    /// Assigns `consumer` at `reader`'s positions unless it still reads on from there.
    /// On the consumer's queue.
    func prepare(_ consumer: Consumer, for reader: UInt64, topic: String, positions: [Int64]) throws(LogError) {
        if let assigned = consumer.assigned, assigned.reader == reader, assigned.positions == positions { return }
        consumer.assigned = nil
        var offsets: [Int: Int64] = [:]
        for (p, o) in positions.enumerated() { offsets[p] = o }
        do {
            try consumer.client.assign(topic: topic, offsets: offsets)
        } catch {
            throw LogError.kafka(error, "assigning a shared reader on \(topic)")
        }
        consumer.assigned = (reader, positions)
        state.withLock { $0.assigns += 1 }
    }

    /// Ends every wait and destroys the idle consumers; borrowed ones go when given back.
    func close() async {
        let (idle, waiters) = state.withLock { s in
            s.closed = true
            defer {
                s.idle = []
                s.waiters = []
            }
            return (s.idle, s.waiters)
        }
        for waiter in waiters { waiter.continuation.resume(returning: nil) }
        for consumer in idle { await consumer.queue.run { consumer.client.destroy() } }
    }
}

/// A reader of `openCatchUpReader`: it holds positions, and borrows a consumer from the
/// pool for each batch.
final class PooledKafkaReader: LogReader {
    let topic: String
    private let pool: KafkaReaderPool
    private let id: UInt64
    private let logger: Logger
    private let positionsState: Mutex<[Int64]>
    private let closed = CancelFlag()

    init(topic: String, offsets: [Int64], pool: KafkaReaderPool, logger: Logger) {
        self.topic = topic
        self.pool = pool
        self.logger = logger
        id = pool.readerId()
        positionsState = Mutex(offsets)
    }

    func next(maxRecords: Int, timeout: Duration) async throws -> [LogRecord] {
        let deadline = ContinuousClock.now + timeout
        while true {
            try Task.checkCancellation()
            if closed.isSet { throw LogError(.closed, "reader closed") }
            // None came free in time: an empty batch, as when no record came.
            guard let consumer = try await pool.lease(for: id, until: deadline) else {
                if closed.isSet { throw LogError(.closed, "reader closed") }
                return []
            }
            let records: [LogRecord]
            do {
                records = try await read(with: consumer, maxRecords: maxRecords, deadline: deadline)
            } catch {
                consumer.assigned = nil
                pool.release(consumer)
                throw error
            }
            pool.release(consumer)
            if !records.isEmpty || ContinuousClock.now >= deadline { return records }
            // Nothing yet, and it gave the consumer up to a waiting reader: borrow again.
        }
    }

    /// One batch from this reader's positions. It keeps the consumer until records came
    /// or the deadline, but no longer than `fairShare` while other readers wait.
    private func read(with consumer: KafkaReaderPool.Consumer, maxRecords: Int, deadline: ContinuousClock.Instant) async throws
        -> [LogRecord]
    {
        let cancelled = CancelFlag()
        let positions = positionsState.withLock { $0 }
        let (pool, id, topic, closed, logger) = (pool, id, topic, closed, logger)
        let yieldAfter = ContinuousClock.now + pool.fairShare
        let batch = try await withTaskCancellationHandler {
            try await consumer.queue.run { () throws -> ConsumerBatch in
                try pool.prepare(consumer, for: id, topic: topic, positions: positions)
                var batch = try consumer.client.pollBatch(
                    maxRecords: maxRecords, timeout: deadline - .now, cancelled: cancelled, logger: logger,
                    stop: { closed.isSet || (ContinuousClock.now >= yieldAfter && pool.hasWaiters) })
                // Stopping here is no rebalance: a record polled as it happened is next in line.
                batch.records += batch.afterStop
                var next = positions
                next.advance(past: batch.records)
                consumer.assigned = (id, next)
                return batch
            }
        } onCancel: {
            cancelled.set()
            consumer.client.yield()
        }
        if !batch.records.isEmpty { positionsState.withLock { $0.advance(past: batch.records) } }
        return batch.records
    }

    func positions() async -> [Int64] { positionsState.withLock { $0 } }

    func close() async {
        closed.set()  // a batch in progress ends with what it has
    }
}
