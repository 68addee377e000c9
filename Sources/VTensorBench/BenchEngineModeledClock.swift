import ArgumentParser
import CLICommon
import Engine
import Foundation
import Models
import Runtime
import VTensor

/// `bench engine`'s workloads on a clock of modeled GPU time (`StepCostModel`): the null model
/// prices each step it is given, so first tokens and throughput come out in modeled
/// milliseconds. For scheduling questions without a GPU; docs/perf.md (2026-12-04) checks the
/// clock against the GPU's multi-turn runs.
extension BenchEngineCommand {
    /// Requests arriving at Poisson rates on the modeled clock (open loop, unlike multi-turn):
    /// fixed steps against steps sized to the work waiting (`--step-overhead-tokens`, 512 unless
    /// given), random lengths as bench throughput's random dataset. First tokens, the time between
    /// tokens and throughput in modeled time.
    func runArrivals() throws {
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
                          header: ["rate", "step budget", "out tok/s", "first token mean / p50 / p99 (ms)", "between tokens ms", "steps"])
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
    func runMultiTurn() throws {
        if realTime { return try runMultiTurnInRealTime() }
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

    /// Multi-turn with every step queued on a modeled device for its modeled GPU time (the engine
    /// plans the next step meanwhile; memory given back retires behind the step in flight), arms
    /// the prefix cache with each `--fresh-slab-chunks` value and paged: what the mapper's driver
    /// calls (the set-access delay standing in for the driver) and the engine thread's waits cost
    /// the device, on the wall clock.
    func runMultiTurnInRealTime() throws {
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        guard numConversations >= 1, rounds >= 2, userLen >= 1, answerLen >= 1, maxInFlight >= 1, conversationSystemLen >= 0 else {
            throw ValidationError("multi-turn needs at least 1 conversation, 2 rounds and positive lengths")
        }
        let freshes = try freshSlabChunks.split(separator: ",").map { text -> Int in
            guard let n = Int(text), n >= 0 else { throw ValidationError("--fresh-slab-chunks takes integers >= 0, got \(text)") }
            return n
        }
        let pack = Int(packPrefixChunks.split(separator: ",").first ?? "0") ?? 0
        var arms: [(label: String, paged: Bool, fresh: Int)] = []
        if kv != .paged { arms += freshes.map { ($0 > 1 ? "vtensor, fresh slabs \($0)" : "vtensor", false, $0) } }
        if kv != .vtensor { arms.append(("paged", true, 0)) }
        let tokensPerRequest = conversationSystemLen + rounds * (userLen + answerLen) + 8
        let shape = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .bf16)
        let held = max(maxInFlight, (kvBudgetGib << 30) / ((tokensPerRequest + 16) * shape.tokenBytes))
        var table = Table(title: "multi-turn in real time on a modeled H200 (null model, each step queued on a modeled device for its modeled time; \(numConversations) x \(rounds) rounds, "
                          + "\(conversationSystemLen) system + \(userLen) + \(answerLen) tokens, \(maxInFlight) in flight, set access \(setAccessDelayUs) us, pack \(pack))",
                          header: ["arm", "round", "wall s", "out tok/s", "steps", "device idle ms", "busy", "mapping waits ms", "blocked steps", "engine host ms a step",
                                   "hit rate", "later first token p50 ms"])
        struct Row: Codable {
            var arm: String; var round: Int; var seconds: Double; var outputTokensPerSecond: Double; var mappingWaitMs: Double; var hitRate: Double
            var deviceIdleMs: Double; var deviceBusy: Double; var engineHostMsPerStep: Double
        }
        var rows: [Row] = []
        for round in 1...2 {
            for arm in arms {
                var options = EngineOptions(maxNumSeqs: 256, maxNumBatchedTokens: maxNumBatchedTokens, pipelineSteps: pipelineSteps == .on,
                                            schedulePolicy: schedulePolicy, prefixCaching: true)
                options.packPrefixChunks = pack
                options.stepOverheadTokens = stepOverheadTokens
                let engine = try makeEngine(config: config, rows: 256, tokensPerRequest: tokensPerRequest, requestsHeld: held, paged: arm.paged,
                                            options: options, cost: StepCostModel.h200Llama3_8B, freshSlab: arm.fresh, modeledDevice: true)
                let model = engine.model as! NullModel
                let driver = ConversationDriver(conversations: numConversations, rounds: rounds, userLength: userLen, answerLength: answerLen,
                                                maxInFlight: maxInFlight, vocabulary: 1000..<config.vocabSize, seed: 1, systemLength: conversationSystemLen)
                let start = monotonicNanos()
                func nowMs() -> Double { Double(monotonicNanos() - start) / 1e6 }
                var sentAt: [RequestID: (round: Int, ms: Double)] = [:]
                var later: [Double] = []
                driver.onSend = { id, round in sentAt[id] = (round, nowMs()) }
                var answers: [RequestID: [Int]] = [:]
                try driver.start(engine)
                var steps = 0, outputTokens = 0
                while engine.hasWork {
                    let outputs = engine.step()
                    steps += 1
                    for output in outputs {
                        if let error = output.error { throw ValidationError("request \(output.id) failed: \(error)") }
                        if !output.tokens.isEmpty, answers[output.id] == nil, let sent = sentAt[output.id], sent.round > 0 { later.append(nowMs() - sent.ms) }
                        answers[output.id, default: []] += output.tokens.map(\.id)
                        outputTokens += output.tokens.count
                        if output.isFinal { try driver.finished(output.id, answer: answers.removeValue(forKey: output.id) ?? [], engine: engine) }
                    }
                }
                let seconds = nowMs() / 1000
                let stats = engine.statistics
                let p50 = later.isEmpty ? 0 : later.sorted()[later.count / 2]
                let idleMs = Double(model.idleNanos) / 1e6, busy = model.busyShare
                let hostMs = stats.hostSeconds * 1000 / Double(max(1, stats.steps))
                table.add([arm.label, "\(round)", fixed(seconds, 2), fixed(Double(outputTokens) / seconds, 0), "\(steps)", fixed(idleMs, 0),
                           fixed(100 * busy, 1) + "%", fixed(stats.mappingWaitSeconds * 1000, 0), "\(stats.blockedMappingWaits)", fixed(hostMs, 2),
                           fixed(100 * stats.prefixHitRate, 1) + "%", fixed(p50, 0)])
                rows.append(Row(arm: arm.label, round: round, seconds: seconds, outputTokensPerSecond: Double(outputTokens) / seconds,
                                mappingWaitMs: stats.mappingWaitSeconds * 1000, hitRate: stats.prefixHitRate, deviceIdleMs: idleMs, deviceBusy: busy,
                                engineHostMsPerStep: hostMs))
            }
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(rows)) }
    }
}
