import ArgumentParser
import CLICommon
import Engine
import Foundation
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
            defaults to the rest of the context (as vLLM does). SIGTERM or SIGINT stops the server.
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

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535, got \(port)") }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
        if maxBodyBytes < 1 { throw ValidationError("--max-body-bytes must be at least 1, got \(maxBodyBytes)") }
    }

    func run() throws {
        let model = try OpenedModel.open(modelOptions, backendOptions, engineFlags, command: "serve")
        let name = servedModelName ?? modelOptions.model ?? "SmolLM2-135M-Instruct"
        let loop = EngineLoop(engine: model.generator.engine)
        let template = Result<ChatTemplate, any Error> { try model.loaded.chatTemplate() }
        let server = OpenAIServer(configuration: ServerConfiguration(host: host, port: port, servedModelName: name, apiKey: apiKey,
                                                                         version: VTensorVersion.number, maxBodyBytes: maxBodyBytes),
                                  loop: loop, tokenizer: model.tokenizer, chatTemplate: template, defaults: model.defaultSampling)
        let note = GenerateCommand.samplingNote(model.defaultSampling, source: model.defaultsSource, flagsGiven: false)
        let banner = "vtensor: model loaded in \(fixed(model.loadSeconds, 2)) s (\(model.runtime.description)); \(note); "
            + "serving \"\(name)\" on http://\(host):\(port)\n"
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: (any Error)?
        Task.detached {
            do {
                try await server.run(onRunning: { FileHandle.standardError.write(Data(banner.utf8)) })
            } catch {
                failure = error
            }
            done.signal()
        }
        done.wait()
        loop.shutdown()
        withExtendedLifetime(model) {}
        if let failure { throw ValidationError("serve: \(failure)") }
    }
}
