#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How one request picks its tokens and when it stops, with the field names of the OpenAI and
/// vLLM request bodies (`temperature`, `top_k`, `top_p`, `min_p`, `repetition_penalty`,
/// `presence_penalty`, `frequency_penalty`, `seed`, `max_tokens`, `stop`, `stop_token_ids`,
/// `ignore_eos`, `logprobs`, `logit_bias`, `min_tokens`, `include_stop_str_in_output`,
/// `skip_special_tokens`).
///
/// Decoding fills absent fields from ``SamplingParameters/defaultsKey`` in the decoder's
/// `userInfo` when present (the model's `generation_config.json`, see ``GenerationConfig``),
/// else from ``init()``'s neutral values. Decoding does not validate: call ``validate()``.
public struct SamplingParameters: Codable, Sendable, Equatable {
    /// Divides the logits before drawing; 0 (anything below 1e-5) means greedy: the most likely
    /// id, ignoring top-k, top-p, min-p and the seed.
    public var temperature: Double = 1
    /// Keep the `topK` most likely ids; 0 or -1 turns it off.
    public var topK: Int = 0
    /// Keep the smallest set of most likely ids whose probability reaches `topP`, in (0, 1]; 1 is off.
    public var topP: Double = 1
    /// Keep ids whose probability is at least `minP` times the most likely one's, in [0, 1]; 0 is off.
    public var minP: Double = 0
    /// Hugging Face semantics: over every id in the prompt and the generated text, a positive
    /// logit is divided by the penalty and a negative one multiplied by it. 1 is off; must be > 0.
    public var repetitionPenalty: Double = 1
    /// OpenAI semantics: subtracted once from the logit of every id generated so far, in [-2, 2].
    public var presencePenalty: Double = 0
    /// OpenAI semantics: subtracted from an id's logit once per time it was generated, in [-2, 2].
    public var frequencyPenalty: Double = 0
    /// Makes the draws reproducible; nil seeds the sampler from the system's generator.
    public var seed: Int?
    /// The most tokens to generate; nil means up to the context length.
    public var maxTokens: Int?
    /// Ids that end generation (in addition to the model's end-of-sequence ids, unless `ignoreEOS`).
    public var stopTokenIds: [Int] = []
    /// Texts that end generation; the output stops before the stop string (see ``StopMatcher``).
    /// The JSON field `stop` may be one string or a list.
    public var stopStrings: [String] = []
    /// Keep generating past the model's end-of-sequence ids (benchmarks).
    public var ignoreEOS: Bool = false
    /// How many most likely alternatives to report with each token, 0...20; nil reports none.
    /// Decoded from an integer (completions, vLLM) or from the chat form `logprobs: true` with
    /// `top_logprobs: n`.
    public var logprobs: Int?
    /// Added to the logits of these ids before the penalties (OpenAI's and vLLM's `logit_bias`,
    /// vLLM's order), each in [-100, 100]: +100 all but forces an id, -100 all but bans it. The
    /// JSON keys are the ids written as strings.
    public var logitBias: [Int: Double] = [:]
    /// Until this many tokens are generated, the stop ids (end-of-sequence unless `ignoreEOS`, and
    /// `stopTokenIds`) cannot be drawn and stop strings are not looked for (vLLM's `min_tokens`).
    public var minTokens: Int = 0
    /// A stop string that ends the output stays in its text (vLLM's `include_stop_str_in_output`);
    /// by default the text ends just before it.
    public var includeStopStringInOutput = false
    /// The output text leaves out special tokens (`<|im_end|>` and the like), as vLLM's
    /// `skip_special_tokens` does by default; false writes them into the text.
    public var skipSpecialTokens = true

    /// Below this temperature sampling is greedy (vLLM uses the same cut-off).
    public static let greedyTemperature = 1e-5
    /// The most alternatives ``logprobs`` may ask for (OpenAI's limit).
    public static let maxLogprobs = 20
    /// The largest magnitude of a ``logitBias`` entry (OpenAI's limit).
    public static let maxLogitBias = 100.0
    /// A `SamplingParameters` value in a decoder's `userInfo` under this key supplies the
    /// values of absent fields.
    public static let defaultsKey = CodingUserInfoKey(rawValue: "vtensor.samplingDefaults")!

    public init() {}

    public init(temperature: Double = 1, topK: Int = 0, topP: Double = 1, minP: Double = 0,
                repetitionPenalty: Double = 1, presencePenalty: Double = 0, frequencyPenalty: Double = 0,
                seed: Int? = nil, maxTokens: Int? = nil, stopTokenIds: [Int] = [], stopStrings: [String] = [],
                ignoreEOS: Bool = false, logprobs: Int? = nil, logitBias: [Int: Double] = [:], minTokens: Int = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.seed = seed
        self.maxTokens = maxTokens
        self.stopTokenIds = stopTokenIds
        self.stopStrings = stopStrings
        self.ignoreEOS = ignoreEOS
        self.logprobs = logprobs
        self.logitBias = logitBias
        self.minTokens = minTokens
    }

    /// True when the sampler takes the most likely id instead of drawing.
    public var isGreedy: Bool { temperature < Self.greedyTemperature }
    /// Whether a draw depends on the tokens generated so far (a repetition, presence or frequency penalty).
    public var hasPenalties: Bool { repetitionPenalty != 1 || presencePenalty != 0 || frequencyPenalty != 0 }

    /// The ids that end generation: `stopTokenIds`, plus `eosTokenIds` unless `ignoreEOS`.
    public func stopTokens(eosTokenIds: [Int]) -> Set<Int> {
        Set(stopTokenIds).union(ignoreEOS ? [] : eosTokenIds)
    }

    /// Throws ``SamplingParameterError`` naming the first field out of range.
    public func validate() throws {
        func fail(_ field: String, _ problem: String) -> SamplingParameterError {
            SamplingParameterError(field: field, problem: problem)
        }
        guard temperature.isFinite, temperature >= 0 else {
            throw fail("temperature", "must be a finite number >= 0 (0 is greedy), got \(temperature)")
        }
        guard topK >= -1 else { throw fail("top_k", "must be >= 1, or 0 or -1 to turn it off, got \(topK)") }
        guard topP > 0, topP <= 1 else { throw fail("top_p", "must be in (0, 1], got \(topP)") }
        guard minP >= 0, minP <= 1 else { throw fail("min_p", "must be in [0, 1], got \(minP)") }
        guard repetitionPenalty.isFinite, repetitionPenalty > 0 else {
            throw fail("repetition_penalty", "must be a finite number > 0 (1 is off), got \(repetitionPenalty)")
        }
        guard presencePenalty >= -2, presencePenalty <= 2 else {
            throw fail("presence_penalty", "must be in [-2, 2], got \(presencePenalty)")
        }
        guard frequencyPenalty >= -2, frequencyPenalty <= 2 else {
            throw fail("frequency_penalty", "must be in [-2, 2], got \(frequencyPenalty)")
        }
        if let maxTokens, maxTokens < 1 { throw fail("max_tokens", "must be >= 1, got \(maxTokens)") }
        if let bad = stopTokenIds.first(where: { $0 < 0 }) {
            throw fail("stop_token_ids", "ids must be >= 0, got \(bad)")
        }
        if stopStrings.contains("") { throw fail("stop", "stop strings must not be empty") }
        if let logprobs, !(0...Self.maxLogprobs).contains(logprobs) {
            throw fail("logprobs", "must be in 0...\(Self.maxLogprobs), got \(logprobs)")
        }
        for (id, bias) in logitBias.sorted(by: { $0.key < $1.key }) {
            guard id >= 0 else { throw fail("logit_bias", "token ids must be >= 0, got \(id)") }
            guard bias.isFinite, abs(bias) <= Self.maxLogitBias else {
                throw fail("logit_bias", "biases must be in [-100, 100], got \(bias) for token \(id)")
            }
        }
        guard minTokens >= 0 else { throw fail("min_tokens", "must be >= 0, got \(minTokens)") }
        if let maxTokens, minTokens > maxTokens {
            throw fail("min_tokens", "must be at most max_tokens (\(maxTokens)), got \(minTokens)")
        }
    }

    enum CodingKeys: String, CodingKey {
        case temperature, seed, stop, logprobs
        case topK = "top_k"
        case topP = "top_p"
        case minP = "min_p"
        case repetitionPenalty = "repetition_penalty"
        case presencePenalty = "presence_penalty"
        case frequencyPenalty = "frequency_penalty"
        case maxTokens = "max_tokens"
        case stopTokenIds = "stop_token_ids"
        case ignoreEOS = "ignore_eos"
        case topLogprobs = "top_logprobs"
        case logitBias = "logit_bias"
        case minTokens = "min_tokens"
        case includeStopStringInOutput = "include_stop_str_in_output"
        case skipSpecialTokens = "skip_special_tokens"
    }

    public init(from decoder: Decoder) throws {
        let base = decoder.userInfo[Self.defaultsKey] as? SamplingParameters ?? SamplingParameters()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // JSON null means "not given" for every field, as in the OpenAI API.
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature) ?? base.temperature
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? base.topK
        topP = try c.decodeIfPresent(Double.self, forKey: .topP) ?? base.topP
        minP = try c.decodeIfPresent(Double.self, forKey: .minP) ?? base.minP
        repetitionPenalty = try c.decodeIfPresent(Double.self, forKey: .repetitionPenalty) ?? base.repetitionPenalty
        presencePenalty = try c.decodeIfPresent(Double.self, forKey: .presencePenalty) ?? base.presencePenalty
        frequencyPenalty = try c.decodeIfPresent(Double.self, forKey: .frequencyPenalty) ?? base.frequencyPenalty
        seed = try c.decodeIfPresent(Int.self, forKey: .seed) ?? base.seed
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens) ?? base.maxTokens
        stopTokenIds = try c.decodeIfPresent([Int].self, forKey: .stopTokenIds) ?? base.stopTokenIds
        if (try? c.decodeNil(forKey: .stop)) ?? true {
            stopStrings = base.stopStrings
        } else if let one = try? c.decode(String.self, forKey: .stop) {
            stopStrings = [one]
        } else {
            stopStrings = try c.decode([String].self, forKey: .stop)
        }
        ignoreEOS = try c.decodeIfPresent(Bool.self, forKey: .ignoreEOS) ?? base.ignoreEOS
        if (try? c.decodeNil(forKey: .logprobs)) ?? true {
            logprobs = base.logprobs
        } else if let wanted = try? c.decode(Bool.self, forKey: .logprobs) {
            // The chat completions form: a flag, with the count in top_logprobs.
            logprobs = wanted ? (try c.decodeIfPresent(Int.self, forKey: .topLogprobs) ?? 0) : nil
        } else {
            logprobs = try c.decode(Int.self, forKey: .logprobs)
        }
        if let bias = try c.decodeIfPresent([String: Double].self, forKey: .logitBias) {
            logitBias = try bias.reduce(into: [:]) { result, entry in
                guard let id = Int(entry.key) else {
                    throw DecodingError.dataCorruptedError(forKey: .logitBias, in: c,
                                                           debugDescription: "keys must be token ids (integers written as strings), got \"\(entry.key)\"")
                }
                result[id] = entry.value
            }
        } else {
            logitBias = base.logitBias
        }
        minTokens = try c.decodeIfPresent(Int.self, forKey: .minTokens) ?? base.minTokens
        includeStopStringInOutput = try c.decodeIfPresent(Bool.self, forKey: .includeStopStringInOutput) ?? base.includeStopStringInOutput
        skipSpecialTokens = try c.decodeIfPresent(Bool.self, forKey: .skipSpecialTokens) ?? base.skipSpecialTokens
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(temperature, forKey: .temperature)
        try c.encode(topK, forKey: .topK)
        try c.encode(topP, forKey: .topP)
        try c.encode(minP, forKey: .minP)
        try c.encode(repetitionPenalty, forKey: .repetitionPenalty)
        try c.encode(presencePenalty, forKey: .presencePenalty)
        try c.encode(frequencyPenalty, forKey: .frequencyPenalty)
        try c.encodeIfPresent(seed, forKey: .seed)
        try c.encodeIfPresent(maxTokens, forKey: .maxTokens)
        try c.encode(stopTokenIds, forKey: .stopTokenIds)
        try c.encode(stopStrings, forKey: .stop)
        try c.encode(ignoreEOS, forKey: .ignoreEOS)
        try c.encodeIfPresent(logprobs, forKey: .logprobs)
        if !logitBias.isEmpty {
            try c.encode(Dictionary(uniqueKeysWithValues: logitBias.map { (String($0.key), $0.value) }), forKey: .logitBias)
        }
        if minTokens != 0 { try c.encode(minTokens, forKey: .minTokens) }
        if includeStopStringInOutput { try c.encode(true, forKey: .includeStopStringInOutput) }
        if !skipSpecialTokens { try c.encode(false, forKey: .skipSpecialTokens) }
    }
}

/// A sampling parameter out of range, named by its request field (`top_p`, `temperature`, ...).
public struct SamplingParameterError: Error, CustomStringConvertible, Equatable, Sendable {
    public let field: String
    public let problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "invalid sampling parameter \(field): \(problem)" }
}
