/* AVX-512 (F/BW/VL/DQ) fused decode attention: attn_simd.h's `fused` at 16
 * lanes, selected by kvs_attn_vec_get() when kvs_cpu()->avx512. It reads
 * the same stored rows as the AVX2 kernel (attn_avx2.c) in place and keeps
 * its structure; the 32 registers and the wider lanes change the blocking:
 *  - scores: 4 query rows x 4 keys per register block (16 accumulators,
 *    4 converted key vectors, 1 query vector); a query row group is at most
 *    4 rows, so GQA groups of 3, 4, 6, 7 and 8 heads run as 3, 4, 3+3, 4+3
 *    and 4+4;
 *  - values: up to 4 rows x 4 vectors (64 channels) per key, with two keys
 *    per step into two accumulator sets where fewer than 8 accumulators
 *    would wait on FMA latency;
 *  - rotated-codebook codes (core/tq.h) decode 16 at a time with one vpermps
 *    over the codebook held in a register (all 16 entries of the 4-bit one;
 *    the 2- and 3-bit ones repeated, so the index bits above the code need
 *    no masking).
 * Block scales (q8_0, q4_0, tq) are gathered and converted 16 at a time
 * once per step, so the inner loops broadcast them from memory. q8_0/q4_0
 * keys are scored in f32 against the query rows the caller passes, which
 * already hold the int8-rounded query (qi * qs), so the scores are the
 * integer kernel's up to f32 rounding. Per-channel (KIVI) rows, head sizes
 * that are not multiples of 64 (or above 512) and anything else this file
 * does not take go to the AVX2 kernel (per-channel codes at 16 lanes
 * measured no faster: their unpacking is shift and shuffle work, which
 * 256-bit code issues on three ports and 512-bit code on two). Every key's
 * score is summed by the same tree whether it is one of a block of 4 or a
 * tail key (the tail repeats its last row in the unused slots), so a score
 * does not depend on the chunking. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attn/attn_rows.h"
#include "attn/attn_simd.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/exp_avx512.h"
#include "core/hsum_avx512.h"
#include "core/tq.h"
#include "core/tq_tables.h"

#define ATTN512_KB 4 /* keys per score block */
#define ATTN_SUB 64   /* keys per step of the fused kernel */

static bool type_ok(uint32_t t) {
    return t == KVS_TYPE_F32 || t == KVS_TYPE_F16 || t == KVS_TYPE_BF16 || t == KVS_TYPE_Q8_0 || t == KVS_TYPE_Q4_0 ||
           kvs_row_is_tq(t);
}

/* ---- 16 elements [c, c+16) of a stored row as f32 (c % 16 == 0) ---- */

/* The 16 codebook values for codes of sub-block elements [i, i+16) (i = 0
 * or 16) of a sub-block of `bits` bits at q, unscaled. vpermps reads index
 * bits 0..3 only; the 2-bit (3-bit) codebook is repeated 4 (2) times, so
 * bits above the code select the same centroid and need no mask. The high
 * code bits are rotated into place (a rotate by 2j - 2, or j - 2 for the
 * one-bit plane, modulo 32, moves lane j's bits to bits 2..3) and merged
 * with the low two bits in one bit select. */
KVS_AI __m512 tq_load16(const int bits, const uint8_t *q, int i) {
    const __m512i sh2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i low = _mm512_srlv_epi32(_mm512_broadcastd_epi32(_mm_loadu_si32(q + (i >> 2))), sh2);
    if (bits == 2) return _mm512_permutexvar_ps(low, _mm512_broadcast_f32x4(_mm_loadu_ps(kvs_tq_cb2)));
    const __m512i three = _mm512_set1_epi32(3);
    if (bits == 3) {
        const __m512i rot1 = _mm512_setr_epi32(30, 31, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13);
        const __m512i hb = _mm512_rorv_epi32(_mm512_broadcastd_epi32(_mm_loadu_si16(q + 8 + (i >> 3))), rot1);
        return _mm512_permutexvar_ps(_mm512_ternarylogic_epi32(low, hb, three, 0xE4),
                                     _mm512_broadcast_f32x8(_mm256_loadu_ps(kvs_tq_cb3)));
    }
    const __m512i rot2 = _mm512_setr_epi32(30, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28);
    const __m512i h2 = _mm512_rorv_epi32(_mm512_broadcastd_epi32(_mm_loadu_si32(q + 8 + (i >> 2))), rot2);
    return _mm512_permutexvar_ps(_mm512_ternarylogic_epi32(low, h2, three, 0xE4), _mm512_loadu_ps(kvs_tq_cb4));
}

/* Elements per scale block of a format (the loops hoist the scale per block). */
KVS_AI int block_elems(const uint32_t type) {
    return kvs_row_is_tq(type) ? KVS_TQ_BLOCK : type == KVS_TYPE_Q8_0 || type == KVS_TYPE_Q4_0 ? 32 : 16;
}
/* Scale blocks per row of n elements (0: the format has no scales). */
KVS_AI int scale_blocks(const uint32_t type, int n) {
    return kvs_row_is_tq(type) || type == KVS_TYPE_Q8_0 || type == KVS_TYPE_Q4_0 ? n / block_elems(type) : 0;
}
/* Bytes of one scale block (its f16 scale first). */
KVS_AI size_t scale_block_bytes(const uint32_t type) {
    return type == KVS_TYPE_Q8_0 ? 34 : type == KVS_TYPE_Q4_0 ? 18 : kvs_row_tq_block_bytes(type);
}
#define ATTN512_MAX_SCALES (ATTN_SUB * 16) /* rows of a step x blocks of a <= 512 row */

/* The f32 block scales of rows [0, n) at p (row bytes apart), nbl per row:
 * s[t * nbl + b]. Gathered and converted 16 at a time (nbl a power of two;
 * a gather lane reads the f16 scale and the 2 bytes after it, which the
 * block holds), so the kernels' inner loops broadcast a scale straight from
 * memory. */
KVS_AI void row_scales(const uint32_t type, const uint8_t *p, size_t row, int n, int nbl, float *s) {
    const int total = n * nbl;
    if ((nbl & (nbl - 1)) == 0 && (size_t)n * row < (1u << 30)) {
        const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m512i vrow = _mm512_set1_epi32((int)row), vbb = _mm512_set1_epi32((int)scale_block_bytes(type));
        const __m512i lowb = _mm512_set1_epi32(nbl - 1);
        const __m128i sh = _mm_cvtsi32_si128(__builtin_ctz((unsigned)nbl));
        for (int e = 0; e < total; e += 16) {
            const __m512i idx = _mm512_add_epi32(iota, _mm512_set1_epi32(e));
            const __m512i off = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srl_epi32(idx, sh), vrow),
                                                 _mm512_mullo_epi32(_mm512_and_si512(idx, lowb), vbb));
            const __mmask16 keep = (__mmask16)(total - e >= 16 ? 0xFFFFu : (1u << (total - e)) - 1u);
            const __m512i w = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), keep, off, p, 1);
            _mm512_storeu_ps(s + e, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(w)));
        }
        return;
    }
    const size_t bb = scale_block_bytes(type);
    for (int t = 0; t < n; t++)
        for (int b = 0; b < nbl; b++) s[t * nbl + b] = kvs_row_f16_at(p + (size_t)t * row + (size_t)b * bb);
}
/* The scale of the block holding element c of a row whose scales are at s. */
KVS_AI __m512 block_scale(const uint32_t type, const float *s, int c) {
    if (scale_blocks(type, KVS_TQ_BLOCK) == 0) return _mm512_setzero_ps();
    return _mm512_set1_ps(s[c / block_elems(type)]);
}

/* tq elements [c, c+16) before the block scale: the centroids of their codes.
 * Block: f16 s, sub-block 0 (b0 bits), sub-block 1 (b1 bits). */
KVS_AI __m512 tq_codes16(const uint32_t type, const uint8_t *p, int c) {
    const uint8_t *b = p + (size_t)(c >> 6) * kvs_row_tq_block_bytes(type);
    const int j = c & 63;
    if (j < 32) return tq_load16(kvs_row_tq_bits0(type), b + 2, j);
    return tq_load16(kvs_row_tq_bits1(type), b + 2 + kvs_row_tq_sub_bytes(kvs_row_tq_bits0(type)), j - 32);
}

/* Elements [c, c+16) with the block's scale d already loaded. */
KVS_AI __m512 load16s(const uint32_t type, const uint8_t *p, int c, __m512 d) {
    switch (type) {
    case KVS_TYPE_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p + 2 * (size_t)c)));
    case KVS_TYPE_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p + 2 * (size_t)c))), 16));
    case KVS_TYPE_Q8_0: { /* block: f16 d, 32 x int8 */
        const uint8_t *b = p + (size_t)(c >> 5) * 34;
        const __m512i w = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(b + 2 + (c & 31))));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(w), d);
    }
    case KVS_TYPE_Q4_0: { /* block: f16 d, 16 bytes; element j < 16 low nibble of byte j, j >= 16 high of j-16 */
        const uint8_t *b = p + (size_t)(c >> 5) * 18;
        __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(b + 2)));
        w = (c & 31) < 16 ? _mm512_and_si512(w, _mm512_set1_epi32(15)) : _mm512_srli_epi32(w, 4);
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(w, _mm512_set1_epi32(8))), d);
    }
    case KVS_TYPE_TQ2: case KVS_TYPE_TQ2_5: case KVS_TYPE_TQ3: case KVS_TYPE_TQ3_5: case KVS_TYPE_TQ4:
        return _mm512_mul_ps(tq_codes16(type, p, c), d); /* x = s * cb[code] */
    default: return _mm512_loadu_ps((const float *)(const void *)(p + 4 * (size_t)c));
    }
}

/* ---- scores: RR (1..4) query rows x 4 keys per register block ----
 * A block's 16 accumulators are folded in two steps: here to one vector
 * per row whose 128-bit lane L holds the 4 keys' sums over channel lanes
 * [4L, 4L+4) (pairs within lanes), then, for 4 blocks (16 keys) at once, the
 * 4 lanes of each key are added across a lane transpose, giving 16 scores
 * in one vector. Every key's lanes go through the same tree of adds. */

#define ATTN512_QS 512 /* floats between the copied query rows (dk <= 512) */

/* The folded sums of 4 keys (rows kr + j * k_row) against RR query rows
 * (qb + r * ATTN512_QS), key j's block scales at ks + j * nbl. POST (tq
 * keys of one block, dk == 64): unscaled
 * centroids; the block scale multiplies each key's score later instead of
 * every element. */
KVS_AI void score_block(const uint32_t type, const int RR, const bool POST, const uint8_t *kr, size_t k_row,
                        const float *ks, int nbl, const float *qb, int dk, __m512 *y) {
    enum { KB = ATTN512_KB };
    __m512 a[4][KB];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < KB; j++) a[r][j] = _mm512_setzero_ps();
    for (int cb = 0; cb < dk; cb += block_elems(type)) {
        __m512 d[KB];
        _Pragma("GCC unroll 4")
        for (int j = 0; j < KB; j++) d[j] = POST ? _mm512_setzero_ps() : block_scale(type, ks + j * nbl, cb);
        _Pragma("GCC unroll 4")
        for (int c = cb; c < cb + block_elems(type); c += 16) {
            __m512 x[KB];
            _Pragma("GCC unroll 4")
            for (int j = 0; j < KB; j++)
                x[j] = POST ? tq_codes16(type, kr + (size_t)j * k_row, c) : load16s(type, kr + (size_t)j * k_row, c, d[j]);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++) {
                const __m512 qv = _mm512_loadu_ps(qb + r * ATTN512_QS + c);
                _Pragma("GCC unroll 4")
                for (int j = 0; j < KB; j++) a[r][j] = _mm512_fmadd_ps(qv, x[j], a[r][j]);
            }
        }
    }
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++) y[r] = kvs_fold_keys512(a[r][0], a[r][1], a[r][2], a[r][3]);
}

KVS_AI void scores_rows(const uint32_t type, const int RR, const bool POST, const uint8_t *k, size_t k_row, int n,
                        const float *const *q, float scale, int dk, float *sc, size_t sc_stride, const uint8_t *pf,
                        int pf_n) {
    enum { KB = ATTN512_KB, NB = ATTN_SUB / ATTN512_KB };
    float qb[4 * ATTN512_QS] __attribute__((aligned(64)));
    __m512 ys[4][NB + 3]; /* folded blocks per row, zero-padded to a multiple of 4 */
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++) memcpy(qb + r * ATTN512_QS, q[r], sizeof(float) * (size_t)dk);
    const int nbl = scale_blocks(type, dk);
    float kscale[ATTN512_MAX_SCALES + 16];
    if (nbl) row_scales(type, k, k_row, n, nbl, kscale);
    const int nfull = n / KB, nb = (n + KB - 1) / KB;
    for (int b = 0; b < nfull; b++) {
        const int t = b * KB;
        if (t < pf_n) kvs_row_prefetch(pf, k_row, t, KB < pf_n - t ? KB : pf_n - t);
        __m512 y[4];
        score_block(type, RR, POST, k + (size_t)t * k_row, k_row, kscale + t * nbl, nbl, qb, dk, y);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) ys[r][b] = y[r];
    }
    if (nb > nfull) { /* tail keys: their rows, the last repeated, through the same block */
        uint8_t tail[KB * 4 * ATTN512_QS] __attribute__((aligned(64))); /* 4 rows of <= 512 f32 */
        const int m = n - nfull * KB;
        const size_t rb = kvs_row_bytes((kvs_dtype)type, dk); /* the bytes a key row holds (k_row may span heads) */
        float tscale[KB * 16];
        for (int j = 0; j < KB; j++) {
            const int key = nfull * KB + (j < m ? j : m - 1);
            memcpy(tail + (size_t)j * rb, k + (size_t)key * k_row, rb);
            if (nbl) memcpy(tscale + j * nbl, kscale + key * nbl, sizeof(float) * (size_t)nbl);
        }
        __m512 y[4];
        score_block(type, RR, POST, tail, rb, tscale, nbl, qb, dk, y);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) ys[r][nfull] = y[r];
    }
    for (int b = nb; b % 4 != 0; b++)
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) ys[r][b] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 4) {
        const int t = b * KB, m = n - t < 16 ? n - t : 16;
        __m512 ks = _mm512_set1_ps(scale); /* softmax scale, times the key block scales with POST */
        const __mmask16 keep = (__mmask16)(m == 16 ? 0xFFFFu : (1u << m) - 1u);
        if (POST) ks = _mm512_mul_ps(ks, _mm512_maskz_loadu_ps(keep, kscale + t)); /* one block per key */
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++)
            _mm512_mask_storeu_ps(sc + (size_t)r * sc_stride + (size_t)t, keep,
                                  _mm512_mul_ps(ks, kvs_fold_lanes512(ys[r][b], ys[r][b + 1], ys[r][b + 2], ys[r][b + 3])));
    }
}

KVS_AI void scores_all(const uint32_t type, const uint8_t *k, size_t k_row, int n, const float *const *q, int R,
                       float scale, int dk, float *sc, size_t sc_stride, const uint8_t *pf, int pf_n) {
    for (int r0 = 0; r0 < R;) {
        const int rr = kvs_row_group(R, r0);
        float *o = sc + (size_t)r0 * sc_stride;
        const int pn = r0 == 0 ? pf_n : 0; /* the first pass over the keys asks for the next ones */
        if (kvs_row_is_tq(type) && dk == KVS_TQ_BLOCK) {
            switch (rr) {
            case 4: scores_rows(type, 4, true, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            case 3: scores_rows(type, 3, true, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            case 2: scores_rows(type, 2, true, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            default: scores_rows(type, 1, true, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            }
        } else {
            switch (rr) {
            case 4: scores_rows(type, 4, false, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            case 3: scores_rows(type, 3, false, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            case 2: scores_rows(type, 2, false, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            default: scores_rows(type, 1, false, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn); break;
            }
        }
        r0 += rr;
    }
}

/* ---- acc += p V: RR (1..4) rows x 4 vectors of 16 channels [c, c+64) ---- */

/* POST (tq values): p already holds p * s of the 64-channel block per key,
 * so the rows are the bare centroids. */
KVS_AI __m512 vload16(const uint32_t type, const bool POST, const uint8_t *row, const float *vs, int c) {
    return POST ? tq_codes16(type, row, c) : load16s(type, row, c, block_scale(type, vs, c));
}

KVS_AI void vacc_block(const uint32_t type, const int RR, const bool POST, const uint8_t *v, size_t v_row,
                       const float *vs, int nbl, int n, int c, const float *p, size_t p_stride, float *acc,
                       size_t acc_stride, const uint8_t *pf, int pf_n) {
    enum { CW = 4 };
    const int KU = RR * CW < 8 ? 2 : 1; /* keys per step: >= 8 accumulators in flight */
    __m512 a[2][4][CW];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < CW; j++) {
            a[0][r][j] = _mm512_loadu_ps(acc + (size_t)r * acc_stride + (size_t)(c + 16 * j));
            if (KU == 2) a[1][r][j] = _mm512_setzero_ps();
        }
    int t = 0;
    for (; t + KU <= n; t += KU) {
        if (t < pf_n) kvs_row_prefetch(pf, v_row, t, KU < pf_n - t ? KU : pf_n - t);
        _Pragma("GCC unroll 2")
        for (int u = 0; u < KU; u++) {
            const uint8_t *row = v + (size_t)(t + u) * v_row;
            __m512 x[CW];
            _Pragma("GCC unroll 4")
            for (int j = 0; j < CW; j++) x[j] = vload16(type, POST, row, vs + (t + u) * nbl, c + 16 * j);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++) {
                const __m512 w = _mm512_set1_ps(p[(size_t)r * p_stride + (size_t)(t + u)]);
                _Pragma("GCC unroll 4")
                for (int j = 0; j < CW; j++) a[u][r][j] = _mm512_fmadd_ps(w, x[j], a[u][r][j]);
            }
        }
    }
    if (t < pf_n) kvs_row_prefetch(pf, v_row, t, pf_n - t);
    for (; t < n; t++) { /* odd key left by the two-key steps */
        const uint8_t *row = v + (size_t)t * v_row;
        __m512 x[CW];
        _Pragma("GCC unroll 4")
        for (int j = 0; j < CW; j++) x[j] = vload16(type, POST, row, vs + t * nbl, c + 16 * j);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) {
            const __m512 w = _mm512_set1_ps(p[(size_t)r * p_stride + (size_t)t]);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < CW; j++) a[0][r][j] = _mm512_fmadd_ps(w, x[j], a[0][r][j]);
        }
    }
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < CW; j++)
            _mm512_storeu_ps(acc + (size_t)r * acc_stride + (size_t)(c + 16 * j),
                             KU == 2 ? _mm512_add_ps(a[0][r][j], a[1][r][j]) : a[0][r][j]);
}

KVS_AI void vacc_all(const uint32_t type, const uint8_t *v, size_t v_row, int n, const float *p, size_t p_stride,
                     int R, float *acc, size_t acc_stride, int dv, const uint8_t *pf, int pf_n) {
    const int nbl = scale_blocks(type, dv);
    float vscale[ATTN512_MAX_SCALES + 16];
    if (nbl) row_scales(type, v, v_row, n, nbl, vscale);
    /* tq rows: the 64 channels [c, c + 64) are one block, so p * s (per
     * row and key) multiplies the bare centroids */
    const bool post = kvs_row_is_tq(type);
    float ps[KVS_ATTN_FUSED_MAX_ROWS * ATTN_SUB] __attribute__((aligned(64)));
    const float *const p_in = p;
    const size_t in_stride = p_stride;
    for (int c = 0; c < dv; c += 64) {
        if (post) {
            const int blk = c / KVS_TQ_BLOCK;
            float sb[ATTN_SUB] __attribute__((aligned(64)));
            for (int t = 0; t < n; t++) sb[t] = vscale[t * nbl + blk];
            for (int r = 0; r < R; r++)
                for (int t = 0; t < n; t += 16) {
                    const __mmask16 keep = (__mmask16)(n - t >= 16 ? 0xFFFFu : (1u << (n - t)) - 1u);
                    _mm512_mask_storeu_ps(ps + r * ATTN_SUB + t, keep,
                                          _mm512_mul_ps(_mm512_maskz_loadu_ps(keep, p_in + (size_t)r * in_stride + t),
                                                        _mm512_maskz_loadu_ps(keep, sb + t)));
                }
            p = ps;
            p_stride = ATTN_SUB;
        }
        const bool first = c == 0; /* the first pass over the rows asks for the next ones */
        for (int r0 = 0; r0 < R;) {
            const int rr = kvs_row_group(R, r0);
            const float *pr = p + (size_t)r0 * p_stride;
            float *ar = acc + (size_t)r0 * acc_stride;
            const int pn = first && r0 == 0 ? pf_n : 0;
#define VACC(RR, POST) vacc_block(type, RR, POST, v, v_row, vscale, nbl, n, c, pr, p_stride, ar, acc_stride, pf, pn)
            if (post) {
                switch (rr) {
                case 4: VACC(4, true); break;
                case 3: VACC(3, true); break;
                case 2: VACC(2, true); break;
                default: VACC(1, true); break;
                }
            } else {
                switch (rr) {
                case 4: VACC(4, false); break;
                case 3: VACC(3, false); break;
                case 2: VACC(2, false); break;
                default: VACC(1, false); break;
                }
            }
#undef VACC
            r0 += rr;
        }
    }
}

/* ---- online softmax over one chunk's scores ---- */

static void softmax_update(float *st, float *sc, int n, int dv) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(sc + i));
    const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1u);
    if (i < n) mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, sc + i));
    const float tmax = _mm512_reduce_max_ps(mv);
    const float m_new = tmax > st[0] ? tmax : st[0];
    if (st[0] != -INFINITY && m_new > st[0]) { /* rescale the running state when the max grows */
        const float corr = expf(st[0] - m_new);
        st[1] *= corr;
        const __m512 vc = _mm512_set1_ps(corr);
        for (int c = 0; c < dv; c += 16) _mm512_storeu_ps(st + 2 + c, _mm512_mul_ps(vc, _mm512_loadu_ps(st + 2 + c)));
    }
    st[0] = m_new;
    const __m512 vm = _mm512_set1_ps(m_new);
    __m512 acc = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 e = kvs_exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + i), vm));
        _mm512_storeu_ps(sc + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) { /* the tail in the same lanes, padded with e^-inf = 0 */
        const __m512 e = kvs_exp512(_mm512_sub_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, sc + i), vm));
        _mm512_mask_storeu_ps(sc + i, tail, e);
        acc = _mm512_add_ps(acc, e);
    }
    st[1] += _mm512_reduce_add_ps(acc);
}

/* ---- fused decode over stored rows: one step of up to 64 keys ---- */

static void fused_scores(uint32_t type, const uint8_t *k, size_t k_row, int n, const float *const *q, int R,
                         float scale, int dk, float *sc, size_t ss, const uint8_t *pf, int pf_n) {
#define SCORES(T) scores_all(T, k, k_row, n, q, R, scale, dk, sc, ss, pf, pf_n)
    KVS_ROW_TYPE_DISPATCH(type, SCORES);
#undef SCORES
}

static void fused_values(uint32_t type, const uint8_t *v, size_t v_row, int n, const float *p, size_t ps, int R,
                         float *acc, size_t acc_stride, int dv, const uint8_t *pf, int pf_n) {
#define VALUES(T) vacc_all(T, v, v_row, n, p, ps, R, acc, acc_stride, dv, pf, pf_n)
    KVS_ROW_TYPE_DISPATCH(type, VALUES);
#undef VALUES
}

bool kvs_attn_fused_avx512(const kvs_attn_rows *rw, const float *const *qrows, int R, float scale, float *state,
                           size_t state_stride, int dk, int dv, float *scratch) {
    if (rw->k_type == KVS_TYPE_COUNT || !type_ok(rw->k_type) || !type_ok(rw->v_type) || dk % 64 != 0 || dv % 64 != 0 ||
        dk > ATTN512_QS)
        return kvs_attn_vec_avx2()->fused(rw, qrows, R, scale, state, state_stride, dk, dv, scratch);
    if (R < 1 || R > KVS_ATTN_FUSED_MAX_ROWS || rw->n < 1) return false;
    const int n = rw->n;
    const size_t ss = (size_t)n;
    float *sc = scratch;
    if (rw->qi && kvs_row_is_tq(rw->k_type) && R * (dk / KVS_TQ_BLOCK) <= KVS_ATTN_TQ_VNNI_ROW_BLOCKS &&
        kvs_cpu()->avx512vnni) {
        kvs_attn_tq_scores_vnni(rw, R, dk, scale, sc, ss);
    } else {
        for (int t0 = 0; t0 < n; t0 += ATTN_SUB) {
            const int m = n - t0 < ATTN_SUB ? n - t0 : ATTN_SUB;
            fused_scores(rw->k_type, rw->k + (size_t)t0 * rw->k_row, rw->k_row, m, qrows, R, scale, dk, sc + t0, ss,
                         kvs_row_next(rw->pf_k, rw->k_row, t0), kvs_row_next_n(rw->pf_k, rw->pf_n, t0, m));
        }
    }
    for (int r = 0; r < R; r++) softmax_update(state + (size_t)r * state_stride, sc + (size_t)r * n, n, dv);
    for (int t0 = 0; t0 < n; t0 += ATTN_SUB) {
        const int m = n - t0 < ATTN_SUB ? n - t0 : ATTN_SUB;
        fused_values(rw->v_type, rw->v + (size_t)t0 * rw->v_row, rw->v_row, m, sc + t0, ss, R, state + 2, state_stride,
                     dv, kvs_row_next(rw->pf_v, rw->v_row, t0), kvs_row_next_n(rw->pf_v, rw->pf_n, t0, m));
    }
    return true;
}
