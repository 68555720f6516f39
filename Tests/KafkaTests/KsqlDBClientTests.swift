import EngineKafka
import EventLog
import Foundation
import Logging
import Testing

/// KsqlDBClient against a local fake that answers in ksqlDB's documented REST formats
/// (docs.ksqldb.io: "/ksql endpoint", "/query endpoint"). No real ksqlDB is involved.
@Suite("KsqlDB client against a fake ksqlDB REST server", .serialized)
struct KsqlDBClientTests {
    typealias R = KsqlDBFakeServer.Response

    static let logger = Logger(label: "ksqldb-test")

    func client(_ url: String, budget: Duration = .seconds(5)) -> KsqlDBClient {
        var config = KsqlDBClient.Config(url: url)
        config.requestTimeout = .seconds(5)
        config.connectTimeout = .seconds(1)
        config.unreachableRetryBudget = budget
        config.initialBackoff = .milliseconds(20)
        config.maxBackoff = .milliseconds(100)
        return KsqlDBClient(config: config, logger: Self.logger)
    }

    static func success(_ statement: String, message: String) -> R {
        let body: [String: Any] = [
            "@type": "currentStatus", "statementText": statement, "commandId": "stream/`X`/create",
            "commandStatus": ["status": "SUCCESS", "message": message, "queryId": NSNull()],
            "commandSequenceNumber": 2, "warnings": [Any](),
        ]
        return R(status: 200, body: String(decoding: try! JSONSerialization.data(withJSONObject: [body]), as: UTF8.self))
    }

    static func statementError(_ statement: String, code: Int = 40001, message: String) -> R {
        let body: [String: Any] = [
            "@type": "statement_error", "error_code": code, "message": message, "statementText": statement,
            "entities": [Any](),
        ]
        return R(status: 400, body: String(decoding: try! JSONSerialization.data(withJSONObject: body), as: UTF8.self))
    }

    /// Checks one recorded /ksql request: path, headers, the exact statement, the properties.
    func expectKsqlRequest(_ request: KsqlDBFakeServer.Request, statement: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(request.method == "POST", sourceLocation: sourceLocation)
        #expect(request.path == "/ksql", sourceLocation: sourceLocation)
        #expect(request.headers["content-type"] == "application/vnd.ksql.v1+json", sourceLocation: sourceLocation)
        #expect(request.headers["accept"] == "application/vnd.ksql.v1+json", sourceLocation: sourceLocation)
        let json = request.json as? [String: Any]
        #expect(json?["ksql"] as? String == statement, sourceLocation: sourceLocation)
        let props = json?["streamsProperties"] as? [String: String]
        #expect(props?["ksql.streams.auto.offset.reset"] == "earliest", sourceLocation: sourceLocation)
        #expect(props?["ksql.streams.cache.max.bytes.buffering"] == "0", sourceLocation: sourceLocation)
        #expect(Set(json?.keys.map { $0 } ?? []) == ["ksql", "streamsProperties"], sourceLocation: sourceLocation)
    }

    // MARK: Statements

    @Test func statementsMatchQueriesSQL() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/ksqldb/queries.sql")
        let text = try String(contentsOf: file, encoding: .utf8)
        let code = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("--") }.joined(separator: "\n")
        func normalize(_ s: String) -> String {
            s.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        }
        let fromFile = code.split(separator: ";").map { normalize(String($0)) }.filter { !$0.isEmpty }.map { $0 + ";" }
        let fromClient = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: "")).map(normalize)
        #expect(fromFile == fromClient)
        #expect(fromClient.count == 2)
        #expect(fromClient[0].hasPrefix("CREATE STREAM IF NOT EXISTS ORDER_COMMANDS_AND_EVENTS ( ORDER_ID STRING KEY, TYPE STRING, SUB_TYPE STRING, DETAILS STRING )"))
        #expect(fromClient[1].hasPrefix("CREATE TABLE IF NOT EXISTS ORDER_AGGREGATES WITH ( KAFKA_TOPIC='order-aggregates', PARTITIONS=10, VALUE_FORMAT='JSON' ) AS SELECT"))
        for column in [
            "LATEST_BY_OFFSET(TYPE) AS LATEST_TYPE", "LATEST_BY_OFFSET(SUB_TYPE) AS LATEST_SUB_TYPE",
            "LATEST_BY_OFFSET(DETAILS) AS LATEST_DETAILS", "COLLECT_LIST(TYPE) AS TYPE_LIST",
            "COLLECT_LIST(SUB_TYPE) AS SUB_TYPE_LIST", "COLLECT_LIST(DETAILS) AS DETAILS_LIST",
            "GROUP BY ORDER_ID EMIT CHANGES;",
        ] {
            #expect(fromClient[1].contains(column), "\(column)")
        }
    }

    @Test func statementsUseTheTopicPrefixAndPartitions() {
        let s = KsqlDBClient.statements(topics: Topics(prefix: "t7-", partitions: 3), names: .init(topicPrefix: "t7-"))
        #expect(s[0].contains("KAFKA_TOPIC='t7-order-commands-and-events'"))
        #expect(s[0].contains("PARTITIONS=3,"))
        #expect(s[1].contains("KAFKA_TOPIC='t7-order-aggregates'"))
        #expect(s[1].contains("PARTITIONS=3,"))
    }

    /// Two deployments with different prefixes on one ksqlDB must not share the stream and
    /// the table (IF NOT EXISTS would quietly keep the first one's, reading its topics).
    @Test func objectNamesCarryTheTopicPrefix() {
        let plain = KsqlDBClient.ObjectNames(topicPrefix: "")
        #expect(plain.stream == "ORDER_COMMANDS_AND_EVENTS")
        #expect(plain.table == "ORDER_AGGREGATES")
        let staging = KsqlDBClient.ObjectNames(topicPrefix: "staging.eu-")
        #expect(staging.stream == "STAGING_EU_ORDER_COMMANDS_AND_EVENTS")
        #expect(staging.table == "STAGING_EU_ORDER_AGGREGATES")
        #expect(KsqlDBClient.ObjectNames(topicPrefix: "7-").table == "`7_ORDER_AGGREGATES`")
        let s = KsqlDBClient.statements(topics: Topics(prefix: "staging.eu-"), names: staging)
        #expect(s[0].hasPrefix("CREATE STREAM IF NOT EXISTS STAGING_EU_ORDER_COMMANDS_AND_EVENTS ("))
        #expect(s[1].hasPrefix("CREATE TABLE IF NOT EXISTS STAGING_EU_ORDER_AGGREGATES WITH ("))
        #expect(s[1].contains("FROM STAGING_EU_ORDER_COMMANDS_AND_EVENTS\n"))
        #expect(KsqlDBClient.Config(url: "http://x", topicPrefix: "staging.eu-").names == staging)
        #expect(KsqlDBClient.Config(url: "http://x").names == plain)
    }

    @Test func pullAggregateQueriesThePrefixedTable() async throws {
        let body = String(
            decoding: try JSONSerialization.data(withJSONObject: [["header": ["queryId": "q", "schema": Self.schema]]]), as: UTF8.self)
        let server = try KsqlDBFakeServer(script: [R(status: 200, body: body)])
        defer { server.stop() }
        var config = KsqlDBClient.Config(url: server.url, topicPrefix: "staging-")
        config.pullQueryTimeout = .seconds(5)
        _ = try await KsqlDBClient(config: config, logger: Self.logger).pullAggregate(orderId: "o-1")
        let json = server.requests.first?.json as? [String: Any]
        #expect(json?["ksql"] as? String == "SELECT * FROM STAGING_ORDER_AGGREGATES WHERE ORDER_ID = 'o-1';")
    }

    // MARK: Provisioning

    @Test func provisionSendsEachStatementWithTheProperties() async throws {
        let statements = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: ""))
        let server = try KsqlDBFakeServer(script: [
            Self.success(statements[0], message: "Stream created"),
            Self.success(statements[1], message: "Created query with ID CTAS_ORDER_AGGREGATES_1"),
        ])
        defer { server.stop() }
        try await client(server.url).provision(statements: statements)
        let requests = server.requests
        #expect(requests.count == 2)
        guard requests.count == 2 else { return }
        expectKsqlRequest(requests[0], statement: statements[0])
        expectKsqlRequest(requests[1], statement: statements[1])
    }

    @Test func alreadyExistsCountsAsSuccess() async throws {
        let statements = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: ""))
        let server = try KsqlDBFakeServer(script: [
            Self.statementError(
                statements[0], message: "Cannot add stream 'ORDER_COMMANDS_AND_EVENTS': A stream with the same name already exists"),
            R(status: 200, body: #"[{"@type":"warning_entity","statementText":"x","message":"Cannot add table 'ORDER_AGGREGATES': A table with the same name already exists"}]"#),
        ])
        defer { server.stop() }
        try await client(server.url).provision(statements: statements)
        #expect(server.requests.count == 2)
    }

    /// "Already exists" is success only for an object of the statement's own kind: a stream
    /// holding the table's name means the table will never exist.
    @Test func alreadyExistsOfTheOtherKindIsAConflict() async throws {
        let statements = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: ""))
        let server = try KsqlDBFakeServer(script: [
            Self.success(statements[0], message: "Stream created"),
            Self.statementError(
                statements[1], message: "Cannot add table 'ORDER_AGGREGATES': A stream with the same name already exists"),
        ])
        defer { server.stop() }
        do {
            try await client(server.url).provision(statements: statements)
            Issue.record("provision accepted a stream where the table should be")
        } catch {
            #expect(error.kind == .rejected)
            #expect(error.message.contains("A stream with the same name already exists"))
            #expect(error.statement == statements[1])
        }
        #expect(server.requests.count == 2)
    }

    @Test func statementErrorNamesTheStatementAndKsqlDBsMessage() async throws {
        let statements = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: ""))
        let server = try KsqlDBFakeServer(script: [
            Self.success(statements[0], message: "Stream created"),
            Self.statementError(statements[1], code: 40001, message: "Invalid Partition count: topic has 3 partitions, 10 requested"),
        ])
        defer { server.stop() }
        do {
            try await client(server.url).provision(statements: statements)
            Issue.record("provision succeeded on a statement_error")
        } catch {
            #expect(error.kind == .rejected)
            #expect(error.errorCode == 40001)
            #expect(error.statement == statements[1])
            #expect(error.message.contains("Invalid Partition count"))
            #expect(error.description.contains("CREATE TABLE IF NOT EXISTS ORDER_AGGREGATES"))
        }
        #expect(server.requests.count == 2)
    }

    @Test func commandStatusErrorFails() async throws {
        let server = try KsqlDBFakeServer(script: [
            R(status: 200, body: #"[{"@type":"currentStatus","statementText":"x","commandId":"c","commandStatus":{"status":"ERROR","message":"Could not write the statement"},"commandSequenceNumber":3}]"#)
        ])
        defer { server.stop() }
        await #expect(throws: KsqlDBError.self) {
            try await client(server.url).provision(statements: ["CREATE STREAM S (A STRING) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');"])
        }
    }

    @Test func retriesWhileKsqlDBAnswers503() async throws {
        let statement = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: ""))[0]
        let server = try KsqlDBFakeServer(script: [
            R(status: 503, body: #"{"@type":"generic_error","error_code":50300,"message":"KSQL is not yet ready to serve requests."}"#),
            R(status: 503, body: #"{"@type":"generic_error","error_code":50300,"message":"KSQL is not yet ready to serve requests."}"#),
            Self.success(statement, message: "Stream created"),
        ])
        defer { server.stop() }
        try await client(server.url).provision(statements: [statement])
        let requests = server.requests
        #expect(requests.count == 3)
        for r in requests { expectKsqlRequest(r, statement: statement) }
    }

    /// A ksqlDB (or a proxy before it) that accepts and then closes without answering is
    /// starting, like one that refuses: retried within the budget.
    @Test func retriesWhenTheConnectionIsDropped() async throws {
        let statement = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: ""))[0]
        let server = try KsqlDBFakeServer(script: [.drop, .drop, Self.success(statement, message: "Stream created")])
        defer { server.stop() }
        try await client(server.url).provision(statements: [statement])
        let requests = server.requests
        #expect(requests.count == 3)
        for r in requests { expectKsqlRequest(r, statement: statement) }
    }

    /// The last wait is cut to what is left of the budget, so the budget is used up; the
    /// message says how long it really took.
    @Test func retriesUntilTheWholeBudgetIsSpent() async throws {
        let gone = try KsqlDBFakeServer(script: [])
        let url = gone.url
        gone.stop()
        var config = KsqlDBClient.Config(url: url)
        config.connectTimeout = .seconds(1)
        config.unreachableRetryBudget = .milliseconds(1500)
        config.initialBackoff = .milliseconds(500)
        config.maxBackoff = .seconds(1)
        let start = ContinuousClock.now
        do {
            try await KsqlDBClient(config: config, logger: Self.logger)
                .provision(statements: ["CREATE STREAM X (A STRING) WITH (KAFKA_TOPIC='x', VALUE_FORMAT='JSON');"])
            Issue.record("provision succeeded with nothing listening")
        } catch {
            let elapsed = (ContinuousClock.now - start) / .seconds(1)
            // Attempts at 0, 0.5 and 1.5 s (the second wait cut from 1 s to what is left).
            #expect(elapsed >= 1.5)
            #expect(elapsed < 3)
            #expect(error.message.contains("3 attempts"), "\(error.message)")
            let reported = error.message.firstMatch(of: /gave up after ([0-9.]+) s/).flatMap { Double($0.1) }
            #expect(reported != nil && abs(reported! - elapsed) < 0.2, "\(error.message) after \(elapsed) s")
        }
    }

    @Test func unreachableGivesUpAfterTheBudget() async throws {
        // A port with nothing listening: bind a server, note its port, stop it.
        let gone = try KsqlDBFakeServer(script: [])
        let url = gone.url
        gone.stop()
        let start = ContinuousClock.now
        do {
            try await client(url, budget: .milliseconds(300)).provision(statements: ["CREATE STREAM X (A STRING) WITH (KAFKA_TOPIC='x', VALUE_FORMAT='JSON');"])
            Issue.record("provision succeeded with nothing listening")
        } catch {
            #expect(error.kind == .unreachable)
            #expect(error.statement.hasPrefix("CREATE STREAM X"))
        }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    // MARK: Pull queries

    static let schema =
        "`ORDER_ID` STRING KEY, `LATEST_TYPE` STRING, `LATEST_SUB_TYPE` STRING, `LATEST_DETAILS` STRING, `TYPE_LIST` ARRAY<STRING>, `SUB_TYPE_LIST` ARRAY<STRING>, `DETAILS_LIST` ARRAY<STRING>"

    @Test func pullAggregateDecodesTheRow() async throws {
        let header = ["header": ["queryId": "query_1", "schema": Self.schema]]
        let row: [String: Any] = [
            "row": [
                "columns": [
                    "o-1", "EVENT", "OrderPlacedEvent", #"{"v":1}"#, ["COMMAND", "EVENT"], ["PlaceOrderCommand", "OrderPlacedEvent"],
                    [#"{"c":1}"#, #"{"v":1}"#],
                ]
            ]
        ]
        let body = String(decoding: try JSONSerialization.data(withJSONObject: [header, row]), as: UTF8.self)
        let server = try KsqlDBFakeServer(script: [R(status: 200, body: body)])
        defer { server.stop() }
        let aggregate = try await client(server.url).pullAggregate(orderId: "o-1")
        var expected = LogFormat.Aggregate(entries: [
            .init(type: "COMMAND", subType: "PlaceOrderCommand", details: #"{"c":1}"#),
            .init(type: "EVENT", subType: "OrderPlacedEvent", details: #"{"v":1}"#),
        ])
        expected.latestDetails = #"{"v":1}"#
        #expect(aggregate == expected)

        let requests = server.requests
        #expect(requests.count == 1)
        #expect(requests.first?.path == "/query")
        #expect(requests.first?.headers["content-type"] == "application/vnd.ksql.v1+json")
        let json = requests.first?.json as? [String: Any]
        #expect(json?["ksql"] as? String == "SELECT * FROM ORDER_AGGREGATES WHERE ORDER_ID = 'o-1';")
        #expect((json?["streamsProperties"] as? [String: Any])?.isEmpty == true)
    }

    @Test func pullAggregateWithoutRowIsNilAndQuotesAreEscaped() async throws {
        let body = String(
            decoding: try JSONSerialization.data(withJSONObject: [["header": ["queryId": "q", "schema": Self.schema]]]), as: UTF8.self)
        let server = try KsqlDBFakeServer(script: [R(status: 200, body: body)])
        defer { server.stop() }
        let aggregate = try await client(server.url).pullAggregate(orderId: "it's")
        #expect(aggregate == nil)
        let json = server.requests.first?.json as? [String: Any]
        #expect(json?["ksql"] as? String == "SELECT * FROM ORDER_AGGREGATES WHERE ORDER_ID = 'it''s';")
    }

    /// Pull queries one after another share one connection (ksqlDB keeps them open): not a
    /// TCP connection, and a socket left in TIME_WAIT, per GetOrder.
    @Test func pullQueriesReuseTheirConnection() async throws {
        let body = String(
            decoding: try JSONSerialization.data(withJSONObject: [["header": ["queryId": "q", "schema": Self.schema]]]), as: UTF8.self)
        let server = try KsqlDBFakeServer(script: Array(repeating: R(status: 200, body: body), count: 5), keepAlive: true)
        defer { server.stop() }
        let client = client(server.url)
        for i in 0..<5 { #expect(try await client.pullAggregate(orderId: "o-\(i)") == nil) }
        #expect(server.requests.count == 5)
        #expect(server.acceptedConnections == 1)
    }

    // MARK: Limits

    /// A body past the cap fails the call instead of being buffered and parsed whole.
    @Test func oversizedStatementResponseFails() async throws {
        let statement = KsqlDBClient.statements(topics: Topics(), names: .init(topicPrefix: ""))[0]
        let server = try KsqlDBFakeServer(script: [Self.success(statement, message: String(repeating: "x", count: 17 << 20))])
        defer { server.stop() }
        do {
            try await client(server.url).provision(statements: [statement])
            Issue.record("a 17 MiB /ksql answer was accepted")
        } catch {
            #expect(error.kind == .badResponse)
            #expect(error.message.contains("over 16 MiB"), "\(error.message)")
        }
    }

    @Test func oversizedPullResponseFails() async throws {
        let header = ["header": ["queryId": "query_1", "schema": Self.schema]]
        let details = String(repeating: "x", count: 2 << 20)
        let row: [String: Any] = ["row": ["columns": ["o-1", "EVENT", "OrderPlacedEvent", details, ["EVENT"], ["OrderPlacedEvent"], [details]]]]
        let body = String(decoding: try JSONSerialization.data(withJSONObject: [header, row]), as: UTF8.self)
        let server = try KsqlDBFakeServer(script: [R(status: 200, body: body)])
        defer { server.stop() }
        do {
            _ = try await client(server.url).pullAggregate(orderId: "o-1")
            Issue.record("a 4 MiB /query answer was accepted")
        } catch {
            #expect(error.kind == .badResponse)
            #expect(error.message.contains("over 1 MiB"), "\(error.message)")
        }
    }

    /// Many pull queries on a ksqlDB that never answers: each ends within its limit counted
    /// from its own call, however many wait; past `maxConcurrentPullQueries` they fail at once.
    @Test func pullQueriesKeepTheirLimitUnderLoad() async throws {
        let server = try KsqlDBFakeServer(script: [.hang])
        defer { server.stop() }
        var config = KsqlDBClient.Config(url: server.url)
        config.pullQueryTimeout = .seconds(1)
        let client = KsqlDBClient(config: config, logger: Self.logger)
        let durations = await withTaskGroup(of: (Duration, KsqlDBError?).self) { group in
            for i in 0..<32 {
                group.addTask {
                    let start = ContinuousClock.now
                    do throws(KsqlDBError) {
                        _ = try await client.pullAggregate(orderId: "o-\(i)")
                        return (ContinuousClock.now - start, nil)
                    } catch {
                        return (ContinuousClock.now - start, error)
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(durations.count == 32)
        #expect(durations.allSatisfy { $0.1?.kind == .unreachable }, "\(durations)")
        let slowest = durations.map { $0.0 }.max() ?? .zero
        #expect(slowest < .milliseconds(1500), "slowest pull query took \(slowest)")
        let refused = durations.filter { $0.1?.message.contains("in flight") == true }
        #expect(refused.count == 32 - config.maxConcurrentPullQueries)
        #expect(refused.allSatisfy { $0.0 < .milliseconds(300) })

        // The abandoned transfers give their slots back (libcurl notices within a second).
        try await Task.sleep(for: .milliseconds(2500))
        let start = ContinuousClock.now
        do {
            _ = try await client.pullAggregate(orderId: "o-again")
            Issue.record("a hung ksqlDB answered")
        } catch {
            #expect(!error.message.contains("in flight"), "\(error.message)")
        }
        #expect(ContinuousClock.now - start >= .milliseconds(900))
    }

    @Test func pullAggregateErrorIsReported() async throws {
        let server = try KsqlDBFakeServer(script: [
            Self.statementError("SELECT", code: 40001, message: "ORDER_AGGREGATES does not exist.")
        ])
        defer { server.stop() }
        do {
            _ = try await client(server.url).pullAggregate(orderId: "o-1")
            Issue.record("no error")
        } catch {
            #expect(error.kind == .rejected)
            #expect(error.message.contains("does not exist"))
        }
    }
}
