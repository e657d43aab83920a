/* Element/block formats: fast kernels vs scalar references on fresh random
 * rows (several seeds, 1 / 3 / 7 / 100+ blocks, all-zero blocks, tiny and
 * large-magnitude blocks), references vs float64, quantization error bounds,
 * the 4-row dot, f16/bf16 special values, and the table helpers.
 *
 * Tolerances (S = sum_i |w_i| |x_i| over dequantized values, float64):
 *   to_float / from_float fast vs ref ....... bit-exact
 *   vec_dot fast vs ref ..................... |d| <= 1e-5 * S + 1e-30
 *   vec_dot_ref vs float64 dot .............. |d| <= 1e-5 * S + 1e-30
 *     (for q8_1 activations the float64 reference uses the stored s = d*sum(q)
 *      per block, exactly the quantity the format defines)
 *   vec_dot_x4 vs 4 x vec_dot ............... |d| <= 1e-5 * S + 1e-30
 *   quantize -> dequantize NMSE (N(0,1) data): see nmse_bound[]. */
#include <string.h>

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/f16.h"
#include "core/quant_internal.h"
#include "core/repack.h"
#include "test_util.h"

static const uint32_t k_types[] = {
    KVS_TYPE_F32,  KVS_TYPE_F16,  KVS_TYPE_BF16, KVS_TYPE_Q4_0, KVS_TYPE_Q4_1,
    KVS_TYPE_Q5_0, KVS_TYPE_Q5_1, KVS_TYPE_Q8_0, KVS_TYPE_Q8_1, KVS_TYPE_Q2_K,
    KVS_TYPE_Q3_K, KVS_TYPE_Q4_K, KVS_TYPE_Q5_K, KVS_TYPE_Q6_K, KVS_TYPE_Q8_K, KVS_TYPE_MXFP4,
};
#define N_TYPES (int)(sizeof k_types / sizeof k_types[0])

static double nmse_bound(uint32_t t) {
    switch (t) {
    case KVS_TYPE_F32: return 1e-30;
    case KVS_TYPE_F16: return 1e-6;
    case KVS_TYPE_BF16: return 2e-5;
    case KVS_TYPE_Q8_0: case KVS_TYPE_Q8_1: case KVS_TYPE_Q8_K: return 1e-4;
    case KVS_TYPE_Q6_K: return 1e-3;
    case KVS_TYPE_Q5_0: case KVS_TYPE_Q5_1: case KVS_TYPE_Q5_K: return 4e-3;
    case KVS_TYPE_Q4_0: case KVS_TYPE_Q4_1: case KVS_TYPE_Q4_K: return 1.5e-2;
    case KVS_TYPE_MXFP4: return 4e-2; /* E2M1 with a power-of-two scale: coarser than q4_0 */
    default: return 0;
    }
}

/* A row of mixed blocks: mostly N(0,1), some all-zero, tiny, large (x1e3)
 * blocks and single outliers. Block granularity `bs` (32 for float types). */
static void gen_row(float *x, int64_t n, int bs, uint64_t *rng) {
    if (bs < 32) bs = 32;
    for (int64_t b = 0; b < n; b += bs) {
        const int64_t e = b + bs < n ? b + bs : n;
        const uint64_t kind = test_rng_next(rng) % 10;
        const float scale = kind == 0 ? 0.0f : kind == 1 ? 1e-3f : kind == 2 ? 1e3f : 1.0f;
        for (int64_t i = b; i < e; i++) x[i] = scale * test_rng_normal(rng);
        if (kind == 3) x[b + (int64_t)(test_rng_next(rng) % (uint64_t)(e - b))] *= 20.0f;
        if (kind == 4) /* all-positive block (asymmetric formats) */
            for (int64_t i = b; i < e; i++) x[i] = fabsf(x[i]) + 0.5f;
    }
}

/* Byte offsets of the f16 scale fields of a block (-1 terminated). */
static const int *half_fields(uint32_t t) {
    static const int d0[] = {0, -1}, dm[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1},
                     q6k[] = {208, -1};
    switch (t) {
    case KVS_TYPE_Q4_0: case KVS_TYPE_Q5_0: case KVS_TYPE_Q8_0: return d0;
    case KVS_TYPE_Q4_1: case KVS_TYPE_Q5_1: case KVS_TYPE_Q4_K: case KVS_TYPE_Q5_K: return dm;
    case KVS_TYPE_Q2_K: return q2k;
    case KVS_TYPE_Q3_K: return q3k;
    case KVS_TYPE_Q6_K: return q6k;
    default: return NULL;
    }
}

/* Weights in type t: quantized from x (when a quantizer exists and !raw),
 * else random bytes with sane (finite, signed) f16 scale fields, so every
 * bit pattern of the quants and packed scales gets exercised. */
static void make_weights(uint32_t t, const float *x, void *buf, int64_t n, uint64_t *rng, int raw) {
    const kvs_type_traits *R = kvs_type_traits_ref(t);
    const int *hf = half_fields(t);
    if (t == KVS_TYPE_MXFP4 && raw) { /* every nibble pattern, exponents 2^-8 .. 2^6 */
        kvs_block_mxfp4 *b = buf;
        for (int64_t i = 0; i < n / KVS_QK; i++) {
            b[i].e = (uint8_t)(120 + test_rng_next(rng) % 15);
            for (int j = 0; j < KVS_QK / 2; j++) b[i].qs[j] = (uint8_t)test_rng_next(rng);
        }
        return;
    }
    if (R->from_float_ref && (!raw || !hf)) { R->from_float_ref(x, buf, n); return; }
    const size_t bytes = kvs_row_bytes(t, n);
    uint8_t *p = buf;
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)test_rng_next(rng);
    for (int64_t b = 0; b < n / R->block_size; b++)
        for (const int *o = hf; *o >= 0; o++) {
            const uint16_t h = kvs_f32_to_f16(0.1f * test_rng_uniform(rng));
            memcpy(p + (size_t)b * R->type_size + *o, &h, 2);
        }
}

static double abs_dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    return s;
}

static void test_type(uint32_t t, uint64_t seed) {
    const kvs_type_traits *F = kvs_type_traits_of(t), *R = kvs_type_traits_ref(t);
    CHECK(F && R);
    if (!F || !R) return;
    const int bs = R->block_size;
    const int64_t lens_q[] = {1, 3, 7, 129, 4096 / 32 + 3};
    const int64_t lens_f[] = {1, 7, 31, 4101, 33};
    for (int li = 0; li < 5; li++) {
        const int64_t n = bs == 1 ? lens_f[li] : (bs == KVS_QK_K ? (li == 3 ? 17 : li == 4 ? 16 : lens_q[li]) * bs
                                                                  : lens_q[li] * bs);
        uint64_t rng = seed * 7919 + (uint64_t)t * 131 + (uint64_t)li + 1;
        const size_t wb = kvs_row_bytes(t, n);
        CHECK(wb > 0);
        float *x = malloc((size_t)n * 4), *y_ref = malloc((size_t)n * 4), *y_fast = malloc((size_t)n * 4);
        uint8_t *w = malloc(wb), *w2 = malloc(wb);
        gen_row(x, n, bs, &rng);
        make_weights(t, x, w, n, &rng, 1);

        /* (1) dequantizers bit-exact */
        R->to_float_ref(w, y_ref, n);
        F->to_float(w, y_fast, n);
        CHECKF(memcmp(y_ref, y_fast, (size_t)n * 4) == 0, "%s to_float n=%lld", R->name, (long long)n);
        /* quantizers bit-exact */
        if (F->from_float && R->from_float_ref) {
            R->from_float_ref(x, w, n);
            F->from_float(x, w2, n);
            CHECKF(memcmp(w, w2, wb) == 0, "%s from_float n=%lld", R->name, (long long)n);
        }
        /* weights for the dots: the (ref) quantized row on odd seeds, raw
         * random blocks on even ones */
        make_weights(t, x, w, n, &rng, (int)(seed % 2 == 0));
        R->to_float_ref(w, y_ref, n);

        if (R->vec_dot_ref) {
            const uint32_t vt = R->vec_dot_type;
            const kvs_type_traits *VF = kvs_type_traits_of(vt), *VR = kvs_type_traits_ref(vt);
            const size_t xb = kvs_row_bytes(vt, n);
            const size_t stride = xb + 64;
            uint8_t *xq = malloc(stride * 4);
            float *xs = malloc((size_t)n * 4 * 4), *xd = malloc((size_t)n * 4);
            float s4[4], s1[4];
            for (int r = 0; r < 4; r++) {
                gen_row(xs + (size_t)r * n, n, bs, &rng);
                VF->from_float(xs + (size_t)r * n, xq + stride * r, n);
            }
            for (int r = 0; r < 4; r++) {
                const uint8_t *xr = xq + stride * r;
                VR->to_float_ref(xr, xd, n);
                const double S = abs_dot(y_ref, xd, n);
                double exact = 0;
                for (int64_t i = 0; i < n; i++) exact += (double)y_ref[i] * xd[i];
                if (vt == KVS_TYPE_Q8_1) { /* use the stored block sums s */
                    for (int64_t b = 0; b < n / KVS_QK; b++) {
                        uint16_t mh, sh;
                        memcpy(&mh, w + (size_t)b * R->type_size + 2, 2);
                        memcpy(&sh, xr + (size_t)b * sizeof(kvs_block_q8_1) + 2, 2);
                        double sx = 0;
                        for (int i = 0; i < KVS_QK; i++) sx += xd[b * KVS_QK + i];
                        exact += (double)kvs_f16_to_f32(mh) * ((double)kvs_f16_to_f32(sh) - sx);
                    }
                }
                float sr = 0, sf = 0;
                R->vec_dot_ref(n, &sr, w, xr);
                F->vec_dot(n, &sf, w, xr);
                s1[r] = sf;
                const double tol = 1e-5 * S + 1e-30;
                CHECKF(fabs((double)sr - exact) <= tol, "%s vec_dot_ref vs f64 n=%lld: %.9g vs %.9g (S=%g)",
                       R->name, (long long)n, sr, exact, S);
                CHECKF(fabs((double)sf - sr) <= tol, "%s vec_dot fast vs ref n=%lld: %.9g vs %.9g (S=%g)",
                       R->name, (long long)n, sf, sr, S);
                if (r == 0 && li == 3 && seed == 1)
                    printf("  %-5s n=%-5lld dot fast-ref %.2e, ref-f64 %.2e (rel. to S)\n", R->name, (long long)n,
                           fabs((double)sf - sr) / (S + 1e-300), fabs((double)sr - exact) / (S + 1e-300));
            }
            if (F->vec_dot_x4) {
                F->vec_dot_x4(n, s4, w, xq, stride);
                for (int r = 0; r < 4; r++) {
                    VR->to_float_ref(xq + stride * r, xd, n);
                    const double tol = 1e-5 * abs_dot(y_ref, xd, n) + 1e-30;
                    CHECKF(fabs((double)s4[r] - s1[r]) <= tol, "%s vec_dot_x4 row %d n=%lld: %.9g vs %.9g",
                           R->name, r, (long long)n, s4[r], s1[r]);
                }
            }
            free(xq); free(xs); free(xd);
        }
        free(x); free(y_ref); free(y_fast); free(w); free(w2);
    }
}

/* (5) many-row kernels (gemm) vs the reference (vec_dot_ref per pair) at
 * awkward shapes: activation rows 1..17 (not multiples of the 4-token tile),
 * weight rows not multiples of the 8-column panel, odd block counts, padded
 * strides. Per element |d| <= 1e-5 * S (S as for vec_dot) and the NMSE of
 * the whole output <= 1e-10 (float reassociation only). */
static void test_gemm(uint32_t t, uint64_t seed, int vnni, int packed) {
    const kvs_type_traits *F = kvs_type_traits_of(t), *R = kvs_type_traits_ref(t);
    if (!F || !F->gemm) return;
    if (packed && !kvs_repack_supported(t)) return;
    const kvs_gemm_fn gemm = packed ? kvs_gemm_x8_variant(t, vnni) : kvs_gemm_variant(t, vnni);
    const char *isa = packed ? (vnni ? "vnni x8" : "avx2 x8") : vnni ? "vnni" : "avx2";
    CHECKF(gemm != NULL, "%s: no %s gemm", R->name, isa);
    if (!gemm) return;
    const int bs = R->block_size;
    const uint32_t vt = R->vec_dot_type;
    const kvs_type_traits *VF = kvs_type_traits_of(vt), *VR = kvs_type_traits_ref(vt);
    static const int64_t nts[] = {1, 2, 3, 4, 5, 17};
    static const int64_t nrs[] = {1, 3, 8, 9, 23};
    static const int64_t nbs[] = {1, 3, 7};
    static const int64_t nfs[] = {1, 13, 72};
    for (int bi = 0; bi < 3; bi++) {
        const int64_t n = bs == 1 ? nfs[bi] : nbs[bi] * bs;
        const size_t wrb = kvs_row_bytes(t, n), ws = wrb + 16 * (size_t)bi;
        const size_t xrb = kvs_row_bytes(vt, n), xs = xrb + 8 * (size_t)bi;
        const int64_t max_nt = 17, max_nr = 23;
        const size_t as = (size_t)(n / 32) + (size_t)bi;
        uint8_t *w = calloc(ws * (size_t)max_nr, 1), *xq = calloc(xs * (size_t)max_nt, 1);
        float *xf = malloc(sizeof(float) * (size_t)n), *wd = malloc(sizeof(float) * (size_t)n),
              *xd = malloc(sizeof(float) * (size_t)n);
        kvs_q8_aux *aux = calloc(as * (size_t)max_nt + 1, sizeof *aux);
        const size_t ys = (size_t)max_nr + 5;
        float *y = malloc(sizeof(float) * ys * (size_t)max_nt), *yr = malloc(sizeof(float) * ys * (size_t)max_nt);
        void *scratch = kvs_aligned_alloc(kvs_gemm_scratch_bytes(t, n) + 64);
        double *S = malloc(sizeof(double) * ys * (size_t)max_nt);
        uint64_t rng = seed * 104729 + (uint64_t)t * 17 + (uint64_t)bi;
        CHECK(w && xq && xf && wd && xd && aux && y && yr && scratch && S);
        for (int64_t r = 0; r < max_nr; r++) {
            gen_row(xf, n, bs, &rng);
            make_weights(t, xf, w + (size_t)r * ws, n, &rng, (int)((seed + (uint64_t)r) % 2 == 0));
        }
        /* the x8 copy (core/repack.h) of all max_nr rows; unpacking gives the rows back */
        uint8_t *pw = packed ? malloc(kvs_repack_bytes(t, n, max_nr)) : NULL, *row = malloc(wrb);
        CHECK(row && (!packed || pw));
        if (packed) {
            kvs_repack_x8(t, w, ws, n, max_nr, pw);
            int diff = 0;
            for (int64_t r = 0; r < max_nr; r++) {
                kvs_unpack_x8_row(t, pw + (size_t)(r / 8) * kvs_repack_group_bytes(t, n), n, (int)(r % 8), row);
                diff += memcmp(row, w + (size_t)r * ws, wrb) != 0;
            }
            CHECKF(diff == 0, "%s x8 n=%lld: %d rows differ after pack and unpack", R->name, (long long)n, diff);
        }
        for (int64_t i = 0; i < max_nt; i++) {
            gen_row(xf, n, bs, &rng);
            VF->from_float(xf, xq + (size_t)i * xs, n);
            if (F->gemm_xaux) kvs_q8_aux_fill(vt, xq + (size_t)i * xs, aux + (size_t)i * as, n);
        }
        for (int64_t i = 0; i < max_nt; i++) {
            VR->to_float_ref(xq + (size_t)i * xs, xd, n);
            for (int64_t r = 0; r < max_nr; r++) {
                R->to_float_ref(w + (size_t)r * ws, wd, n);
                S[(size_t)i * ys + (size_t)r] = abs_dot(wd, xd, n);
            }
        }
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 5; b++) {
                const int64_t nt = nts[a], nr = nrs[b];
                for (size_t k = 0; k < ys * (size_t)max_nt; k++) y[k] = yr[k] = -7.0f; /* canaries */
                kvs_gemm_args ga = {.n = n, .nr = nr, .nt = nt, .w = w, .w_stride = ws, .x = xq, .x_stride = xs,
                                    .xaux = aux, .xaux_stride = as, .y = y, .y_stride = ys, .scratch = scratch};
                kvs_gemm_args gp = ga;
                if (packed) {
                    gp.w = pw;
                    gp.w_stride = kvs_repack_group_bytes(t, n);
                }
                gemm(&gp);
                { /* a row's numbers do not depend on how many rows share the call (chunk invariance) */
                    float *yall = malloc(sizeof(float) * ys * (size_t)max_nt);
                    CHECK(yall != NULL);
                    if (yall) {
                        kvs_gemm_args g1 = gp;
                        g1.y = yall;
                        g1.nt = max_nt;
                        gemm(&g1);
                        int moved = 0;
                        for (int64_t i = 0; i < nt; i++)
                            moved += memcmp(y + (size_t)i * ys, yall + (size_t)i * ys, sizeof(float) * (size_t)nr) != 0;
                        /* and row i alone, from its own offset, equals row i among the others */
                        float yone[32];
                        for (int64_t i = nt; i < max_nt; i += 3) {
                            kvs_gemm_args g2 = gp;
                            g2.nt = 1;
                            g2.x = xq + (size_t)i * xs;
                            g2.xaux = aux + (size_t)i * as;
                            g2.y = yone;
                            gemm(&g2);
                            moved += memcmp(yone, yall + (size_t)i * ys, sizeof(float) * (size_t)nr) != 0;
                        }
                        CHECKF(moved == 0, "%s %s gemm n=%lld nr=%lld: %d of %lld rows change between nt=%lld and nt=%lld",
                               R->name, isa, (long long)n, (long long)nr, moved, (long long)nt, (long long)nt,
                               (long long)max_nt);
                        free(yall);
                    }
                }
                ga.y = yr;
                kvs_gemm_ref(t, &ga);
                if (packed) { /* the packed reference twin gives the reference's own numbers */
                    float *y2 = malloc(sizeof(float) * ys * (size_t)max_nt);
                    CHECK(y2 != NULL);
                    if (!y2) continue;
                    memcpy(y2, yr, sizeof(float) * ys * (size_t)max_nt);
                    gp.y = y2;
                    kvs_gemm_x8_ref(t, &gp);
                    CHECKF(!memcmp(y2, yr, sizeof(float) * ys * (size_t)max_nt),
                           "%s x8 reference n=%lld nt=%lld nr=%lld differs from kvs_gemm_ref", R->name, (long long)n,
                           (long long)nt, (long long)nr);
                    free(y2);
                }
                double num = 0, den = 0;
                int bad = 0, canary = 0;
                for (int64_t i = 0; i < max_nt; i++)
                    for (size_t r = 0; r < ys; r++) {
                        const size_t k = (size_t)i * ys + r;
                        if (i >= nt || (int64_t)r >= nr) { canary += y[k] != -7.0f; continue; }
                        const double d = (double)y[k] - yr[k];
                        num += d * d;
                        den += (double)yr[k] * yr[k];
                        if (!(fabs(d) <= 1e-5 * S[k] + 1e-30)) {
                            if (!bad)
                                fprintf(stderr, "  %s %s gemm n=%lld nt=%lld nr=%lld [%lld,%zu]: %.9g vs %.9g (S=%g)\n",
                                        R->name, isa, (long long)n, (long long)nt, (long long)nr, (long long)i, r,
                                        y[k], yr[k], S[k]);
                            bad++;
                        }
                    }
                CHECKF(bad == 0, "%s %s gemm n=%lld nt=%lld nr=%lld: %d elements off", R->name, isa, (long long)n,
                       (long long)nt, (long long)nr, bad);
                CHECKF(canary == 0, "%s %s gemm n=%lld nt=%lld nr=%lld: wrote %d elements outside the tile", R->name,
                       isa, (long long)n, (long long)nt, (long long)nr, canary);
                CHECKF(num <= 1e-10 * den + 1e-30, "%s %s gemm n=%lld nt=%lld nr=%lld: nmse %.3e", R->name, isa,
                       (long long)n, (long long)nt, (long long)nr, den > 0 ? num / den : num);
            }
        free(w); free(xq); free(xf); free(wd); free(xd); free(aux); free(y); free(yr); free(S); free(pw); free(row);
        kvs_aligned_free(scratch);
    }
}

/* (4) quantize -> dequantize error on N(0,1) data */
static void test_nmse(uint32_t t) {
    const kvs_type_traits *F = kvs_type_traits_of(t), *R = kvs_type_traits_ref(t);
    if (!R->from_float_ref) return;
    const int64_t n = 256 * 64;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    void *q = malloc(kvs_row_bytes(t, n));
    uint64_t rng = 12345 + t;
    for (int64_t i = 0; i < n; i++) x[i] = test_rng_normal(&rng);
    R->from_float_ref(x, q, n);
    F->to_float(q, y, n);
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) { num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]); den += (double)x[i] * x[i]; }
    const double nmse = num / den;
    printf("  %-5s nmse %.3e (bound %.1e)\n", R->name, nmse, nmse_bound(t));
    CHECKF(nmse <= nmse_bound(t), "%s nmse %.3e > %.1e", R->name, nmse, nmse_bound(t));
    /* all-zero input quantizes to exact zeros */
    memset(x, 0, n * 4);
    F->from_float(x, q, n);
    F->to_float(q, y, n);
    int nz = 0;
    for (int64_t i = 0; i < n; i++) nz += y[i] != 0.0f;
    CHECKF(nz == 0, "%s: zero row dequantizes to %d non-zeros", R->name, nz);
    free(x); free(y); free(q);
}

static int same_bits_or_both_nan(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return kvs_f32_bits(a) == kvs_f32_bits(b);
}

/* (6) f16 / bf16 conversions, including inf, nan, subnormals, overflow. */
static void test_half(void) {
    const kvs_type_traits *F16 = kvs_type_traits_of(KVS_TYPE_F16), *R16 = kvs_type_traits_ref(KVS_TYPE_F16);
    const kvs_type_traits *FB = kvs_type_traits_of(KVS_TYPE_BF16), *RB = kvs_type_traits_ref(KVS_TYPE_BF16);
    /* every half / bf16 bit pattern decodes identically in both paths */
    static uint16_t all[65536];
    static float fa[65536], fb[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    int bad = 0;
    F16->to_float(all, fa, 65536);
    R16->to_float_ref(all, fb, 65536);
    for (int i = 0; i < 65536; i++) bad += !same_bits_or_both_nan(fa[i], fb[i]);
    CHECKF(bad == 0, "f16 to_float: %d mismatches", bad);
    bad = 0;
    FB->to_float(all, fa, 65536);
    RB->to_float_ref(all, fb, 65536);
    for (int i = 0; i < 65536; i++) bad += kvs_f32_bits(fa[i]) != kvs_f32_bits(fb[i]);
    CHECKF(bad == 0, "bf16 to_float: %d mismatches", bad);

    /* specials encode as expected through both paths */
    const float sp[16] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 65504.0f, 65520.0f,
                          1e10f, -1e10f, 5.9604645e-08f, 2.9e-08f, 1e-40f, 1.0f + 1.0f / 2048, 3.0f, -2.5f};
    uint16_t hf[16], hr[16], bfv[16], br[16];
    F16->from_float(sp, hf, 16);
    R16->from_float_ref(sp, hr, 16);
    FB->from_float(sp, bfv, 16);
    RB->from_float_ref(sp, br, 16);
    CHECK(memcmp(hf, hr, sizeof hf) == 0);
    CHECK(memcmp(bfv, br, sizeof bfv) == 0);
    CHECK(hr[0] == 0x0000 && hr[1] == 0x8000 && hr[2] == 0x7c00 && hr[3] == 0xfc00);
    CHECK((hr[4] & 0x7c00) == 0x7c00 && (hr[4] & 0x3ff) != 0 && (hr[5] & 0x8000));
    CHECK(hr[6] == 0x7bff && hr[7] == 0x7c00 && hr[8] == 0x7c00 && hr[9] == 0xfc00);
    CHECK(hr[10] == 0x0001 && hr[11] == 0x0000 && hr[12] == 0x0000 && hr[13] == 0x3c00);
    CHECK(br[2] == 0x7f80 && br[3] == 0xff80 && isnan(kvs_bf16_to_f32(br[4])) && br[15] == 0xc020);

    /* random f32 bit patterns (all classes): fast == ref bit-exact */
    const int64_t n = 1 << 18;
    float *x = malloc(n * 4);
    uint16_t *a = malloc(n * 2), *b = malloc(n * 2);
    uint64_t rng = 99;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)test_rng_next(&rng);
        if (i & 1) u = (u & 0x8fffffffu) | 0x30000000u; /* bias toward the half range */
        memcpy(&x[i], &u, 4);
    }
    F16->from_float(x, a, n);
    R16->from_float_ref(x, b, n);
    CHECK(memcmp(a, b, n * 2) == 0);
    FB->from_float(x, a, n);
    RB->from_float_ref(x, b, n);
    CHECK(memcmp(a, b, n * 2) == 0);
    free(x); free(a); free(b);
}

static void test_table(void) {
    CHECK(kvs_type_traits_of(4) == NULL && kvs_type_traits_of(5) == NULL);
    CHECK(kvs_type_traits_of(KVS_TYPE_COUNT) == NULL && kvs_type_traits_of(1000000) == NULL);
    CHECK(strcmp(kvs_dtype_name(KVS_TYPE_Q4_K), "q4_K") == 0);
    CHECK(strcmp(kvs_dtype_name(77), "unknown(77)") == 0);
    CHECK(kvs_row_bytes(KVS_TYPE_Q4_1, 4096) == 128 * 20);
    CHECK(kvs_row_bytes(KVS_TYPE_Q6_K, 512) == 2 * 210);
    CHECK(kvs_row_bytes(KVS_TYPE_Q4_K, 100) == 0);
    CHECK(kvs_row_bytes(KVS_TYPE_F16, 3) == 6);
    CHECK(kvs_row_bytes(33, 256) == 0);
    CHECK(kvs_row_bytes(KVS_TYPE_MXFP4, 64) == 34 && kvs_row_bytes(KVS_TYPE_I32, 5) == 20);
    /* i32 is a GGUF table type: known, but nothing converts or multiplies it */
    CHECK(kvs_type_traits_of(KVS_TYPE_I32) && !kvs_type_traits_of(KVS_TYPE_I32)->to_float &&
          !kvs_type_traits_of(KVS_TYPE_I32)->vec_dot);
    CHECK(strcmp(kvs_dtype_name(KVS_TYPE_I32), "i32") == 0 && strcmp(kvs_dtype_name(KVS_TYPE_MXFP4), "mxfp4") == 0);
    for (int i = 0; i < N_TYPES; i++) {
        const kvs_type_traits *F = kvs_type_traits_of(k_types[i]), *R = kvs_type_traits_ref(k_types[i]);
        CHECK(F && R && F->to_float && R->to_float_ref && R->type_size > 0);
        if (R && R->vec_dot_ref) CHECK(kvs_type_traits_of(R->vec_dot_type)->from_float != NULL);
    }
    CHECK(kvs_type_traits_of(KVS_TYPE_Q4_1)->vec_dot_type == KVS_TYPE_Q8_1);
    CHECK(kvs_type_traits_of(KVS_TYPE_Q4_0)->vec_dot_type == KVS_TYPE_Q8_0);
    CHECK(kvs_type_traits_of(KVS_TYPE_Q6_K)->vec_dot_type == KVS_TYPE_Q8_K);
    CHECK(kvs_type_traits_of(KVS_TYPE_BF16)->vec_dot_type == KVS_TYPE_F32);
    /* a known q4_K block decodes to hand-computed values */
    kvs_block_q4_K b;
    memset(&b, 0, sizeof b);
    b.d = kvs_f32_to_f16(0.5f);
    b.dmin = kvs_f32_to_f16(0.25f);
    b.scales[0] = 3;              /* sc0 = 3 */
    b.scales[4] = 2;              /* m0 = 2 */
    b.scales[8] = 0x15;           /* sc4 low = 5, m4 low = 1 */
    b.scales[0] |= 1 << 6;        /* sc4 high bits = 1 -> sc4 = 21 */
    b.qs[0] = 0x7A;               /* elem 0 = 10, elem 32 = 7 */
    b.qs[64] = 0x09;              /* elem 128 (sub-block 4) = 9 */
    float y[256];
    kvs_type_traits_of(KVS_TYPE_Q4_K)->to_float(&b, y, 256);
    CHECK(y[0] == 0.5f * 3 * 10 - 0.25f * 2);
    CHECK(y[1] == -0.5f);
    CHECK(y[32] == 0.0f * 7); /* sc1 = 0, m1 = 0 */
    CHECK(y[128] == 0.5f * 21 * 9 - 0.25f * 1);
}

/* (7) MXFP4 against gguf-py (scripts/gen_quant_ref.py writes the file with
 * gguf.quants): the quantizer reproduces its bytes and both dequantizers its
 * floats, bit for bit. The file is committed, so this never skips. */
static void test_gguf_py_mxfp4(void) {
    FILE *f = fopen("tests/data/quant_ref_mxfp4.bin", "rb");
    CHECKF(f != NULL, "tests/data/quant_ref_mxfp4.bin missing (run from the repository root)");
    if (!f) return;
    char magic[4];
    uint32_t type = 0, n = 0;
    int ok = fread(magic, 1, 4, f) == 4 && fread(&type, 4, 1, f) == 1 && fread(&n, 4, 1, f) == 1;
    CHECK(ok && memcmp(magic, "KQRF", 4) == 0 && type == KVS_TYPE_MXFP4 && n > 0 && n % KVS_QK == 0 && n < (1u << 24));
    if (!ok || type != KVS_TYPE_MXFP4 || n == 0 || n % KVS_QK || n >= (1u << 24)) { fclose(f); return; }
    const size_t qb = kvs_row_bytes(KVS_TYPE_MXFP4, n);
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n);
    uint8_t *q = malloc(qb), *mine = malloc(qb);
    ok = fread(x, 4, n, f) == n && fread(q, 1, qb, f) == qb && fread(y, 4, n, f) == n;
    fclose(f);
    CHECKF(ok, "quant_ref_mxfp4.bin truncated");
    if (ok) {
        const kvs_type_traits *F = kvs_type_traits_of(KVS_TYPE_MXFP4), *R = kvs_type_traits_ref(KVS_TYPE_MXFP4);
        R->from_float_ref(x, mine, n);
        size_t diff = 0;
        for (size_t i = 0; i < qb; i++) diff += mine[i] != q[i];
        CHECKF(diff == 0, "mxfp4 quantize vs gguf-py: %zu of %zu bytes differ", diff, qb);
        R->to_float_ref(q, z, n);
        CHECKF(memcmp(z, y, sizeof(float) * n) == 0, "mxfp4 to_float_ref vs gguf-py dequantize");
        F->to_float(q, z, n);
        CHECKF(memcmp(z, y, sizeof(float) * n) == 0, "mxfp4 to_float (fast) vs gguf-py dequantize");
        printf("  mxfp4 vs gguf-py: %u elements, quantized bytes and dequantized floats identical: %s\n", n,
               diff == 0 && memcmp(z, y, sizeof(float) * n) == 0 ? "yes" : "NO");
    }
    free(x); free(y); free(z); free(q); free(mine);
}

int main(void) {
    kvs_dtype_init();
    printf("simd: %s\n", kvs_cpu_simd_name());
    test_table();
    test_half();
    test_gguf_py_mxfp4();
    for (int i = 0; i < N_TYPES; i++) test_nmse(k_types[i]);
    for (uint64_t seed = 1; seed <= 4; seed++)
        for (int i = 0; i < N_TYPES; i++) test_type(k_types[i], seed);
    /* both many-row variants the CPU can run (the dispatched one is only one of them) */
    for (int vnni = 0; vnni <= 1; vnni++) {
        if (vnni ? !kvs_cpu()->avx512vnni : !kvs_cpu()->avx2) {
            printf("  gemm %s: not supported by this CPU, skipped\n", vnni ? "vnni" : "avx2");
            continue;
        }
        for (uint64_t seed = 1; seed <= 2; seed++)
            for (int i = 0; i < N_TYPES; i++)
                for (int packed = 0; packed < 2; packed++) test_gemm(k_types[i], seed, vnni, packed);
    }
    return test_finish("test_quant");
}
