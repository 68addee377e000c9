#ifndef VTENSOR_CQUANT_H
#define VTENSOR_CQUANT_H
#include <stddef.h>
#include <stdint.h>

// The CPU backend's matrix kernels. Every SIMD function is compiled for its instruction set with
// a per-function target attribute and chosen at run time from cpuid, so the package needs no
// compiler flags (SwiftPM refuses a dependency with unsafe flags) and runs on any x86-64 (and,
// with the portable C, on other architectures).

// Instruction sets, lowest first. The best the CPU (and OS) supports is used unless lowered.
enum { VT_CPU_PORTABLE = 0, VT_CPU_AVX2 = 1, VT_CPU_AVX512 = 2 };
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

// Dot products of one row of GGUF blocks with a Float vector, for the decode's matrix-vector
// products. xsum[b] is the sum of x over block b (for Q4_1's m and Q4_0's -8).
float vt_dot_q4_0(const uint8_t *row, const float *x, const float *xsum, int blocks);
float vt_dot_q4_1(const uint8_t *row, const float *x, const float *xsum, int blocks);
float vt_dot_q8_0(const uint8_t *row, const float *x, int blocks);

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
