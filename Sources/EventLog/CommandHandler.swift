#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import OrderDomain

/// The seed's command handler: consumes `order-aggregates` and, when a row makes a
/// command decidable, rebuilds the order from the row's events, decides, and appends the
/// one outcome event to `order-commands-and-events`.
///
/// A command is decidable once every earlier command of its order has an outcome in the
/// row (`OrderHistory.firstUnanswered`), and it is decided at exactly the row where it
/// first became so: the row that appended it, or the row that appended its
/// predecessor's outcome. That is a function of the row alone, so a restart or a new
/// owner of the partition (resuming from the committed offset) makes the same decisions
/// and no other, and a command that arrives while its predecessor is still being decided
/// waits for it instead of being decided on stale state (the seed's "concurrent
/// modification" false conflict).
public struct CommandHandler: Sendable {
    public static let group = "order-command-handler"

    let engine: any LogEngine
    let topics: Topics
    let logger: Logger
    let now: @Sendable () -> Timestamp
    /// Where this handler's recent decisions landed (polling mode; see `decision(for:)`).
    let decisions = DecisionLog()

    public init(engine: any LogEngine, topics: Topics, logger: Logger, now: @escaping @Sendable () -> Timestamp = Clock.now) {
        self.engine = engine
        self.topics = topics
        self.logger = logger
        self.now = now
    }

    public func run() async throws {
        let loop = GroupLoop(engine: engine, group: Self.group, topic: topics.aggregates, logger: logger)
        try await loop.run(onAppended: { records, addresses in decisions.appended(records, at: addresses) }) { records in
            handle(records)
        }
    }

    /// The handler as a derivation the engine runs inside its appends
    /// (`DerivingLogEngine`): each decision written with the row that made it decidable.
    public var derivation: LogDerivation {
        LogDerivation(group: Self.group, topic: topics.aggregates, derive: { record, _ in handle([record]) })
    }

    func handle(_ records: [LogRecord]) -> [OutgoingRecord] {
        var out: [OutgoingRecord] = []
        for record in records {
            guard let command = decision(for: record) else { continue }
            let (history, next) = command
            let event = OrderDecider.decide(next, state: history.state, now: now())
            let (value, memo) = LogFormat.encodeForLog(event, remember: !engine.keepsMemos)
            out.append(
                OutgoingRecord(
                    topic: topics.commandsAndEvents, key: record.key, value: value, partition: record.partition, memo: memo))
        }
        return out
    }

    /// The command this row makes decidable, with the history to decide it on.
    func decision(for record: LogRecord) -> (OrderHistory, OrderCommand)? {
        let row = AggregateRow.analyze(record)
        if case .invalid(let problem) = row.change {
            logger.error("skipping an unusable entry", metadata: metadata(record, problem))
        }
        guard let next = row.history.firstUnanswered else { return nil }
        // Decided when it becomes the first unanswered command; and again when it is sent
        // again still unanswered although the aggregator already went past the offset where
        // this handler's decision landed: that decision never reached the table (a broker
        // was seen to skip a committed transaction's records for a read_committed
        // consumer), and without a new one the order's later commands would wait forever.
        if next.commandId == row.nextBefore {
            guard case .repeatedCommand(let repeated) = row.change, repeated.commandId == next.commandId,
                let decided = decisions.address(of: next.commandId), decided.partition == record.partition,
                let source = record.headers[Aggregator.sourceOffsetHeader].flatMap({ Int64($0) }), source > decided.offset
            else { return nil }
            logger.warning(
                "a decision never reached the aggregates table; deciding again",
                metadata: ["command": "\(next.commandId)", "decision-offset": "\(decided.offset)", "repeat-offset": "\(source)"])
        }
        return (row.history, next)
    }

    private func metadata(_ r: LogRecord, _ error: Any) -> Logger.Metadata {
        ["topic": "\(r.topic)", "partition": "\(r.partition)", "offset": "\(r.offset)", "key": "\(r.key)", "error": "\(error)"]
    }
}

/// Where the command handler's recent decisions landed in `order-commands-and-events`.
final class DecisionLog: Sendable {
    private let addresses = Mutex(BoundedCache<String, RecordAddress>(capacity: 50_000))

    func appended(_ records: [OutgoingRecord], at landed: [RecordAddress]) {
        addresses.withLock { cache in
            for (record, address) in zip(records, landed) {
                guard let memo = record.memo as? LogFormat.EntryMemo, case .event(let event) = memo.decoded else { continue }
                cache[event.commandId] = address
            }
        }
    }

    func address(of commandId: String) -> RecordAddress? { addresses.withLock { $0[commandId] } }
}

/// Wall-clock time for events' created dates.
public enum Clock {
    @Sendable public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(microseconds: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000)
    }
}
