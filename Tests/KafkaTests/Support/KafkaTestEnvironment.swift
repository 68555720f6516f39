@testable import EngineKafka
import EventLog
import Foundation
import Logging
import Testing

/// What the Kafka tests need from the environment, and the tansu broker they start.
///
/// Tests against tansu need the librdkafka 2.16 of PyPI's confluent-kafka wheel at run
/// time (Debian's 2.0.2 misreads tansu's ApiVersions answer). Run them as:
///
///     LD_LIBRARY_PATH="$(Scripts/kafka-test-broker.sh env)" swift test --filter KafkaTests
///
/// Without it they are skipped, with that reason shown; with `ORDERS_REQUIRE_KAFKA=1`
/// the `environment` test fails instead, so CI cannot skip them by accident.
enum KafkaTestEnvironment {
    static let loadedVersion = KafkaLogEngine.librdkafkaVersion

    /// tansu needs librdkafka ≥ 2.1 (2.16 from the wheel is what the script provides).
    static let librdkafkaTalksToTansu: Bool = {
        let parts = loadedVersion.split(separator: ".").compactMap { Int($0.prefix(while: \.isNumber)) }
        guard parts.count >= 2 else { return false }
        return parts[0] > 2 || (parts[0] == 2 && parts[1] >= 1)
    }()

    static let required = ProcessInfo.processInfo.environment["ORDERS_REQUIRE_KAFKA"] == "1"

    static let skipReason: Comment = """
        tansu tests need librdkafka ≥ 2.1 at run time, loaded \(loadedVersion): run with \
        LD_LIBRARY_PATH="$(Scripts/kafka-test-broker.sh env)" (set ORDERS_REQUIRE_KAFKA=1 to fail instead of skip)
        """

    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = repositoryRoot.appendingPathComponent("Scripts/kafka-test-broker.sh").path

    static let logger: Logger = {
        var l = Logger(label: "kafka-tests")
        l.logLevel = ProcessInfo.processInfo.environment["ORDERS_KAFKA_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return l
    }()

    /// An engine config for tests: short timeouts so failures show quickly.
    static func config(brokers: String) -> KafkaLogEngine.Config {
        var c = KafkaLogEngine.Config(brokers: brokers)
        c.sessionTimeout = .seconds(3)
        c.requestTimeout = .seconds(10)
        c.deliveryTimeout = .seconds(10)
        c.groupIdPrefix = "test-"
        return c
    }

    /// A TCP port nothing listens on right now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func runScript(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// A tansu broker on a free 127.0.0.1 port, started and stopped (by pid) through
/// Scripts/kafka-test-broker.sh.
final class TansuBroker: Sendable {
    let port: Int
    let directory: String
    var brokers: String { "127.0.0.1:\(port)" }

    init(port: Int? = nil) throws {
        self.port = try port ?? KafkaTestEnvironment.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tansu-\(self.port)-\(UUID().uuidString.prefix(8))").path
    }

    /// Starts a broker on a free port.
    static func start() throws -> TansuBroker {
        let broker = try TansuBroker()
        try broker.start()
        return broker
    }

    func start() throws {
        let (status, output) = try KafkaTestEnvironment.runScript(["start", String(port), directory])
        guard status == 0 else {
            throw LogError(.unavailable, "could not start tansu on \(port): \(output)")
        }
    }

    func stop() {
        _ = try? KafkaTestEnvironment.runScript(["stop", directory])
    }

    /// Freezes the broker (SIGSTOP): nothing answers, as with a hung or cut-off broker,
    /// and unlike `stop` its memory storage (topics, producer ids) is kept for `resume`.
    func pause() throws { try send(SIGSTOP) }

    /// Lets a paused broker run again (SIGCONT).
    func resume() throws { try send(SIGCONT) }

    private func send(_ signal: Int32) throws {
        let text = try String(contentsOfFile: directory + "/tansu.pid", encoding: .utf8)
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, signal) == 0 else {
            throw LogError(.unavailable, "could not signal tansu (pid file: \(text))")
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` with a fresh tansu broker and an engine on it, then shuts both down.
func withTansu(
    configure: (inout KafkaLogEngine.Config) -> Void = { _ in },
    _ body: (TansuBroker, KafkaLogEngine) async throws -> Void
) async throws {
    let broker = try TansuBroker.start()
    defer { broker.stop() }
    var config = KafkaTestEnvironment.config(brokers: broker.brokers)
    configure(&config)
    let engine = try KafkaLogEngine(config: config, logger: KafkaTestEnvironment.logger)
    do {
        try await body(broker, engine)
    } catch {
        await engine.shutdown()
        throw error
    }
    await engine.shutdown()
}

/// A unique topic name per test.
func uniqueTopic(_ base: String = "t") -> String { "\(base)-\(UUID().uuidString.prefix(8).lowercased())" }

/// Polls a group member until it reports an assignment (or `timeout`), collecting any
/// records polled on the way.
func waitForAssignment(_ consumer: any GroupConsumer, timeout: Duration = .seconds(30)) async throws -> [Int] {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if case .assigned(let partitions) = try await consumer.poll(maxRecords: 100, timeout: .milliseconds(200)) {
            return partitions
        }
    }
    throw LogError(.unavailable, "no assignment within \(timeout)")
}

/// Reads from a reader until `count` records arrived (or `timeout`).
func read(_ reader: any LogReader, count: Int, timeout: Duration = .seconds(20)) async throws -> [LogRecord] {
    var all: [LogRecord] = []
    let deadline = ContinuousClock.now + timeout
    while all.count < count && ContinuousClock.now < deadline {
        all += try await reader.next(maxRecords: 1000, timeout: .milliseconds(500))
    }
    return all
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
