import VTensor

/// The engine's admission arithmetic: how many chunks each request holds or has asked the
/// mapper for, against the chunks the budget leaves for requests. The scheduler asks it "can
/// this request grow to N tokens?" before a step, so memory never runs out inside one.
///
/// Chunks given back (a finished, aborted or preempted request) count as free at once: their
/// physical unmap waits for in-flight work, and a mapping that needs them waits for that fence
/// (`VirtualMemory` completes retirements before it declares the budget exhausted).
struct KVLedger {
    /// What a request's tokens take: virtual tensors count chunks of every range a request maps
    /// (guard tokens included); the paged baseline counts 16-token pages.
    struct Units: Equatable {
        var tokensPerUnit: Int
        /// Units a request holds per `tokensPerUnit` tokens (its ranges).
        var perRequest: Int
        var guardTokens: Int
        /// Bytes of one unit, for reports.
        var bytes: Int

        static func chunks(_ layout: KVLayout, guardTokens: Int) -> Units {
            Units(tokensPerUnit: layout.tokensPerChunk, perRequest: layout.rangesPerRequest, guardTokens: guardTokens, bytes: layout.chunkSize)
        }
        static func pages(_ cache: PagedKVCache) -> Units {
            Units(tokensPerUnit: cache.pageTokens, perRequest: 1, guardTokens: 0, bytes: cache.poolBytes / cache.pageCount)
        }
    }

    let units: Units
    /// Units the budget leaves for requests (the padding view and the like excluded).
    let capacityChunks: Int
    private(set) var committedChunks = 0
    private(set) var peakCommittedChunks = 0
    /// Units requests have grown by (`grow`, `attach`) since the start: the engine reads a
    /// step's growth (its plan and the admissions prefetched after it) as a difference.
    private(set) var grownChunks = 0
    /// Per request: the tokens its mappings cover (or will, once the mapper is done).
    private(set) var reservedTokens: [RequestID: Int] = [:]
    /// Per request: units it maps that the prefix cache holds (aliased full chunks), not its own.
    private(set) var sharedUnits: [RequestID: Int] = [:]
    /// Units the prefix cache holds (counted in `committedChunks`: reclaimable by eviction).
    private(set) var cachedUnits = 0
    /// Units given back inside a slab run that stay mapped until the rest of it goes
    /// (`PrefixStore.strandedUnits`), counted in `committedChunks`: the memory is in use. A
    /// stranded chunk that a cached block also holds is counted twice: the ledger errs high
    /// (admitting a little less) rather than low (a mapping that finds no memory), and
    /// `committedChunks` may then pass `capacityChunks` by at most this much.
    private(set) var strandedUnits = 0

    init(units: Units, capacityChunks: Int) {
        self.units = units
        self.capacityChunks = capacityChunks
    }

    /// Units a request of `tokens` tokens holds (every range, guard included).
    func chunks(forTokens tokens: Int) -> Int {
        units.perRequest * ((tokens + units.guardTokens + units.tokensPerUnit - 1) / units.tokensPerUnit)
    }

    /// The longest request the budget can hold when it runs alone.
    var maxTokensAlone: Int {
        let perRange = capacityChunks / units.perRequest
        return max(0, perRange * units.tokensPerUnit - units.guardTokens)
    }

    var freeChunks: Int { capacityChunks - committedChunks }

    /// Extra chunks `id` needs to cover `tokens` tokens (0 if it already does; a request not
    /// in the ledger starts from nothing).
    func growthChunks(_ id: RequestID, to tokens: Int) -> Int {
        let held = reservedTokens[id].map { chunks(forTokens: $0) } ?? 0
        return max(0, chunks(forTokens: tokens) - held)
    }

    func canGrow(_ id: RequestID, to tokens: Int) -> Bool { growthChunks(id, to: tokens) <= freeChunks }

    /// Records that `id` will cover `tokens` tokens (never shrinks: mappings stay until freed).
    mutating func grow(_ id: RequestID, to tokens: Int) {
        let extra = growthChunks(id, to: tokens)
        precondition(extra <= freeChunks, "grow past the budget: admission must ask canGrow first")
        reservedTokens[id] = max(reservedTokens[id] ?? 0, tokens)
        committedChunks += extra
        grownChunks += extra
        peakCommittedChunks = max(peakCommittedChunks, committedChunks)
    }

    /// `id` gave all its chunks back (those it shared stay the prefix cache's).
    mutating func release(_ id: RequestID) {
        let shared = sharedUnits.removeValue(forKey: id) ?? 0
        guard let tokens = reservedTokens.removeValue(forKey: id) else { return }
        committedChunks -= chunks(forTokens: tokens) - shared
    }

    /// Units a request starting with `sharedUnits` of the prefix cache's units needs to cover
    /// `tokens` tokens.
    func attachChunks(sharedUnits shared: Int, tokens: Int) -> Int { max(0, chunks(forTokens: tokens) - shared) }

    /// Records a request that maps `shared` of the prefix cache's units and covers `tokens`
    /// tokens (its own units: the rest, such as a boundary chunk it will copy on write).
    mutating func attach(_ id: RequestID, sharedUnits shared: Int, tokens: Int) {
        precondition(reservedTokens[id] == nil, "attach of a request the ledger already holds")
        let own = attachChunks(sharedUnits: shared, tokens: tokens)
        precondition(own <= freeChunks, "attach past the budget: admission must check first")
        reservedTokens[id] = tokens
        sharedUnits[id] = shared
        committedChunks += own
        grownChunks += own
        peakCommittedChunks = max(peakCommittedChunks, committedChunks)
    }

    /// The prefix cache took `units` units (a leaving request's chunks it keeps: release the
    /// request first).
    mutating func cache(_ units: Int) {
        cachedUnits += units
        committedChunks += units
        peakCommittedChunks = max(peakCommittedChunks, committedChunks)
    }

    /// `units` of running request `id`'s own units are now the prefix cache's too (it shared
    /// chunks it computed): they stay committed, as the cache's once the request leaves.
    mutating func share(_ id: RequestID, units: Int) {
        precondition(reservedTokens[id] != nil, "share by a request the ledger does not hold")
        sharedUnits[id, default: 0] += units
        cachedUnits += units
    }

    /// The store now strands `units` units (read after whatever gave chunks back; a grow that
    /// takes a stranded chunk back is counted at the next reading, the ledger erring high).
    mutating func setStranded(_ units: Int) {
        committedChunks += units - strandedUnits
        strandedUnits = units
        peakCommittedChunks = max(peakCommittedChunks, committedChunks)
    }

    /// The prefix cache gave `units` units back.
    mutating func uncache(_ units: Int) {
        precondition(units <= cachedUnits, "uncache of more than the prefix cache holds")
        cachedUnits -= units
        committedChunks -= units
    }
}
