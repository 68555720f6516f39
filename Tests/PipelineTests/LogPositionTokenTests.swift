import EventLog
import Testing

/// `LogPosition.token` is stored (read-model checkpoints, event positions) and handed to
/// clients: the fast builder must write exactly what the plain formula wrote.
@Suite struct LogPositionTokenTests {
    @Test(arguments: [
        [Int64](), [0], [0, 0, 0], [1, 22, 333, 4_444, 55_555], [9, 10, 99, 100, 101],
        [Int64.max, 0, 1_000_000_007], [-1, 5], (0..<10).map { Int64($0) * 123_457 },
    ])
    func tokenMatchesTheFormat(offsets: [Int64]) {
        let position = LogPosition(offsets: offsets)
        #expect(position.token == "v1:" + offsets.map(String.init).joined(separator: "."))
        if !offsets.isEmpty, offsets.allSatisfy({ $0 >= 0 }) {
            #expect(LogPosition(token: position.token, partitions: offsets.count) == position)
        }
    }
}
