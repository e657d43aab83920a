/* dump_logits: run kvslim on a token list, write every position's logits.
 *
 * usage: dump_logits MODEL.gguf ID,ID,... OUT.bin [n_threads]
 * OUT.bin: n * n_vocab float32 (native byte order), row i = logits after
 * token i. Prints "n n_vocab" on stdout.
 *
 * build: cc -std=c11 -O2 -Iinclude scripts/dump_logits.c build/libkvslim.a \
 *            -lm -pthread -o build/dump_logits
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvslim.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL ID,ID,... OUT.bin [n_threads]\n", argv[0]);
        return 2;
    }
    size_t cap = 1, n = 0;
    for (const char *p = argv[2]; *p; p++) cap += *p == ',';
    kvs_token *toks = malloc(cap * sizeof *toks);
    for (char *p = argv[2], *end; *p; p = end + (*end == ',')) {
        toks[n++] = (kvs_token)strtol(p, &end, 10);
        if (end == p) { fprintf(stderr, "bad token list\n"); return 2; }
    }

    kvs_model *m = NULL;
    kvs_session *s = NULL;
    kvs_model_params mp = kvs_model_params_default();
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 512;
    if (argc > 4) sp.n_threads = atoi(argv[4]);
    if (kvs_model_load(argv[1], &mp, &m) != KVS_OK || kvs_session_new(m, &sp, &s) != KVS_OK) {
        fprintf(stderr, "error: %s\n", kvs_last_error());
        return 1;
    }
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    float *logits = malloc(n * (size_t)info.n_vocab * sizeof *logits);
    if (!logits || kvs_decode(s, toks, n, true, logits) != KVS_OK) {
        fprintf(stderr, "decode failed: %s\n", kvs_last_error());
        return 1;
    }
    FILE *f = fopen(argv[3], "wb");
    if (!f || fwrite(logits, sizeof *logits, n * (size_t)info.n_vocab, f) != n * (size_t)info.n_vocab
        || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", argv[3]);
        return 1;
    }
    printf("%zu %d\n", n, info.n_vocab);
    free(logits);
    free(toks);
    kvs_session_free(s);
    kvs_model_free(m);
    return 0;
}
