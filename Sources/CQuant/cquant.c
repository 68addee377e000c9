#include "cquant.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define VT_X86 1
#include <immintrin.h>
#define VT_AVX2 __attribute__((target("avx2,fma,f16c")))
// Helpers are inlined even at -O0 (SwiftPM's debug builds), where a call would pass vectors through memory.
#define VT_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define VT_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define VT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))
#endif

// ---------------------------------------------------------------------------------------------
// Choosing the instruction set

static int best_level_cached = -1;
static int level_in_use = -1;

int vt_cpu_best_level(void) {
    int best = __atomic_load_n(&best_level_cached, __ATOMIC_RELAXED);
    if (best >= 0) return best;
    best = VT_CPU_PORTABLE;
#ifdef VT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        best = VT_CPU_AVX2;
        if (__builtin_cpu_supports("avx512f")) best = VT_CPU_AVX512;
        if (best == VT_CPU_AVX512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi")) best = VT_CPU_AVX512_VNNI;
    }
    // F16C came with every AVX2 CPU (Haswell, Zen); checked anyway.
    if (best > VT_CPU_PORTABLE) {
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
        if (!(c & (1u << 29))) best = VT_CPU_PORTABLE;
    }
#endif
    __atomic_store_n(&best_level_cached, best, __ATOMIC_RELAXED);
    return best;
}

int vt_cpu_level(void) {
    int level = __atomic_load_n(&level_in_use, __ATOMIC_RELAXED);
    if (level >= 0) return level;
    level = vt_cpu_best_level();
    __atomic_store_n(&level_in_use, level, __ATOMIC_RELAXED);
    return level;
}

int vt_cpu_set_level(int level) {
    const int best = vt_cpu_best_level();
    if (level < VT_CPU_PORTABLE) level = VT_CPU_PORTABLE;
    if (level > best) level = best;
    __atomic_store_n(&level_in_use, level, __ATOMIC_RELAXED);
    return level;
}

// ---------------------------------------------------------------------------------------------
// Portable C

static float half_to_float(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    const uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            int e = -1;
            uint32_t m = mantissa;
            do { m <<= 1; ++e; } while ((m & 0x400) == 0);
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (m & 0x3FF) << 13;
        }
    } else if (exponent == 31) {
        bits = sign | 0x7F800000u | mantissa << 13;
    } else {
        bits = sign | (exponent + 112) << 23 | mantissa << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void dequantize_portable(int format, const uint8_t *row, int cols, float *out) {
    for (int b = 0; b < cols / 32; ++b) {
        float *o = out + 32 * b;
        if (format == VT_WEIGHTS_Q8_0) {
            const uint8_t *blk = row + 34 * b;
            const float d = half_to_float(blk);
            for (int i = 0; i < 32; ++i) o[i] = d * (float)(int8_t)blk[2 + i];
        } else {
            const int q4_1 = format == VT_WEIGHTS_Q4_1;
            const uint8_t *blk = row + (q4_1 ? 20 : 18) * b, *q = blk + (q4_1 ? 4 : 2);
            const float d = half_to_float(blk), m = q4_1 ? half_to_float(blk + 2) : -8.f * d;
            for (int i = 0; i < 16; ++i) {
                o[i] = d * (float)(q[i] & 0xF) + m;
                o[i + 16] = d * (float)(q[i] >> 4) + m;
            }
        }
    }
}

// y[t][r] for up to 4 weight rows against up to 3 token rows, each a full-length dot product.
static void tile_portable(const float *const *w, int rows, const float *const *x, int toks, int k, float *y, size_t ys) {
    for (int t = 0; t < toks; ++t) {
        for (int r = 0; r < rows; ++r) {
            float s = 0.f;
            for (int i = 0; i < k; ++i) s += w[r][i] * x[t][i];
            y[t * ys + r] = s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA + F16C

#ifdef VT_X86
VT_AVX2_INLINE float half_avx2(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

VT_AVX2_INLINE float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The 32 nibbles of 16 bytes as floats, in ggml's order: low nibbles are elements 0..15, high 16..31.
VT_AVX2_INLINE void nibbles_avx2(const uint8_t *q, __m256 out[4]) {
    const __m128i bytes = _mm_loadu_si128((const __m128i *)q);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(bytes, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

VT_AVX2 static void dequantize_avx2(int format, const uint8_t *row, int cols, float *out) {
    for (int b = 0; b < cols / 32; ++b) {
        float *o = out + 32 * b;
        if (format == VT_WEIGHTS_Q8_0) {
            const uint8_t *blk = row + 34 * b;
            const __m256 d = _mm256_set1_ps(half_avx2(blk));
            for (int j = 0; j < 4; ++j) {
                const __m128i q = _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * j));
                _mm256_storeu_ps(o + 8 * j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
            }
        } else {
            const int q4_1 = format == VT_WEIGHTS_Q4_1;
            const uint8_t *blk = row + (q4_1 ? 20 : 18) * b;
            const float df = half_avx2(blk);
            const __m256 d = _mm256_set1_ps(df), m = _mm256_set1_ps(q4_1 ? half_avx2(blk + 2) : -8.f * df);
            __m256 v[4];
            nibbles_avx2(blk + (q4_1 ? 4 : 2), v);
            for (int j = 0; j < 4; ++j) _mm256_storeu_ps(o + 8 * j, _mm256_fmadd_ps(d, v[j], m));
        }
    }
}

// 4 weight rows x 3 token rows: 12 accumulators, each weight load used 3 times and each token
// load 4 times, so the loop is bound by the FMA units, not by loads.
VT_AVX2 static void tile_avx2(const float *const *w, int rows, const float *const *x, int toks, int k, float *y, size_t ys) {
    const float *w0 = w[0], *w1 = w[rows > 1 ? 1 : 0], *w2 = w[rows > 2 ? 2 : 0], *w3 = w[rows > 3 ? 3 : 0];
    const float *x0 = x[0], *x1 = x[toks > 1 ? 1 : 0], *x2 = x[toks > 2 ? 2 : 0];
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        const __m256 a0 = _mm256_loadu_ps(x0 + i), a1 = _mm256_loadu_ps(x1 + i), a2 = _mm256_loadu_ps(x2 + i);
        __m256 b = _mm256_loadu_ps(w0 + i);
        c00 = _mm256_fmadd_ps(b, a0, c00); c01 = _mm256_fmadd_ps(b, a1, c01); c02 = _mm256_fmadd_ps(b, a2, c02);
        b = _mm256_loadu_ps(w1 + i);
        c10 = _mm256_fmadd_ps(b, a0, c10); c11 = _mm256_fmadd_ps(b, a1, c11); c12 = _mm256_fmadd_ps(b, a2, c12);
        b = _mm256_loadu_ps(w2 + i);
        c20 = _mm256_fmadd_ps(b, a0, c20); c21 = _mm256_fmadd_ps(b, a1, c21); c22 = _mm256_fmadd_ps(b, a2, c22);
        b = _mm256_loadu_ps(w3 + i);
        c30 = _mm256_fmadd_ps(b, a0, c30); c31 = _mm256_fmadd_ps(b, a1, c31); c32 = _mm256_fmadd_ps(b, a2, c32);
    }
    float s[4][3] = {
        {hsum_avx2(c00), hsum_avx2(c01), hsum_avx2(c02)}, {hsum_avx2(c10), hsum_avx2(c11), hsum_avx2(c12)},
        {hsum_avx2(c20), hsum_avx2(c21), hsum_avx2(c22)}, {hsum_avx2(c30), hsum_avx2(c31), hsum_avx2(c32)}};
    const float *wr[4] = {w0, w1, w2, w3}, *xt[3] = {x0, x1, x2};
    for (; i < k; ++i)
        for (int r = 0; r < 4; ++r)
            for (int t = 0; t < 3; ++t) s[r][t] += wr[r][i] * xt[t][i];
    for (int t = 0; t < toks; ++t)
        for (int r = 0; r < rows; ++r) y[t * ys + r] = s[r][t];
}

// AVX-512: 4 weight rows x 6 token rows (24 of the 32 registers accumulate).
VT_AVX512 static void tile_avx512(const float *const *w, int rows, const float *const *x, int toks, int k, float *y, size_t ys) {
    const float *wr[4], *xt[6];
    for (int r = 0; r < 4; ++r) wr[r] = w[r < rows ? r : 0];
    for (int t = 0; t < 6; ++t) xt[t] = x[t < toks ? t : 0];
    __m512 c[4][6];
    for (int r = 0; r < 4; ++r)
        for (int t = 0; t < 6; ++t) c[r][t] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 a[6];
        for (int t = 0; t < 6; ++t) a[t] = _mm512_loadu_ps(xt[t] + i);
        for (int r = 0; r < 4; ++r) {
            const __m512 b = _mm512_loadu_ps(wr[r] + i);
            for (int t = 0; t < 6; ++t) c[r][t] = _mm512_fmadd_ps(b, a[t], c[r][t]);
        }
    }
    float s[4][6];
    for (int r = 0; r < 4; ++r)
        for (int t = 0; t < 6; ++t) s[r][t] = _mm512_reduce_add_ps(c[r][t]);
    for (; i < k; ++i)
        for (int r = 0; r < 4; ++r)
            for (int t = 0; t < 6; ++t) s[r][t] += wr[r][i] * xt[t][i];
    for (int t = 0; t < toks; ++t)
        for (int r = 0; r < rows; ++r) y[t * ys + r] = s[r][t];
}
#endif

// ---------------------------------------------------------------------------------------------
// Decode products on int8 activations

void vt_quantize_q8(const float *x, int cols, int8_t *q, float *d, float *sum, int32_t *qsum) {
    for (int b = 0; b < cols / 32; ++b) {
        const float *xb = x + 32 * b;
        float amax = 0.f, s = 0.f;
        for (int i = 0; i < 32; ++i) {
            const float a = xb[i] < 0 ? -xb[i] : xb[i];
            amax = a > amax ? a : amax;
            s += xb[i];
        }
        const float scale = amax / 127.f, inverse = amax > 0 ? 127.f / amax : 0.f;
        int32_t qs = 0;
        for (int i = 0; i < 32; ++i) {
            float v = xb[i] * inverse;
            int r = (int)(v < 0 ? v - 0.5f : v + 0.5f);
            r = r > 127 ? 127 : r < -127 ? -127 : r;
            q[32 * b + i] = (int8_t)r;
            qs += r;
        }
        d[b] = scale;
        sum[b] = s;
        qsum[b] = qs;
    }
}

// The integer dot of one weight block with one activation block, and what its scale multiplies.
static float block_q8_portable(int format, const uint8_t *blk, const int8_t *q, float xd, float xs, int32_t xqs) {
    int32_t dot = 0;
    if (format == VT_WEIGHTS_Q8_0) {
        for (int i = 0; i < 32; ++i) dot += (int32_t)(int8_t)blk[2 + i] * q[i];
        return half_to_float(blk) * xd * (float)dot;
    }
    const int q4_1 = format == VT_WEIGHTS_Q4_1;
    const uint8_t *n = blk + (q4_1 ? 4 : 2);
    for (int i = 0; i < 16; ++i) dot += (int32_t)(n[i] & 0xF) * q[i] + (int32_t)(n[i] >> 4) * q[i + 16];
    if (q4_1) return half_to_float(blk) * xd * (float)dot + half_to_float(blk + 2) * xs;
    return half_to_float(blk) * xd * (float)(dot - 8 * xqs);
}

static int block_bytes(int format) { return format == VT_WEIGHTS_Q4_1 ? 20 : format == VT_WEIGHTS_Q4_0 ? 18 : 34; }

static void gemv_q8_portable(int format, const uint8_t *w, size_t row_bytes, int cols, const int8_t *q, const float *d,
                             const float *sum, const int32_t *qsum, int n, float *y, size_t ys, int row_begin, int row_end) {
    const int blocks = cols / 32, bb = block_bytes(format);
    for (int r = row_begin; r < row_end; ++r) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (int t = 0; t < n; ++t) {
            float acc = 0.f;
            for (int b = 0; b < blocks; ++b)
                acc += block_q8_portable(format, row + bb * b, q + (size_t)t * cols + 32 * b, d[t * blocks + b], sum[t * blocks + b],
                                         qsum[t * blocks + b]);
            y[(size_t)t * ys + r] = acc;
        }
    }
}

#ifdef VT_X86
// One weight block as 32 unsigned bytes in element order (Q4: low nibbles 0..15, high 16..31;
// Q8_0: the int8 values offset by 128), for maddubs/dpbusd against int8 activations.
VT_AVX2_INLINE __m256i block_bytes_avx2(int format, const uint8_t *blk) {
    if (format == VT_WEIGHTS_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
    const __m128i n = _mm_loadu_si128((const __m128i *)(blk + (format == VT_WEIGHTS_Q4_1 ? 4 : 2)));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(n, 4), n);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// The decode kernels, written once and instantiated per weight format and token-row count
// (both constants there, so the accumulators stay in registers and the format's branches go).
// A block's integer dot d_w d_x sum(q_w q_x) takes back Q4_0's offset of 8 and Q8_0's of 128 (the
// VNNI path's unsigned weights) with the activations' integer sum, and Q4_1 adds m sum(x).
#define VT_OFFSET(format, vnni) ((format) == VT_WEIGHTS_Q4_0 ? 8.f : ((format) == VT_WEIGHTS_Q8_0 && (vnni)) ? 128.f : 0.f)

#define VT_GEMV_ARGS const uint8_t *w, size_t row_bytes, int cols, const int8_t *q, const float *d, const float *sum, \
    const int32_t *qsum, float *y, size_t ys, int row_begin, int row_end

VT_AVX2_INLINE void gemv_avx2_body(const int format, const int n, VT_GEMV_ARGS) {
    const int blocks = cols / 32, bb = block_bytes(format), q8 = format == VT_WEIGHTS_Q8_0;
    const float offset = VT_OFFSET(format, 0);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = row_begin; r < row_end; ++r) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        float constant[4] = {0, 0, 0, 0};
        for (int b = 0; b < blocks; ++b) {
            const uint8_t *blk = row + bb * b;
            const float dw = half_avx2(blk), mw = format == VT_WEIGHTS_Q4_1 ? half_avx2(blk + 2) : 0.f;
            // maddubs saturates its s16 pair sums: Q8_0 takes |w| against x with w's sign
            // (at most 2 x 128 x 127); Q4 nibbles are at most 2 x 15 x 127.
            const __m256i raw = q8 ? _mm256_loadu_si256((const __m256i *)(blk + 2)) : _mm256_setzero_si256();
            const __m256i wb = q8 ? _mm256_abs_epi8(raw) : block_bytes_avx2(format, blk);
            for (int t = 0; t < n; ++t) {
                const int i = t * blocks + b;
                __m256i xq = _mm256_loadu_si256((const __m256i *)(q + (size_t)t * cols + 32 * b));
                if (q8) xq = _mm256_sign_epi8(xq, raw);
                const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wb, xq), ones);
                const float scale = dw * d[i];
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale), acc[t]);
                constant[t] += mw * sum[i];
                if (offset != 0.f) constant[t] -= offset * scale * (float)qsum[i];
            }
        }
        for (int t = 0; t < n; ++t) y[(size_t)t * ys + r] = hsum_avx2(acc[t]) + constant[t];
    }
}

// Two blocks in one 512-bit register. Q4: one masked load covers both blocks' nibbles (20 or
// 18 bytes apart); a byte permute places each block's 16 bytes twice and the upper copy is
// shifted to its high nibbles. Q8_0: the two blocks' 32 bytes, offset by 128 to unsigned.
VT_VNNI static inline __attribute__((always_inline)) __m512i pair_bytes_vnni(int format, const uint8_t *blk, int bb, __m512i index) {
    if (format == VT_WEIGHTS_Q8_0) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(blk + 2)), b = _mm256_loadu_si256((const __m256i *)(blk + bb + 2));
        return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1), _mm512_set1_epi8((char)0x80));
    }
    const int head = format == VT_WEIGHTS_Q4_1 ? 4 : 2;
    const __m512i raw = _mm512_maskz_loadu_epi8((__mmask64)((1ull << (bb + 16)) - 1), blk + head);
    const __m512i twice = _mm512_permutexvar_epi8(index, raw);
    // Bytes 16..31 and 48..63 take the shifted copy (high nibbles).
    const __m512i mixed = _mm512_mask_blend_epi8((__mmask64)0xFFFF0000FFFF0000ull, twice, _mm512_srli_epi16(twice, 4));
    return _mm512_and_si512(mixed, _mm512_set1_epi8(0x0F));
}

VT_VNNI static inline __attribute__((always_inline)) void gemv_vnni_body(const int format, const int n, VT_GEMV_ARGS) {
    const int blocks = cols / 32, bb = block_bytes(format), pairs = blocks / 2;
    const float offset = VT_OFFSET(format, 1);
    const int s = bb;  // the second block's nibbles start bb bytes after the first's
    const __m512i index = _mm512_set_epi8(
        s + 15, s + 14, s + 13, s + 12, s + 11, s + 10, s + 9, s + 8, s + 7, s + 6, s + 5, s + 4, s + 3, s + 2, s + 1, s,
        s + 15, s + 14, s + 13, s + 12, s + 11, s + 10, s + 9, s + 8, s + 7, s + 6, s + 5, s + 4, s + 3, s + 2, s + 1, s,
        15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i block_offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(bb));
    const __m512i upper_half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int r = row_begin; r < row_end; ++r) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        __m512 lanes[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        float constant[4] = {0, 0, 0, 0};
        // Sixteen blocks at a time: their scales (and Q4_1's mins) come in one gather of each
        // block's first four bytes, so the per-block scalar work becomes vector work.
        int first = 0;
        for (; first + 16 <= blocks; first += 16) {
            const uint8_t *base = row + (size_t)bb * first;
            const __m512i head = _mm512_i32gather_epi32(block_offsets, (const void *)base, 1);
            const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
            __m512 scales[4];
            for (int t = 0; t < n; ++t) {
                const int i = t * blocks + first;
                scales[t] = _mm512_mul_ps(dw, _mm512_loadu_ps(d + i));
                if (format == VT_WEIGHTS_Q4_1) {
                    const __m512 mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(head, 16)));
                    lanes[t] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(sum + i), lanes[t]);
                } else {
                    const __m512 qs = _mm512_cvtepi32_ps(_mm512_loadu_si512((const void *)(qsum + i)));
                    lanes[t] = _mm512_fnmadd_ps(_mm512_mul_ps(_mm512_set1_ps(offset), scales[t]), qs, lanes[t]);
                }
            }
            for (int p = 0; p < 8; ++p) {
                const __m512i wb = pair_bytes_vnni(format, base + 2 * bb * p, bb, index);
                const __m512i pick = _mm512_add_epi32(upper_half, _mm512_set1_epi32(2 * p));
                for (int t = 0; t < n; ++t) {
                    const __m512i xq = _mm512_loadu_si512((const void *)(q + (size_t)t * cols + 32 * first + 64 * p));
                    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wb, xq);
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(pick, scales[t]), acc[t]);
                }
            }
        }
        for (int p = first / 2; p < pairs; ++p) {
            const uint8_t *blk = row + 2 * bb * p;
            const __m512i wb = pair_bytes_vnni(format, blk, bb, index);
            const float dw0 = half_avx2(blk), dw1 = half_avx2(blk + bb);
            const float mw0 = format == VT_WEIGHTS_Q4_1 ? half_avx2(blk + 2) : 0.f;
            const float mw1 = format == VT_WEIGHTS_Q4_1 ? half_avx2(blk + bb + 2) : 0.f;
            for (int t = 0; t < n; ++t) {
                const int i = t * blocks + 2 * p;
                const float s0 = dw0 * d[i], s1 = dw1 * d[i + 1];
                const __m512i xq = _mm512_loadu_si512((const void *)(q + (size_t)t * cols + 64 * p));
                const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wb, xq);
                const __m512 scale = _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[t]);
                constant[t] += mw0 * sum[i] + mw1 * sum[i + 1];
                if (offset != 0.f) constant[t] -= offset * (s0 * (float)qsum[i] + s1 * (float)qsum[i + 1]);
            }
        }
        if (blocks & 1) {
            const int b = blocks - 1;
            const uint8_t *blk = row + bb * b;
            const __m256i wb = format == VT_WEIGHTS_Q8_0
                ? _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80))
                : block_bytes_avx2(format, blk);
            const float dw = half_avx2(blk), mw = format == VT_WEIGHTS_Q4_1 ? half_avx2(blk + 2) : 0.f;
            for (int t = 0; t < n; ++t) {
                const int i = t * blocks + b;
                const float s0 = dw * d[i];
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(q + (size_t)t * cols + 32 * b));
                const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wb, xq);
                acc[t] = _mm512_add_ps(acc[t], _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s0))));
                constant[t] += mw * sum[i];
                if (offset != 0.f) constant[t] -= offset * s0 * (float)qsum[i];
            }
        }
        for (int t = 0; t < n; ++t) y[(size_t)t * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t], lanes[t])) + constant[t];
    }
}

#define VT_GEMV_CALL w, row_bytes, cols, q, d, sum, qsum, y, ys, row_begin, row_end
#define VT_GEMV_VARIANTS(F, NAME) \
    VT_AVX2 static void gemv_avx2_##NAME##_1(VT_GEMV_ARGS) { gemv_avx2_body(F, 1, VT_GEMV_CALL); } \
    VT_AVX2 static void gemv_avx2_##NAME##_2(VT_GEMV_ARGS) { gemv_avx2_body(F, 2, VT_GEMV_CALL); } \
    VT_AVX2 static void gemv_avx2_##NAME##_3(VT_GEMV_ARGS) { gemv_avx2_body(F, 3, VT_GEMV_CALL); } \
    VT_AVX2 static void gemv_avx2_##NAME##_4(VT_GEMV_ARGS) { gemv_avx2_body(F, 4, VT_GEMV_CALL); } \
    VT_VNNI static void gemv_vnni_##NAME##_1(VT_GEMV_ARGS) { gemv_vnni_body(F, 1, VT_GEMV_CALL); } \
    VT_VNNI static void gemv_vnni_##NAME##_2(VT_GEMV_ARGS) { gemv_vnni_body(F, 2, VT_GEMV_CALL); } \
    VT_VNNI static void gemv_vnni_##NAME##_3(VT_GEMV_ARGS) { gemv_vnni_body(F, 3, VT_GEMV_CALL); } \
    VT_VNNI static void gemv_vnni_##NAME##_4(VT_GEMV_ARGS) { gemv_vnni_body(F, 4, VT_GEMV_CALL); }
VT_GEMV_VARIANTS(VT_WEIGHTS_Q4_0, q4_0)
VT_GEMV_VARIANTS(VT_WEIGHTS_Q4_1, q4_1)
VT_GEMV_VARIANTS(VT_WEIGHTS_Q8_0, q8_0)

typedef void (*gemv_fn)(VT_GEMV_ARGS);
// [vnni][format - 1][n - 1]
static const gemv_fn gemv_variants[2][3][4] = {
    {{gemv_avx2_q4_0_1, gemv_avx2_q4_0_2, gemv_avx2_q4_0_3, gemv_avx2_q4_0_4},
     {gemv_avx2_q4_1_1, gemv_avx2_q4_1_2, gemv_avx2_q4_1_3, gemv_avx2_q4_1_4},
     {gemv_avx2_q8_0_1, gemv_avx2_q8_0_2, gemv_avx2_q8_0_3, gemv_avx2_q8_0_4}},
    {{gemv_vnni_q4_0_1, gemv_vnni_q4_0_2, gemv_vnni_q4_0_3, gemv_vnni_q4_0_4},
     {gemv_vnni_q4_1_1, gemv_vnni_q4_1_2, gemv_vnni_q4_1_3, gemv_vnni_q4_1_4},
     {gemv_vnni_q8_0_1, gemv_vnni_q8_0_2, gemv_vnni_q8_0_3, gemv_vnni_q8_0_4}},
};
#endif

void vt_gemv_q8(int format, const uint8_t *w, size_t row_bytes, int cols, const int8_t *q, const float *d, const float *sum,
                const int32_t *qsum, int n, float *y, size_t y_stride, int row_begin, int row_end) {
    if (format < VT_WEIGHTS_Q4_0 || format > VT_WEIGHTS_Q8_0) return;
    // Four token rows at a time (the register budget of the SIMD paths).
    for (int t0 = 0; t0 < n; t0 += 4) {
        const int count = n - t0 < 4 ? n - t0 : 4, blocks = cols / 32;
        const int8_t *qt = q + (size_t)t0 * cols;
        const float *dt = d + t0 * blocks, *st = sum + t0 * blocks;
        const int32_t *it = qsum + t0 * blocks;
        float *yt = y + (size_t)t0 * y_stride;
#ifdef VT_X86
        const int level = vt_cpu_level();
        if (level >= VT_CPU_AVX2) {
            gemv_variants[level >= VT_CPU_AVX512_VNNI][format - 1][count - 1](w, row_bytes, cols, qt, dt, st, it, yt, y_stride, row_begin,
                                                                              row_end);
            continue;
        }
#endif
        gemv_q8_portable(format, w, row_bytes, cols, qt, dt, st, it, count, yt, y_stride, row_begin, row_end);
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch

void vt_dequantize_row(int format, const uint8_t *row, int cols, float *out) {
    if (format == VT_WEIGHTS_F32) {
        memcpy(out, row, (size_t)cols * sizeof(float));
        return;
    }
#ifdef VT_X86
    if (vt_cpu_level() >= VT_CPU_AVX2) {
        dequantize_avx2(format, row, cols, out);
        return;
    }
#endif
    dequantize_portable(format, row, cols, out);
}

// The per-thread buffer a panel of dequantized rows lives in (worker threads live as long as
// the process, so it is never freed).
static _Thread_local float *panel_buffer = NULL;
static _Thread_local size_t panel_capacity = 0;

static float *panel_floats(size_t count) {
    if (count > panel_capacity) {
        free(panel_buffer);
        panel_buffer = (float *)malloc(count * sizeof(float));
        panel_capacity = panel_buffer ? count : 0;
    }
    return panel_buffer;
}

typedef void (*tile_fn)(const float *const *, int, const float *const *, int, int, float *, size_t);

void vt_gemm(int format, const uint8_t *w, size_t row_bytes, int cols, const float *x, size_t x_stride, int n,
             float *y, size_t y_stride, int row_begin, int row_end) {
    if (n <= 0 || row_end <= row_begin || cols <= 0) return;
    const int level = vt_cpu_level();
    tile_fn tile = tile_portable;
    int tile_tokens = 3;
#ifdef VT_X86
    if (level >= VT_CPU_AVX512) {
        tile = tile_avx512;
        tile_tokens = 6;
    } else if (level >= VT_CPU_AVX2) {
        tile = tile_avx2;
    }
#endif
    // A panel of dequantized rows: about 256 KiB, so it stays in L2 while all n tokens pass
    // over it; each token row is then read from L2/L3 once per panel.
    int panel_rows = (int)((256 * 1024) / ((size_t)cols * sizeof(float)));
    panel_rows = panel_rows < 4 ? 4 : panel_rows > 64 ? 64 : panel_rows & ~3;
    float *panel = NULL;
    if (format != VT_WEIGHTS_F32) {
        panel = panel_floats((size_t)panel_rows * (size_t)cols);
        if (!panel) abort();  // out of memory for a few hundred KiB: nothing sensible is left to do
    }
    for (int p = row_begin; p < row_end; p += panel_rows) {
        const int rows = row_end - p < panel_rows ? row_end - p : panel_rows;
        const float *rowp[64];
        for (int r = 0; r < rows; ++r) {
            if (format == VT_WEIGHTS_F32) {
                rowp[r] = (const float *)(w + (size_t)(p + r) * row_bytes);
            } else {
                vt_dequantize_row(format, w + (size_t)(p + r) * row_bytes, cols, panel + (size_t)r * cols);
                rowp[r] = panel + (size_t)r * cols;
            }
        }
        for (int t = 0; t < n; t += tile_tokens) {
            const int toks = n - t < tile_tokens ? n - t : tile_tokens;
            const float *xt[6];
            for (int j = 0; j < toks; ++j) xt[j] = x + (size_t)(t + j) * x_stride;
            for (int r = 0; r < rows; r += 4) {
                const int count = rows - r < 4 ? rows - r : 4;
                tile(rowp + r, count, xt, toks, cols, y + (size_t)t * y_stride + p + r, y_stride);
            }
        }
    }
}
