import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import VTensor

/// Where the server is: `http://HOST:PORT[/PREFIX]`.
struct ServerAddress: Sendable, Equatable {
    var host: String
    var port: Int
    /// Put before the endpoint paths ("" or "/prefix").
    var pathPrefix: String

    init(host: String, port: Int, pathPrefix: String = "") {
        self.host = host
        self.port = port
        self.pathPrefix = pathPrefix
    }

    /// Parses a base URL; only plain HTTP (this client speaks HTTP/1.1 without TLS).
    init(baseURL: String) throws(RequestFailure) {
        func bad(_ problem: String) -> RequestFailure { RequestFailure(reason: "bad --base-url", detail: "--base-url \(baseURL): \(problem)") }
        guard baseURL.hasPrefix("http://") else {
            throw bad(baseURL.hasPrefix("https://") ? "https is not supported (plain HTTP/1.1 only)" : "must start with http://")
        }
        let rest = baseURL.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        var prefix = String(rest.dropFirst(authority.count))
        while prefix.hasSuffix("/") { prefix.removeLast() }
        var host = String(authority), port = 80
        if authority.hasPrefix("[") {
            // [IPv6]:port
            guard let close = authority.firstIndex(of: "]") else { throw bad("unclosed [ in the host") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { guard let p = Int(after.dropFirst()) else { throw bad("bad port") }; port = p }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]) else { throw bad("bad port") }
            port = p
        }
        guard !host.isEmpty else { throw bad("no host") }
        guard (1...65535).contains(port) else { throw bad("port \(port) is out of range") }
        self.init(host: host, port: port, pathPrefix: prefix)
    }

    var hostHeader: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }
}

/// The final state of one streamed request, and whether its connection can carry another.
struct StreamOutcome: Sendable {
    var state: StreamState
    var reusable: Bool
    /// The body, for a plain (not streamed) request.
    var body: [UInt8] = []
}

/// One keep-alive HTTP/1.1 connection that carries one streaming request at a time.
final class StreamingConnection: Sendable {
    let channel: any Channel
    private let handler: NIOLoopBound<StreamingResponseHandler>

    private init(channel: any Channel, handler: NIOLoopBound<StreamingResponseHandler>) {
        self.channel = channel
        self.handler = handler
    }

    static func connect(to address: ServerAddress, group: any EventLoopGroup) async throws -> StreamingConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(StreamingResponseHandler())
                }
            }
            .connect(host: address.host, port: address.port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: StreamingResponseHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return StreamingConnection(channel: channel, handler: handler)
    }

    var isActive: Bool { channel.isActive }

    /// Sends a request and waits for its stream to end (or fail, or time out). Never throws:
    /// failures are in the outcome's state.
    func send(head: HTTPRequestHead, body: [UInt8], start: UInt64, timeout: TimeAmount) async -> StreamOutcome {
        let promise = channel.eventLoop.makePromise(of: StreamOutcome.self)
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.begin(head: head, body: body, state: StreamState(start: start), plain: false, timeout: timeout, promise: promise)
        }
        // The promise is always completed (by the handler) with an outcome, never failed.
        return (try? await promise.futureResult.get()) ?? StreamOutcome(state: StreamState(start: start), reusable: false)
    }

    /// A plain request (a GET of /v1/models): its body when the status is 200, else nil.
    func fetch(head: HTTPRequestHead, timeout: TimeAmount) async -> [UInt8]? {
        let promise = channel.eventLoop.makePromise(of: StreamOutcome.self)
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.begin(head: head, body: [], state: StreamState(start: monotonicNanos()), plain: true, timeout: timeout, promise: promise)
        }
        guard let outcome = try? await promise.futureResult.get(), outcome.state.failure == nil else { return nil }
        return outcome.body
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// Reads one streaming response at a time: the status, then the SSE body event by event,
/// each stamped with the time its bytes arrived. Lives on the channel's event loop.
final class StreamingResponseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private var context: ChannelHandlerContext?
    private var promise: EventLoopPromise<StreamOutcome>?
    private var state = StreamState(start: 0)
    private var parser = SSEParser()
    private var status: HTTPResponseStatus?
    private var keepAlive = true
    /// The body of an error status or of a plain request.
    private var collected: [UInt8] = []
    private var plain = false
    private var timeoutTask: Scheduled<Void>?
    private let decoder = JSONDecoder()

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func begin(head: HTTPRequestHead, body: [UInt8], state: StreamState, plain: Bool, timeout: TimeAmount, promise: EventLoopPromise<StreamOutcome>) {
        guard let context, context.channel.isActive, self.promise == nil else {
            promise.succeed(StreamOutcome(state: failed(state, .closedMidStream("the connection was closed before the request was sent")), reusable: false))
            return
        }
        self.promise = promise
        self.state = state
        parser = SSEParser()
        status = nil
        keepAlive = true
        self.plain = plain
        collected.removeAll()
        timeoutTask = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            self?.finish(failure: RequestFailure(reason: "timed out", detail: "no complete response within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard promise != nil else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
            keepAlive = head.isKeepAlive
            if head.status == .ok, !plain, head.headers["Content-Type"].first?.lowercased().hasPrefix("application/json") == true {
                finish(failure: RequestFailure(reason: "response not streamed", detail: "the server answered with one JSON body (Content-Type application/json), not SSE"))
            }
        case .body(let buffer):
            if status != .ok || plain {
                let limit = plain ? 16 << 20 : 65536
                if collected.count < limit { collected += buffer.readableBytesView.prefix(limit - collected.count) }
                return
            }
            let now = monotonicNanos()
            let decoder = self.decoder
            let problem = buffer.withUnsafeReadableBytes { bytes in
                parser.feed(bytes) { state.event($0, at: now, decoder: decoder) }
            }
            if let problem { finish(failure: .malformed(problem)) } else if let failure = state.failure { finish(failure: failure) }
        case .end:
            guard let status else { return }
            if status != .ok {
                finish(failure: Self.httpFailure(status, collected), reusable: keepAlive)
                return
            }
            if plain {
                finish(failure: nil, reusable: keepAlive)
                return
            }
            let now = monotonicNanos()
            let decoder = self.decoder
            if let problem = parser.finish(onEvent: { state.event($0, at: now, decoder: decoder) }) {
                finish(failure: .malformed(problem))
                return
            }
            state.ended()
            finish(failure: state.failure, reusable: keepAlive)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if promise != nil { finish(failure: closedFailure) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if promise != nil {
            switch error {
            // The decoder's word for a connection closed inside a chunked body.
            case HTTPParserError.invalidEOFState: finish(failure: closedFailure)
            case is HTTPParserError: finish(failure: RequestFailure(reason: "malformed HTTP response", detail: "\(error)"))
            default: finish(failure: RequestFailure(reason: "I/O error", detail: "\(error)"))
            }
        }
        context.close(promise: nil)
    }

    private var closedFailure: RequestFailure {
        .closedMidStream(status == nil ? "the server closed the connection before answering"
                                       : "the server closed the connection after \(state.contentChunks) content chunks")
    }

    /// Completes the request; a failure closes the connection unless the response was read
    /// to its end (an HTTP error status).
    private func finish(failure: RequestFailure?, reusable: Bool = false) {
        guard let promise else { return }
        self.promise = nil
        timeoutTask?.cancel()
        timeoutTask = nil
        if let failure { state.failure = failure }
        let keep = reusable && (context?.channel.isActive ?? false)
        promise.succeed(StreamOutcome(state: state, reusable: keep, body: plain ? collected : []))
        if !keep { context?.close(promise: nil) }
    }

    private func failed(_ state: StreamState, _ failure: RequestFailure) -> StreamState {
        var state = state
        state.failure = failure
        return state
    }

    /// "HTTP 404", with the message of an OpenAI-shaped error body when there is one.
    static func httpFailure(_ status: HTTPResponseStatus, _ body: [UInt8]) -> RequestFailure {
        var message = String(decoding: body.prefix(300), as: UTF8.self)
        if let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
            if let error = object["error"] as? [String: Any], let text = error["message"] as? String {
                message = text
            } else if let text = object["error"] as? String ?? object["detail"] as? String ?? object["message"] as? String {
                message = text
            }
        }
        return RequestFailure(reason: "HTTP \(status.code)", detail: "\(status.code) \(status.reasonPhrase): \(message)")
    }
}
