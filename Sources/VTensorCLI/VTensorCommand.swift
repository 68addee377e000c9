import ArgumentParser
import CLICommon
import Foundation
import VTensorBench

@main
struct VTensorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vtensor",
        abstract: "LLM serving over virtual-tensor KV caches (CUDA virtual memory).",
        version: VTensorVersion.text,
        // The measurement commands (selftest, bench, kernels, dev, logits) live in VTensorBench.
        subcommands: [InfoCommand.self] + MeasurementCommands.all + [GenerateCommand.self, ChatCommand.self, ServeCommand.self]
    )

    /// ArgumentParser's `main`, except that a problem found while a subcommand runs (a file
    /// that cannot be read, a bad value only the model can judge) prints that subcommand's
    /// usage, not the root's.
    static func main() {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            try command.run()
        } catch let error as ValidationError {
            FileHandle.standardError.write(Data(Self.usageMessage(error.message, for: type(of: command)).utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        } catch {
            exit(withError: error)
        }
    }

    /// "Error: ...", the subcommand's usage, and where its help is.
    static func usageMessage(_ message: String, for subcommand: ParsableCommand.Type) -> String {
        let usage = usageString(for: subcommand)
        // "vtensor bench throughput [<options>]" -> "vtensor bench throughput".
        let firstLine = usage.split(separator: "\n").first ?? ""
        let path = firstLine.split(separator: " ").prefix { !$0.hasPrefix("[") && !$0.hasPrefix("<") }.joined(separator: " ")
        return "Error: \(message)\nUsage: \(usage)\n  See '\(path.isEmpty ? "vtensor" : path) --help' for more information.\n"
    }
}
