import Testing
@testable import VTensor

/// `KVCache.sharedChunkIdentities`: what the shared-prefix decode groups requests by. Two
/// requests with the same identity at chunk j must read the same bytes there, in every range.
@Suite struct SharedChunkIdentityTests {
    let shape = KVShape(layers: 2, kvHeads: 2, headDim: 8, dtype: .fp32)

    /// A request of `n` tokens, mapped for one more (identities name chunks, so its bytes do not matter).
    func addMapped(_ cache: KVCache, _ id: Int, tokens n: Int) throws {
        try cache.addRequest(id)
        try cache.reserve(id, tokens: n + 1)
        try cache.setLength(id, n)
    }

    /// Every pair of requests that name chunk j alike maps the same memory there in every range;
    /// with one range, the identity is the chunk itself.
    func checkIdentities(_ cache: KVCache, _ memory: VirtualMemory, _ ids: [Int]) throws {
        let identities = try cache.sharedChunkIdentities(ids)
        let tensors = try ids.map { try cache.tensors(of: $0) }
        for (a, x) in identities.enumerated() {
            #expect(x.count <= (try cache.length(of: ids[a])) / cache.layout.tokensPerChunk)
            if cache.layout.rangesPerRequest == 1 {
                for (j, identity) in x.enumerated() { #expect(memory.physicalChunk(tensors[a][0], chunk: j)?.raw == identity) }
            }
            for (b, y) in identities.enumerated() where b > a {
                for j in 0..<min(x.count, y.count) where x[j] == y[j] {
                    for r in 0..<tensors[a].count {
                        #expect(memory.physicalChunk(tensors[a][r], chunk: j) == memory.physicalChunk(tensors[b][r], chunk: j),
                                "requests \(ids[a]) and \(ids[b]) name chunk \(j) alike but map different chunks in range \(r)")
                    }
                }
            }
        }
    }

    @Test func forksAliasesAndSharesNameTheirChunksAlike() throws {
        for kind in KVLayoutKind.allCases {
            let host = try makeHost()
            let memory = try makeMemory(host, budgetChunks: 400)
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 256)
            let perChunk = cache.layout.tokensPerChunk
            let n = 3 * perChunk + perChunk / 2
            try addMapped(cache, 1, tokens: n)
            #expect(try cache.sharedChunkIdentities([1]) == [[]], "a request that shares nothing names nothing")

            // A fork shares the full chunks of its prefix; its source now shares them too.
            try cache.fork(from: 1, prefix: 2 * perChunk + 1, into: 2)
            try cache.reserve(2, tokens: 2 * perChunk + 2)
            try cache.setLength(2, 2 * perChunk + 1)
            let forked = try cache.sharedChunkIdentities([1, 2])
            #expect(forked[0].count == 2 && forked[1] == forked[0])

            // A holder's chunks aliased into two later requests (the second named while its aliases
            // are still pending: before its first growth).
            try addMapped(cache, 3, tokens: n)
            try cache.detach(3, tokens: n, asHolder: 50)
            let prefix = (0..<4).map { (holder: 50, chunk: $0) }
            try cache.addRequest(4, aliasing: prefix, tokens: n)
            try cache.reserve(4, tokens: n + 1)
            try cache.setLength(4, n + 1)
            try cache.addRequest(5, aliasing: Array(prefix.prefix(3)), tokens: 3 * perChunk)
            let aliased = try cache.sharedChunkIdentities([4, 5])
            #expect(aliased[0].count == 3 && aliased[1] == aliased[0])
            try cache.reserve(5, tokens: 3 * perChunk + 1)
            try cache.setLength(5, 3 * perChunk + 1)
            let both = try cache.sharedChunkIdentities([4, 5])
            #expect(both[1] == both[0] && Set(both[0]).isDisjoint(with: forked[0]), "the same chunks, and none of request 1's")

            // A running request that gives its chunks to a holder shares them from then on.
            try addMapped(cache, 6, tokens: 2 * perChunk)
            #expect(try cache.sharedChunkIdentities([6]) == [[]])
            #expect(try cache.share(6, chunks: 2, asHolder: 60) == 2)
            try cache.addRequest(7, aliasing: [(60, 0), (60, 1)], tokens: 2 * perChunk)
            try cache.reserve(7, tokens: 2 * perChunk + 1)
            try cache.setLength(7, 2 * perChunk + 1)
            let shared = try cache.sharedChunkIdentities([6, 7])
            #expect(shared[0].count == 2 && shared[1] == shared[0])
            try checkIdentities(cache, memory, [1, 2, 4, 5, 6, 7])

            // Truncated inside its shared chunks, a request names only those it still holds whole,
            // and its copy on write makes the next chunk its own.
            try cache.truncate(4, to: perChunk + 3)
            #expect(try cache.sharedChunkIdentities([4]) == [Array(both[0].prefix(1))])
            try cache.reserve(4, tokens: 2 * perChunk + 1)
            try cache.setLength(4, 2 * perChunk + 1)
            #expect(try cache.sharedChunkIdentities([4]) == [Array(both[0].prefix(1))])
            try checkIdentities(cache, memory, [1, 2, 4, 5, 6, 7])

            for id in [1, 2, 4, 5, 6, 7] { try cache.free(id) }
            try cache.freeHolder(50)
            try cache.freeHolder(60)
            try memory.drain()
            #expect(memory.accounting.inUse == 0)
            #expect(backendAgrees(memory, host) == [])
        }
    }
}
