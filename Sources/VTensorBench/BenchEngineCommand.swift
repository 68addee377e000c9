import Synchronization
import ArgumentParser
import CLICommon
import Engine
import Foundation
import Kernels
import Models
import Runtime
import Support
import VTensor

/// `vtensor bench engine`: the engine's own host time a step (scheduling, admission, mapping,
/// bookkeeping, outputs) with a model that computes nothing, over host memory: what a step
/// costs before and after the model, measured without a GPU.
struct BenchEngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "The engine's own host time a step, with a model that computes nothing.")

    @Option(help: "Running requests (rows a decode step), comma-separated.") var rows = "64,256,1024"
    @Option(help: "Prompt tokens of each request.") var promptTokens = 500
    @Option(help: "Decode steps timed after the prompts.") var steps = 100
    @Option(help: "Write the results as JSON here.") var jsonOut: String?
    @Option(help: "Plan each step before the previous one's picks are in (on, the GPU's way) or after (off).") var pipelineSteps: OnOff = .on
    @Option(help: "decode: every request decodes for the timed steps; churn: short answers, a new request for every one that finishes, prompts sharing a prefix within 16 groups (the prefix cache's matching, insertion, eviction and hold-back every step); shared-prefix: bench throughput's shared-prefix workload (16 groups x 16 prompts of 2048 + 128 tokens, 64 out; --groups, --shared-output-len, --arrivals-per-step) run to the end, virtual tensors and paged.")
    var workload: Workload = .decode
    @Option(help: "churn: output tokens of each request.") var outputTokens = 32
    @Option(help: "The prefix cache (on by default in the engine).") var prefixCache: OnOff = .on
    @Option(help: "shared-prefix: which KV modes to run (vtensor, paged or both, interleaved).") var kv: KVChoice = .both
    enum KVChoice: String, ExpressibleByArgument, CaseIterable { case vtensor, paged, both }
    @Option(help: "Virtual tensors: access granted once per run of adjacent chunks mapped together (on), once per chunk (off), or, for shared-prefix, both interleaved.")
    var accessPerRun: AccessChoice = .off
    enum AccessChoice: String, ExpressibleByArgument, CaseIterable { case on, off, both }
    @Option(help: "Virtual tensors: retired chunks unmapped a run at a time (on) or one by one (off).")
    var unmapPerRun: OnOff = .off

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case decode, churn, sharedPrefix = "shared-prefix", multiTurn = "multi-turn", arrivals
    }
    @Option(help: "arrivals: requests a second (Poisson, on the modeled clock), comma-separated.") var requestRates = "4,8,16,24"
    @Option(help: "arrivals: requests in a run.") var numPrompts = 1000
    @Option(help: "arrivals: prompt and output lengths, uniform within LOW-HIGH.") var inputRange = "128-1024"
    @Option var outputRange = "128-512"
    @Option(help: "multi-turn: conversations, rounds, tokens of a user turn and of an answer, conversations in flight (the prefix cache issue's defaults).")
    var numConversations = 256
    @Option var rounds = 5
    @Option var userLen = 512
    @Option var answerLen = 64
    @Option var maxInFlight = 128
    @Option(help: "multi-turn: tokens a step.") var maxNumBatchedTokens = 8192
    @Option(help: "shared-prefix: requests added before each step (default: all before the first), as a server's arrive.")
    var arrivalsPerStep: Int?
    @Option(help: "shared-prefix: groups of 16 prompts sharing a system prompt.") var groups = 16
    @Option(help: "shared-prefix: output tokens of each request.") var sharedOutputLen = 64
    @Option(help: "shared-prefix: add the requests from another thread, this many microseconds apart, while the engine steps (as a server's handlers do).")
    var arrivalGapUs: Int?
    @Option(help: "shared-prefix: milliseconds each step of the null model takes (a sleep standing in for the GPU).")
    var stepSleepMs = 0.0
    @Option(help: "Microseconds each mapping's granted access takes on the host backend (an H200's cuMemSetAccess: ~26 a chunk, or a slab's run), so the mapper is as slow as a GPU's. (Copies never move bytes here: the null model's KV holds nothing, and on a GPU a copy is queued on the stream.)")
    var setAccessDelayUs: UInt32 = 0
    @Option(help: "Microseconds each chunk created takes on the host backend (cuMemCreate: ~9-15 a 2 MiB chunk; a slab that much a chunk).")
    var createDelayUs: UInt32 = 0
    @Option(help: "shared-prefix, virtual tensors: --pack-prefix-chunks values to run as arms, comma-separated (0: no packing; e.g. 0,64 for the A/B).")
    var packPrefixChunks = "0"
    @Option(help: "Virtual tensors: the largest slab a run of fresh chunks that a step fills whole maps as (0: a chunk an allocation); for shared-prefix, comma-separated values to run as arms (e.g. 0,32).")
    var freshSlabChunks = "0"
    @Option(help: "multi-turn: the order waiting requests start in.") var schedulePolicy: SchedulePolicy = .fcfs
    @Option(help: "With --real-time: price decode as the shared-prefix decode reads it, a shared prefix once per tile of requests (on), or once per request (off).")
    var sharedPrefixDecode: OnOff = .on
    @Option(help: "multi-turn: KV budget in GiB (the GPU runs had about 110).") var kvBudgetGib = 110
    @Option(help: "shared-prefix: KV budget in GiB (default: twice what the requests hold, no pressure; an H100's runs have about 56).")
    var sharedKvBudgetGib: Double?
    @Option(help: "shared-prefix: evict unused cached chunks a step early when memory is short (EngineOptions.evictAhead): on, off, or both as arms.")
    var evictAhead: AccessChoice = .on
    @Option(help: "multi-turn: size each step's prompt tokens to the work waiting, with this step overhead in tokens (default: a fixed budget).")
    var stepOverheadTokens: Int?
    @Option(help: "multi-turn: tokens of a system prompt every conversation starts with (0: none).")
    var conversationSystemLen = 0
    @Flag(help: "multi-turn and shared-prefix: every step runs on a modeled device for its modeled H200 time, queued as on a GPU (the engine plans the next step meanwhile, and memory given back waits for the step in flight); multi-turn's arms are the prefix cache with each --fresh-slab-chunks value (packing as --pack-prefix-chunks' first value) and, with --kv both, paged; timed on the wall clock, with the device's idle time: the mapper's driver calls (--set-access-delay-us) race the modeled GPU as on a real one.")
    var realTime = false

    /// Takes each row's tokens into the cache (as a model would) and returns a fixed token.
    /// With a step cost model it also keeps a clock of the GPU time its steps would take.
    final class NullModel: LanguageModel {
        let config: ModelConfig
        let kvStorage: KVStorage
        let cost: StepCostModel?
        /// Milliseconds of modeled GPU time over the steps so far, and prompt tokens computed.
        private(set) var clockMs = 0.0
        /// An idle engine's clock moves on to the next arrival.
        func advance(to ms: Double) { clockMs = max(clockMs, ms) }
        private(set) var promptTokens = 0
        var maxSequenceTokens: Int { kvStorage.maxTokensPerRequest }
        var samplesOnDevice: Bool { true }
        var computesAsynchronously: Bool { true }
        /// Milliseconds each step sleeps (standing in for a GPU's step time in real time).
        var sleepMs = 0.0
        /// Steps queue and return at once, as on a GPU, each running for its modeled time after
        /// the one before on the wall clock: the engine plans the next step meanwhile, and a
        /// fence recorded while a step runs (memory given back) completes when it ends, as a
        /// CUDA event would. Set with `cost`.
        var device: HostBackend?
        private var busyUntil: UInt64 = 0
        private var queued: [Int: (due: UInt64, rows: Int)] = [:]
        private var serial = 0
        /// Nanoseconds the modeled device sat idle between steps, and ran steps.
        private(set) var idleNanos: UInt64 = 0
        private(set) var busyNanos: UInt64 = 0
        /// The longest idle gaps before a step: (step, ms), longest first, at most 8.
        private(set) var longestIdleGaps: [(step: Int, ms: Double)] = []
        /// The modeled device's busy share of the time since its first step.
        var busyShare: Double { Double(busyNanos) / Double(max(1, busyNanos + idleNanos)) }
        var queuesSteps: Bool { device != nil && cost != nil }
        /// With a cost model: decode rows whose leading K/V is one copy are priced as the
        /// shared-prefix decode reads them (each tile's shared keys once; `DecodeSchedule`).
        var sharedPrefixDecode = false
        /// Decode tiles planned and keys they spared, over the run.
        private(set) var tiles = 0
        private(set) var sparedKeys = 0
        init(config: ModelConfig, storage: KVStorage, cost: StepCostModel? = nil) { self.config = config; kvStorage = storage; self.cost = cost }

        func queueStep(_ inputs: [ForwardInput], feeds: [StepFeed], draws: [DeviceDraw], vocabularyLimit: Int) throws -> QueuedStep {
            guard let device, cost != nil else { throw RuntimeError.unsupported("the null model queues steps only with a modeled device") }
            let ms = try takeStep(inputs)
            let now = monotonicNanos()
            if busyUntil < now {
                if busyUntil > 0 {
                    idleNanos += now - busyUntil
                    longestIdleGaps = longestIdleGaps.keepingLargest([(step: serial + 1, ms: Double(now - busyUntil) / 1e6)], limit: 8) { $0.ms > $1.ms }
                }
                busyUntil = now
            }
            let nanos = UInt64(ms * 1e6)
            busyUntil += nanos
            busyNanos += nanos
            _ = device.beginWork(until: busyUntil)
            serial += 1
            queued[serial] = (busyUntil, inputs.count)
            return QueuedStep(serial: serial, rows: inputs.count)
        }

        func collect(_ step: QueuedStep) throws -> [SampledToken] {
            guard let entry = queued.removeValue(forKey: step.serial) else { throw RuntimeError.invalidRequest("step \(step.serial) was not queued") }
            let now = monotonicNanos()
            if entry.due > now { usleep(UInt32((entry.due - now) / 1000)) }
            return Array(repeating: SampledToken(id: 5), count: entry.rows)
        }
        func forward(_ inputs: [ForwardInput]) throws -> [[Float]] {
            throw RuntimeError.unsupported("the null model only samples")
        }
        func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
            if sleepMs > 0 { usleep(UInt32(sleepMs * 1000)) }
            _ = try takeStep(inputs)
            return inputs.map { _ in SampledToken(id: 5) }
        }

        /// Takes the rows' tokens into the cache and, with a cost model, advances the clock by
        /// the step's modeled milliseconds (returned; 0 without one).
        private func takeStep(_ inputs: [ForwardInput]) throws -> Double {
            let starts = try inputs.map { try kvStorage.length(of: $0.id) }
            var ms = 0.0
            if let cost {
                var spared = 0
                if sharedPrefixDecode {
                    let decodes = inputs.indices.filter { inputs[$0].tokens.count == 1 }
                    let shared = try kvStorage.sharedBlockIdentities(decodes.map { inputs[$0].id })
                    let tiles = DecodeSchedule.sharedPrefixTiles(
                        blocks: shared.blocks, requests: decodes.map { .init(length: starts[$0] + 1, queryStart: 0, queryCount: 1) },
                        tokensPerBlock: shared.tokensPerBlock,
                        membersPerTile: DecodeSchedule.membersPerTile(groupSize: config.numAttentionHeads / config.numKeyValueHeads))
                    spared = tiles.reduce(0) { $0 + ($1.requests.count - 1) * $1.tokens }
                    self.tiles += tiles.count
                    sparedKeys += spared
                }
                ms = cost.milliseconds(rows: zip(starts, inputs).map { ($0, $1.tokens.count) }, sparedKeys: spared)
                clockMs += ms
                promptTokens += inputs.reduce(0) { $0 + ($1.tokens.count > 1 ? $1.tokens.count : 0) }
            }
            try kvStorage.setLengths(zip(inputs, starts).map { ($0.id, $1 + $0.tokens.count) })
            if let paged = kvStorage.pagedCache {
                _ = paged.takeChangedTables()
                _ = paged.takePageCopies()
            }
            return ms
        }
    }

    struct Result: Codable {
        var rows: Int; var medianMs: Double; var microsPerRow: Double; var addMs: Double
        var workload = "decode"; var prefixCache = true; var finishedPerStep: Double?; var prefixHitRate: Double?
    }

    func run() throws {
        let counts = try rows.split(separator: ",").map { text -> Int in
            guard let n = Int(text), n >= 1 else { throw ValidationError("--rows takes positive integers, got \(text)") }
            return n
        }
        guard promptTokens >= 1, steps >= 1 else { throw ValidationError("--prompt-tokens and --steps must be positive") }
        if accessPerRun == .both && workload != .sharedPrefix {
            throw ValidationError("--access-per-run both runs the shared-prefix workload only; give on or off")
        }
        if let sharedKvBudgetGib, !(sharedKvBudgetGib > 0) {
            throw ValidationError("--shared-kv-budget-gib must be positive, got \(sharedKvBudgetGib)")
        }
        if evictAhead == .both && workload != .sharedPrefix {
            throw ValidationError("--evict-ahead both runs the shared-prefix workload only; give on or off")
        }
        if workload == .churn { return try runChurn(counts) }
        if workload == .sharedPrefix { return try runSharedPrefix() }
        if workload == .multiTurn { return try runMultiTurn() }
        if workload == .arrivals { return try runArrivals() }
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        var results: [Result] = []
        var table = Table(title: "engine host time a decode step (null model, host memory)", header: ["rows", "median ms", "us a row", "add (ms)"])
        for n in counts {
            // Long enough outputs that the first requests still decode when the last are admitted.
            let outputTokens = steps + n * promptTokens / 8192 + 8
            let engine = try makeEngine(config: config, rows: n, tokensPerRequest: promptTokens + outputTokens + 8, requestsHeld: n)
            let addStart = monotonicNanos()
            for i in 0..<n {
                try engine.add(GenerationRequest(prompt: (0..<promptTokens).map { 1000 + ($0 &* 31 &+ i) % 100_000 },
                                                 parameters: SamplingParameters(temperature: 0, maxTokens: outputTokens, ignoreEOS: true)))
            }
            let addMs = Double(monotonicNanos() - addStart) / 1e6
            var decode: [Double] = []
            while decode.count < steps && engine.hasWork {
                let t = monotonicNanos()
                if let failed = engine.step().first(where: { $0.error != nil }) { throw ValidationError("request \(failed.id) failed: \(failed.error!)") }
                let ms = Double(monotonicNanos() - t) / 1e6
                if engine.lastPlan.rows.count == n && engine.lastPlan.rows.allSatisfy(\.isDecode) { decode.append(ms) }
            }
            for id in 1...n { engine.abort(id) }
            engine.runUntilIdle { _ in }
            guard !decode.isEmpty else { throw ValidationError("no decode step of \(n) rows ran") }
            let median = decode.sorted()[decode.count / 2]
            results.append(Result(rows: n, medianMs: median, microsPerRow: median * 1000 / Double(n), addMs: addMs))
            table.add(["\(n)", fixed(median, 3), fixed(median * 1000 / Double(n), 2), fixed(addMs, 1)])
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(results)) }
    }

    /// An engine over the null model with Llama-3-8B's KV shape on host memory (small chunks,
    /// so that address space, not memory, is what a run uses), its budget holding
    /// `requestsHeld` requests of `tokensPerRequest` tokens.
    func makeEngine(config: ModelConfig, rows: Int, tokensPerRequest: Int, requestsHeld: Int, paged: Bool = false,
                            perRun: Bool? = nil, options: EngineOptions? = nil, cost: StepCostModel? = nil, freshSlab: Int? = nil,
                            modeledDevice: Bool = false) throws -> Engine {
        var config = config
        config.maxPositionEmbeddings = tokensPerRequest
        let shape = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .bf16)
        let bytes = requestsHeld * (tokensPerRequest + 16) * shape.tokenBytes
        // A modeled device runs its work in order, as a CUDA stream does.
        let host = try HostBackend(chunkSize: 2 << 20, capacityBytes: bytes + (64 << 20), ordersWork: modeledDevice)
        // Copies move no bytes: the null model's KV holds nothing, and on a GPU a copy is queued
        // on the stream, costing the host nothing (the host backend's memmove would fault in and
        // zero every page of a packed prefix).
        let model = FaultInjectingBackend(wrapping: host)
        model.setSkipsCopies(true)
        if setAccessDelayUs > 0 { model.setSetAccessDelay(micros: setAccessDelayUs) }
        if createDelayUs > 0 { model.setCreateDelay(micros: createDelayUs) }
        let backend: any MemoryBackend = model
        let memory = try VirtualMemory(backend: backend, budget: .bytes(bytes + (32 << 20)), accessPerRun: perRun ?? (accessPerRun == .on),
                                       unmapPerRun: unmapPerRun == .on, freshSlabChunks: freshSlab ?? Int(freshSlabChunks.split(separator: ",").first ?? "0") ?? 0)
        let cache = try KVCache(shape: shape, memory: memory, maxTokensPerRequest: tokensPerRequest)
        let storage: KVStorage = paged
            ? .paged(try PagedKVCache(shape: shape, pageTokens: 16, pageCount: bytes / (16 * shape.tokenBytes), maxTokensPerRequest: tokensPerRequest,
                                      maxRequests: max(1024, 4 * rows)))
            : .virtual(cache)
        let null = NullModel(config: config, storage: storage, cost: cost)
        if modeledDevice { null.device = host }
        null.sharedPrefixDecode = sharedPrefixDecode == .on
        return try Engine(model: null, tokenizer: nil, eosTokenIds: [],
                          options: options ?? EngineOptions(maxNumSeqs: rows, maxNumBatchedTokens: max(8192, rows), pipelineSteps: pipelineSteps == .on,
                                                            prefixCaching: prefixCache == .on))
    }

    /// The shared-prefix workload to the end, virtual tensors and paged in turn (interleaved
    /// rounds): the engine thread's time with the model computing nothing.
    private func runSharedPrefix() throws {
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        // bench throughput's shared-prefix workload, as the GPU runs use it (shuffled arrivals).
        let workload = SharedPrefixWorkload(groups: groups, perGroup: 16, systemLength: 2048, questionLength: 128, outputLength: sharedOutputLen)
        let requests = workload.requests(vocabulary: 1000..<config.vocabSize, seed: 1)
        var sharedSummary = "", idleSummary = ""
        var table = Table(title: "engine host time, shared prefix (null model, host memory, prefix cache \(prefixCache.rawValue))",
                          header: ["KV", "round", "steps", "host s", "ms a step", "mapping waits ms", "hit rate", "packs", "copied", "fresh runs"]
                            + (realTime ? ["device idle ms", "busy", "out tok/s"] : []))
        var results: [Result] = []
        // The arms: virtual tensors with access granted per chunk and/or per run, then paged.
        let packs = try packPrefixChunks.split(separator: ",").map { text -> Int in
            guard let n = Int(text), n >= 0 else { throw ValidationError("--pack-prefix-chunks takes integers >= 0, got \(text)") }
            return n
        }
        let freshes = try freshSlabChunks.split(separator: ",").map { text -> Int in
            guard let n = Int(text), n >= 0 else { throw ValidationError("--fresh-slab-chunks takes integers >= 0, got \(text)") }
            return n
        }
        var arms: [(label: String, paged: Bool, perRun: Bool, pack: Int, fresh: Int, ahead: Bool)] = []
        if kv != .paged {
            let aheads = evictAhead == .both ? [false, true] : [evictAhead == .on]
            for pack in packs {
                for fresh in freshes {
                    for ahead in aheads {
                        let packed = (pack > 0 ? ", pack \(pack)" : "") + (fresh > 1 ? ", fresh slabs \(fresh)" : "")
                            + (evictAhead == .both ? (ahead ? ", evict ahead" : ", evict when needed") : "")
                        if accessPerRun != .on {
                            arms.append((accessPerRun == .both ? "vtensor, access per chunk" + packed : "vtensor" + packed, false, false, pack, fresh, ahead))
                        }
                        if accessPerRun != .off {
                            arms.append((accessPerRun == .both ? "vtensor, access per run" + packed : "vtensor" + packed, false, true, pack, fresh, ahead))
                        }
                    }
                }
            }
        }
        if kv != .vtensor { arms.append(("paged", true, false, 0, 0, false)) }
        let tokensPerRequest = workload.systemLength + workload.questionLength + workload.outputLength + 8
        let tokenBytes = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .bf16).tokenBytes
        // Requests' worth of KV the budget holds (as makeEngine counts them).
        let held = sharedKvBudgetGib.map { Int($0 * Double(1 << 30)) / ((tokensPerRequest + 16) * tokenBytes) } ?? 2 * requests.count
        for round in 0..<3 {
            for (label, paged, perRun, pack, fresh, ahead) in arms {
                var options = EngineOptions(maxNumSeqs: 256, maxNumBatchedTokens: 8192, pipelineSteps: pipelineSteps == .on, prefixCaching: prefixCache == .on)
                options.packPrefixChunks = pack
                options.evictAhead = ahead
                let engine = try makeEngine(config: config, rows: 256, tokensPerRequest: tokensPerRequest,
                                            requestsHeld: held, paged: paged, perRun: perRun, options: options,
                                            cost: realTime ? StepCostModel.h200Llama3_8B : nil, freshSlab: fresh, modeledDevice: realTime)
                let null = engine.model as! NullModel
                null.sleepMs = realTime ? 0 : stepSleepMs
                // All at once, a few before each step, or from another thread in real time (as a
                // server's requests come in).
                var pending = requests[...]
                let arrived = Atomic<Bool>(arrivalGapUs == nil)
                if let gap = arrivalGapUs {
                    let all = requests
                    pending = []
                    let feeder = Thread {
                        for request in all {
                            _ = try? engine.add(request)
                            usleep(UInt32(gap))
                        }
                        arrived.store(true, ordering: .releasing)
                    }
                    feeder.start()
                }
                func arrive() throws {
                    let n = arrivalsPerStep ?? pending.count
                    for request in pending.prefix(n) { try engine.add(request) }
                    pending = pending.dropFirst(n)
                }
                try arrive()
                var steps = 0
                let start = monotonicNanos()
                while engine.hasWork || !pending.isEmpty || !arrived.load(ordering: .acquiring) {
                    try arrive()
                    guard engine.hasWork else { usleep(50); continue }
                    if let failed = engine.step().first(where: { $0.error != nil }) { throw ValidationError("request \(failed.id) failed: \(failed.error!)") }
                    steps += 1
                }
                let seconds = Double(monotonicNanos() - start) / 1e9
                let hit = engine.statistics.prefixHitRate
                sharedSummary += "\(label) round \(round + 1): \(null.tiles) tiles, \(null.sparedKeys) keys not read again; "
                if realTime && !null.longestIdleGaps.isEmpty {
                    idleSummary += "\(label) round \(round + 1): " + null.longestIdleGaps.map { gap in
                        let trace = engine.stepTrace(gap.step).map { " [\($0.summary)]" } ?? ""
                        return "step \(gap.step) \(fixed(gap.ms, 1)) ms" + trace
                    }.joined(separator: ", ") + "\n"
                }
                table.add([label, "\(round + 1)", "\(steps)", fixed(seconds, 3), fixed(seconds * 1000 / Double(steps), 3),
                           fixed(engine.statistics.mappingWaitSeconds * 1000, 1), fixed(100 * hit, 1) + "%", "\(engine.statistics.prefixPacks)",
                           "\(engine.model.kvStorage.virtualCache?.copiedPrefixChunks ?? 0)", "\(engine.model.kvStorage.virtualCache?.memory.accounting.freshRuns ?? 0)"]
                          + (realTime ? [fixed(Double(null.idleNanos) / 1e6, 0), fixed(100 * null.busyShare, 1) + "%",
                                         fixed(Double(requests.count * workload.outputLength) / seconds, 0)] : []))
                let name = paged ? "shared-prefix-paged" : (perRun ? "shared-prefix-access-per-run" : "shared-prefix") + (pack > 0 ? "-pack-\(pack)" : "")
                    + (fresh > 1 ? "-fresh-\(fresh)" : "")
                results.append(Result(rows: requests.count, medianMs: seconds * 1000 / Double(steps), microsPerRow: 0, addMs: 0,
                                      workload: name, prefixCache: prefixCache == .on, prefixHitRate: hit))
            }
        }
        print(table.render())
        if realTime && sharedPrefixDecode == .on { print("shared-prefix decode priced: \(sharedSummary)") }
        if !idleSummary.isEmpty { print("longest device idle gaps (with the engine thread's step trace):\n" + idleSummary) }
        if let jsonOut { try writeFile(jsonOut, try jsonString(results)) }
    }

    /// Keeps `n` requests in flight: each prompt is a 16-group shared prefix (half the prompt) and
    /// its own half; every step's finished requests are replaced by new ones before the next step.
    /// Times every step after the first 2n finishes (prefill chunks, decodes, admissions, the
    /// prefix cache's bookkeeping: all host work, the model computes nothing).
    private func runChurn(_ counts: [Int]) throws {
        guard outputTokens >= 1 else { throw ValidationError("--output-tokens must be positive") }
        guard let config = ModelPresets.config(named: "llama-3-8b") else { throw ValidationError("no llama-3-8b preset") }
        var results: [Result] = []
        var table = Table(title: "engine host time a step, churn (null model, host memory, prefix cache \(prefixCache.rawValue))",
                          header: ["rows", "median ms", "us a row", "finished a step", "prefix hit rate"])
        for n in counts {
            // Room for the running requests and as much again for cached prefixes.
            let engine = try makeEngine(config: config, rows: n, tokensPerRequest: promptTokens + outputTokens + 8, requestsHeld: 2 * n)
            var next = 0
            func add() throws {
                let group = next % 16, shared = promptTokens / 2
                let prompt = (0..<promptTokens).map { $0 < shared ? 1000 + ($0 &* 7 &+ group * 977) % 50_000 : 60_000 + ($0 &* 31 &+ next) % 60_000 }
                try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: outputTokens, ignoreEOS: true)))
                next += 1
            }
            let addStart = monotonicNanos()
            for _ in 0..<n { try add() }
            let addMs = Double(monotonicNanos() - addStart) / 1e6
            var finished = 0, timed: [Double] = [], finishedTimed = 0
            let warmup = 2 * n
            while timed.count < steps {
                let t = monotonicNanos()
                let outputs = engine.step()
                let ms = Double(monotonicNanos() - t) / 1e6
                if let failed = outputs.first(where: { $0.error != nil }) { throw ValidationError("request \(failed.id) failed: \(failed.error!)") }
                let done = outputs.filter(\.isFinal).count
                finished += done
                if finished > warmup { timed.append(ms); finishedTimed += done }
                for _ in 0..<done { try add() }
            }
            let hitRate = engine.statistics.prefixHitRate
            for id in 1...next { engine.abort(id) }
            engine.runUntilIdle { _ in }
            let median = timed.sorted()[timed.count / 2]
            let perStep = Double(finishedTimed) / Double(timed.count)
            results.append(Result(rows: n, medianMs: median, microsPerRow: median * 1000 / Double(n), addMs: addMs, workload: "churn",
                                  prefixCache: prefixCache == .on, finishedPerStep: perStep, prefixHitRate: hitRate))
            table.add(["\(n)", fixed(median, 3), fixed(median * 1000 / Double(n), 2), fixed(perStep, 2), fixed(100 * hitRate, 1) + "%"])
        }
        print(table.render())
        if let jsonOut { try writeFile(jsonOut, try jsonString(results)) }
    }
}
