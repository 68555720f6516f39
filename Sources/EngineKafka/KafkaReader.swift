import EventLog
import Logging
import Synchronization

/// What one `pollBatch` collected.
struct ConsumerBatch {
    var records: [LogRecord] = []
    var endOfPartition: [(partition: Int, offset: Int64)] = []
    /// A record returned by the poll call inside which `stop` turned true (a rebalance
    /// callback ran): it belongs after the event, not before.
    var afterStop: [LogRecord] = []
}

extension RDKafkaClient {
    /// Polls on the consumer's own queue: at most `maxRecords` messages, waiting up to
    /// `timeout` for the first, in slices of ≤ 100 ms so cancellation and `close` are
    /// prompt. `stop` ends the batch early (a rebalance to report). Blocking.
    func pollBatch(
        maxRecords: Int, timeout: Duration, cancelled: CancelFlag, logger: Logger, stop: () -> Bool = { false }
    ) throws -> ConsumerBatch {
        var batch = ConsumerBatch()
        let deadline = ContinuousClock.now + timeout
        while batch.records.count < maxRecords {
            if cancelled.isSet {
                if batch.records.isEmpty { throw CancellationError() }
                break
            }
            if stop() { break }
            let wait: Int
            if batch.records.isEmpty {
                let remaining = deadline - .now
                if remaining <= .zero { break }
                wait = min(remaining.milliseconds, 100)
            } else {
                wait = 0  // drain what is already fetched, don't wait for more
            }
            guard let result = consumerPoll(timeoutMs: wait) else {
                if !batch.records.isEmpty { break }
                continue
            }
            let stopped = stop()
            switch result {
            case .message(let m):
                let record = LogRecord(
                    topic: m.topic, partition: m.partition, offset: m.offset,
                    key: m.key.map { String(decoding: $0, as: UTF8.self) } ?? "", value: m.value, headers: m.headers,
                    timestamp: m.timestamp)
                if stopped {
                    batch.afterStop.append(record)
                    return batch
                }
                batch.records.append(record)
            case .endOfPartition(_, let partition, let offset):
                batch.endOfPartition.append((partition, offset))
            case .error(let error):
                if error.isFatal { throw LogError.kafka(error, "consumer") }
                if error.code == RDKafkaError.autoOffsetReset || error.code == RDKafkaError.offsetOutOfRange {
                    throw LogError(.corrupt, "kafka: reading from an offset the log does not have: \(error)")
                }
                // Broker down, transport errors: librdkafka retries by itself.
                logger.debug("kafka consumer error (retrying)", metadata: ["error": "\(error)"])
            }
        }
        return batch
    }
}

/// Reads every partition of a topic from explicit offsets, without a group
/// (`rd_kafka_assign`, no commits).
final class KafkaReader: LogReader {
    let topic: String
    private let client: RDKafkaClient
    private let queue: BlockingQueue
    private let logger: Logger
    private let positionsState: Mutex<[Int64]>
    private let closed = CancelFlag()

    init(topic: String, offsets: [Int64], properties: [String: String], logger: Logger) throws(LogError) {
        self.topic = topic
        self.logger = logger
        do {
            client = try RDKafkaClient(kind: .consumer, properties: properties, logger: logger)
            var assignment: [Int: Int64] = [:]
            for (p, o) in offsets.enumerated() { assignment[p] = o }
            try client.assign(topic: topic, offsets: assignment)
        } catch {
            throw LogError.kafka(error, "opening a reader on \(topic)")
        }
        queue = BlockingQueue(label: "kafka.reader.\(topic)")
        positionsState = Mutex(offsets)
    }

    func next(maxRecords: Int, timeout: Duration) async throws -> [LogRecord] {
        try Task.checkCancellation()
        if closed.isSet { throw LogError(.closed, "reader closed") }
        let cancelled = CancelFlag()
        let batch = try await withTaskCancellationHandler {
            try await queue.run { [self] () throws -> ConsumerBatch in
                if closed.isSet { throw LogError(.closed, "reader closed") }
                return try client.pollBatch(
                    maxRecords: maxRecords, timeout: timeout, cancelled: cancelled, logger: logger, stop: { closed.isSet })
            }
        } onCancel: {
            cancelled.set()
            client.yield()
        }
        if !batch.records.isEmpty { positionsState.withLock { $0.advance(past: batch.records) } }
        return batch.records
    }

    func positions() async -> [Int64] { positionsState.withLock { $0 } }

    func close() async {
        guard !closed.isSet else { return }
        closed.set()  // a pending next returns what it has
        client.yield()
        await queue.run { [client] in client.destroy() }
    }
}

extension [Int64] {
    /// Moves a reader's positions (each partition's next offset) past `records`.
    mutating func advance(past records: [LogRecord]) {
        for r in records where r.partition < count {
            self[r.partition] = Swift.max(self[r.partition], r.offset + 1)
        }
    }
}
