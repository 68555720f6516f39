import Foundation
import GRPCWire

/// grpc.testing.TestService as grpc's interop-test-descriptions.md expects it.
enum TestService {
    static var definition: ServiceDefinition {
        var service = ServiceDefinition(name: "grpc.testing.TestService")
        service.unary("EmptyCall") { (_: Grpc_Testing_Empty, _) in Grpc_Testing_Empty() }
        service.unary("UnaryCall", unaryCall)
        service.unary("CacheableUnaryCall", unaryCall)
        service.serverStreaming("StreamingOutputCall") {
            (request: Grpc_Testing_StreamingOutputCallRequest, responses: ResponseStream<Grpc_Testing_StreamingOutputCallResponse>, _) in
            for parameters in request.responseParameters {
                try await respond(parameters, to: responses)
            }
            try echoStatus(request.hasResponseStatus ? request.responseStatus : nil)
        }
        service.clientStreaming("StreamingInputCall") {
            (requests: RequestStream<Grpc_Testing_StreamingInputCallRequest>, _) in
            var total = 0
            for try await request in requests {
                total += request.payload.body.count
            }
            var response = Grpc_Testing_StreamingInputCallResponse()
            response.aggregatedPayloadSize = Int32(total)
            return response
        }
        service.bidirectionalStreaming("FullDuplexCall") {
            (requests: RequestStream<Grpc_Testing_StreamingOutputCallRequest>, responses: ResponseStream<Grpc_Testing_StreamingOutputCallResponse>, context) in
            echoMetadata(context)
            for try await request in requests {
                try echoStatus(request.hasResponseStatus ? request.responseStatus : nil)
                for parameters in request.responseParameters {
                    try await respond(parameters, to: responses)
                }
            }
        }
        service.bidirectionalStreaming("HalfDuplexCall") {
            (requests: RequestStream<Grpc_Testing_StreamingOutputCallRequest>, responses: ResponseStream<Grpc_Testing_StreamingOutputCallResponse>, _) in
            var buffered: [Grpc_Testing_StreamingOutputCallRequest] = []
            for try await request in requests { buffered.append(request) }
            for request in buffered {
                for parameters in request.responseParameters {
                    try await respond(parameters, to: responses)
                }
            }
        }
        // UnimplementedCall is deliberately not registered (interop case unimplemented_method).
        return service
    }

    @Sendable
    static func unaryCall(_ request: Grpc_Testing_SimpleRequest, _ context: ServerContext) async throws -> Grpc_Testing_SimpleResponse {
        echoMetadata(context)
        if request.expectCompressed.value, !context.requestMessageCompressed {
            throw GRPCStatus(.invalidArgument, "Expected a compressed request message")
        }
        try echoStatus(request.hasResponseStatus ? request.responseStatus : nil)
        if request.responseCompressed.value {
            context.response.setCompression(true)
        }
        var response = Grpc_Testing_SimpleResponse()
        if request.responseSize > 0 {
            response.payload.body = zeros(Int(request.responseSize))
        }
        return response
    }

    static func respond(
        _ parameters: Grpc_Testing_ResponseParameters, to responses: ResponseStream<Grpc_Testing_StreamingOutputCallResponse>
    ) async throws {
        if parameters.intervalUs > 0 {
            try await Task.sleep(for: .microseconds(Int(parameters.intervalUs)))
        }
        var response = Grpc_Testing_StreamingOutputCallResponse()
        response.payload.body = zeros(Int(parameters.size))
        try await responses.send(response, compress: parameters.compressed.value)
    }

    /// Echoes `x-grpc-test-echo-initial` into the response headers and
    /// `x-grpc-test-echo-trailing-bin` into the trailers (interop case custom_metadata). A
    /// plain call rather than an interceptor: this server is also the benchmark subject, and
    /// the loop below allocates nothing for a request without those headers.
    static func echoMetadata(_ context: ServerContext) {
        for (name, value) in context.metadata where name.hasPrefix("x-grpc-test-echo-") {
            switch (name, value) {
            case ("x-grpc-test-echo-initial", .string(let text)):
                context.response.setInitial(["x-grpc-test-echo-initial": .string(text)])
            case ("x-grpc-test-echo-trailing-bin", .binary(let bytes)):
                context.response.addTrailing("x-grpc-test-echo-trailing-bin", binary: bytes)
            default:
                break
            }
        }
    }

    /// Payload bodies are all zeros; small ones are shared instead of allocated per response.
    private static let smallZeros = Data(count: 4096)

    static func zeros(_ count: Int) -> Data {
        count <= smallZeros.count ? smallZeros.prefix(count) : Data(count: count)
    }

    static func echoStatus(_ status: Grpc_Testing_EchoStatus?) throws {
        guard let status, status.code != 0 else { return }
        throw GRPCStatus(GRPCStatus.Code(rawValue: Int(status.code)), status.message)
    }
}
