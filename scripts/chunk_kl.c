/* chunk_kl: how much a model's logits depend on how the prompt is split
 * into decode calls (issue 5, compress item 4). Decodes the first N tokens of
 * a text once in chunks of A tokens and once in chunks of B, and prints the
 * mean KL divergence (nats per token, exact over the vocabulary) and the
 * share of equal argmax between the two runs. Run it on an original GGUF and
 * on a compressed one to tell a latent-path bug from matmul rounding.
 *
 * usage: chunk_kl MODEL.gguf TEXT N A B [kv_type] [threads]
 * build: cc -std=c11 -O2 -Iinclude scripts/chunk_kl.c build/libkvslim.a \
 *            -llapacke -lm -pthread -o build/chunk_kl
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvslim.h"

static float *run(const kvs_model *m, const kvs_token *t, long n, long chunk, kvs_kv_type kv, int threads, long V) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = (uint32_t)n;
    sp.n_threads = threads;
    sp.kv_type = kv;
    kvs_session *s = NULL;
    float *out = malloc(sizeof(float) * (size_t)(n * V));
    if (!out || kvs_session_new(m, &sp, &s) != KVS_OK) { fprintf(stderr, "session: %s\n", kvs_last_error()); exit(1); }
    for (long i = 0; i < n; i += chunk) {
        long len = n - i < chunk ? n - i : chunk;
        if (kvs_decode(s, t + i, (size_t)len, true, out + i * V) != KVS_OK) {
            fprintf(stderr, "decode: %s\n", kvs_last_error());
            exit(1);
        }
    }
    kvs_session_free(s);
    return out;
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: %s MODEL TEXT N A B [kv_type] [threads]\n", argv[0]); return 2; }
    long n = atol(argv[3]), a = atol(argv[4]), b = atol(argv[5]);
    kvs_kv_type kv = KVS_KV_F16;
    if (argc > 6 && !kvs_kv_type_from_name(argv[6], &kv)) { fprintf(stderr, "bad kv type\n"); return 2; }
    int threads = argc > 7 ? atoi(argv[7]) : 2;
    kvs_model *m = NULL;
    if (kvs_model_load(argv[1], NULL, &m) != KVS_OK) { fprintf(stderr, "%s\n", kvs_last_error()); return 1; }
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    size_t nt = 0;
    kvs_token *t = malloc(sizeof *t * (len + 16));
    if (kvs_tokenize(m, text, len, 1, false, t, len + 16, &nt) != KVS_OK || (long)nt < n) {
        fprintf(stderr, "text too short\n");
        return 1;
    }
    kvs_model_info mi;
    kvs_model_get_info(m, &mi);
    const long V = mi.n_vocab;
    float *x = run(m, t, n, a, kv, threads, V), *y = run(m, t, n, b, kv, threads, V);
    double kl = 0, mk = 0;
    long same = 0;
    for (long i = 0; i < n; i++) {
        const float *p = x + i * V, *q = y + i * V;
        double mp = -INFINITY, mq = -INFINITY, sp = 0, sq = 0, k = 0;
        long ap = 0, aq = 0;
        for (long j = 0; j < V; j++) {
            if (p[j] > mp) { mp = p[j]; ap = j; }
            if (q[j] > mq) { mq = q[j]; aq = j; }
        }
        for (long j = 0; j < V; j++) { sp += exp(p[j] - mp); sq += exp(q[j] - mq); }
        double lp = mp + log(sp), lq = mq + log(sq);
        for (long j = 0; j < V; j++) k += exp(p[j] - lp) * ((p[j] - lp) - (q[j] - lq));
        kl += k;
        if (k > mk) mk = k;
        same += ap == aq;
    }
    printf("%s: %ld tokens, chunks %ld vs %ld, kv %s: KL mean %.3e max %.3e, top-1 %.1f%%\n", argv[1], n, a, b,
           argc > 6 ? argv[6] : "f16", kl / n, mk, 100.0 * same / n);
    free(x); free(y); free(t);
    kvs_model_free(m);
    return 0;
}
