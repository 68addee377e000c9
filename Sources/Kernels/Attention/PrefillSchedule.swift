/// Tile shapes and the host-side schedule of the prefill/extend attention kernel.
///
/// The kernel runs one thread block per (query tile, query head). A query tile is up to
/// `blockM` consecutive query rows of one request; the block walks the request's key tiles of
/// `blockN` tokens that any of its rows can see, from the last to the first. The functions
/// here are the same index math the kernel does, in Swift, so it can be tested on the CPU.

/// One tile shape of the kernel.
public struct PrefillTileConfig: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Query rows per block.
    public var blockM: Int
    /// Key tokens per tile.
    public var blockN: Int
    /// Warps per block. mma.sync: each owns blockM / warps query rows (one or two m16 tiles);
    /// wgmma: four per warpgroup, each computing warpgroup owning 64 rows (plus the producer's
    /// four with `producer`).
    public var warps: Int
    /// `__launch_bounds__` minimum blocks per multiprocessor (caps registers).
    public var minBlocks: Int
    /// Whether a warp's m16 tiles are spread over the block (warp w owns rows w*16 + m*blockM/mTiles)
    /// rather than consecutive: on the causal diagonal every warp then has a share of the work.
    public var interleave: Bool

    /// Which tensor-core instructions the kernel uses.
    public var engine: PrefillEngine
    /// wgmma: warpgroup 0 only loads K/V (the others compute), in a ring of `stages` tiles.
    public var producer = false
    public var stages = 2
    /// wgmma producer: consumer warpgroups take turns issuing their products.
    public var pingpong = false

    public init(blockM: Int, blockN: Int, warps: Int, minBlocks: Int = 1, interleave: Bool = true) {
        precondition(blockM > 0 && blockN > 0 && warps > 0, "tile sizes must be positive")
        precondition(blockM % (16 * warps) == 0, "each warp needs a multiple of 16 query rows")
        precondition(blockN % 16 == 0, "key tiles are whole 16-token mma steps")
        precondition(blockM / warps <= 32, "a warp holds one or two m16 tiles")
        self.blockM = blockM
        self.blockN = blockN
        self.warps = warps
        self.minBlocks = minBlocks
        self.interleave = interleave
        engine = .mmaSync
    }

    /// A warp-specialized Hopper shape: one producer warpgroup loading K/V into `stages`
    /// stages, `consumers` x 64 query rows.
    public static func wgmmaProducer(consumers: Int, blockN: Int, stages: Int, pingpong: Bool = false) -> PrefillTileConfig {
        precondition(consumers >= 1 && consumers <= 3, "1 to 3 consumer warpgroups")
        precondition(stages >= 2 && stages <= 4, "2 to 4 stages")
        precondition(!pingpong || consumers >= 2, "pingpong needs two consumers")
        var config = wgmma(warpgroups: consumers, blockN: blockN)
        config.warps = 4 * (consumers + 1)
        config.producer = true
        config.stages = stages
        config.pingpong = pingpong
        return config
    }

    /// A Hopper (sm_90a) shape: `warpgroups` x 64 query rows, `blockN`-key tiles (64 or 128).
    public static func wgmma(warpgroups: Int, blockN: Int, minBlocks: Int = 1) -> PrefillTileConfig {
        precondition(warpgroups >= 1 && warpgroups <= 4, "1 to 4 warpgroups")
        precondition(blockN == 64 || blockN == 128, "key tiles of 64 or 128 tokens")
        var config = PrefillTileConfig(blockM: 64 * warpgroups, blockN: blockN, warps: 4 * warpgroups, minBlocks: minBlocks)
        config.engine = .wgmma
        return config
    }

    /// m16 tiles per warp.
    public var mTiles: Int { warpRows / 16 }

    /// First row (in the query tile) of m16 tile `m` of warp `warp`.
    public func rowOfMTile(warp: Int, _ m: Int) -> Int {
        interleave ? m * (blockM / mTiles) + warp * 16 : warp * warpRows + m * 16
    }

    public var threads: Int { warps * 32 }
    public var warpRows: Int { blockM / warps }

    /// Dynamic shared memory: the Q tile and two stages of K and V tiles; mma.sync rows are
    /// padded by 16 bytes, wgmma tiles are swizzled and need 1 KiB to align their base.
    public func sharedMemoryBytes(headDim: Int, elementBytes: Int = 2) -> Int {
        switch engine {
        case .mmaSync: (blockM + 4 * blockN) * (headDim * elementBytes + 16)
        case .wgmma: (blockM + 2 * stages * blockN) * headDim * elementBytes + 1024 + (producer ? 8 * (1 + 2 * stages) : 0)
        }
    }

    /// The shape used unless one is asked for: 128 query rows in 4 warps of 2 interleaved m16
    /// tiles, 64-key tiles, 2 blocks per multiprocessor (255 registers). On H100 it was the
    /// fastest of `candidates` for prefill and within 1-2% of the best for extend (2026-11-27).
    /// `wgmma`: the Hopper kernel's standard shape instead (sm_90a devices only): a producer
    /// warpgroup feeding two consumer warpgroups of 64 query rows through a 3-stage ring of
    /// 128-key tiles, the consumers taking turns on the tensor cores. On an H200 it was the
    /// fastest shape, or within 1% of it, on every prefill and extend case (2026-11-27:
    /// 491 TFLOP/s at 4 x 4k, 513 on extend 8 x 4k+512, against 469 and 476 for the best
    /// shape without a producer).
    public static func standard(headDim: Int, wgmma: Bool = false) -> PrefillTileConfig {
        wgmma ? .wgmmaProducer(consumers: 2, blockN: 128, stages: 3, pingpong: true)
            : PrefillTileConfig(blockM: 128, blockN: 64, warps: 4, minBlocks: 2)
    }

    /// Every shape `vtensor dev prefill` checks and measures (the first is the standard one):
    /// the standard, the same with consecutive m-tiles, and 8 warps of 16 rows (half the
    /// registers, 4 warps per scheduler, but twice the shared-memory reads per FLOP); with
    /// `wgmma`, the Hopper kernel's: its standard, the same without turns, three consumers on
    /// 64-key tiles, and the kernel without a producer (every warpgroup loads and computes).
    public static func candidates(headDim: Int, wgmma: Bool = false) -> [PrefillTileConfig] {
        [standard(headDim: headDim),
         PrefillTileConfig(blockM: 128, blockN: 64, warps: 4, minBlocks: 2, interleave: false),
         PrefillTileConfig(blockM: 128, blockN: 64, warps: 8, minBlocks: 2)]
            + (wgmma ? [standard(headDim: headDim, wgmma: true),
                        .wgmmaProducer(consumers: 2, blockN: 128, stages: 3),
                        .wgmmaProducer(consumers: 3, blockN: 64, stages: 3, pingpong: true),
                        .wgmma(warpgroups: 3, blockN: 128)] : [])
    }

    /// The shapes the paged baseline runs: each engine's standard one.
    public static func pagedCandidates(headDim: Int, wgmma: Bool = false) -> [PrefillTileConfig] {
        [standard(headDim: headDim)] + (wgmma ? [standard(headDim: headDim, wgmma: true)] : [])
    }

    public var description: String {
        (engine == .wgmma ? (producer ? "wgmma producer \(stages)-stage " + (pingpong ? "pingpong " : "") : "wgmma ") : "") + "\(blockM)x\(blockN)/\(warps)w" + (minBlocks > 1 ? "/\(minBlocks)b" : "") + (interleave || mTiles == 1 ? "" : "/consecutive")
    }
}

/// The tensor-core instructions of a prefill kernel.
public enum PrefillEngine: String, Sendable, Hashable, Codable {
    /// `mma.sync` m16n8k16 (sm_80 and later): `PrefillKernelSource`.
    case mmaSync
    /// Hopper's asynchronous warpgroup `wgmma` (sm_90a only): `PrefillWGMMAKernelSource`.
    case wgmma
}

/// Which query tiles the kernel runs, and in what order.
public struct PrefillSchedule: Sendable, Equatable {
    public struct Tile: Sendable, Equatable {
        /// Index of the request in the batch.
        public var request: Int
        /// First query row of the tile, counted from the request's first query.
        public var queryBegin: Int
        /// Key tiles the tile visits (its work).
        public var keyTiles: Int
    }

    /// Longest first, so the last blocks of the grid are short ones.
    public var tiles: [Tile]

    /// - Parameter requests: (KV length, query count) per request, in batch order.
    public init(requests: [(length: Int, queryCount: Int)], blockM: Int, blockN: Int, window: Int?) {
        var tiles: [Tile] = []
        for (r, request) in requests.enumerated() {
            precondition(request.queryCount >= 0 && request.queryCount <= request.length, "queries must be the last tokens of the KV")
            var begin = 0
            while begin < request.queryCount {
                let range = Self.keyTileRange(length: request.length, queryCount: request.queryCount, queryBegin: begin,
                                              blockM: blockM, blockN: blockN, window: window)
                tiles.append(Tile(request: r, queryBegin: begin, keyTiles: range.count))
                begin += blockM
            }
        }
        // Stable: equal work keeps batch order (neighbouring tiles share K/V in L2).
        self.tiles = tiles.enumerated().sorted { a, b in
            a.element.keyTiles != b.element.keyTiles ? a.element.keyTiles > b.element.keyTiles : a.offset < b.offset
        }.map(\.element)
    }

    /// Positions of the tile's first and last valid query rows.
    public static func queryPositions(length: Int, queryCount: Int, queryBegin: Int, blockM: Int) -> ClosedRange<Int> {
        let rows = min(blockM, queryCount - queryBegin)
        let first = length - queryCount + queryBegin
        return first...(first + rows - 1)
    }

    /// The key tiles a query tile visits: every tile holding a key some row of it can see.
    public static func keyTileRange(length: Int, queryCount: Int, queryBegin: Int, blockM: Int, blockN: Int, window: Int?) -> Range<Int> {
        let positions = queryPositions(length: length, queryCount: queryCount, queryBegin: queryBegin, blockM: blockM)
        let keyBegin = window.map { max(0, positions.lowerBound - $0 + 1) } ?? 0
        return (keyBegin / blockN)..<(positions.upperBound / blockN + 1)
    }

    /// Whether a warp whose rows sit at `positions` sees any key of `keys` (else it skips the tile).
    public static func warpSeesTile(positions: ClosedRange<Int>, keys: ClosedRange<Int>, window: Int?) -> Bool {
        keys.lowerBound <= positions.upperBound && (window.map { keys.upperBound > positions.lowerBound - $0 } ?? true)
    }

    /// Whether some (row, key) pair of the warp and tile is masked (else no mask is applied).
    public static func warpNeedsMask(positions: ClosedRange<Int>, keys: ClosedRange<Int>, window: Int?) -> Bool {
        keys.upperBound > positions.lowerBound || (window.map { keys.lowerBound <= positions.upperBound - $0 } ?? false)
    }

    /// The multiplier the kernel uses to divide a token index by `tokensPerBlock`:
    /// `t / d == (t * magic) >> 32` for every `t` with `t * d < 2^32`.
    public static func divisionMagic(_ divisor: Int) -> UInt64 {
        precondition(divisor >= 1 && divisor < 1 << 31, "bad divisor \(divisor)")
        return (1 << 32) / UInt64(divisor) + 1
    }

    /// `divisionMagic` as the kernel takes it: 32 bits, `t / d == umulhi(t, magic)`; 0 for
    /// d == 1 (whose magic, 2^32 + 1, does not fit), which the kernel reads as "t itself".
    public static func divisionMagic32(_ divisor: Int) -> UInt32 {
        divisor == 1 ? 0 : UInt32(divisionMagic(divisor))
    }
}
