import Synchronization

/// Waits for a task's value at most a given time, and lets the task run on after its
/// caller gave up. For work that does not end on cancellation (an append blocked on a
/// Kafka broker that stopped answering waits for librdkafka's own timeout): awaiting it,
/// even as a child in a task group, would hold the caller until it ends.
///
/// The waits share `Waiters`' one timer task rather than a sleeping task each: every
/// command's append on Kafka waits here.
public final class BoundedWait<Value: Sendable>: Sendable {
    private let values = Waiters<UInt64, Value>()
    private let lastId = Atomic<UInt64>(0)

    public init() {}

    /// `task`'s value, or nil when it has none within `limit` or the caller is cancelled.
    /// The same task may be waited for again later (the health probe's engine call, which
    /// is never started twice).
    public func value(of task: Task<Value, Never>, within limit: Duration) async -> Value? {
        await wait(within: limit) { await task.value }
    }

    /// `work`'s result, run in a task of its own, or nil when it has none within `limit`
    /// or the caller is cancelled.
    func result<T: Sendable>(within limit: Duration, of work: @escaping @Sendable () async throws -> T) async -> Value?
    where Value == Result<T, any Error> {
        await wait(within: limit) {
            do {
                return .success(try await work())
            } catch {
                return .failure(error)
            }
        }
    }

    private func wait(within limit: Duration, for produce: @escaping @Sendable () async -> Value) async -> Value? {
        let id = lastId.add(1, ordering: .relaxed).newValue
        // Registered first: a value published before the wait starts is kept for it.
        let ticket = values.register(id)
        let values = self.values
        Task { values.publish(id, await produce()) }  // a no-op once the wait has ended
        return await values.wait(ticket, timeout: limit)
    }
}
