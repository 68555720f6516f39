import SwiftProtobuf
import Testing

@testable import GRPCWire

@Suite struct MessageDeframerTests {
    private func messages(_ chunks: [[UInt8]], max: Int = 1 << 20) throws -> ([FramedMessage], partial: Bool) {
        var deframer = MessageDeframer(maxMessageBytes: max)
        var out: [FramedMessage] = []
        for chunk in chunks {
            try deframer.process(chunk) { out.append($0) }
        }
        return (out, deframer.hasPartialMessage)
    }

    @Test func oneMessageInOneChunk() throws {
        let (out, partial) = try messages([MessageFraming.frame([1, 2, 3])])
        #expect(out == [FramedMessage(compressed: false, bytes: [1, 2, 3])])
        #expect(!partial)
    }

    @Test func messageSplitAcrossChunksAtEveryByte() throws {
        let payload = (0..<300).map { UInt8(truncatingIfNeeded: $0) }
        let framed = MessageFraming.frame(payload)
        // Every possible split point, including inside the 5-byte header.
        for split in 1..<framed.count {
            let (out, partial) = try messages([Array(framed[..<split]), Array(framed[split...])])
            #expect(out == [FramedMessage(compressed: false, bytes: payload)], "split at \(split)")
            #expect(!partial)
        }
        // And one byte at a time.
        let (out, _) = try messages(framed.map { [$0] })
        #expect(out.map(\.bytes) == [payload])
    }

    @Test func severalMessagesInOneChunk() throws {
        let chunk = MessageFraming.frame([1]) + MessageFraming.frame([], compressed: true) + MessageFraming.frame([2, 3])
        let (out, _) = try messages([chunk])
        #expect(out == [
            FramedMessage(compressed: false, bytes: [1]),
            FramedMessage(compressed: true, bytes: []),
            FramedMessage(compressed: false, bytes: [2, 3]),
        ])
    }

    @Test func zeroLengthMessages() throws {
        let (out, partial) = try messages([MessageFraming.frame([]), MessageFraming.frame([])])
        #expect(out.count == 2)
        #expect(out.allSatisfy { $0.bytes.isEmpty })
        #expect(!partial)
        // A zero-length message whose header is split.
        let (split, _) = try messages([[0, 0, 0], [0, 0]])
        #expect(split == [FramedMessage(compressed: false, bytes: [])])
    }

    @Test func truncatedMessageIsReportedAsPartial() throws {
        let framed = MessageFraming.frame([1, 2, 3, 4])
        let (out, partial) = try messages([Array(framed.dropLast())])
        #expect(out.isEmpty)
        #expect(partial)
        let (headerOnly, headerPartial) = try messages([[0, 0]])
        #expect(headerOnly.isEmpty)
        #expect(headerPartial)
    }

    @Test func oversizeIsRejectedOnTheLengthPrefix() throws {
        var deframer = MessageDeframer(maxMessageBytes: 1024)
        // Only the header of a 16 MiB message: rejected before any body byte arrives.
        let header: [UInt8] = [0, 0x01, 0x00, 0x00, 0x00]
        #expect(throws: DeframeError.messageTooLarge(length: 16 << 20, limit: 1024)) {
            try deframer.process(header) { _ in Issue.record("no message expected") }
        }
        // Exactly the limit is fine.
        let (out, _) = try messages([MessageFraming.frame([UInt8](repeating: 7, count: 1024))], max: 1024)
        #expect(out.count == 1)
    }

    /// A length prefix alone does not make the server reserve the announced size: 500
    /// streams announcing 4 MiB each took 1.7 GB of address space before.
    @Test func anAnnouncedLengthIsNotReservedUpFront() throws {
        var deframer = MessageDeframer(maxMessageBytes: 4 << 20)
        try deframer.process([0, 0x00, 0x40, 0x00, 0x00]) { _ in Issue.record("no message expected") }
        #expect(deframer.body.capacity <= 128 * 1024)
        try deframer.process([UInt8](repeating: 1, count: 4 << 20)) { #expect($0.bytes.count == 4 << 20) }
    }

    @Test func invalidFlagIsRejected() {
        var deframer = MessageDeframer(maxMessageBytes: 1024)
        #expect(throws: DeframeError.invalidFlag(2)) {
            try deframer.process([2, 0, 0, 0, 0]) { _ in }
        }
    }
}

@Suite struct PercentEncodingTests {
    @Test func printableAsciiIsUnchanged() {
        #expect(PercentEncoding.encode("plain message 123 ~!") == "plain message 123 ~!")
    }

    @Test func specialStatusMessage() {
        // interop special_status_message.
        let message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"
        let encoded = PercentEncoding.encode(message)
        #expect(encoded == "%09%0Atest with whitespace%0D%0Aand Unicode BMP %E2%98%BA and non-BMP %F0%9F%98%88%09%0A")
        #expect(PercentEncoding.decode(encoded) == message)
    }

    @Test func percentItselfIsEscaped() {
        #expect(PercentEncoding.encode("100%") == "100%25")
        #expect(PercentEncoding.decode("100%25") == "100%")
    }

    @Test func decodingIsLenient() {
        #expect(PercentEncoding.decode("bad %zz and %4") == "bad %zz and %4")
    }
}

@Suite struct GRPCTimeoutTests {
    @Test func units() {
        #expect(GRPCTimeout.parse("5H") == .seconds(5 * 3600))
        #expect(GRPCTimeout.parse("2M") == .seconds(120))
        #expect(GRPCTimeout.parse("1S") == .seconds(1))
        #expect(GRPCTimeout.parse("100m") == .milliseconds(100))
        #expect(GRPCTimeout.parse("250u") == .microseconds(250))
        #expect(GRPCTimeout.parse("99999999n") == .nanoseconds(99_999_999))
        #expect(GRPCTimeout.parse("0m") == .zero)
    }

    @Test func malformed() {
        for bad in ["", "S", "5", "123456789S", "10x", "-1S", "1.5S", " 1S", "1s"] {
            #expect(GRPCTimeout.parse(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct StatusTests {
    @Test func codeNames() {
        #expect(GRPCStatus.Code.ok.name == "OK")
        #expect(GRPCStatus.Code.invalidArgument.name == "INVALID_ARGUMENT")
        #expect(GRPCStatus.Code.internalError.name == "INTERNAL")
        #expect(GRPCStatus.Code.unauthenticated.rawValue == 16)
        #expect(GRPCStatus.Code(rawValue: 42).name == "CODE_42")
        #expect(GRPCStatus(.notFound, "no order").description == "NOT_FOUND: no order")
    }

    struct SomeFailure: Error {}

    @Test func errorMapping() {
        #expect(GRPCStatus(mapping: GRPCStatus(.aborted, "conflict")).code == .aborted)
        #expect(GRPCStatus(mapping: GRPCStatus(.aborted, "conflict")).message == "conflict")
        #expect(GRPCStatus(mapping: CancellationError()).code == .cancelled)
        let unknown = GRPCStatus(mapping: SomeFailure())
        #expect(unknown.code == .unknown)
    }

    @Test func trailersCarryStatusMessageAndDetails() throws {
        var info = Google_Rpc_ErrorInfo()
        info.reason = "STOCK_LOW"
        let detail = try Google_Protobuf_Any(message: info)
        let status = GRPCStatus(.failedPrecondition, "caf\u{e9} 100%", details: [detail], trailers: ["x-retry": "no"])
        let headers = ResponseHeaders.trailers(status, metadata: ["x-app": "1", "grpc-status": "0"], trailersOnly: nil)
        let pairs = Dictionary(headers.pairs, uniquingKeysWith: { first, _ in first })
        #expect(pairs["grpc-status"] == "9")
        #expect(pairs["grpc-message"] == "caf%C3%A9 100%25")
        #expect(pairs["x-app"] == "1")
        #expect(pairs["x-retry"] == "no")
        // User metadata cannot override the transport's own trailers.
        #expect(headers.pairs.filter { $0.0 == "grpc-status" }.count == 1)
        let bin = try #require(pairs["grpc-status-details-bin"])
        let rich = try Google_Rpc_Status(serializedBytes: try #require(Base64.decode(bin.utf8)))
        #expect(rich.code == 9)
        #expect(rich.message == "caf\u{e9} 100%")
        #expect(try Google_Rpc_ErrorInfo(unpackingAny: rich.details[0]).reason == "STOCK_LOW")
    }

    @Test func trailersOnlyHasStatusAndContentType() {
        let headers = ResponseHeaders.trailers(GRPCStatus(.unimplemented, "nope"), metadata: [:], trailersOnly: .grpcJSON)
        #expect(headers.pairs.map(\.0) == [":status", "content-type", "grpc-status", "grpc-message"])
        #expect(headers.pairs[1].1 == "application/grpc+json")
    }

    @Test func okTrailersAreMinimal() {
        #expect(ResponseHeaders.trailers(.ok, metadata: [:], trailersOnly: nil).pairs.map(\.0) == ["grpc-status"])
    }
}

@Suite struct MetadataTests {
    @Test func base64AcceptsPaddedAndUnpadded() {
        #expect(Base64.decode("q6ur".utf8) == [0xAB, 0xAB, 0xAB])
        #expect(Base64.decode("AQ==".utf8) == [1])
        #expect(Base64.decode("AQ".utf8) == [1])
        #expect(Base64.decode("AQI=".utf8) == [1, 2])
        #expect(Base64.decode("AQI".utf8) == [1, 2])
        #expect(Base64.decode("".utf8) == [])
    }

    @Test func base64RejectsGarbage() {
        #expect(Base64.decode("A".utf8) == nil)
        #expect(Base64.decode("A*==".utf8) == nil)
        #expect(Base64.decode("AQ==AQ".utf8) == nil)
    }

    @Test func base64EncodesUnpadded() {
        #expect(Base64.encode([1]) == "AQ")
        #expect(Base64.encode([1, 2]) == "AQI")
        #expect(Base64.encode([0xAB, 0xAB, 0xAB]) == "q6ur")
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 37) }
            #expect(Base64.decode(Base64.encode(bytes).utf8) == bytes)
        }
    }

    @Test func commaSeparatedBinaryValuesAreSeparate() {
        #expect(Base64.decodeHeaderValues("AQ==, Ag".utf8) == [[1], [2]])
        #expect(Base64.decodeHeaderValues("AQ".utf8) == [[1]])
        #expect(Base64.decodeHeaderValues("AQ,%%".utf8) == nil)
    }

    @Test func namesAreLowercasedAndBinaryKeysHoldBytes() {
        var metadata: Metadata = ["X-Trace": "abc"]
        metadata.add("X-Blob-Bin", binary: [1, 2])
        metadata.add("x-text-bin", "hi")
        #expect(metadata[first: "x-trace"] == "abc")
        #expect(metadata[first: "X-TRACE"] == "abc")
        #expect(metadata.values("x-blob-bin") == [.binary([1, 2])])
        #expect(metadata.values("x-text-bin") == [.binary(Array("hi".utf8))])
        #expect(metadata.count == 3)
    }

    @Test func binaryMetadataIsSentAsUnpaddedBase64() {
        var headers = HTTP2Headers()
        ResponseHeaders.append(["x-blob-bin": .binary([1]), ":authority": "evil", "te": "x"], to: &headers)
        #expect(headers.pairs.map { "\($0.0)=\($0.1)" } == ["x-blob-bin=AQ"])
    }
}

@Suite struct GzipTests {
    @Test func roundTrip() throws {
        let input = Array(String(repeating: "hello gzip ", count: 1000).utf8)
        let compressed = Gzip.compress(input)
        #expect(compressed.count < input.count / 10)
        #expect(compressed.starts(with: [0x1F, 0x8B]))  // the gzip magic
        #expect(try Gzip.decompress(compressed, limit: 1 << 20) == input)
        #expect(try Gzip.decompress(Gzip.compress([]), limit: 10) == [])
    }

    @Test func decompressionIsBounded() {
        let bomb = Gzip.compress([UInt8](repeating: 0, count: 10 << 20))
        #expect(throws: Gzip.Failure.tooLarge(limit: 1 << 20)) {
            try Gzip.decompress(bomb, limit: 1 << 20)
        }
    }

    @Test func corruptInputFails() {
        #expect(throws: (any Error).self) { try Gzip.decompress([1, 2, 3, 4], limit: 100) }
        let truncated = Array(Gzip.compress(Array("abcdef".utf8)).dropLast(4))
        #expect(throws: (any Error).self) { try Gzip.decompress(truncated, limit: 100) }
    }
}

@Suite struct MessageQueueTests {
    @Test func keepsOrderAcrossTheInlineFrontAndTheArray() {
        var queue = MessageQueue<Int>()
        #expect(queue.isEmpty && queue.count == 0 && queue.popFirst() == nil)
        for i in 0..<40 { queue.append(i) }
        #expect(queue.count == 40)
        var popped: [Int] = []
        for _ in 0..<25 { popped.append(queue.popFirst()!) }
        // Appends after pops (and after compaction) still come out last.
        for i in 40..<45 { queue.append(i) }
        while let next = queue.popFirst() { popped.append(next) }
        #expect(popped == Array(0..<45))
        #expect(queue.isEmpty)
    }

    @Test func modifyFirstAndRemoveAll() {
        var queue = MessageQueue<Int>()
        queue.append(1)
        queue.append(2)
        queue.modifyFirst { $0 += 10 }
        queue.removeFirst()
        #expect(queue.popFirst() == 2)
        queue.append(3)
        queue.append(4)
        queue.removeAll()
        #expect(queue.isEmpty && queue.count == 0)
        queue.append(5)
        #expect(queue.popFirst() == 5)
    }
}

@Suite struct ContentTypeTests {
    private func parse(_ text: String) -> GRPCContentType? {
        Array(text.utf8).withUnsafeBytes { GRPCConnectionHandler.parseContentType($0) }
    }

    @Test func grpcTypesInAnyCaseWithAnySubtype() {
        #expect(parse("application/grpc") == .grpc)
        #expect(parse("application/grpc+proto") == .grpcProto)
        #expect(parse("application/grpc+json") == .grpcJSON)
        #expect(parse("application/grpc; charset=utf-8") == .grpc)
        // RFC 9110: media types are case-insensitive.
        #expect(parse("Application/gRPC") == .grpc)
        #expect(parse("APPLICATION/GRPC+PROTO") == .grpcProto)
        #expect(parse("application/grpc+JSON") == .grpcJSON)
        // Another codec's name: served as protobuf, as grpc-go and grpc-java do.
        #expect(parse("application/grpc+x-custom") == .grpc)
        #expect(parse("application/grpc+") == .grpc)
    }

    @Test func otherTypesAreNotGRPC() {
        #expect(parse("application/grpcx") == nil)
        #expect(parse("application/grp") == nil)
        #expect(parse("text/plain") == nil)
        #expect(parse("application/json") == nil)
        #expect(parse("") == nil)
    }
}
