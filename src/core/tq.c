/* Reference codec of the rotated-codebook KV rows; the byte layout and the
 * quantization rule are documented in core/tq.h. The attention kernels read
 * the codes in place (attn/attn_avx2.c); this file is the scalar reference
 * the kernels and the dtype table (core/dtype.c) share. */
#include "core/tq.h"

#include <math.h>
#include <string.h>

#include "core/dtype.h"
#include "core/f16.h"
#include "core/tq_tables.h"

int kvs_tq_bits(uint32_t type, int sub) {
    switch (type) {
    case KVS_TYPE_TQ2: return 2;
    case KVS_TYPE_TQ2_5: return sub ? 2 : 3;
    case KVS_TYPE_TQ3: return 3;
    case KVS_TYPE_TQ3_5: return sub ? 3 : 4;
    case KVS_TYPE_TQ4: return 4;
    default: return 0;
    }
}

static size_t sub_bytes(int bits) { return bits == 2 ? 8 : bits == 3 ? 12 : 16; }

size_t kvs_tq_block_bytes(uint32_t type) {
    if (!kvs_tq_bits(type, 0)) return 0;
    return 2 + sub_bytes(kvs_tq_bits(type, 0)) + sub_bytes(kvs_tq_bits(type, 1));
}

size_t kvs_tq_sub_offset(uint32_t type, int sub) { return sub ? 2 + sub_bytes(kvs_tq_bits(type, 0)) : 2; }

const float *kvs_tq_codebook(int bits) {
    switch (bits) {
    case 1: return kvs_tq_cb1;
    case 2: return kvs_tq_cb2;
    case 3: return kvs_tq_cb3;
    case 4: return kvs_tq_cb4;
    default: return NULL;
    }
}

float kvs_tq_codebook_grid(int bits, int8_t grid[16]) {
    memset(grid, 0, 16);
    if (bits < 2 || bits > 4) return 0.0f;
    const float *cb = kvs_tq_codebook(bits);
    const int n = 1 << bits;
    const float c = 127.0f / cb[n - 1];
    for (int i = 0; i < n; i++) grid[i] = (int8_t)lrintf(cb[i] * c);
    return c;
}

static void to_float(uint32_t type, const void *x, float *y, int64_t n) {
    const uint8_t *p = x;
    const size_t bb = kvs_tq_block_bytes(type);
    for (int64_t b = 0; b < n / KVS_TQ_BLOCK; b++, p += bb, y += KVS_TQ_BLOCK) {
        uint16_t h;
        memcpy(&h, p, 2);
        const float s = kvs_f16_to_f32(h);
        for (int sub = 0; sub < 2; sub++) {
            const int bits = kvs_tq_bits(type, sub);
            const float *cb = kvs_tq_codebook(bits);
            const uint8_t *q = p + kvs_tq_sub_offset(type, sub);
            for (int i = 0; i < 32; i++) y[32 * sub + i] = s * cb[kvs_tq_code(q, bits, i)];
        }
    }
}

/* Index of the nearest centroid of the ascending codebook cb (2^bits entries). */
static unsigned nearest(const float *cb, int bits, float y) {
    if (y != y) y = 0.0f; /* NaN */
    unsigned c = 0, L = 1u << bits;
    while (c + 1 < L && y > 0.5f * (cb[c] + cb[c + 1])) c++;
    return c;
}

static void put_code(uint8_t *q, int bits, int i, unsigned c) {
    q[i >> 2] |= (uint8_t)((c & 3u) << (2 * (i & 3)));
    if (bits == 3) q[8 + (i >> 3)] |= (uint8_t)(((c >> 2) & 1u) << (i & 7));
    else if (bits == 4) q[8 + (i >> 2)] |= (uint8_t)(((c >> 2) & 3u) << (2 * (i & 3)));
}

static void from_float(uint32_t type, const float *x, void *y, int64_t n) {
    uint8_t *p = y;
    const size_t bb = kvs_tq_block_bytes(type);
    for (int64_t b = 0; b < n / KVS_TQ_BLOCK; b++, p += bb, x += KVS_TQ_BLOCK) {
        memset(p, 0, bb);
        double ss = 0.0;
        int nf = 0;
        for (int i = 0; i < KVS_TQ_BLOCK; i++)
            if (isfinite(x[i])) { ss += (double)x[i] * x[i]; nf++; }
        const double sigma = nf ? sqrt(ss / nf) : 0.0;
        float inv = sigma > 0.0 && isfinite(sigma) ? (float)(1.0 / sigma) : 0.0f;
        double s = 0.0;
        /* codes for the scale sigma, then the least-squares scale of those
         * codes; KVS_TQ_SCALE_ROUNDS rounds of this Lloyd step on the scale */
        for (int it = 0; it < KVS_TQ_SCALE_ROUNDS; it++) {
            memset(p + 2, 0, bb - 2);
            double xc = 0.0, cc = 0.0;
            for (int sub = 0; sub < 2; sub++) {
                const int bits = kvs_tq_bits(type, sub);
                const float *cb = kvs_tq_codebook(bits);
                uint8_t *q = p + kvs_tq_sub_offset(type, sub);
                for (int i = 0; i < 32; i++) {
                    const float v = x[32 * sub + i];
                    unsigned c;
                    if (isinf(v)) c = v > 0 ? (1u << bits) - 1 : 0;
                    else c = nearest(cb, bits, inv > 0.0f ? v * inv : 0.0f);
                    put_code(q, bits, i, c);
                    if (isfinite(v)) { xc += (double)v * cb[c]; cc += (double)cb[c] * cb[c]; }
                }
            }
            s = cc > 0.0 && inv > 0.0f ? xc / cc : 0.0;
            if (!isfinite(s) || !(s > 0.0)) { s = 0.0; break; }
            inv = (float)(1.0 / s);
        }
        if (s > 65504.0) s = 65504.0;
        if (s < -65504.0) s = -65504.0;
        const uint16_t h = kvs_f32_to_f16((float)s);
        memcpy(p, &h, 2);
    }
}

#define TQ_FNS(T, id)                                                                             \
    void kvs_##T##_to_float_ref(const void *x, float *y, int64_t n) { to_float(id, x, y, n); }     \
    void kvs_##T##_from_float_ref(const float *x, void *y, int64_t n) { from_float(id, x, y, n); }
TQ_FNS(tq2, KVS_TYPE_TQ2)
TQ_FNS(tq2_5, KVS_TYPE_TQ2_5)
TQ_FNS(tq3, KVS_TYPE_TQ3)
TQ_FNS(tq3_5, KVS_TYPE_TQ3_5)
TQ_FNS(tq4, KVS_TYPE_TQ4)

/* ---- 1-bit QJL sketch of the residual (the layout in core/tq.h) ---- */

uint32_t kvs_tq_qjl_base(uint32_t type) {
    return type == KVS_TYPE_TQ2J ? KVS_TYPE_TQ2 : type == KVS_TYPE_TQ3J ? KVS_TYPE_TQ3 : 0;
}

size_t kvs_tq_qjl_block_bytes(uint32_t type) {
    const uint32_t base = kvs_tq_qjl_base(type);
    return base ? kvs_tq_block_bytes(base) + 2 + KVS_TQ_BLOCK / 8 : 0;
}

/* x <- H D x over one block: D = diag(+-1) from KVS_TQ_QJL_SIGNS (bit i set:
 * element i negated), H the orthonormal Walsh-Hadamard matrix of order 64
 * (Sylvester ordering); inverse: D H x (H is its own inverse). */
static void fwht64(float *x) {
    for (int h = 1; h < KVS_TQ_BLOCK; h *= 2)
        for (int i = 0; i < KVS_TQ_BLOCK; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                const float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    for (int i = 0; i < KVS_TQ_BLOCK; i++) x[i] *= 0.125f;
}

static void flip_signs(float *x) {
    for (int i = 0; i < KVS_TQ_BLOCK; i++)
        if ((KVS_TQ_QJL_SIGNS >> i) & 1u) x[i] = -x[i];
}

static void qjl_to_float(uint32_t type, const void *x, float *y, int64_t n) {
    const uint32_t base = kvs_tq_qjl_base(type);
    const size_t bb = kvs_tq_qjl_block_bytes(type), tb = kvs_tq_block_bytes(base);
    const uint8_t *p = x;
    for (int64_t b = 0; b < n / KVS_TQ_BLOCK; b++, p += bb, y += KVS_TQ_BLOCK) {
        to_float(base, p, y, KVS_TQ_BLOCK);
        uint16_t h;
        memcpy(&h, p + tb, 2);
        const float g = kvs_f16_to_f32(h) * KVS_TQ_QJL_GAIN;
        float z[KVS_TQ_BLOCK];
        for (int i = 0; i < KVS_TQ_BLOCK; i++) z[i] = (p[tb + 2 + i / 8] >> (i % 8)) & 1u ? 1.0f : -1.0f;
        fwht64(z);
        flip_signs(z);
        for (int i = 0; i < KVS_TQ_BLOCK; i++) y[i] += g * z[i];
    }
}

static void qjl_from_float(uint32_t type, const float *x, void *y, int64_t n) {
    const uint32_t base = kvs_tq_qjl_base(type);
    const size_t bb = kvs_tq_qjl_block_bytes(type), tb = kvs_tq_block_bytes(base);
    uint8_t *p = y;
    for (int64_t b = 0; b < n / KVS_TQ_BLOCK; b++, p += bb, x += KVS_TQ_BLOCK) {
        from_float(base, x, p, KVS_TQ_BLOCK);
        float r[KVS_TQ_BLOCK];
        to_float(base, p, r, KVS_TQ_BLOCK);
        double ss = 0.0;
        for (int i = 0; i < KVS_TQ_BLOCK; i++) {
            r[i] = isfinite(x[i]) ? x[i] - r[i] : 0.0f; /* a non-finite input: no residual to sketch */
            ss += (double)r[i] * r[i];
        }
        float g = (float)sqrt(ss);
        if (!(g <= 65504.0f)) g = 65504.0f;
        const uint16_t h = kvs_f32_to_f16(g);
        memcpy(p + tb, &h, 2);
        flip_signs(r);
        fwht64(r);
        memset(p + tb + 2, 0, KVS_TQ_BLOCK / 8);
        for (int i = 0; i < KVS_TQ_BLOCK; i++)
            if (r[i] >= 0.0f) p[tb + 2 + i / 8] |= (uint8_t)(1u << (i % 8));
    }
}

void kvs_tq2j_to_float_ref(const void *x, float *y, int64_t n) { qjl_to_float(KVS_TYPE_TQ2J, x, y, n); }
void kvs_tq3j_to_float_ref(const void *x, float *y, int64_t n) { qjl_to_float(KVS_TYPE_TQ3J, x, y, n); }
void kvs_tq2j_from_float_ref(const float *x, void *y, int64_t n) { qjl_from_float(KVS_TYPE_TQ2J, x, y, n); }
void kvs_tq3j_from_float_ref(const float *x, void *y, int64_t n) { qjl_from_float(KVS_TYPE_TQ3J, x, y, n); }
