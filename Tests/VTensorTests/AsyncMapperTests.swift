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

@Suite struct ConcurrentMappingTests {
    /// The mapper maps while this thread frees, shrinks and queries the same tensors: the
    /// accounting must stay exact and nothing leak.
    @Test func freeingTensorsWhileTheyAreBeingMapped() throws {
        let host = try HostBackend(chunkSize: testChunk, capacityBytes: 20_000 * testChunk)
        let memory = try makeMemory(host, budgetChunks: 20_000, low: 8, high: 32)
        let mapper = AsyncMapper(memory: memory, sliceChunks: 16)
        var rng = SplitMix64(seed: 42)
        var live: [(VirtualTensor, MapTicket)] = []
        var freedWhileMapping = 0
        for round in 0..<60 {
            let t = try memory.makeTensor(bytes: 300 * testChunk)
            live.append((t, mapper.submit([(t, 300)], priority: round % 3)))
            if live.count > 4 {
                let (victim, ticket) = live.remove(at: Int(rng.next() % UInt64(live.count)))
                if !mapper.isDone(ticket) { freedWhileMapping += 1 }
                if rng.next() % 2 == 0 { try memory.shrink(victim, toChunks: 10) }
                try memory.free(victim)
                _ = memory.mappedChunkCount(victim)
                // The job passes the freed tensor by: growth of a tensor that is gone is moot.
                try mapper.wait(ticket)
            }
            let problems = memory.audit { backendAgrees($0, host) }
            #expect(problems == [], "\(problems)")
        }
        for (t, ticket) in live {
            try mapper.wait(ticket)
            #expect(memory.mappedChunkCount(t) == 300)
            try memory.free(t)
        }
        mapper.shutdown()
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
        memory.releaseSpareRanges()
        #expect(host.census() == .init(liveChunks: 0, mappings: 0, reservations: 0))
        #expect(freedWhileMapping > 0)
    }
}

@Suite struct MapperLifetimeTests {
    @Test func shutdownReleasesTheMapperAndItsMemory() throws {
        let host = try makeHost()
        weak var weakMemory: VirtualMemory?
        weak var weakMapper: AsyncMapper?
        do {
            let memory = try makeMemory(host, budgetChunks: 16, low: 4, high: 8)
            let mapper = AsyncMapper(memory: memory)
            let t = try memory.makeTensor(bytes: 4 * testChunk)
            try mapper.wait(mapper.submit([(t, 4)]))
            mapper.shutdown()
            weakMemory = memory
            weakMapper = mapper
        }
        #expect(weakMapper == nil)
        #expect(weakMemory == nil)
        // The memory manager's teardown gave every chunk back to the device.
        #expect(host.census() == .init(liveChunks: 0, mappings: 0, reservations: 0))
    }
}
