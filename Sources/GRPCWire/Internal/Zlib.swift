import CZlib

/// gzip for gRPC message compression (`grpc-encoding: gzip`). This file and
/// `NGHTTP2Session.swift` are the only ones that touch C APIs.
///
/// Each message gets a fresh stream (compression.md: no context is shared between messages),
/// so these are plain functions rather than a long-lived object.
enum Gzip {
    enum Failure: Error, Equatable {
        /// The decompressed message would exceed the receive limit (RESOURCE_EXHAUSTED).
        case tooLarge(limit: Int)
        /// The input was not valid gzip (INTERNAL).
        case corrupt(String)
    }

    /// windowBits 15 + 16 selects the gzip wrapper (RFC 1952) rather than raw zlib.
    private static let gzipWindowBits: Int32 = 15 + 16

    /// A `z_stream` at a fixed address for its whole life: zlib keeps a pointer back to
    /// it (`state->strm`) and checks it on every call, and `&local` is only guaranteed
    /// to be valid for the one call it is passed to.
    private static func withStream<T, E: Error>(_ body: (UnsafeMutablePointer<z_stream>) throws(E) -> T) throws(E) -> T {
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        defer {
            stream.deinitialize(count: 1)
            stream.deallocate()
        }
        return try body(stream)
    }

    static func compress(_ input: [UInt8]) -> [UInt8] {
        withStream { compress(input, $0) }
    }

    private static func compress(_ input: [UInt8], _ stream: UnsafeMutablePointer<z_stream>) -> [UInt8] {
        // deflateInit2 is a macro; its function form takes the library version and the
        // struct size so zlib can detect a header/library mismatch.
        let initResult = deflateInit2_(
            stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, gzipWindowBits, 8, Z_DEFAULT_STRATEGY,
            zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        // Only Z_MEM_ERROR / Z_VERSION_ERROR are possible with valid constants: neither can be
        // handled meaningfully.
        precondition(initResult == Z_OK, "deflateInit2 failed: \(initResult)")
        defer { deflateEnd(stream) }

        var output = [UInt8](repeating: 0, count: Int(deflateBound(stream, UInt(input.count))))
        let produced: Int = input.withUnsafeBufferPointer { inBuffer in
            output.withUnsafeMutableBufferPointer { outBuffer in
                // zlib's next_in is not const-qualified, but deflate never writes through it.
                stream.pointee.next_in = UnsafeMutablePointer(mutating: inBuffer.baseAddress)
                stream.pointee.avail_in = UInt32(inBuffer.count)
                stream.pointee.next_out = outBuffer.baseAddress
                stream.pointee.avail_out = UInt32(outBuffer.count)
                // deflateBound guarantees a single Z_FINISH call completes (Z_STREAM_END).
                let result = deflate(stream, Z_FINISH)
                precondition(result == Z_STREAM_END, "deflate with deflateBound output failed: \(result)")
                return outBuffer.count - Int(stream.pointee.avail_out)
            }
        }
        output.removeSubrange(produced...)
        return output
    }

    /// Decompresses one message, failing once the output would pass `limit` bytes, so that a
    /// small "zip bomb" cannot make the server allocate without bound.
    static func decompress(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        try withStream { (stream) throws(Failure) in try decompress(input, limit: limit, stream) }
    }

    private static func decompress(_ input: [UInt8], limit: Int, _ stream: UnsafeMutablePointer<z_stream>) throws(Failure) -> [UInt8] {
        let initResult = inflateInit2_(
            stream, gzipWindowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        precondition(initResult == Z_OK, "inflateInit2 failed: \(initResult)")
        defer { inflateEnd(stream) }

        var output = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: min(max(input.count * 4, 4096), 256 * 1024))
        var failure: Failure?
        input.withUnsafeBufferPointer { inBuffer in
            stream.pointee.next_in = UnsafeMutablePointer(mutating: inBuffer.baseAddress)
            stream.pointee.avail_in = UInt32(inBuffer.count)
            while true {
                let (result, produced): (Int32, Int) = chunk.withUnsafeMutableBufferPointer { out in
                    stream.pointee.next_out = out.baseAddress
                    stream.pointee.avail_out = UInt32(out.count)
                    let result = inflate(stream, Z_NO_FLUSH)
                    return (result, out.count - Int(stream.pointee.avail_out))
                }
                if output.count + produced > limit {
                    failure = .tooLarge(limit: limit)
                    return
                }
                output.append(contentsOf: chunk[0..<produced])
                switch result {
                case Z_STREAM_END:
                    return
                case Z_OK:
                    continue
                case Z_BUF_ERROR where stream.pointee.avail_in == 0:
                    // Input ended before the gzip trailer.
                    failure = .corrupt("truncated gzip data")
                    return
                case Z_BUF_ERROR:
                    continue
                default:
                    let reason = stream.pointee.msg.map { String(cString: $0) } ?? "error \(result)"
                    failure = .corrupt(reason)
                    return
                }
            }
        }
        if let failure { throw failure }
        return output
    }
}
