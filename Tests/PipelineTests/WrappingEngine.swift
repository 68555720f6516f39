import EventLog

/// A test engine that changes one thing about another: every call it does not implement
/// itself goes to `inner`.
protocol WrappingEngine: LogEngine {
    var inner: any LogEngine { get }
}

extension WrappingEngine {
    var keepsMemos: Bool { inner.keepsMemos }
    func createTopic(_ topic: String, partitions: Int) async throws { try await inner.createTopic(topic, partitions: partitions) }
    func partitionCount(_ topic: String) async throws -> Int { try await inner.partitionCount(topic) }
    func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress] {
        try await inner.append(records, commit: commit, durability: durability)
    }
    func endOffsets(_ topic: String) async throws -> [Int64] { try await inner.endOffsets(topic) }
    func durableEndOffsets(_ topic: String) async throws -> [Int64] { try await inner.durableEndOffsets(topic) }
    func openReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        try await inner.openReader(topic: topic, from: offsets)
    }
    func openCatchUpReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        try await inner.openCatchUpReader(topic: topic, from: offsets)
    }
    func joinGroup(_ group: String, topic: String) async throws -> any GroupConsumer {
        try await inner.joinGroup(group, topic: topic)
    }
    func committedOffsets(group: String, topic: String) async throws -> [Int64] {
        try await inner.committedOffsets(group: group, topic: topic)
    }
    func latestRecord(topic: String, key: String) async throws -> LogRecord? {
        try await inner.latestRecord(topic: topic, key: key)
    }
    func latestRecords(topic: String, keys: Set<String>) async throws -> [String: LogRecord] {
        try await inner.latestRecords(topic: topic, keys: keys)
    }
    func currentRecord(topic: String, key: String) async throws -> LogRecord? {
        try await inner.currentRecord(topic: topic, key: key)
    }
}

/// A test group member that changes one thing about another: every call it does not
/// implement itself goes to `inner`.
protocol WrappingConsumer: GroupConsumer {
    var inner: any GroupConsumer { get }
}

extension WrappingConsumer {
    var group: String { inner.group }
    var topic: String { inner.topic }
    func poll(maxRecords: Int, timeout: Duration) async throws -> GroupPoll {
        try await inner.poll(maxRecords: maxRecords, timeout: timeout)
    }
    func commit(_ offsets: [Int: Int64]) async throws { try await inner.commit(offsets) }
    func close() async { await inner.close() }
}
