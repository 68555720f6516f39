import EngineSQLite
import EventLog
import Foundation
import OrderDomain
import Synchronization
import Testing

@Suite struct PipelineTests {
    @Test(arguments: Harness.Kind.allCases) func placeAcceptCompleteThenCancelRefused(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let placed = try await h.place()
            let id = placed.orderId
            #expect(placed.order?.status == .placed)
            #expect(placed.order?.version == 1)
            let driver = OrderIdentity.random()
            let accepted = try await h.update(id, .accept(driverId: driver), version: 1)
            #expect(accepted.order?.status == .accepted)
            #expect(accepted.order?.driverId == driver)
            let stale = try await h.update(id, .cancel, version: 1)
            #expect(stale.event.kind.rejection?.reason == .versionMismatch)
            #expect(stale.order?.version == 2)
            let completed = try await h.update(id, .complete, version: 2)
            #expect(completed.order?.version == 3)
            let cancel = try await h.update(id, .cancel, version: 3)
            #expect(cancel.event.kind.rejection?.reason == .transitionNotAllowed)
            await h.pipeline.projector.waitUntilWritten()  // outcomes are published before the store write
            let view = try #require(try await h.store.view(orderId: id))
            #expect(view.events.map(\.event.typeName) == ["OrderPlacedEvent", "OrderAcceptedEvent", "ErrorEvent", "OrderCompletedEvent", "ErrorEvent"])
            #expect(view.events.map(\.event.version) == [1, 2, 2, 3, 3])
            #expect(view.order?.errors.count == 2)
        }
    }

    @Test(arguments: Harness.Kind.allCases) func unknownOrderIsRefusedAndNothingIsWritten(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let before = try await h.engine.endOffsets(h.pipeline.topics.commandsAndEvents)
            await #expect(throws: OrderRejection.self) {
                _ = try await h.update(OrderIdentity.random(), .cancel, version: 1)
            }
            #expect(try await h.engine.endOffsets(h.pipeline.topics.commandsAndEvents) == before)
        }
    }

    /// Invariant 1 and 2: many orders under concurrent commands; every order's events are
    /// versioned 1, 2, 3 … without gap or duplicate; every command has one outcome.
    @Test(arguments: Harness.Kind.allCases) func versionsAreGaplessUnderConcurrentLoad(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let ids = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<40 { group.addTask { try await h.place().orderId } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in ids {
                    group.addTask {
                        _ = try await h.update(id, .accept(driverId: OrderIdentity.random()), version: 1)
                        _ = try await h.update(id, .complete, version: 2)
                    }
                    group.addTask { _ = try await h.update(id, .cancel, version: 1) }
                }
                try await group.waitForAll()
            }
            let events = try await h.eventsByOrder()
            for id in ids {
                let history = try #require(events[id])
                let versions = history.filter { !$0.isError }.map(\.version)
                #expect(versions == Array(1...versions.count), "order \(id): \(versions)")
                #expect(Set(history.map(\.commandId)).count == history.count, "one outcome per command")
            }
        }
    }

    /// Invariant 4: concurrent updates at one expected version: exactly one wins.
    @Test(arguments: Harness.Kind.allCases) func concurrentUpdatesAtOneVersionHaveOneWinner(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let id = try await h.place().orderId
            let outcomes = try await withThrowingTaskGroup(of: CommandOutcome.self) { group in
                for _ in 0..<20 { group.addTask { try await h.update(id, .accept(driverId: OrderIdentity.random()), version: 1) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.filter { !$0.event.isError }.count == 1)
            #expect(outcomes.filter { $0.event.kind.rejection?.reason == .versionMismatch }.count == 19)
        }
    }

    /// Invariant 2: a retried request_id returns the first outcome and applies once, also
    /// when the retries race the first attempt.
    @Test(arguments: Harness.Kind.allCases) func retriesReturnTheFirstOutcome(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let request = OrderIdentity.random()
            let placed = try await withThrowingTaskGroup(of: CommandOutcome.self) { group in
                for _ in 0..<5 { group.addTask { try await h.place(request: request) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(placed.map(\.orderId)).count == 1)
            #expect(Set(placed.map(\.event)).count == 1)
            let id = placed[0].orderId
            let accept = OrderIdentity.random()
            let driver = OrderIdentity.random()
            let first = try await h.update(id, .accept(driverId: driver), version: 1, request: accept)
            let again = try await h.update(id, .accept(driverId: driver), version: 1, request: accept)
            #expect(first == again)
            let events = try #require(try await h.eventsByOrder()[id])
            #expect(events.map(\.typeName) == ["OrderPlacedEvent", "OrderAcceptedEvent"])
        }
    }

    /// A command written while its predecessor is still being decided waits for it: it is
    /// decided on the predecessor's outcome, not refused as a conflict.
    @Test(arguments: Harness.Kind.allCases) func commandsQueuedBehindEachOtherAreDecidedInOrder(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let id = try await h.place().orderId
            let topics = h.pipeline.topics
            let accept = OrderCommand(commandId: "a-\(id)", orderId: id, expectedVersion: 1, kind: .accept(driverId: OrderIdentity.random()))
            let complete = OrderCommand(commandId: "c-\(id)", orderId: id, expectedVersion: 2, kind: .complete)
            // Both in one append: the handler sees [.., accept] and [.., accept, complete]
            // before the accept's outcome exists.
            try await h.engine.append(
                [accept, complete].map {
                    OutgoingRecord(topic: topics.commandsAndEvents, key: id, value: LogFormat.encode(LogFormat.entry($0)))
                }, commit: nil)
            let outcome = try await h.gateway.outcome(of: complete.commandId, deadline: .now + .seconds(10))
            #expect(outcome.order?.status == .completed)
            #expect(outcome.order?.version == 3)
        }
    }

    /// Bad records are reported and skipped; they neither block the partition nor lose
    /// the records after them.
    @Test(arguments: Harness.Kind.allCases) func badRecordsDoNotBlockThePartition(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let id = try await h.place().orderId
            let topics = h.pipeline.topics
            let bad: [[UInt8]] = [
                Array("not json".utf8),
                Array(#"{"TYPE":"COMMAND","SUB_TYPE":"FlyToMoon","DETAILS":"{}"}"#.utf8),
                Array(#"{"TYPE":"COMMAND","SUB_TYPE":"CancelOrder","DETAILS":"{not json"}"#.utf8),
                Array(#"{"TYPE":"EVENT","SUB_TYPE":"OrderCompletedEvent","DETAILS":"{\"version\":7}"}"#.utf8),
            ]
            try await h.engine.append(bad.map { OutgoingRecord(topic: topics.commandsAndEvents, key: id, value: $0) }, commit: nil)
            let accepted = try await h.update(id, .accept(driverId: OrderIdentity.random()), version: 1)
            #expect(accepted.order?.version == 2)
            let completed = try await h.update(id, .complete, version: 2)
            #expect(completed.order?.status == .completed)
        }
    }

    @Test(arguments: Harness.Kind.allCases) func integrationEventsOnePerStateChange(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let id = try await h.place().orderId
            _ = try await h.update(id, .cancel, version: 5)  // an error: no integration event
            _ = try await h.update(id, .cancel, version: 1)
            try await waitUntil { try await h.records(h.pipeline.topics.integrationEvents).count >= 2 }
            let records = try await h.records(h.pipeline.topics.integrationEvents)
            #expect(records.count == 2)
            let json = try records.map { try JSONSerialization.jsonObject(with: Data($0.value)) as! [String: Any] }
            #expect(json.map { $0["event_type"] as? String } == ["OrderPlacedEvent", "OrderCancelledEvent"])
            #expect(json.last?["status"] as? String == "CANCELLED")
            #expect(json.last?["order_id"] as? String == id)
            #expect(json.last?["version"] as? Int == 2)
            #expect(json.last?["rider_id"] != nil)
        }
    }

    /// Invariant 5: a subscriber resuming after a position sees every later event once,
    /// in version order per order.
    @Test(arguments: Harness.Kind.allCases) func subscriptionResumesAfterPositionExactlyOnce(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            var ids: [String] = []
            for _ in 0..<5 { ids.append(try await h.place().orderId) }
            let sub = try await h.pipeline.subscribe(start: .beginning, filter: .init())
            var seen: [ProjectedEvent] = []
            var caughtUp: LogPosition?
            while caughtUp == nil, let item = try await sub.next() {
                switch item {
                case .event(let e): seen.append(e)
                case .caughtUp(let p): caughtUp = p
                case .heartbeat: break
                }
            }
            #expect(seen.count == 5)
            let resumeAt = seen[2].position
            for id in ids { _ = try await h.update(id, .cancel, version: 1) }
            // Live events arrive on the open subscription.
            var live: [ProjectedEvent] = []
            while live.count < 5, let item = try await sub.next() {
                if case .event(let e) = item { live.append(e) }
            }
            #expect(Set(live.map(\.event.orderId)) == Set(ids))
            await sub.close()
            // Resume after the third history event: the last two placements and the five
            // cancellations, each once.
            let resumed = try await h.pipeline.subscribe(start: .after(resumeAt), filter: .init())
            var after: [ProjectedEvent] = []
            while let item = try await resumed.next() {
                if case .event(let e) = item { after.append(e) }
                if case .caughtUp = item { break }
            }
            await resumed.close()
            let expected = Set(seen[3...].map(\.event) + live.map(\.event))
            #expect(after.count == expected.count)
            #expect(Set(after.map(\.event)) == expected)
            for id in ids {
                let versions = after.filter { $0.event.orderId == id }.map(\.event.version)
                #expect(versions == versions.sorted())
            }
        }
    }

    @Test(arguments: Harness.Kind.allCases) func subscriptionFilters(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let a = try await h.place().orderId
            let b = try await h.place().orderId
            _ = try await h.update(a, .cancel, version: 1)
            _ = try await h.update(b, .cancel, version: 1)
            let sub = try await h.pipeline.subscribe(start: .beginning, filter: .init(orderId: a))
            var events: [OrderEvent] = []
            while let item = try await sub.next() {
                if case .event(let e) = item { events.append(e.event) }
                if case .caughtUp = item { break }
            }
            #expect(events.map(\.typeName) == ["OrderPlacedEvent", "OrderCancelledEvent"])
            #expect(events.allSatisfy { $0.orderId == a })
            let cancels = try await h.pipeline.subscribe(start: .beginning, filter: .init(eventTypes: ["OrderCancelledEvent"]))
            var types: [String] = []
            while let item = try await cancels.next() {
                if case .event(let e) = item { types.append(e.event.typeName) }
                if case .caughtUp = item { break }
            }
            #expect(types == ["OrderCancelledEvent", "OrderCancelledEvent"])
        }
    }

    @Test(arguments: Harness.Kind.allCases) func fromEndStartsCaughtUpThenLive(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            _ = try await h.place()
            let sub = try await h.pipeline.subscribe(start: .end, filter: .init())
            guard case .caughtUp = try await sub.next() else {
                Issue.record("from_end starts with caught_up")
                return
            }
            let placed = try await h.place()
            while let item = try await sub.next() {
                if case .event(let e) = item {
                    #expect(e.event.orderId == placed.orderId)
                    break
                }
            }
        }
    }

    @Test(arguments: Harness.Kind.allCases) func minVersionWaitsForTheProjection(_ kind: Harness.Kind) async throws {
        try await Harness.run(kind) { h in
            let id = try await h.place().orderId
            async let waited = h.pipeline.queries.order(id: id, minVersion: 2, deadline: .now + .seconds(10))
            try await Task.sleep(for: .milliseconds(50))
            _ = try await h.update(id, .cancel, version: 1)
            #expect(try await waited?.version == 2)
            await #expect(throws: OrderQueries.VersionTimeout.self) {
                _ = try await h.pipeline.queries.order(id: id, minVersion: 3, deadline: .now + .milliseconds(200))
            }
        }
    }

    /// Restarting the processors on the same log resumes from checkpoints: nothing is
    /// decided twice, and the read model stays in step.
    @Test func restartResumesFromCheckpoints() async throws {
        let engine = InMemoryLogEngine()
        let store = InMemoryReadModelStore()
        var id = ""
        try await Harness.run(engine: engine, store: store) { h in
            id = try await h.place().orderId
            _ = try await h.update(id, .accept(driverId: OrderIdentity.random()), version: 1)
        }
        try await Harness.run(engine: engine, store: store) { h in
            let completed = try await h.update(id, .complete, version: 2)
            #expect(completed.order?.version == 3)
            let events = try #require(try await h.eventsByOrder()[id])
            #expect(events.map(\.version) == [1, 2, 3])
        }
    }

    /// Restarts on the embedded engine (reopened from disk), with the aggregator and the
    /// command handler polling or derived in the engine before and after: the hand-over
    /// from polling consumers to the engine picks up where they stopped.
    @Test(arguments: [(false, true), (true, true), (true, false)])
    func restartOnTheEmbeddedEngine(derivedBefore: Bool, derivedAfter: Bool) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-restart-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = OrderPipeline.Config()
        var ids: [String] = []
        config.deriveInEngine = derivedBefore
        try await Harness.withEmbeddedEngine(in: dir) { embedded in
            try await Harness.run(engine: embedded.log, store: embedded.readModel, config: config) { h in
                for _ in 0..<5 { ids.append(try await h.place().orderId) }
                _ = try await h.update(ids[0], .accept(driverId: OrderIdentity.random()), version: 1)
            }
        }

        config.deriveInEngine = derivedAfter
        try await Harness.withEmbeddedEngine(in: dir) { embedded in
            try await Harness.run(engine: embedded.log, store: embedded.readModel, config: config) { h in
                let completed = try await h.update(ids[0], .complete, version: 2)
                #expect(completed.order?.version == 3)
                for id in ids.dropFirst() { _ = try await h.update(id, .cancel, version: 1) }
                let events = try await h.eventsByOrder()
                #expect(try #require(events[ids[0]]).map(\.version) == [1, 2, 3])
                for id in ids.dropFirst() { #expect(events[id]?.map(\.version) == [1, 2]) }
                // Every decision and every aggregates row exactly once: a command and its
                // event in the log, a row for each.
                let commands = 5 + 1 + 1 + 4
                #expect(try await h.records(h.pipeline.topics.commandsAndEvents).count == 2 * commands)
                #expect(try await h.records(h.pipeline.topics.aggregates).count == 2 * commands)
            }
        }
    }

    /// On the embedded engine the command's row, its decision, the decision's row and the
    /// integration event are written by the command's own append.
    @Test func theEmbeddedEngineDecidesInsideTheCommandsAppend() async throws {
        try await Harness.run(.embedded) { h in
            let topics = h.pipeline.topics
            let command = Harness.placeCommand(price: "9.90")
            let orderId = command.orderId
            try await h.engine.append(
                [OutgoingRecord(topic: topics.commandsAndEvents, key: orderId, value: LogFormat.encode(LogFormat.entry(command)))],
                commit: nil)
            // No waiting: the append that returned carried all five records.
            #expect(try await h.engine.endOffsets(topics.commandsAndEvents).reduce(0, +) == 2)
            #expect(try await h.engine.endOffsets(topics.aggregates).reduce(0, +) == 2)
            #expect(try await h.engine.endOffsets(topics.integrationEvents).reduce(0, +) == 1)
            let events = try await h.eventsByOrder()
            #expect(events[orderId]?.map(\.typeName) == ["OrderPlacedEvent"])
        }
    }

    /// Outcomes do not wait for the read-model store: while its writes are held, commands
    /// are answered, retries get the first outcome, GetOrder answers from the projector's
    /// cache; ListOrders, answered by the store alone, waits for it.
    @Test func outcomesDoNotWaitForTheStoreButListingsDo() async throws {
        let store = GatedReadModelStore()
        try await Harness.run(store: store) { h in
            store.hold()
            let request = OrderIdentity.random()
            let placed = try await h.place(request: request)
            #expect(placed.order?.version == 1)
            let retried = try await h.place(request: request)
            #expect(retried == placed)
            let order = try await h.pipeline.queries.order(id: placed.orderId, deadline: .now + .seconds(5))
            #expect(order == placed.order)

            let listing = Task { try await h.pipeline.queries.list(status: nil, after: 0, limit: 10) }
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await store.listOrders(status: nil, after: 0, limit: 10).orders.isEmpty)
            store.release()
            let page = try await listing.value
            #expect(page.orders.map(\.id) == [placed.orderId])
        }
    }

    /// A listing waiting for a batch whose store write failed waits on for the batch's
    /// redo from the store's checkpoint, instead of being answered without it.
    @Test func listingsWaitForBatchesRedoneAfterAFailedWrite() async throws {
        let store = GatedReadModelStore()
        try await Harness.run(store: store) { h in
            let first = try await h.place()
            try await waitUntil { try await store.listOrders(status: nil, after: 0, limit: 10).orders.count == 1 }
            store.hold()
            let second = try await h.place()
            let listing = Task { try await h.pipeline.queries.list(status: nil, after: 0, limit: 10) }
            try await waitUntil { store.parkedCount >= 1 }
            store.refuse()
            store.release()  // the write of `second` fails: the projector starts again from its checkpoint
            try await Task.sleep(for: .milliseconds(300))
            store.accept()
            let page = try await listing.value
            #expect(Set(page.orders.map(\.id)) == [first.orderId, second.orderId])
        }
    }

    /// A listing waiting on a store whose writes keep failing ends when its task is
    /// cancelled (the client's deadline), instead of waiting out the outage.
    @Test func aListingWaitingOnAFailingStoreEndsWhenCancelled() async throws {
        let store = GatedReadModelStore()
        try await Harness.run(store: store) { h in
            _ = try await h.place()
            try await waitUntil { try await store.listOrders(status: nil, after: 0, limit: 10).orders.count == 1 }
            store.hold()
            _ = try await h.place()
            let finished = Atomic<Bool>(false)
            let listing = Task {
                defer { finished.store(true, ordering: .relaxed) }
                return try await h.pipeline.queries.list(status: nil, after: 0, limit: 10)
            }
            try await waitUntil { store.parkedCount >= 1 }
            store.refuse()
            store.release()  // every write fails from now on
            try await Task.sleep(for: .milliseconds(300))
            listing.cancel()
            try await waitUntil(timeout: .seconds(3)) { finished.load(ordering: .relaxed) }
            store.accept()
            _ = await listing.result
        }
    }

    /// Commands appended while no processor ran (a backlog) are consumed by the polling
    /// processors first; then the engine takes over, and every command is decided once.
    @Test func theEngineTakesOverAfterTheBacklog() async throws {
        try await Harness.withEmbeddedEngine { embedded in
            let topics = Topics()
            try await topics.provision(on: embedded.log)
            var backlog: [String] = []
            for _ in 0..<300 {
                let command = Harness.placeCommand(price: "7.00")
                try await embedded.log.append(
                    [
                        OutgoingRecord(
                            topic: topics.commandsAndEvents, key: command.orderId, value: LogFormat.encode(LogFormat.entry(command)))
                    ],
                    commit: nil)
                backlog.append(command.orderId)
            }
            try await Harness.run(engine: embedded.log, store: embedded.readModel) { h in
                // New commands while (or after) the backlog is worked off.
                var fresh: [String] = []
                for _ in 0..<20 { fresh.append(try await h.place().orderId) }
                try await waitUntil {
                    try await h.pipeline.queries.order(id: backlog.last!, deadline: .now + .seconds(1)) != nil
                }
                let events = try await h.eventsByOrder()
                for id in backlog + fresh { #expect(events[id]?.map(\.version) == [1]) }
                // Handed over: the engine owns the groups, and a command is decided in its append.
                // (The hand-over follows the polling processors' last batch: on a loaded
                // machine, possibly after the backlog's last order is visible.)
                try await waitUntil(timeout: .seconds(20)) {
                    try await h.engine.committedOffsets(group: CommandHandler.group, topic: topics.aggregates)
                        == (try await h.engine.endOffsets(topics.aggregates))
                }
                let offsets = try await h.engine.committedOffsets(group: CommandHandler.group, topic: topics.aggregates)
                #expect(offsets == (try await h.engine.endOffsets(topics.aggregates)))
                #expect(try await h.records(topics.aggregates).count == 2 * (backlog.count + fresh.count))
            }
        }
    }
}
