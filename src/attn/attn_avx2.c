/* AVX2+FMA implementations of the attention vector primitives (attn_simd.h;
 * on AVX-512 CPUs the fused decode kernel is attn_avx512.c's, which hands
 * per-channel rows and the shapes it does not take back to this one).
 * exp uses a range reduction to 2^n * e^r, |r| <= ln2/2, with a degree-6
 * polynomial (relative error ~2e-7, checked against expf in test_attn).
 *
 * Two tile kernels share one set of register-blocked loops:
 *  - tile_avx2 (f32 tiles: prefill, latent/MLA, wide groups): scores as a
 *    small GEMM, 3 query rows x 4 keys per block (12 accumulators, each key
 *    vector loaded once for 3 rows), then p*V as 4 rows x 24 channels (each
 *    value vector loaded once for 4 rows). A latent tile is converted once
 *    and is its own V (ldv = dk), so 16 MLA heads share every row load.
 *  - fused_avx2 (decode, <= 8 rows per KV head): the same loops read the
 *    cache rows in place, converting f16/bf16/q8_0/q4_0 to f32 in registers
 *    (per-block scales applied there), rotated-codebook rows (core/tq.h) as
 *    codes looked up in the codebook held in a register (vpermps) times the
 *    block scale, and per-channel (KIVI) rows go through kv/kivi.h's code
 *    kernels; no f32 copy of the rows is ever written. The query is already
 *    rotated (kv/kv_chunk.c rotates q with the keys, once per head) and the
 *    values' output is rotated back once per head after attention, so
 *    tq scores are s * sum_c q'_c cb[code_c] and the value sum stays in the
 *    rotated domain. */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "attn/attn_rows.h"
#include "attn/attn_simd.h"
#include "core/exp_avx2.h"
#include "core/dtype.h"
#include "kv/kivi.h"
#include "core/tq.h"
#include "core/tq_tables.h"

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void scale_avx2(float *y, float a, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

static float exp_sum_avx2(float *y, const float *x, float m, int64_t n) {
    __m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = kvs_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(y + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (i < n) { /* the tail in the same lanes, padded with e^-inf = 0: the sum of a
                    row's weights does not depend on how many masked keys follow them */
        float tx[8], ty[8];
        int64_t r = n - i;
        for (int64_t j = 0; j < 8; j++) tx[j] = j < r ? x[i + j] - m : -INFINITY;
        const __m256 e = kvs_exp256(_mm256_loadu_ps(tx));
        _mm256_storeu_ps(ty, e);
        acc = _mm256_add_ps(acc, e);
        for (int64_t j = 0; j < r; j++) y[i + j] = ty[j];
    }
    return hsum256(acc);
}


static inline __m128 hsum4(__m256 c0, __m256 c1, __m256 c2, __m256 c3) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(c0, c1), _mm256_hadd_ps(c2, c3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* ---- 8 elements [c, c+8) of a stored row as f32 (c % 8 == 0) ---- */

/* The 8 codebook values for codes of sub-block elements [i, i+8) (i % 8 == 0)
 * of a sub-block of `bits` bits at q, unscaled. */
static inline __attribute__((always_inline)) __m256 tq_load8(const int bits, const uint8_t *q, int i) {
    const __m256i sh2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i three = _mm256_set1_epi32(3);
    uint16_t lo;
    memcpy(&lo, q + (i >> 2), 2);
    __m256i code = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(lo), sh2), three);
    if (bits == 2) /* codes 0..3 index the low lane, which holds the 4 centroids */
        return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(kvs_tq_cb2)), code);
    if (bits == 3) {
        const __m256i sh1 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i hb = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(q[8 + (i >> 3)]), sh1), _mm256_set1_epi32(1));
        code = _mm256_or_si256(code, _mm256_slli_epi32(hb, 2));
        return _mm256_permutevar8x32_ps(_mm256_loadu_ps(kvs_tq_cb3), code);
    }
    uint16_t hi;
    memcpy(&hi, q + 8 + (i >> 2), 2);
    const __m256i h2 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(hi), sh2), three);
    code = _mm256_or_si256(code, _mm256_slli_epi32(h2, 2));
    const __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kvs_tq_cb4), code);
    const __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kvs_tq_cb4 + 8), code);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(code, 28))); /* code bit 3 */
}

/* The centroid bytes of both tq sub-blocks' codebooks (in both lanes) and 1 / C_b. */
typedef struct i8_codebooks {
    __m256i g0, g1;
    float inv0, inv1;
} i8_codebooks;

static int8_t g_grid[5][16]; /* per bits 2..4 */
static float g_grid_inv[5];
static pthread_once_t g_grid_once = PTHREAD_ONCE_INIT;
static void grid_init(void) {
    for (int b = 2; b <= 4; b++) g_grid_inv[b] = 1.0f / kvs_tq_codebook_grid(b, g_grid[b]);
}

static inline __attribute__((always_inline)) i8_codebooks tq_codebooks(const uint32_t type) {
    i8_codebooks cb = {_mm256_setzero_si256(), _mm256_setzero_si256(), 0.0f, 0.0f};
    if (!kvs_row_is_tq(type)) return cb;
    pthread_once(&g_grid_once, grid_init);
    const int b0 = kvs_row_tq_bits0(type), b1 = kvs_row_tq_bits1(type);
    cb.g0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)g_grid[b0]));
    cb.g1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)g_grid[b1]));
    cb.inv0 = g_grid_inv[b0];
    cb.inv1 = g_grid_inv[b1];
    return cb;
}

/* The 32 codes (0 .. 2^bits - 1) of a tq sub-block at q, one byte each in
 * element order. The low 2-bit plane (element e in byte e / 4, bits 2 (e % 4))
 * and a 4-bit sub-block's high plane: dword L of the plane broadcast to lane
 * L, dword t of a lane shifted right by 2t, so byte 4t + m of lane L holds
 * element 16L + 4m + t; one in-lane byte transpose puts it in order. A 3-bit
 * sub-block's third bits (bit e of a 32-bit plane) are tested per byte. */
static inline __attribute__((always_inline)) __m256i tq_codes32(const int bits, const uint8_t *q) {
    const __m256i lanes = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i lo = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(const void *)q)), lanes);
    __m256i c = _mm256_and_si256(_mm256_srlv_epi32(lo, sh), m3);
    if (bits == 4) {
        const __m256i hi = _mm256_permutevar8x32_epi32(
            _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(const void *)(q + 8))), lanes);
        c = _mm256_or_si256(c, _mm256_slli_epi16(_mm256_and_si256(_mm256_srlv_epi32(hi, sh), m3), 2)); /* fields < 4 */
    }
    const __m256i tr = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    c = _mm256_shuffle_epi8(c, tr);
    if (bits == 3) {
        uint32_t w;
        memcpy(&w, q + 8, 4);
        const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                             2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
        const __m256i hb = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)w), idx), bit);
        c = _mm256_or_si256(c, _mm256_and_si256(_mm256_cmpeq_epi8(hb, bit), _mm256_set1_epi8(4)));
    }
    return c;
}

/* Elements per scale block of a format (the loops hoist the scale per block). */
static inline __attribute__((always_inline)) int block_elems(const uint32_t type) {
    return kvs_row_is_tq(type) ? KVS_TQ_BLOCK : type == KVS_TYPE_Q8_0 || type == KVS_TYPE_Q4_0 ? 32 : 8;
}
/* The scale of the block holding element c, broadcast (block formats). */
static inline __attribute__((always_inline)) __m256 block_scale(const uint32_t type, const uint8_t *p, int c) {
    if (type == KVS_TYPE_Q8_0) return _mm256_set1_ps(kvs_row_f16_at(p + (size_t)(c >> 5) * 34));
    if (type == KVS_TYPE_Q4_0) return _mm256_set1_ps(kvs_row_f16_at(p + (size_t)(c >> 5) * 18));
    if (kvs_row_is_tq(type)) return _mm256_set1_ps(kvs_row_f16_at(p + (size_t)(c >> 6) * kvs_row_tq_block_bytes(type)));
    return _mm256_setzero_ps();
}
/* Elements [c, c+8) with the block's scale d already loaded. */
static inline __attribute__((always_inline)) __m256 load8s(const uint32_t type, const uint8_t *p, int c, __m256 d) {
    switch (type) {
    case KVS_TYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * (size_t)c)));
    case KVS_TYPE_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * (size_t)c))), 16));
    case KVS_TYPE_Q8_0: { /* block: f16 d, 32 x int8 */
        const uint8_t *b = p + (size_t)(c >> 5) * 34;
        const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + (c & 31))));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(w), d);
    }
    case KVS_TYPE_Q4_0: { /* block: f16 d, 16 bytes; element j < 16 low nibble of byte j, j >= 16 high of j-16 */
        const uint8_t *b = p + (size_t)(c >> 5) * 18;
        const int j = c & 31;
        __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + (j & 15))));
        w = j < 16 ? _mm256_and_si256(w, _mm256_set1_epi32(15)) : _mm256_srli_epi32(w, 4);
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(w, _mm256_set1_epi32(8))), d);
    }
    case KVS_TYPE_TQ2: case KVS_TYPE_TQ2_5: case KVS_TYPE_TQ3: case KVS_TYPE_TQ3_5: case KVS_TYPE_TQ4: {
        /* block: f16 s, sub-block 0 (b0 bits), sub-block 1 (b1 bits); x = s * cb[code] */
        const uint8_t *b = p + (size_t)(c >> 6) * kvs_row_tq_block_bytes(type);
        const int j = c & 63;
        if (j < 32) return _mm256_mul_ps(tq_load8(kvs_row_tq_bits0(type), b + 2, j), d);
        return _mm256_mul_ps(tq_load8(kvs_row_tq_bits1(type), b + 2 + kvs_row_tq_sub_bytes(kvs_row_tq_bits0(type)), j - 32), d);
    }
    default: return _mm256_loadu_ps((const float *)(const void *)(p + 4 * (size_t)c));
    }
}
static inline __attribute__((always_inline)) __m256 load8(const uint32_t type, const uint8_t *p, int c) {
    return load8s(type, p, c, block_scale(type, p, c));
}

static bool type_ok(uint32_t t) {
    return t == KVS_TYPE_F32 || t == KVS_TYPE_F16 || t == KVS_TYPE_BF16 || t == KVS_TYPE_Q8_0 || t == KVS_TYPE_Q4_0 ||
           kvs_row_is_tq(t);
}

/* ---- scores: RR (1..3) query rows x KB (3 or 4) keys per register block ----
 * f32 tiles (L1-resident) use 3 x 4 (12 accumulators, the 4 key vectors and
 * one query vector: GCC folds the f32 key loads into the FMAs). Stored rows
 * that need a conversion use 3 x 3: 9 accumulators + 3 converted key vectors
 * + 1 query vector = 13 registers; 3 x 4 there needs 17 of the 16 ymm
 * registers and the spill in the inner loop cost a third of the time. */

static inline __attribute__((always_inline)) __m128 hsum_keys(const int KB, __m256 c0, __m256 c1, __m256 c2, __m256 c3) {
    return KB == 4 ? hsum4(c0, c1, c2, c3) : hsum4(c0, c1, c2, _mm256_setzero_ps());
}

static inline __attribute__((always_inline)) void scores_rows(const uint32_t type, const int RR, const uint8_t *k,
                                                              size_t k_row, int n, const float *const *q,
                                                              float scale, int dk, float *sc, size_t sc_stride,
                                                              const uint8_t *pf, int pf_n) {
    const __m128 vs = _mm_set1_ps(scale);
    const int KB = type == KVS_TYPE_F32 ? 4 : 3;
    int t = 0;
    for (; t + KB <= n; t += KB) {
        const uint8_t *k0 = k + (size_t)t * k_row;
        if (t < pf_n) kvs_row_prefetch(pf, k_row, t, KB < pf_n - t ? KB : pf_n - t);
        __m256 a[3][4];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++)
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) a[r][j] = _mm256_setzero_ps();
        for (int cb = 0; cb < dk; cb += block_elems(type)) {
            __m256 d[4];
            _Pragma("GCC unroll 4")
            for (int j = 0; j < KB; j++) d[j] = block_scale(type, k0 + (size_t)j * k_row, cb);
            for (int c = cb; c < cb + block_elems(type); c += 8) {
                __m256 x[4];
                _Pragma("GCC unroll 4")
                for (int j = 0; j < KB; j++) x[j] = load8s(type, k0 + (size_t)j * k_row, c, d[j]);
                _Pragma("GCC unroll 4")
                for (int r = 0; r < RR; r++) {
                    const __m256 qv = _mm256_loadu_ps(q[r] + c);
                    _Pragma("GCC unroll 4")
                    for (int j = 0; j < KB; j++) a[r][j] = _mm256_fmadd_ps(qv, x[j], a[r][j]);
                }
            }
        }
        float tmp[4];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) {
            const __m128 h = _mm_mul_ps(vs, hsum_keys(KB, a[r][0], a[r][1], a[r][2], a[r][3]));
            if (KB == 4) {
                _mm_storeu_ps(sc + (size_t)r * sc_stride + (size_t)t, h);
            } else {
                _mm_storeu_ps(tmp, h);
                memcpy(sc + (size_t)r * sc_stride + (size_t)t, tmp, sizeof(float) * 3);
            }
        }
    }
    if (t < pf_n) kvs_row_prefetch(pf, k_row, t, pf_n - t);
    for (; t < n; t++) {
        const uint8_t *k0 = k + (size_t)t * k_row;
        __m256 a[3];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) a[r] = _mm256_setzero_ps();
        for (int c = 0; c < dk; c += 8) {
            const __m256 x = load8(type, k0, c);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q[r] + c), x, a[r]);
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) /* summed as in a group of keys, so a key's score does not
                                         depend on whether it ends up in one (chunk invariance) */
            sc[(size_t)r * sc_stride + (size_t)t] =
                _mm_cvtss_f32(_mm_mul_ss(vs, hsum4(a[r], _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps())));
    }
}

static inline __attribute__((always_inline)) void scores_all(const uint32_t type, const uint8_t *k, size_t k_row,
                                                             int n, const float *const *q, int R, float scale,
                                                             int dk, float *sc, size_t sc_stride,
                                                             const uint8_t *pf, int pf_n) {
    for (int r0 = 0; r0 < R; r0 += 3) {
        float *o = sc + (size_t)r0 * sc_stride;
        const int pn = r0 == 0 ? pf_n : 0; /* the first pass over the keys asks for the next ones */
        if (R - r0 >= 3) scores_rows(type, 3, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn);
        else if (R - r0 == 2) scores_rows(type, 2, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn);
        else scores_rows(type, 1, k, k_row, n, q + r0, scale, dk, o, sc_stride, pf, pn);
    }
}

/* ---- acc += p V: RR (1..4) rows x CW (1..3) vectors of 8 channels ----
 * Each accumulator takes one FMA per key, so with RR x CW = 6 accumulators
 * the loop waits on FMA latency (4 cycles, 2 FMAs/cycle want 8 in flight).
 * Stored rows (decode) therefore run two keys per step into two accumulator
 * sets (12 + 2 converted vectors + 1 weight = 15 registers), summed at the
 * end; f32 tiles keep one set (4 x 3 already has 12). */

static inline __attribute__((always_inline)) void vacc_block(const uint32_t type, const int RR, const int CW,
                                                             const uint8_t *v, size_t v_row, int n, int c,
                                                             const float *p, size_t p_stride, float *acc,
                                                             size_t acc_stride, const uint8_t *pf, int pf_n) {
    const int KU = type != KVS_TYPE_F32 && RR * CW <= 6 ? 2 : 1; /* keys per step */
    __m256 a[2][4][3];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < CW; j++) {
            a[0][r][j] = _mm256_loadu_ps(acc + (size_t)r * acc_stride + (size_t)(c + 8 * j));
            if (KU == 2) a[1][r][j] = _mm256_setzero_ps();
        }
    int t = 0;
    for (; t + KU <= n; t += KU) {
        if (t < pf_n) kvs_row_prefetch(pf, v_row, t, KU < pf_n - t ? KU : pf_n - t);
        _Pragma("GCC unroll 2")
        for (int u = 0; u < KU; u++) {
            __m256 x[3];
            const uint8_t *row = v + (size_t)(t + u) * v_row;
            const __m256 d = block_scale(type, row, c); /* callers keep c..c+8*CW in one block */
            _Pragma("GCC unroll 4")
            for (int j = 0; j < CW; j++) x[j] = load8s(type, row, c + 8 * j, d);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++) {
                const __m256 w = _mm256_broadcast_ss(p + (size_t)r * p_stride + (size_t)(t + u));
                _Pragma("GCC unroll 4")
                for (int j = 0; j < CW; j++) a[u][r][j] = _mm256_fmadd_ps(w, x[j], a[u][r][j]);
            }
        }
    }
    if (t < pf_n) kvs_row_prefetch(pf, v_row, t, pf_n - t);
    for (; t < n; t++) { /* odd key left by the two-key steps */
        __m256 x[3];
        const uint8_t *row = v + (size_t)t * v_row;
        const __m256 d = block_scale(type, row, c);
        _Pragma("GCC unroll 4")
        for (int j = 0; j < CW; j++) x[j] = load8s(type, row, c + 8 * j, d);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) {
            const __m256 w = _mm256_broadcast_ss(p + (size_t)r * p_stride + (size_t)t);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < CW; j++) a[0][r][j] = _mm256_fmadd_ps(w, x[j], a[0][r][j]);
        }
    }
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < CW; j++)
            _mm256_storeu_ps(acc + (size_t)r * acc_stride + (size_t)(c + 8 * j),
                             KU == 2 ? _mm256_add_ps(a[0][r][j], a[1][r][j]) : a[0][r][j]);
}

/* ---- acc += p V over tq rows, one 32-channel sub-block per pass ----
 * A key's sub-block is decoded once (tq_codes32, the codebook's int8 grid)
 * into 4 vectors of 8 channels times s / C_b, each met by the RR rows'
 * weights: RR x 4 = 12 accumulators keep the FMAs in flight with one key per
 * step. `sub` (which sub-block of the 64-element block) is a compile-time
 * constant, so a tq2.5/tq3.5 row's two widths each get their own loop. */

static inline __attribute__((always_inline)) void vacc_tq_sub(const uint32_t type, const int RR, const int sub,
                                                              const uint8_t *v, size_t v_row, int n, int blk,
                                                              const float *p, size_t p_stride, float *acc,
                                                              size_t acc_stride, const uint8_t *pf, int pf_n) {
    const i8_codebooks cb = tq_codebooks(type);
    const int bits = sub ? kvs_row_tq_bits1(type) : kvs_row_tq_bits0(type);
    const size_t blk_off = (size_t)blk * kvs_row_tq_block_bytes(type);
    const size_t q_off = blk_off + 2 + (sub ? kvs_row_tq_sub_bytes(kvs_row_tq_bits0(type)) : 0);
    const float inv = sub ? cb.inv1 : cb.inv0;
    const int c = 64 * blk + 32 * sub;
    __m256 a[3][4];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) a[r][j] = _mm256_loadu_ps(acc + (size_t)r * acc_stride + (size_t)(c + 8 * j));
    for (int t = 0; t < n; t++) {
        if (t < pf_n) kvs_row_prefetch(pf, v_row, t, 1);
        const uint8_t *row = v + (size_t)t * v_row;
        const __m256 d = _mm256_set1_ps(kvs_row_f16_at(row + blk_off) * inv);
        const __m256i g = _mm256_shuffle_epi8(sub ? cb.g1 : cb.g0, tq_codes32(bits, row + q_off));
        const __m128i g_lo = _mm256_castsi256_si128(g), g_hi = _mm256_extracti128_si256(g, 1);
        __m256 x[4];
        x[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(g_lo)), d);
        x[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(g_lo, 8))), d);
        x[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(g_hi)), d);
        x[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(g_hi, 8))), d);
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) {
            const __m256 w = _mm256_broadcast_ss(p + (size_t)r * p_stride + (size_t)t);
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) a[r][j] = _mm256_fmadd_ps(w, x[j], a[r][j]);
        }
    }
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RR; r++)
        _Pragma("GCC unroll 4")
        for (int j = 0; j < 4; j++) _mm256_storeu_ps(acc + (size_t)r * acc_stride + (size_t)(c + 8 * j), a[r][j]);
}

static inline __attribute__((always_inline)) void vacc_rows(const uint32_t type, const int RR, const uint8_t *v,
                                                            size_t v_row, int n, const float *p, size_t p_stride,
                                                            float *acc, size_t acc_stride, int dv,
                                                            const uint8_t *pf, int pf_n) {
    int c = 0; /* the first pass over the rows asks for the next ones (pf_n rows at pf) */
    if (kvs_row_is_tq(type) && RR <= 3) { /* dv % 64 == 0 for tq rows */
        for (int blk = 0; blk < dv / 64; blk++) {
            vacc_tq_sub(type, RR, 0, v, v_row, n, blk, p, p_stride, acc, acc_stride, pf, blk == 0 ? pf_n : 0);
            vacc_tq_sub(type, RR, 1, v, v_row, n, blk, p, p_stride, acc, acc_stride, pf, 0);
        }
        return;
    }
    if (RR <= 3 || block_elems(type) > 8) { /* 2 vectors: converted values stay in registers, and
                                               * 16 channels never straddle a 32-element block */
        for (; c + 16 <= dv; c += 16)
            vacc_block(type, RR, 2, v, v_row, n, c, p, p_stride, acc, acc_stride, pf, c == 0 ? pf_n : 0);
    } else {
        for (; c + 24 <= dv; c += 24)
            vacc_block(type, RR, 3, v, v_row, n, c, p, p_stride, acc, acc_stride, pf, c == 0 ? pf_n : 0);
    }
    for (; c < dv; c += 8) vacc_block(type, RR, 1, v, v_row, n, c, p, p_stride, acc, acc_stride, pf, c == 0 ? pf_n : 0);
}

static inline __attribute__((always_inline)) void vacc_all(const uint32_t type, int rows_per, const uint8_t *v,
                                                           size_t v_row, int n, const float *p, size_t p_stride,
                                                           int R, float *acc, size_t acc_stride, int dv,
                                                           const uint8_t *pf, int pf_n) {
    for (int r0 = 0; r0 < R; r0 += rows_per) {
        const int rr = R - r0 < rows_per ? R - r0 : rows_per;
        const float *pr = p + (size_t)r0 * p_stride;
        float *ar = acc + (size_t)r0 * acc_stride;
        const int pn = r0 == 0 ? pf_n : 0;
        switch (rr) {
        case 4: vacc_rows(type, 4, v, v_row, n, pr, p_stride, ar, acc_stride, dv, pf, pn); break;
        case 3: vacc_rows(type, 3, v, v_row, n, pr, p_stride, ar, acc_stride, dv, pf, pn); break;
        case 2: vacc_rows(type, 2, v, v_row, n, pr, p_stride, ar, acc_stride, dv, pf, pn); break;
        default: vacc_rows(type, 1, v, v_row, n, pr, p_stride, ar, acc_stride, dv, pf, pn); break;
        }
    }
}

/* ---- online softmax of one row's n scores (in place -> weights) ---- */

static void softmax_update(float *st, float *sc, int n, int dv) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sc + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float tmax = _mm_cvtss_f32(m4);
    for (; i < n; i++) if (sc[i] > tmax) tmax = sc[i];
    /* rescale the running state when the max grows */
    float m_new = tmax > st[0] ? tmax : st[0];
    if (st[0] != -INFINITY && m_new > st[0]) {
        float corr = expf(st[0] - m_new);
        st[1] *= corr;
        scale_avx2(st + 2, corr, dv);
    }
    st[0] = m_new;
    st[1] += exp_sum_avx2(sc, sc, m_new, n);
}

/* ---- f32 tiles ---- */

static void tile_avx2(const float *const *qrows, int R, const float *k, const float *v, const int *lo,
                      const int *hi, float scale, float *state, size_t state_stride, int dk, int dv, int ldv,
                      float *scratch) {
    int n = 0; /* keys any row sees: [0, n) */
    bool any = false;
    for (int r = 0; r < R; r++)
        if (lo[r] < hi[r]) { any = true; if (hi[r] > n) n = hi[r]; }
    if (!any) return;
    const size_t ps = (size_t)n;
    scores_all(KVS_TYPE_F32, (const uint8_t *)k, (size_t)dk * sizeof(float), n, qrows, R, scale, dk, scratch, ps, NULL, 0);
    for (int r = 0; r < R; r++) {
        float *sc = scratch + (size_t)r * ps;
        if (lo[r] >= hi[r]) { /* row sees nothing here: zero weights, state untouched */
            memset(sc, 0, sizeof(float) * ps);
            continue;
        }
        for (int t = 0; t < lo[r]; t++) sc[t] = -INFINITY;
        for (int t = hi[r]; t < n; t++) sc[t] = -INFINITY;
        softmax_update(state + (size_t)r * state_stride, sc, n, dv);
    }
    vacc_all(KVS_TYPE_F32, 4, (const uint8_t *)v, (size_t)ldv * sizeof(float), n, scratch, ps, R, state + 2,
             state_stride, dv, NULL, 0);
}

/* ---- q8_0/q4_0/tq keys against the int8-rounded query (integer dots) ----
 * Per 32-element block: q8_0 multiplies |k| (unsigned) by q with k's sign
 * (maddubs: 16 int16 pair sums, each <= 2 * 127 * 127 < 2^15, exact), q4_0
 * multiplies the unsigned nibbles 0..15 by q and subtracts 8 * (sum of q)
 * (precomputed per row and block), then madd with ones gives 8 int32 lanes;
 * those are converted and scaled in f32 by the key block's f16 scale times
 * the query block's scale (times the softmax scale). A rotated-codebook
 * sub-block (32 codes) is looked up as the signed bytes of its codebook's
 * int8 grid (kvs_tq_codebook_grid: the codebooks lie on it, so the sums are
 * exact) and then meets the query as q8_0 codes do, with the block scale
 * s / C_b. Each key block is unpacked once for all rows. 3 rows x 2 keys per
 * register block: 3 x 3 spilled accumulators (the integer path needs two more
 * constant registers). */

#define ATTN_I8_MAX_BLOCKS 32 /* dk <= 1024 */

/* The 32 codes of key block b: q8_0 signed values, q4_0 nibbles 0..15, tq
 * (block b / 2, sub-block b % 2 = sub) signed grid centroids. */
static inline __attribute__((always_inline)) __m256i key_codes(const uint32_t type, const uint8_t *row, int b, int sub,
                                                               const i8_codebooks *cb) {
    if (type == KVS_TYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)(const void *)(row + (size_t)b * 34 + 2));
    if (kvs_row_is_tq(type)) {
        const int b0 = kvs_row_tq_bits0(type);
        const uint8_t *q = row + (size_t)(b >> 1) * kvs_row_tq_block_bytes(type) + 2 + (sub ? kvs_row_tq_sub_bytes(b0) : 0);
        return _mm256_shuffle_epi8(sub ? cb->g1 : cb->g0, tq_codes32(sub ? kvs_row_tq_bits1(type) : b0, q));
    }
    const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(row + (size_t)b * 18 + 2));
    const __m128i m = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

static inline __attribute__((always_inline)) float key_block_scale(const uint32_t type, const uint8_t *row, int b, int sub,
                                                                   const i8_codebooks *cb) {
    if (kvs_row_is_tq(type))
        return kvs_row_f16_at(row + (size_t)(b >> 1) * kvs_row_tq_block_bytes(type)) * (sub ? cb->inv1 : cb->inv0);
    return kvs_row_f16_at(row + (size_t)b * (type == KVS_TYPE_Q8_0 ? 34 : 18));
}

/* 8 int32 lanes summing to the dot of block b's codes with query block qb;
 * ak = |codes| for signed codes (q8_0, tq); corr (q4_0) = the lanes of 8 * sum(qb). */
static inline __attribute__((always_inline)) __m256i block_dot(const uint32_t type, __m256i codes, __m256i ak,
                                                               const int8_t *qb, const __m256i *corr) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)qb);
    if (type != KVS_TYPE_Q4_0) return _mm256_madd_epi16(_mm256_maddubs_epi16(ak, _mm256_sign_epi8(q, codes)), ones);
    return _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(codes, q), ones), _mm256_load_si256(corr));
}

static inline __attribute__((always_inline)) void scores_i8_rows(const uint32_t type, const int RR, const uint8_t *k,
                                                                 size_t k_row, int n, const int8_t *const *qi,
                                                                 const float *qsc, const __m256i *corr, int nb,
                                                                 float *sc, size_t sc_stride) {
    enum { KB = 2 };
    const int SB = kvs_row_is_tq(type) ? 2 : 1; /* blocks per step: a tq block's two sub-blocks */
    const i8_codebooks cbk = tq_codebooks(type);
    int t = 0;
    for (; t + KB <= n; t += KB) {
        const uint8_t *k0 = k + (size_t)t * k_row;
        __m256 a[3][KB];
        _Pragma("GCC unroll 3")
        for (int r = 0; r < RR; r++)
            _Pragma("GCC unroll 3")
            for (int j = 0; j < KB; j++) a[r][j] = _mm256_setzero_ps();
        for (int b0 = 0; b0 < nb; b0 += SB)
            _Pragma("GCC unroll 2")
            for (int s = 0; s < SB; s++) {
                const int b = b0 + s;
                _Pragma("GCC unroll 3")
                for (int j = 0; j < KB; j++) {
                    const uint8_t *row = k0 + (size_t)j * k_row;
                    const __m256i codes = key_codes(type, row, b, s, &cbk);
                    const __m256i ak = type != KVS_TYPE_Q4_0 ? _mm256_abs_epi8(codes) : codes;
                    const float d = key_block_scale(type, row, b, s, &cbk);
                    _Pragma("GCC unroll 3")
                    for (int r = 0; r < RR; r++) {
                        const __m256i p = block_dot(type, codes, ak, qi[r] + 32 * b, corr + (size_t)r * nb + b);
                        a[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * qsc[r * nb + b]), a[r][j]);
                    }
                }
            }
        _Pragma("GCC unroll 3")
        for (int r = 0; r < RR; r++) {
            float tmp[4];
            _mm_storeu_ps(tmp, hsum4(a[r][0], a[r][1], _mm256_setzero_ps(), _mm256_setzero_ps()));
            memcpy(sc + (size_t)r * sc_stride + (size_t)t, tmp, sizeof(float) * KB);
        }
    }
    for (; t < n; t++) {
        const uint8_t *row = k + (size_t)t * k_row;
        __m256 a[3];
        _Pragma("GCC unroll 3")
        for (int r = 0; r < RR; r++) a[r] = _mm256_setzero_ps();
        for (int b0 = 0; b0 < nb; b0 += SB)
            _Pragma("GCC unroll 2")
            for (int s = 0; s < SB; s++) {
                const int b = b0 + s;
                const __m256i codes = key_codes(type, row, b, s, &cbk);
                const __m256i ak = type != KVS_TYPE_Q4_0 ? _mm256_abs_epi8(codes) : codes;
                const float d = key_block_scale(type, row, b, s, &cbk);
                _Pragma("GCC unroll 3")
                for (int r = 0; r < RR; r++)
                    a[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot(type, codes, ak, qi[r] + 32 * b, corr + (size_t)r * nb + b)),
                                           _mm256_set1_ps(d * qsc[r * nb + b]), a[r]);
            }
        _Pragma("GCC unroll 3")
        for (int r = 0; r < RR; r++) sc[(size_t)r * sc_stride + (size_t)t] = hsum256(a[r]);
    }
}

static void scores_i8(const uint32_t type, const kvs_attn_rows *rw, const uint8_t *k, int n, int R, float scale, int dk,
                      float *sc, size_t ss) {
    const int nb = dk / 32;
    float qsc[KVS_ATTN_FUSED_MAX_ROWS * ATTN_I8_MAX_BLOCKS]; /* query block scale x softmax scale */
    __m256i corr[KVS_ATTN_FUSED_MAX_ROWS * ATTN_I8_MAX_BLOCKS];
    for (int r = 0; r < R; r++) {
        for (int b = 0; b < nb; b++) qsc[r * nb + b] = rw->qs[r][b] * scale;
        if (type == KVS_TYPE_Q4_0) /* lanes of 8 * sum(q) per block, in block_dot's lane order */
            for (int b = 0; b < nb; b++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(rw->qi[r] + 32 * b));
                corr[r * nb + b] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), q), _mm256_set1_epi16(1));
            }
    }
    for (int r0 = 0; r0 < R; r0 += 3) {
        const int rr = R - r0 < 3 ? R - r0 : 3;
        const int8_t *const *q = rw->qi + r0;
        const __m256i *c = corr + (size_t)r0 * nb;
        float *o = sc + (size_t)r0 * ss;
#define ROWS(T)                                                                                   \
    do {                                                                                          \
        if (rr == 3) scores_i8_rows(T, 3, k, rw->k_row, n, q, qsc + (size_t)r0 * nb, c, nb, o, ss);      \
        else if (rr == 2) scores_i8_rows(T, 2, k, rw->k_row, n, q, qsc + (size_t)r0 * nb, c, nb, o, ss); \
        else scores_i8_rows(T, 1, k, rw->k_row, n, q, qsc + (size_t)r0 * nb, c, nb, o, ss);              \
    } while (0)
        KVS_ROW_TYPE_DISPATCH(type, ROWS); /* q8_0, q4_0 and tq reach here */
#undef ROWS
    }
}

/* ---- fused decode over stored rows ----
 * Block formats run in steps of ATTN_SUB keys; while a step computes its
 * scores (values), the kernels ask for the matching slice of the next
 * chunk's K (V) rows, a few lines per key block, so the DRAM reads of the
 * next chunk overlap this chunk's arithmetic (the integer-key path asks for
 * its slice before the step). One step per 64-key chunk. */

#define ATTN_SUB 64

static void fused_scores(uint32_t type, const uint8_t *k, size_t k_row, int n, const float *const *q, int R,
                         float scale, int dk, float *sc, size_t ss, const uint8_t *pf, int pf_n) {
#define SCORES(T) scores_all(T, k, k_row, n, q, R, scale, dk, sc, ss, pf, pf_n)
    KVS_ROW_TYPE_DISPATCH(type, SCORES);
#undef SCORES
}

static void fused_values(uint32_t type, const uint8_t *v, size_t v_row, int n, const float *p, size_t ps, int R,
                         float *acc, size_t acc_stride, int dv, const uint8_t *pf, int pf_n) {
#define VALUES(T) vacc_all(T, 3, v, v_row, n, p, ps, R, acc, acc_stride, dv, pf, pf_n)
    KVS_ROW_TYPE_DISPATCH(type, VALUES);
#undef VALUES
}

static bool fused_avx2(const kvs_attn_rows *rw, const float *const *qrows, int R, float scale, float *state,
                       size_t state_stride, int dk, int dv, float *scratch) {
    const bool kivi = rw->k_type == KVS_TYPE_COUNT;
    if (R < 1 || R > KVS_ATTN_FUSED_MAX_ROWS || rw->n < 1) return false;
    if (kivi ? rw->v_type != KVS_TYPE_COUNT : !type_ok(rw->k_type) || !type_ok(rw->v_type)) return false;
    const int n = rw->n;
    const size_t ss = (size_t)n;
    float *sc = scratch;
    if (kivi) {
        /* scores on the codes (scale folded into q), then the softmax scale */
        float *fold = scratch + (size_t)R * (size_t)n;
        kvs_kivi_key_scores_avx2(rw->k, dk, rw->group, rw->k_bits, rw->k_t0, n, qrows, R, sc, (size_t)n, fold);
        const __m256 vs = _mm256_set1_ps(scale);
        size_t i = 0, nn = (size_t)R * (size_t)n;
        for (; i + 8 <= nn; i += 8) _mm256_storeu_ps(sc + i, _mm256_mul_ps(vs, _mm256_loadu_ps(sc + i)));
        for (; i < nn; i++) sc[i] *= scale;
    } else {
        const bool i8 = rw->qi &&
                        (rw->k_type == KVS_TYPE_Q8_0 || rw->k_type == KVS_TYPE_Q4_0 ||
                         (kvs_row_is_tq(rw->k_type) && dk % KVS_TQ_BLOCK == 0)) &&
                        dk % 32 == 0 && dk <= 32 * ATTN_I8_MAX_BLOCKS;
        for (int t0 = 0; t0 < n; t0 += ATTN_SUB) {
            const int m = n - t0 < ATTN_SUB ? n - t0 : ATTN_SUB;
            const uint8_t *k = rw->k + (size_t)t0 * rw->k_row;
            if (i8) {
                const int pn = kvs_row_next_n(rw->pf_k, rw->pf_n, t0, m); /* the integer path asks before the step */
                if (pn > 0) kvs_row_prefetch(rw->pf_k, rw->k_row, t0, pn);
                scores_i8(rw->k_type, rw, k, m, R, scale, dk, sc + t0, ss);
            } else {
                fused_scores(rw->k_type, k, rw->k_row, m, qrows, R, scale, dk, sc + t0, ss, kvs_row_next(rw->pf_k, rw->k_row, t0),
                             kvs_row_next_n(rw->pf_k, rw->pf_n, t0, m));
            }
        }
    }
    for (int r = 0; r < R; r++) softmax_update(state + (size_t)r * state_stride, sc + (size_t)r * n, n, dv);
    if (kivi) {
        kvs_kivi_value_accum_avx2(rw->v, rw->v_row, n, dv, rw->group, rw->v_bits, rw->v_sym, sc, (size_t)n, R, state + 2,
                                  state_stride);
    } else {
        for (int t0 = 0; t0 < n; t0 += ATTN_SUB) {
            const int m = n - t0 < ATTN_SUB ? n - t0 : ATTN_SUB;
            fused_values(rw->v_type, rw->v + (size_t)t0 * rw->v_row, rw->v_row, m, sc + t0, ss, R, state + 2,
                         state_stride, dv, kvs_row_next(rw->pf_v, rw->v_row, t0), kvs_row_next_n(rw->pf_v, rw->pf_n, t0, m));
        }
    }
    return true;
}

static const kvs_attn_vec g_vec_avx2 = {dot_avx2, axpy_avx2, scale_avx2, exp_sum_avx2, tile_avx2, fused_avx2};
const kvs_attn_vec *kvs_attn_vec_avx2(void) { return &g_vec_avx2; }

/* AVX-512 CPUs: these primitives with the 16-lane fused decode kernel */
static const kvs_attn_vec g_vec_avx512 = {dot_avx2, axpy_avx2, scale_avx2, exp_sum_avx2, tile_avx2, kvs_attn_fused_avx512};
const kvs_attn_vec *kvs_attn_vec_avx512(void) { return &g_vec_avx512; }
