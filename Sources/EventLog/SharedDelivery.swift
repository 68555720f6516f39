import Synchronization

/// One live event as every caught-up subscriber receives it, so the RPC layer can build
/// and encode its response once per event instead of once per subscriber.
///
/// A subscriber's delivery of an event is the event plus its position after it. On the
/// shared tail, every subscriber that has seen everything the ring held before the event
/// (all caught-up ones) has the same position after it: the ring's own. Those deliveries
/// carry this object (``EventSubscription/Delivery/shared``); the others (a filter-less
/// position that is still ahead of the ring in some partition, an own reader) carry nil.
///
/// - Important: ``value(_:)`` runs `make` under a lock, once; concurrent callers wait for
///   that result instead of making their own.
public final class SharedDelivery: Sendable {
    /// The position after this record for a subscriber that read the ring up to it: the
    /// position of every delivery that carries this object.
    public let position: LogPosition
    private let memo = Mutex<(any Sendable)?>(nil)

    init(position: LogPosition) {
        self.position = position
    }

    /// What the first caller made for this delivery (`make` runs once per type of value).
    public func value<T: Sendable>(_ make: () throws -> T) rethrows -> T {
        try memo.withLock { memo in
            if let made = memo as? T { return made }
            let made = try make()
            memo = made
            return made
        }
    }
}
