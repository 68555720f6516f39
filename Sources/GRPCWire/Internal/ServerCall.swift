import Logging
import NIOCore
import SwiftProtobuf

/// The request content types this server speaks; the response echoes the request's.
enum GRPCContentType {
    case grpc, grpcProto, grpcJSON

    var literal: StaticString {
        switch self {
        case .grpc: return "application/grpc"
        case .grpcProto: return "application/grpc+proto"
        case .grpcJSON: return "application/grpc+json"
        }
    }

    var isJSON: Bool { self == .grpcJSON }
}

/// A message waiting to be copied into DATA frames: the 5-byte prefix, then the payload.
struct OutboundMessage {
    var compressed: Bool
    var payload: [UInt8]
    /// How many of the `5 + payload.count` bytes were already handed to nghttp2.
    var sent = 0

    var total: Int { 5 + payload.count }
}

/// One RPC on one HTTP/2 stream: the state shared by the connection handler (which feeds it
/// request bytes and pulls response bytes for nghttp2) and the handler's task (which reads
/// messages, sends messages and finishes).
///
/// Threading: every `var` below is confined to the connection's event loop. Methods meant for
/// the handler's task (`write`, `finish`, `nextRequestMessage`, `encode`, `decode`) hop to the
/// loop when they are not already on it (they are when handlers run on the loop's task
/// executor, the default), so no lock is needed. The header-derived fields are written on the
/// loop before the task is created and never changed after, which task creation orders.
/// Hence `@unchecked Sendable`.
final class ServerCall: ResponseMetadataStorage, @unchecked Sendable {
    /// The most response bytes buffered per stream before `ResponseStream.send` suspends.
    static let outboundHighWater = 64 * 1024

    let streamID: Int32
    let loop: any EventLoop
    /// Strong on purpose: the handler's `calls` table refers back to this call only while the
    /// stream is open, and `streamClosed` ends that.
    let connection: GRPCConnectionHandler
    let maxReceiveMessageBytes: Int
    let counters: CallCounters

    // MARK: Request headers (written on the loop before the task starts)

    var path = ""
    var isPost = false
    var contentType: GRPCContentType?
    /// The content-type header was present but not one of ours.
    var rawContentTypeSeen = false
    var requestGzip = false
    var unsupportedEncoding: String?
    var clientAcceptsGzip = false
    var timeout: Duration?
    var invalidTimeout = false
    var metadata = Metadata()
    var headerBytes = 0
    var method: RegisteredMethod?
    var deadline: ContinuousClock.Instant?

    // MARK: Request body (loop)

    var deframer: MessageDeframer
    /// The single request of a unary or server-streaming call.
    var unaryRequest: FramedMessage?
    var requestCount = 0
    /// Complete messages of a client-streaming call not yet taken by the handler.
    var inbound = MessageQueue<FramedMessage>()
    /// Readers waiting for a request message, first come first served: a request
    /// stream is `Sendable`, so several tasks may wait at once, and none may be lost.
    var inboundWaiters: [UnsafeContinuation<FramedMessage?, any Error>] = []
    /// Stream-window bytes received but not yet reported consumed (handler is behind).
    var unconsumedBytes = 0
    /// Bytes of an incomplete request message this call holds, as its connection counts
    /// them (`GRPCConnectionHandler.partialMessage(of:holds:)`).
    var partialBytes = 0
    /// Stream-window bytes not yet reported consumed because the connection holds too much
    /// of incomplete messages: this stream waits at its window until it may go on.
    var withheldBytes = 0
    /// `deframer.process` is running: the deframer must not be replaced now.
    private var deframing = false
    /// Request bytes of a client-streaming call kept as they came, not yet deframed: once
    /// `maxQueuedMessages` wait for the handler, later bytes stay raw, so a stream of tiny
    /// messages costs its window's bytes and not many times that in per-message objects.
    /// Non-empty only while `inbound` is not.
    var raw: [UInt8] = []
    var rawStart = 0
    static let maxQueuedMessages = 64
    /// END_STREAM was received.
    var requestEnded = false
    /// After an error the rest of the body is dropped.
    var discardingInput = false
    var started = false

    // MARK: Response (loop)

    var responseHeadersSent = false
    var outbound = MessageQueue<OutboundMessage>()
    var outboundBytes = 0
    /// The status to send once `outbound` is drained.
    var pendingStatus: GRPCStatus?
    /// nghttp2 parked our data provider (it returned DEFERRED): resume it when data comes.
    var dataDeferred = false
    /// Senders waiting for the client to read (more than one when several tasks send on
    /// one response stream): all go on together once the queue drained enough.
    var sendWaiters: [UnsafeContinuation<Void, any Error>] = []
    /// The call has ended from the server's side: status queued or stream reset.
    var finished = false
    /// The stream is closed at the HTTP/2 level.
    var closed = false
    /// Why the call failed, once it failed from the server or client side.
    var failure: GRPCStatus?
    var task: Task<Void, Never>?
    var deadlineTimer: Scheduled<Void>?

    init(
        streamID: Int32, connection: GRPCConnectionHandler, loop: any EventLoop, maxReceiveMessageBytes: Int,
        counters: CallCounters
    ) {
        self.streamID = streamID
        self.counters = counters
        self.connection = connection
        self.loop = loop
        self.maxReceiveMessageBytes = maxReceiveMessageBytes
        self.deframer = MessageDeframer(maxMessageBytes: maxReceiveMessageBytes)
        super.init()
    }

    // MARK: - Task side: hopping to the loop

    @inline(__always)
    private func onLoop(_ body: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { body() } else { loop.execute(body) }
    }

    /// Ends the call with `status` (after any queued messages). Idempotent.
    func finish(_ status: GRPCStatus) {
        onLoop { self.finishOnLoop(status) }
    }

    /// Queues a response message without waiting for the client (single-response calls).
    func writeLast(_ message: OutboundMessage) throws {
        if loop.inEventLoop {
            try enqueueOnLoop(message)
        } else {
            loop.execute { try? self.enqueueOnLoop(message) }
        }
    }

    /// Queues a response message and suspends while more than `outboundHighWater` bytes of
    /// this stream are waiting for the client (flow control), so a client that does not
    /// read stalls its own stream's handler and nothing else.
    func write(_ message: OutboundMessage) async throws {
        if loop.inEventLoop {
            try enqueueOnLoop(message)
            if outboundBytes > Self.outboundHighWater {
                try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                    // Still on the loop: nothing can run between the check and this line.
                    self.sendWaiters.append(continuation)
                }
            }
        } else {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                loop.execute {
                    do {
                        try self.enqueueOnLoop(message)
                        if self.outboundBytes > Self.outboundHighWater {
                            self.sendWaiters.append(continuation)
                        } else {
                            continuation.resume()
                        }
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
        }
    }

    /// The next request message of a streaming call, nil after the client half-closed.
    func nextRequestMessage() async throws -> FramedMessage? {
        if loop.inEventLoop {
            if let message = try pollInbound() { return message }
            if requestEnded { return nil }
            return try await withUnsafeThrowingContinuation { self.inboundWaiters.append($0) }
        }
        return try await withUnsafeThrowingContinuation { continuation in
            loop.execute {
                do {
                    if let message = try self.pollInbound() {
                        continuation.resume(returning: message)
                    } else if self.requestEnded {
                        continuation.resume(returning: nil)
                    } else {
                        self.inboundWaiters.append(continuation)
                    }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Resumes every waiting reader and sender with `status`.
    private func failWaiters(_ status: @autoclosure () -> GRPCStatus) {
        if inboundWaiters.isEmpty && sendWaiters.isEmpty { return }
        let status = status()
        let readers = inboundWaiters
        let senders = sendWaiters
        inboundWaiters = []
        sendWaiters = []
        for waiter in readers { waiter.resume(throwing: status) }
        for waiter in senders { waiter.resume(throwing: status) }
    }

    // MARK: - Task side: codecs (touch only immutable fields)

    func decode<M: SwiftProtobuf.Message>(_ framed: FramedMessage, as type: M.Type = M.self) throws -> M {
        var bytes = framed.bytes
        if framed.compressed {
            // The loop already rejected a compressed flag without grpc-encoding.
            do {
                bytes = try Gzip.decompress(bytes, limit: maxReceiveMessageBytes)
            } catch .tooLarge(let limit) {
                throw GRPCStatus(
                    .resourceExhausted, "Decompressed request message larger than \(limit) bytes")
            } catch {
                throw GRPCStatus(.internalError, "Could not decompress the request message: \(error)")
            }
        }
        if contentType?.isJSON == true {
            do {
                // Unknown JSON fields are rejected (JSONDecodingOptions.ignoreUnknownFields
                // defaults to false).
                return try M(jsonUTF8Bytes: bytes)
            } catch {
                // A JSON body is written by hand far more often than a binary one; treat a bad
                // document as the client's mistake (INVALID_ARGUMENT) rather than a transport
                // fault (INTERNAL, used for unparseable binary protobuf).
                throw GRPCStatus(.invalidArgument, "Invalid JSON request message: \(error)")
            }
        }
        do {
            return try M(serializedBytes: bytes)
        } catch {
            throw GRPCStatus(.internalError, "Could not parse the request message: \(error)")
        }
    }

    func encode<M: SwiftProtobuf.Message>(_ message: M, compress: Bool? = nil) throws -> OutboundMessage {
        let payload: [UInt8]
        do {
            payload = contentType?.isJSON == true ? try message.jsonUTF8Bytes() : try message.serializedBytes()
        } catch {
            throw GRPCStatus(.internalError, "Could not serialize the response message: \(error)")
        }
        return outbound(payload, compress: compress)
    }

    /// Like `encode(_:compress:)`, reusing the message's bytes for this call's codec (the
    /// array is shared copy-on-write: no copy unless this call compresses it).
    func encode<M: SwiftProtobuf.Message>(_ message: EncodedMessage<M>, compress: Bool? = nil) throws -> OutboundMessage {
        let payload: [UInt8]
        do {
            payload = try message.bytes(json: contentType?.isJSON == true)
        } catch {
            throw GRPCStatus(.internalError, "Could not serialize the response message: \(error)")
        }
        return outbound(payload, compress: compress)
    }

    /// Frames a serialized payload, compressing it when the call asked for it and the
    /// client accepts gzip.
    private func outbound(_ serialized: [UInt8], compress: Bool?) -> OutboundMessage {
        var payload = serialized
        var compressed = false
        if clientAcceptsGzip {
            compressed = state.withLock { state in
                guard compress ?? state.compress else { return false }
                if !state.headersSent {
                    // The headers are built later, on the loop, from this flag.
                    state.gzipInHeaders = true
                    return true
                }
                return state.gzipInHeaders
            }
            if compressed { payload = Gzip.compress(payload) }
        }
        return OutboundMessage(compressed: compressed, payload: payload)
    }

    func makeContext(peer: String) -> ServerContext {
        ServerContext(
            path: path, metadata: metadata, deadline: deadline, peer: peer,
            response: ResponseMetadata(storage: self), requestMessageCompressed: unaryRequest?.compressed ?? false,
            usesJSON: contentType?.isJSON == true)
    }

    // MARK: - Loop side

    private func enqueueOnLoop(_ message: OutboundMessage) throws {
        loop.preconditionInEventLoop()
        guard !finished else {
            throw failure ?? GRPCStatus(.cancelled, "The call has already ended")
        }
        outbound.append(message)
        outboundBytes += message.total
        if !responseHeadersSent {
            sendResponseHeaders()
        } else if dataDeferred {
            dataDeferred = false
            connection.session?.resumeData(streamID: streamID)
        }
        connection.scheduleFlush()
    }

    private func sendResponseHeaders() {
        responseHeadersSent = true
        let (initial, gzip): (Metadata, Bool) = state.withLock { state in
            state.headersSent = true
            if state.compress && clientAcceptsGzip { state.gzipInHeaders = true }
            return (state.initial, state.gzipInHeaders)
        }
        let headers = ResponseHeaders.initial(contentType: contentType ?? .grpc, gzip: gzip, metadata: initial)
        connection.session?.submitResponse(streamID: streamID, headers: headers, withBody: true)
    }

    func finishOnLoop(_ status: GRPCStatus) {
        loop.preconditionInEventLoop()
        guard !finished else { return }
        finished = true
        counters.record(status.code)
        // The deadline still holds for responses queued behind flow control: a client
        // that never reads must not keep them (and the stream) for the connection's life.
        if outbound.isEmpty {
            deadlineTimer?.cancel()
            deadlineTimer = nil
        }
        if status.code != .ok { failure = status }
        // Later request bytes are dropped (receiveData), so an incomplete message never will be
        // whole: free it now rather than when the client closes the stream.
        dropPartialMessage()
        // Nobody may wait any more once the call is over.
        failWaiters(status.code == .ok ? GRPCStatus(.cancelled, "The call has ended") : status)
        guard !closed, let session = connection.session else { return }
        if !responseHeadersSent {
            // Trailers-Only: one HEADERS frame with END_STREAM.
            responseHeadersSent = true
            // Trailers-Only carries both: initial metadata the handler set goes out too.
            let trailing: Metadata = state.withLock { state in
                state.headersSent = true
                guard !state.initial.isEmpty else { return state.trailing }
                var merged = state.initial
                for (name, value) in state.trailing { merged.add(name, value) }
                return merged
            }
            let headers = ResponseHeaders.trailers(
                status, metadata: trailing, trailersOnly: contentType ?? .grpc)
            session.submitResponse(streamID: streamID, headers: headers, withBody: false)
        } else {
            pendingStatus = status
            if dataDeferred {
                dataDeferred = false
                session.resumeData(streamID: streamID)
            }
        }
        connection.scheduleFlush()
    }

    /// Ends the call from the server side because of a problem with the request, and stops
    /// the handler if it is running.
    func fail(_ status: GRPCStatus) {
        discardingInput = true
        task?.cancel()
        finishOnLoop(status)
    }

    /// The deadline passed: the handler's task is cancelled and the call ends with
    /// DEADLINE_EXCEEDED.
    ///
    /// When the status can go out now, it is sent as trailers, followed (if the client is
    /// still sending) by the usual RST_STREAM(NO_ERROR). RST_STREAM(CANCEL) is *not* sent
    /// after the trailers: grpc C-core clients then report CANCELLED instead of the trailers'
    /// DEADLINE_EXCEEDED (interop timeout_on_sleeping_server failed 14 times in 60 that way).
    /// When response messages are still queued behind flow control, the status could wait
    /// indefinitely, so the stream is reset with RST_STREAM(CANCEL) at once instead; so too
    /// for a call whose handler already answered but whose response has not left yet.
    func deadlineExpired() {
        deadlineTimer = nil
        guard !closed else { return }
        if finished {
            // The handler answered, but its response is still queued behind flow control.
            guard !outbound.isEmpty else { return }
            connection.session?.resetStream(streamID: streamID, code: .cancel)
            connection.scheduleFlush()
            return
        }
        let status = GRPCStatus(.deadlineExceeded, "Deadline exceeded")
        discardingInput = true
        task?.cancel()
        if outbound.isEmpty {
            finishOnLoop(status)
        } else {
            finishOnLoop(status)
            connection.session?.resetStream(streamID: streamID, code: .cancel)
            connection.scheduleFlush()
        }
    }

    /// nghttp2 closed the stream (normally, by a client RST_STREAM, or with the connection).
    func streamClosed(errorCode: UInt32) {
        closed = true
        deadlineTimer?.cancel()
        deadlineTimer = nil
        if !finished {
            let status = GRPCStatus(.cancelled, "The client cancelled the call")
            finished = true
            counters.record(.cancelled)
            failure = status
            task?.cancel()
        }
        failWaiters(failure ?? GRPCStatus(.cancelled, "The call has ended"))
        outbound.removeAll()
        outboundBytes = 0
        dropPartialMessage()
        inbound.removeAll()
        raw = []
        rawStart = 0
        task = nil
    }

    /// Pops the next buffered request message; throws if the call failed.
    private func pollInbound() throws -> FramedMessage? {
        if let failure { throw failure }
        // Ended by the handler (OK): a read now would wait for ever.
        if finished { throw GRPCStatus(.cancelled, "The call has ended") }
        guard let message = inbound.popFirst() else { return nil }
        if rawStart < raw.count, inbound.count < Self.maxQueuedMessages / 2 { deframeRaw() }
        if inbound.isEmpty, unconsumedBytes > 0 {
            // The handler caught up: let the client send more.
            connection.session?.consumeStream(streamID: streamID, count: unconsumedBytes)
            unconsumedBytes = 0
            connection.scheduleFlush()
        }
        return message
    }

    /// Request bytes from one DATA frame.
    func receiveData(_ chunk: UnsafeRawBufferPointer) {
        guard !discardingInput, !finished, let method else {
            connection.session?.consumeStream(streamID: streamID, count: chunk.count)
            return
        }
        let streaming = method.kind.clientStreams
        if streaming && (rawStart < raw.count || inbound.count >= Self.maxQueuedMessages) {
            raw.append(contentsOf: chunk)
            unconsumedBytes += chunk.count
            return
        }
        deframe(chunk, streaming: streaming)
        // Flow control: consume now unless complete messages are piling up unread, in which
        // case the bytes are reported when the handler takes them (pollInbound), or this
        // call's incomplete message must wait for the connection's others to shrink, in which
        // case the connection reports them (`partialMessage(of:holds:)`).
        if streaming && !inbound.isEmpty && !finished {
            unconsumedBytes += chunk.count
        } else if partialBytes > 0 && !connection.mayBuffer(self) {
            withheldBytes += chunk.count
        } else {
            connection.session?.consumeStream(streamID: streamID, count: chunk.count)
        }
    }

    /// Frees an incomplete request message the call will not use, and tells the connection.
    private func dropPartialMessage() {
        if !deframing && deframer.hasPartialMessage {
            deframer = MessageDeframer(maxMessageBytes: maxReceiveMessageBytes)
        }
        connection.partialMessage(of: self, holds: 0)
    }

    /// Deframes kept raw bytes until `maxQueuedMessages` wait again or none is left.
    private func deframeRaw() {
        while rawStart < raw.count && inbound.count < Self.maxQueuedMessages && !finished {
            let end = min(raw.count, rawStart + 4096)
            raw.withUnsafeBytes { deframe(UnsafeRawBufferPointer(rebasing: $0[rawStart..<end]), streaming: true) }
            rawStart = end
        }
        guard rawStart == raw.count else { return }
        raw = []
        rawStart = 0
        if requestEnded && !finished && deframer.hasPartialMessage {
            fail(GRPCStatus(.internalError, "The request ended in the middle of a message"))
        }
    }

    /// Runs request bytes through the deframer: messages to waiting readers, the queue, or
    /// the unary request; a framing error fails the call.
    private func deframe(_ chunk: UnsafeRawBufferPointer, streaming: Bool) {
        defer {
            if !finished { connection.partialMessage(of: self, holds: deframer.partialBytes) }
        }
        do {
            deframing = true
            defer { deframing = false }
            try deframer.process(chunk) { message in
                if message.compressed && !requestGzip {
                    throw GRPCStatus(
                        .internalError, "Compressed message received without a grpc-encoding header")
                }
                requestCount += 1
                if streaming {
                    if !inboundWaiters.isEmpty {
                        inboundWaiters.removeFirst().resume(returning: message)
                    } else {
                        inbound.append(message)
                    }
                } else if requestCount == 1 {
                    unaryRequest = message
                } else {
                    throw GRPCStatus(.unimplemented, "More than one request message for a unary request")
                }
            }
        } catch let error as DeframeError {
            switch error {
            case .messageTooLarge(let length, let limit):
                fail(GRPCStatus(
                    .resourceExhausted, "Request message of \(length) bytes is larger than the limit of \(limit) bytes"))
            case .invalidFlag(let flag):
                fail(GRPCStatus(.internalError, "Invalid message flag \(flag)"))
            }
        } catch {
            fail(GRPCStatus(mapping: error))
        }
    }

    /// END_STREAM from the client. Returns true when a unary-request call is now ready to run.
    func receiveEnd() -> Bool {
        requestEnded = true
        guard !finished, let method else { return false }
        // With bytes still raw, the end is seen once they are deframed (`deframeRaw`).
        if rawStart < raw.count { return false }
        if deframer.hasPartialMessage {
            fail(GRPCStatus(.internalError, "The request ended in the middle of a message"))
            return false
        }
        if method.kind.clientStreams {
            let waiters = inboundWaiters
            inboundWaiters = []
            for waiter in waiters { waiter.resume(returning: nil) }
            return false
        }
        if requestCount != 1 {
            fail(GRPCStatus(.unimplemented, "Expected exactly one request message, got \(requestCount)"))
            return false
        }
        return true
    }

    /// Fills one DATA frame for nghttp2 from the queued messages.
    func readData(into buffer: UnsafeMutableRawBufferPointer) -> NGHTTP2DataRead {
        var written = 0
        while written < buffer.count, !outbound.isEmpty {
            let done: Bool = outbound.modifyFirst { message in
                if message.sent < 5 {
                    let header = MessageFraming.header(compressed: message.compressed, length: message.payload.count)
                    withUnsafeBytes(of: header) { headerBytes in
                        let n = min(5 - message.sent, buffer.count - written)
                        buffer.baseAddress!.advanced(by: written)
                            .copyMemory(from: headerBytes.baseAddress!.advanced(by: message.sent), byteCount: n)
                        written += n
                        message.sent += n
                    }
                }
                if message.sent >= 5 {
                    let offset = message.sent - 5
                    let n = min(message.payload.count - offset, buffer.count - written)
                    if n > 0 {
                        message.payload.withUnsafeBytes { payload in
                            buffer.baseAddress!.advanced(by: written)
                                .copyMemory(from: payload.baseAddress!.advanced(by: offset), byteCount: n)
                        }
                        written += n
                        message.sent += n
                    }
                }
                return message.sent == message.total
            }
            if done { outbound.removeFirst() } else { break }
        }
        outboundBytes -= written
        if !sendWaiters.isEmpty, outboundBytes <= Self.outboundHighWater / 2 {
            let waiters = sendWaiters
            sendWaiters = []
            // Resuming only enqueues the tasks; they run after nghttp2 returns.
            for waiter in waiters { waiter.resume() }
        }
        if outbound.isEmpty, let status = pendingStatus {
            pendingStatus = nil
            let trailing = state.withLock { $0.trailing }
            return .data(count: written, end: .trailers(ResponseHeaders.trailers(status, metadata: trailing, trailersOnly: nil)))
        }
        if written == 0 {
            dataDeferred = true
            return .deferred
        }
        return .data(count: written, end: nil)
    }
}
