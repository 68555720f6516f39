import EngineSQLite
@testable import EventLog
import Foundation
import OrderDomain
import Testing

/// The processors hand each other decoded values as record memos instead of parsing the
/// bytes back (`OutgoingRecord.memo`): a memo must say exactly what its record's bytes say.
@Suite struct RecordMemoTests {
    @Test(arguments: [Harness.Kind.inMemory, .embedded]) func memosRestateTheirRecords(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let placed = try await h.place()
            let id = placed.orderId
            _ = try await h.update(id, .accept(driverId: OrderIdentity.random()), version: 1)
            _ = try await h.update(id, .complete, version: 1)  // rejected: stale version
            _ = try await h.update(id, .complete, version: 2)
            _ = try await h.place()

            let entries = try await h.records(h.pipeline.topics.commandsAndEvents)
            #expect(entries.count == 10)
            for record in entries {
                let memo = try #require(record.memo as? LogFormat.EntryMemo, "no memo on \(record.offset)")
                let entry = try LogFormat.decodeEntry(record.value)
                #expect(memo.entry == entry)
                #expect(memo.decoded == (try LogFormat.decode(entry, orderId: record.key)))
                // The aggregator's lists take these bytes as they are.
                #expect(memo.quotedDetails == LogFormat.quoted(entry.details))
            }

            let rows = try await h.records(h.pipeline.topics.aggregates)
            #expect(rows.count == 10)
            for record in rows {
                let memo = try #require(record.memo as? AggregateRow, "no memo on \(record.offset)")
                var bare = record
                bare.memo = nil
                let parsed = AggregateRow.analyze(bare)
                #expect(memo.history.events == parsed.history.events)
                #expect(memo.history.commands == parsed.history.commands)
                #expect(memo.history.state == parsed.history.state)
                #expect(memo.nextBefore == parsed.nextBefore)
                #expect("\(memo.change)" == "\(parsed.change)")
            }
        }
    }
}
