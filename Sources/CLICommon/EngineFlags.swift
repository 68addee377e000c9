import ArgumentParser
import Foundation
import Engine
import Runtime

/// Engine flags shared by the commands that run the engine.
public struct EngineFlags: ParsableArguments {
    public init() {}

    @Option(parsing: .unconditional, help: "The most requests running at once.")
    public var maxNumSeqs: Int?
    @Option(parsing: .unconditional, help: "The most tokens one step computes (decodes first, then prompt chunks).")
    public var maxNumBatchedTokens: Int?
    @Option(parsing: .unconditional, help: "The longest sequence (prompt + output) a request may reach (default: the model's context).")
    public var maxModelLen: Int?
    @Option(parsing: .unconditional, help: "CPU threads (default: the CPUs this process may use: its affinity mask and cgroup quota).")
    public var threads: Int?
    @Option(parsing: .unconditional, help: "The cap on KV-cache memory in MiB (default: 90% of free GPU memory after weights; 2048 on the CPU).")
    public var kvBudgetMib: Int?
    @Option(parsing: .unconditional, help: "GPU: the share (0, 1] of all the GPU's memory this process may use, weights and workspace included (vLLM's flag): the KV cache gets that share less what is in use once the model is loaded. Instead of --kv-budget-mib.")
    public var gpuMemoryUtilization: Double?
    @Option(help: "GPU: the KV cache in virtual tensors held while used (vtensor), or vLLM's design: 16-token pages with block tables, the budget reserved up front (paged).")
    public var kv: KVMode = .vtensor
    @Option(help: "GPU: plan and queue each step while the one before runs, its picks fed on the device (on), or one step at a time (off).")
    public var pipelineSteps: OnOff = .on
    @Option(help: "GPU, pipelined steps: a step whose draws need the previous step's picks (structured output, penalties, min_tokens) queues its forward pass, then its sampling once those picks are in (on), or waits for the step before it to finish (off).")
    public var lateDraws: OnOff = .on
    @Option(help: "GPU: replay decode steps from CUDA graphs captured per padded batch size (on), or launch every kernel (off).")
    public var cudaGraphs: OnOff = .on
    @Option(help: "The order waiting requests start in: first come first served (fcfs), the one that may generate the most tokens first (lof), the longest prefix in the prefix cache first (lpm), or each request's priority, lower first (priority: the request field, vLLM's; memory runs short for the lowest priority first).")
    public var schedulePolicy: SchedulePolicy = .fcfs
    @Flag(name: [.customLong("no-prefix-cache"), .customLong("no-enable-prefix-caching")],
          help: "Do not keep the K/V of finished requests for later requests that start the same way (the prefix cache, on by default; --no-enable-prefix-caching is vLLM's name).")
    public var noPrefixCache = false
    @Option(parsing: .unconditional, help: "GPU, virtual tensors: how many steps' worth of waiting requests get their first prompt chunk mapped ahead, while earlier steps compute (default 1: the next step's; 0: none, each request's memory is mapped in the step that admits it).")
    public var prefetchSteps: Int?
    @Option(parsing: .unconditional, help: "GPU, virtual tensors with the prefix cache: the most chunk mappings queued for waiting requests further back than the next step, which alias their cached prefixes ahead (default 16384; 0: none).")
    public var aliasAheadChunks: Int?
    @Option(parsing: .unconditional, help: "GPU, virtual tensors with the prefix cache: a running request that publishes at least N new chunks of its prompt while waiting requests share them gives the cache a copy packed into one allocation, and a cached stretch of N chunks or more that running requests map is packed at its next hit; each request that aliases it then maps it with one driver call instead of two per chunk (default 32 on CUDA, where each mapping costs per allocation, 0 on host memory; 0: never; a copy holds the chunks twice until the requests mapping the originals leave).")
    public var packPrefixChunks: Int?
    @Option(parsing: .unconditional, help: "Size each step's prompt tokens to the prompt work waiting, sqrt(waiting prompt tokens x N) within --max-num-batched-tokens, N a step's fixed cost counted in prompt tokens (about 512 for an 8B model on an H200): a wave of short prompts gets shorter steps and its first tokens sooner; a deep queue keeps full steps. Default: every step fills --max-num-batched-tokens.")
    public var stepOverheadTokens: Int?
    @Option(help: "GPU, virtual tensors: grant access once per run of adjacent chunks the mapper maps together, one cuMemSetAccess over the run (on), or once per chunk (off).")
    public var accessPerRun: OnOff = .off
    @Option(help: "GPU, virtual tensors: unmap each run of adjacent freed chunks in one cuMemUnmap where the driver takes one (on), or one call per chunk (off).")
    public var unmapPerRun: OnOff = .off
    @Option(parsing: .unconditional, help: "GPU, virtual tensors: the chunks a step's new tokens fill whole map as slabs of up to N chunks (a power of two), one allocation, one map and one set access each, where a chunk of its own costs one of each (default 32 on CUDA, 0 on host memory; 0: a chunk an allocation).")
    public var freshSlabChunks: Int?
    @Option(help: "GPU: decode requests whose first tokens' K/V is one copy (prefix-cache hits: aliased chunks, or the same pages) read it once per tile of requests, their query heads side by side (on), or each request reads its own (off).")
    public var sharedPrefixDecode: OnOff = .on
    @Option(help: "Virtual tensors with the prefix cache, when memory is short: evict unused cached chunks a step early, until as many are free as any of the last 16 steps grew by and at least a full step of prompt tokens' chunks (at most a sixteenth of the budget), so the next step maps chunks that have already retired instead of waiting for the step in flight to finish (on), or evict only what a step needs, when it needs it (off).")
    public var evictAhead: OnOff = .on
    @Option(help: "GPU: run cuBLASLt products at bucketed token counts (padded rows), every bucket set up and run once when the model loads, so no step waits on a shape's first run (on), or at each step's exact count, set up when first met (off).")
    public var matmulBuckets: OnOff = .on
    @Option(help: "GPU, with --matmul-buckets: at load, time the heuristic's first cuBLASLt candidates for each bucket's products up to 512 rows on the model's weights and keep the fastest (on), or let cuBLASLt pick by its heuristic (off).")
    public var matmulAutotune: OnOff = .on
    @Option(help: "GPU, with --matmul-autotune, an experiment: also time the heuristic's candidates with K split into 2-8 parts (on), or only the candidates the heuristic offers (off). On an H100 every split variant at 128 rows ran 25-40% slower (docs/perf.md, 2026-12-06, sixth session).")
    public var matmulAutotuneSplitK: OnOff = .off
    @Option(help: "GPU, virtual tensors, an experiment: align each request's address range to N MiB (0: a chunk, the driver's choice beyond that). On an H100 1 GiB changed neither reads nor throughput (docs/perf.md, 2026-12-06, sixth session).")
    public var kvReservationAlignmentMib = 0
    @Option(help: "GPU, with --matmul-autotune: the file that keeps the autotune's choices, so a later start on the same device and cuBLASLt runs the same algorithms without timing them (default: $VTENSOR_CACHE_DIR, else $XDG_CACHE_HOME/vtensor, else ~/.cache/vtensor, then matmul-tuning.json; none: time at every start).")
    public var matmulTuningCache: String?

    public func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if let kvBudgetMib, kvBudgetMib < 1 { throw ValidationError("--kv-budget-mib must be at least 1, got \(kvBudgetMib)") }
        if let gpuMemoryUtilization {
            guard gpuMemoryUtilization > 0, gpuMemoryUtilization <= 1 else {
                throw ValidationError("--gpu-memory-utilization must be in (0, 1], got \(gpuMemoryUtilization)")
            }
            guard kvBudgetMib == nil else { throw ValidationError("give --kv-budget-mib or --gpu-memory-utilization, not both") }
        }
        if let maxNumSeqs, maxNumSeqs < 1 { throw ValidationError("--max-num-seqs must be at least 1, got \(maxNumSeqs)") }
        if let maxNumBatchedTokens, maxNumBatchedTokens < 1 {
            throw ValidationError("--max-num-batched-tokens must be at least 1, got \(maxNumBatchedTokens)")
        }
        if let stepOverheadTokens, stepOverheadTokens < 1 {
            throw ValidationError("--step-overhead-tokens must be at least 1, got \(stepOverheadTokens)")
        }
        if let prefetchSteps, prefetchSteps < 0 { throw ValidationError("--prefetch-steps must be at least 0, got \(prefetchSteps)") }
        if let aliasAheadChunks, aliasAheadChunks < 0 { throw ValidationError("--alias-ahead-chunks must be at least 0, got \(aliasAheadChunks)") }
        if let packPrefixChunks, packPrefixChunks < 0 { throw ValidationError("--pack-prefix-chunks must be at least 0, got \(packPrefixChunks)") }
        if let freshSlabChunks, freshSlabChunks < 0 { throw ValidationError("--fresh-slab-chunks must be at least 0, got \(freshSlabChunks)") }
        if kvReservationAlignmentMib < 0 || kvReservationAlignmentMib % 2 != 0 {
            throw ValidationError("--kv-reservation-alignment-mib must be a non-negative multiple of 2 (the chunk size), got \(kvReservationAlignmentMib)")
        }
        if let matmulTuningCache, matmulTuningCache.isEmpty {
            throw ValidationError("--matmul-tuning-cache needs a file path, or none")
        }
        if let maxModelLen, maxModelLen < 2 {
            throw ValidationError("--max-model-len must be at least 2 (one prompt token and one generated), got \(maxModelLen)")
        }
    }

    /// Runtime options: the model's workspace sized for the engine's limits.
    public func runtimeOptions(backend: ComputeBackend?, device: Int, nativeCPUWeights: Bool) -> ModelRuntimeOptions {
        var options = ModelRuntimeOptions()
        options.backend = backend
        options.device = device
        options.threads = threads
        options.nativeCPUWeights = nativeCPUWeights
        if let kvBudgetMib { options.kvBudget = .bytes(kvBudgetMib << 20) }
        if let gpuMemoryUtilization { options.kvBudget = .fractionOfTotal(gpuMemoryUtilization) }
        if let maxModelLen { options.maxTokensPerSequence = maxModelLen }
        if let maxNumSeqs { options.maxStepRows = maxNumSeqs }
        if let maxNumBatchedTokens { options.maxStepTokens = maxNumBatchedTokens }
        options.kvMode = kv
        var gpu = GPUModel.Options(cudaGraphs: cudaGraphs == .on, accessPerRun: accessPerRun == .on,
                                   unmapPerRun: unmapPerRun == .on, freshSlabChunks: freshSlabChunks,
                                   sharedPrefixDecode: sharedPrefixDecode == .on, matmulBuckets: matmulBuckets == .on,
                                   matmulAutotune: matmulAutotune == .on, matmulAutotuneSplitK: matmulAutotuneSplitK == .on,
                                   matmulTuningCache: tuningCachePath)
        gpu.reservationAlignment = kvReservationAlignmentMib << 20
        options.gpu = gpu
        return options
    }

    /// `--matmul-tuning-cache` resolved: the path given, the default one, or nil for none.
    public var tuningCachePath: String? {
        if let matmulTuningCache { return matmulTuningCache == "none" ? nil : matmulTuningCache }
        return MatmulTuningCache.defaultPath(environment: ProcessInfo.processInfo.environment)
    }

    public func engineOptions(for model: any LanguageModel) -> EngineOptions {
        var options = EngineOptions(fittedTo: model)
        if let maxNumSeqs { options.maxNumSeqs = maxNumSeqs }
        if let maxNumBatchedTokens { options.maxNumBatchedTokens = maxNumBatchedTokens }
        options.maxModelLen = maxModelLen
        options.pipelineSteps = pipelineSteps == .on
        options.lateDraws = lateDraws == .on
        options.schedulePolicy = schedulePolicy
        options.prefixCaching = !noPrefixCache
        if let prefetchSteps {
            options.prefetchAdmissions = options.prefetchAdmissions && prefetchSteps > 0
            options.prefetchSteps = max(1, prefetchSteps)
        }
        if let aliasAheadChunks { options.aliasAheadChunks = aliasAheadChunks }
        if let packPrefixChunks { options.packPrefixChunks = packPrefixChunks }
        options.stepOverheadTokens = stepOverheadTokens
        options.evictAhead = evictAhead == .on
        return options
    }
}


/// A switch flag's value: `--flag on` or `--flag off`.
public enum OnOff: String, ExpressibleByArgument, CaseIterable, Sendable { case on, off }

extension KVMode: ExpressibleByArgument {}
extension SchedulePolicy: ExpressibleByArgument {}
