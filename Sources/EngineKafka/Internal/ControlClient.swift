import EventLog
import Logging

/// The engine's control handle: a group-less consumer for admin requests, metadata and
/// the reads that answer questions (where a partition ends, what is at an offset). One
/// request at a time on its own queue.
///
/// Where a partition ends is read, not asked: tansu's ListOffsets answers with the last
/// batch's base offset + 1 (wrong for any batch of more than one record), while its fetch
/// responses carry the right high watermark, which librdkafka turns into a
/// partition-EOF event. So the broker's answer is only a starting point close to the
/// end; the consumer reads from there to the EOF.
final class ControlClient: Sendable {
    private let client: RDKafkaClient
    private let queue = BlockingQueue(label: "kafka.control")
    private let timeoutMs: Int
    private let logger: Logger

    init(properties: [String: String], timeoutMs: Int, logger: Logger) throws(RDKafkaError) {
        client = try RDKafkaClient(kind: .consumer, properties: properties, logger: logger)
        self.timeoutMs = timeoutMs
        self.logger = logger
    }

    func shutdown() async {
        await queue.run { [client] in client.destroy() }
    }

    func createTopic(_ topic: String, partitions: Int, replicationFactor: Int, config: [String: String]) async throws -> Bool {
        try await queue.run { [client, timeoutMs] () throws -> Bool in
            do throws(RDKafkaError) {
                return try client.createTopic(
                    topic, partitions: partitions, replicationFactor: replicationFactor, config: config, timeoutMs: timeoutMs)
            } catch {
                throw LogError.kafka(error, "creating topic \(topic)")
            }
        }
    }

    /// nil when the topic does not exist.
    func partitionCount(_ topic: String) async throws -> Int? {
        try await queue.run { [client, timeoutMs] () throws -> Int? in
            do throws(RDKafkaError) {
                return try client.partitionCount(topic, timeoutMs: timeoutMs)
            } catch {
                throw LogError.kafka(error, "reading metadata of \(topic)")
            }
        }
    }

    /// Each partition's end (the fetch position after its last record or transaction
    /// marker), as of now.
    func ends(topic: String, partitions: [Int]) async throws -> [Int: Int64] {
        try await queue.run { [self] () throws -> [Int: Int64] in
            let hints = try latestHints(topic, partitions)
            return try readToEnd(topic: topic, from: hints).ends
        }
    }

    /// For each partition (index = partition), the offset after its last record a
    /// reader delivers: the end, minus trailing transaction markers (which take offsets
    /// on Kafka but are never delivered). Readers and processors count positions as
    /// "last record's offset + 1", so this is the end they can reach.
    func visibleEnds(topic: String, partitions count: Int) async throws -> [Int64] {
        try await queue.run { [self] () throws -> [Int64] in
            let all = Array(0..<count)
            let hints = try latestHints(topic, all)
            // Start one before the hint: on Kafka the hint is the end, on tansu the last
            // batch's base + 1; either way the read covers the last record or marker.
            let first = try readToEnd(topic: topic, from: hints.mapValues { max($0 - 1, 0) })
            var result = [Int64](repeating: 0, count: count)
            var unresolved: [Int: Int64] = [:]  // partition → end
            for p in all {
                let end = first.ends[p] ?? 0
                if let last = first.lastRecord[p] {
                    result[p] = last + 1
                } else if end > 0 && max((hints[p] ?? 0) - 1, 0) > 0 {
                    unresolved[p] = end  // only markers in the window: look further back
                } else {
                    result[p] = 0
                }
            }
            var window: Int64 = 4
            while !unresolved.isEmpty {
                let starts = unresolved.mapValues { max($0 - window, 0) }
                let round = try readToEnd(topic: topic, from: starts)
                for (p, start) in starts {
                    if let last = round.lastRecord[p] {
                        result[p] = last + 1
                        unresolved[p] = nil
                    } else if start == 0 {
                        result[p] = 0  // nothing but markers (or aborted records) at all
                        unresolved[p] = nil
                    }
                }
                window *= 16
            }
            return result
        }
    }

    /// The records at exactly these offsets (partition → offsets), where there are any.
    /// All partitions are read at once; within a partition, nearby offsets share one
    /// forward read and distant ones take another round.
    func records(topic: String, at wanted: [Int: [Int64]]) async throws -> [Int: [Int64: LogRecord]] {
        try await queue.run { [self] () throws -> [Int: [Int64: LogRecord]] in
            var remaining = wanted.compactMapValues { list -> [Int64]? in list.isEmpty ? nil : Array(Set(list)).sorted() }
            var found: [Int: [Int64: LogRecord]] = [:]
            // Read on through gaps up to this many records rather than start a new round.
            let maxGap: Int64 = 256
            while !remaining.isEmpty {
                let starts = remaining.mapValues { $0[0] }
                var ended: Set<Int> = []
                try read(topic: topic, from: starts, onEnd: { p, _ in ended.insert(p) }) { record in
                    let p = record.partition
                    var list = remaining[p] ?? []
                    while let first = list.first, first < record.offset { list.removeFirst() }  // not there
                    if list.first == record.offset {
                        found[p, default: [:]][record.offset] = record
                        list.removeFirst()
                    }
                    remaining[p] = list
                    guard let next = list.first else { return false }
                    // Far ahead: stop here; the next round starts at `next` (progress).
                    return next - record.offset <= maxGap
                }
                for p in Array(remaining.keys) {
                    // At the end every wanted offset was passed; an empty list is done.
                    if ended.contains(p) || remaining[p]?.isEmpty != false { remaining[p] = nil }
                }
            }
            return found
        }
    }

    /// Every record of a partition from `offset` to its current end, in order.
    func scan(topic: String, partition: Int, from offset: Int64, visit: @escaping @Sendable (LogRecord) -> Void) async throws {
        try await queue.run { [self] () throws in
            try read(topic: topic, from: [partition: offset]) { record in
                visit(record)
                return true
            }
        }
    }

    // MARK: On `queue`

    private func latestHints(_ topic: String, _ partitions: [Int]) throws -> [Int: Int64] {
        do {
            return try client.listLatestOffsets(topic: topic, partitions: partitions, timeoutMs: timeoutMs)
        } catch {
            throw LogError.kafka(error, "listing offsets of \(topic)")
        }
    }

    private func readToEnd(topic: String, from starts: [Int: Int64]) throws -> (ends: [Int: Int64], lastRecord: [Int: Int64]) {
        var ends: [Int: Int64] = [:]
        var last: [Int: Int64] = [:]
        try read(topic: topic, from: starts, onEnd: { ends[$0] = $1 }) { record in
            if ends[record.partition] == nil { last[record.partition] = record.offset }
            return true
        }
        return (ends, last)
    }

    /// Reads the partitions from the given offsets until each reached its end (or
    /// `visit` returns false for one of its records); the assignment is dropped after.
    private func read(
        topic: String, from starts: [Int: Int64], onEnd: (Int, Int64) -> Void = { _, _ in },
        visit: (LogRecord) -> Bool
    ) throws {
        guard !starts.isEmpty else { return }
        do {
            try client.assign(topic: topic, offsets: starts)
        } catch {
            throw LogError.kafka(error, "reading \(topic)")
        }
        defer { client.unassign() }
        var open = Set(starts.keys)
        let deadline = ContinuousClock.now + .milliseconds(timeoutMs)
        while !open.isEmpty {
            guard ContinuousClock.now < deadline else {
                throw LogError(.unavailable, "kafka: reading \(topic) \(open.sorted()) to its end took over \(timeoutMs) ms")
            }
            guard let result = client.consumerPoll(timeoutMs: 100) else { continue }
            switch result {
            case .message(let m):
                // librdkafka drops messages of an earlier assignment; the offset check
                // guards against any that slip through.
                guard open.contains(m.partition), let start = starts[m.partition], m.offset >= start else { continue }
                let record = LogRecord(
                    topic: m.topic, partition: m.partition, offset: m.offset,
                    key: m.key.map { String(decoding: $0, as: UTF8.self) } ?? "", value: m.value, headers: m.headers,
                    timestamp: m.timestamp)
                if !visit(record) { open.remove(m.partition) }
            case .endOfPartition(_, let p, let offset):
                guard open.contains(p), let start = starts[p], offset >= start else { continue }
                onEnd(p, offset)
                open.remove(p)
            case .error(let error):
                if error.code == RDKafkaError.autoOffsetReset || error.code == RDKafkaError.offsetOutOfRange {
                    throw LogError(.corrupt, "kafka: \(topic): offsets \(starts) out of range: \(error)")
                }
                if error.isFatal { throw LogError.kafka(error, "reading \(topic)") }
                logger.debug("kafka control consumer error (retrying)", metadata: ["error": "\(error)"])
            }
        }
    }
}
