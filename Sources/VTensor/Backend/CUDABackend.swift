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
        try wrap { try current().reserveAddressRange(size: bytes, alignment: chunkSize) }
    }

    public func releaseReservation(base: UInt64, bytes: Int) throws {
        try wrap { try current().freeAddressRange(base, size: bytes) }
    }

    public func createChunk() throws -> PhysicalChunk {
        try wrap { PhysicalChunk(raw: try current().createPhysical(size: chunkSize, device: ordinal)) }
    }

    public func releaseChunk(_ chunk: PhysicalChunk) throws {
        try wrap { try current().releasePhysical(chunk.raw) }
    }

    public func map(_ chunk: PhysicalChunk, at address: UInt64) throws {
        try wrap { try current().map(address: address, size: chunkSize, handle: chunk.raw) }
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
