import Logging
import OrderDomain
import Synchronization

/// Keeps this instance's read model: reads every partition of `order-aggregates` (no
/// consumer group: each instance sees every order) from the store's checkpoint, and for
/// each batch puts the new views in its cache, wakes the callers waiting for those
/// outcomes and versions, and writes views, outcomes and checkpoint to the store in one
/// atomic step.
///
/// The store writes run behind, in order (up to `maxUnwrittenBatches`, overlapping the next
/// batches' work, those that queue while a write runs merged into one: `ProjectorWrites`):
/// every outcome comes from the durable log, so a crash before the write only makes the
/// projector redo the batch from the store's checkpoint, with the same result. Until a
/// batch is written, its outcomes answer from memory (`unwrittenOutcome`) and its views
/// from the cache; listings, which only the store answers, wait for it
/// (`waitUntilWritten`).
public final class Projector: Sendable {
    let engine: any LogEngine
    let store: any ReadModelStore
    let topics: Topics
    let logger: Logger
    let outcomes = Waiters<String, CommandOutcome>()
    let versions = Waiters<String, Int>()
    private let state = Mutex(ProgressState())
    /// Views this projector wrote: it is the store's only writer, so they stay current.
    /// Bounded by count and bytes (a view holds the order's route, up to 100 KB, and its
    /// events), except that the views of batches not yet in the store are held
    /// (`BoundedCache.holdNewWrites`) until their write: evicted, they would be read back
    /// stale from the store.
    private let views: Mutex<BoundedCache<String, OrderView>>

    private struct ProgressState {
        var position: LogPosition?
        var caughtUpTo: LogPosition?
        var readyWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// Batches published to callers but not yet in the store. Waiters wait for log
    /// positions, not batch numbers: after a failed write the batches are redone from the
    /// store's checkpoint under new numbers and other bounds, and a waiter is released
    /// only once the store holds everything published before it came.
    private struct WriteState {
        var published = 0
        /// The published batches not yet written, in order: where each ends in the log,
        /// and the view cache's stamp after its views went in (once written, they may be
        /// evicted).
        var unwritten: [(batch: Int, end: LogPosition, cacheStamp: UInt64)] = []
        /// How far batches were published (never moves back), and how far the store holds.
        var publishedTo: LogPosition?
        var writtenTo: LogPosition?
        var outcomes: [String: CommandOutcome] = [:]
        var waiters: [Waiter] = []
        var nextWaiterId = 0

        func isWritten(_ position: LogPosition) -> Bool {
            guard let writtenTo else { return false }
            return zip(writtenTo.offsets, position.offsets).allSatisfy { $0 >= $1 }
        }

        /// Takes out the waiters whose position the store now holds.
        mutating func releaseWritten() -> [CheckedContinuation<Void, Never>] {
            var ready: [CheckedContinuation<Void, Never>] = []
            var waiting: [Waiter] = []
            for waiter in waiters {
                if isWritten(waiter.position) { ready.append(waiter.continuation) } else { waiting.append(waiter) }
            }
            waiters = waiting
            return ready
        }
    }
    private struct Waiter {
        var id: Int
        var position: LogPosition
        var continuation: CheckedContinuation<Void, Never>
    }
    private let writes = Mutex(WriteState())
    /// Batches published ahead of the store at most. Their views stay in the cache until
    /// written (held there, whatever its bounds): a view evicted before its write would be
    /// read back stale from the store.
    static let maxUnwrittenBatches = 8

    public init(
        engine: any LogEngine, store: any ReadModelStore, topics: Topics, logger: Logger, viewCacheCapacity: Int = 20_000,
        viewCacheMaxBytes: Int = 64 << 20
    ) {
        self.engine = engine
        self.store = store
        self.topics = topics
        self.logger = logger
        views = Mutex(BoundedCache(capacity: viewCacheCapacity, maxBytes: viewCacheMaxBytes) { key, view in view.estimatedBytes })
    }

    /// The view of an order as this projector last wrote it, if still cached: queries
    /// answer from memory for recently active orders. Only the projector fills the cache
    /// (a reader putting a view it read would race a newer write).
    public func cachedView(orderId: String) -> OrderView? {
        views.withLock { $0[orderId] }
    }

    /// Views cached and their estimated bytes (for tests).
    var viewCacheUsage: (count: Int, bytes: Int) { views.withLock { ($0.count, $0.bytes) } }

    /// An order's view: from the cache when it has the order, else from the store (which
    /// is never ahead of the cache: the cache gets a view before the store does).
    public func view(orderId: String) async throws -> OrderView? {
        if let cached = cachedView(orderId: orderId) { return cached }
        return try await store.view(orderId: orderId)
    }

    /// An outcome published but not yet written to the store.
    public func unwrittenOutcome(commandId: String) -> CommandOutcome? {
        writes.withLock { $0.outcomes[commandId] }
    }

    /// Returns once every batch published so far is in the store, when the task is
    /// cancelled (the caller's deadline), or when the store cannot even be read.
    public func waitUntilWritten() async {
        let id = writes.withLock { w in
            w.nextWaiterId += 1
            return w.nextWaiterId
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let done = writes.withLock { w -> Bool in
                    guard !Task.isCancelled, let target = w.publishedTo, !w.isWritten(target) else { return true }
                    w.waiters.append(Waiter(id: id, position: target, continuation: c))
                    return false
                }
                if done { c.resume() }
            }
        } onCancel: {
            let waiter = writes.withLock { w -> Waiter? in
                guard let i = w.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return w.waiters.remove(at: i)
            }
            waiter?.continuation.resume()
        }
    }

    private func publish(_ outcomes: [CommandOutcome], through position: LogPosition, cacheStamp: UInt64) -> Int {
        writes.withLock { w in
            w.published += 1
            w.unwritten.append((w.published, position, cacheStamp))
            w.publishedTo = w.publishedTo.map { LogPosition(offsets: zip($0.offsets, position.offsets).map { max($0, $1) }) } ?? position
            for outcome in outcomes where w.outcomes[outcome.commandId] == nil { w.outcomes[outcome.commandId] = outcome }
            return w.published
        }
    }

    /// A new run redoes from the store's checkpoint (`start`) whatever a failed run did not
    /// write: its outcomes come again, and waiters wait on until the redone batches are in.
    private func abandonUnwritten(writtenTo start: LogPosition) {
        let ready = writes.withLock { w -> [CheckedContinuation<Void, Never>] in
            w.outcomes.removeAll()
            w.unwritten.removeAll()
            w.writtenTo = start
            return w.releaseWritten()
        }
        for c in ready { c.resume() }
        // What the failed run cached stays evictable; what this run caches is held until written.
        views.withLock { $0.holdNewWrites() }
    }

    private func written(_ batch: Int, _ outcomes: [CommandOutcome]) {
        let (ready, stamp) = writes.withLock { w -> ([CheckedContinuation<Void, Never>], UInt64?) in
            // Batches merged into one write are reported by the last of them (ProjectorWrites).
            let last = w.unwritten.last { $0.batch <= batch }
            if let last { w.writtenTo = last.end }
            w.unwritten.removeAll { $0.batch <= batch }
            for outcome in outcomes { w.outcomes[outcome.commandId] = nil }
            return (w.releaseWritten(), last?.cacheStamp)
        }
        if let stamp { views.withLock { $0.release(through: stamp) } }
        for c in ready { c.resume() }
    }

    /// The read model's position: every event before it is visible to queries.
    public var position: LogPosition? { state.withLock { $0.position } }

    /// True once the read model has caught up with the log as it was at start-up.
    public var isReady: Bool {
        state.withLock { s in
            guard let target = s.caughtUpTo, let p = s.position else { return false }
            return zip(p.offsets, target.offsets).allSatisfy { $0 >= $1 }
        }
    }

    public func run() async throws {
        var backoff: Duration = .milliseconds(50)
        while !Task.isCancelled {
            do {
                try await project()
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                logger.error("projector failed, retrying in \(backoff)", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    private func project() async throws {
        let start: LogPosition
        do {
            start = try await store.checkpoint() ?? LogPosition(offsets: Array(repeating: 0, count: topics.partitions))
        } catch {
            // The store cannot be read: listings waiting for it get its error rather than
            // waiting for the outage to end.
            let waiting = writes.withLock { w in
                defer { w.waiters.removeAll() }
                return w.waiters.map(\.continuation)
            }
            for c in waiting { c.resume() }
            throw error
        }
        abandonUnwritten(writtenTo: start)
        let end = try await engine.endOffsets(topics.aggregates)
        state.withLock {
            $0.position = start
            $0.caughtUpTo = LogPosition(offsets: end)
        }
        let reader = try await engine.openReader(topic: topics.aggregates, from: start.offsets)
        defer { Task { await reader.close() } }
        var position = start
        let writes = ProjectorWrites(store: store) { batch, outcomes in self.written(batch, outcomes) }
        defer { writes.close() }
        while !Task.isCancelled {
            let records = try await reader.next(maxRecords: 1000, timeout: .seconds(1))
            if records.isEmpty {
                try await writes.drained()
                markProgress(position)
                continue
            }
            var views: [String: OrderView] = [:]
            var touched: [String] = []
            var outcomes: [CommandOutcome] = []
            let changes = records.map(newEvent(in:))
            // The views this batch builds on that are not cached, in one round trip. An
            // order's first event builds on nothing: a new order costs no read.
            let missing = self.views.withLock { c in
                var keys: Set<String> = []
                for (r, change) in zip(records, changes) where (change?.0.events.count ?? 0) > 1 && c[r.key] == nil {
                    keys.insert(r.key)
                }
                return keys
            }
            let loaded = try await store.views(orderIds: missing)
            for (record, change) in zip(records, changes) {
                position.offsets[record.partition] = record.offset + 1
                guard let (history, event) = change else { continue }
                var view: OrderView
                view = views[record.key] ?? self.views.withLock({ $0[record.key] }) ?? loaded[record.key]
                    ?? OrderView(orderId: record.key, order: nil, events: [])
                let old = view.events
                view.events = history.events.enumerated().map { i, e in
                    i < old.count && old[i].event.commandId == e.commandId ? old[i] : ProjectedEvent(event: e, position: position)
                }
                view.order = history.state
                if views.updateValue(view, forKey: record.key) == nil { touched.append(record.key) }
                outcomes.append(
                    CommandOutcome(commandId: event.commandId, orderId: record.key, event: event, order: history.state, position: position))
            }
            // A bounded backlog of writes: past it, wait for room (and learn of a failure,
            // which ends this run).
            try await writes.waitForRoom(below: Self.maxUnwrittenBatches)
            let stamp = self.views.withLock { c in
                // Never back: a batch redone after a failed write rebuilds views the cache
                // may already hold newer (an order's history only grows).
                for (key, view) in views where (c[key]?.events.count ?? -1) <= view.events.count { c[key] = view }
                return c.stamp
            }
            let batch = publish(outcomes, through: position, cacheStamp: stamp)
            try writes.enqueue(
                ProjectorWrites.Batch(number: batch, views: touched.map { views[$0]! }, outcomes: outcomes, checkpoint: position))
            markProgress(position)
            for outcome in outcomes { self.outcomes.publish(outcome.commandId, outcome) }
            for view in views.values { versions.publish(view.orderId, view.order?.version ?? 0) }
        }
    }

    /// The event this row adds to the order's history, if any.
    private func newEvent(in record: LogRecord) -> (OrderHistory, OrderEvent)? {
        let row = AggregateRow.analyze(record)
        switch row.change {
        case .event(let event): return (row.history, event)
        case .invalid(let problem):
            logger.error("skipping an unusable entry", metadata: ["key": "\(record.key)", "offset": "\(record.offset)", "error": "\(problem)"])
            return nil
        case .command, .repeatedCommand, .duplicate: return nil
        }
    }

    private func markProgress(_ position: LogPosition) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.position = position
            guard let target = s.caughtUpTo, zip(position.offsets, target.offsets).allSatisfy({ $0 >= $1 }) else { return [] }
            defer { s.readyWaiters.removeAll() }
            return s.readyWaiters
        }
        for c in ready { c.resume() }
    }

    /// Returns once the read model has caught up with the log as it was at start-up.
    public func waitUntilReady() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if let target = s.caughtUpTo, let p = s.position, zip(p.offsets, target.offsets).allSatisfy({ $0 >= $1 }) {
                    return true
                }
                s.readyWaiters.append(c)
                return false
            }
            if ready { c.resume() }
        }
    }
}
