/// The `grpc-timeout` request header: 1 to 8 ASCII digits followed by a unit
/// (`H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds).
enum GRPCTimeout {
    /// Parses a header value; nil when it is malformed.
    static func parse<C: Collection>(_ value: C) -> Duration? where C.Element == UInt8 {
        guard value.count >= 2, value.count <= 9 else { return nil }
        var amount: Int64 = 0
        var index = value.startIndex
        for _ in 0..<(value.count - 1) {
            let c = value[index]
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            amount = amount * 10 + Int64(c - UInt8(ascii: "0"))
            index = value.index(after: index)
        }
        switch value[index] {
        case UInt8(ascii: "H"): return .seconds(amount * 3600)
        case UInt8(ascii: "M"): return .seconds(amount * 60)
        case UInt8(ascii: "S"): return .seconds(amount)
        case UInt8(ascii: "m"): return .milliseconds(amount)
        case UInt8(ascii: "u"): return .microseconds(amount)
        case UInt8(ascii: "n"): return .nanoseconds(amount)
        default: return nil
        }
    }

    static func parse(_ value: String) -> Duration? { parse(Array(value.utf8)) }
}
