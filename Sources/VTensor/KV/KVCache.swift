/// What the KV cache holds, for reports and for the engine's admission decisions.
public struct KVAccounting: Equatable, Sendable, Codable {
    public var requests: Int
    /// Tokens holding data, summed over requests.
    public var tokens: Int
    /// Mappings held by requests (an aliased chunk counts once per request that maps it).
    public var mappedChunks: Int
    /// Distinct physical chunks in use by the whole memory manager.
    public var physicalChunks: Int
    public var chunkSize: Int
    public var bytesPerToken: Int

    /// Bytes that hold token data.
    public var dataBytes: Int { tokens * bytesPerToken }
    /// Physical bytes in use.
    public var physicalBytes: Int { physicalChunks * chunkSize }
}

/// Per-request KV tensors over virtual memory, in one of the `KVLayoutKind` layouts.
///
/// A request's tensors are reserved for `maxTokensPerRequest` tokens up front (address space
/// only) and mapped as it grows; `guardTokens` extra tokens are always kept mapped past the
/// length so kernels with a fixed over-read stay on mapped pages. Forking shares the full
/// chunks of a prefix by aliasing and copies the boundary chunk; a later append into a chunk
/// that is still shared first gets a private copy, so no request ever sees another's writes.
public final class KVCache: @unchecked Sendable {
    public let layout: KVLayout
    public let memory: VirtualMemory
    public let maxTokensPerRequest: Int
    public let guardTokens: Int
    /// Chunks reserved per range.
    public let chunksPerRange: Int

    private struct Entry {
        var tensors: [VirtualTensor]
        var length: Int
        /// A chunk the request appends into in place although a holder shares it: the request
        /// continues that holder's whole sequence, so the holder's tokens there all come before
        /// its writes. Nil after a truncation (writes could then land on the holder's tokens).
        var appendChunk: Int? = nil
        /// Holders whose chunks this request maps at the same places: the one whose ranges it took
        /// over (`addRequest(_:aliasing:tokens:)`), those it shared its chunks as (`share`).
        var twinHolders: [Int] = []
        /// Leading full chunks other requests may map as the same physical chunks or hold copies
        /// of: aliased from a holder or a fork's source, given to a holder (`share`), or packed
        /// into a holder's copy (`sharePacked`). They stay as they are while
        /// the request runs (only a truncation below them changes them).
        var sharedChunks = 0
        /// The content identities of those chunks, once read in full (`sharedChunkIdentities`).
        var chunkIdentities: [UInt64] = []
    }

    private let lock = ConditionLock()
    private var entries: [Int: Entry] = [:]
    /// Tensors of requests that left, kept for a prefix cache: their chunks stay mapped until
    /// the cache gives them back one by one (`releaseHolderChunks`) or all at once.
    private var holders: [Int: [VirtualTensor]] = [:]
    /// Tokens each holder keeps.
    private var holderTokens: [Int: Int] = [:]
    /// Holders whose chunks a live request maps at the same places: holder -> request.
    private var twins: [Int: Int] = [:]
    private var takeoverCount = 0
    private var copiedPrefixCount = 0
    /// Of the takeovers, those of a holder that kept only the prefix's tail (the head aliased).
    private var partialTakeoverCount = 0
    /// Holders that keep a packed copy (`sharePacked`, `packPlaces`).
    private var packedHolders: Set<Int> = []
    /// Per holder and range, slots given back while the holder still keeps other chunks of the
    /// same slab as pending aliases (a slab maps, and goes back to the device, only whole): kept
    /// until the rest goes, and counted in `strandedUnits`.
    private var deferredReleases: [Int: [Set<Int>]] = [:]
    private var deferredUnits = 0
    private var padding: VirtualTensor?

    public init(shape: KVShape, layout kind: KVLayoutKind = .default, memory: VirtualMemory, maxTokensPerRequest: Int, guardTokens: Int = 0) throws {
        guard maxTokensPerRequest > 0 else { throw VTensorError.invalidSize("max tokens per request must be positive, got \(maxTokensPerRequest)") }
        guard guardTokens >= 0 else { throw VTensorError.invalidSize("guard tokens must be >= 0, got \(guardTokens)") }
        layout = try KVLayout(kind, shape: shape, chunkSize: memory.chunkSize)
        self.memory = memory
        self.maxTokensPerRequest = maxTokensPerRequest
        self.guardTokens = guardTokens
        chunksPerRange = layout.chunks(forTokens: maxTokensPerRequest + guardTokens)
        let minimum = layout.rangesPerRequest * layout.chunks(forTokens: 1 + guardTokens)
        let budget = memory.accounting.budgetChunks
        guard minimum <= budget else {
            throw VTensorError.layoutDoesNotFit("one token of one request needs \(minimum) chunks in the \(kind.rawValue) layout; the budget is \(budget)")
        }
    }

    // MARK: Requests

    /// Reserves address space for a new request; maps nothing yet.
    public func addRequest(_ id: Int) throws {
        try lock.withLock {
            guard entries[id] == nil else { throw VTensorError.duplicateRequest(id) }
            let tensors = try makeTensorsLocked()
            if guardTokens > 0 {
                // Even an empty request keeps its guard mapped: kernels may over-read into it.
                do {
                    try memory.grow(tensors.map { ($0, layout.chunks(forTokens: guardTokens)) })
                } catch {
                    for tensor in tensors { try? memory.free(tensor) }
                    throw error
                }
            }
            entries[id] = Entry(tensors: tensors, length: 0)
        }
    }

    public func contains(_ id: Int) -> Bool { lock.withLock { entries[id] != nil } }
    public var requestIDs: [Int] { lock.withLock { Array(entries.keys) } }

    public func length(of id: Int) throws -> Int { try lock.withLock { try entry(id).length } }

    /// Maps what `id` needs to hold `tokens` tokens, now (prefill's synchronous path).
    public func reserve(_ id: Int, tokens: Int) throws {
        try memory.grow(try prepareGrowth(id, tokens: tokens))
    }

    /// Prepares growth to `tokens` tokens and returns the mapping job for the `AsyncMapper`
    /// (decode's path: submitted a step ahead). Copy-on-write of shared chunks that the new
    /// tokens would land in happens here, synchronously.
    public func prepareGrowth(_ id: Int, tokens: Int) throws -> AsyncMapper.Job {
        try prepareGrowth([(id, tokens)])
    }

    /// `prepareGrowth` for a whole batch, with one look at the memory manager for all of it.
    public func prepareGrowth(_ requests: [(id: Int, tokens: Int)]) throws -> AsyncMapper.Job {
        try lock.withLock {
            var job: AsyncMapper.Job = []
            job.reserveCapacity(requests.count * layout.rangesPerRequest)
            var growing: [(entry: Entry, chunks: Int)] = []
            // The chunks the new tokens fill whole, marked below (one look up of each entry).
            let marksWholeWrites = memory.freshSlabChunks > 1
            var whole: [(tensor: VirtualTensor, below: Int)] = []
            if marksWholeWrites { whole.reserveCapacity(job.capacity) }
            for (id, tokens) in requests {
                let entry = try entry(id)
                guard tokens <= maxTokensPerRequest else {
                    throw VTensorError.capacityExceeded("request \(id) asks for \(tokens) tokens; the maximum is \(maxTokensPerRequest)")
                }
                let chunks = layout.chunks(forTokens: tokens + guardTokens)
                if tokens > entry.length { growing.append((entry, chunks)) }
                for tensor in entry.tensors {
                    job.append((tensor, chunks))
                    if marksWholeWrites { whole.append((tensor, tokens / layout.tokensPerChunk)) }
                }
            }
            // Chunks the new tokens land in that another request still maps: copy on write.
            // (Plain loops: this runs for every row of every step, and nested flatMaps allocated
            // an array a row.)
            let shared = memory.inspect { memory in
                var found: [(tensor: VirtualTensor, index: Int)] = []
                for (entry, chunks) in growing {
                    let first = entry.length / layout.tokensPerChunk
                    for tensor in entry.tensors {
                        let end = min(chunks, tensor.chunkCount)
                        guard first < end else { continue }
                        for index in first..<end where index != entry.appendChunk && memory.needsPrivateCopy(tensor, chunk: index) {
                            found.append((tensor, index))
                        }
                    }
                }
                return found
            }
            for (tensor, index) in shared { try memory.makePrivate(tensor, chunk: index) }
            // The chunks the new tokens fill whole can map as runs of one slab.
            if marksWholeWrites { memory.setWholeWrites(whole) }
            return job
        }
    }

    /// Declares that tokens 0..<n now hold data (after a step wrote them).
    public func setLength(_ id: Int, _ n: Int) throws {
        try setLengths([(id, n)])
    }

    /// `setLength` for a whole batch, with one look at the memory manager.
    public func setLengths(_ updates: [(id: Int, length: Int)]) throws {
        try lock.withLock {
            let checked = try updates.map { id, n -> (Int, Entry, Int) in
                guard n >= 0, n <= maxTokensPerRequest else {
                    throw VTensorError.capacityExceeded("length \(n) outside 0...\(maxTokensPerRequest)")
                }
                return (id, try entry(id), n)
            }
            try memory.inspect { memory in
                for (id, entry, n) in checked {
                    let needed = layout.chunks(forTokens: n + guardTokens)
                    for tensor in entry.tensors where needed > 0 && !memory.isMapped(tensor, chunk: needed - 1) {
                        throw VTensorError.capacityExceeded("request \(id) has no mapped memory for token \(n + guardTokens - 1) (length \(n) + \(guardTokens) guard); reserve first")
                    }
                }
            }
            for (id, _, n) in checked { entries[id]!.length = n }
        }
    }

    /// Shortens a request to `n` tokens and unmaps (after in-flight work) what it no longer needs.
    public func truncate(_ id: Int, to n: Int) throws {
        try lock.withLock {
            var entry = try entry(id)
            guard n >= 0, n <= entry.length else {
                throw VTensorError.invalidSize("cannot truncate request \(id) of \(entry.length) tokens to \(n)")
            }
            let keep = layout.chunks(forTokens: n + guardTokens)
            for tensor in entry.tensors {
                try memory.shrink(tensor, toChunks: keep)
                // Chunks from the one token n lands in on may be written again in place.
                memory.forgetContent(tensor, from: n / layout.tokensPerChunk)
            }
            memory.setWholeWrites(entry.tensors.map { ($0, n / layout.tokensPerChunk) })
            entry.length = n
            entry.appendChunk = nil
            entry.sharedChunks = min(entry.sharedChunks, n / layout.tokensPerChunk)
            if entry.chunkIdentities.count > entry.sharedChunks { entry.chunkIdentities.removeAll() }
            entries[id] = entry
        }
    }

    /// Makes request `destination` start with the first `tokens` tokens of `source`: full
    /// chunks are shared (aliased, no copy), the partial boundary chunk is copied. All or
    /// nothing: on failure `destination` does not exist and nothing leaks.
    public func fork(from source: Int, prefix tokens: Int, into destination: Int) throws {
        try lock.withLock {
            let src = try entry(source)
            guard entries[destination] == nil else { throw VTensorError.duplicateRequest(destination) }
            guard tokens >= 0, tokens <= src.length else {
                throw VTensorError.invalidSize("cannot fork \(tokens) tokens of request \(source), which holds \(src.length)")
            }
            let tensors = try makeTensorsLocked()
            do {
                let full = tokens / layout.tokensPerChunk
                let partial = tokens % layout.tokensPerChunk
                // Where the driver maps an allocation only whole (CUDA), a source chunk in a slab
                // (a fresh run of its prompt) maps only with the rest of its slab: slabs the
                // prefix covers whole are aliased as one run by the grow below; a slab it covers
                // in part is copied.
                let copied = partialSlabSlotsLocked(Array(repeating: src.tensors, count: full), count: full)
                try memory.aliasOnGrow(zip(zip(tensors, src.tensors), copied).flatMap { pair, copy in
                    (0..<full).filter { !copy.contains($0) }.map { (tensor: pair.0, index: $0, source: pair.1, sourceIndex: $0) }
                })
                for ((mine, theirs), copy) in zip(zip(tensors, src.tensors), copied) {
                    for index in copy.sorted() {
                        try memory.map(mine, chunk: index)
                        try memory.copyChunk(from: theirs, chunk: index, to: mine, chunk: index, bytes: layout.chunkSize)
                        memory.inheritContent(mine, chunk: index, from: theirs, chunk: index)
                        copiedPrefixCount += 1
                    }
                    if partial > 0 {
                        try memory.map(mine, chunk: full)
                        try memory.copyChunk(from: theirs, chunk: full, to: mine, chunk: full, bytes: layout.boundaryCopyBytes(tokens: partial))
                    }
                }
                let chunks = layout.chunks(forTokens: tokens + guardTokens)
                try memory.grow(tensors.map { ($0, chunks) })
            } catch {
                for tensor in tensors { try? memory.free(tensor) }
                throw error
            }
            entries[destination] = Entry(tensors: tensors, length: tokens, sharedChunks: tokens / layout.tokensPerChunk)
            // The source's full chunks are mapped twice now.
            entries[source]!.sharedChunks = max(src.sharedChunks, tokens / layout.tokensPerChunk)
        }
    }

    // MARK: Prefix-cache holders

    /// Makes request `id`'s KV a holder: the request ends, but the chunks covering its first
    /// `tokens` tokens stay mapped under holder `holder` (chunks past them are given back now),
    /// so a prefix cache can alias them into later requests (`addRequest(_:aliasing:tokens:)`).
    public func detach(_ id: Int, tokens: Int, asHolder holder: Int) throws {
        try lock.withLock {
            let entry = try entry(id)
            guard holders[holder] == nil else { throw VTensorError.duplicateRequest(holder) }
            guard tokens >= 0, tokens <= entry.length else {
                throw VTensorError.invalidSize("cannot keep \(tokens) tokens of request \(id), which holds \(entry.length)")
            }
            let keep = layout.chunks(forTokens: tokens)
            // A holder's kept chunks are mapped (readable, and the copy source of later boundary
            // chunks): aliases still pending (a request that left before its first step) map now.
            try memory.grow(entry.tensors.map { ($0, keep) })
            // Sealed first: growth the mapper still has queued for the request must not land here.
            for tensor in entry.tensors {
                try memory.seal(tensor)
                try memory.shrink(tensor, toChunks: keep)
            }
            entries[id] = nil
            forgetAdoptionLocked(entry, id)
            holders[holder] = entry.tensors
            holderTokens[holder] = tokens
        }
    }

    /// Makes the first `chunks` chunks of running request `id` (tokens it has computed) a holder
    /// too, while it runs: the holder keeps them as pending aliases (no driver call), so a prefix
    /// cache can hand them to other requests now instead of when `id` leaves. Copies of a
    /// boundary inside them are made from `id`'s own mapping. Returns the chunks shared: fewer
    /// where a fresh slab run crosses chunk `chunks` (it is shared once written whole), 0 (and no
    /// holder made) when that leaves none.
    @discardableResult
    public func share(_ id: Int, chunks: Int, asHolder holder: Int) throws -> Int {
        try lock.withLock {
            let entry = try entry(id)
            guard holders[holder] == nil else { throw VTensorError.duplicateRequest(holder) }
            guard chunks > 0, chunks * layout.tokensPerChunk <= entry.length else {
                throw VTensorError.invalidSize("cannot share \(chunks) chunks of request \(id), which holds \(entry.length) tokens")
            }
            // A fresh run the chunks end inside (the request's growth reached past what it has
            // written) is not shared yet: a holder never keeps part of a slab, and the run's
            // other chunks, still to be written, must stay the request's alone.
            let shared = memory.inspect { memory in
                entry.tensors.map { tensor in memory.run(of: tensor, containing: chunks - 1).map { $0.upperBound > chunks ? $0.lowerBound : chunks } ?? chunks }.min()!
            }
            guard shared > 0 else { return 0 }
            holders[holder] = try pendingCopyLocked(of: entry.tensors, chunks: 0..<shared)
            holderTokens[holder] = shared * layout.tokensPerChunk
            twins[holder] = id
            entries[id]!.twinHolders.append(holder)
            entries[id]!.sharedChunks = max(entries[id]!.sharedChunks, shared)
            return shared
        }
    }

    /// Like `share`, but the holder keeps a copy: chunks `first..<chunks` of running request `id`
    /// are copied into one slab per range (`VirtualMemory.packSlab`), and the holder keeps the
    /// slab's chunks as pending aliases. A request that aliases them later maps each range's
    /// run of the slab with one driver call and one set access, where the request's own chunks
    /// would take one of each per chunk (~26 us apiece on an H200). The request keeps its own
    /// chunks and is not the holder's twin; the copy costs `chunks - first` chunks per range
    /// while it runs. Returns false, with nothing changed, when no slab can be made now (a
    /// backend without slabs, or no room under the budget).
    public func sharePacked(_ id: Int, from first: Int, chunks: Int, asHolder holder: Int) throws -> Bool {
        try lock.withLock {
            let entry = try entry(id)
            guard holders[holder] == nil else { throw VTensorError.duplicateRequest(holder) }
            guard first >= 0, first < chunks, chunks * layout.tokensPerChunk <= entry.length else {
                throw VTensorError.invalidSize("cannot pack chunks \(first)..<\(chunks) of request \(id), which holds \(entry.length) tokens")
            }
            guard memory.backend.makesSlabs else { return false }
            let packed = try makePackedHolderLocked(holder, at: first, tokens: chunks * layout.tokensPerChunk) { range in
                (first..<chunks).map { (entry.tensors[range], $0) }
            }
            // The requests that alias the copy read this request's bytes (content identities).
            if packed { entries[id]!.sharedChunks = max(entry.sharedChunks, chunks) }
            return packed
        }
    }

    /// A new holder `holder` keeping a packed copy of cached chunks: chunk `places[i].chunk` of
    /// holder `places[i].holder` (adjacent chunks `first...` of a prefix, wherever they live), all
    /// copied into one slab per range that the new holder keeps as pending aliases at the same
    /// indices. Each chunk is copied from a range that maps it (its holder's, or the twin
    /// request's). Returns false, with nothing changed, when a chunk has no mapped copy source or
    /// no slab can be made now.
    public func packPlaces(_ places: [(holder: Int, chunk: Int)], asHolder holder: Int) throws -> Bool {
        try lock.withLock {
            guard holders[holder] == nil else { throw VTensorError.duplicateRequest(holder) }
            guard let first = places.first?.chunk, places.enumerated().allSatisfy({ $1.chunk == first + $0 }) else {
                throw VTensorError.invalidSize("packed places must be adjacent chunks of a prefix")
            }
            guard memory.backend.makesSlabs else { return false }
            var sources: [[VirtualTensor]] = []
            for place in places {
                guard let mapped = mappedSourceLocked(holder: place.holder, chunk: place.chunk) else { return false }
                sources.append(mapped)
            }
            return try makePackedHolderLocked(holder, at: first, tokens: (first + places.count) * layout.tokensPerChunk) { range in
                zip(sources, places).map { ($0[range], $1.chunk) }
            }
        }
    }

    /// New sealed ranges for holder `holder`, each keeping at slots `first...` a slab packed from
    /// `sources(range)` (that range's source chunks, in order). False, with nothing left behind,
    /// when a slab cannot be made now.
    private func makePackedHolderLocked(_ holder: Int, at first: Int, tokens: Int,
                                        sources: (Int) -> [(tensor: VirtualTensor, index: Int)]) throws -> Bool {
        let made = try makeTensorsLocked()
        do {
            for (range, mine) in made.enumerated() {
                guard try memory.packSlab(from: sources(range), into: mine, at: first) else {
                    for tensor in made { try? memory.free(tensor) }
                    return false
                }
            }
            for tensor in made { try memory.seal(tensor) }
        } catch {
            for tensor in made { try? memory.free(tensor) }
            throw error
        }
        holders[holder] = made
        holderTokens[holder] = tokens
        packedHolders.insert(holder)
        return true
    }

    /// For each place, whether the chunk its holder keeps there belongs to a slab (a packed copy).
    public func arePacked(_ places: [(holder: Int, chunk: Int)]) -> [Bool] {
        lock.withLock {
            memory.inspect { memory in
                places.map { place in
                    guard let tensors = holders[place.holder] else { return false }
                    return tensors.allSatisfy { place.chunk < $0.chunkCount && memory.isSlabChunk($0, chunk: place.chunk) }
                }
            }
        }
    }

    public func isPackedHolder(_ holder: Int) -> Bool { lock.withLock { packedHolders.contains(holder) } }

    /// Units (chunks over all ranges) of `addRequest(id, aliasing: prefix, tokens:)`'s prefix
    /// that the request would get as copies: blocks of a slab, which maps only whole here, that
    /// the prefix holds in part (`partialSlabSlotsLocked`). 0 when no slab is alive.
    public func copiedUnits(aliasing prefix: [(holder: Int, chunk: Int)], tokens: Int) -> Int {
        guard memory.holdsSlabs else { return 0 }
        return lock.withLock {
            var sources: [[VirtualTensor]] = []
            for place in prefix {
                guard let tensors = holders[place.holder] else { return 0 }
                sources.append(tensors)
            }
            let count = adoptableLocked(prefix, tokens: tokens)?.from ?? min(prefix.count, tokens / layout.tokensPerChunk)
            return partialSlabSlotsLocked(sources, count: count).reduce(0) { $0 + $1.count }
        }
    }

    public var defaultPackBlocks: Int { memory.backend.makesSlabs ? memory.backend.defaultPackChunks : 0 }

    /// Chunks given back inside a slab run that stay mapped until the rest of the run goes
    /// (`VirtualMemory.strandedChunks`): memory in use that no request or holder counts.
    public var strandedUnits: Int { memory.strandedChunks + lock.withLock { deferredUnits } }

    public func cutsRun(of id: Int, atChunk chunk: Int) -> Bool {
        lock.withLock {
            guard let entry = entries[id], chunk > 0 else { return false }
            return memory.inspect { memory in
                entry.tensors.contains { tensor in memory.run(of: tensor, containing: chunk - 1).map { $0.upperBound > chunk } ?? false }
            }
        }
    }

    /// Whether a slab's chunks go back to the device only all together: slabs map only whole.
    public var releasesPackedWhole: Bool { memory.backend.makesSlabs && !memory.backend.mapsSlabParts }

    /// Whether the memory makes slabs: `sharePacked` can pack.
    public var packsPrefixes: Bool { memory.backend.makesSlabs }

    /// Gives back chunks `chunks` of holder `holder` (every range), once in-flight work is done.
    /// Where slabs map only whole, a pending alias of a slab's chunk waits (deferred, counted in
    /// `strandedUnits`) while the holder keeps other chunks of that slab: the slab's memory is in
    /// use until its last chunk goes, and then the holder gives all of them back at once.
    public func releaseHolderChunks(_ holder: Int, chunks: [Int]) throws {
        try lock.withLock {
            guard let tensors = holders[holder] else { throw VTensorError.unknownRequest(holder) }
            guard memory.holdsSlabs && releasesPackedWhole else {
                for tensor in tensors { try memory.release(tensor, chunks: chunks) }
                return
            }
            var deferred = deferredReleases[holder] ?? tensors.map { _ in [] }
            let before = deferred.reduce(0) { $0 + $1.count }
            let now = memory.inspect { memory in
                tensors.enumerated().map { r, tensor in wholeSlabReleases(memory, tensor, chunks, deferred: &deferred[r]) }
            }
            let after = deferred.reduce(0) { $0 + $1.count }
            deferredUnits += after - before
            deferredReleases[holder] = after > 0 ? deferred : nil
            for (tensor, release) in zip(tensors, now) { try memory.release(tensor, chunks: release) }
        }
    }

    /// Of `chunks` and the slots deferred before (`deferred`, updated), those `tensor` can give
    /// back now: all but pending aliases of a slab whose other chunks the tensor keeps.
    private func wholeSlabReleases(_ memory: VirtualMemory.Inspector, _ tensor: VirtualTensor, _ chunks: [Int], deferred: inout Set<Int>) -> [Int] {
        let candidates = deferred.union(chunks.filter { $0 >= 0 && $0 < tensor.chunkCount })
        var now: [Int] = [], waiting = Set<Int>()
        // Whether the tensor keeps another slot of a slab placed at a first slot: the same for
        // every candidate of that placement, so asked once each (a packed prefix's holder gives
        // back a whole slab of 128 chunks at once).
        var keptByPlacement: [SIMD2<Int>: Bool] = [:]
        for index in candidates.sorted() {
            guard !memory.isMapped(tensor, chunk: index), let place = memory.wholeSlabPlace(tensor, chunk: index) else {
                now.append(index)
                continue
            }
            let first = index - place.index
            let key = SIMD2(place.slab, first)
            let kept = keptByPlacement[key] ?? {
                let answer = (max(0, first)..<min(tensor.chunkCount, first + place.count)).contains { slot in
                    !candidates.contains(slot) && memory.wholeSlabPlace(tensor, chunk: slot).map { $0.slab == place.slab } == true
                }
                keptByPlacement[key] = answer
                return answer
            }()
            if kept { waiting.insert(index) } else { now.append(index) }
        }
        deferred = waiting
        return now
    }

    /// Gives back everything holder `holder` still keeps and forgets it.
    public func freeHolder(_ holder: Int) throws {
        try lock.withLock {
            guard let tensors = holders.removeValue(forKey: holder) else { throw VTensorError.unknownRequest(holder) }
            holderTokens[holder] = nil
            twins[holder] = nil
            packedHolders.remove(holder)
            if let deferred = deferredReleases.removeValue(forKey: holder) { deferredUnits -= deferred.reduce(0) { $0 + $1.count } }
            for tensor in tensors { try memory.free(tensor) }
        }
    }

    public var holderIDs: [Int] { lock.withLock { Array(holders.keys) } }

    /// Requests that took over a holder's ranges (`addRequest(_:aliasing:tokens:)`), in all, and
    /// of those, the ones whose holder kept only the tail (the head aliased).
    public var takeovers: Int { lock.withLock { takeoverCount } }
    /// Chunks copied into requests because they held a slab that maps only whole in part.
    public var copiedPrefixChunks: Int { lock.withLock { copiedPrefixCount } }
    public var partialTakeovers: Int { lock.withLock { partialTakeoverCount } }

    /// Where a holder's (layer, component) K/V lives, for checks of what a prefix cache keeps.
    public func holderView(_ holder: Int, layer: Int, component: KVComponent) throws -> KVView {
        try lock.withLock {
            guard let tensors = holders[holder] else { throw VTensorError.unknownRequest(holder) }
            // A holder whose range a request took over keeps its chunks as pending aliases: map them to read.
            for tensor in tensors { try memory.mapPendingAliases(tensor) }
            let place = layout.placement(layer: layer, component: component)
            return KVView(base: tensors[place.range].base + UInt64(place.offset), tokenStride: layout.tokenStride,
                          headStride: layout.headStride, blockStride: layout.chunkSize, tokensPerBlock: layout.tokensPerChunk,
                          length: 0, readableTokens: chunksPerRange * layout.tokensPerChunk)
        }
    }

    /// A new request whose first `tokens` tokens are already in holders' chunks: chunk i of
    /// every range aliases `prefix[i]` (a holder and its chunk i: a prefix sits at the same
    /// positions in every sequence), with no copy. All or nothing: on failure the request does
    /// not exist and nothing leaks.
    ///
    /// - When the request continues a holder's whole sequence (every chunk from that holder,
    ///   `tokens` all it keeps, all mapped), it takes over the holder's range with its mappings
    ///   (no driver call at all: the next round of a conversation), appending into the last chunk
    ///   in place; the holder keeps its chunks as pending aliases in a range of its own. The
    ///   same when the holder keeps only the prefix's tail and nothing before it (a conversation
    ///   whose system prompt other conversations share lives at another holder): the head is
    ///   aliased into the range taken over, pending, as any alias.
    /// - Otherwise the aliases are recorded, not mapped: the request's first growth maps them (on
    ///   the mapper thread, for the engine), so admission costs the engine thread no driver call
    ///   per chunk. When `tokens` ends inside the last chunk, that chunk is the request's own from
    ///   the start: a fresh chunk with the holder's first tokens copied in, in stream order (no
    ///   wait for the device), since the request's first write lands there.
    public func addRequest(_ id: Int, aliasing prefix: [(holder: Int, chunk: Int)], tokens: Int) throws {
        try lock.withLock {
            guard entries[id] == nil else { throw VTensorError.duplicateRequest(id) }
            guard tokens >= 0, layout.chunks(forTokens: tokens) == prefix.count, tokens <= maxTokensPerRequest else {
                throw VTensorError.invalidSize("\(tokens) tokens take \(layout.chunks(forTokens: tokens)) chunks; \(prefix.count) given")
            }
            let sources = try prefix.enumerated().map { i, place -> [VirtualTensor] in
                guard place.chunk == i else { throw VTensorError.invalidSize("chunk \(i) of a prefix must come from chunk \(i), not \(place.chunk)") }
                guard let tensors = holders[place.holder] else { throw VTensorError.unknownRequest(place.holder) }
                return tensors
            }
            if let (holder, from) = adoptableLocked(prefix, tokens: tokens) {
                try adoptLocked(holder, from: from, by: id, chunks: prefix.count, tokens: tokens, head: sources, prefix: prefix)
                return
            }
            let tensors = try makeTensorsLocked()
            do {
                let partial = tokens % layout.tokensPerChunk, last = prefix.count - 1
                // The boundary chunk is copied from a range that maps it (always, but for a holder
                // whose own aliases were still pending: that one stays an alias, copied on write).
                var copyFrom = partial > 0 ? mappedSourceLocked(holder: prefix[last].holder, chunk: last) : nil
                if partial > 0, copyFrom == nil, let theirs = holders[prefix[last].holder],
                   memory.inspect({ m in theirs.allSatisfy { m.isSlabChunk($0, chunk: last) } }) {
                    // A packed holder keeps pending aliases: its boundary chunk is mapped in the
                    // holder, alone, once, to be the copy's source (aliased and copied on write,
                    // it would cut the run it belongs to in every request that maps it).
                    for tensor in theirs { try memory.mapPendingAlias(tensor, chunk: last) }
                    copyFrom = theirs
                }
                let aliased = copyFrom == nil ? prefix.count : last
                let copied = partialSlabSlotsLocked(sources, count: aliased)
                try memory.aliasOnGrow((0..<aliased).flatMap { i in
                    zip(tensors, sources[i]).enumerated().compactMap { r, pair in copied[r].contains(i) ? nil : (pair.0, i, pair.1, i) }
                })
                try copyPrefixSlotsLocked(copied, into: tensors, prefix: prefix)
                if let copyFrom {
                    for (mine, theirs) in zip(tensors, copyFrom) {
                        try memory.map(mine, chunk: last)
                        try memory.copyChunk(from: theirs, chunk: last, to: mine, chunk: last, bytes: layout.boundaryCopyBytes(tokens: partial))
                    }
                }
            } catch {
                for tensor in tensors { try? memory.free(tensor) }
                throw error
            }
            entries[id] = Entry(tensors: tensors, length: tokens, sharedChunks: tokens / layout.tokensPerChunk)
        }
    }

    /// For each place, whether holder `holder` holds the same physical chunk there as the
    /// place's holder, in every range (a request that aliased cached chunks and left holds what
    /// the cache's holders hold). One look at the memory manager for all of them. A packed
    /// holder's chunk never counts: it stays with the packed holder, which maps the slab itself,
    /// and the request that mapped it as part of a run gives the run back whole. (A fresh slab's
    /// chunk does: the request's range maps the run, the holder it came from keeps an alias.)
    public func holdSameChunks(_ holder: Int, as places: [(holder: Int, chunk: Int)]) -> [Bool] {
        lock.withLock {
            guard let mine = holders[holder] else { return places.map { _ in false } }
            return memory.inspect { memory in
                places.map { place in
                    guard let theirs = holders[place.holder], !packedHolders.contains(place.holder) else { return false }
                    let index = place.chunk
                    return zip(mine, theirs).allSatisfy { x, y in
                        guard index < x.chunkCount, index < y.chunkCount, let chunk = memory.heldChunk(x, chunk: index) else { return false }
                        return memory.heldChunk(y, chunk: index) == chunk
                    }
                }
            }
        }
    }

    public func heldBlocks(_ places: [(holder: Int, chunk: Int)]) -> [[UInt64]?] {
        lock.withLock {
            memory.inspect { memory in
                places.map { place -> [UInt64]? in
                    guard let tensors = holders[place.holder] else { return nil }
                    let chunks = tensors.map { place.chunk < $0.chunkCount ? memory.heldChunk($0, chunk: place.chunk)?.raw : nil }
                    return chunks.contains(nil) ? nil : chunks.map { $0! }
                }
            }
        }
    }

    /// The holder a request with this prefix can take over, if there is one, and the first chunk
    /// it keeps: the holder of the prefix's last chunk, when it keeps exactly the prefix's tail
    /// from that chunk on (all `tokens` its own, those chunks mapped, nothing before or after).
    private func adoptableLocked(_ prefix: [(holder: Int, chunk: Int)], tokens: Int) -> (holder: Int, from: Int)? {
        guard let holder = prefix.last?.holder, holderTokens[holder] == tokens, twins[holder] == nil, deferredReleases[holder] == nil,
              let tensors = holders[holder] else { return nil }
        var from = prefix.count
        while from > 0 && prefix[from - 1].holder == holder { from -= 1 }
        let whole = memory.inspect { memory in
            tensors.allSatisfy { tensor in
                // A slot stranded in a slab run (given back, still mapped): its run is not the
                // holder's whole, and a range holding it is not one to take over.
                !(memory.anyStranded && (0..<tensor.chunkCount).contains { memory.isStranded(tensor, chunk: $0) })
                    && (0..<from).allSatisfy { memory.heldChunk(tensor, chunk: $0) == nil }
                    && (from..<prefix.count).allSatisfy { memory.isMapped(tensor, chunk: $0) }
                    && (prefix.count..<tensor.chunkCount).allSatisfy { memory.heldChunk(tensor, chunk: $0) == nil }
            }
        }
        return whole ? (holder, from) : nil
    }

    /// Request `id` takes over holder `holder`'s ranges (their mappings stay, no driver call);
    /// the holder keeps its chunks `from..<chunks` as pending aliases in new ranges of its own.
    /// Chunks `0..<from` (the head, which the holder does not keep) are aliased from `head`'s
    /// ranges first, pending: all or nothing, the holder unchanged if that fails.
    private func adoptLocked(_ holder: Int, from: Int, by id: Int, chunks: Int, tokens: Int, head: [[VirtualTensor]],
                             prefix: [(holder: Int, chunk: Int)]) throws {
        let old = holders[holder]!
        let kept = try pendingCopyLocked(of: old, chunks: from..<chunks)
        if from > 0 {
            do {
                let copied = partialSlabSlotsLocked(head, count: from)
                try memory.aliasOnGrow((0..<from).flatMap { i in
                    zip(old, head[i]).enumerated().compactMap { r, pair in copied[r].contains(i) ? nil : (pair.0, i, pair.1, i) }
                })
                try copyPrefixSlotsLocked(copied, into: old, prefix: Array(prefix.prefix(from)))
            } catch {
                // The holder gets its head slots back empty, as it had them.
                for tensor in old { try? memory.release(tensor, chunks: Array(0..<from)) }
                for tensor in kept { try? memory.free(tensor) }
                throw error
            }
        }
        // New tensor objects for the ranges: growth still queued for the request that left them
        // finds its tensors freed and passes by.
        let taken = old.map { tensor -> VirtualTensor in
            do { return try memory.handOver(tensor) } catch { preconditionFailure("handing over \(tensor) of holder \(holder) failed: \(error)") }
        }
        holders[holder] = kept
        twins[holder] = id
        takeoverCount += 1
        if from > 0 { partialTakeoverCount += 1 }
        let partial = tokens % layout.tokensPerChunk > 0
        entries[id] = Entry(tensors: taken, length: tokens, appendChunk: partial ? chunks - 1 : nil, twinHolders: [holder],
                            sharedChunks: tokens / layout.tokensPerChunk)
    }

    /// New sealed ranges holding chunks `chunks` of `tensors` as pending aliases (a holder's
    /// references, no driver call). All or nothing.
    private func pendingCopyLocked(of tensors: [VirtualTensor], chunks: Range<Int>) throws -> [VirtualTensor] {
        let made = try makeTensorsLocked()
        do {
            try memory.aliasOnGrow(zip(made, tensors).flatMap { mine, theirs in chunks.map { (mine, $0, theirs, $0) } })
            for tensor in made { try memory.seal(tensor) }
        } catch {
            for tensor in made { try? memory.free(tensor) }
            throw error
        }
        return made
    }

    /// Where slabs map only whole (CUDA): for each range, the prefix slots among `0..<count`
    /// whose chunk (slot i of `sources[i]`'s range) belongs to a slab that those slots do not
    /// hold whole, each chunk at its own place. A request cannot map such a chunk, so it gets a
    /// copy (`copyPrefixSlotsLocked`): a request that shares only part of a packed prefix, or
    /// whose prefix ends inside one. Empty sets where slabs map in part, hold no slab, or
    /// `count` is 0 (one set a range, always).
    private func partialSlabSlotsLocked(_ sources: [[VirtualTensor]], count: Int) -> [Set<Int>] {
        memory.inspect { memory in
            (0..<layout.rangesPerRequest).map { r in
                var partial = Set<Int>()
                var i = 0
                while i < count {
                    guard let place = memory.wholeSlabPlace(sources[i][r], chunk: i) else {
                        i += 1
                        continue
                    }
                    let first = i - place.index
                    let run = first..<(first + place.count)
                    let whole = first >= 0 && run.upperBound <= count && run.allSatisfy { j in
                        memory.wholeSlabPlace(sources[j][r], chunk: j).map { $0.slab == place.slab && $0.index == j - first } ?? false
                    }
                    if whole {
                        i = run.upperBound
                    } else {
                        partial.insert(i)
                        i += 1
                    }
                }
                return partial
            }
        }
    }

    /// Gives `tensors` (a request's ranges) private copies of the prefix chunks at `slots` (per
    /// range), read from a range that maps them: the holder's or its twin request's, else the
    /// holder's own, its slab mapped there whole first.
    private func copyPrefixSlotsLocked(_ slots: [Set<Int>], into tensors: [VirtualTensor], prefix: [(holder: Int, chunk: Int)]) throws {
        for (r, indices) in slots.enumerated() where !indices.isEmpty {
            for i in indices.sorted() {
                var source = mappedSourceLocked(holder: prefix[i].holder, chunk: i)
                if source == nil, let theirs = holders[prefix[i].holder] {
                    try memory.mapPendingAlias(theirs[r], chunk: i)
                    source = theirs
                }
                guard let source else { throw VTensorError.unknownRequest(prefix[i].holder) }
                try memory.map(tensors[r], chunk: i)
                try memory.copyChunk(from: source[r], chunk: i, to: tensors[r], chunk: i, bytes: layout.chunkSize)
                memory.inheritContent(tensors[r], chunk: i, from: source[r], chunk: i)
                copiedPrefixCount += 1
            }
        }
    }

    /// Ranges that map chunk `index` of holder `holder`: its own, or those of its twin request
    /// (the same physical chunk at the same place).
    private func mappedSourceLocked(holder: Int, chunk index: Int) -> [VirtualTensor]? {
        guard let tensors = holders[holder] else { return nil }
        return memory.inspect { memory in
            if tensors.allSatisfy({ memory.isMapped($0, chunk: index) }) { return tensors }
            guard let adopter = twins[holder], let entry = entries[adopter] else { return nil }
            let same = zip(tensors, entry.tensors).allSatisfy { theirs, mine in
                memory.isMapped(mine, chunk: index) && memory.heldChunk(mine, chunk: index) == memory.heldChunk(theirs, chunk: index)
            }
            return same ? entry.tensors : nil
        }
    }

    private func forgetAdoptionLocked(_ entry: Entry, _ id: Int) {
        for holder in entry.twinHolders where twins[holder] == id { twins[holder] = nil }
    }

    /// Frees a request's KV; its memory returns to the pool once in-flight work is done.
    public func free(_ id: Int) throws {
        try lock.withLock {
            let entry = try entry(id)
            entries[id] = nil
            forgetAdoptionLocked(entry, id)
            for tensor in entry.tensors { try memory.free(tensor) }
        }
    }

    // MARK: Views

    /// For each request, the content identities of its leading chunks that other requests may
    /// map too or hold copies of (see `Entry.sharedChunks`, `VirtualMemory.Inspector.contentIdentity`),
    /// one number a chunk (all of the request's ranges
    /// together): two requests with the same number at chunk j read the same bytes for its
    /// tokens. Empty for a request that shares nothing. Read from the memory manager once per
    /// request, then kept (the chunks do not change while it runs).
    public func sharedChunkIdentities(_ ids: [Int]) throws -> [[UInt64]] {
        try lock.withLock {
            var result = [[UInt64]](repeating: [], count: ids.count)
            var missing: [Int] = []
            for (i, id) in ids.enumerated() {
                let entry = try entry(id)
                let count = min(entry.sharedChunks, entry.length / layout.tokensPerChunk)
                if entry.chunkIdentities.count == count { result[i] = entry.chunkIdentities } else { missing.append(i) }
            }
            guard !missing.isEmpty else { return result }
            memory.inspect { memory in
                for i in missing {
                    let entry = entries[ids[i]]!
                    let count = min(entry.sharedChunks, entry.length / layout.tokensPerChunk)
                    var identities: [UInt64] = []
                    identities.reserveCapacity(count)
                    chunks: for j in 0..<count {
                        var identity: UInt64 = 0
                        for (r, tensor) in entry.tensors.enumerated() {
                            guard j < tensor.chunkCount, let content = memory.contentIdentity(tensor, chunk: j) else { break chunks }
                            identity = r == 0 ? content : Self.mix(identity, content)
                        }
                        identities.append(identity)
                    }
                    result[i] = identities
                    // Kept once complete: a chunk not held yet (an alias still to map) is read again.
                    if identities.count == count && count == entry.sharedChunks { entries[ids[i]]!.chunkIdentities = identities }
                }
            }
            return result
        }
    }

    /// One number for a chunk held in several ranges (a 64-bit mix; distinct chunks collide
    /// with probability about 2^-64).
    private static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var x = a &* 0x9E37_79B9_7F4A_7C15 ^ b
        x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
        x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
        return x ^ (x >> 31)
    }

    /// Where (request, layer, component) lives: the descriptor kernels read.
    public func view(_ id: Int, layer: Int, component: KVComponent) throws -> KVView {
        try lock.withLock {
            let entry = try entry(id)
            let place = layout.placement(layer: layer, component: component)
            let readable = (layout.chunks(forTokens: entry.length + guardTokens)) * layout.tokensPerChunk
            return KVView(
                base: entry.tensors[place.range].base + UInt64(place.offset),
                tokenStride: layout.tokenStride, headStride: layout.headStride,
                blockStride: layout.chunkSize, tokensPerBlock: layout.tokensPerChunk,
                length: entry.length, readableTokens: min(readable, chunksPerRange * layout.tokensPerChunk))
        }
    }

    /// Every layer's K and V views of each request, under one hold of the lock: a step plans
    /// [request][layer] views at once instead of asking 2 x layers x requests times.
    public func layerViews(_ ids: [Int]) throws -> [[(key: KVView, value: KVView)]] {
        try lock.withLock {
            try ids.map { id in
                let entry = try entry(id)
                let readable = min(layout.chunks(forTokens: entry.length + guardTokens) * layout.tokensPerChunk,
                                   chunksPerRange * layout.tokensPerChunk)
                func view(_ layer: Int, _ component: KVComponent) -> KVView {
                    let place = layout.placement(layer: layer, component: component)
                    return KVView(base: entry.tensors[place.range].base + UInt64(place.offset), tokenStride: layout.tokenStride,
                                  headStride: layout.headStride, blockStride: layout.chunkSize, tokensPerBlock: layout.tokensPerChunk,
                                  length: entry.length, readableTokens: readable)
                }
                return (0..<layout.shape.layers).map { (view($0, .key), view($0, .value)) }
            }
        }
    }

    /// Each request's K and V views of one layer, under one hold of the lock.
    public func views(_ ids: [Int], layer: Int) throws -> [(key: KVView, value: KVView)] {
        try lock.withLock {
            let keyPlace = layout.placement(layer: layer, component: .key), valuePlace = layout.placement(layer: layer, component: .value)
            return try ids.map { id in
                let entry = try entry(id)
                let readable = min(layout.chunks(forTokens: entry.length + guardTokens) * layout.tokensPerChunk,
                                   chunksPerRange * layout.tokensPerChunk)
                func view(_ place: (range: Int, offset: Int)) -> KVView {
                    KVView(base: entry.tensors[place.range].base + UInt64(place.offset), tokenStride: layout.tokenStride,
                           headStride: layout.headStride, blockStride: layout.chunkSize, tokensPerBlock: layout.tokensPerChunk,
                           length: entry.length, readableTokens: readable)
                }
                return (view(keyPlace), view(valuePlace))
            }
        }
    }

    /// Per layer, the byte offsets of its K and V views from layer 0's, the same for every
    /// request; nil when layers live in ranges of their own (`perLayer`), whose bases are unrelated.
    public var layerOffsets: [(key: UInt64, value: UInt64)]? {
        guard layout.rangesPerRequest == 1 else { return nil }
        let key0 = layout.placement(layer: 0, component: .key).offset, value0 = layout.placement(layer: 0, component: .value).offset
        return (0..<layout.shape.layers).map { layer in
            (UInt64(layout.placement(layer: layer, component: .key).offset - key0),
             UInt64(layout.placement(layer: layer, component: .value).offset - value0))
        }
    }

    /// A view for padded batch slots: always mapped (one chunk), length 0, contents unspecified.
    public func paddingView(layer: Int, component: KVComponent) throws -> KVView {
        try lock.withLock {
            if padding == nil {
                let tensor = try memory.makeTensor(bytes: layout.chunkSize)
                try memory.map(tensor, chunk: 0)
                padding = tensor
            }
            let place = layout.placement(layer: layer, component: component)
            return KVView(base: padding!.base + UInt64(place.offset), tokenStride: layout.tokenStride,
                          headStride: layout.headStride, blockStride: layout.chunkSize,
                          tokensPerBlock: layout.tokensPerChunk, length: 0,
                          readableTokens: layout.tokensPerChunk)
        }
    }

    /// The request's virtual tensors (one per range), for tests and benchmarks.
    public func tensors(of id: Int) throws -> [VirtualTensor] { try lock.withLock { try entry(id).tensors } }

    public var accounting: KVAccounting {
        lock.withLock {
            let tokens = entries.values.reduce(0) { $0 + $1.length }
            let mapped = memory.inspect { memory in
                entries.values.reduce(0) { sum, entry in sum + entry.tensors.reduce(0) { $0 + memory.mappedChunkCount($1) } }
            }
            return KVAccounting(requests: entries.count, tokens: tokens, mappedChunks: mapped,
                                physicalChunks: memory.accounting.inUse, chunkSize: layout.chunkSize,
                                bytesPerToken: layout.bytesPerToken)
        }
    }

    // MARK: Internals

    private func entry(_ id: Int) throws -> Entry {
        guard let entry = entries[id] else { throw VTensorError.unknownRequest(id) }
        return entry
    }

    private func makeTensorsLocked() throws -> [VirtualTensor] {
        var made: [VirtualTensor] = []
        do {
            for _ in 0..<layout.rangesPerRequest {
                made.append(try memory.makeTensor(bytes: chunksPerRange * layout.chunkSize))
            }
        } catch {
            for tensor in made { try? memory.free(tensor) }
            throw error
        }
        return made
    }
}
