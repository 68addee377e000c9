import ArgumentParser
import CLICommon
import GPU
import Glibc
import Kernels
import Runtime

struct KernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels", abstract: "Kernel tools that need no GPU.",
        subcommands: [CompileKernelsCommand.self])
}

/// Compiles every kernel program with NVRTC alone (no device needed) and prints NVRTC's
/// resource report, so sources can be checked on a machine without a GPU.
struct CompileKernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compile",
        abstract: "Compile every kernel for an architecture with NVRTC (no GPU needed); print registers and spills.")

    @Option(help: "Compute capability, e.g. 90.")
    var arch = 90

    @Option(help: "Write the CUBINs into this directory.")
    var out: String?

    @Option(help: "Only programs whose name contains this.")
    var filter: String?

    func run() throws {
        let nvrtc = try NVRTC.shared()
        print("NVRTC \(nvrtc.version) (\(nvrtc.library.path))")
        var failed = 0
        for program in KernelCatalog.all + RuntimeKernels.catalog where filter.map({ program.name.contains($0) }) ?? true {
            let capability = ComputeCapability(major: arch / 10, minor: arch % 10)
            // Architecture-specific programs (sm_90a) exist for their one architecture only.
            if !program.archSuffix.isEmpty && arch != 90 { continue }
            let options = KernelCompiler.compileOptions(computeCapability: capability, options: program.options, archSuffix: program.archSuffix)
                + ["--ptxas-options=-v"]
            do {
                let (cubin, log) = try nvrtc.compileWithLog(source: program.source, name: program.name, options: options)
                print("== \(program.name) \(program.options.joined(separator: " ")): \(cubin.count) bytes")
                print(log.split(separator: "\n").filter { $0.contains("registers") || $0.contains("spill") || $0.contains("Compiling") || $0.contains("warning") || $0.contains("Performance") }.joined(separator: "\n"))
                if let out {
                    mkdir(out, 0o755)
                    let path = "\(out)/\(program.name).\(program.options.joined().filter { $0.isLetter || $0.isNumber }).sm_\(arch)\(program.archSuffix).cubin"
                    guard let file = fopen(path, "wb") else { throw ValidationError("cannot write \(path)") }
                    _ = cubin.withUnsafeBytes { fwrite($0.baseAddress, 1, cubin.count, file) }
                    fclose(file)
                }
            } catch {
                failed += 1
                print("== \(program.name): FAILED\n\(error)")
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }
}
