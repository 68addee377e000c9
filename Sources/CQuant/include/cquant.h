#ifndef VTENSOR_CQUANT_H
#define VTENSOR_CQUANT_H
#include <stdint.h>

// Dot products of one row of GGUF blocks (32 weights each) with a Float vector, for the CPU's
// decode matrix-vector products. xsum[b] is the sum of x over block b (for Q4_1's m and Q4_0's -8).
// AVX2 + FMA + F16C where the compiler targets them; plain C otherwise.
float vt_dot_q4_0(const uint8_t *row, const float *x, const float *xsum, int blocks);
float vt_dot_q4_1(const uint8_t *row, const float *x, const float *xsum, int blocks);
float vt_dot_q8_0(const uint8_t *row, const float *x, int blocks);

#endif
