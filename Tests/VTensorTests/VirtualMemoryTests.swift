import Testing
@testable import VTensor

@Suite struct BudgetTests {
    @Test func rejectsImpossibleBudgets() throws {
        let host = try makeHost(capacityChunks: 16)
        #expect(throws: VTensorError.invalidBudget("a budget of 0 bytes holds no chunk")) {
            try VirtualMemory(backend: host, budget: .bytes(0))
        }
        #expect {
            try VirtualMemory(backend: host, budget: .bytes(17 * testChunk))
        } throws: { error in
            String(describing: error).contains("more than the host device has")
        }
        #expect(throws: VTensorError.self) { try VirtualMemory(backend: host, budget: .bytes(100)) }
        #expect(throws: VTensorError.self) { try VirtualMemory(backend: host, budget: .fractionOfFree(0)) }
        #expect(throws: VTensorError.self) { try VirtualMemory(backend: host, budget: .fractionOfFree(1.5)) }
        #expect(throws: VTensorError.self) {
            try VirtualMemory(backend: host, budget: .bytes(8 * testChunk), lowWatermark: 4, highWatermark: 2)
        }
        let half = try VirtualMemory(backend: host, budget: .fractionOfFree(0.5))
        #expect(half.accounting.budgetChunks == 8)
    }

    /// vLLM's `--gpu-memory-utilization`: a share of all the device's memory, less what is in use
    /// (here 40 of 100 chunks live already: 0.5 leaves 10 chunks, 0.3 leaves none and says why).
    @Test func aShareOfTheWholeDeviceLessWhatIsInUse() throws {
        let host = try makeHost(capacityChunks: 100)
        let taken = try (0..<40).map { _ in try host.createChunk() }
        let memory = try VirtualMemory(backend: host, budget: .fractionOfTotal(0.5), lowWatermark: 0)
        #expect(memory.accounting.budgetChunks == 10)
        #expect {
            try VirtualMemory(backend: host, budget: .fractionOfTotal(0.3))
        } throws: { error in
            String(describing: error).contains("is in use already") && String(describing: error).contains("nothing is left for the KV cache")
        }
        #expect(throws: VTensorError.self) { try VirtualMemory(backend: host, budget: .fractionOfTotal(0)) }
        #expect(throws: VTensorError.self) { try VirtualMemory(backend: host, budget: .fractionOfTotal(1.2)) }
        #expect(try MemoryBudget.fractionOfTotal(0.9).bytes(free: 60 << 30, total: 80 << 30) == Int(Double(80 << 30) * 0.9) - (20 << 30))
        for chunk in taken { try host.releaseChunk(chunk) }
    }

    @Test func budgetIsACapNotAnAllocation() throws {
        let host = try makeHost(capacityChunks: 64)
        let memory = try makeMemory(host, budgetChunks: 64, low: 0, high: 4)
        #expect(memory.accounting.created == 0)
        #expect(host.census().liveChunks == 0)
        let tensor = try memory.makeTensor(bytes: 10 * testChunk)
        try memory.grow(tensor, toChunks: 3)
        #expect(memory.accounting.created == 3)
        #expect(host.census().liveChunks == 3)
    }
}

@Suite struct VirtualTensorTests {
    @Test func mapUnmapAliasAndErrors() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 32)
        let a = try memory.makeTensor(bytes: 4 * testChunk)
        let b = try memory.makeTensor(bytes: 4 * testChunk)
        let base = a.base
        #expect(throws: VTensorError.misalignedOffset(offset: 100, chunkSize: testChunk)) { try memory.map(a, offset: 100) }
        try memory.map(a, offset: testChunk)
        #expect(throws: VTensorError.alreadyMapped(tensor: a.id, chunk: 1)) { try memory.map(a, chunk: 1) }
        #expect(throws: VTensorError.chunkOutOfRange(tensor: a.id, chunk: 4, chunkCount: 4)) { try memory.map(a, chunk: 4) }
        store(42, at: a.address(ofChunk: 1) + 8)
        try memory.alias(b, chunk: 3, from: a, chunk: 1)
        #expect(load(b.address(ofChunk: 3) + 8) == 42)
        #expect(memory.shareCount(a, chunk: 1) == 2)
        #expect(memory.accounting.shared == 1)
        // Unmapping one alias keeps the chunk alive for the other.
        try memory.unmap(a, chunk: 1)
        #expect(throws: VTensorError.notMapped(tensor: a.id, chunk: 1)) { try memory.unmap(a, chunk: 1) }
        try memory.reclaim()
        #expect(load(b.address(ofChunk: 3) + 8) == 42)
        #expect(memory.accounting.inUse == 1)
        try memory.free(a)
        #expect(throws: VTensorError.tensorFreed(tensor: a.id)) { try memory.map(a, chunk: 0) }
        #expect(throws: VTensorError.tensorFreed(tensor: a.id)) { try memory.free(a) }
        #expect(a.base == base)
        try memory.free(b)
        try memory.drain()
        #expect(memory.audit() == [])
        #expect(backendAgrees(memory, host) == [])
        #expect(memory.accounting.inUse == 0)
        // Freed tensors' ranges are kept for the next tensors of their size, then given back.
        #expect(host.census().reservations == 2 && memory.accounting.reservations == 2)
        let again = try memory.makeTensor(bytes: 4 * testChunk)
        #expect([a.base, b.base].contains(again.base) && host.census().reservations == 2, "a kept range, no new reservation")
        try memory.free(again)
        memory.releaseSpareRanges()
        #expect(host.census().reservations == 0 && memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func unmapWaitsForDeviceWorkInFlight() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 2, low: 0, high: 0)
        let t = try memory.makeTensor(bytes: 2 * testChunk)
        try memory.grow(t, toChunks: 2)
        // A "kernel" is reading chunk 1 when the tensor shrinks.
        let reader = try host.beginRead(address: t.address(ofChunk: 1), bytes: testChunk)
        try memory.shrink(t, toChunks: 1)
        #expect(memory.accounting.retiring == 1)
        #expect(try memory.reclaim() == 0)  // still read: not unmapped
        #expect(host.isAccessible(address: t.address(ofChunk: 1), bytes: testChunk))
        host.endRead(reader)
        #expect(try memory.reclaim() == 1)
        #expect(!host.isAccessible(address: t.address(ofChunk: 1), bytes: testChunk))
        // High watermark 0: the freed chunk went back to the device.
        #expect(memory.accounting.created == 1)
        #expect(host.census().liveChunks == 1)
        #expect(memory.audit() == [])
    }

    /// On a backend whose work runs in order (CUDA's stream), a mapping that waits for its fence
    /// and is nobody else's is taken back into use by the next map there, without waiting; a
    /// chunk another tensor shares is never taken back (its data is theirs).
    @Test func aRetiringMappingIsTakenBackWhenWorkRunsInOrder() throws {
        let host = try HostBackend(chunkSize: testChunk, capacityBytes: 64 * testChunk, ordersWork: true)
        let memory = try makeMemory(host, budgetChunks: 8, low: 0, high: 0)
        let t = try memory.makeTensor(bytes: 3 * testChunk)
        try memory.grow(t, toChunks: 3)
        let chunk = memory.physicalChunk(t, chunk: 2)
        let reader = try host.beginRead(address: t.address(ofChunk: 1), bytes: 2 * testChunk)
        try memory.shrink(t, toChunks: 1)
        #expect(memory.accounting.retiring == 2)
        let created = host.census().liveChunks
        try memory.grow(t, toChunks: 3)  // would wait for the reader on a backend without order
        #expect(memory.accounting.retiring == 0 && memory.physicalChunk(t, chunk: 2) == chunk)
        #expect(host.census().liveChunks == created, "no chunk created")
        #expect(memory.audit { backendAgrees($0, host) } == [])
        host.endRead(reader)
        // Shared with another tensor: unmapped here, then a fresh chunk.
        let other = try memory.makeTensor(bytes: testChunk)
        try memory.alias(other, chunk: 0, from: t, chunk: 2)
        try memory.unmap(t, chunk: 2)
        try memory.map(t, chunk: 2)
        #expect(memory.physicalChunk(t, chunk: 2) != chunk && memory.physicalChunk(other, chunk: 0) == chunk)
        #expect(memory.audit { backendAgrees($0, host) } == [])
        try memory.free(t)
        try memory.free(other)
        try memory.drain()
        #expect(memory.accounting.inUse == 0 && memory.audit { backendAgrees($0, host) } == [])
    }

    @Test func watermarksKeepAWarmReserveAndReleaseTheRest() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 64, low: 4, high: 6)
        #expect(try memory.replenish() == 4)
        #expect(memory.accounting.inReserve == 4)
        let t = try memory.makeTensor(bytes: 20 * testChunk)
        try memory.grow(t, toChunks: 20)
        #expect(memory.accounting.created == 20)  // 4 reused, 16 created
        try memory.free(t)
        try memory.drain()
        #expect(memory.accounting.inReserve == 6)
        #expect(memory.accounting.created == 6)
        #expect(host.census().liveChunks == 6)
        #expect(memory.accounting.totalReleased == 14)
        #expect(try memory.trim(to: 0) == 6)
        #expect(host.census().liveChunks == 0)
    }

    @Test func outOfBudgetIsAClearErrorAndGrowIsAllOrNothing() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 5, low: 0, high: 5)
        let a = try memory.makeTensor(bytes: 8 * testChunk)
        let b = try memory.makeTensor(bytes: 8 * testChunk)
        try memory.grow(a, toChunks: 2)
        store(7, at: a.base)
        #expect {
            try memory.grow([(a, 3), (b, 4)])
        } throws: { error in
            String(describing: error).contains("out of memory") && String(describing: error).contains("budget")
        }
        // Nothing of the failed call stays mapped; a is untouched.
        #expect(memory.mappedChunkCount(a) == 2)
        #expect(memory.mappedChunkCount(b) == 0)
        #expect(load(a.base) == 7)
        #expect(memory.audit() == [])
        #expect(backendAgrees(memory, host) == [])
    }

    @Test func deviceOutOfMemoryUnderTheBudgetIsReported() throws {
        let faulty = FaultInjectingBackend(wrapping: try makeHost())
        faulty.setChunkLimit(3)
        let memory = try makeMemory(faulty, budgetChunks: 10, low: 0, high: 10)
        let t = try memory.makeTensor(bytes: 6 * testChunk)
        #expect {
            try memory.grow(t, toChunks: 5)
        } throws: { error in
            (error as? VTensorError).map { if case .outOfMemory = $0 { return true } else { return false } } ?? false
        }
        #expect(memory.mappedChunkCount(t) == 0)
        #expect(memory.audit() == [])
    }

    @Test func injectedMapFailureLeavesNoTrace() throws {
        let host = try makeHost()
        let faulty = FaultInjectingBackend(wrapping: host)
        let memory = try makeMemory(faulty, budgetChunks: 16, low: 0, high: 16)
        let t = try memory.makeTensor(bytes: 4 * testChunk)
        faulty.failNext(.setAccess)
        #expect(throws: VTensorError.self) { try memory.map(t, chunk: 0) }
        faulty.failNext(.map)
        #expect(throws: VTensorError.self) { try memory.map(t, chunk: 0) }
        #expect(memory.mappedChunkCount(t) == 0)
        #expect(memory.audit() == [])
        #expect(backendAgrees(memory, host) == [])
        try memory.map(t, chunk: 0)
        #expect(memory.mappedChunkCount(t) == 1)
    }

    @Test func copyOnWriteGivesAPrivateChunk() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 8)
        let a = try memory.makeTensor(bytes: testChunk)
        let b = try memory.makeTensor(bytes: testChunk)
        try memory.map(a, chunk: 0)
        store(1, at: a.base)
        try memory.alias(b, chunk: 0, from: a, chunk: 0)
        try memory.makePrivate(b, chunk: 0)
        #expect(memory.shareCount(a, chunk: 0) == 1)
        #expect(load(b.base) == 1)
        store(2, at: b.base)
        #expect(load(a.base) == 1)
        #expect(b.base == b.address(ofChunk: 0))
        #expect(memory.audit() == [])
        #expect(backendAgrees(memory, host) == [])
    }
}

@Suite struct ReuseOrderTests {
    @Test(arguments: [ChunkReuseOrder.newestFirst, .oldestFirst])
    func reserveChunksAreTakenInTheChosenOrder(order: ChunkReuseOrder) throws {
        let host = try makeHost()
        let memory = try VirtualMemory(backend: host, budget: .bytes(64 * testChunk), lowWatermark: 64, highWatermark: 64, reuseOrder: order)
        #expect(try memory.replenish() == 64)
        let t = try memory.makeTensor(bytes: 64 * testChunk)
        try memory.grow(t, toChunks: 64)
        let raws = (0..<64).map { memory.physicalChunk(t, chunk: $0)!.raw }
        // The host backend numbers chunks in creation order.
        #expect(raws == (order == .oldestFirst ? Array(0..<64) : Array((0..<64).reversed())))
        #expect(memory.audit { backendAgrees($0, host) } == [])
    }
}

@Suite struct RetireQueueTests {
    /// Taking entries from the front and the middle keeps the rest in order; a throw keeps the entry.
    @Test func scanKeepsOrderAndEntriesItDidNotTake() throws {
        let memory = try makeMemory(try makeHost(), budgetChunks: 8)
        let tensor = try memory.makeTensor(bytes: testChunk * 8)
        var queue = RetireQueue()
        for i in 0..<8 { queue.append((tensor, i)) }
        // Take the even ones among the first five visited.
        var visited = 0
        queue.scan(while: { visited < 5 }) { entry in
            visited += 1
            return entry.index % 2 == 0
        }
        #expect(queue.entries.map(\.index) == [1, 3, 5, 6, 7])
        #expect(queue.first?.index == 1 && queue.count == 5)
        struct Failure: Error {}
        #expect(throws: Failure.self) {
            try queue.scan(while: { true }) { entry in
                if entry.index == 5 { throw Failure() }
                return entry.index == 1
            }
        }
        #expect(queue.entries.map(\.index) == [3, 5, 6, 7])
        queue.scan(while: { true }) { _ in true }
        #expect(queue.isEmpty && queue.first == nil)
    }

    /// Reclaiming many retired chunks in small slices (the mapper's idle work) takes them all,
    /// oldest first, and leaves the books exact.
    @Test func reclaimInSlicesTakesEverything() throws {
        let host = try makeHost(capacityChunks: 2100)
        let memory = try VirtualMemory(backend: host, budget: .bytes(2000 * testChunk), lowWatermark: 0, highWatermark: 0)
        let tensors = try (0..<8).map { _ in try memory.makeTensor(bytes: testChunk * 250) }
        for t in tensors { try memory.grow(t, toChunks: 250) }
        for t in tensors { try memory.free(t) }
        #expect(memory.accounting.retiring == 2000)
        var total = 0
        while true {
            let n = try memory.reclaim(limit: 4)
            total += n
            if n == 0 { break }
        }
        #expect(total == 2000)
        #expect(memory.accounting.retiring == 0 && memory.accounting.inUse == 0)
        #expect(backendAgrees(memory, host).isEmpty)
        #expect(memory.audit().isEmpty)
    }
}
