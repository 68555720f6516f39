@testable import EventLog
import Testing

/// `Waiters`: each wait ends exactly once, by a value, its timeout or its cancellation.
@Suite struct WaitersTests {
    @Test func aValuePublishedBeforeTheWaitIsKept() async {
        let waiters = Waiters<String, Int>()
        let ticket = waiters.register("a")
        waiters.publish("a", 1)
        #expect(await waiters.wait(ticket, timeout: .seconds(10)) == 1)
    }

    @Test func aValuePublishedDuringTheWaitEndsIt() async {
        let waiters = Waiters<String, Int>()
        let ticket = waiters.register("a", accepts: { $0 >= 2 })
        async let value = waiters.wait(ticket, timeout: .seconds(30))
        waiters.publish("b", 5)  // another key
        waiters.publish("a", 1)  // not accepted
        try? await Task.sleep(for: .milliseconds(20))
        waiters.publish("a", 2)
        #expect(await value == 2)
    }

    @Test func aWaitTimesOutWithNil() async {
        let waiters = Waiters<String, Int>()
        let start = ContinuousClock.now
        #expect(await waiters.wait(for: "a", timeout: .milliseconds(50)) == nil)
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        waiters.publish("a", 1)  // nobody left to take it
    }

    @Test func anEarlierDeadlineIsNotHeldUpByALaterOne() async {
        let waiters = Waiters<String, Int>()
        let late = waiters.register("late")
        async let lateValue = waiters.wait(late, timeout: .seconds(60))
        try? await Task.sleep(for: .milliseconds(20))  // the timer now sleeps for a minute
        // This wait must end long before that minute.
        let start = ContinuousClock.now
        #expect(await waiters.wait(for: "early", timeout: .milliseconds(30)) == nil)
        #expect(ContinuousClock.now - start < .seconds(10))
        waiters.publish("late", 7)
        #expect(await lateValue == 7)
    }

    @Test func manyDeadlinesEndInTime() async {
        let waiters = Waiters<Int, Int>()
        await withTaskGroup(of: Int?.self) { group in
            for i in 0..<200 {
                group.addTask { await waiters.wait(for: i, timeout: .milliseconds(Int64(10 + (i * 7) % 90))) }
            }
            for i in stride(from: 0, to: 200, by: 2) { waiters.publish(i, i) }
            var results: [Int?] = []
            for await r in group { results.append(r) }
            #expect(results.count == 200)
            // Each even key got its value unless its wait had already timed out.
            #expect(results.allSatisfy { $0 == nil || $0! % 2 == 0 })
        }
    }

    @Test func cancellationEndsTheWait() async {
        let waiters = Waiters<String, Int>()
        let task = Task { await waiters.wait(for: "a", timeout: .seconds(60)) }
        try? await Task.sleep(for: .milliseconds(20))
        task.cancel()
        #expect(await task.value == nil)
    }

    /// Waits ended by a value, a timeout or a cancellation leave nothing behind (the
    /// deadline heap keeps only plain ids; the keys go when the wait ends).
    @Test func endedWaitsAreForgotten() async {
        let waiters = Waiters<String, Int>()
        await withTaskGroup(of: Int?.self) { group in
            for i in 0..<200 {
                let ticket = waiters.register("k\(i)")
                group.addTask { await waiters.wait(ticket, timeout: i % 2 == 0 ? .seconds(60) : .milliseconds(30)) }
            }
            try? await Task.sleep(for: .milliseconds(10))  // most are waiting (a value before the wait is kept too)
            for i in stride(from: 0, to: 200, by: 2) { waiters.publish("k\(i)", i) }
            var values = 0
            for await value in group where value != nil { values += 1 }
            #expect(values == 100)
        }
        #expect(waiters.waitingCount == 0)
        let cancelled = Task { await waiters.wait(for: "c", timeout: .seconds(60)) }
        while waiters.waitingCount < 1 { try? await Task.sleep(for: .milliseconds(5)) }
        cancelled.cancel()
        #expect(await cancelled.value == nil)
        #expect(waiters.waitingCount == 0)
    }

    /// Waits that end by a value long before their deadline (a call's timeout can be an
    /// hour) do not pile up in the deadline heap until those deadlines come.
    @Test func deadlinesOfEndedWaitsDoNotAccumulate() async {
        let waiters = Waiters<Int, Int>()
        for round in 0..<20 {
            await withTaskGroup(of: Int?.self) { group in
                for i in 0..<100 {
                    let ticket = waiters.register(round * 100 + i)
                    group.addTask { await waiters.wait(ticket, timeout: .seconds(3600)) }
                }
                while waiters.waitingCount < 100 { try? await Task.sleep(for: .milliseconds(1)) }
                for i in 0..<100 { waiters.publish(round * 100 + i, i) }
                for await value in group { #expect(value != nil) }
            }
        }
        #expect(waiters.waitingCount == 0)
        // 2,000 waits went through; before, all 2,000 deadlines stayed for the hour.
        #expect(waiters.heldDeadlines <= 2 * 100 + 256)
    }

    /// After dropping entries the heap still hands out the earliest deadline first.
    @Test func theDeadlineHeapKeepsItsOrderAfterARemoval() {
        var heap = DeadlineHeap()
        let start = ContinuousClock.now
        var generator = SystemRandomNumberGenerator()
        let offsets = (0..<500).map { _ in Int64.random(in: 0..<10_000, using: &generator) }
        for (id, offset) in offsets.enumerated() { heap.insert(start + .milliseconds(offset), UInt64(id)) }
        heap.removeAll { $0 % 3 == 0 }
        var popped: [ContinuousClock.Instant] = []
        while let first = heap.first {
            #expect(first.id % 3 != 0)
            popped.append(first.deadline)
            heap.removeFirst()
        }
        #expect(popped.count == offsets.indices.filter { $0 % 3 != 0 }.count)
        #expect(zip(popped, popped.dropFirst()).allSatisfy { $0 <= $1 }, "popped out of order")
    }
}
