import Engine
import Foundation
import Hummingbird
import Runtime
import Tokenizers

/// Where and how `vtensor serve` listens.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The name clients use in `model` (and that `/v1/models` lists).
    public var servedModelName: String
    /// When set, every /v1 request needs `Authorization: Bearer <apiKey>`.
    public var apiKey: String?
    /// How long SIGTERM or SIGINT lets in-flight requests finish before they are aborted.
    public var shutdownTimeout: Duration

    public init(host: String = "127.0.0.1", port: Int = 8000, servedModelName: String, apiKey: String? = nil,
                shutdownTimeout: Duration = .zero) {
        self.host = host
        self.port = port
        self.servedModelName = servedModelName
        self.apiKey = apiKey
        self.shutdownTimeout = shutdownTimeout
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

    public init(configuration: ServerConfiguration, loop: EngineLoop, tokenizer: Tokenizer,
                chatTemplate: Result<ChatTemplate, any Error>, defaults: SamplingParameters) {
        self.configuration = configuration
        self.loop = loop
        self.tokenizer = tokenizer
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
        router.get("/health") { _, _ in Response(status: .ok) }
        router.get("/metrics") { _, _ in self.metrics() }
        router.get("/v1/models") { request, _ in self.guarded(request) { self.models() } }
        router.post("/v1/completions") { request, context in
            await self.guardedAsync(request) { try await self.completions(request, context: context, chat: false) }
        }
        router.post("/v1/chat/completions") { request, context in
            await self.guardedAsync(request) { try await self.completions(request, context: context, chat: true) }
        }
        let app = Application(
            router: LoggedRouter(router: router),
            server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionWatch()])),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "vtensor"),
            onServerRunning: { _ in onRunning() }, logger: Self.logger)
        try await serve(app)
    }
}
