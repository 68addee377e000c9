import Glibc
import Testing
@testable import Kernels
import VTensor

/// The tiled fp32 path (`CPUAttention.runTiled`, taken by `run` for fp32 K/V with a head dim a
/// multiple of 8) against the float64 reference of `HostBatch`.
@Suite struct CPUAttentionTiledTests {
    /// Largest |out - ref| over the largest |ref|: a bound on every element, at the output's scale.
    static func maxError(_ out: [Float], _ ref: [Double]) -> Double {
        var worst = 0.0, scale = 0.0
        for (o, r) in zip(out, ref) {
            worst = max(worst, abs(Double(o) - r))
            scale = max(scale, abs(r))
        }
        return worst / scale
    }

    /// Every kernel variant this CPU runs: plain C, then AVX2 and AVX-512 where present.
    static var variants: [CPUAttention.TiledKernels] {
        [.portable, .avx2, .avx512].filter { $0.rawValue <= CPUAttention.TiledKernels.available.rawValue }
    }

    /// Runs `batch` through `run` on 1 and 2 threads (2 threads also split long decodes' keys) and
    /// through every kernel variant on 2 threads, and checks each against the reference.
    static func check(_ batch: HostBatch, _ name: String) {
        let reference = batch.reference()
        var runs: [(String, [Float])] = [1, 2].map { ("\($0) threads", batch.runCPU(threads: $0)) }
        runs += variants.map { ("\($0) kernels", batch.runCPU(threads: 2, kernels: $0)) }
        for (label, out) in runs {
            #expect(!out.contains { !$0.isFinite }, "\(name), \(label): a non-finite output")
            let error = maxError(out, reference)
            #expect(error <= 2e-5, "\(name), \(label): max error \(error)")
        }
    }

    /// Random shapes: GQA groups 1/3/4/8, head dims 64/128 (and 40 and 8, whose last 8 dims take
    /// the narrow accumulate), sliding windows, large score scales (peaked softmax: the running max
    /// grows and most weights underflow), ragged batches of decode, extend and fresh prompts.
    @Test(arguments: 0..<12)
    func randomBatchesMatchTheReference(seed: Int) throws {
        var rng = SplitMix64(seed: UInt64(seed) &* 7919 &+ 17)
        func pick<T>(_ values: [T]) -> T { values[Int(rng.next() % UInt64(values.count))] }
        func between(_ low: Int, _ high: Int) -> Int { low + Int(rng.next() % UInt64(high - low + 1)) }
        let group = [1, 3, 4, 8][seed % 4]
        let kvHeads = pick([1, 2, 3])
        let headDim = seed == 5 ? 40 : seed == 11 ? 8 : pick([64, 128])
        let window: Int? = seed % 3 == 2 ? between(1, 90) : nil
        let scale: Float? = pick([nil, 2, 8])
        let p = AttentionParameters(queryHeads: group * kvHeads, kvHeads: kvHeads, headDim: headDim, dtype: .fp32,
                                    scale: scale, window: window)
        // Keep the float64 reference (a debug build) to about two million multiply-adds a batch.
        var shapes: [(length: Int, queries: Int)] = []
        var work = 0
        while shapes.count < 6 {
            let shape: (length: Int, queries: Int)
            switch rng.next() % 3 {
            case 0: shape = (between(1, 700), 1)                      // decode
            case 1: let length = between(2, 300); shape = (length, between(2, min(length, 40)))  // extend
            default: let length = between(1, 100); shape = (length, length)  // fresh prompt
            }
            let cost = shape.queries * min(shape.length, window ?? shape.length) * p.queryHeads * headDim
            if work + cost > 2_000_000 {
                if shapes.count >= 2 { break }
                continue
            }
            shapes.append(shape)
            work += cost
        }
        let batch = try HostBatch(p, shapes: shapes, seed: UInt64(seed + 100))
        Self.check(batch, "seed \(seed): \(p), shapes \(shapes)")
    }

    /// The CPU model's layout: 2 MiB chunks, so requests cross whole-chunk KV blocks (256 tokens
    /// here; the extend's rows straddle the first boundary).
    @Test func crossesTwoMiBBlocks() throws {
        let p = AttentionParameters(queryHeads: 4, kvHeads: 4, headDim: 128, dtype: .fp32)
        let batch = try HostBatch(p, shapes: [(600, 1), (300, 48), (520, 6)], seed: 5, chunkSize: 2 << 20)
        #expect(batch.requests[0].key.tokensPerBlock == 256)
        Self.check(batch, "2 MiB blocks")
    }

    /// Llama-3's groups of 8 at head dim 128: row tiles of 6 rows (48 vectors), the last of 13 rows a single row.
    @Test func groupsOfEight() throws {
        let p = AttentionParameters(queryHeads: 16, kvHeads: 2, headDim: 128, dtype: .fp32, scale: 2)
        Self.check(try HostBatch(p, shapes: [(100, 13), (40, 40), (300, 1)], seed: 9), "groups of 8")
    }

    /// More query heads a KV head than an item's 48 vectors: one row an item, 56 vectors (lanes
    /// over several register blocks, the last one part padding).
    @Test func groupsWiderThanAnItem() throws {
        let p = AttentionParameters(queryHeads: 56, kvHeads: 1, headDim: 8, dtype: .fp32, scale: 3)
        Self.check(try HostBatch(p, shapes: [(150, 5), (400, 1), (30, 30)], seed: 12), "groups of 56")
    }

    /// SmolLM2's shape: one decode row over 3 KV heads, long enough that 2 threads split its keys.
    @Test func longDecodeSplitsKeys() throws {
        let p = AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64, dtype: .fp32)
        Self.check(try HostBatch(p, shapes: [(2000, 1)], seed: 6), "decode 2000")
        let windowed = AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64, dtype: .fp32, window: 700)
        Self.check(try HostBatch(windowed, shapes: [(1500, 1), (900, 3), (40, 1)], seed: 7), "windowed decode")
    }

    /// A window narrower than a key tile inside a long prompt: most key tiles are hidden from
    /// some rows of a row tile and skipped for the whole tile.
    @Test func narrowWindowOverAPrompt() throws {
        let p = AttentionParameters(queryHeads: 6, kvHeads: 2, headDim: 64, dtype: .fp32, scale: 4, window: 5)
        Self.check(try HostBatch(p, shapes: [(260, 260), (300, 17)], seed: 8), "window 5")
    }

    /// The plain C kernels and the SIMD ones agree with each other, output by output, on batches
    /// that take every layout (few vectors: dot products; 8 or more: vectors in lanes), masks,
    /// windows and key splits. On a CPU with no SIMD variant there is nothing to compare.
    @Test func portableAndSIMDKernelsAgree() throws {
        let cases: [(AttentionParameters, [(length: Int, queries: Int)])] = [
            (AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64, dtype: .fp32), [(1500, 1), (200, 37), (90, 90)]),
            (AttentionParameters(queryHeads: 16, kvHeads: 2, headDim: 128, dtype: .fp32, scale: 2), [(300, 1), (120, 13)]),
            (AttentionParameters(queryHeads: 6, kvHeads: 2, headDim: 40, dtype: .fp32, scale: 8, window: 30), [(400, 1), (150, 70)]),
        ]
        for (n, (p, shapes)) in cases.enumerated() {
            let batch = try HostBatch(p, shapes: shapes, seed: UInt64(40 + n))
            let reference = batch.reference()
            let portable = batch.runCPU(threads: 2, kernels: .portable)
            for variant in Self.variants where variant != .portable {
                let simd = batch.runCPU(threads: 2, kernels: variant)
                let scale = reference.reduce(0) { max($0, abs($1)) }
                let worst = zip(portable, simd).reduce(0.0) { max($0, abs(Double($1.0) - Double($1.1))) } / scale
                #expect(worst <= 1e-5, "\(p), \(shapes): plain C and \(variant) differ by \(worst)")
            }
        }
    }

    /// The softmax's exp in every variant: relative error against Glibc's, and 0 far below the float range.
    @Test(arguments: CPUAttentionTiledTests.variants)
    func kernelExpIsAccurate(kernels: CPUAttention.TiledKernels) {
        var inputs: [Float] = []
        var x: Float = -87
        while x <= 1 {
            inputs.append(x)
            x += 0.0013
        }
        let result = CPUAttention.kernelExp(inputs, kernels: kernels)
        var worst: Double = 0
        for (input, value) in zip(inputs, result) {
            let exact = Glibc.exp(Double(input))
            worst = max(worst, abs(Double(value) - exact) / exact)
        }
        #expect(worst < 1e-6, "\(kernels): relative error \(worst)")
        // 19 values: the SIMD loops' tails are taken too.
        let tiny = CPUAttention.kernelExp([-.infinity, -1e30, -200, -104, -88, -87.7, 0, -0, 0, 0, 0, 0, 0, 0, 0, 0, -.infinity, 0, -.infinity],
                                          kernels: kernels)
        #expect(tiny == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0], "\(kernels): \(tiny)")
    }
}
