import Foundation
import Models

/// Where a model's tensors come from, under Hugging Face names (`model.layers.0.self_attn.q_proj.weight`),
/// each returned as Floats in row-major order of its HF shape.
public protocol WeightSource: AnyObject {
    /// A label for messages: the file or directory.
    var label: String { get }
    func contains(_ name: String) -> Bool
    /// The tensor converted to Float, after checking its shape is `shape`.
    func floats(_ name: String, shape: [Int]) throws -> [Float]
}

/// A Hugging Face directory (config.json + safetensors, single or sharded).
public final class SafeTensorsWeightSource: WeightSource {
    public let checkpoint: SafeTensorsCheckpoint
    public var label: String { checkpoint.directory }

    public init(directory: String) throws {
        checkpoint = try SafeTensorsCheckpoint(directory: directory)
    }

    public init(checkpoint: SafeTensorsCheckpoint) {
        self.checkpoint = checkpoint
    }

    public func contains(_ name: String) -> Bool { checkpoint.contains(name) }

    public func floats(_ name: String, shape: [Int]) throws -> [Float] {
        let view = try checkpoint.tensor(named: name)
        guard view.shape == shape else {
            throw ModelFileError(path: label, "tensor \(name) has shape \(view.shape), the config implies \(shape)")
        }
        var out = [Float](repeating: 0, count: view.elementCount)
        out.withUnsafeMutableBufferPointer { dst in
            let src = view.bytes
            switch view.dtype {
            case .f32:
                for i in 0..<dst.count { dst[i] = Float(bitPattern: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
            case .bf16:
                for i in 0..<dst.count { dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
            case .f16:
                for i in 0..<dst.count { dst[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .f64:
                for i in 0..<dst.count { dst[i] = Float(Double(bitPattern: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
            default:
                break
            }
        }
        guard [.f32, .bf16, .f16, .f64].contains(view.dtype) else {
            throw ModelFileError(path: label, "tensor \(name) has dtype \(view.dtype.rawValue); weights must be F32, F16, BF16 or F64")
        }
        return out
    }
}

/// A GGUF file (llama.cpp). Names are translated to GGUF's (`blk.0.attn_q.weight`), quantized
/// tensors are dequantized, and llama.cpp's Q/K row permutation is undone for the `llama`
/// architecture (its converter permutes only there).
public final class GGUFWeightSource: WeightSource {
    public let file: GGUFFile
    let config: ModelConfig
    let permutedQK: Bool
    public var label: String { file.path }

    public init(file: GGUFFile, config: ModelConfig) {
        self.file = file
        self.config = config
        permutedQK = (file.string("general.architecture") ?? "llama") == "llama"
    }

    /// The GGUF name of an HF tensor name, or nil when it has none.
    static func ggufName(_ name: String) -> String? {
        let fixed = ["model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                     "lm_head.weight": "output.weight"]
        if let n = fixed[name] { return n }
        let parts = name.split(separator: ".")
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        let rest = parts[3...].joined(separator: ".")
        let map = ["input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                   "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
                   "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
                   "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
                   "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.bias": "attn_output.bias",
                   "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                   "mlp.down_proj.weight": "ffn_down.weight"]
        guard let m = map[rest] else { return nil }
        return "blk.\(layer).\(m)"
    }

    public func contains(_ name: String) -> Bool {
        guard let g = Self.ggufName(name) else { return false }
        return (try? file.tensor(named: g)) != nil
    }

    public func floats(_ name: String, shape: [Int]) throws -> [Float] {
        guard let g = Self.ggufName(name) else { throw ModelFileError(path: label, "no GGUF name for tensor \(name)") }
        let info = try file.tensor(named: g)
        guard info.shape == shape else {
            throw ModelFileError(path: label, "tensor \(g) has shape \(info.shape), the metadata implies \(shape)")
        }
        guard info.type.canDequantize else {
            throw ModelFileError(path: label, "tensor \(g) has type \(info.type), which vtensor cannot dequantize")
        }
        let values = try file.dequantize(info)
        guard permutedQK else { return values }
        let isQ = name.hasSuffix("q_proj.weight") || name.hasSuffix("q_proj.bias")
        let isK = name.hasSuffix("k_proj.weight") || name.hasSuffix("k_proj.bias")
        guard isQ || isK else { return values }
        let heads = isQ ? config.numAttentionHeads : config.numKeyValueHeads
        let cols = shape.count == 2 ? shape[1] : 1
        return try GGUFFile.unpermuteQK(values, heads: heads, cols: cols)
    }
}
