import ArgumentParser
import CLICommon
import Foundation
import Models
import Runtime

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
            model = try GPUModel(config: opened.config, weights: opened.weights, device: backendOptions.device, checkpoint: opened.checkpoint,
                                 maxBatchTokens: max(ids.count, 16), maxLogitRows: ids.count, maxTokensPerSequence: max(ids.count, 16))
            vocabulary = opened.config.vocabSize
        } else {
            let loaded = try modelOptions.openForCPU()
            model = try loaded.cpuModel(maxTokensPerSequence: max(ids.count, 16), nativeWeights: modelOptions.nativeCPUWeights)
            vocabulary = loaded.config.vocabSize
        }
        try model.addSequence(0)
        let logits = try model.reserveAndForward([ForwardInput(id: 0, tokens: ids, allLogits: true)])[0]
        try logits.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: out))
        print("logits: \(ids.count) x \(vocabulary) (\(kind == .cuda ? "cuda, bf16" : "cpu, float32")) -> \(out)")
    }
}
