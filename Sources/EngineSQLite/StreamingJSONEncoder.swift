import Foundation

/// A JSON encoder for `Encodable` values that writes bytes as it goes.
///
/// Why: every command ends in a view and an outcome written to the read model as JSON, and
/// Foundation's `JSONEncoder` (which builds a tree of boxed values first) managed about
/// 6–12 k views a second on one core here — below what the pipeline needs on two. This
/// writes straight into one byte buffer.
///
/// It covers what synthesized and hand-written `Codable` conformances do in sequence:
/// keyed, unkeyed and single-value containers, nested containers, optionals. Anything it
/// does not handle exactly like `JSONEncoder` — `Date`, `Data`, `URL`, `Decimal` (which
/// `JSONEncoder` special-cases), `superEncoder`, non-finite numbers, or writing to a
/// container after a sibling container was opened — throws `Unsupported`, and
/// `encode(_:)` then falls back to `JSONEncoder`, so the output is always what
/// `JSONDecoder` reads back to an equal value.
package enum StreamingJSON {
    package static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        do {
            return try encodeStreaming(value)
        } catch is Unsupported {
            return Array(try JSONEncoder().encode(value))
        }
    }

    /// The streaming path alone (tests use it to prove it does not fall back).
    package static func encodeStreaming<T: Encodable>(_ value: T) throws -> [UInt8] {
        let writer = Writer()
        try writer.encodeValue(value)
        writer.close(downTo: 0)
        if let problem = writer.problem { throw Unsupported(what: problem) }
        return writer.bytes
    }

    package struct Unsupported: Error {
        var what: String
    }
}

/// The shared output and the stack of open containers. A container is identified by its
/// depth; writing at depth d first closes everything deeper, which is exactly the JSON
/// nesting when containers are used one after another (as encoders do).
///
/// `@exclusivity(unchecked)`: the writer is confined to one `encode` call on one thread, and
/// the dynamic exclusivity checks on these class properties otherwise took about 40 % of
/// the encoding time.
private final class Writer {
    @exclusivity(unchecked) var bytes: [UInt8] = []
    /// Closing bracket of each open container, innermost last.
    @exclusivity(unchecked) var open: [UInt8] = []
    /// Whether each open container has an element yet (for commas).
    @exclusivity(unchecked) var hasElement: [Bool] = []
    /// Open containers, by identity, so a closed one cannot be written to again.
    @exclusivity(unchecked) var generation: [Int] = []
    var nextGeneration = 0
    /// Set where the Encoder API gives no way to throw (nested containers, superEncoder);
    /// the result is then discarded for JSONEncoder's.
    var problem: String?

    init() { bytes.reserveCapacity(512) }

    var depth: Int { open.count }

    func close(downTo depth: Int) {
        while open.count > depth {
            bytes.append(open.removeLast())
            hasElement.removeLast()
            generation.removeLast()
        }
    }

    /// Opens a container at `depth` (closing deeper ones); returns its generation.
    func openContainer(at depth: Int, _ opening: UInt8, _ closing: UInt8) -> Int {
        close(downTo: depth)
        bytes.append(opening)
        open.append(closing)
        hasElement.append(false)
        nextGeneration += 1
        generation.append(nextGeneration)
        return nextGeneration
    }

    /// Prepares to write an element into the container (depth, generation): closes deeper
    /// containers, checks it is still open, writes the comma.
    func beginElement(depth: Int, generation gen: Int) throws {
        guard depth <= open.count, depth > 0, generation[depth - 1] == gen else {
            throw StreamingJSON.Unsupported(what: "write to a closed container")
        }
        close(downTo: depth)
        if hasElement[depth - 1] { bytes.append(UInt8(ascii: ",")) } else { hasElement[depth - 1] = true }
    }

    /// Encodes a value in place: its own containers nest at the current depth and are
    /// closed when it returns. A value that writes nothing becomes `{}`, like JSONEncoder.
    func encodeValue<T: Encodable>(_ value: T) throws {
        // Primitives first: their own encode(to:) would ask for a single-value container
        // and come straight back here. Metatype comparisons, not `is`/`as?` casts: those
        // look up conformances at run time, for every value.
        let t = T.self
        if t == String.self { return writeString(value as! String) }
        if t == Int.self { return writeInteger(Int64(value as! Int)) }
        if t == Int64.self { return writeInteger(value as! Int64) }
        if t == Double.self { return try writeDouble(value as! Double) }
        if t == Bool.self { return bytes.append(contentsOf: (value as! Bool) ? Self.trueBytes : Self.falseBytes) }
        if t == Int32.self { return writeInteger(Int64(value as! Int32)) }
        if t == Int16.self { return writeInteger(Int64(value as! Int16)) }
        if t == Int8.self { return writeInteger(Int64(value as! Int8)) }
        if t == UInt.self { return writeUnsigned(UInt64(value as! UInt)) }
        if t == UInt64.self { return writeUnsigned(value as! UInt64) }
        if t == UInt32.self { return writeUnsigned(UInt64(value as! UInt32)) }
        if t == UInt16.self { return writeUnsigned(UInt64(value as! UInt16)) }
        if t == UInt8.self { return writeUnsigned(UInt64(value as! UInt8)) }
        if t == Float.self { return try writeFloat(value as! Float) }
        if t == Date.self || t == Data.self || t == URL.self || t == Decimal.self {
            throw StreamingJSON.Unsupported(what: "\(T.self)")
        }
        let base = depth
        let before = bytes.count
        try value.encode(to: ValueEncoder(writer: self, depth: base))
        close(downTo: base)
        if bytes.count == before { bytes += [UInt8(ascii: "{"), UInt8(ascii: "}")] }
    }

    static let trueBytes = Array("true".utf8)
    static let falseBytes = Array("false".utf8)
    static let nullBytes = Array("null".utf8)

    func writeInteger(_ v: Int64) {
        if v < 0 {
            bytes.append(UInt8(ascii: "-"))
            writeUnsigned(v.magnitude)
        } else {
            writeUnsigned(UInt64(v))
        }
    }

    func writeUnsigned(_ v: UInt64) {
        if v < 10 { return bytes.append(UInt8(ascii: "0") + UInt8(v)) }
        var digits: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                     UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        var rest = v
        withUnsafeMutableBytes(of: &digits) { raw in
            let buffer = raw.bindMemory(to: UInt8.self)
            while rest > 0 {
                buffer[n] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                n += 1
            }
            for i in stride(from: n - 1, through: 0, by: -1) { bytes.append(buffer[i]) }
        }
    }

    func writeFloat(_ v: Float) throws {
        guard v.isFinite else { throw StreamingJSON.Unsupported(what: "non-finite number") }
        // Float's own shortest form ("0.1"), not its widened Double's.
        if v == v.rounded(), abs(v) < 1e7 {
            bytes.append(contentsOf: String(Int64(v)).utf8)
        } else {
            bytes.append(contentsOf: v.description.utf8)
        }
    }

    func writeDouble(_ v: Double) throws {
        guard v.isFinite else { throw StreamingJSON.Unsupported(what: "non-finite number") }
        // Integral values without ".0"; others in Swift's shortest round-trip form, valid
        // JSON for finite numbers. Either way JSONDecoder reads back the same Double.
        if v == v.rounded(), abs(v) < 1e15 {
            bytes.append(contentsOf: String(Int64(v)).utf8)
        } else {
            bytes.append(contentsOf: v.description.utf8)
        }
    }

    private static let hex = Array("0123456789abcdef".utf8)

    func writeString(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        // Most text needs no escaping: scan the contiguous UTF-8 and copy it in one go.
        let copied = s.utf8.withContiguousStorageIfAvailable { utf8 -> Bool in
            for c in utf8 where c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") { return false }
            bytes.append(contentsOf: utf8)
            return true
        }
        if copied == true {
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                bytes += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                          Self.hex[Int(c >> 4)], Self.hex[Int(c & 0xF)]]
            default: bytes.append(c)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

private struct ValueEncoder: Encoder {
    let writer: Writer
    /// The depth the value's container opens at.
    let depth: Int
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        // Asking twice (a class and its superclass) must reuse the open container: any
        // container open at this depth was opened by this value (see encodeValue).
        let gen: Int
        if writer.depth > depth, writer.open[depth] == UInt8(ascii: "}") {
            gen = writer.generation[depth]
        } else {
            if writer.depth > depth { writer.problem = "two kinds of container for one value" }
            gen = writer.openContainer(at: depth, UInt8(ascii: "{"), UInt8(ascii: "}"))
        }
        return KeyedEncodingContainer(KeyedContainer<Key>(writer: writer, depth: depth + 1, generation: gen))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if writer.depth > depth { writer.problem = "second container for one value" }
        let gen = writer.openContainer(at: depth, UInt8(ascii: "["), UInt8(ascii: "]"))
        return UnkeyedContainer(writer: writer, depth: depth + 1, generation: gen)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleValueContainer(writer: writer, depth: depth)
    }
}

private struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let writer: Writer
    let depth: Int
    let generation: Int
    var codingPath: [any CodingKey] { [] }

    private func key(_ key: Key) throws {
        try writer.beginElement(depth: depth, generation: generation)
        writer.writeString(key.stringValue)
        writer.bytes.append(UInt8(ascii: ":"))
    }

    mutating func encodeNil(forKey key: Key) throws {
        try self.key(key)
        writer.bytes.append(contentsOf: Writer.nullBytes)
    }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try self.key(key)
        try writer.encodeValue(value)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        // The protocol gives no way to throw here: note the misuse instead.
        do { try self.key(key) } catch { writer.problem = "nested container in a closed container" }
        let gen = writer.openContainer(at: depth, UInt8(ascii: "{"), UInt8(ascii: "}"))
        return KeyedEncodingContainer(KeyedContainer<NestedKey>(writer: writer, depth: depth + 1, generation: gen))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        do { try self.key(key) } catch { writer.problem = "nested container in a closed container" }
        let gen = writer.openContainer(at: depth, UInt8(ascii: "["), UInt8(ascii: "]"))
        return UnkeyedContainer(writer: writer, depth: depth + 1, generation: gen)
    }

    mutating func superEncoder() -> any Encoder {
        writer.problem = "superEncoder"
        return UnsupportedEncoder()
    }
    mutating func superEncoder(forKey key: Key) -> any Encoder {
        writer.problem = "superEncoder"
        return UnsupportedEncoder()
    }
}

private struct UnkeyedContainer: UnkeyedEncodingContainer {
    let writer: Writer
    let depth: Int
    let generation: Int
    var count = 0
    var codingPath: [any CodingKey] { [] }

    init(writer: Writer, depth: Int, generation: Int) {
        self.writer = writer
        self.depth = depth
        self.generation = generation
    }

    mutating func encodeNil() throws {
        try writer.beginElement(depth: depth, generation: generation)
        writer.bytes.append(contentsOf: Writer.nullBytes)
        count += 1
    }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try writer.beginElement(depth: depth, generation: generation)
        try writer.encodeValue(value)
        count += 1
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        do { try writer.beginElement(depth: depth, generation: generation) } catch {
            writer.problem = "nested container in a closed container"
        }
        count += 1
        let gen = writer.openContainer(at: depth, UInt8(ascii: "{"), UInt8(ascii: "}"))
        return KeyedEncodingContainer(KeyedContainer<NestedKey>(writer: writer, depth: depth + 1, generation: gen))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        do { try writer.beginElement(depth: depth, generation: generation) } catch {
            writer.problem = "nested container in a closed container"
        }
        count += 1
        let gen = writer.openContainer(at: depth, UInt8(ascii: "["), UInt8(ascii: "]"))
        return UnkeyedContainer(writer: writer, depth: depth + 1, generation: gen)
    }

    mutating func superEncoder() -> any Encoder {
        writer.problem = "superEncoder"
        return UnsupportedEncoder()
    }
}

private struct SingleValueContainer: SingleValueEncodingContainer {
    let writer: Writer
    let depth: Int
    var codingPath: [any CodingKey] { [] }

    private func check() throws {
        // One value, written where the value stands; a second write would be misuse.
        guard writer.depth == depth else { throw StreamingJSON.Unsupported(what: "single value after a container") }
    }

    mutating func encodeNil() throws {
        try check()
        writer.bytes.append(contentsOf: Writer.nullBytes)
    }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try check()
        try writer.encodeValue(value)
    }
}

/// `superEncoder` is rare and JSONEncoder's semantics for it are intricate: fall back.
private struct UnsupportedEncoder: Encoder {
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(ThrowingKeyed<Key>())
    }
    func unkeyedContainer() -> any UnkeyedEncodingContainer { ThrowingUnkeyed() }
    func singleValueContainer() -> any SingleValueEncodingContainer { ThrowingSingle() }
}

private let unsupported = StreamingJSON.Unsupported(what: "superEncoder")

private struct ThrowingKeyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
    var codingPath: [any CodingKey] { [] }
    mutating func encodeNil(forKey key: Key) throws { throw unsupported }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { throw unsupported }
    mutating func nestedContainer<N: CodingKey>(keyedBy keyType: N.Type, forKey key: Key) -> KeyedEncodingContainer<N> {
        KeyedEncodingContainer(ThrowingKeyed<N>())
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer { ThrowingUnkeyed() }
    mutating func superEncoder() -> any Encoder { UnsupportedEncoder() }
    mutating func superEncoder(forKey key: Key) -> any Encoder { UnsupportedEncoder() }
}

private struct ThrowingUnkeyed: UnkeyedEncodingContainer {
    var codingPath: [any CodingKey] { [] }
    var count: Int { 0 }
    mutating func encodeNil() throws { throw unsupported }
    mutating func encode<T: Encodable>(_ value: T) throws { throw unsupported }
    mutating func nestedContainer<N: CodingKey>(keyedBy keyType: N.Type) -> KeyedEncodingContainer<N> {
        KeyedEncodingContainer(ThrowingKeyed<N>())
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer { ThrowingUnkeyed() }
    mutating func superEncoder() -> any Encoder { UnsupportedEncoder() }
}

private struct ThrowingSingle: SingleValueEncodingContainer {
    var codingPath: [any CodingKey] { [] }
    mutating func encodeNil() throws { throw unsupported }
    mutating func encode<T: Encodable>(_ value: T) throws { throw unsupported }
}
