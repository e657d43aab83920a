/* Decode scores over rotated-codebook keys (core/tq.h; head sizes a
 * multiple of the 64-element block) with AVX-512 VNNI integer dot products: the AVX-512 fused kernel
 * (attn_avx512.c) calls it for its scores when the query arrives rounded to
 * int8 (attn.c kvs_attn_round_query: blocks of 32, which are the tq
 * sub-blocks) and the CPU has VNNI.
 *
 * Each centroid is held as an unsigned byte u = round(cb * C_b) + 128 with
 * C_b = 127 / max|cb_b| per codebook, so a key's 64 codes become 64 bytes
 * with one byte shuffle and meet the int8 query in one vpdpbusd per query
 * row. The +128 is taken off exactly: the accumulator starts at -128 * sum(qi)
 * of each sub-block. The integer sums are exact; the float result is
 * scale * s_key * (S0 * qs0 / C0 + S1 * qs1 / C1), which differs from the
 * float kernels' score by the centroids' rounding to 1/127 of the largest
 * (rms 0.3 of a step: under 0.5% of the codebook's own squared error; the
 * tolerance of tests/test_attn.c covers it).
 *
 * Layout of a key's 64 codes in a register: the low 2-bit planes of the two
 * sub-blocks (8 bytes each, 4 codes per byte) are interleaved by dwords,
 * [s0 bytes 0-3, s1 bytes 0-3, s0 bytes 4-7, s1 bytes 4-7], broadcast to the
 * four 128-bit lanes and lane L shifted right by 2L: byte j of lane L then
 * holds code 4m + L of the byte m it came from. Dwords 0 and 2 of every lane
 * are sub-block 0, dwords 1 and 3 sub-block 1, so the folds of 4 keys keep
 * the two sub-blocks apart until their scales are applied. The query is
 * permuted to the same order once per call. */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "attn/attn_rows.h"
#include "attn/attn_simd.h"
#include "core/hsum_avx512.h"
#include "core/tq.h"

/* Centroids as unsigned bytes per codebook (bits 2..4), 16 entries, and
 * C_b; the byte gather and bit masks of a 3-bit plane per sub-block. */
static uint8_t g_cu8[5][16];
static float g_cscale[5];
static int8_t g_plane_idx[2][16], g_plane_bit[2][64];
static uint8_t g_qperm[64]; /* query element of each code byte */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Byte j of a lane: the source byte m (0..15 over both sub-blocks, sub-block
 * 1 from 8) of the dword interleave, and its sub-block. */
static int src_byte(int j) { return (j & 3) + ((j >> 3) << 2) + (((j >> 2) & 1) << 3); }

static void tables_init(void) {
    for (int b = 2; b <= 4; b++) {
        int8_t grid[16];
        g_cscale[b] = kvs_tq_codebook_grid(b, grid);
        for (int c = 0; c < (1 << b); c++) g_cu8[b][c] = (uint8_t)(grid[c] + 128);
    }
    /* byte j of lane L holds code i = 4 m' + L of its sub-block (m' = the
     * byte within the sub-block's low plane); bit 2 of code i is bit i of
     * the 32-bit plane: plane byte m' / 2, bit 4 (m' & 1) + L */
    for (int L = 0; L < 4; L++)
        for (int j = 0; j < 16; j++) g_qperm[16 * L + j] = (uint8_t)(4 * src_byte(j) + L);
    for (int sub = 0; sub < 2; sub++)
        for (int j = 0; j < 16; j++) {
            const int m = src_byte(j), mp = m & 7, mine = (m >> 3) == sub;
            g_plane_idx[sub][j] = (int8_t)(mp >> 1);
            for (int L = 0; L < 4; L++) g_plane_bit[sub][16 * L + j] = (int8_t)(mine ? 1 << (4 * (mp & 1) + L) : 0);
        }
}

/* The query row of one group in the code order, with its offsets and scales. */
typedef struct tq_query {
    __m512i q;      /* qi permuted: byte j of lane L = qi[4 * src_byte(j) + L] */
    __m512i init;   /* -128 * sum(qi) of sub-block 0 (dword 0) and 1 (dword 1) */
    float f0, f1;   /* qs[0] / C_b0, qs[1] / C_b1 */
} tq_query;

static void query_prepare(uint32_t type, const int8_t *qi, const float *qs, tq_query *tq) {
    int8_t perm[64];
    for (int i = 0; i < 64; i++) perm[i] = qi[g_qperm[i]];
    /* sums of the sub-blocks: vpdpbusd of ones (u8) against qi (s8) */
    const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), _mm512_loadu_si512(qi));
    const int s0 = _mm512_mask_reduce_add_epi32(0x00FF, sums), s1 = _mm512_mask_reduce_add_epi32(0xFF00, sums);
    tq->q = _mm512_loadu_si512(perm);
    tq->init = _mm512_maskz_set1_epi32(1, -128 * s0);
    tq->init = _mm512_mask_set1_epi32(tq->init, 2, -128 * s1);
    tq->f0 = qs[0] / g_cscale[kvs_row_tq_bits0(type)];
    tq->f1 = qs[1] / g_cscale[kvs_row_tq_bits1(type)];
}

/* 16 bytes: the dword interleave of 8 bytes at a and 8 at b (b NULL: zeros). */
KVS_AI __m512i interleave_planes(const uint8_t *a, const uint8_t *b) {
    const __m128i x = _mm_loadl_epi64((const __m128i *)(const void *)a);
    const __m128i y = b ? _mm_loadl_epi64((const __m128i *)(const void *)b) : _mm_setzero_si128();
    return _mm512_broadcast_i32x4(_mm_unpacklo_epi32(x, y));
}

/* The 2-bit fields of an interleaved plane: lane L shifted by 2L, masked. */
KVS_AI __m512i plane_fields(__m512i p) {
    const __m512i sh = _mm512_setr_epi64(0, 0, 2, 2, 4, 4, 6, 6);
    return _mm512_and_si512(_mm512_srlv_epi64(p, sh), _mm512_set1_epi8(3));
}

/* Constant registers of a scoring loop. */
typedef struct tq_regs {
    __m512i cb0, cb1;             /* centroid bytes of the sub-blocks' codebooks */
    __m512i plane_idx[2], plane_bit[2]; /* 3-bit planes: byte gather, bit per byte */
} tq_regs;

/* Bit 2 of the codes of 3-bit sub-block `sub` (bit i of the 32-bit plane is
 * code i's) added to its bytes of `codes`. */
KVS_AI __m512i add_bit_plane(__m512i codes, const uint8_t *plane, int sub, const tq_regs *g) {
    uint32_t w;
    memcpy(&w, plane, 4);
    const __m512i spread = _mm512_shuffle_epi8(_mm512_set1_epi32((int)w), g->plane_idx[sub]);
    return _mm512_mask_add_epi8(codes, _mm512_test_epi8_mask(spread, g->plane_bit[sub]), codes, _mm512_set1_epi8(4));
}

/* A key's 64 codes (block at b: f16 scale, sub-block 0, sub-block 1) as
 * centroid bytes in the register layout above. */
KVS_AI __m512i key_bytes(const uint32_t type, const uint8_t *b, const tq_regs *g) {
    const int b0 = kvs_row_tq_bits0(type), b1 = kvs_row_tq_bits1(type);
    const uint8_t *s0 = b + 2, *s1 = b + 2 + kvs_row_tq_sub_bytes(b0);
    __m512i codes = plane_fields(interleave_planes(s0, s1));
    if (b0 == 4 || b1 == 4) {
        const __m512i hi = plane_fields(interleave_planes(b0 == 4 ? s0 + 8 : NULL, b1 == 4 ? s1 + 8 : NULL));
        codes = _mm512_or_si512(codes, _mm512_slli_epi16(hi, 2)); /* fields < 4: no carry across bytes */
        if (b0 == 4 && b1 == 3) codes = add_bit_plane(codes, s1 + 8, 1, g);
    } else {
        if (b0 == 3) codes = add_bit_plane(codes, s0 + 8, 0, g);
        if (b1 == 3) codes = add_bit_plane(codes, s1 + 8, 1, g);
    }
    if (b0 == b1) return _mm512_shuffle_epi8(g->cb0, codes);
    return _mm512_mask_blend_epi32(0xAAAA, _mm512_shuffle_epi8(g->cb0, codes), _mm512_shuffle_epi8(g->cb1, codes));
}

/* f16 scales of the m (<= 16) keys from row p on (offs: 16 row offsets), as f32. */
KVS_AI __m512 key_scales(const uint8_t *p, __m512i offs, int m) {
    const __mmask16 keep = (__mmask16)(m == 16 ? 0xFFFFu : (1u << m) - 1u);
    const __m512i w = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), keep, offs, p, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(w));
}

/* RR rows x 4 keys (rows kp[0..3]) over nblk blocks -> per row one vector
 * whose lane L holds the 4 keys' partial sums over lanes [4L, 4L+4), the
 * sub-block scales applied, and with several blocks the keys' block scales
 * too (sv: 4 keys' scales per block, 16 floats apart). qq: (row, block). */
KVS_AI void block4(const uint32_t type, const int RR, int nblk, const uint8_t *const *kp, const tq_query *qq,
                   const tq_regs *g, const float *sv, __m512 *y) {
    const size_t bb = kvs_row_tq_block_bytes(type);
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++) y[r] = _mm512_setzero_ps();
    for (int blk = 0; blk < nblk; blk++) {
        __m512i x[4], a[4][4];
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) x[j] = key_bytes(type, kp[j] + (size_t)blk * bb, g);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++)
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) {
                const tq_query *q = &qq[r * nblk + blk];
                a[r][j] = _mm512_dpbusd_epi32(q->init, x[j], q->q);
            }
        const __m512 s4 = nblk > 1 ? _mm512_broadcast_f32x4(_mm_loadu_ps(sv + 16 * blk)) : _mm512_set1_ps(1.0f);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) {
            const tq_query *q = &qq[r * nblk + blk];
            const __m512i x01 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[r][0], a[r][1]), _mm512_unpackhi_epi32(a[r][0], a[r][1]));
            const __m512i x23 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[r][2], a[r][3]), _mm512_unpackhi_epi32(a[r][2], a[r][3]));
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_unpacklo_epi64(x01, x23)); /* sub-block 0 of keys 0..3 */
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_unpackhi_epi64(x01, x23));
            const __m512 part = _mm512_fmadd_ps(hi, _mm512_set1_ps(q->f1), _mm512_mul_ps(lo, _mm512_set1_ps(q->f0)));
            y[r] = nblk > 1 ? _mm512_fmadd_ps(part, s4, y[r]) : part;
        }
    }
}

KVS_AI void scores_group(const uint32_t type, const int RR, int nblk, const uint8_t *k, size_t k_row, int n,
                         const tq_query *qq, float scale, float *sc, size_t sc_stride, const uint8_t *pf, int pf_n) {
    tq_regs g;
    g.cb0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)g_cu8[kvs_row_tq_bits0(type)]));
    g.cb1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)g_cu8[kvs_row_tq_bits1(type)]));
    for (int sub = 0; sub < 2; sub++) {
        g.plane_idx[sub] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)g_plane_idx[sub]));
        g.plane_bit[sub] = _mm512_loadu_si512(g_plane_bit[sub]);
    }
    const size_t bb = kvs_row_tq_block_bytes(type);
    const __m512i offs = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)k_row));
    for (int t = 0; t < n; t += 16) {
        const int m = n - t < 16 ? n - t : 16;
        const uint8_t *kt = k + (size_t)t * k_row;
        float kss[KVS_ATTN_TQ_VNNI_ROW_BLOCKS * 16] __attribute__((aligned(64))); /* (block, key) scales */
        if (nblk > 1)
            for (int blk = 0; blk < nblk; blk++) _mm512_store_ps(kss + 16 * blk, key_scales(kt + (size_t)blk * bb, offs, m));
        __m512 ys[4][4];
        _Pragma("GCC unroll 4")
        for (int b = 0; b < 4; b++) {
            const uint8_t *kp[4];
            if (m == 16) {
                for (int j = 0; j < 4; j++) kp[j] = kt + (size_t)(4 * b + j) * k_row;
            } else { /* past the last key: the last key again (its lanes are not stored) */
                for (int j = 0; j < 4; j++) kp[j] = kt + (size_t)(4 * b + j < m ? 4 * b + j : m - 1) * k_row;
            }
            const int tb = t + 4 * b;
            if (tb < pf_n) kvs_row_prefetch(pf, k_row, tb, 4 < pf_n - tb ? 4 : pf_n - tb);
            block4(type, RR, nblk, kp, qq, &g, kss + 4 * b, ys[b]);
        }
        const __mmask16 keep = (__mmask16)(m == 16 ? 0xFFFFu : (1u << m) - 1u);
        /* one block: its scale per key here, on 16 scores at once */
        const __m512 ks = nblk > 1 ? _mm512_set1_ps(scale) : _mm512_mul_ps(_mm512_set1_ps(scale), key_scales(kt, offs, m));
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++)
            _mm512_mask_storeu_ps(sc + (size_t)r * sc_stride + (size_t)t, keep,
                                  _mm512_mul_ps(ks, kvs_fold_lanes512(ys[0][r], ys[1][r], ys[2][r], ys[3][r])));
    }
}

static void scores_typed(const uint32_t type, int nblk, const uint8_t *k, size_t k_row, int n, const tq_query *qq,
                         int R, float scale, float *sc, size_t sc_stride, const uint8_t *pf, int pf_n) {
    for (int r0 = 0; r0 < R;) {
        const int rr = kvs_row_group(R, r0);
        float *o = sc + (size_t)r0 * sc_stride;
        const tq_query *q = qq + r0 * nblk;
        const int pn = r0 == 0 ? pf_n : 0;
        switch (rr) {
        case 4: scores_group(type, 4, nblk, k, k_row, n, q, scale, o, sc_stride, pf, pn); break;
        case 3: scores_group(type, 3, nblk, k, k_row, n, q, scale, o, sc_stride, pf, pn); break;
        case 2: scores_group(type, 2, nblk, k, k_row, n, q, scale, o, sc_stride, pf, pn); break;
        default: scores_group(type, 1, nblk, k, k_row, n, q, scale, o, sc_stride, pf, pn); break;
        }
        r0 += rr;
    }
}

/* The prepared rows of a call (in rw->qprep when the caller gives one). */
typedef struct tq_prep {
    tq_query q[KVS_ATTN_TQ_VNNI_ROW_BLOCKS]; /* (row, block) */
    uint32_t type;
    int R, nblk;
} tq_prep;
_Static_assert(sizeof(tq_prep) <= KVS_ATTN_QPREP_BYTES, "KVS_ATTN_QPREP_BYTES");

void kvs_attn_tq_scores_vnni(const kvs_attn_rows *rw, int R, int dk, float scale, float *sc, size_t sc_stride) {
    pthread_once(&g_once, tables_init);
    const int nblk = dk / KVS_TQ_BLOCK;
    tq_prep local, *pp = rw->qprep ? (tq_prep *)rw->qprep : &local;
    if (!rw->qprep || !*rw->qprep_ok || pp->type != rw->k_type || pp->R != R || pp->nblk != nblk) {
        for (int r = 0; r < R; r++)
            for (int b = 0; b < nblk; b++)
                query_prepare(rw->k_type, rw->qi[r] + KVS_TQ_BLOCK * b, rw->qs[r] + 2 * b, &pp->q[r * nblk + b]);
        pp->type = rw->k_type;
        pp->R = R;
        pp->nblk = nblk;
        if (rw->qprep) *rw->qprep_ok = true;
    }
    const tq_query *qq = pp->q;
    const uint8_t *k = rw->k, *pf = rw->pf_k;
    const size_t k_row = rw->k_row;
    const int n = rw->n, pf_n = rw->pf_n;
#define TYPED(T) scores_typed(T, nblk, k, k_row, n, qq, R, scale, sc, sc_stride, pf, pf_n)
    switch (rw->k_type) {
    case KVS_TYPE_TQ2: TYPED(KVS_TYPE_TQ2); break;
    case KVS_TYPE_TQ2_5: TYPED(KVS_TYPE_TQ2_5); break;
    case KVS_TYPE_TQ3: TYPED(KVS_TYPE_TQ3); break;
    case KVS_TYPE_TQ3_5: TYPED(KVS_TYPE_TQ3_5); break;
    default: TYPED(KVS_TYPE_TQ4); break;
    }
#undef TYPED
}
