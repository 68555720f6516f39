import Testing
import OrderDomain

/// Given a history, when a command arrives at the right expected version, then exactly
/// one event: the state change at version+1, or an ErrorEvent at the unchanged version.
@Suite("Decider: every status × command")
struct DeciderTransitionTests {
    enum Then: Sendable, Equatable {
        case changes(to: OrderStatus)
        case rejected(OrderRejection.Reason)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var given: Given
        var when: When
        var then: Then
        var testDescription: String { "given \(given.rawValue), when \(when.rawValue) → \(then)" }
    }

    /// The whole table, spelled out (DESIGN §3): place only a new order; accept only
    /// PLACED; complete only ACCEPTED; cancel PLACED or ACCEPTED.
    static let table: [Case] = [
        Case(given: .noOrder, when: .place, then: .changes(to: .placed)),
        Case(given: .noOrder, when: .accept, then: .rejected(.notFound)),
        Case(given: .noOrder, when: .complete, then: .rejected(.notFound)),
        Case(given: .noOrder, when: .cancel, then: .rejected(.notFound)),

        Case(given: .placed, when: .place, then: .rejected(.alreadyExists)),
        Case(given: .placed, when: .accept, then: .changes(to: .accepted)),
        Case(given: .placed, when: .complete, then: .rejected(.transitionNotAllowed)),
        Case(given: .placed, when: .cancel, then: .changes(to: .cancelled)),

        Case(given: .accepted, when: .place, then: .rejected(.alreadyExists)),
        Case(given: .accepted, when: .accept, then: .rejected(.transitionNotAllowed)),
        Case(given: .accepted, when: .complete, then: .changes(to: .completed)),
        Case(given: .accepted, when: .cancel, then: .changes(to: .cancelled)),

        Case(given: .completed, when: .place, then: .rejected(.alreadyExists)),
        Case(given: .completed, when: .accept, then: .rejected(.transitionNotAllowed)),
        Case(given: .completed, when: .complete, then: .rejected(.transitionNotAllowed)),
        Case(given: .completed, when: .cancel, then: .rejected(.transitionNotAllowed)),

        Case(given: .cancelledFromPlaced, when: .place, then: .rejected(.alreadyExists)),
        Case(given: .cancelledFromPlaced, when: .accept, then: .rejected(.transitionNotAllowed)),
        Case(given: .cancelledFromPlaced, when: .complete, then: .rejected(.transitionNotAllowed)),
        Case(given: .cancelledFromPlaced, when: .cancel, then: .rejected(.transitionNotAllowed)),

        Case(given: .cancelledFromAccepted, when: .place, then: .rejected(.alreadyExists)),
        Case(given: .cancelledFromAccepted, when: .accept, then: .rejected(.transitionNotAllowed)),
        Case(given: .cancelledFromAccepted, when: .complete, then: .rejected(.transitionNotAllowed)),
        Case(given: .cancelledFromAccepted, when: .cancel, then: .rejected(.transitionNotAllowed)),
    ]

    @Test func tableCoversEveryPairOnce() {
        let pairs = Self.table.map { "\($0.given.rawValue)/\($0.when.rawValue)" }
        #expect(Set(pairs).count == pairs.count)
        #expect(pairs.count == Given.allCases.count * When.allCases.count)
    }

    @Test func givenHistoriesReachTheirStatusAndVersion() {
        for given in Given.allCases {
            #expect(given.state?.status == given.status, "\(given)")
            #expect((given.state?.version ?? 0) == given.version, "\(given)")
        }
    }

    @Test(arguments: table)
    func decide(_ c: Case) throws {
        let state = c.given.state
        let command = c.when.command(for: c.given)
        let event = OrderDecider.decide(command, state: state, now: Fixture.now)

        #expect(event.orderId == Fixture.orderId)
        #expect(event.commandId == command.commandId)
        #expect(event.createdDate == Fixture.now)

        switch c.then {
        case .changes(let status):
            #expect(!event.isError)
            #expect(event.version == c.given.version + 1)
            switch (c.when, event.kind) {
            case (.place, .placed(let riderId, let price, let route)):
                #expect(riderId == Fixture.riderId)
                #expect(price == Fixture.price)
                #expect(route == Fixture.route)
                #expect(event.typeName == "OrderPlacedEvent")
            case (.accept, .accepted(let driverId)):
                #expect(driverId == Fixture.driverId)
                #expect(event.typeName == "OrderAcceptedEvent")
            case (.complete, .completed):
                #expect(event.typeName == "OrderCompletedEvent")
            case (.cancel, .cancelled):
                #expect(event.typeName == "OrderCancelledEvent")
            default:
                Issue.record("\(c.when) produced the wrong event: \(event.kind)")
            }
            // `accept` agrees with `decide` on the successful path.
            #expect(try OrderDecider.accept(command, state: state, now: Fixture.now) == event)

            let after = try #require(OrderDecider.evolve(state, event))
            #expect(after.status == status)
            #expect(after.version == c.given.version + 1)
            #expect(after.id == Fixture.orderId)
            #expect(after.errors.isEmpty)

        case .rejected(let reason):
            let rejection = try #require(event.rejection, "expected an ErrorEvent, got \(event.kind)")
            #expect(event.isError)
            #expect(event.typeName == "ErrorEvent")
            #expect(rejection.reason == reason)
            #expect(event.version == c.given.version, "an error event leaves the version unchanged")
            #expect(rejection.commandType == c.when.typeName)
            #expect(rejection.expectedVersion == command.expectedVersion)
            #expect(rejection.actualVersion == c.given.version)
            #expect(rejection.field == nil)
            #expect(!rejection.message.isEmpty)
            if reason == .transitionNotAllowed, let status = c.given.status {
                #expect(rejection.message.contains(status.rawValue), "\(rejection.message)")
            }
            #expect(throws: rejection) { try OrderDecider.accept(command, state: state, now: Fixture.now) }

            // Folding the error event changes nothing but `errors`; no ghost order appears.
            let after = OrderDecider.evolve(state, event)
            if let before = state {
                let after = try #require(after)
                #expect(after.version == before.version)
                #expect(after.status == before.status)
                #expect(after.errors.count == before.errors.count + 1)
                var withoutErrors = after
                withoutErrors.errors = before.errors
                #expect(withoutErrors == before)
            } else {
                #expect(after == nil, "an error on an unknown id must not create an order")
            }
        }
    }

    // MARK: Spelled out, the seed's two bugs

    @Test func aCompletedOrderCannotBeAcceptedAgain() throws {
        let state = Given.completed.state
        let event = OrderDecider.decide(Fixture.accept(expectedVersion: 3), state: state, now: Fixture.now)
        let rejection = try #require(event.rejection)
        #expect(rejection.reason == .transitionNotAllowed)
        #expect(rejection.message == "Order in status COMPLETED can't be accepted")
        #expect(event.version == 3)
        let after = try #require(OrderDecider.evolve(state, event))
        #expect(after.status == .completed)
        #expect(after.driverId == Fixture.driverId)
        #expect(after.acceptedDate == Fixture.t1, "the accepted date is not overwritten")
    }

    @Test func aCancelledOrderCannotBeCompletedOrCancelledAgain() throws {
        for given in [Given.cancelledFromPlaced, .cancelledFromAccepted] {
            for when in [When.complete, .cancel, .accept] {
                let event = OrderDecider.decide(when.command(for: given), state: given.state, now: Fixture.now)
                #expect(event.rejection?.reason == .transitionNotAllowed, "\(given) \(when)")
            }
        }
    }

    @Test(arguments: [When.accept, .complete, .cancel], [1, 2, 7])
    func updatesOnAnUnknownIdNeverCreateAnOrder(_ when: When, expectedVersion: Int) throws {
        let command = when.command(expectedVersion: expectedVersion)
        let event = OrderDecider.decide(command, state: nil, now: Fixture.now)
        let rejection = try #require(event.rejection)
        #expect(rejection.reason == .notFound, "an unknown id is NOT_FOUND whatever the expected version")
        #expect(rejection.message == "Order \(Fixture.orderId) not found")
        #expect(rejection.actualVersion == 0)
        #expect(event.version == 0)
        #expect(OrderDecider.evolve(nil, event) == nil)
        #expect(OrderDecider.fold([event, event]) == nil)
    }

    @Test func placingAnExistingOrderIsAlreadyExists() throws {
        let event = OrderDecider.decide(Fixture.place(commandId: "again"), state: Given.accepted.state, now: Fixture.now)
        let rejection = try #require(event.rejection)
        #expect(rejection.reason == .alreadyExists)
        #expect(rejection.message == "Order \(Fixture.orderId) already exists")
        #expect(event.version == 2)
        #expect(event.commandId == "again")
        let after = try #require(OrderDecider.evolve(Given.accepted.state, event))
        #expect(after.status == .accepted, "placing again does not reset the order")
        #expect(after.driverId == Fixture.driverId)
    }

    @Test func transitionMessagesNameTheStatusAndTheVerb() throws {
        let cases: [(Given, When, String)] = [
            (.placed, .complete, "Order in status PLACED can't be completed"),
            (.accepted, .accept, "Order in status ACCEPTED can't be accepted"),
            (.completed, .cancel, "Order in status COMPLETED can't be cancelled"),
            (.cancelledFromPlaced, .accept, "Order in status CANCELLED can't be accepted"),
        ]
        for (given, when, message) in cases {
            let event = OrderDecider.decide(when.command(for: given), state: given.state, now: Fixture.now)
            #expect(event.rejection?.message == message)
        }
    }

    @Test func decideIsPureAndDeterministic() {
        for c in Self.table {
            let command = c.when.command(for: c.given)
            let a = OrderDecider.decide(command, state: c.given.state, now: Fixture.now)
            let b = OrderDecider.decide(command, state: c.given.state, now: Fixture.now)
            #expect(a == b)
        }
    }
}
