import Testing
@testable import VTensor

@Suite struct AsyncMapperTests {
    @Test func urgentWorkOvertakesALargeJobBetweenSlices() throws {
        let host = try HostBackend(chunkSize: testChunk, capacityBytes: 8192 * testChunk)
        let memory = try makeMemory(host, budgetChunks: 8192, low: 0, high: 0)
        let mapper = AsyncMapper(memory: memory, sliceChunks: 8)
        defer { mapper.shutdown() }
        let big = try memory.makeTensor(bytes: 6000 * testChunk)
        let small = try memory.makeTensor(bytes: 2 * testChunk)
        let bigTicket = mapper.submit([(big, 6000)], priority: 5)
        let smallTicket = mapper.submit([(small, 2)], priority: 1)
        try mapper.wait(smallTicket)
        #expect(!mapper.isDone(bigTicket), "the urgent job waited for the whole large one")
        #expect(memory.mappedChunkCount(small) == 2)
        try mapper.wait(bigTicket)
        #expect(memory.mappedChunkCount(big) == 6000)
        let stats = mapper.statistics
        #expect(stats.jobsCompleted == 2 && stats.chunksMapped == 6002)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func aFailedJobReportsItsErrorAndLeavesOthersIntact() throws {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try makeMemory(faulty, budgetChunks: 64, low: 0, high: 0)
        let mapper = AsyncMapper(memory: memory)
        defer { mapper.shutdown() }
        let a = try memory.makeTensor(bytes: 4 * testChunk)
        let b = try memory.makeTensor(bytes: 4 * testChunk)
        try mapper.wait(mapper.submit([(a, 4)]))
        faulty.failNext(.map)
        #expect(throws: VTensorError.self) { try mapper.wait(mapper.submit([(b, 4)])) }
        #expect(memory.mappedChunkCount(a) == 4)
        #expect(memory.mappedChunkCount(b) == 0)
        try mapper.wait(mapper.submit([(b, 4)]))
        #expect(memory.mappedChunkCount(b) == 4)
        #expect(mapper.statistics.jobsFailed == 1)
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }
}
