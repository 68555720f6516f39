import EventLog
import OrderDomain
import Testing

/// `OrderQueries.cachedOrder`, GetOrder's synchronous path: answers from the projector's
/// cache, never below `minVersion`, and never when an aggregates table must be asked too.
@Suite struct CachedOrderTests {
    /// A table with no rows: enough to make `order(id:…)` consult it.
    struct EmptyTable: AggregateTable {
        func aggregate(orderId: String) async throws -> LogFormat.Aggregate? { nil }
    }

    @Test func answersFromTheCacheUnlessATableIsConfigured() async throws {
        try await Harness.run(.inMemory) { h in
            let id = try await h.place().orderId
            try await waitUntil { h.pipeline.queries.cachedOrder(id: id) != nil }
            #expect(h.pipeline.queries.cachedOrder(id: id)?.version == 1)
            #expect(h.pipeline.queries.cachedOrder(id: id, minVersion: 2) == nil)
            #expect(h.pipeline.queries.cachedOrder(id: OrderIdentity.random()) == nil)
            let withTable = OrderQueries(store: h.store, projector: h.pipeline.projector, table: EmptyTable())
            #expect(withTable.cachedOrder(id: id) == nil)
        }
    }
}
