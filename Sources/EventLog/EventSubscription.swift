import Logging
import OrderDomain

/// A StreamEvents subscription: every order event, read from `order-aggregates` (the
/// durable log, so a slow subscriber catches up from disk instead of holding memory),
/// history first, then one `caughtUp`, then live events, with a heartbeat while idle.
///
/// Pull-based: it reads the log only when asked for the next item, so a subscriber
/// that does not read is never buffered for beyond one page.
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

    private let reader: any LogReader
    private let filter: Filter
    private let heartbeat: Duration
    private let logger: Logger
    private var position: LogPosition
    private var caughtUpTarget: LogPosition?
    private var pending: [Item] = []
    private var pendingIndex = 0

    /// Opens a subscription; `start` past the log's end is refused (`LogError.corrupt`
    /// is not right for a client mistake, so callers validate positions first).
    public static func open(
        engine: any LogEngine, topics: Topics, start: Start, filter: Filter, heartbeat: Duration = .seconds(5),
        logger: Logger
    ) async throws -> EventSubscription {
        let end = try await engine.endOffsets(topics.aggregates)
        let from: [Int64] =
            switch start {
            case .beginning: Array(repeating: 0, count: end.count)
            case .end: end
            case .after(let p): p.offsets
            }
        let reader = try await engine.openReader(topic: topics.aggregates, from: from)
        return EventSubscription(
            reader: reader, position: LogPosition(offsets: from), target: LogPosition(offsets: end), filter: filter,
            heartbeat: heartbeat, logger: logger)
    }

    private init(
        reader: any LogReader, position: LogPosition, target: LogPosition, filter: Filter, heartbeat: Duration, logger: Logger
    ) {
        self.reader = reader
        self.position = position
        self.caughtUpTarget = target
        self.filter = filter
        self.heartbeat = heartbeat
        self.logger = logger
    }

    public func makeAsyncIterator() -> EventSubscription { self }

    public func close() async { await reader.close() }

    public func next() async throws -> Item? {
        while true {
            if pendingIndex < pending.count {
                defer { pendingIndex += 1 }
                return pending[pendingIndex]
            }
            pending.removeAll(keepingCapacity: true)
            pendingIndex = 0
            try Task.checkCancellation()
            checkCaughtUp()
            if !pending.isEmpty { continue }
            let records = try await reader.next(maxRecords: 256, timeout: heartbeat)
            if records.isEmpty {
                pending.append(.heartbeat(position))
                continue
            }
            for record in records {
                position.offsets[record.partition] = record.offset + 1
                if let event = newEvent(in: record), matches(event) {
                    pending.append(.event(ProjectedEvent(event: event, position: position)))
                }
                checkCaughtUp()
            }
        }
    }

    private func checkCaughtUp() {
        guard let target = caughtUpTarget, zip(position.offsets, target.offsets).allSatisfy({ $0 >= $1 }) else { return }
        caughtUpTarget = nil
        pending.append(.caughtUp(position))
    }

    private func matches(_ event: OrderEvent) -> Bool {
        (filter.orderId == nil || filter.orderId == event.orderId)
            && (filter.eventTypes.isEmpty || filter.eventTypes.contains(event.typeName))
    }

    private func newEvent(in record: LogRecord) -> OrderEvent? {
        if let id = filter.orderId, id != record.key { return nil }
        if case .event(let event) = AggregateRow.analyze(record).change { return event }
        return nil
    }
}
