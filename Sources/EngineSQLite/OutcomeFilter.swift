import Synchronization

/// Which command ids the read model may hold an outcome for: a Bloom filter in memory, so
/// the gateway's check before every append ("was this command answered already?") costs
/// a read of the database only for retries and the rare false positive, not for every
/// new command. That read was one reader hop and a random index descent per command, 5 %
/// of the embedded pipeline's CPU.
///
/// Never a false "no": ids are added before the write that stores them begins, and the
/// ids already stored are loaded at open (in the background: until then every id is a
/// "maybe"). Stages double in size as ids arrive, each at about 0.1 % false positives.
/// Memory: 14 bits per id (1.75 MB per million commands).
package final class OutcomeFilter: Sendable {
    private struct Stage {
        var words: [UInt64]
        let capacity: Int
        var count = 0
        var bitCount: UInt64 { UInt64(words.count) * 64 }

        init(capacity: Int) {
            self.capacity = capacity
            words = Array(repeating: 0, count: (capacity * OutcomeFilter.bitsPerId + 63) / 64)
        }

        func contains(_ h1: UInt64, _ h2: UInt64) -> Bool {
            for i in 0..<UInt64(OutcomeFilter.hashes) {
                let bit = (h1 &+ i &* h2) % bitCount
                if words[Int(bit / 64)] & (1 << (bit % 64)) == 0 { return false }
            }
            return true
        }

        mutating func insert(_ h1: UInt64, _ h2: UInt64) {
            for i in 0..<UInt64(OutcomeFilter.hashes) {
                let bit = (h1 &+ i &* h2) % bitCount
                words[Int(bit / 64)] |= 1 << (bit % 64)
            }
            count += 1
        }
    }

    private struct State {
        var stages = [Stage(capacity: OutcomeFilter.firstCapacity)]
        var ready = false
    }

    static let bitsPerId = 14
    static let hashes = 10
    static let firstCapacity = 1 << 16

    /// Keyed per process: nobody can pick ids that collide on purpose.
    private let hash = KeyHash.random()
    private let state = Mutex(State())

    package init() {}

    /// The two hashes a position sequence is made of (Kirsch–Mitzenmacher).
    private func hashes(_ id: String) -> (UInt64, UInt64) {
        let h = UInt64(bitPattern: hash(id))
        return (h & 0xffff_ffff, (h >> 32) | 1)
    }

    package func insert(_ ids: some Sequence<String>) {
        let hashed = ids.map(hashes)
        state.withLock { s in
            var last = s.stages.count - 1
            for (h1, h2) in hashed {
                if s.stages[last].count >= s.stages[last].capacity {
                    s.stages.append(Stage(capacity: s.stages[last].capacity * 2))
                    last += 1
                }
                s.stages[last].insert(h1, h2)
            }
        }
    }

    /// False only when `id` certainly has no outcome (and the stored ids are loaded).
    package func mayContain(_ id: String) -> Bool {
        let (h1, h2) = hashes(id)
        return state.withLock { s in
            !s.ready || s.stages.contains { $0.contains(h1, h2) }
        }
    }

    /// Every id stored before the filter existed has been inserted.
    package func markReady() {
        state.withLock { $0.ready = true }
    }

    package var isReady: Bool { state.withLock { $0.ready } }
}
