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
        if gguf == nil, LoadedModel.isDirectory(path) { return try GenerationConfig.load(directory: path) }
        return GenerationConfig()
    }
}
