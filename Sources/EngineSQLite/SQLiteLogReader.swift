import EventLog
import Synchronization

/// Reads every partition of one topic from explicit offsets, a page at a time, durable
/// records only (see `LogEngine`).
///
/// - Important: meant for one task at a time (like a Kafka consumer): two concurrent
///   `next` calls would both start from the same positions.
final class SQLiteLogReader: LogReader {
    private let engine: SQLiteLogEngine
    private let topic: TopicInfo
    private let state: Mutex<(positions: [Int64], closed: Bool)>

    init(engine: SQLiteLogEngine, topic: TopicInfo, positions: [Int64]) {
        self.engine = engine
        self.topic = topic
        self.state = Mutex((positions, false))
    }

    func next(maxRecords: Int, timeout: Duration) async throws -> [LogRecord] {
        let (positions, closed) = state.withLock { ($0.positions, $0.closed) }
        if closed { throw LogError(.closed, "reader of '\(topic.name)' is closed") }
        let records = try await engine.fetch(topic, from: positions, durableOnly: true, maxRecords: maxRecords, timeout: timeout)
        if !records.isEmpty {
            state.withLock { s in
                for record in records { s.positions[record.partition] = record.offset + 1 }
            }
        }
        return records
    }

    func positions() async -> [Int64] {
        state.withLock { $0.positions }
    }

    func close() async {
        state.withLock { $0.closed = true }
    }
}

/// The one member of a consumer group this engine knows: a single process owns all
/// partitions. A second member of the same group and topic gets `.idle` until the first
/// closes, then `.assigned` — Kafka's behaviour with one partition owner at a time.
final class SQLiteGroupConsumer: GroupConsumer {
    let group: String
    var topic: String { info.name }
    private let engine: SQLiteLogEngine
    private let info: TopicInfo
    private let member: UInt64

    private struct State {
        var assigned = false
        var positions: [Int64] = []
        var closed = false
    }

    private let state = Mutex(State())

    init(engine: SQLiteLogEngine, group: String, topic: TopicInfo, member: UInt64) {
        self.engine = engine
        self.group = group
        self.info = topic
        self.member = member
    }

    func poll(maxRecords: Int, timeout: Duration) async throws -> GroupPoll {
        let (assigned, positions, closed) = state.withLock { ($0.assigned, $0.positions, $0.closed) }
        if closed { throw LogError(.closed, "consumer of group '\(group)' is closed") }
        guard assigned else { return try await assign(timeout: timeout) }
        // Committed records, durable or not: what a processor derives from them goes into
        // the same log behind them, so a crash takes both back together.
        let records = try await engine.fetch(info, from: positions, durableOnly: false, maxRecords: maxRecords, timeout: timeout)
        guard !records.isEmpty else { return .idle }
        state.withLock { s in
            for record in records { s.positions[record.partition] = record.offset + 1 }
        }
        return .records(records)
    }

    private func assign(timeout: Duration) async throws -> GroupPoll {
        if !engine.claim(group: group, topic: info.name, member: member) {
            // Someone else owns the group; look again after the timeout.
            try await Task.sleep(for: timeout)
            guard engine.claim(group: group, topic: info.name, member: member) else { return .idle }
        }
        let committed: [Int64]
        do {
            committed = try await engine.committedOffsets(group: group, topic: info.name)
        } catch {
            engine.release(group: group, topic: info.name, member: member)
            throw error
        }
        let closed = state.withLock { s in
            if !s.closed {
                s.positions = committed
                s.assigned = true
            }
            return s.closed
        }
        if closed {
            engine.release(group: group, topic: info.name, member: member)
            throw LogError(.closed, "consumer of group '\(group)' is closed")
        }
        return .assigned(Array(0..<info.partitions))
    }

    func commit(_ offsets: [Int: Int64]) async throws {
        guard !offsets.isEmpty else { return }
        try await engine.append([], commit: OffsetCommit(group: group, topic: info.name, offsets: offsets), durability: .deferred)
    }

    func close() async {
        state.withLock { $0.closed = true }
        engine.release(group: group, topic: info.name, member: member)
    }
}
