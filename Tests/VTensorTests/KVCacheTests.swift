import Testing
@testable import VTensor

@Suite struct KVLayoutTests {
    @Test func llama3ArithmeticMatchesTheNotes() throws {
        let chunk = 2 << 20
        let perLayer = try KVLayout(.perLayer, shape: .llama3_8B, chunkSize: chunk)
        #expect(perLayer.rangesPerRequest == 64)
        #expect(perLayer.tokensPerChunk == 1024)
        #expect(perLayer.tokenStride == 2048)
        let perToken = try KVLayout(.perToken, shape: .llama3_8B, chunkSize: chunk)
        #expect(perToken.rangesPerRequest == 1)
        #expect(perToken.tokensPerChunk == 16)
        #expect(perToken.tokenStride == 128 << 10)
        let blocked = try KVLayout(.blocked, shape: .llama3_8B, chunkSize: chunk)
        #expect(blocked.tokensPerChunk == 16)
        #expect(blocked.tokenStride == 2048)
        // Layer 3's V run in a block starts after 7 runs of 16 tokens x 2 KiB.
        #expect(blocked.placement(layer: 3, component: .value) == (0, 7 * 16 * 2048))
        #expect(perLayer.placement(layer: 3, component: .value) == (7, 0))
        #expect(perToken.placement(layer: 3, component: .value) == (0, 7 * 2048))
    }

    @Test func viewsOfEveryLayoutTileTheRequestWithoutOverlap() throws {
        // SmolLM2 does not divide 2 MiB evenly: blocks carry padding, and no two
        // (token, layer, component, head) addresses may coincide.
        let chunk = 2 << 20
        for kind in KVLayoutKind.allCases {
            let layout = try KVLayout(kind, shape: .smolLM2_135M, chunkSize: chunk)
            var seen = Set<UInt64>()
            let tokens = layout.tokensPerChunk * 2 + 3
            for layer in 0..<layout.shape.layers {
                for component in KVComponent.allCases {
                    let place = layout.placement(layer: layer, component: component)
                    let view = KVView(base: UInt64(place.range) << 40 + UInt64(place.offset), tokenStride: layout.tokenStride,
                                      headStride: layout.headStride, blockStride: chunk, tokensPerBlock: layout.tokensPerChunk,
                                      length: tokens, readableTokens: tokens)
                    for token in 0..<tokens {
                        for head in 0..<layout.shape.kvHeads {
                            let address = view.address(token: token, head: head)
                            #expect((address & ((1 << 40) - 1)) % UInt64(chunk) + UInt64(layout.shape.headBytes) <= UInt64(chunk))
                            #expect(seen.insert(address).inserted)
                        }
                    }
                }
            }
        }
    }

    @Test func aTokenLargerThanAChunkIsAClearError() {
        #expect {
            try KVLayout(.perToken, shape: KVShape(layers: 80, kvHeads: 64, headDim: 128), chunkSize: 1 << 20)
        } throws: { error in
            String(describing: error).contains("does not fit")
        }
    }
}

@Suite struct KVCacheTests {
    let shape = KVShape(layers: 2, kvHeads: 2, headDim: 8, dtype: .fp32)

    /// Request `id` holding `n` tokens, token t's layer-1 value at head 1 set to t + 1, mapped
    /// for one token more.
    func addWrittenRequest(_ cache: KVCache, _ id: Int, tokens n: Int) throws {
        try cache.addRequest(id)
        try cache.reserve(id, tokens: n + 1)
        try cache.setLength(id, n)
        let view = try cache.view(id, layer: 1, component: .value)
        for t in 0..<n { store(UInt32(t + 1), at: view.address(token: t, head: 1)) }
    }

    @Test func forkSharesFullChunksAndCopiesTheBoundary() throws {
        for kind in KVLayoutKind.allCases {
            let host = try makeHost()
            let memory = try makeMemory(host, budgetChunks: 200)
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 256)
            let perChunk = cache.layout.tokensPerChunk
            try cache.addRequest(1)
            let n = 2 * perChunk + perChunk / 2
            try cache.reserve(1, tokens: n)
            try cache.setLength(1, n)
            let view = try cache.view(1, layer: 1, component: .value)
            for t in 0..<n { store(UInt32(t + 1), at: view.address(token: t, head: 1)) }
            try cache.fork(from: 1, prefix: n - 1, into: 2)
            let child = try cache.view(2, layer: 1, component: .value)
            for t in 0..<(n - 1) { #expect(load(child.address(token: t, head: 1)) == UInt32(t + 1)) }
            for (mine, theirs) in zip(try cache.tensors(of: 2), try cache.tensors(of: 1)) {
                // Two full chunks shared without a copy, the boundary chunk private.
                #expect(memory.physicalChunk(mine, chunk: 0) == memory.physicalChunk(theirs, chunk: 0))
                #expect(memory.physicalChunk(mine, chunk: 1) == memory.physicalChunk(theirs, chunk: 1))
                #expect(memory.physicalChunk(mine, chunk: 2) != memory.physicalChunk(theirs, chunk: 2))
            }
            // The parent's append into its boundary chunk never shows in the child.
            store(999, at: view.address(token: n - 1, head: 1))
            try cache.reserve(2, tokens: n)
            store(555, at: child.address(token: n - 1, head: 1))
            #expect(load(view.address(token: n - 1, head: 1)) == 999)
            // Truncating the child into its shared prefix, then appending, copies on write.
            try cache.truncate(2, to: 3)
            try cache.reserve(2, tokens: 4)
            store(777, at: child.address(token: 3, head: 1))
            #expect(load(view.address(token: 3, head: 1)) == 4)
            #expect(load(child.address(token: 2, head: 1)) == 3)
            #expect(memory.audit { backendAgrees($0, host) } == [])
            try cache.free(1)
            try cache.free(2)
            try memory.drain()
            #expect(memory.accounting.inUse == 0)
        }
    }

    /// A request that leaves becomes a holder; a later request aliases its chunks, reads its
    /// K/V, and its writes (into a shared boundary chunk too) never reach the holder.
    @Test func holdersLendTheirChunksWithoutCopies() throws {
        for kind in KVLayoutKind.allCases {
            let host = try makeHost()
            let memory = try makeMemory(host, budgetChunks: 300)
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 256)
            let perChunk = cache.layout.tokensPerChunk
            let n = 2 * perChunk + perChunk / 2 + 1
            try cache.addRequest(1)
            try cache.reserve(1, tokens: n + perChunk)  // mapped ahead past its length
            try cache.setLength(1, n)
            let view = try cache.view(1, layer: 1, component: .key)
            for t in 0..<n { store(UInt32(t + 1), at: view.address(token: t, head: 1)) }
            try cache.detach(1, tokens: n, asHolder: 50)
            #expect(!cache.contains(1) && cache.holderIDs == [50])
            // Past its tokens the holder kept nothing (once the deferred unmaps complete).
            try memory.drain()
            let holderChunks = memory.accounting.inUse
            #expect(holderChunks == cache.layout.rangesPerRequest * cache.layout.chunks(forTokens: n))
            // Two requests share the first 2.5 chunks; one stops inside the third.
            let shared = 2 * perChunk + perChunk / 2
            let prefix = (0..<3).map { (holder: 50, chunk: $0) }
            let mappingsBefore = host.census().mappings
            try cache.addRequest(2, aliasing: prefix, tokens: shared)
            try cache.addRequest(3, aliasing: Array(prefix.prefix(2)), tokens: 2 * perChunk)
            // Full chunks are recorded as aliases, not mapped: no driver call, no new chunk. Request
            // 2's third chunk, which it shares only in part, is its own copy from the start.
            let ranges = cache.layout.rangesPerRequest
            #expect(memory.accounting.inUse == holderChunks + ranges)
            #expect(memory.accounting.pendingAliases == 4 * ranges)
            #expect(host.census().mappings == mappingsBefore + ranges)
            #expect(memory.audit { backendAgrees($0, host) } == [])
            // The first growth maps the aliases.
            try cache.reserve(2, tokens: shared + 1)
            #expect(memory.accounting.pendingAliases == 2 * ranges)
            let two = try cache.view(2, layer: 1, component: .key)
            for t in 0..<shared { #expect(load(two.address(token: t, head: 1)) == UInt32(t + 1)) }
            // Request 2 writes inside the third chunk: the holder's copy is untouched.
            try cache.setLength(2, shared + 1)
            store(999, at: two.address(token: shared, head: 1))
            #expect(load(view.address(token: shared, head: 1)) == UInt32(shared + 1))
            #expect(load(two.address(token: shared - 1, head: 1)) == UInt32(shared))
            // The holder gives back its third chunk; request 3 still reads chunks 0-1 through its own mappings.
            try cache.releaseHolderChunks(50, chunks: [2])
            try cache.free(2)
            // Request 3's aliases are still pending: the holder gives back chunk 0 first, the
            // reference the pending alias took keeps its data alive until request 3 maps it.
            try cache.releaseHolderChunks(50, chunks: [0])
            try memory.drain()
            try cache.reserve(3, tokens: 2 * perChunk)
            #expect(memory.accounting.pendingAliases == 0)
            let three = try cache.view(3, layer: 1, component: .key)
            for t in 0..<(2 * perChunk) { #expect(load(three.address(token: t, head: 1)) == UInt32(t + 1)) }
            #expect(throws: VTensorError.self) { try cache.addRequest(4, aliasing: [(holder: 50, chunk: 1)], tokens: 1) }
            #expect(throws: VTensorError.unknownRequest(51)) { try cache.addRequest(4, aliasing: [(holder: 51, chunk: 0)], tokens: 1) }
            #expect(!cache.contains(4))
            try cache.freeHolder(50)
            try cache.free(3)
            #expect(memory.audit { backendAgrees($0, host) } == [])
            try memory.drain()
            #expect(memory.accounting.inUse == 0 && cache.holderIDs.isEmpty)
        }
    }

    /// The next round of a conversation takes over its holder's ranges: no mapping, no copy; the
    /// holder keeps its chunks as pending aliases and never sees the new round's writes.
    @Test func aRequestContinuingAHolderTakesItsRangeOver() throws {
        for kind in KVLayoutKind.allCases {
            let host = try makeHost()
            let memory = try makeMemory(host, budgetChunks: 300)
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 256)
            let perChunk = cache.layout.tokensPerChunk, ranges = cache.layout.rangesPerRequest
            let n = 2 * perChunk + perChunk / 2
            try addWrittenRequest(cache, 1, tokens: n)
            let oldTensors = try cache.tensors(of: 1)
            try cache.detach(1, tokens: n, asHolder: 10)
            try memory.drain()
            let census = host.census(), inUse = memory.accounting.inUse
            let prefix = (0..<3).map { (holder: 10, chunk: $0) }

            try cache.addRequest(2, aliasing: prefix, tokens: n)
            #expect(host.census().mappings == census.mappings && memory.accounting.inUse == inUse, "no mapping, no chunk")
            #expect(memory.accounting.pendingAliases == 3 * ranges, "the holder keeps its chunks as pending aliases")
            let taken = try cache.tensors(of: 2)
            #expect(taken.map(\.base) == oldTensors.map(\.base), "the same ranges")
            let allFreed = oldTensors.allSatisfy { $0.isFreed }
            #expect(allFreed, "the old tensor objects are gone")
            let stale = try memory.holes(in: oldTensors.map { ($0, $0.chunkCount) }, skippingFreed: true)
            #expect(stale.isEmpty, "growth queued for them passes by")
            #expect(cache.holdSameChunks(10, as: [(10, 2)]) == [true])
            // Another request shares the holder's first 2.5 chunks but one token: its boundary
            // chunk is copied from the range that maps it (the adopter's).
            try cache.addRequest(3, aliasing: prefix, tokens: n - 1)
            try cache.reserve(3, tokens: n)
            // The adopter appends in place into the shared third chunk, and grows.
            try cache.reserve(2, tokens: n + perChunk)
            try cache.setLength(2, n + perChunk)
            let two = try cache.view(2, layer: 1, component: .value)
            for t in 0..<n { #expect(load(two.address(token: t, head: 1)) == UInt32(t + 1)) }
            for t in n..<(n + perChunk) { store(UInt32(1000 + t), at: two.address(token: t, head: 1)) }
            try cache.setLength(3, n)
            let three = try cache.view(3, layer: 1, component: .value)
            for t in 0..<(n - 1) { #expect(load(three.address(token: t, head: 1)) == UInt32(t + 1)) }
            store(7, at: three.address(token: n - 1, head: 1))
            // The holder still reads its own tokens (its pending aliases mapped to read them).
            let held = try cache.holderView(10, layer: 1, component: .value)
            for t in 0..<n { #expect(load(held.address(token: t, head: 1)) == UInt32(t + 1)) }
            #expect(load(two.address(token: n - 1, head: 1)) == UInt32(n))
            // Truncated into the shared prefix, the adopter copies on write again.
            try cache.truncate(2, to: n - 2)
            try cache.reserve(2, tokens: n - 1)
            store(99, at: two.address(token: n - 2, head: 1))
            #expect(load(held.address(token: n - 2, head: 1)) == UInt32(n - 1))
            #expect(memory.audit { backendAgrees($0, host) } == [])
            try cache.detach(2, tokens: n - 2, asHolder: 11)
            // Chunks 0-1 shared; the copy on write gave it its own third chunk; no holder 12.
            #expect(cache.holdSameChunks(11, as: [(10, 0), (10, 1), (10, 2), (12, 0)]) == [true, true, false, false])
            try cache.free(3)
            try cache.freeHolder(10)
            try cache.freeHolder(11)
            #expect(memory.audit { backendAgrees($0, host) } == [])
            try memory.drain()
            #expect(memory.accounting.inUse == 0 && memory.accounting.pendingAliases == 0)
        }
    }

    /// A conversation's holder that keeps only its own tail (its system prompt lives at another
    /// holder, here a packed copy) is still taken over: the tail's mappings stay, the head is
    /// aliased (a slab's chunks: one run a range once mapped), and every token reads right.
    @Test func aHolderKeepingOnlyTheTailIsTakenOver() throws {
        for kind in KVLayoutKind.allCases {
            let host = try makeHost()
            let faulty = FaultInjectingBackend(wrapping: host)
            let memory = try makeMemory(faulty, budgetChunks: 400)
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 256)
            let perChunk = cache.layout.tokensPerChunk, ranges = cache.layout.rangesPerRequest
            let n = 3 * perChunk + perChunk / 2
            try addWrittenRequest(cache, 1, tokens: n)
            let oldBases = try cache.tensors(of: 1).map(\.base)
            try cache.detach(1, tokens: n, asHolder: 10)
            // The first two chunks (the "system prompt") packed into holder 20; holder 10 gives
            // them back, as the tree does when it moves their nodes to the copy.
            #expect(try cache.packPlaces([(10, 0), (10, 1)], asHolder: 20))
            try cache.releaseHolderChunks(10, chunks: [0, 1])
            try memory.drain()
            let prefix = [(holder: 20, chunk: 0), (20, 1), (10, 2), (10, 3)]
            try cache.addRequest(2, aliasing: prefix, tokens: n)
            #expect(cache.takeovers == 1 && cache.partialTakeovers == 1)
            #expect(try cache.tensors(of: 2).map(\.base) == oldBases, "the holder's ranges, taken over")
            let maps = faulty.callCounts[.map, default: 0]
            try cache.reserve(2, tokens: n + 1)
            // The head maps as one run a range; the tail was mapped already.
            #expect(faulty.callCounts[.map, default: 0] - maps == ranges)
            try cache.setLength(2, n + 1)
            let two = try cache.view(2, layer: 1, component: .value)
            for t in 0..<n { #expect(load(two.address(token: t, head: 1)) == UInt32(t + 1)) }
            // The new round appends in place; the holder keeps reading its own tokens.
            store(4242, at: two.address(token: n, head: 1))
            let held = try cache.holderView(10, layer: 1, component: .value)
            for t in (2 * perChunk)..<n { #expect(load(held.address(token: t, head: 1)) == UInt32(t + 1)) }
            #expect(cache.holdSameChunks(10, as: [(10, 2), (10, 3)]) == [true, true])
            #expect(memory.audit { backendAgrees($0, host) } == [])
            try cache.free(2)
            try cache.freeHolder(10)
            try cache.freeHolder(20)
            try memory.drain()
            _ = try memory.trim(to: 0)
            #expect(memory.accounting.inUse == 0 && memory.accounting.slabs == 0 && memory.accounting.pendingAliases == 0)
            #expect(memory.audit { backendAgrees($0, host) } == [])
        }
    }

    /// Where a slab maps only whole (CUDA), a request that shares part of a packed prefix, or
    /// whose prefix ends inside one, gets copies of those chunks (`copiedUnits` says how many
    /// beforehand); one that shares all of it maps it as one run. Every token reads right, and
    /// once all leave the slab goes back whole.
    @Test func aPackedPrefixSharedInPartIsCopiedWhereSlabsMapOnlyWhole() throws {
        for kind in KVLayoutKind.allCases {
            let host = try makeHost()
            let faulty = FaultInjectingBackend(wrapping: host)
            let memory = try makeMemory(faulty, budgetChunks: 400)
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 512)
            let perChunk = cache.layout.tokensPerChunk, ranges = cache.layout.rangesPerRequest
            let n = 4 * perChunk
            try addWrittenRequest(cache, 1, tokens: n)
            #expect(try cache.sharePacked(1, from: 0, chunks: 4, asHolder: 20))
            let packed = (0..<4).map { (holder: 20, chunk: $0) }
            // All four chunks: aliased, one run a range; two and a half: copies, charged as own.
            #expect(cache.copiedUnits(aliasing: packed, tokens: n) == 0)
            #expect(cache.copiedUnits(aliasing: Array(packed[0..<3]), tokens: 2 * perChunk + perChunk / 2) == 2 * ranges)
            // Request 2 continues the holder's whole sequence: it takes the ranges over, run and
            // all, and the holder keeps the slab as pending aliases. Request 4 shares it too.
            try cache.addRequest(2, aliasing: packed, tokens: n)
            #expect(cache.takeovers == 1)
            try cache.reserve(2, tokens: n + 1)
            let runs = host.census().runMappings
            try cache.addRequest(4, aliasing: packed, tokens: n)
            try cache.reserve(4, tokens: n + 1)
            #expect(host.census().runMappings - runs == ranges, "the packed prefix, one run a range")
            let half = 2 * perChunk + perChunk / 2
            try cache.addRequest(3, aliasing: Array(packed[0..<3]), tokens: half)
            try cache.reserve(3, tokens: half + 1)
            for (id, length) in [(2, n), (3, half), (4, n)] {
                try cache.setLength(id, length)
                let view = try cache.view(id, layer: 1, component: .value)
                for t in 0..<length { #expect(load(view.address(token: t, head: 1)) == UInt32(t + 1), "request \(id) token \(t)") }
            }
            // Request 3 writes its own copies; request 2 and the holder still read the packed values.
            let three = try cache.view(3, layer: 1, component: .value)
            store(9999, at: three.address(token: 0, head: 1))
            #expect(load(try cache.view(2, layer: 1, component: .value).address(token: 0, head: 1)) == 1)
            #expect(memory.audit { backendAgrees($0, host) } == [])
            for id in [1, 2, 3, 4] { try cache.free(id) }
            try cache.freeHolder(20)
            try memory.drain()
            _ = try memory.trim(to: 0)
            #expect(memory.accounting.inUse == 0 && memory.accounting.slabs == 0 && host.census().slabs == 0)
            #expect(memory.audit { backendAgrees($0, host) } == [])
        }
    }

    @Test func requestErrorsAreNamed() throws {
        let memory = try makeMemory(try makeHost(), budgetChunks: 64)
        let cache = try KVCache(shape: shape, layout: .perToken, memory: memory, maxTokensPerRequest: 40)
        #expect(throws: VTensorError.unknownRequest(9)) { try cache.view(9, layer: 0, component: .key) }
        try cache.addRequest(1)
        #expect(throws: VTensorError.duplicateRequest(1)) { try cache.addRequest(1) }
        #expect(throws: VTensorError.self) { try cache.reserve(1, tokens: 41) }
        #expect(throws: VTensorError.self) { try cache.setLength(1, 5) }  // nothing mapped yet
        #expect(throws: VTensorError.self) { try cache.fork(from: 1, prefix: 3, into: 2) }
        try cache.free(1)
        #expect(throws: VTensorError.unknownRequest(1)) { try cache.free(1) }
        #expect(throws: VTensorError.self) {
            try KVCache(shape: shape, layout: .perLayer, memory: try makeMemory(try makeHost(), budgetChunks: 2), maxTokensPerRequest: 8)
        }
    }

    @Test func paddingViewIsAlwaysMapped() throws {
        let host = try makeHost()
        let memory = try makeMemory(host, budgetChunks: 8)
        let cache = try KVCache(shape: shape, layout: .blocked, memory: memory, maxTokensPerRequest: 40)
        let pad = try cache.paddingView(layer: 1, component: .value)
        #expect(pad.length == 0)
        #expect(host.isAccessible(address: pad.address(token: pad.readableTokens - 1, head: 1), bytes: shape.headBytes))
    }

    @Test func wasteIsBoundedPerLayout() throws {
        // Per-token and blocked layouts waste at most one chunk per request; per-layer one per range.
        for kind in KVLayoutKind.allCases {
            let memory = try makeMemory(try makeHost(), budgetChunks: 400)
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 256)
            for id in 1...5 {
                try cache.addRequest(id)
                try cache.reserve(id, tokens: 17 * id)
                try cache.setLength(id, 17 * id)
            }
            let a = cache.accounting
            let waste = a.physicalBytes - a.dataBytes
            #expect(waste >= 0)
            #expect(waste < 5 * cache.layout.rangesPerRequest * testChunk)
        }
    }
}

@Suite struct KVCacheLayerViewsTests {
    /// `layerViews` (one lock for a whole step) gives exactly the views `view` gives one by one.
    @Test(arguments: KVLayoutKind.allCases)
    func layerViewsEqualSingleViews(_ kind: KVLayoutKind) throws {
        let shape = KVShape(layers: 3, kvHeads: 2, headDim: 16, dtype: .fp32)
        let memory = try makeMemory(try makeHost(), budgetChunks: 256)
        let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 64, guardTokens: 1)
        for (id, length) in [(4, 0), (9, 5), (2, 40)] {
            try cache.addRequest(id)
            try cache.reserve(id, tokens: length)
            try cache.setLength(id, length)
        }
        let ids = [9, 2, 4]
        let all = try cache.layerViews(ids)
        #expect(all.count == 3)
        for (i, id) in ids.enumerated() {
            #expect(all[i].count == shape.layers)
            for layer in 0..<shape.layers {
                #expect(all[i][layer].key == (try cache.view(id, layer: layer, component: .key)))
                #expect(all[i][layer].value == (try cache.view(id, layer: layer, component: .value)))
            }
        }
        #expect(throws: VTensorError.unknownRequest(77)) { try cache.layerViews([9, 77]) }
    }
}
