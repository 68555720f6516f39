/// A header block to send (response headers or trailers), kept free of C types so that only
/// `NGHTTP2Session.swift` deals with `nghttp2_nv`.
///
/// Literal names and values (`StaticString`) are referenced, not copied: they live for the
/// whole process, so nghttp2 may keep pointing at them until the frame is written. Dynamic
/// values are appended to one byte buffer (one allocation however many fields there are) and
/// nghttp2 copies them when the block is submitted.
struct HTTP2Headers {
    enum Part {
        case literal(StaticString)
        /// A range of `storage`.
        case stored(offset: Int, count: Int)
    }

    struct Field {
        var name: Part
        var value: Part
    }

    private(set) var fields: [Field] = []
    private(set) var storage: [UInt8] = []

    init(capacity: Int = 4) {
        fields.reserveCapacity(capacity)
    }

    var count: Int { fields.count }

    mutating func add(_ name: StaticString, literal value: StaticString) {
        assert(name.hasPointerRepresentation && value.hasPointerRepresentation)
        fields.append(Field(name: .literal(name), value: .literal(value)))
    }

    mutating func add(_ name: StaticString, _ value: String) {
        assert(name.hasPointerRepresentation)
        fields.append(Field(name: .literal(name), value: store(value.utf8)))
    }

    mutating func add(_ name: String, _ value: String) {
        let n = store(name.utf8)
        fields.append(Field(name: n, value: store(value.utf8)))
    }

    mutating func add<Value: Collection>(_ name: String, bytes value: Value) where Value.Element == UInt8 {
        let n = store(name.utf8)
        fields.append(Field(name: n, value: store(value)))
    }

    private mutating func store<C: Collection>(_ bytes: C) -> Part where C.Element == UInt8 {
        let offset = storage.count
        storage.append(contentsOf: bytes)
        return .stored(offset: offset, count: storage.count - offset)
    }

    /// The fields as strings, for logging and tests.
    var pairs: [(String, String)] {
        fields.map { (string($0.name), string($0.value)) }
    }

    private func string(_ part: Part) -> String {
        switch part {
        case .literal(let s): return s.description
        case .stored(let offset, let count):
            return String(decoding: storage[offset..<(offset + count)], as: UTF8.self)
        }
    }
}
