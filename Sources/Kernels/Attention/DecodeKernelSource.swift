/// CUDA source of the decode attention kernel (split-KV FlashDecoding, GQA-aware, mma.sync).
///
/// Compile-time macros: HEAD_DIM (64 or 128), FP16 (0: bf16), PAGED (0: virtual-tensor views,
/// 1: block table), WARPS, NSUB (16-token sub-steps a warp loads before computing), MIN_BLOCKS,
/// QSMEM (1: Q fragments read from shared memory each step instead of held in registers),
/// L2HINT (1: K/V loads ask L2 for whole 256-byte blocks).
///
/// Work: a "pair" is (request, query row, KV head, head block of up to 16 query heads of that KV
/// head's group) over its visible keys [lo, hi). The host (`DecodeSchedule`) gives the pairs to
/// a persistent grid of at most SMs x MIN_BLOCKS CTAs: whole, when the batch keeps DRAM busy
/// that way, else cut into equal runs of keys, one per CTA, so every CTA streams the same number
/// of KV bytes whatever the lengths (a pair cut by a run boundary is a split). A CTA walks its
/// items (pair segments: K/V addresses and key range) from item blockIdx.x along `next`; its
/// warps take 16-token steps of a segment in turn.
///
/// One warp step (16 tokens): K and V are loaded with 16-byte non-caching loads straight into
/// mma fragments (no shared memory): the m16n8k16 "k" index of Q.K^T runs over head-dim
/// elements in a permuted order that both Q and K fragments use, so each lane's 16 contiguous
/// bytes of a K row are two whole B fragments; for P.V the two tokens a B register pairs are
/// joined with one byte-permute. The group's query heads are the 16 rows of the A operand:
/// each K/V tile is read once for all query heads of its KV group (GQA). Softmax is online, in
/// fp32, with exp2 and log2(e) folded into the scale; P goes from the S accumulators to the A
/// operand of P.V in registers (FlashAttention-2).
///
/// Shared prefixes (cascade): an item may be a tile's, whose keys are one physical copy for
/// several requests (aliased chunks or shared pages, read through one request's addresses,
/// the same for every tile of that prefix). Its members' query heads fill the 16 rows together (group g: 16 / g members),
/// so the keys are read once for all of them; each member's rows are a pair's split.
///
/// End of a segment: the warps' (m, l, O) merge in shared memory. A pair in one segment writes
/// its output; a split writes (m, l, unnormalized O) to a partial slot, and the CTA that
/// completes the pair's last split (a counter per pair, reset by that CTA) merges all of them
/// with log-sum-exp weights and writes the output.
///
/// Token t's row: base + (t / tokensPerBlock) * blockStride + (t % tokensPerBlock) * tokenStride
/// + head * headStride, where for PAGED the block index goes through the request's int32 block
/// table and base is the (K or V) pool.
enum DecodeKernelSource {
    static let text = #"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define DH HEAD_DIM
#define KJ (DH / 32)      /* 16-byte K loads per token per lane (4 lanes cover 64 bytes) */
#define VH (DH / 64)      /* 16-byte V loads per token per lane (8 lanes cover 128 bytes) */
#define NT (DH / 8)       /* n8 tiles of the output */
#define ROWS 16           /* query heads per head block (the mma M) */
#define THREADS (WARPS * 32)
#define FULL 0xffffffffu

#if FP16
#define MMA_OP "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#define CVT_OP "cvt.rn.f16x2.f32"
#else
#define MMA_OP "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#define CVT_OP "cvt.rn.bf16x2.f32"
#endif

static_assert(DH == 64 || DH == 128, "head dim 64 or 128");

struct __align__(16) DecodeItem {   /* 64 bytes, written by the host (DecodeSchedule.kernelItems) */
    u64 k;          /* the request's K base (PAGED: its block table); a tile's: its reader's */
    u64 v;          /* its V base (PAGED: unused) */
    int row;        /* query row (output row) */
    int headSlot;   /* kvHead * headBlocks + headBlock */
    int start;      /* first key of this segment */
    int end;        /* one past its last key */
    int pair;       /* counter index */
    int firstSlot;  /* partial slot of the pair's split 0 */
    int split;      /* low 16 bits: this split; high 16 bits: the pair's split count */
    int next;       /* this CTA's next item, -1 after its last */
    int members;    /* 1: the pair above; more: a tile's query rows sharing these keys (one copy) */
    int memberOffset;  /* a tile's DecodeMember entries: byte offset from the table's start */
    int pad[2];
};

struct __align__(16) DecodeMember {  /* one query row of a tile: the pair fields of an item */
    int row, pair, firstSlot, split;
};

/* K/V loads: weak (not .nc) and volatile, so that ptxas keeps all of a step's loads ahead of
   the __syncwarp() that precedes its math instead of sinking the V loads below Q.K^T. */
#if L2HINT
#define STREAM_L2 ".L2::256B"
#else
#define STREAM_L2 ""
#endif
__device__ __forceinline__ uint4 ld_stream(u64 address) {
    uint4 r;
    asm volatile("ld.global.L1::no_allocate" STREAM_L2 ".v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(address));
    return r;
}

__device__ __forceinline__ void prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];" :: "l"(p));
}

__device__ __forceinline__ int ld_nc_int(const int *p) {
    int v;
    asm("ld.global.nc.s32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ float ld_cg(const float *p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Two floats to two 16-bit values in one register, lo in the low half (round to nearest even). */
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r;
    asm(CVT_OP " %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ u32 word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ void mma16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm(MMA_OP " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* n / d for n < 2^31 with multiplier and shift from the host (DecodeFastDivisor). */
__device__ __forceinline__ u32 fast_div(u32 n, u32 magic, u32 shift) {
    return (u32)(((u64)n * magic) >> shift);
}

/* Byte offset of token t's row (head 0) from the base (virtual) or the pool (paged). */
__device__ __forceinline__ u64 token_offset(int t, const int *table, u64 tokenStride, u64 blockStride,
                                            u32 tpb, u32 magic, u32 shift) {
    const u32 b = fast_div((u32)t, magic, shift);
    const u32 i = (u32)t - b * tpb;
#if PAGED
    const u32 page = (u32)ld_nc_int(table + b);
    return (u64)page * blockStride + (u64)i * tokenStride;
#else
    (void)table;
    return (u64)b * blockStride + (u64)i * tokenStride;
#endif
}

extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
vt_decode_attention(const DecodeItem *__restrict__ items, const u16 *__restrict__ queries, u16 *__restrict__ output,
                    float *__restrict__ partialO, float *__restrict__ partialML, int *__restrict__ counters,
                    u64 kPool, u64 vPool, u64 tokenStride, u64 headStride, u64 blockStride,
                    u32 tpb, u32 magic, u32 shift, int queryHeads, int group, int headBlocks, float scaleLog2) {
    __shared__ __align__(16) float sO[WARPS][ROWS][DH + 4];
    __shared__ float sM[WARPS][ROWS];
    __shared__ float sL[WARPS][ROWS];
    __shared__ int sLast[ROWS];
    /* The item's query rows (a tile: up to ROWS / group members, each `rows` rows of the A operand). */
    __shared__ int sRow[ROWS], sPair[ROWS], sFirst[ROWS], sSplit[ROWS];
#if QSMEM
    /* Rows padded by 64 bytes: the 8 lanes of a quarter warp (rows g, g+1) hit distinct banks. */
    __shared__ __align__(16) u16 sQ[ROWS][DH + 32];
#endif
    /* Programmatic dependent launch (no-ops without it): the next kernel (a matmul) may start
       prefetching its weights now; this one waits for the kernel that wrote Q and the new K/V. */
    asm volatile("griddepcontrol.launch_dependents;");
    asm volatile("griddepcontrol.wait;" ::: "memory");

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, c = lane & 3;
    const float NEG_INF = __int_as_float(0xff800000);

    for (int it = blockIdx.x; it >= 0;) {
        const DecodeItem item = items[it];
        if (item.row < 0) break;  /* an empty item: a CTA of a fixed grid (CUDA graph) with no work */
        it = item.next;
        if (it >= 0) prefetch_l2(items + it);
        const int kvHead = item.headSlot / headBlocks;
        const int headBlock = item.headSlot - kvHead * headBlocks;
        const int head0 = kvHead * group + headBlock * ROWS;
        const int rows = min(ROWS, group - headBlock * ROWS);   /* A rows of one query row */
        const int members = item.members;
        const int used = members * rows;                          /* A rows in use */
        if (threadIdx.x < members) {
            DecodeMember m;
            if (members == 1) { m.row = item.row; m.pair = item.pair; m.firstSlot = item.firstSlot; m.split = item.split; }
            else m = ((const DecodeMember *)((const char *)items + item.memberOffset))[threadIdx.x];
            sRow[threadIdx.x] = m.row; sPair[threadIdx.x] = m.pair; sFirst[threadIdx.x] = m.firstSlot; sSplit[threadIdx.x] = m.split;
        }
        /* A tile's Q rows come from its members' entries; a single pair's from the item (the
           entries are read after the warps' merge, past a barrier). */
        if (members > 1) __syncthreads();

        /* Q as A fragments: lane (g, c) holds rows g and g + 8, elements 32j + 8c .. 32j + 8c + 7
           (logical k order: step (j, s) pairs k = 2c, 2c+1 with elements 32j + 8c + 4s + {0, 1}
           and k = 2c + 8, 2c + 9 with 32j + 8c + 4s + {2, 3}; K fragments use the same order).
           QSMEM: the block's Q rows stay in shared memory and are read per step (fewer registers). */
#if QSMEM
        for (int e = threadIdx.x; e < ROWS * (DH / 8); e += THREADS) {
            const int r = e / (DH / 8), x = e % (DH / 8);
            const int m = r < used ? r / rows : 0;
            const uint4 *src = (const uint4 *)(queries + ((u64)(members == 1 ? item.row : sRow[m]) * queryHeads + head0 + (r < used ? r - m * rows : 0)) * DH);
            *(uint4 *)&sQ[r][8 * x] = r < used ? src[x] : make_uint4(0, 0, 0, 0);
        }
        __syncthreads();
#else
        u32 qf[KJ][2][4];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int hr = g + 8 * r;
            const bool live = hr < used;
            const int m = live ? hr / rows : 0;
            const uint4 *src = (const uint4 *)(queries + ((u64)(members == 1 ? item.row : sRow[m]) * queryHeads + head0 + (live ? hr - m * rows : 0)) * DH);
#pragma unroll
            for (int j = 0; j < KJ; ++j) {
                const uint4 v = live ? src[4 * j + c] : make_uint4(0, 0, 0, 0);
                qf[j][r][0] = v.x; qf[j][r][1] = v.y; qf[j][r][2] = v.z; qf[j][r][3] = v.w;
            }
        }
#endif

#if PAGED
        const int *table = (const int *)item.k;
        const u64 kBase = kPool + (u64)kvHead * headStride, vBase = vPool + (u64)kvHead * headStride;
#else
        const int *table = 0;
        // kPool / vPool: the layer's byte offset from the bases in the items (0 for a table of
        // this layer's own bases), so one table serves every layer of a model.
        const u64 kBase = item.k + kPool + (u64)kvHead * headStride, vBase = item.v + vPool + (u64)kvHead * headStride;
#endif

        float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;
        float o[NT][4];
#pragma unroll
        for (int i = 0; i < NT; ++i) { o[i][0] = 0.f; o[i][1] = 0.f; o[i][2] = 0.f; o[i][3] = 0.f; }
        const int last = item.end - 1;

        for (int base = item.start + warp * 16 * NSUB; base < item.end; base += WARPS * 16 * NSUB) {
            uint4 kr[NSUB][2][KJ];
            uint4 vr[NSUB][4][VH];
            /* Every load of the step first. K: lane (g, c) loads tokens g and 8 + g (the n of the
               two n8 tiles), bytes 64j + 16c. V: tokens 2c, 2c+1, 8+2c, 9+2c (the k of P.V),
               bytes 128h + 16g (elements 64h + 8g .. +7). Past the end: the last key, masked. */
#pragma unroll
            for (int s = 0; s < NSUB; ++s) {
#pragma unroll
                for (int t = 0; t < 2; ++t) {
                    const int tok = min(base + 16 * s + 8 * t + g, last);
                    const u64 a = kBase + token_offset(tok, table, tokenStride, blockStride, tpb, magic, shift) + 16 * c;
#pragma unroll
                    for (int j = 0; j < KJ; ++j) kr[s][t][j] = ld_stream(a + 64 * j);
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const int tok = min(base + 16 * s + 2 * c + (u & 1) + 8 * (u >> 1), last);
                    const u64 a = vBase + token_offset(tok, table, tokenStride, blockStride, tpb, magic, shift) + 16 * g;
#pragma unroll
                    for (int h = 0; h < VH; ++h) vr[s][u][h] = ld_stream(a + 128 * h);
                }
            }
            __syncwarp();  /* keeps ptxas from sinking the V loads below the Q.K^T math */
#pragma unroll
            for (int s = 0; s < NSUB; ++s) {
                const int t0 = base + 16 * s;
                if (t0 < item.end) {
                    /* S = Q K^T for 16 tokens: two n8 tiles (tokens t0 + 8t + n). */
                    float sc[2][4];
#pragma unroll
                    for (int t = 0; t < 2; ++t) { sc[t][0] = 0.f; sc[t][1] = 0.f; sc[t][2] = 0.f; sc[t][3] = 0.f; }
#pragma unroll
                    for (int j = 0; j < KJ; ++j) {
#if QSMEM
                        const uint4 q0 = *(const uint4 *)&sQ[g][32 * j + 8 * c];
                        const uint4 q1 = *(const uint4 *)&sQ[g + 8][32 * j + 8 * c];
#else
                        const uint4 q0 = make_uint4(qf[j][0][0], qf[j][0][1], qf[j][0][2], qf[j][0][3]);
                        const uint4 q1 = make_uint4(qf[j][1][0], qf[j][1][1], qf[j][1][2], qf[j][1][3]);
#endif
#pragma unroll
                        for (int h2 = 0; h2 < 2; ++h2)
#pragma unroll
                            for (int t = 0; t < 2; ++t)
                                mma16816(sc[t], word(q0, 2 * h2), word(q1, 2 * h2), word(q0, 2 * h2 + 1), word(q1, 2 * h2 + 1),
                                         word(kr[s][t][j], 2 * h2), word(kr[s][t][j], 2 * h2 + 1));
                    }
                    /* Lane holds S[row g | g+8][token t0 + 8t + 2c + e]. */
#pragma unroll
                    for (int t = 0; t < 2; ++t)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const bool valid = t0 + 8 * t + 2 * c + e < item.end;
                            sc[t][e] = valid ? sc[t][e] * scaleLog2 : NEG_INF;
                            sc[t][2 + e] = valid ? sc[t][2 + e] * scaleLog2 : NEG_INF;
                        }
                    float x0 = fmaxf(fmaxf(sc[0][0], sc[0][1]), fmaxf(sc[1][0], sc[1][1]));
                    float x1 = fmaxf(fmaxf(sc[0][2], sc[0][3]), fmaxf(sc[1][2], sc[1][3]));
                    x0 = fmaxf(x0, __shfl_xor_sync(FULL, x0, 1));
                    x0 = fmaxf(x0, __shfl_xor_sync(FULL, x0, 2));
                    x1 = fmaxf(x1, __shfl_xor_sync(FULL, x1, 1));
                    x1 = fmaxf(x1, __shfl_xor_sync(FULL, x1, 2));
                    /* Token t0 is valid, so the new maxima are finite. */
                    const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);
                    const float a0 = ex2(m0 - n0), a1 = ex2(m1 - n1);
                    m0 = n0; m1 = n1;
                    float p[2][4];
#pragma unroll
                    for (int t = 0; t < 2; ++t) {
                        p[t][0] = ex2(sc[t][0] - n0); p[t][1] = ex2(sc[t][1] - n0);
                        p[t][2] = ex2(sc[t][2] - n1); p[t][3] = ex2(sc[t][3] - n1);
                    }
                    l0 = l0 * a0 + ((p[0][0] + p[0][1]) + (p[1][0] + p[1][1]));
                    l1 = l1 * a1 + ((p[0][2] + p[0][3]) + (p[1][2] + p[1][3]));
#pragma unroll
                    for (int i = 0; i < NT; ++i) { o[i][0] *= a0; o[i][1] *= a0; o[i][2] *= a1; o[i][3] *= a1; }
                    /* P as the A operand of P.V: k = token - t0. */
                    const u32 pa0 = pack2(p[0][0], p[0][1]), pa1 = pack2(p[0][2], p[0][3]);
                    const u32 pa2 = pack2(p[1][0], p[1][1]), pa3 = pack2(p[1][2], p[1][3]);
#pragma unroll
                    for (int h = 0; h < VH; ++h)
#pragma unroll
                        for (int w = 0; w < 4; ++w) {
                            const u32 v0 = word(vr[s][0][h], w), v1 = word(vr[s][1][h], w);
                            const u32 v2 = word(vr[s][2][h], w), v3 = word(vr[s][3][h], w);
                            /* n8 tile 8h + q holds element 64h + 8n + q (n = the lane's g). */
                            mma16816(o[8 * h + 2 * w], pa0, pa1, pa2, pa3, __byte_perm(v0, v1, 0x5410), __byte_perm(v2, v3, 0x5410));
                            mma16816(o[8 * h + 2 * w + 1], pa0, pa1, pa2, pa3, __byte_perm(v0, v1, 0x7632), __byte_perm(v2, v3, 0x7632));
                        }
                }
            }
        }

        /* Merge the warps. Lane (g, c) holds O[row g | g+8][elements 64h + 16c + q] in o[8h + q][0 | 2]
           and [64h + 16c + 8 + q] in o[8h + q][1 | 3]. */
        l0 += __shfl_xor_sync(FULL, l0, 1);
        l0 += __shfl_xor_sync(FULL, l0, 2);
        l1 += __shfl_xor_sync(FULL, l1, 1);
        l1 += __shfl_xor_sync(FULL, l1, 2);
        if (c == 0) {
            sM[warp][g] = m0; sM[warp][g + 8] = m1;
            sL[warp][g] = l0; sL[warp][g + 8] = l1;
        }
#pragma unroll
        for (int h = 0; h < VH; ++h) {
            float4 *r0 = (float4 *)&sO[warp][g][64 * h + 16 * c];
            float4 *r1 = (float4 *)&sO[warp][g + 8][64 * h + 16 * c];
            r0[0] = make_float4(o[8 * h + 0][0], o[8 * h + 1][0], o[8 * h + 2][0], o[8 * h + 3][0]);
            r0[1] = make_float4(o[8 * h + 4][0], o[8 * h + 5][0], o[8 * h + 6][0], o[8 * h + 7][0]);
            r0[2] = make_float4(o[8 * h + 0][1], o[8 * h + 1][1], o[8 * h + 2][1], o[8 * h + 3][1]);
            r0[3] = make_float4(o[8 * h + 4][1], o[8 * h + 5][1], o[8 * h + 6][1], o[8 * h + 7][1]);
            r1[0] = make_float4(o[8 * h + 0][2], o[8 * h + 1][2], o[8 * h + 2][2], o[8 * h + 3][2]);
            r1[1] = make_float4(o[8 * h + 4][2], o[8 * h + 5][2], o[8 * h + 6][2], o[8 * h + 7][2]);
            r1[2] = make_float4(o[8 * h + 0][3], o[8 * h + 1][3], o[8 * h + 2][3], o[8 * h + 3][3]);
            r1[3] = make_float4(o[8 * h + 4][3], o[8 * h + 5][3], o[8 * h + 6][3], o[8 * h + 7][3]);
        }
        __syncthreads();

        /* Row r of the A operand: member r / rows, its query head head0 + r % rows. A member
           whose keys all lie in this item writes its output; the others write a partial slot. */
        for (int e = threadIdx.x; e < used * DH; e += THREADS) {
            const int r = e / DH, d = e % DH;
            const int m = r / rows, local = r - m * rows;
            float M = sM[0][r];
#pragma unroll
            for (int w = 1; w < WARPS; ++w) M = fmaxf(M, sM[w][r]);
            float L = 0.f, O = 0.f;
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                const float f = ex2(sM[w][r] - M);  /* a warp with no keys: m = -inf, f = 0 */
                L += sL[w][r] * f;
                O += sO[w][r][d] * f;
            }
            const int split = sSplit[m] & 0xffff, splits = sSplit[m] >> 16;
            if (splits == 1) {
                output[((u64)sRow[m] * queryHeads + head0 + local) * DH + d] = (u16)(pack2(O / L, 0.f) & 0xffffu);
            } else {
                const u64 slot = (u64)(sFirst[m] + split) * ROWS + local;
                partialO[slot * DH + d] = O;
                if (d == 0) { partialML[2 * slot] = M; partialML[2 * slot + 1] = L; }
            }
        }

        if (members > 1 || (item.split >> 16) > 1) {
            __threadfence();
            __syncthreads();
            if (threadIdx.x < members) {
                const int splits = sSplit[threadIdx.x] >> 16;
                int last = 0;
                if (splits > 1) {
                    const int done = atomicAdd(counters + sPair[threadIdx.x], 1);
                    last = done == splits - 1;
                    if (last) atomicExch(counters + sPair[threadIdx.x], 0);  /* ready for the next launch */
                }
                sLast[threadIdx.x] = last;
            }
            __syncthreads();
            bool anyLast = false;
            for (int k = 0; k < members; ++k) anyLast |= sLast[k] != 0;
            if (anyLast) __threadfence();  /* the other splits' partials, as the CTA that finishes a pair reads them */
            for (int e = threadIdx.x; anyLast && e < used * DH; e += THREADS) {
                const int r = e / DH, d = e % DH;
                const int m = r / rows, local = r - m * rows;
                if (!sLast[m]) continue;
                const int splits = sSplit[m] >> 16;
                const float *ml = partialML + 2 * ((u64)sFirst[m] * ROWS + local);
                const float *po = partialO + ((u64)sFirst[m] * ROWS + local) * DH + d;
                float M = NEG_INF;
                for (int s = 0; s < splits; ++s) M = fmaxf(M, ld_cg(ml + 2 * ROWS * s));
                float L = 0.f, O = 0.f;
#pragma unroll 4
                for (int s = 0; s < splits; ++s) {
                    const float f = ex2(ld_cg(ml + 2 * ROWS * s) - M);
                    L += ld_cg(ml + 2 * ROWS * s + 1) * f;
                    O += ld_cg(po + (u64)ROWS * DH * s) * f;
                }
                output[((u64)sRow[m] * queryHeads + head0 + local) * DH + d] = (u16)(pack2(O / L, 0.f) & 0xffffu);
            }
        }
        __syncthreads();  /* shared memory and sLast are reused by the next item */
    }
}
"""#
}
