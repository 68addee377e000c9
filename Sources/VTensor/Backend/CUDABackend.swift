import GPU
import Synchronization

/// The GPU backend: CUDA's virtual memory management API (cuMemAddressReserve, cuMemCreate,
/// cuMemMap, cuMemSetAccess, cuMemUnmap, cuMemRelease) on one device.
///
/// Fences are CUDA events recorded on the work stream. Every kernel that reads KV memory must
/// run on that stream (or be ordered before it), so that a fence recorded at unmap time covers
/// it. Driver calls may come from any thread; the backend makes its context current first.
public final class CUDABackend: MemoryBackend {
    public let name = "cuda"
    /// Every kernel that touches KV memory runs on the work stream, in order.
    public var ordersWork: Bool { true }
    public let context: CUDAContext
    /// Where kernels that read mapped memory are launched, and where fences are recorded.
    public let workStream: CUDAStream
    public let chunkSize: Int
    public let totalPhysicalBytes: Int
    private let driver: CUDADriver
    private let ordinal: Int
    private let fences = Mutex(FenceTable())
    /// The alignment of new reservations (0: a chunk); see `setReservationAlignment`.
    private let alignment = Mutex(0)

    private struct FenceTable {
        var next: UInt64 = 1
        var pending: [UInt64: CUDAEvent] = [:]
        var spare: [CUDAEvent] = []
    }

    public init(context: CUDAContext, workStream: CUDAStream) throws {
        try context.device.requireVirtualMemory()
        self.context = context
        self.workStream = workStream
        self.driver = context.driver
        self.ordinal = context.ordinal
        self.chunkSize = try context.driver.allocationGranularity(device: context.ordinal)
        self.totalPhysicalBytes = context.device.totalMemory
    }

    public func freePhysicalBytes() throws -> Int { try context.memoryInfo().free }

    private func current() throws -> CUDADriver {
        try context.makeCurrent()
        return driver
    }

    public func reserve(bytes: Int) throws -> UInt64 {
        let aligned = max(chunkSize, alignment.withLock { $0 })
        return try wrap { try current().reserveAddressRange(size: bytes, alignment: aligned) }
    }

    /// Aligns every reservation made from now on to `bytes` (a multiple of the chunk size; 0: a
    /// chunk): measurements of how where the address space lands changes reads (`bench vmm`).
    public func setReservationAlignment(_ bytes: Int) {
        precondition(bytes >= 0 && bytes % chunkSize == 0, "a reservation alignment is a multiple of the chunk size")
        alignment.withLock { $0 = bytes }
    }

    public func releaseReservation(base: UInt64, bytes: Int) throws {
        try wrap { try current().freeAddressRange(base, size: bytes) }
    }

    public func createChunk() throws -> PhysicalChunk {
        try wrap { PhysicalChunk(raw: try current().createPhysical(size: chunkSize, device: ordinal)) }
    }

    public func releaseChunk(_ chunk: PhysicalChunk) throws {
        guard Self.slabPart(chunk) == nil else {
            throw BackendError(operation: "releaseChunk", message: "\(chunk) belongs to a slab: release the slab whole")
        }
        try wrap { try current().releasePhysical(chunk.raw) }
    }

    public func map(_ chunk: PhysicalChunk, at address: UInt64) throws {
        if let (slab, index) = Self.slabPart(chunk) {
            let (handle, count) = try slabEntry(slab)
            guard count == 1 || mapsSlabParts else {
                throw BackendError(operation: "map", message: "chunk \(index) of a slab of \(count) alone: the driver maps an allocation only whole (cuMemMap takes no offset)")
            }
            try wrap { try current().map(address: address, size: chunkSize, offset: index * chunkSize, handle: handle) }
        } else {
            try wrap { try current().map(address: address, size: chunkSize, handle: chunk.raw) }
        }
    }

    // MARK: Slabs

    /// A slab's chunks are named by the slab's number and their index in it, with the top bit
    /// set (a `cuMemCreate` handle is a pointer-sized value without it); the table holds each
    /// slab's handle.
    private struct SlabTable {
        var next: UInt64 = 1
        var handles: [UInt64: (handle: UInt64, count: Int)] = [:]
    }
    private let slabTable = Mutex(SlabTable())
    private static let slabBit: UInt64 = 1 << 63
    private static let indexBits: UInt64 = 24

    private static func slabPart(_ chunk: PhysicalChunk) -> (slab: UInt64, index: Int)? {
        guard chunk.raw & slabBit != 0 else { return nil }
        let bits = chunk.raw & ~slabBit
        return (bits >> indexBits, Int(bits & ((1 << indexBits) - 1)))
    }

    private func slabEntry(_ slab: UInt64) throws -> (handle: UInt64, count: Int) {
        guard let entry = slabTable.withLock({ $0.handles[slab] }) else {
            throw BackendError(operation: "map", message: "slab \(slab) is not live")
        }
        return entry
    }

    /// Whether an allocation of several chunks maps whole here, twice at once, with access
    /// (slabs), and whether `cuMemMap` also takes an offset into one (`mapsSlabParts`; CUDA 13
    /// on an H200 refused it, 2026-12-05). Asked once, on a scratch allocation of two chunks.
    public var makesSlabs: Bool { slabProbe.withLock { known in
        if known == nil { known = probeSlabs() }
        return known!.whole
    } }
    public var mapsSlabParts: Bool { slabProbe.withLock { known in
        if known == nil { known = probeSlabs() }
        return known!.parts
    } }
    private let slabProbe = Mutex<(whole: Bool, parts: Bool)?>(nil)
    /// Measured on an H200 (docs/perf.md, 2026-12-05, third session): packing a shared 2,048-token
    /// system prompt (128 chunks of Llama-3-8B) took shared-prefix throughput from 0.84-0.98x
    /// paged to 0.97-0.99x, and multi-turn with a shared system prompt from 0.77x to 0.94x.
    public var defaultPackChunks: Int { 32 }
    public var defaultFreshSlabChunks: Int { 32 }

    public func createSlab(chunks count: Int) throws -> [PhysicalChunk] {
        guard count > 0, UInt64(count) < (1 << Self.indexBits) else {
            throw BackendError(operation: "createSlab", message: "a slab of \(count) chunks")
        }
        let handle = try wrap { try current().createPhysical(size: count * chunkSize, device: ordinal) }
        let slab = slabTable.withLock { table -> UInt64 in
            let slab = table.next
            table.next += 1
            table.handles[slab] = (handle, count)
            return slab
        }
        return (0..<count).map { PhysicalChunk(raw: Self.slabBit | (slab << Self.indexBits) | UInt64($0)) }
    }

    public func releaseSlab(_ chunks: [PhysicalChunk]) throws {
        guard let first = chunks.first, let (slab, index) = Self.slabPart(first), index == 0,
              let entry = slabTable.withLock({ $0.handles[slab] }), entry.count == chunks.count else {
            throw BackendError(operation: "releaseSlab", message: "\(chunks.first.map { "\($0)" } ?? "nothing") + \(chunks.count) chunks is not a whole slab")
        }
        try wrap { try current().releasePhysical(entry.handle) }
        _ = slabTable.withLock { $0.handles.removeValue(forKey: slab) }
    }

    public func mapRun(_ chunks: [PhysicalChunk], at address: UInt64) throws {
        guard let first = chunks.first, let (slab, index) = Self.slabPart(first),
              chunks.enumerated().allSatisfy({ $1.raw == first.raw + UInt64($0) }) else {
            throw BackendError(operation: "mapRun", message: "\(chunks.count) chunks that are not adjacent chunks of one slab")
        }
        let (handle, count) = try slabEntry(slab)
        guard mapsSlabParts || (index == 0 && chunks.count == count) else {
            throw BackendError(operation: "mapRun", message: "chunks \(index)..<\(index + chunks.count) of a slab of \(count): the driver maps an allocation only whole (cuMemMap takes no offset)")
        }
        try wrap { try current().map(address: address, size: chunks.count * chunkSize, offset: index * chunkSize, handle: handle) }
    }

    public func unmapRun(at address: UInt64, chunks count: Int) throws {
        try wrap { try current().unmap(address: address, size: count * chunkSize) }
    }

    /// Maps a two-chunk allocation whole at two addresses at once, with access (slabs), then its
    /// second chunk alone at offset one chunk (parts).
    private func probeSlabs() -> (whole: Bool, parts: Bool) {
        guard let driver = try? current(), let base = try? driver.reserveAddressRange(size: 5 * chunkSize, alignment: chunkSize) else { return (false, false) }
        defer { try? driver.freeAddressRange(base, size: 5 * chunkSize) }
        guard let handle = try? driver.createPhysical(size: 2 * chunkSize, device: ordinal) else { return (false, false) }
        defer { try? driver.releasePhysical(handle) }
        var mapped: [UInt64] = []
        defer { for at in mapped { try? driver.unmap(address: at, size: 2 * chunkSize) } }
        for at in [base, base + UInt64(2 * chunkSize)] {
            guard (try? driver.map(address: at, size: 2 * chunkSize, offset: 0, handle: handle)) != nil else { return (false, false) }
            mapped.append(at)
            guard (try? driver.setAccess(address: at, size: 2 * chunkSize, device: ordinal)) != nil else { return (false, false) }
        }
        let part = base + UInt64(4 * chunkSize)
        guard (try? driver.map(address: part, size: chunkSize, offset: chunkSize, handle: handle)) != nil else { return (true, false) }
        defer { try? driver.unmap(address: part, size: chunkSize) }
        return (true, (try? driver.setAccess(address: part, size: chunkSize, device: ordinal)) != nil)
    }

    public func setAccess(at address: UInt64, bytes: Int) throws {
        try wrap { try current().setAccess(address: address, size: bytes, device: ordinal, readWrite: true) }
    }

    public func unmap(at address: UInt64) throws {
        try wrap { try current().unmap(address: address, size: chunkSize) }
    }

    /// Whether `cuMemUnmap` takes a range over several adjacent mappings (the documentation
    /// speaks of "the entire contiguous address range that was mapped to"): asked once, on a
    /// scratch range of two chunks of its own.
    public var unmapsRuns: Bool { runUnmap.withLock { known in
        if let known { return known }
        let answer = probeRunUnmap()
        known = answer
        return answer
    } }
    private let runUnmap = Mutex<Bool?>(nil)

    public func unmap(at address: UInt64, chunks count: Int) throws {
        if count > 1 && unmapsRuns {
            try wrap { try current().unmap(address: address, size: count * chunkSize) }
        } else {
            for i in 0..<count { try unmap(at: address + UInt64(i * chunkSize)) }
        }
    }

    private func probeRunUnmap() -> Bool {
        guard let driver = try? current(), let base = try? driver.reserveAddressRange(size: 2 * chunkSize, alignment: chunkSize) else { return false }
        defer { try? driver.freeAddressRange(base, size: 2 * chunkSize) }
        var handles: [UInt64] = []
        defer { for h in handles { try? driver.releasePhysical(h) } }
        var mapped: [UInt64] = []
        for i in 0..<2 {
            guard let h = try? driver.createPhysical(size: chunkSize, device: ordinal) else { return false }
            handles.append(h)
            let at = base + UInt64(i * chunkSize)
            guard (try? driver.map(address: at, size: chunkSize, handle: h)) != nil else {
                for m in mapped { try? driver.unmap(address: m, size: chunkSize) }
                return false
            }
            mapped.append(at)
        }
        if (try? driver.unmap(address: base, size: 2 * chunkSize)) != nil { return true }
        for m in mapped { try? driver.unmap(address: m, size: chunkSize) }
        return false
    }

    public func copy(from source: UInt64, to destination: UInt64, bytes: Int) throws {
        try wrap {
            try context.makeCurrent()
            try context.copyDeviceToDeviceAsync(destination: destination, source: source, bytes: bytes, stream: workStream)
        }
    }

    public func recordFence() throws -> Fence {
        try wrap {
            try context.makeCurrent()
            let event = try fences.withLock { $0.spare.popLast() } ?? CUDAEvent(context: context, timing: false)
            try event.record(on: workStream)
            return fences.withLock { table in
                let id = table.next
                table.next += 1
                table.pending[id] = event
                return Fence(raw: id)
            }
        }
    }

    public func isComplete(_ fence: Fence) throws -> Bool {
        guard let event = fences.withLock({ $0.pending[fence.raw] }) else { return true }
        let done = try wrap { try event.isComplete() }
        if done { retire(fence) }
        return done
    }

    public func wait(_ fence: Fence) throws {
        guard let event = fences.withLock({ $0.pending[fence.raw] }) else { return }
        try wrap { try event.synchronize() }
        retire(fence)
    }

    /// Completed events are recycled: creating one per fence would cost a driver call each time.
    private func retire(_ fence: Fence) {
        fences.withLock { table in
            if let event = table.pending.removeValue(forKey: fence.raw), table.spare.count < 256 {
                table.spare.append(event)
            }
        }
    }

    /// Driver errors become backend errors that keep out-of-memory distinct.
    private func wrap<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as CUDAError {
            throw BackendError(operation: error.function, message: error.description, isOutOfMemory: error.isOutOfMemory)
        }
    }
}
