import Foundation
import Models
import Tokenizers

/// Why a generation ended.
public enum FinishReason: String, Sendable, Codable {
    /// An end-of-sequence or stop token, or a stop string.
    case stop
    /// `maxTokens`, or the sequence reached the model's context.
    case length
    /// Cancelled by the client (or ended by a failed step) before it finished.
    case abort
}

/// The outcome of one generation: the text, the ids, why it ended, and its timing.
public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [Int]
    public var promptTokens: Int
    public var finishReason: FinishReason
    /// Per generated token when logprobs were asked for.
    public var logprobs: [SampledToken]
    /// From the start of the prompt's forward pass to the first token's text.
    public var timeToFirstToken: Double
    /// Seconds spent after the first token.
    public var decodeSeconds: Double

    /// Tokens per second after the first.
    public var decodeTokensPerSecond: Double {
        tokens.count > 1 && decodeSeconds > 0 ? Double(tokens.count - 1) / decodeSeconds : 0
    }
}

/// Generates one sequence at a time: prompt forward, then sample, detokenize, check stops, and
/// feed the token back, streaming text as it becomes safe to show (whole UTF-8 sequences, and
/// nothing that may still turn out to be the start of a stop string).
public final class Generator {
    public let model: any LanguageModel
    public let tokenizer: Tokenizer
    /// End-of-sequence ids: the tokenizer's, the config's and the generation config's.
    public let eosTokenIds: [Int]
    /// Ids at or above this are never sampled (embedding rows the tokenizer has no token for).
    public let vocabularyLimit: Int
    private var nextSequenceID = 1

    public init(model: any LanguageModel, tokenizer: Tokenizer, extraEOSTokenIds: [Int] = []) {
        self.model = model
        self.tokenizer = tokenizer
        var eos = tokenizer.eosTokenIds + model.config.eosTokenIds + extraEOSTokenIds
        eos = eos.filter { $0 >= 0 }
        var seen = Set<Int>()
        eosTokenIds = eos.filter { seen.insert($0).inserted }
        vocabularyLimit = min(model.config.vocabSize, tokenizer.vocabularySize)
    }

    /// Generates from `prompt` token ids; `onText` receives each piece of text as it is final.
    public func generate(prompt: [Int], parameters: SamplingParameters, onText: (String) -> Void = { _ in }) throws -> GenerationResult {
        try parameters.validate()
        guard !prompt.isEmpty else { throw RuntimeError.invalidRequest("the prompt is empty") }
        let context = min(model.maxSequenceTokens, model.config.maxPositionEmbeddings)
        guard prompt.count < context else {
            throw RuntimeError.invalidRequest("the prompt has \(prompt.count) tokens; the model's context is \(context), leaving no room to generate")
        }
        for t in prompt where t < 0 || t >= model.config.vocabSize {
            throw RuntimeError.invalidRequest("prompt token id \(t) is outside the vocabulary (0..<\(model.config.vocabSize))")
        }
        var sampler = try Sampler(parameters: parameters)
        sampler.acceptPrompt(prompt)
        let stopTokens = parameters.ignoreEOS ? Set(parameters.stopTokenIds) : parameters.stopTokens(eosTokenIds: eosTokenIds)
        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: true)
        var stops = StopMatcher(stopStrings: parameters.stopStrings)
        let limit = min(parameters.maxTokens ?? Int.max, context - prompt.count)

        let id = nextSequenceID
        nextSequenceID += 1
        try model.addSequence(id)
        defer { try? model.freeSequence(id) }

        let start = DispatchTime.now().uptimeNanoseconds
        var firstTokenAt: UInt64?
        // The model's device samples when it can (the logits stay there); else the host does.
        func sampleNext(_ input: ForwardInput) throws -> SampledToken {
            try model.reserve([input])
            if model.samplesOnDevice {
                return try model.forwardAndSample([input], draws: [sampler.deviceDraw()], vocabularyLimit: vocabularyLimit)[0]
            }
            return sampler.sample(logits: try model.forward([input])[0], vocabularyLimit: vocabularyLimit)
        }
        var sampled = try sampleNext(ForwardInput(id: id, tokens: prompt))
        var tokens: [Int] = []
        var logprobs: [SampledToken] = []
        var text = ""
        var finish = FinishReason.length
        func emit(_ piece: String) {
            guard !piece.isEmpty else { return }
            text += piece
            onText(piece)
        }
        generation: while tokens.count < limit {
            if firstTokenAt == nil { firstTokenAt = DispatchTime.now().uptimeNanoseconds }
            sampler.accept(sampled.id)
            tokens.append(sampled.id)
            if parameters.logprobs != nil { logprobs.append(sampled) }
            if stopTokens.contains(sampled.id) {
                finish = .stop
                break
            }
            let step = stops.append(detokenizer.add(sampled.id))
            emit(step.text)
            if step.stop != nil {
                finish = .stop
                break generation
            }
            if tokens.count >= limit { break }
            sampled = try sampleNext(ForwardInput(id: id, tokens: [sampled.id]))
        }
        // Text held back (an incomplete UTF-8 sequence, a possible stop-string prefix) is
        // final once generation ends any other way than by a stop string.
        if stops.stopped == nil {
            let tail = stops.append(detokenizer.finish())
            emit(tail.text)
            if tail.stop != nil { finish = .stop } else { emit(stops.finish()) }
        }
        let end = DispatchTime.now().uptimeNanoseconds
        let first = firstTokenAt ?? end
        return GenerationResult(text: text, tokens: tokens, promptTokens: prompt.count, finishReason: finish, logprobs: logprobs,
                                timeToFirstToken: Double(first - start) / 1e9, decodeSeconds: Double(end - first) / 1e9)
    }
}
