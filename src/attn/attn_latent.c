/* Latent (MLA) decode attention: the scalar reference twin, the q8_0 query
 * quantizer and integer block scores both kernels share, and dispatch.
 * See attn_latent.h. */
#include "attn/attn_latent.h"

#include <math.h>
#include <string.h>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/f16.h"

size_t kvs_attn_latent_scratch_floats(int R, int dk, int dv) {
    return kvs_attn_latent_layout_of(R, dk, dv).total;
}

bool kvs_attn_latent_ok(const kvs_attn_rows *rw, int n_rw, int R, int dk, int dv) {
    if (R < 1 || R > KVS_ATTN_LATENT_MAX_ROWS || n_rw < 1 || dk % 32 || dv % 32 || dv > dk) return false;
    const uint32_t t = rw[0].k_type;
    if (t != KVS_TYPE_F32 && t != KVS_TYPE_F16 && t != KVS_TYPE_BF16 && t != KVS_TYPE_Q8_0 && t != KVS_TYPE_Q4_0)
        return false;
    for (int i = 0; i < n_rw; i++) /* one format per call (the q8_0 queries are quantized once) */
        if (rw[i].k_type != t || rw[i].n < 0 || rw[i].k_row < kvs_row_bytes(t, dk)) return false;
    return true;
}

void kvs_attn_latent_quant_q(const float *q, int dk, float scale, int16_t *qi, float *qd) {
    for (int b = 0; b < dk / 32; b++) {
        const float *x = q + 32 * b;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; i++) {
            float v = nearbyintf(x[i] * id);
            qi[32 * b + i] = (int16_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
        qd[b] = d * scale;
    }
}

static void q8_scores_scalar(const uint8_t *k, size_t k_row, int n, const int16_t *qi, const float *qd, int R,
                             int dk, float *s) {
    const int nb = dk / 32;
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < n; t++) {
            const uint8_t *row = k + (size_t)t * k_row;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * 34;
                uint16_t h;
                memcpy(&h, blk, 2);
                int32_t dot = 0;
                for (int i = 0; i < 32; i++) dot += (int32_t)qi[(size_t)r * dk + 32 * b + i] * (int8_t)blk[2 + i];
                acc = fmaf((float)dot, qd[(size_t)r * nb + b] * kvs_f16_to_f32(h), acc);
            }
            s[(size_t)r * n + t] = acc;
        }
    }
}

void kvs_attn_latent_q8_scores(bool simd, const uint8_t *k, size_t k_row, int n, const int16_t *qi,
                               const float *qd, int R, int dk, float *s, float *scratch) {
    if (simd && kvs_cpu()->avx2) kvs_attn_latent_q8_scores_avx2(k, k_row, n, qi, qd, R, dk, s, scratch);
    else q8_scores_scalar(k, k_row, n, qi, qd, R, dk, s);
}

/* Reference twin: per chunk, rows converted with the reference
 * dequantizers, scores per head (f32 dots, or the shared q8_0 integer
 * scores), online softmax with expf, acc += p * row. */
bool kvs_attn_latent_scalar(const kvs_attn_rows *rws, int n_rw, const float *const *q, int R, float scale,
                            float *state, size_t state_stride, int dk, int dv, float *scratch) {
    if (!kvs_attn_latent_ok(rws, n_rw, R, dk, dv)) return false;
    const kvs_attn_latent_layout L = kvs_attn_latent_layout_of(R, dk, dv);
    const kvs_type_traits *tr = kvs_type_traits_ref(rws[0].k_type);
    const bool q8 = rws[0].k_type == KVS_TYPE_Q8_0;
    float *kf = scratch + L.kf, *s = scratch + L.s, *qd = scratch + L.qd;
    int16_t *qi = (int16_t *)(void *)(scratch + L.qi);
    if (q8)
        for (int r = 0; r < R; r++) kvs_attn_latent_quant_q(q[r], dk, scale, qi + (size_t)r * dk, qd + (size_t)r * (dk / 32));
    for (int i = 0; i < n_rw; i++) {
        const kvs_attn_rows *rw = &rws[i];
        for (int t0 = 0; t0 < rw->n; t0 += KVS_ATTN_LATENT_CHUNK) {
            const int n = rw->n - t0 < KVS_ATTN_LATENT_CHUNK ? rw->n - t0 : KVS_ATTN_LATENT_CHUNK;
            const uint8_t *k = rw->k + (size_t)t0 * rw->k_row;
            for (int t = 0; t < n; t++) tr->to_float(k + (size_t)t * rw->k_row, kf + (size_t)t * dk, dk);
            if (q8) {
                q8_scores_scalar(k, rw->k_row, n, qi, qd, R, dk, s);
            } else {
                for (int r = 0; r < R; r++)
                    for (int t = 0; t < n; t++) {
                        float d = 0.0f;
                        for (int c = 0; c < dk; c++) d += q[r][c] * kf[(size_t)t * dk + c];
                        s[(size_t)r * n + t] = d * scale;
                    }
            }
            for (int r = 0; r < R; r++) {
                float *st = state + (size_t)r * state_stride, *sr = s + (size_t)r * n;

                float mx = -INFINITY;
                for (int t = 0; t < n; t++) mx = fmaxf(mx, sr[t]);
                const float m_new = fmaxf(mx, st[0]);
                const float corr = st[0] == -INFINITY ? 0.0f : expf(st[0] - m_new);
                st[1] *= corr;
                for (int c = 0; c < dv; c++) st[2 + c] *= corr;
                st[0] = m_new;
                for (int t = 0; t < n; t++) {
                    const float p = expf(sr[t] - m_new);
                    st[1] += p;
                    for (int c = 0; c < dv; c++) st[2 + c] += p * kf[(size_t)t * dk + c];
                }
            }
        }
    }
    return true;
}

kvs_attn_latent_fn kvs_attn_latent_get(void) {
    return kvs_cpu()->avx2 ? kvs_attn_latent_avx2 : kvs_attn_latent_scalar;
}
