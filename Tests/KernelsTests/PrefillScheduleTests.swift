import Testing
@testable import Kernels
import VTensor
import Glibc

/// The prefill kernel's host schedule and index math, and its algorithm (tile order, per-warp
/// skips, masks applied only where needed, exp2 online softmax, P rounded before P V) run on
/// the CPU against the oracle: everything about the kernel except fragment layouts.
@Suite struct PrefillScheduleTests {
    static func visible(_ position: Int, _ key: Int, _ window: Int?) -> Bool {
        key <= position && (window.map { position - key < $0 } ?? true)
    }

    /// The Hopper kernel's consumers walk the key tiles each of their 64 rows can see as one
    /// run (they only let the others pass), so that run must be contiguous for every shape.
    @Test func wgmmaGroupsSeeOneRunOfKeyTiles() {
        var rng = SplitMix64(seed: 23)
        for _ in 0..<300 {
            let length = Int(1 + rng.next() % 3000)
            let queryCount = Int(1 + rng.next() % UInt64(length))
            let window: Int? = rng.next() % 2 == 0 ? nil : Int(1 + rng.next() % 700)
            for blockN in [64, 128] {
                let schedule = PrefillSchedule(requests: [(length, queryCount)], blockM: 128, blockN: blockN, window: window)
                for tile in schedule.tiles {
                    let tiles = PrefillSchedule.keyTileRange(length: length, queryCount: queryCount, queryBegin: tile.queryBegin,
                                                             blockM: 128, blockN: blockN, window: window)
                    let rows = min(128, queryCount - tile.queryBegin)
                    let first = length - queryCount + tile.queryBegin
                    for group0 in stride(from: 0, to: rows, by: 64) {
                        let positions = (first + group0)...(first + min(group0 + 63, rows - 1))
                        let seen = tiles.filter {
                            PrefillSchedule.warpSeesTile(positions: positions, keys: ($0 * blockN)...($0 * blockN + blockN - 1), window: window)
                        }
                        #expect(!seen.isEmpty)
                        #expect(seen.last! - seen.first! + 1 == seen.count, "group at \(positions) sees \(seen)")
                    }
                }
            }
        }
    }

    @Test func wgmmaShapesFitSharedMemoryAndNameTheirTarget() {
        for d in [64, 128] {
            for config in PrefillTileConfig.candidates(headDim: d, wgmma: true) where config.engine == .wgmma {
                #expect(config.sharedMemoryBytes(headDim: d) <= 232_448, "\(config) needs \(config.sharedMemoryBytes(headDim: d)) bytes")
                let program = PrefillAttention.program(headDim: d, dtype: .bf16, config: config)
                #expect(program.archSuffix == "a")
                #expect(program.options.contains("-DNWARPS=\(config.warps)"))
                #expect(program.options.contains("-DSTAGES=\(config.stages)") == config.producer)
                if config.producer {
                    #expect(config.warps == 4 * (config.blockM / 64 + 1))
                    #expect(program.options.contains("-DPINGPONG=\(config.pingpong ? 1 : 0)"))
                } else {
                    #expect(config.warps == 4 * (config.blockM / 64))
                }
            }
            #expect(PrefillTileConfig.standard(headDim: d, wgmma: true).engine == .wgmma)
            #expect(PrefillTileConfig.standard(headDim: d).engine == .mmaSync)
        }
        // mma.sync programs stay architecture-neutral.
        #expect(PrefillAttention.program(headDim: 128, dtype: .bf16, config: .standard(headDim: 128)).archSuffix == "")
    }

    @Test func tilesCoverEveryQueryOnceLongestFirst() {
        var rng = SplitMix64(seed: 11)
        for _ in 0..<50 {
            let requests = (0..<Int(1 + rng.next() % 6)).map { _ -> (length: Int, queryCount: Int) in
                let length = Int(1 + rng.next() % 700)
                return (length, Int(1 + rng.next() % UInt64(length)))
            }
            let window: Int? = rng.next() % 2 == 0 ? nil : Int(1 + rng.next() % 300)
            let schedule = PrefillSchedule(requests: requests, blockM: 128, blockN: 64, window: window)
            var covered = requests.map { [Int](repeating: 0, count: $0.queryCount) }
            for tile in schedule.tiles {
                #expect(tile.queryBegin % 128 == 0)
                for i in tile.queryBegin..<min(tile.queryBegin + 128, requests[tile.request].queryCount) { covered[tile.request][i] += 1 }
            }
            #expect(covered.allSatisfy { $0.allSatisfy { $0 == 1 } })
            #expect(zip(schedule.tiles, schedule.tiles.dropFirst()).allSatisfy { $0.keyTiles >= $1.keyTiles })
        }
    }

    @Test func requestsWithoutQueriesGetNoTiles() {
        let schedule = PrefillSchedule(requests: [(100, 0), (5, 5), (300, 0)], blockM: 128, blockN: 64, window: nil)
        #expect(schedule.tiles == [PrefillSchedule.Tile(request: 1, queryBegin: 0, keyTiles: 1)])
    }

    @Test func keyTileRangeIsTightAroundVisibleKeys() {
        for window in [nil, 1, 5, 64, 100] as [Int?] {
            for (length, queries) in [(1, 1), (17, 17), (63, 63), (65, 65), (300, 41), (1000, 1), (1000, 1000), (4097, 513)] {
                var begin = 0
                while begin < queries {
                    let range = PrefillSchedule.keyTileRange(length: length, queryCount: queries, queryBegin: begin, blockM: 128, blockN: 64, window: window)
                    let positions = PrefillSchedule.queryPositions(length: length, queryCount: queries, queryBegin: begin, blockM: 128)
                    let keys = positions.flatMap { pos in (0...pos).filter { Self.visible(pos, $0, window) } }
                    #expect(range.lowerBound == keys.min()! / 64 && range.upperBound == keys.max()! / 64 + 1)
                    #expect(range.upperBound * 64 <= length + 63, "no tile wholly past the KV")
                    begin += 128
                }
            }
        }
    }

    @Test func warpSkipAndMaskDecisionsMatchBruteForce() {
        for window in [nil, 1, 3, 16, 40] as [Int?] {
            for first in stride(from: 0, to: 120, by: 7) {
                for rows in [1, 5, 16, 32] {
                    let positions = first...(first + rows - 1)
                    for key0 in stride(from: 0, to: 160, by: 16) {
                        let keys = key0...(key0 + 15)
                        let pairs = positions.flatMap { p in keys.map { Self.visible(p, $0, window) } }
                        #expect(PrefillSchedule.warpSeesTile(positions: positions, keys: keys, window: window) == pairs.contains(true))
                        #expect(PrefillSchedule.warpNeedsMask(positions: positions, keys: keys, window: window) == pairs.contains(false))
                    }
                }
            }
        }
    }

    @Test func divisionMagicIsExact() {
        for divisor in [1, 2, 3, 7, 8, 16, 91, 512, 1000, 1024, 4096] {
            let magic = PrefillSchedule.divisionMagic(divisor)
            let limit = (1 << 32) / divisor
            var samples = Array(0..<min(limit, 5000))
            var rng = SplitMix64(seed: UInt64(divisor))
            for _ in 0..<5000 { samples.append(Int(rng.next() % UInt64(limit))) }
            samples.append(limit - 1)
            for t in samples {
                #expect(Int((UInt64(t) * magic) >> 32) == t / divisor, "t \(t) / \(divisor)")
            }
        }
    }

    @Test func divisionMagic32IsExact() {
        #expect(PrefillSchedule.divisionMagic32(1) == 0)
        for divisor in [2, 3, 7, 8, 16, 91, 1024] {
            let magic = UInt64(PrefillSchedule.divisionMagic32(divisor))
            var rng = SplitMix64(seed: UInt64(divisor) + 99)
            let limit = UInt64((1 << 32) / divisor)
            for t in (0..<2000).map({ _ in rng.next() % limit }) + [0, limit - 1] {
                #expect((t * magic) >> 32 == t / UInt64(divisor))
            }
        }
    }

    @Test func planDescriptorLayout() throws {
        let p = AttentionParameters(queryHeads: 4, kvHeads: 2, headDim: 64, dtype: .bf16)
        let batch = try PrefillTestBatch(p, shapes: [(300, 200), (10, 1)], seed: 2)
        let plan = PrefillPlan(p, requests: batch.requests, config: .standard(headDim: 64))
        #expect(plan.requestCount == 2 && plan.tileCount == 3)
        #expect(plan.descriptor.count == 2 * 32 + 3 * 8)
        func int32(_ offset: Int) -> Int32 { plan.descriptor.withUnsafeBytes { $0.load(fromByteOffset: offset, as: Int32.self) } }
        func uint64(_ offset: Int) -> UInt64 { plan.descriptor.withUnsafeBytes { $0.load(fromByteOffset: offset, as: UInt64.self) } }
        #expect(uint64(0) == batch.requests[0].key.base && uint64(8) == batch.requests[0].value.base)
        #expect(int32(16) == 300 && int32(20) == 0 && int32(24) == 200)
        #expect(int32(32 + 16) == 10 && int32(32 + 20) == 200 && int32(32 + 24) == 1)
        // Tiles: request 0 rows 128..<200 (5 key tiles), rows 0..<128 (4), request 1 (1).
        #expect((int32(64), int32(68)) == (0, 128))
        #expect((int32(72), int32(76)) == (0, 0))
        #expect((int32(80), int32(84)) == (1, 0))
        #expect(plan.tokensPerBlock == batch.requests[0].key.tokensPerBlock)
    }

    @Test func pagedPlanDescriptorLayout() {
        let p = AttentionParameters(queryHeads: 4, kvHeads: 2, headDim: 64, dtype: .bf16)
        let pool = PagedKVPool(keys: 0x10000, values: 0x90000, pages: 100, pageTokens: 5, kvHeads: 2, headDim: 64, dtype: .bf16)
        let requests = [PagedRequest(blockTable: 0x4000, length: 300, queryStart: 0, queryCount: 200),
                        PagedRequest(blockTable: 0x4000 + 4 * 60, length: 10, queryStart: 200, queryCount: 1)]
        let plan = PrefillPlan(p, requests: requests, pool: pool, config: .standard(headDim: 64))
        #expect(plan.paged && plan.kPool == 0x10000 && plan.vPool == 0x90000)
        #expect(plan.requestCount == 2 && plan.tileCount == 3)
        #expect(plan.tokensPerBlock == 5 && plan.blockStride == pool.pageStride && plan.tokenStride == 2 * 128 && plan.headStride == 128)
        func int32(_ offset: Int) -> Int32 { plan.descriptor.withUnsafeBytes { $0.load(fromByteOffset: offset, as: Int32.self) } }
        func uint64(_ offset: Int) -> UInt64 { plan.descriptor.withUnsafeBytes { $0.load(fromByteOffset: offset, as: UInt64.self) } }
        #expect(uint64(0) == 0x4000 && uint64(8) == 0 && uint64(32) == 0x4000 + 240)
        #expect(int32(16) == 300 && int32(20) == 0 && int32(24) == 200)
        #expect(int32(32 + 16) == 10 && int32(32 + 20) == 200 && int32(32 + 24) == 1)
        #expect((int32(64), int32(68)) == (0, 128))
        // The kernel's page index math (umulhi by the magic) against the pool's.
        let magic = UInt64(PrefillSchedule.divisionMagic32(pool.pageTokens))
        let table: [Int32] = (0..<60).map { Int32((37 * $0 + 11) % 100) }
        for t in 0..<300 {
            let block = Int((UInt64(t) * magic) >> 32)
            let kernelOffset = Int(table[block]) * plan.blockStride + (t - block * plan.tokensPerBlock) * plan.tokenStride + plan.headStride
            #expect(kernelOffset == pool.offset(token: t, head: 1, table: table))
        }
    }

    static let emulationCases: [(String, AttentionParameters, [(length: Int, queries: Int)], PrefillTileConfig)] = [
        ("prefill ragged", AttentionParameters(queryHeads: 6, kvHeads: 2, headDim: 64, dtype: .bf16), [(1, 1), (17, 17), (63, 63), (65, 65), (150, 150)], .standard(headDim: 64)),
        ("small tiles, extend + decode", AttentionParameters(queryHeads: 7, kvHeads: 1, headDim: 64, dtype: .bf16), [(70, 13), (50, 1), (100, 100), (33, 32)], PrefillTileConfig(blockM: 32, blockN: 16, warps: 2)),
        ("window 7", AttentionParameters(queryHeads: 4, kvHeads: 2, headDim: 64, dtype: .fp16, window: 7), [(90, 90), (45, 5)], PrefillTileConfig(blockM: 32, blockN: 16, warps: 2)),
        ("window 40", AttentionParameters(queryHeads: 2, kvHeads: 2, headDim: 64, dtype: .bf16, window: 40), [(300, 300), (200, 77)], PrefillTileConfig(blockM: 64, blockN: 32, warps: 2)),
        ("window 1", AttentionParameters(queryHeads: 2, kvHeads: 1, headDim: 64, dtype: .bf16, window: 1), [(40, 40), (20, 3)], PrefillTileConfig(blockM: 32, blockN: 16, warps: 1)),
        ("consecutive m-tiles, window 20", AttentionParameters(queryHeads: 4, kvHeads: 1, headDim: 64, dtype: .bf16, window: 20), [(130, 130), (90, 9)], PrefillTileConfig(blockM: 64, blockN: 32, warps: 2, interleave: false)),
        ("interleaved m-tiles, window 20", AttentionParameters(queryHeads: 4, kvHeads: 1, headDim: 64, dtype: .bf16, window: 20), [(130, 130), (90, 9)], PrefillTileConfig(blockM: 64, blockN: 32, warps: 2)),
        ("interleaved, standard tiles", AttentionParameters(queryHeads: 2, kvHeads: 1, headDim: 64, dtype: .bf16), [(300, 300), (200, 70)], .standard(headDim: 64)),
    ]

    @Test(arguments: 0..<emulationCases.count)
    func kernelAlgorithmMatchesOracle(index: Int) throws {
        let (name, p, shapes, config) = Self.emulationCases[index]
        let batch = try PrefillTestBatch(p, shapes: shapes, seed: UInt64(40 + index))
        let count = batch.totalQueries * p.queryHeads * p.headDim
        var expected = [UInt8](repeating: 0xFF, count: count * 2)
        var emulated = [UInt8](repeating: 0xFF, count: count * 2)
        var unmaskedButHidden = 0
        batch.queries.withUnsafeBytes { q in
            expected.withUnsafeMutableBytes { o in
                CPUAttention.run(p, requests: batch.requests, queries: q.baseAddress!, output: o.baseAddress!)
            }
            emulated.withUnsafeMutableBytes { o in
                unmaskedButHidden = PrefillEmulator.run(p, requests: batch.requests, queries: q.baseAddress!, output: o.baseAddress!, config: config)
            }
        }
        #expect(unmaskedButHidden == 0, "\(name): a tile without a mask held hidden keys")
        var diff = 0.0, norm = 0.0
        for i in 0..<count {
            let e = Double(HalfFloat.load(expected, i, p.dtype)), a = Double(HalfFloat.load(emulated, i, p.dtype))
            #expect(a.isFinite)
            diff += (a - e) * (a - e)
            norm += e * e
        }
        let error = (diff / norm).squareRoot()
        #expect(error < 1e-2, "\(name): relative error \(error)")
    }
}

extension HalfFloat {
    static func load(_ bytes: [UInt8], _ index: Int, _ dtype: KVDType) -> Float {
        bytes.withUnsafeBytes { load($0.baseAddress!, index, dtype) }
    }
}

/// The kernel's algorithm, one (tile, head, warp) at a time. Returns how many (row, key) pairs
/// that should be hidden fell in a tile the kernel would not mask (must be 0).
enum PrefillEmulator {
    static func run(_ p: AttentionParameters, requests: [AttentionRequest], queries: UnsafeRawPointer,
                    output: UnsafeMutableRawPointer, config: PrefillTileConfig) -> Int {
        let d = p.headDim, bm = config.blockM, bn = config.blockN
        let scaleLog2 = p.scale * 1.442_695_040_888_963_4
        let schedule = PrefillSchedule(requests: requests.map { ($0.length, $0.queryCount) }, blockM: bm, blockN: bn, window: p.window)
        var violations = 0
        for tile in schedule.tiles {
            let rq = requests[tile.request]
            let rows = min(bm, rq.queryCount - tile.queryBegin)
            let firstPos = rq.firstQueryPosition + tile.queryBegin
            let tiles = PrefillSchedule.keyTileRange(length: rq.length, queryCount: rq.queryCount, queryBegin: tile.queryBegin,
                                                     blockM: bm, blockN: bn, window: p.window)
            for head in 0..<p.queryHeads {
                let kvHead = head / p.groupSize
                // Each m16 tile of each warp decides on its own whether it sees a key tile
                // (else skips it) and whether some pair is hidden (else applies no mask); the
                // kernel masks a whole warp when any of its computed m-tiles needs it.
                for warp in 0..<config.warps {
                    let mTiles = (0..<config.mTiles).map { config.rowOfMTile(warp: warp, $0) }.filter { $0 < rows }
                    func positions(_ row0: Int) -> ClosedRange<Int> { (firstPos + row0)...(firstPos + min(row0 + 15, rows - 1)) }
                    for row0 in mTiles {
                        for row in row0..<min(row0 + 16, rows) {
                            let pos = firstPos + row
                            let qBase = ((rq.queryStart + tile.queryBegin + row) * p.queryHeads + head) * d
                            var m = -Float.infinity, l: Float = 0
                            var acc = [Float](repeating: 0, count: d)
                            for t in tiles.reversed() {
                                let keys = (t * bn)...(t * bn + bn - 1)
                                guard PrefillSchedule.warpSeesTile(positions: positions(row0), keys: keys, window: p.window) else { continue }
                                let needMask = mTiles.contains { other in
                                    PrefillSchedule.warpSeesTile(positions: positions(other), keys: keys, window: p.window)
                                        && PrefillSchedule.warpNeedsMask(positions: positions(other), keys: keys, window: p.window)
                                }
                                var s = [Float](repeating: 0, count: bn)
                                for (n, j) in keys.enumerated() {
                                    if j < rq.length {  // past the length K is zero-filled
                                        let k = UnsafeRawPointer(bitPattern: UInt(rq.key.address(token: j, head: kvHead)))!
                                        var dot: Float = 0
                                        for x in 0..<d { dot += HalfFloat.load(queries, qBase + x, p.dtype) * HalfFloat.load(k, x, p.dtype) }
                                        s[n] = dot
                                    }
                                    let hidden = !(j <= pos && (p.window.map { pos - j < $0 } ?? true))
                                    if needMask && hidden { s[n] = -.infinity }
                                    if !needMask && hidden { violations += 1 }
                                }
                                // Lazy rescale: the running max moves only by more than 8 (log2).
                                let candidate = s.max()! * scaleLog2
                                let move = candidate > m + 8
                                let newMax = move ? candidate : m
                                let base = newMax == -.infinity ? 0 : newMax
                                let correction = move ? exp2f(m - base) : 1
                                m = newMax
                                var sum: Float = 0
                                for x in 0..<d { acc[x] *= correction }
                                for (n, j) in keys.enumerated() {
                                    let weight = exp2f(s[n] * scaleLog2 - base)
                                    sum += weight
                                    let rounded = p.dtype == .fp16 ? HalfFloat.fp16ToFloat(HalfFloat.floatToFP16(weight))
                                                                   : HalfFloat.bf16ToFloat(HalfFloat.floatToBF16(weight))
                                    guard rounded != 0, j < rq.length else { continue }
                                    let v = UnsafeRawPointer(bitPattern: UInt(rq.value.address(token: j, head: kvHead)))!
                                    for x in 0..<d { acc[x] += rounded * HalfFloat.load(v, x, p.dtype) }
                                }
                                l = l * correction + sum
                            }
                            for x in 0..<d { HalfFloat.store(l > 0 ? acc[x] / l : 0, output, qBase + x, p.dtype) }
                        }
                    }
                }
            }
        }
        return violations
    }
}

/// A batch on the host backend with the real blocked layout and random K/V/Q (never zeros).
struct PrefillTestBatch {
    let p: AttentionParameters
    let cache: KVCache
    let requests: [AttentionRequest]
    var queries: [UInt8]
    var totalQueries: Int { requests.reduce(0) { $0 + $1.queryCount } }

    init(_ p: AttentionParameters, shapes: [(length: Int, queries: Int)], seed: UInt64) throws {
        self.p = p
        let host = try HostBackend(chunkSize: 64 << 10, capacityBytes: 1 << 30)
        let memory = try VirtualMemory(backend: host, budget: .bytes(1 << 30))
        // 3 layers: 64 KiB chunks hold 42 tokens of a 2 x 64 head (not a power of two).
        let shape = KVShape(layers: 3, kvHeads: p.kvHeads, headDim: p.headDim, dtype: p.dtype)
        cache = try KVCache(shape: shape, layout: .blocked, memory: memory, maxTokensPerRequest: 4096)
        requests = try addRequests(to: cache, shapes: shapes, layer: 2)
        let start = requests.reduce(0) { $0 + $1.queryCount }
        var rng = SplitMix64(seed: seed)
        let dtype = p.dtype
        func random(_ base: UnsafeMutableRawPointer, _ count: Int, amplitude: Double) {
            for i in 0..<count { HalfFloat.store(Float((rng.nextDouble() * 2 - 1) * amplitude), base, i, dtype) }
        }
        queries = [UInt8](repeating: 0, count: start * p.queryHeads * p.headDim * p.dtype.bytes)
        queries.withUnsafeMutableBytes { random($0.baseAddress!, start * p.queryHeads * p.headDim, amplitude: 1.5) }
        for request in requests {
            for t in 0..<request.length {
                for h in 0..<p.kvHeads {
                    random(UnsafeMutableRawPointer(bitPattern: UInt(request.key.address(token: t, head: h)))!, p.headDim, amplitude: 1.5)
                    random(UnsafeMutableRawPointer(bitPattern: UInt(request.value.address(token: t, head: h)))!, p.headDim, amplitude: 1)
                }
            }
        }
    }
}

/// The kernel's fragment addressing (ldmatrix row addresses into padded shared-memory rows,
/// P packed from the S accumulators) checked on a CPU model of ldmatrix and mma.m16n8k16 as
/// the PTX ISA defines their fragments.
@Suite struct PrefillFragmentTests {
    /// Shared memory as 16-bit words; the kernel's row stride SROW = rowBytes + 16.
    struct SharedMemory {
        var words: [Float]
        func at(_ byte: Int) -> Float { words[byte / 2] }
    }

    /// `ldmatrix.x4` (optionally `.trans`): lane l supplies the row address of row l % 8 of matrix l / 8;
    /// lane l receives, per matrix, elements (l / 4, 2 (l % 4) + {0, 1}), or transposed
    /// (2 (l % 4) + {0, 1}, l / 4).
    static func ldmatrix(_ smem: SharedMemory, _ address: (Int) -> Int, trans: Bool) -> [[(Float, Float)]] {
        (0..<32).map { lane in
            (0..<4).map { i in
                let g = lane / 4, t = lane % 4
                if trans {
                    return (smem.at(address(8 * i + 2 * t) + 2 * g), smem.at(address(8 * i + 2 * t + 1) + 2 * g))
                }
                let row = address(8 * i + g)
                return (smem.at(row + 4 * t), smem.at(row + 4 * t + 2))
            }
        }
    }

    /// `mma.m16n8k16.row.col`: D = A B + C with the PTX fragment layouts.
    static func mma(_ c: inout [[Float]], _ a: [[(Float, Float)]], _ b0: [(Float, Float)], _ b1: [(Float, Float)]) {
        var A = [[Float]](repeating: [Float](repeating: 0, count: 16), count: 16)
        var B = [[Float]](repeating: [Float](repeating: 0, count: 8), count: 16)
        for lane in 0..<32 {
            let g = lane / 4, t = lane % 4
            let r = a[lane]
            (A[g][2 * t], A[g][2 * t + 1]) = r[0]
            (A[g + 8][2 * t], A[g + 8][2 * t + 1]) = r[1]
            (A[g][8 + 2 * t], A[g][8 + 2 * t + 1]) = r[2]
            (A[g + 8][8 + 2 * t], A[g + 8][8 + 2 * t + 1]) = r[3]
            (B[2 * t][g], B[2 * t + 1][g]) = b0[lane]
            (B[8 + 2 * t][g], B[8 + 2 * t + 1][g]) = b1[lane]
        }
        for lane in 0..<32 {
            let g = lane / 4, t = lane % 4
            for e in 0..<4 {
                let row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1)
                for k in 0..<16 { c[lane][e] += A[row][k] * B[k][col] }
            }
        }
    }

    @Test(arguments: [64, 128])
    func warpComputesQKAndPV(headDim: Int) {
        let BM = 128, BN = 64, MT = 2, NT = BN / 8, DT = headDim / 8, KSTEPS = headDim / 16
        let config = PrefillTileConfig.standard(headDim: headDim)
        let SROW = headDim * 2 + 16
        let sQ = 0, sK = BM * SROW, sV = sK + 2 * BN * SROW
        var rng = SplitMix64(seed: UInt64(headDim))
        var smem = SharedMemory(words: [Float](repeating: .nan, count: (BM + 4 * BN) * SROW / 2))
        func swz(_ row: Int, _ chunk: Int) -> Int { row * SROW + chunk * 16 }
        // Logical tiles (small integers: exact in Float).
        let q = (0..<BM).map { _ in (0..<headDim).map { _ in Float(Int(rng.next() % 7) - 3) } }
        let k = (0..<BN).map { _ in (0..<headDim).map { _ in Float(Int(rng.next() % 7) - 3) } }
        let v = (0..<BN).map { _ in (0..<headDim).map { _ in Float(Int(rng.next() % 7) - 3) } }
        let stage = 1
        for r in 0..<BM { for x in 0..<headDim { smem.words[(sQ + r * SROW) / 2 + x] = q[r][x] } }
        for r in 0..<BN {
            for x in 0..<headDim {
                smem.words[(sK + stage * BN * SROW + r * SROW) / 2 + x] = k[r][x]
                smem.words[(sV + stage * BN * SROW + r * SROW) / 2 + x] = v[r][x]
            }
        }
        for warp in [0, 3] {
            func mtRow0(_ mt: Int) -> Int { mt * (BM / MT) + warp * 16 }  // INTERLEAVE
            #expect(mtRow0(1) == config.rowOfMTile(warp: warp, 1))
            // The kernel's lane addresses.
            let qFrag = { (lane: Int) in sQ + swz(mtRow0(0) + (lane & 15), lane >> 4) }
            let kFrag = { (lane: Int) in sK + swz(((lane >> 4) << 3) + (lane & 7), (lane >> 3) & 1) }
            let vFrag = { (lane: Int) in sV + swz((((lane >> 3) & 1) << 3) + (lane & 7), lane >> 4) }
            let kTile = { (lane: Int) in kFrag(lane) + stage * BN * SROW }
            let vTile = { (lane: Int) in vFrag(lane) + stage * BN * SROW }
            var s = [[[[Float]]]](repeating: [[[Float]]](repeating: [[Float]](repeating: [0, 0, 0, 0], count: 32), count: NT), count: MT)
            for ks in 0..<KSTEPS {
                let a = (0..<MT).map { mt in Self.ldmatrix(smem, { qFrag($0) + (mtRow0(mt) - mtRow0(0)) * SROW + ks * 32 }, trans: false) }
                for np in 0..<NT / 2 {
                    let b = Self.ldmatrix(smem, { kTile($0) + np * 16 * SROW + ks * 32 }, trans: false)
                    for mt in 0..<MT {
                        Self.mma(&s[mt][2 * np], a[mt], b.map { $0[0] }, b.map { $0[1] })
                        Self.mma(&s[mt][2 * np + 1], a[mt], b.map { $0[2] }, b.map { $0[3] })
                    }
                }
            }
            // S against Q K^T, element by element through the C layout.
            var mismatches = 0
            for mt in 0..<MT {
                for nt in 0..<NT {
                    for lane in 0..<32 {
                        for e in 0..<4 {
                            let row = mtRow0(mt) + (lane >> 2) + ((e & 2) != 0 ? 8 : 0)
                            let key = nt * 8 + 2 * (lane & 3) + (e & 1)
                            let expected = (0..<headDim).reduce(Float(0)) { $0 + q[row][$1] * k[key][$1] }
                            if s[mt][nt][lane][e] != expected { mismatches += 1 }
                        }
                    }
                }
            }
            let scores = (0..<BM).map { row in (0..<BN).map { key in (0..<headDim).reduce(Float(0)) { $0 + q[row][$1] * k[key][$1] } } }
            // P: small integers derived from S (exact), packed as the kernel packs them.
            func pOf(_ x: Float) -> Float { Float(Int(x) % 5) }
            var o = [[[[Float]]]](repeating: [[[Float]]](repeating: [[Float]](repeating: [0, 0, 0, 0], count: 32), count: DT), count: MT)
            for kk in 0..<BN / 16 {
                let pa = (0..<MT).map { mt in
                    (0..<32).map { lane -> [(Float, Float)] in
                        let c0 = s[mt][2 * kk][lane], c1 = s[mt][2 * kk + 1][lane]
                        return [(pOf(c0[0]), pOf(c0[1])), (pOf(c0[2]), pOf(c0[3])), (pOf(c1[0]), pOf(c1[1])), (pOf(c1[2]), pOf(c1[3]))]
                    }
                }
                for dp in 0..<DT / 2 {
                    let b = Self.ldmatrix(smem, { vTile($0) + kk * 16 * SROW + dp * 32 }, trans: true)
                    for mt in 0..<MT {
                        Self.mma(&o[mt][2 * dp], pa[mt], b.map { $0[0] }, b.map { $0[1] })
                        Self.mma(&o[mt][2 * dp + 1], pa[mt], b.map { $0[2] }, b.map { $0[3] })
                    }
                }
            }
            for mt in 0..<MT {
                for dt in 0..<DT {
                    for lane in 0..<32 {
                        for e in 0..<4 {
                            let row = mtRow0(mt) + (lane >> 2) + ((e & 2) != 0 ? 8 : 0)
                            let col = dt * 8 + 2 * (lane & 3) + (e & 1)
                            let expected = (0..<BN).reduce(Float(0)) { acc, key in acc + pOf(scores[row][key]) * v[key][col] }
                            if o[mt][dt][lane][e] != expected { mismatches += 1 }
                        }
                    }
                }
            }
            #expect(mismatches == 0, "warp \(warp): \(mismatches) elements of S or O differ")
        }
    }
}

/// The bound the GPU model sizes its per-layer prefill descriptors from (tiles <= tokens / 16 +
/// requests): no plan may exceed it, or a step would have to allocate.
@Suite struct PrefillPlanBoundTests {
    @Test func tilesNeverExceedTheBound() {
        var rng = SplitMix64(seed: 5)
        for trial in 0..<200 {
            let headDim = trial % 2 == 0 ? 64 : 128
            let p = AttentionParameters(queryHeads: 8, kvHeads: 2, headDim: headDim, dtype: .bf16)
            let count = 1 + Int(rng.next() % 40)
            var requests: [AttentionRequest] = []
            var start = 0
            for i in 0..<count {
                let queries = 1 + Int(rng.next() % (trial % 3 == 0 ? 3 : 700))
                let length = queries + Int(rng.next() % 3000)
                let view = { (base: UInt64) in
                    KVView(base: base, tokenStride: 2 * headDim * 2, headStride: headDim * 2, blockStride: 1 << 21,
                           tokensPerBlock: (1 << 21) / (2 * headDim * 2), length: length, readableTokens: length)
                }
                requests.append(AttentionRequest(key: view(UInt64(i + 1) << 32), value: view(UInt64(i + 1) << 32 + (1 << 30)),
                                                 queryStart: start, queryCount: queries))
                start += queries
            }
            for config in PrefillTileConfig.candidates(headDim: headDim) {
                let plan = PrefillPlan(p, requests: requests, config: config)
                #expect(plan.tileCount <= start / 16 + count, "trial \(trial): \(plan.tileCount) tiles for \(start) rows, \(count) requests")
                #expect(plan.descriptor.count <= 32 * count + 8 * (start / 16 + count))
            }
        }
    }
}
