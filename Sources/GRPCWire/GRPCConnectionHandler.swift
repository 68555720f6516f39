import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Asks a connection to stop taking new calls (see ``GRPCServer/beginGracefulShutdown()``).
struct GracefulShutdownEvent: Sendable {
    let gracePeriod: Duration
}

/// One HTTP/2 connection: owns its `NGHTTP2Session` and the calls on it.
///
/// Reading: every `channelRead` feeds the bytes to nghttp2, whose callbacks (the `h2…`
/// methods) build `ServerCall`s; calls that became ready are started after nghttp2 returns
/// (never from inside a callback). Writing: `flush()` pulls frames out of nghttp2 with
/// `mem_send`, once per read batch (`channelReadComplete`) or once per loop turn after a
/// handler produced output elsewhere (`scheduleFlush`), and stops while the socket is not
/// writable, so output waits inside nghttp2 (bounded by flow control) instead of piling up
/// in NIO.
///
/// - Important: everything here runs on the channel's event loop.
final class GRPCConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let runtime: ServerRuntime
    private var logger: Logger
    /// The nghttp2 session: created in handlerAdded, deleted in handlerRemoved.
    private(set) var session: NGHTTP2Session?
    private var context: ChannelHandlerContext?
    private var loop: (any EventLoop)?
    /// Open streams. A call leaves when nghttp2 closes its stream.
    private var calls: [Int32: ServerCall] = [:]
    /// Calls that became ready during the current `mem_recv`, started right after it.
    private var callsToStart: [ServerCall] = []
    /// Bytes of incomplete request messages the calls hold, against
    /// `Config.partialMessageBytesPerConnection`.
    private(set) var partialMessageBytes = 0
    /// The calls holding an incomplete message, oldest first: the first may always go on.
    private var callsWithPartialMessages: [ServerCall] = []
    private var inReadBatch = false
    private var flushScheduled = false
    private var draining = false
    private var closing = false
    private var peer = "unknown"
    private var taskExecutor: EventLoopTaskExecutor?
    private var lastActivity = NIODeadline.now()
    private var idleTask: RepeatedTask?
    private var graceTimer: Scheduled<Void>?
    /// Closes the connection unless the client's preface and SETTINGS arrive first
    /// (`Config.handshakeTimeout`).
    private var handshakeTimer: Scheduled<Void>?

    // Per-request allocation savers: nghttp2 reports many events per stream in a row, and
    // clients tend to repeat the same path and metadata on a connection.
    /// The call most recently looked up (saves a dictionary lookup per callback).
    private var lastCall: ServerCall?
    /// The previous request's path, reused when the next one has the same bytes.
    private var lastPath = ""
    /// The method `lastPath` resolved to (nil: unknown or not looked up yet), so a repeated
    /// path skips hashing it into `runtime.methods`.
    private var lastMethod: (path: String, method: RegisteredMethod?)?
    /// The previous request's metadata, shared (copy-on-write) while a request repeats it.
    private var previousMetadata = Metadata()
    /// How many leading metadata entries of the request being parsed equal `previousMetadata`'s.
    private var metadataMatched = 0
    /// The request being parsed has metadata that differs from `previousMetadata`.
    private var metadataDiverged = false

    init(runtime: ServerRuntime) {
        self.runtime = runtime
        self.logger = runtime.logger
    }

    deinit {
        // handlerRemoved normally deleted it; never leak the C session.
        session?.delete()
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loop = context.eventLoop
        if let address = context.channel.remoteAddress {
            peer = Self.describe(address)
        }
        logger[metadataKey: "peer"] = "\(peer)"
        do {
            session = try NGHTTP2Session(handler: self, settings: runtime.http2Settings)
        } catch {
            logger.error("Could not create the HTTP/2 session", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        if runtime.config.runsHandlersOnEventLoop {
            taskExecutor = EventLoopTaskExecutor(loop: context.eventLoop)
        }
        if let idle = runtime.config.idleTimeout {
            let interval = TimeAmount(idle)
            // Checked four times per period, so a connection lives at most 1.25 periods idle.
            let check = TimeAmount.nanoseconds(max(interval.nanoseconds / 4, 10_000_000))
            let this = NIOLoopBound(self, eventLoop: context.eventLoop)
            idleTask = context.eventLoop.scheduleRepeatedTask(initialDelay: check, delay: check) { _ in
                this.value.checkIdle(interval)
            }
        }
        if let limit = runtime.config.handshakeTimeout {
            let this = NIOLoopBound(self, eventLoop: context.eventLoop)
            handshakeTimer = context.eventLoop.scheduleTask(in: TimeAmount(limit)) {
                this.value.handshakeTimedOut(limit)
            }
        }
        if context.channel.isActive { flush() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelAllCalls()
        handshakeTimer?.cancel()
        handshakeTimer = nil
        idleTask?.cancel()
        idleTask = nil
        graceTimer?.cancel()
        graceTimer = nil
        session?.delete()
        session = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        // The server's SETTINGS go out at once: gRPC C-core clients wait for them.
        flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        cancelAllCalls()
        handshakeTimer?.cancel()
        handshakeTimer = nil
        idleTask?.cancel()
        idleTask = nil
        graceTimer?.cancel()
        graceTimer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session, !closing else { return }
        let buffer = unwrapInboundIn(data)
        inReadBatch = true
        lastActivity = .now()
        do {
            try buffer.withUnsafeReadableBytes { try session.receive($0) }
        } catch let error as NGHTTP2Error where error.isBadClientMagic {
            logger.debug("Not an HTTP/2 connection preface; closing")
            close()
            return
        } catch {
            logger.debug("HTTP/2 session failed; closing", metadata: ["error": "\(error)"])
            // nghttp2 may have queued a GOAWAY explaining why.
            inReadBatch = false
            flush()
            close()
            return
        }
        startReadyCalls()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inReadBatch = false
        flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flush() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? GracefulShutdownEvent {
            beginGracefulShutdown(gracePeriod: event.gracePeriod)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("Connection error; closing", metadata: ["error": "\(error)"])
        close()
    }

    // MARK: - Output

    /// Flushes at the end of this loop turn, coalescing output of every handler that
    /// finished in the meantime into one write.
    func scheduleFlush() {
        guard !inReadBatch, !flushScheduled, let loop else { return }
        flushScheduled = true
        loop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flush()
        }
    }

    /// Moves everything nghttp2 has queued to the socket while it is writable.
    private func flush() {
        guard let session, let context, !closing else { return }
        var wrote = false
        do {
            while session.wantsWrite, context.channel.isWritable {
                var buffer = context.channel.allocator.buffer(capacity: 16 * 1024)
                let more = try session.send(into: &buffer, limit: 64 * 1024)
                if buffer.readableBytes > 0 {
                    context.write(wrapOutboundOut(buffer), promise: nil)
                    wrote = true
                }
                if !more { break }
            }
        } catch {
            logger.debug("HTTP/2 session failed while sending; closing", metadata: ["error": "\(error)"])
            if wrote { context.flush() }
            close()
            return
        }
        if wrote { context.flush() }
        // nghttp2 wants neither input nor output once GOAWAY was exchanged and the last
        // stream is done, or after a fatal protocol error: the connection is over.
        if !session.wantsRead && !session.wantsWrite {
            close()
        }
    }

    private func close() {
        guard !closing, let context else { return }
        closing = true
        cancelAllCalls()
        context.close(promise: nil)
    }

    // MARK: - Lifecycle

    private func beginGracefulShutdown(gracePeriod: Duration) {
        guard !draining, !closing, let session, let loop else { return }
        draining = true
        // GOAWAY names the last stream we saw: those keep running, newer ones are refused.
        session.goAway(code: .noError)
        // Except the calls of methods that end at once (subscriptions, resumed elsewhere).
        for call in calls.values {
            if let status = call.method?.endingOnShutdown, !call.finished { call.fail(status) }
        }
        graceTimer = loop.assumeIsolated().scheduleTask(in: TimeAmount(gracePeriod)) {
            self.logger.debug("Grace period over; closing with calls in flight", metadata: ["calls": "\(self.calls.count)"])
            self.close()
        }
        flush()
    }

    private func handshakeTimedOut(_ limit: Duration) {
        handshakeTimer = nil
        guard !closing else { return }
        logger.debug("No HTTP/2 preface and SETTINGS within \(limit); closing")
        close()
    }

    private func checkIdle(_ timeout: TimeAmount) {
        guard !closing, calls.isEmpty, NIODeadline.now() - lastActivity >= timeout else { return }
        logger.debug("Connection idle; closing")
        session?.goAway(code: .noError)
        flush()
        close()
    }

    private func cancelAllCalls() {
        let open = calls
        calls.removeAll()
        lastCall = nil
        callsToStart.removeAll()
        for call in open.values {
            call.streamClosed(errorCode: HTTP2ErrorCode.cancel.rawValue)
        }
    }

    private func startReadyCalls() {
        guard !callsToStart.isEmpty else { return }
        var ready: [ServerCall] = []
        swap(&ready, &callsToStart)
        for call in ready {
            start(call)
        }
        ready.removeAll(keepingCapacity: true)
        swap(&ready, &callsToStart)
    }

    private func start(_ call: ServerCall) {
        guard !call.finished, !call.closed, !call.started, let method = call.method else { return }
        call.started = true
        let context = call.makeContext(peer: peer)
        let runtime = self.runtime
        var body = method.run
        if let immediate = method.immediate, runtime.interceptors.isEmpty {
            // The synchronous fast path: most calls end right here, with no task at all.
            do {
                guard let rest = try immediate(call, context) else {
                    call.finishOnLoop(.ok)
                    return
                }
                body = rest
            } catch {
                runtime.finish(call, context: context, error: error)
                return
            }
        }
        if let taskExecutor {
            // Runs the handler right here, synchronously, until its first suspension; it
            // later resumes on this connection's event loop. A handler that does not suspend
            // completes inside this read batch, with no thread hop at all.
            call.task = Task.immediate(executorPreference: taskExecutor) {
                await runtime.run(call: call, body: body, context: context)
            }
        } else {
            call.task = Task {
                await runtime.run(call: call, body: body, context: context)
            }
        }
    }

    // MARK: - Incomplete request messages

    /// Records that `call` now holds `bytes` of an incomplete request message (0: none, or
    /// none any more). When the connection's total falls, streams held back may go on.
    func partialMessage(of call: ServerCall, holds bytes: Int) {
        let before = call.partialBytes
        guard bytes != before else { return }
        call.partialBytes = bytes
        partialMessageBytes += bytes - before
        if before == 0 {
            callsWithPartialMessages.append(call)
            return
        }
        if bytes == 0 {
            callsWithPartialMessages.removeAll { $0 === call }
            if call.withheldBytes > 0 {
                session?.consumeStream(streamID: call.streamID, count: call.withheldBytes)
                call.withheldBytes = 0
            }
        }
        if bytes < before { releaseWithheldWindows() }
    }

    /// Whether `call` may be sent more of its incomplete message now: while the connection
    /// holds no more than its budget, and always for the oldest such call, so that messages
    /// larger than the budget, or many at once, still arrive, one after another.
    func mayBuffer(_ call: ServerCall) -> Bool {
        partialMessageBytes <= runtime.config.partialMessageBytesPerConnection
            || callsWithPartialMessages.first === call
    }

    private func releaseWithheldWindows() {
        var released = false
        for call in callsWithPartialMessages where call.withheldBytes > 0 && mayBuffer(call) {
            session?.consumeStream(streamID: call.streamID, count: call.withheldBytes)
            call.withheldBytes = 0
            released = true
        }
        // Inside a read the WINDOW_UPDATEs go out with its batch; otherwise now.
        if released { scheduleFlush() }
    }

    // MARK: - nghttp2 callbacks (called from NGHTTP2Session.swift only)

    /// A SETTINGS frame from the client (not an acknowledgement): the first comes right after
    /// its preface, which nghttp2 has then checked.
    func h2ClientSettings() {
        handshakeTimer?.cancel()
        handshakeTimer = nil
    }

    func h2BeginRequest(streamID: Int32) {
        let call = ServerCall(
            streamID: streamID, connection: self, loop: loop!,
            maxReceiveMessageBytes: runtime.config.maxReceiveMessageBytes, counters: runtime.counters)
        calls[streamID] = call
        lastCall = call
        metadataMatched = 0
        metadataDiverged = false
    }

    @inline(__always)
    private func call(_ streamID: Int32) -> ServerCall? {
        if let last = lastCall, last.streamID == streamID { return last }
        let found = calls[streamID]
        if found != nil { lastCall = found }
        return found
    }

    /// One request header.
    func h2Header(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        guard let call = call(streamID) else { return }
        // RFC 9113 §6.5.2 accounting: name + value + 32 per field. Past the limit the rest
        // is ignored and the call answered RESOURCE_EXHAUSTED once the block is complete
        // (a reset would reach the client as an unexplained INTERNAL).
        call.headerBytes += name.count + value.count + 32
        if call.headerBytes > runtime.http2Settings.maxHeaderListSize { return }
        guard let first = name.first else { return }
        if first == UInt8(ascii: ":") {
            if name.equals(":path") {
                if !value.equals(lastPath) { lastPath = String(decoding: value, as: UTF8.self) }
                call.path = lastPath
            } else if name.equals(":method") {
                call.isPost = value.equals("POST")
            }
            return
        }
        switch name.count {
        case 2 where name.equals("te"):
            return  // nghttp2 already insists on "trailers"
        case 12 where name.equals("content-type"):
            call.rawContentTypeSeen = true
            call.contentType = Self.parseContentType(value)
            return
        case 12 where name.equals("grpc-timeout"):
            if let timeout = GRPCTimeout.parse(value) {
                call.timeout = timeout
            } else {
                call.invalidTimeout = true
            }
            return
        case 13 where name.equals("grpc-encoding"):
            if value.equals("gzip") {
                call.requestGzip = true
            } else if !value.equals("identity") {
                call.unsupportedEncoding = String(decoding: value, as: UTF8.self)
            }
            return
        case 14 where name.equals("content-length"):
            return
        case 20 where name.equals("grpc-accept-encoding"):
            call.clientAcceptsGzip = value.split(separator: UInt8(ascii: ",")).contains {
                $0.trimmingSpaces().elementsEqual("gzip".utf8)
            }
            return
        default:
            break
        }
        // The rest of grpc-* is reserved for the transport, not metadata.
        if name.count >= 5, name[0] == UInt8(ascii: "g"), name[1] == UInt8(ascii: "r"), name[2] == UInt8(ascii: "p"),
            name[3] == UInt8(ascii: "c"), name[4] == UInt8(ascii: "-")
        {
            return
        }
        let isBinary = name.count > 4 && name.suffix(4).elementsEqual("-bin".utf8)
        if !metadataDiverged, !isBinary, metadataMatched < previousMetadata.count {
            let previous = previousMetadata.element(at: metadataMatched)
            if case .string(let previousValue) = previous.value, name.equals(previous.name), value.equals(previousValue) {
                metadataMatched += 1
                return
            }
        }
        if !metadataDiverged {
            metadataDiverged = true
            call.metadata = previousMetadata.prefix(metadataMatched)
        }
        let key = String(decoding: name, as: UTF8.self)
        if isBinary {
            // An undecodable binary value is dropped rather than failing the call.
            guard let values = Base64.decodeHeaderValues(value) else { return }
            for bytes in values { call.metadata.appendLowercased(key, .binary(bytes)) }
        } else {
            call.metadata.appendLowercased(key, .string(String(decoding: value, as: UTF8.self)))
        }
        return
    }

    func h2RequestHeadersComplete(streamID: Int32, endStream: Bool) {
        guard let call = call(streamID), let session else { return }
        if !metadataDiverged {
            call.metadata = metadataMatched == previousMetadata.count ? previousMetadata : previousMetadata.prefix(metadataMatched)
        }
        previousMetadata = call.metadata
        if endStream { call.requestEnded = true }
        let limit = runtime.http2Settings.maxHeaderListSize
        if call.headerBytes > limit {
            call.fail(GRPCStatus(.resourceExhausted, "The request's header list is larger than the limit of \(limit) bytes"))
            return
        }
        guard call.isPost else {
            respondWithHTTPError(call, "405")
            return
        }
        guard let contentType = call.contentType else {
            // Not gRPC at all (or a gRPC codec we do not speak).
            respondWithHTTPError(call, "415")
            return
        }
        let method: RegisteredMethod?
        if let last = lastMethod, last.path == call.path {
            // Usually the very same string (`lastPath`), so this compares one pointer.
            method = last.method
        } else {
            method = runtime.methods[call.path]
            lastMethod = (call.path, method)
        }
        guard let method else {
            call.fail(GRPCStatus(.unimplemented, runtime.unimplementedMessage(for: call.path)))
            return
        }
        if let encoding = call.unsupportedEncoding {
            call.finished = true
            call.responseHeadersSent = true
            call.discardingInput = true
            runtime.counters.record(.unimplemented)
            let status = GRPCStatus(.unimplemented, "Unsupported grpc-encoding \"\(encoding)\"; supported: identity, gzip")
            session.submitResponse(
                streamID: streamID, headers: ResponseHeaders.unsupportedEncoding(status, contentType: contentType),
                withBody: false)
            return
        }
        if call.invalidTimeout {
            call.fail(GRPCStatus(.internalError, "Malformed grpc-timeout header"))
            return
        }
        call.method = method
        if let timeout = call.timeout {
            // Past about 30 years a deadline is as good as none (and would overflow).
            if timeout < .seconds(1_000_000_000) {
                call.deadline = ContinuousClock.now.advanced(by: timeout)
                call.deadlineTimer = loop!.scheduleTask(in: TimeAmount(timeout)) {
                    call.deadlineExpired()
                }
            }
        }
        if method.kind.clientStreams {
            if endStream { _ = call.receiveEnd() }
            callsToStart.append(call)
        } else if endStream, call.receiveEnd() {
            callsToStart.append(call)
        }
    }

    func h2Data(streamID: Int32, _ chunk: UnsafeRawBufferPointer) {
        if let call = call(streamID) {
            call.receiveData(chunk)
        } else {
            session?.consumeStream(streamID: streamID, count: chunk.count)
        }
    }

    func h2EndStream(streamID: Int32) {
        guard let call = call(streamID) else { return }
        if call.method == nil {
            call.requestEnded = true
            return
        }
        if call.receiveEnd() {
            callsToStart.append(call)
        }
    }

    func h2StreamClosed(streamID: Int32, errorCode: UInt32) {
        if lastCall?.streamID == streamID { lastCall = nil }
        calls.removeValue(forKey: streamID)?.streamClosed(errorCode: errorCode)
    }

    /// Our HEADERS or DATA with END_STREAM went out.
    func h2SentEndStream(streamID: Int32) {
        guard let session else { return }
        if let call = call(streamID) {
            if !call.requestEnded {
                // We answered before the client finished sending: tell it to stop
                // (PROTOCOL-HTTP2.md, RST_STREAM(NO_ERROR) after trailers).
                session.resetStream(streamID: streamID, code: .noError)
            }
        } else if !session.isRemoteClosed(streamID: streamID) {
            session.resetStream(streamID: streamID, code: .noError)
        }
    }

    /// Response headers or trailers nghttp2 could not send because the block is too large:
    /// the call cannot end with a status any more, so it ends with RST_STREAM(INTERNAL_ERROR).
    func h2HeadersTooLarge(streamID: Int32, reason: NGHTTP2Error) {
        logger.warning(
            "response headers not sent, resetting the stream",
            metadata: ["stream": "\(streamID)", "path": "\(call(streamID)?.path ?? "")", "reason": "\(reason)"])
        session?.resetStream(streamID: streamID, code: .internalError)
    }

    func h2ReadData(streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> NGHTTP2DataRead {
        guard let call = call(streamID) else { return .resetStream }
        return call.readData(into: buffer)
    }

    func h2ProtocolError(_ message: String) {
        logger.debug("HTTP/2 protocol error", metadata: ["reason": "\(message)"])
    }

    // MARK: - Helpers

    private func respondWithHTTPError(_ call: ServerCall, _ status: StaticString) {
        call.finished = true
        call.responseHeadersSent = true
        call.discardingInput = true
        session?.submitResponse(streamID: call.streamID, headers: ResponseHeaders.httpError(status), withBody: false)
    }

    /// The codec a request's content-type asks for; nil for one that is not gRPC's (HTTP
    /// 415). PROTOCOL-HTTP2.md: "application/grpc" [("+proto" / "+json" / {custom})], and
    /// media types are case-insensitive (RFC 9110 §8.3.1). A subtype this server has no
    /// codec for is served as protobuf, as grpc-go and grpc-java do.
    static func parseContentType(_ value: UnsafeRawBufferPointer) -> GRPCContentType? {
        // The usual value, compared at once (the generic parse below is costly per request).
        if value.equals("application/grpc" as StaticString) { return .grpc }
        // Parameters (";charset=…") do not change the codec.
        let type = value.prefix(while: { $0 != UInt8(ascii: ";") }).trimmingSpaces()
        let base = "application/grpc".utf8
        guard type.count >= base.count, zip(type, base).allSatisfy({ Self.lowercased($0) == $1 }) else { return nil }
        let rest = type.dropFirst(base.count)
        if rest.isEmpty { return .grpc }
        guard rest.first == UInt8(ascii: "+") else { return nil }  // "application/grpcx" is another type
        let subtype = rest.dropFirst().lazy.map(Self.lowercased)
        if subtype.elementsEqual("proto".utf8) { return .grpcProto }
        if subtype.elementsEqual("json".utf8) { return .grpcJSON }
        return .grpc
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
    }

    static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v4:
            return "ipv4:\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        case .v6:
            return "ipv6:[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
        case .unixDomainSocket:
            return "unix:\(address.pathname ?? "")"
        }
    }
}

extension UnsafeRawBufferPointer {
    /// Byte-wise comparison with a String's UTF-8, without creating a String.
    fileprivate func equals(_ string: String) -> Bool {
        var string = string
        return string.withUTF8 { utf8 in
            guard utf8.count == count else { return false }
            guard let lhs = baseAddress, let rhs = utf8.baseAddress else { return count == 0 }
            return memcmp(lhs, rhs, count) == 0
        }
    }

    /// Byte-wise comparison with an ASCII literal, without creating a String.
    fileprivate func equals(_ literal: StaticString) -> Bool {
        guard count == literal.utf8CodeUnitCount else { return false }
        return literal.withUTF8Buffer { lhs in
            for i in 0..<lhs.count where self[i] != lhs[i] { return false }
            return true
        }
    }
}

extension Collection where Element == UInt8 {
    fileprivate func trimmingSpaces() -> SubSequence {
        let start = firstIndex(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }) ?? endIndex
        var end = endIndex
        while end > start {
            let before = index(start, offsetBy: distance(from: start, to: end) - 1)
            if self[before] == UInt8(ascii: " ") || self[before] == UInt8(ascii: "\t") { end = before } else { break }
        }
        return self[start..<end]
    }
}

extension TimeAmount {
    /// Converts a Swift `Duration`, clamping to what NIO can represent.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if nanos.overflow {
            self = .nanoseconds(seconds < 0 ? .min : .max)
        } else {
            self = .nanoseconds(nanos.partialValue &+ attoseconds / 1_000_000_000)
        }
    }
}

/// Runs handler tasks on a connection's event loop, so that a handler and the connection it
/// talks to share a thread and most calls need no thread hop at all.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
