/* `kvslim ppl`: perplexity of a text file (llama.cpp-compatible method). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kvslim ppl [options] -f TEXT\n"
            "Perplexity over non-overlapping chunks of -c tokens (default 512), scoring the\n"
            "second half of each chunk, as llama.cpp's perplexity tool does.\n\n%s"
            "  -f, --file FILE     text to score\n"
            "      --chunks N      score at most N chunks\n"
            "      --json          print the result as JSON on stdout\n",
            cli_common_help());
}

static bool progress(void *user, uint64_t done, uint64_t total, double ppl) {
    double t0 = *(double *)user, el = cli_now() - t0;
    fprintf(stderr, "\r[%llu/%llu] ppl %.4f  (%.1f s, ETA %.0f s)   ", (unsigned long long)done,
            (unsigned long long)total, ppl, el, el / (double)done * (double)(total - done));
    return true;
}

int cmd_ppl(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c);
    const char *file = NULL;
    long long max_chunks = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *val;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { if (!(val = cli_value(argc, argv, &i))) return 2; file = val; }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--chunks")) {
            if (!(val = cli_value(argc, argv, &i))) return 2;
            if (!cli_parse_int(val, 1, 1 << 30, &max_chunks)) { fprintf(stderr, "kvslim ppl: bad --chunks '%s'\n", val); return 2; }
        } else { fprintf(stderr, "kvslim ppl: unknown option '%s' (see --help)\n", a); return 2; }
    }
    if (!file) { usage(); fprintf(stderr, "kvslim ppl: give a text file with -f\n"); return 2; }
    uint32_t ctx = c.ctx ? c.ctx : 512;
    size_t len;
    char *text = cli_read_file(file, &len);
    if (!text) return 1;
    int rc = 1;
    kvs_token *toks = NULL;
    kvs_session *s = NULL;
    kvs_model *m = cli_load_model(&c);
    if (!m) goto done;
    size_t n = 0;
    if (!(toks = cli_tokenize(m, text, len, -1, false, &n))) goto done;
    if (n < ctx) {
        fprintf(stderr, "kvslim ppl: '%s' has %zu tokens, fewer than one chunk of %u; use a smaller -c\n", file, n, ctx);
        goto done;
    }
    size_t use = n;
    if (max_chunks && (size_t)max_chunks * ctx < use) use = (size_t)max_chunks * ctx;
    c.ctx = ctx;
    if (!(s = cli_new_session(m, &c, ctx))) goto done;
    fprintf(stderr, "%s: %zu tokens, %zu chunks of %u\n", file, n, use / ctx, ctx);
    double t0 = cli_now();
    kvs_ppl_result res;
    if (kvs_perplexity(s, toks, use, progress, &t0, &res) != KVS_OK) { fprintf(stderr, "\n"); cli_error("perplexity"); goto done; }
    double el = cli_now() - t0;
    fprintf(stderr, "\n");
    if (json)
        printf("{\"file\": \"%s\", \"ctx\": %u, \"chunks\": %llu, \"scored\": %llu, \"ppl\": %.6f, \"nll\": %.6f, \"nll_stderr\": %.6f, \"seconds\": %.2f}\n",
               file, ctx, (unsigned long long)res.n_chunks, (unsigned long long)res.n_scored, res.ppl, res.nll,
               res.nll_stderr, el);
    else
        printf("perplexity: %.4f +/- %.4f  (%llu chunks x %u tokens, %llu scored, %.1f s, %.0f tok/s)\n", res.ppl,
               res.ppl * res.nll_stderr, (unsigned long long)res.n_chunks, ctx, (unsigned long long)res.n_scored, el,
               (double)(res.n_chunks * ctx) / el);
    rc = 0;
done:
    free(toks);
    free(text);
    kvs_session_free(s);
    kvs_model_free(m);
    return rc;
}
