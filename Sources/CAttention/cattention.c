// Variant selection, the per-item setup and output (cold: once an item), and the plain C kernels.
#include "cattention_internal.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// Variants

static int detect_variant(void) {
    int best = VT_ATTN_PORTABLE;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        best = VT_ATTN_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
            best = VT_ATTN_AVX512;
    }
#endif
    // A lower variant on request, to measure what CPUs without the wider one get.
    const char *asked = getenv("VTENSOR_CPU_ATTENTION");
    if (asked) {
        if (strcmp(asked, "portable") == 0) best = VT_ATTN_PORTABLE;
        else if (strcmp(asked, "avx2") == 0 && best > VT_ATTN_AVX2) best = VT_ATTN_AVX2;
    }
    return best;
}

// -1 until first asked; racing first calls store the same answer.
static _Atomic int best_variant = -1;

int vt_attn_best_variant(void) {
    int best = atomic_load_explicit(&best_variant, memory_order_relaxed);
    if (best < 0) {
        best = detect_variant();
        atomic_store_explicit(&best_variant, best, memory_order_relaxed);
    }
    return best;
}

static int usable_variant(int asked) {
    const int best = vt_attn_best_variant();
    return asked < 0 || asked > best ? best : asked;
}

// ---------------------------------------------------------------------------------------------
// Items

static size_t round_up(size_t n, size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

size_t vt_attn_scratch_floats(int vectors, int head_dim, int key_tile) {
    // Each of the 8 arrays starts on a 64-byte boundary; vectors padded for the widest lanes.
    size_t padded = round_up((size_t)vectors, 16);
    return padded * (2 * (size_t)head_dim + (size_t)key_tile + 5) + 8 * 16;
}

void vt_attn_begin(vt_attn_state *s, const float *queries, ptrdiff_t row_stride, float scale) {
    const int group = s->group, d = s->head_dim, vectors = s->rows * s->group;
    const int variant = usable_variant(s->variant);
    int layout = VT_LAYOUT_ROWS, lanes = 1;
#if defined(__x86_64__)
    // Below 8 vectors most lanes would be padding: dot products do better.
    if (vectors >= 8 && variant == VT_ATTN_AVX512) layout = VT_LAYOUT_LANES16, lanes = 16;
    else if (vectors >= 8 && variant == VT_ATTN_AVX2) layout = VT_LAYOUT_LANES8, lanes = 8;
#endif
    const int padded = (int)round_up((size_t)vectors, (size_t)lanes);
    s->vectors = vectors;
    s->layout = layout;
    s->padded = padded;
    s->variant = variant;

    float *p = s->scratch;
    s->queries = p;     p += round_up((size_t)padded * d, 16);
    s->scores = p;      p += round_up((size_t)padded * s->key_tile, 16);
    s->accumulator = p; p += round_up((size_t)padded * d, 16);
    s->maximum = p;     p += round_up((size_t)padded, 16);
    s->sum = p;         p += round_up((size_t)padded, 16);
    s->factor = p;      p += round_up((size_t)padded, 16);
    s->lower = (int32_t *)p; p += round_up((size_t)padded, 16);
    s->upper = (int32_t *)p;

    if (layout == VT_LAYOUT_ROWS) {
        for (int v = 0; v < vectors; v++) {
            const float *source = queries + (v / group) * row_stride + (v % group) * d;
            for (int x = 0; x < d; x++) s->queries[v * d + x] = source[x] * scale;
        }
    } else {
        // Transposed; padding lanes are zero, so their scores are 0 and never overflow.
        for (int v = 0; v < padded; v++) {
            const float *source = queries + (v / group) * row_stride + (v % group) * d;
            for (int x = 0; x < d; x++) s->queries[x * padded + v] = v < vectors ? source[x] * scale : 0.0f;
        }
    }
    memset(s->accumulator, 0, sizeof(float) * (size_t)padded * d);
    for (int v = 0; v < padded; v++) {
        s->maximum[v] = -__builtin_inff();
        s->sum[v] = 0;
        s->factor[v] = 1;
        // Padding lanes see what the last row sees.
        int row = v / group < s->rows ? v / group : s->rows - 1;
        int64_t upper = s->first_position + row;
        s->upper[v] = (int32_t)upper;
        s->lower[v] = (int32_t)(s->window > 0 ? upper - s->window + 1 : 0);
    }
}

void vt_attn_tile(vt_attn_state *s, const void *const *key_rows, const void *const *value_rows,
                  ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int ahead) {
    // Every row sees the whole tile when its last key is at or before the first row and, with a
    // window, its first key is inside the last row's window.
    const int64_t last_key = first_key + count - 1;
    const int masked = last_key > s->first_position ||
                       (s->window > 0 && first_key < s->first_position + s->rows - s->window);
    const char *const *keys = (const char *const *)key_rows;
    const char *const *values = (const char *const *)value_rows;
    switch (s->layout) {
#if defined(__x86_64__)
    case VT_LAYOUT_LANES16:
        vt_attn_lanes_tile_avx512(s, keys, values, key_offset, value_offset, first_key, count, masked);
        return;
    case VT_LAYOUT_LANES8:
        vt_attn_lanes_tile_avx2(s, keys, values, key_offset, value_offset, first_key, count, masked);
        return;
#endif
    default:
#if defined(__x86_64__)
        if (s->variant == VT_ATTN_AVX512) {
            vt_attn_rows_tile_avx512(s, keys, values, key_offset, value_offset, first_key, count, ahead, masked);
            return;
        }
        if (s->variant == VT_ATTN_AVX2) {
            vt_attn_rows_tile_avx2(s, keys, values, key_offset, value_offset, first_key, count, ahead, masked);
            return;
        }
#endif
        (void)ahead;  // the plain C kernel leaves the prefetching to the hardware
        vt_attn_rows_tile_portable(s, keys, values, key_offset, value_offset, first_key, count, masked);
    }
}

void vt_attn_prefetch(const void *const *rows, int count, ptrdiff_t offset, ptrdiff_t bytes) {
    for (int k = 0; k < count; k++)
        for (ptrdiff_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)rows[k] + offset + b, 0, 2);
}

void vt_attn_store(const vt_attn_state *s, float *out, ptrdiff_t row_stride) {
    const int group = s->group, d = s->head_dim;
    for (int v = 0; v < s->vectors; v++) {
        float *target = out + (v / group) * row_stride + (v % group) * d;
        const float *acc = s->accumulator + (size_t)v * d;
        const float inverse = 1.0f / s->sum[v];
        for (int x = 0; x < d; x++) target[x] = acc[x] * inverse;
    }
}

void vt_attn_store_partial(const vt_attn_state *s, float *slots) {
    const int d = s->head_dim;
    for (int v = 0; v < s->vectors; v++) {
        float *slot = slots + (size_t)v * (d + 2);
        slot[0] = s->maximum[v];
        slot[1] = s->sum[v];
        memcpy(slot + 2, s->accumulator + (size_t)v * d, sizeof(float) * d);
    }
}

void vt_attn_exp(int variant, const float *x, float *y, size_t n) {
    switch (usable_variant(variant)) {
#if defined(__x86_64__)
    case VT_ATTN_AVX512: vt_attn_exp_avx512(x, y, n); return;
    case VT_ATTN_AVX2: vt_attn_exp_avx2(x, y, n); return;
#endif
    default: vt_attn_exp_portable(x, y, n);
    }
}

void vt_attn_mask_rows(vt_attn_state *s, int64_t first_key, int count, int width, int masked) {
    const int tile = s->key_tile;
    for (int v = 0; v < s->vectors; v++) {
        float *row = s->scores + (size_t)v * tile;
        int lower = 0, upper = count;
        if (masked) {
            int64_t l = s->lower[v] - first_key, u = s->upper[v] + 1 - first_key;
            lower = l < 0 ? 0 : l > count ? count : (int)l;
            upper = u < lower ? lower : u > count ? count : (int)u;
        }
        for (int k = 0; k < lower; k++) row[k] = -__builtin_inff();
        for (int k = upper; k < width; k++) row[k] = -__builtin_inff();
    }
}

// ---------------------------------------------------------------------------------------------
// Plain C: any CPU. The same steps and the same exp as the SIMD kernels, one element at a time.

// e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln 2 / 2, e^r by its degree-6 Taylor polynomial.
static inline float exp_one(float x) {
    // From -88 on, n rounds to -127, whose power of two is the bit pattern of +0.
    if (!(x > -88.0f)) x = -88.0f;
    // Adding 1.5 * 2^23 rounds to an integer and leaves it in the low mantissa bits.
    const float shifter = 12582912.0f;
    float t = x * 1.44269504f + shifter;
    float n = t - shifter;
    // ln 2 in two parts (the first exact in few bits), so r keeps float precision.
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-6f;
    float poly = 1.0f / 720;
    poly = poly * r + 1.0f / 120;
    poly = poly * r + 1.0f / 24;
    poly = poly * r + 1.0f / 6;
    poly = poly * r + 0.5f;
    poly = poly * r + 1.0f;
    poly = poly * r + 1.0f;
    int32_t tb, sb;
    memcpy(&tb, &t, 4);
    memcpy(&sb, &shifter, 4);
    int32_t bits = (tb - sb + 127) << 23;
    float power;
    memcpy(&power, &bits, 4);
    return poly * power;
}

void vt_attn_exp_portable(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = exp_one(x[i]);
}

// Eight running sums, lane by lane: the order of additions is fixed, so the compiler may keep
// the lanes in vector registers (SSE2, NEON) without reassociating anything.
static inline float dot_portable(const float *restrict a, const float *restrict b, int d) {
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int x = 0; x < d; x += 8)
        for (int l = 0; l < 8; l++) part[l] += a[x + l] * b[x + l];
    return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

// head_dim is a multiple of 8 here, as for every tiled item.
void vt_attn_rows_tile_portable(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                                ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int masked) {
    const int vectors = s->vectors, d = s->head_dim, tile = s->key_tile;
    for (int k = 0; k < count; k++) {
        const float *key = (const float *)(key_rows[k] + key_offset);
        for (int v = 0; v < vectors; v++) s->scores[(size_t)v * tile + k] = dot_portable(s->queries + (size_t)v * d, key, d);
    }
    const int width = (count + 7) & ~7;
    vt_attn_mask_rows(s, first_key, count, width, masked);
    for (int v = 0; v < vectors; v++) {
        float *row = s->scores + (size_t)v * tile;
        float top = -__builtin_inff();
        for (int k = 0; k < count; k++) top = row[k] > top ? row[k] : top;
        if (top == -__builtin_inff()) {
            // Every key of the tile is hidden from this vector: it adds nothing.
            for (int k = 0; k < width; k++) row[k] = 0;
            continue;
        }
        if (top > s->maximum[v]) {
            if (s->maximum[v] > -__builtin_inff()) {
                const float shrink = exp_one(s->maximum[v] - top);
                s->sum[v] *= shrink;
                float *acc = s->accumulator + (size_t)v * d;
                for (int x = 0; x < d; x++) acc[x] *= shrink;
            }
            s->maximum[v] = top;
        }
        // The padding past `count` is -infinity: weight 0.
        const float maximum = s->maximum[v];
        float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = 0; k < width; k += 8)
            for (int l = 0; l < 8; l++) {
                row[k + l] = exp_one(row[k + l] - maximum);
                part[l] += row[k + l];
            }
        s->sum[v] += ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    }
    for (int k = 0; k < count; k++) {
        const float *restrict value = (const float *)(value_rows[k] + value_offset);
        for (int v = 0; v < vectors; v++) {
            const float weight = s->scores[(size_t)v * tile + k];
            float *restrict acc = s->accumulator + (size_t)v * d;
            for (int x = 0; x < d; x++) acc[x] += weight * value[x];
        }
    }
}
