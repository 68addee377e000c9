import ArgumentParser
import Glibc

/// `vtensor bench attention`: the attention kernels' timing sweeps (decode in vTensor and paged
/// mode, prefill and extend), each against the ceiling the same run measures. The same suites
/// as `vtensor dev decode|prefill`, without their correctness checks (`vtensor selftest` runs those).
struct BenchAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Attention kernel timings: decode (vTensor and paged), prefill and extend, against measured ceilings.")

    @Option(help: "CUDA device ordinal.")
    var device = 0

    @Option(name: .customLong("json-out"), help: "Write the decode report as JSON to FILE.decode.json and the prefill report to FILE.prefill.json.")
    var jsonOut: String?

    @Option(help: "Timed runs per case (median reported).")
    var reps = 30

    func run() throws {
        if let reason = gpuUnavailableReason() { throw ValidationError("bench attention needs a GPU: \(reason)") }
        let gpu = try CUDAWork(device: device)
        print("device: \(gpu.name)")
        let decode = DecodeBench(gpu: gpu, reps: reps, ctasPerSM: nil, oracleThreads: 1, filter: nil,
                                 variants: [.init(name: "standard", configs: [:], saturatingCTAs: nil)])
        var report = DecodeReport(date: todayUTC(), device: gpu.name, multiprocessors: gpu.context.device.multiprocessorCount)
        try decode.runTimings(into: &report)
        if let jsonOut { try writeFile(jsonOut + ".decode.json", try jsonString(report)) }
    }
}
