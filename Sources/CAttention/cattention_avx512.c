// AVX-512 kernels: LANES16 (16 vectors a register, 32 registers for the blocks) and ROWS with
// 16-float registers. Only called after the CPU check in cattention.c.
#if defined(__x86_64__)
#include "cattention_internal.h"
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define AVX512_INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx2,fma")))

// The exp of cattention.c's exp_one, 16 lanes.
AVX512_INLINE __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-88.0f));
    const __m512 shifter = _mm512_set1_ps(12582912.0f);
    const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504f), shifter);
    const __m512 n = _mm512_sub_ps(t, shifter);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i exponent = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(shifter));
    const __m512i power = _mm512_slli_epi32(_mm512_add_epi32(exponent, _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(power));
}

AVX512 void vt_attn_exp_avx512(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, tail, exp16(_mm512_maskz_loadu_ps(tail, x + i)));
    }
}

// ---------------------------------------------------------------------------------------------
// ROWS layout (decode): the AVX2 kernel's steps with half the instructions; the softmax is the
// AVX2 one. A head dim's last 8 floats, if any, are a masked half register.

// Lane i: the sum of the lanes of a_i.
AVX512_INLINE __m128 sums4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
#define VT_FOLD(a) _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)))
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(VT_FOLD(a0), VT_FOLD(a1)), _mm256_hadd_ps(VT_FOLD(a2), VT_FOLD(a3)));
#undef VT_FOLD
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// Scores of `nv` (1-3) query vectors with 4 keys.
AVX512_INLINE void dots_rows(const float *q, int nv, int d, const float *k0, const float *k1, const float *k2,
                             const float *k3, float *out, int tile) {
    __m512 a[3][4];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) a[i][j] = _mm512_setzero_ps();
    for (int x = 0; x < d; x += 16) {
        const __mmask16 lanes = d - x >= 16 ? 0xFFFF : 0x00FF;
        const __m512 y0 = _mm512_maskz_loadu_ps(lanes, k0 + x), y1 = _mm512_maskz_loadu_ps(lanes, k1 + x);
        const __m512 y2 = _mm512_maskz_loadu_ps(lanes, k2 + x), y3 = _mm512_maskz_loadu_ps(lanes, k3 + x);
        for (int i = 0; i < nv; i++) {
            const __m512 qi = _mm512_maskz_loadu_ps(lanes, q + i * d + x);
            a[i][0] = _mm512_fmadd_ps(qi, y0, a[i][0]);
            a[i][1] = _mm512_fmadd_ps(qi, y1, a[i][1]);
            a[i][2] = _mm512_fmadd_ps(qi, y2, a[i][2]);
            a[i][3] = _mm512_fmadd_ps(qi, y3, a[i][3]);
        }
    }
    for (int i = 0; i < nv; i++) _mm_storeu_ps(out + i * tile, sums4(a[i][0], a[i][1], a[i][2], a[i][3]));
}

// acc[i][0 ..< 16 nz] += sum over keys of w[i][k] * V_k for nv (1-3) vectors; the last of the
// nz (<= 4) registers takes the lanes in `last`.
AVX512_INLINE void axpy_rows(float *acc, int d, const float *w, int tile, const char *const *rows, ptrdiff_t offset,
                             int count, int nv, int nz, __mmask16 last) {
    __m512 c[3][4];
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nz; j++) c[i][j] = _mm512_maskz_loadu_ps(j == nz - 1 ? last : 0xFFFF, acc + i * d + 16 * j);
    for (int k = 0; k < count; k++) {
        const float *value = (const float *)(rows[k] + offset);
        __m512 y[4];
        for (int j = 0; j < nz; j++) y[j] = _mm512_maskz_loadu_ps(j == nz - 1 ? last : 0xFFFF, value + 16 * j);
        for (int i = 0; i < nv; i++) {
            const __m512 weight = _mm512_set1_ps(w[i * tile + k]);
            for (int j = 0; j < nz; j++) c[i][j] = _mm512_fmadd_ps(weight, y[j], c[i][j]);
        }
    }
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nz; j++) _mm512_mask_storeu_ps(acc + i * d + 16 * j, j == nz - 1 ? last : 0xFFFF, c[i][j]);
}

AVX512_INLINE void axpy_rows_nv(float *acc, int d, const float *w, int tile, const char *const *rows, ptrdiff_t offset,
                                int count, int nv) {
    for (int x = 0; x < d;) {
        const int left = d - x;
        const int nz = left >= 64 ? 4 : (left + 15) / 16;
        const __mmask16 last = left >= 64 || left % 16 == 0 ? 0xFFFF : 0x00FF;
        switch (nz) {
        case 4: axpy_rows(acc + x, d, w, tile, rows, offset + 4 * x, count, nv, 4, last); break;
        case 3: axpy_rows(acc + x, d, w, tile, rows, offset + 4 * x, count, nv, 3, last); break;
        case 2: axpy_rows(acc + x, d, w, tile, rows, offset + 4 * x, count, nv, 2, last); break;
        default: axpy_rows(acc + x, d, w, tile, rows, offset + 4 * x, count, nv, 1, last); break;
        }
        x += nz == 4 ? 64 : left;
    }
}

AVX512 void vt_attn_rows_tile_avx512(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                                     ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int ahead,
                                     int masked) {
    const int vectors = s->vectors, d = s->head_dim, tile = s->key_tile;
    for (int k = 0; k < count; k += 4) {
        vt_attn_rows_prefetch(key_rows, value_rows, key_offset, value_offset, k, count, ahead, 4 * d);
        // Past the end, repeat the last key (its scores land in the padding and are hidden).
        const int last = count - 1;
        const float *k0 = (const float *)(key_rows[k] + key_offset);
        const float *k1 = (const float *)(key_rows[k + 1 < count ? k + 1 : last] + key_offset);
        const float *k2 = (const float *)(key_rows[k + 2 < count ? k + 2 : last] + key_offset);
        const float *k3 = (const float *)(key_rows[k + 3 < count ? k + 3 : last] + key_offset);
        for (int v = 0; v < vectors; v += 3) {
            const float *q = s->queries + (size_t)v * d;
            float *out = s->scores + (size_t)v * tile + k;
            switch (vectors - v) {
            case 1: dots_rows(q, 1, d, k0, k1, k2, k3, out, tile); break;
            case 2: dots_rows(q, 2, d, k0, k1, k2, k3, out, tile); break;
            default: dots_rows(q, 3, d, k0, k1, k2, k3, out, tile); break;
            }
        }
    }
    const int width = (count + 7) & ~7;
    vt_attn_mask_rows(s, first_key, count, width, masked);
    vt_attn_rows_softmax_avx2(s, width);
    for (int v = 0; v < vectors; v += 3) {
        float *acc = s->accumulator + (size_t)v * d;
        const float *w = s->scores + (size_t)v * tile;
        switch (vectors - v) {
        case 1: axpy_rows_nv(acc, d, w, tile, value_rows, value_offset, count, 1); break;
        case 2: axpy_rows_nv(acc, d, w, tile, value_rows, value_offset, count, 2); break;
        default: axpy_rows_nv(acc, d, w, tile, value_rows, value_offset, count, 3); break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LANES16 layout

// Scores of keys k ..< k + nk (<= 8) with chunks c ..< c + nc (<= 3) of 16 vectors; constants
// once inlined. 24 accumulators; each key element is broadcast from memory into the FMA.
AVX512_INLINE void dots_lanes(const float *qt, int padded, int d, const char *const *rows, ptrdiff_t offset, int k,
                              int nk, int c, int nc, float *scores) {
    __m512 a[8][3];
    const float *key[8];
    for (int j = 0; j < nk; j++) key[j] = (const float *)(rows[k + j] + offset);
    for (int j = 0; j < nk; j++)
        for (int i = 0; i < nc; i++) a[j][i] = _mm512_setzero_ps();
    const float *q = qt + 16 * c;
    for (int x = 0; x < d; x++, q += padded) {
        __m512 qi[3];
        for (int i = 0; i < nc; i++) qi[i] = _mm512_loadu_ps(q + 16 * i);
        for (int j = 0; j < nk; j++) {
            const __m512 b = _mm512_set1_ps(key[j][x]);
            for (int i = 0; i < nc; i++) a[j][i] = _mm512_fmadd_ps(qi[i], b, a[j][i]);
        }
    }
    for (int j = 0; j < nk; j++)
        for (int i = 0; i < nc; i++) _mm512_storeu_ps(scores + (size_t)(k + j) * padded + 16 * (c + i), a[j][i]);
}

AVX512_INLINE void dots_lanes_nc(const float *qt, int padded, int d, const char *const *rows, ptrdiff_t offset,
                                 int count, int c, int nc, float *scores) {
    int k = 0;
    for (; k + 8 <= count; k += 8) dots_lanes(qt, padded, d, rows, offset, k, 8, c, nc, scores);
    switch (count - k) {
    case 7: dots_lanes(qt, padded, d, rows, offset, k, 7, c, nc, scores); break;
    case 6: dots_lanes(qt, padded, d, rows, offset, k, 6, c, nc, scores); break;
    case 5: dots_lanes(qt, padded, d, rows, offset, k, 5, c, nc, scores); break;
    case 4: dots_lanes(qt, padded, d, rows, offset, k, 4, c, nc, scores); break;
    case 3: dots_lanes(qt, padded, d, rows, offset, k, 3, c, nc, scores); break;
    case 2: dots_lanes(qt, padded, d, rows, offset, k, 2, c, nc, scores); break;
    case 1: dots_lanes(qt, padded, d, rows, offset, k, 1, c, nc, scores); break;
    default: break;
    }
}

// acc[v + i][x ..< x + 16 nz] += sum over keys of P[k][v + i] * V_k[x ...] for nv (<= 6) vectors;
// the last of the nz (<= 4) registers of dims takes the lanes in `last`.
AVX512_INLINE void axpy_lanes(float *acc, int d, const float *p, int padded, const char *const *rows, ptrdiff_t offset,
                              int count, int nv, int nz, __mmask16 last) {
    __m512 c[6][4];
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nz; j++)
            c[i][j] = j == nz - 1 ? _mm512_maskz_loadu_ps(last, acc + i * d + 16 * j) : _mm512_loadu_ps(acc + i * d + 16 * j);
    for (int k = 0; k < count; k++, p += padded) {
        const float *value = (const float *)(rows[k] + offset);
        __m512 y[4];
        for (int j = 0; j < nz; j++)
            y[j] = j == nz - 1 ? _mm512_maskz_loadu_ps(last, value + 16 * j) : _mm512_loadu_ps(value + 16 * j);
        for (int i = 0; i < nv; i++) {
            const __m512 weight = _mm512_set1_ps(p[i]);
            for (int j = 0; j < nz; j++) c[i][j] = _mm512_fmadd_ps(weight, y[j], c[i][j]);
        }
    }
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nz; j++) {
            if (j == nz - 1) _mm512_mask_storeu_ps(acc + i * d + 16 * j, last, c[i][j]);
            else _mm512_storeu_ps(acc + i * d + 16 * j, c[i][j]);
        }
}

AVX512_INLINE void axpy_lanes_nv(float *acc, int d, const float *p, int padded, const char *const *rows, ptrdiff_t offset,
                                 int count, int nv) {
    for (int x = 0; x < d;) {
        const int left = d - x;
        if (left >= 64) {
            axpy_lanes(acc + x, d, p, padded, rows, offset + 4 * x, count, nv, 4, 0xFFFF);
            x += 64;
            continue;
        }
        // head_dim is a multiple of 8: the last register is full or half.
        const int nz = (left + 15) / 16;
        const __mmask16 last = left % 16 ? 0x00FF : 0xFFFF;
        switch (nz) {
        case 3: axpy_lanes(acc + x, d, p, padded, rows, offset + 4 * x, count, nv, 3, last); break;
        case 2: axpy_lanes(acc + x, d, p, padded, rows, offset + 4 * x, count, nv, 2, last); break;
        default: axpy_lanes(acc + x, d, p, padded, rows, offset + 4 * x, count, nv, 1, last); break;
        }
        x = d;
    }
}

AVX512 void vt_attn_lanes_tile_avx512(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                                      ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int masked) {
    const int vectors = s->vectors, d = s->head_dim, padded = s->padded, chunks = padded / 16;
    float *scores = s->scores;
    for (int c = 0; c < chunks; c += 3) {
        switch (chunks - c) {
        case 1: dots_lanes_nc(s->queries, padded, d, key_rows, key_offset, count, c, 1, scores); break;
        case 2: dots_lanes_nc(s->queries, padded, d, key_rows, key_offset, count, c, 2, scores); break;
        default: dots_lanes_nc(s->queries, padded, d, key_rows, key_offset, count, c, 3, scores); break;
        }
    }
    if (masked) {
        const __m512 hidden = _mm512_set1_ps(-__builtin_inff());
        for (int k = 0; k < count; k++) {
            const __m512i position = _mm512_set1_epi32((int32_t)(first_key + k));
            float *row = scores + (size_t)k * padded;
            for (int c = 0; c < chunks; c++) {
                const __m512i lower = _mm512_loadu_si512(s->lower + 16 * c);
                const __m512i upper = _mm512_loadu_si512(s->upper + 16 * c);
                const __mmask16 hide = _mm512_cmpgt_epi32_mask(position, upper) | _mm512_cmpgt_epi32_mask(lower, position);
                _mm512_storeu_ps(row + 16 * c, _mm512_mask_mov_ps(_mm512_loadu_ps(row + 16 * c), hide, hidden));
            }
        }
    }

    // Online softmax lane by lane; a lane with no visible key yet subtracts 0, not -inf (no NaN).
    int grew = 0;
    for (int c = 0; c < chunks; c++) {
        __m512 top0 = _mm512_set1_ps(-__builtin_inff()), top1 = top0;
        int k = 0;
        for (; k + 2 <= count; k += 2) {
            top0 = _mm512_max_ps(top0, _mm512_loadu_ps(scores + (size_t)k * padded + 16 * c));
            top1 = _mm512_max_ps(top1, _mm512_loadu_ps(scores + (size_t)(k + 1) * padded + 16 * c));
        }
        if (k < count) top0 = _mm512_max_ps(top0, _mm512_loadu_ps(scores + (size_t)k * padded + 16 * c));
        const __m512 previous = _mm512_loadu_ps(s->maximum + 16 * c);
        const __m512 maximum = _mm512_max_ps(previous, _mm512_max_ps(top0, top1));
        const __mmask16 some = _mm512_cmp_ps_mask(maximum, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_OQ);
        const __m512 subtract = _mm512_maskz_mov_ps(some, maximum);
        const __m512 factor = exp16(_mm512_sub_ps(previous, subtract));
        grew |= _mm512_cmp_ps_mask(maximum, previous, _CMP_GT_OQ);
        _mm512_storeu_ps(s->maximum + 16 * c, maximum);
        _mm512_storeu_ps(s->factor + 16 * c, factor);
        __m512 total0 = _mm512_setzero_ps(), total1 = total0;
        for (k = 0; k + 2 <= count; k += 2) {
            float *row0 = scores + (size_t)k * padded + 16 * c, *row1 = row0 + padded;
            const __m512 w0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(row0), subtract));
            const __m512 w1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(row1), subtract));
            _mm512_storeu_ps(row0, w0);
            _mm512_storeu_ps(row1, w1);
            total0 = _mm512_add_ps(total0, w0);
            total1 = _mm512_add_ps(total1, w1);
        }
        if (k < count) {
            float *row0 = scores + (size_t)k * padded + 16 * c;
            const __m512 w0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(row0), subtract));
            _mm512_storeu_ps(row0, w0);
            total0 = _mm512_add_ps(total0, w0);
        }
        const __m512 sum = _mm512_mul_ps(_mm512_loadu_ps(s->sum + 16 * c), factor);
        _mm512_storeu_ps(s->sum + 16 * c, _mm512_add_ps(sum, _mm512_add_ps(total0, total1)));
    }
    if (grew) {
        for (int v = 0; v < vectors; v++) {
            const float f = s->factor[v];
            if (f == 1.0f) continue;
            float *acc = s->accumulator + (size_t)v * d;
            for (int x = 0; x < d; x += 8)
                _mm256_storeu_ps(acc + x, _mm256_mul_ps(_mm256_loadu_ps(acc + x), _mm256_set1_ps(f)));
        }
    }

    for (int v = 0; v < vectors; v += 6) {
        float *acc = s->accumulator + (size_t)v * d;
        const float *p = scores + v;
        switch (vectors - v) {
        case 1: axpy_lanes_nv(acc, d, p, padded, value_rows, value_offset, count, 1); break;
        case 2: axpy_lanes_nv(acc, d, p, padded, value_rows, value_offset, count, 2); break;
        case 3: axpy_lanes_nv(acc, d, p, padded, value_rows, value_offset, count, 3); break;
        case 4: axpy_lanes_nv(acc, d, p, padded, value_rows, value_offset, count, 4); break;
        case 5: axpy_lanes_nv(acc, d, p, padded, value_rows, value_offset, count, 5); break;
        default: axpy_lanes_nv(acc, d, p, padded, value_rows, value_offset, count, 6); break;
        }
    }
}
#endif
