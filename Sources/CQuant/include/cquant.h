#ifndef VTENSOR_CQUANT_H
#define VTENSOR_CQUANT_H
#include <stddef.h>
#include <stdint.h>

// The CPU backend's matrix kernels. Every SIMD function is compiled for its instruction set with
// a per-function target attribute and chosen at run time from cpuid, so the package needs no
// compiler flags (SwiftPM refuses a dependency with unsafe flags) and runs on any x86-64 (and,
// with the portable C, on other architectures).

// Instruction sets, lowest first. The best the CPU (and OS) supports is used unless lowered.
// AVX512_VNNI also needs AVX-512 BW, VL and VBMI (Ice Lake, Sapphire Rapids, Zen 4 and later).
enum { VT_CPU_PORTABLE = 0, VT_CPU_AVX2 = 1, VT_CPU_AVX512 = 2, VT_CPU_AVX512_VNNI = 3 };
// The level in use.
int vt_cpu_level(void);
// The best level this CPU supports.
int vt_cpu_best_level(void);
// Lowers (or restores) the level in use, clamped to what the CPU supports; returns the level set.
// For tests that check the SIMD paths against the portable one, and for measurements.
int vt_cpu_set_level(int level);

// Weight storage of a row-major matrix: fp32, or GGUF blocks of 32 weights (ggml's layouts:
// Q4_0 = f16 d + 16 bytes of nibbles; Q4_1 = f16 d, f16 m + nibbles; Q8_0 = f16 d + 32 int8).
enum { VT_WEIGHTS_F32 = 0, VT_WEIGHTS_Q4_0 = 1, VT_WEIGHTS_Q4_1 = 2, VT_WEIGHTS_Q8_0 = 3 };

// Decode steps (a few token rows) quantize their activations to int8 per block of 32, as
// llama.cpp's Q8 does, and take integer dot products with the weight blocks (VNNI where the CPU
// has it): fewer instructions per weight than converting every weight to float. Per token row
// and block b: q[32 b ..< 32 b + 32] = round(x / d[b]), d[b] = max |x| / 127, sum[b] = the sum of
// x (exact, for Q4_1's m), qsum[b] = the sum of q (for Q4_0's -8). cols is a multiple of 32.
void vt_quantize_q8(const float *x, int cols, int8_t *q, float *d, float *sum, int32_t *qsum);

// y[t * y_stride + r] = W row r . x_t for rows [row_begin, row_end) and token rows t < n,
// x_t quantized by vt_quantize_q8 (q at t * cols, d/sum/qsum at t * cols / 32).
void vt_gemv_q8(int format, const uint8_t *w, size_t row_bytes, int cols, const int8_t *q, const float *d, const float *sum,
                const int32_t *qsum, int n, float *y, size_t y_stride, int row_begin, int row_end);

// One row of `cols` weights in `format` to fp32 (an embedding lookup; the prefill's panels).
void vt_dequantize_row(int format, const uint8_t *row, int cols, float *out);

// The prefill's matrix product, for rows [row_begin, row_end) of W:
//   y[t * y_stride + r] = sum_c x[t * x_stride + c] * W[r][c]   for t < n.
// W's rows are `row_bytes` apart. Quantized rows are dequantized a panel at a time into a
// per-thread buffer that stays in L2 while every token passes over it, so the weights are held
// in their block format only. Safe to call from several threads on disjoint row ranges.
void vt_gemm(int format, const uint8_t *w, size_t row_bytes, int cols, const float *x, size_t x_stride, int n,
             float *y, size_t y_stride, int row_begin, int row_end);

#endif
