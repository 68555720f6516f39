import EventLog
import Logging
import Synchronization

/// Where each key's latest record is in one topic: Kafka has no lookup by key, so the
/// engine keeps this index for `latestRecord`.
///
/// Memory: per key only a 64-bit hash of the key and the record's (partition, offset),
/// about 40 bytes a key with the dictionary's overhead (a million keys ≈ 40 MB); the
/// record itself is read back by offset when asked. A hash collision is caught then (the
/// record read has another key) and answered by scanning the key's partition.
///
/// Fed by a follower (a group-less consumer reading every partition from offset 0 on
/// its own thread) and by the engine's own acknowledged appends (write-through).
final class KeyIndex: Sendable {
    struct Entry: Sendable, Equatable {
        var partition: Int32
        var offset: Int64
    }

    fileprivate struct State {
        var entries: [UInt64: Entry] = [:]
        /// The follower's fetch position per partition (next offset it will read).
        var positions: [Int64]
        /// The engine's assignment epoch at which each partition was last verified
        /// read to its end.
        var verified: [UInt64?]
    }

    let topic: String
    let partitions: Int
    private let store: Store
    private let follower: RDKafkaClient
    private let loop: BackgroundLoop

    init(topic: String, partitions: Int, properties: [String: String], logger: Logger) throws(LogError) {
        self.topic = topic
        self.partitions = partitions
        let store = Store(State(positions: Array(repeating: 0, count: partitions), verified: Array(repeating: nil, count: partitions)))
        self.store = store
        let follower: RDKafkaClient
        do {
            follower = try RDKafkaClient(kind: .consumer, properties: properties, logger: logger)
            try follower.assign(topic: topic, offsets: Dictionary(uniqueKeysWithValues: (0..<partitions).map { ($0, Int64(0)) }))
        } catch {
            throw LogError.kafka(error, "opening the key index of \(topic)")
        }
        self.follower = follower
        let never = CancelFlag()
        loop = BackgroundLoop(label: "kafka.index.\(topic)") {
            do {
                let batch = try follower.pollBatch(maxRecords: 10_000, timeout: .milliseconds(100), cancelled: never, logger: logger)
                KeyIndex.apply(batch, to: store, partitions: partitions)
            } catch {
                logger.warning("kafka key index of \(topic): read failed, retrying", metadata: ["error": "\(error)"])
                usleepQuietly(200_000)
            }
        }
    }

    func shutdown() async {
        await loop.stop()
        follower.destroy()
    }

    private static func apply(_ batch: ConsumerBatch, to store: Store, partitions: Int) {
        guard !batch.records.isEmpty || !batch.endOfPartition.isEmpty else { return }
        store.state.withLock { s in
            for r in batch.records where r.partition < partitions {
                update(&s, key: r.key, partition: r.partition, offset: r.offset, partitions: partitions)
                s.positions[r.partition] = max(s.positions[r.partition], r.offset + 1)
            }
            for (p, offset) in batch.endOfPartition where p < partitions {
                s.positions[p] = max(s.positions[p], offset)
            }
        }
    }

    /// A newer record of a key replaces the older in the same partition; a record in
    /// the key's own partition (by hash) beats records placed elsewhere explicitly.
    private static func update(_ s: inout State, key: String, partition: Int, offset: Int64, partitions: Int) {
        let hash = hashKey(key)
        let entry = Entry(partition: Int32(partition), offset: offset)
        guard let old = s.entries[hash] else {
            s.entries[hash] = entry
            return
        }
        if Int(old.partition) == partition {
            if offset > old.offset { s.entries[hash] = entry }
            return
        }
        let home = Partitioner.partition(forKey: key, count: partitions)
        if partition == home || Int(old.partition) != home { s.entries[hash] = entry }
    }

    /// Write-through: the engine's own acknowledged append.
    func recordAppended(key: String, partition: Int, offset: Int64) {
        store.state.withLock { Self.update(&$0, key: key, partition: partition, offset: offset, partitions: partitions) }
    }

    func lookup(_ key: String) -> Entry? {
        store.state.withLock { $0.entries[Self.hashKey(key)] }
    }

    func isVerified(partition: Int, epoch: UInt64) -> Bool {
        store.state.withLock { $0.verified[partition] == epoch }
    }

    func markVerified(partition: Int, epoch: UInt64) {
        store.state.withLock { $0.verified[partition] = epoch }
    }

    /// Waits until the follower has read `partition` up to `offset`. A first read of a
    /// long partition may take a while: this fails only when the follower makes no
    /// progress for `stallTimeout`.
    func waitUntil(partition: Int, reaches offset: Int64, stallTimeout: Duration) async throws {
        var last = store.state.withLock { $0.positions[partition] }
        var lastProgress = ContinuousClock.now
        while last < offset {
            try await Task.sleep(for: .milliseconds(1))
            let now = store.state.withLock { $0.positions[partition] }
            if now > last {
                last = now
                lastProgress = .now
            } else if ContinuousClock.now - lastProgress > stallTimeout {
                throw LogError(
                    .unavailable,
                    "kafka: the key index of \(topic)[\(partition)] is stuck at offset \(last) (needs \(offset)) for \(stallTimeout)")
            }
        }
    }

    /// 64-bit FNV-1a of the key's UTF-8 bytes.
    static func hashKey(_ key: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 {
            h ^= UInt64(b)
            h &*= 0x0000_0100_0000_01b3
        }
        return h
    }
}

/// The index's mutable state, shared with the follower's loop.
private final class Store: Sendable {
    let state: Mutex<KeyIndex.State>
    init(_ state: KeyIndex.State) { self.state = Mutex(state) }
}

#if canImport(Glibc)
import Glibc
#endif

/// A short sleep on a background loop's own thread (never the cooperative pool).
func usleepQuietly(_ microseconds: UInt32) {
    usleep(microseconds)
}
