import ArgumentParser
import CLICommon
import Engine
import Foundation
import GPU
import Models
import Runtime
import VTensor

/// Request lengths for an offline throughput run: fixed, uniform in a range, or ShareGPT pairs.
struct ThroughputWorkload {
    struct Shape: Equatable { var input: Int; var output: Int }
    var shapes: [Shape]

    /// "N" or "A-B" (uniform over A...B).
    static func parseRange(_ text: String, flag: String) throws -> ClosedRange<Int> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        if parts.count == 1, let n = parts[0], n >= 1 { return n...n }
        if parts.count == 2, let a = parts[0], let b = parts[1], a >= 1, a <= b { return a...b }
        throw ValidationError("\(flag) takes N or A-B with 1 <= A <= B, got \(text)")
    }

    static func random(count: Int, input: ClosedRange<Int>, output: ClosedRange<Int>, seed: UInt64) -> ThroughputWorkload {
        var rng = SplitMix64(seed: seed)
        return ThroughputWorkload(shapes: (0..<count).map { _ in
            Shape(input: Int.random(in: input, using: &rng), output: Int.random(in: output, using: &rng))
        })
    }

    /// Pairs from a TSV of `input_tokens<TAB>output_tokens` lines ('#' comments and a header
    /// allowed), taken in order and repeated if `count` is larger than the file.
    static func pairs(path: String, count: Int) throws -> ThroughputWorkload {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("--dataset-path \(path): cannot read the file") }
        var pairs: [Shape] = []
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
            if line.hasPrefix("#") || line.hasPrefix("input") || line.allSatisfy(\.isWhitespace) { continue }
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " || $0 == "," }).map { Int($0) }
            guard fields.count == 2, let i = fields[0], let o = fields[1], i >= 1, o >= 1 else {
                throw ValidationError("\(path) line \(number + 1): expected two positive integers, got \"\(line)\"")
            }
            pairs.append(Shape(input: i, output: o))
        }
        guard !pairs.isEmpty else { throw ValidationError("\(path): no length pairs") }
        return ThroughputWorkload(shapes: (0..<count).map { pairs[$0 % pairs.count] })
    }
}

/// `vtensor bench throughput`: N requests handed to the engine at once (`vllm bench throughput`'s
/// shape): throughput, step times, batch sizes over time, preemptions, mapping waits, KV memory.
struct BenchThroughputCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract: "Offline throughput: N requests through the engine at once.",
        discussion: """
            Prompts are random token ids; every request generates exactly its output length (end-of-sequence ignored).
            Datasets: fixed (every request --input-len / --output-len), random (lengths uniform in the A-B ranges given),
            sharegpt (length pairs from --dataset-path, default scripts/data/sharegpt_v3_lengths.tsv),
            shared-prefix (--groups system prompts of --system-len tokens, each with --prompts-per-group questions of
            --question-len tokens, --output-len out: SGLang's generated-shared-prefix), multi-turn (--num-conversations of
            --rounds rounds: each round resends the conversation plus --user-len new tokens and asks --answer-len; the next
            round goes out when the answer is complete, at most --max-in-flight conversations at once).
            """)

    enum Dataset: String, ExpressibleByArgument, CaseIterable { case fixed, random, sharegpt, sharedPrefix = "shared-prefix", multiTurn = "multi-turn" }

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var engineFlags: EngineFlags

    @Option(parsing: .unconditional, help: "Requests in the run.") var numPrompts = 64
    @Option(help: "fixed, random, sharegpt, shared-prefix or multi-turn.") var dataset: Dataset = .fixed
    @Option(parsing: .unconditional, help: "shared-prefix: system prompts.") var groups = 64
    @Option(parsing: .unconditional, help: "shared-prefix: questions per system prompt.") var promptsPerGroup = 16
    @Option(parsing: .unconditional, help: "shared-prefix: system prompt tokens.") var systemLen = 2048
    @Option(parsing: .unconditional, help: "shared-prefix: question tokens.") var questionLen = 128
    @Option(parsing: .unconditional, help: "multi-turn: conversations.") var numConversations = 256
    @Option(parsing: .unconditional, help: "multi-turn: rounds a conversation.") var rounds = 5
    @Option(parsing: .unconditional, help: "multi-turn: tokens of each new user turn.") var userLen = 512
    @Option(parsing: .unconditional, help: "multi-turn: tokens of a system prompt every conversation starts with (default 0: none; the conversations then share it, as chats with one system prompt do).")
    var conversationSystemLen = 0
    @Option(parsing: .unconditional, help: "multi-turn: tokens of each answer.") var answerLen = 64
    @Option(parsing: .unconditional, help: "multi-turn: conversations under way at once.") var maxInFlight = 128
    @Option(help: "Prompt tokens: N, or A-B with --dataset random.") var inputLen = "128"
    @Option(help: "Generated tokens: N, or A-B with --dataset random.") var outputLen = "128"
    @Option(help: "With --dataset sharegpt: the length pairs.") var datasetPath = "scripts/data/sharegpt_v3_lengths.tsv"
    @Option(help: "Seed for the lengths and the prompts.") var seed: UInt64 = 0
    @Option(help: "Write the results as JSON here.") var jsonOut: String?
    @Option(help: "GPU: in steps mixing decodes with prompt chunks, decodes on decode attention (split) or every row on prefill attention (prefill).")
    var mixedAttention: MixedAttention = .split

    enum MixedAttention: String, ExpressibleByArgument, CaseIterable { case split, prefill }
    @Option(help: "GPU, vtensor KV: decode attention reads one table of layer-0 bases with per-layer offsets (shared) or a table per layer (per-layer).")
    var decodeTable: DecodeTable = .shared
    enum DecodeTable: String, ExpressibleByArgument, CaseIterable { case shared, perLayer = "per-layer" }
    @Option(help: "Map the first prompt chunk of the requests the next step will admit one step early (on) or when scheduled (off).")
    var prefetchAdmissions: OnOff = .on
    @Option(help: "Tokens mapped ahead of each decoding request for the steps after the one planned (default: the engine's).")
    var mapAheadTokens: Int?
    @Flag(help: "GPU: CUDA events around every operation of every step (no CUDA graphs), summed by operation over the steps that take prompt tokens and over decode-only steps (to compare where two KV modes' steps differ).")
    var profileOperations = false

    struct Report: Codable {
        var date: String
        var backend: String
        var model: String
        var dataset: String
        var requests: Int
        var inputTokens: Int
        var outputTokens: Int
        var seconds: Double
        var requestsPerSecond: Double
        var inputTokensPerSecond: Double
        var outputTokensPerSecond: Double
        var totalTokensPerSecond: Double
        var steps: Int
        var stepMeanMs: Double
        var stepP50Ms: Double
        var stepP99Ms: Double
        /// Decode-only steps (every row one token): how long, and how many rows.
        var decodeStepMeanMs: Double?
        var engineHostMsPerStep: Double
        var modelMsPerStep: Double
        /// GPU: the model step's own phases, per step: host planning and uploads, queueing the
        /// kernels, waiting for the GPU.
        var modelPlanMsPerStep: Double?
        var modelLaunchMsPerStep: Double?
        var modelWaitMsPerStep: Double?
        /// GPU: whether steps were pipelined, each step's span on the GPU (events, its first
        /// upload to its last result copy), the GPU's idle gap before a step, the share of steps
        /// queued in full while the step before still ran, and the GPU's span over the run's time.
        var pipelined: Bool
        var gpuSpanMsPerStep: Double?
        var gpuIdleGapMsPerStep: Double?
        var queuedAheadShare: Double?
        var gpuBusyShare: Double?
        var gpuStepTotals: GPUModel.StepTotals?
        var maxNumSeqs: Int
        var maxNumBatchedTokens: Int
        var meanRowsPerStep: Double
        var maxRowsPerStep: Int
        /// Rows per step over the run, in 20 equal slices of steps (mean of each slice).
        var rowsOverTime: [Double]
        var preemptions: Int
        var recomputedTokens: Int
        var mappingWaits: Int
        var blockedMappingWaits: Int
        var blockedDecodeOnlyWaits: Int
        var mappingWaitMsTotal: Double
        /// vtensor or paged; a paged pool is reserved whole (created = budget) from start to end.
        var kvMode: String
        /// Bytes of the ledger's unit: a chunk (vtensor) or a 16-token page of every layer (paged).
        var chunkBytes: Int
        var kvPeakCreatedBytes: Int
        var kvPeakCommittedBytes: Int
        var kvHeldAtEndBytes: Int
        var kvHeldAfterTrimBytes: Int
        var kvBudgetBytes: Int
        /// GPU: device memory free (cuMemGetInfo) after the model was built, at its lowest during
        /// the run (sampled every 8 steps), and after the K/V was trimmed; and the device's total.
        var deviceFreeBeforeBytes: Int?
        var deviceFreeLowestBytes: Int?
        var deviceFreeAfterTrimBytes: Int?
        var deviceTotalBytes: Int?
        /// Per request, from its arrival (all arrive at the start): time to the first token and
        /// to the end, p50 / p99, and the mean time between tokens.
        var firstTokenP50Seconds: Double
        var firstTokenP99Seconds: Double
        var totalP50Seconds: Double
        var totalP99Seconds: Double
        var interTokenMeanMs: Double
        /// Prompt tokens found in the prefix cache over those looked up.
        var prefixCacheHitRate: Double
        /// multi-turn: time to first token (p50) of first rounds, and of later rounds.
        var firstTokenP50FirstRoundSeconds: Double?
        var firstTokenP50LaterRoundsSeconds: Double?
        /// multi-turn: per round (first to last), time to first token p50 and mean, and time in
        /// the queue (arrival to its first step) p50.
        var firstTokenP50ByRoundSeconds: [Double]?
        var firstTokenMeanByRoundSeconds: [Double]?
        var queueP50ByRoundSeconds: [Double]?
        /// Virtual tensors: admissions that took over a prefix-cache holder's ranges whole.
        var prefixTakeovers: Int?
        /// GPU: the cuBLASLt products set up when the model loaded and how long that took (the
        /// autotune included), each autotuned product, and what became of the tuning cache.
        var matmulWarmupMs: Double?
        var matmulAutotune: [GPUModel.AutotunedProduct]?
        var matmulTuningCache: String?
        var statistics: EngineStatistics
    }

    func run() throws {
        let (kind, unavailable) = backendOptions.resolve()
        if kind == .cuda, let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
        guard numPrompts >= 1 else { throw ValidationError("--num-prompts must be at least 1") }
        guard let format = LoadFormat(rawValue: modelOptions.loadFormat) else {
            throw ValidationError("--load-format must be one of \(LoadFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let inputs = try ThroughputWorkload.parseRange(inputLen, flag: "--input-len")
        let outputs = try ThroughputWorkload.parseRange(outputLen, flag: "--output-len")
        var workload = ThroughputWorkload(shapes: [])
        let sharedPrefix = SharedPrefixWorkload(groups: groups, perGroup: promptsPerGroup, systemLength: systemLen, questionLength: questionLen,
                                                outputLength: outputs.upperBound)
        switch dataset {
        case .fixed:
            guard inputs.count == 1, outputs.count == 1 else { throw ValidationError("--dataset fixed takes single lengths; use --dataset random for ranges") }
            workload = .random(count: numPrompts, input: inputs, output: outputs, seed: seed)
        case .random: workload = .random(count: numPrompts, input: inputs, output: outputs, seed: seed)
        case .sharegpt: workload = try .pairs(path: datasetPath, count: numPrompts)
        case .sharedPrefix:
            guard groups >= 1, promptsPerGroup >= 1, systemLen >= 1, questionLen >= 1 else {
                throw ValidationError("--groups, --prompts-per-group, --system-len and --question-len must be at least 1")
            }
            workload.shapes = Array(repeating: .init(input: systemLen + questionLen, output: outputs.upperBound), count: groups * promptsPerGroup)
        case .multiTurn:
            guard numConversations >= 1, rounds >= 1, userLen >= 1, answerLen >= 1, maxInFlight >= 1 else {
                throw ValidationError("--num-conversations, --rounds, --user-len, --answer-len and --max-in-flight must be at least 1")
            }
            guard conversationSystemLen >= 0 else { throw ValidationError("--conversation-system-len must be at least 0") }
            workload.shapes = [.init(input: conversationSystemLen + rounds * userLen + (rounds - 1) * answerLen, output: answerLen)]
        }

        var runtimeOptions = engineFlags.runtimeOptions(backend: kind, device: backendOptions.device,
                                                        nativeCPUWeights: modelOptions.nativeCPUWeights)
        // The engine flags' GPU options, with this bench's own two A/B switches.
        runtimeOptions.gpu.splitMixedAttention = mixedAttention == .split
        runtimeOptions.gpu.sharedDecodeTable = decodeTable == .shared
        let longest = workload.shapes.map { $0.input + $0.output }.max()!
        if runtimeOptions.maxTokensPerSequence == nil { runtimeOptions.maxTokensPerSequence = longest }
        let runtime = try ModelRuntime.open(modelOptions.model, format: format, options: runtimeOptions)
        let model = runtime.model
        let config = model.config
        if profileOperations {
            guard let gpuModel = model as? GPUModel else { throw ValidationError("--profile-operations times GPU operations: run with --backend cuda") }
            gpuModel.profile = true
        }
        var engineOptions = engineFlags.engineOptions(for: model)
        engineOptions.prefetchAdmissions = prefetchAdmissions == .on
        if let mapAheadTokens { engineOptions.mapAheadTokens = mapAheadTokens }
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: engineOptions,
                                mapperThreadSetup: runtime.mapperThreadSetup)
        print("model: \(modelOptions.model ?? "SmolLM2-135M-Instruct") (\(runtime.description)), dataset \(dataset.rawValue), "
              + "max \(engine.options.maxNumSeqs) sequences and \(engine.options.maxNumBatchedTokens) tokens a step")
        for shape in workload.shapes where shape.input + shape.output > engine.maxSequenceLength {
            throw ValidationError("a request of \(shape.input) + \(shape.output) tokens exceeds the longest sequence the engine runs (\(engine.maxSequenceLength))")
        }

        // Random prompts over the vocabulary, past the low ids that tokenizers keep for special tokens.
        var rng = SplitMix64(seed: seed &+ 1)
        let low = min(1000, config.vocabSize / 4)
        var requests: [GenerationRequest] = []
        var conversations: ConversationDriver?
        switch dataset {
        case .sharedPrefix: requests = sharedPrefix.requests(vocabulary: low..<config.vocabSize, seed: seed)
        case .multiTurn:
            conversations = ConversationDriver(conversations: numConversations, rounds: rounds, userLength: userLen, answerLength: answerLen,
                                               maxInFlight: maxInFlight, vocabulary: low..<config.vocabSize, seed: seed,
                                               systemLength: conversationSystemLen)
        default:
            requests = workload.shapes.map { shape in
                GenerationRequest(prompt: (0..<shape.input).map { _ in Int.random(in: low..<config.vocabSize, using: &rng) },
                                  parameters: SamplingParameters(temperature: 0, maxTokens: shape.output, ignoreEOS: true))
            }
        }
        (model as? GPUModel)?.resetStepTotals()
        let deviceContext = (model as? GPUModel)?.context
        let freeBefore = try deviceContext?.memoryInfo()
        var freeLowest = freeBefore?.free
        let start = monotonicNanos()
        for request in requests { try engine.add(request) }
        try conversations?.start(engine)
        var answers: [RequestID: [Int]] = [:]
        var firstTokenByRound: [(round: Int, seconds: Double, queue: Double)] = []
        var stepMs: [Double] = [], decodeStepMs: [Double] = [], rows: [Int] = []
        var finished = 0, failures: [String] = []
        var timings: [RequestTiming] = []
        // The run ends when its last output is out (the engine gives memory back after that).
        var lastOutput = start
        while engine.hasWork {
            let t = monotonicNanos()
            let outputs = engine.step()
            if !outputs.isEmpty { lastOutput = monotonicNanos() }
            let ms = Double(monotonicNanos() - t) / 1e6
            let plan = engine.lastPlan
            guard !plan.rows.isEmpty else { continue }
            if let deviceContext, stepMs.count % 8 == 0, let free = try? deviceContext.memoryInfo().free { freeLowest = min(freeLowest ?? free, free) }
            stepMs.append(ms)
            rows.append(plan.rows.count)
            if plan.rows.allSatisfy(\.isDecode) { decodeStepMs.append(ms) }
            if conversations != nil { for output in outputs { answers[output.id, default: []] += output.tokens.map(\.id) } }
            for output in outputs where output.isFinal {
                finished += 1
                if let timing = output.timing { timings.append(timing) }
                if let error = output.error { failures.append(error) }
                if let conversations {
                    if let round = conversations.roundOf[output.id], let timing = output.timing, let first = timing.firstToken {
                        firstTokenByRound.append((round, first, timing.queue))
                    }
                    try conversations.finished(output.id, answer: answers.removeValue(forKey: output.id) ?? [], engine: engine)
                }
            }
        }
        if let conversations { requests = conversations.sent }
        let seconds = Double(lastOutput - start) / 1e9
        let gpu = (model as? GPUModel)?.stepTotals
        let gpuSteps = Double(max(1, gpu?.steps ?? 1))
        if let first = failures.first { throw ValidationError("\(failures.count) requests failed; the first: \(first)") }
        let stats = engine.statistics
        // KV held, in bytes: virtual tensors hold what requests map and give it back; the paged
        // pool is reserved whole from start to end.
        let kvPeakCreated: Int, heldAtEnd: Int, heldAfterTrim: Int, kvBudget: Int, unitBytes: Int
        if let memory = model.kvStorage.virtualCache?.memory {
            let chunk = memory.accounting.chunkSize
            heldAtEnd = memory.accounting.created * chunk
            try memory.drain()
            _ = try memory.trim()
            heldAfterTrim = memory.accounting.created * chunk
            kvPeakCreated = memory.accounting.peakCreated * chunk
            kvBudget = memory.accounting.budgetChunks * chunk
            unitBytes = chunk
        } else {
            let paged = model.kvStorage.pagedCache!
            (kvPeakCreated, heldAtEnd, heldAfterTrim, kvBudget) = (paged.poolBytes, paged.poolBytes, paged.poolBytes, paged.poolBytes)
            unitBytes = paged.poolBytes / paged.pageCount
        }
        let freeAfter = try deviceContext?.memoryInfo().free

        let input = requests.reduce(0) { $0 + $1.prompt.count }, output = requests.reduce(0) { $0 + ($1.parameters.maxTokens ?? 0) }
        let numPrompts = requests.count
        let sorted = stepMs.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let slices = 20
        let overTime = (0..<slices).compactMap { s -> Double? in
            let range = (rows.count * s / slices)..<(rows.count * (s + 1) / slices)
            return range.isEmpty ? nil : Double(rows[range].reduce(0, +)) / Double(range.count)
        }
        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        let firstTokens = timings.compactMap(\.firstToken), totals = timings.map(\.total)
        let interTokens = timings.compactMap(\.interToken)
        let report = Report(
            date: todayUTC(), backend: runtime.description, model: modelOptions.model ?? "SmolLM2-135M-Instruct", dataset: dataset.rawValue,
            requests: numPrompts, inputTokens: input, outputTokens: output, seconds: seconds,
            requestsPerSecond: Double(numPrompts) / seconds, inputTokensPerSecond: Double(input) / seconds,
            outputTokensPerSecond: Double(output) / seconds, totalTokensPerSecond: Double(input + output) / seconds,
            steps: stepMs.count, stepMeanMs: stepMs.reduce(0, +) / Double(max(1, stepMs.count)), stepP50Ms: percentile(0.5), stepP99Ms: percentile(0.99),
            decodeStepMeanMs: decodeStepMs.isEmpty ? nil : decodeStepMs.reduce(0, +) / Double(decodeStepMs.count),
            engineHostMsPerStep: stats.hostSeconds * 1000 / Double(max(1, stats.steps)), modelMsPerStep: stats.modelSeconds * 1000 / Double(max(1, stats.steps)),
            modelPlanMsPerStep: gpu.map { $0.planMs / gpuSteps }, modelLaunchMsPerStep: gpu.map { $0.launchMs / gpuSteps },
            modelWaitMsPerStep: gpu.map { $0.waitMs / gpuSteps }, pipelined: engine.pipelined,
            gpuSpanMsPerStep: gpu.map { $0.gpuSpanMs / gpuSteps }, gpuIdleGapMsPerStep: gpu.map { $0.idleGapMs / gpuSteps },
            queuedAheadShare: gpu.map { Double($0.queuedAhead) / Double(max(1, $0.followingSteps)) },
            gpuBusyShare: gpu.map { $0.gpuSpanMs / 1000 / seconds }, gpuStepTotals: gpu,
            maxNumSeqs: engine.options.maxNumSeqs, maxNumBatchedTokens: engine.options.maxNumBatchedTokens,
            meanRowsPerStep: Double(rows.reduce(0, +)) / Double(max(1, rows.count)), maxRowsPerStep: rows.max() ?? 0, rowsOverTime: overTime,
            preemptions: stats.preemptions, recomputedTokens: stats.recomputedTokens, mappingWaits: stats.mappingWaits,
            blockedMappingWaits: stats.blockedMappingWaits, blockedDecodeOnlyWaits: stats.blockedDecodeOnlyWaits,
            mappingWaitMsTotal: stats.mappingWaitSeconds * 1000, kvMode: model.kvStorage.kindName, chunkBytes: unitBytes,
            kvPeakCreatedBytes: kvPeakCreated, kvPeakCommittedBytes: stats.peakCommittedChunks * unitBytes,
            kvHeldAtEndBytes: heldAtEnd, kvHeldAfterTrimBytes: heldAfterTrim, kvBudgetBytes: kvBudget,
            deviceFreeBeforeBytes: freeBefore?.free, deviceFreeLowestBytes: freeLowest, deviceFreeAfterTrimBytes: freeAfter,
            deviceTotalBytes: freeBefore?.total,
            firstTokenP50Seconds: percentile(firstTokens, 0.5), firstTokenP99Seconds: percentile(firstTokens, 0.99),
            totalP50Seconds: percentile(totals, 0.5), totalP99Seconds: percentile(totals, 0.99),
            interTokenMeanMs: interTokens.isEmpty ? 0 : interTokens.reduce(0, +) / Double(interTokens.count) * 1000,
            prefixCacheHitRate: stats.prefixHitRate,
            firstTokenP50FirstRoundSeconds: conversations.map { _ in percentile(firstTokenByRound.filter { $0.round == 0 }.map(\.seconds), 0.5) },
            firstTokenP50LaterRoundsSeconds: conversations.map { _ in percentile(firstTokenByRound.filter { $0.round > 0 }.map(\.seconds), 0.5) },
            firstTokenP50ByRoundSeconds: conversations.map { c in (0..<c.rounds).map { r in percentile(firstTokenByRound.filter { $0.round == r }.map(\.seconds), 0.5) } },
            firstTokenMeanByRoundSeconds: conversations.map { c in (0..<c.rounds).map { r in
                let values = firstTokenByRound.filter { $0.round == r }.map(\.seconds)
                return values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
            } },
            queueP50ByRoundSeconds: conversations.map { c in (0..<c.rounds).map { r in percentile(firstTokenByRound.filter { $0.round == r }.map(\.queue), 0.5) } },
            prefixTakeovers: model.kvStorage.virtualCache?.takeovers,
            matmulWarmupMs: (model as? GPUModel)?.matmulWarmup.ms, matmulAutotune: (model as? GPUModel)?.matmulAutotuned,
            matmulTuningCache: (model as? GPUModel)?.matmulTuningCacheNote,
            statistics: stats)
        var table = Table(title: "offline throughput", header: ["metric", "value"])
        table.add(["requests", "\(numPrompts) (\(finished) finished) in \(fixed(seconds, 2)) s: \(fixed(report.requestsPerSecond, 2)) req/s"])
        table.add(["tokens", "\(input) in, \(output) out"])
        table.add(["throughput (tokens/s)", "output \(fixed(report.outputTokensPerSecond, 1)), input \(fixed(report.inputTokensPerSecond, 1)), total \(fixed(report.totalTokensPerSecond, 1))"])
        table.add(["steps", "\(report.steps): mean \(fixed(report.stepMeanMs, 2)) ms, p50 \(fixed(report.stepP50Ms, 2)), p99 \(fixed(report.stepP99Ms, 2))"
                   + (report.decodeStepMeanMs.map { "; decode-only mean \(fixed($0, 2)) ms" } ?? "")])
        table.add(["latency (from arrival)", "first token p50 \(fixed(report.firstTokenP50Seconds, 2)) s, p99 \(fixed(report.firstTokenP99Seconds, 2)); "
                   + "end p50 \(fixed(report.totalP50Seconds, 2)) s, p99 \(fixed(report.totalP99Seconds, 2)); between tokens \(fixed(report.interTokenMeanMs, 2)) ms"])
        table.add(["per step", "engine host \(fixed(report.engineHostMsPerStep, 3)) ms, model \(fixed(report.modelMsPerStep, 3)) ms"
                   + (report.modelPlanMsPerStep.map { " (plan \(fixed($0, 3)), queue \(fixed(report.modelLaunchMsPerStep!, 3)), GPU wait \(fixed(report.modelWaitMsPerStep!, 3)))" } ?? "")])
        if let gpu, let gpuModel = model as? GPUModel {
            // What a handle per product shape (before they were shared) would have cost on top.
            let clock = monotonicNanos()
            for _ in 0..<4 { _ = try CuBLASLt.shared().makeHandle(context: gpuModel.context) }
            let handleMs = Double(monotonicNanos() - clock) / 4e6
            table.add(["cuBLASLt handle", "\(fixed(handleMs, 3)) ms to create one: a handle per shape would have added \(fixed(handleMs * Double(gpu.matmulShapes), 0)) ms"])
            table.add(["GPU per step", "span \(fixed(report.gpuSpanMsPerStep!, 3)) ms, idle gap before it \(fixed(report.gpuIdleGapMsPerStep!, 3)) ms; "
                       + "busy \(fixed(100 * report.gpuBusyShare!, 1))% of the run; \(engine.pipelined ? "pipelined" : "one step at a time"): "
                       + "\(gpu.queuedAhead) of \(gpu.followingSteps) steps queued before the step ahead ended; "
                       + "\(stats.synchronizedSteps) waited for picks, \(stats.discardedRows) rows discarded; "
                       + "\(gpu.matmulShapes) cuBLASLt shapes set up in \(fixed(gpu.matmulSetupMs, 1)) ms "
                       + "(\(gpuModel.matmulWarmup.shapes) more when the model was built, in \(fixed(gpuModel.matmulWarmup.ms, 1)) ms)"])
            if let report = GPUModel.autotuneSummary(gpuModel.matmulAutotuned, cacheNote: gpuModel.matmulTuningCacheNote) { table.add(["cuBLASLt autotune", report]) }
            if !gpu.longestIdleGaps.isEmpty {
                table.add(["longest GPU idle gaps", gpu.longestIdleGaps.map { "step \($0.step) \(fixed($0.ms, 2)) ms (\($0.rows) rows)" }
                    .joined(separator: "; ")])
                // The engine thread between queueing the step before and the one the GPU waited for.
                let traced = gpu.longestIdleGaps.prefix(4).compactMap { gap -> String? in
                    guard let late = engine.stepTrace(gap.step) else { return nil }
                    let before = engine.stepTrace(gap.step - 1).map { "; the call before: " + $0.summary } ?? ""
                    let model = " [model: " + gap.host.summary + (gap.hostBefore.map { "; the step before: " + $0.summary } ?? "")
                        + (gap.spanBeforeMs.map { ", its GPU span " + fixed($0, 1) + " ms" } ?? "") + "]"
                    return "step \(gap.step): " + late.summary + before + model
                }
                if !traced.isEmpty { table.add(["engine thread at those steps", traced.joined(separator: " | ")]) }
            }
            for (kind, operations, steps) in [("prompt", gpu.promptStepOperationsMs, gpu.profiledPromptSteps),
                                              ("decode-only", gpu.decodeStepOperationsMs, gpu.profiledDecodeSteps)] where steps > 0 {
                let total = operations.values.reduce(0, +)
                table.add(["GPU ms a \(kind) step", "\(steps) steps, \(fixed(total / Double(steps), 3)) ms of operations: "
                           + operations.sorted { $0.value > $1.value }.map { "\($0.key) \(fixed($0.value / Double(steps), 3))" }.joined(separator: ", ")])
            }
            table.add(["shared-prefix decode", engineFlags.sharedPrefixDecode == .on
                       ? "\(gpuModel.sharedPrefixTiles) tiles planned; \(fixed(Double(gpuModel.sharedPrefixBytesSaved) / 1e9, 1)) GB of K/V not read again"
                       : "off"])
            table.add(["CUDA graphs", engineFlags.cudaGraphs == .on
                       ? "\(gpu.graphReplays) decode steps replayed, \(gpu.graphCaptures) graphs captured, \(gpu.graphDirect) first sightings run directly"
                       : "off"])
        }
        table.add(["prefetched admissions", "\(stats.prefetches) (\(stats.aliasedAhead) aliasing a cached prefix ahead; \(stats.prefetchesUsed) admitted with them, \(stats.prefetchesReleased) given back)"])
        table.add(["rows a step", "mean \(fixed(report.meanRowsPerStep, 1)), max \(report.maxRowsPerStep); over time: \(overTime.map { fixed($0, 0) }.joined(separator: " "))"])
        table.add(["preemptions", "\(stats.preemptions) (\(stats.recomputedTokens) tokens recomputed)"])
        if let first = report.firstTokenP50FirstRoundSeconds, let later = report.firstTokenP50LaterRoundsSeconds {
            table.add(["multi-turn first token", "p50 \(fixed(first * 1000, 1)) ms in first rounds, \(fixed(later * 1000, 1)) ms in later rounds"])
            if let p50 = report.firstTokenP50ByRoundSeconds, let mean = report.firstTokenMeanByRoundSeconds, let queue = report.queueP50ByRoundSeconds {
                table.add(["first token by round", zip(zip(p50, mean), queue).enumerated().map { r, v in
                    "\(r + 1): p50 \(fixed(v.0.0 * 1000, 0)), mean \(fixed(v.0.1 * 1000, 0)), queue p50 \(fixed(v.1 * 1000, 0)) ms"
                }.joined(separator: "; ")])
            }
        }
        table.add(["prefix cache", "\(stats.prefixHitTokens) of \(stats.prefixQueriedTokens) prompt tokens found cached (hit rate \(fixed(stats.prefixHitRate * 100, 1))%); "
                   + "\(stats.prefixKeptChunks) chunks kept (\(stats.prefixSharedRunningChunks) from running requests), \(stats.prefixEvictedChunks) evicted, \(stats.prefixHeldChunks) held"
                   + (model.kvStorage.virtualCache.map { "; \($0.takeovers) requests took over a holder's ranges (\($0.partialTakeovers) with the head aliased, "
                      + "\($0.memory.accounting.realiasedRetiring) head chunks kept mapped from their last round, still retiring)" } ?? "")
                   + (stats.prefixPacks > 0 ? "; \(stats.prefixPacks) prefixes packed into slabs (\(stats.prefixPackedChunks) chunks, "
                      + "\(model.kvStorage.virtualCache?.copiedPrefixChunks ?? 0) copied into requests that held a slab in part, "
                      + "\(model.kvStorage.virtualCache?.memory.accounting.runSplits ?? 0) runs split)" : "")
                   + (model.kvStorage.virtualCache.map { cache in
                       let a = cache.memory.accounting
                       return a.freshRuns > 0 ? "; \(a.freshRuns) runs of fresh chunks mapped as slabs (up to \(cache.memory.freshSlabChunks)), "
                           + "\(cache.copiedPrefixChunks) chunks copied into requests that held a slab in part, \(a.runSplits) runs split, \(stats.strandedChunks) chunks stranded now" : ""
                   } ?? "")])
        if let failure = stats.prefixLastFailure {
            table.add(["prefix cache failures", "\(stats.prefixAttachFailures) found but not reused, \(stats.prefixPublishFailures) not shared, \(stats.prefixPackFailures) not packed; the last: \(failure)"])
        }
        if let mapper = engine.mapperStatistics {
            table.add(["mapper", "\(mapper.chunksMapped) chunks mapped, p50 \(fixed(Double(mapper.chunkLatencyP50) / 1000, 1)) us, p99 \(fixed(Double(mapper.chunkLatencyP99) / 1000, 1)) us a chunk"])
        }
        table.add(["mapping waits", "\(stats.blockedMappingWaits) of \(stats.mappingWaits) blocked (\(stats.blockedDecodeOnlyWaits) in decode-only steps), \(fixed(report.mappingWaitMsTotal, 2)) ms in all"])
        if !stats.longestMappingWaits.isEmpty {
            table.add(["longest mapping waits", stats.longestMappingWaits.map { wait in
                "step \(wait.step) \(fixed(wait.seconds * 1000, 1)) ms (\(wait.rows) rows, \(wait.promptTokens) prompt tokens; in flight "
                    + (wait.promptTokensInFlight.map { "\($0) prompt tokens" } ?? "none")
                    + "; \(wait.aheadUnfinished ? "look-ahead unfinished, " : "")\(wait.ownChunks) own chunks, \(wait.freeChunks) free)"
            }.joined(separator: "; ")])
        }
        table.add(["KV memory", "\(report.kvMode): peak \(mib(report.kvPeakCreatedBytes)) created (committed \(mib(report.kvPeakCommittedBytes))) of a \(mib(report.kvBudgetBytes)) budget; "
                   + "held at the end \(mib(report.kvHeldAtEndBytes)), after trim \(mib(report.kvHeldAfterTrimBytes))"])
        if let before = report.deviceFreeBeforeBytes, let lowest = report.deviceFreeLowestBytes, let after = report.deviceFreeAfterTrimBytes,
           let total = report.deviceTotalBytes {
            table.add(["GPU memory free", "\(mib(before)) before the run, \(mib(lowest)) at the lowest, \(mib(after)) after the trim, of \(mib(total))"])
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(report, snakeCaseKeys: true)) }
    }
}
