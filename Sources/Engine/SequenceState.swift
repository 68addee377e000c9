import Runtime
import Structured
import Tokenizers
import VTensor

/// Why a request stopped generating.
public enum StopCause: String, Sendable, Codable, CaseIterable {
    /// An end-of-sequence token.
    case eos
    /// One of the request's `stop_token_ids`.
    case stopToken
    /// One of the request's stop strings appeared in the text.
    case stopString
    /// `max_tokens`, or the sequence reached the longest length the engine allows.
    case length
    /// The request's grammar (a JSON schema, a pattern, a choice) is complete and allows nothing more.
    case grammarComplete

    public var finishReason: FinishReason { self == .length ? .length : .stop }
}

/// Per-request generation state, fed one chosen token at a time: the sampler (its penalties and
/// random stream), the stop conditions, the output limit and the incremental detokenizer.
/// It knows nothing of batches or memory, so the same object serves one sequence or many.
public struct SequenceState: Sendable {
    public let promptCount: Int
    public private(set) var output: [Int] = []
    public private(set) var sampler: Sampler
    public let parameters: SamplingParameters
    /// Generated tokens at most: `max_tokens` capped by the room left in the sequence.
    public let outputLimit: Int
    public private(set) var stopCause: StopCause?
    private let eosTokens: Set<Int>
    private let stopTokens: Set<Int>
    private var stops: StopMatcher
    private var detokenizer: IncrementalDetokenizer?
    /// Where the output stands in the request's grammar (constrained decoding); nil when unconstrained.
    public private(set) var grammar: GrammarMatcher?
    /// The ids that end the sequence where the grammar may end (the model's EOS, unless `ignoreEOS`).
    private let grammarEnds: [Int]
    /// Time spent finding the grammar's masks for this sequence's draws so far (nanoseconds).
    public private(set) var maskNanos: UInt64 = 0

    /// What accepting one token produced.
    public struct Delta: Sendable {
        public var text: String = ""
        public var stop: StopCause?
    }

    /// - Parameters:
    ///   - maxLength: the longest the sequence (prompt + output) may get.
    ///   - tokenizer: for text and stop strings; nil generates token ids only (stop strings then refused).
    ///   - grammar: constrains the output to a grammar's language (its vocabulary must be `tokenizer`'s).
    public init(prompt: [Int], parameters: SamplingParameters, eosTokenIds: [Int], maxLength: Int, tokenizer: Tokenizer?,
                grammar: CompiledGrammar? = nil) throws {
        try parameters.validate()
        guard tokenizer != nil || parameters.stopStrings.isEmpty else {
            throw EngineError.invalidRequest("stop strings need a tokenizer, and this engine has none")
        }
        if let grammar {
            guard let tokenizer else { throw EngineError.invalidRequest("structured output needs a tokenizer, and this engine has none") }
            guard grammar.vocabulary.size == tokenizer.vocabularySize else {
                throw EngineError.invalidRequest("the grammar was compiled for a vocabulary of \(grammar.vocabulary.size) tokens; this model's has \(tokenizer.vocabularySize)")
            }
        }
        promptCount = prompt.count
        self.parameters = parameters
        sampler = try Sampler(parameters: parameters, eosTokenIds: eosTokenIds)
        sampler.acceptPrompt(prompt)
        eosTokens = parameters.ignoreEOS ? [] : Set(eosTokenIds)
        stopTokens = Set(parameters.stopTokenIds)
        stops = StopMatcher(stopStrings: parameters.stopStrings)
        detokenizer = tokenizer.map { IncrementalDetokenizer(tokenizer: $0, skipSpecialTokens: parameters.skipSpecialTokens) }
        outputLimit = max(0, min(parameters.maxTokens ?? Int.max, maxLength - prompt.count))
        self.grammar = grammar.map { GrammarMatcher(grammar: $0) }
        grammarEnds = parameters.ignoreEOS ? [] : eosTokenIds
        if let matcher = self.grammar, matcher.allowedTokens().isEmpty && (grammarEnds.isEmpty || !matcher.canEnd) {
            throw EngineError.invalidRequest("the grammar allows no token of this model's vocabulary at the start of the output")
        }
    }

    /// The ids the grammar allows next (nil when unconstrained): its text tokens, and the EOS ids
    /// where it may end. Never empty: where the vocabulary cannot spell what the grammar needs,
    /// the EOS ids (or, with none, every id) are allowed, so the request ends rather than stalls.
    public func allowedTokens() -> TokenMask? {
        guard let grammar else { return nil }
        var mask = grammar.allowedTokens()
        if grammar.canEnd || mask.isEmpty {
            for id in grammarEnds { mask.insert(id) }
        }
        return mask
    }

    public var isFinished: Bool { stopCause != nil }

    /// The inputs of this step's draw on the device (one step of the random stream). Under a
    /// grammar, the draw carries its mask (the ids it refuses get minus infinity on the device).
    public mutating func deviceDraw() -> DeviceDraw {
        var draw = sampler.deviceDraw()
        if let mask = timedMask(), !mask.isEmpty { draw.allowed = mask.words }
        return draw
    }

    /// Picks the next token on the host from its logits row (under a grammar, among the ids it allows).
    public mutating func sample(logits: [Float], vocabularyLimit: Int) -> SampledToken {
        guard let mask = timedMask(), !mask.isEmpty else { return sampler.sample(logits: logits, vocabularyLimit: vocabularyLimit) }
        var masked = logits
        let limit = min(vocabularyLimit, masked.count)
        masked.withUnsafeMutableBufferPointer { row in
            for id in 0..<limit where !mask.allows(id) { row[id] = -.infinity }
        }
        return sampler.sample(logits: masked, vocabularyLimit: vocabularyLimit)
    }

    private mutating func timedMask() -> TokenMask? {
        guard grammar != nil else { return nil }
        let start = monotonicNanos()
        defer { maskNanos += monotonicNanos() - start }
        return allowedTokens()
    }

    /// Takes the chosen token: records it for the penalties, checks every stop condition, and
    /// returns the text that became final. After a stop, text held back for a possible stop
    /// string is released (unless a stop string itself ended it).
    public mutating func accept(_ token: Int) -> Delta {
        precondition(stopCause == nil, "a finished sequence takes no more tokens")
        var delta = Delta()
        sampler.accept(token)
        output.append(token)
        // The grammar follows the text: an end id leaves it where it is (it was allowed only where the grammar may end).
        var grammarDone = false
        if grammar != nil, !grammarEnds.contains(token) {
            _ = grammar!.accept(token)
            grammarDone = grammar!.isComplete
        }
        if eosTokens.contains(token) {
            delta.stop = .eos
        } else if stopTokens.contains(token) {
            delta.stop = .stopToken
        } else if detokenizer != nil {
            let piece = detokenizer!.add(token)
            if output.count <= parameters.minTokens {
                // vLLM's min_tokens: stop strings count only in text after the first min_tokens tokens.
                delta.text += piece
            } else {
                let step = stops.append(piece)
                delta.text += step.text
                if let stop = step.stop {
                    delta.stop = .stopString
                    if parameters.includeStopStringInOutput { delta.text += stop }
                }
            }
        }
        if delta.stop == nil && grammarDone { delta.stop = .grammarComplete }
        if delta.stop == nil && output.count >= outputLimit { delta.stop = .length }
        if let stop = delta.stop {
            stopCause = stop
            if stop != .stopString, detokenizer != nil {
                let tail = stops.append(detokenizer!.finish())
                delta.text += tail.text
                if let stop = tail.stop {
                    stopCause = .stopString
                    delta.stop = .stopString
                    if parameters.includeStopStringInOutput { delta.text += stop }
                } else {
                    delta.text += stops.finish()
                }
            }
        }
        return delta
    }
}
