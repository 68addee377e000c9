import ArgumentParser
import Foundation
import Runtime

struct ModelBenchResult: Codable {
    var date: String
    var backend: String
    var model: String
    var parameters: Int
    var threads: Int
    var batch: Int
    var promptTokens: Int
    var decodeTokens: Int
    var prefillSeconds: Double
    var prefillTokensPerSecond: Double
    var decodeStepMedianMs: Double
    var decodeTokensPerSecond: Double
    /// Weight bytes read per decode step (Float on the CPU) over the step time.
    var decodeWeightGBps: Double
}

/// `vtensor bench model`: prefill and decode throughput of the whole model on random tokens.
struct BenchModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Model prefill and decode throughput (random prompt tokens, greedy continuation).")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var backendOptions: BackendOptions

    @Option(help: "Sequences decoded together.")
    var batch = 1
    @Option(help: "Prompt tokens per sequence.")
    var promptTokens = 128
    @Option(help: "Decode steps.")
    var decodeTokens = 32
    @Option(help: "CPU threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("json-out"), help: "Write the result as JSON.")
    var jsonOut: String?

    func run() throws {
        let (kind, unavailable) = backendOptions.resolve()
        guard kind == .cpu else {
            if let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
            throw ValidationError("--backend cuda: the GPU forward pass is not built yet; use --backend cpu")
        }
        guard batch > 0, promptTokens > 0, decodeTokens > 0 else { throw ValidationError("--batch, --prompt-tokens and --decode-tokens must be positive") }
        let loaded = try modelOptions.open()
        let c = loaded.config
        let cores = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let model = try CPUModel(weights: loaded.weights, kvBudgetBytes: 4 << 30,
                                 maxTokensPerSequence: promptTokens + decodeTokens + 1, threads: cores)
        var rng = SplitMix64(seed: 7)
        var inputs: [ForwardInput] = []
        for id in 0..<batch {
            try model.addSequence(id)
            inputs.append(ForwardInput(id: id, tokens: (0..<promptTokens).map { _ in Int(rng.next() % UInt64(c.vocabSize)) }))
        }
        let start = Date()
        var logits = try model.forward(inputs)
        let prefill = Date().timeIntervalSince(start)
        var steps: [Double] = []
        for _ in 0..<decodeTokens {
            let next = logits.enumerated().map { ForwardInput(id: $0.offset, tokens: [argmax($0.element)]) }
            let t = Date()
            logits = try model.forward(next)
            steps.append(Date().timeIntervalSince(t))
        }
        let stepMedian = median(steps)
        let weightBytes = Double(loaded.weights.parameterCount - c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 0 : 1) + c.hiddenSize) * 4
        let result = ModelBenchResult(
            date: todayUTC(), backend: "cpu", model: loaded.path, parameters: loaded.weights.parameterCount, threads: cores,
            batch: batch, promptTokens: promptTokens, decodeTokens: decodeTokens, prefillSeconds: prefill,
            prefillTokensPerSecond: Double(batch * promptTokens) / prefill, decodeStepMedianMs: stepMedian * 1000,
            decodeTokensPerSecond: Double(batch) / stepMedian, decodeWeightGBps: weightBytes / stepMedian / 1e9)
        var table = Table(title: "model throughput", header: ["backend", "batch", "prompt", "prefill tok/s", "decode step ms", "decode tok/s", "weights GB/s"])
        table.add(["cpu x\(cores)", "\(batch)", "\(promptTokens)", fixed(result.prefillTokensPerSecond, 1),
                   fixed(result.decodeStepMedianMs, 2), fixed(result.decodeTokensPerSecond, 1), fixed(result.decodeWeightGBps, 2)])
        print("model: \(loaded.path) (\(fixed(Double(result.parameters) / 1e6, 1))M parameters, Float)")
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(result)) }
    }
}

func argmax(_ values: [Float]) -> Int {
    var best = 0
    for i in values.indices where values[i] > values[best] { best = i }
    return best
}
