/// The seed's logical logs, each partitioned by order id.
public struct Topics: Sendable, Hashable {
    /// Every command and every event (the seed's ORDER_COMMANDS_AND_EVENTS stream).
    public var commandsAndEvents: String
    /// The ORDER_AGGREGATES table's changelog: per order, the latest entry and all entries.
    public var aggregates: String
    /// Public, snake_case JSON with the order's current state, one per state change.
    public var integrationEvents: String
    public var partitions: Int

    public init(prefix: String = "", partitions: Int = 10) {
        self.commandsAndEvents = prefix + "order-commands-and-events"
        self.aggregates = prefix + "order-aggregates"
        self.integrationEvents = prefix + "order-integration-events"
        self.partitions = partitions
    }

    public var all: [String] { [commandsAndEvents, aggregates, integrationEvents] }

    /// Creates the three topics if missing; an existing topic keeps its partition count,
    /// which must then match (records are placed by key hash modulo the count).
    public func provision(on engine: some LogEngine) async throws {
        for topic in all {
            try await engine.createTopic(topic, partitions: partitions)
            let actual = try await engine.partitionCount(topic)
            guard actual == partitions else { throw PartitionCountMismatch(topic: topic, actual: actual, configured: partitions) }
        }
    }
}

/// A log written with another partition count than configured: records are placed by key
/// hash modulo the count, so it cannot change once data exists.
public struct PartitionCountMismatch: Error, Sendable, CustomStringConvertible {
    public var topic: String
    public var actual: Int
    public var configured: Int

    public var description: String {
        "topic '\(topic)' has \(actual) partitions, configured \(configured); keep the partition count the data was written with"
    }
}
