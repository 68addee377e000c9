import ArgumentParser
import CLICommon
import Foundation
import GPU
import Runtime
import VTensor

/// `vtensor dev sample`: batched GPU sampling (`GPUSampler`) against the float64 reference
/// (`SamplingReference`) on fresh random logits, then its time per step at serving batch sizes.
struct DevSampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample", abstract: "Check GPU sampling against the float64 reference and time it.")

    @Option(help: "CUDA device ordinal.")
    var device = 0
    @Option(name: .customLong("json-out"), help: "Write the checks and timings as JSON.")
    var jsonOut: String?

    struct Check: Codable {
        var name: String
        var vocab: Int
        var rows: Int
        var tokenMismatches: Int
        var ambiguousRows: Int
        var maxLogprobError: Double
        var alternativeMismatches: Int
        var pass: Bool
    }

    struct Timing: Codable {
        var name: String
        var rows: Int
        var vocab: Int
        var ms: Double
    }

    /// Parameter sets the checks cycle through, row by row.
    static let parameterSets: [(String, SamplingParameters)] = [
        ("greedy", SamplingParameters(temperature: 0, logprobs: 5)),
        ("T=1", SamplingParameters(temperature: 1, logprobs: 0)),
        ("T=0.7 top-k 50", SamplingParameters(temperature: 0.7, topK: 50)),
        ("T=0.8 top-p 0.9", SamplingParameters(temperature: 0.8, topP: 0.9, logprobs: 20)),
        ("top-k 1000 top-p 0.95 min-p 0.02", SamplingParameters(temperature: 1.1, topK: 1000, topP: 0.95, minP: 0.02)),
        ("min-p 0.1", SamplingParameters(temperature: 1, minP: 0.1, logprobs: 3)),
        ("penalties", SamplingParameters(temperature: 0.9, topP: 0.8, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.3, logprobs: 2)),
        ("greedy + repetition", SamplingParameters(temperature: 0, repetitionPenalty: 1.5)),
        ("top-k 1", SamplingParameters(temperature: 1, topK: 1)),
        ("top-k 5000 top-p 0.5", SamplingParameters(temperature: 1, topK: 5000, topP: 0.5, logprobs: 4)),
        ("top-p 0.999", SamplingParameters(temperature: 1.3, topP: 0.999)),
        // Bias values; each row moves them to ids of its own (`biases(for:row:limit:)`).
        ("logit bias", SamplingParameters(temperature: 0.8, topK: 200, logprobs: 3, logitBias: [0: 6, 1: -2.5, 2: -100])),
        ("greedy, bias + penalties", SamplingParameters(temperature: 0, repetitionPenalty: 1.2, presencePenalty: 0.4, logprobs: 2,
                                                        logitBias: [0: 4, 1: -.infinity])),
    ]

    static let maskedCase = "grammar masks"

    /// A row's mask: a few hundred allowed ids (a grammar between values), a third of the ids (inside
    /// a string), or ids only near the end of the vocabulary, by row; bits past `vocab` set (they must be refused).
    static func mask(row: Int, vocab: Int) -> [UInt64] {
        var words = [UInt64](repeating: 0, count: (vocab + 63) / 64 + 1)
        func allow(_ id: Int) { words[id >> 6] |= UInt64(1) << UInt64(id & 63) }
        switch row % 3 {
        case 1: for k in 0..<300 { allow((k * 7919 + row * 104_729) % vocab) }
        default:
            if row % 2 == 0 { for id in stride(from: row % 3, to: vocab, by: 3) { allow(id) } } else { for id in (vocab - 50)..<vocab { allow(id) } }
        }
        words[words.count - 1] = ~0
        return words
    }

    /// A row's biases: each value of `parameters.logitBias` on an id that depends on the row
    /// (one entry per id, as the kernel requires).
    static func biases(for parameters: SamplingParameters, row: Int, limit: Int) -> [LogitBias] {
        var byId: [Int: Float] = [:]
        for (k, value) in parameters.logitBias.sorted(by: { $0.key < $1.key }) { byId[(row * 131 + k * 977) % limit] = Float(value) }
        return byId.sorted { $0.key < $1.key }.map { LogitBias(id: $0.key, value: $0.value) }
    }

    func run() throws {
        if let reason = gpuUnavailableReason() { throw ValidationError("dev sample needs a GPU: \(reason)") }
        let context = try CUDAContext(device: device)
        let stream = try CUDAStream(context: context)
        let compiler = KernelCompiler(context: context)
        let maxRows = 256
        let sampler = try GPUSampler(compiler: compiler, maxRows: maxRows)
        print("GPU sampling on \(context.device.name): one CTA per row; checks against the float64 reference")
        var rng = SplitMix64(seed: 23)
        func normal() -> Float {
            let u1 = Double(rng.next() >> 11) * 0x1.0p-53 + 0x1.0p-54, u2 = Double(rng.next() >> 11) * 0x1.0p-53
            return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
        }
        var checks: [Check] = []
        // (name, vocab, limit, rows, logits generator)
        let cases: [(String, Int, Int, Int, (Int, Int) -> Float)] = [
            ("normal sd 3, vocab 128256", 128_256, 128_256, 72, { _, _ in 3 * normal() }),
            ("normal sd 8 (peaked), vocab 151936, limit 151665", 151_936, 151_665, 36, { _, _ in 8 * normal() }),
            ("flat: sd 0.05", 32_000, 32_000, 36, { _, _ in 0.05 * normal() }),
            ("ties: 5 levels", 50_000, 50_000, 36, { _, i in Float((i * 7919) % 5) }),
            ("NaN and inf entries", 1000, 1000, 18, { r, i in i % 97 == 3 ? .nan : (i == 500 + r ? .infinity : (i % 89 == 1 ? -.infinity : normal())) }),
            ("small vocab 7", 7, 7, 18, { _, _ in normal() }),
            // Structured output: two rows in three carry a grammar's mask (the mask kernel, then the sampler).
            (Self.maskedCase, 128_256, 128_256, 72, { _, _ in 3 * normal() }),
            (Self.maskedCase + ", limit 151665", 151_936, 151_665, 36, { _, _ in 8 * normal() }),
        ]
        for (name, vocab, limit, rows, make) in cases {
            var logits = [Float](repeating: 0, count: rows * vocab)
            for r in 0..<rows { for i in 0..<vocab { logits[r * vocab + i] = make(r, i) } }
            var draws: [DeviceDraw] = []
            for r in 0..<rows {
                let parameters = Self.parameterSets[r % Self.parameterSets.count].1
                var seen: [SIMD2<Int32>] = []
                if parameters.repetitionPenalty != 1 || parameters.presencePenalty != 0 || parameters.frequencyPenalty != 0 {
                    for j in 0..<min(40, limit) { seen.append(SIMD2(Int32((j * 37 + r) % limit), Int32(j % 3))) }
                    seen = Array(Set(seen.map(\.x)).sorted().map { id in seen.first { $0.x == id }! })
                }
                let u = DeviceDraw.floatUnit(Double(rng.next() >> 11) * 0x1.0p-53)
                var draw = DeviceDraw(parameters: parameters, u: u, penalties: seen, biases: Self.biases(for: parameters, row: r, limit: limit))
                if name.hasPrefix(Self.maskedCase) && r % 3 != 0 { draw.allowed = Self.mask(row: r, vocab: vocab) }
                draws.append(draw)
            }
            let buffer = try DeviceBuffer(context: context, bytes: logits.count * 4)
            try context.copyHostToDevice(destination: buffer.address, from: logits)
            try context.makeCurrent()
            let got = try sampler.sample(logits: buffer.address, stride: vocab, limit: limit, draws: draws, stream: stream)
            var mismatches = 0, ambiguous = 0, altMismatches = 0
            var maxError = 0.0
            for r in 0..<rows {
                let row = Array(logits[(r * vocab)..<((r + 1) * vocab)])
                let ref = SamplingReference.sample(logits: row, vocabularyLimit: limit, draw: draws[r], tolerance: 1e-5)
                if ref.ambiguous { ambiguous += 1 }
                if got[r].id != ref.token.id && !ref.ambiguous {
                    mismatches += 1
                    if mismatches <= 3 { print("  \(name) row \(r) [\(Self.parameterSets[r % Self.parameterSets.count].0)]: GPU \(got[r].id), reference \(ref.token.id)") }
                }
                if let a = got[r].logprob, let b = ref.token.logprob, got[r].id == ref.token.id, a.isFinite || b.isFinite {
                    maxError = max(maxError, Double(abs(a - b)))
                }
                let ga = got[r].alternatives, ra = ref.token.alternatives
                if ga.count != ra.count {
                    altMismatches += 1
                } else {
                    for (x, y) in zip(ga, ra) {
                        // A different id is fine only between (near-)equal values.
                        if (x.id != y.id && abs(x.logprob - y.logprob) > 1e-5) || (x.logprob.isFinite && abs(Double(x.logprob - y.logprob)) > 2e-4) {
                            altMismatches += 1
                            break
                        }
                    }
                }
            }
            let pass = mismatches == 0 && altMismatches == 0 && maxError < 2e-4
            checks.append(Check(name: name, vocab: vocab, rows: rows, tokenMismatches: mismatches, ambiguousRows: ambiguous,
                                maxLogprobError: maxError, alternativeMismatches: altMismatches, pass: pass))
        }
        var table = Table(title: "GPU sampling vs the float64 reference", header: ["case", "rows", "token mismatches", "ambiguous rows", "max logprob error", "alternative mismatches", "pass"])
        for c in checks {
            table.add([c.name, "\(c.rows)", "\(c.tokenMismatches)", "\(c.ambiguousRows)", String(format: "%.2e", c.maxLogprobError), "\(c.alternativeMismatches)", c.pass ? "yes" : "NO"])
        }
        print(table.render())

        // Timing: rows x 128256 logits, normal with sd 3 (a flat distribution: top-p 0.9 needs about the 1000
        // most likely ids, at the short list's edge) and sd 8 (peaked, like a trained model's), CUDA events, median of 20.
        var timings: [Timing] = []
        let vocab = 128_256
        let buffer = try DeviceBuffer(context: context, bytes: maxRows * vocab * 4)
        var host = [Float](repeating: 0, count: maxRows * vocab)
        let start = try CUDAEvent(context: context, timing: true), end = try CUDAEvent(context: context, timing: true)
        for sd: Float in [3, 8] {
            for i in host.indices { host[i] = sd * normal() }
            try context.copyHostToDevice(destination: buffer.address, from: host)
            for (label, parameters) in [("top-p 0.9, T 0.8, logprobs 5", SamplingParameters(temperature: 0.8, topP: 0.9, logprobs: 5)),
                                        ("top-k 50, top-p 0.95", SamplingParameters(temperature: 1, topK: 50, topP: 0.95)),
                                        ("min-p 0.05 (no top-k/top-p)", SamplingParameters(temperature: 1, minP: 0.05)),
                                        ("greedy", SamplingParameters(temperature: 0))] {
                for rows in [1, 64, 256] {
                    let draws = (0..<rows).map { _ in DeviceDraw(parameters: parameters, u: 0.5) }
                    var times: [Double] = []
                    for rep in 0..<22 {
                        try start.record(on: stream)
                        _ = try sampler.sample(logits: buffer.address, stride: vocab, limit: vocab, draws: draws, stream: stream)
                        try end.record(on: stream)
                        try end.synchronize()
                        if rep >= 2 { times.append(Double(try CUDAEvent.elapsedMilliseconds(from: start, to: end))) }
                    }
                    times.sort()
                    timings.append(Timing(name: "sd \(Int(sd)): \(label)", rows: rows, vocab: vocab, ms: times[times.count / 2]))
                }
            }
        }
        var timeTable = Table(title: "GPU sampling time per step (vocab \(vocab); upload, kernel, read-back of results; CUDA events, median of 20)",
                              header: ["parameters", "rows", "ms", "us per row"])
        for t in timings { timeTable.add([t.name, "\(t.rows)", fixed(t.ms, 3), fixed(t.ms * 1000 / Double(t.rows), 1)]) }
        print(timeTable.render())
        let passed = checks.filter(\.pass).count
        print("\(passed)/\(checks.count) sampling checks passed")
        if let jsonOut {
            struct Report: Codable { var device: String; var checks: [Check]; var timings: [Timing] }
            try writeFile(jsonOut, try jsonString(Report(device: context.device.name, checks: checks, timings: timings)))
        }
        if passed != checks.count { throw ExitCode.failure }
    }
}
