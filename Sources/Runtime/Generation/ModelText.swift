import Support
import Foundation
import Models
import Tokenizers

extension LoadedModel {
    /// The model's tokenizer: the GGUF's embedded vocabulary, or the directory's tokenizer.json.
    public func tokenizer() throws -> Tokenizer {
        if let gguf { return try Tokenizer(gguf: gguf) }
        let path = self.path + "/tokenizer.json"
        guard FileManager.default.fileExists(atPath: path) else {
            throw ModelFileError(path: self.path, "no tokenizer.json (needed to turn text into tokens)")
        }
        return try Tokenizer(tokenizerJSON: path)
    }

    /// The model's chat template (format detection: ChatML, Llama 3, Llama 2, Mistral).
    public func chatTemplate() throws -> ChatTemplate {
        if let gguf { return try ChatTemplate(gguf: gguf) }
        return try ChatTemplate(modelDirectory: path)
    }

    /// generation_config.json when the model is a directory that has one; else empty defaults.
    public func generationConfig() throws -> GenerationConfig {
        try generationDefaults().config
    }

    /// The model's generation config and where its sampling defaults come from: its
    /// generation_config.json when that sets any, else the authors' recommendation for a model
    /// we know (``KnownGenerationDefaults``), else none (greedy).
    public func generationDefaults() throws -> (config: GenerationConfig, source: String?) {
        var config = GenerationConfig()
        if gguf == nil, LoadedModel.isDirectory(path) { config = try GenerationConfig.load(directory: path) }
        let setsSampling = config.temperature != nil || config.topP != nil || config.topK != nil || config.minP != nil
            || config.repetitionPenalty != nil || config.doSample != nil
        if setsSampling { return (config, "generation_config.json") }
        let name = gguf?.string("general.name") ?? (path as NSString).lastPathComponent
        guard let known = KnownGenerationDefaults.entry(forModelNamed: name)
                ?? KnownGenerationDefaults.entry(forModelNamed: (path as NSString).lastPathComponent) else { return (config, nil) }
        config.temperature = known.config.temperature
        config.topP = known.config.topP
        config.topK = known.config.topK
        config.minP = known.config.minP
        config.repetitionPenalty = known.config.repetitionPenalty
        return (config, known.source)
    }
}

extension LoadedModel {
    /// The CPU forward pass for this model; with `nativeWeights`, a GGUF's Q4_0/Q4_1/Q8_0
    /// matrices are computed on in their block formats (the ones opened with `keepBlocks`, else
    /// read from the file now, beside the Float weights).
    public func cpuModel(kvBudgetBytes: Int = 2 << 30, maxTokensPerSequence: Int? = nil,
                         threads: Int = Processors.available, nativeWeights: Bool = true) throws -> CPUModel {
        if !nativeWeights, blocks != nil {
            throw RuntimeError.invalidRequest("this model was opened with its matrices kept in block format only; Float weights need it opened without keepBlocks")
        }
        let quantized = nativeWeights ? blocks ?? gguf.flatMap { QuantizedWeights(file: $0, config: config) } : nil
        return try CPUModel(weights: weights, kvBudgetBytes: kvBudgetBytes, maxTokensPerSequence: maxTokensPerSequence, threads: threads,
                            quantized: quantized)
    }
}
