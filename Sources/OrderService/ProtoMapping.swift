import EventLog
import OrderDomain
import OrderProto
import SwiftProtobuf

/// Domain values to and from the wire types of `orders.proto`.
enum ProtoMapping {
    static func timestamp(_ t: Timestamp) -> Google_Protobuf_Timestamp {
        Google_Protobuf_Timestamp(seconds: t.seconds, nanos: t.nanosOfSecond)
    }

    static func status(_ s: OrderStatus) -> Ridehailing_Orders_V1_OrderStatus {
        switch s {
        case .placed: .placed
        case .accepted: .accepted
        case .completed: .completed
        case .cancelled: .cancelled
        }
    }

    static func status(_ s: Ridehailing_Orders_V1_OrderStatus) -> OrderStatus? {
        switch s {
        case .placed: .placed
        case .accepted: .accepted
        case .completed: .completed
        case .cancelled: .cancelled
        case .unspecified, .UNRECOGNIZED: nil
        }
    }

    static func waypoint(_ w: Waypoint) -> Ridehailing_Orders_V1_Waypoint {
        var p = Ridehailing_Orders_V1_Waypoint()
        p.address = w.address
        p.lat = w.lat
        p.lon = w.lon
        return p
    }

    static func waypoint(_ p: Ridehailing_Orders_V1_Waypoint) -> Waypoint {
        Waypoint(address: p.address, lat: p.lat, lon: p.lon)
    }

    static func order(_ o: Order) -> Ridehailing_Orders_V1_Order {
        var p = Ridehailing_Orders_V1_Order()
        p.id = o.id
        p.version = Int32(clamping: o.version)
        p.status = status(o.status)
        p.riderID = o.riderId
        p.price = o.price
        p.route = o.route.map(waypoint)
        p.driverID = o.driverId ?? ""
        if let d = o.placedDate { p.placedDate = timestamp(d) }
        if let d = o.acceptedDate { p.acceptedDate = timestamp(d) }
        if let d = o.completedDate { p.completedDate = timestamp(d) }
        if let d = o.cancelledDate { p.cancelledDate = timestamp(d) }
        p.errors = o.errors.map { e in
            var pe = Ridehailing_Orders_V1_OrderError()
            pe.commandType = e.commandType
            pe.expectedVersion = Int32(clamping: e.expectedVersion)
            pe.errorMessage = e.message
            pe.createdDate = timestamp(e.createdDate)
            pe.commandID = e.commandId
            pe.reason = e.reason.rawValue
            pe.actualVersion = Int32(clamping: e.actualVersion)
            return pe
        }
        return p
    }

    static func event(_ projected: ProjectedEvent) -> Ridehailing_Orders_V1_OrderEvent {
        let e = projected.event
        var p = Ridehailing_Orders_V1_OrderEvent()
        p.orderID = e.orderId
        p.version = Int32(clamping: e.version)
        p.createdDate = timestamp(e.createdDate)
        p.eventType = e.typeName
        p.position = projected.position.token
        p.commandID = e.commandId
        switch e.kind {
        case .placed(let riderId, let price, let route):
            var placed = Ridehailing_Orders_V1_OrderPlacedEvent()
            placed.riderID = riderId
            placed.price = price
            placed.route = route.map(waypoint)
            p.orderPlaced = placed
        case .accepted(let driverId):
            var accepted = Ridehailing_Orders_V1_OrderAcceptedEvent()
            accepted.driverID = driverId
            p.orderAccepted = accepted
        case .completed:
            p.orderCompleted = Ridehailing_Orders_V1_OrderCompletedEvent()
        case .cancelled:
            p.orderCancelled = Ridehailing_Orders_V1_OrderCancelledEvent()
        case .rejected(let r):
            var error = Ridehailing_Orders_V1_ErrorEvent()
            error.errorMessage = r.message
            error.commandType = r.commandType
            error.expectedVersion = Int32(clamping: r.expectedVersion)
            error.reason = r.reason.rawValue
            error.actualVersion = Int32(clamping: r.actualVersion)
            p.errorEvent = error
        }
        return p
    }
}
