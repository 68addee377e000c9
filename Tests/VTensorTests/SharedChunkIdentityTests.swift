import Foundation
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

    /// Every pair of requests that name chunk j alike holds the same bytes there in every range
    /// (one chunk mapped twice, or a copy and its source).
    func checkIdentities(_ cache: KVCache, _ memory: VirtualMemory, _ ids: [Int]) throws {
        let identities = try cache.sharedChunkIdentities(ids)
        let tensors = try ids.map { try cache.tensors(of: $0) }
        for (a, x) in identities.enumerated() {
            #expect(x.count <= (try cache.length(of: ids[a])) / cache.layout.tokensPerChunk)
            for (b, y) in identities.enumerated() where b > a {
                for j in 0..<min(x.count, y.count) where x[j] == y[j] {
                    for r in 0..<tensors[a].count {
                        #expect(memcmp(pointer(tensors[a][r].address(ofChunk: j)), pointer(tensors[b][r].address(ofChunk: j)), testChunk) == 0,
                                "requests \(ids[a]) and \(ids[b]) name chunk \(j) alike but hold different bytes in range \(r)")
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

    /// Random requests, forks of random prefixes (over fresh slabs that map only whole, so some
    /// chunks are aliased and some copied), truncations that grow again (copy on write) and
    /// frees: after every operation, any two live requests that name chunk j alike hold the
    /// same bytes there in every range. What the shared-prefix decode relies on when it reads
    /// one member's keys for a whole tile.
    @Test(arguments: KVLayoutKind.allCases, (UInt64(1)...12).map { $0 })
    func requestsNamingAChunkAlikeHoldTheSameBytes(layout: KVLayoutKind, seed: UInt64) throws {
        let host = try makeHost()
        let memory = try VirtualMemory(backend: host, budget: .bytes(1500 * testChunk), lowWatermark: 0, highWatermark: 8, freshSlabChunks: 4)
        let cache = try KVCache(shape: shape, layout: layout, memory: memory, maxTokensPerRequest: 256)
        let perChunk = cache.layout.tokensPerChunk
        var rng = SplitMix64(seed: seed)
        var live: [Int: Int] = [:]
        var nextId = 0
        var stamp: UInt8 = 1
        // Fresh bytes in chunks from..<to of each range (the tokens a step writes), one value a write.
        func write(_ id: Int, chunks: Range<Int>) throws {
            stamp = stamp == 255 ? 1 : stamp + 1
            for tensor in try cache.tensors(of: id) {
                for j in chunks { memset(pointer(tensor.address(ofChunk: j)), Int32(stamp), testChunk) }
            }
        }
        func check() throws {
            let ids = live.keys.sorted()
            let identities = try cache.sharedChunkIdentities(ids)
            let tensors = try ids.map { try cache.tensors(of: $0) }
            var pairs = 0
            for (a, x) in identities.enumerated() {
                for (b, y) in identities.enumerated() where b > a {
                    for j in 0..<min(x.count, y.count) where x[j] == y[j] {
                        pairs += 1
                        for r in 0..<tensors[a].count where memcmp(pointer(tensors[a][r].address(ofChunk: j)), pointer(tensors[b][r].address(ofChunk: j)), testChunk) != 0 {
                            Issue.record("requests \(ids[a]) and \(ids[b]) name chunk \(j) alike but hold different bytes in range \(r)")
                        }
                    }
                }
            }
            shared += pairs
        }
        var shared = 0
        for _ in 0..<1000 {
            let choice = Int(rng.next() % 10)
            if live.count < 3 || choice < 2 {
                let n = Int(rng.next() % 200) + 1
                let id = nextId
                nextId += 1
                try cache.addRequest(id)
                try cache.reserve(id, tokens: n)
                try cache.setLength(id, n)
                try write(id, chunks: 0..<cache.layout.chunks(forTokens: n))
                live[id] = n
            } else if choice < 6 && live.count < 14 {
                let source = live.keys.sorted()[Int(rng.next() % UInt64(live.count))]
                let prefix = Int(rng.next() % UInt64(live[source]! + 1))
                let n = min(250, prefix + Int(rng.next() % 40) + 1)
                let id = nextId
                nextId += 1
                try cache.fork(from: source, prefix: prefix, into: id)
                try cache.reserve(id, tokens: n)
                try cache.setLength(id, n)
                try write(id, chunks: (prefix / perChunk)..<cache.layout.chunks(forTokens: n))
                live[id] = n
            } else if choice < 8 {
                let id = live.keys.sorted()[Int(rng.next() % UInt64(live.count))]
                let m = Int(rng.next() % UInt64(live[id]! + 1))
                try cache.truncate(id, to: m)
                let n = min(250, m + Int(rng.next() % 30))
                // (A shared slab run cut by the truncation is made private here, copy on write.)
                try cache.reserve(id, tokens: n)
                try cache.setLength(id, n)
                if n > m { try write(id, chunks: (m / perChunk)..<cache.layout.chunks(forTokens: n)) }
                live[id] = n
            } else {
                let id = live.keys.sorted()[Int(rng.next() % UInt64(live.count))]
                try cache.free(id)
                live[id] = nil
            }
            try check()
            #expect(memory.audit() == [])
        }
        // (64-token chunks a range leave the per-layer layout few full chunks to share.)
        #expect(shared > 0 || layout == .perLayer, "the random operations shared chunks (\(shared) pairs of equal names checked)")
        #expect(memory.accounting.freshRuns > 0)
        for id in live.keys { try cache.free(id) }
        try memory.drain()
        #expect(memory.accounting.inUse == 0)
        #expect(backendAgrees(memory, host) == [])
    }
}
