import Foundation
import Models

extension ModelConfig {
    /// GGUF architectures vtensor runs, with the HF model_type each corresponds to.
    public static let ggufArchitectures = ["llama": "llama", "qwen2": "qwen2", "mistral": "mistral"]

    /// The config a GGUF's metadata describes, built as the equivalent config.json so the same
    /// defaults and validation apply.
    public init(gguf file: GGUFFile) throws {
        guard let arch = file.string("general.architecture") else {
            throw ModelFileError(path: file.path, "GGUF metadata has no general.architecture")
        }
        guard let modelType = Self.ggufArchitectures[arch] else {
            throw ModelFileError(path: file.path, "unsupported GGUF architecture \(arch) (supported: \(Self.ggufArchitectures.keys.sorted().joined(separator: ", ")))")
        }
        func required(_ key: String) throws -> Int {
            guard let v = file.int("\(arch).\(key)") else {
                throw ModelFileError(path: file.path, "GGUF metadata is missing \(arch).\(key)")
            }
            return v
        }
        let hidden = try required("embedding_length")
        let heads = try required("attention.head_count")
        var json: [String: Any] = [
            "model_type": modelType,
            "hidden_size": hidden,
            "intermediate_size": try required("feed_forward_length"),
            "num_hidden_layers": try required("block_count"),
            "num_attention_heads": heads,
            "num_key_value_heads": file.int("\(arch).attention.head_count_kv") ?? heads,
            "max_position_embeddings": file.int("\(arch).context_length") ?? 2048,
            "rms_norm_eps": file.float("\(arch).attention.layer_norm_rms_epsilon") ?? 1e-5,
            "rope_theta": file.float("\(arch).rope.freq_base") ?? 10000,
        ]
        if let d = file.int("\(arch).attention.key_length") { json["head_dim"] = d }
        // The embedding table's row count is authoritative (it may exceed the tokenizer's ids).
        if let embedding = try? file.tensor(named: "token_embd.weight"), embedding.shape.count == 2 {
            json["vocab_size"] = embedding.shape[0]
        } else if let v = file.int("\(arch).vocab_size") ?? file.stringArray("tokenizer.ggml.tokens")?.count {
            json["vocab_size"] = v
        }
        json["tie_word_embeddings"] = (try? file.tensor(named: "output.weight")) == nil
        if let bos = file.int("tokenizer.ggml.bos_token_id") { json["bos_token_id"] = bos }
        if let eos = file.int("tokenizer.ggml.eos_token_id") { json["eos_token_id"] = eos }
        if let w = file.int("\(arch).attention.sliding_window") { json["sliding_window"] = w }
        if modelType == "qwen2" { json["use_sliding_window"] = false }
        if let kind = file.string("\(arch).rope.scaling.type"), kind != "none" {
            guard kind == "linear", let factor = file.float("\(arch).rope.scaling.factor") else {
                throw ModelFileError(path: file.path, "unsupported GGUF RoPE scaling \(kind) (supported: linear; llama3 comes as rope_freqs.weight)")
            }
            json["rope_scaling"] = ["rope_type": "linear", "factor": factor]
        }
        let data = try JSONSerialization.data(withJSONObject: json)
        self = try ModelConfig.decode(data, path: file.path + " (GGUF metadata)")
    }
}
