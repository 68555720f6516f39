import Foundation
import Logging

/// The embedded engine under one data directory: the log in `log.sqlite`, the read model in
/// `readmodel.sqlite` (two files, so their writers and fsyncs never wait for each other).
///
/// ```swift
/// let engine = try await EmbeddedEngine.open(directory: "./data", logger: logger)
/// defer { … await engine.close() }
/// try await engine.log.createTopic("order-commands-and-events", partitions: 10)
/// ```
public struct EmbeddedEngine: Sendable {
    public let log: SQLiteLogEngine
    public let readModel: SQLiteReadModelStore
    public let directory: String

    public static let logFileName = "log.sqlite"
    public static let readModelFileName = "readmodel.sqlite"

    /// Opens both databases under `directory`, creating it (and missing parents) if needed.
    public static func open(
        directory: String, logger: Logger, options: SQLiteLogEngine.Options = .defaults
    ) async throws -> EmbeddedEngine {
        try await open(directory: directory, logger: logger, options: options, readModelPageLimit: nil)
    }

    /// `readModelPageLimit`: tests cap readmodel.sqlite's pages (see `PageLimit`), as
    /// `options.pageLimit` caps the log's.
    package static func open(
        directory: String, logger: Logger, options: SQLiteLogEngine.Options, readModelPageLimit: (@Sendable () -> Int?)?
    ) async throws -> EmbeddedEngine {
        try await offPool {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let base = URL(fileURLWithPath: directory)
        let log = try await SQLiteLogEngine.open(
            path: base.appendingPathComponent(logFileName).path, logger: logger, options: options)
        do {
            let readModel = try await SQLiteReadModelStore.open(
                path: base.appendingPathComponent(readModelFileName).path, logger: logger, pageLimit: readModelPageLimit)
            return EmbeddedEngine(log: log, readModel: readModel, directory: directory)
        } catch {
            await log.close()
            throw error
        }
    }

    /// Closes the log (finishing queued appends) and the read model.
    public func close() async {
        await log.close()
        await readModel.close()
    }
}
