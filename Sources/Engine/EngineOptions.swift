import Runtime

/// How the engine schedules, fixed at construction (options are values: an A/B switch is a
/// field here, never a property changed on a live engine).
public struct EngineOptions: Sendable, Equatable {
    /// The most requests running at once (`--max-num-seqs`).
    public var maxNumSeqs: Int
    /// The most tokens one step computes, over all its rows (`--max-num-batched-tokens`):
    /// running decodes first, then prefill chunks fill what is left.
    public var maxNumBatchedTokens: Int
    /// The longest sequence (prompt + output) a request may reach; nil: the model's context
    /// and the cache's address space. Capped by both, and by what the KV budget can hold.
    public var maxModelLen: Int?
    /// Tokens mapped ahead of a decoding request, for the steps after the one being planned, so
    /// the mapper works while the model computes (0: map only what the step itself writes).
    public var mapAheadTokens: Int
    /// Map through the `AsyncMapper` thread (the GPU's way) or synchronously on the engine
    /// thread before each step.
    public var asyncMapping: Bool
    /// With `asyncMapping`: give the waiting requests the next step will likely admit their first
    /// prompt chunk's memory one step early, so a prompt's mapping overlaps the step before it.
    public var prefetchAdmissions: Bool
    /// With `prefetchAdmissions`: how many steps' worth of waiting requests (token budget) get
    /// their first prompt chunk's memory ahead. The next step's come first; the rest are mapped
    /// after every step's own work, so a burst of arrivals has its prompts mapped while earlier
    /// steps compute instead of in the step that takes them.
    public var prefetchSteps = 1
    /// With the prefix cache on virtual tensors: the most chunk mappings queued on the mapper for
    /// waiting requests further back than the next step, whose cached prefixes they alias ahead
    /// (0: none). A burst of requests sharing a long system prompt otherwise waits in one step for
    /// thousands of alias mappings (a 2,048-token prefix is 128 chunks a request); queued ahead,
    /// the mapper maps them in the time steps leave it. About 0.6 s of driver calls (H200, shared
    /// prefix: 4,096 gained nothing, 16,384 took the GPU's idle time a step from 5.7 to 3.3 ms).
    public var aliasAheadChunks = 16384
    /// With the prefix cache on virtual tensors: a running request that publishes at least this
    /// many new chunks of its prompt while other waiting requests share them gives the cache a
    /// copy packed into one slab (one physical allocation) instead of its own chunks, and a cached
    /// stretch this long that running requests map is packed at its next hit; each request that
    /// aliases the prefix then maps it with one driver call and one set access instead of one of
    /// each per chunk (0: never). A copy costs its chunks again until the requests mapping the
    /// originals leave. nil: the KV store's default (`PrefixStore.defaultPackBlocks`): 32 on
    /// CUDA, where mapping costs per allocation (docs/perf.md, 2026-12-05, third session), 0 on
    /// host memory, where a copy costs more than the mappings it saves.
    public var packPrefixChunks: Int?
    /// Plan and queue step N+1 while the model runs step N, feeding N's picks to N+1 where they
    /// are (for a model that samples on the device; others collect each step before the next).
    public var pipelineSteps: Bool
    /// Pipelined steps: a step whose draws need the previous step's picks on the host (a
    /// grammar's mask, penalties, `min_tokens`) queues its forward pass first and its sampling
    /// once those picks are in, while the forward pass runs; off: such a step waits for the step
    /// before it to finish before it is planned (no pipelining for it). On by default: on an H200
    /// a repetition penalty on every request ran at 1.42x with it, a grammar on every request at
    /// 1.22x, and unconstrained requests the same (docs/perf.md, 2026-12-05).
    public var lateDraws = true
    /// The order waiting requests are admitted in.
    public var schedulePolicy: SchedulePolicy
    /// Keep the K/V of requests that leave and start new requests from their longest cached
    /// prefix (virtual-tensor KV; the paged baseline has none yet).
    public var prefixCaching: Bool
    /// Chunks the prefix cache keeps while the engine has nothing to run (the rest goes back to
    /// the device, so an idle engine never sits on memory other processes could use); nil: the
    /// pool's high watermark or an eighth of the KV budget, whichever is more, so a chat's next
    /// turn still finds the last one.
    public var prefixCacheIdleChunks: Int?
    /// Size each step's prompt tokens to the prompt work waiting instead of always filling
    /// `maxNumBatchedTokens`: the value is a step's fixed cost (weights read, decodes' K/V, launch)
    /// counted in prompt tokens; nil: fixed. See `Scheduler.stepBudget`.
    public var stepOverheadTokens: Int?
    /// Virtual tensors with the prefix cache: after each step is planned, evict cached chunks no
    /// one uses until the budget has as many free chunks as any of the last 16 steps grew by
    /// (a step's plan and the admissions prefetched after it), and at least the chunks a full
    /// step of prompt tokens fills (at most a sixteenth of the budget). A chunk given
    /// back retires behind the step in flight (the GPU may still read it), so a step that finds
    /// the budget spent waits for the GPU to finish the one before it; the next step's chunks
    /// evicted a step early have retired by the time it maps them. Costs the cache about one
    /// step's growth, only while memory is short.
    public var evictAhead = true

    public init(maxNumSeqs: Int = 256, maxNumBatchedTokens: Int = 8192, maxModelLen: Int? = nil, mapAheadTokens: Int = 2,
                asyncMapping: Bool = true, prefetchAdmissions: Bool = true, pipelineSteps: Bool = true,
                schedulePolicy: SchedulePolicy = .fcfs, prefixCaching: Bool = true) {
        self.schedulePolicy = schedulePolicy
        self.prefixCaching = prefixCaching
        self.maxNumSeqs = maxNumSeqs
        self.maxNumBatchedTokens = maxNumBatchedTokens
        self.maxModelLen = maxModelLen
        self.mapAheadTokens = mapAheadTokens
        self.asyncMapping = asyncMapping
        self.prefetchAdmissions = prefetchAdmissions
        self.pipelineSteps = pipelineSteps
    }

    func validate() throws {
        guard maxNumSeqs > 0 else { throw EngineError.invalidOptions("--max-num-seqs must be at least 1, got \(maxNumSeqs)") }
        guard prefetchSteps >= 1 else { throw EngineError.invalidOptions("prefetch steps must be at least 1, got \(prefetchSteps)") }
        guard maxNumBatchedTokens > 0 else {
            throw EngineError.invalidOptions("--max-num-batched-tokens must be at least 1, got \(maxNumBatchedTokens)")
        }
        if let maxModelLen, maxModelLen < 2 {
            throw EngineError.invalidOptions("--max-model-len must be at least 2 (one prompt token and one generated), got \(maxModelLen)")
        }
        guard mapAheadTokens >= 0 else { throw EngineError.invalidOptions("map-ahead tokens must be >= 0, got \(mapAheadTokens)") }
        if let stepOverheadTokens, stepOverheadTokens < 1 {
            throw EngineError.invalidOptions("step overhead tokens must be at least 1, got \(stepOverheadTokens)")
        }
        guard aliasAheadChunks >= 0 else { throw EngineError.invalidOptions("alias-ahead chunks must be >= 0, got \(aliasAheadChunks)") }
        if let packPrefixChunks, packPrefixChunks < 0 { throw EngineError.invalidOptions("pack-prefix chunks must be >= 0, got \(packPrefixChunks)") }
    }
}

extension EngineOptions {
    /// Defaults within what `model` takes in one step (its workspace's tokens and rows), mapping
    /// through the mapper thread where the model computes asynchronously (the GPU).
    /// On the CPU a step takes at most `cpuStepTokens` tokens: a long prompt is computed over
    /// several steps (progress to show, and running requests' decodes wait less behind it).
    public init(fittedTo model: any LanguageModel) {
        let tokens = model.computesAsynchronously ? 8192 : Self.cpuStepTokens
        self.init(maxNumSeqs: min(256, model.maxStepRows), maxNumBatchedTokens: min(tokens, model.maxStepTokens),
                  asyncMapping: model.computesAsynchronously)
    }

    /// About a second of SmolLM2-135M's prefill on two cores.
    public static let cpuStepTokens = 512
}

/// The order in which waiting requests are admitted.
public enum SchedulePolicy: String, Sendable, Equatable, CaseIterable, Codable {
    /// First come, first served (vLLM's default).
    case fcfs
    /// The request that may generate the most tokens first (its output limit: `max_tokens`, or
    /// what the context leaves), arrival order among equals (SGLang's `lof`). For offline
    /// batches: a run lasts at least as many steps as its longest request, so starting the long
    /// ones first keeps the batch full until the end instead of leaving them to run alone.
    case lof
    /// The request with the longest cached prefix first (SGLang's `lpm`), arrival order among
    /// equals; requests already given memory (preempted, prefetched) keep their place ahead. It
    /// admits the requests the cache serves while their prefixes are still cached. Reordered
    /// each step while at most `Scheduler.lpmWaitingLimit` requests wait (fcfs beyond, where a
    /// lookup per waiting request per step would cost more than it saves); fcfs without the
    /// prefix cache.
    case lpm
    /// Each request's `priority` first, lower values sooner (vLLM's `priority` policy), arrival
    /// order among equals. Running requests are kept in the same order: a step gives its budget
    /// to them in it, and memory runs short for the last, the lowest priority, first (it is
    /// preempted, vLLM's choice). A waiting request of higher priority does not preempt running
    /// ones; it is the next admitted.
    case priority
}

/// What the engine refuses, with the reason in words.
public enum EngineError: Error, CustomStringConvertible, Equatable, Sendable {
    case invalidOptions(String)
    case invalidRequest(String)
    /// The KV budget cannot hold even one request of the smallest useful length.
    case budgetTooSmall(String)
    case stopped

    public var description: String {
        switch self {
        case .invalidOptions(let m): return "invalid engine options: \(m)"
        case .invalidRequest(let m): return "invalid request: \(m)"
        case .budgetTooSmall(let m): return "KV budget too small: \(m)"
        case .stopped: return "the engine has stopped"
        }
    }
}
