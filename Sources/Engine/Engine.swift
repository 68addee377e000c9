import Runtime
import Synchronization
import Tokenizers
import VTensor

/// Continuous batching over a model and the KV cache it reads: requests join and leave between
/// steps, every step runs the rows the `Scheduler` picked (decodes and prefill chunks mixed),
/// and the engine, not the model, maps the memory those rows need, through the `AsyncMapper`,
/// one step ahead where it can.
///
/// Threads: `step()` runs on one thread at a time (the engine's loop, see `EngineLoop`);
/// `add`, `abort`, `statistics` and `snapshot` may be called from any thread. Additions and
/// aborts land in an inbox that the next step drains, so a step never sees a request change
/// under it.
public final class Engine: @unchecked Sendable {
    public let model: any LanguageModel
    /// The KV cache the model reads (`model.kvStorage`): the engine adds, grows and frees requests in it.
    public let storage: KVStorage
    public let options: EngineOptions
    public let tokenizer: Tokenizer?
    public let eosTokenIds: [Int]
    /// Ids at or above this are never sampled (embedding rows the tokenizer has no token for).
    public let vocabularyLimit: Int
    /// The longest a sequence (prompt + output) may get: the model's context, the cache's
    /// address space, `maxModelLen`, and what the KV budget holds for one request alone.
    public let maxSequenceLength: Int
    /// The KV cache's allocation block: tokens per block (a chunk of every range, or a page), and
    /// the blocks the budget leaves for requests (vLLM's `block_size` and `num_gpu_blocks`).
    public let kvBlockTokens: Int
    public let kvBlocks: Int
    private let mapper: AsyncMapper?

    // The stepping thread's state.
    private var scheduler: Scheduler
    private(set) var ledger: KVLedger
    /// The prefix cache (`options.prefixCaching`, virtual-tensor KV only).
    private let prefixCache: PrefixCache?
    private var sequences: [RequestID: EngineSequence] = [:]
    private var stepIndex = 0
    private var aheadTicket: MapTicket?
    /// Mapper jobs no step waits for, not collected yet: prefetches for the steps after the next
    /// (`prefetchSteps` > 1) and prefixes aliased ahead, with the alias mappings each queues
    /// (counted against `options.aliasAheadChunks`; 0 for a prefetch).
    private var backgroundJobs: [(ticket: MapTicket, aliasChunks: Int)] = []
    /// The step queued on the model and not yet collected (pipelined steps only).
    private var inFlight: InFlightStep?
    /// Requests whose prompt scores are still coming (echo with logprobs), so the common step
    /// checks an empty set, not every request.
    private var scoring: Set<RequestID> = []
    /// Whether step N+1 is planned and queued while step N runs (`options.pipelineSteps`, for a
    /// model that samples on the device); else each step is collected before the next is planned.
    public let pipelined: Bool
    /// Whether a pipelined step whose draws need the previous step's picks queues its sampling
    /// after its forward pass (`options.lateDraws`, a model that can), instead of waiting for
    /// the step before it.
    public let lateDraws: Bool
    /// The last step's plan (read it on the stepping thread: benchmarks chart batch sizes with it).
    public private(set) var lastPlan = SchedulerOutput()
    /// The chunks the last steps grew by (the plan and the admissions prefetched after it),
    /// newest last, and the ledger's growth count when the last was taken (`evictAhead`).
    private var recentGrowth: [Int] = []
    private var grownAtLastPlan = 0
    /// Where the stepping thread's time went in recent steps (`stepTrace(_:)`), a ring.
    private var traces: [StepTrace] = []
    private static let tracesKept = 4096

    // Shared with other threads.
    private struct Shared {
        var added: [EngineSequence] = []
        var aborts: [RequestID] = []
        /// Asked to drop every cached prefix no request uses (`resetPrefixCache`).
        var resetPrefixCache = false
        /// The last request just left: the next step (idle) gives memory back, after the step
        /// that returned its last output (so that output never waits for the trim).
        var trimPending = false
        /// Requests added and not yet finished or aborted.
        var live: Set<RequestID> = []
        var nextID: RequestID = 1
        var statistics = EngineStatistics()
        var snapshot: EngineSnapshot
    }
    private let shared: Mutex<Shared>

    /// - Parameters:
    ///   - tokenizer: for text output and stop strings; nil produces token ids only.
    ///   - eosTokenIds: ids that end a request unless it asks to ignore them.
    ///   - mapperThreadSetup: runs first on the mapper thread (for CUDA: make the context current).
    /// The model's KV cache (`model.kvStorage`) must hold no requests yet.
    public init(model: any LanguageModel, tokenizer: Tokenizer?, eosTokenIds: [Int], options: EngineOptions = EngineOptions(),
                mapperThreadSetup: (@Sendable () throws -> Void)? = nil) throws {
        try options.validate()
        let storage = model.kvStorage
        guard storage.requestIDs.isEmpty else { throw EngineError.invalidOptions("the KV cache already holds requests") }
        guard options.maxNumBatchedTokens <= model.maxStepTokens else {
            throw EngineError.invalidOptions("--max-num-batched-tokens \(options.maxNumBatchedTokens) is more than the model's workspace takes in one step (\(model.maxStepTokens))")
        }
        guard options.maxNumSeqs <= model.maxStepRows else {
            throw EngineError.invalidOptions("--max-num-seqs \(options.maxNumSeqs) is more than the model returns rows for in one step (\(model.maxStepRows))")
        }
        self.model = model
        self.storage = storage
        self.options = options
        self.tokenizer = tokenizer
        var seen = Set<Int>()
        self.eosTokenIds = eosTokenIds.filter { $0 >= 0 && seen.insert($0).inserted }
        vocabularyLimit = min(model.config.vocabSize, tokenizer?.vocabularySize ?? model.config.vocabSize)
        switch storage {
        case .virtual(let cache):
            let memory = cache.memory.accounting
            // Chunks already in use (the padding view) are not the requests' to take.
            ledger = KVLedger(units: .chunks(cache.layout, guardTokens: cache.guardTokens), capacityChunks: memory.budgetChunks - memory.inUse)
        case .paged(let cache):
            ledger = KVLedger(units: .pages(cache), capacityChunks: cache.pageCount)
        }
        let limit = min(options.maxModelLen ?? Int.max, model.config.maxPositionEmbeddings, storage.maxTokensPerRequest)
        guard ledger.maxTokensAlone >= 2 else {
            let unit = ledger.units.bytes >= 1 << 20 ? "\(ledger.units.bytes >> 20) MiB" : "\(ledger.units.bytes >> 10) KiB"
            throw EngineError.budgetTooSmall("\(ledger.capacityChunks) \(storage.pagedCache != nil ? "pages" : "chunks") of \(unit) hold \(ledger.maxTokensAlone) tokens of one request; a request needs at least 2")
        }
        maxSequenceLength = min(limit, ledger.maxTokensAlone)
        kvBlockTokens = ledger.units.tokensPerUnit
        kvBlocks = ledger.capacityChunks / ledger.units.perRequest
        scheduler = Scheduler(maxNumSeqs: options.maxNumSeqs, maxNumBatchedTokens: options.maxNumBatchedTokens, policy: options.schedulePolicy,
                              maxLogitRows: model.samplesOnDevice ? model.maxStepRows : .max, stepOverheadTokens: options.stepOverheadTokens)
        shared = Mutex(Shared(snapshot: EngineSnapshot(waiting: 0, running: 0, committedChunks: 0, capacityChunks: ledger.capacityChunks,
                                                       chunkSize: ledger.units.bytes)))
        mapper = options.asyncMapping ? storage.virtualCache.map { AsyncMapper(memory: $0.memory, threadSetup: mapperThreadSetup) } : nil
        pipelined = options.pipelineSteps && model.samplesOnDevice
        lateDraws = pipelined && options.lateDraws && model.queuesSteps && model.queuesSamplingLate
        prefixCache = options.prefixCaching ? PrefixCache(store: storage.prefixStore, packBlocks: options.packPrefixChunks ?? storage.prefixStore.defaultPackBlocks) : nil
    }

    deinit { mapper?.shutdown() }

    // MARK: Any thread

    /// Queues a request; it joins the batch at the next step. Throws (and changes nothing) when
    /// the request cannot be served: an empty prompt, ids outside the vocabulary, a prompt that
    /// leaves no room to generate, bad sampling parameters.
    @discardableResult
    public func add(_ request: GenerationRequest) throws -> RequestID {
        try add([request])[0]
    }

    /// Queues several requests at once: all join the same step (a response's choices then run
    /// the same way every time), or, when one cannot be served, none is queued.
    @discardableResult
    public func add(_ requests: [GenerationRequest]) throws -> [RequestID] {
        let prepared: [(state: SequenceState, scores: PromptScores?, request: GenerationRequest)]
        do {
            prepared = try requests.map { request in
                let (state, scores) = try prepare(request)
                return (state, scores, request)
            }
        } catch {
            shared.withLock { $0.statistics.requestsRejected += requests.count }
            throw error
        }
        return shared.withLock { s in
            prepared.map { state, scores, request in
                let id = s.nextID
                s.nextID += 1
                let sequence = EngineSequence(id: id, prompt: request.prompt, state: state, arrivalNanos: monotonicNanos(),
                                              salt: request.cacheSalt ?? "", priority: request.priority)
                sequence.promptScores = scores
                s.added.append(sequence)
                s.live.insert(id)
                s.statistics.requestsAdded += 1
                return id
            }
        }
    }

    /// Checks a request and builds its sampling state.
    private func prepare(_ request: GenerationRequest) throws -> (SequenceState, PromptScores?) {
        let prompt = request.prompt
        guard !prompt.isEmpty else { throw EngineError.invalidRequest("the prompt is empty") }
        let vocabulary = model.config.vocabSize
        if let t = prompt.first(where: { $0 < 0 || $0 >= vocabulary }) {
            throw EngineError.invalidRequest("prompt token id \(t) is outside the vocabulary (0..<\(vocabulary))")
        }
        guard prompt.count < maxSequenceLength else {
            throw EngineError.invalidRequest("the prompt has \(prompt.count) tokens; the longest sequence this engine runs is \(maxSequenceLength) tokens, leaving no room to generate")
        }
        if request.priority != 0 && options.schedulePolicy != .priority {
            throw EngineError.invalidRequest("priority \(request.priority) asked for, but this engine schedules \(options.schedulePolicy.rawValue); a request's priority counts only under --schedule-policy priority (and must be 0 otherwise)")
        }
        if let maxTokens = request.parameters.maxTokens, maxTokens < 1 {
            throw EngineError.invalidRequest("max_tokens must be at least 1, got \(maxTokens)")
        }
        if let t = request.parameters.logitBias.keys.sorted().first(where: { $0 < 0 || $0 >= vocabulary }) {
            throw EngineError.invalidRequest("logit_bias token id \(t) is outside the vocabulary (0..<\(vocabulary))")
        }
        if let k = request.promptLogprobs {
            guard (0...SamplingParameters.maxLogprobs).contains(k) else {
                throw EngineError.invalidRequest("prompt logprobs must be in 0...\(SamplingParameters.maxLogprobs), got \(k)")
            }
        }
        let state = try SequenceState(prompt: prompt, parameters: request.parameters, eosTokenIds: eosTokenIds,
                                      maxLength: maxSequenceLength, tokenizer: tokenizer, grammar: request.grammar)
        return (state, request.promptLogprobs.map { PromptScores(promptCount: prompt.count, alternatives: $0) })
    }

    /// Cancels a request at the next step boundary: its KV goes back (after in-flight work) and
    /// its last output says `abort`. Returns false for an unknown or already finished request.
    @discardableResult
    public func abort(_ id: RequestID) -> Bool {
        shared.withLock { s in
            guard s.live.contains(id) else { return false }
            if !s.aborts.contains(id) { s.aborts.append(id) }
            return true
        }
    }

    /// Drops every cached prefix no running request uses, at the next step (vLLM's
    /// `/reset_prefix_cache`). Returns false when the engine has no prefix cache.
    @discardableResult
    public func resetPrefixCache() -> Bool {
        guard prefixCache != nil else { return false }
        shared.withLock { $0.resetPrefixCache = true }
        return true
    }

    /// Whether a step would do anything: requests queued, running, or arriving, or a reset asked for.
    public var hasWork: Bool {
        shared.withLock { !$0.live.isEmpty || !$0.aborts.isEmpty || $0.resetPrefixCache || $0.trimPending }
    }

    public var statistics: EngineStatistics { shared.withLock { $0.statistics } }

    public var mapperStatistics: MapperStatistics? { mapper?.statistics }

    public var snapshot: EngineSnapshot { shared.withLock { $0.snapshot } }

    // MARK: The stepping thread

    /// The stepping thread's time in the step that queued step `number` (counted from 1, as the
    /// statistics' mapping waits count them), if it is among the last 4,096. Read it on the
    /// stepping thread or once it has stopped.
    public func stepTrace(_ number: Int) -> StepTrace? {
        guard number >= 1, number <= stepIndex, (number - 1) % Self.tracesKept < traces.count else { return nil }
        let trace = traces[(number - 1) % Self.tracesKept]
        return trace.step == number ? trace : nil
    }

    /// Runs one step: takes in new requests and aborts, schedules, maps, runs the model, and
    /// feeds each sampled token to its request. Returns every request's output of this step.
    public func step() -> [RequestOutput] {
        let start = monotonicNanos()
        var trace = StepTrace()
        var outputs: [RequestOutput] = []
        var stats = EngineStatistics()
        let (added, aborts, reset) = shared.withLock { s -> ([EngineSequence], [RequestID], Bool) in
            defer { s.added.removeAll(); s.aborts.removeAll(); s.resetPrefixCache = false; s.trimPending = false }
            return (s.added, s.aborts, s.resetPrefixCache)
        }
        if reset, let prefixCache { prefixCache.evict(units: Int.max / 2, ledger: &ledger) }
        for sequence in added {
            sequences[sequence.id] = sequence
            scheduler.enqueue(sequence)
            if sequence.scoresPrompt { scoring.insert(sequence.id) }
        }
        for id in aborts {
            guard let sequence = sequences[id] else { continue }
            end(sequence, status: .aborted, stats: &stats)
            stats.aborted += 1
            outputs.append(RequestOutput(id: id, tokens: [], text: "", finish: .abort, error: nil, promptTokens: sequence.state.promptCount,
                                         outputTokens: sequence.state.output.count, timing: sequence.timing(now: monotonicNanos())))
        }
        var modelNanos: UInt64 = 0
        // A draw with penalties (or under min_tokens) counts the request's previous pick, which must be on the host;
        // a step that scores a prompt runs with its logits on the host, after the step before it.
        if !scoring.isEmpty { scoring = scoring.filter { sequences[$0]?.scoresPrompt ?? false } }
        // With late draws such a step is queued anyway, its sampling after the step before is in.
        let picksNeeded = inFlight?.needsPicksBeforePlanning(sequences) ?? false
        if let flight = inFlight, (picksNeeded && !lateDraws) || !scoring.isEmpty {
            inFlight = nil
            stats.synchronizedSteps += 1
            outputs += collect(flight, stats: &stats, modelNanos: &modelNanos)
        }
        let drawLate = lateDraws && picksNeeded && inFlight != nil
        var queued: InFlightStep?
        if scheduler.isIdle {
            lastPlan = SchedulerOutput()
            if inFlight == nil { trimWhileIdle() }
        } else {
            let planStart = monotonicNanos()
            trace.beforePlanMs = Double(planStart - start) / 1e6
            let plan = scheduler.schedule(ledger: &ledger, prefix: prefixCache)
            evictAhead(stats: &stats)
            let queueStart = monotonicNanos()
            trace.planMs = Double(queueStart - planStart) / 1e6
            let waitsBefore = stats.mappingWaitSeconds, modelBefore = modelNanos
            if prefixCache != nil {
                for hit in plan.prefixHits { stats.prefixHitTokens += hit.tokens }
                for id in plan.admitted { stats.prefixQueriedTokens += sequences[id].map { $0.tokens.count } ?? 0 }
            }
            lastPlan = plan
            let result = queue(plan, after: inFlight, drawLate: drawLate, stats: &stats, modelNanos: &modelNanos, trace: &trace)
            trace.queueMs = Double(monotonicNanos() - queueStart) / 1e6
            trace.blockedMappingMs = (stats.mappingWaitSeconds - waitsBefore) * 1000
            trace.modelQueueMs = Double(modelNanos - modelBefore) / 1e6
            if result.step != nil { trace.step = stepIndex }
            outputs += result.outputs
            queued = result.step
        }
        if let flight = inFlight {
            inFlight = nil
            let collectStart = monotonicNanos()
            outputs += collect(flight, stats: &stats, modelNanos: &modelNanos)
            trace.collectMs = Double(monotonicNanos() - collectStart) / 1e6
        }
        if let step = queued, step.drawsPending {
            // The step before is in: its picks are on the host, so the draws can count them.
            stats.lateDrawSteps += 1
            queued = queueSampling(step, stats: &stats, modelNanos: &modelNanos, failures: &outputs)
        }
        if let step = queued {
            if pipelined && step.rows.contains(where: { sequences[$0.id] != nil }) {
                inFlight = step
            } else {
                outputs += collect(step, stats: &stats, modelNanos: &modelNanos)
            }
        }
        // The last request just left: the next step gives memory back (`hasWork` stays true
        // until it has), not this one, whose outputs would wait for it (on an H100 the trim of a
        // full cache took ~0.2 s).
        let trimNext = scheduler.isIdle && inFlight == nil && !outputs.isEmpty
        var promptLeft = 0
        for sequence in scheduler.waiting { promptLeft += max(0, sequence.state.promptCount - sequence.computed) }
        for sequence in scheduler.running { promptLeft += max(0, sequence.state.promptCount - sequence.computed) }
        let snapshot = EngineSnapshot(waiting: scheduler.waiting.count, running: scheduler.seatsTaken,
                                      committedChunks: ledger.committedChunks, capacityChunks: ledger.capacityChunks,
                                      chunkSize: ledger.units.bytes, promptTokensLeft: promptLeft,
                                      prefixCacheChunks: prefixCache?.cachedUnits ?? 0,
                                      evictableChunks: prefixCache.map { $0.tree.evictableCount * $0.unitsPerNode } ?? 0)
        let elapsed = monotonicNanos() - start
        trace.totalMs = Double(elapsed) / 1e6
        if trace.step > 0 {
            let slot = (trace.step - 1) % Self.tracesKept
            while traces.count <= slot { traces.append(StepTrace()) }
            traces[slot] = trace
        }
        stats.hostSeconds = Double(elapsed - modelNanos) / 1e9
        stats.modelSeconds = Double(modelNanos) / 1e9
        let peak = ledger.peakCommittedChunks
        if let prefixCache {
            stats.prefixKeptChunks = prefixCache.keptUnits
            stats.prefixSharedRunningChunks = prefixCache.sharedRunningUnits
            stats.prefixEvictedChunks = prefixCache.evictedUnits
            stats.prefixHeldChunks = prefixCache.cachedUnits
            stats.strandedChunks = ledger.strandedUnits
            stats.prefixAttachFailures = prefixCache.attachFailures
            stats.prefixPublishFailures = prefixCache.publishFailures
            stats.prefixPacks = prefixCache.packs + prefixCache.repacks
            stats.prefixPackFailures = prefixCache.packFailures
            stats.prefixPackedChunks = prefixCache.packedUnits
            stats.prefixLastFailure = prefixCache.lastFailure
        }
        shared.withLock { s in
            s.statistics.merge(stats)
            s.statistics.peakCommittedChunks = max(s.statistics.peakCommittedChunks, peak)
            s.snapshot = snapshot
            for output in outputs where output.isFinal { s.live.remove(output.id) }
            if trimNext { s.trimPending = true }
        }
        return outputs
    }

    /// Steps until every request added so far has finished; hands each step's outputs to `body`.
    public func runUntilIdle(_ body: ([RequestOutput]) throws -> Void = { _ in }) rethrows {
        while hasWork { try body(step()) }
    }

    // MARK: Internals

    /// With nothing to run: cached chunks above the pool's high watermark go back to the device
    /// (the cache never keeps memory other processes could use), and so does the pool's reserve.
    private func trimWhileIdle() {
        if let prefixCache, let memory = storage.virtualCache?.memory {
            let keep = options.prefixCacheIdleChunks ?? max(memory.accounting.highWatermark, ledger.capacityChunks / 8)
            let excess = prefixCache.cachedUnits - keep
            if excess > 0 { prefixCache.evict(units: excess, ledger: &ledger) }
        }
        // The mapper thread goes on reclaiming while idle; without one, nothing else would.
        _ = try? storage.virtualCache?.memory.reclaim(limit: mapper == nil ? .max : 64)
    }

    /// Keeps a step's growth free in the budget once memory is short (`EngineOptions.evictAhead`):
    /// evicts cached chunks no request uses now, before the step just planned is queued, so they
    /// retire behind the step in flight rather than behind this one.
    /// The next step's growth is guessed as the most any of the last 16 grew by (a decode-only
    /// step grows little, and the one that admits a wave of prompts a lot), and at least a
    /// full step of prompt tokens (`evictAheadFloor`): a wave that grows more than the steps
    /// before it would otherwise evict for itself and wait for the step in flight.
    private func evictAhead(stats: inout EngineStatistics) {
        guard options.evictAhead, let prefixCache, storage.virtualCache != nil else { return }
        recentGrowth.append(ledger.grownChunks - grownAtLastPlan)
        grownAtLastPlan = ledger.grownChunks
        if recentGrowth.count > 16 { recentGrowth.removeFirst() }
        let short = max(recentGrowth.max()!, evictAheadFloor) - ledger.freeChunks
        if short > 0 { stats.chunksEvictedAhead += prefixCache.evict(units: short, ledger: &ledger) }
    }

    /// The chunks a step of `maxNumBatchedTokens` prompt tokens fills, at most a sixteenth of
    /// the budget (so a small budget keeps its cache): what eviction a step ahead keeps free at
    /// least. On an H100's 56 GiB it keeps 512 chunks (1 GiB) free; modeled, the shared-prefix
    /// run's mapping waits fell from ~0.53 to ~0.19 s with the same hit rate.
    var evictAheadFloor: Int {
        let stepChunks = ledger.units.perRequest * ((options.maxNumBatchedTokens + kvBlockTokens - 1) / kvBlockTokens)
        return min(stepChunks, ledger.capacityChunks / 16)
    }

    /// A step queued on the model: its rows, and its picks when they are known.
    struct InFlightStep {
        let rows: [ScheduledRow]
        /// Each request's row index in `rows`.
        let rowIndex: [RequestID: Int]
        /// The model's handle while the picks are on the device.
        var handle: QueuedStep?
        /// The picks of a model that ran the step when it was queued (nil for rows that sample nothing).
        var picks: [SampledToken?]?
        /// Queued with its forward pass only: its draws follow once the step before is collected.
        var drawsPending = false

        /// Whether a request that samples in this step draws next with what counts this step's
        /// pick: penalties, or the stop ids `min_tokens` bans until enough tokens are out. The
        /// next step cannot be planned before the pick is on the host.
        func needsPicksBeforePlanning(_ sequences: [RequestID: EngineSequence]) -> Bool {
            handle != nil && rows.contains { row in
                guard row.samples, let state = sequences[row.id]?.state else { return false }
                return state.parameters.hasPenalties || state.output.count < state.parameters.minTokens || state.grammar != nil
            }
        }
    }

    /// Frees what the plan took back, admits, maps, and queues the step on the model (the rows
    /// whose input token is a pick of `previous` fed from it). Returns the queued step, or the
    /// outputs of requests that could not run.
    /// With `drawLate`, a step the device samples gets its forward pass queued and its draws later
    /// (`queueSampling(_:stats:modelNanos:failures:)`).
    private func queue(_ plan: SchedulerOutput, after previous: InFlightStep?, drawLate: Bool = false, stats: inout EngineStatistics,
                       modelNanos: inout UInt64, trace: inout StepTrace) -> (step: InFlightStep?, outputs: [RequestOutput]) {
        // Preempted running requests and released prefetches give their KV back (after the work
        // already queued: the free's fence covers it). With the prefix cache the scheduler gave it
        // back already, and a released prefetch it admitted later in the same plan holds a new
        // KV entry (its cached prefix attached again): that one stays.
        if prefixCache == nil {
            for id in plan.preempted + plan.released {
                let sequence = sequences[id]!
                if sequence.hasKV { try? storage.free(id) }
                sequence.hasKV = false
            }
        }
        stats.preemptions += plan.preempted.count
        stats.prefetchesReleased += plan.released.count
        stats.prefixHitTokens -= plan.releasedHitTokens
        var failedRows: [(EngineSequence, String)] = []
        for id in plan.admitted {
            let sequence = sequences[id]!
            if sequence.preemptions > 0 { stats.resumptions += 1 } else { stats.admitted += 1 }
            do {
                if !sequence.hasKV { try storage.addRequest(id) } else { stats.prefetchesUsed += 1 }
                sequence.hasKV = true
            } catch {
                failedRows.append((sequence, "KV cache: \(error)"))
            }
        }
        let rows = plan.rows.filter { row in !failedRows.contains { $0.0.id == row.id } }
        guard !rows.isEmpty else { return (nil, fail(failedRows, stats: &stats)) }
        stepIndex += 1
        stats.steps += 1
        stats.maxRowsInStep = rows.count
        stats.maxTokensInStep = rows.reduce(0) { $0 + $1.count }

        let now = monotonicNanos()
        for row in rows where sequences[row.id]!.firstScheduledNanos == nil { sequences[row.id]!.firstScheduledNanos = now }

        // Memory: map what this step writes, then ask ahead for what the next step will write.
        do {
            let mapStart = monotonicNanos()
            try mapMemory(for: rows, inFlight: previous?.rows, stats: &stats, trace: &trace)
            trace.mapMs = Double(monotonicNanos() - mapStart) / 1e6
        } catch {
            return (nil, fail(rows.map { (sequences[$0.id]!, "mapping KV memory: \(error)") } + failedRows, stats: &stats))
        }

        // The inputs: known tokens, or (a decode whose token the previous step is still picking)
        // a placeholder fed from that step's pick.
        var inputs: [ForwardInput] = []
        var feeds: [StepFeed] = []
        inputs.reserveCapacity(rows.count)
        for (i, row) in rows.enumerated() {
            let sequence = sequences[row.id]!
            if row.start + row.count <= sequence.tokens.count {
                let scores = sequence.promptScores?.wants(start: row.start, count: row.count) ?? false
                inputs.append(ForwardInput(id: row.id, tokens: Array(sequence.tokens[row.start..<(row.start + row.count)]), allLogits: scores))
                continue
            }
            // Only a one-token decode reaches past the known tokens, by the one pick in flight.
            precondition(row.count == 1 && row.start == sequence.tokens.count && sequence.pendingTokens == 1,
                         "a row past the known tokens that is not the decode of a pick in flight")
            guard let previous, let source = previous.rowIndex[row.id] else { preconditionFailure("a pick in flight without its step") }
            if let picks = previous.picks {
                inputs.append(ForwardInput(id: row.id, tokens: [picks[source]!.id]))
            } else {
                inputs.append(ForwardInput(id: row.id, tokens: [0]))
                feeds.append(StepFeed(input: i, previousInput: source))
            }
        }
        for row in rows {
            let sequence = sequences[row.id]!
            let promptPart = max(0, min(row.start + row.count, sequence.state.promptCount) - row.start)
            if sequence.preemptions > 0 { stats.recomputedTokens += row.count - (row.isDecode ? 1 : 0) } else { stats.promptTokensComputed += promptPart }
            if row.isDecode { stats.decodeRows += 1 } else { stats.prefillRows += 1 }
            sequence.computed = row.start + row.count
            if row.samples { sequence.pendingTokens += 1 }
        }
        if previous != nil { stats.pipelinedSteps += 1 }
        var step = InFlightStep(rows: rows, rowIndex: Dictionary(rows.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a }))

        let modelStart = monotonicNanos()
        defer { modelNanos += monotonicNanos() - modelStart }
        do {
            // A device sampler's step runs on the host's way when it scores a prompt: every
            // position's logits come back (the engine synchronized before planning it, so no
            // input is fed from a pick still on the device).
            if model.samplesOnDevice && !inputs.contains(where: \.allLogits) && drawLate {
                step.handle = try model.queueForward(inputs, feeds: feeds)
                step.drawsPending = true
            } else if model.samplesOnDevice && !inputs.contains(where: \.allLogits) {
                let draws = rows.map { row in row.samples ? draw(for: sequences[row.id]!, stats: &stats) : Self.placeholderDraw }
                if model.queuesSteps {
                    step.handle = try model.queueStep(inputs, feeds: feeds, draws: draws, vocabularyLimit: vocabularyLimit)
                } else {
                    let sampled = try model.forwardAndSample(inputs, draws: draws, vocabularyLimit: vocabularyLimit)
                    step.picks = zip(rows, sampled).map { $0.samples ? $1 : nil }
                }
            } else {
                precondition(feeds.isEmpty, "a step with host logits fed from picks still on the device")
                let logits = try model.forward(inputs)
                let stride = model.config.vocabSize
                step.picks = zip(zip(rows, inputs), logits).map { pair, logits in
                    let (row, input) = pair
                    let sequence = sequences[row.id]!
                    guard input.allLogits else {
                        return row.samples ? sample(sequence, logits: logits, stats: &stats) : nil
                    }
                    // Every position's logits: the prompt's scores, then the last row samples.
                    sequence.promptScores!.record(logits, start: row.start, stride: stride,
                                                  prompt: sequence.tokens[0..<sequence.state.promptCount], vocabularyLimit: vocabularyLimit)
                    guard row.samples else { return nil }
                    return sample(sequence, logits: Array(logits[(logits.count - stride)...]), stats: &stats)
                }
            }
        } catch {
            return (nil, fail(rows.map { (sequences[$0.id]!, "model step: \(error)") } + failedRows, stats: &stats))
        }
        // The step's prompt chunks are written, or queued to be written before any later step
        // runs (the device runs steps in order): their whole chunks go into the prefix cache
        // now while requests wait (one may wait for exactly that prefix), so those requests'
        // aliases are mapped while this step computes them, and their first step comes after.
        if let prefixCache, !scheduler.waiting.isEmpty {
            for row in rows where !row.isDecode {
                guard let sequence = sequences[row.id], sequence.hasKV, sequence.computed >= row.start + row.count else { continue }
                prefixCache.publish(sequence, written: row.start + row.count, ledger: &ledger, waiting: scheduler.waiting)
            }
        }
        return (step, fail(failedRows, stats: &stats))
    }

    /// Queues the sampling of a step queued with its forward pass only: each row's draw, now that
    /// the step before it is collected (a request that ended meanwhile draws a placeholder; its
    /// pick is dropped). If that fails, the step's requests fail and the step is dropped.
    private func queueSampling(_ step: InFlightStep, stats: inout EngineStatistics, modelNanos: inout UInt64,
                               failures: inout [RequestOutput]) -> InFlightStep? {
        guard let handle = step.handle else { return step }
        let start = monotonicNanos()
        defer { modelNanos += monotonicNanos() - start }
        let draws = step.rows.map { row in
            guard row.samples, let sequence = sequences[row.id] else { return Self.placeholderDraw }
            return draw(for: sequence, stats: &stats)
        }
        do {
            try model.queueSampling(handle, draws: draws, vocabularyLimit: vocabularyLimit)
        } catch {
            _ = try? model.collect(handle)
            failures += fail(step.rows.compactMap { row in sequences[row.id].map { ($0, "model step: \(error)") } }, stats: &stats)
            return nil
        }
        var queued = step
        queued.drawsPending = false
        return queued
    }

    /// A sequence's draw on the device, its grammar's mask timed into `stats`.
    private func draw(for sequence: EngineSequence, stats: inout EngineStatistics) -> DeviceDraw {
        let before = sequence.state.maskNanos
        let draw = sequence.state.deviceDraw()
        countMask(sequence, since: before, stats: &stats)
        return draw
    }

    /// A sequence's pick from its logits on the host, its grammar's mask timed into `stats`.
    private func sample(_ sequence: EngineSequence, logits: [Float], stats: inout EngineStatistics) -> SampledToken {
        let before = sequence.state.maskNanos
        let pick = sequence.state.sample(logits: logits, vocabularyLimit: vocabularyLimit)
        countMask(sequence, since: before, stats: &stats)
        return pick
    }

    private func countMask(_ sequence: EngineSequence, since before: UInt64, stats: inout EngineStatistics) {
        guard sequence.state.grammar != nil else { return }
        stats.constrainedDraws += 1
        stats.grammarMaskSeconds += Double(sequence.state.maskNanos - before) / 1e9
    }

    /// Waits for a queued step's picks and gives each to its request; requests that ended while
    /// the step ran (a stop seen in the step before, an abort) drop theirs.
    private func collect(_ step: InFlightStep, stats: inout EngineStatistics, modelNanos: inout UInt64) -> [RequestOutput] {
        var picks: [SampledToken?]
        if let handle = step.handle {
            let modelStart = monotonicNanos()
            do {
                let sampled = try model.collect(handle)
                picks = zip(step.rows, sampled).map { $0.samples ? $1 : nil }
            } catch {
                modelNanos += monotonicNanos() - modelStart
                return fail(step.rows.compactMap { row in sequences[row.id].map { ($0, "model step: \(error)") } }, stats: &stats)
            }
            modelNanos += monotonicNanos() - modelStart
        } else {
            picks = step.picks ?? []
        }
        var outputs: [RequestOutput] = []
        for (row, pick) in zip(step.rows, picks) {
            guard let pick else { continue }
            guard let sequence = sequences[row.id] else {
                stats.discardedRows += 1
                continue
            }
            sequence.pendingTokens -= 1
            let delta = sequence.state.accept(pick.id)
            sequence.tokens.append(pick.id)
            stats.generatedTokens += 1
            if sequence.firstTokenNanos == nil {
                sequence.firstTokenNanos = monotonicNanos()
                stats.promptTokens += sequence.state.promptCount
            }
            var output = RequestOutput(id: row.id, tokens: [pick], text: delta.text, finish: nil, error: nil,
                                       promptTokens: sequence.state.promptCount, outputTokens: sequence.state.output.count, timing: nil)
            if var scores = sequence.promptScores, scores.isComplete, !scores.delivered {
                output.promptLogprobs = scores.scores
                scores.delivered = true
                sequence.promptScores = scores
            }
            if let stop = delta.stop {
                output.finish = stop.finishReason
                output.timing = sequence.timing(now: monotonicNanos())
                stats.countFinish(stop)
                end(sequence, status: .finished(stop.finishReason), stats: &stats)
            }
            outputs.append(output)
        }
        return outputs
    }

    /// Maps what `rows` write (waiting on the mapper when it has not finished), then submits what
    /// the next step will likely write (its decodes' next tokens, the first prompt chunk of the
    /// requests it will likely admit), so the mapper works while the model computes.
    /// `inFlight`: the rows of the step queued before this one, if it is still running.
    private func mapMemory(for rows: [ScheduledRow], inFlight: [ScheduledRow]?, stats: inout EngineStatistics,
                           trace: inout StepTrace) throws {
        let targets = rows.map { (id: $0.id, tokens: $0.start + $0.count) }
        guard let cache = storage.virtualCache else {
            // Paged: pages come off a free list on this thread; there is nothing to map ahead.
            try storage.reserveNow(targets)
            return
        }
        let job = try cache.prepareGrowth(targets)
        guard let mapper else {
            try cache.memory.grow(job)
            return
        }
        // The previous step's look-ahead covers this step's decodes; this step's own job maps
        // whatever it missed (the look-ahead is an optimization, so its failure is not this step's).
        let waitStart = monotonicNanos()
        var blocked = false, aheadUnfinished = false
        if let ahead = aheadTicket {
            aheadTicket = nil
            aheadUnfinished = !mapper.isDone(ahead)
            blocked = aheadUnfinished
            try? mapper.wait(ahead)
        }
        let ownChunks = try cache.memory.holes(in: job).count
        if ownChunks > 0 {
            let ticket = mapper.submit(job, priority: stepIndex)
            blocked = blocked || !mapper.isDone(ticket)
            try mapper.wait(ticket)
        }
        let waited = Double(monotonicNanos() - waitStart) / 1e9
        trace.mapWaitMs = waited * 1000
        stats.mappingWaits += 1
        if blocked {
            stats.blockedMappingWaits += 1
            if rows.allSatisfy(\.isDecode) { stats.blockedDecodeOnlyWaits += 1 }
            stats.mappingWaitSeconds += waited
            stats.maxMappingWaitSeconds = max(stats.maxMappingWaitSeconds, waited)
            let promptTokens = { (rows: [ScheduledRow]) in rows.reduce(0) { $0 + ($1.isDecode ? 0 : $1.count) } }
            stats.longestMappingWaits = MappingWait.longest(stats.longestMappingWaits, [MappingWait(
                step: stepIndex, seconds: waited, rows: rows.count, promptTokens: promptTokens(rows),
                promptTokensInFlight: inFlight.map(promptTokens), aheadUnfinished: aheadUnfinished,
                ownChunks: ownChunks, freeChunks: ledger.freeChunks)])
        }

        // Ahead, for the next step, mapped while this one computes: each decode's next token(s),
        // and the first prompt chunk of the waiting requests the next step will likely admit.
        var next: [(id: RequestID, tokens: Int)] = []
        if options.mapAheadTokens > 0 {
            for row in rows where row.samples {
                let tokens = min(row.start + row.count + options.mapAheadTokens, maxSequenceLength)
                if ledger.canGrow(row.id, to: tokens) {
                    ledger.grow(row.id, to: tokens)
                    next.append((row.id, tokens))
                }
            }
        }
        collectBackgroundJobs()
        var further: [(id: RequestID, tokens: Int)] = [], deeper: [(id: RequestID, tokens: Int)] = []
        if options.prefetchAdmissions { next += prefetchAdmissions(after: rows, deeper: &deeper, further: &further, stats: &stats) }
        if !next.isEmpty, let aheadJob = try? cache.prepareGrowth(next), !((try? cache.memory.holes(in: aheadJob).isEmpty) ?? true) {
            aheadTicket = mapper.submit(aheadJob, priority: stepIndex + 1)
        }
        if !deeper.isEmpty, let job = try? cache.prepareGrowth(deeper) {
            // After the next step's own job (its priority is stepIndex + 1), before alias-ahead work.
            backgroundJobs.append((mapper.submit(job, priority: stepIndex + 2), 0))
        }
        if !further.isEmpty, let job = try? cache.prepareGrowth(further) {
            // After every step's own job: the mapper takes it up in the time they leave it.
            let chunks = (try? cache.memory.holes(in: job).count) ?? 0
            backgroundJobs.append((mapper.submit(job, priority: Int.max / 2), chunks))
        }
    }

    /// Takes finished background jobs off the list (an error there is met
    /// again by the request's own step, which maps what is missing).
    private func collectBackgroundJobs() {
        guard let mapper else { return }
        backgroundJobs.removeAll { job in
            guard mapper.isDone(job.ticket) else { return false }
            try? mapper.wait(job.ticket)
            return true
        }
    }

    /// Gives the waiting requests that the next step will likely admit their KV entry and a
    /// reservation for their first prompt chunk, within the next step's token budget, sequence cap
    /// and the KV budget, in queue order. Returns the growth to map ahead. Requests further back
    /// with a cached prefix alias it now (`further`: their growth, mapped when the mapper is free).
    private func prefetchAdmissions(after rows: [ScheduledRow], deeper: inout [(id: RequestID, tokens: Int)],
                                    further: inout [(id: RequestID, tokens: Int)], stats: inout EngineStatistics) -> [(id: RequestID, tokens: Int)] {
        // Budget for the steps after the next one (`prefetchSteps` > 1): what is prefetched once
        // the next step's budget is spent goes to `deeper`.
        let laterBudget = options.maxNumBatchedTokens * (options.prefetchSteps - 1)
        var budget = options.maxNumBatchedTokens
        var seats = options.maxNumSeqs - scheduler.seatsTaken
        let scheduled = Dictionary(rows.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for sequence in scheduler.running where budget > 0 {
            // A sampled row decodes one token next; a prompt chunk continues with the rest.
            let row = scheduled[sequence.id]
            let need = row.map { $0.samples ? 1 : sequence.tokens.count - ($0.start + $0.count) } ?? sequence.uncomputed
            budget -= min(need, budget)
        }
        budget += laterBudget
        var targets: [(id: RequestID, tokens: Int)] = []
        var computing = scheduler.waiting.isEmpty ? nil : prefixCache.map { scheduler.runningPrefixes($0) }
        var reached = scheduler.waiting.count
        for (position, sequence) in scheduler.waiting.enumerated() {
            guard budget > 0, seats > 0 else {
                reached = position
                break
            }
            // One that will wait for a running request's prefix gets no KV of its own yet, nor
            // one whose prefix a request admitted ahead of it will compute (as admission does).
            if let prefixCache, let computing, !sequence.hasKV, scheduler.isHeldBack(sequence, prefix: prefixCache, computing: computing) { continue }
            if let prefixCache, sequence.tokens.count > prefixCache.tree.tokensPerBlock {
                computing?[sequence.firstBlockKey(prefixCache.tree.tokensPerBlock), default: []].append(sequence)
            }
            var attached = false
            if let prefixCache, !sequence.hasKV {
                // Its cached prefix first: only the rest needs mapping.
                let start = prefixCache.start(sequence, ledger: &ledger)
                if case .needs = start { break }
                if case .attached = start { attached = true }
            }
            let count = min(sequence.uncomputed, budget)
            let target = sequence.computed + count
            let inNextStep = budget > laterBudget
            budget -= count
            seats -= 1
            if sequence.prefetched && !sequence.aliasedAhead { continue }
            guard ledger.canGrow(sequence.id, to: target) else {
                // Only prefetches hold pins while they wait (they give them back when memory is short).
                if attached, let prefixCache { prefixCache.giveBack(sequence, ledger: &ledger) }
                break
            }
            if !sequence.hasKV {
                do { try storage.addRequest(sequence.id) } catch { break }
                sequence.hasKV = true
            }
            ledger.grow(sequence.id, to: target)
            if attached { stats.prefixHitTokens += sequence.computed }
            if !sequence.aliasedAhead { stats.prefetches += 1 }
            sequence.prefetched = true
            sequence.aliasedAhead = false
            if inNextStep { targets.append((sequence.id, target)) } else { deeper.append((sequence.id, target)) }
        }
        if reached < scheduler.waiting.count, let computing { further = aliasAhead(scheduler.waiting[reached...], computing: computing, stats: &stats) }
        return targets
    }

    /// Waiting requests beyond the next step's reach that start with a cached prefix get their KV
    /// entry now, aliasing it (pinned; the ledger holds only their boundary chunk), as a prefetch
    /// given back first when memory is short. Within `options.aliasAheadChunks` of chunks queued,
    /// and a bounded look at the queue each step. Returns their growth (the aliased prefix).
    private func aliasAhead(_ candidates: ArraySlice<EngineSequence>, computing: [Int: [EngineSequence]],
                            stats: inout EngineStatistics) -> [(id: RequestID, tokens: Int)] {
        guard let prefixCache, storage.virtualCache != nil, options.aliasAheadChunks > 0 else { return [] }
        // Chunks still queued for earlier aliases (finished jobs were collected this step).
        var queued = backgroundJobs.reduce(0) { $0 + $1.aliasChunks }
        var targets: [(id: RequestID, tokens: Int)] = []
        var looked = 0, aliasedThisStep = 0
        for sequence in candidates where !sequence.hasKV {
            guard queued < options.aliasAheadChunks, looked < Self.aliasAheadLooks, aliasedThisStep < aliasAheadChunksPerStep else { break }
            looked += 1
            if scheduler.isHeldBack(sequence, prefix: prefixCache, computing: computing) { continue }
            let start = prefixCache.start(sequence, ledger: &ledger)
            if case .needs = start { break }
            guard case .attached(let tokens) = start else { continue }
            stats.prefixHitTokens += tokens
            stats.prefetches += 1
            stats.aliasedAhead += 1
            sequence.prefetched = true
            sequence.aliasedAhead = true
            let chunks = tokens / prefixCache.tree.tokensPerBlock * prefixCache.unitsPerNode
            queued += chunks
            aliasedThisStep += chunks
            targets.append((sequence.id, tokens))
        }
        return targets
    }

    /// Waiting requests `aliasAhead` looks at in one step, so its host cost stays bounded.
    static let aliasAheadLooks = 64
    /// Chunks `aliasAhead` attaches in one step at most: attaching costs the engine thread per
    /// chunk, and a deep queue of requests sharing long prefixes (a wave arriving at once) would
    /// otherwise attach up to `aliasAheadChunks` in the first steps, while the GPU waits for
    /// them to be queued (modeled shared prefix: the device idled ~100 ms in steps 22-32 with
    /// 64 requests of 128 chunks a step, ~0 with 1,024 chunks a step). A step admits fewer
    /// than this from the queue's head, so aliasing stays ahead of admission. (A request is
    /// attached whole, so a step may pass the bound by one request's prefix.)
    var aliasAheadChunksPerStep = 1024

    /// Takes a request out for good: out of the queues, its KV back to the pool, or (with the
    /// prefix cache, unless a step failed under it) into the cache.
    private func end(_ sequence: EngineSequence, status: RequestStatus, stats: inout EngineStatistics, failed: Bool = false) {
        _ = scheduler.remove(sequence.id)
        if let prefixCache {
            // Tokens whose K/V is written, or will be by a step already queued (stream order).
            prefixCache.retire(sequence, tokens: failed ? 0 : min(sequence.computed, sequence.tokens.count), ledger: &ledger)
        } else {
            if sequence.hasKV { try? storage.free(sequence.id) }
            ledger.release(sequence.id)
        }
        sequence.hasKV = false
        sequence.status = status
        sequences[sequence.id] = nil
    }

    /// Ends requests whose step failed, each with its error.
    private func fail(_ failures: [(EngineSequence, String)], stats: inout EngineStatistics) -> [RequestOutput] {
        var outputs: [RequestOutput] = []
        for (sequence, message) in failures where sequences[sequence.id] != nil {
            end(sequence, status: .aborted, stats: &stats, failed: true)
            stats.failed += 1
            outputs.append(RequestOutput(id: sequence.id, tokens: [], text: "", finish: .abort, error: message, promptTokens: sequence.state.promptCount,
                                         outputTokens: sequence.state.output.count, timing: sequence.timing(now: monotonicNanos())))
        }
        return outputs
    }

    /// The prefix cache's nodes (salt, tokens, holder, chunk) and any inconsistency between the
    /// tree, the ledger and the KV cache's holders, for tests. Call on the stepping thread.
    func auditPrefixCache() -> (nodes: [(salt: String, tokens: [Int], holder: Int, chunk: Int)], heldChunks: Int, problems: [String]) {
        guard let prefixCache else { return ([], 0, []) }
        var problems = prefixCache.tree.audit()
        if ledger.cachedUnits != prefixCache.cachedUnits {
            problems.append("ledger counts \(ledger.cachedUnits) cached units, the tree holds \(prefixCache.cachedUnits)")
        }
        let nodes = prefixCache.tree.nodesForTesting()
        let holders = Set(prefixCache.cache.holderIDs)
        for node in nodes where !holders.contains(node.holder) { problems.append("node at holder \(node.holder) chunk \(node.chunk): no such holder") }
        // Every node holds memory, its own but for one case: a referenced partial leaf and the
        // longer block a request that took its holder over appended in place (same chunk,
        // the leaf's tokens a prefix of the other's).
        var owner: [[UInt64]: (salt: String, tokens: [Int], holder: Int, chunk: Int)] = [:]
        for (node, held) in zip(nodes, prefixCache.cache.heldBlocks(nodes.map { ($0.holder, $0.chunk) })) {
            guard let held else {
                problems.append("node at holder \(node.holder) chunk \(node.chunk) holds no memory")
                continue
            }
            if let other = owner[held] {
                let (short, long) = other.tokens.count <= node.tokens.count ? (other.tokens, node.tokens) : (node.tokens, other.tokens)
                if other.salt != node.salt || other.chunk != node.chunk || !long.starts(with: short) {
                    problems.append("nodes at holder \(node.holder) chunk \(node.chunk) and holder \(other.holder) chunk \(other.chunk) hold the same memory \(held)")
                }
            }
            owner[held] = node
        }
        return (nodes, Set(owner.keys.joined()).count, problems)
    }

    /// The draw of a row that samples nothing (a prefill chunk short of the prompt's end): greedy,
    /// and its pick is dropped. It takes no step of any request's random stream.
    private static let placeholderDraw = DeviceDraw(parameters: SamplingParameters(temperature: 0), u: 0)
}

extension EngineStatistics {
    /// Adds one step's counts (maxima and peaks take the larger).
    mutating func merge(_ step: EngineStatistics) {
        requestsAdded += step.requestsAdded
        requestsRejected += step.requestsRejected
        admitted += step.admitted
        preemptions += step.preemptions
        resumptions += step.resumptions
        finishedEOS += step.finishedEOS
        finishedStopToken += step.finishedStopToken
        finishedStopString += step.finishedStopString
        finishedGrammar += step.finishedGrammar
        finishedLength += step.finishedLength
        aborted += step.aborted
        failed += step.failed
        steps += step.steps
        promptTokens += step.promptTokens
        promptTokensComputed += step.promptTokensComputed
        recomputedTokens += step.recomputedTokens
        generatedTokens += step.generatedTokens
        decodeRows += step.decodeRows
        prefillRows += step.prefillRows
        maxRowsInStep = max(maxRowsInStep, step.maxRowsInStep)
        maxTokensInStep = max(maxTokensInStep, step.maxTokensInStep)
        pipelinedSteps += step.pipelinedSteps
        discardedRows += step.discardedRows
        synchronizedSteps += step.synchronizedSteps
        constrainedDraws += step.constrainedDraws
        lateDrawSteps += step.lateDrawSteps
        grammarMaskSeconds += step.grammarMaskSeconds
        prefetches += step.prefetches
        prefetchesUsed += step.prefetchesUsed
        prefetchesReleased += step.prefetchesReleased
        aliasedAhead += step.aliasedAhead
        mappingWaits += step.mappingWaits
        blockedMappingWaits += step.blockedMappingWaits
        blockedDecodeOnlyWaits += step.blockedDecodeOnlyWaits
        mappingWaitSeconds += step.mappingWaitSeconds
        maxMappingWaitSeconds = max(maxMappingWaitSeconds, step.maxMappingWaitSeconds)
        if !step.longestMappingWaits.isEmpty { longestMappingWaits = MappingWait.longest(longestMappingWaits, step.longestMappingWaits) }
        hostSeconds += step.hostSeconds
        modelSeconds += step.modelSeconds
        peakCommittedChunks = max(peakCommittedChunks, step.peakCommittedChunks)
        prefixQueriedTokens += step.prefixQueriedTokens
        prefixHitTokens += step.prefixHitTokens
        chunksEvictedAhead += step.chunksEvictedAhead
        // The cache's own running totals (set, not added).
        prefixKeptChunks = step.prefixKeptChunks
        prefixSharedRunningChunks = step.prefixSharedRunningChunks
        prefixEvictedChunks = step.prefixEvictedChunks
        prefixHeldChunks = step.prefixHeldChunks
        strandedChunks = step.strandedChunks
        prefixAttachFailures = step.prefixAttachFailures
        prefixPublishFailures = step.prefixPublishFailures
        prefixPacks = step.prefixPacks
        prefixPackFailures = step.prefixPackFailures
        prefixPackedChunks = step.prefixPackedChunks
        prefixLastFailure = step.prefixLastFailure
    }
}
