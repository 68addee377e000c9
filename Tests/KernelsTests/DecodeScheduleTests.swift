import Testing
@testable import Kernels
import VTensor

@Suite struct DecodeFastDivisorTests {
    @Test func matchesIntegerDivisionForEveryBlockSizeUsed() {
        var rng = SplitMix64(seed: 11)
        let divisors = Array(1...300) + [91, 455, 1024, 4096, 65_535, 65_536, 1 << 20, (1 << 30) + 7, Int(Int32.max)]
        for d in divisors {
            let divisor = DecodeFastDivisor(d)
            var samples: [UInt32] = [0, 1, UInt32(d - 1), UInt32(d), UInt32(d + 1), UInt32(Int32.max), UInt32(Int32.max) - 1]
            for _ in 0..<2000 { samples.append(UInt32(rng.next() % (1 << 31))) }
            for n in samples where n < 1 << 31 {
                #expect(divisor.divide(n) == n / UInt32(d), "n \(n) d \(d)")
            }
        }
    }

    @Test func exhaustiveForSmallNumerators() {
        for d in [1, 3, 7, 8, 16, 91, 128] {
            let divisor = DecodeFastDivisor(d)
            for n in UInt32(0)..<200_000 { #expect(divisor.divide(n) == n / UInt32(d)) }
        }
    }
}

@Suite struct DecodeScheduleTests {
    typealias Request = DecodeSchedule.Request

    static func decodeBatch(_ lengths: [Int]) -> [Request] {
        lengths.enumerated().map { Request(length: $1, queryStart: $0, queryCount: 1) }
    }

    /// Every structural property the kernel relies on.
    static func validate(_ s: DecodeSchedule, _ requests: [Request], queryHeads: Int, kvHeads: Int, window: Int?, maxCTAs: Int) {
        let headSlots = kvHeads * s.headBlocks
        #expect(s.ctas <= maxCTAs)
        #expect(s.ctaItemOffsets.first == 0 && Int(s.ctaItemOffsets.last!) == s.items.count)
        #expect(zip(s.ctaItemOffsets, s.ctaItemOffsets.dropFirst()).allSatisfy { $0 < $1 }, "every CTA has work")
        for c in 0..<s.ctas {
            let keys = s.items[Int(s.ctaItemOffsets[c])..<Int(s.ctaItemOffsets[c + 1])].reduce(0) { $0 + Int($1.end - $1.start) }
            #expect(keys <= s.tokensPerCTA)
            if c < s.ctas - 1 && !s.wholePairs { #expect(keys == s.tokensPerCTA, "all but the last CTA are full") }
        }
        // Pairs in order, each covered exactly by its splits.
        if s.wholePairs { #expect(s.items.allSatisfy { $0.splits == 1 } && s.partialSlots == 0 && s.maxKeysPerCTA == s.tokensPerCTA) }
        var byPair: [Int32: [DecodeSchedule.Item]] = [:]
        for item in s.items { byPair[item.pair, default: []].append(item) }
        var expectedPairs = 0
        var slotsSeen = Set<Int32>()
        for (index, r) in requests.enumerated() {
            for i in 0..<r.queryCount {
                let (lo, hi) = DecodeSchedule.keyRange(length: r.length, queryCount: r.queryCount, query: i, window: window)
                for slot in 0..<headSlots {
                    let items = byPair[Int32(expectedPairs)] ?? []
                    expectedPairs += 1
                    #expect(!items.isEmpty)
                    guard let first = items.first else { continue }
                    #expect(items.allSatisfy { $0.request == Int32(index) && $0.row == Int32(r.queryStart + i) && $0.headSlot == Int32(slot) })
                    #expect(Int(first.start) == lo && Int(items.last!.end) == hi)
                    #expect(zip(items, items.dropFirst()).allSatisfy { $0.end == $1.start })
                    #expect(items.allSatisfy { $0.start < $0.end })
                    #expect(items.enumerated().allSatisfy { Int($1.split) == $0 && Int($1.splits) == items.count })
                    if items.count > 1 {
                        for item in items { #expect(slotsSeen.insert(item.firstSlot + item.split).inserted) }
                    }
                }
            }
        }
        #expect(s.pairs == expectedPairs)
        #expect(slotsSeen.count == s.partialSlots)
        #expect(slotsSeen.allSatisfy { $0 >= 0 && Int($0) < s.partialSlots })
    }

    @Test func raggedBatchesAreCoveredExactly() {
        var rng = SplitMix64(seed: 3)
        for trial in 0..<200 {
            let count = 1 + Int(rng.next() % 40)
            let lengths = (0..<count).map { _ in 1 + Int(rng.next() % (trial % 2 == 0 ? 5000 : 70)) }
            let (qh, kvh) = [(32, 8), (56, 8), (9, 3), (32, 32), (20, 1), (40, 1)][trial % 6]
            let window: Int? = trial % 5 == 0 ? 1 + Int(rng.next() % 300) : nil
            let maxCTAs = [1, 7, 132, 264, 396, 100_000][trial % 6]
            let minTokens = [16, 64, 256][trial % 3]
            let saturating = [0, 132, 8, 1][trial % 4]
            let requests = Self.decodeBatch(lengths)
            let s = DecodeSchedule(requests: requests, queryHeads: qh, kvHeads: kvh, window: window, maxCTAs: maxCTAs, minTokensPerCTA: minTokens,
                                   saturatingCTAs: saturating)
            Self.validate(s, requests, queryHeads: qh, kvHeads: kvh, window: window, maxCTAs: maxCTAs)
        }
    }

    @Test func severalQueriesPerRequestAttendCausally() {
        let requests = [Request(length: 10, queryStart: 0, queryCount: 3), Request(length: 7, queryStart: 3, queryCount: 7),
                        Request(length: 0, queryStart: 10, queryCount: 0), Request(length: 5, queryStart: 10, queryCount: 0)]
        for saturating in [0, 1, 5] {
            let s = DecodeSchedule(requests: requests, queryHeads: 8, kvHeads: 2, window: 4, maxCTAs: 5, minTokensPerCTA: 16,
                                   saturatingCTAs: saturating)
            Self.validate(s, requests, queryHeads: 8, kvHeads: 2, window: 4, maxCTAs: 5)
        }
        let s = DecodeSchedule(requests: requests, queryHeads: 8, kvHeads: 2, window: 4, maxCTAs: 5, minTokensPerCTA: 16)
        #expect(s.pairs == (3 + 7) * 2)
        #expect(DecodeSchedule.keyRange(length: 10, queryCount: 3, query: 0, window: nil) == (0, 8))
        #expect(DecodeSchedule.keyRange(length: 10, queryCount: 3, query: 2, window: 4) == (6, 10))
        #expect(DecodeSchedule.keyRange(length: 7, queryCount: 7, query: 0, window: 4) == (0, 1))
    }

    @Test func splitsFollowRealLengthsAndTheGrid() {
        // One long request, 8 KV heads, 264 CTAs: each pair is split about 33 ways.
        let one = DecodeSchedule(requests: Self.decodeBatch([4096]), queryHeads: 32, kvHeads: 8, window: nil, maxCTAs: 264)
        #expect(one.ctas == 256 && one.tokensPerCTA == 128 && one.splitPairs == 8)
        #expect(one.items.allSatisfy { $0.splits == 32 })
        // The same request in a batch with 4x the CTAs' worth of pairs: no pair split more than
        // twice, and at most one split pair per CTA boundary.
        let big = DecodeSchedule(requests: Self.decodeBatch(Array(repeating: 4096, count: 128)), queryHeads: 32, kvHeads: 32,
                                 window: nil, maxCTAs: 264)
        #expect(big.items.allSatisfy { $0.splits <= 2 })
        #expect(big.splitPairs < big.ctas)
        // Lengths, not a capacity: short requests make short work.
        let short = DecodeSchedule(requests: Self.decodeBatch([5, 9, 1]), queryHeads: 32, kvHeads: 8, window: nil, maxCTAs: 264)
        #expect(short.ctas == 2 && short.totalKeys == 15 * 8 && short.splitPairs <= 1)
        // Ragged: every CTA (but the last) streams the same number of keys.
        let ragged = DecodeSchedule(requests: Self.decodeBatch([1, 17, 4097, 300, 16_000]), queryHeads: 56, kvHeads: 8,
                                    window: nil, maxCTAs: 264)
        #expect(ragged.maxKeysPerCTA == ragged.tokensPerCTA)
        #expect(ragged.ctas <= 264 && ragged.ctas >= 250)
    }

    @Test func largeGroupsTakeSeveralHeadBlocks() {
        let s = DecodeSchedule(requests: Self.decodeBatch([100]), queryHeads: 40, kvHeads: 1, window: nil, maxCTAs: 10)
        #expect(s.headBlocks == 3 && s.pairs == 3)
        let yi = DecodeSchedule(requests: Self.decodeBatch([100]), queryHeads: 56, kvHeads: 8, window: nil, maxCTAs: 10)
        #expect(yi.headBlocks == 1 && yi.pairs == 8)
    }

    @Test func wholePairsWhenTheBatchKeepsDRAMBusy() {
        func make(_ count: Int, _ length: Int, kvHeads: Int = 8, saturating: Int = 132) -> DecodeSchedule {
            DecodeSchedule(requests: Self.decodeBatch(Array(repeating: length, count: count)), queryHeads: 4 * kvHeads, kvHeads: kvHeads,
                           window: nil, maxCTAs: 264, saturatingCTAs: saturating)
        }
        // 256 pairs of 4096 keys: one pair a CTA, nothing to merge.
        let a = make(32, 4096)
        #expect(a.wholePairs && a.ctas == 256 && a.splitPairs == 0 && a.tokensPerCTA == 4096)
        // 1024 pairs on 264 CTAs: 3 or 4 pairs each (longest-first keeps them within one pair).
        let b = make(128, 16_384)
        #expect(b.wholePairs && b.ctas == 264 && b.maxKeysPerCTA == 4 * 16_384)
        // 64 pairs of 1024 keys: whole pairs would leave DRAM idle; split instead.
        let c = make(8, 1024)
        #expect(!c.wholePairs && c.ctas == 256 && c.splitPairs == 64)
        // Saturation off: always split.
        #expect(!make(32, 4096, saturating: 0).wholePairs)
        // Ragged: longest first onto the least loaded CTA.
        let (members, makespan) = DecodeSchedule.longestFirst([5, 9, 1, 7, 3], bins: 2)!
        #expect(makespan == 13 && members.map { $0.map { [5, 9, 1, 7, 3][$0] }.reduce(0, +) }.sorted() == [12, 13])
    }

    @Test func kernelItemTable() {
        // 80 keys over 4 CTAs of 32: pair 0 = [0,32) + [32,40), pair 1 = [0,24) + [24,40).
        let s = DecodeSchedule(requests: [Request(length: 40, queryStart: 3, queryCount: 1)], queryHeads: 4, kvHeads: 2,
                               window: nil, maxCTAs: 4, minTokensPerCTA: 16)
        #expect(s.ctas == 3 && s.items.count == 4 && s.partialSlots == 4 && !s.wholePairs)
        #expect(s.items.map(\.start) == [0, 32, 0, 24] && s.items.map(\.end) == [32, 40, 24, 40])
        #expect(s.ctaItemOffsets == [0, 1, 3, 4])
        let bytes = s.kernelItems { _ in (0xAAAA_0000, 0xBBBB_0000) }
        #expect(bytes.count == DecodeSchedule.kernelItemBytes * 4)
        func u64(_ item: Int, _ at: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: DecodeSchedule.kernelItemBytes * item + at, as: UInt64.self) } }
        func int(_ item: Int, _ field: Int) -> Int32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: DecodeSchedule.kernelItemBytes * item + 16 + 4 * field, as: Int32.self) } }
        // CTA c's first item at index c; CTA 1's second item after all first items.
        let order = [0, 1, 3, 2]  // table index of items[0...3]
        for (k, item) in s.items.enumerated() {
            let at = order[k]
            #expect(u64(at, 0) == 0xAAAA_0000 && u64(at, 8) == 0xBBBB_0000)
            #expect(int(at, 0) == 3 && int(at, 1) == item.headSlot && int(at, 2) == item.start && int(at, 3) == item.end)
            #expect(int(at, 4) == item.pair && int(at, 5) == item.firstSlot && int(at, 6) == item.split | (item.splits << 16))
        }
        #expect(int(0, 7) == -1 && int(1, 7) == 3 && int(3, 7) == -1 && int(2, 7) == -1)
    }

    /// A fixed grid (CUDA graphs): CTAs past the plan's get an empty item (row -1, no next), and
    /// every CTA's chain, walked as the kernel walks it, yields the plan's items in order.
    @Test func kernelItemTableForAFixedGrid() {
        var rng = SplitMix64(seed: 5)
        for _ in 0..<50 {
            let lengths = (0..<(1 + Int(rng.next() % 12))).map { _ in 1 + Int(rng.next() % 700) }
            let s = DecodeSchedule(requests: Self.decodeBatch(lengths), queryHeads: 8, kvHeads: 2, window: nil,
                                   maxCTAs: 1 + Int(rng.next() % 40), minTokensPerCTA: 16 * (1 + Int(rng.next() % 4)))
            let grid = s.ctas + Int(rng.next() % 9)
            let bytes = s.kernelItems(grid: grid) { (UInt64($0) << 20, UInt64($0) << 21) }
            #expect(bytes.count == s.kernelItemsBytes(grid: grid) && bytes.count == DecodeSchedule.kernelItemBytes * (s.items.count + grid - s.ctas))
            func int(_ slot: Int, _ field: Int) -> Int32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: DecodeSchedule.kernelItemBytes * slot + 16 + 4 * field, as: Int32.self) } }
            for c in 0..<grid {
                var chain: [(row: Int32, start: Int32, end: Int32, pair: Int32)] = []
                var slot = c
                while slot >= 0 {
                    if int(slot, 0) < 0 { break }
                    chain.append((int(slot, 0), int(slot, 2), int(slot, 3), int(slot, 4)))
                    slot = Int(int(slot, 7))
                }
                if c >= s.ctas {
                    #expect(chain.isEmpty && int(c, 0) == -1 && int(c, 7) == -1, "CTA \(c) of \(s.ctas) must be empty")
                    continue
                }
                let expected = s.items[Int(s.ctaItemOffsets[c])..<Int(s.ctaItemOffsets[c + 1])]
                #expect(chain.map(\.row) == expected.map(\.row) && chain.map(\.start) == expected.map(\.start)
                        && chain.map(\.end) == expected.map(\.end) && chain.map(\.pair) == expected.map(\.pair))
            }
        }
    }

    @Test func requestTablePacking() {
        let view = KVView(base: 0x1000, tokenStride: 2048, headStride: 256, blockStride: 2 << 20, tokensPerBlock: 16, length: 9, readableTokens: 16)
        var value = view
        value.base = 0x2000
        let bytes = DecodeRequestTable.pack([AttentionRequest(key: view, value: value, queryStart: 4, queryCount: 2)])  // the KV-write table
        #expect(bytes.count == 32)
        bytes.withUnsafeBytes {
            #expect($0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == 0x1000)
            #expect($0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == 0x2000)
            #expect($0.loadUnaligned(fromByteOffset: 16, as: Int32.self) == 7)  // first written position
            #expect($0.loadUnaligned(fromByteOffset: 20, as: Int32.self) == 4)
            #expect($0.loadUnaligned(fromByteOffset: 24, as: Int32.self) == 2)
        }
        let geometry = DecodeKVGeometry([AttentionRequest(key: view, value: value, queryStart: 0, queryCount: 1)])
        #expect(geometry.tokenStride == 2048 && geometry.blockStride == 2 << 20 && geometry.divisor.divisor == 16)
        let pool = PagedKVPool(keys: 0, values: 0, pages: 10, pageTokens: 16, kvHeads: 8, headDim: 128, dtype: .bf16)
        #expect(pool.pageStride == 16 * 2048 && pool.offset(token: 17, head: 2, table: [5, 3]) == 3 * 32_768 + 2048 + 512)
    }
}

/// The bound the GPU model allocates its per-layer decode plans from: no schedule may exceed it,
/// or a decode step would have to allocate.
@Suite struct DecodeScheduleBoundTests {
    @Test func itemsNeverExceedTheBound() {
        var rng = SplitMix64(seed: 77)
        for trial in 0..<300 {
            let requests = 1 + Int(rng.next() % 64)
            let (queryHeads, kvHeads) = [(32, 8), (56, 8), (9, 3), (32, 32), (7, 1), (64, 4)][trial % 6]
            let lengths = (0..<requests).map { _ in 1 + Int(rng.next() % (trial % 3 == 0 ? 200 : 20_000)) }
            let maxCTAs = [132, 264, 16, 1][trial % 4]
            let s = DecodeSchedule(requests: lengths.enumerated().map { .init(length: $1, queryStart: $0, queryCount: 1) },
                                   queryHeads: queryHeads, kvHeads: kvHeads, window: trial % 5 == 0 ? 512 : nil, maxCTAs: maxCTAs,
                                   minTokensPerCTA: 64, saturatingCTAs: trial % 2 == 0 ? maxCTAs : 0)
            let bound = DecodeSchedule.maxItems(requests: requests, kvHeads: kvHeads, groupSize: queryHeads / kvHeads, maxCTAs: maxCTAs)
            #expect(s.items.count <= bound, "trial \(trial): \(s.items.count) items > \(bound)")
        }
    }
}
