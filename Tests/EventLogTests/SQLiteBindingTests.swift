@testable import EngineSQLite
import Foundation
import Testing

/// Texts are bound as their UTF-8 bytes with a length, not as C strings: they come back
/// whole, an empty one as empty (not NULL), one with a NUL byte past the NUL.
@Suite struct SQLiteBindingTests {
    @Test func textsComeBackAsBound() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bind-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let conn = try SQLiteConnection(path: dir.appendingPathComponent("t.sqlite").path)
        defer { conn.close() }
        try conn.execute("CREATE TABLE t(i INTEGER PRIMARY KEY, s TEXT)")
        let texts = ["", "a", "order-commands-and-events", "ключ 🚕", "before\u{0}after", String(repeating: "x", count: 300)]
        try conn.withStatement("INSERT INTO t(i, s) VALUES (?, ?)") { insert in
            for (i, text) in texts.enumerated() {
                insert.bind(1, i)
                insert.bind(2, text)
                try insert.run()
            }
        }
        let back = try conn.withStatement("SELECT s FROM t ORDER BY i") { select in
            var out: [String?] = []
            while try select.step() { out.append(select.optionalText(0)) }
            return out
        }
        #expect(back == texts)
    }
}
