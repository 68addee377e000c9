import ArgumentParser

/// Development checks of kernels in progress, run on the GPU machine before they join
/// `selftest` and `bench`.
struct DevCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev", abstract: "Development checks of kernels in progress (GPU machine).",
        subcommands: [DevDecodeCommand.self, DevPrefillCommand.self, DevModelCommand.self, DevSampleCommand.self, DevEngineCommand.self])
}
