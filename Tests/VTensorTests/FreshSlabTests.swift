import Testing
@testable import VTensor

/// Fresh slabs: where slabs map only whole (CUDA, and the host backend by default) and a
/// mapping costs per allocation, the fresh chunks a step fills whole map as slabs of up to
/// `freshSlabChunks` (a power of two): one allocation, one map and one set access each. A run
/// given back in part is stranded (mapped on, counted) until the rest goes, and unmaps whole; a
/// grow over a stranded slot takes it back with no driver call; a holder's pending chunks of a
/// slab go back together. The books match the host backend's census throughout.
@Suite struct FreshSlabTests {
    func setup(budget: Int = 96, fresh: Int = 8, low: Int = 0, high: Int = 32) throws -> (HostBackend, FaultInjectingBackend, VirtualMemory) {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try VirtualMemory(backend: faulty, budget: .bytes(budget * testChunk), lowWatermark: low, highWatermark: high,
                                       freshSlabChunks: fresh)
        return (host, faulty, memory)
    }

    /// A per-token KV cache over 200 chunks of host memory, fresh chunks mapped as slabs.
    func perTokenCache(freshSlabChunks: Int, maxTokens: Int) throws -> (HostBackend, VirtualMemory, KVCache) {
        let host = try makeHost()
        let memory = try VirtualMemory(backend: host, budget: .bytes(200 * testChunk), lowWatermark: 0, highWatermark: 0,
                                       freshSlabChunks: freshSlabChunks)
        let cache = try KVCache(shape: KVShape(layers: 2, kvHeads: 2, headDim: 8, dtype: .fp32), layout: .perToken, memory: memory,
                                maxTokensPerRequest: maxTokens)
        return (host, memory, cache)
    }

    func fill(_ t: VirtualTensor, _ chunks: Range<Int>, tag: UInt32) {
        for i in chunks { store(tag + UInt32(i), at: t.address(ofChunk: i) + 16) }
    }

    func holds(_ t: VirtualTensor, _ chunks: some Sequence<Int>, tag: UInt32) -> Bool {
        chunks.allSatisfy { load(t.address(ofChunk: $0) + 16) == tag + UInt32($0) }
    }

    /// 23 slots written whole and two more: slabs of 8, 8, 4 and 2, then three single chunks;
    /// seven driver calls of each kind instead of 25. Freed, the runs unmap in one call each and
    /// their slabs wait idle for the next grow, which maps them again without creating any.
    @Test func slotsWrittenWholeMapAsSlabs() throws {
        let (host, faulty, memory) = try setup()
        #expect(memory.freshSlabChunks == 8)
        let t = try memory.makeTensor(bytes: 40 * testChunk)
        memory.setWholeWrites([(t, 23)])
        try memory.grow(t, toChunks: 25)
        #expect(faulty.callCounts[.map, default: 0] == 7 && faulty.callCounts[.setAccess, default: 0] == 7)
        #expect(memory.accounting.freshRuns == 4 && memory.accounting.runMappings == 4)
        #expect(host.census().runMappings == 4 && host.census().slabs == 4)
        fill(t, 0..<25, tag: 100)
        #expect(holds(t, 0..<25, tag: 100))
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.audit() == [])

        let unmaps = faulty.unmapCalls
        try memory.free(t)
        try memory.drain()
        #expect(faulty.unmapCalls - unmaps == 7)
        let created = memory.accounting.totalCreated
        #expect(memory.accounting.slabs == 4, "idle slabs of reusable sizes wait within the high watermark")
        let u = try memory.makeTensor(bytes: 40 * testChunk)
        memory.setWholeWrites([(u, 22)])
        try memory.grow(u, toChunks: 22)
        #expect(memory.accounting.totalCreated == created, "the idle slabs mapped again, nothing created")
        fill(u, 0..<22, tag: 500)
        #expect(holds(u, 0..<22, tag: 500))
        #expect(backendAgrees(memory, host) == [])
        try memory.free(u)
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(host.census().liveChunks == 0 && memory.accounting.slabs == 0)
    }

    /// Without a declaration of whole writes, or below two slots, every fresh chunk is its own.
    @Test func onlySlotsWrittenWholeMapAsSlabs() throws {
        let (host, faulty, memory) = try setup()
        let t = try memory.makeTensor(bytes: 16 * testChunk)
        try memory.grow(t, toChunks: 6)
        memory.setWholeWrites([(t, 7)])
        try memory.grow(t, toChunks: 8)
        #expect(memory.accounting.freshRuns == 0)
        #expect(faulty.callCounts[.map, default: 0] == 8)
        #expect(backendAgrees(memory, host) == [])
        try memory.free(t)
        try memory.drain()
    }

    /// A run given back in part (a release, a shrink) is stranded: still mapped, counted, its
    /// other slots readable; a grow over a stranded slot takes it back (no driver call), and the
    /// run unmaps whole once every slot is given back.
    @Test func aRunGivenBackInPartWaitsForTheRest() throws {
        let (host, faulty, memory) = try setup()
        let t = try memory.makeTensor(bytes: 16 * testChunk)
        memory.setWholeWrites([(t, 8)])
        try memory.grow(t, toChunks: 8)
        fill(t, 0..<8, tag: 1)
        try memory.shrink(t, toChunks: 5)
        #expect(memory.accounting.stranded == 3 && memory.strandedChunks == 3)
        #expect(memory.accounting.runSplits == 0 && host.census().runMappings == 1)
        #expect(memory.inspect { m in (0..<8).map { m.isStranded(t, chunk: $0) } } == [false, false, false, false, false, true, true, true])
        #expect(holds(t, 0..<5, tag: 1))
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.audit() == [])

        // Growing again takes the stranded chunks back: no driver call.
        let calls = faulty.callCounts[.map, default: 0]
        try memory.grow(t, toChunks: 7)
        #expect(faulty.callCounts[.map, default: 0] == calls)
        #expect(memory.accounting.stranded == 1)
        fill(t, 5..<7, tag: 1)
        #expect(holds(t, 0..<7, tag: 1))

        // Given back slot by slot: the run stays mapped until its last slot goes, then unmaps whole.
        let unmaps = faulty.unmapCalls
        for i in (1..<7).reversed() {
            try memory.release(t, chunks: [i])
            #expect(host.census().runMappings == 1)
        }
        try memory.release(t, chunks: [0])
        try memory.drain()
        #expect(faulty.unmapCalls - unmaps == 1)
        #expect(memory.accounting.stranded == 0 && host.census().runMappings == 0)
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.audit() == [])
        try memory.free(t)
        try memory.drain()
    }

    /// A stranded slot whose chunk another tensor maps too (it aliased the whole run) cannot take
    /// writes in place: copy on write gives the run private copies first, and the other tensor
    /// keeps reading what it read.
    @Test func aStrandedChunkMappedElsewhereIsCopiedBeforeItIsWritten() throws {
        let (host, _, memory) = try setup()
        let a = try memory.makeTensor(bytes: 8 * testChunk)
        memory.setWholeWrites([(a, 4)])
        try memory.grow(a, toChunks: 4)
        fill(a, 0..<4, tag: 10)
        let b = try memory.makeTensor(bytes: 8 * testChunk)
        try memory.aliasOnGrow((0..<4).map { (b, $0, a, $0) })
        try memory.grow(b, toChunks: 4)
        #expect(host.census().runMappings == 2)
        try memory.release(a, chunks: [3])
        #expect(memory.inspect { $0.needsPrivateCopy(a, chunk: 3) })
        try memory.makePrivate(a, chunk: 3)
        #expect(memory.accounting.stranded == 0 && memory.accounting.runSplits == 1)
        store(999, at: a.address(ofChunk: 3) + 16)
        #expect(holds(a, 0..<3, tag: 10) && holds(b, 0..<4, tag: 10))
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.audit() == [])
        try memory.free(a)
        try memory.free(b)
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(host.census().liveChunks == 0)
    }

    /// A pending alias of part of a slab, with nothing else mapping the slab, is read through a
    /// private copy taken from a scratch mapping of the whole slab.
    @Test func aPendingPartOfASlabIsCopiedOutToBeRead() throws {
        let (host, _, memory) = try setup()
        let a = try memory.makeTensor(bytes: 8 * testChunk)
        memory.setWholeWrites([(a, 4)])
        try memory.grow(a, toChunks: 4)
        fill(a, 0..<4, tag: 20)
        let h = try memory.makeTensor(bytes: 8 * testChunk)
        try memory.aliasOnGrow((0..<2).map { (h, $0, a, $0) })
        try memory.free(a)
        try memory.drain()
        try memory.mapPendingAliases(h)
        #expect(holds(h, 0..<2, tag: 20))
        #expect(memory.accounting.runSplits == 2)
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.audit() == [])
        try memory.free(h)
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(host.census().liveChunks == 0)
    }

    /// A device that cannot make a slab now still maps the slots, a chunk at a time.
    @Test func aSlabRefusedFallsBackToSingleChunks() throws {
        let (host, faulty, memory) = try setup(budget: 16, low: 8, high: 16)
        #expect(try memory.replenish() == 8)
        faulty.setFailureRate(.create, 1)
        let t = try memory.makeTensor(bytes: 8 * testChunk)
        memory.setWholeWrites([(t, 8)])
        try memory.grow(t, toChunks: 8)
        #expect(memory.accounting.freshRuns == 0 && memory.accounting.slabs == 0)
        fill(t, 0..<8, tag: 3)
        #expect(holds(t, 0..<8, tag: 3))
        faulty.setFailureRate(.create, 0)
        #expect(backendAgrees(memory, host) == [])
        try memory.free(t)
        try memory.drain()
    }

    /// A failed map or set access undoes the fresh run whole, and nothing leaks.
    @Test(arguments: [FaultInjectingBackend.Operation.map, .setAccess])
    func aFailedFreshRunLeavesNothing(failing: FaultInjectingBackend.Operation) throws {
        let (host, faulty, memory) = try setup()
        let t = try memory.makeTensor(bytes: 16 * testChunk)
        memory.setWholeWrites([(t, 8)])
        faulty.setFailureRate(failing, 1)
        #expect(throws: (any Error).self) { try memory.grow(t, toChunks: 8) }
        faulty.setFailureRate(failing, 0)
        #expect(memory.accounting.mappings == 0 && memory.accounting.inUse == 0)
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.audit() == [])
        try memory.grow(t, toChunks: 8)
        #expect(memory.accounting.freshRuns >= 1)
        try memory.free(t)
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(host.census().liveChunks == 0)
    }

    /// A prefix cache's holder keeps a request's fresh run as pending aliases; given back block
    /// by block, the slab's chunks wait (counted as stranded) until the last goes, then all go
    /// together and the slab is whole again.
    @Test func aHolderGivesASlabsChunksBackTogether() throws {
        let (host, memory, cache) = try perTokenCache(freshSlabChunks: 4, maxTokens: 256)
        let perChunk = cache.layout.tokensPerChunk
        try cache.addRequest(1)
        try cache.reserve(1, tokens: 4 * perChunk)
        try cache.setLength(1, 4 * perChunk)
        #expect(memory.accounting.freshRuns == cache.layout.rangesPerRequest)
        try cache.share(1, chunks: 4, asHolder: 10)
        try cache.free(1)
        try memory.drain()
        for i in [3, 2, 1] {
            try cache.releaseHolderChunks(10, chunks: [i])
            #expect(cache.strandedUnits == (4 - i) * cache.layout.rangesPerRequest)
            #expect(memory.audit() == [])
        }
        try cache.releaseHolderChunks(10, chunks: [0])
        #expect(cache.strandedUnits == 0)
        try memory.drain()
        #expect(memory.accounting.inUse == 0)
        _ = try memory.trim(to: 0)
        #expect(memory.accounting.slabs == 0 && host.census().liveChunks == 0)
        try cache.freeHolder(10)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    /// A fork of a request whose chunks are fresh slabs (the GPU's first map of a prompt) where
    /// slabs map only whole, as on CUDA: a slab the prefix covers whole is aliased as one run,
    /// a slab it covers in part is copied chunk by chunk, and the partial chunk is copied. The
    /// fork reads what its source wrote, names its full chunks as its source does (aliased or
    /// copied, the bytes are the same), and nothing leaks.
    @Test func aForkOfSlabsAliasesWholeSlabsAndCopiesTheRest() throws {
        let (host, memory, cache) = try perTokenCache(freshSlabChunks: 8, maxTokens: 1024)
        let perChunk = cache.layout.tokensPerChunk
        try cache.addRequest(1)
        try cache.reserve(1, tokens: 20 * perChunk)
        try cache.setLength(1, 20 * perChunk)
        let source = try cache.tensors(of: 1)
        #expect(memory.accounting.freshRuns >= 2 * source.count, "the source maps slabs of 8, 8 and 4")
        for t in source { fill(t, 0..<20, tag: 1000) }

        // 10 full chunks and half of the 11th: slab 0..<8 whole, 8 and 9 of the next slab.
        try cache.fork(from: 1, prefix: 10 * perChunk + perChunk / 2, into: 2)
        try cache.reserve(2, tokens: 12 * perChunk)
        try cache.setLength(2, 10 * perChunk + perChunk / 2)
        let forked = try cache.tensors(of: 2)
        for (mine, theirs) in zip(forked, source) {
            #expect(holds(mine, 0..<10, tag: 1000))
            for j in 0..<8 { #expect(memory.physicalChunk(mine, chunk: j) == memory.physicalChunk(theirs, chunk: j), "chunk \(j) aliased") }
            for j in 8..<11 { #expect(memory.physicalChunk(mine, chunk: j) != memory.physicalChunk(theirs, chunk: j), "chunk \(j) copied") }
        }
        // The copies hold the source's bytes: they are named alike (content identities), so
        // the shared-prefix decode may read them for both.
        let identities = try cache.sharedChunkIdentities([1, 2])
        #expect(identities[1].count == 10 && Array(identities[0].prefix(10)) == identities[1])
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.audit() == [])

        try cache.free(1)
        try cache.free(2)
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(host.census().liveChunks == 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }
}

/// A request's range reserved longer than it is mapped (the engine reserves `--max-model-len`)
/// maps its fresh runs with exactly the driver calls an exact range makes: the memory manager
/// does not change with the range's length. (On an H100, slabs in 4x ranges read ~15% slower
/// than in exact ones; docs/perf.md, 2026-12-06, sixth session: that difference is the GPU's,
/// not the manager's.)
@Suite struct FreshSlabRangeLengthTests {
    @Test(arguments: [2, 4])
    func aLongerRangeMakesTheSameDriverCalls(reserve: Int) throws {
        let shape = KVShape(layers: 2, kvHeads: 2, headDim: 8, dtype: .fp32)
        let tokens = try KVLayout(.blocked, shape: shape, chunkSize: testChunk).tokensPerChunk * 20
        func calls(reserve: Int) throws -> (calls: [FaultInjectingBackend.Operation: Int], slabChunks: Int, inUse: Int) {
            let backend = FaultInjectingBackend(wrapping: try makeHost())
            let memory = try VirtualMemory(backend: backend, budget: .bytes(200 * testChunk), lowWatermark: 0, highWatermark: 0,
                                           freshSlabChunks: 8)
            let cache = try KVCache(shape: shape, layout: .blocked, memory: memory, maxTokensPerRequest: tokens * reserve)
            for id in 0..<4 {
                try cache.addRequest(id)
                try cache.reserve(id, tokens: tokens)
                try cache.setLength(id, tokens)
            }
            let books = memory.accounting
            for id in 0..<4 { try cache.free(id) }
            return (backend.callCounts, books.slabChunks, books.inUse)
        }
        let exact = try calls(reserve: 1), longer = try calls(reserve: reserve)
        #expect(longer.calls == exact.calls)
        #expect(longer.slabChunks == exact.slabChunks && longer.inUse == exact.inUse)
        // 20 chunks a request, written whole: slabs of 8, 8 and 4, three creates and maps each.
        #expect(exact.inUse == 80 && exact.slabChunks == 80)
        #expect(exact.calls[.create] == 12 && exact.calls[.map] == 12)
    }
}
