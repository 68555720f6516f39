import Synchronization
import OrderDomain

/// A resume token: for every partition of `order-aggregates`, the offset of the next
/// record to read. Opaque to clients ("v1:" + offsets joined by "."), validated on parse.
public struct LogPosition: Sendable, Hashable, Codable, CustomStringConvertible {
    public var offsets: [Int64]
    public init(offsets: [Int64]) { self.offsets = offsets }

    /// "v1:" and the offsets joined by dots. Built in one buffer rather than a string per
    /// offset: StreamEvents makes one per delivery, 1,000 per event with 1,000 subscribers.
    public var token: String {
        var bytes: [UInt8] = [UInt8(ascii: "v"), UInt8(ascii: "1"), UInt8(ascii: ":")]
        bytes.reserveCapacity(3 + offsets.count * 8)
        for (i, offset) in offsets.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ".")) }
            guard offset >= 0 else {
                bytes += Array(String(offset).utf8)
                continue
            }
            let start = bytes.count
            var n = offset
            repeat {
                bytes.append(UInt8(ascii: "0") + UInt8(n % 10))
                n /= 10
            } while n > 0
            bytes[start...].reverse()
        }
        return String(decoding: bytes, as: UTF8.self)
    }
    public var description: String { token }

    /// Parses a token; nil when malformed or made for another partition count.
    public init?(token: String, partitions: Int) {
        guard token.hasPrefix("v1:") else { return nil }
        let parts = token.dropFirst(3).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == partitions else { return nil }
        var offsets: [Int64] = []
        for part in parts {
            guard part.count <= 19, let v = Int64(part), v >= 0, part.allSatisfy(\.isASCII) else { return nil }
            offsets.append(v)
        }
        self.offsets = offsets
    }
}

/// An event as the read model keeps it: with the position just after it.
public struct ProjectedEvent: Sendable, Hashable, Codable {
    public var event: OrderEvent {
        didSet { storedForm = StoredForm() }
    }
    public var position: LogPosition {
        didSet { storedForm = StoredForm() }
    }
    /// The event's encoding in the read model, made once: a view is rewritten with all its
    /// events whenever the order changes.
    var storedForm = StoredForm()

    public init(event: OrderEvent, position: LogPosition) {
        self.event = event
        self.position = position
    }

    enum CodingKeys: String, CodingKey { case event, position }
}

/// A memo that takes no part in equality, hashing or coding.
final class StoredForm: Sendable, Hashable {
    private let bytes = Mutex<[UInt8]?>(nil)

    func value(_ make: () -> [UInt8]) -> [UInt8] {
        if let made = bytes.withLock({ $0 }) { return made }
        let made = make()
        bytes.withLock { $0 = made }
        return made
    }

    static func == (a: StoredForm, b: StoredForm) -> Bool { true }
    func hash(into hasher: inout Hasher) {}
}

/// One order in the read model: its current state (nil while only error events exist,
/// e.g. a command on an unknown id) and its whole history.
public struct OrderView: Sendable, Hashable, Codable {
    public var orderId: String
    public var order: Order?
    public var events: [ProjectedEvent]
    public init(orderId: String, order: Order?, events: [ProjectedEvent]) {
        self.orderId = orderId
        self.order = order
        self.events = events
    }
}

/// A command's outcome, kept forever: a retried request_id gets the first outcome back.
public struct CommandOutcome: Sendable, Hashable, Codable {
    public var commandId: String
    public var orderId: String
    public var event: OrderEvent
    /// The order right after the event (nil for an error on an unknown order).
    public var order: Order?
    public var position: LogPosition
    public init(commandId: String, orderId: String, event: OrderEvent, order: Order?, position: LogPosition) {
        self.commandId = commandId
        self.orderId = orderId
        self.event = event
        self.order = order
        self.position = position
    }
}

/// What the projector writes in one atomic step.
public struct ReadModelUpdate: Sendable {
    /// Orders to upsert (the whole view replaces the stored one).
    public var views: [OrderView]
    /// Outcomes to insert; an existing command id keeps its first outcome.
    public var outcomes: [CommandOutcome]
    /// The projector's checkpoint after this update.
    public var checkpoint: LogPosition
    public init(views: [OrderView], outcomes: [CommandOutcome], checkpoint: LogPosition) {
        self.views = views
        self.outcomes = outcomes
        self.checkpoint = checkpoint
    }
}

/// A page of orders; `cursor` of the last one continues the listing.
public struct OrderPage: Sendable, Hashable {
    public var orders: [Order]
    /// `orders[i]`'s cursor is `cursors[i]`: a caller that returns only the first orders of
    /// the page (ListOrders, to keep a response under its byte budget) continues the listing
    /// exactly after the last one it returns.
    public var cursors: [Int64]
    public var nextCursor: Int64?
    public init(orders: [Order], cursors: [Int64], nextCursor: Int64?) {
        precondition(orders.count == cursors.count, "one cursor per order")
        self.orders = orders
        self.cursors = cursors
        self.nextCursor = nextCursor
    }
}

/// The query side: current state per order, histories, outcomes by command id,
/// listing by status. Local to each server instance; rebuilt from `order-aggregates`.
public protocol ReadModelStore: Sendable {
    /// The checkpoint of the last applied update, nil for an empty store.
    func checkpoint() async throws -> LogPosition?
    /// Applies views, outcomes and the checkpoint atomically. A crash may take back the
    /// last applies but never splits one: the projector redoes them from the checkpoint
    /// that survived (the read model only ever holds durable log records).
    func apply(_ update: ReadModelUpdate) async throws
    func view(orderId: String) async throws -> OrderView?
    /// The views of those orders that have one: one round trip for a batch.
    func views(orderIds: Set<String>) async throws -> [String: OrderView]
    func outcome(commandId: String) async throws -> CommandOutcome?
    /// Orders (that exist, i.e. `order != nil`) in placement order, after `cursor`
    /// (0 = from the start), optionally with one status; at most `limit`.
    func listOrders(status: OrderStatus?, after cursor: Int64, limit: Int) async throws -> OrderPage
    /// Why updates fail now (the last one hit a full or failing disk, and none has been
    /// applied since), or nil. For health checks: answers at once.
    func writeFailure() async -> LogError?
}

extension ReadModelStore {
    /// Nothing known: an update's failure reaches only its caller.
    public func writeFailure() async -> LogError? { nil }

    public func views(orderIds: Set<String>) async throws -> [String: OrderView] {
        var out: [String: OrderView] = [:]
        for id in orderIds {
            if let view = try await view(orderId: id) { out[id] = view }
        }
        return out
    }
}
