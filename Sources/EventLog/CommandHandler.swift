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
/// modification" false conflict). The one exception is a decision that provably never
/// reaches the table (`decisionIsLost`): the command is decided again.
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

    /// The decisions `records` (rows, in offset order per partition) make. `fencedEnds`:
    /// per partition, where `order-commands-and-events` ended once the caller owned it and
    /// its previous owners were fenced (see `decisionIsLost`); none when not known.
    func handle(_ records: [LogRecord], fencedEnds: [Int: Int64] = [:]) -> [OutgoingRecord] {
        var out: [OutgoingRecord] = []
        // Decided by an earlier row of these: not appended yet, so `decisions` cannot tell.
        var decidedHere: Set<String> = []
        for record in records {
            guard let command = decision(for: record, fencedEnd: fencedEnds[record.partition], decidedHere: decidedHere)
            else { continue }
            let (history, next) = command
            decidedHere.insert(next.commandId)
            let event = OrderDecider.decide(next, state: history.state, now: now())
            let (value, memo) = LogFormat.encodeForLog(event, remember: !engine.keepsMemos)
            out.append(
                OutgoingRecord(
                    topic: topics.commandsAndEvents, key: record.key, value: value, partition: record.partition, memo: memo))
        }
        return out
    }

    /// The command this row makes decidable, with the history to decide it on.
    func decision(for record: LogRecord, fencedEnd: Int64? = nil, decidedHere: Set<String> = []) -> (OrderHistory, OrderCommand)? {
        let row = AggregateRow.analyze(record)
        if case .invalid(let problem) = row.change {
            logger.error("skipping an unusable entry", metadata: metadata(record, problem))
        }
        guard let next = row.history.firstUnanswered else { return nil }
        // Decided when it becomes the first unanswered command; and again when a later
        // command of the order (its repeat: a client's retry, the gateway's re-send; or the
        // next command, queued behind it) finds it still unanswered and its decision lost:
        // without a new one it, and every later command of the order, would wait forever.
        if next.commandId == row.nextBefore {
            switch row.change {
            case .command, .repeatedCommand: break
            default: return nil
            }
            guard !decidedHere.contains(next.commandId),
                let source = record.headers[Aggregator.sourceOffsetHeader].flatMap({ Int64($0) }),
                decisionIsLost(next.commandId, partition: record.partition, source: source, fencedEnd: fencedEnd)
            else { return nil }
            logger.warning(
                "a decision is missing from the aggregates table and can no longer come; deciding again",
                metadata: [
                    "command": "\(next.commandId)", "partition": "\(record.partition)", "repeat-offset": "\(source)",
                    "decision-offset": "\(decisions.address(of: next.commandId).map { "\($0.offset)" } ?? "none made here")",
                ])
        }
        return (row.history, next)
    }

    /// Whether no decision of `commandId` can reach the aggregates table any more, when
    /// the row the aggregator made of offset `source` of `partition` lists it unanswered.
    /// Decisions land in their command's partition and the aggregator reads it in offset
    /// order, so a decision before `source` that is not in the row never will be (a broker
    /// was seen to skip a committed transaction's records for a read_committed consumer);
    /// one after `source` is still on its way.
    ///
    /// This process knows where its own decisions landed (`decisions`). Those of earlier
    /// owners of the partition lie before `fencedEnd`: the engine fenced them before the
    /// caller read it (Kafka: the partitions' transactional ids claimed). So with `source`
    /// at or past `fencedEnd`, a command with no decision of this process after `source`
    /// has none that can still come. That is how a transaction the fencing aborted looks
    /// on tansu, which keeps showing its records: the row listing the command is there
    /// (the aggregator then takes the command as aggregated, and nobody decides it since),
    /// the decision written with it is not. Before `fencedEnd` an earlier owner's decision
    /// may lie ahead: a later command of the order settles it (the gateway re-sends while
    /// its client waits). Without `fencedEnd` only this process's decisions count.
    private func decisionIsLost(_ commandId: String, partition: Int, source: Int64, fencedEnd: Int64?) -> Bool {
        let ours = decisions.address(of: commandId).flatMap { $0.partition == partition ? $0.offset : nil }
        if let ours, ours > source { return false }
        guard let fencedEnd else { return ours != nil }
        return source >= fencedEnd && !decisions.mayHaveForgotten(partition: partition, after: source)
    }

    private func metadata(_ r: LogRecord, _ error: Any) -> Logger.Metadata {
        ["topic": "\(r.topic)", "partition": "\(r.partition)", "offset": "\(r.offset)", "key": "\(r.key)", "error": "\(error)"]
    }
}

/// Where the command handler's recent decisions landed in `order-commands-and-events`.
///
/// Bounded: past `capacity` decisions the oldest are forgotten, and the highest offset
/// forgotten in each partition is kept, so that a command this log does not know can be
/// told not decided here (`CommandHandler.decisionIsLost` decides such a one again).
final class DecisionLog: Sendable {
    private struct State {
        var addresses: [String: RecordAddress] = [:]
        /// Every write, oldest first from `head`.
        var written: [(commandId: String, address: RecordAddress)] = []
        var head = 0
        var forgottenThrough: [Int: Int64] = [:]
    }
    private let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int = 50_000) { self.capacity = capacity }

    func appended(_ records: [OutgoingRecord], at landed: [RecordAddress]) {
        state.withLock { s in
            for (record, address) in zip(records, landed) {
                guard let memo = record.memo as? LogFormat.EntryMemo, case .event(let event) = memo.decoded else { continue }
                s.addresses[event.commandId] = address
                s.written.append((event.commandId, address))
                guard s.written.count - s.head > capacity else { continue }
                let old = s.written[s.head]
                s.head += 1
                if s.addresses[old.commandId] == old.address { s.addresses[old.commandId] = nil }
                s.forgottenThrough[old.address.partition] = max(s.forgottenThrough[old.address.partition] ?? -1, old.address.offset)
            }
            if s.head >= capacity {
                s.written.removeFirst(s.head)
                s.head = 0
            }
        }
    }

    func address(of commandId: String) -> RecordAddress? { state.withLock { $0.addresses[commandId] } }

    /// Whether a decision this log no longer knows landed in `partition` after `offset`.
    func mayHaveForgotten(partition: Int, after offset: Int64) -> Bool {
        state.withLock { ($0.forgottenThrough[partition] ?? -1) > offset }
    }
}

/// Wall-clock time for events' created dates.
public enum Clock {
    @Sendable public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(microseconds: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000)
    }
}
