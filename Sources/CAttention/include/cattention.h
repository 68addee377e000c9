#ifndef VTENSOR_CATTENTION_H
#define VTENSOR_CATTENTION_H
#include <stddef.h>
#include <stdint.h>

// The inner loops of the CPU backend's fp32 attention (CPUAttention.runTiled in Kernels): one
// work item's query vectors against its keys, a tile of keys at a time, with an online softmax.
// The Swift side plans the items, walks the KV blocks and hands each tile's row addresses here.
//
// Query vector v of an item is row v / group, query head v % group of one KV head's group. Row i
// sits at position first_position + i and sees the keys at positions <= its own (and, with a
// window w, > its own - w).
//
// Variants: plain C (any CPU), AVX2 + FMA, and AVX-512 (F, BW, VL). The CPU is checked once;
// an item runs the best variant it has unless the caller asks for a lower one (tests compare them).
// VTENSOR_CPU_ATTENTION=avx2 or =portable in the environment lowers the best (for measurements).

enum {
    VT_ATTN_PORTABLE = 0,
    VT_ATTN_AVX2 = 1,
    VT_ATTN_AVX512 = 2,
};

typedef struct vt_attn_state {
    // Filled by the caller before vt_attn_begin.
    int32_t rows;            // query rows of the item
    int32_t group;           // query heads per KV head
    int32_t head_dim;        // a multiple of 8
    int32_t key_tile;        // most keys one vt_attn_tile call passes; a multiple of 16
    int64_t first_position;  // position of row 0
    int64_t window;          // 0: none
    float *scratch;          // vt_attn_scratch_floats(rows * group, head_dim, key_tile) floats, 64-byte aligned
    int32_t variant;         // -1: the best the CPU runs; else at most this one. vt_attn_begin sets the one used.

    // Set by vt_attn_begin; read-only for the caller.
    int32_t vectors;         // rows * group
    int32_t layout;          // how the scratch holds Q and the scores (internal)
    int32_t padded;          // vectors rounded up to the layout's lane count
    float *queries;
    float *scores;
    float *accumulator;      // [vectors][head_dim]
    float *maximum;          // running max per vector
    float *sum;              // running sum of weights per vector
    float *factor;
    int32_t *lower;          // per vector, first visible position
    int32_t *upper;          // per vector, last visible position
} vt_attn_state;

// Floats of scratch one item of `vectors` query vectors needs.
size_t vt_attn_scratch_floats(int vectors, int head_dim, int key_tile);

// Starts an item: copies its query vectors, scaled, from `queries` (row i's vectors start at
// queries + i * row_stride, one head_dim apart) and clears the running state.
void vt_attn_begin(vt_attn_state *s, const float *queries, ptrdiff_t row_stride, float scale);

// Folds `count` (1 ... key_tile) consecutive keys starting at position `first_key` into the item.
// Key k's row is key_rows[k] + key_offset bytes, its value row value_rows[k] + value_offset.
// The `ahead` (0 ... key_tile) rows after them in both arrays are the next tile's: the kernels
// that read K and V at memory speed (decode) ask for them early.
void vt_attn_tile(vt_attn_state *s, const void *const *key_rows, const void *const *value_rows,
                  ptrdiff_t key_offset, ptrdiff_t value_offset, int64_t first_key, int count, int ahead);

// Asks for `bytes` from each of `count` rows, ahead of an item's first tile (vt_attn_tile asks for
// the later ones): short items (decode's key splits) would otherwise wait for their first tile.
void vt_attn_prefetch(const void *const *rows, int count, ptrdiff_t offset, ptrdiff_t bytes);

// Writes the normalized output: vector v to out + (v / group) * row_stride + (v % group) * head_dim.
void vt_attn_store(const vt_attn_state *s, float *out, ptrdiff_t row_stride);

// Writes the unnormalized state for a later merge: vector v to slots + v * (head_dim + 2) as
// (max, sum, accumulator).
void vt_attn_store_partial(const vt_attn_state *s, float *slots);

// The best variant this CPU runs.
int vt_attn_best_variant(void);

// e^x for x <= 88 (within about 2e-7 relative; 0 below about -87.7 and for -infinity): the
// softmax's exp through `variant` (as vt_attn_state.variant), exposed for tests.
void vt_attn_exp(int variant, const float *x, float *y, size_t n);

#endif
