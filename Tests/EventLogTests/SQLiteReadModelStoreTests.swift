import EngineSQLite
import EventLog
import Foundation
import OrderDomain
import Testing

@Suite("SQLiteReadModelStore")
struct SQLiteReadModelStoreTests {
    static let t0 = Timestamp(microseconds: 1_618_822_699_818_153)

    static func orderId(_ i: Int) -> String {
        String(format: "00000000-0000-4000-8000-%012d", i)
    }

    static func placed(_ i: Int) -> (OrderView, CommandOutcome) {
        let id = orderId(i)
        let event = OrderEvent(
            orderId: id, version: 1, createdDate: t0, commandId: "place-\(i)",
            kind: .placed(
                riderId: orderId(1000 + i), price: "\(i).50",
                route: [Waypoint(address: "A", lat: 1, lon: 2), Waypoint(address: "B", lat: 3, lon: 4)]))
        let order = OrderDecider.evolve(nil, event)
        let position = LogPosition(offsets: [Int64(i), 0])
        let view = OrderView(orderId: id, order: order, events: [ProjectedEvent(event: event, position: position)])
        let outcome = CommandOutcome(commandId: "place-\(i)", orderId: id, event: event, order: order, position: position)
        return (view, outcome)
    }

    static func accepted(_ view: OrderView, commandId: String) -> (OrderView, CommandOutcome) {
        let event = OrderEvent(
            orderId: view.orderId, version: 2, createdDate: t0, commandId: commandId,
            kind: .accepted(driverId: orderId(2000)))
        let order = OrderDecider.evolve(view.order, event)
        let position = LogPosition(offsets: [99, 1])
        var next = view
        next.order = order
        next.events.append(ProjectedEvent(event: event, position: position))
        return (next, CommandOutcome(commandId: commandId, orderId: view.orderId, event: event, order: order, position: position))
    }

    func openStore(_ dir: String) async throws -> SQLiteReadModelStore {
        try await SQLiteReadModelStore.open(path: dir + "/readmodel.sqlite", logger: testLogger)
    }

    @Test("apply, view, first-wins outcomes, listing by status, checkpoint — across a reopen")
    func roundTrip() async throws {
        try await withTemporaryDirectory { dir in
            var views: [OrderView] = []
            do {
                let store = try await openStore(dir)
                #expect(try await store.checkpoint() == nil)
                #expect(try await store.view(orderId: Self.orderId(1)) == nil)
                #expect(try await store.listOrders(status: nil, after: 0, limit: 10) == OrderPage(orders: [], cursors: [], nextCursor: nil))

                // An error on an unknown order: a view without an order, never listed.
                let ghost = OrderView(orderId: Self.orderId(999), order: nil, events: [])
                var placedOutcomes: [CommandOutcome] = []
                for i in 1...7 {
                    let (view, outcome) = Self.placed(i)
                    views.append(view)
                    placedOutcomes.append(outcome)
                }
                try await store.apply(
                    ReadModelUpdate(
                        views: [ghost] + views, outcomes: placedOutcomes, checkpoint: LogPosition(offsets: [7, 0])))

                // Accept orders 2, 4 and 6; a retried command id keeps its first outcome.
                var acceptedOutcomes: [CommandOutcome] = []
                for i in [2, 4, 6] {
                    let (view, outcome) = Self.accepted(views[i - 1], commandId: "accept-\(i)")
                    views[i - 1] = view
                    acceptedOutcomes.append(outcome)
                }
                var retried = Self.accepted(views[0], commandId: "place-1").1
                retried.orderId = "overwritten?"
                try await store.apply(
                    ReadModelUpdate(
                        views: [views[1], views[3], views[5]], outcomes: acceptedOutcomes + [retried],
                        checkpoint: LogPosition(offsets: [9, 3])))
                #expect(try await store.outcome(commandId: "place-1") == placedOutcomes[0])
                await store.close()
            }

            let store = try await openStore(dir)
            #expect(try await store.checkpoint() == LogPosition(offsets: [9, 3]))
            #expect(try await store.view(orderId: Self.orderId(4)) == views[3])
            #expect(try await store.view(orderId: Self.orderId(4))?.order?.status == .accepted)
            #expect(try await store.view(orderId: Self.orderId(999)) == OrderView(orderId: Self.orderId(999), order: nil, events: []))
            #expect(try await store.outcome(commandId: "place-1")?.orderId == Self.orderId(1))
            #expect(try await store.outcome(commandId: "accept-6")?.order?.version == 2)
            // Order 2 was accepted since: its placement still reports the order as placed.
            #expect(try await store.outcome(commandId: "place-2") == Self.placed(2).1)
            #expect(try await store.outcome(commandId: "nope") == nil)
            let some = try await store.views(orderIds: [Self.orderId(1), Self.orderId(4), Self.orderId(999), "nope"])
            #expect(some == [Self.orderId(1): views[0], Self.orderId(4): views[3], Self.orderId(999): OrderView(orderId: Self.orderId(999), order: nil, events: [])])

            // All orders in placement order (accepting did not move them), 3 per page.
            var ids: [String] = []
            var cursor: Int64 = 0
            var pages = 0
            while true {
                let page = try await store.listOrders(status: nil, after: cursor, limit: 3)
                ids += page.orders.map(\.id)
                pages += 1
                guard let next = page.nextCursor else { break }
                cursor = next
            }
            #expect(ids == (1...7).map(Self.orderId))
            #expect(pages == 3)

            let placedPage = try await store.listOrders(status: .placed, after: 0, limit: 2)
            #expect(placedPage.orders.map(\.id) == [1, 3].map(Self.orderId))
            let placedRest = try await store.listOrders(status: .placed, after: try #require(placedPage.nextCursor), limit: 2)
            #expect(placedRest.orders.map(\.id) == [5, 7].map(Self.orderId))
            #expect(placedRest.nextCursor == nil)
            let acceptedAll = try await store.listOrders(status: .accepted, after: 0, limit: 3)
            #expect(acceptedAll.orders.map(\.id) == [2, 4, 6].map(Self.orderId))
            #expect(acceptedAll.nextCursor == nil)
            #expect(try await store.listOrders(status: .completed, after: 0, limit: 3).orders.isEmpty)

            // New orders after the reopen continue the placement order.
            let (eight, outcome8) = Self.placed(8)
            try await store.apply(ReadModelUpdate(views: [eight], outcomes: [outcome8], checkpoint: LogPosition(offsets: [10, 3])))
            let all = try await store.listOrders(status: nil, after: 0, limit: 100)
            #expect(all.orders.map(\.id) == (1...8).map(Self.orderId))
            #expect(all.nextCursor == nil)
            await store.close()
        }
    }

    @Test("concurrent applies are group-committed; placement order stays dense and unique")
    func concurrentApplies() async throws {
        try await withTemporaryDirectory { dir in
            let store = try await openStore(dir)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<20 {
                    group.addTask {
                        for i in 0..<10 {
                            let (view, outcome) = Self.placed(t * 10 + i + 1)
                            // Every task also retries task 0's first command: first wins.
                            var retry = Self.placed(1).1
                            retry.orderId = "retried by \(t)"
                            try await store.apply(
                                ReadModelUpdate(views: [view], outcomes: [outcome, retry], checkpoint: LogPosition(offsets: [Int64(t), Int64(i)])))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let all = try await store.listOrders(status: nil, after: 0, limit: 1000)
            #expect(Set(all.orders.map(\.id)) == Set((1...200).map(Self.orderId)))
            #expect(all.orders.count == 200)
            let page = try await store.listOrders(status: .placed, after: 0, limit: 199)
            #expect(page.nextCursor == 199)
            #expect(try await store.outcome(commandId: "place-1") != nil)
            await store.close()
            await #expect(throws: LogError.self) { try await store.checkpoint() }
            await #expect(throws: LogError.self) {
                try await store.apply(ReadModelUpdate(views: [], outcomes: [], checkpoint: LogPosition(offsets: [])))
            }
        }
    }

    @Test("a format-1 read model (outcomes kept whole) is migrated without copying them, and keeps every outcome")
    func migratesFormat1() async throws {
        try await withTemporaryDirectory { dir in
            let (view, outcome) = Self.placed(1)
            let whole = String(decoding: ReadModelCodec.encode(outcome, history: view.events), as: UTF8.self)
            let events = String(decoding: ReadModelCodec.encode(view), as: UTF8.self)
            try execute(
                path: dir + "/readmodel.sqlite",
                """
                CREATE TABLE orders(order_id TEXT PRIMARY KEY, seq INTEGER UNIQUE, status TEXT, events_json TEXT NOT NULL);
                CREATE INDEX orders_status ON orders(status, seq);
                CREATE TABLE outcomes(command_id TEXT PRIMARY KEY, outcome_json TEXT NOT NULL);
                CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                INSERT INTO orders VALUES ('\(view.orderId)', 1, 'PLACED', '\(events)');
                INSERT INTO outcomes VALUES ('place-1', '\(whole)');
                PRAGMA user_version = 1;
                """)
            let store = try await openStore(dir)
            #expect(try await store.outcome(commandId: "place-1") == outcome)
            // Also once the filter has the old ids.
            while !store.outcomeFilterIsLoaded { try await Task.sleep(for: .milliseconds(1)) }
            #expect(try await store.outcome(commandId: "place-1") == outcome)
            let (accepted, acceptOutcome) = Self.accepted(view, commandId: "accept-1")
            try await store.apply(ReadModelUpdate(views: [accepted], outcomes: [acceptOutcome], checkpoint: LogPosition(offsets: [99, 1])))
            #expect(try await store.outcome(commandId: "accept-1") == acceptOutcome)
            #expect(try await store.outcome(commandId: "place-1") == outcome)
            let (two, twoOutcome) = Self.placed(2)
            try await store.apply(ReadModelUpdate(views: [two], outcomes: [twoOutcome], checkpoint: LogPosition(offsets: [99, 2])))
            #expect(try await store.listOrders(status: nil, after: 0, limit: 10).orders.map(\.id) == [1, 2].map(Self.orderId))
            await store.close()

            let reopened = try await openStore(dir)
            #expect(try await reopened.outcome(commandId: "place-1") == outcome)
            #expect(try await reopened.outcome(commandId: "place-2") == twoOutcome)
            await reopened.close()
        }
    }

    @Test("EmbeddedEngine opens both stores under a new directory and reopens them")
    func embedded() async throws {
        try await withTemporaryDirectory { dir in
            let data = dir + "/nested/data"
            do {
                let engine = try await EmbeddedEngine.open(directory: data, logger: testLogger)
                try await engine.log.createTopic("t", partitions: 2)
                try await engine.log.append([OutgoingRecord(topic: "t", key: "k", value: bytes("v"))], commit: nil)
                let (view, outcome) = Self.placed(1)
                try await engine.readModel.apply(
                    ReadModelUpdate(views: [view], outcomes: [outcome], checkpoint: LogPosition(offsets: [1, 0])))
                await engine.close()
            }
            #expect(FileManager.default.fileExists(atPath: data + "/" + EmbeddedEngine.logFileName))
            #expect(FileManager.default.fileExists(atPath: data + "/" + EmbeddedEngine.readModelFileName))
            let engine = try await EmbeddedEngine.open(directory: data, logger: testLogger)
            #expect(try await engine.log.endOffsets("t").reduce(0, +) == 1)
            #expect(try await engine.readModel.checkpoint() == LogPosition(offsets: [1, 0]))
            await engine.close()
        }
    }
}
