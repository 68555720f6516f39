import ArgumentParser
import EngineKafka
import EngineSQLite
import EventLog
import Foundation
import GRPCWire
import Logging
import OrderService
import ServiceLifecycle
import Synchronization
import UnixSignals

/// `orders-server`: the order service on the embedded engine (default) or Kafka.
@main
struct OrdersServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orders-server",
        abstract: "Event-sourced ride-hailing orders over gRPC (HTTP/2).",
        discussion: """
            Serves ridehailing.orders.v1.OrderService, grpc.health.v1.Health and server \
            reflection on one h2c port. Every option can also be set through the environment \
            variable named in its help; a command-line option wins over the environment, and \
            an environment value that does not parse is an error like a bad option. \
            SIGTERM, SIGINT or SIGHUP drain in-flight calls (for up to 10 s), then stop; \
            another one during the drain cancels the calls left and stops at once (exit 0 \
            either way).
            """)

    @Option(help: "Address to serve on, HOST:PORT; port 0 picks a free one. [env: ORDERS_LISTEN]")
    var listen = env("ORDERS_LISTEN") ?? "127.0.0.1:50051"

    @Option(help: "Directory of this server's data: the log and the read model on the embedded engine, the read model on Kafka. [env: ORDERS_DATA_DIR]")
    var dataDir = env("ORDERS_DATA_DIR") ?? "./data"

    @Option(help: "Event store engine: embedded (SQLite on local disk) or kafka. [env: ORDERS_ENGINE]")
    var engine: EngineKind = env("ORDERS_ENGINE").flatMap(EngineKind.init(rawValue:)) ?? .embedded

    @Option(help: "Partitions of each log; fixed once data exists; embedded engine only. [env: ORDERS_PARTITIONS] (default: \(Defaults.partitions))")
    var partitions: Int?

    @Option(help: "Largest request message accepted, in bytes (RESOURCE_EXHAUSTED above). [env: ORDERS_MAX_MESSAGE_BYTES]")
    var maxMessageBytes: Int = env("ORDERS_MAX_MESSAGE_BYTES").flatMap { Int($0) } ?? 4 << 20

    @Option(help: "Seconds a call without a deadline waits for its outcome (or GetOrder for its min_version); calls with a deadline wait up to it. [env: ORDERS_DEFAULT_TIMEOUT]")
    var defaultTimeout: Double = env("ORDERS_DEFAULT_TIMEOUT").flatMap { Double($0) } ?? 30

    @Option(help: "Commands one order records; past them, those it would reject are refused unrecorded (its state changes still go through). [env: ORDERS_MAX_COMMANDS_PER_ORDER]")
    var maxCommandsPerOrder: Int = env("ORDERS_MAX_COMMANDS_PER_ORDER").flatMap { Int($0) } ?? 100

    @Option(help: "trace, debug, info, notice, warning, error or critical. [env: ORDERS_LOG_LEVEL]")
    var logLevel: Logger.Level = env("ORDERS_LOG_LEVEL").flatMap(Logger.Level.init(rawValue:)) ?? .info

    // Options only one engine reads (--partitions above, the kafka ones below) are nil when
    // not given, so that validate() can refuse them with the other engine; their defaults
    // are in Defaults.

    @Option(help: "Kafka bootstrap servers, H:P[,H:P]. [env: ORDERS_KAFKA_BROKERS] (default: \(Defaults.kafkaBrokers))")
    var kafkaBrokers: String?

    @Option(help: "Prefix of the three topics' names. [env: ORDERS_KAFKA_TOPIC_PREFIX] (default: none)")
    var kafkaTopicPrefix: String?

    @Option(help: "Partitions of the topics this server creates. [env: ORDERS_KAFKA_PARTITIONS] (default: \(Defaults.kafkaPartitions))")
    var kafkaPartitions: Int?

    @Option(help: "Replication factor of the topics this server creates. [env: ORDERS_KAFKA_REPLICATION] (default: \(Defaults.kafkaReplication))")
    var kafkaReplication: Int?

    @Option(help: "Prefix of the consumer groups the instances share. [env: ORDERS_KAFKA_GROUP] (default: \(Defaults.kafkaGroup))")
    var kafkaGroup: String?

    @Option(help: "This instance's stable, unique id (in its Kafka client.id); default: random. [env: ORDERS_KAFKA_INSTANCE_ID]")
    var kafkaInstanceId: String?

    @Option(help: "librdkafka consumers shared by the StreamEvents subscribers behind the tail (each has threads and a broker connection). [env: ORDERS_KAFKA_CATCH_UP_READERS] (default: \(Defaults.kafkaCatchUpReaders))")
    var kafkaCatchUpReaders: Int?

    @Option(help: "Seconds a command waits for the broker to acknowledge its append before it is answered UNAVAILABLE (the append runs on; a retry with the same request_id is safe); also how long an update of an order unknown to this instance waits to learn whether it exists. [env: ORDERS_KAFKA_APPEND_PATIENCE] (default: \(Defaults.kafkaAppendPatience))")
    var kafkaAppendPatience: Double?

    @Option(help: "A librdkafka property key=value (TLS, SASL, ...); repeatable.")
    var kafkaProperty: [String] = []

    @Option(help: "ksqlDB's REST URL (--engine kafka only): ksqlDB runs the aggregation instead of the built-in aggregator. [env: ORDERS_KSQLDB_URL]")
    var ksqldbUrl: String?

    /// Never shown: the end-to-end tests fill the embedded log's "disk" with it (see
    /// `SQLiteLogEngine.Options.pageLimit`) and raise the number to give the space back.
    @Option(help: ArgumentHelp("Tests only: a file holding the most pages log.sqlite may have (no file or number: no limit).", visibility: .private))
    var testLogPageLimitFile: String?

    /// Never shown: the same for the read model's file.
    @Option(help: ArgumentHelp("Tests only: a file holding the most pages readmodel.sqlite may have (no file or number: no limit).", visibility: .private))
    var testReadModelPageLimitFile: String?

    /// The number in `file` each time it is asked, nil without one (the --test-*-page-limit-file flags).
    private static func pageLimit(from file: String) -> @Sendable () -> Int? {
        { (try? String(contentsOfFile: file, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
    }

    enum EngineKind: String, ExpressibleByArgument, CaseIterable {
        case embedded, kafka
    }

    /// Of the options that only one engine reads (nil when not given).
    enum Defaults {
        static let partitions = 10
        static let kafkaBrokers = "127.0.0.1:9092"
        static let kafkaPartitions = 10
        static let kafkaReplication = 1
        static let kafkaGroup = "orders-"
        static let kafkaCatchUpReaders = 4
        static let kafkaAppendPatience = 3.0
    }

    /// The options only one engine reads, and whether each was given (flag or environment).
    /// Given with the other engine they are refused: dropped silently, --kafka-brokers left
    /// a server on local disk whose operator believed it on Kafka.
    var engineOnlyOptions: [(flag: String, variable: String?, engine: EngineKind, given: Bool)] {
        [
            ("--partitions", "ORDERS_PARTITIONS", .embedded, partitions != nil),
            ("--kafka-brokers", "ORDERS_KAFKA_BROKERS", .kafka, kafkaBrokers != nil),
            ("--kafka-topic-prefix", "ORDERS_KAFKA_TOPIC_PREFIX", .kafka, kafkaTopicPrefix != nil),
            ("--kafka-partitions", "ORDERS_KAFKA_PARTITIONS", .kafka, kafkaPartitions != nil),
            ("--kafka-replication", "ORDERS_KAFKA_REPLICATION", .kafka, kafkaReplication != nil),
            ("--kafka-group", "ORDERS_KAFKA_GROUP", .kafka, kafkaGroup != nil),
            ("--kafka-instance-id", "ORDERS_KAFKA_INSTANCE_ID", .kafka, kafkaInstanceId != nil),
            ("--kafka-catch-up-readers", "ORDERS_KAFKA_CATCH_UP_READERS", .kafka, kafkaCatchUpReaders != nil),
            ("--kafka-append-patience", "ORDERS_KAFKA_APPEND_PATIENCE", .kafka, kafkaAppendPatience != nil),
            ("--kafka-property", nil, .kafka, !kafkaProperty.isEmpty),
        ]
    }

    /// Environment variables and how their values parse: a value that does not is refused,
    /// not replaced by the default (ORDERS_ENGINE=kafak once started the embedded engine).
    static let parsedEnvironment: [(name: String, expected: String, parses: @Sendable (String) -> Bool)] = [
        ("ORDERS_ENGINE", "embedded or kafka", { EngineKind(rawValue: $0) != nil }),
        ("ORDERS_PARTITIONS", "an integer", { Int($0) != nil }),
        ("ORDERS_MAX_MESSAGE_BYTES", "an integer", { Int($0) != nil }),
        ("ORDERS_MAX_COMMANDS_PER_ORDER", "an integer", { Int($0) != nil }),
        ("ORDERS_DEFAULT_TIMEOUT", "a number of seconds", { Double($0) != nil }),
        ("ORDERS_LOG_LEVEL", "trace, debug, info, notice, warning, error or critical", { Logger.Level(rawValue: $0) != nil }),
        ("ORDERS_KAFKA_PARTITIONS", "an integer", { Int($0) != nil }),
        ("ORDERS_KAFKA_REPLICATION", "an integer", { Int($0) != nil }),
        ("ORDERS_KAFKA_CATCH_UP_READERS", "an integer", { Int($0) != nil }),
        ("ORDERS_KAFKA_APPEND_PATIENCE", "a number of seconds", { Double($0) != nil }),
    ]

    mutating func validate() throws {
        // The environment fills what the command line left out. Not as the options' default
        // values: an optional option with one is deprecated (argument-parser 1.8), and these
        // stay nil when neither gives them (see engineOnlyOptions).
        partitions = partitions ?? env("ORDERS_PARTITIONS").flatMap { Int($0) }
        kafkaPartitions = kafkaPartitions ?? env("ORDERS_KAFKA_PARTITIONS").flatMap { Int($0) }
        kafkaReplication = kafkaReplication ?? env("ORDERS_KAFKA_REPLICATION").flatMap { Int($0) }
        kafkaCatchUpReaders = kafkaCatchUpReaders ?? env("ORDERS_KAFKA_CATCH_UP_READERS").flatMap { Int($0) }
        kafkaAppendPatience = kafkaAppendPatience ?? env("ORDERS_KAFKA_APPEND_PATIENCE").flatMap { Double($0) }
        kafkaBrokers = kafkaBrokers ?? env("ORDERS_KAFKA_BROKERS")
        kafkaTopicPrefix = kafkaTopicPrefix ?? env("ORDERS_KAFKA_TOPIC_PREFIX")
        kafkaGroup = kafkaGroup ?? env("ORDERS_KAFKA_GROUP")
        kafkaInstanceId = kafkaInstanceId ?? env("ORDERS_KAFKA_INSTANCE_ID")
        ksqldbUrl = ksqldbUrl ?? env("ORDERS_KSQLDB_URL")
        for variable in Self.parsedEnvironment {
            if let value = env(variable.name), !variable.parses(value) {
                throw ValidationError("\(variable.name)='\(value)' must be \(variable.expected)")
            }
        }
        for option in engineOnlyOptions where option.given && option.engine != engine {
            let source = option.variable.map { "\(option.flag) (or \($0))" } ?? option.flag
            throw ValidationError(
                "\(source) is for --engine \(option.engine.rawValue) only; --engine \(engine.rawValue) would ignore it")
        }
        if let partitions, !(1...1000).contains(partitions) { throw ValidationError("--partitions must be within 1...1000") }
        guard maxMessageBytes >= 1024 else { throw ValidationError("--max-message-bytes must be at least 1024") }
        guard maxCommandsPerOrder >= 2 else { throw ValidationError("--max-commands-per-order must be at least 2") }
        guard (0.1...3600).contains(defaultTimeout) else { throw ValidationError("--default-timeout must be within 0.1...3600 seconds") }
        _ = try hostPort()
        guard kafkaPartitions ?? 1 >= 1, kafkaReplication ?? 1 >= 1 else {
            throw ValidationError("--kafka-partitions and --kafka-replication must be at least 1")
        }
        if let kafkaCatchUpReaders, !(1...256).contains(kafkaCatchUpReaders) {
            throw ValidationError("--kafka-catch-up-readers must be within 1...256")
        }
        if let kafkaAppendPatience, !(0.1...3600).contains(kafkaAppendPatience) {
            throw ValidationError("--kafka-append-patience must be within 0.1...3600 seconds")
        }
        _ = try kafkaProperties()
        if let ksqldbUrl {
            guard engine == .kafka else {
                throw ValidationError("--ksqldb-url needs --engine kafka: ksqlDB aggregates Kafka topics, the embedded engine has none")
            }
            guard ksqldbUrl.hasPrefix("http://") || ksqldbUrl.hasPrefix("https://") else {
                throw ValidationError("--ksqldb-url must be an http:// or https:// URL, got '\(ksqldbUrl)'")
            }
        }
    }

    func kafkaProperties() throws -> [String: String] {
        var out: [String: String] = [:]
        for p in kafkaProperty {
            guard let eq = p.firstIndex(of: "="), eq != p.startIndex else {
                throw ValidationError("--kafka-property must be key=value, got '\(p)'")
            }
            out[String(p[..<eq])] = String(p[p.index(after: eq)...])
        }
        return out
    }

    func hostPort() throws -> (String, Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port)
        else { throw ValidationError("--listen (or ORDERS_LISTEN) must be HOST:PORT, got '\(listen)'") }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "orders-server")
        let created = try DataDirectory.claim(dataDir)
        let progress = StartupProgress()
        do {
            try await serve(logger: logger, progress: progress)
        } catch {
            // A start that failed before listening leaves no directory it made behind.
            if created && !progress.listened { DataDirectory.removeCreated(dataDir) }
            throw error
        }
    }

    private func serve(logger: Logger, progress: StartupProgress) async throws {
        let (host, port) = try hostPort()
        let log: any LogEngine
        let store: SQLiteReadModelStore
        var pipelineConfig = OrderPipeline.Config()
        pipelineConfig.maxCommandsPerOrder = maxCommandsPerOrder
        var close: @Sendable () async -> Void
        var ksqlDB: KsqlDBClient? = nil
        switch engine {
        case .embedded:
            pipelineConfig.topics = Topics(partitions: partitions ?? Defaults.partitions)
            // Only the aggregator looks records up by key, and only in order-aggregates.
            var options = SQLiteLogEngine.Options(keyIndexedTopics: [pipelineConfig.topics.aggregates])
            options.pageLimit = testLogPageLimitFile.map(Self.pageLimit(from:))
            let logPath = dataDir + "/" + EmbeddedEngine.logFileName
            let logExisted = FileManager.default.fileExists(atPath: logPath)
            let embedded = try await EmbeddedEngine.open(
                directory: dataDir, logger: logger, options: options, readModelPageLimit: testReadModelPageLimitFile.map(Self.pageLimit(from:)))
            (log, store) = (embedded.log, embedded.readModel)
            close = { await embedded.close() }
            // Local and at once: data written with another partition count stops the server
            // here, before it announces a port (on Kafka the pipeline provisions, retrying
            // while the brokers are away).
            do {
                try await pipelineConfig.topics.provision(on: embedded.log)
                // After a crash the read model is behind the log, never ahead: ahead, the
                // log lost what it had acknowledged, and serving would hide that.
                try await ReadModelAheadOfLog.check(embedded.readModel, against: embedded.log, topics: pipelineConfig.topics)
            } catch {
                await embedded.close()
                if let ahead = error as? ReadModelAheadOfLog {
                    // A log this start created (the old one deleted) goes too: left behind, an
                    // empty log would sit where the operator is told to restore the old one.
                    if !logExisted {
                        for file in DataDirectory.sqliteFiles(logPath) { try? FileManager.default.removeItem(atPath: file) }
                    }
                    let (log, readModel) = (EmbeddedEngine.logFileName, EmbeddedEngine.readModelFileName)
                    throw StartupError(
                        "--data-dir \(dataDir): \(ahead); \(log) is older than \(readModel) (restored from an older copy? "
                            + "\(log)-wal truncated or deleted?). Restore the log; or, accepting the loss, remove \(readModel), "
                            + "\(readModel)-wal and \(readModel)-shm to rebuild the read model from the log as it is")
                }
                if let mismatch = error as? PartitionCountMismatch {
                    throw StartupError(
                        "--data-dir \(dataDir) was written with \(mismatch.actual) partitions per log, and --partitions (or "
                            + "ORDERS_PARTITIONS; \(Defaults.partitions) when not given) asks for \(mismatch.configured): start "
                            + "with --partitions \(mismatch.actual) (records are placed by key hash modulo the count, so it cannot "
                            + "change once data exists; \(mismatch))")
                }
                throw error
            }
        case .kafka:
            // Kafka holds the logs; this instance keeps its own read model of every order.
            let brokers = kafkaBrokers ?? Defaults.kafkaBrokers
            let topicPrefix = kafkaTopicPrefix ?? ""
            var config = KafkaLogEngine.Config(brokers: brokers)
            config.replicationFactor = kafkaReplication ?? Defaults.kafkaReplication
            config.groupIdPrefix = kafkaGroup ?? Defaults.kafkaGroup
            if let kafkaInstanceId { config.instanceId = kafkaInstanceId }
            config.catchUpReaders = kafkaCatchUpReaders ?? Defaults.kafkaCatchUpReaders
            config.appendPatience = .milliseconds(Int((kafkaAppendPatience ?? Defaults.kafkaAppendPatience) * 1000))
            config.properties = try kafkaProperties()
            let kafka = try KafkaLogEngine(config: config, logger: logger)
            let readModel = try await SQLiteReadModelStore.open(path: dataDir + "/" + DataDirectory.kafkaReadModelFileName, logger: logger)
            (log, store) = (kafka, readModel)
            pipelineConfig.topics = Topics(prefix: topicPrefix, partitions: kafkaPartitions ?? Defaults.kafkaPartitions)
            close = {
                await readModel.close()
                await kafka.shutdown()
            }
            logger.info("kafka engine", metadata: ["brokers": "\(brokers)", "librdkafka": "\(KafkaLogEngine.librdkafkaVersion)"])
            if let ksqldbUrl {
                pipelineConfig.builtInAggregator = false
                let client = KsqlDBClient(config: .init(url: ksqldbUrl, topicPrefix: topicPrefix), logger: logger)
                ksqlDB = client
                pipelineConfig.aggregateTable = client
                logger.info(
                    "ksqlDB runs the aggregation (\(client.config.names.table)); the built-in aggregator is off",
                    metadata: ["ksqldb-url": "\(ksqldbUrl)"])
            }
        }
        let pipeline = OrderPipeline(engine: log, store: store, config: pipelineConfig, logger: logger)

        var serverConfig = GRPCServer.Config()
        serverConfig.host = host
        serverConfig.port = port
        serverConfig.maxReceiveMessageBytes = maxMessageBytes
        let service = OrderServiceDefinition(
            pipeline: pipeline, logger: logger, defaultTimeout: .milliseconds(Int64(defaultTimeout * 1000)))
        let server = GRPCServer(
            config: serverConfig, services: [service.definition], descriptorSets: [OrderServiceDefinition.descriptorSet],
            logger: logger)
        server.health.setStatus(.notServing, for: "")
        server.health.setStatus(.notServing, for: OrderServiceDefinition.serviceName)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let ksqlDB {
            // Done once provisioned; a failure stops the server.
            services.append(
                .init(
                    service: KsqlDBProvisioning(client: ksqlDB, engine: log, topics: pipelineConfig.topics, logger: logger),
                    successTerminationBehavior: .ignore))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services + [
                    .init(service: PipelineService(pipeline: pipeline)),
                    .init(
                        service: RPCService(
                            server: server, pipeline: pipeline, logger: logger, dataDir: dataDir, listen: listen, progress: progress)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint, .sighup],
                logger: logger))
        do {
            try await group.run()
        } catch {
            await close()
            throw error
        }
        await close()
        logger.info("stopped")
    }
}

/// The processors, cancelled once the RPC server has drained (the group stops services
/// in reverse order).
struct PipelineService: Service {
    let pipeline: OrderPipeline
    func run() async throws {
        try await cancelWhenGracefulShutdown { try await pipeline.run() }
    }
}

/// Creates the topics (cleanup.policy=delete: ksqlDB would make the CTAS sink compacted),
/// then sends Scripts/ksqldb/queries.sql's statements to ksqlDB, retrying while either is
/// unreachable. Until the table's query runs, commands wait in order-commands-and-events.
struct KsqlDBProvisioning: Service {
    let client: KsqlDBClient
    let engine: any LogEngine
    let topics: Topics
    let logger: Logger

    func run() async throws {
        var backoff: Duration = .milliseconds(100)
        while true {
            do {
                try await topics.provision(on: engine)
                break
            } catch let error as LogError where error.code == .unavailable {
                logger.warning("the event store is unavailable; retrying in \(backoff)", metadata: ["error": "\(error)"])
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
        let names = client.config.names
        try await client.provision(statements: KsqlDBClient.statements(topics: topics, names: names))
        logger.info("ksqlDB provisioned: \(names.stream) and \(names.table) run in ksqlDB")
    }
}

/// The gRPC server: NOT_SERVING until the read model has caught up, then SERVING; on
/// shutdown NOT_SERVING again, GOAWAY, and in-flight calls get the grace period.
struct RPCService: Service {
    let server: GRPCServer
    let pipeline: OrderPipeline
    let logger: Logger
    let dataDir: String
    let listen: String
    let progress: StartupProgress

    func run() async throws {
        let port: Int
        do {
            port = try await server.start()
        } catch {
            throw StartupError("cannot listen on \(listen) (--listen or ORDERS_LISTEN): \(error)")
        }
        progress.markListened()
        logger.info("listening", metadata: ["port": "\(port)", "data-dir": "\(dataDir)"])
        // Tests and scripts read the bound port from this line.
        FileHandle.standardOutput.write(Data("orders-server listening on port \(port)\n".utf8))
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await watchHealth() }
                group.addTask { await endDrainOnSecondSignal() }
                try await server.run()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            logger.info("draining")
            server.health.setStatus(.notServing, for: "")
            server.health.setStatus(.notServing, for: OrderServiceDefinition.serviceName)
            server.beginGracefulShutdown()
        }
    }
}

extension RPCService {
    /// The group drains on the first SIGTERM, SIGINT or SIGHUP and ignores the next ones,
    /// but an operator who signals again does not want to wait out the grace period: the
    /// calls left are cancelled and the server stops now (the engine still closes as usual).
    func endDrainOnSecondSignal() async {
        // Trapped once draining, so that the first signal (the group's) is not counted.
        guard (try? await gracefulShutdown()) != nil else { return }
        for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup) {
            logger.warning("\(signal) while draining: stopping now, cancelling the calls in flight")
            server.endGracePeriod()
            return
        }
    }

    /// SERVING while the read model has caught up, the engine answers and neither the log
    /// nor the read model knows it cannot write (a full disk: reads still work, every
    /// command fails); NOT_SERVING otherwise (a broker that went away), and back again by
    /// itself once that is over. Each change is logged once, with its reason.
    func watchHealth() async {
        var serving = false
        // The reason last logged while not serving (none at start-up, before the first SERVING).
        var reported: String?
        // The engine calls of the last look, while they have not answered: a call blocked on
        // a broker that went away runs to librdkafka's request timeout (30 s), whatever
        // cancellation, so it is waited for at most 2 s a look (`probes`), and never twice.
        var probe: Task<String?, Never>?
        // A task answering nil ("no problem") gives `.some(nil)`; no answer in time, nil.
        let probes = BoundedWait<String?>()
        while true {
            var problem: String?
            if let failure = await pipeline.store.writeFailure() {
                problem = "the read model cannot write: \(failure.message)"
            } else if !pipeline.projector.isReady {
                problem = "the read model is catching up with the log"
            } else {
                let engine = pipeline.engine
                let topic = pipeline.topics.aggregates
                let running = probe ?? Task { await Self.engineProblem(engine, topic: topic) }
                if let answer = await probes.value(of: running, within: .seconds(2)) {
                    problem = answer
                    probe = nil
                } else {
                    problem = "the event store does not answer"
                    probe = running
                }
            }
            if let problem {
                if serving || (reported != nil && reported != problem) {
                    logger.warning("not serving: \(problem)")
                    reported = problem
                }
            } else if !serving {
                logger.info("serving")
                reported = nil
            }
            if (problem == nil) != serving {
                serving = problem == nil
                let status: HealthStatus.ServingStatus = serving ? .serving : .notServing
                server.health.setStatus(status, for: "")
                server.health.setStatus(status, for: OrderServiceDefinition.serviceName)
            }
            do {
                try await Task.sleep(for: serving ? .seconds(1) : .milliseconds(20))
            } catch {
                return  // cancelled: the server has stopped
            }
        }
    }

    /// Why the engine cannot take commands, or nil: it knows it cannot write (a full
    /// disk; it may try a small write to learn that it is over), or it does not answer.
    private static func engineProblem(_ engine: any LogEngine, topic: String) async -> String? {
        if let failure = await engine.writeFailure() { return "the event store cannot write: \(failure.message)" }
        return (try? await engine.endOffsets(topic)) == nil ? "the event store does not answer" : nil
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

private func env(_ name: String) -> String? {
    ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
}

/// Whether the server got as far as listening (a start that failed before leaves nothing).
final class StartupProgress: Sendable {
    private let state = Mutex(false)
    var listened: Bool { state.withLock { $0 } }
    func markListened() { state.withLock { $0 = true } }
}
