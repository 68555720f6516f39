// swift-tools-version:6.0
import PackageDescription

// Every C library is linked from the system through pkg-config; the shim
// targets hold a module map and one header each, nothing else.
func systemLibrary(_ name: String, pkgConfig: String, apt: String) -> Target {
    .systemLibrary(name: name, pkgConfig: pkgConfig, providers: [.apt([apt])])
}

let nio = "swift-nio"
let package = Package(
    name: "ride-hailing-orders",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "orders-server", targets: ["orders-server"]),
        .executable(name: "orders", targets: ["orders"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C libraries (system, pkg-config).
        systemLibrary("CNGHTTP2", pkgConfig: "libnghttp2", apt: "libnghttp2-dev"),
        systemLibrary("CSQLite", pkgConfig: "sqlite3", apt: "libsqlite3-dev"),
        systemLibrary("CRdKafka", pkgConfig: "rdkafka", apt: "librdkafka-dev"),
        systemLibrary("CCurl", pkgConfig: "libcurl", apt: "libcurl4-openssl-dev"),
        systemLibrary("CZlib", pkgConfig: "zlib", apt: "zlib1g-dev"),

        // Pure domain: the decider, commands, events, validation. No I/O.
        .target(name: "OrderDomain"),

        // Generated swift-protobuf code for Protos/ (Scripts/generate-protos.sh).
        .target(
            name: "OrderProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),

        // The partitioned-log abstraction and the seed's processors on top of it.
        .target(
            name: "EventLog",
            dependencies: [
                "OrderDomain",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The embedded engine: the log, checkpoints and read model on SQLite.
        .target(
            name: "EngineSQLite",
            dependencies: [
                "CSQLite", "EventLog", "OrderDomain",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // libcurl, wrapped once: the ksqlDB client and the `orders` CLI's transport.
        .target(name: "CurlTransfer", dependencies: ["CCurl"]),

        // The Kafka engine: the log, groups and offsets on librdkafka.
        .target(
            name: "EngineKafka",
            dependencies: [
                "CRdKafka", "CurlTransfer", "EventLog",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // A generic gRPC server on nghttp2 + SwiftNIO. Knows nothing of orders.
        .target(
            name: "GRPCWire",
            dependencies: [
                "CNGHTTP2", "CZlib",
                .product(name: "NIOCore", package: nio),
                .product(name: "NIOPosix", package: nio),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Release builds skip the dynamic exclusivity checks (swift_beginAccess on every
            // class-property access: ~5% of a unary call's CPU). Debug builds and tests keep them.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),

        // The order service: binds OrderProto's service to the processors.
        .target(
            name: "OrderService",
            dependencies: [
                "OrderDomain", "OrderProto", "EventLog", "EngineSQLite", "GRPCWire",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .executableTarget(
            name: "orders-server",
            dependencies: [
                "OrderService", "EngineSQLite", "EngineKafka", "GRPCWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "orders",
            dependencies: [
                "OrderProto", "CurlTransfer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // grpc.testing.TestService on GRPCWire, for the Python interop suite.
        .executableTarget(
            name: "grpc-interop-server",
            dependencies: [
                "GRPCWire",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),

        // Drives the pipeline without RPC: the pipeline benchmark and the crash test's child.
        .executableTarget(
            name: "pipeline-load",
            dependencies: [
                "EventLog", "EngineSQLite", "EngineKafka", "OrderDomain",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .testTarget(name: "OrderDomainTests", dependencies: ["OrderDomain"]),
        .testTarget(name: "EventLogTests", dependencies: ["EventLog", "EngineSQLite", "OrderDomain"]),
        .testTarget(name: "PipelineTests", dependencies: ["EventLog", "EngineSQLite", "OrderDomain"]),
        .testTarget(
            name: "GRPCWireTests",
            dependencies: [
                "GRPCWire",
                .product(name: "NIOCore", package: nio),
                .product(name: "NIOPosix", package: nio),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "KafkaTests", dependencies: ["EngineKafka", "EventLog", "OrderDomain"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["OrderProto", "OrderService", "EngineSQLite", "EventLog", "GRPCWire"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
