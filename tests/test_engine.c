/* Many sequences in one engine (kvs_engine_decode, src/model/engine.c):
 *   - batched equals alone: four sequences with prompts of different lengths
 *     go in as one call (packed into steps of 64 tokens, the long prompts
 *     split over steps while the short ones ride along), then decode in steps
 *     of one token per sequence; each sequence's logits are compared with a
 *     session that decodes it alone (prompt in one call, then one token per
 *     call), for every architecture: llama (SmolLM2), gemma3 (Gemma 3 270M,
 *     sliding rings), and from the fixtures gemma4, deepseek2 (latent rows,
 *     with and without query LoRA) and deepseek4 (compressed layers and
 *     per-sequence compressor state, one sequence per step); and the main
 *     schemes on SmolLM2 (q4_0 rotated, per-channel q4k3v, a window with
 *     sinks, H2O eviction).
 *   - The tolerance. A step's rows go through each matmul together, so a
 *     decode row takes the many-row kernels where alone it takes the one-row
 *     dot: the same products summed in another order. On float weights (the
 *     fixtures) that is the whole difference: max |diff - offset| <= TOL_REL
 *     of the logits' range and KL <= TOL_KL per row. On 4- and 8-bit weights
 *     activations are rounded to 8 bits before every matmul, and a last-bit
 *     difference that flips one rounding grows over the layers (and through
 *     4-bit KV rounding): there the decode rows are held to the session's own
 *     gap between its one-row and many-row paths for the same rows (the
 *     generated tokens decoded in one call): mean and max KL within
 *     OWN_FACTOR of it; prompt rows (chunked in the batch, one call alone) to
 *     TOL_KL_PROMPT. On SmolLM2's full-row caches (f16, q4_0) every row is
 *     bit-identical: the quantized matmuls, the attention tiles and the
 *     activations do not depend on which other rows share a call or where
 *     a chunk starts (tests/test_quant.c checks the gemm side);
 *   - bit-identical where the arithmetic is the same: a one-sequence engine
 *     fed a session's calls, and a fork stepping with its parent;
 *   - one pool: an entry over the budget gets KVS_ERR_BUDGET and leaves its
 *     sequence as it was, the others in the same call run and match alone;
 *   - prefix reuse (kv/kv_prefix.c): a sequence started from a cached prefix
 *     continues bit-identically to a session with the same calls, block hits
 *     cut a longer snapshot, a wrapped window ring is reused only whole, the
 *     pool drops least recently used prefixes for a sequence that needs room;
 *     Gemma 3 resumes a shared prefix from the checkpoints a prompt left;
 *   - allocation failure injected at every allocation of the engine's paths;
 *   - bad entries (a sequence twice, a token outside the vocabulary, past the
 *     context, no tokens) are refused alone with a message.
 * Skips the real-model parts (loudly) without the models unless
 * KVS_REQUIRE_MODELS=1; the fixtures are in the tree. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "kvslim.h"
#include "test_util.h"

#define N_SEQ 4
#define N_GEN 6
#define N_BATCH 64
#define TOL_REL 1e-3       /* fixtures: max |diff - offset| / range         */
#define TOL_KL 1e-6        /* fixtures: KL per row                          */
#define TOL_KL_PROMPT 1e-2 /* real models: prompt rows, chunked vs one call  */
#define OWN_FACTOR 2.0     /* real models: decode rows vs a session's own gap */

static const uint32_t PROMPT_LEN[N_SEQ] = {37, 5, 150, 64};

static void tokens_for(kvs_token *t, size_t n, uint64_t seed, int32_t n_vocab) {
    for (size_t i = 0; i < n; i++) t[i] = (kvs_token)(test_rng_next(&seed) % (uint64_t)(n_vocab - 10)) + 5;
}

/* Prompts of real text for the real models: random tokens are far from what
 * a model sees, and there the 8-bit rounding of activations turns a change of
 * summation order into visibly different logits. */
static const char TEXT[] =
    "The river rose slowly through the night, and by morning the lower fields were under water. The farmers had "
    "moved their animals to the hill the day before, so nothing was lost but the last rows of cabbages. In the "
    "village the baker opened his shop as usual, because people would need bread whatever the weather did. "
    "Children stood at the edge of the flood and threw sticks into the brown current to see how fast it ran. "
    "An old man told them that the water had come this high once before, when he was a boy, and that it had "
    "taken three weeks to go down. The mayor called a meeting in the school for the evening. Everyone came, "
    "some in boots and some carrying their shoes, and they talked until late about the dam that the county had "
    "promised to build twenty years ago and never had. In the end they agreed to write one more letter, and to "
    "sign it all together, so that nobody in the capital could say it was the work of a few angry people.";

/* n tokens of TEXT starting at token `from` (the text is repeated as needed). */
static void text_tokens(const kvs_model *m, kvs_token *t, size_t n, size_t from) {
    static kvs_token all[1024];
    static size_t n_all = 0;
    static const kvs_model *for_model = NULL;
    if (for_model != m) {
        CHECK(kvs_tokenize(m, TEXT, sizeof TEXT - 1, 0, false, all, 1024, &n_all) == KVS_OK && n_all > 16);
        for_model = m;
    }
    for (size_t i = 0; i < n; i++) t[i] = all[(from + i) % n_all];
}

static kvs_session_params params(const char *rules, uint64_t budget) {
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = 512;
    p.n_batch = N_BATCH;
    p.n_threads = 2;
    p.kv_layers = rules;
    p.kv_budget = budget;
    return p;
}

/* How far logits a are from b: KL(softmax b || softmax a), and the max
 * |a - b - offset| as a fraction of b's range, where offset (the mean
 * difference) is the shift common to all logits, which no probability
 * depends on and which the summation order moves (tests/test_model.c). */
typedef struct gap { double rel, kl; } gap;

static gap logit_gap(const float *a, const float *b, int32_t n) {
    double off = 0, mb = -INFINITY, ma = -INFINITY;
    float lo = b[0], hi = b[0];
    for (int i = 0; i < n; i++) {
        off += (double)a[i] - b[i];
        if (b[i] < lo) lo = b[i];
        if (b[i] > hi) hi = b[i];
        if (b[i] > mb) mb = b[i];
        if (a[i] > ma) ma = a[i];
    }
    off /= n;
    double md = 0, za = 0, zb = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i] - off);
        if (!(d <= md)) md = d; /* NaN counts as worst */
        za += exp(a[i] - ma);
        zb += exp(b[i] - mb);
    }
    double kl = 0;
    for (int i = 0; i < n; i++) {
        double lpb = b[i] - mb - log(zb), lpa = a[i] - ma - log(za);
        kl += exp(lpb) * (lpb - lpa);
    }
    if (!(kl >= 0)) kl = INFINITY;
    return (gap){md / ((double)hi - lo + 1e-30), kl};
}

static bool close_logits(const float *a, const float *b, int32_t n) {
    gap g = logit_gap(a, b, n);
    return g.rel <= TOL_REL && g.kl <= TOL_KL;
}

/* Logits of a sequence alone: prompt in one call, then the generated tokens
 * one per call (out) or all in one call (many, NULL: skipped). Each gets
 * (1 + N_GEN, n_vocab): after the prompt, after each token. */
static void alone(const kvs_model *m, const char *rules, const kvs_token *prompt, uint32_t n_prompt,
                  const kvs_token *gen, float *out, float *many, int32_t V) {
    kvs_session_params p = params(rules, 0);
    p.n_batch = 512;
    kvs_session *s = NULL;
    CHECKF(kvs_session_new(m, &p, &s) == KVS_OK, "%s", kvs_last_error());
    if (!s) return;
    CHECK(kvs_decode(s, prompt, n_prompt, false, out) == KVS_OK);
    for (int g = 0; g < N_GEN; g++) CHECK(kvs_decode(s, gen + g, 1, false, out + (size_t)(g + 1) * V) == KVS_OK);
    kvs_session_free(s);
    if (many) {
        CHECK(kvs_session_new(m, &p, &s) == KVS_OK);
        if (!s) return;
        CHECK(kvs_decode(s, prompt, n_prompt, false, many) == KVS_OK);
        CHECK(kvs_decode(s, gen, N_GEN, true, many + V) == KVS_OK);
        kvs_session_free(s);
    }
}

static void test_batched_equals_alone(const kvs_model *m, const char *name, const char *rules, bool text, bool exact) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const int32_t V = in.n_vocab;
    kvs_token prompt[N_SEQ][160], gen[N_SEQ][N_GEN];
    for (int i = 0; i < N_SEQ; i++) {
        if (text) { /* each sequence a different stretch of the text, continued as the text goes on */
            text_tokens(m, prompt[i], PROMPT_LEN[i], 40 * (size_t)i);
            text_tokens(m, gen[i], N_GEN, 40 * (size_t)i + PROMPT_LEN[i]);
        } else {
            tokens_for(prompt[i], PROMPT_LEN[i], 11 + (uint64_t)i, V);
            tokens_for(gen[i], N_GEN, 101 + (uint64_t)i, V);
        }
    }
    const size_t rows = (size_t)N_SEQ * (1 + N_GEN);
    float *ref = malloc(sizeof(float) * (size_t)V * rows), *got = malloc(sizeof(float) * (size_t)V * rows);
    float *many = text ? malloc(sizeof(float) * (size_t)V * rows) : NULL;
    for (int i = 0; i < N_SEQ; i++) {
        size_t o = (size_t)i * V * (1 + N_GEN);
        alone(m, rules, prompt[i], PROMPT_LEN[i], gen[i], ref + o, many ? many + o : NULL, V);
    }

    kvs_session_params p = params(rules, 0);
    kvs_engine *e = NULL;
    CHECKF(kvs_engine_new(m, &p, &e) == KVS_OK, "%s: %s", name, kvs_last_error());
    if (!e) { free(ref); free(got); return; }
    kvs_seq *q[N_SEQ] = {0};
    for (int i = 0; i < N_SEQ; i++) CHECK(kvs_seq_new(e, &q[i]) == KVS_OK);
    CHECK(kvs_engine_n_seqs(e) == N_SEQ);
    kvs_batch_entry x[N_SEQ];
    for (int i = 0; i < N_SEQ; i++)
        x[i] = (kvs_batch_entry){.seq = q[i], .tokens = prompt[i], .n_tokens = PROMPT_LEN[i],
                                 .logits = got + (size_t)i * V * (1 + N_GEN)};
    CHECKF(kvs_engine_decode(e, x, N_SEQ) == KVS_OK, "%s: %s", name, kvs_last_error());
    for (int g = 0; g < N_GEN; g++) {
        for (int i = 0; i < N_SEQ; i++)
            x[i] = (kvs_batch_entry){.seq = q[i], .tokens = &gen[i][g], .n_tokens = 1,
                                     .logits = got + ((size_t)i * (1 + N_GEN) + (size_t)g + 1) * V};
        CHECKF(kvs_engine_decode(e, x, N_SEQ) == KVS_OK, "%s: %s", name, kvs_last_error());
    }
    /* prompts: chunked in the batch, one call alone; then the decode rows,
     * and (real models) the session's own gap between its one-row and
     * many-row paths for the same decode rows */
    gap prompt_worst = {0, 0}, dec_worst = {0, 0}, own_worst = {0, 0};
    double dec_mean = 0, own_mean = 0;
    int bad = 0, n_moved = 0;
    for (int i = 0; i < N_SEQ; i++) {
        CHECK(kvs_seq_n_past(q[i]) == PROMPT_LEN[i] + N_GEN);
        for (int g = 0; g <= N_GEN; g++) {
            size_t o = ((size_t)i * (1 + N_GEN) + (size_t)g) * V;
            gap d = logit_gap(got + o, ref + o, V);
            gap *w = g ? &dec_worst : &prompt_worst;
            if (getenv("KVS_TEST_VERBOSE")) printf("    seq %d row %d: %.2e %.2e\n", i, g, d.rel, d.kl);
            if (!(d.rel <= w->rel)) w->rel = d.rel;
            if (!(d.kl <= w->kl)) w->kl = d.kl;
            if (!text && !close_logits(got + o, ref + o, V)) bad++;
            if (exact && memcmp(got + o, ref + o, sizeof(float) * (size_t)V)) n_moved++;
            if (!g || !text) continue;
            gap own = logit_gap(many + o, ref + o, V);
            if (!(own.kl <= own_worst.kl)) own_worst.kl = own.kl;
            if (!(own.rel <= own_worst.rel)) own_worst.rel = own.rel;
            dec_mean += d.kl / (N_SEQ * N_GEN);
            own_mean += own.kl / (N_SEQ * N_GEN);
        }
    }
    const char *rn = rules ? rules : "default";
    CHECKF(n_moved == 0, "%s [%s]: %d of %zu logit rows are not bit-identical to the sequence alone", name, rn, n_moved,
           rows);
    if (!text) {
        CHECKF(bad == 0, "%s [%s]: %d of %zu logit rows differ from the sequence alone (worst %.2e of the range, KL %.2e)",
               name, rn, bad, rows, dec_worst.rel > prompt_worst.rel ? dec_worst.rel : prompt_worst.rel,
               dec_worst.kl > prompt_worst.kl ? dec_worst.kl : prompt_worst.kl);
        printf("  %-10s %-26s batched vs alone: worst |diff - offset| %.1e of the range, KL %.1e\n", name, rn,
               dec_worst.rel > prompt_worst.rel ? dec_worst.rel : prompt_worst.rel,
               dec_worst.kl > prompt_worst.kl ? dec_worst.kl : prompt_worst.kl);
    } else {
        CHECKF(prompt_worst.kl <= TOL_KL_PROMPT, "%s [%s]: prompt logits, chunked in the batch: KL %.2e", name, rn,
               prompt_worst.kl);
        CHECKF(dec_mean <= OWN_FACTOR * own_mean + 1e-4 && dec_worst.kl <= OWN_FACTOR * own_worst.kl + 1e-3,
               "%s [%s]: decode rows KL mean %.2e max %.2e against the session's own one-row vs many-row gap, mean "
               "%.2e max %.2e", name, rn, dec_mean, dec_worst.kl, own_mean, own_worst.kl);
        printf("  %-10s %-26s prompts KL %.1e; decode KL mean %.1e max %.1e (a session's own 1-row vs many-row: "
               "mean %.1e max %.1e)\n", name, rn, prompt_worst.kl, dec_mean, dec_worst.kl, own_mean, own_worst.kl);
    }
    fflush(stdout);
    for (int i = 0; i < N_SEQ; i++) kvs_seq_free(q[(i + 1) % N_SEQ]); /* any order */
    CHECK(kvs_engine_n_seqs(e) == 0 && kvs_engine_kv_bytes(e) == 0);
    kvs_engine_free(e);
    free(ref);
    free(got);
    free(many);
}

/* A one-sequence engine fed a session's calls runs the same arithmetic. */
static void test_one_sequence_bit_identical(const kvs_model *m, const char *name) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const int32_t V = in.n_vocab;
    kvs_token t[100];
    tokens_for(t, 100, 7, V);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    kvs_session_params p = params(NULL, 0);
    kvs_session *s = NULL;
    kvs_engine *e = NULL;
    kvs_seq *q = NULL;
    CHECK(kvs_session_new(m, &p, &s) == KVS_OK);
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    if (e) CHECK(kvs_seq_new(e, &q) == KVS_OK);
    if (s && q) {
        const uint32_t calls[] = {40, 1, 59};
        uint32_t done = 0;
        bool same = true;
        for (int c = 0; c < 3; c++) {
            CHECK(kvs_decode(s, t + done, calls[c], false, a) == KVS_OK);
            kvs_batch_entry x = {.seq = q, .tokens = t + done, .n_tokens = calls[c], .logits = b};
            CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK && x.status == KVS_OK);
            same = same && memcmp(a, b, sizeof(float) * V) == 0;
            done += calls[c];
        }
        CHECKF(same, "%s: a one-sequence engine differs from a session with the same calls", name);
    }
    kvs_engine_free(e);
    kvs_session_free(s);
    free(a);
    free(b);
}

/* One pool: the entry that does not fit is refused alone, unchanged. */
static void test_budget_and_bad_entries(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const int32_t V = in.n_vocab;
    kvs_token t[300];
    tokens_for(t, 300, 5, V);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V), *r = malloc(sizeof(float) * V);
    /* a budget that holds one 256-token page per layer and sequence for two sequences, not a third page */
    kvs_session_params p0 = params(NULL, 0);
    kvs_session *probe = NULL;
    CHECK(kvs_session_new(m, &p0, &probe) == KVS_OK);
    uint64_t page = 0;
    if (probe) { CHECK(kvs_decode(probe, t, 1, false, NULL) == KVS_OK); page = kvs_session_kv_bytes(probe); }
    kvs_session_free(probe);
    kvs_session_params p = params(NULL, 2 * page + page / 2);
    kvs_engine *e = NULL;
    kvs_seq *q1 = NULL, *q2 = NULL;
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    if (!e || !page) { kvs_engine_free(e); free(a); free(b); free(r); return; }
    CHECK(kvs_seq_new(e, &q1) == KVS_OK && kvs_seq_new(e, &q2) == KVS_OK);
    kvs_batch_entry x[2] = {
        {.seq = q1, .tokens = t, .n_tokens = 20, .logits = a},
        {.seq = q2, .tokens = t + 20, .n_tokens = 280, .logits = b}, /* two pages: over the budget */
    };
    CHECK(kvs_engine_decode(e, x, 2) == KVS_ERR_BUDGET);
    CHECK(x[0].status == KVS_OK && x[1].status == KVS_ERR_BUDGET);
    CHECKF(strstr(kvs_last_error(), "budget") != NULL, "message: %s", kvs_last_error());
    CHECK(kvs_seq_n_past(q1) == 20 && kvs_seq_n_past(q2) == 0);
    CHECK(kvs_engine_kv_bytes(e) <= kvs_engine_kv_budget(e));
    float *rr = malloc(sizeof(float) * (size_t)V * (1 + N_GEN));
    alone(m, NULL, t, 20, t, rr, NULL, V); /* the row after the prompt is compared */
    CHECK(logit_gap(a, rr, V).kl <= TOL_KL_PROMPT);
    free(rr);
    /* the refused sequence still takes what fits */
    x[1].n_tokens = 100;
    CHECK(kvs_engine_decode(e, &x[1], 1) == KVS_OK && kvs_seq_n_past(q2) == 100);

    /* bad entries: each refused alone, the good one runs */
    kvs_token bad_tok[2] = {1, V + 3};
    kvs_batch_entry y[4] = {
        {.seq = q1, .tokens = t + 20, .n_tokens = 1, .logits = a},
        {.seq = q1, .tokens = t + 21, .n_tokens = 1},        /* the same sequence again */
        {.seq = q2, .tokens = bad_tok, .n_tokens = 2},        /* outside the vocabulary */
        {.seq = NULL, .tokens = t, .n_tokens = 1},
    };
    CHECK(kvs_engine_decode(e, y, 4) == KVS_ERR_INVALID_ARG);
    CHECK(y[0].status == KVS_OK && y[1].status == KVS_ERR_INVALID_ARG && y[2].status == KVS_ERR_INVALID_ARG &&
          y[3].status == KVS_ERR_INVALID_ARG);
    CHECK(kvs_seq_n_past(q1) == 21 && kvs_seq_n_past(q2) == 100);
    kvs_batch_entry z = {.seq = q2, .tokens = t, .n_tokens = 0};
    CHECK(kvs_engine_decode(e, &z, 1) == KVS_ERR_INVALID_ARG);
    kvs_token *many = calloc(600, sizeof *many);
    z = (kvs_batch_entry){.seq = q2, .tokens = many, .n_tokens = 500};
    CHECK(kvs_engine_decode(e, &z, 1) == KVS_ERR_CONTEXT && kvs_seq_n_past(q2) == 100);
    free(many);
    CHECK(kvs_engine_decode(NULL, &z, 1) == KVS_ERR_INVALID_ARG);

    /* a fork continues as its parent: same next-token logits (q2 goes, so the
     * copy of the shared partial page fits the budget) */
    kvs_seq_free(q2);
    kvs_seq *f = NULL;
    CHECK(kvs_seq_fork(q1, &f) == KVS_OK);
    if (f) {
        kvs_batch_entry w[2] = {{.seq = q1, .tokens = t + 21, .n_tokens = 1, .logits = a},
                                {.seq = f, .tokens = t + 21, .n_tokens = 1, .logits = b}};
        CHECK(kvs_engine_decode(e, w, 2) == KVS_OK);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)V) == 0); /* one token each, the same rows' arithmetic */
        CHECK(kvs_seq_n_past(f) == 22);
    }
    kvs_engine_free(e); /* frees the open sequences too */
    free(a);
    free(b);
    free(r);
}

/* Prefix reuse: a sequence started from a cached prefix continues exactly as
 * a session that ran the same tokens in the same calls; block hits cut a
 * longer snapshot; a window ring that wrapped can only be reused whole; the
 * pool drops cached prefixes when a sequence needs their pages. */
static void test_prefix(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const int32_t V = in.n_vocab;
    kvs_token t[200], u[200];
    text_tokens(m, t, 200, 0);
    memcpy(u, t, sizeof(kvs_token) * 40);
    text_tokens(m, u + 40, 160, 300); /* shares the first 40 tokens with t */
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    kvs_session_params p = params(NULL, 0);
    kvs_engine *e = NULL;
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    if (!e) { free(a); free(b); return; }
    kvs_seq *q = NULL, *r = NULL;
    uint32_t hit = 99;
    CHECK(kvs_seq_new_cached(e, t, 120, &q, &hit) == KVS_OK && q && hit == 0);
    kvs_batch_entry x = {.seq = q, .tokens = t, .n_tokens = 100};
    CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
    CHECK(kvs_engine_cache_prefix(e, q) == KVS_OK);
    CHECK(kvs_engine_cache_prefix(e, q) == KVS_OK); /* held already: no second snapshot */
    CHECK(kvs_engine_prefix_stats(e).snapshots == 1 && kvs_engine_prefix_stats(e).tokens_held == 100);
    uint64_t before = kvs_engine_kv_bytes(e);
    kvs_seq_free(q);
    CHECK(kvs_engine_kv_bytes(e) == before); /* the snapshot holds the pages */

    /* the whole snapshot: 100 tokens mapped, 20 run; a session's calls 64 + 36 (its n_batch), then 20 */
    CHECK(kvs_seq_new_cached(e, t, 120, &r, &hit) == KVS_OK && hit == 100 && kvs_seq_n_past(r) == 100);
    x = (kvs_batch_entry){.seq = r, .tokens = t + 100, .n_tokens = 20, .logits = b};
    CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &p, &s) == KVS_OK);
    if (s) {
        CHECK(kvs_decode(s, t, 100, false, NULL) == KVS_OK && kvs_decode(s, t + 100, 20, false, a) == KVS_OK);
        CHECK(memcmp(a, b, sizeof(float) * V) == 0);
    }
    kvs_seq_free(r);

    /* a block hit: u shares 40 tokens with t, so 32 (two blocks) are mapped */
    CHECK(kvs_seq_new_cached(e, u, 150, &r, &hit) == KVS_OK && hit == 32 && kvs_seq_n_past(r) == 32);
    x = (kvs_batch_entry){.seq = r, .tokens = u + 32, .n_tokens = 118, .logits = b};
    CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
    if (s) {
        kvs_session_reset(s);
        CHECK(kvs_decode(s, u, 32, false, NULL) == KVS_OK && kvs_decode(s, u + 32, 118, false, a) == KVS_OK);
        CHECK(logit_gap(b, a, V).kl <= TOL_KL_PROMPT);
    }
    kvs_prefix_stats ps = kvs_engine_prefix_stats(e);
    CHECK(ps.lookups == 3 && ps.hits == 2 && ps.tokens_hit == 132);
    /* at least one token is always left to run: a prompt equal to the snapshot maps one block less */
    kvs_seq *w = NULL;
    CHECK(kvs_seq_new_cached(e, t, 100, &w, &hit) == KVS_OK && hit == 96);
    kvs_seq_free(w);
    kvs_seq_free(r);
    kvs_session_free(s);
    kvs_engine_free(e);

    /* a window ring that wrapped cannot be cut: only the whole snapshot is reused */
    p = params("window=64+4,page=16", 0); /* a ring of 80 slots */
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    if (e) {
        CHECK(kvs_seq_new(e, &q) == KVS_OK);
        x = (kvs_batch_entry){.seq = q, .tokens = t, .n_tokens = 150};
        CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK && kvs_engine_cache_prefix(e, q) == KVS_OK);
        CHECK(kvs_seq_new_cached(e, t, 160, &r, &hit) == KVS_OK && hit == 150);
        kvs_seq_free(r);
        CHECKF(kvs_seq_new_cached(e, t, 120, &r, &hit) == KVS_OK && hit == 0 && kvs_seq_n_past(r) == 0, "hit %u: %s", hit, kvs_last_error());
        kvs_seq_free(r);
        kvs_engine_free(e);
    }

    /* the pool drops cached prefixes for a sequence that needs the room */
    p = params(NULL, 0);
    kvs_session *probe = NULL;
    uint64_t page = 0;
    CHECK(kvs_session_new(m, &p, &probe) == KVS_OK);
    if (probe) { CHECK(kvs_decode(probe, t, 1, false, NULL) == KVS_OK); page = kvs_session_kv_bytes(probe); }
    kvs_session_free(probe);
    p = params(NULL, page + page / 2); /* one page per layer */
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    if (e && page) {
        CHECK(kvs_seq_new(e, &q) == KVS_OK);
        x = (kvs_batch_entry){.seq = q, .tokens = t, .n_tokens = 50};
        CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK && kvs_engine_cache_prefix(e, q) == KVS_OK);
        kvs_seq_free(q);
        CHECK(kvs_engine_prefix_stats(e).snapshots == 1);
        CHECK(kvs_seq_new(e, &q) == KVS_OK);
        x = (kvs_batch_entry){.seq = q, .tokens = u, .n_tokens = 60};
        CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK && x.status == KVS_OK);
        CHECK(kvs_engine_prefix_stats(e).snapshots == 0 && kvs_engine_kv_bytes(e) <= kvs_engine_kv_budget(e));
    }
    kvs_engine_free(e);
    free(a);
    free(b);
}

/* Gemma 3's sliding layers (rings of 512 slots): a 900-token prompt run with
 * cache_prefix leaves checkpoints every 256 tokens, so a prompt sharing its
 * first 600 tokens resumes from the 512-token checkpoint (the later ones'
 * rings have wrapped past what position 592 needs) and continues
 * bit-identically to a session with the same chunks. */
static void test_prefix_sliding(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const int32_t V = in.n_vocab;
    enum { N = 900, SHARED = 600, M = 700 };
    kvs_token *t = malloc(sizeof *t * N), *u = malloc(sizeof *u * M);
    text_tokens(m, t, N, 0);
    memcpy(u, t, sizeof *u * SHARED);
    text_tokens(m, u + SHARED, M - SHARED, 77);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    kvs_session_params p = params(NULL, 0);
    p.n_ctx = 1024;
    kvs_engine *e = NULL;
    kvs_seq *q = NULL, *r = NULL;
    uint32_t hit = 0;
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    if (e) {
        CHECK(kvs_seq_new(e, &q) == KVS_OK);
        kvs_batch_entry x = {.seq = q, .tokens = t, .n_tokens = N, .cache_prefix = true};
        CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
        CHECK(kvs_engine_prefix_stats(e).snapshots == 4); /* 256, 512, 768, 900 */
        kvs_seq_free(q);
        CHECKF(kvs_seq_new_cached(e, u, M, &r, &hit) == KVS_OK && hit == 512, "hit %u", hit);
        x = (kvs_batch_entry){.seq = r, .tokens = u + hit, .n_tokens = M - hit, .logits = b};
        CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
        kvs_session *s = NULL;
        CHECK(kvs_session_new(m, &p, &s) == KVS_OK);
        if (s) {
            CHECK(kvs_decode(s, u, 512, false, NULL) == KVS_OK && kvs_decode(s, u + 512, M - 512, false, a) == KVS_OK);
            CHECK(memcmp(a, b, sizeof(float) * V) == 0);
        }
        kvs_session_free(s);
    }
    kvs_engine_free(e);
    free(t);
    free(u);
    free(a);
    free(b);
}

/* Allocation failure at each allocation of the engine's paths: creating it,
 * a sequence, a batch of two (one with a cached prefix), caching a prefix.
 * Every failure is KVS_ERR_NOMEM with a message, never a crash or leak (ASan
 * in CI); with the hook off the same path then works. */
static void test_alloc_failures(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    kvs_token t[80];
    text_tokens(m, t, 80, 0);
    float *a = malloc(sizeof(float) * in.n_vocab);
    kvs_session_params p = params(NULL, 0);
    /* creating the engine */
    int failures = 0;
    bool through = false;
    for (int64_t k = 0; k < 5000 && !through; k++) {
        kvs_engine *e = NULL;
        kvs_alloc_fail_after(k);
        kvs_status st = kvs_engine_new(m, &p, &e);
        kvs_alloc_fail_after(-1);
        if (st == KVS_OK) through = true;
        else { failures++; CHECKF(st == KVS_ERR_NOMEM && !e, "allocation %lld: %s", (long long)k, kvs_last_error()); }
        kvs_engine_free(e);
    }
    CHECK(through && failures > 20);
    int engine_failures = failures;
    /* a sequence, a cached prefix, a batch of two, on an engine whose buffers exist */
    kvs_engine *e = NULL;
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    if (e) {
        kvs_seq *w = NULL;
        kvs_batch_entry x = {.seq = NULL, .tokens = t, .n_tokens = 24, .logits = a};
        CHECK(kvs_seq_new(e, &w) == KVS_OK && (x.seq = w) && kvs_engine_decode(e, &x, 1) == KVS_OK); /* warm */
        kvs_seq_free(w);
    }
    failures = 0;
    through = false;
    for (int64_t k = 0; e && k < 5000 && !through; k++) {
        kvs_seq *q = NULL, *r = NULL;
        uint32_t hit = 0;
        kvs_engine_prefix_clear(e);
        kvs_alloc_fail_after(k);
        kvs_status st = kvs_seq_new(e, &q);
        if (st == KVS_OK) {
            kvs_batch_entry x = {.seq = q, .tokens = t, .n_tokens = 20};
            st = kvs_engine_decode(e, &x, 1);
        }
        if (st == KVS_OK) st = kvs_engine_cache_prefix(e, q);
        if (st == KVS_OK) st = kvs_seq_new_cached(e, t, 24, &r, &hit);
        if (st == KVS_OK) {
            kvs_batch_entry x[2] = {{.seq = q, .tokens = t + 20, .n_tokens = 1, .logits = a},
                                    {.seq = r, .tokens = t + hit, .n_tokens = 24 - hit, .logits = a}};
            st = kvs_engine_decode(e, x, 2);
        }
        kvs_alloc_fail_after(-1);
        if (st != KVS_OK) {
            failures++;
            CHECKF(st == KVS_ERR_NOMEM && kvs_last_error()[0], "allocation %lld failed: got %s (%s)", (long long)k,
                   kvs_status_name(st), kvs_last_error());
        } else {
            through = true;
            CHECK(hit == 20); /* the whole 20-token snapshot */
        }
        kvs_seq_free(q);
        kvs_seq_free(r);
    }
    CHECKF(through && failures > 5, "%d failures, the path %s", failures, through ? "completed" : "never completed");
    kvs_engine_free(e);
    printf("  allocation failure injected at each allocation: engine creation %d, sequences and steps %d; all "
           "KVS_ERR_NOMEM\n", engine_failures, failures);
    free(a);
}

/* exact: rules[i] (i < n_exact) must give bit-identical rows (see the top). */
static void run_model(const char *path, const char *name, const char *const *rules, int n_rules, int n_exact,
                      bool real, bool pool_tests) {
    kvs_model *m = NULL;
    CHECKF(kvs_model_load(path, NULL, &m) == KVS_OK, "%s: %s", path, kvs_last_error());
    if (!m) return;
    test_one_sequence_bit_identical(m, name);
    for (int i = 0; i < n_rules; i++) test_batched_equals_alone(m, name, rules[i], real, i < n_exact);
    if (pool_tests) test_budget_and_bad_entries(m);
    if (pool_tests) test_prefix(m);
    if (pool_tests) test_alloc_failures(m);
    kvs_model_free(m);
}

int main(void) {
    static const char *const plain[] = {NULL};
    static const char *const smol_rules[] = {NULL, "q4_0", "q4k3v,group=32,recent=32", "window=96+4", "h2o=96"};
    run_model("tests/data/gemma4_tiny.gguf", "gemma4", plain, 1, 0, false, false);
    run_model("tests/data/deepseek2_a.gguf", "deepseek2a", plain, 1, 0, false, false);
    run_model("tests/data/deepseek2_b.gguf", "deepseek2b", plain, 1, 0, false, false);
    run_model("tests/data/deepseek4_tiny.gguf", "deepseek4", plain, 1, 0, false, false);
    const char *smol = "models/smollm2-135m-instruct-q4_1.gguf", *gemma = "models/gemma-3-270m-q4_k_m.gguf";
    const char *req = getenv("KVS_REQUIRE_MODELS");
    if (access(smol, R_OK) != 0 || access(gemma, R_OK) != 0) {
        CHECK(!(req && *req == '1'));
        printf("skip engine checks on real models: models absent (make models)\n");
        return test_finish("engine");
    }
    run_model(smol, "smollm2", smol_rules, 5, 2, true, true);
    run_model(gemma, "gemma3", plain, 1, 0, true, false);
    kvs_model *g3 = NULL;
    CHECK(kvs_model_load(gemma, NULL, &g3) == KVS_OK);
    if (g3) test_prefix_sliding(g3);
    kvs_model_free(g3);
    return test_finish("engine");
}
