import OrderProto

/// `ridehailing.orders.v1.OrderService`, one method per RPC.
struct OrderServiceClient {
    var grpc: GRPCClient

    private static let service = "/ridehailing.orders.v1.OrderService/"

    func placeOrder(_ request: Ridehailing_Orders_V1_PlaceOrderRequest) throws -> Ridehailing_Orders_V1_PlaceOrderResponse {
        try grpc.unary(Self.service + "PlaceOrder", request)
    }

    func updateOrder(_ request: Ridehailing_Orders_V1_UpdateOrderRequest) throws -> Ridehailing_Orders_V1_UpdateOrderResponse {
        try grpc.unary(Self.service + "UpdateOrder", request)
    }

    func getOrder(_ request: Ridehailing_Orders_V1_GetOrderRequest) throws -> Ridehailing_Orders_V1_Order {
        try grpc.unary(Self.service + "GetOrder", request)
    }

    func getOrderEvents(_ request: Ridehailing_Orders_V1_GetOrderEventsRequest) throws -> Ridehailing_Orders_V1_GetOrderEventsResponse {
        try grpc.unary(Self.service + "GetOrderEvents", request)
    }

    func listOrders(_ request: Ridehailing_Orders_V1_ListOrdersRequest) throws -> Ridehailing_Orders_V1_ListOrdersResponse {
        try grpc.unary(Self.service + "ListOrders", request)
    }

    /// Never returns on its own while the server keeps the stream open.
    func streamEvents(
        _ request: Ridehailing_Orders_V1_StreamEventsRequest,
        onMessage: (Ridehailing_Orders_V1_StreamEventsResponse) throws -> Void
    ) throws {
        try grpc.serverStreaming(Self.service + "StreamEvents", request, onMessage: onMessage)
    }
}
