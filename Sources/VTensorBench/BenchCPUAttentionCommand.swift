import ArgumentParser
import CLICommon
import Glibc
import Kernels
import Support
import VTensor

struct CPUAttentionCaseResult: Codable {
    var name: String
    var kind: String
    var tokens: Int
    /// Milliseconds per layer, one per timed repeat.
    var samplesMs: [Double]
    var medianMs: Double
    var minMs: Double
    /// Decode with --read-floor: a plain read of the same K and V bytes on the same threads, timed
    /// between the attention's repeats (ms per layer).
    var readMedianMs: Double?
}

struct CPUAttentionBenchReport: Codable {
    var date: String
    var threads: Int
    var repeats: Int
    var queryHeads: Int
    var kvHeads: Int
    var headDim: Int
    var decodeLayers: Int
    var cases: [CPUAttentionCaseResult]
}

/// `vtensor bench cpu-attention`: `CPUAttention.run` on fp32 K/V in a host KV cache laid out as
/// the CPU model makes it (2 MiB chunks, the default layout), SmolLM2-135M's shape. Prefill runs
/// one layer; decode walks `--layers` layers' distinct K/V in turn (so the per-core L2 cannot keep
/// a layer between calls, as in a real step) and reports the time per layer.
struct BenchCPUAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpu-attention",
        abstract: "CPU attention timings (fp32 K/V, SmolLM2-135M shape): prefill of one layer, decode per layer.")

    @Option(help: "Threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("repeat"), help: "Timed runs per case (median reported).")
    var repeats = 9
    @Option(help: "Comma-separated cases: prefill-512, prefill-1024, prefill-4096, decode-1000, decode-4000 (default all).")
    var cases: String?
    @Option(help: "Layers of distinct K/V a decode sample walks.")
    var layers = 30
    @Option(name: .customLong("json-out"), help: "Write the report as JSON to this file.")
    var jsonOut: String?
    @Flag(name: .customLong("read-floor"), help: "Decode: also time a plain read of the same K/V bytes (the memory's pace), between the repeats.")
    var readFloor = false

    static let allCases: [(name: String, kind: String, tokens: Int)] = [
        ("prefill-512", "prefill", 512), ("prefill-1024", "prefill", 1024), ("prefill-4096", "prefill", 4096),
        ("decode-1000", "decode", 1000), ("decode-4000", "decode", 4000),
    ]

    func run() throws {
        let threads = max(1, self.threads ?? Processors.available)
        let wanted = cases.map { Set($0.split(separator: ",").map(String.init)) }
        let selected = Self.allCases.filter { wanted?.contains($0.name) ?? true }
        if let wanted, selected.count != wanted.count {
            throw ValidationError("unknown case in --cases; known: \(Self.allCases.map(\.name).joined(separator: ", "))")
        }
        guard repeats > 0, layers > 0 else { throw ValidationError("--repeat and --layers must be positive") }

        let p = AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64, dtype: .fp32)
        let shape = KVShape(layers: layers, kvHeads: p.kvHeads, headDim: p.headDim, dtype: .fp32)
        // As CPUModel.makeCache: the host backend's default 2 MiB chunks, the default layout.
        // One case's request at a time (each is freed after its case), with room for chunk rounding.
        let longest = selected.map(\.tokens).max() ?? 0
        let chunk = 2 << 20
        let bytes = (max(64 << 20, 2 * longest * layers * p.kvHeads * p.headDim * 4 * 2) + chunk - 1) / chunk * chunk
        let backend = try HostBackend(chunkSize: chunk, capacityBytes: bytes)
        let memory = try VirtualMemory(backend: backend, budget: .bytes(bytes), lowWatermark: 0)
        let cache = try KVCache(shape: shape, layout: .default, memory: memory, maxTokensPerRequest: 4096)

        var rng = SplitMix64(seed: 42)
        var row = [Float](repeating: 0, count: p.headDim)
        func fill(_ view: KVView, tokens: Int) {
            for t in 0..<tokens {
                for h in 0..<p.kvHeads {
                    for x in 0..<p.headDim { row[x] = Float(rng.nextDouble() * 2 - 1) }
                    row.withUnsafeBytes {
                        UnsafeMutableRawPointer(bitPattern: UInt(view.address(token: t, head: h)))!
                            .copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                    }
                }
            }
        }

        var report = CPUAttentionBenchReport(date: todayUTC(), threads: threads, repeats: repeats, queryHeads: p.queryHeads,
                                             kvHeads: p.kvHeads, headDim: p.headDim, decodeLayers: layers, cases: [])
        var table = Table(title: "CPU attention, 9 query heads / 3 KV heads / head dim 64, fp32, \(threads) threads, medians of \(repeats)",
                          header: ["case", "tokens", "ms per layer (median)", "min"] + (readFloor ? ["read only (median)"] : []))
        for (id, c) in selected.enumerated() {
            let queries = c.kind == "prefill" ? c.tokens : 1
            // Prefill uses layer 0 only; decode every layer.
            let usedLayers = c.kind == "prefill" ? 1 : layers
            try cache.addRequest(id)
            try cache.reserve(id, tokens: c.tokens)
            try cache.setLength(id, c.tokens)
            var requests: [AttentionRequest] = []
            for layer in 0..<usedLayers {
                let key = try cache.view(id, layer: layer, component: .key)
                let value = try cache.view(id, layer: layer, component: .value)
                fill(key, tokens: c.tokens)
                fill(value, tokens: c.tokens)
                requests.append(AttentionRequest(key: key, value: value, queryStart: 0, queryCount: queries))
            }
            let q = (0..<queries * p.queryHeads * p.headDim).map { _ in Float(rng.nextDouble() * 2 - 1) }
            var out = [Float](repeating: 0, count: q.count)
            func pass() {
                q.withUnsafeBytes { qb in
                    out.withUnsafeMutableBytes { ob in
                        for request in requests {
                            CPUAttention.run(p, requests: [request], queries: qb.baseAddress!, output: ob.baseAddress!, threads: threads)
                        }
                    }
                }
            }
            func milliseconds(_ body: () -> Void) -> Double {
                let start = ContinuousClock.now
                body()
                let elapsed = ContinuousClock.now - start
                return Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) * 1e-15
            }
            let reader = readFloor && c.kind == "decode" ? KVReader(requests: requests, tokens: c.tokens, threads: threads) : nil
            pass()  // warm-up: page faults, the worker pool's threads
            var samples: [Double] = [], reads: [Double] = []
            for _ in 0..<repeats {
                samples.append(milliseconds(pass) / Double(usedLayers))
                if let reader { reads.append(milliseconds(reader.pass) / Double(usedLayers)) }
            }
            try cache.free(id)
            let result = CPUAttentionCaseResult(name: c.name, kind: c.kind, tokens: c.tokens, samplesMs: samples,
                                                medianMs: median(samples), minMs: samples.min() ?? 0,
                                                readMedianMs: reader == nil ? nil : median(reads))
            report.cases.append(result)
            table.add([c.name, String(c.tokens), fixed(result.medianMs, 4), fixed(result.minMs, 4)]
                      + (readFloor ? [result.readMedianMs.map { fixed($0, 4) } ?? "-"] : []))
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(report)) }
    }
}

/// Sums every K and V byte of the requests' first `tokens` tokens, layer by layer, each layer in
/// parts over the threads as the attention spreads it: how fast this machine streams those bytes.
private struct KVReader {
    /// Per layer, the block-contiguous runs of K and V token rows.
    let layers: [[(address: UInt, bytes: Int)]]
    let threads: Int

    init(requests: [AttentionRequest], tokens: Int, threads: Int) {
        self.threads = threads
        layers = requests.map { request in
            [request.key, request.value].flatMap { view -> [(address: UInt, bytes: Int)] in
                stride(from: 0, to: tokens, by: view.tokensPerBlock).map { first in
                    (UInt(view.address(token: first, head: 0)), min(view.tokensPerBlock, tokens - first) * view.tokenStride)
                }
            }
        }
    }

    func pass() {
        let parts = threads * 8
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: parts)
        defer { sums.deallocate() }
        for runs in layers {
            let total = runs.reduce(0) { $0 + $1.bytes }
            WorkerPool.shared.run(parts: parts, maxThreads: threads) { part in
                // This part's bytes [lower, upper) of the layer's runs laid end to end, in 64-byte steps.
                let lower = total * part / parts / 64 * 64, upper = total * (part + 1) / parts / 64 * 64
                var a = SIMD16<Float>(), b = SIMD16<Float>()
                var offset = 0
                for run in runs {
                    let from = max(lower, offset), to = min(upper, offset + run.bytes)
                    if from < to {
                        let base = UnsafeRawPointer(bitPattern: run.address + UInt(from - offset))!
                        var x = 0
                        while x + 128 <= to - from {
                            a += base.loadUnaligned(fromByteOffset: x, as: SIMD16<Float>.self)
                            b += base.loadUnaligned(fromByteOffset: x + 64, as: SIMD16<Float>.self)
                            x += 128
                        }
                    }
                    offset += run.bytes
                }
                sums[part] = (a + b).sum()
            }
        }
    }
}
