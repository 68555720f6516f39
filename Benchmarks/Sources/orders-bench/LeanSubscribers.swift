import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Synchronization

/// StreamEvents subscribers on a lean gRPC client: swift-nio-http2's `NIOHTTP2Handler`
/// (frames, HPACK, SETTINGS/PING, stream state) with one handler per connection that reads
/// the gRPC 5-byte message framing and walks the protobuf wire format only as far as the
/// latency needs (the event's `created_date` and `command_id`, the `caught_up` marker).
///
/// Why: grpc-swift-2 spends ~35 µs of client CPU per received message (async sequences,
/// a child channel and a task per stream, a full protobuf decode), so one event × 1,000
/// subscribers costs ~35 ms on the client's single core, more than the server's fan-out.
/// Here a message costs a frame parse and a short wire walk, on the connection's event loop.
///
/// Still a real gRPC client: it sends the gRPC request headers (`content-type:
/// application/grpc`, `te: trailers`, `grpc-timeout`), a framed `StreamEventsRequest`,
/// checks the response headers (`:status` 200, a gRPC content type), treats trailers or a
/// reset before `stop()` as an error (with the `grpc-status`), refuses compressed messages
/// (it never offered `grpc-accept-encoding`), counts every delivered event, and gives the
/// server stream and connection flow-control credit back as it reads.
final class LeanSubscribers: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let connections: [(channel: any Channel, handler: NIOLoopBound<LeanSubscriberHandler>)]

    private init(group: MultiThreadedEventLoopGroup, connections: [(any Channel, NIOLoopBound<LeanSubscriberHandler>)]) {
        self.group = group
        self.connections = connections.map { (channel: $0.0, handler: $0.1) }
    }

    /// Connects `connections` HTTP/2 connections and opens `subscribers` StreamEvents calls
    /// (`request`, already serialized) spread evenly over them.
    static func start(
        target: String, subscribers: Int, connections: Int, threads: Int, request: [UInt8], tally: StreamTally
    ) async throws -> LeanSubscribers {
        let (host, port) = try parseTarget(target)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        var opened: [(any Channel, NIOLoopBound<LeanSubscriberHandler>)] = []
        do {
            let perConnection = (subscribers + connections - 1) / connections
            var first = 0
            while first < subscribers {
                let count = min(perConnection, subscribers - first)
                let base = first
                let handler = LeanSubscriberHandler(
                    firstSubscriber: base, count: count, authority: "\(host):\(port)", request: request, tally: tally)
                let channel = try await ClientBootstrap(group: group)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandlers([
                                NIOHTTP2Handler(mode: .client, initialSettings: [
                                    HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
                                    HTTP2Setting(parameter: .initialWindowSize, value: LeanSubscriberHandler.window),
                                    HTTP2Setting(parameter: .enablePush, value: 0),
                                ]),
                                handler,
                            ])
                        }
                    }
                    .connect(host: host, port: port).get()
                try await channel.eventLoop.submit { handler.open() }.get()
                let bound = try await channel.eventLoop.submit { NIOLoopBound(handler, eventLoop: channel.eventLoop) }.get()
                opened.append((channel, bound))
                first += count
            }
        } catch {
            for (channel, _) in opened { try? await channel.close() }
            try? await group.shutdownGracefully()
            throw error
        }
        return LeanSubscribers(group: group, connections: opened)
    }

    /// Stops every subscriber (from then on, streams ending are not errors), closes the
    /// connections and returns each subscriber's measurements.
    func stop() async -> [SubscriberResult] {
        var results: [SubscriberResult] = []
        for c in connections {
            let handler = c.handler
            if let r = try? await c.channel.eventLoop.submit({ handler.value.stop() }).get() {
                results += r
            }
            try? await c.channel.close()
        }
        try? await group.shutdownGracefully()
        return results
    }
}

/// What one subscriber measured: latencies in µs, events counted, last receipt (µs since the epoch).
struct SubscriberResult: Sendable {
    var send: [UInt32] = []
    var append: [UInt32] = []
    var count = 0
    var last: Int64 = 0
}

/// Shared by every subscriber (either client): progress counters and errors.
final class StreamTally: Sendable {
    let caughtUp = SharedCounter()
    let received = SharedCounter()
    let errors = ErrorTally()
    /// The request_id prefix of this run's orders; other events are not measured.
    let prefix: [UInt8]
    let expectedPerSubscriber: Int

    init(prefix: String, expectedPerSubscriber: Int) {
        self.prefix = Array(prefix.utf8)
        self.expectedPerSubscriber = expectedPerSubscriber
    }
}

/// The subscribers of one connection, after `NIOHTTP2Handler` in its pipeline. Stream i of
/// this connection has id 2i + 1 (client streams are odd and opened in order), so a frame
/// finds its subscriber without a table.
///
/// - Important: used only on its channel's event loop (hence `@unchecked Sendable`; it is
///   handed out wrapped in `NIOLoopBound`).
final class LeanSubscriberHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Stream and connection receive window (16 MiB, as the grpc-swift-2 client is configured).
    static let window = 16 << 20
    static let path = "/ridehailing.orders.v1.OrderService/StreamEvents"

    private struct Subscriber {
        var result = SubscriberResult()
        /// Bytes of a message split across DATA frames.
        var partial: ByteBuffer?
        var sawHeaders = false
        var sawCaughtUp = false
        var ended = false
        /// Received bytes not yet given back with WINDOW_UPDATE.
        var unacknowledged = 0
    }

    private let firstSubscriber: Int
    private let authority: String
    private let request: [UInt8]
    private let tally: StreamTally
    private var subscribers: [Subscriber]
    private var context: ChannelHandlerContext?
    private var connectionUnacknowledged = 0
    private var stopped = false

    init(firstSubscriber: Int, count: Int, authority: String, request: [UInt8], tally: StreamTally) {
        self.firstSubscriber = firstSubscriber
        self.authority = authority
        self.request = request
        self.tally = tally
        var s = Subscriber()
        s.result.send.reserveCapacity(tally.expectedPerSubscriber)
        s.result.append.reserveCapacity(tally.expectedPerSubscriber)
        subscribers = Array(repeating: s, count: count)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Raises the connection window (the spec starts it at 64 KiB whatever SETTINGS say)
    /// and opens every stream: HEADERS, then the framed request with END_STREAM.
    func open() {
        guard let context else { return }
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: Self.window - 65_535))),
            promise: nil)
        let headers = HPACKHeaders([
            (":method", "POST"), (":scheme", "http"), (":path", Self.path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "3600S"),
            ("user-agent", "orders-bench-lean"),
        ])
        var body = context.channel.allocator.buffer(capacity: 5 + request.count)
        body.writeInteger(UInt8(0))
        body.writeInteger(UInt32(request.count))
        body.writeBytes(request)
        for i in subscribers.indices {
            let id = HTTP2StreamID(2 * i + 1)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
            context.write(
                wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(body), endStream: true)))),
                promise: nil)
        }
        context.flush()
    }

    /// From now on streams ending is expected; returns what each subscriber measured.
    func stop() -> [SubscriberResult] {
        stopped = true
        return subscribers.map(\.result)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let id = Int(Int32(frame.streamID))
        guard id > 0 else {
            if case .goAway(_, let code, _) = frame.payload, !stopped { tally.errors.add(kind: "goaway-\(code)") }
            return
        }
        let i = (id - 1) / 2
        guard id % 2 == 1, i < subscribers.count else { return }
        switch frame.payload {
        case .headers(let h):
            headers(h.headers, endStream: h.endStream, subscriber: i)
        case .data(let d):
            guard case .byteBuffer(var bytes) = d.data else { return }
            let flowControlled = bytes.readableBytes + (d.paddingBytes ?? 0)
            messages(in: &bytes, subscriber: i)
            giveBack(flowControlled, subscriber: i, streamID: frame.streamID, context: context)
            if d.endStream { ended(i, "ended-without-trailers") }
        case .rstStream(let code):
            ended(i, "rst-\(code)")
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !stopped { tally.errors.add(kind: "connection-\(type(of: error))") }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !stopped {
            for i in subscribers.indices where !subscribers[i].ended { ended(i, "connection-closed") }
        }
        context.fireChannelInactive()
    }

    // MARK: Frames

    private func headers(_ headers: HPACKHeaders, endStream: Bool, subscriber i: Int) {
        if !subscribers[i].sawHeaders {
            subscribers[i].sawHeaders = true
            guard headers.first(name: ":status") == "200" else {
                return ended(i, "http-status-\(headers.first(name: ":status") ?? "none")")
            }
            guard let type = headers.first(name: "content-type"), type.hasPrefix("application/grpc") else {
                return ended(i, "content-type-\(headers.first(name: "content-type") ?? "none")")
            }
            // Trailers-Only: the status in the only HEADERS frame.
            if endStream { ended(i, "grpc-status-\(headers.first(name: "grpc-status") ?? "none")") }
        } else {
            ended(i, "grpc-status-\(headers.first(name: "grpc-status") ?? "none")")
        }
    }

    /// The stream is over before `stop()`: an error for this benchmark, whatever the status
    /// (a subscription is meant to last for the whole run).
    private func ended(_ i: Int, _ kind: String) {
        guard !subscribers[i].ended else { return }
        subscribers[i].ended = true
        if !stopped { tally.errors.add(kind: kind) }
    }

    private func messages(in bytes: inout ByteBuffer, subscriber i: Int) {
        if var partial = subscribers[i].partial {
            subscribers[i].partial = nil
            partial.writeBuffer(&bytes)
            bytes = partial
        }
        while bytes.readableBytes >= 5 {
            let flag = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self)!
            let length = Int(bytes.getInteger(at: bytes.readerIndex + 1, as: UInt32.self)!)
            guard bytes.readableBytes >= 5 + length else { break }
            if flag != 0 {
                ended(i, "compressed-message")
                bytes.moveReaderIndex(forwardBy: 5 + length)
                continue
            }
            let now = wallMicros()
            let kind = bytes.withUnsafeReadableBytes { raw in
                ResponseWire.scan(UnsafeRawBufferPointer(rebasing: raw[5..<(5 + length)]), prefix: tally.prefix)
            }
            bytes.moveReaderIndex(forwardBy: 5 + length)
            switch kind {
            case .event(let created, let sent?):
                subscribers[i].result.send.append(UInt32(clamping: max(1, now - sent)))
                subscribers[i].result.append.append(UInt32(clamping: max(1, now - created)))
                subscribers[i].result.count += 1
                subscribers[i].result.last = now
                tally.received.add()
            case .event(_, nil), .heartbeat:
                break
            case .caughtUp:
                if !subscribers[i].sawCaughtUp {
                    subscribers[i].sawCaughtUp = true
                    tally.caughtUp.add()
                }
            case .malformed:
                if !stopped { tally.errors.add(kind: "malformed-message") }
            }
        }
        if bytes.readableBytes > 0 { subscribers[i].partial = bytes }
    }

    /// Flow control: hands received bytes back once half a window is outstanding.
    private func giveBack(_ n: Int, subscriber i: Int, streamID: HTTP2StreamID, context: ChannelHandlerContext) {
        connectionUnacknowledged += n
        subscribers[i].unacknowledged += n
        var wrote = false
        if subscribers[i].unacknowledged >= Self.window / 2, !subscribers[i].ended {
            let increment = subscribers[i].unacknowledged
            subscribers[i].unacknowledged = 0
            context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
            wrote = true
        }
        if connectionUnacknowledged >= Self.window / 2 {
            let increment = connectionUnacknowledged
            connectionUnacknowledged = 0
            context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
            wrote = true
        }
        if wrote { context.flush() }
    }
}

/// Just enough of the protobuf wire format of `StreamEventsResponse`:
/// `oneof kind { OrderEvent event = 1; CaughtUp caught_up = 2; Heartbeat heartbeat = 3; }`,
/// and of `OrderEvent`: `google.protobuf.Timestamp created_date = 3; string command_id = 6;`.
/// Other fields are skipped by wire type, as any protobuf parser would.
enum ResponseWire {
    enum Kind: Equatable {
        /// created_date in µs since the epoch; the send time carried in command_id when it
        /// has this run's prefix (nil for anybody else's event).
        case event(created: Int64, sent: Int64?)
        case caughtUp, heartbeat
        case malformed
    }

    static func scan(_ message: UnsafeRawBufferPointer, prefix: [UInt8]) -> Kind {
        var r = Reader(message)
        var kind = Kind.heartbeat
        while !r.atEnd {
            guard let (field, wire) = r.tag() else { return .malformed }
            switch (field, wire) {
            case (1, 2):
                guard let event = r.bytes() else { return .malformed }
                guard let parsed = Self.event(event, prefix: prefix) else { return .malformed }
                kind = parsed
            case (2, 2):
                guard r.bytes() != nil else { return .malformed }
                kind = .caughtUp
            case (3, 2):
                guard r.bytes() != nil else { return .malformed }
                kind = .heartbeat
            default:
                guard r.skip(wire) else { return .malformed }
            }
        }
        return kind
    }

    private static func event(_ event: UnsafeRawBufferPointer, prefix: [UInt8]) -> Kind? {
        var r = Reader(event)
        var created: Int64 = 0
        var sent: Int64?
        while !r.atEnd {
            guard let (field, wire) = r.tag() else { return nil }
            switch (field, wire) {
            case (3, 2):
                guard let ts = r.bytes() else { return nil }
                var t = Reader(ts)
                var seconds: Int64 = 0
                var nanos: Int64 = 0
                while !t.atEnd {
                    guard let (f, w) = t.tag() else { return nil }
                    if f == 1, w == 0 {
                        guard let v = t.varint() else { return nil }
                        seconds = Int64(bitPattern: v)
                    } else if f == 2, w == 0 {
                        guard let v = t.varint() else { return nil }
                        nanos = Int64(Int32(truncatingIfNeeded: v))
                    } else if !t.skip(w) {
                        return nil
                    }
                }
                created = seconds * 1_000_000 + nanos / 1000
            case (6, 2):
                guard let id = r.bytes() else { return nil }
                sent = sendTime(id, prefix: prefix)
            default:
                guard r.skip(wire) else { return nil }
            }
        }
        return .event(created: created, sent: sent)
    }

    /// request_id = prefix, 8 hex digits, "-", the send time in µs (decimal).
    private static func sendTime(_ id: UnsafeRawBufferPointer, prefix: [UInt8]) -> Int64? {
        guard id.count > prefix.count + 9, id.starts(with: prefix) else { return nil }
        var v: Int64 = 0
        for b in id[(prefix.count + 9)...] {
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9"), v < Int64.max / 10 - 10 else { return nil }
            v = v * 10 + Int64(b - UInt8(ascii: "0"))
        }
        return v
    }

    struct Reader {
        let buffer: UnsafeRawBufferPointer
        var i = 0
        init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

        var atEnd: Bool { i >= buffer.count }

        mutating func varint() -> UInt64? {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while i < buffer.count, shift < 64 {
                let b = buffer[i]
                i += 1
                v |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return v }
                shift += 7
            }
            return nil
        }

        mutating func tag() -> (Int, Int)? {
            guard let t = varint(), t >> 3 > 0 else { return nil }
            return (Int(t >> 3), Int(t & 7))
        }

        mutating func bytes() -> UnsafeRawBufferPointer? {
            guard let n = varint(), n <= UInt64(buffer.count - i) else { return nil }
            defer { i += Int(n) }
            return UnsafeRawBufferPointer(rebasing: buffer[i..<(i + Int(n))])
        }

        mutating func skip(_ wire: Int) -> Bool {
            switch wire {
            case 0: return varint() != nil
            case 1:
                guard buffer.count - i >= 8 else { return false }
                i += 8
                return true
            case 2: return bytes() != nil
            case 5:
                guard buffer.count - i >= 4 else { return false }
                i += 4
                return true
            default: return false
            }
        }
    }
}
