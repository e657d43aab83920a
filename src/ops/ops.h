/* Elementwise and row operators of the forward pass, on f32 activations:
 * RMSNorm, RoPE (normal and NeoX pair ordering, optional YaRN), SwiGLU/GeGLU, softmax, and
 * embedding-row lookup. These scalar loops are simple enough to be their own
 * reference; the heavy kernels (matmul, attention) live in ops/matmul.c and
 * attn/. Shapes are noted as (rows, cols), row-major. */
#ifndef KVS_OPS_H
#define KVS_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"

/* y = x / rms(x) * w, per row. x, y: (n, d); w: (d) or NULL (no gain). */
void kvs_rmsnorm(float *y, const float *x, const float *w, int64_t n, int64_t d, float eps);

typedef enum kvs_rope_mode {
    KVS_ROPE_NORM = 0, /* rotate pairs (2i, 2i+1): llama GGUF convention   */
    KVS_ROPE_NEOX = 1, /* rotate pairs (i, i + d/2): qwen2, gemma, ...     */
} kvs_rope_mode;

typedef struct kvs_rope {
    kvs_rope_mode mode;
    int32_t n_dims;          /* rotary dims per head (<= head_dim)            */
    float freq_base;
    float freq_scale;        /* linear position scaling (1 = none)            */
    const float *freq_factors; /* optional (n_dims/2) divisors (llama3 rope_freqs) */
    /* YaRN (off when ext_factor == 0, the zero default): pair i turns by
     * theta = interp * (1 - mix) + extrap * mix, where extrap = pos * base^(-2i/d),
     * interp = freq_scale * extrap and mix = ext_factor * (1 - ramp(i)),
     * ramp rising from 0 at pair yarn_low to 1 at yarn_high; cos/sin are then
     * multiplied by yarn_mscale. Set the ramp with kvs_rope_yarn(). */
    float ext_factor;
    float yarn_low, yarn_high;
    float yarn_mscale;
} kvs_rope;

/* Turn on YaRN for r (n_dims, freq_base, freq_scale already set): the ramp
 * runs between the pairs that complete beta_fast and beta_slow turns over
 * the original training context n_ctx_orig (YaRN paper, sec. 3.2), clamped
 * to [0, n_dims - 1]. Magnitude scaling is left at 1 (attention-scale
 * corrections are the caller's). */
void kvs_rope_yarn(kvs_rope *r, int32_t n_ctx_orig, float beta_fast, float beta_slow, float ext_factor);

/* Rotate x: (n, n_heads, head_dim) in place; token i is at position pos[i]. */
void kvs_rope_apply(const kvs_rope *r, float *x, int64_t n, int32_t n_heads, int32_t head_dim,
                    const int32_t *pos);

/* out = silu(gate) * up, elementwise over n values (in place in gate ok). */
void kvs_swiglu(float *out, const float *gate, const float *up, int64_t n);
/* out = gelu_tanh(gate) * up. */
void kvs_geglu(float *out, const float *gate, const float *up, int64_t n);
/* Their scalar reference twins (libm expf / tanhf), and the AVX2 versions
 * the two above dispatch to (ops/act_avx2.c, one e^x polynomial):
 * silu(g) = g / (1 + e^-g) and gelu_tanh(g) = g / (1 + e^-2y), y = sqrt(2/pi) (g +
 * 0.044715 g^3), within a few float ulps of the references. */
void kvs_swiglu_ref(float *out, const float *gate, const float *up, int64_t n);
void kvs_geglu_ref(float *out, const float *gate, const float *up, int64_t n);
void kvs_swiglu_avx2(float *out, const float *gate, const float *up, int64_t n);
void kvs_geglu_avx2(float *out, const float *gate, const float *up, int64_t n);

/* In-place numerically safe softmax over n values (-inf entries -> 0). */
void kvs_softmax(float *x, int64_t n);

/* Dequantize row `row` of an embedding table (n_rows, d) of type t into out. */
void kvs_get_row(float *out, const void *table, uint32_t t, int64_t d, int64_t row);

/* y += x over n values. */
void kvs_add(float *y, const float *x, int64_t n);

#endif
