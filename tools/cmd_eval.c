/* `kvslim eval`: the quality meter. For each KV scheme, on the same tokens:
 * KV bytes, perplexity and its change vs a reference cache, KL divergence
 * and top-1 agreement of the next-token distribution, passkey retrieval at
 * several lengths, decode speed at depth. Table, JSON lines, SVG plot. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_SCHEMES 32
#define MAX_FILES 8
#define MAX_PK 8
#define MAX_DEPTHS 8
#define PK_GEN 12 /* tokens generated for a passkey answer */

typedef struct scheme {
    const char *text;           /* as given: the KV rules (kv_layers) of its sessions */
    kvs_session *s;
    kvs_cmp_result cmp;
    uint64_t bytes_ctx;         /* KV bytes at the context */
    double pk_acc[MAX_PK];      /* passkey accuracy per length */
    double tok_s;
    int tok_s_steps;            /* decode steps timed */
    bool pareto;
} scheme;

typedef struct opts {
    cli_common c;
    const char *files[MAX_FILES];
    int n_files;
    scheme sc[MAX_SCHEMES + 1]; /* [0] is the reference */
    int n_sc;                   /* candidates, in sc[1..n_sc] */
    const char *ref_text;
    long long max_chunks;
    uint32_t pk_len[MAX_PK];
    int n_pk;
    double depths[MAX_DEPTHS];
    int n_depths;
    long long trials, gen;
    bool chat, json;
    const char *plot;
    unsigned long long seed;
    uint64_t speed_depth;       /* KV depth of the timed decode steps */
} opts;

static void usage(void) {
    fprintf(stderr,
            "usage: kvslim eval [options] --kv SCHEME [--kv SCHEME ...] -f TEXT [-f TEXT ...]\n"
            "Quality of KV cache schemes against a reference cache on the same tokens: KV bytes,\n"
            "perplexity and its change, KL(P_ref || P) and top-1 agreement of the next-token\n"
            "distribution, passkey retrieval, decode tok/s at depth.\n\n"
            "  -m, --model FILE    GGUF model (default: models/smollm2-135m-instruct-q4_1.gguf)\n"
            "  -t, --threads N     worker threads (default: all CPUs)\n"
            "  -c, --ctx N         chunk size for perplexity/KL (default 2048, at most the trained context)\n"
            "  -b, --batch N       tokens per forward chunk (default 512)\n"
            "      --kv-page P     tokens per KV page (default 256)\n"
            "      --kv SCHEME     a scheme to evaluate (repeatable): per-layer rules separated by ';'\n"
            "                      as in --kv-layer, plus an eviction policy, e.g.\n"
            "                        f16  q8_0  q4_0  q4k2v  q4k3v,group=64,rotate  window=512+4\n"
            "                        0-9:q8_0;10-29:q4_0   h2o=512+32   snapkv=512+32,q8_0\n"
            "                      h2o=B+R: keep B tokens per layer: 4 sinks, the newest R, the rest by\n"
            "                      accumulated attention. snapkv=B+W: after each prompt chunk keep B tokens:\n"
            "                      its last W and the older ones its last W queries attend to most.\n"
            "      --ref SCHEME    reference scheme (default f16)\n"
            "  -f, --file FILE     text (repeatable); each is cut into chunks of -c tokens\n"
            "      --chunks N      use at most N chunks per file\n"
            "      --passkey LIST  passkey lengths in tokens, e.g. 1k,2k (each <= -c; default none)\n"
            "      --depths LIST   passkey depths as fractions (default 0.1,0.5,0.9)\n"
            "      --trials N      keys per length and depth (default 1)\n"
            "      --format F      passkey prompt: chat (model's chat template, default) or raw\n"
            "      --gen N         without --passkey: decode steps timed at depth -c minus N (default 32;\n"
            "                      0 skips); with --passkey the answer steps after the longest prompts are timed\n"
            "      --seed N        passkey key seed (default 1)\n"
            "      --json          one JSON object per scheme on stdout instead of the table\n"
            "      --plot FILE.svg KL and perplexity change vs KV bytes/token, Pareto front marked\n");
}

/* ---- sessions ----------------------------------------------------------- */

/* Session for one scheme; returns 0, or the exit code after a message. */
static int open_scheme(const kvs_model *m, const opts *o, scheme *sc, uint32_t n_ctx) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = n_ctx;
    if (o->c.batch) sp.n_batch = o->c.batch;
    sp.n_threads = o->c.threads;
    sp.kv_page = o->c.kv_page;
    sp.kv_layers = sc->text;
    kvs_status st = kvs_session_new(m, &sp, &sc->s);
    if (st != KVS_OK) {
        fprintf(stderr, "kvslim eval: scheme '%s': %s\n", sc->text, kvs_last_error());
        return st == KVS_ERR_INVALID_ARG || st == KVS_ERR_UNSUPPORTED ? 2 : 1;
    }
    sc->bytes_ctx = kvs_session_kv_bytes_at_evict(sc->s, n_ctx);
    return 0;
}

/* ---- option parsing ------------------------------------------------------- */

static int parse_counts(const char *s, uint32_t *out, int cap) {
    char buf[256];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        unsigned long long v;
        if (n == cap || !cli_parse_count(t, &v) || v < 64 || v > (1u << 24)) return -1;
        out[n++] = (uint32_t)v;
    }
    return n;
}

static int parse_fracs(const char *s, double *out, int cap) {
    char buf[256];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        double v;
        if (n == cap || !cli_parse_float(t, &v) || !(v >= 0.0 && v <= 1.0)) return -1;
        out[n++] = v;
    }
    return n;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, opts *o) {
    cli_common_init(&o->c);
    o->ref_text = "f16";
    o->depths[0] = 0.1; o->depths[1] = 0.5; o->depths[2] = 0.9;
    o->n_depths = 3;
    o->trials = 1;
    o->gen = 32;
    o->chat = true;
    o->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
#define VAL() do { if (!(val = cli_value(argc, argv, &i))) return 2; } while (0)
#define BAD() do { fprintf(stderr, "kvslim eval: bad value '%s' for %s\n", val, a); return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        if (!strcmp(a, "--kv")) {
            VAL();
            if (o->n_sc == MAX_SCHEMES) { fprintf(stderr, "kvslim eval: at most %d schemes\n", MAX_SCHEMES); return 2; }
            o->sc[1 + o->n_sc++].text = val;
            continue;
        }
        int r = cli_common_option(&o->c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            VAL();
            if (o->n_files == MAX_FILES) { fprintf(stderr, "kvslim eval: at most %d files\n", MAX_FILES); return 2; }
            o->files[o->n_files++] = val;
        } else if (!strcmp(a, "--ref")) { VAL(); o->ref_text = val; }
        else if (!strcmp(a, "--chunks")) { VAL(); if (!cli_parse_int(val, 1, 1 << 30, &o->max_chunks)) BAD(); }
        else if (!strcmp(a, "--passkey")) { VAL(); if ((o->n_pk = parse_counts(val, o->pk_len, MAX_PK)) <= 0) BAD(); }
        else if (!strcmp(a, "--depths")) { VAL(); if ((o->n_depths = parse_fracs(val, o->depths, MAX_DEPTHS)) <= 0) BAD(); }
        else if (!strcmp(a, "--trials")) { VAL(); if (!cli_parse_int(val, 1, 100, &o->trials)) BAD(); }
        else if (!strcmp(a, "--gen")) { VAL(); if (!cli_parse_int(val, 0, 4096, &o->gen)) BAD(); }
        else if (!strcmp(a, "--seed")) { VAL(); long long v; if (!cli_parse_int(val, 0, 1ll << 40, &v)) BAD(); o->seed = (unsigned long long)v; }
        else if (!strcmp(a, "--format")) {
            VAL();
            if (!strcmp(val, "chat")) o->chat = true;
            else if (!strcmp(val, "raw")) o->chat = false;
            else BAD();
        } else if (!strcmp(a, "--json")) o->json = true;
        else if (!strcmp(a, "--plot")) { VAL(); o->plot = val; }
        else { fprintf(stderr, "kvslim eval: unknown option '%s' (see --help)\n", a); return 2; }
#undef VAL
#undef BAD
    }
    if (o->c.kv_window || o->c.kv_sinks || o->c.kv_budget || o->c.kv_layers[0] || o->c.kv_type != KVS_KV_F16) {
        fprintf(stderr, "kvslim eval: give each scheme whole with --kv SCHEME (--kv-window/--kv-sinks/--kv-layer/--kv-budget are for run/ppl/bench)\n");
        return 2;
    }
    if (o->n_sc == 0) { usage(); fprintf(stderr, "kvslim eval: give at least one --kv SCHEME\n"); return 2; }
    if (o->n_files == 0) { usage(); fprintf(stderr, "kvslim eval: give a text file with -f\n"); return 2; }
    o->sc[0].text = o->ref_text;
    if (!o->c.ctx) o->c.ctx = 2048;
    if (o->c.ctx < 16) { fprintf(stderr, "kvslim eval: -c %u is too small (at least 16)\n", o->c.ctx); return 2; }
    for (int i = 0; i < o->n_pk; i++)
        if (o->pk_len[i] > o->c.ctx) {
            fprintf(stderr, "kvslim eval: passkey length %u exceeds the context -c %u\n", o->pk_len[i], o->c.ctx);
            return 2;
        }
    if ((uint64_t)o->gen >= o->c.ctx) { fprintf(stderr, "kvslim eval: --gen %lld must be below -c %u\n", o->gen, o->c.ctx); return 2; }
    return -1;
}

/* ---- progress ------------------------------------------------------------- */

/* percent: show done/total as a percentage (the units are not meaningful to read) */
typedef struct prog { const char *what; double t0; uint64_t base, total; bool percent; } prog;

static bool on_progress(void *user, uint64_t done, uint64_t total, double value) {
    prog *p = user;
    double el = cli_now() - p->t0;
    uint64_t d = p->base + done;
    double eta = d ? el / (double)d * (double)(p->total - d) : 0.0;
    if (p->percent)
        fprintf(stderr, "\r[%s] %.1f%%  %.0f s elapsed, ETA %.0f s    ", p->what,
                p->total ? 100.0 * (double)d / (double)p->total : 0.0, el, eta);
    else
        fprintf(stderr, "\r[%s] %llu/%llu  %.0f s elapsed, ETA %.0f s    ", p->what, (unsigned long long)d,
                (unsigned long long)p->total, el, eta);
    return true;
}

/* ---- passkey -------------------------------------------------------------- */

typedef struct pk_prompt { kvs_token *toks; size_t n; uint32_t key; int len_i; } pk_prompt;

static kvs_token *pk_tokenize(const kvs_model *m, uint32_t n_filler, double depth, uint32_t key, bool chat, size_t *n) {
    char *text = kvs_passkey_text(n_filler, depth, key);
    if (!text) return NULL;
    char *use = text;
    if (chat) {
        /* the question goes to the user turn; the answer is primed after it */
        char *q = strstr(text, kvs_passkey_question());
        if (q) *q = '\0';
        size_t need = strlen(text) + 64;
        char *msg = malloc(need);
        char *fmt = NULL;
        if (msg) {
            snprintf(msg, need, "%s\nWhat is the pass key?", text);
            fmt = kvs_chat_format_user(m, msg);
            free(msg);
        }
        if (fmt) {
            size_t fl = strlen(fmt);
            use = malloc(fl + 32);
            if (use) snprintf(use, fl + 32, "%sThe pass key is", fmt);
            free(fmt);
        } else {
            use = NULL;
        }
        if (!use) { free(text); return NULL; }
    }
    kvs_token *t = cli_tokenize(m, use, strlen(use), -1, chat, n);
    if (use != text) free(use);
    free(text);
    return t;
}

/* Filler count whose prompt fits in `limit` tokens (largest found). */
static uint32_t pk_fit(const kvs_model *m, uint32_t limit, bool chat) {
    size_t a, b;
    kvs_token *ta = pk_tokenize(m, 4, 0.5, 99999, chat, &a), *tb = pk_tokenize(m, 24, 0.5, 99999, chat, &b);
    free(ta);
    free(tb);
    if (!ta || !tb || b <= a) return 0;
    double per = (double)(b - a) / 20.0, base = (double)a - 4.0 * per;
    if ((double)limit <= base + per) return 0;
    uint32_t n = (uint32_t)(((double)limit - base) / per);
    for (int it = 0; it < 64 && n > 0; it++) {
        size_t k;
        kvs_token *t = pk_tokenize(m, n, 0.5, 999999, chat, &k);
        free(t);
        if (t && k + 4 <= limit) break; /* margin: keys and depths shift a token or two */
        n--;
    }
    return n;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

/* Greedy answer to one prompt; returns whether it names the key. */
static int pk_run(kvs_session *s, const kvs_model *m, const pk_prompt *p, float *logits, int32_t n_vocab, bool *hit,
                  double *dec_s, int *dec_n) {
    kvs_session_reset(s);
    if (kvs_decode(s, p->toks, p->n, false, logits) != KVS_OK) return -1;
    char ans[256];
    size_t al = 0;
    double t0 = cli_now();
    int steps = 0;
    for (int g = 0; g < PK_GEN; g++) {
        kvs_token t = kvs_logits_argmax(logits, n_vocab);
        if (kvs_token_is_eog(m, t)) break;
        char piece[64];
        int pl = kvs_token_to_piece(m, t, piece, sizeof piece);
        if (pl > 0 && al + (size_t)pl < sizeof ans) { memcpy(ans + al, piece, (size_t)pl); al += (size_t)pl; }
        if (g + 1 < PK_GEN && kvs_decode(s, &t, 1, false, logits) != KVS_OK) return -1;
        if (g + 1 < PK_GEN) steps++;
    }
    *dec_s = cli_now() - t0;
    *dec_n = steps;
    ans[al] = '\0';
    *hit = kvs_passkey_match(ans, p->key);
    return 0;
}

/* ---- output --------------------------------------------------------------- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static void mark_pareto(opts *o) {
    for (int i = 1; i <= o->n_sc; i++) {
        scheme *a = &o->sc[i];
        a->pareto = true;
        for (int j = 1; j <= o->n_sc && a->pareto; j++) {
            const scheme *b = &o->sc[j];
            if (j == i) continue;
            bool le = b->bytes_ctx <= a->bytes_ctx && b->cmp.kl_mean <= a->cmp.kl_mean;
            bool lt = b->bytes_ctx < a->bytes_ctx || b->cmp.kl_mean < a->cmp.kl_mean;
            if (le && lt) a->pareto = false;
        }
    }
}

static void print_table(const opts *o, const kvs_model_info *in) {
    const scheme *ref = &o->sc[0];
    printf("model: %s (%s), context %u, %llu chunks, %llu scored tokens; reference '%s': ppl %.4f\n", in->name, in->arch,
           o->c.ctx, (unsigned long long)ref->cmp.n_chunks, (unsigned long long)ref->cmp.n_scored, ref->text,
           ref->cmp.ppl);
    printf("%-28s %8s %9s %9s %8s %9s %9s %7s", "scheme", "B/tok", "KV MiB", "ppl", "dppl%", "KL mean", "KL p99", "top1%");
    for (int k = 0; k < o->n_pk; k++) {
        char h[24];
        snprintf(h, sizeof h, "pk@%u", o->pk_len[k]);
        printf(" %7s", h);
    }
    bool speed = o->gen || o->n_pk;
    if (speed) printf(" %9s", "tok/s");
    printf("\n");
    for (int i = 1; i <= o->n_sc; i++) {
        const scheme *s = &o->sc[i];
        char name[40];
        snprintf(name, sizeof name, "%s%s", s->pareto ? "*" : " ", s->text);
        printf("%-28s %8.0f %9.2f %9.4f %+8.2f %9.5f %9.4f %7.2f", name, (double)s->bytes_ctx / o->c.ctx,
               (double)s->bytes_ctx / 1048576.0, s->cmp.ppl, 100.0 * (s->cmp.ppl / ref->cmp.ppl - 1.0), s->cmp.kl_mean,
               s->cmp.kl_p99, 100.0 * s->cmp.top1);
        for (int k = 0; k < o->n_pk; k++) printf(" %6.0f%%", 100.0 * s->pk_acc[k]);
        if (speed) printf(" %9.1f", s->tok_s);
        printf("\n");
    }
    printf("B/tok: KV bytes at the context / context; '*': on the Pareto front of KV bytes vs mean KL\n");
    if (speed) printf("tok/s: greedy decode steps at a KV depth of about %llu tokens\n", (unsigned long long)o->speed_depth);
}

static void print_json(const opts *o, const kvs_model_info *in) {
    const scheme *ref = &o->sc[0];
    for (int i = 0; i <= o->n_sc; i++) {
        const scheme *s = &o->sc[i];
        printf("{\"model\": ");
        json_str(stdout, in->name);
        printf(", \"scheme\": ");
        json_str(stdout, s->text);
        printf(", \"reference\": %s, \"ctx\": %u, \"chunks\": %llu, \"scored\": %llu, \"kv_bytes\": %llu, "
               "\"kv_bytes_per_token\": %.1f, \"ppl\": %.6f, \"ppl_ref\": %.6f, \"ppl_change_pct\": %.4f, "
               "\"nll_stderr\": %.6f",
               i == 0 ? "true" : "false", o->c.ctx, (unsigned long long)s->cmp.n_chunks,
               (unsigned long long)s->cmp.n_scored, (unsigned long long)s->bytes_ctx, (double)s->bytes_ctx / o->c.ctx,
               s->cmp.ppl, ref->cmp.ppl, 100.0 * (s->cmp.ppl / ref->cmp.ppl - 1.0), s->cmp.nll_stderr);
        if (i > 0)
            printf(", \"kl_mean\": %.8f, \"kl_p99\": %.8f, \"kl_max\": %.8f, \"top1\": %.6f, \"pareto\": %s", s->cmp.kl_mean,
                   s->cmp.kl_p99, s->cmp.kl_max, s->cmp.top1, s->pareto ? "true" : "false");
        printf(", \"passkey\": {");
        for (int k = 0; k < o->n_pk; k++) printf("%s\"%u\": %.4f", k ? ", " : "", o->pk_len[k], s->pk_acc[k]);
        printf("}");
        if (o->gen || o->n_pk)
            printf(", \"decode_tok_s\": %.2f, \"decode_steps\": %d, \"decode_depth\": %llu", s->tok_s, s->tok_s_steps,
                   (unsigned long long)o->speed_depth);
        printf("}\n");
    }
}

/* KL (log scale) and perplexity change vs bytes per token, two panels. */
static int write_plot(const opts *o, const kvs_model_info *in) {
    FILE *f = fopen(o->plot, "w");
    if (!f) { fprintf(stderr, "kvslim eval: cannot write '%s'\n", o->plot); return 1; }
    const double W = 980, H = 460, T = 56, PW = 360, PH = 300;
    const double LX[2] = {80, 560};
    double xmax = 0;
    for (int i = 0; i <= o->n_sc; i++) if ((double)o->sc[i].bytes_ctx / o->c.ctx > xmax) xmax = (double)o->sc[i].bytes_ctx / o->c.ctx;
    xmax = xmax > 0 ? xmax * 1.08 : 1;
    double klmin = 1e9, klmax = 1e-9, dmax = 0.1, dmin = 0;
    for (int i = 1; i <= o->n_sc; i++) {
        double kl = o->sc[i].cmp.kl_mean, d = 100.0 * (o->sc[i].cmp.ppl / o->sc[0].cmp.ppl - 1.0);
        if (kl > 0 && kl < klmin) klmin = kl;
        if (kl > klmax) klmax = kl;
        if (d > dmax) dmax = d;
        if (d < dmin) dmin = d;
    }
    if (klmin > klmax) klmin = klmax / 10;
    double lo = floor(log10(klmin)) , hi = ceil(log10(klmax));
    if (hi <= lo) hi = lo + 1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H, W, H);
    fprintf(f, "<text x=\"%.0f\" y=\"28\" font-size=\"17\" font-weight=\"bold\">KV quality vs bytes: ", LX[0]);
    fprintf(f, "%s, context %u (reference %s, ppl %.3f)</text>\n", in->name, o->c.ctx, o->sc[0].text, o->sc[0].cmp.ppl);
    for (int panel = 0; panel < 2; panel++) {
        double L = LX[panel];
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, PW, PH);
        for (int g = 0; g <= 4; g++) {
            double xv = xmax * g / 4, px = L + PW * g / 4;
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", px, T, px, T + PH);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", px, T + PH + 18, xv);
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">KV bytes per token at the context</text>\n", L + PW / 2, T + PH + 40);
        if (panel == 0) {
            for (double e = lo; e <= hi; e += 1) {
                double py = T + PH - PH * (e - lo) / (hi - lo);
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py, L + PW, py);
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">1e%.0f</text>\n", L - 6, py + 4, e);
            }
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f %.1f)\">mean KL(P_ref || P), nats (log)</text>\n",
                    L - 52, T + PH / 2, L - 52, T + PH / 2);
        } else {
            for (int g = 0; g <= 4; g++) {
                double yv = dmin + (dmax - dmin) * g / 4, py = T + PH - PH * g / 4;
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py, L + PW, py);
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", L - 6, py + 4, yv);
            }
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f %.1f)\">perplexity change, %%</text>\n",
                    L - 52, T + PH / 2, L - 52, T + PH / 2);
        }
        /* Pareto front as a step line through the front points, by bytes */
        int idx[MAX_SCHEMES + 1], n = 0;
        for (int i = 1; i <= o->n_sc; i++) if (o->sc[i].pareto) idx[n++] = i;
        for (int a = 1; a < n; a++)
            for (int b = a; b > 0 && o->sc[idx[b]].bytes_ctx < o->sc[idx[b - 1]].bytes_ctx; b--) { int t = idx[b]; idx[b] = idx[b - 1]; idx[b - 1] = t; }
        double px[MAX_SCHEMES + 1], py[MAX_SCHEMES + 1];
        for (int i = 1; i <= o->n_sc; i++) {
            const scheme *s = &o->sc[i];
            px[i] = L + PW * ((double)s->bytes_ctx / o->c.ctx) / xmax;
            if (panel == 0) {
                double kl = s->cmp.kl_mean > 0 ? s->cmp.kl_mean : pow(10, lo);
                py[i] = T + PH - PH * (log10(kl) - lo) / (hi - lo);
            } else {
                double d = 100.0 * (s->cmp.ppl / o->sc[0].cmp.ppl - 1.0);
                py[i] = T + PH - PH * (d - dmin) / (dmax - dmin);
            }
        }
        if (panel == 0 && n > 1) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"5 3\" points=\"");
            for (int a = 0; a < n; a++) fprintf(f, "%.1f,%.1f ", px[idx[a]], py[idx[a]]);
            fprintf(f, "\"/>\n");
        }
        for (int i = 1; i <= o->n_sc; i++) {
            const scheme *s = &o->sc[i];
            const char *col = s->pareto ? "#d62728" : "#1f77b4";
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\"/>\n", px[i], py[i], s->pareto ? 5 : 4, col);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#333\">", px[i] + 7, py[i] - 5);
            for (const char *c = s->text; *c; c++) {
                if (*c == '<') fputs("&lt;", f);
                else if (*c == '&') fputs("&amp;", f);
                else if (*c == '>') fputs("&gt;", f);
                else fputc(*c, f);
            }
            fprintf(f, "</text>\n");
        }
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" fill=\"#d62728\">red: Pareto front (no scheme has fewer bytes and lower mean KL)</text>\n",
            LX[0], H - 12);
    fprintf(f, "</svg>\n");
    bool err = ferror(f);
    if (fclose(f) != 0 || err) { fprintf(stderr, "kvslim eval: cannot write '%s'\n", o->plot); return 1; }
    return 0;
}

/* ---- the command ------------------------------------------------------------ */

int cmd_eval(int argc, char **argv) {
    opts *o = calloc(1, sizeof *o);
    if (!o) { fprintf(stderr, "kvslim eval: out of memory\n"); return 1; }
    int rc = parse_args(argc, argv, o);
    if (rc >= 0) { free(o); return rc; }
    rc = 1;
    kvs_model *m = NULL;
    kvs_token *toks[MAX_FILES] = {0};
    size_t ntok[MAX_FILES] = {0};
    pk_prompt *pks = NULL;
    size_t n_pks = 0;
    float *logits = NULL;
    kvs_session *cand[MAX_SCHEMES];
    kvs_cmp_result *cmp = calloc(MAX_SCHEMES, sizeof *cmp); /* contiguous, as kvs_compare wants */
    if (!cmp) { free(o); fprintf(stderr, "kvslim eval: out of memory\n"); return 1; }
    const uint32_t ctx = o->c.ctx;
    /* texts first: a missing file is reported before the model loads */
    char *texts[MAX_FILES] = {0};
    size_t lens[MAX_FILES];
    for (int i = 0; i < o->n_files; i++)
        if (!(texts[i] = cli_read_file(o->files[i], &lens[i]))) goto done;
    if (!(m = cli_load_model(&o->c))) goto done;
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    if (in.n_ctx_train > 0 && ctx > (uint32_t)in.n_ctx_train) {
        fprintf(stderr, "kvslim eval: -c %u exceeds the %d tokens %s was trained on\n", ctx, in.n_ctx_train, in.name);
        rc = 2;
        goto done;
    }
    for (int i = 0; i < o->n_files; i++) {
        if (!(toks[i] = cli_tokenize(m, texts[i], lens[i], -1, false, &ntok[i]))) goto done;
        if (ntok[i] < ctx) {
            fprintf(stderr, "kvslim eval: '%s' has %zu tokens, fewer than one chunk of %u; use a longer text or a smaller -c\n",
                    o->files[i], ntok[i], ctx);
            goto done;
        }
    }
    for (int i = 0; i <= o->n_sc; i++)
        if ((rc = open_scheme(m, o, &o->sc[i], ctx)) != 0) goto done;
    rc = 1;
    for (int i = 0; i < o->n_sc; i++) cand[i] = o->sc[1 + i].s;

    int pk_longest = 0;
    /* passkey prompts are built before the long ppl pass so a bad length fails at once */
    if (o->n_pk) {
        pks = calloc((size_t)o->n_pk * (size_t)o->n_depths * (size_t)o->trials, sizeof *pks);
        if (!pks) { fprintf(stderr, "kvslim eval: out of memory\n"); goto done; }
        uint64_t rng = 0x9e3779b97f4a7c15ull ^ (o->seed * 0x2545f4914f6cdd1dull);
        if (!rng) rng = 1;
        bool chat = o->chat;
        if (chat) {
            char *probe = kvs_chat_format_user(m, "x");
            if (!probe) { fprintf(stderr, "kvslim eval: %s has no chat template; passkey prompts use --format raw\n", in.name); chat = false; }
            free(probe);
        }
        for (int k = 0; k < o->n_pk; k++) {
            uint32_t nf = pk_fit(m, o->pk_len[k] - PK_GEN, chat);
            if (nf == 0) { fprintf(stderr, "kvslim eval: passkey length %u is too short for the prompt\n", o->pk_len[k]); rc = 2; goto done; }
            for (int d = 0; d < o->n_depths; d++)
                for (long long t = 0; t < o->trials; t++) {
                    pk_prompt *p = &pks[n_pks];
                    p->key = 10000 + (uint32_t)(rng_next(&rng) % 990000); /* 5-6 digits */
                    p->len_i = k;
                    if (!(p->toks = pk_tokenize(m, nf, o->depths[d], p->key, chat, &p->n))) goto done;
                    n_pks++;
                    if (p->n + PK_GEN > ctx) { fprintf(stderr, "kvslim eval: passkey prompt of %zu tokens does not fit -c %u\n", p->n, ctx); goto done; }
                }
            fprintf(stderr, "passkey %u: %u filler paragraphs, prompts of %zu tokens (%s format)\n", o->pk_len[k], nf,
                    pks[n_pks - 1].n, chat ? "chat" : "raw");
        }
        for (int k = 1; k < o->n_pk; k++) if (o->pk_len[k] > o->pk_len[pk_longest]) pk_longest = k;
        o->speed_depth = pks[0].n;
        for (size_t j = 0; j < n_pks; j++) if (pks[j].len_i == pk_longest) o->speed_depth = pks[j].n;
    }

    /* 1. perplexity, KL, top-1: all schemes in lockstep with the reference */
    uint64_t total_chunks = 0;
    size_t use[MAX_FILES];
    for (int i = 0; i < o->n_files; i++) {
        size_t nc = ntok[i] / ctx;
        if (o->max_chunks && nc > (size_t)o->max_chunks) nc = (size_t)o->max_chunks;
        use[i] = nc * ctx;
        total_chunks += nc;
        fprintf(stderr, "%s: %zu tokens, %zu chunks of %u\n", o->files[i], ntok[i], nc, ctx);
    }
    /* kvs_compare reports tokens decoded over all sessions */
    const uint64_t per_chunk = (uint64_t)ctx * (uint64_t)(o->n_sc + 1);
    prog pg = {.what = "ppl/KL", .t0 = cli_now(), .total = total_chunks * per_chunk, .percent = true};
    for (int i = 0; i < o->n_files; i++) {
        if (kvs_compare(o->sc[0].s, cand, o->n_sc, toks[i], use[i], ctx, on_progress, &pg, &o->sc[0].cmp, cmp) != KVS_OK) {
            fprintf(stderr, "\n");
            cli_error("eval");
            goto done;
        }
        pg.base += use[i] / ctx * per_chunk;
    }
    fprintf(stderr, "\n");
    for (int i = 0; i < o->n_sc; i++) { o->sc[1 + i].cmp = cmp[i]; memset(&cmp[i], 0, sizeof cmp[i]); }
    for (int i = 0; i <= o->n_sc; i++) kvs_cmp_finish(&o->sc[i].cmp);

    /* 2. passkey: the same prompts for every scheme */
    logits = malloc(sizeof(float) * (size_t)in.n_vocab);
    if (!logits) { fprintf(stderr, "kvslim eval: out of memory\n"); goto done; }
    if (o->n_pk) {
        prog pp = {.what = "passkey prompts", .t0 = cli_now(), .total = (uint64_t)n_pks * (uint64_t)(o->n_sc + 1)};
        for (int i = 0; i <= o->n_sc; i++) {
            int hits[MAX_PK] = {0}, tries[MAX_PK] = {0}, dec_steps = 0;
            double dec_time = 0;
            for (size_t j = 0; j < n_pks; j++) {
                bool hit = false;
                double ds;
                int dn;
                if (pk_run(o->sc[i].s, m, &pks[j], logits, in.n_vocab, &hit, &ds, &dn) != 0) { fprintf(stderr, "\n"); cli_error("passkey"); goto done; }
                if (pks[j].len_i == pk_longest) { dec_time += ds; dec_steps += dn; }
                hits[pks[j].len_i] += hit;
                tries[pks[j].len_i]++;
                on_progress(&pp, (uint64_t)i * n_pks + j + 1, pp.total, 0);
            }
            for (int k = 0; k < o->n_pk; k++) o->sc[i].pk_acc[k] = tries[k] ? (double)hits[k] / tries[k] : 0.0;
            if (dec_steps && dec_time > 0) { o->sc[i].tok_s = dec_steps / dec_time; o->sc[i].tok_s_steps = dec_steps; }
        }
        fprintf(stderr, "\n");
    }

    /* 3. decode speed at depth ctx - gen on the first text, unless the
     * passkey answers (greedy steps after the longest prompts) gave it */
    if (o->gen && !o->n_pk) {
        uint64_t depth = ctx - (uint64_t)o->gen;
        o->speed_depth = depth;
        prog ps = {.what = "decode speed", .t0 = cli_now(), .total = (uint64_t)o->n_sc + 1};
        for (int i = 0; i <= o->n_sc; i++) {
            kvs_session *s = o->sc[i].s;
            kvs_session_reset(s);
            if (kvs_decode(s, toks[0], depth, false, NULL) != KVS_OK) { cli_error("decode"); goto done; }
            double t0 = cli_now();
            for (long long g = 0; g < o->gen; g++)
                if (kvs_decode(s, &toks[0][depth + (uint64_t)g], 1, false, logits) != KVS_OK) { cli_error("decode"); goto done; }
            o->sc[i].tok_s = (double)o->gen / (cli_now() - t0);
            o->sc[i].tok_s_steps = (int)o->gen;
            kvs_session_reset(s);
            on_progress(&ps, (uint64_t)i + 1, ps.total, 0);
        }
        fprintf(stderr, "\n");
    }

    mark_pareto(o);
    if (o->json) print_json(o, &in);
    else print_table(o, &in);
    if (o->plot && write_plot(o, &in) != 0) goto done;
    rc = 0;
done:
    for (size_t j = 0; j < n_pks; j++) free(pks[j].toks);
    free(pks);
    free(logits);
    for (int i = 0; i < o->n_files; i++) { free(toks[i]); free(texts[i]); }
    for (int i = 0; i <= o->n_sc; i++) { kvs_session_free(o->sc[i].s); kvs_cmp_free(&o->sc[i].cmp); }
    for (int i = 0; i < MAX_SCHEMES; i++) kvs_cmp_free(&cmp[i]);
    free(cmp);
    kvs_model_free(m);
    free(o);
    return rc;
}
