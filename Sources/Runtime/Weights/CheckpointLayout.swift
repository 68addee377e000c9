import Foundation
import Models
import Kernels

/// The GPU's weight layout (`GPUWeights`), tensor by tensor, and where each one comes from in a
/// Hugging Face checkpoint. The stacked matrices are their checkpoint tensors one after another
/// (Q, K, V; gate, up: `LayerWeights`' order), so a bf16 checkpoint goes to the device byte for
/// byte, straight from the mapped file: no Float copy of the model on the host (32 GB for an 8B
/// model) and no conversion there and back.
public enum CheckpointLayout {
    /// One tensor of the layout: its name ("embed", "3.qkv", ...), element count and dtype
    /// (bf16 matrices, fp32 vectors), in the order they are laid out.
    public struct Entry: Equatable, Sendable {
        public let name: String
        public let count: Int
        public let bf16: Bool
    }

    /// Every tensor a model of `config` holds on the GPU, RoPE's inverse frequencies last.
    public static func entries(config c: ModelConfig) -> [Entry] {
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let qRows = c.numAttentionHeads * d, qkvRows = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * d
        var out: [Entry] = []
        func add(_ name: String, _ count: Int, bf16: Bool) { out.append(Entry(name: name, count: count, bf16: bf16)) }
        add("embed", c.vocabSize * h, bf16: true)
        for i in 0..<c.numHiddenLayers {
            add("\(i).inputNorm", h, bf16: false)
            add("\(i).qkv", qkvRows * h, bf16: true)
            if c.attentionBias { add("\(i).qkvBias", qkvRows, bf16: false) }
            add("\(i).output", h * qRows, bf16: true)
            if c.attentionOutputBias { add("\(i).outputBias", h, bf16: false) }
            add("\(i).postNorm", h, bf16: false)
            add("\(i).gateUp", 2 * f * h, bf16: true)
            if c.mlpBias { add("\(i).gateUpBias", 2 * f, bf16: false); add("\(i).downBias", h, bf16: false) }
            add("\(i).down", h * f, bf16: true)
        }
        add("finalNorm", h, bf16: false)
        if !c.tieWordEmbeddings { add("lmHead", c.vocabSize * h, bf16: true) }
        add("invFreq", d / 2, bf16: false)
        return out
    }

    /// The checkpoint tensors, in order, that make up layout tensor `name`, with the shapes the
    /// config implies. Empty for "invFreq" (computed, not stored).
    public static func parts(of name: String, config c: ModelConfig) -> [(name: String, shape: [Int])] {
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let qRows = c.numAttentionHeads * d, kvRows = c.numKeyValueHeads * d
        switch name {
        case "embed": return [("model.embed_tokens.weight", [c.vocabSize, h])]
        case "finalNorm": return [("model.norm.weight", [h])]
        case "lmHead": return [("lm_head.weight", [c.vocabSize, h])]
        case "invFreq": return []
        default: break
        }
        let dot = name.firstIndex(of: ".")!
        let p = "model.layers.\(name[..<dot])."
        switch name[name.index(after: dot)...] {
        case "inputNorm": return [(p + "input_layernorm.weight", [h])]
        case "qkv": return [(p + "self_attn.q_proj.weight", [qRows, h]), (p + "self_attn.k_proj.weight", [kvRows, h]),
                            (p + "self_attn.v_proj.weight", [kvRows, h])]
        case "qkvBias": return [(p + "self_attn.q_proj.bias", [qRows]), (p + "self_attn.k_proj.bias", [kvRows]),
                                (p + "self_attn.v_proj.bias", [kvRows])]
        case "output": return [(p + "self_attn.o_proj.weight", [h, qRows])]
        case "outputBias": return [(p + "self_attn.o_proj.bias", [h])]
        case "postNorm": return [(p + "post_attention_layernorm.weight", [h])]
        case "gateUp": return [(p + "mlp.gate_proj.weight", [f, h]), (p + "mlp.up_proj.weight", [f, h])]
        case "gateUpBias": return [(p + "mlp.gate_proj.bias", [f]), (p + "mlp.up_proj.bias", [f])]
        case "down": return [(p + "mlp.down_proj.weight", [h, f])]
        case "downBias": return [(p + "mlp.down_proj.bias", [h])]
        default: preconditionFailure("no checkpoint tensors for layout tensor \(name)")
        }
    }

    /// Hands `body` the bytes of layout tensor `entry`, part by part, with each part's byte
    /// offset in it: bf16 parts of a bf16 matrix as the file holds them, anything else
    /// converted (to bf16 for matrices, fp32 for vectors) the way `ModelWeights` and
    /// `GPUWeights.upload` round it. A missing or misshapen tensor is a ModelFileError naming it.
    public static func forEachPart(of entry: Entry, config: ModelConfig, checkpoint: SafeTensorsCheckpoint,
                                   _ body: (_ offset: Int, _ bytes: UnsafeRawBufferPointer) throws -> Void) throws {
        let source = SafeTensorsWeightSource(checkpoint: checkpoint)
        var offset = 0
        for part in parts(of: entry.name, config: config) {
            guard checkpoint.contains(part.name) else { throw ModelFileError(path: source.label, "missing tensor \(part.name)") }
            let view = try checkpoint.tensor(named: part.name)
            let count = part.shape.reduce(1, *)
            if entry.bf16 && view.dtype == .bf16 {
                guard view.shape == part.shape else {
                    throw ModelFileError(path: source.label, "tensor \(part.name) has shape \(view.shape), the config implies \(part.shape)")
                }
                try body(offset, view.bytes)
            } else {
                let values = try source.floats(part.name, shape: part.shape)
                if entry.bf16 {
                    try values.map(HalfFloat.floatToBF16).withUnsafeBytes { try body(offset, $0) }
                } else {
                    try values.withUnsafeBytes { try body(offset, $0) }
                }
            }
            offset += count * (entry.bf16 ? 2 : 4)
        }
        precondition(offset == entry.count * (entry.bf16 ? 2 : 4), "layout tensor \(entry.name): parts hold \(offset) bytes, the layout \(entry.count) elements")
    }
}
