/// gRPC metadata: ordered `(name, value)` pairs, as sent in HTTP/2 headers and trailers.
///
/// Names are stored lower-case (HTTP/2 requires it). Names ending in `-bin` carry binary
/// values, which travel base64-encoded on the wire (unpadded when sent, padded or unpadded
/// accepted when received); all other values are strings. The same name may appear more
/// than once; order is kept.
public struct Metadata: Sendable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// A metadata value: text for ordinary keys, bytes for `-bin` keys.
    public enum Value: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
        case string(String)
        case binary([UInt8])

        public init(stringLiteral value: String) { self = .string(value) }

        public var description: String {
            switch self {
            case .string(let s): return s
            case .binary(let b): return "<\(b.count) bytes>"
            }
        }
    }

    public typealias Element = (name: String, value: Value)

    private var storage: [Element]

    public init() { storage = [] }

    public init(dictionaryLiteral elements: (String, Value)...) {
        storage = []
        storage.reserveCapacity(elements.count)
        for (name, value) in elements { append(name, value) }
    }

    public var count: Int { storage.count }
    public var isEmpty: Bool { storage.isEmpty }

    /// Adds a text value. A string added under a `-bin` name is stored as its UTF-8 bytes.
    public mutating func add(_ name: String, _ value: String) {
        append(name, .string(value))
    }

    /// Adds a binary value; `name` should end in `-bin`.
    public mutating func add(_ name: String, binary: [UInt8]) {
        append(name, .binary(binary))
    }

    /// Adds a value of either kind.
    public mutating func add(_ name: String, _ value: Value) {
        append(name, value)
    }

    /// Removes every value stored under `name`.
    public mutating func removeAll(_ name: String) {
        let name = name.lowercased()
        storage.removeAll { $0.name == name }
    }

    /// The first value stored under `name`, as text (binary values are decoded as UTF-8).
    public subscript(first name: String) -> String? {
        let name = Self.lowercase(name)
        for element in storage where element.name == name {
            switch element.value {
            case .string(let s): return s
            case .binary(let b): return String(decoding: b, as: UTF8.self)
            }
        }
        return nil
    }

    /// Every value stored under `name`, in order.
    public func values(_ name: String) -> [Value] {
        let name = Self.lowercase(name)
        return storage.compactMap { $0.name == name ? $0.value : nil }
    }

    public func makeIterator() -> IndexingIterator<[Element]> {
        storage.makeIterator()
    }

    public var description: String {
        "[" + storage.map { "\($0.name): \($0.value)" }.joined(separator: ", ") + "]"
    }

    /// The element at `index` (received-header bookkeeping).
    func element(at index: Int) -> Element { storage[index] }

    /// The first `count` elements.
    func prefix(_ count: Int) -> Metadata {
        var copy = Metadata()
        copy.storage = Array(storage.prefix(count))
        return copy
    }

    /// Appends without any checks; for names that are already lower-case (received headers).
    mutating func appendLowercased(_ name: String, _ value: Value) {
        storage.append((name, value))
    }

    private mutating func append(_ name: String, _ value: Value) {
        let name = Self.lowercase(name)
        if name.hasSuffix("-bin"), case .string(let s) = value {
            storage.append((name, .binary(Array(s.utf8))))
        } else {
            storage.append((name, value))
        }
    }

    /// Lower-cases only when needed, so that the common all-lower-case name is not copied.
    private static func lowercase(_ name: String) -> String {
        name.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") })
            ? name.lowercased() : name
    }
}
