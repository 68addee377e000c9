import ArgumentParser
import CLICommon
import GPU
import Glibc
import Kernels
import VTensor

/// The measurements behind `vtensor bench vmm`, on either backend.
struct VMMBench {
    let device: any DeviceWork
    let chunks: Int
    let steps: Int
    let log: Bool
    let stages: Set<String>
    /// The placement stage's trigger mode (`--placement-trigger`): nil runs its phases.
    var placementTrigger: PlacementTrigger? = nil
    static let allStages = ["latency", "mapper", "access", "slabs", "packed", "steps", "launch", "churn", "placement", "reach", "copy", "layouts"]
    var gpu: CUDAWork? { device as? CUDAWork }
    var backend: any MemoryBackend { device.backend }
    var chunk: Int { backend.chunkSize }
    /// Layers the CPU layout measurement writes and reads (one per timed run, plus warm-up).
    let cpuLayers = 6

    func say(_ text: String) { if log { print(text) } }

    func run() throws -> VMMBenchReport {
        func stage<T>(_ name: String, _ message: String, _ body: () throws -> T) throws -> T? {
            guard stages.contains(name) else { return nil }
            say(message)
            return try body()
        }
        let latencies = try stage("latency", "measuring per-chunk driver calls (\(chunks) chunks)...") { try measureLatencies() } ?? []
        let mapper = try stage("mapper", "measuring the asynchronous mapper...") { try measureMapper() }
        let access = try stage("access", "measuring access granted per run of chunks...") { try measureAccessRuns() }
        for name in ["slabs", "launch", "churn", "placement", "reach"] where gpu == nil && stages.contains(name) { say("(\(name): a GPU stage, not measured on \(backend.name))") }
        let slabs = try gpu.flatMap { gpu in try stage("slabs", "measuring allocations of several chunks, mapped in one call...") { try measureSlabs(gpu) } }
        let packed = try stage("packed", "measuring a prefix packed into a slab, aliased as one run...") { try measurePacked() } ?? nil
        let stepAhead = try stage("steps", "measuring step-ahead waits (\(steps) steps)...") { try measureStepAhead() } ?? []
        let launch = try gpu.flatMap { gpu in try stage("launch", "measuring kernel launches while mapping...") { try measureLaunches(gpu) } }
        let churn = try gpu.flatMap { gpu in try stage("churn", "measuring KV reads while the mapper maps and unmaps...") { try measureReadsUnderChurn(gpu) } }
        let placement = try gpu.flatMap { gpu in try stage("placement", "measuring KV reads by where the chunks sit...") { try measurePlacement(gpu) } }
        let reach = try gpu.flatMap { gpu in try stage("reach", "measuring KV reads by the address ranges they sit in...") { try measureReach(gpu) } }
        let copy = try stage("copy", "measuring copy bandwidth...") { try measureCopy() }
        let layouts = try stage("layouts", "measuring KV layout read bandwidth...") { try measureLayouts() }
        return VMMBenchReport(date: todayUTC(), backend: backend.name, device: device.name, chunkSize: chunk,
                              latencies: latencies, mapper: mapper, access: access, slabs: slabs ?? [], packed: packed, stepAhead: stepAhead, launch: launch,
                              churn: churn ?? nil, placement: placement ?? nil, reach: reach ?? [],
                              copy: copy, layoutShape: layouts?.0 ?? "", layouts: layouts?.1 ?? [])
    }

    // MARK: Per-chunk latencies, straight on the backend

    func measureLatencies() throws -> [OperationLatency] {
        let base = try backend.reserve(bytes: chunks * chunk)
        defer { try? backend.releaseReservation(base: base, bytes: chunks * chunk) }
        var created: [PhysicalChunk] = []
        var samples: [String: [UInt64]] = [:]
        func timed(_ name: String, _ body: () throws -> Void) rethrows {
            let start = monotonicNanos()
            try body()
            samples[name, default: []].append(monotonicNanos() - start)
        }
        for _ in 0..<chunks { try timed("create") { created.append(try backend.createChunk()) } }
        for (i, c) in created.enumerated() { try timed("map") { try backend.map(c, at: base + UInt64(i * chunk)) } }
        for i in 0..<chunks { try timed("set access") { try backend.setAccess(at: base + UInt64(i * chunk), bytes: chunk) } }
        for i in 0..<chunks { try timed("unmap") { try backend.unmap(at: base + UInt64(i * chunk)) } }
        for c in created { try timed("release") { try backend.releaseChunk(c) } }
        return ["create", "map", "set access", "unmap", "release"].map { OperationLatency(operation: $0, latency: Percentiles(samples[$0]!)) }
    }

    // MARK: Mapper throughput

    /// Mappings a second of the asynchronous mapper filling 8 tensors of `chunks / 8` chunks, from
    /// a warm reserve or creating every chunk.
    func mapperRate(warm: Bool, reuseOrder: ChunkReuseOrder = .default, accessPerRun: Bool = false) throws -> (Double, MapperStatistics) {
        let memory = try VirtualMemory(backend: backend, budget: .bytes((chunks + 8) * chunk),
                                       lowWatermark: warm ? chunks : 0, highWatermark: chunks, reuseOrder: reuseOrder,
                                       accessPerRun: accessPerRun)
        if warm { try memory.replenish() }
        let mapper = AsyncMapper(memory: memory, threadSetup: threadSetup(for: device))
        defer { mapper.shutdown() }
        let parts = 8
        let tensors = try (0..<parts).map { _ in try memory.makeTensor(bytes: (chunks / parts) * chunk) }
        let start = monotonicNanos()
        let tickets = tensors.map { mapper.submit([($0, $0.chunkCount)]) }
        for t in tickets { try mapper.wait(t) }
        let seconds = Double(monotonicNanos() - start) / 1e9
        let mapped = tensors.reduce(0) { $0 + $1.chunkCount }
        return (Double(mapped) / seconds, mapper.statistics)
    }

    func measureMapper() throws -> MapperThroughput {
        let (warm, stats) = try mapperRate(warm: true)
        let (cold, _) = try mapperRate(warm: false)
        let (newestFirst, _) = try mapperRate(warm: true, reuseOrder: .newestFirst)
        var threaded = try [1, 2, 4].map { ThreadedRate(threads: $0, mappingsPerSecond: try rawThreadedRate(threads: $0)) }
        // Does mapping physical chunks in the reverse of their creation order (what a pool that
        // hands out its newest chunk first does) cost the driver more?
        threaded.append(ThreadedRate(threads: 1, mappingsPerSecond: try rawThreadedRate(threads: 1, reverseOrder: true), reverseOrder: true))
        return MapperThroughput(chunks: chunks / 8 * 8, mappingsPerSecond: warm, coldMappingsPerSecond: cold,
                                newestFirstMappingsPerSecond: newestFirst,
                                p50Micros: Double(stats.chunkLatencyP50) / 1000, p99Micros: Double(stats.chunkLatencyP99) / 1000,
                                threadedRates: threaded)
    }

    /// Map + set access of pre-created chunks straight on the backend, split over `threads`.
    func rawThreadedRate(threads: Int, reverseOrder: Bool = false) throws -> Double {
        let n = chunks / 4 * 4
        let backend = self.backend
        let chunk = self.chunk
        let base = try backend.reserve(bytes: n * chunk)
        let created = try (0..<n).map { _ in try backend.createChunk() }
        let made = reverseOrder ? Array(created.reversed()) : created
        defer {
            for i in 0..<n { try? backend.unmap(at: base + UInt64(i * chunk)) }
            for c in made { try? backend.releaseChunk(c) }
            try? backend.releaseReservation(base: base, bytes: n * chunk)
        }
        let setup = threadSetup(for: device)
        let failures = ConditionLock()
        nonisolated(unsafe) var firstError: (any Error)?
        let start = monotonicNanos()
        let workers = (0..<threads).map { t in
            WorkerThread(name: "vtensor-bench-\(t)") {
                do {
                    try setup?()
                    for i in stride(from: t, to: n, by: threads) {
                        let address = base + UInt64(i * chunk)
                        try backend.map(made[i], at: address)
                        try backend.setAccess(at: address, bytes: chunk)
                    }
                } catch {
                    failures.withLock { if firstError == nil { firstError = error } }
                }
            }
        }
        workers.forEach { $0.join() }
        let seconds = Double(monotonicNanos() - start) / 1e9
        if let firstError { throw firstError }
        return Double(n) / seconds
    }

    // MARK: Step-ahead waits

    /// A decode loop: while step s "computes" (a GPU kernel of fixed length, or a sleep on the
    /// CPU), the mapper maps what step s+1 needs; the wait before step s+1 should not block.
    func measureStepAhead() throws -> [StepAheadResult] {
        let isGPU = gpu != nil
        let requests = isGPU ? 256 : 64
        let stepMillis = 5.0
        let spinCycles = try gpu.map { try calibrateSpin($0, millis: stepMillis) } ?? 0
        var results: [StepAheadResult] = []
        // Bursts: every 25 steps 4 requests of 1024 tokens join; their mapping is requested
        // `lookahead` steps before the step that first uses it.
        // How the engine thread waits for a step: cuStreamSynchronize spins in the driver; an
        // event polled between short sleeps leaves the driver to the mapper thread.
        let scenarios: [(name: String, lookahead: Int?, pollEvent: Bool)] = [
            ("decode", nil, true), ("decode + prefill bursts, 1 step ahead", 1, true),
            ("decode + prefill bursts, 2 steps ahead", 2, true), ("decode + prefill bursts, 3 steps ahead", 3, true),
            ("decode, step waited with cuStreamSynchronize", nil, false),
        ]
        let stepDone = try gpu.map { try CUDAEvent(context: $0.context) }
        // On the CPU a step is a sleep: the way of waiting for it does not apply.
        for (scenario, lookahead, pollEvent) in scenarios where pollEvent || gpu != nil {
            // The warm reserve holds one burst (4 x 1024 tokens), so creation happens while idle.
            let memory = try VirtualMemory(backend: backend, budget: .fractionOfFree(0.9), lowWatermark: 320, highWatermark: 640)
            let cache = try KVCache(shape: .llama3_8B, layout: .default, memory: memory, maxTokensPerRequest: 4096)
            let mapper = AsyncMapper(memory: memory, threadSetup: threadSetup(for: device))
            defer { mapper.shutdown() }
            var rng = SplitMix64(seed: 7)
            var lengths: [Int: Int] = [:]
            for id in 0..<requests {
                try cache.addRequest(id)
                let n = 1 + Int(rng.next() % 512)
                try cache.reserve(id, tokens: n)
                try cache.setLength(id, n)
                lengths[id] = n
            }
            var nextID = requests
            var joining: [(step: Int, ids: [Int], ticket: MapTicket)] = []
            mapper.resetStatistics()
            var demand = Array(repeating: 0, count: steps + 4)
            var blockedSteps: [Int] = []
            var blockedMicros: [Double] = []
            for step in 0..<steps {
                // Launch step s.
                if let gpu {
                    try gpu.kernels.spin(cycles: spinCycles, stream: gpu.stream)
                    try stepDone!.record(on: gpu.stream)
                }
                let deadline = monotonicNanos() + UInt64(stepMillis * 1e6)
                // Plan step s+1: every running request grows by one token.
                for (_, n) in lengths {
                    demand[step + 1] += cache.layout.rangesPerRequest * (cache.layout.chunks(forTokens: n + 2) - cache.layout.chunks(forTokens: n + 1))
                }
                let job = try cache.prepareGrowth(lengths.map { ($0.key, $0.value + 2) })
                let ticket = mapper.submit(job, priority: step + 1)
                if let lookahead, step % 25 == 0, step + lookahead < steps {
                    var burst: AsyncMapper.Job = []
                    var ids: [Int] = []
                    for _ in 0..<4 {
                        try cache.addRequest(nextID)
                        burst += try cache.prepareGrowth(nextID, tokens: 1024)
                        demand[step + lookahead] += cache.layout.rangesPerRequest * cache.layout.chunks(forTokens: 1024)
                        ids.append(nextID)
                        nextID += 1
                    }
                    joining.append((step + lookahead, ids, mapper.submit(burst, priority: step + lookahead)))
                }
                // Step s ends; step s+1 may start once what it needs is mapped.
                if let gpu {
                    if pollEvent {
                        while try !stepDone!.isComplete() { usleep(50) }
                    } else {
                        try gpu.stream.synchronize()
                    }
                } else {
                    let now = monotonicNanos()
                    if now < deadline { usleep(UInt32((deadline - now) / 1000)) }
                }
                // Waits on what step s+1 needs; the time in them is what the step start slips.
                var waited: UInt64 = 0
                var blocked = false
                func waitFor(_ t: MapTicket) throws {
                    if !mapper.isDone(t) { blocked = true }
                    let start = monotonicNanos()
                    try mapper.wait(t)
                    waited += monotonicNanos() - start
                }
                try waitFor(ticket)
                for entry in joining where entry.step == step + 1 { try waitFor(entry.ticket) }
                if blocked {
                    blockedSteps.append(step + 1)
                    blockedMicros.append(Double(waited) / 1000)
                }
                for (id, n) in lengths { lengths[id] = n + 1 }
                for entry in joining where entry.step == step + 1 {
                    for id in entry.ids { lengths[id] = 1023 }
                }
                try cache.setLengths(lengths.map { ($0.key, $0.value) })
                joining.removeAll { $0.step == step + 1 }
            }
            for entry in joining { try mapper.wait(entry.ticket); for id in entry.ids { lengths[id] = 0 } }
            let s = mapper.statistics
            let stepDemand = demand[1...steps]
            results.append(StepAheadResult(
                scenario: scenario, steps: steps, requests: requests, stepMillis: stepMillis,
                chunksPerStepMean: Double(stepDemand.reduce(0, +)) / Double(steps), chunksPerStepMax: stepDemand.max() ?? 0,
                blockedWaits: s.blockedWaits, waitMeanMicros: Double(s.waitNanosTotal) / Double(max(1, s.waits)) / 1000,
                waitMaxMicros: Double(s.waitNanosMax) / 1000,
                chunkP50Micros: Double(s.chunkLatencyP50) / 1000, chunkP99Micros: Double(s.chunkLatencyP99) / 1000,
                chunkMaxMicros: Double(s.chunkLatencyMax) / 1000, blockedSteps: blockedSteps, blockedMicros: blockedMicros))
            for id in lengths.keys { try cache.free(id) }
            try memory.drain()
        }
        return results
    }

    /// Clock cycles of `vt_spin` that take `millis` on this GPU.
    func calibrateSpin(_ gpu: CUDAWork, millis: Double) throws -> UInt64 {
        let cycles: UInt64 = 20_000_000
        let start = try CUDAEvent(context: gpu.context, timing: true)
        let end = try CUDAEvent(context: gpu.context, timing: true)
        try gpu.kernels.spin(cycles: cycles / 10, stream: gpu.stream)
        try start.record(on: gpu.stream)
        try gpu.kernels.spin(cycles: cycles, stream: gpu.stream)
        try end.record(on: gpu.stream)
        try end.synchronize()
        let ms = Double(try CUDAEvent.elapsedMilliseconds(from: start, to: end))
        return UInt64(Double(cycles) * millis / ms)
    }

    // MARK: Launch latency while mapping (GPU)

    func measureLaunches(_ gpu: CUDAWork) throws -> LaunchInterference {
        let launches = 20_000
        func launchSamples(until done: () -> Bool, max: Int) throws -> [UInt64] {
            var samples: [UInt64] = []
            samples.reserveCapacity(max)
            while samples.count < max && !done() {
                let start = monotonicNanos()
                try gpu.kernels.empty(stream: gpu.stream)
                samples.append(monotonicNanos() - start)
                if samples.count % 1000 == 0 { try gpu.stream.synchronize() }
            }
            try gpu.stream.synchronize()
            return samples
        }
        let probe = try CopyProbe(bench: self, gpu: gpu)
        func timeCopy() throws -> Double { try probe.time() }
        func copiesWhile(_ busy: () -> Bool) throws -> (median: Double?, count: Int) { try probe.median(while: busy) }
        let idle = try launchSamples(until: { false }, max: launches)
        let copyIdle = try timeCopy()

        let n = min(chunks * 2, 4000)
        let memory = try VirtualMemory(backend: backend, budget: .bytes((2 * n + 8) * chunk), lowWatermark: 0, highWatermark: 2 * n)
        let mapper = AsyncMapper(memory: memory, threadSetup: threadSetup(for: device))
        defer { mapper.shutdown() }
        let first = try memory.makeTensor(bytes: n * chunk)
        var ticket = mapper.submit([(first, n)])
        let busy = try launchSamples(until: { mapper.isDone(ticket) }, max: launches)
        try mapper.wait(ticket)
        let second = try memory.makeTensor(bytes: n * chunk)
        ticket = mapper.submit([(second, n)])
        let mapping = try copiesWhile { !mapper.isDone(ticket) }
        let copyBusy = try mapping.median ?? timeCopy()
        try mapper.wait(ticket)
        // Does unmapping slow a running kernel? Both tensors freed, the mapper's idle loop unmaps
        // their chunks (page-table changes) while copies run; timed until it is done.
        let mappedBefore = memory.poolCounts.inUse
        try memory.free(first)
        try memory.free(second)
        let unmapping = try copiesWhile { memory.poolCounts.inUse > 0 }
        let unmappedMeanwhile = mappedBefore - memory.poolCounts.inUse
        // Does creating physical chunks (no mapping) slow a running kernel? A pool whose reserve is
        // refilled ahead (the low watermark) has its mapper create chunks while idle.
        let creating = min(chunks, 2000)
        let refilled = try VirtualMemory(backend: backend, budget: .bytes((creating + 8) * chunk), lowWatermark: creating, highWatermark: creating)
        let creator = AsyncMapper(memory: refilled, threadSetup: threadSetup(for: device))
        let creatingCopies = try copiesWhile { refilled.poolCounts.inReserve < creating }
        let createdMeanwhile = refilled.poolCounts.inReserve
        creator.shutdown()
        _ = try refilled.trim(to: 0)
        // Does mapping slow down while a kernel runs? 300 chunks each way, on this thread.
        func mapTimes(duringKernel: Bool) throws -> [UInt64] {
            let count = 300
            let base = try backend.reserve(bytes: count * chunk)
            let made = try (0..<count).map { _ in try backend.createChunk() }
            let cycles = try calibrateSpin(gpu, millis: 200)
            let kernelDone = try CUDAEvent(context: gpu.context)
            if duringKernel {
                try gpu.kernels.spin(cycles: cycles, stream: gpu.stream)
                try kernelDone.record(on: gpu.stream)
            }
            var times: [UInt64] = []
            for (i, c) in made.enumerated() {
                let start = monotonicNanos()
                try backend.map(c, at: base + UInt64(i * chunk))
                try backend.setAccess(at: base + UInt64(i * chunk), bytes: chunk)
                times.append(monotonicNanos() - start)
            }
            let kernelStillRunning = duringKernel ? !(try kernelDone.isComplete()) : false
            try gpu.stream.synchronize()
            for i in 0..<count { try backend.unmap(at: base + UInt64(i * chunk)) }
            for c in made { try backend.releaseChunk(c) }
            try backend.releaseReservation(base: base, bytes: count * chunk)
            if duringKernel && !kernelStillRunning { say("  note: the kernel ended before the mapping did") }
            return times
        }
        let mapIdle = try mapTimes(duringKernel: false)
        let mapBusy = try mapTimes(duringKernel: true)
        return LaunchInterference(idle: Percentiles(idle), whileMapping: Percentiles(busy), chunksMappedMeanwhile: n,
                                  copyMillisIdle: copyIdle, copyMillisWhileMapping: copyBusy, copiesWhileMapping: mapping.count,
                                  copyMillisWhileUnmapping: unmapping.median, chunksUnmappedMeanwhile: unmappedMeanwhile,
                                  copyMillisWhileCreating: creatingCopies.median,
                                  chunksCreatedMeanwhile: createdMeanwhile,
                                  mapGPUIdle: Percentiles(mapIdle), mapWhileKernelRuns: Percentiles(mapBusy))
    }

    /// Decode attention's reads of one layer (K and V of 64 requests x 2,048 tokens, Llama-3-8B's
    /// shape, the blocked layout the engine maps) timed with the mapper idle, while it maps 4,000
    /// chunks into another tensor, and while it unmaps them: does a change to the GPU's page
    /// tables slow reads of mapped memory it does not touch? Shared prefix under a full budget
    /// evicts and unmaps cached chunks all through its decode steps, and only then is its decode
    /// attention slower than paged's (docs/perf.md, 2026-12-06, fourth session). nil when the KV
    /// does not fit the free memory.
    func measureReadsUnderChurn(_ gpu: CUDAWork) throws -> ReadsUnderChurn? {
        let shape = KVShape.llama3_8B
        let requests = 64, tokens = 2048, n = min(chunks * 2, 4000)
        let layout = try KVLayout(.blocked, shape: shape, chunkSize: chunk)
        let kvChunks = requests * layout.rangesPerRequest * layout.chunks(forTokens: tokens)
        guard (kvChunks + n + 64) * chunk < (try backend.freePhysicalBytes()) * 9 / 10 else {
            say("  skipped: \(gib((kvChunks + n) * chunk)) does not fit the free memory")
            return nil
        }
        let memory = try VirtualMemory(backend: backend, budget: .bytes((kvChunks + 64) * chunk), lowWatermark: 0, highWatermark: 0)
        let cache = try KVCache(shape: shape, layout: .blocked, memory: memory, maxTokensPerRequest: tokens)
        defer {
            for id in 0..<requests { try? cache.free(id) }
            try? memory.drain()
        }
        let reads = try LayerReads(gpu: gpu, filling: cache, memory: memory, requests: requests, tokens: tokens)
        // One timing: the median of 10 reads, each of the next layer, so none is in L2.
        func timeRead() throws -> Double { try timeGPU(gpu, reps: 10) { try reads.readNextLayer() } }
        func medianWhile(_ busy: () -> Bool) throws -> (median: Double?, count: Int) { try Self.medianOfTimings(while: busy, timeRead) }
        let idle = median(try (0..<9).map { _ in try timeRead() })
        let churn = try VirtualMemory(backend: backend, budget: .bytes((n + 8) * chunk), lowWatermark: 0, highWatermark: n)
        let mapper = AsyncMapper(memory: churn, threadSetup: threadSetup(for: device))
        defer {
            mapper.shutdown()
            _ = try? churn.trim(to: 0)
        }
        let tensor = try churn.makeTensor(bytes: n * chunk)
        let ticket = mapper.submit([(tensor, n)])
        let mapping = try medianWhile { !mapper.isDone(ticket) }
        try mapper.wait(ticket)
        let mappedBefore = churn.poolCounts.inUse
        try churn.free(tensor)
        let unmapping = try medianWhile { churn.poolCounts.inUse > 0 }
        let unmapped = mappedBefore - churn.poolCounts.inUse
        let idleAfter = median(try (0..<9).map { _ in try timeRead() })
        return ReadsUnderChurn(requests: requests, tokens: tokens, bytesRead: requests * tokens * 2 * shape.tokenLayerBytes,
                               idleMillis: idle, mappingMillis: mapping.median, readsWhileMapping: mapping.count, chunksMapped: n,
                               unmappingMillis: unmapping.median, readsWhileUnmapping: unmapping.count, chunksUnmapped: unmapped,
                               idleAfterMillis: idleAfter)
    }

    /// One layer's K/V reads (64 x 2,048 tokens, decode attention's access) by where the chunks
    /// sit and what else the GPU maps and reads: the blocked layout from 64 MiB slabs (a fresh
    /// grow's runs) alone, then with two more arms mapped (the blocked layout from single 2 MiB
    /// chunks, what requests grow from once a full budget gives slabs back; the per-layer layout
    /// from single chunks, whose layer read touches 1/32 of the pages, as paged's per-layer pools
    /// do), read in a row, the three in turn, and after a plain allocation made, read and freed.
    /// Each phase 7 timings (each the median of 10 reads). Shared prefix's decode attention is
    /// 1.4% slower than paged's only when the budget is full (docs/perf.md, 2026-12-06). With a
    /// `placementTrigger`, instead: the blocked slab arm and the decode attention kernel over it,
    /// before and after one trigger (found: only a large cuMemFree slows reads, for a few
    /// milliseconds; VMM unmaps and releases do not). nil when the arms do not fit the free memory.
    func measurePlacement(_ gpu: CUDAWork) throws -> KVPlacementReads? {
        let shape = KVShape.llama3_8B
        let requests = 64, tokens = 2048, rounds = 7
        let arms: [(name: String, kind: KVLayoutKind, slab: Int)] = [
            ("blocked, slabs of 32 chunks", .blocked, 32), ("blocked, single chunks", .blocked, 1), ("per-layer, single chunks", .perLayer, 1),
        ]
        let kvChunks = try arms.map { arm in
            let layout = try KVLayout(arm.kind, shape: shape, chunkSize: chunk)
            return requests * layout.rangesPerRequest * layout.chunks(forTokens: tokens)
        }
        let plainBytes = 4 * requests * tokens * 2 * shape.tokenLayerBytes
        guard (kvChunks.reduce(0, +) + 64 * arms.count) * chunk + plainBytes < (try backend.freePhysicalBytes()) * 9 / 10 else {
            say("  skipped: \(gib(kvChunks.reduce(0, +) * chunk + plainBytes)) does not fit the free memory")
            return nil
        }
        var caches: [(memory: VirtualMemory, cache: KVCache)] = []
        defer {
            for (memory, cache) in caches {
                for id in 0..<requests { try? cache.free(id) }
                try? memory.drain()
            }
        }
        var reads: [LayerReads] = []
        var placed: [String] = []
        var built: [Int] = []  // the arm behind each of `reads`
        func build(_ i: Int) throws {
            let arm = arms[i]
            let memory = try VirtualMemory(backend: backend, budget: .bytes((kvChunks[i] + 64) * chunk), lowWatermark: 0, highWatermark: 0,
                                           freshSlabChunks: arm.slab)
            let cache = try KVCache(shape: shape, layout: arm.kind, memory: memory, maxTokensPerRequest: tokens)
            caches.append((memory, cache))
            reads.append(try LayerReads(gpu: gpu, filling: cache, memory: memory, requests: requests, tokens: tokens))
            let counts = memory.accounting
            placed.append("\(counts.slabChunks) of \(counts.inUse) in slabs")
            built.append(i)
        }
        func time(_ i: Int) throws -> Double { try timeGPU(gpu, reps: 10) { try reads[i].readNextLayer() } }
        var phases: [KVPlacementReads.Phase] = []
        /// `i` indexes `reads`; past its end, the plain allocation.
        func record(_ phase: String, _ i: Int, _ times: [Double]) {
            phases.append(.init(phase: phase, kv: i < reads.count ? arms[built[i]].name : "plain allocation, one layer",
                                chunks: i < reads.count ? placed[i] : "-", millis: times))
        }
        try build(0)
        if let trigger = placementTrigger {
            // One trigger a process, from a fresh context: what changes the blocked read, and for how long.
            try build(2)
            // The engine's decode attention over the blocked slab arm too: one query a request,
            // Llama-3-8B's heads, a batch a layer, all prepared (and its scratch reserved) first,
            // so nothing is allocated or freed between here and the trigger.
            let decode = try DecodeAttention(compiler: gpu.compiler, parameters: AttentionParameters(queryHeads: 32, kvHeads: 8, headDim: 128))
            try decode.reserveWorkspace(maxRequests: requests, stream: gpu.stream)
            let cache0 = caches[0].cache
            let batches = try (0..<shape.layers).map { layer in
                try decode.prepare((0..<requests).map { id in
                    AttentionRequest(key: try cache0.view(id, layer: layer, component: .key),
                                     value: try cache0.view(id, layer: layer, component: .value), queryStart: id, queryCount: 1)
                }, stream: gpu.stream)
            }
            let queries = try DeviceBuffer(context: gpu.context, bytes: requests * 32 * 128 * 2)
            let output = try DeviceBuffer(context: gpu.context, bytes: requests * 32 * 128 * 2)
            try gpu.fill(queries.address, words: requests * 32 * 128 / 2, seed: 11)
            var decodeLayer = 0
            func timeDecode() throws -> Double {
                try timeGPU(gpu, reps: 10) {
                    try decode.run(batches[decodeLayer % batches.count], queries: queries.address, output: output.address, stream: gpu.stream)
                    decodeLayer += 1
                }
            }
            func recordDecode(_ phase: String, _ times: [Double]) {
                phases.append(.init(phase: phase, kv: "decode attention, " + arms[0].name, chunks: placed[0], millis: times))
            }
            record("before", 0, try (0..<rounds).map { _ in try time(0) })
            recordDecode("before", try (0..<rounds).map { _ in try timeDecode() })
            var kept: [DeviceBuffer] = []
            let scratch = try VirtualMemory(backend: backend, budget: .bytes(64 * chunk), lowWatermark: 0,
                                            highWatermark: trigger == .vmmUnmap ? 64 : 0, freshSlabChunks: 1)
            let tensor = try scratch.makeTensor(bytes: 32 * chunk)
            defer {
                try? scratch.free(tensor)
                _ = try? scratch.reclaim()
                _ = try? scratch.trim(to: 0)
            }
            func pull() throws {
                switch trigger {
                case .none: break
                case .allocFree2G: _ = try DeviceBuffer(context: gpu.context, bytes: 2 << 30)
                case .allocFree2M: _ = try DeviceBuffer(context: gpu.context, bytes: chunk)
                case .allocKept: kept.append(try DeviceBuffer(context: gpu.context, bytes: 256 << 20))
                case .vmmUnmap, .vmmRelease:
                    // The tensor stays (its address range too): only chunks are unmapped, and released.
                    try scratch.grow(tensor, toChunks: 32)
                    try scratch.release(tensor, chunks: Array(0..<32))
                    _ = try scratch.reclaim()
                    if trigger == .vmmRelease { _ = try scratch.trim(to: 0) }
                case .slabRelease:
                    // 8 slabs of 32 chunks (512 MiB) mapped fresh, unmapped and released whole.
                    let slabs = try VirtualMemory(backend: backend, budget: .bytes(256 * chunk), lowWatermark: 0, highWatermark: 0,
                                                  freshSlabChunks: 32)
                    let slabbed = try slabs.makeTensor(bytes: 256 * chunk)
                    slabs.setWholeWrites([(slabbed, 256)])
                    try slabs.grow(slabbed, toChunks: 256)
                    let inSlabs = slabs.accounting.slabChunks
                    try slabs.free(slabbed)
                    _ = try slabs.reclaim()
                    _ = try slabs.trim(to: 0)
                    try slabs.drain()
                    if inSlabs != 256 { say("  (slab trigger: \(inSlabs) of 256 chunks were in slabs)") }
                case .addressFree:
                    let bytes = 64 * chunk
                    let base = try backend.reserve(bytes: bytes)
                    try backend.releaseReservation(base: base, bytes: bytes)
                }
            }
            try pull()
            record("after the trigger once, in a row", 0, try (0..<rounds).map { _ in try time(0) })
            recordDecode("after the trigger once, in a row", try (0..<rounds).map { _ in try timeDecode() })
            usleep(1_000_000)
            record("then after 1 s idle", 0, try (0..<rounds).map { _ in try time(0) })
            record("each after the trigger", 0, try (0..<rounds).map { _ in
                try pull()
                return try time(0)
            })
            recordDecode("each after the trigger", try (0..<rounds).map { _ in
                try pull()
                return try timeDecode()
            })
            record("per-layer arm, now", 1, try (0..<rounds).map { _ in try time(1) })
            withExtendedLifetime((kept, batches, queries, output)) {}
            return KVPlacementReads(requests: requests, tokens: tokens, bytesRead: requests * tokens * 2 * shape.tokenLayerBytes,
                                    trigger: trigger.rawValue, phases: phases)
        }
        record("alone, in a row", 0, try (0..<rounds).map { _ in try time(0) })
        try build(1)
        try build(2)
        record("three arms mapped, in a row", 0, try (0..<rounds).map { _ in try time(0) })
        var inTurn = Array(repeating: [Double](), count: arms.count)
        for _ in 0..<rounds { for i in arms.indices { inTurn[i].append(try time(i)) } }
        for i in arms.indices { record("three arms mapped, in turn", i, inTurn[i]) }
        var plain: [Double] = [], afterPlain: [Double] = []
        for _ in 0..<rounds {
            plain.append(try readPlain(requests: requests, tokens: tokens, rowBytes: shape.tokenLayerBytes))
            afterPlain.append(try time(0))
        }
        record("in turn with a plain allocation made, read, freed", reads.count, plain)
        record("after a plain allocation made, read, freed", 0, afterPlain)
        // Does the slower read last, and what brings it: an allocation made, or one freed, or its size?
        record("then in a row, nothing else", 0, try (0..<rounds).map { _ in try time(0) })
        usleep(1_000_000)
        record("then after 1 s idle", 0, try (0..<rounds).map { _ in try time(0) })
        record("each after 2 MiB allocated and freed", 0, try (0..<rounds).map { _ in
            do { _ = try DeviceBuffer(context: gpu.context, bytes: chunk) }
            return try time(0)
        })
        let kept = try DeviceBuffer(context: gpu.context, bytes: 2 << 30)
        record("with 2 GiB allocated (kept)", 0, try (0..<rounds).map { _ in try time(0) })
        try gpu.fill(kept.address, words: (2 << 30) / 4, seed: 9)
        record("with 2 GiB allocated and written", 0, try (0..<rounds).map { _ in try time(0) })
        withExtendedLifetime(kept) {}
        record("each after 512 MiB allocated and freed", 0, try (0..<rounds).map { _ in
            do { _ = try DeviceBuffer(context: gpu.context, bytes: 512 << 20) }
            return try time(0)
        })
        record("per-layer arm, now", 2, try (0..<rounds).map { _ in try time(2) })
        return KVPlacementReads(requests: requests, tokens: tokens, bytesRead: requests * tokens * 2 * shape.tokenLayerBytes, trigger: nil,
                                phases: phases)
    }

    /// What the placement stage's trigger mode does between reads of the blocked KV.
    enum PlacementTrigger: String, CaseIterable, ExpressibleByArgument {
        case none
        /// cuMemAlloc of 2 GiB, then cuMemFree.
        case allocFree2G = "alloc-free-2g"
        /// cuMemAlloc of 2 MiB, then cuMemFree.
        case allocFree2M = "alloc-free-2m"
        /// cuMemAlloc of 256 MiB, kept.
        case allocKept = "alloc-kept"
        /// 32 single chunks created, mapped, unmapped and kept in the pool's reserve.
        case vmmUnmap = "vmm-unmap"
        /// 32 single chunks created, mapped, unmapped and released (cuMemRelease).
        case vmmRelease = "vmm-release"
        /// 8 slabs of 32 chunks (64 MiB allocations) mapped, unmapped and released.
        case slabRelease = "slab-release"
        /// 128 MiB of address space reserved and freed (cuMemAddressReserve, cuMemAddressFree), nothing mapped.
        case addressFree = "address-free"
    }

    /// A 256 MiB copy kernel timed on the GPU while something else goes on: what a kernel under
    /// page-table changes costs.
    struct CopyProbe {
        let bench: VMMBench
        let gpu: CUDAWork
        let bytes = 256 << 20
        let source: DeviceBuffer
        let target: DeviceBuffer

        init(bench: VMMBench, gpu: CUDAWork) throws {
            self.bench = bench
            self.gpu = gpu
            source = try DeviceBuffer(context: gpu.context, bytes: bytes)
            target = try DeviceBuffer(context: gpu.context, bytes: bytes)
            try gpu.fill(source.address, words: bytes / 4, seed: 5)
        }

        /// One timing: the median of 10 copies.
        func time() throws -> Double {
            try bench.timeGPU(gpu, reps: 10) {
                try gpu.kernels.copy(from: source.address, to: target.address, bytes: bytes,
                                     multiprocessors: gpu.context.device.multiprocessorCount, stream: gpu.stream)
            }
        }

        /// Timings over a whole window of other work, not one: the median of many says what a
        /// kernel under page-table changes costs, beyond the noise of a single timing.
        func median(while busy: () -> Bool) throws -> (median: Double?, count: Int) { try VMMBench.medianOfTimings(while: busy, time) }
    }

    /// One layer's K and V of every request read by the decode-style kernel (`kvRead`), a layer
    /// a call in turn so no read finds the last one's data in L2. `views[layer][request]`.
    final class LayerReads {
        let gpu: CUDAWork
        let bases: [DeviceBuffer]
        let output: DeviceBuffer
        let sample: KVView
        let requests: Int, tokens: Int
        private var layer = 0

        init(gpu: CUDAWork, views: [[(KVView, KVView)]], tokens: Int) throws {
            self.gpu = gpu
            self.tokens = tokens
            requests = views[0].count
            sample = views[0][0].0
            bases = try views.map { layerViews -> DeviceBuffer in
                let buffer = try DeviceBuffer(context: gpu.context, bytes: 16 * layerViews.count)
                try gpu.context.copyHostToDevice(destination: buffer.address, from: layerViews.flatMap { [$0.0.base, $0.1.base] })
                return buffer
            }
            output = try DeviceBuffer(context: gpu.context, bytes: 4 * MemoryKernels.kvReadOutputWords(requests: requests, tokens: tokens))
        }

        /// Requests 0..<requests added to `cache`, `tokens` long, their chunks filled with a
        /// pattern a request, and every layer of them read in turn.
        /// `beforeEach` runs before each request is added (the reach stage reserves address space
        /// there, to leave gaps between the requests' ranges).
        convenience init(gpu: CUDAWork, filling cache: KVCache, memory: VirtualMemory, requests: Int, tokens: Int,
                         beforeEach: (() throws -> Void)? = nil) throws {
            for id in 0..<requests {
                try beforeEach?()
                try cache.addRequest(id)
                try cache.reserve(id, tokens: tokens)
                try cache.setLength(id, tokens)
                for t in try cache.tensors(of: id) { try gpu.fill(t.base, words: memory.mappedChunkCount(t) * memory.chunkSize / 4, seed: UInt32(id)) }
            }
            let views = try (0..<cache.layout.shape.layers).map { layer in
                try (0..<requests).map { id in (try cache.view(id, layer: layer, component: .key), try cache.view(id, layer: layer, component: .value)) }
            }
            try self.init(gpu: gpu, views: views, tokens: tokens)
        }

        func readNextLayer() throws {
            try gpu.kernels.kvRead(bases: bases[layer % bases.count].address, requests: requests, tokens: tokens,
                                   tokenStride: sample.tokenStride, blockStride: sample.blockStride, tokensPerBlock: sample.tokensPerBlock,
                                   output: output.address, stream: gpu.stream)
            layer += 1
        }
    }

    /// Timings taken one after another over a window of other work (at most 500): their median
    /// says what a kernel under that work costs, beyond the noise of one timing; nil if the
    /// window closed before the first.
    static func medianOfTimings(while busy: () -> Bool, _ time: () throws -> Double) throws -> (median: Double?, count: Int) {
        var times: [Double] = []
        while busy() && times.count < 500 { times.append(try time()) }
        return (times.isEmpty ? nil : median(times), times.count)
    }

    // MARK: Access granted per run of chunks

    /// What one `cuMemSetAccess` (and one `cuMemUnmap`) over a run of adjacent mapped chunks
    /// costs against one per chunk; the mapper's rate with access per run against per chunk; and
    /// a copy kernel's time while the mapper maps either way.
    func measureAccessRuns() throws -> AccessRuns {
        let n = max(128, min(chunks, 1024) / 128 * 128)
        let base = try backend.reserve(bytes: n * chunk)
        let made = try (0..<n).map { _ in try backend.createChunk() }
        defer {
            for i in 0..<n { try? backend.unmap(at: base + UInt64(i * chunk)) }
            for c in made { try? backend.releaseChunk(c) }
            try? backend.releaseReservation(base: base, bytes: n * chunk)
        }
        var costs: [AccessRunCost] = []
        // Unmapped a run a call where the backend takes several mappings at once (its probe,
        // `unmapsRuns`), else a chunk a call: the time per run either way.
        for run in [1, 2, 8, 32, 128] {
            for (i, c) in made.enumerated() { try backend.map(c, at: base + UInt64(i * chunk)) }
            var access: [UInt64] = []
            for start in stride(from: 0, to: n, by: run) {
                let t = monotonicNanos()
                try backend.setAccess(at: base + UInt64(start * chunk), bytes: run * chunk)
                access.append(monotonicNanos() - t)
            }
            var unmap: [UInt64] = []
            for start in stride(from: 0, to: n, by: run) {
                let t = monotonicNanos()
                try backend.unmap(at: base + UInt64(start * chunk), chunks: run)
                unmap.append(monotonicNanos() - t)
            }
            let accessLatency = Percentiles(access)
            costs.append(AccessRunCost(runChunks: run, calls: access.count, setAccessPerCall: accessLatency,
                                       setAccessMicrosPerChunk: accessLatency.meanMicros / Double(run),
                                       unmapPerCall: Percentiles(unmap), unmapInOneCall: run == 1 || backend.unmapsRuns))
        }
        // The mapper, each way, alternated.
        var perChunk: [Double] = [], perRun: [Double] = []
        for _ in 0..<2 {
            perChunk.append(try mapperRate(warm: true, accessPerRun: false).0)
            perRun.append(try mapperRate(warm: true, accessPerRun: true).0)
        }
        var copies: (idle: Double, perChunk: Double?, perRun: Double?)?
        if let gpu {
            let probe = try CopyProbe(bench: self, gpu: gpu)
            func whileMapping(perRun: Bool) throws -> Double? {
                let count = min(chunks * 2, 4000) / 8 * 8
                let memory = try VirtualMemory(backend: backend, budget: .bytes((count + 8) * chunk), lowWatermark: count, highWatermark: count,
                                               accessPerRun: perRun)
                try memory.replenish()
                let mapper = AsyncMapper(memory: memory, threadSetup: threadSetup(for: device))
                defer { mapper.shutdown() }
                let tensors = try (0..<8).map { _ in try memory.makeTensor(bytes: count / 8 * chunk) }
                let tickets = tensors.map { mapper.submit([($0, $0.chunkCount)]) }
                let median = try probe.median(while: { !tickets.allSatisfy(mapper.isDone) }).median
                for t in tickets { try mapper.wait(t) }
                return median
            }
            let idle = try probe.time()
            copies = (idle, try whileMapping(perRun: false), try whileMapping(perRun: true))
        }
        return AccessRuns(chunks: n, runs: costs, backendUnmapsRuns: backend.unmapsRuns,
                          mapperPerChunk: perChunk, mapperPerRun: perRun,
                          copyMillisIdle: copies?.idle, copyMillisMappingPerChunk: copies?.perChunk, copyMillisMappingPerRun: copies?.perRun)
    }

    /// GPU: one physical allocation of n chunks (cuMemCreate of n x 2 MiB), mapped with one call
    /// and granted access with one call, n from 1 to 128. A chunk each costs ~26 us of set access
    /// whatever the run (the access stage): if a mapping of a larger allocation costs about the
    /// same as a chunk's, a cached prefix copied into one allocation could be aliased by each
    /// request that shares it with two driver calls instead of two a chunk.
    func measureSlabs(_ gpu: CUDAWork) throws -> [SlabCost] {
        let context = gpu.context
        try context.makeCurrent()
        let driver = context.driver
        var costs: [SlabCost] = []
        for n in [1, 8, 32, 128] {
            let bytes = n * chunk
            let base = try driver.reserveAddressRange(size: bytes, alignment: chunk)
            defer { try? driver.freeAddressRange(base, size: bytes) }
            var samples: [String: [UInt64]] = [:]
            func timed(_ name: String, _ body: () throws -> Void) rethrows {
                let start = monotonicNanos()
                try body()
                samples[name, default: []].append(monotonicNanos() - start)
            }
            for _ in 0..<16 {
                var handle: UInt64 = 0
                try timed("create") { handle = try driver.createPhysical(size: bytes, device: context.ordinal) }
                try timed("map") { try driver.map(address: base, size: bytes, handle: handle) }
                try timed("set access") { try driver.setAccess(address: base, size: bytes, device: context.ordinal) }
                try timed("unmap") { try driver.unmap(address: base, size: bytes) }
                try timed("release") { try driver.releasePhysical(handle) }
            }
            costs.append(SlabCost(chunks: n, create: Percentiles(samples["create"]!), map: Percentiles(samples["map"]!),
                                  setAccess: Percentiles(samples["set access"]!), unmap: Percentiles(samples["unmap"]!),
                                  release: Percentiles(samples["release"]!)))
        }
        return costs
    }

    /// A 128-chunk prefix packed into one slab, then 16 followers aliasing it (each maps it as one
    /// run, plus two fresh chunks of its own), against 16 aliasing the source's chunks one by one.
    /// Every follower's prefix is checked against the pattern written into the source. Nil where
    /// the backend makes no slabs.
    func measurePacked() throws -> PackedPrefixCost? {
        guard backend.makesSlabs else {
            say("(packed: the \(backend.name) backend makes no slabs)")
            return nil
        }
        let n = 128, followers = 16, words = chunk / 4
        let counting = FaultInjectingBackend(wrapping: backend)
        let memory = try VirtualMemory(backend: counting, budget: .bytes((3 * n + 4 * followers + 16) * chunk), lowWatermark: 0, highWatermark: 0)
        let source = try memory.makeTensor(bytes: (n + 2) * chunk)
        try memory.grow(source, toChunks: n)
        for i in 0..<n { try device.fill(source.address(ofChunk: i), words: words, seed: 41 + UInt32(i)) }
        /// Words of `t`'s chunks `chunks` that do not read what the source's same chunks hold.
        func mismatched(_ t: VirtualTensor, _ chunks: some Sequence<Int>) throws -> Int {
            try chunks.reduce(0) { $0 + (try device.mismatches(t.address(ofChunk: $1), words: words, seed: 41 + UInt32($1))) }
        }
        let holder = try memory.makeTensor(bytes: (n + 2) * chunk)
        let packStart = monotonicNanos()
        guard try memory.packSlab(from: source, chunks: 0..<n, into: holder) else { throw VTensorError.outOfMemory("packing \(n) chunks was refused") }
        try device.synchronize()
        let packMillis = Double(monotonicNanos() - packStart) / 1e6
        var mismatches = 0
        func followersOf(_ prefixHolder: VirtualTensor) throws -> (Percentiles, Int) {
            var samples: [UInt64] = []
            let callsBefore = counting.callCounts.values.reduce(0, +)
            var made: [VirtualTensor] = []
            for k in 0..<followers {
                let t = try memory.makeTensor(bytes: (n + 2) * chunk)
                try memory.aliasOnGrow((0..<n).map { (t, $0, prefixHolder, $0) })
                let start = monotonicNanos()
                try memory.grow(t, toChunks: n + 2)
                samples.append(monotonicNanos() - start)
                // The whole prefix for the first follower, its first and last chunk for the others.
                mismatches += try mismatched(t, k == 0 ? Array(0..<n) : [0, n - 1])
                made.append(t)
            }
            let calls = counting.callCounts.values.reduce(0, +) - callsBefore
            for t in made { try memory.free(t) }
            try device.synchronize()
            try memory.drain()
            return (Percentiles(samples), calls / followers)
        }
        let (packedGrow, packedCalls) = try followersOf(holder)
        let (perChunkGrow, perChunkCalls) = try followersOf(source)
        // A run cut in part. Where the driver maps at an offset: a run from the middle of the slab,
        // split into single chunks, each mapped alone at its offset. Where it maps an allocation
        // only whole (CUDA 13): the whole slab, replaced by private copies. It must read the same.
        let cut = try memory.makeTensor(bytes: (n + 2) * chunk)
        let span = backend.mapsSlabParts ? 32..<96 : 0..<n
        try memory.aliasOnGrow(span.map { (cut, $0, holder, $0) })
        try memory.grow(cut, toChunks: span.upperBound)
        mismatches += try mismatched(cut, span)
        try memory.release(cut, chunks: [50])
        mismatches += try mismatched(cut, span.filter { $0 != 50 })
        try memory.free(cut)
        let splits = memory.accounting.runSplits
        try memory.free(holder)
        try memory.free(source)
        try device.synchronize()
        try memory.drain()
        _ = try memory.trim(to: 0)
        return PackedPrefixCost(chunks: n, followers: followers, packMillis: packMillis, packedGrow: packedGrow, perChunkGrow: perChunkGrow,
                                packedCallsPerFollower: packedCalls, perChunkCallsPerFollower: perChunkCalls, mismatches: mismatches, runSplits: splits)
    }

    /// One layer's K/V reads (64 requests, decode-style) by the geometry of the address space
    /// they sit in, the blocked layout (a 2 MiB chunk holds 16 tokens of every layer: a layer's
    /// read takes 64 KiB from every chunk of the KV): each request's range reserved exactly or
    /// 2x / 4x longer than it is mapped (the engine reserves a request's whole `--max-model-len`),
    /// fresh runs mapped as slabs of 32, 8 or 2 chunks or chunk by chunk, ranges aligned to a
    /// chunk (the default) or 1 GiB, and exact ranges with 3x their size of unmapped address
    /// space reserved before each. One arm at a time, built, read and freed, at 16 and 48 GiB of
    /// KV, twice. Each arm says how its requests' ranges are aligned (the largest power of two
    /// dividing each base: least and median). On H100s (2026-12-06, sixth and seventh sessions)
    /// some arms read ~15% slower in some calls, but which arm did changed from call to call
    /// (4x ranges with slabs in one, exact ranges with gaps in the next): no layout predicts it.
    func measureReach(_ gpu: CUDAWork) throws -> [KVReachRead] {
        let shape = KVShape.llama3_8B
        let requests = 64
        let cuda = backend as? CUDABackend
        // gap: address space reserved (never mapped) before each request, in multiples of its range.
        let arms: [(name: String, reserve: Int, slabs: Int, alignment: Int, gap: Int)] = [
            ("blocked", 1, 32, 0, 0), ("blocked, 4x reserved", 4, 32, 0, 0),
            ("blocked, 4x reserved, slabs of 8", 4, 8, 0, 0), ("blocked, 4x reserved, slabs of 2", 4, 2, 0, 0),
            ("blocked, 2x reserved", 2, 32, 0, 0), ("blocked, 3x gaps reserved between", 1, 32, 0, 3),
            ("blocked, 4x reserved, single chunks", 4, 1, 0, 0), ("blocked, 4x reserved, aligned 1 GiB", 4, 32, 1 << 30, 0),
        ]
        let layout = try KVLayout(.blocked, shape: shape, chunkSize: chunk)
        func alignmentOf(_ base: UInt64) -> Int { base == 0 ? 0 : 1 << base.trailingZeroBitCount }
        var results: [KVReachRead] = []
        for pass in 0..<2 {
            for tokens in [2048, 6144] {
                for arm in arms {
                    let chunks = requests * layout.rangesPerRequest * layout.chunks(forTokens: tokens)
                    guard (chunks + 64) * chunk < (try backend.freePhysicalBytes()) * 9 / 10 else {
                        if pass == 0 { say("  \(arm.name) at \(tokens) tokens: skipped, \(gib(chunks * chunk)) does not fit") }
                        continue
                    }
                    cuda?.setReservationAlignment(arm.alignment)
                    defer { cuda?.setReservationAlignment(0) }
                    let memory = try VirtualMemory(backend: backend, budget: .bytes((chunks + 64) * chunk), lowWatermark: 0, highWatermark: 0,
                                                   freshSlabChunks: arm.slabs)
                    let cache = try KVCache(shape: shape, layout: .blocked, memory: memory, maxTokensPerRequest: tokens * arm.reserve)
                    defer {
                        for id in 0..<requests { try? cache.free(id) }
                        try? memory.drain()
                    }
                    let rangeBytes = layout.chunks(forTokens: tokens) * chunk
                    var gaps: [UInt64] = []
                    defer { for base in gaps { try? backend.releaseReservation(base: base, bytes: arm.gap * rangeBytes) } }
                    let reads = try LayerReads(gpu: gpu, filling: cache, memory: memory, requests: requests, tokens: tokens) {
                        if arm.gap > 0 { gaps.append(try backend.reserve(bytes: arm.gap * rangeBytes)) }
                    }
                    let aligned = try (0..<requests).flatMap { try cache.tensors(of: $0).map { alignmentOf($0.base) } }.sorted()
                    let times = try (0..<5).map { _ in try timeGPU(gpu, reps: 10) { try reads.readNextLayer() } }
                    let bytes = requests * tokens * 2 * shape.tokenLayerBytes
                    let result = KVReachRead(pass: pass, layout: arm.name, tokens: tokens, kvBytes: chunks * chunk, bytesRead: bytes, millis: times,
                                             leastAlignment: aligned.first ?? 0, medianAlignment: aligned.isEmpty ? 0 : aligned[aligned.count / 2])
                    say("  pass \(pass) \(arm.name), 64 x \(tokens) tokens (\(gib(chunks * chunk)) of KV): \(fixed(result.medianMillis, 4)) ms, "
                        + "\(fixed(result.tbps, 3)) TB/s; ranges aligned to \(mib(result.leastAlignment)) "
                        + "at least, \(mib(result.medianAlignment)) median")
                    results.append(result)
                }
            }
        }
        return results
    }

    /// Median milliseconds of `body` over `reps` runs, timed with CUDA events after one warm-up.
    func timeGPU(_ gpu: CUDAWork, reps: Int, _ body: () throws -> Void) throws -> Double {
        try body()
        var times: [Double] = []
        let start = try CUDAEvent(context: gpu.context, timing: true)
        let end = try CUDAEvent(context: gpu.context, timing: true)
        for _ in 0..<reps {
            try start.record(on: gpu.stream)
            try body()
            try end.record(on: gpu.stream)
            try end.synchronize()
            times.append(Double(try CUDAEvent.elapsedMilliseconds(from: start, to: end)))
        }
        return median(times)
    }

    /// Median milliseconds of `body` on the CPU.
    func timeCPU(reps: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var times: [Double] = []
        for _ in 0..<reps {
            let start = monotonicNanos()
            try body()
            times.append(Double(monotonicNanos() - start) / 1e6)
        }
        return median(times)
    }

    // MARK: Copy bandwidth

    func measureCopy() throws -> CopyBandwidth {
        let bytes = gpu != nil ? 1 << 30 : 256 << 20
        let memory = try VirtualMemory(backend: backend, budget: .bytes(2 * bytes + 4 * chunk), lowWatermark: 0, highWatermark: 0)
        let source = try memory.makeTensor(bytes: bytes)
        let target = try memory.makeTensor(bytes: bytes)
        try memory.grow([(source, source.chunkCount), (target, target.chunkCount)])
        try device.fill(source.base, words: bytes / 4, seed: 9)
        let mappedMillis: Double
        let plainMillis: Double
        if let gpu {
            let sms = gpu.context.device.multiprocessorCount
            mappedMillis = try timeGPU(gpu, reps: 20) {
                try gpu.kernels.copy(from: source.base, to: target.base, bytes: bytes, multiprocessors: sms, stream: gpu.stream)
            }
            try require(try gpu.mismatches(target.base, words: bytes / 4, seed: 9) == 0, "mapped copy is wrong")
            try memory.free(source)
            try memory.free(target)
            try memory.drain()
            let plainSource = try DeviceBuffer(context: gpu.context, bytes: bytes)
            let plainTarget = try DeviceBuffer(context: gpu.context, bytes: bytes)
            try gpu.fill(plainSource.address, words: bytes / 4, seed: 9)
            plainMillis = try timeGPU(gpu, reps: 20) {
                try gpu.kernels.copy(from: plainSource.address, to: plainTarget.address, bytes: bytes, multiprocessors: sms, stream: gpu.stream)
            }
        } else {
            let s = pointer(source.base), t = pointer(target.base)
            mappedMillis = timeCPU(reps: 5) { memcpy(t, s, bytes) }
            let plainSource = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
            let plainTarget = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
            defer { plainSource.deallocate(); plainTarget.deallocate() }
            memset(plainSource, 0x5A, bytes)
            memset(plainTarget, 0, bytes)
            plainMillis = timeCPU(reps: 5) { memcpy(plainTarget, plainSource, bytes) }
            try memory.free(source)
            try memory.free(target)
        }
        func tbps(_ ms: Double) -> Double { Double(2 * bytes) / (ms / 1000) / 1e12 }
        return CopyBandwidth(bytes: 2 * bytes, mappedTBps: tbps(mappedMillis), plainTBps: tbps(plainMillis))
    }

    // MARK: KV layout read bandwidth

    /// Reads one layer's K and V of every request, as a decode step's attention does, in each
    /// layout, and in a plain allocation holding just that layer contiguously.
    func measureLayouts() throws -> (String, [LayoutRead]) {
        let shape = KVShape.llama3_8B
        let cases: [(requests: Int, tokens: Int)] = gpu != nil ? [(64, 4096), (256, 1024)] : [(8, 1024), (32, 256)]
        var results: [LayoutRead] = []
        for (requests, tokens) in cases {
            let bytesRead = requests * tokens * 2 * shape.tokenLayerBytes
            say("  plain \(requests) x \(tokens)")
            let plain = try readPlain(requests: requests, tokens: tokens, rowBytes: shape.tokenLayerBytes)
            results.append(LayoutRead(layout: "plain allocation", requests: requests, tokens: tokens, bytesRead: bytesRead,
                                      millis: plain, tbps: Double(bytesRead) / (plain / 1000) / 1e12, fractionOfPlain: 1, note: "one layer only"))
            for kind in KVLayoutKind.allCases {
                let layout = try KVLayout(kind, shape: shape, chunkSize: chunk)
                let kvBytes = requests * layout.rangesPerRequest * layout.chunks(forTokens: tokens) * chunk
                let free = try backend.freePhysicalBytes()
                guard kvBytes + 64 * chunk < free * 9 / 10 else {
                    results.append(LayoutRead(layout: kind.rawValue, requests: requests, tokens: tokens, bytesRead: bytesRead, millis: 0, tbps: 0,
                                              fractionOfPlain: 0, note: "skipped: \(gib(kvBytes)) of KV does not fit \(gib(free)) free"))
                    continue
                }
                say("  \(kind.rawValue) \(requests) x \(tokens): \(gib(kvBytes)) mapped")
                let ms = try readLayout(kind, shape: shape, requests: requests, tokens: tokens, kvBytes: kvBytes)
                results.append(LayoutRead(layout: kind.rawValue, requests: requests, tokens: tokens, bytesRead: bytesRead, millis: ms,
                                          tbps: Double(bytesRead) / (ms / 1000) / 1e12, fractionOfPlain: plain / ms, note: nil))
            }
        }
        return ("Llama-3-8B KV (32 layers, 8 KV heads x 128, bf16)", results)
    }

    func readLayout(_ kind: KVLayoutKind, shape: KVShape, requests: Int, tokens: Int, kvBytes: Int) throws -> Double {
        let memory = try VirtualMemory(backend: backend, budget: .bytes(min(backend.totalPhysicalBytes, kvBytes + 64 * chunk)),
                                       lowWatermark: 0, highWatermark: 0)
        let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: tokens)
        for id in 0..<requests {
            try cache.addRequest(id)
            try cache.reserve(id, tokens: tokens)
            try cache.setLength(id, tokens)
            if gpu != nil {
                for t in try cache.tensors(of: id) {
                    try device.fill(t.base, words: memory.mappedChunkCount(t) * chunk / 4, seed: UInt32(id))
                }
            } else {
                // The CPU run reads only the first few layers: write just those rows (non-zero).
                for layer in 0..<cpuLayers {
                    for component in KVComponent.allCases {
                        let view = try cache.view(id, layer: layer, component: component)
                        for t in 0..<tokens { memset(pointer(view.address(token: t, head: 0)), Int32(id & 0x7F) | 1, shape.tokenLayerBytes) }
                    }
                }
            }
        }
        defer {
            for id in 0..<requests { try? cache.free(id) }
            try? memory.drain()
        }
        // One set of views per layer; timing rotates through layers so no rep hits in cache.
        let layers = gpu != nil ? shape.layers : cpuLayers
        let views = try (0..<layers).map { layer in
            try (0..<requests).map { id in
                (try cache.view(id, layer: layer, component: .key), try cache.view(id, layer: layer, component: .value))
            }
        }
        if let gpu {
            let reads = try LayerReads(gpu: gpu, views: views, tokens: tokens)
            return try timeGPU(gpu, reps: 20) { try reads.readNextLayer() }
        } else {
            var layer = 0
            var sink: UInt64 = 0
            let ms = timeCPU(reps: cpuLayers - 1) {
                sink ^= hostRead(views[layer % layers].flatMap { [$0.0, $0.1] }, tokens: tokens, rowBytes: shape.tokenLayerBytes)
                layer += 1
            }
            if sink == 0x1234_5678_9ABC_DEF0 { print("") }  // keeps the reads alive
            return ms
        }
    }

    /// The read ceiling every GPU benchmark reports against: TB/s of the plain-allocation read
    /// (1 GiB of 2 KiB rows, 64 x 4096 tokens x K and V).
    static func readCeilingTBps(device: CUDAWork) throws -> Double {
        let requests = 64, tokens = 4096, rowBytes = 2048
        let plain = VMMBench(device: device, chunks: 0, steps: 0, log: false, stages: [])
        let ms = try plain.readPlain(requests: requests, tokens: tokens, rowBytes: rowBytes)
        return Double(requests * tokens * 2 * rowBytes) / (ms / 1000) / 1e12
    }

    func readPlain(requests: Int, tokens: Int, rowBytes: Int) throws -> Double {
        let bytes = requests * tokens * 2 * rowBytes
        if let gpu {
            let buffers = try (0..<4).map { _ in try DeviceBuffer(context: gpu.context, bytes: bytes) }
            for b in buffers { try gpu.fill(b.address, words: bytes / 4, seed: 3) }
            let bases = try buffers.map { buffer -> DeviceBuffer in
                let table = try DeviceBuffer(context: gpu.context, bytes: 16 * requests)
                let addresses = (0..<(2 * requests)).map { buffer.address + UInt64($0 * tokens * rowBytes) }
                try gpu.context.copyHostToDevice(destination: table.address, from: addresses)
                return table
            }
            let output = try DeviceBuffer(context: gpu.context, bytes: 4 * MemoryKernels.kvReadOutputWords(requests: requests, tokens: tokens))
            var rep = 0
            // The kernels read `buffers` through the address tables only: keep them alive
            // (an optimized build may release an object after its last use in Swift code).
            return try withExtendedLifetime(buffers) {
                try timeGPU(gpu, reps: 20) {
                    try gpu.kernels.kvRead(bases: bases[rep % 4].address, requests: requests, tokens: tokens, tokenStride: rowBytes,
                                           blockStride: tokens * rowBytes, tokensPerBlock: tokens, output: output.address, stream: gpu.stream)
                    rep += 1
                }
            }
        } else {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
            defer { raw.deallocate() }
            memset(raw, 0x5A, bytes)
            let base = UInt64(UInt(bitPattern: raw))
            let views = (0..<(2 * requests)).map {
                KVView(base: base + UInt64($0 * tokens * rowBytes), tokenStride: rowBytes, headStride: 0, blockStride: tokens * rowBytes,
                       tokensPerBlock: tokens, length: tokens, readableTokens: tokens)
            }
            var sink: UInt64 = 0
            let ms = timeCPU(reps: 5) { sink ^= hostRead(views, tokens: tokens, rowBytes: rowBytes) }
            if sink == 0x1234_5678_9ABC_DEF0 { print("") }
            return ms
        }
    }
}

/// The CPU twin of `vt_kv_read`: XOR of every 8-byte word of each token row.
func hostRead(_ views: [KVView], tokens: Int, rowBytes: Int) -> UInt64 {
    var acc: UInt64 = 0
    let words = rowBytes / 8
    for view in views {
        for t in 0..<tokens {
            let row = UnsafePointer<UInt64>(bitPattern: UInt(view.address(token: t, head: 0)))!
            var i = 0
            while i < words {
                acc ^= row[i] ^ row[i + 1] ^ row[i + 2] ^ row[i + 3]
                i += 4
            }
        }
    }
    return acc
}

func pointer(_ address: UInt64) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(address))! }
