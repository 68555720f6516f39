import Testing
import OrderDomain

@Suite("evolve / fold")
struct EvolveFoldTests {
    @Test func fullHistoryPlaceAcceptComplete() throws {
        let order = try #require(OrderDecider.fold([Fixture.placed(), Fixture.accepted(), Fixture.completed()]))
        #expect(order.id == Fixture.orderId)
        #expect(order.version == 3)
        #expect(order.status == .completed)
        #expect(order.riderId == Fixture.riderId)
        #expect(order.price == Fixture.price)
        #expect(order.route == Fixture.route)
        #expect(order.driverId == Fixture.driverId)
        #expect(order.placedDate == Fixture.t0)
        #expect(order.acceptedDate == Fixture.t1)
        #expect(order.completedDate == Fixture.t2)
        #expect(order.cancelledDate == nil)
        #expect(order.errors.isEmpty)
    }

    @Test func eachStepOfTheHistory() throws {
        let placed = try #require(OrderDecider.evolve(nil, Fixture.placed()))
        #expect(placed.version == 1)
        #expect(placed.status == .placed)
        #expect(placed.placedDate == Fixture.t0)
        #expect(placed.driverId == nil)
        #expect(placed.acceptedDate == nil)
        #expect(placed.completedDate == nil)
        #expect(placed.cancelledDate == nil)

        let accepted = try #require(OrderDecider.evolve(placed, Fixture.accepted()))
        #expect(accepted.version == 2)
        #expect(accepted.status == .accepted)
        #expect(accepted.driverId == Fixture.driverId)
        #expect(accepted.acceptedDate == Fixture.t1)
        #expect(accepted.placedDate == Fixture.t0)
        #expect(accepted.completedDate == nil)

        let completed = try #require(OrderDecider.evolve(accepted, Fixture.completed()))
        #expect(completed.version == 3)
        #expect(completed.status == .completed)
        #expect(completed.completedDate == Fixture.t2)
        #expect(completed.acceptedDate == Fixture.t1)
        #expect(completed.driverId == Fixture.driverId)
    }

    @Test func placeThenCancel() throws {
        let order = try #require(OrderDecider.fold([Fixture.placed(), Fixture.cancelled(version: 2, at: Fixture.t3)]))
        #expect(order.version == 2)
        #expect(order.status == .cancelled)
        #expect(order.cancelledDate == Fixture.t3)
        #expect(order.placedDate == Fixture.t0)
        #expect(order.driverId == nil)
        #expect(order.acceptedDate == nil)
        #expect(order.completedDate == nil)
    }

    @Test func acceptThenCancelKeepsTheDriver() throws {
        let order = try #require(
            OrderDecider.fold([Fixture.placed(), Fixture.accepted(), Fixture.cancelled(version: 3, at: Fixture.t3)]))
        #expect(order.version == 3)
        #expect(order.status == .cancelled)
        #expect(order.driverId == Fixture.driverId)
        #expect(order.acceptedDate == Fixture.t1)
        #expect(order.cancelledDate == Fixture.t3)
        #expect(order.completedDate == nil)
    }

    @Test func errorEventsAppendToErrorsAndLeaveTheVersion() throws {
        let history = [
            Fixture.placed(),
            Fixture.rejected(
                version: 1, reason: .transitionNotAllowed, message: "Order in status PLACED can't be completed",
                commandType: "CompleteOrder", expectedVersion: 1, at: Fixture.t1, commandId: "e1"),
            Fixture.accepted(at: Fixture.t2),
            Fixture.rejected(
                version: 2, reason: .versionMismatch, message: "Actual version 2 doesn't match expected version 1",
                commandType: "CancelOrder", expectedVersion: 1, at: Fixture.t3, commandId: "e2"),
        ]
        let order = try #require(OrderDecider.fold(history))
        #expect(order.version == 2)
        #expect(order.status == .accepted)
        #expect(order.acceptedDate == Fixture.t2)
        #expect(order.errors.count == 2)
        #expect(
            order.errors == [
                OrderError(
                    commandId: "e1", commandType: "CompleteOrder", reason: .transitionNotAllowed, expectedVersion: 1,
                    actualVersion: 1, message: "Order in status PLACED can't be completed", createdDate: Fixture.t1),
                OrderError(
                    commandId: "e2", commandType: "CancelOrder", reason: .versionMismatch, expectedVersion: 1,
                    actualVersion: 2, message: "Actual version 2 doesn't match expected version 1", createdDate: Fixture.t3),
            ])
    }

    /// Given an accepted order (version 2), when a stale cancel and an accept are refused,
    /// then its errors say why and at which version, as the ErrorEvents do (found by a
    /// client team's review: Order.errors lacked both).
    @Test func errorsCarryTheReasonAndTheActualVersion() throws {
        var order = try #require(Given.accepted.state)
        for command in [Fixture.cancel(commandId: "x1", expectedVersion: 1), Fixture.accept(commandId: "a2", expectedVersion: 2)] {
            order = try #require(OrderDecider.evolve(order, OrderDecider.decide(command, state: order, now: Fixture.t3)))
        }
        #expect(order.version == 2)
        #expect(order.errors.map(\.commandId) == ["x1", "a2"])
        #expect(order.errors.map(\.reason) == [.versionMismatch, .transitionNotAllowed])
        #expect(order.errors.map(\.expectedVersion) == [1, 2])
        #expect(order.errors.map(\.actualVersion) == [2, 2])
    }

    @Test func errorsSurviveLaterStateChanges() throws {
        let history = [Fixture.placed(), Fixture.rejected(version: 1), Fixture.accepted(), Fixture.completed()]
        let order = try #require(OrderDecider.fold(history))
        #expect(order.version == 3)
        #expect(order.status == .completed)
        #expect(order.errors.count == 1)
    }

    @Test func errorEventsBeforeThePlaceAreDropped() throws {
        // e.g. AcceptOrder on an id nobody placed yet: NOT_FOUND, recorded, but no order.
        let notFound = Fixture.rejected(version: 0, reason: .notFound, message: "not found")
        #expect(OrderDecider.evolve(nil, notFound) == nil)
        let order = try #require(OrderDecider.fold([notFound, Fixture.placed()]))
        #expect(order.version == 1)
        #expect(order.errors.isEmpty)
    }

    @Test func stateChangesOnAMissingOrderStayNil() {
        #expect(OrderDecider.evolve(nil, Fixture.accepted()) == nil)
        #expect(OrderDecider.evolve(nil, Fixture.completed()) == nil)
        #expect(OrderDecider.evolve(nil, Fixture.cancelled(version: 2)) == nil)
        #expect(OrderDecider.fold([Fixture.accepted(), Fixture.completed()]) == nil)
    }

    @Test func foldOfNothing() throws {
        #expect(OrderDecider.fold([]) == nil)
        let state = try #require(Given.accepted.state)
        #expect(OrderDecider.fold([], from: state) == state)
    }

    @Test func foldContinuesFromAState() throws {
        let placed = OrderDecider.fold([Fixture.placed()])
        let continued = OrderDecider.fold([Fixture.accepted(), Fixture.completed()], from: placed)
        #expect(continued == OrderDecider.fold([Fixture.placed(), Fixture.accepted(), Fixture.completed()]))
        #expect(continued?.version == 3)
    }

    @Test func foldIsTheSameAsEvolvingOneByOne() {
        let history = Given.cancelledFromAccepted.history + [Fixture.rejected(version: 3)]
        var state: Order?
        for event in history { state = OrderDecider.evolve(state, event) }
        #expect(OrderDecider.fold(history) == state)
    }

    /// decide then evolve, over a whole life with refusals in between: versions go
    /// 1, 2, 3 with no gap, and each error event carries the version it left alone.
    @Test func aLifeDrivenThroughTheDecider() throws {
        let commands: [(OrderCommand, Int, Bool)] = [
            (Fixture.accept(commandId: "a0", expectedVersion: 1), 0, true),  // not placed yet
            (Fixture.place(commandId: "p1"), 1, false),
            (Fixture.place(commandId: "p2"), 1, true),  // already exists
            (Fixture.complete(commandId: "c1", expectedVersion: 1), 1, true),  // PLACED can't complete
            (Fixture.accept(commandId: "a1", expectedVersion: 1), 2, false),
            (Fixture.accept(commandId: "a2", expectedVersion: 2), 2, true),  // already accepted
            (Fixture.cancel(commandId: "x1", expectedVersion: 1), 2, true),  // stale
            (Fixture.complete(commandId: "c2", expectedVersion: 2), 3, false),
            (Fixture.cancel(commandId: "x2", expectedVersion: 3), 3, true),  // COMPLETED can't cancel
            (Fixture.accept(commandId: "a3", expectedVersion: 3), 3, true),  // nor be accepted again
        ]
        var state: Order?
        var log: [OrderEvent] = []
        for (i, (command, version, isError)) in commands.enumerated() {
            let now = Timestamp(microseconds: Fixture.t0.microseconds + Int64(i) * 1_000_000)
            let event = OrderDecider.decide(command, state: state, now: now)
            #expect(event.version == version, "\(command.commandId)")
            #expect(event.isError == isError, "\(command.commandId): \(event.kind)")
            #expect(event.commandId == command.commandId)
            state = OrderDecider.evolve(state, event)
            log.append(event)
        }
        let order = try #require(state)
        #expect(order.version == 3)
        #expect(order.status == .completed)
        #expect(order.errors.map(\.commandId) == ["p2", "c1", "a2", "x1", "x2", "a3"], "a0 came before the order existed")
        #expect(OrderDecider.fold(log) == order)
        #expect(log.filter { !$0.isError }.map(\.version) == [1, 2, 3])
    }
}
