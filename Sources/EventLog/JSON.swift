/// A small JSON reader and writer for the log's records, which are written and read
/// several times per command: Foundation's Codable JSON took over half the pipeline's
/// CPU (perf, pipeline-load at 64 in flight), this takes a fraction of that.
import OrderDomain

enum JSON {
    indirect enum Value: Equatable {
        case null
        case bool(Bool)
        case int(Int64)
        case double(Double)
        case string(String)
        case array([Value])
        /// Members in document order; objects here are small, so a linear lookup wins.
        case object([(String, Value)])

        static func == (a: Value, b: Value) -> Bool {
            switch (a, b) {
            case (.null, .null): true
            case (.bool(let x), .bool(let y)): x == y
            case (.int(let x), .int(let y)): x == y
            case (.double(let x), .double(let y)): x == y
            case (.string(let x), .string(let y)): x == y
            case (.array(let x), .array(let y)): x == y
            case (.object(let x), .object(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            default: false
            }
        }

        subscript(key: String) -> Value? {
            guard case .object(let members) = self else { return nil }
            for (k, v) in members where k == key { return v }
            return nil
        }

        var string: String? {
            if case .string(let s) = self { return s }
            return nil
        }

        var int: Int? {
            switch self {
            case .int(let v): return Int(exactly: v)
            case .double(let d): return Int(exactly: d)
            default: return nil
            }
        }

        var double: Double? {
            switch self {
            case .int(let v): return Double(v)
            case .double(let d): return d
            default: return nil
            }
        }

        var array: [Value]? {
            if case .array(let a) = self { return a }
            return nil
        }
    }

    struct ParseError: Error, CustomStringConvertible {
        var message: String
        var offset: Int
        var description: String { "\(message) at byte \(offset)" }
    }

    static func parse(_ bytes: some Collection<UInt8>) throws(ParseError) -> Value {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buffer throws(ParseError) -> Value in
            var parser = Parser(bytes: buffer)
            parser.skipSpace()
            let value = try parser.value(depth: 0)
            parser.skipSpace()
            guard parser.index == buffer.count else { throw ParseError(message: "trailing characters", offset: parser.index) }
            return value
        }
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        mutating func skipSpace() {
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
                index += 1
            }
        }

        func fail(_ message: String) -> ParseError { ParseError(message: message, offset: index) }

        mutating func value(depth: Int) throws(ParseError) -> Value {
            guard depth < 64 else { throw fail("nested too deeply") }
            guard index < bytes.count else { throw fail("unexpected end") }
            switch bytes[index] {
            case UInt8(ascii: "{"):
                index += 1
                var members: [(String, Value)] = []
                skipSpace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return .object(members)
                }
                while true {
                    skipSpace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                    let key = try string()
                    skipSpace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    index += 1
                    skipSpace()
                    members.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard index < bytes.count else { throw fail("unterminated object") }
                    if bytes[index] == UInt8(ascii: ",") {
                        index += 1
                    } else if bytes[index] == UInt8(ascii: "}") {
                        index += 1
                        return .object(members)
                    } else {
                        throw fail("expected ',' or '}'")
                    }
                }
            case UInt8(ascii: "["):
                index += 1
                var items: [Value] = []
                skipSpace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .array(items)
                }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard index < bytes.count else { throw fail("unterminated array") }
                    if bytes[index] == UInt8(ascii: ",") {
                        index += 1
                    } else if bytes[index] == UInt8(ascii: "]") {
                        index += 1
                        return .array(items)
                    } else {
                        throw fail("expected ',' or ']'")
                    }
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            default:
                return try number()
            }
        }

        mutating func literal(_ word: StaticString, _ value: Value) throws(ParseError) -> Value {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw fail("unexpected end") }
            for i in 0..<count where bytes[index + i] != word.utf8Start[i] { throw fail("invalid literal") }
            index += count
            return value
        }

        mutating func number() throws(ParseError) -> Value {
            let start = index
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
            var integral = true
            let digitsStart = index
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
            guard index > digitsStart else { throw fail("invalid value") }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                integral = false
                index += 1
                let fraction = index
                while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
                guard index > fraction else { throw fail("invalid number") }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                integral = false
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                let exponent = index
                while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
                guard index > exponent else { throw fail("invalid number") }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if integral, let v = Int64(text) { return .int(v) }
            guard let d = Double(text) else { throw fail("invalid number") }
            return .double(d)
        }

        mutating func string() throws(ParseError) -> String {
            index += 1  // the opening quote
            let start = index
            // Fast path: no escapes.
            while index < bytes.count {
                let c = bytes[index]
                if c == UInt8(ascii: "\"") {
                    let s = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                    index += 1
                    return s
                }
                if c == UInt8(ascii: "\\") { break }
                if c < 0x20 { throw fail("control character in a string") }
                index += 1
            }
            var out = Array(bytes[start..<index])
            while index < bytes.count {
                let c = bytes[index]
                switch c {
                case UInt8(ascii: "\""):
                    index += 1
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    index += 1
                    guard index < bytes.count else { throw fail("unterminated escape") }
                    let e = bytes[index]
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if scalar >= 0xD800, scalar < 0xDC00 {
                            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                                throw fail("unpaired surrogate")
                            }
                            index += 2
                            let low = try hex4()
                            guard low >= 0xDC00, low < 0xE000 else { throw fail("invalid surrogate pair") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                        out.append(contentsOf: String(Character(u)).utf8)
                    default: throw fail("invalid escape")
                    }
                default:
                    if c < 0x20 { throw fail("control character in a string") }
                    // A run of plain bytes, copied at once.
                    let run = index
                    while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\"), bytes[index] >= 0x20 {
                        index += 1
                    }
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<index]))
                }
            }
            throw fail("unterminated string")
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw fail("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw fail("invalid \\u escape")
                }
                v = v << 4 | d
                index += 1
            }
            return v
        }
    }

    /// Appends JSON text to a byte buffer; the caller writes members in a fixed order.
    struct Writer {
        var bytes: [UInt8] = []
        private var needsComma = false

        init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

        mutating func beginObject() {
            comma()
            bytes.append(UInt8(ascii: "{"))
            needsComma = false
        }

        mutating func endObject() {
            bytes.append(UInt8(ascii: "}"))
            needsComma = true
        }

        mutating func beginArray() {
            comma()
            bytes.append(UInt8(ascii: "["))
            needsComma = false
        }

        mutating func endArray() {
            bytes.append(UInt8(ascii: "]"))
            needsComma = true
        }

        mutating func key(_ name: String) {
            comma()
            appendString(name)
            bytes.append(UInt8(ascii: ":"))
            needsComma = false
        }

        mutating func string(_ value: String) {
            comma()
            appendString(value)
            needsComma = true
        }

        mutating func int(_ value: Int) {
            comma()
            bytes.append(contentsOf: String(value).utf8)
            needsComma = true
        }

        /// Shortest round-trip form; non-finite values (never valid here) become null.
        mutating func double(_ value: Double) {
            comma()
            if value.isFinite {
                bytes.append(contentsOf: value.description.utf8)
            } else {
                bytes.append(contentsOf: "null".utf8)
            }
            needsComma = true
        }

        mutating func bool(_ value: Bool) {
            comma()
            bytes.append(contentsOf: (value ? "true" : "false").utf8)
            needsComma = true
        }

        mutating func null() {
            comma()
            bytes.append(contentsOf: "null".utf8)
            needsComma = true
        }

        /// Appends a complete JSON value as it is (the caller vouches for it).
        mutating func raw(_ json: some Sequence<UInt8>) {
            comma()
            bytes.append(contentsOf: json)
            needsComma = true
        }

        /// Members with a value only when present, like Codable's encodeIfPresent.
        mutating func member(_ name: String, _ value: String?) {
            if let value {
                key(name)
                string(value)
            }
        }

        mutating func member(_ name: String, _ value: Int?) {
            if let value {
                key(name)
                int(value)
            }
        }

        /// A route as the log and the integration events write it: `[{address, lat, lon}]`.
        mutating func member(_ name: String, _ route: [Waypoint]) {
            key(name)
            beginArray()
            for point in route {
                beginObject()
                member("address", point.address)
                key("lat")
                double(point.lat)
                key("lon")
                double(point.lon)
                endObject()
            }
            endArray()
        }

        private mutating func comma() {
            if needsComma { bytes.append(UInt8(ascii: ",")) }
        }

        private mutating func appendString(_ s: String) {
            bytes.append(UInt8(ascii: "\""))
            var s = s
            s.withUTF8 { utf8 in
                // Copies runs of plain bytes at once; only quotes, backslashes and control
                // characters (DETAILS hold JSON, so quotes are common) are escaped one by one.
                var runStart = 0
                for i in 0..<utf8.count {
                    let c = utf8[i]
                    guard c == 0x22 || c == 0x5C || c < 0x20 else { continue }
                    if runStart < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i])) }
                    runStart = i + 1
                    // Byte by byte: an array literal here would be an allocation per quote.
                    bytes.append(0x5C)
                    switch c {
                    case 0x22, 0x5C: bytes.append(c)
                    case 0x0A: bytes.append(UInt8(ascii: "n"))
                    case 0x0D: bytes.append(UInt8(ascii: "r"))
                    case 0x09: bytes.append(UInt8(ascii: "t"))
                    default:
                        func hex(_ n: UInt8) -> UInt8 { n < 10 ? 0x30 + n : 0x61 + n - 10 }
                        bytes.append(UInt8(ascii: "u"))
                        bytes.append(0x30)
                        bytes.append(0x30)
                        bytes.append(hex(c >> 4))
                        bytes.append(hex(c & 0xF))
                    }
                }
                if runStart < utf8.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
            }
            bytes.append(UInt8(ascii: "\""))
        }
    }
}
