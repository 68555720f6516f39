/// Kafka's default partitioner (murmur2 of the key bytes, positive, modulo the count),
/// so records keyed by order id land where a Java or librdkafka producer
/// (`partitioner=murmur2_random`) would put them.
public enum Partitioner {
    public static func partition(forKey key: String, count: Int) -> Int {
        precondition(count > 0, "a topic has at least one partition")
        let hash = murmur2(Array(key.utf8))
        return Int((hash & 0x7fff_ffff) % UInt32(count))
    }

    /// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), seed 0x9747b28c.
    static func murmur2(_ data: [UInt8]) -> UInt32 {
        let m: UInt32 = 0x5bd1_e995
        let r: UInt32 = 24
        var h: UInt32 = 0x9747_b28c ^ UInt32(truncatingIfNeeded: data.count)
        let whole = data.count / 4
        for i in 0..<whole {
            let b = i * 4
            var k = UInt32(data[b]) | UInt32(data[b + 1]) << 8 | UInt32(data[b + 2]) << 16
                | UInt32(data[b + 3]) << 24
            k &*= m
            k ^= k >> r
            k &*= m
            h &*= m
            h ^= k
        }
        let tail = whole * 4
        switch data.count % 4 {
        case 3:
            h ^= UInt32(data[tail + 2]) << 16
            fallthrough
        case 2:
            h ^= UInt32(data[tail + 1]) << 8
            fallthrough
        case 1:
            h ^= UInt32(data[tail])
            h &*= m
        default:
            break
        }
        h ^= h >> 13
        h &*= m
        h ^= h >> 15
        return h
    }
}
