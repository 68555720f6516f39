@testable import EngineKafka
import EventLog
import OrderDomain
import Testing

// A broker that stops answering holds an append until librdkafka's delivery timeout and
// a request until `socket.timeout.ms`; a command's client must hear within seconds that
// the event store is unavailable, and its retry, once the broker is back, must return
// the command's one outcome.

extension PipelineOnKafkaTests {
    @Test("a command while the broker is frozen is told UNAVAILABLE within seconds; its retry once it is back returns the one outcome")
    func commandsFailFastWhileTheBrokerIsFrozen() async throws {
        // The tests' delivery timeout (10 s) is what the command waited for before.
        try await withPipeline { p, _, broker in
            #expect(try await place(p).order?.version == 1)  // the groups have formed
            let request = OrderIdentity.random()
            let command = OrderCommand(
                commandId: request, orderId: OrderIdentity.orderId(forRequest: request), expectedVersion: 0,
                kind: .place(
                    riderId: OrderIdentity.random(), price: "12.50",
                    route: [Waypoint(address: "A", lat: 50.5, lon: 30.4), Waypoint(address: "B", lat: 50.4, lon: 30.5)]))
            try broker.pause()
            var paused = true
            defer { if paused { try? broker.resume() } }
            let started = ContinuousClock.now
            await #expect {
                try await p.gateway.submit(command, timeout: .seconds(20))
            } throws: { error in
                let e = error as? LogError
                return e?.code == .unavailable && e?.message.contains("retrying with the same request_id is safe") == true
            }
            #expect(ContinuousClock.now - started < .seconds(5), "answered after \(ContinuousClock.now - started)")
            try broker.resume()
            paused = false

            var placed: CommandOutcome?
            try await eventually(timeout: .seconds(30)) { placed = try await p.gateway.submit(command, timeout: .seconds(10)) }
            #expect(placed?.orderId == command.orderId && placed?.order?.version == 1)
            let view = try await p.projector.view(orderId: command.orderId)
            #expect(view?.events.map(\.event.version) == [1])
        }
    }
}
