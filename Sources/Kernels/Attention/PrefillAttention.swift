import GPU
import VTensor

/// A batch laid out for the prefill kernel: the per-request descriptors and the tile table,
/// as the bytes the kernel reads, plus the strides every request shares.
public struct PrefillPlan: Sendable, Equatable {
    /// 32 bytes per request (K base, V base, length, queryStart, queryCount, 0; paged: block
    /// table, 0, ...), then 8 bytes per tile (request, queryBegin), longest tiles first.
    public var descriptor: [UInt8]
    public var requestCount: Int
    public var tileCount: Int
    /// Byte offset of the tile table in `descriptor`.
    public var tileTableOffset: Int { requestCount * 32 }
    public var tokenStride: Int
    public var headStride: Int
    public var blockStride: Int
    public var tokensPerBlock: Int
    /// Paged plans: the K and V pools (block tables index their pages); 0 for views.
    public var kPool: UInt64 = 0
    public var vPool: UInt64 = 0
    public var paged: Bool = false
    /// Bytes of device memory `upload` needs.
    public var workspaceBytes: Int { max(descriptor.count, 16) }

    /// - Precondition: every view shares one set of strides (one KV cache), rows are 16-byte
    ///   aligned, and `length * tokensPerBlock < 2^32` (the kernel's fast division).
    public init(_ p: AttentionParameters, requests: [AttentionRequest], config: PrefillTileConfig) {
        let first = requests.first?.key
        tokenStride = first?.tokenStride ?? 0
        headStride = first?.headStride ?? 0
        blockStride = first?.blockStride ?? 0
        tokensPerBlock = first?.tokensPerBlock ?? 1
        for request in requests {
            for view in [request.key, request.value] {
                precondition(view.tokenStride == tokenStride && view.headStride == headStride &&
                             view.blockStride == blockStride && view.tokensPerBlock == tokensPerBlock,
                             "every K/V view of a prefill batch must share its strides")
                precondition(view.base % 16 == 0 && view.tokenStride % 16 == 0 && view.headStride % 16 == 0 &&
                             view.blockStride % 16 == 0, "K/V rows must be 16-byte aligned")
            }
            precondition(request.queryCount >= 0 && request.queryCount <= request.length, "queries must be the last tokens of the KV")
            precondition(request.length < Int(Int32.max) && (request.length + config.blockN) * tokensPerBlock < 1 << 32,
                         "request of \(request.length) tokens is too long for the kernel's index math")
            precondition(blockStride < 1 << 32 && tokensPerBlock * tokenStride < 1 << 32,
                         "a KV block must be under 4 GiB for the kernel's index math")
        }
        (descriptor, requestCount, tileCount) = Self.encode(
            p, requests.map { ($0.key.base, $0.value.base, $0.length, $0.queryStart, $0.queryCount) }, config: config)
    }

    /// A paged batch: block tables (device addresses of int32 page ids) into `pool`.
    /// - Precondition: the pool matches the parameters; `length * pageTokens < 2^32`.
    public init(_ p: AttentionParameters, requests: [PagedRequest], pool: PagedKVPool, config: PrefillTileConfig) {
        precondition(pool.kvHeads == p.kvHeads && pool.headDim == p.headDim && pool.dtype == p.dtype, "pool does not match the parameters")
        precondition(pool.keys % 16 == 0 && pool.values % 16 == 0 && pool.tokenStride % 16 == 0 && pool.headStride % 16 == 0,
                     "pool rows must be 16-byte aligned")
        precondition(pool.pageStride < 1 << 32, "a page must be under 4 GiB for the kernel's index math")
        tokenStride = pool.tokenStride
        headStride = pool.headStride
        blockStride = pool.pageStride
        tokensPerBlock = pool.pageTokens
        kPool = pool.keys
        vPool = pool.values
        paged = true
        for request in requests {
            precondition(request.blockTable % 4 == 0, "block tables must be int32-aligned")
            precondition(request.queryCount >= 0 && request.queryCount <= request.length, "queries must be the last tokens of the KV")
            precondition(request.length < Int(Int32.max) && (request.length + config.blockN) * tokensPerBlock < 1 << 32,
                         "request of \(request.length) tokens is too long for the kernel's index math")
        }
        (descriptor, requestCount, tileCount) = Self.encode(
            p, requests.map { ($0.blockTable, 0, $0.length, $0.queryStart, $0.queryCount) }, config: config)
    }

    private static func encode(_ p: AttentionParameters, _ requests: [(key: UInt64, value: UInt64, length: Int, queryStart: Int, queryCount: Int)],
                               config: PrefillTileConfig) -> ([UInt8], Int, Int) {
        let schedule = PrefillSchedule(requests: requests.map { ($0.length, $0.queryCount) },
                                       blockM: config.blockM, blockN: config.blockN, window: p.window)
        var bytes = [UInt8]()
        bytes.reserveCapacity(32 * requests.count + 8 * schedule.tiles.count)
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        for request in requests {
            append(request.key)
            append(request.value)
            append(Int32(request.length))
            append(Int32(request.queryStart))
            append(Int32(request.queryCount))
            append(Int32(0))
        }
        for tile in schedule.tiles {
            append(Int32(tile.request))
            append(Int32(tile.queryBegin))
        }
        return (bytes, requests.count, schedule.tiles.count)
    }
}

/// Prefill and extend attention on tensor cores (FlashAttention-2 style, `mma.sync`), reading
/// K/V through virtual-tensor views: the `AttentionParameters` contract for any batch (each
/// request's queries are the last `queryCount` of its KV; prefill, extend and decode mix).
///
/// Head dim 64 or 128, bf16 or fp16, any GQA ratio, optional sliding window.
/// Q and O are [totalQueries][queryHeads][headDim] in device memory.
///
/// `paged: true` builds the paged baseline: the same kernel reading K/V through int32 block
/// tables into a `PagedKVPool` (vLLM's layout), compiled with -DPAGED=1.
public final class PrefillAttention: @unchecked Sendable {
    public let parameters: AttentionParameters
    public let config: PrefillTileConfig
    public let paged: Bool
    public let module: KernelModule
    let kernel: KernelFunction
    let fillKernel: KernelFunction

    /// Whether the kernel handles these parameters.
    public static func supports(_ p: AttentionParameters) -> Bool {
        (p.headDim == 64 || p.headDim == 128) && (p.dtype == .bf16 || p.dtype == .fp16) && p.scale > 0
    }

    /// The program for one head dim, type and tile shape.
    /// (The virtual-tensor program's options are unchanged; paged adds -DPAGED=1.)
    public static func program(headDim: Int, dtype: KVDType, config: PrefillTileConfig, paged: Bool = false) -> KernelSource {
        precondition(headDim == 64 || headDim == 128, "prefill attention supports head dim 64 and 128")
        precondition(dtype != .fp32, "prefill attention needs bf16 or fp16")
        let shape = ["-DHEAD_DIM=\(headDim)", "-DBLOCK_M=\(config.blockM)", "-DBLOCK_N=\(config.blockN)",
                     "-DNWARPS=\(config.warps)", "-DMIN_BLOCKS=\(config.minBlocks)"]
        let fp16 = "-DFP16=\(dtype == .fp16 ? 1 : 0)"
        let pagedOption = paged ? ["-DPAGED=1"] : []
        if config.engine == .wgmma {
            return KernelSource(
                name: "vtensor_prefill_wgmma.cu",
                source: PrefillWGMMAKernelSource.text(blockN: config.blockN, headDim: headDim, producer: config.producer),
                options: shape + [fp16]
                    + (config.producer ? ["-DSTAGES=\(config.stages)", "-DPINGPONG=\(config.pingpong ? 1 : 0)"] : []) + pagedOption,
                archSuffix: "a")
        }
        return KernelSource(name: "vtensor_prefill_attention.cu", source: PrefillKernelSource.text,
                            options: shape + ["-DINTERLEAVE=\(config.interleave ? 1 : 0)", fp16] + pagedOption)
    }

    /// Every program this file launches (for `KernelCatalog`): every candidate shape with
    /// views, and the standard shape paged.
    public static var catalog: [KernelSource] {
        [64, 128].flatMap { d in
            [KVDType.bf16, .fp16].flatMap { dtype in
                PrefillTileConfig.candidates(headDim: d, wgmma: true).map { program(headDim: d, dtype: dtype, config: $0) }
                    + PrefillTileConfig.pagedCandidates(headDim: d, wgmma: true).map { program(headDim: d, dtype: dtype, config: $0, paged: true) }
            }
        }
    }

    /// - Parameter defines: extra `NAME=VALUE` macros (experiments: `vtensor dev prefill --define`).
    public init(compiler: KernelCompiler, parameters: AttentionParameters, config: PrefillTileConfig? = nil, paged: Bool = false,
                defines: [String] = []) throws {
        precondition(Self.supports(parameters), "prefill attention does not support \(parameters)")
        self.parameters = parameters
        self.config = config ?? .standard(headDim: parameters.headDim, wgmma: Self.hasWGMMA(compiler.context.device.computeCapability))
        self.paged = paged
        var program = Self.program(headDim: parameters.headDim, dtype: parameters.dtype, config: self.config, paged: paged)
        program.options += defines.map { "-D\($0)" }
        if self.config.engine == .wgmma && !Self.hasWGMMA(compiler.context.device.computeCapability) {
            throw GPUError.unsupportedDevice("wgmma prefill needs compute capability 9.0 (sm_90a); this device is \(compiler.context.device.computeCapability)")
        }
        module = try compiler.module(source: program.source, name: program.name, options: program.options, archSuffix: program.archSuffix)
        kernel = try module.function(named: "vt_prefill_attention")
        fillKernel = try module.function(named: "vt_prefill_fill")
        try kernel.setMaxDynamicSharedMemory(sharedMemoryBytes)
    }

    /// Whether a device of this capability runs the wgmma kernel (sm_90a code runs on 9.0 only).
    public static func hasWGMMA(_ capability: ComputeCapability) -> Bool {
        capability.major == 9 && capability.minor == 0
    }

    public var sharedMemoryBytes: Int { config.sharedMemoryBytes(headDim: parameters.headDim) }

    /// The descriptor and tile table of a batch (host work only).
    public func plan(_ requests: [AttentionRequest]) -> PrefillPlan {
        precondition(!paged, "this kernel reads through block tables")
        return PrefillPlan(parameters, requests: requests, config: config)
    }

    /// The descriptor and tile table of a paged batch (host work only).
    public func plan(_ requests: [PagedRequest], pool: PagedKVPool) -> PrefillPlan {
        precondition(paged, "this kernel reads through views")
        return PrefillPlan(parameters, requests: requests, pool: pool, config: config)
    }

    /// Copies the plan's bytes to `workspace` (at least `plan.workspaceBytes`), synchronously.
    public func upload(_ plan: PrefillPlan, workspace: UInt64) throws {
        try plan.descriptor.withUnsafeBytes { try module.context.copyHostToDevice(destination: workspace, source: $0) }
    }

    /// Queues the kernel for an uploaded plan. The context must be current on this thread.
    public func launch(_ plan: PrefillPlan, workspace: UInt64, queries: UInt64, output: UInt64, stream: CUDAStream?) throws {
        guard plan.tileCount > 0 else { return }
        precondition(plan.paged == paged, paged ? "this kernel reads through block tables" : "this kernel reads through views")
        let p = parameters
        let blocks = plan.tileCount * p.queryHeads
        precondition(blocks < Int(Int32.max), "batch too large for one launch")
        try kernel.launch(
            grid: (blocks, 1, 1), block: (config.threads, 1, 1), sharedMemoryBytes: sharedMemoryBytes, stream: stream,
            arguments: [
                .pointer(queries), .pointer(output), .pointer(workspace), .pointer(workspace + UInt64(plan.tileTableOffset)),
                .int32(Int32(p.queryHeads)), .int32(Int32(p.groupSize)), .float32(p.scale * 1.442_695_040_888_963_4),
                .int32(Int32(p.window ?? 0)),
                .uint32(UInt32(plan.tokenStride)), .uint64(UInt64(plan.headStride)), .uint32(UInt32(plan.blockStride)),
                .uint32(UInt32(plan.tokensPerBlock)), .uint32(PrefillSchedule.divisionMagic32(plan.tokensPerBlock)),
            ] + (paged ? [.pointer(plan.kPool), .pointer(plan.vPool)] : []))
    }

    /// Plans, uploads into `workspace` (grown when too small) and launches.
    public func run(_ requests: [AttentionRequest], queries: UInt64, output: UInt64, workspace: inout DeviceBuffer?,
                    stream: CUDAStream?) throws {
        try run(plan(requests), queries: queries, output: output, workspace: &workspace, stream: stream)
    }

    /// Plans a paged batch (block tables into `pool`), uploads into `workspace` (grown when too
    /// small) and launches.
    public func run(_ requests: [PagedRequest], pool: PagedKVPool, queries: UInt64, output: UInt64, workspace: inout DeviceBuffer?,
                    stream: CUDAStream?) throws {
        try run(plan(requests, pool: pool), queries: queries, output: output, workspace: &workspace, stream: stream)
    }

    /// Uploads a plan into `workspace` (grown when too small) and launches.
    public func run(_ plan: PrefillPlan, queries: UInt64, output: UInt64, workspace: inout DeviceBuffer?, stream: CUDAStream?) throws {
        if (workspace?.bytes ?? 0) < plan.workspaceBytes {
            workspace = try DeviceBuffer(context: module.context, bytes: max(plan.workspaceBytes, 4096))
        }
        try upload(plan, workspace: workspace!.address)
        try launch(plan, workspace: workspace!.address, queries: queries, output: output, stream: stream)
    }

    /// Fills `count` elements at `address` with uniform values in [-amplitude, amplitude) of
    /// the parameters' dtype (for timing inputs).
    public func fillRandom(address: UInt64, count: Int, seed: UInt32, amplitude: Float = 1, stream: CUDAStream?) throws {
        guard count > 0 else { return }
        try fillKernel.launch(grid: (min(8192, (count + 255) / 256), 1, 1), block: (256, 1, 1), stream: stream,
                              arguments: [.pointer(address), .uint64(UInt64(count)), .uint32(seed), .float32(amplitude)])
    }
}
