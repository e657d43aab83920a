/* `kvslim compress`: retrofit latent KV, cross-layer sharing and KV formats
 * onto a llama-family GGUF. Calibrates on text (src/retrofit/calib.c),
 * plans ranks / kept rotary dims / shared layers (src/retrofit/lowrank.c)
 * and writes a new GGUF: every tensor and key of the input, plus the
 * projection tensors and the kvslim.* keys (docs/compress.md). The input is
 * never modified; nothing is written unless everything succeeded. -o must
 * name a regular file (or nothing yet), none of the inputs (src/core/
 * safe_file.h): checked before calibrating. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/safe_file.h"
#include "gguf/gguf.h"
#include "kv/kv_spec.h"
#include "model/model.h"
#include "retrofit/retrofit.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kvslim compress -m IN.gguf --calib TEXT [--calib TEXT2 ...] [options] -o OUT.gguf\n"
            "Retrofits a smaller KV cache onto a llama/qwen2/gemma3 model (training-free;\n"
            "Gemma 3's sliding-window layers keep their window caches, its global layers\n"
            "become latent):\n"
            "  --latent r=N          latent K and V of rank N in every layer (MLA-style)\n"
            "  --latent budget=B     per-layer ranks from the spectra so that all layers\n"
            "                        together store about B bytes per token\n"
            "  --rope pre            (default) compress pre-RoPE keys, rebuild them before RoPE\n"
            "  --rope-keep N         keep N rotary pairs per KV head exact (chosen on the\n"
            "                        calibration text), compress the rest post-RoPE; decode\n"
            "                        runs in latent space\n"
            "  --share N             N layers reuse an earlier layer's KV (least measured error)\n"
            "  --weights attn|plain  subspaces weighted by what an error costs (query energy for\n"
            "                        keys, W_o column norms for values) or plain PCA (default)\n"
            "  --center              subspaces of the centered activations, means stored\n"
            "  --kv FORMAT           element format on top: with --latent f32|f16|bf16|q8_0|q4_0;\n"
            "                        without, any kv rule settings (e.g. q4k4v,rotate)\n"
            "  --calib-ctx N         calibration window in tokens (1024)\n"
            "  --calib-tokens N      use at most N calibration tokens (16384)\n"
            "  --calib-cache FILE    reuse calibration statistics from FILE, or save them there\n"
            "  -t, --threads N       threads (all CPUs)\n"
            "  -o, --output FILE     output GGUF (must differ from the input)\n");
}

static void on_progress(void *ctx, int64_t done, int64_t total) {
    double t0 = *(double *)ctx;
    fprintf(stderr, "\rcalibrating: %lld/%lld tokens (%.1f s)   ", (long long)done, (long long)total, cli_now() - t0);
}

/* -o against the inputs, before any work: 2 when it names one of them (a
 * usage error), 1 when it is not a regular file, 0 when it may be written. */
static int check_output(const char *out_path, const char *in_path, const char *const *calib, int n_calib,
                        const char *cache) {
    kvs_safe_protect prot[18];
    int n = 0;
    prot[n++] = (kvs_safe_protect){in_path, "input model"};
    for (int i = 0; i < n_calib; i++) prot[n++] = (kvs_safe_protect){calib[i], "calibration text"};
    if (cache) prot[n++] = (kvs_safe_protect){cache, "calibration cache"};
    kvs_status st = kvs_safe_check_target(out_path, prot, n);
    if (st == KVS_OK) return 0;
    fprintf(stderr, "kvslim compress: -o: %s\n", kvs_last_error());
    return st == KVS_ERR_INVALID_ARG ? 2 : 1;
}

/* "r=N" or "budget=B" (B with k/M suffixes). */
static bool parse_latent(const char *v, kvs_retro_opts *o) {
    long long x;
    unsigned long long b;
    if (!strncmp(v, "r=", 2) && cli_parse_int(v + 2, 1, 1 << 20, &x)) { o->rank = (int32_t)x; return true; }
    if (!strncmp(v, "budget=", 7) && cli_parse_count(v + 7, &b) && b > 0) { o->budget = (double)b; return true; }
    return false;
}

int cmd_compress(int argc, char **argv) {
    const char *in_path = NULL, *out_path = NULL, *kv = NULL, *calib[16], *cache = NULL;
    int n_calib = 0;
    long long threads = 0, calib_ctx = 1024, calib_max = 16384, x;
    kvs_retro_opts o = {.mode = KVS_RETRO_NONE, .latent_type = KVS_TYPE_F16};
    bool latent = false, rope_pre = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 2; } while (0)
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); in_path = v; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { VAL(); out_path = v; }
        else if (!strcmp(a, "--calib")) {
            VAL();
            if (n_calib == 16) { fprintf(stderr, "kvslim compress: at most 16 --calib files\n"); return 2; }
            calib[n_calib++] = v;
        } else if (!strcmp(a, "--latent")) {
            VAL();
            if (!parse_latent(v, &o)) { fprintf(stderr, "kvslim compress: bad --latent '%s' (want r=N or budget=BYTES_PER_TOKEN)\n", v); return 2; }
            latent = true;
        } else if (!strcmp(a, "--rope")) {
            VAL();
            if (strcmp(v, "pre")) { fprintf(stderr, "kvslim compress: bad --rope '%s' (want pre; or use --rope-keep N)\n", v); return 2; }
            rope_pre = true;
        } else if (!strcmp(a, "--rope-keep")) {
            VAL();
            if (!cli_parse_int(v, 1, 4096, &x)) { fprintf(stderr, "kvslim compress: bad --rope-keep '%s'\n", v); return 2; }
            o.rope_keep = (int32_t)x;
        } else if (!strcmp(a, "--share")) {
            VAL();
            if (!cli_parse_int(v, 0, 4096, &x)) { fprintf(stderr, "kvslim compress: bad --share '%s'\n", v); return 2; }
            o.share = (int32_t)x;
        } else if (!strcmp(a, "--kv")) { VAL(); kv = v; }
        else if (!strcmp(a, "--calib-cache")) { VAL(); cache = v; }
        else if (!strcmp(a, "--center")) o.center = true;
        else if (!strcmp(a, "--weights")) {
            VAL();
            if (!strcmp(v, "plain")) o.weighted = false;
            else if (!strcmp(v, "attn")) o.weighted = true;
            else { fprintf(stderr, "kvslim compress: bad --weights '%s' (want attn or plain)\n", v); return 2; }
        }
        else if (!strcmp(a, "--calib-ctx")) {
            VAL();
            if (!cli_parse_int(v, 16, 1 << 20, &calib_ctx)) { fprintf(stderr, "kvslim compress: bad --calib-ctx '%s'\n", v); return 2; }
        } else if (!strcmp(a, "--calib-tokens")) {
            VAL();
            if (!cli_parse_int(v, 1, 1ll << 30, &calib_max)) { fprintf(stderr, "kvslim compress: bad --calib-tokens '%s'\n", v); return 2; }
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            VAL();
            if (!cli_parse_int(v, 0, 1024, &threads)) { fprintf(stderr, "kvslim compress: bad --threads '%s'\n", v); return 2; }
        } else { fprintf(stderr, "kvslim compress: unknown option '%s' (see --help)\n", a); return 2; }
#undef VAL
    }
    if (!in_path || !out_path || (!n_calib && !cache)) {
        usage();
        fprintf(stderr, "kvslim compress: need -m IN, --calib TEXT and -o OUT\n");
        return 2;
    }
    if (rope_pre && o.rope_keep) { fprintf(stderr, "kvslim compress: --rope pre and --rope-keep exclude each other\n"); return 2; }
    if (!latent && (rope_pre || o.rope_keep)) { fprintf(stderr, "kvslim compress: --rope/--rope-keep need --latent\n"); return 2; }
    if (!latent && !o.share && !kv) { fprintf(stderr, "kvslim compress: nothing to do: give --latent, --share or --kv\n"); return 2; }
    if (latent) o.mode = o.rope_keep ? KVS_RETRO_KEEP : KVS_RETRO_PRE;
    if (!strcmp(in_path, out_path)) {
        fprintf(stderr, "kvslim compress: refusing to overwrite the input '%s'; give another -o\n", in_path);
        return 2;
    }
    if (cache && !strcmp(cache, out_path)) {
        fprintf(stderr, "kvslim compress: --calib-cache and -o name the same file '%s'\n", out_path);
        return 2;
    }
    int chk = check_output(out_path, in_path, calib, n_calib, cache);
    if (chk) return chk;
    /* formats on top */
    char rules[1024] = "";
    if (kv) {
        kvs_kv_type t;
        if (latent) {
            if (!kvs_kv_type_from_name(kv, &t)) {
                fprintf(stderr, "kvslim compress: --kv '%s': latent rows take f32, f16, bf16, q8_0 or q4_0\n", kv);
                return 2;
            }
            o.latent_type = kvs_kv_type_dtype(t);
        }
        snprintf(rules, sizeof rules, "%s", kv);
    }
    const kvs_type_traits *tt = kvs_type_traits_of(o.latent_type);
    o.granule = tt && tt->block_size > 8 ? tt->block_size : 8;

    int rc = 1;
    kvs_gguf *g = NULL;
    kvs_model *m = NULL;
    kvs_calib *c = NULL;
    kvs_retro_plan *p = NULL;
    kvs_token *toks = NULL;
    char *text = NULL;
    if (kvs_gguf_open(in_path, true, &g) != KVS_OK) { cli_error(in_path); goto done; }
    const char *arch = kvs_gguf_get_str(g, "general.architecture");
    if (!arch || (strcmp(arch, "llama") && strcmp(arch, "qwen2") && strcmp(arch, "gemma3"))) {
        fprintf(stderr, "kvslim compress: %s: architecture '%s' cannot be retrofitted (supported: llama, qwen2, gemma3)\n",
                in_path, arch ? arch : "(none)");
        goto done;
    }
    if (kvs_gguf_find(g, KVS_RETRO_KEY_VER) || kvs_gguf_find(g, KVS_RETRO_KEY_MODE) || kvs_gguf_find(g, KVS_RETRO_KEY_RULES)) {
        fprintf(stderr, "kvslim compress: %s is already compressed (has kvslim.* keys); start from the original\n", in_path);
        goto done;
    }
    kvs_model_params mp = kvs_model_params_default();
    if (kvs_model_load(in_path, &mp, &m) != KVS_OK) { cli_error(in_path); goto done; }
    /* options that the model's geometry rules out, before calibrating */
    {
        const kvs_hparams *hp = &m->hp;
        int32_t kd = hp->n_head_kv * hp->head_dim_k, vd = hp->n_head_kv * hp->head_dim_v;
        if (latent && o.rank > (kd < vd ? kd : vd)) {
            fprintf(stderr, "kvslim compress: --latent r=%d: rank larger than the layer's key/value width "
                    "(%d KV heads x head dim %d = %d)\n", o.rank, hp->n_head_kv, hp->head_dim_k, kd < vd ? kd : vd);
            goto done;
        }
        if (o.rope_keep && 2 * o.rope_keep > hp->rope.n_dims) {
            fprintf(stderr, "kvslim compress: --rope-keep %d: a KV head has only %d rotary pairs\n", o.rope_keep,
                    hp->rope.n_dims / 2);
            goto done;
        }
        if (o.share >= hp->n_layer) {
            fprintf(stderr, "kvslim compress: --share %d: the model has only %d layers\n", o.share, hp->n_layer);
            goto done;
        }
    }
    /* the rules must parse before any work */
    {
        const kvs_hparams *hp = &m->hp;
        kvs_kv_scheme *tmp = kvs_calloc((size_t)hp->n_layer, sizeof *tmp);
        if (!tmp) { fprintf(stderr, "kvslim compress: out of memory\n"); goto done; }
        kvs_model_full_schemes(m, KVS_TYPE_F16, tmp);
        kvs_status e = kvs_kv_spec_apply(tmp, hp->n_layer, rules);
        kvs_free(tmp);
        if (e != KVS_OK) { fprintf(stderr, "kvslim compress: --kv: %s\n", kvs_last_error()); goto done; }
    }
    FILE *cf = cache ? fopen(cache, "rb") : NULL;
    if (cf) {
        fclose(cf);
        if (kvs_calib_load(m, cache, &c) != KVS_OK) { cli_error("calibration cache"); goto done; }
        fprintf(stderr, "calibration: %llu tokens of statistics from %s\n", (unsigned long long)c->n_tokens, cache);
    } else {
        if (!n_calib) { fprintf(stderr, "kvslim compress: no --calib text and no cache at '%s'\n", cache); goto done; }
        /* calibration text: the files joined */
        size_t tlen = 0;
        for (int i = 0; i < n_calib; i++) {
            size_t len;
            char *t = cli_read_file(calib[i], &len);
            if (!t) goto done;
            char *nt = realloc(text, tlen + len + 3);
            if (!nt) { free(t); fprintf(stderr, "kvslim compress: out of memory\n"); goto done; }
            text = nt;
            memcpy(text + tlen, t, len);
            tlen += len;
            memcpy(text + tlen, "\n\n", 3);
            tlen += 2;
            free(t);
        }
        size_t n_tok = 0;
        if (!(toks = cli_tokenize(m, text, tlen, -1, false, &n_tok))) goto done;
        if ((long long)n_tok > calib_max) n_tok = (size_t)calib_max;
        fprintf(stderr, "calibration: %zu tokens from %d file(s), windows of %lld\n", n_tok, n_calib, calib_ctx);
        double t0 = cli_now();
        if (kvs_calib_run(m, toks, (int64_t)n_tok, (uint32_t)calib_ctx, (int32_t)threads, on_progress, &t0, &c) != KVS_OK) {
            fprintf(stderr, "\n");
            cli_error("calibration");
            goto done;
        }
        fprintf(stderr, "\n");
        if (cache && kvs_calib_save(c, cache) != KVS_OK) { cli_error("calibration cache"); goto done; }
    }
    if (kvs_retro_plan_build(c, m, &o, &p) != KVS_OK) { cli_error("compress"); goto done; }
    /* shared layers as rules */
    for (int32_t l = 0; l < p->n_layer; l++) {
        if (p->shared[l] < 0) continue;
        size_t len = strlen(rules);
        snprintf(rules + len, sizeof rules - len, "%s%d:shared=%d", len ? ";" : "", l, p->shared[l]);
    }
    /* report the plan and the bytes it implies */
    const kvs_hparams *hp = &m->hp;
    double el = (double)kvs_row_bytes(o.latent_type, 32) / 32.0;
    double full = 0, ours = 0;
    for (int32_t l = 0; l < p->n_layer; l++) {
        double f16 = 2.0 * (p->kd + p->vd);
        if (p->shared[l] >= 0) { full += f16; fprintf(stderr, "layer %2d: shares layer %d\n", l, p->shared[l]); continue; }
        if (p->mode == KVS_RETRO_NONE) continue;
        if (!p->rv[l]) { fprintf(stderr, "layer %2d: keeps its window cache\n", l); continue; }
        full += f16;
        ours += el * (p->rk[l] + p->rv[l] + p->keep[l]);
        fprintf(stderr, "layer %2d: K rank %3d + %2d kept dims (%.2f%% energy dropped), V rank %3d (%.2f%% dropped)\n", l,
                p->rk[l], p->keep[l], 100 * p->k_lost[l], p->rv[l], 100 * p->v_lost[l]);
    }
    if (p->mode != KVS_RETRO_NONE)
        fprintf(stderr, "KV per token in the unbounded layers: %.0f bytes (f16 full: %.0f, %.2fx fewer)\n", ours, full,
                full / ours);
    (void)hp;
    fprintf(stderr, "rules: %s\n", rules[0] ? rules : "(none)");
    if (kvs_retro_write(g, p, rules, out_path) != KVS_OK) { cli_error(out_path); goto done; }
    fprintf(stderr, "wrote %s\n", out_path);
    rc = 0;
done:
    kvs_retro_plan_free(p);
    kvs_calib_free(c);
    free(toks);
    free(text);
    kvs_model_free(m);
    kvs_gguf_close(g);
    return rc;
}
