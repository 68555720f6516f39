/// At most one log line per `interval` for a repeated failure, with the number of lines
/// left out since the last one: a full disk fails every append, and a line per failed
/// call (9,000 in 40 s, measured) buries what the operator needs to see; librdkafka
/// logs every failed reconnect of every connection (41 lines a second per instance while
/// a broker was down).
package struct LogThrottle {
    package let interval: Duration
    private var lastLogged: ContinuousClock.Instant?
    private var suppressed = 0

    package init(interval: Duration = .seconds(1)) { self.interval = interval }

    /// Whether to log now; if so, how many lines were left out before this one.
    package mutating func admit(at now: ContinuousClock.Instant = .now) -> Int? {
        if let last = lastLogged, now - last < interval {
            suppressed += 1
            return nil
        }
        lastLogged = now
        defer { suppressed = 0 }
        return suppressed
    }
}
