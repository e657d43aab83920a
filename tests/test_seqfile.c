/* Sequence files (kvs_seq_save / kvs_seq_load, src/kv/kv_file.c):
 *   - round trips: a sequence saved and loaded into a fresh engine holds the
 *     same tokens and continues bit-identically to the original, for f16
 *     rows over two pages, per-channel q4k3v with its f16 residual, a
 *     window ring that wrapped, and Gemma 3's sliding layers;
 *   - refusals with a message: another model, other KV schemes, another
 *     context, a damaged byte, every truncation, a directory, a fifo (no
 *     hang), eviction and DeepSeek V4 (state outside the cache); saving over a
 *     symlink or a special file never replaces it;
 *   - kill -9 of a process in the middle of saves leaves a file that loads
 *     (the previous one or the new one, never a partial one);
 *   - the prefix cache's disk tier: found again after a restart and after
 *     kill -9, continues bit-identically, bounded by its cap, spilled to and
 *     loaded back from disk when the pool needs room;
 *   - the reader against hostile bytes: 3000 mutations of a small valid
 *     file, each with its checksum recomputed so the parser itself is
 *     exercised (under the sanitizers in CI), all refused or loaded cleanly.
 * Skips the real-model parts (loudly) without the models unless
 * KVS_REQUIRE_MODELS=1. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvslim.h"
#include "test_util.h"

static char g_dir[256];

static const char *path_in(const char *name) {
    static char p[4][512];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, name);
    return p[k];
}

static kvs_engine *engine(const kvs_model *m, const char *rules, uint32_t n_ctx) {
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = n_ctx;
    p.n_batch = 64;
    p.n_threads = 2;
    p.kv_layers = rules;
    kvs_engine *e = NULL;
    CHECKF(kvs_engine_new(m, &p, &e) == KVS_OK, "%s", kvs_last_error());
    return e;
}

static void tokens_for(kvs_token *t, size_t n, uint64_t seed, int32_t n_vocab) {
    for (size_t i = 0; i < n; i++) t[i] = (kvs_token)(test_rng_next(&seed) % (uint64_t)(n_vocab - 10)) + 5;
}

/* Decode n tokens into a new sequence of e. */
static kvs_seq *filled(kvs_engine *e, const kvs_token *t, uint32_t n) {
    kvs_seq *q = NULL;
    CHECK(kvs_seq_new(e, &q) == KVS_OK);
    if (!q) return NULL;
    kvs_batch_entry x = {.seq = q, .tokens = t, .n_tokens = n};
    CHECKF(kvs_engine_decode(e, &x, 1) == KVS_OK, "%s", kvs_last_error());
    return q;
}

static void round_trip(const kvs_model *m, const char *rules, uint32_t n) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const int32_t V = in.n_vocab;
    kvs_token *t = malloc(sizeof *t * (n + 1));
    tokens_for(t, n + 1, 3, V);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    kvs_engine *e1 = engine(m, rules, 1024), *e2 = engine(m, rules, 1024);
    if (e1 && e2) {
        kvs_seq *q = filled(e1, t, n), *r = NULL;
        const char *f = path_in("seq.kvs");
        CHECKF(kvs_seq_save(q, f) == KVS_OK, "%s: %s", rules ? rules : "f16", kvs_last_error());
        CHECKF(kvs_seq_load(e2, f, &r) == KVS_OK, "%s: %s", rules ? rules : "f16", kvs_last_error());
        if (q && r) {
            CHECK(kvs_seq_n_past(r) == n && !memcmp(kvs_seq_tokens(r), t, sizeof *t * n));
            CHECK(kvs_seq_kv_bytes(r) == kvs_seq_kv_bytes(q));
            kvs_batch_entry x = {.seq = q, .tokens = t + n, .n_tokens = 1, .logits = a};
            kvs_batch_entry y = {.seq = r, .tokens = t + n, .n_tokens = 1, .logits = b};
            CHECK(kvs_engine_decode(e1, &x, 1) == KVS_OK && kvs_engine_decode(e2, &y, 1) == KVS_OK);
            CHECKF(!memcmp(a, b, sizeof(float) * V), "%s: a loaded sequence continues differently", rules ? rules : "f16");
        }
    }
    kvs_engine_free(e1);
    kvs_engine_free(e2);
    free(t);
    free(a);
    free(b);
}

static void expect_refusal(kvs_engine *e, const char *path, kvs_status want, const char *needle) {
    kvs_seq *r = NULL;
    kvs_status st = kvs_seq_load(e, path, &r);
    CHECKF(st == want && !r && strstr(kvs_last_error(), needle), "load '%s': %s (%s), wanted %s with \"%s\"", path,
           kvs_status_name(st), kvs_last_error(), kvs_status_name(want), needle);
    kvs_seq_free(r);
}

static uint8_t *slurp(const char *path, size_t *n) {
    char *b = test_read_file(path, n);
    return (uint8_t *)b;
}

static void spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n);
    if (f) fclose(f);
}

static void rehash(uint8_t *b, size_t n) {
    if (n < 8) return;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n - 8; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    for (int k = 0; k < 8; k++) b[n - 8 + k] = (uint8_t)(h >> (8 * k));
}

static void refusals(const kvs_model *m, const kvs_model *other) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    kvs_token t[300];
    tokens_for(t, 300, 9, in.n_vocab);
    kvs_engine *e = engine(m, "page=16", 1024); /* small pages: a small file to cut */
    if (!e) return;
    kvs_seq *q = filled(e, t, 40);
    const char *f = path_in("small.kvs");
    CHECK(kvs_seq_save(q, f) == KVS_OK);
    kvs_engine *e8 = engine(m, "q8_0,page=16", 1024), *ec = engine(m, "page=16", 512);
    kvs_engine *eo = other ? engine(other, "page=16", 1024) : NULL;
    if (e8) expect_refusal(e8, f, KVS_ERR_FORMAT, "layer 0 was saved as");
    if (ec) expect_refusal(ec, f, KVS_ERR_FORMAT, "context");
    if (eo) expect_refusal(eo, f, KVS_ERR_FORMAT, "another model");
    kvs_engine_free(e8);
    kvs_engine_free(ec);
    kvs_engine_free(eo);
    size_t n = 0;
    uint8_t *img = slurp(f, &n);
    CHECK(img && n > 100);
    if (img) {
        const char *g = path_in("bad.kvs");
        img[n / 2] ^= 0x40; /* one damaged byte */
        spit(g, img, n);
        expect_refusal(e, g, KVS_ERR_FORMAT, "checksum");
        img[n / 2] ^= 0x40;
        for (size_t cut = 0; cut < n; cut += cut < 64 ? 1 : 997) { /* truncations */
            spit(g, img, cut);
            kvs_seq *r = NULL;
            CHECKF(kvs_seq_load(e, g, &r) == KVS_ERR_FORMAT && !r, "truncated at %zu: %s", cut, kvs_last_error());
            kvs_seq_free(r);
        }
        free(img);
    }
    /* not files */
    expect_refusal(e, g_dir, KVS_ERR_IO, "not a regular file");
    const char *fifo = path_in("fifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    expect_refusal(e, fifo, KVS_ERR_IO, "not a regular file");
    expect_refusal(e, path_in("absent.kvs"), KVS_ERR_IO, "cannot open");
    /* saving never replaces a symlink or a special file */
    const char *link = path_in("link.kvs");
    CHECK(symlink(f, link) == 0);
    CHECK(kvs_seq_save(q, link) != KVS_OK);
    struct stat sb;
    CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    CHECK(kvs_seq_save(q, fifo) != KVS_OK);
    CHECK(lstat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode));
    kvs_engine_free(e);

    /* eviction keeps scores outside the pages */
    e = engine(m, "h2o=64", 1024);
    if (e) {
        q = filled(e, t, 20);
        CHECK(kvs_seq_save(q, path_in("h2o.kvs")) == KVS_ERR_UNSUPPORTED);
        kvs_engine_free(e);
    }
}

/* The parser past the checksum: mutations of a small file (the gemma4
 * fixture, 16-token pages) with the checksum made right. */
static void mutations(const kvs_model *m) {
    kvs_token t[40];
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    tokens_for(t, 40, 5, in.n_vocab);
    kvs_engine *e = engine(m, "page=16", 256);
    if (!e) return;
    kvs_seq *q = filled(e, t, 40);
    const char *f = path_in("fixture.kvs"), *g = path_in("mutant.kvs");
    CHECK(kvs_seq_save(q, f) == KVS_OK);
    size_t n = 0;
    uint8_t *img = slurp(f, &n);
    CHECK(img && n > 64);
    if (img) {
        /* the parser past the checksum: mutations with the checksum made right */
        uint64_t rng = 77;
        int loaded = 0, refused = 0;
        for (int k = 0; k < 3000; k++) {
            uint8_t *mut = malloc(n);
            memcpy(mut, img, n);
            int flips = 1 + (int)(test_rng_next(&rng) % 4);
            for (int j = 0; j < flips; j++) {
                size_t at = (size_t)(test_rng_next(&rng) % (k % 2 ? 128 : n - 8)); /* half of them in the header */
                mut[at] = (uint8_t)test_rng_next(&rng);
            }
            size_t len = k % 7 == 0 ? n - (size_t)(test_rng_next(&rng) % 64) : n;
            rehash(mut, len);
            spit(g, mut, len);
            kvs_seq *r = NULL;
            kvs_status st = kvs_seq_load(e, g, &r);
            if (st == KVS_OK) { loaded++; CHECK(r && kvs_seq_n_past(r) <= 1024); }
            else { refused++; CHECK(!r && kvs_last_error()[0]); }
            kvs_seq_free(r);
            free(mut);
        }
        printf("  3000 mutated files: %d refused, %d loaded (page bytes or tokens changed)\n", refused, loaded);
        free(img);
    }
    kvs_engine_free(e);
}

/* A child saves a large sequence over and over; it is killed with SIGKILL
 * in the middle; the file must load. */
static void kill_during_save(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    kvs_token t[600];
    tokens_for(t, 600, 21, in.n_vocab);
    const char *f = path_in("killed.kvs");
    kvs_engine *e = engine(m, NULL, 1024);
    if (!e) return;
    kvs_seq *q = filled(e, t, 600);
    CHECK(kvs_seq_save(q, f) == KVS_OK);
    for (int round = 0; round < 5; round++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) if (kvs_seq_save(q, f) != KVS_OK) _exit(3);
        }
        CHECK(pid > 0);
        usleep(20000 + 15000 * round);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        kvs_seq *r = NULL;
        CHECKF(kvs_seq_load(e, f, &r) == KVS_OK && kvs_seq_n_past(r) == 600, "after kill -9: %s", kvs_last_error());
        kvs_seq_free(r);
    }
    CHECK(kvs_seq_save(q, f) == KVS_OK); /* and the next save cleans the dead child's temporary */
    kvs_engine_free(e);
}

/* The disk tier: a prompt's prefix survives the engine (and a process killed
 * with SIGKILL), is found again by a new engine on the same directory and
 * continues bit-identically to a session with the same chunks; the cap keeps
 * the directory bounded; a prefix the pool needs room from is spilled to disk
 * and loaded back on a hit. */
static kvs_engine *engine_dir(const kvs_model *m, const char *dir, uint64_t cap, uint64_t budget) {
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = 1024;
    p.n_batch = 64;
    p.n_threads = 2;
    p.kv_budget = budget;
    kvs_engine *e = NULL;
    CHECKF(kvs_engine_new(m, &p, &e) == KVS_OK, "%s", kvs_last_error());
    if (e) CHECKF(kvs_engine_set_prefix_dir(e, dir, cap) == KVS_OK, "%s", kvs_last_error());
    return e;
}

static void run_cached(kvs_engine *e, const kvs_token *t, uint32_t n) {
    kvs_seq *q = NULL;
    CHECK(kvs_seq_new(e, &q) == KVS_OK);
    kvs_batch_entry x = {.seq = q, .tokens = t, .n_tokens = n, .cache_prefix = true};
    CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
    kvs_seq_free(q);
}

static void disk_tier(const kvs_model *m) {
    kvs_model_info in;
    kvs_model_get_info(m, &in);
    const int32_t V = in.n_vocab;
    kvs_token t[200], u[200];
    tokens_for(t, 200, 31, V);
    tokens_for(u, 200, 32, V);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    const char *dir = path_in("tier");
    CHECK(mkdir(dir, 0700) == 0);
    kvs_engine *e = engine_dir(m, dir, 0, 0);
    if (!e) return;
    run_cached(e, t, 100);
    CHECK(kvs_engine_prefix_stats(e).disk_snapshots == 1);
    kvs_engine_free(e);

    e = engine_dir(m, dir, 0, 0); /* a restart */
    kvs_prefix_stats ps = kvs_engine_prefix_stats(e);
    CHECK(ps.disk_snapshots == 1 && ps.snapshots == 0);
    kvs_seq *q = NULL;
    uint32_t hit = 0;
    CHECK(kvs_seq_new_cached(e, t, 110, &q, &hit) == KVS_OK && hit == 100);
    CHECK(kvs_engine_prefix_stats(e).disk_hits == 1);
    kvs_batch_entry x = {.seq = q, .tokens = t + 100, .n_tokens = 10, .logits = b};
    CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 1024;
    sp.n_batch = 64;
    sp.n_threads = 2;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    if (s) {
        CHECK(kvs_decode(s, t, 100, false, NULL) == KVS_OK && kvs_decode(s, t + 100, 10, false, a) == KVS_OK);
        CHECK(!memcmp(a, b, sizeof(float) * V));
    }
    kvs_session_free(s);
    kvs_engine_free(e);

    /* kill -9 right after a prompt: its prefix is on disk */
    const char *dir2 = path_in("tier2");
    CHECK(mkdir(dir2, 0700) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        kvs_engine *c = engine_dir(m, dir2, 0, 0);
        if (c) run_cached(c, u, 80);
        kill(getpid(), SIGKILL);
        _exit(1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    e = engine_dir(m, dir2, 0, 0);
    CHECK(kvs_seq_new_cached(e, u, 90, &q, &hit) == KVS_OK && hit == 80);
    kvs_engine_free(e);

    /* the cap: room for one file */
    const char *dir3 = path_in("tier3");
    CHECK(mkdir(dir3, 0700) == 0);
    e = engine_dir(m, dir3, 0, 0);
    run_cached(e, t, 60);
    uint64_t one = kvs_engine_prefix_stats(e).disk_bytes;
    kvs_engine_free(e);
    e = engine_dir(m, dir3, one + one / 2, 0);
    run_cached(e, u, 60);
    ps = kvs_engine_prefix_stats(e);
    CHECK(ps.disk_snapshots == 1 && ps.disk_bytes <= one + one / 2);
    CHECK(kvs_seq_new_cached(e, u, 70, &q, &hit) == KVS_OK && hit == 60); /* the newer one stays */
    kvs_engine_free(e);

    /* spill: a budget of about one sequence; the cached prefix leaves the pool for the disk and comes back */
    const char *dir4 = path_in("tier4");
    CHECK(mkdir(dir4, 0700) == 0);
    kvs_session *probe = NULL;
    uint64_t page = 0;
    CHECK(kvs_session_new(m, &sp, &probe) == KVS_OK);
    if (probe) { CHECK(kvs_decode(probe, t, 1, false, NULL) == KVS_OK); page = kvs_session_kv_bytes(probe); }
    kvs_session_free(probe);
    e = engine_dir(m, dir4, 0, page + page / 2);
    if (e && page) {
        kvs_seq *w = NULL;
        CHECK(kvs_seq_new(e, &w) == KVS_OK);
        x = (kvs_batch_entry){.seq = w, .tokens = t, .n_tokens = 50};
        CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK && kvs_engine_cache_prefix(e, w) == KVS_OK);
        kvs_seq_free(w);
        CHECK(kvs_seq_new(e, &w) == KVS_OK);
        x = (kvs_batch_entry){.seq = w, .tokens = u, .n_tokens = 60};
        CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK); /* the prefix's pages were needed */
        ps = kvs_engine_prefix_stats(e);
        CHECK(ps.snapshots == 0 && ps.disk_snapshots == 1);
        kvs_seq_free(w);
        CHECK(kvs_seq_new_cached(e, t, 55, &q, &hit) == KVS_OK && hit == 50 && kvs_engine_prefix_stats(e).disk_hits == 1);
    }
    kvs_engine_free(e);
    free(a);
    free(b);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/kvs_seqfile.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    kvs_model *d4 = NULL;
    CHECK(kvs_model_load("tests/data/deepseek4_tiny.gguf", NULL, &d4) == KVS_OK);
    if (d4) {
        kvs_engine *e = engine(d4, NULL, 256);
        kvs_token t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        kvs_seq *q = e ? filled(e, t, 8) : NULL;
        if (q) CHECK(kvs_seq_save(q, path_in("v4.kvs")) == KVS_ERR_UNSUPPORTED);
        kvs_engine_free(e);
    }
    kvs_model_free(d4);
    kvs_model *g4 = NULL;
    CHECK(kvs_model_load("tests/data/gemma4_tiny.gguf", NULL, &g4) == KVS_OK);
    if (g4) mutations(g4);
    kvs_model_free(g4);
    const char *smol = "models/smollm2-135m-instruct-q4_1.gguf", *gemma = "models/gemma-3-270m-q4_k_m.gguf";
    const char *req = getenv("KVS_REQUIRE_MODELS");
    if (access(smol, R_OK) != 0 || access(gemma, R_OK) != 0) {
        CHECK(!(req && *req == '1'));
        printf("skip sequence file checks on real models: models absent (make models)\n");
    } else {
        kvs_model *m = NULL, *g = NULL;
        CHECK(kvs_model_load(smol, NULL, &m) == KVS_OK && kvs_model_load(gemma, NULL, &g) == KVS_OK);
        if (m && g) {
            round_trip(m, NULL, 300);
            round_trip(m, "q4k3v,group=32,recent=32", 300);
            round_trip(m, "window=64+4,page=16", 300);
            round_trip(g, NULL, 700);
            refusals(m, g);
            kill_during_save(m);
            disk_tier(m);
        }
        kvs_model_free(m);
        kvs_model_free(g);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return test_finish("seqfile");
}
