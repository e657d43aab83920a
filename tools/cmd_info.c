/* `kvslim info`: architecture, hyper-parameters, tensor types, context and
 * KV bytes per token of a GGUF model. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_info(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c);
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fprintf(stderr, "usage: kvslim info -m MODEL [-c CTX] [KV scheme options]\n"
                            "Print the model's architecture, sizes and KV cache bytes.\n\n%s", cli_common_help());
            return 0;
        }
        fprintf(stderr, "kvslim info: unknown option '%s'\n", argv[i]);
        return 2;
    }
    kvs_model *m = cli_load_model(&c);
    if (!m) return 1;
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    printf("model:          %s\n", in.name);
    printf("architecture:   %s\n", in.arch);
    printf("parameters:     %.1f M (%.1f MiB of weights)\n", (double)in.n_params / 1e6, (double)in.weight_bytes / 1048576.0);
    printf("layers:         %d\n", in.n_layer);
    printf("embedding:      %d   ffn: %d   vocab: %d\n", in.n_embd, in.n_ff, in.n_vocab);
    printf("attention:      %d heads, %d KV heads, head size %d, rope base %.0f\n", in.n_head, in.n_head_kv,
           in.head_dim, (double)in.rope_freq_base);
    printf("train context:  %d\n", in.n_ctx_train);
    printf("tokens:         bos %d, eos %d\n", in.bos, in.eos);
    int rc = 0;
    cli_common cc = c;
    cc.threads = 1;
    kvs_session *s = cli_new_session(m, &cc, c.ctx ? c.ctx : (uint32_t)in.n_ctx_train);
    if (s) {
        uint32_t n = kvs_session_n_ctx(s);
        uint64_t at = kvs_session_kv_bytes_at(s, n);
        printf("KV cache:       %llu bytes/token growing, %.2f MiB at %u tokens (%llu bytes)\n",
               (unsigned long long)kvs_session_kv_bytes_per_token(s), (double)at / 1048576.0, n, (unsigned long long)at);
        /* per-layer schemes, consecutive identical layers grouped */
        char cur[160], next[160];
        int32_t start = 0;
        kvs_session_kv_describe(s, 0, cur, sizeof cur);
        for (int32_t l = 1; l <= in.n_layer; l++) {
            if (l < in.n_layer) kvs_session_kv_describe(s, l, next, sizeof next);
            if (l == in.n_layer || strcmp(next, cur)) {
                char range[32];
                snprintf(range, sizeof range, start == l - 1 ? "%d" : "%d-%d", start, l - 1);
                printf("  layers %-7s %s\n", range, cur);
                memcpy(cur, next, sizeof cur);
                start = l;
            }
        }
    } else {
        rc = 1;
    }
    kvs_session_free(s);
    kvs_model_free(m);
    return rc;
}
