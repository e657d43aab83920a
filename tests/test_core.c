/* Core utilities: f16/bf16 conversions (exhaustive round trip), thread pool
 * coverage, allocation hook, error messages that wrap the previous one. */
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/error.h"
#include "core/f16.h"
#include "core/threads.h"
#include "ops/ops.h"
#include "test_util.h"

typedef struct { _Atomic int64_t sum; int64_t n; } sum_ctx;
static void sum_task(void *vctx, int ith, int nth) {
    sum_ctx *c = vctx;
    int64_t lo, hi, s = 0;
    kvs_split(c->n, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) s += i;
    atomic_fetch_add(&c->sum, s);
}

/* kvs_fail with kvs_last_error() as an argument: the message buffer is
 * formatted from itself (src/retrofit/load.c wraps the rules error so). */
static void test_error_wrap(void) {
    kvs_fail(KVS_ERR_FORMAT, "bad rule '%s'", "x=1");
    CHECK(kvs_fail(KVS_ERR_INVALID_ARG, "model: %s: %s", "kvslim.kv.rules", kvs_last_error()) == KVS_ERR_INVALID_ARG);
    CHECKF(!strcmp(kvs_last_error(), "model: kvslim.kv.rules: bad rule 'x=1'"), "got '%s'", kvs_last_error());
    kvs_fail(KVS_ERR_FORMAT, "%s (outer)", kvs_last_error());
    CHECKF(!strcmp(kvs_last_error(), "model: kvslim.kv.rules: bad rule 'x=1' (outer)"), "got '%s'", kvs_last_error());
    /* a message at the length limit, wrapped: cut, still terminated */
    char longmsg[KVS_ERROR_MAX + 64];
    memset(longmsg, 'a', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    kvs_fail(KVS_ERR_IO, "%s", longmsg);
    CHECK(strlen(kvs_last_error()) == KVS_ERROR_MAX - 1);
    kvs_fail(KVS_ERR_IO, "w: %s", kvs_last_error());
    const char *e = kvs_last_error();
    CHECK(strlen(e) == KVS_ERROR_MAX - 1 && !strncmp(e, "w: aaa", 6) && e[KVS_ERROR_MAX - 2] == 'a');
    kvs_clear_error();
    CHECK(kvs_last_error()[0] == '\0');
}

/* A task failing on a worker thread: its status and message come back from
 * kvs_pool_run / kvs_pool_for on the caller (messages are thread-local). */
typedef struct fail_ctx { int fail_on; _Atomic int ran; } fail_ctx;
static void fail_task(void *vctx, int ith, int nth) {
    fail_ctx *c = vctx;
    atomic_fetch_add(&c->ran, 1);
    if (c->fail_on == -1 || ith == c->fail_on) kvs_task_fail(kvs_fail(KVS_ERR_BUDGET, "task %d of %d failed", ith, nth));
}
static void fail_range(void *vctx, int64_t lo, int64_t hi) {
    (void)vctx;
    if (hi > lo) kvs_task_fail(kvs_fail(KVS_ERR_NOMEM, "range [%lld, %lld) failed", (long long)lo, (long long)hi));
}
static void ok_range(void *vctx, int64_t lo, int64_t hi) { (void)vctx; (void)lo; (void)hi; kvs_task_fail(KVS_OK); }

static void test_pool_errors(void) {
    for (int nt = 1; nt <= 4; nt++) {
        kvs_pool *p = NULL;
        CHECK(kvs_pool_new(nt, &p) == KVS_OK);
        if (!p) continue;
        for (int rep = 0; rep < 20; rep++) {
            fail_ctx c = {.fail_on = nt - 1}; /* the last worker: another thread when nt > 1 */
            kvs_clear_error();
            CHECK(kvs_pool_run(p, fail_task, &c) == KVS_ERR_BUDGET);
            char want[64];
            snprintf(want, sizeof want, "task %d of %d failed", nt - 1, nt);
            CHECKF(!strcmp(kvs_last_error(), want), "nt %d: '%s'", nt, kvs_last_error());
            CHECK(atomic_load(&c.ran) == nt);
            /* every task fails: one whole message wins */
            fail_ctx all = {.fail_on = -1};
            CHECK(kvs_pool_run(p, fail_task, &all) == KVS_ERR_BUDGET);
            CHECK(!strncmp(kvs_last_error(), "task ", 5) && strstr(kvs_last_error(), " failed"));
        }
        /* the next run starts clean */
        fail_ctx none = {.fail_on = 99};
        CHECK(kvs_pool_run(p, fail_task, &none) == KVS_OK);
        /* parallel and inline loops */
        CHECK(kvs_pool_for(p, 100, 1, fail_range, NULL) == KVS_ERR_NOMEM);
        CHECK(strstr(kvs_last_error(), "failed") != NULL);
        CHECK(kvs_pool_for(p, 3, 10, fail_range, NULL) == KVS_ERR_NOMEM);
        CHECKF(!strcmp(kvs_last_error(), "range [0, 3) failed"), "'%s'", kvs_last_error());
        CHECK(kvs_pool_for(p, 100, 1, ok_range, NULL) == KVS_OK);
        CHECK(kvs_pool_for(p, 0, 1, fail_range, NULL) == KVS_OK);
        kvs_pool_free(p);
    }
    CHECK(kvs_pool_run(NULL, fail_task, &(fail_ctx){.fail_on = 0}) == KVS_ERR_BUDGET);
    CHECK(!strcmp(kvs_last_error(), "task 0 of 1 failed"));
    /* outside any run, kvs_task_fail leaves the caller's message alone */
    kvs_fail(KVS_ERR_IO, "kept");
    kvs_task_fail(KVS_ERR_IO);
    CHECK(!strcmp(kvs_last_error(), "kept"));
}

/* The AVX2 gated activations against their libm twins over gates from -60
 * to 60 (and odd lengths, for the tail): each output within 4e-6 of the
 * larger of |ref| and |up| (silu / gelu are near 0 for negative gates, where
 * only an absolute bound makes sense). */
static void test_activations(void) {
    if (!kvs_cpu()->avx2) { printf("skip activations: no AVX2\n"); return; }
    enum { N = 4099 };
    float *g = malloc(sizeof(float) * N), *u = malloc(sizeof(float) * N), *a = malloc(sizeof(float) * N),
          *r = malloc(sizeof(float) * N);
    CHECK(g && u && a && r);
    if (!g || !u || !a || !r) return;
    uint64_t rng = 99;
    for (int i = 0; i < N; i++) {
        g[i] = i < 2400 ? -60.0f + 120.0f * (float)i / 2400.0f : 4.0f * test_rng_normal(&rng);
        u[i] = test_rng_normal(&rng);
    }
    for (int which = 0; which < 2; which++)
        for (int n = N - 7; n <= N; n += 7) { /* a tail of 3 and of 2 */
            if (which) { kvs_geglu_avx2(a, g, u, n); kvs_geglu_ref(r, g, u, n); }
            else { kvs_swiglu_avx2(a, g, u, n); kvs_swiglu_ref(r, g, u, n); }
            int bad = 0;
            double worst = 0;
            for (int i = 0; i < n; i++) {
                const double scale = fmax(fabs((double)r[i]), fabs((double)u[i])) + 1e-30;
                const double e = fabs((double)a[i] - r[i]) / scale;
                if (e > worst) worst = e;
                bad += !(e <= 4e-6);
            }
            CHECKF(bad == 0, "%s avx2 vs ref, n=%d: %d outputs off (worst %.2e)", which ? "geglu" : "swiglu", n, bad,
                   worst);
            if (n == N) printf("  %s avx2 vs libm: worst %.2e of max(|ref|, |up|)\n", which ? "geglu" : "swiglu", worst);
        }
    /* in place, as the FFN stage calls it */
    memcpy(a, g, sizeof(float) * N);
    kvs_geglu_avx2(a, a, u, N);
    kvs_geglu_avx2(r, g, u, N);
    CHECK(!memcmp(a, r, sizeof(float) * N));
    free(g); free(u); free(a); free(r);
}

int main(void) {
    test_error_wrap();
    test_activations();
    test_pool_errors();
    /* every finite half round-trips exactly through f32 */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t x = (uint16_t)h;
        float f = kvs_f16_to_f32(x);
        uint16_t y = kvs_f32_to_f16(f);
        if (((x >> 10) & 0x1f) == 31 && (x & 0x3ff)) { if (!isnan(f)) bad++; continue; }
        if (x != y) bad++;
    }
    CHECKF(bad == 0, "%d halves did not round-trip", bad);
    CHECK(kvs_f32_to_f16(65520.0f) == 0x7c00);     /* rounds to inf */
    CHECK(kvs_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(kvs_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie -> even */
    CHECK(kvs_f32_to_f16(5.9604645e-08f) == 0x0001);     /* smallest subnormal */
    CHECK(kvs_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(kvs_bf16_to_f32(kvs_f32_to_bf16(1.5f)) == 1.5f);
    CHECK(kvs_f32_to_bf16(1.00390625f) == 0x3f80);        /* tie -> even */
    CHECK(isnan(kvs_bf16_to_f32(kvs_f32_to_bf16(NAN))));

    for (int nt = 1; nt <= 4; nt++) {
        kvs_pool *p = NULL;
        CHECK(kvs_pool_new(nt, &p) == KVS_OK);
        for (int rep = 0; rep < 100; rep++) {
            sum_ctx c = {.n = 1000 + rep};
            kvs_pool_run(p, sum_task, &c);
            CHECK(atomic_load(&c.sum) == (c.n * (c.n - 1)) / 2);
        }
        kvs_pool_free(p);
    }
    kvs_pool_free(NULL);

    kvs_alloc_fail_after(1);
    void *a = kvs_malloc(16), *b = kvs_malloc(16);
    kvs_alloc_fail_after(-1);
    CHECK(a != NULL && b == NULL);
    kvs_free(a);
    CHECK(kvs_calloc(SIZE_MAX / 2, 4) == NULL);
    return test_finish("core");
}
