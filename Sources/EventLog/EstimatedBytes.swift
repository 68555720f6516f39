import OrderDomain

/// Rough sizes in bytes of what the caches hold, for their byte budgets (`BoundedCache`,
/// `TailRing`, the engine's tail cache): the strings' and arrays' bytes plus a fixed
/// allowance per value. An estimate, not a measurement, and on the high side where
/// copies share storage; what matters is that it grows with what a client controls (a
/// route's addresses, an order's lists), which is what a budget must bound.
package protocol EstimatedBytes {
    var estimatedBytes: Int { get }
}

/// A string's heap bytes: none when short enough to be stored inline.
@inline(__always) func stringBytes(_ s: String) -> Int {
    let n = s.utf8.count
    return n <= 15 ? 0 : n + 32
}

extension Waypoint: EstimatedBytes {
    package var estimatedBytes: Int { 24 + stringBytes(address) }
}

func routeBytes(_ route: [Waypoint]) -> Int { route.reduce(32) { $0 + $1.estimatedBytes } }

extension Order: EstimatedBytes {
    package var estimatedBytes: Int {
        var n = 160 + stringBytes(id) + stringBytes(riderId) + stringBytes(price) + routeBytes(route)
        n += driverId.map(stringBytes) ?? 0
        for e in errors { n += 80 + stringBytes(e.commandId) + stringBytes(e.commandType) + stringBytes(e.message) }
        return n
    }
}

extension OrderEvent: EstimatedBytes {
    package var estimatedBytes: Int {
        var n = 96 + stringBytes(orderId) + stringBytes(commandId)
        switch kind {
        case .placed(let riderId, let price, let route): n += stringBytes(riderId) + stringBytes(price) + routeBytes(route)
        case .accepted(let driverId): n += stringBytes(driverId)
        case .completed, .cancelled: break
        case .rejected(let r): n += 48 + stringBytes(r.message) + stringBytes(r.commandType) + (r.field.map(stringBytes) ?? 0)
        }
        return n
    }
}

extension OrderCommand: EstimatedBytes {
    package var estimatedBytes: Int {
        var n = 80 + stringBytes(orderId) + stringBytes(commandId)
        switch kind {
        case .place(let riderId, let price, let route): n += stringBytes(riderId) + stringBytes(price) + routeBytes(route)
        case .accept(let driverId): n += stringBytes(driverId)
        case .complete, .cancel: break
        }
        return n
    }
}

extension OrderHistory: EstimatedBytes {
    /// Events, commands and the state, plus the two id sets.
    package var estimatedBytes: Int {
        var n = 128 + (state?.estimatedBytes ?? 0) + 2 * 64 * commands.count
        for e in events { n += e.estimatedBytes }
        for c in commands { n += c.estimatedBytes }
        return n
    }
}

extension LogFormat.Entry: EstimatedBytes {
    package var estimatedBytes: Int { 48 + stringBytes(type) + stringBytes(subType) + stringBytes(details) }
}

extension LogFormat.Decoded: EstimatedBytes {
    package var estimatedBytes: Int {
        switch self {
        case .command(let command): command.estimatedBytes
        case .event(let event): event.estimatedBytes
        }
    }
}

extension LogFormat.EntryMemo: EstimatedBytes {
    package var estimatedBytes: Int { entry.estimatedBytes + decoded.estimatedBytes }
}

extension AggregateRow: EstimatedBytes {
    package var estimatedBytes: Int { 64 + history.estimatedBytes }
}

extension OrderView: EstimatedBytes {
    /// Each event counts twice: it is kept with its encoding for the store (`StoredForm`).
    package var estimatedBytes: Int {
        events.reduce(64 + stringBytes(orderId) + (order?.estimatedBytes ?? 0)) { $0 + 2 * $1.event.estimatedBytes + 32 }
    }
}

extension LogRecord: EstimatedBytes {
    /// The record, and its memo counted as twice its value: a memo restates the value
    /// decoded (an aggregates row's is the order's history, about the size of the row's
    /// JSON). Estimated from the value, not the memo, because the log's writer works this
    /// out for every record it caches: reaching into the memo (an existential) cost a
    /// dynamic cast and a walk of the whole history per record.
    package var estimatedBytes: Int {
        var n = 96 + key.utf8.count + value.count
        for (k, v) in headers { n += 32 + k.utf8.count + v.utf8.count }
        if memo != nil { n += 2 * value.count }
        return n
    }
}
