import ArgumentParser
import CLICommon
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
        try decode.runTimings(into: &report, cases: DecodeBench.sweepCases)
        if let jsonOut { try writeFile(jsonOut + ".decode.json", try jsonString(report)) }

        let prefillGPU = PrefillGPU(work: gpu)
        var prefill = PrefillReport(date: todayUTC(), device: prefillGPU.name, matmulCeilingTFLOPs: PrefillReport.anchorCeiling,
                                    ceilingSource: "bf16 matmul measured on H100 80GB (anchors.md), not in this run")
        do {
            prefill.matmulCeilingTFLOPs = try PrefillTiming.matmulCeiling(gpu: prefillGPU)
            prefill.ceilingSource = "cuBLASLt bf16 8192^3 matmul, this run"
        } catch {
            print("cuBLASLt matmul ceiling unavailable (\(error)); using the anchors' \(PrefillReport.anchorCeiling) TFLOP/s")
        }
        for c in PrefillTiming.cases {
            prefill.timings += try PrefillTiming.run(c, gpu: prefillGPU, reps: reps, ceiling: prefill.matmulCeilingTFLOPs)
        }
        print(prefillTimingTable(prefill, title: "\nprefill and extend on \(prefillGPU.name); ceiling \(fixed(prefill.matmulCeilingTFLOPs, 0)) TFLOP/s (\(prefill.ceilingSource))").render())
        if let jsonOut { try writeFile(jsonOut + ".prefill.json", try jsonString(prefill)) }
    }
}
