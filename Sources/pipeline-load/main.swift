import ArgumentParser
import EngineKafka
import EngineSQLite
import EventLog
import Foundation
import Logging
import OrderDomain

/// Drives the embedded pipeline directly (no RPC): N commands in flight, each appended,
/// decided, aggregated and projected before its caller gets the outcome. Two uses:
/// - a benchmark: commands/s and latency percentiles (Scripts/bench-pipeline.sh);
/// - the crash test's child: `--acks` prints one line per acknowledged outcome, so the
///   parent can kill -9 it at any moment and check every acknowledged line afterwards.
@main
struct PipelineLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline-load", abstract: "Load the embedded order pipeline and measure it.")

    @Option(help: "Data directory (created if missing).") var dataDir: String
    @Option(help: "Commands in flight.") var inFlight = 64
    @Option(help: "Stop after this many seconds.") var seconds: Double = 10
    @Option(help: "Stop after this many commands (0: no limit).") var commands = 0
    @Flag(help: "Print 'ACK <request-id> <order-id> <event-type> <version>' per outcome.") var acks = false
    @Flag(help: "Only PlaceOrder (default: each order placed, accepted, completed).") var placeOnly = false
    @Option(help: "Run on Kafka at these brokers (the read model stays in --data-dir).") var kafkaBrokers: String?
    @Option(help: "Topic and group prefix on Kafka.") var kafkaPrefix = "bench-"
    @Option(help: "Kafka: producer linger.ms.") var kafkaLingerMs: Int?
    @Option(help: "Kafka: consumer fetch.wait.max.ms.") var kafkaFetchWaitMs: Int?
    @Option(help: "Kafka: session.timeout.ms of the consumer groups (tansu completes a join after about half of it).")
    var kafkaSessionTimeoutMs = 3000
    @Option(help: "Kafka: extra librdkafka property key=value (repeatable).") var kafkaProperty: [String] = []
    @Option(help: "Kafka: partitions per topic (a new prefix: topics that exist keep theirs).") var kafkaPartitions = 10
    @Flag(help: "Kafka: run the aggregator, the command handler and the integration publisher as three consumers, not one.")
    var kafkaUnfused = false
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).") var logLevel = "warning"
    @Flag(help: "Kafka: start the clock at once, not after a first command went through (the group joins then count).")
    var noWarmUp = false

    func run() async throws {
        var logger = Logger(label: "pipeline-load")
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown --log-level \(logLevel)") }
        logger.logLevel = level
        let log: any LogEngine
        let store: any ReadModelStore
        let close: () async -> Void
        var writerReport: () async -> String = { "" }
        var config = OrderPipeline.Config()
        config.fuseProcessors = !kafkaUnfused
        if let kafkaBrokers {
            var kafkaConfig = KafkaLogEngine.Config(brokers: kafkaBrokers)
            kafkaConfig.groupIdPrefix = kafkaPrefix
            if let kafkaLingerMs { kafkaConfig.linger = .milliseconds(kafkaLingerMs) }
            if let kafkaFetchWaitMs { kafkaConfig.fetchWait = .milliseconds(kafkaFetchWaitMs) }
            kafkaConfig.sessionTimeout = .milliseconds(kafkaSessionTimeoutMs)
            for property in kafkaProperty {
                guard let eq = property.firstIndex(of: "=") else { throw ValidationError("--kafka-property needs key=value") }
                kafkaConfig.properties[String(property[..<eq])] = String(property[property.index(after: eq)...])
            }
            let kafka = try KafkaLogEngine(config: kafkaConfig, logger: logger)
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            let readModel = try await SQLiteReadModelStore.open(path: dataDir + "/readmodel-kafka.sqlite", logger: logger)
            config.topics = Topics(prefix: kafkaPrefix, partitions: kafkaPartitions)
            (log, store) = (kafka, readModel)
            close = {
                await readModel.close()
                await kafka.shutdown()
            }
        } else {
            let engine = try await EmbeddedEngine.open(
                directory: dataDir, logger: logger, options: .init(keyIndexedTopics: [Topics().aggregates]))
            (log, store) = (engine.log, engine.readModel)
            close = { await engine.close() }
            writerReport = {
                let s = await engine.log.writerStatistics()
                let ms = { (d: Duration) in d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000 }
                return " log-commits=\(s.commits) log-records=\(s.records) fsyncs=\(engine.log.syncer.syncCount)"
                    + " insert-ms=\(ms(s.insertTime)) commit-ms=\(ms(s.commitTime))"
            }
        }
        let pipeline = OrderPipeline(engine: log, store: store, config: config, logger: logger)
        let processors = Task { try await pipeline.run() }
        while !pipeline.projector.isReady { try await Task.sleep(for: .milliseconds(10)) }
        if kafkaBrokers != nil && !noWarmUp {
            // One order through every processor first: the consumer groups form then
            // (seconds on tansu), which is start-up, not the pipeline's latency.
            let t0 = ContinuousClock.now
            let request = OrderIdentity.random()
            _ = try await pipeline.gateway.submit(
                OrderCommand(
                    commandId: request, orderId: OrderIdentity.orderId(forRequest: request), expectedVersion: 0,
                    kind: .place(riderId: OrderIdentity.random(), price: "1.00", route: [
                        Waypoint(address: "A", lat: 50.45, lon: 30.52), Waypoint(address: "B", lat: 50.40, lon: 30.61),
                    ])),
                timeout: .seconds(60))
            let d = ContinuousClock.now - t0
            FileHandle.standardError.write(Data("warm-up (first command, groups joining): \(d)\n".utf8))
        }

        let deadline = ContinuousClock.now + .seconds(seconds)
        let counter = Counter(limit: commands)
        let started = ContinuousClock.now
        let cpuAtStart = processCPUSeconds()
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<inFlight {
                group.addTask {
                    var mine: [Double] = []
                    // Each worker walks orders through their lifecycle: place, accept, complete.
                    while ContinuousClock.now < deadline {
                        let request = OrderIdentity.random()
                        let orderId = OrderIdentity.orderId(forRequest: request)
                        let steps: [(String, Int, OrderCommand.Kind)] = [
                            (request, 0, .place(riderId: OrderIdentity.random(), price: "12.34", route: [
                                Waypoint(address: "A", lat: 50.45, lon: 30.52), Waypoint(address: "B", lat: 50.40, lon: 30.61),
                            ])),
                            (OrderIdentity.random(), 1, .accept(driverId: OrderIdentity.random())),
                            (OrderIdentity.random(), 2, .complete),
                        ]
                        for (commandId, version, kind) in placeOnly ? Array(steps.prefix(1)) : steps {
                            guard counter.take() else { return mine }
                            let t0 = ContinuousClock.now
                            let outcome = try await pipeline.gateway.submit(
                                OrderCommand(commandId: commandId, orderId: orderId, expectedVersion: version, kind: kind),
                                timeout: .seconds(30))
                            let d = ContinuousClock.now - t0
                            mine.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
                            if acks {
                                // Unbuffered: a line printed is a line the parent sees, kill -9 or not.
                                FileHandle.standardOutput.write(
                                    Data("ACK \(commandId) \(orderId) \(outcome.event.typeName) \(outcome.event.version)\n".utf8))
                            }
                        }
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let elapsed = ContinuousClock.now - started
        let cpu = processCPUSeconds() - cpuAtStart
        let writer = await writerReport()
        processors.cancel()
        _ = await processors.result
        await close()

        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let sorted = latencies.sorted()
        func pct(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let line = String(
            format: "commands=%d seconds=%.2f commands/s=%.0f p50=%.2fms p99=%.2fms p99.9=%.2fms in-flight=%d cpu-us/command=%.0f",
            sorted.count, secs, Double(sorted.count) / secs, pct(0.5), pct(0.99), pct(0.999), inFlight,
            sorted.isEmpty ? 0 : cpu * 1e6 / Double(sorted.count)) + writer
        if acks { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
    }
}

/// User plus system CPU time of this whole process (pipeline and load generator) so far:
/// on a shared machine, CPU per command is steadier than commands per second.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Hands out at most `limit` permits (0: unlimited) across tasks.
final class Counter: @unchecked Sendable {
    // @unchecked: `taken` is guarded by `lock`.
    private let lock = NSLock()
    private var taken = 0
    private let limit: Int
    init(limit: Int) { self.limit = limit }
    func take() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if limit > 0, taken >= limit { return false }
        taken += 1
        return true
    }
}
