import EventLog

// Derivations (`LogDerivation`) run by the writer inside each group commit.
//
// Every record a transaction inserts is handed, right after its insert, to the
// derivations of its topic; what they return is inserted next (and handed on in turn),
// so each derivation sees its topic's records one by one in offset order, exactly as a
// consumer polling from its committed offset would. Before COMMIT the derivations'
// groups commit their offsets past everything they saw. A rollback resets them.

extension SQLiteLogEngine: DerivingLogEngine {
    public func startDerivations(_ derivations: [LogDerivation]) async throws -> Bool {
        for derivation in derivations { _ = try catalog.require(derivation.topic) }
        do {
            return try await writer.run { conn in
                let state = self.writerState
                for derivation in derivations {
                    guard let info = state.topics[derivation.topic], let ends = state.ends[derivation.topic] else {
                        throw LogError.unknownTopic(derivation.topic)
                    }
                    let committed = try Self.committedOffsets(conn, group: derivation.group, topic: info)
                    if committed != ends { return false }
                }
                // A pipeline started again on this engine replaces its predecessor's.
                let groups = Set(derivations.map(\.group))
                for topic in state.derivations.keys { state.derivations[topic]!.removeAll { groups.contains($0.group) } }
                for derivation in derivations {
                    state.derivations[derivation.topic, default: []].append(derivation)
                    state.derivedGroups.insert(derivation.group)
                    self.takeOver(group: derivation.group, topic: derivation.topic)
                }
                return true
            }
        } catch {
            throw error.asLogError
        }
    }

    /// Fails a call that commits offsets of a group the writer now runs itself: it can
    /// only be a consumer that polled before the hand-over, repeating derived work.
    func checkNotDerived(_ commit: PendingAppend.Commit?) throws {
        guard let commit, writerState.derivedGroups.contains(commit.group) else { return }
        throw LogError(.closed, "group '\(commit.group)' is run inside the log's appends now; its consumers are retired")
    }

    /// What the derivations of `record`'s topic append after it, validated like an
    /// `append` (on the writer: its topic table is current).
    func derived(from record: LogRecord, conn: SQLiteConnection) throws -> [PendingAppend.Record] {
        guard let derivations = writerState.derivations[record.topic] else { return [] }
        var out: [PendingAppend.Record] = []
        for derivation in derivations {
            for outgoing in try derivation.derive(record, { topic, key in try self.latestOnWriter(conn, topic: topic, key: key) }) {
                out.append(try prepare(outgoing, topics: writerState.topics))
            }
        }
        return out
    }

    /// The derivations' offset commits for this transaction: past every record of their
    /// topics in `ends`, for the partitions the transaction wrote.
    func commitDerivedOffsets(touched: Set<TopicPartition>, ends: [String: [Int64]], conn: SQLiteConnection) throws {
        guard !writerState.derivations.isEmpty, !touched.isEmpty else { return }
        try conn.withStatement(Self.upsertOffset) { upsert in
            for (topic, derivations) in writerState.derivations {
                guard let info = writerState.topics[topic], let topicEnds = ends[topic] else { continue }
                for partition in 0..<info.partitions where touched.contains(TopicPartition(topic, partition)) {
                    for derivation in derivations {
                        upsert.bind(1, derivation.group)
                        upsert.bind(2, info.id)
                        upsert.bind(3, partition)
                        upsert.bind(4, topicEnds[partition])
                        try upsert.run()
                    }
                }
            }
        }
    }

    /// After a rollback: the derivations forget what they saw of it.
    func resetDerivations() {
        for derivations in writerState.derivations.values {
            for derivation in derivations { derivation.reset() }
        }
    }

    /// `latestRecord` on the writer's connection, which also sees this transaction's rows
    /// (found through `uncommittedLatest`: the `latest` delta learns of them after COMMIT).
    private func latestOnWriter(_ conn: SQLiteConnection, topic: String, key: String) throws -> LogRecord? {
        guard let info = writerState.topics[topic] else { throw LogError.unknownTopic(topic) }
        guard info.keyIndexed else {
            throw LogError(.unavailable, "topic '\(topic)' is not key-indexed (SQLiteLogEngine.Options.keyIndexedTopics)")
        }
        let hash = keyHash(key)
        let recentID =
            writerState.uncommittedLatest[LatestIndex.Entry(topic: info.id, hash: hash)] ?? latest.lookup(topic: info.id, hash: hash)
        let (record, collided) = try Self.newest(conn, topic: info, key: key, hash: hash, recentID: recentID)
        if collided {
            logger.warning("key hash collision in latest; answered by a scan", metadata: ["topic": "\(topic)", "key": "\(key)"])
        }
        return record
    }
}
