import Synchronization

/// Runs work in a task of its own and waits for its result at most a given time. For
/// work that does not end on cancellation (an append blocked on a Kafka broker that
/// stopped answering waits for librdkafka's own timeout): awaiting it, even as a child
/// in a task group, would hold the caller until it ends. The work runs on after its
/// caller gave up.
///
/// The waits share `Waiters`' one timer task rather than a sleeping task each: every
/// command's append waits here.
final class BoundedWait<Value: Sendable>: Sendable {
    private let results = Waiters<UInt64, Result<Value, any Error>>()
    private let lastId = Atomic<UInt64>(0)

    /// `work`'s result, or nil when it has none within `limit` or the caller is cancelled.
    func result(within limit: Duration, of work: @escaping @Sendable () async throws -> Value) async -> Result<Value, any Error>? {
        let id = lastId.add(1, ordering: .relaxed).newValue
        // Registered first: a result published before the wait starts is kept for it.
        let ticket = results.register(id)
        let results = self.results
        Task {
            let result: Result<Value, any Error>
            do {
                result = .success(try await work())
            } catch {
                result = .failure(error)
            }
            results.publish(id, result)  // a no-op once the wait has ended
        }
        return await results.wait(ticket, timeout: limit)
    }
}
