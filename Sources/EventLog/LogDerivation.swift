/// A consumer group's work, run by the engine inside the appends that feed it instead of
/// by a process polling the log: for every record appended to `topic`, in offset order,
/// `derive` returns what the group would have appended for it, and the engine appends
/// that in the same atomic unit (feeding it to the derivations of its own topic in turn)
/// and commits the group's offsets past it.
///
/// The result is the log a polling consumer would have written, with the same records in
/// a consistent order, but without a wake-up, a read and a commit per hop: the embedded
/// engine runs the aggregator and the command handler this way (`DerivingLogEngine`).
public struct LogDerivation: Sendable {
    /// Looks up the newest record of a key in a key-indexed topic, as of the records
    /// appended so far in the same atomic unit.
    public typealias Latest = (_ topic: String, _ key: String) throws -> LogRecord?

    public var group: String
    public var topic: String
    /// Called on the engine's writer, one record at a time; must not block on the engine.
    /// A throw fails the append that carried the record.
    public var derive: @Sendable (LogRecord, Latest) throws -> [OutgoingRecord]
    /// Called when an atomic unit that `derive` saw is rolled back: forget any state built
    /// from its records.
    public var reset: @Sendable () -> Void

    public init(
        group: String, topic: String, derive: @escaping @Sendable (LogRecord, Latest) throws -> [OutgoingRecord],
        reset: @escaping @Sendable () -> Void = {}
    ) {
        self.group = group
        self.topic = topic
        self.derive = derive
        self.reset = reset
    }
}

/// An engine that can run derivations inside its appends (the embedded engine; Kafka's
/// processors stay consumers, since several instances share the partitions).
public protocol DerivingLogEngine: LogEngine {
    /// Runs `derivations` inside every later append, if every one of their groups has
    /// consumed its topic to the end; returns false and changes nothing otherwise (the
    /// polling processors catch up first, then the caller tries again).
    ///
    /// A derivation of a group already running is replaced (a pipeline started again on
    /// the same engine). Once started, the groups belong to the engine: consumers of them are never
    /// assigned, and an append that commits their offsets fails.
    func startDerivations(_ derivations: [LogDerivation]) async throws -> Bool
}
