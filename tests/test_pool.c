/* Sequences sharing one KV pool (kvs_session_fork / kvs_session_truncate,
 * src/kv/kv_pool.c and kv_cache.c's copy-on-write):
 *   - a fork continues exactly as the parent would: after a shared prompt,
 *     parent and fork decode different tokens and each gets bit-identical
 *     logits to a fresh session fed the same whole sequence, for a plain
 *     GQA model (SmolLM2: f16, q4_0 rotated, per-channel q4k3v with an f16
 *     residual) and for sliding-window layers (Gemma 3: rings shared and
 *     copied before they are written);
 *   - shared pages are held once: the pool holds less than the two sessions
 *     together, and freeing the parent first leaves the fork working;
 *   - a byte budget is shared: one session's refusal (KVS_ERR_BUDGET) leaves
 *     the other's outputs unchanged;
 *   - truncate then decode equals a fresh decode of the kept prefix plus the
 *     new tokens; truncation a layer cannot honour is refused by name;
 *   - failing the Nth allocation during a fork and the copy-on-write step
 *     returns KVS_ERR_NOMEM cleanly and leaves the parent intact.
 * Skips (exit 0, loudly) without the models unless KVS_REQUIRE_MODELS=1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "kvslim.h"
#include "test_util.h"

#define N_PROMPT 300 /* over one 256-token page, so the fork shares a full page and a partial one */
#define N_MORE 40

static float *g_a, *g_b;

static void tokens_for(kvs_token *t, size_t n, uint64_t seed, int32_t n_vocab) {
    for (size_t i = 0; i < n; i++) t[i] = (kvs_token)(test_rng_next(&seed) % (uint64_t)(n_vocab - 10)) + 5;
}

static kvs_session *open_session(const kvs_model *m, const char *rules, uint32_t n_ctx, uint32_t n_batch, uint64_t budget) {
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_threads = 2;
    p.kv_layers = rules;
    p.kv_budget = budget;
    kvs_session *s = NULL;
    CHECKF(kvs_session_new(m, &p, &s) == KVS_OK, "session '%s': %s", rules ? rules : "", kvs_last_error());
    return s;
}

static bool same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof *a) == 0; }

/* Logits of the last token after decoding t[0..n) in a fresh session, in
 * calls of the sizes given (0-terminated; the rest in one call), so the
 * arithmetic is the same as the session compared with. */
static void fresh_calls(const kvs_model *m, const char *rules, const kvs_token *t, size_t n, const size_t *calls,
                        float *out) {
    kvs_session *s = open_session(m, rules, 1024, 64, 0);
    if (!s) return;
    size_t done = 0;
    for (; calls && *calls && done < n; calls++) {
        CHECK(kvs_decode(s, t + done, *calls, false, out) == KVS_OK);
        done += *calls;
    }
    if (done < n) CHECK(kvs_decode(s, t + done, n - done, false, out) == KVS_OK);
    kvs_session_free(s);
}

/* Largest |a - b| relative to the largest |a|. */
static double rel_diff(const float *a, const float *b, size_t n) {
    double md = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md) md = d;
        if (fabs(a[i]) > mx) mx = fabs(a[i]);
    }
    return md / (mx > 0 ? mx : 1);
}

/* stays_shared: some pages are still shared after both continued (not so
 * when every layer is a ring that both rewrite). */
static void test_fork(const kvs_model *m, const char *rules, bool stays_shared) {
    const char *name = rules ? rules : "f16";
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const size_t V = (size_t)in.n_vocab;
    kvs_token prompt[N_PROMPT + N_MORE], one[N_PROMPT + N_MORE], two[N_PROMPT + N_MORE];
    tokens_for(prompt, N_PROMPT, 11, in.n_vocab);
    memcpy(one, prompt, sizeof prompt);
    memcpy(two, prompt, sizeof prompt);
    tokens_for(one + N_PROMPT, N_MORE, 21, in.n_vocab);
    tokens_for(two + N_PROMPT, N_MORE, 31, in.n_vocab);

    kvs_session *a = open_session(m, rules, 1024, 64, 0), *b = NULL;
    if (!a) return;
    CHECK(kvs_decode(a, prompt, N_PROMPT, false, g_a) == KVS_OK);
    uint64_t alone = kvs_session_pool_bytes(a);
    CHECKF(kvs_session_fork(a, &b) == KVS_OK, "%s: fork: %s", name, kvs_last_error());
    if (!b) { kvs_session_free(a); return; }
    CHECK(kvs_session_n_past(b) == N_PROMPT);
    /* pages are shared; only per-channel layers' small f16 residuals are copied */
    const uint64_t bound = strstr(name, "k3v") ? 2 * alone : alone + alone / 100;
    CHECKF(kvs_session_pool_bytes(a) < bound, "%s: fork copied pages: %llu -> %llu", name,
           (unsigned long long)alone, (unsigned long long)kvs_session_pool_bytes(a));
    /* interleaved, one token at a time, then a chunk: each write must copy what the other still reads */
    for (int i = 0; i < N_MORE / 2; i++) {
        CHECK(kvs_decode(a, one + N_PROMPT + i, 1, false, g_a) == KVS_OK);
        CHECK(kvs_decode(b, two + N_PROMPT + i, 1, false, g_b) == KVS_OK);
    }
    CHECK(kvs_decode(b, two + N_PROMPT + N_MORE / 2, N_MORE / 2, false, g_b) == KVS_OK);
    CHECK(kvs_decode(a, one + N_PROMPT + N_MORE / 2, N_MORE / 2, false, g_a) == KVS_OK);
    if (stays_shared)
        CHECKF(kvs_session_pool_bytes(a) < kvs_session_kv_bytes(a) + kvs_session_kv_bytes(b), "%s: nothing shared", name);
    else
        CHECK(kvs_session_pool_bytes(a) == kvs_session_kv_bytes(a) + kvs_session_kv_bytes(b));
    /* the same calls in a fresh session: the same arithmetic, so the same bits */
    float *ref = malloc(sizeof(float) * V);
    size_t calls_a[N_MORE / 2 + 3] = {N_PROMPT}, calls_b[N_MORE / 2 + 3] = {N_PROMPT};
    for (int i = 0; i < N_MORE / 2; i++) calls_a[1 + i] = calls_b[1 + i] = 1;
    fresh_calls(m, rules, one, N_PROMPT + N_MORE, calls_a, ref);
    CHECKF(same(ref, g_a, V), "%s: the parent after a fork differs from a fresh session", name);
    fresh_calls(m, rules, two, N_PROMPT + N_MORE, calls_b, ref);
    CHECKF(same(ref, g_b, V), "%s: the fork differs from a fresh session", name);
    /* the parent goes first; the fork's pages stay */
    kvs_session_free(a);
    kvs_token t = 7;
    CHECK(kvs_decode(b, &t, 1, false, g_b) == KVS_OK);
    kvs_session_free(b);
    free(ref);
}

static void test_truncate(const kvs_model *m, const char *rules, bool allowed) {
    const char *name = rules ? rules : "f16";
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const size_t V = (size_t)in.n_vocab;
    kvs_token t[N_PROMPT + N_MORE], u[N_PROMPT + N_MORE];
    tokens_for(t, N_PROMPT + N_MORE, 41, in.n_vocab);
    memcpy(u, t, sizeof t);
    tokens_for(u + N_PROMPT, N_MORE, 51, in.n_vocab);
    kvs_session *s = open_session(m, rules, 1024, 64, 0);
    if (!s) return;
    CHECK(kvs_decode(s, t, N_PROMPT + N_MORE, false, g_a) == KVS_OK);
    kvs_status st = kvs_session_truncate(s, N_PROMPT);
    if (!allowed) {
        CHECKF(st == KVS_ERR_UNSUPPORTED && strstr(kvs_last_error(), "layer"), "%s: truncate: %d %s", name, st,
               kvs_last_error());
        CHECK(kvs_session_n_past(s) == N_PROMPT + N_MORE);
    } else {
        CHECKF(st == KVS_OK, "%s: truncate: %s", name, kvs_last_error());
        CHECK(kvs_session_n_past(s) == N_PROMPT);
        CHECK(kvs_decode(s, u + N_PROMPT, N_MORE, false, g_a) == KVS_OK);
        /* the kept prefix was computed in a longer chunk than a fresh prefill of it; a row's
           arithmetic does not depend on the other rows of its chunk, so the same bits */
        size_t calls[] = {256, N_PROMPT - 256, 0}; /* the chunk boundaries the session's kept prefix had */
        fresh_calls(m, rules, u, N_PROMPT + N_MORE, calls, g_b);
        double d = rel_diff(g_b, g_a, V);
        CHECKF(d == 0, "%s: truncate + decode differs from a fresh session by %.3g", name, d);
    }
    CHECK(kvs_session_truncate(s, N_PROMPT + N_MORE + 1) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_session_truncate(s, 0) == KVS_OK && kvs_session_n_past(s) == 0 && kvs_session_kv_bytes(s) == 0);
    kvs_session_free(s);
}

/* Two sessions on one budget: the one that asks past it is refused, the other is unaffected. */
static void test_shared_budget(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const size_t V = (size_t)in.n_vocab;
    enum { N = 560 };
    kvs_token t[N];
    tokens_for(t, N, 61, in.n_vocab);
    kvs_session *probe = open_session(m, NULL, 1024, 64, 0);
    if (!probe) return;
    uint64_t page = kvs_session_kv_bytes_at(probe, 256); /* one page per layer */
    kvs_session_free(probe);
    /* room for the shared prompt's two pages per layer plus one more page */
    kvs_session *a = open_session(m, NULL, 1024, 64, 3 * page), *b = NULL;
    if (!a) return;
    CHECK(kvs_session_pool_budget(a) == 3 * page);
    CHECK(kvs_decode(a, t, N_PROMPT, false, NULL) == KVS_OK);
    CHECK(kvs_session_fork(a, &b) == KVS_OK);
    if (!b) { kvs_session_free(a); return; }
    /* b writes into the shared partial page: its private copy takes the last page of the budget */
    CHECK(kvs_decode(b, t + N_PROMPT, 1, false, NULL) == KVS_OK);
    CHECK(kvs_session_pool_bytes(a) == 3 * page);
    /* a fills its own page 1, then needs a third page: refused, nothing changed */
    CHECK(kvs_decode(a, t + N_PROMPT, 512 - N_PROMPT, false, NULL) == KVS_OK);
    kvs_status st = kvs_decode(a, t + 512, N - 512, false, g_a);
    CHECKF(st == KVS_ERR_BUDGET && strstr(kvs_last_error(), "budget"), "shared budget: %d %s", st, kvs_last_error());
    CHECK(kvs_session_n_past(a) == 512);
    /* b goes on as if alone */
    CHECK(kvs_decode(b, t + N_PROMPT + 1, N_MORE - 1, false, g_b) == KVS_OK);
    size_t calls_b[] = {N_PROMPT, 1, 0};
    fresh_calls(m, NULL, t, N_PROMPT + N_MORE, calls_b, g_a);
    CHECKF(same(g_a, g_b, V), "shared budget: the session within budget changed its output");
    kvs_session_free(b); /* its pages go back: a fits again */
    CHECK(kvs_decode(a, t + 512, N - 512, false, g_b) == KVS_OK);
    size_t calls_a[] = {N_PROMPT, 512 - N_PROMPT, 0};
    fresh_calls(m, NULL, t, N, calls_a, g_a);
    CHECKF(same(g_a, g_b, V), "shared budget: the refused session differs after room came back");
    kvs_session_free(a);
}

static void test_alloc_failures(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    kvs_token t[N_PROMPT + 1];
    tokens_for(t, N_PROMPT + 1, 71, in.n_vocab);
    const char *rules = "q4k3v,group=32,recent=32";
    kvs_session *a = open_session(m, rules, 1024, 64, 0);
    if (!a) return;
    CHECK(kvs_decode(a, t, N_PROMPT, false, g_a) == KVS_OK);
    int failures = 0;
    for (int64_t k = 0; k < 2000; k++) {
        kvs_session *b = NULL;
        kvs_alloc_fail_after(k);
        kvs_status st = kvs_session_fork(a, &b);
        if (st == KVS_OK) st = kvs_decode(b, t + N_PROMPT, 1, false, g_b); /* the copy on write */
        kvs_alloc_fail_after(-1);
        if (st != KVS_OK) {
            failures++;
            CHECKF(st == KVS_ERR_NOMEM, "allocation %lld failed: got %d (%s)", (long long)k, st, kvs_last_error());
        }
        kvs_session_free(b);
        if (st == KVS_OK) break; /* past the last allocation of the path */
    }
    CHECK(failures > 10);
    /* the parent is intact */
    CHECK(kvs_decode(a, t + N_PROMPT, 1, false, g_a) == KVS_OK);
    size_t calls[] = {N_PROMPT, 0};
    fresh_calls(m, rules, t, N_PROMPT + 1, calls, g_b);
    CHECK(same(g_a, g_b, (size_t)in.n_vocab));
    kvs_session_free(a);
}

int main(void) {
    const char *smol = "models/smollm2-135m-instruct-q4_1.gguf", *gemma = "models/gemma-3-270m-q4_k_m.gguf";
    const char *req = getenv("KVS_REQUIRE_MODELS");
    if (access(smol, R_OK) != 0 || access(gemma, R_OK) != 0) {
        CHECK(!(req && *req == '1'));
        printf("skip pool checks: models absent (make models)\n");
        return test_finish("pool");
    }
    g_a = malloc(sizeof(float) * 262144);
    g_b = malloc(sizeof(float) * 262144);
    kvs_model *m = NULL;
    CHECK(kvs_model_load(smol, NULL, &m) == KVS_OK);
    if (m) {
        test_fork(m, NULL, true);
        test_fork(m, "q4_0", true);
        test_fork(m, "q4k3v,group=32,recent=32", true);
        test_fork(m, "window=128+4", false); /* a ring that wraps while shared, copied by both */
        test_truncate(m, NULL, true);
        test_truncate(m, "q4k3v,group=128", true);            /* the dropped tokens are all in the f16 residual */
        test_truncate(m, "q4k3v,group=32", false);            /* dropped tokens were quantized */
        test_truncate(m, "window=128", false);                 /* the ring wrapped */
        test_truncate(m, "window=512", true);                  /* it did not */
        test_shared_budget(m);
        test_alloc_failures(m);
        kvs_session *s = open_session(m, "h2o=128", 1024, 64, 0), *f = NULL;
        if (s) CHECK(kvs_session_fork(s, &f) == KVS_ERR_UNSUPPORTED && !f);
        kvs_session_free(s);
    }
    kvs_model_free(m);
    m = NULL;
    CHECK(kvs_model_load(gemma, NULL, &m) == KVS_OK);
    if (m) { /* sliding layers of 512: rings written during the continuation */
        test_fork(m, NULL, true);
        test_truncate(m, NULL, true);
    }
    kvs_model_free(m);
    CHECK(kvs_session_fork(NULL, NULL) == KVS_ERR_INVALID_ARG);
    free(g_a);
    free(g_b);
    return test_finish("pool");
}
