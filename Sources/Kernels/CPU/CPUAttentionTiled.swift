#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif
import Glibc
import VTensor

/// fp32 attention in tiles, the CPU backend's path (`CPUAttention.run` for fp32 K/V with a head
/// dim a multiple of 8).
///
/// A work item is (request, KV head, tile of query rows, range of keys). It holds every query
/// head of the KV head's group for every row of the tile (its "query vectors") and walks the keys
/// a tile at a time with an online softmax (running max and sum per vector; the accumulator is
/// rescaled when the max grows), so each key and value row is read once per item and reused from
/// L1 by all its vectors. Key tiles that the causal mask or the window hide from the whole row
/// tile are never visited.
///
/// When there are fewer items than the threads could take (decode: one row a request), a long
/// item's keys are split over several items that each leave a partial max, sum and accumulator;
/// a merge then combines them (flash decoding).
extension CPUAttention {
    /// Query vectors (rows x group heads) an item holds at most (48: 16 rows of SmolLM2's 3-head
    /// groups). With 64-key tiles, Q, the accumulator, the scores and a tile of K and V stay in
    /// L1 and L2. Measured on SmolLM2's prefill (one thread, 1024 and 4096 tokens): 24 to 144
    /// vectors and 32 to 256 keys are all within 5%; 64 keys were the fastest.
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
    /// one KV head, keys `keys` (before the mask). `slot` < 0: it writes the output; otherwise
    /// it leaves partial results in that slot for the merge.
    struct TiledItem {
        var request: Int
        var kvHead: Int
        var firstRow: Int
        var rows: Int
        var keys: Range<Int>
        var slot: Int
        var cost: Int
    }

    /// A unit of rows whose keys were split over `slots` consecutive slots starting at `firstSlot`.
    struct TiledMerge {
        var request: Int
        var kvHead: Int
        var firstRow: Int
        var rows: Int
        var firstSlot: Int
        var slots: Int
    }

    static func runTiled(_ p: AttentionParameters, requests: [AttentionRequest], queries: UnsafePointer<Float>,
                         output: UnsafeMutablePointer<Float>, threads: Int) {
        let group = p.groupSize
        let rowTile = max(1, tiledQueryVectors / group)
        // Units: (request, KV head, row tile) with every key its rows see.
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
                for g in 0..<p.kvHeads {
                    units.append(TiledItem(request: r, kvHead: g, firstRow: firstRow, rows: rows, keys: keys, slot: -1, cost: cost))
                    totalCost += cost
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
        let share = max(1, totalCost / wantedParts)
        for unit in units {
            let splits = parallel ? min(unit.cost / share, unit.keys.count / tiledMinKeysPerSplit) : 1
            if splits <= 1 {
                items.append(unit)
                continue
            }
            merges.append(TiledMerge(request: unit.request, kvHead: unit.kvHead, firstRow: unit.firstRow, rows: unit.rows,
                                     firstSlot: slots, slots: splits))
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
        let slotFloats = rowTile * group * (d + 2)
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
        let q = UInt(bitPattern: queries), o = UInt(bitPattern: output), partialAddress = UInt(bitPattern: partials)
        WorkerPool.shared.run(parts: partStarts.count - 1, maxThreads: threads) { part in
            let scratch = TiledScratch(vectors: rowTile * group, headDim: d, keyTile: tiledKeyTile)
            defer { scratch.deallocate() }
            for n in partStarts[part] ..< partStarts[part + 1] {
                let item = plan[n]
                attendTile(p, requests[item.request], item, queries: UnsafePointer(bitPattern: q)!,
                           output: UnsafeMutablePointer(bitPattern: o)!,
                           partial: item.slot < 0 ? nil : UnsafeMutablePointer<Float>(bitPattern: partialAddress)! + item.slot * slotFloats,
                           scratch: scratch)
            }
        }
        for merge in merges {
            mergePartials(p, requests[merge.request], merge, partials: partials, slotFloats: slotFloats, output: output)
        }
    }

    /// Per-thread buffers of one item: Q (scaled), the accumulator, a key tile's scores, the
    /// running max and sum, and the key tile's K and V row addresses.
    struct TiledScratch {
        let queries: UnsafeMutablePointer<Float>
        let accumulator: UnsafeMutablePointer<Float>
        let scores: UnsafeMutablePointer<Float>
        let maximum: UnsafeMutablePointer<Float>
        let sum: UnsafeMutablePointer<Float>
        let keyRows: UnsafeMutablePointer<UnsafeRawPointer>
        let valueRows: UnsafeMutablePointer<UnsafeRawPointer>
        private let floats: UnsafeMutableRawPointer

        init(vectors: Int, headDim d: Int, keyTile: Int) {
            // Padded to whole groups of the micro-kernels (4 vectors, 8 keys).
            let vectorCapacity = (vectors + 3) / 4 * 4
            let count = vectorCapacity * (2 * d + keyTile + 2)
            floats = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
            let base = floats.initializeMemory(as: Float.self, repeating: 0, count: count)
            queries = base
            accumulator = base + vectorCapacity * d
            scores = accumulator + vectorCapacity * d
            maximum = scores + vectorCapacity * keyTile
            sum = maximum + vectorCapacity
            keyRows = .allocate(capacity: keyTile + 8)
            keyRows.initialize(repeating: UnsafeRawPointer(base), count: keyTile + 8)
            valueRows = .allocate(capacity: keyTile + 8)
            valueRows.initialize(repeating: UnsafeRawPointer(base), count: keyTile + 8)
        }

        func deallocate() {
            floats.deallocate()
            keyRows.deallocate()
            valueRows.deallocate()
        }
    }

    /// One item: its query vectors against its keys, a key tile at a time.
    static func attendTile(_ p: AttentionParameters, _ request: AttentionRequest, _ item: TiledItem,
                           queries: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                           partial: UnsafeMutablePointer<Float>?, scratch s: TiledScratch) {
        let d = p.headDim, group = p.groupSize
        let vectors = item.rows * group
        let padded = (vectors + 3) / 4 * 4
        let scale = SIMD8<Float>(repeating: p.scale)
        // Q of the group's heads is contiguous within a row: copy it scaled; padding vectors are
        // zero, so their scores are 0 and never overflow.
        for i in 0..<item.rows {
            let row = request.queryStart + item.firstRow + i
            let source = UnsafeRawPointer(queries + (row * p.queryHeads + item.kvHead * group) * d)
            let target = UnsafeMutableRawPointer(s.queries + i * group * d)
            for x in stride(from: 0, to: group * d * 4, by: 32) {
                target.storeBytes(of: source.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self) * scale,
                                  toByteOffset: x, as: SIMD8<Float>.self)
            }
        }
        (s.queries + vectors * d).update(repeating: 0, count: (padded - vectors) * d)
        s.accumulator.update(repeating: 0, count: padded * d)
        s.maximum.update(repeating: -.infinity, count: padded)
        s.sum.update(repeating: 0, count: padded)

        let firstPosition = request.firstQueryPosition + item.firstRow
        let lastPosition = firstPosition + item.rows - 1
        // Keys every row sees: a tile inside this span needs no mask.
        let sharedLower = visibleKeys(position: lastPosition, window: p.window).lowerBound
        let keyTile = tiledKeyTile
        var tileStart = item.keys.lowerBound
        while tileStart < item.keys.upperBound {
            let count = min(keyTile, item.keys.upperBound - tileStart)
            let width = (count + 7) / 8 * 8
            gatherRows(request.key, from: tileStart, count: count, head: item.kvHead, into: s.keyRows)
            gatherRows(request.value, from: tileStart, count: count, head: item.kvHead, into: s.valueRows)
            for k in count..<width { s.keyRows[k] = s.keyRows[count - 1] }

            scoreTile(s, vectors: padded, keys: width, headDim: d, keyTile: keyTile)
            if width != count || tileStart + count - 1 > firstPosition || tileStart < sharedLower {
                for i in 0..<item.rows {
                    let visible = visibleKeys(position: firstPosition + i, window: p.window)
                    // Padding keys (count ..< width) are hidden from every row.
                    let lower = min(max(visible.lowerBound - tileStart, 0), count)
                    let upper = max(min(visible.upperBound + 1 - tileStart, count), lower)
                    for v in i * group ..< (i + 1) * group {
                        let row = s.scores + v * keyTile
                        (row).update(repeating: -.infinity, count: lower)
                        (row + upper).update(repeating: -.infinity, count: width - upper)
                    }
                }
            }
            for v in 0..<vectors {
                updateSoftmax(s, vector: v, keys: width, headDim: d, keyTile: keyTile)
            }
            accumulateTile(s, vectors: padded, keys: count, headDim: d, keyTile: keyTile)
            tileStart += count
        }

        if let partial {
            for v in 0..<vectors {
                let slot = partial + v * (d + 2)
                slot[0] = s.maximum[v]
                slot[1] = s.sum[v]
                (slot + 2).update(from: s.accumulator + v * d, count: d)
            }
            return
        }
        for i in 0..<item.rows {
            let row = request.queryStart + item.firstRow + i
            for h in 0..<group {
                let v = i * group + h
                let target = UnsafeMutableRawPointer(output + (row * p.queryHeads + item.kvHead * group + h) * d)
                let source = UnsafeRawPointer(s.accumulator + v * d)
                let inverse = SIMD8<Float>(repeating: 1 / s.sum[v])
                for x in stride(from: 0, to: d * 4, by: 32) {
                    target.storeBytes(of: source.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self) * inverse,
                                      toByteOffset: x, as: SIMD8<Float>.self)
                }
            }
        }
    }

    /// The addresses of `count` consecutive tokens' rows of one head, walking the blocks
    /// instead of dividing for every token.
    @inline(__always)
    static func gatherRows(_ view: KVView, from start: Int, count: Int, head: Int, into rows: UnsafeMutablePointer<UnsafeRawPointer>) {
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

    /// scores[v][k] = q[v] . K[k] for `vectors` (a multiple of 2) x `keys` (a multiple of 8).
    @inline(__always)
    static func scoreTile(_ s: TiledScratch, vectors: Int, keys: Int, headDim d: Int, keyTile: Int) {
        let bytes = d * 4
        for v in stride(from: 0, to: vectors, by: 2) {
            let q0 = UnsafeRawPointer(s.queries + v * d), q1 = q0 + bytes
            let out0 = UnsafeMutableRawPointer(s.scores + v * keyTile), out1 = out0 + keyTile * 4
            for k in stride(from: 0, to: keys, by: 4) {
                let dots = dots2x4(q0, q1, s.keyRows[k], s.keyRows[k + 1], s.keyRows[k + 2], s.keyRows[k + 3], bytes: bytes)
                out0.storeBytes(of: dots.lowHalf, toByteOffset: k * 4, as: SIMD4<Float>.self)
                out1.storeBytes(of: dots.highHalf, toByteOffset: k * 4, as: SIMD4<Float>.self)
            }
        }
    }

    /// Dot products of two query vectors with four key rows: lanes (q0.k0 ... q0.k3, q1.k0 ... q1.k3).
    /// Eight independent sums keep both FMA pipes busy.
    @inline(__always)
    static func dots2x4(_ q0: UnsafeRawPointer, _ q1: UnsafeRawPointer, _ k0: UnsafeRawPointer, _ k1: UnsafeRawPointer,
                        _ k2: UnsafeRawPointer, _ k3: UnsafeRawPointer, bytes: Int) -> SIMD8<Float> {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
        var x = 0
        while x < bytes {
            let x0 = q0.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self)
            let x1 = q1.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self)
            let y0 = k0.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self)
            let y1 = k1.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self)
            let y2 = k2.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self)
            let y3 = k3.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self)
            a0 = a0.addingProduct(x0, y0); a1 = a1.addingProduct(x0, y1)
            a2 = a2.addingProduct(x0, y2); a3 = a3.addingProduct(x0, y3)
            b0 = b0.addingProduct(x1, y0); b1 = b1.addingProduct(x1, y1)
            b2 = b2.addingProduct(x1, y2); b3 = b3.addingProduct(x1, y3)
            x &+= 32
        }
        return laneSums(a0, a1, a2, a3, b0, b1, b2, b3)
    }

    /// Lane i of the result is the sum of the lanes of argument i.
    @inline(__always)
    static func laneSums(_ a0: SIMD8<Float>, _ a1: SIMD8<Float>, _ a2: SIMD8<Float>, _ a3: SIMD8<Float>,
                         _ a4: SIMD8<Float>, _ a5: SIMD8<Float>, _ a6: SIMD8<Float>, _ a7: SIMD8<Float>) -> SIMD8<Float> {
        #if arch(x86_64)
        // Horizontal adds: 6 instructions and a final fold of the 128-bit halves. The same through
        // SIMD shuffles (below) compiles to dozens of lane inserts.
        let low = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3))
        let high = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7))
        // low = (a0..a3 over lanes 0-3, a0..a3 over lanes 4-7); likewise high for a4..a7.
        return SIMD8(lowHalf: low.lowHalf + low.highHalf, highHalf: high.lowHalf + high.highHalf)
        #else
        @inline(__always) func pairs(_ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> {
            let both = SIMD8(lowHalf: a, highHalf: b)
            return both.evenHalf + both.oddHalf
        }
        @inline(__always) func fold(_ a: SIMD8<Float>) -> SIMD4<Float> { a.lowHalf + a.highHalf }
        let low = pairs(pairs(fold(a0), fold(a1)), pairs(fold(a2), fold(a3)))
        let high = pairs(pairs(fold(a4), fold(a5)), pairs(fold(a6), fold(a7)))
        return SIMD8(lowHalf: low, highHalf: high)
        #endif
    }

    /// Online softmax for one query vector over a tile's scores: folds the tile's max into the
    /// running max (rescaling the sum and accumulator if it grew) and turns the scores into
    /// weights exp(score - max) in place.
    @inline(__always)
    static func updateSoftmax(_ s: TiledScratch, vector v: Int, keys: Int, headDim d: Int, keyTile: Int) {
        let row = UnsafeMutableRawPointer(s.scores + v * keyTile)
        // Two running maxima (and sums below) halve the chains of dependent operations.
        var max0 = SIMD8<Float>(repeating: -.infinity), max1 = max0
        var k = 0
        while k + 64 <= keys * 4 {
            max0 = larger(max0, row.loadUnaligned(fromByteOffset: k, as: SIMD8<Float>.self))
            max1 = larger(max1, row.loadUnaligned(fromByteOffset: k + 32, as: SIMD8<Float>.self))
            k &+= 64
        }
        if k < keys * 4 { max0 = larger(max0, row.loadUnaligned(fromByteOffset: k, as: SIMD8<Float>.self)) }
        let top = maxLane(larger(max0, max1))
        guard top > -.infinity else {
            // Every key of the tile is hidden from this vector: it adds nothing.
            (s.scores + v * keyTile).update(repeating: 0, count: keys)
            return
        }
        let previous = s.maximum[v]
        if top > previous {
            if previous > -.infinity {
                let shrink = expf(previous - top)
                s.sum[v] *= shrink
                let acc = UnsafeMutableRawPointer(s.accumulator + v * d)
                let factor = SIMD8<Float>(repeating: shrink)
                for x in stride(from: 0, to: d * 4, by: 32) {
                    acc.storeBytes(of: acc.loadUnaligned(fromByteOffset: x, as: SIMD8<Float>.self) * factor,
                                   toByteOffset: x, as: SIMD8<Float>.self)
                }
            }
            s.maximum[v] = top
        }
        let maximum = SIMD8<Float>(repeating: s.maximum[v])
        var total0 = SIMD8<Float>(), total1 = SIMD8<Float>()
        k = 0
        while k + 64 <= keys * 4 {
            let weight0 = vectorExp(row.loadUnaligned(fromByteOffset: k, as: SIMD8<Float>.self) - maximum)
            let weight1 = vectorExp(row.loadUnaligned(fromByteOffset: k + 32, as: SIMD8<Float>.self) - maximum)
            row.storeBytes(of: weight0, toByteOffset: k, as: SIMD8<Float>.self)
            row.storeBytes(of: weight1, toByteOffset: k + 32, as: SIMD8<Float>.self)
            total0 += weight0
            total1 += weight1
            k &+= 64
        }
        if k < keys * 4 {
            let weight = vectorExp(row.loadUnaligned(fromByteOffset: k, as: SIMD8<Float>.self) - maximum)
            row.storeBytes(of: weight, toByteOffset: k, as: SIMD8<Float>.self)
            total0 += weight
        }
        s.sum[v] += sumLanes(total0 + total1)
    }

    /// accumulator[v] += sum over k of weights[v][k] * V[k], four vectors and 16 (then 8) dims at a time.
    @inline(__always)
    static func accumulateTile(_ s: TiledScratch, vectors: Int, keys: Int, headDim d: Int, keyTile: Int) {
        for v in stride(from: 0, to: vectors, by: 4) {
            let weights = UnsafeRawPointer(s.scores + v * keyTile)
            let acc = UnsafeMutableRawPointer(s.accumulator + v * d)
            var x = 0
            while x + 16 <= d {
                accumulate4x16(acc + 4 * x, accStride: d * 4, weights: weights, weightStride: keyTile * 4,
                               values: s.valueRows, keys: keys, byteOffset: 4 * x)
                x += 16
            }
            if x < d {
                accumulate4x8(acc + 4 * x, accStride: d * 4, weights: weights, weightStride: keyTile * 4,
                              values: s.valueRows, keys: keys, byteOffset: 4 * x)
            }
        }
    }

    /// Four accumulator rows x 16 dims held in registers over all keys of a tile.
    @inline(__always)
    static func accumulate4x16(_ acc: UnsafeMutableRawPointer, accStride: Int, weights: UnsafeRawPointer, weightStride: Int,
                               values: UnsafeMutablePointer<UnsafeRawPointer>, keys: Int, byteOffset: Int) {
        var c00 = acc.loadUnaligned(as: SIMD8<Float>.self)
        var c01 = acc.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
        var c10 = acc.loadUnaligned(fromByteOffset: accStride, as: SIMD8<Float>.self)
        var c11 = acc.loadUnaligned(fromByteOffset: accStride + 32, as: SIMD8<Float>.self)
        var c20 = acc.loadUnaligned(fromByteOffset: 2 * accStride, as: SIMD8<Float>.self)
        var c21 = acc.loadUnaligned(fromByteOffset: 2 * accStride + 32, as: SIMD8<Float>.self)
        var c30 = acc.loadUnaligned(fromByteOffset: 3 * accStride, as: SIMD8<Float>.self)
        var c31 = acc.loadUnaligned(fromByteOffset: 3 * accStride + 32, as: SIMD8<Float>.self)
        let p0 = weights.assumingMemoryBound(to: Float.self), p1 = (weights + weightStride).assumingMemoryBound(to: Float.self)
        let p2 = (weights + 2 * weightStride).assumingMemoryBound(to: Float.self)
        let p3 = (weights + 3 * weightStride).assumingMemoryBound(to: Float.self)
        for k in 0..<keys {
            let value = values[k] + byteOffset
            let v0 = value.loadUnaligned(as: SIMD8<Float>.self)
            let v1 = value.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
            let w0 = SIMD8<Float>(repeating: p0[k]), w1 = SIMD8<Float>(repeating: p1[k])
            let w2 = SIMD8<Float>(repeating: p2[k]), w3 = SIMD8<Float>(repeating: p3[k])
            c00 = c00.addingProduct(w0, v0); c01 = c01.addingProduct(w0, v1)
            c10 = c10.addingProduct(w1, v0); c11 = c11.addingProduct(w1, v1)
            c20 = c20.addingProduct(w2, v0); c21 = c21.addingProduct(w2, v1)
            c30 = c30.addingProduct(w3, v0); c31 = c31.addingProduct(w3, v1)
        }
        acc.storeBytes(of: c00, as: SIMD8<Float>.self)
        acc.storeBytes(of: c01, toByteOffset: 32, as: SIMD8<Float>.self)
        acc.storeBytes(of: c10, toByteOffset: accStride, as: SIMD8<Float>.self)
        acc.storeBytes(of: c11, toByteOffset: accStride + 32, as: SIMD8<Float>.self)
        acc.storeBytes(of: c20, toByteOffset: 2 * accStride, as: SIMD8<Float>.self)
        acc.storeBytes(of: c21, toByteOffset: 2 * accStride + 32, as: SIMD8<Float>.self)
        acc.storeBytes(of: c30, toByteOffset: 3 * accStride, as: SIMD8<Float>.self)
        acc.storeBytes(of: c31, toByteOffset: 3 * accStride + 32, as: SIMD8<Float>.self)
    }

    /// `accumulate4x16` for the last 8 dims of a head dim that is an odd multiple of 8.
    @inline(__always)
    static func accumulate4x8(_ acc: UnsafeMutableRawPointer, accStride: Int, weights: UnsafeRawPointer, weightStride: Int,
                              values: UnsafeMutablePointer<UnsafeRawPointer>, keys: Int, byteOffset: Int) {
        var c0 = acc.loadUnaligned(as: SIMD8<Float>.self)
        var c1 = acc.loadUnaligned(fromByteOffset: accStride, as: SIMD8<Float>.self)
        var c2 = acc.loadUnaligned(fromByteOffset: 2 * accStride, as: SIMD8<Float>.self)
        var c3 = acc.loadUnaligned(fromByteOffset: 3 * accStride, as: SIMD8<Float>.self)
        let p0 = weights.assumingMemoryBound(to: Float.self), p1 = (weights + weightStride).assumingMemoryBound(to: Float.self)
        let p2 = (weights + 2 * weightStride).assumingMemoryBound(to: Float.self)
        let p3 = (weights + 3 * weightStride).assumingMemoryBound(to: Float.self)
        for k in 0..<keys {
            let v0 = (values[k] + byteOffset).loadUnaligned(as: SIMD8<Float>.self)
            c0 = c0.addingProduct(SIMD8(repeating: p0[k]), v0)
            c1 = c1.addingProduct(SIMD8(repeating: p1[k]), v0)
            c2 = c2.addingProduct(SIMD8(repeating: p2[k]), v0)
            c3 = c3.addingProduct(SIMD8(repeating: p3[k]), v0)
        }
        acc.storeBytes(of: c0, as: SIMD8<Float>.self)
        acc.storeBytes(of: c1, toByteOffset: accStride, as: SIMD8<Float>.self)
        acc.storeBytes(of: c2, toByteOffset: 2 * accStride, as: SIMD8<Float>.self)
        acc.storeBytes(of: c3, toByteOffset: 3 * accStride, as: SIMD8<Float>.self)
    }

    /// Combines the partial (max, sum, accumulator) of a unit's key splits into its output rows.
    static func mergePartials(_ p: AttentionParameters, _ request: AttentionRequest, _ merge: TiledMerge,
                              partials: UnsafeMutablePointer<Float>, slotFloats: Int, output: UnsafeMutablePointer<Float>) {
        let d = p.headDim, group = p.groupSize
        for i in 0..<merge.rows {
            let row = request.queryStart + merge.firstRow + i
            for h in 0..<group {
                let v = i * group + h
                let target = output + (row * p.queryHeads + merge.kvHead * group + h) * d
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

    /// e^x lane by lane for x <= 88, within about 2e-7 relative; 0 below about -87.7 (and for
    /// -infinity). e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2, where a degree-6
    /// Taylor polynomial is within 2e-7.
    @inline(__always)
    static func vectorExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        // From -88 on, n rounds to -127, whose power of two below is the bit pattern of +0.
        let clamped = larger(x, SIMD8(repeating: -88))
        // Adding 1.5 * 2^23 rounds to an integer and leaves it in the low mantissa bits.
        let shifter = SIMD8<Float>(repeating: 12_582_912)
        let t = shifter.addingProduct(clamped, SIMD8(repeating: 1.442_695_04))
        let n = t - shifter
        // ln 2 in two parts (the first exact in few bits), so r keeps float precision.
        var r = clamped.addingProduct(n, SIMD8(repeating: -0.693_145_751_953_125))
        r = r.addingProduct(n, SIMD8(repeating: -1.428_606_765_330_187e-6))
        var poly = SIMD8<Float>(repeating: 1.0 / 720)
        poly = SIMD8(repeating: 1.0 / 120).addingProduct(poly, r)
        poly = SIMD8(repeating: 1.0 / 24).addingProduct(poly, r)
        poly = SIMD8(repeating: 1.0 / 6).addingProduct(poly, r)
        poly = SIMD8(repeating: 0.5).addingProduct(poly, r)
        poly = SIMD8(repeating: 1).addingProduct(poly, r)
        poly = SIMD8(repeating: 1).addingProduct(poly, r)
        let exponent = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(shifter, to: SIMD8<Int32>.self)
        return poly * unsafeBitCast((exponent &+ 127) &<< 23, to: SIMD8<Float>.self)
    }

    /// The lane-wise larger of `a` and `b` (either one where they are equal), through the sign of
    /// a - b: the standard library's pointwiseMax goes lane by lane. Infinities compare right
    /// (a - b is then infinite or, for equal infinities, either is the answer).
    @inline(__always)
    static func larger(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        let takeB = unsafeBitCast(a - b, to: SIMD8<Int32>.self) &>> 31
        let aBits = unsafeBitCast(a, to: SIMD8<Int32>.self), bBits = unsafeBitCast(b, to: SIMD8<Int32>.self)
        return unsafeBitCast((aBits & ~takeB) | (bBits & takeB), to: SIMD8<Float>.self)
    }

    @inline(__always)
    static func maxLane(_ v: SIMD8<Float>) -> Float {
        let four = larger(v, SIMD8(lowHalf: v.highHalf, highHalf: v.lowHalf)).lowHalf
        return max(max(four[0], four[1]), max(four[2], four[3]))
    }

    @inline(__always)
    static func sumLanes(_ v: SIMD8<Float>) -> Float {
        let four = v.lowHalf + v.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }
}
