import CRdKafka
import EventLog
import Logging
import Synchronization

// The one file that touches librdkafka: handles, C callbacks, C structs. Everything it
// exposes is Swift (bytes, strings, Ints); callers never see a C type.
//
// Threading contract (librdkafka's, restated): every function here is thread-safe except
// the consumer's poll/assign/commit family, which the callers serialize on one
// DispatchQueue per consumer. Every function that can block (network round trips,
// `rd_kafka_consumer_poll`, `rd_kafka_flush`, transactions, admin) is marked
// "Blocking": call it from a dedicated DispatchQueue, never from the Swift cooperative pool.

/// The librdkafka loaded at run time (not the headers the build saw).
enum RDKafka {
    /// "2.16.0" for the confluent-kafka wheel's library, "2.0.2" for Debian bookworm's.
    static var versionString: String { String(cString: rd_kafka_version_str()) }
    /// `0xMMmmrrxx` (major, minor, revision, pre-release).
    static var version: Int { Int(rd_kafka_version()) }
}

/// An error from librdkafka, without C types. `code` is an `rd_kafka_resp_err_t` value;
/// the constants below name the ones the engine acts on.
struct RDKafkaError: Error, Sendable, CustomStringConvertible {
    var code: Int32
    var name: String
    var message: String
    var isFatal = false
    var isRetriable = false
    var requiresAbort = false

    var description: String { "\(message) [\(name)]" }

    fileprivate init(_ err: rd_kafka_resp_err_t, _ message: String? = nil) {
        self.code = err.rawValue
        self.name = String(cString: rd_kafka_err2name(err))
        self.message = message ?? String(cString: rd_kafka_err2str(err))
    }

    init(code: Int32, name: String, message: String) {
        self.code = code
        self.name = name
        self.message = message
    }

    /// Takes ownership of an `rd_kafka_error_t` and destroys it.
    fileprivate static func consuming(_ error: OpaquePointer) -> RDKafkaError {
        defer { rd_kafka_error_destroy(error) }
        var e = RDKafkaError(rd_kafka_error_code(error), String(cString: rd_kafka_error_string(error)))
        e.isFatal = rd_kafka_error_is_fatal(error) != 0
        e.isRetriable = rd_kafka_error_is_retriable(error) != 0
        e.requiresAbort = rd_kafka_error_txn_requires_abort(error) != 0
        return e
    }

    /// The producer handle's id, epoch or sequence numbers are no longer good, so it
    /// needs a new handle (a new producer id), although librdkafka does not call that
    /// fatal. Either it was fenced (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, `_FENCED`) or
    /// only an epoch bump would repair it (OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID,
    /// INVALID_PRODUCER_ID_MAPPING, and a record that timed out, which may or may not have
    /// been stored). tansu refuses librdkafka's epoch bumps (KIP-360). After an outage
    /// longer than `message.timeout.ms` it answers every later record of an idempotent
    /// handle with PRODUCER_FENCED, and a transactional handle's abort then waits forever
    /// for its bump.
    var lostProducerState: Bool { Self.producerStateCodes.contains(code) }

    private static let producerStateCodes: Set<Int32> = [
        RD_KAFKA_RESP_ERR_PRODUCER_FENCED.rawValue, RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH.rawValue,
        RD_KAFKA_RESP_ERR__FENCED.rawValue, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER.rawValue,
        RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID.rawValue, RD_KAFKA_RESP_ERR_INVALID_PRODUCER_ID_MAPPING.rawValue,
        RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue,
    ]

    static let topicAlreadyExists = RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS.rawValue
    static let unknownTopicOrPartition = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART.rawValue
    static let unknownTopic = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC.rawValue
    static let unknownPartition = RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION.rawValue
    static let queueFull = RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue
    static let partitionEOF = RD_KAFKA_RESP_ERR__PARTITION_EOF.rawValue
    static let timedOut = RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue
    static let fatal = RD_KAFKA_RESP_ERR__FATAL.rawValue
    static let autoOffsetReset = RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET.rawValue
    static let offsetOutOfRange = RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE.rawValue
    static let noOffset = RD_KAFKA_RESP_ERR__NO_OFFSET.rawValue
}

/// A consumed record, copied out of librdkafka's buffers.
struct RDKafkaMessage: Sendable {
    var topic: String
    var partition: Int
    var offset: Int64
    var key: [UInt8]?
    var value: [UInt8]
    var headers: [String: String]
    /// Milliseconds since the epoch, or -1 when the broker gave none.
    var timestamp: Int64
}

/// What one consumer poll produced.
enum RDKafkaPollResult: Sendable {
    case message(RDKafkaMessage)
    /// The consumer reached the end of the partition: `offset` is the fetch position,
    /// which the broker's fetch response vouches for (tansu's ListOffsets does not).
    case endOfPartition(topic: String, partition: Int, offset: Int64)
    case error(RDKafkaError)
}

/// A record to produce, with its partition already chosen.
struct RDKafkaOutgoing: Sendable {
    var topic: String
    var partition: Int
    var key: [UInt8]
    var value: [UInt8]
    var headers: [String: String]
}

/// A consumer-group rebalance, as the rebalance callback saw it.
enum RDKafkaRebalance: Sendable {
    case assign([TopicPartition])
    /// `lost`: the assignment was lost (the session timed out); the callback gives the
    /// partitions up at once, whatever the handler answers.
    case revoke([TopicPartition], lost: Bool)
}

/// What a rebalance handler wants done with a revocation.
enum RDKafkaRevokeHandling: Sendable {
    /// Give the partitions up inside the callback.
    case now
    /// Keep them until `completeRevoke()`: the group does not rebalance until then, so
    /// the caller can still commit the offsets it finished with its current generation.
    case deferred
}

/// Per-message completion for a delivery report.
final class RDKafkaDeliveryTicket: Sendable {
    let completion: @Sendable (Result<(partition: Int, offset: Int64), RDKafkaError>) -> Void
    init(_ completion: @escaping @Sendable (Result<(partition: Int, offset: Int64), RDKafkaError>) -> Void) {
        self.completion = completion
    }
}

/// What librdkafka's callbacks reach through the handle's opaque pointer.
private final class RDKafkaCallbacks: Sendable {
    let logger: Logger
    let rebalance: (@Sendable (RDKafkaRebalance) -> RDKafkaRevokeHandling)?
    /// Whether the last rebalance the callback saw was cooperative: `completeRevoke`,
    /// after the callback, must give the partitions up the same way, and librdkafka may
    /// not name the protocol any more by then.
    let cooperative = Atomic<Bool>(false)
    init(logger: Logger, rebalance: (@Sendable (RDKafkaRebalance) -> RDKafkaRevokeHandling)?) {
        self.logger = logger
        self.rebalance = rebalance
    }
}

/// A consumer's group metadata, for `sendOffsetsToTransaction`. Owns the C object.
final class RDKafkaGroupMetadata: @unchecked Sendable {
    // @unchecked: the pointer is immutable and only read by librdkafka.
    fileprivate let pointer: OpaquePointer

    fileprivate init(_ pointer: OpaquePointer) { self.pointer = pointer }

    /// Metadata for a group this process is not a member of (generation -1): brokers
    /// accept such transactional commits without a generation check.
    convenience init(groupId: String) {
        self.init(rd_kafka_consumer_group_metadata_new(groupId))
    }

    deinit { rd_kafka_consumer_group_metadata_destroy(pointer) }
}

/// One librdkafka client handle (`rd_kafka_t`): a producer or a consumer.
///
/// - Important: call `destroy()` (or let the object go) only when no other thread uses
///   the handle. Callbacks (delivery reports, rebalances, logs) run on the threads that
///   call `poll`/`consumerPoll`/`flush`, or on librdkafka's own threads (logs).
final class RDKafkaClient: @unchecked Sendable {
    // @unchecked: `handle` and `callbacks` are immutable; librdkafka's handle is
    // thread-safe for the functions used here, and the non-thread-safe consumer calls
    // are serialized by the callers (documented on each wrapper type). `destroyed` is
    // guarded by its Mutex.
    enum Kind: Sendable { case producer, consumer }

    let kind: Kind
    private let handle: OpaquePointer
    /// +1 held on behalf of librdkafka (the conf opaque) from `init` until `destroy()`,
    /// which releases it after `rd_kafka_destroy` returns: no callback runs after that.
    private let callbacks: Unmanaged<RDKafkaCallbacks>
    private let destroyed = Mutex(false)

    /// Creates a handle from librdkafka properties.
    init(
        kind: Kind, properties: [String: String], logger: Logger,
        rebalance: (@Sendable (RDKafkaRebalance) -> RDKafkaRevokeHandling)? = nil
    ) throws(RDKafkaError) {
        guard let conf = rd_kafka_conf_new() else { throw RDKafkaError(RD_KAFKA_RESP_ERR__FAIL, "rd_kafka_conf_new failed") }
        var errstr = [CChar](repeating: 0, count: 512)
        for (name, value) in properties.sorted(by: { $0.key < $1.key }) {
            if rd_kafka_conf_set(conf, name, value, &errstr, errstr.count) != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                throw RDKafkaError(RD_KAFKA_RESP_ERR__INVALID_ARG, "librdkafka property \(name): \(Self.string(errstr))")
            }
        }
        let callbacks = Unmanaged.passRetained(RDKafkaCallbacks(logger: logger, rebalance: rebalance))
        rd_kafka_conf_set_opaque(conf, callbacks.toOpaque())
        rd_kafka_conf_set_log_cb(conf, rdkafkaLogCallback)
        rd_kafka_conf_set_error_cb(conf, rdkafkaErrorCallback)
        switch kind {
        case .producer:
            rd_kafka_conf_set_dr_msg_cb(conf, rdkafkaDeliveryCallback)
        case .consumer:
            if rebalance != nil { rd_kafka_conf_set_rebalance_cb(conf, rdkafkaRebalanceCallback) }
        }
        // rd_kafka_new takes ownership of conf only when it succeeds.
        guard let handle = rd_kafka_new(kind == .producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER, conf, &errstr, errstr.count)
        else {
            rd_kafka_conf_destroy(conf)
            callbacks.release()  // no handle, so no callback will ever use it
            throw RDKafkaError(RD_KAFKA_RESP_ERR__FAIL, "rd_kafka_new: \(Self.string(errstr))")
        }
        if kind == .consumer {
            // Serve errors and other main-queue events from consumerPoll.
            rd_kafka_poll_set_consumer(handle)
        }
        self.kind = kind
        self.handle = handle
        self.callbacks = callbacks
    }

    deinit { destroy() }

    /// The raw handle, for this file's helpers only.
    fileprivate func withHandle<T>(_ body: (OpaquePointer) -> T) -> T { body(handle) }

    /// Destroys the handle (idempotent). A consumer that joined a group leaves it first
    /// (librdkafka calls `rd_kafka_consumer_close` itself). Blocking.
    func destroy() {
        let first = destroyed.withLock { d -> Bool in
            defer { d = true }
            return !d
        }
        guard first else { return }
        rd_kafka_destroy(handle)
        callbacks.release()  // rd_kafka_destroy has returned: no callback can run any more
    }

    private static func string(_ buffer: [CChar]) -> String {
        buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    // MARK: Producer

    /// Enqueues one record; the ticket's completion runs from a later `poll`/`flush`
    /// with the delivery report. Throws (and never calls the ticket) when librdkafka
    /// refuses the record, e.g. `queueFull`. Does not block.
    func produce(_ record: RDKafkaOutgoing, ticket: RDKafkaDeliveryTicket) throws(RDKafkaError) {
        // Headers: rd_kafka_produceva takes ownership of the list on success only.
        let headers: OpaquePointer? = record.headers.isEmpty ? nil : rd_kafka_headers_new(record.headers.count)
        if let headers {
            for (name, value) in record.headers.sorted(by: { $0.key < $1.key }) {
                var bytes = Array(value.utf8)
                _ = bytes.withUnsafeMutableBytes { rd_kafka_header_add(headers, name, -1, $0.baseAddress, $0.count) }
            }
        }
        // +1 for the delivery report: released by rdkafkaDeliveryCallback, or below if
        // librdkafka refuses the record (then no report will come).
        let opaque = Unmanaged.passRetained(ticket)
        let error: OpaquePointer? = record.topic.withCString { topic in
            record.key.withUnsafeBytes { key in
                record.value.withUnsafeBytes { value in
                    var vus = [rd_kafka_vu_t](repeating: rd_kafka_vu_t(), count: 7)
                    vus[0].vtype = RD_KAFKA_VTYPE_TOPIC
                    vus[0].u.cstr = topic
                    vus[1].vtype = RD_KAFKA_VTYPE_PARTITION
                    vus[1].u.i32 = Int32(record.partition)
                    vus[2].vtype = RD_KAFKA_VTYPE_KEY
                    vus[2].u.mem.ptr = UnsafeMutableRawPointer(mutating: key.baseAddress)
                    vus[2].u.mem.size = key.count
                    vus[3].vtype = RD_KAFKA_VTYPE_VALUE
                    // A non-nil pointer even for an empty value: NULL would mean a tombstone.
                    vus[3].u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress ?? UnsafeRawPointer(topic))
                    vus[3].u.mem.size = value.count
                    vus[4].vtype = RD_KAFKA_VTYPE_MSGFLAGS
                    vus[4].u.i = RD_KAFKA_MSG_F_COPY
                    vus[5].vtype = RD_KAFKA_VTYPE_OPAQUE
                    vus[5].u.ptr = opaque.toOpaque()
                    var count = 6
                    if let headers {
                        vus[6].vtype = RD_KAFKA_VTYPE_HEADERS
                        vus[6].u.headers = headers
                        count = 7
                    }
                    return rd_kafka_produceva(handle, vus, count)
                }
            }
        }
        if let error {
            opaque.release()
            if let headers { rd_kafka_headers_destroy(headers) }
            throw RDKafkaError.consuming(error)
        }
    }

    /// Serves delivery reports and errors for up to `timeoutMs`. Blocking.
    @discardableResult
    func poll(timeoutMs: Int) -> Int { Int(rd_kafka_poll(handle, Int32(timeoutMs))) }

    /// Waits until every queued record is delivered or failed. Blocking.
    func flush(timeoutMs: Int) -> Bool { rd_kafka_flush(handle, Int32(timeoutMs)) == RD_KAFKA_RESP_ERR_NO_ERROR }

    /// Fails every queued and in-flight record (their reports come from the next poll).
    func purge() {
        _ = rd_kafka_purge(handle, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING)
    }

    /// Records waiting for a delivery report.
    var outstanding: Int { Int(rd_kafka_outq_len(handle)) }

    /// The fatal error that ended this handle, if any (idempotence or transactions).
    var fatalError: RDKafkaError? {
        var errstr = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(handle, &errstr, errstr.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        var e = RDKafkaError(err, Self.string(errstr))
        e.isFatal = true
        return e
    }

    // MARK: Transactions (producer with transactional.id). All blocking.

    func initTransactions(timeoutMs: Int) throws(RDKafkaError) {
        if let error = rd_kafka_init_transactions(handle, Int32(timeoutMs)) { throw RDKafkaError.consuming(error) }
    }

    func beginTransaction() throws(RDKafkaError) {
        if let error = rd_kafka_begin_transaction(handle) { throw RDKafkaError.consuming(error) }
    }

    func sendOffsetsToTransaction(topic: String, offsets: [Int: Int64], group: RDKafkaGroupMetadata, timeoutMs: Int) throws(RDKafkaError) {
        let list = Self.partitionList(topic: topic, offsets: offsets)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        if let error = rd_kafka_send_offsets_to_transaction(handle, list, group.pointer, Int32(timeoutMs)) {
            throw RDKafkaError.consuming(error)
        }
    }

    func commitTransaction(timeoutMs: Int) throws(RDKafkaError) {
        if let error = rd_kafka_commit_transaction(handle, Int32(timeoutMs)) { throw RDKafkaError.consuming(error) }
    }

    func abortTransaction(timeoutMs: Int) throws(RDKafkaError) {
        if let error = rd_kafka_abort_transaction(handle, Int32(timeoutMs)) { throw RDKafkaError.consuming(error) }
    }

    // MARK: Admin and metadata. All blocking.

    /// Creates a topic; `false` when it already existed.
    func createTopic(
        _ topic: String, partitions: Int, replicationFactor: Int, config: [String: String], timeoutMs: Int
    ) throws(RDKafkaError) -> Bool {
        var errstr = [CChar](repeating: 0, count: 512)
        guard let newTopic = rd_kafka_NewTopic_new(topic, Int32(partitions), Int32(replicationFactor), &errstr, errstr.count) else {
            throw RDKafkaError(RD_KAFKA_RESP_ERR__INVALID_ARG, "topic \(topic): \(Self.string(errstr))")
        }
        defer { rd_kafka_NewTopic_destroy(newTopic) }
        for (name, value) in config.sorted(by: { $0.key < $1.key }) {
            let err = rd_kafka_NewTopic_set_config(newTopic, name, value)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaError(err, "topic config \(name)=\(value)") }
        }
        let options = rd_kafka_AdminOptions_new(handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_request_timeout(options, Int32(timeoutMs), &errstr, errstr.count)
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, Int32(timeoutMs), &errstr, errstr.count)
        let queue = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(queue) }
        var topics: [OpaquePointer?] = [newTopic]
        rd_kafka_CreateTopics(handle, &topics, 1, options, queue)
        // The request timeout bounds the result; the extra second covers local queueing.
        guard let event = rd_kafka_queue_poll(queue, Int32(timeoutMs + 1000)) else {
            throw RDKafkaError(RD_KAFKA_RESP_ERR__TIMED_OUT, "CreateTopics(\(topic)) got no answer in \(timeoutMs) ms")
        }
        defer { rd_kafka_event_destroy(event) }
        let eventError = rd_kafka_event_error(event)
        if eventError != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw RDKafkaError(eventError, "CreateTopics(\(topic)): \(String(cString: rd_kafka_event_error_string(event)))")
        }
        guard let result = rd_kafka_event_CreateTopics_result(event) else {
            throw RDKafkaError(RD_KAFKA_RESP_ERR__BAD_MSG, "CreateTopics(\(topic)): unexpected event")
        }
        var count = 0
        guard let results = rd_kafka_CreateTopics_result_topics(result, &count), count > 0, let first = results[0] else {
            throw RDKafkaError(RD_KAFKA_RESP_ERR__BAD_MSG, "CreateTopics(\(topic)): no result")
        }
        let err = rd_kafka_topic_result_error(first)
        if err == RD_KAFKA_RESP_ERR_NO_ERROR { return true }
        if err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS { return false }
        let message = rd_kafka_topic_result_error_string(first).map { String(cString: $0) } ?? ""
        throw RDKafkaError(err, "CreateTopics(\(topic)): \(message)")
    }

    /// The topic's partition count from the cluster's metadata; `nil` when the topic
    /// does not exist.
    func partitionCount(_ topic: String, timeoutMs: Int) throws(RDKafkaError) -> Int? {
        // A topic handle asks for this topic's metadata only; consumers and producers
        // here set allow.auto.create.topics=false, so asking creates nothing.
        guard let rkt = rd_kafka_topic_new(handle, topic, nil) else {
            throw RDKafkaError(rd_kafka_last_error(), "rd_kafka_topic_new(\(topic))")
        }
        defer { rd_kafka_topic_destroy(rkt) }
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 0, rkt, &metadata, Int32(timeoutMs))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else { throw RDKafkaError(err, "metadata for \(topic): \(String(cString: rd_kafka_err2str(err)))") }
        defer { rd_kafka_metadata_destroy(metadata) }
        for i in 0..<Int(metadata.pointee.topic_cnt) {
            let t = metadata.pointee.topics[i]
            guard String(cString: t.topic) == topic else { continue }
            if t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || t.err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC { return nil }
            if t.err != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaError(t.err, "metadata for \(topic): \(String(cString: rd_kafka_err2str(t.err)))") }
            return t.partition_cnt > 0 ? Int(t.partition_cnt) : nil
        }
        return nil
    }

    /// `host:port` of every broker in the metadata (the mock cluster's address).
    func brokerAddresses(timeoutMs: Int) throws(RDKafkaError) -> [String] {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 0, nil, &metadata, Int32(timeoutMs))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else { throw RDKafkaError(err) }
        defer { rd_kafka_metadata_destroy(metadata) }
        return (0..<Int(metadata.pointee.broker_cnt)).map {
            let b = metadata.pointee.brokers[$0]
            return "\(String(cString: b.host)):\(b.port)"
        }
    }

    /// The broker's ListOffsets answer for "latest" on the given partitions. On Kafka
    /// this is the high watermark; tansu answers with the last batch's base offset + 1,
    /// so callers treat it as a hint.
    func listLatestOffsets(topic: String, partitions: [Int], timeoutMs: Int) throws(RDKafkaError) -> [Int: Int64] {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for p in partitions {
            // For offsets_for_times the offset field holds the timestamp; -1 = latest.
            rd_kafka_topic_partition_list_add(list, topic, Int32(p)).pointee.offset = -1
        }
        let err = rd_kafka_offsets_for_times(handle, list, Int32(timeoutMs))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw RDKafkaError(err, "ListOffsets(\(topic)): \(String(cString: rd_kafka_err2str(err)))") }
        var out: [Int: Int64] = [:]
        for i in 0..<Int(list.pointee.cnt) {
            let e = list.pointee.elems[i]
            if e.err != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaError(e.err, "ListOffsets(\(topic)[\(e.partition)])") }
            out[Int(e.partition)] = max(e.offset, 0)
        }
        return out
    }

    // MARK: Consumer. Callers serialize these on the consumer's own queue.

    /// Replaces the assignment: read `topic` from the given offsets (partition → offset).
    func assign(topic: String, offsets: [Int: Int64]) throws(RDKafkaError) {
        let list = Self.partitionList(topic: topic, offsets: offsets)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_assign(handle, list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaError(err, "assign(\(topic)): \(String(cString: rd_kafka_err2str(err)))") }
    }

    func unassign() {
        _ = rd_kafka_assign(handle, nil)
    }

    func subscribe(topic: String) throws(RDKafkaError) {
        let list = rd_kafka_topic_partition_list_new(1)!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_topic_partition_list_add(list, topic, -1)  // RD_KAFKA_PARTITION_UA
        let err = rd_kafka_subscribe(handle, list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaError(err, "subscribe(\(topic)): \(String(cString: rd_kafka_err2str(err)))") }
    }

    /// Gives up partitions whose revocation the rebalance handler deferred.
    func completeRevoke(_ partitions: [TopicPartition]) {
        if callbacks.takeUnretainedValue().cooperative.load(ordering: .relaxed) {
            let list = Self.partitionList(partitions)
            defer { rd_kafka_topic_partition_list_destroy(list) }
            if let error = rd_kafka_incremental_unassign(handle, list) { rd_kafka_error_destroy(error) }
        } else {
            _ = rd_kafka_assign(handle, nil)
        }
    }

    /// One message, end-of-partition or error, or nil after `timeoutMs`. Rebalance
    /// callbacks run inside. Blocking.
    func consumerPoll(timeoutMs: Int) -> RDKafkaPollResult? {
        guard let message = rd_kafka_consumer_poll(handle, Int32(timeoutMs)) else { return nil }
        defer { rd_kafka_message_destroy(message) }
        let m = message.pointee
        let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
        if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF {
            return .endOfPartition(topic: topic, partition: Int(m.partition), offset: m.offset)
        }
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            var text = String(cString: rd_kafka_err2str(m.err))
            if let payload = m.payload, m.len > 0 {
                text = String(decoding: UnsafeRawBufferPointer(start: payload, count: m.len), as: UTF8.self)
            }
            var e = RDKafkaError(m.err, topic.isEmpty ? text : "\(topic)[\(m.partition)]: \(text)")
            e.isFatal = m.err == RD_KAFKA_RESP_ERR__FATAL
            return .error(e)
        }
        let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) } ?? []
        var headers: [String: String] = [:]
        var hdrs: OpaquePointer?
        if rd_kafka_message_headers(message, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
            var index = 0
            var name: UnsafePointer<CChar>?
            var val: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(hdrs, index, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                if let name {
                    headers[String(cString: name)] =
                        val.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: size), as: UTF8.self) } ?? ""
                }
                index += 1
            }
        }
        var tstype = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &tstype)
        return .message(
            RDKafkaMessage(
                topic: topic, partition: Int(m.partition), offset: m.offset, key: key, value: value, headers: headers,
                timestamp: tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : timestamp))
    }

    /// Makes a blocked `consumerPoll`/`poll` return early. Thread-safe.
    func yield() { rd_kafka_yield(handle) }

    /// Commits offsets (the next offset to read) for the consumer's group. Blocking.
    func commit(topic: String, offsets: [Int: Int64]) throws(RDKafkaError) {
        let list = Self.partitionList(topic: topic, offsets: offsets)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_commit(handle, list, 0)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaError(err, "commit(\(topic)): \(String(cString: rd_kafka_err2str(err)))") }
        for i in 0..<Int(list.pointee.cnt) where list.pointee.elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let e = list.pointee.elems[i]
            throw RDKafkaError(e.err, "commit(\(topic)[\(e.partition)]): \(String(cString: rd_kafka_err2str(e.err)))")
        }
    }

    /// The group's committed offsets (index = partition; nil where none). Blocking.
    func committed(topic: String, partitions: Int, timeoutMs: Int) throws(RDKafkaError) -> [Int64?] {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for p in 0..<partitions { rd_kafka_topic_partition_list_add(list, topic, Int32(p)) }
        let err = rd_kafka_committed(handle, list, Int32(timeoutMs))
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw RDKafkaError(err, "committed(\(topic)): \(String(cString: rd_kafka_err2str(err)))") }
        var out = [Int64?](repeating: nil, count: partitions)
        for i in 0..<Int(list.pointee.cnt) {
            let e = list.pointee.elems[i]
            if e.err != RD_KAFKA_RESP_ERR_NO_ERROR { throw RDKafkaError(e.err, "committed(\(topic)[\(e.partition)])") }
            if e.offset >= 0 { out[Int(e.partition)] = e.offset }
        }
        return out
    }

    /// The member's current group metadata (generation, member id), for transactions.
    func groupMetadata() -> RDKafkaGroupMetadata? {
        rd_kafka_consumer_group_metadata(handle).map(RDKafkaGroupMetadata.init)
    }

    /// Leaves the group (final revoke callback runs inside). Blocking.
    func consumerClose() {
        _ = rd_kafka_consumer_close(handle)
    }

    // MARK: Helpers

    private static func partitionList(topic: String, offsets: [Int: Int64]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        let list = rd_kafka_topic_partition_list_new(Int32(offsets.count))!
        for (p, offset) in offsets.sorted(by: { $0.key < $1.key }) {
            rd_kafka_topic_partition_list_add(list, topic, Int32(p)).pointee.offset = offset
        }
        return list
    }

    private static func partitionList(_ partitions: [TopicPartition]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
        for tp in partitions { rd_kafka_topic_partition_list_add(list, tp.topic, Int32(tp.partition)) }
        return list
    }

    fileprivate static func partitions(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> [TopicPartition] {
        guard let list else { return [] }
        return (0..<Int(list.pointee.cnt)).map {
            let e = list.pointee.elems[$0]
            return TopicPartition(String(cString: e.topic), Int(e.partition))
        }
    }

    fileprivate static func isCooperative(_ handle: OpaquePointer) -> Bool {
        guard let protocolName = rd_kafka_rebalance_protocol(handle) else { return false }
        return String(cString: protocolName) == "COOPERATIVE"
    }
}

/// A mock Kafka cluster inside librdkafka (`test.mock.num.brokers`), for fast tests:
/// the handle that hosts it must live as long as the cluster is used.
final class RDKafkaMockCluster: Sendable {
    private let host: RDKafkaClient
    let bootstrapServers: String

    init(brokers: Int = 1, logger: Logger) throws(RDKafkaError) {
        host = try RDKafkaClient(
            kind: .producer, properties: ["test.mock.num.brokers": String(brokers)], logger: logger)
        bootstrapServers = try host.brokerAddresses(timeoutMs: 5000).joined(separator: ",")
    }

    /// Creates a topic directly in the mock cluster (it cannot serve CreateTopics).
    func createTopic(_ topic: String, partitions: Int) throws(RDKafkaError) {
        let err = host.withHandle { CRdKafka_mock_topic_create($0, topic, Int32(partitions)) }
        if err != 0 { throw RDKafkaError(rd_kafka_resp_err_t(rawValue: err), "mock topic \(topic)") }
    }

    deinit { host.destroy() }
}

// MARK: C callbacks. Non-capturing; they reach Swift through the handle's opaque.

private func callbacks(_ opaque: UnsafeMutableRawPointer?) -> RDKafkaCallbacks? {
    // The +1 is held by RDKafkaClient until after rd_kafka_destroy; unretained here.
    opaque.map { Unmanaged<RDKafkaCallbacks>.fromOpaque($0).takeUnretainedValue() }
}

private let rdkafkaDeliveryCallback:
    @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
        _, message, _ in
        guard let message, let opaque = message.pointee._private else { return }
        // Balances the passRetained in RDKafkaClient.produce: one report per record.
        let ticket = Unmanaged<RDKafkaDeliveryTicket>.fromOpaque(opaque).takeRetainedValue()
        let m = message.pointee
        if m.err == RD_KAFKA_RESP_ERR_NO_ERROR {
            ticket.completion(.success((Int(m.partition), m.offset)))
        } else {
            var e = RDKafkaError(m.err)
            e.isFatal = m.err == RD_KAFKA_RESP_ERR__FATAL
            ticket.completion(.failure(e))
        }
    }

private let rdkafkaRebalanceCallback:
    @convention(c) (
        OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?
    ) -> Void = { handle, err, list, opaque in
        guard let handle else { return }
        let cooperative = RDKafkaClient.isCooperative(handle)
        let partitions = RDKafkaClient.partitions(list)
        let handler = callbacks(opaque)?.rebalance
        callbacks(opaque)?.cooperative.store(cooperative, ordering: .relaxed)
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            if cooperative {
                if let error = rd_kafka_incremental_assign(handle, list) { rd_kafka_error_destroy(error) }
            } else {
                _ = rd_kafka_assign(handle, list)
            }
            _ = handler?(.assign(partitions))
            rd_kafka_yield(handle)  // report the assignment before any of its records
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            // A lost assignment (session timed out) cannot be committed against anyway.
            let lost = rd_kafka_assignment_lost(handle) != 0
            let handling = handler?(.revoke(partitions, lost: lost)) ?? .now
            if handling == .deferred && !lost {
                rd_kafka_yield(handle)  // return from consumerPoll so the caller sees it
            } else if cooperative {
                if let error = rd_kafka_incremental_unassign(handle, list) { rd_kafka_error_destroy(error) }
            } else {
                _ = rd_kafka_assign(handle, nil)
            }
        default:
            callbacks(opaque)?.logger.warning("rebalance error: \(String(cString: rd_kafka_err2str(err)))")
            _ = rd_kafka_assign(handle, nil)
        }
    }

private let rdkafkaErrorCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void = {
    _, err, reason, opaque in
    let text = reason.map { String(cString: $0) } ?? ""
    let name = String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: err)))
    callbacks(opaque)?.logger.debug("librdkafka: \(text)", metadata: ["error": "\(name)"])
}

private let rdkafkaLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = {
    handle, level, facility, buffer in
    // Called from librdkafka's threads: log and return, no librdkafka calls but
    // rd_kafka_opaque.
    guard let handle, let cb = callbacks(rd_kafka_opaque(handle)) else { return }
    let facilityName = facility.map { String(cString: $0) } ?? ""
    let text = "\(facilityName): \(buffer.map { String(cString: $0) } ?? "")"
    switch level {
    case ...3:
        guard let omitted = admitWarning(facility: facilityName) else { return }
        cb.logger.warning("librdkafka \(text)", metadata: omitted > 0 ? ["similar-lines-omitted": "\(omitted)"] : [:])
    case 4...5 where facilityName != "CONFWARN" || firstConfigurationWarning(text):
        cb.logger.info("librdkafka \(text)")
    default: cb.logger.debug("librdkafka \(text)")
    }
}

/// Warnings and errors (a broker down: every connection of every handle logs each failed
/// reconnect) at most once a second per facility, process-wide, with the count left out.
private let warningThrottles = Mutex<[String: LogThrottle]>([:])

private func admitWarning(facility: String) -> Int? {
    warningThrottles.withLock { $0[facility, default: LogThrottle()].admit() }
}

/// Configuration warnings seen so far. Every handle gets the same `--kafka-property` set,
/// so a consumer-only property draws the same warning from every producer: a
/// rebalance makes one producer per claimed partition. Each distinct warning is
/// logged at info once per process, and at debug after that.
private let configurationWarnings = Mutex<Set<String>>([])

private func firstConfigurationWarning(_ text: String) -> Bool {
    configurationWarnings.withLock { $0.insert(text).inserted }
}
