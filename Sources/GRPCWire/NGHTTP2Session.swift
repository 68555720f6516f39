import CNGHTTP2
import NIOCore

// The only file in GRPCWire that touches libnghttp2 (see STYLE.md §3-4). Everything above it
// (GRPCConnectionHandler, ServerCall) sees Swift types: stream IDs, byte buffers,
// `HTTP2Headers`, `NGHTTP2DataRead`.
//
// Lifecycle, after NIO's BetterHTTPParser: GRPCConnectionHandler creates the session in
// `handlerAdded` and deletes it in `handlerRemoved`. The session's `user_data` is that handler.
// Callbacks are top-level C-convention functions; they recover the handler, call into it, and
// when Swift code fails they stash the error in the session and return a failure code, which
// `receive`/`send` then rethrow. nghttp2 is never re-entered: `receive` and `send` assert that
// no `mem_recv`/`mem_send` is already running (callbacks may only *submit*, which nghttp2
// allows from inside callbacks).

/// Connection-level HTTP/2 settings the server advertises.
struct NGHTTP2Settings {
    var maxConcurrentStreams: Int
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much each stream may send before we consume.
    var initialStreamWindow: Int
    /// The connection-level receive window (raised from 65,535 with a WINDOW_UPDATE).
    var connectionWindow: Int
    var maxHeaderListSize: Int
}

/// An HTTP/2 error code for RST_STREAM and GOAWAY, without exposing nghttp2's enum.
enum HTTP2ErrorCode: UInt32 {
    case noError = 0x0
    case protocolError = 0x1
    case internalError = 0x2
    case refusedStream = 0x7
    case cancel = 0x8
    case enhanceYourCalm = 0xB
}

/// What the data provider of a stream produced for one DATA frame.
enum NGHTTP2DataRead {
    /// Nothing to send now; the handler calls `resumeData` when there is.
    case deferred
    /// `count` bytes were written into the frame buffer; `end` is set when the body is over.
    case data(count: Int, end: End?)
    /// Something went wrong with this stream only: nghttp2 resets it (INTERNAL_ERROR).
    case resetStream

    enum End {
        /// Close the stream with END_STREAM on this DATA frame.
        case endStream
        /// End the body, then send these trailers (HEADERS with END_STREAM).
        case trailers(HTTP2Headers)
    }
}

/// A failure reported by nghttp2 itself.
struct NGHTTP2Error: Error, CustomStringConvertible {
    let code: Int
    let description: String

    init(code: Int) {
        self.code = code
        self.description = String(cString: nghttp2_strerror(Int32(truncatingIfNeeded: code)))
    }

    /// The client did not start with the HTTP/2 connection preface.
    var isBadClientMagic: Bool { code == Int(NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue) }
}

/// One server-side nghttp2 session: one per TCP connection, confined to the connection's
/// event loop.
///
/// - Important: not thread-safe; every call must happen on the owning channel's event loop,
///   and `delete()` must be called before the handler is released.
final class NGHTTP2Session {
    /// The `nghttp2_session*`; nil once deleted.
    private var session: OpaquePointer?
    /// True while `mem_recv` or `mem_send` runs, to catch re-entrance.
    private var busy = false
    /// An error thrown by handler code inside a callback, rethrown by `receive`/`send`.
    fileprivate var stashedError: (any Error)?

    /// Creates the session and queues the server's SETTINGS and connection WINDOW_UPDATE.
    init(handler: GRPCConnectionHandler, settings: NGHTTP2Settings) throws {
        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else {
            throw NGHTTP2Error(code: Int(NGHTTP2_ERR_NOMEM.rawValue))
        }
        // nghttp2 copies the callback table into the session, so it can be freed right away.
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameReceived)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSent)
        nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, onFrameNotSent)
        nghttp2_session_callbacks_set_error_callback2(callbacks, onError)

        var option: OpaquePointer?
        guard nghttp2_option_new(&option) == 0, let option else {
            throw NGHTTP2Error(code: Int(NGHTTP2_ERR_NOMEM.rawValue))
        }
        defer { nghttp2_option_del(option) }
        // Window updates follow what handlers actually consume (nghttp2_session_consume), so
        // a handler that stops reading a request stream stops its sender instead of making
        // the server buffer without bound.
        nghttp2_option_set_no_auto_window_update(option, 1)
        // Closed streams would otherwise be kept for the RFC 7540 priority tree: wasted
        // memory under many short streams (Envoy, nghttp2 #810/#811).
        nghttp2_option_set_no_closed_streams(option, 1)
        // The rapid-reset limiter (nghttp2_option_set_stream_reset_rate_limit, burst 1000 and
        // 33/s) and the CONTINUATION limit keep their defaults, deliberately.

        // user_data is the handler, unretained: the handler owns this session and deletes it
        // in handlerRemoved (or, as a backstop, in its deinit), so the handler always outlives
        // every callback. No +1 is taken, so there is nothing to release on any path.
        let userData = Unmanaged.passUnretained(handler).toOpaque()
        var newSession: OpaquePointer?
        let rv = nghttp2_session_server_new2(&newSession, callbacks, userData, option)
        guard rv == 0, let newSession else { throw NGHTTP2Error(code: Int(rv)) }
        self.session = newSession

        var entries = [
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                value: UInt32(clamping: settings.maxConcurrentStreams)),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                value: UInt32(clamping: settings.initialStreamWindow)),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                value: UInt32(clamping: settings.maxHeaderListSize)),
            // Tell the client priorities are not used; also stops closed-stream retention.
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue), value: 1),
        ]
        let settingsResult = nghttp2_submit_settings(newSession, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count)
        guard settingsResult == 0 else { throw NGHTTP2Error(code: Int(settingsResult)) }
        if settings.connectionWindow > 65_535 {
            let windowResult = nghttp2_session_set_local_window_size(
                newSession, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(clamping: settings.connectionWindow))
            guard windowResult == 0 else { throw NGHTTP2Error(code: Int(windowResult)) }
        }
    }

    deinit {
        // The handler deletes the session explicitly; this is only a backstop so the C
        // session never leaks.
        if let session { nghttp2_session_del(session) }
    }

    /// Frees the C session. No callback can run afterwards.
    func delete() {
        precondition(!busy, "nghttp2 session deleted from inside one of its callbacks")
        if let session { nghttp2_session_del(session) }
        session = nil
    }

    var isDeleted: Bool { session == nil }

    // MARK: Input and output

    /// Feeds received bytes to nghttp2 (`nghttp2_session_mem_recv`), which calls back into
    /// the handler for every header, frame, data chunk and stream closure.
    func receive(_ bytes: UnsafeRawBufferPointer) throws {
        guard let session else { return }
        precondition(!busy, "nghttp2 re-entered: receive() called from inside a callback")
        busy = true
        defer { busy = false }
        let rv = nghttp2_session_mem_recv(
            session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        if rv < 0 {
            if let error = stashedError {
                stashedError = nil
                throw error
            }
            throw NGHTTP2Error(code: rv)
        }
    }

    /// Pulls serialized frames from nghttp2 (`nghttp2_session_mem_send`) into `buffer` until
    /// nghttp2 has nothing more or `buffer` holds at least `limit` bytes. Returns true when
    /// output may remain.
    func send(into buffer: inout ByteBuffer, limit: Int) throws -> Bool {
        guard let session else { return false }
        precondition(!busy, "nghttp2 re-entered: send() called from inside a callback")
        busy = true
        defer { busy = false }
        while buffer.readableBytes < limit {
            var data: UnsafePointer<UInt8>?
            // The returned pointer is only valid until the next nghttp2 call, so copy now.
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 {
                if let error = stashedError {
                    stashedError = nil
                    throw error
                }
                throw NGHTTP2Error(code: n)
            }
            if n == 0 { return false }
            buffer.writeBytes(UnsafeRawBufferPointer(start: data, count: n))
        }
        return true
    }

    /// nghttp2 still expects input (false after GOAWAY once no stream is left).
    var wantsRead: Bool { session.map { nghttp2_session_want_read($0) != 0 } ?? false }
    /// nghttp2 has frames queued.
    var wantsWrite: Bool { session.map { nghttp2_session_want_write($0) != 0 } ?? false }

    // MARK: Submitting (allowed from inside callbacks)

    /// Queues response HEADERS. With `withBody`, the stream's data provider is attached and
    /// pulls from the handler (`h2ReadData`); without, the HEADERS carry END_STREAM
    /// (Trailers-Only, or a plain HTTP error).
    @discardableResult
    func submitResponse(streamID: Int32, headers: HTTP2Headers, withBody: Bool) -> Bool {
        guard let session else { return false }
        let rv: Int32 = withNameValuePairs(headers) { nva, count in
            if withBody {
                var provider = nghttp2_data_provider(
                    source: nghttp2_data_source(ptr: nil), read_callback: readData)
                return nghttp2_submit_response(session, streamID, nva, count, &provider)
            }
            return nghttp2_submit_response(session, streamID, nva, count, nil)
        }
        return rv == 0
    }

    /// Puts a deferred data provider back in the outbound queue. Returns false when there is
    /// nothing to resume (the stream is gone or not deferred), which is harmless (#399).
    @discardableResult
    func resumeData(streamID: Int32) -> Bool {
        guard let session else { return false }
        return nghttp2_session_resume_data(session, streamID) == 0
    }

    func resetStream(streamID: Int32, code: HTTP2ErrorCode) {
        guard let session else { return }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, code.rawValue)
    }

    /// Sends GOAWAY naming the last stream this server will process (the last one it saw when
    /// `lastStreamID` is nil). Streams up to it keep running.
    func goAway(code: HTTP2ErrorCode, lastStreamID: Int32? = nil) {
        guard let session else { return }
        let last = lastStreamID ?? nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, code.rawValue, nil, 0)
    }

    /// Tells nghttp2 that `count` bytes of a stream's DATA were consumed, so it may open the
    /// stream's flow-control window again.
    func consumeStream(streamID: Int32, count: Int) {
        guard let session, count > 0 else { return }
        _ = nghttp2_session_consume_stream(session, streamID, count)
    }

    /// Like `consumeStream` for the connection-level window.
    func consumeConnection(count: Int) {
        guard let session, count > 0 else { return }
        _ = nghttp2_session_consume_connection(session, count)
    }

    /// True when the client has sent END_STREAM on `streamID` (or the stream is gone).
    func isRemoteClosed(streamID: Int32) -> Bool {
        guard let session else { return true }
        return nghttp2_session_get_stream_remote_close(session, streamID) != 0
    }

    fileprivate func stash(_ error: any Error) {
        if stashedError == nil { stashedError = error }
    }
}

// MARK: - Header blocks

/// A zero-length byte for empty stored values (nghttp2 wants a pointer even for length 0).
private let emptyBytes: StaticString = "\0"

/// Builds the `nghttp2_nv` array for `headers` on the stack and passes it to `body`.
/// Literal parts are flagged NO_COPY (they are static, so nghttp2 may keep the pointers until
/// the frame is serialized); stored parts are copied by nghttp2 during `body`.
private func withNameValuePairs<R>(
    _ headers: HTTP2Headers, _ body: (UnsafePointer<nghttp2_nv>, Int) -> R
) -> R {
    headers.storage.withUnsafeBufferPointer { storage in
        withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(headers.count, 1)) { nva in
            for (i, field) in headers.fields.enumerated() {
                let (name, nameCount, nameStatic) = resolve(field.name, storage)
                let (value, valueCount, valueStatic) = resolve(field.value, storage)
                var flags = UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)
                if nameStatic { flags |= UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue) }
                if valueStatic { flags |= UInt8(NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue) }
                // nghttp2_nv's pointers are not const-qualified, but nghttp2 never writes
                // through them.
                nva.initializeElement(
                    at: i,
                    to: nghttp2_nv(
                        name: UnsafeMutablePointer(mutating: name), value: UnsafeMutablePointer(mutating: value),
                        namelen: nameCount, valuelen: valueCount, flags: flags))
            }
            return body(UnsafePointer(nva.baseAddress!), headers.count)
        }
    }
}

private func resolve(
    _ part: HTTP2Headers.Part, _ storage: UnsafeBufferPointer<UInt8>
) -> (UnsafePointer<UInt8>, Int, Bool) {
    switch part {
    case .literal(let s):
        return (s.utf8Start, s.utf8CodeUnitCount, true)
    case .stored(let offset, let count):
        guard let base = storage.baseAddress else { return (emptyBytes.utf8Start, 0, false) }
        return (base + offset, count, false)
    }
}

// MARK: - Callbacks
//
// Each recovers the GRPCConnectionHandler from user_data without touching its retain count
// (see the comment in NGHTTP2Session.init on why the pointer is always valid here).

@inline(__always)
private func handler(_ userData: UnsafeMutableRawPointer?) -> GRPCConnectionHandler {
    Unmanaged<GRPCConnectionHandler>.fromOpaque(userData!).takeUnretainedValue()
}

/// Calls `body` with the handler without retaining it: the handler owns the session, so it
/// is alive for the whole callback (this saves a retain/release pair per header).
@inline(__always)
private func withHandler<R>(_ userData: UnsafeMutableRawPointer?, _ body: (GRPCConnectionHandler) -> R) -> R {
    Unmanaged<GRPCConnectionHandler>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
}

private let headersType = UInt8(NGHTTP2_HEADERS.rawValue)
private let dataType = UInt8(NGHTTP2_DATA.rawValue)
private let endStreamFlag = UInt8(NGHTTP2_FLAG_END_STREAM.rawValue)
private let settingsType = UInt8(NGHTTP2_SETTINGS.rawValue)
private let ackFlag = UInt8(NGHTTP2_FLAG_ACK.rawValue)

private func onBeginHeaders(
    _ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    let frame = frame!
    guard frame.pointee.hd.type == headersType, frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else {
        return 0
    }
    withHandler(userData) { $0.h2BeginRequest(streamID: frame.pointee.hd.stream_id) }
    return 0
}

private func onHeader(
    _ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?,
    _ name: UnsafePointer<UInt8>?, _ nameLength: Int, _ value: UnsafePointer<UInt8>?, _ valueLength: Int,
    _ flags: UInt8, _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    let frame = frame!
    // Only request headers matter; client trailers (unused by gRPC) are ignored.
    guard frame.pointee.hd.type == headersType, frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else {
        return 0
    }
    withHandler(userData) {
        $0.h2Header(
            streamID: frame.pointee.hd.stream_id,
            name: UnsafeRawBufferPointer(start: name, count: nameLength),
            value: UnsafeRawBufferPointer(start: value, count: valueLength))
    }
    return 0
}

private func onFrameReceived(
    _ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    let frame = frame!
    let type = frame.pointee.hd.type
    let endStream = frame.pointee.hd.flags & endStreamFlag != 0
    let streamID = frame.pointee.hd.stream_id
    if type == headersType {
        if frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
            withHandler(userData) { $0.h2RequestHeadersComplete(streamID: streamID, endStream: endStream) }
        } else if endStream {
            withHandler(userData) { $0.h2EndStream(streamID: streamID) }
        }
    } else if type == dataType, endStream {
        withHandler(userData) { $0.h2EndStream(streamID: streamID) }
    } else if type == settingsType, frame.pointee.hd.flags & ackFlag == 0 {
        withHandler(userData) { $0.h2ClientSettings() }
    }
    return 0
}

private func onDataChunk(
    _ session: OpaquePointer?, _ flags: UInt8, _ streamID: Int32, _ data: UnsafePointer<UInt8>?,
    _ length: Int, _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    withHandler(userData) { handler in
        // The connection window is consumed at once: a slow stream must not block the
        // others. The stream window is the handler's business (h2Data consumes when ready).
        handler.session?.consumeConnection(count: length)
        handler.h2Data(streamID: streamID, UnsafeRawBufferPointer(start: data, count: length))
    }
    return 0
}

private func onStreamClose(
    _ session: OpaquePointer?, _ streamID: Int32, _ errorCode: UInt32, _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    withHandler(userData) { $0.h2StreamClosed(streamID: streamID, errorCode: errorCode) }
    return 0
}

private func onFrameSent(
    _ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    let frame = frame!
    let type = frame.pointee.hd.type
    if type == headersType || type == dataType, frame.pointee.hd.flags & endStreamFlag != 0 {
        withHandler(userData) { $0.h2SentEndStream(streamID: frame.pointee.hd.stream_id) }
    }
    return 0
}

/// nghttp2 drops a response HEADERS frame it cannot send because the block is over its
/// 64 KiB `max_send_header_block_length` (FRAME_SIZE_ERROR) without closing the stream, so
/// the client would wait for a status for ever: the stream is reset instead. Other reasons
/// (the client reset the stream first) need nothing.
private func onFrameNotSent(
    _ session: OpaquePointer?, _ frame: UnsafePointer<nghttp2_frame>?, _ code: Int32, _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    let frame = frame!
    if frame.pointee.hd.type == headersType, frame.pointee.hd.stream_id > 0, code == NGHTTP2_ERR_FRAME_SIZE_ERROR.rawValue {
        withHandler(userData) {
            $0.h2HeadersTooLarge(streamID: frame.pointee.hd.stream_id, reason: NGHTTP2Error(code: Int(code)))
        }
    }
    return 0
}

private func onError(
    _ session: OpaquePointer?, _ code: Int32, _ message: UnsafePointer<CChar>?, _ length: Int,
    _ userData: UnsafeMutableRawPointer?
) -> Int32 {
    let text = message.map {
        String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self)
    } ?? ""
    handler(userData).h2ProtocolError(text)
    return 0
}

/// The data provider shared by every response stream: nghttp2 passes the stream ID, and the
/// handler copies up to `length` bytes of that stream's pending messages into `buffer`.
private func readData(
    _ session: OpaquePointer?, _ streamID: Int32, _ buffer: UnsafeMutablePointer<UInt8>?, _ length: Int,
    _ dataFlags: UnsafeMutablePointer<UInt32>?, _ source: UnsafeMutablePointer<nghttp2_data_source>?,
    _ userData: UnsafeMutableRawPointer?
) -> Int {
    let handler = handler(userData)
    switch handler.h2ReadData(streamID: streamID, into: UnsafeMutableRawBufferPointer(start: buffer, count: length)) {
    case .deferred:
        return Int(NGHTTP2_ERR_DEFERRED.rawValue)
    case .resetStream:
        return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
    case .data(let count, let end):
        switch end {
        case nil:
            break
        case .endStream:
            dataFlags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
        case .trailers(let trailers):
            // End the body without END_STREAM and queue the trailers, which nghttp2 allows
            // from inside this callback; they go out after this DATA frame.
            dataFlags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
            let rv = withNameValuePairs(trailers) { nva, n in
                nghttp2_submit_trailer(session, streamID, nva, n)
            }
            if rv != 0 {
                // Only this stream is affected: reset it rather than failing the session.
                handler.h2ProtocolError("submitting trailers failed: \(NGHTTP2Error(code: Int(rv)))")
                return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
            }
        }
        return count
    }
}
