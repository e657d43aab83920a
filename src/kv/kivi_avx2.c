/* AVX2+FMA+F16C twins of the KIVI dequantizers and the Hadamard transform
 * (kv/kivi.h). Eight codes of any width 1..8 are unpacked with one 8-byte
 * broadcast load, a byte shuffle that puts each code's (at most two) source
 * bytes into its 32-bit lane, a per-lane variable shift and a mask; then
 * x = q*s + m with an FMA, bit-identical to the scalar q*s + m because q*s is
 * exact (kivi.h). Shapes the vector loops do not cover (d*bits not a byte
 * multiple, value groups not a multiple of 8 channels, Hadamard d < 8) use
 * the scalar references. Compiled with -mavx2 -mfma -mf16c; entered only
 * when kvs_cpu()->avx2 (kv/kivi.c). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "core/f16.h"
#include "kv/kivi.h"

/* Shuffle/shift/mask that turn 8 packed `bits`-wide codes (LSB-first, the
 * first code at bit 0 of the loaded qword) into 8 x i32. */
typedef struct { __m256i shuf, shift, mask; } unpack8;

static unpack8 unpack8_make(int bits) {
    uint8_t sb[32];
    int32_t sh[8];
    for (int j = 0; j < 8; j++) {
        const int o = j * bits, byte = o >> 3;
        sh[j] = o & 7;
        /* lane j lives in 128-bit half j/4, dword j%4 of that half */
        uint8_t *q = sb + 16 * (j >> 2) + 4 * (j & 3);
        q[0] = (uint8_t)byte;
        q[1] = (uint8_t)((byte + 1) & 7); /* only read when the code spans it */
        q[2] = 0x80;
        q[3] = 0x80;
    }
    unpack8 u;
    u.shuf = _mm256_loadu_si256((const __m256i *)sb);
    u.shift = _mm256_loadu_si256((const __m256i *)sh);
    u.mask = _mm256_set1_epi32((1 << bits) - 1);
    return u;
}

/* 8 codes starting at byte p; `avail` bytes are readable from p. */
static inline __m256 codes8(const uint8_t *p, size_t avail, int bits, const unpack8 *u) {
    __m256i v;
    if (avail >= 8) {
        v = _mm256_broadcastq_epi64(_mm_loadl_epi64((const __m128i *)p));
    } else {
        uint64_t w = 0;
        memcpy(&w, p, (size_t)bits); /* 8 codes need exactly `bits` bytes */
        v = _mm256_set1_epi64x((long long)w);
    }
    v = _mm256_shuffle_epi8(v, u->shuf);
    v = _mm256_and_si256(_mm256_srlv_epi32(v, u->shift), u->mask);
    return _mm256_cvtepi32_ps(v);
}

static inline __m256 load8_f16(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline float load_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* scalar code fetch, same as the reference */
static inline unsigned get_code(const uint8_t *p, size_t idx, int bits) {
    const size_t o = idx * (size_t)bits;
    const unsigned sh = (unsigned)(o & 7);
    unsigned v = p[o >> 3] >> sh;
    if (sh + (unsigned)bits > 8) v |= (unsigned)p[(o >> 3) + 1] << (8 - sh);
    return v & ((1u << bits) - 1u);
}

void kvs_kivi_dequantize_keys_avx2(const uint8_t *blk, int d, int G, int bits, int t0, int nt,
                                   float *out) {
    if (((size_t)d * (size_t)bits) % 8 != 0 || d < 8) {
        kvs_kivi_dequantize_keys_ref(blk, d, G, bits, t0, nt, out);
        return;
    }
    const unpack8 u = unpack8_make(bits);
    const uint8_t *codes = blk + (size_t)4 * (size_t)d;
    const size_t cap = kvs_kivi_key_block_bytes(d, G, bits) - (size_t)4 * (size_t)d;
    const size_t row_bytes = (size_t)d * (size_t)bits / 8;
    const int dv = d & ~7;
    /* tiles of up to 32 channels: scales/mins stay in registers across tokens */
    for (int c0 = 0; c0 < dv; c0 += 32) {
        const int nch = (dv - c0) >= 32 ? 4 : (dv - c0) / 8;
        __m256 s[4], m[4];
        for (int k = 0; k < nch; k++) {
            s[k] = load8_f16(blk + 2 * (size_t)(c0 + 8 * k));
            m[k] = load8_f16(blk + 2 * ((size_t)d + (size_t)(c0 + 8 * k)));
        }
        for (int i = 0; i < nt; i++) {
            const size_t rb = (size_t)(t0 + i) * row_bytes;
            float *o = out + (size_t)i * (size_t)d + (size_t)c0;
            if (nch == 4) {
                for (int k = 0; k < 4; k++) {
                    const size_t off = rb + (size_t)(c0 + 8 * k) * (size_t)bits / 8;
                    const __m256 q = codes8(codes + off, cap - off, bits, &u);
                    _mm256_storeu_ps(o + 8 * k, _mm256_fmadd_ps(q, s[k], m[k]));
                }
            } else {
                for (int k = 0; k < nch; k++) {
                    const size_t off = rb + (size_t)(c0 + 8 * k) * (size_t)bits / 8;
                    const __m256 q = codes8(codes + off, cap - off, bits, &u);
                    _mm256_storeu_ps(o + 8 * k, _mm256_fmadd_ps(q, s[k], m[k]));
                }
            }
        }
    }
    for (int c = dv; c < d; c++) { /* channel tail: the reference's ops */
        const float s = load_f16(blk + 2 * (size_t)c);
        const float m = load_f16(blk + 2 * ((size_t)d + (size_t)c));
        for (int i = 0; i < nt; i++) {
            const size_t idx = (size_t)(t0 + i) * (size_t)d + (size_t)c;
            out[(size_t)i * (size_t)d + (size_t)c] = (float)get_code(codes, idx, bits) * s + m;
        }
    }
}

void kvs_kivi_dequantize_value_avx2(const uint8_t *row, int d, int G, int bits, float *out) {
    if (G % 8 != 0 || d < 8) {
        kvs_kivi_dequantize_value_ref(row, d, G, bits, out);
        return;
    }
    const unpack8 u = unpack8_make(bits);
    const size_t ng = ((size_t)d + (size_t)G - 1) / (size_t)G;
    const uint8_t *codes = row + 4 * ng;
    const size_t cap = ((size_t)d * (size_t)bits + 7) / 8;
    const int dv = d & ~7;
    for (int c = 0; c < dv; c += 8) { /* G % 8 == 0: a chunk is inside one group */
        const size_t g = (size_t)c / (size_t)G;
        const __m256 s = _mm256_set1_ps(load_f16(row + 2 * g));
        const __m256 m = _mm256_set1_ps(load_f16(row + 2 * (ng + g)));
        const size_t off = (size_t)c * (size_t)bits / 8;
        const __m256 q = codes8(codes + off, cap - off, bits, &u);
        _mm256_storeu_ps(out + c, _mm256_fmadd_ps(q, s, m));
    }
    for (int c = dv; c < d; c++) {
        const size_t g = (size_t)c / (size_t)G;
        out[c] = (float)get_code(codes, (size_t)c, bits) * load_f16(row + 2 * g) +
                 load_f16(row + 2 * (ng + g));
    }
}

/* ---- Hadamard ---- */

int kvs_hadamard_avx2(float *x, int d, uint64_t sign_seed) {
    if (d < 8 || (d & (d - 1)) != 0) return kvs_hadamard_ref(x, d, sign_seed);
    const __m256i bitsel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    if (sign_seed != 0) {
        for (int w = 0; w * 64 < d; w++) {
            const uint64_t mw = kvs_hadamard_sign_word(sign_seed, (uint64_t)w);
            const int n = d - w * 64 < 64 ? d - w * 64 : 64;
            for (int i = 0; i < n; i += 8) {
                const __m256i b = _mm256_set1_epi32((int)((mw >> i) & 0xff));
                const __m256i f = _mm256_cmpeq_epi32(_mm256_and_si256(b, bitsel), bitsel);
                float *p = x + w * 64 + i;
                const __m256 flip = _mm256_castsi256_ps(_mm256_slli_epi32(f, 31));
                _mm256_storeu_ps(p, _mm256_xor_ps(_mm256_loadu_ps(p), flip));
            }
        }
    }
    /* stages h = 1, 2, 4 inside each 8-float vector: partner p; low member
     * gets v + p (= a + b), high member gets p - v (= a - b) */
    for (int i = 0; i < d; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), p;
        p = _mm256_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1));
        v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xAA);
        p = _mm256_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2));
        v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xCC);
        p = _mm256_permute2f128_ps(v, v, 0x01);
        v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xF0);
        _mm256_storeu_ps(x + i, v);
    }
    for (int h = 8; h < d; h <<= 1)
        for (int i = 0; i < d; i += 2 * h)
            for (int j = i; j < i + h; j += 8) {
                const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
                _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
                _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
            }
    const __m256 sc = _mm256_set1_ps((float)(1.0 / sqrt((double)d)));
    for (int i = 0; i < d; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), sc));
    return 0;
}
