import OrderDomain
import Synchronization

/// A `LogEngine` in memory: the contract's reference behaviour, for fast tests of the
/// processors. Not durable; one process; every group has a single member.
public final class InMemoryLogEngine: LogEngine {
    private struct State {
        var topics: [String: [[LogRecord]]] = [:]
        var committed: [String: [Int: Int64]] = [:]  // "group/topic" -> offsets
        var wakers: [UInt64: (topic: String, continuation: CheckedContinuation<Void, Never>)] = [:]
        var nextWaker: UInt64 = 0
    }
    private let state = Mutex(State())
    private let clock: @Sendable () -> Int64

    public init(clock: @escaping @Sendable () -> Int64 = { Clock.now().microseconds / 1000 }) {
        self.clock = clock
    }

    public func createTopic(_ topic: String, partitions: Int) async throws {
        state.withLock { s in
            if s.topics[topic] == nil { s.topics[topic] = Array(repeating: [], count: partitions) }
        }
    }

    public func partitionCount(_ topic: String) async throws -> Int {
        guard let count = state.withLock({ $0.topics[topic]?.count }) else { throw LogError.unknownTopic(topic) }
        return count
    }

    /// Records are kept as appended, memos included.
    public var keepsMemos: Bool { true }

    /// Everything is "durable" here as soon as it is appended (memory is the whole store).
    @discardableResult
    public func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress] {
        let now = clock()
        let (addresses, woken) = try state.withLock { s throws(LogError) -> ([RecordAddress], [CheckedContinuation<Void, Never>]) in
            for r in records where s.topics[r.topic] == nil { throw LogError.unknownTopic(r.topic) }
            var addresses: [RecordAddress] = []
            var touched: Set<String> = []
            for r in records {
                let count = s.topics[r.topic]!.count
                let p = r.partition ?? Partitioner.partition(forKey: r.key, count: count)
                let offset = Int64(s.topics[r.topic]![p].count)
                s.topics[r.topic]![p].append(
                    LogRecord(
                        topic: r.topic, partition: p, offset: offset, key: r.key, value: r.value, headers: r.headers, timestamp: now,
                        memo: r.memo))
                addresses.append(RecordAddress(topic: r.topic, partition: p, offset: offset))
                touched.insert(r.topic)
            }
            if let commit { s.committed["\(commit.group)/\(commit.topic)", default: [:]].merge(commit.offsets) { $1 } }
            var woken: [CheckedContinuation<Void, Never>] = []
            for (id, w) in s.wakers where touched.contains(w.topic) {
                woken.append(w.continuation)
                s.wakers[id] = nil
            }
            return (addresses, woken)
        }
        for c in woken { c.resume() }
        return addresses
    }

    public func endOffsets(_ topic: String) async throws -> [Int64] {
        guard let parts = state.withLock({ $0.topics[topic] }) else { throw LogError.unknownTopic(topic) }
        return parts.map { Int64($0.count) }
    }

    public func openReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        _ = try await partitionCount(topic)
        return Reader(engine: self, topic: topic, offsets: offsets)
    }

    public func joinGroup(_ group: String, topic: String) async throws -> any GroupConsumer {
        let count = try await partitionCount(topic)
        let committed = try await committedOffsets(group: group, topic: topic)
        return Consumer(engine: self, group: group, topic: topic, reader: Reader(engine: self, topic: topic, offsets: committed), partitions: count)
    }

    public func committedOffsets(group: String, topic: String) async throws -> [Int64] {
        let count = try await partitionCount(topic)
        let c = state.withLock { $0.committed["\(group)/\(topic)"] ?? [:] }
        return (0..<count).map { c[$0] ?? 0 }
    }

    public func latestRecord(topic: String, key: String) async throws -> LogRecord? {
        try state.withLock { s throws(LogError) -> LogRecord? in
            guard let parts = s.topics[topic] else { throw LogError.unknownTopic(topic) }
            let p = Partitioner.partition(forKey: key, count: parts.count)
            // Records are placed by key unless a partition was given; look everywhere then.
            if let hit = parts[p].last(where: { $0.key == key }) { return hit }
            return parts.lazy.compactMap { $0.last(where: { $0.key == key }) }.max { $0.offset < $1.offset }
        }
    }

    fileprivate func read(topic: String, offsets: inout [Int64], max: Int) -> [LogRecord] {
        state.withLock { s in
            guard let parts = s.topics[topic] else { return [] }
            var out: [LogRecord] = []
            for (p, records) in parts.enumerated() where out.count < max {
                let start = Int(offsets[p])
                let end = min(records.count, start + (max - out.count))
                if start < end {
                    out.append(contentsOf: records[start..<end])
                    offsets[p] = Int64(end)
                }
            }
            return out
        }
    }

    /// Waits until an append touches `topic` or `timeout` passes.
    fileprivate func waitForAppend(topic: String, known: [Int64], timeout: Duration) async {
        let id = state.withLock { s -> UInt64 in
            s.nextWaker += 1
            return s.nextWaker
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                        let ready = self.state.withLock { s -> Bool in
                            let ends = s.topics[topic]?.map { Int64($0.count) } ?? []
                            if Task.isCancelled || zip(ends, known).contains(where: { $0 > $1 }) { return true }
                            s.wakers[id] = (topic, c)
                            return false
                        }
                        if ready { c.resume() }
                    }
                } onCancel: {
                    self.state.withLock { $0.wakers.removeValue(forKey: id) }?.continuation.resume()
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    final class Reader: LogReader, @unchecked Sendable {
        // @unchecked: `offsets` is guarded by `lock`.
        let engine: InMemoryLogEngine
        let topic: String
        private let lock = Mutex<[Int64]>([])

        init(engine: InMemoryLogEngine, topic: String, offsets: [Int64]) {
            self.engine = engine
            self.topic = topic
            lock.withLock { $0 = offsets }
        }

        func next(maxRecords: Int, timeout: Duration) async throws -> [LogRecord] {
            let deadline = ContinuousClock.now + timeout
            while true {
                var offsets = lock.withLock { $0 }
                let records = engine.read(topic: topic, offsets: &offsets, max: maxRecords)
                if !records.isEmpty {
                    lock.withLock { $0 = offsets }
                    return records
                }
                let remaining = deadline - .now
                if remaining <= .zero { return [] }
                try Task.checkCancellation()
                await engine.waitForAppend(topic: topic, known: offsets, timeout: remaining)
                try Task.checkCancellation()
            }
        }

        func positions() async -> [Int64] { lock.withLock { $0 } }
        func close() async {}
    }

    final class Consumer: GroupConsumer, @unchecked Sendable {
        // @unchecked: `assignedSent` is guarded by `lock`.
        let engine: InMemoryLogEngine
        let group: String
        let topic: String
        let reader: Reader
        let partitions: Int
        private let lock = Mutex(false)

        init(engine: InMemoryLogEngine, group: String, topic: String, reader: Reader, partitions: Int) {
            self.engine = engine
            self.group = group
            self.topic = topic
            self.reader = reader
            self.partitions = partitions
        }

        func poll(maxRecords: Int, timeout: Duration) async throws -> GroupPoll {
            let first = lock.withLock { sent -> Bool in
                defer { sent = true }
                return !sent
            }
            if first { return .assigned(Array(0..<partitions)) }
            let records = try await reader.next(maxRecords: maxRecords, timeout: timeout)
            return records.isEmpty ? .idle : .records(records)
        }

        func commit(_ offsets: [Int: Int64]) async throws {
            try await engine.append([], commit: OffsetCommit(group: group, topic: topic, offsets: offsets))
        }

        func close() async {}
    }
}
