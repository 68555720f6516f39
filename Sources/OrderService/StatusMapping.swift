import EventLog
import GRPCWire
import OrderDomain
import SwiftProtobuf

/// The one place where failures become gRPC statuses, with details a client can act on:
/// `google.rpc.BadRequest` naming the field for INVALID_ARGUMENT, `google.rpc.ErrorInfo`
/// with the expected and actual versions for ABORTED (and the reason elsewhere).
enum StatusMapping {
    static let domain = "orders.ridehailing"

    static func status(for error: any Error) -> GRPCStatus {
        switch error {
        case let status as GRPCStatus:
            return status
        case let rejection as OrderRejection:
            return status(for: rejection)
        case let timeout as CommandGateway.OutcomeTimeout:
            return GRPCStatus(.deadlineExceeded, timeout.description)
        case let timeout as OrderQueries.VersionTimeout:
            return GRPCStatus(.deadlineExceeded, timeout.description)
        case is CancellationError:
            return GRPCStatus(.cancelled, "the call was cancelled")
        case let logError as LogError:
            return GRPCStatus(.unavailable, "the event store is unavailable: \(logError.message)")
        default:
            return GRPCStatus(.internalError, "internal error: \(error)")
        }
    }

    static func status(for r: OrderRejection) -> GRPCStatus {
        switch r.reason {
        case .invalidArgument:
            return invalidArgument(field: r.field ?? "", r.message)
        case .notFound:
            return GRPCStatus(.notFound, r.message, details: [info(r)])
        case .alreadyExists:
            return GRPCStatus(.alreadyExists, r.message, details: [info(r)])
        case .versionMismatch:
            return GRPCStatus(.aborted, r.message, details: [info(r)])
        case .transitionNotAllowed:
            return GRPCStatus(.failedPrecondition, r.message, details: [info(r)])
        }
    }

    /// NOT_FOUND for a read of an unknown order, with the same `ErrorInfo` reason as a
    /// command's (its metadata names the order).
    static func orderNotFound(_ orderId: String) -> GRPCStatus {
        var info = Google_Rpc_ErrorInfo()
        info.reason = OrderRejection.Reason.notFound.rawValue
        info.domain = domain
        info.metadata = ["order_id": orderId]
        return GRPCStatus(.notFound, "Order \(orderId) not found", details: [pack(info)])
    }

    static func invalidArgument(field: String, _ message: String) -> GRPCStatus {
        var violation = Google_Rpc_BadRequest.FieldViolation()
        violation.field = field
        violation.description_p = message
        var badRequest = Google_Rpc_BadRequest()
        badRequest.fieldViolations = [violation]
        return GRPCStatus(.invalidArgument, message, details: [pack(badRequest)])
    }

    private static func info(_ r: OrderRejection) -> Google_Protobuf_Any {
        var info = Google_Rpc_ErrorInfo()
        info.reason = r.reason.rawValue
        info.domain = domain
        info.metadata = [
            "command_type": r.commandType,
            "expected_version": String(r.expectedVersion),
            "actual_version": String(r.actualVersion),
        ]
        return pack(info)
    }

    private static func pack(_ message: some SwiftProtobuf.Message) -> Google_Protobuf_Any {
        // Packing a message we just built cannot fail (it has no unset required fields).
        try! Google_Protobuf_Any(message: message)
    }
}
