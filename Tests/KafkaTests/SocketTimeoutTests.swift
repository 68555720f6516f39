@testable import EngineKafka
import Logging
import Testing

/// A request to a broker that stopped answering is given up after the engine's request
/// timeout: librdkafka's default `socket.timeout.ms` (60 s) let one hold a call longer.
@Suite struct SocketTimeoutTests {
    @Test func everyHandleGivesUpARequestAfterTheRequestTimeout() {
        var config = KafkaLogEngine.Config(brokers: "127.0.0.1:9092")
        config.requestTimeout = .seconds(7)
        let handles = [
            KafkaLogEngine.producerProperties(config, transactionalId: nil),
            KafkaLogEngine.producerProperties(config, transactionalId: "t"),
            KafkaLogEngine.consumerProperties(config, group: nil, partitionEOF: true, fetchWait: .milliseconds(10)),
            KafkaLogEngine.consumerProperties(config, group: "g", partitionEOF: false, fetchWait: .milliseconds(5), lazy: true),
        ]
        for properties in handles { #expect(properties["socket.timeout.ms"] == "7000") }
    }

    /// librdkafka refuses a transactional producer whose socket.timeout.ms is not 100 ms
    /// below its transaction.timeout.ms.
    @Test func aTransactionalProducerWithALongRequestTimeoutStarts() throws {
        var config = KafkaLogEngine.Config(brokers: "127.0.0.1:9092")
        config.requestTimeout = .seconds(120)
        let properties = KafkaLogEngine.producerProperties(config, transactionalId: "t")
        let client = try RDKafkaClient(kind: .producer, properties: properties, logger: Logger(label: "test"))
        client.destroy()
    }
}
