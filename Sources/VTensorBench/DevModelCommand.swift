import CLinux
import ArgumentParser
import CLICommon
import Foundation
import Models
import Kernels
import Runtime
import VTensor

/// `vtensor dev model`: the GPU forward pass (bf16) against the CPU forward pass (fp32, the
/// oracle) on small random models of every supported kind, through prefill, extend mixed with
/// prefill, and decode steps, with a sequence whose KV spans several chunks.
struct DevModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Check the GPU forward pass against the CPU forward pass on small random models.")

    @Option(help: "CUDA device ordinal.")
    var device = 0
    @Option(name: .customLong("json-out"), help: "Write every comparison as JSON.")
    var jsonOut: String?
    @Option(help: "Run the cuBLASLt products with the algorithms an autotune at load chose (on, the default, as in service; no tuning cache), or with cuBLASLt's heuristic (off) (GPUModel.Options.matmulAutotune).")
    var matmulAutotune: OnOff = .on
    @Option(help: "With --matmul-autotune on: also time split-K variants of the heuristic's candidates (GPUModel.Options.matmulAutotuneSplitK).")
    var matmulAutotuneSplitK: OnOff = .off

    struct Check: Codable {
        var model: String
        var step: String
        var rows: Int
        var minCosine: Double
        var meanCosine: Double
        var top1Agreement: Double
        /// Top-1 agreement counting a different argmax as agreeing when the reference's logits of the
        /// two ids differ by less than 4x the row's RMS difference (a tie within the measured noise).
        var top1AgreementBeyondTies: Double
        var relativeError: Double
        var pass: Bool
    }

    static let models: [(name: String, json: String)] = [
        ("llama GQA 8/2 d128", #"{"model_type":"llama","hidden_size":512,"intermediate_size":1024,"num_hidden_layers":3,"num_attention_heads":8,"num_key_value_heads":2,"vocab_size":1000,"max_position_embeddings":8192,"rms_norm_eps":1e-5,"rope_theta":500000,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":64}}"#),
        ("smollm tied 9/3 d64", #"{"model_type":"llama","hidden_size":576,"intermediate_size":1536,"num_hidden_layers":3,"num_attention_heads":9,"num_key_value_heads":3,"vocab_size":1200,"max_position_embeddings":8192,"rms_norm_eps":1e-5,"rope_theta":100000,"tie_word_embeddings":true}"#),
        ("qwen2 biases 7/1 d64", #"{"model_type":"qwen2","hidden_size":448,"intermediate_size":896,"num_hidden_layers":3,"num_attention_heads":7,"num_key_value_heads":1,"vocab_size":900,"max_position_embeddings":8192,"rms_norm_eps":1e-6,"rope_theta":1000000,"sliding_window":8,"use_sliding_window":false}"#),
        ("mistral window 16 8/4 d128", #"{"model_type":"mistral","hidden_size":1024,"intermediate_size":2048,"num_hidden_layers":3,"num_attention_heads":8,"num_key_value_heads":4,"vocab_size":1000,"max_position_embeddings":8192,"rms_norm_eps":1e-5,"rope_theta":10000,"sliding_window":16}"#),
    ]

    func run() throws {
        if let reason = gpuUnavailableReason() { throw ValidationError("dev model needs a GPU: \(reason)") }
        vt_line_buffer_stdout()  // every line reaches a redirected log, even if a check traps
        var checks: [Check] = []
        var feedFailures = 0
        var graphFailures = 0
        var rng = SplitMix64(seed: 11)
        for (name, json) in Self.models {
            let config = try ModelConfig.decode(Data(json.utf8), path: name)
          for (policy, persistent, graphs) in [(GPUModel.MatmulPolicy.auto, false, false), (.cublas, false, false), (.auto, true, false),
                                               (.auto, false, true)] {
            let name = "\(name) [matmul \(policy.rawValue)\(persistent ? ", persistent layers" : "")\(graphs ? ", CUDA graphs" : "")"
                + "\(matmulAutotune == .on ? ", autotuned" : "")\(matmulAutotune == .on && matmulAutotuneSplitK == .on ? " with split-K" : "")]"
            // Both sides get the same bf16-representable weights, so differences come from the arithmetic alone.
            let weights = Self.roundedToBF16(ModelWeights.dummy(config: config, seed: 5, std: 0.05))
            let cpu = try CPUModel(weights: weights, kvBudgetBytes: 1 << 30, maxTokensPerSequence: 8192)
            let gpu = try GPUModel(config: config, weights: weights, device: device, kvBudget: .bytes(1 << 30), maxBatchTokens: 6000,
                                   maxLogitRows: 256, maxTokensPerSequence: 8192,
                                   options: GPUModel.Options(matmulPolicy: policy, persistentLayers: persistent, cudaGraphs: graphs,
                                                             matmulAutotune: matmulAutotune == .on,
                                                             matmulAutotuneSplitK: matmulAutotuneSplitK == .on))
            func tokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int(rng.next() % UInt64(config.vocabSize)) } }
            func compare(_ step: String, _ inputs: [ForwardInput]) throws {
                let a = try cpu.reserveAndForward(inputs), b = try gpu.reserveAndForward(inputs)
                checks.append(Self.compare(model: name, step: step, reference: a, candidate: b, vocab: config.vocabSize))
                let c = checks.last!
                print("\(c.pass ? "PASS" : "FAIL") \(name) \(step): \(c.rows) rows, cosine min \(fixed(c.minCosine, 5)) mean \(fixed(c.meanCosine, 5)), top-1 \(fixed(c.top1Agreement, 3)), rel err \(fixed(c.relativeError, 4))")
            }
            for id in 0..<16 { try cpu.addSequence(id); try gpu.addSequence(id) }
            try compare("prefill 37", [ForwardInput(id: 0, tokens: tokens(37), allLogits: true)])
            // A short step that is not decode (every row's logits): the unfused path.
            try compare("extend 3", [ForwardInput(id: 0, tokens: tokens(3), allLogits: true)])
            // 12 and 7 token rows: the tensor-core skinny matmul (5-16 rows); 37 above goes to cuBLASLt.
            try compare("extend 5 + prefill 6 + prefill 1", [ForwardInput(id: 0, tokens: tokens(5), allLogits: true),
                                                             ForwardInput(id: 1, tokens: tokens(6), allLogits: true),
                                                             ForwardInput(id: 2, tokens: tokens(1), allLogits: true)])
            try compare("extend 2 + 3 + 2", [ForwardInput(id: 0, tokens: tokens(2), allLogits: true),
                                             ForwardInput(id: 1, tokens: tokens(3), allLogits: true),
                                             ForwardInput(id: 2, tokens: tokens(2), allLogits: true)])
            for s in 0..<4 {
                let next = (0..<3).map { _ in tokens(1) }
                try compare("decode step \(s + 1) (3 sequences)", (0..<3).map { ForwardInput(id: $0, tokens: next[$0]) })
            }
            // 8 and 13 sequences a step: the fused decode matmuls on tensor cores (5-16 rows).
            for (s, ids) in [[0, 1, 2, 4, 5, 6, 7, 8], [0, 1, 2, 4, 5, 6, 7, 8], [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]].enumerated() {
                let next = ids.map { _ in tokens(1) }
                try compare("decode step \(s + 5) (\(ids.count) sequences)", zip(ids, next).map { ForwardInput(id: $0, tokens: $1) })
            }
            // 20 and 40 sequences a step (cuBLASLt, unfused), three steps each: with CUDA graphs
            // the first runs its bucket (24, 40) directly, the second captures, the third replays;
            // 13 above pads to 16 and 3 to itself.
            let wide = Array(40..<80)
            for id in wide { try cpu.addSequence(id); try gpu.addSequence(id) }
            try compare("prefill x40 (2-9 tokens each)", wide.map { ForwardInput(id: $0, tokens: tokens(2 + $0 % 8), allLogits: false) })
            for (s, count) in [20, 20, 20, 40, 40, 40].enumerated() {
                let next = (0..<count).map { _ in tokens(1) }
                try compare("decode step \(s + 1) (\(count) sequences)", (0..<count).map { ForwardInput(id: wide[$0], tokens: next[$0]) })
            }
            // A mixed step as the engine makes them: decodes (one token: decode attention) next to a
            // prompt chunk and an extend (prefill attention), in one step, rows interleaved.
            try compare("mixed: decode x3 + prefill 20 + extend 4", [ForwardInput(id: 0, tokens: tokens(1)), ForwardInput(id: 14, tokens: tokens(20)),
                                                                      ForwardInput(id: 1, tokens: tokens(1)), ForwardInput(id: 4, tokens: tokens(4)),
                                                                      ForwardInput(id: 2, tokens: tokens(1))])
            try compare("mixed: prefill chunk 2 of seq 14 (17) + decode x2", [ForwardInput(id: 14, tokens: tokens(17)), ForwardInput(id: 0, tokens: tokens(1)),
                                                                             ForwardInput(id: 1, tokens: tokens(1))])
            // A long prompt whose K/V spans more than one 2 MiB chunk where the workspace allows.
            let long = tokens(min(gpu.cache!.layout.tokensPerChunk + 300, 6000))
            let a = try cpu.reserveAndForward([ForwardInput(id: 3, tokens: long, allLogits: false)])
            let b = try gpu.reserveAndForward([ForwardInput(id: 3, tokens: long, allLogits: false)])
            checks.append(Self.compare(model: name, step: "prefill \(long.count) (last row)", reference: a, candidate: b, vocab: config.vocabSize))
            let last = checks.last!
            print("\(last.pass ? "PASS" : "FAIL") \(name) \(last.step): cosine \(fixed(last.minCosine, 5)), top-1 \(fixed(last.top1Agreement, 3))")
            try compare("decode after \(long.count)", [ForwardInput(id: 3, tokens: tokens(1)), ForwardInput(id: 0, tokens: tokens(1))])
            print("  KV: \(gpu.cache!.accounting.mappedChunks) chunks mapped for \(gpu.cache!.accounting.tokens) tokens")
            if graphs {
                // The graph path must have replayed, or its checks above measured the direct path.
                let totals = gpu.stepTotals
                print("  CUDA graphs: \(totals.graphReplays) steps replayed, \(totals.graphCaptures) captured, \(totals.graphDirect) run directly")
                if totals.graphReplays == 0 || totals.graphCaptures == 0 { graphFailures += 1 }
            }

            // Fed decodes (the pipelined step): step A picks greedily on the GPU; step B, queued
            // before A is collected, takes A's picks as its input tokens on the device
            // (vt_feed_tokens, feeds in reverse row order). Its picks must equal those of a twin
            // step whose tokens the host writes (the CPU side of the feed), on sequences with the
            // same histories: same kernels, same shapes, so equal bit for bit.
            let fedIDs = [20, 21, 22], twinIDs = [30, 31, 32]
            let prompts = [tokens(5), tokens(9), tokens(3)]
            let greedy = DeviceDraw(parameters: SamplingParameters(temperature: 0), u: 0)
            for id in fedIDs + twinIDs { try gpu.addSequence(id) }
            let stepA = zip(fedIDs + twinIDs, prompts + prompts).map { ForwardInput(id: $0, tokens: $1) }
            try gpu.reserve(stepA)
            let queuedA = try gpu.queueStep(stepA, feeds: [], draws: stepA.map { _ in greedy }, vocabularyLimit: config.vocabSize)
            let stepB = fedIDs.reversed().map { ForwardInput(id: $0, tokens: [0]) }
            try gpu.reserve(stepB)
            let feeds = (0..<3).map { StepFeed(input: $0, previousInput: 2 - $0) }
            let queuedB = try gpu.queueStep(stepB, feeds: feeds, draws: stepB.map { _ in greedy }, vocabularyLimit: config.vocabSize)
            let picksA = try gpu.collect(queuedA).map(\.id)
            let picksB = try gpu.collect(queuedB).map(\.id)
            let twin = twinIDs.reversed().enumerated().map { i, id in ForwardInput(id: id, tokens: [picksA[2 - i]]) }
            let picksTwin = try gpu.reserveAndSample(twin, draws: twin.map { _ in greedy }, vocabularyLimit: config.vocabSize).map(\.id)
            let fedPass = picksB == picksTwin
            if !fedPass { feedFailures += 1 }
            print("\(fedPass ? "PASS" : "FAIL") \(name) fed decode x3 (picks of the step before, on the device): \(picksB) vs host-fed \(picksTwin)")
            for id in fedIDs + twinIDs { try gpu.freeSequence(id) }
          }
        }
        let rows = checks.reduce(0) { $0 + $1.rows }
        let agreement = checks.reduce(0.0) { $0 + $1.top1Agreement * Double($1.rows) } / Double(max(rows, 1))
        let beyondTies = checks.reduce(0.0) { $0 + $1.top1AgreementBeyondTies * Double($1.rows) } / Double(max(rows, 1))
        let failed = checks.filter { !$0.pass }.count + (beyondTies >= 0.99 ? 0 : 1) + feedFailures + graphFailures
        print("top-1 agreement over all \(rows) rows: \(fixed(agreement, 4)) strict, \(fixed(beyondTies, 4)) beyond ties within noise (needs 0.99)")
        print("\(checks.count - checks.filter { !$0.pass }.count)/\(checks.count) model checks passed (cosine >= 0.999 on every row); "
              + "fed decodes equal to host-fed: \(feedFailures == 0 ? "all" : "\(feedFailures) failed")")
        if let jsonOut { try writeFile(jsonOut, try jsonString(checks)) }
        if failed > 0 { throw ExitCode(1) }
    }

    static func roundedToBF16(_ w: ModelWeights) -> ModelWeights {
        w.mapped { $0.map { HalfFloat.bf16ToFloat(HalfFloat.floatToBF16($0)) } }
    }

    /// Per row: cosine of the logits; the batch: top-1 agreement and norm-wise relative error.
    /// Pass: every row's cosine >= 0.999 (top-1 agreement is judged over all rows of the run).
    static func compare(model: String, step: String, reference: [[Float]], candidate: [[Float]], vocab: Int) -> Check {
        var cosines: [Double] = []
        var agree = 0, agreeBeyondTies = 0, rows = 0
        var diff = 0.0, norm = 0.0
        for (r, c) in zip(reference, candidate) {
            for row in 0..<(r.count / vocab) {
                let a = r[(row * vocab)..<((row + 1) * vocab)], b = c[(row * vocab)..<((row + 1) * vocab)]
                var dot = 0.0, na = 0.0, nb = 0.0
                for (x, y) in zip(a, b) {
                    dot += Double(x) * Double(y); na += Double(x) * Double(x); nb += Double(y) * Double(y)
                    diff += Double(x - y) * Double(x - y)
                }
                norm += na
                cosines.append(dot / max((na * nb).squareRoot(), 1e-30))
                let ia = a.indices.max(by: { a[$0] < a[$1] })!, ib = b.indices.max(by: { b[$0] < b[$1] })!
                var rowDiff = 0.0
                for (x, y) in zip(a, b) { rowDiff += Double(x - y) * Double(x - y) }
                let rms = (rowDiff / Double(vocab)).squareRoot()
                if ia == ib { agree += 1 }
                if ia == ib || Double(a[ia] - a[ib]) < 4 * rms { agreeBeyondTies += 1 }
                rows += 1
            }
        }
        let minCosine = cosines.min() ?? 0
        let top1 = Double(agree) / Double(max(rows, 1))
        return Check(model: model, step: step, rows: rows, minCosine: minCosine, meanCosine: cosines.reduce(0, +) / Double(max(rows, 1)),
                     top1Agreement: top1, top1AgreementBeyondTies: Double(agreeBeyondTies) / Double(max(rows, 1)), relativeError: (diff / max(norm, 1e-30)).squareRoot(),
                     pass: rows > 0 && minCosine >= 0.999)
    }
}
