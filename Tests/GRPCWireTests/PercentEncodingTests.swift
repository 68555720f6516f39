import Testing

@testable import GRPCWire

@Suite struct PercentEncodingTests {
    @Test func asciiIsUnchanged() {
        #expect(PercentEncoding.encode("plain message 123") == "plain message 123")
    }
}
