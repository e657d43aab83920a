/* Gemma 3 on the real Gemma-3-270M Q4_K_M against llama.cpp through
 * llama-cpp-python (scripts/ref_llamacpp.py -> tests/data/ref_gemma3.json):
 *   - layer pattern and KV schemes: 5 sliding layers (window 512 from the
 *     GGUF) then 1 global, repeated; local layers capped at the window, so
 *     the KV bytes at 32K context are a fraction of an all-global cache, and
 *     the allocator's bytes equal the scheme formula after a prefill longer
 *     than the window;
 *   - prompt tokenization identical; top-10 logits after each prompt within
 *     LOGIT_TOL of llama.cpp's and of an exact float64 numpy forward pass on
 *     the dequantized weights (scripts/ref_numpy_gemma3.py ->
 *     tests/data/ref_gemma3_f64.json);
 *   - 32 greedy tokens identical to llama.cpp's up to the first step that
 *     exact math calls a near-tie (f64 top-2 gap < NEAR_TIE along llama.cpp's
 *     sequence): past such a step either choice is within rounding noise;
 *   - chunking: the last logits of a 700-token prefill are the same whether
 *     it runs in chunks of 512 + 188 or of 64 (the ring, its wrap and the
 *     staged chunk agree). Chunk sizes are multiples of 16 because the
 *     kernels round identically per token only then: other sizes move the
 *     8-bit activation rounding and the logits by up to ~1 (also seen on
 *     SmolLM2), which would hide a real ring error;
 *   - perplexity on GPL-3 at c=512 and c=2048 (> the window) within 0.5% of
 *     llama.cpp's (skipped when KVS_SKIP_SLOW=1).
 * Skips (exit 0, loudly) without the model unless KVS_REQUIRE_MODELS=1. */
#include <string.h>

#include "kvslim.h"
#include "core/json.h"
#include "plan/plan.h"
#include "test_util.h"

#define MODEL "models/gemma-3-270m-q4_k_m.gguf"
#define LOGIT_TOL 1.0f
#define LOGIT_RMS_TOL 0.5f /* Gemma's logits run larger than SmolLM2's (measured rms 0.18-0.41) */
/* A greedy step whose exact top-2 gap is under the rms logit error this test
 * accepts (LOGIT_RMS_TOL; measured after the prompts: rms 0.15-0.41, max up
 * to 0.51 against float64, from the 8-bit activation rounding) is a near-tie:
 * either token is within that error. Two decode attention kernels that both
 * match float64 to ~1e-6 (AVX2, AVX-512) flipped prompt 1 at a gap of 0.28. */
#define NEAR_TIE LOGIT_RMS_TOL
#define PPL_REL_TOL 0.005

static kvs_session *new_session(kvs_model *m, uint32_t n_ctx, uint32_t n_batch) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = n_ctx;
    sp.n_batch = n_batch;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    return s;
}

static void check_schemes(kvs_model *m) {
    kvs_session *s = new_session(m, 32768, 512);
    if (!s) return;
    char buf[128];
    for (int l = 0; l < 18; l++) {
        kvs_session_kv_describe(s, l, buf, sizeof buf);
        bool global = l % 6 == 5;
        CHECKF(global == (strstr(buf, "window 512") == NULL), "layer %d: %s", l, buf);
    }
    /* f16 K+V, 1 KV head x 256: 1024 bytes per token per layer, 256-token pages */
    uint64_t global = 3ull * 32768 * 1024, local = 15ull * 512 * 1024, all_global = 18ull * 32768 * 1024;
    uint64_t got = kvs_session_kv_bytes_at(s, 32768);
    printf("KV at 32768 tokens: %.2f MiB (all-global cache: %.2f MiB, %.1f%%)\n", got / 1048576.0,
           all_global / 1048576.0, 100.0 * (double)got / (double)all_global);
    CHECK(got == global + local);
    kvs_session_free(s);
}

/* Prefill n tokens in chunks of `batch`; last-token logits into out. */
static void prefill(kvs_model *m, const kvs_token *t, size_t n, uint32_t batch, float *out, uint64_t *bytes) {
    kvs_session *s = new_session(m, 1024, batch);
    if (!s) return;
    CHECK(kvs_decode(s, t, n, false, out) == KVS_OK);
    *bytes = kvs_session_kv_bytes(s);
    CHECK(*bytes == kvs_session_kv_bytes_at(s, n));
    kvs_session_free(s);
}

static void check_chunking(kvs_model *m, const kvs_token *t, size_t n, int32_t n_vocab) {
    float *a = malloc(sizeof(float) * (size_t)n_vocab), *b = malloc(sizeof(float) * (size_t)n_vocab);
    uint64_t ba = 0, bb = 0;
    prefill(m, t, n, 512, a, &ba);
    prefill(m, t, n, 64, b, &bb);
    float maxd = 0;
    for (int32_t i = 0; i < n_vocab; i++) maxd = fmaxf(maxd, fabsf(a[i] - b[i]));
    printf("%zu-token prefill, chunks of 512 vs 64: max |dlogit| %.2e; KV %llu bytes\n", n, maxd,
           (unsigned long long)ba);
    CHECKF(maxd < 1e-4f, "chunked prefill differs by %g", maxd);
    /* 3 global layers x 3 pages + 15 local layers x 2 pages (the 512-slot ring), 256 KiB each */
    CHECK(ba == 39ull * 256 * 1024 && bb == ba);
    free(a);
    free(b);
}

static void check_ppl(kvs_model *m, const kvs_token *t, size_t n, uint32_t ctx, double want) {
    kvs_session *s = new_session(m, ctx, 512);
    if (!s) return;
    kvs_ppl_result r;
    CHECK(kvs_perplexity(s, t, n, NULL, NULL, &r) == KVS_OK);
    double rel = fabs(r.ppl - want) / want;
    printf("perplexity GPL-3 c=%u: %.4f vs llama.cpp %.4f (%.3f%%)\n", ctx, r.ppl, want, 100 * rel);
    CHECKF(rel < PPL_REL_TOL, "perplexity c=%u %.4f vs %.4f", ctx, r.ppl, want);
    kvs_session_free(s);
}

int main(void) {
    FILE *f = fopen(MODEL, "rb");
    if (!f) {
        const char *req = getenv("KVS_REQUIRE_MODELS");
        if (req && *req == '1') { fprintf(stderr, "FAIL gemma3: %s missing (make models)\n", MODEL); return 1; }
        printf("skip gemma3: %s absent (run: make models)\n", MODEL);
        return 0;
    }
    fclose(f);
    size_t jl;
    char *jtext = test_read_file("tests/data/ref_gemma3.json", &jl);
    kvs_json *ref = NULL, *f64 = NULL;
    CHECK(jtext && kvs_json_parse(jtext, jl, &ref) == KVS_OK);
    size_t fl;
    char *ftext = test_read_file("tests/data/ref_gemma3_f64.json", &fl);
    CHECK(ftext && kvs_json_parse(ftext, fl, &f64) == KVS_OK);
    if (!ref || !f64) return test_finish("gemma3");
    printf("reference: %s %s\n", kvs_json_get_str(ref, "engine"), kvs_json_get_str(ref, "version"));

    kvs_model *m = NULL;
    CHECK(kvs_model_load(MODEL, NULL, &m) == KVS_OK);
    if (!m) return test_finish("gemma3");
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    CHECK(strcmp(info.arch, "gemma3") == 0 && info.n_layer == 18);
    check_schemes(m);
    { /* the repacked copies (its q8_0 head and q5_0 matrices) as the planner predicts them */
        kvs_plan_model pm;
        memset(&pm, 0, sizeof pm);
        CHECK(kvs_plan_from_gguf(MODEL, &pm) == KVS_OK);
        CHECKF(info.repacked_bytes > 0 && (double)info.repacked_bytes == pm.repack_bytes,
               "repacked %llu bytes, the planner predicts %.0f", (unsigned long long)info.repacked_bytes,
               pm.repack_bytes);
        kvs_plan_model_free(&pm);
    }

    kvs_session *s = new_session(m, 512, 512);
    float *logits = malloc(sizeof(float) * (size_t)info.n_vocab);
    const kvs_json *prompts = kvs_json_get(ref, "prompts");
    for (size_t pi = 0; s && prompts && pi < prompts->n; pi++) {
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
        const kvs_json *fp = kvs_json_at(kvs_json_get(f64, "prompts"), pi);
        const kvs_json *tops[2] = {kvs_json_get(p, "top_logits"), kvs_json_get(fp, "f64_top10")};
        float maxd[2] = {0, 0}, rms[2] = {0, 0};
        for (int r = 0; r < 2; r++) {
            for (size_t i = 0; i < tops[r]->n; i++) {
                const kvs_json *e = kvs_json_at(tops[r], i);
                float d = fabsf(logits[(int)kvs_json_at(e, 0)->num] - (float)kvs_json_at(e, 1)->num);
                maxd[r] = fmaxf(maxd[r], d);
                rms[r] += d * d;
            }
            rms[r] = sqrtf(rms[r] / (float)tops[r]->n);
            CHECKF(maxd[r] < LOGIT_TOL && rms[r] < LOGIT_RMS_TOL, "prompt %zu: top-10 logits vs %s: max %.4f rms %.4f",
                   pi, r ? "f64" : "llama.cpp", maxd[r], rms[r]);
        }

        const kvs_json *g = kvs_json_get(p, "greedy"), *tf = kvs_json_get(fp, "teacher_forced");
        size_t match = 0;
        bool diverged = false;
        for (size_t i = 0; i < g->n; i++) {
            kvs_token best = 0;
            for (int32_t v = 1; v < info.n_vocab; v++) if (logits[v] > logits[best]) best = v;
            if (!diverged && best == (kvs_token)kvs_json_at(g, i)->num) match++;
            else diverged = true;
            CHECK(kvs_decode(s, &best, 1, false, logits) == KVS_OK);
        }
        double gap = 1e9, lgap = 0;
        if (match < g->n) {
            kvs_json_get_num(kvs_json_at(tf, match), "gap", &gap);
            lgap = kvs_json_at(kvs_json_get(p, "gaps"), match)->num;
        }
        printf("prompt %zu %-24.24s: top-10 |dlogit| vs llama.cpp max %.3f rms %.3f, vs f64 max %.3f rms %.3f; "
               "greedy %zu/%zu identical%s\n", pi, text, maxd[0], rms[0], maxd[1], rms[1], match, g->n,
               match < g->n ? " (then a near-tie)" : "");
        if (match < g->n)
            printf("    divergence at step %zu: exact f64 top-2 gap %.3f (llama.cpp's own gap %.3f)\n", match, gap, lgap);
        CHECKF(match == g->n || gap < NEAR_TIE,
               "prompt %zu: greedy diverges at step %zu where the f64 top-2 gap is %.3f (not a near-tie)", pi, match,
               gap);
    }
    kvs_session_free(s);

    const kvs_json *rp = kvs_json_get(ref, "ppl");
    size_t tl = 0;
    char *text = rp ? test_read_file(kvs_json_get_str(rp, "file"), &tl) : NULL;
    CHECK(text != NULL);
    kvs_token *t = text ? malloc(sizeof *t * (tl + 16)) : NULL;
    size_t n = 0;
    if (t) {
        CHECK(kvs_tokenize(m, text, tl, -1, false, t, tl + 16, &n) == KVS_OK);
        double want_n = 0;
        kvs_json_get_num(rp, "n_tokens", &want_n);
        CHECKF(n == (size_t)want_n, "GPL-3: %zu tokens vs llama.cpp %.0f", n, want_n);
    }
    if (n > 700) check_chunking(m, t, 700, info.n_vocab);
    const char *slow = getenv("KVS_SKIP_SLOW");
    if (slow && *slow == '1') {
        printf("skip perplexity checks (KVS_SKIP_SLOW=1)\n");
    } else if (t) {
        double want = 0;
        kvs_json_get_num(rp, "ppl", &want);
        check_ppl(m, t, n, 512, want);
        const kvs_json *more = kvs_json_get(ref, "ppl_more");
        for (size_t i = 0; more && i < more->n; i++) {
            double c = 0;
            kvs_json_get_num(kvs_json_at(more, i), "ctx", &c);
            kvs_json_get_num(kvs_json_at(more, i), "ppl", &want);
            check_ppl(m, t, n, (uint32_t)c, want);
        }
    }
    free(t);
    free(text);
    free(logits);
    kvs_model_free(m);
    kvs_json_free(ref);
    kvs_json_free(f64);
    free(jtext);
    free(ftext);
    return test_finish("gemma3");
}
