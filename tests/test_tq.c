/* Rotated-codebook KV rows (core/tq.h) and their place in the grammar, the
 * scheme formula and a real session:
 *   - byte sizes per format, the codebooks ascending and odd-symmetric;
 *   - squared error on Gaussian blocks (the rotated coordinate's law) under
 *     bounds a little above the Lloyd-Max optimum the script prints
 *     (scripts/gen_tq_codebook.py: 0.1145 / 0.0334 / 0.0091 per coordinate
 *     at 2 / 3 / 4 bits, the mixed formats between), strictly falling
 *     with the bits; the same on Hadamard-rotated heavy-tailed vectors;
 *   - zero blocks, +-inf and NaN inputs: finite outputs, no UB;
 *   - the AVX2 quantizer against the reference (test_fast_quantizer);
 *   - the QJL sketch rows tq2j / tq3j: unbiased inner products, the
 *     squared error they remove, their names and rotation (test_qjl);
 *   - rules: tqB / tqXkYv set the formats and the rotation, bad names and a
 *     tq format without its rotation fail with a message; the GGUF reader
 *     refuses the KV-only types;
 *   - with the default model (SmolLM2, GPL-3's first 300 tokens): a session
 *     with tq4 decoding the last 48 token by token (the fused decode
 *     kernel) stays close to the f16 cache prefilled: mean KL(f16 || tq4)
 *     < 0.15 nats and top-1 agreement >= 75% (measured 0.076 and 83%), and
 *     to tq4 prefilled (tile path): mean KL < 0.08 (measured 0.040). The
 *     two tq4 runs do not store identical codes: prefill and decode differ
 *     in float rounding (f16 itself: KL 0.003, max logit difference 1.2),
 *     and a code that flips at a cell edge moves a coordinate by a whole
 *     step; q4_0 shows the same (KL 0.036). tq3 and q4_0 are printed, not
 *     bounded. The kernel itself is checked exactly against the float64
 *     reference in tests/test_attn.c;
 *   - a key offset (kv/kv_cache.h: a constant vector taken off every key
 *     before it is stored): keys with a Qwen2-like constant channel of 300
 *     attended through the chunk API; with f32 rows the offset leaves the
 *     output unchanged (within 1e-5 of its range), and with q8_0, q4_0 and
 *     tq4 rows it cuts the error against float64 attention on the true keys
 *     at least fourfold;
 *   - key centering (model/key_center.h): the default on quantized rows
 *     and center=none in the grammar; the model's key offsets measured
 *     on 1 and on 2 threads bit-identical, finite, kept by the model; a
 *     centered q4_0 cache over the text's first 400 tokens (prefill) has
 *     under 0.9x the mean KL against f16 of the same cache uncentered;
 *     the offsets are measured at the first decode, not when a session is
 *     made, and a fork made before it decodes as the measured session. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "core/dtype.h"
#include "kv/kivi.h"
#include "kv/kv_cache.h"
#include "kv/kv_chunk.h"
#include "kv/kv_spec.h"
#include "model/key_center.h"
#include "core/tq.h"
#include "kvslim.h"
#include "test_util.h"

#define KL_DP_MAX 0.08
static uint64_t g_rng = 0x7471756174ull;

static const kvs_dtype g_types[] = {KVS_TYPE_TQ2, KVS_TYPE_TQ2_5, KVS_TYPE_TQ3, KVS_TYPE_TQ3_5, KVS_TYPE_TQ4};
static const size_t g_bytes[] = {18, 22, 26, 30, 34};
static const double g_nmse_max[] = {0.118, 0.076, 0.034, 0.0215, 0.0092};

static double nmse(kvs_dtype t, int heavy) {
    enum { D = 256, N = 400 };
    const kvs_type_traits *tr = kvs_type_traits_of(t);
    float x[D], y[D];
    uint8_t buf[D];
    double e = 0, s = 0;
    for (int it = 0; it < N; it++) {
        for (int i = 0; i < D; i++) x[i] = test_rng_normal(&g_rng);
        if (heavy) { /* outlier channels, then the rotation spreads them */
            x[3] *= 40.0f;
            x[77] *= -25.0f;
            kvs_hadamard(x, D, 0x1234);
        }
        tr->from_float(x, buf, D);
        tr->to_float(buf, y, D);
        for (int i = 0; i < D; i++) { e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]); s += (double)x[i] * x[i]; }
    }
    return e / s;
}

static void test_codec(void) {
    for (int b = 1; b <= 4; b++) {
        const float *cb = kvs_tq_codebook(b);
        CHECK(cb != NULL);
        for (int i = 0; cb && i < (1 << b); i++) {
            if (i) CHECK(cb[i] > cb[i - 1]);
            CHECK(cb[i] == -cb[(1 << b) - 1 - i]);
        }
    }
    CHECK(kvs_tq_codebook(5) == NULL && kvs_tq_bits(KVS_TYPE_Q4_0, 0) == 0);
    /* the 2..4-bit codebooks lie on their int8 grid k / C (the integer-score
     * kernels read grid[code] / C for cb[code]) */
    for (int b = 2; b <= 4; b++) {
        int8_t grid[16];
        const float *cb = kvs_tq_codebook(b);
        const float c = kvs_tq_codebook_grid(b, grid);
        CHECK(c > 0 && grid[(1 << b) - 1] == 127 && grid[0] == -127);
        for (int i = 0; i < 16; i++) {
            if (i < (1 << b)) CHECKF(fabsf((float)grid[i] / c - cb[i]) <= 1e-6f * fabsf(cb[i]),
                                     "tq%d centroid %d: %.9g off the grid (%d / %.6g)", b, i, cb[i], grid[i], c);
            else CHECK(grid[i] == 0);
        }
    }
    {
        int8_t grid[16];
        CHECK(kvs_tq_codebook_grid(1, grid) == 0.0f && kvs_tq_codebook_grid(5, grid) == 0.0f);
    }
    double prev = 1.0;
    for (size_t i = 0; i < 5; i++) {
        const kvs_type_traits *tr = kvs_type_traits_of(g_types[i]);
        CHECK(tr && tr->kv_only && tr->block_size == KVS_TQ_BLOCK && tr->type_size == g_bytes[i]);
        CHECK(kvs_row_bytes(g_types[i], 128) == 2 * g_bytes[i] && kvs_row_bytes(g_types[i], 96) == 0);
        double e = nmse(g_types[i], 0), h = nmse(g_types[i], 1);
        printf("  %-5s %zu B / 64: NMSE gaussian %.5f, rotated outliers %.5f\n", tr ? tr->name : "?", g_bytes[i], e, h);
        CHECKF(e < g_nmse_max[i] && e < prev, "%s: NMSE %.5f (bound %.4f, previous %.5f)", tr ? tr->name : "?", e,
               g_nmse_max[i], prev);
        CHECKF(h < 1.1 * g_nmse_max[i], "%s: NMSE %.5f on rotated outliers", tr ? tr->name : "?", h);
        prev = e;
    }
    /* zero, non-finite and huge inputs */
    for (size_t i = 0; i < 5; i++) {
        const kvs_type_traits *tr = kvs_type_traits_of(g_types[i]);
        float x[64] = {0}, y[64];
        uint8_t buf[64];
        tr->from_float(x, buf, 64);
        tr->to_float(buf, y, 64);
        int bad = 0;
        for (int j = 0; j < 64; j++) bad += y[j] != 0.0f;
        for (int j = 0; j < 64; j++) x[j] = (float)(j - 32);
        x[5] = INFINITY; x[6] = -INFINITY; x[7] = NAN; x[8] = 1e30f;
        tr->from_float(x, buf, 64);
        tr->to_float(buf, y, 64);
        for (int j = 0; j < 64; j++) bad += !isfinite(y[j]);
        CHECKF(bad == 0, "%s: zero / non-finite blocks: %d bad outputs", tr->name, bad);
        CHECK(y[5] > 0 && y[6] < 0); /* +-inf take the end codes */
    }
}

/* The dtype table's quantizer (AVX2 on AVX2 CPUs) against the reference:
 * the same bytes on nearly every block (the sums' order can move a code at
 * a cell edge), within one f16 step of scale and the same squared error
 * where they differ; blocks with zeros, huge, tiny or non-finite inputs go
 * to the reference and come out identical. */
static void test_fast_quantizer(void) {
    enum { N = 4000 };
    for (size_t i = 0; i < 5; i++) {
        const kvs_type_traits *tr = kvs_type_traits_of(g_types[i]);
        const size_t bb = tr->type_size;
        float x[64], ya[64], yb[64];
        uint8_t a[64], b[64];
        int differ = 0, special_differ = 0;
        double ea = 0, eb = 0;
        for (int it = 0; it < N; it++) {
            const float scale = it % 3 == 0 ? 1e-3f : it % 3 == 1 ? 1.0f : 300.0f;
            for (int j = 0; j < 64; j++) x[j] = scale * test_rng_normal(&g_rng);
            if (it % 7 == 0) x[it % 64] *= 30.0f; /* an outlier: end codes */
            tr->from_float(x, a, 64);
            tr->from_float_ref(x, b, 64);
            if (memcmp(a, b, bb)) differ++;
            tr->to_float(a, ya, 64);
            tr->to_float(b, yb, 64);
            for (int j = 0; j < 64; j++) {
                ea += ((double)x[j] - ya[j]) * ((double)x[j] - ya[j]) / ((double)scale * scale);
                eb += ((double)x[j] - yb[j]) * ((double)x[j] - yb[j]) / ((double)scale * scale);
            }
        }
        static const float special[][3] = {{0, 0, 0}, {1e-41f, 0, 0}, {1e-41f, 1e-41f, 1e-41f}, {3e38f, 0, 0},
                                           {1e30f, -1e30f, 1}, {INFINITY, 1, 2}, {NAN, 1, 2}, {-INFINITY, NAN, 0}};
        for (size_t k = 0; k < sizeof special / sizeof *special; k++) {
            for (int j = 0; j < 64; j++) x[j] = special[k][j % 3];
            tr->from_float(x, a, 64);
            tr->from_float_ref(x, b, 64);
            special_differ += memcmp(a, b, bb) != 0;
        }
        printf("  %-5s fast quantizer: %d of %d blocks differ from the reference, NMSE %.6f vs %.6f\n", tr->name,
               differ, N, ea / (64.0 * N), eb / (64.0 * N));
        CHECKF(differ <= N / 200, "%s: %d of %d blocks differ", tr->name, differ, N);
        CHECKF(fabs(ea - eb) <= 1e-3 * eb, "%s: squared error %.6g vs reference %.6g", tr->name, ea, eb);
        CHECKF(special_differ == 0, "%s: %d special blocks differ", tr->name, special_differ);
    }
}

/* The QJL sketch (tq2j, tq3j): bytes; on Gaussian blocks (the rotated
 * coordinate's law) the sketch's residual estimate r~ is unbiased for inner
 * products: the mean of <q, r~> - <q, r> over 4000 blocks within 4 standard
 * errors of 0 and <q, r~> correlated with <q, r>; the squared error of the
 * whole row against x is (pi/2 - 1) ~ 0.57 of the base format's (bounds
 * 0.45..0.70); the base block is the tq block bit for bit; a flipped sketch
 * sign (the mutation a sign error in the transform would make) would give a
 * negative correlation; +-inf and NaN inputs give finite outputs. Rules:
 * tq2j / tq3jk3v name them, rotated like the tq rows. */
static void test_qjl(void) {
    static const kvs_dtype jt[] = {KVS_TYPE_TQ2J, KVS_TYPE_TQ3J}, bt[] = {KVS_TYPE_TQ2, KVS_TYPE_TQ3};
    static const size_t jb[] = {28, 36};
    for (int t = 0; t < 2; t++) {
        const kvs_type_traits *tj = kvs_type_traits_of(jt[t]), *tb = kvs_type_traits_of(bt[t]);
        CHECK(tj && tb && tj->type_size == jb[t] && tj->block_size == 64 && tj->kv_only);
        enum { N = 4000 };
        float x[64], q[64], yj[64], yb[64];
        uint8_t bj[64], bb[64];
        double sum = 0, sum2 = 0, cross = 0, ej = 0, eb = 0;
        int same = 0;
        for (int it = 0; it < N; it++) {
            for (int i = 0; i < 64; i++) { x[i] = test_rng_normal(&g_rng); q[i] = test_rng_normal(&g_rng); }
            tj->from_float(x, bj, 64);
            tb->from_float_ref(x, bb, 64); /* the sketch starts from the reference quantizer's block */
            same += memcmp(bj, bb, tb->type_size) == 0;
            tj->to_float(bj, yj, 64);
            tb->to_float_ref(bb, yb, 64);
            double dr = 0, dt = 0; /* <q, r~> - <q, r> and <q, r> */
            for (int i = 0; i < 64; i++) {
                dr += (double)q[i] * ((double)yj[i] - x[i]);
                dt += (double)q[i] * ((double)x[i] - yb[i]);
                ej += ((double)x[i] - yj[i]) * ((double)x[i] - yj[i]);
                eb += ((double)x[i] - yb[i]) * ((double)x[i] - yb[i]);
            }
            sum += dr;
            sum2 += dr * dr;
            cross += (dr + dt) * dt; /* <q, r~> <q, r> */
        }
        const double mean = sum / N, se = sqrt((sum2 / N - mean * mean) / N), ratio = ej / eb;
        printf("  %s: <q, r~> - <q, r> mean %.4f (se %.4f), squared error %.3f of %s's\n", tj->name, mean, se, ratio,
               tb->name);
        CHECKF(same == N, "%s: %d of %d base blocks differ from %s", tj->name, N - same, N, tb->name);
        CHECKF(fabs(mean) <= 4.0 * se, "%s: inner products biased: mean %.4f, se %.4f", tj->name, mean, se);
        CHECKF(cross > 0, "%s: the sketch does not follow the residual", tj->name);
        CHECKF(ratio > 0.45 && ratio < 0.70, "%s: squared error %.3f of the base format's", tj->name, ratio);
        for (int i = 0; i < 64; i++) x[i] = i % 3 ? test_rng_normal(&g_rng) : i % 2 ? INFINITY : NAN;
        x[1] = -INFINITY;
        tj->from_float(x, bj, 64);
        tj->to_float(bj, yj, 64);
        int bad = 0;
        for (int i = 0; i < 64; i++) bad += !isfinite(yj[i]);
        CHECKF(bad == 0, "%s: %d non-finite outputs from non-finite inputs", tj->name, bad);
    }
    kvs_dtype k, v;
    CHECK(kvs_kv_tq_from_name("tq2j", &k, &v) && k == KVS_TYPE_TQ2J && v == KVS_TYPE_TQ2J);
    CHECK(kvs_kv_tq_from_name("tq3jk3v", &k, &v) && k == KVS_TYPE_TQ3J && v == KVS_TYPE_TQ3);
    kvs_kv_scheme sc = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(&sc, 1, "tq2jk3v") == KVS_OK && sc.rotate && sc.rotate_v);
    CHECK(kvs_kv_scheme_validate(&sc) == KVS_OK && kvs_kv_scheme_bytes(&sc, 64) == 64ull * 3 * (28 + 26));
    CHECK(kvs_kv_spec_apply(&sc, 1, "tq2j,rotate=none") == KVS_OK);
    CHECK(kvs_kv_scheme_validate(&sc) == KVS_ERR_INVALID_ARG && strstr(kvs_last_error(), "tq2j"));
}

static void test_rules(void) {
    kvs_dtype k, v;
    CHECK(kvs_kv_tq_from_name("tq3", &k, &v) && k == KVS_TYPE_TQ3 && v == KVS_TYPE_TQ3);
    CHECK(kvs_kv_tq_from_name("tq4k3v", &k, &v) && k == KVS_TYPE_TQ4 && v == KVS_TYPE_TQ3);
    CHECK(kvs_kv_tq_from_name("tq3.5k2.5v", &k, &v) && k == KVS_TYPE_TQ3_5 && v == KVS_TYPE_TQ2_5);
    static const char *badn[] = {"tq", "tq5", "tq3k5v", "tq3kv", "tqk3v", "tq3k3", "tq1k1v", "tq3.5k2.5vv", "q4k3v"};
    for (size_t i = 0; i < sizeof badn / sizeof *badn; i++) CHECKF(!kvs_kv_tq_from_name(badn[i], &k, &v), "%s", badn[i]);
    kvs_kv_scheme sc[3];
    for (int i = 0; i < 3; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 3, "tq3;1:tq4k2.5v") == KVS_OK);
    CHECK(sc[0].k_type == KVS_TYPE_TQ3 && sc[0].rotate && sc[0].rotate_v && sc[2].v_type == KVS_TYPE_TQ3);
    CHECK(sc[1].k_type == KVS_TYPE_TQ4 && sc[1].v_type == KVS_TYPE_TQ2_5 && sc[1].rotate && sc[1].rotate_v);
    CHECK(kvs_kv_scheme_validate(&sc[1]) == KVS_OK);
    /* 64 tokens x 3 heads x (34 + 22) bytes */
    CHECK(kvs_kv_scheme_bytes(&sc[1], 64) == 64ull * 3 * (34 + 22));
    CHECK(kvs_kv_spec_apply(sc, 3, "tq3k9v") == KVS_ERR_INVALID_ARG && strstr(kvs_last_error(), "tq3k9v"));
    for (int i = 0; i < 3; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 3, "tq2,rotate=k") == KVS_OK);
    CHECK(kvs_kv_scheme_validate(&sc[0]) == KVS_ERR_INVALID_ARG && strstr(kvs_last_error(), "rotated values"));
    CHECK(kvs_kv_scheme_bytes(&sc[0], 10) == 0);
    kvs_kv_cache *c = NULL;
    CHECK(kvs_kv_cache_new(sc, 3, 100, 0, &c) == KVS_ERR_INVALID_ARG && c == NULL);
    CHECK(strstr(kvs_last_error(), "tq2") != NULL);
    /* key centering: on by default for quantized rows, off for f16 and per-channel keys, center=none clears it */
    for (int i = 0; i < 3; i++) sc[i] = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    CHECK(kvs_kv_spec_apply(sc, 3, "0:tq4;1:q4k3v;2:f16") == KVS_OK);
    CHECK(sc[0].center && !sc[1].center && !sc[2].center);
    CHECK(kvs_kv_spec_apply(sc, 3, "0:tq4,center=none;2:q8_0") == KVS_OK);
    CHECK(!sc[0].center && sc[2].center);
    char desc[160];
    kvs_kv_scheme_describe(&sc[2], desc, sizeof desc);
    CHECKF(strstr(desc, "centered") != NULL, "%s", desc);
    CHECK(kvs_kv_spec_apply(sc, 3, "center=k") == KVS_ERR_INVALID_ARG && strstr(kvs_last_error(), "center=k"));
    /* a head size that is no block multiple */
    kvs_kv_scheme s48 = kvs_kv_scheme_full(2, 96, 96, KVS_TYPE_TQ3);
    s48.rotate = s48.rotate_v = 1;
    CHECK(kvs_kv_scheme_validate(&s48) == KVS_ERR_INVALID_ARG && strstr(kvs_last_error(), "tq3"));
}

/* One session per format, decoding `text` token by token from position n0
 * (logits of each step), or prefilling it at once (all logits). */
static float *run_session(kvs_model *m, const char *kv, const kvs_token *toks, int n, int n0, bool stepwise,
                          int n_vocab) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 512;
    sp.n_threads = 1;
    sp.kv_layers = kv;
    kvs_session *s = NULL;
    if (kvs_session_new(m, &sp, &s) != KVS_OK) { CHECKF(0, "%s: %s", kv, kvs_last_error()); return NULL; }
    float *lg = malloc(sizeof(float) * (size_t)n_vocab * (size_t)n);
    kvs_status st;
    if (stepwise) {
        st = kvs_decode(s, toks, (size_t)n0, true, lg);
        for (int i = n0; st == KVS_OK && i < n; i++) st = kvs_decode(s, toks + i, 1, false, lg + (size_t)i * n_vocab);
    } else {
        st = kvs_decode(s, toks, (size_t)n, true, lg);
    }
    CHECKF(st == KVS_OK, "%s: decode: %s", kv, kvs_last_error());
    kvs_session_free(s);
    return lg;
}

static void softmax(const float *x, double *p, int n) {
    double m = x[0], z = 0;
    for (int i = 1; i < n; i++) if (x[i] > m) m = x[i];
    for (int i = 0; i < n; i++) z += (p[i] = exp((double)x[i] - m));
    for (int i = 0; i < n; i++) p[i] /= z;
}

static double kl_div(const double *p, const double *q, int n) {
    double k = 0;
    for (int j = 0; j < n; j++) if (p[j] > 0) k += p[j] * (log(p[j]) - log(q[j] > 1e-300 ? q[j] : 1e-300));
    return k;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* Up to `cap` tokens of the GPL-3 text (a short excerpt where the file is
 * absent); the count is returned through *nt. */
static void license_tokens(kvs_model *m, kvs_token *toks, size_t cap, size_t *nt) {
    size_t len = 0;
    char *text = test_read_file("/usr/share/common-licenses/GPL-3", &len);
    static const char fallback[] = "The licenses for most software and other practical works are designed to take "
                                   "away your freedom to share and change the works. By contrast, the GNU General "
                                   "Public License is intended to guarantee your freedom to share and change all "
                                   "versions of a program--to make sure it remains free software for all its users.";
    const char *t = text ? text : fallback;
    size_t tl = text ? (len < 4000 ? len : 4000) : strlen(fallback);
    *nt = 0;
    CHECK(kvs_tokenize(m, t, tl, -1, false, toks, cap, nt) == KVS_OK);
    free(text);
}

static void test_session_close(const char *path) {
    kvs_model *m = NULL;
    CHECK(kvs_model_load(path, NULL, &m) == KVS_OK);
    if (!m) return;
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    const int V = info.n_vocab;
    kvs_token toks[512];
    size_t nt = 0;
    license_tokens(m, toks, 512, &nt);
    const int n = nt < 300 ? (int)nt : 300, n0 = n - 48;
    if (n0 < 8) { CHECKF(0, "text too short: %d tokens", n); kvs_model_free(m); return; }
    float *ref = run_session(m, "f16", toks, n, n0, false, V);
    double *p = malloc(sizeof(double) * (size_t)V), *qd = malloc(sizeof(double) * (size_t)V);
    static const char *fmts[] = {"tq4", "tq3", "q4_0", "f16"}; /* q4_0 and f16: for scale, not bounded */
    int nf = getenv("TQ_DEBUG") ? 4 : 3;
    for (int f = 0; f < nf; f++) {
        float *pre = run_session(m, fmts[f], toks, n, n0, false, V);
        float *dec = run_session(m, fmts[f], toks, n, n0, true, V);
        if (!ref || !pre || !dec) { free(pre); free(dec); continue; }
        double worst = 0, kl = 0, kl_dp = 0;
        int agree = 0;
        for (int i = n0; i < n; i++) {
            const float *a = pre + (size_t)i * V, *b = dec + (size_t)i * V, *r = ref + (size_t)i * V;
            for (int j = 0; j < V; j++) { double e = fabs((double)a[j] - b[j]); if (e > worst) worst = e; }
            softmax(b, qd, V);
            softmax(r, p, V);
            kl += kl_div(p, qd, V);
            softmax(a, p, V);
            kl_dp += kl_div(p, qd, V);
            agree += argmax(r, V) == argmax(b, V);
        }
        kl /= (n - n0);
        kl_dp /= (n - n0);
        double top1 = 100.0 * agree / (n - n0);
        printf("  %-4s over %d decoded positions: KL(f16||decode) %.4f, top-1 %.1f%%; KL(prefill||decode) %.4f, "
               "max |logit diff| %.3g\n", fmts[f], n - n0, kl, top1, kl_dp, worst);
        if (f == 0) {
            CHECKF(kl < 0.15 && top1 >= 75.0, "tq4 vs f16: KL %.4f top-1 %.1f%%", kl, top1);
            CHECKF(kl_dp < KL_DP_MAX, "tq4: decode vs prefill KL %.4f", kl_dp);
        }
        free(pre); free(dec);
    }
    free(ref); free(p); free(qd);
    kvs_model_free(m);
}

/* The offsets are measured at a session's first decode, not when it is made
 * (info, the planner and the server's estimates describe sessions without a
 * forward pass); a fork made before that decode measures them for both, and
 * both then give the logits of a session that measured them (centered:
 * (n, n_vocab), from run_session's q4_0 run on another instance). */
static void test_key_center_lazy(const char *path, const kvs_token *toks, int n, const float *centered, int V) {
    kvs_model *m = NULL;
    CHECK(kvs_model_load(path, NULL, &m) == KVS_OK);
    if (!m) return;
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 512;
    sp.n_threads = 1;
    sp.kv_layers = "q4_0";
    kvs_session *s = NULL, *f = NULL;
    CHECKF(kvs_session_new(m, &sp, &s) == KVS_OK, "%s", kvs_last_error());
    char desc[160] = "";
    if (s) kvs_session_kv_describe(s, 0, desc, sizeof desc);
    CHECKF(strstr(desc, "centered") && !m->key_center, "a new centered session: '%s', measured %d", desc,
           m->key_center != NULL);
    if (s) CHECKF(kvs_session_fork(s, &f) == KVS_OK, "%s", kvs_last_error());
    CHECK(m->key_center != NULL);
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)n);
    kvs_session *both[2] = {s, f};
    for (int i = 0; i < 2 && both[i]; i++) {
        CHECKF(kvs_decode(both[i], toks, (size_t)n, true, lg) == KVS_OK, "%s", kvs_last_error());
        CHECKF(memcmp(lg, centered, sizeof(float) * (size_t)V * (size_t)n) == 0, "%s: logits differ from a measured "
               "session's", i ? "the fork" : "the session");
    }
    free(lg);
    kvs_session_free(f);
    kvs_session_free(s);
    kvs_model_free(m);
}

/* The model's key offsets (model/key_center.h): measured alike whatever the
 * threads, kept by the model, and they cut the KL of a quantized cache
 * against f16 (SmolLM2's keys are far from the origin in a few channels). */
static void test_key_center(const char *path) {
    kvs_model *m1 = NULL, *m2 = NULL;
    CHECK(kvs_model_load(path, NULL, &m1) == KVS_OK && kvs_model_load(path, NULL, &m2) == KVS_OK);
    if (!m1 || !m2) { kvs_model_free(m1); kvs_model_free(m2); return; }
    CHECK(kvs_key_center_available(m1));
    const float *a = NULL, *b = NULL, *again = NULL;
    CHECKF(kvs_key_center_offsets(m1, 512, 1, &a) == KVS_OK && kvs_key_center_offsets(m2, 512, 2, &b) == KVS_OK, "%s",
           kvs_last_error());
    CHECK(kvs_key_center_offsets(m1, 512, 2, &again) == KVS_OK && again == a);
    if (a && b) {
        const kvs_hparams *hp = &m1->hp;
        const size_t nf = (size_t)hp->n_layer * hp->n_head_kv * hp->head_dim_k;
        CHECK(memcmp(a, b, nf * sizeof *a) == 0);
        double big = 0;
        bool finite = true;
        for (size_t i = 0; i < nf; i++) { finite &= isfinite(a[i]); if (fabs(a[i]) > big) big = fabs(a[i]); }
        printf("  key centering: %zu offsets, largest %.2f\n", nf, big);
        CHECK(finite && big > 1.0);
    }
    kvs_model_free(m2);
    kvs_model_info info;
    kvs_model_get_info(m1, &info);
    const int V = info.n_vocab;
    kvs_token toks[512];
    size_t nt = 0;
    license_tokens(m1, toks, 512, &nt);
    const int n = nt < 400 ? (int)nt : 400;
    float *ref = run_session(m1, "f16", toks, n, 0, false, V);
    double kl[2] = {0, 0};
    float *centered = NULL; /* the q4_0 run's logits, kept for test_key_center_lazy */
    static const char *kvs[2] = {"q4_0", "q4_0,center=none"};
    double *p = malloc(sizeof(double) * (size_t)V), *q = malloc(sizeof(double) * (size_t)V);
    for (int c = 0; c < 2 && ref; c++) {
        float *lg = run_session(m1, kvs[c], toks, n, 0, false, V);
        if (!lg) continue;
        for (int i = 0; i < n; i++) {
            softmax(ref + (size_t)i * V, p, V);
            softmax(lg + (size_t)i * V, q, V);
            kl[c] += kl_div(p, q, V) / n;
        }
        if (c == 0) centered = lg;
        else free(lg);
    }
    printf("  q4_0 over %d positions: KL vs f16 %.4f centered, %.4f not\n", n, kl[0], kl[1]);
    CHECKF(kl[0] > 0 && kl[0] < 0.9 * kl[1], "centering: KL %.4f vs %.4f uncentered", kl[0], kl[1]);
    if (centered) test_key_center_lazy(path, toks, n, centered, V);
    free(centered); free(ref); free(p); free(q);
    kvs_model_free(m1);
}

/* One chunk of N tokens through the chunk API and attention over a
 * one-layer cache of scheme sc (H heads of D, group 1), keys stored minus off
 * when off is set; out: (N, H, D). q, k, v are copied (prepare rotates). */
#define KO_N 160
#define KO_H 2
#define KO_D 64
static void key_offset_run(kvs_kv_scheme sc, const float *off, const float *q0, const float *k0, const float *v0,
                           float *out) {
    const size_t nf = (size_t)KO_N * KO_H * KO_D;
    float *q = malloc(nf * 4), *k = malloc(nf * 4), *v = malloc(nf * 4);
    memcpy(q, q0, nf * 4); memcpy(k, k0, nf * 4); memcpy(v, v0, nf * 4);
    kvs_kv_cache *c = NULL;
    kvs_pool *pool = NULL;
    kvs_attn *at = NULL;
    int32_t pos[KO_N];
    CHECK(kvs_kv_cache_new(&sc, 1, KO_N, 0, &c) == KVS_OK && kvs_kv_chunk_init(c, KO_N) == KVS_OK);
    CHECK(kvs_pool_new(1, &pool) == KVS_OK && kvs_attn_new(1, &at) == KVS_OK);
    if (c && pool && at) {
        kvs_kv_cache_set_key_offset(c, 0, off);
        CHECK(kvs_kv_chunk_begin(c, KO_N, pos) == KVS_OK);
        CHECK(kvs_kv_layer_prepare(c, pool, 0, q, KO_H, k, v) == KVS_OK);
        const kvs_kv_view view = kvs_kv_layer_view(c, 0, k, v);
        const kvs_attn_args a = {.segs = view.segs, .n_segs = view.n_segs, .n_kv_heads = KO_H, .head_dim_k = KO_D,
                                 .head_dim_v = KO_D, .q = q, .n_q = KO_N, .n_head = KO_H, .q_pos = pos,
                                 .scale = 0.125f, .out = out};
        CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
        CHECK(kvs_kv_layer_commit(c, pool, 0, q, KO_H, k, v, out, 0.125f) == KVS_OK);
        kvs_kv_chunk_end(c);
    }
    kvs_attn_free(at);
    kvs_pool_free(pool);
    kvs_kv_cache_free(c);
    free(q); free(k); free(v);
}

static void test_key_offset(void) {
    const size_t nf = (size_t)KO_N * KO_H * KO_D;
    float *q = malloc(nf * 4), *k = malloc(nf * 4), *v = malloc(nf * 4), *out = malloc(nf * 4);
    float off[KO_H * KO_D];
    double *ref = malloc(nf * sizeof(double));
    for (int i = 0; i < KO_H * KO_D; i++) off[i] = i % KO_D >= KO_D - 3 ? 300.0f - 40.0f * (float)(i % 3) : 0.0f;
    for (size_t i = 0; i < nf; i++) {
        q[i] = (float)test_rng_normal(&g_rng) * 0.5f;
        k[i] = (float)test_rng_normal(&g_rng) + off[i % (KO_H * KO_D)];
        v[i] = (float)test_rng_normal(&g_rng);
    }
    /* float64 causal attention on the true keys */
    for (int t = 0; t < KO_N; t++)
        for (int h = 0; h < KO_H; h++) {
            double sc[KO_N], m = -INFINITY, l = 0;
            const float *qt = q + ((size_t)t * KO_H + h) * KO_D;
            for (int j = 0; j <= t; j++) {
                double d = 0;
                for (int e = 0; e < KO_D; e++) d += (double)qt[e] * k[((size_t)j * KO_H + h) * KO_D + e];
                sc[j] = d * 0.125;
                if (sc[j] > m) m = sc[j];
            }
            double *o = ref + ((size_t)t * KO_H + h) * KO_D;
            for (int e = 0; e < KO_D; e++) o[e] = 0;
            for (int j = 0; j <= t; j++) {
                const double p = exp(sc[j] - m);
                l += p;
                for (int e = 0; e < KO_D; e++) o[e] += p * v[((size_t)j * KO_H + h) * KO_D + e];
            }
            for (int e = 0; e < KO_D; e++) o[e] /= l;
        }
    static const kvs_dtype types[] = {KVS_TYPE_F32, KVS_TYPE_Q8_0, KVS_TYPE_Q4_0, KVS_TYPE_TQ4};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        double err[2];
        for (int with = 0; with < 2; with++) {
            kvs_kv_scheme sc = kvs_kv_scheme_full(KO_H, KO_D, KO_D, types[ti]);
            sc.rotate = types[ti] != KVS_TYPE_F32;
            sc.rotate_v = types[ti] == KVS_TYPE_TQ4;
            key_offset_run(sc, with ? off : NULL, q, k, v, out);
            double num = 0, den = 0;
            for (size_t i = 0; i < nf; i++) {
                num += (out[i] - ref[i]) * (out[i] - ref[i]);
                den += ref[i] * ref[i];
            }
            err[with] = sqrt(num / den);
        }
        printf("  key offset, %-5s keys: attention error %.2e without, %.2e with\n", kvs_dtype_name(types[ti]), err[0],
               err[1]);
        if (types[ti] == KVS_TYPE_F32)
            CHECKF(err[1] < 1e-5 && err[0] < 1e-5, "f32 keys: error %.2e / %.2e", err[0], err[1]);
        else
            CHECKF(err[1] * 4 < err[0], "%s keys: the offset cut the error only from %.2e to %.2e",
                   kvs_dtype_name(types[ti]), err[0], err[1]);
    }
    CHECK(kvs_kv_key_offset_useful(&(kvs_kv_scheme){.store = KVS_KV_STORE_FULL, .k_type = KVS_TYPE_Q4_0}));
    CHECK(!kvs_kv_key_offset_useful(&(kvs_kv_scheme){.store = KVS_KV_STORE_FULL, .k_type = KVS_TYPE_F16}));
    free(q); free(k); free(v); free(out); free(ref);
}

int main(void) {
    kvs_dtype_init();
    test_codec();
    test_fast_quantizer();
    test_rules();
    test_qjl();
    test_key_offset();
    const char *path = test_model_path();
    if (path) {
        test_session_close(path);
        test_key_center(path);
    } else {
        const char *req = getenv("KVS_REQUIRE_MODELS");
        CHECK(!(req && *req == '1'));
        printf("skip tq session checks: default model absent (make models)\n");
    }
    return test_finish("tq");
}
