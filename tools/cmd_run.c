/* `kvslim run`: generate text from a prompt. Text goes to stdout, timing and
 * memory figures to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kvslim run [options] -p PROMPT\n"
            "Generate a continuation of PROMPT.\n\n%s"
            "  -p, --prompt TEXT   prompt text\n"
            "  -f, --file FILE     read the prompt from FILE\n"
            "  -n, --n-predict N   tokens to generate (default 128)\n"
            "      --chat          wrap the prompt in the model's chat template\n"
            "      --temp X        temperature; 0 = greedy (default 0.8)\n"
            "      --top-k N       (default 40)   --top-p X (0.95)   --min-p X (0.05)\n"
            "      --repeat-penalty X (1.0)       --repeat-last-n N (64)\n"
            "  -s, --seed N        sampling seed\n"
            "      --ignore-eos    keep generating after an end-of-generation token\n"
            "      --print-tokens  print generated token ids to stdout instead of text\n",
            cli_common_help());
}

int cmd_run(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c);
    kvs_sampler_params sp = kvs_sampler_params_default();
    const char *prompt = NULL, *file = NULL;
    long long n_predict = 128, v;
    double f;
    bool chat = false, ignore_eos = false, print_tokens = false;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *val;
#define VAL() do { if (!(val = cli_value(argc, argv, &i))) return 2; } while (0)
#define BAD() do { fprintf(stderr, "kvslim run: bad value '%s' for %s\n", val, a); return 2; } while (0)
/* sampler options: NaN fails every comparison, so each test is "inside" */
#define BADF(want) do { fprintf(stderr, "kvslim run: bad value '%s' for %s: want %s\n", val, a, want); return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { VAL(); prompt = val; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { VAL(); file = val; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { VAL(); if (!cli_parse_int(val, 0, 1 << 26, &n_predict)) BAD(); }
        else if (!strcmp(a, "--chat")) chat = true;
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = true;
        else if (!strcmp(a, "--print-tokens")) print_tokens = true;
        else if (!strcmp(a, "--temp")) { VAL(); if (!cli_parse_float(val, &f) || !(f >= 0 && f <= 1e6)) BADF("a finite number >= 0 (0 = greedy)"); sp.temperature = (float)f; }
        else if (!strcmp(a, "--top-k")) { VAL(); if (!cli_parse_int(val, 0, 1 << 24, &v)) BAD(); sp.top_k = (int32_t)v; }
        else if (!strcmp(a, "--top-p")) { VAL(); if (!cli_parse_float(val, &f) || !(f > 0 && f <= 1)) BADF("a number above 0 and at most 1 (1 = off)"); sp.top_p = (float)f; }
        else if (!strcmp(a, "--min-p")) { VAL(); if (!cli_parse_float(val, &f) || !(f >= 0 && f <= 1)) BADF("a number from 0 to 1 (0 = off)"); sp.min_p = (float)f; }
        else if (!strcmp(a, "--repeat-penalty")) { VAL(); if (!cli_parse_float(val, &f) || !(f > 0 && f <= 1e6)) BADF("a finite number above 0 (1 = off)"); sp.repeat_penalty = (float)f; }
        else if (!strcmp(a, "--repeat-last-n")) { VAL(); if (!cli_parse_int(val, 0, 1 << 20, &v)) BAD(); sp.repeat_last_n = (int32_t)v; }
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) { VAL(); if (!cli_parse_int(val, 0, INT64_MAX, &v)) BAD(); sp.seed = (uint64_t)v; }
        else { fprintf(stderr, "kvslim run: unknown option '%s' (see --help)\n", a); return 2; }
#undef VAL
#undef BAD
#undef BADF
    }
    if (!prompt && !file) { usage(); fprintf(stderr, "kvslim run: give a prompt with -p or -f\n"); return 2; }
    char *file_text = NULL;
    size_t len = 0;
    if (file) {
        if (!(file_text = cli_read_file(file, &len))) return 1;
        prompt = file_text;
    } else {
        len = strlen(prompt);
    }
    int rc = 1;
    kvs_model *m = cli_load_model(&c);
    kvs_session *s = NULL;
    kvs_sampler *smp = NULL;
    kvs_token *toks = NULL;
    float *logits = NULL;
    char *chat_text = NULL;
    if (!m) goto done;
    if (chat) {
        chat_text = kvs_chat_format_user(m, prompt);
        if (!chat_text) { fprintf(stderr, "kvslim run: this model has no chat template; drop --chat\n"); goto done; }
        prompt = chat_text;
        len = strlen(prompt);
    }
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    size_t n_prompt = 0;
    if (!(toks = cli_tokenize(m, prompt, len, -1, chat, &n_prompt))) goto done;
    if (n_prompt == 0) { fprintf(stderr, "kvslim run: the prompt is empty\n"); goto done; }
    uint64_t want = n_prompt + (uint64_t)n_predict;
    uint32_t ctx = c.ctx ? c.ctx : (uint32_t)(want < (uint64_t)info.n_ctx_train ? want : (uint64_t)info.n_ctx_train);
    if (want > ctx) {
        fprintf(stderr, "kvslim run: prompt (%zu tokens) + %lld new tokens exceed the context of %u tokens\n",
                n_prompt, n_predict, ctx);
        goto done;
    }
    cli_common cc = c;
    cc.ctx = ctx;
    if (!(s = cli_new_session(m, &cc, ctx))) goto done;
    if (kvs_sampler_new(&sp, info.n_vocab, &smp) != KVS_OK) { cli_error("cannot create the sampler"); goto done; }
    if (!(logits = malloc(sizeof(float) * (size_t)info.n_vocab))) {
        fprintf(stderr, "kvslim run: out of memory for %d logits\n", info.n_vocab);
        goto done;
    }
    for (size_t i = 0; i < n_prompt; i++) kvs_sampler_accept(smp, toks[i]);

    double t0 = cli_now();
    if (kvs_decode(s, toks, n_prompt, false, logits) != KVS_OK) { cli_error("decode"); goto done; }
    double t1 = cli_now();
    long long n_gen = 0;
    char piece[256];
    while (n_gen < n_predict) {
        kvs_token t = kvs_sampler_sample(smp, logits);
        kvs_sampler_accept(smp, t);
        if (!ignore_eos && kvs_token_is_eog(m, t)) break;
        if (print_tokens) {
            printf("%s%d", n_gen ? " " : "", t);
        } else {
            int np = kvs_token_to_piece(m, t, piece, sizeof piece);
            if (np > 0) fwrite(piece, 1, (size_t)np, stdout);
        }
        fflush(stdout);
        /* the last token needs no forward pass: nothing will read its logits */
        if (++n_gen < n_predict && kvs_decode(s, &t, 1, false, logits) != KVS_OK) { cli_error("decode"); goto done; }
    }
    double t2 = cli_now();
    printf("\n");
    fprintf(stderr, "\nprompt: %zu tokens in %.3f s (%.1f tok/s) | generated: %lld tokens in %.3f s (%.1f tok/s)\n",
            n_prompt, t1 - t0, (double)n_prompt / (t1 - t0), n_gen, t2 - t1,
            n_gen > 0 ? (double)n_gen / (t2 - t1) : 0.0);
    fprintf(stderr, "KV cache: %.2f MiB of pages for %u cached tokens (%llu bytes/token growing)\n",
            (double)kvs_session_kv_bytes(s) / 1048576.0, kvs_session_n_past(s),
            (unsigned long long)kvs_session_kv_bytes_per_token(s));
    rc = 0;
done:
    free(logits);
    free(toks);
    free(chat_text);
    free(file_text);
    kvs_sampler_free(smp);
    kvs_session_free(s);
    kvs_model_free(m);
    return rc;
}
