import Foundation
import Models
import VTensor
import Support

/// One decoder layer's weights in Float, row-major [out, in] as in Hugging Face checkpoints.
/// Q, K and V are stacked into one matrix (rows: the query heads, then the KV heads of K, then
/// of V; each head's rows contiguous), and so are the MLP's gate and up projections, so a layer
/// runs two input matmuls instead of five. Rows stay grouped per head, so a later split of heads
/// across GPUs is a row range.
public struct LayerWeights: Sendable {
    public var inputNorm: [Float]
    public var qkv: [Float]
    public var qkvBias: [Float]?
    public var output: [Float]
    public var outputBias: [Float]?
    public var postAttentionNorm: [Float]
    public var gateUp: [Float]
    public var gateUpBias: [Float]?
    public var down: [Float]
    public var downBias: [Float]?
}

/// All weights of a Llama-family model, in Float.
public final class ModelWeights: @unchecked Sendable {
    public let config: ModelConfig
    /// [vocab, hidden].
    public let embedding: [Float]
    public let layers: [LayerWeights]
    public let finalNorm: [Float]
    /// [vocab, hidden]; nil when tied to the embedding.
    public let lmHead: [Float]?
    /// Per-frequency divisors from a GGUF's `rope_freqs.weight` (llama.cpp's form of Llama 3.1 scaling).
    public let ropeFrequencyFactors: [Float]?

    public init(config: ModelConfig, embedding: [Float], layers: [LayerWeights], finalNorm: [Float], lmHead: [Float]?,
                ropeFrequencyFactors: [Float]? = nil) {
        self.config = config
        self.embedding = embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.lmHead = lmHead
        self.ropeFrequencyFactors = ropeFrequencyFactors
    }

    /// The same model with every tensor passed through `transform` (e.g. rounding to bf16).
    public func mapped(_ transform: ([Float]) -> [Float]) -> ModelWeights {
        func m(_ v: [Float]?) -> [Float]? { v.map(transform) }
        let layers = self.layers.map { l in
            LayerWeights(inputNorm: transform(l.inputNorm), qkv: transform(l.qkv), qkvBias: m(l.qkvBias), output: transform(l.output),
                         outputBias: m(l.outputBias), postAttentionNorm: transform(l.postAttentionNorm), gateUp: transform(l.gateUp),
                         gateUpBias: m(l.gateUpBias), down: transform(l.down), downBias: m(l.downBias))
        }
        return ModelWeights(config: config, embedding: transform(embedding), layers: layers, finalNorm: transform(finalNorm),
                            lmHead: m(lmHead), ropeFrequencyFactors: ropeFrequencyFactors)
    }

    /// Parameters a model of `config` holds (what `load` or `dummy` will allocate, in Float).
    public static func parameterCount(config c: ModelConfig) -> Int {
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let q = c.numAttentionHeads * d, kv = c.numKeyValueHeads * d
        let biases = (c.attentionBias ? q + 2 * kv : 0) + (c.attentionOutputBias ? h : 0) + (c.mlpBias ? 2 * f + h : 0)
        let perLayer = 2 * h + (q + 2 * kv) * h + q * h + 3 * f * h + biases
        return c.vocabSize * h * (c.tieWordEmbeddings ? 1 : 2) + h + c.numHiddenLayers * perLayer
    }

    /// Refuses, with the numbers, to build host weights that the memory this process may use
    /// cannot hold (they would be killed by the out-of-memory killer, with no message).
    /// - Parameters:
    ///   - blocks: weights kept in GGUF block format instead of Float (their count, their bytes).
    public static func checkFitsInHostMemory(config: ModelConfig, label: String, blocks: (parameters: Int, bytes: Int) = (0, 0),
                                             headroom: Double = 0.9) throws {
        let bytes = (parameterCount(config: config) - blocks.parameters) * MemoryLayout<Float>.size + blocks.bytes
        guard let available = HostMemory.available() else { return }
        guard Double(bytes) <= Double(available.bytes) * headroom else {
            func gb(_ n: Int) -> String { String(format: "%.1f GB", Double(n) / 1e9) }
            throw RuntimeError.unsupported("\(label) needs \(gb(bytes)) of host memory for its weights; this process may use \(gb(available.bytes)) (\(available.boundBy))")
        }
    }

    public var parameterCount: Int {
        var n = embedding.count + finalNorm.count + (lmHead?.count ?? 0)
        for l in layers {
            n += l.inputNorm.count + l.qkv.count + (l.qkvBias?.count ?? 0) + l.output.count + (l.outputBias?.count ?? 0)
            n += l.postAttentionNorm.count + l.gateUp.count + (l.gateUpBias?.count ?? 0) + l.down.count + (l.downBias?.count ?? 0)
        }
        return n
    }

    /// Loads every tensor the config requires from `source`, checking shapes; a missing or
    /// misshapen tensor is a ModelFileError naming it. Tensors named in `leaving` are checked
    /// present but left empty (their GGUF blocks stand in for them: `QuantizedWeights`).
    public static func load(config c: ModelConfig, from source: any WeightSource, ropeFrequencyFactors: [Float]? = nil,
                            leaving: Set<String> = []) throws -> ModelWeights {
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let qRows = c.numAttentionHeads * d, kvRows = c.numKeyValueHeads * d
        func need(_ name: String, _ shape: [Int]) throws -> [Float] {
            guard source.contains(name) else { throw ModelFileError(path: source.label, "missing tensor \(name)") }
            if leaving.contains(name) { return [] }
            return try source.floats(name, shape: shape)
        }
        func maybe(_ name: String, _ shape: [Int], when present: Bool) throws -> [Float]? {
            present ? try need(name, shape) : nil
        }
        let embedding = try need("model.embed_tokens.weight", [c.vocabSize, h])
        var layers: [LayerWeights] = []
        for i in 0..<c.numHiddenLayers {
            let p = "model.layers.\(i)."
            let q = try need(p + "self_attn.q_proj.weight", [qRows, h])
            let k = try need(p + "self_attn.k_proj.weight", [kvRows, h])
            let v = try need(p + "self_attn.v_proj.weight", [kvRows, h])
            var qkvBias: [Float]? = nil
            if c.attentionBias {
                qkvBias = try need(p + "self_attn.q_proj.bias", [qRows]) + need(p + "self_attn.k_proj.bias", [kvRows])
                    + need(p + "self_attn.v_proj.bias", [kvRows])
            }
            let gate = try need(p + "mlp.gate_proj.weight", [f, h])
            let up = try need(p + "mlp.up_proj.weight", [f, h])
            var gateUpBias: [Float]? = nil
            if c.mlpBias { gateUpBias = try need(p + "mlp.gate_proj.bias", [f]) + need(p + "mlp.up_proj.bias", [f]) }
            layers.append(LayerWeights(
                inputNorm: try need(p + "input_layernorm.weight", [h]),
                qkv: q + k + v, qkvBias: qkvBias,
                output: try need(p + "self_attn.o_proj.weight", [h, qRows]),
                outputBias: try maybe(p + "self_attn.o_proj.bias", [h], when: c.attentionOutputBias),
                postAttentionNorm: try need(p + "post_attention_layernorm.weight", [h]),
                gateUp: gate + up, gateUpBias: gateUpBias,
                down: try need(p + "mlp.down_proj.weight", [h, f]),
                downBias: try maybe(p + "mlp.down_proj.bias", [h], when: c.mlpBias)))
        }
        let finalNorm = try need("model.norm.weight", [h])
        var lmHead: [Float]? = nil
        if !c.tieWordEmbeddings || source.contains("lm_head.weight") {
            lmHead = try need("lm_head.weight", [c.vocabSize, h])
        }
        return ModelWeights(config: c, embedding: embedding, layers: layers, finalNorm: finalNorm, lmHead: lmHead,
                            ropeFrequencyFactors: ropeFrequencyFactors)
    }

    /// Random weights for any config (`--load-format dummy`): normal(0, std) matrices and
    /// biases, norms near 1, from a fixed seed.
    public static func dummy(config c: ModelConfig, seed: UInt64 = 0, std: Float = 0.02) -> ModelWeights {
        var rng = SplitMix64(seed: seed)
        func random(_ count: Int, scale: Float = std) -> [Float] {
            (0..<count).map { _ in rng.nextNormal() * scale }
        }
        func norm(_ count: Int) -> [Float] { (0..<count).map { _ in 1 + rng.nextNormal() * 0.05 } }
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let qkvRows = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * d
        let layers = (0..<c.numHiddenLayers).map { _ in
            LayerWeights(inputNorm: norm(h), qkv: random(qkvRows * h), qkvBias: c.attentionBias ? random(qkvRows) : nil,
                         output: random(h * c.numAttentionHeads * d), outputBias: c.attentionOutputBias ? random(h) : nil,
                         postAttentionNorm: norm(h), gateUp: random(2 * f * h), gateUpBias: c.mlpBias ? random(2 * f) : nil,
                         down: random(h * f), downBias: c.mlpBias ? random(h) : nil)
        }
        return ModelWeights(config: c, embedding: random(c.vocabSize * h), layers: layers, finalNorm: norm(h),
                            lmHead: c.tieWordEmbeddings ? nil : random(c.vocabSize * h))
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1).
    public mutating func nextUniform() -> Float { Float(next() >> 40) * 0x1p-24 }
    /// Standard normal (Box-Muller), for dummy weights and test data.
    public mutating func nextNormal() -> Float {
        let u = max(nextUniform(), 1e-7), v = nextUniform()
        return (-2 * logf(u)).squareRoot() * cosf(2 * .pi * v)
    }
}
