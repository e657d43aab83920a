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
#include <stdbool.h>
#include <string.h>

#include "core/f16.h"
#include "kv/kivi.h"

#define Z 0x80
/* Per code width (index bits-1): the pshufb control that copies code j's
 * (at most two) source bytes into dword j, and code j's bit shift. Codes
 * 0-3 are decoded in the low 128-bit half, 4-7 in the high half; both
 * halves hold the same 8 loaded bytes. 0x80 zeroes the byte. */
static const uint8_t k_shuf[8][32] __attribute__((aligned(32))) = {
    {0, 1, Z, Z, 0, 1, Z, Z, 0, 1, Z, Z, 0, 1, Z, Z,
     0, 1, Z, Z, 0, 1, Z, Z, 0, 1, Z, Z, 0, 1, Z, Z},
    {0, 1, Z, Z, 0, 1, Z, Z, 0, 1, Z, Z, 0, 1, Z, Z,
     1, 2, Z, Z, 1, 2, Z, Z, 1, 2, Z, Z, 1, 2, Z, Z},
    {0, 1, Z, Z, 0, 1, Z, Z, 0, 1, Z, Z, 1, 2, Z, Z,
     1, 2, Z, Z, 1, 2, Z, Z, 2, 3, Z, Z, 2, 3, Z, Z},
    {0, 1, Z, Z, 0, 1, Z, Z, 1, 2, Z, Z, 1, 2, Z, Z,
     2, 3, Z, Z, 2, 3, Z, Z, 3, 4, Z, Z, 3, 4, Z, Z},
    {0, 1, Z, Z, 0, 1, Z, Z, 1, 2, Z, Z, 1, 2, Z, Z,
     2, 3, Z, Z, 3, 4, Z, Z, 3, 4, Z, Z, 4, 5, Z, Z},
    {0, 1, Z, Z, 0, 1, Z, Z, 1, 2, Z, Z, 2, 3, Z, Z,
     3, 4, Z, Z, 3, 4, Z, Z, 4, 5, Z, Z, 5, 6, Z, Z},
    {0, 1, Z, Z, 0, 1, Z, Z, 1, 2, Z, Z, 2, 3, Z, Z,
     3, 4, Z, Z, 4, 5, Z, Z, 5, 6, Z, Z, 6, 7, Z, Z},
    {0, 1, Z, Z, 1, 2, Z, Z, 2, 3, Z, Z, 3, 4, Z, Z,
     4, 5, Z, Z, 5, 6, Z, Z, 6, 7, Z, Z, 7, 0, Z, Z},
};
static const int32_t k_shift[8][8] __attribute__((aligned(32))) = {
    {0, 1, 2, 3, 4, 5, 6, 7},
    {0, 2, 4, 6, 0, 2, 4, 6},
    {0, 3, 6, 1, 4, 7, 2, 5},
    {0, 4, 0, 4, 0, 4, 0, 4},
    {0, 5, 2, 7, 4, 1, 6, 3},
    {0, 6, 4, 2, 0, 6, 4, 2},
    {0, 7, 6, 5, 4, 3, 2, 1},
    {0, 0, 0, 0, 0, 0, 0, 0},
};
#undef Z

typedef struct { __m256i shuf, shift, mask; } unpack8;

static inline unpack8 unpack8_make(int bits) {
    unpack8 u;
    u.shuf = _mm256_load_si256((const __m256i *)k_shuf[bits - 1]);
    u.shift = _mm256_load_si256((const __m256i *)k_shift[bits - 1]);
    u.mask = _mm256_set1_epi32((1 << bits) - 1);
    return u;
}

static inline __m256 unpack(__m256i v, unpack8 u) {
    v = _mm256_shuffle_epi8(v, u.shuf);
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, u.shift), u.mask));
}
/* 8 codes starting at byte p; 8 bytes readable from p */
static inline __m256 codes8(const uint8_t *p, unpack8 u) {
    return unpack(_mm256_broadcastq_epi64(_mm_loadl_epi64((const __m128i *)p)), u);
}
/* 8 codes at codes + off when fewer than 8 bytes follow it inside the
 * stream of `cap` bytes: load the stream's last 8 bytes and shift (no
 * byte-wise copy, so no store-forwarding stall); tiny streams copy. */
static inline __m256 codes8_tail(const uint8_t *codes, size_t off, size_t cap, int bits, unpack8 u) {
    uint64_t w = 0;
    if (cap >= 8) {
        memcpy(&w, codes + cap - 8, 8);
        w >>= 8 * (off + 8 - cap); /* 8..56: off < cap < off + 8 */
    } else {
        memcpy(&w, codes + off, (size_t)bits);
    }
    return unpack(_mm256_set1_epi64x((long long)w), u);
}
/* 8 codes at codes + off, either way */
static inline __m256 codes8_at(const uint8_t *codes, size_t off, size_t cap, int bits, unpack8 u) {
    return off + 8 <= cap ? codes8(codes + off, u) : codes8_tail(codes, off, cap, bits, u);
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
    /* tiles of 32 channels: scales/mins stay in registers across tokens */
    int c0 = 0;
    for (; c0 + 32 <= dv; c0 += 32) {
        const __m256 s0 = load8_f16(blk + 2 * (size_t)c0), s1 = load8_f16(blk + 2 * (size_t)c0 + 16);
        const __m256 s2 = load8_f16(blk + 2 * (size_t)c0 + 32), s3 = load8_f16(blk + 2 * (size_t)c0 + 48);
        const uint8_t *mp = blk + 2 * ((size_t)d + (size_t)c0);
        const __m256 m0 = load8_f16(mp), m1 = load8_f16(mp + 16), m2 = load8_f16(mp + 32);
        const __m256 m3 = load8_f16(mp + 48);
        const size_t cb = (size_t)c0 * (size_t)bits / 8; /* byte of channel c0 in a row */
        for (int i = 0; i < nt; i++) {
            const size_t off = (size_t)(t0 + i) * row_bytes + cb;
            const uint8_t *p = codes + off;
            float *o = out + (size_t)i * (size_t)d + (size_t)c0;
            if (off + 3 * (size_t)bits + 8 <= cap) {
                _mm256_storeu_ps(o, _mm256_fmadd_ps(codes8(p, u), s0, m0));
                _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(codes8(p + bits, u), s1, m1));
                _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(codes8(p + 2 * bits, u), s2, m2));
                _mm256_storeu_ps(o + 24, _mm256_fmadd_ps(codes8(p + 3 * bits, u), s3, m3));
            } else {
                const size_t b1 = (size_t)bits;
                _mm256_storeu_ps(o, _mm256_fmadd_ps(codes8_at(codes, off, cap, bits, u), s0, m0));
                _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(codes8_at(codes, off + b1, cap, bits, u), s1, m1));
                _mm256_storeu_ps(o + 16,
                                 _mm256_fmadd_ps(codes8_at(codes, off + 2 * b1, cap, bits, u), s2, m2));
                _mm256_storeu_ps(o + 24,
                                 _mm256_fmadd_ps(codes8_at(codes, off + 3 * b1, cap, bits, u), s3, m3));
            }
        }
    }
    for (; c0 < dv; c0 += 8) {
        const __m256 s = load8_f16(blk + 2 * (size_t)c0);
        const __m256 m = load8_f16(blk + 2 * ((size_t)d + (size_t)c0));
        const size_t cb = (size_t)c0 * (size_t)bits / 8;
        for (int i = 0; i < nt; i++) {
            const size_t off = (size_t)(t0 + i) * row_bytes + cb;
            const __m256 q = codes8_at(codes, off, cap, bits, u);
            _mm256_storeu_ps(out + (size_t)i * (size_t)d + (size_t)c0, _mm256_fmadd_ps(q, s, m));
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

static inline void value_row_avx2(const uint8_t *row, int d, int G, int bits, bool sym, unpack8 u, float *out) {
    const size_t ng = ((size_t)d + (size_t)G - 1) / (size_t)G;
    const uint8_t *codes = row + kvs_kivi_value_codes_offset(d, G, sym);
    const size_t cap = ((size_t)d * (size_t)bits + 7) / 8;
    const int dv = d & ~7;
    for (size_t g = 0; g < ng; g++) { /* G % 8 == 0: a chunk of 8 lies in one group */
        const float sg = load_f16(row + 2 * g);
        const __m256 s = _mm256_set1_ps(sg);
        const __m256 m = _mm256_set1_ps(sym ? kvs_kivi_sym_min(sg, bits) : load_f16(row + 2 * (ng + g)));
        const int c1 = (int)((g + 1) * (size_t)G < (size_t)dv ? (g + 1) * (size_t)G : (size_t)dv);
        for (int c = (int)(g * (size_t)G); c < c1; c += 8) {
            const size_t off = (size_t)c * (size_t)bits / 8;
            const __m256 q = codes8_at(codes, off, cap, bits, u);
            _mm256_storeu_ps(out + c, _mm256_fmadd_ps(q, s, m));
        }
    }
    for (int c = dv; c < d; c++) {
        const size_t g = (size_t)c / (size_t)G;
        const float sg = load_f16(row + 2 * g);
        out[c] = (float)get_code(codes, (size_t)c, bits) * sg +
                 (sym ? kvs_kivi_sym_min(sg, bits) : load_f16(row + 2 * (ng + g)));
    }
}

void kvs_kivi_dequantize_value_avx2(const uint8_t *row, int d, int G, int bits, bool sym, float *out) {
    if (G % 8 != 0 || d < 8) {
        kvs_kivi_dequantize_value_ref(row, d, G, bits, sym, out);
        return;
    }
    value_row_avx2(row, d, G, bits, sym, unpack8_make(bits), out);
}

void kvs_kivi_dequantize_values_avx2(const uint8_t *rows, size_t row_stride, int n, int d, int G,
                                     int bits, bool sym, float *out) {
    if (G % 8 != 0 || d < 8) {
        kvs_kivi_dequantize_values_ref(rows, row_stride, n, d, G, bits, sym, out);
        return;
    }
    const unpack8 u = unpack8_make(bits);
    for (int i = 0; i < n; i++)
        value_row_avx2(rows + (size_t)i * row_stride, d, G, bits, sym, u, out + (size_t)i * (size_t)d);
}

/* ---- attention on the codes ---- */

static inline __m128 hsum4x(__m256 c0, __m256 c1, __m256 c2, __m256 c3) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(c0, c1), _mm256_hadd_ps(c2, c3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* RR (1..3) folded query rows x 4 tokens of codes at a time. */
static inline __attribute__((always_inline)) void key_scores_rows(const int RR, const uint8_t *codes, size_t cap,
                                                                  size_t row_bytes, int d, int bits, unpack8 u,
                                                                  int t0, int n, const float *fq, const float *bias,
                                                                  float *out, size_t out_stride) {
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256 a[3][4];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++)
            _Pragma("GCC unroll 4")
            for (int j = 0; j < 4; j++) a[r][j] = _mm256_setzero_ps();
        const size_t o0 = (size_t)(t0 + i) * row_bytes;
        /* every 8-byte load of these 4 rows inside the block: no tail checks */
        const bool inside = o0 + 3 * row_bytes + (size_t)(d - 8) * (size_t)bits / 8 + 8 <= cap;
        for (int c = 0; c < d; c += 8) {
            const size_t off = o0 + (size_t)c * (size_t)bits / 8;
            __m256 x[4];
            if (inside) {
                _Pragma("GCC unroll 4")
                for (int j = 0; j < 4; j++) x[j] = codes8(codes + off + (size_t)j * row_bytes, u);
            } else {
                _Pragma("GCC unroll 4")
                for (int j = 0; j < 4; j++) x[j] = codes8_at(codes, off + (size_t)j * row_bytes, cap, bits, u);
            }
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++) {
                const __m256 qv = _mm256_loadu_ps(fq + (size_t)r * (size_t)d + (size_t)c);
                _Pragma("GCC unroll 4")
                for (int j = 0; j < 4; j++) a[r][j] = _mm256_fmadd_ps(qv, x[j], a[r][j]);
            }
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++)
            _mm_storeu_ps(out + (size_t)r * out_stride + (size_t)i,
                          _mm_add_ps(hsum4x(a[r][0], a[r][1], a[r][2], a[r][3]), _mm_set1_ps(bias[r])));
    }
    for (; i < n; i++) {
        __m256 a[3];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) a[r] = _mm256_setzero_ps();
        const size_t o0 = (size_t)(t0 + i) * row_bytes;
        for (int c = 0; c < d; c += 8) {
            const __m256 x = codes8_at(codes, o0 + (size_t)c * (size_t)bits / 8, cap, bits, u);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++)
                a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(fq + (size_t)r * (size_t)d + (size_t)c), x, a[r]);
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) out[(size_t)r * out_stride + (size_t)i] = hsum8(a[r]) + bias[r];
    }
}

void kvs_kivi_key_scores_avx2(const uint8_t *blk, int d, int G, int bits, int t0, int n, const float *const *q,
                              int R, float *out, size_t out_stride, float *fold) {
    if (((size_t)d * (size_t)bits) % 8 != 0 || d % 8 != 0) {
        kvs_kivi_key_scores_ref(blk, d, G, bits, t0, n, q, R, out, out_stride);
        return;
    }
    const unpack8 u = unpack8_make(bits);
    const uint8_t *codes = blk + (size_t)4 * (size_t)d;
    const size_t cap = kvs_kivi_key_block_bytes(d, G, bits) - (size_t)4 * (size_t)d;
    const size_t row_bytes = (size_t)d * (size_t)bits / 8;
    for (int r0 = 0; r0 < R; r0 += 3) {
        const int rr = R - r0 < 3 ? R - r0 : 3;
        float bias[3];
        for (int r = 0; r < rr; r++) { /* q'_c = q_c s_c, bias = sum_c q_c m_c */
            const float *qr = q[r0 + r];
            float *f = fold + (size_t)r * (size_t)d;
            __m256 b = _mm256_setzero_ps();
            for (int c = 0; c < d; c += 8) {
                const __m256 qv = _mm256_loadu_ps(qr + c);
                _mm256_storeu_ps(f + c, _mm256_mul_ps(qv, load8_f16(blk + 2 * (size_t)c)));
                b = _mm256_fmadd_ps(qv, load8_f16(blk + 2 * ((size_t)d + (size_t)c)), b);
            }
            bias[r] = hsum8(b);
        }
        float *o = out + (size_t)r0 * out_stride;
        if (rr == 3) key_scores_rows(3, codes, cap, row_bytes, d, bits, u, t0, n, fold, bias, o, out_stride);
        else if (rr == 2) key_scores_rows(2, codes, cap, row_bytes, d, bits, u, t0, n, fold, bias, o, out_stride);
        else key_scores_rows(1, codes, cap, row_bytes, d, bits, u, t0, n, fold, bias, o, out_stride);
    }
}

/* 8 codes at cd + off of a value row; `more`: another row follows this one
 * in the same buffer, so a load running past the row's codes stays inside
 * readable memory and the tail path is only needed for the last row */
static inline __m256 codes8_row(const uint8_t *cd, size_t off, size_t cap, int bits, unpack8 u, bool more) {
    return more ? codes8(cd + off, u) : codes8_at(cd, off, cap, bits, u);
}

/* one f16 broadcast to 8 f32 lanes (exact, like load_f16) */
static inline __m256 bcast_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* RR (1..3) rows of weights, 16 value channels at a time (one group each
 * 8-chunk: G % 8 == 0), dequantized in registers. */
static inline __attribute__((always_inline)) void value_accum_rows(const int RR, const uint8_t *rows,
                                                                   size_t row_stride, int n, int d, int G,
                                                                   int bits, bool sym, unpack8 u, const float *p,
                                                                   size_t p_stride, float *acc,
                                                                   size_t acc_stride) {
    const size_t ng = ((size_t)d + (size_t)G - 1) / (size_t)G, coff = kvs_kivi_value_codes_offset(d, G, sym);
    const size_t cap = ((size_t)d * (size_t)bits + 7) / 8;
    const __m256 neg_half = _mm256_set1_ps(kvs_kivi_sym_min(1.0f, bits)); /* sym: m = s * (-(2^bits-1)/2) */
    int c = 0;
    for (; c + 16 <= d; c += 16) {
        const size_t g0 = (size_t)c / (size_t)G, g1 = (size_t)(c + 8) / (size_t)G;
        const size_t off = (size_t)c * (size_t)bits / 8;
        __m256 a[3][2];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) {
            a[r][0] = _mm256_loadu_ps(acc + (size_t)r * acc_stride + (size_t)c);
            a[r][1] = _mm256_loadu_ps(acc + (size_t)r * acc_stride + (size_t)c + 8);
        }
        for (int i = 0; i < n; i++) {
            const uint8_t *row = rows + (size_t)i * row_stride, *cd = row + coff;
            const bool more = i + 1 < n; /* a later row follows: 8-byte loads may run into it */
            const __m256 s0 = bcast_f16(row + 2 * g0);
            const __m256 m0 = sym ? _mm256_mul_ps(s0, neg_half) : bcast_f16(row + 2 * (ng + g0));
            __m256 s1 = s0, m1 = m0; /* G % 16 == 0: both halves in one group */
            if (g1 != g0) {
                s1 = bcast_f16(row + 2 * g1);
                m1 = sym ? _mm256_mul_ps(s1, neg_half) : bcast_f16(row + 2 * (ng + g1));
            }
            const __m256 x0 = _mm256_fmadd_ps(codes8_row(cd, off, cap, bits, u, more), s0, m0);
            const __m256 x1 = _mm256_fmadd_ps(codes8_row(cd, off + (size_t)bits, cap, bits, u, more), s1, m1);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++) {
                const __m256 w = _mm256_broadcast_ss(p + (size_t)r * p_stride + (size_t)i);
                a[r][0] = _mm256_fmadd_ps(w, x0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(w, x1, a[r][1]);
            }
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) {
            _mm256_storeu_ps(acc + (size_t)r * acc_stride + (size_t)c, a[r][0]);
            _mm256_storeu_ps(acc + (size_t)r * acc_stride + (size_t)c + 8, a[r][1]);
        }
    }
    for (; c < d; c += 8) {
        const size_t g0 = (size_t)c / (size_t)G, off = (size_t)c * (size_t)bits / 8;
        __m256 a[3];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) a[r] = _mm256_loadu_ps(acc + (size_t)r * acc_stride + (size_t)c);
        for (int i = 0; i < n; i++) {
            const uint8_t *row = rows + (size_t)i * row_stride, *cd = row + coff;
            const bool more = i + 1 < n; /* a later row follows: 8-byte loads may run into it */
            const __m256 s0 = bcast_f16(row + 2 * g0);
            const __m256 m0 = sym ? _mm256_mul_ps(s0, neg_half) : bcast_f16(row + 2 * (ng + g0));
            const __m256 x0 = _mm256_fmadd_ps(codes8_row(cd, off, cap, bits, u, more), s0, m0);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RR; r++)
                a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (size_t)r * p_stride + (size_t)i), x0, a[r]);
        }
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RR; r++) _mm256_storeu_ps(acc + (size_t)r * acc_stride + (size_t)c, a[r]);
    }
}

void kvs_kivi_value_accum_avx2(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym,
                               const float *p, size_t p_stride, int R, float *acc, size_t acc_stride) {
    if (G % 8 != 0 || d % 8 != 0) {
        kvs_kivi_value_accum_ref(rows, row_stride, n, d, G, bits, sym, p, p_stride, R, acc, acc_stride);
        return;
    }
    const unpack8 u = unpack8_make(bits);
    for (int r0 = 0; r0 < R; r0 += 3) {
        const int rr = R - r0 < 3 ? R - r0 : 3;
        const float *pr = p + (size_t)r0 * p_stride;
        float *ar = acc + (size_t)r0 * acc_stride;
        if (rr == 3) value_accum_rows(3, rows, row_stride, n, d, G, bits, sym, u, pr, p_stride, ar, acc_stride);
        else if (rr == 2) value_accum_rows(2, rows, row_stride, n, d, G, bits, sym, u, pr, p_stride, ar, acc_stride);
        else value_accum_rows(1, rows, row_stride, n, d, G, bits, sym, u, pr, p_stride, ar, acc_stride);
    }
}

/* ---- Hadamard ---- */

/* stages h = 1, 2, 4 inside one 8-float vector: with partner p, the low
 * member becomes v + p (= a + b), the high member p - v (= a - b) */
static inline __m256 fwht8(__m256 v) {
    __m256 p = _mm256_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1));
    v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xAA);
    p = _mm256_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2));
    v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xCC);
    p = _mm256_permute2f128_ps(v, v, 0x01);
    return _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xF0);
}

/* Same stage order and per-element operations as the reference (sign flip,
 * butterflies h = 1, 2, 4, ..., d/2, one multiply by 1/sqrt(d)); the sign
 * flip is fused into the first pass and the scale into the last stage, which
 * changes no result. */
int kvs_hadamard_avx2(float *x, int d, uint64_t sign_seed) {
    if (d < 8 || (d & (d - 1)) != 0) return kvs_hadamard_ref(x, d, sign_seed);
    const __m256 sc = _mm256_set1_ps((float)(1.0 / sqrt((double)d)));
    const __m256i bitsel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    uint64_t mw = 0;
    for (int i = 0; i < d; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (sign_seed != 0) {
            if ((i & 63) == 0) mw = kvs_hadamard_sign_word(sign_seed, (uint64_t)(i >> 6));
            const __m256i b = _mm256_set1_epi32((int)((mw >> (i & 63)) & 0xff));
            const __m256i f = _mm256_cmpeq_epi32(_mm256_and_si256(b, bitsel), bitsel);
            v = _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_slli_epi32(f, 31)));
        }
        v = fwht8(v);
        if (d == 8) v = _mm256_mul_ps(v, sc);
        _mm256_storeu_ps(x + i, v);
    }
    for (int h = 8; h < d; h <<= 1) {
        const int last = 2 * h == d;
        for (int i = 0; i < d; i += 2 * h)
            for (int j = i; j < i + h; j += 8) {
                const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
                __m256 lo = _mm256_add_ps(a, b), hi = _mm256_sub_ps(a, b);
                if (last) {
                    lo = _mm256_mul_ps(lo, sc);
                    hi = _mm256_mul_ps(hi, sc);
                }
                _mm256_storeu_ps(x + j, lo);
                _mm256_storeu_ps(x + j + h, hi);
            }
    }
    return 0;
}
