/// A read model whose checkpoint is past the end of the log it follows: it holds events the
/// log no longer has (a log restored from an older copy, a truncated WAL), and the offsets
/// it counts as read are the ones the log hands out next.
///
/// Served, it lists orders the log lost, and the projector takes every new record at those
/// offsets for one it already read: no command gets an outcome, while health says SERVING
/// (the read model is past the end it was to catch up with). So this is refused, not
/// repaired: a rebuild from the log would drop the read model's copy of what the log lost,
/// which may be the only one left.
public struct ReadModelAheadOfLog: Error, Sendable, CustomStringConvertible {
    public var checkpoint: LogPosition
    public var logEnd: [Int64]

    /// Nil unless `checkpoint` is past `logEnd` in some partition.
    public init?(checkpoint: LogPosition, logEnd: [Int64]) {
        guard zip(checkpoint.offsets, logEnd).contains(where: { $0 > $1 }) else { return nil }
        self.checkpoint = checkpoint
        self.logEnd = logEnd
    }

    /// Throws when `store`'s checkpoint is past the end of `topics.aggregates` in `engine`.
    public static func check(_ store: any ReadModelStore, against engine: any LogEngine, topics: Topics) async throws {
        guard let checkpoint = try await store.checkpoint() else { return }
        if let ahead = ReadModelAheadOfLog(checkpoint: checkpoint, logEnd: try await engine.endOffsets(topics.aggregates)) {
            throw ahead
        }
    }

    public var description: String {
        let partitions = zip(checkpoint.offsets, logEnd).enumerated().filter { $0.element.0 > $0.element.1 }
        let first = partitions.prefix(3).map { "partition \($0.offset): read to \($0.element.0), log ends at \($0.element.1)" }
        return "the read model is ahead of the log (\(first.joined(separator: "; "))"
            + (partitions.count > 3 ? "; \(partitions.count - 3) more" : "") + "): the log has lost records it had acknowledged"
    }
}
