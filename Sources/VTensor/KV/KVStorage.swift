/// Where a model's KV cache lives: virtual tensors mapped as requests grow (the default), or the
/// paged baseline's pool reserved up front with block tables (vLLM's design, for the A/B).
/// The operations every owner of a cache needs are here; the rest belongs to one kind.
public enum KVStorage: @unchecked Sendable {
    case virtual(KVCache)
    case paged(PagedKVCache)

    public var virtualCache: KVCache? { if case .virtual(let cache) = self { cache } else { nil } }
    public var pagedCache: PagedKVCache? { if case .paged(let cache) = self { cache } else { nil } }

    /// A short name for reports: "vtensor" or "paged".
    public var kindName: String { virtualCache != nil ? "vtensor" : "paged" }

    public var maxTokensPerRequest: Int {
        switch self {
        case .virtual(let cache): cache.maxTokensPerRequest
        case .paged(let cache): cache.maxTokensPerRequest
        }
    }

    public var requestIDs: [Int] {
        switch self {
        case .virtual(let cache): cache.requestIDs
        case .paged(let cache): cache.requestIDs
        }
    }

    public func addRequest(_ id: Int) throws {
        switch self {
        case .virtual(let cache): try cache.addRequest(id)
        case .paged(let cache): try cache.addRequest(id)
        }
    }

    /// Gives a request's memory back (virtual tensors: unmapped after in-flight work).
    public func free(_ id: Int) throws {
        switch self {
        case .virtual(let cache): try cache.free(id)
        case .paged(let cache): try cache.free(id)
        }
    }

    public func length(of id: Int) throws -> Int {
        switch self {
        case .virtual(let cache): try cache.length(of: id)
        case .paged(let cache): try cache.length(of: id)
        }
    }

    /// Declares tokens written; each new length must already have its memory.
    public func setLengths(_ updates: [(id: Int, length: Int)]) throws {
        switch self {
        case .virtual(let cache): try cache.setLengths(updates)
        case .paged(let cache): try cache.setLengths(updates)
        }
    }

    /// Each request's leading blocks that other requests may map as the same memory, named by
    /// physical identity, and the tokens a block holds (the shared-prefix decode's tiles):
    /// `KVCache.sharedChunkIdentities`, or the full pages of a paged request's table.
    public func sharedBlockIdentities(_ ids: [Int]) throws -> (blocks: [[UInt64]], tokensPerBlock: Int) {
        switch self {
        case .virtual(let cache): (try cache.sharedChunkIdentities(ids), cache.layout.tokensPerChunk)
        case .paged(let cache): (try cache.sharedPageIdentities(ids), cache.pageTokens)
        }
    }

    /// Gives each request the memory for `tokens` tokens, now (tools and tests; the engine maps
    /// virtual tensors through its mapper, ahead of the step).
    public func reserveNow(_ targets: [(id: Int, tokens: Int)]) throws {
        switch self {
        case .virtual(let cache): try cache.memory.grow(try cache.prepareGrowth(targets))
        case .paged(let cache): try cache.reserve(targets)
        }
    }
}
