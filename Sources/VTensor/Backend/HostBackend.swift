import CLinux
import Glibc
import Synchronization

/// CUDA VMM semantics on host virtual memory, so the manager's real logic runs in CI.
///
/// Physical chunks are slots of one memfd file (released slots are hole-punched, so their
/// memory goes back to the kernel); reservations are PROT_NONE mappings; mapping a chunk is
/// `mmap(MAP_FIXED|MAP_SHARED)` of its slot, so one chunk mapped at two addresses shares its
/// bytes exactly as on the GPU. The CUDA rules are checked, not assumed: mapping over a mapped
/// chunk, touching a chunk before access is set, unmapping under a live reader, releasing a
/// mapped chunk or a reservation that still has mappings are all errors here.
///
/// "Device work" is modelled by read leases (`beginRead`/`endRead`): a fence completes when
/// every lease that was live when it was recorded has ended.
public final class HostBackend: MemoryBackend {
    public let name = "host"
    public let chunkSize: Int
    /// Readers (leases) are not ordered by default: a lease is device work that may still be
    /// running whatever comes after. `ordersWork: true` models one stream, as CUDA's.
    public let ordersWork: Bool
    /// Whether a slab's chunks map alone or in part (`mapsSlabParts`). Off by default, as on
    /// CUDA, whose `cuMemMap` takes no offset: then mapping part of a slab is an error here.
    public let mapsSlabParts: Bool
    public let totalPhysicalBytes: Int
    private let fd: Int32
    private let capacityChunks: UInt64
    private let state = Mutex(State())

    /// `run`: the one mapping this chunk belongs to (its first address and chunk count) when
    /// `mapRun` made it; such a mapping is unmapped whole or not at all.
    private struct Mapping { var chunk: PhysicalChunk; var accessible: Bool; var run: (start: UInt64, count: Int)? = nil }

    private struct State {
        var nextSlot: UInt64 = 0
        var fileSlots: UInt64 = 0
        var freeSlots: [UInt64] = []
        var liveChunks: [UInt64: Int] = [:]  // slot -> number of addresses mapping it
        var reservationBases: [UInt64] = []  // sorted
        var reservationSizes: [UInt64: Int] = [:]
        var mappings: [UInt64: Mapping] = [:]  // chunk-aligned address -> mapping
        /// Live leases: a range read (`beginRead`, ended by `endRead`), or work on no particular
        /// range that ends by itself at `until` (`beginWork`, a modeled GPU step).
        var readers: [UInt64: (address: UInt64, bytes: Int)] = [:]
        var workUntil: [UInt64: UInt64] = [:]
        var nextReader: UInt64 = 1
        var fences: [UInt64: Set<UInt64>] = [:]
        var nextFence: UInt64 = 1
        /// Slabs: first slot -> chunk count, and each slab slot -> its slab's first slot.
        var slabs: [UInt64: Int] = [:]
        var slabOf: [UInt64: UInt64] = [:]
    }

    /// - Parameters:
    ///   - chunkSize: bytes per chunk; a multiple of the system page size.
    ///   - capacityBytes: the "device" size: creating more chunks than fit fails with out of memory.
    ///   - ordersWork: whether work is modelled as one ordered stream (see `ordersWork`).
    ///   - slabParts: whether a slab's chunks map alone or in part (see `mapsSlabParts`).
    public init(chunkSize: Int = 2 << 20, capacityBytes: Int = 4 << 30, ordersWork: Bool = false, slabParts: Bool = false) throws {
        self.ordersWork = ordersWork
        self.mapsSlabParts = slabParts
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard chunkSize > 0, chunkSize % page == 0 else {
            throw BackendError(operation: "host backend", message: "chunk size \(chunkSize) is not a multiple of the page size \(page)")
        }
        guard capacityBytes >= chunkSize else {
            throw BackendError(operation: "host backend", message: "capacity \(capacityBytes) bytes holds no \(chunkSize)-byte chunk")
        }
        let fd = vt_memfd_create("vtensor-host-chunks")
        guard fd >= 0 else {
            throw BackendError(operation: "memfd_create", message: String(cString: strerror(errno)))
        }
        self.fd = fd
        self.chunkSize = chunkSize
        self.capacityChunks = UInt64(capacityBytes / chunkSize)
        self.totalPhysicalBytes = Int(capacityChunks) * chunkSize
    }

    deinit { close(fd) }

    public func freePhysicalBytes() throws -> Int {
        state.withLock { (Int(capacityChunks) - $0.liveChunks.count) * chunkSize }
    }

    // MARK: Reservations

    public func reserve(bytes: Int) throws -> UInt64 {
        guard bytes > 0, bytes % chunkSize == 0 else {
            throw BackendError(operation: "reserve", message: "size \(bytes) is not a positive multiple of the chunk size \(chunkSize)")
        }
        // Over-reserve by one chunk, then trim, to get a chunk-aligned base.
        let raw = mmap(nil, bytes + chunkSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let raw, raw != MAP_FAILED else {
            throw BackendError(operation: "reserve", message: "mmap of \(bytes) bytes: \(String(cString: strerror(errno)))", isOutOfMemory: true)
        }
        let start = UInt64(UInt(bitPattern: raw))
        let base = (start + UInt64(chunkSize) - 1) / UInt64(chunkSize) * UInt64(chunkSize)
        let end = start + UInt64(bytes + chunkSize)
        if base > start { munmap(raw, Int(base - start)) }
        if end > base + UInt64(bytes) { munmap(pointer(base + UInt64(bytes)), Int(end - base - UInt64(bytes))) }
        state.withLock { s in
            let index = s.reservationBases.insertionIndex(of: base)
            s.reservationBases.insert(base, at: index)
            s.reservationSizes[base] = bytes
        }
        return base
    }

    public func releaseReservation(base: UInt64, bytes: Int) throws {
        try state.withLock { s in
            guard s.reservationSizes[base] == bytes else {
                throw BackendError(operation: "releaseReservation", message: "no reservation of \(bytes) bytes at \(hex(base))")
            }
            for offset in stride(from: 0, to: bytes, by: chunkSize) where s.mappings[base + UInt64(offset)] != nil {
                throw BackendError(operation: "releaseReservation", message: "reservation at \(hex(base)) still has a chunk mapped at offset \(offset)")
            }
            s.reservationSizes[base] = nil
            s.reservationBases.remove(at: s.reservationBases.insertionIndex(of: base))
        }
        munmap(pointer(base), bytes)
    }

    // MARK: Chunks

    public func createChunk() throws -> PhysicalChunk {
        try state.withLock { s in
            let slot: UInt64
            if let reused = s.freeSlots.popLast() {
                slot = reused
            } else {
                guard s.nextSlot < capacityChunks else {
                    throw BackendError(operation: "createChunk", message: "host device memory exhausted (\(capacityChunks) chunks of \(chunkSize) bytes)", isOutOfMemory: true)
                }
                slot = s.nextSlot
                s.nextSlot += 1
            }
            if slot >= s.fileSlots {
                // Grow the file sparsely; pages are allocated when first touched.
                guard ftruncate(fd, off_t((slot + 1) * UInt64(chunkSize))) == 0 else {
                    s.freeSlots.append(slot)
                    throw BackendError(operation: "createChunk", message: "ftruncate: \(String(cString: strerror(errno)))", isOutOfMemory: true)
                }
                s.fileSlots = slot + 1
            }
            s.liveChunks[slot] = 0
            return PhysicalChunk(raw: slot)
        }
    }

    public func releaseChunk(_ chunk: PhysicalChunk) throws {
        try state.withLock { s in
            guard let maps = s.liveChunks[chunk.raw] else {
                throw BackendError(operation: "releaseChunk", message: "\(chunk) is not a live chunk")
            }
            guard s.slabOf[chunk.raw] == nil else {
                throw BackendError(operation: "releaseChunk", message: "\(chunk) belongs to a slab: release the slab whole")
            }
            guard maps == 0 else {
                throw BackendError(operation: "releaseChunk", message: "\(chunk) is still mapped at \(maps) address(es)")
            }
            // Give the pages back; a later chunk in this slot reads zeros.
            _ = vt_punch_hole(fd, off_t(chunk.raw * UInt64(chunkSize)), off_t(chunkSize))
            s.liveChunks[chunk.raw] = nil
            s.freeSlots.append(chunk.raw)
        }
    }

    // MARK: Slabs

    /// A slab is `count` adjacent slots of the file: the first run of free slots that long, or
    /// new slots at its end.
    public var makesSlabs: Bool { true }

    public func createSlab(chunks count: Int) throws -> [PhysicalChunk] {
        guard count > 0 else { throw BackendError(operation: "createSlab", message: "a slab needs at least one chunk, got \(count)") }
        return try state.withLock { s in
            guard s.liveChunks.count + count <= Int(capacityChunks) else {
                throw BackendError(operation: "createSlab", message: "host device memory exhausted (\(capacityChunks) chunks of \(chunkSize) bytes; \(s.liveChunks.count) live, \(count) asked)", isOutOfMemory: true)
            }
            let free = s.freeSlots.sorted()
            var first: UInt64?
            var runStart = 0
            for i in free.indices {
                if i > 0 && free[i] != free[i - 1] + 1 { runStart = i }
                if i - runStart + 1 == count { first = free[runStart]; break }
            }
            if first == nil {
                guard s.nextSlot + UInt64(count) <= capacityChunks else {
                    throw BackendError(operation: "createSlab", message: "no \(count) adjacent free chunks in the host device's \(capacityChunks)", isOutOfMemory: true)
                }
                first = s.nextSlot
                s.nextSlot += UInt64(count)
            } else {
                let taken = Set(first!..<(first! + UInt64(count)))
                s.freeSlots.removeAll { taken.contains($0) }
            }
            let start = first!, end = start + UInt64(count)
            if end > s.fileSlots {
                guard ftruncate(fd, off_t(end * UInt64(chunkSize))) == 0 else {
                    if start + UInt64(count) == s.nextSlot { s.nextSlot = start } else { s.freeSlots.append(contentsOf: start..<end) }
                    throw BackendError(operation: "createSlab", message: "ftruncate: \(String(cString: strerror(errno)))", isOutOfMemory: true)
                }
                s.fileSlots = end
            }
            s.slabs[start] = count
            for slot in start..<end {
                s.liveChunks[slot] = 0
                s.slabOf[slot] = start
            }
            return (start..<end).map { PhysicalChunk(raw: $0) }
        }
    }

    public func releaseSlab(_ chunks: [PhysicalChunk]) throws {
        try state.withLock { s in
            guard let first = chunks.first, s.slabs[first.raw] == chunks.count,
                  chunks.enumerated().allSatisfy({ $1.raw == first.raw + UInt64($0) }) else {
                throw BackendError(operation: "releaseSlab", message: "\(chunks.first.map { "\($0)" } ?? "nothing") + \(chunks.count) chunks is not a whole slab")
            }
            for chunk in chunks where s.liveChunks[chunk.raw] != 0 {
                throw BackendError(operation: "releaseSlab", message: "\(chunk) of the slab is still mapped")
            }
            _ = vt_punch_hole(fd, off_t(first.raw * UInt64(chunkSize)), off_t(chunks.count * chunkSize))
            s.slabs[first.raw] = nil
            for chunk in chunks {
                s.liveChunks[chunk.raw] = nil
                s.slabOf[chunk.raw] = nil
                s.freeSlots.append(chunk.raw)
            }
        }
    }

    public func mapRun(_ chunks: [PhysicalChunk], at address: UInt64) throws {
        try state.withLock { s in
            guard let first = chunks.first else { throw BackendError(operation: "mapRun", message: "an empty run") }
            let bytes = chunks.count * chunkSize
            try checkInsideReservation(s, address: address, bytes: bytes, operation: "mapRun")
            guard let slab = s.slabOf[first.raw],
                  chunks.enumerated().allSatisfy({ $1.raw == first.raw + UInt64($0) && s.slabOf[$1.raw] == slab }) else {
                throw BackendError(operation: "mapRun", message: "\(first) + \(chunks.count) chunks are not adjacent chunks of one slab")
            }
            guard mapsSlabParts || (first.raw == slab && chunks.count == s.slabs[slab]) else {
                throw BackendError(operation: "mapRun", message: "\(first) + \(chunks.count) chunks are part of a slab of \(s.slabs[slab]!): this backend maps slabs only whole (cuMemMap takes no offset)")
            }
            for i in 0..<chunks.count where s.mappings[address + UInt64(i * chunkSize)] != nil {
                throw BackendError(operation: "mapRun", message: "\(hex(address + UInt64(i * chunkSize))) is already mapped")
            }
            let result = mmap(pointer(address), bytes, PROT_NONE, MAP_SHARED | MAP_FIXED, fd, off_t(first.raw * UInt64(chunkSize)))
            guard result != MAP_FAILED else {
                throw BackendError(operation: "mapRun", message: "mmap: \(String(cString: strerror(errno)))")
            }
            for (i, chunk) in chunks.enumerated() {
                s.liveChunks[chunk.raw]! += 1
                s.mappings[address + UInt64(i * chunkSize)] = Mapping(chunk: chunk, accessible: false, run: (address, chunks.count))
            }
        }
    }

    public func unmapRun(at address: UInt64, chunks count: Int) throws {
        try state.withLock { s in
            guard let run = s.mappings[address]?.run, run.start == address, run.count == count else {
                throw BackendError(operation: "unmapRun", message: "no mapping of \(count) chunks starts at \(hex(address))")
            }
            try unmapLocked(&s, address: address, count: count, operation: "unmapRun")
        }
    }

    // MARK: Mapping

    public func map(_ chunk: PhysicalChunk, at address: UInt64) throws {
        try state.withLock { s in
            try checkInsideReservation(s, address: address, bytes: chunkSize, operation: "map")
            guard let maps = s.liveChunks[chunk.raw] else {
                throw BackendError(operation: "map", message: "\(chunk) is not a live chunk")
            }
            if !mapsSlabParts, let slab = s.slabOf[chunk.raw], s.slabs[slab]! > 1 {
                throw BackendError(operation: "map", message: "\(chunk) is one chunk of a slab of \(s.slabs[slab]!): this backend maps slabs only whole (cuMemMap takes no offset)")
            }
            guard s.mappings[address] == nil else {
                throw BackendError(operation: "map", message: "\(hex(address)) is already mapped")
            }
            let result = mmap(pointer(address), chunkSize, PROT_NONE, MAP_SHARED | MAP_FIXED, fd, off_t(chunk.raw * UInt64(chunkSize)))
            guard result != MAP_FAILED else {
                throw BackendError(operation: "map", message: "mmap: \(String(cString: strerror(errno)))")
            }
            s.liveChunks[chunk.raw] = maps + 1
            s.mappings[address] = Mapping(chunk: chunk, accessible: false)
        }
    }

    public func setAccess(at address: UInt64, bytes: Int) throws {
        try state.withLock { s in
            guard address % UInt64(chunkSize) == 0, bytes > 0, bytes % chunkSize == 0 else {
                throw BackendError(operation: "setAccess", message: "range \(hex(address)) + \(bytes) is not chunk-aligned")
            }
            for offset in stride(from: 0, to: bytes, by: chunkSize) where s.mappings[address + UInt64(offset)] == nil {
                throw BackendError(operation: "setAccess", message: "\(hex(address + UInt64(offset))) is not mapped")
            }
            guard mprotect(pointer(address), bytes, PROT_READ | PROT_WRITE) == 0 else {
                throw BackendError(operation: "setAccess", message: "mprotect: \(String(cString: strerror(errno)))")
            }
            for offset in stride(from: 0, to: bytes, by: chunkSize) {
                s.mappings[address + UInt64(offset)]!.accessible = true
            }
        }
    }

    public func unmap(at address: UInt64) throws {
        try state.withLock { s in try unmapLocked(&s, address: address, count: 1, operation: "unmap") }
    }

    /// One `mmap` puts the reservation back over the whole run.
    public var unmapsRuns: Bool { true }

    public func unmap(at address: UInt64, chunks count: Int) throws {
        try state.withLock { s in try unmapLocked(&s, address: address, count: count, operation: "unmap") }
    }

    /// Unmaps `count` chunks from `address`: every one mapped, no live reader, and no mapping cut
    /// in part (CUDA unmaps whole mappings only).
    private func unmapLocked(_ s: inout State, address: UInt64, count: Int, operation: String) throws {
        let end = address + UInt64(count * chunkSize)
        var chunks: [PhysicalChunk] = []
        for i in 0..<count {
            let at = address + UInt64(i * chunkSize)
            guard let mapping = s.mappings[at] else {
                throw BackendError(operation: operation, message: "\(hex(at)) is not mapped")
            }
            if let run = mapping.run, run.start < address || run.start + UInt64(run.count * chunkSize) > end {
                throw BackendError(operation: operation, message: "\(hex(at)) is part of a mapping of \(run.count) chunks at \(hex(run.start)): it unmaps whole")
            }
            chunks.append(mapping.chunk)
        }
        for reader in s.readers.values where reader.address < end && reader.address + UInt64(reader.bytes) > address {
            throw BackendError(operation: operation, message: "\(hex(address)) + \(count) chunks has a live reader (device work in flight)")
        }
        let result = mmap(pointer(address), count * chunkSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
        guard result != MAP_FAILED else {
            throw BackendError(operation: operation, message: "mmap: \(String(cString: strerror(errno)))")
        }
        for (i, chunk) in chunks.enumerated() {
            s.mappings[address + UInt64(i * chunkSize)] = nil
            s.liveChunks[chunk.raw]! -= 1
        }
    }

    public func copy(from source: UInt64, to destination: UInt64, bytes: Int) throws {
        try state.withLock { s in
            try checkAccessible(s, address: source, bytes: bytes, operation: "copy (source)")
            try checkAccessible(s, address: destination, bytes: bytes, operation: "copy (destination)")
        }
        memmove(pointer(destination), pointer(source), bytes)
    }

    // MARK: Device work: read leases and fences

    /// Starts simulated device work that reads `bytes` at `address`; throws if any byte of
    /// the range is unmapped or not accessible (on a GPU that read would kill the context).
    public func beginRead(address: UInt64, bytes: Int) throws -> UInt64 {
        try state.withLock { s in
            try checkAccessible(s, address: address, bytes: bytes, operation: "read")
            let id = s.nextReader
            s.nextReader += 1
            s.readers[id] = (address, bytes)
            return id
        }
    }

    /// Starts simulated device work on no particular range that ends by itself at `deadline`
    /// (monotonic nanoseconds): a step of a modeled GPU. Fences recorded before then wait for it.
    public func beginWork(until deadline: UInt64) -> UInt64 {
        state.withLock { s in
            Self.endWorkDone(&s)
            let id = s.nextReader
            s.nextReader += 1
            s.readers[id] = (0, 0)
            s.workUntil[id] = deadline
            return id
        }
    }

    /// Work leases whose time has come end.
    private static func endWorkDone(_ s: inout State) {
        guard !s.workUntil.isEmpty else { return }
        let now = monotonicNanos()
        for (id, deadline) in s.workUntil where deadline <= now {
            s.workUntil[id] = nil
            s.readers[id] = nil
        }
    }

    public func endRead(_ reader: UInt64) {
        state.withLock { s in
            precondition(s.readers.removeValue(forKey: reader) != nil, "endRead of unknown reader \(reader)")
        }
    }

    public func recordFence() throws -> Fence {
        state.withLock { s in
            Self.endWorkDone(&s)
            let id = s.nextFence
            s.nextFence += 1
            if !s.readers.isEmpty { s.fences[id] = Set(s.readers.keys) }
            return Fence(raw: id)
        }
    }

    public func isComplete(_ fence: Fence) throws -> Bool {
        state.withLock { s in
            guard let pending = s.fences[fence.raw] else { return true }
            Self.endWorkDone(&s)
            if pending.contains(where: { s.readers[$0] != nil }) { return false }
            s.fences[fence.raw] = nil
            return true
        }
    }

    /// Waits (polling) up to 10 s for the readers the fence covers to end, then throws: in a
    /// test a reader nobody ends would otherwise hang the suite.
    public func wait(_ fence: Fence) throws {
        let deadline = monotonicNanos() + 10_000_000_000
        while try !isComplete(fence) {
            guard monotonicNanos() < deadline else {
                throw BackendError(operation: "wait", message: "fence \(fence.raw) still has live readers after 10 s")
            }
            usleep(100)
        }
    }

    // MARK: Introspection for tests and reports

    /// Whether every byte of the range is mapped with access set.
    public func isAccessible(address: UInt64, bytes: Int) -> Bool {
        state.withLock { s in (try? checkAccessible(s, address: address, bytes: bytes, operation: "")) != nil }
    }

    public struct Census: Equatable, Sendable {
        public var liveChunks: Int
        public var mappings: Int
        public var reservations: Int
        /// Live slabs (their chunks count in `liveChunks`), and mappings made by `mapRun`.
        public var slabs: Int = 0
        public var runMappings: Int = 0
    }

    /// What the backend itself holds: the ground truth the manager's accounting must match.
    public func census() -> Census {
        state.withLock { s in
            Census(liveChunks: s.liveChunks.count, mappings: s.mappings.count, reservations: s.reservationBases.count,
                   slabs: s.slabs.count, runMappings: s.mappings.filter { $0.key == $0.value.run?.start }.count)
        }
    }

    // MARK: Checks

    private func checkInsideReservation(_ s: State, address: UInt64, bytes: Int, operation: String) throws {
        guard address % UInt64(chunkSize) == 0 else {
            throw BackendError(operation: operation, message: "\(hex(address)) is not aligned to the chunk size \(chunkSize)")
        }
        let index = s.reservationBases.insertionIndex(of: address + 1) - 1
        guard index >= 0 else {
            throw BackendError(operation: operation, message: "\(hex(address)) is outside every reservation")
        }
        let base = s.reservationBases[index]
        guard address + UInt64(bytes) <= base + UInt64(s.reservationSizes[base]!) else {
            throw BackendError(operation: operation, message: "\(hex(address)) + \(bytes) runs past its reservation")
        }
    }

    private func checkAccessible(_ s: State, address: UInt64, bytes: Int, operation: String) throws {
        let chunk = UInt64(chunkSize)
        var page = address / chunk * chunk
        while page < address + UInt64(bytes) {
            guard let mapping = s.mappings[page] else {
                throw BackendError(operation: operation, message: "\(hex(page)) is not mapped")
            }
            guard mapping.accessible else {
                throw BackendError(operation: operation, message: "\(hex(page)) is mapped but access was never set")
            }
            page += chunk
        }
    }
}

@inline(__always)
func pointer(_ address: UInt64) -> UnsafeMutableRawPointer {
    UnsafeMutableRawPointer(bitPattern: UInt(address))!
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

extension Array where Element == UInt64 {
    /// First index whose element is >= value (the array is sorted).
    func insertionIndex(of value: UInt64) -> Int {
        var low = 0, high = count
        while low < high {
            let mid = (low + high) / 2
            if self[mid] < value { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
