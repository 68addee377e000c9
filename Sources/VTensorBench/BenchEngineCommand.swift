import ArgumentParser
import CLICommon
import Engine
import Foundation
import Models
import Runtime
import VTensor

/// `vtensor bench engine`: the engine's own host time a step (scheduling, admission, mapping,
/// bookkeeping, outputs) with a model that computes nothing, over host memory: what a step
/// costs before and after the model, measured without a GPU.
struct BenchEngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "The engine's own host time a step, with a model that computes nothing.")

    @Option(help: "Running requests (rows a decode step), comma-separated.") var rows = "64,256,1024"
    @Option(help: "Prompt tokens of each request.") var promptTokens = 500
    @Option(help: "Decode steps timed after the prompts.") var steps = 100
    @Option(help: "Write the results as JSON here.") var jsonOut: String?
    @Option(help: "Plan each step before the previous one's picks are in (on, the GPU's way) or after (off).") var pipelineSteps: OnOff = .on
    @Option(help: "decode: every request decodes for the timed steps; churn: short answers, a new request for every one that finishes, prompts sharing a prefix within 16 groups (the prefix cache's matching, insertion, eviction and hold-back every step); shared-prefix: bench throughput's shared-prefix workload (16 groups x 16 prompts of 2048 + 128 tokens, 64 out) run to the end, virtual tensors and paged.")
    var workload: Workload = .decode
    @Option(help: "churn: output tokens of each request.") var outputTokens = 32
    @Option(help: "The prefix cache (on by default in the engine).") var prefixCache: OnOff = .on
    @Option(help: "shared-prefix: which KV modes to run (vtensor, paged or both, interleaved).") var kv: KVChoice = .both
    enum KVChoice: String, ExpressibleByArgument, CaseIterable { case vtensor, paged, both }
    @Option(help: "Virtual tensors: access granted once per run of adjacent chunks mapped together (on), once per chunk (off), or, for shared-prefix, both interleaved.")
    var accessPerRun: AccessChoice = .off
    enum AccessChoice: String, ExpressibleByArgument, CaseIterable { case on, off, both }
    @Option(help: "Virtual tensors: retired chunks unmapped a run at a time (on) or one by one (off).")
    var unmapPerRun: OnOff = .off

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case decode, churn, sharedPrefix = "shared-prefix", multiTurn = "multi-turn", arrivals
    }
    @Option(help: "arrivals: requests a second (Poisson, on the modeled clock), comma-separated.") var requestRates = "4,8,16,24"
    @Option(help: "arrivals: requests in a run.") var numPrompts = 1000
    @Option(help: "arrivals: prompt and output lengths, uniform within LOW-HIGH.") var inputRange = "128-1024"
    @Option var outputRange = "128-512"
    @Option(help: "multi-turn: conversations, rounds, tokens of a user turn and of an answer, conversations in flight (the prefix cache issue's defaults).")
    var numConversations = 256
    @Option var rounds = 5
    @Option var userLen = 512
    @Option var answerLen = 64
    @Option var maxInFlight = 128
    @Option(help: "multi-turn: tokens a step.") var maxNumBatchedTokens = 8192
    @Option(help: "multi-turn: the order waiting requests start in.") var schedulePolicy: SchedulePolicy = .fcfs
    @Option(help: "multi-turn: KV budget in GiB (the GPU runs had about 110).") var kvBudgetGib = 110
    @Option(help: "multi-turn: size each step's prompt tokens to the work waiting, with this step overhead in tokens (default: a fixed budget).")
    var stepOverheadTokens: Int?

    /// Takes each row's tokens into the cache (as a model would) and returns a fixed token.
    /// With a step cost model it also keeps a clock of the GPU time its steps would take.
    final class NullModel: LanguageModel {
        let config: ModelConfig
        let kvStorage: KVStorage
        let cost: StepCostModel?
        /// Milliseconds of modeled GPU time over the steps so far, and prompt tokens computed.
        private(set) var clockMs = 0.0
        /// An idle engine's clock moves on to the next arrival.
        func advance(to ms: Double) { clockMs = max(clockMs, ms) }
        private(set) var promptTokens = 0
        var maxSequenceTokens: Int { kvStorage.maxTokensPerRequest }
        var samplesOnDevice: Bool { true }
        var computesAsynchronously: Bool { true }
        init(config: ModelConfig, storage: KVStorage, cost: StepCostModel? = nil) { self.config = config; kvStorage = storage; self.cost = cost }
        func forward(_ inputs: [ForwardInput]) throws -> [[Float]] {
            throw RuntimeError.unsupported("the null model only samples")
        }
        func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
            let starts = try inputs.map { try kvStorage.length(of: $0.id) }
            if let cost {
                clockMs += cost.milliseconds(rows: zip(starts, inputs).map { ($0, $1.tokens.count) })
                promptTokens += inputs.reduce(0) { $0 + ($1.tokens.count > 1 ? $1.tokens.count : 0) }
            }
            try kvStorage.setLengths(zip(inputs, starts).map { ($0.id, $1 + $0.tokens.count) })
            if let paged = kvStorage.pagedCache {
                _ = paged.takeChangedTables()
                _ = paged.takePageCopies()
            }
            return inputs.map { _ in SampledToken(id: 5) }
        }
    }

    struct Result: Codable {
        var rows: Int; var medianMs: Double; var microsPerRow: Double; var addMs: Double
        var workload = "decode"; var prefixCache = true; var finishedPerStep: Double?; var prefixHitRate: Double?
    }

    func run() throws {
        let counts = try rows.split(separator: ",").map { text -> Int in
            guard let n = Int(text), n >= 1 else { throw ValidationError("--rows takes positive integers, got \(text)") }
            return n
        }
        guard promptTokens >= 1, steps >= 1 else { throw ValidationError("--prompt-tokens and --steps must be positive") }
        if accessPerRun == .both && workload != .sharedPrefix {
            throw ValidationError("--access-per-run both runs the shared-prefix workload only; give on or off")
        }
        if workload == .churn { return try runChurn(counts) }
        if workload == .sharedPrefix { return try runSharedPrefix() }
        if workload == .multiTurn { return try runMultiTurn() }
        if workload == .arrivals { return try runArrivals() }
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        var results: [Result] = []
        var table = Table(title: "engine host time a decode step (null model, host memory)", header: ["rows", "median ms", "us a row", "add (ms)"])
        for n in counts {
            // Long enough outputs that the first requests still decode when the last are admitted.
            let outputTokens = steps + n * promptTokens / 8192 + 8
            let engine = try makeEngine(config: config, rows: n, tokensPerRequest: promptTokens + outputTokens + 8, requestsHeld: n)
            let addStart = monotonicNanos()
            for i in 0..<n {
                try engine.add(GenerationRequest(prompt: (0..<promptTokens).map { 1000 + ($0 &* 31 &+ i) % 100_000 },
                                                 parameters: SamplingParameters(temperature: 0, maxTokens: outputTokens, ignoreEOS: true)))
            }
            let addMs = Double(monotonicNanos() - addStart) / 1e6
            var decode: [Double] = []
            while decode.count < steps && engine.hasWork {
                let t = monotonicNanos()
                if let failed = engine.step().first(where: { $0.error != nil }) { throw ValidationError("request \(failed.id) failed: \(failed.error!)") }
                let ms = Double(monotonicNanos() - t) / 1e6
                if engine.lastPlan.rows.count == n && engine.lastPlan.rows.allSatisfy(\.isDecode) { decode.append(ms) }
            }
            for id in 1...n { engine.abort(id) }
            engine.runUntilIdle { _ in }
            guard !decode.isEmpty else { throw ValidationError("no decode step of \(n) rows ran") }
            let median = decode.sorted()[decode.count / 2]
            results.append(Result(rows: n, medianMs: median, microsPerRow: median * 1000 / Double(n), addMs: addMs))
            table.add(["\(n)", fixed(median, 3), fixed(median * 1000 / Double(n), 2), fixed(addMs, 1)])
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(results)) }
    }

    /// An engine over the null model with Llama-3-8B's KV shape on host memory (small chunks,
    /// so that address space, not memory, is what a run uses), its budget holding
    /// `requestsHeld` requests of `tokensPerRequest` tokens.
    private func makeEngine(config: ModelConfig, rows: Int, tokensPerRequest: Int, requestsHeld: Int, paged: Bool = false,
                            perRun: Bool? = nil, options: EngineOptions? = nil, cost: StepCostModel? = nil) throws -> Engine {
        var config = config
        config.maxPositionEmbeddings = tokensPerRequest
        let shape = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .bf16)
        let bytes = requestsHeld * (tokensPerRequest + 16) * shape.tokenBytes
        let backend = try HostBackend(chunkSize: 2 << 20, capacityBytes: bytes + (64 << 20))
        let memory = try VirtualMemory(backend: backend, budget: .bytes(bytes + (32 << 20)), accessPerRun: perRun ?? (accessPerRun == .on),
                                       unmapPerRun: unmapPerRun == .on)
        let cache = try KVCache(shape: shape, memory: memory, maxTokensPerRequest: tokensPerRequest)
        let storage: KVStorage = paged
            ? .paged(try PagedKVCache(shape: shape, pageTokens: 16, pageCount: bytes / (16 * shape.tokenBytes), maxTokensPerRequest: tokensPerRequest,
                                      maxRequests: max(1024, 4 * rows)))
            : .virtual(cache)
        return try Engine(model: NullModel(config: config, storage: storage, cost: cost), tokenizer: nil, eosTokenIds: [],
                          options: options ?? EngineOptions(maxNumSeqs: rows, maxNumBatchedTokens: max(8192, rows), pipelineSteps: pipelineSteps == .on,
                                                            prefixCaching: prefixCache == .on))
    }

    /// Requests arriving at Poisson rates on the modeled clock (open loop, unlike multi-turn):
    /// fixed steps against steps sized to the work waiting (`--step-overhead-tokens`, 512 unless
    /// given), random lengths as bench throughput's random dataset. First tokens, the time between
    /// tokens and throughput in modeled time.
    private func runArrivals() throws {
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        func range(_ text: String, _ name: String) throws -> ClosedRange<Int> {
            let parts = text.split(separator: "-").compactMap { Int($0) }
            guard parts.count == 2, parts[0] >= 1, parts[0] <= parts[1] else { throw ValidationError("\(name) takes LOW-HIGH, got \(text)") }
            return parts[0]...parts[1]
        }
        let inputs = try range(inputRange, "--input-range"), outputs = try range(outputRange, "--output-range")
        let rates = try requestRates.split(separator: ",").map { text -> Double in
            guard let r = Double(text), r > 0 else { throw ValidationError("--request-rates takes positive numbers, got \(text)") }
            return r
        }
        guard numPrompts >= 1 else { throw ValidationError("--num-prompts must be at least 1") }
        let overhead = stepOverheadTokens ?? 512
        let cost = StepCostModel.h200Llama3_8B
        struct Row: Codable {
            var rate: Double; var sized: Bool; var outputTokensPerSecond: Double
            var firstTokenMeanMs: Double; var firstTokenP50Ms: Double; var firstTokenP99Ms: Double
            var interTokenMeanMs: Double; var steps: Int
        }
        var rows: [Row] = []
        var table = Table(title: "arrivals on a modeled H200 clock (null model; \(numPrompts) requests, \(inputRange) in, \(outputRange) out, \(maxNumBatchedTokens) tokens a step; sized: overhead \(overhead))",
                          header: ["rate", "steps", "out tok/s", "first token mean / p50 / p99 (ms)", "between tokens ms", "step count"])
        let tokensPerRequest = inputs.upperBound + outputs.upperBound + 8
        let shape = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .bf16)
        let held = max(16, (kvBudgetGib << 30) / ((tokensPerRequest + 16) * shape.tokenBytes))
        for rate in rates {
            // The same requests and arrival times for both arms.
            var rng = SplitMix64(seed: 7)
            var at = 0.0
            let plan: [(ms: Double, request: GenerationRequest)] = (0..<numPrompts).map { _ in
                at += -log(max(1e-12, 1 - rng.nextDouble())) / rate * 1000
                let n = Int.random(in: inputs, using: &rng), m = Int.random(in: outputs, using: &rng)
                let prompt = (0..<n).map { _ in Int.random(in: 1000..<config.vocabSize, using: &rng) }
                return (at, GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: m, ignoreEOS: true)))
            }
            for sized in [false, true] {
                var options = EngineOptions(maxNumSeqs: 256, maxNumBatchedTokens: maxNumBatchedTokens, pipelineSteps: pipelineSteps == .on,
                                            schedulePolicy: schedulePolicy, prefixCaching: prefixCache == .on)
                options.stepOverheadTokens = sized ? overhead : nil
                let engine = try makeEngine(config: config, rows: 256, tokensPerRequest: tokensPerRequest, requestsHeld: held,
                                            options: options, cost: cost)
                let model = engine.model as! NullModel
                var next = 0
                var sentAt: [RequestID: Double] = [:], firstAt: [RequestID: Double] = [:], counts: [RequestID: Int] = [:]
                var firstTokens: [Double] = [], between: [Double] = []
                var steps = 0, outputTokens = 0
                while next < plan.count || engine.hasWork {
                    if !engine.hasWork { model.advance(to: plan[next].ms) }
                    while next < plan.count && plan[next].ms <= model.clockMs {
                        sentAt[try engine.add(plan[next].request)] = plan[next].ms
                        next += 1
                    }
                    for output in engine.step() {
                        if let error = output.error { throw ValidationError("request \(output.id) failed: \(error)") }
                        if !output.tokens.isEmpty, firstAt[output.id] == nil, let sent = sentAt[output.id] {
                            firstAt[output.id] = model.clockMs
                            firstTokens.append(model.clockMs - sent)
                        }
                        counts[output.id, default: 0] += output.tokens.count
                        outputTokens += output.tokens.count
                        if output.isFinal, let first = firstAt[output.id], let n = counts[output.id], n > 1 {
                            between.append((model.clockMs - first) / Double(n - 1))
                        }
                    }
                    steps += 1
                }
                let sorted = firstTokens.sorted()
                func pick(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
                let row = Row(rate: rate, sized: sized, outputTokensPerSecond: Double(outputTokens) / (model.clockMs / 1000),
                              firstTokenMeanMs: sorted.reduce(0, +) / Double(max(1, sorted.count)), firstTokenP50Ms: pick(0.5), firstTokenP99Ms: pick(0.99),
                              interTokenMeanMs: between.reduce(0, +) / Double(max(1, between.count)), steps: steps)
                rows.append(row)
                table.add([fixed(rate, 1), sized ? "sized" : "fixed", fixed(row.outputTokensPerSecond, 0),
                           "\(fixed(row.firstTokenMeanMs, 1)) / \(fixed(row.firstTokenP50Ms, 1)) / \(fixed(row.firstTokenP99Ms, 1))",
                           fixed(row.interTokenMeanMs, 2), "\(steps)"])
            }
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(rows)) }
    }

    /// bench throughput's multi-turn workload through the null model, with the prefix cache and
    /// without, on a clock of modeled GPU time (`StepCostModel`): each round's first token in
    /// modeled milliseconds from the moment it was sent. For the scheduling questions of issue 12
    /// (first tokens of later rounds at a third of the no-cache engine's) on a machine without a GPU.
    private func runMultiTurn() throws {
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        guard numConversations >= 1, rounds >= 2, userLen >= 1, answerLen >= 1, maxInFlight >= 1, maxNumBatchedTokens >= 1, kvBudgetGib >= 1 else {
            throw ValidationError("multi-turn needs at least 1 conversation, 2 rounds, positive lengths, budget and step tokens")
        }
        let cost = StepCostModel.h200Llama3_8B
        struct Arm: Codable {
            var prefixCache: Bool; var modeledSeconds: Double; var outputTokensPerSecond: Double; var steps: Int
            var promptTokensComputed: Int; var hitRate: Double
            var firstTokenP50MsByRound: [Double]; var firstTokenMeanMsByRound: [Double]
            var laterRoundsP50Ms: Double; var laterRoundsMeanMs: Double
            /// Means over all requests: time between tokens after the first, and from sent to the last token.
            var interTokenMeanMs: Double; var roundMeanMs: Double
            var hostSeconds: Double
        }
        var arms: [Arm] = []
        var table = Table(title: "multi-turn on a modeled H200 clock (null model; \(numConversations) x \(rounds) rounds, \(userLen) + \(answerLen) tokens, \(maxInFlight) in flight, \(maxNumBatchedTokens) tokens a step, \(schedulePolicy.rawValue))",
                          header: ["prefix cache", "modeled s", "out tok/s", "steps", "prompt tokens", "hit rate", "first token p50 by round (ms)", "mean by round (ms)", "between tokens ms", "round ms", "host s"])
        let tokensPerRequest = rounds * (userLen + answerLen) + 8
        let shape = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .bf16)
        let held = max(maxInFlight, (kvBudgetGib << 30) / ((tokensPerRequest + 16) * shape.tokenBytes))
        for cached in [true, false] {
            var options = EngineOptions(maxNumSeqs: 256, maxNumBatchedTokens: maxNumBatchedTokens, pipelineSteps: pipelineSteps == .on,
                                        schedulePolicy: schedulePolicy, prefixCaching: cached)
            options.stepOverheadTokens = stepOverheadTokens
            let engine = try makeEngine(config: config, rows: 256, tokensPerRequest: tokensPerRequest, requestsHeld: held,
                                        options: options, cost: cost)
            let model = engine.model as! NullModel
            let driver = ConversationDriver(conversations: numConversations, rounds: rounds, userLength: userLen, answerLength: answerLen,
                                            maxInFlight: maxInFlight, vocabulary: 1000..<config.vocabSize, seed: 1)
            var sentAt: [RequestID: (round: Int, ms: Double)] = [:]
            var firstToken: [[Double]] = Array(repeating: [], count: rounds)
            var firstAt: [RequestID: Double] = [:]
            var between: [Double] = [], roundTimes: [Double] = []
            driver.onSend = { id, round in sentAt[id] = (round, model.clockMs) }
            var answers: [RequestID: [Int]] = [:]
            let start = monotonicNanos()
            try driver.start(engine)
            var steps = 0, outputTokens = 0
            while engine.hasWork {
                let outputs = engine.step()
                steps += 1
                for output in outputs {
                    if let error = output.error { throw ValidationError("request \(output.id) failed: \(error)") }
                    if !output.tokens.isEmpty, answers[output.id] == nil, let sent = sentAt[output.id] {
                        firstToken[sent.round].append(model.clockMs - sent.ms)
                        firstAt[output.id] = model.clockMs
                    }
                    answers[output.id, default: []] += output.tokens.map(\.id)
                    outputTokens += output.tokens.count
                    if output.isFinal, let sent = sentAt[output.id], let first = firstAt.removeValue(forKey: output.id) {
                        let count = (answers[output.id]?.count ?? 1)
                        if count > 1 { between.append((model.clockMs - first) / Double(count - 1)) }
                        roundTimes.append(model.clockMs - sent.ms)
                    }
                    if output.isFinal { try driver.finished(output.id, answer: answers.removeValue(forKey: output.id) ?? [], engine: engine) }
                }
            }
            let host = Double(monotonicNanos() - start) / 1e9
            func p50(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.sorted()[v.count / 2] }
            func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }
            let later = Array(firstToken.dropFirst().joined())
            let arm = Arm(prefixCache: cached, modeledSeconds: model.clockMs / 1000, outputTokensPerSecond: Double(outputTokens) / (model.clockMs / 1000),
                          steps: steps, promptTokensComputed: model.promptTokens, hitRate: engine.statistics.prefixHitRate,
                          firstTokenP50MsByRound: firstToken.map(p50), firstTokenMeanMsByRound: firstToken.map(mean),
                          laterRoundsP50Ms: p50(later), laterRoundsMeanMs: mean(later),
                          interTokenMeanMs: mean(between), roundMeanMs: mean(roundTimes), hostSeconds: host)
            arms.append(arm)
            table.add([cached ? "on" : "off", fixed(arm.modeledSeconds, 2), fixed(arm.outputTokensPerSecond, 0), "\(steps)", "\(model.promptTokens)",
                       fixed(100 * arm.hitRate, 1) + "%", arm.firstTokenP50MsByRound.map { fixed($0, 0) }.joined(separator: " / "),
                       arm.firstTokenMeanMsByRound.map { fixed($0, 0) }.joined(separator: " / "), fixed(arm.interTokenMeanMs, 1),
                       fixed(arm.roundMeanMs, 0), fixed(host, 1)])
        }
        print(table.render())
        let on = arms[0], off = arms[1]
        print("with the cache against without: throughput \(fixed(on.outputTokensPerSecond / off.outputTokensPerSecond, 2))x; "
              + "first token of rounds 2-\(rounds): p50 \(fixed(on.laterRoundsP50Ms / off.laterRoundsP50Ms, 2)), mean \(fixed(on.laterRoundsMeanMs / off.laterRoundsMeanMs, 2)) (issue 12 asks at most 0.33)")
        if let jsonOut { try writeFile(jsonOut, try jsonString(arms)) }
    }

    /// The shared-prefix workload to the end, virtual tensors and paged in turn (interleaved
    /// rounds): the engine thread's time with the model computing nothing.
    private func runSharedPrefix() throws {
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        // bench throughput's shared-prefix workload, as the GPU runs use it (shuffled arrivals).
        let workload = SharedPrefixWorkload(groups: 16, perGroup: 16, systemLength: 2048, questionLength: 128, outputLength: 64)
        let requests = workload.requests(vocabulary: 1000..<config.vocabSize, seed: 1)
        var table = Table(title: "engine host time, shared prefix (null model, host memory, prefix cache \(prefixCache.rawValue))",
                          header: ["KV", "round", "steps", "host s", "ms a step", "mapping waits ms", "hit rate"])
        var results: [Result] = []
        // The arms: virtual tensors with access granted per chunk and/or per run, then paged.
        var arms: [(label: String, paged: Bool, perRun: Bool)] = []
        if kv != .paged {
            if accessPerRun != .on { arms.append((accessPerRun == .both ? "vtensor, access per chunk" : "vtensor", false, false)) }
            if accessPerRun != .off { arms.append((accessPerRun == .both ? "vtensor, access per run" : "vtensor", false, true)) }
        }
        if kv != .vtensor { arms.append(("paged", true, false)) }
        for round in 0..<3 {
            for (label, paged, perRun) in arms {
                let engine = try makeEngine(config: config, rows: 256,
                                            tokensPerRequest: workload.systemLength + workload.questionLength + workload.outputLength + 8,
                                            requestsHeld: 2 * requests.count, paged: paged, perRun: perRun)
                for request in requests { try engine.add(request) }
                var steps = 0
                let start = monotonicNanos()
                while engine.hasWork {
                    if let failed = engine.step().first(where: { $0.error != nil }) { throw ValidationError("request \(failed.id) failed: \(failed.error!)") }
                    steps += 1
                }
                let seconds = Double(monotonicNanos() - start) / 1e9
                let hit = engine.statistics.prefixHitRate
                table.add([label, "\(round + 1)", "\(steps)", fixed(seconds, 3), fixed(seconds * 1000 / Double(steps), 3),
                           fixed(engine.statistics.mappingWaitSeconds * 1000, 1), fixed(100 * hit, 1) + "%"])
                results.append(Result(rows: requests.count, medianMs: seconds * 1000 / Double(steps), microsPerRow: 0, addMs: 0,
                                      workload: paged ? "shared-prefix-paged" : perRun ? "shared-prefix-access-per-run" : "shared-prefix", prefixCache: prefixCache == .on, prefixHitRate: hit))
            }
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(results)) }
    }

    /// Keeps `n` requests in flight: each prompt is a 16-group shared prefix (half the prompt) and
    /// its own half; every step's finished requests are replaced by new ones before the next step.
    /// Times every step after the first 2n finishes (prefill chunks, decodes, admissions, the
    /// prefix cache's bookkeeping: all host work, the model computes nothing).
    private func runChurn(_ counts: [Int]) throws {
        guard outputTokens >= 1 else { throw ValidationError("--output-tokens must be positive") }
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        var results: [Result] = []
        var table = Table(title: "engine host time a step, churn (null model, host memory, prefix cache \(prefixCache.rawValue))",
                          header: ["rows", "median ms", "us a row", "finished a step", "prefix hit rate"])
        for n in counts {
            // Room for the running requests and as much again for cached prefixes.
            let engine = try makeEngine(config: config, rows: n, tokensPerRequest: promptTokens + outputTokens + 8, requestsHeld: 2 * n)
            var next = 0
            func add() throws {
                let group = next % 16, shared = promptTokens / 2
                let prompt = (0..<promptTokens).map { $0 < shared ? 1000 + ($0 &* 7 &+ group * 977) % 50_000 : 60_000 + ($0 &* 31 &+ next) % 60_000 }
                try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: outputTokens, ignoreEOS: true)))
                next += 1
            }
            let addStart = monotonicNanos()
            for _ in 0..<n { try add() }
            let addMs = Double(monotonicNanos() - addStart) / 1e6
            var finished = 0, timed: [Double] = [], finishedTimed = 0
            let warmup = 2 * n
            while timed.count < steps {
                let t = monotonicNanos()
                let outputs = engine.step()
                let ms = Double(monotonicNanos() - t) / 1e6
                if let failed = outputs.first(where: { $0.error != nil }) { throw ValidationError("request \(failed.id) failed: \(failed.error!)") }
                let done = outputs.filter(\.isFinal).count
                finished += done
                if finished > warmup { timed.append(ms); finishedTimed += done }
                for _ in 0..<done { try add() }
            }
            let hitRate = engine.statistics.prefixHitRate
            for id in 1...next { engine.abort(id) }
            engine.runUntilIdle { _ in }
            let median = timed.sorted()[timed.count / 2]
            let perStep = Double(finishedTimed) / Double(timed.count)
            results.append(Result(rows: n, medianMs: median, microsPerRow: median * 1000 / Double(n), addMs: addMs, workload: "churn",
                                  prefixCache: prefixCache == .on, finishedPerStep: perStep, prefixHitRate: hitRate))
            table.add(["\(n)", fixed(median, 3), fixed(median * 1000 / Double(n), 2), fixed(perStep, 2), fixed(100 * hitRate, 1) + "%"])
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(results)) }
    }
}
