import ArgumentParser
import BenchProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import NIOPosix

/// A grpc-swift-2 server that answers `/ridehailing.orders.v1.OrderService/GetOrder` with a
/// fixed Order (read from `--order-file`, the protobuf bytes of an Order orders-server
/// returned, so both responses have the same size). The peer orders-server's GetOrder is
/// compared with in Scripts/bench.sh. The method is registered by hand (RegistrableRPCService)
/// with grpc-swift-protobuf's serializers over the same generated SwiftProtobuf types;
/// protoc-gen-grpc-swift-2 would generate the same registration.
@main
struct Peer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-swift-peer", abstract: "grpc-swift-2 server answering GetOrder with a fixed Order.")
    @Option(help: "Port to listen on (127.0.0.1); 0 picks one.") var port = 0
    @Option(help: "File holding a serialized ridehailing.orders.v1.Order.") var orderFile: String
    @Option(help: "Event loop threads.") var threads = 1

    func run() async throws {
        let order = try Ridehailing_Orders_V1_Order(serializedBytes: [UInt8](try Data(contentsOf: URL(fileURLWithPath: orderFile))))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: "127.0.0.1", port: port), transportSecurity: .plaintext,
            config: .defaults, eventLoopGroup: group)
        let server = GRPCServer(transport: transport, services: [FixedOrderService(order: order)])
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask { try await server.serve() }
            guard let address = try await transport.listeningAddress.ipv4 else {
                throw CancellationError()
            }
            // Scripts read the port from this line.
            FileHandle.standardOutput.write(Data("grpc-swift-peer listening on port \(address.port)\n".utf8))
        }
    }
}

struct FixedOrderService: RegistrableRPCService {
    let order: Ridehailing_Orders_V1_Order

    static let getOrder = MethodDescriptor(
        fullyQualifiedService: "ridehailing.orders.v1.OrderService", method: "GetOrder", type: .unary)

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let order = self.order
        router.registerHandler(
            forMethod: Self.getOrder,
            deserializer: ProtobufDeserializer<Ridehailing_Orders_V1_GetOrderRequest>(),
            serializer: ProtobufSerializer<Ridehailing_Orders_V1_Order>()
        ) { request, context in
            // Read the (single) request message, as a real handler would, then answer.
            let message = try await ServerRequest(stream: request).message
            guard !message.orderID.isEmpty else { throw RPCError(code: .invalidArgument, message: "order_id is required") }
            return StreamingServerResponse(single: ServerResponse(message: order))
        }
    }
}
