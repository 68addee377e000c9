import ArgumentParser
import Engine
import Foundation
import Models
import Runtime
import Tokenizers

/// A model opened for the commands that generate text (chat, serve): the runtime on the backend
/// the flags pick, its tokenizer, its sampling defaults and a `Generator` (the engine) over it.
public struct OpenedModel {
    public let runtime: ModelRuntime
    public let loaded: LoadedModel
    public let tokenizer: Tokenizer
    public let generation: GenerationConfig
    /// Where the sampling defaults come from (nil: greedy, no defaults).
    public let defaultsSource: String?
    public let generator: Generator
    public let loadSeconds: Double

    /// The sampling defaults (the model's, else greedy), before any flag or request field.
    public var defaultSampling: SamplingParameters { generation.samplingDefaults(base: SamplingParameters(temperature: 0)) }

    /// Opens the model; `command` names the caller in errors. Without a GPU (and no --backend)
    /// it says on standard error that it runs on the CPU.
    public static func open(_ modelOptions: ModelOptions, _ backendOptions: BackendOptions, _ engineFlags: EngineFlags,
                            command: String) throws -> OpenedModel {
        let (kind, unavailable) = backendOptions.resolve()
        if kind == .cuda, let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
        if kind == .cpu, backendOptions.backend == nil, let unavailable {
            FileHandle.standardError.write(Data("vtensor: \(unavailable.split(separator: ":").first ?? "no CUDA device"); running on the CPU\n".utf8))
        }
        guard let format = LoadFormat(rawValue: modelOptions.loadFormat), format != .dummy else {
            throw ValidationError("\(command) needs a model with a tokenizer (--load-format dummy has none)")
        }
        let start = Date()
        let runtime = try ModelRuntime.open(modelOptions.model, format: format,
                                            options: engineFlags.runtimeOptions(backend: kind, device: backendOptions.device,
                                                                                nativeCPUWeights: modelOptions.nativeCPUWeights))
        let loaded = runtime.loaded!
        let tokenizer = try loaded.tokenizer()
        let (generation, source) = try loaded.generationDefaults()
        let generator = try Generator(model: runtime.model, tokenizer: tokenizer, extraEOSTokenIds: generation.eosTokenIds,
                                      options: engineFlags.engineOptions(for: runtime.model))
        return OpenedModel(runtime: runtime, loaded: loaded, tokenizer: tokenizer, generation: generation, defaultsSource: source,
                           generator: generator, loadSeconds: Date().timeIntervalSince(start))
    }
}
