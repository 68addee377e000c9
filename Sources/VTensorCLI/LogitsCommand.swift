import ArgumentParser
import Foundation
import Models
import Runtime

/// Options naming a model, shared by generate, logits and the model benchmarks.
struct ModelOptions: ParsableArguments {
    @Option(help: "A Hugging Face model directory, a .gguf file, or (with --load-format dummy) a preset: \(ModelPresets.names.joined(separator: ", ")). Default: the embedded SmolLM2-135M-Instruct.")
    var model: String?

    @Option(help: "auto (read the weights) or dummy (random weights at the config's size).")
    var loadFormat: String = "auto"

    @Option(help: "CPU backend: native (a GGUF's Q4_0/Q4_1/Q8_0 matrices stay in their block format for decode) or float.")
    var cpuWeights: String = "native"

    var nativeCPUWeights: Bool { cpuWeights != "float" }

    /// What the GPU model needs: the config, and host weights unless they are dummy (then the
    /// device generates them: no host copy of an 8B model). A dummy preset needs no files at all.
    func openForGPU() throws -> (config: ModelConfig, weights: ModelWeights?, label: String) {
        let dummy = LoadFormat(rawValue: loadFormat) == .dummy
        if dummy, let name = model, let preset = ModelPresets.config(named: name) { return (preset, nil, name) }
        let loaded = try open()
        return (loaded.config, dummy ? nil : loaded.weights, loaded.path)
    }

    func open() throws -> LoadedModel {
        guard let format = LoadFormat(rawValue: loadFormat) else {
            throw ValidationError("--load-format must be one of \(LoadFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return try LoadedModel.open(model, format: format)
    }
}

/// Teacher-forced logits of a token sequence, for agreement checks against a reference.
struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Write the logits of a teacher-forced forward pass (float32, [tokens, vocab], little-endian).")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var backendOptions: BackendOptions

    @Option(help: "Token ids, comma-separated.")
    var tokens: String

    @Option(help: "Output file (raw float32).")
    var out: String

    func run() throws {
        let ids = try tokens.split(separator: ",").map { piece -> Int in
            guard let id = Int(piece.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--tokens: \(piece) is not an integer")
            }
            return id
        }
        guard !ids.isEmpty else { throw ValidationError("--tokens is empty") }
        let (kind, unavailable) = backendOptions.resolve()
        if kind == .cuda, let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
        let model: any LanguageModel
        let vocabulary: Int
        if kind == .cuda {
            let opened = try modelOptions.openForGPU()
            model = try GPUModel(config: opened.config, weights: opened.weights, device: backendOptions.device,
                                 maxBatchTokens: max(ids.count, 16), maxLogitRows: ids.count, maxTokensPerSequence: max(ids.count, 16))
            vocabulary = opened.config.vocabSize
        } else {
            let loaded = try modelOptions.open()
            model = try loaded.cpuModel(maxTokensPerSequence: max(ids.count, 16), nativeWeights: modelOptions.nativeCPUWeights)
            vocabulary = loaded.config.vocabSize
        }
        try model.addSequence(0)
        let logits = try model.reserveAndForward([ForwardInput(id: 0, tokens: ids, allLogits: true)])[0]
        try logits.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: out))
        print("logits: \(ids.count) x \(vocabulary) (\(kind == .cuda ? "cuda, bf16" : "cpu, float32")) -> \(out)")
    }
}
