/* Common CLI helpers; see cli.h. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_common_init(cli_common *c) {
    memset(c, 0, sizeof *c);
    c->kv_type = KVS_KV_F16;
}

const char *cli_common_help(void) {
    return "  -m, --model FILE    GGUF model (default: models/smollm2-135m-instruct-q4_1.gguf)\n"
           "      --no-repack     no interleaved copy of the q4/q5/q8_0 matrices at load (saves\n"
           "                      their size in memory; slower decode, batched decode and prefill)\n"
           "  -t, --threads N     worker threads (default: all CPUs)\n"
           "  -c, --ctx N         context size in tokens (accepts 4k, 32k)\n"
           "  -b, --batch N       tokens per forward chunk (default 512)\n"
           "      --kv SCHEME     KV scheme of every layer: a format f16 (default), f32, bf16, q8_0, q4_0\n"
           "                      (q8_0/q4_0 Hadamard-rotated where the head size allows; rotate=none: plain),\n"
           "                      tq2 tq2.5 tq3 tq3.5 tq4 (rotated codebooks, 2.25-4.25 bits all-in), tqXkYv,\n"
           "                      tq2j tq3j (tq2/tq3 plus a 1-bit QJL residual sketch, 3.5/4.5 bits),\n"
           "                      qXkYv (keys X bits per channel, values Y bits per token), or any rule\n"
           "                      as in --kv-layer, e.g. q4_0,rotate=kv  q4k3v,group=64,recent=64  h2o=512+32\n"
           "      --kv-window W   keep only the last W positions per layer (sliding window)\n"
           "      --kv-sinks S    with a window, also keep the first S positions\n"
           "      --kv-page P     tokens per KV page (default 256)\n"
           "      --kv-budget B   cap KV memory at B bytes (e.g. 64M); decoding past it fails\n"
           "      --kv-layer RULE per-layer scheme, repeatable: [RANGE:]SETTING[,SETTING...], e.g.\n"
           "                      10-29:shared=9  0-9:window=512+4  30:q8_0  q4k4v,group=64,rotate\n"
           "                      settings: " KVS_KV_SETTINGS "\n";
}

/* Append a rule to the ';'-joined kv rules; the library parses them. */
static int add_rule(cli_common *c, const char *rule) {
    size_t used = strlen(c->kv_layers), n = strlen(rule);
    if (used + n + 2 > sizeof c->kv_layers) {
        fprintf(stderr, "kvslim: KV rules too long (at most %zu characters in all)\n", sizeof c->kv_layers - 1);
        return -1;
    }
    if (used) c->kv_layers[used++] = ';';
    memcpy(c->kv_layers + used, rule, n + 1);
    return 1;
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "kvslim: option %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

bool cli_parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

bool cli_parse_count(const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    if (*s == '-') return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return false;
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K') { mul = 1024; end++; }
    else if (*end == 'm' || *end == 'M') { mul = 1024ull * 1024; end++; }
    else if (*end == 'g' || *end == 'G') { mul = 1024ull * 1024 * 1024; end++; }
    if (*end) return false;
    if (v > (1ull << 40) / mul) return false;
    *out = v * mul;
    return true;
}

int cli_common_option(cli_common *c, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    long long n;
    unsigned long long u;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        c->model = v;
        return 1;
    }
    if (!strcmp(a, "--no-repack")) {
        c->no_repack = true;
        return 1;
    }
    if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        if (!cli_parse_int(v, 1, 512, &n)) { fprintf(stderr, "kvslim: bad thread count '%s'\n", v); return -1; }
        c->threads = (int32_t)n;
        return 1;
    }
    if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        if (!cli_parse_count(v, &u) || u < 1 || u > (1u << 26)) { fprintf(stderr, "kvslim: bad context size '%s'\n", v); return -1; }
        c->ctx = (uint32_t)u;
        return 1;
    }
    if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        if (!cli_parse_count(v, &u) || u < 1 || u > (1u << 20)) { fprintf(stderr, "kvslim: bad batch size '%s'\n", v); return -1; }
        c->batch = (uint32_t)u;
        return 1;
    }
    if (!strcmp(a, "--kv")) { /* a format name, or any rule of the grammar for every layer */
        if (!(v = cli_value(argc, argv, i))) return -1;
        if (kvs_kv_type_from_name(v, &c->kv_type)) return 1;
        return add_rule(c, v);
    }
    if (!strcmp(a, "--kv-window") || !strcmp(a, "--kv-sinks") || !strcmp(a, "--kv-page")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        if (!cli_parse_count(v, &u) || u > (1u << 30) || (u == 0 && strcmp(a, "--kv-sinks"))) {
            fprintf(stderr, "kvslim: bad value '%s' for %s\n", v, a);
            return -1;
        }
        *(!strcmp(a, "--kv-window") ? &c->kv_window : !strcmp(a, "--kv-sinks") ? &c->kv_sinks : &c->kv_page) = (uint32_t)u;
        return 1;
    }
    if (!strcmp(a, "--kv-budget")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        if (!cli_parse_count(v, &u) || u == 0) { fprintf(stderr, "kvslim: bad KV budget '%s' (e.g. 64M)\n", v); return -1; }
        c->kv_budget = u;
        return 1;
    }
    if (!strcmp(a, "--kv-layer")) {
        if (!(v = cli_value(argc, argv, i))) return -1;
        return add_rule(c, v);
    }
    return 0;
}

void cli_error(const char *what) {
    const char *e = kvs_last_error();
    fprintf(stderr, "kvslim: %s%s%s\n", what, *e ? ": " : "", e);
}

kvs_model *cli_load_model(const cli_common *c) {
    const char *path = c->model ? c->model : "models/smollm2-135m-instruct-q4_1.gguf";
    kvs_model *m = NULL;
    kvs_model_params mp = kvs_model_params_default();
    mp.repack = !c->no_repack;
    if (kvs_model_load(path, &mp, &m) != KVS_OK) {
        cli_error("cannot load model");
        if (!c->model) fprintf(stderr, "kvslim: fetch the default model with: make models\n");
        return NULL;
    }
    return m;
}

kvs_session_params cli_session_params(const kvs_model *m, const cli_common *c, uint32_t default_ctx) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = c->ctx ? c->ctx : default_ctx;
    if (c->batch) sp.n_batch = c->batch;
    sp.n_threads = c->threads;
    sp.kv_type = c->kv_type;
    sp.kv_window = c->kv_window;
    sp.kv_sinks = c->kv_sinks;
    sp.kv_page = c->kv_page;
    sp.kv_budget = c->kv_budget;
    sp.kv_layers = c->kv_layers[0] ? c->kv_layers : NULL;
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    if (in.n_ctx_train > 0 && sp.n_ctx > (uint32_t)in.n_ctx_train)
        fprintf(stderr, "kvslim: warning: context %u exceeds the %d tokens the model was trained on; quality past "
                "that is not what the model was made for\n", sp.n_ctx, in.n_ctx_train);
    return sp;
}

kvs_session *cli_new_session(const kvs_model *m, const cli_common *c, uint32_t default_ctx) {
    kvs_session_params sp = cli_session_params(m, c, default_ctx);
    kvs_session *s = NULL;
    if (kvs_session_new(m, &sp, &s) != KVS_OK) { cli_error("cannot create session"); return NULL; }
    return s;
}

kvs_engine *cli_new_engine(const kvs_model *m, const cli_common *c, uint32_t default_ctx) {
    kvs_session_params sp = cli_session_params(m, c, default_ctx);
    kvs_engine *e = NULL;
    if (kvs_engine_new(m, &sp, &e) != KVS_OK) { cli_error("cannot create engine"); return NULL; }
    return e;
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "kvslim: cannot open '%s': %s\n", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *nb = cap > ((size_t)1 << 34) ? NULL : realloc(buf, 2 * cap + 1);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    bool err = ferror(f);
    fclose(f);
    if (!buf || err) { free(buf); fprintf(stderr, "kvslim: cannot read '%s'\n", path); return NULL; }
    buf[n] = '\0';
    *len = n;
    return buf;
}

kvs_token *cli_tokenize(const kvs_model *m, const char *text, size_t len, int add_bos, bool special,
                        size_t *n) {
    size_t cap = len + 16;
    kvs_token *t = malloc(sizeof *t * cap);
    if (!t) { fprintf(stderr, "kvslim: out of memory\n"); return NULL; }
    if (kvs_tokenize(m, text, len, add_bos, special, t, cap, n) != KVS_OK) {
        cli_error("tokenize");
        free(t);
        return NULL;
    }
    if (*n > cap) {
        kvs_token *t2 = realloc(t, sizeof *t * *n);
        if (!t2) { free(t); return NULL; }
        t = t2;
        cap = *n;
        if (kvs_tokenize(m, text, len, add_bos, special, t, cap, n) != KVS_OK) { cli_error("tokenize"); free(t); return NULL; }
    }
    return t;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
