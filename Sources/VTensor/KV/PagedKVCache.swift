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

    /// Gives every page of `id` back at once (see the type's note on in-flight steps).
    public func free(_ id: Int) throws {
        try lock.withLock {
            guard let entry = entries.removeValue(forKey: id) else { throw VTensorError.unknownRequest(id) }
            freePages += entry.pages.reversed()
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
                entries[id]!.pages += freePages.suffix(extra).reversed()
                freePages.removeLast(extra)
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

    /// The tables that changed since the last call (slot, pages), for the device copy.
    public func takeChangedTables() -> [(slot: Int, pages: [Int32])] {
        lock.withLock {
            defer { changedSlots.removeAll(keepingCapacity: true) }
            let bySlot = Dictionary(uniqueKeysWithValues: entries.values.map { ($0.slot, $0.pages) })
            return changedSlots.sorted().compactMap { slot in bySlot[slot].map { (slot, $0) } }
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

    /// Problems with the invariants (empty when sound): every page owned by exactly one request
    /// or free, every slot held once, every length covered by its pages.
    public func audit() -> [String] {
        lock.withLock {
            var problems: [String] = []
            var owner = [Int?](repeating: nil, count: pageCount)
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
                    if let other = owner[Int(page)] { problems.append("page \(page) held by requests \(other) and \(id)") }
                    owner[Int(page)] = id
                }
            }
            if slots.count != maxRequests { problems.append("\(maxRequests - slots.count) table slots lost") }
            let accounted = owner.indices.filter { owner[$0] != nil || free[$0] }.count
            if accounted != pageCount { problems.append("\(pageCount - accounted) pages neither free nor held") }
            return problems
        }
    }
}
