// AVX2 + FMA kernels. Only called after the CPU check in cattention.c.
#if defined(__x86_64__)
#include "cattention_internal.h"
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

// The exp of cattention.c's exp_one, 8 lanes.
AVX2_INLINE __m256 exp8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-88.0f));
    const __m256 shifter = _mm256_set1_ps(12582912.0f);
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), shifter);
    const __m256 n = _mm256_sub_ps(t, shifter);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i exponent = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(shifter));
    const __m256i power = _mm256_slli_epi32(_mm256_add_epi32(exponent, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(power));
}

AVX2_INLINE float exp1(float x) { return _mm256_cvtss_f32(exp8(_mm256_set1_ps(x))); }

AVX2_INLINE float max_lane(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

AVX2_INLINE float sum_lanes(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
}

// Lane i: the sum of the lanes of a_i. Horizontal adds and one fold of the halves.
AVX2_INLINE __m128 sums4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

AVX2 void vt_attn_exp_avx2(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = exp1(x[i]);
}

// ---------------------------------------------------------------------------------------------
// ROWS layout: dot products (few vectors: decode).

// Scores of `nv` (1-3) query vectors with 4 keys; nv is a constant once inlined.
AVX2_INLINE void dots_rows(const float *q, int nv, int d, const float *k0, const float *k1, const float *k2,
                           const float *k3, float *out, int tile) {
    __m256 a[3][4];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) a[i][j] = _mm256_setzero_ps();
    for (int x = 0; x < d; x += 8) {
        const __m256 y0 = _mm256_loadu_ps(k0 + x), y1 = _mm256_loadu_ps(k1 + x);
        const __m256 y2 = _mm256_loadu_ps(k2 + x), y3 = _mm256_loadu_ps(k3 + x);
        for (int i = 0; i < nv; i++) {
            const __m256 qi = _mm256_loadu_ps(q + i * d + x);
            a[i][0] = _mm256_fmadd_ps(qi, y0, a[i][0]);
            a[i][1] = _mm256_fmadd_ps(qi, y1, a[i][1]);
            a[i][2] = _mm256_fmadd_ps(qi, y2, a[i][2]);
            a[i][3] = _mm256_fmadd_ps(qi, y3, a[i][3]);
        }
    }
    for (int i = 0; i < nv; i++) _mm_storeu_ps(out + i * tile, sums4(a[i][0], a[i][1], a[i][2], a[i][3]));
}

// acc[i][0 ..< 8 nx] += sum over keys of w[i][k] * V_k, for `nv` (1-3) vectors and `nx` (1, 2 or 4)
// registers of dims; both constants once inlined.
AVX2_INLINE void axpy_rows(float *acc, int d, const float *w, int tile, const char *const *rows, ptrdiff_t offset,
                           int count, int nv, int nx) {
    __m256 c[3][4];
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nx; j++) c[i][j] = _mm256_loadu_ps(acc + i * d + 8 * j);
    for (int k = 0; k < count; k++) {
        const float *value = (const float *)(rows[k] + offset);
        __m256 y[4];
        for (int j = 0; j < nx; j++) y[j] = _mm256_loadu_ps(value + 8 * j);
        for (int i = 0; i < nv; i++) {
            const __m256 weight = _mm256_broadcast_ss(w + i * tile + k);
            for (int j = 0; j < nx; j++) c[i][j] = _mm256_fmadd_ps(weight, y[j], c[i][j]);
        }
    }
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nx; j++) _mm256_storeu_ps(acc + i * d + 8 * j, c[i][j]);
}

AVX2_INLINE void axpy_rows_nv(float *acc, int d, const float *w, int tile, const char *const *rows, ptrdiff_t offset,
                              int count, int nv) {
    int x = 0;
    for (; x + 32 <= d; x += 32) axpy_rows(acc + x, d, w, tile, rows, offset + 4 * x, count, nv, 4);
    if (x + 16 <= d) axpy_rows(acc + x, d, w, tile, rows, offset + 4 * x, count, nv, 2), x += 16;
    if (x < d) axpy_rows(acc + x, d, w, tile, rows, offset + 4 * x, count, nv, 1);
}

// The online softmax of a ROWS tile whose score rows are padded with -infinity to `width` (a
// multiple of 8): folds each vector's tile max into its running max (rescaling its sum and
// accumulator if it grew) and turns the scores into weights.
AVX2 void vt_attn_rows_softmax_avx2(vt_attn_state *s, int width) {
    const int vectors = s->vectors, d = s->head_dim, tile = s->key_tile;
    for (int v = 0; v < vectors; v++) {
        float *row = s->scores + (size_t)v * tile;
        // Two running maxima and sums halve the chains of dependent operations.
        __m256 max0 = _mm256_set1_ps(-__builtin_inff()), max1 = max0;
        int k = 0;
        for (; k + 16 <= width; k += 16) {
            max0 = _mm256_max_ps(max0, _mm256_loadu_ps(row + k));
            max1 = _mm256_max_ps(max1, _mm256_loadu_ps(row + k + 8));
        }
        if (k < width) max0 = _mm256_max_ps(max0, _mm256_loadu_ps(row + k));
        const float top = max_lane(_mm256_max_ps(max0, max1));
        if (top == -__builtin_inff()) {
            // Every key of the tile is hidden from this vector: it adds nothing.
            for (k = 0; k < width; k++) row[k] = 0;
            continue;
        }
        const float previous = s->maximum[v];
        if (top > previous) {
            if (previous > -__builtin_inff()) {
                const float shrink = exp1(previous - top);
                s->sum[v] *= shrink;
                float *acc = s->accumulator + (size_t)v * d;
                const __m256 factor = _mm256_set1_ps(shrink);
                for (int x = 0; x < d; x += 8) _mm256_storeu_ps(acc + x, _mm256_mul_ps(_mm256_loadu_ps(acc + x), factor));
            }
            s->maximum[v] = top;
        }
        const __m256 maximum = _mm256_set1_ps(s->maximum[v]);
        __m256 total0 = _mm256_setzero_ps(), total1 = total0;
        for (k = 0; k + 16 <= width; k += 16) {
            const __m256 w0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + k), maximum));
            const __m256 w1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + k + 8), maximum));
            _mm256_storeu_ps(row + k, w0);
            _mm256_storeu_ps(row + k + 8, w1);
            total0 = _mm256_add_ps(total0, w0);
            total1 = _mm256_add_ps(total1, w1);
        }
        if (k < width) {
            const __m256 w0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + k), maximum));
            _mm256_storeu_ps(row + k, w0);
            total0 = _mm256_add_ps(total0, w0);
        }
        s->sum[v] += sum_lanes(_mm256_add_ps(total0, total1));
    }

}

AVX2 void vt_attn_rows_tile_avx2(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                            ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int ahead, int masked) {
    const int vectors = s->vectors, d = s->head_dim, tile = s->key_tile;
    // Key-major: four key rows come from memory once and serve every vector from L1.
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
// LANES8 layout: Q^T [d][padded], scores [key][padded]; 8 vectors a register.

// Scores of keys k ..< k + nk with chunks c ..< c + nc of 8 vectors (nk, nc <= 3, constants once
// inlined): per dim, each key's element is broadcast against the chunks' Q^T row.
AVX2_INLINE void dots_lanes(const float *qt, int padded, int d, const char *const *rows, ptrdiff_t offset, int k,
                            int nk, int c, int nc, float *scores) {
    __m256 a[3][3];
    const float *key[3];
    for (int j = 0; j < nk; j++) key[j] = (const float *)(rows[k + j] + offset);
    for (int j = 0; j < nk; j++)
        for (int i = 0; i < nc; i++) a[j][i] = _mm256_setzero_ps();
    const float *q = qt + 8 * c;
    for (int x = 0; x < d; x++, q += padded) {
        __m256 b[3];
        for (int j = 0; j < nk; j++) b[j] = _mm256_broadcast_ss(key[j] + x);
        for (int i = 0; i < nc; i++) {
            const __m256 qi = _mm256_loadu_ps(q + 8 * i);
            for (int j = 0; j < nk; j++) a[j][i] = _mm256_fmadd_ps(qi, b[j], a[j][i]);
        }
    }
    for (int j = 0; j < nk; j++)
        for (int i = 0; i < nc; i++) _mm256_storeu_ps(scores + (size_t)(k + j) * padded + 8 * (c + i), a[j][i]);
}

AVX2_INLINE void dots_lanes_nc(const float *qt, int padded, int d, const char *const *rows, ptrdiff_t offset,
                               int count, int c, int nc, float *scores) {
    int k = 0;
    for (; k + 3 <= count; k += 3) dots_lanes(qt, padded, d, rows, offset, k, 3, c, nc, scores);
    if (count - k == 2) dots_lanes(qt, padded, d, rows, offset, k, 2, c, nc, scores);
    else if (count - k == 1) dots_lanes(qt, padded, d, rows, offset, k, 1, c, nc, scores);
}

// acc[v + i][x ..< x + 8 nx] += sum over keys of P[k][v + i] * V_k[x ...] for nv (1-6) vectors.
AVX2_INLINE void axpy_lanes(float *acc, int d, const float *p, int padded, const char *const *rows, ptrdiff_t offset,
                            int count, int nv, int nx) {
    __m256 c[6][2];
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nx; j++) c[i][j] = _mm256_loadu_ps(acc + i * d + 8 * j);
    for (int k = 0; k < count; k++, p += padded) {
        const float *value = (const float *)(rows[k] + offset);
        const __m256 y0 = _mm256_loadu_ps(value);
        const __m256 y1 = nx > 1 ? _mm256_loadu_ps(value + 8) : y0;
        for (int i = 0; i < nv; i++) {
            const __m256 weight = _mm256_broadcast_ss(p + i);
            c[i][0] = _mm256_fmadd_ps(weight, y0, c[i][0]);
            if (nx > 1) c[i][1] = _mm256_fmadd_ps(weight, y1, c[i][1]);
        }
    }
    for (int i = 0; i < nv; i++)
        for (int j = 0; j < nx; j++) _mm256_storeu_ps(acc + i * d + 8 * j, c[i][j]);
}

AVX2_INLINE void axpy_lanes_nv(float *acc, int d, const float *p, int padded, const char *const *rows, ptrdiff_t offset,
                               int count, int nv) {
    int x = 0;
    for (; x + 16 <= d; x += 16) axpy_lanes(acc + x, d, p, padded, rows, offset + 4 * x, count, nv, 2);
    if (x < d) axpy_lanes(acc + x, d, p, padded, rows, offset + 4 * x, count, nv, 1);
}

AVX2 void vt_attn_lanes_tile_avx2(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                             ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int masked) {
    const int vectors = s->vectors, d = s->head_dim, padded = s->padded, chunks = padded / 8;
    float *scores = s->scores;
    for (int c = 0; c < chunks; c += 3) {
        switch (chunks - c) {
        case 1: dots_lanes_nc(s->queries, padded, d, key_rows, key_offset, count, c, 1, scores); break;
        case 2: dots_lanes_nc(s->queries, padded, d, key_rows, key_offset, count, c, 2, scores); break;
        default: dots_lanes_nc(s->queries, padded, d, key_rows, key_offset, count, c, 3, scores); break;
        }
    }
    if (masked) {
        const __m256 hidden = _mm256_set1_ps(-__builtin_inff());
        for (int k = 0; k < count; k++) {
            const __m256i position = _mm256_set1_epi32((int32_t)(first_key + k));
            float *row = scores + (size_t)k * padded;
            for (int c = 0; c < chunks; c++) {
                const __m256i lower = _mm256_loadu_si256((const __m256i *)(s->lower + 8 * c));
                const __m256i upper = _mm256_loadu_si256((const __m256i *)(s->upper + 8 * c));
                const __m256i hide = _mm256_or_si256(_mm256_cmpgt_epi32(position, upper), _mm256_cmpgt_epi32(lower, position));
                _mm256_storeu_ps(row + 8 * c, _mm256_blendv_ps(_mm256_loadu_ps(row + 8 * c), hidden, _mm256_castsi256_ps(hide)));
            }
        }
    }

    // Online softmax lane by lane. A lane with no visible key yet keeps max -inf; it subtracts 0
    // instead, so its weights are exp(-inf) = 0 rather than NaN.
    int grew = 0;
    for (int c = 0; c < chunks; c++) {
        __m256 top0 = _mm256_set1_ps(-__builtin_inff()), top1 = top0;
        int k = 0;
        for (; k + 2 <= count; k += 2) {
            top0 = _mm256_max_ps(top0, _mm256_loadu_ps(scores + (size_t)k * padded + 8 * c));
            top1 = _mm256_max_ps(top1, _mm256_loadu_ps(scores + (size_t)(k + 1) * padded + 8 * c));
        }
        if (k < count) top0 = _mm256_max_ps(top0, _mm256_loadu_ps(scores + (size_t)k * padded + 8 * c));
        const __m256 previous = _mm256_loadu_ps(s->maximum + 8 * c);
        const __m256 maximum = _mm256_max_ps(previous, _mm256_max_ps(top0, top1));
        const __m256 none = _mm256_cmp_ps(maximum, _mm256_set1_ps(-__builtin_inff()), _CMP_EQ_OQ);
        const __m256 subtract = _mm256_andnot_ps(none, maximum);
        const __m256 factor = exp8(_mm256_sub_ps(previous, subtract));
        grew |= _mm256_movemask_ps(_mm256_cmp_ps(maximum, previous, _CMP_GT_OQ));
        _mm256_storeu_ps(s->maximum + 8 * c, maximum);
        _mm256_storeu_ps(s->factor + 8 * c, factor);
        __m256 total0 = _mm256_setzero_ps(), total1 = total0;
        for (k = 0; k + 2 <= count; k += 2) {
            float *row0 = scores + (size_t)k * padded + 8 * c, *row1 = row0 + padded;
            const __m256 w0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row0), subtract));
            const __m256 w1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row1), subtract));
            _mm256_storeu_ps(row0, w0);
            _mm256_storeu_ps(row1, w1);
            total0 = _mm256_add_ps(total0, w0);
            total1 = _mm256_add_ps(total1, w1);
        }
        if (k < count) {
            float *row0 = scores + (size_t)k * padded + 8 * c;
            const __m256 w0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row0), subtract));
            _mm256_storeu_ps(row0, w0);
            total0 = _mm256_add_ps(total0, w0);
        }
        const __m256 sum = _mm256_mul_ps(_mm256_loadu_ps(s->sum + 8 * c), factor);
        _mm256_storeu_ps(s->sum + 8 * c, _mm256_add_ps(sum, _mm256_add_ps(total0, total1)));
    }
    if (grew) {
        for (int v = 0; v < vectors; v++) {
            const float f = s->factor[v];
            if (f == 1.0f) continue;
            float *acc = s->accumulator + (size_t)v * d;
            const __m256 factor = _mm256_set1_ps(f);
            for (int x = 0; x < d; x += 8) _mm256_storeu_ps(acc + x, _mm256_mul_ps(_mm256_loadu_ps(acc + x), factor));
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
