import ArgumentParser
import CLICommon
import GPU
import Glibc
import Kernels
import VTensor

/// `vtensor dev prefill`: the prefill/extend attention kernel checked against the CPU oracle
/// on ragged batches over real KV caches (GPU and host, same layout, same data), then timed.
struct DevPrefillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prefill", abstract: "Prefill/extend attention: check against the CPU oracle and time.")

    @Option(help: "CUDA device ordinal.") var device = 0
    @Option(name: .customLong("json-out"), help: "Write the results as JSON to this file.") var jsonOut: String?
    @Option(help: "Timed runs per case (median reported).") var reps = 20
    @Option(help: "CPU threads for the oracle (0: all cores).") var threads = 0
    @Option(help: "Only cases whose name contains this.") var filter: String?
    @Option(help: "Seed of the random inputs of the checks.") var seed = 1
    @Flag(help: "Skip the timing.") var checksOnly = false
    @Flag(help: "Skip the checks.") var timingOnly = false
    @Flag(help: .hidden) var cpuDryRun = false
    @Option(help: "A NAME=VALUE macro for the wgmma kernel (repeatable; experiments).") var define: [String] = []

    func run() throws {
        // --cpu-dry-run: the checks' host side with the oracle standing in for the kernel.
        if !cpuDryRun, let reason = gpuUnavailableReason() { throw ValidationError(reason) }
        let gpu = cpuDryRun ? nil : try PrefillGPU(device: device)
        gpu?.wgmmaDefines = define
        let cores = threads > 0 ? threads : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let deviceName = gpu?.name ?? "cpu dry run"
        print("device: \(deviceName); oracle threads: \(cores)")
        var report = PrefillReport(date: todayUTC(), device: deviceName, matmulCeilingTFLOPs: PrefillReport.anchorCeiling,
                                   ceilingSource: "bf16 matmul measured on H100 80GB (anchors.md, 2026-11-26), not in this run")
        if !timingOnly {
            for check in PrefillChecks.cases where filter.map({ check.name.contains($0) }) ?? true {
                report.checks += try PrefillChecks.run(check, gpu: gpu, threads: cores, seed: seed)
            }
            var table = Table(title: "\ncorrectness (norm-wise relative error vs the CPU oracle; limit 1e-2)",
                              header: ["case", "tiles", "worst (req, head)", "overall", "rows checked", "unwritten", "result"])
            for c in report.checks {
                table.add([c.name, c.config, sci(c.worstSampleError), sci(c.overallError), "\(c.rowsChecked)", "\(c.unwritten)", c.passed ? "PASS" : "FAIL"])
            }
            print(table.render())
        }
        if !checksOnly, let gpu {
            do {
                let measured = try PrefillTiming.matmulCeiling(gpu: gpu)
                report.matmulCeilingTFLOPs = measured
                report.ceilingSource = "cuBLASLt bf16 8192^3 matmul (TN, fp32 accumulation), median of 20, this run"
            } catch {
                print("cuBLASLt matmul ceiling unavailable (\(error)); using the anchors' \(PrefillReport.anchorCeiling) TFLOP/s")
            }
            for timing in PrefillTiming.cases where filter.map({ timing.name.contains($0) }) ?? true {
                report.timings += try PrefillTiming.run(timing, gpu: gpu, reps: reps, ceiling: report.matmulCeilingTFLOPs)
            }
            print(prefillTimingTable(report, title: "\ntiming on \(gpu.name) (median of \(reps), CUDA events, \(PrefillTiming.sets) input sets rotated); ceiling \(fixed(report.matmulCeilingTFLOPs, 0)) TFLOP/s: \(report.ceilingSource)").render())
        }
        if let jsonOut { try writeFile(jsonOut, try jsonString(report) + "\n") }
        let failed = report.checks.filter { !$0.passed }
        if !failed.isEmpty {
            print("FAIL: \(failed.count) of \(report.checks.count) checks")
            throw ExitCode(1)
        }
        if !report.checks.isEmpty { print("PASS: all \(report.checks.count) checks") }
    }
}

/// The prefill/extend timings as a table, next to FlashAttention-2 and the targets.
func prefillTimingTable(_ report: PrefillReport, title: String) -> Table {
    var table = Table(title: title, header: ["case", "tiles", "ms", "TFLOP/s", "of ceiling", "FA2", "target", "vs target", "paged/vTensor time"])
    for t in report.timings {
        table.add([t.name, t.config, fixed(t.millis, 3), fixed(t.tflops, 1), fixed(t.fractionOfCeiling, 2),
                   fixed(t.flashAttention2, 0), fixed(t.target, 0), fixed(t.tflops / t.target, 2),
                   t.vTensorMillis.map { fixed(t.millis / $0, 3) } ?? ""])
    }
    return table
}

func sci(_ x: Double) -> String {
    guard x.isFinite else { return x.isNaN ? "nan" : "inf" }
    if x == 0 { return "0" }
    var e = 0
    var m = x
    while m < 1 { m *= 10; e -= 1 }
    while m >= 10 { m /= 10; e += 1 }
    return fixed(m, 2) + "e" + String(e)
}

struct PrefillReport: Codable {
    /// H100 bf16 matmul measured for anchors.md (2026-11-26).
    static let anchorCeiling = 674.0
    var date: String
    var device: String
    var matmulCeilingTFLOPs: Double
    var ceilingSource: String
    var checks: [PrefillCheckResult] = []
    var timings: [PrefillTimingResult] = []
}

struct PrefillCheckResult: Codable {
    var name: String
    var config: String
    var parameters: String
    var requests: String
    var worstSampleError: Double
    var overallError: Double
    var rowsChecked: Int
    var unwritten: Int
    var passed: Bool
}

struct PrefillTimingResult: Codable {
    var name: String
    var config: String
    var millis: Double
    var spreadMillis: [Double]
    var flops: Double
    var tflops: Double
    var fractionOfCeiling: Double
    var flashAttention2: Double
    var target: Double
    /// Paged baseline entries: page size, and the vTensor time of the same shape and tiles.
    var pageTokens: Int? = nil
    var vTensorMillis: Double? = nil
}

/// The device, its stream, VMM backend and compiler.
final class PrefillGPU {
    let context: CUDAContext
    let stream: CUDAStream
    let cuda: CUDABackend
    let compiler: KernelCompiler
    var name: String { "\(context.device.name) (sm_\(context.device.computeCapability.major)\(context.device.computeCapability.minor))" }
    /// Whether the Hopper (wgmma) kernel runs here, so its shapes are checked and timed too.
    var hasWGMMA: Bool { PrefillAttention.hasWGMMA(context.device.computeCapability) }
    /// Extra macros for the wgmma kernel (`--define`).
    var wgmmaDefines: [String] = []

    /// Shares the device, stream, VMM backend and kernel compiler of `work`, so kernels of both
    /// run on the one work stream whose fences guard unmapping.
    init(work: CUDAWork) {
        context = work.context
        stream = work.stream
        cuda = work.cuda
        compiler = work.compiler
    }

    convenience init(device: Int) throws {
        self.init(work: try CUDAWork(device: device))
    }

    func kernel(_ p: AttentionParameters, _ config: PrefillTileConfig, paged: Bool = false) throws -> PrefillAttention {
        try context.makeCurrent()
        return try PrefillAttention(compiler: compiler, parameters: p, config: config, paged: paged,
                                    defines: config.engine == .wgmma ? wgmmaDefines : [])
    }
}

/// A KV cache with requests of given lengths, on one backend, and the views of one layer.
struct PrefillCache {
    let memory: VirtualMemory
    let cache: KVCache
    let lengths: [Int]

    init(backend: any MemoryBackend, shape: KVShape, lengths: [Int]) throws {
        let layout = try KVLayout(.blocked, shape: shape, chunkSize: backend.chunkSize)
        let chunks = lengths.reduce(0) { $0 + layout.chunks(forTokens: $1) } * layout.rangesPerRequest + 8
        memory = try VirtualMemory(backend: backend, budget: .bytes(chunks * backend.chunkSize), lowWatermark: 0, highWatermark: 0)
        cache = try KVCache(shape: shape, layout: .blocked, memory: memory, maxTokensPerRequest: max(1, lengths.max() ?? 1))
        self.lengths = lengths
        for (id, n) in lengths.enumerated() {
            try cache.addRequest(id)
            try cache.reserve(id, tokens: n)
            try cache.setLength(id, n)
        }
    }

    /// Requests over layer `layer`; query counts per request, query rows packed in order.
    func requests(layer: Int, queryCounts: [Int]) throws -> [AttentionRequest] {
        var start = 0
        return try zip(lengths.indices, queryCounts).map { id, count in
            defer { start += count }
            return AttentionRequest(key: try cache.view(id, layer: layer, component: .key),
                                    value: try cache.view(id, layer: layer, component: .value),
                                    queryStart: start, queryCount: count)
        }
    }

    func release() {
        for id in lengths.indices { try? cache.free(id) }
        try? memory.drain()
    }
}

enum PrefillChecks {
    struct Case {
        var name: String
        var p: AttentionParameters
        var shape: KVShape
        /// (KV length, query count) per request.
        var requests: [(length: Int, queries: Int)]
        /// Paged baseline: K/V copied into a pool of pages of this many tokens (the standard
        /// tile shape only); nil: the virtual-tensor views of a real KV cache.
        var pageTokens: Int? = nil
        /// Paged: pages handed out in a random order (else in order).
        var shuffled = true
    }

    static let llama = KVShape.llama3_8B
    static let yi = KVShape.yi34B  // 8 tokens per 2 MiB chunk
    /// Head dim 64 with 3 KV heads: 91 tokens per 2 MiB chunk (not a power of two).
    static let smol = KVShape.smolLM2_135M

    static let cases: [Case] = [
        Case(name: "prefill ragged, Llama-3-8B bf16", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128),
             shape: llama, requests: [(1, 1), (17, 17), (63, 63), (65, 65), (1000, 1000), (4097, 4097)]),
        Case(name: "prefill ragged, Llama-3-8B fp16", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128, dtype: .fp16),
             shape: KVShape(layers: 32, kvHeads: 8, headDim: 128, dtype: .fp16), requests: [(129, 129), (17, 17), (700, 700)]),
        Case(name: "prefill group 7, Yi-34B bf16", p: AttentionParameters(queryHeads: 56, kvHeads: 8, headDim: 128),
             shape: yi, requests: [(1, 1), (130, 130), (777, 777), (2049, 2049)]),
        Case(name: "prefill d=64 group 3, bf16", p: AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64),
             shape: smol, requests: [(5, 5), (64, 64), (200, 200), (1000, 1000)]),
        Case(name: "prefill d=64 fp16 window 100", p: AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64, dtype: .fp16, window: 100),
             shape: KVShape(layers: 30, kvHeads: 3, headDim: 64, dtype: .fp16), requests: [(1, 1), (99, 99), (333, 333), (1000, 1000)]),
        Case(name: "prefill window 256, Llama-3-8B", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128, window: 256),
             shape: llama, requests: [(1, 1), (300, 300), (1000, 1000), (2000, 2000)]),
        Case(name: "extend + decode + prefill, Llama-3-8B", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128),
             shape: llama, requests: [(1077, 77), (4097, 513), (130, 129), (65, 1), (2000, 1), (300, 300), (1500, 200)]),
        Case(name: "extend window 512 group 7, Yi-34B", p: AttentionParameters(queryHeads: 56, kvHeads: 8, headDim: 128, window: 512),
             shape: yi, requests: [(3000, 200), (1500, 1), (700, 700), (1100, 65)]),
        Case(name: "extend d=64, bf16", p: AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64),
             shape: smol, requests: [(1000, 100), (91, 1), (183, 92), (4097, 17)]),
        // The paged baseline (same kernel, block-table addressing).
        Case(name: "paged prefill ragged, Llama-3-8B bf16, 16-token pages shuffled", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128),
             shape: llama, requests: [(1, 1), (17, 17), (63, 63), (65, 65), (1000, 1000)], pageTokens: 16),
        Case(name: "paged prefill ragged, Llama-3-8B bf16, 5-token pages shuffled", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128),
             shape: llama, requests: [(1, 1), (17, 17), (63, 63), (65, 65), (1000, 1000)], pageTokens: 5),
        Case(name: "paged extend + decode + prefill, Llama-3-8B, 16-token pages shuffled", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128),
             shape: llama, requests: [(1077, 77), (4097, 513), (130, 129), (65, 1), (2000, 1), (300, 300), (1500, 200)], pageTokens: 16),
        Case(name: "paged extend + decode + prefill, Llama-3-8B, 5-token pages shuffled", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128),
             shape: llama, requests: [(1077, 77), (4097, 513), (130, 129), (65, 1), (2000, 1), (300, 300), (1500, 200)], pageTokens: 5),
        Case(name: "paged extend + decode, Llama-3-8B, 16-token pages in order", p: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128),
             shape: llama, requests: [(1077, 77), (65, 1), (2000, 1), (1500, 200)], pageTokens: 16, shuffled: false),
        Case(name: "paged d=64 fp16 window 100, 5-token pages shuffled", p: AttentionParameters(queryHeads: 9, kvHeads: 3, headDim: 64, dtype: .fp16, window: 100),
             shape: KVShape(layers: 30, kvHeads: 3, headDim: 64, dtype: .fp16), requests: [(1, 1), (99, 99), (333, 333), (1000, 100), (700, 1)], pageTokens: 5),
    ]

    /// Rows of a request the oracle computes: all of short requests; else the first 40, 40 in
    /// the middle and the last 72 (tile boundaries inside each).
    static func sampledRows(_ count: Int) -> [Range<Int>] {
        if count <= 160 { return [0..<count] }
        var rows = Set(0..<40)
        rows.formUnion(max(0, count / 2 - 20)..<min(count, count / 2 + 20))
        rows.formUnion((count - 72)..<count)
        var ranges: [Range<Int>] = []
        for row in rows.sorted() {
            if let last = ranges.last, last.upperBound == row { ranges[ranges.count - 1] = last.lowerBound..<(row + 1) } else { ranges.append(row..<(row + 1)) }
        }
        return ranges
    }

    static func run(_ c: Case, gpu: PrefillGPU?, threads: Int, seed: Int) throws -> [PrefillCheckResult] {
        let p = c.p
        print("check: \(c.name) (\(p); requests \(c.requests.map { "\($0.length)/\($0.queries)" }.joined(separator: " ")))")
        let layer = min(3, c.shape.layers - 1)
        let lengths = c.requests.map(\.length), counts = c.requests.map(\.queries)
        let layout = try KVLayout(.blocked, shape: c.shape, chunkSize: 2 << 20)
        let hostBytes = (lengths.reduce(0) { $0 + layout.chunks(forTokens: $1) } + 8) * (2 << 20)
        let host = try HostBackend(chunkSize: 2 << 20, capacityBytes: hostBytes)
        let hostCache = try PrefillCache(backend: host, shape: c.shape, lengths: lengths)
        let gpuCache = c.pageTokens != nil ? nil : try gpu.map { try PrefillCache(backend: $0.cuda, shape: c.shape, lengths: lengths) }
        defer { hostCache.release(); gpuCache?.release() }
        let hostRequests = try hostCache.requests(layer: layer, queryCounts: counts)
        let gpuRequests = try gpuCache?.requests(layer: layer, queryCounts: counts) ?? hostRequests

        // Random K/V (never zeros) on the host, then copied block by block to the GPU cache.
        var rng = SplitMix64(seed: c.name.utf8.reduce(UInt64(seed)) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 })
        let d = p.headDim, dtype = p.dtype
        func random(_ base: UnsafeMutableRawPointer, _ count: Int, _ amplitude: Double) {
            for i in 0..<count { HalfFloat.store(Float((rng.nextDouble() * 2 - 1) * amplitude), base, i, dtype) }
        }
        for request in hostRequests {
            for t in 0..<request.length {
                for h in 0..<p.kvHeads {
                    random(UnsafeMutableRawPointer(bitPattern: UInt(request.key.address(token: t, head: h)))!, d, 1.5)
                    random(UnsafeMutableRawPointer(bitPattern: UInt(request.value.address(token: t, head: h)))!, d, 1)
                }
            }
        }
        for (hr, gr) in zip(hostRequests, gpuRequests) where gpuCache != nil {
            for (hv, gv) in [(hr.key, gr.key), (hr.value, gr.value)] {
                var first = 0
                while first < hv.length {
                    let n = min(hv.tokensPerBlock - first % hv.tokensPerBlock, hv.length - first)
                    let bytes = (n - 1) * hv.tokenStride + p.kvHeads * hv.headStride
                    let source = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt(hv.address(token: first, head: 0))), count: bytes)
                    try gpu!.context.copyHostToDevice(destination: gv.address(token: first, head: 0), source: source)
                    first += n
                }
            }
        }
        // Paged: the same K/V rows copied into K and V pools of pages (a random permutation of
        // the pages unless in order); one int32 table per request, all in one buffer.
        var pagedBuffers: [DeviceBuffer] = []
        var pagedRun: (requests: [PagedRequest], pool: PagedKVPool)?
        if let pageTokens = c.pageTokens, let gpu {
            let pageCounts = lengths.map { ($0 + pageTokens - 1) / pageTokens }
            let pageCount = max(1, pageCounts.reduce(0, +))
            var order = Array(0..<pageCount)
            if c.shuffled { order.shuffle(using: &rng) }
            let rowBytes = d * dtype.bytes
            let poolBytes = pageCount * pageTokens * p.kvHeads * rowBytes
            let kPool = try DeviceBuffer(context: gpu.context, bytes: poolBytes)
            let vPool = try DeviceBuffer(context: gpu.context, bytes: poolBytes)
            let tables = try DeviceBuffer(context: gpu.context, bytes: 4 * pageCount)
            pagedBuffers = [kPool, vPool, tables]
            let pool = PagedKVPool(keys: kPool.address, values: vPool.address, pages: pageCount, pageTokens: pageTokens,
                                   kvHeads: p.kvHeads, headDim: d, dtype: dtype)
            var hostK = [UInt8](repeating: 0, count: poolBytes), hostV = hostK
            var first = 0
            var requests: [PagedRequest] = []
            for (r, request) in hostRequests.enumerated() {
                let table = order[first..<(first + pageCounts[r])].map { Int32($0) }
                for t in 0..<request.length {
                    for h in 0..<p.kvHeads {
                        let at = pool.offset(token: t, head: h, table: table)
                        for (view, dst) in [(request.key, 0), (request.value, 1)] {
                            let src = UnsafeRawPointer(bitPattern: UInt(view.address(token: t, head: h)))!
                            if dst == 0 { hostK.withUnsafeMutableBytes { _ = memcpy($0.baseAddress! + at, src, rowBytes) } }
                            else { hostV.withUnsafeMutableBytes { _ = memcpy($0.baseAddress! + at, src, rowBytes) } }
                        }
                    }
                }
                requests.append(PagedRequest(blockTable: tables.address + UInt64(4 * first), length: request.length,
                                             queryStart: request.queryStart, queryCount: request.queryCount))
                first += pageCounts[r]
            }
            try gpu.context.copyHostToDevice(destination: kPool.address, from: hostK)
            try gpu.context.copyHostToDevice(destination: vPool.address, from: hostV)
            try gpu.context.copyHostToDevice(destination: tables.address, from: order.map { Int32($0) })
            pagedRun = (requests, pool)
        }
        let totalQueries = counts.reduce(0, +)
        let elements = totalQueries * p.queryHeads * d
        var queries = [UInt8](repeating: 0, count: elements * dtype.bytes)
        queries.withUnsafeMutableBytes { random($0.baseAddress!, elements, 1.5) }
        let qBuffer = try gpu.map { try DeviceBuffer(context: $0.context, bytes: max(16, queries.count)) }
        let oBuffer = try gpu.map { try DeviceBuffer(context: $0.context, bytes: max(16, queries.count)) }
        if let gpu, let qBuffer { try gpu.context.copyHostToDevice(destination: qBuffer.address, from: queries) }

        // The oracle on sampled rows: a request cut at the last sampled row's position, whose
        // last queries are the sampled rows (same K/V memory, same query and output rows).
        var subRequests: [AttentionRequest] = []
        var sampled: [(request: Int, rows: Range<Int>)] = []
        for (r, request) in hostRequests.enumerated() {
            for rows in sampledRows(request.queryCount) {
                var key = request.key, value = request.value
                key.length = request.firstQueryPosition + rows.upperBound
                value.length = key.length
                subRequests.append(AttentionRequest(key: key, value: value, queryStart: request.queryStart + rows.lowerBound,
                                                    queryCount: rows.count))
                sampled.append((r, rows))
            }
        }
        var expected = [UInt8](repeating: 0xFF, count: queries.count)
        let start = monotonicNanos()
        queries.withUnsafeBytes { q in
            expected.withUnsafeMutableBytes { o in
                CPUAttention.run(p, requests: subRequests, queries: q.baseAddress!, output: o.baseAddress!, threads: threads)
            }
        }
        let rowsChecked = sampled.reduce(0) { $0 + $1.rows.count }
        print("  oracle: \(rowsChecked) rows x \(p.queryHeads) heads in \(fixed(Double(monotonicNanos() - start) / 1e9, 2)) s")

        var results: [PrefillCheckResult] = []
        let wgmma = gpu?.hasWGMMA ?? false
        let configs = c.pageTokens == nil ? PrefillTileConfig.candidates(headDim: d, wgmma: wgmma)
            : PrefillTileConfig.pagedCandidates(headDim: d, wgmma: wgmma)
        for config in configs {
            var got = [UInt8](repeating: 0xFF, count: queries.count)
            if let gpu, let oBuffer, let qBuffer {
                let kernel = try gpu.kernel(p, config, paged: pagedRun != nil)
                var workspace: DeviceBuffer? = nil
                try gpu.context.memset8Async(destination: oBuffer.address, value: 0xFF, bytes: queries.count, stream: gpu.stream)
                if let pagedRun {
                    try withExtendedLifetime(pagedBuffers) {
                        try kernel.run(pagedRun.requests, pool: pagedRun.pool, queries: qBuffer.address, output: oBuffer.address,
                                       workspace: &workspace, stream: gpu.stream)
                        try gpu.stream.synchronize()
                    }
                } else {
                    try kernel.run(gpuRequests, queries: qBuffer.address, output: oBuffer.address, workspace: &workspace, stream: gpu.stream)
                }
                try gpu.stream.synchronize()
                got = try gpu.context.copyDeviceToHost(source: oBuffer.address, count: queries.count)
            } else {
                queries.withUnsafeBytes { q in
                    got.withUnsafeMutableBytes { o in
                        CPUAttention.run(p, requests: hostRequests, queries: q.baseAddress!, output: o.baseAddress!, threads: threads)
                    }
                }
            }
            // Every output element written (the poison is NaN in bf16 and fp16).
            var unwritten = 0
            got.withUnsafeBytes { raw in
                for i in 0..<elements where !HalfFloat.load(raw.baseAddress!, i, dtype).isFinite { unwritten += 1 }
            }
            var worst = 0.0, diffAll = 0.0, normAll = 0.0
            var worstWhere = ""
            var sampleErrors: [(String, Double)] = []
            for (r, rows) in sampled {
                let request = hostRequests[r]
                for h in 0..<p.queryHeads {
                    var diff = 0.0, norm = 0.0
                    for row in rows {
                        let base = ((request.queryStart + row) * p.queryHeads + h) * d
                        for x in 0..<d {
                            let e = Double(HalfFloat.load(expected, base + x, dtype)), a = Double(HalfFloat.load(got, base + x, dtype))
                            diff += (a - e) * (a - e)
                            norm += e * e
                        }
                    }
                    diffAll += diff
                    normAll += norm
                    let error = norm > 0 ? (diff / norm).squareRoot() : (diff == 0 ? 0 : .infinity)
                    let isWorse = error.isNaN || error > worst
                    if isWorse && !worst.isNaN { worst = error; worstWhere = "request \(r) rows \(rows) head \(h)" }
                    if !(error < 1e-2) { sampleErrors.append(("request \(r) (\(request.length)/\(request.queryCount)) rows \(rows) head \(h)", error)) }
                }
            }
            let overall = normAll > 0 ? (diffAll / normAll).squareRoot() : .infinity
            let passed = worst < 1e-2 && overall < 1e-2 && unwritten == 0
            print("  \(config): worst \(sci(worst)) at \(worstWhere); overall \(sci(overall)); unwritten \(unwritten) -> \(passed ? "PASS" : "FAIL")")
            if !passed {
                for (where_, error) in sampleErrors.prefix(12) { print("    bad: \(where_): \(sci(error))") }
                if let (r, rows) = sampled.first(where: { s in sampleErrors.contains { $0.0.hasPrefix("request \(s.request) ") } }) {
                    let request = hostRequests[r]
                    let base = ((request.queryStart + rows.lowerBound) * p.queryHeads) * d
                    let e = (0..<6).map { fixed(Double(HalfFloat.load(expected, base + $0, dtype)), 4) }
                    let a = (0..<6).map { fixed(Double(HalfFloat.load(got, base + $0, dtype)), 4) }
                    print("    request \(r) row \(rows.lowerBound) head 0: expected \(e) got \(a)")
                }
            }
            results.append(PrefillCheckResult(
                name: c.name, config: config.description + (c.pageTokens.map { " paged \($0)" } ?? ""), parameters: p.description,
                requests: c.requests.map { "\($0.length)/\($0.queries)" }.joined(separator: " "),
                worstSampleError: worst, overallError: overall, rowsChecked: rowsChecked, unwritten: unwritten, passed: passed))
        }
        return results
    }
}

enum PrefillTiming {
    struct Case {
        var name: String
        var p: AttentionParameters
        var shape: KVShape
        var requests: [(length: Int, queries: Int)]
        /// Published TFLOP/s of FlashAttention-2 on H100 (anchors.md) and this kernel's target.
        var flashAttention2: Double
        var target: Double
        /// Also time the paged baseline (standard tiles, 16-token pages in shuffled order).
        var paged = false

        /// Causal attention FLOPs: 4 Hq d per (query, visible key) pair, counting a prefill
        /// sequence as L^2 / 2 pairs and an extend request as E (P + E / 2).
        var flops: Double {
            requests.reduce(0.0) { sum, r in
                let e = Double(r.queries), prefix = Double(r.length - r.queries)
                let pairs = r.queries == r.length ? e * e / 2 : e * (prefix + e / 2)
                return sum + 4 * Double(p.queryHeads * p.headDim) * pairs
            }
        }
    }

    static let sets = 4
    static let llamaP = AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128)
    static let yiP = AttentionParameters(queryHeads: 56, kvHeads: 8, headDim: 128)

    static let cases: [Case] = [
        Case(name: "prefill Llama-3-8B 16 x 1k", p: llamaP, shape: .llama3_8B, requests: Array(repeating: (1024, 1024), count: 16),
             flashAttention2: 271, target: 271),
        Case(name: "prefill Llama-3-8B 4 x 4k", p: llamaP, shape: .llama3_8B, requests: Array(repeating: (4096, 4096), count: 4),
             flashAttention2: 317, target: 317, paged: true),
        Case(name: "prefill Yi-34B 4 x 4k", p: yiP, shape: .yi34B, requests: Array(repeating: (4096, 4096), count: 4),
             flashAttention2: 337, target: 337),
        Case(name: "extend Llama-3-8B 8 x 1k+128", p: llamaP, shape: .llama3_8B, requests: Array(repeating: (1024 + 128, 128), count: 8),
             flashAttention2: 266, target: 2 * 123),
        Case(name: "extend Llama-3-8B 8 x 4k+512", p: llamaP, shape: .llama3_8B, requests: Array(repeating: (4096 + 512, 512), count: 8),
             flashAttention2: 334, target: 2 * 156, paged: true),
        Case(name: "extend Yi-34B 8 x 4k+512", p: yiP, shape: .yi34B, requests: Array(repeating: (4096 + 512, 512), count: 8),
             flashAttention2: 334, target: 2 * 163),
    ]

    /// TFLOP/s of a bf16 8192^3 cuBLASLt matmul on random data (median of 20).
    static func matmulCeiling(gpu: PrefillGPU) throws -> Double {
        let n = 8192
        try gpu.context.makeCurrent()
        let gemm = try CuBLASLtMatmul(context: gpu.context, m: n, n: n, k: n)
        let fill = try gpu.kernel(AttentionParameters(queryHeads: 1, kvHeads: 1, headDim: 128), .standard(headDim: 128))
        let a = try DeviceBuffer(context: gpu.context, bytes: n * n * 2)
        let b = try DeviceBuffer(context: gpu.context, bytes: n * n * 2)
        let d = try DeviceBuffer(context: gpu.context, bytes: n * n * 2)
        let workspaceBytes = 64 << 20
        let workspace = try DeviceBuffer(context: gpu.context, bytes: workspaceBytes)
        try fill.fillRandom(address: a.address, count: n * n, seed: 5, stream: gpu.stream)
        try fill.fillRandom(address: b.address, count: n * n, seed: 6, stream: gpu.stream)
        let start = try CUDAEvent(context: gpu.context, timing: true)
        let end = try CUDAEvent(context: gpu.context, timing: true)
        for _ in 0..<3 { try gemm.run(a: a.address, b: b.address, d: d.address, workspace: workspace.address, workspaceBytes: workspaceBytes, stream: gpu.stream) }
        var times: [Double] = []
        for _ in 0..<20 {
            try start.record(on: gpu.stream)
            try gemm.run(a: a.address, b: b.address, d: d.address, workspace: workspace.address, workspaceBytes: workspaceBytes, stream: gpu.stream)
            try end.record(on: gpu.stream)
            try end.synchronize()
            times.append(Double(try CUDAEvent.elapsedMilliseconds(from: start, to: end)))
        }
        let ms = times.sorted()[times.count / 2]
        let tflops = gemm.flops / (ms / 1000) / 1e12
        print("matmul ceiling: cuBLASLt bf16 \(n)^3 in \(fixed(ms, 3)) ms = \(fixed(tflops, 1)) TFLOP/s")
        return tflops
    }

    static func run(_ c: Case, gpu: PrefillGPU, reps: Int, ceiling: Double) throws -> [PrefillTimingResult] {
        let p = c.p
        print("time: \(c.name) (\(fixed(c.flops / 1e12, 3)) TFLOP per run)")
        let cache = try PrefillCache(backend: gpu.cuda, shape: c.shape, lengths: c.requests.map(\.length))
        defer { cache.release() }
        // Random K/V in every mapped chunk (all layers: each layer is one input set).
        let fill = try gpu.kernel(p, .standard(headDim: p.headDim))
        for id in cache.lengths.indices {
            for tensor in try cache.cache.tensors(of: id) {
                try fill.fillRandom(address: tensor.base, count: cache.memory.mappedChunkCount(tensor) * cache.memory.chunkSize / 2,
                                    seed: UInt32(id * 7 + 1), amplitude: 1.5, stream: gpu.stream)
            }
        }
        let totalQueries = c.requests.reduce(0) { $0 + $1.queries }
        let qBytes = totalQueries * p.queryHeads * p.headDim * p.dtype.bytes
        let qBuffers = try (0..<2).map { i -> DeviceBuffer in
            let buffer = try DeviceBuffer(context: gpu.context, bytes: qBytes)
            try fill.fillRandom(address: buffer.address, count: qBytes / 2, seed: UInt32(1000 + i), amplitude: 1.5, stream: gpu.stream)
            return buffer
        }
        let output = try DeviceBuffer(context: gpu.context, bytes: qBytes)
        let requestSets = try (0..<sets).map { try cache.requests(layer: $0 % c.shape.layers, queryCounts: c.requests.map(\.queries)) }
        try gpu.stream.synchronize()

        var results: [PrefillTimingResult] = []
        let start = try CUDAEvent(context: gpu.context, timing: true)
        let end = try CUDAEvent(context: gpu.context, timing: true)

        // Paged: per rotated set a K and a V pool of 16-token pages, handed out in a shuffled
        // order (one table buffer shared by the sets), filled like the cache.
        let pageTokens = 16
        var pagedPlans: [(PagedKVPool, [PagedRequest])] = []
        var pagedBuffers: [DeviceBuffer] = []
        if c.paged {
            let pageCounts = c.requests.map { ($0.length + pageTokens - 1) / pageTokens }
            let pageCount = pageCounts.reduce(0, +)
            var rng = SplitMix64(seed: 12345)
            var order = Array(0..<pageCount)
            order.shuffle(using: &rng)
            let tables = try DeviceBuffer(context: gpu.context, bytes: 4 * pageCount)
            try gpu.context.copyHostToDevice(destination: tables.address, from: order.map { Int32($0) })
            pagedBuffers.append(tables)
            var firstPage: [Int] = []
            var queryStart = 0
            var requests: [PagedRequest] = []
            for (id, r) in c.requests.enumerated() {
                firstPage.append(firstPage.last.map { $0 + pageCounts[id - 1] } ?? 0)
                requests.append(PagedRequest(blockTable: tables.address + UInt64(4 * firstPage[id]), length: r.length,
                                             queryStart: queryStart, queryCount: r.queries))
                queryStart += r.queries
            }
            for set in 0..<sets {
                let pool0 = PagedKVPool(keys: 0, values: 0, pages: pageCount, pageTokens: pageTokens, kvHeads: p.kvHeads,
                                        headDim: p.headDim, dtype: p.dtype)
                let k = try DeviceBuffer(context: gpu.context, bytes: pool0.poolBytes)
                let v = try DeviceBuffer(context: gpu.context, bytes: pool0.poolBytes)
                try fill.fillRandom(address: k.address, count: pool0.poolBytes / 2, seed: UInt32(2000 + 2 * set), amplitude: 1.5, stream: gpu.stream)
                try fill.fillRandom(address: v.address, count: pool0.poolBytes / 2, seed: UInt32(2001 + 2 * set), amplitude: 1.5, stream: gpu.stream)
                pagedBuffers += [k, v]
                var pool = pool0
                pool.keys = k.address
                pool.values = v.address
                pagedPlans.append((pool, requests))
            }
            try gpu.stream.synchronize()
        }
        defer { withExtendedLifetime(pagedBuffers) {} }

        var runs: [(config: PrefillTileConfig, paged: Bool)] = PrefillTileConfig.candidates(headDim: p.headDim, wgmma: gpu.hasWGMMA).map { ($0, false) }
        if c.paged { runs += PrefillTileConfig.pagedCandidates(headDim: p.headDim, wgmma: gpu.hasWGMMA).map { ($0, true) } }
        for (config, paged) in runs {
            let kernel = try gpu.kernel(p, config, paged: paged)
            let plans = paged ? pagedPlans.map { kernel.plan($0.1, pool: $0.0) } : requestSets.map { kernel.plan($0) }
            let workspaces = try plans.map { plan -> DeviceBuffer in
                let buffer = try DeviceBuffer(context: gpu.context, bytes: plan.workspaceBytes)
                try kernel.upload(plan, workspace: buffer.address)
                return buffer
            }
            func launch(_ i: Int) throws {
                try kernel.launch(plans[i % sets], workspace: workspaces[i % sets].address, queries: qBuffers[i % 2].address,
                                  output: output.address, stream: gpu.stream)
            }
            for i in 0..<3 { try launch(i) }
            try gpu.stream.synchronize()
            var times: [Double] = []
            for i in 0..<reps {
                try start.record(on: gpu.stream)
                try launch(i)
                try end.record(on: gpu.stream)
                try end.synchronize()
                times.append(Double(try CUDAEvent.elapsedMilliseconds(from: start, to: end)))
            }
            let sorted = times.sorted()
            let ms = sorted[sorted.count / 2]
            let tflops = c.flops / (ms / 1000) / 1e12
            let label = config.description + (paged ? " paged \(pageTokens) shuffled" : "")
            let vTensorMillis = paged ? results.first(where: { $0.config == config.description })?.millis : nil
            let ratio = vTensorMillis.map { "; paged/vTensor time \(fixed(ms / $0, 3))" } ?? ""
            print("  \(label): \(fixed(ms, 3)) ms (min \(fixed(sorted.first!, 3)), max \(fixed(sorted.last!, 3))) = \(fixed(tflops, 1)) TFLOP/s\(ratio)")
            results.append(PrefillTimingResult(
                name: c.name, config: label, millis: ms, spreadMillis: [sorted.first!, sorted.last!],
                flops: c.flops, tflops: tflops, fractionOfCeiling: tflops / ceiling,
                flashAttention2: c.flashAttention2, target: c.target,
                pageTokens: paged ? pageTokens : nil, vTensorMillis: vTensorMillis))
        }
        return results
    }
}
