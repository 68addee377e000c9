import ArgumentParser
import CLICommon
import Engine
import Foundation
import Models
import Runtime
import Tokenizers

/// `vtensor chat`: an interactive conversation. Each turn sends the whole conversation through
/// the model's chat template; the engine's prefix cache finds the earlier turns' K/V, so a turn
/// computes only its new tokens (the status line after each reply says how many were reused).
struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a model: one line a turn on standard input; /reset starts over, /exit or end of input quits.",
        discussion: ModelOptions.embeddedModelNote + "\n" + """
            Sampling defaults as for `vtensor generate`.
            Earlier turns are not recomputed: their K/V stays in the prefix cache between turns.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var engineFlags: EngineFlags

    @Option(help: "The system message (default: the template's own default, if any).") var system: String?
    @Option(parsing: .unconditional, help: "Most tokens a reply may have.") var maxTokens = 512
    @Option(parsing: .unconditional, help: "0 is greedy.") var temperature: Double?
    @Option(parsing: .unconditional, help: "Nucleus sampling mass (0, 1].") var topP: Double?
    @Option(parsing: .unconditional, help: "Seed for reproducible sampling.") var seed: Int?

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
    }

    func run() throws {
        let model = try OpenedModel.open(modelOptions, backendOptions, engineFlags, command: "chat")
        let (runtime, tokenizer, generator, defaultsSource) = (model.runtime, model.tokenizer, model.generator, model.defaultsSource)
        let template = try model.loaded.chatTemplate()
        var parameters = model.defaultSampling
        if let temperature { parameters.temperature = temperature }
        if let topP { parameters.topP = topP }
        parameters.seed = seed
        parameters.maxTokens = maxTokens
        try parameters.validate()
        let note = GenerateCommand.samplingNote(parameters, source: defaultsSource, flagsGiven: temperature != nil || topP != nil)
        let err = FileHandle.standardError, out = FileHandle.standardOutput
        err.write(Data("vtensor: model loaded in \(fixed(model.loadSeconds, 2)) s (\(runtime.description)); \(note)\n".utf8))
        let interactive = isatty(0) == 1

        var messages: [ChatMessage] = system.map { [.system($0)] } ?? []
        while true {
            if interactive { err.write(Data("> ".utf8)) }
            guard let line = readLine() else { break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text == "/exit" { break }
            if text == "/reset" {
                messages = system.map { [.system($0)] } ?? []
                err.write(Data("[conversation cleared]\n".utf8))
                continue
            }
            messages.append(.user(text))
            let prompt = tokenizer.encode(try template.render(messages, addGenerationPrompt: true), addSpecialTokens: true)
            let before = generator.engine.statistics.prefixHitTokens
            let result: GenerationResult
            do {
                let progress = PromptProgress()
                result = try generator.generate(prompt: prompt, parameters: parameters, onText: {
                    progress.clear()
                    out.write(Data($0.utf8))
                }, onPromptProgress: progress.update)
            } catch {
                // The turn is refused (the conversation outgrew the context): say so, keep the session.
                messages.removeLast()
                err.write(Data("\n[turn refused: \(error); /reset starts over]\n".utf8))
                continue
            }
            out.write(Data("\n".utf8))
            if let error = result.error { throw ValidationError(error) }
            messages.append(.assistant(result.text))
            let reused = generator.engine.statistics.prefixHitTokens - before
            err.write(Data(("[\(result.promptTokens) prompt tokens (\(reused) reused from earlier turns), \(result.tokens.count) generated, "
                            + "finish: \(result.finishReason.rawValue); first token \(fixed(result.timeToFirstToken * 1000, 1)) ms, "
                            + "\(fixed(result.decodeTokensPerSecond, 1)) tokens/s]\n").utf8))
        }
    }
}
