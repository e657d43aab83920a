/* The gated activations on 8 floats at a time (see ops/ops.h): silu and the
 * tanh form of gelu as g / (1 + e^-a) with core/exp_avx2.h's e^x; the tail
 * goes through the same formula on a zero-padded vector. */
#include <immintrin.h>
#include <string.h>

#include "core/exp_avx2.h"
#include "ops/ops.h"

/* g / (1 + e^-a) * u */
static inline __m256 gated(__m256 g, __m256 a, __m256 u) {
    const __m256 e = kvs_exp256(_mm256_sub_ps(_mm256_setzero_ps(), a));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

static inline __m256 gelu_arg(__m256 g) { /* 2 sqrt(2/pi) (g + 0.044715 g^3) */
    const __m256 g2 = _mm256_mul_ps(g, g);
    const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(g2, g), _mm256_set1_ps(0.044715f), g);
    return _mm256_mul_ps(inner, _mm256_set1_ps(2.0f * 0.7978845608028654f));
}

void kvs_swiglu_avx2(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        _mm256_storeu_ps(out + i, gated(g, g, _mm256_loadu_ps(up + i)));
    }
    if (i < n) {
        float g[8] = {0}, u[8] = {0}, o[8];
        memcpy(g, gate + i, sizeof(float) * (size_t)(n - i));
        memcpy(u, up + i, sizeof(float) * (size_t)(n - i));
        const __m256 gv = _mm256_loadu_ps(g);
        _mm256_storeu_ps(o, gated(gv, gv, _mm256_loadu_ps(u)));
        memcpy(out + i, o, sizeof(float) * (size_t)(n - i));
    }
}

void kvs_geglu_avx2(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        _mm256_storeu_ps(out + i, gated(g, gelu_arg(g), _mm256_loadu_ps(up + i)));
    }
    if (i < n) {
        float g[8] = {0}, u[8] = {0}, o[8];
        memcpy(g, gate + i, sizeof(float) * (size_t)(n - i));
        memcpy(u, up + i, sizeof(float) * (size_t)(n - i));
        const __m256 gv = _mm256_loadu_ps(g);
        _mm256_storeu_ps(o, gated(gv, gelu_arg(gv), _mm256_loadu_ps(u)));
        memcpy(out + i, o, sizeof(float) * (size_t)(n - i));
    }
}
