import EventLog
import Testing

@Suite struct LogThrottleTests {
    /// One line a second, then the count of those left out.
    @Test func oneLineAnIntervalWithTheCountLeftOut() {
        var throttle = LogThrottle(interval: .seconds(1))
        let t0 = ContinuousClock.now
        #expect(throttle.admit(at: t0) == 0)
        for i in 1...9 { #expect(throttle.admit(at: t0 + .milliseconds(100 * i)) == nil) }
        #expect(throttle.admit(at: t0 + .milliseconds(1000)) == 9)
        #expect(throttle.admit(at: t0 + .milliseconds(1500)) == nil)
        #expect(throttle.admit(at: t0 + .seconds(3)) == 1)
    }
}
