import Testing
@testable import VTensor

/// Aliases recorded now and mapped by the next grow (`aliasOnGrow`): the slot holds its chunk's
/// reference from the start, maps nothing until the grow, and every way a slot can end (freed,
/// shrunk, unmapped, copied on write, a failed grow) leaves the accounting exact.
@Suite struct PendingAliasTests {
    /// A tensor of `chunks` chunks, all mapped, chunk i tagged `tag + i` at offset 8.
    func source(_ memory: VirtualMemory, chunks: Int, tag: UInt32) throws -> VirtualTensor {
        let tensor = try memory.makeTensor(bytes: chunks * testChunk)
        try memory.grow(tensor, toChunks: chunks)
        for i in 0..<chunks { store(tag + UInt32(i), at: tensor.address(ofChunk: i) + 8) }
        return tensor
    }

    @Test func recordedWithoutADriverCallAndMappedByTheNextGrow() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32)
        let a = try source(memory, chunks: 3, tag: 100)
        let b = try memory.makeTensor(bytes: 4 * testChunk)
        let mappings = host.census().mappings
        try memory.aliasOnGrow([(b, 0, a, 0), (b, 1, a, 1)])
        #expect(host.census().mappings == mappings, "no mapping yet")
        #expect(memory.accounting.pendingAliases == 2)
        #expect(memory.accounting.inUse == 3, "no chunk created")
        #expect(!memory.isMapped(b, chunk: 0))
        #expect(memory.shareCount(b, chunk: 0) == 2 && memory.shareCount(a, chunk: 1) == 2)
        #expect(memory.audit { backendAgrees($0, host) } == [])
        #expect(try memory.holes(in: [(b, 3)]).map(\.index) == [0, 1, 2])

        try memory.grow(b, toChunks: 3)
        #expect(memory.accounting.pendingAliases == 0)
        #expect(load(b.address(ofChunk: 0) + 8) == 100 && load(b.address(ofChunk: 1) + 8) == 101)
        #expect(memory.physicalChunk(b, chunk: 1) == memory.physicalChunk(a, chunk: 1))
        #expect(memory.physicalChunk(b, chunk: 2) != memory.physicalChunk(a, chunk: 2), "chunk 2 is fresh")
        #expect(memory.accounting.inUse == 4)
        #expect(memory.audit { backendAgrees($0, host) } == [])
        // A recorded alias can itself be the source of another.
        let c = try memory.makeTensor(bytes: testChunk)
        let d = try memory.makeTensor(bytes: testChunk)
        try memory.aliasOnGrow(c, chunk: 0, from: a, chunk: 2)
        try memory.aliasOnGrow(d, chunk: 0, from: c, chunk: 0)
        try memory.grow(d, toChunks: 1)
        #expect(load(d.address(ofChunk: 0) + 8) == 102)
        for t in [a, b, c, d] { try memory.free(t) }
        try memory.drain()
        #expect(memory.accounting.inUse == 0 && memory.accounting.pendingAliases == 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func theReferenceKeepsTheChunkAfterItsSourceGoes() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32, low: 0, high: 0)
        let a = try source(memory, chunks: 2, tag: 7)
        let b = try memory.makeTensor(bytes: 2 * testChunk)
        try memory.aliasOnGrow([(b, 0, a, 0), (b, 1, a, 1)])
        try memory.free(a)
        try memory.drain()
        #expect(memory.accounting.inUse == 2, "the pending aliases hold both chunks")
        #expect(memory.audit { backendAgrees($0, host) } == [])
        try memory.grow(b, toChunks: 1)
        #expect(load(b.address(ofChunk: 0) + 8) == 7)
        // Dropping the last holder of a chunk that was never mapped again returns it at once.
        try memory.unmap(b, chunk: 1)
        #expect(memory.accounting.inUse == 1 && memory.accounting.pendingAliases == 0)
        try memory.trim()
        #expect(host.census().liveChunks == 1, "back in the reserve, then released to the device (high watermark 0)")
        try memory.free(b)
        try memory.drain()
        #expect(host.census().liveChunks == 0 && host.census().mappings == 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func shrinkSealAndFreeDropPendingAliases() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32)
        let a = try source(memory, chunks: 4, tag: 1)
        let b = try memory.makeTensor(bytes: 4 * testChunk)
        try memory.aliasOnGrow((0..<4).map { (b, $0, a, $0) })
        try memory.shrink(b, toChunks: 2)
        #expect(memory.accounting.pendingAliases == 2)
        try memory.seal(b)
        try memory.grow(b, toChunks: 2)
        #expect(memory.accounting.pendingAliases == 2, "a sealed tensor takes no mapping")
        try memory.free(b)
        #expect(memory.accounting.pendingAliases == 0)
        #expect(memory.accounting.shared == 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
        let c = try memory.makeTensor(bytes: testChunk)
        #expect(throws: VTensorError.tensorFreed(tensor: b.id)) { try memory.aliasOnGrow(c, chunk: 0, from: b, chunk: 0) }
        try memory.shrink(a, toChunks: 0)
        #expect(throws: VTensorError.notMapped(tensor: a.id, chunk: 0)) { try memory.aliasOnGrow(c, chunk: 0, from: a, chunk: 0) }
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func aBatchWithABadPlaceRecordsNothing() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32)
        let a = try source(memory, chunks: 2, tag: 1)
        let empty = try memory.makeTensor(bytes: testChunk)
        let b = try memory.makeTensor(bytes: 3 * testChunk)
        #expect(throws: VTensorError.notMapped(tensor: empty.id, chunk: 0)) {
            try memory.aliasOnGrow([(b, 0, a, 0), (b, 1, a, 1), (b, 2, empty, 0)])
        }
        #expect(memory.accounting.pendingAliases == 0 && memory.shareCount(a, chunk: 0) == 1)
        #expect(throws: VTensorError.alreadyMapped(tensor: a.id, chunk: 0)) { try memory.aliasOnGrow(a, chunk: 0, from: a, chunk: 1) }
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func copyOnWriteOfAPendingAlias() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32)
        let a = try source(memory, chunks: 1, tag: 40)
        let b = try memory.makeTensor(bytes: testChunk)
        try memory.aliasOnGrow(b, chunk: 0, from: a, chunk: 0)
        // Shared: b gets a private copy of the data, mapped now.
        try memory.makePrivate(b, chunk: 0)
        #expect(memory.accounting.pendingAliases == 0 && memory.isMapped(b, chunk: 0))
        #expect(memory.physicalChunk(b, chunk: 0) != memory.physicalChunk(a, chunk: 0))
        #expect(load(b.address(ofChunk: 0) + 8) == 40)
        store(41, at: b.address(ofChunk: 0) + 8)
        #expect(load(a.address(ofChunk: 0) + 8) == 40)
        // Held by the slot alone (its source left): nothing to copy, it stays pending.
        let c = try memory.makeTensor(bytes: testChunk)
        try memory.aliasOnGrow(c, chunk: 0, from: a, chunk: 0)
        try memory.free(a)
        try memory.drain()
        try memory.makePrivate(c, chunk: 0)
        #expect(memory.accounting.pendingAliases == 1)
        try memory.grow(c, toChunks: 1)
        #expect(load(c.address(ofChunk: 0) + 8) == 40)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    /// `.map` and `.setAccess` fail on the first alias; `.create` on the fresh chunk after both
    /// aliases were mapped, which the grow must undo back to pending aliases.
    @Test(arguments: [FaultInjectingBackend.Operation.map, .setAccess, .create])
    func aFailedGrowLeavesThePendingAliasesPending(_ failing: FaultInjectingBackend.Operation) throws {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try VirtualMemory(backend: faulty, budget: .bytes(32 * testChunk), lowWatermark: 0, highWatermark: 0)
        let a = try source(memory, chunks: 2, tag: 9)
        let b = try memory.makeTensor(bytes: 3 * testChunk)
        try memory.aliasOnGrow([(b, 0, a, 0), (b, 1, a, 1)])
        faulty.failNext(failing)
        #expect(throws: VTensorError.self) { try memory.grow(b, toChunks: 3) }
        #expect(memory.accounting.pendingAliases == 2)
        #expect(!memory.isMapped(b, chunk: 0) && !memory.isMapped(b, chunk: 1) && !memory.isMapped(b, chunk: 2))
        #expect(memory.audit { backendAgrees($0, host) } == [])
        try memory.grow(b, toChunks: 3)
        #expect(load(b.address(ofChunk: 1) + 8) == 10)
        #expect(memory.accounting.pendingAliases == 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }
}
