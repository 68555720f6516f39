/// A gRPC status code (grpc/grpc doc/statuscodes.md). A struct rather than an
/// enum: a server may send a code this client has never heard of.
struct GRPCStatusCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    var rawValue: Int

    init(rawValue: Int) { self.rawValue = rawValue }

    static let ok = Self(rawValue: 0)
    static let cancelled = Self(rawValue: 1)
    static let unknown = Self(rawValue: 2)
    static let invalidArgument = Self(rawValue: 3)
    static let deadlineExceeded = Self(rawValue: 4)
    static let notFound = Self(rawValue: 5)
    static let alreadyExists = Self(rawValue: 6)
    static let permissionDenied = Self(rawValue: 7)
    static let resourceExhausted = Self(rawValue: 8)
    static let failedPrecondition = Self(rawValue: 9)
    static let aborted = Self(rawValue: 10)
    static let outOfRange = Self(rawValue: 11)
    static let unimplemented = Self(rawValue: 12)
    static let internalError = Self(rawValue: 13)
    static let unavailable = Self(rawValue: 14)
    static let dataLoss = Self(rawValue: 15)
    static let unauthenticated = Self(rawValue: 16)

    private static let names = [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    ]

    /// The canonical upper-case name, e.g. `ABORTED`; `CODE_<n>` for unknown codes.
    var name: String {
        Self.names.indices.contains(rawValue) ? Self.names[rawValue] : "CODE_\(rawValue)"
    }

    var description: String { name }

    /// The code a non-gRPC HTTP answer stands for (doc/http-grpc-status-mapping.md).
    init(httpStatus: Int) {
        switch httpStatus {
        case 400: self = .internalError
        case 401: self = .unauthenticated
        case 403: self = .permissionDenied
        case 404: self = .unimplemented
        case 429, 502, 503, 504: self = .unavailable
        default: self = .unknown
        }
    }
}

/// A call that ended with a status other than OK, as the server sent it (or as
/// the client concluded it when the server could not say).
struct GRPCStatusError: Error, CustomStringConvertible {
    var code: GRPCStatusCode
    var message: String
    /// `google.rpc.Status` from `grpc-status-details-bin`, when the server sent one.
    var details: RPCStatus?
    /// A suggestion for the user, printed after the details.
    var hint: String?
    /// False when the request certainly never reached the server (no connection was
    /// made, or the server refused the stream unprocessed): nothing it asked for happened.
    var mayHaveReachedServer = true

    init(_ code: GRPCStatusCode, _ message: String, details: RPCStatus? = nil, hint: String? = nil) {
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
    }

    /// True when the server decided the call and said so: the code means the request was
    /// refused (bad, unknown order, stale version, ...), not that its outcome is unknown.
    var isRefusal: Bool {
        [.invalidArgument, .notFound, .alreadyExists, .permissionDenied, .resourceExhausted, .failedPrecondition,
         .aborted, .outOfRange, .unimplemented, .unauthenticated].contains(code)
    }

    var description: String { "\(code.name): \(message)" }
}

enum GRPCMetadata {
    /// Undoes `grpc-message`'s percent-encoding: `%XX` becomes the byte, the
    /// bytes are UTF-8. A malformed escape stays as it was, as the spec asks.
    static func percentDecoded(_ text: String) -> String {
        let input = Array(text.utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(input.count)
        var index = 0
        while index < input.count {
            if input[index] == UInt8(ascii: "%"), index + 2 < input.count,
               let high = hexValue(input[index + 1]), let low = hexValue(input[index + 2]) {
                bytes.append(high << 4 | low)
                index += 3
            } else {
                bytes.append(input[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Decodes a `-bin` header value: base64, padded or not. Several values may
    /// have been joined with commas; only the first is a `google.rpc.Status`.
    static func base64Decoded(_ text: String) -> [UInt8]? {
        let first = text.split(separator: ",", omittingEmptySubsequences: false).first ?? ""
        var output: [UInt8] = []
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in first.utf8 {
            let value: UInt32
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(byte - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(byte - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(byte - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"), UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "/"), UInt8(ascii: "_"): value = 63
            case UInt8(ascii: "="), UInt8(ascii: " "): continue
            default: return nil
            }
            accumulator = accumulator << 6 | value
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return output
    }
}
