import ArgumentParser
import BenchProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import Histogram
import Synchronization

/// StreamEvents fan-out (latencies in the summary are milliseconds): `subscribers` StreamEvents(from_end) calls over `connections`
/// connections; once every one has its caught_up, a publisher places orders at `rate` per
/// second (open loop) for `seconds`. Each PlaceOrder's request_id carries its send time, and
/// each OrderPlacedEvent its command_id (= that request_id) and created_date, so every
/// delivery gives two latencies:
/// - send-to-receipt: client send of PlaceOrder -> event received by a subscriber (the whole
///   pipeline: append, decide, aggregate, project, fan out);
/// - append-to-receipt: the event's created_date (stamped by the server when it decides)
///   -> received (fan-out only).
struct Stream: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "StreamEvents fan-out: N subscribers from_end, a paced publisher; latency and events/s delivered.")

    /// Which client the subscribers use (the publisher always uses grpc-swift-2).
    enum SubscriberClient: String, ExpressibleByArgument, CaseIterable {
        /// `LeanSubscribers`: swift-nio-http2 frames, gRPC framing and a minimal wire walk.
        case lean
        /// grpc-swift-2 over grpc-swift-nio-transport, a full client per call.
        case grpcSwift = "grpc-swift"
    }

    @OptionGroup var common: Common
    @Option(help: "Concurrent StreamEvents subscribers.") var subscribers = 1000
    @Option(help: "Orders placed per second while publishing.") var rate: Double = 100
    @Option(help: "Publishing seconds.") var seconds: Double = 10
    @Option(help: "Seconds to wait for the last deliveries after publishing.") var drain: Double = 15
    @Option(help: "Subscribers' client: lean (swift-nio-http2, decodes only what the latency needs) or grpc-swift (grpc-swift-2).")
    var client: SubscriberClient = .lean
    @Option(help: "Event-loop threads of the lean client.") var leanThreads = 1

    func run() async throws {
        let conns = common.connections > 0 ? common.connections : max(1, (subscribers + 49) / 50)
        let subs = subscribers
        let publishCount = Int(rate * seconds)
        let prefix = "bench-" + UUID().uuidString.lowercased().prefix(8) + "-"
        let client = self.client
        let leanThreads = self.leanThreads
        let target = common.target
        // The lean client's subscribers have their own connections; the publisher then needs only one.
        let line = try await ClientPool.run(target: common.target, connections: client == .lean ? 1 : conns) { pool in
            let tally = StreamTally(prefix: prefix, expectedPerSubscriber: publishCount)
            let caughtUp = tally.caughtUp
            let received = tally.received
            let streamErrors = tally.errors
            let results = Locked<[SubscriberResult]>([])
            let clock = ContinuousClock()

            return try await withThrowingTaskGroup(of: Void.self) { group in
                var lean: LeanSubscribers?
                switch client {
                case .lean:
                    var req = StreamEventsRequest()
                    req.fromEnd = true
                    lean = try await LeanSubscribers.start(
                        target: target, subscribers: subs, connections: conns, threads: leanThreads,
                        request: try req.serializedBytes(), tally: tally)
                case .grpcSwift:
                    for s in 0..<subs {
                        group.addTask {
                            var req = StreamEventsRequest()
                            req.fromEnd = true
                            var options = CallOptions.defaults
                            options.timeout = .seconds(3600)
                            do {
                                try await pool.client(s).serverStreaming(
                                    request: ClientRequest(message: req), descriptor: Methods.streamEvents,
                                    serializer: ProtobufSerializer<StreamEventsRequest>(),
                                    deserializer: ProtobufDeserializer<StreamEventsResponse>(), options: options
                                ) { response in
                                    var r = SubscriberResult()
                                    r.send.reserveCapacity(publishCount)
                                    r.append.reserveCapacity(publishCount)
                                    defer { results.withLock { $0.append(r) } }
                                    for try await message in response.messages {
                                        switch message.kind {
                                        case .event(let e):
                                            let now = wallMicros()
                                            guard e.commandID.hasPrefix(prefix), let sent = Int64(e.commandID.dropFirst(prefix.count + 9))
                                            else { continue }
                                            let created = e.createdDate.seconds * 1_000_000 + Int64(e.createdDate.nanos / 1000)
                                            r.send.append(UInt32(clamping: max(1, now - sent)))
                                            r.append.append(UInt32(clamping: max(1, now - created)))
                                            r.count += 1
                                            r.last = now
                                            received.add()
                                        case .caughtUp:
                                            caughtUp.add()
                                        case .heartbeat, .none:
                                            break
                                        }
                                    }
                                }
                            } catch is CancellationError {
                            } catch let error as RPCError where error.code == .cancelled {
                            } catch {
                                streamErrors.add(error)
                            }
                        }
                    }
                }

                // Every subscriber caught up (so from_end is behind us) before publishing.
                let subscribeStart = clock.now
                while caughtUp.load < subs {
                    // A stream that failed will never catch up: say why now, not in 120 s.
                    if streamErrors.total > 0 {
                        throw BenchError("\(caughtUp.load) of \(subs) subscribers caught up; stream errors: \(streamErrors.summary)")
                    }
                    if clock.now - subscribeStart > .seconds(120) {
                        throw BenchError("only \(caughtUp.load) of \(subs) subscribers caught up in 120 s")
                    }
                    try await Task.sleep(for: .milliseconds(10))
                }
                note("\(subs) subscribers caught up in \(String(format: "%.2f", secondsOf(clock.now - subscribeStart))) s over \(conns) connections")

                // Open-loop publisher: the i-th PlaceOrder goes out at start + i/rate.
                let publishErrors = ErrorTally()
                let publishStart = clock.now
                let wallStart = wallMicros()
                let cpu0 = processCPUSeconds()
                try await withThrowingTaskGroup(of: Void.self) { publishers in
                    for i in 0..<publishCount {
                        let at = publishStart + .microseconds(Int64(Double(i) * 1e6 / rate))
                        try await Task.sleep(until: at, clock: clock)
                        publishers.addTask {
                            // request_id: prefix, an 8-hex counter, then the send time (µs since the epoch).
                            let id = prefix + String(format: "%08x", i) + "-" + String(wallMicros())
                            do {
                                _ = try await pool.placeOrder(Requests.place(requestId: id), via: i)
                            } catch {
                                publishErrors.add(error)
                            }
                        }
                    }
                    try await publishers.waitForAll()
                }
                let published = publishCount - publishErrors.total
                let expected = published * subs
                let drainStart = clock.now
                while received.load < expected, clock.now - drainStart < .milliseconds(Int(drain * 1000)) {
                    try await Task.sleep(for: .milliseconds(5))
                }
                let wallEnd = wallMicros()
                let cpu = processCPUSeconds() - cpu0
                if let lean {
                    let measured = await lean.stop()
                    results.withLock { $0 += measured }
                }
                group.cancelAll()
                try await group.waitForAll()

                let all = results.withLock { $0 }
                var sendH = newHistogram()
                var appendH = newHistogram()
                var minCount = Int.max
                var maxCount = 0
                var delivered = 0
                var lastReceipt: Int64 = wallStart
                for r in all {
                    for v in r.send { _ = sendH.record(UInt64(v)) }
                    for v in r.append { _ = appendH.record(UInt64(v)) }
                    minCount = min(minCount, r.count)
                    maxCount = max(maxCount, r.count)
                    delivered += r.count
                    lastReceipt = max(lastReceipt, r.last)
                }
                if all.count < subs { minCount = 0 }
                _ = wallEnd
                let window = Double(lastReceipt - wallStart) / 1e6
                return String(
                    format: "op=stream client=%@ subscribers=%d connections=%d published=%d rate=%.0f/s delivered=%d expected=%d per-subscriber=%d..%d window=%.2fs events/s=%.0f send-p50=%@ send-p99=%@ send-p99.9=%@ send-max=%@ append-p50=%@ append-p99=%@ append-p99.9=%@ append-max=%@ publish-errors=%@ stream-errors=%@ client-cores=%.2f",
                    client.rawValue, subs, conns, published, rate, delivered, expected, minCount == .max ? 0 : minCount, maxCount, window,
                    Double(delivered) / window,
                    sendH.ms(50), sendH.ms(99), sendH.ms(99.9), sendH.ms(100),
                    appendH.ms(50), appendH.ms(99), appendH.ms(99.9), appendH.ms(100),
                    publishErrors.summary, streamErrors.summary, cpu / (Double(wallEnd - wallStart) / 1e6))
            }
        }
        emit(line)
    }
}
