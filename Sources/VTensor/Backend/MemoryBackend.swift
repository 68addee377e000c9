/// A physical chunk as the backend knows it (a CUDA allocation handle, or a slot of the host
/// backend's memory file). Always exactly `MemoryBackend.chunkSize` bytes.
public struct PhysicalChunk: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(raw: UInt64) { self.raw = raw }
    public var description: String { "chunk#\(raw)" }
}

/// A point in the stream of device work: complete once every kernel or copy submitted before
/// it has finished, so memory those could read may be unmapped.
public struct Fence: Hashable, Sendable {
    public let raw: UInt64
    public init(raw: UInt64) { self.raw = raw }
}

/// A failure reported by a backend: which operation, why, and whether it was out of memory
/// (the one failure the layers above treat specially).
public struct BackendError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let message: String
    public let isOutOfMemory: Bool

    public init(operation: String, message: String, isOutOfMemory: Bool = false) {
        self.operation = operation
        self.message = message
        self.isOutOfMemory = isOutOfMemory
    }

    public var description: String { "\(operation) failed: \(message)" }
}

/// The virtual-memory operations a virtual tensor needs, with CUDA VMM's rules:
/// - address ranges are reserved first and hold no memory;
/// - a physical chunk is mapped at a chunk-aligned address inside a reservation, never over a
///   mapped one, and is usable only after access is set;
/// - unmapping must wait until no device work can still read the range (fences);
/// - a reservation is freed only when nothing is mapped in it.
///
/// Three implementations: `CUDABackend` (the GPU), `HostBackend` (memfd + mmap: the same
/// semantics on real host virtual memory, so CPU tests exercise the real logic), and
/// `FaultInjectingBackend` (wraps another and injects failures). Implementations are
/// thread-safe.
public protocol MemoryBackend: AnyObject, Sendable {
    /// Short name for reports ("cuda", "host").
    var name: String { get }
    /// Bytes per physical chunk: the mapping granularity (2 MiB on current GPUs).
    var chunkSize: Int { get }
    /// Physical memory the device has in all, if known: budgets above it are refused.
    var totalPhysicalBytes: Int { get }
    /// Physical memory free right now, for budgets given as a fraction of free memory.
    func freePhysicalBytes() throws -> Int

    /// Reserves `bytes` (a multiple of `chunkSize`) of address space, chunk-aligned.
    func reserve(bytes: Int) throws -> UInt64
    /// Frees a reservation; nothing may be mapped in it.
    func releaseReservation(base: UInt64, bytes: Int) throws

    /// Creates one physical chunk (cuMemCreate).
    func createChunk() throws -> PhysicalChunk
    /// Releases a physical chunk that is mapped nowhere (cuMemRelease).
    func releaseChunk(_ chunk: PhysicalChunk) throws

    /// Maps `chunk` at `address` (chunk-aligned, inside a reservation, currently unmapped).
    func map(_ chunk: PhysicalChunk, at address: UInt64) throws
    /// Makes `bytes` at `address` readable and writable by the device (cuMemSetAccess).
    func setAccess(at address: UInt64, bytes: Int) throws
    /// Unmaps the chunk mapped at `address`. The caller guarantees (through fences) that no
    /// device work can still read it.
    func unmap(at address: UInt64) throws
    /// Unmaps the `count` adjacent chunks mapped from `address` on: one call where the backend
    /// takes several mappings at once (`unmapsRuns`), else one a chunk.
    func unmap(at address: UInt64, chunks count: Int) throws
    /// Whether `unmap(at:chunks:)` unmaps a run in one call.
    var unmapsRuns: Bool { get }

    /// Whether the backend makes slabs: one physical allocation of several chunks
    /// (`createSlab`), whose chunks map alone (`map(_:at:)`, at their offset in the allocation)
    /// or a run of adjacent ones in one mapping (`mapRun`). The driver's cost of a mapping is
    /// per allocation mapped, not per byte (docs/perf.md, 2026-12-05), so a run of a slab maps
    /// and gets access for about the price of one chunk.
    var makesSlabs: Bool { get }
    /// Whether a slab's chunks also map alone or in runs shorter than the slab (a mapping at an
    /// offset into the allocation). CUDA 13's `cuMemMap` refuses any offset but zero (measured
    /// on an H200, 2026-12-05), so there a slab maps only whole, and the memory manager keeps to
    /// that: see `ChunkPool` and `VirtualMemory.packSlab`.
    var mapsSlabParts: Bool { get }
    /// How many chunks of a prefix that waiting requests share are worth packing into a slab by
    /// default (0: none): where a mapping costs per allocation, as CUDA's set access does, a
    /// 128-chunk prefix maps in ~45 us packed against ~2.8 ms chunk by chunk (H200).
    var defaultPackChunks: Int { get }
    /// The largest slab a run of fresh chunks maps as by default (`VirtualMemory.freshSlabChunks`;
    /// 0: a fresh chunk is an allocation of its own): where a mapping costs per allocation, the
    /// chunks a prompt fills map in a few calls instead of one per chunk.
    var defaultFreshSlabChunks: Int { get }
    /// Creates one allocation of `count` chunks; returns its chunks in order (chunk i is bytes
    /// `i * chunkSize ..< (i + 1) * chunkSize` of it). They are released together (`releaseSlab`),
    /// never one by one.
    func createSlab(chunks count: Int) throws -> [PhysicalChunk]
    /// Releases a slab made by `createSlab` (all its chunks, in order), mapped nowhere.
    func releaseSlab(_ chunks: [PhysicalChunk]) throws
    /// Maps `chunks`, adjacent chunks of one slab in order, at `address` as one mapping: it is
    /// unmapped whole (`unmapRun`), never in part, as CUDA requires.
    func mapRun(_ chunks: [PhysicalChunk], at address: UInt64) throws
    /// Unmaps the one mapping of `count` chunks that `mapRun` made at `address`.
    func unmapRun(at address: UInt64, chunks count: Int) throws

    /// Copies device memory to device memory, ordered after earlier work on the backend's
    /// work stream.
    func copy(from source: UInt64, to destination: UInt64, bytes: Int) throws

    /// Records a fence after all device work submitted so far.
    func recordFence() throws -> Fence
    /// Whether the fence has completed, without blocking.
    func isComplete(_ fence: Fence) throws -> Bool
    /// Blocks until the fence completes.
    func wait(_ fence: Fence) throws

    /// Whether all device work runs in the order it was submitted (one stream): then work
    /// submitted later never overtakes work that reads a range still in flight, and a mapping
    /// waiting for its fence can be taken back into use at once.
    var ordersWork: Bool { get }
}

extension MemoryBackend {
    public var ordersWork: Bool { false }
    public var unmapsRuns: Bool { false }
    public var makesSlabs: Bool { false }
    public var mapsSlabParts: Bool { false }
    public var defaultPackChunks: Int { 0 }
    public var defaultFreshSlabChunks: Int { 0 }
    public func createSlab(chunks count: Int) throws -> [PhysicalChunk] {
        throw BackendError(operation: "createSlab", message: "the \(name) backend makes no slabs")
    }
    public func releaseSlab(_ chunks: [PhysicalChunk]) throws {
        throw BackendError(operation: "releaseSlab", message: "the \(name) backend makes no slabs")
    }
    public func mapRun(_ chunks: [PhysicalChunk], at address: UInt64) throws {
        throw BackendError(operation: "mapRun", message: "the \(name) backend makes no slabs")
    }
    public func unmapRun(at address: UInt64, chunks count: Int) throws {
        throw BackendError(operation: "unmapRun", message: "the \(name) backend makes no slabs")
    }
    public func unmap(at address: UInt64, chunks count: Int) throws {
        for i in 0..<count { try unmap(at: address + UInt64(i * chunkSize)) }
    }
}
