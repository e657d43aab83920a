/* The many-head latent (MLA) decode kernel (src/attn/attn_latent*.c) against
 * its scalar twin and a float64 reference written here.
 *
 * Inputs: R heads (9, 16, 17, 33, 128: one and several 16-lane groups, with
 * padding lanes), row sizes dk/dv (576/512 DeepSeek, 64/32, 96/64 with
 * padded row strides), formats f32, f16, bf16, q8_0, q4_0, row ranges of
 * awkward lengths (1; 5 + 70; 64 + 64 + 1; 200) passed in one call, and a
 * running state that already holds an earlier range (the merge path).
 *
 * Checks (errors: max |got - want| / max |want| over the normalised outputs
 * acc / sum of every head):
 *  - q8_0 scores: AVX2 integer scores equal the scalar twin's bit for bit
 *    (same quantized query, exact integer block dots, the same f32 fma
 *    sequence per block).
 *  - AVX2 vs scalar twin: <= 2e-5 (f32 sums in different orders over <= 576
 *    products, the polynomial exp (~2e-7 relative) vs expf).
 *  - scalar twin vs float64 on the rows the cache holds (dequantized with
 *    the reference dequantizers) with the query the kernel scores with
 *    (q8_0: the quantized query qi * qd, else q): <= 2e-5 (f32 rounding).
 *  - q8_0 with the unquantized query vs float64: bounded by the query's
 *    quantization: each query element moves by at most absmax/254 of its
 *    block, scores (std ~2 here) by ~1e-2, weights by ~1e-2 relative:
 *    <= 5e-2 (observed ~1e-2).
 *  - unsupported shapes/formats return false and leave the state alone. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_latent.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "test_util.h"

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static double g_worst[4];

typedef struct kcase {
    int R, dk, dv, pad; /* pad: extra bytes per stored row */
} kcase;

/* float64 online-free reference: out[r][c] = sum_t softmax(q_r . k_t * scale) v_t[c] */
static void ref_f64(const float *rows, int T, int dk, int dv, const float *q, int R, float scale, double *out) {
    double *s = malloc(sizeof(double) * (size_t)T);
    for (int r = 0; r < R; r++) {
        double m = -INFINITY, sum = 0.0;
        for (int t = 0; t < T; t++) {
            double d = 0.0;
            for (int c = 0; c < dk; c++) d += (double)q[(size_t)r * dk + c] * rows[(size_t)t * dk + c];
            s[t] = d * scale;
            if (s[t] > m) m = s[t];
        }
        for (int c = 0; c < dv; c++) out[(size_t)r * dv + c] = 0.0;
        for (int t = 0; t < T; t++) {
            double p = exp(s[t] - m);
            sum += p;
            for (int c = 0; c < dv; c++) out[(size_t)r * dv + c] += p * rows[(size_t)t * dk + c];
        }
        for (int c = 0; c < dv; c++) out[(size_t)r * dv + c] /= sum;
    }
    free(s);
}

static double rel_err(const double *want, const double *got, size_t n) {
    double e = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= e)) e = d;
        if (fabs(want[i]) > m) m = fabs(want[i]);
    }
    return m > 0.0 ? e / m : e;
}

static void note(int w, double e) {
    if (!(e <= g_worst[w])) g_worst[w] = e;
}

/* Run a kernel over the ranges: the first range in its own call (state
 * from empty), the rest together; normalised outputs to out. */
static bool run_kernel(kvs_attn_latent_fn fn, const kvs_attn_rows *rw, int n_rw, const float *const *qp, int R,
                       float scale, int dk, int dv, float *scratch, double *out) {
    const size_t ss = 2 + (size_t)dv;
    float *st = malloc(sizeof(float) * ss * (size_t)R);
    for (int r = 0; r < R; r++) {
        st[(size_t)r * ss] = -INFINITY;
        st[(size_t)r * ss + 1] = 0.0f;
        memset(st + (size_t)r * ss + 2, 0, sizeof(float) * (size_t)dv);
    }
    bool ok = fn(rw, 1, qp, R, scale, st, ss, dk, dv, scratch);
    if (ok && n_rw > 1) ok = fn(rw + 1, n_rw - 1, qp, R, scale, st, ss, dk, dv, scratch);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < dv; c++)
            out[(size_t)r * dv + c] = (double)st[(size_t)r * ss + 2 + c] / st[(size_t)r * ss + 1];
    free(st);
    return ok;
}

static void run_case(kcase kc, kvs_dtype type, const int *lens, int n_rw) {
    const int R = kc.R, dk = kc.dk, dv = kc.dv;
    char what[128];
    snprintf(what, sizeof what, "R %d dk %d dv %d pad %d %s ranges %d (first %d)", R, dk, dv, kc.pad,
             kvs_dtype_name(type), n_rw, lens[0]);
    const kvs_type_traits *tr = kvs_type_traits_of(type), *ref = kvs_type_traits_ref(type);
    const size_t row = kvs_row_bytes(type, dk) + (size_t)kc.pad;
    int T = 0;
    for (int i = 0; i < n_rw; i++) T += lens[i];
    uint8_t *store = kvs_aligned_alloc(row * (size_t)T + 64);
    float *src = malloc(sizeof(float) * (size_t)dk), *held = malloc(sizeof(float) * (size_t)T * dk);
    for (int t = 0; t < T; t++) {
        for (int c = 0; c < dk; c++) src[c] = test_rng_normal(&g_rng);
        tr->from_float(src, store + (size_t)t * row, dk);
        ref->to_float(store + (size_t)t * row, held + (size_t)t * dk, dk);
    }
    kvs_attn_rows rw[4];
    for (int i = 0, t = 0; i < n_rw; t += lens[i], i++)
        rw[i] = (kvs_attn_rows){.k = store + (size_t)t * row, .v = store + (size_t)t * row, .k_row = row,
                                .v_row = row, .k_type = type, .v_type = type, .n = lens[i]};
    float *q = malloc(sizeof(float) * (size_t)R * dk);
    const float **qp = malloc(sizeof(float *) * (size_t)R);
    for (int i = 0; i < R * dk; i++) q[i] = 2.0f * test_rng_normal(&g_rng);
    for (int r = 0; r < R; r++) qp[r] = q + (size_t)r * dk;
    const float scale = 1.0f / sqrtf((float)dk);
    float *scratch = kvs_aligned_alloc(sizeof(float) * kvs_attn_latent_scratch_floats(R, dk, dk)); /* >= (R, dk, dv); q8 scores need dk */
    const size_t n_out = (size_t)R * dv;
    double *want = malloc(sizeof(double) * n_out), *got = malloc(sizeof(double) * n_out);
    double *twin = malloc(sizeof(double) * n_out);

    /* the query the kernels score with */
    float *qk = malloc(sizeof(float) * (size_t)R * dk);
    const bool q8 = type == KVS_TYPE_Q8_0;
    int16_t *qi = malloc(sizeof(int16_t) * (size_t)R * dk);
    float *qd = malloc(sizeof(float) * (size_t)R * (dk / 32));
    for (int r = 0; r < R; r++) {
        kvs_attn_latent_quant_q(q + (size_t)r * dk, dk, 1.0f, qi + (size_t)r * dk, qd + (size_t)r * (dk / 32));
        for (int c = 0; c < dk; c++)
            qk[(size_t)r * dk + c] = q8 ? (float)qi[(size_t)r * dk + c] * qd[(size_t)r * (dk / 32) + c / 32]
                                        : q[(size_t)r * dk + c];
    }
    ref_f64(held, T, dk, dv, qk, R, scale, want);

    CHECKF(run_kernel(kvs_attn_latent_scalar, rw, n_rw, qp, R, scale, dk, dv, scratch, twin), "%s: scalar refused", what);
    double e = rel_err(want, twin, n_out);
    note(1, e);
    CHECKF(e <= 2e-5, "%s: scalar twin vs float64: %.3g", what, e);
    if (q8) {
        double *plain = malloc(sizeof(double) * n_out);
        ref_f64(held, T, dk, dv, q, R, scale, plain);
        e = rel_err(plain, twin, n_out);
        note(3, e);
        CHECKF(e <= 5e-2, "%s: int8 query vs unquantized query (float64): %.3g", what, e);
        free(plain);
    }
    if (kvs_cpu()->avx2) {
        CHECKF(run_kernel(kvs_attn_latent_avx2, rw, n_rw, qp, R, scale, dk, dv, scratch, got), "%s: avx2 refused", what);
        e = rel_err(twin, got, n_out);
        note(0, e);
        CHECKF(e <= 2e-5, "%s: avx2 vs scalar twin: %.3g", what, e);
        if (q8) { /* integer scores: bit-exact */
            float *s1 = malloc(sizeof(float) * (size_t)R * T), *s2 = malloc(sizeof(float) * (size_t)R * T);
            for (int r = 0; r < R; r++)
                kvs_attn_latent_quant_q(q + (size_t)r * dk, dk, scale, qi + (size_t)r * dk, qd + (size_t)r * (dk / 32));
            kvs_attn_latent_q8_scores(false, store, row, T, qi, qd, R, dk, s1, scratch);
            kvs_attn_latent_q8_scores(true, store, row, T, qi, qd, R, dk, s2, scratch);
            size_t diff = 0;
            for (size_t i = 0; i < (size_t)R * T; i++) diff += memcmp(&s1[i], &s2[i], sizeof(float)) != 0;
            note(2, (double)diff);
            CHECKF(diff == 0, "%s: %zu of %d q8_0 scores differ between avx2 and scalar", what, diff, R * T);
            free(s1);
            free(s2);
        }
    }
    free(qk); free(qi); free(qd); free(want); free(got); free(twin); free(q); free(qp); free(src); free(held);
    kvs_aligned_free(scratch);
    kvs_aligned_free(store);
}

/* Shapes and formats the kernels refuse, leaving the state untouched. */
static void refusals(void) {
    uint8_t rowbuf[4096] = {0};
    float q[640] = {0}, st[2 + 512], scratch_probe[8];
    const float *qp[129];
    for (int i = 0; i < 129; i++) qp[i] = q;
    kvs_attn_latent_fn fns[2] = {kvs_attn_latent_scalar, kvs_attn_latent_avx2};
    for (int f = 0; f < (kvs_cpu()->avx2 ? 2 : 1); f++) {
        kvs_attn_rows rw = {.k = rowbuf, .v = rowbuf, .k_row = 1152, .v_row = 1152, .k_type = KVS_TYPE_F16,
                            .v_type = KVS_TYPE_F16, .n = 1};
        st[0] = 7.0f;
        CHECK(!fns[f](&rw, 1, qp, 129, 1.0f, st, 514, 576, 512, scratch_probe)); /* too many heads */
        CHECK(!fns[f](&rw, 1, qp, 16, 1.0f, st, 514, 568, 512, scratch_probe));  /* dk not a multiple of 32 */
        rw.k_type = KVS_TYPE_Q4_1;
        CHECK(!fns[f](&rw, 1, qp, 16, 1.0f, st, 514, 576, 512, scratch_probe));  /* format */
        rw.k_type = KVS_TYPE_F16;
        rw.k_row = 1000;
        CHECK(!fns[f](&rw, 1, qp, 16, 1.0f, st, 514, 576, 512, scratch_probe));  /* row shorter than dk */
        CHECK(st[0] == 7.0f);
    }
}

int main(void) {
    kvs_dtype_init();
    static const kcase cases[] = {{16, 576, 512, 0}, {9, 64, 32, 0}, {17, 96, 64, 8}, {33, 64, 64, 0},
                                  {128, 576, 512, 0}};
    static const kvs_dtype types[] = {KVS_TYPE_F32, KVS_TYPE_F16, KVS_TYPE_BF16, KVS_TYPE_Q8_0, KVS_TYPE_Q4_0};
    static const int l1[] = {1}, l2[] = {5, 70}, l3[] = {64, 64, 1}, l4[] = {200};
    const int *lens[] = {l1, l2, l3, l4};
    const int n_lens[] = {1, 2, 3, 1};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            for (int l = 0; l < 4; l++) {
                if (cases[c].R == 128 && l != 2) continue; /* the large case once, with all its ranges */
                run_case(cases[c], types[t], lens[l], n_lens[l]);
            }
    refusals();
    printf("  worst avx2 vs scalar twin %.3g, scalar twin vs float64 %.3g, q8_0 score mismatches %.0f,\n"
           "  int8 query vs unquantized query %.3g\n", g_worst[0], g_worst[1], g_worst[2], g_worst[3]);
    return test_finish("mla_kernel");
}
