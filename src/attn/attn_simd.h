/* Vector primitives the attention kernel is built from, with a scalar and an
 * AVX2 implementation (attn_avx2.c) selected at run time. */
#ifndef KVS_ATTN_SIMD_H
#define KVS_ATTN_SIMD_H

#include <stdint.h>

/* Online-softmax update of R query rows against one tile of T keys/values
 * (f32, row-major (T, dk) and (T, dv)). Row r sees tile keys [lo[r], hi[r])
 * (empty ranges skip the row) and keeps its running state at
 * state + r * state_stride as (max, sum, acc[dv]). scratch: T floats. */
typedef void (*kvs_attn_tile_fn)(const float *const *qrows, int R, const float *k, const float *v,
                                 const int *lo, const int *hi, float scale, float *state,
                                 size_t state_stride, int dk, int dv, float *scratch);

typedef struct kvs_attn_vec {
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);   /* y += a x   */
    void (*scale)(float *y, float a, int64_t n);                  /* y *= a     */
    /* y[i] = exp(x[i] - m) for i < n; returns the sum of the y[i]. */
    float (*exp_sum)(float *y, const float *x, float m, int64_t n);
    kvs_attn_tile_fn tile;
} kvs_attn_vec;

/* The tile update written with a kvs_attn_vec's primitives (scalar path and
 * fallback for head sizes the SIMD tile does not handle). */
void kvs_attn_tile_generic(const kvs_attn_vec *vec, const float *const *qrows, int R, const float *k,
                           const float *v, const int *lo, const int *hi, float scale, float *state,
                           size_t state_stride, int dk, int dv, float *scratch);

const kvs_attn_vec *kvs_attn_vec_get(void);
const kvs_attn_vec *kvs_attn_vec_scalar(void);
const kvs_attn_vec *kvs_attn_vec_avx2(void);

#endif
