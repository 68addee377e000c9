import ArgumentParser
import CLICommon
import Engine
import Foundation
import Logging
import Runtime
import Server

/// `vtensor serve`: the OpenAI-compatible HTTP API (completions, chat completions, models,
/// health) over the engine, which runs on its own thread (`EngineLoop`).
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /tokenize, /health; the rest in /openapi.json).",
        discussion: ModelOptions.embeddedModelNote + "\n" + """
            Sampling fields a request leaves out take the model's defaults, as for `vtensor generate`; max_tokens
            defaults to the rest of the context (as vLLM does).

            SIGTERM or SIGINT stops the server: it stops accepting connections, lets the requests in flight \
            finish for up to --shutdown-timeout seconds, aborts the rest (their streams end with \
            finish_reason "abort"), and exits 0. Logs go to stderr, each request's lines under its id \
            (the client's X-Request-Id, or a new one, returned in the response's X-Request-Id).
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var engineFlags: EngineFlags

    @Option(help: "The address to listen on.") var host = "127.0.0.1"
    @Option(parsing: .unconditional, help: "The TCP port to listen on.") var port = 8000
    @Option(help: "The model name clients send in \"model\" (default: --model as given, or the embedded model's name).")
    var servedModelName: String?
    @Option(help: "Require \"Authorization: Bearer KEY\" on /v1 requests, /tokenize and /detokenize.") var apiKey: String?
    @Option(parsing: .unconditional, help: "Refuse request bodies larger than this many bytes (413).") var maxBodyBytes = 32 << 20
    @Option(parsing: .unconditional, help: """
        Seconds the requests in flight get to finish after SIGTERM or SIGINT before they are aborted \
        (0, vLLM's default: abort at once).
        """)
    var shutdownTimeout: Double = 0
    @Option(help: """
        A Jinja chat template used instead of the model's (as vLLM's --chat-template): a file, or the \
        template text itself. Its bos_token and eos_token are the model's.
        """)
    var chatTemplate: String?
    @Flag(help: "Parse chat answers to requests with `tools` for tool calls (vLLM's flag; needs --tool-call-parser).")
    var enableAutoToolChoice = false
    @Option(help: "How the model writes tool calls: hermes (<tool_call> JSON blocks: Hermes, Qwen2.5) or llama3_json (Llama 3.1/3.2).")
    var toolCallParser: String?
    @Option(help: "The least severe level logged (to stderr).")
    var logLevel: Logger.Level = .info

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535, got \(port)") }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
        if !(shutdownTimeout >= 0 && shutdownTimeout <= 86_400) {
            throw ValidationError("--shutdown-timeout must be in 0...86400 seconds, got \(shutdownTimeout)")
        }
        if maxBodyBytes < 1 { throw ValidationError("--max-body-bytes must be at least 1, got \(maxBodyBytes)") }
        _ = try toolCallFormat()
    }

    /// The tool-call parser asked for: both flags or neither (vLLM's rule).
    func toolCallFormat() throws -> ToolCallFormat? {
        let names = ToolCallFormat.allCases.map(\.rawValue).joined(separator: ", ")
        switch (enableAutoToolChoice, toolCallParser) {
        case (false, nil): return nil
        case (true, nil): throw ValidationError("--enable-auto-tool-choice needs --tool-call-parser (one of \(names))")
        case (false, _?): throw ValidationError("--tool-call-parser takes effect with --enable-auto-tool-choice")
        case (true, let name?):
            guard let format = ToolCallFormat(rawValue: name) else {
                throw ValidationError("--tool-call-parser must be one of \(names), got \"\(name)\"")
            }
            return format
        }
    }

    func run() throws {
        LoggingSystem.bootstrap { [logLevel] label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let logger = Logger(label: "vtensor")
        let model = try OpenedModel.open(modelOptions, backendOptions, engineFlags, command: "serve")
        let name = servedModelName ?? modelOptions.model ?? "SmolLM2-135M-Instruct"
        let loop = EngineLoop(engine: model.generator.engine)
        let template = try Self.chatTemplate(chatTemplate, model: model)
        let configuration = ServerConfiguration(host: host, port: port, servedModelName: name, apiKey: apiKey,
                                                shutdownTimeout: .milliseconds(Int64((shutdownTimeout * 1000).rounded())),
                                                version: VTensorVersion.number, maxBodyBytes: maxBodyBytes,
                                                toolCallFormat: try toolCallFormat())
        let server = OpenAIServer(configuration: configuration, loop: loop, tokenizer: model.tokenizer, chatTemplate: template, defaults: model.defaultSampling)
        let note = GenerateCommand.samplingNote(model.defaultSampling, source: model.defaultsSource, flagsGiven: false)
        let banner = "model loaded in \(fixed(model.loadSeconds, 2)) s (\(model.runtime.description)); \(note); "
            + "serving \"\(name)\" on http://\(host):\(port)"
        // The server's service group joins the engine thread before it returns.
        let matmuls = model.runtime.matmulReport
        let result = Self.waitFor {
            try await server.run(onRunning: {
                logger.info("\(banner)")
                if let matmuls { logger.info("\(matmuls)") }
            })
        }
        let stats = model.generator.engine.statistics
        if let failure = stats.prefixLastFailure {
            logger.warning("prefix cache: \(stats.prefixAttachFailures) prefixes found but not reused, \(stats.prefixPublishFailures) not shared, \(stats.prefixPackFailures) not packed; the last: \(failure)")
        }
        withExtendedLifetime(model) {}
        if case .failure(let error) = result { throw ValidationError("serve: \(error)") }
        logger.info("stopped")
    }

    /// The model's chat template, or the `--chat-template` override (a file or the text; an
    /// override that does not parse stops the server from starting, not each request). A model
    /// without a usable template still serves /v1/completions; chat requests then get a 400.
    static func chatTemplate(_ override: String?, model: OpenedModel) throws -> Result<ChatTemplate, any Error> {
        let own = Result<ChatTemplate, any Error> { try model.loaded.chatTemplate() }
        guard let override else { return own }
        var source = override
        if FileManager.default.fileExists(atPath: override) {
            do { source = try String(contentsOfFile: override, encoding: .utf8) } catch {
                throw ValidationError("--chat-template: cannot read \(override) as UTF-8 text: \(error)")
            }
        } else if override.hasSuffix(".jinja") || (!override.contains("{") && override.contains("/")) {
            throw ValidationError("--chat-template: no file \(override)")
        }
        let tokens = try? own.get()
        let template: ChatTemplate
        do {
            template = try ChatTemplate(jinja: source, bosToken: tokens?.bosToken ?? "", eosToken: tokens?.eosToken ?? "")
        } catch {
            throw ValidationError("--chat-template: \(error)")
        }
        guard template.runsJinja else { throw ValidationError("--chat-template: the template does not parse as Jinja") }
        return .success(template)
    }

    /// Runs `operation` to its end from this synchronous command (ArgumentParser's root is not async).
    static func waitFor(_ operation: @escaping @Sendable () async throws -> Void) -> Result<Void, any Error> {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<Void, any Error> = .success(())
        Task.detached {
            do { try await operation() } catch { result = .failure(error) }
            done.signal()
        }
        done.wait()
        return result
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
