/* Absorbed MLA (latent) decode attention: many query heads (DeepSeek-V2-Lite
 * 16, V3 128) over one stored row per token, [c ; k_rope] of dk elements,
 * whose first dv elements are also the value (V aliases K).
 *
 * The arithmetic is a small GEMM per block of keys, so the AVX2 kernel
 * (attn_latent_avx2.c) puts heads in the SIMD lanes: each row element is
 * converted once and broadcast against 16 heads (scores: Q^T[c][16 heads]
 * x key rows; p*V: weights[t][16 heads] x the same rows), with an online
 * softmax per head lane. q8_0 rows are scored with integer dot products
 * (query quantized per head to int8 in 32-element blocks like Q8_0, pairs
 * of int16 multiplied by vpmaddwd, block scales applied in f32); p*V stays
 * f32 (each q8_0 row dequantized once for all heads): an integer p*V
 * (weights x row block scale quantized to int16 per block and head, key
 * pairs through vpmaddwd) was measured slower, 1.95 vs 1.75 ms per call at
 * depth 4096, its per-block weight quantization costing more than the
 * halved multiply work saves.
 *
 * kvs_attn_latent_scalar is the reference twin: same contract, plain C,
 * and for q8_0 rows the same quantized query and the same integer block
 * dots combined in the same order, so q8_0 scores agree bit for bit. */
#ifndef KVS_ATTN_LATENT_H
#define KVS_ATTN_LATENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attn/attn_simd.h"

#define KVS_ATTN_LATENT_MIN_ROWS 9   /* fewer heads: the fused kernel (attn_avx2.c) */
#define KVS_ATTN_LATENT_MAX_ROWS 128
#define KVS_ATTN_LATENT_CHUNK 64     /* rows converted per step */

/* Online-softmax update of R query rows (heads) that all see the rows of
 * n_rw ranges rw[i] (rw->k, rw->k_row, rw->k_type, rw->n; V = the first dv
 * elements of each row, rw->v is ignored); the heads' lane layout is set up
 * once per call, so callers pass every range of an item together. State as in kvs_attn_tile_fn: (max, sum, acc[dv]) per row at
 * state + r * state_stride. scratch: kvs_attn_latent_scratch_floats()
 * floats, 32-byte aligned. Returns false, touching nothing, for formats or
 * shapes it does not take (types f32, f16, bf16, q8_0, q4_0; dk, dv
 * multiples of 32). */
typedef bool (*kvs_attn_latent_fn)(const kvs_attn_rows *rw, int n_rw, const float *const *q, int R, float scale,
                                   float *state, size_t state_stride, int dk, int dv, float *scratch);

size_t kvs_attn_latent_scratch_floats(int R, int dk, int dv);

/* Scratch layout (float offsets, each a multiple of 8): heads padded to
 * Rp = 16 * ceil(R / 16) lanes; C = KVS_ATTN_LATENT_CHUNK. */
typedef struct kvs_attn_latent_layout {
    int rp;
    size_t qt;     /* Rp/16 x dk x 16   queries, transposed, scale folded in */
    size_t ot;     /* Rp/16 x dv x 16   output accumulators, transposed       */
    size_t s;      /* Rp/16 x C x 16    scores, then weights                  */
    size_t m, l;   /* Rp each           running max and sum per head          */
    size_t kf;     /* C x dk            rows as f32                           */
    size_t qi;     /* Rp x dk int16     quantized queries (q8_0 rows)         */
    size_t qd;     /* Rp x dk/32        their block scales                    */
    size_t kw;     /* C x dk int16      q8_0 row values widened               */
    size_t kd;     /* C x dk/32         q8_0 row block scales                 */
    size_t total;
} kvs_attn_latent_layout;

static inline size_t kvs_attn_latent_up8(size_t n) { return (n + 7) & ~(size_t)7; }
static inline kvs_attn_latent_layout kvs_attn_latent_layout_of(int R, int dk, int dv) {
    kvs_attn_latent_layout L;
    const size_t rp = (size_t)(R + 15) / 16 * 16, C = KVS_ATTN_LATENT_CHUNK, nb = (size_t)dk / 32;
    size_t o = 0;
    L.rp = (int)rp;
    L.qt = o; o += kvs_attn_latent_up8(rp * (size_t)dk);
    L.ot = o; o += kvs_attn_latent_up8(rp * (size_t)dv);
    L.s = o; o += kvs_attn_latent_up8(rp * C);
    L.m = o; o += kvs_attn_latent_up8(rp);
    L.l = o; o += kvs_attn_latent_up8(rp);
    L.kf = o; o += kvs_attn_latent_up8(C * (size_t)dk);
    L.qi = o; o += kvs_attn_latent_up8(rp * (size_t)dk / 2);
    L.qd = o; o += kvs_attn_latent_up8(rp * nb);
    L.kw = o; o += kvs_attn_latent_up8(C * (size_t)dk / 2);
    L.kd = o; o += kvs_attn_latent_up8(C * nb);
    L.total = o + 8;
    return L;
}
bool kvs_attn_latent_scalar(const kvs_attn_rows *rw, int n_rw, const float *const *q, int R, float scale, float *state,
                            size_t state_stride, int dk, int dv, float *scratch);
bool kvs_attn_latent_avx2(const kvs_attn_rows *rw, int n_rw, const float *const *q, int R, float scale, float *state,
                          size_t state_stride, int dk, int dv, float *scratch);
/* The kernel for this CPU (AVX2 or the scalar twin). */
kvs_attn_latent_fn kvs_attn_latent_get(void);
/* Formats and shapes the kernels take (every range checked). */
bool kvs_attn_latent_ok(const kvs_attn_rows *rw, int n_rw, int R, int dk, int dv);

/* q8_0 scoring, shared by both kernels: a query row quantized per block of
 * 32 elements to int8 values qi (stored as int16) and f32 block scales qd
 * with the softmax scale folded in (qd = scale * absmax / 127). */
void kvs_attn_latent_quant_q(const float *q, int dk, float scale, int16_t *qi, float *qd);
/* Scores of R quantized queries against n q8_0 rows: s[r*n + t] =
 * sum over blocks b (in order) of fma((float)dot_b(qi_r, k_t), qd_r[b] * d_t[b], .)
 * (integer block dots are exact). simd selects the AVX2 path (tests);
 * scratch: kvs_attn_latent_scratch_floats(R, dk, dk) floats, aligned. */
void kvs_attn_latent_q8_scores(bool simd, const uint8_t *k, size_t k_row, int n, const int16_t *qi,
                               const float *qd, int R, int dk, float *s, float *scratch);
void kvs_attn_latent_q8_scores_avx2(const uint8_t *k, size_t k_row, int n, const int16_t *qi, const float *qd,
                                    int R, int dk, float *s, float *scratch);

#endif
