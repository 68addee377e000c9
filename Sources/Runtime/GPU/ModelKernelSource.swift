import Kernels

/// CUDA source of the model's element-wise kernels (compiled at run time by NVRTC):
/// embedding gather, RMSNorm (fp32 residual in, bf16 out), RoPE + Q/K/V split, SiLU-and-multiply,
/// greedy argmax, residual add, and the random fill for dummy weights. Matmuls go to cuBLASLt and
/// attention to the Kernels module.
enum ModelKernelSource {
    static let text = #"""
typedef unsigned int u32;
typedef unsigned short bf16;  // raw bfloat16 bits: no headers, so NVRTC needs no include path
typedef unsigned long long u64;

__device__ __forceinline__ float bf2f(bf16 v) { return __int_as_float(((u32)v) << 16); }
__device__ __forceinline__ bf16 f2bf(float f) {  // round to nearest even; NaN stays NaN
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// RMSNorm's factor for a row of `width` values whose squares sum to sum_sq.
__device__ __forceinline__ float rms_scale(float sum_sq, int width, float eps) { return rsqrtf(sum_sq / width + eps); }
// The decode path's sums are doubles: many blocks add into them with atomics, in no fixed order.
// Float addition would round differently with each order, and a greedy pick between near-equal
// logits could change from one run of the same request to the next; double rounding differences
// (about 2^-53) do not survive the conversion to float.
__device__ __forceinline__ float rms_scale(double sum_sq, int width, float eps) { return rsqrtf((float)(sum_sq / width) + eps); }

// SwiGLU: silu(g) * u.
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + __expf(-g)) * u; }

// RoPE (rotate-half) on the pair (a, b) = (x[i], x[i + d/2]) by the angle whose sine and cosine are sn, cs.
__device__ __forceinline__ void rope_rotate(float& a, float& b, float sn, float cs) {
    const float ra = a * cs - b * sn, rb = b * cs + a * sn;
    a = ra; b = rb;
}

// x[row][:] = table[tokens[row]][:], in fp32 (the residual stream is fp32).
extern "C" __global__ void vt_embed(const bf16* __restrict__ table, const int* __restrict__ tokens,
                                    float* __restrict__ x, int hidden) {
    const int row = blockIdx.x;
    const bf16* src = table + (size_t)tokens[row] * hidden;
    float* dst = x + (size_t)row * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = bf2f(src[i]);
}

// Rows whose token is a pick of the step before (queued before that step's picks reached the
// host): tokens[pairs[2i]] = picks[pairs[2i + 1] * stride], stride in ints (the sampler's records).
extern "C" __global__ void vt_feed_tokens(int* __restrict__ tokens, const int* __restrict__ pairs,
                                          const int* __restrict__ picks, int stride, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) tokens[pairs[2 * i]] = picks[(size_t)pairs[2 * i + 1] * stride];
}

// out[i][:] = bf16(x[r][:] * rsqrt(mean(x[r]^2) + eps) * w), r = rows ? rows[i] : i.
// One block per output row; the row is read twice (sum of squares, then scale) from L1/L2.
extern "C" __global__ void vt_rmsnorm(const float* __restrict__ x, const float* __restrict__ w,
                                      bf16* __restrict__ out, const int* __restrict__ rows,
                                      int hidden, float eps) {
    const int i = blockIdx.x;
    const int r = rows ? rows[i] : i;
    const float* src = x + (size_t)r * hidden;
    float s = 0.f;
    const bool vec = (hidden & 3) == 0;  // 16-byte loads (rows start 16-byte aligned when hidden % 4 == 0)
    if (vec) {
        for (int c = 4 * threadIdx.x; c < hidden; c += 4 * blockDim.x) {
            const float4 v = *(const float4*)(src + c);
            s += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int c = threadIdx.x; c < hidden; c += blockDim.x) { float v = src[c]; s += v * v; }
    }
    __shared__ float partial[32];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        float t = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
        t = warp_sum(t);
        if (threadIdx.x == 0) partial[0] = t;
    }
    __syncthreads();
    const float scale = rms_scale(partial[0], hidden, eps);
    bf16* dst = out + (size_t)i * hidden;
    if (vec) {  // the row is in L1 from the first pass
        for (int c = 4 * threadIdx.x; c < hidden; c += 4 * blockDim.x) {
            const float4 v = *(const float4*)(src + c), g = *(const float4*)(w + c);
            const u32 lo = (u32)f2bf(v.x * scale * g.x) | ((u32)f2bf(v.y * scale * g.y) << 16);
            const u32 hi = (u32)f2bf(v.z * scale * g.z) | ((u32)f2bf(v.w * scale * g.w) << 16);
            *(uint2*)(dst + c) = make_uint2(lo, hi);
        }
    } else {
        for (int c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = f2bf(src[c] * scale * w[c]);
    }
}

// Splits qkv rows [n][(hq + 2 hkv) d] (bf16, + optional fp32 bias) into q [n][hq][d] and the
// row's K and V in the KV cache (kv_rows[2 row], kv_rows[2 row + 1]: the addresses of head 0 of
// the token's K and V rows in this layer; heads follow contiguously), rotating q and k
// (rotate-half) at positions[row]. One block per row; a thread handles pairs (i, i + d/2).
extern "C" __global__ void vt_rope_split(const bf16* __restrict__ qkv, const float* __restrict__ bias,
                                         const int* __restrict__ positions, const float* __restrict__ inv_freq,
                                         bf16* __restrict__ q, const u64* __restrict__ kv_rows,
                                         int hq, int hkv, int d) {
    bf16* k = (bf16*)kv_rows[2 * blockIdx.x];
    bf16* v = (bf16*)kv_rows[2 * blockIdx.x + 1];
    const int row = blockIdx.x;
    const int half = d / 2;
    const int width = (hq + 2 * hkv) * d;
    const bf16* src = qkv + (size_t)row * width;
    const float pos = (float)positions[row];
    // Rotated heads: hq query heads then hkv key heads, half pairs each.
    const int pairs = (hq + hkv) * half;
    // When the block is a multiple of half a head, every pair a thread visits has the same i:
    // one sincosf per thread instead of one per pair (the argument reaches thousands of radians
    // in long prompts, where sincosf takes its slow path).
    const bool fixedI = blockDim.x % half == 0;
    float sn0 = 0.f, cs0 = 1.f;
    if (fixedI) sincosf(pos * inv_freq[threadIdx.x % half], &sn0, &cs0);
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        const int head = p / half, i = p - head * half;
        const int c0 = head * d + i, c1 = c0 + half;
        float a = bf2f(src[c0]), b = bf2f(src[c1]);
        if (bias) { a += bias[c0]; b += bias[c1]; }
        float sn = sn0, cs = cs0;
        if (!fixedI) sincosf(pos * inv_freq[i], &sn, &cs);
        rope_rotate(a, b, sn, cs);
        if (head < hq) {
            bf16* dst = q + ((size_t)row * hq + head) * d;
            dst[i] = f2bf(a); dst[i + half] = f2bf(b);
        } else {
            bf16* dst = k + (size_t)(head - hq) * d;
            dst[i] = f2bf(a); dst[i + half] = f2bf(b);
        }
    }
    const int vBase = (hq + hkv) * d;
    for (int c = threadIdx.x; c < hkv * d; c += blockDim.x) {
        float a = bf2f(src[vBase + c]);
        if (bias) a += bias[vBase + c];
        v[c] = f2bf(a);
    }
}

// act[r][i] = silu(g) * u for gateUp rows [g (f) | u (f)], with optional fp32 bias on both.
// Eight elements a thread with 16-byte loads and stores (f % 8 == 0): prefill's pass over
// tokens x f is bandwidth-bound.
extern "C" __global__ void vt_silu_mul(const bf16* __restrict__ gateUp, const float* __restrict__ bias,
                                       bf16* __restrict__ act, int f, u64 total) {
    const u32 vecsPerRow = (u32)(f >> 3);
    const u64 vecs = total >> 3;
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < vecs; idx += (u64)gridDim.x * blockDim.x) {
        const u64 r = idx / vecsPerRow;
        const u32 c = (u32)(idx - r * vecsPerRow) * 8;
        const uint4 gq = *(const uint4*)(gateUp + r * 2 * f + c);
        const uint4 uq = *(const uint4*)(gateUp + r * 2 * f + f + c);
        const u32 gw[4] = {gq.x, gq.y, gq.z, gq.w}, uw[4] = {uq.x, uq.y, uq.z, uq.w};
        u32 out[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float g0 = __int_as_float(gw[e] << 16), g1 = __int_as_float(gw[e] & 0xffff0000u);
            float u0 = __int_as_float(uw[e] << 16), u1 = __int_as_float(uw[e] & 0xffff0000u);
            if (bias) { g0 += bias[c + 2 * e]; g1 += bias[c + 2 * e + 1]; u0 += bias[f + c + 2 * e]; u1 += bias[f + c + 2 * e + 1]; }
            const float a0 = silu_mul(g0, u0), a1 = silu_mul(g1, u1);
            out[e] = (u32)f2bf(a0) | ((u32)f2bf(a1) << 16);
        }
        *(uint4*)(act + r * f + c) = make_uint4(out[0], out[1], out[2], out[3]);
    }
}

// x[i] += bias[i % width] (an fp32 bias on a matmul that accumulated into the residual).
extern "C" __global__ void vt_add_bias(float* __restrict__ x, const float* __restrict__ bias, int width, u64 total) {
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (u64)gridDim.x * blockDim.x)
        x[idx] += bias[idx % width];
}

// out[row] = argmax over the first `limit` logits of the row (lowest id on ties). One block a row.
extern "C" __global__ void vt_argmax(const float* __restrict__ logits, int vocab, int limit, int* __restrict__ out) {
    const float* src = logits + (size_t)blockIdx.x * vocab;
    float best = __int_as_float(0xff800000); int id = 0x7fffffff;
    for (int i = threadIdx.x; i < limit; i += blockDim.x) {
        float v = src[i];
        if (v > best || (v == best && i < id)) { best = v; id = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o); int oi = __shfl_xor_sync(0xffffffffu, id, o);
        if (ov > best || (ov == best && oi < id)) { best = ov; id = oi; }
    }
    __shared__ float bv[32]; __shared__ int bi[32];
    if ((threadIdx.x & 31) == 0) { bv[threadIdx.x >> 5] = best; bi[threadIdx.x >> 5] = id; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w)
            if (bv[w] > best || (bv[w] == best && bi[w] < id)) { best = bv[w]; id = bi[w]; }
        out[blockIdx.x] = id;
    }
}


// Skinny matmul for decode (n <= 4 token rows): y[t][r] = sum_k x[t][k] * W[r][k], W bf16 [out][k]
// row-major, x bf16 [n][k]. Each warp owns 2 consecutive rows and streams them with 16-byte
// loads, 4 k-steps unrolled (8 loads of 16 B in flight per lane); x comes through L1.
// mode 0: y bf16; mode 1: y fp32; mode 2: y fp32 += (the residual stream). k % 8 == 0.
#define GEMV_ROWS 2
#ifndef WEIGHT_HINT
#define WEIGHT_HINT 1
#endif
#ifndef EARLY_WEIGHTS
#define EARLY_WEIGHTS 1
#endif
#ifndef GEMV_UNROLL
#define GEMV_UNROLL 8
#endif
template <int N>
__device__ __forceinline__ void gemv_rows(const bf16* __restrict__ W, const bf16* __restrict__ x, void* __restrict__ y,
                                          int out, int k, int mode, int row0, int lane) {
    float acc[N][GEMV_ROWS];
#pragma unroll
    for (int t = 0; t < N; ++t)
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; ++r) acc[t][r] = 0.f;
    const int nrows = min(GEMV_ROWS, out - row0);
    const uint4* wrow[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; ++r) wrow[r] = (const uint4*)(W + (size_t)(row0 + min(r, nrows - 1)) * k);
    const int vecs = k / 8;  // 16-byte vectors per row
    int v = lane;
    for (; v + 32 * (GEMV_UNROLL - 1) < vecs; v += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL][GEMV_ROWS];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u)
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; ++r) wv[u][r] = __ldg(wrow[r] + v + 32 * u);
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; ++u) {
#pragma unroll
            for (int t = 0; t < N; ++t) {
                const uint4 xv = __ldg((const uint4*)(x + (size_t)t * k) + v + 32 * u);
                const u32 xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; ++r) {
                    const u32 ws[4] = {wv[u][r].x, wv[u][r].y, wv[u][r].z, wv[u][r].w};
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        acc[t][r] += __int_as_float(xs[e] << 16) * __int_as_float(ws[e] << 16);
                        acc[t][r] += __int_as_float(xs[e] & 0xffff0000u) * __int_as_float(ws[e] & 0xffff0000u);
                    }
                }
            }
        }
    }
    for (; v < vecs; v += 32) {
        uint4 wv[GEMV_ROWS];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; ++r) wv[r] = __ldg(wrow[r] + v);
#pragma unroll
        for (int t = 0; t < N; ++t) {
            const uint4 xv = __ldg((const uint4*)(x + (size_t)t * k) + v);
            const u32 xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; ++r) {
                const u32 ws[4] = {wv[r].x, wv[r].y, wv[r].z, wv[r].w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    acc[t][r] += __int_as_float(xs[e] << 16) * __int_as_float(ws[e] << 16);
                    acc[t][r] += __int_as_float(xs[e] & 0xffff0000u) * __int_as_float(ws[e] & 0xffff0000u);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < N; ++t)
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; ++r) acc[t][r] = warp_sum(acc[t][r]);
    if (lane == 0) {
#pragma unroll
        for (int t = 0; t < N; ++t)
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; ++r) {
                if (r >= nrows) continue;
                const size_t o = (size_t)t * out + row0 + r;
                if (mode == 0) ((bf16*)y)[o] = f2bf(acc[t][r]);
                else if (mode == 1) ((float*)y)[o] = acc[t][r];
                else ((float*)y)[o] += acc[t][r];
            }
    }
}

extern "C" __global__ void __launch_bounds__(128) vt_gemv(const bf16* __restrict__ W, const bf16* __restrict__ x, void* __restrict__ y,
                                                          int n, int out, int k, int mode) {
    const int warp = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int row0 = warp * GEMV_ROWS;
    if (row0 >= out) return;
    switch (n) {
    case 1: gemv_rows<1>(W, x, y, out, k, mode, row0, lane); break;
    case 2: gemv_rows<2>(W, x, y, out, k, mode, row0, lane); break;
    case 3: gemv_rows<3>(W, x, y, out, k, mode, row0, lane); break;
    default: gemv_rows<4>(W, x, y, out, k, mode, row0, lane); break;
    }
}

// ---- Fused decode matmuls (n <= 4 token rows) ----------------------------------------------
// A decode layer is 4 matmul kernels + attention. RMSNorm costs nothing per element: whoever
// updates the residual also writes xw = bf16(residual * w_next) (w_next: the weight of the norm
// that reads it next) and adds the new values squared into sums; the next matmul reads xw and
// scales each token's dot products by rsqrt(sums[t] / k + eps). Epilogues:
//   OUT 1: fp32 y[t][row] (logits)
//   OUT 2: residual y[t][row] += acc, then sums_out[t] += new^2 and xw[t][row] = bf16(new * normw[row])
//   OUT 3: Q/K/V with bias and RoPE: q -> y [n][hq][d]; k, v -> the KV cache rows kv_rows[2t], [2t+1]
//   OUT 4: SwiGLU: rows (i, i + out/2) are gate and up; y[t][i] = bf16(silu(gate) * up)
// A warp owns 2 rows: consecutive ones, or the pair its epilogue combines (OUT 3, OUT 4).
// Weight loads as volatile asm so ptxas issues them in program order, all before the math that
// uses them (with __ldg it interleaved loads and FMAs, holding only a few loads in flight).
// Weights are read once: no L1 allocation, 256-byte L2 prefetch.
// WEIGHT_HINT 0 drops the L2::256B hint (on an H200 a plain sequential read lost 7% with it).
#if WEIGHT_HINT
#define WEIGHT_L2 ".L2::256B"
#else
#define WEIGHT_L2 ""
#endif
__device__ __forceinline__ uint4 ld_weights(const uint4* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate" WEIGHT_L2 ".v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

// The same load, weak instead of .nc: ptxas sinks .nc loads below griddepcontrol.wait (they
// have no ordering to keep) but leaves weak loads where they are, so the early round uses these.
__device__ __forceinline__ uint4 ld_weights_early(const uint4* p) {
    uint4 r;
    asm volatile("ld.global.L1::no_allocate" WEIGHT_L2 ".v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ void dg_fma(float& acc, const float xs[8], uint4 w) {
    const u32 ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        acc += xs[2 * e] * __int_as_float(ws[e] << 16);
        acc += xs[2 * e + 1] * __int_as_float(ws[e] & 0xffff0000u);
    }
}

__device__ __forceinline__ void dg_load(float xs[8], const bf16* __restrict__ x, int v) {
    const uint4 q = __ldg((const uint4*)x + v);
    const u32 w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) { xs[2 * e] = __int_as_float(w[e] << 16); xs[2 * e + 1] = __int_as_float(w[e] & 0xffff0000u); }
}

// One round: U vectors of each of the warp's two rows against every token's x.
template <int N, int U>
__device__ __forceinline__ void dg_round(float (&acc)[N][2], const bf16* __restrict__ x, int k, int v, const uint4 (&a)[U], const uint4 (&b)[U]) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
        for (int t = 0; t < N; ++t) {
            float xs[8];
            dg_load(xs, x + (size_t)t * k, v + 32 * u);
            dg_fma(acc[t][0], xs, a[u]);
            dg_fma(acc[t][1], xs, b[u]);
        }
}

// ---- Fused decode epilogues, shared by dgemv, dskinny and the persistent layer block ----------
// An fp32 load from L2 (ld.cg), never a stale L1 line: for data written earlier in the same kernel.
__device__ __forceinline__ float ld_cg_f32(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ double ld_cg_f64(const double* p) {
    double v;
    asm volatile("ld.global.cg.f64 %0, [%1];" : "=d"(v) : "l"(p));
    return v;
}

// OUT 2 for token t, row `row`: residual += v, xw = bf16(new * norm[row]) (the next matmul's
// input), new^2 into sq (the next norm's sum of squares). InKernel: the residual was written in
// this kernel (persistent block), so it is read with ld.cg.
template <bool InKernel>
__device__ __forceinline__ void residual_add(float* residual, bf16* xw, const float* norm, int out, int t, int row, float v,
                                             float& sq) {
    float* p = residual + (size_t)t * out + row;
    const float nv = (InKernel ? ld_cg_f32(p) : *p) + v;
    *p = nv;
    sq += nv * nv;
    xw[(size_t)t * out + row] = f2bf(nv * norm[row]);
}

// A block's per-token sums of squares (shared memory) into the global ones: one atomic a token.
__device__ __forceinline__ void add_block_sums(double* sums, const double* block_sums, int n) {
    __syncthreads();
    if (threadIdx.x < n) atomicAdd(sums + threadIdx.x, block_sums[threadIdx.x]);
}

// OUT 3 for token t: rows r0 = head d + i and r1 = r0 + d/2 give (a, b); bias, RoPE on query and
// key heads, then Q to q [n][hq][d] and K or V into the token's cache rows kv_rows[2t], [2t + 1].
// rotated = head < hq + hkv (a query or key head), from the caller: computed in here, it moved
// in dgemv's code (same results, different registers).
__device__ __forceinline__ void qkv_rope_store(float a, float b, int r0, int r1, bool rotated, int head, int i, int half, int d,
                                               int t, int hq, int hkv, const float* bias, const int* positions,
                                               const float* inv_freq, bf16* q, const u64* kv_rows) {
    if (bias) { a += bias[r0]; b += bias[r1]; }
    if (rotated) {
        float sn, cs;
        sincosf((float)positions[t] * inv_freq[i], &sn, &cs);
        rope_rotate(a, b, sn, cs);
    }
    bf16* dst;
    if (head < hq) dst = q + ((size_t)t * hq + head) * d;
    else if (rotated) dst = (bf16*)kv_rows[2 * t] + (size_t)(head - hq) * d;
    else dst = (bf16*)kv_rows[2 * t + 1] + (size_t)(head - hq - hkv) * d;
    dst[i] = f2bf(a); dst[i + half] = f2bf(b);
}

template <int N, int OUT, int U, int S>
__device__ __forceinline__ void dgemv(const bf16* __restrict__ W, int out, int k, const bf16* __restrict__ x,
                                      const double* __restrict__ sums_in, float eps, void* __restrict__ y,
                                      double* __restrict__ sums_out, bf16* __restrict__ xw, const float* __restrict__ normw,
                                      const float* __restrict__ bias, const int* __restrict__ positions,
                                      const float* __restrict__ inv_freq, const u64* __restrict__ kv_rows, int hq, int hkv, int d,
                                      int prefetch_bytes) {
    // S = 2 splits each row pair's k range over two warps of the block (twice the warps, half
    // the dependent rounds each) for matrices too small to fill the GPU with one warp per pair.
    const int warp_in_block = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int part = S == 2 ? (warp_in_block & 1) : 0;
    const int warp = blockIdx.x * (4 / S) + warp_in_block / S;
    int r0, r1;
    if (OUT == 3) {
        const int half = d >> 1, head = warp / half, i = warp - head * half;
        r0 = head * d + i; r1 = r0 + half;
    } else if (OUT == 4) {
        r0 = warp; r1 = warp + (out >> 1);
        if (r0 >= (out >> 1)) r0 = out;  // inactive
    } else {
        r0 = 2 * warp; r1 = r0 + 1;
    }
    const bool active = r0 < out;
    const bool second = active && r1 < out;
    // Programmatic dependent launch (a no-op without it): let the next matmul's CTAs start
    // prefetching now, pull this warp's first weights towards L2, and only then wait for the
    // previous kernel, whose outputs (x, sums, residual, positions) this one reads.
    asm volatile("griddepcontrol.launch_dependents;");
    if (active) {
        const char* p0 = (const char*)(W + (size_t)r0 * k);
        const char* p1 = (const char*)(W + (size_t)(second ? r1 : r0) * k);
        const int bytes = min(k * 2, prefetch_bytes);
        for (int o = lane * 128; o < bytes; o += 32 * 128) {
            asm volatile("prefetch.global.L2 [%0];" :: "l"(p0 + o));
            asm volatile("prefetch.global.L2 [%0];" :: "l"(p1 + o));
        }
    }
    // EARLY_WEIGHTS: the first round of weights goes into registers before the wait. Weights never
    // change, so reading them early is safe, and a warp resident while the previous kernel
    // drains keeps DRAM busy across the kernel boundary (registers, unlike an L2 prefetch,
    // cannot be evicted by the previous kernel's stream before use).
    const uint4* w0 = (const uint4*)(W + (size_t)r0 * k);
    const uint4* w1 = (const uint4*)(W + (size_t)(second ? r1 : r0) * k);
    const int vecs = (k >> 3) * (part + 1) / S;
    int v = (k >> 3) * part / S + lane;
    uint4 ea[U], eb[U];
    const bool loaded = EARLY_WEIGHTS && active && v + 32 * (U - 1) < vecs;
    if (loaded) {
#pragma unroll
        for (int u = 0; u < U; ++u) { ea[u] = ld_weights_early(w0 + v + 32 * u); eb[u] = ld_weights_early(w1 + v + 32 * u); }
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    float acc[N][2];
#pragma unroll
    for (int t = 0; t < N; ++t) { acc[t][0] = 0.f; acc[t][1] = 0.f; }
    if (active) {
        if (loaded) {  // the early round, then the loop as without it (its registers free again)
            dg_round<N, U>(acc, x, k, v, ea, eb);
            v += 32 * U;
        }
        for (; v + 32 * (U - 1) < vecs; v += 32 * U) {
            uint4 a[U], b[U];
#pragma unroll
#pragma unroll
            for (int u = 0; u < U; ++u) { a[u] = ld_weights(w0 + v + 32 * u); b[u] = ld_weights(w1 + v + 32 * u); }
            __syncwarp();  // with the volatile loads: every load of the round issues before the math
            dg_round<N, U>(acc, x, k, v, a, b);
        }
        for (; v < vecs; v += 32) {
            const uint4 a = __ldg(w0 + v), b = __ldg(w1 + v);
#pragma unroll
            for (int t = 0; t < N; ++t) {
                float xs[8];
                dg_load(xs, x + (size_t)t * k, v);
                dg_fma(acc[t][0], xs, a);
                dg_fma(acc[t][1], xs, b);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < N; ++t) { acc[t][0] = warp_sum(acc[t][0]); acc[t][1] = warp_sum(acc[t][1]); }
    if (S == 2) {
        __shared__ float split_acc[2][4][2];
        const int pair = warp_in_block >> 1;
        if (part == 1 && lane == 0) {
#pragma unroll
            for (int t = 0; t < N; ++t) { split_acc[pair][t][0] = acc[t][0]; split_acc[pair][t][1] = acc[t][1]; }
        }
        __syncthreads();
        if (part == 0) {
#pragma unroll
            for (int t = 0; t < N; ++t) { acc[t][0] += split_acc[pair][t][0]; acc[t][1] += split_acc[pair][t][1]; }
        }
    }
    const bool leader = part == 0;
#pragma unroll
    for (int t = 0; t < N; ++t) {
        const float scale = sums_in ? rms_scale(sums_in[t], k, eps) : 1.f;
        acc[t][0] *= scale;
        acc[t][1] *= scale;
    }

    if (OUT == 2) {
        __shared__ double block_sums[4][4];
        if (lane == 0) {
#pragma unroll
            for (int t = 0; t < N; ++t) {
                float sq = 0.f;
                if (active && leader) residual_add<false>((float*)y, xw, normw, out, t, r0, acc[t][0], sq);
                if (second && leader) residual_add<false>((float*)y, xw, normw, out, t, r1, acc[t][1], sq);
                block_sums[warp_in_block][t] = sq;
            }
        }
        __syncthreads();
        if (threadIdx.x < N) {
            const double s = block_sums[0][threadIdx.x] + block_sums[1][threadIdx.x] + block_sums[2][threadIdx.x] + block_sums[3][threadIdx.x];
            atomicAdd(sums_out + threadIdx.x, s);
        }
        return;
    }
    if (lane != 0 || !active || !leader) return;
#pragma unroll
    for (int t = 0; t < N; ++t) {
        if (OUT == 1) {
            ((float*)y)[(size_t)t * out + r0] = acc[t][0];
            if (second) ((float*)y)[(size_t)t * out + r1] = acc[t][1];
        } else if (OUT == 4) {
            ((bf16*)y)[(size_t)t * (out >> 1) + r0] = f2bf(silu_mul(acc[t][0], acc[t][1]));
        } else {  // OUT == 3
            const int half = d >> 1, head = r0 / d, i = r0 - head * d;
            qkv_rope_store(acc[t][0], acc[t][1], r0, r1, head < hq + hkv, head, i, half, d, t, hq, hkv, bias, positions, inv_freq,
                           (bf16*)y, kv_rows);
        }
    }
}


// ---- Skinny matmul on tensor cores: 5-64 token rows ------------------------------------------
// Y[t][row] (bf16 =, fp32 =, or fp32 +=: mode 0, 1, 2) = sum_k X[t][k] W[row][k]. A CTA of 8
// warps owns 16 rows; its warps take interleaved 32-wide k chunks (split k) and meet in shared
// memory. Per chunk a lane loads 16 bytes of rows g and g + 8 straight into m16n8k16 A
// fragments, and for each 8-token tile 16 bytes of token g's X row as B fragments: the k order
// inside a chunk is permuted the same way on both sides (elements 8c .. 8c + 7 of the chunk are
// the lane's k pairs (2c, 2c + 1) and (2c + 8, 2c + 9) of two k16 steps), as the decode attention
// kernel loads K. SK_U chunks' loads are issued before their math.
#define SK_WARPS 8
__device__ __forceinline__ void sk_mma(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ u32 sk_word(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// The k loop: this warp's 32-wide chunks (w, w + SK_WARPS, ...) of weight rows `rowA` (the
// fragment's row g) and `rowB` (row g + 8) against every token; acc[t] is tile t's C fragment.
template <int NT, int U>
__device__ __forceinline__ void sk_accumulate(const bf16* __restrict__ W, const bf16* __restrict__ X, int rowA, int rowB,
                                              int k, int n, float (&acc)[NT][4]) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const uint4* wa = (const uint4*)(W + (size_t)rowA * k) + c;
    const uint4* wb = (const uint4*)(W + (size_t)rowB * k) + c;
    const uint4* xs[NT];
    bool live[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const int token = 8 * t + g;
        live[t] = token < n;
        xs[t] = (const uint4*)(X + (size_t)(live[t] ? token : 0) * k) + c;
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) { acc[t][0] = 0.f; acc[t][1] = 0.f; acc[t][2] = 0.f; acc[t][3] = 0.f; }
    const int chunks = k >> 5;
    for (int base = w; base < chunks; base += SK_WARPS * U) {
        uint4 ra[U], rb[U], rx[U][NT];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int ch = base + SK_WARPS * u;
            const bool ok = ch < chunks;
            ra[u] = ok ? ld_weights(wa + 4 * ch) : make_uint4(0, 0, 0, 0);
            rb[u] = ok ? ld_weights(wb + 4 * ch) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int t = 0; t < NT; ++t) rx[u][t] = ok && live[t] ? __ldg(xs[t] + 4 * ch) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int s = 0; s < 2; ++s)
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    sk_mma(acc[t], sk_word(ra[u], 2 * s), sk_word(rb[u], 2 * s), sk_word(ra[u], 2 * s + 1), sk_word(rb[u], 2 * s + 1),
                           sk_word(rx[u][t], 2 * s), sk_word(rx[u][t], 2 * s + 1));
    }
}

// The warps' C fragments into red ([SK_WARPS][16][stride]): row g | g + 8, tokens 8t + 2c, + 1.
template <int NT>
__device__ __forceinline__ void sk_spill(const float (&acc)[NT][4], float* __restrict__ red, int stride) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        red[(w * 16 + g) * stride + 8 * t + 2 * c] = acc[t][0];
        red[(w * 16 + g) * stride + 8 * t + 2 * c + 1] = acc[t][1];
        red[(w * 16 + g + 8) * stride + 8 * t + 2 * c] = acc[t][2];
        red[(w * 16 + g + 8) * stride + 8 * t + 2 * c + 1] = acc[t][3];
    }
}

__device__ __forceinline__ float sk_sum(const float* __restrict__ red, int stride, int r, int token) {
    float v = 0.f;
#pragma unroll
    for (int q = 0; q < SK_WARPS; ++q) v += red[(q * 16 + r) * stride + token];
    return v;
}

template <int NT, int U>
__device__ __forceinline__ void skinny(const bf16* __restrict__ W, const bf16* __restrict__ X, void* __restrict__ Y,
                                       int out, int k, int n, int mode, float* __restrict__ red) {
    constexpr int stride = 8 * NT + 1;
    const int g = (threadIdx.x & 31) >> 2;
    const int row0 = blockIdx.x * 16;
    float acc[NT][4];
    sk_accumulate<NT, U>(W, X, min(row0 + g, out - 1), min(row0 + g + 8, out - 1), k, n, acc);
    sk_spill<NT>(acc, red, stride);
    __syncthreads();
    for (int e = threadIdx.x; e < 16 * n; e += SK_WARPS * 32) {
        const int r = e & 15, token = e >> 4, row = row0 + r;
        if (row >= out) continue;
        const float v = sk_sum(red, stride, r, token);
        const size_t at = (size_t)token * out + row;
        if (mode == 0) ((bf16*)Y)[at] = f2bf(v);
        else if (mode == 1) ((float*)Y)[at] = v;
        else ((float*)Y)[at] += v;
    }
}

// The fused decode matmuls (dgemv's epilogues) for 5-16 token rows: a CTA owns 8 row pairs, the
// pair's first row as the fragment's row g and its partner as row g + 8 (consecutive rows for
// OUT 1 and 2; (i, i + d/2) of a head for OUT 3; (i, f + i) for OUT 4).
template <int NT, int U, int OUT>
__device__ __forceinline__ void dskinny(const bf16* __restrict__ W, int out, int k, int n, const bf16* __restrict__ x,
                                        const double* __restrict__ sums_in, float eps, void* __restrict__ y,
                                        double* __restrict__ sums_out, bf16* __restrict__ xw, const float* __restrict__ normw,
                                        const float* __restrict__ bias, const int* __restrict__ positions,
                                        const float* __restrict__ inv_freq, const u64* __restrict__ kv_rows, int hq, int hkv, int d,
                                        float* __restrict__ red, double* __restrict__ tokenSums) {
    constexpr int stride = 8 * NT + 1;
    const int g = (threadIdx.x & 31) >> 2;
    // Pair p's rows; for OUT 1 and 2 the CTA's 16 consecutive rows, g and g + 8.
    auto rows_of = [&](int gg, int& r0, int& r1) {
        if (OUT == 3) { const int p = blockIdx.x * 8 + gg, half = d >> 1, head = p / half, i = p - head * half; r0 = head * d + i; r1 = r0 + half; }
        else if (OUT == 4) { r0 = blockIdx.x * 8 + gg; r1 = r0 + (out >> 1); }
        else { r0 = blockIdx.x * 16 + gg; r1 = r0 + 8; }
    };
    int r0, r1;
    rows_of(g, r0, r1);
    const int last = (OUT == 3 || OUT == 4) ? out - 1 : out - 1;
    asm volatile("griddepcontrol.launch_dependents;");
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (OUT == 2 && threadIdx.x < 16) tokenSums[threadIdx.x] = 0.0;
    float acc[NT][4];
    sk_accumulate<NT, U>(W, x, min(r0, last), min(r1, last), k, n, acc);
    sk_spill<NT>(acc, red, stride);
    __syncthreads();
    for (int e = threadIdx.x; e < 8 * n; e += SK_WARPS * 32) {
        const int gg = e & 7, t = e >> 3;
        rows_of(gg, r0, r1);
        const float scale = sums_in ? rms_scale(sums_in[t], k, eps) : 1.f;
        const float a = sk_sum(red, stride, gg, t) * scale, b = sk_sum(red, stride, gg + 8, t) * scale;
        if (OUT == 1) {
            if (r0 < out) ((float*)y)[(size_t)t * out + r0] = a;
            if (r1 < out) ((float*)y)[(size_t)t * out + r1] = b;
        } else if (OUT == 2) {
            float sq = 0.f;
            if (r0 < out) residual_add<false>((float*)y, xw, normw, out, t, r0, a, sq);
            if (r1 < out) residual_add<false>((float*)y, xw, normw, out, t, r1, b, sq);
            atomicAdd(&tokenSums[t], (double)sq);
        } else if (OUT == 4) {
            if (r0 < (out >> 1)) ((bf16*)y)[(size_t)t * (out >> 1) + r0] = f2bf(silu_mul(a, b));
        } else {  // OUT == 3
            if (r0 >= out) continue;
            const int half = d >> 1, head = r0 / d, i = r0 - head * d;
            qkv_rope_store(a, b, r0, r1, head < hq + hkv, head, i, half, d, t, hq, hkv, bias, positions, inv_freq, (bf16*)y,
                           kv_rows);
        }
    }
    if (OUT == 2) add_block_sums(sums_out, tokenSums, n);
}

#define DSKINNY_KERNEL(NAME, OUT) \
extern "C" __global__ void __launch_bounds__(SK_WARPS * 32) NAME(DGEMV_PARAMS) { \
    __shared__ float red[SK_WARPS * 16 * 17]; \
    __shared__ double tokenSums[16]; \
    (void)prefetch_bytes; \
    if (n <= 8) dskinny<1, 4, OUT>(W, out, k, n, x, sums_in, eps, y, sums_out, xw, normw, bias, positions, inv_freq, kv_rows, hq, hkv, d, red, tokenSums); \
    else dskinny<2, 4, OUT>(W, out, k, n, x, sums_in, eps, y, sums_out, xw, normw, bias, positions, inv_freq, kv_rows, hq, hkv, d, red, tokenSums); \
}

extern "C" __global__ void __launch_bounds__(SK_WARPS * 32) vt_skinny(const bf16* __restrict__ W, const bf16* __restrict__ X,
                                                                      void* __restrict__ Y, int out, int k, int n, int mode) {
    __shared__ float red[SK_WARPS * 16 * 65];
    switch ((n + 7) >> 3) {
    case 1: skinny<1, 4>(W, X, Y, out, k, n, mode, red); break;
    case 2: skinny<2, 4>(W, X, Y, out, k, n, mode, red); break;
    case 3: skinny<3, 2>(W, X, Y, out, k, n, mode, red); break;
    case 4: skinny<4, 2>(W, X, Y, out, k, n, mode, red); break;
    case 5: skinny<5, 2>(W, X, Y, out, k, n, mode, red); break;
    case 6: skinny<6, 2>(W, X, Y, out, k, n, mode, red); break;
    case 7: skinny<7, 1>(W, X, Y, out, k, n, mode, red); break;
    default: skinny<8, 1>(W, X, Y, out, k, n, mode, red); break;
    }
}

// ---- Persistent decode layer block (cooperative launch) ------------------------------------
// One kernel runs O, then gate/up + SwiGLU, then down, then the next layer's QKV + RoPE + KV
// write, with grid barriers between the phases instead of kernel boundaries: a warp that finishes
// a phase prefetches its first weights of the next one into L2 before waiting, so the weight
// stream does not drain between matmuls. Data produced inside the kernel is read with ld.cg
// (L2, never a stale L1 line). All blocks must be resident: cooperative launch, grid <= occupancy.
__device__ __forceinline__ void cg_load_x(float xs[8], const bf16* __restrict__ x, int v) {
    uint4 q;
    asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(q.x), "=r"(q.y), "=r"(q.z), "=r"(q.w) : "l"((const uint4*)x + v));
    const u32 w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) { xs[2 * e] = __int_as_float(w[e] << 16); xs[2 * e + 1] = __int_as_float(w[e] & 0xffff0000u); }
}

__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(counter, 1u);
        unsigned seen;
        do {
            asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(seen) : "l"(counter));
            if (seen < target) __nanosleep(20);
        } while (seen < target);
    }
    __syncthreads();
}

// Dot products of rows r0, r1 of W (k wide) with the n token rows of x (bf16, produced in-kernel).
template <int N, int U>
__device__ __forceinline__ void pl_rows(float acc[N][2], const bf16* __restrict__ W, int k, const bf16* __restrict__ x,
                                        int r0, int r1, bool second, int lane) {
#pragma unroll
    for (int t = 0; t < N; ++t) { acc[t][0] = 0.f; acc[t][1] = 0.f; }
    const uint4* w0 = (const uint4*)(W + (size_t)r0 * k);
    const uint4* w1 = (const uint4*)(W + (size_t)(second ? r1 : r0) * k);
    const int vecs = k >> 3;
    int v = lane;
    for (; v + 32 * (U - 1) < vecs; v += 32 * U) {
        uint4 a[U], b[U];
#pragma unroll
        for (int u = 0; u < U; ++u) { a[u] = ld_weights(w0 + v + 32 * u); b[u] = ld_weights(w1 + v + 32 * u); }
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int t = 0; t < N; ++t) {
                float xs[8];
                cg_load_x(xs, x + (size_t)t * k, v + 32 * u);
                dg_fma(acc[t][0], xs, a[u]);
                dg_fma(acc[t][1], xs, b[u]);
            }
    }
    for (; v < vecs; v += 32) {
        const uint4 a = ld_weights(w0 + v), b = ld_weights(w1 + v);
#pragma unroll
        for (int t = 0; t < N; ++t) {
            float xs[8];
            cg_load_x(xs, x + (size_t)t * k, v);
            dg_fma(acc[t][0], xs, a);
            dg_fma(acc[t][1], xs, b);
        }
    }
#pragma unroll
    for (int t = 0; t < N; ++t) { acc[t][0] = warp_sum(acc[t][0]); acc[t][1] = warp_sum(acc[t][1]); }
}

__device__ __forceinline__ void pl_prefetch(const bf16* __restrict__ W, int k, int r0, int r1, int lane) {
    const char* p0 = (const char*)(W + (size_t)r0 * k);
    const char* p1 = (const char*)(W + (size_t)r1 * k);
    const int bytes = min(k * 2, 4096);
    for (int o = lane * 128; o < bytes; o += 32 * 128) {
        asm volatile("prefetch.global.L2 [%0];" :: "l"(p0 + o));
        asm volatile("prefetch.global.L2 [%0];" :: "l"(p1 + o));
    }
}

struct LayerBlockArgs {
    const bf16* wo; const bf16* wgu; const bf16* wd; const bf16* wqkv;  // wqkv null: last layer
    const bf16* attended; float* residual; bf16* xw; bf16* act; bf16* q;
    const float* post_norm; const float* next_norm;
    double* sums_post; double* sums_next;                                // zeroed at the step start
    const float* qkv_bias; const int* positions; const float* inv_freq; const u64* kv_rows_next;
    unsigned* barrier;                                                   // zeroed at the step start
    int h, f, hq, hkv, d, n; float eps;
};

// Residual update epilogue for a pair: residual += acc, xw = bf16(new * norm), squares into blk_sq.
template <int N>
__device__ __forceinline__ void pl_residual(const float acc[N][2], float* residual, bf16* xw, const float* norm, int out,
                                            int r0, int r1, bool second, double* blk_sq) {
#pragma unroll
    for (int t = 0; t < N; ++t) {
        float sq = 0.f;
        residual_add<true>(residual, xw, norm, out, t, r0, acc[t][0], sq);
        if (second) residual_add<true>(residual, xw, norm, out, t, r1, acc[t][1], sq);
        atomicAdd(blk_sq + t, (double)sq);
    }
}

template <int N>
__device__ void layer_block(const LayerBlockArgs& A) {
    __shared__ double blk_sq[4];
    const int lane = threadIdx.x & 31;
    const int gw = blockIdx.x * 4 + (threadIdx.x >> 5), GW = gridDim.x * 4;
    unsigned phase = 0;
    // Phase 1: O. residual += attended . Wo^T; sums_post, xw (post-attention norm).
    if (threadIdx.x < 4) blk_sq[threadIdx.x] = 0.0;
    __syncthreads();
    const int hq_d = A.hq * A.d, pairsO = A.h / 2;
    for (int p = gw; p < pairsO; p += GW) {
        float acc[N][2];
        pl_rows<N, 8>(acc, A.wo, hq_d, A.attended, 2 * p, 2 * p + 1, true, lane);
        if (lane == 0) pl_residual<N>(acc, A.residual, A.xw, A.post_norm, A.h, 2 * p, 2 * p + 1, true, blk_sq);
    }
    if (gw < A.f) pl_prefetch(A.wgu, A.h, gw, gw + A.f, lane);
    add_block_sums(A.sums_post, blk_sq, N);
    grid_barrier(A.barrier, ++phase * gridDim.x);

    // Phase 2: gate/up with the post-attention norm's scale, SwiGLU into act.
    float scale[N];
#pragma unroll
    for (int t = 0; t < N; ++t) scale[t] = rms_scale(ld_cg_f64(A.sums_post + t), A.h, A.eps);
    for (int p = gw; p < A.f; p += GW) {
        float acc[N][2];
        pl_rows<N, 8>(acc, A.wgu, A.h, A.xw, p, p + A.f, true, lane);
        if (lane == 0) {
#pragma unroll
            for (int t = 0; t < N; ++t) A.act[(size_t)t * A.f + p] = f2bf(silu_mul(acc[t][0] * scale[t], acc[t][1] * scale[t]));
        }
    }
    if (gw < pairsO) pl_prefetch(A.wd, A.f, 2 * gw, 2 * gw + 1, lane);
    if (threadIdx.x < 4) blk_sq[threadIdx.x] = 0.0;
    grid_barrier(A.barrier, ++phase * gridDim.x);

    // Phase 3: down. residual += act . Wd^T; sums_next, xw (next norm).
    for (int p = gw; p < pairsO; p += GW) {
        float acc[N][2];
        pl_rows<N, 8>(acc, A.wd, A.f, A.act, 2 * p, 2 * p + 1, true, lane);
        if (lane == 0) pl_residual<N>(acc, A.residual, A.xw, A.next_norm, A.h, 2 * p, 2 * p + 1, true, blk_sq);
    }
    const int half = A.d / 2, pairsQKV = (A.hq + 2 * A.hkv) * half;
    if (A.wqkv && gw < pairsQKV) {
        const int head = gw / half, i = gw - head * half;
        pl_prefetch(A.wqkv, A.h, head * A.d + i, head * A.d + i + half, lane);
    }
    add_block_sums(A.sums_next, blk_sq, N);
    if (!A.wqkv) return;
    grid_barrier(A.barrier, ++phase * gridDim.x);

    // Phase 4: the next layer's QKV with its input norm's scale, bias, RoPE; Q out, K/V into the cache.
#pragma unroll
    for (int t = 0; t < N; ++t) scale[t] = rms_scale(ld_cg_f64(A.sums_next + t), A.h, A.eps);
    for (int p = gw; p < pairsQKV; p += GW) {
        const int head = p / half, i = p - head * half;
        const int r0 = head * A.d + i, r1 = r0 + half;
        float acc[N][2];
        pl_rows<N, 8>(acc, A.wqkv, A.h, A.xw, r0, r1, true, lane);
        if (lane != 0) continue;
#pragma unroll
        for (int t = 0; t < N; ++t)
            qkv_rope_store(acc[t][0] * scale[t], acc[t][1] * scale[t], r0, r1, head < A.hq + A.hkv, head, i, half, A.d, t, A.hq,
                           A.hkv, A.qkv_bias, A.positions, A.inv_freq, A.q, A.kv_rows_next);
    }
}

extern "C" __global__ void __launch_bounds__(128) vt_decode_layer_block(
    const bf16* wo, const bf16* wgu, const bf16* wd, const bf16* wqkv, const bf16* attended, float* residual, bf16* xw,
    bf16* act, bf16* q, const float* post_norm, const float* next_norm, double* sums_post, double* sums_next,
    const float* qkv_bias, const int* positions, const float* inv_freq, const u64* kv_rows_next, unsigned* barrier,
    int h, int f, int hq, int hkv, int d, int n, float eps) {
    const LayerBlockArgs args = {wo, wgu, wd, wqkv, attended, residual, xw, act, q, post_norm, next_norm, sums_post, sums_next,
                                 qkv_bias, positions, inv_freq, kv_rows_next, barrier, h, f, hq, hkv, d, n, eps};
    switch (args.n) {
    case 1: layer_block<1>(args); break;
    case 2: layer_block<2>(args); break;
    case 3: layer_block<3>(args); break;
    default: layer_block<4>(args); break;
    }
}

// Zeroes `count` words (the layer blocks' barrier counters) at the start of a decode step.
extern "C" __global__ void vt_zero_words(unsigned* __restrict__ p, int count) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) p[i] = 0u;
}

#define DGEMV_PARAMS const bf16* __restrict__ W, int out, int k, int n, const bf16* __restrict__ x, \
    const double* __restrict__ sums_in, float eps, void* __restrict__ y, double* __restrict__ sums_out, bf16* __restrict__ xw, \
    const float* __restrict__ normw, const float* __restrict__ bias, const int* __restrict__ positions, \
    const float* __restrict__ inv_freq, const u64* __restrict__ kv_rows, int hq, int hkv, int d, int prefetch_bytes
#define DGEMV_ARGS W, out, k, x, sums_in, eps, y, sums_out, xw, normw, bias, positions, inv_freq, kv_rows, hq, hkv, d, prefetch_bytes
// U: 16-byte loads per lane per row per round. S: warps sharing a row pair's k range (1 or 2).
#define DGEMV_KERNEL(NAME, OUT, U, S) \
extern "C" __global__ void __launch_bounds__(128) NAME(DGEMV_PARAMS) { \
    switch (n) { \
    case 1: dgemv<1, OUT, U, S>(DGEMV_ARGS); break; \
    case 2: dgemv<2, OUT, U, S>(DGEMV_ARGS); break; \
    case 3: dgemv<3, OUT, U, S>(DGEMV_ARGS); break; \
    default: dgemv<4, OUT, U, S>(DGEMV_ARGS); break; \
    } \
}
DGEMV_KERNEL(vt_dgemv_logits, 1, GEMV_UNROLL, 1)
DGEMV_KERNEL(vt_dgemv_residual, 2, GEMV_UNROLL, 1)
DGEMV_KERNEL(vt_dgemv_qkv_rope, 3, GEMV_UNROLL, 1)
DGEMV_KERNEL(vt_dgemv_swiglu, 4, GEMV_UNROLL, 1)
DGEMV_KERNEL(vt_dgemv_logits_k2, 1, GEMV_UNROLL, 2)
DGEMV_KERNEL(vt_dgemv_residual_k2, 2, GEMV_UNROLL, 2)
DGEMV_KERNEL(vt_dgemv_qkv_rope_k2, 3, GEMV_UNROLL, 2)
DGEMV_KERNEL(vt_dgemv_swiglu_k2, 4, GEMV_UNROLL, 2)
DSKINNY_KERNEL(vt_dskinny_logits, 1)
DSKINNY_KERNEL(vt_dskinny_residual, 2)
DSKINNY_KERNEL(vt_dskinny_qkv_rope, 3)
DSKINNY_KERNEL(vt_dskinny_swiglu, 4)

// Decode's embedding: x[row] = table[tokens[row]] in fp32, sums[0][row] = its sum of squares,
// xw[row] = bf16(x * normw) (layer 0's input norm weight), and every later norm slot of the row
// zeroed (the matmuls that update the residual accumulate them).
extern "C" __global__ void vt_embed_sums(const bf16* __restrict__ table, const int* __restrict__ tokens, float* __restrict__ x,
                                         int hidden, double* __restrict__ sums, int slots, int n, bf16* __restrict__ xw,
                                         const float* __restrict__ normw) {
    const int row = blockIdx.x;
    const bf16* src = table + (size_t)tokens[row] * hidden;
    float* dst = x + (size_t)row * hidden;
    float s = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float v = bf2f(src[i]);
        dst[i] = v; s += v * v;
        xw[(size_t)row * hidden + i] = f2bf(v * normw[i]);
    }
    __shared__ float partial[32];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) t += partial[w];
        sums[row] = t;
    }
    for (int slot = 1 + threadIdx.x; slot < slots; slot += blockDim.x) sums[(size_t)slot * n + row] = 0.0;
}

__device__ __forceinline__ u32 hash32(u32 x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

// Dummy weights: approximately normal(mean, std) bf16 values (sum of 4 uniforms), from a seed.
extern "C" __global__ void vt_fill_normal_bf16(bf16* __restrict__ out, u64 count, u32 seed, float mean, float std) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x) {
        u32 h = hash32((u32)i ^ hash32(seed ^ (u32)(i >> 32) * 0x9e3779b9U));
        float s = 0.f;
        for (int j = 0; j < 4; ++j) { h = hash32(h + j); s += (h >> 8) * (1.0f / 16777216.0f); }
        out[i] = f2bf(mean + (s - 2.f) * 1.7320508f * std);
    }
}
"""#
}

/// Every program the runtime compiles (for `vtensor kernels compile`).
public enum RuntimeKernels {
    public static var catalog: [KernelSource] { [ModelKernels.program(), GPUSampler.program, GPUSampler.maskProgram] }
}
