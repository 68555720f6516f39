import EventLog
import Logging
import Synchronization

/// The `LogEngine` on Kafka, through librdkafka.
///
/// - Appends: an idempotent producer (`enable.idempotence=true`, `acks=all`) with
///   explicit partitions from `Partitioner` (murmur2, as Java's and the embedded
///   engine's), so both engines place a key alike. An append of several records, or
///   one that commits a group's offsets, runs in a transaction
///   (`rd_kafka_send_offsets_to_transaction`) when `Config.transactions` is on.
/// - Transactional ids belong to partitions: `<prefix><group id>-<topic>-<partition>`,
///   the same on every instance. A member that is assigned partitions initializes the
///   id of each before reading (`claim`), which fences its previous owner and ends a
///   transaction that owner left open; it then commits on the producer of its lowest
///   partition, one transaction per batch. A member killed mid-transaction would
///   otherwise leave that transaction open, and read_committed readers of every
///   partition it wrote to would read nothing newer until the broker timed it out:
///   after `transaction.timeout.ms` on Kafka, never on tansu. (One producer per
///   partition, Kafka Streams' first exactly-once design, fences alike but ran half as
///   many commands per second on tansu: a transaction per partition per batch.)
/// - Readers assign every partition at explicit offsets; group members subscribe, with
///   rebalances reported as `GroupPoll.assigned`/`.revoked`.
/// - `endOffsets` and the ends used by `latestRecord` are read from the log (see
///   `ControlClient`): tansu's ListOffsets answers are not the end.
/// - `latestRecord` answers from a local per-topic index (see `KeyIndex`).
///
/// Usage:
/// ```swift
/// var config = KafkaLogEngine.Config(brokers: "127.0.0.1:9092")
/// config.groupIdPrefix = "orders-"
/// let engine = try KafkaLogEngine(config: config, logger: logger)
/// try await Topics().provision(on: engine)
/// // ...
/// await engine.shutdown()
/// ```
///
/// - Important: call `shutdown()` before dropping the engine: it flushes the producers
///   and stops the background threads.
public final class KafkaLogEngine: LogEngine {
    /// How the engine reaches and uses the cluster.
    public struct Config: Sendable {
        /// `bootstrap.servers`: comma-separated `host:port`.
        public var brokers: String
        /// Replication factor of topics the engine creates.
        public var replicationFactor: Int = 1
        /// Prepended to every consumer group name (`joinGroup("order-aggregator")` with
        /// prefix "orders-" is the Kafka group "orders-order-aggregator").
        public var groupIdPrefix: String = ""
        /// This instance's identity: part of `client.id` and of the `transactional.id`
        /// of appends of several records without a commit
        /// (`<transactionalIdPrefix><instanceId>`). Give each server instance a stable,
        /// unique one. Commits use ids of their partitions instead (see the type's notes).
        public var instanceId: String = KafkaLogEngine.randomId()
        public var clientId: String = "orders"
        public var transactionalIdPrefix: String = "orders-"
        /// Appends of several records and appends with an offset commit run in a
        /// transaction. Off: records are produced, then the offsets committed (at least
        /// once; the processors dedupe).
        public var transactions: Bool = true
        /// Group members are declared dead after this long without heartbeats; a low
        /// value speeds up group joins and failover (tests: ~1–3 s).
        public var sessionTimeout: Duration = .seconds(10)
        /// Cooperative rebalancing (`partition.assignment.strategy=cooperative-sticky`): a
        /// rebalance moves only the partitions that change owner, and every member goes on
        /// with the others meanwhile. Off: eager rebalancing, where every member gives up
        /// all its partitions first (a member's death stalls every partition of the group).
        public var cooperativeRebalancing = true
        /// Bound on metadata, admin, offset and transaction requests, and on any one
        /// request the broker does not answer (`socket.timeout.ms`).
        public var requestTimeout: Duration = .seconds(30)
        /// Bound on an append (`message.timeout.ms`): past it, the append fails with
        /// `LogError(.unavailable)`.
        public var deliveryTimeout: Duration = .seconds(30)
        /// How long a command's client waits for its append (`LogEngine.appendPatience`)
        /// before it is told the event store is unavailable, while the append runs on to
        /// `deliveryTimeout`. An append takes milliseconds on a broker that answers; one
        /// that stopped answering would hold the client for the whole delivery timeout.
        /// (The health probe gives the broker 2 s.)
        public var appendPatience: Duration = .seconds(3)
        /// How long the broker may hold a fetch that has nothing new (`fetch.wait.max.ms`):
        /// the live latency of readers and group members on brokers that do not answer
        /// a waiting fetch early.
        public var fetchWait: Duration = .milliseconds(5)
        /// Consumer groups off every caller's path (the integration publisher's events
        /// are for other services): their members fetch lazily, like the key indexes'
        /// followers, see `lazyFetchWait`.
        public var lazyGroups: Set<String> = [IntegrationPublisher.group]
        /// A lazy consumer asks for at least 1 MiB and lets the broker hold the fetch this
        /// long: at most one fetch per interval. tansu answers a fetch as soon as any record
        /// is there and spends about 0.5 ms of CPU on each, so under load a consumer that
        /// keeps up fetches once per arriving batch; its fetches then cost tansu more than
        /// the records do.
        public var lazyFetchWait: Duration = .milliseconds(100)
        /// How long the producer waits to batch records (`linger.ms`).
        public var linger: Duration = .milliseconds(2)
        /// librdkafka consumers shared by the StreamEvents subscribers reading behind the
        /// tail (`openCatchUpReader`): each is a client with its threads and connection,
        /// so their number is bounded whatever the number of subscribers.
        public var catchUpReaders: Int = 4
        /// librdkafka properties for every handle (TLS, SASL, tuning), applied last, so
        /// they override the engine's own settings.
        public var properties: [String: String] = [:]

        public init(brokers: String) {
            self.brokers = brokers
        }
    }

    public let config: Config
    private let logger: Logger
    private let control: ControlClient
    private let producer: IdempotentProducer
    /// Consumers shared by catch-up readers.
    let readerPool: KafkaReaderPool
    /// The transactional producer of each live group member's commits, with the partition
    /// whose id it has, by "group/topic", set when the member claims its partitions.
    private let claimed = Mutex<[String: (producer: TransactionalProducer, partition: Int)]>([:])
    /// Transactional producers for commits of groups without a live member here, and
    /// ("") for appends of several records without a commit; by group.
    private let unclaimed = Mutex<[String: TransactionalProducer]>([:])
    /// Producers of a claim that only fenced their ids, while they close.
    private let closingFencers = Mutex<[ObjectIdentifier: TransactionalProducer]>([:])
    private let partitionCounts = Mutex<[String: Int]>([:])
    private let indexes = Mutex<[String: KeyIndex]>([:])
    /// Live group members, by "group/topic", for offset commits and group metadata.
    private let members = Mutex<[String: [ObjectIdentifier: KafkaGroupConsumer]]>([:])
    /// Bumped whenever a member of this engine gains or loses partitions (or joins or
    /// leaves): the key index re-verifies a partition's end after any change.
    private let assignmentEpoch = Atomic<UInt64>(0)

    public var appendPatience: Duration? { config.appendPatience }

    /// The librdkafka loaded at run time ("2.16.0" for the confluent-kafka wheel's).
    public static var librdkafkaVersion: String { RDKafka.versionString }

    /// Creates the engine. Connects lazily: an unreachable cluster shows up as
    /// `LogError(.unavailable)` from the first request, bounded by the timeouts.
    public init(config: Config, logger: Logger = Logger(label: "orders.kafka")) throws {
        self.config = config
        self.logger = logger
        do {
            control = try ControlClient(
                properties: Self.consumerProperties(config, group: nil, partitionEOF: true, fetchWait: .milliseconds(10)),
                timeoutMs: config.requestTimeout.milliseconds, logger: logger)
        } catch {
            throw LogError.kafka(error, "creating the control client")
        }
        producer = IdempotentProducer(
            properties: Self.producerProperties(config, transactionalId: nil), drainMs: config.deliveryTimeout.milliseconds,
            logger: logger)
        readerPool = KafkaReaderPool(
            size: config.catchUpReaders,
            properties: Self.consumerProperties(config, group: nil, partitionEOF: false, fetchWait: config.fetchWait),
            logger: logger)
    }

    /// The `transactional.id` of a group's partition:
    /// `<transactionalIdPrefix><group id>-<topic>-<partition>`, the same on every
    /// instance, so the partition's next owner fences it. Without a partition (commits
    /// of a group without a live member here, appends without a commit):
    /// `<transactionalIdPrefix><instanceId>[-<group>]`.
    static func transactionalId(_ config: Config, group: String, topic: String, partition: Int?) -> String {
        guard let partition else {
            return config.transactionalIdPrefix + config.instanceId + (group.isEmpty ? "" : "-\(group)")
        }
        return "\(config.transactionalIdPrefix)\(config.groupIdPrefix)\(group)-\(topic)-\(partition)"
    }

    /// `partition`: the group's partition whose id it is (nil for this instance's own
    /// ids). Such a producer replaces a handle it dropped only while a member here still
    /// holds the partition: initializing the id again would fence the partition's next
    /// owner, whose claim is the one that counts.
    private func makeTransactionalProducer(id: String, partition: (group: String, topic: String, partition: Int)? = nil)
        -> TransactionalProducer
    {
        TransactionalProducer(
            properties: Self.producerProperties(config, transactionalId: id), timeoutMs: config.requestTimeout.milliseconds,
            logger: logger,
            mayReplace: { [weak self] in
                guard let partition else { return true }
                guard let self else { return false }
                return members.withLock { m in
                    m["\(partition.group)/\(partition.topic)"]?.values.contains { $0.held.contains(partition.partition) } ?? false
                }
            })
    }

    /// The producer for a commit of `group` (or "" for none): the live member's, else
    /// this instance's own for the group.
    private func transactionalProducer(group: String, topic: String) -> TransactionalProducer {
        if let p = claimed.withLock({ $0["\(group)/\(topic)"]?.producer }) { return p }
        return unclaimed.withLock { producers in
            if let p = producers[group] { return p }
            let p = makeTransactionalProducer(id: Self.transactionalId(config, group: group, topic: topic, partition: nil))
            producers[group] = p
            return p
        }
    }

    /// A member of `group` on `topic` now holds `held` (after an assignment, before it
    /// reads): initializes the transactional id of every held partition, which fences
    /// their previous owners and ends transactions they left open, and keeps the
    /// producer of the lowest for the member's commits. Its previous producer is closed
    /// first: another member may have claimed that id meanwhile.
    private func claim(group: String, topic: String, held: Set<Int>) async throws {
        let key = "\(group)/\(topic)"
        if let old = claimed.withLock({ $0.removeValue(forKey: key) }) { await old.producer.shutdown(flushMs: 0) }
        let partitions = held.sorted()
        let producers = partitions.map {
            makeTransactionalProducer(
                id: Self.transactionalId(config, group: group, topic: topic, partition: $0), partition: (group, topic, $0))
        }
        guard let kept = producers.first else { return }
        let started = ContinuousClock.now
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for p in producers { tasks.addTask { try await p.claim() } }
                try await tasks.waitForAll()
            }
        } catch {
            for p in producers { await p.shutdown(flushMs: 0) }
            throw error
        }
        claimed.withLock { $0[key] = (kept, partitions[0]) }
        // The others only fenced: closing them (a handle destroy each; about half a second
        // for three groups' claims of 10 partitions on tansu) need not delay reading.
        // `shutdown()` closes those still open.
        let extras = Array(producers.dropFirst())
        closingFencers.withLock { for p in extras { $0[ObjectIdentifier(p)] = p } }
        Task { [weak self] in
            await withTaskGroup(of: Void.self) { tasks in
                for p in extras { tasks.addTask { await p.shutdown(flushMs: 0) } }
            }
            self?.closingFencers.withLock { for p in extras { $0[ObjectIdentifier(p)] = nil } }
        }
        logger.debug(
            "claimed the partitions' transactional ids",
            metadata: ["group": "\(group)", "partitions": "\(held.sorted())", "elapsed": "\(ContinuousClock.now - started)"])
    }

    /// A member of `group` on `topic` is about to give partitions up and keeps `held`:
    /// when the member's commits ran on the id of a partition it gives up (whose next
    /// owner fences that id), they move to one it keeps, claimed again first (none when
    /// it keeps none).
    private func keepClaim(group: String, topic: String, held: Set<Int>) async throws {
        if let current = claimed.withLock({ $0["\(group)/\(topic)"]?.partition }), held.contains(current) { return }
        try await claim(group: group, topic: topic, held: held)
    }

    /// Flushes and closes the producers, stops the key indexes and closes the control
    /// handle. Readers and group members are their owners' to close.
    public func shutdown() async {
        await readerPool.close()
        let flushMs = config.deliveryTimeout.milliseconds
        await producer.shutdown(flushMs: flushMs)
        for p in claimed.withLock({ t in defer { t = [:] }; return t.values.map(\.producer) })
            + unclaimed.withLock({ t in defer { t = [:] }; return Array(t.values) })
            + closingFencers.withLock({ Array($0.values) })
        {
            await p.shutdown(flushMs: flushMs)
        }
        for index in indexes.withLock({ i -> [KeyIndex] in defer { i = [:] }; return Array(i.values) }) {
            await index.shutdown()
        }
        await control.shutdown()
    }

    // MARK: Topics

    public func createTopic(_ topic: String, partitions: Int) async throws {
        // An existing topic needs no admin request (nor the right to make one, on
        // clusters where topics are provisioned ahead).
        if try await control.partitionCount(topic) != nil { return }
        let created = try await control.createTopic(
            topic, partitions: partitions, replicationFactor: config.replicationFactor,
            config: ["retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"])
        if created { logger.info("created topic", metadata: ["topic": "\(topic)", "partitions": "\(partitions)"]) }
        // Metadata can trail a creation on a real cluster: wait until it shows.
        let deadline = ContinuousClock.now + config.requestTimeout
        while try await control.partitionCount(topic) == nil {
            guard ContinuousClock.now < deadline else {
                throw LogError(.unavailable, "kafka: topic \(topic) was created but does not show in the metadata")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    public func partitionCount(_ topic: String) async throws -> Int {
        guard let count = try await control.partitionCount(topic) else { throw LogError.unknownTopic(topic) }
        partitionCounts.withLock { $0[topic] = count }
        return count
    }

    /// The cached partition count (topics never shrink; growing one breaks keyed
    /// placement, which `Topics.provision` refuses).
    private func cachedPartitionCount(_ topic: String) async throws -> Int {
        if let count = partitionCounts.withLock({ $0[topic] }) { return count }
        return try await partitionCount(topic)
    }

    // MARK: Appends

    /// Every append waits for acks=all: `.deferred` buys nothing on Kafka, where a
    /// record is either acknowledged by the in-sync replicas or not written.
    @discardableResult
    public func append(_ records: [OutgoingRecord], commit: OffsetCommit?, durability: Durability) async throws -> [RecordAddress] {
        var outgoing: [RDKafkaOutgoing] = []
        outgoing.reserveCapacity(records.count)
        for r in records {
            let count = try await cachedPartitionCount(r.topic)
            let partition = r.partition ?? Partitioner.partition(forKey: r.key, count: count)
            guard partition >= 0 && partition < count else {
                throw LogError(.corrupt, "partition \(partition) of \(r.topic) does not exist (\(count) partitions)")
            }
            outgoing.append(
                RDKafkaOutgoing(topic: r.topic, partition: partition, key: Array(r.key.utf8), value: r.value, headers: r.headers))
        }
        if outgoing.isEmpty {
            if let commit { try await commitOffsets(commit) }
            return []
        }
        let outcomes: [DeliveryBatch.Outcome]
        if config.transactions && (commit != nil || outgoing.count > 1) {
            var offsets: (topic: String, offsets: [Int: Int64], group: RDKafkaGroupMetadata)?
            if let commit, !commit.offsets.isEmpty {
                offsets = (commit.topic, commit.offsets, try await groupMetadata(commit))
            }
            let producer = transactionalProducer(group: commit?.group ?? "", topic: commit?.topic ?? "")
            outcomes = try await producer.transact(outgoing, offsets: offsets)
        } else {
            outcomes = try await producer.produce(outgoing)
        }
        var addresses: [RecordAddress] = []
        addresses.reserveCapacity(outcomes.count)
        for (i, outcome) in outcomes.enumerated() {
            switch outcome {
            case .success(let (partition, offset)):
                guard offset >= 0 else {
                    throw LogError(
                        .unavailable,
                        "kafka: \(records[i].topic)[\(partition)]: stored, but the broker's acknowledgement was lost (no offset); a retry may store it twice")
                }
                addresses.append(RecordAddress(topic: records[i].topic, partition: partition, offset: offset))
            case .failure(let error):
                throw LogError.kafka(error, "appending to \(records[i].topic)[\(outgoing[i].partition)]")
            }
        }
        if let commit, !(config.transactions) { try await commitOffsets(commit) }
        // Write-through into the key indexes of this instance.
        let indexes = indexes.withLock { $0 }
        if !indexes.isEmpty {
            for (i, address) in addresses.enumerated() {
                indexes[address.topic]?.recordAppended(key: records[i].key, partition: address.partition, offset: address.offset)
            }
        }
        return addresses
    }

    /// The live member's metadata (its generation is checked by the broker), else a
    /// generation-less one for the group. Throws when the member is closing.
    private func groupMetadata(_ commit: OffsetCommit) async throws -> RDKafkaGroupMetadata {
        if let member = member(group: commit.group, topic: commit.topic), let metadata = try await member.groupMetadata() {
            return metadata
        }
        return RDKafkaGroupMetadata(groupId: config.groupIdPrefix + commit.group)
    }

    /// Commits a group's offsets outside a transaction: through this engine's live
    /// member of the group if there is one, else as a standalone commit.
    private func commitOffsets(_ commit: OffsetCommit) async throws {
        guard !commit.offsets.isEmpty else { return }
        if let member = member(group: commit.group, topic: commit.topic) {
            try await member.commit(commit.offsets)
            return
        }
        let groupId = config.groupIdPrefix + commit.group
        let properties = Self.consumerProperties(config, group: groupId, partitionEOF: false, fetchWait: config.fetchWait)
        try await BlockingQueue(label: "kafka.commit").run { () throws in
            do throws(RDKafkaError) {
                let client = try RDKafkaClient(kind: .consumer, properties: properties, logger: self.logger)
                defer { client.destroy() }
                try client.commit(topic: commit.topic, offsets: commit.offsets)
            } catch {
                throw LogError.kafka(error, "committing offsets of group \(groupId) on \(commit.topic)")
            }
        }
    }

    // MARK: Reading

    public func endOffsets(_ topic: String) async throws -> [Int64] {
        let count = try await partitionCount(topic)
        return try await control.visibleEnds(topic: topic, partitions: count)
    }

    public func openReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        let count = try await partitionCount(topic)
        guard offsets.count == count else {
            throw LogError(.corrupt, "a reader of \(topic) needs \(count) offsets, got \(offsets.count)")
        }
        return try KafkaReader(
            topic: topic, offsets: offsets,
            properties: Self.consumerProperties(config, group: nil, partitionEOF: false, fetchWait: config.fetchWait),
            logger: logger)
    }

    public func openCatchUpReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        let count = try await partitionCount(topic)
        guard offsets.count == count else {
            throw LogError(.corrupt, "a reader of \(topic) needs \(count) offsets, got \(offsets.count)")
        }
        return PooledKafkaReader(topic: topic, offsets: offsets, pool: readerPool, logger: logger)
    }

    public func joinGroup(_ group: String, topic: String) async throws -> any GroupConsumer {
        _ = try await partitionCount(topic)
        let groupId = config.groupIdPrefix + group
        let key = "\(group)/\(topic)"
        let box = Mutex<ObjectIdentifier?>(nil)
        let consumer = try KafkaGroupConsumer(
            group: group, groupId: groupId, topic: topic,
            properties: Self.consumerProperties(
                config, group: groupId, partitionEOF: false, fetchWait: config.fetchWait, lazy: config.lazyGroups.contains(group)),
            logger: logger,
            onChange: { [weak self] in self?.assignmentChanged() },
            onClose: { [weak self] in
                guard let self else { return }
                members.withLock { m in
                    if let id = box.withLock({ $0 }) { m[key]?[id] = nil }
                    if m[key]?.isEmpty == true { m[key] = nil }
                }
                assignmentChanged()
            },
            onAssigned: { [weak self] held in
                guard let self, config.transactions else { return }
                try await claim(group: group, topic: topic, held: held)
            },
            beforeGivingUp: { [weak self] kept in
                guard let self, config.transactions else { return }
                try await keepClaim(group: group, topic: topic, held: kept)
            })
        let id = ObjectIdentifier(consumer)
        box.withLock { $0 = id }
        members.withLock { $0[key, default: [:]][id] = consumer }
        assignmentChanged()
        return consumer
    }

    private func assignmentChanged() {
        assignmentEpoch.add(1, ordering: .sequentiallyConsistent)
    }

    private func member(group: String, topic: String) -> KafkaGroupConsumer? {
        members.withLock { $0["\(group)/\(topic)"]?.values.first }
    }

    public func committedOffsets(group: String, topic: String) async throws -> [Int64] {
        let count = try await partitionCount(topic)
        let groupId = config.groupIdPrefix + group
        let properties = Self.consumerProperties(config, group: groupId, partitionEOF: false, fetchWait: config.fetchWait)
        let timeoutMs = config.requestTimeout.milliseconds
        return try await BlockingQueue(label: "kafka.committed").run { () throws -> [Int64] in
            do throws(RDKafkaError) {
                let client = try RDKafkaClient(kind: .consumer, properties: properties, logger: self.logger)
                defer { client.destroy() }
                return try client.committed(topic: topic, partitions: count, timeoutMs: timeoutMs).map { $0 ?? 0 }
            } catch {
                throw LogError.kafka(error, "reading committed offsets of group \(groupId) on \(topic)")
            }
        }
    }

    /// The newest record with this key, from the topic's local index.
    ///
    /// Not stale for the key's partition when this instance owns it in a group: the
    /// index is verified read to that partition's end after every assignment change of
    /// this engine's members (and on every call while the engine has no member), and
    /// this instance's own appends are written through. Another instance's appends to
    /// a partition this one does not own can be seen late (the follower's lag).
    public func latestRecord(topic: String, key: String) async throws -> LogRecord? {
        try await latestRecords(topic: topic, keys: [key])[key]
    }

    /// `latestRecord` for a batch of keys: one end check for all their partitions, and
    /// the records read by offset from all partitions at once.
    public func latestRecords(topic: String, keys: Set<String>) async throws -> [String: LogRecord] {
        try await latestRecords(topic: topic, keys: keys, checkingEnds: false)
    }

    /// Waits for the index to reach the partition's end as the broker has it now, even where
    /// this instance verified it before (another instance may have written since).
    public func currentRecord(topic: String, key: String) async throws -> LogRecord? {
        try await latestRecords(topic: topic, keys: [key], checkingEnds: true)[key]
    }

    /// `checkingEnds`: read the ends of the keys' partitions even where verified.
    func latestRecords(topic: String, keys: Set<String>, checkingEnds: Bool) async throws -> [String: LogRecord] {
        let index = try await index(for: topic)
        guard !keys.isEmpty else { return [:] }
        let epoch = assignmentEpoch.load(ordering: .sequentiallyConsistent)
        let hasMembers = members.withLock { !$0.isEmpty }
        let partitions = Set(keys.map { Partitioner.partition(forKey: $0, count: index.partitions) })
        let unverified = partitions.filter { checkingEnds || !hasMembers || !index.isVerified(partition: $0, epoch: epoch) }.sorted()
        if !unverified.isEmpty {
            let ends = try await control.ends(topic: topic, partitions: unverified)
            for p in unverified {
                try await index.waitUntil(partition: p, reaches: ends[p] ?? 0, stallTimeout: config.requestTimeout)
                index.markVerified(partition: p, epoch: epoch)
            }
        }
        var entries: [String: KeyIndex.Entry] = [:]
        var wanted: [Int: [Int64]] = [:]
        for key in keys {
            guard let entry = index.lookup(key) else { continue }
            entries[key] = entry
            wanted[Int(entry.partition), default: []].append(entry.offset)
        }
        guard !entries.isEmpty else { return [:] }
        let found = try await control.records(topic: topic, at: wanted)
        var out: [String: LogRecord] = [:]
        for (key, entry) in entries {
            if let record = found[Int(entry.partition)]?[entry.offset], record.key == key {
                out[key] = record
                continue
            }
            // Another key with the same 64-bit hash (or a record no longer readable): scan.
            logger.notice("kafka key index: hash collision or unreadable record; scanning", metadata: ["topic": "\(topic)", "key": "\(key)"])
            let latest = Mutex<LogRecord?>(nil)
            let home = Partitioner.partition(forKey: key, count: index.partitions)
            try await control.scan(topic: topic, partition: home, from: 0) { record in
                if record.key == key { latest.withLock { $0 = record } }
            }
            if let record = latest.withLock({ $0 }) { out[key] = record }
        }
        return out
    }

    private func index(for topic: String) async throws -> KeyIndex {
        if let index = indexes.withLock({ $0[topic] }) { return index }
        let count = try await partitionCount(topic)
        // The follower is off the callers' path: lookups of keys this instance owns wait
        // for it only after an assignment change; its own appends are written through.
        let properties = Self.consumerProperties(config, group: nil, partitionEOF: true, fetchWait: config.fetchWait, lazy: true)
        return try indexes.withLock { i throws(LogError) -> KeyIndex in
            if let index = i[topic] { return index }
            let index = try KeyIndex(topic: topic, partitions: count, properties: properties, logger: logger)
            i[topic] = index
            return index
        }
    }

    // MARK: librdkafka properties

    private static func commonProperties(_ config: Config) -> [String: String] {
        [
            "bootstrap.servers": config.brokers,
            "client.id": "\(config.clientId)-\(config.instanceId)",
            "allow.auto.create.topics": "false",
            // Reconnect to a restarted broker within a second or two.
            "reconnect.backoff.ms": "100",
            "reconnect.backoff.max.ms": "1000",
            "socket.keepalive.enable": "true",
            // A request the broker does not answer (a frozen broker) is given up, and its
            // connection closed, after this long: by default 60 s, whatever the timeout of
            // the call that waits on it (librdkafka's allowed range: 10 ms to 300 s).
            "socket.timeout.ms": String(min(max(config.requestTimeout.milliseconds, 10), 300_000)),
        ]
    }

    static func producerProperties(_ config: Config, transactionalId: String?) -> [String: String] {
        var p = commonProperties(config)
        p["enable.idempotence"] = "true"
        p["acks"] = "all"
        p["message.timeout.ms"] = String(config.deliveryTimeout.milliseconds)
        p["linger.ms"] = String(config.linger.milliseconds)
        if let transactionalId {
            p["transactional.id"] = transactionalId
            // librdkafka refuses a socket.timeout.ms less than 100 ms below it.
            p["transaction.timeout.ms"] = String(
                max(60_000, config.deliveryTimeout.milliseconds + 10_000, config.requestTimeout.milliseconds + 10_000))
        }
        return p.merging(config.properties) { $1 }
    }

    /// The most a reader (no group) prefetches, in KiB.
    static let readerPrefetchKiB = 4096

    static func consumerProperties(
        _ config: Config, group: String?, partitionEOF: Bool, fetchWait: Duration, lazy: Bool = false
    ) -> [String: String] {
        var p = commonProperties(config)
        p["enable.auto.commit"] = "false"
        p["enable.auto.offset.store"] = "false"
        p["isolation.level"] = "read_committed"
        p["enable.partition.eof"] = partitionEOF ? "true" : "false"
        p["fetch.wait.max.ms"] = String(max(1, fetchWait.milliseconds))
        if lazy {
            p["fetch.wait.max.ms"] = String(max(1, config.lazyFetchWait.milliseconds))
            p["fetch.min.bytes"] = String(1 << 20)
        }
        if let group {
            p["group.id"] = group
            p["auto.offset.reset"] = "earliest"
            let session = config.sessionTimeout.milliseconds
            p["session.timeout.ms"] = String(session)
            p["heartbeat.interval.ms"] = String(max(100, session / 4))
            if config.cooperativeRebalancing { p["partition.assignment.strategy"] = "cooperative-sticky" }
        } else {
            // librdkafka's assign needs a group id; this one never joins or commits.
            p["group.id"] = "\(config.groupIdPrefix)reader-\(config.instanceId)"
            // Readers start at explicit offsets; one the log lacks is an error, not a jump.
            p["auto.offset.reset"] = "error"
            // Each StreamEvents subscriber behind the tail has a reader of its own: with
            // librdkafka's defaults (64 MiB, 100,000 messages) twenty that do not read
            // held 1.2 GB of prefetched records; these cap one at a few MiB.
            p["queued.max.messages.kbytes"] = String(Self.readerPrefetchKiB)
            p["queued.min.messages"] = "1000"
            p["fetch.max.bytes"] = String(Self.readerPrefetchKiB * 1024)
        }
        var merged = p.merging(config.properties) { $1 }
        // librdkafka refuses a fetch.max.bytes below message.max.bytes: a larger message
        // size set by the operator raises the reader's cap with it.
        if let fetch = merged["fetch.max.bytes"].flatMap(Int.init), let message = merged["message.max.bytes"].flatMap(Int.init),
            fetch < message
        {
            merged["fetch.max.bytes"] = String(message)
        }
        return merged
    }

    public static func randomId() -> String {
        var g = SystemRandomNumberGenerator()
        return String(g.next() as UInt64, radix: 16)
    }
}
