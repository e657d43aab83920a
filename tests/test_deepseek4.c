/* DeepSeek V4 (deepseek4) against the float64 numpy reference.
 *
 * tests/data/deepseek4_tiny.gguf is a random-weight fixture
 * (scripts/gen_fixture_deepseek4.py --seed 5): 5 layers with compress_ratios
 * [0, 4, 128, 4, 0] (window-only, CSA with indexer top-96, HCA, CSA,
 * window-only), 128-token raw window, hc 4 mHC streams, 4 experts (top 2,
 * layer 0 hash-routed) + a shared expert. tests/data/deepseek4_tiny_ref.bin
 * holds 701 tokens and 32 logits rows (every 25th position and the last 4)
 * from scripts/ref_numpy_deepseek4.py (--seed 4), whose whole-sequence f64
 * computation shares no code with the engine. 701 tokens complete five
 * 128-token HCA blocks and 175 CSA entries, so the indexer really selects
 * (175 > 96) for the last ~316 queries of both CSA layers.
 *
 * Paths: (a) prefill in 200-token chunks (chunk edges cut CSA/HCA blocks and
 * the raw window), all logits; (b) token-by-token decode; (c) a 333-token
 * prefill, then decode. Each with an f32 cache, 1 and 2 threads.
 * Tolerance: max |logit - ref| <= 1e-4 * max |ref|. f32 arithmetic over
 * ~20 sublayers of random weights was observed at 4.4e-7 on every path (250x
 * margin); a wrong mask, a block boundary off by one, a missing sink, RoPE on
 * the wrong pair or position, or a flipped top-k is O(0.1..1).
 * The reference records how close any indexer top-k decision came to a tie
 * (min margin 3e-5 of the score scale, >> f32 error ~1e-6), so the selection
 * is well defined for an f32 engine.
 * With an f16 cache the entries, raw rows and indexer keys are rounded to
 * f16 (~5e-4 relative): bound 5e-3 (observed 2.4e-4; no top-k flip).
 * Memory: after n tokens the session holds exactly kvs_kv_scheme_bytes() per
 * layer (ceil-paged entries + window + indexer keys), checked at every path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/deepseek4.h"
#include "core/cpu.h"
#include "kvslim.h"
#include "test_util.h"

#define FIXTURE "tests/data/deepseek4_tiny.gguf"
#define REF "tests/data/deepseek4_tiny_ref.bin"

typedef struct ref {
    uint32_t n_tok, n_vocab, n_rows;
    float margin;
    kvs_token *tok;
    uint32_t *rows;
    float *logits;
} ref;

static bool load_ref(ref *r) {
    FILE *f = fopen(REF, "rb");
    if (!f) return false;
    char magic[4];
    bool ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "DS4R", 4) == 0 && fread(&r->n_tok, 4, 1, f) == 1 &&
              fread(&r->n_vocab, 4, 1, f) == 1 && fread(&r->n_rows, 4, 1, f) == 1 && fread(&r->margin, 4, 1, f) == 1;
    if (ok) {
        uint32_t *t = malloc(4 * r->n_tok);
        r->tok = malloc(sizeof(kvs_token) * r->n_tok);
        r->rows = malloc(4 * r->n_rows);
        r->logits = malloc(sizeof(float) * r->n_rows * r->n_vocab);
        ok = t && r->tok && r->rows && r->logits && fread(t, 4, r->n_tok, f) == r->n_tok &&
             fread(r->rows, 4, r->n_rows, f) == r->n_rows &&
             fread(r->logits, 4, (size_t)r->n_rows * r->n_vocab, f) == (size_t)r->n_rows * r->n_vocab;
        for (uint32_t i = 0; ok && i < r->n_tok; i++) r->tok[i] = (kvs_token)t[i];
        free(t);
    }
    fclose(f);
    return ok;
}

/* max |got - want| / max |want| over the reference rows present in `have`. */
static double row_err(const ref *r, const float *all, const bool *have, int *compared) {
    double md = 0, mr = 0;
    *compared = 0;
    for (uint32_t k = 0; k < r->n_rows; k++) {
        uint32_t p = r->rows[k];
        if (!have[p]) continue;
        (*compared)++;
        for (uint32_t v = 0; v < r->n_vocab; v++) {
            double w = r->logits[(size_t)k * r->n_vocab + v], g = all[(size_t)p * r->n_vocab + v];
            if (fabs(g - w) > md || g != g) md = g != g ? INFINITY : fabs(g - w);
            if (fabs(w) > mr) mr = fabs(w);
        }
    }
    return md / (mr > 0 ? mr : 1);
}

/* Runs the sequence: `prefill` tokens in chunks of n_batch (all logits), the
 * rest one token per call. Returns the error against the reference rows. */
static double run_path(kvs_model *m, const ref *r, kvs_kv_type kv, uint32_t n_batch, uint32_t prefill, int threads,
                       const char *label) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 1024;
    sp.n_batch = n_batch;
    sp.n_threads = threads;
    sp.kv_type = kv;
    kvs_session *s = NULL;
    kvs_status st = kvs_session_new(m, &sp, &s);
    CHECKF(st == KVS_OK, "%s: session: %s", label, kvs_last_error());
    if (st != KVS_OK) return INFINITY;
    size_t V = r->n_vocab;
    float *all = calloc((size_t)r->n_tok * V, sizeof(float));
    bool *have = calloc(r->n_tok, 1);
    if (prefill) {
        st = kvs_decode(s, r->tok, prefill, true, all);
        CHECKF(st == KVS_OK, "%s: prefill: %s", label, kvs_last_error());
        for (uint32_t i = 0; i < prefill; i++) have[i] = true;
    }
    for (uint32_t i = prefill; st == KVS_OK && i < r->n_tok; i++) {
        st = kvs_decode(s, &r->tok[i], 1, false, all + (size_t)i * V);
        CHECKF(st == KVS_OK, "%s: decode at %u: %s", label, i, kvs_last_error());
        have[i] = true;
        /* memory equals the formula at every step of the way */
        if (i % 97 == 0) CHECK(kvs_session_kv_bytes(s) == kvs_session_kv_bytes_at(s, i + 1));
    }
    CHECKF(kvs_session_kv_bytes(s) == kvs_session_kv_bytes_at(s, r->n_tok), "%s: kv bytes %llu vs formula %llu",
           label, (unsigned long long)kvs_session_kv_bytes(s),
           (unsigned long long)kvs_session_kv_bytes_at(s, r->n_tok));
    int compared;
    double e = row_err(r, all, have, &compared);
    CHECK(compared == (int)r->n_rows);
    printf("  %-34s rows %2d  max err %.2e (of max |logit|)  kv %llu B\n", label, compared, e,
           (unsigned long long)kvs_session_kv_bytes(s));
    free(all);
    free(have);
    kvs_session_free(s);
    return e;
}

/* The AVX2 inner loops against their scalar references. */
static void check_kernels(void) {
    if (!kvs_cpu()->avx2) { printf("  (no AVX2: kernel twins not compared)\n"); return; }
    uint64_t rng = 0x5eed;
    float a[1100], b[1100], y0[1100], y1[1100];
    for (int i = 0; i < 1100; i++) { a[i] = test_rng_normal(&rng); b[i] = test_rng_normal(&rng); }
    static const int ns[] = {1, 7, 8, 15, 16, 17, 31, 64, 100, 128, 512, 1031};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        int n = ns[k];
        double want = 0, mag = 0;
        for (int i = 0; i < n; i++) { want += (double)a[i] * b[i]; mag += fabs((double)a[i] * b[i]); }
        CHECKF(fabs(ds4_dot_avx2(a, b, n) - want) <= 1e-6 * mag + 1e-6, "dot avx2 n=%d", n);
        CHECKF(fabs(ds4_dot_ref(a, b, n) - want) <= 1e-6 * mag + 1e-6, "dot ref n=%d", n);
        for (int i = 0; i < n; i++) y0[i] = y1[i] = b[i];
        ds4_axpy_ref(y0, 0.37f, a, n);
        ds4_axpy_avx2(y1, 0.37f, a, n);
        for (int i = 0; i < n; i++) CHECKF(fabsf(y0[i] - y1[i]) <= 1e-6f * (1 + fabsf(y0[i])), "axpy n=%d i=%d", n, i);
    }
}

/* Bad input: a KV rule that shrinks the raw window is refused with a message. */
static void check_errors(kvs_model *m) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 512;
    sp.kv_window = 64;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_ERR_UNSUPPORTED && s == NULL);
    CHECK(strstr(kvs_last_error(), "compressed KV scheme") != NULL);
    CHECK(kvs_model_load("tests/data/does-not-exist-deepseek4.gguf", NULL, &m) != KVS_OK);
}

int main(void) {
    check_kernels();
    ref r = {0};
    if (!load_ref(&r)) {
        fprintf(stderr, "cannot read %s\n", REF);
        return 1;
    }
    kvs_model *m = NULL;
    kvs_status st = kvs_model_load(FIXTURE, NULL, &m);
    CHECKF(st == KVS_OK, "load: %s", kvs_last_error());
    if (st != KVS_OK) return test_finish("deepseek4");
    CHECK(r.n_tok >= 600 && r.margin > 1e-5f);
    check_errors(m);
    const double tol = 1e-4;
    for (int th = 1; th <= 2; th++) {
        char lb[64];
        snprintf(lb, sizeof lb, "f32 prefill x200, %d thr", th);
        CHECK(run_path(m, &r, KVS_KV_F32, 200, r.n_tok, th, lb) <= tol);
        snprintf(lb, sizeof lb, "f32 decode 1-by-1, %d thr", th);
        CHECK(run_path(m, &r, KVS_KV_F32, 64, 0, th, lb) <= tol);
        snprintf(lb, sizeof lb, "f32 prefill 333 + decode, %d thr", th);
        CHECK(run_path(m, &r, KVS_KV_F32, 512, 333, th, lb) <= tol);
    }
    CHECK(run_path(m, &r, KVS_KV_F16, 128, r.n_tok, 2, "f16 prefill x128") <= 5e-3);

    /* the KV scheme: per-layer formula (ceil-paged entries + window + indexer keys) */
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 4096;
    sp.kv_type = KVS_KV_F16;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    if (s) {
        /* by hand for 4096 tokens, f16, pages of 64: raw window 128 slots x 32 x 2 B per layer;
         * CSA: 1024 entries x (64 + 32) B; HCA: 32 entries -> one page of 64 x 64 B */
        uint64_t raw = 128 * 64, csa = 1024 * (64 + 32), hca = 64 * 64;
        CHECK(kvs_session_kv_bytes_at(s, 4096) == 5 * raw + 2 * csa + hca);
        char d[128];
        kvs_session_kv_describe(s, 1, d, sizeof d);
        CHECK(strstr(d, "compressed 1/4") != NULL);
        kvs_session_free(s);
    }
    kvs_model_free(m);
    free(r.tok);
    free(r.rows);
    free(r.logits);
    return test_finish("deepseek4");
}
