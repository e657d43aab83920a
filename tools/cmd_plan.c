/* `kvslim plan`: parse the command line, build the model description
 * (preset / GGUF / config.json), apply --kv and --what-if, compute one
 * result per scheme (--compare) and render text, JSON, CSV and/or SVG. */
#include "cmd_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/error.h"
#include "plan/plan.h"

#define MAX_SCHEMES 12

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvslim plan (--preset NAME | -m MODEL.gguf | --config config.json) [options]\n"
            "\n"
            "How much KV memory, context, concurrency, speed and cost - without loading weights.\n"
            "\n"
            "  --preset NAME        built-in model (see --list)\n"
            "  -m, --model FILE     GGUF file (metadata only)\n"
            "  --config FILE        Hugging Face config.json\n"
            "  --ctx LIST           context lengths, e.g. 4k,32k,128k,1m (default 4k,32k,128k)\n"
            "  --batch N            concurrent sequences for the KV and speed columns (default 1)\n"
            "  --kv TYPE            KV element format: f16 bf16 f32 q8_0 q4_0 q4_1 q5_0 q5_1,\n"
            "                       tq2 tq2.5 tq3 tq3.5 tq4 tq2j tq3j tqXkYv (rotated codebooks),\n"
            "                       qXkYv (KIVI: keys X bits per channel, values Y bits per token)\n"
            "  --hw SPEC            h100-80g h200 rtx4090 rtx3090 m3max-128g dgx-spark, this (measured),\n"
            "                       or custom:mem=24G,bw=1000G,price=0.5 (mem GiB, bw GB/s, USD/hour)\n"
            "  --kv-budget SIZE     a KV pool of SIZE bytes (e.g. 512M, as serve --kv-budget): seqs fit\n"
            "                       and max context count it instead of memory minus weights\n"
            "  --what-if CHAIN      transforms applied to every layer, comma separated:\n"
            "                       latent:r=R[,rope=D]  window=N[+S]  share=K  compress=M[,raw=W]\n"
            "                       q8_0|q4_0|...  tqB  tqXkYv  qXkYv  kivi:k=X,v=Y,g=G  page=P\n"
            "  --compare A,B,C      several schemes side by side (each applied to the model;\n"
            "                       join transforms inside one scheme with '/', e.g. latent:r=256/q8_0;\n"
            "                       'gqa' or 'base' = unchanged)\n"
            "  --json | --csv       machine-readable output instead of the text table\n"
            "  --plot FILE.svg      KV size vs context (log x) for the schemes\n"
            "  --list               list presets and hardware\n"
            "  -h, --help           this help\n"
            "\n"
            "examples:\n"
            "  kvslim plan --preset deepseek-v3 --ctx 128k --hw h100-80g\n"
            "  kvslim plan -m model.gguf --ctx 4k,32k,128k --batch 8 --kv q8_0\n"
            "  kvslim plan --config config.json --hw custom:mem=24G,bw=1000G,price=0.5 --what-if latent:r=256,window=4096\n"
            "  kvslim plan --preset llama-3.1-8b --compare gqa,mla:r=512,q4k2v,window=4096 --plot kv.svg\n");
}

static int fail(const char *what) {
    fprintf(stderr, "kvslim plan: error: %s\n", what);
    return 1;
}

static int fail_last(void) { return fail(kvs_last_error()); }

static bool is_param_key(const char *item) {
    const char *eq = strchr(item, '=');
    if (!eq || strchr(item, ':')) return false;
    size_t n = (size_t)(eq - item);
    static const char *params[] = {"r", "rank", "rope", "raw", "sinks", "k", "v", "g"};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        if (strlen(params[i]) == n && !strncmp(item, params[i], n)) return true;
    return false;
}

/* Splits "gqa,mla:r=512,rope=32,q4k2v" into schemes; parameter items attach
 * to the scheme before them. '/' inside a scheme becomes ','. */
static int split_compare(const char *s, char out[][160], size_t cap, size_t *n_out) {
    size_t n = 0;
    char buf[1024];
    if (strlen(s) >= sizeof buf) return fail("--compare: list too long");
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (!*tok) continue;
        if (is_param_key(tok) && n > 0) {
            size_t len = strlen(out[n - 1]);
            if (len + strlen(tok) + 2 >= 160) return fail("--compare: scheme too long");
            snprintf(out[n - 1] + len, 160 - len, ",%s", tok);
            continue;
        }
        if (n == cap) return fail("--compare: too many schemes (at most 12)");
        if (strlen(tok) >= 160) return fail("--compare: scheme too long");
        snprintf(out[n++], 160, "%s", tok);
    }
    if (n == 0) return fail("--compare: empty list");
    *n_out = n;
    return 0;
}

static void list_all(void) {
    printf("model presets:\n");
    for (size_t i = 0;; i++) {
        const char *title;
        const char *name = kvs_plan_preset_name(i, &title);
        if (!name) break;
        printf("  %-20s %s\n", name, title);
    }
    printf("\nhardware:\n");
    for (size_t i = 0; i < kvs_plan_hw_count(); i++) {
        const kvs_plan_hw *h = kvs_plan_hw_at(i);
        printf("  %-20s %s, $%.2f/h\n", h->name, h->note, h->price_hour);
    }
    printf("  %-20s physical RAM + measured read bandwidth\n", "this");
    printf("  %-20s e.g. custom:mem=24G,bw=1000G,price=0.5\n", "custom:...");
}

int kvs_cmd_plan(int argc, char **argv) {
    const char *preset = NULL, *gguf = NULL, *config = NULL, *ctx_s = "4k,32k,128k", *kv = NULL, *hw_s = NULL;
    const char *whatif = NULL, *compare = NULL, *plot = NULL, *budget_s = NULL;
    bool json = false, csv = false;
    long batch = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT()                                                                          \
    do {                                                                                \
        if (i + 1 >= argc) {                                                            \
            fprintf(stderr, "kvslim plan: error: %s needs a value (see --help)\n", a);  \
            return 2;                                                                   \
        }                                                                               \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--list")) { list_all(); return 0; }
        else if (!strcmp(a, "--preset")) { NEXT(); preset = argv[++i]; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEXT(); gguf = argv[++i]; }
        else if (!strcmp(a, "--config")) { NEXT(); config = argv[++i]; }
        else if (!strcmp(a, "--ctx")) { NEXT(); ctx_s = argv[++i]; }
        else if (!strcmp(a, "--batch")) {
            NEXT();
            char *end;
            batch = strtol(argv[++i], &end, 10);
            if (*end || batch < 1 || batch > 1000000) {
                fprintf(stderr, "kvslim plan: error: --batch must be an integer in 1..1000000, got '%s'\n", argv[i]);
                return 2;
            }
        }
        else if (!strcmp(a, "--kv")) { NEXT(); kv = argv[++i]; }
        else if (!strcmp(a, "--hw")) { NEXT(); hw_s = argv[++i]; }
        else if (!strcmp(a, "--kv-budget")) { NEXT(); budget_s = argv[++i]; }
        else if (!strcmp(a, "--what-if")) { NEXT(); whatif = argv[++i]; }
        else if (!strcmp(a, "--compare")) { NEXT(); compare = argv[++i]; }
        else if (!strcmp(a, "--plot")) { NEXT(); plot = argv[++i]; }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--csv")) csv = true;
        else {
            fprintf(stderr, "kvslim plan: error: unknown option '%s' (see --help)\n", a);
            return 2;
        }
#undef NEXT
    }
    int n_src = (preset != NULL) + (gguf != NULL) + (config != NULL);
    if (n_src != 1) {
        fprintf(stderr, "kvslim plan: error: give exactly one of --preset NAME, -m MODEL.gguf, --config config.json "
                        "(see --help, --list)\n");
        return 2;
    }
    if (json && csv) { fprintf(stderr, "kvslim plan: error: --json and --csv are exclusive\n"); return 2; }

    uint64_t ctx[KVS_PLAN_MAX_CTX];
    size_t n_ctx = 0;
    if (kvs_plan_parse_ctx_list(ctx_s, ctx, KVS_PLAN_MAX_CTX, &n_ctx) != KVS_OK) return fail_last();
    uint64_t max_ctx = 0;
    for (size_t i = 0; i < n_ctx; i++) if (ctx[i] > max_ctx) max_ctx = ctx[i];

    kvs_plan_hw hw;
    memset(&hw, 0, sizeof hw);
    if (hw_s && kvs_plan_hw_parse(hw_s, &hw) != KVS_OK) return fail_last();
    if (budget_s) { /* a KV pool of this size: with --hw its speed, without only the fit */
        unsigned long long b = 0;
        if (!cli_parse_count(budget_s, &b) || b == 0) {
            fprintf(stderr, "kvslim plan: error: --kv-budget wants a size such as 512M or 4G, got '%s'\n", budget_s);
            return 2;
        }
        if (!hw_s) snprintf(hw.name, sizeof hw.name, "kv-budget");
        hw.kv_budget = (double)b;
    }
    const bool has_hw = hw_s || budget_s;

    kvs_plan_model base;
    kvs_status st;
    if (preset) st = kvs_plan_preset(preset, &base);
    else if (gguf) st = kvs_plan_from_gguf(gguf, &base);
    else st = kvs_plan_from_config_file(config, &base);
    if (st != KVS_OK) return fail_last();

    int rc = 0;
    char schemes[MAX_SCHEMES][160];
    size_t n_sch = 1;
    kvs_plan_model models[MAX_SCHEMES];
    kvs_plan_result *results = NULL;
    size_t n_models = 0;
    memset(models, 0, sizeof models);

    if (kv && kvs_plan_apply_kv_type(&base, kv) != KVS_OK) { rc = fail_last(); goto done; }
    if (whatif && kvs_plan_apply_whatif(&base, whatif) != KVS_OK) { rc = fail_last(); goto done; }
    if (compare) {
        if (split_compare(compare, schemes, MAX_SCHEMES, &n_sch)) { rc = 1; goto done; }
    } else {
        snprintf(schemes[0], sizeof schemes[0], "%s", whatif ? whatif : "base");
    }
    results = calloc(n_sch, sizeof *results);
    if (!results) { rc = fail("out of memory"); goto done; }
    for (size_t k = 0; k < n_sch; k++) {
        if (kvs_plan_model_copy(&models[k], &base) != KVS_OK) { rc = fail_last(); goto done; }
        n_models++;
        if (compare) {
            char spec[160];
            snprintf(spec, sizeof spec, "%.150s", schemes[k]);
            for (char *p = spec; *p; p++) if (*p == '/') *p = ',';
            if (kvs_plan_apply_whatif(&models[k], spec) != KVS_OK) {
                char msg[400];
                snprintf(msg, sizeof msg, "--compare '%.150s': %.200s", schemes[k], kvs_last_error());
                rc = fail(msg);
                goto done;
            }
        }
        char label[160];
        if (kv && !compare) snprintf(label, sizeof label, "%.60s%s%.90s", kv, whatif ? "," : "", whatif ? whatif : "");
        else snprintf(label, sizeof label, "%.150s", schemes[k]);
        if (kvs_plan_compute(&models[k], label, ctx, n_ctx, (uint32_t)batch, has_hw ? &hw : NULL, &results[k]) != KVS_OK) {
            rc = fail_last();
            goto done;
        }
    }

    if (json) kvs_plan_render_json(stdout, results, n_sch, max_ctx);
    else if (csv) kvs_plan_render_csv(stdout, results, n_sch);
    else {
        kvs_plan_render_text(stdout, results, n_sch, max_ctx);
        if (!has_hw) printf("\n(no --hw: memory fit, speed and cost omitted; try --hw h100-80g or --hw this)\n");
    }
    if (plot) {
        FILE *f = fopen(plot, "w");
        if (!f) {
            char msg[400];
            snprintf(msg, sizeof msg, "--plot: cannot write '%s'", plot);
            rc = fail(msg);
            goto done;
        }
        kvs_plan_render_svg(f, results, n_sch, max_ctx < 131072 ? 131072 : max_ctx);
        if (fclose(f) != 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "--plot: write error on '%s'", plot);
            rc = fail(msg);
            goto done;
        }
        if (!json && !csv) printf("wrote %s\n", plot);
    }
    fflush(stdout);
    if (ferror(stdout)) rc = fail("write error on stdout");
done:
    for (size_t k = 0; k < n_models; k++) kvs_plan_model_free(&models[k]);
    free(results);
    kvs_plan_model_free(&base);
    return rc;
}
