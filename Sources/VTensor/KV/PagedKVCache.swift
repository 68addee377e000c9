/// The paged baseline's bookkeeping (vLLM's design, for the A/B against virtual tensors): a pool
/// of `pageCount` pages of `pageTokens` tokens, reserved up front, and per request a block table
/// of page ids in token order. Token t of a request lives in page table[t / pageTokens], row
/// t % pageTokens, in every layer's K and V pool (the pools share page ids).
///
/// Host only: whoever owns the device pool and the device copy of the block tables (a model)
/// uploads the tables of `takeChangedTables()` before a step reads them. Each request holds a
/// table slot (a row of that device array) from `addRequest` to `free`.
///
/// Pages are never waited on: every kernel that writes or reads them runs on one stream, in
/// order, so a page freed while a queued step still writes it is rewritten by its next owner
/// only in a later step.
///
/// A prefix cache (the same one virtual tensors have, for the A/B) shares pages: a request that
/// leaves becomes a *holder* of its first pages, a new request's table starts with holders'
/// pages (a reference each, no copy), and a page a request would share only in part is copied
/// into a page of its own when it starts (its first write lands there): the copies wait in
/// `takePageCopies()` for the model, which makes them before the step's kernels. Requests only
/// ever write past what they share (holders take whole pages of running requests), so a page
/// another holds is never written.
///
/// `@unchecked Sendable`: every mutable field is guarded by `lock`.
public final class PagedKVCache: @unchecked Sendable {
    public let shape: KVShape
    public let pageTokens: Int
    public let pageCount: Int
    public let maxTokensPerRequest: Int
    /// Table slots: the most requests the cache holds at once.
    public let maxRequests: Int
    public var maxPagesPerRequest: Int { (maxTokensPerRequest + pageTokens - 1) / pageTokens }

    private struct Entry {
        var slot: Int
        var pages: [Int32] = []
        var length = 0
    }
    private let lock = ConditionLock()
    private var entries: [Int: Entry] = [:]
    /// Per page: the tables and holders that hold it (0: free).
    private var references: [Int32]
    /// Prefix-cache holders: their pages by block index (nil: given back), and their tokens.
    private var holders: [Int: [Int32?]] = [:]
    private var holderTokens: [Int: Int] = [:]
    /// Page copies the model makes before the next step (source, destination); each source
    /// holds a reference until the copy is taken, so it is not reused before it is read.
    private var pendingCopies: [(source: Int32, destination: Int32)] = []
    /// Free page ids, taken from the end (recently freed pages first: warm in L2).
    private var freePages: [Int32]
    private var freeSlots: [Int]
    private var changedSlots: Set<Int> = []
    private var peakUsed = 0

    public init(shape: KVShape, pageTokens: Int = 16, pageCount: Int, maxTokensPerRequest: Int, maxRequests: Int) throws {
        guard pageTokens > 0, pageCount > 0, maxTokensPerRequest > 0, maxRequests > 0 else {
            throw VTensorError.invalidSize("a paged KV cache needs positive page size, pages, request length and requests")
        }
        guard pageCount <= Int(Int32.max) else { throw VTensorError.invalidSize("\(pageCount) pages exceed int32 page ids") }
        self.shape = shape
        self.pageTokens = pageTokens
        self.pageCount = pageCount
        self.maxTokensPerRequest = maxTokensPerRequest
        self.maxRequests = maxRequests
        freePages = (0..<Int32(pageCount)).reversed()
        freeSlots = (0..<maxRequests).reversed()
        references = Array(repeating: 0, count: pageCount)
    }

    /// Bytes of one page in one layer's K (or V) pool.
    public var pageBytes: Int { pageTokens * shape.tokenLayerBytes }
    /// Bytes of every page of every layer, K and V: the pool reserved up front.
    public var poolBytes: Int { 2 * shape.layers * pageCount * pageBytes }

    /// Pages a request of `tokens` tokens holds.
    public func pages(forTokens tokens: Int) -> Int { (tokens + pageTokens - 1) / pageTokens }

    public func addRequest(_ id: Int) throws {
        try lock.withLock {
            guard entries[id] == nil else { throw VTensorError.duplicateRequest(id) }
            guard let slot = freeSlots.popLast() else {
                throw VTensorError.capacityExceeded("the paged KV cache holds \(maxRequests) requests at most")
            }
            entries[id] = Entry(slot: slot)
            changedSlots.insert(slot)
        }
    }

    public func contains(_ id: Int) -> Bool { lock.withLock { entries[id] != nil } }
    public var requestIDs: [Int] { lock.withLock { Array(entries.keys) } }

    /// Gives every page of `id` back at once (see the type's note on in-flight steps); pages a
    /// holder shares stay the holder's.
    public func free(_ id: Int) throws {
        try lock.withLock {
            guard let entry = entries.removeValue(forKey: id) else { throw VTensorError.unknownRequest(id) }
            for page in entry.pages.reversed() { dropLocked(page) }
            freeSlots.append(entry.slot)
            changedSlots.remove(entry.slot)
        }
    }

    /// Gives each request pages to cover `tokens` tokens; all or nothing: when the pool cannot
    /// cover every request, nothing changes and it throws.
    public func reserve(_ targets: [(id: Int, tokens: Int)]) throws {
        try lock.withLock {
            var need = 0
            for (id, tokens) in targets {
                guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
                guard tokens <= maxTokensPerRequest else {
                    throw VTensorError.capacityExceeded("request \(id) would hold \(tokens) tokens; at most \(maxTokensPerRequest)")
                }
                need += max(0, pages(forTokens: tokens) - entry.pages.count)
            }
            guard need <= freePages.count else {
                throw VTensorError.outOfMemory("\(need) pages needed, \(freePages.count) free")
            }
            for (id, tokens) in targets {
                let extra = pages(forTokens: tokens) - entries[id]!.pages.count
                guard extra > 0 else { continue }
                for _ in 0..<extra { entries[id]!.pages.append(takeLocked()) }
                changedSlots.insert(entries[id]!.slot)
            }
            peakUsed = max(peakUsed, pageCount - freePages.count)
        }
    }

    public func length(of id: Int) throws -> Int {
        try lock.withLock {
            guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
            return entry.length
        }
    }

    /// Declares tokens written; every new length must be covered by the request's pages.
    /// All or nothing.
    public func setLengths(_ updates: [(id: Int, length: Int)]) throws {
        try lock.withLock {
            for (id, length) in updates {
                guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
                guard length >= 0, pages(forTokens: length) <= entry.pages.count else {
                    throw VTensorError.capacityExceeded("request \(id): \(length) tokens need \(pages(forTokens: length)) pages, it holds \(entry.pages.count)")
                }
            }
            for (id, length) in updates { entries[id]!.length = length }
        }
    }

    /// The request's table slot and its page ids in token order.
    public func blockTable(of id: Int) throws -> (slot: Int, pages: [Int32]) {
        try lock.withLock {
            guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
            return (entry.slot, entry.pages)
        }
    }

    /// The pages of a table that other tables may hold too and that stay as they are: the full
    /// pages before its next token (`length` tokens written). The same page id at the same place
    /// in two tables is one copy (the shared-prefix decode's tiles).
    public static func sharedPageIdentities(_ pages: [Int32], length: Int, pageTokens: Int) -> [UInt64] {
        pages.prefix(min(pages.count, length / pageTokens)).map { UInt64(UInt32(bitPattern: $0)) }
    }

    /// `sharedPageIdentities` of each request, under one hold of the lock.
    public func sharedPageIdentities(_ ids: [Int]) throws -> [[UInt64]] {
        try lock.withLock {
            try ids.map { id in
                guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
                return Self.sharedPageIdentities(entry.pages, length: entry.length, pageTokens: pageTokens)
            }
        }
    }

    /// The tables that changed since the last call (slot, pages), for the device copy.
    public func takeChangedTables() -> [(slot: Int, pages: [Int32])] {
        lock.withLock {
            defer { changedSlots.removeAll(keepingCapacity: true) }
            let bySlot = Dictionary(uniqueKeysWithValues: entries.values.map { ($0.slot, $0.pages) })
            return changedSlots.sorted().compactMap { slot in bySlot[slot].map { (slot, $0) } }
        }
    }

    /// Page copies to make before the next step reads the pages (source, destination), in
    /// order; taking them lets their sources go.
    public func takePageCopies() -> [(source: Int32, destination: Int32)] {
        lock.withLock {
            let taken = pendingCopies
            pendingCopies.removeAll(keepingCapacity: true)
            for copy in taken { dropLocked(copy.source) }
            return taken
        }
    }

    // MARK: Prefix-cache holders

    /// Makes request `id`'s first `tokens` tokens a holder's: the pages covering them stay
    /// `holder`'s, the rest are given back, and the request ends.
    public func detach(_ id: Int, tokens: Int, asHolder holder: Int) throws {
        try lock.withLock {
            guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
            guard holders[holder] == nil else { throw VTensorError.duplicateRequest(holder) }
            guard tokens >= 0, tokens <= entry.length else {
                throw VTensorError.invalidSize("cannot keep \(tokens) tokens of request \(id), which holds \(entry.length)")
            }
            let keep = pages(forTokens: tokens)
            for page in entry.pages[keep...].reversed() { dropLocked(page) }
            holders[holder] = entry.pages[..<keep].map { $0 }
            holderTokens[holder] = tokens
            entries[id] = nil
            freeSlots.append(entry.slot)
            changedSlots.remove(entry.slot)
        }
    }

    /// Makes running request `id`'s first `chunks` pages (tokens it has computed) a holder's
    /// too, while it runs.
    @discardableResult
    public func share(_ id: Int, chunks: Int, asHolder holder: Int) throws -> Int {
        try lock.withLock {
            guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
            guard holders[holder] == nil else { throw VTensorError.duplicateRequest(holder) }
            guard chunks > 0, chunks * pageTokens <= entry.length else {
                throw VTensorError.invalidSize("cannot share \(chunks) pages of request \(id), which holds \(entry.length) tokens")
            }
            for page in entry.pages[..<chunks] { references[Int(page)] += 1 }
            holders[holder] = entry.pages[..<chunks].map { $0 }
            holderTokens[holder] = chunks * pageTokens
            return chunks
        }
    }

    /// A new request whose first `tokens` tokens are in holders' pages: block i of its table is
    /// `prefix[i]`'s page (a reference, no copy); a page it shares only in part is copied into
    /// one of its own (`takePageCopies`). All or nothing.
    public func addRequest(_ id: Int, aliasing prefix: [(holder: Int, chunk: Int)], tokens: Int) throws {
        try lock.withLock {
            guard entries[id] == nil else { throw VTensorError.duplicateRequest(id) }
            guard tokens >= 0, pages(forTokens: tokens) == prefix.count, tokens <= maxTokensPerRequest else {
                throw VTensorError.invalidSize("\(tokens) tokens take \(pages(forTokens: tokens)) pages; \(prefix.count) given")
            }
            let shared = try prefix.enumerated().map { i, place -> Int32 in
                guard place.chunk == i else { throw VTensorError.invalidSize("page \(i) of a prefix must come from page \(i), not \(place.chunk)") }
                guard let pages = holders[place.holder] else { throw VTensorError.unknownRequest(place.holder) }
                guard i < pages.count, let page = pages[i] else { throw VTensorError.notMapped(tensor: place.holder, chunk: i) }
                return page
            }
            let partial = tokens % pageTokens > 0
            guard !partial || !freePages.isEmpty else { throw VTensorError.outOfMemory("1 page needed, 0 free") }
            guard let slot = freeSlots.popLast() else {
                throw VTensorError.capacityExceeded("the paged KV cache holds \(maxRequests) requests at most")
            }
            var pages = Array(shared.prefix(partial ? shared.count - 1 : shared.count))
            for page in pages { references[Int(page)] += 1 }
            if partial, let last = shared.last {
                let own = takeLocked()
                references[Int(last)] += 1  // held until the copy is taken
                pendingCopies.append((last, own))
                pages.append(own)
            }
            entries[id] = Entry(slot: slot, pages: pages, length: tokens)
            changedSlots.insert(slot)
            peakUsed = max(peakUsed, pageCount - freePages.count)
        }
    }

    /// Gives back pages `chunks` of holder `holder`.
    public func releaseHolderChunks(_ holder: Int, chunks: [Int]) throws {
        try lock.withLock {
            guard holders[holder] != nil else { throw VTensorError.unknownRequest(holder) }
            for index in chunks where index < holders[holder]!.count {
                if let page = holders[holder]![index] { dropLocked(page) }
                holders[holder]![index] = nil
            }
        }
    }

    /// Gives back everything holder `holder` keeps and forgets it.
    public func freeHolder(_ holder: Int) throws {
        try lock.withLock {
            guard let pages = holders.removeValue(forKey: holder) else { throw VTensorError.unknownRequest(holder) }
            holderTokens[holder] = nil
            for case let page? in pages.reversed() { dropLocked(page) }
        }
    }

    /// For each place, whether holder `holder` holds the same page there as the place's holder.
    public func holdSameChunks(_ holder: Int, as places: [(holder: Int, chunk: Int)]) -> [Bool] {
        lock.withLock {
            guard let mine = holders[holder] else { return places.map { _ in false } }
            return places.map { place in
                guard let theirs = holders[place.holder], place.chunk < mine.count, place.chunk < theirs.count,
                      let page = mine[place.chunk] else { return false }
                return theirs[place.chunk] == page
            }
        }
    }

    public var holderIDs: [Int] { lock.withLock { Array(holders.keys) } }

    public func heldBlocks(_ places: [(holder: Int, chunk: Int)]) -> [[UInt64]?] {
        lock.withLock {
            places.map { place in
                guard let pages = holders[place.holder], place.chunk < pages.count, let page = pages[place.chunk] else { return nil }
                return [UInt64(page)]
            }
        }
    }

    /// A holder's pages by block index (nil: given back), for checks of what a prefix cache keeps.
    public func holderPages(_ holder: Int) throws -> [Int32?] {
        try lock.withLock {
            guard let pages = holders[holder] else { throw VTensorError.unknownRequest(holder) }
            return pages
        }
    }

    private func takeLocked() -> Int32 {
        let page = freePages.removeLast()
        references[Int(page)] = 1
        return page
    }

    private func dropLocked(_ page: Int32) {
        precondition(references[Int(page)] > 0, "page \(page) given back twice")
        references[Int(page)] -= 1
        guard references[Int(page)] == 0 else { return }
        freePages.append(page)
        // A copy still pending into a page nobody holds any more (its request left before a step
        // took the copy) is moot: cancelled, its source given back. Left pending, it would keep
        // the source held while the engine idles, and copy into the page's next owner.
        if let moot = pendingCopies.firstIndex(where: { $0.destination == page }) {
            let source = pendingCopies.remove(at: moot).source
            dropLocked(source)
        }
    }

    public struct Accounting: Sendable, Equatable, Codable {
        public var requests: Int
        public var usedPages: Int
        public var freePages: Int
        public var peakUsedPages: Int
        public var tokens: Int
    }

    public var accounting: Accounting {
        lock.withLock {
            Accounting(requests: entries.count, usedPages: pageCount - freePages.count, freePages: freePages.count,
                       peakUsedPages: peakUsed, tokens: entries.values.reduce(0) { $0 + $1.length })
        }
    }

    /// Problems with the invariants (empty when sound): every page's reference count is the
    /// tables, holders and pending copies that hold it, free pages are held by nothing, every
    /// slot held once, every length covered by its pages.
    public func audit() -> [String] {
        lock.withLock {
            var problems: [String] = []
            var counted = [Int32](repeating: 0, count: pageCount)
            var free = [Bool](repeating: false, count: pageCount)
            for page in freePages {
                guard page >= 0 && Int(page) < pageCount else { problems.append("free page \(page) out of range"); continue }
                if free[Int(page)] { problems.append("page \(page) free twice") }
                free[Int(page)] = true
            }
            var slots = Set(freeSlots)
            if slots.count != freeSlots.count { problems.append("a table slot is free twice") }
            for (id, entry) in entries {
                if !slots.insert(entry.slot).inserted { problems.append("slot \(entry.slot) held twice (request \(id))") }
                if pages(forTokens: entry.length) > entry.pages.count { problems.append("request \(id) holds \(entry.length) tokens in \(entry.pages.count) pages") }
                for page in entry.pages {
                    guard page >= 0 && Int(page) < pageCount else { problems.append("request \(id) holds page \(page), out of range"); continue }
                    if free[Int(page)] { problems.append("page \(page) is both free and held by request \(id)") }
                    counted[Int(page)] += 1
                }
            }
            for (holder, pages) in holders {
                for case let page? in pages {
                    if free[Int(page)] { problems.append("page \(page) is both free and held by holder \(holder)") }
                    counted[Int(page)] += 1
                }
            }
            for copy in pendingCopies { counted[Int(copy.source)] += 1 }
            if counted != references { problems.append("page references differ from the tables, holders and copies that hold pages") }
            if slots.count != maxRequests { problems.append("\(maxRequests - slots.count) table slots lost") }
            let accounted = counted.indices.filter { counted[$0] > 0 || free[$0] }.count
            if accounted != pageCount { problems.append("\(pageCount - accounted) pages neither free nor held") }
            return problems
        }
    }
}
