import OrderDomain

/// The write side's front door: appends a command to `order-commands-and-events` and
/// waits for its outcome (correlated by command id) to reach the read model.
public struct CommandGateway: Sendable {
    /// The command's outcome was not known in time; retrying with the same request_id is
    /// safe and returns the outcome.
    public struct OutcomeTimeout: Error, Sendable, CustomStringConvertible {
        public var commandId: String
        /// Whether the command is durable; false when its append itself did not end in time.
        public var appended = true
        public var description: String {
            guard appended else {
                return "command \(commandId) was not acknowledged in time (the event store is slow to answer); it may or may not have been written: "
                    + CommandGateway.retryIsSafe
            }
            return "the outcome of command \(commandId) was not known in time; it is durable and will be applied once: retry with the same request_id"
        }
    }

    /// What a client whose command failed to be written must know: the command handler
    /// decides a command id once, and the gateway answers a retry with that decision.
    static let retryIsSafe = "retrying with the same request_id is safe and returns its one outcome"

    let engine: any LogEngine
    let store: any ReadModelStore
    let projector: Projector
    let topics: Topics
    /// How long an outcome may take before the command is appended once more, and again
    /// after each such wait (nil: never). A repeated command is harmless, and it makes the
    /// command handler decide again a command whose decision never reached the aggregates
    /// table.
    let resendAfter: Duration?
    /// Commands one order takes (`OrderPipeline.Config.maxCommandsPerOrder`).
    let maxCommandsPerOrder: Int
    /// The appends' waits: an append blocked on a log that stopped answering runs on.
    private let appends = BoundedWait<Result<Void, any Error>>()
    /// The waits of order lookups in the log (`orderIsInTheLog`).
    private let lookups = BoundedWait<Result<Bool, any Error>>()

    public init(
        engine: any LogEngine, store: any ReadModelStore, projector: Projector, topics: Topics, resendAfter: Duration? = .seconds(3),
        maxCommandsPerOrder: Int = 100
    ) {
        self.engine = engine
        self.store = store
        self.projector = projector
        self.topics = topics
        self.resendAfter = resendAfter
        self.maxCommandsPerOrder = maxCommandsPerOrder
    }

    /// Submits `command` and returns its outcome: the first outcome ever recorded for its
    /// command id (a retry never applies twice). The outcome's event may be an error
    /// (`.rejected`); invalid input and unknown orders are refused before anything is
    /// written (thrown `OrderRejection`).
    public func submit(_ command: OrderCommand, timeout: Duration) async throws -> CommandOutcome {
        try OrderValidation.validate(command)
        return try Self.answering(command, with: try await firstOutcome(of: command, within: timeout))
    }

    /// The outcome recorded under `command`'s id, appending the command unless there is one.
    private func firstOutcome(of command: OrderCommand, within timeout: Duration) async throws -> CommandOutcome {
        let deadline = ContinuousClock.now + timeout
        var ticket: Waiters<String, CommandOutcome>.Ticket
        switch try await send(command, checkingTheOrder: true, before: deadline) {
        case .answered(let outcome): return outcome
        case .sent(let listening): ticket = listening
        }
        // Again and again: a re-send that lands before the lost decision does (a handler
        // slow to decide) cannot tell the handler that decision went missing; a later one can.
        while let resendAfter, ContinuousClock.now + resendAfter < deadline {
            if let outcome = await projector.outcomes.wait(ticket, timeout: resendAfter) { return outcome }
            try Task.checkCancellation()
            switch try await send(command, checkingTheOrder: false, before: deadline) {
            case .answered(let outcome): return outcome
            case .sent(let listening): ticket = listening
            }
        }
        if let outcome = await projector.outcomes.wait(ticket, timeout: deadline - .now) { return outcome }
        try Task.checkCancellation()
        return try await outcome(of: command.commandId, deadline: deadline)
    }

    /// `outcome`, recorded under `command`'s id, if it answers `command`: the same order,
    /// the same kind of command, the same expected version, the same fields where its event
    /// records them (`differingFields`). Otherwise the request_id was used before for
    /// another command, and answering with that command's outcome would report on an order
    /// the caller never named, or one it did not ask for: refused, naming the field.
    static func answering(_ command: OrderCommand, with outcome: CommandOutcome) throws(OrderRejection) -> CommandOutcome {
        let answered: (type: String, expectedVersion: Int)
        switch outcome.event.kind {
        case .placed: answered = ("PlaceOrder", 0)
        case .accepted: answered = ("AcceptOrder", outcome.event.version - 1)
        case .completed: answered = ("CompleteOrder", outcome.event.version - 1)
        case .cancelled: answered = ("CancelOrder", outcome.event.version - 1)
        case .rejected(let rejection): answered = (rejection.commandType, rejection.expectedVersion)
        }
        guard outcome.orderId != command.orderId || answered.type != command.typeName
            || answered.expectedVersion != command.expectedVersion
        else {
            if let fields = differingFields(command, outcome.event) {
                throw OrderRejection(
                    reason: .invalidArgument,
                    message: "request_id '\(command.commandId.prefix(64))' was used before for \(answered.type) of order \(outcome.orderId) "
                        + "with another \(fields.joined(separator: ", ")); a retry must repeat that request, another command needs a new request_id",
                    field: "request_id", commandType: command.typeName, expectedVersion: command.expectedVersion, actualVersion: 0)
            }
            return outcome
        }
        throw OrderRejection(
            reason: .invalidArgument,
            message: "request_id '\(command.commandId.prefix(64))' was used before for \(answered.type) of order \(outcome.orderId) "
                + "at version \(answered.expectedVersion); a retry must repeat that command, another command needs a new request_id",
            field: "request_id", commandType: command.typeName, expectedVersion: command.expectedVersion, actualVersion: 0)
    }

    /// The fields of `command` that differ from those of the event that answered the first
    /// command with its id, nil when none do: a second client that happened on the same
    /// request_id (or a retry that changed the request) must not be told its order was
    /// placed when another one was. Rejections carry no payload to compare.
    static func differingFields(_ command: OrderCommand, _ event: OrderEvent) -> [String]? {
        var fields: [String] = []
        switch (command.kind, event.kind) {
        case (.place(let riderId, let price, let route), .placed(let firstRider, let firstPrice, let firstRoute)):
            if riderId != firstRider { fields.append("rider_id") }
            if price != firstPrice { fields.append("price") }
            if route != firstRoute { fields.append("route") }
        case (.accept(let driverId), .accepted(let firstDriver)):
            if driverId != firstDriver { fields.append("driver_id") }
        default: break
        }
        return fields.isEmpty ? nil : fields
    }

    private enum Sent {
        /// An outcome was recorded already (a retry): nothing was appended.
        case answered(CommandOutcome)
        /// Appended; the ticket listens for the outcome.
        case sent(Waiters<String, CommandOutcome>.Ticket)
    }

    /// Appends `command` unless its outcome is recorded already. Listens first, so an
    /// outcome projected before this task resumes from the append is kept for it, not
    /// missed. `checkingTheOrder`: refuse an update of an order that does not exist.
    private func send(_ command: OrderCommand, checkingTheOrder: Bool, before deadline: ContinuousClock.Instant) async throws -> Sent {
        let ticket = projector.outcomes.register(command.commandId)
        do {
            if let outcome = try await recordedOutcome(command.commandId) {
                projector.outcomes.cancel(ticket)
                return .answered(outcome)
            }
            if checkingTheOrder { try await requireOrder(of: command, before: deadline) }
            try await append(command, before: deadline)
            return .sent(ticket)
        } catch {
            projector.outcomes.cancel(ticket)
            throw error
        }
    }

    /// Refuses an update of an order that does not exist (placing needs none), and, once
    /// an order has taken `maxCommandsPerOrder` commands, every command it would reject.
    ///
    /// Every command adds two entries to the order's aggregates lists, which each of its
    /// rows carries whole, so an order hammered with commands (a client retrying a stale
    /// version in a loop) would cost disk in the square of their number; ksqlDB's
    /// COLLECT_LIST stops at `ksql.functions.collect_list.limit` entries (1000 on
    /// Confluent Cloud) and would silently leave later commands undecided. Past the limit
    /// the decider's answer is given here, from the order as the read model has it, with
    /// nothing written: the same status the command would get, without its ErrorEvent.
    /// The state changes left in the order's life (accepting, completing, cancelling: two
    /// at most) still go through, so no client looping on a stale version can freeze it.
    private func requireOrder(of command: OrderCommand, before deadline: ContinuousClock.Instant) async throws {
        if case .place = command.kind { return }
        guard let view = try await projector.view(orderId: command.orderId), let order = view.order else {
            // Placed through another instance a moment ago, this one's read model may not
            // have it yet: the log's aggregates row decides. With one, the command goes
            // on to the handler, which decides it on the order as the log has it.
            if try await orderIsInTheLog(command.orderId, before: deadline) { return }
            throw OrderRejection(
                reason: .notFound, message: "Order \(command.orderId) not found", commandType: command.typeName,
                expectedVersion: command.expectedVersion, actualVersion: 0)
        }
        // Every decided command left one event, an ErrorEvent for a refused one.
        guard view.events.count >= maxCommandsPerOrder else { return }
        // Decided here only on a view that has every outcome acknowledged so far. A read
        // model still catching up (a restart: kill -9 leaves its last batches unwritten) may
        // lack this command's own outcome and the changes before it, and would refuse a
        // command the log applied; the handler decides it on the log instead (a retry gets
        // its first outcome). A view that has the command's event got it since
        // `recordedOutcome` looked: it answers, once the append lets the ticket be waited on.
        guard projector.isReady, !view.events.contains(where: { $0.event.commandId == command.commandId }) else { return }
        do {
            _ = try OrderDecider.accept(command, state: order, now: Clock.now())
        } catch {
            var refused = error
            refused.message += " (not recorded: the order has taken \(view.events.count) commands, and past \(maxCommandsPerOrder) only those that change it are)"
            throw refused
        }
    }

    /// Whether the log has an aggregates row of `orderId`. A log that cannot tell (a
    /// broker that does not answer) is UNAVAILABLE, not NOT_FOUND: the order may well
    /// exist, and a client told it does not would give up on it. Waited for as an append
    /// is (`appendPatience`, and `deadline`): a lookup blocked on a frozen broker runs to
    /// librdkafka's request timeout.
    private func orderIsInTheLog(_ orderId: String, before deadline: ContinuousClock.Instant) async throws -> Bool {
        let engine = self.engine
        let topic = topics.aggregates
        guard let patience = engine.appendPatience else {
            return try await engine.currentRecord(topic: topic, key: orderId) != nil
        }
        let wait = min(patience, deadline - .now)
        // No time left: no lookup is started only to be abandoned.
        guard wait > .zero else {
            throw LogError(.unavailable, "no time was left to learn whether order \(orderId) exists")
        }
        switch await lookups.result(within: wait, of: { try await engine.currentRecord(topic: topic, key: orderId) != nil }) {
        case .success(let found): return found
        case .failure(let error): throw error
        case nil:
            try Task.checkCancellation()
            throw LogError(.unavailable, "could not learn within \(wait) whether order \(orderId) exists: the log does not answer")
        }
    }

    /// Appends `command`. On an engine with an `appendPatience`, waits until `deadline` at
    /// most, and no longer than that patience: a Kafka broker that stopped answering holds an append until
    /// librdkafka gives up (30 s), and a call held that long ends in the client's bare
    /// DEADLINE_EXCEEDED, or lets it wait for nothing. The append runs on in a task of its
    /// own and may still land; the command handler decides a command id once, so a retry
    /// with the same request_id gets that one outcome.
    private func append(_ command: OrderCommand, before deadline: ContinuousClock.Instant) async throws {
        let (value, memo) = LogFormat.encodeForLog(command, remember: !engine.keepsMemos)
        let record = OutgoingRecord(
            topic: topics.commandsAndEvents, key: command.orderId, value: value, headers: ["command-id": command.commandId], memo: memo)
        let engine = self.engine
        guard let patience = engine.appendPatience else {
            // An engine whose appends wait on no network (embedded: the writer's next
            // group commit) is awaited in place: a task and a timer per command would cost
            // the hot path more than the wait they bound.
            _ = try await engine.append([record], commit: nil, durability: .deferred)
            return
        }
        let left = deadline - .now
        // No time left (a re-send at the deadline): no append is started only to be
        // abandoned; during an outage each would run to librdkafka's delivery timeout.
        guard left > .zero else { throw OutcomeTimeout(commandId: command.commandId, appended: false) }
        let result = await appends.result(within: min(patience, left)) {
            // The caller learns nothing from this append, only from the outcome, which
            // the projector reads from the durable log: a command lost to a crash before
            // its fsync was never acknowledged, and its retry is applied once.
            try await engine.append([record], commit: nil, durability: .deferred)
        }
        switch result {
        case .success: return
        case .failure(let error as LogError):
            throw LogError(
                error.code, "\(error.message); command \(command.commandId) may or may not have been written: \(Self.retryIsSafe)",
                file: error.file, line: error.line)
        case .failure(let error): throw error
        case nil:
            try Task.checkCancellation()
            if patience < left {
                throw LogError(
                    .unavailable,
                    "no acknowledgement of command \(command.commandId) within \(patience); it may or may not have been written: \(Self.retryIsSafe)")
            }
            throw OutcomeTimeout(commandId: command.commandId, appended: false)
        }
    }

    /// Waits for a command's outcome until `deadline`.
    public func outcome(of commandId: String, deadline: ContinuousClock.Instant) async throws -> CommandOutcome {
        let ticket = projector.outcomes.register(commandId)
        if let outcome = try await recordedOutcome(commandId) {
            projector.outcomes.cancel(ticket)
            return outcome
        }
        if let outcome = await projector.outcomes.wait(ticket, timeout: deadline - .now) { return outcome }
        try Task.checkCancellation()
        // Published just as the wait timed out?
        if let outcome = try await recordedOutcome(commandId) { return outcome }
        throw OutcomeTimeout(commandId: commandId)
    }

    /// The outcome the read model holds for a command, including one the projector
    /// published whose store write is still in flight (checked first: it leaves memory
    /// only once the store has it).
    private func recordedOutcome(_ commandId: String) async throws -> CommandOutcome? {
        if let outcome = projector.unwrittenOutcome(commandId: commandId) { return outcome }
        return try await store.outcome(commandId: commandId)
    }
}
