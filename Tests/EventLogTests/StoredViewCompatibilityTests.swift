import EventLog
import OrderDomain
import Testing

/// Read models written before `Order.errors` carried `reason` and `actualVersion` keep
/// decoding, and their orders' errors get both: a view stores the events, not the order,
/// and the ErrorEvents' DETAILS always held them.
@Suite struct StoredViewCompatibilityTests {
    static let orderId = "f1fc51d3-cfab-581d-bb77-68fd68934b8d"

    /// Byte for byte what the version before the fields stored (from its readmodel.sqlite)
    /// after: place; complete at 1 (refused); accept at 1; cancel at 1 (stale).
    static let storedBeforeTheFields = #"""
        {"orderId":"f1fc51d3-cfab-581d-bb77-68fd68934b8d","events":[{"type":"OrderPlacedEvent","details":{"commandId":"11111111-1111-4111-8111-111111111111","createdDate":"2026-11-28T07:11:21.126057Z","orderId":"f1fc51d3-cfab-581d-bb77-68fd68934b8d","price":"123.45","riderId":"63770803-38f4-4594-aec2-4c74918f7165","route":[{"address":"A","lat":50.5,"lon":30.4},{"address":"B","lat":50.4,"lon":30.5}],"version":1},"position":"v1:0.2.0.0.0.0.0.0.0.0"},{"type":"ErrorEvent","details":{"actualVersion":1,"commandId":"22222222-2222-4222-8222-222222222222","commandType":"CompleteOrder","createdDate":"2026-11-28T07:11:21.429326Z","errorMessage":"Order in status PLACED can't be completed","expectedVersion":1,"orderId":"f1fc51d3-cfab-581d-bb77-68fd68934b8d","reason":"TRANSITION_NOT_ALLOWED","version":1},"position":"v1:0.4.0.0.0.0.0.0.0.0"},{"type":"OrderAcceptedEvent","details":{"commandId":"33333333-3333-4333-8333-333333333333","createdDate":"2026-11-28T07:11:21.483641Z","driverId":"2c068a1a-9263-433f-a70b-067d51b98378","orderId":"f1fc51d3-cfab-581d-bb77-68fd68934b8d","version":2},"position":"v1:0.6.0.0.0.0.0.0.0.0"},{"type":"ErrorEvent","details":{"actualVersion":2,"commandId":"44444444-4444-4444-8444-444444444444","commandType":"CancelOrder","createdDate":"2026-11-28T07:11:21.528378Z","errorMessage":"Actual version 2 doesn't match expected version 1","expectedVersion":1,"orderId":"f1fc51d3-cfab-581d-bb77-68fd68934b8d","reason":"VERSION_MISMATCH","version":2},"position":"v1:0.8.0.0.0.0.0.0.0.0"}]}
        """#

    @Test func aViewStoredBeforeTheFieldsDecodesWithThem() throws {
        let view = try ReadModelCodec.decodeView(Array(Self.storedBeforeTheFields.utf8))
        let order = try #require(view.order)
        #expect(order.version == 2)
        #expect(order.status == .accepted)
        #expect(order.errors.map(\.commandId) == ["22222222-2222-4222-8222-222222222222", "44444444-4444-4444-8444-444444444444"])
        #expect(order.errors.map(\.reason) == [.transitionNotAllowed, .versionMismatch])
        #expect(order.errors.map(\.expectedVersion) == [1, 1])
        #expect(order.errors.map(\.actualVersion) == [1, 2])
        // And it is stored again as it was: the stored form did not change.
        #expect(String(decoding: ReadModelCodec.encode(view), as: UTF8.self) == Self.storedBeforeTheFields)
    }

    /// An ErrorEvent in the seed's form, without reason and actualVersion: the order's
    /// error takes the event's (unchanged) version, and the reason the decider would have
    /// given, as it checks the version before the status.
    @Test func errorEventsWithoutReasonOrActualVersionStillDecode() throws {
        let seedForm = Self.storedBeforeTheFields
            .replacing(#""actualVersion":1,"#, with: "").replacing(#""actualVersion":2,"#, with: "")
            .replacing(#""reason":"TRANSITION_NOT_ALLOWED","#, with: "").replacing(#""reason":"VERSION_MISMATCH","#, with: "")
        #expect(!seedForm.contains("reason") && !seedForm.contains("actualVersion"))
        let order = try #require(try ReadModelCodec.decodeView(Array(seedForm.utf8)).order)
        #expect(order.errors.map(\.reason) == [.transitionNotAllowed, .versionMismatch])
        #expect(order.errors.map(\.actualVersion) == [1, 2])
    }
}
