import Foundation
import Synchronization

/// Runs the `orders` command-line client as a child process, for end-to-end
/// tests against a running server.
///
/// The executable is `$ORDERS_CLI` when set, else the `orders` built next to
/// the test bundle (`swift build` / `swift test` put both in the same products
/// folder), else `.build/debug/orders` under the package root.
enum CLIRunner {
    struct Result: Sendable {
        var exitCode: Int32
        var stdout: String
        var stderr: String
        /// stdout split into lines.
        var lines: [String] { CLIProcess.lines(of: stdout) }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static var executable: URL {
        if let path = ProcessInfo.processInfo.environment["ORDERS_CLI"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        // Linux runs the test executable straight from the products folder;
        // on macOS the .xctest bundle sits in it.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let candidates = [
            Bundle.main.executableURL?.deletingLastPathComponent(),
            Bundle.main.bundleURL.deletingLastPathComponent(),
        ].compactMap { $0?.appendingPathComponent("orders") }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
            ?? root.appendingPathComponent(".build/debug/orders")
    }

    /// Runs `orders --server <server> <arguments…>` to completion.
    ///
    /// `ORDERS_SERVER` is removed from the child's environment so that only
    /// `server` decides where it connects.
    static func run(_ arguments: [String], server: String, timeLimit: Duration = .seconds(60)) throws -> Result {
        let process = try start(arguments, server: server)
        return try process.wait(timeLimit: timeLimit)
    }

    /// Starts `orders --server <server> <arguments…>` (e.g. a `watch`) and
    /// returns at once; read its output with `CLIProcess.waitForLine`.
    static func start(_ arguments: [String], server: String) throws -> CLIProcess {
        try CLIProcess(executable: executable, arguments: ["--server", server] + arguments)
    }
}

/// A running `orders` process whose output is collected as it comes.
final class CLIProcess {
    private let process = Process()
    private let stdoutBuffer = OutputBuffer()
    private let stderrBuffer = OutputBuffer()

    init(executable: URL, arguments: [String]) throws {
        process.executableURL = executable
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["ORDERS_SERVER"] = nil
        process.environment = environment
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // One reader thread per pipe: blocking reads until EOF keep the bytes
        // in order and never fill a pipe the child is blocked writing to.
        stdoutBuffer.drain(stdout.fileHandleForReading)
        stderrBuffer.drain(stderr.fileHandleForReading)
    }

    /// Everything printed to stdout so far, as complete lines.
    var lines: [String] { Self.lines(of: stdoutBuffer.text) }

    var stderr: String { stderrBuffer.text }

    /// Waits until some stdout line satisfies `predicate`; returns that line.
    @discardableResult
    func waitForLine(
        timeLimit: Duration = .seconds(30), where predicate: (String) -> Bool
    ) throws -> String {
        let deadline = ContinuousClock.now + timeLimit
        while true {
            let exited = !process.isRunning
            if let line = lines.first(where: predicate) { return line }
            if exited || ContinuousClock.now >= deadline { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw CLIRunner.Failure(description: """
            no matching line from orders \(process.arguments ?? []) within \(timeLimit); \
            stdout: \(lines), stderr: \(stderr)
            """)
    }

    /// Ctrl-C: a `watch` then ends with exit code 0.
    func interrupt() {
        process.interrupt()
    }

    /// Waits for the process to end (killing it after `timeLimit`) and for
    /// its output to be read to the end.
    func wait(timeLimit: Duration = .seconds(60)) throws -> CLIRunner.Result {
        let deadline = ContinuousClock.now + timeLimit
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                process.terminate()
                process.waitUntilExit()
                throw CLIRunner.Failure(description: """
                    orders \(process.arguments ?? []) still running after \(timeLimit); \
                    stdout: \(lines), stderr: \(stderr)
                    """)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.waitUntilExit()
        stdoutBuffer.waitForEOF()
        stderrBuffer.waitForEOF()
        return CLIRunner.Result(exitCode: process.terminationStatus, stdout: stdoutBuffer.text, stderr: stderrBuffer.text)
    }

    static func lines(of text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }
}

/// Bytes read from one pipe by its own thread.
private final class OutputBuffer: Sendable {
    private let state = Mutex((data: Data(), finished: false))

    var text: String { state.withLock { String(decoding: $0.data, as: UTF8.self) } }

    func drain(_ handle: FileHandle) {
        let thread = Thread { [self] in
            while true {
                let chunk = handle.availableData  // empty at EOF
                if chunk.isEmpty { break }
                state.withLock { $0.data.append(chunk) }
            }
            state.withLock { $0.finished = true }
        }
        thread.start()
    }

    func waitForEOF() {
        while !state.withLock({ $0.finished }) { Thread.sleep(forTimeInterval: 0.01) }
    }
}
