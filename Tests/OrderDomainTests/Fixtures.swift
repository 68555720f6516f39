import Testing
import OrderDomain

/// Shared building blocks for the domain tests: valid ids, a valid route, commands and
/// the canonical events of an order's life, written out by hand so that a "given"
/// history never depends on the decider under test.
enum Fixture {
    static let orderId = "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11"
    static let otherOrderId = "0b5e1c2d-7f3a-4e9b-8c1d-9a2b3c4d5e6f"
    static let riderId = "a3d7e8f0-1b2c-4d5e-9f60-718293a4b5c6"
    static let driverId = "D4E5F6A7-B8C9-4DAE-8F01-23456789ABCD"
    static let price = "123.45"
    static let route = [
        Waypoint(address: "Main Street 1, Springfield", lat: 52.5200, lon: 13.4050),
        Waypoint(address: "Airport Terminal 2", lat: 52.3667, lon: 13.5033),
    ]

    /// 2021-04-19T08:58:19.818153Z, the seed's example instant, and a few after it.
    static let t0 = Timestamp(microseconds: 1_618_822_699_818_153)
    static let t1 = Timestamp(microseconds: 1_618_822_760_000_001)
    static let t2 = Timestamp(microseconds: 1_618_823_000_250_000)
    static let t3 = Timestamp(microseconds: 1_618_824_000_999_999)
    static let now = Timestamp(microseconds: 1_618_830_000_123_456)

    // MARK: Commands

    static func place(
        commandId: String = "cmd-place", orderId: String = orderId, expectedVersion: Int = 0,
        riderId: String = riderId, price: String = price, route: [Waypoint] = route
    ) -> OrderCommand {
        OrderCommand(
            commandId: commandId, orderId: orderId, expectedVersion: expectedVersion,
            kind: .place(riderId: riderId, price: price, route: route))
    }

    static func accept(
        commandId: String = "cmd-accept", orderId: String = orderId, expectedVersion: Int,
        driverId: String = driverId
    ) -> OrderCommand {
        OrderCommand(commandId: commandId, orderId: orderId, expectedVersion: expectedVersion, kind: .accept(driverId: driverId))
    }

    static func complete(commandId: String = "cmd-complete", orderId: String = orderId, expectedVersion: Int) -> OrderCommand {
        OrderCommand(commandId: commandId, orderId: orderId, expectedVersion: expectedVersion, kind: .complete)
    }

    static func cancel(commandId: String = "cmd-cancel", orderId: String = orderId, expectedVersion: Int) -> OrderCommand {
        OrderCommand(commandId: commandId, orderId: orderId, expectedVersion: expectedVersion, kind: .cancel)
    }

    // MARK: Events, written out by hand

    static func placed(version: Int = 1, at date: Timestamp = t0, commandId: String = "cmd-place") -> OrderEvent {
        OrderEvent(
            orderId: orderId, version: version, createdDate: date, commandId: commandId,
            kind: .placed(riderId: riderId, price: price, route: route))
    }

    static func accepted(version: Int = 2, at date: Timestamp = t1, commandId: String = "cmd-accept") -> OrderEvent {
        OrderEvent(orderId: orderId, version: version, createdDate: date, commandId: commandId, kind: .accepted(driverId: driverId))
    }

    static func completed(version: Int = 3, at date: Timestamp = t2, commandId: String = "cmd-complete") -> OrderEvent {
        OrderEvent(orderId: orderId, version: version, createdDate: date, commandId: commandId, kind: .completed)
    }

    static func cancelled(version: Int, at date: Timestamp = t2, commandId: String = "cmd-cancel") -> OrderEvent {
        OrderEvent(orderId: orderId, version: version, createdDate: date, commandId: commandId, kind: .cancelled)
    }

    static func rejected(
        version: Int, reason: OrderRejection.Reason = .transitionNotAllowed, message: String = "refused",
        commandType: String = "AcceptOrder", expectedVersion: Int = 1, at date: Timestamp = t3,
        commandId: String = "cmd-refused"
    ) -> OrderEvent {
        OrderEvent(
            orderId: orderId, version: version, createdDate: date, commandId: commandId,
            kind: .rejected(
                OrderRejection(
                    reason: reason, message: message, commandType: commandType,
                    expectedVersion: expectedVersion, actualVersion: version)))
    }

    /// Runs validation alone and returns its rejection, or nil when the command is valid.
    static func validationError(_ command: OrderCommand) -> OrderRejection? {
        do {
            try OrderValidation.validate(command)
            return nil
        } catch {
            return error
        }
    }
}

extension OrderEvent {
    /// The rejection an `ErrorEvent` carries, nil for a state change.
    var rejection: OrderRejection? {
        if case .rejected(let rejection) = kind { rejection } else { nil }
    }
}

/// The states an order can be in before a command arrives, each as the history that
/// leads to it (cancelled is reachable from PLACED and from ACCEPTED).
enum Given: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case noOrder, placed, accepted, completed, cancelledFromPlaced, cancelledFromAccepted

    var testDescription: String { rawValue }

    var history: [OrderEvent] {
        switch self {
        case .noOrder: []
        case .placed: [Fixture.placed()]
        case .accepted: [Fixture.placed(), Fixture.accepted()]
        case .completed: [Fixture.placed(), Fixture.accepted(), Fixture.completed()]
        case .cancelledFromPlaced: [Fixture.placed(), Fixture.cancelled(version: 2)]
        case .cancelledFromAccepted: [Fixture.placed(), Fixture.accepted(), Fixture.cancelled(version: 3)]
        }
    }

    var state: Order? { OrderDecider.fold(history) }

    /// Written out rather than derived, so a wrong `evolve` cannot hide here.
    var version: Int {
        switch self {
        case .noOrder: 0
        case .placed: 1
        case .accepted, .cancelledFromPlaced: 2
        case .completed, .cancelledFromAccepted: 3
        }
    }

    var status: OrderStatus? {
        switch self {
        case .noOrder: nil
        case .placed: .placed
        case .accepted: .accepted
        case .completed: .completed
        case .cancelledFromPlaced, .cancelledFromAccepted: .cancelled
        }
    }
}

/// The four commands, each built at a given expected version.
enum When: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case place, accept, complete, cancel

    var testDescription: String { rawValue }

    /// The command at the version a well-behaved client would send: 0 to place, the
    /// order's current version otherwise (1 for an order the client wrongly thinks exists).
    func command(for given: Given) -> OrderCommand {
        switch self {
        case .place: Fixture.place()
        case .accept: Fixture.accept(expectedVersion: max(given.version, 1))
        case .complete: Fixture.complete(expectedVersion: max(given.version, 1))
        case .cancel: Fixture.cancel(expectedVersion: max(given.version, 1))
        }
    }

    func command(expectedVersion: Int) -> OrderCommand {
        switch self {
        case .place: Fixture.place(expectedVersion: expectedVersion)
        case .accept: Fixture.accept(expectedVersion: expectedVersion)
        case .complete: Fixture.complete(expectedVersion: expectedVersion)
        case .cancel: Fixture.cancel(expectedVersion: expectedVersion)
        }
    }

    var typeName: String {
        switch self {
        case .place: "PlaceOrder"
        case .accept: "AcceptOrder"
        case .complete: "CompleteOrder"
        case .cancel: "CancelOrder"
        }
    }
}
