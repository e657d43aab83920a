/* KIVI codec (kv/kivi.h): byte sizes against the planner formula, round-trip
 * NMSE bounds per bit width on Gaussian keys/values, per-channel keys beating
 * per-token quantization on keys with outlier channels, partial-row
 * dequantization, constant channels, non-finite inputs, odd shapes (3-bit
 * groups that end mid-byte), AVX2 == scalar reference bit-exactly, and the
 * Hadamard rotation (orthonormal, involutive without signs, invertible with
 * signs, dot products preserved). Prints measured NMSE; asserts bounds.
 * Also: the clipping quantizers (never a larger squared error than min-max,
 * same decoders), the per-channel cache with f16 sinks (`first`) and an f16
 * residual of `recent` tokens against an independent emulation, its bytes
 * against the scheme formula, and value rotation leaving a model's logits
 * unchanged. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/f16.h"
#include "kv/kivi.h"
#include "kv/kv_cache.h"
#include "kv/kv_scheme.h"
#include "kv/kv_spec.h"
#include "kvslim.h"
#include "test_util.h"

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static double nmse(const float *ref, const float *x, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)x[i] - (double)ref[i];
        num += e * e;
        den += (double)ref[i] * (double)ref[i];
    }
    return den > 0 ? num / den : num;
}

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* ---- sizes ---- */

static void test_sizes(void) {
    static const int ds[] = {64, 128, 256}, Gs[] = {16, 32, 64, 128}, bs[] = {2, 3, 4, 8};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 4; c++) {
                const int d = ds[a], G = Gs[b], bits = bs[c];
                const size_t kb = (size_t)d * (cdiv((size_t)G * (size_t)bits, 8) + 4);
                const size_t vb = cdiv((size_t)d * (size_t)bits, 8) + cdiv((size_t)d, (size_t)G) * 4;
                CHECKF(kvs_kivi_key_block_bytes(d, G, bits) == kb, "d=%d G=%d bits=%d", d, G, bits);
                CHECKF(kvs_kivi_value_row_bytes(d, G, bits, false) == vb, "d=%d G=%d bits=%d", d, G, bits);
                CHECKF(kvs_kivi_value_row_bytes(d, G, bits, true) == vb - cdiv((size_t)d, (size_t)G) * 2,
                       "sym d=%d G=%d bits=%d", d, G, bits);
                /* the planner's CHANNEL formula sizes the same bytes: 3 full groups, 3 heads,
                 * plus the f16 residual buffer of one group (kv_scheme.c) */
                kvs_kv_scheme s = kvs_kv_scheme_full(3, (uint32_t)d, (uint32_t)d, KVS_TYPE_F16);
                s.layout = KVS_KV_LAYOUT_CHANNEL;
                s.k_bits = s.v_bits = (uint32_t)bits;
                s.group = (uint32_t)G;
                if (kvs_kv_scheme_validate(&s) == KVS_OK) {
                    const uint64_t n = 3 * (uint64_t)G;
                    const uint64_t want = 3 * (3 * (uint64_t)kvs_kivi_key_block_bytes(d, G, bits) +
                                               n * (uint64_t)kvs_kivi_value_row_bytes(d, G, bits, false)) +
                                          (uint64_t)G * 3 * (2 * (uint64_t)d) * 2;
                    CHECKF(kvs_kv_scheme_bytes(&s, n) == want, "planner d=%d G=%d bits=%d: %llu vs %llu",
                           d, G, bits, (unsigned long long)kvs_kv_scheme_bytes(&s, n),
                           (unsigned long long)want);
                    s.v_sym = 1; /* symmetric value rows: the scales alone */
                    const uint64_t want_sym = want - 3 * n * (uint64_t)(kvs_kivi_value_row_bytes(d, G, bits, false) -
                                                                        kvs_kivi_value_row_bytes(d, G, bits, true));
                    CHECKF(kvs_kv_scheme_bytes(&s, n) == want_sym, "planner vsym d=%d G=%d bits=%d", d, G, bits);
                    CHECKF(fabs(kvs_kv_scheme_bytes_per_token(&s) * (double)n -
                                (double)(want_sym - (uint64_t)G * 3 * (2 * (uint64_t)d) * 2)) < 1e-6 * (double)want,
                           "planner vsym per token d=%d G=%d bits=%d", d, G, bits);
                }
            }
    /* odd shapes: 3-bit groups that end mid-byte */
    CHECK(kvs_kivi_key_block_bytes(5, 5, 3) == 5 * (2 + 4));
    CHECK(kvs_kivi_key_block_bytes(7, 3, 3) == 7 * (2 + 4));
    CHECK(kvs_kivi_value_row_bytes(5, 2, 3, false) == 2 + 3 * 4);
    CHECK(kvs_kivi_key_block_bytes(0, 32, 4) == 0);
}

/* ---- round trips ---- */

static void fill_normal(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * test_rng_normal(&g_rng);
}

/* Per-token min-max quantization of a (G, d) key tile, f32 parameters (kind
 * to the comparator): the layout KIVI argues against for keys. */
static void per_token_roundtrip(const float *k, int d, int G, int bits, float *out) {
    const float L = (float)((1 << bits) - 1);
    for (int t = 0; t < G; t++) {
        const float *r = k + (size_t)t * (size_t)d;
        float lo = r[0], hi = r[0];
        for (int c = 1; c < d; c++) {
            if (r[c] < lo) lo = r[c];
            if (r[c] > hi) hi = r[c];
        }
        const float s = (hi - lo) / L, inv = s > 0 ? 1.0f / s : 0.0f;
        for (int c = 0; c < d; c++) {
            float q = floorf((r[c] - lo) * inv + 0.5f);
            if (q > L) q = L;
            if (q < 0) q = 0;
            out[(size_t)t * (size_t)d + (size_t)c] = q * s + lo;
        }
    }
}

static double key_roundtrip_nmse(const float *k, int d, int G, int bits, float *out, uint8_t *blk) {
    kvs_kivi_quantize_keys(k, d, G, bits, blk);
    kvs_kivi_dequantize_keys(blk, d, G, bits, 0, G, out);
    return nmse(k, out, (size_t)G * (size_t)d);
}

static void test_roundtrip_nmse(void) {
    const int d = 128, G = 32, nblk = 64; /* 2048 tokens of one head */
    const size_t n = (size_t)G * (size_t)d;
    float *k = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
    uint8_t *blk = malloc(kvs_kivi_key_block_bytes(d, G, 8));
    static const int bits_list[] = {2, 3, 4, 8};
    /* bounds: ~1.5-2x the measured values (printed below) */
    static const double key_gauss_max[] = {0.20, 0.05, 1.2e-2, 5e-5};
    static const double val_gauss_max[] = {0.20, 0.05, 1.2e-2, 5e-5};
    static const double key_outl_max[] = {0.20, 0.05, 1.2e-2, 5e-5};
    printf("  NMSE, d=%d G=%d, %d groups          key/ch   key/tok   | outlier x20 key/ch  key/tok  "
           "hadamard+tok | value/tokgrp\n", d, G, nblk);
    for (int bi = 0; bi < 4; bi++) {
        const int bits = bits_list[bi];
        double kc = 0, kt = 0, oc = 0, ot = 0, oh = 0, vv = 0;
        for (int b = 0; b < nblk; b++) {
            /* Gaussian keys */
            fill_normal(k, n, 1.0f);
            kc += key_roundtrip_nmse(k, d, G, bits, out, blk);
            per_token_roundtrip(k, d, G, bits, out);
            kt += nmse(k, out, n);
            /* outlier channels: 4 of 128 fixed channels (KIVI's observation: key
             * outliers live in a few channels), x20 */
            static const int outl[] = {3, 40, 77, 120};
            for (int t = 0; t < G; t++)
                for (int j = 0; j < 4; j++) k[(size_t)t * (size_t)d + (size_t)outl[j]] *= 20.0f;
            oc += key_roundtrip_nmse(k, d, G, bits, out, blk);
            per_token_roundtrip(k, d, G, bits, out);
            ot += nmse(k, out, n);
            /* rotating first spreads the outliers: per-token after Hadamard (info) */
            float *kr = malloc(n * sizeof(float));
            memcpy(kr, k, n * sizeof(float));
            for (int t = 0; t < G; t++) kvs_hadamard(kr + (size_t)t * (size_t)d, d, 0x5EEDu);
            per_token_roundtrip(kr, d, G, bits, out);
            oh += nmse(kr, out, n); /* rotation is orthonormal: same NMSE in either basis */
            free(kr);
            /* values: per token, channel groups of G */
            fill_normal(k, n, 1.0f);
            double vs = 0;
            uint8_t *row = malloc(kvs_kivi_value_row_bytes(d, G, bits, false));
            for (int t = 0; t < G; t++) {
                kvs_kivi_quantize_value(k + (size_t)t * (size_t)d, d, G, bits, false, row);
                kvs_kivi_dequantize_value(row, d, G, bits, false, out + (size_t)t * (size_t)d);
            }
            vs = nmse(k, out, n);
            vv += vs;
            free(row);
        }
        kc /= nblk; kt /= nblk; oc /= nblk; ot /= nblk; oh /= nblk; vv /= nblk;
        printf("  bits=%d                             %.3e %.3e | %.3e %.3e %.3e | %.3e\n", bits, kc, kt,
               oc, ot, oh, vv);
        CHECKF(kc < key_gauss_max[bi], "bits=%d gaussian key NMSE %.3e", bits, kc);
        CHECKF(vv < val_gauss_max[bi], "bits=%d gaussian value NMSE %.3e", bits, vv);
        CHECKF(oc < key_outl_max[bi], "bits=%d outlier key NMSE %.3e", bits, oc);
        /* KIVI's point: per-channel keys win clearly when channels carry outliers */
        CHECKF(oc * 4.0 < ot, "bits=%d per-channel %.3e vs per-token %.3e", bits, oc, ot);
        CHECKF(oh < ot, "bits=%d hadamard should help per-token: %.3e vs %.3e", bits, oh, ot);
    }
    free(k);
    free(out);
    free(blk);
}

/* ---- partial rows, fast == ref, odd shapes ---- */

static void fill_keys_mixed(float *k, int d, int G) {
    for (int c = 0; c < d; c++) {
        const int kind = (int)(test_rng_next(&g_rng) % 8);
        const float sc = kind == 0 ? 30.0f : kind == 1 ? 1e-3f : 1.0f;
        const float off = test_rng_uniform(&g_rng) * 4.0f;
        for (int t = 0; t < G; t++)
            k[(size_t)t * (size_t)d + (size_t)c] = kind == 2 ? 0.75f : off + sc * test_rng_normal(&g_rng);
    }
}

static void test_keys_paths(void) {
    static const int ds[] = {1, 3, 8, 9, 24, 64, 100, 128, 256};
    static const int Gs[] = {1, 3, 5, 7, 8, 12, 16, 32, 64, 128};
    const bool avx2 = kvs_cpu()->avx2;
    int cases = 0, bad_fast = 0, bad_part = 0;
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++)
        for (size_t b = 0; b < sizeof Gs / sizeof Gs[0]; b++)
            for (int bits = 1; bits <= 8; bits++) {
                const int d = ds[a], G = Gs[b];
                const size_t n = (size_t)G * (size_t)d, bytes = kvs_kivi_key_block_bytes(d, G, bits);
                float *k = malloc(n * sizeof(float)), *full = malloc(n * sizeof(float));
                float *o2 = malloc(n * sizeof(float));
                /* exact-size heap block: ASan catches any read past its end */
                uint8_t *blk = malloc(bytes);
                fill_keys_mixed(k, d, G);
                kvs_kivi_quantize_keys(k, d, G, bits, blk);
                /* padding beyond the code stream is zero */
                const size_t used = 4 * (size_t)d + cdiv(n * (size_t)bits, 8);
                CHECK(used <= bytes);
                for (size_t i = used; i < bytes; i++) CHECK(blk[i] == 0);
                kvs_kivi_dequantize_keys_ref(blk, d, G, bits, 0, G, full);
                kvs_kivi_dequantize_keys(blk, d, G, bits, 0, G, o2);
                bad_fast += memcmp(full, o2, n * sizeof(float)) != 0;
                if (avx2) {
                    kvs_kivi_dequantize_keys_avx2(blk, d, G, bits, 0, G, o2);
                    bad_fast += memcmp(full, o2, n * sizeof(float)) != 0;
                }
                /* partial rows: slices equal the full dequantization */
                for (int rep = 0; rep < 4; rep++) {
                    const int t0 = (int)(test_rng_next(&g_rng) % (uint64_t)G);
                    const int nt = rep == 0 ? 1 : 1 + (int)(test_rng_next(&g_rng) % (uint64_t)(G - t0));
                    memset(o2, 0xFF, n * sizeof(float));
                    kvs_kivi_dequantize_keys(blk, d, G, bits, t0, nt, o2);
                    bad_part += memcmp(o2, full + (size_t)t0 * (size_t)d, (size_t)nt * (size_t)d * 4) != 0;
                    kvs_kivi_dequantize_keys_ref(blk, d, G, bits, t0, nt, o2);
                    bad_part += memcmp(o2, full + (size_t)t0 * (size_t)d, (size_t)nt * (size_t)d * 4) != 0;
                    if (avx2) {
                        kvs_kivi_dequantize_keys_avx2(blk, d, G, bits, t0, nt, o2);
                        bad_part +=
                            memcmp(o2, full + (size_t)t0 * (size_t)d, (size_t)nt * (size_t)d * 4) != 0;
                    }
                }
                /* every value lies within its channel's [min, max] up to half a step */
                double worst = 0;
                for (int c = 0; c < d; c++) {
                    float lo = INFINITY, hi = -INFINITY;
                    for (int t = 0; t < G; t++) {
                        const float x = k[(size_t)t * (size_t)d + (size_t)c];
                        lo = x < lo ? x : lo;
                        hi = x > hi ? x : hi;
                    }
                    const double step = (double)(hi - lo) / ((1 << bits) - 1);
                    for (int t = 0; t < G; t++) {
                        const size_t i = (size_t)t * (size_t)d + (size_t)c;
                        const double e = fabs((double)full[i] - (double)k[i]);
                        /* half a step, plus f16 rounding of min/scale */
                        const double lim = 0.5 * step * 1.01 + 2e-3 * (fabs(lo) + step * (1 << bits)) + 1e-7;
                        if (e / lim > worst) worst = e / lim;
                    }
                }
                CHECKF(worst <= 1.0, "d=%d G=%d bits=%d: error %.3f of bound", d, G, bits, worst);
                cases++;
                free(k); free(full); free(o2); free(blk);
            }
    CHECKF(bad_fast == 0, "%d key cases fast != ref", bad_fast);
    CHECKF(bad_part == 0, "%d key partial-row mismatches", bad_part);
    CHECK(cases > 0);
}

static void test_values_paths(void) {
    static const int ds[] = {1, 3, 8, 9, 24, 64, 100, 128, 256};
    static const int Gs[] = {1, 3, 5, 8, 12, 16, 32, 64, 128};
    const bool avx2 = kvs_cpu()->avx2;
    int bad = 0;
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++)
        for (size_t b = 0; b < sizeof Gs / sizeof Gs[0]; b++)
            for (int bits = 1; bits <= 8; bits++)
            for (int symi = 0; symi < 2; symi++) {
                const int d = ds[a], G = Gs[b];
                const bool sym = symi != 0;
                const size_t bytes = kvs_kivi_value_row_bytes(d, G, bits, sym);
                float *v = malloc((size_t)d * 4), *r = malloc((size_t)d * 4), *f = malloc((size_t)d * 4);
                uint8_t *row = malloc(bytes);
                for (int rep = 0; rep < 3; rep++) {
                    for (int c = 0; c < d; c++) v[c] = (rep == 2 && c % 7 == 0 ? 25.0f : 1.0f) * test_rng_normal(&g_rng);
                    kvs_kivi_quantize_value(v, d, G, bits, sym, row);
                    kvs_kivi_dequantize_value_ref(row, d, G, bits, sym, r);
                    kvs_kivi_dequantize_value(row, d, G, bits, sym, f);
                    bad += memcmp(r, f, (size_t)d * 4) != 0;
                    if (avx2) {
                        kvs_kivi_dequantize_value_avx2(row, d, G, bits, sym, f);
                        bad += memcmp(r, f, (size_t)d * 4) != 0;
                    }
                    /* per group: error within half a step (+ f16 parameter rounding) */
                    for (int g0 = 0; g0 < d; g0 += G) {
                        const int g1 = g0 + G < d ? g0 + G : d;
                        float lo = INFINITY, hi = -INFINITY;
                        for (int c = g0; c < g1; c++) { lo = v[c] < lo ? v[c] : lo; hi = v[c] > hi ? v[c] : hi; }
                        if (sym) { hi = fmaxf(fabsf(lo), fabsf(hi)); lo = -hi; } /* the range is [-a, a] */
                        const double step = (double)(hi - lo) / ((1 << bits) - 1);
                        for (int c = g0; c < g1; c++) {
                            const double e = fabs((double)r[c] - v[c]);
                            CHECKF(e <= 0.5 * step * 1.01 + 2e-3 * (fabs(lo) + step * (1 << bits)) + 1e-7,
                                   "value d=%d G=%d bits=%d sym=%d c=%d err %g step %g", d, G, bits, symi, c, e, step);
                        }
                    }
                }
                free(v); free(r); free(f); free(row);
                /* multi-row: n rows at a stride (interleaved heads), same as single rows */
                const int nr = 1 + (int)(test_rng_next(&g_rng) % 9);
                const size_t stride = bytes + (size_t)(test_rng_next(&g_rng) % 3) * 7;
                uint8_t *rows = malloc(stride * (size_t)(nr - 1) + bytes); /* last row exact: ASan */
                float *vin = malloc((size_t)d * 4), *one = malloc((size_t)nr * (size_t)d * 4);
                float *many = malloc((size_t)nr * (size_t)d * 4);
                for (int i = 0; i < nr; i++) {
                    fill_normal(vin, (size_t)d, 1.0f + (float)i);
                    kvs_kivi_quantize_value(vin, d, G, bits, sym, rows + (size_t)i * stride);
                    kvs_kivi_dequantize_value_ref(rows + (size_t)i * stride, d, G, bits, sym, one + (size_t)i * (size_t)d);
                }
                const size_t nb = (size_t)nr * (size_t)d * 4;
                kvs_kivi_dequantize_values(rows, stride, nr, d, G, bits, sym, many);
                bad += memcmp(one, many, nb) != 0;
                kvs_kivi_dequantize_values_ref(rows, stride, nr, d, G, bits, sym, many);
                bad += memcmp(one, many, nb) != 0;
                if (avx2) {
                    kvs_kivi_dequantize_values_avx2(rows, stride, nr, d, G, bits, sym, many);
                    bad += memcmp(one, many, nb) != 0;
                }
                free(rows); free(vin); free(one); free(many);
            }
    CHECKF(bad == 0, "%d value cases fast != ref", bad);
}

/* ---- attention on the codes: fast twins vs references ----
 * Key scores: the fast twin folds the scale into q and the minimum into a
 * bias, so it differs from dequantize-then-dot by f32 rounding of the terms:
 * |fast - ref| <= 1e-5 * sum_c |q_c| (|code*s_c| + |m_c|) + 1e-6. Value
 * accumulation: f32 FMAs against the reference's float64 sums, the same kind
 * of bound on sum_i |p_i| |v_i|. Exercised at vector and fallback shapes,
 * partial groups (t0 > 0, n < G), 1..7 query rows (register-block edges). */
static void test_attention_kernels(void) {
    static const int ds[] = {8, 24, 64, 100, 128};
    static const int Gs[] = {8, 12, 16, 32, 64};
    static const int bits_list[] = {2, 3, 4, 8};
    int bad = 0, cases = 0;
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++)
        for (size_t b = 0; b < sizeof Gs / sizeof Gs[0]; b++)
            for (size_t bi = 0; bi < 4; bi++) {
                const int d = ds[a], G = Gs[b], bits = bits_list[bi];
                const int R = 1 + (int)((a + b + bi) % 7);
                const int t0 = (int)(test_rng_next(&g_rng) % (uint64_t)G);
                const int n = 1 + (int)(test_rng_next(&g_rng) % (uint64_t)(G - t0));
                float *k = malloc((size_t)G * d * 4), *q = malloc((size_t)R * d * 4);
                float *s1 = malloc((size_t)R * G * 4), *s2 = malloc((size_t)R * G * 4), *fold = malloc((size_t)R * d * 4);
                float *kd = malloc((size_t)G * d * 4);
                uint8_t *blk = malloc(kvs_kivi_key_block_bytes(d, G, bits));
                fill_normal(k, (size_t)G * d, 2.0f);
                fill_normal(q, (size_t)R * d, 1.0f);
                kvs_kivi_quantize_keys(k, d, G, bits, blk);
                kvs_kivi_dequantize_keys_ref(blk, d, G, bits, 0, G, kd);
                const float *qr[8];
                for (int r = 0; r < R; r++) qr[r] = q + (size_t)r * d;
                kvs_kivi_key_scores_ref(blk, d, G, bits, t0, n, qr, R, s1, (size_t)G);
                kvs_kivi_key_scores(blk, d, G, bits, t0, n, qr, R, s2, (size_t)G, fold);
                for (int r = 0; r < R; r++)
                    for (int i = 0; i < n; i++) {
                        double mag = 0.0, exact = 0.0;
                        for (int c = 0; c < d; c++) {
                            const double x = kd[(size_t)(t0 + i) * d + c];
                            mag += fabs(q[(size_t)r * d + c]) * (fabs(x) + 8.0);
                            exact += (double)q[(size_t)r * d + c] * x;
                        }
                        const double e = fabs((double)s2[(size_t)r * G + i] - s1[(size_t)r * G + i]);
                        bad += !(e <= 1e-5 * mag + 1e-6);
                        bad += !(fabs((double)s1[(size_t)r * G + i] - exact) <= 1e-6 * mag + 1e-6); /* ref itself */
                        cases++;
                    }
                /* values: n rows at a stride, weights in [0, 1); every other case symmetric rows */
                const bool sym = ((a + b + bi) & 1) != 0;
                const size_t vb = kvs_kivi_value_row_bytes(d, G, bits, sym), stride = vb + 5;
                uint8_t *rows = malloc(stride * (size_t)(n - 1) + vb);
                float *vin = malloc((size_t)d * 4), *vd = malloc((size_t)n * d * 4), *p = malloc((size_t)R * n * 4);
                float *acc1 = malloc((size_t)R * (d + 3) * 4), *acc2 = malloc((size_t)R * (d + 3) * 4);
                for (int i = 0; i < n; i++) {
                    fill_normal(vin, (size_t)d, 1.0f + (float)(i % 3));
                    kvs_kivi_quantize_value(vin, d, G, bits, sym, rows + (size_t)i * stride);
                    kvs_kivi_dequantize_value_ref(rows + (size_t)i * stride, d, G, bits, sym, vd + (size_t)i * d);
                }
                for (int i = 0; i < R * n; i++) p[i] = (float)(test_rng_next(&g_rng) % 1000) / 1000.0f;
                for (int i = 0; i < R * (d + 3); i++) acc1[i] = acc2[i] = test_rng_normal(&g_rng);
                kvs_kivi_value_accum_ref(rows, stride, n, d, G, bits, sym, p, (size_t)n, R, acc1, (size_t)d + 3);
                kvs_kivi_value_accum(rows, stride, n, d, G, bits, sym, p, (size_t)n, R, acc2, (size_t)d + 3);
                for (int r = 0; r < R; r++)
                    for (int c = 0; c < d + 3; c++) {
                        double mag = 1.0;
                        if (c < d)
                            for (int i = 0; i < n; i++) mag += fabs(p[(size_t)r * n + i] * vd[(size_t)i * d + c]);
                        const size_t o = (size_t)r * (d + 3) + (size_t)c;
                        /* channels past d (the stride gap) must be untouched */
                        bad += c < d ? !(fabs((double)acc1[o] - acc2[o]) <= 2e-6 * mag) : acc1[o] != acc2[o];
                        cases++;
                    }
                free(k); free(q); free(s1); free(s2); free(fold); free(kd); free(blk);
                free(rows); free(vin); free(vd); free(p); free(acc1); free(acc2);
            }
    CHECKF(bad == 0, "%d of %d attention-kernel results off", bad, cases);
    CHECK(cases > 1000);
}

/* ---- constants and non-finite inputs ---- */

static void test_constants_and_nonfinite(void) {
    const int d = 64, G = 32;
    const size_t n = (size_t)G * (size_t)d;
    float *k = malloc(n * 4), *o = malloc(n * 4);
    static const float consts[] = {0.0f, 1.5f, -3.25f, 1024.0f, 0x1p-20f, -65504.0f, 65504.0f, -0.0f};
    for (int bits = 1; bits <= 8; bits++) {
        uint8_t *blk = malloc(kvs_kivi_key_block_bytes(d, G, bits));
        fill_normal(k, n, 2.0f);
        for (int j = 0; j < 8; j++)
            for (int t = 0; t < G; t++) k[(size_t)t * d + (size_t)(j * 8)] = consts[j];
        kvs_kivi_quantize_keys(k, d, G, bits, blk);
        kvs_kivi_dequantize_keys(blk, d, G, bits, 0, G, o);
        for (int j = 0; j < 8; j++)
            for (int t = 0; t < G; t++)
                CHECKF(o[(size_t)t * d + (size_t)(j * 8)] == consts[j], "bits=%d const %g -> %g", bits,
                       (double)consts[j], (double)o[(size_t)t * d + (size_t)(j * 8)]);
        kvs_kivi_dequantize_keys_ref(blk, d, G, bits, 0, G, o);
        for (int j = 0; j < 8; j++) CHECK(o[(size_t)(j * 8)] == consts[j]);
        free(blk);

        /* a constant value group */
        uint8_t *row = malloc(kvs_kivi_value_row_bytes(d, 16, bits, false));
        float v[64], r[64];
        fill_normal(v, 64, 1.0f);
        for (int c = 16; c < 32; c++) v[c] = -7.5f;
        kvs_kivi_quantize_value(v, d, 16, bits, false, row);
        kvs_kivi_dequantize_value(row, d, 16, bits, false, r);
        for (int c = 16; c < 32; c++) CHECK(r[c] == -7.5f);

        /* non-finite: +inf -> channel max, -inf / NaN -> channel min, rest intact */
        for (int c = 0; c < 64; c++) v[c] = (float)c * 0.25f - 4.0f; /* [-4, 11.75] */
        v[5] = INFINITY;
        v[6] = -INFINITY;
        v[7] = NAN;
        kvs_kivi_quantize_value(v, d, 64, bits, false, row);
        kvs_kivi_dequantize_value(row, d, 64, bits, false, r);
        bool finite = true;
        for (int c = 0; c < 64; c++) finite &= isfinite(r[c]) != 0;
        CHECK(finite);
        CHECKF(fabsf(r[5] - 11.75f) < 0.02f, "bits=%d +inf -> %g", bits, (double)r[5]);
        CHECKF(fabsf(r[6] + 4.0f) < 0.02f, "bits=%d -inf -> %g", bits, (double)r[6]);
        CHECKF(fabsf(r[7] + 4.0f) < 0.02f, "bits=%d nan -> %g", bits, (double)r[7]);
        if (bits >= 4) CHECKF(fabsf(r[40] - v[40]) < 0.6f, "bits=%d %g vs %g", bits, (double)r[40], (double)v[40]);
        /* all non-finite, and out-of-f16-range finite values: defined, finite output */
        for (int c = 0; c < 64; c++) v[c] = c % 3 == 0 ? NAN : c % 3 == 1 ? INFINITY : -INFINITY;
        kvs_kivi_quantize_value(v, d, 64, bits, false, row);
        kvs_kivi_dequantize_value(row, d, 64, bits, false, r);
        finite = true;
        for (int c = 0; c < 64; c++) finite &= isfinite(r[c]) != 0;
        CHECK(finite);
        for (int c = 0; c < 64; c++) v[c] = (c & 1) ? 3e38f : -3e38f;
        kvs_kivi_quantize_value(v, d, 64, bits, false, row);
        kvs_kivi_dequantize_value(row, d, 64, bits, false, r);
        /* saturate to the f16 range (bits=1 cannot span [-65504, 65504] with s <= 65504) */
        CHECKF(r[0] == -65504.0f && isfinite(r[1]) && (bits == 1 || (r[1] >= 65504.0f && r[1] < 66200.0f)), "bits=%d %g %g",
               bits, (double)r[0], (double)r[1]);
        free(row);

        /* keys with NaN/inf in a channel */
        blk = malloc(kvs_kivi_key_block_bytes(d, G, bits));
        fill_normal(k, n, 1.0f);
        k[3] = NAN;
        k[(size_t)5 * d + 3] = INFINITY;
        k[(size_t)9 * d + 3] = -INFINITY;
        kvs_kivi_quantize_keys(k, d, G, bits, blk);
        kvs_kivi_dequantize_keys(blk, d, G, bits, 0, G, o);
        finite = true;
        for (size_t i = 0; i < n; i++) finite &= isfinite(o[i]) != 0;
        CHECK(finite);
        free(blk);
    }
    free(k);
    free(o);
}

/* ---- Hadamard ---- */

static double dotd(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

static void test_hadamard(void) {
    static const int ds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    const bool avx2 = kvs_cpu()->avx2;
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++) {
        const int d = ds[a];
        float *x = malloc((size_t)d * 4), *y = malloc((size_t)d * 4), *z = malloc((size_t)d * 4);
        float *q = malloc((size_t)d * 4), *k = malloc((size_t)d * 4);
        for (int rep = 0; rep < 4; rep++) {
            fill_normal(x, (size_t)d, 1.0f);
            if (rep == 3) x[d / 2] = 50.0f; /* outlier */
            const double n0 = dotd(x, x, d);
            /* sign-free: involution */
            memcpy(y, x, (size_t)d * 4);
            CHECK(kvs_hadamard(y, d, 0) == 0);
            CHECKF(fabs(dotd(y, y, d) - n0) <= 1e-5 * n0, "d=%d norm", d);
            CHECK(kvs_hadamard(y, d, 0) == 0);
            double maxe = 0;
            for (int i = 0; i < d; i++) maxe = fmax(maxe, fabs((double)y[i] - x[i]));
            CHECKF(maxe <= 1e-6 * sqrt(n0) * 4, "d=%d H(H(x)) err %g", d, maxe);
            /* signed: inverse undoes it, norm kept */
            const uint64_t seed = 0x1234567ull + (uint64_t)rep;
            memcpy(y, x, (size_t)d * 4);
            kvs_hadamard(y, d, seed);
            CHECKF(fabs(dotd(y, y, d) - n0) <= 1e-5 * n0, "d=%d signed norm", d);
            memcpy(z, y, (size_t)d * 4);
            CHECK(kvs_hadamard_inv(z, d, seed) == 0);
            maxe = 0;
            for (int i = 0; i < d; i++) maxe = fmax(maxe, fabs((double)z[i] - x[i]));
            CHECKF(maxe <= 1e-6 * sqrt(n0) * 4, "d=%d inverse err %g", d, maxe);
            /* fast vs reference (within 1e-6 relative to the vector norm) */
            memcpy(z, x, (size_t)d * 4);
            kvs_hadamard_ref(z, d, seed);
            maxe = 0;
            for (int i = 0; i < d; i++) maxe = fmax(maxe, fabs((double)z[i] - y[i]));
            CHECKF(maxe <= 1e-6 * sqrt(n0), "d=%d dispatch vs ref %g", d, maxe);
            if (avx2) {
                memcpy(y, x, (size_t)d * 4);
                kvs_hadamard_avx2(y, d, seed);
                maxe = 0;
                for (int i = 0; i < d; i++) maxe = fmax(maxe, fabs((double)z[i] - y[i]));
                CHECKF(maxe <= 1e-6 * sqrt(n0), "d=%d avx2 vs ref %g", d, maxe);
            }
            /* q.k preserved when both rotate with the same seed (correlated pair) */
            for (int i = 0; i < d; i++) {
                q[i] = x[i];
                k[i] = x[i] + 0.3f * test_rng_normal(&g_rng);
            }
            const double d0 = dotd(q, k, d);
            kvs_hadamard(q, d, seed);
            kvs_hadamard(k, d, seed);
            CHECKF(fabs(dotd(q, k, d) - d0) <= 1e-5 * fabs(d0), "d=%d dot %.9g vs %.9g", d, dotd(q, k, d), d0);
        }
        /* matches the explicit matrix H_ij = (-1)^popcount(i&j) / sqrt(d), D from sign words */
        if (d <= 256) {
            fill_normal(x, (size_t)d, 1.0f);
            memcpy(y, x, (size_t)d * 4);
            const uint64_t seed = 99;
            kvs_hadamard(y, d, seed);
            double maxe = 0;
            for (int i = 0; i < d; i++) {
                double s = 0;
                for (int j = 0; j < d; j++) {
                    const double sg = (kvs_hadamard_sign_word(seed, (uint64_t)j / 64) >> (j % 64)) & 1 ? -1.0 : 1.0;
                    s += ((__builtin_popcount((unsigned)(i & j)) & 1) ? -1.0 : 1.0) * sg * x[j];
                }
                maxe = fmax(maxe, fabs(s / sqrt((double)d) - y[i]));
            }
            CHECKF(maxe <= 1e-5, "d=%d explicit matrix err %g", d, maxe);
        }
        free(x); free(y); free(z); free(q); free(k);
    }
    /* signs: seed 0 flips nothing; seeds differ; about half flipped */
    CHECK(kvs_hadamard_sign_word(0, 5) == 0);
    CHECK(kvs_hadamard_sign_word(1, 0) != kvs_hadamard_sign_word(2, 0));
    CHECK(kvs_hadamard_sign_word(7, 0) != kvs_hadamard_sign_word(7, 1));
    int pc = __builtin_popcountll(kvs_hadamard_sign_word(42, 0)) + __builtin_popcountll(kvs_hadamard_sign_word(42, 1));
    CHECKF(pc > 40 && pc < 88, "popcount %d", pc);
    /* bad d: refused, x untouched */
    float w[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    CHECK(kvs_hadamard(w, 12, 1) == -1 && w[0] == 1 && w[11] == 12);
    CHECK(kvs_hadamard(w, 0, 1) == -1);
    CHECK(kvs_hadamard(w, -4, 1) == -1);
    CHECK(kvs_hadamard_inv(w, 6, 1) == -1 && w[5] == 6);
}


/* ---- clipping quantizers ---- */

static double sse(const float *a, const float *b, size_t n) {
    double e = 0.0;
    for (size_t i = 0; i < n; i++) e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return e;
}

static void test_clip(void) {
    static const int ds[] = {16, 64, 100};
    static const int Gs[] = {16, 32, 64, 128};
    int worse = 0, better = 0, cases = 0;
    double e_mm = 0.0, e_cl = 0.0;
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 4; b++)
            for (int bits = 2; bits <= 4; bits++) {
                const int d = ds[a], G = Gs[b];
                float *k = malloc((size_t)G * d * 4), *o1 = malloc((size_t)G * d * 4), *o2 = malloc((size_t)G * d * 4);
                uint8_t *b1 = malloc(kvs_kivi_key_block_bytes(d, G, bits)), *b2 = malloc(kvs_kivi_key_block_bytes(d, G, bits));
                fill_normal(k, (size_t)G * d, 1.0f);
                for (int i = 0; i < G * d / 50 + 1; i++) /* a few outliers */
                    k[test_rng_next(&g_rng) % (uint64_t)(G * d)] *= 8.0f;
                kvs_kivi_quantize_keys(k, d, G, bits, b1);
                kvs_kivi_quantize_keys_clip(k, d, G, bits, b2);
                kvs_kivi_dequantize_keys_ref(b1, d, G, bits, 0, G, o1);
                kvs_kivi_dequantize_keys_ref(b2, d, G, bits, 0, G, o2);
                double x1 = sse(k, o1, (size_t)G * d), x2 = sse(k, o2, (size_t)G * d);
                worse += x2 > x1 * (1.0 + 1e-9);
                better += x2 < x1 * 0.999;
                e_mm += x1;
                e_cl += x2;
                cases++;
                /* values: one row per token, min-max and symmetric rows (2 bytes fewer per group) */
                const size_t vb = kvs_kivi_value_row_bytes(d, G, bits, false);
                uint8_t *r1 = malloc(vb), *r2 = malloc(vb);
                for (int sym = 0; sym < 2; sym++) {
                    kvs_kivi_quantize_value(k, d, G, bits, sym, r1);
                    kvs_kivi_quantize_value_clip(k, d, G, bits, sym, r2);
                    kvs_kivi_dequantize_value_ref(r1, d, G, bits, sym, o1);
                    kvs_kivi_dequantize_value_ref(r2, d, G, bits, sym, o2);
                    worse += sse(k, o2, (size_t)d) > sse(k, o1, (size_t)d) * (1.0 + 1e-9);
                    cases++;
                }
                free(k); free(o1); free(o2); free(b1); free(b2); free(r1); free(r2);
            }
    printf("  clip: key SSE %.4g -> %.4g (min-max -> clipped), %d of %d groups sets better\n", e_mm, e_cl, better,
           cases / 3);
    CHECKF(worse == 0, "clipping worse than min-max in %d of %d cases", worse, cases);
    CHECKF(better > cases / 6, "clipping helped in only %d cases", better);
    /* a constant group stays exact */
    float c[32 * 4];
    for (int i = 0; i < 32 * 4; i++) c[i] = 1.5f;
    uint8_t blk[1024];
    float o[32 * 4];
    kvs_kivi_quantize_keys_clip(c, 4, 32, 2, blk);
    kvs_kivi_dequantize_keys_ref(blk, 4, 32, 2, 0, 32, o);
    CHECK(sse(c, o, 32 * 4) == 0.0);
}

/* ---- per-channel cache: f16 sinks, quantized groups, f16 residual ---- */

static float f16r(float x) { return kvs_f16_to_f32(kvs_f32_to_f16(x)); }

/* Expected stored value of every position, emulated from the inputs:
 * positions < S and the newest (m - q) stream tokens in f16, the stream's
 * first q tokens (the largest multiple of G leaving >= R) quantized by
 * groups from their f16 values. exp: (n, H, d) keys then values. */
static void cache_expect(const float *k, const float *v, int n, int H, int d, int G, int S, int R, int kb, int vbits,
                         int clip, bool sym, float *ek, float *ev) {
    int m = n > S ? n - S : 0, q = 0;
    while (q + G <= m && m - (q + G) >= R) q += G;
    for (int i = 0; i < n * H * d; i++) { ek[i] = f16r(k[i]); ev[i] = f16r(v[i]); }
    float *g = malloc((size_t)G * d * 4), *o = malloc((size_t)G * d * 4);
    uint8_t *blk = malloc(kvs_kivi_key_block_bytes(d, G, kb)), *row = malloc(kvs_kivi_value_row_bytes(d, G, vbits, sym));
    for (int g0 = 0; g0 < q; g0 += G)
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < G; t++) memcpy(g + (size_t)t * d, ek + ((size_t)(S + g0 + t) * H + h) * d, (size_t)d * 4);
            if (clip) kvs_kivi_quantize_keys_clip(g, d, G, kb, blk);
            else kvs_kivi_quantize_keys(g, d, G, kb, blk);
            kvs_kivi_dequantize_keys_ref(blk, d, G, kb, 0, G, o);
            for (int t = 0; t < G; t++) memcpy(ek + ((size_t)(S + g0 + t) * H + h) * d, o + (size_t)t * d, (size_t)d * 4);
            for (int t = 0; t < G; t++) {
                float *x = ev + ((size_t)(S + g0 + t) * H + h) * d;
                if (clip) kvs_kivi_quantize_value_clip(x, d, G, vbits, sym, row);
                else kvs_kivi_quantize_value(x, d, G, vbits, sym, row);
                kvs_kivi_dequantize_value_ref(row, d, G, vbits, sym, x);
            }
        }
    free(g); free(o); free(blk); free(row);
}

static void test_cache_residual(void) {
    static const struct { int G, S, R, page, clip, sym; } cfg[] = {
        {8, 0, 0, 16, 0, 0}, {8, 3, 16, 16, 0, 1}, {8, 0, 8, 8, 1, 0}, {16, 4, 32, 32, 1, 1}, {4, 1, 4, 8, 0, 0},
        {16, 0, 0, 16, 1, 1},
    };
    const int H = 2, d = 16, N = 150, kb = 3, vbits = 2;
    float *k = malloc((size_t)N * H * d * 4), *v = malloc((size_t)N * H * d * 4);
    float *ek = malloc((size_t)N * H * d * 4), *ev = malloc((size_t)N * H * d * 4), *row = malloc((size_t)N * d * 4);
    int bad = 0, checked = 0;
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        fill_normal(k, (size_t)N * H * d, 1.0f);
        fill_normal(v, (size_t)N * H * d, 1.0f);
        kvs_kv_scheme sc = kvs_kv_scheme_full((uint32_t)H, (uint32_t)d, (uint32_t)d, KVS_TYPE_F16);
        sc.layout = KVS_KV_LAYOUT_CHANNEL;
        sc.k_bits = (uint32_t)kb;
        sc.v_bits = (uint32_t)vbits;
        sc.group = (uint32_t)cfg[c].G;
        sc.first = (uint32_t)cfg[c].S;
        sc.recent = (uint32_t)cfg[c].R;
        sc.clip = (uint32_t)cfg[c].clip;
        sc.v_sym = (uint32_t)cfg[c].sym;
        sc.page_tokens = (uint32_t)cfg[c].page;
        kvs_kv_cache *kc = NULL;
        CHECK(kvs_kv_cache_new(&sc, 1, (uint32_t)N, 0, &kc) == KVS_OK);
        if (!kc) continue;
        int n = 0, step = 0;
        kvs_kv_segment segs[64];
        CHECK(kvs_kv_cache_max_segments(kc, 0) <= 64);
        while (n < N) {
            int len = 1 + (int)((step++ * 7 + 3) % 23); /* chunks of 1..23 tokens */
            if (n + len > N) len = N - n;
            CHECK(kvs_kv_cache_reserve(kc, (uint64_t)(n + len)) == KVS_OK);
            CHECK(kvs_kv_cache_store(kc, 0, (uint64_t)n, len, k + (size_t)n * H * d, v + (size_t)n * H * d) == KVS_OK);
            n += len;
            CHECKF(kc->bytes == kvs_kv_scheme_bytes(&sc, (uint64_t)n), "cfg %zu: %llu bytes held at %d tokens, formula %llu",
                   c, (unsigned long long)kc->bytes, n, (unsigned long long)kvs_kv_scheme_bytes(&sc, (uint64_t)n));
            cache_expect(k, v, n, H, d, cfg[c].G, cfg[c].S, cfg[c].R, kb, vbits, cfg[c].clip, cfg[c].sym != 0, ek, ev);
            int ns = kvs_kv_cache_segments(kc, 0, (uint64_t)n, segs, 64);
            int64_t next = 0;
            for (int i = 0; i < ns; i++) {
                const kvs_kv_segment *sg = &segs[i];
                bad += sg->pos0 != next;
                next = sg->pos0 + sg->n;
                for (int h = 0; h < H; h++)
                    for (int kv = 0; kv < 2; kv++) {
                        if (sg->decode) sg->decode(sg, kv == 0, true, h, 0, sg->n, row);
                        else
                            for (int64_t t = 0; t < sg->n; t++) {
                                const uint8_t *src = kv == 0 ? sg->k + h * sg->k_head_stride + t * sg->k_row
                                                             : sg->v + h * sg->v_head_stride + t * sg->v_row;
                                for (int e = 0; e < d; e++) {
                                    uint16_t x;
                                    memcpy(&x, src + 2 * e, 2);
                                    row[t * d + e] = kvs_f16_to_f32(x);
                                }
                            }
                        for (int64_t t = 0; t < sg->n; t++)
                            for (int e = 0; e < d; e++) {
                                const float want = (kv == 0 ? ek : ev)[((size_t)(sg->pos0 + t) * H + h) * d + e];
                                bad += row[t * d + e] != want;
                                checked++;
                            }
                    }
            }
            bad += next != n;
        }
        kvs_kv_cache_free(kc);
    }
    CHECKF(bad == 0, "%d of %d stored K/V values differ from the emulation", bad, checked);
    CHECK(checked > 100000);
    /* formula pieces: first/recent add f16 tokens and delay quantization */
    kvs_kv_scheme sc = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    sc.layout = KVS_KV_LAYOUT_CHANNEL;
    sc.k_bits = 4; sc.v_bits = 3; sc.group = 64; sc.page_tokens = 256;
    uint64_t base = kvs_kv_scheme_bytes(&sc, 2048);
    sc.first = 4; sc.recent = 128;
    const uint64_t f16tok = 3 * 128 * 2;
    uint64_t q = (2048 - 132) / 64 * 64; /* 1856 -> pages of 256: 2048 */
    uint64_t want = (2048 / 64) * 3 * 64 * (32 + 4) + 2048 * 3 * (24 + 4) + (4 + 128 + 64) * f16tok;
    CHECK(q == 1856);
    CHECKF(kvs_kv_scheme_bytes(&sc, 2048) == want, "bytes %llu, want %llu (base %llu)",
           (unsigned long long)kvs_kv_scheme_bytes(&sc, 2048), (unsigned long long)want, (unsigned long long)base);
    sc.recent = 100;
    CHECK(kvs_kv_scheme_validate(&sc) != KVS_OK);
    free(k); free(v); free(ek); free(ev); free(row);
}

/* ---- grammar ---- */

static void test_spec(void) {
    kvs_kv_scheme sc[4];
    for (int i = 0; i < 4; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 4, "q4k3v,group=64,recent=128,first=4,clip,rotate=kv;3:q2k2v,rotate=v") == KVS_OK);
    CHECK(sc[0].layout == KVS_KV_LAYOUT_CHANNEL && sc[0].recent == 128 && sc[0].first == 4 && sc[0].clip == 1);
    CHECK(sc[0].rotate == 1 && sc[0].rotate_v == 1 && sc[0].group == 64);
    CHECK(sc[3].k_bits == 2 && sc[3].rotate == 0 && sc[3].rotate_v == 1);
    for (int i = 0; i < 4; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 4, "q4k2v,group=128,vsym,rotate=v") == KVS_OK);
    CHECK(sc[0].v_sym == 1 && sc[3].v_sym == 1 && sc[0].v_bits == 2);
    for (int i = 0; i < 4; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 4, "q4_0,vsym") == KVS_ERR_INVALID_ARG);
    CHECK(strstr(kvs_last_error(), "vsym") != NULL);
    for (int i = 0; i < 4; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 4, "q8_0,recent=64") == KVS_ERR_INVALID_ARG);
    CHECK(strstr(kvs_last_error(), "per-channel") != NULL);
    for (int i = 0; i < 4; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 4, "q4k4v,group=64,recent=32") == KVS_ERR_INVALID_ARG);
    CHECK(strstr(kvs_last_error(), "recent=32") != NULL);
    for (int i = 0; i < 4; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 4, "q4k4v,rotate=x") == KVS_ERR_INVALID_ARG);
}

/* ---- value rotation through a whole model ---- */

static double logits_rel_diff(const kvs_model *m, const char *rules_a, const char *rules_b) {
    kvs_token toks[96];
    for (int i = 0; i < 96; i++) toks[i] = (kvs_token)(200 + (97 * i) % 5000);
    kvs_model_info mi;
    kvs_model_get_info(m, &mi);
    const int32_t nv = mi.n_vocab;
    float *la = malloc((size_t)96 * nv * 4), *lb = malloc((size_t)96 * nv * 4);
    double num = 0.0, den = 0.0;
    for (int w = 0; w < 2; w++) {
        kvs_session_params sp = kvs_session_params_default();
        sp.n_ctx = 128;
        sp.n_threads = 2;
        sp.kv_layers = w ? rules_b : rules_a;
        kvs_session *s = NULL;
        CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
        if (!s) { free(la); free(lb); return 1e9; }
        /* a prompt chunk, then single steps: both attention paths */
        CHECK(kvs_decode(s, toks, 80, true, w ? lb : la) == KVS_OK);
        for (int i = 80; i < 96; i++) CHECK(kvs_decode(s, toks + i, 1, true, (w ? lb : la) + (size_t)i * nv) == KVS_OK);
        kvs_session_free(s);
    }
    for (size_t i = 0; i < (size_t)96 * nv; i++) {
        num += ((double)la[i] - lb[i]) * ((double)la[i] - lb[i]);
        den += (double)la[i] * la[i];
    }
    free(la);
    free(lb);
    return sqrt(num / den);
}

static void test_rotate_values(void) {
    const char *path = test_model_path();
    if (!path) { printf("  (no model: value-rotation model check skipped)\n"); return; }
    kvs_model *m = NULL;
    CHECK(kvs_model_load(path, NULL, &m) == KVS_OK);
    if (!m) return;
    /* On an f32 cache a rotation is exact up to f32 rounding, which the
     * model's 8-bit quantized activations amplify to ~1e-2: the key
     * rotation (checked elsewhere against the reference attention) gives
     * the scale; a value rotation not undone on the output would change
     * the logits by O(1). */
    double ek = logits_rel_diff(m, "f32", "f32,rotate=k"), e = logits_rel_diff(m, "f32", "f32,rotate=v");
    printf("  f32 cache, relative logit difference: rotate=k %.2e, rotate=v %.2e\n", ek, e);
    CHECKF(e < 0.05 && e < 5.0 * ek + 1e-3, "value rotation changed the logits by %.2e (keys: %.2e)", e, ek);
    double e2 = logits_rel_diff(m, "f32", "q4k2v,group=32,rotate=kv,recent=32,first=4,clip");
    CHECKF(e2 > 1e-4 && e2 < 0.5, "quantized cache: relative logit difference %.2e", e2);
    /* symmetric value rows on rotated values: the same error class, fewer bytes */
    double e3 = logits_rel_diff(m, "f32", "q4k2v,group=32,rotate=kv,recent=32,first=4,clip,vsym");
    printf("  q4k2v relative logit difference: min-max values %.2e, symmetric values %.2e\n", e2, e3);
    CHECKF(e3 > 1e-4 && e3 < 0.5 && e3 < 2.0 * e2, "vsym cache: relative logit difference %.2e (min-max %.2e)", e3, e2);
    kvs_model_free(m);
}

int main(void) {
    printf("  simd=%s\n", kvs_cpu_simd_name());
    test_sizes();
    test_roundtrip_nmse();
    test_keys_paths();
    test_values_paths();
    test_attention_kernels();
    test_constants_and_nonfinite();
    test_hadamard();
    test_clip();
    test_cache_residual();
    test_spec();
    test_rotate_values();
    return test_finish("test_kivi");
}
