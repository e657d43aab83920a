/* Tokenizer tests.
 *
 * (a) every case in tests/data/tok_ref_<model>.txt (written by
 *     scripts/ref_tokenize.py from llama-cpp-python) must encode to the same
 *     ids, for each model present in models/ (absent model: skipped with a
 *     note; absent reference file: failure);
 * (b) decoding the ids gives back the text;
 * (c) the whole GPL-3 text gives the reference token count;
 * (d) known ids, EOG set, pieces, parse_special off, chat prompts;
 * (e) malformed vocabulary metadata (tiny GGUFs written with the GGUF
 *     writer) fails with a clean status, and out-of-memory at every
 *     allocation of a load and an encode fails cleanly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "gguf/gguf.h"
#include "tok/tokenizer.h"
#include "test_util.h"

/* ---- reference file ------------------------------------------------------ */

typedef struct ref_case {
    char name[64];
    char *text;
    size_t len;
    kvs_token *ids;
    size_t n;
} ref_case;

typedef struct ref_file {
    char model[256];
    char version[64];
    ref_case cases[64];
    int n_cases;
    char gpl_path[256];
    long gpl_size;
    long gpl_count;
} ref_file;

static int hexv(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static bool parse_ref(const char *path, ref_file *r) {
    memset(r, 0, sizeof *r);
    r->gpl_size = r->gpl_count = -1;
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    bool ok = true;
    while ((got = getline(&line, &cap, f)) >= 0 && ok) {
        if (got && line[got - 1] == '\n') line[--got] = '\0';
        if (line[0] == '#' || line[0] == '\0') continue;
        if (strncmp(line, "version ", 8) == 0) {
            snprintf(r->version, sizeof r->version, "%s", line + 8);
        } else if (strncmp(line, "model ", 6) == 0) {
            snprintf(r->model, sizeof r->model, "%s", line + 6);
        } else if (strncmp(line, "gpl3 ", 5) == 0) {
            ok = sscanf(line + 5, "%255s %ld %ld", r->gpl_path, &r->gpl_size, &r->gpl_count) == 3;
        } else if (strncmp(line, "case ", 5) == 0 && r->n_cases < 64) {
            ref_case *c = &r->cases[r->n_cases++];
            char *save = NULL;
            char *name = strtok_r(line + 5, " ", &save);
            char *hex = strtok_r(NULL, " ", &save);
            char *cnt = strtok_r(NULL, " ", &save);
            if (!name || !hex || !cnt) { ok = false; break; }
            snprintf(c->name, sizeof c->name, "%s", name);
            size_t hl = strcmp(hex, "-") == 0 ? 0 : strlen(hex);
            c->text = malloc(hl / 2 + 1);
            for (size_t i = 0; i + 1 < hl; i += 2) c->text[i / 2] = (char)(hexv(hex[i]) * 16 + hexv(hex[i + 1]));
            c->len = hl / 2;
            c->text[c->len] = '\0';
            c->n = strtoul(cnt, NULL, 10);
            c->ids = malloc((c->n + 1) * sizeof *c->ids);
            for (size_t i = 0; i < c->n; i++) {
                char *tok = strtok_r(NULL, " ", &save);
                if (!tok) { ok = false; break; }
                c->ids[i] = (kvs_token)strtol(tok, NULL, 10);
            }
        }
    }
    free(line);
    fclose(f);
    return ok && r->n_cases > 0 && r->model[0];
}

static void free_ref(ref_file *r) {
    for (int i = 0; i < r->n_cases; i++) {
        free(r->cases[i].text);
        free(r->cases[i].ids);
    }
}

static bool file_exists(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Encode into a malloc'd array (two calls: count, then fill). */
static kvs_token *encode(const kvs_tokenizer *t, const char *s, size_t len, bool bos, bool special,
                         size_t *n) {
    size_t need = 0;
    kvs_status st = kvs_tokenizer_encode(t, s, len, bos, special, NULL, 0, &need);
    if (st != KVS_OK) {
        fprintf(stderr, "encode failed: %s\n", kvs_last_error());
        *n = 0;
        return NULL;
    }
    kvs_token *v = malloc((need + 1) * sizeof *v);
    size_t n2 = 0;
    st = kvs_tokenizer_encode(t, s, len, bos, special, v, need, &n2);
    CHECK(st == KVS_OK && n2 == need);
    *n = need;
    return v;
}

/* Concatenated pieces (render_special), skipping a leading BOS. */
static char *decode(const kvs_tokenizer *t, const kvs_token *ids, size_t n, size_t *len) {
    size_t cap = 64, m = 0;
    char *out = malloc(cap);
    size_t i0 = (n && ids[0] == kvs_tokenizer_bos(t) && kvs_tokenizer_add_bos_default(t)) ? 1 : 0;
    for (size_t i = i0; i < n; i++) {
        char buf[256];
        int k = kvs_tokenizer_piece(t, ids[i], true, buf, sizeof buf);
        CHECK(k >= 0);
        if (k < 0) continue;
        while (m + (size_t)k + 1 > cap) out = realloc(out, cap *= 2);
        memcpy(out + m, buf, (size_t)k);
        m += (size_t)k;
    }
    out[m] = '\0';
    *len = m;
    return out;
}

static char *piece_str(const kvs_tokenizer *t, kvs_token id, bool special) {
    static char buf[256];
    int k = kvs_tokenizer_piece(t, id, special, buf, sizeof buf - 1);
    buf[k < 0 ? 0 : k] = '\0';
    return buf;
}

static kvs_token single(const kvs_tokenizer *t, const char *s) {
    size_t n;
    kvs_token *v = encode(t, s, strlen(s), false, true, &n);
    kvs_token r = (v && n == 1) ? v[0] : -1;
    free(v);
    return r;
}

/* ---- reference comparison ------------------------------------------------ */

static void check_model(const char *ref_path) {
    ref_file r;
    bool parsed = parse_ref(ref_path, &r);
    CHECKF(parsed, "reference file %s missing or unreadable (run scripts/ref_tokenize.py)", ref_path);
    if (!parsed) return;
    char mpath[300];
    snprintf(mpath, sizeof mpath, "models/%s", r.model);
    if (!file_exists(mpath)) {
        printf("note: %s absent, skipping its tokenizer comparison (bash scripts/fetch_models.sh all)\n", mpath);
        free_ref(&r);
        return;
    }
    kvs_gguf *g = NULL;
    kvs_tokenizer *t = NULL;
    CHECK(kvs_gguf_open(mpath, true, &g) == KVS_OK);
    kvs_status st = g ? kvs_tokenizer_load(g, &t) : KVS_ERR_IO;
    CHECKF(st == KVS_OK, "%s: %s", mpath, kvs_last_error());
    if (st != KVS_OK) {
        kvs_gguf_close(g);
        free_ref(&r);
        return;
    }
    int match = 0, rt_ok = 0;
    for (int i = 0; i < r.n_cases; i++) {
        const ref_case *c = &r.cases[i];
        size_t n;
        kvs_token *v = encode(t, c->text, c->len, kvs_tokenizer_add_bos_default(t), true, &n);
        bool same = v && n == c->n && memcmp(v, c->ids, n * sizeof *v) == 0;
        match += same;
        CHECKF(same, "%s case %s: %zu tokens, reference %zu", r.model, c->name, n, c->n);
        if (!same && v) {
            size_t j = 0;
            while (j < n && j < c->n && v[j] == c->ids[j]) j++;
            fprintf(stderr, "  first difference at %zu: got %d, want %d\n", j, j < n ? v[j] : -1,
                    j < c->n ? c->ids[j] : -1);
        }
        size_t dl;
        char *d = decode(t, v, n, &dl);
        bool rt = dl == c->len && memcmp(d, c->text, dl) == 0;
        rt_ok += rt;
        CHECKF(rt, "%s case %s: round trip differs", r.model, c->name);
        free(d);
        free(v);
    }
    printf("%s: %d/%d cases match llama-cpp-python %s, %d/%d round trips\n", r.model, match, r.n_cases,
           r.version, rt_ok, r.n_cases);

    size_t glen = 0;
    char *gpl = test_read_file(r.gpl_path, &glen);
    if (!gpl || (long)glen != r.gpl_size) {
        printf("note: %s absent or a different size than the reference's; skipping the count\n", r.gpl_path);
    } else {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        size_t n = 0;
        kvs_status est = kvs_tokenizer_encode(t, gpl, glen, kvs_tokenizer_add_bos_default(t), true, NULL, 0, &n);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        CHECK(est == KVS_OK);
        CHECKF((long)n == r.gpl_count, "%s GPL-3: %zu tokens, reference %ld", r.model, n, r.gpl_count);
        printf("%s: GPL-3 (%zu bytes) -> %zu tokens (reference %ld) in %.1f ms\n", r.model, glen, n,
               r.gpl_count, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
        size_t vn;
        kvs_token *v = encode(t, gpl, glen, false, true, &vn);
        size_t dl;
        char *d = decode(t, v, vn, &dl);
        CHECKF(dl == glen && memcmp(d, gpl, glen) == 0, "%s GPL-3 round trip differs", r.model);
        free(d);
        free(v);
    }
    free(gpl);

    /* (d) known facts */
    if (strstr(r.model, "smollm2")) {
        CHECK(kvs_tokenizer_n_vocab(t) == 49152);
        CHECK(single(t, "<|im_start|>") == 1);
        CHECK(single(t, "<|im_end|>") == 2);
        CHECK(kvs_tokenizer_eos(t) == 2 && kvs_tokenizer_bos(t) == 1);
        CHECK(!kvs_tokenizer_add_bos_default(t));
        CHECK(kvs_tokenizer_is_eog(t, 2) && kvs_tokenizer_is_eog(t, 0) && !kvs_tokenizer_is_eog(t, 1));
        CHECK(strcmp(piece_str(t, 1, false), "") == 0);
        CHECK(strcmp(piece_str(t, 1, true), "<|im_start|>") == 0);
        CHECK(strcmp(piece_str(t, 905, false), " world") == 0);
        size_t n;
        kvs_token *v = encode(t, "<|im_start|>", 12, false, false, &n);
        CHECK(v && n > 1);
        for (size_t i = 0; v && i < n; i++) CHECK(v[i] != 1);
        free(v);
        char *chat = kvs_tokenizer_chat_user(t, "Hi!");
        CHECK(chat && strcmp(chat, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained "
                                   "by Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                                   "<|im_start|>assistant\n") == 0);
        kvs_free(chat);
        /* a conversation with its own system prompt replaces the default one */
        const kvs_chat_message conv[] = {{"system", "S"}, {"user", "U"}, {"assistant", "A"}, {"user", "V"}};
        chat = kvs_tokenizer_chat_format(t, conv, 4, false);
        CHECK(chat && strcmp(chat, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                                   "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nV<|im_end|>\n") == 0);
        kvs_free(chat);
        CHECK(kvs_tokenizer_chat_format(t, (const kvs_chat_message[]){{NULL, "x"}}, 1, true) == NULL);
    } else if (strstr(r.model, "gemma")) {
        CHECK(kvs_tokenizer_n_vocab(t) == 262144);
        CHECK(kvs_tokenizer_bos(t) == 2 && kvs_tokenizer_eos(t) == 1);
        CHECK(kvs_tokenizer_add_bos_default(t));
        kvs_token eot = single(t, "<end_of_turn>");
        CHECK(eot == 106 && kvs_tokenizer_is_eog(t, eot) && kvs_tokenizer_is_eog(t, 1));
        CHECK(!kvs_tokenizer_is_eog(t, 2));
        CHECK(strcmp(piece_str(t, 303, false), "A") == 0); /* byte token <0x41> */
        CHECK(single(t, "<0x41>") != 303);               /* byte tokens are not special text */
        CHECK(strcmp(piece_str(t, 9259, false), "Hello") == 0);
        CHECK(strcmp(piece_str(t, 1902, false), " world") == 0);
        CHECK(strcmp(piece_str(t, 2, false), "") == 0);
        /* user-defined tokens ("\n" runs) are cut out even without parse_special */
        size_t n;
        kvs_token *v = encode(t, "a\n\nb", 4, false, false, &n);
        CHECK(v && n == 3 && v[1] == 108);
        free(v);
        /* no chat template in this file: the Gemma turn tokens of its
           vocabulary choose the Gemma convention (as llama.cpp does) */
        char *chat = kvs_tokenizer_chat_user(t, "Hi");
        CHECK(chat && strcmp(chat, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n") == 0);
        kvs_free(chat);
        /* no system role: its text opens the first user turn; assistant is "model" */
        const kvs_chat_message conv[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
        chat = kvs_tokenizer_chat_format(t, conv, 4, true);
        CHECK(chat && strcmp(chat, "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello."
                                   "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n") == 0);
        kvs_free(chat);
        /* byte fallback: a code point with no piece of its own */
        v = encode(t, "\xf0\x9f\x82\xa1", 4, false, false, &n);
        size_t dl;
        char *d = decode(t, v, n, &dl);
        CHECK(dl == 4 && memcmp(d, "\xf0\x9f\x82\xa1", 4) == 0);
        free(d);
        free(v);
    }
    CHECK(kvs_tokenizer_piece(t, -1, true, NULL, 0) == -1);
    CHECK(kvs_tokenizer_piece(t, kvs_tokenizer_n_vocab(t), true, NULL, 0) == -1);
    /* cap too small: count still reported, buffer not overrun */
    kvs_token small[2];
    size_t n = 0;
    CHECK(kvs_tokenizer_encode(t, "one two three four", 18, false, true, small, 2, &n) == KVS_OK && n > 2);

    kvs_tokenizer_free(t);
    kvs_gguf_close(g);
    free_ref(&r);
}

/* ---- tiny vocabularies ---------------------------------------------------- */

typedef struct kvspec {
    const char *key;
    uint32_t type;     /* STRING, U32, BOOL-as-u32, ARRAY */
    const char *str;
    uint32_t u32;
    uint32_t arr_type;
    const char **strs; /* STRING arrays */
    const void *data;  /* numeric arrays */
    uint64_t n;
} kvspec;

static char g_tmp[128];

static kvs_status build(const kvspec *specs, int n, kvs_gguf **g_out, kvs_tokenizer **t_out) {
    *g_out = NULL;
    *t_out = NULL;
    kvs_gguf_writer *w = NULL;
    kvs_status st = kvs_gguf_writer_new(&w);
    if (st) return st;
    for (int i = 0; i < n && st == KVS_OK; i++) {
        const kvspec *s = &specs[i];
        if (s->type == KVS_GGUF_STRING) {
            st = kvs_gguf_writer_set_str(w, s->key, s->str);
        } else if (s->type == KVS_GGUF_U32) {
            st = kvs_gguf_writer_set_u32(w, s->key, s->u32);
        } else {
            kvs_gguf_str strs[32];
            kvs_gguf_kv kv;
            memset(&kv, 0, sizeof kv);
            kv.key.s = s->key;
            kv.key.len = strlen(s->key);
            kv.type = s->type;
            if (s->type == KVS_GGUF_BOOL) {
                kv.v.b = s->u32 != 0;
            } else {
                kv.v.arr.type = s->arr_type;
                kv.v.arr.n = s->n;
                if (s->arr_type == KVS_GGUF_STRING) {
                    for (uint64_t j = 0; j < s->n && j < 32; j++) {
                        strs[j].s = s->strs[j];
                        strs[j].len = strlen(s->strs[j]);
                    }
                    kv.v.arr.strs = strs;
                } else {
                    kv.v.arr.data = s->data;
                }
            }
            st = kvs_gguf_writer_copy_kv(w, &kv);
        }
    }
    if (st == KVS_OK) st = kvs_gguf_writer_write(w, g_tmp);
    kvs_gguf_writer_free(w);
    if (st) return st;
    st = kvs_gguf_open(g_tmp, false, g_out);
    if (st) return st;
    return kvs_tokenizer_load(*g_out, t_out);
}

static void expect_fail(const char *what, const kvspec *specs, int n, kvs_status want) {
    kvs_gguf *g;
    kvs_tokenizer *t;
    kvs_status st = build(specs, n, &g, &t);
    CHECKF(st == want && t == NULL && kvs_last_error()[0], "%s: status %s (%s), want %s", what,
           kvs_status_name(st), kvs_last_error(), kvs_status_name(want));
    kvs_tokenizer_free(t);
    kvs_gguf_close(g);
}

static void test_tiny(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kvs_test_tok_%ld.gguf", (long)getpid());
    static const char *bpe_toks[] = {"<|end|>", "a", "b", "ab", "\xc4\xa0", "\xc4\xa0" "ab", "c"};
    static const uint32_t bpe_types[] = {3, 1, 1, 1, 1, 1, 1};
    static const uint32_t bad_types[] = {3, 1, 1, 1, 1, 1, 9};
    static const char *merges[] = {"a b", "\xc4\xa0 ab"};
    static const char *bad_merges1[] = {"a b", "a z"};
    static const char *bad_merges2[] = {"ab"};
    static const char *bad_merges3[] = {"b a"}; /* "ba" is not a token */
    kvspec ok_bpe[] = {
        {"tokenizer.ggml.model", KVS_GGUF_STRING, "gpt2", 0, 0, NULL, NULL, 0},
        {"tokenizer.ggml.pre", KVS_GGUF_STRING, "gpt-2", 0, 0, NULL, NULL, 0},
        {"tokenizer.ggml.tokens", KVS_GGUF_ARRAY, NULL, 0, KVS_GGUF_STRING, bpe_toks, NULL, 7},
        {"tokenizer.ggml.token_type", KVS_GGUF_ARRAY, NULL, 0, KVS_GGUF_U32, NULL, bpe_types, 7},
        {"tokenizer.ggml.merges", KVS_GGUF_ARRAY, NULL, 0, KVS_GGUF_STRING, merges, NULL, 2},
        {"tokenizer.ggml.eos_token_id", KVS_GGUF_U32, NULL, 0, 0, NULL, NULL, 0},
        {"tokenizer.chat_template", KVS_GGUF_STRING, "{{ '<|im_start|>' }}", 0, 0, NULL, NULL, 0},
    };
    int nk = (int)(sizeof ok_bpe / sizeof ok_bpe[0]);

    kvs_gguf *g;
    kvs_tokenizer *t;
    kvs_status st = build(ok_bpe, nk, &g, &t);
    CHECKF(st == KVS_OK, "tiny bpe: %s", kvs_last_error());
    if (st == KVS_OK) {
        size_t n;
        kvs_token *v = encode(t, "ab ab<|end|>c", 13, true, true, &n);
        CHECK(v && n == 4 && v[0] == 3 && v[1] == 5 && v[2] == 0 && v[3] == 6);
        free(v);
        v = encode(t, "ab<|end|>", 9, true, false, &n); /* no parse_special: '<' etc. have no tokens */
        CHECK(v && n == 1 && v[0] == 3);
        free(v);
        CHECK(kvs_tokenizer_is_eog(t, 0) && kvs_tokenizer_bos(t) == -1);
        char *chat = kvs_tokenizer_chat_user(t, "x");
        CHECK(chat && strcmp(chat, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n") == 0);
        kvs_free(chat);
        /* out of memory at every allocation of an encode */
        int fails = 0;
        for (int64_t k = 0; k < 64; k++) {
            kvs_token out[16];
            kvs_alloc_fail_after(k);
            kvs_status est = kvs_tokenizer_encode(t, "ab ab ab<|end|>abc", 18, false, true, out, 16, &n);
            kvs_alloc_fail_after(-1);
            if (est == KVS_OK) break;
            CHECK(est == KVS_ERR_NOMEM);
            fails++;
        }
        CHECK(fails > 0);
    }
    kvs_tokenizer_free(t);
    kvs_gguf_close(g);

    /* out of memory at every allocation of a load */
    {
        build(ok_bpe, nk, &g, &t);
        kvs_tokenizer_free(t);
        int fails = 0;
        for (int64_t k = 0; g && k < 200; k++) {
            kvs_tokenizer *t2 = NULL;
            kvs_alloc_fail_after(k);
            kvs_status lst = kvs_tokenizer_load(g, &t2);
            kvs_alloc_fail_after(-1);
            if (lst == KVS_OK) {
                kvs_tokenizer_free(t2);
                break;
            }
            CHECK(lst == KVS_ERR_NOMEM && t2 == NULL);
            fails++;
        }
        CHECK(fails > 3);
        kvs_gguf_close(g);
    }

    kvspec bad[8];
    /* no tokens */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[2].key = "tokenizer.ggml.tokenz";
    expect_fail("missing tokens", bad, nk, KVS_ERR_FORMAT);
    /* tokens not an array */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[2].type = KVS_GGUF_U32;
    expect_fail("tokens not an array", bad, nk, KVS_ERR_FORMAT);
    /* token_type length mismatch */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[3].n = 6;
    expect_fail("token_type length", bad, nk, KVS_ERR_FORMAT);
    /* token_type unknown value */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[3].data = bad_types;
    expect_fail("token_type value", bad, nk, KVS_ERR_FORMAT);
    /* eos out of range */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[5].u32 = 7;
    expect_fail("eos out of range", bad, nk, KVS_ERR_FORMAT);
    /* eos of the wrong type */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[5].type = KVS_GGUF_STRING;
    bad[5].str = "0";
    expect_fail("eos not an integer", bad, nk, KVS_ERR_FORMAT);
    /* merges missing */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[4].key = "tokenizer.ggml.mergez";
    expect_fail("missing merges", bad, nk, KVS_ERR_FORMAT);
    /* merge naming an unknown token */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[4].strs = bad_merges1;
    expect_fail("merge with unknown token", bad, nk, KVS_ERR_FORMAT);
    /* merge without separator */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[4].strs = bad_merges2;
    bad[4].n = 1;
    expect_fail("merge without space", bad, nk, KVS_ERR_FORMAT);
    /* merge whose result is not a token */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[4].strs = bad_merges3;
    bad[4].n = 1;
    expect_fail("merge result unknown", bad, nk, KVS_ERR_FORMAT);
    /* merges of the wrong type */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[4].arr_type = KVS_GGUF_U32;
    bad[4].data = bpe_types;
    expect_fail("merges not strings", bad, nk, KVS_ERR_FORMAT);
    /* unknown model and pre-tokenizer */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[0].str = "wordpiece-ish";
    expect_fail("unknown model", bad, nk, KVS_ERR_UNSUPPORTED);
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[1].str = "no-such-pre";
    expect_fail("unknown pre", bad, nk, KVS_ERR_UNSUPPORTED);
    /* no model key */
    memcpy(bad, ok_bpe, sizeof ok_bpe);
    bad[0].key = "tokenizer.ggml.modle";
    expect_fail("missing model", bad, nk, KVS_ERR_FORMAT);

    /* tiny SPM: scores drive merges, bytes fall back to <0xXX> */
    static const char *spm_toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "h", "i", "hi",
                                     "\xe2\x96\x81hi", "<0x21>", "<0xC3>", "<0xA9>"};
    static const uint32_t spm_types[] = {2, 3, 3, 1, 1, 1, 1, 1, 6, 6, 6};
    static const float spm_scores[] = {0, 0, 0, -1, -2, -2, -3, -4, 0, 0, 0};
    static const float bad_scores[] = {0, 0, 0};
    kvspec ok_spm[] = {
        {"tokenizer.ggml.model", KVS_GGUF_STRING, "llama", 0, 0, NULL, NULL, 0},
        {"tokenizer.ggml.tokens", KVS_GGUF_ARRAY, NULL, 0, KVS_GGUF_STRING, spm_toks, NULL, 11},
        {"tokenizer.ggml.token_type", KVS_GGUF_ARRAY, NULL, 0, KVS_GGUF_U32, NULL, spm_types, 11},
        {"tokenizer.ggml.scores", KVS_GGUF_ARRAY, NULL, 0, KVS_GGUF_F32, NULL, spm_scores, 11},
        {"tokenizer.chat_template", KVS_GGUF_STRING, "[INST] {{ m }} [/INST]", 0, 0, NULL, NULL, 0},
    };
    int ns = (int)(sizeof ok_spm / sizeof ok_spm[0]);
    st = build(ok_spm, ns, &g, &t);
    CHECKF(st == KVS_OK, "tiny spm: %s", kvs_last_error());
    if (st == KVS_OK) {
        size_t n;
        /* default add_space_prefix: "hi hi!" -> ▁hi ▁hi <0x21> */
        kvs_token *v = encode(t, "hi hi!", 6, true, true, &n);
        CHECK(v && n == 4 && v[0] == 1 && v[1] == 7 && v[2] == 7 && v[3] == 8);
        size_t dl;
        char *d = decode(t, v, n, &dl);
        CHECK(strcmp(d, " hi hi!") == 0); /* the prefix space is part of the pieces */
        free(d);
        free(v);
        v = encode(t, "\xc3\xa9", 2, false, true, &n); /* ▁ <0xC3> <0xA9> */
        CHECK(v && n == 3 && v[0] == 3 && v[1] == 9 && v[2] == 10);
        free(v);
        v = encode(t, "<s>hi", 5, false, false, &n); /* control text is not produced by merges */
        for (size_t i = 0; v && i < n; i++) CHECK(v[i] != 1);
        free(v);
        v = encode(t, "<s>hi", 5, false, true, &n); /* parse_special: <s>, then ▁hi */
        CHECK(v && n == 2 && v[0] == 1 && v[1] == 7);
        free(v);
        char *chat = kvs_tokenizer_chat_user(t, "yo");
        CHECK(chat && strcmp(chat, "[INST] yo [/INST]") == 0);
        kvs_free(chat);
    }
    kvs_tokenizer_free(t);
    kvs_gguf_close(g);
    memcpy(bad, ok_spm, sizeof ok_spm);
    bad[3].data = bad_scores;
    bad[3].n = 3;
    expect_fail("scores length", bad, ns, KVS_ERR_FORMAT);
    memcpy(bad, ok_spm, sizeof ok_spm);
    bad[3].arr_type = KVS_GGUF_STRING;
    bad[3].strs = spm_toks;
    expect_fail("scores not numeric", bad, ns, KVS_ERR_FORMAT);
    unlink(g_tmp);
}

int main(void) {
    check_model("tests/data/tok_ref_smollm2-135m-instruct.txt");
    check_model("tests/data/tok_ref_gemma-3-270m.txt");
    test_tiny();
    return test_finish("test_tokenizer");
}
