import Logging
import OrderDomain
import Synchronization

/// StreamEvents' shared tail: one reader per pipeline follows the live end of
/// `order-aggregates`, decodes each record once into a `TailRing`, and wakes the
/// subscriptions reading from that ring, so a live append costs one log read and one
/// decode instead of one per subscriber.
///
/// - It reads through `engine.openReader`, never a group consumer: plain readers deliver
///   only durable records, so subscribers never see an event that a crash could undo.
/// - A subscriber reads the ring at its own pace through a cursor; nothing is copied per
///   subscriber ahead of time. The ring is the bound: a subscriber that falls more than
///   `capacity` records (or `maxBytes` of them) behind finds its cursor evicted (`.lagged`) and goes back to its
///   own reader from its last delivered position, so it never holds memory or slows the
///   tail or the others.
/// - It starts on the first subscription (`ensureRunning`) and then follows the log for
///   as long as `run()` runs. After a read error it ends the session (subscribers fall
///   back to their own readers), backs off and starts a new one at the log's end.
public final class StreamHub: Sendable {
    /// What a subscriber finds at its cursor.
    enum Read {
        case entries([TailRing.Entry], next: Int64)
        /// Nothing new yet.
        case idle
        /// Its next entry was evicted: it fell more than the ring's capacity behind.
        case lagged
        /// The session it attached to ended (read error, shutdown).
        case reset
    }

    /// Counters for tests and logs.
    public struct Stats: Sendable, Equatable {
        public var running: Bool
        /// Open subscriptions (registered, not yet forgotten).
        public var open: Int
        /// Subscriptions reading from the ring now.
        public var attached: Int
        /// Subscriptions suspended waiting for the next record.
        public var waiting: Int
        /// Switches from an own reader to the ring, and back after falling behind.
        public var attaches: Int
        public var fallbacks: Int
    }

    private struct State {
        var ring: TailRing?
        var generation: UInt64 = 0
        var nextSeq: Int64 = 0
        var nextId: UInt64 = 0
        var open: Set<UInt64> = []
        var attached: Set<UInt64> = []
        /// Unsafe rather than checked continuations: a live event resumes every waiting
        /// subscriber (1,000 in the benchmark), and a checked one allocates a canary per wait.
        /// Each is resumed exactly once: whoever removes it from this table resumes it.
        var waiters: [UInt64: UnsafeContinuation<Void, Never>] = [:]
        var attaches = 0
        var fallbacks = 0
        var loopRunning = false
        var demanded = false
        var demand: CheckedContinuation<Void, Never>?
        var starting: [CheckedContinuation<Void, Never>] = []
    }

    private let engine: any LogEngine
    private let topic: String
    private let capacity: Int
    private let maxBytes: Int
    private let tick: Duration
    private let logger: Logger
    private let state = Mutex(State())

    /// `tick`: how long the tail waits for records before waking idle subscribers anyway,
    /// so that they can send heartbeats on time.
    /// `capacity` and `maxBytes` bound the ring (`TailRing`) by records and by bytes.
    public init(engine: any LogEngine, topic: String, capacity: Int, maxBytes: Int = .max, tick: Duration, logger: Logger) {
        self.engine = engine
        self.topic = topic
        self.capacity = capacity
        self.maxBytes = maxBytes
        self.tick = tick
        self.logger = logger
    }

    public var stats: Stats {
        state.withLock { s in
            Stats(
                running: s.ring != nil, open: s.open.count, attached: s.attached.count, waiting: s.waiters.count,
                attaches: s.attaches, fallbacks: s.fallbacks)
        }
    }

    // MARK: The tail

    /// Follows the log until cancelled; never throws (the pipeline must not stop because
    /// StreamEvents' tail failed: subscriptions still work on their own readers).
    public func run() async {
        let demanded = state.withLock { s in
            s.loopRunning = true
            return s.demanded
        }
        defer { stop() }
        if !demanded {
            await withTaskCancellationHandler {
                await withCheckedContinuation { c in
                    let ready = state.withLock { s in
                        if s.demanded || Task.isCancelled { return true }
                        s.demand = c
                        return false
                    }
                    if ready { c.resume() }
                }
            } onCancel: {
                state.withLock { $0.demand.take() }?.resume()
            }
        }
        var backoff: Duration = .milliseconds(100)
        while !Task.isCancelled {
            do {
                try await session()
            } catch {
                endSession()
                if Task.isCancelled { break }
                logger.warning("StreamEvents tail failed; subscribers read on their own", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// Starts the tail if it is not running yet and waits for it; returns at once when
    /// `run()` is not running (subscriptions then use their own readers until it is, and
    /// switch to the tail after their next page or heartbeat).
    public func ensureRunning() async {
        await withCheckedContinuation { c in
            let (ready, demand) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
                // Demanded even when `run()` has not begun yet: it then starts at once.
                s.demanded = true
                // Waits only for the first start: after a failure the tail retries with a
                // backoff, and subscriptions should not wait for that.
                if s.ring != nil || !s.loopRunning || s.generation > 0 { return (true, s.demand.take()) }
                s.starting.append(c)
                return (false, s.demand.take())
            }
            demand?.resume()
            if ready { c.resume() }
        }
    }

    private func session() async throws {
        let start = try await engine.durableEndOffsets(topic)
        let reader = try await engine.openReader(topic: topic, from: start)
        let starting = state.withLock { s in
            s.generation += 1
            s.ring = TailRing(capacity: capacity, maxBytes: maxBytes, start: start, seq: s.nextSeq)
            defer { s.starting = [] }
            return s.starting
        }
        for c in starting { c.resume() }
        do {
            while true {
                let records = try await reader.next(maxRecords: 512, timeout: tick)
                publish(records.map { TailRing.Entry(partition: $0.partition, offset: $0.offset, event: Self.event(in: $0)) })
            }
        } catch {
            await reader.close()
            throw error
        }
    }

    static func event(in record: LogRecord) -> OrderEvent? {
        if case .event(let event) = AggregateRow.analyze(record).change { return event }
        return nil
    }

    /// Appends what the tail read and wakes every waiting subscriber; with nothing read
    /// (a tick) it wakes them too, for their heartbeats.
    private func publish(_ entries: [TailRing.Entry]) {
        let wake = state.withLock { s -> [UnsafeContinuation<Void, Never>] in
            guard s.ring != nil else { return [] }
            for entry in entries { s.ring!.append(entry) }
            s.nextSeq = s.ring!.nextSeq
            let wake = Array(s.waiters.values)
            s.waiters.removeAll(keepingCapacity: true)
            return wake
        }
        for c in wake { c.resume() }
    }

    /// Drops the ring: attached subscribers see `.reset` and go back to their own readers;
    /// subscriptions waiting for the first start go ahead without the tail.
    private func endSession() {
        let (waiters, starting) = state.withLock { s -> ([UnsafeContinuation<Void, Never>], [CheckedContinuation<Void, Never>]) in
            s.ring = nil
            s.generation += 1
            s.attached.removeAll()
            defer {
                s.waiters.removeAll()
                s.starting = []
            }
            return (Array(s.waiters.values), s.starting)
        }
        for c in waiters { c.resume() }
        for c in starting { c.resume() }
    }

    private func stop() {
        state.withLock { $0.loopRunning = false }
        endSession()
    }

    // MARK: Subscribers

    func register() -> UInt64 {
        state.withLock { s in
            s.nextId += 1
            s.open.insert(s.nextId)
            return s.nextId
        }
    }

    /// Forgets a closed subscription (and any wait it left behind).
    func forget(_ id: UInt64) {
        let waiter = state.withLock { s in
            s.open.remove(id)
            s.attached.remove(id)
            return s.waiters.removeValue(forKey: id)
        }
        waiter?.resume()
    }

    /// Switches a subscriber at `position` to the ring when the ring still holds everything
    /// it has not seen; returns its cursor and the session it belongs to.
    func attach(_ id: UInt64, at position: [Int64]) -> (cursor: Int64, generation: UInt64)? {
        state.withLock { s in
            guard let ring = s.ring, s.open.contains(id), ring.covers(position) else { return nil }
            s.attached.insert(id)
            s.attaches += 1
            return (ring.cursor(for: position), s.generation)
        }
    }

    /// Back to its own reader (it lagged, or the session ended).
    func detach(_ id: UInt64, lagged: Bool) {
        state.withLock { s in
            s.attached.remove(id)
            if lagged { s.fallbacks += 1 }
        }
    }

    func read(from cursor: Int64, generation: UInt64, max: Int) -> Read {
        state.withLock { s in
            guard let ring = s.ring, s.generation == generation else { return .reset }
            if cursor < ring.firstSeq { return .lagged }
            if cursor >= ring.nextSeq { return .idle }
            let entries = ring.entries(from: cursor, max: max)
            return .entries(entries, next: cursor + Int64(entries.count))
        }
    }

    /// Suspends until the ring has something past `cursor`, the next tick, the session
    /// ends, or the task is cancelled.
    func wait(_ id: UInt64, after cursor: Int64, generation: UInt64) async {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { c in
                // Checked under the lock that `publish` and the cancellation handler take:
                // a record published, or a cancellation, just before this is not missed.
                let ready = state.withLock { s in
                    if Task.isCancelled || s.generation != generation || s.nextSeq > cursor || !s.open.contains(id) {
                        return true
                    }
                    s.waiters[id] = c
                    return false
                }
                if ready { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
