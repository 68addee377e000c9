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

static float dot_q4_1_portable(const uint8_t *row, const float *x, const float *xsum, int blocks) {
    float total = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 20 * b;
        const float *xb = x + 32 * b;
        float s = 0.f;
        for (int i = 0; i < 16; ++i) s += (float)(blk[4 + i] & 0xF) * xb[i] + (float)(blk[4 + i] >> 4) * xb[i + 16];
        total += half_to_float(blk) * s + half_to_float(blk + 2) * xsum[b];
    }
    return total;
}

static float dot_q4_0_portable(const uint8_t *row, const float *x, const float *xsum, int blocks) {
    float total = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 18 * b;
        const float *xb = x + 32 * b;
        float s = 0.f;
        for (int i = 0; i < 16; ++i) s += (float)(blk[2 + i] & 0xF) * xb[i] + (float)(blk[2 + i] >> 4) * xb[i + 16];
        total += half_to_float(blk) * (s - 8.f * xsum[b]);
    }
    return total;
}

static float dot_q8_0_portable(const uint8_t *row, const float *x, int blocks) {
    float total = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 34 * b;
        float s = 0.f;
        for (int i = 0; i < 32; ++i) s += (float)(int8_t)blk[2 + i] * x[32 * b + i];
        total += half_to_float(blk) * s;
    }
    return total;
}

static void dequantize_portable(int format, const uint8_t *row, int cols, float *out) {
    if (format == VT_WEIGHTS_F32) {
        memcpy(out, row, (size_t)cols * sizeof(float));
        return;
    }
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

VT_AVX2_INLINE __m256 nibble_dot_avx2(const uint8_t *q, const float *x) {
    __m256 v[4];
    nibbles_avx2(q, v);
    __m256 s = _mm256_mul_ps(v[0], _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x + 24), s);
}

VT_AVX2 static float dot_q4_1_avx2(const uint8_t *row, const float *x, const float *xsum, int blocks) {
    __m256 acc = _mm256_setzero_ps();
    float scalar = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 20 * b;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_avx2(blk)), nibble_dot_avx2(blk + 4, x + 32 * b), acc);
        scalar += half_avx2(blk + 2) * xsum[b];
    }
    return hsum_avx2(acc) + scalar;
}

VT_AVX2 static float dot_q4_0_avx2(const uint8_t *row, const float *x, const float *xsum, int blocks) {
    __m256 acc = _mm256_setzero_ps();
    float scalar = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 18 * b;
        const float d = half_avx2(blk);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), nibble_dot_avx2(blk + 2, x + 32 * b), acc);
        scalar -= 8.f * d * xsum[b];
    }
    return hsum_avx2(acc) + scalar;
}

VT_AVX2 static float dot_q8_0_avx2(const uint8_t *row, const float *x, int blocks) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 34 * b;
        const float *xb = x + 32 * b;
        __m256 s = _mm256_setzero_ps();
        for (int j = 0; j < 4; ++j) {
            const __m128i q = _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * j));
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_loadu_ps(xb + 8 * j), s);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_avx2(blk)), s, acc);
    }
    return hsum_avx2(acc);
}

VT_AVX2 static void dequantize_avx2(int format, const uint8_t *row, int cols, float *out) {
    if (format == VT_WEIGHTS_F32) {
        memcpy(out, row, (size_t)cols * sizeof(float));
        return;
    }
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
// Dispatch

float vt_dot_q4_1(const uint8_t *row, const float *x, const float *xsum, int blocks) {
#ifdef VT_X86
    if (vt_cpu_level() >= VT_CPU_AVX2) return dot_q4_1_avx2(row, x, xsum, blocks);
#endif
    return dot_q4_1_portable(row, x, xsum, blocks);
}

float vt_dot_q4_0(const uint8_t *row, const float *x, const float *xsum, int blocks) {
#ifdef VT_X86
    if (vt_cpu_level() >= VT_CPU_AVX2) return dot_q4_0_avx2(row, x, xsum, blocks);
#endif
    return dot_q4_0_portable(row, x, xsum, blocks);
}

float vt_dot_q8_0(const uint8_t *row, const float *x, int blocks) {
#ifdef VT_X86
    if (vt_cpu_level() >= VT_CPU_AVX2) return dot_q8_0_avx2(row, x, blocks);
#endif
    return dot_q8_0_portable(row, x, blocks);
}

void vt_dequantize_row(int format, const uint8_t *row, int cols, float *out) {
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
