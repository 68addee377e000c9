import CAttention
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VTensor

/// fp32 attention in tiles, the CPU backend's path (`CPUAttention.run` for fp32 K/V with a head
/// dim a multiple of 8).
///
/// A work item is (request, KV heads, tile of query rows, range of keys). For each of its KV heads
/// it holds every query head of the head's group for every row of the tile (its "query vectors")
/// and walks the keys a tile at a time with an online softmax (running max and sum per vector; the
/// accumulator is rescaled when the max grows), so each key and value row is read once per item
/// and reused from L1 by all its vectors. Key tiles that the causal mask or the window hide from
/// the whole row tile are never visited.
///
/// The per-tile work (scores, mask, softmax, P V) is C in the CAttention target, which picks
/// AVX-512, AVX2 or plain C at run time; this file plans the items, spreads them over the
/// threads, walks the KV blocks and merges split items.
///
/// When there are fewer items than the threads could take (decode: one row a request), a long
/// item's keys are split over several items that each leave a partial max, sum and accumulator;
/// a merge then combines them (flash decoding).
extension CPUAttention {
    /// The kernels the tiled path runs: the best this CPU has, or at most the one named (tests
    /// compare the plain C kernels with the SIMD ones).
    enum TiledKernels: Int32 {
        case best = -1
        case portable = 0
        case avx2 = 1
        case avx512 = 2

        /// The best this CPU runs.
        static var available: TiledKernels { TiledKernels(rawValue: vt_attn_best_variant()) ?? .portable }
    }

    /// Query vectors (rows x group heads) of one KV head an item holds at most (48: 16 rows of
    /// SmolLM2's 3-head groups). With 64-key tiles, Q, the accumulator, the scores and a tile of K
    /// and V stay in L1 and L2. Measured on SmolLM2's prefill (one thread, 1024 and 4096 tokens):
    /// 24 to 144 vectors and 32 to 256 keys are all within 5%; 64 keys were the fastest.
    static let tiledQueryVectors = 48
    /// Keys scored and accumulated together.
    static let tiledKeyTile = 64
    /// Fewest keys a split of one item's keys gets: below that the merge costs more than it spreads.
    static let tiledMinKeysPerSplit = 128
    /// Parts a thread gets (the pool hands them out as threads free up).
    static let tiledPartsPerThread = 8
    /// Multiply-adds of Q K^T (rows x keys x head dim, all heads) below which a batch runs on one
    /// thread: a decode over 100 tokens of SmolLM2's context gains nothing from two (measured).
    static let tiledParallelWork = 1 << 16

    /// One work item: rows `firstRow ..< firstRow + rows` of the request (its own numbering),
    /// KV heads `firstHead ..< firstHead + heads`, keys `keys` (before the mask). `slot` < 0: it
    /// writes the output; otherwise it leaves partial results in that slot for the merge.
    struct TiledItem {
        var request: Int
        var firstHead: Int
        var heads: Int
        var firstRow: Int
        var rows: Int
        var keys: Range<Int>
        var slot: Int
        var cost: Int
    }

    /// A unit of rows whose keys were split over `slots` consecutive slots starting at `firstSlot`.
    struct TiledMerge {
        var request: Int
        var firstHead: Int
        var heads: Int
        var firstRow: Int
        var rows: Int
        var firstSlot: Int
        var slots: Int
    }

    static func runTiled(_ p: AttentionParameters, requests: [AttentionRequest], queries: UnsafePointer<Float>,
                         output: UnsafeMutablePointer<Float>, threads: Int, kernels: TiledKernels = .best) {
        let group = p.groupSize
        let rowTile = max(1, tiledQueryVectors / group)
        // Units: (request, KV heads, row tile) with every key its rows see. A row tile with few
        // vectors a head (decode) takes several heads: a token's heads lie side by side, so the
        // unit reads whole K and V token rows in order instead of every kvHeads-th slice of them.
        var units: [TiledItem] = []
        var totalCost = 0
        for (r, request) in requests.enumerated() where request.queryCount > 0 {
            var firstRow = 0
            while firstRow < request.queryCount {
                let rows = min(rowTile, request.queryCount - firstRow)
                let first = request.firstQueryPosition + firstRow
                let last = first + rows - 1
                let keys = visibleKeys(position: first, window: p.window).lowerBound ..< last + 1
                // Keys the rows see in all: the span less the causal triangle (a window's edge is ignored).
                let cost = rows * keys.count - (p.window == nil ? rows * (rows - 1) / 2 : 0)
                let headsPerUnit = max(1, min(p.kvHeads, tiledQueryVectors / (rows * group)))
                var head = 0
                while head < p.kvHeads {
                    let heads = min(headsPerUnit, p.kvHeads - head)
                    units.append(TiledItem(request: r, firstHead: head, heads: heads, firstRow: firstRow, rows: rows,
                                           keys: keys, slot: -1, cost: cost * heads))
                    totalCost += cost * heads
                    head += heads
                }
                firstRow += rows
            }
        }
        guard !units.isEmpty else { return }

        // A batch too small to repay handing parts to other threads stays on this one, unsplit.
        let parallel = threads > 1 && totalCost * group * p.headDim >= tiledParallelWork
        let wantedParts = parallel ? threads * tiledPartsPerThread : 1
        // Split a unit's keys when it is much more than its share of a part (decode: a few
        // units, long contexts), so that every thread gets work and the parts even out.
        var items: [TiledItem] = []
        var merges: [TiledMerge] = []
        var slots = 0
        var mostVectors = 1
        let share = max(1, totalCost / wantedParts)
        for unit in units {
            mostVectors = max(mostVectors, unit.heads * unit.rows * group)
            let splits = parallel ? min(unit.cost / share, unit.keys.count / tiledMinKeysPerSplit) : 1
            if splits <= 1 {
                items.append(unit)
                continue
            }
            merges.append(TiledMerge(request: unit.request, firstHead: unit.firstHead, heads: unit.heads, firstRow: unit.firstRow,
                                     rows: unit.rows, firstSlot: slots, slots: splits))
            for split in 0..<splits {
                var item = unit
                item.keys = unit.keys.lowerBound + unit.keys.count * split / splits ..< unit.keys.lowerBound + unit.keys.count * (split + 1) / splits
                item.slot = slots
                item.cost = unit.cost / splits
                items.append(item)
                slots += 1
            }
        }

        let d = p.headDim
        let slotFloats = mostVectors * (d + 2)
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: max(1, slots * slotFloats))
        defer { partials.deallocate() }

        // Parts of about equal cost over the items in order.
        let parts = min(items.count, wantedParts)
        let itemsCost = items.reduce(0) { $0 + $1.cost }
        var partStarts = [0]
        if parts > 1 {
            var accumulated = 0
            for (n, item) in items.enumerated() {
                accumulated += item.cost
                if partStarts.count < parts && accumulated >= itemsCost * partStarts.count / parts && n + 1 < items.count {
                    partStarts.append(n + 1)
                }
            }
        }
        partStarts.append(items.count)
        let plan = items
        let mostHeads = items.reduce(1) { max($0, $1.heads) }
        let q = UInt(bitPattern: queries), o = UInt(bitPattern: output), partialAddress = UInt(bitPattern: partials)
        WorkerPool.shared.run(parts: partStarts.count - 1, maxThreads: threads) { part in
            let scratch = TiledScratch(heads: mostHeads, vectors: rowTile * group, headDim: d, keyTile: tiledKeyTile)
            defer { scratch.deallocate() }
            for n in partStarts[part] ..< partStarts[part + 1] {
                let item = plan[n]
                attendTile(p, requests[item.request], item, queries: UnsafePointer(bitPattern: q)!,
                           output: UnsafeMutablePointer(bitPattern: o)!,
                           partial: item.slot < 0 ? nil : UnsafeMutablePointer<Float>(bitPattern: partialAddress)! + item.slot * slotFloats,
                           scratch: scratch, kernels: kernels)
            }
        }
        for merge in merges {
            mergePartials(p, requests[merge.request], merge, partials: partials, slotFloats: slotFloats, output: output)
        }
    }

    /// Per-thread buffers: a kernel state and its scratch for each KV head an item may hold, and a
    /// key tile's K and V row addresses.
    struct TiledScratch {
        let states: UnsafeMutablePointer<vt_attn_state>
        let floatsPerHead: Int
        let floats: UnsafeMutablePointer<Float>
        let keyRows: UnsafeMutablePointer<UnsafeRawPointer?>
        let valueRows: UnsafeMutablePointer<UnsafeRawPointer?>

        init(heads: Int, vectors: Int, headDim d: Int, keyTile: Int) {
            states = .allocate(capacity: heads)
            states.initialize(repeating: vt_attn_state(), count: heads)
            // Whole cache lines a head, so that every head's arrays start 64-byte aligned.
            floatsPerHead = (vt_attn_scratch_floats(Int32(vectors), Int32(d), Int32(keyTile)) + 15) / 16 * 16
            floats = UnsafeMutableRawPointer.allocate(byteCount: heads * floatsPerHead * 4, alignment: 64)
                .bindMemory(to: Float.self, capacity: heads * floatsPerHead)
            // A tile's rows and the next tile's.
            keyRows = .allocate(capacity: 2 * keyTile)
            keyRows.initialize(repeating: nil, count: 2 * keyTile)
            valueRows = .allocate(capacity: 2 * keyTile)
            valueRows.initialize(repeating: nil, count: 2 * keyTile)
        }

        func deallocate() {
            states.deallocate()
            floats.deallocate()
            keyRows.deallocate()
            valueRows.deallocate()
        }
    }

    /// One item: for each of its KV heads, the query vectors against its keys, a key tile at a time.
    static func attendTile(_ p: AttentionParameters, _ request: AttentionRequest, _ item: TiledItem,
                           queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                           partial: UnsafeMutablePointer<Float>?, scratch s: TiledScratch, kernels: TiledKernels) {
        let d = p.headDim, group = p.groupSize
        let rowStride = p.queryHeads * d
        let firstRow = request.queryStart + item.firstRow
        for j in 0..<item.heads {
            let state = s.states + j
            state.pointee.rows = Int32(item.rows)
            state.pointee.group = Int32(group)
            state.pointee.head_dim = Int32(d)
            state.pointee.key_tile = Int32(tiledKeyTile)
            state.pointee.first_position = Int64(request.firstQueryPosition + item.firstRow)
            state.pointee.window = Int64(p.window ?? 0)
            state.pointee.scratch = s.floats + j * s.floatsPerHead
            state.pointee.variant = kernels.rawValue
            vt_attn_begin(state, queries + firstRow * rowStride + (item.firstHead + j) * group * d, rowStride, p.scale)
        }
        var tileStart = item.keys.lowerBound
        while tileStart < item.keys.upperBound {
            let count = min(tiledKeyTile, item.keys.upperBound - tileStart)
            // This tile's rows, then the next tile's for the kernels to prefetch.
            let ahead = min(tiledKeyTile, item.keys.upperBound - tileStart - count)
            gatherRows(request.key, from: tileStart, count: count + ahead, head: item.firstHead, into: s.keyRows)
            gatherRows(request.value, from: tileStart, count: count + ahead, head: item.firstHead, into: s.valueRows)
            for j in 0..<item.heads {
                vt_attn_tile(s.states + j, s.keyRows, s.valueRows, j * request.key.headStride, j * request.value.headStride,
                             Int64(tileStart), Int32(count), Int32(ahead))
            }
            tileStart += count
        }
        let headVectors = item.rows * group
        for j in 0..<item.heads {
            if let partial {
                vt_attn_store_partial(s.states + j, partial + j * headVectors * (d + 2))
            } else {
                vt_attn_store(s.states + j, output + firstRow * rowStride + (item.firstHead + j) * group * d, rowStride)
            }
        }
    }

    /// The addresses of `count` consecutive tokens' rows of one head, walking the blocks
    /// instead of dividing for every token.
    @inline(__always)
    static func gatherRows(_ view: KVView, from start: Int, count: Int, head: Int, into rows: UnsafeMutablePointer<UnsafeRawPointer?>) {
        var block = start / view.tokensPerBlock
        var inBlock = start - block * view.tokensPerBlock
        var address = UnsafeRawPointer(bitPattern: UInt(view.address(token: start, head: head)))!
        for k in 0..<count {
            rows[k] = address
            inBlock += 1
            if inBlock == view.tokensPerBlock {
                block += 1
                inBlock = 0
                address = UnsafeRawPointer(bitPattern: UInt(view.base) + UInt(block * view.blockStride + head * view.headStride))!
            } else {
                address += view.tokenStride
            }
        }
    }

    /// Combines the partial (max, sum, accumulator) of a unit's key splits into its output rows.
    /// A slot holds the unit's vectors head by head, then row by row, then by query head of the group.
    static func mergePartials(_ p: AttentionParameters, _ request: AttentionRequest, _ merge: TiledMerge,
                              partials: UnsafeMutablePointer<Float>, slotFloats: Int, output: UnsafeMutablePointer<Float>) {
        let d = p.headDim, group = p.groupSize
        for j in 0..<merge.heads {
            for i in 0..<merge.rows {
                let row = request.queryStart + merge.firstRow + i
                for h in 0..<group {
                    let v = (j * merge.rows + i) * group + h
                    let target = output + (row * p.queryHeads + (merge.firstHead + j) * group + h) * d
                    var top = -Float.infinity
                    for split in 0..<merge.slots { top = max(top, partials[(merge.firstSlot + split) * slotFloats + v * (d + 2)]) }
                    target.update(repeating: 0, count: d)
                    var total: Float = 0
                    for split in 0..<merge.slots {
                        let slot = partials + (merge.firstSlot + split) * slotFloats + v * (d + 2)
                        // A split whose keys this vector cannot see has max -inf and weight 0.
                        guard slot[0] > -.infinity else { continue }
                        let weight = expf(slot[0] - top)
                        total += weight * slot[1]
                        for x in 0..<d { target[x] += weight * slot[2 + x] }
                    }
                    let inverse = 1 / total
                    for x in 0..<d { target[x] *= inverse }
                }
            }
        }
    }

    /// e^x through the tiled path's kernels (`kernels` as for `runTiled`), for tests.
    static func kernelExp(_ x: [Float], kernels: TiledKernels) -> [Float] {
        var y = [Float](repeating: .nan, count: x.count)
        x.withUnsafeBufferPointer { input in
            y.withUnsafeMutableBufferPointer { out in
                vt_attn_exp(kernels.rawValue, input.baseAddress, out.baseAddress, x.count)
            }
        }
        return y
    }
}
