import Foundation
import Models
import Runtime
import VTensor
import Testing
@testable import Engine

/// `GenerationRequest.promptLogprobs` (what `echo` with `logprobs` reports): each prompt token's
/// log-probability under the teacher-forced logits of the CPU model, whether the prompt runs in
/// one step or in chunks, and even when its prefix is cached.
@Suite struct PromptLogprobsTests {
    /// Log-softmax in Double of each position's logits from one teacher-forced pass over `prompt`.
    static func teacherForced(_ prompt: [Int]) throws -> [[Double]] {
        let model = try EngineModelTests.model()
        try model.addSequence(0)
        let flat = try model.reserveAndForward([ForwardInput(id: 0, tokens: prompt, allLogits: true)])[0]
        let vocab = EngineModelTests.config.vocabSize
        return (0..<prompt.count).map { p in
            let row = flat[(p * vocab)..<((p + 1) * vocab)].map(Double.init)
            let m = row.max()!
            let logZ = m + log(row.reduce(0) { $0 + exp($1 - m) })
            return row.map { $0 - logZ }
        }
    }

    /// Runs one request; returns its prompt logprobs (from the output that carried them) and how
    /// many outputs carried any.
    static func run(_ engine: Engine, _ prompt: [Int], promptLogprobs: Int?) throws -> (scores: [SampledToken?]?, carriers: Int) {
        let id = try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 3, ignoreEOS: true),
                                                  promptLogprobs: promptLogprobs))
        var scores: [SampledToken?]?
        var carriers = 0
        engine.runUntilIdle { outputs in
            for output in outputs where output.id == id {
                if let found = output.promptLogprobs {
                    scores = found
                    carriers += 1
                    #expect(!output.tokens.isEmpty, "prompt logprobs come with the first generated token")
                }
            }
        }
        return (scores, carriers)
    }

    static func check(_ scores: [SampledToken?]?, against reference: [[Double]], prompt: [Int], alternatives: Int) {
        guard let scores else {
            Issue.record("no prompt logprobs came back")
            return
        }
        #expect(scores.count == prompt.count)
        #expect(scores.first! == nil, "the first prompt token has nothing before it")
        for p in 1..<min(scores.count, prompt.count) {
            guard let score = scores[p], let logprob = score.logprob else {
                Issue.record("position \(p) has no score")
                continue
            }
            let row = reference[p - 1]
            #expect(score.id == prompt[p])
            #expect(abs(Double(logprob) - row[prompt[p]]) < 1e-4, "position \(p): \(logprob) vs \(row[prompt[p]])")
            let best = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(alternatives)
            #expect(score.alternatives.map(\.id) == Array(best), "position \(p)")
            for alternative in score.alternatives {
                #expect(abs(Double(alternative.logprob) - row[alternative.id]) < 1e-4)
            }
        }
    }

    @Test(arguments: [64, 8])
    func scoresMatchTeacherForcedLogits(stepTokens: Int) throws {
        let prompt = EngineModelTests.prompts(1, lengths: 30...30, seed: 21)[0]
        let reference = try Self.teacherForced(prompt)
        var options = EngineOptions(maxNumSeqs: 4, maxNumBatchedTokens: stepTokens)
        options.prefixCacheIdleChunks = 64  // keep the prompt cached after the request
        let engine = try Engine(model: try EngineModelTests.model(), tokenizer: nil, eosTokenIds: [0], options: options)

        let first = try Self.run(engine, prompt, promptLogprobs: 3)
        #expect(first.carriers == 1)
        Self.check(first.scores, against: reference, prompt: prompt, alternatives: 3)

        // The prompt is cached now: a plain request reads it, a scoring one computes it again.
        let hits = engine.statistics.prefixHitTokens
        _ = try Self.run(engine, prompt, promptLogprobs: nil)
        #expect(engine.statistics.prefixHitTokens > hits, "the plain request should start from the cached prefix")
        let computed = engine.statistics.promptTokensComputed
        let again = try Self.run(engine, prompt, promptLogprobs: 0)
        #expect(engine.statistics.promptTokensComputed - computed == prompt.count)
        Self.check(again.scores, against: reference, prompt: prompt, alternatives: 0)
    }

    @Test func aOneTokenPromptHasOneEmptyScore() throws {
        let engine = try Engine(model: try EngineModelTests.model(), tokenizer: nil, eosTokenIds: [0])
        let result = try Self.run(engine, [17], promptLogprobs: 2)
        #expect(result.scores.map { $0.count } == 1)
        #expect(result.scores?.first! == nil)
    }

    /// A model that samples on the device (queued steps fed from picks on the device, as the
    /// GPU's) scores prompts too: a step holding a scoring chunk runs after the step before
    /// it with every position's logits on the host, and stays within the model's logits rows,
    /// while other requests decode beside it.
    @Test(arguments: [6, 40])
    func aDeviceSamplerScoresPromptsWithinItsLogitsRows(maxRows: Int) throws {
        let prompt = EngineModelTests.prompts(1, lengths: 30...30, seed: 21)[0]
        let reference = try Self.teacherForced(prompt)
        let model = try DeviceSamplingModel(inner: try EngineModelTests.model(), maxStepRows: maxRows)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [0], options: EngineOptions(maxNumSeqs: 4, maxNumBatchedTokens: 64))
        let greedy = SamplingParameters(temperature: 0, maxTokens: 6)
        let others = EngineModelTests.prompts(3, lengths: 5...9, seed: 4)
        let otherIDs = try others.map { try engine.add(GenerationRequest(prompt: $0, parameters: greedy)) }
        _ = engine.step()  // the others are decoding when the scoring request arrives
        let id = try engine.add(GenerationRequest(prompt: prompt, parameters: greedy, promptLogprobs: 2))
        var scores: [SampledToken?]?
        var tokens: [RequestID: [Int]] = [:]
        engine.runUntilIdle { outputs in
            for output in outputs {
                tokens[output.id, default: []] += output.tokens.map(\.id)
                if output.id == id, let found = output.promptLogprobs { scores = found }
            }
        }
        Self.check(scores, against: reference, prompt: prompt, alternatives: 2)
        #expect(model.mostLogitRows <= maxRows && model.mostLogitRows > 1, "\(model.mostLogitRows) logits rows in one step")
        // Everyone's tokens are what each request gives alone on the host.
        for (request, ids) in zip(others + [prompt], otherIDs + [id]) {
            let alone = try EngineModelTests.alone(request, maxTokens: 6, maxLength: engine.maxSequenceLength)
            #expect(alone.margin > 1e-3, "choose a case with clear top-1 margins (got \(alone.margin))")
            #expect(tokens[ids] == alone.tokens, "request \(ids)")
        }
    }
}

extension PromptLogprobsTests {
    @Test func aDeviceSamplerChecksLogitBiasIDs() throws {
        let engine = try Engine(model: try FakeModel(context: 64, budgetChunks: 16, samplesOnDevice: true), tokenizer: nil, eosTokenIds: [0])
        #expect(throws: EngineError.invalidRequest("logit_bias token id 50 is outside the vocabulary (0..<50)")) {
            try engine.add(GenerationRequest(prompt: [1, 2, 3], parameters: SamplingParameters(logitBias: [50: 1])))
        }
    }
}

/// A CPU model that keeps to the GPU model's contract: it picks tokens itself (greedy) in queued
/// steps whose one-token inputs may be fed from the step before's picks, gives logits to the
/// host only through `forward`, and holds at most `maxStepRows` logits rows a step.
final class DeviceSamplingModel: LanguageModel {
    let inner: CPUModel
    let maxStepRows: Int
    private(set) var mostLogitRows = 0
    private var queued = QueuedPicks()

    init(inner: CPUModel, maxStepRows: Int) throws {
        self.inner = inner
        self.maxStepRows = maxStepRows
    }

    var config: ModelConfig { inner.config }
    var kvStorage: KVStorage { inner.kvStorage }
    var maxSequenceTokens: Int { inner.maxSequenceTokens }
    var samplesOnDevice: Bool { true }
    var queuesSteps: Bool { true }

    func forward(_ inputs: [ForwardInput]) throws -> [[Float]] {
        guard queued.isEmpty else { throw RuntimeError.invalidRequest("a synchronous step while queued steps are in flight") }
        try count(inputs)
        return try inner.forward(inputs)
    }

    func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        try collect(queueStep(inputs, feeds: [], draws: draws, vocabularyLimit: vocabularyLimit))
    }

    func queueStep(_ inputs: [ForwardInput], feeds: [StepFeed], draws: [DeviceDraw], vocabularyLimit: Int) throws -> QueuedStep {
        guard !inputs.contains(where: \.allLogits) else { throw RuntimeError.invalidRequest("a queued step never returns every position's logits") }
        guard draws.allSatisfy({ $0.parameters.isGreedy }) else { throw RuntimeError.unsupported("this stand-in only picks greedily") }
        let inputs = try queued.feeding(inputs, feeds)
        try count(inputs)
        let vocab = config.vocabSize
        let picks = try inner.forward(inputs).map { row -> SampledToken in
            let last = row[(row.count - vocab)...]
            return SampledToken(id: last.indices.max { last[$0] < last[$1] || (last[$0] == last[$1] && $0 > $1) }! - (row.count - vocab))
        }
        return queued.append(picks)
    }

    func collect(_ step: QueuedStep) throws -> [SampledToken] { try queued.collect(step) }

    private func count(_ inputs: [ForwardInput]) throws {
        let rows = inputs.reduce(0) { $0 + ($1.allLogits ? $1.tokens.count : 1) }
        mostLogitRows = max(mostLogitRows, rows)
        guard rows <= maxStepRows else { throw RuntimeError.invalidRequest("\(rows) rows of logits exceed the \(maxStepRows) a step can return") }
    }
}
