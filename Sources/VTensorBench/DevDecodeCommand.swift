import ArgumentParser
import CLICommon
import GPU
import Glibc
import Kernels
import VTensor

/// `vtensor dev decode`: decode attention and the KV write on the GPU, checked against the CPU
/// oracle (`CPUAttention`) on fresh random data, then timed against the read ceiling measured
/// in the same run, in virtual-tensor (blocked layout) and paged mode.
struct DevDecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "decode", abstract: "Decode attention: check against the CPU oracle and time.")

    @Option(help: "CUDA device ordinal.")
    var device: Int = 0

    @Option(name: .customLong("json-out"), help: "Write the results as JSON to this file.")
    var jsonOut: String?

    @Flag(help: "Skip the correctness checks.")
    var skipChecks = false

    @Flag(help: "Skip the timings.")
    var skipTiming = false

    @Option(help: "Only checks and timings whose name contains this.")
    var filter: String?

    @Option(help: "Timed runs per case (median reported).")
    var reps: Int = 30

    @Option(help: "Grid size in CTAs per multiprocessor (default: the kernel's launch bounds).")
    var ctasPerSm: Int?

    @Option(help: "Threads for the CPU oracle (default: all cores).")
    var oracleThreads: Int?

    @Option(help: "Kernel variant for head dim 128 as warps,subSteps,minBlocks[,qInShared 0|1] (default: the standard one).")
    var config128: String?

    @Option(help: "Kernel variant for head dim 64 as warps,subSteps,minBlocks[,qInShared 0|1].")
    var config64: String?

    @Option(help: "CTAs that keep DRAM busy, for the choice of whole pairs (0: always split; default: the SM count).")
    var saturatingCtas: Int?

    @Flag(help: "Also time the variants measured against the standard kernel (always split, no L2::256B hint, Q in shared memory with one more CTA per SM).")
    var ab = false

    func run() throws {
        if let reason = gpuUnavailableReason() { throw ValidationError(reason) }
        let gpu = try CUDAWork(device: device)
        let threads = oracleThreads ?? max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        print("device: \(gpu.name), \(gpu.context.device.multiprocessorCount) SMs, L2 \(mib(gpu.context.device.l2CacheBytes)), oracle threads \(threads)")
        func parse(_ text: String?) throws -> DecodeAttention.Config? {
            guard let text else { return nil }
            let parts = text.split(separator: ",").compactMap { Int($0) }
            guard (3...5).contains(parts.count) else { throw ValidationError("a config is warps,subSteps,minBlocks[,qInShared[,l2Prefetch]]") }
            return DecodeAttention.Config(warps: parts[0], subSteps: parts[1], minBlocks: parts[2], qInShared: parts.count >= 4 && parts[3] != 0,
                                          l2Prefetch: parts.count == 5 && parts[4] != 0)
        }
        let standard = DecodeBench.Variant(name: "standard", configs: [128: try parse(config128), 64: try parse(config64)].compactMapValues { $0 },
                                           saturatingCTAs: saturatingCtas)
        var variants = [standard]
        if ab {
            func with(_ change: (inout DecodeAttention.Config) -> Void) -> [Int: DecodeAttention.Config] {
                Dictionary(uniqueKeysWithValues: [64, 128].map { d in
                    var c = standard.configs[d] ?? .standard(headDim: d)
                    change(&c)
                    return (d, c)
                })
            }
            variants += [
                .init(name: "always split", configs: standard.configs, saturatingCTAs: 0),
                .init(name: "no L2::256B", configs: with { $0.l2Prefetch = false }, saturatingCTAs: saturatingCtas),
                .init(name: "Q smem, +1 CTA/SM", configs: with { $0.qInShared = true; $0.minBlocks += 1 }, saturatingCTAs: saturatingCtas),
            ]
        }
        let bench = DecodeBench(gpu: gpu, reps: reps, ctasPerSM: ctasPerSm, oracleThreads: threads, filter: filter, variants: variants)
        for v in variants { print("variant \(v.name): \(v.configs.map { "d\($0.key): \($0.value)" }.joined(separator: ", ")), saturating CTAs \(v.saturatingCTAs.map(String.init) ?? "SMs")") }
        var report = DecodeReport(date: todayUTC(), device: gpu.name, multiprocessors: gpu.context.device.multiprocessorCount)
        if !skipChecks {
            report.checks = bench.runChecks()
        }
        if !skipTiming {
            do {
                try bench.runTimings(into: &report, cases: filter == nil ? DecodeBench.timingCases : DecodeBench.sweepCases)
            } catch {
                print("FAIL  timing: \(error)")
                report.checks.append(.init(name: "timing", passed: false, detail: String(describing: error)))
            }
        }
        if let jsonOut { try writeFile(jsonOut, try jsonString(report)) }
        let failed = report.checks.filter { !$0.passed }.count
        print("\(report.checks.count - failed) checks passed, \(failed) failed")
        if failed > 0 { throw ExitCode(1) }
    }
}

struct DecodeReport: Codable {
    struct Check: Codable {
        var name: String
        var passed: Bool
        var detail: String
    }

    struct Timing: Codable {
        var model: String
        var heads: String
        var batch: Int
        var length: Int
        var ragged: Bool
        var layout: String
        var mode: String
        var variant: String
        var layersInCache: Int
        var tokensPerBlock: Int
        var kvBytes: Int
        var millis: Double
        var tbps: Double
        var fractionOfCeiling: Double
        var ctas: Int
        var splitPairs: Int
        var pairs: Int
        var wholePairs: Bool
        var anchorCuDNN: Double?
        var anchorVLLMPaged: Double?
        var note: String?
    }

    var date: String
    var device: String
    var multiprocessors: Int
    var readCeilingTBps: Double = 0
    var checks: [Check] = []
    var timings: [Timing] = []
}

/// One correctness case: a model shape, a batch and the checks run on it.
struct DecodeCheckCase {
    var name: String
    var parameters: AttentionParameters
    var layers: Int
    var layer: Int
    var lengths: [Int]
    var queryCounts: [Int]
    var pageTokens: Int?
    var queryAmplitude: Float = 2
    var allPlans = true
    var layout: KVLayoutKind = .blocked
    /// Requests come in groups of `groupSize`: each member but the first starts as a fork of the
    /// first's `sharedTokens` tokens (aliased chunks; paged: the same pages), and decode reads
    /// them once per tile of members (shared-prefix decode). 0: nothing shared.
    var sharedTokens = 0
    var groupSize = 1
}

final class DecodeBench {
    let gpu: CUDAWork
    let reps: Int
    let ctasPerSM: Int?
    let oracleThreads: Int
    let filter: String?
    var rng = SplitMix64(seed: 0xDEC0DE)
    var writers: [Bool: KVWriteKernel] = [:]
    var results: [DecodeReport.Check] = []

    /// A kernel configuration and scheduling policy to time.
    struct Variant {
        var name: String
        var configs: [Int: DecodeAttention.Config]
        var saturatingCTAs: Int?
    }

    let variants: [Variant]
    var configs: [Int: DecodeAttention.Config] { variants[0].configs }

    func make(_ p: AttentionParameters, paged: Bool, _ variant: Variant) throws -> DecodeAttention {
        let decode = try DecodeAttention(compiler: gpu.compiler, parameters: p, paged: paged, config: variant.configs[p.headDim])
        if let s = variant.saturatingCTAs { decode.saturatingCTAs = s }
        return decode
    }

    init(gpu: CUDAWork, reps: Int, ctasPerSM: Int?, oracleThreads: Int, filter: String?, variants: [Variant]) {
        self.variants = variants
        self.gpu = gpu
        self.reps = reps
        self.ctasPerSM = ctasPerSM
        self.oracleThreads = oracleThreads
        self.filter = filter
    }

    var context: CUDAContext { gpu.context }
    var stream: CUDAStream { gpu.stream }

    func writer(paged: Bool) throws -> KVWriteKernel {
        if let w = writers[paged] { return w }
        let w = try KVWriteKernel(compiler: gpu.compiler, paged: paged)
        writers[paged] = w
        return w
    }

    func maxCTAs(_ decode: DecodeAttention) -> Int? { ctasPerSM.map { $0 * decode.multiprocessors } }

    func record(_ name: String, _ body: () throws -> String) {
        do {
            let detail = try body()
            results.append(.init(name: name, passed: true, detail: detail))
            print("PASS  \(name): \(detail)")
        } catch {
            results.append(.init(name: name, passed: false, detail: String(describing: error)))
            print("FAIL  \(name): \(error)")
        }
    }

    // MARK: Checks

    static let llama3 = AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128)
    static let yi34 = AttentionParameters(queryHeads: 56, kvHeads: 8, headDim: 128)
    static let llama2 = AttentionParameters(queryHeads: 32, kvHeads: 32, headDim: 128)
    static let smol = AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64)

    static var checkCases: [DecodeCheckCase] {
        func with(_ p: AttentionParameters, dtype: KVDType = .bf16, window: Int? = nil) -> AttentionParameters {
            AttentionParameters(queryHeads: p.queryHeads, kvHeads: p.kvHeads, headDim: p.headDim, dtype: dtype, window: window)
        }
        let ragged = [1, 2, 15, 16, 17, 63, 100, 777, 1000, 1500, 3001, 4097]
        return [
            DecodeCheckCase(name: "llama3-8b bf16 32/8 d128 ragged", parameters: llama3, layers: 32, layer: 5,
                            lengths: ragged, queryCounts: ragged.map { _ in 1 }, pageTokens: 16),
            DecodeCheckCase(name: "llama3-8b fp16 32/8 d128 peaked scores", parameters: with(llama3, dtype: .fp16), layers: 32, layer: 31,
                            lengths: [3, 700, 2049], queryCounts: [1, 1, 1], pageTokens: 32, queryAmplitude: 12),
            DecodeCheckCase(name: "yi-34b bf16 56/8 (group 7) d128", parameters: yi34, layers: 60, layer: 59,
                            lengths: [1, 7, 33, 129, 2500, 4096], queryCounts: [1, 1, 1, 1, 1, 1], pageTokens: 5),
            DecodeCheckCase(name: "smollm2 bf16 9/3 (group 3) d64", parameters: smol, layers: 30, layer: 1,
                            lengths: [1, 90, 91, 92, 182, 1500, 2049], queryCounts: [1, 1, 1, 1, 1, 1, 1], pageTokens: 16),
            DecodeCheckCase(name: "smollm2 fp16 9/3 d64", parameters: with(smol, dtype: .fp16), layers: 30, layer: 0,
                            lengths: [5, 333, 1001], queryCounts: [1, 1, 1], pageTokens: 1),
            DecodeCheckCase(name: "llama2-7b fp16 32/32 (group 1) d128", parameters: with(llama2, dtype: .fp16), layers: 32, layer: 3,
                            lengths: [5, 300, 1025], queryCounts: [1, 1, 1], pageTokens: 16),
            DecodeCheckCase(name: "llama3-8b bf16 window 100", parameters: with(llama3, window: 100), layers: 32, layer: 2,
                            lengths: [1, 50, 100, 101, 1000, 3000], queryCounts: [1, 1, 1, 1, 1, 1], pageTokens: 16),
            DecodeCheckCase(name: "mqa fp16 20/1 (group 20: two head blocks) d64 window 1",
                            parameters: AttentionParameters(queryHeads: 20, kvHeads: 1, headDim: 64, dtype: .fp16, window: 1),
                            layers: 4, layer: 3, lengths: [1, 2, 77], queryCounts: [1, 1, 1], pageTokens: 16),
            DecodeCheckCase(name: "mqa bf16 20/1 d64", parameters: AttentionParameters(queryHeads: 20, kvHeads: 1, headDim: 64),
                            layers: 4, layer: 0, lengths: [1, 2, 777, 3000], queryCounts: [1, 1, 1, 1], pageTokens: 16),
            DecodeCheckCase(name: "llama3-8b bf16 extend (several queries a request)", parameters: llama3, layers: 32, layer: 7,
                            lengths: [10, 200, 1000, 7, 64], queryCounts: [1, 3, 5, 7, 64], pageTokens: 16),
            DecodeCheckCase(name: "yi-34b bf16 extend window 64", parameters: with(yi34, window: 64), layers: 60, layer: 4,
                            lengths: [10, 200, 1000], queryCounts: [2, 17, 3], pageTokens: 16),
            DecodeCheckCase(name: "llama3-8b bf16 32 x 4096", parameters: llama3, layers: 32, layer: 9,
                            lengths: Array(repeating: 4096, count: 32), queryCounts: Array(repeating: 1, count: 32), pageTokens: 16),
            DecodeCheckCase(name: "llama3-8b bf16 ragged, per-layer layout (1024 tokens a chunk)", parameters: llama3, layers: 32, layer: 6,
                            lengths: [1, 17, 1023, 1024, 1025, 3001], queryCounts: [1, 1, 1, 1, 1, 3], pageTokens: nil, layout: .perLayer),
            DecodeCheckCase(name: "yi-34b bf16 ragged, per-token layout (128 KiB token stride)", parameters: yi34, layers: 60, layer: 31,
                            lengths: [1, 8, 9, 100, 2049], queryCounts: [1, 1, 1, 1, 1], pageTokens: nil, layout: .perToken),
            // Shared-prefix decode (tiles): groups sharing their first keys as one copy.
            DecodeCheckCase(name: "llama3-8b bf16 shared prefix, groups of 5 on 1024 keys", parameters: llama3, layers: 32, layer: 4,
                            lengths: [1100, 1025, 2000, 1500, 1030, 1300, 1024 + 17, 1090, 1400, 3000, 1111], queryCounts: Array(repeating: 1, count: 11),
                            pageTokens: 16, sharedTokens: 1024, groupSize: 5),
            DecodeCheckCase(name: "smollm2 fp16 9/3 (group 3) shared prefix, groups of 6 on 182 keys", parameters: with(smol, dtype: .fp16), layers: 30,
                            layer: 2, lengths: [200, 183, 400, 190, 1000, 250, 185, 200], queryCounts: Array(repeating: 1, count: 8),
                            pageTokens: 91, sharedTokens: 182, groupSize: 6),
            DecodeCheckCase(name: "llama2-7b fp16 32/32 (group 1) shared prefix, 16 on 512 keys", parameters: with(llama2, dtype: .fp16), layers: 32,
                            layer: 1, lengths: (0..<18).map { 513 + 37 * $0 }, queryCounts: Array(repeating: 1, count: 18),
                            pageTokens: 16, sharedTokens: 512, groupSize: 18),
        ]
    }

    func runChecks() -> [DecodeReport.Check] {
        for c in Self.checkCases where filter.map({ c.name.contains($0) }) ?? true {
            do {
                try check(c)
            } catch {
                record(c.name) { throw error }
            }
        }
        return results
    }

    /// Random finite 16-bit values, uniform in [-amplitude, amplitude).
    func randomHalfs(_ count: Int, dtype: KVDType, amplitude: Float = 1) -> [UInt16] {
        var out = [UInt16](repeating: 0, count: count)
        for i in 0..<count {
            let x = (Float(rng.next() >> 40) / Float(1 << 24) * 2 - 1) * amplitude
            out[i] = dtype == .bf16 ? HalfFloat.floatToBF16(x) : HalfFloat.floatToFP16(x)
        }
        return out
    }

    func upload(_ values: [UInt16]) throws -> DeviceBuffer {
        let buffer = try DeviceBuffer(context: context, bytes: max(16, values.count * 2))
        try context.copyHostToDevice(destination: buffer.address, from: values)
        return buffer
    }

    func check(_ c: DecodeCheckCase) throws {
        let p = c.parameters
        let shape = KVShape(layers: c.layers, kvHeads: p.kvHeads, headDim: p.headDim, dtype: p.dtype)
        let layout = try KVLayout(c.layout, shape: shape, chunkSize: gpu.cuda.chunkSize)
        let maxLength = c.lengths.max()!
        let chunks = c.lengths.reduce(0) { $0 + layout.rangesPerRequest * layout.chunks(forTokens: $1) } + 8
        let chunk = gpu.cuda.chunkSize
        let rowElements = p.kvHeads * p.headDim
        let rowBytes = rowElements * p.dtype.bytes

        // The same requests in a host cache (for the oracle) and a GPU cache.
        let host = try HostBackend(chunkSize: chunk, capacityBytes: (chunks + 8) * chunk)
        let hostMemory = try VirtualMemory(backend: host, budget: .bytes((chunks + 8) * chunk), lowWatermark: 0, highWatermark: 0)
        let hostCache = try KVCache(shape: shape, layout: c.layout, memory: hostMemory, maxTokensPerRequest: maxLength)
        let gpuMemory = try VirtualMemory(backend: gpu.cuda, budget: .bytes((chunks + 8) * chunk), lowWatermark: 0, highWatermark: 0)
        let gpuCache = try KVCache(shape: shape, layout: c.layout, memory: gpuMemory, maxTokensPerRequest: maxLength)
        defer {
            for id in 0..<c.lengths.count { try? gpuCache.free(id); try? hostCache.free(id) }
            try? gpuMemory.drain()
            try? hostMemory.drain()
        }
        // A group member's first keys are its leader's (a fork: aliased chunks); it writes only its own.
        let leaderOf = c.lengths.indices.map { $0 - $0 % max(1, c.groupSize) }
        let sharedFrom = c.lengths.indices.map { c.sharedTokens > 0 && leaderOf[$0] != $0 ? c.sharedTokens : 0 }
        precondition(c.sharedTokens % layout.tokensPerChunk == 0 && c.sharedTokens % (c.pageTokens ?? 1) == 0
                     && c.lengths.indices.allSatisfy { c.lengths[$0] - c.queryCounts[$0] >= sharedFrom[$0] }, "shared keys are whole chunks and pages of every prefix")
        for (id, n) in c.lengths.enumerated() {
            for cache in [hostCache, gpuCache] {
                if sharedFrom[id] > 0 { try cache.fork(from: leaderOf[id], prefix: sharedFrom[id], into: id) } else { try cache.addRequest(id) }
                try cache.reserve(id, tokens: n)
                try cache.setLength(id, n)
            }
        }

        // Rows: the prefix (positions 0 ..< L - q, written as a prefill; a member's from its
        // shared keys on) and the step (the last q positions, written as a decode or extend
        // step), both fresh random data.
        let prefixCounts = zip(c.lengths, c.queryCounts).map { $0 - $1 }
        let prefixRows = zip(prefixCounts, sharedFrom).reduce(0) { $0 + $1.0 - $1.1 }
        let stepRows = c.queryCounts.reduce(0, +)
        let prefixK = randomHalfs(prefixRows * rowElements, dtype: p.dtype)
        let prefixV = randomHalfs(prefixRows * rowElements, dtype: p.dtype)
        let stepK = randomHalfs(stepRows * rowElements, dtype: p.dtype)
        let stepV = randomHalfs(stepRows * rowElements, dtype: p.dtype)
        let queries = randomHalfs(stepRows * p.queryHeads * p.headDim, dtype: p.dtype, amplitude: c.queryAmplitude)

        func requests(_ cache: KVCache, step: Bool) throws -> [AttentionRequest] {
            var start = 0
            return try c.lengths.indices.map { id in
                var k = try cache.view(id, layer: c.layer, component: .key)
                var v = try cache.view(id, layer: c.layer, component: .value)
                let count = step ? c.queryCounts[id] : prefixCounts[id] - sharedFrom[id]
                if !step { k.length = prefixCounts[id]; v.length = prefixCounts[id] }
                defer { start += count }
                return AttentionRequest(key: k, value: v, queryStart: start, queryCount: count)
            }
        }
        let hostPrefix = try requests(hostCache, step: false), hostStep = try requests(hostCache, step: true)
        let gpuPrefix = try requests(gpuCache, step: false), gpuStep = try requests(gpuCache, step: true)

        prefixK.withUnsafeBytes { k in prefixV.withUnsafeBytes { v in
            CPUAttention.writeKV(p, requests: hostPrefix, keys: k.baseAddress!, values: v.baseAddress!)
        } }
        stepK.withUnsafeBytes { k in stepV.withUnsafeBytes { v in
            CPUAttention.writeKV(p, requests: hostStep, keys: k.baseAddress!, values: v.baseAddress!)
        } }
        let dPrefixK = try upload(prefixK), dPrefixV = try upload(prefixV)
        let dStepK = try upload(stepK), dStepV = try upload(stepV)
        let dQueries = try upload(queries)
        let outputBytes = stepRows * p.queryHeads * p.headDim * 2
        let dOutput = try DeviceBuffer(context: context, bytes: max(16, outputBytes))

        try context.makeCurrent()
        let write = try writer(paged: false)
        try write.write(p, requests: gpuPrefix, keys: dPrefixK.address, values: dPrefixV.address, stream: stream)
        try write.write(p, requests: gpuStep, keys: dStepK.address, values: dStepV.address, stream: stream)
        try stream.synchronize()

        // KV write, exact: sampled token rows of the GPU cache equal the host cache's.
        var sampled: [(request: Int, token: Int)] = []
        for (id, n) in c.lengths.enumerated() {
            var tokens = Set([0, n - 1, n / 2, prefixCounts[id] < n ? prefixCounts[id] : 0])
            tokens.insert(Int(rng.next() % UInt64(n)))
            for t in tokens.sorted() { sampled.append((id, t)) }
        }
        record("\(c.name): KV write (virtual)") {
            var bad = 0
            for (id, t) in sampled {
                for (g, h) in zip([gpuStep[id].key, gpuStep[id].value], [hostStep[id].key, hostStep[id].value]) {
                    let got = try context.copyDeviceToHost(source: g.address(token: t, head: 0), count: rowBytes, as: UInt8.self)
                    let want = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt(h.address(token: t, head: 0)))!, count: rowBytes)
                    bad += zip(got, want).filter { $0 != $1 }.count
                }
            }
            try require(bad == 0, "\(bad) bytes differ in \(sampled.count) sampled token rows (K and V)")
            return "\(sampled.count) token rows x K,V identical (prefill + \(stepRows)-row step write)"
        }

        // The oracle.
        var reference = [UInt16](repeating: 0, count: stepRows * p.queryHeads * p.headDim)
        queries.withUnsafeBytes { q in reference.withUnsafeMutableBytes { o in
            CPUAttention.run(p, requests: hostStep, queries: q.baseAddress!, output: o.baseAddress!, threads: oracleThreads)
        } }

        let decode = try make(p, paged: false, variants[0])
        let saturating = decode.saturatingCTAs
        // Tiles from the GPU cache's chunk identities, as the model plans them.
        let tiles = c.sharedTokens == 0 ? [] : DecodeSchedule.sharedPrefixTiles(
            blocks: try gpuCache.sharedChunkIdentities(Array(c.lengths.indices)),
            requests: zip(c.lengths, c.queryCounts).map { .init(length: $0, queryStart: 0, queryCount: $1) },
            tokensPerBlock: layout.tokensPerChunk, membersPerTile: decode.membersPerTile, minTokens: 16)
        if c.sharedTokens > 0 {
            record("\(c.name): tiles") {
                let members = tiles.reduce(0) { $0 + $1.requests.count }
                try require(!tiles.isEmpty || decode.membersPerTile == 1, "no tiles for requests that share \(c.sharedTokens) keys")
                return "\(tiles.count) tiles (\(members) requests, \(decode.membersPerTile) at most a tile) on \(tiles.map(\.tokens)) shared keys"
            }
        }
        // The grid as the launcher plans it (whole pairs where that is chosen), the grid always
        // split, 16-key CTAs (many splits), one CTA (every pair whole, in sequence).
        let plans: [(String, Int?, Int?, Int)] = c.allPlans
            ? [("grid", maxCTAs(decode), nil, saturating), ("grid, split", maxCTAs(decode), nil, 0), ("16-key CTAs", 1 << 20, 16, 0),
               ("one CTA", 1, nil, 0)]
            : [("grid", maxCTAs(decode), nil, saturating)]
        for (planName, ctas, minTokens, saturation) in plans {
            for tiled in tiles.isEmpty ? [false] : [false, true] {
                record("\(c.name): decode (virtual, \(planName)\(tiled ? ", shared-prefix tiles" : ""))") {
                    decode.saturatingCTAs = saturation
                    let batch = try decode.prepare(gpuStep, stream: stream, maxCTAs: ctas, minTokensPerCTA: minTokens, sharedPrefixes: tiled ? tiles : [])
                    try require(!tiled || batch.schedule.tiles == tiles.count, "the plan took \(batch.schedule.tiles) of \(tiles.count) tiles")
                    let out = try runAndRead(decode, batch: batch, queries: dQueries, output: dOutput, count: reference.count)
                    return try compare(out, reference, p: p, requests: gpuStep, plan: batch.schedule)
                }
            }
        }

        // Paged: the same rows through block tables into shuffled pages.
        guard let pageTokens = c.pageTokens else { return }
        let pagesPer = c.lengths.map { ($0 + pageTokens - 1) / pageTokens }
        let pageCount = pagesPer.reduce(0, +) + 3
        var order = Array(0..<pageCount)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        var tables: [[Int32]] = []
        var next = 0
        for (id, n) in pagesPer.enumerated() {
            // A group member's table starts with its leader's pages for the shared keys.
            let shared = sharedFrom[id] / pageTokens
            tables.append(Array(tables.indices.contains(leaderOf[id]) ? tables[leaderOf[id]].prefix(shared) : [])
                          + order[next..<(next + n - shared)].map { Int32($0) })
            next += n - shared
        }
        let poolBytes = pageCount * pageTokens * rowBytes
        let kPool = try DeviceBuffer(context: context, bytes: poolBytes)
        let vPool = try DeviceBuffer(context: context, bytes: poolBytes)
        let pool = PagedKVPool(keys: kPool.address, values: vPool.address, pages: pageCount, pageTokens: pageTokens,
                               kvHeads: p.kvHeads, headDim: p.headDim, dtype: p.dtype)
        let tableBuffer = try DeviceBuffer(context: context, bytes: max(16, pagesPer.reduce(0, +) * 4))
        try context.copyHostToDevice(destination: tableBuffer.address, from: tables.flatMap { $0 })
        var tableAddresses: [UInt64] = []
        var offset = 0
        for n in pagesPer { tableAddresses.append(tableBuffer.address + UInt64(4 * offset)); offset += n }
        func pagedRequests(step: Bool) -> [PagedRequest] {
            var start = 0
            return c.lengths.indices.map { id in
                let count = step ? c.queryCounts[id] : prefixCounts[id] - sharedFrom[id]
                defer { start += count }
                return PagedRequest(blockTable: tableAddresses[id], length: step ? c.lengths[id] : prefixCounts[id],
                                    queryStart: start, queryCount: count)
            }
        }
        let pagedStep = pagedRequests(step: true)
        let pagedWrite = try writer(paged: true)
        try pagedWrite.write(p, requests: pagedRequests(step: false), pool: pool, keys: dPrefixK.address, values: dPrefixV.address, stream: stream)
        try pagedWrite.write(p, requests: pagedStep, pool: pool, keys: dStepK.address, values: dStepV.address, stream: stream)
        try stream.synchronize()
        record("\(c.name): KV write (paged, \(pageTokens)-token pages)") {
            var bad = 0
            for (id, t) in sampled {
                let at = pool.offset(token: t, head: 0, table: tables[id])
                for (base, h) in [(pool.keys, hostStep[id].key), (pool.values, hostStep[id].value)] {
                    let got = try context.copyDeviceToHost(source: base + UInt64(at), count: rowBytes, as: UInt8.self)
                    let want = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt(h.address(token: t, head: 0)))!, count: rowBytes)
                    bad += zip(got, want).filter { $0 != $1 }.count
                }
            }
            try require(bad == 0, "\(bad) bytes differ in \(sampled.count) sampled token rows")
            return "\(sampled.count) token rows x K,V identical"
        }
        let pagedDecode = try make(p, paged: true, variants[0])
        let pagedTiles = c.sharedTokens == 0 ? [] : DecodeSchedule.sharedPrefixTiles(
            blocks: tables.enumerated().map { id, pages in PagedKVCache.sharedPageIdentities(pages, length: c.lengths[id] - 1, pageTokens: pageTokens) },
            requests: zip(c.lengths, c.queryCounts).map { .init(length: $0, queryStart: 0, queryCount: $1) },
            tokensPerBlock: pageTokens, membersPerTile: pagedDecode.membersPerTile, minTokens: 16)
        for (planName, ctas, minTokens, saturation) in plans.prefix(3) {
            for tiled in pagedTiles.isEmpty ? [false] : [false, true] {
                record("\(c.name): decode (paged, \(pageTokens)-token pages, \(planName)\(tiled ? ", shared-prefix tiles" : ""))") {
                    pagedDecode.saturatingCTAs = saturation
                    let batch = try pagedDecode.prepare(pagedStep, pool: pool, stream: stream, maxCTAs: ctas, minTokensPerCTA: minTokens,
                                                        sharedPrefixes: tiled ? pagedTiles : [])
                    let out = try runAndRead(pagedDecode, batch: batch, queries: dQueries, output: dOutput, count: reference.count)
                    return try compare(out, reference, p: p, requests: gpuStep, plan: batch.schedule)
                }
            }
        }
    }

    /// Poisons the output (all bits set: NaN in bf16 and fp16), runs, reads back.
    func runAndRead(_ decode: DecodeAttention, batch: DecodeBatch, queries: DeviceBuffer, output: DeviceBuffer, count: Int) throws -> [UInt16] {
        try context.makeCurrent()
        try context.memset8Async(destination: output.address, value: 0xFF, bytes: count * 2, stream: stream)
        try decode.run(batch, queries: queries.address, output: output.address, stream: stream)
        try stream.synchronize()
        return try context.copyDeviceToHost(source: output.address, count: count, as: UInt16.self)
    }

    /// Norm-wise relative error per (query row, head) and overall; fails on any non-finite
    /// output or an error of 1e-2 or more.
    func compare(_ out: [UInt16], _ ref: [UInt16], p: AttentionParameters, requests: [AttentionRequest], plan: DecodeSchedule) throws -> String {
        let d = p.headDim
        func value(_ bits: UInt16) -> Double { Double(p.dtype == .bf16 ? HalfFloat.bf16ToFloat(bits) : HalfFloat.fp16ToFloat(bits)) }
        var errorSquares = 0.0, refSquares = 0.0, worst = 0.0, nonFinite = 0
        var worstAt = ""
        var firstBad: String?
        for (r, request) in requests.enumerated() {
            for i in 0..<request.queryCount {
                let row = request.queryStart + i
                for h in 0..<p.queryHeads {
                    let base = (row * p.queryHeads + h) * d
                    var e2 = 0.0, r2 = 0.0
                    var wrongDims: [Int] = []
                    for x in 0..<d {
                        let o = value(out[base + x]), want = value(ref[base + x])
                        if !o.isFinite { nonFinite += 1 }
                        e2 += (o - want) * (o - want)
                        r2 += want * want
                        if !(abs(o - want) <= 0.05 * max(abs(want), 0.05)) && wrongDims.count < 12 { wrongDims.append(x) }
                    }
                    errorSquares += e2
                    refSquares += r2
                    let rel = (e2 / max(r2, 1e-30)).squareRoot()
                    if !(rel <= worst) || worstAt.isEmpty {
                        worst = rel.isNaN ? .infinity : rel
                        worstAt = "request \(r) (length \(request.length)) query \(i) head \(h)"
                    }
                    if !(rel < 1e-2) && firstBad == nil {
                        let sample = (0..<min(d, 6)).map { "\(fixed(value(out[base + $0]), 4))/\(fixed(value(ref[base + $0]), 4))" }
                        firstBad = "first bad: request \(r) (length \(request.length)) query \(i) head \(h): rel \(fixed(rel, 4)), "
                            + "dims off \(wrongDims), got/want \(sample.joined(separator: " "))"
                    }
                }
            }
        }
        let overall = (errorSquares / max(refSquares, 1e-30)).squareRoot()
        let summary = "overall rel err \(Self.sci(overall)), worst (row, head) \(Self.sci(worst)) at \(worstAt); \(plan.ctas) CTAs, "
            + "\(plan.items.count) items, " + (plan.wholePairs ? "\(plan.pairs) whole pairs" : "\(plan.splitPairs)/\(plan.pairs) pairs split")
        try require(nonFinite == 0 && overall < 1e-2 && worst < 1e-2,
                    "\(nonFinite) non-finite outputs; " + summary + (firstBad.map { "; " + $0 } ?? ""))
        return summary
    }

    // MARK: Timing

    struct TimingCase {
        var model: String
        var parameters: AttentionParameters
        var layers: Int
        var batch: Int
        var length: Int
        var cuDNN: Double?
        var vllm: Double?
        /// Lengths drawn evenly from [length/4, length] instead of all equal.
        var ragged = false
        var layout: KVLayoutKind = .blocked
        /// Also time the paged baseline on this shape.
        var paged = true
        /// Requests come in groups of `groupSize` whose first `sharedPrefix` tokens are the same
        /// K/V: one physical copy (vTensor: the leader's chunks aliased by a fork; paged: the
        /// leader's pages in every member's block table), as the prefix cache leaves them.
        var sharedPrefix = 0
        var groupSize = 16

        var label: String {
            "\(batch) x \(length)" + (ragged ? " ragged" : "") + (sharedPrefix > 0 ? " (\(sharedPrefix) shared by \(groupSize))" : "")
        }

        /// Each request's KV length.
        var lengths: [Int] {
            guard ragged else { return Array(repeating: length, count: batch) }
            // Deterministic spread over [length/4, length]: a varied, repeatable batch.
            return (0..<batch).map { i in length / 4 + (3 * length / 4) * ((i * 7919) % batch) / max(1, batch - 1) }
        }
    }

    /// `bench attention`'s sweep (issue 3): Llama-3-8B decode over batch 1..256 and context
    /// 512..32k, equal and ragged, the other layouts at 32 x 4k, and the anchors' shapes.
    static var sweepCases: [TimingCase] {
        var cases: [TimingCase] = []
        for batch in [1, 16, 64, 256] {
            for length in [512, 4096, 32768] {
                let anchor = timingCases.first { $0.model == "Llama-3-8B" && $0.batch == batch && $0.length == length }
                cases.append(TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: batch, length: length,
                                        cuDNN: anchor?.cuDNN, vllm: anchor?.vllm))
            }
        }
        cases += [
            TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 64, length: 4096, cuDNN: nil, vllm: nil, ragged: true),
            TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 256, length: 2048, cuDNN: nil, vllm: nil, ragged: true),
            TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 32, length: 4096, cuDNN: 2.81, vllm: 1.14, layout: .perLayer, paged: false),
            TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 32, length: 4096, cuDNN: 2.81, vllm: 1.14, layout: .perToken, paged: false),
            // Issue 12's shared-prefix decode: 16 groups of 16 on a 2,048-token system prompt,
            // 256 tokens each of their own, against the same shape with nothing shared.
            TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 256, length: 2304, cuDNN: nil, vllm: nil),
            TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 256, length: 2304, cuDNN: nil, vllm: nil, sharedPrefix: 2048),
        ]
        return cases + timingCases
    }

    static let timingCases: [TimingCase] = [
        TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 8, length: 1024, cuDNN: 1.29, vllm: 0.64),
        TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 32, length: 4096, cuDNN: 2.81, vllm: 1.14),
        TimingCase(model: "Llama-3-8B", parameters: llama3, layers: 32, batch: 128, length: 16384, cuDNN: 3.07, vllm: 1.25),
        TimingCase(model: "Yi-34B", parameters: yi34, layers: 60, batch: 32, length: 4096, cuDNN: 2.81, vllm: 0.71),
        TimingCase(model: "Llama-2-7B", parameters: llama2, layers: 32, batch: 32, length: 4096, cuDNN: 3.02, vllm: 2.77),
        TimingCase(model: "SmolLM2-135M", parameters: smol, layers: 30, batch: 64, length: 2048, cuDNN: nil, vllm: nil),
    ]

    func runTimings(into report: inout DecodeReport, cases: [TimingCase] = DecodeBench.timingCases) throws {
        try context.makeCurrent()
        // The read ceiling: the plain-allocation read of `bench vmm` (1 GiB of 2 KiB rows).
        let ceiling = try VMMBench.readCeilingTBps(device: gpu)
        report.readCeilingTBps = ceiling
        print("read ceiling (plain 1 GiB read, kvRead): \(fixed(ceiling, 3)) TB/s")
        var table = Table(title: "Decode attention, \(gpu.name), median of \(reps) (CUDA events, layers rotated)",
                          header: ["model", "B x L", "mode", "variant", "ms", "TB/s", "of ceiling", "cuDNN", "vLLM paged", "CTAs", "split", "note"])
        for c in cases {
            let name = "\(c.model) \(c.label)"
            if let filter, !name.contains(filter) { continue }
            do {
                for timing in try time(c, ceiling: ceiling) {
                    report.timings.append(timing)
                    table.add([c.model, c.label, timing.mode, timing.variant, fixed(timing.millis, 4), fixed(timing.tbps, 3),
                               fixed(timing.fractionOfCeiling, 3), c.cuDNN.map { fixed($0, 2) } ?? "-", c.vllm.map { fixed($0, 2) } ?? "-",
                               "\(timing.ctas)", timing.wholePairs ? "whole" : "\(timing.splitPairs)/\(timing.pairs)", timing.note ?? ""])
                }
            } catch {
                print("  \(name): \(error)")
                table.add([c.model, c.label, "skipped", "", "", "", "", "", "", "", "", String(describing: error)])
            }
        }
        print(table.render())
    }

    /// Times one shape in vTensor mode (a real KV cache, blocked layout) and paged mode.
    func time(_ c: TimingCase, ceiling: Double) throws -> [DecodeReport.Timing] {
        let p = c.parameters
        let layerBytes = c.batch * c.length * p.kvHeads * p.headDim * 2 * p.dtype.bytes  // K and V of one layer
        let chunk = gpu.cuda.chunkSize
        let free = try context.memoryInfo().free
        // All layers when they fit in 70% of free memory; else fewer layers (noted).
        var layers = c.layers
        while layers > 2 && layers * layerBytes + c.batch * 2 * chunk > free * 7 / 10 { layers -= 1 }
        guard layers * layerBytes + c.batch * 2 * chunk <= free * 7 / 10 else {
            throw CheckFailed("\(gib(2 * layerBytes)) of KV for two layers does not fit \(gib(free)) free")
        }
        let rotation = min(layers, max(2, (3 * context.device.l2CacheBytes + layerBytes - 1) / layerBytes))
        let shape = KVShape(layers: layers, kvHeads: p.kvHeads, headDim: p.headDim, dtype: p.dtype)
        let layout = try KVLayout(c.layout, shape: shape, chunkSize: chunk)
        let lengths = c.lengths
        let notes = [layers < c.layers ? "cache of \(layers) of \(c.layers) layers (\(layout.tokensPerChunk) tokens/chunk)" : nil,
                     c.sharedPrefix > 0 ? "TB/s counts every request's keys; the shared ones are one copy a group" : nil].compactMap { $0 }
        let note = notes.isEmpty ? nil : notes.joined(separator: "; ")
        print("timing \(c.model) \(c.label) (\(c.layout.rawValue)): \(layers) layers in the cache, \(layout.tokensPerChunk) tokens/chunk, rotating \(rotation) layers")

        let write = try writer(paged: false)
        let queries = try DeviceBuffer(context: context, bytes: c.batch * p.queryHeads * p.headDim * 2)
        let output = try DeviceBuffer(context: context, bytes: c.batch * p.queryHeads * p.headDim * 2)
        try write.fillRandom(address: queries.address, count: c.batch * p.queryHeads * p.headDim, dtype: p.dtype, seed: 77, amplitude: 2, stream: stream)
        let kvBytes = lengths.reduce(0, +) * p.kvHeads * p.headDim * 2 * 2
        var results: [DecodeReport.Timing] = []

        func entry(_ mode: String, _ variant: Variant, _ ms: Double, _ plan: DecodeSchedule, tokensPerBlock: Int, note: String?) -> DecodeReport.Timing {
            let tbps = Double(kvBytes) / (ms / 1000) / 1e12
            print("  \(mode) [\(variant.name)]: \(fixed(ms, 4)) ms, \(fixed(tbps, 3)) TB/s (\(fixed(tbps / ceiling, 3)) of ceiling), \(plan.ctas) CTAs, "
                  + (plan.wholePairs ? "whole pairs" : "\(plan.splitPairs)/\(plan.pairs) pairs split"))
            return DecodeReport.Timing(model: c.model, heads: "\(p.queryHeads)/\(p.kvHeads) x \(p.headDim)", batch: c.batch, length: c.length,
                                       ragged: c.ragged, layout: c.layout.rawValue,
                                       mode: mode, variant: variant.name, layersInCache: layers, tokensPerBlock: tokensPerBlock, kvBytes: kvBytes,
                                       millis: ms, tbps: tbps, fractionOfCeiling: tbps / ceiling, ctas: plan.ctas, splitPairs: plan.splitPairs,
                                       pairs: plan.pairs, wholePairs: plan.wholePairs, anchorCuDNN: c.cuDNN, anchorVLLMPaged: c.vllm, note: note)
        }

        // vTensor: a KV cache with every layer, filled with random values.
        do {
            let need = lengths.reduce(0) { $0 + layout.rangesPerRequest * layout.chunks(forTokens: $1) } * chunk
            guard need + 16 * chunk < free * 9 / 10 else {
                throw CheckFailed("\(gib(need)) of KV in the \(c.layout.rawValue) layout does not fit \(gib(free)) free")
            }
            let memory = try VirtualMemory(backend: gpu.cuda, budget: .bytes(need + 16 * chunk), lowWatermark: 0, highWatermark: 0)
            let cache = try KVCache(shape: shape, layout: c.layout, memory: memory, maxTokensPerRequest: c.length)
            defer {
                for id in 0..<c.batch { try? cache.free(id) }
                try? memory.drain()
            }
            for id in 0..<c.batch {
                // A group member starts as a fork of its leader's shared prefix (its chunks aliased).
                let leader = id - id % max(1, c.groupSize)
                let shares = c.sharedPrefix > 0 && id != leader
                if shares { try cache.fork(from: leader, prefix: c.sharedPrefix, into: id) } else { try cache.addRequest(id) }
                try cache.reserve(id, tokens: lengths[id])
                try cache.setLength(id, lengths[id])
                let own = shares ? c.sharedPrefix / layout.tokensPerChunk : 0
                for t in try cache.tensors(of: id) {
                    let mapped = memory.mappedChunkCount(t)
                    guard mapped > own else { continue }
                    try write.fillRandom(address: t.base + UInt64(own * chunk), count: (mapped - own) * chunk / 2, dtype: p.dtype,
                                         seed: UInt32(id + 1), stream: stream)
                }
            }
            let identities = try cache.sharedChunkIdentities(Array(0..<c.batch))
            for variant in variants {
                let decode = try make(p, paged: false, variant)
                // Shared keys: as each request reads its own, and once a tile (shared-prefix decode).
                let tiles = c.sharedPrefix == 0 ? [] : DecodeSchedule.sharedPrefixTiles(
                    blocks: identities, requests: lengths.map { .init(length: $0, queryStart: 0, queryCount: 1) },
                    tokensPerBlock: layout.tokensPerChunk, membersPerTile: decode.membersPerTile)
                for tiled in tiles.isEmpty ? [false] : [false, true] {
                    let batches = try (0..<rotation).map { layer in
                        try decode.prepare((0..<c.batch).map { id in
                            AttentionRequest(key: try cache.view(id, layer: layer, component: .key),
                                             value: try cache.view(id, layer: layer, component: .value), queryStart: id, queryCount: 1)
                        }, stream: stream, maxCTAs: maxCTAs(decode), sharedPrefixes: tiled ? tiles : [])
                    }
                    let ms = try timeRotating(batches.count) { i in
                        try decode.run(batches[i], queries: queries.address, output: output.address, stream: stream)
                    }
                    results.append(entry((c.layout == .blocked ? "vTensor" : "vTensor (\(c.layout.rawValue))") + (tiled ? ", tiles" : ""), variant, ms,
                                         batches[0].schedule, tokensPerBlock: layout.tokensPerChunk,
                                         note: tiled ? "\(tiles.count) tiles; " + (note ?? "") : note))
                }
            }
        }
        guard c.paged else { return results }

        // Paged: per rotated layer a K and a V pool of 16-token pages in shuffled order.
        do {
            let pageTokens = 16
            let pages = lengths.map { ($0 + pageTokens - 1) / pageTokens }
            var firstPage = [0]
            for n in pages { firstPage.append(firstPage.last! + n) }
            let tableEntries = firstPage.last!
            // A group member's table starts with its leader's shared pages; its own pages follow.
            let sharedPages = c.sharedPrefix / pageTokens
            var tableOf: [[Int]] = []
            var pageCount = 0
            for (id, n) in pages.enumerated() {
                let leader = id - id % max(1, c.groupSize)
                let shared = c.sharedPrefix > 0 && id != leader ? min(sharedPages, n) : 0
                tableOf.append(Array(tableOf.isEmpty || shared == 0 ? [] : tableOf[leader].prefix(shared)) + (pageCount..<(pageCount + n - shared)))
                pageCount += n - shared
            }
            var order = Array(0..<pageCount)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            let tables = try DeviceBuffer(context: context, bytes: tableEntries * 4)
            try context.copyHostToDevice(destination: tables.address, from: tableOf.flatMap { $0.map { Int32(order[$0]) } })
            var pools: [(DeviceBuffer, DeviceBuffer)] = []
            var layerPools: [PagedKVPool] = []
            for layer in 0..<rotation {
                let bytes = pageCount * pageTokens * p.kvHeads * p.headDim * p.dtype.bytes
                let k = try DeviceBuffer(context: context, bytes: bytes), v = try DeviceBuffer(context: context, bytes: bytes)
                try write.fillRandom(address: k.address, count: bytes / 2, dtype: p.dtype, seed: UInt32(1000 + layer), stream: stream)
                try write.fillRandom(address: v.address, count: bytes / 2, dtype: p.dtype, seed: UInt32(2000 + layer), stream: stream)
                pools.append((k, v))
                layerPools.append(PagedKVPool(keys: k.address, values: v.address, pages: pageCount, pageTokens: pageTokens,
                                              kvHeads: p.kvHeads, headDim: p.headDim, dtype: p.dtype))
            }
            for variant in variants {
                let decode = try make(p, paged: true, variant)
                let tiles = c.sharedPrefix == 0 ? [] : DecodeSchedule.sharedPrefixTiles(
                    blocks: tableOf.enumerated().map { id, pages in
                        PagedKVCache.sharedPageIdentities(pages.map { Int32($0) }, length: lengths[id] - 1, pageTokens: pageTokens)
                    },
                    requests: lengths.map { .init(length: $0, queryStart: 0, queryCount: 1) },
                    tokensPerBlock: pageTokens, membersPerTile: decode.membersPerTile)
                for tiled in tiles.isEmpty ? [false] : [false, true] {
                    let batches = try layerPools.map { pool in
                        try decode.prepare((0..<c.batch).map { id in
                            PagedRequest(blockTable: tables.address + UInt64(4 * firstPage[id]), length: lengths[id], queryStart: id, queryCount: 1)
                        }, pool: pool, stream: stream, maxCTAs: maxCTAs(decode), sharedPrefixes: tiled ? tiles : [])
                    }
                    let ms = try withExtendedLifetime(pools) {
                        try timeRotating(batches.count) { i in
                            try decode.run(batches[i], queries: queries.address, output: output.address, stream: stream)
                        }
                    }
                    results.append(entry("paged (16-token pages, shuffled)" + (tiled ? ", tiles" : ""), variant, ms, batches[0].schedule,
                                         tokensPerBlock: pageTokens,
                                         note: c.sharedPrefix > 0 ? (tiled ? "\(tiles.count) tiles; " : "") + (notes.last ?? "") : nil))
                }
            }
        }
        return results
    }

    /// Median milliseconds of `body(i)` (i rotating over `count` inputs) timed with CUDA events.
    /// A spin kernel runs first so the launch is queued before the start event fires.
    func timeRotating(_ count: Int, _ body: (Int) throws -> Void) throws -> Double {
        let start = try CUDAEvent(context: context, timing: true)
        let end = try CUDAEvent(context: context, timing: true)
        for i in 0..<max(3, count) { try body(i % count) }
        try stream.synchronize()
        var times: [Double] = []
        for i in 0..<reps {
            try gpu.kernels.spin(cycles: 100_000, stream: stream)
            try start.record(on: stream)
            try body(i % count)
            try end.record(on: stream)
            try end.synchronize()
            times.append(Double(try CUDAEvent.elapsedMilliseconds(from: start, to: end)))
        }
        return median(times)
    }
}

extension DecodeBench {
/// 3 significant digits in scientific notation.
static func sci(_ value: Double) -> String {
    guard value.isFinite, value != 0 else { return value == 0 ? "0" : fixed(value) }
    var exponent = 0
    var mantissa = abs(value)
    while mantissa >= 10 { mantissa /= 10; exponent += 1 }
    while mantissa < 1 { mantissa *= 10; exponent -= 1 }
    return (value < 0 ? "-" : "") + fixed(mantissa, 2) + "e" + String(exponent)
}
}
