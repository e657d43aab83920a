/* `kvslim bench`: prefill and decode throughput at several KV depths, each
 * decode figure also as a fraction of the machine's measured read-bandwidth
 * limit: tok/s <= bandwidth / (weight bytes + KV bytes read per token).
 * `--attn` instead times the attention kernel alone on the session's KV
 * schemes (one cache per distinct scheme, filled with random rows) and
 * reports KV bytes read per second against the same bandwidth probe. That
 * mode reads session internals (model/session.h: the layers' schemes and
 * the thread pool), so it lives next to the library rather than on the
 * public API only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/attn.h"
#include "cli.h"
#include "model/session.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kvslim bench [options]\n"
            "Measure prefill and decode speed (or, with --attn, attention alone).\n\n%s"
            "  -p, --prefill N     prefill test length (default 512)\n"
            "  -n, --n-gen N       decode steps timed per depth (default 32)\n"
            "  -d, --depths LIST   KV depths for decode tests (default 0,2048,8192)\n"
            "      --pp-depths LIST  also time the -p prefill after each of these depths\n"
            "                      (as llama-bench -d does for its pp tests)\n"
            "  -r, --reps N        repetitions, best is reported (default 2)\n"
            "      --bw-gib N      GiB for the bandwidth probe (default 1; 0 skips it)\n"
            "      --json          one JSON object per result line on stdout\n"
            "      --fill-random   reach each decode depth by storing random K/V rows in\n"
            "                      the cache instead of prefilling through the model (same\n"
            "                      memory traffic and work per decoded token, no prefill\n"
            "                      cost; the generated tokens are meaningless)\n"
            "Decode rows report tok/s (wall clock, best of --reps) and process CPU ms per\n"
            "token (least of --reps; with -t 1 it does not count time other processes\n"
            "held the CPU, so it compares builds on a busy machine).\n\n"
            "Attention only (no model forward pass):\n"
            "      --attn          time one decode query's attention over a KV cache of\n"
            "                      each depth, for every distinct KV scheme of the session\n"
            "                      (set by --kv / --kv-layer ...; caches hold random\n"
            "                      rows). Reports us per call (wall, and process CPU) and\n"
            "                      per token (all layers of that scheme), KV bytes read per\n"
            "                      second, and that as a fraction of the read bandwidth\n"
            "                      probed in the same run. Calls rotate over copies of the\n"
            "                      cache holding >= 256 MiB together, as the layers of a\n"
            "                      real decode do, so rows are read from DRAM.\n"
            "      --attn-hot      re-read one cache instead (rows stay in the CPU caches\n"
            "                      when they fit: kernel compute cost, not memory)\n"
            "      --attn-depths LIST  depths for --attn (default 2048,4096,8192,16384,32768)\n"
            "      --attn-time S   seconds of timed calls per row (default 0.3)\n"
            "      --parallel LIST batched decode of many sequences in one engine (one KV\n"
            "                      pool), as llama-batched-bench: for each B in LIST, B\n"
            "                      prompts of -p tokens in one call, then -n steps of one\n"
            "                      token per sequence; prints the step rates (S_PP, S_TG =\n"
            "                      tokens/s over all sequences) and the pool's KV bytes\n"
            "      --prefix-ttft N time to first token of a prompt of N+1 tokens cold, and\n"
            "                      again when its first N tokens are a cached prefix\n"
            "      --capacity N    sequences of N distinct tokens each admitted into one pool\n"
            "                      (--kv-budget, default 512M) until it refuses one: the\n"
            "                      count, KV bytes per sequence and the pool's bytes\n\n"
            "Examples:\n"
            "  kvslim bench -d 8192 --kv q8_0          whole-model decode at depth 8192\n"
            "  kvslim bench --attn -t 2 --kv q4k2v    attention alone, KIVI 4-bit keys/2-bit values\n"
            "  kvslim bench --parallel 1,4,16 -p 128 -n 32   many sequences, one pool\n"
            "  kvslim bench --capacity 4096 --kv-budget 512M --kv q8_0   sequences a pool holds\n",
            cli_common_help());
}

static int parse_list(const char *s, unsigned long long *out, int cap) {
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == cap || !cli_parse_count(tok, &out[n])) return -1;
        n++;
    }
    return n;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_bench_rng = 0x9E3779B97F4A7C15ull;
static float bench_rand(void) {
    g_bench_rng ^= g_bench_rng << 13; g_bench_rng ^= g_bench_rng >> 7; g_bench_rng ^= g_bench_rng << 17;
    return (float)((double)(g_bench_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Store random rows at positions [0, depth) of every layer that owns
 * storage and mark them cached, as if the model had prefilled them. */
static int fill_cache_random(kvs_session *s, uint64_t depth) {
    kvs_kv_cache *c = s->kv;
    if (kvs_kv_cache_reserve(c, depth) != KVS_OK) { cli_error("fill"); return 1; }
    const int chunk = 256;
    int rc = 1;
    float *kb = NULL, *vb = NULL;
    for (int32_t l = 0; l < c->n_layers; l++) {
        const kvs_kv_scheme *sc = &c->layers[l].scheme;
        if (c->layers[l].source != l) continue; /* shared: reads another layer */
        const bool lat = sc->store == KVS_KV_STORE_LATENT;
        const size_t krow = lat ? (size_t)(sc->latent_rank + sc->rope_dim) : (size_t)sc->n_kv_heads * sc->head_dim_k;
        const size_t vrow = lat ? 1 : (size_t)sc->n_kv_heads * sc->head_dim_v;
        free(kb); free(vb);
        kb = malloc(sizeof(float) * krow * chunk);
        vb = malloc(sizeof(float) * vrow * chunk);
        if (!kb || !vb) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
        for (uint64_t p = 0; p < depth; p += chunk) {
            int n = depth - p < (uint64_t)chunk ? (int)(depth - p) : chunk;
            for (size_t i = 0; i < krow * (size_t)n; i++) kb[i] = bench_rand();
            for (size_t i = 0; i < vrow * (size_t)n; i++) vb[i] = bench_rand();
            if (kvs_kv_cache_store(c, l, p, n, kb, lat ? NULL : vb) != KVS_OK) { cli_error("fill"); goto done; }
        }
    }
    c->n_past = depth;
    rc = 0;
done:
    free(kb); free(vb);
    return rc;
}

/* ---- attention-only mode ---- */

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Caches the attention timer rotates over: each call reads a different
 * cache, as each layer of a real decode does, until they hold at least this
 * many bytes, so the rows come from DRAM and not from a 32 MiB L3 a single
 * re-read cache would sit in. --attn-hot times one cache re-read. */
#define ATTN_COLD_BYTES ((uint64_t)256 << 20)
#define ATTN_MAX_CACHES 256

typedef struct attn_timing { double us, cpu_us; int caches; } attn_timing;

/* Median microseconds (wall and process CPU) of one decode-attention call
 * over a cache of `depth` random positions in scheme sc (query at depth - 1);
 * us < 0 on error. */
static attn_timing attn_time(const kvs_kv_scheme *sc, int32_t n_head, uint64_t depth, double seconds, bool hot,
                             kvs_pool *pool, kvs_attn *at) {
    const bool lat = sc->store == KVS_KV_STORE_LATENT;
    const int32_t n_kv = lat ? 1 : (int32_t)sc->n_kv_heads;
    const int32_t dk = lat ? (int32_t)(sc->latent_rank + sc->rope_dim) : (int32_t)sc->head_dim_k;
    const int32_t dv = lat ? (int32_t)sc->latent_rank : (int32_t)sc->head_dim_v;
    attn_timing res = {-1.0, -1.0, 0};
    const uint64_t bytes = kvs_kv_scheme_bytes(sc, depth);
    int nc = hot ? 1 : (int)((ATTN_COLD_BYTES + bytes - 1) / (bytes ? bytes : 1));
    if (nc > ATTN_MAX_CACHES) nc = ATTN_MAX_CACHES;
    if (nc < 1) nc = 1;
    kvs_kv_cache *kv[ATTN_MAX_CACHES] = {0};
    kvs_kv_segment *segs[ATTN_MAX_CACHES] = {0};
    kvs_attn_args args[ATTN_MAX_CACHES];
    const int chunk = 256;
    const size_t krow = (size_t)n_kv * (size_t)dk, vrow = (size_t)n_kv * (size_t)dv;
    float *kb = malloc(sizeof(float) * krow * chunk), *vb = malloc(sizeof(float) * vrow * chunk);
    float *q = malloc(sizeof(float) * (size_t)n_head * (size_t)dk), *out = malloc(sizeof(float) * (size_t)n_head * (size_t)dv);
    double *bt = NULL, *ct = NULL;
    if (!kb || !vb || !q || !out) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
    for (int i = 0; i < nc; i++)
        if (kvs_kv_cache_new(sc, 1, (uint32_t)depth, 0, &kv[i]) != KVS_OK || kvs_kv_cache_reserve(kv[i], depth) != KVS_OK) {
            cli_error("attention cache");
            goto done;
        }
    for (uint64_t p = 0; p < depth; p += chunk) { /* in order: per-channel layers append */
        int n = depth - p < (uint64_t)chunk ? (int)(depth - p) : chunk;
        for (size_t i = 0; i < krow * (size_t)n; i++) kb[i] = bench_rand();
        for (size_t i = 0; i < vrow * (size_t)n; i++) vb[i] = bench_rand();
        for (int c = 0; c < nc; c++) /* same rows in every copy: only the addresses differ */
            if (kvs_kv_cache_store(kv[c], 0, p, n, kb, lat ? NULL : vb) != KVS_OK) { cli_error("attention cache store"); goto done; }
    }
    for (int i = 0; i < n_head * dk; i++) q[i] = 2.0f * bench_rand();
    int32_t pos = (int32_t)(depth - 1);
    for (int c = 0; c < nc; c++) {
        int max_segs = kvs_kv_cache_max_segments(kv[c], 0);
        segs[c] = calloc((size_t)max_segs, sizeof *segs[c]);
        if (!segs[c]) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
        int n_segs = kvs_kv_cache_segments(kv[c], 0, depth, segs[c], max_segs);
        args[c] = (kvs_attn_args){.segs = segs[c], .n_segs = n_segs, .n_kv_heads = n_kv, .head_dim_k = dk,
                                  .head_dim_v = dv, .q = q, .n_q = 1, .n_head = n_head, .q_pos = &pos,
                                  .window = sc->window, .sinks = sc->sinks, .scale = 1.0f / sqrtf((float)dk),
                                  .out = out};
    }
    /* warm up (one pass over every cache), then ~20 ms batches; the median
     * batch is the figure */
    double t0 = cli_now();
    int64_t warm = 0;
    while (warm < nc || warm < 3 || cli_now() - t0 < 0.05) {
        if (kvs_attn_run(at, pool, &args[warm % nc]) != KVS_OK) { cli_error("attention"); goto done; }
        warm++;
    }
    int64_t batch = (int64_t)(0.02 / ((cli_now() - t0) / (double)warm));
    if (batch < 1) batch = 1;
    int max_b = (int)(seconds / 0.02) + 3, nb = 0;
    bt = malloc(sizeof(double) * (size_t)max_b);
    ct = malloc(sizeof(double) * (size_t)max_b);
    if (!bt || !ct) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
    double start = cli_now();
    int64_t call = 0;
    while (nb < max_b && (nb < 3 || cli_now() - start < seconds)) {
        double b0 = cli_now(), c0 = cpu_now();
        for (int64_t i = 0; i < batch; i++, call++) kvs_attn_run(at, pool, &args[call % nc]);
        ct[nb] = (cpu_now() - c0) / (double)batch;
        bt[nb++] = (cli_now() - b0) / (double)batch;
    }
    qsort(bt, (size_t)nb, sizeof *bt, cmp_dbl);
    qsort(ct, (size_t)nb, sizeof *ct, cmp_dbl);
    res.us = 1e6 * bt[nb / 2];
    res.cpu_us = 1e6 * ct[nb / 2];
    res.caches = nc;
done:
    free(kb); free(vb); free(q); free(out); free(bt); free(ct);
    for (int c = 0; c < nc; c++) { free(segs[c]); kvs_kv_cache_free(kv[c]); }
    return res;
}

static int bench_attn_mode(kvs_session *s, const kvs_model_info *in, const unsigned long long *depths, int n_depths,
                           double seconds, bool hot, double bw, bool json) {
    const kvs_kv_cache *c = s->kv;
    int32_t *first = malloc(sizeof(int32_t) * (size_t)c->n_layers), *count = calloc((size_t)c->n_layers, sizeof(int32_t));
    kvs_attn *at = NULL;
    int rc = 1;
    if (!first || !count || kvs_attn_new(kvs_pool_size(s->pool), &at) != KVS_OK) { cli_error("attention"); goto done; }
    /* distinct schemes (a shared layer runs attention over its source's) */
    int n_distinct = 0;
    for (int32_t l = 0; l < c->n_layers; l++) {
        const kvs_kv_scheme *sl = &c->layers[c->layers[l].source].scheme;
        int j = 0;
        for (; j < n_distinct; j++)
            if (!memcmp(&c->layers[c->layers[first[j]].source].scheme, sl, sizeof *sl)) break;
        if (j == n_distinct) first[n_distinct++] = l;
        count[j]++;
    }
    if (!json) {
        printf("attention only: one decode query, %d query heads, %s, %d threads\n", in->n_head, kvs_simd_name(),
               kvs_pool_size(s->pool));
        if (bw > 0) printf("read bandwidth %.1f GB/s (probed in this run)\n", bw / 1e9);
        printf("%s\n", hot ? "one cache re-read per depth (--attn-hot: rows may sit in the CPU caches)"
                          : "each call reads the next of several caches holding >= 256 MiB together (rows come from DRAM)");
        printf("%-40s %7s %9s %9s %10s %10s %9s %9s\n", "scheme (layers)", "depth", "us/call", "cpu us", "us/token",
               "KV MB/call", "GB/s", "of bw");
    }
    for (int j = 0; j < n_distinct; j++) {
        const kvs_kv_scheme *sc = &c->layers[c->layers[first[j]].source].scheme;
        char desc[128], label[160];
        kvs_kv_scheme_describe(sc, desc, sizeof desc);
        snprintf(label, sizeof label, "%s (%d)", desc, count[j]);
        for (int d = 0; d < n_depths; d++) {
            attn_timing tm = attn_time(sc, in->n_head, depths[d], seconds, hot, s->pool, at);
            if (tm.us < 0) goto done;
            const double us = tm.us;
            double bytes = (double)kvs_kv_scheme_bytes(sc, depths[d]); /* what the layer holds = what it reads */
            double gbs = bytes / (us * 1e-6) / 1e9, frac = bw > 0 ? gbs * 1e9 / bw : 0.0;
            if (json)
                printf("{\"test\": \"attn@d%llu\", \"scheme\": \"%s\", \"layers\": %d, \"us_per_call\": %.2f, "
                       "\"cpu_us_per_call\": %.2f, \"us_per_token\": %.1f, \"kv_bytes\": %.0f, \"gb_s\": %.3f, "
                       "\"fraction_of_bw\": %.4f, \"bw_gb_s\": %.2f, \"threads\": %d, \"caches\": %d}\n",
                       depths[d], desc, count[j], us, tm.cpu_us, us * count[j], bytes, gbs, frac, bw / 1e9,
                       kvs_pool_size(s->pool), tm.caches);
            else if (bw > 0)
                printf("%-40s %7llu %9.1f %9.1f %10.1f %10.2f %9.2f %8.0f%%\n", label, depths[d], us, tm.cpu_us,
                       us * count[j], bytes / 1e6, gbs, 100.0 * frac);
            else
                printf("%-40s %7llu %9.1f %9.1f %10.1f %10.2f %9.2f %9s\n", label, depths[d], us, tm.cpu_us,
                       us * count[j], bytes / 1e6, gbs, "-");
            fflush(stdout);
        }
    }
    rc = 0;
done:
    kvs_attn_free(at);
    free(first);
    free(count);
    return rc;
}

/* ---- many sequences in one engine (--parallel) ---- */

/* For each B: B fresh sequences, their prompts (n_prompt tokens each) in one
 * kvs_engine_decode, then n_gen steps of one token per sequence. */
static int bench_parallel(const kvs_model *m, const cli_common *c, const kvs_model_info *in,
                          const unsigned long long *bs, int n_bs, long long n_prompt, long long n_gen, long long reps,
                          bool json) {
    unsigned long long max_b = 0;
    for (int i = 0; i < n_bs; i++) if (bs[i] > max_b) max_b = bs[i];
    kvs_engine *e = cli_new_engine(m, c, (uint32_t)(n_prompt + n_gen));
    if (!e) return 1;
    int rc = 1;
    kvs_seq **q = calloc(max_b, sizeof *q);
    kvs_batch_entry *x = calloc(max_b, sizeof *x);
    kvs_token *toks = malloc(sizeof *toks * max_b * (size_t)(n_prompt + n_gen));
    float *logits = malloc(sizeof(float) * max_b * (size_t)in->n_vocab);
    if (!q || !x || !toks || !logits) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
    uint64_t rng = 0x1234567ull;
    for (size_t i = 0; i < max_b * (size_t)(n_prompt + n_gen); i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        toks[i] = (kvs_token)(rng % (uint64_t)in->n_vocab);
    }
    if (!json)
        printf("%6s %6s %6s %8s %9s %9s %9s %9s %12s\n", "PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s",
               "S_TG t/s", "KV MiB");
    for (int bi = 0; bi < n_bs; bi++) {
        const size_t B = bs[bi];
        double best_pp = 1e30, best_tg = 1e30;
        uint64_t kv_bytes = 0;
        for (long long r = 0; r < reps; r++) {
            for (size_t i = 0; i < B; i++)
                if (kvs_seq_new(e, &q[i]) != KVS_OK) { cli_error("sequence"); goto done; }
            const size_t stride = (size_t)(n_prompt + n_gen);
            for (size_t i = 0; i < B; i++)
                x[i] = (kvs_batch_entry){.seq = q[i], .tokens = toks + i * stride, .n_tokens = (uint32_t)n_prompt,
                                         .logits = logits + i * (size_t)in->n_vocab};
            double t0 = cli_now();
            if (n_prompt > 0 && kvs_engine_decode(e, x, B) != KVS_OK) { cli_error("decode"); goto done; }
            double t1 = cli_now();
            for (long long g = 0; g < n_gen; g++) {
                for (size_t i = 0; i < B; i++) {
                    x[i].tokens = toks + i * stride + (size_t)n_prompt + (size_t)g;
                    x[i].n_tokens = 1;
                }
                if (kvs_engine_decode(e, x, B) != KVS_OK) { cli_error("decode"); goto done; }
            }
            double t2 = cli_now();
            if (t1 - t0 < best_pp) best_pp = t1 - t0;
            if (t2 - t1 < best_tg) best_tg = t2 - t1;
            kv_bytes = kvs_engine_kv_bytes(e);
            for (size_t i = 0; i < B; i++) { kvs_seq_free(q[i]); q[i] = NULL; }
        }
        const double s_pp = n_prompt > 0 ? (double)(B * (size_t)n_prompt) / best_pp : 0;
        const double s_tg = (double)(B * (size_t)n_gen) / best_tg;
        const unsigned long long n_kv = (unsigned long long)(B * (size_t)(n_prompt + n_gen));
        if (json)
            printf("{\"test\": \"parallel\", \"pp\": %lld, \"tg\": %lld, \"b\": %zu, \"n_kv\": %llu, \"t_pp\": %.4f, "
                   "\"s_pp\": %.2f, \"t_tg\": %.4f, \"s_tg\": %.2f, \"kv_bytes\": %llu}\n",
                   n_prompt, n_gen, B, n_kv, best_pp, s_pp, best_tg, s_tg, (unsigned long long)kv_bytes);
        else
            printf("%6lld %6lld %6zu %8llu %9.3f %9.1f %9.3f %9.1f %12.1f\n", n_prompt, n_gen, B, n_kv, best_pp, s_pp,
                   best_tg, s_tg, (double)kv_bytes / 1048576.0);
        fflush(stdout);
    }
    rc = 0;
done:
    kvs_engine_free(e);
    free(q);
    free(x);
    free(toks);
    free(logits);
    return rc;
}

/* Sequences of n random tokens, each prefilled in its own call, until the
 * pool's budget refuses one (KVS_ERR_BUDGET: its pages are reserved before
 * its first step, so a refused sequence costs no compute). */
static int bench_capacity(const kvs_model *m, const cli_common *c, const kvs_model_info *in, long long n,
                          bool json) {
    kvs_engine *e = cli_new_engine(m, c, (uint32_t)n);
    if (!e) return 1;
    int rc = 1;
    size_t cap = 64, held = 0;
    kvs_seq **q = calloc(cap, sizeof *q);
    kvs_token *toks = malloc(sizeof *toks * (size_t)n);
    if (!q || !toks) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
    uint64_t rng = 0xca9ac17ull, per_seq = 0;
    double t0 = cli_now();
    for (;;) {
        for (long long i = 0; i < n; i++) {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            toks[i] = (kvs_token)(rng % (uint64_t)in->n_vocab);
        }
        if (held == cap) {
            kvs_seq **g = realloc(q, sizeof *q * cap * 2);
            if (!g) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
            q = g;
            cap *= 2;
        }
        if (kvs_seq_new(e, &q[held]) != KVS_OK) { cli_error("sequence"); goto done; }
        kvs_batch_entry x = {.seq = q[held], .tokens = toks, .n_tokens = (uint32_t)n};
        kvs_status st = kvs_engine_decode(e, &x, 1);
        if (x.status == KVS_ERR_BUDGET) break;
        if (st != KVS_OK) { cli_error("decode"); goto done; }
        if (!held) per_seq = kvs_seq_kv_bytes(q[0]);
        held++;
        if (!json) { fprintf(stderr, "\r  %zu sequences admitted (%.0f s)", held, cli_now() - t0); fflush(stderr); }
    }
    if (!json) fprintf(stderr, "\n");
    const uint64_t pool = kvs_engine_kv_bytes(e), budget = kvs_engine_kv_budget(e);
    if (json)
        printf("{\"test\": \"capacity\", \"tokens\": %lld, \"budget\": %llu, \"sequences\": %zu, "
               "\"kv_bytes_per_seq\": %llu, \"kv_bytes\": %llu}\n",
               n, (unsigned long long)budget, held, (unsigned long long)per_seq, (unsigned long long)pool);
    else
        printf("%zu sequences of %lld tokens admitted in a %.1f MiB pool (the next one refused): %.2f MiB each, "
               "%.1f MiB in use\n", held, n, (double)budget / 1048576.0, (double)per_seq / 1048576.0,
               (double)pool / 1048576.0);
    rc = 0;
done:
    for (size_t i = 0; q && i <= held && i < cap; i++) kvs_seq_free(q[i]);
    kvs_engine_free(e);
    free(q);
    free(toks);
    return rc;
}

/* Cold: a new sequence runs n + 1 prompt tokens (cache_prefix on); warm: a
 * new sequence for the same prompt maps the cached n and runs the last one. */
static int bench_prefix_ttft(const kvs_model *m, const cli_common *c, const kvs_model_info *in, long long n,
                             long long reps, bool json) {
    kvs_engine *e = cli_new_engine(m, c, (uint32_t)(n + 1));
    if (!e) return 1;
    int rc = 1;
    kvs_token *toks = malloc(sizeof *toks * (size_t)(n + 1));
    float *logits = malloc(sizeof(float) * (size_t)in->n_vocab);
    if (!toks || !logits) { fprintf(stderr, "kvslim bench: out of memory\n"); goto done; }
    uint64_t rng = 0x5eedull;
    for (long long i = 0; i <= n; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        toks[i] = (kvs_token)(rng % (uint64_t)in->n_vocab);
    }
    double cold = 1e30, warm = 1e30;
    uint32_t hit = 0;
    for (long long r = 0; r < reps; r++) {
        kvs_engine_prefix_clear(e);
        kvs_seq *q = NULL;
        double t0 = cli_now();
        if (kvs_seq_new(e, &q) != KVS_OK) { cli_error("sequence"); goto done; }
        kvs_batch_entry x = {.seq = q, .tokens = toks, .n_tokens = (uint32_t)n + 1, .logits = logits, .cache_prefix = true};
        if (kvs_engine_decode(e, &x, 1) != KVS_OK) { cli_error("decode"); goto done; }
        double t1 = cli_now();
        kvs_seq_free(q);
        if (kvs_seq_new_cached(e, toks, (uint32_t)n + 1, &q, &hit) != KVS_OK) { cli_error("sequence"); goto done; }
        x = (kvs_batch_entry){.seq = q, .tokens = toks + hit, .n_tokens = (uint32_t)(n + 1 - hit), .logits = logits};
        if (kvs_engine_decode(e, &x, 1) != KVS_OK) { cli_error("decode"); goto done; }
        double t2 = cli_now();
        kvs_seq_free(q);
        if (t1 - t0 < cold) cold = t1 - t0;
        if (t2 - t1 < warm) warm = t2 - t1;
    }
    if (json)
        printf("{\"test\": \"prefix_ttft\", \"prefix\": %lld, \"cached\": %u, \"cold_s\": %.4f, \"warm_s\": %.4f, "
               "\"ratio\": %.4f}\n", n, hit, cold, warm, warm / cold);
    else
        printf("prompt %lld tokens: cold %.1f ms, with %u cached %.1f ms (%.1f%% of cold)\n", n + 1, 1e3 * cold, hit,
               1e3 * warm, 100.0 * warm / cold);
    rc = 0;
done:
    kvs_engine_free(e);
    free(toks);
    free(logits);
    return rc;
}

/* A reset session brought to depth d: random rows (--fill-random) or a prefill of toks. */
static int reach_depth(kvs_session *s, const kvs_token *toks, uint64_t d, bool fill_random) {
    if (!d) return 0;
    if (fill_random) return fill_cache_random(s, d);
    if (kvs_decode(s, toks, (size_t)d, false, NULL) != KVS_OK) { cli_error("decode"); return 1; }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c);
    long long n_prefill = 512, n_gen = 32, reps = 2, bw_gib = 1;
    unsigned long long depths[16] = {0, 2048, 8192};
    int n_depths = 3;
    bool json = false, attn = false, attn_hot = false, fill_random = false;
    unsigned long long attn_depths[16] = {2048, 4096, 8192, 16384, 32768};
    int n_attn_depths = 5;
    double attn_secs = 0.3;
    unsigned long long par[16], pp_depths[16];
    int n_par = 0, n_pp_depths = 0;
    long long prefix_ttft = 0, capacity = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *val;
#define VAL() do { if (!(val = cli_value(argc, argv, &i))) return 2; } while (0)
#define BAD() do { fprintf(stderr, "kvslim bench: bad value '%s' for %s\n", val, a); return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prefill")) { VAL(); if (!cli_parse_int(val, 0, 1 << 20, &n_prefill)) BAD(); }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) { VAL(); if (!cli_parse_int(val, 1, 1 << 20, &n_gen)) BAD(); }
        else if (!strcmp(a, "-r") || !strcmp(a, "--reps")) { VAL(); if (!cli_parse_int(val, 1, 100, &reps)) BAD(); }
        else if (!strcmp(a, "--bw-gib")) { VAL(); if (!cli_parse_int(val, 0, 64, &bw_gib)) BAD(); }
        else if (!strcmp(a, "-d") || !strcmp(a, "--depths")) { VAL(); if ((n_depths = parse_list(val, depths, 16)) < 0) BAD(); }
        else if (!strcmp(a, "--pp-depths")) { VAL(); if ((n_pp_depths = parse_list(val, pp_depths, 16)) < 0) BAD(); }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--attn")) attn = true;
        else if (!strcmp(a, "--attn-hot")) attn_hot = true;
        else if (!strcmp(a, "--fill-random")) fill_random = true;
        else if (!strcmp(a, "--attn-depths")) {
            VAL();
            if ((n_attn_depths = parse_list(val, attn_depths, 16)) <= 0) BAD();
            for (int d = 0; d < n_attn_depths; d++) if (attn_depths[d] < 1 || attn_depths[d] > (1u << 24)) BAD();
        }
        else if (!strcmp(a, "--capacity")) { VAL(); if (!cli_parse_int(val, 1, 1 << 24, &capacity)) BAD(); }
        else if (!strcmp(a, "--prefix-ttft")) { VAL(); if (!cli_parse_int(val, 16, 1 << 20, &prefix_ttft)) BAD(); }
        else if (!strcmp(a, "--parallel")) {
            VAL();
            if ((n_par = parse_list(val, par, 16)) <= 0) BAD();
            for (int d = 0; d < n_par; d++) if (par[d] < 1 || par[d] > 4096) BAD();
        }
        else if (!strcmp(a, "--attn-time")) { VAL(); if (!cli_parse_float(val, &attn_secs) || !(attn_secs > 0 && attn_secs <= 60)) BAD(); }
        else { fprintf(stderr, "kvslim bench: unknown option '%s' (see --help)\n", a); return 2; }
#undef VAL
#undef BAD
    }
    kvs_model *m = cli_load_model(&c);
    if (!m) return 1;
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    if (capacity) {
        if (!c.kv_budget) c.kv_budget = 512ull << 20;
        if (!json) printf("model: %s (%s), %d layers, pool capacity\n", in.name, in.arch, in.n_layer);
        int crc = bench_capacity(m, &c, &in, capacity, json);
        kvs_model_free(m);
        return crc;
    }
    if (prefix_ttft) {
        if (!json) printf("model: %s (%s), %d layers, prefix reuse\n", in.name, in.arch, in.n_layer);
        int prc = bench_prefix_ttft(m, &c, &in, prefix_ttft, reps, json);
        kvs_model_free(m);
        return prc;
    }
    if (n_par) {
        if (!json) printf("model: %s (%s), %d layers, many sequences in one engine\n", in.name, in.arch, in.n_layer);
        int prc = bench_parallel(m, &c, &in, par, n_par, n_prefill, n_gen, reps, json);
        kvs_model_free(m);
        return prc;
    }
    if (attn) { /* the session only supplies schemes and threads: one position */
        c.ctx = 1;
        kvs_session *as = cli_new_session(m, &c, 1);
        int arc = 1;
        if (as) {
            double abw = bw_gib ? kvs_measure_read_bandwidth(c.threads > 0 ? c.threads : 0, (size_t)bw_gib << 30, 3) : 0.0;
            if (!json) printf("model: %s (%s), %d layers\n", in.name, in.arch, in.n_layer);
            arc = bench_attn_mode(as, &in, attn_depths, n_attn_depths, attn_secs, attn_hot, abw, json);
        }
        kvs_session_free(as);
        kvs_model_free(m);
        return arc;
    }
    unsigned long long max_depth = 0;
    for (int i = 0; i < n_depths; i++) if (depths[i] > max_depth) max_depth = depths[i];
    uint64_t need = max_depth + (uint64_t)n_gen;
    for (int i = 0; i < n_pp_depths; i++)
        if (pp_depths[i] + (uint64_t)n_prefill > need) need = pp_depths[i] + (uint64_t)n_prefill;
    if ((uint64_t)n_prefill > need) need = (uint64_t)n_prefill;
    if (need > (1u << 26)) { fprintf(stderr, "kvslim bench: depth too large\n"); kvs_model_free(m); return 2; }
    c.ctx = (uint32_t)need;
    kvs_session *s = cli_new_session(m, &c, (uint32_t)need);
    kvs_token *toks = malloc(sizeof *toks * (size_t)(need + 1));
    float *logits = malloc(sizeof(float) * (size_t)in.n_vocab);
    int rc = 1;
    if (!s) goto done; /* cli_new_session said why */
    if (!toks || !logits) { fprintf(stderr, "kvslim bench: out of memory for %llu tokens\n", (unsigned long long)need); goto done; }
    uint64_t rng = 0x1234567ull;
    for (uint64_t i = 0; i < need + 1; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        toks[i] = (kvs_token)(rng % (uint64_t)in.n_vocab);
    }
    int threads = c.threads > 0 ? c.threads : 0;
    double bw = bw_gib ? kvs_measure_read_bandwidth(threads, (size_t)bw_gib << 30, 3) : 0.0;
    uint64_t kv_per_tok = kvs_session_kv_bytes_per_token(s);
    if (!json) {
        printf("model: %s (%s), %.1f MiB weights read per decoded token, KV %llu bytes/token\n", in.name, in.arch,
               (double)in.decode_weight_bytes / 1048576.0, (unsigned long long)kv_per_tok);
        char tdesc[32];
        if (threads) snprintf(tdesc, sizeof tdesc, "%d threads", threads);
        else snprintf(tdesc, sizeof tdesc, "all CPUs");
        if (bw > 0) printf("machine: %s, read bandwidth %.1f GB/s (%s)\n", kvs_simd_name(), bw / 1e9, tdesc);
        else printf("machine: %s, bandwidth probe skipped (%s)\n", kvs_simd_name(), tdesc);
        printf("%-16s %10s %10s %14s %10s %10s\n", "test", "tok/s", "cpu ms/tok", "bytes/token", "GB/s", "of limit");
    }
    if (n_prefill > 0) {
        double best = 0;
        for (long long r = 0; r < reps; r++) {
            kvs_session_reset(s);
            double t0 = cli_now();
            if (kvs_decode(s, toks, (size_t)n_prefill, false, logits) != KVS_OK) { cli_error("decode"); goto done; }
            double tps = (double)n_prefill / (cli_now() - t0);
            if (tps > best) best = tps;
        }
        if (json) printf("{\"test\": \"pp%lld\", \"tok_s\": %.2f}\n", n_prefill, best);
        else printf("%-16s %10.1f %10s %14s %10s %10s\n", "prefill", best, "-", "-", "-", "-");
    }
    for (int di = 0; n_prefill > 0 && di < n_pp_depths; di++) { /* the same prefill on top of d tokens */
        const uint64_t d = pp_depths[di];
        double best = 0;
        for (long long r = 0; r < reps; r++) {
            kvs_session_reset(s);
            if (reach_depth(s, toks, d, fill_random) != 0) goto done;
            double t0 = cli_now();
            if (kvs_decode(s, toks + d, (size_t)n_prefill, false, logits) != KVS_OK) { cli_error("decode"); goto done; }
            double tps = (double)n_prefill / (cli_now() - t0);
            if (tps > best) best = tps;
        }
        char name[64];
        snprintf(name, sizeof name, "prefill @ %llu", (unsigned long long)d);
        if (json) printf("{\"test\": \"pp%lld@d%llu\", \"tok_s\": %.2f}\n", n_prefill, (unsigned long long)d, best);
        else printf("%-16s %10.1f %10s %14s %10s %10s\n", name, best, "-", "-", "-", "-");
        fflush(stdout);
    }
    for (int di = 0; di < n_depths; di++) {
        uint64_t d = depths[di];
        double best = 0, best_cpu = 0;
        for (long long r = 0; r < reps; r++) {
            kvs_session_reset(s);
            if (reach_depth(s, toks, d, fill_random) != 0) goto done;
            double t0 = cli_now(), c0 = cpu_now();
            for (long long g = 0; g < n_gen; g++)
                if (kvs_decode(s, &toks[d + (uint64_t)g], 1, false, logits) != KVS_OK) { cli_error("decode"); goto done; }
            double tps = (double)n_gen / (cli_now() - t0), cms = 1e3 * (cpu_now() - c0) / (double)n_gen;
            if (tps > best) best = tps;
            if (r == 0 || cms < best_cpu) best_cpu = cms;
        }
        /* bytes read per token: all weights + the KV the cache holds at the
         * mean depth of the run (windows and shared layers hold less) */
        double bytes = (double)in.decode_weight_bytes + (double)kvs_session_kv_bytes_at(s, d + (uint64_t)n_gen / 2);
        double gbs = best * bytes / 1e9;
        char name[64];
        snprintf(name, sizeof name, "decode @ %llu", (unsigned long long)d);
        if (json)
            printf("{\"test\": \"tg%lld@d%llu\", \"tok_s\": %.2f, \"cpu_ms_per_tok\": %.3f, \"bytes_per_token\": %.0f, \"gb_s\": %.2f, \"fraction_of_bw\": %.3f, \"bw_gb_s\": %.2f, \"fill\": \"%s\"}\n",
                   n_gen, (unsigned long long)d, best, best_cpu, bytes, gbs, bw > 0 ? gbs * 1e9 / bw : 0.0, bw / 1e9,
                   fill_random ? "random" : "model");
        else if (bw > 0)
            printf("%-16s %10.1f %10.2f %14.0f %10.2f %9.0f%%\n", name, best, best_cpu, bytes, gbs, 100.0 * gbs * 1e9 / bw);
        else
            printf("%-16s %10.1f %10.2f %14.0f %10.2f %10s\n", name, best, best_cpu, bytes, gbs, "-");
        fflush(stdout);
    }
    rc = 0;
done:
    free(toks);
    free(logits);
    kvs_session_free(s);
    kvs_model_free(m);
    return rc;
}
