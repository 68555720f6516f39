import Foundation
import Testing

/// The committed generated code must match the protos: regenerate with
/// `Scripts/generate-protos.sh` after changing any .proto.
@Suite struct GeneratedCodeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// (output folder, include roots, protos) exactly as Scripts/generate-protos.sh has them.
    static let groups: [(String, [String], [String])] = [
        ("Sources/OrderProto/Generated", ["Protos"], ["ridehailing/orders/v1/orders.proto"]),
        (
            "Sources/GRPCWire/Generated", ["Protos", "/usr/share/grpc-proto"],
            [
                "google/rpc/status.proto", "google/rpc/error_details.proto", "grpc/health/v1/health.proto",
                "grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto",
            ]
        ),
        (
            "Sources/grpc-interop-server/Generated", ["/usr/share/grpc-proto"],
            ["grpc/testing/test.proto", "grpc/testing/messages.proto", "grpc/testing/empty.proto"]
        ),
    ]

    @Test(arguments: groups.map(\.0))
    func embeddedDescriptorsMatchTheProtos(folder: String) throws {
        let (_, includes, protos) = try #require(Self.groups.first { $0.0 == folder })
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("descriptors-\(UUID().uuidString).pb")
        defer { try? FileManager.default.removeItem(at: out) }
        let status = try run(
            "/usr/bin/protoc", includes.flatMap { ["-I", $0] } + ["--include_imports", "--descriptor_set_out=\(out.path)"] + protos)
        #expect(status == 0, "protoc failed")
        let fresh = try Data(contentsOf: out).base64EncodedString()
        let source = try String(contentsOf: Self.root.appendingPathComponent("\(folder)/Descriptors.swift"), encoding: .utf8)
        let committed = try #require(source.split(separator: "\"").dropFirst().first.map(String.init))
        let matches = committed == fresh  // compared as a Bool: the base64 texts are long
        #expect(matches, "\(folder) is stale: run Scripts/generate-protos.sh")
    }

    @Test func generatedFilesMatchTheirChecksums() throws {
        let status = try run("/usr/bin/sha256sum", ["--check", "--quiet", "Protos/generated.sha256"])
        #expect(status == 0, "generated code was edited by hand or not regenerated: run Scripts/generate-protos.sh")
    }

    private func run(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.currentDirectoryURL = Self.root
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
