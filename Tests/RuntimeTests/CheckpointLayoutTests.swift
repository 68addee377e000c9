import Foundation
import Kernels
import Models
@testable import Runtime
import Testing

/// The GPU's upload straight from a checkpoint (`CheckpointLayout`) must put exactly the bytes
/// that the host path (`ModelWeights.load`, then bf16 for matrices) would: every layout tensor of
/// a small Qwen2-shaped checkpoint whose tensors are stored in bf16, f16 and f32.
@Suite struct CheckpointLayoutTests {
    static let config = """
        {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
         "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
         "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": false, "rope_theta": 10000.0}
        """

    /// A single-file checkpoint of `config`'s tensors with random values, each in a dtype picked
    /// by its name; `drop` leaves one out, `misshape` stores one with a wrong shape.
    static func writeCheckpoint(drop: String? = nil, misshape: String? = nil) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-layout-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(config.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let c = try ModelConfig.load(path: dir + "/config.json")
        var tensors: [(String, [Int])] = []
        for entry in CheckpointLayout.entries(config: c) { tensors += CheckpointLayout.parts(of: entry.name, config: c) }
        var rng = SystemRandomNumberGenerator()
        var header: [String] = [], data: [UInt8] = []
        for (name, shape) in tensors where name != drop {
            let stored = name == misshape ? [shape.reduce(1, *)] + (shape.count == 2 ? [] : [1]) : shape
            let count = shape.reduce(1, *)
            let values = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
            let dtype = name.contains("k_proj") ? "F16" : name.contains("v_proj") || name.contains("norm") ? "F32" : "BF16"
            let bytes: [UInt8]
            switch dtype {
            case "F16": bytes = values.flatMap { withUnsafeBytes(of: Float16($0).bitPattern.littleEndian, Array.init) }
            case "F32": bytes = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
            default: bytes = values.flatMap { withUnsafeBytes(of: HalfFloat.floatToBF16($0).littleEndian, Array.init) }
            }
            header.append("\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(stored),\"data_offsets\":[\(data.count),\(data.count + bytes.count)]}")
            data += bytes
        }
        var json = Array(("{" + header.joined(separator: ",") + "}").utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        let file = withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + json + data
        try Data(file).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        return dir
    }

    /// The host path's values of layout tensor `name`.
    static func hostValues(_ name: String, _ w: ModelWeights) -> [Float] {
        switch name {
        case "embed": return w.embedding
        case "finalNorm": return w.finalNorm
        case "lmHead": return w.lmHead!
        default:
            let parts = name.split(separator: ".")
            let l = w.layers[Int(parts[0])!]
            switch parts[1] {
            case "inputNorm": return l.inputNorm
            case "qkv": return l.qkv
            case "qkvBias": return l.qkvBias!
            case "output": return l.output
            case "postNorm": return l.postAttentionNorm
            case "gateUp": return l.gateUp
            case "down": return l.down
            default: Issue.record("unexpected layout tensor \(name)"); return []
            }
        }
    }

    @Test func uploadsTheBytesTheHostPathWould() throws {
        let dir = try Self.writeCheckpoint()
        let loaded = try LoadedModel.open(dir, hostWeights: false)
        #expect(loaded.hostWeights == nil)
        let checkpoint = try #require(loaded.checkpoint)
        let host = try ModelWeights.load(config: loaded.config, from: SafeTensorsWeightSource(directory: dir))
        let entries = CheckpointLayout.entries(config: loaded.config)
        #expect(entries.filter { $0.name != "invFreq" }.reduce(0) { $0 + $1.count } == ModelWeights.parameterCount(config: loaded.config))
        #expect(entries.contains { $0.name == "1.qkvBias" } && entries.last?.name == "invFreq")
        var zeroCopy = 0
        for entry in entries where entry.name != "invFreq" {
            var got = [UInt8](repeating: 0xAA, count: entry.count * (entry.bf16 ? 2 : 4))
            try CheckpointLayout.forEachPart(of: entry, config: loaded.config, checkpoint: checkpoint) { offset, bytes in
                #expect(offset + bytes.count <= got.count, "\(entry.name): a part past the end")
                got.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
                // bf16 tensors of a bf16 matrix go out from the mapped file itself.
                if entry.bf16, let name = CheckpointLayout.parts(of: entry.name, config: loaded.config).first(where: {
                    (try? checkpoint.tensor(named: $0.name).bytes.baseAddress) == bytes.baseAddress
                })?.name, (try? checkpoint.tensor(named: name).dtype) == .bf16 { zeroCopy += 1 }
            }
            let values = Self.hostValues(entry.name, host)
            let expected: [UInt8] = entry.bf16 ? values.map(HalfFloat.floatToBF16).withUnsafeBytes(Array.init) : values.withUnsafeBytes(Array.init)
            #expect(got == expected, "\(entry.name) differs from the host path")
        }
        // embed, lm_head, and per layer q, o, gate, up, down are bf16 in the file; k (f16) and v (f32) are converted.
        #expect(zeroCopy == 2 + 2 * 5, "\(zeroCopy) parts went out from the mapped file")
    }

    @Test func missingAndMisshapenTensorsAreNamed() throws {
        for (drop, misshape, words) in [("model.layers.1.mlp.up_proj.weight", nil, "missing tensor model.layers.1.mlp.up_proj.weight"),
                                        (nil, "model.layers.0.self_attn.o_proj.weight", "tensor model.layers.0.self_attn.o_proj.weight has shape"),
                                        (nil, "model.layers.0.self_attn.k_proj.weight", "tensor model.layers.0.self_attn.k_proj.weight has shape")] {
            let dir = try Self.writeCheckpoint(drop: drop, misshape: misshape)
            let loaded = try LoadedModel.open(dir, hostWeights: false)
            let checkpoint = try #require(loaded.checkpoint)
            let error = #expect(throws: ModelFileError.self) {
                for entry in CheckpointLayout.entries(config: loaded.config) where entry.name != "invFreq" {
                    try CheckpointLayout.forEachPart(of: entry, config: loaded.config, checkpoint: checkpoint) { _, _ in }
                }
            }
            #expect(error?.problem.contains(words) == true, "\(String(describing: error))")
        }
    }
}
