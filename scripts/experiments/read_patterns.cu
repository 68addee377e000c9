// Read-bandwidth patterns on the GPU machine (an experiment, not part of the product):
// which way of streaming bytes from HBM reaches the card's read ceiling, and what the decode
// kernel's access pattern (256-byte head pieces of K/V rows) costs against a sequential read.
//
// Build and run there: nvcc -O3 -gencode=arch=compute_90,code=sm_90 -o read_patterns read_patterns.cu && ./read_patterns
// Every kernel folds what it reads into an XOR that it writes, so no load is dead; the data is
// random (never zeros); each time is the median of 15 CUDA-event timings after a warm-up, with
// four buffers rotated so L2 (50-60 MB) holds nothing useful.
#ifndef __CUDACC_RTC__
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#endif

typedef unsigned int u32;
typedef unsigned long long u64;

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
    fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); exit(1); } } while (0)

__global__ void fill(u32 *p, u64 n, u32 seed) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        u64 x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
        x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
        p[i] = (u32)(x ^ (x >> 32));
    }
}

__device__ __forceinline__ uint4 ld_nc(const void *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ uint4 ld_weak(const void *p) {
    uint4 r;
    asm volatile("ld.global.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ uint4 ld_l2hint(const void *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ u32 fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

__device__ __forceinline__ void finish(u32 acc, u32 *out) {
    for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) atomicXor(out, acc);
}

// 1. Sequential, registers: a persistent grid; a block's tile is THREADS x U vectors, each thread
//    loading U vectors THREADS apart (coalesced) before using any. LOAD: 0 nc, 1 weak, 2 nc + L2::256B.
template <int U, int LOAD>
__global__ void seq_regs(const uint4 *src, u64 vectors, u32 *out) {
    u32 acc = 0;
    const u64 tile = (u64)blockDim.x * U;
    for (u64 base = blockIdx.x * tile; base < vectors; base += (u64)gridDim.x * tile) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const u64 i = base + threadIdx.x + (u64)u * blockDim.x;
            const uint4 *p = src + (i < vectors ? i : 0);
            v[u] = LOAD == 0 ? ld_nc(p) : LOAD == 1 ? ld_weak(p) : ld_l2hint(p);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) acc ^= fold(v[u]);
    }
    finish(acc, out);
}

// 2. Sequential, software pipeline in registers: two tiles in flight per thread (loads of tile
//    k+1 issued before tile k is folded).
template <int U>
__global__ void seq_regs_pipelined(const uint4 *src, u64 vectors, u32 *out) {
    u32 acc = 0;
    const u64 tile = (u64)blockDim.x * U, step = (u64)gridDim.x * tile;
    u64 base = blockIdx.x * tile;
    uint4 cur[U], nxt[U];
#pragma unroll
    for (int u = 0; u < U; ++u) { const u64 i = base + threadIdx.x + (u64)u * blockDim.x; cur[u] = ld_nc(src + (i < vectors ? i : 0)); }
    for (; base < vectors; base += step) {
        const u64 nb = base + step;
#pragma unroll
        for (int u = 0; u < U; ++u) { const u64 i = nb + threadIdx.x + (u64)u * blockDim.x; nxt[u] = ld_nc(src + (i < vectors ? i : 0)); }
#pragma unroll
        for (int u = 0; u < U; ++u) { acc ^= fold(cur[u]); cur[u] = nxt[u]; }
    }
    finish(acc, out);
}

// 3. Sequential, cp.async (16-byte LDGSTS) into shared memory: each thread copies and later reads
//    back its own vectors, STAGES tiles deep (no block barriers needed).
template <int U, int STAGES>
__global__ void seq_cpasync(const uint4 *src, u64 vectors, u32 *out) {
    extern __shared__ __align__(16) uint4 sbuf[];  // [STAGES][U][blockDim]
    u32 acc = 0;
    const u64 tile = (u64)blockDim.x * U, step = (u64)gridDim.x * tile;
    const u64 first = blockIdx.x * tile;
    const int nTiles = first < vectors ? (int)((vectors - first + step - 1) / step) : 0;
    auto issue = [&](int k) {
        if (k < nTiles) {
            const u64 base = first + (u64)k * step;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const u64 i = base + threadIdx.x + (u64)u * blockDim.x;
                const uint4 *g = src + (i < vectors ? i : 0);
                const u32 s = (u32)__cvta_generic_to_shared(&sbuf[((k % STAGES) * U + u) * blockDim.x + threadIdx.x]);
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(s), "l"(g));
            }
        }
        asm volatile("cp.async.commit_group;");
    };
    for (int k = 0; k < STAGES - 1; ++k) issue(k);
    for (int k = 0; k < nTiles; ++k) {
        issue(k + STAGES - 1);
        asm volatile("cp.async.wait_group %0;" :: "n"(STAGES - 1));
#pragma unroll
        for (int u = 0; u < U; ++u) acc ^= fold(sbuf[((k % STAGES) * U + u) * blockDim.x + threadIdx.x]);
    }
    asm volatile("cp.async.wait_group 0;");
    finish(acc, out);
}

// 4. Sequential, bulk copies (the copy engine, cp.async.bulk) of CHUNK bytes into STAGES shared
//    buffers completing on mbarriers; one thread issues, all threads fold, a block barrier
//    frees a stage.
__device__ __forceinline__ void mbar_init(u64 *bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"((u32)__cvta_generic_to_shared(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_and_copy(u64 *bar, void *dst, const void *src, u32 bytes) {
    const u32 b = (u32)__cvta_generic_to_shared(bar), d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(b), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"(d), "l"(src), "r"(bytes), "r"(b) : "memory");
}
__device__ __forceinline__ void mbar_wait(u64 *bar, u32 parity) {
    const u32 b = (u32)__cvta_generic_to_shared(bar);
    asm volatile("{\n .reg .pred p;\n WAIT_%=:\n"
                 " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 " @!p bra WAIT_%=;\n}" :: "r"(b), "r"(parity) : "memory");
}

template <int CHUNK, int STAGES>
__global__ void seq_bulk(const char *src, u64 bytes, u32 *out) {
    extern __shared__ __align__(128) uint4 sbulk[];  // [STAGES][CHUNK / 16]
    __shared__ __align__(8) u64 full[STAGES];
    const u64 nChunks = bytes / CHUNK;
    const int nMine = blockIdx.x < nChunks ? (int)((nChunks - blockIdx.x + gridDim.x - 1) / gridDim.x) : 0;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) mbar_init(&full[s], 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int k = 0; k < STAGES && k < nMine; ++k)
            mbar_expect_and_copy(&full[k], sbulk + k * (CHUNK / 16), src + (blockIdx.x + (u64)k * gridDim.x) * CHUNK, CHUNK);
    u32 acc = 0;
    for (int k = 0; k < nMine; ++k) {
        const int s = k % STAGES;
        mbar_wait(&full[s], (k / STAGES) & 1);
        for (int i = threadIdx.x; i < CHUNK / 16; i += blockDim.x) acc ^= fold(sbulk[s * (CHUNK / 16) + i]);
        __syncthreads();
        if (threadIdx.x == 0 && k + STAGES < nMine)
            mbar_expect_and_copy(&full[s], sbulk + s * (CHUNK / 16), src + (blockIdx.x + (u64)(k + STAGES) * gridDim.x) * CHUNK, CHUNK);
    }
    finish(acc, out);
}

// 5. Decode's access pattern: 256-byte pieces (one KV head of a token's row, head dim 128 in bf16)
//    read for one (request, head, 1024-token segment) per item, K and V, by 4-warp CTAs whose
//    warps take 16-token steps in turn; lane (g, c) loads tokens g and 8 + g at bytes 64j + 16c
//    of K and four tokens' 16 bytes at 16g (+128) of V, as the decode kernel does. Token t of head h:
//    base + (t / tpb) * blockStride + (t % tpb) * tokenStride + h * headStride.
struct Pieces { u64 tokenStride, headStride, blockStride; u32 tpb; };

template <int LOAD>
__global__ void __launch_bounds__(128, 2)
pieces(const char *kbuf, const char *vbuf, int requests, int tokens, int heads, u64 requestStride, Pieces p, u32 *out) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int segs = tokens / 1024;
    const int items = requests * segs * heads;
    u32 acc = 0;
    for (int it = blockIdx.x; it < items; it += gridDim.x) {
        const int h = it % heads, seg = (it / heads) % segs, r = it / (heads * segs);
        const char *kb = kbuf + r * requestStride + h * p.headStride;
        const char *vb = vbuf + r * requestStride + h * p.headStride;
        for (int t0 = seg * 1024 + warp * 16; t0 < seg * 1024 + 1024; t0 += 64) {
            uint4 kr[2][4], vr[4][2];
#pragma unroll
            for (int t = 0; t < 2; ++t) {
                const u32 tok = t0 + 8 * t + g;
                const char *a = kb + (tok / p.tpb) * p.blockStride + (tok % p.tpb) * p.tokenStride + 16 * c;
#pragma unroll
                for (int j = 0; j < 4; ++j) kr[t][j] = LOAD ? ld_l2hint(a + 64 * j) : ld_weak(a + 64 * j);
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const u32 tok = t0 + 2 * c + (u & 1) + 8 * (u >> 1);
                const char *a = vb + (tok / p.tpb) * p.blockStride + (tok % p.tpb) * p.tokenStride + 16 * g;
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) vr[u][hh] = LOAD ? ld_l2hint(a + 128 * hh) : ld_weak(a + 128 * hh);
            }
#pragma unroll
            for (int t = 0; t < 2; ++t)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc ^= fold(kr[t][j]);
#pragma unroll
            for (int u = 0; u < 4; ++u) acc ^= fold(vr[u][0]) ^ fold(vr[u][1]);
        }
    }
    finish(acc, out);
}

#ifdef __CUDACC_RTC__
// Device-code check without a toolkit (NVRTC only): instantiate one of each kernel.
template __global__ void seq_regs<8, 2>(const uint4 *, u64, u32 *);
template __global__ void seq_regs_pipelined<8>(const uint4 *, u64, u32 *);
template __global__ void seq_cpasync<4, 4>(const uint4 *, u64, u32 *);
template __global__ void seq_bulk<16384, 4>(const char *, u64, u32 *);
template __global__ void pieces<1>(const char *, const char *, int, int, int, u64, Pieces, u32 *);
#else
static float median(std::vector<float> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

template <typename Launch>
static float timeIt(Launch launch) {
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a)); CHECK(cudaEventCreate(&b));
    for (int w = 0; w < 3; ++w) launch(w);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::vector<float> ms;
    for (int r = 0; r < 15; ++r) {
        CHECK(cudaEventRecord(a));
        launch(r);
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        float t; CHECK(cudaEventElapsedTime(&t, a, b)); ms.push_back(t);
    }
    CHECK(cudaGetLastError());
    return median(ms);
}

int main(int argc, char **argv) {
    cudaDeviceProp prop; CHECK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    printf("device %s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
    const u64 bytes = 1ull << 31;  // 2 GiB per buffer, 4 buffers
    char *buf[4];
    for (int i = 0; i < 4; ++i) {
        CHECK(cudaMalloc(&buf[i], bytes));
        fill<<<4096, 256>>>((u32 *)buf[i], bytes / 4, 17 + i);
    }
    u32 *out; CHECK(cudaMalloc(&out, 4));
    CHECK(cudaDeviceSynchronize());
    const u64 vectors = bytes / 16;
    auto tbps = [&](float ms, u64 b) { return (double)b / (ms * 1e-3) / 1e12; };
    printf("%-44s %9s %8s\n", "pattern", "ms", "TB/s");
    auto report = [&](const char *name, float ms, u64 b) { printf("%-44s %9.4f %8.3f\n", name, ms, tbps(ms, b)); fflush(stdout); };

#define SEQ_REGS(U, LOAD, BPS, THREADS) do { \
        auto k = seq_regs<U, LOAD>; \
        float ms = timeIt([&](int r) { k<<<sms * BPS, THREADS>>>((const uint4 *)buf[r & 3], vectors, out); }); \
        char name[96]; snprintf(name, sizeof name, "seq regs U=%d load=%d %dx%d", U, LOAD, BPS, THREADS); report(name, ms, bytes); } while (0)
    SEQ_REGS(4, 0, 4, 256);
    SEQ_REGS(4, 0, 8, 256);
    SEQ_REGS(8, 0, 2, 256);
    SEQ_REGS(8, 0, 4, 256);
    SEQ_REGS(8, 0, 8, 256);
    SEQ_REGS(16, 0, 2, 256);
    SEQ_REGS(16, 0, 4, 256);
    SEQ_REGS(8, 1, 4, 256);
    SEQ_REGS(8, 2, 4, 256);
    SEQ_REGS(4, 0, 2, 1024);
    SEQ_REGS(8, 0, 2, 512);
    SEQ_REGS(4, 0, 64, 256);  // many blocks, not persistent-like
#define SEQ_PIPE(U, BPS) do { \
        auto k = seq_regs_pipelined<U>; \
        float ms = timeIt([&](int r) { k<<<sms * BPS, 256>>>((const uint4 *)buf[r & 3], vectors, out); }); \
        char name[96]; snprintf(name, sizeof name, "seq regs pipelined U=%d %dx256", U, BPS); report(name, ms, bytes); } while (0)
    SEQ_PIPE(4, 4);
    SEQ_PIPE(8, 2);
    SEQ_PIPE(8, 4);
#define SEQ_CPA(U, ST, BPS) do { \
        auto k = seq_cpasync<U, ST>; size_t sm = (size_t)ST * U * 256 * 16; \
        CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm)); \
        float ms = timeIt([&](int r) { k<<<sms * BPS, 256, sm>>>((const uint4 *)buf[r & 3], vectors, out); }); \
        char name[96]; snprintf(name, sizeof name, "seq cp.async U=%d stages=%d %dx256 (%zu KB)", U, ST, BPS, sm >> 10); report(name, ms, bytes); } while (0)
    SEQ_CPA(2, 4, 2);
    SEQ_CPA(4, 4, 2);
    SEQ_CPA(4, 3, 3);
    SEQ_CPA(2, 8, 2);
    SEQ_CPA(4, 6, 1);
#define SEQ_BULK(CH, ST, BPS, TH) do { \
        auto k = seq_bulk<CH, ST>; size_t sm = (size_t)ST * CH; \
        CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm)); \
        float ms = timeIt([&](int r) { k<<<sms * BPS, TH, sm>>>(buf[r & 3], bytes, out); }); \
        char name[96]; snprintf(name, sizeof name, "seq bulk chunk=%dK stages=%d %dx%d", CH >> 10, ST, BPS, TH); report(name, ms, bytes); } while (0)
    SEQ_BULK(8192, 4, 2, 256);
    SEQ_BULK(16384, 4, 2, 256);
    SEQ_BULK(16384, 6, 1, 256);
    SEQ_BULK(32768, 3, 2, 256);
    SEQ_BULK(32768, 6, 1, 512);
    SEQ_BULK(65536, 3, 1, 512);
    SEQ_BULK(4096, 8, 4, 128);

    // Decode-style pieces: 32 requests x 16384 tokens x 8 heads x 256 bytes, K and V in two buffers
    // (each 1 GiB: buffers r&3 and (r+1)&3 hold K and V).
    const int requests = 32, tokens = 16384, heads = 8;
    const u64 requestStride = (u64)tokens * heads * 256;  // 32 MiB
    const u64 pieceBytes = 2ull * requests * tokens * heads * 256;
    struct Layout { const char *name; Pieces p; };
    const Layout layouts[] = {
        {"token-major (rows of 8 heads)", {2048, 256, (u64)tokens * 2048, (u32)tokens}},
        {"head-major in 16-token blocks", {256, 16 * 256, 16 * 2048, 16}},
        {"head-major in 64-token blocks", {256, 64 * 256, 64 * 2048, 64}},
        {"head-major in 1024-token blocks", {256, 1024 * 256, 1024 * 2048, 1024}},
    };
    for (const Layout &l : layouts) {
        for (int load = 0; load < 2; ++load) {
            float ms = timeIt([&](int r) {
                if (load) pieces<1><<<sms * 2, 128>>>(buf[r & 3], buf[(r + 1) & 3], requests, tokens, heads, requestStride, l.p, out);
                else pieces<0><<<sms * 2, 128>>>(buf[r & 3], buf[(r + 1) & 3], requests, tokens, heads, requestStride, l.p, out);
            });
            char name[96]; snprintf(name, sizeof name, "pieces %s%s", l.name, load ? " L2::256B" : "");
            report(name, ms, pieceBytes);
        }
    }
    return 0;
}
#endif
