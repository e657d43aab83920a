/* KIVI codec: sizes, the (scalar) quantizers, the scalar reference
 * dequantizers and Hadamard transform, and the run-time dispatch to the AVX2
 * twins in kv/kivi_avx2.c. Layouts and numeric contract: kv/kivi.h. */
#include "kv/kivi.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/f16.h"

#if defined(__x86_64__) || defined(__i386__)
#define KVS_KIVI_X86 1
#else
#define KVS_KIVI_X86 0
#endif

#define F16_MAX 65504.0f

static size_t ceil_div_sz(size_t a, size_t b) { return (a + b - 1) / b; }

size_t kvs_kivi_key_block_bytes(int d, int G, int bits) {
    if (d <= 0 || G <= 0 || bits <= 0) return 0;
    return (size_t)d * (ceil_div_sz((size_t)G * (size_t)bits, 8) + 4);
}

size_t kvs_kivi_value_row_bytes(int d, int G, int bits, bool sym) {
    if (d <= 0 || G <= 0 || bits <= 0) return 0;
    return ceil_div_sz((size_t)d * (size_t)bits, 8) + kvs_kivi_value_codes_offset(d, G, sym);
}

/* ---- bit streams (LSB-first) ---- */

static inline void put_code(uint8_t *p, size_t idx, int bits, unsigned q) {
    const size_t o = idx * (size_t)bits;
    const unsigned sh = (unsigned)(o & 7);
    p[o >> 3] |= (uint8_t)(q << sh);
    if (sh + (unsigned)bits > 8) p[(o >> 3) + 1] |= (uint8_t)(q >> (8 - sh));
}

static inline unsigned get_code(const uint8_t *p, size_t idx, int bits) {
    const size_t o = idx * (size_t)bits;
    const unsigned sh = (unsigned)(o & 7);
    unsigned v = p[o >> 3] >> sh;
    if (sh + (unsigned)bits > 8) v |= (unsigned)p[(o >> 3) + 1] << (8 - sh);
    return v & ((1u << bits) - 1u);
}

/* ---- group parameters ---- */

/* f16 not above x (x finite, |x| <= F16_MAX). */
static uint16_t f16_round_down(float x) {
    uint16_t h = kvs_f32_to_f16(x);
    if (kvs_f16_to_f32(h) > x) {
        if (h == 0x0000u) h = 0x8001u;          /* +0 -> smallest negative subnormal */
        else if (h & 0x8000u) h = (uint16_t)(h + 1); /* more negative */
        else h = (uint16_t)(h - 1);
    }
    return h;
}

/* f16 not below x (x finite, 0 <= x <= F16_MAX). */
static uint16_t f16_round_up_pos(float x) {
    uint16_t h = kvs_f32_to_f16(x);
    if (kvs_f16_to_f32(h) < x) h = (uint16_t)(h + 1);
    return h;
}

typedef struct { float s, m, inv; uint16_t sh, mh; } group_params;

/* lo/hi: min/max over the finite inputs (lo > hi when there were none). */
static group_params make_params(float lo, float hi, int bits) {
    group_params p;
    if (!(lo <= hi)) lo = hi = 0.0f;
    if (lo < -F16_MAX) lo = -F16_MAX;
    if (lo > F16_MAX) lo = F16_MAX;
    if (hi > F16_MAX) hi = F16_MAX;
    if (hi < lo) hi = lo;
    p.mh = f16_round_down(lo);
    p.m = kvs_f16_to_f32(p.mh);
    const float levels = (float)((1u << bits) - 1u);
    float s = (hi - p.m) / levels; /* >= 0; hi - m <= 2*F16_MAX, finite */
    if (s > F16_MAX) s = F16_MAX;
    p.sh = s > 0.0f ? f16_round_up_pos(s) : 0;
    p.s = kvs_f16_to_f32(p.sh);
    p.inv = p.s > 0.0f ? 1.0f / p.s : 0.0f;
    return p;
}

static inline unsigned quant_one(float x, const group_params *p, unsigned qmax) {
    float f = (x - p->m) * p->inv;           /* NaN for NaN x or inf*0 */
    if (!(f >= 0.0f)) return 0;              /* NaN, -inf, below min */
    if (f >= (float)qmax) return qmax;       /* +inf, above max */
    return (unsigned)(f + 0.5f);             /* f + 0.5 < 256: exact-range cast */
}

static inline int finite_f(float x) { return isfinite(x); }

/* Squared error of n finite inputs (x[i * stride]) coded with p. */
static double group_sse(const float *x, size_t n, size_t stride, const group_params *p, unsigned qmax) {
    double e = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float v = x[i * stride];
        if (!finite_f(v)) continue;
        const double r = (double)((float)quant_one(v, p, qmax) * p->s + p->m) - (double)v;
        e += r * r;
    }
    return e;
}

/* Group parameters: min-max, or (clip) the range of least squared error
 * among min-max and ranges shrunk by 5%..50% at the top, the bottom or
 * both ends around the centre - at 2-3 bits one outlier otherwise costs
 * every other element of the group most of its resolution. The stored
 * format is the same; only the chosen scale and minimum differ. */
static group_params choose_params(const float *x, size_t n, size_t stride, float lo, float hi, int bits, int clip) {
    group_params best = make_params(lo, hi, bits);
    if (!clip || !(lo < hi)) return best;
    const unsigned qmax = (1u << bits) - 1u;
    double best_e = group_sse(x, n, stride, &best, qmax);
    const float c = 0.5f * lo + 0.5f * hi, w = hi - lo;
    for (int k = 1; k <= 10; k++) {
        const float r = 1.0f - 0.05f * (float)k;
        const float cand[3][2] = {{c - r * (c - lo), c + r * (hi - c)}, {lo, lo + r * w}, {hi - r * w, hi}};
        for (int j = 0; j < 3; j++) {
            const group_params p = make_params(cand[j][0], cand[j][1], bits);
            const double e = group_sse(x, n, stride, &p, qmax);
            if (e < best_e) { best_e = e; best = p; }
        }
    }
    return best;
}

/* Symmetric groups (values stored with a scale only): the range is
 * [-a, a] around zero with a = max |x| (or, clip, the least squared error
 * among a shrunk by 5%..50%); codes decode to (q - qmax/2) * s, so the
 * minimum is implied: m = kvs_kivi_sym_min(s, bits). */
static group_params make_params_sym(float a, int bits) {
    group_params p;
    if (!(a > 0.0f)) a = 0.0f;
    const float half = 0.5f * (float)((1u << bits) - 1u);
    float s = a / half;
    if (s > F16_MAX) s = F16_MAX;
    p.sh = s > 0.0f ? f16_round_up_pos(s) : 0;
    p.s = kvs_f16_to_f32(p.sh);
    p.m = kvs_kivi_sym_min(p.s, bits);
    p.mh = 0;
    p.inv = p.s > 0.0f ? 1.0f / p.s : 0.0f;
    return p;
}

static group_params choose_params_sym(const float *x, size_t n, float lo, float hi, int bits, int clip) {
    float a = lo <= hi ? fmaxf(fabsf(lo), fabsf(hi)) : 0.0f;
    if (a > F16_MAX) a = F16_MAX;
    group_params best = make_params_sym(a, bits);
    if (!clip || !(a > 0.0f)) return best;
    const unsigned qmax = (1u << bits) - 1u;
    double best_e = group_sse(x, n, 1, &best, qmax);
    for (int k = 1; k <= 10; k++) {
        const group_params p = make_params_sym(a * (1.0f - 0.05f * (float)k), bits);
        const double e = group_sse(x, n, 1, &p, qmax);
        if (e < best_e) { best_e = e; best = p; }
    }
    return best;
}

static void quantize_keys(const float *k, int d, int G, int bits, uint8_t *blk, int clip) {
    const size_t bytes = kvs_kivi_key_block_bytes(d, G, bits);
    memset(blk, 0, bytes);
    uint8_t *codes = blk + (size_t)4 * (size_t)d;
    const unsigned qmax = (1u << bits) - 1u;
    for (int c = 0; c < d; c++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int t = 0; t < G; t++) {
            const float x = k[(size_t)t * (size_t)d + (size_t)c];
            if (!finite_f(x)) continue;
            if (x < lo) lo = x;
            if (x > hi) hi = x;
        }
        const group_params p = choose_params(k + c, (size_t)G, (size_t)d, lo, hi, bits, clip);
        memcpy(blk + 2 * (size_t)c, &p.sh, 2);
        memcpy(blk + 2 * ((size_t)d + (size_t)c), &p.mh, 2);
        for (int t = 0; t < G; t++) {
            const size_t idx = (size_t)t * (size_t)d + (size_t)c;
            put_code(codes, idx, bits, quant_one(k[idx], &p, qmax));
        }
    }
}

void kvs_kivi_quantize_keys(const float *k, int d, int G, int bits, uint8_t *blk) {
    quantize_keys(k, d, G, bits, blk, 0);
}

void kvs_kivi_quantize_keys_clip(const float *k, int d, int G, int bits, uint8_t *blk) {
    quantize_keys(k, d, G, bits, blk, 1);
}

static void quantize_value(const float *v, int d, int G, int bits, bool sym, uint8_t *row, int clip) {
    const size_t bytes = kvs_kivi_value_row_bytes(d, G, bits, sym);
    memset(row, 0, bytes);
    const size_t ng = ceil_div_sz((size_t)d, (size_t)G);
    uint8_t *codes = row + kvs_kivi_value_codes_offset(d, G, sym);
    const unsigned qmax = (1u << bits) - 1u;
    for (size_t g = 0; g < ng; g++) {
        const size_t c0 = g * (size_t)G;
        const size_t c1 = c0 + (size_t)G < (size_t)d ? c0 + (size_t)G : (size_t)d;
        float lo = INFINITY, hi = -INFINITY;
        for (size_t c = c0; c < c1; c++) {
            const float x = v[c];
            if (!finite_f(x)) continue;
            if (x < lo) lo = x;
            if (x > hi) hi = x;
        }
        const group_params p = sym ? choose_params_sym(v + c0, c1 - c0, lo, hi, bits, clip)
                                   : choose_params(v + c0, c1 - c0, 1, lo, hi, bits, clip);
        memcpy(row + 2 * g, &p.sh, 2);
        if (!sym) memcpy(row + 2 * (ng + g), &p.mh, 2);
        for (size_t c = c0; c < c1; c++) put_code(codes, c, bits, quant_one(v[c], &p, qmax));
    }
}

void kvs_kivi_quantize_value(const float *v, int d, int G, int bits, bool sym, uint8_t *row) {
    quantize_value(v, d, G, bits, sym, row, 0);
}

void kvs_kivi_quantize_value_clip(const float *v, int d, int G, int bits, bool sym, uint8_t *row) {
    quantize_value(v, d, G, bits, sym, row, 1);
}

/* ---- scalar reference dequantizers ---- */

static inline float load_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return kvs_f16_to_f32(h);
}

void kvs_kivi_dequantize_keys_ref(const uint8_t *blk, int d, int G, int bits, int t0, int nt,
                                  float *out) {
    (void)G;
    const uint8_t *codes = blk + (size_t)4 * (size_t)d;
    for (int c = 0; c < d; c++) {
        const float s = load_f16(blk + 2 * (size_t)c);
        const float m = load_f16(blk + 2 * ((size_t)d + (size_t)c));
        for (int i = 0; i < nt; i++) {
            const size_t idx = (size_t)(t0 + i) * (size_t)d + (size_t)c;
            const float q = (float)get_code(codes, idx, bits);
            out[(size_t)i * (size_t)d + (size_t)c] = q * s + m;
        }
    }
}

void kvs_kivi_dequantize_value_ref(const uint8_t *row, int d, int G, int bits, bool sym, float *out) {
    const size_t ng = ceil_div_sz((size_t)d, (size_t)G);
    const uint8_t *codes = row + kvs_kivi_value_codes_offset(d, G, sym);
    for (int c = 0; c < d; c++) {
        const size_t g = (size_t)c / (size_t)G;
        const float s = load_f16(row + 2 * g);
        const float m = sym ? kvs_kivi_sym_min(s, bits) : load_f16(row + 2 * (ng + g));
        out[c] = (float)get_code(codes, (size_t)c, bits) * s + m;
    }
}

void kvs_kivi_dequantize_values_ref(const uint8_t *rows, size_t row_stride, int n, int d, int G,
                                    int bits, bool sym, float *out) {
    for (int i = 0; i < n; i++)
        kvs_kivi_dequantize_value_ref(rows + (size_t)i * row_stride, d, G, bits, sym, out + (size_t)i * (size_t)d);
}

/* ---- attention on the codes: references ---- */

void kvs_kivi_key_scores_ref(const uint8_t *blk, int d, int G, int bits, int t0, int n, const float *const *q,
                             int R, float *out, size_t out_stride) {
    (void)G;
    const uint8_t *codes = blk + (size_t)4 * (size_t)d;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < n; i++) {
            double s = 0.0;
            for (int c = 0; c < d; c++) {
                const size_t idx = (size_t)(t0 + i) * (size_t)d + (size_t)c;
                const float x = (float)get_code(codes, idx, bits) * load_f16(blk + 2 * (size_t)c) +
                                load_f16(blk + 2 * ((size_t)d + (size_t)c));
                s += (double)q[r][c] * x;
            }
            out[(size_t)r * out_stride + (size_t)i] = (float)s;
        }
}

void kvs_kivi_value_accum_ref(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym,
                              const float *p, size_t p_stride, int R, float *acc, size_t acc_stride) {
    float *x = kvs_malloc(sizeof(float) * (size_t)d);
    double *s = kvs_malloc(sizeof(double) * (size_t)d);
    if (!x || !s) { kvs_free(x); kvs_free(s); return; }
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < d; c++) s[c] = 0.0;
        for (int i = 0; i < n; i++) {
            kvs_kivi_dequantize_value_ref(rows + (size_t)i * row_stride, d, G, bits, sym, x);
            const double w = p[(size_t)r * p_stride + (size_t)i];
            for (int c = 0; c < d; c++) s[c] += w * x[c];
        }
        for (int c = 0; c < d; c++) acc[(size_t)r * acc_stride + (size_t)c] += (float)s[c];
    }
    kvs_free(x);
    kvs_free(s);
}

/* ---- Hadamard ---- */

static uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t kvs_hadamard_sign_word(uint64_t sign_seed, uint64_t word) {
    if (sign_seed == 0) return 0;
    return splitmix64(sign_seed ^ splitmix64(word + 0x632BE59BD9B4E019ull));
}

static int is_pow2(int d) { return d >= 1 && (d & (d - 1)) == 0; }

static void sign_flip(float *x, int d, uint64_t seed) {
    if (seed == 0) return;
    for (int w = 0; w * 64 < d; w++) {
        const uint64_t m = kvs_hadamard_sign_word(seed, (uint64_t)w);
        const int n = d - w * 64 < 64 ? d - w * 64 : 64;
        for (int i = 0; i < n; i++)
            if ((m >> i) & 1) x[w * 64 + i] = -x[w * 64 + i];
    }
}

/* Unnormalized butterflies, stage h = 1, 2, 4, ...: (a, b) -> (a+b, a-b),
 * then one multiply by 1/sqrt(d). The AVX2 twin performs the same operation
 * on every element in the same stage order. */
static void fwht_ref(float *x, int d) {
    for (int h = 1; h < d; h <<= 1)
        for (int i = 0; i < d; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                const float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    const float sc = (float)(1.0 / sqrt((double)d));
    for (int i = 0; i < d; i++) x[i] *= sc;
}

int kvs_hadamard_ref(float *x, int d, uint64_t sign_seed) {
    if (!is_pow2(d)) return -1;
    sign_flip(x, d, sign_seed);
    fwht_ref(x, d);
    return 0;
}

/* ---- dispatch ---- */

void kvs_kivi_dequantize_keys(const uint8_t *blk, int d, int G, int bits, int t0, int nt, float *out) {
#if KVS_KIVI_X86
    if (kvs_cpu()->avx2) {
        kvs_kivi_dequantize_keys_avx2(blk, d, G, bits, t0, nt, out);
        return;
    }
#endif
    kvs_kivi_dequantize_keys_ref(blk, d, G, bits, t0, nt, out);
}

void kvs_kivi_dequantize_value(const uint8_t *row, int d, int G, int bits, bool sym, float *out) {
#if KVS_KIVI_X86
    if (kvs_cpu()->avx2) {
        kvs_kivi_dequantize_value_avx2(row, d, G, bits, sym, out);
        return;
    }
#endif
    kvs_kivi_dequantize_value_ref(row, d, G, bits, sym, out);
}

void kvs_kivi_dequantize_values(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym,
                                float *out) {
#if KVS_KIVI_X86
    if (kvs_cpu()->avx2) {
        kvs_kivi_dequantize_values_avx2(rows, row_stride, n, d, G, bits, sym, out);
        return;
    }
#endif
    kvs_kivi_dequantize_values_ref(rows, row_stride, n, d, G, bits, sym, out);
}

int kvs_hadamard(float *x, int d, uint64_t sign_seed) {
#if KVS_KIVI_X86
    if (kvs_cpu()->avx2) return kvs_hadamard_avx2(x, d, sign_seed);
#endif
    return kvs_hadamard_ref(x, d, sign_seed);
}

int kvs_hadamard_inv(float *x, int d, uint64_t sign_seed) {
    if (kvs_hadamard(x, d, 0) != 0) return -1;
    sign_flip(x, d, sign_seed);
    return 0;
}

void kvs_kivi_key_scores(const uint8_t *blk, int d, int G, int bits, int t0, int n, const float *const *q,
                         int R, float *out, size_t out_stride, float *fold) {
#if KVS_KIVI_X86
    if (kvs_cpu()->avx2) {
        kvs_kivi_key_scores_avx2(blk, d, G, bits, t0, n, q, R, out, out_stride, fold);
        return;
    }
#endif
    (void)fold;
    kvs_kivi_key_scores_ref(blk, d, G, bits, t0, n, q, R, out, out_stride);
}

void kvs_kivi_value_accum(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym, const float *p,
                          size_t p_stride, int R, float *acc, size_t acc_stride) {
#if KVS_KIVI_X86
    if (kvs_cpu()->avx2) {
        kvs_kivi_value_accum_avx2(rows, row_stride, n, d, G, bits, sym, p, p_stride, R, acc, acc_stride);
        return;
    }
#endif
    kvs_kivi_value_accum_ref(rows, row_stride, n, d, G, bits, sym, p, p_stride, R, acc, acc_stride);
}
