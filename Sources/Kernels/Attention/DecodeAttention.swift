import GPU
import VTensor

/// Decode attention on the GPU: split-KV (FlashDecoding) over a persistent grid, GQA-aware
/// (each K/V tile is read once for all query heads of its group, on tensor cores), reading K/V
/// through virtual-tensor views or, for the paged baseline, through block tables.
///
/// Computes the `AttentionParameters` contract for any batch (built for queryCount == 1; a
/// request with several queries gets one pass over its keys per query). Head dim 64 or 128,
/// bf16 or fp16, any GQA ratio (groups above 16 query heads re-read K/V once per 16), optional
/// sliding window. Q and O are [totalQueries][queryHeads][headDim] in device memory.
///
/// Use: `prepare` a batch (host planning plus one small upload, on `stream`), then `run` it,
/// once or many times (e.g. once per layer with per-layer batches). A `DecodeAttention` owns
/// the partial-result workspace; launches that share it must go to one stream.
public final class DecodeAttention: @unchecked Sendable {
    /// Compile-time shape of the kernel.
    public struct Config: Sendable, Hashable, Codable, CustomStringConvertible {
        /// Warps per CTA (each takes 16-token steps of a segment in turn).
        public var warps: Int
        /// 16-token sub-steps whose loads a warp issues before computing.
        public var subSteps: Int
        /// CTAs per multiprocessor the launch bounds ask for; the grid is SMs x this.
        public var minBlocks: Int
        /// Q fragments read from shared memory each step (32 fewer registers at head dim 128).
        public var qInShared: Bool
        /// K/V loads ask L2 for whole 256-byte blocks (`.L2::256B`).
        public var l2Prefetch: Bool

        public init(warps: Int = 4, subSteps: Int, minBlocks: Int, qInShared: Bool = false, l2Prefetch: Bool = false) {
            self.warps = warps
            self.subSteps = subSteps
            self.minBlocks = minBlocks
            self.qInShared = qInShared
            self.l2Prefetch = l2Prefetch
        }

        /// Measured on H100 (dev decode --ab, 2026-11-27): L2::256B loads gained 1.3-2.5% on every
        /// shape; Q in shared memory with one more CTA per SM lost 0-4% (30% at 8 x 1k).
        public static func standard(headDim: Int) -> Config {
            headDim == 64 ? Config(subSteps: 2, minBlocks: 3, l2Prefetch: true) : Config(subSteps: 1, minBlocks: 2, l2Prefetch: true)
        }

        /// `standard(headDim:)` for a device: on an H200 the L2::256B hint costs (same-machine A/B,
        /// 2026-11-27: decode 4.341 vs 4.375 TB/s at 128 x 16k without it, a plain read 7% slower
        /// with it), on an H100 it pays 0.6-2.5%; other cards keep the H100 choice.
        public static func standard(headDim: Int, deviceName: String) -> Config {
            var config = standard(headDim: headDim)
            config.l2Prefetch = !deviceName.contains("H200")
            return config
        }

        public var description: String {
            "\(warps) warps, \(subSteps) x 16 tokens a step, \(minBlocks) CTAs/SM" + (qInShared ? ", Q in shared memory" : "")
                + (l2Prefetch ? ", L2::256B" : "")
        }
    }

    public let parameters: AttentionParameters
    public let paged: Bool
    public let config: Config
    public let module: KernelModule
    public let multiprocessors: Int
    /// CTAs that keep DRAM busy, for the schedule's choice of whole pairs (0: always split).
    public var saturatingCTAs: Int
    let kernel: KernelFunction
    private var partialO: DeviceBuffer?
    private var partialML: DeviceBuffer?
    private var counters: DeviceBuffer?
    /// Page-locked host memory the per-step plans are written into and uploaded from.
    private var staging: UploadStaging?

    public static func supports(_ p: AttentionParameters) -> Bool {
        (p.headDim == 64 || p.headDim == 128) && (p.dtype == .bf16 || p.dtype == .fp16)
    }

    public static func program(headDim: Int, dtype: KVDType, paged: Bool, config: Config) -> KernelSource {
        precondition(headDim == 64 || headDim == 128, "decode attention supports head dim 64 and 128")
        precondition(dtype != .fp32, "decode attention needs bf16 or fp16")
        return KernelSource(
            name: "vtensor_decode_attention.cu", source: DecodeKernelSource.text,
            options: ["-DHEAD_DIM=\(headDim)", "-DFP16=\(dtype == .fp16 ? 1 : 0)", "-DPAGED=\(paged ? 1 : 0)",
                      "-DWARPS=\(config.warps)", "-DNSUB=\(config.subSteps)", "-DMIN_BLOCKS=\(config.minBlocks)",
                      "-DQSMEM=\(config.qInShared ? 1 : 0)", "-DL2HINT=\(config.l2Prefetch ? 1 : 0)"])
    }

    /// Every program this file launches (for `KernelCatalog`).
    public static var catalog: [KernelSource] {
        [64, 128].flatMap { d in
            [KVDType.bf16, .fp16].flatMap { dtype in
                [false, true].map { paged in program(headDim: d, dtype: dtype, paged: paged, config: .standard(headDim: d)) }
            }
        }
    }

    public init(compiler: KernelCompiler, parameters: AttentionParameters, paged: Bool = false, config: Config? = nil) throws {
        precondition(Self.supports(parameters), "decode attention does not support \(parameters)")
        self.parameters = parameters
        self.paged = paged
        self.config = config ?? .standard(headDim: parameters.headDim, deviceName: compiler.context.device.name)
        multiprocessors = compiler.context.device.multiprocessorCount
        saturatingCTAs = multiprocessors
        let program = Self.program(headDim: parameters.headDim, dtype: parameters.dtype, paged: paged, config: self.config)
        module = try compiler.module(source: program.source, name: program.name, options: program.options)
        kernel = try module.function(named: "vt_decode_attention")
    }

    /// CTAs of a full grid.
    public var defaultMaxCTAs: Int { multiprocessors * config.minBlocks }

    /// The work split of a batch (host only).
    /// `maxCTAs` defaults to a full grid, `minTokensPerCTA` to one 16-token step per warp.
    /// `sharedPrefixes`: tiles of requests whose first keys are one copy (cascade), read once a tile.
    public func schedule(_ requests: [DecodeSchedule.Request], maxCTAs: Int? = nil, minTokensPerCTA: Int? = nil,
                         sharedPrefixes: [DecodeSchedule.SharedPrefix] = []) -> DecodeSchedule {
        DecodeSchedule(requests: requests, queryHeads: parameters.queryHeads, kvHeads: parameters.kvHeads,
                       window: parameters.window, maxCTAs: maxCTAs ?? defaultMaxCTAs, minTokensPerCTA: minTokensPerCTA ?? 16 * config.warps,
                       saturatingCTAs: saturatingCTAs, sharedPrefixes: sharedPrefixes)
    }

    /// Requests a cascade tile holds with this model's group (1: none; a sliding window has none).
    public var membersPerTile: Int { parameters.window == nil ? DecodeSchedule.membersPerTile(groupSize: parameters.groupSize) : 1 }

    /// Plans `requests` (virtual-tensor views) and uploads the plan on `stream`.
    public func prepare(_ requests: [AttentionRequest], stream: CUDAStream, maxCTAs: Int? = nil,
                        minTokensPerCTA: Int? = nil, sharedPrefixes: [DecodeSchedule.SharedPrefix] = []) throws -> DecodeBatch {
        precondition(!paged, "this kernel reads through block tables")
        let plan = schedule(requests.map { .init(length: $0.length, queryStart: $0.queryStart, queryCount: $0.queryCount) }, maxCTAs: maxCTAs,
                            minTokensPerCTA: minTokensPerCTA, sharedPrefixes: sharedPrefixes)
        return try upload(plan, items: plan.kernelItems { (requests[$0].key.base, requests[$0].value.base) },
                          geometry: DecodeKVGeometry(requests), kPool: 0, vPool: 0, stream: stream)
    }

    /// Plans a paged batch (block tables into `pool`) and uploads the plan on `stream`.
    public func prepare(_ requests: [PagedRequest], pool: PagedKVPool, stream: CUDAStream, maxCTAs: Int? = nil,
                        minTokensPerCTA: Int? = nil, sharedPrefixes: [DecodeSchedule.SharedPrefix] = []) throws -> DecodeBatch {
        precondition(paged, "this kernel reads through views")
        let p = parameters
        precondition(pool.kvHeads == p.kvHeads && pool.headDim == p.headDim && pool.dtype == p.dtype, "pool does not match the parameters")
        let plan = schedule(requests.map { .init(length: $0.length, queryStart: $0.queryStart, queryCount: $0.queryCount) }, maxCTAs: maxCTAs,
                            minTokensPerCTA: minTokensPerCTA, sharedPrefixes: sharedPrefixes)
        return try upload(plan, items: plan.kernelItems { (requests[$0].blockTable, 0) }, geometry: DecodeKVGeometry(pool),
                          kPool: pool.keys, vPool: pool.values, stream: stream)
    }

    private func upload(_ plan: DecodeSchedule, items: [UInt8], geometry: DecodeKVGeometry, kPool: UInt64, vPool: UInt64,
                        stream: CUDAStream) throws -> DecodeBatch {
        try ensureWorkspace(slots: plan.partialSlots, pairs: plan.pairs, stream: stream)
        let buffer = try DeviceBuffer(context: module.context, bytes: max(items.count, 16))
        try items.withUnsafeBytes { try module.context.copyHostToDeviceAsync(destination: buffer.address, source: $0, stream: stream) }
        return DecodeBatch(schedule: plan, geometry: geometry, kPool: kPool, vPool: vPool, address: buffer.address, owner: buffer)
    }

    /// Plans one decode batch for every layer of a model (same requests and lengths, each
    /// layer's own K/V views): one schedule, one upload of every layer's work items into
    /// `workspace` (grown when too small; no allocation otherwise), written straight into
    /// page-locked staging memory. Layer i's items sit at i x `layerStride(of:)` bytes, so a
    /// step shape (the plan's CTAs and items) always gives the same addresses (CUDA graphs).
    /// The batches are valid until the next call: the caller orders the next call after this
    /// step's kernels (a step sync).
    public func prepare(layers: [[AttentionRequest]], stream: CUDAStream, workspace: inout DeviceBuffer?,
                        maxCTAs: Int? = nil, minTokensPerCTA: Int? = nil, sharedPrefixes: [DecodeSchedule.SharedPrefix] = []) throws -> [DecodeBatch] {
        precondition(!paged, "this kernel reads through block tables")
        guard let first = layers.first else { return [] }
        let plan = schedule(first.map { .init(length: $0.length, queryStart: $0.queryStart, queryCount: $0.queryCount) }, maxCTAs: maxCTAs,
                            minTokensPerCTA: minTokensPerCTA, sharedPrefixes: sharedPrefixes)
        try ensureWorkspace(slots: plan.partialSlots, pairs: plan.pairs, stream: stream)
        let stride = Self.layerStride(of: plan)
        let total = max(stride * layers.count, 16)
        if (workspace?.bytes ?? 0) < total {
            workspace = try DeviceBuffer(context: module.context, bytes: max(total * 3 / 2, 4096))
        }
        let buffer = workspace!
        if staging == nil { staging = try UploadStaging(context: module.context) }
        let host = try staging!.begin(bytes: total)
        host.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        for (i, requests) in layers.enumerated() {
            precondition(requests.count == first.count && zip(requests, first).allSatisfy { $0.length == $1.length },
                         "every layer must hold the same requests")
            plan.writeKernelItems(to: host + i * stride) { (requests[$0].key.base, requests[$0].value.base) }
        }
        try staging!.upload(offset: 0, count: total, to: buffer.address, stream: stream)
        try staging!.end(stream: stream)
        return layers.enumerated().map { i, requests in
            DecodeBatch(schedule: plan, geometry: DecodeKVGeometry(requests), kPool: 0, vPool: 0,
                        address: buffer.address + UInt64(i * stride), owner: buffer)
        }
    }

    /// Plans one decode batch for every layer of a model whose layers sit at fixed offsets from
    /// each request's layer-0 K and V (one range per request, as the blocked layout has): one
    /// schedule and one item table of layer-0 bases for all layers, each layer's batch adding its
    /// `layerOffsets` (bytes). A table per layer (`prepare(layers:)`) writes and uploads
    /// `layers` times as much. Valid until the next call, as `prepare(layers:)`.
    /// `fixedGrid`: launch a full grid (`defaultMaxCTAs`) whatever the plan needs, the CTAs
    /// past the plan's own returning at once, so a captured launch (CUDA graph) stays valid for
    /// any batch.
    public func prepare(layerZero requests: [AttentionRequest], layerOffsets: [(key: UInt64, value: UInt64)], stream: CUDAStream,
                        workspace: inout DeviceBuffer?, maxCTAs: Int? = nil, minTokensPerCTA: Int? = nil,
                        fixedGrid: Bool = false, sharedPrefixes: [DecodeSchedule.SharedPrefix] = []) throws -> [DecodeBatch] {
        precondition(!paged, "this kernel reads through block tables")
        let (plan, address, buffer, grid) = try uploadOneTable(
            requests.map { .init(length: $0.length, queryStart: $0.queryStart, queryCount: $0.queryCount) },
            addresses: { (requests[$0].key.base, requests[$0].value.base) }, stream: stream, workspace: &workspace,
            maxCTAs: maxCTAs, minTokensPerCTA: minTokensPerCTA, fixedGrid: fixedGrid, sharedPrefixes: sharedPrefixes)
        let geometry = DecodeKVGeometry(requests)
        return layerOffsets.map { offset in
            DecodeBatch(schedule: plan, geometry: geometry, kPool: offset.key, vPool: offset.value, address: address, owner: buffer,
                        launchCTAs: grid)
        }
    }

    /// Plans one paged decode batch for every layer of a model: the requests' block tables are
    /// the same in every layer (the layers' pools share page ids), so one schedule and one item
    /// table serve them all, uploaded once into `workspace`; each layer's batch differs only in
    /// its pools. Valid until the next call, as `prepare(layers:)`.
    public func prepare(paged requests: [PagedRequest], pools: [PagedKVPool], stream: CUDAStream, workspace: inout DeviceBuffer?,
                        maxCTAs: Int? = nil, minTokensPerCTA: Int? = nil, fixedGrid: Bool = false,
                        sharedPrefixes: [DecodeSchedule.SharedPrefix] = []) throws -> [DecodeBatch] {
        precondition(paged, "this kernel reads through views")
        guard let first = pools.first else { return [] }
        let p = parameters
        precondition(first.kvHeads == p.kvHeads && first.headDim == p.headDim && first.dtype == p.dtype, "pool does not match the parameters")
        let (plan, address, buffer, grid) = try uploadOneTable(
            requests.map { .init(length: $0.length, queryStart: $0.queryStart, queryCount: $0.queryCount) },
            addresses: { (requests[$0].blockTable, 0) }, stream: stream, workspace: &workspace,
            maxCTAs: maxCTAs, minTokensPerCTA: minTokensPerCTA, fixedGrid: fixedGrid, sharedPrefixes: sharedPrefixes)
        return pools.map { pool in
            DecodeBatch(schedule: plan, geometry: DecodeKVGeometry(pool), kPool: pool.keys, vPool: pool.values, address: address, owner: buffer,
                        launchCTAs: grid)
        }
    }

    /// Schedules a batch and uploads its one item table (each request's two addresses from
    /// `addresses`) into `workspace`, grown when too small, through the page-locked staging.
    /// Returns the grid to launch: the plan's CTAs, or a full grid with `fixedGrid`.
    private func uploadOneTable(_ requests: [DecodeSchedule.Request], addresses: (Int) -> (UInt64, UInt64), stream: CUDAStream,
                                workspace: inout DeviceBuffer?, maxCTAs: Int?, minTokensPerCTA: Int?, fixedGrid: Bool,
                                sharedPrefixes: [DecodeSchedule.SharedPrefix])
        throws -> (plan: DecodeSchedule, address: UInt64, buffer: DeviceBuffer, grid: Int) {
        let plan = schedule(requests, maxCTAs: maxCTAs, minTokensPerCTA: minTokensPerCTA, sharedPrefixes: sharedPrefixes)
        let grid = fixedGrid ? max(maxCTAs ?? defaultMaxCTAs, plan.ctas) : plan.ctas
        try ensureWorkspace(slots: plan.partialSlots, pairs: plan.pairs, stream: stream)
        let bytes = plan.kernelItemsBytes(grid: grid)
        let total = max(bytes, 16)
        if (workspace?.bytes ?? 0) < total {
            workspace = try DeviceBuffer(context: module.context, bytes: max(total * 3 / 2, 4096))
        }
        let buffer = workspace!
        if staging == nil { staging = try UploadStaging(context: module.context) }
        let host = try staging!.begin(bytes: total)
        plan.writeKernelItems(to: host, grid: grid, addresses: addresses)
        try staging!.upload(offset: 0, count: bytes, to: buffer.address, stream: stream)
        try staging!.end(stream: stream)
        return (plan, buffer.address, buffer, grid)
    }

    /// Bytes between two layers' item tables in `prepare(layers:)`: the plan's table, 256-byte aligned.
    public static func layerStride(of plan: DecodeSchedule) -> Int {
        (plan.kernelItemsBytes + 255) / 256 * 256
    }

    /// Most work items a batch of `maxRequests` decode requests can need (one per CTA, plus one
    /// per (request, KV head, head block) pair and per tile and KV head).
    public func maxItems(maxRequests: Int) -> Int {
        DecodeSchedule.maxItems(requests: maxRequests, kvHeads: parameters.kvHeads, groupSize: parameters.groupSize, maxCTAs: defaultMaxCTAs)
    }

    /// Bytes of one layer's work items (and tiles' member entries) for `maxRequests` requests
    /// (what `prepare(layers:)` uploads per layer).
    public func itemBytesPerLayer(maxRequests: Int) -> Int {
        let members = DecodeSchedule.maxMembers(requests: maxRequests, kvHeads: parameters.kvHeads, groupSize: parameters.groupSize,
                                                maxCTAs: defaultMaxCTAs)
        return (maxItems(maxRequests: maxRequests) * DecodeSchedule.kernelItemBytes + members * DecodeSchedule.kernelMemberBytes + 255) / 256 * 256
    }

    /// Allocates the split-KV scratch (partial outputs, merge counters) for up to `maxRequests`
    /// requests now, so decode steps never allocate.
    public func reserveWorkspace(maxRequests: Int, stream: CUDAStream) throws {
        let slots = DecodeSchedule.maxPartialSlots(requests: maxRequests, kvHeads: parameters.kvHeads, groupSize: parameters.groupSize,
                                                   maxCTAs: defaultMaxCTAs)
        try ensureWorkspace(slots: slots, pairs: maxItems(maxRequests: maxRequests), stream: stream)
    }

    /// Device bytes of the split-KV scratch.
    public var workspaceBytes: Int { (partialO?.bytes ?? 0) + (partialML?.bytes ?? 0) + (counters?.bytes ?? 0) }

    private func ensureWorkspace(slots: Int, pairs: Int, stream: CUDAStream) throws {
        let rows = DecodeSchedule.rowsPerHeadBlock
        let oBytes = max(1, slots) * rows * parameters.headDim * 4
        if (partialO?.bytes ?? 0) < oBytes {
            partialO = try DeviceBuffer(context: module.context, bytes: oBytes * 3 / 2)
            partialML = try DeviceBuffer(context: module.context, bytes: max(1, slots) * rows * 8 * 3 / 2)
        }
        let cBytes = max(1, pairs) * 4
        if (counters?.bytes ?? 0) < cBytes {
            let buffer = try DeviceBuffer(context: module.context, bytes: max(4096, cBytes * 3 / 2))
            try module.context.memset8Async(destination: buffer.address, value: 0, bytes: buffer.bytes, stream: stream)
            counters = buffer
        }
    }

    /// Queues the kernel for a prepared batch. The context must be current on this thread;
    /// `stream` must be the one the batch was prepared on (or ordered after it).
    /// - Parameter dependent: launch with programmatic dependent launch (the kernel waits on
    ///   `griddepcontrol.wait` before reading anything, so it may start during the previous kernel).
    public func run(_ batch: DecodeBatch, queries: UInt64, output: UInt64, stream: CUDAStream, dependent: Bool = false) throws {
        let plan = batch.schedule
        guard batch.launchCTAs > 0 else { return }
        precondition((partialO?.bytes ?? 0) >= max(1, plan.partialSlots) * DecodeSchedule.rowsPerHeadBlock * parameters.headDim * 4 &&
                     (counters?.bytes ?? 0) >= plan.pairs * 4, "batch prepared by another DecodeAttention")
        let p = parameters
        let base = batch.address
        let arguments: [KernelArgument] = [.pointer(base), .pointer(queries), .pointer(output),
                        .pointer(partialO!.address), .pointer(partialML!.address), .pointer(counters!.address),
                        .pointer(batch.kPool), .pointer(batch.vPool)]
                + batch.geometry.arguments
                + [.int32(Int32(p.queryHeads)), .int32(Int32(p.groupSize)), .int32(Int32(plan.headBlocks)),
                   .float32(p.scale * 1.442_695_040_888_963_4)]
        let grid = (batch.launchCTAs, 1, 1), block = (32 * config.warps, 1, 1)
        if dependent {
            try kernel.launchDependent(grid: grid, block: block, stream: stream, arguments: arguments)
        } else {
            try kernel.launch(grid: grid, block: block, stream: stream, arguments: arguments)
        }
    }

    /// Prepares and runs in one call. The plan's buffer is freed on return (cuMemFree waits for
    /// the device): for tests and one-off calls; hot paths keep `prepare`d batches.
    public func run(_ requests: [AttentionRequest], queries: UInt64, output: UInt64, stream: CUDAStream) throws {
        try run(prepare(requests, stream: stream), queries: queries, output: output, stream: stream)
    }
}

/// A decode batch in device memory: the work items (with the requests' K/V addresses, so one
/// batch per layer). Independent of Q and O.
public final class DecodeBatch: @unchecked Sendable {
    public let schedule: DecodeSchedule
    public let geometry: DecodeKVGeometry
    let kPool: UInt64
    let vPool: UInt64
    let address: UInt64
    /// Keeps the device memory at `address` alive.
    let owner: AnyObject
    /// The grid launched: the plan's CTAs, or more (a fixed grid whose extra CTAs have empty items).
    public let launchCTAs: Int

    init(schedule: DecodeSchedule, geometry: DecodeKVGeometry, kPool: UInt64, vPool: UInt64, address: UInt64, owner: AnyObject,
         launchCTAs: Int? = nil) {
        self.launchCTAs = launchCTAs ?? schedule.ctas
        self.schedule = schedule
        self.geometry = geometry
        self.kPool = kPool
        self.vPool = vPool
        self.address = address
        self.owner = owner
    }
}
