/// Base64 for `-bin` metadata. gRPC sends these values unpadded and must accept both padded
/// and unpadded input (PROTOCOL-HTTP2.md), which Foundation's decoder does not, so this is a
/// small standalone codec over byte arrays.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        // Also accept the URL-safe alphabet; some clients use it for -bin values.
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    /// Encodes without padding.
    static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var iterator = bytes.makeIterator()
        while let b0 = iterator.next() {
            let b1 = iterator.next()
            let b2 = iterator.next()
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | (b1 ?? 0) >> 4)])
            if let b1 {
                out.append(alphabet[Int((b1 & 0x0F) << 2 | (b2 ?? 0) >> 6)])
            }
            if let b2 {
                out.append(alphabet[Int(b2 & 0x3F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes padded or unpadded base64; returns nil on any invalid character or length.
    static func decode<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(text.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        var padding = 0
        for c in text {
            if c == UInt8(ascii: "=") {
                padding += 1
                continue
            }
            // No data may follow padding.
            if padding > 0 { return nil }
            let v = reverse[Int(c)]
            if v == 0xFF { return nil }
            accumulator = accumulator << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        // 6 leftover bits means a single dangling character: not valid base64.
        if bits >= 6 || padding > 2 { return nil }
        return out
    }

    /// Decodes a received `-bin` header value. An intermediary may have joined several
    /// values with ","; each part is a separate value (PROTOCOL-HTTP2.md: split, then decode).
    static func decodeHeaderValues<C: Collection>(_ text: C) -> [[UInt8]]? where C.Element == UInt8 {
        if !text.contains(UInt8(ascii: ",")) { return decode(text).map { [$0] } }
        var result = [[UInt8]]()
        for part in text.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true) {
            let trimmed = part.drop(while: { $0 == UInt8(ascii: " ") })
            guard let bytes = decode(trimmed) else { return nil }
            result.append(bytes)
        }
        return result
    }
}
