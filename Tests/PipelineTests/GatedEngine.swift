import EventLog
import Synchronization

/// A log engine that can hold back what one reader sees: `gateNextReader()` makes the next
/// `openReader` of a topic return a reader that delivers nothing until `release()`. Tests
/// use it to keep StreamEvents' shared tail behind a subscriber's own reader, the case
/// where the switch to the tail must skip records by offset.
final class GatedEngine: WrappingEngine {
    let inner: any LogEngine
    private let state = Mutex((armed: false, open: true))

    init(_ inner: any LogEngine) { self.inner = inner }

    func gateNextReader() { state.withLock { $0 = (armed: true, open: false) } }
    func release() { state.withLock { $0.open = true } }
    fileprivate var isOpen: Bool { state.withLock { $0.open } }

    func openReader(topic: String, from offsets: [Int64]) async throws -> any LogReader {
        let reader = try await inner.openReader(topic: topic, from: offsets)
        let gated = state.withLock { s in
            defer { s.armed = false }
            return s.armed
        }
        return gated ? GatedReader(inner: reader, engine: self) : reader
    }
}

private final class GatedReader: LogReader {
    let inner: any LogReader
    let engine: GatedEngine

    init(inner: any LogReader, engine: GatedEngine) {
        self.inner = inner
        self.engine = engine
    }

    func next(maxRecords: Int, timeout: Duration) async throws -> [LogRecord] {
        let deadline = ContinuousClock.now + timeout
        while !engine.isOpen {
            if ContinuousClock.now >= deadline { return [] }
            try await Task.sleep(for: .milliseconds(5))
        }
        return try await inner.next(maxRecords: maxRecords, timeout: max(.zero, deadline - .now))
    }

    func positions() async -> [Int64] { await inner.positions() }
    func close() async { await inner.close() }
}
