import EngineSQLite
import EventLog
import Foundation
import Testing

@Suite("OutcomeFilter")
struct OutcomeFilterTests {
    @Test("never a false no, across stages; about 0.1 % false yes; every id a maybe until loaded")
    func bloom() {
        let filter = OutcomeFilter()
        let ids = (0..<80_000).map { "cmd-\($0)" }
        #expect(filter.mayContain("anything"))
        filter.insert(ids)
        filter.markReady()
        #expect(ids.allSatisfy(filter.mayContain))
        let others = (0..<50_000).map { "other-\($0)" }
        let falseYes = others.filter(filter.mayContain).count
        #expect(falseYes < 500, "false positives: \(falseYes) of \(others.count)")
    }

    @Test("the store skips the database for ids it never stored, and still finds those stored before a reopen")
    func storeUsesTheFilter() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/readmodel.sqlite"
            do {
                let store = try await SQLiteReadModelStore.open(path: path, logger: testLogger)
                let (view, outcome) = SQLiteReadModelStoreTests.placed(1)
                try await store.apply(ReadModelUpdate(views: [view], outcomes: [outcome], checkpoint: LogPosition(offsets: [1, 0])))
                await store.close()
            }
            let store = try await SQLiteReadModelStore.open(path: path, logger: testLogger)
            while !store.outcomeFilterIsLoaded { try await Task.sleep(for: .milliseconds(1)) }
            for i in 0..<1_000 { #expect(try await store.outcome(commandId: "never-\(i)") == nil) }
            #expect(store.outcomeReads < 10)
            #expect(try await store.outcome(commandId: "place-1") == SQLiteReadModelStoreTests.placed(1).1)
            let (view, outcome) = SQLiteReadModelStoreTests.placed(2)
            try await store.apply(ReadModelUpdate(views: [view], outcomes: [outcome], checkpoint: LogPosition(offsets: [2, 0])))
            #expect(try await store.outcome(commandId: "place-2") == outcome)
            await store.close()
        }
    }
}
