import Testing
import OrderDomain

/// DESIGN §3 input rules. Each refusal is INVALID_ARGUMENT and names the request field.
@Suite("Validation")
struct ValidationTests {
    /// Asserts `command` is refused as invalid, naming `field`, both by validation alone
    /// and through the decider (against no order and against an existing one).
    func expectInvalid(
        _ command: OrderCommand, field: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard let rejection = Fixture.validationError(command) else {
            Issue.record("expected \(field) to be rejected", sourceLocation: sourceLocation)
            return
        }
        #expect(rejection.reason == .invalidArgument, sourceLocation: sourceLocation)
        #expect(rejection.field == field, sourceLocation: sourceLocation)
        #expect(rejection.commandType == command.typeName, sourceLocation: sourceLocation)
        #expect(rejection.expectedVersion == command.expectedVersion, sourceLocation: sourceLocation)
        #expect(!rejection.message.isEmpty, sourceLocation: sourceLocation)

        for given in [Given.noOrder, .placed, .completed] {
            let event = OrderDecider.decide(command, state: given.state, now: Fixture.now)
            #expect(event.rejection?.reason == .invalidArgument, "\(given)", sourceLocation: sourceLocation)
            #expect(event.rejection?.field == field, "\(given)", sourceLocation: sourceLocation)
            #expect(event.version == given.version, "\(given)", sourceLocation: sourceLocation)
        }
    }

    func expectValid(_ command: OrderCommand, sourceLocation: SourceLocation = #_sourceLocation) {
        let rejection = Fixture.validationError(command)
        #expect(rejection == nil, "\(rejection?.message ?? "")", sourceLocation: sourceLocation)
    }

    @Test func theFixturesAreValid() {
        expectValid(Fixture.place())
        expectValid(Fixture.accept(expectedVersion: 1))
        expectValid(Fixture.complete(expectedVersion: 2))
        expectValid(Fixture.cancel(expectedVersion: 1))
    }

    // MARK: request_id

    @Test(arguments: When.allCases)
    func requestIdEmpty(_ when: When) {
        var command = when.command(expectedVersion: when == .place ? 0 : 1)
        command.commandId = ""
        expectInvalid(command, field: "request_id")
    }

    @Test func requestIdLength() {
        expectValid(Fixture.place(commandId: "x"))
        expectValid(Fixture.place(commandId: String(repeating: "r", count: 128)))
        expectInvalid(Fixture.place(commandId: String(repeating: "r", count: 129)), field: "request_id")
        expectInvalid(Fixture.cancel(commandId: String(repeating: "r", count: 1000), expectedVersion: 1), field: "request_id")
    }

    @Test func requestIdIsCountedInBytes() {
        // 43 × "€" is 43 characters but 129 UTF-8 bytes.
        expectInvalid(Fixture.place(commandId: String(repeating: "€", count: 43)), field: "request_id")
        expectValid(Fixture.place(commandId: String(repeating: "€", count: 42)))  // 126 bytes
    }

    // MARK: order_id

    @Test(arguments: ["", "not-a-uuid", "6f1c1b7e3a8e4c559d0f2b8f4a0e5c11", "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c1",
                      "6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11 ", "{6f1c1b7e-3a8e-4c55-9d0f-2b8f4a0e5c11}", "42"])
    func orderIdNotAUUID(_ orderId: String) {
        expectInvalid(Fixture.place(orderId: orderId), field: "order_id")
        expectInvalid(Fixture.accept(orderId: orderId, expectedVersion: 1), field: "order_id")
        expectInvalid(Fixture.complete(orderId: orderId, expectedVersion: 1), field: "order_id")
        expectInvalid(Fixture.cancel(orderId: orderId, expectedVersion: 1), field: "order_id")
    }

    // MARK: rider_id, driver_id

    @Test(arguments: ["", "rider-1", "a3d7e8f0-1b2c-4d5e-9f60-718293a4b5cZ", "a3d7e8f0_1b2c_4d5e_9f60_718293a4b5c6"])
    func riderIdNotAUUID(_ riderId: String) {
        expectInvalid(Fixture.place(riderId: riderId), field: "rider_id")
    }

    @Test func acceptWithoutADriver() {
        expectInvalid(Fixture.accept(expectedVersion: 1, driverId: ""), field: "driver_id")
    }

    @Test(arguments: ["driver-7", "D4E5F6A7-B8C9-4DAE-8F01-23456789ABC", "D4E5F6A7-B8C9-4DAE-8F01-23456789ABCDE",
                      "D4E5F6A7+B8C9-4DAE-8F01-23456789ABCD"])
    func driverIdNotAUUID(_ driverId: String) {
        expectInvalid(Fixture.accept(expectedVersion: 1, driverId: driverId), field: "driver_id")
    }

    @Test func driverIdUpperOrLowerCase() {
        expectValid(Fixture.accept(expectedVersion: 1, driverId: Fixture.driverId))
        expectValid(Fixture.accept(expectedVersion: 1, driverId: Fixture.driverId.lowercased()))
    }

    // MARK: price

    static let badPrices = [
        "", "abc", "-1", "0", "0.00", "00", "0.0", "1.234", "0.001", "1e5", "+5", ".5", "5.", "1,5", " 5", "5 ",
        "1.2.3", "..", ".", "NaN", "inf", "１２", "١٢", "0x10", "1_000",
        "1234567890123456", "9999999999999999.99", "12345678901234567890",
    ]

    @Test(arguments: badPrices)
    func priceRejected(_ price: String) {
        expectInvalid(Fixture.place(price: price), field: "price")
    }

    static let goodPrices = ["123.45", "0.01", "7", "10.5", "0.1", "5.0", "100.00", "999999999999999.99", "123456789012345"]

    @Test(arguments: goodPrices)
    func priceAccepted(_ price: String) throws {
        expectValid(Fixture.place(price: price))
        // …and kept exactly as written.
        let event = OrderDecider.decide(Fixture.place(price: price), state: nil, now: Fixture.now)
        let order = try #require(OrderDecider.evolve(nil, event))
        #expect(order.price == price)
    }

    // MARK: route

    @Test func routeNeedsTwoWaypoints() {
        expectInvalid(Fixture.place(route: []), field: "route")
        expectInvalid(Fixture.place(route: [Fixture.route[0]]), field: "route")
        expectValid(Fixture.place(route: Fixture.route))
        expectValid(Fixture.place(route: Fixture.route + Fixture.route))
    }

    @Test func routeAndAddressesAreBounded() {
        let stop = Fixture.route[0]
        expectValid(Fixture.place(route: Array(repeating: stop, count: OrderValidation.maxWaypoints)))
        expectInvalid(Fixture.place(route: Array(repeating: stop, count: OrderValidation.maxWaypoints + 1)), field: "route")
        var route = Fixture.route
        route[1].address = String(repeating: "я", count: OrderValidation.maxAddressBytes / 2)  // 2 bytes each
        expectValid(Fixture.place(route: route))
        route[1].address += "x"
        expectInvalid(Fixture.place(route: route), field: "route[1].address")
    }

    @Test(arguments: ["", " ", "   ", "\t", "\n", " \t\r\n ", "\u{00A0}", "\u{2003}"])
    func blankAddress(_ address: String) {
        var route = Fixture.route
        route[1].address = address
        expectInvalid(Fixture.place(route: route), field: "route[1].address")
        route = Fixture.route
        route[0].address = address
        expectInvalid(Fixture.place(route: route), field: "route[0].address")
    }

    @Test func addressWithSurroundingSpaceIsFine() {
        var route = Fixture.route
        route[0].address = "  Gate B  "
        route[1].address = "x"
        expectValid(Fixture.place(route: route))
    }

    @Test(arguments: [90.0001, -90.5, 91, -1000, .nan, .infinity, -.infinity, .greatestFiniteMagnitude])
    func latitudeOutOfRange(_ lat: Double) {
        var route = Fixture.route
        route[0].lat = lat
        expectInvalid(Fixture.place(route: route), field: "route[0].lat")
        route = Fixture.route + [Waypoint(address: "Third stop", lat: lat, lon: 0)]
        expectInvalid(Fixture.place(route: route), field: "route[2].lat")
    }

    @Test(arguments: [180.1, -181, 180.000001, 360, .nan, .infinity, -.infinity])
    func longitudeOutOfRange(_ lon: Double) {
        var route = Fixture.route
        route[1].lon = lon
        expectInvalid(Fixture.place(route: route), field: "route[1].lon")
    }

    @Test func coordinateBoundsAreInclusive() {
        let corners = [
            Waypoint(address: "North pole", lat: 90, lon: 180),
            Waypoint(address: "South pole", lat: -90, lon: -180),
            Waypoint(address: "Null island", lat: 0, lon: 0),
            Waypoint(address: "Negative zero", lat: -0.0, lon: -0.0),
        ]
        expectValid(Fixture.place(route: corners))
    }

    @Test func firstBadWaypointIsNamed() {
        let route = [
            Fixture.route[0],
            Waypoint(address: "ok", lat: 95, lon: 0),
            Waypoint(address: "", lat: 0, lon: 0),
        ]
        expectInvalid(Fixture.place(route: route), field: "route[1].lat")
    }

    // MARK: expected version

    @Test(arguments: [When.accept, .complete, .cancel], [0, -1, Int.min])
    func updateNeedsAVersionOfOneOrMore(_ when: When, version: Int) {
        expectInvalid(when.command(expectedVersion: version), field: "version")
    }

    @Test(arguments: [1, -1, 2, 99])
    func placeNeedsVersionZero(_ version: Int) {
        expectInvalid(Fixture.place(expectedVersion: version), field: "version")
    }

    // MARK: Ordering

    /// Validation comes before any state check: on an existing order an invalid command is
    /// INVALID_ARGUMENT, not a version mismatch, transition or already-exists refusal.
    @Test func validationComesBeforeStateChecks() throws {
        let cases: [(OrderCommand, Given, String)] = [
            (Fixture.accept(expectedVersion: 3, driverId: "nobody"), .completed, "driver_id"),  // else transition
            (Fixture.accept(expectedVersion: 9, driverId: ""), .placed, "driver_id"),  // else version mismatch
            (Fixture.complete(expectedVersion: 0), .accepted, "version"),  // else version mismatch
            (Fixture.place(price: "0"), .placed, "price"),  // else already exists
            (Fixture.place(expectedVersion: 1), .placed, "version"),  // else already exists
            (Fixture.cancel(commandId: "", expectedVersion: 2), .accepted, "request_id"),  // else a valid cancel
            (Fixture.accept(expectedVersion: 1, driverId: "x"), .noOrder, "driver_id"),  // else not found
        ]
        for (command, given, field) in cases {
            let event = OrderDecider.decide(command, state: given.state, now: Fixture.now)
            let rejection = try #require(event.rejection)
            #expect(rejection.reason == .invalidArgument, "\(command.typeName) on \(given)")
            #expect(rejection.field == field)
            #expect(event.version == given.version)
            if let state = given.state {
                let after = try #require(OrderDecider.evolve(state, event))
                #expect(after.version == state.version)
                #expect(after.status == state.status)
                #expect(after.errors.count == state.errors.count + 1)
            } else {
                #expect(OrderDecider.evolve(nil, event) == nil)
            }
            #expect(throws: rejection) { try OrderDecider.accept(command, state: given.state, now: Fixture.now) }
        }
    }

    @Test func fieldsAreCheckedInRequestOrder() {
        // Everything wrong at once: the first field in request order is named.
        let allWrong = OrderCommand(
            commandId: "", orderId: "x", expectedVersion: 3,
            kind: .place(riderId: "y", price: "z", route: []))
        #expect(Fixture.validationError(allWrong)?.field == "request_id")
        var command = allWrong
        command.commandId = "ok"
        #expect(Fixture.validationError(command)?.field == "order_id")
        command.orderId = Fixture.orderId
        #expect(Fixture.validationError(command)?.field == "version")
        command.expectedVersion = 0
        #expect(Fixture.validationError(command)?.field == "rider_id")
        command.kind = .place(riderId: Fixture.riderId, price: "z", route: [])
        #expect(Fixture.validationError(command)?.field == "price")
        command.kind = .place(riderId: Fixture.riderId, price: "1", route: [])
        #expect(Fixture.validationError(command)?.field == "route")
    }

    @Test func messagesQuoteTheBadValueClipped() throws {
        let long = String(repeating: "q", count: 500)
        let rejection = try #require(Fixture.validationError(Fixture.place(orderId: long)))
        #expect(rejection.message.contains(String(repeating: "q", count: 64)))
        #expect(!rejection.message.contains(String(repeating: "q", count: 65)))
        #expect(rejection.message.count < 200)
        #expect(Fixture.validationError(Fixture.place(riderId: "bob"))?.message.contains("'bob'") == true)
    }
}
