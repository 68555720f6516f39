import EventLog
import Foundation
import Logging

/// A failure talking to ksqlDB, naming the statement it concerns.
public struct KsqlDBError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// ksqlDB did not answer (refused, timed out, 503) within the retry budget.
        case unreachable
        /// ksqlDB rejected the statement (`statement_error`, `ERROR` command status, 4xx).
        case rejected
        /// The response did not follow the documented format.
        case badResponse
    }
    public var kind: Kind
    /// The statement (or query) that failed.
    public var statement: String
    /// ksqlDB's own message, or the transport's.
    public var message: String
    /// ksqlDB's `error_code`, when it gave one.
    public var errorCode: Int?

    public var description: String {
        let what: String
        switch kind {
        case .unreachable: what = "ksqlDB is unreachable"
        case .rejected: what = "ksqlDB rejected the statement"
        case .badResponse: what = "ksqlDB's response is not understood"
        }
        let code = errorCode.map { " (error_code \($0))" } ?? ""
        return "\(what)\(code): \(message)\n  statement: \(statement)"
    }
}

/// ksqlDB's REST API over HTTP/1.1 (libcurl): `POST /ksql` to provision the stream and
/// the table, `POST /query` for pull queries on the table (ORDER_AGGREGATES, or its
/// prefixed name: `ObjectNames`).
///
/// Formats followed (docs.ksqldb.io, "ksqlDB REST API"): requests are
/// `{"ksql": "...;", "streamsProperties": {...}}` with content type and accept
/// `application/vnd.ksql.v1+json`; `/ksql` answers an array with one entry per statement
/// (`"@type": "currentStatus"` with `commandStatus.status`), or an error object
/// (`"@type": "statement_error"`, `error_code`, `message`); `/query` answers an array of
/// `{"header": {"queryId", "schema"}}` then `{"row": {"columns": [...]}}` entries.
public struct KsqlDBClient: Sendable {
    public struct Config: Sendable {
        /// Base URL, e.g. `http://127.0.0.1:8088`.
        public var url: String
        /// One request's limit.
        public var requestTimeout: Duration = .seconds(30)
        public var connectTimeout: Duration = .seconds(3)
        /// A pull query's limit, counted from the call: GetOrder falls back to the read
        /// model past it, so a slow ksqlDB costs a caller at most this much.
        public var pullQueryTimeout: Duration = .seconds(1)
        /// Pull queries running at once; one more fails at once (GetOrder answers from the
        /// read model). Each holds a thread, at most `pullQueryTimeout` (plus up to a second
        /// for libcurl to notice a caller that gave up).
        public var maxConcurrentPullQueries = 16
        /// Response bodies past these fail the call: a pull query answers one row, `/ksql`
        /// one status per statement.
        public var maxPullResponseBytes = 1 << 20
        public var maxStatementResponseBytes = 16 << 20
        /// How long `provision` keeps retrying while ksqlDB does not answer (or answers 503).
        public var unreachableRetryBudget: Duration = .seconds(120)
        public var initialBackoff: Duration = .milliseconds(200)
        public var maxBackoff: Duration = .seconds(5)
        /// The stream's and the table's names (from `--kafka-topic-prefix`).
        public var names: ObjectNames
        public init(url: String, topicPrefix: String = "") {
            self.url = url
            self.names = ObjectNames(topicPrefix: topicPrefix)
        }
    }

    /// The stream's and the table's names in ksqlDB. Without a topic prefix they are the
    /// seed's ORDER_COMMANDS_AND_EVENTS and ORDER_AGGREGATES (outside clients query the
    /// latter); with one, they carry it, so that deployments with different prefixes on one
    /// ksqlDB each get their own objects instead of `IF NOT EXISTS` quietly reusing the
    /// first one's (which reads the other topics). The prefix is upper-cased and every
    /// character other than a letter, digit or `_` becomes `_` (`staging-` gives
    /// STAGING_ORDER_AGGREGATES), so prefixes that differ only there share objects.
    public struct ObjectNames: Sendable, Hashable {
        public var stream: String
        public var table: String

        public init(topicPrefix: String) {
            let prefix = String(topicPrefix.uppercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
            // An unquoted identifier may not start with a digit; a quoted one keeps its case.
            let quote = prefix.first?.isNumber == true ? "`" : ""
            stream = quote + prefix + "ORDER_COMMANDS_AND_EVENTS" + quote
            table = quote + prefix + "ORDER_AGGREGATES" + quote
        }
    }

    public static let contentType = "application/vnd.ksql.v1+json"

    /// The properties that make ORDER_AGGREGATES correct for the command handler:
    /// - `auto.offset.reset=earliest`: ksqlDB's default is `latest`, which would never
    ///   aggregate the records written before the persistent query started.
    /// - the record cache off (`cache.max.bytes.buffering=0`): with the cache on, Kafka
    ///   Streams coalesces successive updates of one key, so a changelog record the command
    ///   handler needs (the one whose latest entry is a command) can be skipped.
    public static let requiredProperties: [String: String] = [
        "ksql.streams.auto.offset.reset": "earliest",
        "ksql.streams.cache.max.bytes.buffering": "0",
    ]

    public let config: Config
    let logger: Logger
    let pullAdmission: Admission

    public init(config: Config, logger: Logger) {
        var config = config
        while config.url.hasSuffix("/") { config.url.removeLast() }
        self.config = config
        self.logger = logger
        self.pullAdmission = Admission(limit: max(1, config.maxConcurrentPullQueries))
    }

    // MARK: Statements

    /// The stream and the table of `Scripts/ksqldb/queries.sql`, for these topic names,
    /// partition count and object names.
    public static func statements(topics: Topics, names: ObjectNames) -> [String] {
        [
            """
            CREATE STREAM IF NOT EXISTS \(names.stream) (
              ORDER_ID STRING KEY,
              TYPE STRING,
              SUB_TYPE STRING,
              DETAILS STRING
            ) WITH (
              KAFKA_TOPIC='\(topics.commandsAndEvents)',
              PARTITIONS=\(topics.partitions),
              VALUE_FORMAT='JSON'
            );
            """,
            """
            CREATE TABLE IF NOT EXISTS \(names.table) WITH (
              KAFKA_TOPIC='\(topics.aggregates)',
              PARTITIONS=\(topics.partitions),
              VALUE_FORMAT='JSON'
            ) AS SELECT
              ORDER_ID,
              LATEST_BY_OFFSET(TYPE) AS LATEST_TYPE,
              LATEST_BY_OFFSET(SUB_TYPE) AS LATEST_SUB_TYPE,
              LATEST_BY_OFFSET(DETAILS) AS LATEST_DETAILS,
              COLLECT_LIST(TYPE) AS TYPE_LIST,
              COLLECT_LIST(SUB_TYPE) AS SUB_TYPE_LIST,
              COLLECT_LIST(DETAILS) AS DETAILS_LIST
            FROM \(names.stream)
            GROUP BY ORDER_ID
            EMIT CHANGES;
            """,
        ]
    }

    // MARK: Provisioning

    /// Sends each statement to `POST /ksql`, in order, with `properties`. An error that an
    /// object of the same kind and name already exists counts as success (instances racing
    /// at start); one of the other kind is a conflict. Retries, with backoff, while ksqlDB
    /// does not answer, drops the connection or answers 503, up to
    /// `config.unreachableRetryBudget`.
    public func provision(statements: [String], properties: [String: String] = Self.requiredProperties) async throws(KsqlDBError) {
        for statement in statements {
            let body = Self.json(["ksql": statement, "streamsProperties": properties])
            let response = try await postRetrying("/ksql", body: body, statement: statement)
            try Self.checkStatementResponse(response, statement: statement)
            logger.info("ksqlDB statement applied", metadata: ["statement": "\(Self.firstLine(statement))"])
        }
    }

    /// Interprets `/ksql`'s answer to one statement.
    static func checkStatementResponse(_ response: HTTPResponse, statement: String) throws(KsqlDBError) {
        func isAlreadyExists(_ message: String) -> Bool { Self.isAlreadyExists(message, statement: statement) }
        let parsed = try? JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed])
        if !(200..<300).contains(response.status) {
            let object = parsed as? [String: Any]
            let message = (object?["message"] as? String) ?? String(decoding: response.body.prefix(500), as: UTF8.self)
            if isAlreadyExists(message) { return }
            throw KsqlDBError(
                kind: .rejected, statement: statement, message: "HTTP \(response.status): \(message)",
                errorCode: object?["error_code"] as? Int)
        }
        guard let entries = parsed as? [Any] else {
            throw KsqlDBError(
                kind: .badResponse, statement: statement,
                message: "expected a JSON array, got: \(String(decoding: response.body.prefix(500), as: UTF8.self))")
        }
        for case let entry as [String: Any] in entries {
            let type = entry["@type"] as? String ?? ""
            if type.hasSuffix("_error") || type == "error_entity" {
                let message = entry["message"] as? String ?? "\(entry)"
                if isAlreadyExists(message) { continue }
                throw KsqlDBError(kind: .rejected, statement: statement, message: message, errorCode: entry["error_code"] as? Int)
            }
            if let status = entry["commandStatus"] as? [String: Any] {
                let state = status["status"] as? String ?? ""
                let message = status["message"] as? String ?? ""
                if state == "ERROR" || state == "TERMINATED" {
                    if isAlreadyExists(message) { continue }
                    throw KsqlDBError(kind: .rejected, statement: statement, message: "command \(state): \(message)", errorCode: nil)
                }
            }
        }
    }

    /// ksqlDB's "Cannot add table 'X': A table with the same name already exists" for a
    /// `CREATE TABLE` (or stream for stream). `IF NOT EXISTS` makes that a no-op, so it
    /// only comes from a race; "A stream with the same name" for a table is a conflict:
    /// the name is taken by something else, and the table would never exist.
    static func isAlreadyExists(_ message: String, statement: String) -> Bool {
        let words = statement.uppercased().split(whereSeparator: \.isWhitespace).prefix(4)
        guard words.first == "CREATE", let kind = words.dropFirst().first(where: { $0 == "STREAM" || $0 == "TABLE" }) else {
            return false
        }
        return message.lowercased().contains("a \(kind.lowercased()) with the same name already exists")
    }

    // MARK: Pull queries

    /// `SELECT * FROM ORDER_AGGREGATES WHERE ORDER_ID = '<id>';` (the configured table)
    /// through `POST /query`; nil when ksqlDB has no row for the order. One attempt, no
    /// retries, within `pullQueryTimeout` of the call.
    public func pullAggregate(orderId: String) async throws(KsqlDBError) -> LogFormat.Aggregate? {
        let escaped = orderId.replacingOccurrences(of: "'", with: "''")
        let sql = "SELECT * FROM \(config.names.table) WHERE ORDER_ID = '\(escaped)';"
        let body = Self.json(["ksql": sql, "streamsProperties": [String: String]()])
        let response: HTTPResponse
        do {
            var pull = request(path: "/query", body: body)
            pull.timeout = config.pullQueryTimeout
            pull.connectTimeout = min(config.connectTimeout, config.pullQueryTimeout)
            pull.maxBodyBytes = config.maxPullResponseBytes
            response = try await CurlHTTPClient.post(pull, admission: pullAdmission)
        } catch {
            throw KsqlDBError(kind: error.kind == .tooLarge ? .badResponse : .unreachable, statement: sql, message: error.message)
        }
        return try Self.decodePullResponse(response, query: sql)
    }

    static func decodePullResponse(_ response: HTTPResponse, query: String) throws(KsqlDBError) -> LogFormat.Aggregate? {
        let parsed = try? JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed])
        guard (200..<300).contains(response.status) else {
            let object = parsed as? [String: Any]
            let message = (object?["message"] as? String) ?? String(decoding: response.body.prefix(500), as: UTF8.self)
            throw KsqlDBError(
                kind: response.status == 503 ? .unreachable : .rejected, statement: query,
                message: "HTTP \(response.status): \(message)", errorCode: object?["error_code"] as? Int)
        }
        guard let entries = parsed as? [Any] else {
            throw KsqlDBError(kind: .badResponse, statement: query, message: "expected a JSON array")
        }
        var columnNames: [String]? = nil
        var row: [Any]? = nil
        for case let entry as [String: Any] in entries {
            if let header = entry["header"] as? [String: Any] {
                guard let schema = header["schema"] as? String else {
                    throw KsqlDBError(kind: .badResponse, statement: query, message: "header without a schema")
                }
                columnNames = schemaColumnNames(schema)
            } else if let r = entry["row"] as? [String: Any] {
                guard let columns = r["columns"] as? [Any] else {
                    throw KsqlDBError(kind: .badResponse, statement: query, message: "row without columns")
                }
                if row == nil { row = columns }
            } else if let error = entry["errorMessage"] as? [String: Any] {
                throw KsqlDBError(
                    kind: .rejected, statement: query, message: error["message"] as? String ?? "\(error)",
                    errorCode: error["error_code"] as? Int)
            }
        }
        guard let row else { return nil }
        guard let columnNames, columnNames.count == row.count else {
            throw KsqlDBError(kind: .badResponse, statement: query, message: "a row without a matching header schema")
        }
        var byName: [String: Any] = [:]
        for (name, value) in zip(columnNames, row) { byName[name] = value }
        func string(_ name: String) throws(KsqlDBError) -> String {
            guard let v = byName[name] else {
                throw KsqlDBError(kind: .badResponse, statement: query, message: "column \(name) missing")
            }
            if v is NSNull { return "" }
            guard let s = v as? String else {
                throw KsqlDBError(kind: .badResponse, statement: query, message: "column \(name) is not a string")
            }
            return s
        }
        func list(_ name: String) throws(KsqlDBError) -> [String] {
            guard let v = byName[name] else {
                throw KsqlDBError(kind: .badResponse, statement: query, message: "column \(name) missing")
            }
            if v is NSNull { return [] }
            guard let a = v as? [Any], let strings = a.map({ $0 as? String }) as [String?]?, !strings.contains(where: { $0 == nil }) else {
                throw KsqlDBError(kind: .badResponse, statement: query, message: "column \(name) is not an array of strings")
            }
            return strings.map { $0! }
        }
        var aggregate = LogFormat.Aggregate(entries: [])
        aggregate.latestType = try string("LATEST_TYPE")
        aggregate.latestSubType = try string("LATEST_SUB_TYPE")
        aggregate.latestDetails = try string("LATEST_DETAILS")
        aggregate.typeList = try list("TYPE_LIST")
        aggregate.subTypeList = try list("SUB_TYPE_LIST")
        aggregate.detailsList = try list("DETAILS_LIST")
        return aggregate
    }

    /// The column names of a `/query` header schema: "`ORDER_ID` STRING KEY, `TYPE_LIST` ARRAY<STRING>, ...".
    static func schemaColumnNames(_ schema: String) -> [String] {
        var names: [String] = []
        var rest = Substring(schema)
        while let open = rest.firstIndex(of: "`") {
            let after = rest.index(after: open)
            guard let close = rest[after...].firstIndex(of: "`") else { break }
            names.append(String(rest[after..<close]))
            // Skip the type up to the next top-level comma (ARRAY<...>/STRUCT<...> hold none of ours).
            var depth = 0
            var i = rest.index(after: close)
            while i < rest.endIndex {
                let c = rest[i]
                if c == "<" { depth += 1 } else if c == ">" { depth -= 1 } else if c == ",", depth == 0 { break }
                i = rest.index(after: i)
            }
            rest = rest[i...]
        }
        return names
    }

    // MARK: HTTP

    func request(path: String, body: [UInt8]) -> HTTPRequest {
        HTTPRequest(
            url: config.url + path,
            headers: [("Content-Type", Self.contentType), ("Accept", Self.contentType)],
            body: body, timeout: config.requestTimeout, connectTimeout: config.connectTimeout,
            maxBodyBytes: config.maxStatementResponseBytes)
    }

    /// Retries until the budget is spent: the last wait is cut to what is left of it, so
    /// the last attempt comes at the deadline, not a backoff before it.
    private func postRetrying(_ path: String, body: [UInt8], statement: String) async throws(KsqlDBError) -> HTTPResponse {
        let start = ContinuousClock.now
        let deadline = start + config.unreachableRetryBudget
        var backoff = config.initialBackoff
        var attempts = 0
        while true {
            let problem: String
            attempts += 1
            do {
                let response = try await CurlHTTPClient.post(request(path: path, body: body))
                if response.status != 503 { return response }
                problem = "HTTP 503: \(String(decoding: response.body.prefix(300), as: UTF8.self))"
            } catch {
                switch error.kind {
                case .cannotConnect, .timedOut, .connectionLost: problem = error.message
                case .tooLarge: throw KsqlDBError(kind: .badResponse, statement: statement, message: error.message)
                case .busy, .other: throw KsqlDBError(kind: .unreachable, statement: statement, message: error.message)
                }
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                throw KsqlDBError(
                    kind: .unreachable, statement: statement,
                    message: "\(problem) (gave up after \(Self.seconds(ContinuousClock.now - start)) s and \(attempts) attempts; retry budget \(Self.seconds(config.unreachableRetryBudget)) s)")
            }
            let wait = min(backoff, remaining)
            logger.warning("ksqlDB does not answer; retrying in \(wait)", metadata: ["error": "\(problem)"])
            do { try await Task.sleep(for: wait) } catch {
                throw KsqlDBError(kind: .unreachable, statement: statement, message: "cancelled while retrying: \(problem)")
            }
            backoff = min(backoff * 2, config.maxBackoff)
        }
    }

    static func json(_ object: [String: Any]) -> [UInt8] {
        // Sorted keys: a stable body (tests compare them; ksqlDB does not care).
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return [UInt8](data)
    }

    /// `d` in seconds with one decimal, e.g. "1.4".
    static func seconds(_ d: Duration) -> String {
        let tenths = Int((d / .milliseconds(100)).rounded(.down))
        return "\(tenths / 10).\(tenths % 10)"
    }

    static func firstLine(_ statement: String) -> String {
        String(statement.split(separator: "\n", maxSplits: 1).first ?? "")
    }
}

extension KsqlDBError {
    init(kind: Kind, statement: String, message: String) {
        self.init(kind: kind, statement: statement, message: message, errorCode: nil)
    }
}

/// GetOrder's pull query (`OrderPipeline.Config.aggregateTable`).
extension KsqlDBClient: AggregateTable {
    public func aggregate(orderId: String) async throws -> LogFormat.Aggregate? {
        try await pullAggregate(orderId: orderId)
    }
}
