import ArgumentParser

@main
struct VTensorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vtensor",
        abstract: "LLM serving over virtual-tensor KV caches (CUDA virtual memory).",
        subcommands: [InfoCommand.self, SelftestCommand.self, BenchCommand.self, KernelsCommand.self, DevCommand.self, LogitsCommand.self, GenerateCommand.self]
    )
}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that print a table (or JSON with --json).",
        subcommands: [BenchVMMCommand.self, BenchAttentionCommand.self, BenchModelCommand.self, BenchThroughputCommand.self]
    )
}
