import Foundation
/// How much physical memory the pool may hold at most. A cap, never an allocation: chunks
/// are created only when a tensor needs them.
public enum MemoryBudget: Sendable, Equatable, CustomStringConvertible {
    case bytes(Int)
    /// A fraction (0, 1] of the device memory free when the pool is made.
    case fractionOfFree(Double)
    /// A fraction (0, 1] of all the device's memory that the process may use in all, weights and
    /// workspace included (vLLM's `--gpu-memory-utilization`): the pool gets that share less what
    /// is in use when it is made.
    case fractionOfTotal(Double)

    public var description: String {
        switch self {
        case .bytes(let n): return "\(n) bytes"
        case .fractionOfFree(let f): return "\(f) of free memory"
        case .fractionOfTotal(let f): return "\(f) of the device's memory, less what is in use"
        }
    }

    /// The budget in bytes on a device (named `device` in errors) with `free` of its `total`
    /// bytes free now; an error that names the problem when it holds nothing.
    public func bytes(free: Int, total: Int, device: String? = nil) throws -> Int {
        func gib(_ n: Int) -> String { String(format: "%.1f GiB", Double(n) / Double(1 << 30)) }
        switch self {
        case .bytes(let n):
            guard n > 0 else { throw VTensorError.invalidBudget("a budget of \(n) bytes holds no chunk") }
            guard n <= total else {
                throw VTensorError.invalidBudget("\(n) bytes is more than the \(device.map { $0 + " " } ?? "")device has (\(total) bytes)")
            }
            return n
        case .fractionOfFree(let f):
            guard f > 0, f <= 1 else { throw VTensorError.invalidBudget("fraction of free memory must be in (0, 1], got \(f)") }
            return Int(Double(free) * f)
        case .fractionOfTotal(let f):
            guard f > 0, f <= 1 else { throw VTensorError.invalidBudget("fraction of the device's memory must be in (0, 1], got \(f)") }
            let share = Int(Double(total) * f), used = total - free
            guard share > used else {
                throw VTensorError.invalidBudget("\(f) of the device's memory is \(gib(share)) of \(gib(total)), and \(gib(used)) is in use already (weights, workspace, other processes): nothing is left for the KV cache")
            }
            return share - used
        }
    }
}

/// Which reserve chunk a new mapping takes.
public enum ChunkReuseOrder: String, Sendable, Codable {
    /// The chunk that entered the reserve last (LIFO).
    case newestFirst
    /// The chunk that entered the reserve first (FIFO): freshly created chunks map in creation order.
    case oldestFirst

    /// Oldest first. The order's effect moves from machine to machine: on one H200 the warm pool
    /// mapped 31,900 chunks/s oldest first against 18,200 newest first (raw driver calls 32,700),
    /// on another 24,852 against 33,933 (raw 27,340; docs/perf.md, 2026-12-03). Oldest first
    /// stayed above 20,000 on both.
    public static let `default`: ChunkReuseOrder = .oldestFirst
}

/// A queue of chunks that can be taken from either end.
struct ChunkQueue {
    private var storage: [PhysicalChunk] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { count == 0 }
    var chunks: ArraySlice<PhysicalChunk> { storage[head...] }

    mutating func append(_ chunk: PhysicalChunk) { storage.append(chunk) }

    mutating func popLast() -> PhysicalChunk? { isEmpty ? nil : storage.removeLast() }

    /// Takes out every chunk `remove` says to (order kept); returns them.
    mutating func removeAll(where remove: (PhysicalChunk) -> Bool) -> [PhysicalChunk] {
        let removed = storage[head...].filter(remove)
        guard !removed.isEmpty else { return [] }
        storage = storage[head...].filter { !remove($0) }
        head = 0
        return removed
    }

    mutating func popFirst() -> PhysicalChunk? {
        guard !isEmpty else { return nil }
        let chunk = storage[head]
        head += 1
        if head > 64 && head * 2 > storage.count {  // compact now and then
            storage.removeFirst(head)
            head = 0
        }
        return chunk
    }
}

/// The elastic pool of physical chunks. Chunks no tensor maps wait in a warm reserve (taken in
/// `reuseOrder`); the reserve is refilled up to the low watermark
/// ahead of need (by the mapper thread) and trimmed back to the high watermark, releasing the
/// excess to the device. Not thread-safe: `VirtualMemory` owns it under its lock.
///
/// Slabs (one allocation of several chunks, `makeSlab`) hold a cached prefix that many tensors
/// map as one run each, or a run of fresh chunks a step writes whole (`takeIdleOrNewSlab`).
/// Their chunks are counted in `created` and referenced per mapping like any chunk. Once no
/// tensor maps one:
/// - where the backend maps a slab's chunks alone (`mapsSlabParts`), it waits in the reserve as
///   a fresh chunk for anyone, and a slab goes back to the device whole when all its chunks wait
///   there, so a chunk nobody maps is always one a new mapping can take;
/// - where it maps slabs only whole (CUDA: `cuMemMap` takes no offset), it is idle
///   (`idleSlabChunks`), never handed out alone; a slab whose chunks are all idle maps whole
///   again as a fresh run if its size is one (`reusableSlabChunks`, counted against the high
///   watermark with the reserve), and is otherwise released at the next trim, or at once when
///   the budget needs its room.
struct ChunkPool {
    let backend: any MemoryBackend
    let budgetChunks: Int
    let lowWatermark: Int
    let highWatermark: Int

    /// Chunks with no mapping, ready for reuse.
    let reuseOrder: ChunkReuseOrder
    /// Whether a slab's chunks map only as the whole slab (see the type's note): the backend's
    /// answer, asked once (the hot paths ask per chunk, and CUDA answers under a lock).
    let wholeSlabsOnly: Bool
    private(set) var reserve = ChunkQueue()
    /// Mapping count of every chunk that is mapped at least once (retiring mappings count).
    private(set) var references: [PhysicalChunk: Int] = [:]
    private(set) var created = 0
    private(set) var peakCreated = 0
    private(set) var totalCreated = 0
    private(set) var totalReleased = 0

    /// Each slab chunk's slab, each slab's chunks (in order), and how many of them are in the reserve.
    private(set) var slabOf: [PhysicalChunk: (slab: Int, index: Int)] = [:]
    private(set) var slabs: [Int: [PhysicalChunk]] = [:]
    private(set) var slabChunksInReserve: [Int: Int] = [:]
    private(set) var nextSlab = 1
    /// Slab chunks nobody maps where slabs map only whole: not in the reserve.
    private(set) var idleSlab: Set<PhysicalChunk> = []
    var idleSlabChunks: Int { idleSlab.count }
    /// Slabs whose chunks are all idle, by chunk count: ready to map whole again
    /// (`takeIdleOrNewSlab`), or to release.
    private(set) var wholeIdle: [Int: Set<Int>] = [:]
    private(set) var wholeIdleChunks = 0

    /// Content identities: a number per chunk whose bytes copies share (`VirtualMemory`'s
    /// `contentIdentity`). Taken from a counter, so a number is never reused; a copy of a chunk
    /// whose bytes stay as they are gets its source's; a chunk given back forgets its number.
    private(set) var contentOf: [PhysicalChunk: UInt64] = [:]
    private(set) var nextContent: UInt64 = 1

    mutating func contentIdentity(_ chunk: PhysicalChunk) -> UInt64 {
        if let known = contentOf[chunk] { return known }
        let fresh = nextContent
        nextContent += 1
        contentOf[chunk] = fresh
        return fresh
    }

    /// `copy` now holds `source`'s bytes, and neither will be written again.
    mutating func inheritContent(_ copy: PhysicalChunk, from source: PhysicalChunk) {
        contentOf[copy] = contentIdentity(source)
    }

    /// `chunk`'s bytes are about to change (it serves as a fresh chunk again).
    mutating func forgetContent(_ chunk: PhysicalChunk) { contentOf[chunk] = nil }

    var inUse: Int { references.count }

    private mutating func putInReserve(_ chunk: PhysicalChunk) {
        contentOf[chunk] = nil
        if let slab = slabOf[chunk]?.slab {
            slabChunksInReserve[slab, default: 0] += 1
            if wholeSlabsOnly {
                idleSlab.insert(chunk)
                let count = slabs[slab]!.count
                if slabChunksInReserve[slab] == count {
                    wholeIdle[count, default: []].insert(slab)
                    wholeIdleChunks += count
                }
                return
            }
        }
        reserve.append(chunk)
    }

    /// The largest slab kept idle for reuse as a fresh slab (`VirtualMemory.freshSlabChunks`): an
    /// idle slab of a power of two up to this many chunks waits like a reserve chunk; any other
    /// goes back to the device at the next trim.
    var reusableSlabChunks = 0

    private func isReusable(_ count: Int) -> Bool {
        count <= reusableSlabChunks && count & (count - 1) == 0
    }

    /// Releases slabs whose chunks are all idle (slabs mapped only whole): every one no fresh
    /// run can reuse, then reusable ones, largest first, until the reserve and the idle whole
    /// slabs hold at most `keeping` chunks. Returns the chunks released (possibly more than
    /// asked: a slab goes whole).
    private mutating func releaseIdleSlabs(keeping: Int = 0) throws -> Int {
        guard wholeSlabsOnly, wholeIdleChunks > 0 else { return 0 }
        var released = 0
        let sizes = wholeIdle.keys.sorted { (isReusable($0) ? 1 : 0, -$0) < (isReusable($1) ? 1 : 0, -$1) }
        for count in sizes {
            while !isReusable(count) || reserve.count + wholeIdleChunks > keeping, let slab = wholeIdle[count]?.first {
                let chunks = slabs[slab]!
                try backend.releaseSlab(chunks)
                wholeIdle[count]!.remove(slab)
                wholeIdleChunks -= count
                slabs[slab] = nil
                slabChunksInReserve[slab] = nil
                for chunk in chunks {
                    slabOf[chunk] = nil
                    idleSlab.remove(chunk)
                }
                created -= chunks.count
                totalReleased += chunks.count
                released += chunks.count
            }
            if wholeIdle[count]?.isEmpty == true { wholeIdle[count] = nil }
        }
        return released
    }

    /// A slab of `count` chunks to map whole at fresh slots (a run of new tokens): one whose
    /// chunks are all idle, else one made under the budget (idle slabs of other sizes, then
    /// reserve chunks, released to make room); nil when neither is possible. The caller maps
    /// it (each chunk then `addReference`d) or hands its chunks back (`giveBack`).
    mutating func takeIdleOrNewSlab(_ count: Int) throws -> [PhysicalChunk]? {
        guard wholeSlabsOnly, count > 1 else { return nil }
        if let slab = wholeIdle[count]?.first { return slabs[slab]! }
        return try makeSlab(count)
    }

    private mutating func takeFromReserve() -> PhysicalChunk? {
        guard let chunk = reuseOrder == .newestFirst ? reserve.popLast() : reserve.popFirst() else { return nil }
        if let slab = slabOf[chunk]?.slab { slabChunksInReserve[slab]! -= 1 }
        return chunk
    }

    /// Makes a slab of `count` chunks under the budget, releasing reserve chunks to make room if
    /// needed; nil when the budget cannot hold it. The chunks are the caller's to map (each
    /// then `addReference`d) or to hand back (`giveBack`).
    mutating func makeSlab(_ count: Int) throws -> [PhysicalChunk]? {
        guard count > 0, count <= budgetChunks else { return nil }
        if created + count > budgetChunks { _ = try releaseIdleSlabs(keeping: max(0, reserve.count + wholeIdleChunks - (created + count - budgetChunks))) }
        if created + count > budgetChunks {
            _ = try trim(to: max(0, reserve.count - (created + count - budgetChunks)))
            guard created + count <= budgetChunks else { return nil }
        }
        let chunks = try backend.createSlab(chunks: count)
        let slab = nextSlab
        nextSlab += 1
        slabs[slab] = chunks
        slabChunksInReserve[slab] = 0
        for (index, chunk) in chunks.enumerated() { slabOf[chunk] = (slab, index) }
        created += count
        totalCreated += count
        peakCreated = max(peakCreated, created)
        return chunks
    }

    func isSlabChunk(_ chunk: PhysicalChunk) -> Bool { slabOf[chunk] != nil }

    /// A live slab's chunks, in order.
    func slabChunks(_ slab: Int) -> [PhysicalChunk]? { slabs[slab] }

    /// A slab chunk's slab, its index there and the slab's chunk count.
    func slabPlace(_ chunk: PhysicalChunk) -> (slab: Int, index: Int, count: Int)? {
        guard let place = slabOf[chunk] else { return nil }
        return (place.slab, place.index, slabs[place.slab]!.count)
    }

    /// Whether `chunk` belongs to a slab of several chunks that maps only whole.
    func mapsOnlyWithItsSlab(_ chunk: PhysicalChunk) -> Bool {
        guard let place = slabOf[chunk], slabs[place.slab]!.count > 1 else { return false }
        return wholeSlabsOnly
    }

    /// Whether `chunks` are adjacent chunks of one slab, in order: they map as one run.
    func formRun(_ chunks: some Collection<PhysicalChunk>) -> Bool {
        guard let first = chunks.first, let place = slabOf[first], let all = slabs[place.slab],
              place.index + chunks.count <= all.count else { return false }
        return zip(chunks, all[place.index...]).allSatisfy { $0 == $1 }
    }

    /// Whether `next` follows `chunk` in the same slab.
    func follows(_ next: PhysicalChunk, _ chunk: PhysicalChunk) -> Bool {
        guard let a = slabOf[chunk], let b = slabOf[next] else { return false }
        return a.slab == b.slab && b.index == a.index + 1
    }

    /// Takes a chunk for a new mapping: from the reserve, else newly created under the budget.
    /// Returns nil when the budget is exhausted; throws when the device itself is out of memory.
    mutating func take() throws -> PhysicalChunk? {
        let chunk: PhysicalChunk
        if created >= budgetChunks && reserve.isEmpty { _ = try releaseIdleSlabs(keeping: max(0, wholeIdleChunks - 1)) }
        if let reused = takeFromReserve() {
            chunk = reused
        } else if created < budgetChunks {
            chunk = try backend.createChunk()
            created += 1
            totalCreated += 1
            peakCreated = max(peakCreated, created)
        } else {
            return nil
        }
        return chunk
    }

    /// Records a new mapping of a chunk just taken (count 1) or already mapped (alias).
    mutating func addReference(_ chunk: PhysicalChunk) {
        if !idleSlab.isEmpty, idleSlab.remove(chunk) != nil {
            let slab = slabOf[chunk]!.slab, count = slabs[slab]!.count
            if slabChunksInReserve[slab] == count, wholeIdle[count]?.remove(slab) != nil {
                wholeIdleChunks -= count
                if wholeIdle[count]!.isEmpty { wholeIdle[count] = nil }
            }
            slabChunksInReserve[slab]! -= 1
        }
        references[chunk, default: 0] += 1
    }

    /// Drops one mapping; the chunk returns to the reserve when none is left.
    mutating func dropReference(_ chunk: PhysicalChunk) {
        guard let count = references[chunk] else { preconditionFailure("\(chunk) has no mapping to drop") }
        if count == 1 {
            references[chunk] = nil
            putInReserve(chunk)
        } else {
            references[chunk] = count - 1
        }
    }

    /// Returns a taken chunk that never got mapped (a failed map).
    mutating func giveBack(_ chunk: PhysicalChunk) {
        precondition(references[chunk] == nil, "\(chunk) is still mapped")
        putInReserve(chunk)
    }

    func referenceCount(_ chunk: PhysicalChunk) -> Int { references[chunk] ?? 0 }

    /// Creates chunks until the reserve holds `lowWatermark` (within the budget).
    mutating func replenish(limit: Int = .max) throws -> Int {
        var made = 0
        while reserve.count < lowWatermark, created < budgetChunks, made < limit {
            reserve.append(try backend.createChunk())
            created += 1
            totalCreated += 1
            peakCreated = max(peakCreated, created)
            made += 1
        }
        return made
    }

    /// Releases reserve chunks above `limit` back to the device (cuMemRelease): first slabs whose
    /// chunks all wait in the reserve (whole, so possibly a little below `limit`), then single
    /// chunks from the newest end. A slab's chunk alone is never released.
    mutating func trim(to limit: Int) throws -> Int {
        var released = try releaseIdleSlabs(keeping: limit)
        if reserve.count > limit, slabChunksInReserve.values.contains(where: { $0 > 0 }) {
            for (slab, waiting) in slabChunksInReserve where reserve.count > limit && waiting == slabs[slab]!.count {
                let chunks = slabs[slab]!
                let members = Set(chunks)
                _ = reserve.removeAll { members.contains($0) }
                do {
                    try backend.releaseSlab(chunks)
                } catch {
                    for chunk in chunks { reserve.append(chunk) }
                    throw error
                }
                slabs[slab] = nil
                slabChunksInReserve[slab] = nil
                for chunk in chunks { slabOf[chunk] = nil }
                created -= chunks.count
                totalReleased += chunks.count
                released += chunks.count
            }
        }
        var kept: [PhysicalChunk] = []
        defer { for chunk in kept.reversed() { reserve.append(chunk) } }
        while reserve.count + kept.count > limit, let chunk = reserve.popLast() {
            if slabOf[chunk] != nil {
                kept.append(chunk)
                continue
            }
            do {
                try backend.releaseChunk(chunk)
            } catch {
                reserve.append(chunk)
                throw error
            }
            created -= 1
            totalReleased += 1
            released += 1
        }
        return released
    }

    /// Live slabs and the chunks they hold.
    var slabCount: Int { slabs.count }
    var slabChunkCount: Int { slabOf.count }
}
