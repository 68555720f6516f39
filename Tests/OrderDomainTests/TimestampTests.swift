import Foundation
import Testing
import OrderDomain

@Suite("Timestamp and RFC 3339")
struct TimestampTests {
    struct Instant: Sendable, CustomTestStringConvertible {
        var text: String
        var microseconds: Int64
        var testDescription: String { text }
    }

    /// Epoch seconds from `date -u -d … +%s` (proleptic Gregorian), independent of the code under test.
    static let instants: [Instant] = [
        Instant(text: "1970-01-01T00:00:00.000000Z", microseconds: 0),
        Instant(text: "1970-01-01T00:00:00.000001Z", microseconds: 1),
        Instant(text: "1969-12-31T23:59:59.999999Z", microseconds: -1),
        Instant(text: "1969-12-31T23:59:59.000000Z", microseconds: -1_000_000),
        Instant(text: "1969-12-31T23:59:58.999999Z", microseconds: -1_000_001),
        Instant(text: "1969-12-31T00:00:00.000000Z", microseconds: -86_400_000_000),
        Instant(text: "1969-07-20T20:17:40.500000Z", microseconds: -14_182_940 * 1_000_000 + 500_000),
        Instant(text: "2021-04-19T08:58:19.818153Z", microseconds: 1_618_822_699_818_153),
        Instant(text: "2020-02-29T12:00:00.000000Z", microseconds: 1_582_977_600 * 1_000_000),  // leap day
        Instant(text: "2000-02-29T00:00:00.000000Z", microseconds: 951_782_400 * 1_000_000),  // leap day, century /400
        Instant(text: "1960-02-29T23:59:59.000000Z", microseconds: -310_435_201 * 1_000_000),  // leap day before 1970
        Instant(text: "1600-02-29T00:00:00.000000Z", microseconds: -11_670_998_400 * 1_000_000),  // negative era
        Instant(text: "1900-03-01T00:00:00.000000Z", microseconds: -2_203_891_200 * 1_000_000),  // 1900 not leap
        Instant(text: "2024-12-31T23:59:59.999999Z", microseconds: 1_735_689_599 * 1_000_000 + 999_999),
        Instant(text: "2038-01-19T03:14:08.000000Z", microseconds: 2_147_483_648 * 1_000_000),  // past Int32 seconds
        Instant(text: "0001-01-01T00:00:00.000000Z", microseconds: -62_135_596_800 * 1_000_000),
        Instant(text: "9999-12-31T23:59:59.999999Z", microseconds: 253_402_300_799 * 1_000_000 + 999_999),
    ]

    @Test(arguments: instants)
    func formats(_ instant: Instant) {
        let t = Timestamp(microseconds: instant.microseconds)
        #expect(t.rfc3339 == instant.text)
        #expect(t.description == instant.text)
    }

    @Test(arguments: instants)
    func parses(_ instant: Instant) {
        #expect(Timestamp(rfc3339: instant.text)?.microseconds == instant.microseconds)
    }

    @Test(arguments: instants)
    func roundTrips(_ instant: Instant) throws {
        let t = Timestamp(microseconds: instant.microseconds)
        #expect(Timestamp(rfc3339: t.rfc3339) == t)
        let parsed = try #require(Timestamp(rfc3339: instant.text))
        #expect(parsed.rfc3339 == instant.text)
    }

    /// Every day of 1896…1904 and 1996…2004 (leap years, and 1900, which is not), at
    /// several times of day, formats and parses back to itself; days follow each other.
    @Test func roundTripEveryDayAroundLeapYears() throws {
        for startYearSeconds: Int64 in [-2_335_219_200, 820_454_400] {  // 1896-01-01, 1996-01-01
            var previousDay: String?
            for day: Int64 in 0..<(9 * 366) {
                for secondOfDay: Int64 in [0, 43_210, 86_399] {
                    let micros = (startYearSeconds + day * 86_400 + secondOfDay) * 1_000_000 + 123_457
                    let t = Timestamp(microseconds: micros)
                    let text = t.rfc3339
                    #expect(Timestamp(rfc3339: text) == t, "\(text)")
                    if secondOfDay == 0 {
                        let date = String(text.prefix(10))
                        if let previousDay { #expect(previousDay < date, "\(previousDay) then \(date)") }
                        previousDay = date
                    }
                }
            }
        }
        #expect(Timestamp(rfc3339: "1900-02-28T00:00:00Z").map { Timestamp(microseconds: $0.microseconds + 86_400_000_000).rfc3339 }
            == "1900-03-01T00:00:00.000000Z")
        #expect(Timestamp(rfc3339: "2000-02-28T00:00:00Z").map { Timestamp(microseconds: $0.microseconds + 86_400_000_000).rfc3339 }
            == "2000-02-29T00:00:00.000000Z")
    }

    @Test func roundTripPseudoRandomInstants() {
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        let range: UInt64 = 253_402_300_799_999_999 + 62_135_596_800_000_000  // 0001 … 9999
        for _ in 0..<5_000 {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            let micros = Int64(x % range) - 62_135_596_800_000_000
            let t = Timestamp(microseconds: micros)
            #expect(Timestamp(rfc3339: t.rfc3339) == t, "\(micros)")
        }
    }

    @Test func secondsAndNanosFloorTowardsThePast() {
        #expect(Timestamp(microseconds: 1_500_000).seconds == 1)
        #expect(Timestamp(microseconds: 1_500_000).nanosOfSecond == 500_000_000)
        #expect(Timestamp(microseconds: -1).seconds == -1)
        #expect(Timestamp(microseconds: -1).nanosOfSecond == 999_999_000)
        #expect(Timestamp(microseconds: -1_000_000).seconds == -1)
        #expect(Timestamp(microseconds: -1_000_000).nanosOfSecond == 0)
        #expect(Timestamp(microseconds: -1_500_000).seconds == -2)
        #expect(Timestamp(microseconds: -1_500_000).nanosOfSecond == 500_000_000)
        #expect(Timestamp(microseconds: 0).seconds == 0)
        #expect(Timestamp(microseconds: 0).nanosOfSecond == 0)
    }

    // MARK: Parsing variants

    @Test(arguments: [
        ("2021-04-19T10:58:19.818153+02:00", "2021-04-19T08:58:19.818153Z"),
        ("2021-04-19T03:28:19.818153-05:30", "2021-04-19T08:58:19.818153Z"),
        ("2021-04-19T08:58:19.818153+00:00", "2021-04-19T08:58:19.818153Z"),
        ("2021-04-19T08:58:19.818153-00:00", "2021-04-19T08:58:19.818153Z"),
        ("2021-01-01T01:00:00+02:00", "2020-12-31T23:00:00.000000Z"),  // crosses the year
        ("2020-02-28T22:00:00-03:00", "2020-02-29T01:00:00.000000Z"),  // into a leap day
        ("1970-01-01T00:59:59.999999+01:00", "1969-12-31T23:59:59.999999Z"),
        ("2021-04-19T08:58:19.818153+23:59", "2021-04-18T08:59:19.818153Z"),
    ])
    func offsets(_ text: String, _ utc: String) {
        #expect(Timestamp(rfc3339: text)?.rfc3339 == utc)
    }

    @Test(arguments: [
        ("2021-04-19T08:58:19Z", "2021-04-19T08:58:19.000000Z"),
        ("2021-04-19T08:58:19.8Z", "2021-04-19T08:58:19.800000Z"),
        ("2021-04-19T08:58:19.81Z", "2021-04-19T08:58:19.810000Z"),
        ("2021-04-19T08:58:19.818Z", "2021-04-19T08:58:19.818000Z"),
        ("2021-04-19T08:58:19.000001Z", "2021-04-19T08:58:19.000001Z"),
        ("2021-04-19T08:58:19.8181539Z", "2021-04-19T08:58:19.818153Z"),  // beyond micros: truncated
        ("2021-04-19T08:58:19.818153999Z", "2021-04-19T08:58:19.818153Z"),  // nanoseconds, as Go and Java write
        ("2021-04-19T08:58:19.999999999999Z", "2021-04-19T08:58:19.999999Z"),  // never rounds into the next second
        ("2021-04-19T08:58:19.5+02:00", "2021-04-19T06:58:19.500000Z"),
        ("1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.500000Z"),
    ])
    func fractions(_ text: String, _ utc: String) {
        #expect(Timestamp(rfc3339: text)?.rfc3339 == utc)
    }

    @Test func lowercaseSeparatorAndZone() {
        let expected = Timestamp(rfc3339: "2021-04-19T08:58:19.818153Z")
        #expect(expected != nil)
        #expect(Timestamp(rfc3339: "2021-04-19t08:58:19.818153z") == expected)
        #expect(Timestamp(rfc3339: "2021-04-19t08:58:19.818153Z") == expected)
        #expect(Timestamp(rfc3339: "2021-04-19T08:58:19.818153z") == expected)
    }

    @Test(arguments: [
        "",
        "Z",
        "2021-04-19",
        "2021-04-19T08:58",
        "2021-04-19T08:58:19",  // no zone
        "2021-04-19T08:58:19.818153",  // no zone
        "2021-04-19T08:58:19.Z",  // a dot without digits
        "2021-04-19T08:58:19,5Z",  // comma fraction
        "2021-04-19 08:58:19Z",  // space separator
        "2021-04-19X08:58:19Z",
        "2021/04/19T08:58:19Z",
        "2021-04-19T08.58.19Z",
        "21-04-19T08:58:19Z",
        "02021-04-19T08:58:19Z",
        "2021-4-19T08:58:19Z",
        "2021-04-9T08:58:19Z",
        "2021-04-19T8:58:19Z",
        "2021-00-19T08:58:19Z",  // month 0
        "2021-13-19T08:58:19Z",  // month 13
        "2021-04-00T08:58:19Z",  // day 0
        "2021-04-32T08:58:19Z",  // day 32
        "2021-04-19T24:00:00Z",  // hour 24
        "2021-04-19T08:60:19Z",  // minute 60
        "2021-04-19T08:58:61Z",  // second 61
        "2021-04-19T08:58:19ZZ",  // trailing garbage
        "2021-04-19T08:58:19Z ",
        " 2021-04-19T08:58:19Z",
        "2021-04-19T08:58:19+02",  // offsets need HH:MM
        "2021-04-19T08:58:19+0200",
        "2021-04-19T08:58:19+02:0",
        "2021-04-19T08:58:19+2:00",
        "2021-04-19T08:58:19+02:00Z",
        "2021-04-19T08:58:19 +02:00",
        "2021-04-19T08:58:19UTC",
        "2021-04-19T08:58:19GMT+1",
        "-021-04-19T08:58:19Z",
        "2021-04-19T08:58:1aZ",
        "２０２１-04-19T08:58:19Z",  // full-width digits
        "2021−04−19T08:58:19Z",  // U+2212 minus signs
        "2021-04-19T08:58:19.1.2Z",
        "2021-04-19T08:58:19.-1Z",
    ])
    func rejectsMalformedText(_ text: String) {
        #expect(Timestamp(rfc3339: text) == nil, "\(text)")
    }

    /// RFC 3339 §5.7: the day must exist in its month and year. Silently rolling
    /// "2021-02-30" over to March 2nd would store a date nobody sent.
    @Test(arguments: [
        "2021-02-29T00:00:00Z",  // 2021 is not a leap year
        "2021-02-30T00:00:00Z",
        "2020-02-30T00:00:00Z",
        "1900-02-29T00:00:00Z",  // divisible by 100, not by 400
        "2100-02-29T00:00:00Z",
        "2021-04-31T00:00:00Z",
        "2021-06-31T00:00:00Z",
        "2021-09-31T00:00:00Z",
        "2021-11-31T12:00:00+02:00",
    ])
    func rejectsDaysThatDoNotExist(_ text: String) {
        #expect(Timestamp(rfc3339: text) == nil, "\(text)")
    }

    @Test(arguments: [
        "2020-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "1600-02-29T00:00:00Z", "2021-01-31T00:00:00Z",
        "2021-02-28T00:00:00Z", "2021-03-31T00:00:00Z", "2021-04-30T00:00:00Z", "2021-12-31T23:59:59Z",
    ])
    func acceptsTheLastDayOfEachMonth(_ text: String) throws {
        let t = try #require(Timestamp(rfc3339: text))
        #expect(t.rfc3339.prefix(10) == text.prefix(10))
    }

    /// RFC 3339 §5.6: time-numoffset is ±HH:MM with HH 00-23 and MM 00-59.
    @Test(arguments: [
        "2021-04-19T08:58:19+24:00",
        "2021-04-19T08:58:19-99:00",
        "2021-04-19T08:58:19+02:60",
        "2021-04-19T08:58:19+02:99",
    ])
    func rejectsOffsetsOutOfRange(_ text: String) {
        #expect(Timestamp(rfc3339: text) == nil, "\(text)")
    }

    @Test func comparableAndHashable() {
        let a = Timestamp(microseconds: -5)
        let b = Timestamp(microseconds: 3)
        #expect(a < b)
        #expect(!(b < a))
        #expect([b, a].sorted() == [a, b])
        #expect(Set([a, b, Timestamp(microseconds: 3)]).count == 2)
    }

    // MARK: Codable: the log's JSON carries the RFC 3339 text

    @Test func encodesAsRFC3339Text() throws {
        let data = try JSONEncoder().encode([Fixture.t0])
        #expect(String(decoding: data, as: UTF8.self) == #"["2021-04-19T08:58:19.818153Z"]"#)
    }

    @Test func decodesRFC3339TextWithOffset() throws {
        let decoded = try JSONDecoder().decode([Timestamp].self, from: Data(#"["2021-04-19T10:58:19.818153+02:00"]"#.utf8))
        #expect(decoded == [Fixture.t0])
    }

    @Test func decodingMalformedTextFails() {
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode([Timestamp].self, from: Data(#"["2021-04-19 08:58:19"]"#.utf8))
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode([Timestamp].self, from: Data("[1618822699]".utf8))
        }
    }

    @Test func eventsSurviveAJSONRoundTrip() throws {
        let history = Given.cancelledFromAccepted.history + [Fixture.rejected(version: 3)]
        let data = try JSONEncoder().encode(history)
        #expect(try JSONDecoder().decode([OrderEvent].self, from: data) == history)
        let order = try #require(OrderDecider.fold(history))
        #expect(try JSONDecoder().decode(Order.self, from: JSONEncoder().encode(order)) == order)
    }
}
