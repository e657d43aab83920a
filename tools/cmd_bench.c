/* `kvslim bench`: prefill and decode throughput at several KV depths, each
 * decode figure also as a fraction of the machine's measured read-bandwidth
 * limit: tok/s <= bandwidth / (weight bytes + KV bytes read per token). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kvslim bench [options]\n"
            "Measure prefill and decode speed.\n\n%s"
            "  -p, --prefill N     prefill test length (default 512)\n"
            "  -n, --n-gen N       decode steps timed per depth (default 32)\n"
            "  -d, --depths LIST   KV depths for decode tests (default 0,2048,8192)\n"
            "  -r, --reps N        repetitions, best is reported (default 2)\n"
            "      --bw-gib N      GiB for the bandwidth probe (default 1; 0 skips it)\n"
            "      --json          one JSON object per result line on stdout\n",
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

int cmd_bench(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c);
    long long n_prefill = 512, n_gen = 32, reps = 2, bw_gib = 1;
    unsigned long long depths[16] = {0, 2048, 8192};
    int n_depths = 3;
    bool json = false;
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
        else if (!strcmp(a, "--json")) json = true;
        else { fprintf(stderr, "kvslim bench: unknown option '%s' (see --help)\n", a); return 2; }
#undef VAL
#undef BAD
    }
    kvs_model *m = cli_load_model(&c);
    if (!m) return 1;
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    unsigned long long max_depth = 0;
    for (int i = 0; i < n_depths; i++) if (depths[i] > max_depth) max_depth = depths[i];
    uint64_t need = max_depth + (uint64_t)n_gen;
    if ((uint64_t)n_prefill > need) need = (uint64_t)n_prefill;
    if (need > (1u << 26)) { fprintf(stderr, "kvslim bench: depth too large\n"); kvs_model_free(m); return 2; }
    c.ctx = (uint32_t)need;
    kvs_session *s = cli_new_session(m, &c, (uint32_t)need);
    kvs_token *toks = malloc(sizeof *toks * (size_t)(need + 1));
    float *logits = malloc(sizeof(float) * (size_t)in.n_vocab);
    int rc = 1;
    if (!s || !toks || !logits) goto done;
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
        printf("%-16s %10s %14s %10s %10s\n", "test", "tok/s", "bytes/token", "GB/s", "of limit");
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
        else printf("%-16s %10.1f %14s %10s %10s\n", "prefill", best, "-", "-", "-");
    }
    for (int di = 0; di < n_depths; di++) {
        uint64_t d = depths[di];
        double best = 0;
        for (long long r = 0; r < reps; r++) {
            kvs_session_reset(s);
            if (d && kvs_decode(s, toks, (size_t)d, false, NULL) != KVS_OK) { cli_error("decode"); goto done; }
            double t0 = cli_now();
            for (long long g = 0; g < n_gen; g++)
                if (kvs_decode(s, &toks[d + (uint64_t)g], 1, false, logits) != KVS_OK) { cli_error("decode"); goto done; }
            double tps = (double)n_gen / (cli_now() - t0);
            if (tps > best) best = tps;
        }
        /* bytes read per token: all weights + the KV the cache holds at the
         * mean depth of the run (windows and shared layers hold less) */
        double bytes = (double)in.decode_weight_bytes + (double)kvs_session_kv_bytes_at(s, d + (uint64_t)n_gen / 2);
        double gbs = best * bytes / 1e9;
        char name[64];
        snprintf(name, sizeof name, "decode @ %llu", (unsigned long long)d);
        if (json)
            printf("{\"test\": \"tg%lld@d%llu\", \"tok_s\": %.2f, \"bytes_per_token\": %.0f, \"gb_s\": %.2f, \"fraction_of_bw\": %.3f, \"bw_gb_s\": %.2f}\n",
                   n_gen, (unsigned long long)d, best, bytes, gbs, bw > 0 ? gbs * 1e9 / bw : 0.0, bw / 1e9);
        else if (bw > 0)
            printf("%-16s %10.1f %14.0f %10.2f %9.0f%%\n", name, best, bytes, gbs, 100.0 * gbs * 1e9 / bw);
        else
            printf("%-16s %10.1f %14.0f %10.2f %10s\n", name, best, bytes, gbs, "-");
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
