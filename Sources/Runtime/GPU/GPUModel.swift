import Foundation
import GPU
import Kernels
import Models
import Support
import VTensor

/// Where the GPU model keeps its KV cache: virtual tensors mapped as requests grow (the
/// default), or a pool of 16-token pages reserved up front with block tables (the paged
/// baseline, vLLM's design, for the A/B).
public enum KVMode: String, Sendable, CaseIterable, Codable {
    case vtensor, paged
}

/// The Llama-family forward pass on one GPU in bf16 (fp32 residual stream and accumulation),
/// over a KV cache of virtual tensors mapped on demand (CUDA VMM).
///
/// A step: host planning and every upload first (the stream is idle then, so pageable copies
/// cost no overlap), then all kernels back to back, then one read of the results. Workspace
/// is allocated once for `maxBatchTokens`; nothing is allocated per step.
public final class GPUModel: @unchecked Sendable {
    public let config: ModelConfig
    public let context: CUDAContext
    public let stream: CUDAStream
    public let compiler: KernelCompiler
    public let weights: GPUWeights
    /// The KV cache: virtual tensors mapped as requests grow (`memory`, `cache`), or the paged
    /// baseline's pool reserved up front (`kvMode == .paged`).
    public let kvStorage: KVStorage
    public var memory: VirtualMemory? { kvStorage.virtualCache?.memory }
    public var cache: KVCache? { kvStorage.virtualCache }
    /// Paged mode: every layer's K and V pools (one allocation) and the requests' block tables
    /// on the device ([slot][page] int32), mirrored from `kvStorage.pagedCache`.
    private let pagedPool: DeviceBuffer?
    private let blockTables: DeviceBuffer?
    public let pagedPools: [PagedKVPool]
    public let maxBatchTokens: Int
    /// Rows of logits one step can return.
    public let maxLogitRows: Int
    public let attention: AttentionParameters
    /// The experiment switches, fixed at construction.
    public let options: Options

    let kernels: ModelKernels
    let decode: DecodeAttention
    let prefill: PrefillAttention
    /// Picks tokens from the logits rows on the GPU, for up to `maxLogitRows` rows a step.
    let sampler: GPUSampler
    let workspace: Workspace
    var decodeWorkspace: DeviceBuffer?
    /// Decode tiles planned, and the K/V bytes (all layers) they spared reading again, over the
    /// model's life (`sharedPrefixDecode`).
    public private(set) var sharedPrefixTiles = 0
    public private(set) var sharedPrefixBytesSaved = 0
    var prefillWorkspace: DeviceBuffer?
    /// Page-locked host memory each step's metadata and prefill plans are uploaded from, two
    /// sets used by alternate steps: queueing step N+1 never waits for step N's copies.
    let metaStagings: [UploadStaging]
    let prefillStagings: [UploadStaging]
    /// cuBLASLt products by shape (a step's token count is part of it), on one shared handle.
    var matmuls: [String: CuBLASLtMatmul] = [:]
    private var blasHandle: CuBLASLtHandle?
    private let lock = NSLock()

    /// Which matmul runs skinny products (decode): our GEMV kernel for up to 4 token rows and our
    /// tensor-core skinny kernel up to 16 (cuBLASLt above), or cuBLASLt always.
    public enum MatmulPolicy: String, Sendable, CaseIterable { case auto, cublas }

    /// The forward pass's experiment switches (A/B knobs of `vtensor bench model`), one value
    /// fixed for the life of a model. The defaults are what the model runs with in service.
    public struct Options: Sendable {
        /// Which matmul runs skinny products (decode).
        public let matmulPolicy: MatmulPolicy
        /// Decode runs each layer's O, gate/up, down and the next layer's QKV as one cooperative
        /// kernel with grid barriers (see ModelKernelSource), where the driver supports it.
        public let persistentLayers: Bool
        /// Replay decode steps from CUDA graphs, one per padded batch size (`graphBucket`): a
        /// step's rows are padded up to its bucket, the padded rows writing their K/V to a padding
        /// view no request reads and their logits left unread; decode attention launches a full
        /// grid (extra CTAs return at once). Captured the second time a bucket is seen. On by
        /// default: decode steps 1-6% faster on an H200 (docs/perf.md, 2026-12-03).
        public let cudaGraphs: Bool
        /// Decode matmuls' weight prefetch per row (bytes) before griddepcontrol.wait; nil: whole
        /// rows within ~32 MiB of L2. 0 by default: on H200 any prefetch made decode slower
        /// (4.55 ms a token without, 4.85-4.98 with 4 KiB or whole rows, same machine).
        public let prefetchBytesPerRow: Int?
        /// Blocks per SM of the persistent layer kernel (0: the occupancy limit).
        public let persistentBlocksPerSM: Int
        /// Launch the fused decode matmuls with programmatic dependent launch (Hopper), so each
        /// prefetches its weights while the previous kernel finishes.
        public let programmaticLaunch: Bool
        /// Decode matmuls with at most this many row pairs split k over two warps (0: never).
        public let splitKMaxPairs: Int
        /// Decode attention's smallest split (keys per CTA); nil: the kernel's default.
        public let decodeMinTokensPerCTA: Int?
        /// Timing experiments only: fused decode steps leave attention out (the logits are wrong), so
        /// the step time with and without it measures what attention costs inside the pipelined step.
        public let timingOnlySkipAttention: Bool
        /// Decode matmuls: 16-byte loads in flight per lane per row (`-DGEMV_UNROLL`).
        public let gemvUnroll: Int
        /// Decode matmuls load their first weights before waiting on the previous kernel (`-DEARLY_WEIGHTS`).
        public let earlyWeights: Bool
        /// Weight loads ask L2 for whole 256-byte blocks; nil: on, except on an H200.
        public let weightL2Hint: Bool?
        /// Decode attention's kernel shape; nil: the standard one for the head dimension.
        public let decodeConfig: DecodeAttention.Config?
        /// In a step that mixes one-token rows (decodes) with longer ones (prompt chunks), run the
        /// one-token rows through decode attention and the rest through prefill attention (off:
        /// every row of a mixed step through prefill attention, as before the engine).
        public var splitMixedAttention: Bool
        /// Decode attention reads one table of layer-0 K/V bases with a per-layer offset (where
        /// the layout puts layers at fixed offsets), instead of a table per layer.
        public var sharedDecodeTable: Bool
        /// Virtual-tensor KV: grant access once per run of adjacent chunks the mapper maps
        /// together (`VirtualMemory.accessPerRun`), not once per chunk.
        public let accessPerRun: Bool
        /// Virtual-tensor KV: unmap each run of adjacent retired chunks in one call where the
        /// driver takes one (`VirtualMemory.unmapPerRun`).
        public let unmapPerRun: Bool
        /// Virtual-tensor KV: the largest slab a run of fresh chunks a step fills whole maps as
        /// (`VirtualMemory.freshSlabChunks`; nil: the backend's default, 32 on CUDA; 0: off).
        public let freshSlabChunks: Int?
        /// Virtual tensors: the alignment of each request's address range, in bytes (0: a chunk,
        /// the driver's choice beyond that). An experiment: aligning the engine's ranges to 1 GiB
        /// changed neither reads nor throughput on an H100 (docs/perf.md, 2026-12-06, sixth and
        /// seventh sessions).
        public var reservationAlignment = 0
        /// Decode attention reads a prefix that several requests map as one copy (prefix-cache
        /// hits: aliased chunks, or the same pages) once per tile of requests, their query heads
        /// side by side in one head block, instead of once per request (`DecodeSchedule`'s tiles).
        public let sharedPrefixDecode: Bool
        /// cuBLASLt products run at a bucketed token count (`matmulTokens`: the rows past the
        /// real ones are padding, computed and never read), and the model sets up and runs every
        /// bucket's products once when it is built: no step meets a new shape. The first run of
        /// a new shape waited for the device (the LM head's, at each new row count of the
        /// shared-prefix ramp: ~200 ms stalls on an H100, the GPU idle while the host planned).
        public let matmulBuckets: Bool
        /// With `matmulBuckets`: at load, each bucket's products up to `autotuneMaxTokens` rows
        /// (decode and small mixed steps, where a product reads its weights once and the
        /// heuristic's pick may leave bandwidth unused) time the heuristic's first candidates on
        /// the model's own weights, a different layer each run so none sits in L2, and keep the
        /// fastest when it beats the heuristic's pick by more than 2%. On by default: a decode
        /// step of 128 rows 3.4% shorter on an H100 (docs/perf.md, 2026-12-06, fourth session).
        public let matmulAutotune: Bool
        /// With `matmulAutotune`: also time the heuristic's candidates with K split into 2-8
        /// parts (`CuBLASLtMatmul.splitVariants`), for products whose tiles leave SMs idle. Off:
        /// on an H100 every variant at 128 rows was 25-40% slower than the unsplit candidates.
        public let matmulAutotuneSplitK: Bool
        /// Where `matmulAutotune` keeps its choices (`MatmulTuningCache`): a later load on the same
        /// device and cuBLASLt runs the same algorithms without timing them, so outputs do not
        /// change from one start to the next. nil: time at every load and keep nothing.
        public let matmulTuningCache: String?

        public init(matmulPolicy: MatmulPolicy = .auto, persistentLayers: Bool = false, cudaGraphs: Bool = true,
                    prefetchBytesPerRow: Int? = 0, persistentBlocksPerSM: Int = 4, programmaticLaunch: Bool = true,
                    splitKMaxPairs: Int = 0, decodeMinTokensPerCTA: Int? = nil, timingOnlySkipAttention: Bool = false,
                    gemvUnroll: Int = 8, earlyWeights: Bool = true, weightL2Hint: Bool? = nil,
                    decodeConfig: DecodeAttention.Config? = nil, splitMixedAttention: Bool = true, sharedDecodeTable: Bool = true,
                    accessPerRun: Bool = false, unmapPerRun: Bool = false, freshSlabChunks: Int? = nil, sharedPrefixDecode: Bool = true,
                    matmulBuckets: Bool = true, matmulAutotune: Bool = true, matmulAutotuneSplitK: Bool = false,
                    matmulTuningCache: String? = nil) {
            self.matmulPolicy = matmulPolicy
            self.persistentLayers = persistentLayers
            self.cudaGraphs = cudaGraphs
            self.prefetchBytesPerRow = prefetchBytesPerRow
            self.persistentBlocksPerSM = persistentBlocksPerSM
            self.programmaticLaunch = programmaticLaunch
            self.splitKMaxPairs = splitKMaxPairs
            self.decodeMinTokensPerCTA = decodeMinTokensPerCTA
            self.timingOnlySkipAttention = timingOnlySkipAttention
            self.gemvUnroll = gemvUnroll
            self.earlyWeights = earlyWeights
            self.weightL2Hint = weightL2Hint
            self.decodeConfig = decodeConfig
            self.splitMixedAttention = splitMixedAttention
            self.sharedDecodeTable = sharedDecodeTable
            self.accessPerRun = accessPerRun
            self.unmapPerRun = unmapPerRun
            self.freshSlabChunks = freshSlabChunks
            self.sharedPrefixDecode = sharedPrefixDecode
            self.matmulBuckets = matmulBuckets
            self.matmulAutotune = matmulAutotune
            self.matmulAutotuneSplitK = matmulAutotuneSplitK
            self.matmulTuningCache = matmulTuningCache
        }
    }

    private var graphCache: [String: CUDAGraphExec] = [:]
    /// Graph keys seen once: the first step of a shape runs directly (cuBLASLt products and
    /// kernels set up outside any capture), the second captures.
    private var graphKeysSeen: Set<String> = []
    /// Set when a graph capture fails: later steps launch kernels directly (`options.cudaGraphs` stays as given).
    private var graphCaptureDisabled = false
    /// Graph steps: where padded rows write their K and V, per layer (a padding view of the
    /// virtual-tensor cache, or a page of the paged pool no request owns), and the stream
    /// graphs are captured on (private, so no other thread's work lands in a capture).
    private let paddingRows: [(key: UInt64, value: UInt64)]
    private let captureStream: CUDAStream?

    /// The padded batch size a decode step of `rows` rows runs at with CUDA graphs: 1-4 exact,
    /// then 8, 12, 16 (the fused kernels), multiples of 8 to 64 and of 16 above (cuBLASLt),
    /// capped at `cap` (the step's row limit). nil when `rows` exceeds the cap.
    public static func graphBucket(rows: Int, cap: Int) -> Int? {
        guard rows >= 1 && rows <= cap else { return nil }
        let bucket: Int
        switch rows {
        case ...4: bucket = rows
        case ...16: bucket = (rows + 3) / 4 * 4
        case ...64: bucket = (rows + 7) / 8 * 8
        default: bucket = (rows + 15) / 16 * 16
        }
        return min(bucket, cap)
    }

    /// The token count a cuBLASLt product of `tokens` rows runs at with `Options.matmulBuckets`:
    /// a multiple of 16 up to 256 rows, of 64 to 1024, 128 to 4096, 256 to 16384 and 1024
    /// above, capped at `capacity`, the rows the buffers hold: under a quarter more rows just
    /// past a range's start, a sixteenth at its end (and a product's partial tile of 64-256
    /// rows costs a whole one anyway). 67 buckets for 8192 rows.
    public static func matmulTokens(_ tokens: Int, capacity: Int) -> Int {
        let step: Int
        switch tokens {
        case ...256: step = 16
        case ...1024: step = 64
        case ...4096: step = 128
        case ...16384: step = 256
        default: step = 1024
        }
        return min((tokens + step - 1) / step * step, max(capacity, tokens))
    }

    /// Every token count `matmulTokens` gives for `first...capacity` rows, ascending.
    public static func matmulBucketList(from first: Int, capacity: Int) -> [Int] {
        guard first <= capacity else { return [] }
        var buckets: [Int] = []
        var tokens = first
        while tokens <= capacity {
            let bucket = matmulTokens(tokens, capacity: capacity)
            buckets.append(bucket)
            tokens = bucket + 1
        }
        return buckets
    }

    /// cuBLASLt products set up and run once when the model was built (`Options.matmulBuckets`),
    /// and the time that took.
    public private(set) var matmulWarmup: (shapes: Int, ms: Double) = (0, 0)

    /// The rows the LM head's product may run at: its input holds `maxBatchTokens` rows, its
    /// output `maxLogitRows`.
    var logitsRowCapacity: Int { min(maxLogitRows, maxBatchTokens) }

    /// The largest bucket `Options.matmulAutotune` times.
    public static let autotuneMaxTokens = 512
    /// One product tuned at load (`Options.matmulAutotune`): its name and rows, the heuristic's
    /// pick and the fastest candidate in microseconds a run, how many were timed, whether the
    /// fastest replaced the pick, and whether the choice came from the tuning cache (its times
    /// are then those of the load that timed it).
    public struct AutotunedProduct: Sendable, Codable, Equatable {
        public var name: String
        public var tokens: Int
        public var heuristicMicroseconds: Double
        public var bestMicroseconds: Double
        public var candidates: Int
        public var switched: Bool
        public var cached = false
        /// The configuration of the algorithm run (`CuBLASLtMatmul.Configuration`) when it
        /// replaced the heuristic's pick, and how many of the candidates timed were split-K
        /// variants (`Options.matmulAutotuneSplitK`).
        public var chosen: String? = nil
        public var splitVariants = 0
    }
    public private(set) var matmulAutotuned: [AutotunedProduct] = []
    /// Every contender an autotune timed (not those taken from the tuning cache): the product and
    /// rows, the algorithm's configuration ("heuristic" for cuBLASLt's own pick), the heuristic's
    /// or the check's wave count, and the median microseconds a run (nil: refused at run time).
    public struct AutotuneTrial: Sendable, Codable {
        public var name: String
        public var tokens: Int
        public var configuration: String
        public var waves: Float?
        public var microseconds: Double?
    }
    public private(set) var matmulAutotuneTrials: [AutotuneTrial] = []
    /// What became of `Options.matmulTuningCache` at load: read, written, or why not.
    public private(set) var matmulTuningCacheNote: String?
    private var tuningCache: MatmulTuningCache?
    private var tuningCacheChanged = false

    /// One line on an autotune: products timed and switched, and at 128 rows (a decode step of 128
    /// requests; the largest bucket up to it) one layer's products and the LM head, before and after.
    public static func autotuneSummary(_ products: [AutotunedProduct], cacheNote: String? = nil) -> String? {
        guard !products.isEmpty else { return nil }
        let switched = products.filter(\.switched).count, cached = products.filter(\.cached).count
        let rows = products.map(\.tokens).filter { $0 <= 128 }.max() ?? products.map(\.tokens).min()!
        let at = products.filter { $0.tokens == rows }
        let before = at.reduce(0) { $0 + $1.heuristicMicroseconds }
        let after = at.reduce(0) { $0 + ($1.switched ? $1.bestMicroseconds : $1.heuristicMicroseconds) }
        func us(_ value: Double) -> String { String(format: "%.1f", value) }
        let detail = at.map {
            "\($0.name) \(us($0.heuristicMicroseconds)) -> \(us($0.switched ? $0.bestMicroseconds : $0.heuristicMicroseconds))"
                + ($0.switched ? $0.chosen.map { " [\($0)]" } ?? "" : "")
        }
        let source = cached == 0 ? "\(products.count) products timed" : "\(products.count) products (\(cached) from the tuning cache, "
            + "\(products.count - cached) timed)"
        return source + ", \(switched) switched\(cacheNote.map { " (\($0))" } ?? ""); at \(rows) rows a layer's products and the LM head \(us(before)) -> "
            + "\(us(after)) us (" + detail.joined(separator: ", ") + ")"
    }

    /// Per-step timings: host phases always; GPU time per operation when `profile` is on
    /// (CUDA events around every launch, which adds a little host time).
    public struct StepTiming: Sendable {
        public var planMs = 0.0, launchMs = 0.0, waitMs = 0.0
        public var gpuMsByOperation: [String: Double] = [:]
    }
    /// Sums over every step since the model was built (or `resetStepTotals`): the host phases,
    /// and from events on the stream the GPU's span of each step (its first upload to its last
    /// result copy), the GPU's idle gap before it (since the previous step's end), and how many
    /// steps were completely queued before the step ahead of them finished (so the GPU had the
    /// next step's work waiting and never idled between them).
    public struct StepTotals: Sendable, Codable {
        public var steps = 0
        public var planMs = 0.0, launchMs = 0.0, waitMs = 0.0
        public var gpuSpanMs = 0.0, idleGapMs = 0.0
        /// Steps with a step before them, and those of them queued in full while it still ran.
        public var followingSteps = 0, queuedAhead = 0
        /// cuBLASLt products set up for new shapes, and the host time that took.
        public var matmulShapes = 0
        public var matmulSetupMs = 0.0
        /// CUDA graphs: decode steps replayed from a graph, graphs captured, and steps of a graph
        /// bucket run directly (its first sighting).
        public var graphReplays = 0, graphCaptures = 0, graphDirect = 0
        /// With `profile` on: GPU ms per operation summed over the steps that took prompt tokens
        /// (a row of more than one token) and over decode-only steps, and those steps' counts.
        public var promptStepOperationsMs: [String: Double] = [:], decodeStepOperationsMs: [String: Double] = [:]
        public var profiledPromptSteps = 0, profiledDecodeSteps = 0
        /// The longest idle gaps before a step, longest first (at most `IdleGap.kept`): whether a
        /// run's idle time is many small gaps or a few stalls, and at which steps.
        public var longestIdleGaps: [IdleGap] = []
    }
    /// The GPU idle before a step: the step's number (steps queued since the totals were reset,
    /// from 1, as the engine counts them), the gap, and the logits rows the step wrote; with the
    /// model's host time queueing it and the step before (a stall inside the queueing, such as a
    /// launch that waits for the device, shows as host time near the GPU's span).
    public struct IdleGap: Sendable, Codable, Equatable {
        public static let kept = 8
        public var step: Int
        public var ms: Double
        public var rows: Int
        public var host: QueueHost
        public var hostBefore: QueueHost?
        /// The GPU's span of the step before (its begin to end marks).
        public var spanBeforeMs: Double?
    }
    /// The model's host time queueing one step: planning and uploading its metadata, launching
    /// its kernels, queueing its sampling.
    public struct QueueHost: Sendable, Codable, Equatable {
        public var planMs = 0.0, launchMs = 0.0, samplingMs = 0.0
        /// Of the launch: the operation that took longest to queue, and its host time.
        public var slowestLaunch = "", slowestLaunchMs = 0.0
        public var summary: String {
            func ms(_ value: Double) -> String { String(format: "%.1f", value) }
            return "plan \(ms(planMs)), launch \(ms(launchMs)) (longest: \(slowestLaunch) \(ms(slowestLaunchMs))), sampling \(ms(samplingMs)) ms"
        }
    }
    public private(set) var stepTotals = StepTotals()
    public func resetStepTotals() { lock.lock(); stepTotals = StepTotals(); serialBase = nextSerial; lastCollected = nil; lock.unlock() }
    /// The serial of the first step since the totals were reset (idle gaps count steps from it).
    private var serialBase = 0

    /// A step queued and not yet collected: its sampler round and the events around it.
    private struct InFlight {
        /// The sampling round; nil while a step queued with `queueForward` waits for its draws.
        var draws: GPUSampler.Pending?
        /// Logits rows the forward pass wrote (what its sampling reads).
        var rows = 0
        let marks: Int
        /// The marks of the step queued before it, for the idle gap between them.
        let previousMarks: Int?
        /// With `profile` on: the events around each operation, and whether it took prompt tokens.
        var operations: [(name: String, start: CUDAEvent, end: CUDAEvent)] = []
        var takesPrompt = false
        var host = QueueHost()
    }
    private var inFlight: [Int: InFlight] = [:]
    /// The host time and GPU span of the step collected last (for the idle gap of the next).
    private var lastCollected: (host: QueueHost, spanMs: Double)?
    private var nextSerial = 0
    private var stagingRound = 0
    /// Timing events (begin, end) of recent steps, used in turn; the end of the step before is
    /// read at a step's collection, so a ring of 4 covers two steps in flight.
    private var marks: [(begin: CUDAEvent, end: CUDAEvent)] = []
    private var previousMarks: Int?
    /// A measurement mode, not a kernel switch, so it stays mutable: `vtensor bench model` turns it
    /// on around a few steps of a live model. It launches the same kernels (and no CUDA graphs).
    public var profile = false
    public private(set) var lastStep = StepTiming()
    /// Profile events, one pool per step that may be in flight (a queued step's events stay
    /// untouched until it is collected: the next step records into the other pool).
    private var eventPools: [[CUDAEvent]] = [[], []]
    private var eventPoolSlot = 0
    private var recorded: [(name: String, start: CUDAEvent, end: CUDAEvent)] = []

    /// The operation whose launch took the most host time in the step being queued (a launch
    /// that blocks, waiting for the device, stands out here).
    private var slowestLaunch: (name: String, ms: Double) = ("", 0)

    private func timed(_ name: String, _ body: () throws -> Void) throws {
        guard profile else {
            let clock = DispatchTime.now().uptimeNanoseconds
            try body()
            let ms = Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e6
            if ms > slowestLaunch.ms { slowestLaunch = (name, ms) }
            return
        }
        let index = recorded.count * 2
        while eventPools[eventPoolSlot].count < index + 2 { eventPools[eventPoolSlot].append(try CUDAEvent(context: context, timing: true)) }
        let start = eventPools[eventPoolSlot][index], end = eventPools[eventPoolSlot][index + 1]
        try start.record(on: stream)
        try body()
        try end.record(on: stream)
        recorded.append((name, start, end))
    }

    /// Device buffers sized once for the largest step.
    struct Workspace {
        let buffer: DeviceBuffer
        let residual: UInt64, normed: UInt64, qkv: UInt64, q: UInt64, attended: UInt64, gateUp: UInt64, activated: UInt64
        let logits: UInt64, argmax: UInt64, meta: UInt64, blas: UInt64
        /// Fused decode: per norm slot (2 per layer + 1) and row, the residual's sum of squares.
        let sums: UInt64
        /// Persistent decode: one grid-barrier counter per layer.
        let barriers: UInt64
        let metaBytes: Int, blasBytes: Int
        var bytes: Int { buffer.bytes }
    }

    /// - Parameters:
    ///   - weights: host weights to upload, or nil for `checkpoint`'s, or for dummy weights
    ///     generated on the device when there is no checkpoint either.
    ///   - checkpoint: a safetensors checkpoint to upload from its mapped files (`CheckpointLayout`).
    ///   - kvBudget: the cap on GPU memory the KV cache may hold (default: 90% of what is free
    ///     after weights and workspace).
    ///   - options: the experiment switches (default: the service configuration).
    public init(config: ModelConfig, weights hostWeights: ModelWeights?, device: Int = 0, kvBudget: MemoryBudget = .fractionOfFree(0.9),
                checkpoint: SafeTensorsCheckpoint? = nil,
                maxBatchTokens: Int = 8192, maxLogitRows: Int = 256, maxTokensPerSequence: Int? = nil, dummySeed: UInt32 = 1,
                options: Options = .init(), kvMode: KVMode = .vtensor) throws {
        let c = config
        self.config = c
        self.options = options
        self.maxBatchTokens = maxBatchTokens
        self.maxLogitRows = maxLogitRows
        context = try CUDAContext(device: device)
        stream = try CUDAStream(context: context)
        compiler = KernelCompiler(context: context)
        // The L2::256B hint on weight loads: on, except on an H200, where it cost 3.4% of a batch-1
        // step (same-machine A/B, 2026-11-27; neutral to +0.7% on H100).
        kernels = try ModelKernels(compiler: compiler, gemvUnroll: options.gemvUnroll, earlyWeights: options.earlyWeights,
                                   weightL2Hint: options.weightL2Hint ?? !context.device.name.contains("H200"),
                                   prefetchBytesPerRow: options.prefetchBytesPerRow, layerBlocksPerSM: options.persistentBlocksPerSM,
                                   splitKMaxPairs: options.splitKMaxPairs)
        attention = AttentionParameters(queryHeads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads, headDim: c.headDim,
                                        dtype: .bf16, window: c.effectiveSlidingWindow)
        guard c.intermediateSize % 8 == 0, c.hiddenSize % 8 == 0 else {
            throw RuntimeError.unsupported("GPU kernels need hidden_size and intermediate_size divisible by 8 (got \(c.hiddenSize), \(c.intermediateSize))")
        }
        guard DecodeAttention.supports(attention), PrefillAttention.supports(attention) else {
            throw RuntimeError.unsupported("GPU attention for head dim \(c.headDim) (supported: 64 and 128)")
        }
        let rope = RoPE(config: c.rope, headDim: c.headDim, frequencyFactors: hostWeights?.ropeFrequencyFactors)
        if let hostWeights {
            weights = try GPUWeights(context: context, weights: hostWeights, rope: rope)
        } else if let checkpoint {
            weights = try GPUWeights(context: context, config: c, rope: rope, checkpoint: checkpoint)
        } else {
            let kernels = self.kernels, stream = self.stream, context = self.context
            var rng = SplitMix64(seed: UInt64(dummySeed))
            var index: UInt32 = 0
            weights = try GPUWeights(context: context, config: c, rope: rope) { name, count, address, bf16 in
                index += 1
                if bf16 {
                    try kernels.fillNormal(address: address, count: count, seed: dummySeed &* 7919 &+ index, std: 0.02, stream: stream)
                } else {
                    let isNorm = name.hasSuffix("Norm")
                    let values = (0..<count).map { _ in isNorm ? 1 + rng.nextNormal() * 0.05 : rng.nextNormal() * 0.02 }
                    try GPUWeights.upload(values, to: address, bf16: false, context: context)
                }
            }
            try stream.synchronize()
        }
        let paged = kvMode == .paged
        decode = try DecodeAttention(compiler: compiler, parameters: attention, paged: paged, config: options.decodeConfig)
        prefill = try PrefillAttention(compiler: compiler, parameters: attention, paged: paged)
        // Attention plans and scratch for the largest step, allocated now: steps never allocate.
        try decode.reserveWorkspace(maxRequests: maxLogitRows, stream: stream)
        let cudaContext = context
        metaStagings = try (0..<2).map { _ in try UploadStaging(context: cudaContext) }
        prefillStagings = try (0..<2).map { _ in try UploadStaging(context: cudaContext) }
        sampler = try GPUSampler(compiler: compiler, maxRows: maxLogitRows)
        decodeWorkspace = try DeviceBuffer(context: context, bytes: c.numHiddenLayers * decode.itemBytesPerLayer(maxRequests: maxLogitRows))
        let tiles = maxBatchTokens / 16 + maxLogitRows
        prefillWorkspace = try DeviceBuffer(context: context, bytes: c.numHiddenLayers * ((32 * maxLogitRows + 8 * tiles + 255) / 256 * 256))

        // Workspace.
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize, n = maxBatchTokens
        let qkvWidth = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * d
        var total = 0
        func take(_ bytes: Int) -> Int { total = (total + 255) / 256 * 256; defer { total += bytes }; return total }
        let metaBytes = n * 4 * 2 + maxLogitRows * 4 + maxLogitRows * 8 + c.numHiddenLayers * n * 16 + 256
        let blasBytes = 32 << 20
        let offsets = [take(n * h * 4), take(n * h * 2), take(n * qkvWidth * 2), take(n * c.numAttentionHeads * d * 2),
                       take(n * c.numAttentionHeads * d * 2), take(n * 2 * f * 2), take(n * f * 2),
                       take(maxLogitRows * c.vocabSize * 4), take(maxLogitRows * 4), take(metaBytes), take(blasBytes),
                       take((2 * c.numHiddenLayers + 1) * ModelKernels.fusedMaxRows * 8), take(c.numHiddenLayers * 4)]
        let buffer = try DeviceBuffer(context: context, bytes: total)
        let a = offsets.map { buffer.address + UInt64($0) }
        workspace = Workspace(buffer: buffer, residual: a[0], normed: a[1], qkv: a[2], q: a[3], attended: a[4], gateUp: a[5],
                              activated: a[6], logits: a[7], argmax: a[8], meta: a[9], blas: a[10], sums: a[11], barriers: a[12], metaBytes: metaBytes,
                              blasBytes: blasBytes)

        let shape = KVShape(layers: c.numHiddenLayers, kvHeads: c.numKeyValueHeads, headDim: d, dtype: .bf16)
        let maxTokens = maxTokensPerSequence ?? c.maxPositionEmbeddings
        if paged {
            // The paged baseline reserves its whole pool now, as vLLM does (the budget, resolved
            // against what is free after weights and workspace).
            let pageTokens = 16
            let pageBytes = pageTokens * shape.tokenLayerBytes
            let info = try context.memoryInfo()
            let budgetBytes = try kvBudget.bytes(free: info.free, total: info.total, device: "cuda")
            let pages = budgetBytes / (2 * c.numHiddenLayers * pageBytes)
            // With CUDA graphs the pool's last page is the padded rows' (no request's).
            let paddingPages = options.cudaGraphs ? 1 : 0
            guard pages >= 1 + paddingPages else {
                throw RuntimeError.invalidRequest("a KV budget of \(budgetBytes) bytes holds no 16-token page of every layer")
            }
            let slots = max(1024, 4 * maxLogitRows)
            let pagedCache = try PagedKVCache(shape: shape, pageTokens: pageTokens, pageCount: pages - paddingPages,
                                              maxTokensPerRequest: maxTokens, maxRequests: slots)
            let pool = try DeviceBuffer(context: context, bytes: 2 * c.numHiddenLayers * pages * pageBytes)
            let componentBytes = UInt64(pages * pageBytes)
            pagedPools = (0..<c.numHiddenLayers).map { layer in
                PagedKVPool(keys: pool.address + UInt64(2 * layer) * componentBytes, values: pool.address + UInt64(2 * layer + 1) * componentBytes,
                            pages: pages, pageTokens: pageTokens, kvHeads: c.numKeyValueHeads, headDim: d, dtype: .bf16)
            }
            pagedPool = pool
            blockTables = try DeviceBuffer(context: context, bytes: slots * pagedCache.maxPagesPerRequest * 4)
            kvStorage = .paged(pagedCache)
            let pools = pagedPools, paddingPage = UInt64(pages - 1) * UInt64(pageBytes)
            paddingRows = options.cudaGraphs ? pools.map { ($0.keys + paddingPage, $0.values + paddingPage) } : []
        } else {
            // The KV cache, capped by the budget, mapped as sequences grow.
            let backend = try CUDABackend(context: context, workStream: stream)
            backend.setReservationAlignment(options.reservationAlignment)
            let memory = try VirtualMemory(backend: backend, budget: kvBudget, accessPerRun: options.accessPerRun,
                                           unmapPerRun: options.unmapPerRun, freshSlabChunks: options.freshSlabChunks)
            let cache = try KVCache(shape: shape, layout: .default, memory: memory, maxTokensPerRequest: maxTokens)
            kvStorage = .virtual(cache)
            pagedPool = nil
            blockTables = nil
            pagedPools = []
            // The padding view is mapped now, before anyone counts the chunks left for requests.
            paddingRows = options.cudaGraphs ? try (0..<c.numHiddenLayers).map { layer in
                (try cache.paddingView(layer: layer, component: .key).address(token: 0, head: 0),
                 try cache.paddingView(layer: layer, component: .value).address(token: 0, head: 0))
            } : []
        }
        captureStream = options.cudaGraphs && CUDAGraphExec.isSupported(context: context) ? try CUDAStream(context: context) : nil
        if options.matmulBuckets { try warmMatmuls() }
    }

    /// Sets up and runs once every bucket's cuBLASLt products (layer 0's weights, the
    /// workspace's rows as they are), so a step never runs a shape for the first time.
    private func warmMatmuls() throws {
        let c = config
        let clock = DispatchTime.now().uptimeNanoseconds
        let shapesBefore = matmuls.count
        try context.makeCurrent()
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let qkvWidth = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * d
        let first = ModelKernels.skinnyMaxTokens + 1, w = workspace
        guard let layer = weights.layers.first else { return }
        if options.matmulAutotune, let path = options.matmulTuningCache {
            do { tuningCache = try MatmulTuningCache.load(path: path) } catch {
                tuningCache = MatmulTuningCache()  // rewritten whole below
                matmulTuningCacheNote = "\(error)"
            }
        }
        // A layer's products as the forward pass runs them (weights: every layer's, for the
        // autotune), then the LM head, at its own row capacity.
        let layers = weights.layers
        let products: [(name: String, out: Int, k: Int, weights: [UInt64], input: UInt64, output: UInt64, accumulate: Bool, float: Bool?,
                        capacity: Int)] = [
            ("qkv", qkvWidth, h, layers.map(\.qkv), w.normed, w.qkv, false, nil, maxBatchTokens),
            ("o proj", h, c.numAttentionHeads * d, layers.map(\.output), w.attended, w.residual, true, nil, maxBatchTokens),
            ("gate+up", 2 * f, h, layers.map(\.gateUp), w.normed, w.gateUp, false, nil, maxBatchTokens),
            ("down", h, f, layers.map(\.down), w.activated, w.residual, true, nil, maxBatchTokens),
            ("lm head", c.vocabSize, h, [weights.lmHead], w.normed, w.logits, false, true, logitsRowCapacity),
        ]
        for p in products {
            for tokens in Self.matmulBucketList(from: first, capacity: p.capacity) {
                try matmul(out: p.out, tokens: tokens, k: p.k, weight: p.weights[0], input: p.input, output: p.output, accumulate: p.accumulate,
                           floatOutput: p.float, rowCapacity: p.capacity, stream: stream)
                if options.matmulAutotune && tokens <= Self.autotuneMaxTokens {
                    try autotune(p.name, out: p.out, tokens: tokens, k: p.k, weights: p.weights, input: p.input, output: p.output,
                                 accumulate: p.accumulate, floatOutput: p.float)
                }
            }
        }
        try stream.synchronize()
        if let path = options.matmulTuningCache, let cache = tuningCache {
            let cached = matmulAutotuned.filter(\.cached).count
            if tuningCacheChanged {
                // A cache that cannot be written costs the next load a new autotune, nothing more.
                do {
                    try cache.save(path: path)
                    matmulTuningCacheNote = (matmulTuningCacheNote.map { $0 + "; " } ?? "") + "\(matmulAutotuned.count - cached) choices written to \(path)"
                } catch { matmulTuningCacheNote = (matmulTuningCacheNote.map { $0 + "; " } ?? "") + "\(error)" }
            } else if cached > 0 {
                matmulTuningCacheNote = "read from \(path)"
            }
        }
        tuningCache = nil
        matmulWarmup = (matmuls.count - shapesBefore, Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e6)
        stepTotals = StepTotals()
    }

    /// Times the heuristic's first candidates for one bucketed product (set up by `matmul`
    /// already) and keeps the fastest if it beats the heuristic's pick by more than 2%. Each
    /// candidate is timed in three rounds, interleaved with the others so a slow moment of the
    /// device does not single one out, and ranked by its median; a round runs the product 8
    /// times, on the weights of 8 different layers (`weights` in turn), after one untimed run.
    /// A choice in the tuning cache is taken instead of timing when the heuristic still offers it.
    private func autotune(_ name: String, out: Int, tokens: Int, k: Int, weights: [UInt64], input: UInt64, output: UInt64,
                          accumulate: Bool = false, floatOutput: Bool? = nil) throws {
        let float = floatOutput ?? accumulate
        guard let product = matmuls[Self.productKey(out: out, tokens: tokens, k: k, float: float)], !weights.isEmpty else { return }
        // An autotune that cannot run leaves the heuristic's pick (it is an optimization).
        guard let offered = try? product.candidates(count: 8, workspaceBytes: workspace.blasBytes), !offered.isEmpty else { return }
        let variants = options.matmulAutotuneSplitK ? Self.splitVariants(of: offered, product: product, workspaceBytes: workspace.blasBytes) : []
        let candidates = offered + variants
        guard candidates.count > 1 else { return }
        let key = MatmulTuningCache.key(device: self.name, library: (try? CuBLASLt.shared().versionString) ?? "?", m: out, n: tokens, k: k,
                                        output: float ? "f32" : "bf16", accumulate: accumulate, workspaceBytes: workspace.blasBytes,
                                        splitK: options.matmulAutotuneSplitK)
        if let entry = tuningCache?.entries[key] {
            let match = entry.algorithm.flatMap { hex in candidates.first { MatmulTuningCache.hex($0.words) == hex } }
            if entry.algorithm == nil || match != nil {
                product.chosen = match
                matmulAutotuned.append(AutotunedProduct(name: name, tokens: tokens, heuristicMicroseconds: entry.heuristicMicroseconds,
                                                        bestMicroseconds: entry.bestMicroseconds, candidates: entry.candidates,
                                                        switched: match != nil, cached: true,
                                                        chosen: match.flatMap { product.configuration(of: $0)?.description },
                                                        splitVariants: variants.count))
                return
            }
            // The heuristic no longer offers the cached algorithm: time again.
        }
        let start = try CUDAEvent(context: context, timing: true), end = try CUDAEvent(context: context, timing: true)
        func time(_ candidate: CuBLASLtMatmul.Candidate?) throws -> Double {
            let runs = 8
            try product.run(a: weights[0], b: input, d: output, workspace: workspace.blas, workspaceBytes: workspace.blasBytes, stream: stream,
                            accumulate: accumulate, algorithm: candidate)
            try start.record(on: stream)
            for run in 0..<runs {
                try product.run(a: weights[(run + 1) % weights.count], b: input, d: output, workspace: workspace.blas,
                                workspaceBytes: workspace.blasBytes, stream: stream, accumulate: accumulate, algorithm: candidate)
            }
            try end.record(on: stream)
            try end.synchronize()
            return Double(try CUDAEvent.elapsedMilliseconds(from: start, to: end)) * 1000 / Double(runs)
        }
        // Index 0 is the heuristic's pick as cuBLASLt makes it (no algorithm passed).
        let contenders: [CuBLASLtMatmul.Candidate?] = [nil] + candidates.map { $0 }
        var samples = [[Double]](repeating: [], count: contenders.count)
        for _ in 0..<3 {
            for (i, candidate) in contenders.enumerated() {
                // A candidate the library refuses at run time is skipped, not fatal; the pick must run.
                if let us = try? time(candidate) { samples[i].append(us) } else if candidate == nil { return }
            }
        }
        func median(_ values: [Double]) -> Double? { values.isEmpty ? nil : values.sorted()[values.count / 2] }
        for (i, candidate) in contenders.enumerated() {
            matmulAutotuneTrials.append(AutotuneTrial(
                name: name, tokens: tokens,
                configuration: candidate.map { product.configuration(of: $0)?.description ?? "?" } ?? "heuristic",
                waves: candidate?.waves, microseconds: median(samples[i])))
        }
        guard let heuristic = median(samples[0]) else { return }
        var best = (index: 0, us: heuristic)
        for i in 1..<contenders.count {
            if let us = median(samples[i]), us < best.us { best = (i, us) }
        }
        let switched = best.index > 0 && best.us < heuristic * 0.98
        if switched { product.chosen = contenders[best.index] }
        matmulAutotuned.append(AutotunedProduct(name: name, tokens: tokens, heuristicMicroseconds: heuristic, bestMicroseconds: best.us,
                                                candidates: candidates.count, switched: switched,
                                                chosen: switched ? contenders[best.index].flatMap { product.configuration(of: $0)?.description } : nil,
                                                splitVariants: variants.count))
        if tuningCache != nil {
            tuningCache?.entries[key] = MatmulTuningCache.Entry(
                algorithm: switched ? contenders[best.index].map { MatmulTuningCache.hex($0.words) } : nil,
                heuristicMicroseconds: heuristic, bestMicroseconds: best.us, candidates: candidates.count)
            tuningCacheChanged = true
        }
    }

    /// Split-K variants of the heuristic's first candidates that launch less than a wave: each
    /// with K in 2, 3, 4, 6 or 8 parts, as long as the parts stay within about two waves (the
    /// heuristic's wave count times the parts), at most 16 in all, none twice.
    static func splitVariants(of offered: [CuBLASLtMatmul.Candidate], product: CuBLASLtMatmul,
                              workspaceBytes: Int) -> [CuBLASLtMatmul.Candidate] {
        var seen = Set(offered.map(\.words))
        var variants: [CuBLASLtMatmul.Candidate] = []
        for candidate in offered.prefix(4) where candidate.waves < 0.9 {
            let splits = [2, 3, 4, 6, 8].filter { candidate.waves <= 0 || Float($0) * candidate.waves <= 2.2 }
            for variant in product.splitVariants(of: candidate, splits: splits, workspaceBytes: workspaceBytes)
            where seen.insert(variant.words).inserted && variants.count < 16 {
                variants.append(variant)
            }
        }
        return variants
    }

    /// Whether the driver offers cuLaunchKernelEx (programmatic dependent launch).
    public var kernelsSupportProgrammaticLaunch: Bool { kernels.embedKernel.supportsProgrammaticLaunch }

    public var name: String { "\(context.device.name) (sm_\(context.device.computeCapability.major)\(context.device.computeCapability.minor))" }
    /// Device memory besides weights and KV: activations, metadata, cuBLASLt and attention scratch.
    public var workspaceBytes: Int {
        workspace.bytes + (decodeWorkspace?.bytes ?? 0) + (prefillWorkspace?.bytes ?? 0) + decode.workspaceBytes
    }

    /// Runs a step and returns per input its logits rows ([rows][vocab] flattened), as `CPUModel.forward`.
    public func forward(_ inputs: [ForwardInput]) throws -> [[Float]] {
        let rows = try step(inputs)
        let v = config.vocabSize
        let all = try context.copyDeviceToHost(source: workspace.logits, count: rows.total * v, as: Float.self)
        return rows.counts.reduce(into: (result: [[Float]](), offset: 0)) { acc, count in
            acc.result.append(Array(all[(acc.offset * v)..<((acc.offset + count) * v)]))
            acc.offset += count
        }.result
    }

    /// Runs a step and samples each input's next token on the GPU (`GPUSampler`): only the
    /// picks and their log-probabilities come back to the host, not the logits.
    public func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        try collect(queueStep(inputs, feeds: [], draws: draws, vocabularyLimit: vocabularyLimit))
    }

    /// Queues a step and its sampling and returns before the GPU has run it, so the host can plan
    /// the next step meanwhile. `feeds` name the rows whose one input token is a pick of the step
    /// queued just before this one (still on the device); their `tokens` hold a placeholder.
    /// At most two steps may be in flight; collect them in order.
    public func queueStep(_ inputs: [ForwardInput], feeds: [StepFeed], draws: [DeviceDraw], vocabularyLimit: Int) throws -> QueuedStep {
        precondition(draws.count == inputs.count, "one draw per input")
        let step = try queueForward(inputs, feeds: feeds)
        do {
            try queueSampling(step, draws: draws, vocabularyLimit: vocabularyLimit)
        } catch {
            // Drop the step (collect takes it out of flight), so the next one can be queued.
            _ = try? collect(step)
            throw error
        }
        return step
    }

    /// Queues a step's forward pass alone; `queueSampling` queues its draws later (after the host
    /// has the previous step's picks), before the next step is queued or this one collected.
    public func queueForward(_ inputs: [ForwardInput], feeds: [StepFeed]) throws -> QueuedStep {
        lock.lock()
        defer { lock.unlock() }
        guard inFlight.count < 2 else { throw RuntimeError.invalidRequest("two steps are already in flight: collect one first") }
        if let last = inFlight[nextSerial - 1], last.draws == nil {
            throw RuntimeError.invalidRequest("step \(nextSerial - 1) waits for its sampling: queue it before the next step")
        }
        if !feeds.isEmpty {
            guard inFlight[nextSerial - 1] != nil else {
                throw RuntimeError.invalidRequest("a step feeds on picks of the step before it, and none is in flight")
            }
        }
        let serial = nextSerial
        let marks = try beginMarks(serial)
        eventPoolSlot = serial % eventPools.count
        let rows = try enqueue(inputs.map { ForwardInput(id: $0.id, tokens: $0.tokens, allLogits: false) }, feeds: feeds)
        nextSerial += 1
        inFlight[serial] = InFlight(draws: nil, rows: rows.total, marks: marks, previousMarks: previousMarks, operations: recorded,
                                    takesPrompt: profile && inputs.contains { $0.tokens.count > 1 },
                                    host: QueueHost(planMs: lastStep.planMs, launchMs: lastStep.launchMs,
                                                    slowestLaunch: slowestLaunch.name, slowestLaunchMs: slowestLaunch.ms))
        previousMarks = marks
        return QueuedStep(serial: serial, rows: rows.total)
    }

    /// Queues the sampling of a step queued with `queueForward` (one draw per input) and the
    /// step's end mark.
    public func queueSampling(_ step: QueuedStep, draws: [DeviceDraw], vocabularyLimit: Int) throws {
        lock.lock()
        defer { lock.unlock() }
        guard var entry = inFlight[step.serial], entry.draws == nil else {
            throw RuntimeError.invalidRequest("step \(step.serial) is not in flight waiting for its sampling")
        }
        try context.makeCurrent()
        let samplingStart = DispatchTime.now().uptimeNanoseconds
        defer { inFlight[step.serial]?.host.samplingMs = Double(DispatchTime.now().uptimeNanoseconds - samplingStart) / 1e6 }
        entry.draws = try sampler.queue(logits: workspace.logits, stride: config.vocabSize, limit: min(max(vocabularyLimit, 1), config.vocabSize),
                                        draws: Array(draws.prefix(entry.rows)), stream: stream)
        try self.marks[entry.marks].end.record(on: stream)
        // Whether the step before was still running once this one was queued in full.
        if let previous = entry.previousMarks, inFlight[step.serial - 1] != nil {
            stepTotals.followingSteps += 1
            if !(try self.marks[previous].end.isComplete()) { stepTotals.queuedAhead += 1 }
        }
        inFlight[step.serial] = entry
    }

    /// Waits for a queued step and returns its picks, one per input.
    public func collect(_ step: QueuedStep) throws -> [SampledToken] {
        lock.lock()
        defer { lock.unlock() }
        guard let entry = inFlight.removeValue(forKey: step.serial) else {
            throw RuntimeError.invalidRequest("step \(step.serial) is not in flight")
        }
        try context.makeCurrent()
        guard let draws = entry.draws else {
            // Never sampled (its draws failed): let the forward pass finish, so its buffers are free.
            try stream.synchronize()
            throw RuntimeError.invalidRequest("step \(step.serial) was collected before its sampling was queued")
        }
        let clock = DispatchTime.now().uptimeNanoseconds
        let picks = try sampler.collect(draws)
        try self.marks[entry.marks].end.synchronize()
        lastStep.waitMs = Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e6
        stepTotals.waitMs += lastStep.waitMs
        let mark = self.marks[entry.marks]
        let spanMs = Double(try CUDAEvent.elapsedMilliseconds(from: mark.begin, to: mark.end))
        stepTotals.gpuSpanMs += spanMs
        // The step before ran ahead of this one on the stream, so its end is complete by now.
        if let before = entry.previousMarks, let gap = try? CUDAEvent.elapsedMilliseconds(from: self.marks[before].end, to: mark.begin) {
            stepTotals.idleGapMs += max(0, Double(gap))
            let idle = IdleGap(step: step.serial - serialBase + 1, ms: max(0, Double(gap)), rows: entry.rows, host: entry.host,
                               hostBefore: lastCollected?.host, spanBeforeMs: lastCollected?.spanMs)
            stepTotals.longestIdleGaps = stepTotals.longestIdleGaps.keepingLargest([idle], limit: IdleGap.kept) { $0.ms > $1.ms }
        }
        lastCollected = (entry.host, spanMs)
        try addProfile(entry.operations, takesPrompt: entry.takesPrompt)
        return picks
    }

    /// A finished step's operation times (profile mode), into `lastStep` and the totals by step kind.
    private func addProfile(_ operations: [(name: String, start: CUDAEvent, end: CUDAEvent)], takesPrompt: Bool) throws {
        guard !operations.isEmpty else { return }
        lastStep.gpuMsByOperation = [:]
        for entry in operations {
            let ms = Double(try CUDAEvent.elapsedMilliseconds(from: entry.start, to: entry.end))
            lastStep.gpuMsByOperation[entry.name, default: 0] += ms
            if takesPrompt { stepTotals.promptStepOperationsMs[entry.name, default: 0] += ms } else { stepTotals.decodeStepOperationsMs[entry.name, default: 0] += ms }
        }
        if takesPrompt { stepTotals.profiledPromptSteps += 1 } else { stepTotals.profiledDecodeSteps += 1 }
    }

    /// Records the begin mark of step `serial` and returns its slot in the ring.
    private func beginMarks(_ serial: Int) throws -> Int {
        try context.makeCurrent()
        while marks.count < 4 { marks.append((try CUDAEvent(context: context, timing: true), try CUDAEvent(context: context, timing: true))) }
        let slot = serial % marks.count
        try marks[slot].begin.record(on: stream)
        return slot
    }

    /// Runs a step and returns the greedy next token of each input (its last row's argmax).
    public func forwardGreedy(_ inputs: [ForwardInput], vocabularyLimit: Int? = nil) throws -> [Int] {
        let rows = try step(inputs.map { ForwardInput(id: $0.id, tokens: $0.tokens, allLogits: false) })
        try context.makeCurrent()
        try kernels.argmax(logits: workspace.logits, rows: rows.total, vocab: config.vocabSize,
                           limit: min(vocabularyLimit ?? config.vocabSize, config.vocabSize), out: workspace.argmax, stream: stream)
        return try context.copyDeviceToHost(source: workspace.argmax, count: rows.total, as: Int32.self).map(Int.init)
    }

    /// Queues one forward step and waits for it; returns how many logits rows each input got.
    func step(_ inputs: [ForwardInput]) throws -> (counts: [Int], total: Int) {
        lock.lock()
        defer { lock.unlock() }
        guard inFlight.isEmpty else { throw RuntimeError.invalidRequest("a synchronous step while queued steps are in flight") }
        eventPoolSlot = 0
        let rows = try enqueue(inputs, feeds: [])
        let clock = DispatchTime.now().uptimeNanoseconds
        try stream.synchronize()
        lastStep.waitMs = Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e6
        stepTotals.waitMs += lastStep.waitMs
        try addProfile(recorded, takesPrompt: profile && inputs.contains { $0.tokens.count > 1 })
        return rows
    }

    /// Plans a step, uploads its metadata and queues its kernels on the stream; returns how many
    /// logits rows each input gets. Does not wait for the GPU. Call with the lock held.
    private func enqueue(_ inputs: [ForwardInput], feeds: [StepFeed]) throws -> (counts: [Int], total: Int) {
        let c = config
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize, hq = c.numAttentionHeads, hkv = c.numKeyValueHeads
        let layers = c.numHiddenLayers
        let qkvWidth = (hq + 2 * hkv) * d
        let n = inputs.reduce(0) { $0 + $1.tokens.count }
        let counts = inputs.map { $0.allLogits ? $0.tokens.count : 1 }
        let logitRows = counts.reduce(0, +)
        guard !inputs.isEmpty else { return ([], 0) }
        let clock0 = DispatchTime.now().uptimeNanoseconds
        recorded.removeAll(keepingCapacity: true)
        slowestLaunch = ("", 0)
        guard n <= maxBatchTokens else { throw RuntimeError.invalidRequest("a step of \(n) tokens exceeds the \(maxBatchTokens)-token workspace") }
        guard logitRows <= maxLogitRows else { throw RuntimeError.invalidRequest("\(logitRows) rows of logits exceed the \(maxLogitRows) a step can return") }
        try context.makeCurrent()
        let starts = try ForwardStep.begin(inputs, cache: kvStorage, vocabularySize: c.vocabSize)
        let isDecode = inputs.allSatisfy { $0.tokens.count == 1 }
        let layerOffsets = options.sharedDecodeTable ? cache?.layerOffsets : nil
        // CUDA graphs: a decode step runs at its bucket's size, the padded rows after the real
        // ones (token 0 at position 0, K/V written to the padding rows, logits never read).
        let graphRows = isDecode && captureStream != nil && !graphCaptureDisabled && !profile && !paddingRows.isEmpty
            && (layerOffsets != nil || kvStorage.pagedCache != nil) ? Self.graphBucket(rows: n, cap: min(maxLogitRows, maxBatchTokens)) : nil
        let stepRows = graphRows ?? n, kernelLogitRows = graphRows ?? logitRows

        // Step metadata: tokens, positions, logits rows (int32), then per layer per row the K and V
        // row addresses, then the fed rows.
        var ints: [Int32] = []
        ints.reserveCapacity(2 * stepRows + kernelLogitRows)
        for input in inputs { ints += input.tokens.map { Int32($0) } }
        ints += [Int32](repeating: 0, count: stepRows - n)
        for (i, input) in inputs.enumerated() { ints += (0..<input.tokens.count).map { Int32(starts[i] + $0) } }
        ints += [Int32](repeating: 0, count: stepRows - n)
        var rowStart = 0
        var firstRow: [Int] = []
        for input in inputs {
            let count = input.tokens.count
            firstRow.append(rowStart)
            ints += input.allLogits ? (rowStart..<(rowStart + count)).map { Int32($0) } : [Int32(rowStart + count - 1)]
            rowStart += count
        }
        ints += (n..<stepRows).map { Int32($0) }
        // Fed rows: (token row, the previous step's sampler row) pairs.
        var feedPairs: [Int32] = []
        for feed in feeds {
            guard feed.input >= 0 && feed.input < inputs.count && inputs[feed.input].tokens.count == 1 && feed.previousInput >= 0
                    && feed.previousInput < sampler.maxRows else {
                throw RuntimeError.invalidRequest("a fed row must be a one-token input fed from a row of the previous step")
            }
            feedPairs += [Int32(firstRow[feed.input]), Int32(feed.previousInput)]
        }
        let addressOffset = (ints.count * 4 + 255) / 256 * 256
        var addresses = [UInt64](repeating: 0, count: layers * stepRows * 2)
        for row in n..<stepRows {
            for layer in 0..<layers {
                addresses[(layer * stepRows + row) * 2] = paddingRows[layer].key
                addresses[(layer * stepRows + row) * 2 + 1] = paddingRows[layer].value
            }
        }
        var requestsPerLayer: [[AttentionRequest]] = []
        var pagedRequests: [PagedRequest] = []
        var layerZeroRequests: [AttentionRequest] = []
        var changedTables: [(slot: Int, pages: [Int32])] = []
        var pageCopies: [(source: Int32, destination: Int32)] = []
        if let paged = kvStorage.pagedCache {
            // Row addresses through the block tables; attention reads the same tables in every layer.
            let tables = try inputs.map { try paged.blockTable(of: $0.id) }
            let rowBytes = UInt64(paged.maxPagesPerRequest * 4)
            let tokenBytes = UInt64(pagedPools[0].tokenStride), pageBytes = UInt64(pagedPools[0].pageStride)
            var queryStart = 0, row = 0
            for (i, input) in inputs.enumerated() {
                let pages = tables[i].pages
                for j in 0..<input.tokens.count {
                    let t = starts[i] + j
                    let offset = UInt64(pages[t / paged.pageTokens]) * pageBytes + UInt64(t % paged.pageTokens) * tokenBytes
                    for layer in 0..<layers {
                        addresses[(layer * stepRows + row) * 2] = pagedPools[layer].keys + offset
                        addresses[(layer * stepRows + row) * 2 + 1] = pagedPools[layer].values + offset
                    }
                    row += 1
                }
                pagedRequests.append(PagedRequest(blockTable: blockTables!.address + UInt64(tables[i].slot) * rowBytes,
                                                  length: starts[i] + input.tokens.count, queryStart: queryStart, queryCount: input.tokens.count))
                queryStart += input.tokens.count
            }
            changedTables = paged.takeChangedTables()
            pageCopies = paged.takePageCopies()
        } else if let offsets = layerOffsets {
            // Layers at fixed offsets from layer 0 (the blocked layout): layer-0 views only; a
            // row's address in layer L is its layer-0 address plus L's offset.
            let zero = try cache!.views(inputs.map(\.id), layer: 0)
            var queryStart = 0, row = 0
            for (i, input) in inputs.enumerated() {
                let (key, value) = zero[i]
                for j in 0..<input.tokens.count {
                    let k0 = key.address(token: starts[i] + j, head: 0), v0 = value.address(token: starts[i] + j, head: 0)
                    for layer in 0..<layers {
                        addresses[(layer * stepRows + row) * 2] = k0 + offsets[layer].key
                        addresses[(layer * stepRows + row) * 2 + 1] = v0 + offsets[layer].value
                    }
                    row += 1
                }
                layerZeroRequests.append(AttentionRequest(key: key, value: value, queryStart: queryStart, queryCount: input.tokens.count))
                queryStart += input.tokens.count
            }
        } else {
            let views = try cache!.layerViews(inputs.map(\.id))
            for layer in 0..<layers {
                var requests: [AttentionRequest] = []
                var queryStart = 0, row = 0
                for (i, input) in inputs.enumerated() {
                    let (key, value) = views[i][layer]
                    for j in 0..<input.tokens.count {
                        addresses[(layer * stepRows + row) * 2] = key.address(token: starts[i] + j, head: 0)
                        addresses[(layer * stepRows + row) * 2 + 1] = value.address(token: starts[i] + j, head: 0)
                        row += 1
                    }
                    requests.append(AttentionRequest(key: key, value: value, queryStart: queryStart, queryCount: input.tokens.count))
                    queryStart += input.tokens.count
                }
                requestsPerLayer.append(requests)
            }
        }
        // Changed block tables ride in the same upload, after the addresses and fed rows (they
        // go to the block-table buffer, not to the step's metadata).
        let feedOffset = addressOffset + addresses.count * 8
        let tablesOffset = feedOffset + feedPairs.count * 4
        let tableBytes = changedTables.reduce(0) { $0 + $1.pages.count * 4 }
        let blobBytes = tablesOffset + tableBytes
        stagingRound += 1
        let metaStaging = metaStagings[stagingRound % 2]
        let blob = try metaStaging.begin(bytes: blobBytes)
        ints.withUnsafeBytes { blob.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        addresses.withUnsafeBytes { (blob + addressOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        feedPairs.withUnsafeBytes { if let base = $0.baseAddress { (blob + feedOffset).copyMemory(from: base, byteCount: $0.count) } }
        let meta = workspace.meta
        let tokens = meta, positions = meta + UInt64(4 * stepRows), logitRowIndex = meta + UInt64(8 * stepRows)
        let rowAddresses = meta + UInt64(addressOffset)
        precondition(tablesOffset <= workspace.metaBytes, "step metadata exceeds its workspace")
        try metaStaging.upload(offset: 0, count: tablesOffset, to: meta, stream: stream)
        if let paged = kvStorage.pagedCache {
            var at = tablesOffset
            for table in changedTables where !table.pages.isEmpty {
                table.pages.withUnsafeBytes { (blob + at).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                try metaStaging.upload(offset: at, count: table.pages.count * 4,
                                       to: blockTables!.address + UInt64(table.slot * paged.maxPagesPerRequest * 4), stream: stream)
                at += table.pages.count * 4
            }
        }
        try metaStaging.end(stream: stream)
        // Pages a request shares only in part get their copies before any kernel of the step
        // (the prefix cache's boundary blocks), every layer's K and V.
        for copy in pageCopies {
            let pageBytes = UInt64(pagedPools[0].pageStride)
            for pool in pagedPools {
                for base in [pool.keys, pool.values] {
                    try context.copyDeviceToDeviceAsync(destination: base + UInt64(copy.destination) * pageBytes,
                                                        source: base + UInt64(copy.source) * pageBytes, bytes: Int(pageBytes), stream: stream)
                }
            }
        }
        try kernels.feedTokens(tokens: tokens, pairs: meta + UInt64(feedOffset), count: feeds.count, picks: sampler.resultsAddress,
                               strideBytes: DeviceDraw.outBytes, stream: stream)

        // Attention plans for every layer, uploaded before any kernel runs.
        // Rows of one new token go through decode attention, the others through prefill attention,
        // in the same step (a mixed step of 255 decodes and one prompt chunk keeps its decodes on
        // the decode kernel); `options.splitMixedAttention` off sends a mixed step to prefill alone.
        let decodeRows = isDecode || options.splitMixedAttention ? inputs.map { $0.tokens.count == 1 } : inputs.map { _ in false }
        let anyDecode = decodeRows.contains(true), anyPrefill = decodeRows.contains(false)
        var decodeBatches: [DecodeBatch] = []
        var prefillPlans: [(plan: PrefillPlan, offset: Int)] = []
        if anyDecode {
            let decodeIndices = inputs.indices.filter { decodeRows[$0] }
            // Decode requests whose leading blocks are one copy, in tiles (indices into the decode rows).
            var tiles: [DecodeSchedule.SharedPrefix] = []
            if options.sharedPrefixDecode && decode.membersPerTile > 1 && decodeIndices.count > 1 {
                let shared = try kvStorage.sharedBlockIdentities(decodeIndices.map { inputs[$0].id })
                tiles = DecodeSchedule.sharedPrefixTiles(
                    blocks: shared.blocks, requests: decodeIndices.map { .init(length: starts[$0] + 1, queryStart: 0, queryCount: 1) },
                    tokensPerBlock: shared.tokensPerBlock, membersPerTile: decode.membersPerTile)
            }
            if kvStorage.pagedCache != nil {
                decodeBatches = try decode.prepare(paged: decodeIndices.map { pagedRequests[$0] }, pools: pagedPools,
                                                   stream: stream, workspace: &decodeWorkspace, minTokensPerCTA: options.decodeMinTokensPerCTA,
                                                   fixedGrid: graphRows != nil, sharedPrefixes: tiles)
            } else if let layerOffsets {
                decodeBatches = try decode.prepare(layerZero: decodeIndices.map { layerZeroRequests[$0] },
                                                   layerOffsets: layerOffsets, stream: stream, workspace: &decodeWorkspace,
                                                   minTokensPerCTA: options.decodeMinTokensPerCTA, fixedGrid: graphRows != nil, sharedPrefixes: tiles)
            } else {
                let decodeRequests = requestsPerLayer.map { requests in decodeIndices.map { requests[$0] } }
                decodeBatches = try decode.prepare(layers: decodeRequests, stream: stream, workspace: &decodeWorkspace,
                                                   minTokensPerCTA: options.decodeMinTokensPerCTA, sharedPrefixes: tiles)
            }
            sharedPrefixTiles += decodeBatches.first?.schedule.tiles ?? 0
            // Keys are counted per KV head: K and V rows of one head, every layer.
            sharedPrefixBytesSaved += (decodeBatches.first?.schedule.sharedKeysSaved ?? 0) * 2 * decode.parameters.headDim
                * decode.parameters.dtype.bytes * layers
        }
        if anyPrefill {
            var descriptors: [UInt8] = []
            for layer in 0..<layers {
                let plan: PrefillPlan
                if kvStorage.pagedCache != nil {
                    plan = prefill.plan(pagedRequests.indices.filter { !decodeRows[$0] }.map { pagedRequests[$0] }, pool: pagedPools[layer])
                } else if let layerOffsets {
                    let offset = layerOffsets[layer]
                    plan = prefill.plan(layerZeroRequests.indices.filter { !decodeRows[$0] }.map { index in
                        var request = layerZeroRequests[index]
                        request.key.base += offset.key
                        request.value.base += offset.value
                        return request
                    })
                } else {
                    let requests = requestsPerLayer[layer]
                    plan = prefill.plan(requests.indices.filter { !decodeRows[$0] }.map { requests[$0] })
                }
                prefillPlans.append((plan, descriptors.count))
                descriptors += plan.descriptor
                while descriptors.count % 256 != 0 { descriptors.append(0) }
            }
            if (prefillWorkspace?.bytes ?? 0) < max(descriptors.count, 16) {
                // The old buffer may be read by a step still in flight: replacing it waits for the stream.
                try stream.synchronize()
                prefillWorkspace = try DeviceBuffer(context: context, bytes: max(descriptors.count * 3 / 2, 4096))
            }
            let staging = prefillStagings[stagingRound % 2]
            let host = try staging.begin(bytes: max(descriptors.count, 1))
            descriptors.withUnsafeBytes { if let base = $0.baseAddress { host.copyMemory(from: base, byteCount: $0.count) } }
            try staging.upload(offset: 0, count: descriptors.count, to: prefillWorkspace!.address, stream: stream)
            try staging.end(stream: stream)
        }

        // The kernels.
        let clock1 = DispatchTime.now().uptimeNanoseconds
        let w = workspace, eps = Float(c.rmsNormEps)
        let rows = stepRows
        // Decode of up to 4 rows: 4 fused matmul kernels + attention per layer (norms, RoPE, the KV write
        // and SwiGLU folded into the matmuls; see ModelKernelSource).
        // (Only decode steps: the fused path runs the decode attention plans, made for them alone.)
        let fused = isDecode && options.matmulPolicy == .auto && kernelLogitRows == rows && h % 8 == 0 && (hq * d) % 8 == 0 && f % 8 == 0 && d % 2 == 0
            && (rows <= 4 || (rows <= ModelKernels.fusedMaxRows && h % 32 == 0 && (hq * d) % 32 == 0 && f % 32 == 0 && (d / 2) % 8 == 0))
            && weights.layers.allSatisfy { $0.outputBias == nil && $0.gateUpBias == nil && $0.downBias == nil }
        // Every kernel of the step, queued on `stream` (the model's, or the capture stream).
        let queueFused: (CUDAStream) throws -> Void = { [self] stream in
            let slots = 2 * layers + 1
            func slot(_ s: Int) -> UInt64 { w.sums + UInt64(s * rows * 8) }  // doubles (see rms_scale)
            let layerWeights = weights.layers
            try timed("embed") {
                try kernels.embedSums(table: weights.embedding, tokens: tokens, x: w.residual, rows: rows, hidden: h, sums: w.sums, slots: slots,
                                      xw: w.normed, norm: layerWeights[0].inputNorm, stream: stream)
            }
            if options.persistentLayers && rows <= 4 {
                try timed("zero barriers") { try kernels.zeroWords(w.barriers, count: layers, stream: stream) }
                let first = layerWeights[0]
                try timed("qkv+rope+kv write") {
                    try kernels.decodeMatmul(.qkvRoPE, weight: first.qkv, out: qkvWidth, k: h, rows: rows, input: w.normed, sumsIn: slot(0),
                                             eps: eps, output: w.q, bias: first.qkvBias, positions: positions,
                                             inverseFrequencies: weights.inverseFrequencies, rowAddresses: rowAddresses,
                                             hq: hq, hkv: hkv, d: d, stream: stream)
                }
                for (i, layer) in layerWeights.enumerated() {
                    try timed("attention") { try decode.run(decodeBatches[i], queries: w.q, output: w.attended, stream: stream) }
                    let next: GPUWeights.Layer? = i + 1 < layers ? layerWeights[i + 1] : nil
                    try timed("layer block") {
                        try kernels.layerBlock(
                            output: layer.output, gateUp: layer.gateUp, down: layer.down, nextQKV: next?.qkv, attended: w.attended,
                            residual: w.residual, xw: w.normed, activated: w.activated, q: w.q, postNorm: layer.postAttentionNorm,
                            nextNorm: next?.inputNorm ?? weights.finalNorm, sumsPost: slot(2 * i + 1), sumsNext: slot(2 * i + 2),
                            qkvBias: next?.qkvBias, positions: positions, inverseFrequencies: weights.inverseFrequencies,
                            nextRowAddresses: rowAddresses + UInt64((i + 1) * rows * 16), barrier: w.barriers + UInt64(4 * i),
                            h: h, f: f, hq: hq, hkv: hkv, d: d, rows: rows, eps: eps, stream: stream)
                    }
                }
            } else {
                for (i, layer) in layerWeights.enumerated() {
                    let nextNorm = i + 1 < layers ? layerWeights[i + 1].inputNorm : weights.finalNorm
                    try timed("qkv+rope+kv write") {
                        try kernels.decodeMatmul(.qkvRoPE, weight: layer.qkv, out: qkvWidth, k: h, rows: rows, input: w.normed, sumsIn: slot(2 * i),
                                                 eps: eps, output: w.q, bias: layer.qkvBias, positions: positions,
                                                 inverseFrequencies: weights.inverseFrequencies, rowAddresses: rowAddresses + UInt64(i * rows * 16),
                                                 hq: hq, hkv: hkv, d: d, dependent: options.programmaticLaunch && i > 0, stream: stream)
                    }
                    if !options.timingOnlySkipAttention {
                        try timed("attention") {
                            try decode.run(decodeBatches[i], queries: w.q, output: w.attended, stream: stream, dependent: options.programmaticLaunch)
                        }
                    }
                    try timed("o proj") {
                        try kernels.decodeMatmul(.residual, weight: layer.output, out: h, k: hq * d, rows: rows, input: w.attended,
                                                 output: w.residual, sumsOut: slot(2 * i + 1), xw: w.normed, norm: layer.postAttentionNorm,
                                                 dependent: options.programmaticLaunch, stream: stream)
                    }
                    try timed("gate+up+silu") {
                        try kernels.decodeMatmul(.swiGLU, weight: layer.gateUp, out: 2 * f, k: h, rows: rows, input: w.normed,
                                                 sumsIn: slot(2 * i + 1), eps: eps, output: w.activated, dependent: options.programmaticLaunch, stream: stream)
                    }
                    try timed("down") {
                        try kernels.decodeMatmul(.residual, weight: layer.down, out: h, k: f, rows: rows, input: w.activated,
                                                 output: w.residual, sumsOut: slot(2 * i + 2), xw: w.normed, norm: nextNorm,
                                                 dependent: options.programmaticLaunch, stream: stream)
                    }
                }
            }
            // Logits of every row (decode asks one per sequence), the final norm folded in.
            try timed("lm head") {
                try kernels.decodeMatmul(.logits, weight: weights.lmHead, out: c.vocabSize, k: h, rows: rows, input: w.normed,
                                         sumsIn: slot(2 * layers), eps: eps, output: w.logits, dependent: options.programmaticLaunch, stream: stream)
            }
        }
        let queueUnfused: (CUDAStream) throws -> Void = { [self] stream in
            try timed("embed") { try kernels.embed(table: weights.embedding, tokens: tokens, x: w.residual, rows: rows, hidden: h, stream: stream) }
            for (i, layer) in weights.layers.enumerated() {
                try timed("rmsnorm") {
                    try kernels.rmsNorm(x: w.residual, weight: layer.inputNorm, out: w.normed, rows: rows, rowIndex: nil, hidden: h, eps: eps, stream: stream)
                }
                try timed("qkv") { try matmul(out: qkvWidth, tokens: rows, k: h, weight: layer.qkv, input: w.normed, output: w.qkv, stream: stream) }
                try timed("rope+kv write") {
                    try kernels.ropeSplit(qkv: w.qkv, bias: layer.qkvBias, positions: positions, inverseFrequencies: weights.inverseFrequencies,
                                          q: w.q, rowAddresses: rowAddresses + UInt64(i * rows * 16), rows: rows, hq: hq, hkv: hkv, d: d, stream: stream)
                }
                try timed("attention") {
                    if anyDecode { try decode.run(decodeBatches[i], queries: w.q, output: w.attended, stream: stream) }
                    if anyPrefill {
                        let entry = prefillPlans[i]
                        try prefill.launch(entry.plan, workspace: prefillWorkspace!.address + UInt64(entry.offset), queries: w.q,
                                           output: w.attended, stream: stream)
                    }
                }
                try timed("o proj") {
                    try matmul(out: h, tokens: rows, k: hq * d, weight: layer.output, input: w.attended, output: w.residual, accumulate: true, stream: stream)
                    if let bias = layer.outputBias { try kernels.addBias(x: w.residual, bias: bias, width: h, count: rows * h, stream: stream) }
                }
                try timed("rmsnorm") {
                    try kernels.rmsNorm(x: w.residual, weight: layer.postAttentionNorm, out: w.normed, rows: rows, rowIndex: nil, hidden: h, eps: eps, stream: stream)
                }
                try timed("gate+up") { try matmul(out: 2 * f, tokens: rows, k: h, weight: layer.gateUp, input: w.normed, output: w.gateUp, stream: stream) }
                try timed("silu*up") { try kernels.siluMultiply(gateUp: w.gateUp, bias: layer.gateUpBias, out: w.activated, rows: rows, f: f, stream: stream) }
                try timed("down") {
                    try matmul(out: h, tokens: rows, k: f, weight: layer.down, input: w.activated, output: w.residual, accumulate: true, stream: stream)
                    if let bias = layer.downBias { try kernels.addBias(x: w.residual, bias: bias, width: h, count: rows * h, stream: stream) }
                }
            }
            try timed("final norm") {
                try kernels.rmsNorm(x: w.residual, weight: weights.finalNorm, out: w.normed, rows: kernelLogitRows, rowIndex: logitRowIndex,
                                    hidden: h, eps: eps, stream: stream)
            }
            try timed("lm head") {
                try matmul(out: c.vocabSize, tokens: kernelLogitRows, k: h, weight: weights.lmHead, input: w.normed, output: w.logits, floatOutput: true,
                           rowCapacity: logitsRowCapacity, stream: stream)
            }
        }
        let queueKernels = fused ? queueFused : queueUnfused
        if graphRows != nil, let captureStream {
            // Everything a graph bakes in: the path, the padded rows, attention's grid, and the
            // addresses of buffers that can be replaced (decode items, split scratch).
            let key = "\(fused)/\(rows)/\(decodeBatches.first?.launchCTAs ?? 0)/\(decodeWorkspace?.address ?? 0)/\(decode.workspaceBytes)"
            if let graph = graphCache[key] {
                try graph.launch(on: stream)
                stepTotals.graphReplays += 1
            } else if graphKeysSeen.contains(key) {
                do {
                    let graph = try CUDAGraphExec(context: context, stream: captureStream) { try queueKernels(captureStream) }
                    graphCache[key] = graph
                    stepTotals.graphCaptures += 1
                    try graph.launch(on: stream)
                } catch {
                    // Capture is an optimization: say why once, then launch directly from now on.
                    FileHandle.standardError.write(Data("vtensor: CUDA graph capture failed (\(error)); launching kernels directly\rows".utf8))
                    graphCaptureDisabled = true
                    try queueKernels(stream)
                }
            } else {
                graphKeysSeen.insert(key)
                stepTotals.graphDirect += 1
                try queueKernels(stream)
            }
        } else {
            try queueKernels(stream)
        }
        let clock2 = DispatchTime.now().uptimeNanoseconds
        lastStep = StepTiming(planMs: Double(clock1 - clock0) / 1e6, launchMs: Double(clock2 - clock1) / 1e6, waitMs: 0)
        stepTotals.steps += 1
        stepTotals.planMs += lastStep.planMs
        stepTotals.launchMs += lastStep.launchMs
        return (counts, logitRows)
    }

    /// The key of a cuBLASLt product in `matmuls`: its shape and whether D is fp32.
    private static func productKey(out: Int, tokens: Int, k: Int, float: Bool) -> String { "\(out)x\(tokens)x\(k)\(float ? "f" : "b")" }

    /// output[tokens, out] (=|+=) input[tokens, k] · weight[out, k]ᵀ through cuBLASLt.
    /// `rowCapacity`: the rows `input` and `output` hold (a bucketed product may run past `tokens`).
    private func matmul(out: Int, tokens asked: Int, k: Int, weight: UInt64, input: UInt64, output: UInt64, accumulate: Bool = false,
                        floatOutput: Bool? = nil, rowCapacity: Int? = nil, stream: CUDAStream) throws {
        var tokens = asked
        let float = floatOutput ?? accumulate
        if options.matmulPolicy == .auto && tokens <= 4 && k % 8 == 0 {
            return try kernels.gemv(weight: weight, input: input, output: output, tokens: tokens, out: out, k: k,
                                    mode: float ? (accumulate ? 2 : 1) : 0, stream: stream)
        }
        if options.matmulPolicy == .auto && tokens <= ModelKernels.skinnyMaxTokens && k % 32 == 0 {
            return try kernels.skinny(weight: weight, input: input, output: output, tokens: tokens, out: out, k: k,
                                      mode: float ? (accumulate ? 2 : 1) : 0, stream: stream)
        }
        if options.matmulBuckets && tokens > ModelKernels.skinnyMaxTokens {
            tokens = Self.matmulTokens(tokens, capacity: rowCapacity ?? maxBatchTokens)
        }
        let key = Self.productKey(out: out, tokens: tokens, k: k, float: float)
        let product: CuBLASLtMatmul
        if let cached = matmuls[key] {
            product = cached
        } else {
            let clock = DispatchTime.now().uptimeNanoseconds
            if blasHandle == nil { blasHandle = try CuBLASLt.shared().makeHandle(context: context) }
            // Each prompt chunk length is a new shape: keep the set bounded.
            if matmuls.count >= 4096 { matmuls.removeAll(keepingCapacity: true) }
            product = try CuBLASLtMatmul(context: context, m: out, n: tokens, k: k, floatOutput: float, handle: blasHandle)
            matmuls[key] = product
            stepTotals.matmulShapes += 1
            stepTotals.matmulSetupMs += Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e6
        }
        try product.run(a: weight, b: input, d: output, workspace: workspace.blas, workspaceBytes: workspace.blasBytes, stream: stream,
                        accumulate: accumulate)
    }
}
