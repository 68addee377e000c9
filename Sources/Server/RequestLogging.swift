import Engine
import Foundation
import Hummingbird
import Logging
import NIOCore

// Every request gets one id: the client's `X-Request-Id` when it is a sane one, else a new one (as
// vLLM does: its completion ids are "cmpl-" + that id). The id is returned in the response's
// `X-Request-Id`, it is Hummingbird's `context.id`, and every line logged about the request carries
// it as the logger metadata `hb.request.id` (Hummingbird's key, which `context.id` reads).

extension HTTPFields {
    /// The `X-Request-Id` field. (HTTPField.Name itself is not exported by Hummingbird.)
    var requestID: String? {
        get { self[.init("X-Request-Id")!] }
        set { self[.init("X-Request-Id")!] = newValue }
    }
}

enum RequestIDs {
    static let maximumLength = 128

    /// `given` when it is 1...128 visible ASCII characters (no spaces or control characters, so it
    /// stays one token in a log line and a header); otherwise a new id.
    static func resolve(_ given: String?) -> String {
        if let given, (1...maximumLength).contains(given.utf8.count), given.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) {
            return given
        }
        return generate()
    }

    /// 32 lowercase hex digits, like vLLM's `random_uuid()`.
    static func generate() -> String {
        UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    }
}

/// Hummingbird's basic context plus the client's address, for the access log.
struct ServerRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// "127.0.0.1:54321" or "[::1]:54321"; "-" when the socket has no IP address.
    let client: String
    /// The connection, whose `ConnectionWatch` tells when the client leaves (ClientDisconnect.swift).
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
        if let address = source.channel.remoteAddress, let ip = address.ipAddress {
            let host = ip.contains(":") ? "[\(ip)]" : ip
            client = address.port.map { "\(host):\($0)" } ?? host
        } else {
            client = "-"
        }
    }
}

/// `router` with every request, a 404 included, passing through `RequestLoggingMiddleware`
/// (middleware added to a router sees only the routes it matches).
struct LoggedRouter: HTTPResponderBuilder {
    let router: Router<ServerRequestContext>

    func buildResponder() -> CallbackResponder<ServerRequestContext> {
        let inner = router.buildResponder()
        let middleware = RequestLoggingMiddleware()
        return CallbackResponder { request, context in
            try await middleware.handle(request, context: context) { try await inner.respond(to: $0, context: $1) }
        }
    }
}

/// Gives each request its id (see above), runs it with `Logger.current` carrying the id, and logs
/// one access line once the response body is written: `127.0.0.1:54321 "POST /v1/completions" 200 OK 0.412s`.
/// Probes and scrapes (GET /health, /metrics) log theirs at debug, the rest at info.
struct RequestLoggingMiddleware: RouterMiddleware {
    typealias Context = ServerRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let id = RequestIDs.resolve(request.headers.requestID)
        var context = context
        context.logger[metadataKey: "hb.request.id"] = .string(id)
        let logger = context.logger
        let quiet = request.method == .get && ["/health", "/metrics"].contains(request.uri.path)
        let line = "\(context.client) \"\(request.method.rawValue) \(request.uri.description)\""
        var response: Response
        do {
            response = try await withLogger(logger) { _ in try await next(request, context) }
        } catch let error as any HTTPResponseError {
            // Hummingbird's own errors (an unknown path): answered here so the id goes back too.
            response = try error.response(from: request, context: context)
        } catch {
            logger.error("\(line) failed: \(error)")
            throw error
        }
        response.headers.requestID = id
        let body = response.body
        let status = "\(response.status.code) \(response.status.reasonPhrase)"
        // Logged after the body, so a stream's line comes when it ends and carries its whole duration.
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            do {
                try await body.write(writer)
            } catch {
                logger.info("\(line) \(status) \(seconds(.now - start)), cut: \(error)")
                throw error
            }
            logger.log(level: quiet ? .debug : .info, "\(line) \(status) \(seconds(.now - start))")
        }
        return response
    }
}

/// What a completion logs under its request id: received, then finished (or the client went away).
struct CompletionLog: Sendable {
    let logger: Logger
    let start: ContinuousClock.Instant

    /// The request's logger, taken while the handler runs inside the middleware's scope; a
    /// stream's body runs after that scope and logs through this copy.
    init() {
        logger = Logger.current
        start = .now
    }

    func received(promptTokens: Int, maxTokens: Int?, choices: Int, stream: Bool) {
        logger.info("""
            received: prompt_tokens=\(promptTokens) max_tokens=\(maxTokens.map(String.init) ?? "none") \
            n=\(choices) stream=\(stream)
            """)
    }

    /// One line for the whole response: each choice's finish reason, the tokens, the time taken.
    func finished(_ choices: [ChoiceState], promptTokens: Int) {
        let reasons = choices.map { $0.finish?.rawValue ?? "none" }.joined(separator: ",")
        let errors = choices.compactMap(\.error)
        let error = errors.isEmpty ? "" : " error=\(errors[0])"
        logger.info("""
            finished: finish_reason=\(reasons) prompt_tokens=\(promptTokens) \
            completion_tokens=\(choices.reduce(0) { $0 + $1.outputTokens }) duration=\(seconds(.now - start))\(error)
            """)
    }

    func clientWentAway(_ error: (any Error)? = nil) {
        logger.info("aborted: the client went away\(error.map { " (\($0))" } ?? "")")
    }
}
