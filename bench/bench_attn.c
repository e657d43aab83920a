/* Attention-only decode throughput (no model): one query attending a KV
 * cache filled with random rows, through the engine's fast kernel
 * (kvs_attn_run), for several cache layouts and depths.
 *
 * Layouts: GQA 9 query / 3 KV heads x 64 (SmolLM2-135M) in f16, bf16, q8_0,
 * q4_0, f32 and per-channel (KIVI) 4/4, 4/2, 2/2 key/value bits, group 32; MLA latent 16 heads over one 512 + 64 row per token
 * (DeepSeek-V2-Lite, absorbed: MQA with dk 576, dv 512 = the first 512
 * elements of the same row) in f16 and bf16. Caches use 256-token pages.
 *
 * Per call it reports microseconds (median over ~20 ms batches, ~0.5 s in
 * all), the median process CPU time per call (robust to other processes
 * taking the CPU when run with -t 1), KV bytes read (the bytes the cache
 * holds, kvs_kv_scheme_bytes: a decode reads all of it; a latent row is
 * counted once since V aliases K), GB/s, and the
 * fraction of the machine's read bandwidth (kvs_measure_read_bandwidth over
 * 1 GiB on the same threads, measured once at start). Shallow caches fit in
 * the CPU caches, so the fraction may exceed 1 there.
 *
 * Usage: bench_attn [-t threads] [--json] [--time seconds] [--depth N]...
 *   -t N       threads (default: all CPUs)
 *   --json     one JSON object per line instead of the table
 *   --time S   seconds of timed calls per row (default 0.5)
 *   --depth N  depths to run (repeatable; default 2048 4096 8192 16384 32768)
 *   --layout L only layouts whose name contains L (repeatable)
 * It prints numbers and asserts nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/attn.h"
#include "bench_util.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "kv/kv_cache.h"
#include "kv/kv_scheme.h"
#include "kvslim.h"

typedef struct layout {
    const char *name;
    int latent;               /* MLA latent store (1 KV head, V aliases K) */
    kvs_dtype type;
    int n_head, n_kv_heads;   /* query heads, KV heads (latent: 1)         */
    int dk, dv;               /* attention head sizes                      */
    int rank, rope;           /* latent only                               */
    int qk_dim;               /* softmax scale 1/sqrt(qk_dim)              */
    int kbits, vbits, group;  /* per-channel (KIVI) layout when kbits > 0  */
} layout;

static const layout g_layouts[] = {
    {"gqa-f16", 0, KVS_TYPE_F16, 9, 3, 64, 64, 0, 0, 64, 0, 0, 0},
    {"gqa-bf16", 0, KVS_TYPE_BF16, 9, 3, 64, 64, 0, 0, 64, 0, 0, 0},
    {"gqa-q8_0", 0, KVS_TYPE_Q8_0, 9, 3, 64, 64, 0, 0, 64, 0, 0, 0},
    {"gqa-q4_0", 0, KVS_TYPE_Q4_0, 9, 3, 64, 64, 0, 0, 64, 0, 0, 0},
    {"gqa-f32", 0, KVS_TYPE_F32, 9, 3, 64, 64, 0, 0, 64, 0, 0, 0},
    /* per-channel keys / per-token values (KIVI), groups of 32 tokens */
    {"gqa-q4k4v", 0, KVS_TYPE_F16, 9, 3, 64, 64, 0, 0, 64, 4, 4, 32},
    {"gqa-q4k2v", 0, KVS_TYPE_F16, 9, 3, 64, 64, 0, 0, 64, 4, 2, 32},
    {"gqa-q2k2v", 0, KVS_TYPE_F16, 9, 3, 64, 64, 0, 0, 64, 2, 2, 32},
    /* DeepSeek-V2-Lite: scale uses qk_nope 128 + rope 64 */
    {"latent-f16", 1, KVS_TYPE_F16, 16, 1, 576, 512, 512, 64, 192, 0, 0, 0},
    {"latent-bf16", 1, KVS_TYPE_BF16, 16, 1, 576, 512, 512, 64, 192, 0, 0, 0},
};
#define N_LAYOUTS (sizeof g_layouts / sizeof g_layouts[0])

/* CPU time of the whole process (all threads): with -t 1 a contention-robust
 * cost per call on a shared machine (time the kernel was not running is not
 * counted; with more threads it includes the pool's spin-waits). */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    double us;          /* median microseconds per call        */
    double us_min;      /* fastest batch, per call             */
    double cpu_us;      /* median process CPU time per call    */
    uint64_t kv_bytes;  /* KV bytes read per call              */
    int64_t calls;
    int n_segs;
} result;

/* Fill a cache of `depth` positions with random rows and time decode calls
 * of one query at position depth - 1. Returns non-zero on setup failure. */
static int run_one(const layout *L, int depth, kvs_pool *pool, kvs_attn *at, double seconds, result *r) {
    kvs_kv_scheme sc;
    if (L->latent) {
        memset(&sc, 0, sizeof sc);
        sc.store = KVS_KV_STORE_LATENT;
        sc.layout = KVS_KV_LAYOUT_BLOCK;
        sc.latent_rank = (uint32_t)L->rank;
        sc.rope_dim = (uint32_t)L->rope;
        sc.shared_from = -1;
        sc.k_type = sc.v_type = L->type;
    } else {
        sc = kvs_kv_scheme_full((uint32_t)L->n_kv_heads, (uint32_t)L->dk, (uint32_t)L->dv, L->type);
        if (L->kbits) {
            sc.layout = KVS_KV_LAYOUT_CHANNEL;
            sc.k_bits = (uint32_t)L->kbits;
            sc.v_bits = (uint32_t)L->vbits;
            sc.group = (uint32_t)L->group;
        }
    }
    sc.page_tokens = 256;
    kvs_kv_cache *kv = NULL;
    if (kvs_kv_cache_new(&sc, 1, (uint32_t)depth, 0, &kv) != KVS_OK ||
        kvs_kv_cache_reserve(kv, (uint64_t)depth) != KVS_OK) {
        fprintf(stderr, "bench_attn: %s depth %d: %s\n", L->name, depth, kvs_last_error());
        kvs_kv_cache_free(kv);
        return 1;
    }
    /* random rows, stored a page at a time */
    const int chunk = 256;
    const size_t krow = L->latent ? (size_t)(L->rank + L->rope) : (size_t)L->n_kv_heads * L->dk;
    const size_t vrow = L->latent ? 0 : (size_t)L->n_kv_heads * L->dv;
    float *kb = malloc(sizeof(float) * krow * chunk), *vb = malloc(sizeof(float) * (vrow ? vrow : 1) * chunk);
    for (int p = 0; p < depth; p += chunk) {
        int n = depth - p < chunk ? depth - p : chunk;
        for (size_t i = 0; i < krow * (size_t)n; i++) kb[i] = frand();
        for (size_t i = 0; i < vrow * (size_t)n; i++) vb[i] = frand();
        if (kvs_kv_cache_store(kv, 0, (uint64_t)p, n, kb, L->latent ? NULL : vb) != KVS_OK) {
            fprintf(stderr, "bench_attn: %s store: %s\n", L->name, kvs_last_error());
            free(kb); free(vb); kvs_kv_cache_free(kv);
            return 1;
        }
    }
    free(kb);
    free(vb);
    int max_segs = kvs_kv_cache_max_segments(kv, 0);
    kvs_kv_segment *segs = calloc((size_t)max_segs, sizeof *segs);
    int n_segs = kvs_kv_cache_segments(kv, 0, (uint64_t)depth, segs, max_segs);
    r->kv_bytes = kvs_kv_scheme_bytes(&sc, (uint64_t)depth); /* what the cache holds = what a decode reads */
    r->n_segs = n_segs;

    float *q = malloc(sizeof(float) * (size_t)L->n_head * L->dk), *out = malloc(sizeof(float) * (size_t)L->n_head * L->dv);
    for (int i = 0; i < L->n_head * L->dk; i++) q[i] = 2.0f * frand();
    int32_t pos = depth - 1;
    kvs_attn_args a = {.segs = segs, .n_segs = n_segs, .n_kv_heads = L->n_kv_heads, .head_dim_k = L->dk,
                       .head_dim_v = L->dv, .q = q, .n_q = 1, .n_head = L->n_head, .q_pos = &pos,
                       .scale = 1.0f / sqrtf((float)L->qk_dim), .out = out};
    int rc = 0;
    /* warm up (scratch allocation, caches), then size batches to ~20 ms */
    double t0 = now_s();
    int64_t warm = 0;
    while (warm < 3 || now_s() - t0 < 0.05) {
        if (kvs_attn_run(at, pool, &a) != KVS_OK) {
            fprintf(stderr, "bench_attn: %s depth %d: %s\n", L->name, depth, kvs_last_error());
            rc = 1;
            break;
        }
        warm++;
    }
    if (!rc) {
        double per = (now_s() - t0) / (double)warm;
        int64_t batch = (int64_t)(0.02 / per);
        if (batch < 1) batch = 1;
        int max_batches = (int)(seconds / 0.02) + 2;
        double *bt = malloc(sizeof(double) * (size_t)max_batches), *ct = malloc(sizeof(double) * (size_t)max_batches);
        int nb = 0;
        r->calls = 0;
        double start = now_s();
        while (nb < max_batches && (nb < 3 || now_s() - start < seconds)) {
            double b0 = now_s(), c0 = cpu_s();
            for (int64_t i = 0; i < batch; i++) kvs_attn_run(at, pool, &a);
            ct[nb] = (cpu_s() - c0) / (double)batch;
            bt[nb++] = (now_s() - b0) / (double)batch;
            r->calls += batch;
        }
        qsort(bt, (size_t)nb, sizeof *bt, cmp_double);
        r->us = 1e6 * bt[nb / 2];
        r->us_min = 1e6 * bt[0];
        qsort(ct, (size_t)nb, sizeof *ct, cmp_double);
        r->cpu_us = 1e6 * ct[nb / 2];
        free(bt);
        free(ct);
    }
    free(q); free(out); free(segs);
    kvs_kv_cache_free(kv);
    return rc;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_attn [-t threads] [--json] [--time seconds] [--depth N]... [--layout NAME]...\n");
}

int main(int argc, char **argv) {
    int threads = kvs_cpu_count(), json = 0;
    double seconds = 0.5;
    int depths[16], n_depths = 0;
    const char *filters[16];
    int n_filters = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(arg, "--json")) json = 1;
        else if (!strcmp(arg, "-t") && val) { threads = atoi(val); i++; }
        else if (!strcmp(arg, "--time") && val) { seconds = atof(val); i++; }
        else if (!strcmp(arg, "--depth") && val && n_depths < 16) { depths[n_depths++] = atoi(val); i++; }
        else if (!strcmp(arg, "--layout") && val && n_filters < 16) { filters[n_filters++] = val; i++; }
        else { usage(); return 2; }
    }
    if (threads < 1 || seconds <= 0.0) { usage(); return 2; }
    for (int d = 0; d < n_depths; d++)
        if (depths[d] < 1) { usage(); return 2; }
    if (!n_depths) {
        static const int def[] = {2048, 4096, 8192, 16384, 32768};
        for (int d = 0; d < 5; d++) depths[n_depths++] = def[d];
    }
    kvs_dtype_init();
    kvs_pool *pool = NULL;
    kvs_attn *at = NULL;
    if (kvs_pool_new(threads, &pool) != KVS_OK || kvs_attn_new(threads, &at) != KVS_OK) {
        fprintf(stderr, "bench_attn: %s\n", kvs_last_error());
        return 1;
    }
    const double bw = kvs_measure_read_bandwidth(threads, (size_t)1 << 30, 3); /* bytes/s */
    if (!json) {
        printf("bench_attn: decode attention, 1 query, simd=%s, %d threads, read bandwidth %.2f GB/s (1 GiB, best of 3)\n",
               kvs_cpu_simd_name(), threads, bw / 1e9);
        printf("%-12s %6s %7s %9s %9s %9s %9s %8s %7s\n", "layout", "heads", "depth", "us/call", "best us", "cpu us",
               "KV MB", "GB/s", "of bw");
    }
    int failed = 0;
    for (size_t li = 0; li < N_LAYOUTS; li++) {
        const layout *L = &g_layouts[li];
        int want = n_filters == 0;
        for (int f = 0; f < n_filters; f++) want |= strstr(L->name, filters[f]) != NULL;
        if (!want) continue;
        for (int d = 0; d < n_depths; d++) {
            result r;
            memset(&r, 0, sizeof r);
            if (run_one(L, depths[d], pool, at, seconds, &r)) { failed = 1; continue; }
            const double gbs = (double)r.kv_bytes / (r.us * 1e-6) / 1e9;
            const double frac = bw > 0 ? gbs * 1e9 / bw : 0.0;
            char heads[16];
            snprintf(heads, sizeof heads, "%d/%d", L->n_head, L->n_kv_heads);
            if (json)
                printf("{\"bench\":\"attn_decode\",\"layout\":\"%s\",\"type\":\"%s\",\"latent\":%s,\"n_head\":%d,"
                       "\"n_kv_heads\":%d,\"head_dim_k\":%d,\"head_dim_v\":%d,\"depth\":%d,\"threads\":%d,"
                       "\"segments\":%d,\"calls\":%lld,\"us_per_call\":%.3f,\"us_best\":%.3f,\"cpu_us\":%.3f,\"kv_bytes\":%llu,"
                       "\"gb_per_s\":%.3f,\"read_bw_gb_per_s\":%.3f,\"frac_of_bw\":%.4f,\"simd\":\"%s\"}\n",
                       L->name, kvs_dtype_name(L->type), L->latent ? "true" : "false", L->n_head, L->n_kv_heads, L->dk,
                       L->dv, depths[d], threads, r.n_segs, (long long)r.calls, r.us, r.us_min, r.cpu_us,
                       (unsigned long long)r.kv_bytes, gbs, bw / 1e9, frac, kvs_cpu_simd_name());
            else
                printf("%-12s %6s %7d %9.1f %9.1f %9.1f %9.2f %8.2f %6.0f%%\n", L->name, heads, depths[d], r.us, r.us_min, r.cpu_us,
                       (double)r.kv_bytes / 1e6, gbs, 100.0 * frac);
            fflush(stdout);
        }
    }
    kvs_attn_free(at);
    kvs_pool_free(pool);
    return failed;
}
