import Testing
@testable import VTensor

@Suite struct HostBackendTests {
    @Test func enforcesCUDAMappingRules() throws {
        let host = try makeHost(capacityChunks: 8)
        let base = try host.reserve(bytes: 4 * testChunk)
        let a = try host.createChunk()
        try host.map(a, at: base)
        // Mapped but access not yet set: unusable, as on the GPU.
        #expect(!host.isAccessible(address: base, bytes: 4))
        #expect(throws: BackendError.self) { try host.beginRead(address: base, bytes: 4) }
        try host.setAccess(at: base, bytes: testChunk)
        #expect(host.isAccessible(address: base, bytes: testChunk))
        // Mapping over a mapped range is an error.
        let b = try host.createChunk()
        #expect(throws: BackendError.self) { try host.map(b, at: base) }
        // Misaligned and outside-reservation maps are errors.
        #expect(throws: BackendError.self) { try host.map(b, at: base + 8) }
        #expect(throws: BackendError.self) { try host.map(b, at: base + UInt64(4 * testChunk)) }
        // Releasing a mapped chunk or a reservation with mappings is refused.
        #expect(throws: BackendError.self) { try host.releaseChunk(a) }
        #expect(throws: BackendError.self) { try host.releaseReservation(base: base, bytes: 4 * testChunk) }
        // Unmapping under a live reader is refused; after the reader ends it works.
        let reader = try host.beginRead(address: base, bytes: 16)
        let fence = try host.recordFence()
        #expect(try !host.isComplete(fence))
        #expect(throws: BackendError.self) { try host.unmap(at: base) }
        host.endRead(reader)
        #expect(try host.isComplete(fence))
        try host.unmap(at: base)
        #expect(throws: BackendError.self) { try host.unmap(at: base) }
        try host.releaseChunk(a)
        try host.releaseChunk(b)
        try host.releaseReservation(base: base, bytes: 4 * testChunk)
        #expect(host.census() == .init(liveChunks: 0, mappings: 0, reservations: 0))
    }

    /// Work on no particular range (a modeled GPU step) ends by itself at its deadline: a fence
    /// recorded before then waits for it, one recorded after does not, and it reads no range.
    @Test func workLeasesEndAtTheirDeadline() throws {
        let host = try makeHost(capacityChunks: 4)
        let base = try host.reserve(bytes: testChunk)
        let a = try host.createChunk()
        try host.map(a, at: base)
        try host.setAccess(at: base, bytes: testChunk)
        _ = host.beginWork(until: monotonicNanos() + 30_000_000)
        let fence = try host.recordFence()
        #expect(try !host.isComplete(fence))
        try host.wait(fence)
        #expect(try host.isComplete(fence))
        #expect(try host.isComplete(try host.recordFence()), "the work has ended")
        _ = host.beginWork(until: monotonicNanos() + 10_000_000_000)
        try host.unmap(at: base)
        try host.releaseChunk(a)
        try host.releaseReservation(base: base, bytes: testChunk)
        #expect(host.census() == .init(liveChunks: 0, mappings: 0, reservations: 0))
    }

    @Test func oneChunkAtTwoAddressesSharesBytes() throws {
        let host = try makeHost(capacityChunks: 4)
        let first = try host.reserve(bytes: testChunk)
        let second = try host.reserve(bytes: 2 * testChunk)
        let chunk = try host.createChunk()
        try host.map(chunk, at: first)
        try host.map(chunk, at: second + UInt64(testChunk))
        try host.setAccess(at: first, bytes: testChunk)
        try host.setAccess(at: second + UInt64(testChunk), bytes: testChunk)
        store(0xC0FFEE, at: first + 100)
        #expect(load(second + UInt64(testChunk) + 100) == 0xC0FFEE)
        try host.copy(from: first + 100, to: first + 200, bytes: 4)
        #expect(load(second + UInt64(testChunk) + 200) == 0xC0FFEE)
    }

    @Test func capacityIsEnforcedAndReleaseReturnsMemory() throws {
        let host = try makeHost(capacityChunks: 3)
        let chunks = try (0..<3).map { _ in try host.createChunk() }
        #expect(try host.freePhysicalBytes() == 0)
        do {
            _ = try host.createChunk()
            Issue.record("a fourth chunk should not fit")
        } catch let error as BackendError {
            #expect(error.isOutOfMemory)
        }
        try host.releaseChunk(chunks[1])
        #expect(try host.freePhysicalBytes() == testChunk)
        // A released slot comes back zeroed (its pages were punched out).
        let base = try host.reserve(bytes: testChunk)
        let again = try host.createChunk()
        try host.map(again, at: base)
        try host.setAccess(at: base, bytes: testChunk)
        #expect(load(base) == 0)
    }

    @Test func rejectsBadConfiguration() {
        #expect(throws: BackendError.self) { try HostBackend(chunkSize: 1000, capacityBytes: 1 << 20) }
        #expect(throws: BackendError.self) { try HostBackend(chunkSize: 4096, capacityBytes: 100) }
    }
}
