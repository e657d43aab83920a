/* AVX2+FMA latent (MLA) decode kernel (attn_latent.h), heads in the lanes.
 *
 * Per chunk of up to 64 rows: the rows are converted to f32 once (q8_0:
 * also widened to int16 with their block scales); then, per group of 16
 * heads (two 8-lane vectors):
 *  - scores: 6 keys x 16 heads in 12 accumulators; per channel two query
 *    vectors (Q^T, L1-resident per 64-channel block) and one broadcast row
 *    element per key: 8 loads per 12 FMAs, no horizontal sums.
 *    q8_0: per channel pair, vpmaddwd of (q_c, q_c+1) int16 pairs against
 *    the broadcast (k_c, k_c+1) pair, int32 sums per 32-element block, then
 *    one f32 fma per block with qd * d (exact integer parts).
 *  - online softmax per lane (running max/sum per head as vectors);
 *  - p*V: 6 channels x 16 heads in 12 accumulators, per key two weight
 *    vectors and 6 broadcast row elements.
 * Every row element is loaded once per group of 16 heads for the scores
 * and once for the values. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attn/attn_latent.h"
#include "core/exp_avx2.h"
#include "core/dtype.h"

#define LAT_CB 64 /* channels per score block (Q^T block of 4 KiB) */

/* Software prefetch of the next chunk's rows into L2, spread over the
 * current chunk's score blocks so the misses overlap the arithmetic (a
 * burst of a thousand prefetches would stall on the miss buffers). */
typedef struct lat_pf { const uint8_t *p, *end; size_t step; } lat_pf;
static inline void pf_step(lat_pf *pf) {
    for (size_t o = 0; o < pf->step && pf->p < pf->end; o += 64, pf->p += 64) __builtin_prefetch(pf->p, 0, 2);
}

/* ---- scores, f32 rows: s[t][16] (+)= sum_c kf[t][c] * qt[c][16] over [c0, c1) ---- */

static inline __attribute__((always_inline)) void scores_f32_block(const int KB, const float *kf, size_t ldk,
                                                                   const float *qt, int c0, int c1, float *s,
                                                                   bool first) {
    __m256 a[6][2];
    _Pragma("GCC unroll 6")
    for (int j = 0; j < KB; j++) {
        a[j][0] = first ? _mm256_setzero_ps() : _mm256_load_ps(s + 16 * j);
        a[j][1] = first ? _mm256_setzero_ps() : _mm256_load_ps(s + 16 * j + 8);
    }
    for (int c = c0; c < c1; c++) {
        const __m256 q0 = _mm256_load_ps(qt + 16 * (size_t)c), q1 = _mm256_load_ps(qt + 16 * (size_t)c + 8);
        _Pragma("GCC unroll 6")
        for (int j = 0; j < KB; j++) {
            const __m256 b = _mm256_broadcast_ss(kf + (size_t)j * ldk + c);
            a[j][0] = _mm256_fmadd_ps(b, q0, a[j][0]);
            a[j][1] = _mm256_fmadd_ps(b, q1, a[j][1]);
        }
    }
    _Pragma("GCC unroll 6")
    for (int j = 0; j < KB; j++) {
        _mm256_store_ps(s + 16 * j, a[j][0]);
        _mm256_store_ps(s + 16 * j + 8, a[j][1]);
    }
}

static void scores_f32(const float *kf, size_t ldk, int n, const float *qt, int dk, float *s, lat_pf *pf) {
    for (int c0 = 0; c0 < dk; c0 += LAT_CB) {
        const int c1 = c0 + LAT_CB < dk ? c0 + LAT_CB : dk;
        const bool first = c0 == 0;
        int t = 0;
        for (; t + 6 <= n; t += 6) {
            pf_step(pf);
            scores_f32_block(6, kf + (size_t)t * ldk, ldk, qt, c0, c1, s + 16 * t, first);
        }
        switch (n - t) {
        case 5: scores_f32_block(5, kf + (size_t)t * ldk, ldk, qt, c0, c1, s + 16 * t, first); break;
        case 4: scores_f32_block(4, kf + (size_t)t * ldk, ldk, qt, c0, c1, s + 16 * t, first); break;
        case 3: scores_f32_block(3, kf + (size_t)t * ldk, ldk, qt, c0, c1, s + 16 * t, first); break;
        case 2: scores_f32_block(2, kf + (size_t)t * ldk, ldk, qt, c0, c1, s + 16 * t, first); break;
        case 1: scores_f32_block(1, kf + (size_t)t * ldk, ldk, qt, c0, c1, s + 16 * t, first); break;
        default: break;
        }
    }
}

/* ---- scores, q8_0 rows: integer block dots ---- */

/* qi2: this head group's quantized queries as int16 pairs, [dk/2][16] int32
 * lanes; qd: [dk/32][16] block scales; kw: widened rows (int16, ld dk);
 * kd: row block scales [n][dk/32]. s[t][16] = sum_b fma(dot_b, qd*kd, .). */
static inline __attribute__((always_inline)) void scores_q8_block(const int KB, const int16_t *kw, int dk,
                                                                  const float *kd, const int32_t *qi2,
                                                                  const float *qd, float *s) {
    const int nb = dk / 32;
    /* the f32 sums live in s (one load/store per block): keeping them in
     * registers too would spill an int32 accumulator of the inner loop */
    for (int b = 0; b < nb; b++) {
        __m256i a[4][2];
        _Pragma("GCC unroll 6")
        for (int j = 0; j < KB; j++) a[j][0] = a[j][1] = _mm256_setzero_si256();
        const int32_t *qb = qi2 + (size_t)b * 16 * 16;
        _Pragma("GCC unroll 4")
        for (int cp = 0; cp < 16; cp++) {
            const __m256i q0 = _mm256_load_si256((const __m256i *)(const void *)(qb + 16 * cp));
            const __m256i q1 = _mm256_load_si256((const __m256i *)(const void *)(qb + 16 * cp + 8));
            _Pragma("GCC unroll 6")
            for (int j = 0; j < KB; j++) {
                int32_t pair;
                memcpy(&pair, kw + (size_t)j * dk + 32 * b + 2 * cp, 4);
                const __m256i k = _mm256_set1_epi32(pair);
                a[j][0] = _mm256_add_epi32(a[j][0], _mm256_madd_epi16(q0, k));
                a[j][1] = _mm256_add_epi32(a[j][1], _mm256_madd_epi16(q1, k));
            }
        }
        const __m256 d0 = _mm256_load_ps(qd + 16 * (size_t)b), d1 = _mm256_load_ps(qd + 16 * (size_t)b + 8);
        _Pragma("GCC unroll 6")
        for (int j = 0; j < KB; j++) {
            const __m256 kdj = _mm256_broadcast_ss(kd + (size_t)j * nb + b);
            const __m256 f0 = b ? _mm256_load_ps(s + 16 * j) : _mm256_setzero_ps();
            const __m256 f1 = b ? _mm256_load_ps(s + 16 * j + 8) : _mm256_setzero_ps();
            _mm256_store_ps(s + 16 * j, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[j][0]), _mm256_mul_ps(d0, kdj), f0));
            _mm256_store_ps(s + 16 * j + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[j][1]), _mm256_mul_ps(d1, kdj), f1));
        }
    }
}

static void scores_q8(const int16_t *kw, const float *kd, int n, const int32_t *qi2, const float *qd, int dk,
                      float *s, lat_pf *pf) {
    const int nb = dk / 32;
    int t = 0;
    /* 4 keys: 8 int32 accumulators, 2 query vectors and the broadcast pairs
     * stay in registers (6 keys spill) */
    for (; t + 4 <= n; t += 4, pf_step(pf))
        scores_q8_block(4, kw + (size_t)t * dk, dk, kd + (size_t)t * nb, qi2, qd, s + 16 * t);
    const int16_t *kt = kw + (size_t)t * dk;
    const float *kdt = kd + (size_t)t * nb;
    switch (n - t) {
    case 3: scores_q8_block(3, kt, dk, kdt, qi2, qd, s + 16 * t); break;
    case 2: scores_q8_block(2, kt, dk, kdt, qi2, qd, s + 16 * t); break;
    case 1: scores_q8_block(1, kt, dk, kdt, qi2, qd, s + 16 * t); break;
    default: break;
    }
}

/* q8_0 rows -> widened int16 values and f32 block scales (and f32 values
 * of the first dv elements for p*V when kf != NULL). */
static void widen_q8(const uint8_t *k, size_t k_row, int n, int dk, int dv, int16_t *kw, float *kd, float *kf) {
    const int nb = dk / 32;
    for (int t = 0; t < n; t++) {
        const uint8_t *row = k + (size_t)t * k_row;
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * 34;
            uint16_t h;
            memcpy(&h, blk, 2);
            const float d = _cvtsh_ss(h);
            kd[(size_t)t * nb + b] = d;
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(blk + 2)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(blk + 18)));
            int16_t *o = kw + (size_t)t * dk + 32 * b;
            _mm256_storeu_si256((__m256i *)(void *)o, w0);
            _mm256_storeu_si256((__m256i *)(void *)(o + 16), w1);
            if (kf && 32 * b < dv) {
                const __m256 vd = _mm256_set1_ps(d);
                float *fo = kf + (size_t)t * dk + 32 * b;
                for (int i = 0; i < 4; i++) {
                    const __m256i x = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(o + 8 * i)));
                    _mm256_storeu_ps(fo + 8 * i, _mm256_mul_ps(_mm256_cvtepi32_ps(x), vd));
                }
            }
        }
    }
}

/* ---- online softmax of one head group's scores s[t][16] ---- */

static void softmax_group(float *s, int n, float *m, float *l, float *ot, int dv) {
    __m256 x0 = _mm256_set1_ps(-INFINITY), x1 = x0;
    for (int t = 0; t < n; t++) {
        x0 = _mm256_max_ps(x0, _mm256_load_ps(s + 16 * t));
        x1 = _mm256_max_ps(x1, _mm256_load_ps(s + 16 * t + 8));
    }
    const __m256 mo0 = _mm256_load_ps(m), mo1 = _mm256_load_ps(m + 8);
    const __m256 mn0 = _mm256_max_ps(mo0, x0), mn1 = _mm256_max_ps(mo1, x1);
    const __m256 c0 = kvs_exp256(_mm256_sub_ps(mo0, mn0)), c1 = kvs_exp256(_mm256_sub_ps(mo1, mn1));
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (int t = 0; t < n; t++) {
        const __m256 e0 = kvs_exp256(_mm256_sub_ps(_mm256_load_ps(s + 16 * t), mn0));
        const __m256 e1 = kvs_exp256(_mm256_sub_ps(_mm256_load_ps(s + 16 * t + 8), mn1));
        _mm256_store_ps(s + 16 * t, e0);
        _mm256_store_ps(s + 16 * t + 8, e1);
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
    }
    _mm256_store_ps(m, mn0);
    _mm256_store_ps(m + 8, mn1);
    _mm256_store_ps(l, _mm256_fmadd_ps(_mm256_load_ps(l), c0, s0));
    _mm256_store_ps(l + 8, _mm256_fmadd_ps(_mm256_load_ps(l + 8), c1, s1));
    /* rescale the accumulators only when some head's max grew */
    const __m256 one = _mm256_set1_ps(1.0f);
    const int same = _mm256_movemask_ps(_mm256_cmp_ps(c0, one, _CMP_EQ_OQ)) &
                     _mm256_movemask_ps(_mm256_cmp_ps(c1, one, _CMP_EQ_OQ));
    if (same != 0xff)
        for (int c = 0; c < dv; c++) {
            _mm256_store_ps(ot + 16 * c, _mm256_mul_ps(_mm256_load_ps(ot + 16 * c), c0));
            _mm256_store_ps(ot + 16 * c + 8, _mm256_mul_ps(_mm256_load_ps(ot + 16 * c + 8), c1));
        }
}

/* ---- ot[c][16] += sum_t p[t][16] * kf[t][c], CW channels per block ---- */

static inline __attribute__((always_inline)) void values_block(const int CW, const float *kf, size_t ldk, int n,
                                                               const float *p, float *ot, int c) {
    __m256 a[6][2];
    _Pragma("GCC unroll 6")
    for (int i = 0; i < CW; i++) {
        a[i][0] = _mm256_load_ps(ot + 16 * (size_t)(c + i));
        a[i][1] = _mm256_load_ps(ot + 16 * (size_t)(c + i) + 8);
    }
    for (int t = 0; t < n; t++) {
        const __m256 p0 = _mm256_load_ps(p + 16 * t), p1 = _mm256_load_ps(p + 16 * t + 8);
        const float *row = kf + (size_t)t * ldk + c;
        _Pragma("GCC unroll 6")
        for (int i = 0; i < CW; i++) {
            const __m256 b = _mm256_broadcast_ss(row + i);
            a[i][0] = _mm256_fmadd_ps(b, p0, a[i][0]);
            a[i][1] = _mm256_fmadd_ps(b, p1, a[i][1]);
        }
    }
    _Pragma("GCC unroll 6")
    for (int i = 0; i < CW; i++) {
        _mm256_store_ps(ot + 16 * (size_t)(c + i), a[i][0]);
        _mm256_store_ps(ot + 16 * (size_t)(c + i) + 8, a[i][1]);
    }
}

static void values(const float *kf, size_t ldk, int n, const float *p, float *ot, int dv) {
    int c = 0;
    for (; c + 6 <= dv; c += 6) values_block(6, kf, ldk, n, p, ot, c);
    for (; c < dv; c++) values_block(1, kf, ldk, n, p, ot, c);
}

/* ---- queries and state in/out of the lane layout ---- */

static void load_group(const float *const *q, int R, int g, float scale, const float *state, size_t ss, int dk,
                       int dv, float *qt, float *ot, float *m, float *l) {
    for (int i = 0; i < 16; i++) {
        const int r = 16 * g + i;
        const float *st = r < R ? state + (size_t)r * ss : NULL;
        for (int c = 0; c < dk; c++) qt[16 * c + i] = r < R ? q[r][c] * scale : 0.0f;
        for (int c = 0; c < dv; c++) ot[16 * c + i] = st ? st[2 + c] : 0.0f;
        m[i] = st ? st[0] : -INFINITY;
        l[i] = st ? st[1] : 0.0f;
    }
}

static void store_group(int R, int g, float *state, size_t ss, int dv, const float *ot, const float *m,
                        const float *l) {
    for (int i = 0; i < 16 && 16 * g + i < R; i++) {
        float *st = state + (size_t)(16 * g + i) * ss;
        st[0] = m[i];
        st[1] = l[i];
        for (int c = 0; c < dv; c++) st[2 + c] = ot[16 * c + i];
    }
}

/* Quantized queries of head group g as int16 pairs [dk/2][16] and scales [dk/32][16]. */
static void pack_q8_group(const int16_t *qi, const float *qd, int R, int g, int dk, int32_t *qi2, float *qd2) {
    const int nb = dk / 32;
    for (int i = 0; i < 16; i++) {
        const int r = 16 * g + i;
        for (int cp = 0; cp < dk / 2; cp++) {
            int32_t pair = 0;
            if (r < R) {
                const uint16_t lo = (uint16_t)qi[(size_t)r * dk + 2 * cp], hi = (uint16_t)qi[(size_t)r * dk + 2 * cp + 1];
                pair = (int32_t)((uint32_t)lo | (uint32_t)hi << 16);
            }
            qi2[16 * cp + i] = pair;
        }
        for (int b = 0; b < nb; b++) qd2[16 * b + i] = r < R ? qd[(size_t)r * nb + b] : 0.0f;
    }
}

/* Chunk after (range i, row t0): its first row and row count (NULL at the end). */
static const uint8_t *next_chunk(const kvs_attn_rows *rw, int n_rw, int i, int t0, size_t *bytes) {
    const int C = KVS_ATTN_LATENT_CHUNK;
    if (t0 + C < rw[i].n) {
        const int nn = rw[i].n - t0 - C < C ? rw[i].n - t0 - C : C;
        *bytes = (size_t)nn * rw[i].k_row;
        return rw[i].k + (size_t)(t0 + C) * rw[i].k_row;
    }
    for (i++; i < n_rw; i++)
        if (rw[i].n > 0) {
            *bytes = (size_t)(rw[i].n < C ? rw[i].n : C) * rw[i].k_row;
            return rw[i].k;
        }
    *bytes = 0;
    return NULL;
}

bool kvs_attn_latent_avx2(const kvs_attn_rows *rws, int n_rw, const float *const *q, int R, float scale,
                          float *state, size_t state_stride, int dk, int dv, float *scratch) {
    if (!kvs_attn_latent_ok(rws, n_rw, R, dk, dv)) return false;
    const uint32_t type = rws[0].k_type;
    const kvs_attn_latent_layout L = kvs_attn_latent_layout_of(R, dk, dv);
    const int G = L.rp / 16, nb = dk / 32, C = KVS_ATTN_LATENT_CHUNK;
    const bool q8 = type == KVS_TYPE_Q8_0;
    const kvs_type_traits *tr = kvs_type_traits_of(type);
    float *qt = scratch + L.qt, *ot = scratch + L.ot, *s = scratch + L.s, *m = scratch + L.m, *l = scratch + L.l;
    float *kf = scratch + L.kf, *qd = scratch + L.qd, *kd = scratch + L.kd;
    int16_t *kw = (int16_t *)(void *)(scratch + L.kw);
    int32_t *qi2 = (int32_t *)(void *)(scratch + L.qi);
    for (int g = 0; g < G; g++)
        load_group(q, R, g, scale, state, state_stride, dk, dv, qt + (size_t)g * 16 * dk, ot + (size_t)g * 16 * dv,
                   m + 16 * g, l + 16 * g);
    if (q8) {
        /* quantized queries, staged per group of 16 in the kw / kd areas
         * (the first chunk overwrites them) */
        int16_t *qrow = kw;
        float *qdrow = kd;
        for (int g = 0; g < G; g++) {
            const int Rg = R - 16 * g < 16 ? R - 16 * g : 16;
            for (int i = 0; i < Rg; i++)
                kvs_attn_latent_quant_q(q[16 * g + i], dk, scale, qrow + (size_t)i * dk, qdrow + (size_t)i * nb);
            pack_q8_group(qrow, qdrow, Rg, 0, dk, qi2 + (size_t)g * 8 * dk, qd + (size_t)g * 16 * nb);
        }
    }
    for (int i = 0; i < n_rw; i++) {
        const kvs_attn_rows *rw = &rws[i];
        for (int t0 = 0; t0 < rw->n; t0 += C) {
            const int n = rw->n - t0 < C ? rw->n - t0 : C;
            const uint8_t *k = rw->k + (size_t)t0 * rw->k_row;
            const float *rows = kf;
            size_t ldk = (size_t)dk;
            if (q8) {
                widen_q8(k, rw->k_row, n, dk, dv, kw, kd, kf);
            } else if (type == KVS_TYPE_F32 && rw->k_row % sizeof(float) == 0) {
                rows = (const float *)(const void *)k; /* in place */
                ldk = rw->k_row / sizeof(float);
            } else if (rw->k_row == kvs_row_bytes(type, dk)) {
                tr->to_float(k, kf, (int64_t)n * dk);
            } else {
                for (int t = 0; t < n; t++) tr->to_float(k + (size_t)t * rw->k_row, kf + (size_t)t * dk, dk);
            }
            size_t nx_bytes;
            const uint8_t *nx = next_chunk(rws, n_rw, i, t0, &nx_bytes);
            /* score blocks of this chunk's first head group that carry prefetches */
            const size_t calls = q8 ? (size_t)(n / 4 + 1) : (size_t)((dk + LAT_CB - 1) / LAT_CB) * (size_t)(n / 6 + 1);
            lat_pf pf = {nx, nx ? nx + nx_bytes : NULL, ((nx_bytes + 63) / 64 + calls - 1) / calls * 64};
            for (int g = 0; g < G; g++) {
                float *sg = s + (size_t)g * 16 * C;
                if (q8) scores_q8(kw, kd, n, qi2 + (size_t)g * 8 * dk, qd + (size_t)g * 16 * nb, dk, sg, &pf);
                else scores_f32(rows, ldk, n, qt + (size_t)g * 16 * dk, dk, sg, &pf);
                softmax_group(sg, n, m + 16 * g, l + 16 * g, ot + (size_t)g * 16 * dv, dv);
                values(rows, ldk, n, sg, ot + (size_t)g * 16 * dv, dv);
            }
        }
    }
    for (int g = 0; g < G; g++)
        store_group(R, g, state, state_stride, dv, ot + (size_t)g * 16 * dv, m + 16 * g, l + 16 * g);
    return true;
}

void kvs_attn_latent_q8_scores_avx2(const uint8_t *k, size_t k_row, int n, const int16_t *qi, const float *qd,
                                    int R, int dk, float *s, float *scratch) {
    const kvs_attn_latent_layout L = kvs_attn_latent_layout_of(R, dk, dk);
    const int G = L.rp / 16, nb = dk / 32;
    int16_t *kw = (int16_t *)(void *)(scratch + L.kw);
    int32_t *qi2 = (int32_t *)(void *)(scratch + L.qi);
    float *qd2 = scratch + L.qd, *kd = scratch + L.kd, *sg = scratch + L.s;
    for (int g = 0; g < G; g++) pack_q8_group(qi, qd, R, g, dk, qi2 + (size_t)g * 8 * dk, qd2 + (size_t)g * 16 * nb);
    for (int t0 = 0; t0 < n; t0 += KVS_ATTN_LATENT_CHUNK) {
        const int nc = n - t0 < KVS_ATTN_LATENT_CHUNK ? n - t0 : KVS_ATTN_LATENT_CHUNK;
        widen_q8(k + (size_t)t0 * k_row, k_row, nc, dk, 0, kw, kd, NULL);
        for (int g = 0; g < G; g++) {
            lat_pf pf = {NULL, NULL, 0};
            scores_q8(kw, kd, nc, qi2 + (size_t)g * 8 * dk, qd2 + (size_t)g * 16 * nb, dk, sg, &pf);
            for (int i = 0; i < 16 && 16 * g + i < R; i++)
                for (int t = 0; t < nc; t++) s[(size_t)(16 * g + i) * n + t0 + t] = sg[16 * t + i];
        }
    }
}
