/// Exact accounting of the virtual-memory layer, in chunks unless named otherwise.
public struct MemoryAccounting: Equatable, Sendable, Codable {
    public var chunkSize: Int
    public var budgetChunks: Int
    public var lowWatermark: Int
    public var highWatermark: Int
    /// Physical chunks that exist now (= inReserve + inUse + idleSlabChunks).
    public var created: Int
    public var peakCreated: Int
    /// Created but mapped nowhere: the warm reserve.
    public var inReserve: Int
    /// Distinct chunks mapped at least once (retiring mappings included).
    public var inUse: Int
    /// Mappings in all: aliases count once per address.
    public var mappings: Int
    /// Aliases recorded but not mapped yet (`aliasOnGrow`): each holds its chunk, maps nothing.
    public var pendingAliases: Int
    /// Chunks mapped at two or more addresses.
    public var shared: Int
    /// Mappings waiting for a fence before the physical unmap.
    public var retiring: Int
    public var liveTensors: Int
    public var reservedBytes: Int
    /// Address ranges reserved (tensors not yet released, plus the copy-on-write scratch).
    public var reservations: Int
    /// Chunks created and released over the pool's life (cuMemCreate / cuMemRelease calls).
    public var totalCreated: Int
    public var totalReleased: Int
    /// Slabs (allocations of several chunks) alive, and the chunks they hold (counted in
    /// `created` too).
    public var slabs: Int = 0
    public var slabChunks: Int = 0
    /// Mappings of a slab run alive (`mappings` counts their chunks), and runs split into
    /// single mappings so far.
    public var runMappings: Int = 0
    public var runSplits: Int = 0
    /// Prefixes copied into a slab of their own so far (`packSlab`).
    public var packedSlabs: Int = 0
    /// Slots given back but still mapped, waiting for the rest of their run (`Slot.stranded`:
    /// counted in `inUse`), and runs of fresh chunks mapped as one slab so far.
    public var stranded: Int = 0
    public var freshRuns: Int = 0
    /// Chunks of slabs that nobody maps, where slabs map only whole (created = inReserve +
    /// inUse + idleSlabChunks).
    public var idleSlabChunks: Int = 0
    /// Retiring slots aliased again with the chunk they still map, kept mapped so far (no wait
    /// for the device, no driver call).
    public var realiasedRetiring: Int = 0

    public var createdBytes: Int { created * chunkSize }
    public var inUseBytes: Int { inUse * chunkSize }
}

/// How many chunks the pool holds and where they are (a subset of `MemoryAccounting`).
public struct PoolCounts: Equatable, Sendable {
    public var chunkSize: Int
    public var budgetChunks: Int
    /// Physical chunks that exist now (= inReserve + inUse, plus idle slab chunks).
    public var created: Int
    /// Created but mapped nowhere: the warm reserve.
    public var inReserve: Int
    /// Distinct chunks mapped at least once (retiring mappings included).
    public var inUse: Int

    public var createdBytes: Int { created * chunkSize }
}

/// The virtual-memory manager: owns the backend, the elastic chunk pool and every virtual
/// tensor, and keeps their bookkeeping exact. Thread-safe: one lock guards all state.
///
/// The mapper's driver calls (map + set access of growth, the unmaps of reclaim) run outside the
/// lock: the slots are claimed under it (`.mapping`, `.unmapping`), the calls made without it, and
/// the result published under it again. Only operations on a claimed slot (or on the whole tensor
/// that holds one) wait for it; everything else, the engine's bookkeeping above all, goes on.
///
/// Unmapping is deferred: a chunk unmapped from a tensor is first marked retiring with a fence
/// recorded after all device work submitted so far, and is physically unmapped (and its chunk
/// reused) only once that fence completes. No kernel in flight can read an unmapped page.
public final class VirtualMemory: @unchecked Sendable {
    public let backend: any MemoryBackend
    public let chunkSize: Int
    private let lock = ConditionLock()
    fileprivate var pool: ChunkPool
    private var tensors: [Int: VirtualTensor] = [:]
    private var retiring = RetireQueue()
    private var nextTensorID = 1
    private var scratch: VirtualTensor?
    /// Slots in the `.pendingAlias` state, over all tensors.
    private var pendingAliases = 0
    /// Address ranges of freed tensors kept for the next tensors of the same size (a request's
    /// ranges are all one size): a reserve and a release per request would be two driver calls.
    /// Address space only, no memory; given back when the manager goes.
    private var spareRanges: [Int: [UInt64]] = [:]
    private var spareRangeCount = 0
    static let maxSpareRanges = 4096
    /// Slots whose driver call runs outside the lock now, over all tensors.
    private var mappingsInFlight = 0
    private var unmappingsInFlight = 0
    /// Threads asleep in `waitLocked`.
    private var waiters = 0
    /// Runs split into single mappings (`splitRunLocked`), and prefixes packed into slabs.
    private var runSplits = 0
    private var packedSlabs = 0
    /// Slots in the `.stranded` state, over all tensors, and fresh runs mapped as slabs.
    private var strandedCount = 0
    private var freshRuns = 0
    /// Retiring slots aliased again with the chunk they map, kept mapped (`aliasOnGrow`).
    private var realiasedRetiring = 0
    /// The most fresh chunks one grow maps as one slab (a power of two; 0 or 1: every fresh
    /// chunk is an allocation of its own). Where slabs map only whole and the driver's cost is
    /// per allocation mapped (CUDA: ~26 us of set access for one chunk, 49 us for a slab of 32),
    /// a run of fresh slots that the next step writes whole maps as slabs of 32, 16, ... chunks.
    public let freshSlabChunks: Int
    /// A copy over several allocations was refused once: copies go a chunk at a time.
    private var copiesPerChunk = false
    /// Slots claimed per hold of the lock for driver calls made outside it: enough to amortize
    /// the two holds, few enough that an operation waiting on one of them waits briefly.
    static let claimBatch = 8
    /// The same with access granted once per run: the calls a batch makes are mostly maps
    /// (about 1 us each on an H200, against 24 us for a set access), so a batch can be longer, and
    /// a longer batch makes longer runs.
    static let runClaimBatch = 32
    /// Grant access once per run of adjacent chunks a batch maps in one tensor (one
    /// `cuMemSetAccess` over the run) instead of once per chunk. The driver takes a range that
    /// spans several mappings; set access is most of a mapping's cost (docs/perf.md, 2026-11-27).
    public let accessPerRun: Bool
    private var claimBatch: Int { accessPerRun ? Self.runClaimBatch : Self.claimBatch }
    /// Unmap each run of adjacent retired chunks of one tensor in one call, where the backend
    /// takes one (`MemoryBackend.unmapsRuns`), instead of one call a chunk.
    public let unmapPerRun: Bool
    private var unmapBatch: Int { unmapPerRun ? Self.runClaimBatch : Self.claimBatch }

    /// - Parameters:
    ///   - budget: the cap on physical memory held.
    ///   - lowWatermark: chunks the reserve is refilled to ahead of need (default: 16, within budget).
    ///   - highWatermark: chunks above which the reserve is released to the device (default: 4 x low).
    ///   - reuseOrder: which reserve chunk a new mapping takes.
    ///   - accessPerRun: access granted once per run of adjacent chunks mapped together.
    ///   - unmapPerRun: retired chunks unmapped a run at a time where the backend can.
    ///   - freshSlabChunks: the largest slab a run of fresh chunks maps as (nil: the backend's
    ///     `defaultFreshSlabChunks`); only where slabs map only whole (elsewhere 0).
    public init(backend: any MemoryBackend, budget: MemoryBudget, lowWatermark: Int? = nil, highWatermark: Int? = nil,
                reuseOrder: ChunkReuseOrder = .default, accessPerRun: Bool = false, unmapPerRun: Bool = false,
                freshSlabChunks: Int? = nil) throws {
        self.backend = backend
        let fresh = freshSlabChunks ?? backend.defaultFreshSlabChunks
        guard fresh >= 0 else { throw VTensorError.invalidSize("fresh slab chunks must be at least 0, got \(fresh)") }
        // The largest power of two within the request; slabs only where they map only whole.
        self.freshSlabChunks = backend.makesSlabs && !backend.mapsSlabParts && fresh > 1 ? 1 << (Int.bitWidth - 1 - fresh.leadingZeroBitCount) : 0
        self.accessPerRun = accessPerRun
        self.unmapPerRun = unmapPerRun && backend.unmapsRuns
        self.chunkSize = backend.chunkSize
        let budgetBytes = try budget.bytes(free: try backend.freePhysicalBytes(), total: backend.totalPhysicalBytes, device: backend.name)
        let budgetChunks = budgetBytes / backend.chunkSize
        guard budgetChunks > 0 else {
            throw VTensorError.invalidBudget("\(budgetBytes) bytes is less than one \(backend.chunkSize)-byte chunk")
        }
        let low = lowWatermark ?? min(16, budgetChunks)
        let high = highWatermark ?? min(max(4 * low, low), budgetChunks)
        guard low >= 0, low <= high, high <= budgetChunks else {
            throw VTensorError.invalidWatermarks("need 0 <= low (\(low)) <= high (\(high)) <= budget (\(budgetChunks) chunks)")
        }
        pool = ChunkPool(backend: backend, budgetChunks: budgetChunks, lowWatermark: low, highWatermark: high, reuseOrder: reuseOrder,
                         wholeSlabsOnly: !backend.mapsSlabParts)
        pool.reusableSlabChunks = self.freshSlabChunks
    }

    deinit {
        // Best effort: return everything to the device. Live tensors' memory goes too.
        lock.withLock {
            for entry in retiring.entries { try? backend.wait(entry.tensor.fence(at: entry.index)) }
            for tensor in tensors.values { releaseAllLocked(tensor) }
            if let scratch { releaseAllLocked(scratch) }
            releaseSpareRangesLocked()
            _ = try? pool.trim(to: 0)
        }
    }

    // MARK: Tensors

    /// Reserves a tensor of at least `bytes` (rounded up to whole chunks). Nothing is mapped.
    public func makeTensor(bytes: Int) throws -> VirtualTensor {
        guard bytes > 0 else { throw VTensorError.invalidSize("a tensor needs a positive size, got \(bytes)") }
        let chunks = (bytes + chunkSize - 1) / chunkSize
        let spare = lock.withLock { () -> UInt64? in
            guard let base = spareRanges[chunks * chunkSize]?.popLast() else { return nil }
            spareRangeCount -= 1
            return base
        }
        let base: UInt64
        if let spare {
            base = spare
        } else {
            do { base = try backend.reserve(bytes: chunks * chunkSize) } catch { throw VTensorError.from(error) }
        }
        return lock.withLock {
            let tensor = VirtualTensor(id: nextTensorID, base: base, chunkCount: chunks, chunkSize: chunkSize)
            nextTensorID += 1
            tensors[tensor.id] = tensor
            return tensor
        }
    }

    /// Maps a fresh chunk at chunk `index`.
    public func map(_ tensor: VirtualTensor, chunk index: Int) throws {
        try lock.withLock {
            waitLocked { slotInFlight(tensor, index) || onlyUnmapsCanFree }
            try checkLive(tensor, index)
            try mapFreshLocked(tensor, index)
        }
    }

    /// Maps a fresh chunk at byte `offset`, which must be chunk-aligned.
    public func map(_ tensor: VirtualTensor, offset: Int) throws {
        guard offset % chunkSize == 0 else { throw VTensorError.misalignedOffset(offset: offset, chunkSize: chunkSize) }
        try map(tensor, chunk: offset / chunkSize)
    }

    /// Maps the physical chunk behind `source`'s chunk `sourceIndex` at `tensor`'s chunk
    /// `index` too: zero-copy sharing. The chunk lives until no tensor maps it.
    public func alias(_ tensor: VirtualTensor, chunk index: Int, from source: VirtualTensor, chunk sourceIndex: Int) throws {
        try lock.withLock {
            waitLocked { slotInFlight(tensor, index) || slotInFlight(source, sourceIndex) }
            let chunk = try aliasSourceLocked(tensor, index, source, sourceIndex)
            try mapChunkLocked(chunk, tensor, index)
            pool.addReference(chunk)
        }
    }

    /// Records that `tensor`'s chunk `index` is to alias the physical chunk behind `source`'s
    /// chunk `sourceIndex` (mapped there, or itself a pending alias), without a driver call: the
    /// slot takes a reference on the chunk now (it stays alive whatever `source` does next) and
    /// the next grow over the slot maps it (on the mapper thread, for the engine's growth jobs).
    /// The address holds nothing readable until then.
    public func aliasOnGrow(_ tensor: VirtualTensor, chunk index: Int, from source: VirtualTensor, chunk sourceIndex: Int) throws {
        try aliasOnGrow([(tensor, index, source, sourceIndex)])
    }

    /// `aliasOnGrow` for many slots under one hold of the lock. All or nothing.
    ///
    /// A slot still mapped but retiring (given back, its unmap waiting for the device to finish
    /// reading it) that is to alias the very chunk it maps keeps its mapping instead: no wait for
    /// the device, no driver call. A conversation's next round takes its range over and aliases
    /// again the shared head its last round gave back, often while the step that read it runs.
    public func aliasOnGrow(_ places: [(tensor: VirtualTensor, index: Int, source: VirtualTensor, sourceIndex: Int)]) throws {
        try lock.withLock {
            waitLocked { places.contains { slotInFlight($0.tensor, $0.index) || slotInFlight($0.source, $0.sourceIndex) } }
            let kept = retiringRealiasedLocked(places)
            for (tensor, index, source, sourceIndex) in places where kept.slots.contains(SlotKey(tensor, index)) {
                try checkLive(tensor, index)
                try checkLive(source, sourceIndex)
            }
            // Taken back first: settling another slot completes whatever retirements are done.
            // The retiring slots' references become the aliases' own.
            for (tensor, first) in kept.entries { retiring.remove(tensor, first) }
            for (tensor, index, _, _) in places where kept.slots.contains(SlotKey(tensor, index)) {
                guard case .retiring(let chunk, _) = tensor.slots[index] else { preconditionFailure("a slot kept is not retiring") }
                tensor.setSlot(index, .mapped(chunk))
            }
            var done = 0
            do {
                for (tensor, index, source, sourceIndex) in places where !kept.slots.contains(SlotKey(tensor, index)) {
                    let chunk = try aliasSourceLocked(tensor, index, source, sourceIndex)
                    tensor.setSlot(index, .pendingAlias(chunk))
                    pool.addReference(chunk)
                    pendingAliases += 1
                    done += 1
                }
            } catch {
                // All or nothing: the pending ones go, the ones kept retire again.
                let pending = places.filter { !kept.slots.contains(SlotKey($0.tensor, $0.index)) }
                for (tensor, index, _, _) in pending.prefix(done) { dropPendingLocked(tensor, indices: [index]) }
                for (tensor, first) in kept.entries {
                    let indices = tensor.runs.run(containing: first).map(Array.init) ?? [first]
                    try? retireLocked(tensor, indices: indices)
                }
                throw error
            }
            realiasedRetiring += kept.slots.count
        }
    }

    /// Of `places`, the retiring slots that alias the chunk they still map, by whole retirements
    /// (a run retires, and comes back, whole): their retire-queue entries and their slots.
    private func retiringRealiasedLocked(_ places: [(tensor: VirtualTensor, index: Int, source: VirtualTensor, sourceIndex: Int)])
        -> (entries: [(VirtualTensor, Int)], slots: Set<SlotKey>) {
        var same = Set<SlotKey>(), twice = Set<SlotKey>()
        for (tensor, index, source, sourceIndex) in places {
            guard index >= 0, index < tensor.chunkCount, sourceIndex >= 0, sourceIndex < source.chunkCount, !tensor.isFreed,
                  case .retiring(let held, _) = tensor.slots[index], source.slots[sourceIndex].heldChunk == held else { continue }
            if !same.insert(SlotKey(tensor, index)).inserted { twice.insert(SlotKey(tensor, index)) }
        }
        // A slot named twice is the caller's error, reported as before (already mapped).
        same.subtract(twice)
        guard !same.isEmpty else { return ([], []) }
        var entries: [(VirtualTensor, Int)] = []
        var slots = Set<SlotKey>()
        var seenRuns = Set<SlotKey>()
        for (tensor, index, _, _) in places where same.contains(SlotKey(tensor, index)) {
            guard let run = tensor.runs.run(containing: index) else {
                entries.append((tensor, index))
                slots.insert(SlotKey(tensor, index))
                continue
            }
            guard seenRuns.insert(SlotKey(tensor, run.lowerBound)).inserted, run.allSatisfy({ same.contains(SlotKey(tensor, $0)) }) else { continue }
            entries.append((tensor, run.lowerBound))
            for i in run { slots.insert(SlotKey(tensor, i)) }
        }
        return (entries, slots)
    }

    /// Unmaps chunk `index` once in-flight device work is done with it (a pending alias is
    /// simply dropped: nothing was mapped).
    public func unmap(_ tensor: VirtualTensor, chunk index: Int) throws {
        try lock.withLock {
            waitLocked { slotInFlight(tensor, index) }
            try checkLive(tensor, index)
            if case .pendingAlias = tensor.slots[index] { return dropPendingLocked(tensor, indices: [index]) }
            guard case .mapped = tensor.slots[index] else { throw VTensorError.notMapped(tensor: tensor.id, chunk: index) }
            try retireLocked(tensor, indices: [index])
        }
    }

    /// Ensures chunks `0..<chunks` of each tensor are mapped. All or nothing: if any mapping
    /// fails, the chunks this call mapped are unmapped again (no kernel has seen them) and the
    /// error is rethrown; other tensors are untouched. The lock is taken per chunk, so a long
    /// grow on the mapper thread does not stall the engine.
    public func grow(_ targets: [(tensor: VirtualTensor, chunks: Int)], onChunkMapped: ((UInt64) -> Void)? = nil) throws {
        try mapHoles(try holes(in: targets)[...], onChunkMapped: onChunkMapped)
    }

    /// The unmapped chunks among `0..<chunks` of each tensor, in order: the work a grow does.
    /// `skippingFreed`: a freed tensor has no holes (the mapper's queued jobs: growth of a request
    /// that left meanwhile is moot) instead of an error.
    public func holes(in targets: [(tensor: VirtualTensor, chunks: Int)], skippingFreed: Bool = false) throws -> [(tensor: VirtualTensor, index: Int)] {
        try lock.withLock {
            var holes: [(tensor: VirtualTensor, index: Int)] = []
            for (tensor, chunks) in targets {
                if tensor.isFreed && skippingFreed { continue }
                guard chunks <= tensor.chunkCount else {
                    throw VTensorError.capacityExceeded("tensor \(tensor.id) spans \(tensor.chunkCount) chunks; \(chunks) requested")
                }
                guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
                if tensor.isSealed { continue }
                // From the slots known mapped on (a decode row's job covers every chunk the row
                // maps, every step), with one read of the slot table, not one a slot.
                let slots = tensor.slots
                var leading = min(tensor.leadingMapped, chunks)
                while leading < chunks, case .mapped = slots[leading] { leading += 1 }
                tensor.noteLeadingMapped(leading)
                for index in leading..<chunks {
                    if case .mapped = slots[index] { continue }
                    holes.append((tensor, index))
                }
            }
            return holes
        }
    }

    /// Maps a fresh chunk at each listed place not mapped yet (a pending alias's chunk where the
    /// slot holds one). All or nothing, like `grow`.
    ///
    /// The driver calls run outside the lock, a few chunks at a time: the slots are claimed under
    /// it (`.mapping`, with the chunk's reference), mapped without it, then published. The engine's
    /// bookkeeping (hundreds of short holds a step with the prefix cache) no longer queues behind
    /// a map and a set access, which take 20-40 us each on a GPU. A claimed slot is never waited
    /// for while this call holds claims of its own, so two callers never wait for each other.
    public func mapHoles(_ holes: ArraySlice<(tensor: VirtualTensor, index: Int)>, skippingFreed: Bool = false,
                         onChunkMapped: ((UInt64) -> Void)? = nil) throws {
        // What this call mapped, and how: undone in reverse if a later mapping fails.
        var mapped: [(tensor: VirtualTensor, index: Int, kind: MappedKind)] = []
        var next = holes.startIndex
        do {
            while next < holes.endIndex {
                var claims: [Claim] = []
                // An error while claiming ends the batch; the claims made are settled first.
                var failure: (any Error)? = lock.withLock {
                    do {
                        try claimHolesLocked(holes, from: &next, skippingFreed: skippingFreed, into: &claims, mapped: &mapped)
                        return nil
                    } catch { return error }
                }
                var done = 0
                if failure == nil {
                    (done, failure) = mapOutsideLock(claims, onChunkMapped: onChunkMapped)
                }
                lock.withLock { publishLocked(claims, mappedCount: done, into: &mapped) }
                if let failure { throw VTensorError.from(failure) }
            }
        } catch {
            lock.withLock { undoLocked(mapped) }
            throw error
        }
    }

    /// Where a slice of `holes` from `start` that makes about `calls` driver calls ends: a
    /// pending alias that continues the hole before it in one slab run costs no call of its own
    /// (the run maps in one), so a slice never cuts a packed prefix into several runs.
    public func sliceEnd(_ holes: [(tensor: VirtualTensor, index: Int)], from start: Int, calls: Int) -> Int {
        lock.withLock {
            var end = start, made = 0, freshLength = 0
            var previous: PhysicalChunk?
            while end < holes.count {
                let (tensor, index) = holes[end]
                var chunk: PhysicalChunk?
                if index < tensor.chunkCount, case .pendingAlias(let held) = tensor.slots[index] { chunk = held }
                let adjacent = end > start && holes[end - 1].tensor === tensor && holes[end - 1].index + 1 == index
                var continues = adjacent && chunk != nil && previous.map { pool.follows(chunk!, $0) } == true
                // A run of fresh slots that maps as one slab (see `claimHolesLocked`).
                let fresh = freshSlabChunks > 1 && index < tensor.chunkCount && index < tensor.wholeWritesBelow && tensor.slots[index] == .empty
                if fresh && adjacent && freshLength > 0 && freshLength < freshSlabChunks {
                    continues = true
                    freshLength += 1
                } else {
                    freshLength = fresh ? 1 : 0
                }
                if !continues {
                    if made == calls { break }
                    made += 1
                }
                previous = chunk
                end += 1
            }
            return end
        }
    }

    /// A slot claimed for a mapping made outside the lock, and the chunk it gets. `continuesRun`:
    /// its chunk follows the previous claim's in one slab, at the next slot, so both are mapped
    /// by one `mapRun` (a cached prefix packed into a slab, aliased here).
    private struct Claim {
        var tensor: VirtualTensor
        var index: Int
        var chunk: PhysicalChunk
        var continuesRun = false
    }

    /// Whether slot `index` of `tensor`, a pending alias, continues `last`'s slab run.
    private func continuesRunLocked(_ last: Claim?, _ tensor: VirtualTensor, _ index: Int) -> Bool {
        guard let last, last.tensor === tensor, last.index + 1 == index,
              case .mapping(_, fromPending: true) = tensor.slots[last.index],
              case .pendingAlias(let chunk) = tensor.slots[index] else { return false }
        return pool.follows(chunk, last.chunk)
    }

    /// Claims the holes from `next` on, up to `claimBatch`, advancing `next` past each hole
    /// settled: a mapped, sealed or (when skipping) freed one is passed by, a retiring chunk
    /// taken back is mapped at once (into `mapped`), the others are claimed. Stops early at a slot
    /// in flight once it holds a claim, and waits for it otherwise.
    private func claimHolesLocked(_ holes: ArraySlice<(tensor: VirtualTensor, index: Int)>, from next: inout Int,
                                  skippingFreed: Bool, into claims: inout [Claim],
                                  mapped: inout [(tensor: VirtualTensor, index: Int, kind: MappedKind)]) throws {
        // A batch counts driver calls: the slots of a slab run beyond its first are free.
        var calls = 0
        // Slots claimed ahead of the holes, with the rest of their slab (slabs mapped only whole).
        var claimedAhead = Set<SlotKey>()
        while next < holes.endIndex {
            let (tensor, index) = holes[next]
            if !claimedAhead.isEmpty, claimedAhead.contains(SlotKey(tensor, index)) {
                next += 1
                continue
            }
            let continuing = continuesRunLocked(claims.last, tensor, index)
            if calls >= claimBatch && !continuing { return }
            if tensor.isFreed && skippingFreed {
                next += 1
                continue
            }
            let needsFreshChunk: Bool
            switch tensor.slots[index] {
            case .empty: needsFreshChunk = true
            case .retiring(let held, _): needsFreshChunk = !(canTakeBackLocked(tensor, index, held))
            default: needsFreshChunk = false
            }
            if slotInFlight(tensor, index) || (needsFreshChunk && onlyUnmapsCanFree) {
                if !claims.isEmpty { return }
                waitLocked { slotInFlight(tensor, index) || (needsFreshChunk && onlyUnmapsCanFree) }
                continue
            }
            next += 1
            guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
            if tensor.isSealed { continue }
            let chunk: PhysicalChunk
            switch tensor.slots[index] {
            case .mapped:
                continue
            case .pendingAlias(let held):
                chunk = held
                tensor.setSlot(index, .mapping(held, fromPending: true))
                pendingAliases -= 1
            case .retiring(let held, _) where !needsFreshChunk:
                // As in `mapFreshLocked`: serves as the fresh chunk, with no driver call.
                retiring.remove(tensor, index)
                tensor.setSlot(index, .mapped(held))
                pool.forgetContent(held)
                mapped.append((tensor, index, .takenBack))
                continue
            case .stranded:
                try unstrandLocked(tensor, index)
                mapped.append((tensor, index, .unstranded))
                continue
            case .empty where freshSlabChunks > 1 && index + 1 < tensor.wholeWritesBelow:
                let length = freshRunLengthLocked(holes, from: next - 1)
                if length > 1, let chunks = freshSlabLocked(length) {
                    for (offset, chunk) in chunks.enumerated() {
                        pool.addReference(chunk)
                        tensor.setSlot(index + offset, .mapping(chunk, fromPending: false))
                        tensor.mappingsInFlight += 1
                        mappingsInFlight += 1
                        claims.append(Claim(tensor: tensor, index: index + offset, chunk: chunk, continuesRun: offset > 0))
                    }
                    next += chunks.count - 1
                    calls += 1
                    freshRuns += 1
                    continue
                }
                chunk = try takeChunkLocked()
                pool.addReference(chunk)
                tensor.setSlot(index, .mapping(chunk, fromPending: false))
            case .empty, .retiring:
                try settleLocked(tensor, index)
                guard tensor.slots[index] == .empty else { throw VTensorError.alreadyMapped(tensor: tensor.id, chunk: index) }
                chunk = try takeChunkLocked()
                pool.addReference(chunk)
                tensor.setSlot(index, .mapping(chunk, fromPending: false))
            case .mapping, .unmapping:
                preconditionFailure("a slot in flight was claimed")
            }
            tensor.mappingsInFlight += 1
            mappingsInFlight += 1
            claims.append(Claim(tensor: tensor, index: index, chunk: chunk, continuesRun: continuing))
            if !continuing { calls += 1 }
            if !continuing, pool.mapsOnlyWithItsSlab(chunk) {
                try claimRestOfSlabLocked(tensor, after: index, into: &claims, ahead: &claimedAhead)
            }
        }
    }

    /// A tensor slot, as a set member.
    private struct SlotKey: Hashable {
        let tensor: ObjectIdentifier
        let index: Int
        init(_ tensor: VirtualTensor, _ index: Int) { self.tensor = ObjectIdentifier(tensor); self.index = index }
    }

    /// Where slabs map only whole: the claim just made at `index` (a pending alias of a slab's
    /// first chunk) takes the slab's other chunks, pending at the slots after it, into the same
    /// run, whether or not the holes list reaches them. A tensor that holds part of a slab
    /// cannot map it: an error, which the callers' undo turns back.
    private func claimRestOfSlabLocked(_ tensor: VirtualTensor, after index: Int, into claims: inout [Claim], ahead: inout Set<SlotKey>) throws {
        let (run, chunks) = try pendingSlabRunLocked(tensor, at: index, holding: claims.last!.chunk, claimed: true)
        guard run.lowerBound == index else {
            throw VTensorError.backend(operation: "map", message: "\(tensor) holds a slab at slots \(run) whose first slots are not pending; a slab maps only whole here")
        }
        for (slot, chunk) in zip(run, chunks).dropFirst() {
            tensor.setSlot(slot, .mapping(chunk, fromPending: true))
            pendingAliases -= 1
            tensor.mappingsInFlight += 1
            mappingsInFlight += 1
            claims.append(Claim(tensor: tensor, index: slot, chunk: chunk, continuesRun: true))
            ahead.insert(SlotKey(tensor, slot))
        }
    }

    /// How many of `holes` from `start` on are adjacent empty slots of one tensor, out of
    /// flight, below its `wholeWritesBelow` (at most `freshSlabChunks`): a run a fresh slab can
    /// fill.
    private func freshRunLengthLocked(_ holes: ArraySlice<(tensor: VirtualTensor, index: Int)>, from start: Int) -> Int {
        let (tensor, first) = holes[start]
        var length = 1
        while length < freshSlabChunks, start + length < holes.endIndex {
            let (next, index) = holes[start + length]
            guard next === tensor, index == first + length, index < tensor.wholeWritesBelow, tensor.slots[index] == .empty else { break }
            length += 1
        }
        return length
    }

    /// A slab for `length` adjacent fresh slots (at least two): the largest power of two
    /// within it, idle or made under the budget; nil when none can be had (the slot then
    /// takes a chunk of its own).
    private func freshSlabLocked(_ length: Int) -> [PhysicalChunk]? {
        let count = 1 << (Int.bitWidth - 1 - length.leadingZeroBitCount)
        // A slab is only cheaper: a device that cannot make one now (no room for it in one
        // piece) still gives single chunks.
        return try? pool.takeIdleOrNewSlab(count)
    }

    /// Takes back a stranded slot for its tensor (a grow over it): the chunk is mapped there
    /// already and nobody else maps it, so it serves as the fresh chunk with no driver call. A
    /// chunk another tensor maps too cannot take writes: `makePrivate` must copy the run first.
    private func unstrandLocked(_ tensor: VirtualTensor, _ index: Int) throws {
        guard case .stranded(let chunk) = tensor.slots[index] else { preconditionFailure("slot \(index) of \(tensor) is not stranded") }
        guard pool.referenceCount(chunk) == 1 else {
            throw VTensorError.backend(operation: "map", message: "\(tensor) chunk \(index), given back inside a run, is mapped elsewhere too; copy it on write first (makePrivate)")
        }
        tensor.setSlot(index, .mapped(chunk))
        pool.forgetContent(chunk)
        strandedCount -= 1
    }

    /// The slots of `tensor` that the whole slab of `chunk` (held at slot `index`) must occupy,
    /// and the slab's chunks in order; an error unless every one of them holds its chunk as a
    /// pending alias, out of flight (slot `index` itself may be claimed already).
    private func pendingSlabRunLocked(_ tensor: VirtualTensor, at index: Int, holding chunk: PhysicalChunk,
                                      claimed: Bool = false) throws -> (run: Range<Int>, chunks: [PhysicalChunk]) {
        guard let place = pool.slabPlace(chunk) else { return (index..<(index + 1), [chunk]) }
        let run = (index - place.index)..<(index - place.index + place.count)
        guard run.lowerBound >= 0, run.upperBound <= tensor.chunkCount else {
            throw VTensorError.backend(operation: "map", message: "\(tensor) holds chunk \(place.index) of a slab of \(place.count) at slot \(index): the slab does not fit there, and it maps only whole")
        }
        let chunks = try run.map { slot -> PhysicalChunk in
            if claimed && slot == index { return chunk }
            guard !slotInFlight(tensor, slot), case .pendingAlias(let held) = tensor.slots[slot],
                  let other = pool.slabPlace(held), other.slab == place.slab, other.index == slot - run.lowerBound else {
                throw VTensorError.backend(operation: "map", message: "\(tensor) holds part of a slab of \(place.count) at slots \(run); a slab maps only whole here")
            }
            return held
        }
        return (run, chunks)
    }

    /// Where the driver call that maps `claims[start]` ends (exclusive), and whether it is one
    /// `mapRun` of a slab: a slab run; else, with access granted per run, adjacent single
    /// chunks of one tensor up to the next slab run; else the one chunk.
    private func callEnd(_ claims: [Claim], from start: Int) -> (end: Int, slabRun: Bool) {
        var end = start + 1
        if end < claims.count && claims[end].continuesRun {
            while end < claims.count && claims[end].continuesRun { end += 1 }
            return (end, true)
        }
        guard accessPerRun else { return (end, false) }
        while end < claims.count, claims[end].tensor === claims[start].tensor, claims[end].index == claims[end - 1].index + 1,
              !(end + 1 < claims.count && claims[end + 1].continuesRun) {
            end += 1
        }
        return (end, false)
    }

    /// Whether a retiring mapping at `tensor`'s slot `index` can serve as its fresh chunk at once:
    /// work runs in order, nobody else maps the chunk, and it is not part of a run (which
    /// unmaps whole).
    private func canTakeBackLocked(_ tensor: VirtualTensor, _ index: Int, _ held: PhysicalChunk) -> Bool {
        backend.ordersWork && pool.referenceCount(held) == 1 && tensor.runs.run(containing: index) == nil
    }

    /// Map + set access for claimed slots, in order, without the lock, one driver call at a time
    /// (`callEnd`): a slab run is one `mapRun` and one set access; single chunks are mapped one by
    /// one, access granted per chunk or over the run of them. Returns how many leading claims
    /// are mapped, and the error that stopped it, if any (the failed call's own mappings are undone).
    private func mapOutsideLock(_ claims: [Claim], onChunkMapped: ((UInt64) -> Void)?) -> (done: Int, error: (any Error)?) {
        var runStart = 0
        while runStart < claims.count {
            let (runEnd, slabRun) = callEnd(claims, from: runStart)
            let start = onChunkMapped == nil ? 0 : monotonicNanos()
            let base = claims[runStart].tensor.address(ofChunk: claims[runStart].index)
            var mapped = 0
            var failure: (any Error)?
            if slabRun {
                do {
                    try backend.mapRun(claims[runStart..<runEnd].map(\.chunk), at: base)
                    mapped = runEnd - runStart
                } catch { failure = error }
            } else {
                for claim in claims[runStart..<runEnd] {
                    do {
                        try backend.map(claim.chunk, at: claim.tensor.address(ofChunk: claim.index))
                        mapped += 1
                    } catch {
                        failure = error
                        break
                    }
                }
            }
            if failure == nil {
                do {
                    try backend.setAccess(at: base, bytes: (runEnd - runStart) * chunkSize)
                } catch { failure = error }
            }
            if let failure {
                if slabRun {
                    if mapped > 0 { try? backend.unmapRun(at: base, chunks: mapped) }
                } else {
                    for claim in claims[runStart..<(runStart + mapped)] {
                        try? backend.unmap(at: claim.tensor.address(ofChunk: claim.index))
                    }
                }
                return (runStart, failure)
            }
            if let onChunkMapped {
                let each = (monotonicNanos() - start) / UInt64(runEnd - runStart)
                for _ in runStart..<runEnd { onChunkMapped(each) }
            }
            runStart = runEnd
        }
        return (claims.count, nil)
    }

    /// Ends the claims: the first `mappedCount` are mapped now, the rest go back to what they were
    /// (a pending alias again, or empty with the chunk back in the pool). Wakes waiters.
    private func publishLocked(_ claims: [Claim], mappedCount: Int, into mapped: inout [(tensor: VirtualTensor, index: Int, kind: MappedKind)]) {
        // Slab runs mapped whole (a call maps all of its claims or none) are recorded.
        var first = 0
        while first < mappedCount {
            var end = first + 1
            while end < mappedCount && claims[end].continuesRun { end += 1 }
            if end - first > 1 { claims[first].tensor.runs.add(claims[first].index..<(claims[first].index + end - first)) }
            first = end
        }
        for (k, claim) in claims.enumerated() {
            let (tensor, index, chunk) = (claim.tensor, claim.index, claim.chunk)
            guard case .mapping(_, let fromPending) = tensor.slots[index] else { preconditionFailure("a claimed slot changed") }
            tensor.mappingsInFlight -= 1
            mappingsInFlight -= 1
            if k < mappedCount {
                tensor.setSlot(index, .mapped(chunk))
                mapped.append((tensor, index, fromPending ? .pending : .fresh))
            } else if fromPending {
                tensor.setSlot(index, .pendingAlias(chunk))
                pendingAliases += 1
            } else {
                tensor.setSlot(index, .empty)
                pool.dropReference(chunk)
            }
        }
        wakeWaitersLocked()
    }

    /// Undoes a failed `mapHoles`' mappings, newest first.
    private func undoLocked(_ mapped: [(tensor: VirtualTensor, index: Int, kind: MappedKind)]) {
        for (tensor, index, kind) in mapped.reversed() where !tensor.isFreed {
            waitLocked { slotInFlight(tensor, index) }
            guard case .mapped(let chunk) = tensor.slots[index] else { continue }
            switch kind {
            case .takenBack:
                // Kernels queued before may still read it: retire it again behind a fence.
                try? retireLocked(tensor, indices: [index])
            case .pending:
                // Never handed to a kernel: safe to unmap without a fence. A slab run goes whole.
                if let run = tensor.runs.run(containing: index) {
                    try? backend.unmapRun(at: tensor.address(ofChunk: run.lowerBound), chunks: run.count)
                    tensor.runs.remove(run)
                    for i in run {
                        guard let held = tensor.slots[i].heldChunk else { preconditionFailure("a run's slot is not mapped") }
                        tensor.setSlot(i, .pendingAlias(held))
                        pendingAliases += 1
                    }
                    continue
                }
                try? backend.unmap(at: tensor.address(ofChunk: index))
                tensor.setSlot(index, .pendingAlias(chunk))
                pendingAliases += 1
            case .fresh:
                // Never handed to a kernel: a fresh run goes whole, at once.
                if let run = tensor.runs.run(containing: index) {
                    try? backend.unmapRun(at: tensor.address(ofChunk: run.lowerBound), chunks: run.count)
                    tensor.runs.remove(run)
                    for i in run {
                        guard let held = tensor.slots[i].heldChunk else { preconditionFailure("a run's slot is not mapped") }
                        tensor.setSlot(i, .empty)
                        pool.dropReference(held)
                    }
                    continue
                }
                try? backend.unmap(at: tensor.address(ofChunk: index))
                tensor.setSlot(index, .empty)
                pool.dropReference(chunk)
            case .unstranded:
                try? retireLocked(tensor, indices: [index])
            }
        }
    }

    /// How `mapHoles` filled a slot, for undoing it.
    private enum MappedKind { case fresh, pending, takenBack, unstranded }

    public func grow(_ tensor: VirtualTensor, toChunks chunks: Int) throws {
        try grow([(tensor, chunks)])
    }

    /// Declares that each tensor's slots below `below` that are not mapped now will be written
    /// whole (every byte) before anything reads them (the next step's new tokens fill them), so
    /// a grow may map them as runs of one fresh slab (`freshSlabChunks`). Replaces what was
    /// declared before (a truncation lowers it).
    public func setWholeWrites(_ targets: [(tensor: VirtualTensor, below: Int)]) {
        guard freshSlabChunks > 1 else { return }
        lock.withLock {
            for (tensor, below) in targets { tensor.wholeWritesBelow = max(0, below) }
        }
    }

    /// Closes `tensor` to new mappings (its mapped chunks stay until unmapped or freed): growth
    /// queued for it, on the mapper thread too, passes it by.
    public func seal(_ tensor: VirtualTensor) throws {
        try lock.withLock {
            guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
            tensor.isSealed = true
        }
    }

    /// Maps `tensor`'s pending aliases now, sealed or not (tests read a prefix cache's holders).
    public func mapPendingAliases(_ tensor: VirtualTensor) throws {
        try lock.withLock {
            waitLocked { tensor.mappingsInFlight > 0 }
            guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
            for index in 0..<tensor.chunkCount {
                guard case .pendingAlias(let chunk) = tensor.slots[index] else { continue }
                try mapPendingLocked(chunk, tensor, index)
            }
        }
    }

    /// Maps the pending alias `chunk` at `tensor`'s slot `index`: alone, or, where slabs map
    /// only whole, with the rest of its slab (pending at the slots around it) as one run.
    private func mapPendingLocked(_ chunk: PhysicalChunk, _ tensor: VirtualTensor, _ index: Int) throws {
        guard pool.mapsOnlyWithItsSlab(chunk) else {
            try mapChunkLocked(chunk, tensor, index)
            pendingAliases -= 1
            return
        }
        guard let (run, chunks) = try? pendingSlabRunLocked(tensor, at: index, holding: chunk) else {
            return try copyOutPendingLocked(chunk, tensor, index)
        }
        let base = tensor.address(ofChunk: run.lowerBound)
        do {
            try backend.mapRun(chunks, at: base)
        } catch { throw VTensorError.from(error) }
        do {
            try backend.setAccess(at: base, bytes: chunks.count * chunkSize)
        } catch {
            try? backend.unmapRun(at: base, chunks: chunks.count)
            throw VTensorError.from(error)
        }
        for (slot, held) in zip(run, chunks) { tensor.setSlot(slot, .mapped(held)) }
        tensor.runs.add(run)
        pendingAliases -= chunks.count
    }

    /// Where slabs map only whole: the pending alias `chunk` at `tensor`'s slot `index`, part of
    /// a slab the tensor does not hold whole there (a holder that kept part of a request's fresh
    /// run), becomes a private copy: the slab is mapped whole in a scratch range (an allocation
    /// maps at several places at once), the chunk copied into a fresh chunk mapped at the slot,
    /// and the scratch mapping goes once the copy is done. Costs one chunk of the budget (the
    /// slab's chunk is then this slot's no more) and a device wait.
    private func copyOutPendingLocked(_ chunk: PhysicalChunk, _ tensor: VirtualTensor, _ index: Int) throws {
        guard let place = pool.slabPlace(chunk), let slab = pool.slabChunks(place.slab) else { preconditionFailure("\(chunk) is in no slab") }
        let bytes = slab.count * chunkSize
        let base: UInt64
        do { base = try backend.reserve(bytes: bytes) } catch { throw VTensorError.from(error) }
        defer { try? backend.releaseReservation(base: base, bytes: bytes) }
        do {
            try backend.mapRun(slab, at: base)
        } catch { throw VTensorError.from(error) }
        defer { try? backend.unmapRun(at: base, chunks: slab.count) }
        let fresh = try takeChunkLocked()
        let address = tensor.address(ofChunk: index)
        do {
            try backend.setAccess(at: base, bytes: bytes)
            try backend.map(fresh, at: address)
        } catch {
            pool.giveBack(fresh)
            throw VTensorError.from(error)
        }
        do {
            try backend.setAccess(at: address, bytes: chunkSize)
            try backend.copy(from: base + UInt64(place.index * chunkSize), to: address, bytes: chunkSize)
            // The scratch mapping goes (deferred above) only after the copy has read it.
            try backend.wait(try backend.recordFence())
        } catch {
            try? backend.unmap(at: address)
            pool.giveBack(fresh)
            throw VTensorError.from(error)
        }
        tensor.setSlot(index, .mapped(fresh))
        pool.addReference(fresh)
        pool.inheritContent(fresh, from: chunk)
        pool.dropReference(chunk)
        pendingAliases -= 1
        runSplits += 1
    }

    /// Maps `tensor`'s pending alias at slot `index` now, alone (a packed holder's boundary
    /// chunk, the source of copies); a slot that holds no pending alias is left as it is.
    public func mapPendingAlias(_ tensor: VirtualTensor, chunk index: Int) throws {
        try lock.withLock {
            waitLocked { slotInFlight(tensor, index) }
            try checkLive(tensor, index)
            guard case .pendingAlias(let chunk) = tensor.slots[index] else { return }
            try mapPendingLocked(chunk, tensor, index)
        }
    }

    /// Moves `tensor`'s address range, mappings and pending aliases to a new tensor object,
    /// open to growth, and leaves the old object freed and empty (its reservation now the new
    /// one's). Work still queued for the old object (a request that left) then finds a freed
    /// tensor instead of growing the one its range now serves (a prefix cache's holder handed to
    /// the request that continues it). No driver call.
    public func handOver(_ tensor: VirtualTensor) throws -> VirtualTensor {
        try lock.withLock {
            waitLocked { tensor.mappingsInFlight > 0 || tensor.unmappingsInFlight > 0 }
            guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
            let successor = VirtualTensor(id: nextTensorID, base: tensor.base, chunkCount: tensor.chunkCount, chunkSize: chunkSize)
            nextTensorID += 1
            successor.replaceSlots(tensor.slots)
            successor.runs = tensor.runs
            tensor.replaceSlots(Array(repeating: .empty, count: tensor.chunkCount))
            tensor.runs = MappingRuns()
            tensor.isFreed = true
            tensor.isSealed = true
            tensor.reservationReleased = true
            tensors[tensor.id] = nil
            tensors[successor.id] = successor
            retiring.replaceTensor(tensor, with: successor)
            return successor
        }
    }

    /// Gives back the chunks `tensor` holds at `indices` under one hold of the lock and one
    /// fence: mapped ones unmap after in-flight work, pending aliases are dropped, the others
    /// are passed by (a prefix cache returning a holder's chunks).
    public func release(_ tensor: VirtualTensor, chunks indices: [Int]) throws {
        try lock.withLock {
            waitLocked { tensor.mappingsInFlight > 0 }
            guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
            let valid = indices.filter { $0 >= 0 && $0 < tensor.chunkCount }
            dropPendingLocked(tensor, indices: valid)
            try retireLocked(tensor, indices: valid.filter { if case .mapped = tensor.slots[$0] { return true } else { return false } })
        }
    }

    /// Unmaps (deferred) every mapped chunk at index >= `chunks`.
    public func shrink(_ tensor: VirtualTensor, toChunks chunks: Int) throws {
        try lock.withLock {
            waitLocked { tensor.mappingsInFlight > 0 }
            guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
            dropPendingLocked(tensor, indices: max(0, chunks)..<tensor.chunkCount)
            let indices = (max(0, chunks)..<tensor.chunkCount).filter {
                if case .mapped = tensor.slots[$0] { return true } else { return false }
            }
            try retireLocked(tensor, indices: indices)
        }
    }

    /// Frees a tensor: every chunk is unmapped (deferred) and the reservation released after.
    /// Any later use of the tensor throws `tensorFreed`.
    public func free(_ tensor: VirtualTensor) throws {
        try lock.withLock {
            // Slots being unmapped are passed by: the reservation goes when the last one is done.
            waitLocked { tensor.mappingsInFlight > 0 }
            guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
            dropPendingLocked(tensor, indices: 0..<tensor.chunkCount)
            let indices = (0..<tensor.chunkCount).filter {
                if case .mapped = tensor.slots[$0] { return true } else { return false }
            }
            try retireLocked(tensor, indices: indices)
            tensor.isFreed = true
            releaseReservationIfIdleLocked(tensor)
        }
    }

    /// Gives chunk `index` of `tensor` a private copy if it is shared (copy-on-write before a
    /// write). Waits for in-flight device work, since the shared mapping is replaced in place. A
    /// shared pending alias is mapped first (the copy's source); one held by this slot alone
    /// stays pending. A slot that holds no chunk now (empty, or retiring: a split of its run,
    /// made private a moment before for the slot next to it, retired it) has nothing to copy:
    /// the next grow maps it a chunk of its own.
    public func makePrivate(_ tensor: VirtualTensor, chunk index: Int) throws {
        try lock.withLock {
            waitLocked { slotInFlight(tensor, index) || onlyUnmapsCanFree }
            try checkLive(tensor, index)
            switch tensor.slots[index] {
            case .empty, .retiring: return
            default: break
            }
            if case .stranded(let chunk) = tensor.slots[index] {
                // Given back inside a run and about to be written again: the tensor's own at
                // once where nobody else maps it, else the run is copied (the slot keeps its copy).
                if pool.referenceCount(chunk) == 1 { return try unstrandLocked(tensor, index) }
                guard let run = tensor.runs.run(containing: index) else { preconditionFailure("a stranded slot outside a run") }
                return try splitRunLocked(tensor, run, keeping: index)
            }
            if case .pendingAlias(let chunk) = tensor.slots[index] {
                // Held by this slot alone: mapping it later gives the tensor a private chunk already.
                guard pool.referenceCount(chunk) > 1 else { return }
                // Shared: map the alias now, so the copy below reads it from here.
                try mapPendingLocked(chunk, tensor, index)
            }
            guard case .mapped(let shared) = tensor.slots[index] else {
                throw VTensorError.notMapped(tensor: tensor.id, chunk: index)
            }
            guard pool.referenceCount(shared) > 1 else { return }
            if let run = tensor.runs.run(containing: index) {
                try splitRunLocked(tensor, run)
                // Where slabs map only whole, the split gave every chunk of the run a private copy.
                if pool.wholeSlabsOnly { return }
            }
            let scratch = try scratchLocked()
            let scratchAddress = scratch.address(ofChunk: 0)
            try mapFreshLocked(scratch, 0)
            guard case .mapped(let fresh) = scratch.slots[0] else { preconditionFailure() }
            let address = tensor.address(ofChunk: index)
            do {
                try backend.copy(from: address, to: scratchAddress, bytes: chunkSize)
                try backend.wait(try backend.recordFence())
            } catch {
                try? backend.unmap(at: scratchAddress)
                scratch.setSlot(0, .empty)
                pool.dropReference(fresh)
                throw VTensorError.from(error)
            }
            // Nothing in flight reads either address now: swap without deferral. A failed map
            // here is retried, then the shared chunk is put back, so the tensor never loses data.
            do {
                try backend.unmap(at: scratchAddress)
                scratch.setSlot(0, .empty)
                try backend.unmap(at: address)
            } catch {
                preconditionFailure("copy-on-write unmap of \(tensor) chunk \(index) failed: \(error)")
            }
            if mapWithRetries(fresh, at: address) {
                tensor.setSlot(index, .mapped(fresh))
                pool.dropReference(shared)
            } else {
                pool.dropReference(fresh)
                guard mapWithRetries(shared, at: address) else {
                    preconditionFailure("copy-on-write could not map either chunk back at \(tensor) chunk \(index)")
                }
                throw VTensorError.backend(operation: "copy-on-write", message: "mapping a private copy of \(tensor) chunk \(index) failed")
            }
        }
    }

    private func mapWithRetries(_ chunk: PhysicalChunk, at address: UInt64, attempts: Int = 4) -> Bool {
        for _ in 0..<attempts {
            do {
                try backend.map(chunk, at: address)
            } catch { continue }
            do {
                try backend.setAccess(at: address, bytes: chunkSize)
                return true
            } catch {
                try? backend.unmap(at: address)
            }
        }
        return false
    }

    /// Copies `bytes` from the start of one mapped chunk to the start of another.
    public func copyChunk(from source: VirtualTensor, chunk sourceIndex: Int, to destination: VirtualTensor, chunk destinationIndex: Int, bytes: Int) throws {
        precondition(bytes >= 0 && bytes <= chunkSize, "copy of \(bytes) bytes does not fit a chunk")
        try lock.withLock {
            waitLocked { slotInFlight(source, sourceIndex) || slotInFlight(destination, destinationIndex) }
            try checkLive(source, sourceIndex)
            try checkLive(destination, destinationIndex)
            guard case .mapped = source.slots[sourceIndex] else { throw VTensorError.notMapped(tensor: source.id, chunk: sourceIndex) }
            guard case .mapped = destination.slots[destinationIndex] else { throw VTensorError.notMapped(tensor: destination.id, chunk: destinationIndex) }
            guard bytes > 0 else { return }
            do {
                try backend.copy(from: source.address(ofChunk: sourceIndex), to: destination.address(ofChunk: destinationIndex), bytes: bytes)
            } catch { throw VTensorError.from(error) }
        }
    }

    /// Copies chunks `range` of `source` (mapped) into one new slab and gives `holder` the
    /// slab's chunks at the same slots as pending aliases: references, no mapping, so a prefix
    /// cache's holder gives them back one by one at no cost. Every tensor that aliases a run of
    /// them later maps it with one `mapRun` and one set access, where a chunk of its own takes
    /// one of each per chunk. The copy runs in stream order after the work that wrote `source`,
    /// through a scratch range that maps the slab once and retires behind a fence.
    ///
    /// Returns false, with nothing changed, when the backend makes no slabs or the budget cannot
    /// hold one of `range.count` chunks now; throws when a driver call fails (nothing leaks).
    @discardableResult
    public func packSlab(from source: VirtualTensor, chunks range: Range<Int>, into holder: VirtualTensor) throws -> Bool {
        try packSlab(from: range.map { (source, $0) }, into: holder, at: range.lowerBound)
    }

    /// `packSlab` from chunks of several tensors: chunk i of the slab is a copy of
    /// `sources[i]` (mapped), and `holder` gets it at slot `start + i`. Adjacent source chunks of
    /// one tensor are copied in one call.
    @discardableResult
    public func packSlab(from sources: [(tensor: VirtualTensor, index: Int)], into holder: VirtualTensor, at start: Int) throws -> Bool {
        guard !sources.isEmpty, backend.makesSlabs else { return false }
        let range = start..<(start + sources.count)
        return try lock.withLock {
            waitLocked { sources.contains { slotInFlight($0.tensor, $0.index) } || range.contains { slotInFlight(holder, $0) } }
            try checkLive(holder, range.upperBound - 1)
            for (tensor, index) in sources {
                try checkLive(tensor, index)
                guard case .mapped = tensor.slots[index] else { throw VTensorError.notMapped(tensor: tensor.id, chunk: index) }
            }
            for index in range where holder.slots[index] != .empty { throw VTensorError.alreadyMapped(tensor: holder.id, chunk: index) }
            let bytes = range.count * chunkSize
            let made: [PhysicalChunk]?
            do { made = try pool.makeSlab(range.count) } catch { throw VTensorError.from(error) }
            guard let chunks = made else { return false }
            if pool.wholeSlabsOnly {
                try packMappedLocked(sources, chunks: chunks, into: holder, at: range)
                return true
            }
            let base: UInt64
            if let spare = spareRanges[bytes]?.popLast() {
                spareRangeCount -= 1
                base = spare
            } else {
                do { base = try backend.reserve(bytes: bytes) } catch {
                    for chunk in chunks { pool.giveBack(chunk) }
                    throw VTensorError.from(error)
                }
            }
            let staging = VirtualTensor(id: nextTensorID, base: base, chunkCount: range.count, chunkSize: chunkSize)
            nextTensorID += 1
            tensors[staging.id] = staging
            do {
                try backend.mapRun(chunks, at: base)
            } catch {
                for chunk in chunks { pool.giveBack(chunk) }
                staging.isFreed = true
                releaseReservationIfIdleLocked(staging)
                throw VTensorError.from(error)
            }
            for (index, chunk) in chunks.enumerated() {
                staging.setSlot(index, .mapped(chunk))
                pool.addReference(chunk)
            }
            if range.count > 1 { staging.runs.add(0..<range.count) }
            defer {
                // The scratch mapping goes behind a fence after the copy; the holder's references keep the slab.
                try? retireLocked(staging, indices: Array(0..<range.count))
                staging.isFreed = true
                releaseReservationIfIdleLocked(staging)
            }
            do {
                try backend.setAccess(at: base, bytes: bytes)
                try copySourcesLocked(sources, to: staging, at: 0)
            } catch { throw VTensorError.from(error) }
            for (index, chunk) in zip(range, chunks) {
                holder.setSlot(index, .pendingAlias(chunk))
                pool.addReference(chunk)
                pendingAliases += 1
            }
            inheritContentLocked(chunks, from: sources)
            packedSlabs += 1
            return true
        }
    }

    /// `packSlab` where slabs map only whole: the slab is mapped into `holder` itself, as one
    /// run, and the copy lands there, so the holder maps it (the copy source of boundary chunks
    /// and of requests that share only part of it) for one driver call, and retires it whole.
    private func packMappedLocked(_ sources: [(tensor: VirtualTensor, index: Int)], chunks: [PhysicalChunk],
                                  into holder: VirtualTensor, at range: Range<Int>) throws {
        let base = holder.address(ofChunk: range.lowerBound)
        do {
            try backend.mapRun(chunks, at: base)
        } catch {
            for chunk in chunks { pool.giveBack(chunk) }
            throw VTensorError.from(error)
        }
        for (index, chunk) in zip(range, chunks) {
            holder.setSlot(index, .mapped(chunk))
            pool.addReference(chunk)
        }
        if range.count > 1 { holder.runs.add(range) }
        do {
            try backend.setAccess(at: base, bytes: range.count * chunkSize)
            try copySourcesLocked(sources, to: holder, at: range.lowerBound)
        } catch {
            // Nothing was handed to a kernel: retired behind a fence like any mapping.
            try? retireLocked(holder, indices: Array(range))
            throw VTensorError.from(error)
        }
        inheritContentLocked(chunks, from: sources)
        packedSlabs += 1
    }

    /// A packed slab's chunks hold their sources' bytes (full prompt chunks, never written again).
    private func inheritContentLocked(_ chunks: [PhysicalChunk], from sources: [(tensor: VirtualTensor, index: Int)]) {
        for (chunk, (tensor, index)) in zip(chunks, sources) {
            if let source = tensor.slots[index].heldChunk { pool.inheritContent(chunk, from: source) }
        }
    }

    /// Records that `tensor`'s chunk `index` now holds a copy of `source`'s chunk
    /// `sourceIndex`, and that neither will be written again (a full prompt chunk copied where
    /// it could not be aliased): both then have one content identity.
    public func inheritContent(_ tensor: VirtualTensor, chunk index: Int, from source: VirtualTensor, chunk sourceIndex: Int) {
        lock.withLock {
            guard let copy = tensor.slots[index].heldChunk, let original = source.slots[sourceIndex].heldChunk else { return }
            pool.inheritContent(copy, from: original)
        }
    }

    /// `tensor`'s chunks from `first` on may be written again (a truncation): they forget their
    /// content identities (copies made before keep theirs, which no chunk reused gets again).
    public func forgetContent(_ tensor: VirtualTensor, from first: Int) {
        lock.withLock {
            for index in max(0, first)..<tensor.chunkCount {
                if let chunk = tensor.slots[index].chunk { pool.forgetContent(chunk) }
            }
        }
    }

    /// Copies `sources` (mapped chunks) to `destination`'s slots from `start` on, adjacent
    /// source chunks of one tensor in one call.
    private func copySourcesLocked(_ sources: [(tensor: VirtualTensor, index: Int)], to destination: VirtualTensor, at start: Int) throws {
        var first = 0
        while first < sources.count {
            var end = first + 1
            while end < sources.count, sources[end].tensor === sources[first].tensor, sources[end].index == sources[end - 1].index + 1 { end += 1 }
            try copyRangeLocked(from: sources[first].tensor.address(ofChunk: sources[first].index),
                                to: destination.address(ofChunk: start + first), chunks: end - first)
            first = end
        }
    }

    /// Copies `chunks` chunks between two mapped ranges: in one call, or one call a chunk where a
    /// copy that spans several allocations was refused once (a driver that checks a copy against
    /// the one allocation its first byte lies in; none of ours has, but the fallback is cheap).
    private func copyRangeLocked(from source: UInt64, to destination: UInt64, chunks: Int) throws {
        if chunks > 1 && !copiesPerChunk {
            do {
                return try backend.copy(from: source, to: destination, bytes: chunks * chunkSize)
            } catch {
                copiesPerChunk = true
            }
        }
        for i in 0..<chunks {
            try backend.copy(from: source + UInt64(i * chunkSize), to: destination + UInt64(i * chunkSize), bytes: chunkSize)
        }
    }

    // MARK: Queries

    /// Read-only questions about tensors, answered under one hold of the lock: the engine
    /// asks many per step, and one acquisition for all of them keeps it off the mapper's way.
    /// Valid only inside `inspect`'s closure (it does not take the lock itself).
    public struct Inspector {
        fileprivate let memory: VirtualMemory

        public func isMapped(_ tensor: VirtualTensor, chunk index: Int) -> Bool {
            if case .mapped = tensor.slots[index] { return true } else { return false }
        }

        /// The physical chunk mapped at `index`, if any.
        public func physicalChunk(_ tensor: VirtualTensor, chunk index: Int) -> PhysicalChunk? {
            if case .mapped(let c) = tensor.slots[index] { return c } else { return nil }
        }

        public func mappedChunkCount(_ tensor: VirtualTensor) -> Int {
            tensor.slots.reduce(0) { if case .mapped = $1 { return $0 + 1 } else { return $0 } }
        }

        /// The physical chunk slot `index` holds for data (mapped, or a pending alias), if any.
        public func heldChunk(_ tensor: VirtualTensor, chunk index: Int) -> PhysicalChunk? { tensor.slots[index].heldChunk }

        /// A number for the bytes of the chunk slot `index` holds: two slots with the same number
        /// hold the same bytes, whether they map one chunk or a copy and its source (see
        /// `inheritContent`). Nil when the slot holds no chunk.
        public func contentIdentity(_ tensor: VirtualTensor, chunk index: Int) -> UInt64? {
            tensor.slots[index].heldChunk.map { memory.pool.contentIdentity($0) }
        }

        /// The slab of the chunk slot `index` holds (mapped or pending), the chunk's index in it
        /// and its chunk count, where that slab maps only whole (a slab of several chunks, on a
        /// backend without `mapsSlabParts`); nil otherwise.
        public func wholeSlabPlace(_ tensor: VirtualTensor, chunk index: Int) -> (slab: Int, index: Int, count: Int)? {
            // Field by field: calling the pool's methods here copied the whole pool (every
            // reference in it retained and released) once per chunk asked about.
            guard memory.pool.wholeSlabsOnly, let chunk = tensor.slots[index].heldChunk, let place = memory.pool.slabOf[chunk],
                  let count = memory.pool.slabs[place.slab]?.count, count > 1 else { return nil }
            return (place.slab, place.index, count)
        }

        /// Whether the chunk slot `index` holds (mapped or pending) belongs to a slab.
        public func isSlabChunk(_ tensor: VirtualTensor, chunk index: Int) -> Bool {
            tensor.slots[index].heldChunk.map { memory.pool.isSlabChunk($0) } ?? false
        }

        /// Whether slot `index` holds a chunk for data: mapped, or a pending alias.
        public func isHeld(_ tensor: VirtualTensor, chunk index: Int) -> Bool { tensor.slots[index].heldChunk != nil }

        /// Whether slot `index` was given back inside a run and waits, still mapped, for the rest
        /// of it (`Slot.stranded`): nothing can be aliased into it, and a grow takes it back.
        public func isStranded(_ tensor: VirtualTensor, chunk index: Int) -> Bool { tensor.slots[index].isStranded }

        /// The slots mapped together with slot `index` as one run (a slab's), if it is in one.
        public func run(of tensor: VirtualTensor, containing index: Int) -> Range<Int>? {
            index >= 0 && index < tensor.chunkCount ? tensor.runs.run(containing: index) : nil
        }

        /// Whether any slot of any tensor is stranded (a cheap look first).
        public var anyStranded: Bool { memory.strandedCount > 0 }

        /// Whether a write to slot `index` needs a private copy first (`makePrivate`): its chunk is
        /// shared, or it is stranded and its chunk mapped elsewhere too.
        public func needsPrivateCopy(_ tensor: VirtualTensor, chunk index: Int) -> Bool {
            if case .stranded(let chunk) = tensor.slots[index] { return memory.pool.referenceCount(chunk) > 1 }
            return shareCount(tensor, chunk: index) > 1
        }

        /// Number of holders of the chunk behind `tensor`'s chunk `index`, pending aliases
        /// included (0 when the slot holds none).
        public func shareCount(_ tensor: VirtualTensor, chunk index: Int) -> Int {
            guard let c = tensor.slots[index].heldChunk else { return 0 }
            return memory.pool.referenceCount(c)
        }
    }

    public func inspect<T>(_ body: (Inspector) throws -> T) rethrows -> T {
        try lock.withLock { try body(Inspector(memory: self)) }
    }

    public func isMapped(_ tensor: VirtualTensor, chunk index: Int) -> Bool { inspect { $0.isMapped(tensor, chunk: index) } }
    public func physicalChunk(_ tensor: VirtualTensor, chunk index: Int) -> PhysicalChunk? { inspect { $0.physicalChunk(tensor, chunk: index) } }
    public func mappedChunkCount(_ tensor: VirtualTensor) -> Int { inspect { $0.mappedChunkCount(tensor) } }
    public func shareCount(_ tensor: VirtualTensor, chunk index: Int) -> Int { inspect { $0.shareCount(tensor, chunk: index) } }

    public var accounting: MemoryAccounting { lock.withLock { accountingLocked() } }

    /// Whether any slab is alive (a cheap look before asking about slabs).
    public var holdsSlabs: Bool { lock.withLock { pool.slabCount > 0 } }

    /// Slots given back inside a run, still mapped (`Slot.stranded`): memory in use that no
    /// owner counts, read in constant time.
    public var strandedChunks: Int { lock.withLock { strandedCount } }

    /// The pool's chunk counts, read in constant time (`accounting` walks every tensor): for
    /// gauges a scraper reads many times a second.
    public var poolCounts: PoolCounts {
        lock.withLock {
            PoolCounts(chunkSize: chunkSize, budgetChunks: pool.budgetChunks, created: pool.created,
                       inReserve: pool.reserve.count, inUse: pool.inUse)
        }
    }

    private func accountingLocked() -> MemoryAccounting {
        // A slot being mapped counts once done; one being unmapped still counts (as retiring).
        let mappings = pool.references.values.reduce(0, +) - pendingAliases - mappingsInFlight
        return MemoryAccounting(
            chunkSize: chunkSize, budgetChunks: pool.budgetChunks,
            lowWatermark: pool.lowWatermark, highWatermark: pool.highWatermark,
            created: pool.created, peakCreated: pool.peakCreated, inReserve: pool.reserve.count,
            inUse: pool.inUse, mappings: mappings, pendingAliases: pendingAliases,
            shared: pool.references.values.filter { $0 > 1 }.count,
            retiring: retiring.count + unmappingsInFlight,
            liveTensors: tensors.values.filter { !$0.isFreed }.count,
            reservedBytes: tensors.values.filter { !$0.reservationReleased }.reduce(0) { $0 + $1.reservedBytes },
            reservations: tensors.values.filter { !$0.reservationReleased }.count + (scratch == nil ? 0 : 1) + spareRangeCount,
            totalCreated: pool.totalCreated, totalReleased: pool.totalReleased,
            slabs: pool.slabCount, slabChunks: pool.slabChunkCount,
            runMappings: tensors.values.reduce(0) { $0 + $1.runs.count }, runSplits: runSplits, packedSlabs: packedSlabs,
            stranded: strandedCount, freshRuns: freshRuns, idleSlabChunks: pool.idleSlabChunks, realiasedRetiring: realiasedRetiring)
    }

    /// Recomputes ownership from the tensors and compares with the pool; returns every
    /// violation found (empty when consistent). `census`, if given, runs under the same lock
    /// with the accounting, to compare it with what the backend itself holds. For tests and
    /// `selftest`.
    public func audit(census: ((MemoryAccounting) -> [String])? = nil) -> [String] {
        lock.withLock {
            // Driver calls made outside the lock leave the backend and the books briefly apart.
            waitLocked { mappingsInFlight > 0 || unmappingsInFlight > 0 }
            var problems: [String] = census?(accountingLocked()) ?? []
            var counted: [PhysicalChunk: Int] = [:]
            var all = Array(tensors.values)
            if let scratch { all.append(scratch) }
            for tensor in all {
                for slot in tensor.slots { if let c = slot.chunk { counted[c, default: 0] += 1 } }
                if tensor.isFreed, tensor.slots.contains(where: { if case .mapped = $0 { return true } else { return false } }) {
                    problems.append("\(tensor) is freed but still has mapped chunks")
                }
                if let index = tensor.slots.prefix(tensor.leadingMapped).firstIndex(where: { if case .mapped = $0 { return false } else { return true } }) {
                    problems.append("\(tensor) counts its first \(tensor.leadingMapped) chunks mapped, but chunk \(index) is not")
                }
            }
            if counted != pool.references {
                problems.append("mapping counts differ: tensors say \(counted.count) chunks / \(counted.values.reduce(0, +)) mappings, pool says \(pool.references.count) / \(pool.references.values.reduce(0, +))")
            }
            let reserve = Set(pool.reserve.chunks)
            if reserve.count != pool.reserve.count { problems.append("a chunk is in the reserve twice") }
            if !reserve.isDisjoint(with: counted.keys) { problems.append("a chunk is both in the reserve and mapped") }
            if pool.created != pool.reserve.count + pool.references.count + pool.idleSlabChunks {
                problems.append("created \(pool.created) != reserve \(pool.reserve.count) + in use \(pool.references.count) + idle slab chunks \(pool.idleSlabChunks)")
            }
            if !pool.idleSlab.isDisjoint(with: counted.keys) { problems.append("a slab chunk is both idle and held") }
            if pool.created > pool.budgetChunks { problems.append("created \(pool.created) exceeds the budget \(pool.budgetChunks)") }
            // A retiring run has one entry in the queue, for its first slot.
            let retiringCount = all.reduce(0) { sum, tensor in
                sum + tensor.slots.indices.filter { index in
                    guard case .retiring = tensor.slots[index] else { return false }
                    return tensor.runs.run(containing: index).map { $0.lowerBound == index } ?? true
                }.count
            }
            if retiringCount != retiring.count { problems.append("retire queue holds \(retiring.count) entries, tensors \(retiringCount)") }
            for tensor in all {
                for (first, length) in tensor.runs.lengths {
                    let run = first..<(first + length)
                    var states = Set(run.map { index -> String in
                        switch tensor.slots[index] {
                        case .mapped: return "mapped"
                        case .stranded: return "stranded"
                        case .retiring: return "retiring"
                        case .unmapping: return "unmapping"
                        default: return "other"
                        }
                    })
                    // Stranded slots wait with held ones: a run of them alone should have retired.
                    if states.contains("stranded") && states.contains("mapped") { states.remove("stranded") }
                    if states.count != 1 || states.contains("other") || states.contains("stranded") {
                        problems.append("\(tensor)'s run \(run) is not all mapped (some perhaps stranded), all retiring or all unmapping: \(states.sorted())")
                    }
                    if !pool.formRun(run.compactMap { tensor.slots[$0].chunk }) {
                        problems.append("\(tensor)'s run \(run) does not hold adjacent chunks of one slab")
                    } else if pool.wholeSlabsOnly, let place = tensor.slots[first].chunk.flatMap(pool.slabPlace), place.index != 0 || place.count != length {
                        problems.append("\(tensor)'s run \(run) maps part of a slab of \(place.count), which maps only whole")
                    }
                }
                if pool.wholeSlabsOnly {
                    for index in tensor.slots.indices where tensor.runs.run(containing: index) == nil {
                        if case .mapped(let chunk) = tensor.slots[index], pool.mapsOnlyWithItsSlab(chunk) {
                            problems.append("\(tensor) maps chunk \(index), part of a slab, alone; a slab maps only whole")
                        }
                    }
                }
            }
            let pendingCount = all.reduce(0) { $0 + $1.slots.filter { if case .pendingAlias = $0 { return true } else { return false } }.count }
            if pendingCount != pendingAliases { problems.append("\(pendingAliases) pending aliases counted, tensors hold \(pendingCount)") }
            var strandedSlots = 0
            for tensor in all {
                for index in tensor.slots.indices where tensor.slots[index].isStranded {
                    strandedSlots += 1
                    if tensor.runs.run(containing: index) == nil { problems.append("\(tensor) chunk \(index) is stranded outside a run") }
                    if tensor.isFreed { problems.append("\(tensor) is freed but chunk \(index) is stranded") }
                }
            }
            if strandedSlots != strandedCount { problems.append("\(strandedCount) stranded slots counted, tensors hold \(strandedSlots)") }
            return problems
        }
    }

    // MARK: Pool maintenance (the mapper calls these when idle)

    /// Completes retirements whose fences are done: physical unmap, chunk back to the reserve,
    /// reservations of freed tensors released, reserve trimmed to the high watermark.
    /// The unmaps run outside the lock, a few at a time (claimed `.unmapping` under it), so the
    /// engine's bookkeeping never waits behind them.
    @discardableResult
    public func reclaim(limit: Int = .max) throws -> Int {
        var total = 0
        while total < limit {
            let batch = min(unmapBatch, limit - total)
            let claimed = try lock.withLock { () throws -> [Retired] in
                let completed = try completedRetirementsLocked(limit: batch)
                for entry in completed {
                    for index in entry.slots {
                        guard case .retiring(let chunk, _) = entry.tensor.slots[index] else { preconditionFailure("a run's slot is not retiring") }
                        entry.tensor.setSlot(index, .unmapping(chunk))
                    }
                    entry.tensor.unmappingsInFlight += entry.count
                    unmappingsInFlight += entry.count
                }
                return completed
            }
            guard !claimed.isEmpty else { break }
            unmapCompleted(claimed)
            try lock.withLock {
                for entry in claimed {
                    for index in entry.slots {
                        guard case .unmapping = entry.tensor.slots[index] else { preconditionFailure("a slot being unmapped changed") }
                    }
                    emptyRetiredLocked(entry)
                    entry.tensor.unmappingsInFlight -= entry.count
                    unmappingsInFlight -= entry.count
                }
                for entry in claimed where entry.tensor.isFreed { releaseReservationIfIdleLocked(entry.tensor) }
                wakeWaitersLocked()
                do { _ = try pool.trim(to: pool.highWatermark) } catch { throw VTensorError.from(error) }
            }
            total += claimed.count
            if claimed.count < batch { break }
        }
        return total
    }

    /// Waits for every pending retirement and completes it.
    public func drain() throws {
        try lock.withLock {
            waitLocked { unmappingsInFlight > 0 }
            while !retiring.isEmpty { _ = try reclaimLocked(waitForOldest: true) }
        }
    }

    /// Creates chunks ahead of need up to the low watermark; returns how many.
    @discardableResult
    public func replenish(limit: Int = .max) throws -> Int {
        var total = 0
        while total < limit {
            let made = try lock.withLock {
                do { return try pool.replenish(limit: 1) } catch { throw VTensorError.from(error) }
            }
            total += made
            if made == 0 { break }
        }
        return total
    }

    /// Releases reserve chunks above `limit` (default: the high watermark) to the device.
    @discardableResult
    public func trim(to limit: Int? = nil) throws -> Int {
        try lock.withLock {
            do { return try pool.trim(to: limit ?? pool.highWatermark) } catch { throw VTensorError.from(error) }
        }
    }

    // MARK: Locked internals

    /// Sleeps, giving up the lock, while `busy` holds: a thread that finishes a driver call made
    /// outside the lock wakes the sleepers. Callers hold no claimed slot of their own while they
    /// sleep, so two threads never wait for each other.
    private func waitLocked(while busy: () -> Bool) {
        while busy() {
            waiters += 1
            lock.wait()
            waiters -= 1
        }
    }

    private func wakeWaitersLocked() {
        if waiters > 0 { lock.broadcast() }
    }

    /// Whether a driver call on `tensor`'s slot `index` runs outside the lock now.
    private func slotInFlight(_ tensor: VirtualTensor, _ index: Int) -> Bool {
        index >= 0 && index < tensor.chunkCount && tensor.slots[index].isInFlight
    }

    /// Whether a new mapping's chunk can only come from unmaps running outside the lock now (the
    /// budget is spent, and nothing else is retiring): such a mapping waits for them, before it
    /// claims anything.
    private var onlyUnmapsCanFree: Bool {
        unmappingsInFlight > 0 && retiring.isEmpty && pool.reserve.isEmpty && pool.created >= pool.budgetChunks
    }

    private func checkLive(_ tensor: VirtualTensor, _ index: Int) throws {
        guard !tensor.isFreed else { throw VTensorError.tensorFreed(tensor: tensor.id) }
        guard index >= 0, index < tensor.chunkCount else {
            throw VTensorError.chunkOutOfRange(tensor: tensor.id, chunk: index, chunkCount: tensor.chunkCount)
        }
    }

    /// If slot `index` is retiring, waits for its fence and finishes the unmap so it can be reused.
    private func settleLocked(_ tensor: VirtualTensor, _ index: Int) throws {
        guard case .retiring(_, let fence) = tensor.slots[index] else { return }
        do { try backend.wait(fence) } catch { throw VTensorError.from(error) }
        _ = try reclaimLocked(waitForOldest: false)
    }

    /// The chunk `tensor`'s empty slot `index` can alias from `source`'s slot `sourceIndex`.
    private func aliasSourceLocked(_ tensor: VirtualTensor, _ index: Int, _ source: VirtualTensor, _ sourceIndex: Int) throws -> PhysicalChunk {
        try checkLive(tensor, index)
        try checkLive(source, sourceIndex)
        guard let chunk = source.slots[sourceIndex].heldChunk else {
            throw VTensorError.notMapped(tensor: source.id, chunk: sourceIndex)
        }
        try settleLocked(tensor, index)
        guard tensor.slots[index] == .empty else { throw VTensorError.alreadyMapped(tensor: tensor.id, chunk: index) }
        return chunk
    }

    /// Maps an existing chunk at slot `index` (map + access) and marks the slot mapped; the
    /// caller keeps the reference count right.
    private func mapChunkLocked(_ chunk: PhysicalChunk, _ tensor: VirtualTensor, _ index: Int) throws {
        let address = tensor.address(ofChunk: index)
        do {
            try backend.map(chunk, at: address)
        } catch { throw VTensorError.from(error) }
        do {
            try backend.setAccess(at: address, bytes: chunkSize)
        } catch {
            try? backend.unmap(at: address)
            throw VTensorError.from(error)
        }
        tensor.setSlot(index, .mapped(chunk))
    }

    /// Drops the pending aliases among `indices`: their references go, nothing was mapped.
    private func dropPendingLocked(_ tensor: VirtualTensor, indices: some Sequence<Int>) {
        for index in indices {
            guard case .pendingAlias(let chunk) = tensor.slots[index] else { continue }
            tensor.setSlot(index, .empty)
            pool.dropReference(chunk)
            pendingAliases -= 1
        }
    }

    private func mapFreshLocked(_ tensor: VirtualTensor, _ index: Int) throws {
        if tensor.slots[index].isStranded { return try unstrandLocked(tensor, index) }
        // A chunk still mapped here, waiting for its fence, and nobody else's: on a backend whose
        // work runs in order, it serves as the fresh chunk at once (whatever writes it now runs
        // after the work that reads it), with no driver call and no wait for the device. A range
        // a request takes over has such chunks just past its tokens.
        if case .retiring(let chunk, _) = tensor.slots[index], canTakeBackLocked(tensor, index, chunk) {
            retiring.remove(tensor, index)
            tensor.setSlot(index, .mapped(chunk))
            pool.forgetContent(chunk)
            return
        }
        try settleLocked(tensor, index)
        guard tensor.slots[index] == .empty else { throw VTensorError.alreadyMapped(tensor: tensor.id, chunk: index) }
        let chunk = try takeChunkLocked()
        let address = tensor.address(ofChunk: index)
        do {
            try backend.map(chunk, at: address)
        } catch {
            pool.giveBack(chunk)
            throw VTensorError.from(error)
        }
        do {
            try backend.setAccess(at: address, bytes: chunkSize)
        } catch {
            try? backend.unmap(at: address)
            pool.giveBack(chunk)
            throw VTensorError.from(error)
        }
        tensor.setSlot(index, .mapped(chunk))
        pool.addReference(chunk)
    }

    /// A chunk for a new mapping. When the budget is exhausted, completes retirements (waiting
    /// for their fences if needed) before declaring out of memory.
    private func takeChunkLocked() throws -> PhysicalChunk {
        while true {
            let chunk: PhysicalChunk?
            do { chunk = try pool.take() } catch { throw VTensorError.from(error) }
            if let chunk { return chunk }
            if retiring.isEmpty {
                // Callers wait out `onlyUnmapsCanFree` first, so this is the budget really spent.
                throw VTensorError.outOfMemory("all \(pool.budgetChunks) chunks of the \(pool.budgetChunks * chunkSize >> 20) MiB budget are mapped")
            }
            _ = try reclaimLocked(waitForOldest: true)
        }
    }

    /// Where the run of adjacent slots of one tensor that begins at `start` ends (exclusive).
    private static func runEnd(_ slots: [(tensor: VirtualTensor, index: Int)], from start: Int) -> Int {
        var end = start + 1
        while end < slots.count, slots[end].tensor === slots[start].tensor, slots[end].index == slots[end - 1].index + 1 { end += 1 }
        return end
    }

    /// The physical unmaps of retirements whose fences completed: one call a run of adjacent
    /// chunks of one tensor (`unmapPerRun`), else one a chunk. A failure here would leave the
    /// books and the device apart, so it stops the process.
    private func unmapCompleted(_ completed: [Retired]) {
        let places = unmapPerRun ? completed.map { ($0.tensor, $0.index) } : []
        var start = 0
        while start < completed.count {
            let entry = completed[start]
            if entry.count > 1 {
                do {
                    try backend.unmapRun(at: entry.tensor.address(ofChunk: entry.index), chunks: entry.count)
                } catch {
                    preconditionFailure("unmap of \(entry.tensor)'s run \(entry.index)..<\(entry.index + entry.count) after its fence failed: \(error)")
                }
                start += 1
                continue
            }
            var end = unmapPerRun ? Self.runEnd(places, from: start) : start + 1
            if let run = completed[start..<end].dropFirst().firstIndex(where: { $0.count > 1 }) { end = run }
            do {
                try backend.unmap(at: entry.tensor.address(ofChunk: entry.index), chunks: end - start)
            } catch {
                preconditionFailure("unmap of \(entry.tensor) chunks \(entry.index)..<\(entry.index + end - start) after their fence failed: \(error)")
            }
            start = end
        }
    }

    /// A retirement whose fence completed: one slot, or a run of `count` slots from `index`.
    private struct Retired {
        var tensor: VirtualTensor
        var index: Int
        var count: Int
        var slots: Range<Int> { index..<(index + count) }
    }

    /// Marks mapped slots retiring behind one fence. A run retires whole: its first slot's entry
    /// in the retire queue stands for all of it; a run `indices` cover only in part is split
    /// into single mappings first.
    private func retireLocked(_ tensor: VirtualTensor, indices: [Int]) throws {
        guard !indices.isEmpty else { return }
        var indices = indices
        if pool.wholeSlabsOnly && !tensor.runs.isEmpty {
            indices = strandLocked(tensor, indices)
            guard !indices.isEmpty else { return }
        }
        for run in tensor.runs.cut(by: indices) { try splitRunLocked(tensor, run) }
        let fence: Fence
        do { fence = try backend.recordFence() } catch { throw VTensorError.from(error) }
        for index in indices {
            guard case .mapped(let chunk) = tensor.slots[index] else { preconditionFailure("retiring an unmapped slot") }
            tensor.setSlot(index, .retiring(chunk, fence))
            if let run = tensor.runs.run(containing: index), run.lowerBound != index { continue }
            retiring.append((tensor, index))
        }
    }

    /// Where slabs map only whole: of the slots `indices` gives back, those in a run whose other
    /// slots are still held are stranded (mapped on, waiting for the rest: a slab cannot be
    /// unmapped in part, and copying what stays would cost fresh chunks just when memory is
    /// wanted); returns the slots to retire now: those outside runs, and every slot of each run
    /// whose last held slot goes now (its stranded slots too, mapped again for the retirement).
    private func strandLocked(_ tensor: VirtualTensor, _ indices: [Int]) -> [Int] {
        let chosen = Set(indices)
        var now: [Int] = []
        var seen: Set<Int> = []
        for index in indices {
            guard let run = tensor.runs.run(containing: index) else {
                now.append(index)
                continue
            }
            guard seen.insert(run.lowerBound).inserted else { continue }
            let held = run.contains { slot in
                if chosen.contains(slot) { return false }
                if case .mapped = tensor.slots[slot] { return true } else { return false }
            }
            for slot in run {
                if held {
                    guard chosen.contains(slot), case .mapped(let chunk) = tensor.slots[slot] else { continue }
                    tensor.setSlot(slot, .stranded(chunk))
                    strandedCount += 1
                } else {
                    if case .stranded(let chunk) = tensor.slots[slot] {
                        tensor.setSlot(slot, .mapped(chunk))
                        strandedCount -= 1
                    }
                    now.append(slot)
                }
            }
        }
        return now
    }

    /// Turns a run mapped whole into single mappings, because part of it is to go or change:
    /// waits until the device has finished all work submitted so far (a kernel could read the
    /// run while it is remapped), unmaps the run, and maps each chunk alone at its offset. The
    /// callers (retiring part of a tensor, copy-on-write) run on the thread that submits device
    /// work, so nothing new reads the range meanwhile. Rare by design: a prefix cache's holders
    /// keep slab chunks as pending aliases, and requests give their runs back whole.
    ///
    /// Where slabs map only whole, the chunks cannot map alone: the run is replaced by private
    /// copies instead (`privatizeRunLocked`).
    ///
    /// Stranded slots of the run (given back) get copies too, which are then retired at once,
    /// but for `keeping`'s (a grow over it, by `makePrivate`), which stays the tensor's.
    private func splitRunLocked(_ tensor: VirtualTensor, _ run: Range<Int>, keeping: Int? = nil) throws {
        var stranded: [Int] = []
        let chunks = run.map { index -> PhysicalChunk in
            switch tensor.slots[index] {
            case .mapped(let chunk): return chunk
            case .stranded(let chunk):
                stranded.append(index)
                return chunk
            default: preconditionFailure("splitting a run whose slot \(index) is not mapped")
            }
        }
        if pool.wholeSlabsOnly {
            try privatizeRunLocked(tensor, run, chunks)
            strandedCount -= stranded.count
            try retireLocked(tensor, indices: stranded.filter { $0 != keeping })
            return
        }
        precondition(stranded.isEmpty, "a run is stranded where slabs map in part")
        do {
            try backend.wait(try backend.recordFence())
            try backend.unmapRun(at: tensor.address(ofChunk: run.lowerBound), chunks: run.count)
        } catch { throw VTensorError.from(error) }
        tensor.runs.remove(run)
        for (index, chunk) in zip(run, chunks) where !mapWithRetries(chunk, at: tensor.address(ofChunk: index)) {
            preconditionFailure("splitting a run of \(tensor): chunk \(index) could not be mapped back")
        }
        runSplits += 1
    }

    /// Replaces the slab run `run` of `tensor` (mapping `slabChunks`) with fresh chunks of its
    /// own holding the same bytes: each fresh chunk is mapped in a scratch range and filled by
    /// one copy, the device is waited for, and the run is unmapped and the copies mapped in its
    /// place. Costs `run.count` chunks of the budget (out of memory leaves the run as it was)
    /// and a device wait; counted in `runSplits`. The callers run on the thread that submits
    /// device work, so nothing new reads the range meanwhile.
    private func privatizeRunLocked(_ tensor: VirtualTensor, _ run: Range<Int>, _ slabChunks: [PhysicalChunk]) throws {
        let bytes = run.count * chunkSize
        let base: UInt64
        do { base = try backend.reserve(bytes: bytes) } catch { throw VTensorError.from(error) }
        var fresh: [PhysicalChunk] = []
        var mapped = 0
        func undo() {
            for i in 0..<mapped { try? backend.unmap(at: base + UInt64(i * chunkSize)) }
            for chunk in fresh { pool.giveBack(chunk) }
            try? backend.releaseReservation(base: base, bytes: bytes)
        }
        do {
            for i in 0..<run.count {
                fresh.append(try takeChunkLocked())
                try backend.map(fresh[i], at: base + UInt64(i * chunkSize))
                mapped += 1
                try backend.setAccess(at: base + UInt64(i * chunkSize), bytes: chunkSize)
            }
            try copyRangeLocked(from: tensor.address(ofChunk: run.lowerBound), to: base, chunks: run.count)
            try backend.wait(try backend.recordFence())
        } catch {
            undo()
            throw VTensorError.from(error)
        }
        // Nothing in flight reads either range now: swap without deferral, as copy-on-write does.
        do {
            for i in 0..<run.count { try backend.unmap(at: base + UInt64(i * chunkSize)) }
            try backend.unmapRun(at: tensor.address(ofChunk: run.lowerBound), chunks: run.count)
            try backend.releaseReservation(base: base, bytes: bytes)
        } catch {
            preconditionFailure("replacing \(tensor)'s run \(run) with copies: an unmap failed: \(error)")
        }
        tensor.runs.remove(run)
        for (i, index) in run.enumerated() {
            guard mapWithRetries(fresh[i], at: tensor.address(ofChunk: index)) else {
                preconditionFailure("replacing \(tensor)'s run \(run) with copies: chunk \(index) could not be mapped")
            }
            tensor.setSlot(index, .mapped(fresh[i]))
            pool.addReference(fresh[i])
            pool.dropReference(slabChunks[i])
        }
        runSplits += 1
    }

    /// Completes retirements under the lock (waiting for the oldest fence first if asked): the
    /// paths that need a chunk or an empty slot now. The mapper's `reclaim` unmaps outside it.
    private func reclaimLocked(waitForOldest: Bool, limit: Int = .max) throws -> Int {
        if waitForOldest, let first = retiring.first {
            do { try backend.wait(first.tensor.fence(at: first.index)) } catch { throw VTensorError.from(error) }
        }
        let completed = try completedRetirementsLocked(limit: limit)
        unmapCompleted(completed)
        for entry in completed { emptyRetiredLocked(entry) }
        for entry in completed where entry.tensor.isFreed { releaseReservationIfIdleLocked(entry.tensor) }
        do { _ = try pool.trim(to: pool.highWatermark) } catch { throw VTensorError.from(error) }
        return completed.count
    }

    /// Takes up to `limit` retirements whose fences have completed out of the retire queue, oldest
    /// first; their slots stay `.retiring` for the caller to unmap.
    private func completedRetirementsLocked(limit: Int) throws -> [Retired] {
        var done: [Fence: Bool] = [:]
        var completed: [Retired] = []
        // Stopping at the limit: a slice of a few unmaps looks at the queue's front, not the
        // whole queue (which made reclaiming n chunks cost n^2 / 4 steps).
        try retiring.scan(while: { completed.count < limit }) { entry in
            guard case .retiring(_, let fence) = entry.tensor.slots[entry.index] else {
                preconditionFailure("retire queue entry is not retiring")
            }
            let complete: Bool
            if let known = done[fence] {
                complete = known
            } else {
                do { complete = try backend.isComplete(fence) } catch { throw VTensorError.from(error) }
                done[fence] = complete
            }
            guard complete else { return false }
            let count = entry.tensor.runs.run(containing: entry.index)?.count ?? 1
            completed.append(Retired(tensor: entry.tensor, index: entry.index, count: count))
            return true
        }
        return completed
    }

    /// The slots of a retirement whose physical unmap is done: empty, their chunks' references
    /// dropped, a run forgotten.
    private func emptyRetiredLocked(_ entry: Retired) {
        for index in entry.slots {
            guard let chunk = entry.tensor.slots[index].chunk else { preconditionFailure("an unmapped slot held no chunk") }
            entry.tensor.setSlot(index, .empty)
            pool.dropReference(chunk)
        }
        if entry.count > 1 { entry.tensor.runs.remove(entry.slots) }
    }

    private func releaseReservationIfIdleLocked(_ tensor: VirtualTensor) {
        guard tensor.isFreed, !tensor.reservationReleased, tensor.slots.allSatisfy({ $0 == .empty }) else { return }
        if spareRangeCount < Self.maxSpareRanges {
            spareRanges[tensor.reservedBytes, default: []].append(tensor.base)
            spareRangeCount += 1
        } else {
            do {
                try backend.releaseReservation(base: tensor.base, bytes: tensor.reservedBytes)
            } catch {
                preconditionFailure("releasing the reservation of \(tensor) failed: \(error)")
            }
        }
        tensor.reservationReleased = true
        tensors[tensor.id] = nil
    }

    private func releaseSpareRangesLocked() {
        for (bytes, bases) in spareRanges {
            for base in bases { try? backend.releaseReservation(base: base, bytes: bytes) }
        }
        spareRanges = [:]
        spareRangeCount = 0
    }

    /// Gives the address ranges kept for reuse back to the backend (they hold no memory).
    public func releaseSpareRanges() {
        lock.withLock { releaseSpareRangesLocked() }
    }

    private func scratchLocked() throws -> VirtualTensor {
        if let scratch { return scratch }
        let base: UInt64
        do { base = try backend.reserve(bytes: chunkSize) } catch { throw VTensorError.from(error) }
        let tensor = VirtualTensor(id: 0, base: base, chunkCount: 1, chunkSize: chunkSize)
        scratch = tensor
        return tensor
    }

    /// Teardown only: unmaps everything of a tensor immediately and frees its reservation.
    private func releaseAllLocked(_ tensor: VirtualTensor) {
        for index in 0..<tensor.chunkCount {
            guard let chunk = tensor.slots[index].chunk else { continue }
            if case .pendingAlias = tensor.slots[index] {
                pendingAliases -= 1
            } else if let run = tensor.runs.run(containing: index) {
                if run.lowerBound == index { try? backend.unmapRun(at: tensor.address(ofChunk: index), chunks: run.count) }
            } else {
                try? backend.unmap(at: tensor.address(ofChunk: index))
            }
            tensor.setSlot(index, .empty)
            pool.dropReference(chunk)
        }
        tensor.runs = MappingRuns()
        if !tensor.reservationReleased {
            try? backend.releaseReservation(base: tensor.base, bytes: tensor.reservedBytes)
            tensor.reservationReleased = true
        }
    }
}

extension VirtualTensor {
    func fence(at index: Int) -> Fence {
        guard case .retiring(_, let fence) = slots[index] else { preconditionFailure("slot \(index) is not retiring") }
        return fence
    }
}

/// The retire queue: entries in the order they were retired (their fences in recording order),
/// removed from the front or, when a later fence completes first, from the middle. The front is a
/// head index, so taking a few entries costs what they cost, not the length of the queue.
struct RetireQueue {
    typealias Entry = (tensor: VirtualTensor, index: Int)
    private var storage: [Entry] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { count == 0 }
    var first: Entry? { isEmpty ? nil : storage[head] }
    var entries: ArraySlice<Entry> { storage[head...] }

    mutating func append(_ entry: Entry) { storage.append(entry) }

    /// Takes the entry for `tensor`'s slot `index` out (a retiring mapping taken back into use);
    /// looks from the back, where recent retirements are.
    mutating func remove(_ tensor: VirtualTensor, _ index: Int) {
        guard let i = storage[head...].lastIndex(where: { $0.tensor === tensor && $0.index == index }) else {
            preconditionFailure("\(tensor) chunk \(index) is not in the retire queue")
        }
        storage.remove(at: i)
    }

    /// Entries of `old` now belong to `new` (a tensor handed over: same slots, new object).
    mutating func replaceTensor(_ old: VirtualTensor, with new: VirtualTensor) {
        for i in head..<storage.count where storage[i].tensor === old { storage[i].tensor = new }
    }

    /// Visits entries from the front while `more()` holds; `take` says whether an entry leaves
    /// the queue. Entries kept stay in order, ahead of the ones not visited.
    mutating func scan(while more: () -> Bool, take: (Entry) throws -> Bool) rethrows {
        var kept: [Entry] = []
        var i = head
        defer {
            // The kept entries go back right before the first unvisited one.
            let newHead = i - kept.count
            for (k, entry) in kept.enumerated() { storage[newHead + k] = entry }
            head = newHead
            if head == storage.count {
                storage.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 64 && head * 2 > storage.count {
                storage.removeFirst(head)
                head = 0
            }
        }
        while i < storage.count, more() {
            let entry = storage[i]
            let taken: Bool
            do {
                taken = try take(entry)
            } catch {
                kept.append(entry)  // not taken: it stays in the queue
                i += 1
                throw error
            }
            i += 1
            if !taken { kept.append(entry) }
        }
    }
}
