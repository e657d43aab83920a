/* Many-row (prefill) kernels: Y(nt, nr) = X(nt, n) . W(nr, n)^T. A template
 * included by gemm_avx2.c (AVX2, GEMM_VNNI 0) and gemm_vnni.c (AVX-512 VL
 * with VNNI on 256-bit vectors, GEMM_VNNI 1), which name the entry points
 * kvs_<type>_gemm_<GEMM_SFX>.
 *
 * Each group of 8 weight rows is decoded once per call into a panel in the
 * caller's scratch: the quants as unsigned bytes (AVX2 keeps q8_0 signed)
 * with 8 rows interleaved per 32-bit lane (lane r of step k holds elements
 * 4k..4k+3 of row r), the block scales as floats / small integers. The panel
 * then meets every activation row: one broadcast dword of the activation (4
 * elements of one token) times one panel vector gives 4-element partial dots
 * of all 8 rows at once, so a weight block decoded from memory once serves
 * all nt rows and each activation load serves 8 output columns. AVX2 sums
 * maddubs products in i16 as long as that cannot overflow, then widens; VNNI
 * accumulates u8 x s8 in i32 directly (vpdpbusd). The i16 sums use the
 * saturating add, which equals the plain one since they cannot overflow, but
 * which GCC does not reassociate: with the plain add it computed all of a
 * block's products first and spilled them to the stack. Register tile: 8 columns x
 * GEMM_T tokens (4 with AVX2's 16 vector registers, 8 with AVX-512's 32);
 * with VNNI from 16 tokens on, two 8-row groups in 512-bit vectors (16
 * columns x 8 tokens: leg_tile16 over x8-packed weights, kq_tile16 over two
 * K-quant panels).
 * The offsets of the unsigned formats (q4_0's -8, q6_K's -32, VNNI q8_0's
 * +128 bias, ...) are subtracted exactly in integers using the activation
 * block sums; the min terms (q4_1, q4_K, ...) are added in float, both as the
 * references do. Results match vec_dot_ref within float reassociation. */
#include <immintrin.h>
#include <string.h>

#include "core/dtype.h"
#include "core/f16.h"
#include "core/quant_internal.h"

#ifndef GEMM_VNNI
#error "define GEMM_VNNI (0 or 1) and GEMM_SFX before including gemm_impl.h"
#endif
#if GEMM_VNNI
#define GEMM_T 8
#else
#define GEMM_T 4
#endif
#define GEMM_CAT2(a, b) a##b
#define GEMM_CAT(a, b) GEMM_CAT2(a, b)
#define GEMM_FN(T) GEMM_CAT(kvs_##T##_gemm_, GEMM_SFX)

/* x8 records read ahead by the tiles (prefetched into L1): a batched decode
 * step meets each weight block once, straight from DRAM. */
#define GEMM_PF 8
#define AI static inline __attribute__((always_inline))
#define HF(h) _cvtsh_ss(h)

AI __m256i ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
AI __m256i bc32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
AI uint16_t rd16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* v, kept in a register as it is: an i32 sum chain GCC may not reassociate
 * (there is no saturating i32 add to say it, see above). */
AI __m256i in_order(__m256i v) {
    __asm__("" : "+x"(v));
    return v;
}

/* r[k] <- dword k of r[0..7] (an 8x8 transpose of 32-bit elements). */
AI void transpose8(__m256i r[8]) {
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* 16 packed bytes -> 32 nibbles in element order (low nibbles first). */
AI __m256i nib32(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}
/* Bit j of the 32-bit little-endian mask at p -> byte j = 0x10 (else 0). */
AI __m256i hbit16(const uint8_t *p) {
    uint32_t m;
    memcpy(&m, p, 4);
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(0x10));
}

/* Writes an 8-column result: all 8 when the panel is full, else nrows. */
AI void store8(float *y, __m256 v, int nrows) {
    if (nrows == 8) {
        _mm256_storeu_ps(y, v);
    } else {
        float t[8];
        _mm256_storeu_ps(t, v);
        for (int i = 0; i < nrows; i++) y[i] = t[i];
    }
}

/* ================================================================ 32-blocks
 * Panel block (8 rows): 8 steps x 32 quant bytes, then d[8] (float), then for
 * q4_1/q5_1 m[8]. Activations: q8_0 rows (xaux gives d as float and the quant
 * sum of each block) or q8_1 rows (xaux gives d and s as floats). */

enum { LEG_PB = KVS_GEMM_PANEL_LEGACY, LEG_PB_M = KVS_GEMM_PANEL_LEGACY_M };
_Static_assert(LEG_PB == 256 + 32 && LEG_PB_M == 256 + 64, "legacy panel layout");

typedef enum { DEC_Q4_0, DEC_Q4_1, DEC_Q5_0, DEC_Q5_1, DEC_Q8_0, DEC_MXFP4 } leg_dec;

AI __m256i leg_decode(const uint8_t *blk, leg_dec dec) {
    switch (dec) {
    case DEC_Q4_0: return nib32(((const kvs_block_q4_0 *)blk)->qs);
    case DEC_Q4_1: return nib32(((const kvs_block_q4_1 *)blk)->qs);
    case DEC_Q5_0: {
        const kvs_block_q5_0 *b = (const kvs_block_q5_0 *)blk;
        return _mm256_or_si256(nib32(b->qs), hbit16(b->qh));
    }
    case DEC_Q5_1: {
        const kvs_block_q5_1 *b = (const kvs_block_q5_1 *)blk;
        return _mm256_or_si256(nib32(b->qs), hbit16(b->qh));
    }
    case DEC_MXFP4: { /* the doubled E2M1 value + 16: unsigned 4..28, offset subtracted as shift 4 */
        const __m128i tab = _mm_add_epi8(_mm_loadu_si128((const __m128i *)kvs_mxfp4_values), _mm_set1_epi8(16));
        return _mm256_shuffle_epi8(_mm256_set_m128i(tab, tab), nib32(((const kvs_block_mxfp4 *)blk)->qs));
    }
    default: /* q8_0: signed for AVX2's sign trick, +128 (unsigned) for vpdpbusd */
        return GEMM_VNNI ? _mm256_xor_si256(ld(((const kvs_block_q8_0 *)blk)->qs), _mm256_set1_epi8((char)0x80))
                         : ld(((const kvs_block_q8_0 *)blk)->qs);
    }
}

AI void leg_pack(const uint8_t *w, size_t ws, int nrows, int64_t nb, size_t bsz, leg_dec dec, int has_m,
                 uint8_t *panel) {
    const int pb = has_m ? LEG_PB_M : LEG_PB;
    for (int64_t b = 0; b < nb; b++) {
        __m256i r[8];
        float d[8], m[8];
        for (int i = 0; i < 8; i++) {
            if (i < nrows) {
                const uint8_t *blk = w + (size_t)i * ws + (size_t)b * bsz;
                r[i] = leg_decode(blk, dec);
                d[i] = dec == DEC_MXFP4 ? kvs_e8m0_half(blk[0]) : HF(rd16(blk));
                m[i] = has_m ? HF(rd16(blk + 2)) : 0.0f;
            } else {
                r[i] = _mm256_setzero_si256();
                d[i] = m[i] = 0.0f;
            }
        }
        transpose8(r);
        uint8_t *p = panel + (size_t)b * pb;
        for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i *)(p + 32 * k), r[k]);
        memcpy(p + 256, d, 32);
        if (has_m) memcpy(p + 288, m, 32);
    }
}

/* Runs tile(t0, T) over nt tokens: GEMM_T at a time, then 4, 3, 2, 1. */
#define GEMM_TOKENS(nt, TILE)                                           \
    do {                                                                \
        int64_t t_ = 0;                                                 \
        for (; t_ + GEMM_T <= (nt); t_ += GEMM_T) TILE(t_, GEMM_T);     \
        if (GEMM_T > 4 && t_ + 4 <= (nt)) { TILE(t_, 4); t_ += 4; }     \
        switch ((int)((nt) - t_)) {                                     \
        case 3: TILE(t_, 3); break;                                     \
        case 2: TILE(t_, 2); break;                                     \
        case 1: TILE(t_, 1); break;                                     \
        default: break;                                                 \
        }                                                               \
    } while (0)

/* T tokens x 8 columns over all nb blocks.
 * acc  : AVX2: steps summed in i16 before widening (8 for 4-bit, 4 for 5-bit)
 * sgn  : AVX2 signed weights (q8_0), via |w| . sign(x, w) widened every step
 * shift: the unsigned offset as log2 (3: -8, 4: -16, 7: VNNI q8_0's +128), 0 none
 * has_m: add m * s (q8_1 activations) */
/* The weight vector of step k (elements 4k..4k+3 of the 8 rows) and the
 * rows' d and m, from a panel block or (packed) from an x8 record of
 * core/repack.h read in place: its nibbles split, q8_0 biased for vpdpbusd. */
AI __m256i leg_wvec(const uint8_t *p, int k, leg_dec dec, const int packed, const int has_m) {
    if (!packed) return ld(p + 32 * k);
    const uint8_t *q = p + (has_m ? 32 : 16);
    if (dec == DEC_Q8_0) return GEMM_VNNI ? _mm256_xor_si256(ld(q + 32 * k), _mm256_set1_epi8((char)0x80)) : ld(q + 32 * k);
    const int five = dec == DEC_Q5_0 || dec == DEC_Q5_1;
    const __m256i raw = ld(q + (five ? 32 : 0) + 32 * (k & 3));
    const __m256i nib = _mm256_and_si256(k < 4 ? raw : _mm256_srli_epi16(raw, 4), _mm256_set1_epi8(0x0F));
    if (!five) return nib;
    /* the fifth bit of element j = 4k+i (k < 4) or 16+4(k-4)+i of row r is bit j of
     * row r's qh (dword r of the qh vector): its byte copied to all 4 bytes of the
     * dword, then tested against the byte's own bit */
    const int b = k < 4 ? k >> 1 : 2 + ((k - 4) >> 1), sh = 4 * (k & 1);
    const __m256i idx = _mm256_setr_epi8(b, b, b, b, 4 + b, 4 + b, 4 + b, 4 + b, 8 + b, 8 + b, 8 + b, 8 + b, 12 + b,
                                         12 + b, 12 + b, 12 + b, b, b, b, b, 4 + b, 4 + b, 4 + b, 4 + b, 8 + b, 8 + b,
                                         8 + b, 8 + b, 12 + b, 12 + b, 12 + b, 12 + b);
    const __m256i bit = _mm256_set1_epi32((int)(0x08040201u << sh));
    const __m256i hb = _mm256_and_si256(_mm256_shuffle_epi8(ld(q), idx), bit);
    return _mm256_or_si256(nib, _mm256_and_si256(_mm256_cmpeq_epi8(hb, bit), _mm256_set1_epi8(0x10)));
}
AI __m256 leg_wd(const uint8_t *p, const int packed) {
    return packed ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)) : _mm256_loadu_ps((const float *)(p + 256));
}
AI __m256 leg_wm(const uint8_t *p, const int packed) {
    return packed ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))) : _mm256_loadu_ps((const float *)(p + 288));
}

AI void leg_tile(const uint8_t *panel, int64_t nb, const uint8_t *x, size_t xs, size_t xbs, int xq,
                 const kvs_q8_aux *aux, size_t auxs, float *y, size_t ys, int nrows, const int T,
                 const int acc, const int sgn, const int shift, const int has_m, const int packed, leg_dec dec,
                 const size_t bsz) {
    const size_t pb = packed ? 8 * bsz : (size_t)(has_m ? LEG_PB_M : LEG_PB);
    __m256 facc[GEMM_T];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) facc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = panel + (size_t)b * pb;
        if (packed) { /* stream the records ahead: groups follow each other in memory */
            const char *pf = (const char *)p + GEMM_PF * pb;
            for (size_t o = 0; o < pb; o += 64) _mm_prefetch(pf + o, _MM_HINT_T0);
        }
        const uint8_t *xb[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) xb[t] = x + (size_t)t * xs + (size_t)b * xbs + xq;
        __m256i s32[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) s32[t] = _mm256_setzero_si256();
#if GEMM_VNNI
        (void)acc;
        (void)sgn;
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            const __m256i wv = leg_wvec(p, k, dec, packed, has_m);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) s32[t] = _mm256_dpbusd_epi32(s32[t], wv, bc32(xb[t] + 4 * k));
        }
#else
        const __m256i ones = _mm256_set1_epi16(1);
        if (sgn) {
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m256i wv = leg_wvec(p, k, dec, packed, has_m);
                const __m256i aw = _mm256_sign_epi8(wv, wv);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const __m256i pr = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(bc32(xb[t] + 4 * k), wv));
                    s32[t] = in_order(_mm256_add_epi32(s32[t], _mm256_madd_epi16(pr, ones)));
                }
            }
        } else {
#pragma GCC unroll 2
            for (int k0 = 0; k0 < 8; k0 += acc) {
                __m256i s16[GEMM_T];
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int k = k0; k < k0 + acc; k++) {
                    const __m256i wv = leg_wvec(p, k, dec, packed, has_m);
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++)
                        s16[t] = _mm256_adds_epi16(s16[t], _mm256_maddubs_epi16(wv, bc32(xb[t] + 4 * k)));
                }
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) s32[t] = in_order(_mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones)));
            }
        }
#endif
        const __m256 dw = leg_wd(p, packed);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const kvs_q8_aux *ax = aux + (size_t)t * auxs + b;
            __m256i s = s32[t];
            if (shift) s = _mm256_sub_epi32(s, _mm256_slli_epi32(_mm256_set1_epi32(ax->sum), shift));
            facc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(ax->d)), facc[t]);
            if (has_m)
                facc[t] = _mm256_fmadd_ps(leg_wm(p, packed), _mm256_set1_ps(ax->s), facc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) store8(y + (size_t)t * ys, facc[t], nrows);
}

AI void leg_gemm(const kvs_gemm_args *a, size_t bsz, size_t xbs, int xq, leg_dec dec, const int acc,
                 const int sgn, const int shift, const int has_m) {
    const int64_t nb = a->n / KVS_QK;
    uint8_t *panel = a->scratch;
    const uint8_t *x = a->x;
    const size_t xs = a->x_stride, ys = a->y_stride, as = a->xaux_stride;
    for (int64_t r0 = 0; r0 < a->nr; r0 += 8) {
        const int nrows = a->nr - r0 < 8 ? (int)(a->nr - r0) : 8;
        leg_pack((const uint8_t *)a->w + (size_t)r0 * a->w_stride, a->w_stride, nrows, nb, bsz, dec, has_m, panel);
        if (r0 + 8 < a->nr) { /* the next group's rows come from memory while these tiles compute */
            const uint8_t *nx = (const uint8_t *)a->w + (size_t)(r0 + 8) * a->w_stride;
            const size_t nbytes = (size_t)(a->nr - r0 - 8 < 8 ? a->nr - r0 - 8 : 8) * a->w_stride;
            for (size_t o = 0; o < nbytes; o += 64) _mm_prefetch((const char *)nx + o, _MM_HINT_T0);
        }
#define LEG_TILE(t0, T)                                                                                        \
    leg_tile(panel, nb, x + (size_t)(t0) * xs, xs, xbs, xq, a->xaux + (size_t)(t0) * as, as,                  \
             a->y + (size_t)(t0) * ys + r0, ys, nrows, T, acc, sgn, shift, has_m, 0, dec, bsz)
        GEMM_TOKENS(a->nt, LEG_TILE);
#undef LEG_TILE
    }
}

#if GEMM_VNNI
/* Two x8 groups side by side in 512-bit vectors: 16 columns x T tokens.
 * Lane r < 8 of a vector is row r of the group at g, lane 8 + r row r of
 * the group at g + gs; each broadcast activation dword now meets 16
 * columns, halving the broadcasts per multiply-add, and one vpdpbusd on 512
 * bits does the work of two on 256 (where the core has full-width units,
 * 1.6x the multiply-adds per second). Same arithmetic per lane as leg_tile
 * with packed = 1. */
#define GEMM_PK16_MIN_T 16
AI __m512i cat512i(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
/* 4 bytes at p broadcast to the 16 dwords of a 512-bit vector (bc32's twin) */
AI __m512i bc32x16(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}
AI __m512 cat512(__m256 lo, __m256 hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}
AI __m512i leg_wvec16(const uint8_t *p0, const uint8_t *p1, int k, leg_dec dec, const int has_m) {
    if (dec == DEC_Q4_0 || dec == DEC_Q4_1) { /* the nibble split once on 512 bits */
        const int off = has_m ? 32 : 16;
        const __m512i raw = cat512i(ld(p0 + off + 32 * (k & 3)), ld(p1 + off + 32 * (k & 3)));
        return _mm512_and_si512(k < 4 ? raw : _mm512_srli_epi16(raw, 4), _mm512_set1_epi8(0x0F));
    }
    return cat512i(leg_wvec(p0, k, dec, 1, has_m), leg_wvec(p1, k, dec, 1, has_m));
}

AI void leg_tile16(const uint8_t *g0, size_t gs, int64_t nb, const uint8_t *x, size_t xs, size_t xbs, int xq,
                   const kvs_q8_aux *aux, size_t auxs, float *y, size_t ys, int nrows, const int T,
                   const int shift, const int has_m, leg_dec dec, const size_t bsz) {
    const size_t pb = 8 * bsz;
    const uint8_t *g1 = g0 + gs;
    const __mmask16 keep = (__mmask16)((1u << nrows) - 1u);
    __m512 facc[GEMM_T];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) facc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p0 = g0 + (size_t)b * pb, *p1 = g1 + (size_t)b * pb;
        for (size_t o = 0; o < pb; o += 64) {
            _mm_prefetch((const char *)p0 + GEMM_PF * pb + o, _MM_HINT_T0);
            _mm_prefetch((const char *)p1 + GEMM_PF * pb + o, _MM_HINT_T0);
        }
        const uint8_t *xb[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) xb[t] = x + (size_t)t * xs + (size_t)b * xbs + xq;
        __m512i s32[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) s32[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            const __m512i wv = leg_wvec16(p0, p1, k, dec, has_m);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) s32[t] = _mm512_dpbusd_epi32(s32[t], wv, bc32x16(xb[t] + 4 * k));
        }
        const __m512 dw = cat512(leg_wd(p0, 1), leg_wd(p1, 1));
        const __m512 mw = has_m ? cat512(leg_wm(p0, 1), leg_wm(p1, 1)) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const kvs_q8_aux *ax = aux + (size_t)t * auxs + b;
            __m512i s = s32[t];
            if (shift) s = _mm512_sub_epi32(s, _mm512_slli_epi32(_mm512_set1_epi32(ax->sum), shift));
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(ax->d)), facc[t]);
            if (has_m) facc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(ax->s), facc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + (size_t)t * ys, keep, facc[t]);
}
#endif

/* Over x8-packed weights (core/repack.h): a->w is the group of row 0 and
 * a->w_stride the bytes of a group; the tiles read the records in place
 * (with VNNI two groups at a time while more than 8 rows remain). */
AI void pk_gemm(const kvs_gemm_args *a, size_t bsz, size_t xbs, int xq, leg_dec dec, const int acc,
                const int sgn, const int shift, const int has_m) {
    const int64_t nb = a->n / KVS_QK;
    const uint8_t *x = a->x;
    const size_t xs = a->x_stride, ys = a->y_stride, as = a->xaux_stride;
    int64_t r0 = 0;
#if GEMM_VNNI
    /* 16 columns where the tile's arithmetic is the bound (prefill); a few
     * tokens (decode, a batched decode step) stream one group at a time:
     * there two interleaved streams made a B=8 SmolLM2 step ~12% slower */
    for (; a->nt >= GEMM_PK16_MIN_T && a->nr - r0 > 8; r0 += 16) {
        const int nrows = a->nr - r0 < 16 ? (int)(a->nr - r0) : 16;
        const uint8_t *grp = (const uint8_t *)a->w + (size_t)(r0 / 8) * a->w_stride;
#define PK_TILE16(t0, T)                                                                                     \
    leg_tile16(grp, a->w_stride, nb, x + (size_t)(t0) * xs, xs, xbs, xq, a->xaux + (size_t)(t0) * as, as,    \
               a->y + (size_t)(t0) * ys + r0, ys, nrows, T, shift, has_m, dec, bsz)
        GEMM_TOKENS(a->nt, PK_TILE16);
#undef PK_TILE16
    }
#endif
    for (; r0 < a->nr; r0 += 8) {
        const int nrows = a->nr - r0 < 8 ? (int)(a->nr - r0) : 8;
        const uint8_t *grp = (const uint8_t *)a->w + (size_t)(r0 / 8) * a->w_stride;
#define PK_TILE(t0, T)                                                                                       \
    leg_tile(grp, nb, x + (size_t)(t0) * xs, xs, xbs, xq, a->xaux + (size_t)(t0) * as, as,                   \
             a->y + (size_t)(t0) * ys + r0, ys, nrows, T, acc, sgn, shift, has_m, 1, dec, bsz)
        GEMM_TOKENS(a->nt, PK_TILE);
#undef PK_TILE
    }
}

#define XQ0 (int)offsetof(kvs_block_q8_0, qs)
#define XQ1 (int)offsetof(kvs_block_q8_1, qs)

void GEMM_FN(q4_0)(const kvs_gemm_args *a) {
    leg_gemm(a, sizeof(kvs_block_q4_0), sizeof(kvs_block_q8_0), XQ0, DEC_Q4_0, 8, 0, 3, 0);
}
void GEMM_FN(q4_1)(const kvs_gemm_args *a) {
    leg_gemm(a, sizeof(kvs_block_q4_1), sizeof(kvs_block_q8_1), XQ1, DEC_Q4_1, 8, 0, 0, 1);
}
void GEMM_FN(q5_0)(const kvs_gemm_args *a) {
    leg_gemm(a, sizeof(kvs_block_q5_0), sizeof(kvs_block_q8_0), XQ0, DEC_Q5_0, 4, 0, 4, 0);
}
void GEMM_FN(q5_1)(const kvs_gemm_args *a) {
    leg_gemm(a, sizeof(kvs_block_q5_1), sizeof(kvs_block_q8_1), XQ1, DEC_Q5_1, 4, 0, 0, 1);
}
/* mxfp4: values + 16 <= 28, so 4 maddubs steps fit in i16 (4 * 2 * 28 * 127 < 32768) */
void GEMM_FN(mxfp4)(const kvs_gemm_args *a) {
    leg_gemm(a, sizeof(kvs_block_mxfp4), sizeof(kvs_block_q8_0), XQ0, DEC_MXFP4, 4, 0, 4, 0);
}
void GEMM_FN(q8_0)(const kvs_gemm_args *a) {
    leg_gemm(a, sizeof(kvs_block_q8_0), sizeof(kvs_block_q8_0), XQ0, DEC_Q8_0, 1, !GEMM_VNNI, GEMM_VNNI ? 7 : 0, 0);
}

void GEMM_FN(q4_0_x8)(const kvs_gemm_args *a) {
    pk_gemm(a, sizeof(kvs_block_q4_0), sizeof(kvs_block_q8_0), XQ0, DEC_Q4_0, 8, 0, 3, 0);
}
void GEMM_FN(q4_1_x8)(const kvs_gemm_args *a) {
    pk_gemm(a, sizeof(kvs_block_q4_1), sizeof(kvs_block_q8_1), XQ1, DEC_Q4_1, 8, 0, 0, 1);
}
void GEMM_FN(q5_0_x8)(const kvs_gemm_args *a) {
    pk_gemm(a, sizeof(kvs_block_q5_0), sizeof(kvs_block_q8_0), XQ0, DEC_Q5_0, 4, 0, 4, 0);
}
void GEMM_FN(q5_1_x8)(const kvs_gemm_args *a) {
    pk_gemm(a, sizeof(kvs_block_q5_1), sizeof(kvs_block_q8_1), XQ1, DEC_Q5_1, 4, 0, 0, 1);
}
void GEMM_FN(q8_0_x8)(const kvs_gemm_args *a) {
    pk_gemm(a, sizeof(kvs_block_q8_0), sizeof(kvs_block_q8_0), XQ0, DEC_Q8_0, 1, !GEMM_VNNI, GEMM_VNNI ? 7 : 0, 0);
}

/* ================================================================ K-quants
 * Panel super-block (8 rows): 64 steps x 32 quant bytes (unsigned), then one
 * vector per scale sub-block (lane r = row r's scale: the i16 pair (sc, sc)
 * for AVX2's vpmaddwd, the i32 for VNNI's vpmulld), then 8
 * correction vectors (lane r = the i16 pair that meets bsums dword q of the
 * q8_K row: mins for q4_K/q5_K/q2_K, scales for the offset of q6_K/q3_K),
 * then d[8] and dmin[8] (floats). */

enum { KQ_Q = 2048, KQ_PB8 = KVS_GEMM_PANEL_K8, KQ_PB16 = KVS_GEMM_PANEL_K16 };
_Static_assert(KQ_PB8 == 2048 + 8 * 32 + 8 * 32 + 64 && KQ_PB16 == 2048 + 16 * 32 + 8 * 32 + 64, "K panel layout");

typedef enum { KDEC_Q2_K, KDEC_Q3_K, KDEC_Q4_K, KDEC_Q5_K, KDEC_Q6_K } kq_dec;

/* One row's super-block as 8 vectors of 32 unsigned quants in element order;
 * sc[] the scale of each sub-block (nsc of them), c[16] the correction
 * multipliers per 16-element group (multiplied with bsums), d, dmin. */
AI void kq_decode(const uint8_t *blk, kq_dec dec, __m256i v[8], int16_t *sc, int16_t *c, float *d, float *dmin) {
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0F);
    switch (dec) {
    case KDEC_Q2_K: {
        const kvs_block_q2_K *b = (const kvs_block_q2_K *)blk;
        for (int h = 0; h < 2; h++) {
            const __m256i q = ld(b->qs + 32 * h);
            for (int g = 0; g < 4; g++) v[4 * h + g] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * g), m3);
        }
        for (int j = 0; j < 16; j++) {
            sc[j] = b->scales[j] & 0xF;
            c[j] = b->scales[j] >> 4;
        }
        *d = HF(b->d);
        *dmin = HF(b->dmin);
        break;
    }
    case KDEC_Q3_K: {
        const kvs_block_q3_K *b = (const kvs_block_q3_K *)blk;
        const __m256i hm = ld(b->hmask);
        for (int h = 0; h < 2; h++) {
            const __m256i q = ld(b->qs + 32 * h);
            for (int g = 0; g < 4; g++) {
                const int hb = 4 * h + g;
                const __m256i bit = _mm256_set1_epi8((char)(1 << hb));
                const __m256i hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), _mm256_set1_epi8(4));
                v[hb] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * g), m3), hi);
            }
        }
        const uint8_t *p = b->scales;
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? (p[j] & 0xF) : (p[j - 8] >> 4);
            const int hi = (p[8 + (j % 4)] >> (2 * (j / 4))) & 3;
            sc[j] = c[j] = (int16_t)((lo | (hi << 4)) - 32);
        }
        *d = HF(b->d);
        *dmin = 0.0f;
        break;
    }
    case KDEC_Q4_K:
    case KDEC_Q5_K: {
        const kvs_block_q4_K *b4 = (const kvs_block_q4_K *)blk;
        const kvs_block_q5_K *b5 = (const kvs_block_q5_K *)blk;
        const uint8_t *qs = dec == KDEC_Q4_K ? b4->qs : b5->qs;
        __m256i hb = dec == KDEC_Q5_K ? ld(b5->qh) : _mm256_setzero_si256();
        const __m256i one = _mm256_set1_epi8(1), two = _mm256_set1_epi8(2);
        for (int j = 0; j < 4; j++) {
            const __m256i q = ld(qs + 32 * j);
            v[2 * j] = _mm256_and_si256(q, m4);
            v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (dec == KDEC_Q5_K) {
                v[2 * j] = _mm256_or_si256(v[2 * j], _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                v[2 * j + 1] = _mm256_or_si256(v[2 * j + 1], _mm256_slli_epi16(_mm256_and_si256(hb, two), 3));
                hb = _mm256_srli_epi16(hb, 2);
            }
        }
        uint8_t s8[8], m8[8];
        kvs_k4_scales(b4->scales, s8, m8); /* same field offset in q5_K */
        for (int j = 0; j < 8; j++) {
            sc[j] = s8[j];
            c[2 * j] = c[2 * j + 1] = m8[j];
        }
        *d = HF(b4->d);
        *dmin = HF(b4->dmin);
        break;
    }
    default: {
        const kvs_block_q6_K *b = (const kvs_block_q6_K *)blk;
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = ld(b->ql + 64 * h), l1 = ld(b->ql + 64 * h + 32), qh = ld(b->qh + 32 * h);
            v[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            v[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                           _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2));
            v[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                           _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
            v[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                           _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8((char)0xC0)), 2));
        }
        for (int j = 0; j < 16; j++) sc[j] = c[j] = b->scales[j];
        *d = HF(b->d);
        *dmin = 0.0f;
        break;
    }
    }
}

AI void kq_pack(const uint8_t *w, size_t ws, int nrows, int64_t nsb, size_t bsz, kq_dec dec, const int nsc,
                uint8_t *panel) {
    const int pb = nsc == 8 ? KQ_PB8 : KQ_PB16;
    for (int64_t b = 0; b < nsb; b++) {
        __m256i v[8][8]; /* [row][vector] */
        int16_t sc[8][16], c[8][16];
        float d[8], dmin[8];
        for (int i = 0; i < 8; i++) {
            if (i < nrows) {
                kq_decode(w + (size_t)i * ws + (size_t)b * bsz, dec, v[i], sc[i], c[i], &d[i], &dmin[i]);
            } else {
                for (int k = 0; k < 8; k++) v[i][k] = _mm256_setzero_si256();
                memset(sc[i], 0, sizeof sc[i]);
                memset(c[i], 0, sizeof c[i]);
                d[i] = dmin[i] = 0.0f;
            }
        }
        uint8_t *p = panel + (size_t)b * pb;
        for (int k = 0; k < 8; k++) {
            __m256i r[8];
            for (int i = 0; i < 8; i++) r[i] = v[i][k];
            transpose8(r);
            for (int s = 0; s < 8; s++) _mm256_storeu_si256((__m256i *)(p + 32 * (8 * k + s)), r[s]);
        }
        /* scales per row and sub-block, 8 sub-blocks per transpose: the i32
         * scale (VNNI, vpmulld) or the i16 pair (sc, sc) (AVX2, vpmaddwd) */
        for (int h = 0; h < nsc / 8; h++) {
            __m256i r[8];
            for (int i = 0; i < 8; i++) {
                const __m256i e = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(sc[i] + 8 * h)));
                r[i] = GEMM_VNNI ? e
                                 : _mm256_or_si256(_mm256_and_si256(e, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(e, 16));
            }
            transpose8(r);
            for (int j = 0; j < 8; j++) _mm256_storeu_si256((__m256i *)(p + KQ_Q + 32 * (8 * h + j)), r[j]);
        }
        /* corrections: dword q of a row's c[] meets bsums dword q */
        {
            __m256i r[8];
            for (int i = 0; i < 8; i++) r[i] = ld(c[i]);
            transpose8(r);
            for (int q = 0; q < 8; q++) _mm256_storeu_si256((__m256i *)(p + KQ_Q + 32 * (nsc + q)), r[q]);
        }
        float *pd = (float *)(p + KQ_Q + 32 * (nsc + 8));
        memcpy(pd, d, 32);
        memcpy(pd + 8, dmin, 32);
    }
}

/* T tokens x 8 columns over all nsb super-blocks.
 * sub  : steps per scale sub-block (8: 32 elements, 4: 16)
 * acc  : AVX2: steps summed in i16 before the scale madd (<= sub)
 * shift: offset correction sumi -= corr << shift (q6_K 5, q3_K 2), else 0
 *        and the correction is a min term: -dmin * dx * corr */
AI void kq_tile(const uint8_t *panel, int64_t nsb, const uint8_t *x, size_t xs, float *y, size_t ys, int nrows,
                const int T, const int sub, const int acc, const int shift) {
    const int nsc = 64 / sub;
    const int pb = nsc == 8 ? KQ_PB8 : KQ_PB16;
    __m256 facc[GEMM_T];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) facc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const uint8_t *p = panel + (size_t)b * pb;
        const kvs_block_q8_K *xb[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) xb[t] = (const kvs_block_q8_K *)(x + (size_t)t * xs) + b;
        __m256i s32[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) s32[t] = _mm256_setzero_si256();
        for (int j = 0; j < nsc; j++) {
            const __m256i sc = ld(p + KQ_Q + 32 * j);
#if GEMM_VNNI
            (void)acc;
            __m256i ss[GEMM_T];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) ss[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int k = 0; k < sub; k++) {
                const int step = j * sub + k;
                const __m256i wv = ld(p + 32 * step);
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) ss[t] = _mm256_dpbusd_epi32(ss[t], wv, bc32(xb[t]->qs + 4 * step));
            }
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) s32[t] = _mm256_add_epi32(s32[t], _mm256_mullo_epi32(ss[t], sc));
#else
#pragma GCC unroll 4
            for (int k0 = 0; k0 < sub; k0 += acc) {
                __m256i s16[GEMM_T];
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int k = 0; k < acc; k++) {
                    const int step = j * sub + k0 + k;
                    const __m256i wv = ld(p + 32 * step);
#pragma GCC unroll 8
                    for (int t = 0; t < T; t++)
                        s16[t] = _mm256_adds_epi16(s16[t], _mm256_maddubs_epi16(wv, bc32(xb[t]->qs + 4 * step)));
                }
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) s32[t] = in_order(_mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], sc)));
            }
#endif
        }
        __m256i c32[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) c32[t] = _mm256_setzero_si256();
        const uint8_t *pc = p + KQ_Q + 32 * nsc;
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) {
            const __m256i cv = ld(pc + 32 * q);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++)
#if GEMM_VNNI
                c32[t] = _mm256_dpwssd_epi32(c32[t], cv, bc32(xb[t]->bsums + 2 * q));
#else
                c32[t] = in_order(_mm256_add_epi32(c32[t], _mm256_madd_epi16(cv, bc32(xb[t]->bsums + 2 * q))));
#endif
        }
        const __m256 d = _mm256_loadu_ps((const float *)(pc + 256));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const __m256 dx = _mm256_set1_ps(xb[t]->d);
            if (shift) {
                const __m256i si = _mm256_sub_epi32(s32[t], _mm256_slli_epi32(c32[t], shift));
                facc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_mul_ps(d, dx), facc[t]);
            } else {
                const __m256 dmin = _mm256_loadu_ps((const float *)(pc + 288));
                facc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]), _mm256_mul_ps(d, dx), facc[t]);
                facc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(c32[t]), _mm256_mul_ps(dmin, dx), facc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) store8(y + (size_t)t * ys, facc[t], nrows);
}

#if GEMM_VNNI
/* Two panels (rows r0..r0+7 at pa, r0+8..r0+15 at pb) side by side in
 * 512-bit vectors: 16 columns x T tokens, kq_tile's arithmetic per lane. */
AI void kq_tile16(const uint8_t *pa, const uint8_t *pb2, int64_t nsb, const uint8_t *x, size_t xs, float *y,
                  size_t ys, int nrows, const int T, const int sub, const int shift) {
    const int nsc = 64 / sub;
    const int pb = nsc == 8 ? KQ_PB8 : KQ_PB16;
    const __mmask16 keep = (__mmask16)((1u << nrows) - 1u);
    __m512 facc[GEMM_T];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) facc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const uint8_t *p0 = pa + (size_t)b * pb, *p1 = pb2 + (size_t)b * pb;
        const kvs_block_q8_K *xb[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) xb[t] = (const kvs_block_q8_K *)(x + (size_t)t * xs) + b;
        __m512i s32[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) s32[t] = _mm512_setzero_si512();
        for (int j = 0; j < nsc; j++) {
            const __m512i sc = cat512i(ld(p0 + KQ_Q + 32 * j), ld(p1 + KQ_Q + 32 * j));
            __m512i ss[GEMM_T];
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) ss[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int k = 0; k < sub; k++) {
                const int step = j * sub + k;
                const __m512i wv = cat512i(ld(p0 + 32 * step), ld(p1 + 32 * step));
#pragma GCC unroll 8
                for (int t = 0; t < T; t++) ss[t] = _mm512_dpbusd_epi32(ss[t], wv, bc32x16(xb[t]->qs + 4 * step));
            }
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) s32[t] = _mm512_add_epi32(s32[t], _mm512_mullo_epi32(ss[t], sc));
        }
        __m512i c32[GEMM_T];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) c32[t] = _mm512_setzero_si512();
        const uint8_t *pc0 = p0 + KQ_Q + 32 * nsc, *pc1 = p1 + KQ_Q + 32 * nsc;
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) {
            const __m512i cv = cat512i(ld(pc0 + 32 * q), ld(pc1 + 32 * q));
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) c32[t] = _mm512_dpwssd_epi32(c32[t], cv, bc32x16(xb[t]->bsums + 2 * q));
        }
        const __m512 d = cat512(_mm256_loadu_ps((const float *)(pc0 + 256)), _mm256_loadu_ps((const float *)(pc1 + 256)));
        const __m512 dmin = shift ? _mm512_setzero_ps()
                                  : cat512(_mm256_loadu_ps((const float *)(pc0 + 288)),
                                           _mm256_loadu_ps((const float *)(pc1 + 288)));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const __m512 dx = _mm512_set1_ps(xb[t]->d);
            if (shift) {
                const __m512i si = _mm512_sub_epi32(s32[t], _mm512_slli_epi32(c32[t], shift));
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si), _mm512_mul_ps(d, dx), facc[t]);
            } else {
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32[t]), _mm512_mul_ps(d, dx), facc[t]);
                facc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(c32[t]), _mm512_mul_ps(dmin, dx), facc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + (size_t)t * ys, keep, facc[t]);
}
#endif

AI void kq_gemm(const kvs_gemm_args *a, size_t bsz, kq_dec dec, const int sub, const int acc, const int shift) {
    const int64_t nsb = a->n / KVS_QK_K;
    uint8_t *panel = a->scratch;
    const uint8_t *x = a->x;
    const size_t xs = a->x_stride, ys = a->y_stride;
    int64_t r0 = 0;
#if GEMM_VNNI
    /* 16 rows at a time into two panels (the scratch holds both) */
    uint8_t *panel2 = panel + (size_t)nsb * (size_t)(64 / sub == 8 ? KQ_PB8 : KQ_PB16);
    for (; a->nt >= GEMM_PK16_MIN_T && a->nr - r0 > 8; r0 += 16) {
        const int nrows = a->nr - r0 < 16 ? (int)(a->nr - r0) : 16;
        kq_pack((const uint8_t *)a->w + (size_t)r0 * a->w_stride, a->w_stride, 8, nsb, bsz, dec, 64 / sub, panel);
        kq_pack((const uint8_t *)a->w + (size_t)(r0 + 8) * a->w_stride, a->w_stride, nrows - 8, nsb, bsz, dec,
                64 / sub, panel2);
#define KQ_TILE16(t0, T) \
    kq_tile16(panel, panel2, nsb, x + (size_t)(t0) * xs, xs, a->y + (size_t)(t0) * ys + r0, ys, nrows, T, sub, shift)
        GEMM_TOKENS(a->nt, KQ_TILE16);
#undef KQ_TILE16
    }
#endif
    for (; r0 < a->nr; r0 += 8) {
        const int nrows = a->nr - r0 < 8 ? (int)(a->nr - r0) : 8;
        kq_pack((const uint8_t *)a->w + (size_t)r0 * a->w_stride, a->w_stride, nrows, nsb, bsz, dec, 64 / sub, panel);
#define KQ_TILE(t0, T) \
    kq_tile(panel, nsb, x + (size_t)(t0) * xs, xs, a->y + (size_t)(t0) * ys + r0, ys, nrows, T, sub, acc, shift)
        GEMM_TOKENS(a->nt, KQ_TILE);
#undef KQ_TILE
    }
}

void GEMM_FN(q2_K)(const kvs_gemm_args *a) { kq_gemm(a, sizeof(kvs_block_q2_K), KDEC_Q2_K, 4, 4, 0); }
void GEMM_FN(q3_K)(const kvs_gemm_args *a) { kq_gemm(a, sizeof(kvs_block_q3_K), KDEC_Q3_K, 4, 4, 2); }
void GEMM_FN(q4_K)(const kvs_gemm_args *a) { kq_gemm(a, sizeof(kvs_block_q4_K), KDEC_Q4_K, 8, 8, 0); }
void GEMM_FN(q5_K)(const kvs_gemm_args *a) { kq_gemm(a, sizeof(kvs_block_q5_K), KDEC_Q5_K, 8, 4, 0); }
void GEMM_FN(q6_K)(const kvs_gemm_args *a) { kq_gemm(a, sizeof(kvs_block_q6_K), KDEC_Q6_K, 4, 2, 5); }

/* ================================================================ float rows
 * Panel: per element e, the 8 rows' weights as floats (n x 32 bytes);
 * activations are f32 rows. Tile: 8 columns x 8 tokens (FMA latency). */

typedef enum { FDEC_F32, FDEC_F16, FDEC_BF16 } f_dec;

AI __m256 f_load8(const uint8_t *row, int64_t e, f_dec dec) {
    switch (dec) {
    case FDEC_F32: return _mm256_loadu_ps((const float *)row + e);
    case FDEC_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + e)));
    default:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + e))), 16));
    }
}
AI float f_load1(const uint8_t *row, int64_t e, f_dec dec) {
    switch (dec) {
    case FDEC_F32: return ((const float *)row)[e];
    case FDEC_F16: return kvs_f16_to_f32(((const uint16_t *)row)[e]);
    default: return kvs_bf16_to_f32(((const uint16_t *)row)[e]);
    }
}

AI void f_pack(const uint8_t *w, size_t ws, int nrows, int64_t n, f_dec dec, float *panel) {
    int64_t e = 0;
    for (; e + 8 <= n; e += 8) {
        __m256i r[8];
        for (int i = 0; i < 8; i++)
            r[i] = i < nrows ? _mm256_castps_si256(f_load8(w + (size_t)i * ws, e, dec)) : _mm256_setzero_si256();
        transpose8(r);
        for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i *)(panel + 8 * (e + k)), r[k]);
    }
    for (; e < n; e++)
        for (int i = 0; i < 8; i++) panel[8 * e + i] = i < nrows ? f_load1(w + (size_t)i * ws, e, dec) : 0.0f;
}

AI void f_tile(const float *panel, int64_t n, const float *x, size_t xs, float *y, size_t ys, int nrows, const int T) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t e = 0; e < n; e++) {
        const __m256 wv = _mm256_loadu_ps(panel + 8 * e);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(x + (size_t)t * xs + e), acc[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) store8(y + (size_t)t * ys, acc[t], nrows);
}

AI void f_gemm(const kvs_gemm_args *a, f_dec dec) {
    float *panel = a->scratch;
    const size_t xs = a->x_stride / sizeof(float), ys = a->y_stride;
    const float *x = a->x;
    for (int64_t r0 = 0; r0 < a->nr; r0 += 8) {
        const int nrows = a->nr - r0 < 8 ? (int)(a->nr - r0) : 8;
        f_pack((const uint8_t *)a->w + (size_t)r0 * a->w_stride, a->w_stride, nrows, a->n, dec, panel);
        int64_t t = 0;
        for (; t + 8 <= a->nt; t += 8) f_tile(panel, a->n, x + t * xs, xs, a->y + (size_t)t * ys + r0, ys, nrows, 8);
        for (; t + 4 <= a->nt; t += 4) f_tile(panel, a->n, x + t * xs, xs, a->y + (size_t)t * ys + r0, ys, nrows, 4);
        for (; t < a->nt; t++) f_tile(panel, a->n, x + t * xs, xs, a->y + (size_t)t * ys + r0, ys, nrows, 1);
    }
}

void GEMM_FN(f32)(const kvs_gemm_args *a) { f_gemm(a, FDEC_F32); }
void GEMM_FN(f16)(const kvs_gemm_args *a) { f_gemm(a, FDEC_F16); }
void GEMM_FN(bf16)(const kvs_gemm_args *a) { f_gemm(a, FDEC_BF16); }
