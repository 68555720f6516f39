import Synchronization

/// The state behind `grpc.health.v1.Health`, which every ``GRPCServer`` serves.
///
/// The whole server (`""`) and every registered service start as SERVING. `Check` of a name
/// never set answers NOT_FOUND; `Watch` sends the current status at once (SERVICE_UNKNOWN for
/// an unknown name) and then every change, until the client cancels or the server shuts down.
public final class HealthStatus: Sendable {
    public enum ServingStatus: Sendable, Hashable {
        case serving, notServing
    }

    typealias WireStatus = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    private struct Watcher {
        let service: String
        let continuation: AsyncStream<WireStatus>.Continuation
    }

    private struct State {
        var statuses: [String: ServingStatus] = [:]
        var watchers: [Int: Watcher] = [:]
        var nextWatcherID = 0
        var shutDown = false
    }

    private let state: Mutex<State>

    init(services: [String]) {
        var initial = State()
        initial.statuses[""] = .serving
        for service in services { initial.statuses[service] = .serving }
        state = Mutex(initial)
    }

    /// Sets the status of `service` (`""`, the default, is the whole server) and notifies
    /// watchers of a change. Ignored once the server is shutting down.
    public func setStatus(_ status: ServingStatus, for service: String = "") {
        let notify: [AsyncStream<WireStatus>.Continuation] = state.withLock { state in
            guard !state.shutDown, state.statuses[service] != status else { return [] }
            state.statuses[service] = status
            return state.watchers.values.filter { $0.service == service }.map(\.continuation)
        }
        for continuation in notify { continuation.yield(Self.wire(status)) }
    }

    /// The status of `service`, nil if it was never set.
    public func status(for service: String = "") -> ServingStatus? {
        state.withLock { $0.statuses[service] }
    }

    /// Every service goes NOT_SERVING and every Watch stream ends. Watchers already told
    /// NOT_SERVING (the application set it before shutting down) are not told again.
    func enterShutdown() {
        let watchers: [(watcher: Watcher, changed: Bool)] = state.withLock { state in
            state.shutDown = true
            let ending = state.watchers.values.map { ($0, state.statuses[$0.service] != .notServing) }
            for key in state.statuses.keys { state.statuses[key] = .notServing }
            state.watchers = [:]
            return ending
        }
        for (watcher, changed) in watchers {
            if changed { watcher.continuation.yield(.notServing) }
            watcher.continuation.finish()
        }
    }

    private func watch(_ service: String) -> AsyncStream<WireStatus> {
        // Only the latest status matters to a watcher that fell behind.
        let (stream, continuation) = AsyncStream<WireStatus>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id: Int? = state.withLock { state in
            continuation.yield(state.statuses[service].map(Self.wire) ?? .serviceUnknown)
            if state.shutDown { return nil }
            let id = state.nextWatcherID
            state.nextWatcherID += 1
            state.watchers[id] = Watcher(service: service, continuation: continuation)
            return id
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    private static func wire(_ status: ServingStatus) -> WireStatus {
        status == .serving ? .serving : .notServing
    }

    var serviceDefinition: ServiceDefinition {
        var service = ServiceDefinition(name: "grpc.health.v1.Health")
        service.unary("Check") { [self] (request: Grpc_Health_V1_HealthCheckRequest, _) in
            guard let status = self.status(for: request.service) else {
                throw GRPCStatus(.notFound, "Unknown service \"\(request.service)\"")
            }
            var response = Grpc_Health_V1_HealthCheckResponse()
            response.status = Self.wire(status)
            return response
        }
        service.serverStreaming("Watch") {
            [self] (request: Grpc_Health_V1_HealthCheckRequest, responses: ResponseStream<Grpc_Health_V1_HealthCheckResponse>, _) in
            for await status in self.watch(request.service) {
                var response = Grpc_Health_V1_HealthCheckResponse()
                response.status = status
                try await responses.send(response)
            }
        }
        return service
    }
}
