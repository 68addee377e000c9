import ArgumentParser
import VTensorBench

@main
struct VTensorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vtensor",
        abstract: "LLM serving over virtual-tensor KV caches (CUDA virtual memory).",
        // The measurement commands (selftest, bench, kernels, dev, logits) live in VTensorBench.
        subcommands: [InfoCommand.self] + MeasurementCommands.all + [GenerateCommand.self]
    )
}
