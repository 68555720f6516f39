// `grpc-status-details-bin` carries a google.rpc.Status whose details are
// google.protobuf.Any messages, usually from google/rpc/error_details.proto.
// The generated Swift for those lives in GRPCWire, which would pull the whole
// server (SwiftNIO, nghttp2) into the client for three small messages, so the
// client reads their few fields straight off the protobuf wire instead.

/// A decoded `google.rpc.Status`.
struct RPCStatus {
    var code: Int32 = 0
    var message = ""
    var details: [Detail] = []

    /// One `google.protobuf.Any` from `details`.
    struct Detail {
        var typeURL = ""
        var value: [UInt8] = []

        /// The fully qualified message name: what follows the last `/`.
        var typeName: Substring {
            typeURL.split(separator: "/", omittingEmptySubsequences: false).last ?? ""
        }
    }

    init(serialized bytes: [UInt8]) throws(ProtoWireError) {
        var reader = ProtoWireReader(bytes)
        while let field = try reader.nextField() {
            switch field {
            case .varint(1, let value): code = Int32(truncatingIfNeeded: value)
            case .bytes(2, let value): message = String(decoding: value, as: UTF8.self)
            case .bytes(3, let value):
                var detail = Detail()
                var any = ProtoWireReader(value)
                while let anyField = try any.nextField() {
                    switch anyField {
                    case .bytes(1, let url): detail.typeURL = String(decoding: url, as: UTF8.self)
                    case .bytes(2, let payload): detail.value = payload
                    default: break
                    }
                }
                details.append(detail)
            default: break
            }
        }
    }

    /// Human-readable lines, one or more per detail. Known google.rpc types are
    /// spelled out; anything else is named by its type URL.
    func describedDetails() -> [String] {
        details.flatMap { detail in
            (try? Self.describe(detail)) ?? ["\(detail.typeURL) (\(detail.value.count) bytes)"]
        }
    }

    private static func describe(_ detail: Detail) throws(ProtoWireError) -> [String] {
        let fields = try ProtoWireReader.fields(of: detail.value)
        switch detail.typeName {
        case "google.rpc.BadRequest":
            // field_violations = 1 { field = 1, description = 2, reason = 3 }
            return try fields.messages(1).map { violation in
                let reason = violation.string(3)
                return "field \(violation.string(1)): \(violation.string(2))"
                    + (reason.isEmpty ? "" : " (\(reason))")
            }
        case "google.rpc.ErrorInfo":
            // reason = 1, domain = 2, metadata = 3 (map<string, string>)
            var parts = ["reason=\(fields.string(1))"]
            if !fields.string(2).isEmpty { parts.append("domain=\(fields.string(2))") }
            let metadata = try fields.messages(3).map { ($0.string(1), $0.string(2)) }
            parts += metadata.sorted { $0.0 < $1.0 }.map { "\($0)=\($1)" }
            return ["error info: " + parts.joined(separator: " ")]
        case "google.rpc.PreconditionFailure":
            // violations = 1 { type = 1, subject = 2, description = 3 }
            return try fields.messages(1).map { v in
                "precondition \(v.string(1)) \(v.string(2)): \(v.string(3))"
            }
        case "google.rpc.QuotaFailure":
            // violations = 1 { subject = 1, description = 2 }
            return try fields.messages(1).map { v in "quota \(v.string(1)): \(v.string(2))" }
        case "google.rpc.ResourceInfo":
            // resource_type = 1, resource_name = 2, owner = 3, description = 4
            var line = "resource \(fields.string(1)) \(fields.string(2))"
            if !fields.string(4).isEmpty { line += ": \(fields.string(4))" }
            return [line]
        case "google.rpc.RetryInfo":
            // retry_delay = 1 (google.protobuf.Duration { seconds = 1, nanos = 2 })
            let delay = try fields.messages(1).first
            let seconds = Double(delay?.int(1) ?? 0) + Double(delay?.int(2) ?? 0) / 1e9
            return ["retry after \(seconds)s"]
        case "google.rpc.DebugInfo":
            // stack_entries = 1 (repeated), detail = 2
            return ["debug: \(fields.string(2))"] + fields.strings(1).map { "  at \($0)" }
        case "google.rpc.RequestInfo":
            return ["request \(fields.string(1))"]
        case "google.rpc.Help":
            // links = 1 { description = 1, url = 2 }
            return try fields.messages(1).map { "help: \($0.string(1)) \($0.string(2))" }
        case "google.rpc.LocalizedMessage":
            return ["\(fields.string(1)): \(fields.string(2))"]
        default:
            throw ProtoWireError(message: "unknown detail type")
        }
    }
}

struct ProtoWireError: Error {
    var message: String
}

/// The fields of one protobuf message, in wire order, by number.
struct ProtoFields {
    var entries: [ProtoWireReader.Field]

    func string(_ number: Int) -> String {
        for case .bytes(number, let value) in entries.reversed() {
            return String(decoding: value, as: UTF8.self)
        }
        return ""
    }

    func strings(_ number: Int) -> [String] {
        entries.compactMap {
            if case .bytes(number, let value) = $0 { String(decoding: value, as: UTF8.self) } else { nil }
        }
    }

    func int(_ number: Int) -> Int64 {
        for case .varint(number, let value) in entries.reversed() {
            return Int64(bitPattern: value)
        }
        return 0
    }

    func messages(_ number: Int) throws(ProtoWireError) -> [ProtoFields] {
        var result: [ProtoFields] = []
        for case .bytes(number, let value) in entries {
            result.append(try ProtoWireReader.fields(of: value))
        }
        return result
    }
}

/// Reads protobuf's wire format: enough for the small, stable google.rpc
/// messages above, nothing more (groups are rejected).
struct ProtoWireReader {
    enum Field {
        case varint(Int, UInt64)
        case fixed64(Int, UInt64)
        case bytes(Int, [UInt8])
        case fixed32(Int, UInt32)
    }

    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    static func fields(of bytes: [UInt8]) throws(ProtoWireError) -> ProtoFields {
        var reader = ProtoWireReader(bytes)
        var entries: [Field] = []
        while let field = try reader.nextField() { entries.append(field) }
        return ProtoFields(entries: entries)
    }

    mutating func nextField() throws(ProtoWireError) -> Field? {
        guard index < bytes.count else { return nil }
        let key = try varint()
        let number = Int(key >> 3)
        guard number > 0 else { throw ProtoWireError(message: "field number 0") }
        switch key & 7 {
        case 0: return .varint(number, try varint())
        case 1: return .fixed64(number, try fixed(8))
        case 2:
            let length = try varint()
            guard length <= UInt64(bytes.count - index) else { throw ProtoWireError(message: "truncated field") }
            let value = Array(bytes[index..<index + Int(length)])
            index += Int(length)
            return .bytes(number, value)
        case 5: return .fixed32(number, UInt32(try fixed(4)))
        default: throw ProtoWireError(message: "unsupported wire type \(key & 7)")
        }
    }

    private mutating func varint() throws(ProtoWireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.count, shift < 64 {
            let byte = bytes[index]
            index += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
        throw ProtoWireError(message: "truncated varint")
    }

    private mutating func fixed(_ width: Int) throws(ProtoWireError) -> UInt64 {
        guard bytes.count - index >= width else { throw ProtoWireError(message: "truncated fixed field") }
        var result: UInt64 = 0
        for offset in 0..<width { result |= UInt64(bytes[index + offset]) << (8 * UInt64(offset)) }
        index += width
        return result
    }
}
