#if canImport(Glibc)
import Glibc
#endif
import EventLog
import Logging
import Synchronization

/// A producer handle with its delivery-report poller.
final class PolledProducer: Sendable {
    let client: RDKafkaClient
    private let poller: BackgroundLoop

    init(properties: [String: String], logger: Logger, label: String) throws(RDKafkaError) {
        let client = try RDKafkaClient(kind: .producer, properties: properties, logger: logger)
        self.client = client
        poller = BackgroundLoop(label: label) { client.poll(timeoutMs: 100) }
    }

    /// Enqueues records from `start`, each reporting into `batch` at its index. A record
    /// librdkafka refuses is reported as failed at once, except on a full local queue:
    /// then it returns the index to resume from once the queue drained (`records.count`
    /// when all are in). Does not block.
    func enqueue(_ records: [RDKafkaOutgoing], from start: Int = 0, into batch: DeliveryBatch) -> Int {
        for i in start..<records.count {
            do {
                try client.produce(records[i], ticket: batch.ticket(i))
            } catch where error.code == RDKafkaError.queueFull {
                return i
            } catch {
                batch.complete(i, .failure(error))
            }
        }
        return records.count
    }

    /// Stops polling, waits up to `flushMs` for outstanding records, fails the rest (so
    /// every waiting append returns) and destroys the handle. Blocking.
    func shutdownBlocking(flushMs: Int) {
        poller.stopBlocking()
        _ = client.flush(timeoutMs: flushMs)
        client.purge()
        var rounds = 0
        while client.outstanding > 0 && rounds < 100 {
            client.poll(timeoutMs: 10)
            rounds += 1
        }
        client.destroy()
    }
}

/// The idempotent producer (`enable.idempotence=true`, `acks=all`) for appends without
/// a transaction. Replaced by a fresh handle once it lost its producer state (a fatal
/// error, or see `RDKafkaError.lostProducerState`).
final class IdempotentProducer: Sendable {
    private let properties: [String: String]
    private let logger: Logger
    /// How long a replaced handle keeps delivering what other appends put on it.
    private let drainMs: Int
    private let current = Mutex<PolledProducer?>(nil)
    private let retired = BlockingQueue(label: "kafka.producer.retire")

    init(properties: [String: String], drainMs: Int, logger: Logger) {
        self.properties = properties
        self.drainMs = drainMs
        self.logger = logger
    }

    private func producer() throws(LogError) -> PolledProducer {
        try current.withLock { p throws(LogError) -> PolledProducer in
            if let p { return p }
            do throws(RDKafkaError) {
                let made = try PolledProducer(properties: properties, logger: logger, label: "kafka.producer.poll")
                p = made
                return made
            } catch {
                throw LogError.kafka(error, "creating the producer")
            }
        }
    }

    /// Produces the records and waits for every delivery report.
    func produce(_ records: [RDKafkaOutgoing]) async throws -> [DeliveryBatch.Outcome] {
        let producer = try producer()
        let batch = DeliveryBatch(count: records.count)
        var next = 0
        while true {
            next = producer.enqueue(records, from: next, into: batch)
            if next == records.count { break }
            // The local queue (100k records) is full; it drains as the broker acknowledges.
            try? await Task.sleep(for: .milliseconds(2))
        }
        let outcomes = await batch.wait()
        let failures = outcomes.compactMap { outcome -> RDKafkaError? in
            if case .failure(let error) = outcome { return error }
            return nil
        }
        if !failures.isEmpty, let reason = producer.client.fatalError ?? failures.first(where: \.lostProducerState) {
            retire(producer, because: reason)
        }
        return outcomes
    }

    /// Drops a handle that lost its producer state; the next append makes a new one
    /// (with a new producer id). Appends already on the old handle get their own
    /// reports, within `message.timeout.ms`, before it is destroyed.
    private func retire(_ producer: PolledProducer, because reason: RDKafkaError) {
        let dropped = current.withLock { p -> Bool in
            guard p === producer else { return false }
            p = nil
            return true
        }
        guard dropped else { return }
        logger.warning("kafka producer lost its producer state; replacing it", metadata: ["error": "\(reason)"])
        Task { [drainMs] in await retired.run { producer.shutdownBlocking(flushMs: drainMs) } }
    }

    func shutdown(flushMs: Int) async {
        guard let p = current.withLock({ p -> PolledProducer? in defer { p = nil }; return p }) else { return }
        await retired.run { p.shutdownBlocking(flushMs: flushMs) }
    }
}

/// The transactional producer (`transactional.id`): one transaction at a time on its
/// own queue. Records and the consumer group's offsets commit together. A handle whose
/// transactional state is lost or stuck is dropped, and the next transaction initializes
/// a new one (unless `mayReplace` says the id is no longer this member's).
final class TransactionalProducer: Sendable {
    private let properties: [String: String]
    private let logger: Logger
    private let timeoutMs: Int
    private let queue = BlockingQueue(label: "kafka.producer.transactions")
    /// Touched only on `queue`; the Mutex makes that checkable.
    private let current = Mutex<PolledProducer?>(nil)
    /// A handle was dropped as unusable (on `queue`).
    private let replaced = Mutex(false)
    /// Whether a dropped handle may be replaced: the id of a partition this member no
    /// longer holds is its next owner's, and initializing it would fence that owner.
    private let mayReplace: @Sendable () -> Bool

    init(properties: [String: String], timeoutMs: Int, logger: Logger, mayReplace: @escaping @Sendable () -> Bool = { true }) {
        self.properties = properties
        self.timeoutMs = timeoutMs
        self.logger = logger
        self.mayReplace = mayReplace
    }

    /// Produces `records` and commits `offsets` for the group in one transaction.
    /// Returns once the transaction is committed and every record acknowledged.
    func transact(
        _ records: [RDKafkaOutgoing], offsets: (topic: String, offsets: [Int: Int64], group: RDKafkaGroupMetadata)?
    ) async throws -> [DeliveryBatch.Outcome] {
        let batch = try await queue.run { [self] () throws -> DeliveryBatch in
            let producer = try producer()
            var usable = true
            do {
                return try run(producer, records, offsets, usable: &usable)
            } catch let error as RDKafkaError {
                if !usable || error.isFatal || producer.client.fatalError != nil {
                    logger.warning(
                        "kafka transactional producer is unusable; replacing it",
                        metadata: ["error": "\(producer.client.fatalError ?? error)"])
                    current.withLock { $0 = nil }
                    replaced.withLock { $0 = true }
                    producer.shutdownBlocking(flushMs: 0)
                }
                throw LogError.kafka(error, "transaction")
            }
        }
        return await batch.wait()
    }

    /// Initializes the producer for transactions now: fences every other producer with
    /// this `transactional.id`, and so ends (aborts) a transaction one of them left
    /// open; until then, read_committed consumers of the partitions it wrote to read
    /// nothing past it.
    func claim() async throws {
        try await queue.run { [self] () throws in _ = try producer() }
    }

    /// On `queue`: the producer, initialized for transactions.
    private func producer() throws(LogError) -> PolledProducer {
        if let p = current.withLock({ $0 }) { return p }
        if replaced.withLock({ $0 }) && !mayReplace() {
            let id = properties["transactional.id"] ?? ""
            throw LogError(
                .unavailable, "kafka: transactional id \(id) is its partition's next owner's now; the next assignment claims new ones")
        }
        let p: PolledProducer
        do {
            p = try PolledProducer(properties: properties, logger: logger, label: "kafka.producer.transactions.poll")
        } catch {
            throw LogError.kafka(error, "creating the transactional producer")
        }
        do {
            // Fences any older producer with the same transactional.id.
            try p.client.initTransactions(timeoutMs: timeoutMs)
        } catch {
            p.shutdownBlocking(flushMs: 0)
            throw LogError.kafka(error, "initializing transactions")
        }
        current.withLock { $0 = p }
        return p
    }

    /// On `queue`: one transaction; aborts it on a failure that allows that. Sets
    /// `usable` to false when the handle cannot go on: its transactional state is lost
    /// or stuck (fenced, an epoch to bump, an abort that failed, a transaction that
    /// cannot begin). A replacement's init_transactions then ends this transaction.
    private func run(
        _ producer: PolledProducer, _ records: [RDKafkaOutgoing],
        _ offsets: (topic: String, offsets: [Int: Int64], group: RDKafkaGroupMetadata)?, usable: inout Bool
    ) throws(RDKafkaError) -> DeliveryBatch {
        let client = producer.client
        do throws(RDKafkaError) {
            try client.beginTransaction()
        } catch {
            usable = false  // an abort still in progress (_CONFLICT), or worse
            throw error
        }
        let batch = DeliveryBatch(count: records.count)
        do throws(RDKafkaError) {
            var next = 0
            while true {
                next = producer.enqueue(records, from: next, into: batch)
                if next == records.count { break }
                usleep(1000)  // on the transactions queue: the local queue is full
            }
            // A record librdkafka refused at once (too large, say) is not part of the
            // transaction, and commit_transaction would commit the others and the offsets
            // past its source without it: the batch's output would be lost for good.
            if let refused = batch.firstFailure { throw refused }
            if let offsets, !offsets.offsets.isEmpty {
                try client.sendOffsetsToTransaction(
                    topic: offsets.topic, offsets: offsets.offsets, group: offsets.group, timeoutMs: timeoutMs)
            }
            var attempts = 0
            while true {
                do {
                    // Flushes the records first: a produce failure fails the commit.
                    try client.commitTransaction(timeoutMs: timeoutMs)
                    break
                } catch where error.isRetriable && attempts < 3 {
                    attempts += 1
                }
            }
            return batch
        } catch {
            // Records that timed out, or a refused epoch or sequence: the abort would
            // need an epoch bump, which tansu never grants (it would wait out timeoutMs).
            let timedOut = error.code == RDKafkaError.timedOut && error.requiresAbort  // "N message(s) timed out"
            if error.isFatal || error.lostProducerState || timedOut || batch.firstFailure?.lostProducerState == true {
                usable = false
                throw error
            }
            do {
                try client.abortTransaction(timeoutMs: timeoutMs)
            } catch {
                logger.warning("kafka: aborting a transaction failed", metadata: ["error": "\(error)"])
                usable = false
            }
            throw error
        }
    }

    func shutdown(flushMs: Int) async {
        await queue.run { [self] in
            guard let p = current.withLock({ p -> PolledProducer? in defer { p = nil }; return p }) else { return }
            p.shutdownBlocking(flushMs: flushMs)
        }
    }
}
