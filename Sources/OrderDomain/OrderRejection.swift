/// Why a command was refused. Validation failures are refused before anything is
/// written; the others are decided against the order's state and recorded as an
/// `ErrorEvent` in its history.
public struct OrderRejection: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable, Codable {
        /// A field is invalid; `field` names it.
        case invalidArgument = "INVALID_ARGUMENT"
        /// The order does not exist.
        case notFound = "NOT_FOUND"
        /// PlaceOrder for an order id that already exists.
        case alreadyExists = "ALREADY_EXISTS"
        /// The expected version is not the current version.
        case versionMismatch = "VERSION_MISMATCH"
        /// The order's status does not allow the command.
        case transitionNotAllowed = "TRANSITION_NOT_ALLOWED"
    }

    public var reason: Reason
    public var message: String
    /// The offending field (request field name, snake_case) for `invalidArgument`.
    public var field: String?
    /// The command's type and expected version, and the order's version when decided.
    public var commandType: String
    public var expectedVersion: Int
    public var actualVersion: Int

    public init(
        reason: Reason, message: String, field: String? = nil, commandType: String,
        expectedVersion: Int, actualVersion: Int
    ) {
        self.reason = reason
        self.message = message
        self.field = field
        self.commandType = commandType
        self.expectedVersion = expectedVersion
        self.actualVersion = actualVersion
    }

    public var description: String { message }
}
