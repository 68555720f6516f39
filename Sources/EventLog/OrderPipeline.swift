import Logging

/// The seed's topology on one log engine: the built-in aggregator (unless ksqlDB runs
/// the aggregation), the command handler, the integration publisher and this instance's
/// read-model projector, plus the gateway and queries the RPC layer uses.
public final class OrderPipeline: Sendable {
    public struct Config: Sendable {
        public var topics = Topics()
        /// Off when ksqlDB maintains ORDER_AGGREGATES.
        public var builtInAggregator = true
        /// On an engine that can (`DerivingLogEngine`: the embedded one), the built-in
        /// aggregator, the command handler and the integration publisher run inside the
        /// log's appends once caught up, rather than as polling consumers: the same
        /// records, four hops fewer per command.
        public var deriveInEngine = true
        /// On an engine that cannot (Kafka), the built-in aggregator, the command handler and
        /// the integration publisher run as one consumer (`FusedProcessors`): the same
        /// records, one transaction and one fetch per batch instead of three.
        public var fuseProcessors = true
        public var heartbeat: Duration = .seconds(5)
        /// Records StreamEvents' shared tail keeps decoded in memory: how far a live
        /// subscriber may fall behind before it goes back to reading the log itself.
        public var streamTailCapacity = 8192
        /// …and at most this many bytes of them (estimated: the events and their shared
        /// deliveries), fewer records when events are large (long routes).
        public var streamTailMaxBytes = 64 << 20
        /// Where GetOrder may also read an order's aggregates row directly (ksqlDB's pull
        /// query when ksqlDB runs the aggregation).
        public var aggregateTable: (any AggregateTable)? = nil
        /// How long a command's outcome may take before the gateway appends the command
        /// once more, and again after each such wait (`CommandGateway.resendAfter`); nil:
        /// never.
        public var resendCommandAfter: Duration? = .seconds(3)
        /// Commands one order records; past them, those it would reject are refused
        /// unrecorded, its state changes still go through (`CommandGateway.requireOrder`).
        public var maxCommandsPerOrder = 100
        /// Views the projector keeps in memory, by count and by estimated bytes (tests
        /// make them small); the views of batches not yet in the store stay regardless.
        var viewCacheCapacity = 20_000
        var viewCacheMaxBytes = 64 << 20
        public init() {}
        public static var defaults: Config { Config() }
    }

    public let engine: any LogEngine
    public let store: any ReadModelStore
    public let config: Config
    public let projector: Projector
    public let gateway: CommandGateway
    public let queries: OrderQueries
    /// StreamEvents' shared tail (one log reader for every caught-up subscriber).
    public let streamHub: StreamHub
    let logger: Logger

    public init(engine: any LogEngine, store: any ReadModelStore, config: Config = .defaults, logger: Logger) {
        self.engine = engine
        self.store = store
        self.config = config
        self.logger = logger
        projector = Projector(
            engine: engine, store: store, topics: config.topics, logger: logger, viewCacheCapacity: config.viewCacheCapacity,
            viewCacheMaxBytes: config.viewCacheMaxBytes)
        gateway = CommandGateway(
            engine: engine, store: store, projector: projector, topics: config.topics, resendAfter: config.resendCommandAfter,
            maxCommandsPerOrder: config.maxCommandsPerOrder)
        queries = OrderQueries(store: store, projector: projector, table: config.aggregateTable, logger: logger)
        // Ticks wake idle subscribers so their heartbeats go out within a fifth of the period.
        let tick = min(max(config.heartbeat / 5, .milliseconds(10)), .seconds(1))
        streamHub = StreamHub(
            engine: engine, topic: config.topics.aggregates, capacity: config.streamTailCapacity,
            maxBytes: config.streamTailMaxBytes, tick: tick, logger: logger)
    }

    public var topics: Topics { config.topics }

    /// Provisions the topics (retrying while the engine is unreachable), then runs every
    /// processor until cancelled.
    public func run() async throws {
        var backoff: Duration = .milliseconds(100)
        while true {
            do {
                try await config.topics.provision(on: engine)
                break
            } catch let error as LogError where error.code == .unavailable {
                logger.warning("the event store is unavailable; retrying in \(backoff)", metadata: ["error": "\(error)"])
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
        let topics = config.topics
        try await withThrowingDiscardingTaskGroup { group in
            let handler = CommandHandler(engine: engine, topics: topics, logger: logger)
            let publisher = IntegrationPublisher(engine: engine, topics: topics, logger: logger)
            if config.builtInAggregator {
                let aggregator = Aggregator(engine: engine, topics: topics, logger: logger)
                if config.fuseProcessors && !(engine is any DerivingLogEngine) {
                    let fused = FusedProcessors(
                        engine: engine, topics: topics, aggregator: aggregator, handler: handler, publisher: publisher, logger: logger)
                    group.addTask { try await fused.run() }
                } else {
                    group.addTask {
                        try await self.runDerivable([
                            (aggregator.run, aggregator.derivation), (handler.run, handler.derivation),
                            (publisher.run, publisher.derivation),
                        ])
                    }
                }
            } else {
                group.addTask { try await handler.run() }
                group.addTask { try await publisher.run() }
            }
            group.addTask { try await self.projector.run() }
            group.addTask { await self.streamHub.run() }
        }
    }

    /// Processors that consume the log and append what they derive. On an engine that can
    /// run them inside its appends, they consume the log only until all have caught up (a
    /// backlog left by an older build, say), then the engine takes them over and they stop.
    private func runDerivable(_ processors: [(run: @Sendable () async throws -> Void, derivation: LogDerivation)]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for processor in processors { group.addTask { try await processor.run() } }
            guard config.deriveInEngine, let deriving = engine as? any DerivingLogEngine else {
                try await group.waitForAll()
                return
            }
            var wait: Duration = .milliseconds(10)
            while true {
                do {
                    if try await deriving.startDerivations(processors.map(\.derivation)) { break }
                } catch {
                    logger.warning("could not hand the processors over to the engine; retrying", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: wait)
                wait = min(wait * 2, .milliseconds(500))
            }
            logger.debug("the aggregator, the command handler and the integration publisher run inside the log's appends")
            group.cancelAll()
            // The consumers end on cancellation (a batch they polled before the hand-over
            // fails to commit: the engine refuses their groups' offsets now).
            while let _ = try? await group.next() {}
        }
    }

    /// Opens a StreamEvents subscription (starting the shared tail on the first one).
    public func subscribe(start: EventSubscription.Start, filter: EventSubscription.Filter) async throws -> EventSubscription {
        await streamHub.ensureRunning()
        return try await EventSubscription.open(
            engine: engine, topics: config.topics, start: start, filter: filter, heartbeat: config.heartbeat, hub: streamHub,
            logger: logger)
    }
}
