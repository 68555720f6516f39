import SwiftProtobuf

/// The outcome of a call: a gRPC status code, a message and optional rich details.
///
/// Handlers and interceptors throw a `GRPCStatus` to end a call with that status. Any other
/// error thrown by a handler ends the call with ``Code/unknown`` (see ``init(mapping:)``, the
/// one place where errors become statuses).
///
/// On the wire the status becomes the `grpc-status` and percent-encoded `grpc-message`
/// trailers; when ``details`` is not empty, a `google.rpc.Status` carrying the same code,
/// message and details is sent as `grpc-status-details-bin`. ``trailers`` are sent alongside.
public struct GRPCStatus: Error, Sendable, CustomStringConvertible {
    /// A gRPC status code. A struct rather than an enum so that codes outside 0...16 that a
    /// peer may send can still be represented.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int

        public init(rawValue: Int) { self.rawValue = rawValue }

        public static let ok = Code(rawValue: 0)
        public static let cancelled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let internalError = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)

        private static let names = [
            "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
            "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
            "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
            "UNAUTHENTICATED",
        ]

        /// The canonical upper-case name, for example `"INVALID_ARGUMENT"`.
        public var name: String {
            Self.names.indices.contains(rawValue) ? Self.names[rawValue] : "CODE_\(rawValue)"
        }

        public var description: String { name }
    }

    public var code: Code
    public var message: String
    /// Rich error details, sent as `grpc-status-details-bin` (a `google.rpc.Status`).
    public var details: [Google_Protobuf_Any]
    /// Extra trailing metadata sent with this status.
    public var trailers: Metadata

    public init(
        _ code: Code, _ message: String = "", details: [Google_Protobuf_Any] = [],
        trailers: Metadata = [:]
    ) {
        self.code = code
        self.message = message
        self.details = details
        self.trailers = trailers
    }

    public static let ok = GRPCStatus(.ok)

    public var description: String {
        message.isEmpty ? code.name : "\(code.name): \(message)"
    }

    /// Maps any error thrown by a handler or interceptor to the status sent to the client.
    /// This is the single place where that mapping happens:
    /// - a `GRPCStatus` is sent as it is;
    /// - `CancellationError` (the call was cancelled or its deadline passed) is CANCELLED;
    /// - anything else is UNKNOWN. Its description is *not* sent, because it may reveal
    ///   server internals; the server logs it instead.
    init(mapping error: any Error) {
        switch error {
        case let status as GRPCStatus:
            self = status
        case is CancellationError:
            self.init(.cancelled, "The call was cancelled")
        default:
            self.init(.unknown, "The handler failed with an error of type \(type(of: error))")
        }
    }

    /// The `google.rpc.Status` sent in `grpc-status-details-bin`, or nil when there are no details.
    var richStatus: Google_Rpc_Status? {
        if details.isEmpty { return nil }
        var status = Google_Rpc_Status()
        status.code = Int32(truncatingIfNeeded: code.rawValue)
        status.message = message
        status.details = details
        return status
    }
}
