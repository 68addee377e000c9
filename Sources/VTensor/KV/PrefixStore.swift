/// What a prefix cache needs from where K/V lives: requests that leave (or run) become holders
/// of their first blocks, and new requests start from holders' blocks without recomputing
/// them. Virtual tensors share physical chunks (aliases); the paged baseline shares pages.
/// Blocks are chunks or pages: `blockTokens` tokens each, at the same index in every sequence.
public protocol PrefixStore: AnyObject {
    /// Tokens per block.
    var blockTokens: Int { get }
    /// Memory units (the engine ledger's) one block of one request takes.
    var unitsPerBlock: Int { get }
    /// A new request starting with `tokens` tokens from holders' blocks (block i from `prefix[i]`).
    func addRequest(_ id: Int, aliasing prefix: [(holder: Int, chunk: Int)], tokens: Int) throws
    /// Request `id` ends; its first `tokens` tokens' blocks stay `holder`'s.
    func detach(_ id: Int, tokens: Int, asHolder holder: Int) throws
    /// Running request `id`'s first `chunks` blocks, or fewer (the count returned; 0: no holder
    /// made), become `holder`'s too.
    func share(_ id: Int, chunks: Int, asHolder holder: Int) throws -> Int
    /// Running request `id`'s blocks `first..<chunks` become `holder`'s as a copy packed into
    /// one allocation, which requests map in one call (`KVCache.sharePacked`); false when the
    /// store cannot pack now, with nothing changed.
    func sharePacked(_ id: Int, from first: Int, chunks: Int, asHolder holder: Int) throws -> Bool
    /// Cached blocks at `places` (adjacent blocks of a prefix) copied into one allocation kept by
    /// a new holder (`KVCache.packPlaces`); false when the store cannot pack them now.
    func packPlaces(_ places: [(holder: Int, chunk: Int)], asHolder holder: Int) throws -> Bool
    /// For each place, whether its block is a packed copy.
    func arePacked(_ places: [(holder: Int, chunk: Int)]) -> [Bool]
    /// Whether `holder` keeps a packed copy (its blocks return to the device together).
    func isPackedHolder(_ holder: Int) -> Bool
    /// Whether `sharePacked` can ever pack here.
    var packsPrefixes: Bool { get }
    /// Blocks a publish must share with waiting requests to be packed, unless the engine says
    /// otherwise (`EngineOptions.packPrefixChunks`): the memory backend's `defaultPackChunks`.
    var defaultPackBlocks: Int { get }
    /// Units of a new request's prefix (`addRequest`'s arguments) that it would get as copies of
    /// its own rather than share: where a packed copy maps only whole (CUDA), the blocks of one
    /// that the prefix holds only in part. The ledger charges them to the request.
    func copiedUnits(aliasing prefix: [(holder: Int, chunk: Int)], tokens: Int) -> Int
    /// Units given back that stay in use until the rest of their allocation goes (a slab run
    /// that unmaps only whole, `KVCache.strandedUnits`); the ledger counts them as committed.
    var strandedUnits: Int { get }
    /// Whether running request `id` holds a run of one slab (mapped only whole) that chunk
    /// `chunk` cuts: chunks `..<chunk` shared alone would be copied by every request that aliases them.
    func cutsRun(of id: Int, atChunk chunk: Int) -> Bool
    func releaseHolderChunks(_ holder: Int, chunks: [Int]) throws
    func freeHolder(_ holder: Int) throws
    /// For each place, whether `holder` holds the same memory there as the place's holder.
    func holdSameChunks(_ holder: Int, as places: [(holder: Int, chunk: Int)]) -> [Bool]
    func free(_ id: Int) throws
    var holderIDs: [Int] { get }
    /// For each place, the memory it holds (a physical chunk per range, or a page), nil where it
    /// holds none: audits check that every cached block holds memory of its own.
    func heldBlocks(_ places: [(holder: Int, chunk: Int)]) -> [[UInt64]?]
}

extension KVCache: PrefixStore {
    public var blockTokens: Int { layout.tokensPerChunk }
    public var unitsPerBlock: Int { layout.rangesPerRequest }
}

extension PagedKVCache: PrefixStore {
    public var blockTokens: Int { pageTokens }
    public var unitsPerBlock: Int { 1 }
    /// Pages are one pool already: nothing to pack.
    public var packsPrefixes: Bool { false }
    public func sharePacked(_ id: Int, from first: Int, chunks: Int, asHolder holder: Int) throws -> Bool { false }
    public func packPlaces(_ places: [(holder: Int, chunk: Int)], asHolder holder: Int) throws -> Bool { false }
    public func arePacked(_ places: [(holder: Int, chunk: Int)]) -> [Bool] { places.map { _ in false } }
    public func isPackedHolder(_ holder: Int) -> Bool { false }
    public var defaultPackBlocks: Int { 0 }
    public func copiedUnits(aliasing prefix: [(holder: Int, chunk: Int)], tokens: Int) -> Int { 0 }
    public var strandedUnits: Int { 0 }
    public func cutsRun(of id: Int, atChunk chunk: Int) -> Bool { false }
}

extension KVStorage {
    /// The store a prefix cache keeps blocks in.
    public var prefixStore: any PrefixStore {
        switch self {
        case .virtual(let cache): cache
        case .paged(let cache): cache
        }
    }
}
