import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A stand-in OpenAI-compatible server that streams a known answer on a schedule: the first
/// token `firstTokenDelay` after the request, then one every `gap`, `tokens` in all, then the
/// finish chunk, the usage chunk (if asked) and `[DONE]`. It can also misbehave on purpose.
/// `bench serve --self-test` measures the client against it, and the tests check the
/// benchmark's figures against its schedule.
final class StubServer: Sendable {
    struct Behavior: Sendable {
        var firstTokenDelay = 0.0
        var gap = 0.0
        var tokens = 8
        var usage = true
        var fault: Fault?
    }

    enum Fault: Sendable {
        /// Close the connection after this many tokens.
        case closeAfter(tokens: Int)
        /// Send this raw text (a malformed SSE line) after this many tokens, then go on.
        case rawLine(String, afterTokens: Int)
        /// Answer with this status and an OpenAI-shaped error body.
        case status(Int)
    }

    let port: Int
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup
    private let counter: Counter

    /// Requests answered so far (numbered from 0 in arrival order; `behavior` gets the number).
    var requests: Int { counter.value.load(ordering: .relaxed) }
    /// The request bodies received, in order (kept when started with `recordBodies`).
    var bodies: [String] { counter.bodies.withLock { $0 } }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        let recordBodies: Bool
        let bodies = Mutex<[String]>([])
        init(recordBodies: Bool) { self.recordBodies = recordBodies }
    }

    private init(port: Int, channel: any Channel, group: MultiThreadedEventLoopGroup, counter: Counter) {
        self.port = port
        self.channel = channel
        self.group = group
        self.counter = counter
    }

    /// Listens on a free loopback port.
    static func start(threads: Int = 1, recordBodies: Bool = false, behavior: @escaping @Sendable (Int) -> Behavior) async throws -> StubServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let counter = Counter(recordBodies: recordBodies)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(StubHandler(counter: counter, behavior: behavior))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return StubServer(port: channel.localAddress?.port ?? 0, channel: channel, group: group, counter: counter)
    }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// Answers each request on its connection with the behavior for its number.
final class StubHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let counter: StubServer.Counter
    private let behavior: @Sendable (Int) -> StubServer.Behavior
    private var chat = false
    private var body: [UInt8] = []

    init(counter: StubServer.Counter, behavior: @escaping @Sendable (Int) -> StubServer.Behavior) {
        self.counter = counter
        self.behavior = behavior
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            chat = head.uri.hasSuffix("/chat/completions")
            body.removeAll()
        case .body(let buffer):
            if counter.recordBodies { body += buffer.readableBytesView }
        case .end:
            if counter.recordBodies { counter.bodies.withLock { $0.append(String(decoding: body, as: UTF8.self)) } }
            let number = counter.value.wrappingAdd(1, ordering: .relaxed).oldValue
            respond(context, behavior(number))
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ behavior: StubServer.Behavior) {
        if case .status(let code) = behavior.fault {
            let body = #"{"error": {"message": "the stub answers \#(code)", "type": "server_error", "param": null, "code": null}}"#
            var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code))
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        var head = HTTPResponseHead(version: .http1_1, status: .ok)
        head.headers.add(name: "Content-Type", value: "text/event-stream")
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if chat { write(context, chunk(role: true, text: "", finish: nil)) }
        let loop = context.eventLoop.assumeIsolated()
        // Token i goes out at firstTokenDelay + i * gap after the request (deadlines from its
        // arrival, so a late timer does not push the tokens after it); with no delays, all in
        // one flush.
        let arrival = NIODeadline.now()
        func due(_ i: Int) -> NIODeadline { arrival + .nanoseconds(Int64((behavior.firstTokenDelay + Double(i) * behavior.gap) * 1e9)) }
        func send(_ i: Int) {
            guard context.channel.isActive else { return }
            if case .closeAfter(let n) = behavior.fault, i == n {
                // What was written goes out first (a close drops unflushed writes).
                context.flush()
                context.close(promise: nil)
                return
            }
            if case .rawLine(let line, let n) = behavior.fault, i == n { write(context, line, flush: false) }
            if i == behavior.tokens {
                write(context, chunk(role: false, text: "", finish: "length"), flush: false)
                if behavior.usage {
                    write(context, "data: {\"object\":\"\(chat ? "chat.completion.chunk" : "text_completion")\",\"choices\":[],"
                          + "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":\(behavior.tokens),\"total_tokens\":\(4 + behavior.tokens)}}\n\n",
                          flush: false)
                }
                write(context, "data: [DONE]\n\n", flush: false)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            write(context, chunk(role: false, text: " tok\(i)", finish: nil), flush: behavior.gap > 0 || i == 0)
            if behavior.gap > 0 {
                loop.scheduleTask(deadline: due(i + 1)) { send(i + 1) }
            } else {
                send(i + 1)
            }
        }
        if behavior.firstTokenDelay > 0 {
            context.flush()
            loop.scheduleTask(deadline: due(0)) { send(0) }
        } else {
            send(0)
        }
    }

    private func chunk(role: Bool, text: String, finish: String?) -> String {
        let finishField = finish.map { "\"\($0)\"" } ?? "null"
        if chat {
            let delta = role ? #"{"role":"assistant","content":""}"# : "{\"content\":\"\(text)\"}"
            return "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":\(delta),\"finish_reason\":\(finishField)}]}\n\n"
        }
        return "data: {\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\"\(text)\",\"finish_reason\":\(finishField)}]}\n\n"
    }

    private func write(_ context: ChannelHandlerContext, _ text: String, flush: Bool = true) {
        let part = wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text))))
        if flush { context.writeAndFlush(part, promise: nil) } else { context.write(part, promise: nil) }
    }
}
