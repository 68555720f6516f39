import EngineSQLite
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A start-up failure, said in the operator's terms (the flag, the path, what to do).
struct StartupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The server's data directory, held for the process's life.
enum DataDirectory {
    /// Creates `path` if needed and takes an exclusive lock on it (`flock` on `path/LOCK`,
    /// released by the kernel when the process ends, however it ends). Two servers on one
    /// directory would both append to the log at the same offsets: the second to start
    /// is refused. Returns whether the directory was created now.
    static func claim(_ path: String) throws -> Bool {
        var isDirectory: ObjCBool = false
        let existed = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if existed && !isDirectory.boolValue {
            throw StartupError("--data-dir \(path) is a file, not a directory")
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw StartupError("--data-dir \(path) cannot be created: \(reason(error))")
        }
        let lockPath = path + "/LOCK"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StartupError("--data-dir \(path) is not writable: \(lockPath): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: lockPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            close(fd)
            throw StartupError(
                "--data-dir \(path) is in use by another orders-server (pid \(holder ?? "unknown")); "
                    + "two servers on one directory would overwrite each other's log")
        }
        // Who holds it, for the message above; the descriptor stays open (the lock with it).
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        try checkDataFilesWritable(path)
        return !existed
    }

    /// The Kafka engine's read model (the log is in Kafka).
    static let kafkaReadModelFileName = "readmodel-kafka.sqlite"

    /// The files the engines keep here (SQLite's `-wal` and `-shm` beside each).
    static let dataFiles = [EmbeddedEngine.logFileName, EmbeddedEngine.readModelFileName, kafkaReadModelFileName]
        .flatMap(sqliteFiles)

    /// A SQLite database's file and the `-wal` and `-shm` files SQLite keeps beside it.
    static func sqliteFiles(_ name: String) -> [String] { [name, name + "-wal", name + "-shm"] }

    /// A data file this user cannot write (one left by a server started as another user,
    /// root most often) otherwise stops the start with SQLite's "attempt to write a
    /// readonly database [PRAGMA journal_mode=WAL]", which names neither the file nor the
    /// cause. The directory itself must be writable too: SQLite creates `-wal` and `-shm`.
    private static func checkDataFilesWritable(_ path: String) throws {
        var unwritable = access(path, W_OK) == 0 ? [] : [path]
        for name in dataFiles {
            let file = path + "/" + name
            if access(file, F_OK) == 0 && access(file, R_OK | W_OK) != 0 { unwritable.append(file) }
        }
        guard let first = unwritable.first else { return }
        var info = stat()
        let owner = stat(first, &info) == 0 ? "uid \(info.st_uid)" : "another user"
        throw StartupError(
            "--data-dir \(path): \(unwritable.joined(separator: ", ")) not writable by this user (uid \(getuid())); "
                + "owned by \(owner). Run the server as the user that owns the data, or chown -R the directory to this one")
    }

    /// Removes a directory this start created and left unused (a port already taken):
    /// it would otherwise fix the partition count of the next start.
    static func removeCreated(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    private static func reason(_ error: any Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return ns.localizedDescription
    }
}
