import OrderDomain

/// The read model's stored form of views and outcomes: JSON through `JSON.Writer` and
/// `JSON.parse` (Codable's JSON was the projector's main cost). Events are stored in the
/// log's own DETAILS form, so the read model reads like the log; an order's state is
/// not stored but folded from its events on read, so the two cannot disagree.
public enum ReadModelCodec {
    public struct DecodingError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static func encode(_ view: OrderView) -> [UInt8] {
        var w = JSON.Writer(capacity: 512)
        w.beginObject()
        w.member("orderId", view.orderId)
        w.key("events")
        w.beginArray()
        for e in view.events { write(e, &w) }
        w.endArray()
        w.endObject()
        return w.bytes
    }

    public static func decodeView(_ bytes: [UInt8]) throws(DecodingError) -> OrderView {
        let json = try parse(bytes)
        guard let orderId = json["orderId"]?.string, let items = json["events"]?.array else {
            throw DecodingError(message: "a stored view needs orderId and events")
        }
        var events: [ProjectedEvent] = []
        events.reserveCapacity(items.count)
        for item in items { events.append(try read(item, orderId: orderId)) }
        return OrderView(orderId: orderId, order: OrderDecider.fold(events.lazy.map(\.event)), events: events)
    }

    /// An outcome is stored with the order's history up to and including its event, so the
    /// order it reports is folded from the same events.
    public static func encode(_ outcome: CommandOutcome, history: [ProjectedEvent]) -> [UInt8] {
        var w = JSON.Writer(capacity: 512)
        w.beginObject()
        w.member("commandId", outcome.commandId)
        w.member("orderId", outcome.orderId)
        w.key("event")
        write(ProjectedEvent(event: outcome.event, position: outcome.position), &w)
        w.key("history")
        w.beginArray()
        for e in history { write(e, &w) }
        w.endArray()
        w.endObject()
        return w.bytes
    }

    /// A command's outcome as its order's view holds it: the first event the command made,
    /// and the order folded from the history up to and including it. Events are only ever
    /// appended to a view, so this is the first outcome however much later it is asked.
    public static func outcome(of commandId: String, in view: OrderView) -> CommandOutcome? {
        guard let i = view.events.firstIndex(where: { $0.event.commandId == commandId }) else { return nil }
        let projected = view.events[i]
        return CommandOutcome(
            commandId: commandId, orderId: view.orderId, event: projected.event,
            order: OrderDecider.fold(view.events[...i].lazy.map(\.event)), position: projected.position)
    }

    public static func decodeOutcome(_ bytes: [UInt8]) throws(DecodingError) -> CommandOutcome {
        let json = try parse(bytes)
        guard let commandId = json["commandId"]?.string, let orderId = json["orderId"]?.string, let event = json["event"],
            let history = json["history"]?.array
        else { throw DecodingError(message: "a stored outcome needs commandId, orderId, event and history") }
        let projected = try read(event, orderId: orderId)
        var events: [OrderEvent] = []
        for item in history { events.append(try read(item, orderId: orderId).event) }
        return CommandOutcome(
            commandId: commandId, orderId: orderId, event: projected.event, order: OrderDecider.fold(events),
            position: projected.position)
    }

    private static func write(_ e: ProjectedEvent, _ w: inout JSON.Writer) {
        w.raw(e.storedForm.value { encode(e) })
    }

    private static func encode(_ e: ProjectedEvent) -> [UInt8] {
        let entry = LogFormat.entry(e.event)
        var w = JSON.Writer(capacity: 256)
        w.beginObject()
        w.member("type", entry.subType)
        w.key("details")
        w.raw(entry.details.utf8)
        w.member("position", e.position.token)
        w.endObject()
        return w.bytes
    }

    private static func read(_ json: JSON.Value, orderId: String) throws(DecodingError) -> ProjectedEvent {
        guard let type = json["type"]?.string, let details = json["details"], let token = json["position"]?.string,
            let position = LogPosition(token: token)
        else { throw DecodingError(message: "a stored event needs type, details and position") }
        do {
            guard case .event(let event) = try LogFormat.decode(type: LogFormat.event, subType: type, details: details, orderId: orderId) else {
                throw DecodingError(message: "a stored event is not an event")
            }
            return ProjectedEvent(event: event, position: position)
        } catch let error as LogFormat.FormatError {
            throw DecodingError(message: "a stored event does not decode: \(error)")
        } catch {
            throw error as! DecodingError
        }
    }

    private static func parse(_ bytes: [UInt8]) throws(DecodingError) -> JSON.Value {
        do {
            return try JSON.parse(bytes)
        } catch {
            throw DecodingError(message: "stored JSON does not parse: \(error)")
        }
    }
}

extension LogPosition {
    /// Parses a token of any partition count (stored positions are this instance's own).
    public init?(token: String) {
        guard token.hasPrefix("v1:") else { return nil }
        let count = token.utf8.reduce(1) { $0 + ($1 == UInt8(ascii: ".") ? 1 : 0) }
        self.init(token: token, partitions: count)
    }
}
