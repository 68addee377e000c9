#ifndef VTENSOR_CATTENTION_INTERNAL_H
#define VTENSOR_CATTENTION_INTERNAL_H
#include "cattention.h"

// How vt_attn_begin lays out an item's scratch.
//  ROWS: Q [vectors][head_dim], scores [vectors][key_tile]: dot products, for few vectors (decode).
//  LANES8 / LANES16: Q transposed [head_dim][padded], scores [key_tile][padded], so one register
//  holds 8 or 16 vectors' values: a key's element is broadcast against them and the softmax runs
//  lane-wise, with no horizontal sums (prefill: 48 vectors an item).
// The accumulator is [vectors][head_dim] in every layout.
enum { VT_LAYOUT_ROWS = 0, VT_LAYOUT_LANES8 = 1, VT_LAYOUT_LANES16 = 2 };

#define VT_INLINE static inline __attribute__((always_inline))

// How far ahead, in keys, the ROWS kernels ask for K rows.
#define VT_PREFETCH_KEYS 32

// Asks early (into L2) for the K rows of keys k + VT_PREFETCH_KEYS ... k + VT_PREFETCH_KEYS + 3
// (past `count`: the next tile's) and for this tile's V rows of keys k ... k + 3, read after the
// scores. Decode reads K and V once, at memory speed, and the hardware prefetchers alone leave it
// well short of the memory's bandwidth.
VT_INLINE void vt_attn_rows_prefetch(const char *const *key_rows, const char *const *value_rows, ptrdiff_t key_offset,
                                     ptrdiff_t value_offset, int k, int count, int ahead, int bytes) {
    for (int j = k + VT_PREFETCH_KEYS; j < k + VT_PREFETCH_KEYS + 4 && j < count + ahead; j++)
        for (int b = 0; b < bytes; b += 64) __builtin_prefetch(key_rows[j] + key_offset + b, 0, 2);
    for (int j = k; j < k + 4 && j < count; j++)
        for (int b = 0; b < bytes; b += 64) __builtin_prefetch(value_rows[j] + value_offset + b, 0, 2);
}

// Hides the keys of a ROWS tile that a vector's row cannot see, and pads each score row with
// -infinity from `count` up to `width`.
void vt_attn_mask_rows(vt_attn_state *s, int64_t first_key, int count, int width, int masked);

void vt_attn_rows_tile_portable(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                                ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int masked);
void vt_attn_exp_portable(const float *x, float *y, size_t n);

#if defined(__x86_64__)
void vt_attn_rows_tile_avx2(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                            ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int ahead, int masked);
void vt_attn_lanes_tile_avx2(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                             ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int masked);
void vt_attn_exp_avx2(const float *x, float *y, size_t n);
void vt_attn_rows_softmax_avx2(vt_attn_state *s, int width);
void vt_attn_rows_tile_avx512(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                              ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int ahead, int masked);
void vt_attn_lanes_tile_avx512(vt_attn_state *s, const char *const *key_rows, const char *const *value_rows,
                               ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int masked);
void vt_attn_exp_avx512(const float *x, float *y, size_t n);
#endif

#endif
