import EventLog

// Whether the log can take appends, for the server's health check.
//
// A full disk leaves the log readable (`endOffsets` answers from memory) while every
// group commit fails, so the writer remembers the disk error of its last group commit
// (`DiskHealth`) until one commits again. Traffic proves recovery by itself, but an
// instance reported NOT_SERVING gets no traffic from its load balancer, so while failing
// `writeFailure` tries a write of its own, at most once a second: one transaction on the
// writer's connection that takes `spaceProbeBytes` of new pages and gives them back. It
// commits, so it goes through the WAL as a command's records would (a rolled-back write
// never touches the disk); it needs fresh pages, so it fails where a command would (a
// write that only rewrote existing pages would succeed on a full disk). The pages stay
// free in the file for the next records. Nothing is probed while the log is healthy: a
// disk that fills while the instance is idle is reported by the first command it fails.

extension SQLiteLogEngine {
    /// About a command's records with room to spare: the probe succeeding means that much
    /// space is there.
    static let spaceProbeBytes = 64 << 10
    /// Least time between two probes.
    static let spaceProbeInterval: Duration = .seconds(1)

    /// A failed fsync (which stops the log for good, see `WALSyncer`), or the disk error
    /// of the last group commit while no commit has succeeded since.
    public func writeFailure() async -> LogError? {
        if let failure = syncer.failure { return failure }
        guard diskHealth.admitProbe(every: Self.spaceProbeInterval) else { return diskHealth.failure }
        defer { diskHealth.probed() }
        if queue.withLock({ $0.closed }) { return diskHealth.failure }
        _ = try? await writer.run { conn in self.probeSpace(conn) }
        return diskHealth.failure
    }

    /// On the writer queue, between group commits.
    private func probeSpace(_ conn: SQLiteConnection) {
        pageLimit?.apply(to: conn, logger: logger)
        // A group commit may have succeeded while this waited for the queue.
        guard diskHealth.failure != nil else { return }
        do {
            // meta is the engine's own; the row never outlives the transaction.
            try conn.transaction {
                try conn.withStatement("INSERT OR REPLACE INTO meta(name, value) VALUES ('space_probe', zeroblob(?))") { stmt in
                    stmt.bind(1, Self.spaceProbeBytes)
                    try stmt.run()
                }
                try conn.withStatement("DELETE FROM meta WHERE name = 'space_probe'") { try $0.run() }
            }
            diskHealth.succeeded()
        } catch {
            diskHealth.failed(error)
        }
    }
}
