/* Vector primitives the attention kernel is built from, with a scalar and an
 * AVX2 implementation (attn_avx2.c) selected at run time. */
#ifndef KVS_ATTN_SIMD_H
#define KVS_ATTN_SIMD_H

#include <stdint.h>

typedef struct kvs_attn_vec {
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);   /* y += a x   */
    void (*scale)(float *y, float a, int64_t n);                  /* y *= a     */
    /* y[i] = exp(x[i] - m) for i < n; returns the sum of the y[i]. */
    float (*exp_sum)(float *y, const float *x, float m, int64_t n);
} kvs_attn_vec;

const kvs_attn_vec *kvs_attn_vec_get(void);
const kvs_attn_vec *kvs_attn_vec_scalar(void);
const kvs_attn_vec *kvs_attn_vec_avx2(void);

#endif
