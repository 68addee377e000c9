import Support
import VTensor

/// n / d by a multiply and a shift, for 0 <= n < 2^31 (CUTLASS's FastDivmod rule):
/// shift = 31 + ceil(log2 d), multiplier = ceil(2^shift / d), n / d = (n * multiplier) >> shift.
/// The kernels divide token indices by tokens-per-block (91 for SmolLM2: not a power of two).
public struct DecodeFastDivisor: Sendable, Equatable {
    public let divisor: UInt32
    public let multiplier: UInt32
    public let shift: UInt32

    public init(_ divisor: Int) {
        precondition(divisor >= 1 && divisor < 1 << 31, "divisor \(divisor) out of range")
        var log2 = 0
        while (1 << log2) < divisor { log2 += 1 }
        let p = 31 + log2
        let m = ((UInt64(1) << UInt64(p)) + UInt64(divisor) - 1) / UInt64(divisor)
        precondition(m <= UInt64(UInt32.max), "multiplier overflow")
        self.divisor = UInt32(divisor)
        self.multiplier = UInt32(m)
        self.shift = UInt32(p)
    }

    /// What the kernel computes.
    @inline(__always)
    public func divide(_ n: UInt32) -> UInt32 {
        UInt32(truncatingIfNeeded: (UInt64(n) * UInt64(multiplier)) >> UInt64(shift))
    }
}

/// How a decode batch is cut into the work of a persistent grid (host only, no GPU).
///
/// A pair is (request, query row, KV head, head block); it attends to keys [lo, hi) where
/// hi = position + 1 and lo = max(0, hi - window). Head blocks hold up to 16 query heads of one
/// KV head's group (the mma M): groups above 16 take several blocks, each re-reading the KV.
///
/// Two ways to give pairs to at most `maxCTAs` CTAs; the number of splits follows the real
/// lengths and the grid, never a reserved capacity:
/// - whole pairs (a single pass, no merge): pairs go to CTAs longest first, each to the least
///   loaded CTA. Chosen when the busiest CTA then reads no more keys than an even split over
///   `saturatingCTAs` CTAs would give each: as many CTAs as it takes to keep DRAM busy, each
///   streaming at the rate one CTA can (so the batch stays DRAM-bound whatever the balance).
/// - split (FlashDecoding): the keys of all pairs, in order, are cut into runs of
///   `tokensPerCTA` keys, one per CTA (the last shorter): every CTA streams the same number of
///   KV bytes. A pair cut by a run boundary is split; the CTA that finishes its last split
///   merges the splits (log-sum-exp weights).
public struct DecodeSchedule: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        public var request: Int32
        public var row: Int32
        public var headSlot: Int32
        public var start: Int32
        public var end: Int32
        public var pair: Int32
        public var firstSlot: Int32
        public var split: Int32
        public var splits: Int32
    }

    /// One request as the schedule sees it.
    public struct Request: Sendable, Equatable {
        public var length: Int
        public var queryStart: Int
        public var queryCount: Int
        public init(length: Int, queryStart: Int, queryCount: Int) {
            precondition(queryCount >= 0 && queryCount <= length, "queries must be the last tokens of the KV")
            self.length = length
            self.queryStart = queryStart
            self.queryCount = queryCount
        }
    }

    public static let rowsPerHeadBlock = 16
    /// Bytes of one item in the kernel's table (`kernelItems`).
    public static let kernelItemBytes = 48

    /// The most work items a schedule of `requests` single-query requests can hold: one per
    /// (request, KV head, head block) pair, plus one per CTA whose range starts inside a pair.
    public static func maxItems(requests: Int, kvHeads: Int, groupSize: Int, maxCTAs: Int) -> Int {
        let headBlocks = (groupSize + rowsPerHeadBlock - 1) / rowsPerHeadBlock
        return maxCTAs + requests * kvHeads * headBlocks
    }

    /// Items in CTA order: CTA c runs items[ctaItemOffsets[c] ..< ctaItemOffsets[c + 1]].
    public var items: [Item]
    public var ctaItemOffsets: [Int32]
    public var pairs: Int
    /// Pairs split over more than one item, and the partial slots they use.
    public var splitPairs: Int
    public var partialSlots: Int
    public var headBlocks: Int
    /// Keys per CTA of the split (in whole-pair mode: the busiest CTA's keys).
    public var tokensPerCTA: Int
    /// Keys summed over pairs (each pair's visible keys; a head block counts its own).
    public var totalKeys: Int
    /// Whether pairs were given whole to CTAs (no splits).
    public var wholePairs: Bool

    public var ctas: Int { ctaItemOffsets.count - 1 }

    /// - Parameters:
    ///   - maxCTAs: the grid (multiprocessors x resident CTAs per multiprocessor).
    ///   - minTokensPerCTA: below this many keys per CTA, fewer CTAs are used (split mode).
    ///   - saturatingCTAs: CTAs that keep DRAM busy; 0 never gives whole pairs.
    public init(requests: [Request], queryHeads: Int, kvHeads: Int, window: Int?, maxCTAs: Int, minTokensPerCTA: Int = 64,
                saturatingCTAs: Int = 0) {
        precondition(queryHeads > 0 && kvHeads > 0 && queryHeads % kvHeads == 0, "query heads must be a multiple of KV heads")
        precondition(maxCTAs >= 1 && minTokensPerCTA >= 1 && saturatingCTAs >= 0, "bad grid")
        let group = queryHeads / kvHeads
        headBlocks = (group + Self.rowsPerHeadBlock - 1) / Self.rowsPerHeadBlock
        let headSlots = kvHeads * headBlocks
        precondition(headSlots < Int(Int32.max), "too many heads")

        // Every pair, in order: (request, row, head slot, lo, hi).
        var pairList: [(request: Int32, row: Int32, slot: Int32, lo: Int, hi: Int)] = []
        var total = 0
        for (index, r) in requests.enumerated() where r.queryCount > 0 {
            for i in 0..<r.queryCount {
                let (lo, hi) = Self.keyRange(length: r.length, queryCount: r.queryCount, query: i, window: window)
                precondition(hi < Int(Int32.max) && r.queryStart + i < Int(Int32.max), "request too long")
                for slot in 0..<headSlots {
                    pairList.append((Int32(index), Int32(r.queryStart + i), Int32(slot), lo, hi))
                    total += hi - lo
                }
            }
        }
        totalKeys = total
        pairs = pairList.count

        var items: [Item] = []
        var offsets: [Int32] = [0]
        // Whole pairs, longest first to the least loaded CTA, when that stays DRAM-bound.
        if saturatingCTAs > 0, !pairList.isEmpty,
           let bins = Self.longestFirst(pairList.map { $0.hi - $0.lo }, bins: min(pairList.count, maxCTAs)),
           bins.makespan <= (total + saturatingCTAs - 1) / saturatingCTAs {
            for members in bins.members {
                for p in members {
                    let pair = pairList[p]
                    items.append(Item(request: pair.request, row: pair.row, headSlot: pair.slot, start: Int32(pair.lo),
                                      end: Int32(pair.hi), pair: Int32(p), firstSlot: 0, split: 0, splits: 1))
                }
                offsets.append(Int32(items.count))
            }
            self.items = items
            ctaItemOffsets = offsets
            splitPairs = 0
            partialSlots = 0
            tokensPerCTA = bins.makespan
            wholePairs = true
            return
        }

        var quota = max(minTokensPerCTA, (total + maxCTAs - 1) / maxCTAs)
        quota = (quota + 15) / 16 * 16
        tokensPerCTA = quota
        wholePairs = false
        var pairFirstItem: [Int] = []
        var used = 0
        for (p, pair) in pairList.enumerated() {
            pairFirstItem.append(items.count)
            var position = pair.lo
            var split: Int32 = 0
            while position < pair.hi {
                let take = min(pair.hi - position, quota - used)
                items.append(Item(request: pair.request, row: pair.row, headSlot: pair.slot, start: Int32(position),
                                  end: Int32(position + take), pair: Int32(p), firstSlot: 0, split: split, splits: 0))
                split += 1
                position += take
                used += take
                if used == quota {
                    offsets.append(Int32(items.count))
                    used = 0
                }
            }
        }
        if used > 0 { offsets.append(Int32(items.count)) }
        // Split counts and partial slots, pair by pair.
        var slots = 0
        var splitPairs = 0
        pairFirstItem.append(items.count)
        for p in 0..<pairs {
            let range = pairFirstItem[p]..<pairFirstItem[p + 1]
            let count = range.count
            precondition(count < 1 << 15, "a pair split \(count) ways")
            for k in range {
                items[k].splits = Int32(count)
                items[k].firstSlot = count > 1 ? Int32(slots) : 0
            }
            if count > 1 {
                slots += count
                splitPairs += 1
            }
        }
        self.items = items
        ctaItemOffsets = offsets
        self.splitPairs = splitPairs
        partialSlots = slots
    }

    /// Longest processing time first: each length, longest first, to the least loaded bin.
    /// Returns the bins' members (indices into `lengths`) and the largest load.
    static func longestFirst(_ lengths: [Int], bins: Int) -> (members: [[Int]], makespan: Int)? {
        guard bins >= 1 else { return nil }
        let order = lengths.indices.sorted { lengths[$0] != lengths[$1] ? lengths[$0] > lengths[$1] : $0 < $1 }
        var members = [[Int]](repeating: [], count: bins)
        // Bins by (load, bin), least loaded first.
        var heap = MinHeap<(load: Int, bin: Int)>(by: { $0.load != $1.load ? $0.load < $1.load : $0.bin < $1.bin })
        for bin in 0..<bins { heap.push((0, bin)) }
        var makespan = 0
        for index in order {
            let top = heap.pop()!
            members[top.bin].append(index)
            heap.push((top.load + lengths[index], top.bin))
            makespan = max(makespan, top.load + lengths[index])
        }
        return (members.filter { !$0.isEmpty }, makespan)
    }

    /// Keys [lo, hi) visible to query `query` (0-based among the request's queryCount) of a
    /// request of `length` tokens.
    public static func keyRange(length: Int, queryCount: Int, query: Int, window: Int?) -> (lo: Int, hi: Int) {
        let hi = length - queryCount + query + 1
        let lo = window.map { max(0, hi - $0) } ?? 0
        return (lo, hi)
    }

    /// The kernel's item table, 48 bytes an item (little-endian): K address, V address (the
    /// request's K and V bases, or its block table and 0 for the paged kernel), row, head slot,
    /// start, end, pair, first partial slot, split | splits << 16, next. CTA c starts at item c
    /// (no lookup before its first load); its further items follow all first items, each
    /// linked from the one before by `next` (-1: the CTA's last). A row of -1 marks an empty
    /// item (a CTA of a fixed grid with no work).
    public func kernelItems(grid: Int? = nil, addresses: (_ request: Int) -> (UInt64, UInt64)) -> [UInt8] {
        let bytes = kernelItemsBytes(grid: grid ?? ctas)
        return [UInt8](unsafeUninitializedCapacity: bytes) { buffer, initialized in
            if let base = buffer.baseAddress { writeKernelItems(to: UnsafeMutableRawPointer(base), grid: grid, addresses: addresses) }
            initialized = bytes
        }
    }

    /// Bytes of `kernelItems`.
    public var kernelItemsBytes: Int { items.count * Self.kernelItemBytes }

    /// Bytes of the item table for a launch of `grid` CTAs (at least `ctas`): CTAs past the
    /// plan's own get an empty item each.
    public func kernelItemsBytes(grid: Int) -> Int {
        precondition(grid >= ctas, "a grid of \(grid) CTAs is smaller than the plan's \(ctas)")
        return (items.count + grid - ctas) * Self.kernelItemBytes
    }

    /// Writes `kernelItems` to `destination` (`kernelItemsBytes(grid:)` of writable memory)
    /// without building an array: the per-step host path writes every layer's table straight
    /// into its upload buffer. With `grid` above the plan's CTAs (a launch whose grid is fixed,
    /// as in a CUDA graph), CTAs `ctas..<grid` get an empty item (row -1: the kernel returns)
    /// and the further items follow all `grid` first items.
    public func writeKernelItems(to destination: UnsafeMutableRawPointer, grid: Int? = nil, addresses: (_ request: Int) -> (UInt64, UInt64)) {
        let grid = grid ?? ctas
        precondition(grid >= ctas, "a grid of \(grid) CTAs is smaller than the plan's \(ctas)")
        for c in ctas..<grid {
            let at = destination + c * Self.kernelItemBytes
            at.initializeMemory(as: UInt8.self, repeating: 0, count: Self.kernelItemBytes)
            at.storeBytes(of: Int32(-1).littleEndian, toByteOffset: 16, as: Int32.self)
            at.storeBytes(of: Int32(-1).littleEndian, toByteOffset: 44, as: Int32.self)
        }
        // Slot of each item: CTA c's first item at c, the others after all first items, in order.
        var nextFree = grid
        for c in 0..<ctas {
            let range = Int(ctaItemOffsets[c])..<Int(ctaItemOffsets[c + 1])
            var slot = c
            for k in range {
                let nextSlot = k + 1 < range.upperBound ? nextFree : -1
                if k + 1 < range.upperBound { nextFree += 1 }
                let item = items[k]
                let at = destination + slot * Self.kernelItemBytes
                let (a, b) = addresses(Int(item.request))
                at.storeBytes(of: a.littleEndian, as: UInt64.self)
                at.storeBytes(of: b.littleEndian, toByteOffset: 8, as: UInt64.self)
                at.storeBytes(of: item.row.littleEndian, toByteOffset: 16, as: Int32.self)
                at.storeBytes(of: item.headSlot.littleEndian, toByteOffset: 20, as: Int32.self)
                at.storeBytes(of: item.start.littleEndian, toByteOffset: 24, as: Int32.self)
                at.storeBytes(of: item.end.littleEndian, toByteOffset: 28, as: Int32.self)
                at.storeBytes(of: item.pair.littleEndian, toByteOffset: 32, as: Int32.self)
                at.storeBytes(of: item.firstSlot.littleEndian, toByteOffset: 36, as: Int32.self)
                at.storeBytes(of: (item.split | (item.splits << 16)).littleEndian, toByteOffset: 40, as: Int32.self)
                at.storeBytes(of: Int32(nextSlot).littleEndian, toByteOffset: 44, as: Int32.self)
                slot = nextSlot
            }
        }
    }

    /// The largest number of keys any CTA reads (the critical path), for reports.
    public var maxKeysPerCTA: Int {
        (0..<ctas).map { c in
            items[Int(ctaItemOffsets[c])..<Int(ctaItemOffsets[c + 1])].reduce(0) { $0 + Int($1.end - $1.start) }
        }.max() ?? 0
    }
}
