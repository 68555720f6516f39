import Foundation
import EventLog
import GRPCWire
import Logging
import OrderDomain
import OrderProto
import SwiftProtobuf

/// `ridehailing.orders.v1.OrderService` on GRPCWire: each RPC turns its request into a
/// command or a query on the pipeline; every failure goes through `StatusMapping`.
public struct OrderServiceDefinition: Sendable {
    public static let serviceName = "ridehailing.orders.v1.OrderService"
    /// Bounds a call without a deadline, so a caller never waits forever.
    public static let defaultTimeout: Duration = .seconds(30)
    /// The longest a call waits, whatever its deadline: an hour, far past any outcome.
    static let longestWait: Duration = .seconds(3600)

    let pipeline: OrderPipeline
    let logger: Logger
    /// How long a call without a deadline waits for an outcome or a version.
    let defaultTimeout: Duration
    let mappedOrders = MappedOrderCache(capacity: 10_000)

    public init(pipeline: OrderPipeline, logger: Logger, defaultTimeout: Duration = Self.defaultTimeout) {
        self.pipeline = pipeline
        self.logger = logger
        self.defaultTimeout = defaultTimeout
    }

    /// The descriptors of orders.proto (with imports) for server reflection.
    public static var descriptorSet: String { OrderProtoDescriptors.fileDescriptorSetBase64 }

    public var definition: ServiceDefinition {
        var s = ServiceDefinition(name: Self.serviceName)
        s.unary("PlaceOrder") { (req: Ridehailing_Orders_V1_PlaceOrderRequest, ctx) in
            try await mapped { try await placeOrder(req, ctx) }
        }
        s.unary("UpdateOrder") { (req: Ridehailing_Orders_V1_UpdateOrderRequest, ctx) in
            try await mapped { try await updateOrder(req, ctx) }
        }
        s.unary(
            "GetOrder",
            immediate: { (req: Ridehailing_Orders_V1_GetOrderRequest, _) in try mappedNow { try cachedOrder(req) } },
            { req, ctx in try await mapped { try await getOrder(req, ctx) } })
        s.unary("GetOrderEvents") { (req: Ridehailing_Orders_V1_GetOrderEventsRequest, ctx) in
            try await mapped { try await getOrderEvents(req) }
        }
        s.unary("ListOrders") { (req: Ridehailing_Orders_V1_ListOrdersRequest, ctx) in
            try await mapped { try await listOrders(req, ctx) }
        }
        // A subscription never ends by itself: on shutdown it ends at once, so subscribers
        // resume (after_position) on another instance instead of waiting out the grace period.
        s.serverStreaming(
            "StreamEvents",
            endingOnShutdown: GRPCStatus(
                .unavailable, "the server is shutting down; resume with after_position set to the last position processed")
        ) {
            (req: Ridehailing_Orders_V1_StreamEventsRequest, stream: ResponseStream<Ridehailing_Orders_V1_StreamEventsResponse>, ctx) in
            try await mapped { try await streamEvents(req, stream) }
        }
        return s
    }

    private func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw status(for: error)
        }
    }

    /// `mapped` for synchronous bodies (the immediate paths).
    private func mappedNow<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw status(for: error)
        }
    }

    private func status(for error: any Error) -> GRPCStatus {
        let status = StatusMapping.status(for: error)
        if status.code == .internalError || status.code == .unavailable {
            logger.error("call failed", metadata: ["status": "\(status.code)", "error": "\(error)"])
        }
        return status
    }

    // MARK: Commands

    func placeOrder(_ req: Ridehailing_Orders_V1_PlaceOrderRequest, _ ctx: ServerContext) async throws
        -> Ridehailing_Orders_V1_PlaceOrderResponse
    {
        let requestId = req.requestID.isEmpty ? OrderIdentity.random() : req.requestID
        let command = OrderCommand(
            commandId: requestId, orderId: OrderIdentity.orderId(forRequest: requestId), expectedVersion: 0,
            kind: .place(
                riderId: OrderValidation.canonicalUUID(req.riderID), price: req.price, route: req.route.map(ProtoMapping.waypoint)))
        let outcome = try await submit(command, ctx)
        var res = Ridehailing_Orders_V1_PlaceOrderResponse()
        res.orderID = outcome.orderId
        if let order = outcome.order { res.order = ProtoMapping.order(order) }
        res.position = outcome.position.token
        return res
    }

    func updateOrder(_ req: Ridehailing_Orders_V1_UpdateOrderRequest, _ ctx: ServerContext) async throws
        -> Ridehailing_Orders_V1_UpdateOrderResponse
    {
        let kind: OrderCommand.Kind
        switch req.status {
        case .accepted: kind = .accept(driverId: OrderValidation.canonicalUUID(req.driverID))
        case .completed: kind = .complete
        case .cancelled: kind = .cancel
        case .placed, .unspecified, .UNRECOGNIZED:
            throw StatusMapping.invalidArgument(
                field: "status", "status must be ORDER_STATUS_ACCEPTED, ORDER_STATUS_COMPLETED or ORDER_STATUS_CANCELLED")
        }
        if req.status != .accepted, !req.driverID.isEmpty {
            throw StatusMapping.invalidArgument(field: "driver_id", "driver_id is only for ORDER_STATUS_ACCEPTED")
        }
        let command = OrderCommand(
            commandId: req.requestID.isEmpty ? OrderIdentity.random() : req.requestID,
            orderId: OrderValidation.canonicalUUID(req.orderID),
            expectedVersion: Int(req.version), kind: kind)
        let outcome = try await submit(command, ctx)
        var res = Ridehailing_Orders_V1_UpdateOrderResponse()
        if let order = outcome.order { res.order = ProtoMapping.order(order) }
        res.position = outcome.position.token
        return res
    }

    /// Submits and waits within the call's deadline; an error outcome becomes its status.
    private func submit(_ command: OrderCommand, _ ctx: ServerContext) async throws -> CommandOutcome {
        let outcome = try await pipeline.gateway.submit(command, timeout: timeout(ctx))
        if case .rejected(let rejection) = outcome.event.kind { throw rejection }
        return outcome
    }

    // MARK: Queries

    /// GetOrder from the projector's cache, without suspending: most reads are of orders
    /// read or changed recently. nil (not cached, or below min_version) leaves the call to
    /// `getOrder`.
    func cachedOrder(_ req: Ridehailing_Orders_V1_GetOrderRequest) throws -> EncodedMessage<Ridehailing_Orders_V1_Order>? {
        try checkGetOrder(req)
        let orderId = OrderValidation.canonicalUUID(req.orderID)
        guard let order = pipeline.queries.cachedOrder(id: orderId, minVersion: Int(req.minVersion)) else { return nil }
        return mappedOrders.encoded(for: order)
    }

    func getOrder(_ req: Ridehailing_Orders_V1_GetOrderRequest, _ ctx: ServerContext) async throws
        -> EncodedMessage<Ridehailing_Orders_V1_Order>
    {
        try checkGetOrder(req)
        let deadline = ContinuousClock.now + timeout(ctx)
        let orderId = OrderValidation.canonicalUUID(req.orderID)
        guard let order = try await pipeline.queries.order(id: orderId, minVersion: Int(req.minVersion), deadline: deadline) else {
            throw StatusMapping.orderNotFound(orderId)
        }
        return mappedOrders.encoded(for: order)
    }

    private func checkGetOrder(_ req: Ridehailing_Orders_V1_GetOrderRequest) throws {
        try checkOrderId(req.orderID, field: "order_id")
        guard req.minVersion >= 0 else { throw StatusMapping.invalidArgument(field: "min_version", "min_version must not be negative") }
    }

    func getOrderEvents(_ req: Ridehailing_Orders_V1_GetOrderEventsRequest) async throws -> Ridehailing_Orders_V1_GetOrderEventsResponse {
        try checkOrderId(req.orderID, field: "order_id")
        let orderId = OrderValidation.canonicalUUID(req.orderID)
        guard let events = try await pipeline.queries.events(orderId: orderId), !events.isEmpty else {
            throw StatusMapping.orderNotFound(orderId)
        }
        var res = Ridehailing_Orders_V1_GetOrderEventsResponse()
        res.events = events.map(ProtoMapping.event)
        return res
    }

    func listOrders(_ req: Ridehailing_Orders_V1_ListOrdersRequest, _ ctx: ServerContext) async throws
        -> Ridehailing_Orders_V1_ListOrdersResponse
    {
        guard req.pageSize >= 0 else { throw StatusMapping.invalidArgument(field: "page_size", "page_size must not be negative") }
        let size = req.pageSize == 0 ? 100 : min(Int(req.pageSize), 1000)
        if case .UNRECOGNIZED(let v) = req.status {
            throw StatusMapping.invalidArgument(field: "status", "unknown status \(v)")
        }
        let status = ProtoMapping.status(req.status)
        var cursor: Int64 = 0
        if !req.pageToken.isEmpty {
            guard let token = PageToken(text: req.pageToken), token.status == req.status.rawValue else {
                throw StatusMapping.invalidArgument(
                    field: "page_token", "page_token is not one this listing returned (tokens are tied to the status filter)")
            }
            cursor = token.cursor
        }
        // page_size orders at most, fewer when they would pass the page's byte budget.
        let page = try await ListPage.assemble(after: cursor, limit: size, json: ctx.usesJSON) { after, limit in
            try await pipeline.queries.list(status: status, after: after, limit: limit)
        }
        var res = Ridehailing_Orders_V1_ListOrdersResponse()
        res.orders = page.orders
        if let next = page.nextCursor { res.nextPageToken = PageToken(cursor: next, status: req.status.rawValue).text }
        return res
    }

    // MARK: StreamEvents

    func streamEvents(
        _ req: Ridehailing_Orders_V1_StreamEventsRequest, _ stream: ResponseStream<Ridehailing_Orders_V1_StreamEventsResponse>
    ) async throws {
        let start: EventSubscription.Start
        switch req.startAt {
        case nil, .fromStart(true): start = .beginning
        case .fromEnd(true): start = .end
        // A client that writes `from_end: false` sets the oneof all the same; taking it as
        // from_end would stream the opposite of what it asked for.
        case .fromStart(false), .fromEnd(false):
            let field = req.startAt == .fromEnd(false) ? "from_end" : "from_start"
            throw StatusMapping.invalidArgument(
                field: field, "\(field) is set to false, which selects no start: set it to true, or leave start_at unset (from the start)")
        case .afterPosition(let token):
            let partitions = pipeline.topics.partitions
            guard let position = LogPosition(token: token, partitions: partitions) else {
                throw StatusMapping.invalidArgument(
                    field: "after_position", "after_position is not a position this server returned")
            }
            let end = try await pipeline.engine.durableEndOffsets(pipeline.topics.aggregates)
            guard zip(position.offsets, end).allSatisfy({ $0 <= $1 }) else {
                throw StatusMapping.invalidArgument(field: "after_position", "after_position is ahead of the event log")
            }
            start = .after(position)
        }
        if !req.orderID.isEmpty { try checkOrderId(req.orderID, field: "order_id") }
        for type in req.eventTypes where !OrderEvent.typeNames.contains(type) {
            throw StatusMapping.invalidArgument(
                field: "event_types", "unknown event type '\(type)'; known: \(OrderEvent.typeNames.sorted().joined(separator: ", "))")
        }
        let subscription = try await pipeline.subscribe(
            start: start,
            filter: .init(
                orderId: req.orderID.isEmpty ? nil : OrderValidation.canonicalUUID(req.orderID), eventTypes: Set(req.eventTypes)))
        defer { Task { await subscription.close() } }
        while let delivery = try await subscription.nextDelivery() {
            var res = Ridehailing_Orders_V1_StreamEventsResponse()
            switch delivery.item {
            case .event(let e):
                if let shared = delivery.shared {
                    // The same response for every caught-up subscriber: mapped and encoded
                    // once per event, not once per subscriber.
                    let prepared = shared.value {
                        var res = Ridehailing_Orders_V1_StreamEventsResponse()
                        res.event = ProtoMapping.event(e)
                        return EncodedMessage(res)
                    }
                    try await stream.send(prepared)
                    continue
                }
                res.event = ProtoMapping.event(e)
            case .caughtUp(let p):
                var c = Ridehailing_Orders_V1_CaughtUp()
                c.position = p.token
                res.caughtUp = c
            case .heartbeat(let p):
                var h = Ridehailing_Orders_V1_Heartbeat()
                h.position = p.token
                h.time = ProtoMapping.timestamp(Clock.now())
                res.heartbeat = h
            }
            try await stream.send(res)
        }
    }

    // MARK: Helpers

    private func checkOrderId(_ id: String, field: String) throws {
        guard OrderValidation.isUUID(id) else {
            throw StatusMapping.invalidArgument(field: field, "\(field) must be a UUID, got '\(id.prefix(64))'")
        }
    }

    /// How long a call may wait: up to its own deadline when it has one (a client
    /// long-polling GetOrder for 45 s gets about its 45 s), else `defaultTimeout`.
    ///
    /// A wait ends a little before the deadline (`answerMargin`), so the server's own
    /// DEADLINE_EXCEEDED reaches the client before the client's timer fires: that answer
    /// says what happened (a command is durable and is retried with the same request_id;
    /// the version the order is at), the client's own says only "Deadline Exceeded".
    func timeout(_ ctx: ServerContext) -> Duration {
        guard let deadline = ctx.deadline else { return defaultTimeout }
        let remaining = max(deadline - .now, .zero)
        return min(remaining - Self.answerMargin(remaining), Self.longestWait)
    }

    /// A tenth of the time left, at most a second: room for the answer's trip back.
    static func answerMargin(_ remaining: Duration) -> Duration {
        min(remaining / 10, .seconds(1))
    }
}

/// ListOrders' continuation token: the last order's placement sequence and the status
/// filter it belongs to, base64url so clients treat it as opaque.
struct PageToken {
    var cursor: Int64
    var status: Int

    init(cursor: Int64, status: Int) {
        self.cursor = cursor
        self.status = status
    }

    init?(text: String) {
        var b64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64), let plain = String(data: data, encoding: .utf8) else { return nil }
        let parts = plain.split(separator: ":")
        guard parts.count == 3, parts[0] == "p1", let c = Int64(parts[1]), c >= 0, let s = Int(parts[2]) else { return nil }
        cursor = c
        status = s
    }

    var text: String {
        Data("p1:\(cursor):\(status)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
