import OrderDomain

/// An order's list of commands and events (an ORDER_AGGREGATES row), decoded and made
/// consistent, built entry by entry.
///
/// It is robust to what a log can contain: a command repeated (a client retry, an
/// at-least-once redelivery) counts once; an event that answers an already answered
/// command, or whose version does not follow the state, is dropped (a duplicate write
/// after a crash); an entry that does not decode is reported and skipped, so a bad record
/// never blocks the order.
public struct OrderHistory: Sendable {
    public let orderId: String
    /// The accepted events, in order: versions 1, 2, 3 … without gap or duplicate.
    public private(set) var events: [OrderEvent] = []
    /// Distinct commands, in order of first appearance.
    public private(set) var commands: [OrderCommand] = []
    /// The state folded from `events`.
    public private(set) var state: Order?
    private var commandIds: Set<String> = []
    private var answered: Set<String> = []

    /// What one entry did to the history.
    public enum Change: Sendable {
        case command(OrderCommand)
        case event(OrderEvent)
        /// A command already in the history, again (a client's retry, the gateway's
        /// re-send, a redelivery): ignored, though it may prompt a decision it still lacks.
        case repeatedCommand(OrderCommand)
        /// A repeated event, ignored.
        case duplicate
        /// Not usable: undecodable, or an event inconsistent with the state.
        case invalid(String)
    }

    public init(orderId: String) { self.orderId = orderId }

    public init(orderId: String, entries: some Sequence<LogFormat.Entry>) {
        self.orderId = orderId
        for entry in entries { apply(entry) }
    }

    /// Applies the next entry; `decoded`, when the caller has it (a record's memo), is
    /// that entry decoded.
    @discardableResult
    public mutating func apply(_ entry: LogFormat.Entry, decoded known: LogFormat.Decoded? = nil) -> Change {
        let decoded: LogFormat.Decoded
        if let known {
            decoded = known
        } else {
            do {
                decoded = try LogFormat.decode(entry, orderId: orderId)
            } catch {
                return .invalid(error.message)
            }
        }
        switch decoded {
        case .command(let command):
            guard commandIds.insert(command.commandId).inserted else { return .repeatedCommand(command) }
            commands.append(command)
            return .command(command)
        case .event(let event):
            guard !answered.contains(event.commandId) else { return .duplicate }
            let current = state?.version ?? 0
            let expected = event.isError ? current : current + 1
            guard event.version == expected else {
                return .invalid("\(event.typeName) for command \(event.commandId) has version \(event.version), expected \(expected)")
            }
            if state == nil, !event.isError, event.typeName != "OrderPlacedEvent" {
                return .invalid("\(event.typeName) for an order that was never placed")
            }
            answered.insert(event.commandId)
            events.append(event)
            state = OrderDecider.evolve(state, event)
            return .event(event)
        }
    }

    /// The first command without an outcome: the next one to decide. Commands behind it
    /// wait, so each is decided against the outcomes of all earlier ones.
    public var firstUnanswered: OrderCommand? {
        commands.first { !answered.contains($0.commandId) }
    }

    public func isAnswered(_ commandId: String) -> Bool { answered.contains(commandId) }
    public func contains(command commandId: String) -> Bool { commandIds.contains(commandId) }
}
