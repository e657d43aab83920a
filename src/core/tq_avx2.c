/* AVX2 quantizer of the rotated-codebook KV rows: core/tq.c's rule (sigma,
 * then KVS_TQ_SCALE_ROUNDS rounds of nearest codes and the least-squares
 * scale) with 8 coordinates per vector. A code is the number of the float
 * cell midpoints 0.5 (cb[c] + cb[c+1]) below x / s, which is the reference's
 * ascending search; the centroid comes from a lane permute of the codebook
 * held in registers; <x, c> and <c, c> are summed in double lanes. Blocks the
 * fast path does not cover (a non-finite input, a zero, subnormal or non-finite
 * RMS or scale) go
 * to the reference. Layout: core/tq.h. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "core/dtype.h"
#include "core/f16.h"
#include "core/tq.h"

/* One sub-block width's tables in registers. */
typedef struct tq_cells {
    int bits, n_mid;
    __m256 mid[15];    /* cell edges, broadcast */
    __m256 cb_lo, cb_hi; /* centroids 0..7 and 8..15 */
} tq_cells;

static void cells_init(tq_cells *t, int bits) {
    const float *cb = kvs_tq_codebook(bits);
    const int L = 1 << bits;
    float lo[8] = {0}, hi[8] = {0};
    t->bits = bits;
    t->n_mid = L - 1;
    for (int c = 0; c + 1 < L; c++) t->mid[c] = _mm256_set1_ps(0.5f * (cb[c] + cb[c + 1]));
    for (int c = 0; c < L; c++) (c < 8 ? lo : hi)[c & 7] = cb[c];
    t->cb_lo = _mm256_loadu_ps(lo);
    t->cb_hi = _mm256_loadu_ps(hi);
}

/* Codes of 8 scaled coordinates y and their centroids. */
static inline __m256i cell_of(const tq_cells *t, __m256 y, __m256 *centroid) {
    __m256i c = _mm256_setzero_si256();
    for (int j = 0; j < t->n_mid; j++) /* a true compare is -1 */
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(y, t->mid[j], _CMP_GT_OQ)));
    __m256 w = _mm256_permutevar8x32_ps(t->cb_lo, c);
    if (t->bits == 4)
        w = _mm256_blendv_ps(w, _mm256_permutevar8x32_ps(t->cb_hi, c), _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));
    *centroid = w;
    return c;
}

static inline __m256d fma_lo(__m256 a, __m256 b, __m256d acc) {
    return _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_castps256_ps128(b)), acc);
}
static inline __m256d fma_hi(__m256 a, __m256 b, __m256d acc) {
    return _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)),
                           acc);
}

static inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* Sub-block of 32 codes (bytes) into its bit layout (core/tq.h). */
static void pack_sub(uint8_t *q, int bits, const uint8_t *code) {
    uint64_t lo = 0, hi = 0;
    for (int i = 0; i < 32; i++) {
        lo |= (uint64_t)(code[i] & 3u) << (2 * i);
        hi |= bits == 3 ? (uint64_t)((code[i] >> 2) & 1u) << i : (uint64_t)((code[i] >> 2) & 3u) << (2 * i);
    }
    memcpy(q, &lo, 8);
    if (bits == 3) memcpy(q + 8, &hi, 4);
    else if (bits == 4) memcpy(q + 8, &hi, 8);
}

/* One block; false when the reference must take it. */
static bool block_avx2(uint32_t type, const tq_cells *cells, const float *x, uint8_t *p) {
    __m256 v[8];
    __m256d ss = _mm256_setzero_pd();
    __m256 fin = _mm256_setzero_ps();
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 fmax = _mm256_set1_ps(3.40282347e38f);
    for (int j = 0; j < 8; j++) {
        v[j] = _mm256_loadu_ps(x + 8 * j);
        /* |x| > FLT_MAX is inf; NaN compares unordered: both set the mask */
        fin = _mm256_or_ps(fin, _mm256_cmp_ps(_mm256_and_ps(v[j], abs_mask), fmax, _CMP_NLE_UQ));
        ss = fma_hi(v[j], v[j], fma_lo(v[j], v[j], ss));
    }
    if (_mm256_movemask_ps(fin)) return false;
    const double sigma = sqrt(hsum_pd(ss) / KVS_TQ_BLOCK);
    if (!(sigma > 0.0) || !isfinite(sigma)) return false;
    float inv = (float)(1.0 / sigma);
    if (!isfinite(inv)) return false; /* a subnormal RMS */
    double s = 0.0;
    __m256i code[8];
    for (int it = 0; it < KVS_TQ_SCALE_ROUNDS; it++) {
        const __m256 iv = _mm256_set1_ps(inv);
        __m256d xc = _mm256_setzero_pd(), cc = _mm256_setzero_pd();
        for (int j = 0; j < 8; j++) {
            __m256 w;
            code[j] = cell_of(&cells[j >> 2], _mm256_mul_ps(v[j], iv), &w);
            xc = fma_hi(v[j], w, fma_lo(v[j], w, xc));
            cc = fma_hi(w, w, fma_lo(w, w, cc));
        }
        const double c2 = hsum_pd(cc);
        s = c2 > 0.0 ? hsum_pd(xc) / c2 : 0.0;
        if (!isfinite(s) || !(s > 0.0)) { s = 0.0; break; }
        inv = (float)(1.0 / s);
        if (!isfinite(inv)) return false;
    }
    for (int sub = 0; sub < 2; sub++) {
        uint8_t c8[32];
        int32_t c32[32];
        for (int j = 0; j < 4; j++) _mm256_storeu_si256((__m256i *)(c32 + 8 * j), code[4 * sub + j]);
        for (int i = 0; i < 32; i++) c8[i] = (uint8_t)c32[i];
        pack_sub(p + kvs_tq_sub_offset(type, sub), cells[sub].bits, c8);
    }
    if (s > 65504.0) s = 65504.0;
    const uint16_t h = kvs_f32_to_f16((float)s);
    memcpy(p, &h, 2);
    return true;
}

static void from_float_avx2(uint32_t type, void (*ref)(const float *, void *, int64_t), const float *x, void *y,
                            int64_t n) {
    tq_cells cells[2];
    cells_init(&cells[0], kvs_tq_bits(type, 0));
    cells_init(&cells[1], kvs_tq_bits(type, 1));
    uint8_t *p = y;
    const size_t bb = kvs_tq_block_bytes(type);
    for (int64_t b = 0; b < n / KVS_TQ_BLOCK; b++, p += bb, x += KVS_TQ_BLOCK)
        if (!block_avx2(type, cells, x, p)) ref(x, p, KVS_TQ_BLOCK);
}

#define TQ_AVX2(T, id) \
    void kvs_##T##_from_float_avx2(const float *x, void *y, int64_t n) { from_float_avx2(id, kvs_##T##_from_float_ref, x, y, n); }
TQ_AVX2(tq2, KVS_TYPE_TQ2)
TQ_AVX2(tq2_5, KVS_TYPE_TQ2_5)
TQ_AVX2(tq3, KVS_TYPE_TQ3)
TQ_AVX2(tq3_5, KVS_TYPE_TQ3_5)
TQ_AVX2(tq4, KVS_TYPE_TQ4)
