#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Models

/// A model's `generation_config.json`: its special ids and the sampling defaults its authors
/// recommend. Every field is optional; a model without the file has none.
public struct GenerationConfig: Sendable, Equatable {
    public var bosTokenId: Int?
    /// `eos_token_id` may be one id or a list (Llama 3 instruct models); always a list here.
    public var eosTokenIds: [Int] = []
    public var padTokenId: Int?
    public var doSample: Bool?
    public var temperature: Double?
    public var topP: Double?
    public var topK: Int?
    public var minP: Double?
    public var repetitionPenalty: Double?
    /// Tokens to generate beyond the prompt.
    public var maxNewTokens: Int?
    /// Prompt plus generated tokens (the older, total form).
    public var maxLength: Int?

    public init() {}

    /// The model's defaults as sampling parameters, for fields a request leaves out (pass the
    /// result in a decoder's `userInfo` under ``SamplingParameters/defaultsKey``).
    ///
    /// `do_sample: false` means greedy decoding in transformers, whatever the temperature says,
    /// so it sets temperature 0. `max_new_tokens` becomes `maxTokens`; `max_length` counts the
    /// prompt too, so it is left to the engine (see ``maxTokens(promptLength:)``).
    public func samplingDefaults(base: SamplingParameters = SamplingParameters()) -> SamplingParameters {
        var p = base
        if let temperature { p.temperature = temperature }
        if let topP { p.topP = topP }
        if let topK { p.topK = topK }
        if let minP { p.minP = minP }
        if let repetitionPenalty { p.repetitionPenalty = repetitionPenalty }
        if doSample == false { p.temperature = 0 }
        if let maxNewTokens { p.maxTokens = maxNewTokens }
        return p
    }

    /// The generation limit for a prompt of `promptLength` tokens: `max_new_tokens` if given,
    /// else what `max_length` leaves after the prompt (at least 0), else nil.
    public func maxTokens(promptLength: Int) -> Int? {
        if let maxNewTokens { return maxNewTokens }
        if let maxLength { return Swift.max(0, maxLength - promptLength) }
        return nil
    }

    /// Parses the JSON text of a `generation_config.json`; `path` names the file in errors.
    /// - Throws: ``ModelFileError`` naming `path` and the key that is wrong.
    public static func decode(_ data: Data, path: String = "generation_config.json") throws -> GenerationConfig {
        let raw: RawGenerationConfig
        do {
            raw = try JSONDecoder().decode(RawGenerationConfig.self, from: data)
        } catch let error as DecodingError {
            throw ModelFileError(path: path, "generation config: \(describe(error))")
        }
        var config = GenerationConfig()
        config.bosTokenId = raw.bos_token_id
        config.eosTokenIds = raw.eos_token_id?.ids ?? []
        config.padTokenId = raw.pad_token_id
        config.doSample = raw.do_sample
        config.temperature = raw.temperature
        config.topP = raw.top_p
        config.topK = raw.top_k
        config.minP = raw.min_p
        config.repetitionPenalty = raw.repetition_penalty
        config.maxNewTokens = raw.max_new_tokens
        config.maxLength = raw.max_length
        try config.check(path: path)
        return config
    }

    /// Reads `path`; a missing file gives empty defaults, an unreadable or malformed one throws.
    public static func load(path: String) throws -> GenerationConfig {
        guard FileManager.default.fileExists(atPath: path) else { return GenerationConfig() }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ModelFileError(path: path, "cannot read the generation config: \(error)")
        }
        return try decode(data, path: path)
    }

    /// Reads `generation_config.json` from a model directory (empty defaults when absent).
    public static func load(directory: String) throws -> GenerationConfig {
        try load(path: directory.hasSuffix("/") ? directory + "generation_config.json"
                                                 : directory + "/generation_config.json")
    }

    /// Rejects values no request could use, so a bad file fails at load, not at the first request.
    private func check(path: String) throws {
        func bad(_ key: String, _ problem: String) -> ModelFileError {
            ModelFileError(path: path, "generation config: \(key) \(problem)")
        }
        if let t = temperature, !(t.isFinite && t >= 0) { throw bad("temperature", "must be >= 0, got \(t)") }
        if let p = topP, !(p > 0 && p <= 1) { throw bad("top_p", "must be in (0, 1], got \(p)") }
        if let k = topK, k < -1 { throw bad("top_k", "must be >= 0 (0 or -1: off), got \(k)") }
        if let m = minP, !(m >= 0 && m <= 1) { throw bad("min_p", "must be in [0, 1], got \(m)") }
        if let r = repetitionPenalty, !(r.isFinite && r > 0) { throw bad("repetition_penalty", "must be > 0, got \(r)") }
        if let n = maxNewTokens, n < 0 { throw bad("max_new_tokens", "must be >= 0, got \(n)") }
        if let n = maxLength, n < 0 { throw bad("max_length", "must be >= 0, got \(n)") }
        for id in eosTokenIds where id < 0 { throw bad("eos_token_id", "must be >= 0, got \(id)") }
        if let id = bosTokenId, id < 0 { throw bad("bos_token_id", "must be >= 0, got \(id)") }
    }

    private static func describe(_ error: DecodingError) -> String {
        func key(_ path: [CodingKey]) -> String {
            path.isEmpty ? "the top level" : path.map(\.stringValue).joined(separator: ".")
        }
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            return "not valid JSON (\(context.debugDescription))"
        case .dataCorrupted(let context):
            return "bad value for \(key(context.codingPath)): \(context.debugDescription)"
        case .typeMismatch(let type, let context):
            return context.codingPath.isEmpty ? "the top level is not a JSON object"
                                              : "\(key(context.codingPath)) has the wrong type (expected \(type))"
        case .valueNotFound(let type, let context):
            return "\(key(context.codingPath)) is missing (expected \(type))"
        case .keyNotFound(let codingKey, _):
            return "\(codingKey.stringValue) is missing"
        @unknown default:
            return "\(error)"
        }
    }
}

/// The file's fields under their JSON names, decoded as given.
private struct RawGenerationConfig: Decodable {
    var bos_token_id: Int?
    var eos_token_id: OneOrMany?
    var pad_token_id: Int?
    var do_sample: Bool?
    var temperature: Double?
    var top_p: Double?
    var top_k: Int?
    var min_p: Double?
    var repetition_penalty: Double?
    var max_new_tokens: Int?
    var max_length: Int?

    /// An id or a list of ids.
    struct OneOrMany: Decodable {
        var ids: [Int]
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let one = try? c.decode(Int.self) {
                ids = [one]
            } else {
                ids = try c.decode([Int].self)
            }
        }
    }
}

/// Sampling defaults that a model's authors recommend on its model card but that its file does
/// not carry (a GGUF has no generation_config.json; some directories leave the fields out).
/// Greedy decoding with no penalty makes small chat models loop; their authors' settings do not.
public enum KnownGenerationDefaults {
    public struct Entry: Sendable, Equatable {
        /// Who recommends it, for the line that reports the defaults in use.
        public var source: String
        public var config: GenerationConfig
    }

    /// The entry for a model called `name` (a GGUF's `general.name`, or a file or directory
    /// name), if it is one we know.
    public static func entry(forModelNamed name: String) -> Entry? {
        let lower = name.lowercased()
        if lower.contains("smollm2") && lower.contains("instruct") {
            // SmolLM2's model cards: temperature 0.2, top-p 0.9. Ours on top: a repetition penalty
            // of 1.1, without which the 135M model in Q4_1 still loops on short chat prompts
            // ("a fleeting sight, a fleeting sight, ..." for a haiku about the sea).
            var config = GenerationConfig()
            config.temperature = 0.2
            config.topP = 0.9
            config.repetitionPenalty = 1.1
            return Entry(source: "SmolLM2-Instruct: its model card, plus a repetition penalty", config: config)
        }
        return nil
    }
}
