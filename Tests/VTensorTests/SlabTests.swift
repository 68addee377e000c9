import Foundation
import Testing
@testable import VTensor

/// Slabs: a prefix copied into one allocation of several chunks (`packSlab`) that every tensor
/// aliasing it maps with one `mapRun` and one set access. The host backend enforces CUDA's rules
/// that a run mapping is unmapped whole and (by default, as CUDA 13's `cuMemMap` takes no
/// offset) that a slab maps only whole; the manager's books must match its census throughout,
/// the slab must go back to the device only when all its chunks are free, and a run cut in part
/// (a release of some of its chunks, a copy-on-write) is split into single mappings first, or,
/// where slabs map only whole, stranded until the rest goes (a release) or replaced by private
/// copies (a copy-on-write). `parts: true` runs a backend that maps a slab's chunks alone too.
@Suite struct SlabTests {
    struct Setup {
        let host: HostBackend
        let faulty: FaultInjectingBackend
        let memory: VirtualMemory
        /// A source of 10 chunks, chunk i holding 1000 + i at byte 8.
        let source: VirtualTensor
        /// A holder with chunks 2..<10 of the source packed into a slab (pending aliases).
        let holder: VirtualTensor
    }

    func setup(budget: Int = 64, high: Int = 0, pack: Bool = true, parts: Bool = false) throws -> Setup {
        let host = try makeHost(slabParts: parts)
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try makeMemory(faulty, budgetChunks: budget, low: 0, high: high)
        let source = try memory.makeTensor(bytes: 12 * testChunk)
        try memory.grow(source, toChunks: 10)
        for i in 0..<10 { store(1000 + UInt32(i), at: source.address(ofChunk: i) + 8) }
        let holder = try memory.makeTensor(bytes: 12 * testChunk)
        if pack { #expect(try memory.packSlab(from: source, chunks: 2..<10, into: holder)) }
        return Setup(host: host, faulty: faulty, memory: memory, source: source, holder: holder)
    }

    /// A follower aliasing the source's first two chunks and the packed eight, then two fresh.
    func follower(_ s: Setup) throws -> VirtualTensor {
        let t = try s.memory.makeTensor(bytes: 12 * testChunk)
        try s.memory.aliasOnGrow((0..<2).map { (t, $0, s.source, $0) } + (2..<10).map { (t, $0, s.holder, $0) })
        try s.memory.grow(t, toChunks: 12)
        return t
    }

    func readsSource(_ t: VirtualTensor, chunks: Range<Int> = 0..<10) -> Bool {
        chunks.allSatisfy { load(t.address(ofChunk: $0) + 8) == 1000 + UInt32($0) }
    }

    @Test func aPackedPrefixMapsAsOneRunInEachFollower() throws {
        let s = try setup(parts: true)
        #expect(s.memory.accounting.slabs == 1)
        #expect(s.memory.accounting.slabChunks == 8)
        let maps = s.faulty.callCounts[.map, default: 0], access = s.faulty.callCounts[.setAccess, default: 0]
        let a = try follower(s), b = try follower(s)
        // Each follower: two single aliases, one run of eight, two fresh chunks.
        #expect(s.faulty.callCounts[.map, default: 0] - maps == 2 * 5)
        #expect(s.faulty.callCounts[.setAccess, default: 0] - access == 2 * 5)
        #expect(readsSource(a) && readsSource(b))
        #expect(s.memory.physicalChunk(a, chunk: 5) == s.memory.physicalChunk(b, chunk: 5))
        #expect(s.memory.physicalChunk(a, chunk: 5) != s.memory.physicalChunk(s.source, chunk: 5))
        try s.memory.drain()  // the packing's scratch mapping goes
        #expect(s.host.census().runMappings == 2)
        #expect(backendAgrees(s.memory, s.host) == [])

        // Freed followers give their runs back whole: one unmap call each.
        let unmaps = s.faulty.unmapCalls
        try s.memory.free(a)
        try s.memory.free(b)
        try s.memory.drain()
        #expect(s.memory.accounting.runSplits == 0)
        #expect(s.host.census().runMappings == 0)
        // Each: the run in one call, four single chunks one call each.
        #expect(s.faulty.unmapCalls - unmaps == 2 * 5)
        #expect(backendAgrees(s.memory, s.host) == [])

        // The holder's pending aliases go one by one at no driver cost; the slab outlives all but
        // the last, then returns to the device whole.
        for i in (2..<10).reversed() {
            try s.memory.release(s.holder, chunks: [i])
            #expect(s.memory.accounting.slabs == 1)
            _ = try s.memory.trim(to: 0)
        }
        #expect(s.memory.accounting.slabs == 0)
        #expect(s.host.census().slabs == 0)
        try s.memory.free(s.source)
        try s.memory.free(s.holder)
        try s.memory.drain()
        _ = try s.memory.trim(to: 0)
        #expect(s.host.census().liveChunks == 0)
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// Giving back part of a run (a release, a shrink, an unmap) splits it into single mappings
    /// first where slabs map in part; where they map only whole, the slots given back are
    /// stranded instead (mapped on, counted, nobody's) until the rest of the run goes, and the
    /// run unmaps whole. A copy-on-write replaces the run by private copies. Either way the rest
    /// of the run stays readable and the books match the backend.
    @Test(arguments: ["release", "shrink", "unmap", "makePrivate"], [true, false])
    func cuttingARunSplitsItFirst(how: String, parts: Bool) throws {
        let s = try setup(parts: parts)
        let t = try follower(s)
        switch how {
        case "release": try s.memory.release(t, chunks: [5, 6])
        case "shrink": try s.memory.shrink(t, toChunks: 7)
        case "unmap": try s.memory.unmap(t, chunk: 9)
        default:
            try s.memory.makePrivate(t, chunk: 4)
            store(77, at: t.address(ofChunk: 4) + 8)
        }
        let strands = !parts && how != "makePrivate"
        #expect(s.memory.accounting.runSplits == (strands ? 0 : 1))
        // The run's slots given back: 5 and 6, 7 to 9 (10 and 11 are single), or 9.
        let stranded = switch how { case "release": 2; case "shrink": 3; case "unmap": 1; default: 0 }
        #expect(s.memory.accounting.stranded == (strands ? stranded : 0))
        #expect(s.memory.strandedChunks == s.memory.accounting.stranded)
        try s.memory.drain()
        let kept: [Int] = switch how {
        case "release": [0, 1, 2, 3, 4, 7, 8, 9]
        case "shrink": [0, 1, 2, 3, 4, 5, 6]
        case "unmap": Array(0..<9)
        default: [0, 1, 2, 3, 5, 6, 7, 8, 9]
        }
        #expect(kept.allSatisfy { load(t.address(ofChunk: $0) + 8) == 1000 + UInt32($0) })
        #expect(s.memory.inspect { m in (0..<12).filter { m.isStranded(t, chunk: $0) }.count } == s.memory.accounting.stranded)
        if how == "makePrivate" {
            // The write went to a private copy: another follower still reads the packed value.
            #expect(load(t.address(ofChunk: 4) + 8) == 77)
            let other = try follower(s)
            #expect(load(other.address(ofChunk: 4) + 8) == 1004)
        }
        #expect(backendAgrees(s.memory, s.host) == [])
        #expect(s.memory.audit() == [])
        let unmaps = s.faulty.unmapCalls
        try s.memory.free(t)
        try s.memory.drain()
        // A stranded run goes whole with the rest: one unmap for its eight slots, one for each
        // single chunk (0 and 1, and 10 and 11 unless the shrink took them).
        if strands { #expect(s.faulty.unmapCalls - unmaps == 1 + 2 + (how == "shrink" ? 0 : 2)) }
        #expect(s.memory.accounting.stranded == 0)
        #expect(backendAgrees(s.memory, s.host) == [])
        #expect(s.memory.audit() == [])
    }

    /// A tensor handed over keeps its run; freeing the successor unmaps it whole.
    @Test(arguments: [true, false]) func aHandedOverRunStaysOneMapping(parts: Bool) throws {
        let s = try setup(parts: parts)
        try s.memory.drain()
        let runs = s.host.census().runMappings
        let t = try follower(s)
        let next = try s.memory.handOver(t)
        #expect(readsSource(next))
        #expect(s.host.census().runMappings == runs + 1)
        try s.memory.free(next)
        try s.memory.drain()
        #expect(s.memory.accounting.runSplits == 0)
        #expect(s.host.census().runMappings == runs)
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// A conversation's next round takes its range over and aliases again the head its last
    /// round gave back, while the step that read it may still run: slots still retiring that are
    /// to alias the very chunk they map keep their mappings (a run whole), with no wait for the
    /// device and no driver call. A slot to alias another chunk, or part of a retiring run, still
    /// waits for the device first.
    @Test(arguments: [true, false]) func aRetiringHeadAliasedAgainStaysMapped(parts: Bool) throws {
        let s = try setup(parts: parts)
        let t = try follower(s)
        try s.memory.drain()
        let head = (0..<2).map { (t, $0, s.source, $0) } + (2..<10).map { (t, $0, s.holder, $0) }
        // The step in flight reads the follower; its head is given back meanwhile.
        var reader = try s.host.beginRead(address: t.address(ofChunk: 0), bytes: 12 * testChunk)
        try s.memory.release(t, chunks: Array(0..<10))
        #expect(s.memory.accounting.retiring == 3, "two single chunks and the run, behind the reader's fence")
        let calls = s.faulty.callCounts, unmaps = s.faulty.unmapCalls, pending = s.memory.accounting.pendingAliases
        let start = monotonicNanos()
        try s.memory.aliasOnGrow(head)
        #expect(monotonicNanos() - start < 1_000_000_000, "no wait for the step in flight")
        #expect(s.faulty.callCounts == calls && s.faulty.unmapCalls == unmaps, "no driver call")
        #expect((0..<12).allSatisfy { s.memory.isMapped(t, chunk: $0) })
        #expect(s.memory.accounting.retiring == 0 && s.memory.accounting.pendingAliases == pending)
        #expect(s.memory.accounting.realiasedRetiring == 10)
        #expect(s.memory.shareCount(t, chunk: 5) == 2 && s.memory.shareCount(t, chunk: 1) == 2)
        #expect(readsSource(t))
        #expect(backendAgrees(s.memory, s.host) == [])
        s.host.endRead(reader)
        try s.memory.drain()
        #expect(readsSource(t), "nothing was unmapped behind the fence")
        #expect(s.memory.audit { backendAgrees($0, s.host) } == [])

        // All or nothing: a batch with a bad place leaves the slots it would keep retiring.
        reader = try s.host.beginRead(address: t.address(ofChunk: 0), bytes: 12 * testChunk)
        try s.memory.release(t, chunks: Array(0..<10))
        let empty = try s.memory.makeTensor(bytes: testChunk)
        #expect(throws: VTensorError.notMapped(tensor: empty.id, chunk: 0)) { try s.memory.aliasOnGrow(head + [(t, 11, empty, 0)]) }
        #expect(s.memory.accounting.realiasedRetiring == 10)
        #expect((0..<10).allSatisfy { !s.memory.isMapped(t, chunk: $0) } && s.memory.accounting.retiring == 3)
        #expect(s.memory.audit { backendAgrees($0, s.host) } == [])
        s.host.endRead(reader)
        try s.memory.drain()
        try s.memory.free(empty)
        try s.memory.aliasOnGrow(head)
        try s.memory.grow(t, toChunks: 12)
        #expect(readsSource(t))

        // Another chunk for slot 0 (and, where a slab maps in part, half of the run): those wait
        // for the reader, then map; slot 1 (and the whole run) keep their mappings.
        reader = try s.host.beginRead(address: t.address(ofChunk: 0), bytes: 12 * testChunk)
        try s.memory.release(t, chunks: Array(0..<10))
        let ending = reader
        let host = s.host
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) { host.endRead(ending) }
        let waitStart = monotonicNanos()
        try s.memory.aliasOnGrow([(t, 0, s.source, 1), (t, 1, s.source, 1)] + (2..<(parts ? 6 : 10)).map { (t, $0, s.holder, $0) })
        #expect(monotonicNanos() - waitStart >= 50_000_000, "slot 0 waited for the step in flight")
        #expect(s.memory.accounting.realiasedRetiring == (parts ? 11 : 19))
        try s.memory.grow(t, toChunks: 12)
        #expect(load(t.address(ofChunk: 0) + 8) == 1001 && readsSource(t, chunks: 1..<(parts ? 6 : 10)))
        #expect(s.memory.audit { backendAgrees($0, s.host) } == [])
        for tensor in [t, s.source, s.holder] { try s.memory.free(tensor) }
        try s.memory.drain()
        _ = try s.memory.trim(to: 0)
        #expect(s.host.census().liveChunks == 0)
        #expect(s.memory.audit { backendAgrees($0, s.host) } == [])
    }

    /// A slab's chunks that nobody maps are fresh chunks like any other: a tiny budget is filled
    /// with them, each mapped alone at its offset, and the books stay exact.
    @Test func freeSlabChunksServeAsFreshChunks() throws {
        // A high watermark that keeps the free slab in the reserve.
        let s = try setup(budget: 20, high: 20, parts: true)
        try s.memory.free(s.holder)
        try s.memory.drain()
        #expect(s.memory.accounting.inReserve == 8)
        try s.memory.free(s.source)
        try s.memory.drain()
        let t = try s.memory.makeTensor(bytes: 20 * testChunk)
        try s.memory.grow(t, toChunks: 20)
        #expect(s.memory.accounting.created == 20)
        for i in 0..<20 { store(UInt32(i) &* 7, at: t.address(ofChunk: i) + 12) }
        #expect((0..<20).allSatisfy { load(t.address(ofChunk: $0) + 12) == UInt32($0) &* 7 })
        #expect(backendAgrees(s.memory, s.host) == [])
        try s.memory.free(t)
        try s.memory.drain()
        _ = try s.memory.trim(to: 0)
        #expect(s.host.census().liveChunks == 0)
    }

    /// Where slabs map only whole (CUDA): the holder maps its slab as one run, followers map it
    /// whole, and once nobody maps it its chunks are idle, never handed out alone: the next
    /// trim (any, the mapper's after its unmaps too) releases the slab whole, and books and
    /// census agree throughout.
    @Test func aSlabThatMapsOnlyWholeIsReleasedWholeWhenIdle() throws {
        let s = try setup(budget: 24, high: 24)
        try s.memory.drain()
        #expect(s.host.census().runMappings == 1)
        let maps = s.faulty.callCounts[.map, default: 0]
        let a = try follower(s), b = try follower(s)
        #expect(s.faulty.callCounts[.map, default: 0] - maps == 2 * 5)
        #expect(readsSource(a) && readsSource(b))
        for t in [a, b, s.source] { try s.memory.free(t) }
        try s.memory.drain()
        #expect(s.memory.accounting.slabs == 1)
        #expect(s.host.census().runMappings == 1)
        try s.memory.free(s.holder)
        try s.memory.drain()
        #expect(s.memory.accounting.slabs == 0)
        #expect(s.host.census().slabs == 0)
        // The source's ten chunks and the followers' four fresh ones wait in the reserve.
        #expect(s.memory.accounting.inReserve == 14)
        #expect(s.memory.accounting.created == 14)
        #expect(backendAgrees(s.memory, s.host) == [])
        let t = try s.memory.makeTensor(bytes: 24 * testChunk)
        try s.memory.grow(t, toChunks: 24)
        #expect(backendAgrees(s.memory, s.host) == [])
        try s.memory.free(t)
        try s.memory.drain()
        _ = try s.memory.trim(to: 0)
        #expect(s.host.census().liveChunks == 0)
    }

    /// With no room in the budget for the slab, packing declines and changes nothing.
    @Test func packingDeclinesWhenTheBudgetIsFull() throws {
        let s = try setup(budget: 14, pack: false)
        let other = try s.memory.makeTensor(bytes: 4 * testChunk)
        try s.memory.grow(other, toChunks: 4)
        let before = s.memory.accounting
        #expect(try s.memory.packSlab(from: s.source, chunks: 2..<10, into: s.holder) == false)
        #expect(s.memory.accounting == before)
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// A failed slab creation, copy, or run mapping in a follower's grow: an error, nothing
    /// leaked, and the same grow succeeds afterwards.
    @Test(arguments: [FaultInjectingBackend.Operation.create, .copy, .setAccess], [true, false])
    func failuresLeakNothing(failing: FaultInjectingBackend.Operation, parts: Bool) throws {
        let s = try setup(pack: false, parts: parts)
        // A refused copy is retried a chunk at a time (below): refuse those too.
        s.faulty.failNext(failing, times: failing == .copy ? 2 : 1)
        #expect(throws: VTensorError.self) { try s.memory.packSlab(from: s.source, chunks: 2..<10, into: s.holder) }
        try s.memory.drain()
        #expect(s.memory.accounting.pendingAliases == 0)
        #expect(backendAgrees(s.memory, s.host) == [])
        #expect(try s.memory.packSlab(from: s.source, chunks: 2..<10, into: s.holder))
        let t = try s.memory.makeTensor(bytes: 12 * testChunk)
        try s.memory.aliasOnGrow((2..<10).map { (t, $0, s.holder, $0) })
        s.faulty.failNext(.map)
        #expect(throws: VTensorError.self) { try s.memory.grow(t, toChunks: 10) }
        // The holder keeps pending aliases where slabs map in part, the slab mapped otherwise.
        #expect(s.memory.accounting.pendingAliases == (parts ? 16 : 8))
        try s.memory.grow(t, toChunks: 10)
        #expect(readsSource(t, chunks: 2..<10))
        try s.memory.drain()
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// A grow that fails after it mapped a run (a fresh chunk past it refused) undoes the run
    /// whole: the slots are pending aliases again, nothing is mapped, and the grow then succeeds.
    @Test(arguments: [true, false]) func aFailureAfterARunUndoesTheRunWhole(parts: Bool) throws {
        let s = try setup(parts: parts)
        let t = try s.memory.makeTensor(bytes: 12 * testChunk)
        try s.memory.aliasOnGrow((2..<10).map { (t, $0, s.holder, $0) })
        let runs = s.host.census().runMappings
        // Holes in order: 0, 1 (fresh), the run 2..<10, then 10, 11 (fresh): the fourth map fails.
        s.faulty.failNext(.map, after: 3)
        #expect(throws: VTensorError.self) { try s.memory.grow(t, toChunks: 12) }
        #expect(s.host.census().runMappings == runs)
        #expect(s.memory.accounting.pendingAliases == (parts ? 16 : 8))
        #expect(backendAgrees(s.memory, s.host) == [])
        try s.memory.grow(t, toChunks: 12)
        #expect(readsSource(t, chunks: 2..<10))
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// The mapper thread maps a packed prefix as one run even when its slices are shorter than
    /// the run (a run's chunks after the first cost a slice nothing).
    @Test(arguments: [true, false]) func theMapperMapsARunInOneCallWhateverItsSlices(parts: Bool) throws {
        let s = try setup(parts: parts)
        let mapper = AsyncMapper(memory: s.memory, sliceChunks: 2)
        defer { mapper.shutdown() }
        let t = try s.memory.makeTensor(bytes: 12 * testChunk)
        try s.memory.aliasOnGrow((2..<10).map { (t, $0, s.holder, $0) })
        let maps = s.faulty.callCounts[.map, default: 0]
        try mapper.wait(mapper.submit([(t, 12)], priority: 0))
        // Chunks 0 and 1, the run, chunks 10 and 11: five calls.
        #expect(s.faulty.callCounts[.map, default: 0] - maps == 5)
        #expect(readsSource(t, chunks: 2..<10))
        try s.memory.drain()
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// A slab packed from chunks of two tensors (a cached prefix held by two holders): each run
    /// of adjacent source chunks is copied in one call, and a follower reads every chunk right.
    @Test(arguments: [true, false]) func aSlabPackedFromSeveralSources(parts: Bool) throws {
        let s = try setup(pack: false, parts: parts)
        let other = try s.memory.makeTensor(bytes: 12 * testChunk)
        try s.memory.grow(other, toChunks: 10)
        for i in 5..<8 { store(2000 + UInt32(i), at: other.address(ofChunk: i) + 8) }
        let copies = s.faulty.callCounts[.copy, default: 0]
        let sources = (2..<5).map { (s.source, $0) } + (5..<8).map { (other, $0) } + (8..<10).map { (s.source, $0) }
        #expect(try s.memory.packSlab(from: sources, into: s.holder, at: 2))
        #expect(s.faulty.callCounts[.copy, default: 0] - copies == 3)
        let t = try follower(s)
        #expect(readsSource(t, chunks: 0..<5) && readsSource(t, chunks: 8..<10))
        #expect((5..<8).allSatisfy { load(t.address(ofChunk: $0) + 8) == 2000 + UInt32($0) })
        try s.memory.drain()
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// A copy over several allocations that the driver refuses is done again a chunk at a time
    /// (and every copy after it): the pack succeeds and reads right.
    @Test(arguments: [true, false]) func aRefusedRangeCopyIsRetriedAChunkAtATime(parts: Bool) throws {
        let s = try setup(pack: false, parts: parts)
        s.faulty.failNext(.copy)
        let copies = s.faulty.callCounts[.copy, default: 0]
        #expect(try s.memory.packSlab(from: s.source, chunks: 2..<10, into: s.holder))
        #expect(s.faulty.callCounts[.copy, default: 0] - copies == 1 + 8)
        #expect(readsSource(try follower(s)))
        #expect(backendAgrees(s.memory, s.host) == [])
    }

    /// The host backend holds the manager to CUDA's rules for runs.
    @Test func theHostBackendRefusesToCutARun() throws {
        let host = try makeHost()
        let slab = try host.createSlab(chunks: 4)
        let base = try host.reserve(bytes: 4 * testChunk)
        try host.mapRun(slab, at: base)
        #expect(throws: BackendError.self) { try host.unmap(at: base + UInt64(testChunk)) }
        #expect(throws: BackendError.self) { try host.unmap(at: base, chunks: 2) }
        #expect(throws: BackendError.self) { try host.releaseChunk(slab[0]) }
        #expect(throws: BackendError.self) { try host.releaseSlab(slab) }
        #expect(throws: BackendError.self) { try host.mapRun([slab[0], slab[2]], at: base) }
        // CUDA's cuMemMap takes no offset: no chunk of the slab alone, no run of part of it.
        let other = try host.reserve(bytes: 4 * testChunk)
        #expect(throws: BackendError.self) { try host.map(slab[1], at: other) }
        #expect(throws: BackendError.self) { try host.mapRun(Array(slab[0..<2]), at: other) }
        #expect(throws: BackendError.self) { try host.mapRun(Array(slab[1..<4]), at: other) }
        try host.mapRun(slab, at: other)
        try host.unmapRun(at: other, chunks: 4)
        try host.releaseReservation(base: other, bytes: 4 * testChunk)
        try host.unmapRun(at: base, chunks: 4)
        try host.releaseSlab(slab)
        try host.releaseReservation(base: base, bytes: 4 * testChunk)
        #expect(host.census().liveChunks == 0)
    }
}
