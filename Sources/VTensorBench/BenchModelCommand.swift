import Support
import ArgumentParser
import CLICommon
import Foundation
import Kernels
import Models
import Runtime
import VTensor

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
    /// Weight bytes read per decode step (Float on the CPU, bf16 on the GPU) over the step time.
    var decodeWeightGBps: Double
    var device: String?
    var readCeilingTBps: Double?
    var matmulCeilingTFLOPs: Double?
    /// Decode: weight bytes per step / read ceiling, over the measured step (batch 1's target: 0.85).
    var decodeFractionOfRoofline: Double?
    /// Prefill FLOPs (matrices of every layer x tokens, attention, LM head rows) / matmul ceiling, over the measured time.
    var prefillFractionOfRoofline: Double?
    var prefillTFLOPs: Double?
    var workspaceBytes: Int?
    var weightBytes: Int?
    var matmulPolicy: String?
    /// Median host time of a decode step before the first kernel, queuing kernels, and waiting.
    var decodeHostPlanMs: Double?
    var decodeHostLaunchMs: Double?
    var decodeHostWaitMs: Double?
    /// Profiled decode step: GPU ms per operation (summed over layers).
    var decodeProfileMs: [String: Double]?
    var prefillProfileMs: [String: Double]?
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
    @Option(help: "GPU skinny matmuls: auto (our GEMV for up to 4 rows, our tensor-core kernel up to 16) or cublas.")
    var matmul: String = "auto"
    @Flag(help: "GPU: after the timed decode steps, time every operation of a few steps with CUDA events.")
    var profile = false
    @Option(help: "GPU decode matmuls: 16-byte loads in flight per lane per row (4 or 8).")
    var gemvUnroll = 8
    @Option(help: "GPU decode attention: smallest keys per CTA (default: the kernel's).")
    var attentionMinTokens: Int?
    @Option(help: "GPU decode attention: 16-token sub-steps a warp loads before computing (default: the kernel's standard shape).")
    var attentionSubsteps: Int?
    @Option(help: "GPU decode: matmul weight loads (and decode attention's K/V loads) ask L2 for whole 256-byte blocks: auto (off on H200), on or off.")
    var l2Hint = "auto"
    @Option(help: "GPU decode matmuls with programmatic dependent launch: on or off.")
    var pdl = "on"
    @Option(help: "GPU decode: each layer's O, gate/up, down and next QKV as one cooperative kernel: on or off.")
    var persistent = "off"
    @Option(help: "GPU decode: replay steps from CUDA graphs: on or off.")
    var cudaGraphs = "on"
    @Option(help: "GPU decode matmuls: weight prefetch per row in bytes before waiting on the previous kernel (-1: whole rows within ~32 MiB of L2).")
    var prefetchBytes = 0
    @Option(help: "GPU decode, persistent layers: blocks per SM (0: the occupancy limit).")
    var persistentBlocks = 4
    @Option(help: "GPU decode matmuls with at most this many row pairs split k over two warps (0: never).")
    var splitKPairs = 0
    @Option(help: "GPU decode matmuls: load the first weights before waiting on the previous kernel: on or off.")
    var earlyWeights = "on"
    @Option(help: "GPU: time the heuristic's first cuBLASLt candidates for each bucket's products up to 512 rows at load and keep the fastest: on (the default, as in service; no tuning cache: every run times) or off.")
    var matmulAutotune = "on"
    @Option(help: "GPU, with --matmul-autotune on: also time split-K variants of the heuristic's candidates (on or off).")
    var matmulAutotuneSplitK = "off"
    @Flag(help: "GPU decode, timing experiments only: leave attention out of the step (the output is wrong) to measure its cost in the pipelined step.")
    var skipAttention = false

    func run() throws {
        let (kind, unavailable) = backendOptions.resolve()
        if kind == .cuda {
            if let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
            return try runGPU()
        }
        guard batch > 0, promptTokens > 0, decodeTokens > 0 else { throw ValidationError("--batch, --prompt-tokens and --decode-tokens must be positive") }
        let loaded = try modelOptions.openForCPU()
        let c = loaded.config
        let cores = threads ?? Processors.available
        let model = try loaded.cpuModel(kvBudgetBytes: 4 << 30, maxTokensPerSequence: promptTokens + decodeTokens + 1, threads: cores,
                                        nativeWeights: modelOptions.nativeCPUWeights)
        var rng = SplitMix64(seed: 7)
        var inputs: [ForwardInput] = []
        for id in 0..<batch {
            try model.addSequence(id)
            inputs.append(ForwardInput(id: id, tokens: (0..<promptTokens).map { _ in Int(rng.next() % UInt64(c.vocabSize)) }))
        }
        let start = Date()
        var logits = try model.reserveAndForward(inputs)
        let prefill = Date().timeIntervalSince(start)
        var steps: [Double] = []
        for _ in 0..<decodeTokens {
            let next = logits.enumerated().map { ForwardInput(id: $0.offset, tokens: [argmax($0.element)]) }
            let t = Date()
            logits = try model.reserveAndForward(next)
            steps.append(Date().timeIntervalSince(t))
        }
        let stepMedian = median(steps)
        var weightBytes = Double(loaded.weights.parameterCount - c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 0 : 1) + c.hiddenSize) * 4
        if let q = model.quantized { weightBytes = Double(q.decodeBytes) + Double(c.numHiddenLayers * 2 * c.hiddenSize * 4) }
        let result = ModelBenchResult(
            date: todayUTC(), backend: "cpu", model: loaded.path, parameters: loaded.weights.parameterCount + (model.quantized?.coveredParameterCount ?? 0), threads: cores,
            batch: batch, promptTokens: promptTokens, decodeTokens: decodeTokens, prefillSeconds: prefill,
            prefillTokensPerSecond: Double(batch * promptTokens) / prefill, decodeStepMedianMs: stepMedian * 1000,
            decodeTokensPerSecond: Double(batch) / stepMedian, decodeWeightGBps: weightBytes / stepMedian / 1e9)
        var table = Table(title: "model throughput", header: ["backend", "batch", "prompt", "prefill tok/s", "decode step ms", "decode tok/s", "weights GB/s"])
        table.add(["cpu x\(cores)", "\(batch)", "\(promptTokens)", fixed(result.prefillTokensPerSecond, 1),
                   fixed(result.decodeStepMedianMs, 2), fixed(result.decodeTokensPerSecond, 1), fixed(result.decodeWeightGBps, 2)])
        print("model: \(loaded.path) (\(fixed(Double(result.parameters) / 1e6, 1))M parameters, \(model.quantized != nil ? "matrices in the GGUF's blocks" : "Float"))")
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(result)) }
    }
}

extension BenchModelCommand {
    func runGPU() throws {
        guard batch > 0, promptTokens > 0, decodeTokens > 0 else { throw ValidationError("--batch, --prompt-tokens and --decode-tokens must be positive") }
        // Ceilings first, on the same device, before the model takes its memory.
        var readCeiling = 0.0, matmulCeiling = 0.0
        do {
            let work = try CUDAWork(device: backendOptions.device)
            readCeiling = try VMMBench.readCeilingTBps(device: work)
            matmulCeiling = try PrefillTiming.matmulCeiling(gpu: PrefillGPU(work: work))
            try work.synchronize()
        }
        print("read ceiling (plain 1 GiB read): \(fixed(readCeiling, 3)) TB/s")

        let (config, hostWeights, checkpoint, label) = try modelOptions.openForGPU()
        let tokensPerStep = batch * promptTokens
        guard let policy = GPUModel.MatmulPolicy(rawValue: matmul) else { throw ValidationError("--matmul must be auto or cublas") }
        let options = GPUModel.Options(
            matmulPolicy: policy, persistentLayers: persistent == "on", cudaGraphs: cudaGraphs == "on",
            prefetchBytesPerRow: prefetchBytes < 0 ? nil : prefetchBytes, persistentBlocksPerSM: persistentBlocks,
            programmaticLaunch: pdl != "off", splitKMaxPairs: splitKPairs, decodeMinTokensPerCTA: attentionMinTokens,
            timingOnlySkipAttention: skipAttention, gemvUnroll: gemvUnroll, earlyWeights: earlyWeights != "off",
            weightL2Hint: l2Hint == "auto" ? nil : l2Hint == "on",
            decodeConfig: attentionSubsteps == nil && l2Hint == "auto" ? nil : {
                var decodeConfig = DecodeAttention.Config.standard(headDim: config.headDim)
                if let n = attentionSubsteps { decodeConfig.subSteps = n }
                if l2Hint != "auto" { decodeConfig.l2Prefetch = l2Hint == "on" }
                return decodeConfig
            }(), matmulAutotune: matmulAutotune == "on", matmulAutotuneSplitK: matmulAutotuneSplitK == "on")
        let model = try GPUModel(config: config, weights: hostWeights, device: backendOptions.device, checkpoint: checkpoint,
                                 maxBatchTokens: max(tokensPerStep, batch), maxLogitRows: max(batch, 1),
                                 maxTokensPerSequence: promptTokens + decodeTokens + 8, options: options)
        if skipAttention { print("--skip-attention: decode steps leave attention out; times only, the logits are wrong") }
        print("model: \(label) on \(model.name): \(fixed(Double(model.weights.bytes) / 1e9, 2)) GB of weights (bf16), workspace \(mib(model.workspaceBytes))")
        if let report = GPUModel.autotuneSummary(model.matmulAutotuned, cacheNote: model.matmulTuningCacheNote) { print("cuBLASLt autotune: " + report) }
        // Every contender timed for the decode step's products (the bucket holding `batch` rows).
        let tunedRows = GPUModel.matmulTokens(batch, capacity: max(tokensPerStep, batch))
        for trial in model.matmulAutotuneTrials where trial.tokens == tunedRows {
            print("  autotune \(trial.name) @\(tunedRows): \(trial.configuration), waves \(trial.waves.map { fixed(Double($0), 2) } ?? "-"), "
                  + "\(trial.microseconds.map { fixed($0, 1) + " us" } ?? "refused")")
        }
        var rng = SplitMix64(seed: 7)
        let c = config
        func prompts() -> [[Int]] { (0..<batch).map { _ in (0..<promptTokens).map { _ in Int(rng.next() % UInt64(c.vocabSize)) } } }

        // Prefill: warm once, then the median of 3 on fresh sequences.
        var prefillTimes: [Double] = []
        var next: [Int] = []
        var id = 0
        for round in 0..<4 {
            let ids = (0..<batch).map { id + $0 }
            id += batch
            for i in ids { try model.addSequence(i) }
            let inputs = zip(ids, prompts()).map { ForwardInput(id: $0, tokens: $1) }
            let t = Date()
            try model.reserve(inputs)
            next = try model.forwardGreedy(inputs)
            if round > 0 { prefillTimes.append(Date().timeIntervalSince(t)) }
            if round < 3 { for i in ids { try model.freeSequence(i) } }
        }
        var prefillProfile: [String: Double]? = nil
        if profile {
            let ids = (0..<batch).map { id + $0 }
            for i in ids { try model.addSequence(i) }
            model.profile = true
            let inputs = zip(ids, prompts()).map { ForwardInput(id: $0, tokens: $1) }
            try model.reserve(inputs)
            _ = try model.forwardGreedy(inputs)
            model.profile = false
            prefillProfile = model.lastStep.gpuMsByOperation
            for i in ids { try model.freeSequence(i) }
        }
        let liveIDs = ((id - batch)..<id).map { $0 }
        var steps: [Double] = []
        var phases: [(Double, Double, Double)] = []
        for _ in 0..<decodeTokens {
            let inputs = zip(liveIDs, next).map { ForwardInput(id: $0, tokens: [$1]) }
            let t = Date()
            try model.reserve(inputs)
            next = try model.forwardGreedy(inputs)
            steps.append(Date().timeIntervalSince(t))
            phases.append((model.lastStep.planMs, model.lastStep.launchMs, model.lastStep.waitMs))
        }
        var profileMs: [String: Double]? = nil
        if profile {
            model.profile = true
            var sums: [String: Double] = [:]
            let rounds = 5
            for _ in 0..<rounds {
                let inputs = zip(liveIDs, next).map { ForwardInput(id: $0, tokens: [$1]) }
                try model.reserve(inputs)
                next = try model.forwardGreedy(inputs)
                for (k, v) in model.lastStep.gpuMsByOperation { sums[k, default: 0] += v / Double(rounds) }
            }
            model.profile = false
            profileMs = sums
        }
        let prefill = median(prefillTimes), step = median(steps)
        // Roofline work.
        let layerMatrices = Double(c.numHiddenLayers) * Double(c.hiddenSize) *
            Double((c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim + c.numAttentionHeads * c.headDim + 3 * c.intermediateSize)
        let attentionFLOPs = Double(batch * c.numHiddenLayers) * 4 * Double(c.numAttentionHeads * c.headDim) * Double(promptTokens * promptTokens) / 2
        let prefillFLOPs = 2 * layerMatrices * Double(tokensPerStep) + attentionFLOPs + 2 * Double(batch * c.vocabSize * c.hiddenSize)
        let decodeBytes = Double(model.weights.bytesReadPerToken)
        var result = ModelBenchResult(
            date: todayUTC(), backend: "cuda", model: label, parameters: model.weights.bytes / 2, threads: 0, batch: batch,
            promptTokens: promptTokens, decodeTokens: decodeTokens, prefillSeconds: prefill,
            prefillTokensPerSecond: Double(tokensPerStep) / prefill, decodeStepMedianMs: step * 1000,
            decodeTokensPerSecond: Double(batch) / step, decodeWeightGBps: decodeBytes / step / 1e9)
        result.device = model.name
        result.readCeilingTBps = readCeiling
        result.matmulCeilingTFLOPs = matmulCeiling
        result.decodeFractionOfRoofline = decodeBytes / (readCeiling * 1e12) / step
        result.prefillTFLOPs = prefillFLOPs / prefill / 1e12
        result.prefillFractionOfRoofline = prefillFLOPs / (matmulCeiling * 1e12) / prefill
        result.workspaceBytes = model.workspaceBytes
        result.matmulPolicy = policy.rawValue
        result.decodeHostPlanMs = median(phases.map { $0.0 })
        result.decodeHostLaunchMs = median(phases.map { $0.1 })
        result.decodeHostWaitMs = median(phases.map { $0.2 })
        result.decodeProfileMs = profileMs
        result.prefillProfileMs = prefillProfile
        result.weightBytes = model.weights.bytes
        var table = Table(title: "model throughput on \(model.name) (dummy weights: \(hostWeights == nil))",
                          header: ["batch", "prompt", "prefill ms", "prefill TFLOP/s", "of roofline", "decode step ms", "decode tok/s", "weights TB/s", "of roofline"])
        table.add(["\(batch)", "\(promptTokens)", fixed(prefill * 1000, 2), fixed(result.prefillTFLOPs!, 1), fixed(result.prefillFractionOfRoofline!, 3),
                   fixed(step * 1000, 3), fixed(result.decodeTokensPerSecond, 1), fixed(decodeBytes / step / 1e12, 3), fixed(result.decodeFractionOfRoofline!, 3)])
        print(table.render())
        print("decode step host phases (median ms): plan+upload \(fixed(result.decodeHostPlanMs!, 3)), queue kernels \(fixed(result.decodeHostLaunchMs!, 3)), wait \(fixed(result.decodeHostWaitMs!, 3)); matmul \(policy.rawValue), gemv unroll \(gemvUnroll), split-k up to \(splitKPairs) pairs, persistent \(persistent) (\(persistentBlocks) blocks/SM), CUDA graphs \(cudaGraphs), prefetch \(prefetchBytes < 0 ? "whole rows" : "\(prefetchBytes) B/row"), early weights \(earlyWeights), L2 hint \(l2Hint), PDL \(pdl) (cuLaunchKernelEx \(model.kernelsSupportProgrammaticLaunch ? "present" : "absent")), attention min tokens \(attentionMinTokens.map(String.init) ?? "default")")
        for (title, table) in [("prefill step", prefillProfile), ("decode step", profileMs)] {
            guard let table else { continue }
            var t = Table(title: "\(title), GPU time per operation (CUDA events, batch \(batch))", header: ["operation", "ms", "share"])
            let total = table.values.reduce(0, +)
            for (k, v) in table.sorted(by: { $0.value > $1.value }) { t.add([k, fixed(v, 3), fixed(v / total, 3)]) }
            t.add(["total", fixed(total, 3), "1.000"])
            print(t.render())
        }
        if let jsonOut { try writeFile(jsonOut, try jsonString(result)) }
    }
}

func argmax(_ values: [Float]) -> Int {
    var best = 0
    for i in values.indices where values[i] > values[best] { best = i }
    return best
}
