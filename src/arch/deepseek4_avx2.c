/* AVX2/FMA twins of the DeepSeek V4 attention's inner loops (dot product and
 * axpy over f32 rows, the 8-bit indexer scorer); entered only after
 * kvs_cpu()->avx2. The scalar references are ds4_dot_ref/ds4_axpy_ref/
 * ds4_iscore_q8_ref (deepseek4_attn.c); tests/test_deepseek4.c checks each
 * pair against the other (the indexer pair bit for bit). */
#include <immintrin.h>
#include <string.h>

#include "arch/deepseek4.h"

float ds4_dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s0 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void ds4_axpy_avx2(float *y, float a, const float *x, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* 8-bit indexer scores (see ds4_iscore_q8_ref for the exact operation order).
 * Each 32-byte key block is loaded once per group of 4 heads: |k| once, the
 * query signs per head (vpsignb), then vpmaddubsw (|k| x sign(k) q; pairs of
 * |127 x 127| cannot saturate) and vpmaddwd against ones give 8 exact int32
 * lanes of 4 elements each, scaled into f32 lanes with one FMA per block. The
 * 4 heads' lanes are reduced together by a hadd tree whose order matches the
 * reference's ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). */
/* lanes of the exact int32 dot of one key block (|k|, k) with a query block */
static inline __m256 q8_lanes(__m256i ak, __m256i kb, const int8_t *qb) {
    const __m256i p16 = _mm256_maddubs_epi16(ak, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)qb), kb));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

typedef struct { uint16_t d; int8_t qs[32]; } ds4_blk; /* the q8_0 block layout */

/* relu(v_h) w_h of one key row for 4 query heads: the exact integer block
 * dots scaled by the key's block scales (4 heads per loaded key block), the
 * hadd tree in the reference's order, the query scales; relu without a
 * branch (a data-dependent branch per head mispredicted half the time and
 * stalled the key stream): max(v, 0) w is +-0 where the reference adds 0
 * (the same sums; a NaN v gives 0 in both). */
static inline __m128 q8_key_heads(const ds4_blk *k, int32_t nb, const int8_t *q0, const int8_t *q1, const int8_t *q2,
                                  const int8_t *q3, __m128 vdq, __m128 vw) {
    /* the key stream is read once: fetch ahead */
    const char *pf = (const char *)(k + 16 * nb);
    _mm_prefetch(pf, _MM_HINT_T0);
    _mm_prefetch(pf + 64, _MM_HINT_T0);
    _mm_prefetch(pf + 128, _MM_HINT_T0);
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0;
    for (int32_t b = 0; b < nb; b++) {
        const __m256i kb = _mm256_loadu_si256((const __m256i *)k[b].qs);
        const __m256i ak = _mm256_abs_epi8(kb);
        const __m256 dk = _mm256_set1_ps(_cvtsh_ss(k[b].d));
        l0 = _mm256_fmadd_ps(q8_lanes(ak, kb, q0 + b * 32), dk, l0);
        l1 = _mm256_fmadd_ps(q8_lanes(ak, kb, q1 + b * 32), dk, l1);
        l2 = _mm256_fmadd_ps(q8_lanes(ak, kb, q2 + b * 32), dk, l2);
        l3 = _mm256_fmadd_ps(q8_lanes(ak, kb, q3 + b * 32), dk, l3);
    }
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(l0, l1), _mm256_hadd_ps(l2, l3));
    const __m128 v = _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)), vdq);
    return _mm_mul_ps(_mm_max_ps(v, _mm_setzero_ps()), vw);
}

void ds4_iscore_q8_avx2(const void *keys, int64_t n, const int8_t *q, const float *dq, const float *w, int32_t nih,
                        int32_t ihd, float *sc) {
    enum { MAXB = 128 }; /* ihd <= 4096 */
    const int32_t nb = ihd / 32;
    const ds4_blk *kk = keys;
    int8_t zq[MAXB * 32];
    memset(zq, 0, sizeof zq);
    for (int64_t j = 0; j < n; j++) sc[j] = 0;
    for (int32_t h0 = 0; h0 < nih; h0 += 4) {
        /* 4 heads at a time; the last group's missing heads read a zero query
         * (and weight 0: they add +0, which changes no sum that is not -0,
         * and these sums start at +0) */
        const int32_t nh = nih - h0 < 4 ? nih - h0 : 4;
        const int8_t *q0 = q + (int64_t)h0 * ihd, *q1 = nh > 1 ? q0 + ihd : zq, *q2 = nh > 2 ? q0 + 2 * ihd : zq,
                     *q3 = nh > 3 ? q0 + 3 * ihd : zq;
        float d4[4] = {0, 0, 0, 0}, w4[4] = {0, 0, 0, 0};
        for (int32_t hh = 0; hh < nh; hh++) { d4[hh] = dq[h0 + hh]; w4[hh] = w[h0 + hh]; }
        const __m128 vdq = _mm_loadu_ps(d4), vw = _mm_loadu_ps(w4);
        int64_t j = 0;
        /* 4 keys at a time: their head terms transposed to one vector per
         * head, added to the 4 sums head by head (the reference's order) -
         * no serial scalar chain per key */
        for (; j + 4 <= n; j += 4) {
            __m128 m0 = q8_key_heads(kk + j * nb, nb, q0, q1, q2, q3, vdq, vw);
            __m128 m1 = q8_key_heads(kk + (j + 1) * nb, nb, q0, q1, q2, q3, vdq, vw);
            __m128 m2 = q8_key_heads(kk + (j + 2) * nb, nb, q0, q1, q2, q3, vdq, vw);
            __m128 m3 = q8_key_heads(kk + (j + 3) * nb, nb, q0, q1, q2, q3, vdq, vw);
            _MM_TRANSPOSE4_PS(m0, m1, m2, m3);
            __m128 acc = _mm_loadu_ps(sc + j);
            acc = _mm_add_ps(acc, m0);
            acc = _mm_add_ps(acc, m1);
            acc = _mm_add_ps(acc, m2);
            acc = _mm_add_ps(acc, m3);
            _mm_storeu_ps(sc + j, acc);
        }
        for (; j < n; j++) {
            float m[4];
            _mm_storeu_ps(m, q8_key_heads(kk + j * nb, nb, q0, q1, q2, q3, vdq, vw));
            float acc = sc[j];
            for (int32_t hh = 0; hh < nh; hh++) acc += m[hh];
            sc[j] = acc;
        }
    }
}

/* 8 elements of a key row (f16 or f32) as floats */
static inline __m256 load8(bool f16, const uint8_t *row, int64_t i) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * i)))
               : _mm256_loadu_ps((const float *)row + i);
}

static inline float hsum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

/* Fetch a whole key row ahead of its use: CSA rows are the indexer's top-k,
 * scattered over a cache larger than L2/L3 at long depths, which the hardware
 * prefetcher cannot predict. */
static inline void prefetch_row(const uint8_t *const *rows, int64_t k, int64_t nk, int64_t bytes) {
    if (k >= nk) return;
    for (int64_t i = 0; i < bytes; i += 64) _mm_prefetch((const char *)rows[k] + i, _MM_HINT_T0);
}

enum { MQA_PF = 2 }; /* rows ahead */

/* Scores of all heads against each row: the row's 8-element pieces are
 * converted once and multiplied into 4 heads at a time. */
void ds4_mqa_scores_avx2(bool f16, const uint8_t *const *rows, int64_t nk, const float *q, int64_t H, int64_t hd,
                         float scale, float *scores) {
    const int64_t rbytes = hd * (f16 ? 2 : 4);
    for (int64_t k = 0; k < MQA_PF; k++) prefetch_row(rows, k, nk, rbytes);
    for (int64_t k = 0; k < nk; k++) {
        const uint8_t *row = rows[k];
        prefetch_row(rows, k + MQA_PF, nk, rbytes);
        int64_t h = 0;
        for (; h + 4 <= H; h += 4) {
            const float *q0 = q + h * hd, *q1 = q0 + hd, *q2 = q1 + hd, *q3 = q2 + hd;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t i = 0; i < hd; i += 8) {
                const __m256 kv = load8(f16, row, i);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + i), kv, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + i), kv, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q2 + i), kv, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q3 + i), kv, a3);
            }
            scores[h * nk + k] = hsum8(a0) * scale;
            scores[(h + 1) * nk + k] = hsum8(a1) * scale;
            scores[(h + 2) * nk + k] = hsum8(a2) * scale;
            scores[(h + 3) * nk + k] = hsum8(a3) * scale;
        }
        for (; h < H; h++) {
            const float *qh = q + h * hd;
            __m256 a = _mm256_setzero_ps();
            for (int64_t i = 0; i < hd; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i), load8(f16, row, i), a);
            scores[h * nk + k] = hsum8(a) * scale;
        }
    }
}

/* o_h = sum_k p_hk row_k, KC keys at a time: for each 8-element slice of 4
 * heads' outputs, the accumulators stay in registers over the chunk's keys
 * (one load and store of o per chunk instead of per key: the per-key
 * read-modify-write of all H x hd outputs was store-bound). Each element
 * still accumulates its keys in order, one FMA per key. */
void ds4_mqa_accum_avx2(bool f16, const uint8_t *const *rows, int64_t nk, const float *p, int64_t H, int64_t hd,
                        float *o) {
    enum { KC = 8 };
    memset(o, 0, sizeof(float) * (size_t)(H * hd));
    const int64_t rbytes = hd * (f16 ? 2 : 4);
    for (int64_t k = 0; k < KC; k++) prefetch_row(rows, k, nk, rbytes);
    for (int64_t k0 = 0; k0 < nk; k0 += KC) {
        const int64_t k1 = k0 + KC < nk ? k0 + KC : nk;
        for (int64_t k = k0 + KC; k < k1 + KC; k++) prefetch_row(rows, k, nk, rbytes);
        int64_t h = 0;
        for (; h + 4 <= H; h += 4) {
            float *o0 = o + h * hd, *o1 = o0 + hd, *o2 = o1 + hd, *o3 = o2 + hd;
            const float *p0 = p + h * nk, *p1 = p0 + nk, *p2 = p1 + nk, *p3 = p2 + nk;
            for (int64_t i = 0; i < hd; i += 8) {
                __m256 a0 = _mm256_loadu_ps(o0 + i), a1 = _mm256_loadu_ps(o1 + i), a2 = _mm256_loadu_ps(o2 + i),
                       a3 = _mm256_loadu_ps(o3 + i);
                for (int64_t k = k0; k < k1; k++) {
                    const __m256 kv = load8(f16, rows[k], i);
                    a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + k), kv, a0);
                    a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + k), kv, a1);
                    a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p2 + k), kv, a2);
                    a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p3 + k), kv, a3);
                }
                _mm256_storeu_ps(o0 + i, a0);
                _mm256_storeu_ps(o1 + i, a1);
                _mm256_storeu_ps(o2 + i, a2);
                _mm256_storeu_ps(o3 + i, a3);
            }
        }
        for (; h < H; h++) {
            float *oh = o + h * hd;
            const float *ph = p + h * nk;
            for (int64_t i = 0; i < hd; i += 8) {
                __m256 a = _mm256_loadu_ps(oh + i);
                for (int64_t k = k0; k < k1; k++)
                    a = _mm256_fmadd_ps(_mm256_broadcast_ss(ph + k), load8(f16, rows[k], i), a);
                _mm256_storeu_ps(oh + i, a);
            }
        }
    }
}
