#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A Hugging Face `config.json` for the Llama family (Llama 2/3/3.1, Mistral, Qwen2/2.5, Yi, SmolLM2),
/// decoded with the transformers defaults filled in and checked so the engine never sees an
/// unsupported or inconsistent shape.
public struct ModelConfig: Decodable, Sendable, Equatable {
    public static let supportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]
    public static let supportedModelTypes = ["llama", "mistral", "qwen2"]

    public var architectures: [String]
    public var modelType: String
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// Defaults to `numAttentionHeads` (plain multi-head attention).
    public var numKeyValueHeads: Int
    /// Defaults to `hiddenSize / numAttentionHeads`.
    public var headDim: Int
    public var rmsNormEps: Double
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    /// `dtype` (transformers 5) or `torch_dtype` (older), e.g. "bfloat16".
    public var dtype: String?
    public var bosTokenId: Int?
    /// `eos_token_id` may be one id or a list (Llama 3.1 instruct); always a list here.
    public var eosTokenIds: [Int]
    public var slidingWindow: Int?
    public var useSlidingWindow: Bool?
    /// Bias on the q/k/v projections: always on for Qwen2, else `attention_bias`.
    public var attentionBias: Bool
    /// Bias on the output projection: Llama's `attention_bias` covers o_proj too; Qwen2's does not.
    public var attentionOutputBias: Bool
    public var mlpBias: Bool
    public var rope: RoPEConfig

    /// The window the attention must apply, or nil for full attention. Qwen2 gates
    /// `sliding_window` with `use_sliding_window` (default false); Mistral uses it whenever set.
    public var effectiveSlidingWindow: Int? {
        if useSlidingWindow == false { return nil }
        guard let w = slidingWindow, w > 0 else { return nil }
        return w
    }

    enum CodingKeys: String, CodingKey {
        case architectures, dtype
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case rmsNormEps = "rms_norm_eps"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case torchDtype = "torch_dtype"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
        case slidingWindow = "sliding_window"
        case useSlidingWindow = "use_sliding_window"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case ropeParameters = "rope_parameters"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures) ?? []
        modelType = try c.decode(String.self, forKey: .modelType)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        let explicitHeadDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        headDim = explicitHeadDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        let newDtype = try c.decodeIfPresent(String.self, forKey: .dtype)
        dtype = try newDtype ?? c.decodeIfPresent(String.self, forKey: .torchDtype)
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        if (try? c.decodeNil(forKey: .eosTokenId)) ?? true {
            eosTokenIds = []
        } else if let one = try? c.decode(Int.self, forKey: .eosTokenId) {
            eosTokenIds = [one]
        } else {
            eosTokenIds = try c.decode([Int].self, forKey: .eosTokenId)
        }
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        let isQwen2 = modelType == "qwen2"
        // transformers' Qwen2Config defaults use_sliding_window to false; other models have no such gate.
        useSlidingWindow = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? (isQwen2 ? false : nil)
        let bias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        attentionBias = isQwen2 || bias
        attentionOutputBias = isQwen2 ? false : bias
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false

        let topTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        if let params = try c.decodeIfPresent(RawRoPE.self, forKey: .ropeParameters) {
            rope = try params.resolve(theta: params.ropeTheta ?? topTheta ?? 10000, key: "rope_parameters")
        } else if let scaling = try c.decodeIfPresent(RawRoPE.self, forKey: .ropeScaling) {
            rope = try scaling.resolve(theta: topTheta ?? 10000, key: "rope_scaling")
        } else {
            rope = RoPEConfig(theta: topTheta ?? 10000, scaling: .none)
        }
        try validate(headDimGiven: explicitHeadDim != nil)
    }

    /// Decodes config JSON, reporting every problem as a ModelFileError against `path`.
    public static func decode(_ data: Data, path: String = "config.json") throws -> ModelConfig {
        do {
            return try JSONDecoder().decode(ModelConfig.self, from: data)
        } catch let error as DecodingError {
            throw ModelFileError(path: path, "config: \(describeDecodingError(error))")
        } catch let error as ConfigProblem {
            throw ModelFileError(path: path, error.message)
        }
    }

    /// Reads and decodes a `config.json` file.
    public static func load(path: String) throws -> ModelConfig {
        try decode(readModelFile(path), path: path)
    }

    private func validate(headDimGiven: Bool) throws {
        for arch in architectures where !Self.supportedArchitectures.contains(arch) {
            throw ConfigProblem("unsupported architecture \(arch) (supported: \(Self.supportedArchitectures.joined(separator: ", ")))")
        }
        guard Self.supportedModelTypes.contains(modelType) else {
            throw ConfigProblem("unsupported model_type \(modelType) (supported: \(Self.supportedModelTypes.joined(separator: ", ")))")
        }
        let sizes: [(String, Int)] = [
            ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
            ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
            ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim), ("vocab_size", vocabSize),
            ("max_position_embeddings", maxPositionEmbeddings),
        ]
        for (key, value) in sizes where value <= 0 {
            throw ConfigProblem("\(key) must be positive, got \(value)")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw ConfigProblem("num_attention_heads \(numAttentionHeads) is not divisible by num_key_value_heads \(numKeyValueHeads)")
        }
        if !headDimGiven && hiddenSize % numAttentionHeads != 0 {
            throw ConfigProblem("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads) and head_dim is absent")
        }
        guard rmsNormEps > 0 else { throw ConfigProblem("rms_norm_eps must be positive, got \(rmsNormEps)") }
        if let w = slidingWindow, w < 0 { throw ConfigProblem("sliding_window must not be negative, got \(w)") }
        guard rope.theta > 0 else { throw ConfigProblem("rope_theta must be positive, got \(rope.theta)") }
    }
}

/// A validation failure found while decoding; `ModelConfig.decode` attaches the file path.
struct ConfigProblem: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}
