import Logging
import OrderDomain

/// A StreamEvents subscription: every order event, read from `order-aggregates` (the
/// durable log, so a slow subscriber catches up from disk instead of holding memory),
/// history first, then one `caughtUp`, then live events, with a heartbeat while idle.
///
/// Two sources, one position: while behind, it reads the log with its own reader; once
/// the pipeline's shared tail (`StreamHub`) still holds everything it has not seen, it
/// switches to the tail's ring, which decodes each live record once for every subscriber.
/// If it falls behind the ring (its consumer stopped reading), it goes back to its own
/// reader from its position. Records at or before its position are skipped by offset, so
/// neither switch loses or repeats an event.
///
/// Pull-based: it reads only when asked for the next item, so a subscriber that does not
/// read is never buffered for beyond one page.
public final class EventSubscription: AsyncSequence, AsyncIteratorProtocol, @unchecked Sendable {
    // @unchecked: an iterator is used by one task at a time (AsyncIteratorProtocol's
    // contract); nothing here is shared.

    public enum Start: Sendable, Hashable {
        case beginning, end
        case after(LogPosition)
    }

    public struct Filter: Sendable, Hashable {
        public var orderId: String?
        public var eventTypes: Set<String>
        public init(orderId: String? = nil, eventTypes: Set<String> = []) {
            self.orderId = orderId
            self.eventTypes = eventTypes
        }
    }

    public enum Item: Sendable, Hashable {
        case event(ProjectedEvent)
        case caughtUp(LogPosition)
        case heartbeat(LogPosition)
    }

    public typealias Element = Item
    public typealias Failure = any Error

    /// An item and, for a live event that every caught-up subscriber receives identically
    /// (same event, same position after it), the object they share: the RPC layer encodes
    /// such an event once for all of them.
    public struct Delivery: Sendable {
        public var item: Item
        public var shared: SharedDelivery?
    }

    /// Where the next records come from.
    private enum Source {
        case own(any LogReader)
        case hub(cursor: Int64, generation: UInt64)
    }

    private let engine: any LogEngine
    private let topic: String
    private let hub: StreamHub?
    private let hubId: UInt64
    private var source: Source
    private let filter: Filter
    private let heartbeat: Duration
    private let logger: Logger
    private var position: LogPosition
    private var caughtUpTarget: LogPosition?
    /// When an item last went to the subscriber: a heartbeat is due `heartbeat` after it,
    /// also while records flow that its filter skips (a filtered subscriber on a busy log
    /// would otherwise hear nothing, not even where it stands). On the ring, woken by the
    /// tail's ticks.
    private var lastDelivered = ContinuousClock.now
    private var pending: [Delivery] = []
    private var pendingIndex = 0

    /// Opens a subscription; `start` past the log's end is refused (`LogError.corrupt`
    /// is not right for a client mistake, so callers validate positions first). With a
    /// `hub`, it reads from the shared tail whenever it can.
    public static func open(
        engine: any LogEngine, topics: Topics, start: Start, filter: Filter, heartbeat: Duration = .seconds(5),
        hub: StreamHub? = nil, logger: Logger
    ) async throws -> EventSubscription {
        let end = try await engine.durableEndOffsets(topics.aggregates)
        let from: [Int64] =
            switch start {
            case .beginning: Array(repeating: 0, count: end.count)
            case .end: end
            case .after(let p): p.offsets
            }
        let hubId = hub?.register() ?? 0
        var source: Source
        if let hub, let (cursor, generation) = hub.attach(hubId, at: from) {
            source = .hub(cursor: cursor, generation: generation)
        } else {
            do {
                source = .own(try await engine.openCatchUpReader(topic: topics.aggregates, from: from))
            } catch {
                hub?.forget(hubId)
                throw error
            }
        }
        return EventSubscription(
            engine: engine, topic: topics.aggregates, hub: hub, hubId: hubId, source: source,
            position: LogPosition(offsets: from), target: LogPosition(offsets: end), filter: filter,
            heartbeat: heartbeat, logger: logger)
    }

    private init(
        engine: any LogEngine, topic: String, hub: StreamHub?, hubId: UInt64, source: Source, position: LogPosition,
        target: LogPosition, filter: Filter, heartbeat: Duration, logger: Logger
    ) {
        self.engine = engine
        self.topic = topic
        self.hub = hub
        self.hubId = hubId
        self.source = source
        self.position = position
        self.caughtUpTarget = target
        self.filter = filter
        self.heartbeat = heartbeat
        self.logger = logger
    }

    deinit {
        // A subscription dropped without `close()` must not stay registered in the hub.
        hub?.forget(hubId)
    }

    public func makeAsyncIterator() -> EventSubscription { self }

    public func close() async {
        hub?.forget(hubId)
        if case .own(let reader) = source { await reader.close() }
    }

    /// Whether it reads from the shared tail now (for tests).
    public var readsSharedTail: Bool {
        if case .hub = source { return true }
        return false
    }

    public func next() async throws -> Item? {
        try await nextDelivery()?.item
    }

    /// The next item, with what it shares with other subscribers' deliveries (see ``Delivery``).
    public func nextDelivery() async throws -> Delivery? {
        while true {
            if pendingIndex < pending.count {
                defer { pendingIndex += 1 }
                lastDelivered = .now
                return pending[pendingIndex]
            }
            pending.removeAll(keepingCapacity: true)
            pendingIndex = 0
            try Task.checkCancellation()
            checkCaughtUp()
            if !pending.isEmpty { continue }
            switch source {
            case .own(let reader): try await readOwn(reader)
            case .hub(let cursor, let generation): try await readHub(cursor: cursor, generation: generation)
            }
        }
    }

    /// One page from its own reader (a heartbeat when none came in time), then onto the
    /// ring if the ring now holds everything after its position.
    private func readOwn(_ reader: any LogReader) async throws {
        let records = try await reader.next(maxRecords: 256, timeout: heartbeat)
        if records.isEmpty {
            pending.append(Delivery(item: .heartbeat(position)))
        } else {
            consume(records.map { record in
                // Only rows of the filtered order are worth decoding here.
                let wanted = filter.orderId == nil || filter.orderId == record.key
                return TailRing.Entry(
                    partition: record.partition, offset: record.offset, event: wanted ? StreamHub.event(in: record) : nil)
            })
            heartbeatIfDue()
        }
        if let hub, let (cursor, generation) = hub.attach(hubId, at: position.offsets) {
            source = .hub(cursor: cursor, generation: generation)
            await reader.close()
        }
    }

    private func readHub(cursor: Int64, generation: UInt64) async throws {
        guard let hub else { return }
        switch hub.read(from: cursor, generation: generation, max: 256) {
        case .entries(let entries, let next):
            source = .hub(cursor: next, generation: generation)
            consume(entries)
            heartbeatIfDue()
        case .idle:
            heartbeatIfDue()
            if !pending.isEmpty { return }
            await hub.wait(hubId, after: cursor, generation: generation)
        case .lagged: try await fallBack(from: hub, lagged: true)
        case .reset: try await fallBack(from: hub, lagged: false)
        }
    }

    /// Back to its own reader, from exactly its position: it fell behind the ring, or the
    /// tail's session ended. It returns to the ring once caught up again (`readOwn`).
    private func fallBack(from hub: StreamHub, lagged: Bool) async throws {
        hub.detach(hubId, lagged: lagged)
        logger.debug("StreamEvents subscriber back on its own reader", metadata: ["position": "\(position)", "lagged": "\(lagged)"])
        source = .own(try await engine.openCatchUpReader(topic: topic, from: position.offsets))
    }

    /// Moves the position over each entry, skipping any it already passed (the ring may
    /// start before the position in some partitions), and queues the matching events.
    private func consume(_ entries: [TailRing.Entry]) {
        for entry in entries where entry.offset >= position.offsets[entry.partition] {
            position.offsets[entry.partition] = entry.offset + 1
            if let event = entry.event, matches(event) {
                // Shared only when this subscriber's position is the ring's: then its
                // delivery (event and position token) is byte for byte everybody's.
                let shared = entry.shared.flatMap { $0.position == position ? $0 : nil }
                pending.append(Delivery(item: .event(ProjectedEvent(event: event, position: position)), shared: shared))
            }
            checkCaughtUp()
        }
    }

    /// A heartbeat with the position, when nothing is queued and nothing went out for
    /// `heartbeat`.
    private func heartbeatIfDue() {
        if pending.isEmpty && ContinuousClock.now - lastDelivered >= heartbeat {
            pending.append(Delivery(item: .heartbeat(position)))
        }
    }

    private func checkCaughtUp() {
        guard let target = caughtUpTarget, zip(position.offsets, target.offsets).allSatisfy({ $0 >= $1 }) else { return }
        caughtUpTarget = nil
        pending.append(Delivery(item: .caughtUp(position)))
    }

    private func matches(_ event: OrderEvent) -> Bool {
        (filter.orderId == nil || filter.orderId == event.orderId)
            && (filter.eventTypes.isEmpty || filter.eventTypes.contains(event.typeName))
    }
}
