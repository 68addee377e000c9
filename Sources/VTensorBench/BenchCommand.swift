import ArgumentParser

/// `vtensor bench`: the benchmarks, each a subcommand.
///
/// To add a benchmark (e.g. `bench throughput`), put its `ParsableCommand` in a file of this
/// target and add it to ``subcommands``; the `vtensor` command picks it up from there.
struct BenchCommand: ParsableCommand {
    /// Every `bench` subcommand, in the order `vtensor bench --help` lists them.
    static let subcommands: [any ParsableCommand.Type] = [
        BenchVMMCommand.self,
        BenchAttentionCommand.self,
        BenchCPUAttentionCommand.self,
        BenchModelCommand.self,
        BenchThroughputCommand.self,
        BenchEngineCommand.self,
        BenchServeCommand.self,
        BenchStructuredCommand.self,
    ]

    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that print a table (or JSON with --json).",
        subcommands: subcommands
    )
}
