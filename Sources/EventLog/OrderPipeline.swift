import Logging

/// The seed's topology on one log engine: the built-in aggregator (unless ksqlDB runs
/// the aggregation), the command handler, the integration publisher and this instance's
/// read-model projector, plus the gateway and queries the RPC layer uses.
public final class OrderPipeline: Sendable {
    public struct Config: Sendable {
        public var topics = Topics()
        /// Off when ksqlDB maintains ORDER_AGGREGATES.
        public var builtInAggregator = true
        public var heartbeat: Duration = .seconds(5)
        public init() {}
        public static var defaults: Config { Config() }
    }

    public let engine: any LogEngine
    public let store: any ReadModelStore
    public let config: Config
    public let projector: Projector
    public let gateway: CommandGateway
    public let queries: OrderQueries
    let logger: Logger

    public init(engine: any LogEngine, store: any ReadModelStore, config: Config = .defaults, logger: Logger) {
        self.engine = engine
        self.store = store
        self.config = config
        self.logger = logger
        projector = Projector(engine: engine, store: store, topics: config.topics, logger: logger)
        gateway = CommandGateway(engine: engine, store: store, projector: projector, topics: config.topics)
        queries = OrderQueries(store: store, projector: projector)
    }

    public var topics: Topics { config.topics }

    /// Provisions the topics, then runs every processor until cancelled.
    public func run() async throws {
        try await config.topics.provision(on: engine)
        let topics = config.topics
        try await withThrowingDiscardingTaskGroup { group in
            if config.builtInAggregator {
                group.addTask { try await Aggregator(engine: self.engine, topics: topics, logger: self.logger).run() }
            }
            group.addTask { try await CommandHandler(engine: self.engine, topics: topics, logger: self.logger).run() }
            group.addTask { try await IntegrationPublisher(engine: self.engine, topics: topics, logger: self.logger).run() }
            group.addTask { try await self.projector.run() }
        }
    }

    /// Opens a StreamEvents subscription.
    public func subscribe(start: EventSubscription.Start, filter: EventSubscription.Filter) async throws -> EventSubscription {
        try await EventSubscription.open(
            engine: engine, topics: config.topics, start: start, filter: filter, heartbeat: config.heartbeat, logger: logger)
    }
}
