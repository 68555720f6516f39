/// The Order decider: `decide(command, state) -> event` and `evolve(state, event) -> state`.
/// Pure functions: the time comes in as an argument.
///
/// Allowed transitions: place only a new order; accept only PLACED; complete only
/// ACCEPTED; cancel PLACED or ACCEPTED. Unlike the seed, a COMPLETED order cannot be
/// accepted again and an unknown id never creates a "ghost" order.
public enum OrderDecider {
    /// The command's one outcome: the state-changing event, or an `ErrorEvent`
    /// (`.rejected`) that carries the order's unchanged version.
    public static func decide(_ command: OrderCommand, state: Order?, now: Timestamp) -> OrderEvent {
        do {
            return try accept(command, state: state, now: now)
        } catch {
            return OrderEvent(
                orderId: command.orderId, version: state?.version ?? 0, createdDate: now,
                commandId: command.commandId, kind: .rejected(error))
        }
    }

    /// The state-changing event, or the rejection.
    public static func accept(_ command: OrderCommand, state: Order?, now: Timestamp) throws(OrderRejection) -> OrderEvent {
        try OrderValidation.validate(command)
        let current = state?.version ?? 0
        func reject(_ reason: OrderRejection.Reason, _ message: String) -> OrderRejection {
            OrderRejection(
                reason: reason, message: message, commandType: command.typeName,
                expectedVersion: command.expectedVersion, actualVersion: current)
        }
        func event(_ kind: OrderEvent.Kind) -> OrderEvent {
            OrderEvent(orderId: command.orderId, version: current + 1, createdDate: now, commandId: command.commandId, kind: kind)
        }
        if case .place(let riderId, let price, let route) = command.kind {
            guard state == nil else { throw reject(.alreadyExists, "Order \(command.orderId) already exists") }
            return event(.placed(riderId: riderId, price: price, route: route))
        }
        guard let order = state else { throw reject(.notFound, "Order \(command.orderId) not found") }
        guard command.expectedVersion == order.version else {
            throw reject(
                .versionMismatch,
                "Actual version \(order.version) doesn't match expected version \(command.expectedVersion)")
        }
        switch (command.kind, order.status) {
        case (.accept(let driverId), .placed):
            return event(.accepted(driverId: driverId))
        case (.complete, .accepted):
            return event(.completed)
        case (.cancel, .placed), (.cancel, .accepted):
            return event(.cancelled)
        case (.accept, _):
            throw reject(.transitionNotAllowed, "Order in status \(order.status.rawValue) can't be accepted")
        case (.complete, _):
            throw reject(.transitionNotAllowed, "Order in status \(order.status.rawValue) can't be completed")
        case (.cancel, _):
            throw reject(.transitionNotAllowed, "Order in status \(order.status.rawValue) can't be cancelled")
        case (.place, _):
            preconditionFailure("handled above")
        }
    }

    /// Applies one event. An error event only adds to `errors`; on a missing order it is
    /// dropped (no ghost orders).
    public static func evolve(_ state: Order?, _ event: OrderEvent) -> Order? {
        switch event.kind {
        case .placed(let riderId, let price, let route):
            return Order(
                id: event.orderId, version: event.version, status: .placed, riderId: riderId, price: price,
                route: route, placedDate: event.createdDate)
        case .rejected(let rejection):
            guard var order = state else { return nil }
            order.errors.append(
                OrderError(
                    commandId: event.commandId, commandType: rejection.commandType, reason: rejection.reason,
                    expectedVersion: rejection.expectedVersion, actualVersion: rejection.actualVersion,
                    message: rejection.message, createdDate: event.createdDate))
            return order
        case .accepted(let driverId):
            guard var order = state else { return nil }
            order.status = .accepted
            order.driverId = driverId
            order.acceptedDate = event.createdDate
            order.version = event.version
            return order
        case .completed:
            guard var order = state else { return nil }
            order.status = .completed
            order.completedDate = event.createdDate
            order.version = event.version
            return order
        case .cancelled:
            guard var order = state else { return nil }
            order.status = .cancelled
            order.cancelledDate = event.createdDate
            order.version = event.version
            return order
        }
    }

    public static func fold(_ events: some Sequence<OrderEvent>, from state: Order? = nil) -> Order? {
        events.reduce(state, evolve)
    }
}
