/// CUDA source of the Hopper prefill/extend attention kernel: the same contract, schedule and
/// K/V addressing as `PrefillKernelSource` (read that first), with both products on `wgmma`
/// (sm_90a) instead of `mma.sync`.
///
/// Compile-time macros: HEAD_DIM (64 or 128), BLOCK_M (64 per warpgroup), BLOCK_N (64 or 128),
/// NWARPS (4 per warpgroup), MIN_BLOCKS, FP16 (0: bf16), PAGED (see `PrefillKernelSource`).
///
/// Shared memory holds Q (BLOCK_M rows) and stages of K and V tiles (BLOCK_N rows) in the
/// tensor cores' 128-byte-swizzled layout: a row's 16-byte chunk c of column block c / 8 sits at
/// block * rows * 128 + row * 128 + ((c % 8) ^ (row % 8)) * 16, every 8-row atom 1024-byte
/// aligned. A compute warpgroup owns 64 query rows. Per key tile it computes S = Q K^T with
/// m64nBLOCK_Nk16 (Q and K both K-major in shared memory, one descriptor step of 32 bytes per
/// k16 inside a column block), runs the online softmax on S in registers (the accumulator
/// layout is mma.sync's m16n8 C layout, so the softmax is `PrefillKernelSource`'s), then
/// O += P V with P straight from registers as the A operand and V read transposed (MN-major)
/// from shared memory. Two kernels share these pieces: `simpleKernel` (every warpgroup loads
/// and computes, two stages, a block barrier per tile) and `producerKernel` (a loading
/// warpgroup and two or three computing ones, an mbarrier ring; the standard on sm_90).
/// cp.async writes reach the tensor cores' async proxy through a proxy fence by the writing
/// thread before the barrier that publishes them.
enum PrefillWGMMAKernelSource {
    /// `wgmma` wrappers: S = Q K^T (both operands in shared memory) for N = `sn`, and
    /// O += P V (A in registers, B transposed) for N = `on`. Inline PTX with one operand per
    /// accumulator register, written out here rather than by hand.
    static func wrappers(sn: Int, on: Int) -> String {
        func registers(_ count: Int, from first: Int = 0) -> String {
            (first..<(first + count)).map { "%\($0)" }.joined(separator: ", ")
        }
        func outputs(_ count: Int) -> String {
            (0..<count).map { "\"+f\"(d[\($0)])" }.joined(separator: ", ")
        }
        let s = sn / 2, o = on / 2
        return """
        // D (+)= A B for m64n\(sn)k16, A and B by shared-memory descriptor (K-major).
        __device__ __forceinline__ void wgmma_ss(float (&d)[\(s)], u64 descA, u64 descB, int accumulate) {
            asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %\(s + 2), 0;\\n"
                         "wgmma.mma_async.sync.aligned.m64n\(sn)k16.f32." WG_TYPE "." WG_TYPE " {\(registers(s))}, %\(s), %\(s + 1), p, 1, 1, 0, 0;\\n}\\n"
                         : \(outputs(s))
                         : "l"(descA), "l"(descB), "r"(accumulate));
        }
        // D += A B for m64n\(on)k16, A from registers, B by descriptor, transposed (MN-major).
        __device__ __forceinline__ void wgmma_rs(float (&d)[\(o)], const u32 (&a)[4], u64 descB) {
            asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, 1, 0;\\n"
                         "wgmma.mma_async.sync.aligned.m64n\(on)k16.f32." WG_TYPE "." WG_TYPE " {\(registers(o))}, {\(registers(4, from: o))}, %\(o + 4), p, 1, 1, 1;\\n}\\n"
                         : \(outputs(o))
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB));
        }
        // Keeps the compiler from touching accumulators across an asynchronous wgmma.
        template <int N> __device__ __forceinline__ void fence_registers(float (&d)[N]) {
        #pragma unroll
            for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
        }

        """
    }

    /// The program for one tile shape: `producer` picks the warp-specialized kernel.
    static func text(blockN: Int, headDim: Int, producer: Bool) -> String {
        prologue + wrappers(sn: blockN, on: headDim) + PrefillKernelSource.shared + helpers
            + (producer ? producerKernel : simpleKernel) + PrefillKernelSource.fill
    }

    static let prologue = #"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define ROW_BYTES (HEAD_DIM * 2)
#define CHUNKS (HEAD_DIM / 8)           // 16-byte chunks per row
#define COLUMN_BLOCKS (HEAD_DIM / 64)   // 128-byte column blocks per row
#define THREADS (NWARPS * 32)
#define WARPGROUPS (NWARPS / 4)
#define NT (BLOCK_N / 8)
#define DT (HEAD_DIM / 8)
#define KSTEPS (HEAD_DIM / 16)
#define Q_BYTES (BLOCK_M * ROW_BYTES)
#define KV_TILE_BYTES (BLOCK_N * ROW_BYTES)
#define RESCALE_SLACK 8.0f  // log2 of the largest P before a rescale
#ifndef PAGED
#define PAGED 0
#endif

static_assert(NWARPS % 4 == 0, "whole warpgroups");
static_assert(HEAD_DIM == 64 || HEAD_DIM == 128, "");
static_assert(BLOCK_N == 64 || BLOCK_N == 128, "");
static_assert(THREADS % CHUNKS == 0, "a thread loads one 16-byte column of its rows");
#define KV_LOADS ((BLOCK_N * CHUNKS + THREADS - 1) / THREADS)

#if FP16
#define WG_TYPE "f16"
#define CVT_OP "cvt.rn.f16x2.f32"
#else
#define WG_TYPE "bf16"
#define CVT_OP "cvt.rn.bf16x2.f32"
#endif

"""#

    static let helpers = #"""
// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled tile of `rows` rows.
__device__ __forceinline__ u32 swz(int row, int chunk, int rows) {
    return (u32)((chunk >> 3) * rows * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// Orders this thread's view of shared memory (generic proxy: cp.async and ordinary stores)
// before the tensor cores' reads (async proxy).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// A shared-memory matrix descriptor: start address, leading and stride byte offsets, 128-byte
// swizzle. Adding (bytes >> 4) moves the start (addresses stay below 2^18).
__device__ __forceinline__ u64 descriptor(u32 address, u32 leading, u32 stride) {
    return (u64)((address & 0x3FFFF) >> 4) | ((u64)(leading >> 4) << 16) | ((u64)(stride >> 4) << 32) | (1ull << 62);
}

// Where a block's work lies: its query rows and the key tiles they see (last to first).
struct TileSpan {
    int rows, firstPos, tileBegin, tileEnd;
    __device__ __forceinline__ TileSpan(const PrefillRequest &rq, const PrefillTile &tile, int window) {
        rows = imin(BLOCK_M, rq.queryCount - tile.queryBegin);
        firstPos = rq.length - rq.queryCount + tile.queryBegin;
        const int lastPos = firstPos + rows - 1;
        const int keyBegin = window > 0 ? imax(0, firstPos - window + 1) : 0;
        tileBegin = keyBegin / BLOCK_N;
        tileEnd = lastPos / BLOCK_N + 1;
    }
};

// One 16-byte column (`chunk`) of the K and V rows of key tile `t` into a stage, rows
// `row0`, `row0 + rowStep`, ... (tokens past the length are zero). Token t's row is at
// base + (t / tokensPerBlock) * blockStride + (t % tokensPerBlock) * tokenStride (PAGED: the
// block's page from the request's table); t / tokensPerBlock = umulhi(t, magic).
struct KVLoader {
    u64 kBase, vMinusK;
    const int *table;
    int keyLength;
    u32 tokenStride, blockStride, tokensPerBlock, blockMagic;
    int chunk;

    template <int LOADS, int ROW_STEP>
    __device__ __forceinline__ void load(int t, u32 kDst, u32 vDst, int row0) const {
#pragma unroll
        for (int j = 0; j < LOADS; ++j) {
            const int r = row0 + j * ROW_STEP;
            if ((BLOCK_N % ROW_STEP) != 0 && r >= BLOCK_N) break;
            const int token = t * BLOCK_N + r;
            const bool ok = token < keyLength;
            const u32 tk = ok ? (u32)token : 0u;
            const u32 blk = blockMagic ? __umulhi(tk, blockMagic) : tk;
#if PAGED
            const u32 page = (u32)__ldg(table + blk);
            const u64 k = kBase + (u64)page * blockStride + (u64)((tk - blk * tokensPerBlock) * tokenStride);
#else
            const u64 k = kBase + (u64)blk * blockStride + (u64)((tk - blk * tokensPerBlock) * tokenStride);
#endif
            const u32 off = swz(r, chunk, BLOCK_N);
            cp_async16(kDst + off, (const void *)k, ok ? 16 : 0);
            cp_async16(vDst + off, (const void *)(k + vMinusK), ok ? 16 : 0);
        }
    }
};

__device__ __forceinline__ KVLoader kv_loader(const PrefillRequest &rq, int kvHead, int chunk, u32 tokenStride, u64 headStride,
                                              u32 blockStride, u32 tokensPerBlock, u32 blockMagic, u64 kPool, u64 vPool) {
    KVLoader l;
#if PAGED
    l.table = (const int *)rq.key;
    l.kBase = kPool + (u64)kvHead * headStride + chunk * 16;
    l.vMinusK = vPool - kPool;
#else
    l.table = nullptr;
    l.kBase = rq.key + (u64)kvHead * headStride + chunk * 16;
    l.vMinusK = rq.value - rq.key;
#endif
    l.keyLength = rq.length;
    l.tokenStride = tokenStride;
    l.blockStride = blockStride;
    l.tokensPerBlock = tokensPerBlock;
    l.blockMagic = blockMagic;
    l.chunk = chunk;
    return l;
}

// Q rows of the tile into shared memory (rows past the request's queries are zero), by
// `threads` threads numbered `t`.
template <int THREADS_Q>
__device__ __forceinline__ void load_q(u32 sQ, const u16 *q, const PrefillRequest &rq, const PrefillTile &tile, int head,
                                       int queryHeads, int rows, int t) {
    const u64 rowStride = (u64)queryHeads * HEAD_DIM;
    const u16 *qBase = q + ((u64)(rq.queryStart + tile.queryBegin) * queryHeads + head) * HEAD_DIM;
#pragma unroll
    for (int j = 0; j < (BLOCK_M * CHUNKS + THREADS_Q - 1) / THREADS_Q; ++j) {
        const int i = t + j * THREADS_Q;
        if ((BLOCK_M * CHUNKS) % THREADS_Q != 0 && i >= BLOCK_M * CHUNKS) break;
        const int r = i / CHUNKS, c = i % CHUNKS;
        const bool ok = r < rows;
        cp_async16(sQ + swz(r, c, BLOCK_M), qBase + (u64)(ok ? r : 0) * rowStride + c * 8, ok ? 16 : 0);
    }
}

// One warpgroup's view of the block: its 64 rows, their positions, and the per-thread rows
// (row0 = this thread's first row in the tile; it also holds row0 + 8).
struct GroupRows {
    int row0, firstPos, rows;  // block's first position and row count (for masking)
    int groupFirstPos, groupLastPos;
    bool hasRows;
    __device__ __forceinline__ GroupRows(int groupRow0, int warpInGroup, int lane, const TileSpan &span) {
        row0 = groupRow0 + warpInGroup * 16 + (lane >> 2);
        firstPos = span.firstPos;
        rows = span.rows;
        hasRows = groupRow0 < span.rows;
        groupFirstPos = span.firstPos + imin(groupRow0, span.rows - 1);
        groupLastPos = span.firstPos + imin(groupRow0 + 63, span.rows - 1);
    }
    __device__ __forceinline__ bool sees(int key0, int window) const {
        return hasRows && key0 <= groupLastPos && (window <= 0 || key0 + BLOCK_N - 1 > groupFirstPos - window);
    }
    __device__ __forceinline__ bool needs_mask(int key0, int window) const {
        return key0 + BLOCK_N - 1 > groupFirstPos || (window > 0 && key0 <= groupLastPos - window);
    }
};

// Causal and window masks on a tile of scores in the accumulator layout (rows row0 and
// row0 + 8; two columns per n8 tile).
__device__ __forceinline__ void mask_scores(float (&s)[BLOCK_N / 2], const GroupRows &g, int key0, int window, int lane) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int row = g.row0 + ((e & 2) ? 8 : 0);
            const int pos = g.firstPos + imin(row, g.rows - 1);
            const int key = key0 + nt * 8 + 2 * (lane & 3) + (e & 1);
            if (key > pos || (window > 0 && key <= pos - window)) s[4 * nt + e] = neg_inf();
        }
}

// Online softmax of one tile (see PrefillKernelSource): scores become P in place; returns
// whether some row of the warp moved its maximum (then O must be scaled by `correction`).
__device__ __forceinline__ bool softmax_tile(float (&s)[BLOCK_N / 2], float (&rowMax)[2], float (&rowSum)[2],
                                             float (&correction)[2], float scaleLog2) {
    bool moved = false;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = neg_inf();
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * h], s[4 * nt + 2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float old = rowMax[h];
        const float candidate = mx * scaleLog2;
        const bool move = candidate > old + RESCALE_SLACK;
        const float newMax = move ? candidate : old;
        const float base = newMax == neg_inf() ? 0.f : newMax;
        correction[h] = move ? ex2(old - base) : 1.f;
        moved |= move;
        rowMax[h] = newMax;
        float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const float p0 = ex2(fmaf(s[4 * nt + 2 * h], scaleLog2, -base));
            const float p1 = ex2(fmaf(s[4 * nt + 2 * h + 1], scaleLog2, -base));
            s[4 * nt + 2 * h] = p0;
            s[4 * nt + 2 * h + 1] = p1;
            sum0 += p0;
            sum1 += p1;
        }
        rowSum[h] = rowSum[h] * correction[h] + (sum0 + sum1);
    }
    return __any_sync(0xffffffffu, moved);
}

__device__ __forceinline__ void rescale(float (&acc)[HEAD_DIM / 2], const float (&correction)[2]) {
#pragma unroll
    for (int i = 0; i < HEAD_DIM / 2; ++i) acc[i] *= correction[(i >> 1) & 1];
}

// P (fp32, accumulator layout) as m64k16 A fragments: mma.sync's A layout, 16 keys a step.
__device__ __forceinline__ void pack_p(u32 (&pa)[BLOCK_N / 16][4], const float (&s)[BLOCK_N / 2]) {
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
        pa[kk][0] = pack2(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = pack2(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = pack2(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = pack2(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

// S = Q K^T for one warpgroup (qDesc at its rows, kDesc at the stage), committed.
__device__ __forceinline__ void issue_scores(float (&s)[BLOCK_N / 2], u64 qDesc, u64 kDesc) {
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) {
        const u64 qStep = (u64)(((ks >> 2) * BLOCK_M * 128 + (ks & 3) * 32) >> 4);
        const u64 kStep = (u64)(((ks >> 2) * BLOCK_N * 128 + (ks & 3) * 32) >> 4);
        wgmma_ss(s, qDesc + qStep, kDesc + kStep, ks > 0);
    }
    wgmma_commit();
}

// O += P V (vDesc at the stage), committed.
__device__ __forceinline__ void issue_pv(float (&acc)[HEAD_DIM / 2], const u32 (&pa)[BLOCK_N / 16][4], u64 vDesc) {
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) wgmma_rs(acc, pa[kk], vDesc + (u64)((kk * 16 * 128) >> 4));
    wgmma_commit();
}

// V's descriptor: MN-major, column blocks BLOCK_N * 128 bytes apart (the leading offset),
// 8-key groups 1024 apart (the stride offset).
__device__ __forceinline__ u64 v_descriptor(u32 sV) { return descriptor(sV, BLOCK_N * 128, 1024); }

// O / l into this warp's own 16 rows of the Q tile (swizzled, as Q), then out with 16-byte
// stores. Only this warp touches those rows.
__device__ __forceinline__ void store_output(const float (&acc)[HEAD_DIM / 2], const float (&rowSum)[2], u32 sO, u16 *o,
                                             const PrefillRequest &rq, const PrefillTile &tile, int head, int queryHeads,
                                             int warpRow0, int rows, int lane) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = rowSum[h];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.f ? __fdividef(1.f, l) : 0.f;
        const int row = warpRow0 + (lane >> 2) + 8 * h;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
            const u32 v = pack2(acc[4 * dt + 2 * h] * inv, acc[4 * dt + 2 * h + 1] * inv);
            asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(sO + swz(row, dt, BLOCK_M) + 4 * (lane & 3)), "r"(v) : "memory");
        }
    }
    __syncwarp();
    u16 *out = o + ((u64)(rq.queryStart + tile.queryBegin) * queryHeads + head) * HEAD_DIM;
#pragma unroll
    for (int j = 0; j < 16 * CHUNKS / 32; ++j) {
        const int i = lane + 32 * j;
        const int row = warpRow0 + i / CHUNKS, c = i % CHUNKS;
        if (row < rows) {
            uint4 v;
            asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(sO + swz(row, c, BLOCK_M)) : "memory");
            *(uint4 *)(out + (u64)row * queryHeads * HEAD_DIM + c * 8) = v;
        }
    }
}

#if PAGED
#define POOL_PARAMS , u64 kPool, u64 vPool
#define POOL_ARGS kPool, vPool
#else
#define POOL_PARAMS
#define POOL_ARGS 0, 0
#endif
#define KERNEL_PARAMS const u16 *__restrict__ q, u16 *__restrict__ o, \
    const PrefillRequest *__restrict__ requests, const PrefillTile *__restrict__ tiles, \
    int queryHeads, int groupSize, float scaleLog2, int window, \
    u32 tokenStride, u64 headStride, u32 blockStride, u32 tokensPerBlock, u32 blockMagic POOL_PARAMS

"""#

    /// Every warpgroup computes and loads: K/V tiles by cp.async one tile ahead, a block
    /// barrier per tile (so the warpgroups run in step).
    static let simpleKernel = #"""
static_assert(BLOCK_M == 64 * WARPGROUPS, "each warpgroup owns 64 query rows");

extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) vt_prefill_attention(KERNEL_PARAMS) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const int head = blockIdx.x % queryHeads;
    const PrefillTile tile = tiles[blockIdx.x / queryHeads];
    const PrefillRequest rq = requests[tile.request];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const TileSpan span(rq, tile, window);
    const GroupRows g((warp >> 2) * 64, warp & 3, lane, span);

    // Swizzled tiles need 1024-byte-aligned atoms: round the base up (the launch adds 1 KiB).
    const u32 sQ = (smem_address(smem) + 1023u) & ~1023u;
    const u32 sK = sQ + Q_BYTES;
    const u32 sV = sK + 2 * KV_TILE_BYTES;

    load_q<THREADS>(sQ, q, rq, tile, head, queryHeads, span.rows, tid);
    const KVLoader loader = kv_loader(rq, head / groupSize, tid % CHUNKS, tokenStride, headStride, blockStride,
                                      tokensPerBlock, blockMagic, POOL_ARGS);
    loader.load<KV_LOADS, THREADS / CHUNKS>(span.tileEnd - 1, sK, sV, tid / CHUNKS);
    cp_async_commit();

    float acc[HEAD_DIM / 2];
#pragma unroll
    for (int i = 0; i < HEAD_DIM / 2; ++i) acc[i] = 0.f;
    float rowMax[2] = {neg_inf(), neg_inf()}, rowSum[2] = {0.f, 0.f};

    const u64 qDesc = descriptor(sQ + (warp >> 2) * 64 * 128, 16, 1024);
    const u64 kDesc = descriptor(sK, 16, 1024);
    const u64 vDesc = v_descriptor(sV);

    int stage = 0;
    for (int t = span.tileEnd - 1; t >= span.tileBegin; --t) {
        cp_async_wait_all();
        fence_proxy_async();
        __syncthreads();  // tile t is in shared memory; every warpgroup is done with the other stage
        if (t > span.tileBegin)
            loader.load<KV_LOADS, THREADS / CHUNKS>(t - 1, sK + (stage ^ 1) * KV_TILE_BYTES, sV + (stage ^ 1) * KV_TILE_BYTES, tid / CHUNKS);
        cp_async_commit();

        const int key0 = t * BLOCK_N;
        if (g.sees(key0, window)) {
            const u64 stageStep = (u64)((stage * KV_TILE_BYTES) >> 4);
            float s[BLOCK_N / 2];
            wgmma_fence();
            issue_scores(s, qDesc, kDesc + stageStep);
            wgmma_wait<0>();
            fence_registers(s);
            if (g.needs_mask(key0, window)) mask_scores(s, g, key0, window, lane);
            float correction[2];
            if (softmax_tile(s, rowMax, rowSum, correction, scaleLog2)) rescale(acc, correction);
            u32 pa[BLOCK_N / 16][4];
            pack_p(pa, s);
            wgmma_fence();
            issue_pv(acc, pa, vDesc + stageStep);
            wgmma_wait<0>();
            fence_registers(acc);
        }
        stage ^= 1;
    }
    cp_async_wait_all();
    if (!g.hasRows) return;
    store_output(acc, rowSum, sQ, o, rq, tile, head, queryHeads, (warp >> 2) * 64 + (warp & 3) * 16, span.rows, lane);
}

"""#

    /// Warpgroup 0 produces, the others consume: the producer's 128 threads copy Q and then
    /// K/V tiles into a ring of STAGES stages with cp.async and publish each on the stage's
    /// `full` mbarrier once their own copies have landed (wait, proxy fence, arrive);
    /// consumers wait on it, run the tile, and release the stage on its `empty` barrier (one
    /// arrival per warp). A consumer issues S = Q K^T of tile i together with O += P V of tile
    /// i - 1 and runs tile i's softmax while the tensor cores do the latter; with PINGPONG the
    /// consumers take turns issuing. setmaxnreg moves registers from the producer to the
    /// consumers. (perf.md records the variants measured and dropped: consumers that wait for
    /// P V before the next S, and publication by cp.async.mbarrier.arrive.)
    static let producerKernel = #"""
#define CONSUMERS (WARPGROUPS - 1)
static_assert(BLOCK_M == 64 * CONSUMERS, "each consumer warpgroup owns 64 query rows");
#ifndef STAGES
#define STAGES 2
#endif
#ifndef PINGPONG
#define PINGPONG 0
#endif
#if PINGPONG && CONSUMERS < 2
#error "PINGPONG needs at least two consumer warpgroups"
#endif
#ifndef PRODUCER_REGS
#define PRODUCER_REGS 56
#endif
#ifndef CONSUMER_REGS
#define CONSUMER_REGS ((((512 - PRODUCER_REGS) / CONSUMERS) / 8) * 8 > 240 ? 240 : (((512 - PRODUCER_REGS) / CONSUMERS) / 8) * 8)
#endif

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    asm volatile("{\n.reg .pred done;\nWAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}

extern "C" __global__ void __launch_bounds__(THREADS, 1) vt_prefill_attention(KERNEL_PARAMS) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const int head = blockIdx.x % queryHeads;
    const PrefillTile tile = tiles[blockIdx.x / queryHeads];
    const PrefillRequest rq = requests[tile.request];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const TileSpan span(rq, tile, window);
    const int tileCount = span.tileEnd - span.tileBegin;

    const u32 sQ = (smem_address(smem) + 1023u) & ~1023u;
    const u32 sK = sQ + Q_BYTES;
    const u32 sV = sK + STAGES * KV_TILE_BYTES;
    const u32 qFull = sV + STAGES * KV_TILE_BYTES;  // then full[STAGES], empty[STAGES]
    const u32 full0 = qFull + 8, empty0 = full0 + 8 * STAGES;
    if (tid == 0) {
        mbar_init(qFull, 128);
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(full0 + 8 * s, 128);
            mbar_init(empty0 + 8 * s, 4 * CONSUMERS);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warp < 4) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(PRODUCER_REGS));
        load_q<128>(sQ, q, rq, tile, head, queryHeads, span.rows, tid);
        const KVLoader loader = kv_loader(rq, head / groupSize, tid % CHUNKS, tokenStride, headStride, blockStride,
                                          tokensPerBlock, blockMagic, POOL_ARGS);
        auto issue = [&](int i) {
            const int s = i % STAGES;
            loader.load<(BLOCK_N * CHUNKS) / 128, 128 / CHUNKS>(span.tileEnd - 1 - i, sK + s * KV_TILE_BYTES,
                                                                sV + s * KV_TILE_BYTES, tid / CHUNKS);
        };
        // Each tile is published once this thread's copies of it have landed: wait, fence
        // (nothing else in flight, so the fence waits for nothing), release-arrive; only then
        // the next tile is issued. One tile in flight per thread; the ring's other stages keep
        // the consumers fed.
        cp_async_commit();
        issue(0);
        cp_async_commit();
        asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        fence_proxy_async();
        mbar_arrive(qFull);
        for (int i = 1; i < tileCount; ++i) {
            cp_async_wait_all();
            fence_proxy_async();
            mbar_arrive(full0 + 8 * ((i - 1) % STAGES));
            if (i >= STAGES) mbar_wait(empty0 + 8 * (i % STAGES), ((i / STAGES) - 1) & 1);
            issue(i);
            cp_async_commit();
        }
        cp_async_wait_all();
        fence_proxy_async();
        mbar_arrive(full0 + 8 * ((tileCount - 1) % STAGES));
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(CONSUMER_REGS));
        const int consumer = (warp >> 2) - 1;
        const GroupRows g(consumer * 64, warp & 3, lane, span);
        float acc[HEAD_DIM / 2];
#pragma unroll
        for (int i = 0; i < HEAD_DIM / 2; ++i) acc[i] = 0.f;
        float rowMax[2] = {neg_inf(), neg_inf()}, rowSum[2] = {0.f, 0.f};
        const u64 qDesc = descriptor(sQ + consumer * 64 * 128, 16, 1024);
        const u64 kDesc = descriptor(sK, 16, 1024);
        const u64 vDesc = v_descriptor(sV);
        auto release = [&](int s) {
            __syncwarp();
            if (lane == 0) mbar_arrive(empty0 + 8 * s);
        };
        mbar_wait(qFull, 0);

        // The tiles this warpgroup sees are one run [first, last] of the ring's order; the
        // others it only lets pass. Each phase is its own straight loop: ptxas serializes
        // wgmma issued under a branch it cannot prove uniform (C7520).
        int first = tileCount, last = -1;
        for (int i = 0; i < tileCount; ++i)
            if (g.sees((span.tileEnd - 1 - i) * BLOCK_N, window)) { first = imin(first, i); last = i; }
        auto wait_full = [&](int i) {
            mbar_wait(full0 + 8 * (i % STAGES), (i / STAGES) & 1);
        };
        auto stage_of = [&](int i) { return (u64)(((i % STAGES) * KV_TILE_BYTES) >> 4); };
        // Scores of tile i: mask and softmax (P in s_; O's rescale is the caller's).
        auto scores_softmax = [&](float (&s_)[BLOCK_N / 2], int i, float (&correction)[2]) {
            const int key0 = (span.tileEnd - 1 - i) * BLOCK_N;
            fence_registers(s_);
            if (g.needs_mask(key0, window)) mask_scores(s_, g, key0, window, lane);
            return softmax_tile(s_, rowMax, rowSum, correction, scaleLog2);
        };

        // PINGPONG: consumers take turns issuing their products, one phase per tile plus a
        // last one (the final P V), in a ring of named barriers 1..CONSUMERS: while one
        // warpgroup's products run, the others do their softmax. Every consumer runs every
        // phase, issuing nothing in those of tiles it does not see.
#if PINGPONG
        auto turn_wait = [&]() { asm volatile("bar.sync %0, 256;\n" ::"r"(1 + consumer) : "memory"); };
        auto turn_pass = [&]() { asm volatile("bar.arrive %0, 256;\n" ::"r"(1 + (consumer + 1) % CONSUMERS) : "memory"); };
        if (consumer == CONSUMERS - 1) turn_pass();  // consumer 0 starts
#else
        auto turn_wait = [&]() {};
        auto turn_pass = [&]() {};
#endif
        for (int i = 0; i < imin(first, tileCount); ++i) { wait_full(i); turn_wait(); turn_pass(); release(i % STAGES); }
        if (first <= last) {
            u32 pa[BLOCK_N / 16][4];
            {
                wait_full(first);
                float s_[BLOCK_N / 2];
                turn_wait();
                wgmma_fence();
                issue_scores(s_, qDesc, kDesc + stage_of(first));
                turn_pass();
                wgmma_wait<0>();
                float correction[2];
                scores_softmax(s_, first, correction);  // O is still zero: no rescale
                pack_p(pa, s_);
            }
            for (int i = first + 1; i <= last; ++i) {
                wait_full(i);
                float s_[BLOCK_N / 2];
                turn_wait();
                wgmma_fence();
                issue_scores(s_, qDesc, kDesc + stage_of(i));
                issue_pv(acc, pa, vDesc + stage_of(i - 1));
                turn_pass();
                wgmma_wait<1>();
                float correction[2];
                const bool moved = scores_softmax(s_, i, correction);
                wgmma_wait<0>();
                fence_registers(acc);
                release((i - 1) % STAGES);
                if (moved) rescale(acc, correction);
                pack_p(pa, s_);
            }
            turn_wait();
            wgmma_fence();
            issue_pv(acc, pa, vDesc + stage_of(last));
            turn_pass();
            wgmma_wait<0>();
            fence_registers(acc);
            release(last % STAGES);
        }
        else {
            turn_wait();  // the last phase, with nothing to issue
            turn_pass();
        }
        for (int i = imax(last + 1, first); i < tileCount; ++i) { wait_full(i); turn_wait(); turn_pass(); release(i % STAGES); }
#if PINGPONG
        if (consumer == 0) turn_wait();  // the ring's last pass
#endif
        if (!g.hasRows) return;
        store_output(acc, rowSum, sQ, o, rq, tile, head, queryHeads, consumer * 64 + (warp & 3) * 16, span.rows, lane);
    }
}

"""#
}
