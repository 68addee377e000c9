#include "cquant.h"
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline float half_to_float(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Nibbles of 16 bytes: low nibbles are elements 0..15, high nibbles 16..31 (ggml's order).
static inline __m256 nibble_dot(const uint8_t *q, const float *x) {
    const __m128i bytes = _mm_loadu_si128((const __m128i *)q);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(bytes, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    const __m256 l0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    const __m256 l1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    const __m256 h0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    const __m256 h1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
    __m256 s = _mm256_mul_ps(l0, _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(l1, _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(h0, _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(h1, _mm256_loadu_ps(x + 24), s);
}

float vt_dot_q4_1(const uint8_t *row, const float *x, const float *xsum, int blocks) {
    __m256 acc = _mm256_setzero_ps();
    float scalar = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 20 * b;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(blk)), nibble_dot(blk + 4, x + 32 * b), acc);
        scalar += half_to_float(blk + 2) * xsum[b];
    }
    return hsum(acc) + scalar;
}

float vt_dot_q4_0(const uint8_t *row, const float *x, const float *xsum, int blocks) {
    __m256 acc = _mm256_setzero_ps();
    float scalar = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 18 * b;
        const float d = half_to_float(blk);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), nibble_dot(blk + 2, x + 32 * b), acc);
        scalar -= 8.f * d * xsum[b];
    }
    return hsum(acc) + scalar;
}

float vt_dot_q8_0(const uint8_t *row, const float *x, int blocks) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 34 * b;
        const float *xb = x + 32 * b;
        __m256 s = _mm256_setzero_ps();
        for (int j = 0; j < 4; ++j) {
            const __m128i q = _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * j));
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_loadu_ps(xb + 8 * j), s);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(blk)), s, acc);
    }
    return hsum(acc);
}

#else

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

float vt_dot_q4_1(const uint8_t *row, const float *x, const float *xsum, int blocks) {
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

float vt_dot_q4_0(const uint8_t *row, const float *x, const float *xsum, int blocks) {
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

float vt_dot_q8_0(const uint8_t *row, const float *x, int blocks) {
    float total = 0.f;
    for (int b = 0; b < blocks; ++b) {
        const uint8_t *blk = row + 34 * b;
        float s = 0.f;
        for (int i = 0; i < 32; ++i) s += (float)(int8_t)blk[2 + i] * x[32 * b + i];
        total += half_to_float(blk) * s;
    }
    return total;
}

#endif
