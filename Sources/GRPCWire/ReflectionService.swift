import Foundation
import Logging
import SwiftProtobuf

/// Server reflection (`grpc.reflection.v1` and `grpc.reflection.v1alpha`, whose messages are
/// identical on the wire): answers from the serialized `FileDescriptorSet`s it is given.
///
/// File names are the import paths protoc was given, so dependency names resolve as clients
/// expect. Symbols cover packages' messages (and nested messages), enums (and nested enums),
/// services, methods (`pkg.Svc.Method`) and extensions.
struct ReflectionService: Sendable {
    static let serviceNames = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]

    private let files: [String: Data]
    private let dependencies: [String: [String]]
    private let symbols: [String: String]
    /// Extendee type (no leading dot) → field number → file.
    private let extensions: [String: [Int32: String]]
    private let services: [String]

    init(descriptorSets: [String], serviceNames: [String], logger: Logger) {
        var files: [String: Data] = [:]
        var dependencies: [String: [String]] = [:]
        var symbols: [String: String] = [:]
        var extensions: [String: [Int32: String]] = [:]
        for encoded in descriptorSets {
            guard let bytes = Base64.decode(encoded.utf8),
                let set = try? Google_Protobuf_FileDescriptorSet(serializedBytes: bytes)
            else {
                logger.error("Ignoring a descriptor set that is not a base64 FileDescriptorSet")
                continue
            }
            for file in set.file where files[file.name] == nil {
                guard let serialized: Data = try? file.serializedBytes() else { continue }
                files[file.name] = serialized
                dependencies[file.name] = file.dependency
                let prefix = file.package.isEmpty ? "" : file.package + "."
                func index(message: Google_Protobuf_DescriptorProto, scope: String) {
                    let name = scope + message.name
                    symbols[name] = file.name
                    for nested in message.nestedType { index(message: nested, scope: name + ".") }
                    for e in message.enumType { symbols[name + "." + e.name] = file.name }
                    for field in message.extension {
                        symbols[name + "." + field.name] = file.name
                        extensions[String(field.extendee.drop(while: { $0 == "." })), default: [:]][field.number] = file.name
                    }
                }
                for message in file.messageType { index(message: message, scope: prefix) }
                for e in file.enumType { symbols[prefix + e.name] = file.name }
                for service in file.service {
                    symbols[prefix + service.name] = file.name
                    for method in service.method { symbols[prefix + service.name + "." + method.name] = file.name }
                }
                for field in file.extension {
                    symbols[prefix + field.name] = file.name
                    extensions[String(field.extendee.drop(while: { $0 == "." })), default: [:]][field.number] = file.name
                }
            }
        }
        self.files = files
        self.dependencies = dependencies
        self.symbols = symbols
        self.extensions = extensions
        self.services = serviceNames.sorted()
    }

    var serviceDefinitions: [ServiceDefinition] {
        var v1 = ServiceDefinition(name: "grpc.reflection.v1.ServerReflection")
        v1.bidirectionalStreaming("ServerReflectionInfo") {
            (requests: RequestStream<Grpc_Reflection_V1_ServerReflectionRequest>,
             responses: ResponseStream<Grpc_Reflection_V1_ServerReflectionResponse>, _) in
            var sent = Set<String>()
            for try await request in requests {
                try await responses.send(self.respond(to: request, sent: &sent))
            }
        }
        var v1alpha = ServiceDefinition(name: "grpc.reflection.v1alpha.ServerReflection")
        v1alpha.bidirectionalStreaming("ServerReflectionInfo") {
            (requests: RequestStream<Grpc_Reflection_V1alpha_ServerReflectionRequest>,
             responses: ResponseStream<Grpc_Reflection_V1alpha_ServerReflectionResponse>, _) in
            var sent = Set<String>()
            for try await request in requests {
                // Same field numbers in both versions: translate through the wire format.
                let v1Request = try Grpc_Reflection_V1_ServerReflectionRequest(serializedBytes: request.serializedBytes() as [UInt8])
                let v1Response = self.respond(to: v1Request, sent: &sent)
                try await responses.send(
                    Grpc_Reflection_V1alpha_ServerReflectionResponse(serializedBytes: v1Response.serializedBytes() as [UInt8]))
            }
        }
        return [v1, v1alpha]
    }

    /// Answers one request. `sent` holds the files already sent on this stream: like
    /// grpc-go, dependencies the client already has are not sent again (the requested file
    /// always is).
    func respond(
        to request: Grpc_Reflection_V1_ServerReflectionRequest, sent: inout Set<String>
    ) -> Grpc_Reflection_V1_ServerReflectionResponse {
        var response = Grpc_Reflection_V1_ServerReflectionResponse()
        response.validHost = request.host
        response.originalRequest = request
        switch request.messageRequest {
        case .listServices:
            var list = Grpc_Reflection_V1_ListServiceResponse()
            list.service = services.map { name in
                var service = Grpc_Reflection_V1_ServiceResponse()
                service.name = name
                return service
            }
            response.listServicesResponse = list
        case .fileByFilename(let name):
            if files[name] != nil {
                response.fileDescriptorResponse = fileResponse(name, sent: &sent)
            } else {
                response.errorResponse = notFound("File not found: \(name)")
            }
        case .fileContainingSymbol(let symbol):
            let trimmed = String(symbol.drop(while: { $0 == "." }))
            if let file = symbols[trimmed] {
                response.fileDescriptorResponse = fileResponse(file, sent: &sent)
            } else {
                response.errorResponse = notFound("Symbol not found: \(symbol)")
            }
        case .fileContainingExtension(let request):
            let type = String(request.containingType.drop(while: { $0 == "." }))
            if let file = extensions[type]?[request.extensionNumber] {
                response.fileDescriptorResponse = fileResponse(file, sent: &sent)
            } else {
                response.errorResponse = notFound("Extension not found: \(type)(\(request.extensionNumber))")
            }
        case .allExtensionNumbersOfType(let typeName):
            let type = String(typeName.drop(while: { $0 == "." }))
            if symbols[type] != nil {
                var numbers = Grpc_Reflection_V1_ExtensionNumberResponse()
                numbers.baseTypeName = type
                numbers.extensionNumber = (extensions[type].map { Array($0.keys) } ?? []).sorted()
                response.allExtensionNumbersResponse = numbers
            } else {
                response.errorResponse = notFound("Type not found: \(typeName)")
            }
        case nil:
            var error = Grpc_Reflection_V1_ErrorResponse()
            error.errorCode = Int32(GRPCStatus.Code.invalidArgument.rawValue)
            error.errorMessage = "Empty reflection request"
            response.errorResponse = error
        }
        return response
    }

    /// The file and, breadth-first, its transitive dependencies not yet sent.
    private func fileResponse(_ name: String, sent: inout Set<String>) -> Grpc_Reflection_V1_FileDescriptorResponse {
        var result = Grpc_Reflection_V1_FileDescriptorResponse()
        var queue = [name]
        var seen: Set<String> = [name]
        var index = 0
        while index < queue.count {
            let current = queue[index]
            index += 1
            if let bytes = files[current], index == 1 || !sent.contains(current) {
                result.fileDescriptorProto.append(bytes)
                sent.insert(current)
            }
            for dependency in dependencies[current] ?? [] where seen.insert(dependency).inserted {
                queue.append(dependency)
            }
        }
        return result
    }

    private func notFound(_ message: String) -> Grpc_Reflection_V1_ErrorResponse {
        var error = Grpc_Reflection_V1_ErrorResponse()
        error.errorCode = Int32(GRPCStatus.Code.notFound.rawValue)
        error.errorMessage = message
        return error
    }
}
