import Runtime
import Tokenizers

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

    /// What accepting one token produced.
    public struct Delta: Sendable {
        public var text: String = ""
        public var stop: StopCause?
    }

    /// - Parameters:
    ///   - maxLength: the longest the sequence (prompt + output) may get.
    ///   - tokenizer: for text and stop strings; nil generates token ids only (stop strings then refused).
    public init(prompt: [Int], parameters: SamplingParameters, eosTokenIds: [Int], maxLength: Int, tokenizer: Tokenizer?) throws {
        try parameters.validate()
        guard tokenizer != nil || parameters.stopStrings.isEmpty else {
            throw EngineError.invalidRequest("stop strings need a tokenizer, and this engine has none")
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
    }

    public var isFinished: Bool { stopCause != nil }

    /// The inputs of this step's draw on the device (one step of the random stream).
    public mutating func deviceDraw() -> DeviceDraw { sampler.deviceDraw() }

    /// Picks the next token on the host from its logits row.
    public mutating func sample(logits: [Float], vocabularyLimit: Int) -> SampledToken {
        sampler.sample(logits: logits, vocabularyLimit: vocabularyLimit)
    }

    /// Takes the chosen token: records it for the penalties, checks every stop condition, and
    /// returns the text that became final. After a stop, text held back for a possible stop
    /// string is released (unless a stop string itself ended it).
    public mutating func accept(_ token: Int) -> Delta {
        precondition(stopCause == nil, "a finished sequence takes no more tokens")
        var delta = Delta()
        sampler.accept(token)
        output.append(token)
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
