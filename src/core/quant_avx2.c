/* AVX2+FMA+F16C kernels for the block formats: integer dot products
 * (maddubs/madd, per-block float scale folded into a __m256 accumulator that
 * is reduced once per row), the 4-row variants used by prefill, and
 * dequantizers/quantizers that are bit-exact with quant_ref.c. Compiled with
 * -mavx2 -mfma -mf16c; only entered after kvs_cpu()->avx2 (core/dtype.c). */
#include <immintrin.h>
#include <string.h>

#include "core/f16.h"
#include "core/quant_internal.h"

#define HF(h) _cvtsh_ss(h)

/* Software prefetch distance for the weight stream (bytes ahead). Keeps
 * enough lines in flight that the compute-heavy 4-bit loops still run at
 * memory speed on large matrices; where one core's stream is latency-bound
 * (the Xeon guest in BENCHMARKS.md) 3 KB ahead decoded Qwen2.5-1.5B Q4_K_M
 * 15% and its Q2_K file 26% faster than 768 bytes. */
#define PF_DIST 3072
#define PREFETCH(p) _mm_prefetch((const char *)(p) + PF_DIST, _MM_HINT_T0)

/* half -> float in lane 0 (movzx + vmovd + vcvtph2ps; cheaper than HF). */
static inline __m128 h2f(uint16_t h) { return _mm_cvtph_ps(_mm_cvtsi32_si128(h)); }
/* two adjacent halves (d, m) or (d, s) -> lanes 0, 1 */
static inline __m128 h2f_pair(const void *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
}
/* dw*dx broadcast to 8 lanes */
static inline __m256 dprod(uint16_t a, uint16_t b) { return _mm256_broadcastss_ps(_mm_mul_ps(h2f(a), h2f(b))); }

static inline float hsum8(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}
static inline float hsum4(__m128 r) {
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}
static inline __m256i loadu256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i loadu128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* 16 packed bytes -> 32 nibbles: low nibbles (elements 0..15) then high. */
static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i t = loadu128(qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}
/* Bit j of m -> byte j = 0xFF (else 0). */
static inline __m256i bits_to_bytes(uint32_t m) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}
/* unsigned bytes . signed bytes -> 8 x i32 partial sums */
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
/* signed . signed (b must not contain -128) */
static inline __m256i dot_s8s8(__m256i a, __m256i b) {
    return dot_u8s8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

/* ================================================================ float rows */

void kvs_f32_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const float *w = vw, *x = vx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float r = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) r += w[i] * x[i];
    *s = r;
}

static inline __m256 ld_f16(const uint16_t *p) { return _mm256_cvtph_ps(loadu128(p)); }
static inline __m256 ld_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(loadu128(p)), 16));
}

void kvs_f16_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const uint16_t *w = vw;
    const float *x = vx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(ld_f16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(ld_f16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(ld_f16(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(ld_f16(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(ld_f16(w + i), _mm256_loadu_ps(x + i), a0);
    float r = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) r += kvs_f16_to_f32(w[i]) * x[i];
    *s = r;
}

void kvs_bf16_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const uint16_t *w = vw;
    const float *x = vx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(ld_bf16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(ld_bf16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(ld_bf16(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(ld_bf16(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(ld_bf16(w + i), _mm256_loadu_ps(x + i), a0);
    float r = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) r += kvs_bf16_to_f32(w[i]) * x[i];
    *s = r;
}

#define X4(j) ((const void *)((const char *)vx + (size_t)(j) * xs))

void kvs_f32_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const float *w = vw;
    const float *x0 = X4(0), *x1 = X4(1), *x2 = X4(2), *x3 = X4(3);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = _mm256_loadu_ps(w + i);
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + i), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + i), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + i), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + i), a3);
    }
    float r0 = hsum8(a0), r1 = hsum8(a1), r2 = hsum8(a2), r3 = hsum8(a3);
    for (; i < n; i++) { r0 += w[i] * x0[i]; r1 += w[i] * x1[i]; r2 += w[i] * x2[i]; r3 += w[i] * x3[i]; }
    s[0] = r0; s[1] = r1; s[2] = r2; s[3] = r3;
}

void kvs_f16_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const uint16_t *w = vw;
    const float *x0 = X4(0), *x1 = X4(1), *x2 = X4(2), *x3 = X4(3);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = ld_f16(w + i);
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + i), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + i), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + i), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + i), a3);
    }
    float r0 = hsum8(a0), r1 = hsum8(a1), r2 = hsum8(a2), r3 = hsum8(a3);
    for (; i < n; i++) {
        const float wf = kvs_f16_to_f32(w[i]);
        r0 += wf * x0[i]; r1 += wf * x1[i]; r2 += wf * x2[i]; r3 += wf * x3[i];
    }
    s[0] = r0; s[1] = r1; s[2] = r2; s[3] = r3;
}

/* ================================================================ legacy 32-blocks */

/* (nib - 8) . y == nib . y - 8 . y, both as unsigned x signed maddubs */
static inline __m256 q4_0_block_dot(const uint8_t *qs, const int8_t *y) {
    const __m256i yv = loadu256(y);
    const __m256i d16 = _mm256_sub_epi16(_mm256_maddubs_epi16(nibbles32(qs), yv),
                                         _mm256_maddubs_epi16(_mm256_set1_epi8(8), yv));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(d16, _mm256_set1_epi16(1)));
}

void kvs_q4_0_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q4_0 *w = vw;
    const kvs_block_q8_0 *x = vx;
    const int64_t nb = n / KVS_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        PREFETCH(w + i);
        acc0 = _mm256_fmadd_ps(dprod(w[i].d, x[i].d), q4_0_block_dot(w[i].qs, x[i].qs), acc0);
        acc1 = _mm256_fmadd_ps(dprod(w[i + 1].d, x[i + 1].d), q4_0_block_dot(w[i + 1].qs, x[i + 1].qs), acc1);
    }
    for (; i < nb; i++)
        acc0 = _mm256_fmadd_ps(dprod(w[i].d, x[i].d), q4_0_block_dot(w[i].qs, x[i].qs), acc0);
    *s = hsum8(_mm256_add_ps(acc0, acc1));
}

void kvs_q4_0_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q4_0 *w = vw;
    const kvs_block_q8_0 *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = _mm256_sub_epi8(nibbles32(w[i].qs), _mm256_set1_epi8(8));
        const __m256i aq = _mm256_sign_epi8(q, q);
        const float dw = HF(w[i].d);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i p = dot_u8s8(aq, _mm256_sign_epi8(loadu256(x[j][i].qs), q));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * HF(x[j][i].d)), _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    for (int j = 0; j < 4; j++) s[j] = hsum8(acc[j]);
}

void kvs_q4_1_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q4_1 *w = vw;
    const kvs_block_q8_1 *x = vx;
    const int64_t nb = n / KVS_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 summ = _mm_setzero_ps(); /* lane 1 accumulates m_w * s_x */
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        PREFETCH(w + i);
        const __m128 f0 = _mm_mul_ps(h2f_pair(&w[i].d), h2f_pair(&x[i].d));         /* dw*dx, mw*sx */
        const __m128 f1 = _mm_mul_ps(h2f_pair(&w[i + 1].d), h2f_pair(&x[i + 1].d));
        const __m256 p0 = _mm256_cvtepi32_ps(dot_u8s8(nibbles32(w[i].qs), loadu256(x[i].qs)));
        const __m256 p1 = _mm256_cvtepi32_ps(dot_u8s8(nibbles32(w[i + 1].qs), loadu256(x[i + 1].qs)));
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f0), p0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f1), p1, acc1);
        summ = _mm_add_ps(summ, _mm_add_ps(f0, f1));
    }
    for (; i < nb; i++) {
        const __m128 f0 = _mm_mul_ps(h2f_pair(&w[i].d), h2f_pair(&x[i].d));
        const __m256 p0 = _mm256_cvtepi32_ps(dot_u8s8(nibbles32(w[i].qs), loadu256(x[i].qs)));
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f0), p0, acc0);
        summ = _mm_add_ps(summ, f0);
    }
    *s = hsum8(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_movehdup_ps(summ));
}

void kvs_q4_1_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q4_1 *w = vw;
    const kvs_block_q8_1 *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    float summ[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = nibbles32(w[i].qs);
        const float dw = HF(w[i].d), mw = HF(w[i].m);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i p = dot_u8s8(q, loadu256(x[j][i].qs));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * HF(x[j][i].d)), _mm256_cvtepi32_ps(p), acc[j]);
            summ[j] += mw * HF(x[j][i].s);
        }
    }
    for (int j = 0; j < 4; j++) s[j] = hsum8(acc[j]) + summ[j];
}

void kvs_q5_0_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q5_0 *w = vw;
    const kvs_block_q8_0 *x = vx;
    const int64_t nb = n / KVS_QK;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        PREFETCH(w + i);
        uint32_t qh;
        memcpy(&qh, w[i].qh, 4);
        /* (nib | hbit<<4) - 16 == nib | 0xF0 when the high bit is clear */
        const __m256i hi = _mm256_andnot_si256(bits_to_bytes(qh), _mm256_set1_epi8((char)0xF0));
        const __m256i q = _mm256_or_si256(nibbles32(w[i].qs), hi);
        const __m256 p = _mm256_cvtepi32_ps(dot_s8s8(q, loadu256(x[i].qs)));
        acc = _mm256_fmadd_ps(dprod(w[i].d, x[i].d), p, acc);
    }
    *s = hsum8(acc);
}

void kvs_q5_1_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q5_1 *w = vw;
    const kvs_block_q8_1 *x = vx;
    const int64_t nb = n / KVS_QK;
    __m256 acc = _mm256_setzero_ps();
    __m128 summ = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        PREFETCH(w + i);
        uint32_t qh;
        memcpy(&qh, w[i].qh, 4);
        const __m256i hi = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
        const __m256i q = _mm256_or_si256(nibbles32(w[i].qs), hi);
        const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(q, loadu256(x[i].qs)));
        const __m128 f = _mm_mul_ps(h2f_pair(&w[i].d), h2f_pair(&x[i].d));
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(f), p, acc);
        summ = _mm_add_ps(summ, f);
    }
    *s = hsum8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(summ));
}

void kvs_q8_0_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q8_0 *w = vw;
    const kvs_block_q8_0 *x = vx;
    const int64_t nb = n / KVS_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        PREFETCH(w + i);
        PREFETCH(w + i + 1);
        const __m256 p0 = _mm256_cvtepi32_ps(dot_s8s8(loadu256(w[i].qs), loadu256(x[i].qs)));
        const __m256 p1 = _mm256_cvtepi32_ps(dot_s8s8(loadu256(w[i + 1].qs), loadu256(x[i + 1].qs)));
        acc0 = _mm256_fmadd_ps(dprod(w[i].d, x[i].d), p0, acc0);
        acc1 = _mm256_fmadd_ps(dprod(w[i + 1].d, x[i + 1].d), p1, acc1);
    }
    for (; i < nb; i++) {
        const __m256 p0 = _mm256_cvtepi32_ps(dot_s8s8(loadu256(w[i].qs), loadu256(x[i].qs)));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(HF(w[i].d) * HF(x[i].d)), p0, acc0);
    }
    *s = hsum8(_mm256_add_ps(acc0, acc1));
}

void kvs_q8_0_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q8_0 *w = vw;
    const kvs_block_q8_0 *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = loadu256(w[i].qs);
        const __m256i aq = _mm256_sign_epi8(q, q);
        const float dw = HF(w[i].d);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i p = dot_u8s8(aq, _mm256_sign_epi8(loadu256(x[j][i].qs), q));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * HF(x[j][i].d)), _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    for (int j = 0; j < 4; j++) s[j] = hsum8(acc[j]);
}

/* mxfp4: the 16 doubled E2M1 values by pshufb on the nibbles (signed, |v| <= 12) */
static inline __m256i mxfp4_values32(const uint8_t *qs) {
    const __m128i tab = _mm_loadu_si128((const __m128i *)kvs_mxfp4_values);
    return _mm256_shuffle_epi8(_mm256_set_m128i(tab, tab), nibbles32(qs));
}

void kvs_mxfp4_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_mxfp4 *w = vw;
    const kvs_block_q8_0 *x = vx;
    const int64_t nb = n / KVS_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        PREFETCH(w + i);
        const __m256 p0 = _mm256_cvtepi32_ps(dot_s8s8(mxfp4_values32(w[i].qs), loadu256(x[i].qs)));
        const __m256 p1 = _mm256_cvtepi32_ps(dot_s8s8(mxfp4_values32(w[i + 1].qs), loadu256(x[i + 1].qs)));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(kvs_e8m0_half(w[i].e) * HF(x[i].d)), p0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(kvs_e8m0_half(w[i + 1].e) * HF(x[i + 1].d)), p1, acc1);
    }
    for (; i < nb; i++) {
        const __m256 p0 = _mm256_cvtepi32_ps(dot_s8s8(mxfp4_values32(w[i].qs), loadu256(x[i].qs)));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(kvs_e8m0_half(w[i].e) * HF(x[i].d)), p0, acc0);
    }
    *s = hsum8(_mm256_add_ps(acc0, acc1));
}

void kvs_mxfp4_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_mxfp4 *w = vw;
    const kvs_block_q8_0 *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = mxfp4_values32(w[i].qs);
        const __m256i aq = _mm256_sign_epi8(q, q);
        const float dw = kvs_e8m0_half(w[i].e);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i p = dot_u8s8(aq, _mm256_sign_epi8(loadu256(x[j][i].qs), q));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * HF(x[j][i].d)), _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    for (int j = 0; j < 4; j++) s[j] = hsum8(acc[j]);
}

/* ================================================================ K-quants */

/* q4_K/q5_K 12-byte scale field -> u[0..1] = 8 scales, u[2..3] = 8 mins
 * (one byte each), the same unpacking as kvs_k4_scales(). */
static inline void k4_unpack(const uint8_t *p, uint32_t u[4]) {
    uint32_t a, b, c;
    memcpy(&a, p, 4); memcpy(&b, p + 4, 4); memcpy(&c, p + 8, 4);
    u[0] = a & 0x3f3f3f3fu;
    u[2] = b & 0x3f3f3f3fu;
    u[1] = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
    u[3] = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
}

/* Per super-block setup shared by q4_K/q5_K: returns 8 i16 scales in both
 * 128-bit lanes and the mins . bsums products (4 x i32). */
static inline __m256i k4_setup(const uint8_t *scales, const int16_t *bsums, __m128i *mins_dot) {
    uint32_t u[4];
    k4_unpack(scales, u);
    const __m256i ms = _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
    const __m256i bs = loadu256(bsums);
    const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    *mins_dot = _mm_madd_epi16(_mm256_extracti128_si256(ms, 1), pairs);
    return _mm256_broadcastsi128_si256(_mm256_castsi256_si128(ms));
}
static inline __m256i bcast_i16(__m256i v8, int k) { /* lane k of 8 x i16 to all 16 */
    return _mm256_shuffle_epi8(v8, _mm256_set1_epi16((short)(((2 * k + 1) << 8) | (2 * k))));
}

void kvs_q4_K_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q4_K *w = vw;
    const kvs_block_q8_K *x = vx;
    const int64_t nb = n / KVS_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < (int)sizeof w[i]; k += 64) PREFETCH((const char *)(w + i) + k);
        const float d = x[i].d * HF(w[i].d);
        const float dmin = -x[i].d * HF(w[i].dmin);
        __m128i md;
        const __m256i sc = k4_setup(w[i].scales, x[i].bsums, &md);
        accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(md), accm);
        const uint8_t *q4 = w[i].qs;
        const int8_t *q8 = x[i].qs;
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i qb = loadu256(q4 + 32 * j);
            const __m256i lo = _mm256_and_si256(qb, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu256(q8 + 64 * j)), bcast_i16(sc, 2 * j));
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu256(q8 + 64 * j + 32)), bcast_i16(sc, 2 * j + 1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum8(acc) + hsum4(accm);
}

/* Q4_K / Q5_K against four Q8_K rows. k_dot4: sub-block pair j of
 * super-block i, sumi[r] += lo . q8[r][64j..] * s0 + hi . q8[r][64j+32..] * s1.
 * k_finish4: fold the super-block's integer sums and mins into the floats. */
static inline __attribute__((always_inline)) void k_dot4(const kvs_block_q8_K *const *x, int64_t i, int j,
                                                         __m256i lo, __m256i hi, __m256i s0, __m256i s1,
                                                         __m256i *sumi) {
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        const int8_t *q8 = x[r][i].qs + 64 * j;
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu256(q8)), s0);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu256(q8 + 32)), s1);
        sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p0, p1));
    }
}

static inline __attribute__((always_inline)) void k_finish4(const kvs_block_q8_K *const *x, int64_t i, float dw,
                                                            float dminw, __m128i mins, const __m256i *sumi,
                                                            __m256 *acc, __m128 *accm) {
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        const __m256i bs = loadu256(x[r][i].bsums);
        const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        const __m128i md = _mm_madd_epi16(mins, pairs);
        accm[r] = _mm_fmadd_ps(_mm_set1_ps(-x[r][i].d * dminw), _mm_cvtepi32_ps(md), accm[r]);
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(x[r][i].d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
    }
}

void kvs_q4_K_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q4_K *w = vw;
    const kvs_block_q8_K *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m128 accm[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const float dw = HF(w[i].d), dminw = HF(w[i].dmin);
        uint32_t u[4];
        k4_unpack(w[i].scales, u);
        const __m256i ms = _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
        const __m128i mins = _mm256_extracti128_si256(ms, 1);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(ms));
        __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int j = 0; j < 4; j++) {
            const __m256i qb = loadu256(w[i].qs + 32 * j);
            const __m256i lo = _mm256_and_si256(qb, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
            const __m256i s0 = bcast_i16(sc, 2 * j), s1 = bcast_i16(sc, 2 * j + 1);
            k_dot4(x, i, j, lo, hi, s0, s1, sumi);
        }
        k_finish4(x, i, dw, dminw, mins, sumi, acc, accm);
    }
    for (int r = 0; r < 4; r++) s[r] = hsum8(acc[r]) + hsum4(accm[r]);
}

void kvs_q5_K_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q5_K *w = vw;
    const kvs_block_q8_K *x = vx;
    const int64_t nb = n / KVS_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1), two = _mm256_set1_epi8(2);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < (int)sizeof w[i]; k += 64) PREFETCH((const char *)(w + i) + k);
        const float d = x[i].d * HF(w[i].d);
        const float dmin = -x[i].d * HF(w[i].dmin);
        __m128i md;
        const __m256i sc = k4_setup(w[i].scales, x[i].bsums, &md);
        accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(md), accm);
        const uint8_t *q5 = w[i].qs;
        const int8_t *q8 = x[i].qs;
        __m256i hb = loadu256(w[i].qh);
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i qb = loadu256(q5 + 32 * j);
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(qb, m4),
                                               _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                                               _mm256_slli_epi16(_mm256_and_si256(hb, two), 3));
            hb = _mm256_srli_epi16(hb, 2);
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu256(q8 + 64 * j)), bcast_i16(sc, 2 * j));
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu256(q8 + 64 * j + 32)), bcast_i16(sc, 2 * j + 1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum8(acc) + hsum4(accm);
}

void kvs_q5_K_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q5_K *w = vw;
    const kvs_block_q8_K *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1), two = _mm256_set1_epi8(2);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m128 accm[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const float dw = HF(w[i].d), dminw = HF(w[i].dmin);
        uint32_t u[4];
        k4_unpack(w[i].scales, u);
        const __m256i ms = _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
        const __m128i mins = _mm256_extracti128_si256(ms, 1);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(ms));
        __m256i hb = loadu256(w[i].qh);
        __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int j = 0; j < 4; j++) {
            const __m256i qb = loadu256(w[i].qs + 32 * j);
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(qb, m4),
                                               _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                                               _mm256_slli_epi16(_mm256_and_si256(hb, two), 3));
            hb = _mm256_srli_epi16(hb, 2);
            const __m256i s0 = bcast_i16(sc, 2 * j), s1 = bcast_i16(sc, 2 * j + 1);
            k_dot4(x, i, j, lo, hi, s0, s1, sumi);
        }
        k_finish4(x, i, dw, dminw, mins, sumi, acc, accm);
    }
    for (int r = 0; r < 4; r++) s[r] = hsum8(acc[r]) + hsum4(accm[r]);
}

/* q6_K: the 4 groups of 32 six-bit values (0..63) of one 128-element half. */
static inline void q6_decode_half(const uint8_t *ql, const uint8_t *qh, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i l0 = loadu256(ql), l1 = loadu256(ql + 32), h = loadu256(qh);
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x03)), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x0C)), 2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, _mm256_set1_epi8(0x30)));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_srli_epi16(_mm256_and_si256(h, _mm256_set1_epi8((char)0xC0)), 2));
}
/* [scale 2k x8 | scale 2k+1 x8] as i16 */
static inline __m256i q6_scale_pair(__m128i sc8, int k) {
    const long long lo = (long long)(0x0101010101010101ull * (unsigned)(2 * k));
    const long long hi = (long long)(0x0101010101010101ull * (unsigned)(2 * k + 1));
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_set_epi64x(hi, lo)));
}

/* The K-quants with 16 scales per super-block (q2_K, q3_K, q6_K): one
 * half's 4 decoded groups of 32 (unsigned) against the activation, each
 * maddubs pair of sub-blocks times its scale pair, into 8 x i32. k16_half:
 * one activation row; k16_half_x4: four (x[r][i]), sumi[r] each. */
static inline __attribute__((always_inline)) __m256i k16_half(const __m256i q[4], __m128i sc8, int h,
                                                              const int8_t *q8, __m256i sumi) {
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m256i p = _mm256_maddubs_epi16(q[g], loadu256(q8 + 128 * h + 32 * g));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, q6_scale_pair(sc8, 4 * h + g)));
    }
    return sumi;
}
static inline __attribute__((always_inline)) void k16_half_x4(const __m256i q[4], __m128i sc8, int h,
                                                              const kvs_block_q8_K *const *x, int64_t i,
                                                              __m256i sumi[4]) {
    for (int g = 0; g < 4; g++) {
        const __m256i sp = q6_scale_pair(sc8, 4 * h + g);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const __m256i p = _mm256_maddubs_epi16(q[g], loadu256(x[r][i].qs + 128 * h + 32 * g));
            sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, sp));
        }
    }
}
/* sumi[r] = -(sc . bsums of x[r]) << shift: the unsigned values' offset
 * (q6_K 32, q3_K 4), subtracted exactly in integers. */
static inline __attribute__((always_inline)) void k16_offset_x4(__m256i sc16, const kvs_block_q8_K *const *x,
                                                                int64_t i, int shift, __m256i sumi[4]) {
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
        sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                   _mm256_slli_epi32(_mm256_madd_epi16(sc16, loadu256(x[r][i].bsums)), shift));
}

void kvs_q6_K_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q6_K *w = vw;
    const kvs_block_q8_K *x = vx;
    const int64_t nb = n / KVS_QK_K;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < (int)sizeof w[i]; k += 64) PREFETCH((const char *)(w + i) + k);
        const float d = x[i].d * HF(w[i].d);
        const __m128i sc8 = loadu128(w[i].scales);
        /* the -32 offset: sum_c sc[c] * 32 * bsums[c] */
        const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), loadu256(x[i].bsums));
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_decode_half(w[i].ql + 64 * h, w[i].qh + 32 * h, q);
            sumi = k16_half(q, sc8, h, x[i].qs, sumi);
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum8(acc);
}

void kvs_q6_K_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q6_K *w = vw;
    const kvs_block_q8_K *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK_K;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const float dw = HF(w[i].d);
        const __m128i sc8 = loadu128(w[i].scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        __m256i sumi[4];
        k16_offset_x4(sc16, x, i, 5, sumi);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_decode_half(w[i].ql + 64 * h, w[i].qh + 32 * h, q);
            k16_half_x4(q, sc8, h, x, i, sumi);
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(x[r][i].d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
    }
    for (int r = 0; r < 4; r++) s[r] = hsum8(acc[r]);
}

/* q2_K / q3_K: the 2-bit fields of one 128-element half, four groups of 32
 * (group g = bits 2g..2g+1 of the 32 bytes). */
static inline void k2_decode_half(const uint8_t *qs, __m256i q[4]) {
    const __m256i m3 = _mm256_set1_epi8(3), v = loadu256(qs);
    q[0] = _mm256_and_si256(v, m3);
    q[1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
    q[2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
    q[3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
}
/* q2_K: x = d*sc*q - dmin*m per sub-block of 16. The mins enter once per
 * block through the activation's bsums. */

void kvs_q2_K_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q2_K *w = vw;
    const kvs_block_q8_K *x = vx;
    const int64_t nb = n / KVS_QK_K;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < (int)sizeof w[i]; k += 64) PREFETCH((const char *)(w + i) + k);
        const __m128i sc = loadu128(w[i].scales);
        const __m256i summ =
            _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4)), loadu256(x[i].bsums));
        const __m128i sc4 = _mm_and_si128(sc, m4);
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            k2_decode_half(w[i].qs + 32 * h, q);
            sumi = k16_half(q, sc4, h, x[i].qs, sumi);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x[i].d * HF(w[i].d)), _mm256_cvtepi32_ps(sumi), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(x[i].d * HF(w[i].dmin)), _mm256_cvtepi32_ps(summ), acc);
    }
    *s = hsum8(acc);
}

void kvs_q2_K_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q2_K *w = vw;
    const kvs_block_q8_K *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK_K;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const float dw = HF(w[i].d), dm = HF(w[i].dmin);
        const __m128i sc = loadu128(w[i].scales), sc4 = _mm_and_si128(sc, m4);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
        __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                           _mm256_setzero_si256()};
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            k2_decode_half(w[i].qs + 32 * h, q);
            k16_half_x4(q, sc4, h, x, i, sumi);
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const __m256i summ = _mm256_madd_epi16(mins, loadu256(x[r][i].bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(x[r][i].d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_set1_ps(x[r][i].d * dm), _mm256_cvtepi32_ps(summ), acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = hsum8(acc[r]);
}

/* q3_K's 16 six-bit scales (12 bytes: low nibbles in bytes 0..7, scale j's
 * high 2 bits at bit 2*(j/4) of byte 8 + j%4) as signed bytes, offset 32
 * removed. */
static inline __m128i q3_scales16(const uint8_t *p) {
    uint32_t hi;
    memcpy(&hi, p + 8, 4);
    const __m128i lo8 = _mm_loadl_epi64((const __m128i *)p), m4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(_mm_unpacklo_epi64(lo8, _mm_srli_epi16(lo8, 4)), m4);
    const __m128i h = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int)hi), _mm_setr_epi32(0, 2, 4, 6)),
                                    _mm_set1_epi8(3));
    return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(h, 4)), _mm_set1_epi8(32));
}
/* q3_K's 3-bit values of one half, unsigned: low 2 bits + 4 * hmask bit
 * (the stored value is this minus 4); group j's bit is bit j of hm's bytes. */
static inline void q3_decode_half(const uint8_t *qs, __m256i hm, int h, __m256i q[4]) {
    const __m256i four = _mm256_set1_epi8(4);
    k2_decode_half(qs, q);
    const __m256i b[4] = {_mm256_slli_epi16(hm, 2), _mm256_slli_epi16(hm, 1), hm, _mm256_srli_epi16(hm, 1)};
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m256i hb = h ? _mm256_srli_epi16(b[g], 4) : b[g]; /* bit 4h+g moved to bit 2 */
        q[g] = _mm256_or_si256(q[g], _mm256_and_si256(hb, four));
    }
}

void kvs_q3_K_vec_dot_avx2(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q3_K *w = vw;
    const kvs_block_q8_K *x = vx;
    const int64_t nb = n / KVS_QK_K;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < (int)sizeof w[i]; k += 64) PREFETCH((const char *)(w + i) + k);
        const __m128i sc8 = q3_scales16(w[i].scales);
        const __m256i hm = loadu256(w[i].hmask);
        /* the -4 offset: sum_c sc[c] * 4 * bsums[c] */
        const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), loadu256(x[i].bsums));
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q3_decode_half(w[i].qs + 32 * h, hm, h, q);
            sumi = k16_half(q, sc8, h, x[i].qs, sumi);
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x[i].d * HF(w[i].d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum8(acc);
}

void kvs_q3_K_vec_dot_x4_avx2(int64_t n, float *s, const void *vw, const void *vx, size_t xs) {
    const kvs_block_q3_K *w = vw;
    const kvs_block_q8_K *x[4] = {X4(0), X4(1), X4(2), X4(3)};
    const int64_t nb = n / KVS_QK_K;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const float dw = HF(w[i].d);
        const __m128i sc8 = q3_scales16(w[i].scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8), hm = loadu256(w[i].hmask);
        __m256i sumi[4];
        k16_offset_x4(sc16, x, i, 2, sumi);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q3_decode_half(w[i].qs + 32 * h, hm, h, q);
            k16_half_x4(q, sc8, h, x, i, sumi);
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(x[r][i].d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
    }
    for (int r = 0; r < 4; r++) s[r] = hsum8(acc[r]);
}

/* ================================================================ dequantizers
 * (same float operations, in the same order, as the reference: no FMA) */

void kvs_f16_to_float_avx2(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, ld_f16(x + i));
    for (; i < n; i++) y[i] = kvs_f16_to_f32(x[i]);
}
void kvs_bf16_to_float_avx2(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, ld_bf16(x + i));
    for (; i < n; i++) y[i] = kvs_bf16_to_f32(x[i]);
}

/* 32 bytes (as i8 or u8 via `q`) -> 4 x 8 floats: out = q * d (+ m) */
static inline void store32_scaled(__m256i q, float *y, __m256 d) {
    const __m128i a = _mm256_castsi256_si128(q), b = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a)), d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(a, 8))), d));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), d));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))), d));
}
static inline void store32_affine(__m256i q, float *y, __m256 d, __m256 m) { /* q*d - m (q < 128) */
    const __m128i a = _mm256_castsi256_si128(q), b = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a)), d), m));
    _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(a, 8))), d), m));
    _mm256_storeu_ps(y + 16, _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), d), m));
    _mm256_storeu_ps(y + 24, _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))), d), m));
}

void kvs_q4_0_to_float_avx2(const void *vx, float *y, int64_t n) {
    const kvs_block_q4_0 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++)
        store32_scaled(_mm256_sub_epi8(nibbles32(x[i].qs), _mm256_set1_epi8(8)), y + i * KVS_QK,
                       _mm256_set1_ps(HF(x[i].d)));
}
void kvs_q4_1_to_float_avx2(const void *vx, float *y, int64_t n) {
    const kvs_block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        /* q*d + m == q*d - (-m) exactly */
        store32_affine(nibbles32(x[i].qs), y + i * KVS_QK, _mm256_set1_ps(HF(x[i].d)),
                       _mm256_set1_ps(-HF(x[i].m)));
    }
}
void kvs_q8_0_to_float_avx2(const void *vx, float *y, int64_t n) {
    const kvs_block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++)
        store32_scaled(loadu256(x[i].qs), y + i * KVS_QK, _mm256_set1_ps(HF(x[i].d)));
}
void kvs_mxfp4_to_float_avx2(const void *vx, float *y, int64_t n) {
    const kvs_block_mxfp4 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++)
        store32_scaled(mxfp4_values32(x[i].qs), y + i * KVS_QK, _mm256_set1_ps(kvs_e8m0_half(x[i].e)));
}
void kvs_q4_K_to_float_avx2(const void *vx, float *y, int64_t n) {
    const kvs_block_q4_K *x = vx;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float d = HF(x[i].d), dmin = HF(x[i].dmin);
        uint8_t sc[8], m[8];
        kvs_k4_scales(x[i].scales, sc, m);
        for (int j = 0; j < 4; j++, y += 64) {
            const __m256i qb = loadu256(x[i].qs + 32 * j);
            store32_affine(_mm256_and_si256(qb, m4), y, _mm256_set1_ps(d * sc[2 * j]),
                           _mm256_set1_ps(dmin * m[2 * j]));
            store32_affine(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4), y + 32,
                           _mm256_set1_ps(d * sc[2 * j + 1]), _mm256_set1_ps(dmin * m[2 * j + 1]));
        }
    }
}
void kvs_q6_K_to_float_avx2(const void *vx, float *y, int64_t n) {
    const kvs_block_q6_K *x = vx;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float d = HF(x[i].d);
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_decode_half(x[i].ql + 64 * h, x[i].qh + 32 * h, q);
            for (int g = 0; g < 4; g++, y += 32) {
                const __m256i v = _mm256_sub_epi8(q[g], _mm256_set1_epi8(32));
                const __m128i a = _mm256_castsi256_si128(v), b = _mm256_extracti128_si256(v, 1);
                const int c = 8 * h + 2 * g; /* 16-element chunks c, c+1 */
                const __m256 d0 = _mm256_set1_ps(d * (float)x[i].scales[c]);
                const __m256 d1 = _mm256_set1_ps(d * (float)x[i].scales[c + 1]);
                _mm256_storeu_ps(y, _mm256_mul_ps(d0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(a))));
                _mm256_storeu_ps(y + 8, _mm256_mul_ps(d0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(a, 8)))));
                _mm256_storeu_ps(y + 16, _mm256_mul_ps(d1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))));
                _mm256_storeu_ps(y + 24, _mm256_mul_ps(d1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)))));
            }
        }
    }
}

/* ================================================================ quantizers */

void kvs_f16_from_float_avx2(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = kvs_f32_to_f16(x[i]);
}
void kvs_bf16_from_float_avx2(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    int64_t i = 0;
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), qnan = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_castps_si256(_mm256_loadu_ps(x + i));
        const __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(v, absm), inf);
        const __m256i rne = _mm256_srli_epi32(
            _mm256_add_epi32(_mm256_add_epi32(v, bias), _mm256_and_si256(_mm256_srli_epi32(v, 16), one)), 16);
        const __m256i nanv = _mm256_or_si256(_mm256_srli_epi32(v, 16), qnan);
        const __m256i r = _mm256_blendv_epi8(rne, nanv, isnan);
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128((__m128i *)(y + i), _mm256_castsi256_si128(packed));
    }
    for (; i < n; i++) y[i] = kvs_f32_to_bf16(x[i]);
}

static inline __m256 absf(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
static inline float hmax8(__m256 v) {
    __m128 r = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    r = _mm_max_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}
/* 32 floats * id, rounded half-even, clamped to +-127, as 32 x i8 in order;
 * *sum gets the sum of the quants (8 x i32 partials). */
static inline __m256i quant32(const float *x, float id, __m256i *sum) {
    const __m256 vid = _mm256_set1_ps(id), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256i v[4];
    for (int k = 0; k < 4; k++) {
        __m256 f = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
        v[k] = _mm256_cvtps_epi32(f);
    }
    *sum = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
static inline float amax32(const float *x) {
    const __m256 m = _mm256_max_ps(_mm256_max_ps(absf(_mm256_loadu_ps(x)), absf(_mm256_loadu_ps(x + 8))),
                                   _mm256_max_ps(absf(_mm256_loadu_ps(x + 16)), absf(_mm256_loadu_ps(x + 24))));
    return hmax8(m);
}
static inline int hsum_i32(__m256i v) {
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4e));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xb1));
    return _mm_cvtsi128_si32(r);
}

void kvs_q8_0_from_float_avx2(const float *x, void *vy, int64_t n) {
    kvs_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float *xb = x + i * KVS_QK;
        const float d = amax32(xb) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256i sum;
        _mm256_storeu_si256((__m256i *)y[i].qs, quant32(xb, id, &sum));
        y[i].d = kvs_f32_to_f16(d);
    }
}
void kvs_q8_1_from_float_avx2(const float *x, void *vy, int64_t n) {
    kvs_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float *xb = x + i * KVS_QK;
        const float d = amax32(xb) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256i sum;
        _mm256_storeu_si256((__m256i *)y[i].qs, quant32(xb, id, &sum));
        y[i].d = kvs_f32_to_f16(d);
        y[i].s = kvs_f32_to_f16((float)hsum_i32(sum) * d);
    }
}
void kvs_q8_K_from_float_avx2(const float *x, void *vy, int64_t n) {
    kvs_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float *xb = x + i * KVS_QK_K;
        float amax = 0;
        for (int k = 0; k < KVS_QK_K; k += 32) {
            const float a = amax32(xb + k);
            amax = a > amax ? a : amax;
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = 127.0f / amax;
        for (int k = 0; k < KVS_QK_K; k += 32) {
            __m256i sum;
            const __m256i q = quant32(xb + k, iscale, &sum);
            _mm256_storeu_si256((__m256i *)(y[i].qs + k), q);
            /* bsums: two sums of 16 */
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);       /* 16 x i16 pairs */
            const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));       /* 8 x i32 quads  */
            const __m128i l = _mm256_castsi256_si128(s32), h = _mm256_extracti128_si256(s32, 1);
            const __m128i t = _mm_hadd_epi32(l, h); /* l0+l1, l2+l3, h0+h1, h2+h3 */
            const __m128i u = _mm_hadd_epi32(t, t); /* sum l, sum h */
            y[i].bsums[k / 16] = (int16_t)_mm_cvtsi128_si32(u);
            y[i].bsums[k / 16 + 1] = (int16_t)_mm_extract_epi32(u, 1);
        }
        y[i].d = 1.0f / iscale;
    }
}
