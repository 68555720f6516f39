import Testing
import OrderDomain

/// Optimistic concurrency: an update names the version it expects the order to be at;
/// any other version is VERSION_MISMATCH (ABORTED on the wire) and changes nothing.
@Suite("Decider: expected version mismatch")
struct VersionMismatchTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var given: Given
        var when: When
        var expected: Int
        var testDescription: String { "\(when.rawValue) at v\(expected) on \(given.rawValue) (v\(given.version))" }
    }

    /// Every existing state × every update command × stale and future versions.
    static let cases: [Case] = {
        var cases: [Case] = []
        for given in Given.allCases where given != .noOrder {
            for when in [When.accept, .complete, .cancel] {
                var versions = [given.version + 1, given.version + 5, Int(Int32.max)]
                if given.version > 1 { versions += [given.version - 1, 1] }
                for expected in Set(versions).sorted() {
                    cases.append(Case(given: given, when: when, expected: expected))
                }
            }
        }
        return cases
    }()

    @Test(arguments: cases)
    func wrongExpectedVersionIsRejected(_ c: Case) throws {
        let state = try #require(c.given.state)
        let command = c.when.command(expectedVersion: c.expected)
        let event = OrderDecider.decide(command, state: state, now: Fixture.now)

        let rejection = try #require(event.rejection)
        #expect(rejection.reason == .versionMismatch)
        #expect(rejection.expectedVersion == c.expected)
        #expect(rejection.actualVersion == c.given.version)
        #expect(rejection.message == "Actual version \(c.given.version) doesn't match expected version \(c.expected)")
        #expect(rejection.commandType == c.when.typeName)
        #expect(rejection.field == nil)
        #expect(event.version == c.given.version)
        #expect(event.commandId == command.commandId)

        let after = try #require(OrderDecider.evolve(state, event))
        #expect(after.version == state.version)
        #expect(after.status == state.status)
        #expect(after.errors.last?.message == rejection.message)
        #expect(after.errors.last?.expectedVersion == c.expected)
    }

    @Test func staleVersionMessageExactly() throws {
        // The seed's wording: "Actual version X doesn't match expected version Y".
        let event = OrderDecider.decide(Fixture.cancel(expectedVersion: 1), state: Given.accepted.state, now: Fixture.now)
        #expect(event.rejection?.message == "Actual version 2 doesn't match expected version 1")
        #expect(event.rejection?.description == "Actual version 2 doesn't match expected version 1")
    }

    @Test func futureVersionMessageExactly() throws {
        let event = OrderDecider.decide(Fixture.accept(expectedVersion: 4), state: Given.placed.state, now: Fixture.now)
        #expect(event.rejection?.message == "Actual version 1 doesn't match expected version 4")
        #expect(event.rejection?.reason == .versionMismatch)
    }

    /// The version is checked before the status: a client with a stale view gets
    /// ABORTED (re-read and retry), not a transition error about a state it has not seen.
    @Test func versionIsCheckedBeforeTheTransition() throws {
        let event = OrderDecider.decide(Fixture.accept(expectedVersion: 1), state: Given.completed.state, now: Fixture.now)
        #expect(event.rejection?.reason == .versionMismatch)
        #expect(event.rejection?.expectedVersion == 1)
        #expect(event.rejection?.actualVersion == 3)
    }

    /// Two clients read version 1 and both accept: the first wins, the second is refused.
    @Test func twoConcurrentUpdatesAtTheSameVersionOnlyOneWins() throws {
        var state = Given.placed.state
        let first = OrderDecider.decide(
            Fixture.accept(commandId: "c1", expectedVersion: 1, driverId: Fixture.driverId), state: state, now: Fixture.t1)
        state = OrderDecider.evolve(state, first)
        let second = OrderDecider.decide(Fixture.cancel(commandId: "c2", expectedVersion: 1), state: state, now: Fixture.t2)
        state = OrderDecider.evolve(state, second)

        #expect(!first.isError)
        #expect(first.version == 2)
        #expect(second.rejection?.reason == .versionMismatch)
        #expect(second.version == 2)
        let order = try #require(state)
        #expect(order.status == .accepted)
        #expect(order.version == 2)
        #expect(order.errors.map(\.commandId) == ["c2"])
    }

    @Test func placeOnAnExistingOrderIsNotAVersionMismatch() throws {
        // PlaceOrder always expects 0: on an existing order that is ALREADY_EXISTS.
        let event = OrderDecider.decide(Fixture.place(), state: Given.completed.state, now: Fixture.now)
        #expect(event.rejection?.reason == .alreadyExists)
        #expect(event.rejection?.expectedVersion == 0)
        #expect(event.rejection?.actualVersion == 3)
    }
}
