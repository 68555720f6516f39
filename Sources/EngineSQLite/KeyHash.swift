/// SipHash-2-4 of a record key under a per-database secret: the `latest` table's key.
///
/// `latest` keeps one small row per (topic, hash of key) instead of indexing every record
/// by its key text: in measurements here that more than doubled append throughput on
/// key-indexed topics, because random inserts into a big index dirty about one page per
/// record and every dirty page is written and fsync'd at commit.
///
/// Why SipHash with a secret: two keys with the same hash share a row, and `latestRecord`
/// then has to fall back to a scan (correct, but slow). With a 64-bit keyed hash that is
/// astronomically rare by chance, and a client choosing order ids cannot aim for it
/// without the secret. Not Swift's `Hasher`: its seed changes with every process, and
/// these hashes are stored.
package struct KeyHash: Sendable {
    private let k0: UInt64
    private let k1: UInt64

    package init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    /// A fresh random secret, for a new database.
    package static func random() -> KeyHash {
        var rng = SystemRandomNumberGenerator()
        return KeyHash(k0: rng.next(), k1: rng.next())
    }

    package var secret: (UInt64, UInt64) { (k0, k1) }

    /// The hash as SQLite stores integers (the same 64 bits, signed).
    package func callAsFunction(_ key: String) -> Int64 {
        var key = key
        return key.withUTF8 { Int64(bitPattern: siphash24($0)) }
    }

    private func siphash24(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var v0: UInt64 = 0x736f_6d65_7073_6575 ^ k0
        var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ k1
        var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ k0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ k1

        @inline(__always) func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }
        @inline(__always) func round() {
            v0 &+= v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
            v2 &+= v3; v3 = rotl(v3, 16); v3 ^= v2
            v0 &+= v3; v3 = rotl(v3, 21); v3 ^= v0
            v2 &+= v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
        }

        let count = bytes.count
        let whole = count / 8
        for i in 0..<whole {
            var m: UInt64 = 0
            for j in 0..<8 { m |= UInt64(bytes[i * 8 + j]) << (8 * UInt64(j)) }
            v3 ^= m
            round()
            round()
            v0 ^= m
        }
        var last = UInt64(count & 0xff) << 56
        for j in 0..<(count & 7) { last |= UInt64(bytes[whole * 8 + j]) << (8 * UInt64(j)) }
        v3 ^= last
        round()
        round()
        v0 ^= last
        v2 ^= 0xff
        round()
        round()
        round()
        round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}
