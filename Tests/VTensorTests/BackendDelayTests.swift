import Foundation
import Testing
@testable import VTensor

/// The fault-injecting backend's modeled driver costs (benchmarks over host memory use them to be
/// as slow as a GPU): each chunk created, a slab's chunks included, and each mapping's access.
@Suite struct BackendDelayTests {
    private func elapsedMs(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
    }

    @Test func creationTakesTheDelayAChunk() throws {
        let host = try HostBackend(chunkSize: testChunk, capacityBytes: 64 * testChunk)
        let faulty = FaultInjectingBackend(wrapping: host)
        let quick = try elapsedMs { _ = try faulty.createChunk() }
        faulty.setCreateDelay(micros: 3000)
        let chunks = try elapsedMs { for _ in 0..<3 { _ = try faulty.createChunk() } }
        let slab = try elapsedMs { _ = try faulty.createSlab(chunks: 4) }
        #expect(chunks >= 9 && slab >= 12, "3 chunks took \(chunks) ms, a slab of 4 \(slab) ms")
        #expect(quick < 9, "no delay until one is set: \(quick) ms")
    }
}
