/* Scalar reference kernels for every element/block format: dequantizers,
 * quantizers and dot products. These define the math (layouts and
 * dequantization order follow ggml so GGUF weights decode bit-exactly); the
 * SIMD kernels in quant_avx2.c must agree with them (bit-exact for to_float
 * and from_float, within float reassociation for vec_dot). Dot products sum
 * integer products exactly per block, scale in float as ggml does, and
 * accumulate blocks in double. */
#include <math.h>
#include <string.h>

#include "core/f16.h"
#include "core/quant_internal.h"

#define H2F kvs_f16_to_f32
#define F2H kvs_f32_to_f16

/* Round half to even (the rounding of cvtps2dq / _mm256_round_ps). */
static inline float round_even(float x) { return nearbyintf(x); }

/* ---------------------------------------------------------------- floats */

void kvs_f32_to_float_ref(const void *x, float *y, int64_t n) { memmove(y, x, (size_t)n * 4); }
void kvs_f32_from_float_ref(const float *x, void *y, int64_t n) { memmove(y, x, (size_t)n * 4); }
void kvs_f32_vec_dot_ref(int64_t n, float *s, const void *w, const void *x) {
    const float *a = w, *b = x;
    double acc = 0;
    for (int64_t i = 0; i < n; i++) acc += (double)a[i] * b[i];
    *s = (float)acc;
}

void kvs_f16_to_float_ref(const void *x, float *y, int64_t n) {
    const uint16_t *h = x;
    for (int64_t i = 0; i < n; i++) y[i] = kvs_f16_to_f32(h[i]);
}
void kvs_f16_from_float_ref(const float *x, void *y, int64_t n) {
    uint16_t *h = y;
    for (int64_t i = 0; i < n; i++) h[i] = kvs_f32_to_f16(x[i]);
}
void kvs_f16_vec_dot_ref(int64_t n, float *s, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double acc = 0;
    for (int64_t i = 0; i < n; i++) acc += (double)kvs_f16_to_f32(a[i]) * b[i];
    *s = (float)acc;
}

void kvs_bf16_to_float_ref(const void *x, float *y, int64_t n) {
    const uint16_t *h = x;
    for (int64_t i = 0; i < n; i++) y[i] = kvs_bf16_to_f32(h[i]);
}
void kvs_bf16_from_float_ref(const float *x, void *y, int64_t n) {
    uint16_t *h = y;
    for (int64_t i = 0; i < n; i++) h[i] = kvs_f32_to_bf16(x[i]);
}
void kvs_bf16_vec_dot_ref(int64_t n, float *s, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double acc = 0;
    for (int64_t i = 0; i < n; i++) acc += (double)kvs_bf16_to_f32(a[i]) * b[i];
    *s = (float)acc;
}

/* ---------------------------------------------------------------- q8_0 / q8_1 */

/* One 32-block of q8: d = amax/127, q = round_even(x/d). Returns sum(q). */
static int quant_q8_block(const float *x, int8_t *q, float *d_out) {
    float amax = 0;
    for (int j = 0; j < KVS_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < KVS_QK; j++) {
        float v = round_even(x[j] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[j] = (int8_t)v;
        sum += q[j];
    }
    *d_out = d;
    return sum;
}

void kvs_q8_0_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        float d;
        quant_q8_block(x + i * KVS_QK, y[i].qs, &d);
        y[i].d = F2H(d);
    }
}
void kvs_q8_0_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float d = H2F(x[i].d);
        for (int j = 0; j < KVS_QK; j++) y[i * KVS_QK + j] = (float)x[i].qs[j] * d;
    }
}
void kvs_q8_0_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q8_0 *w = vw;
    const kvs_block_q8_0 *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVS_QK; j++) sumi += w[i].qs[j] * x[i].qs[j];
        acc += (float)sumi * (H2F(w[i].d) * H2F(x[i].d));
    }
    *s = (float)acc;
}

void kvs_q8_1_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        float d;
        int sum = quant_q8_block(x + i * KVS_QK, y[i].qs, &d);
        y[i].d = F2H(d);
        y[i].s = F2H((float)sum * d);
    }
}
void kvs_q8_1_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q8_1 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float d = H2F(x[i].d);
        for (int j = 0; j < KVS_QK; j++) y[i * KVS_QK + j] = (float)x[i].qs[j] * d;
    }
}

/* ---------------------------------------------------------------- q4_0 / q4_1 */

void kvs_q4_0_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q4_0 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float *xb = x + i * KVS_QK;
        float amax = 0, max = 0; /* max keeps the sign of the largest |x| */
        for (int j = 0; j < KVS_QK; j++)
            if (fabsf(xb[j]) > amax) { amax = fabsf(xb[j]); max = xb[j]; }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = F2H(d);
        for (int j = 0; j < KVS_QK / 2; j++) {
            int a = (int)(xb[j] * id + 8.5f), b = (int)(xb[j + 16] * id + 8.5f);
            a = a < 0 ? 0 : a > 15 ? 15 : a;
            b = b < 0 ? 0 : b > 15 ? 15 : b;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}
void kvs_q4_0_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q4_0 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float d = H2F(x[i].d);
        for (int j = 0; j < KVS_QK / 2; j++) {
            y[i * KVS_QK + j] = (float)((x[i].qs[j] & 0xF) - 8) * d;
            y[i * KVS_QK + j + 16] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}
void kvs_q4_0_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q4_0 *w = vw;
    const kvs_block_q8_0 *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVS_QK / 2; j++)
            sumi += ((w[i].qs[j] & 0xF) - 8) * x[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + 16];
        acc += (float)sumi * (H2F(w[i].d) * H2F(x[i].d));
    }
    *s = (float)acc;
}

/* min/max of a block, for the asymmetric formats. */
static void minmax(const float *x, int n, float *mn, float *mx) {
    float a = x[0], b = x[0];
    for (int j = 1; j < n; j++) { a = fminf(a, x[j]); b = fmaxf(b, x[j]); }
    *mn = a; *mx = b;
}

void kvs_q4_1_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q4_1 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float *xb = x + i * KVS_QK;
        float mn, mx;
        minmax(xb, KVS_QK, &mn, &mx);
        const float d = (mx - mn) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = F2H(d);
        y[i].m = F2H(mn);
        for (int j = 0; j < KVS_QK / 2; j++) {
            int a = (int)((xb[j] - mn) * id + 0.5f), b = (int)((xb[j + 16] - mn) * id + 0.5f);
            a = a < 0 ? 0 : a > 15 ? 15 : a;
            b = b < 0 ? 0 : b > 15 ? 15 : b;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}
void kvs_q4_1_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float d = H2F(x[i].d), m = H2F(x[i].m);
        for (int j = 0; j < KVS_QK / 2; j++) {
            y[i * KVS_QK + j] = (float)(x[i].qs[j] & 0xF) * d + m;
            y[i * KVS_QK + j + 16] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}
void kvs_q4_1_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q4_1 *w = vw;
    const kvs_block_q8_1 *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVS_QK / 2; j++)
            sumi += (w[i].qs[j] & 0xF) * x[i].qs[j] + (w[i].qs[j] >> 4) * x[i].qs[j + 16];
        acc += (float)sumi * (H2F(w[i].d) * H2F(x[i].d)) + H2F(w[i].m) * H2F(x[i].s);
    }
    *s = (float)acc;
}

/* ---------------------------------------------------------------- q5_0 / q5_1 */

/* 5-bit value j of a q5 block (0..31) from qs and the 32-bit high mask. */
static inline int q5_val(const uint8_t *qs, uint32_t qh, int j) {
    int lo = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
    return lo | (int)(((qh >> j) & 1) << 4);
}
static void q5_pack(const int *L, uint8_t *qs, uint8_t *qh_bytes) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 0xF) | ((L[j + 16] & 0xF) << 4));
        qh |= (uint32_t)((L[j] >> 4) & 1) << j;
        qh |= (uint32_t)((L[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh_bytes, &qh, 4); /* little-endian, as in the file */
}

void kvs_q5_0_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q5_0 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float *xb = x + i * KVS_QK;
        float amax = 0, max = 0;
        for (int j = 0; j < KVS_QK; j++)
            if (fabsf(xb[j]) > amax) { amax = fabsf(xb[j]); max = xb[j]; }
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int L[KVS_QK];
        for (int j = 0; j < KVS_QK; j++) {
            int v = (int)(xb[j] * id + 16.5f);
            L[j] = v < 0 ? 0 : v > 31 ? 31 : v;
        }
        y[i].d = F2H(d);
        q5_pack(L, y[i].qs, y[i].qh);
    }
}
void kvs_q5_0_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q5_0 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float d = H2F(x[i].d);
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < KVS_QK; j++) y[i * KVS_QK + j] = (float)(q5_val(x[i].qs, qh, j) - 16) * d;
    }
}
void kvs_q5_0_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q5_0 *w = vw;
    const kvs_block_q8_0 *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        uint32_t qh;
        memcpy(&qh, w[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < KVS_QK; j++) sumi += (q5_val(w[i].qs, qh, j) - 16) * x[i].qs[j];
        acc += (float)sumi * (H2F(w[i].d) * H2F(x[i].d));
    }
    *s = (float)acc;
}

void kvs_q5_1_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q5_1 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float *xb = x + i * KVS_QK;
        float mn, mx;
        minmax(xb, KVS_QK, &mn, &mx);
        const float d = (mx - mn) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int L[KVS_QK];
        for (int j = 0; j < KVS_QK; j++) {
            int v = (int)((xb[j] - mn) * id + 0.5f);
            L[j] = v < 0 ? 0 : v > 31 ? 31 : v;
        }
        y[i].d = F2H(d);
        y[i].m = F2H(mn);
        q5_pack(L, y[i].qs, y[i].qh);
    }
}
void kvs_q5_1_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q5_1 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float d = H2F(x[i].d), m = H2F(x[i].m);
        uint32_t qh;
        memcpy(&qh, x[i].qh, 4);
        for (int j = 0; j < KVS_QK; j++) y[i * KVS_QK + j] = (float)q5_val(x[i].qs, qh, j) * d + m;
    }
}
void kvs_q5_1_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q5_1 *w = vw;
    const kvs_block_q8_1 *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        uint32_t qh;
        memcpy(&qh, w[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < KVS_QK; j++) sumi += q5_val(w[i].qs, qh, j) * x[i].qs[j];
        acc += (float)sumi * (H2F(w[i].d) * H2F(x[i].d)) + H2F(w[i].m) * H2F(x[i].s);
    }
    *s = (float)acc;
}

/* ---------------------------------------------------------------- q8_K */

void kvs_q8_K_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float *xb = x + i * KVS_QK_K;
        float amax = 0;
        for (int j = 0; j < KVS_QK_K; j++) amax = fmaxf(amax, fabsf(xb[j]));
        memset(&y[i], 0, sizeof y[i]);
        if (amax == 0.0f) continue;
        const float iscale = 127.0f / amax;
        for (int j = 0; j < KVS_QK_K; j++) {
            float v = round_even(xb[j] * iscale);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            y[i].qs[j] = (int8_t)v;
        }
        for (int j = 0; j < KVS_QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[j * 16 + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}
void kvs_q8_K_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q8_K *x = vx;
    for (int64_t i = 0; i < n / KVS_QK_K; i++)
        for (int j = 0; j < KVS_QK_K; j++) y[i * KVS_QK_K + j] = x[i].d * (float)x[i].qs[j];
}

/* ---------------------------------------------------------------- K-quant helpers */

static inline int nearest_int(float x) { return (int)round_even(x); }

/* Quantizes a sub-block to levels 0..nmax with an asymmetric (scale, min)
 * pair, x ~ scale*L - min with min >= 0 (i.e. the offset is -min). */
static void rtn_scale_min(const float *x, int n, int nmax, float *scale, float *the_min) {
    float mn, mx;
    minmax(x, n, &mn, &mx);
    if (mn > 0) mn = 0;
    *scale = (mx - mn) / (float)nmax;
    *the_min = -mn;
}

/* Shared quantizer for q4_K / q5_K: per sub-block scale+min, 6-bit quantized,
 * then values re-quantized with the effective (rounded) scales. */
static void quant_k4(const float *xb, int nmax, uint16_t *d_out, uint16_t *dmin_out,
                     uint8_t *scales, int *L) {
    float sc[8], mn[8], max_sc = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        rtn_scale_min(xb + 32 * j, 32, nmax, &sc[j], &mn[j]);
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    const float inv_sc = max_sc > 0 ? 63.0f / max_sc : 0.0f;
    const float inv_mn = max_mn > 0 ? 63.0f / max_mn : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        int a = nearest_int(inv_sc * sc[j]), b = nearest_int(inv_mn * mn[j]);
        ls[j] = (uint8_t)(a > 63 ? 63 : a);
        lm[j] = (uint8_t)(b > 63 ? 63 : b);
    }
    memset(scales, 0, KVS_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            scales[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
    *d_out = F2H(max_sc / 63.0f);
    *dmin_out = F2H(max_mn / 63.0f);
    const float d = H2F(*d_out), dmin = H2F(*dmin_out);
    for (int j = 0; j < 8; j++) {
        const float dl = d * ls[j], ml = dmin * lm[j];
        for (int l = 0; l < 32; l++) {
            int v = dl != 0.0f ? nearest_int((xb[32 * j + l] + ml) / dl) : 0;
            L[32 * j + l] = v < 0 ? 0 : v > nmax ? nmax : v;
        }
    }
}

/* ---------------------------------------------------------------- q4_K */

void kvs_q4_K_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q4_K *y = vy;
    int L[KVS_QK_K];
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        quant_k4(x + i * KVS_QK_K, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        for (int j = 0; j < KVS_QK_K; j += 64)
            for (int l = 0; l < 32; l++) y[i].qs[j / 2 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}
void kvs_q4_K_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q4_K *x = vx;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float d = H2F(x[i].d), dmin = H2F(x[i].dmin);
        uint8_t sc[8], m[8];
        kvs_k4_scales(x[i].scales, sc, m);
        const uint8_t *q = x[i].qs;
        for (int j = 0; j < 4; j++, q += 32) {
            const float d1 = d * sc[2 * j], m1 = dmin * m[2 * j];
            const float d2 = d * sc[2 * j + 1], m2 = dmin * m[2 * j + 1];
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}
void kvs_q4_K_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q4_K *w = vw;
    const kvs_block_q8_K *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        uint8_t sc[8], m[8];
        kvs_k4_scales(w[i].scales, sc, m);
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = w[i].qs + 32 * (j / 2);
            const int8_t *a = x[i].qs + 32 * j;
            const int shift = (j & 1) * 4;
            int s32 = 0;
            for (int l = 0; l < 32; l++) s32 += ((q[l] >> shift) & 0xF) * a[l];
            sumi += sc[j] * s32;
            summ += m[j] * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
        }
        acc += x[i].d * H2F(w[i].d) * (float)sumi - x[i].d * H2F(w[i].dmin) * (float)summ;
    }
    *s = (float)acc;
}

/* ---------------------------------------------------------------- q5_K */

void kvs_q5_K_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q5_K *y = vy;
    int L[KVS_QK_K];
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        quant_k4(x + i * KVS_QK_K, 31, &y[i].d, &y[i].dmin, y[i].scales, L);
        memset(y[i].qh, 0, sizeof y[i].qh);
        uint8_t m1 = 1, m2 = 2;
        for (int j = 0; j < KVS_QK_K; j += 64, m1 <<= 2, m2 <<= 2) {
            for (int l = 0; l < 32; l++) {
                int l1 = L[j + l], l2 = L[j + l + 32];
                if (l1 > 15) { l1 -= 16; y[i].qh[l] |= m1; }
                if (l2 > 15) { l2 -= 16; y[i].qh[l] |= m2; }
                y[i].qs[j / 2 + l] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
}
void kvs_q5_K_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q5_K *x = vx;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float d = H2F(x[i].d), dmin = H2F(x[i].dmin);
        uint8_t sc[8], m[8];
        kvs_k4_scales(x[i].scales, sc, m);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        unsigned u1 = 1, u2 = 2;
        for (int j = 0; j < 4; j++, ql += 32, u1 <<= 2, u2 <<= 2) {
            const float d1 = d * sc[2 * j], m1 = dmin * m[2 * j];
            const float d2 = d * sc[2 * j + 1], m2 = dmin * m[2 * j + 1];
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}
void kvs_q5_K_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q5_K *w = vw;
    const kvs_block_q8_K *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        uint8_t sc[8], m[8];
        kvs_k4_scales(w[i].scales, sc, m);
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = w[i].qs + 32 * (j / 2);
            const int8_t *a = x[i].qs + 32 * j;
            const int shift = (j & 1) * 4;
            int s32 = 0;
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0xF) | (((w[i].qh[l] >> j) & 1) << 4);
                s32 += v * a[l];
            }
            sumi += sc[j] * s32;
            summ += m[j] * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
        }
        acc += x[i].d * H2F(w[i].d) * (float)sumi - x[i].d * H2F(w[i].dmin) * (float)summ;
    }
    *s = (float)acc;
}

/* ---------------------------------------------------------------- q6_K */

/* 6-bit value (0..63) of element e (0..255) of a q6_K block. */
static inline int q6_val(const kvs_block_q6_K *b, int e) {
    const int half = e / 128, r = e % 128, g = r / 32, l = r % 32;
    const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
    int lo = (g & 1) ? ql[l + 32] : ql[l];
    lo = (g >= 2) ? (lo >> 4) : (lo & 0xF);
    return lo | (((qh[l] >> (2 * g)) & 3) << 4);
}

void kvs_q6_K_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_q6_K *y = vy;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float *xb = x + i * KVS_QK_K;
        float sc[16], max_sc = 0, amax_sc = 0;
        for (int j = 0; j < 16; j++) {
            float amax = 0, max = 0;
            for (int l = 0; l < 16; l++)
                if (fabsf(xb[16 * j + l]) > amax) { amax = fabsf(xb[16 * j + l]); max = xb[16 * j + l]; }
            sc[j] = max / -32.0f;
            if (fabsf(sc[j]) > amax_sc) { amax_sc = fabsf(sc[j]); max_sc = sc[j]; }
        }
        int L[KVS_QK_K];
        memset(y[i].scales, 0, sizeof y[i].scales);
        if (amax_sc == 0.0f) {
            y[i].d = 0;
            for (int j = 0; j < KVS_QK_K; j++) L[j] = 32;
        } else {
            const float iscale = -128.0f / max_sc;
            y[i].d = F2H(1.0f / iscale);
            const float d = H2F(y[i].d);
            for (int j = 0; j < 16; j++) {
                int v = nearest_int(iscale * sc[j]);
                y[i].scales[j] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
                const float dl = d * y[i].scales[j];
                for (int l = 0; l < 16; l++) {
                    int q = dl != 0.0f ? nearest_int(xb[16 * j + l] / dl) : 0;
                    q = q < -32 ? -32 : q > 31 ? 31 : q;
                    L[16 * j + l] = q + 32;
                }
            }
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = y[i].ql + 64 * h, *qh = y[i].qh + 32 * h;
            const int *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
                qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                  ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}
void kvs_q6_K_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q6_K *x = vx;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float d = H2F(x[i].d);
        for (int e = 0; e < KVS_QK_K; e++) {
            const int is = e / 16; /* scale index = 16-element chunk */
            y[i * KVS_QK_K + e] = d * (float)x[i].scales[is] * (float)(q6_val(&x[i], e) - 32);
        }
    }
}
void kvs_q6_K_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q6_K *w = vw;
    const kvs_block_q8_K *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        int32_t sumi = 0;
        for (int c = 0; c < 16; c++) {
            int s16 = 0;
            for (int l = 0; l < 16; l++) s16 += (q6_val(&w[i], 16 * c + l) - 32) * x[i].qs[16 * c + l];
            sumi += w[i].scales[c] * s16;
        }
        acc += x[i].d * H2F(w[i].d) * (float)sumi;
    }
    *s = (float)acc;
}

/* ---------------------------------------------------------------- q2_K / q3_K
 * (decode + dot only; quantizing to them is not supported) */

void kvs_q2_K_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q2_K *x = vx;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float d = H2F(x[i].d), dmin = H2F(x[i].dmin);
        for (int e = 0; e < KVS_QK_K; e++) {
            const int half = e / 128, r = e % 128, shift = 2 * (r / 32), l = r % 32;
            const uint8_t sc = x[i].scales[e / 16];
            const int q = (x[i].qs[32 * half + l] >> shift) & 3;
            y[i * KVS_QK_K + e] = d * (float)(sc & 0xF) * (float)q - dmin * (float)(sc >> 4);
        }
    }
}
void kvs_q2_K_from_float_ref(const float *x, void *y, int64_t n) { (void)x; (void)y; (void)n; }
void kvs_q2_K_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q2_K *w = vw;
    const kvs_block_q8_K *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        int32_t sumi = 0, summ = 0;
        for (int c = 0; c < 16; c++) {
            const uint8_t sc = w[i].scales[c];
            int s16 = 0;
            for (int l16 = 0; l16 < 16; l16++) {
                const int e = 16 * c + l16, half = e / 128, r = e % 128, shift = 2 * (r / 32), l = r % 32;
                s16 += ((w[i].qs[32 * half + l] >> shift) & 3) * x[i].qs[e];
            }
            sumi += (sc & 0xF) * s16;
            summ += (sc >> 4) * x[i].bsums[c];
        }
        acc += x[i].d * H2F(w[i].d) * (float)sumi - x[i].d * H2F(w[i].dmin) * (float)summ;
    }
    *s = (float)acc;
}

/* q3_K 6-bit scales: low 4 bits in bytes 0..7 (nibbles), high 2 bits in
 * bytes 8..11. Returns the 16 signed scales (already minus 32). */
static void q3_scales(const uint8_t *p, int *sc) {
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? (p[j] & 0xF) : (p[j - 8] >> 4);
        const int hi = (p[8 + (j % 4)] >> (2 * (j / 4))) & 3;
        sc[j] = (lo | (hi << 4)) - 32;
    }
}
static inline int q3_val(const kvs_block_q3_K *b, int e) {
    const int half = e / 128, r = e % 128, shift = 2 * (r / 32), l = r % 32;
    const int q = (b->qs[32 * half + l] >> shift) & 3;
    const int hbit = 4 * half + r / 32; /* bit index in hmask bytes */
    return q - ((b->hmask[l] >> hbit) & 1 ? 0 : 4);
}
void kvs_q3_K_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_q3_K *x = vx;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        const float d = H2F(x[i].d);
        int sc[16];
        q3_scales(x[i].scales, sc);
        for (int e = 0; e < KVS_QK_K; e++)
            y[i * KVS_QK_K + e] = d * (float)sc[e / 16] * (float)q3_val(&x[i], e);
    }
}
void kvs_q3_K_from_float_ref(const float *x, void *y, int64_t n) { (void)x; (void)y; (void)n; }
void kvs_q3_K_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_q3_K *w = vw;
    const kvs_block_q8_K *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK_K; i++) {
        int sc[16];
        q3_scales(w[i].scales, sc);
        int32_t sumi = 0;
        for (int c = 0; c < 16; c++) {
            int s16 = 0;
            for (int l = 0; l < 16; l++) s16 += q3_val(&w[i], 16 * c + l) * x[i].qs[16 * c + l];
            sumi += sc[c] * s16;
        }
        acc += x[i].d * H2F(w[i].d) * (float)sumi;
    }
    *s = (float)acc;
}

/* ---------------------------------------------------------------- mxfp4 */

const int8_t kvs_mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static int mxfp4_nearest(float v, float d) {
    int best = 0;
    float err = fabsf(v);
    for (int i = 1; i < 16; i++) {
        const float e = fabsf((float)kvs_mxfp4_values[i] * d - v);
        if (e < err) { err = e; best = i; }
    }
    return best;
}
/* ggml's quantize_row_mxfp4_ref: e = floor(log2(amax)) - 2 + 127 (the largest
 * value 6 = 12/2 then covers amax), nearest value with the lowest index on
 * ties; the exponent is clamped to the E8M0 range instead of wrapping. */
void kvs_mxfp4_from_float_ref(const float *x, void *vy, int64_t n) {
    kvs_block_mxfp4 *y = vy;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float *xb = x + i * KVS_QK;
        float amax = 0;
        for (int j = 0; j < KVS_QK; j++) amax = fabsf(xb[j]) > amax ? fabsf(xb[j]) : amax;
        int e = 0;
        if (amax > 0 && isfinite(amax)) {
            e = (int)floorf(log2f(amax)) - 2 + 127;
            e = e < 0 ? 0 : e > 254 ? 254 : e;
        }
        y[i].e = (uint8_t)e;
        const float d = kvs_e8m0_half((uint8_t)e);
        for (int j = 0; j < KVS_QK / 2; j++)
            y[i].qs[j] = (uint8_t)(mxfp4_nearest(xb[j], d) | (mxfp4_nearest(xb[j + 16], d) << 4));
    }
}
void kvs_mxfp4_to_float_ref(const void *vx, float *y, int64_t n) {
    const kvs_block_mxfp4 *x = vx;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        const float d = kvs_e8m0_half(x[i].e);
        for (int j = 0; j < KVS_QK / 2; j++) {
            y[i * KVS_QK + j] = (float)kvs_mxfp4_values[x[i].qs[j] & 0xF] * d;
            y[i * KVS_QK + j + 16] = (float)kvs_mxfp4_values[x[i].qs[j] >> 4] * d;
        }
    }
}
void kvs_mxfp4_vec_dot_ref(int64_t n, float *s, const void *vw, const void *vx) {
    const kvs_block_mxfp4 *w = vw;
    const kvs_block_q8_0 *x = vx;
    double acc = 0;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVS_QK / 2; j++)
            sumi += kvs_mxfp4_values[w[i].qs[j] & 0xF] * x[i].qs[j] + kvs_mxfp4_values[w[i].qs[j] >> 4] * x[i].qs[j + 16];
        acc += (float)sumi * (kvs_e8m0_half(w[i].e) * H2F(x[i].d));
    }
    *s = (float)acc;
}
