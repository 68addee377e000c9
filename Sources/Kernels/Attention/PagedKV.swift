import VTensor

/// The paged baseline's KV storage for one layer (vLLM's layout): K and V pools of `pages`
/// pages, each [pageTokens][kvHeads][headDim] of `dtype`, in ordinary device memory. A request
/// owns pages through an int32 block table: token t lives in page table[t / pageTokens], row
/// t % pageTokens. K and V share the table (page i of K and page i of V belong together).
public struct PagedKVPool: Sendable, Equatable {
    public var keys: UInt64
    public var values: UInt64
    public var pages: Int
    public var pageTokens: Int
    public var kvHeads: Int
    public var headDim: Int
    public var dtype: KVDType

    public init(keys: UInt64, values: UInt64, pages: Int, pageTokens: Int = 16, kvHeads: Int, headDim: Int, dtype: KVDType) {
        precondition(pages > 0 && pageTokens > 0 && kvHeads > 0 && headDim > 0, "bad paged pool")
        self.keys = keys
        self.values = values
        self.pages = pages
        self.pageTokens = pageTokens
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
    }

    /// Bytes of one head of one token.
    public var headStride: Int { headDim * dtype.bytes }
    /// Bytes of one token (all heads).
    public var tokenStride: Int { kvHeads * headStride }
    /// Bytes of one page.
    public var pageStride: Int { pageTokens * tokenStride }
    /// Bytes of each pool.
    public var poolBytes: Int { pages * pageStride }

    /// Pages a request of `tokens` tokens needs.
    public func pages(forTokens tokens: Int) -> Int { (tokens + pageTokens - 1) / pageTokens }

    /// Byte offset (from the pool base) of token t, head h, given the request's block table.
    public func offset(token t: Int, head h: Int, table: [Int32]) -> Int {
        Int(table[t / pageTokens]) * pageStride + (t % pageTokens) * tokenStride + h * headStride
    }
}

/// One request of a paged batch: the same roles as `AttentionRequest`, with K/V found through
/// a block table in device memory (int32 page ids, at least pages(forTokens: length) of them).
public struct PagedRequest: Sendable, Equatable {
    public var blockTable: UInt64
    public var length: Int
    public var queryStart: Int
    public var queryCount: Int

    public init(blockTable: UInt64, length: Int, queryStart: Int, queryCount: Int) {
        precondition(queryCount >= 0 && queryCount <= length, "queries must be the last tokens of the KV")
        self.blockTable = blockTable
        self.length = length
        self.queryStart = queryStart
        self.queryCount = queryCount
    }
}
