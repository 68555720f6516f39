import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// On the listening channel: when accepting fails for want of file descriptors or memory
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM: connections held open up to the process's limit), stops
/// accepting for a second instead of retrying at once.
///
/// The listening socket stays readable while a connection waits in the backlog, and NIO
/// keeps it registered after a failed accept (its `readPending` is cleared only by a
/// successful one), so the loop retried at 100 % of a core for as long as the descriptors
/// were gone. NIO's `AcceptBackoffHandler` only delays the next `read`, which NIO never asks
/// for in that state; turning `autoRead` off does unregister the socket.
final class AcceptPause: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    static let pause = TimeAmount.seconds(1)

    private let logger: Logger
    private var paused = false

    init(logger: Logger) {
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        logger.warning("Cannot accept connections; pausing for 1 s", metadata: ["error": "\(error)"])
        try? options.setOption(.autoRead, value: false)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.pause) {
            self.paused = false
            try? options.setOption(.autoRead, value: true)
        }
    }
}
