/* Scalar implementations of the row operators declared in ops/ops.h (the
 * activations dispatch to ops/act_avx2.c where the CPU has AVX2). */
#include "ops/ops.h"

#include <math.h>
#include <string.h>

#include "core/cpu.h"

void kvs_rmsnorm(float *y, const float *x, const float *w, int64_t n, int64_t d, float eps) {
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        double ss = 0.0;
        for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(ss / (double)d + eps));
        if (w) for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * scale * w[i];
        else   for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * scale;
    }
}

static float yarn_corr_dim(int32_t n_dims, int32_t n_ctx_orig, float turns, float base) {
    return (float)n_dims * logf((float)n_ctx_orig / (turns * 2.0f * 3.14159265358979f)) / (2.0f * logf(base));
}

void kvs_rope_yarn(kvs_rope *r, int32_t n_ctx_orig, float beta_fast, float beta_slow, float ext_factor) {
    float lo = floorf(yarn_corr_dim(r->n_dims, n_ctx_orig, beta_fast, r->freq_base));
    float hi = ceilf(yarn_corr_dim(r->n_dims, n_ctx_orig, beta_slow, r->freq_base));
    r->yarn_low = lo > 0.0f ? lo : 0.0f;
    r->yarn_high = hi < (float)(r->n_dims - 1) ? hi : (float)(r->n_dims - 1);
    r->ext_factor = ext_factor;
    r->yarn_mscale = 1.0f;
}

/* YaRN angle of pair i (see kvs_rope). */
static float yarn_theta(const kvs_rope *r, float extrap, int32_t i) {
    float y = ((float)i - r->yarn_low) / fmaxf(0.001f, r->yarn_high - r->yarn_low);
    float ramp = y < 0.0f ? 0.0f : y > 1.0f ? 1.0f : y;
    float mix = (1.0f - ramp) * r->ext_factor;
    return r->freq_scale * extrap * (1.0f - mix) + extrap * mix;
}

void kvs_rope_apply(const kvs_rope *r, float *x, int64_t n, int32_t n_heads, int32_t head_dim,
                    const int32_t *pos) {
    int32_t half = r->n_dims / 2;
    float cs[512], sn[512]; /* half <= 512: head_dim <= 1024 */
    if (half > 512) half = 512;
    for (int64_t t = 0; t < n; t++) {
        float p = (float)pos[t] * r->freq_scale;
        for (int32_t i = 0; i < half; i++) {
            float inv = powf(r->freq_base, -2.0f * (float)i / (float)r->n_dims);
            if (r->freq_factors) inv /= r->freq_factors[i];
            if (r->ext_factor != 0.0f) { /* YaRN; the plain path below stays bit-identical */
                float theta = yarn_theta(r, (float)pos[t] * inv, i);
                cs[i] = cosf(theta) * r->yarn_mscale;
                sn[i] = sinf(theta) * r->yarn_mscale;
                continue;
            }
            float theta = p * inv;
            cs[i] = cosf(theta);
            sn[i] = sinf(theta);
        }
        for (int32_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * (int64_t)head_dim;
            if (r->mode == KVS_ROPE_NORM) {
                for (int32_t i = 0; i < half; i++) {
                    float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * cs[i] - b * sn[i];
                    v[2 * i + 1] = a * sn[i] + b * cs[i];
                }
            } else {
                for (int32_t i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half];
                    v[i] = a * cs[i] - b * sn[i];
                    v[i + half] = a * sn[i] + b * cs[i];
                }
            }
        }
    }
}

void kvs_swiglu_ref(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kvs_geglu_ref(float *out, const float *gate, const float *up, int64_t n) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = 0.5f * g * (1.0f + tanhf(c * (g + 0.044715f * g * g * g))) * up[i];
    }
}

/* AVX2 where the CPU has it (ops/act_avx2.c, within 2e-7 of the libm twins
 * above). Elementwise, so a row's result does not depend on the rows beside
 * it; the chunk-invariance tests (test_engine, test_pool) rely on that. */
void kvs_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    if (kvs_cpu()->avx2) kvs_swiglu_avx2(out, gate, up, n);
    else kvs_swiglu_ref(out, gate, up, n);
}

void kvs_geglu(float *out, const float *gate, const float *up, int64_t n) {
    if (kvs_cpu()->avx2) kvs_geglu_avx2(out, gate, up, n);
    else kvs_geglu_ref(out, gate, up, n);
}

void kvs_softmax(float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) if (x[i] > m) m = x[i];
    if (m == -INFINITY) { memset(x, 0, (size_t)n * sizeof *x); return; }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - m); s += x[i]; }
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void kvs_get_row(float *out, const void *table, uint32_t t, int64_t d, int64_t row) {
    const kvs_type_traits *tr = kvs_type_traits_of(t);
    size_t rb = kvs_row_bytes(t, d);
    tr->to_float((const uint8_t *)table + (size_t)row * rb, out, d);
}

void kvs_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}
