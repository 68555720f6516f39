import EventLog
import GRPCWire
import OrderDomain
import OrderProto
import Synchronization

/// The proto form of recently read orders, with its serialized bytes, so GetOrder on a hot
/// order maps and encodes it once per change instead of once per call (the mapping's
/// allocations were a tenth of a call, the encoding another tenth).
///
/// An order's state is a fold of its events: its id, version (bumped by every accepted
/// event) and number of errors (one per rejected command) identify it exactly.
///
/// Bounded by orders and by bytes: an entry holds the order three times (the message and
/// its binary and JSON forms), with a maximal route about 300 KB, so 10,000 entries alone
/// could reach 3 GB.
final class MappedOrderCache: Sendable {
    private struct Entry {
        var version: Int
        var errors: Int
        /// The order three times: the message and its binary and JSON forms.
        var bytes: Int
        var encoded: EncodedMessage<Ridehailing_Orders_V1_Order>
    }

    private let entries: Mutex<BoundedCache<String, Entry>>

    init(capacity: Int, maxBytes: Int = 64 << 20) {
        entries = Mutex(BoundedCache(capacity: capacity, maxBytes: maxBytes) { _, entry in entry.bytes })
    }

    /// Orders held and their estimated bytes (for tests).
    var usage: (count: Int, bytes: Int) { entries.withLock { ($0.count, $0.bytes) } }

    func encoded(for order: Order) -> EncodedMessage<Ridehailing_Orders_V1_Order> {
        if let hit = entries.withLock({ $0[order.id] }), hit.version == order.version, hit.errors == order.errors.count {
            return hit.encoded
        }
        let encoded = EncodedMessage(ProtoMapping.order(order))
        entries.withLock { $0[order.id] = Entry(version: order.version, errors: order.errors.count, bytes: 3 * order.estimatedBytes, encoded: encoded) }
        return encoded
    }
}
