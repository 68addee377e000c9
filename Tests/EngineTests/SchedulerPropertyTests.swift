import Runtime
import Testing
import VTensor
@testable import Engine

/// A small deterministic generator for the randomized runs.
struct TestRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E3779B97F4A7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

/// The engine against the fake model, with random arrivals, lengths, aborts and memory budgets.
/// After every step: the token budget and the sequence cap hold, the memory manager's audit
/// is clean and no more is held than the budget. At the end: every request ended exactly once
/// (finished with exactly the tokens it makes alone, or aborted with a prefix of them), no
/// chunk is left mapped, and no request waited forever.
@Suite struct SchedulerPropertyTests {
    /// How the fake model runs a step: sampling on the host, sampling "on the device" and
    /// returning at once, or queueing steps with picks fed on the "device" (the GPU's way).
    enum Mode: String, CaseIterable, Sendable { case host, device, queued }

    struct Trial: CustomTestStringConvertible, Sendable {
        var seed: UInt64
        var mode: Mode
        var pipelined: Bool
        /// KV in the paged baseline's pool instead of virtual tensors.
        var paged = false
        /// Chunks a step fills whole map as slabs of up to this many (virtual tensors): two
        /// trials of three.
        var freshSlabChunks: Int { paged ? 0 : [0, 4, 2][Int(seed / 5) % 3] }
        var testDescription: String {
            "seed \(seed), \(mode), \(pipelined ? "pipelined" : "one step at a time")\(paged ? ", paged" : "")\(freshSlabChunks > 0 ? ", fresh slabs \(freshSlabChunks)" : "")"
        }
    }

    static let virtualTrials: [Trial] = (0..<240).map { (i: Int) -> Trial in
        Trial(seed: UInt64(i), mode: Mode.allCases[i % 3], pipelined: i % 6 < 3)
    }
    static let pagedTrials: [Trial] = (0..<18).map { (i: Int) -> Trial in
        Trial(seed: UInt64(1000 + i), mode: Mode.allCases[i % 3], pipelined: i % 2 == 0, paged: true)
    }
    static let trials: [Trial] = virtualTrials + pagedTrials

    @Test(arguments: trials)
    func randomWorkload(_ trial: Trial) throws {
        var random = TestRandom(seed: trial.seed)
        let context = Int.random(in: 24...80, using: &random)
        let budgetChunks = Int.random(in: 3...40, using: &random)
        // Paged: as many 4-token pages as the chunks (8 tokens) would hold, plus some.
        let model = try FakeModel(context: context, budgetChunks: budgetChunks, samplesOnDevice: trial.mode == .device,
                                  queuesSteps: trial.mode == .queued, pagedPages: trial.paged ? 2 * budgetChunks + 1 : nil,
                                  ordersWork: trial.seed % 2 == 1, accessPerRun: trial.seed % 3 == 0, freshSlabChunks: trial.freshSlabChunks)
        // Half the queued trials give each step 1 ms of device work: memory given back retires
        // behind the step in flight, as on a GPU, so takeovers and aliases meet retiring slots.
        if trial.mode == .queued && trial.seed % 4 < 2 { model.stepWorkNanos = 1_000_000 }
        let pageCount = 2 * budgetChunks + 1
        var options = EngineOptions(maxNumSeqs: Int.random(in: 1...8, using: &random),
                                    maxNumBatchedTokens: [1, 2, 3, 7, 16, 64, 512][Int.random(in: 0..<7, using: &random)],
                                    mapAheadTokens: Int.random(in: 0...3, using: &random), asyncMapping: random.next() % 3 != 0,
                                    prefetchAdmissions: random.next() % 4 != 0, pipelineSteps: trial.pipelined,
                                    // Every policy in turn (lpm reorders the waiting queue by cached prefix each step).
                                    schedulePolicy: SchedulePolicy.allCases[Int(trial.seed / 2) % SchedulePolicy.allCases.count],
                                    prefixCaching: random.next() % 4 != 0)
        options.prefetchSteps = Int.random(in: 1...3, using: &random)
        // Steps sized to the prompt work waiting, in every third trial.
        options.stepOverheadTokens = trial.seed % 3 == 1 ? Int.random(in: 1...32, using: &random) : nil
        // Late draws in half the trials (they matter to queued, pipelined ones).
        options.lateDraws = trial.seed % 4 >= 2
        // Published prefixes packed into slabs in two trials of five (from one new chunk, or two).
        options.packPrefixChunks = [1, 0, 2, 0, 0][Int(trial.seed % 5)]
        // Cached chunks evicted a step early when memory is short, but in one trial of seven.
        options.evictAhead = trial.seed % 7 != 3
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [0], options: options)
        #expect(engine.maxSequenceLength <= context)
        #expect(engine.maxSequenceLength <= (trial.paged ? pageCount * 4 : budgetChunks * 8))

        let requestCount = Int.random(in: 20...60, using: &random)
        // Prompts that share prefixes (a few stems cut at random lengths), continue earlier
        // requests (their prompt and output, then a new turn: multi-turn chat), or stand alone;
        // some under another cache salt.
        let longest = engine.maxSequenceLength - 1
        let stems = (0..<3).map { _ in (0..<longest).map { _ in Int.random(in: 1..<50, using: &random) } }
        var made: [GenerationRequest] = []
        var pending: [(step: Int, request: GenerationRequest)] = (0..<requestCount).map { _ in
            var parameters = SamplingParameters(temperature: 0)
            parameters.maxTokens = Int.random(in: 1...24, using: &random)
            // A penalty (it leaves the fake's picks alone) makes a draw need the previous pick:
            // a pipelined engine synchronizes for it, or with late draws queues its sampling late.
            if random.next() % 4 == 0 { parameters.repetitionPenalty = 1.3 }
            var prompt: [Int]
            switch random.next() % 4 {
            case 0, 1:
                prompt = Array(stems[Int(random.next() % 3)].prefix(Int.random(in: 1...longest, using: &random)))
                prompt += (0..<Int.random(in: 0...3, using: &random)).map { _ in Int.random(in: 1..<50, using: &random) }
            case 2 where !made.isEmpty:
                let earlier = made[Int(random.next() % UInt64(made.count))]
                prompt = earlier.prompt + fakeReference(prompt: earlier.prompt, maxTokens: earlier.parameters.maxTokens!, maxLength: engine.maxSequenceLength)
                prompt += (0..<Int.random(in: 1...4, using: &random)).map { _ in Int.random(in: 1..<50, using: &random) }
            default:
                prompt = (0..<Int.random(in: 1..<engine.maxSequenceLength, using: &random)).map { _ in Int.random(in: 1..<50, using: &random) }
            }
            prompt = Array(prompt.prefix(longest))
            let request = GenerationRequest(prompt: prompt, parameters: parameters, cacheSalt: random.next() % 5 == 0 ? "tenant" : nil,
                                            priority: options.schedulePolicy == .priority ? Int.random(in: -2...2, using: &random) : 0)
            made.append(request)
            return (Int.random(in: 0...40, using: &random), request)
        }
        pending.sort { $0.step < $1.step }
        var requests: [RequestID: GenerationRequest] = [:]
        var outputs: [RequestID: [Int]] = [:]
        var finals: [RequestID: RequestOutput] = [:]
        var abortedOnPurpose: Set<RequestID> = []
        var step = 0
        let memory = model.kvStorage.virtualCache?.memory
        let paged = model.kvStorage.pagedCache
        while !pending.isEmpty || engine.hasWork {
            while let next = pending.first, next.step <= step {
                pending.removeFirst()
                let id = try engine.add(next.request)
                requests[id] = next.request
            }
            // Aborts: live requests now and then, plus ids that are unknown or already done.
            if random.next() % 12 == 0, let id = requests.keys.filter({ finals[$0] == nil }).randomElement(using: &random) {
                if engine.abort(id) { abortedOnPurpose.insert(id) }
            }
            if let done = finals.keys.randomElement(using: &random) { #expect(!engine.abort(done)) }
            #expect(!engine.abort(-5))

            for output in engine.step() {
                #expect(finals[output.id] == nil, "request \(output.id) produced output after its final one")
                outputs[output.id, default: []] += output.tokens.map(\.id)
                if output.isFinal { finals[output.id] = output }
            }
            let plan = engine.lastPlan
            #expect(plan.tokenCount <= options.maxNumBatchedTokens)
            #expect(plan.rows.count <= options.maxNumSeqs)
            #expect(Set(plan.rows.map(\.id)).count == plan.rows.count)
            #expect(engine.snapshot.running <= options.maxNumSeqs)
            // Chunks stranded (given back inside a slab run) are committed on top, possibly
            // counted twice (a holder's block too): the ledger errs high, never low.
            #expect(engine.snapshot.committedChunks - engine.statistics.strandedChunks <= engine.snapshot.capacityChunks)
            if let memory {
                #expect(memory.audit().isEmpty, "\(memory.audit())")
                #expect(memory.accounting.created <= budgetChunks)
                // The prefix cache: tree, ledger and holders agree, and every cached block's
                // tokens are what its chunk holds (the fake writes each token id into its K).
                // Physical memory never exceeds what the ledger committed (requests' own chunks
                // plus the prefix cache's), once deferred unmaps complete.
                try memory.drain()
                #expect(memory.accounting.inUse <= engine.snapshot.committedChunks,
                        "\(memory.accounting.inUse) chunks in use, \(engine.snapshot.committedChunks) committed; stranded: ledger \(engine.statistics.strandedChunks), memory \(memory.accounting.stranded); cached \(engine.statistics.prefixHeldChunks)")
                let audit = engine.auditPrefixCache()
                #expect(audit.problems.isEmpty, "\(audit.problems)")
                let cache = model.kvCache, perChunk = cache.layout.tokensPerChunk
                // Requests that name a chunk alike (what the shared-prefix decode tiles by: one
                // chunk aliased, or a packed or copied prefix and its source) hold the same tokens there.
                let ids = cache.requestIDs.sorted()
                let identities = try cache.sharedChunkIdentities(ids)
                for (a, x) in identities.enumerated() {
                    for (b, y) in identities.enumerated() where b > a {
                        // (Mapped ones only: a waiting request's aliases may still be pending.)
                        let tensors = try [ids[a], ids[b]].map { try cache.tensors(of: $0) }
                        for j in 0..<min(x.count, y.count) where x[j] == y[j]
                            && memory.inspect({ m in tensors.allSatisfy { $0.allSatisfy { m.isMapped($0, chunk: j) } } }) {
                            let held = try [ids[a], ids[b]].map { id in
                                let view = try cache.view(id, layer: 1, component: .key)
                                return (0..<perChunk).map { UnsafePointer<Int32>(bitPattern: UInt(view.address(token: j * perChunk + $0, head: 1)))!.pointee }
                            }
                            #expect(held[0] == held[1], "requests \(ids[a]) and \(ids[b]) name chunk \(j) alike but hold \(held[0]) and \(held[1])")
                        }
                    }
                }
                for node in audit.nodes {
                    let view = try cache.holderView(node.holder, layer: 1, component: .key)
                    let held = node.tokens.indices.map {
                        Int(UnsafePointer<Int32>(bitPattern: UInt(view.address(token: node.chunk * perChunk + $0, head: 1)))!.pointee)
                    }
                    #expect(held == node.tokens, "cached block at holder \(node.holder) chunk \(node.chunk) holds \(held), the tree says \(node.tokens)")
                }
            }
            if let paged {
                #expect(paged.audit().isEmpty, "\(paged.audit())")
                #expect(paged.accounting.usedPages == engine.snapshot.committedChunks)
                // The paged prefix cache: every cached block's tokens are what its page holds.
                let audit = engine.auditPrefixCache()
                #expect(audit.problems.isEmpty, "\(audit.problems)")
                for node in audit.nodes {
                    let pages = try paged.holderPages(node.holder)
                    guard node.chunk < pages.count, let page = pages[node.chunk] else {
                        Issue.record("cached block at holder \(node.holder) page \(node.chunk) has no page")
                        continue
                    }
                    let held = node.tokens.indices.map { Int(model.pagedKeySlot(page: page, token: $0).pointee) }
                    #expect(held == node.tokens, "cached block at holder \(node.holder) page \(node.chunk) holds \(held), the tree says \(node.tokens)")
                }
            }
            step += 1
            if step > 20_000 { Issue.record("no progress after 20000 steps: a request waits forever"); return }
        }
        #expect(model.stepTokenCounts.allSatisfy { $0 <= options.maxNumBatchedTokens })

        // Every request ended once; finished ones match the reference, aborted ones are a prefix.
        #expect(finals.count == requests.count)
        for (id, request) in requests {
            let reference = fakeReference(prompt: request.prompt, maxTokens: request.parameters.maxTokens!, maxLength: engine.maxSequenceLength)
            let got = outputs[id] ?? []
            guard let final = finals[id] else { continue }
            if final.finish == .abort {
                #expect(abortedOnPurpose.contains(id), "request \(id) aborted with \(final.error ?? "no error")")
                #expect(Array(reference.prefix(got.count)) == got)
            } else {
                #expect(got == reference, "request \(id): got \(got), alone it makes \(reference)")
                #expect(final.finish == (got.last == 0 ? .stop : .length))
            }
        }

        // Nothing held: no request in the cache, every chunk back in the pool once in-flight work is done.
        let stats = engine.statistics
        #expect(stats.finished + stats.aborted == requests.count)
        // Pipelined where the model samples on the device and it was asked for; a row is wasted
        // only for a request that stopped early (a stop token or an abort), at most one each.
        #expect(engine.pipelined == (trial.pipelined && trial.mode != .host))
        if engine.pipelined { #expect(stats.pipelinedSteps > 0) } else { #expect(stats.pipelinedSteps == 0 && stats.discardedRows == 0) }
        #expect(stats.discardedRows <= stats.finishedEOS + stats.aborted)
        #expect(stats.requestsAdded == requests.count)
        #expect(model.kvStorage.requestIDs.isEmpty)
        // Only the prefix cache holds memory now: once deferred unmaps complete, the chunks in
        // use are exactly those its blocks hold (a block extending a partial leaf in place shares
        // the leaf's chunk), and those given back inside a fresh slab whose other chunks it keeps
        // (stranded). A reset gives it all back.
        #expect(engine.snapshot.committedChunks == stats.prefixHeldChunks + stats.strandedChunks)
        if let memory {
            try memory.drain()
            let held = engine.auditPrefixCache().heldChunks
            #expect(stats.strandedChunks >= memory.accounting.stranded)
            #expect(memory.accounting.inUse == held + stats.strandedChunks && held <= stats.prefixHeldChunks,
                    "\(memory.accounting.inUse) chunks in use, the prefix cache's blocks hold \(held) (\(stats.prefixHeldChunks) blocks), \(stats.strandedChunks) stranded")
        }
        if options.prefixCaching {
            #expect(stats.prefixKeptChunks > 0)
            #expect(engine.resetPrefixCache())
            _ = engine.step()
            #expect(engine.snapshot.committedChunks == 0 && engine.statistics.prefixHeldChunks == 0 && engine.statistics.strandedChunks == 0)
        }
        withExtendedLifetime(engine) {}
        if let memory {
            try memory.drain()
            #expect(memory.accounting.inUse == 0)
            #expect(memory.accounting.mappings == 0 && memory.accounting.pendingAliases == 0)
        }
        if let paged { #expect(paged.accounting.usedPages == 0) }
    }

    /// `prefetchSteps`: a burst of waiting requests gets its first prompt chunks mapped that many
    /// steps' worth ahead (the steps after the next one in a job of their own), and every request
    /// still makes exactly the tokens it makes alone.
    @Test func prefetchStepsReachFurtherIntoABurst() throws {
        var prefetched: [Int: Int] = [:]
        for steps in [1, 3] {
            let model = try FakeModel(context: 64, budgetChunks: 200, samplesOnDevice: true)
            var options = EngineOptions(maxNumSeqs: 64, maxNumBatchedTokens: 16, asyncMapping: true, prefixCaching: false)
            options.prefetchSteps = steps
            let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [0], options: options)
            var prompts: [RequestID: [Int]] = [:]
            for i in 0..<20 {
                let prompt = (0..<8).map { 1 + ($0 &* 5 &+ i &* 3) % 49 }
                prompts[try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 3)))] = prompt
            }
            var outputs: [RequestID: [Int]] = [:]
            func collect(_ step: [RequestOutput]) { for output in step { outputs[output.id, default: []] += output.tokens.map(\.id) } }
            collect(engine.step())
            prefetched[steps] = engine.statistics.prefetches
            try engine.runUntilIdle(collect)
            for (id, prompt) in prompts {
                #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 3, maxLength: engine.maxSequenceLength), "request \(id), \(steps) steps")
            }
            let memory = try #require(model.kvStorage.virtualCache?.memory)
            try memory.drain()
            #expect(memory.accounting.inUse == 0 && memory.audit().isEmpty)
        }
        // After the first step (two 8-token prompts): one step's budget covers the next two prompts,
        // three steps' cover six.
        #expect((prefetched[3] ?? 0) >= (prefetched[1] ?? 0) + 3, "\(prefetched)")
    }

    /// `stepOverheadTokens`: a step's prompt tokens are sqrt(waiting prompt tokens x overhead),
    /// within an eighth of the maximum and the maximum; decodes come on top. A deep queue fills the
    /// step; the answers are the same as with fixed steps.
    @Test func stepsSizedToThePromptWorkWaiting() throws {
        func run(overhead: Int?, prompts count: Int) throws -> (tokens: [Int], outputs: [RequestID: [Int]]) {
            let model = try FakeModel(context: 64, budgetChunks: 400)
            var options = EngineOptions(maxNumSeqs: 64, maxNumBatchedTokens: 256, asyncMapping: false, pipelineSteps: false, prefixCaching: false)
            options.stepOverheadTokens = overhead
            let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
            for i in 0..<count {
                let prompt = (0..<20).map { 1 + ($0 &* 5 &+ i &* 3) % 49 }
                _ = try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 4, ignoreEOS: true)))
            }
            var tokens: [Int] = []
            var outputs: [RequestID: [Int]] = [:]
            while engine.hasWork {
                for output in engine.step() { outputs[output.id, default: []] += output.tokens.map(\.id) }
                tokens.append(engine.lastPlan.tokenCount)
            }
            return (tokens, outputs)
        }
        // 4 prompts of 20: D = 80, sqrt(80 x 4) = 17 prompt tokens, within [32, 256]: 32.
        let few = try run(overhead: 4, prompts: 4)
        #expect(few.tokens.first == 32, "\(few.tokens)")
        // 10 prompts: D = 200, sqrt(200 x 16) = 56; the next step has 2 decodes and D = 144: 2 + 48.
        let ten = try run(overhead: 16, prompts: 10)
        #expect(Array(ten.tokens.prefix(2)) == [56, 50], "\(ten.tokens)")
        // 40 prompts: D = 800, sqrt(800 x 128) = 320 > 256: the whole budget.
        let many = try run(overhead: 128, prompts: 40)
        #expect(many.tokens.first == 256, "\(many.tokens)")
        // The same answers as fixed steps.
        #expect(try run(overhead: nil, prompts: 10).outputs == ten.outputs)
    }

    /// Without a mapper thread (the CPU's engine) only the engine reclaims while idle: when the
    /// last request leaves, and when a reset empties the prefix cache, every chunk it retired is
    /// unmapped at once, however many (it took 64 a step, and then nothing until the next request).
    @Test func anIdleEngineWithoutAMapperUnmapsEverythingItRetired() throws {
        let model = try FakeModel(context: 200, budgetChunks: 400)
        var options = EngineOptions(maxNumSeqs: 16, maxNumBatchedTokens: 512, asyncMapping: false, prefixCaching: true)
        options.prefixCacheIdleChunks = 400  // the cache keeps everything while idle
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [0], options: options)
        for i in 0..<12 {
            try engine.add(GenerationRequest(prompt: (0..<150).map { 1 + ($0 &* 7 &+ i &* 13) % 49 }, parameters: SamplingParameters(temperature: 0, maxTokens: 4)))
        }
        try engine.runUntilIdle()
        let memory = try #require(model.kvStorage.virtualCache?.memory)
        #expect(memory.accounting.retiring == 0, "\(memory.accounting)")
        let cached = engine.statistics.prefixHeldChunks
        #expect(cached > 64, "the cache should hold more than one reclaim of old did (\(cached) chunks)")
        #expect(engine.resetPrefixCache())
        _ = engine.step()
        #expect(memory.accounting.retiring == 0 && memory.accounting.inUse == 0, "\(memory.accounting)")
    }

    /// Memory short, a cache full of chunks no one uses: with `evictAhead` each planned step
    /// leaves as many chunks free as the steps before it grew by (so the next step maps chunks
    /// retired a step earlier, not ones the step in flight may still read); evicting only when
    /// needed leaves none. Either way every request makes the tokens it makes alone.
    @Test func evictAheadKeepsAStepsGrowthFree() throws {
        var shortSteps: [Bool: Int] = [:], evictedAhead: [Bool: Int] = [:]
        for ahead in [false, true] {
            let model = try FakeModel(context: 64, budgetChunks: 24, queuesSteps: true)
            // (No prefetched admissions: they take the next step's chunks after the plan.)
            var options = EngineOptions(maxNumSeqs: 3, maxNumBatchedTokens: 24, prefetchAdmissions: false)
            options.evictAhead = ahead
            let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
            var random = TestRandom(seed: 17)
            let prompts = (0..<24).map { _ in (0..<Int.random(in: 9...30, using: &random)).map { _ in Int.random(in: 1..<50, using: &random) } }
            let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 6))) }
            var outputs: [RequestID: [Int]] = [:]
            var steps = 0
            while engine.hasWork {
                for output in engine.step() { outputs[output.id, default: []] += output.tokens.map(\.id) }
                let snapshot = engine.snapshot
                if snapshot.evictableChunks > 0 && snapshot.capacityChunks == snapshot.committedChunks { shortSteps[ahead, default: 0] += 1 }
                #expect(model.kvCache.memory.audit().isEmpty)
                steps += 1
                #expect(steps < 5000)
            }
            for (id, prompt) in zip(ids, prompts) {
                #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 6, maxLength: engine.maxSequenceLength, eos: nil))
            }
            evictedAhead[ahead] = engine.statistics.chunksEvictedAhead
        }
        #expect(evictedAhead[false] == 0 && (evictedAhead[true] ?? 0) > 0, "\(evictedAhead)")
        #expect(shortSteps[true, default: 0] == 0, "\(shortSteps)")
        #expect(shortSteps[false, default: 0] > 0, "\(shortSteps)")
    }

    /// Eviction a step ahead keeps at least a full step's prompt chunks free (at most a
    /// sixteenth of the budget) while the cache has chunks to give, even through decode-only
    /// steps that grow little: the wave of prompts after them then maps chunks retired a step
    /// earlier. Every request still makes the tokens it makes alone.
    @Test func evictAheadKeepsAFullStepFree() throws {
        let model = try FakeModel(context: 64, budgetChunks: 320, queuesSteps: true)
        var options = EngineOptions(maxNumSeqs: 4, maxNumBatchedTokens: 128, prefetchAdmissions: false)
        options.evictAhead = true
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let floor = engine.evictAheadFloor
        #expect(floor == min(engine.ledger.units.perRequest * ((128 + engine.kvBlockTokens - 1) / engine.kvBlockTokens), 320 / 16) && floor >= 12)
        // After the plan, the decodes' next tokens are mapped ahead out of what it kept free: a
        // chunk a request at most.
        let lookAhead = 4 * engine.ledger.units.perRequest
        var random = TestRandom(seed: 23)
        // Waves of distinct prompts, each wave then decoding long enough that only decodes grow.
        let prompts = (0..<60).map { _ in (0..<Int.random(in: 20...40, using: &random)).map { _ in Int.random(in: 1..<50, using: &random) } }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 20))) }
        var outputs: [RequestID: [Int]] = [:]
        var shortSteps = 0, checked = 0
        while engine.hasWork {
            for output in engine.step() { outputs[output.id, default: []] += output.tokens.map(\.id) }
            let snapshot = engine.snapshot
            if snapshot.evictableChunks > 0 {
                checked += 1
                if snapshot.capacityChunks - snapshot.committedChunks < floor - lookAhead { shortSteps += 1 }
            }
            #expect(model.kvCache.memory.audit().isEmpty)
        }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 20, maxLength: engine.maxSequenceLength, eos: nil))
        }
        #expect(checked > 20 && shortSteps == 0, "\(shortSteps) of \(checked) steps with cached chunks left less than \(floor) - \(lookAhead) free")
        #expect(engine.statistics.chunksEvictedAhead > 0)
    }

    /// A draw with penalties counts every token generated before it, so a pipelined engine
    /// collects the step in flight before planning the next one for such a request, or (late
    /// draws) queues the next step's forward pass and its draws after the collect.
    @Test(arguments: [false, true])
    func penaltiesSeeThePreviousPick(lateDraws: Bool) throws {
        let model = try FakeModel(context: 64, budgetChunks: 32, queuesSteps: true)
        var options = EngineOptions(maxNumSeqs: 4)
        options.lateDraws = lateDraws
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        #expect(engine.pipelined && engine.lateDraws == lateDraws)
        var penalized = SamplingParameters(temperature: 0, maxTokens: 12)
        penalized.repetitionPenalty = 1.2
        let plain = SamplingParameters(temperature: 0, maxTokens: 12)
        let ids = try [penalized, plain, penalized].enumerated().map { i, parameters in
            try engine.add(GenerationRequest(prompt: [3 + i, 7, 9], parameters: parameters))
        }
        var outputs: [RequestID: [Int]] = [:]
        engine.runUntilIdle { for output in $0 { outputs[output.id, default: []] += output.tokens.map(\.id) } }
        for (i, id) in ids.enumerated() {
            #expect(outputs[id] == fakeReference(prompt: [3 + i, 7, 9], maxTokens: 12, maxLength: engine.maxSequenceLength, eos: nil))
        }
        for id in [ids[0], ids[2]] {
            let counted = model.penaltyLog.filter { $0.id == id }.map(\.counted)
            #expect(counted == Array(0..<12), "request \(id)'s draws counted \(counted) generated tokens")
        }
        if lateDraws {
            #expect(engine.statistics.synchronizedSteps == 0 && engine.statistics.lateDrawSteps > 0, "\(engine.statistics)")
            #expect(engine.statistics.pipelinedSteps > 0)
        } else {
            #expect(engine.statistics.synchronizedSteps > 0)
        }
    }

    /// `min_tokens` bans the stop ids for exactly the first `min_tokens` draws: a pipelined
    /// engine must know the previous pick before it plans the draw that follows it (the GPU
    /// once held the stop off for one token too many).
    @Test(arguments: [false, true])
    func minTokensSeesThePreviousPick(lateDraws: Bool) throws {
        let model = try FakeModel(context: 64, budgetChunks: 32, queuesSteps: true)
        var options = EngineOptions(maxNumSeqs: 4)
        options.lateDraws = lateDraws
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [0], options: options)
        #expect(engine.pipelined)
        var held = SamplingParameters(temperature: 0, maxTokens: 10)
        held.minTokens = 4
        held.stopTokenIds = [49]
        let plain = SamplingParameters(temperature: 0, maxTokens: 10)
        let ids = try [held, plain, held].enumerated().map { i, parameters in
            try engine.add(GenerationRequest(prompt: [3 + i, 7, 9], parameters: parameters))
        }
        engine.runUntilIdle { _ in }
        for id in [ids[0], ids[2]] {
            let banned = model.minTokensLog.filter { $0.id == id }.map(\.banned)
            #expect(Array(banned.prefix(5)) == [true, true, true, true, false], "request \(id)'s draws banned the stop ids: \(banned)")
        }
    }
}

/// Runs `engine` until idle: the order requests finished in, and each one's tokens.
func runCollecting(_ engine: Engine) -> (finished: [RequestID], outputs: [RequestID: [Int]]) {
    var finished: [RequestID] = []
    var outputs: [RequestID: [Int]] = [:]
    engine.runUntilIdle { batch in
        for output in batch {
            outputs[output.id, default: []] += output.tokens.map(\.id)
            if output.isFinal { finished.append(output.id) }
        }
    }
    return (finished, outputs)
}

@Suite struct SchedulePolicyTests {
    /// With one seat, the admission order is the finishing order: arrival order under fcfs (and
    /// lpm, nothing being cached here); under lof the most tokens first, arrival order among
    /// equals. Every request's tokens are its own.
    @Test(arguments: SchedulePolicy.allCases) func admissionOrder(policy: SchedulePolicy) throws {
        let model = try FakeModel(context: 64, budgetChunks: 32)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: EngineOptions(maxNumSeqs: 1, schedulePolicy: policy))
        let limits = [3, 9, 5, 9, 1, 7]
        let ids = try limits.enumerated().map { i, limit in
            try engine.add(GenerationRequest(prompt: [3 + i, 7], parameters: SamplingParameters(temperature: 0, maxTokens: limit)))
        }
        let (finished, outputs) = runCollecting(engine)
        let expected = policy != .lof ? ids : [1, 3, 5, 2, 0, 4].map { ids[$0] }
        #expect(finished == expected)
        for (i, id) in ids.enumerated() {
            #expect(outputs[id] == fakeReference(prompt: [3 + i, 7], maxTokens: limits[i], maxLength: engine.maxSequenceLength, eos: nil))
        }
    }
}

/// `--schedule-policy priority` (vLLM's): lower `priority` first, arrival order among equals;
/// memory runs short for the lowest priority first; other policies refuse a priority.
@Suite struct PriorityPolicyTests {
    @Test func admittedByPriorityThenArrival() throws {
        let model = try FakeModel(context: 64, budgetChunks: 32)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: EngineOptions(maxNumSeqs: 1, schedulePolicy: .priority))
        let priorities = [2, 0, 1, 0, -1, 2]
        let ids = try priorities.enumerated().map { i, priority in
            try engine.add(GenerationRequest(prompt: [3 + i, 7], parameters: SamplingParameters(temperature: 0, maxTokens: 2), priority: priority))
        }
        let (finished, outputs) = runCollecting(engine)
        #expect(finished == [4, 1, 3, 2, 0, 5].map { ids[$0] })
        for (i, id) in ids.enumerated() {
            #expect(outputs[id] == fakeReference(prompt: [3 + i, 7], maxTokens: 2, maxLength: engine.maxSequenceLength, eos: nil))
        }
    }

    /// The lowest priority request starts first and runs alone for a step; two of higher
    /// priority join it, and the three outgrow the KV budget. Preempted first: the lowest priority
    /// (the first started), not the newest as under fcfs. Every answer is still its own.
    @Test(arguments: [SchedulePolicy.fcfs, .priority])
    func theLowestPriorityGivesItsMemoryBackFirst(policy: SchedulePolicy) throws {
        let model = try FakeModel(context: 64, budgetChunks: 9)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 3, maxNumBatchedTokens: 64, asyncMapping: false, pipelineSteps: false,
                                                       schedulePolicy: policy, prefixCaching: false))
        let priorities = policy == .priority ? [5, 0, 1] : [0, 0, 0]
        let prompts = (0..<3).map { i in (0..<12).map { 1 + ($0 &* 7 &+ i &* 5) % 49 } }
        func add(_ i: Int) throws -> RequestID {
            try engine.add(GenerationRequest(prompt: prompts[i], parameters: SamplingParameters(temperature: 0, maxTokens: 20, ignoreEOS: true),
                                             priority: priorities[i]))
        }
        var outputs: [RequestID: [Int]] = [:]
        var ids = [try add(0)]
        for output in engine.step() { outputs[output.id, default: []] += output.tokens.map(\.id) }
        ids += [try add(1), try add(2)]
        var firstPreempted: RequestID?
        while engine.hasWork {
            for output in engine.step() { outputs[output.id, default: []] += output.tokens.map(\.id) }
            if firstPreempted == nil { firstPreempted = engine.lastPlan.preempted.first }
        }
        #expect(firstPreempted == (policy == .priority ? ids[0] : ids[2]), "\(String(describing: firstPreempted))")
        for (i, id) in ids.enumerated() {
            #expect(outputs[id] == fakeReference(prompt: prompts[i], maxTokens: 20, maxLength: engine.maxSequenceLength, eos: nil))
        }
    }

    @Test func otherPoliciesRefuseAPriority() throws {
        let model = try FakeModel(context: 64, budgetChunks: 32)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: EngineOptions(schedulePolicy: .fcfs))
        #expect(throws: EngineError.invalidRequest("priority 3 asked for, but this engine schedules fcfs; a request's priority counts only under --schedule-policy priority (and must be 0 otherwise)")) {
            try engine.add(GenerationRequest(prompt: [3, 4], priority: 3))
        }
        _ = try engine.add(GenerationRequest(prompt: [3, 4], parameters: SamplingParameters(temperature: 0, maxTokens: 1), priority: 0))
    }
}

@Suite struct LongestPrefixFirstTests {
    /// One seat; a finished request leaves 24 tokens cached. Then B (nothing cached), C (8 of its
    /// tokens cached) and D (16 cached) arrive in that order: lpm starts D, C, B; fcfs B, C, D.
    /// Tokens are each request's own either way.
    @Test(arguments: [SchedulePolicy.fcfs, .lpm]) func startsTheLongestCachedPrefixFirst(policy: SchedulePolicy) throws {
        let model = try FakeModel(context: 64, budgetChunks: 64)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 1, maxNumBatchedTokens: 64, schedulePolicy: policy))
        let first = (0..<24).map { 1 + $0 % 41 }
        _ = try engine.add(GenerationRequest(prompt: first + [45], parameters: SamplingParameters(temperature: 0, maxTokens: 2)))
        engine.runUntilIdle { _ in }
        let prompts = [(0..<20).map { 42 + $0 % 7 }, Array(first[0..<8]) + [43, 44, 45], Array(first[0..<16]) + [46, 47, 48]]
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 3))) }
        let (finished, outputs) = runCollecting(engine)
        #expect(finished == (policy == .lpm ? [ids[2], ids[1], ids[0]] : ids))
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 3, maxLength: engine.maxSequenceLength, eos: nil))
        }
    }
}

@Suite struct SharedPrefixSchedulingTests {
    /// Requests that arrive together with a common 40-token prefix: the first computes it, the
    /// others wait for it (instead of computing it side by side) and then find it cached. Every
    /// request still makes exactly its own tokens.
    /// Groups of requests sharing a prefix, all sent at once: a request starting ahead of the
    /// others of its group computes the prefix and the rest find it cached, whether they start
    /// through admission or through a prefetch a step early.
    @Test(arguments: [false, true]) func eachGroupComputesItsPrefixOnce(paged: Bool) throws {
        let model = try FakeModel(context: 80, budgetChunks: 96, pagedPages: paged ? 193 : nil)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 16, maxNumBatchedTokens: 100))
        let prompts = (0..<4).flatMap { g in
            (0..<4).map { q in (0..<40).map { 1 + ($0 * 7 + g * 13) % 47 } + [3 + q, 5 + g, 7] }
        }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 4))) }
        var outputs: [RequestID: [Int]] = [:]
        engine.runUntilIdle { for output in $0 { outputs[output.id, default: []] += output.tokens.map(\.id) } }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 4, maxLength: engine.maxSequenceLength, eos: nil))
        }
        #expect(engine.statistics.prefixHitTokens == 4 * 3 * 40, "hits \(engine.statistics.prefixHitTokens)")
    }

    /// Requests further back than the next step whose prompts start with a cached prefix alias it
    /// ahead (a prefetch that maps only the prefix, on the mapper's spare time): they count their
    /// hits once, make the same tokens, and leave the memory manager and the cache consistent;
    /// with `aliasAheadChunks` 0 none does.
    @Test(arguments: [0, 4096]) func waitingRequestsAliasTheirCachedPrefixAhead(aliasAheadChunks: Int) throws {
        let model = try FakeModel(context: 80, budgetChunks: 96)
        var options = EngineOptions(maxNumSeqs: 2, maxNumBatchedTokens: 48)
        options.aliasAheadChunks = aliasAheadChunks
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let shared = (0..<40).map { 1 + ($0 * 5) % 47 }
        let prompts = (0..<12).map { i in shared + [3 + i, 5, 7 + i] }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 6))) }
        var outputs: [RequestID: [Int]] = [:]
        let memory = try #require(model.kvStorage.virtualCache?.memory)
        engine.runUntilIdle { step in
            for output in step { outputs[output.id, default: []] += output.tokens.map(\.id) }
            #expect(memory.audit().isEmpty, "\(memory.audit())")
            #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
        }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 6, maxLength: engine.maxSequenceLength, eos: nil))
        }
        let stats = engine.statistics
        #expect(stats.prefixHitTokens == 11 * 40, "hits \(stats.prefixHitTokens)")
        if aliasAheadChunks == 0 {
            #expect(stats.aliasedAhead == 0)
        } else {
            #expect(stats.aliasedAhead >= 6, "\(stats.aliasedAhead) aliased ahead")
        }
    }

    /// Aliasing ahead attaches at most about `aliasAheadChunksPerStep` chunks a step (a request
    /// whole), so a deep queue sharing a cached prefix is aliased over several steps instead of
    /// all in the first, while the engine thread keeps the GPU fed; every request still makes
    /// its tokens and finds its prefix cached.
    @Test func aliasingAheadIsSpreadOverSteps() throws {
        let model = try FakeModel(context: 80, budgetChunks: 160)
        var options = EngineOptions(maxNumSeqs: 2, maxNumBatchedTokens: 48)
        options.aliasAheadChunks = 4096
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        engine.aliasAheadChunksPerStep = 1
        let shared = (0..<40).map { 1 + ($0 * 5) % 47 }
        let prompts = (0..<12).map { i in shared + [3 + i, 5, 7 + i] }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 6))) }
        var outputs: [RequestID: [Int]] = [:]
        var aliased = 0, mostInAStep = 0
        while engine.hasWork {
            for output in engine.step() { outputs[output.id, default: []] += output.tokens.map(\.id) }
            let now = engine.statistics.aliasedAhead
            mostInAStep = max(mostInAStep, now - aliased)
            aliased = now
        }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 6, maxLength: engine.maxSequenceLength, eos: nil))
        }
        #expect(mostInAStep == 1 && aliased >= 6, "\(aliased) aliased ahead, at most \(mostInAStep) in a step")
        #expect(engine.statistics.prefixHitTokens == 11 * 40)
        #expect(engine.auditPrefixCache().problems.isEmpty)
    }

    /// A group whose prompt is partly cached (an earlier request shared its first 24 tokens)
    /// queues behind running requests that hold every seat: the requests further back alias
    /// what is cached ahead, the leader among them too. Once the leader computes the rest of the
    /// shared prefix, the others must start from all of it, not from the part they aliased
    /// ahead: aliasing ahead may never cost a hit.
    @Test(arguments: [0, 4096]) func aliasingAheadNeverCostsAHit(aliasAheadChunks: Int) throws {
        let model = try FakeModel(context: 96, budgetChunks: 160)
        var options = EngineOptions(maxNumSeqs: 2, maxNumBatchedTokens: 48)
        options.aliasAheadChunks = aliasAheadChunks
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let system = (0..<40).map { 1 + ($0 &* 5) % 47 }
        try engine.add(GenerationRequest(prompt: Array(system.prefix(24)) + [2], parameters: SamplingParameters(temperature: 0, maxTokens: 2)))
        try engine.runUntilIdle()
        // Two long requests hold both seats while the group arrives.
        for i in 0..<2 {
            try engine.add(GenerationRequest(prompt: (0..<12).map { 3 + ($0 + i * 7) % 40 }, parameters: SamplingParameters(temperature: 0, maxTokens: 12, ignoreEOS: true)))
        }
        _ = engine.step()
        let prompts = (0..<6).map { i in system + [3 + i, 5, 7 + i] }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 3))) }
        var outputs: [RequestID: [Int]] = [:]
        engine.runUntilIdle { for output in $0 { outputs[output.id, default: []] += output.tokens.map(\.id) } }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 3, maxLength: engine.maxSequenceLength, eos: nil))
        }
        let stats = engine.statistics
        if aliasAheadChunks > 0 { #expect(stats.aliasedAhead > 0, "the group should alias its cached 24 tokens ahead") }
        // The first computes 16 more shared tokens; the other five find all 40 cached.
        let groupComputed = stats.promptTokensComputed - 25 - 24
        #expect(groupComputed == 43 - 24 + 5 * 3, "the group computed \(groupComputed) prompt tokens")
        #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
    }

    /// With `packPrefixChunks`, a group leader's published prefix goes into the cache as a copy
    /// packed into a slab while the rest of its group waits: each of them maps the packed chunks
    /// as one run. Same tokens and hits as without packing, no run split, the ledger and the
    /// memory manager agree every step, and everything goes back at the end.
    @Test(arguments: [0, 2]) func aPackedPrefixServesItsGroupAsOneRunEach(pack: Int) throws {
        let model = try FakeModel(context: 80, budgetChunks: 96)
        var options = EngineOptions(maxNumSeqs: 16, maxNumBatchedTokens: 100)
        options.packPrefixChunks = pack
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let prompts = (0..<4).flatMap { g in
            (0..<4).map { q in (0..<40).map { 1 + ($0 * 7 + g * 13) % 47 } + [3 + q, 5 + g, 7] }
        }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 4))) }
        let memory = try #require(model.kvStorage.virtualCache?.memory)
        var outputs: [RequestID: [Int]] = [:]
        var sawRuns = false
        engine.runUntilIdle { step in
            for output in step { outputs[output.id, default: []] += output.tokens.map(\.id) }
            #expect(memory.audit().isEmpty, "\(memory.audit())")
            #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
            #expect(memory.accounting.created <= 96)
            sawRuns = sawRuns || memory.accounting.runMappings > 0
        }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 4, maxLength: engine.maxSequenceLength, eos: nil))
        }
        let stats = engine.statistics
        #expect(stats.prefixHitTokens == 4 * 3 * 40, "hits \(stats.prefixHitTokens)")
        #expect(memory.accounting.runSplits == 0)
        if pack > 0 {
            #expect(stats.prefixPacks >= 4, "\(stats.prefixPacks) packs")
            #expect(stats.prefixPackedChunks >= 4 * 4, "\(stats.prefixPackedChunks) chunks packed")  // a publish of one new chunk is not packed
            #expect(sawRuns, "no follower mapped a packed prefix as a run")
        } else {
            #expect(stats.prefixPacks == 0 && memory.accounting.packedSlabs == 0)
        }
        #expect(engine.resetPrefixCache())
        _ = engine.step()
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(memory.accounting.inUse == 0 && memory.accounting.slabs == 0 && memory.accounting.runMappings == 0)
    }

    /// With fresh slabs, the first leader, its prompt computed over two steps, publishes its second
    /// stretch of the shared prefix (one chunk, fewer than the pack size) ending inside a fresh
    /// run (chunks 4-5 map as one slab; the system prompt ends at chunk 5): that stretch is packed,
    /// so no follower copies part of the run. Same tokens as alone.
    @Test func aSharedStretchEndingInsideAFreshRunIsPacked() throws {
        let model = try FakeModel(context: 80, budgetChunks: 160, freshSlabChunks: 4)
        var options = EngineOptions(maxNumSeqs: 16, maxNumBatchedTokens: 32)
        options.packPrefixChunks = 8
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let cache = try #require(model.kvStorage.virtualCache)
        // 40 system tokens (5 chunks of 8) and a 16-token question: 7 chunks a prompt.
        let prompts = (0..<2).flatMap { g in
            (0..<5).map { q in (0..<40).map { 1 + ($0 * 7 + g * 13) % 47 } + (0..<16).map { 2 + ($0 + 3 * q + g) % 45 } }
        }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 3))) }
        var outputs: [RequestID: [Int]] = [:]
        engine.runUntilIdle { step in
            for output in step { outputs[output.id, default: []] += output.tokens.map(\.id) }
            #expect(cache.memory.audit().isEmpty, "\(cache.memory.audit())")
            #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
        }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 3, maxLength: engine.maxSequenceLength, eos: nil))
        }
        #expect(cache.memory.accounting.freshRuns > 0)
        #expect(engine.statistics.prefixPacks >= 1, "\(engine.statistics.prefixPacks) packs")
        #expect(cache.copiedPrefixChunks == 0, "\(cache.copiedPrefixChunks) chunks copied")
        #expect(engine.statistics.prefixHitTokens == 2 * 4 * 40, "hits \(engine.statistics.prefixHitTokens)")
    }

    /// A prefix published when nobody waited for it is held chunk by chunk; the first request
    /// that attaches it while another maps it (the publisher, still generating) repacks it into a
    /// slab, and every later request maps that as one run. The publisher's old chunks stay the
    /// cache's in the ledger until it leaves. Same tokens and hits as without packing.
    @Test(arguments: [0, 2]) func aSharedPrefixIsRepackedAtItsNextHit(pack: Int) throws {
        let model = try FakeModel(context: 96, budgetChunks: 96)
        var options = EngineOptions(maxNumSeqs: 8, maxNumBatchedTokens: 64)
        options.packPrefixChunks = pack
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let memory = try #require(model.kvStorage.virtualCache?.memory)
        let system = (0..<40).map { 1 + ($0 &* 11) % 47 }
        // The leader alone: it publishes its prompt with nobody waiting, then generates for a while.
        let leader = try engine.add(GenerationRequest(prompt: system + [2], parameters: SamplingParameters(temperature: 0, maxTokens: 30, ignoreEOS: true)))
        var outputs: [RequestID: [Int]] = [:]
        func step() {
            for output in engine.step() { outputs[output.id, default: []] += output.tokens.map(\.id) }
            #expect(memory.audit().isEmpty, "\(memory.audit())")
            #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
            try? memory.drain()
            #expect(memory.accounting.inUse <= engine.snapshot.committedChunks,
                    "\(memory.accounting.inUse) chunks in use, \(engine.snapshot.committedChunks) committed")
        }
        for _ in 0..<4 { step() }
        #expect(engine.statistics.prefixPacks == 0)
        let prompts = (0..<6).map { i in system + [3 + i, 5, 7 + i] }
        var ids: [RequestID] = []
        var sawRuns = false
        for prompt in prompts {
            ids.append(try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 3))))
            step()
            sawRuns = sawRuns || memory.accounting.runMappings > 0
        }
        while engine.hasWork {
            step()
            sawRuns = sawRuns || memory.accounting.runMappings > 0
        }
        #expect(outputs[leader] == fakeReference(prompt: system + [2], maxTokens: 30, maxLength: engine.maxSequenceLength, eos: nil))
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 3, maxLength: engine.maxSequenceLength, eos: nil))
        }
        let stats = engine.statistics
        #expect(stats.prefixHitTokens == 6 * 40, "hits \(stats.prefixHitTokens)")
        #expect(memory.accounting.runSplits == 0)
        if pack > 0 {
            #expect(stats.prefixPacks == 1, "\(stats.prefixPacks) packs")
            #expect(sawRuns, "no request mapped the repacked prefix as a run")
        } else {
            #expect(stats.prefixPacks == 0)
        }
        // Nothing running: the ledger holds exactly what the tree does (the orphans are gone).
        #expect(engine.snapshot.committedChunks == stats.prefixHeldChunks)
        #expect(engine.resetPrefixCache())
        _ = engine.step()
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(memory.accounting.inUse == 0 && memory.accounting.slabs == 0)
    }

    /// Conversations sharing a packed system prompt: each next round takes its last round's
    /// ranges over and aliases the shared head again, which its last round gave back while the
    /// step that read it may still run (every step here is device work for 40 ms). Those slots,
    /// still retiring, keep their mappings: no wait for the device on the engine thread. Same
    /// tokens as each conversation alone.
    @Test func aNextRoundKeepsTheHeadItsLastRoundGaveBack() throws {
        let model = try FakeModel(context: 160, budgetChunks: 160, queuesSteps: true, ordersWork: true)
        model.stepWorkNanos = 40_000_000
        var options = EngineOptions(maxNumSeqs: 8, maxNumBatchedTokens: 64)
        options.packPrefixChunks = 2
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let memory = model.kvCache.memory
        let system = (0..<40).map { 1 + ($0 &* 13) % 47 }
        let parameters = SamplingParameters(temperature: 0, maxTokens: 5, ignoreEOS: true)
        var conversations: [RequestID: (prompt: [Int], round: Int, index: Int)] = [:]
        for c in 0..<4 {
            let prompt = system + [3 + c, 9, 4 + c]
            conversations[try engine.add(GenerationRequest(prompt: prompt, parameters: parameters))] = (prompt, 0, c)
        }
        var outputs: [RequestID: [Int]] = [:]
        var rounds = 0
        while engine.hasWork {
            let step = engine.step()
            #expect(memory.audit().isEmpty, "\(memory.audit())")
            #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
            for output in step {
                outputs[output.id, default: []] += output.tokens.map(\.id)
                guard output.isFinal, let conversation = conversations[output.id] else { continue }
                let answer = outputs[output.id]!
                #expect(answer == fakeReference(prompt: conversation.prompt, maxTokens: 5, maxLength: engine.maxSequenceLength, eos: nil),
                        "conversation \(conversation.index) round \(conversation.round)")
                rounds += 1
                guard conversation.round < 3 else { continue }
                // The next round at once, as a client that was waiting for this answer.
                let next = conversation.prompt + answer + [10 + conversation.round, 20 + conversation.index, 30]
                conversations[try engine.add(GenerationRequest(prompt: next, parameters: parameters))] = (next, conversation.round + 1, conversation.index)
            }
        }
        #expect(rounds == 16)
        let cache = model.kvCache
        #expect(engine.statistics.prefixPacks >= 1)
        #expect(cache.partialTakeovers >= 1, "\(cache.takeovers) takeovers, \(cache.partialTakeovers) with the head aliased")
        #expect(memory.accounting.realiasedRetiring >= 5, "\(memory.accounting.realiasedRetiring) retiring head chunks kept")
        #expect(engine.resetPrefixCache())
        _ = engine.step()
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(memory.accounting.inUse == 0 && memory.accounting.slabs == 0)
    }

    /// Eviction takes a packed holder's blocks together: an idle engine trimming its cache to a
    /// few chunks never leaves a slab partly cached, so every slab left is whole in the cache and
    /// the rest of the memory goes back to the device.
    @Test func anIdleTrimGivesSlabsBackWhole() throws {
        let model = try FakeModel(context: 80, budgetChunks: 96)
        var options = EngineOptions(maxNumSeqs: 16, maxNumBatchedTokens: 100)
        options.packPrefixChunks = 2
        options.prefixCacheIdleChunks = 3
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let prompts = (0..<4).flatMap { g in
            (0..<4).map { q in (0..<40).map { 1 + ($0 * 7 + g * 13) % 47 } + [3 + q, 5 + g, 7] }
        }
        for prompt in prompts { try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 4))) }
        try engine.runUntilIdle()
        let memory = try #require(model.kvStorage.virtualCache?.memory)
        #expect(engine.statistics.prefixPacks >= 4)
        // The next step finds nothing to run: the cache is trimmed to 3 chunks' worth or less.
        _ = engine.step()
        try memory.drain()
        _ = try memory.trim(to: 0)
        let accounting = memory.accounting
        #expect(engine.statistics.prefixHeldChunks <= 3)
        #expect(accounting.created == accounting.inUse, "\(accounting.created) chunks held, \(accounting.inUse) in use: a slab is partly cached")
        #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
    }

    /// The step that returns the last request's final output does not trim the cache (that
    /// output would wait for it); the engine still has work until the next step has trimmed.
    @Test func theLastOutputIsReturnedBeforeTheTrim() throws {
        let model = try FakeModel(context: 80, budgetChunks: 96)
        var options = EngineOptions(maxNumSeqs: 8, maxNumBatchedTokens: 100)
        options.prefixCacheIdleChunks = 1
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let shared = (0..<48).map { 1 + ($0 &* 5) % 47 }
        for i in 0..<4 { try engine.add(GenerationRequest(prompt: shared + [3 + i, 7], parameters: SamplingParameters(temperature: 0, maxTokens: 3))) }
        var finals = 0
        while finals < 4 {
            #expect(engine.hasWork)
            finals += engine.step().filter(\.isFinal).count
        }
        // The last outputs are out; the cache still holds what the requests published.
        let held = engine.statistics.prefixHeldChunks
        #expect(held > 1, "\(held) chunks cached")
        #expect(engine.hasWork, "the trim is still to come")
        #expect(engine.step().isEmpty)
        #expect(engine.statistics.prefixHeldChunks <= 1, "\(engine.statistics.prefixHeldChunks) chunks cached after the idle step")
        #expect(!engine.hasWork)
        #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
    }

    /// A pack the driver refuses (the copy into the slab fails) leaves nothing behind: the
    /// publish shares the request's own chunks instead, the group still finds its prefix cached,
    /// and every request makes its own tokens.
    @Test func aFailedPackFallsBackToSharing() throws {
        let model = try FakeModel(context: 80, budgetChunks: 96, faults: true)
        var options = EngineOptions(maxNumSeqs: 8, maxNumBatchedTokens: 64)
        options.packPrefixChunks = 2
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let faults = try #require(model.kvCache.memory.backend as? FaultInjectingBackend)
        faults.failNext(.copy, times: 100)
        let shared = (0..<40).map { 1 + ($0 &* 3) % 47 }
        let prompts = (0..<6).map { i in shared + [3 + i, 5, 7 + i] }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 4))) }
        var outputs: [RequestID: [Int]] = [:]
        let memory = model.kvCache.memory
        engine.runUntilIdle { step in
            for output in step { outputs[output.id, default: []] += output.tokens.map(\.id) }
            #expect(memory.audit().isEmpty, "\(memory.audit())")
            #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
        }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 4, maxLength: engine.maxSequenceLength, eos: nil))
        }
        let stats = engine.statistics
        #expect(faults.injectedCounts[.copy, default: 0] >= 1)
        #expect(stats.prefixPacks == 0 && stats.prefixPublishFailures == 0 && stats.prefixAttachFailures == 0)
        #expect(stats.prefixPackFailures >= 1)
        #expect(stats.prefixHitTokens == 5 * 40, "hits \(stats.prefixHitTokens)")
        #expect(stats.prefixLastFailure?.contains("packing") == true, "\(stats.prefixLastFailure ?? "nil")")
        // The refused slabs went back to the pool; none is left held.
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(memory.accounting.packedSlabs == 0 && memory.accounting.slabs == 0)
    }

    /// A cached prefix that cannot be aliased (here the driver refuses the new request's address
    /// range) is computed again, correctly, and counted with its error: a lost hit is never silent.
    @Test func aPrefixThatCannotBeAliasedIsComputedAgainAndCounted() throws {
        let model = try FakeModel(context: 96, budgetChunks: 64, faults: true)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: EngineOptions(maxNumSeqs: 4))
        let prompt = (0..<40).map { 1 + ($0 &* 7) % 47 }
        try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 4)))
        try engine.runUntilIdle()
        #expect(engine.statistics.prefixAttachFailures == 0 && engine.statistics.prefixLastFailure == nil)
        let faults = try #require(model.kvCache.memory.backend as? FaultInjectingBackend)
        faults.failNext(.reserve)
        let longer = prompt + [5, 6, 9]
        let id = try engine.add(GenerationRequest(prompt: longer, parameters: SamplingParameters(temperature: 0, maxTokens: 4)))
        var tokens: [Int] = []
        engine.runUntilIdle { for output in $0 where output.id == id { tokens += output.tokens.map(\.id) } }
        #expect(tokens == fakeReference(prompt: longer, maxTokens: 4, maxLength: engine.maxSequenceLength, eos: nil))
        let stats = engine.statistics
        #expect(faults.injectedCounts[.reserve] == 1)
        #expect(stats.prefixAttachFailures == 1 && stats.prefixPublishFailures == 0)
        #expect(stats.prefixLastFailure?.contains("aliasing 40 cached tokens for request \(id)") == true, "\(stats.prefixLastFailure ?? "nil")")
        #expect(stats.prefixHitTokens == 0 && stats.promptTokensComputed == prompt.count + longer.count)
        #expect(engine.auditPrefixCache().problems.isEmpty, "\(engine.auditPrefixCache().problems)")
    }

    @Test(arguments: [false, true]) func requestsWaitForAPrefixBeingComputed(paged: Bool) throws {
        let model = try FakeModel(context: 80, budgetChunks: 64, pagedPages: paged ? 129 : nil)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: EngineOptions(maxNumSeqs: 8, maxNumBatchedTokens: 64))
        let shared = (0..<40).map { 1 + $0 % 47 }
        let prompts = (0..<6).map { i in shared + [3 + i, 5, 7 + i] }
        let ids = try prompts.map { try engine.add(GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 5))) }
        var outputs: [RequestID: [Int]] = [:]
        var step = 0, startStep: [RequestID: Int] = [:], finishStep: [RequestID: Int] = [:]
        engine.runUntilIdle { step += 1
            for row in engine.lastPlan.rows where startStep[row.id] == nil { startStep[row.id] = step }
            for output in $0 {
                outputs[output.id, default: []] += output.tokens.map(\.id)
                if output.isFinal { finishStep[output.id] = step }
            }
        }
        for (id, prompt) in zip(ids, prompts) {
            #expect(outputs[id] == fakeReference(prompt: prompt, maxTokens: 5, maxLength: engine.maxSequenceLength, eos: nil))
        }
        // Five of six found the 40 shared tokens (five whole 8-token chunks, ten 4-token pages) cached.
        let stats = engine.statistics
        #expect(stats.prefixHitTokens == 5 * 40, "hits \(stats.prefixHitTokens)")
        #expect(stats.promptTokensComputed == prompts.reduce(0) { $0 + $1.count } - 5 * 40)
        // The first request's five whole chunks went into the cache when its prompt was written,
        // while it was still running: the others started before it finished.
        #expect(stats.prefixSharedRunningChunks == (paged ? 10 : 5))
        let firstEnd = finishStep[ids[0]]!, othersStart = ids.dropFirst().map { startStep[$0]! }
        #expect(othersStart.allSatisfy { $0 < firstEnd }, "the first ended at step \(firstEnd), the others started at \(othersStart)")
    }
}
