import ArgumentParser
import CLICommon
import Engine
import Foundation
import Models
import Runtime
import VTensor

/// `vtensor dev engine`: requests through the engine in mixed, chunked, preempted batches
/// against the same requests run alone on the same backend: exact greedy tokens, teacher-forced
/// top-1 agreement, and the margin (how near a tie) at every divergence.
struct DevEngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "The engine's batched outputs against each request alone (GPU or CPU).",
        discussion: """
            A random 8-layer model (hidden 512, GQA 8/2, head dim 64, vocabulary 4096). The batched run uses a small
            token budget (prompts in chunks, mixed with decodes) and a small KV budget (preemption).
            Pass: on the CPU every token equal; on the GPU (bf16) teacher-forced top-1 agreement >= 99% and every
            divergence at a near-tie (margin below --tie-margin).
            """)

    @OptionGroup var backendOptions: BackendOptions
    @Option(help: "Requests in the batched run.") var requests = 24
    @Option(help: "Seed for the weights and prompts.") var seed: UInt64 = 3
    @Option(help: "A divergence counts as a near-tie below this logit margin.") var tieMargin = 0.1
    @Option(help: "Write the per-request results as JSON here.") var jsonOut: String?
    @Option(help: "A model directory (safetensors) instead of the random model; its config must fit the GPU kernels.") var model: String?
    @Option(help: "A JSON array of prompts (arrays of token ids) instead of random ones.") var prompts: String?
    @Option(help: "Batched run: the most requests at once.") var maxNumSeqs = 16
    @Option(help: "Batched run: tokens a step (prompts longer than this are split).") var maxNumBatchedTokens = 256
    @Option(help: "Batched run: KV budget in 2 MiB chunks (512 tokens each on the GPU).") var kvChunks = 12
    @Option(help: "Batched run: plan each step while the one before runs (on) or one step at a time (off).") var pipelineSteps: OnOff = .on
    @Option(help: "Batched run, GPU: KV in virtual tensors (vtensor) or the paged baseline's pool (paged); the alone runs use virtual tensors.")
    var kv: KVMode = .vtensor
    @Option(help: "Batched run, GPU: decode steps replayed from CUDA graphs per padded batch size (on) or launched kernel by kernel (off); the alone runs launch directly. The CPU has no graphs.")
    var cudaGraphs: OnOff = .on
    @Option(help: "Batched run, GPU, virtual tensors: access granted and chunks unmapped once per run of adjacent chunks where the driver takes it (on), or once per chunk (off).")
    var accessPerRun: OnOff = .off
    @Option(help: "Batched run, virtual tensors: published prefixes of at least this many new chunks that waiting requests share go into the cache packed into one allocation (0: never).")
    var packPrefixChunks = 0
    @Option(help: "Batched run, GPU, virtual tensors: the chunks a step fills whole map as slabs of up to N chunks (default: the backend's, 32 on CUDA; 0: a chunk an allocation). The alone runs map a chunk an allocation.")
    var freshSlabChunks: Int?
    @Option(help: "GPU, both runs: cuBLASLt products with the algorithms an autotune at load chose (on, as in service) or cuBLASLt's heuristic picks (off).")
    var matmulAutotune: OnOff = .on
    @Option(help: "Batched run, GPU: decode reads a prefix several requests map as one copy once per tile of requests (on) or once per request (off). The alone runs read their own.")
    var sharedPrefixDecode: OnOff = .on

    static let config: ModelConfig = {
        let json = """
            {"model_type":"llama","hidden_size":512,"intermediate_size":1408,"num_hidden_layers":8,"num_attention_heads":8,
             "num_key_value_heads":2,"head_dim":64,"vocab_size":4096,"max_position_embeddings":2048,"rms_norm_eps":1e-5,
             "rope_theta":10000,"eos_token_id":0}
            """
        return try! ModelConfig.decode(Data(json.utf8))
    }()

    struct RequestResult: Codable {
        var prompt: Int
        var generated: Int
        var exact: Bool
        var firstDivergence: Int?
        /// At the first divergence: the alone run's top logit minus its logit of the batched token.
        var divergenceMargin: Double?
        var teacherForcedAgree: Int
        var teacherForcedRows: Int
        /// Largest margin among the teacher-forced disagreements.
        var worstDisagreementMargin: Double?
    }

    func run() throws {
        let (kind, unavailable) = backendOptions.resolve()
        if kind == .cuda, let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
        let weights: ModelWeights
        if let model {
            weights = try LoadedModel.open(model).weights
        } else {
            weights = ModelWeights.dummy(config: Self.config, seed: seed, std: 0.1)
        }
        let config = weights.config
        // The reference runs each prompt in one step: the workspace holds the longest (set below).
        var workspaceTokens = 1024
        // 8 layers x 2 KV heads x 64 x 2 (K, V): 4 KiB a token on the GPU (bf16), 512 tokens a 2 MiB chunk.
        func makeModel(kvChunks: Int, kvMode: KVMode = .vtensor, graphs: Bool = false, perRun: Bool = false, freshSlabs: Int? = 0,
                       sharedDecode: Bool = false) throws -> any LanguageModel {
            switch kind {
            case .cuda:
                return try GPUModel(config: config, weights: weights, device: backendOptions.device, kvBudget: .bytes(kvChunks << 21),
                                    maxBatchTokens: workspaceTokens, maxLogitRows: 64, maxTokensPerSequence: 2048,
                                    options: GPUModel.Options(cudaGraphs: graphs, accessPerRun: perRun, unmapPerRun: perRun, freshSlabChunks: freshSlabs,
                                                              sharedPrefixDecode: sharedDecode, matmulAutotune: matmulAutotune == .on),
                                    kvMode: kvMode)
            case .cpu:
                // fp32 on the CPU: 8 KiB a token, 256 a chunk; twice the chunks for the same tokens.
                return try CPUModel(weights: weights, kvBudgetBytes: (2 * kvChunks) << 21, maxTokensPerSequence: 2048)
            }
        }
        var rng = SplitMix64(seed: seed &+ 17)
        var prompts = (0..<requests).map { _ in (0..<Int.random(in: 5...900, using: &rng)).map { _ in Int.random(in: 1..<config.vocabSize, using: &rng) } }
        if let path = self.prompts {
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("--prompts \(path): cannot read the file") }
            prompts = try JSONDecoder().decode([[Int]].self, from: data)
        }
        let lengths = prompts.map { _ in Int.random(in: 16...48, using: &rng) }
        workspaceTokens = max(1024, (prompts.map(\.count).max() ?? 0) + 64)

        // Batched, by default: 16 sequences, 256 tokens a step, 12 chunks of KV (about 6k tokens for 24 requests of up to 950).
        if kv == .paged && kind != .cuda { throw ValidationError("--kv paged runs on the GPU only") }
        let batchedModel = try makeModel(kvChunks: kvChunks, kvMode: kv, graphs: cudaGraphs == .on, perRun: accessPerRun == .on, freshSlabs: freshSlabChunks,
                                         sharedDecode: sharedPrefixDecode == .on)
        var options = EngineOptions(maxNumSeqs: maxNumSeqs, maxNumBatchedTokens: maxNumBatchedTokens,
                                    asyncMapping: batchedModel.computesAsynchronously, pipelineSteps: pipelineSteps == .on)
        options.packPrefixChunks = packPrefixChunks
        let engine = try Engine(model: batchedModel, tokenizer: nil, eosTokenIds: [], options: options)
        var ids: [RequestID] = []
        for (prompt, count) in zip(prompts, lengths) {
            ids.append(try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: count, ignoreEOS: true))))
        }
        var batched: [RequestID: [Int]] = [:]
        var mixedSteps = 0
        while engine.hasWork {
            for output in engine.step() {
                if let error = output.error { throw ValidationError("request \(output.id) failed: \(error)") }
                batched[output.id, default: []] += output.tokens.map(\.id)
            }
            let rows = engine.lastPlan.rows
            if rows.contains(where: \.isDecode) && rows.contains(where: { !$0.isDecode }) { mixedSteps += 1 }
        }
        let stats = engine.statistics

        // Alone: one request at a time on a fresh model with room for it.
        let alone = try makeModel(kvChunks: 8)
        var results: [RequestResult] = []
        var gaps: [Double] = []  // the alone run's top-1 minus top-2 logit at every step: how clear its choices are
        for (index, id) in ids.enumerated() {
            let prompt = prompts[index], got = batched[id] ?? []
            // Greedy alone, step by step, keeping each step's logits.
            try alone.addSequence(1)
            var logits = try alone.reserveAndForward([ForwardInput(id: 1, tokens: prompt)])[0]
            var own: [Int] = [], margins: [Double] = []
            while own.count < lengths[index] {
                let best = logits.indices.max { logits[$0] < logits[$1] }!
                gaps.append(Double(logits[best] - logits.indices.filter { $0 != best }.map { logits[$0] }.max()!))
                own.append(best)
                if own.count <= got.count { margins.append(Double(logits[best] - logits[got[own.count - 1]])) }
                if own.count == lengths[index] { break }
                logits = try alone.reserveAndForward([ForwardInput(id: 1, tokens: [best])])[0]
            }
            try alone.freeSequence(1)
            let divergence = zip(own, got).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            // Teacher-forced: the alone model reads the prompt, then the batched tokens in one step;
            // does its argmax pick each batched token? (Rows: the prompt's last, then one per token read.)
            try alone.addSequence(2)
            var forced = try alone.reserveAndForward([ForwardInput(id: 2, tokens: prompt)])[0]
            if got.count > 1 { forced += try alone.reserveAndForward([ForwardInput(id: 2, tokens: Array(got.dropLast()), allLogits: true)])[0] }
            try alone.freeSequence(2)
            let vocab = config.vocabSize
            var agree = 0
            var worst: Double?
            for (j, token) in got.enumerated() {
                let row = j * vocab
                var best = 0
                for v in 0..<vocab where forced[row + v] > forced[row + best] { best = v }
                if best == token { agree += 1 } else { worst = max(worst ?? 0, Double(forced[row + best] - forced[row + token])) }
            }
            results.append(RequestResult(prompt: prompt.count, generated: got.count, exact: own == got && got.count == lengths[index],
                                         firstDivergence: divergence, divergenceMargin: divergence.map { margins[$0] },
                                         teacherForcedAgree: agree, teacherForcedRows: got.count, worstDisagreementMargin: worst))
        }
        let rows = results.reduce(0) { $0 + $1.teacherForcedRows }, agree = results.reduce(0) { $0 + $1.teacherForcedAgree }
        let agreement = Double(agree) / Double(max(1, rows))
        let divergenceMargins = results.compactMap(\.divergenceMargin)
        let worstForced = results.compactMap(\.worstDisagreementMargin).max()
        let exact = results.filter(\.exact).count
        let pass: Bool
        if kind == .cpu {
            pass = exact == results.count
        } else {
            pass = agreement >= 0.99 && divergenceMargins.allSatisfy { $0 < tieMargin } && (worstForced ?? 0) < tieMargin
        }
        var table = Table(title: "engine vs alone (\(kind == .cuda ? "cuda, bf16" : "cpu, fp32"))", header: ["check", "value"])
        table.add(["requests", "\(results.count): prompts 5-900, 16-48 tokens each; \(model ?? "random model"), \(maxNumSeqs) at once, \(maxNumBatchedTokens) tokens a step, \(kvChunks) KV chunks' worth, \(batchedModel.kvStorage.kindName) KV"])
        table.add(["batched run", "\(stats.steps) steps (\(mixedSteps) mixing decodes with prompt chunks, \(stats.pipelinedSteps) queued while the step before ran), "
                   + "\(stats.preemptions) preemptions, \(stats.prefillRows) prefill rows"])
        table.add(["prefix cache", "\(stats.prefixHitTokens) of \(stats.prefixQueriedTokens) prompt tokens found cached (\(fixed(stats.prefixHitRate * 100, 1))%), "
                   + "\(stats.prefixKeptChunks) chunks kept, \(stats.prefixEvictedChunks) evicted, \(stats.prefixPacks) packed into slabs (\(stats.prefixPackedChunks) chunks)"])
        if let gpu = batchedModel as? GPUModel, cudaGraphs == .on {
            let totals = gpu.stepTotals
            table.add(["CUDA graphs", "\(totals.graphReplays) decode steps replayed, \(totals.graphCaptures) graphs captured, \(totals.graphDirect) first sightings run directly"])
        }
        if let gpu = batchedModel as? GPUModel {
            table.add(["shared-prefix decode", sharedPrefixDecode == .on
                       ? "\(gpu.sharedPrefixTiles) tiles planned, \(fixed(Double(gpu.sharedPrefixBytesSaved) / 1e6, 1)) MB of K/V not read again" : "off"])
        }
        let sortedGaps = gaps.sorted()
        table.add(["alone top-1 margins", "median \(fixed(sortedGaps[sortedGaps.count / 2], 3)), \(fixed(Double(gaps.filter { $0 < tieMargin }.count) * 100 / Double(gaps.count), 1))% below \(tieMargin)"])
        table.add(["exact greedy continuations", "\(exact) of \(results.count)"])
        table.add(["divergence margins", divergenceMargins.isEmpty ? "none" : divergenceMargins.map { fixed($0, 4) }.joined(separator: ", ")])
        table.add(["teacher-forced top-1", "\(agree)/\(rows) = \(fixed(agreement * 100, 2))%" + (worstForced.map { ", worst disagreement margin \(fixed($0, 4))" } ?? "")])
        table.add(["result", pass ? "PASS" : "FAIL"])
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(results)) }
        if !pass { throw ExitCode(1) }
    }
}
