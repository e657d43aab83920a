/* Tokenizer from GGUF metadata: owns the vocabulary (token texts copied into
 * one arena, scores, types), a text -> id hash map, the BPE merge map
 * (pair of ids -> rank and result), the special-token index used to cut
 * special text out of the input, the end-of-generation set and the chat
 * template.
 *
 * Behaviour follows llama.cpp's (llama-vocab.cpp), which is the reference
 * the tests compare against:
 *  - special tokens (CONTROL/USER_DEFINED/UNKNOWN types) are cut out of the
 *    input longest text first over the whole input; USER_DEFINED ones always,
 *    CONTROL/UNKNOWN ones only with parse_special;
 *  - BPE ("gpt2"): pre-tokenize (tok/unicode.c), map bytes to GPT-2 code
 *    points, merge the lowest-ranked adjacent pair first (leftmost on ties);
 *  - SPM ("llama"): spaces -> U+2581 (plus a leading one when
 *    add_space_prefix and the fragment starts the text or follows a special
 *    token), merge the adjacent pair whose concatenation is the
 *    highest-scoring token (leftmost on ties), unknown pieces fall back to
 *    <0xXX> byte tokens. Unlike llama.cpp (and like SentencePiece) merges
 *    never produce CONTROL tokens: "<bos>" typed as text without
 *    parse_special is tokenized as plain text. */
#include "tok/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "tok/unicode.h"

/* GGUF token types (llama.cpp's llama_token_type). */
enum {
    TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3,
    TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6,
};

enum { KIND_BPE = 1, KIND_SPM = 2 };

#define MAX_EOG 16

struct kvs_tokenizer {
    int kind;
    kvs_pretok pretok;
    bool ignore_merges; /* llama3: a pre-token that is itself a token is not merged */
    bool add_bos, add_space_prefix;
    int32_t n_vocab;
    kvs_token bos, eos, eot, eom, unk;

    char *arena;        /* all token texts, each NUL-terminated */
    uint64_t *text_off; /* (n_vocab) offsets into arena */
    uint32_t *text_len; /* (n_vocab) */
    float *scores;      /* (n_vocab) */
    uint8_t *types;     /* (n_vocab) */

    int32_t *tmap;      /* (tmap_cap) text -> id, open addressing, -1 = empty */
    size_t tmap_cap;

    uint64_t *mkeys;    /* (mcap) (left << 32 | right), UINT64_MAX = empty */
    int32_t *mrank;     /* (mcap) */
    int32_t *mres;      /* (mcap) id of the merged token */
    size_t mcap;

    kvs_token byte_tok[256];
    int16_t cp_byte[0x144]; /* GPT-2 code point -> byte, -1 if none */

    /* special tokens: distinct text lengths (descending) and, per length, a
     * bitmap of first bytes */
    uint32_t *spec_lens;
    uint8_t (*spec_first)[32];
    size_t n_spec_lens;

    kvs_token eog[MAX_EOG];
    int n_eog;

    char *chat_template; /* NULL if none */
    int chat_style;      /* kvs_chat_style: from the template, else from the vocabulary */
};

/* ---- hashing ------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static inline const char *tok_text(const kvs_tokenizer *t, kvs_token id) { return t->arena + t->text_off[id]; }

static int chat_style_of(const kvs_tokenizer *t);

static kvs_token lookup(const kvs_tokenizer *t, const char *s, size_t n) {
    size_t mask = t->tmap_cap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->tmap[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(tok_text(t, id), s, n) == 0) return id;
    }
}

/* Later duplicates replace earlier ones (as llama.cpp's token_to_id). */
static void tmap_insert(kvs_tokenizer *t, kvs_token id) {
    size_t mask = t->tmap_cap - 1;
    const char *s = tok_text(t, id);
    size_t n = t->text_len[id];
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t o = t->tmap[i];
        if (o < 0 || (t->text_len[o] == n && memcmp(tok_text(t, o), s, n) == 0)) {
            t->tmap[i] = id;
            return;
        }
    }
}

static bool merge_find(const kvs_tokenizer *t, kvs_token l, kvs_token r, int32_t *rank, kvs_token *res) {
    if (!t->mcap) return false;
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t mask = t->mcap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (t->mkeys[i] == UINT64_MAX) return false;
        if (t->mkeys[i] == key) {
            *rank = t->mrank[i];
            *res = t->mres[i];
            return true;
        }
    }
}

/* First occurrence wins (lowest rank). */
static void merge_insert(kvs_tokenizer *t, kvs_token l, kvs_token r, int32_t rank, kvs_token res) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t mask = t->mcap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (t->mkeys[i] == key) return;
        if (t->mkeys[i] == UINT64_MAX) {
            t->mkeys[i] = key;
            t->mrank[i] = rank;
            t->mres[i] = res;
            return;
        }
    }
}

static bool is_special_type(uint8_t ty) {
    return ty == TT_CONTROL || ty == TT_USER_DEFINED || ty == TT_UNKNOWN;
}

/* ---- loading ------------------------------------------------------------ */

void kvs_tokenizer_free(kvs_tokenizer *t) {
    if (!t) return;
    kvs_free(t->arena);
    kvs_free(t->text_off);
    kvs_free(t->text_len);
    kvs_free(t->scores);
    kvs_free(t->types);
    kvs_free(t->tmap);
    kvs_free(t->mkeys);
    kvs_free(t->mrank);
    kvs_free(t->mres);
    kvs_free(t->spec_lens);
    kvs_free(t->spec_first);
    kvs_free(t->chat_template);
    kvs_free(t);
}

static kvs_status nomem(void) { return kvs_fail(KVS_ERR_NOMEM, "tokenizer: out of memory loading the vocabulary"); }

/* Optional token id key: absent -> *out untouched; present -> must be an
 * integer in [0, n_vocab). */
static kvs_status get_id(const kvs_gguf *g, const char *key, int32_t n_vocab, kvs_token *out) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return KVS_OK;
    uint64_t v;
    bool ok = kvs_gguf_get_u64(g, key, &v);
    if (!ok) {
        int32_t s;
        if (kvs_gguf_get_i32(g, key, &s) && s == -1) return KVS_OK; /* "none" */
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: %s is not a token id (type %s)", key,
                        kvs_gguf_vtype_name(kv->type));
    }
    if (v >= (uint64_t)n_vocab)
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: %s = %llu is out of range (n_vocab %d)", key,
                        (unsigned long long)v, n_vocab);
    *out = (kvs_token)v;
    return KVS_OK;
}

static kvs_status get_flag(const kvs_gguf *g, const char *key, bool *out) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return KVS_OK;
    if (!kvs_gguf_get_bool(g, key, out))
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: %s is not a bool (type %s)", key,
                        kvs_gguf_vtype_name(kv->type));
    return KVS_OK;
}

/* Numeric per-token array: absent -> NULL; present -> checked length/type. */
static kvs_status get_num_array(const kvs_gguf *g, const char *key, int32_t n_vocab,
                                const kvs_gguf_kv **out) {
    *out = NULL;
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return KVS_OK;
    if (kv->type != KVS_GGUF_ARRAY || kv->v.arr.type == KVS_GGUF_STRING ||
        kv->v.arr.type == KVS_GGUF_ARRAY)
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: %s is not a numeric array", key);
    if (kv->v.arr.n != (uint64_t)n_vocab)
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: %s has %llu entries, tokens has %d", key,
                        (unsigned long long)kv->v.arr.n, n_vocab);
    *out = kv;
    return KVS_OK;
}

static const struct { const char *name; kvs_pretok kind; bool ignore_merges; } k_pre_names[] = {
    {"default", KVS_PRETOK_DEFAULT, false},
    {"llama3", KVS_PRETOK_LLAMA3, true},
    {"llama-v3", KVS_PRETOK_LLAMA3, true},
    {"llama-bpe", KVS_PRETOK_LLAMA3, true},
    {"falcon3", KVS_PRETOK_LLAMA3, true},
    {"pixtral", KVS_PRETOK_LLAMA3, true},
    {"qwen2", KVS_PRETOK_QWEN2, false},
    {"deepseek-r1-qwen", KVS_PRETOK_QWEN2, false},
    {"megrez", KVS_PRETOK_QWEN2, false},
    {"gpt-2", KVS_PRETOK_GPT2, false},
    {"phi-2", KVS_PRETOK_GPT2, false},
    {"jina-es", KVS_PRETOK_GPT2, false},
    {"jina-de", KVS_PRETOK_GPT2, false},
    {"roberta-bpe", KVS_PRETOK_GPT2, false},
    {"smollm", KVS_PRETOK_SMOLLM, false},
    {"starcoder", KVS_PRETOK_SMOLLM, false},
    {"refact", KVS_PRETOK_SMOLLM, false},
    {"command-r", KVS_PRETOK_SMOLLM, false},
    {"codeshell", KVS_PRETOK_SMOLLM, false},
    {"exaone", KVS_PRETOK_SMOLLM, false},
    {"minerva-7b", KVS_PRETOK_SMOLLM, false},
};

static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>", "<|return|>", "<|call|>",
};

static void add_eog(kvs_tokenizer *t, kvs_token id) {
    if (id < 0) return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    if (t->n_eog < MAX_EOG) t->eog[t->n_eog++] = id;
}

static int cmp_u32_desc(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static kvs_status load_merges(kvs_tokenizer *t, const kvs_gguf *g) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, "tokenizer.ggml.merges");
    if (!kv) return kvs_fail(KVS_ERR_FORMAT, "tokenizer: BPE vocabulary without tokenizer.ggml.merges");
    if (kv->type != KVS_GGUF_ARRAY || kv->v.arr.type != KVS_GGUF_STRING)
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: tokenizer.ggml.merges is not a string array");
    uint64_t n = kv->v.arr.n;
    if (n > (uint64_t)INT32_MAX)
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: %llu merges is too many", (unsigned long long)n);
    t->mcap = pow2_at_least((size_t)n * 2 + 1);
    t->mkeys = kvs_malloc(t->mcap * sizeof *t->mkeys);
    t->mrank = kvs_malloc(t->mcap * sizeof *t->mrank);
    t->mres = kvs_malloc(t->mcap * sizeof *t->mres);
    if (!t->mkeys || !t->mrank || !t->mres) return nomem();
    memset(t->mkeys, 0xff, t->mcap * sizeof *t->mkeys);
    char *buf = NULL;
    size_t buf_cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        const kvs_gguf_str *s = &kv->v.arr.strs[i];
        const char *sp = s->len > 1 ? memchr(s->s + 1, ' ', s->len - 1) : NULL;
        if (!sp) {
            kvs_free(buf);
            return kvs_fail(KVS_ERR_FORMAT, "tokenizer: merge %llu (\"%.40s\") has no space separator",
                            (unsigned long long)i, s->s);
        }
        size_t ln = (size_t)(sp - s->s), rn = s->len - ln - 1;
        kvs_token l = lookup(t, s->s, ln), r = lookup(t, sp + 1, rn);
        if (s->len > buf_cap) {
            kvs_free(buf);
            buf_cap = s->len * 2;
            buf = kvs_malloc(buf_cap);
            if (!buf) return nomem();
        }
        memcpy(buf, s->s, ln);
        memcpy(buf + ln, sp + 1, rn);
        kvs_token res = lookup(t, buf, ln + rn);
        if (l < 0 || r < 0 || res < 0) {
            kvs_free(buf);
            return kvs_fail(KVS_ERR_FORMAT, "tokenizer: merge %llu (\"%.40s\") names %s not in the vocabulary",
                            (unsigned long long)i, s->s, l < 0 || r < 0 ? "a token" : "a result");
        }
        merge_insert(t, l, r, (int32_t)i, res);
    }
    kvs_free(buf);
    return KVS_OK;
}

static kvs_status load_impl(kvs_tokenizer *t, const kvs_gguf *g) {
    kvs_status st;
    const char *model = kvs_gguf_get_str(g, "tokenizer.ggml.model");
    if (!model) return kvs_fail(KVS_ERR_FORMAT, "tokenizer: tokenizer.ggml.model missing or not a string");
    if (strcmp(model, "gpt2") == 0) {
        t->kind = KIND_BPE;
    } else if (strcmp(model, "llama") == 0) {
        t->kind = KIND_SPM;
    } else {
        return kvs_fail(KVS_ERR_UNSUPPORTED, "tokenizer: tokenizer model \"%.40s\" is not supported", model);
    }

    const kvs_gguf_kv *toks = kvs_gguf_find(g, "tokenizer.ggml.tokens");
    if (!toks) return kvs_fail(KVS_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens missing");
    if (toks->type != KVS_GGUF_ARRAY || toks->v.arr.type != KVS_GGUF_STRING)
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens is not a string array");
    if (toks->v.arr.n == 0 || toks->v.arr.n > (uint64_t)INT32_MAX)
        return kvs_fail(KVS_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens has %llu entries",
                        (unsigned long long)toks->v.arr.n);
    int32_t n = (int32_t)toks->v.arr.n;
    t->n_vocab = n;

    const kvs_gguf_kv *scores, *types;
    if ((st = get_num_array(g, "tokenizer.ggml.scores", n, &scores))) return st;
    if ((st = get_num_array(g, "tokenizer.ggml.token_type", n, &types))) return st;

    uint64_t arena_bytes = 0;
    for (int32_t i = 0; i < n; i++) {
        if (toks->v.arr.strs[i].len > UINT32_MAX)
            return kvs_fail(KVS_ERR_FORMAT, "tokenizer: token %d text is too long", i);
        arena_bytes += toks->v.arr.strs[i].len + 1;
    }
    if (arena_bytes > SIZE_MAX / 2) return nomem();
    t->arena = kvs_malloc((size_t)arena_bytes);
    t->text_off = kvs_malloc((size_t)n * sizeof *t->text_off);
    t->text_len = kvs_malloc((size_t)n * sizeof *t->text_len);
    t->scores = kvs_malloc((size_t)n * sizeof *t->scores);
    t->types = kvs_malloc((size_t)n);
    t->tmap_cap = pow2_at_least((size_t)n * 2 + 1);
    t->tmap = kvs_malloc(t->tmap_cap * sizeof *t->tmap);
    if (!t->arena || !t->text_off || !t->text_len || !t->scores || !t->types || !t->tmap) return nomem();
    memset(t->tmap, 0xff, t->tmap_cap * sizeof *t->tmap);

    uint64_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        const kvs_gguf_str *s = &toks->v.arr.strs[i];
        memcpy(t->arena + off, s->s, s->len);
        t->arena[off + s->len] = '\0';
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)s->len;
        off += s->len + 1;
        t->scores[i] = scores ? (float)kvs_gguf_arr_float(scores, (uint64_t)i) : 0.0f;
        int64_t ty = types ? kvs_gguf_arr_int(types, (uint64_t)i) : TT_NORMAL;
        if (ty < TT_UNDEFINED || ty > TT_BYTE)
            return kvs_fail(KVS_ERR_FORMAT, "tokenizer: token %d has unknown type %lld", i, (long long)ty);
        t->types[i] = (uint8_t)(ty == TT_UNDEFINED ? TT_NORMAL : ty);
        tmap_insert(t, i);
    }

    /* special ids and flags */
    t->bos = t->eos = t->eot = t->eom = t->unk = -1;
    if (t->kind == KIND_SPM) {
        t->add_bos = true;
        t->add_space_prefix = true;
        if (n > 2) {
            t->unk = 0;
            t->bos = 1;
            t->eos = 2;
        }
    }
    if (t->kind == KIND_BPE) {
        const char *pre = kvs_gguf_get_str(g, "tokenizer.ggml.pre");
        if (!pre) pre = "default";
        size_t k = 0, nk = sizeof k_pre_names / sizeof k_pre_names[0];
        while (k < nk && strcmp(k_pre_names[k].name, pre) != 0) k++;
        if (k == nk)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer \"%.40s\" is not supported", pre);
        t->pretok = k_pre_names[k].kind;
        t->ignore_merges = k_pre_names[k].ignore_merges;
        t->add_bos = t->pretok == KVS_PRETOK_LLAMA3;
    }
    if ((st = get_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos))) return st;
    if ((st = get_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos))) return st;
    if ((st = get_id(g, "tokenizer.ggml.eot_token_id", n, &t->eot))) return st;
    if ((st = get_id(g, "tokenizer.ggml.eom_token_id", n, &t->eom))) return st;
    if ((st = get_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk))) return st;
    if ((st = get_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos))) return st;
    if ((st = get_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix))) return st;

    /* byte tokens */
    for (int b = 0; b < 256; b++) {
        char s[8];
        if (t->kind == KIND_BPE) {
            size_t l = kvs_utf8_encode(kvs_byte_to_cp((uint8_t)b), s);
            t->byte_tok[b] = lookup(t, s, l);
        } else {
            snprintf(s, sizeof s, "<0x%02X>", b);
            t->byte_tok[b] = lookup(t, s, 6);
            if (t->byte_tok[b] < 0) {
                s[0] = (char)b;
                t->byte_tok[b] = lookup(t, s, 1);
            }
        }
    }
    for (uint32_t cp = 0; cp < 0x144; cp++) t->cp_byte[cp] = (int16_t)kvs_cp_to_byte(cp);

    if (t->kind == KIND_BPE && (st = load_merges(t, g))) return st;

    /* special token lengths */
    size_t n_spec = 0;
    for (int32_t i = 0; i < n; i++) n_spec += is_special_type(t->types[i]) && t->text_len[i] > 0;
    if (n_spec) {
        uint32_t *lens = kvs_malloc(n_spec * sizeof *lens);
        if (!lens) return nomem();
        size_t k = 0;
        for (int32_t i = 0; i < n; i++)
            if (is_special_type(t->types[i]) && t->text_len[i] > 0) lens[k++] = t->text_len[i];
        qsort(lens, n_spec, sizeof *lens, cmp_u32_desc);
        size_t nd = 0;
        for (size_t i = 0; i < n_spec; i++)
            if (nd == 0 || lens[nd - 1] != lens[i]) lens[nd++] = lens[i];
        t->spec_lens = lens;
        t->n_spec_lens = nd;
        t->spec_first = kvs_calloc(nd, sizeof *t->spec_first);
        if (!t->spec_first) return nomem();
        for (int32_t i = 0; i < n; i++) {
            if (!is_special_type(t->types[i]) || t->text_len[i] == 0) continue;
            size_t lo = 0, hi = nd; /* lens descending: find index of text_len[i] */
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (lens[mid] > t->text_len[i]) lo = mid + 1; else hi = mid;
            }
            uint8_t c = (uint8_t)tok_text(t, i)[0];
            t->spec_first[lo][c >> 3] |= (uint8_t)(1u << (c & 7));
        }
    }

    /* end of generation */
    add_eog(t, t->eos);
    add_eog(t, t->eot);
    add_eog(t, t->eom);
    for (size_t i = 0; i < sizeof k_eog_texts / sizeof k_eog_texts[0]; i++)
        add_eog(t, lookup(t, k_eog_texts[i], strlen(k_eog_texts[i])));

    const char *tmpl = kvs_gguf_get_str(g, "tokenizer.chat_template");
    if (tmpl) {
        t->chat_template = kvs_strdup(tmpl);
        if (!t->chat_template) return nomem();
    }
    t->chat_style = chat_style_of(t);
    return KVS_OK;
}

kvs_status kvs_tokenizer_load(const kvs_gguf *g, kvs_tokenizer **out) {
    if (!g || !out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_tokenizer_load: NULL argument");
    *out = NULL;
    kvs_tokenizer *t = kvs_calloc(1, sizeof *t);
    if (!t) return nomem();
    kvs_status st = load_impl(t, g);
    if (st != KVS_OK) {
        kvs_tokenizer_free(t);
        return st;
    }
    *out = t;
    return KVS_OK;
}

int32_t kvs_tokenizer_n_vocab(const kvs_tokenizer *t) { return t->n_vocab; }
kvs_token kvs_tokenizer_bos(const kvs_tokenizer *t) { return t->bos; }
kvs_token kvs_tokenizer_eos(const kvs_tokenizer *t) { return t->eos; }
bool kvs_tokenizer_add_bos_default(const kvs_tokenizer *t) { return t->add_bos && t->bos >= 0; }

bool kvs_tokenizer_is_eog(const kvs_tokenizer *t, kvs_token tok) {
    if (tok < 0) return false;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == tok) return true;
    return false;
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct tokvec { kvs_token *v; size_t n, cap; } tokvec;

static bool tv_push(tokvec *a, kvs_token x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 256;
        kvs_token *nv = kvs_realloc(a->v, nc * sizeof *nv);
        if (!nv) return false;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return true;
}

/* Merge candidates: smaller key first, then leftmost. */
typedef struct bigram { double key; int32_t left, right; uint32_t ln, rn; } bigram;
typedef struct symbol { kvs_token id; int32_t prev, next; uint32_t off, n; } symbol;

typedef struct scratch {
    symbol *sym; size_t sym_cap;
    bigram *heap; size_t heap_n, heap_cap;
    char *buf; size_t buf_cap;
} scratch;

static bool bg_less(const bigram *a, const bigram *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static bool heap_push(scratch *s, bigram b) {
    if (s->heap_n == s->heap_cap) {
        size_t nc = s->heap_cap ? s->heap_cap * 2 : 256;
        bigram *nv = kvs_realloc(s->heap, nc * sizeof *nv);
        if (!nv) return false;
        s->heap = nv;
        s->heap_cap = nc;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_less(&b, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
    return true;
}

static bigram heap_pop(scratch *s) {
    bigram top = s->heap[0];
    bigram last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bg_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!bg_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static bool reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = kvs_realloc(*p, nc * elem);
    if (!np) return false;
    *p = np;
    *cap = nc;
    return true;
}

static bool bpe_add_bigram(const kvs_tokenizer *t, scratch *s, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return true;
    int32_t rank;
    kvs_token res;
    if (s->sym[l].id < 0 || s->sym[r].id < 0 || !merge_find(t, s->sym[l].id, s->sym[r].id, &rank, &res))
        return true;
    bigram b = {(double)rank, l, r, s->sym[l].n, s->sym[r].n};
    return heap_push(s, b);
}

/* One pre-token word (raw bytes). */
static bool bpe_word(const kvs_tokenizer *t, scratch *s, const uint8_t *w, size_t n, tokvec *out) {
    if (t->ignore_merges) {
        if (!reserve((void **)&s->buf, &s->buf_cap, n * 2, 1)) return false;
        size_t l = 0;
        for (size_t i = 0; i < n; i++) l += kvs_utf8_encode(kvs_byte_to_cp(w[i]), s->buf + l);
        kvs_token id = lookup(t, s->buf, l);
        if (id >= 0) return tv_push(out, id);
    }
    if (!reserve((void **)&s->sym, &s->sym_cap, n, sizeof *s->sym)) return false;
    for (size_t i = 0; i < n; i++) {
        s->sym[i] = (symbol){t->byte_tok[w[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, (uint32_t)i, 1};
    }
    s->heap_n = 0;
    for (size_t i = 1; i < n; i++)
        if (!bpe_add_bigram(t, s, (int32_t)i - 1, (int32_t)i)) return false;
    while (s->heap_n) {
        bigram b = heap_pop(s);
        symbol *L = &s->sym[b.left], *R = &s->sym[b.right];
        if (L->n != b.ln || R->n != b.rn || L->n == 0 || R->n == 0) continue;
        int32_t rank;
        kvs_token res;
        merge_find(t, L->id, R->id, &rank, &res);
        L->id = res;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s->sym[R->next].prev = b.left;
        if (!bpe_add_bigram(t, s, L->prev, b.left) || !bpe_add_bigram(t, s, b.left, L->next)) return false;
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next) {
        /* a byte with no token of its own (not in a GPT-2 vocabulary) is dropped, as llama.cpp does */
        if (s->sym[i].id >= 0 && !tv_push(out, s->sym[i].id)) return false;
    }
    return true;
}

static kvs_status bpe_fragment(const kvs_tokenizer *t, scratch *s, const char *text, size_t len, tokvec *out) {
    size_t *ends, n_ends;
    kvs_status st = kvs_pretokenize(t->pretok, text, len, &ends, &n_ends);
    if (st) return st;
    size_t a = 0;
    for (size_t i = 0; i < n_ends; i++) {
        if (!bpe_word(t, s, (const uint8_t *)text + a, ends[i] - a, out)) {
            kvs_free(ends);
            return kvs_fail(KVS_ERR_NOMEM, "tokenizer: out of memory");
        }
        a = ends[i];
    }
    kvs_free(ends);
    return KVS_OK;
}

/* SPM piece lookup: any token but CONTROL ones. */
static kvs_token spm_lookup(const kvs_tokenizer *t, const char *p, size_t n) {
    kvs_token id = lookup(t, p, n);
    return (id >= 0 && t->types[id] == TT_CONTROL) ? -1 : id;
}

static bool spm_add_bigram(const kvs_tokenizer *t, scratch *s, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return true;
    kvs_token id = spm_lookup(t, s->buf + s->sym[l].off, s->sym[l].n + s->sym[r].n);
    if (id < 0) return true;
    bigram b = {-(double)t->scores[id], l, r, s->sym[l].n, s->sym[r].n};
    return heap_push(s, b);
}

static bool spm_fragment(const kvs_tokenizer *t, scratch *s, const char *text, size_t len, bool prefix,
                         tokvec *out) {
    /* escaped copy: ' ' -> U+2581 (3 bytes) */
    size_t need = (len + 1) * 3;
    if (!reserve((void **)&s->buf, &s->buf_cap, need, 1)) return false;
    size_t m = 0;
    if (prefix) {
        memcpy(s->buf, "\xe2\x96\x81", 3);
        m = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->buf + m, "\xe2\x96\x81", 3);
            m += 3;
        } else {
            s->buf[m++] = text[i];
        }
    }
    if (m == 0) return true;
    if (m > UINT32_MAX / 2) return false;
    if (!reserve((void **)&s->sym, &s->sym_cap, m, sizeof *s->sym)) return false;
    size_t ns = 0;
    for (size_t off = 0; off < m;) {
        size_t l = kvs_utf8_len((uint8_t)s->buf[off]);
        if (l > m - off) l = m - off;
        s->sym[ns] = (symbol){-1, (int32_t)ns - 1, off + l < m ? (int32_t)ns + 1 : -1, (uint32_t)off, (uint32_t)l};
        ns++;
        off += l;
    }
    s->heap_n = 0;
    for (size_t i = 1; i < ns; i++)
        if (!spm_add_bigram(t, s, (int32_t)i - 1, (int32_t)i)) return false;
    while (s->heap_n) {
        bigram b = heap_pop(s);
        symbol *L = &s->sym[b.left], *R = &s->sym[b.right];
        if (L->n == 0 || R->n == 0 || L->n != b.ln || R->n != b.rn) continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s->sym[R->next].prev = b.left;
        if (!spm_add_bigram(t, s, L->prev, b.left) || !spm_add_bigram(t, s, b.left, L->next)) return false;
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next) {
        const symbol *y = &s->sym[i];
        kvs_token id = spm_lookup(t, s->buf + y->off, y->n);
        if (id >= 0) {
            if (!tv_push(out, id)) return false;
            continue;
        }
        for (uint32_t j = 0; j < y->n; j++) {
            kvs_token bt = t->byte_tok[(uint8_t)s->buf[y->off + j]];
            if (bt < 0) bt = t->unk;
            if (bt >= 0 && !tv_push(out, bt)) return false;
        }
    }
    return true;
}

/* A special-token occurrence found in the input. */
typedef struct spmatch { size_t pos; uint32_t len; kvs_token id; } spmatch;

static int cmp_match_prio(const void *a, const void *b) {
    const spmatch *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_match_pos(const void *a, const void *b) {
    const spmatch *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Finds special tokens to cut out of text, emulating llama.cpp: tokens are
 * taken longest first (then by id), each scanning the still-raw text left to
 * right. Result sorted by position in *out. */
static kvs_status find_specials(const kvs_tokenizer *t, const char *text, size_t len, bool parse_special,
                                spmatch **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    if (!t->n_spec_lens || len == 0) return KVS_OK;
    spmatch *m = NULL;
    size_t n = 0, cap = 0;
    for (size_t p = 0; p < len; p++) {
        uint8_t c = (uint8_t)text[p];
        for (size_t k = 0; k < t->n_spec_lens; k++) {
            uint32_t l = t->spec_lens[k];
            if (l > len - p) continue;
            if (!(t->spec_first[k][c >> 3] & (1u << (c & 7)))) continue;
            kvs_token id = lookup(t, text + p, l);
            if (id < 0 || !is_special_type(t->types[id])) continue;
            if (!parse_special && t->types[id] != TT_USER_DEFINED) continue;
            if (!reserve((void **)&m, &cap, n + 1, sizeof *m)) {
                kvs_free(m);
                return kvs_fail(KVS_ERR_NOMEM, "tokenizer: out of memory");
            }
            m[n++] = (spmatch){p, l, id};
        }
    }
    if (n == 0) return KVS_OK;
    uint8_t *taken = kvs_calloc(len, 1);
    if (!taken) {
        kvs_free(m);
        return kvs_fail(KVS_ERR_NOMEM, "tokenizer: out of memory");
    }
    qsort(m, n, sizeof *m, cmp_match_prio);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        bool free_span = true;
        for (size_t j = 0; j < m[i].len && free_span; j++) free_span = !taken[m[i].pos + j];
        if (!free_span) continue;
        memset(taken + m[i].pos, 1, m[i].len);
        m[kept++] = m[i];
    }
    kvs_free(taken);
    qsort(m, kept, sizeof *m, cmp_match_pos);
    *out = m;
    *n_out = kept;
    return KVS_OK;
}

kvs_status kvs_tokenizer_encode(const kvs_tokenizer *t, const char *text, size_t len, bool add_bos,
                                bool parse_special, kvs_token *out, size_t cap, size_t *n_out) {
    if (!t || !n_out || (!text && len) || (!out && cap))
        return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_tokenizer_encode: NULL argument");
    *n_out = 0;
    tokvec v = {0};
    scratch s = {0};
    spmatch *sp = NULL;
    size_t n_sp = 0;
    kvs_status st = find_specials(t, text, len, parse_special, &sp, &n_sp);
    if (st) return st;
    bool ok = true;
    if (add_bos && t->bos >= 0) ok = tv_push(&v, t->bos);
    bool prev_special = true; /* SPM: space prefix at the start and after a special token */
    size_t pos = 0;
    for (size_t k = 0; ok && st == KVS_OK && k <= n_sp; k++) {
        size_t end = k < n_sp ? sp[k].pos : len;
        if (end > pos) {
            if (t->kind == KIND_BPE) {
                st = bpe_fragment(t, &s, text + pos, end - pos, &v);
            } else {
                ok = spm_fragment(t, &s, text + pos, end - pos, t->add_space_prefix && prev_special, &v);
            }
            prev_special = false;
        }
        if (k < n_sp && ok && st == KVS_OK) {
            ok = tv_push(&v, sp[k].id);
            prev_special = true;
            pos = sp[k].pos + sp[k].len;
        }
    }
    if (!ok && st == KVS_OK) st = kvs_fail(KVS_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    if (st == KVS_OK) {
        *n_out = v.n;
        if (out && v.n) memcpy(out, v.v, (v.n < cap ? v.n : cap) * sizeof *out);
    }
    kvs_free(sp);
    kvs_free(v.v);
    kvs_free(s.sym);
    kvs_free(s.heap);
    kvs_free(s.buf);
    return st;
}

/* ---- decoding ------------------------------------------------------------ */

static void put(char *buf, size_t cap, size_t *n, const char *src, size_t len) {
    size_t room = *n < cap ? cap - *n : 0, k = len < room ? len : room;
    if (k == 0) return;
    memcpy(buf + *n, src, k);
    *n += k;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Writes at most cap bytes; a piece longer than cap is truncated. */
int kvs_tokenizer_piece(const kvs_tokenizer *t, kvs_token tok, bool render_special, char *buf, size_t cap) {
    if (!t || tok < 0 || tok >= t->n_vocab || (!buf && cap)) return -1;
    const char *s = tok_text(t, tok);
    size_t len = t->text_len[tok], n = 0;
    if (cap > INT32_MAX) cap = INT32_MAX;
    switch (t->types[tok]) {
    case TT_CONTROL:
    case TT_UNKNOWN:
    case TT_UNUSED:
        if (render_special) put(buf, cap, &n, s, len);
        return (int)n;
    case TT_USER_DEFINED:
        put(buf, cap, &n, s, len);
        return (int)n;
    case TT_BYTE:
        if (len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && hexval(s[3]) >= 0 &&
            hexval(s[4]) >= 0 && s[5] == '>') {
            char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            put(buf, cap, &n, &b, 1);
        } else {
            put(buf, cap, &n, s, len);
        }
        return (int)n;
    default:
        break;
    }
    if (t->kind == KIND_SPM) {
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                put(buf, cap, &n, " ", 1);
                i += 3;
            } else {
                put(buf, cap, &n, s + i, 1);
                i++;
            }
        }
        return (int)n;
    }
    for (size_t i = 0; i < len;) {
        size_t l;
        uint32_t cp = kvs_utf8_decode((const uint8_t *)s + i, len - i, &l);
        int b = cp < 0x144 ? t->cp_byte[cp] : -1;
        if (b >= 0) {
            char c = (char)b;
            put(buf, cap, &n, &c, 1);
        } else {
            put(buf, cap, &n, s + i, l); /* not a byte image: pass through */
        }
        i += l;
    }
    return (int)n;
}

/* ---- chat ---------------------------------------------------------------- */

/* ChatML templates that print a fixed system prompt when none is given
 * (SmolLM2, Qwen2.5): find "<|im_start|>system" + newline (a real one or
 * the two characters \n) followed by plain text up to "<|im_end|>". */
static char *chatml_default_system(const char *tmpl) {
    static const char *const marker = "<|im_start|>system";
    for (const char *p = strstr(tmpl, marker); p; p = strstr(p + 1, marker)) {
        const char *q = p + strlen(marker);
        if (*q == '\n') {
            q += 1;
        } else if (q[0] == '\\' && q[1] == 'n') {
            q += 2;
        } else {
            continue;
        }
        const char *e = strstr(q, "<|im_end|>");
        if (!e || e == q) continue;
        bool plain = true;
        for (const char *c = q; c < e && plain; c++)
            plain = !(*c == '{' || *c == '}' || *c == '\'' || *c == '"' || *c == '\\' || *c == '<');
        if (!plain) continue;
        size_t n = (size_t)(e - q);
        char *r = kvs_malloc(n + 1);
        if (!r) return NULL;
        memcpy(r, q, n);
        r[n] = '\0';
        return r;
    }
    return NULL;
}

/* The conversation's markers per style. A template names its style by its
 * markers; a GGUF without one (Gemma 3's) gets the style whose turn tokens
 * its vocabulary holds, as llama.cpp falls back to the architecture's own. */
enum { CHAT_NONE = 0, CHAT_CHATML = 1, CHAT_GEMMA = 2, CHAT_LLAMA3 = 3, CHAT_LLAMA2 = 4 };

static int chat_style_of(const kvs_tokenizer *t) {
    static const struct { const char *marker; int style; } k[] = {
        {"<|im_start|>", CHAT_CHATML}, {"<start_of_turn>", CHAT_GEMMA},
        {"<|start_header_id|>", CHAT_LLAMA3}, {"[INST]", CHAT_LLAMA2},
    };
    const size_t n = sizeof k / sizeof *k;
    if (t->chat_template) {
        for (size_t i = 0; i < n; i++)
            if (strstr(t->chat_template, k[i].marker)) return k[i].style;
        return CHAT_NONE; /* a template we cannot read: say so rather than guess */
    }
    for (size_t i = 0; i + 1 < n; i++) /* "[INST]" is plain text, never a special token */
        if (lookup(t, k[i].marker, strlen(k[i].marker)) >= 0) return k[i].style;
    return CHAT_NONE;
}

bool kvs_tokenizer_has_chat(const kvs_tokenizer *t) { return t && t->chat_style != CHAT_NONE; }

/* Growing output buffer for the formatter. */
typedef struct { char *p; size_t n, cap; bool oom; } chat_buf;

static void cb_put(chat_buf *b, const char *s) {
    size_t l = strlen(s);
    if (b->oom) return;
    if (b->n + l + 1 > b->cap) {
        size_t cap = (b->n + l + 1) * 2;
        char *q = kvs_realloc(b->p, cap);
        if (!q) { b->oom = true; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, l);
    b->n += l;
    b->p[b->n] = '\0';
}

static bool role_is(const kvs_chat_message *m, const char *r) { return m->role && !strcmp(m->role, r); }

char *kvs_tokenizer_chat_format(const kvs_tokenizer *t, const kvs_chat_message *msgs, size_t n, bool add_assistant) {
    if (!t || t->chat_style == CHAT_NONE || (n && !msgs)) return NULL;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content) return NULL;
    chat_buf b = {0};
    cb_put(&b, "");
    switch (t->chat_style) {
    case CHAT_CHATML: {
        if (!n || !role_is(&msgs[0], "system")) { /* the template's default system prompt (SmolLM2, Qwen2.5) */
            char *sys = chatml_default_system(t->chat_template ? t->chat_template : "");
            if (sys) { cb_put(&b, "<|im_start|>system\n"); cb_put(&b, sys); cb_put(&b, "<|im_end|>\n"); }
            kvs_free(sys);
        }
        for (size_t i = 0; i < n; i++) {
            cb_put(&b, "<|im_start|>"); cb_put(&b, msgs[i].role); cb_put(&b, "\n");
            cb_put(&b, msgs[i].content); cb_put(&b, "<|im_end|>\n");
        }
        if (add_assistant) cb_put(&b, "<|im_start|>assistant\n");
        break;
    }
    case CHAT_GEMMA: { /* no system role: the system text opens the first user turn */
        const char *sys = n && role_is(&msgs[0], "system") ? msgs[0].content : NULL;
        for (size_t i = sys ? 1 : 0; i < n; i++) {
            cb_put(&b, "<start_of_turn>");
            cb_put(&b, role_is(&msgs[i], "assistant") ? "model" : msgs[i].role);
            cb_put(&b, "\n");
            if (sys) { cb_put(&b, sys); cb_put(&b, "\n\n"); sys = NULL; }
            cb_put(&b, msgs[i].content); cb_put(&b, "<end_of_turn>\n");
        }
        if (add_assistant) cb_put(&b, "<start_of_turn>model\n");
        break;
    }
    case CHAT_LLAMA3:
        for (size_t i = 0; i < n; i++) {
            cb_put(&b, "<|start_header_id|>"); cb_put(&b, msgs[i].role); cb_put(&b, "<|end_header_id|>\n\n");
            cb_put(&b, msgs[i].content); cb_put(&b, "<|eot_id|>");
        }
        if (add_assistant) cb_put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_LLAMA2: { /* [INST] <<SYS>> s <</SYS>> u [/INST] a </s><s>[INST] ... */
        const char *sys = n && role_is(&msgs[0], "system") ? msgs[0].content : NULL;
        bool first = true;
        for (size_t i = sys ? 1 : 0; i < n; i++) {
            if (role_is(&msgs[i], "assistant")) { cb_put(&b, " "); cb_put(&b, msgs[i].content); cb_put(&b, " </s>"); continue; }
            cb_put(&b, first ? "[INST] " : "<s>[INST] ");
            if (sys) { cb_put(&b, "<<SYS>>\n"); cb_put(&b, sys); cb_put(&b, "\n<</SYS>>\n\n"); sys = NULL; }
            cb_put(&b, msgs[i].content); cb_put(&b, " [/INST]");
            first = false;
        }
        break;
    }
    default: break;
    }
    if (b.oom) { kvs_free(b.p); return NULL; }
    return b.p;
}

char *kvs_tokenizer_chat_user(const kvs_tokenizer *t, const char *user_msg) {
    if (!user_msg) return NULL;
    kvs_chat_message m = {.role = "user", .content = user_msg};
    return kvs_tokenizer_chat_format(t, &m, 1, true);
}
