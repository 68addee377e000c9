import Foundation
import Testing
@testable import Kernels
import VTensor

/// The cascade decode (tiles of requests whose first keys are one copy): the schedule's
/// structure, the kernel's item table, and a host run of the items as the kernel runs them.
@Suite struct DecodeCascadeTests {
    typealias Request = DecodeSchedule.Request
    typealias SharedPrefix = DecodeSchedule.SharedPrefix

    /// One piece of a pair's keys: an item alone or one member of a tile's item.
    struct Piece {
        var item: Int
        var request: Int32, row: Int32, headSlot: Int32, start: Int32, end: Int32
        var firstSlot: Int32, split: Int32, splits: Int32
        var members: Int32
    }

    static func pieces(_ s: DecodeSchedule) -> [Int32: [Piece]] {
        var byPair: [Int32: [Piece]] = [:]
        for (k, item) in s.items.enumerated() {
            if item.members == 1 {
                byPair[item.pair, default: []].append(Piece(item: k, request: item.request, row: item.row, headSlot: item.headSlot,
                                                             start: item.start, end: item.end, firstSlot: item.firstSlot,
                                                             split: item.split, splits: item.splits, members: 1))
            } else {
                for m in s.members[Int(item.memberStart)..<Int(item.memberStart + item.members)] {
                    byPair[m.pair, default: []].append(Piece(item: k, request: m.request, row: m.row, headSlot: item.headSlot,
                                                             start: item.start, end: item.end, firstSlot: m.firstSlot,
                                                             split: m.split, splits: m.splits, members: item.members))
                }
            }
        }
        return byPair
    }

    /// Every property the kernel relies on, with tiles.
    static func validate(_ s: DecodeSchedule, _ requests: [Request], tiles: [SharedPrefix], queryHeads: Int, kvHeads: Int, maxCTAs: Int) {
        let group = queryHeads / kvHeads
        let perTile = DecodeSchedule.membersPerTile(groupSize: group)
        #expect(s.ctas <= maxCTAs)
        #expect(s.ctaItemOffsets.first == 0 && Int(s.ctaItemOffsets.last!) == s.items.count)
        for c in 0..<s.ctas {
            let keys = s.items[Int(s.ctaItemOffsets[c])..<Int(s.ctaItemOffsets[c + 1])].reduce(0) { $0 + Int($1.end - $1.start) }
            #expect(keys <= s.tokensPerCTA)
        }
        let sharedOf = Dictionary(uniqueKeysWithValues: tiles.flatMap { t in t.requests.map { ($0, t) } })
        // A tile's item: its members are one tile's requests, the item reads through its reader.
        for item in s.items where item.members > 1 {
            let members = s.members[Int(item.memberStart)..<Int(item.memberStart + item.members)]
            #expect(Int(item.members) <= perTile)
            #expect(item.pair == members.first!.pair)
            let tile = sharedOf[Int(members.first!.request)]
            #expect(tile != nil && members.allSatisfy { sharedOf[Int($0.request)] == tile })
            #expect(Int(item.request) == tile?.readerIndex)
            #expect(Int(item.end) <= tile?.tokens ?? 0)
        }
        let byPair = pieces(s)
        var pairIndex: Int32 = 0
        var slotsSeen = Set<Int32>()
        for (index, r) in requests.enumerated() {
            for i in 0..<r.queryCount {
                let (lo, hi) = DecodeSchedule.keyRange(length: r.length, queryCount: r.queryCount, query: i, window: nil)
                for slot in 0..<(kvHeads * s.headBlocks) {
                    let list = (byPair[pairIndex] ?? []).sorted { $0.start < $1.start }
                    pairIndex += 1
                    #expect(!list.isEmpty)
                    guard let first = list.first else { continue }
                    #expect(list.allSatisfy { $0.request == Int32(index) && $0.row == Int32(r.queryStart + i) && $0.headSlot == Int32(slot) })
                    #expect(Int(first.start) == lo && Int(list.last!.end) == hi, "pair covers [lo, hi)")
                    #expect(zip(list, list.dropFirst()).allSatisfy { $0.end == $1.start } && list.allSatisfy { $0.start < $0.end })
                    #expect(Set(list.map(\.split)) == Set((0..<Int32(list.count))) && list.allSatisfy { Int($0.splits) == list.count })
                    if list.count > 1 {
                        for piece in list { #expect(slotsSeen.insert(piece.firstSlot + piece.split).inserted) }
                    }
                    // A tile member's shared keys come from its tile's items, its own from its own.
                    let shared = sharedOf[index]?.tokens ?? 0
                    #expect(list.allSatisfy { ($0.members > 1) == ($0.end <= Int32(shared)) })
                }
            }
        }
        #expect(Int(pairIndex) == s.pairs)
        #expect(slotsSeen.count == s.partialSlots && slotsSeen.allSatisfy { $0 >= 0 && Int($0) < s.partialSlots })
    }

    /// A batch of groups: each group's first `shared` tokens are one copy, then each request's own.
    static func groups(_ rng: inout SplitMix64, count: Int) -> (requests: [Request], blocks: [[UInt64]], tpb: Int) {
        let tpb = 16
        var requests: [Request] = [], blocks: [[UInt64]] = []
        var nextBlock: UInt64 = 1
        while requests.count < count {
            let size = 1 + Int(rng.next() % 7)
            let sharedBlocks = Int(rng.next() % 20)
            let head = (0..<sharedBlocks).map { nextBlock + UInt64($0) }
            nextBlock += UInt64(sharedBlocks) + 1
            for _ in 0..<min(size, count - requests.count) {
                let own = 1 + Int(rng.next() % 100)
                let length = sharedBlocks * tpb + own
                // Some members alias only part of the head.
                let aliased = rng.next() % 4 == 0 ? Int(rng.next() % UInt64(sharedBlocks + 1)) : sharedBlocks
                requests.append(Request(length: length, queryStart: requests.count, queryCount: 1))
                blocks.append(Array(head.prefix(aliased)))
            }
        }
        return (requests, blocks, tpb)
    }

    @Test func tilesCoverEveryPairExactly() {
        var rng = SplitMix64(seed: 12)
        for trial in 0..<300 {
            let (qh, kvh) = [(32, 8), (9, 3), (32, 32), (28, 4), (16, 2), (40, 1)][trial % 6]
            let (requests, blocks, tpb) = Self.groups(&rng, count: 1 + Int(rng.next() % 60))
            let perTile = DecodeSchedule.membersPerTile(groupSize: qh / kvh)
            let tiles = DecodeSchedule.sharedPrefixTiles(blocks: blocks, requests: requests, tokensPerBlock: tpb, membersPerTile: perTile,
                                                         minTokens: [16, 64][trial % 2])
            let maxCTAs = [1, 7, 132, 264, 100_000][trial % 5]
            let s = DecodeSchedule(requests: requests, queryHeads: qh, kvHeads: kvh, window: nil, maxCTAs: maxCTAs,
                                   minTokensPerCTA: [16, 64][trial % 2], saturatingCTAs: [0, 132, 8][trial % 3], sharedPrefixes: tiles)
            Self.validate(s, requests, tiles: perTile > 1 ? tiles : [], queryHeads: qh, kvHeads: kvh, maxCTAs: maxCTAs)
            let spared: Int = tiles.reduce(0) { (sum: Int, t: SharedPrefix) in sum + (t.requests.count - 1) * t.tokens }
            let saved = spared * kvh * s.headBlocks
            #expect(s.sharedKeysSaved == (perTile > 1 ? saved : 0))
            let visible: Int = requests.reduce(0) { (sum: Int, r: Request) in sum + r.length } * kvh * s.headBlocks
            #expect(s.totalKeys + s.sharedKeysSaved == visible, "keys read + keys spared = keys visible")
            let n = requests.count
            #expect(s.items.count <= DecodeSchedule.maxItems(requests: n, kvHeads: kvh, groupSize: qh / kvh, maxCTAs: maxCTAs))
            #expect(s.members.count <= DecodeSchedule.maxMembers(requests: n, kvHeads: kvh, groupSize: qh / kvh, maxCTAs: maxCTAs))
            #expect(s.partialSlots <= DecodeSchedule.maxPartialSlots(requests: n, kvHeads: kvh, groupSize: qh / kvh, maxCTAs: maxCTAs))
        }
    }

    @Test func tilesFollowTheLongestSharedPrefixes() {
        // Requests 0-3 share 8 blocks, 4 shares only the first 2 of them, 5 is alone, 6 has no blocks.
        let a: [UInt64] = [1, 2, 3, 4, 5, 6, 7, 8]
        let blocks = [a, a, Array(a.prefix(8)) + [99], a, [1, 2, 50, 51], [70, 71, 72], []]
        let requests = [200, 300, 200, 150, 100, 100, 100].enumerated().map { Request(length: $1, queryStart: $0, queryCount: 1) }
        let tiles = DecodeSchedule.sharedPrefixTiles(blocks: blocks, requests: requests, tokensPerBlock: 16, membersPerTile: 4, minTokens: 16)
        #expect(tiles.count == 1 && Set(tiles[0].requests) == [0, 1, 2, 3] && tiles[0].tokens == 128)
        // Two to a tile (group 8): neighbours in sorted order pair up (0 and 1, 3 and 2, whose
        // extra block sorts it last), both reading the 8 blocks through 0; 4 would spare only 32
        // keys and 5 shares nothing.
        let pairs = DecodeSchedule.sharedPrefixTiles(blocks: blocks, requests: requests, tokensPerBlock: 16, membersPerTile: 2, minTokens: 16)
        #expect(pairs == [SharedPrefix(requests: [0, 1], tokens: 128), SharedPrefix(requests: [3, 2], tokens: 128, reader: 0)])
        // A request shares at most all but its last key; below minTokens nothing is shared.
        let short = [Request(length: 20, queryStart: 0, queryCount: 1), Request(length: 40, queryStart: 1, queryCount: 1)]
        #expect(DecodeSchedule.sharedPrefixTiles(blocks: [[1, 2], [1, 2]], requests: short, tokensPerBlock: 16, membersPerTile: 4, minTokens: 16)
                == [SharedPrefix(requests: [0, 1], tokens: 19)])
        #expect(DecodeSchedule.sharedPrefixTiles(blocks: [[1, 2], [1, 2]], requests: short, tokensPerBlock: 16, membersPerTile: 4).isEmpty)
        // Different identities never share, whatever their tokens.
        #expect(DecodeSchedule.sharedPrefixTiles(blocks: [[1, 2], [3, 4]], requests: short, tokensPerBlock: 16, membersPerTile: 4, minTokens: 1).isEmpty)
        // No room in a head block (groups above 8): no tiles.
        #expect(DecodeSchedule.sharedPrefixTiles(blocks: [a, a], requests: Array(requests.prefix(2)), tokensPerBlock: 16,
                                                 membersPerTile: DecodeSchedule.membersPerTile(groupSize: 9)).isEmpty)
    }

    @Test func aTileReadsItsKeysOnce() {
        // 16 requests of 2,304 keys sharing 2,048, Llama-3-8B heads: 4 tiles of 4.
        let requests = (0..<16).map { Request(length: 2304, queryStart: $0, queryCount: 1) }
        let blocks = (0..<16).map { _ in (0..<128).map { UInt64($0 + 1) } }
        let tiles = DecodeSchedule.sharedPrefixTiles(blocks: blocks, requests: requests, tokensPerBlock: 16, membersPerTile: 4)
        #expect(tiles.count == 4 && tiles.allSatisfy { $0.requests.count == 4 && $0.tokens == 2048 })
        let plain = DecodeSchedule(requests: requests, queryHeads: 32, kvHeads: 8, window: nil, maxCTAs: 264, saturatingCTAs: 132)
        let cascade = DecodeSchedule(requests: requests, queryHeads: 32, kvHeads: 8, window: nil, maxCTAs: 264, saturatingCTAs: 132,
                                     sharedPrefixes: tiles)
        #expect(plain.totalKeys == 16 * 2304 * 8)
        #expect(cascade.totalKeys == (4 * 2048 + 16 * 256) * 8 && cascade.tiles == 4 && cascade.sharedKeysSaved == 12 * 2048 * 8)
        // A window, or no tiles given: the plain schedule.
        let windowed = DecodeSchedule(requests: requests, queryHeads: 32, kvHeads: 8, window: 4096, maxCTAs: 264, sharedPrefixes: tiles)
        #expect(windowed.tiles == 0 && windowed.members.isEmpty && windowed.totalKeys == plain.totalKeys)
    }

    /// Every tile of one prefix reads it through one request, the first of the order holding
    /// it (one physical copy at one address, whatever copy each tile's first member maps).
    @Test func tilesOfOnePrefixShareOneReader() {
        let head = (1...8).map { UInt64($0) }
        // 0-9 hold the whole head; 10-13 only its first 4 blocks; then 14 and 15 a head of their own.
        let blocks = (0..<10).map { _ in head } + (0..<4).map { _ in Array(head.prefix(4)) } + [[40, 41, 42], [40, 41, 42]]
        let requests = blocks.indices.map { Request(length: 16 * 9 + $0, queryStart: $0, queryCount: 1) }
        let tiles = DecodeSchedule.sharedPrefixTiles(blocks: blocks, requests: requests, tokensPerBlock: 16, membersPerTile: 4, minTokens: 16)
        #expect(tiles.flatMap(\.requests).count == 16)
        var readerOf: [[UInt64]: Int] = [:]
        for tile in tiles {
            let needed = (tile.tokens + 15) / 16
            let reader = tile.readerIndex
            // The reader names the tile's blocks as every member does; tiles naming them alike
            // share it.
            let names = Array(blocks[reader].prefix(needed))
            #expect(names.count == needed && tile.requests.allSatisfy { Array(blocks[$0].prefix(needed)) == names })
            #expect(readerOf[names, default: reader] == reader)
            readerOf[names] = reader
        }
        let whole = tiles.filter { $0.tokens == 128 }
        #expect(whole.count >= 2 && Set(whole.map(\.readerIndex)).count == 1)
        #expect(tiles.contains { $0.reader != nil })
        let other = tiles.first { $0.requests.contains(14) }
        #expect(other?.readerIndex == 14 && other?.reader == nil)
        // The schedule's tile items read through the reader.
        let s = DecodeSchedule(requests: requests, queryHeads: 32, kvHeads: 8, window: nil, maxCTAs: 64, sharedPrefixes: tiles)
        Self.validate(s, requests, tiles: tiles, queryHeads: 32, kvHeads: 8, maxCTAs: 64)
    }

    @Test func kernelTableCarriesTheMembers() {
        let requests = (0..<6).map { Request(length: 100 + $0, queryStart: 10 + $0, queryCount: 1) }
        let tiles = [SharedPrefix(requests: [1, 3, 4], tokens: 64), SharedPrefix(requests: [0, 5], tokens: 80)]
        for saturating in [0, 132] {
            let s = DecodeSchedule(requests: requests, queryHeads: 8, kvHeads: 2, window: nil, maxCTAs: 5, minTokensPerCTA: 16,
                                   saturatingCTAs: saturating, sharedPrefixes: tiles)
            let grid = s.ctas + 2
            let bytes = s.kernelItems(grid: grid) { (UInt64($0 + 1) << 32, UInt64($0 + 1) << 40) }
            let itemBytes = DecodeSchedule.kernelItemBytes
            #expect(bytes.count == (s.items.count + 2) * itemBytes + s.members.count * 16)
            func int(_ at: Int) -> Int32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: Int32.self) } }
            func u64(_ at: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) } }
            var seen = 0
            for c in 0..<grid {
                var slot = c
                var chain: [Int] = []
                while slot >= 0, int(slot * itemBytes + 16) >= 0 {
                    chain.append(slot)
                    slot = Int(int(slot * itemBytes + 44))
                }
                let expected = c < s.ctas ? Array(s.items[Int(s.ctaItemOffsets[c])..<Int(s.ctaItemOffsets[c + 1])]) : []
                #expect(chain.count == expected.count)
                for (at, item) in zip(chain, expected) {
                    let base = at * itemBytes
                    #expect(u64(base) == UInt64(item.request + 1) << 32 && u64(base + 8) == UInt64(item.request + 1) << 40)
                    #expect(int(base + 24) == item.start && int(base + 28) == item.end && int(base + 48) == item.members)
                    guard item.members > 1 else { continue }
                    let offset = Int(int(base + 52))
                    for (k, m) in s.members[Int(item.memberStart)..<Int(item.memberStart + item.members)].enumerated() {
                        let e = offset + 16 * k
                        #expect(int(e) == m.row && int(e + 4) == m.pair && int(e + 8) == m.firstSlot && int(e + 12) == m.split | (m.splits << 16))
                    }
                    seen += 1
                }
            }
            #expect(seen == s.items.filter { $0.members > 1 }.count && seen >= 2 * 2)
        }
    }

    /// The items run on the host the way the kernel runs them: each item's rows (one pair, or a
    /// tile's members' query heads) attend to its keys read through the item's request (a tile's
    /// reader); pairs in several pieces merge their partials by log-sum-exp. Against plain
    /// attention per request, with tile members whose shared keys are equal data.
    @Test func runningTheItemsEqualsAttention() {
        var rng = SplitMix64(seed: 99)
        func random() -> Double { Double(rng.next() >> 11) / Double(1 << 53) * 2 - 1 }
        var readersElsewhere = 0
        defer { #expect(readersElsewhere > 0, "some tiles read through a request that is not their first member") }
        for trial in 0..<40 {
            let (qh, kvh) = [(8, 2), (9, 3), (4, 4), (16, 2)][trial % 4]
            let d = 4, group = qh / kvh
            let (requests, blocks, tpb) = Self.groups(&rng, count: 2 + Int(rng.next() % 14))
            let tiles = DecodeSchedule.sharedPrefixTiles(blocks: blocks, requests: requests, tokensPerBlock: tpb,
                                                         membersPerTile: DecodeSchedule.membersPerTile(groupSize: group), minTokens: 16)
            // K/V [request][token][kvHead][d]: a block's tokens are its identity's data, so
            // requests naming a block alike hold the same bytes there (what tiles and their
            // readers rely on); the rest is each request's own.
            var keys = requests.map { r in (0..<r.length * kvh * d).map { _ in random() } }
            var values = requests.map { r in (0..<r.length * kvh * d).map { _ in random() } }
            let width = tpb * kvh * d
            var blockData: [UInt64: (k: [Double], v: [Double])] = [:]
            for (i, names) in blocks.enumerated() {
                for (j, name) in names.enumerated() {
                    if blockData[name] == nil { blockData[name] = ((0..<width).map { _ in random() }, (0..<width).map { _ in random() }) }
                    for x in 0..<width where j * width + x < keys[i].count {
                        keys[i][j * width + x] = blockData[name]!.k[x]
                        values[i][j * width + x] = blockData[name]!.v[x]
                    }
                }
            }
            readersElsewhere += tiles.filter { $0.reader != nil }.count
            let queries = requests.map { _ in (0..<qh * d).map { _ in 2 * random() } }
            let s = DecodeSchedule(requests: requests, queryHeads: qh, kvHeads: kvh, window: nil, maxCTAs: [3, 50, 264][trial % 3],
                                   minTokensPerCTA: 16, saturatingCTAs: [0, 4][trial % 2], sharedPrefixes: tiles)
            #expect(s.tiles == tiles.count)

            // Partials (m, l, o) per slot row; outputs per (request, head).
            var partialM = [Double](repeating: .nan, count: max(1, s.partialSlots) * 16)
            var partialL = partialM
            var partialO = [Double](repeating: .nan, count: max(1, s.partialSlots) * 16 * d)
            var counters = [Int](repeating: 0, count: s.pairs)
            var output = [[Double]](repeating: [Double](repeating: .nan, count: qh * d), count: requests.count)
            for item in s.items {
                let kvHead = Int(item.headSlot) / s.headBlocks, headBlock = Int(item.headSlot) % s.headBlocks
                let rows = min(16, group - headBlock * 16)
                let roster: [(request: Int, pair: Int, firstSlot: Int, split: Int, splits: Int)] = item.members == 1
                    ? [(Int(item.request), Int(item.pair), Int(item.firstSlot), Int(item.split), Int(item.splits))]
                    : s.members[Int(item.memberStart)..<Int(item.memberStart + item.members)].map {
                        (Int($0.request), Int($0.pair), Int($0.firstSlot), Int($0.split), Int($0.splits))
                    }
                let source = Int(item.request)  // every row reads the item's request's keys
                for member in roster {
                    for local in 0..<rows {
                        let head = kvHead * group + headBlock * 16 + local
                        let q = queries[member.request][(head * d)..<(head * d + d)]
                        var mx = -Double.infinity, l = 0.0
                        var o = [Double](repeating: 0, count: d)
                        for t in Int(item.start)..<Int(item.end) {
                            let k = (t * kvh + kvHead) * d
                            let score = zip(q, keys[source][k..<(k + d)]).reduce(0) { $0 + $1.0 * $1.1 } / Double(d).squareRoot()
                            let newMax = max(mx, score)
                            let scale = exp(mx - newMax), p = exp(score - newMax)
                            l = l * scale + p
                            for x in 0..<d { o[x] = o[x] * scale + p * values[source][k + x] }
                            mx = newMax
                        }
                        if member.splits == 1 {
                            for x in 0..<d { output[member.request][head * d + x] = o[x] / l }
                        } else {
                            let slot = (member.firstSlot + member.split) * 16 + local
                            partialM[slot] = mx
                            partialL[slot] = l
                            for x in 0..<d { partialO[slot * d + x] = o[x] }
                        }
                    }
                }
                // The last piece of a pair merges.
                for member in roster where member.splits > 1 {
                    counters[member.pair] += 1
                    guard counters[member.pair] == member.splits else { continue }
                    for local in 0..<rows {
                        let head = kvHead * group + headBlock * 16 + local
                        let slots = (0..<member.splits).map { (member.firstSlot + $0) * 16 + local }
                        let mx = slots.map { partialM[$0] }.max()!
                        let l = slots.reduce(0) { $0 + partialL[$1] * exp(partialM[$1] - mx) }
                        for x in 0..<d {
                            output[member.request][head * d + x] = slots.reduce(0) { $0 + partialO[$1 * d + x] * exp(partialM[$1] - mx) } / l
                        }
                    }
                }
            }
            // Plain attention.
            var worst = 0.0
            for (i, r) in requests.enumerated() {
                for head in 0..<qh {
                    let kvHead = head / group
                    let q = queries[i][(head * d)..<(head * d + d)]
                    let scores = (0..<r.length).map { t -> Double in
                        let k = (t * kvh + kvHead) * d
                        return zip(q, keys[i][k..<(k + d)]).reduce(0) { $0 + $1.0 * $1.1 } / Double(d).squareRoot()
                    }
                    let mx = scores.max()!
                    let weights = scores.map { exp($0 - mx) }
                    let total = weights.reduce(0, +)
                    for x in 0..<d {
                        let want = (0..<r.length).reduce(0) { $0 + weights[$1] * values[i][($1 * kvh + kvHead) * d + x] } / total
                        worst = max(worst, abs(output[i][head * d + x] - want))
                    }
                }
            }
            #expect(worst < 1e-9, "trial \(trial): worst error \(worst)")
        }
    }
}
