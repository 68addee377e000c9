import VTensor

/// The engine's prefix cache: the K/V blocks of requests that left stay held (as the store's
/// holders: virtual-tensor chunks, or the paged baseline's pages) and indexed by their tokens
/// (`PrefixTree`); a new request whose tokens start the same way starts from those blocks
/// (aliased chunks or shared pages, no copy) and computes only the rest. The blocks count in
/// the `KVLedger` as committed but reclaimable: admission evicts unreferenced leaves, least
/// recently used first, before it preempts anyone.
///
/// Runs on the engine's stepping thread only.
final class PrefixCache {
    let cache: any PrefixStore
    private(set) var tree: PrefixTree
    /// Ledger units per tree node (a node is one chunk of every range of the layout).
    let unitsPerNode: Int
    private var nextHolder = 1
    /// What each request with cached chunks holds references on.
    private var pins: [RequestID: PrefixTree.Match] = [:]
    /// Running totals: units kept from requests that left, and given back.
    private(set) var keptUnits = 0
    /// Of those, units taken from running requests (`publish`).
    private(set) var sharedRunningUnits = 0
    private(set) var evictedUnits = 0
    /// Starts that found a cached prefix but could not alias it (the request computed it all
    /// again), publishes a running request's store refused, and the last such error.
    private(set) var attachFailures = 0
    private(set) var publishFailures = 0
    /// Packs the store refused with an error (the prefix was shared or kept unpacked instead).
    private(set) var packFailures = 0
    private(set) var lastFailure: String?

    /// Publishes of at least this many new blocks that waiting requests share are packed into a
    /// slab (`EngineOptions.packPrefixChunks`; 0: never).
    let packBlocks: Int
    /// Publishes packed, and the units their copies took.
    private(set) var packs = 0
    private(set) var packedUnits = 0

    init(store: any PrefixStore, packBlocks: Int = 0) {
        cache = store
        tree = PrefixTree(tokensPerBlock: store.blockTokens)
        unitsPerNode = store.unitsPerBlock
        self.packBlocks = packBlocks > 0 && store.packsPrefixes ? packBlocks : 0
    }

    /// Units of cached blocks that a repack moved into a slab while running requests still map
    /// the old chunks: they stay the cache's in the ledger (those requests count them as shared,
    /// not their own) until the last of those requests leaves.
    private var orphans: [(units: Int, requests: Set<RequestID>)] = []
    private(set) var orphanUnits = 0
    /// Attaches that first repacked a hot stretch of their prefix into a slab.
    private(set) var repacks = 0

    /// Chunks (ledger units) the cache holds: its tree's, and orphans still mapped. (Where a
    /// slab maps only whole, a packed holder's block evicted while others of the slab stay
    /// cached keeps its memory until they go: the store counts it as stranded, and
    /// `syncStranded` puts it in the ledger.)
    var cachedUnits: Int { tree.count * unitsPerNode + orphanUnits }

    /// The cached prefix a waiting request could start from: at most all its tokens but the
    /// last (whose logits it must compute).
    func lookup(_ sequence: EngineSequence) -> PrefixTree.Match {
        guard sequence.readsPrefixCache else { return PrefixTree.Match() }
        return tree.lookup(sequence.tokens, salt: sequence.salt, limit: sequence.tokens.count - 1)
    }

    /// What `start` did for a waiting request.
    enum Start {
        /// Nothing cached for it (or the cache refused): it starts from scratch.
        case none
        /// It starts with this many tokens from the cache.
        case attached(tokens: Int)
        /// Its cached prefix needs this many more free units (a boundary chunk it will copy).
        case needs(units: Int)
    }

    /// Starts a waiting request (no KV yet) from its longest cached prefix, when the ledger has
    /// room for the part that will be its own.
    func start(_ sequence: EngineSequence, ledger: inout KVLedger) -> Start {
        var match = lookup(sequence)
        guard match.tokens > 0 else { return .none }
        if packBlocks > 0 { match = repackIfShared(match, ledger: &ledger) }
        let shared = sharedUnits(match)
        let own = ledger.attachChunks(sharedUnits: shared, tokens: match.tokens)
        guard own <= ledger.freeChunks else { return .needs(units: own - ledger.freeChunks) }
        do {
            try attach(sequence, match, sharedUnits: shared, ledger: &ledger)
        } catch {
            attachFailures += 1
            lastFailure = "aliasing \(match.tokens) cached tokens for request \(sequence.id): \(error)"
            return .none
        }
        return .attached(tokens: match.tokens)
    }

    /// A stretch of at least `packBlocks` blocks at the end of `match`'s whole blocks, held chunk
    /// by chunk (not packed), that running requests map right now (a system prompt published
    /// when nobody waited for it, shared since): copied into one slab, and its nodes moved there,
    /// so this request and every later one maps it with one driver call. The old chunks go back
    /// as the requests mapping them leave (orphans). Returns the match with its new locations,
    /// or as it was when nothing is packed (not shared now, no room for the copy, no slab).
    /// A conversation's next round finds its history unreferenced (the round before ended) and
    /// takes its holder over as before.
    private func repackIfShared(_ match: PrefixTree.Match, ledger: inout KVLedger) -> PrefixTree.Match {
        let full = match.tokens / tree.tokensPerBlock
        guard full >= packBlocks, tree.references(of: match.nodes[full - 1]) > 0 else { return match }
        let places = match.locations[..<full].map { ($0.holder, $0.chunk) }
        // Admission's common case once a prefix is packed: its last block is, and nothing is to do.
        guard cache.arePacked([places[full - 1]]) == [false] else { return match }
        let packed = cache.arePacked(places)
        var first = full
        while first > 0 && !packed[first - 1] { first -= 1 }
        let units = (full - first) * unitsPerNode
        guard full - first >= packBlocks,
              ledger.attachChunks(sharedUnits: sharedUnits(match), tokens: match.tokens) + units <= ledger.freeChunks else { return match }
        let holder = nextHolder
        nextHolder += 1
        do {
            guard try cache.packPlaces(Array(places[first..<full]), asHolder: holder) else { return match }
        } catch {
            packFailures += 1
            lastFailure = "packing cached chunks \(first)..<\(full): \(error)"
            return match
        }
        let stretch = Array(match.nodes[first..<full])
        let moved = tree.relocate(stretch, to: holder)
        giveBack(moved.displaced, emptyHolders: moved.emptyHolders)
        syncStranded(&ledger)
        ledger.cache(units)
        keptUnits += units
        repacks += 1
        packedUnits += units
        // The old chunks: the cache's in the ledger until the requests that map them leave.
        let mapping = Set(pins.compactMap { id, pinned in pinned.nodes.contains(stretch[0]) ? id : nil })
        orphans.append((units, mapping))
        orphanUnits += units
        var repacked = match
        for i in first..<full { repacked.locations[i] = PrefixTree.Location(holder: holder, chunk: i) }
        return repacked
    }

    /// Request `id` no longer maps anything: orphans nobody else maps leave the ledger.
    private func releaseOrphans(of id: RequestID, ledger: inout KVLedger) {
        guard !orphans.isEmpty else { return }
        for i in orphans.indices { orphans[i].requests.remove(id) }
        for orphan in orphans where orphan.requests.isEmpty {
            ledger.uncache(orphan.units)
            orphanUnits -= orphan.units
        }
        orphans.removeAll { $0.requests.isEmpty }
    }

    /// Takes back the KV of a request that waits and will start over (a start that was not
    /// admitted, a prefetch given back): nothing of it is cached, its pins are released.
    func giveBack(_ sequence: EngineSequence, ledger: inout KVLedger) {
        retire(sequence, tokens: 0, ledger: &ledger)
        sequence.computed = 0
    }

    /// Gives `sequence` (no KV yet) a KV entry whose first `match.tokens` tokens alias the cached
    /// chunks, pins them, and records it in the ledger, which must have room for its own part.
    /// `shared`: `sharedUnits(match)`, asked before the request exists (what it will copy depends
    /// on the holders as they are now).
    func attach(_ sequence: EngineSequence, _ match: PrefixTree.Match, sharedUnits shared: Int, ledger: inout KVLedger) throws {
        precondition(!sequence.hasKV && pins[sequence.id] == nil, "attach of a request that has KV")
        try cache.addRequest(sequence.id, aliasing: match.locations.map { ($0.holder, $0.chunk) }, tokens: match.tokens)
        tree.acquire(match)
        pins[sequence.id] = match
        ledger.attach(sequence.id, sharedUnits: shared, tokens: match.tokens)
        sequence.hasKV = true
        sequence.computed = match.tokens
    }

    /// Units of `match` a request shares with the cache: its full chunks (a chunk it matched only
    /// in part becomes its own copy at its first write).
    func sharedUnits(_ match: PrefixTree.Match) -> Int {
        let full = (match.tokens / tree.tokensPerBlock) * unitsPerNode
        // A slab that maps only whole (a packed copy, or a run of fresh chunks), matched in
        // part, is copied: the request's own.
        return full - cache.copiedUnits(aliasing: match.locations.map { ($0.holder, $0.chunk) }, tokens: match.tokens)
    }

    /// Brings the ledger's count of stranded units (given back inside a slab run, still in
    /// use) up to date after the store gave chunks back.
    func syncStranded(_ ledger: inout KVLedger) {
        let stranded = cache.strandedUnits
        if stranded != ledger.strandedUnits { ledger.setStranded(stranded) }
    }

    /// A request leaves (finished, aborted, preempted): its KV's first `tokens` tokens go into
    /// the tree (chunks the tree lacks are kept, the others given back) and its pins are
    /// released. The nodes it matched whose chunks it still holds itself move to it, so a
    /// conversation's chunks gather in its latest holder (which the next round can take over
    /// whole). `tokens` 0 (a failed step: its K/V may be half written) frees everything.
    /// Returns the chunks (ledger units) the tree kept.
    @discardableResult
    func retire(_ sequence: EngineSequence, tokens: Int, ledger: inout KVLedger) -> Int {
        let pinned = pins.removeValue(forKey: sequence.id)
        if let pinned { tree.release(pinned) }
        ledger.release(sequence.id)
        releaseOrphans(of: sequence.id, ledger: &ledger)
        guard sequence.hasKV else { return 0 }
        sequence.hasKV = false
        guard tokens > 0 else {
            try? cache.free(sequence.id)
            syncStranded(&ledger)
            return 0
        }
        let holder = nextHolder
        nextHolder += 1
        do {
            try cache.detach(sequence.id, tokens: tokens, asHolder: holder)
        } catch {
            preconditionFailure("prefix cache: keeping request \(sequence.id)'s KV failed: \(error)")
        }
        var relocating: Set<Int> = []
        if let pinned {
            let placed = pinned.nodes.compactMap { node in tree.location(of: node).map { (node, $0) } }
            let same = cache.holdSameChunks(holder, as: placed.map { ($0.1.holder, $0.1.chunk) })
            for ((node, _), isSame) in zip(placed, same) where isSame { relocating.insert(node) }
        }
        let insertion = tree.insert(Array(sequence.tokens.prefix(tokens)), salt: sequence.salt, holder: holder, relocating: relocating)
        settle(insertion, holder: holder, ledger: &ledger)
        let kept = insertion.kept.count * unitsPerNode
        ledger.cache(kept)
        keptUnits += kept
        syncStranded(&ledger)
        return kept
    }

    /// A running request has written its first `written` tokens (a step that ended its prompt
    /// came back): its whole chunks among them go into the tree now, not when it leaves, so
    /// requests waiting for that prefix start from it while this one generates. The request
    /// pins them (they are its own memory too: the ledger counts them once, as the cache's).
    /// Returns whether the tree took any.
    ///
    /// When at least `packBlocks` of those chunks are new to the tree and a request in `waiting`
    /// shares them, the tree gets a copy packed into one slab instead (`PrefixStore.sharePacked`):
    /// the requests that alias it map it with one driver call each. The copy is the cache's
    /// memory (the ledger must have room for it); the request keeps its own chunks.
    @discardableResult
    func publish(_ sequence: EngineSequence, written: Int, ledger: inout KVLedger, waiting: [EngineSequence] = []) -> Bool {
        guard sequence.hasKV else { return false }
        let block = tree.tokensPerBlock
        var full = min(written, sequence.tokens.count) / block
        let current = pins[sequence.id]
        guard full > (current?.tokens ?? 0) / block else { return false }
        let holder = nextHolder
        nextHolder += 1
        var tokens = Array(sequence.tokens.prefix(full * block))
        var packed = false
        if packBlocks > 0 {
            let known = tree.lookup(tokens, salt: sequence.salt, limit: tokens.count).tokens / block
            // Only what a waiting request shares is packed (and published now): a slab that maps
            // only whole serves requests that share all of it, so it ends where they diverge.
            let shared = full > known ? sharedByWaiting(sequence, blocks: known, upTo: full, waiting) : 0
            // A shorter stretch is packed too where it ends inside one of the request's fresh
            // slab runs: each waiting request would otherwise copy that part of the run.
            let worthIt = shared - known >= packBlocks || (shared > known && cache.cutsRun(of: sequence.id, atChunk: shared))
            let units = (shared - known) * unitsPerNode
            if worthIt, units <= ledger.freeChunks {
                do {
                    packed = try cache.sharePacked(sequence.id, from: known, chunks: shared, asHolder: holder)
                    if packed {
                        full = shared
                        tokens = Array(tokens.prefix(full * block))
                    }
                } catch {
                    // Not a failure to publish: the plain share below still does.
                    packFailures += 1
                    lastFailure = "packing chunks \(known)..<\(shared) of running request \(sequence.id): \(error)"
                }
            }
        }
        if !packed {
            do {
                // Fewer where a fresh slab run is still being written (it is shared once whole).
                let shared = try cache.share(sequence.id, chunks: full, asHolder: holder)
                guard shared > 0 else { return false }
                if shared < full {
                    full = shared
                    tokens = Array(tokens.prefix(full * block))
                }
            } catch {
                publishFailures += 1
                lastFailure = "publishing \(full) chunks of running request \(sequence.id): \(error)"
                return false
            }
        }
        let insertion = tree.insert(tokens, salt: sequence.salt, holder: holder)
        settle(insertion, holder: holder, ledger: &ledger)
        // Its pins now cover the whole path (the nodes it matched, and those it just added).
        let path = tree.lookup(tokens, salt: sequence.salt, limit: tokens.count)
        tree.acquire(path)
        if let current { tree.release(current) }
        pins[sequence.id] = path
        let units = insertion.kept.count * unitsPerNode
        keptUnits += units
        if packed {
            // The copy is the cache's own memory; the request keeps all of its chunks.
            ledger.cache(units)
            packs += 1
            packedUnits += units
        } else {
            ledger.share(sequence.id, units: units)
            sharedRunningUnits += units
        }
        return !insertion.kept.isEmpty
    }

    /// How far (in whole blocks, at most `end`) waiting requests that read the cache share
    /// `sequence`'s tokens, among those that start with its first block and its block `blocks`
    /// (the first one a publish would add): they would alias what is published. 0 when none
    /// does. At most 64 requests are looked at; the stretch is compared block by block only for
    /// those that pass the two-block look.
    private func sharedByWaiting(_ sequence: EngineSequence, blocks: Int, upTo end: Int, _ waiting: [EngineSequence]) -> Int {
        let block = tree.tokensPerBlock
        let first = 0..<block, next = (blocks * block)..<((blocks + 1) * block)
        guard sequence.tokens.count >= next.upperBound else { return 0 }
        var shared = 0
        for other in waiting.prefix(64) where other !== sequence && other.salt == sequence.salt && other.readsPrefixCache
            && other.tokens.count > next.upperBound && other.tokens[first] == sequence.tokens[first] && other.tokens[next] == sequence.tokens[next] {
            // Its cached prefix stops before its last token (whose logits it computes).
            let limit = min(end, (other.tokens.count - 1) / block)
            var common = blocks + 1
            while common < limit, other.tokens[(common * block)..<((common + 1) * block)] == sequence.tokens[(common * block)..<((common + 1) * block)] {
                common += 1
            }
            shared = max(shared, min(common, limit))
            if shared == end { break }
        }
        return shared
    }

    /// Carries out what an insertion at `holder` decided: the holder is freed if the tree keeps
    /// nothing of it, or gives back the chunks the tree did not need; displaced chunks go back
    /// and superseded nodes leave the ledger.
    private func settle(_ insertion: PrefixTree.Insertion, holder: Int, ledger: inout KVLedger) {
        do {
            if insertion.kept.isEmpty && insertion.relocated.isEmpty {
                try cache.freeHolder(holder)
            } else if !insertion.unneeded.isEmpty {
                try cache.releaseHolderChunks(holder, chunks: insertion.unneeded)
            }
        } catch {
            // The holder was made just now: the store refusing it is a bug, not a state to carry on in.
            preconditionFailure("prefix cache: settling holder \(holder) failed: \(error)")
        }
        giveBack(insertion.displaced, emptyHolders: insertion.emptyHolders)
        ledger.uncache(insertion.removed * unitsPerNode)
        syncStranded(&ledger)
    }

    /// Gives back the chunks at `locations` and frees `emptyHolders` (they keep nothing now).
    private func giveBack(_ locations: [PrefixTree.Location], emptyHolders: [Int]) {
        var byHolder: [Int: [Int]] = [:]
        for location in locations { byHolder[location.holder, default: []].append(location.chunk) }
        let empty = Set(emptyHolders)
        for (holder, chunks) in byHolder where !empty.contains(holder) { try? cache.releaseHolderChunks(holder, chunks: chunks) }
        for holder in empty { try? cache.freeHolder(holder) }
    }

    /// Gives back at least `units` units (whole nodes), least recently used unreferenced leaves
    /// first, counting only units whose memory really goes (one stranded inside a slab run whose
    /// rest stays frees nothing yet). Returns those units (0: nothing more can be freed).
    @discardableResult
    func evict(units: Int, ledger: inout KVLedger) -> Int {
        var freed = 0, given = 0
        while freed < units {
            var out = tree.evict((units - freed + unitsPerNode - 1) / unitsPerNode)
            guard !out.locations.isEmpty else { break }
            if packBlocks > 0 {
                // A packed holder's slab returns to the device only whole: the rest of it goes too
                // (the blocks requests pin stay, and keep the slab: stranded, in the ledger).
                for holder in Set(out.locations.map(\.holder)) where cache.isPackedHolder(holder) {
                    let rest = tree.evictHolder(holder)
                    out.locations += rest.locations
                    out.emptyHolders += rest.emptyHolders
                }
            }
            let stranded = ledger.strandedUnits
            let gave = out.locations.count * unitsPerNode
            giveBack(out.locations, emptyHolders: out.emptyHolders)
            ledger.uncache(gave)
            syncStranded(&ledger)
            given += gave
            // Units stranded (given back inside a slab run whose rest stays) freed nothing yet.
            freed += gave - (ledger.strandedUnits - stranded)
        }
        evictedUnits += given
        return max(0, freed)
    }
}
