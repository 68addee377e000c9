import Engine
import Foundation
import Hummingbird
import Runtime
import Structured
import Tokenizers

/// Where and how `vtensor serve` listens.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The name clients use in `model` (and that `/v1/models` lists).
    public var servedModelName: String
    /// When set, every /v1 request (and /tokenize, /detokenize) needs `Authorization: Bearer <apiKey>`.
    public var apiKey: String?
    /// How long SIGTERM or SIGINT lets in-flight requests finish before they are aborted.
    public var shutdownTimeout: Duration
    /// What `GET /version` reports (the CLI's release number; Server does not depend on the CLI).
    public var version: String
    /// Request bodies above this many bytes get a 413.
    public var maxBodyBytes: Int
    /// How chat answers to requests with `tools` are parsed for calls (nil: they are not).
    public var toolCallFormat: ToolCallFormat?

    public init(host: String = "127.0.0.1", port: Int = 8000, servedModelName: String, apiKey: String? = nil,
                shutdownTimeout: Duration = .zero, version: String = "unknown", maxBodyBytes: Int = 32 << 20,
                toolCallFormat: ToolCallFormat? = nil) {
        self.host = host
        self.port = port
        self.servedModelName = servedModelName
        self.apiKey = apiKey
        self.shutdownTimeout = shutdownTimeout
        self.version = version
        self.maxBodyBytes = maxBodyBytes
        self.toolCallFormat = toolCallFormat
    }
}

/// Every route the server answers. The router is built from this table, and a test checks the
/// OpenAPI document against it, so the two cannot drift apart.
public enum Endpoint: CaseIterable, Sendable {
    case health, version, models, completions, chatCompletions, tokenize, detokenize, metrics, openAPI, resetPrefixCache

    public var route: (method: String, path: String) {
        switch self {
        case .health: ("GET", "/health")
        case .version: ("GET", "/version")
        case .models: ("GET", "/v1/models")
        case .completions: ("POST", "/v1/completions")
        case .chatCompletions: ("POST", "/v1/chat/completions")
        case .tokenize: ("POST", "/tokenize")
        case .detokenize: ("POST", "/detokenize")
        case .metrics: ("GET", "/metrics")
        case .openAPI: ("GET", "/openapi.json")
        case .resetPrefixCache: ("POST", "/reset_prefix_cache")
        }
    }

    /// Whether `--api-key` guards it (the OpenAI API, tokenization and the cache reset; not probes or documents).
    public var needsKey: Bool {
        switch self {
        case .models, .completions, .chatCompletions, .tokenize, .detokenize, .resetPrefixCache: true
        case .health, .version, .metrics, .openAPI: false
        }
    }
}

/// The OpenAI-compatible HTTP API over an `EngineLoop`: handlers turn JSON into token ids,
/// submit them, and await the request's `AsyncStream`; they never wait on a step.
public final class OpenAIServer: Sendable {
    public let configuration: ServerConfiguration
    let loop: EngineLoop
    let tokenizer: Tokenizer
    let chatTemplate: ChatTemplate?
    let chatTemplateProblem: String?
    /// Sampling for the fields a request leaves out (the model's generation defaults).
    let defaults: SamplingParameters
    /// Structured output: compiled grammars by constraint, for this tokenizer.
    let grammars: GrammarCache

    public init(configuration: ServerConfiguration, loop: EngineLoop, tokenizer: Tokenizer,
                chatTemplate: Result<ChatTemplate, any Error>, defaults: SamplingParameters) {
        self.configuration = configuration
        self.loop = loop
        self.tokenizer = tokenizer
        grammars = GrammarCache(tokenizer: tokenizer)
        switch chatTemplate {
        case .success(let template): self.chatTemplate = template; chatTemplateProblem = nil
        case .failure(let error): self.chatTemplate = nil; chatTemplateProblem = "\(error)"
        }
        var defaults = defaults
        defaults.maxTokens = nil
        self.defaults = defaults
    }

    /// Serves until SIGTERM or SIGINT (see ServerService.swift); `onRunning` is called once the socket listens.
    public func run(onRunning: @escaping @Sendable () -> Void = {}) async throws {
        let router = Router(context: ServerRequestContext.self)
        router.add(middleware: RouteFallback(server: self))
        for endpoint in Endpoint.allCases {
            router.on(RouterPath(endpoint.route.path), method: HTTPRequest.Method(endpoint.route.method)!) { request, context in
                if endpoint.needsKey, let refusal = self.unauthorized(request) { return refusal }
                do { return try await self.respond(endpoint, request, context: context) } catch { return self.errorResponse(error) }
            }
        }
        let app = Application(
            router: LoggedRouter(router: router),
            server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionWatch()])),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "vtensor"),
            onServerRunning: { _ in onRunning() }, logger: Self.logger)
        try await serve(app)
    }

    func respond(_ endpoint: Endpoint, _ request: Request, context: ServerRequestContext) async throws -> Response {
        switch endpoint {
        case .health: Response(status: .ok)
        case .version: json(.ok, ["version": configuration.version])
        case .models: models()
        case .completions: try await completions(request, context: context, chat: false)
        case .chatCompletions: try await completions(request, context: context, chat: true)
        case .tokenize: try await tokenize(request)
        case .detokenize: try await detokenize(request)
        case .metrics: metrics()
        case .openAPI: openAPIDocument()
        case .resetPrefixCache: try resetPrefixCache()
        }
    }
}
