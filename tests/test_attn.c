/* Attention kernel vs the float64 reference (attn/attn.h) on fresh random
 * inputs at awkward shapes: 1 token, tile and query-block edges, 1/3/9
 * heads over 1/3 KV heads, head sizes 64/128/256, f32 and f16 caches,
 * sliding windows, decode split across 1-3 threads, scalar and SIMD
 * primitives, cache element formats f32/f16/bf16/q8_0/q4_0 and the
 * rotated-codebook tq2/tq2.5/tq3/tq3.5/tq4 (read in place by the fused
 * decode kernel: codebook lookups against the reference's decoded rows), pages of
 * 16/64/256 tokens, windowed rings with sinks; the int8 query of a decode
 * over q8_0/q4_0/tq keys (the reference rounds it the same way; tq keys of
 * head size 64 are scored with VNNI integer dots where the CPU has them,
 * exact since the tq centroids lie on an int8 grid). Tolerance: |fast - ref| <=
 * 2e-5 + 2e-4 |ref| (f32 accumulation and a polynomial exp against float64;
 * the stored rows are identical). */
#include <string.h>

#include "attn/attn.h"
#include "attn/attn_simd.h"
#include "core/alloc.h"
#include "core/tq.h"
#include "test_util.h"

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static int compare(const float *ref, const float *got, size_t n, double abs_tol, double rel_tol, const char *what,
                   int n_head, int n_kv_heads, int dk, kvs_dtype type, int n_past, int n_q, uint32_t window,
                   uint32_t sinks, uint32_t page, int threads) {
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)ref[i] - got[i]);
        if (!(err <= abs_tol + rel_tol * fabs(ref[i]))) bad++;
        if (err > worst) worst = err;
    }
    CHECKF(bad == 0, "%s: heads %d/%d dk %d %s past %d n_q %d window %u+%u page %u threads %d: %d bad, worst %.3g",
           what, n_head, n_kv_heads, dk, kvs_dtype_name(type), n_past, n_q, window, sinks, page, threads, bad, worst);
    return bad;
}

/* Keys for positions [0, n_past + n_q) in a cache laid out by (window,
 * sinks, page); queries at n_past.. read it the way the engine does
 * (windowed: the ring before the chunk plus the chunk staged). Checks the
 * fast kernel against the float64 reference on the same segments, and the
 * reference on those segments against the reference on a plain full cache
 * with the same mask (which positions the ring keeps). */
static int run_case(int n_head, int n_kv_heads, int dk, kvs_dtype type, int n_past, int n_q, uint32_t window,
                    uint32_t sinks, uint32_t page, int threads) {
    kvs_kv_scheme sc = kvs_kv_scheme_full((uint32_t)n_kv_heads, (uint32_t)dk, (uint32_t)dk, type);
    sc.page_tokens = page;
    /* tq formats need the rotation flags (kv_chunk rotates; the cache stores what it is given) */
    sc.rotate = sc.rotate_v = kvs_tq_rotated_type(type) ? 1 : 0;
    kvs_kv_scheme sw = sc;
    sw.window = window;
    sw.sinks = sinks;
    int cap = n_past + n_q;
    kvs_kv_cache *full = NULL, *kv = NULL;
    CHECK(kvs_kv_cache_new(&sc, 1, (uint32_t)cap, 0, &full) == KVS_OK);
    CHECK(kvs_kv_cache_new(&sw, 1, (uint32_t)cap, 0, &kv) == KVS_OK);
    if (!kv || !full) { kvs_kv_cache_free(kv); kvs_kv_cache_free(full); return 1; }
    size_t row = (size_t)n_kv_heads * dk, kvn = (size_t)cap * row;
    float *k = malloc(kvn * sizeof *k), *v = malloc(kvn * sizeof *v);
    for (size_t i = 0; i < kvn; i++) { k[i] = test_rng_normal(&g_rng); v[i] = test_rng_normal(&g_rng); }
    CHECK(kvs_kv_cache_reserve(full, (uint64_t)cap) == KVS_OK);
    CHECK(kvs_kv_cache_store(full, 0, 0, cap, k, v) == KVS_OK);
    CHECK(kvs_kv_cache_reserve(kv, (uint64_t)cap) == KVS_OK);
    for (int p = 0; p < n_past; p += 7) /* store in uneven steps, as decoding would */
        CHECK(kvs_kv_cache_store(kv, 0, (uint64_t)p, p + 7 <= n_past ? 7 : n_past - p, k + (size_t)p * row,
                                 v + (size_t)p * row) == KVS_OK);
    int max_segs = kvs_kv_cache_max_segments(kv, 0) + 1, max_full = kvs_kv_cache_max_segments(full, 0);
    kvs_kv_segment *segs = calloc((size_t)max_segs, sizeof *segs), *fsegs = calloc((size_t)max_full, sizeof *fsegs);
    uint8_t *staging = malloc(kvs_kv_cache_staging_bytes(kv, 0, n_q));
    int n_segs;
    if (window) {
        n_segs = kvs_kv_cache_segments(kv, 0, (uint64_t)n_past, segs, max_segs - 1);
        segs[n_segs++] = kvs_kv_cache_stage(kv, 0, staging, (uint64_t)n_past, n_q, k + (size_t)n_past * row,
                                            v + (size_t)n_past * row);
    } else {
        CHECK(kvs_kv_cache_store(kv, 0, (uint64_t)n_past, n_q, k + (size_t)n_past * row, v + (size_t)n_past * row) == KVS_OK);
        n_segs = kvs_kv_cache_segments(kv, 0, (uint64_t)cap, segs, max_segs);
    }
    int n_fsegs = kvs_kv_cache_segments(full, 0, (uint64_t)cap, fsegs, max_full);
    size_t qn = (size_t)n_q * n_head * dk;
    float *q = malloc(qn * sizeof *q), *o1 = malloc(qn * sizeof *q), *o2 = malloc(qn * sizeof *q), *o3 = malloc(qn * sizeof *q);
    for (size_t i = 0; i < qn; i++) q[i] = 2.0f * test_rng_normal(&g_rng);
    int32_t *pos = malloc(sizeof *pos * (size_t)n_q);
    for (int i = 0; i < n_q; i++) pos[i] = n_past + i;
    kvs_attn_args a = {.segs = segs, .n_segs = n_segs, .n_kv_heads = n_kv_heads, .head_dim_k = dk, .head_dim_v = dk,
                       .q = q, .n_q = n_q, .n_head = n_head, .q_pos = pos, .window = window, .sinks = sinks,
                       .scale = 1.0f / sqrtf((float)dk), .out = o1};
    kvs_attn_ref(&a);
    a.out = o2;
    kvs_pool *pool = NULL;
    kvs_attn *at = NULL;
    CHECK(kvs_pool_new(threads, &pool) == KVS_OK);
    CHECK(kvs_attn_new(threads, &at) == KVS_OK);
    CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
    int bad = compare(o1, o2, qn, 2e-5, 2e-4, "fast vs f64", n_head, n_kv_heads, dk, type, n_past, n_q, window, sinks, page, threads);
    kvs_attn_args af = a;
    af.segs = fsegs;
    af.n_segs = n_fsegs;
    af.out = o3;
    kvs_attn_ref(&af);
    bad += compare(o3, o1, qn, 1e-6, 1e-6, "ring vs full cache", n_head, n_kv_heads, dk, type, n_past, n_q, window, sinks, page, threads);
    kvs_attn_free(at);
    kvs_pool_free(pool);
    kvs_kv_cache_free(kv);
    kvs_kv_cache_free(full);
    free(k); free(v); free(q); free(o1); free(o2); free(o3); free(pos); free(segs); free(fsegs); free(staging);
    return bad;
}

/* A window that can never bind (W >= every query's position + 1) and no
 * sinks must give bit-identical output to no window at all. */
static void window_covering_is_exact(void) {
    kvs_kv_scheme sc = kvs_kv_scheme_full(3, 64, 64, KVS_TYPE_F16);
    kvs_kv_cache *kv = NULL;
    CHECK(kvs_kv_cache_new(&sc, 1, 600, 0, &kv) == KVS_OK);
    size_t n = 600 * 3 * 64;
    float *k = malloc(n * 4), *v = malloc(n * 4), *q = malloc(9 * 64 * 4 * 5), *o1 = malloc(9 * 64 * 4 * 5), *o2 = malloc(9 * 64 * 4 * 5);
    for (size_t i = 0; i < n; i++) { k[i] = test_rng_normal(&g_rng); v[i] = test_rng_normal(&g_rng); }
    for (int i = 0; i < 9 * 64 * 5; i++) q[i] = test_rng_normal(&g_rng);
    CHECK(kvs_kv_cache_reserve(kv, 600) == KVS_OK);
    CHECK(kvs_kv_cache_store(kv, 0, 0, 600, k, v) == KVS_OK);
    kvs_kv_segment segs[8];
    int ns = kvs_kv_cache_segments(kv, 0, 600, segs, 8);
    int32_t pos[5] = {595, 596, 597, 598, 599};
    kvs_attn_args a = {.segs = segs, .n_segs = ns, .n_kv_heads = 3, .head_dim_k = 64, .head_dim_v = 64, .q = q,
                       .n_q = 5, .n_head = 9, .q_pos = pos, .scale = 0.125f, .out = o1};
    kvs_pool *pool = NULL;
    kvs_attn *at = NULL;
    CHECK(kvs_pool_new(2, &pool) == KVS_OK && kvs_attn_new(2, &at) == KVS_OK);
    CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
    a.window = 600;
    a.out = o2;
    CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
    CHECK(memcmp(o1, o2, 9 * 64 * 4 * 5) == 0);
    kvs_attn_free(at); kvs_pool_free(pool); kvs_kv_cache_free(kv);
    free(k); free(v); free(q); free(o1); free(o2);
}

/* The int8 query of a decode over q8_0/q4_0 keys (attn.c): per block of 32
 * (a short last block when d is not a multiple), qi = round(q/qs) within
 * [-127, 127] with the block's largest element at +-127, qr = qi * qs
 * exactly, |qr - q| <= qs / 2; a zero block stays zero. Then the cost of the
 * rounding on real outputs: a decode (rounded query, integer kernel)
 * against the float64 reference with the f32 query (two copies of the
 * query make it a prefill, which keeps f32) stays within 2e-2. */
static void round_query_cases(void) {
    float q[256], qr[256], qs[8];
    int8_t qi[256];
    for (int c = 0; c < 30; c++) {
        int d = c % 3 == 0 ? 64 : c % 3 == 1 ? 256 : 40;
        for (int i = 0; i < d; i++) q[i] = (c % 4 ? 3.0f : 0.01f) * test_rng_normal(&g_rng);
        if (c % 5 == 0) for (int i = 0; i < 32; i++) q[i] = 0.0f; /* a zero block */
        kvs_attn_round_query(q, d, qi, qs, qr);
        int bad = 0;
        for (int b = 0; b * 32 < d; b++) {
            int amax = 0, zero = c % 5 == 0 && b == 0;
            for (int i = 32 * b; i < d && i < 32 * b + 32; i++) {
                int a = qi[i] < 0 ? -qi[i] : qi[i];
                if (a > amax) amax = a;
                bad += qr[i] != (float)qi[i] * qs[b] || !(fabsf(qr[i] - q[i]) <= 0.5f * qs[b] * (1.0f + 1e-6f) +
                                                                    2.4e-7f * fabsf(q[i])); /* + f32 rounding of qi * qs */
            }
            bad += zero ? (amax != 0 || qs[b] != 0.0f) : amax != 127;
        }
        CHECKF(bad == 0, "round_query d %d case %d: %d bad", d, c, bad);
    }

    static const kvs_dtype types[] = {KVS_TYPE_Q8_0, KVS_TYPE_Q4_0, KVS_TYPE_TQ2, KVS_TYPE_TQ3_5};
    for (int ty = 0; ty < 4; ty++) {
        kvs_kv_scheme sc = kvs_kv_scheme_full(3, 64, 64, types[ty]);
        sc.rotate = sc.rotate_v = kvs_tq_bits(types[ty], 0) ? 1 : 0;
        kvs_kv_cache *kv = NULL;
        CHECK(kvs_kv_cache_new(&sc, 1, 500, 0, &kv) == KVS_OK);
        size_t n = 500 * 3 * 64;
        float *k = malloc(n * 4), *v = malloc(n * 4), *qq = malloc(2 * 9 * 64 * 4), *o1 = malloc(2 * 9 * 64 * 4),
              *o2 = malloc(9 * 64 * 4);
        for (size_t i = 0; i < n; i++) { k[i] = test_rng_normal(&g_rng); v[i] = test_rng_normal(&g_rng); }
        for (int i = 0; i < 9 * 64; i++) qq[i] = qq[9 * 64 + i] = 2.0f * test_rng_normal(&g_rng);
        CHECK(kvs_kv_cache_reserve(kv, 500) == KVS_OK);
        CHECK(kvs_kv_cache_store(kv, 0, 0, 500, k, v) == KVS_OK);
        kvs_kv_segment segs[8];
        int ns = kvs_kv_cache_segments(kv, 0, 500, segs, 8);
        int32_t pos[2] = {499, 499};
        kvs_attn_args a = {.segs = segs, .n_segs = ns, .n_kv_heads = 3, .head_dim_k = 64, .head_dim_v = 64, .q = qq,
                           .n_q = 2, .n_head = 9, .q_pos = pos, .scale = 0.125f, .out = o1};
        kvs_attn_ref(&a); /* two queries: f32 query */
        kvs_pool *pool = NULL;
        kvs_attn *at = NULL;
        CHECK(kvs_pool_new(2, &pool) == KVS_OK && kvs_attn_new(2, &at) == KVS_OK);
        a.n_q = 1;
        a.out = o2;
        CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
        double worst = 0, diff = 0;
        for (int i = 0; i < 9 * 64; i++) {
            double e = fabs((double)o1[i] - o2[i]);
            if (e > worst) worst = e;
            diff += e;
        }
        CHECKF(worst <= 2e-2 && diff > 0, "%s: rounded-query decode vs f32 query: worst %.3g (sum %.3g)",
               kvs_dtype_name(types[ty]), worst, diff);
        printf("  %s keys, decode with the int8 query vs the f32 query: max |d out| %.3g\n", kvs_dtype_name(types[ty]),
               worst);
        kvs_attn_free(at); kvs_pool_free(pool); kvs_kv_cache_free(kv);
        free(k); free(v); free(qq); free(o1); free(o2);
    }
}

/* Per-channel (KIVI) layout: keys quantized per channel over groups, values
 * per token, the newest partial group in f16; positions appended in uneven
 * chunks. Fast kernel vs the float64 reference on the same segments. */
static void run_channel_case(int n_head, int n_kv_heads, int dk, int kbits, int vbits, int group, uint32_t page,
                             int n_pos, int n_q, int threads, bool vsym) {
    kvs_kv_scheme sc = kvs_kv_scheme_full((uint32_t)n_kv_heads, (uint32_t)dk, (uint32_t)dk, KVS_TYPE_F16);
    sc.layout = KVS_KV_LAYOUT_CHANNEL;
    sc.k_bits = (uint32_t)kbits; sc.v_bits = (uint32_t)vbits; sc.group = (uint32_t)group; sc.page_tokens = page;
    sc.v_sym = vsym;
    kvs_kv_cache *kv = NULL;
    CHECK(kvs_kv_cache_new(&sc, 1, (uint32_t)n_pos, 0, &kv) == KVS_OK);
    if (!kv) return;
    size_t row = (size_t)n_kv_heads * dk;
    float *k = malloc((size_t)n_pos * row * 4), *v = malloc((size_t)n_pos * row * 4);
    for (size_t i = 0; i < (size_t)n_pos * row; i++) { k[i] = test_rng_normal(&g_rng); v[i] = test_rng_normal(&g_rng); }
    for (int p = 0; p < n_pos;) {
        int step = 1 + (int)(test_rng_next(&g_rng) % 45);
        if (p + step > n_pos) step = n_pos - p;
        CHECK(kvs_kv_cache_reserve(kv, (uint64_t)(p + step)) == KVS_OK);
        CHECK(kvs_kv_cache_store(kv, 0, (uint64_t)p, step, k + (size_t)p * row, v + (size_t)p * row) == KVS_OK);
        p += step;
    }
    CHECK(kv->bytes == kvs_kv_scheme_bytes(&kv->layers[0].scheme, (uint64_t)n_pos));
    int max_segs = kvs_kv_cache_max_segments(kv, 0);
    kvs_kv_segment *segs = calloc((size_t)max_segs, sizeof *segs);
    int n_segs = kvs_kv_cache_segments(kv, 0, (uint64_t)n_pos, segs, max_segs);
    int64_t covered = 0;
    for (int i = 0; i < n_segs; i++) { CHECK(segs[i].pos0 == covered); covered += segs[i].n; }
    CHECK(covered == n_pos);
    size_t qn = (size_t)n_q * n_head * dk;
    float *q = malloc(qn * 4), *o1 = malloc(qn * 4), *o2 = malloc(qn * 4);
    for (size_t i = 0; i < qn; i++) q[i] = 2.0f * test_rng_normal(&g_rng);
    int32_t pos[64];
    for (int i = 0; i < n_q; i++) pos[i] = n_pos - n_q + i;
    kvs_attn_args a = {.segs = segs, .n_segs = n_segs, .n_kv_heads = n_kv_heads, .head_dim_k = dk, .head_dim_v = dk,
                       .q = q, .n_q = n_q, .n_head = n_head, .q_pos = pos, .scale = 1.0f / sqrtf((float)dk), .out = o1};
    kvs_attn_ref(&a);
    a.out = o2;
    kvs_pool *pool = NULL;
    kvs_attn *at = NULL;
    CHECK(kvs_pool_new(threads, &pool) == KVS_OK && kvs_attn_new(threads, &at) == KVS_OK);
    CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
    compare(o1, o2, qn, 2e-5, 2e-4, "channel fast vs f64", n_head, n_kv_heads, dk, KVS_TYPE_COUNT, n_pos, n_q, 0, 0,
            page, threads);
    kvs_attn_free(at); kvs_pool_free(pool); kvs_kv_cache_free(kv);
    free(k); free(v); free(q); free(o1); free(o2); free(segs);
}

/* Latent rows (V = the first dv elements of each K row, one KV head, many
 * heads) in a prefill whose last query block holds a single query (9 heads:
 * blocks of 14 queries; 15 and 43 queries), on 1 and 2 threads: the whole
 * prefill keeps the f32 query and matches the float64 reference like any
 * prefill (a lone query there once went to the decode-only latent kernel,
 * past its scratch). */
static void latent_prefill_cases(void) {
    static const kvs_dtype types[] = {KVS_TYPE_F16, KVS_TYPE_Q8_0, KVS_TYPE_Q4_0};
    static const int nqs[] = {15, 43};
    const int H = 9, r = 64, dr = 64, D = r + dr, T = 60;
    for (int ty = 0; ty < 3; ty++)
        for (int qi = 0; qi < 2; qi++)
            for (int threads = 1; threads <= 2; threads++) {
                const int nq = nqs[qi];
                kvs_kv_scheme sc;
                memset(&sc, 0, sizeof sc);
                sc.store = KVS_KV_STORE_LATENT;
                sc.layout = KVS_KV_LAYOUT_BLOCK;
                sc.latent_rank = (uint32_t)r;
                sc.rope_dim = (uint32_t)dr;
                sc.shared_from = -1;
                sc.k_type = sc.v_type = types[ty];
                sc.page_tokens = 16;
                kvs_kv_cache *kv = NULL;
                CHECK(kvs_kv_cache_new(&sc, 1, (uint32_t)T, 0, &kv) == KVS_OK);
                if (!kv) return;
                CHECK(kvs_kv_cache_reserve(kv, (uint64_t)T) == KVS_OK);
                float *rows = malloc(sizeof(float) * (size_t)(T * D));
                for (int i = 0; i < T * D; i++) rows[i] = test_rng_normal(&g_rng);
                CHECK(kvs_kv_cache_store(kv, 0, 0, T, rows, NULL) == KVS_OK);
                int max_segs = kvs_kv_cache_max_segments(kv, 0);
                kvs_kv_segment *segs = calloc((size_t)max_segs, sizeof *segs);
                int n_segs = kvs_kv_cache_segments(kv, 0, (uint64_t)T, segs, max_segs);
                size_t qn = (size_t)nq * H * D, on = (size_t)nq * H * r;
                float *q = malloc(qn * 4), *o1 = malloc(on * 4), *o2 = malloc(on * 4);
                for (size_t i = 0; i < qn; i++) q[i] = 2.0f * test_rng_normal(&g_rng);
                int32_t pos[64];
                for (int i = 0; i < nq; i++) pos[i] = T - nq + i;
                kvs_attn_args a = {.segs = segs, .n_segs = n_segs, .n_kv_heads = 1, .head_dim_k = D, .head_dim_v = r,
                                   .q = q, .n_q = nq, .n_head = H, .q_pos = pos, .scale = 1.0f / sqrtf((float)D),
                                   .out = o1};
                kvs_attn_ref(&a);
                a.out = o2;
                kvs_pool *pool = NULL;
                kvs_attn *at = NULL;
                CHECK(kvs_pool_new(threads, &pool) == KVS_OK && kvs_attn_new(threads, &at) == KVS_OK);
                CHECK(kvs_attn_run(at, pool, &a) == KVS_OK);
                compare(o1, o2, on, 2e-5, 2e-4, "latent prefill fast vs f64", H, 1, D, types[ty], T - nq, nq, 0, 0, 16,
                        threads);
                kvs_attn_free(at); kvs_pool_free(pool); kvs_kv_cache_free(kv);
                free(rows); free(segs); free(q); free(o1); free(o2);
            }
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
    static const kvs_dtype types[] = {KVS_TYPE_F32, KVS_TYPE_F16,   KVS_TYPE_BF16, KVS_TYPE_Q8_0,  KVS_TYPE_Q4_0,
                                      KVS_TYPE_TQ2, KVS_TYPE_TQ2_5, KVS_TYPE_TQ3,  KVS_TYPE_TQ3_5, KVS_TYPE_TQ4,
                                      KVS_TYPE_TQ2J, KVS_TYPE_TQ3J};
    const size_t n_types = sizeof types / sizeof *types;
    static const uint32_t pages[] = {16, 64, 256};
    for (size_t h = 0; h < 4; h++)
        for (size_t d = 0; d < 3; d++)
            for (size_t p = 0; p < 6; p++)
                for (size_t ty = 0; ty < n_types; ty++) {
                    kvs_dtype t = types[ty];
                    uint32_t pg = pages[(h + p + ty) % 3];
                    run_case(heads[h][0], heads[h][1], dims[d], t, pasts[p], 1, 0, 0, pg, 1 + (int)(p % 3));
                    if (d == 0) {
                        run_case(heads[h][0], heads[h][1], 64, t, pasts[p], 9, 0, 0, pg, 2);    /* query block edge */
                        run_case(heads[h][0], heads[h][1], 64, t, pasts[p], 17, 16, 0, pg, 3);  /* window */
                        run_case(heads[h][0], heads[h][1], 64, t, pasts[p], 17, 16, 4, 16, 2); /* window + sinks */
                    }
                }
    /* long decode split across threads; windows around page and tile edges;
     * a window larger than the context; prefill chunks longer than the window */
    run_case(9, 3, 64, KVS_TYPE_F16, 4000, 1, 0, 0, 256, 2);
    run_case(9, 3, 64, KVS_TYPE_F16, 4000, 1, 5, 0, 16, 3);
    run_case(9, 3, 64, KVS_TYPE_F16, 4000, 1, 256, 4, 64, 2);
    run_case(9, 3, 64, KVS_TYPE_Q8_0, 3000, 1, 100, 3, 16, 2);
    run_case(9, 3, 64, KVS_TYPE_TQ3, 3000, 1, 0, 0, 256, 2);
    run_case(8, 1, 256, KVS_TYPE_TQ2_5, 1500, 1, 512, 4, 64, 3); /* Gemma 3 local-layer shape */
    run_case(8, 1, 256, KVS_TYPE_TQ3_5, 700, 1, 0, 0, 256, 1);
    run_case(9, 3, 64, KVS_TYPE_F16, 700, 1, 1000, 0, 256, 2);
    run_case(9, 3, 64, KVS_TYPE_F16, 100, 130, 0, 0, 16, 2);
    run_case(9, 3, 64, KVS_TYPE_F16, 500, 130, 32, 4, 16, 2);
    run_case(4, 1, 256, KVS_TYPE_F16, 1000, 40, 512, 0, 256, 2);
    /* every query-row grouping of the fused kernels (2, 5, 6, 7 heads per KV head) */
    static const int groups[][2] = {{4, 2}, {5, 1}, {12, 2}, {7, 1}};
    static const kvs_dtype gtypes[] = {KVS_TYPE_F16, KVS_TYPE_Q8_0, KVS_TYPE_Q4_0, KVS_TYPE_TQ2_5, KVS_TYPE_TQ4};
    for (size_t g = 0; g < 4; g++)
        for (size_t ty = 0; ty < sizeof gtypes / sizeof *gtypes; ty++)
            run_case(groups[g][0], groups[g][1], g % 2 ? 128 : 64, gtypes[ty], 131, 1, 0, 0, 64, 2);
    /* a head size of 3 scale blocks (q8_0/q4_0: 6): not a power of two */
    for (size_t ty = 0; ty < sizeof gtypes / sizeof *gtypes; ty++) run_case(6, 2, 192, gtypes[ty], 99, 1, 0, 0, 16, 2);
    window_covering_is_exact();
    round_query_cases();
    latent_prefill_cases();
    static const int cbits[][2] = {{2, 2}, {3, 3}, {4, 2}, {4, 4}, {8, 8}};
    for (int i = 0; i < 5; i++) {
        run_channel_case(9, 3, 64, cbits[i][0], cbits[i][1], 32, 64, 1, 1, 1, false);      /* residual only */
        run_channel_case(9, 3, 64, cbits[i][0], cbits[i][1], 32, 64, 32, 1, 2, false);     /* one full group */
        run_channel_case(9, 3, 64, cbits[i][0], cbits[i][1], 32, 64, 333, 1, 2, false);    /* pages + residual */
        run_channel_case(9, 3, 64, cbits[i][0], cbits[i][1], 32, 64, 333, 1, 2, true);     /* symmetric value rows */
        run_channel_case(4, 1, 128, cbits[i][0], cbits[i][1], 64, 128, 700, 9, 3, false);  /* prefill block */
        run_channel_case(4, 1, 128, cbits[i][0], cbits[i][1], 64, 128, 700, 9, 3, true);   /* prefill, symmetric values */
        run_channel_case(3, 3, 256, cbits[i][0], cbits[i][1], 16, 256, 1000, 1, 2, false);
    }
    return test_finish("attn");
}
