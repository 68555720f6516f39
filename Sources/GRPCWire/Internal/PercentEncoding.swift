/// `grpc-message` encoding (PROTOCOL-HTTP2.md): the UTF-8 bytes of the message, with every
/// byte outside 0x20...0x7E, and `%` itself, written as `%XX` (upper-case hex).
enum PercentEncoding {
    private static let hex = Array("0123456789ABCDEF".utf8)

    static func encode(_ message: String) -> String {
        // Fast path: most messages need no escaping, so avoid building a new string.
        if !message.utf8.contains(where: needsEscape) { return message }
        var out = [UInt8]()
        out.reserveCapacity(message.utf8.count + 16)
        for byte in message.utf8 {
            if needsEscape(byte) {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes leniently, as the spec asks of receivers: a `%` not followed by two hex digits
    /// is kept literally, and invalid UTF-8 becomes U+FFFD.
    static func decode(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
                let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2])
            {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte > 0x7E || byte == UInt8(ascii: "%")
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
