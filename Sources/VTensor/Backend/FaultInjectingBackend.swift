import Glibc
import Synchronization

/// Wraps a backend and makes chosen operations fail: on demand (`failNext`), at random with a
/// seeded rate, or by capping live chunks (a device that fills up under our budget, as when
/// another process takes memory). The tests use it to prove that a failure reaches only the
/// request that caused it and leaks nothing.
public final class FaultInjectingBackend: MemoryBackend {
    public enum Operation: String, CaseIterable, Sendable {
        case reserve, create, map, setAccess, copy
    }

    public let inner: any MemoryBackend
    private let state: Mutex<State>

    private struct State {
        var rng: SplitMix64
        var rates: [Operation: Double] = [:]
        var forced: [Operation: Int] = [:]
        /// Calls of an operation that succeed before its forced failures start.
        var forcedAfter: [Operation: Int] = [:]
        var calls: [Operation: Int] = [:]
        var unmapCalls = 0
        var chunkLimit: Int?
        var liveChunks = 0
        var injected: [Operation: Int] = [:]
        /// Microseconds each granted access takes, on the caller's thread (a driver's cost per mapping).
        var setAccessDelayMicros: UInt32 = 0
        /// Microseconds creating a chunk takes, on the caller's thread (a slab: that much a chunk).
        var createDelayMicros: UInt32 = 0
        /// Mappings `mapRun` made (address -> chunks): a set access pays the delay once per mapping.
        var runs: [UInt64: Int] = [:]
        /// Copies succeed without moving bytes (see `setSkipsCopies`).
        var skipsCopies = false
    }

    public init(wrapping inner: any MemoryBackend, seed: UInt64 = 1) {
        self.inner = inner
        self.state = Mutex(State(rng: SplitMix64(seed: seed)))
    }

    /// Makes the next `times` calls of `operation` fail, after letting `after` calls succeed.
    public func failNext(_ operation: Operation, times: Int = 1, after: Int = 0) {
        state.withLock {
            $0.forced[operation, default: 0] += times
            $0.forcedAfter[operation] = after
        }
    }

    /// Makes each call of `operation` fail with probability `rate`.
    public func setFailureRate(_ operation: Operation, _ rate: Double) {
        state.withLock { $0.rates[operation] = rate }
    }

    /// Makes each set access take `micros` microseconds (CUDA's costs ~26 us a chunk on an H200),
    /// so the host backend's mapper is as slow as a GPU's.
    public func setSetAccessDelay(micros: UInt32) {
        state.withLock { $0.setAccessDelayMicros = micros }
    }

    /// Makes each chunk created take `micros` microseconds (`cuMemCreate`: ~9-15 us a 2 MiB
    /// chunk on H100s and H200s), a slab that much a chunk.
    public func setCreateDelay(micros: UInt32) {
        state.withLock { $0.createDelayMicros = micros }
    }

    /// Makes copies succeed without moving a byte: for benchmarks over a model that writes
    /// nothing into its KV, standing in for a GPU, where a copy is queued on the stream and costs
    /// the host nothing (the host backend's memmove would fault in and zero every page).
    public func setSkipsCopies(_ skips: Bool) {
        state.withLock { $0.skipsCopies = skips }
    }

    /// At most this many live chunks; creating more fails as out of memory.
    public func setChunkLimit(_ limit: Int?) {
        state.withLock { $0.chunkLimit = limit }
    }

    /// How many failures were injected, per operation.
    public var injectedCounts: [Operation: Int] { state.withLock { $0.injected } }

    /// How many calls were made, per operation (failed ones included).
    public var callCounts: [Operation: Int] { state.withLock { $0.calls } }

    private func maybeFail(_ operation: Operation) throws {
        let fail = state.withLock { s -> Bool in
            var fail = false
            s.calls[operation, default: 0] += 1
            if let skip = s.forcedAfter[operation], skip > 0, s.forced[operation, default: 0] > 0 {
                s.forcedAfter[operation] = skip - 1
            } else if let n = s.forced[operation], n > 0 {
                s.forced[operation] = n - 1
                fail = true
            } else if let rate = s.rates[operation], rate > 0, s.rng.nextDouble() < rate {
                fail = true
            }
            if fail { s.injected[operation, default: 0] += 1 }
            return fail
        }
        if fail {
            throw BackendError(operation: operation.rawValue, message: "injected failure", isOutOfMemory: operation == .create)
        }
    }

    public var name: String { "faulty-\(inner.name)" }
    public var ordersWork: Bool { inner.ordersWork }
    public var chunkSize: Int { inner.chunkSize }
    public var totalPhysicalBytes: Int { inner.totalPhysicalBytes }
    public func freePhysicalBytes() throws -> Int { try inner.freePhysicalBytes() }

    public func reserve(bytes: Int) throws -> UInt64 {
        try maybeFail(.reserve)
        return try inner.reserve(bytes: bytes)
    }

    public func releaseReservation(base: UInt64, bytes: Int) throws {
        try inner.releaseReservation(base: base, bytes: bytes)
    }

    public func createChunk() throws -> PhysicalChunk {
        try maybeFail(.create)
        let limited = state.withLock { s -> Bool in
            if let limit = s.chunkLimit, s.liveChunks >= limit { return true }
            s.liveChunks += 1
            return false
        }
        if limited {
            state.withLock { $0.injected[.create, default: 0] += 1 }
            throw BackendError(operation: "create", message: "device out of memory (injected chunk limit)", isOutOfMemory: true)
        }
        let delay = state.withLock { $0.createDelayMicros }
        if delay > 0 { usleep(delay) }
        do {
            return try inner.createChunk()
        } catch {
            state.withLock { $0.liveChunks -= 1 }
            throw error
        }
    }

    public func releaseChunk(_ chunk: PhysicalChunk) throws {
        try inner.releaseChunk(chunk)
        state.withLock { $0.liveChunks -= 1 }
    }

    public func map(_ chunk: PhysicalChunk, at address: UInt64) throws {
        try maybeFail(.map)
        try inner.map(chunk, at: address)
    }

    public func setAccess(at address: UInt64, bytes: Int) throws {
        try maybeFail(.setAccess)
        let size = inner.chunkSize
        let (delay, mappings) = state.withLock { s -> (UInt32, Int) in
            guard s.setAccessDelayMicros > 0 else { return (0, 0) }
            // The driver's cost is per allocation mapped: a run of a slab counts once.
            var mappings = 0, offset = 0
            while offset < bytes {
                let run = s.runs[address + UInt64(offset)] ?? 1
                mappings += 1
                offset += run * size
            }
            return (s.setAccessDelayMicros, mappings)
        }
        if delay > 0 { usleep(delay * UInt32(max(1, mappings))) }
        try inner.setAccess(at: address, bytes: bytes)
    }

    public var makesSlabs: Bool { inner.makesSlabs }
    public var mapsSlabParts: Bool { inner.mapsSlabParts }
    public var defaultPackChunks: Int { inner.defaultPackChunks }
    public var defaultFreshSlabChunks: Int { inner.defaultFreshSlabChunks }

    public func createSlab(chunks count: Int) throws -> [PhysicalChunk] {
        try maybeFail(.create)
        let limited = state.withLock { s -> Bool in
            if let limit = s.chunkLimit, s.liveChunks + count > limit { return true }
            s.liveChunks += count
            return false
        }
        if limited {
            state.withLock { $0.injected[.create, default: 0] += 1 }
            throw BackendError(operation: "create", message: "device out of memory (injected chunk limit)", isOutOfMemory: true)
        }
        let delay = state.withLock { $0.createDelayMicros }
        if delay > 0 { usleep(delay * UInt32(count)) }
        do {
            return try inner.createSlab(chunks: count)
        } catch {
            state.withLock { $0.liveChunks -= count }
            throw error
        }
    }

    public func releaseSlab(_ chunks: [PhysicalChunk]) throws {
        try inner.releaseSlab(chunks)
        state.withLock { $0.liveChunks -= chunks.count }
    }

    public func mapRun(_ chunks: [PhysicalChunk], at address: UInt64) throws {
        try maybeFail(.map)
        try inner.mapRun(chunks, at: address)
        state.withLock { $0.runs[address] = chunks.count }
    }

    public func unmapRun(at address: UInt64, chunks count: Int) throws {
        state.withLock { $0.unmapCalls += 1 }
        try inner.unmapRun(at: address, chunks: count)
        state.withLock { $0.runs[address] = nil }
    }

    public func unmap(at address: UInt64) throws {
        state.withLock { $0.unmapCalls += 1 }
        try inner.unmap(at: address)
    }
    public var unmapsRuns: Bool { inner.unmapsRuns }
    public func unmap(at address: UInt64, chunks count: Int) throws {
        state.withLock { $0.unmapCalls += 1 }
        try inner.unmap(at: address, chunks: count)
    }
    /// Calls of `unmap(at:chunks:)` (a run or a chunk each); unmaps are never failed on purpose:
    /// the manager makes them only after a fence, and treats a failure as fatal.
    public var unmapCalls: Int { state.withLock { $0.unmapCalls } }

    public func copy(from source: UInt64, to destination: UInt64, bytes: Int) throws {
        try maybeFail(.copy)
        if state.withLock({ $0.skipsCopies }) { return }
        try inner.copy(from: source, to: destination, bytes: bytes)
    }

    public func recordFence() throws -> Fence { try inner.recordFence() }
    public func isComplete(_ fence: Fence) throws -> Bool { try inner.isComplete(fence) }
    public func wait(_ fence: Fence) throws { try inner.wait(fence) }
}

/// A small, fast, seedable generator (SplitMix64), so randomized tests and fault plans are
/// reproducible from their seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
