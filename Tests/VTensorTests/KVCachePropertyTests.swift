import Testing
@testable import VTensor

/// Randomized operation sequences on the KV cache over the host backend (real virtual memory),
/// checked against a model after every step: ownership and accounting exact (manager audit and
/// the backend's own census agree), nothing leaked, and every token of every request reads
/// back through its views exactly as written: through aliases, and never showing writes made
/// to another request after a fork.
struct KVModel {
    /// Per request, the tag written at each token.
    var tokens: [Int: [UInt32]] = [:]
    var nextTag: UInt32 = 1
    var nextID = 1
}

struct PropertyRun {
    let host: HostBackend
    let backend: any MemoryBackend
    let memory: VirtualMemory
    let cache: KVCache
    let mapper: AsyncMapper?
    var model = KVModel()
    var rng: SplitMix64
    var leases: [(request: Int, reader: UInt64)] = []
    var stats: [String: Int] = [:]

    init(layout: KVLayoutKind, seed: UInt64, faultRate: Double, useMapper: Bool, guardTokens: Int = 0,
         reuseOrder: ChunkReuseOrder = .newestFirst, accessPerRun: Bool = false, freshSlabChunks: Int = 0) throws {
        host = try HostBackend(chunkSize: testChunk, capacityBytes: 1024 * testChunk)
        if faultRate > 0 {
            let faulty = FaultInjectingBackend(wrapping: host, seed: seed ^ 0x5EED)
            for op in FaultInjectingBackend.Operation.allCases { faulty.setFailureRate(op, faultRate) }
            backend = faulty
        } else {
            backend = host
        }
        memory = try VirtualMemory(backend: backend, budget: .bytes(160 * testChunk), lowWatermark: 3, highWatermark: 10,
                                   reuseOrder: reuseOrder, accessPerRun: accessPerRun, unmapPerRun: accessPerRun, freshSlabChunks: freshSlabChunks)
        // 2 layers x 2 heads x 8 dims x fp32: 64 bytes per layer-token, 256 per token.
        // Chunks hold 64 tokens per range (per-layer) or 16 (per-token, blocked).
        cache = try KVCache(shape: KVShape(layers: 2, kvHeads: 2, headDim: 8, dtype: .fp32), layout: layout,
                            memory: memory, maxTokensPerRequest: 200, guardTokens: guardTokens)
        mapper = useMapper ? AsyncMapper(memory: memory, sliceChunks: 3) : nil
        rng = SplitMix64(seed: seed)
    }

    mutating func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

    func write(_ request: Int, token: Int, tag: UInt32) throws {
        for layer in 0..<cache.layout.shape.layers {
            for component in KVComponent.allCases {
                let view = try cache.view(request, layer: layer, component: component)
                store(tag, at: view.address(token: token, head: 0))
                store(tag ^ 0xFFFF_FFFF, at: view.address(token: token, head: cache.layout.shape.kvHeads - 1) + UInt64(cache.layout.shape.headBytes - 4))
            }
        }
    }

    func verifyContents() throws {
        for (request, tags) in model.tokens {
            #expect(try cache.length(of: request) == tags.count)
            for layer in 0..<cache.layout.shape.layers {
                for component in KVComponent.allCases {
                    let view = try cache.view(request, layer: layer, component: component)
                    #expect(view.readableTokens >= view.length + cache.guardTokens)
                    for (token, tag) in tags.enumerated() {
                        let first = load(view.address(token: token, head: 0))
                        let last = load(view.address(token: token, head: cache.layout.shape.kvHeads - 1) + UInt64(cache.layout.shape.headBytes - 4))
                        if first != tag || last != tag ^ 0xFFFF_FFFF {
                            Issue.record("request \(request) token \(token) layer \(layer) \(component): read \(first)/\(last), wrote \(tag)")
                            return
                        }
                    }
                    // Every token a kernel may read is mapped with access set.
                    if view.readableTokens > 0 {
                        #expect(host.isAccessible(address: view.address(token: view.readableTokens - 1, head: 0), bytes: cache.layout.shape.headBytes))
                    }
                }
            }
        }
    }

    func verifyAccounting() {
        let problems = memory.audit { backendAgrees($0, host) }
        #expect(problems == [], "\(problems)")
        let a = memory.accounting
        #expect(a.created <= a.budgetChunks)
        #expect(a.created == a.inReserve + a.inUse + a.idleSlabChunks)
        let kv = cache.accounting
        #expect(kv.requests == model.tokens.count)
        #expect(kv.tokens == model.tokens.values.reduce(0) { $0 + $1.count })
    }

    mutating func endLeases() {
        for lease in leases { host.endRead(lease.reader) }
        leases.removeAll()
    }

    mutating func count(_ key: String) { stats[key, default: 0] += 1 }

    mutating func step() throws {
        let ids = Array(model.tokens.keys).sorted()
        let pick = ids.isEmpty ? nil : ids[random(ids.count)]
        switch random(100) {
        case 0..<12:  // new request
            let id = model.nextID
            model.nextID += 1
            do {
                try cache.addRequest(id)
                model.tokens[id] = []
                count("add")
            } catch { count("add failed") }
        case 12..<50:  // append tokens (prefill or decode)
            guard let id = pick else { return }
            endLeases()  // growth may wait on fences; no simulated kernel is left hanging
            let old = model.tokens[id]!.count
            let n = min(200, old + 1 + random(random(4) == 0 ? 60 : 5))
            do {
                if let mapper {
                    let ticket = mapper.submit(try cache.prepareGrowth(id, tokens: n))
                    try mapper.wait(ticket)
                } else {
                    try cache.reserve(id, tokens: n)
                }
            } catch {
                count("append failed")
                return
            }
            for token in old..<n {
                let tag = model.nextTag
                model.nextTag += 1
                try write(id, token: token, tag: tag)
                model.tokens[id]!.append(tag)
            }
            try cache.setLength(id, n)
            count("append")
        case 50..<62:  // fork a prefix
            guard let id = pick else { return }
            endLeases()
            let prefix = random(model.tokens[id]!.count + 1)
            let child = model.nextID
            model.nextID += 1
            do {
                try cache.fork(from: id, prefix: prefix, into: child)
                model.tokens[child] = Array(model.tokens[id]!.prefix(prefix))
                count("fork")
            } catch {
                #expect(!cache.contains(child))
                count("fork failed")
            }
        case 62..<70:  // truncate (a regenerated turn)
            guard let id = pick else { return }
            let n = random(model.tokens[id]!.count + 1)
            try cache.truncate(id, to: n)
            model.tokens[id]!.removeLast(model.tokens[id]!.count - n)
            count("truncate")
        case 70..<80:  // free
            guard let id = pick else { return }
            try cache.free(id)
            model.tokens[id] = nil
            count("free")
        case 80..<90:  // a kernel starts reading a request's KV
            guard let id = pick, let tags = model.tokens[id], !tags.isEmpty else { return }
            let view = try cache.view(id, layer: random(cache.layout.shape.layers), component: .key)
            let start = view.address(token: 0, head: 0)
            let end = view.address(token: tags.count - 1, head: 0)
            leases.append((id, try host.beginRead(address: start, bytes: Int(end - start) + 4)))
            count("lease")
        case 90..<95:  // a kernel finishes
            guard !leases.isEmpty else { return }
            host.endRead(leases.remove(at: random(leases.count)).reader)
        default:
            _ = try? memory.reclaim()
            if random(2) == 0 { _ = try? memory.trim() }
        }
    }
}

@Suite(.serialized) struct KVCachePropertyTests {
    static let layouts = KVLayoutKind.allCases

    @Test(arguments: layouts)
    func randomOperationsKeepEveryInvariant(layout: KVLayoutKind) throws {
        var run = try PropertyRun(layout: layout, seed: 0xA11CE + UInt64(layout.hashValue & 0xFF), faultRate: 0, useMapper: false)
        for i in 0..<3000 {
            try run.step()
            run.verifyAccounting()
            if i % 50 == 0 { try run.verifyContents() }
        }
        run.endLeases()
        try run.verifyContents()
        for id in run.model.tokens.keys { try run.cache.free(id) }
        run.model.tokens.removeAll()
        try run.memory.drain()
        try run.memory.trim(to: 0)
        run.verifyAccounting()
        #expect(run.memory.accounting.inUse == 0)
        #expect(run.host.census().liveChunks == 0)
        #expect(run.stats["fork", default: 0] > 20)
    }

    /// With the chunks each grow writes whole mapped as slabs (which map only whole): forks and
    /// truncations cut runs (stranded, or copied on write), and every invariant still holds.
    /// (Per-token and blocked layouts: per layer, a chunk holds 64 tokens of a 200-token request.)
    @Test(arguments: [KVLayoutKind.perToken, .blocked])
    func freshSlabsKeepEveryInvariant(layout: KVLayoutKind) throws {
        var run = try PropertyRun(layout: layout, seed: 0xF5E5 + UInt64(layout.hashValue & 0xFF), faultRate: 0, useMapper: false, freshSlabChunks: 4)
        for i in 0..<2000 {
            try run.step()
            run.verifyAccounting()
            if i % 50 == 0 { try run.verifyContents() }
        }
        run.endLeases()
        try run.verifyContents()
        #expect(run.memory.accounting.freshRuns > 20)
        for id in run.model.tokens.keys { try run.cache.free(id) }
        run.model.tokens.removeAll()
        try run.memory.drain()
        try run.memory.trim(to: 0)
        run.verifyAccounting()
        #expect(run.memory.accounting.inUse == 0 && run.memory.accounting.stranded == 0)
        #expect(run.host.census().liveChunks == 0)
    }

    /// Also with access granted (and chunks unmapped) per run, where a failed set access undoes a whole run.
    @Test(arguments: layouts, [false, true])
    func injectedFailuresReachOnlyTheFailingRequest(layout: KVLayoutKind, accessPerRun: Bool) throws {
        var run = try PropertyRun(layout: layout, seed: 0xFA17, faultRate: 0.03, useMapper: false, accessPerRun: accessPerRun)
        for i in 0..<2000 {
            try run.step()
            run.verifyAccounting()
            if i % 25 == 0 { try run.verifyContents() }
        }
        run.endLeases()
        try run.verifyContents()
        #expect(run.stats["append failed", default: 0] > 0)
        #expect(run.stats["fork failed", default: 0] + run.stats["add failed", default: 0] > 0)
    }

    @Test(arguments: [false, true])
    func throughTheAsyncMapperWithGuardTokens(accessPerRun: Bool) throws {
        var run = try PropertyRun(layout: .perToken, seed: 77, faultRate: 0, useMapper: true, guardTokens: 5, reuseOrder: .oldestFirst,
                                  accessPerRun: accessPerRun)
        for i in 0..<1500 {
            try run.step()
            run.verifyAccounting()
            if i % 50 == 0 { try run.verifyContents() }
        }
        run.endLeases()
        try run.verifyContents()
        let stats = run.mapper!.statistics
        #expect(stats.jobsCompleted == stats.jobsSubmitted)
        #expect(stats.chunksMapped > 0)
        run.mapper!.shutdown()
    }
}
