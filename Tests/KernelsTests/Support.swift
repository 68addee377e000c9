import Kernels
import VTensor

/// Adds one request per shape (KV length, query count) to `cache`, reserved and filled to its
/// length, and returns the attention requests for `layer` with consecutive query rows.
func addRequests(to cache: KVCache, shapes: [(length: Int, queries: Int)], layer: Int) throws -> [AttentionRequest] {
    var made: [AttentionRequest] = []
    var start = 0
    for (id, s) in shapes.enumerated() {
        try cache.addRequest(id)
        try cache.reserve(id, tokens: s.length)
        try cache.setLength(id, s.length)
        made.append(AttentionRequest(key: try cache.view(id, layer: layer, component: .key),
                                     value: try cache.view(id, layer: layer, component: .value),
                                     queryStart: start, queryCount: s.queries))
        start += s.queries
    }
    return made
}
