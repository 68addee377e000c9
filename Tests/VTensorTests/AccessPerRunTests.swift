import Testing
@testable import VTensor

/// `VirtualMemory(accessPerRun: true)`: a batch of mappings grants access once per run of
/// adjacent chunks in one tensor instead of once per chunk. Every chunk still ends up readable
/// and writable, runs stop at gaps and at tensor boundaries, and a failure inside a run undoes
/// the whole grow with nothing leaked.
@Suite struct AccessPerRunTests {
    func memory(_ backend: any MemoryBackend, perRun: Bool, chunks: Int = 256) throws -> VirtualMemory {
        try VirtualMemory(backend: backend, budget: .bytes(chunks * testChunk), lowWatermark: 0, highWatermark: 0, accessPerRun: perRun,
                          unmapPerRun: perRun)
    }

    /// The device may read all of `tensor`'s first `chunks` chunks (the host backend checks each).
    func readable(_ host: HostBackend, _ tensor: VirtualTensor, chunks: Int) throws {
        let reader = try host.beginRead(address: tensor.address(ofChunk: 0), bytes: chunks * testChunk)
        host.endRead(reader)
    }

    @Test(arguments: [false, true])
    func oneSetAccessPerRun(perRun: Bool) throws {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try memory(faulty, perRun: perRun)
        let a = try memory.makeTensor(bytes: 70 * testChunk)
        let b = try memory.makeTensor(bytes: 5 * testChunk)
        try memory.grow([(a, 70), (b, 5)])
        // Batches of 32 claims: a[0..<32], a[32..<64], then a[64..<70] + b[0..<5] (two runs).
        #expect(faulty.callCounts[.setAccess] == (perRun ? 4 : 75))
        #expect(faulty.callCounts[.map] == 75)
        try readable(host, a, chunks: 70)
        try readable(host, b, chunks: 5)
        for i in 0..<70 { store(UInt32(i), at: a.address(ofChunk: i) + 4) }
        #expect((0..<70).allSatisfy { load(a.address(ofChunk: $0) + 4) == UInt32($0) })
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func runsStopAtMappedChunksAndPendingAliasesJoinThem() throws {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try memory(faulty, perRun: true)
        let source = try memory.makeTensor(bytes: 4 * testChunk)
        try memory.grow(source, toChunks: 4)
        for i in 0..<4 { store(500 + UInt32(i), at: source.address(ofChunk: i) + 8) }
        let t = try memory.makeTensor(bytes: 12 * testChunk)
        // Chunks 0-3 aliased (pending), 4-5 fresh, 6 mapped already, 7-11 fresh.
        try memory.aliasOnGrow((0..<4).map { (t, $0, source, $0) })
        try memory.grow([(t, 7)])
        let before = faulty.callCounts[.setAccess, default: 0]
        // The grow to 7 mapped 0..<7 as one run (aliases and fresh chunks alike).
        #expect(before == 1 + 1)
        try memory.unmap(t, chunk: 5)
        try memory.drain()
        try memory.grow([(t, 12)])
        // Holes now: 5 and 7..<12, two runs.
        #expect(faulty.callCounts[.setAccess, default: 0] - before == 2)
        try readable(host, t, chunks: 12)
        #expect((0..<4).allSatisfy { load(t.address(ofChunk: $0) + 8) == 500 + UInt32($0) })
        #expect(memory.physicalChunk(t, chunk: 2) == memory.physicalChunk(source, chunk: 2))
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    /// A set access or a map failing inside a run (the second batch's, after a whole first batch
    /// succeeded) fails the grow: nothing stays mapped, the pending aliases stay pending, the
    /// chunks go back, and the same grow then succeeds.
    @Test(arguments: [(FaultInjectingBackend.Operation.setAccess, 1), (.map, 40), (.map, 32)])
    func aFailureInsideARunUndoesTheGrow(failing: FaultInjectingBackend.Operation, after: Int) throws {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try memory(faulty, perRun: true)
        let source = try memory.makeTensor(bytes: 3 * testChunk)
        try memory.grow(source, toChunks: 3)
        let t = try memory.makeTensor(bytes: 60 * testChunk)
        try memory.aliasOnGrow((0..<3).map { (t, $0, source, $0) })
        let census = host.census()
        // Map calls so far: the source's 3. `after` counts calls from now.
        faulty.failNext(failing, after: after)
        #expect(throws: VTensorError.self) { try memory.grow(t, toChunks: 60) }
        #expect(faulty.injectedCounts[failing] == 1)
        // The fresh chunks went back to the reserve; nothing of the grow is mapped.
        #expect(host.census().mappings == census.mappings && host.census().reservations == census.reservations)
        #expect(memory.accounting.inUse == 3)
        #expect(memory.accounting.pendingAliases == 3)
        #expect((0..<60).allSatisfy { !memory.isMapped(t, chunk: $0) })
        #expect(memory.audit { backendAgrees($0, host) } == [])
        try memory.grow(t, toChunks: 60)
        try readable(host, t, chunks: 60)
        #expect(memory.physicalChunk(t, chunk: 1) == memory.physicalChunk(source, chunk: 1))
        try memory.free(t)
        try memory.free(source)
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(memory.accounting.inUse == 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    /// `unmapPerRun`: a freed tensor's chunks go in one unmap a run (the drain takes every
    /// completed retirement at once; the mapper's reclaim 32 at a time), holes split the runs, and
    /// the backend's census agrees.
    @Test(arguments: [false, true])
    func retiredRunsUnmapInOneCall(perRun: Bool) throws {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try memory(faulty, perRun: perRun)
        let a = try memory.makeTensor(bytes: 40 * testChunk)
        try memory.grow(a, toChunks: 40)
        try memory.unmap(a, chunk: 10)
        try memory.drain()
        #expect(faulty.unmapCalls == 1)
        try memory.free(a)
        try memory.drain()
        // Chunks 0..<10 and 11..<40: two runs.
        #expect(faulty.unmapCalls == 1 + (perRun ? 2 : 39))
        let b = try memory.makeTensor(bytes: 70 * testChunk)
        try memory.grow(b, toChunks: 70)
        try memory.free(b)
        let before = faulty.unmapCalls
        while try memory.reclaim(limit: 64) > 0 {}
        #expect(faulty.unmapCalls - before == (perRun ? 3 : 70), "batches of 32, 32 and 6")
        #expect(memory.accounting.inUse == 0)
        #expect(host.census().mappings == 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    /// The host backend's run unmap refuses a range with a hole or a live reader, and changes nothing then.
    @Test func aRunUnmapChecksEveryChunkFirst() throws {
        let host = try makeHost()
        let base = try host.reserve(bytes: 4 * testChunk)
        let chunks = try (0..<4).map { _ in try host.createChunk() }
        for i in [0, 1, 3] { try host.map(chunks[i], at: base + UInt64(i * testChunk)) }
        #expect(throws: BackendError.self) { try host.unmap(at: base, chunks: 4) }
        #expect(host.census().mappings == 3)
        try host.setAccess(at: base, bytes: 2 * testChunk)
        let reader = try host.beginRead(address: base + UInt64(testChunk), bytes: 64)
        #expect(throws: BackendError.self) { try host.unmap(at: base, chunks: 2) }
        #expect(host.census().mappings == 3)
        host.endRead(reader)
        try host.unmap(at: base, chunks: 2)
        try host.unmap(at: base + UInt64(3 * testChunk), chunks: 1)
        #expect(host.census().mappings == 0)
        for c in chunks { try host.releaseChunk(c) }
        try host.releaseReservation(base: base, bytes: 4 * testChunk)
    }
}
