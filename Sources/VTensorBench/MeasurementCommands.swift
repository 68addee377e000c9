import ArgumentParser

/// The commands that measure the product rather than serve users: `selftest`, `bench *`,
/// `kernels compile`, `dev *` and `logits` (used by the agreement scripts).
///
/// The `vtensor` command registers these as its subcommands; nothing else of this target is
/// public. A new top-level measurement command goes in ``all``; a new benchmark goes in
/// `BenchCommand.subcommands`.
public enum MeasurementCommands {
    /// In the order `vtensor --help` lists them (between `info` and `generate`).
    public static var all: [any ParsableCommand.Type] {
        [SelftestCommand.self, BenchCommand.self, KernelsCommand.self, DevCommand.self, LogitsCommand.self]
    }
}
