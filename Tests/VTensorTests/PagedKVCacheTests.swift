import Testing
@testable import VTensor

/// The paged baseline's bookkeeping: random adds, growths, length updates and frees against a
/// plain model of what each request should hold; after every operation the audit is clean
/// (every page owned once or free, every slot held once) and the counts are exact.
@Suite struct PagedKVCacheTests {
    static let shape = KVShape(layers: 2, kvHeads: 2, headDim: 8, dtype: .bf16)

    @Test func pagesFollowTheTokens() throws {
        let cache = try PagedKVCache(shape: Self.shape, pageTokens: 16, pageCount: 10, maxTokensPerRequest: 100, maxRequests: 4)
        try cache.addRequest(7)
        try cache.reserve([(7, 17)])
        #expect(try cache.blockTable(of: 7).pages.count == 2)
        try cache.setLengths([(7, 17)])
        #expect(throws: VTensorError.self) { try cache.setLengths([(7, 33)]) }
        #expect(try cache.length(of: 7) == 17)
        try cache.reserve([(7, 10)])  // never shrinks
        #expect(try cache.blockTable(of: 7).pages.count == 2)
        #expect(cache.poolBytes == 2 * 2 * 10 * 16 * 2 * 8 * 2)
        #expect(cache.audit().isEmpty)
    }

    @Test func badRequestsChangeNothing() throws {
        let cache = try PagedKVCache(shape: Self.shape, pageTokens: 16, pageCount: 4, maxTokensPerRequest: 64, maxRequests: 2)
        try cache.addRequest(1)
        try cache.addRequest(2)
        #expect(throws: VTensorError.duplicateRequest(1)) { try cache.addRequest(1) }
        #expect(throws: VTensorError.self) { try cache.addRequest(3) }  // no slot left
        try cache.reserve([(1, 32)])
        // 3 more pages for request 2 but 2 free: all or nothing.
        #expect(throws: VTensorError.self) { try cache.reserve([(2, 16), (1, 64)]) }
        #expect(try cache.blockTable(of: 2).pages.isEmpty)
        #expect(try cache.blockTable(of: 1).pages.count == 2)
        #expect(throws: VTensorError.self) { try cache.reserve([(1, 65)]) }  // past the longest request
        #expect(throws: VTensorError.unknownRequest(9)) { try cache.reserve([(9, 1)]) }
        #expect(throws: VTensorError.unknownRequest(9)) { try cache.free(9) }
        #expect(cache.accounting.usedPages == 2)
        #expect(cache.audit().isEmpty)
        #expect(throws: VTensorError.self) { try PagedKVCache(shape: Self.shape, pageCount: 0, maxTokensPerRequest: 1, maxRequests: 1) }
    }

    @Test func changedTablesAreReportedOnce() throws {
        let cache = try PagedKVCache(shape: Self.shape, pageTokens: 4, pageCount: 8, maxTokensPerRequest: 32, maxRequests: 3)
        try cache.addRequest(1)
        try cache.addRequest(2)
        _ = cache.takeChangedTables()
        try cache.reserve([(2, 5)])
        let changed = cache.takeChangedTables()
        #expect(changed.count == 1)
        #expect(changed.first?.slot == (try cache.blockTable(of: 2).slot))
        #expect(changed.first?.pages == (try cache.blockTable(of: 2).pages))
        #expect(cache.takeChangedTables().isEmpty)
        try cache.reserve([(2, 8)])  // still 2 pages: no change
        #expect(cache.takeChangedTables().isEmpty)
    }

    /// The prefix cache's side of the paged baseline: holders keep pages, new requests share
    /// them (references, no copy), and a page shared in part is copied (by the model, from the
    /// list it takes).
    @Test func holdersSharePagesAndPartPagesAreCopied() throws {
        let cache = try PagedKVCache(shape: Self.shape, pageTokens: 4, pageCount: 12, maxTokensPerRequest: 32, maxRequests: 4)
        try cache.addRequest(1)
        try cache.reserve([(1, 10)])
        try cache.setLengths([(1, 10)])
        let pages1 = try cache.blockTable(of: 1).pages
        try cache.detach(1, tokens: 10, asHolder: 50)
        #expect(try cache.holderPages(50) == pages1.map { $0 })
        #expect(cache.accounting.usedPages == 3 && !cache.contains(1))
        // Request 2 shares 2.5 pages: two by reference, the third copied into its own page.
        try cache.addRequest(2, aliasing: (0..<3).map { (holder: 50, chunk: $0) }, tokens: 10)
        let pages2 = try cache.blockTable(of: 2).pages
        #expect(Array(pages2.prefix(2)) == Array(pages1.prefix(2)) && pages2[2] != pages1[2])
        let copies = cache.takePageCopies()
        #expect(copies.count == 1 && copies[0].source == pages1[2] && copies[0].destination == pages2[2])
        #expect(cache.takePageCopies().isEmpty)
        #expect(cache.audit().isEmpty && cache.accounting.usedPages == 4)
        // A running request shares its pages as a holder too; a holder then gives one back.
        try cache.share(2, chunks: 2, asHolder: 51)
        #expect(cache.holdSameChunks(51, as: [(50, 1), (50, 2)]) == [true, false])
        try cache.releaseHolderChunks(50, chunks: [0])
        #expect(cache.accounting.usedPages == 4, "request 2 and holder 51 still hold page 0")
        // Request 3 takes 1.5 pages from holder 51; both grow past what they share.
        try cache.addRequest(3, aliasing: [(holder: 51, chunk: 0), (holder: 51, chunk: 1)], tokens: 6)
        #expect(cache.takePageCopies().count == 1)
        try cache.reserve([(3, 8), (2, 13)])
        #expect(cache.audit().isEmpty)
        try cache.free(2)
        try cache.freeHolder(50)
        try cache.freeHolder(51)
        #expect(cache.audit().isEmpty)
        try cache.free(3)
        #expect(cache.accounting.usedPages == 0 && cache.audit().isEmpty)
        // Errors name the problem and change nothing.
        #expect(throws: VTensorError.unknownRequest(77)) { try cache.addRequest(4, aliasing: [(holder: 77, chunk: 0)], tokens: 2) }
        #expect(throws: VTensorError.self) { try cache.addRequest(4, aliasing: [], tokens: 2) }
        #expect(!cache.contains(4) && cache.audit().isEmpty)
    }

    /// A request that leaves before a step takes its page copy (a prefetch given back, an abort):
    /// the copy is cancelled and its source given back, so an idle cache holds only the holder's
    /// pages, and no later step copies into the page's next owner. A copy into a page someone else
    /// still holds (shared as a holder, or kept by a detach) stays.
    @Test func aCopyIntoAPageNobodyHoldsIsCancelled() throws {
        let cache = try PagedKVCache(shape: Self.shape, pageTokens: 4, pageCount: 8, maxTokensPerRequest: 32, maxRequests: 4)
        try cache.addRequest(1)
        try cache.reserve([(1, 6)])
        try cache.setLengths([(1, 6)])
        try cache.detach(1, tokens: 6, asHolder: 50)
        #expect(cache.accounting.usedPages == 2)
        // Request 2 shares 1.5 pages: its second page waits for a copy of the holder's second.
        try cache.addRequest(2, aliasing: [(holder: 50, chunk: 0), (holder: 50, chunk: 1)], tokens: 6)
        #expect(cache.accounting.usedPages == 3)
        try cache.free(2)
        #expect(cache.takePageCopies().isEmpty)
        try cache.freeHolder(50)
        #expect(cache.accounting.usedPages == 0 && cache.audit().isEmpty)

        // Kept: request 3's pages shared as holder 51 before it leaves; request 4's kept by a detach.
        try cache.addRequest(1)
        try cache.reserve([(1, 6)])
        try cache.setLengths([(1, 6)])
        try cache.detach(1, tokens: 6, asHolder: 50)
        try cache.addRequest(3, aliasing: [(holder: 50, chunk: 0), (holder: 50, chunk: 1)], tokens: 6)
        try cache.share(3, chunks: 1, asHolder: 51)
        try cache.addRequest(4, aliasing: [(holder: 50, chunk: 0), (holder: 50, chunk: 1)], tokens: 6)
        let own4 = try cache.blockTable(of: 4).pages[1]
        try cache.detach(4, tokens: 6, asHolder: 52)
        try cache.free(3)
        let copies = cache.takePageCopies()
        #expect(copies.map(\.destination) == [own4], "\(copies)")
        #expect(cache.audit().isEmpty)
        for holder in [50, 51, 52] { try cache.freeHolder(holder) }
        #expect(cache.accounting.usedPages == 0 && cache.audit().isEmpty)
    }

    @Test(arguments: 0..<12)
    func randomOperationsKeepEveryPageOwnedOnce(seed: Int) throws {
        var random = SplitMix64(seed: UInt64(seed) &+ 99)
        let pageTokens = [1, 4, 16][seed % 3]
        let pageCount = Int.random(in: 4...64, using: &random)
        let maxTokens = Int.random(in: 8...200, using: &random)
        let maxRequests = Int.random(in: 1...8, using: &random)
        let cache = try PagedKVCache(shape: Self.shape, pageTokens: pageTokens, pageCount: pageCount, maxTokensPerRequest: maxTokens,
                                     maxRequests: maxRequests)
        var held: [Int: (pages: Int, length: Int)] = [:]
        var nextID = 0
        for _ in 0..<600 {
            switch Int.random(in: 0..<10, using: &random) {
            case 0...2:
                if held.count < maxRequests {
                    try cache.addRequest(nextID)
                    held[nextID] = (0, 0)
                } else {
                    #expect(throws: VTensorError.self) { try cache.addRequest(nextID) }
                }
                nextID += 1
            case 3...6:
                guard !held.isEmpty else { continue }
                let ids = Array(held.keys).shuffled(using: &random).prefix(Int.random(in: 1...3, using: &random))
                let targets = ids.map { ($0, Int.random(in: 0...maxTokens, using: &random)) }
                let need = targets.reduce(0) { $0 + max(0, cache.pages(forTokens: $1.1) - held[$1.0]!.pages) }
                let free = pageCount - held.values.reduce(0) { $0 + $1.pages }
                if need <= free {
                    try cache.reserve(targets.map { (id: $0.0, tokens: $0.1) })
                    for (id, tokens) in targets { held[id]!.pages = max(held[id]!.pages, cache.pages(forTokens: tokens)) }
                    for (id, _) in targets {
                        let length = Int.random(in: 0...(held[id]!.pages * pageTokens), using: &random)
                        try cache.setLengths([(id, min(length, maxTokens))])
                        held[id]!.length = min(length, maxTokens)
                    }
                } else {
                    #expect(throws: VTensorError.self) { try cache.reserve(targets.map { (id: $0.0, tokens: $0.1) }) }
                }
            default:
                guard let id = held.keys.randomElement(using: &random) else { continue }
                try cache.free(id)
                held[id] = nil
            }
            #expect(cache.audit().isEmpty, "\(cache.audit())")
            let accounting = cache.accounting
            #expect(accounting.usedPages == held.values.reduce(0) { $0 + $1.pages })
            #expect(accounting.tokens == held.values.reduce(0) { $0 + $1.length })
            #expect(accounting.requests == held.count)
            for (id, entry) in held { #expect(try cache.blockTable(of: id).pages.count == entry.pages) }
        }
        for id in held.keys { try cache.free(id) }
        #expect(cache.accounting.usedPages == 0)
        #expect(cache.audit().isEmpty)
    }
}
