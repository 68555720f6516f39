import ArgumentParser
import Foundation
import OrderProto

/// For commands: whenever the request may have reached the server and no refusal came
/// back (a lost connection, a reset stream, a timeout, UNAVAILABLE or INTERNAL from the
/// server), the command may have been applied: name the request id, since a retry
/// without it would place a second order. Only "cannot connect" is certainly not applied.
private func retryHint(requestID: String) -> (GRPCStatusError) -> String? {
    { status in
        guard status.mayHaveReachedServer, !status.isRefusal else { return nil }
        return "the command may have taken effect; retrying with --request-id \(requestID) is safe"
    }
}

struct Place: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Place a new order; prints its id and the order.")

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("The rider's id (a UUID).", valueName: "id"))
    var rider: String

    @Option(help: ArgumentHelp("The price, an exact decimal such as 123.45.", valueName: "price"))
    var price: String

    @Option(name: .customLong("stop"), help: ArgumentHelp(
        "A waypoint as \"address;lat;lon\" (the address may hold commas); repeat in route order.",
        valueName: "address;lat;lon"), transform: StopArgument.parse)
    var stops: [Ridehailing_Orders_V1_Waypoint] = []

    @Option(help: ArgumentHelp("Idempotency key; a retry with the same key never places a second order (default: a new UUID).", valueName: "id"))
    var requestID: String?

    func run() throws {
        let requestID = requestID ?? UUID().uuidString.lowercased()
        try global.run(commandHint: retryHint(requestID: requestID)) { client in
            var request = Ridehailing_Orders_V1_PlaceOrderRequest()
            request.requestID = requestID
            request.riderID = rider
            request.price = price
            request.route = stops
            let response = try client.placeOrder(request)
            if global.json { return try global.printJSON(response) }
            let order = Formatting.orderEntries(response.order).filter { $0.key != "id" }
            try Terminal.print(Formatting.block(
                [("order_id", response.orderID)] + order + [("position", response.position)]))
        }
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show an order's current state.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The order's id.")
    var id: String

    @Option(help: ArgumentHelp("Wait (up to the deadline) until the order reaches this version.", valueName: "n"))
    var minVersion: Int32 = 0

    func run() throws {
        try global.run { client in
            var request = Ridehailing_Orders_V1_GetOrderRequest()
            request.orderID = id
            request.minVersion = minVersion
            let order = try client.getOrder(request)
            if global.json { return try global.printJSON(order) }
            try Terminal.print(Formatting.block(Formatting.orderEntries(order)))
        }
    }
}

/// Accept, complete and cancel: an UpdateOrder to one status.
private func update(
    _ global: GlobalOptions, _ target: UpdateTarget, status: Ridehailing_Orders_V1_OrderStatus, driverID: String = ""
) throws {
    let requestID = target.requestID ?? UUID().uuidString.lowercased()
    try global.run(commandHint: retryHint(requestID: requestID)) { client in
        var request = Ridehailing_Orders_V1_UpdateOrderRequest()
        request.requestID = requestID
        request.orderID = target.id
        request.status = status
        request.driverID = driverID
        request.version = target.version
        let response = try client.updateOrder(request)
        if global.json { return try global.printJSON(response) }
        try Terminal.print(Formatting.block(
            Formatting.orderEntries(response.order) + [("position", response.position)]))
    }
}

struct Accept: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accept a placed order for a driver.")

    @OptionGroup var global: GlobalOptions

    @OptionGroup var target: UpdateTarget

    @Option(help: ArgumentHelp("The driver's id (a UUID).", valueName: "id"))
    var driver: String

    func run() throws {
        try update(global, target, status: .accepted, driverID: driver)
    }
}

/// What accept, complete and cancel share: the order, its expected version and the
/// idempotency key.
struct UpdateTarget: ParsableArguments {
    @Argument(help: "The order's id.")
    var id: String

    @Option(help: ArgumentHelp("The version the order is expected to be at now.", valueName: "n"))
    var version: Int32

    @Option(help: ArgumentHelp("Idempotency key (default: a new UUID).", valueName: "id"))
    var requestID: String?
}

struct Complete: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Complete an accepted order.")

    @OptionGroup var global: GlobalOptions

    @OptionGroup var target: UpdateTarget

    func run() throws {
        try update(global, target, status: .completed)
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a placed or accepted order.")

    @OptionGroup var global: GlobalOptions

    @OptionGroup var target: UpdateTarget

    func run() throws {
        try update(global, target, status: .cancelled)
    }
}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an order's whole history, rejected commands (ErrorEvents) included.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The order's id.")
    var id: String

    func run() throws {
        try global.run { client in
            var request = Ridehailing_Orders_V1_GetOrderEventsRequest()
            request.orderID = id
            let response = try client.getOrderEvents(request)
            if global.json { return try global.printJSON(response) }
            if response.events.isEmpty { return try Terminal.print("no events") }
            try Terminal.print(response.events
                .map { Formatting.eventLine($0, withOrderID: false) }.joined(separator: "\n"))
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List orders, a page at a time.")

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp(
        "Only orders in this status: placed, accepted, completed or cancelled.", valueName: "status"),
        transform: StatusArgument.parse)
    var status: Ridehailing_Orders_V1_OrderStatus?

    @Option(help: ArgumentHelp("The most orders per page, 1 to 1000 (default: the server's, 100); a page also stops before 1 MiB of orders.", valueName: "n"))
    var pageSize: Int32 = 0

    @Option(help: ArgumentHelp("Where to continue: a previous page's next_page_token.", valueName: "token"))
    var pageToken: String = ""

    func run() throws {
        try global.run { client in
            var request = Ridehailing_Orders_V1_ListOrdersRequest()
            request.status = status ?? .unspecified
            request.pageSize = pageSize
            request.pageToken = pageToken
            let response = try client.listOrders(request)
            if global.json { return try global.printJSON(response) }
            var text = response.orders.isEmpty
                ? "no orders"
                : Formatting.table(
                    header: ["ID", "VERSION", "STATUS", "PRICE", "RIDER_ID", "DRIVER_ID"],
                    rows: response.orders.map { order in
                        [order.id, "\(order.version)", Formatting.statusName(order.status), order.price,
                         order.riderID, order.driverID]
                    })
            if !response.nextPageToken.isEmpty { text += "\nnext_page_token: \(response.nextPageToken.escapingControlCharacters)" }
            try Terminal.print(text)
        }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream order events: the history, a caught-up line, then live events until Ctrl-C.",
        discussion: """
            Without --json each event is one line (order id, version, type, position, time, \
            details) and heartbeats are not shown; with --json every message of the stream, \
            heartbeats included, is one JSON object per line. Resume after a stop with \
            --after <the last position printed>.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Start with the oldest event (the default).")
    var fromStart = false

    @Flag(help: "Only events after the subscription starts.")
    var fromEnd = false

    @Option(help: ArgumentHelp("Only events after this position (from an event, caught_up or heartbeat).", valueName: "position"))
    var after: String?

    @Option(help: ArgumentHelp("Only this order's events.", valueName: "id"))
    var order: String?

    @Option(name: .customLong("type"), help: ArgumentHelp(
        "Only events of this type (OrderPlacedEvent, OrderAcceptedEvent, OrderCompletedEvent, OrderCancelledEvent, ErrorEvent); repeatable.",
        valueName: "event-type"))
    var types: [String] = []

    func validate() throws {
        if [fromStart, fromEnd, after != nil].filter({ $0 }).count > 1 {
            throw ValidationError("Use at most one of --from-start, --from-end and --after.")
        }
    }

    func run() throws {
        var request = Ridehailing_Orders_V1_StreamEventsRequest()
        if fromEnd {
            request.fromEnd = true
        } else if let after {
            request.afterPosition = after
        } else if fromStart {
            request.fromStart = true
        }
        request.orderID = order ?? ""
        request.eventTypes = types
        let json = global.json
        // Where a new watch would resume: heartbeats move it on too.
        var lastPosition: String?
        let resumeHint = { (_: GRPCStatusError) -> String? in
            lastPosition.flatMap { $0.isEmpty ? nil : "resume where this stopped with --after \($0.escapingControlCharacters)" }
        }
        try global.run(streaming: true, commandHint: resumeHint) { client in
            try client.streamEvents(request) { message in
                switch message.kind {
                case .event(let event)?: lastPosition = event.position
                case .caughtUp(let caughtUp)?: lastPosition = caughtUp.position
                case .heartbeat(let heartbeat)?: lastPosition = heartbeat.position
                case nil: break
                }
                if json { return try global.printJSON(message) }
                switch message.kind {
                case .event(let event)?:
                    try Terminal.print(Formatting.eventLine(event, withOrderID: true))
                case .caughtUp(let caughtUp)?:
                    try Terminal.print("-- caught up at position \(caughtUp.position.escapingControlCharacters) --")
                case .heartbeat?, nil:
                    break
                }
            }
        }
    }
}
