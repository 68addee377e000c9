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
/// Shared prefixes (cascade): requests whose first keys are one physical copy (chunks aliased
/// from the prefix cache, or the same pages) can be given as tiles. A tile's members share one
/// head block over keys [0, tokens): with a group of g query heads, 16 / g members fill the 16
/// rows, so the shared keys are read once for all of them instead of once each. Each member's
/// own keys [tokens, hi) stay a unit of its own; the member's pair merges both as splits.
///
/// Work comes in units: a tile's shared keys for one KV head, or one pair's own keys. Two ways
/// to give units to at most `maxCTAs` CTAs; the number of splits follows the real lengths and
/// the grid, never a reserved capacity:
/// - whole units (a single pass each): units go to CTAs longest first, each to the least
///   loaded CTA. Chosen when the busiest CTA then reads no more keys than an even split over
///   `saturatingCTAs` CTAs would give each: as many CTAs as it takes to keep DRAM busy, each
///   streaming at the rate one CTA can (so the batch stays DRAM-bound whatever the balance).
///   Without tiles every pair is one unit and nothing is merged.
/// - split (FlashDecoding): the keys of all units, in order, are cut into runs of
///   `tokensPerCTA` keys, one per CTA (the last shorter): every CTA streams the same number of
///   KV bytes. A unit cut by a run boundary is split.
/// A pair whose keys lie in more than one item (a split, or a tile's keys and its own) writes
/// partial results; the CTA that finishes its last split merges them (log-sum-exp weights).
public struct DecodeSchedule: Sendable, Equatable {
    /// A run of keys of one KV head and head block, for one pair or (`members` > 1) for the
    /// members of a tile, whose rows are in `DecodeSchedule.members[memberStart ..< +members]`.
    /// The inline row, pair and split fields are the single member's (for a tile: its first
    /// member's); `request` is whose K/V addresses the keys are read through (for a tile: its
    /// reader, `SharedPrefix.readerIndex`).
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
        public var members: Int32 = 1
        public var memberStart: Int32 = 0
    }

    /// One pair's place in a tile's item.
    public struct Member: Sendable, Equatable {
        public var request: Int32
        public var row: Int32
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

    /// Single-query requests (indices into the batch) whose keys [0, tokens) are one physical
    /// copy: read once for all of them. At most `membersPerTile(groupSize:)` requests, each
    /// with at least one key of its own past `tokens`.
    public struct SharedPrefix: Sendable, Equatable {
        public var requests: [Int]
        public var tokens: Int
        /// The request whose K/V addresses the kernel reads the shared keys through, when not the
        /// first member: any request of the batch holding the same bytes for [0, tokens). Tiles
        /// of one prefix that all read one request's view read one physical copy at one virtual
        /// address, where each tile's own first member might read another copy of the same
        /// content (a packed slab and its source) or the same copy at another address.
        public var reader: Int?
        public init(requests: [Int], tokens: Int, reader: Int? = nil) {
            self.requests = requests
            self.tokens = tokens
            self.reader = reader == requests.first ? nil : reader
        }
        /// The request the shared keys are read through.
        public var readerIndex: Int { reader ?? requests[0] }
    }

    public static let rowsPerHeadBlock = 16
    /// Bytes of one item in the kernel's table (`kernelItems`).
    public static let kernelItemBytes = 64
    /// Bytes of one member entry of a tile's item in the kernel's table.
    public static let kernelMemberBytes = 16

    /// Requests a tile can hold for a group of `groupSize` query heads (1: no sharing; groups
    /// above 8 fill a head block alone).
    public static func membersPerTile(groupSize: Int) -> Int { max(1, rowsPerHeadBlock / max(1, groupSize)) }

    /// The most work items a schedule of `requests` single-query requests can hold: one per
    /// (request, KV head, head block) pair and one per tile and KV head (a tile has two
    /// members or more), plus one per CTA whose range starts inside a unit.
    public static func maxItems(requests: Int, kvHeads: Int, groupSize: Int, maxCTAs: Int) -> Int {
        let headBlocks = (groupSize + rowsPerHeadBlock - 1) / rowsPerHeadBlock
        let tiles = membersPerTile(groupSize: groupSize) > 1 ? requests / 2 : 0
        return maxCTAs + requests * kvHeads * headBlocks + tiles * kvHeads
    }

    /// The most member entries (tiles' rows) such a schedule can hold: each request's pair of
    /// each KV head in one tile, plus up to 16 again for each CTA boundary that cuts a tile.
    public static func maxMembers(requests: Int, kvHeads: Int, groupSize: Int, maxCTAs: Int) -> Int {
        membersPerTile(groupSize: groupSize) > 1 ? requests * kvHeads + rowsPerHeadBlock * maxCTAs : 0
    }

    /// The most partial slots such a schedule can use: one per item and member.
    public static func maxPartialSlots(requests: Int, kvHeads: Int, groupSize: Int, maxCTAs: Int) -> Int {
        maxItems(requests: requests, kvHeads: kvHeads, groupSize: groupSize, maxCTAs: maxCTAs)
            + maxMembers(requests: requests, kvHeads: kvHeads, groupSize: groupSize, maxCTAs: maxCTAs)
    }

    /// Items in CTA order: CTA c runs items[ctaItemOffsets[c] ..< ctaItemOffsets[c + 1]].
    public var items: [Item]
    public var ctaItemOffsets: [Int32]
    /// The rows of tiles' items (`Item.memberStart`).
    public var members: [Member]
    public var pairs: Int
    /// Pairs split over more than one item, and the partial slots they use.
    public var splitPairs: Int
    public var partialSlots: Int
    public var headBlocks: Int
    /// Keys per CTA of the split (in whole-unit mode: the busiest CTA's keys).
    public var tokensPerCTA: Int
    /// Keys read, summed over units (each pair's visible keys, a tile's shared keys once).
    public var totalKeys: Int
    /// Keys the tiles spare: what every member would have read of the shared keys, less one read.
    public var sharedKeysSaved: Int
    /// Tiles used (each once per KV head).
    public var tiles: Int
    /// Whether units were given whole to CTAs (no cuts).
    public var wholePairs: Bool

    public var ctas: Int { ctaItemOffsets.count - 1 }

    /// - Parameters:
    ///   - maxCTAs: the grid (multiprocessors x resident CTAs per multiprocessor).
    ///   - minTokensPerCTA: below this many keys per CTA, fewer CTAs are used (split mode).
    ///   - saturatingCTAs: CTAs that keep DRAM busy; 0 never gives whole units.
    ///   - sharedPrefixes: tiles of requests whose first keys are one copy. Ignored with a
    ///     sliding window or a group of more than 8 query heads (a head block has no room).
    public init(requests: [Request], queryHeads: Int, kvHeads: Int, window: Int?, maxCTAs: Int, minTokensPerCTA: Int = 64,
                saturatingCTAs: Int = 0, sharedPrefixes: [SharedPrefix] = []) {
        precondition(queryHeads > 0 && kvHeads > 0 && queryHeads % kvHeads == 0, "query heads must be a multiple of KV heads")
        precondition(maxCTAs >= 1 && minTokensPerCTA >= 1 && saturatingCTAs >= 0, "bad grid")
        let group = queryHeads / kvHeads
        headBlocks = (group + Self.rowsPerHeadBlock - 1) / Self.rowsPerHeadBlock
        let headSlots = kvHeads * headBlocks
        precondition(headSlots < Int(Int32.max), "too many heads")
        let perTile = Self.membersPerTile(groupSize: group)
        let tilesUsed = window == nil && perTile > 1 ? sharedPrefixes.filter { $0.requests.count > 1 } : []

        // Every pair, in order: (request, row, head slot, lo, hi).
        var pairList: [(request: Int32, row: Int32, slot: Int32, lo: Int, hi: Int)] = []
        var firstPair = [Int](repeating: -1, count: requests.count)
        for (index, r) in requests.enumerated() where r.queryCount > 0 {
            firstPair[index] = pairList.count
            for i in 0..<r.queryCount {
                let (lo, hi) = Self.keyRange(length: r.length, queryCount: r.queryCount, query: i, window: window)
                precondition(hi < Int(Int32.max) && r.queryStart + i < Int(Int32.max), "request too long")
                for slot in 0..<headSlots {
                    pairList.append((Int32(index), Int32(r.queryStart + i), Int32(slot), lo, hi))
                }
            }
        }
        pairs = pairList.count

        // Units: each tile's shared keys per KV head, then every pair's own keys. A unit's pairs
        // are unitPairs[unitStart[u] ..< unitStart[u + 1]].
        var unitLo: [Int] = [], unitHi: [Int] = [], unitStart: [Int] = [0], unitPairs: [Int32] = []
        // The request a tile's units read their keys through (the tiles' units come first).
        var unitReader: [Int32] = []
        var ownFrom = [Int](repeating: 0, count: pairs)  // first key of each pair's own unit
        var inTile = [Bool](repeating: false, count: requests.count)
        var saved = 0
        for tile in tilesUsed {
            precondition(tile.requests.count <= perTile, "a tile of \(tile.requests.count) requests; a group of \(group) holds \(perTile)")
            precondition(tile.tokens >= 1, "a shared prefix needs a key")
            for index in tile.requests {
                precondition(requests.indices.contains(index) && !inTile[index], "request \(index) is in no batch slot or in two tiles")
                precondition(requests[index].queryCount == 1 && tile.tokens < requests[index].length,
                             "a tile member has one query and keys of its own past the shared ones")
                inTile[index] = true
            }
            precondition(requests.indices.contains(tile.readerIndex) && requests[tile.readerIndex].length >= tile.tokens,
                         "a tile's reader holds its shared keys")
            for slot in 0..<headSlots {
                unitLo.append(0)
                unitHi.append(tile.tokens)
                unitReader.append(Int32(tile.readerIndex))
                for index in tile.requests {
                    let p = firstPair[index] + slot
                    unitPairs.append(Int32(p))
                    ownFrom[p] = tile.tokens
                }
                unitStart.append(unitPairs.count)
            }
            saved += (tile.requests.count - 1) * tile.tokens * headSlots
        }
        tiles = tilesUsed.count
        sharedKeysSaved = saved
        for (p, pair) in pairList.enumerated() {
            let lo = max(pair.lo, ownFrom[p])
            guard lo < pair.hi else { continue }
            unitLo.append(lo)
            unitHi.append(pair.hi)
            unitPairs.append(Int32(p))
            unitStart.append(unitPairs.count)
        }
        let units = unitLo.count
        var total = 0
        for u in 0..<units { total += unitHi[u] - unitLo[u] }
        totalKeys = total

        // Pieces (unit, lo, hi) in item order, and the CTA boundaries.
        var pieces: [(unit: Int, lo: Int, hi: Int)] = []
        var offsets: [Int32] = [0]
        if saturatingCTAs > 0, units > 0,
           let bins = Self.longestFirst((0..<units).map { unitHi[$0] - unitLo[$0] }, bins: min(units, maxCTAs)),
           bins.makespan <= (total + saturatingCTAs - 1) / saturatingCTAs {
            // Whole units, longest first to the least loaded CTA, when that stays DRAM-bound.
            for bin in bins.members {
                for u in bin { pieces.append((u, unitLo[u], unitHi[u])) }
                offsets.append(Int32(pieces.count))
            }
            tokensPerCTA = bins.makespan
            wholePairs = true
        } else {
            var quota = max(minTokensPerCTA, (total + maxCTAs - 1) / maxCTAs)
            quota = (quota + 15) / 16 * 16
            tokensPerCTA = quota
            wholePairs = false
            var used = 0
            for u in 0..<units {
                var position = unitLo[u]
                while position < unitHi[u] {
                    let take = min(unitHi[u] - position, quota - used)
                    pieces.append((u, position, position + take))
                    position += take
                    used += take
                    if used == quota {
                        offsets.append(Int32(pieces.count))
                        used = 0
                    }
                }
            }
            if used > 0 { offsets.append(Int32(pieces.count)) }
        }

        // Splits: each pair's pieces, numbered in item order; partial slots for pairs of several.
        var count = [Int32](repeating: 0, count: pairs)
        for piece in pieces {
            for k in unitStart[piece.unit]..<unitStart[piece.unit + 1] { count[Int(unitPairs[k])] += 1 }
        }
        var firstSlot = [Int32](repeating: 0, count: pairs)
        var slots = 0, splitPairs = 0
        for p in 0..<pairs where count[p] > 1 {
            precondition(count[p] < 1 << 15, "a pair split \(count[p]) ways")
            firstSlot[p] = Int32(slots)
            slots += Int(count[p])
            splitPairs += 1
        }
        var next = [Int32](repeating: 0, count: pairs)
        var items: [Item] = []
        var members: [Member] = []
        items.reserveCapacity(pieces.count)
        for piece in pieces {
            let range = unitStart[piece.unit]..<unitStart[piece.unit + 1]
            let p0 = Int(unitPairs[range.lowerBound])
            let pair = pairList[p0]
            var item = Item(request: piece.unit < unitReader.count ? unitReader[piece.unit] : pair.request, row: pair.row,
                            headSlot: pair.slot, start: Int32(piece.lo), end: Int32(piece.hi),
                            pair: Int32(p0), firstSlot: firstSlot[p0], split: next[p0], splits: count[p0])
            if range.count > 1 {
                item.members = Int32(range.count)
                item.memberStart = Int32(members.count)
            }
            for k in range {
                let p = Int(unitPairs[k])
                if range.count > 1 {
                    members.append(Member(request: pairList[p].request, row: pairList[p].row, pair: Int32(p), firstSlot: firstSlot[p],
                                          split: next[p], splits: count[p]))
                }
                next[p] += 1
            }
            items.append(item)
        }
        self.items = items
        self.members = members
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

    /// The kernel's item table: 64 bytes an item (little-endian): K address, V address (the
    /// request's K and V bases, or its block table and 0 for the paged kernel; a tile's first
    /// member's), row, head slot, start, end, pair, first partial slot, split | splits << 16,
    /// next, members, byte offset of the item's member entries from the table's start, 8 bytes
    /// of padding. CTA c starts at item c (no lookup before its first load); its further items
    /// follow all first items, each linked from the one before by `next` (-1: the CTA's last).
    /// A row of -1 marks an empty item (a CTA of a fixed grid with no work). The member entries
    /// of tiles' items follow all items, 16 bytes each: row, pair, first partial slot,
    /// split | splits << 16.
    public func kernelItems(grid: Int? = nil, addresses: (_ request: Int) -> (UInt64, UInt64)) -> [UInt8] {
        let bytes = kernelItemsBytes(grid: grid ?? ctas)
        return [UInt8](unsafeUninitializedCapacity: bytes) { buffer, initialized in
            if let base = buffer.baseAddress { writeKernelItems(to: UnsafeMutableRawPointer(base), grid: grid, addresses: addresses) }
            initialized = bytes
        }
    }

    /// Bytes of `kernelItems`.
    public var kernelItemsBytes: Int { kernelItemsBytes(grid: ctas) }

    /// Bytes of the item table for a launch of `grid` CTAs (at least `ctas`): CTAs past the
    /// plan's own get an empty item each.
    public func kernelItemsBytes(grid: Int) -> Int {
        precondition(grid >= ctas, "a grid of \(grid) CTAs is smaller than the plan's \(ctas)")
        return (items.count + grid - ctas) * Self.kernelItemBytes + members.count * Self.kernelMemberBytes
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
        let membersAt = (items.count + grid - ctas) * Self.kernelItemBytes
        precondition(membersAt + members.count * Self.kernelMemberBytes < Int(Int32.max), "item table too large")
        for (k, member) in members.enumerated() {
            let at = destination + membersAt + k * Self.kernelMemberBytes
            at.storeBytes(of: member.row.littleEndian, as: Int32.self)
            at.storeBytes(of: member.pair.littleEndian, toByteOffset: 4, as: Int32.self)
            at.storeBytes(of: member.firstSlot.littleEndian, toByteOffset: 8, as: Int32.self)
            at.storeBytes(of: (member.split | (member.splits << 16)).littleEndian, toByteOffset: 12, as: Int32.self)
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
                at.storeBytes(of: item.members.littleEndian, toByteOffset: 48, as: Int32.self)
                let memberOffset = item.members > 1 ? Int32(membersAt + Int(item.memberStart) * Self.kernelMemberBytes) : 0
                at.storeBytes(of: memberOffset.littleEndian, toByteOffset: 52, as: Int32.self)
                at.storeBytes(of: UInt64(0), toByteOffset: 56, as: UInt64.self)
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
