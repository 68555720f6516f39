import EventLog
import Testing

/// The aggregator's incremental row encoding must write exactly what encoding the whole
/// row writes (readers key their analysis on the bytes, and ksqlDB's rows look the same).
@Suite struct AggregateListsTests {
    static let awkward = [
        "", "plain", #"{"orderId":"x","price":"12.50"}"#, "quote \" backslash \\ slash /", "tab\tnewline\ncr\r",
        "control \u{01}\u{1F}", "unicode é ☃ 🚕", #"{"nested":"{\"a\":1}"}"#,
    ]

    @Test func incrementalRowsMatchWholeRows() throws {
        var entries: [LogFormat.Entry] = []
        var lists = LogFormat.AggregateLists()
        #expect(lists.encoded == LogFormat.encode(LogFormat.Aggregate(entries: [])))
        for (i, details) in Self.awkward.enumerated() {
            let entry = LogFormat.Entry(
                type: i.isMultiple(of: 2) ? LogFormat.command : LogFormat.event, subType: "Sub\"Type\(i)", details: details)
            entries.append(entry)
            lists.append(entry)
            let whole = LogFormat.encode(LogFormat.Aggregate(entries: entries))
            #expect(lists.encoded == whole)
            #expect(LogFormat.AggregateLists(entries: entries).encoded == whole)
            #expect(try LogFormat.decodeAggregate(lists.encoded).entries() == entries)
        }
    }
}
