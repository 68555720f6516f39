/// The partitioned, durable log the processors run on: Kafka's model (topics of N
/// partitions, offsets, consumer groups with committed offsets) so the same processors
/// run on the embedded engine and on Kafka.

/// One partition of one topic.
public struct TopicPartition: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int
    public init(_ topic: String, _ partition: Int) {
        self.topic = topic
        self.partition = partition
    }
    public var description: String { "\(topic)[\(partition)]" }
}

/// A record as stored in the log.
public struct LogRecord: Sendable, Equatable {
    public var topic: String
    public var partition: Int
    public var offset: Int64
    public var key: String
    public var value: [UInt8]
    public var headers: [String: String]
    /// Milliseconds since the Unix epoch, set when the record was appended.
    public var timestamp: Int64
    /// The appender's `OutgoingRecord.memo`, on records an engine hands to readers in the
    /// same process (`LogEngine.keepsMemos`); nil on records read back from storage.
    public var memo: (any Sendable)?

    public init(
        topic: String, partition: Int, offset: Int64, key: String, value: [UInt8],
        headers: [String: String] = [:], timestamp: Int64, memo: (any Sendable)? = nil
    ) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
        self.memo = memo
    }

    /// Equal when stored alike: the memo only restates the value.
    public static func == (a: LogRecord, b: LogRecord) -> Bool {
        a.topic == b.topic && a.partition == b.partition && a.offset == b.offset && a.key == b.key && a.value == b.value
            && a.headers == b.headers && a.timestamp == b.timestamp
    }
}

/// A record to append. Without an explicit partition, the key decides it
/// (`Partitioner.partition(forKey:count:)`, Kafka's murmur2 partitioner).
public struct OutgoingRecord: Sendable, Equatable {
    public var topic: String
    public var key: String
    public var value: [UInt8]
    public var headers: [String: String]
    public var partition: Int?
    /// What the appender already knows of `value`, decoded (an `AggregateRow`, a
    /// `LogFormat.EntryMemo`), so readers in this process need not parse the bytes back.
    /// Never stored or sent; must describe `value` exactly.
    public var memo: (any Sendable)?

    public init(
        topic: String, key: String, value: [UInt8], headers: [String: String] = [:],
        partition: Int? = nil, memo: (any Sendable)? = nil
    ) {
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.partition = partition
        self.memo = memo
    }

    /// Equal when they would be stored alike: the memo only restates the value.
    public static func == (a: OutgoingRecord, b: OutgoingRecord) -> Bool {
        a.topic == b.topic && a.key == b.key && a.value == b.value && a.headers == b.headers && a.partition == b.partition
    }
}

/// Where an appended record landed.
public struct RecordAddress: Hashable, Sendable {
    public var topic: String
    public var partition: Int
    public var offset: Int64
    public init(topic: String, partition: Int, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
}

/// Offsets a consumer group has finished with: for each partition, the offset of the
/// next record to read (Kafka's convention).
public struct OffsetCommit: Sendable, Equatable {
    public var group: String
    public var topic: String
    public var offsets: [Int: Int64]
    public init(group: String, topic: String, offsets: [Int: Int64]) {
        self.group = group
        self.topic = topic
        self.offsets = offsets
    }
}

/// What a group consumer's poll returns.
public enum GroupPoll: Sendable, Equatable {
    /// Records from the assigned partitions, in offset order per partition.
    case records([LogRecord])
    /// Partitions newly assigned to this member; reading resumes at the committed offsets.
    case assigned([Int])
    /// Partitions taken away; commit what was finished before returning to poll.
    case revoked([Int])
    /// Nothing arrived within the timeout.
    case idle
}

/// When an `append` returns, relative to the records reaching stable storage.
public enum Durability: Sendable, Hashable {
    /// Returns once the records are durable (embedded: fsync'd; Kafka: acknowledged by
    /// all in-sync replicas).
    case durable
    /// Returns once the records are committed and visible to group consumers; they become
    /// durable soon after, and never after a later `.durable` append (the log is durable
    /// as a prefix). For records derived from the log itself: a crash before they are
    /// durable loses them together with everything after them, and the processors that
    /// wrote them redo that work from their committed offsets (which are lost with them).
    case deferred
}

/// A durable, partitioned log.
///
/// - Important: `append` returns only once the records are durable (embedded: fsync'd;
///   Kafka: acknowledged by all in-sync replicas), unless asked for `.deferred`.
///   Readers (`openReader`) deliver only durable records, so whatever leaves the log
///   through them — a read model, a subscriber — never depends on records a crash could
///   still take back; group consumers may also see deferred ones (what they derive goes
///   back into the same log, behind its source). Appends of one call are atomic: all or
///   none become visible, and with `commit` the group's offsets move in the same unit
///   (embedded: one SQLite transaction; Kafka: a transaction). Callers must not rely on
///   atomicity alone for correctness (a test broker shows aborted records), so processors
///   also dedupe by command id and version.
public protocol LogEngine: Sendable {
    /// Creates the topic if missing (retention forever, never compacted).
    func createTopic(_ topic: String, partitions: Int) async throws
    /// The topic's partition count; throws `LogError.unknownTopic` if missing.
    func partitionCount(_ topic: String) async throws -> Int
    /// Appends records atomically, optionally committing a group's offsets in the same
    /// unit, and returns once they are as durable as asked. Returns where each record
    /// landed, in input order.
    @discardableResult
    func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress]
    /// For each partition (index = partition), the offset just past the last committed
    /// record: where a reader that has seen everything stands. Not necessarily the offset
    /// the next record gets (Kafka's transaction markers take offsets too), and possibly
    /// past the durable prefix a plain reader has reached (embedded: not fsync'd yet).
    func endOffsets(_ topic: String) async throws -> [Int64]
    /// `endOffsets` up to the durable prefix only: what a subscriber may be told it has
    /// seen. A position past records not yet fsync'd would, after a power loss, skip the
    /// new records that reuse their offsets.
    func durableEndOffsets(_ topic: String) async throws -> [Int64]
    /// Reads every partition of `topic` from the given offsets (index = partition) without
    /// joining a group: subscriptions, projections local to this instance. Delivers
    /// durable records only.
    func openReader(topic: String, from offsets: [Int64]) async throws -> any LogReader
    /// `openReader` for one of many clients reading behind the tail (StreamEvents
    /// subscribers catching up): an engine whose readers are costly (Kafka: a client with
    /// threads and a connection each) serves them all with a bounded set.
    func openCatchUpReader(topic: String, from offsets: [Int64]) async throws -> any LogReader
    /// Joins a consumer group: each partition is owned by one member at a time and reading
    /// starts at the group's committed offsets (0 when none).
    func joinGroup(_ group: String, topic: String) async throws -> any GroupConsumer
    /// The group's committed offsets (index = partition; 0 when none).
    func committedOffsets(group: String, topic: String) async throws -> [Int64]
    /// The newest record with this key (a keyed table's current row), or nil.
    func latestRecord(topic: String, key: String) async throws -> LogRecord?
    /// The newest record of each key that has one: one round trip for a batch of keys.
    func latestRecords(topic: String, keys: Set<String>) async throws -> [String: LogRecord]
    /// `latestRecord` as the log has it now, also when another instance wrote it a moment
    /// ago (`latestRecord` may answer from this instance's view of partitions it does not
    /// own, a little behind): for the rare check that must not miss it.
    func currentRecord(topic: String, key: String) async throws -> LogRecord?
    /// Whether appended records reach this process's readers (derivations, readers,
    /// group consumers served from memory) with their `memo`. When false (a broker in
    /// between), the writers remember their decodings in process-wide caches instead.
    var keepsMemos: Bool { get }
    /// Why appends fail now, when the engine knows it without a caller's append having to
    /// fail first (embedded: the last group commit hit a full or failing disk, or an fsync
    /// failed), or nil. For health checks, which also need `endOffsets` to answer: an
    /// engine that still answers reads may take no write. Asked many times a second while
    /// failing: answers quickly, and may try a small write of its own now and then to
    /// learn that the failure is over.
    func writeFailure() async -> LogError?
    /// How long a caller waiting on an append (a command's client) waits before it is told
    /// the log is unavailable; the append runs on and may still land. Set by engines that
    /// reach the log over a network, where a peer that stopped answering holds an append
    /// for as long as the engine's own timeouts allow; the caller's timeout bounds the wait
    /// too. nil: appends wait on no network and are awaited in place (the embedded
    /// engine's: its writer's next group commit).
    var appendPatience: Duration? { get }
}

extension LogEngine {
    public var keepsMemos: Bool { false }
    /// Nothing known beyond `endOffsets` answering (Kafka: the client learns of a broker
    /// that cannot write only from the appends it refuses).
    public func writeFailure() async -> LogError? { nil }
    public var appendPatience: Duration? { nil }
    /// One writer, or none else: `latestRecord` is current.
    public func currentRecord(topic: String, key: String) async throws -> LogRecord? {
        try await latestRecord(topic: topic, key: key)
    }
    /// A reader of its own: cheap on engines that read a local file.
    public func openCatchUpReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        try await openReader(topic: topic, from: offsets)
    }
    /// Committed is durable on engines that acknowledge only durable appends (Kafka, acks=all).
    public func durableEndOffsets(_ topic: String) async throws -> [Int64] { try await endOffsets(topic) }
    /// Appends durably (see `append(_:commit:durability:)`).
    @discardableResult
    public func append(_ records: [OutgoingRecord], commit: OffsetCommit?) async throws -> [RecordAddress] {
        try await append(records, commit: commit, durability: .durable)
    }

    public func latestRecords(topic: String, keys: Set<String>) async throws -> [String: LogRecord] {
        var out: [String: LogRecord] = [:]
        for key in keys {
            if let record = try await latestRecord(topic: topic, key: key) { out[key] = record }
        }
        return out
    }
}

/// Reads all partitions of one topic, from explicit offsets.
public protocol LogReader: Sendable {
    /// Up to `maxRecords` records (in offset order per partition), waiting up to `timeout`
    /// for the first one; `[]` when none arrived in time. Cancellation ends the wait.
    func next(maxRecords: Int, timeout: Duration) async throws -> [LogRecord]
    /// The offsets the reader will read next (index = partition).
    func positions() async -> [Int64]
    func close() async
}

/// A member of a consumer group.
public protocol GroupConsumer: Sendable {
    var group: String { get }
    var topic: String { get }
    func poll(maxRecords: Int, timeout: Duration) async throws -> GroupPoll
    /// Commits offsets (the next offset to read, per partition).
    func commit(_ offsets: [Int: Int64]) async throws
    func close() async
}

/// Infrastructure errors of a log engine.
public struct LogError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        case unknownTopic, unavailable, closed, corrupt, io
    }
    public var code: Code
    public var message: String
    public var file: String
    public var line: Int

    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }
    public static func unknownTopic(_ topic: String, file: String = #fileID, line: Int = #line) -> LogError {
        LogError(.unknownTopic, "unknown topic '\(topic)'", file: file, line: line)
    }
    public var description: String { "\(message) (\(code), \(file):\(line))" }
}
