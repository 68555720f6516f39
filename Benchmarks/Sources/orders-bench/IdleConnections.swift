import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Opens `count` HTTP/2 (h2c, prior knowledge) connections and holds them idle: each sends
/// the client preface and an empty SETTINGS, acknowledges the server's SETTINGS and PINGs,
/// and counts as open once the server's SETTINGS arrived. Prints `ready open=N` on stdout
/// when all are open (the caller then measures the server), holds them `hold-seconds`,
/// closes them and prints the summary line.
struct IdleConnections: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle-connections", abstract: "Hold N idle HTTP/2 connections open.")
    @Option(help: "The server, HOST:PORT.") var target = "127.0.0.1:50051"
    @Option(help: "Connections.") var count = 10000
    @Option(help: "Seconds to hold them once open.") var holdSeconds: Double = 10
    @Option(help: "Connection attempts in flight while opening.") var concurrency = 256

    func run() async throws {
        let (host, port) = try parseTarget(target)
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        guard Int(limit.rlim_cur) > count + 64 else {
            throw BenchError("ulimit -n is \(limit.rlim_cur); \(count) connections need more")
        }
        let group = MultiThreadedEventLoopGroup.singleton
        let state = IdleState()
        let clock = ContinuousClock()
        let start = clock.now
        var channels: [any Channel] = []
        channels.reserveCapacity(count)
        var failures = 0
        @Sendable func connect() async -> (any Channel)? {
            try? await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(IdleH2Handler(state: state))
                    }
                }
                .connect(host: host, port: port).get()
        }
        var next = 0
        try await withThrowingTaskGroup(of: (any Channel)?.self) { connecting in
            while next < min(concurrency, count) {
                connecting.addTask { await connect() }
                next += 1
            }
            while let result = try await connecting.next() {
                if let c = result { channels.append(c) } else { failures += 1 }
                if next < count {
                    connecting.addTask { await connect() }
                    next += 1
                }
            }
        }
        // Wait for every server SETTINGS (the connection is established at the HTTP/2 level).
        while state.established.load < channels.count, clock.now - start < .seconds(120) {
            try await Task.sleep(for: .milliseconds(20))
        }
        let opened = state.established.load
        let openSecs = secondsOf(clock.now - start)
        emit("ready open=\(opened) connect-failures=\(failures) seconds=\(String(format: "%.2f", openSecs))")
        try await Task.sleep(for: .milliseconds(Int(holdSeconds * 1000)))
        let stillOpen = channels.filter { $0.isActive }.count
        let goaways = state.goaways.load
        for c in channels { c.close(promise: nil) }
        emit(
            "op=idle-connections requested=\(count) open=\(opened) still-open-after-hold=\(stillOpen) goaways=\(goaways) connect-failures=\(failures) open-seconds=\(String(format: "%.2f", openSecs))"
        )
    }
}

final class IdleState: Sendable {
    let established = SharedCounter()
    let goaways = SharedCounter()
}

/// A minimal HTTP/2 client that does nothing but stay connected.
final class IdleH2Handler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: used only on its channel's event loop.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let state: IdleState
    private var buffer = ByteBuffer()
    private var sawSettings = false

    init(state: IdleState) { self.state = state }

    func channelActive(context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: 33)
        out.writeString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        writeFrameHeader(&out, length: 0, type: 4, flags: 0, stream: 0)  // SETTINGS, empty
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        while buffer.readableBytes >= 9 {
            let len = Int(buffer.getInteger(at: buffer.readerIndex, as: UInt8.self)!) << 16
                | Int(buffer.getInteger(at: buffer.readerIndex + 1, as: UInt16.self)!)
            guard buffer.readableBytes >= 9 + len else { break }
            let type = buffer.getInteger(at: buffer.readerIndex + 3, as: UInt8.self)!
            let flags = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self)!
            let payload = buffer.getSlice(at: buffer.readerIndex + 9, length: len)!
            buffer.moveReaderIndex(forwardBy: 9 + len)
            switch type {
            case 4 where flags & 1 == 0:  // SETTINGS: acknowledge
                var out = context.channel.allocator.buffer(capacity: 9)
                writeFrameHeader(&out, length: 0, type: 4, flags: 1, stream: 0)
                context.writeAndFlush(wrapOutboundOut(out), promise: nil)
                if !sawSettings {
                    sawSettings = true
                    state.established.add()
                }
            case 6 where flags & 1 == 0:  // PING: answer
                var out = context.channel.allocator.buffer(capacity: 17)
                writeFrameHeader(&out, length: 8, type: 6, flags: 1, stream: 0)
                var p = payload
                out.writeBuffer(&p)
                context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            case 7:
                state.goaways.add()
            default:
                break
            }
        }
        buffer.discardReadBytes()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func writeFrameHeader(_ out: inout ByteBuffer, length: Int, type: UInt8, flags: UInt8, stream: UInt32) {
        out.writeInteger(UInt8(length >> 16))
        out.writeInteger(UInt16(length & 0xFFFF))
        out.writeInteger(type)
        out.writeInteger(flags)
        out.writeInteger(stream)
    }
}
