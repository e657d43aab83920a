/* Whole-model checks on the real default model against an independent
 * implementation (llama.cpp via llama-cpp-python; reference produced by
 * scripts/ref_llamacpp.py into tests/data/ref_smollm2.json):
 *   - prompt tokenization identical;
 *   - logits after the prompt: the reference's top-10 within LOGIT_TOL;
 *   - 32 greedy tokens identical, token for token;
 *   - perplexity on the same text and context within 0.5%
 *     (skipped when KVS_SKIP_SLOW=1, e.g. under sanitizers);
 *   - bad input: tokens outside the vocabulary, context overflow.
 * Skips (exit 0, loudly) without the model unless KVS_REQUIRE_MODELS=1. */
#include <string.h>

#include "kvslim.h"
#include "plan/json.h"
#include "test_util.h"

#define LOGIT_TOL 0.15f
#define PPL_REL_TOL 0.005

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (b) { b[n] = 0; *len = (size_t)n; }
    return b;
}

int main(void) {
    const char *path = test_model_path();
    if (!path) {
        const char *req = getenv("KVS_REQUIRE_MODELS");
        if (req && *req == '1') { fprintf(stderr, "FAIL model: default model missing (make models)\n"); return 1; }
        printf("skip model: models/smollm2-135m-instruct-q4_1.gguf absent (run: make models)\n");
        return 0;
    }
    size_t jl;
    char *jtext = read_all("tests/data/ref_smollm2.json", &jl);
    CHECK(jtext != NULL);
    kvs_json *ref = NULL;
    CHECK(jtext && kvs_json_parse(jtext, jl, &ref) == KVS_OK);
    if (!ref) return test_finish("model");
    printf("reference: %s %s\n", kvs_json_get_str(ref, "engine"), kvs_json_get_str(ref, "version"));

    kvs_model *m = NULL;
    CHECK(kvs_model_load(path, NULL, &m) == KVS_OK);
    if (!m) return test_finish("model");
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 512;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    float *logits = malloc(sizeof(float) * (size_t)info.n_vocab);

    const kvs_json *prompts = kvs_json_get(ref, "prompts");
    for (size_t pi = 0; prompts && pi < prompts->n; pi++) {
        const kvs_json *p = kvs_json_at(prompts, pi);
        const char *text = kvs_json_get_str(p, "text");
        const kvs_json *rt = kvs_json_get(p, "prompt_tokens");
        kvs_token toks[256];
        size_t n = 0;
        CHECK(kvs_tokenize(m, text, strlen(text), -1, false, toks, 256, &n) == KVS_OK);
        CHECKF(n == rt->n, "prompt %zu: %zu tokens vs %zu", pi, n, rt->n);
        for (size_t i = 0; i < n && i < rt->n; i++) CHECK(toks[i] == (kvs_token)kvs_json_at(rt, i)->num);

        kvs_session_reset(s);
        CHECK(kvs_decode(s, toks, n, false, logits) == KVS_OK);
        const kvs_json *top = kvs_json_get(p, "top_logits");
        float maxd = 0;
        for (size_t i = 0; i < top->n; i++) {
            const kvs_json *e = kvs_json_at(top, i);
            int id = (int)kvs_json_at(e, 0)->num;
            float d = fabsf(logits[id] - (float)kvs_json_at(e, 1)->num);
            if (d > maxd) maxd = d;
        }
        CHECKF(maxd < LOGIT_TOL, "prompt %zu: top-10 logits differ by up to %.4f", pi, maxd);

        const kvs_json *g = kvs_json_get(p, "greedy");
        size_t match = 0;
        bool diverged = false;
        for (size_t i = 0; i < g->n; i++) {
            kvs_token best = 0;
            for (int32_t v = 1; v < info.n_vocab; v++) if (logits[v] > logits[best]) best = v;
            if (!diverged && best == (kvs_token)kvs_json_at(g, i)->num) match++;
            else diverged = true;
            CHECK(kvs_decode(s, &best, 1, false, logits) == KVS_OK);
        }
        printf("prompt %zu %-28.28s: max |dlogit| top-10 %.4f, greedy %zu/%zu identical\n", pi, text, maxd,
               match, g->n);
        CHECKF(match == g->n, "prompt %zu: greedy continuation diverges at token %zu", pi, match);
    }

    /* bad input */
    kvs_token bad = info.n_vocab;
    CHECK(kvs_decode(s, &bad, 1, false, logits) == KVS_ERR_INVALID_ARG);
    CHECK(strstr(kvs_last_error(), "vocabulary") != NULL);
    kvs_session_reset(s);
    kvs_token *many = calloc(513, sizeof *many);
    CHECK(kvs_decode(s, many, 513, false, NULL) == KVS_ERR_CONTEXT);
    CHECK(kvs_session_n_past(s) == 0);
    free(many);

    const char *slow = getenv("KVS_SKIP_SLOW");
    const kvs_json *rp = kvs_json_get(ref, "ppl");
    if (slow && *slow == '1') {
        printf("skip perplexity check (KVS_SKIP_SLOW=1)\n");
    } else if (rp) {
        size_t tl;
        char *text = read_all(kvs_json_get_str(rp, "file"), &tl);
        CHECK(text != NULL);
        if (text) {
            kvs_token *t = malloc(sizeof *t * (tl + 16));
            size_t n = 0;
            CHECK(kvs_tokenize(m, text, tl, -1, false, t, tl + 16, &n) == KVS_OK);
            double want_n = 0;
            kvs_json_get_num(rp, "n_tokens", &want_n);
            CHECK(n == (size_t)want_n);
            kvs_ppl_result r;
            CHECK(kvs_perplexity(s, t, n, NULL, NULL, &r) == KVS_OK);
            double want = 0;
            kvs_json_get_num(rp, "ppl", &want);
            double rel = fabs(r.ppl - want) / want;
            printf("perplexity GPL-3 c=512: %.4f vs reference %.4f (%.3f%%)\n", r.ppl, want, 100 * rel);
            CHECKF(rel < PPL_REL_TOL, "perplexity %.4f vs %.4f", r.ppl, want);
            free(t);
            free(text);
        }
    }
    free(logits);
    kvs_session_free(s);
    kvs_model_free(m);
    kvs_json_free(ref);
    free(jtext);
    return test_finish("model");
}
