import Dispatch
import Glibc
import VTensor

/// Attention and KV writes on the CPU over the same descriptors the GPU kernels use: the
/// oracle for every GPU attention kernel, and the CPU backend's implementation.
///
/// K and V are read at the views' addresses, which must be host memory (the host backend).
/// Accumulation is in Float; inputs and outputs in `p.dtype`.
public enum CPUAttention {
    /// O = softmax(scale * Q K^T + mask) V for every request of the batch (see
    /// `AttentionParameters` for the masking rule). `threads` > 1 splits the work across threads.
    ///
    /// fp32 K/V with a head dim a multiple of 8 (the CPU backend) take the tiled path
    /// (`runTiled`); every other case the row-at-a-time scalar loop below, the GPU kernels' oracle.
    public static func run(_ p: AttentionParameters, requests: [AttentionRequest], queries: UnsafeRawPointer,
                           output: UnsafeMutableRawPointer, threads: Int = 1) {
        if p.dtype == .fp32 && p.headDim % 8 == 0 {
            runTiled(p, requests: requests, queries: queries.assumingMemoryBound(to: Float.self),
                     output: output.assumingMemoryBound(to: Float.self), threads: threads)
            return
        }
        // One work item per (request, query row, query head): decode has one row a request,
        // so the heads are what spreads over the threads.
        var rows: [(request: Int, query: Int, head: Int)] = []
        for (r, request) in requests.enumerated() {
            for i in 0..<request.queryCount {
                for h in 0..<p.queryHeads { rows.append((r, i, h)) }
            }
        }
        let items = rows
        let q = UInt(bitPattern: queries)
        let o = UInt(bitPattern: output)
        let work: @Sendable (Range<Int>) -> Void = { range in
            var scores = [Float]()
            var accumulator = [Float](repeating: 0, count: p.headDim)
            var query = [Float](repeating: 0, count: p.headDim)
            for item in range {
                let (r, i, h) = items[item]
                attendOneRow(p, requests[r], queryIndex: i, head: h, queries: UnsafeRawPointer(bitPattern: q)!,
                             output: UnsafeMutableRawPointer(bitPattern: o)!, scores: &scores,
                             accumulator: &accumulator, query: &query)
            }
        }
        // Several parts a thread: a thread the OS holds back delays at most one small part.
        let parts = max(1, min(threads > 1 ? threads * WorkerPool.partsPerThread : 1, items.count))
        WorkerPool.shared.run(parts: parts, maxThreads: threads) { part in
            work(items.count * part / parts ..< items.count * (part + 1) / parts)
        }
    }

    /// The key positions query `position` attends to.
    @inline(__always)
    public static func visibleKeys(position: Int, window: Int?) -> ClosedRange<Int> {
        (window.map { max(0, position - $0 + 1) } ?? 0)...position
    }

    private static func attendOneRow(_ p: AttentionParameters, _ request: AttentionRequest, queryIndex i: Int, head h: Int,
                                     queries: UnsafeRawPointer, output: UnsafeMutableRawPointer,
                                     scores: inout [Float], accumulator: inout [Float], query: inout [Float]) {
        let d = p.headDim
        let position = request.firstQueryPosition + i
        let keys = visibleKeys(position: position, window: p.window)
        let row = request.queryStart + i
        let kvHead = h / p.groupSize
        let qBase = (row * p.queryHeads + h) * d
        for x in 0..<d { query[x] = HalfFloat.load(queries, qBase + x, p.dtype) * p.scale }
        scores.removeAll(keepingCapacity: true)
        var maximum = -Float.infinity
        for j in keys {
            let k = UnsafeRawPointer(bitPattern: UInt(request.key.address(token: j, head: kvHead)))!
            var dot: Float = 0
            for x in 0..<d { dot += query[x] * HalfFloat.load(k, x, p.dtype) }
            scores.append(dot)
            maximum = max(maximum, dot)
        }
        for x in 0..<d { accumulator[x] = 0 }
        var sum: Float = 0
        for (n, j) in keys.enumerated() {
            let weight = expf(scores[n] - maximum)
            sum += weight
            let v = UnsafeRawPointer(bitPattern: UInt(request.value.address(token: j, head: kvHead)))!
            for x in 0..<d { accumulator[x] += weight * HalfFloat.load(v, x, p.dtype) }
        }
        let oBase = (row * p.queryHeads + h) * d
        for x in 0..<d { HalfFloat.store(accumulator[x] / sum, output, oBase + x, p.dtype) }
    }

    /// Writes the new K and V rows ([totalQueries][kvHeads][headDim]) of each request at its
    /// last `queryCount` positions in the cache.
    public static func writeKV(_ p: AttentionParameters, requests: [AttentionRequest], keys: UnsafeRawPointer, values: UnsafeRawPointer) {
        let rowBytes = p.headDim * p.dtype.bytes
        for request in requests {
            for i in 0..<request.queryCount {
                let position = request.firstQueryPosition + i
                let row = request.queryStart + i
                for h in 0..<p.kvHeads {
                    let source = (row * p.kvHeads + h) * rowBytes
                    UnsafeMutableRawPointer(bitPattern: UInt(request.key.address(token: position, head: h)))!
                        .copyMemory(from: keys + source, byteCount: rowBytes)
                    UnsafeMutableRawPointer(bitPattern: UInt(request.value.address(token: position, head: h)))!
                        .copyMemory(from: values + source, byteCount: rowBytes)
                }
            }
        }
    }
}

