/// CUDA source of the prefill/extend attention kernel (FlashAttention-2 style on mma.sync).
///
/// Compile-time macros: HEAD_DIM (64 or 128), BLOCK_M, BLOCK_N, NWARPS, MIN_BLOCKS, INTERLEAVE
/// (1: a warp's m16 tiles spread over the block), FP16 (0: bf16), PAGED (0 or undefined:
/// virtual-tensor views; 1: the paged baseline, vLLM's layout, see below).
///
/// Block = (query tile, query head), from a host-built tile table (longest first). The Q tile
/// (BLOCK_M rows) and two stages of K/V tiles (BLOCK_N tokens) live in shared memory, rows of
/// HEAD_DIM 16-bit values padded by 16 bytes so that ldmatrix's 8 rows fall in distinct banks
/// and every fragment address is one base register plus an immediate. Each warp owns
/// BLOCK_M / NWARPS query rows (MT m16 tiles, spread over the block); a warp, or one of its
/// m16 tiles, that sees no key of a key tile skips it, and masks are applied only on tiles
/// that hide some (row, key) pair. Per key tile: S = Q K^T with m16n8k16 mma (Q and K
/// fragments by ldmatrix), online softmax in fp32 with exp2 (log2 e folded into the scale; the
/// running max moves only when it grows by more than 2^8, so O is rarely rescaled), then
/// O += P V with P taken straight from the S accumulators and V by ldmatrix.trans. The next
/// tile's K/V are loaded by cp.async (16-byte, zero-filled past the KV length) while this one
/// is computed; token t's row is at
/// base + (t / tokensPerBlock) * blockStride + (t % tokensPerBlock) * tokenStride + head * headStride.
/// PAGED: the same kernel with block-table addressing: a request's `key` is its int32 block
/// table, tokensPerBlock is the page size and blockStride the page's bytes, and token t's row
/// is at pool + table[t / tokensPerBlock] * blockStride + (t % tokensPerBlock) * tokenStride
/// + head * headStride, in the K pool and the V pool (two extra kernel arguments).
/// O leaves through the warp's own Q rows in shared memory with 16-byte stores.
enum PrefillKernelSource {
    static let text = prologue + shared + mmaKernel + fill

    static let prologue = #"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define ROW_BYTES (HEAD_DIM * 2)
#define CHUNKS (HEAD_DIM / 8)
#define THREADS (NWARPS * 32)
#define WARP_ROWS (BLOCK_M / NWARPS)
#define MT (WARP_ROWS / 16)
#define NT (BLOCK_N / 8)
#define DT (HEAD_DIM / 8)
#define KSTEPS (HEAD_DIM / 16)
#define SROW (ROW_BYTES + 16)  // padded shared-memory row
#define KV_TILE_BYTES (BLOCK_N * SROW)
#define RESCALE_SLACK 8.0f  // log2 of the largest P before a rescale
#ifndef INTERLEAVE
#define INTERLEAVE 1
#endif
#ifndef PAGED
#define PAGED 0
#endif

static_assert(WARP_ROWS % 16 == 0, "warp rows must be whole m16 tiles");
static_assert(THREADS % CHUNKS == 0, "");
static_assert((BLOCK_N * CHUNKS) % THREADS == 0, "");
static_assert((BLOCK_M * CHUNKS) % THREADS == 0, "");
static_assert(BLOCK_N % 16 == 0 && DT % 2 == 0, "");

#if FP16
#define MMA_OP "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#define CVT_OP "cvt.rn.f16x2.f32"
#else
#define MMA_OP "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#define CVT_OP "cvt.rn.bf16x2.f32"
#endif

"""#

    /// What the mma.sync and wgmma prefill programs share: the host-written descriptors,
    /// small integer helpers, cp.async, the fp32 pair packing (CVT_OP, defined by each
    /// program's prologue) and exp2.
    static let shared = #"""
struct PrefillRequest {  // 32 bytes, written by the host
    u64 key;    // PAGED: the request's int32 block table
    u64 value;  // PAGED: unused
    int length;
    int queryStart;
    int queryCount;
    int reserved;
};

struct PrefillTile {  // 8 bytes
    int request;
    int queryBegin;
};

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ u32 smem_address(const void *p) {
    u32 r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ void cp_async16(u32 dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Two floats to a packed pair of 16-bit values; `lo` in the low half (the lower column).
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r;
    asm(CVT_OP " %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

"""#

    static let mmaKernel = #"""
template <int N> struct Int { static constexpr int value = N; };

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile.
__device__ __forceinline__ u32 swz(int row, int chunk) { return (u32)(row * SROW + chunk * 16); }

__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}

__device__ __forceinline__ void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(MMA_OP " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
vt_prefill_attention(const u16 *__restrict__ q, u16 *__restrict__ o,
                     const PrefillRequest *__restrict__ requests, const PrefillTile *__restrict__ tiles,
                     int queryHeads, int groupSize, float scaleLog2, int window,
                     u32 tokenStride, u64 headStride, u32 blockStride, u32 tokensPerBlock, u32 blockMagic
#if PAGED
                     , u64 kPool, u64 vPool
#endif
                     ) {
    extern __shared__ __align__(128) unsigned char smem[];
    const int head = blockIdx.x % queryHeads;
    const int item = blockIdx.x / queryHeads;
    const PrefillTile tile = tiles[item];
    const PrefillRequest rq = requests[tile.request];
    const int kvHead = head / groupSize;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

    // Query rows of this tile and their positions; key tiles any of them can see.
    const int rows = imin(BLOCK_M, rq.queryCount - tile.queryBegin);
    const int firstPos = rq.length - rq.queryCount + tile.queryBegin;
    const int lastPos = firstPos + rows - 1;
    const int keyBegin = window > 0 ? imax(0, firstPos - window + 1) : 0;
    const int tileBegin = keyBegin / BLOCK_N;
    const int tileEnd = lastPos / BLOCK_N + 1;

    const u32 sQ = smem_address(smem);
    const u32 sK = sQ + BLOCK_M * SROW;
    const u32 sV = sK + 2 * KV_TILE_BYTES;

    // Q tile; rows past the request's queries are zero.
    {
        const u64 rowStride = (u64)queryHeads * HEAD_DIM;
        const u16 *qBase = q + ((u64)(rq.queryStart + tile.queryBegin) * queryHeads + head) * HEAD_DIM;
#pragma unroll
        for (int j = 0; j < BLOCK_M * CHUNKS / THREADS; ++j) {
            const int i = tid + j * THREADS;
            const int r = i / CHUNKS, c = i % CHUNKS;
            const bool ok = r < rows;
            cp_async16(sQ + swz(r, c), qBase + (u64)(ok ? r : 0) * rowStride + c * 8, ok ? 16 : 0);
        }
    }

    const int keyLength = rq.length;
    // This thread's 16-byte column of its rows (row r0 + j * THREADS / CHUNKS), head included.
#if PAGED
    const int *__restrict__ table = (const int *)rq.key;
    const u64 kBase = kPool + (u64)kvHead * headStride + (tid % CHUNKS) * 16;
    const u64 vMinusK = vPool - kPool;
#else
    const u64 kBase = rq.key + (u64)kvHead * headStride + (tid % CHUNKS) * 16;
    const u64 vMinusK = rq.value - rq.key;
#endif
    // K and V rows of key tile `t` into stage `stage`; tokens past the length are zero.
    // Block index t / tokensPerBlock = umulhi(t, magic) (exact while t * tokensPerBlock < 2^32;
    // magic 0 stands for tokensPerBlock 1); offsets below 2^32 except block * blockStride.
    auto load_kv = [&](int t, int stage) {
        const u32 dk = sK + stage * KV_TILE_BYTES + swz(tid / CHUNKS, tid % CHUNKS);
#pragma unroll
        for (int j = 0; j < BLOCK_N * CHUNKS / THREADS; ++j) {
            const int r = tid / CHUNKS + j * (THREADS / CHUNKS);
            const int token = t * BLOCK_N + r;
            const bool ok = token < keyLength;
            const u32 tk = ok ? (u32)token : 0u;
            const u32 blk = blockMagic ? __umulhi(tk, blockMagic) : tk;
#if PAGED
            // Page id from the block table (entry 0 for tokens past the length: always valid).
            const u32 page = (u32)__ldg(table + blk);
            const u64 k = kBase + (u64)page * blockStride + (u64)((tk - blk * tokensPerBlock) * tokenStride);
#else
            const u64 k = kBase + (u64)blk * blockStride + (u64)((tk - blk * tokensPerBlock) * tokenStride);
#endif
            const u32 d = dk + j * (THREADS / CHUNKS) * SROW;
            cp_async16(d, (const void *)k, ok ? 16 : 0);
            cp_async16(d + 2 * KV_TILE_BYTES, (const void *)(k + vMinusK), ok ? 16 : 0);
        }
    };

    load_kv(tileEnd - 1, 0);
    cp_async_commit();

    float acc[MT][DT][4];
    float rowMax[MT][2], rowSum[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][dt][e] = 0.f;
        rowMax[mt][0] = rowMax[mt][1] = neg_inf();
        rowSum[mt][0] = rowSum[mt][1] = 0.f;
    }

    // Rows of m16 tile `mt` of this warp: mtRow0(mt) + 0..15. INTERLEAVE spreads each warp's
    // m-tiles over the block (warp w owns rows w*16 + mt*BLOCK_M/MT), so on the causal diagonal
    // every warp has a part of the work instead of some warps all of it.
#if INTERLEAVE
#define MT_ROW0(mt) ((mt) * (BLOCK_M / MT) + warp * 16)
#else
#define MT_ROW0(mt) (warp * WARP_ROWS + (mt) * 16)
#endif
    int mtFirstPos[MT], mtLastPos[MT];
    bool mtHasRows[MT];
    bool warpHasRows = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        mtHasRows[mt] = MT_ROW0(mt) < rows;
        warpHasRows |= mtHasRows[mt];
        mtFirstPos[mt] = firstPos + imin(MT_ROW0(mt), rows - 1);
        mtLastPos[mt] = firstPos + imin(MT_ROW0(mt) + 15, rows - 1);
    }

    // Each lane's ldmatrix row address: Q (rows 0-15, chunk 0/1: an A fragment), K (two n8
    // tiles x two k8 halves: B fragments of S), V (two k8 halves x two d8 tiles, transposed:
    // B fragments of O); a fragment's address is this plus a compile-time offset.
    const u32 qFrag = sQ + swz(MT_ROW0(0) + (lane & 15), lane >> 4);
    const u32 kFrag = sK + swz(((lane >> 4) << 3) + (lane & 7), (lane >> 3) & 1);
    const u32 vFrag = sV + swz((((lane >> 3) & 1) << 3) + (lane & 7), lane >> 4);

    int stage = 0;
    for (int t = tileEnd - 1; t >= tileBegin; --t) {
        cp_async_wait_all();
        __syncthreads();  // tile t is in shared memory; every warp is done with the other stage
        if (t > tileBegin) load_kv(t - 1, stage ^ 1);
        cp_async_commit();

        const int key0 = t * BLOCK_N, key1 = key0 + BLOCK_N - 1;
        // Which m-tiles see any key of the tile, and whether any (row, key) pair is hidden.
        bool sees[MT];
        bool needMask = false;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            sees[mt] = mtHasRows[mt] && key0 <= mtLastPos[mt] && (window <= 0 || key1 > mtFirstPos[mt] - window);
            needMask |= sees[mt] && (key1 > mtFirstPos[mt] || (window > 0 && key0 <= mtLastPos[mt] - window));
        }
        const u32 kTile = kFrag + stage * KV_TILE_BYTES, vTile = vFrag + stage * KV_TILE_BYTES;

        // The tile's work for m-tiles M0 <= mt < M1 (compile-time range).
        auto body = [&](auto first, auto last) {
            constexpr int M0 = decltype(first)::value, M1 = decltype(last)::value;
            // S = Q K^T
            float s[MT][NT][4];
#pragma unroll
            for (int mt = M0; mt < M1; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
#pragma unroll
            for (int ks = 0; ks < KSTEPS; ++ks) {
                u32 a[MT][4];
#pragma unroll
                for (int mt = M0; mt < M1; ++mt)
                    ldsm_x4(a[mt], qFrag + (MT_ROW0(mt) - MT_ROW0(0)) * SROW + ks * 32);
#pragma unroll
                for (int np = 0; np < NT / 2; ++np) {
                    u32 b[4];
                    ldsm_x4(b, kTile + np * 16 * SROW + ks * 32);
#pragma unroll
                    for (int mt = M0; mt < M1; ++mt) {
                        mma16816(s[mt][2 * np], a[mt], b[0], b[1]);
                        mma16816(s[mt][2 * np + 1], a[mt], b[2], b[3]);
                    }
                }
            }

            if (needMask) {
#pragma unroll
                for (int mt = M0; mt < M1; ++mt)
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int row = MT_ROW0(mt) + (lane >> 2) + ((e & 2) ? 8 : 0);
                            const int pos = firstPos + imin(row, rows - 1);
                            const int key = key0 + nt * 8 + 2 * (lane & 3) + (e & 1);
                            if (key > pos || (window > 0 && key <= pos - window)) s[mt][nt][e] = neg_inf();
                        }
            }

            // Online softmax, per row (two rows per m16 tile per thread; a row spans a quad).
            // The running max (log2 domain) moves only when a row's new max exceeds it by more
            // than RESCALE_SLACK: P stays below 2^RESCALE_SLACK, and O is rescaled only when
            // some row of the warp moved (rarely after the first tiles).
            float correction[MT][2];
            bool moved = false;
#pragma unroll
            for (int mt = M0; mt < M1; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float mx = neg_inf();
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    const float old = rowMax[mt][h];
                    const float candidate = mx * scaleLog2;
                    const bool move = candidate > old + RESCALE_SLACK;
                    const float newMax = move ? candidate : old;
                    const float base = newMax == neg_inf() ? 0.f : newMax;
                    correction[mt][h] = move ? ex2(old - base) : 1.f;
                    moved |= move;
                    rowMax[mt][h] = newMax;
                    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) {
                        const float p0 = ex2(fmaf(s[mt][nt][2 * h], scaleLog2, -base));
                        const float p1 = ex2(fmaf(s[mt][nt][2 * h + 1], scaleLog2, -base));
                        s[mt][nt][2 * h] = p0;
                        s[mt][nt][2 * h + 1] = p1;
                        sum0 += p0;
                        sum1 += p1;
                    }
                    rowSum[mt][h] = rowSum[mt][h] * correction[mt][h] + (sum0 + sum1);
                }
            if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
                for (int mt = M0; mt < M1; ++mt)
#pragma unroll
                    for (int dt = 0; dt < DT; ++dt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) acc[mt][dt][e] *= correction[mt][e >> 1];
            }

            // O += P V
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
                u32 pa[MT][4];
#pragma unroll
                for (int mt = M0; mt < M1; ++mt) {
                    pa[mt][0] = pack2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                    pa[mt][1] = pack2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                    pa[mt][2] = pack2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                    pa[mt][3] = pack2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < DT / 2; ++dp) {
                    u32 b[4];
                    ldsm_x4_trans(b, vTile + kk * 16 * SROW + dp * 32);
#pragma unroll
                    for (int mt = M0; mt < M1; ++mt) {
                        mma16816(acc[mt][2 * dp], pa[mt], b[0], b[1]);
                        mma16816(acc[mt][2 * dp + 1], pa[mt], b[2], b[3]);
                    }
                }
            }
        };

        // Whole warps skip tiles none of their rows see; with two m-tiles, one that sees
        // nothing is skipped too (the other's work runs alone).
#if MT == 2
        if (sees[0] && sees[1]) body(Int<0>(), Int<2>());
        else if (sees[1]) body(Int<1>(), Int<2>());
        else if (sees[0]) body(Int<0>(), Int<1>());
#elif MT == 1
        if (sees[0]) body(Int<0>(), Int<1>());
#else
#error "MT must be 1 or 2"
#endif
        stage ^= 1;
    }
    cp_async_wait_all();
    if (!warpHasRows) return;

    // O / l into this warp's own rows of the Q tile (only this warp reads them), then out
    // with 16-byte stores.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float l = rowSum[mt][h];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.f ? __fdividef(1.f, l) : 0.f;
            const u32 dst = sQ + swz(MT_ROW0(mt) + (lane >> 2) + 8 * h, 0) + 4 * (lane & 3);
#pragma unroll
            for (int dt = 0; dt < DT; ++dt) {
                const u32 v = pack2(acc[mt][dt][2 * h] * inv, acc[mt][dt][2 * h + 1] * inv);
                asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(dst + dt * 16), "r"(v) : "memory");
            }
        }
    __syncwarp();
    u16 *out = o + ((u64)(rq.queryStart + tile.queryBegin) * queryHeads + head) * HEAD_DIM;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < 16 * CHUNKS / 32; ++j) {
            const int i = lane + 32 * j;
            const int row = MT_ROW0(mt) + i / CHUNKS, c = i % CHUNKS;
            if (row < rows) {
                uint4 v;
                asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                             : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(sQ + swz(row, c)) : "memory");
                *(uint4 *)(out + (u64)row * queryHeads * HEAD_DIM + c * 8) = v;
            }
        }
}

"""#

    /// Uniform random inputs for the timing runs (both programs carry it).
    static let fill = #"""
// Uniform values in [-amplitude, amplitude) from a hash of (seed, index), as bf16 or fp16:
// random inputs for timing, written on the GPU.
extern "C" __global__ void vt_prefill_fill(u16 *p, u64 n, u32 seed, float amplitude) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        u64 x = (i + 1) * 0x9E3779B97F4A7C15ull ^ ((u64)seed << 32 | seed);
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 29;
        const float v = ((float)(u32)(x >> 40) * (1.f / 16777216.f) * 2.f - 1.f) * amplitude;
        p[i] = (u16)(pack2(v, 0.f) & 0xffffu);
    }
}
"""#
}
