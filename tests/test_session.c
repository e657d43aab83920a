/* Sessions, allocation failure and sampling:
 *   - the planner's prediction (kvs_plan_from_gguf + kvs_plan_kv_bytes) equals
 *     the engine's scheme bytes for several contexts, KV types, windows and
 *     page sizes, and the pages really allocated after decoding n tokens
 *     equal that prediction for n;
 *   - a KV byte budget stops decoding with KVS_ERR_BUDGET, changing nothing;
 *   - failing the Nth allocation anywhere in model load, session creation and
 *     a decode returns KVS_ERR_NOMEM cleanly (ASan/LSan check for crashes and
 *     leaks in CI) and the next attempt succeeds;
 *   - samplers: greedy = argmax, top-k 1 = greedy, seeded reproducibility,
 *     top-p / min-p / temperature filters, repetition penalty, bad params. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "kvslim.h"
#include "plan/plan.h"
#include "test_util.h"

static void test_plan_matches_allocator(const char *path) {
    kvs_model *m = NULL;
    CHECK(kvs_model_load(path, NULL, &m) == KVS_OK);
    if (!m) return;
    kvs_plan_model pm;
    memset(&pm, 0, sizeof pm);
    CHECK(kvs_plan_from_gguf(path, &pm) == KVS_OK);
    static const struct { kvs_kv_type t; const char *name; uint32_t page, window, sinks; } cfg[] = {
        {KVS_KV_F16, "f16", 256, 0, 0}, {KVS_KV_F32, "f32", 16, 0, 0}, {KVS_KV_Q8_0, "q8_0", 64, 0, 0},
        {KVS_KV_Q4_0, "q4_0", 256, 0, 0}, {KVS_KV_F16, "f16", 16, 40, 4}, {KVS_KV_BF16, "bf16", 64, 100, 0},
        {KVS_KV_TQ3, "tq3", 64, 0, 0}, {KVS_KV_TQ2_5, "tq2.5", 16, 40, 4}, {KVS_KV_TQ4, "tq4", 256, 100, 0},
        {KVS_KV_TQ2J, "tq2j", 64, 0, 0}, {KVS_KV_TQ3J, "tq3j", 16, 40, 4},
    };
    static const uint32_t ctxs[] = {1, 7, 300, 8192};
    kvs_token toks[300];
    for (int i = 0; i < 300; i++) toks[i] = (kvs_token)(100 + 37 * i % 40000);
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        kvs_plan_model pk;
        memset(&pk, 0, sizeof pk);
        CHECK(kvs_plan_model_copy(&pk, &pm) == KVS_OK);
        CHECK(kvs_plan_apply_kv_type(&pk, cfg[c].name) == KVS_OK);
        char wi[64];
        if (cfg[c].window) snprintf(wi, sizeof wi, "window=%u+%u,page=%u", cfg[c].window, cfg[c].sinks, cfg[c].page);
        else snprintf(wi, sizeof wi, "page=%u", cfg[c].page);
        CHECK(kvs_plan_apply_whatif(&pk, wi) == KVS_OK);
        for (size_t i = 0; i < sizeof ctxs / sizeof *ctxs; i++) {
            kvs_session_params sp = kvs_session_params_default();
            sp.n_ctx = ctxs[i];
            sp.n_threads = 2;
            sp.kv_type = cfg[c].t;
            sp.kv_page = cfg[c].page;
            sp.kv_window = cfg[c].window;
            sp.kv_sinks = cfg[c].sinks;
            kvs_session *s = NULL;
            CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
            if (!s) continue;
            uint64_t planned = kvs_plan_kv_bytes(&pk, ctxs[i]), scheme = kvs_session_kv_bytes_at(s, ctxs[i]);
            CHECKF(planned == scheme, "%s: plan %llu bytes, engine scheme %llu at %u tokens", wi,
                   (unsigned long long)planned, (unsigned long long)scheme, ctxs[i]);
            CHECK((double)kvs_session_kv_bytes_per_token(s) == kvs_plan_kv_bytes_per_token(&pk));
            CHECK(kvs_session_kv_bytes(s) == 0); /* pages come on demand */
            uint32_t n = ctxs[i] < 300 ? ctxs[i] : 300;
            CHECK(kvs_decode(s, toks, n, false, NULL) == KVS_OK);
            CHECKF(kvs_session_kv_bytes(s) == kvs_plan_kv_bytes(&pk, n), "%s %s ctx %u: %llu bytes allocated after %u tokens, plan %llu",
                   cfg[c].name, wi, ctxs[i], (unsigned long long)kvs_session_kv_bytes(s), n,
                   (unsigned long long)kvs_plan_kv_bytes(&pk, n));
            kvs_session_free(s);
        }
        kvs_plan_model_free(&pk);
    }
    kvs_plan_model_free(&pm);

    /* per-channel keys: planned bytes = allocated bytes, residual group included */
    {
        kvs_plan_model pk;
        memset(&pk, 0, sizeof pk);
        CHECK(kvs_plan_from_gguf(path, &pk) == KVS_OK);
        CHECK(kvs_plan_apply_whatif(&pk, "q4k2v,page=64") == KVS_OK);
        static const uint32_t ns[] = {1, 31, 32, 33, 64, 65, 300};
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
            kvs_session_params sp = kvs_session_params_default();
            sp.n_ctx = 512;
            sp.kv_page = 64;
            sp.kv_layers = "q4k2v";
            kvs_session *s = NULL;
            CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
            if (!s) continue;
            CHECK(kvs_session_kv_bytes_at(s, 512) == kvs_plan_kv_bytes(&pk, 512));
            for (uint32_t done = 0; done < ns[i];) { /* uneven chunks */
                uint32_t step = ns[i] - done < 7 ? ns[i] - done : 7;
                CHECK(kvs_decode(s, toks + done, step, false, NULL) == KVS_OK);
                done += step;
            }
            CHECKF(kvs_session_kv_bytes(s) == kvs_plan_kv_bytes(&pk, ns[i]), "q4k2v: %llu allocated after %u tokens, plan %llu",
                   (unsigned long long)kvs_session_kv_bytes(s), ns[i], (unsigned long long)kvs_plan_kv_bytes(&pk, ns[i]));
            kvs_session_free(s);
        }
        kvs_plan_model_free(&pk);
    }
    /* budget: 3 pages of 16 tokens per layer fit, the 4th does not */
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 256;
    sp.kv_page = 16;
    sp.kv_budget = 3ull * 16 * 23040;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    if (s) {
        CHECK(kvs_decode(s, toks, 40, false, NULL) == KVS_OK);
        CHECK(kvs_decode(s, toks, 8, false, NULL) == KVS_OK);
        CHECK(kvs_decode(s, toks, 1, false, NULL) == KVS_ERR_BUDGET);
        CHECK(strstr(kvs_last_error(), "budget") != NULL);
        CHECK(kvs_session_n_past(s) == 48 && kvs_session_kv_bytes(s) == sp.kv_budget);
        kvs_session_reset(s);
        CHECK(kvs_session_kv_bytes(s) == 0);
        CHECK(kvs_decode(s, toks, 48, false, NULL) == KVS_OK);
        kvs_session_free(s);
    }
    /* bad scheme rules are refused with the rule named */
    const char *bad[] = {"5:shared=9", "0-40:f16", "window=0", "q3_0", "3:sinks=4", "1-:f16"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sp = kvs_session_params_default();
        sp.n_ctx = 64;
        sp.kv_layers = bad[i];
        s = NULL;
        CHECKF(kvs_session_new(m, &sp, &s) == KVS_ERR_INVALID_ARG && !s, "rule '%s' accepted", bad[i]);
    }
    sp = kvs_session_params_default();
    sp.n_ctx = 64;
    sp.kv_layers = "10-29:shared=9;0-9:q8_0";
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    if (s) {
        CHECK(kvs_session_kv_bytes_per_token(s) == 10 * 2 * 3 * 68); /* q8_0: 64 elements in 68 bytes */
        char d[128];
        kvs_session_kv_describe(s, 12, d, sizeof d);
        CHECK(strstr(d, "9") != NULL);
        kvs_session_free(s);
    }
    kvs_model_free(m);
}

static void test_alloc_failures(const char *path) {
    int nomem = 0, ok = 0;
    for (int64_t n = 0; n < 100000; n++) {
        kvs_alloc_fail_after(n);
        kvs_model *m = NULL;
        kvs_session *s = NULL;
        kvs_status st = kvs_model_load(path, NULL, &m);
        if (st == KVS_OK) {
            kvs_session_params sp = kvs_session_params_default();
            sp.n_ctx = 32;
            sp.n_threads = 2;
            st = kvs_session_new(m, &sp, &s);
        }
        if (st == KVS_OK) {
            kvs_token t[3] = {1, 2, 3};
            st = kvs_decode(s, t, 3, false, NULL);
        }
        kvs_alloc_fail_after(-1);
        kvs_session_free(s);
        kvs_model_free(m);
        if (st == KVS_OK) { ok = 1; break; }
        if (st != KVS_ERR_NOMEM) { CHECKF(0, "allocation %lld failing gave %s: %s", (long long)n, kvs_status_name(st), kvs_last_error()); break; }
        nomem++;
    }
    printf("allocation failure injected at each of %d allocations: all KVS_ERR_NOMEM, then success\n", nomem);
    CHECK(ok && nomem > 10);
}

/* An allocation failing inside a worker thread (eviction scores each KV
 * head on the pool, 2 threads) fails the decode with that thread's message;
 * it used to be dropped (the scores silently left stale). Whenever the
 * decode attempted more allocations than were allowed, it must have failed.
 * The first 48 allocations of the step cover the scoring of several layers. */
static void test_worker_alloc_failures(const char *path) {
    kvs_model *m = NULL;
    CHECK(kvs_model_load(path, NULL, &m) == KVS_OK);
    if (!m) return;
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 32;
    sp.n_threads = 2;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    kvs_token t[8];
    for (int i = 0; i < 8; i++) t[i] = 100 + 7 * i;
    int failed = 0, scoring = 0;
    for (int64_t n = 0; s && n <= 48; n++) {
        kvs_session_reset(s);
        CHECK(kvs_session_set_eviction(s, KVS_EVICT_H2O, 4, 2, 1) == KVS_OK);
        kvs_clear_error();
        uint64_t c0 = kvs_alloc_count();
        kvs_alloc_fail_after(n < 48 ? n : -1); /* the last pass: no limit */
        kvs_status st = kvs_decode(s, t, 8, false, NULL);
        kvs_alloc_fail_after(-1);
        bool hit = n < 48 && kvs_alloc_count() - c0 > (uint64_t)n; /* some allocation was refused */
        if (hit) {
            CHECKF(st == KVS_ERR_NOMEM && kvs_last_error()[0], "allocation %lld refused: %s '%s'", (long long)n,
                   kvs_status_name(st), kvs_last_error());
            failed++;
            if (strstr(kvs_last_error(), "eviction")) scoring++;
        } else {
            CHECKF(st == KVS_OK, "no allocation refused but %s: %s", kvs_status_name(st), kvs_last_error());
        }
    }
    printf("eviction decode, allocation n of the step refused: %d failures, each KVS_ERR_NOMEM with a message "
           "(%d in the scoring)\n", failed, scoring);
    CHECK(failed > 0 && scoring > 0);
    kvs_session_free(s);
    kvs_model_free(m);
}

static void test_sampler(void) {
    enum { V = 1000 };
    float base[V], lg[V];
    uint64_t rng = 99;
    for (int i = 0; i < V; i++) base[i] = 3.0f * test_rng_normal(&rng);
    base[417] = 20.0f;
    kvs_sampler_params p = kvs_sampler_params_default();
    kvs_sampler *s = NULL;
    p.temperature = 0;
    CHECK(kvs_sampler_new(&p, V, &s) == KVS_OK);
    memcpy(lg, base, sizeof lg);
    CHECK(kvs_sampler_sample(s, lg) == 417);
    kvs_sampler_free(s);

    p = kvs_sampler_params_default();
    p.top_k = 1;
    p.temperature = 5.0f;
    CHECK(kvs_sampler_new(&p, V, &s) == KVS_OK);
    for (int r = 0; r < 20; r++) { memcpy(lg, base, sizeof lg); CHECK(kvs_sampler_sample(s, lg) == 417); }
    kvs_sampler_free(s);

    /* seeded reproducibility, and every draw inside the top-k set */
    base[417] = 2.0f;
    p = kvs_sampler_params_default();
    p.top_k = 10; p.top_p = 1.0f; p.min_p = 0.0f; p.temperature = 1.5f; p.seed = 7;
    kvs_token a[50], b[50];
    for (int pass = 0; pass < 2; pass++) {
        CHECK(kvs_sampler_new(&p, V, &s) == KVS_OK);
        for (int r = 0; r < 50; r++) { memcpy(lg, base, sizeof lg); (pass ? b : a)[r] = kvs_sampler_sample(s, lg); }
        kvs_sampler_free(s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    float kth = 0; /* 10th largest */
    {
        float tmp[V];
        memcpy(tmp, base, sizeof tmp);
        for (int k = 0; k < 10; k++) {
            int bi = 0;
            for (int i = 1; i < V; i++) if (tmp[i] > tmp[bi]) bi = i;
            kth = tmp[bi];
            tmp[bi] = -INFINITY;
        }
    }
    int distinct = 0;
    for (int r = 0; r < 50; r++) {
        CHECK(base[a[r]] >= kth);
        bool seen = false;
        for (int q = 0; q < r; q++) if (a[q] == a[r]) seen = true;
        distinct += !seen;
    }
    CHECK(distinct > 1);

    /* min-p: only tokens within a factor 0.5 of the best survive */
    float two[V];
    for (int i = 0; i < V; i++) two[i] = -10.0f;
    two[5] = 1.0f; two[6] = 1.0f - 0.5f; two[7] = 1.0f - 3.0f;
    p = kvs_sampler_params_default();
    p.top_k = 0; p.top_p = 1.0f; p.min_p = 0.5f; p.temperature = 1.0f;
    CHECK(kvs_sampler_new(&p, V, &s) == KVS_OK);
    int count[3] = {0, 0, 0};
    for (int r = 0; r < 400; r++) {
        memcpy(lg, two, sizeof lg);
        kvs_token t = kvs_sampler_sample(s, lg);
        CHECK(t == 5 || t == 6);
        if (t >= 5 && t <= 7) count[t - 5]++;
    }
    CHECK(count[0] > count[1] && count[1] > 50); /* p(5)/p(6) = e^0.5 */
    kvs_sampler_free(s);

    /* top-p 0.5 on two equal leaders and a tail keeps a leader only */
    for (int i = 0; i < V; i++) two[i] = -10.0f;
    two[1] = 5.0f; two[2] = 4.0f;
    p.min_p = 0.0f; p.top_p = 0.5f;
    CHECK(kvs_sampler_new(&p, V, &s) == KVS_OK);
    for (int r = 0; r < 50; r++) { memcpy(lg, two, sizeof lg); CHECK(kvs_sampler_sample(s, lg) == 1); }
    kvs_sampler_free(s);

    /* repetition penalty pushes a repeated leader below the runner-up */
    p = kvs_sampler_params_default();
    p.temperature = 0; p.repeat_penalty = 2.0f; p.repeat_last_n = 4;
    CHECK(kvs_sampler_new(&p, V, &s) == KVS_OK);
    kvs_sampler_accept(s, 1);
    memcpy(lg, two, sizeof lg);
    CHECK(kvs_sampler_sample(s, lg) == 2);
    for (int r = 0; r < 4; r++) kvs_sampler_accept(s, 900); /* token 1 leaves the window */
    memcpy(lg, two, sizeof lg);
    CHECK(kvs_sampler_sample(s, lg) == 1);
    kvs_sampler_free(s);

    p = kvs_sampler_params_default();
    p.top_p = 0.0f;
    CHECK(kvs_sampler_new(&p, V, &s) == KVS_ERR_INVALID_ARG && s == NULL);
    /* every bad parameter is refused under its own name (a NaN temperature
     * used to be blamed on top_p) */
    static const struct { int which; float v; const char *name; } bad[] = {
        {0, NAN, "temperature"}, {0, INFINITY, "temperature"}, {0, -INFINITY, "temperature"},
        {1, NAN, "top_p"}, {1, INFINITY, "top_p"}, {1, -0.5f, "top_p"},
        {2, NAN, "min_p"}, {2, 1.5f, "min_p"}, {2, -INFINITY, "min_p"},
        {3, NAN, "repeat_penalty"}, {3, 0.0f, "repeat_penalty"}, {3, INFINITY, "repeat_penalty"},
        {4, -1.0f, "repeat_last_n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = kvs_sampler_params_default();
        switch (bad[i].which) {
        case 0: p.temperature = bad[i].v; break;
        case 1: p.top_p = bad[i].v; break;
        case 2: p.min_p = bad[i].v; break;
        case 3: p.repeat_penalty = bad[i].v; break;
        default: p.repeat_last_n = (int32_t)bad[i].v; break;
        }
        s = NULL;
        kvs_status st = kvs_sampler_new(&p, V, &s);
        const char *e = kvs_last_error();
        CHECKF(st == KVS_ERR_INVALID_ARG && !s && strstr(e, bad[i].name) && (bad[i].which == 1 || !strstr(e, "top_p")),
               "%s = %g: %s '%s'", bad[i].name, (double)bad[i].v, kvs_status_name(st), e);
        kvs_sampler_free(s);
    }
    /* documented "off" values stay accepted */
    p = kvs_sampler_params_default();
    p.temperature = -1.0f; p.top_p = 2.0f; p.min_p = -1.0f; p.repeat_last_n = 0;
    CHECK(kvs_sampler_new(&p, V, &s) == KVS_OK);
    kvs_sampler_free(s);
    CHECK(kvs_sampler_new(NULL, 0, &s) == KVS_ERR_INVALID_ARG);
    kvs_sampler_free(NULL);
}

int main(void) {
    test_sampler();
    const char *path = test_model_path();
    if (path) {
        test_plan_matches_allocator(path);
        test_alloc_failures(path);
        test_worker_alloc_failures(path);
    } else {
        const char *req = getenv("KVS_REQUIRE_MODELS");
        CHECK(!(req && *req == '1'));
        printf("skip session model checks: default model absent (make models)\n");
    }
    kvs_model *m = NULL;
    CHECK(kvs_model_load("/nonexistent/model.gguf", NULL, &m) == KVS_ERR_IO && m == NULL);
    CHECK(strstr(kvs_last_error(), "/nonexistent/model.gguf") != NULL);
    CHECK(kvs_model_load("tests/data/ref_smollm2.json", NULL, &m) == KVS_ERR_FORMAT && m == NULL);
    kvs_model_free(NULL);
    kvs_session_free(NULL);
    return test_finish("session");
}
