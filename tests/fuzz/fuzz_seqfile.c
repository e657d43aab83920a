/* libFuzzer target for the sequence-file reader (src/kv/kv_file.c): each
 * input is loaded as a sequence file into an engine over the Gemma 4 fixture
 * (tests/data/gemma4_tiny.gguf, 16-token pages, shared and sliding layers)
 * through kvs_seq_load, the path a server's disk tier and a user take. When
 * the input's first byte is odd, the file's trailing FNV-1a checksum is
 * recomputed first, so mutations reach the parser behind the checksum instead
 * of being refused at it. A load must either fail with a message and no
 * sequence, or give a sequence that decodes one more token. Built and run by
 * scripts/fuzz_seqfile.sh; built with -DSEQ_SEEDS it is the seed writer
 * instead (valid files of 1, 17, 40 and 200 tokens into argv[1], each after
 * the flag byte 1). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvslim.h"

#define FIXTURE "tests/data/gemma4_tiny.gguf"

static kvs_model *g_model;
static kvs_engine *g_engine;
static char g_path[256];

static void setup(void) {
    if (kvs_model_load(FIXTURE, NULL, &g_model) != KVS_OK) {
        fprintf(stderr, "fuzz_seqfile: cannot load %s: %s (run from the repository root)\n", FIXTURE, kvs_last_error());
        exit(2);
    }
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = 256;
    p.n_threads = 1;
    p.kv_layers = "page=16";
    if (kvs_engine_new(g_model, &p, &g_engine) != KVS_OK) {
        fprintf(stderr, "fuzz_seqfile: engine: %s\n", kvs_last_error());
        exit(2);
    }
}

#ifdef SEQ_SEEDS
int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s DIR\n", argv[0]); return 2; }
    setup();
    kvs_model_info in;
    kvs_model_get_info(g_model, &in);
    static const uint32_t lens[] = {1, 17, 40, 200};
    kvs_token t[200];
    for (int i = 0; i < 200; i++) t[i] = (kvs_token)((i * 7919 + 13) % in.n_vocab);
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        kvs_seq *q = NULL;
        kvs_batch_entry x = {.tokens = t, .n_tokens = lens[k]};
        char path[512];
        snprintf(path, sizeof path, "%s/seq%u.kvs", argv[1], lens[k]);
        if (kvs_seq_new(g_engine, &q) != KVS_OK || (x.seq = q, kvs_engine_decode(g_engine, &x, 1)) != KVS_OK ||
            kvs_seq_save(q, path) != KVS_OK) {
            fprintf(stderr, "fuzz_seqfile: seed %s: %s\n", path, kvs_last_error());
            return 1;
        }
        kvs_seq_free(q);
        /* the same bytes after the flag byte (odd: the checksum is recomputed) */
        FILE *f = fopen(path, "rb");
        static uint8_t buf[1 << 20];
        size_t n = f ? fread(buf + 1, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[0] = 1;
        if (!n || !(f = fopen(path, "wb")) || fwrite(buf, 1, n + 1, f) != n + 1 || fclose(f) != 0) {
            fprintf(stderr, "fuzz_seqfile: seed %s: cannot rewrite\n", path);
            return 1;
        }
    }
    kvs_engine_free(g_engine);
    kvs_model_free(g_model);
    return 0;
}
#else
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setup();
    const char *dir = getenv("TMPDIR");
    snprintf(g_path, sizeof g_path, "%s/kvslim-fuzz-seq-%ld.kvs", dir && *dir ? dir : "/tmp", (long)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int fix = data[0] & 1;
    data++;
    size--;
    uint8_t *img = malloc(size ? size : 1);
    if (!img) return 0;
    memcpy(img, data, size);
    if (fix && size >= 8) { /* FNV-1a 64 of every byte before the last 8 */
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < size - 8; i++) h = (h ^ img[i]) * 1099511628211ull;
        for (int i = 0; i < 8; i++) img[size - 8 + (size_t)i] = (uint8_t)(h >> (8 * i));
    }
    FILE *f = fopen(g_path, "wb");
    if (!f) { free(img); return 0; }
    const int ok = fwrite(img, 1, size, f) == size;
    free(img);
    if (fclose(f) != 0 || !ok) return 0;
    kvs_seq *q = NULL;
    if (kvs_seq_load(g_engine, g_path, &q) != KVS_OK) {
        if (q) __builtin_trap();                    /* out stays NULL on failure */
        if (!kvs_last_error()[0]) __builtin_trap(); /* failures explain themselves */
        return 0;
    }
    /* a loaded sequence is whole: its tokens are readable and it runs on */
    const uint32_t n = kvs_seq_n_past(q);
    const kvs_token *t = kvs_seq_tokens(q);
    volatile uint64_t acc = 0;
    for (uint32_t i = 0; i < n; i++) acc += (uint64_t)t[i];
    kvs_token next = 1;
    kvs_batch_entry x = {.seq = q, .tokens = &next, .n_tokens = 1};
    const kvs_status st = kvs_engine_decode(g_engine, &x, 1);
    if (st != KVS_OK && st != KVS_ERR_CONTEXT && st != KVS_ERR_BUDGET) __builtin_trap();
    (void)acc;
    kvs_seq_free(q);
    return 0;
}
#endif
