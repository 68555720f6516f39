@testable import EngineKafka
import Logging
import Synchronization
import Testing

/// librdkafka's log lines as the engine passes them on.
@Suite struct LibrdkafkaLogTests {
    @Test("a configuration warning every producer repeats is logged at info once per process")
    func configurationWarningOnce() throws {
        let lines = CapturedLines()
        let logger = Logger(label: "captured") { _ in CapturingHandler(lines: lines) }
        // A consumer-only property on producers (as `--kafka-property` passes it to every
        // handle): librdkafka warns once per handle, and claims make several handles.
        let properties = ["bootstrap.servers": "127.0.0.1:1", "check.crcs": "true"]
        for _ in 0..<3 {
            try RDKafkaClient(kind: .producer, properties: properties, logger: logger).destroy()
        }
        let warnings = lines.all.filter { $0.message.contains("check.crcs") }
        #expect(warnings.count == 3)
        #expect(warnings.filter { $0.level == .info }.count == 1)
    }

    @Test("warnings that every handle repeats while a broker is down are logged once a second")
    func repeatedWarningsAreThrottled() async throws {
        let lines = CapturedLines()
        let logger = Logger(label: "captured") { _ in CapturingHandler(lines: lines) }
        // Nothing listens on port 1: every handle fails to connect, again and again.
        let properties = ["bootstrap.servers": "127.0.0.1:1", "reconnect.backoff.ms": "10", "reconnect.backoff.max.ms": "10"]
        let clients = try (0..<8).map { _ in try RDKafkaClient(kind: .producer, properties: properties, logger: logger) }
        try await Task.sleep(for: .seconds(2))
        for client in clients { client.destroy() }
        let warnings = lines.all.filter { $0.level == .warning && $0.message.hasPrefix("librdkafka") }
        // Eight handles reconnecting every 10 ms log hundreds of lines a second unthrottled.
        #expect(!warnings.isEmpty)
        #expect(warnings.count <= 8, "\(warnings.count) warnings in 2 s")
    }
}

final class CapturedLines: Sendable {
    private let lines = Mutex<[(level: Logger.Level, message: String)]>([])
    func add(_ level: Logger.Level, _ message: String) { lines.withLock { $0.append((level, message)) } }
    var all: [(level: Logger.Level, message: String)] { lines.withLock { $0 } }
}

struct CapturingHandler: LogHandler {
    let lines: CapturedLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        lines.add(event.level, event.message.description)
    }
}
