#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Standard output and error, and the two signals a streaming CLI must handle.
///
/// Output goes straight to write(2), one call per printed block: a `watch`
/// piped into another program shows each event at once, with no stdio buffer
/// to flush and no buffer left unflushed when the process ends.
enum Terminal {
    /// Thrown when standard output's reader has gone away (EPIPE), e.g.
    /// `orders watch | head -3`: the command stops quietly.
    struct OutputClosed: Error {}

    private static let interruptFlag = Atomic<Bool>(false)

    /// True once Ctrl-C was pressed.
    static var interrupted: Bool { interruptFlag.load(ordering: .relaxed) }

    /// True once standard output is a pipe whose reader has gone. Checked while
    /// waiting, so `orders watch | head -3` ends within a second of `head`
    /// exiting even when no further event comes to fail a write.
    static var outputClosed: Bool {
        var descriptor = pollfd(fd: STDOUT_FILENO, events: 0, revents: 0)
        return poll(&descriptor, 1, 0) > 0 && descriptor.revents & Int16(POLLERR | POLLHUP) != 0
    }

    /// SIGPIPE is ignored so that a closed pipe shows up as EPIPE from write(2)
    /// (a clean stop) instead of killing the process mid-line. The first SIGINT
    /// only raises a flag the call polls, so it can end its stream and exit
    /// normally; a second one exits at once in case the first went unnoticed.
    static func installSignalHandlers() {
        signal(SIGPIPE, SIG_IGN)
        signal(SIGINT) { _ in
            if Terminal.interruptFlag.exchange(true, ordering: .relaxed) {
                _exit(130)
            }
        }
    }

    /// Writes `text` to standard output, all of it.
    static func print(_ text: String) throws(OutputClosed) {
        var text = text
        if !text.hasSuffix("\n") { text += "\n" }
        guard writeAll(text, to: STDOUT_FILENO) else { throw OutputClosed() }
    }

    /// Writes `text` to standard error; a failure there has nowhere to be reported.
    static func printError(_ text: String) {
        var text = text
        if !text.hasSuffix("\n") { text += "\n" }
        _ = writeAll(text, to: STDERR_FILENO)
    }

    private static func writeAll(_ text: String, to descriptor: Int32) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }
}
