/* Attention kernel vs the float64 reference (attn/attn.h) on fresh random
 * inputs at awkward shapes: 1 token, tile and query-block edges, 1/3/9
 * heads over 1/3 KV heads, head sizes 64/128/256, f32 and f16 caches,
 * sliding windows, decode split across 1-3 threads, scalar and SIMD
 * primitives. Tolerance: |fast - ref| <= 2e-5 + 2e-4 |ref| (f32 accumulation
 * and a polynomial exp against float64; the stored rows are identical). */
#include <string.h>

#include "attn/attn.h"
#include "attn/attn_simd.h"
#include "core/alloc.h"
#include "test_util.h"

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static int run_case(int n_head, int n_kv_heads, int dk, kvs_dtype type, int n_past, int n_q,
                    uint32_t window, int threads) {
    kvs_kv_scheme sc = kvs_kv_scheme_full((uint32_t)n_kv_heads, (uint32_t)dk, (uint32_t)dk, type);
    int cap = n_past + n_q;
    kvs_kv_cache *kv = NULL;
    CHECK(kvs_kv_cache_new(&sc, 1, (uint32_t)cap, &kv) == KVS_OK);
    if (!kv) return 1;
    size_t kvn = (size_t)cap * n_kv_heads * dk;
    float *k = malloc(kvn * sizeof *k), *v = malloc(kvn * sizeof *v);
    for (size_t i = 0; i < kvn; i++) { k[i] = test_rng_normal(&g_rng); v[i] = test_rng_normal(&g_rng); }
    CHECK(kvs_kv_cache_store(kv, 0, 0, cap, k, v) == KVS_OK);
    size_t qn = (size_t)n_q * n_head * dk;
    float *q = malloc(qn * sizeof *q), *o1 = malloc(qn * sizeof *q), *o2 = malloc(qn * sizeof *q);
    for (size_t i = 0; i < qn; i++) q[i] = 2.0f * test_rng_normal(&g_rng);
    int32_t *pos = malloc(sizeof *pos * (size_t)n_q);
    for (int i = 0; i < n_q; i++) pos[i] = n_past + i;
    kvs_attn_args a = {.kv = &kv->layers[0], .q = q, .n_q = n_q, .n_head = n_head, .q_pos = pos,
                       .n_kv = (uint32_t)cap, .window = window, .scale = 1.0f / sqrtf((float)dk), .out = o1};
    kvs_attn_ref(&a);
    a.out = o2;
    kvs_pool *pool = NULL;
    kvs_attn *at = NULL;
    CHECK(kvs_pool_new(threads, &pool) == KVS_OK);
    CHECK(kvs_attn_new(threads, &at) == KVS_OK);
    CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < qn; i++) {
        double err = fabs((double)o1[i] - o2[i]), lim = 2e-5 + 2e-4 * fabs(o1[i]);
        if (!(err <= lim)) bad++;
        if (err > worst) worst = err;
    }
    CHECKF(bad == 0, "heads %d/%d dk %d %s past %d n_q %d window %u threads %d: %d bad, worst %.3g",
           n_head, n_kv_heads, dk, type == KVS_TYPE_F16 ? "f16" : "f32", n_past, n_q, window, threads,
           bad, worst);
    kvs_attn_free(at);
    kvs_pool_free(pool);
    kvs_kv_cache_free(kv);
    free(k); free(v); free(q); free(o1); free(o2); free(pos);
    return bad;
}

int main(void) {
    /* primitives: SIMD exp_sum against expf */
    const kvs_attn_vec *vs = kvs_attn_vec_scalar(), *vf = kvs_attn_vec_get();
    float x[37], y1[37], y2[37];
    for (int i = 0; i < 37; i++) x[i] = -90.0f + 2.5f * (float)i;
    float s1 = vs->exp_sum(y1, x, 0.0f, 37), s2 = vf->exp_sum(y2, x, 0.0f, 37);
    for (int i = 0; i < 37; i++) CHECKF(fabsf(y1[i] - y2[i]) <= 3e-7f * y1[i] + 1e-30f, "exp(%g)", x[i]);
    CHECK(fabsf(s1 - s2) <= 1e-6f * s1);
    float ninf[3] = {-INFINITY, 0.0f, -INFINITY};
    CHECK(vf->exp_sum(y2, ninf, 0.0f, 3) == 1.0f && y2[0] == 0.0f);

    static const int heads[][2] = {{1, 1}, {3, 1}, {9, 3}, {4, 4}};
    static const int dims[] = {64, 128, 256};
    static const int pasts[] = {0, 1, 63, 64, 65, 300};
    for (size_t h = 0; h < 4; h++)
        for (size_t d = 0; d < 3; d++)
            for (size_t p = 0; p < 6; p++)
                for (int ty = 0; ty < 2; ty++) {
                    kvs_dtype t = ty ? KVS_TYPE_F16 : KVS_TYPE_F32;
                    run_case(heads[h][0], heads[h][1], dims[d], t, pasts[p], 1, 0, 1 + (int)(p % 3));
                    if (d == 0) {
                        run_case(heads[h][0], heads[h][1], 64, t, pasts[p], 9, 0, 2);  /* query block edge */
                        run_case(heads[h][0], heads[h][1], 64, t, pasts[p], 17, 16, 3); /* window */
                    }
                }
    /* long decode split into segments, window smaller than a tile, window larger than context */
    run_case(9, 3, 64, KVS_TYPE_F16, 4000, 1, 0, 2);
    run_case(9, 3, 64, KVS_TYPE_F16, 4000, 1, 5, 3);
    run_case(9, 3, 64, KVS_TYPE_F16, 700, 1, 1000, 2);
    run_case(9, 3, 64, KVS_TYPE_F16, 100, 130, 0, 2);
    return test_finish("attn");
}
