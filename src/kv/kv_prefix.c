/* The prefix cache (see kv_prefix.h): snapshots, their block keys, lookup
 * by the deepest matching block, least-recently-used eviction. A server
 * holds tens to hundreds of snapshots, so keys sit in one flat array scanned
 * per block; the tokens are compared on every hit. */
#include "kv/kv_prefix.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct snapshot {
    kvs_kv_cache *kv;     /* NULL: a free slot */
    kvs_token *tokens;    /* (n) */
    uint32_t n;
    uint64_t last_used;
} snapshot;

typedef struct block_key {
    uint64_t key;         /* chain hash of the first `len` tokens */
    uint32_t snap, len;   /* len: a multiple of KVS_PREFIX_BLOCK */
} block_key;

struct kvs_kv_prefix {
    snapshot *snaps;
    uint32_t n_snaps, cap_snaps;
    block_key *keys;
    size_t n_keys, cap_keys;
    uint64_t clock;
    kvs_kv_prefix_stats stats;
};

/* key_j = mix(key_{j-1}, block j's tokens): splitmix64 steps over the tokens */
static uint64_t chain(uint64_t parent, const kvs_token *t) {
    uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < KVS_PREFIX_BLOCK; i++) {
        h ^= (uint64_t)(uint32_t)t[i];
        h += 0x9e3779b97f4a7c15ull;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
        h ^= h >> 31;
    }
    return h;
}

kvs_status kvs_kv_prefix_new(kvs_kv_prefix **out) {
    *out = kvs_calloc(1, sizeof **out);
    return *out ? KVS_OK : kvs_fail(KVS_ERR_NOMEM, "prefix cache: out of memory");
}

static void drop_snapshot(kvs_kv_prefix *p, uint32_t s) {
    snapshot *sn = &p->snaps[s];
    p->stats.snapshots--;
    p->stats.tokens_held -= sn->n;
    kvs_kv_cache_free(sn->kv);
    kvs_free(sn->tokens);
    memset(sn, 0, sizeof *sn);
    size_t w = 0;
    for (size_t i = 0; i < p->n_keys; i++)
        if (p->keys[i].snap != s) p->keys[w++] = p->keys[i];
    p->n_keys = w;
}

void kvs_kv_prefix_free(kvs_kv_prefix *p) {
    if (!p) return;
    for (uint32_t s = 0; s < p->n_snaps; s++) {
        kvs_kv_cache_free(p->snaps[s].kv);
        kvs_free(p->snaps[s].tokens);
    }
    kvs_free(p->snaps);
    kvs_free(p->keys);
    kvs_free(p);
}

static const block_key *find_key(const kvs_kv_prefix *p, uint64_t key, uint32_t len) {
    for (size_t i = 0; i < p->n_keys; i++)
        if (p->keys[i].key == key && p->keys[i].len == len) return &p->keys[i];
    return NULL;
}

kvs_status kvs_kv_prefix_store(kvs_kv_prefix *p, const kvs_kv_cache *c, const kvs_token *tokens, uint32_t n) {
    if (n > c->n_past) return kvs_fail(KVS_ERR_INVALID_ARG, "prefix cache: %u tokens, the sequence holds %llu", n,
                                       (unsigned long long)c->n_past);
    const uint32_t nb = n / KVS_PREFIX_BLOCK;
    if (!nb) return KVS_OK;
    /* already held: the same tokens in a snapshot at least as long */
    uint64_t key = 0;
    for (uint32_t j = 0; j < nb; j++) key = chain(key, tokens + (size_t)j * KVS_PREFIX_BLOCK);
    const block_key *k = find_key(p, key, nb * KVS_PREFIX_BLOCK);
    if (k && p->snaps[k->snap].n >= n && !memcmp(p->snaps[k->snap].tokens, tokens, sizeof *tokens * n)) {
        p->snaps[k->snap].last_used = ++p->clock;
        return KVS_OK;
    }
    uint32_t s = 0;
    while (s < p->n_snaps && p->snaps[s].kv) s++;
    if (s == p->cap_snaps) {
        uint32_t cap = p->cap_snaps ? 2 * p->cap_snaps : 16;
        snapshot *ns = kvs_realloc(p->snaps, sizeof *ns * cap);
        if (!ns) return kvs_fail(KVS_ERR_NOMEM, "prefix cache: out of memory");
        memset(ns + p->cap_snaps, 0, sizeof *ns * (cap - p->cap_snaps));
        p->snaps = ns;
        p->cap_snaps = cap;
    }
    if (p->n_keys + nb > p->cap_keys) {
        size_t cap = p->cap_keys ? 2 * p->cap_keys : 256;
        while (cap < p->n_keys + nb) cap *= 2;
        block_key *nk = kvs_realloc(p->keys, sizeof *nk * cap);
        if (!nk) return kvs_fail(KVS_ERR_NOMEM, "prefix cache: out of memory");
        p->keys = nk;
        p->cap_keys = cap;
    }
    snapshot sn = {.n = n, .last_used = ++p->clock};
    sn.tokens = kvs_malloc(sizeof *tokens * n);
    if (!sn.tokens) return kvs_fail(KVS_ERR_NOMEM, "prefix cache: out of memory");
    memcpy(sn.tokens, tokens, sizeof *tokens * n);
    kvs_status st = kvs_kv_cache_fork(c, &sn.kv);
    if (st == KVS_OK && n < c->n_past) st = kvs_kv_cache_truncate(sn.kv, n);
    if (st != KVS_OK) {
        kvs_kv_cache_free(sn.kv);
        kvs_free(sn.tokens);
        return st;
    }
    p->snaps[s] = sn;
    if (s == p->n_snaps) p->n_snaps++;
    key = 0;
    for (uint32_t j = 0; j < nb; j++) {
        key = chain(key, tokens + (size_t)j * KVS_PREFIX_BLOCK);
        p->keys[p->n_keys++] = (block_key){.key = key, .snap = s, .len = (j + 1) * KVS_PREFIX_BLOCK};
    }
    p->stats.snapshots++;
    p->stats.tokens_held += n;
    return KVS_OK;
}

/* A fork of snapshot s cut to len tokens, or NULL where a layer cannot be cut there. */
static kvs_kv_cache *cut(const snapshot *sn, uint32_t len) {
    kvs_kv_cache *c = NULL;
    if (kvs_kv_cache_fork(sn->kv, &c) != KVS_OK) return NULL;
    if (len < sn->n && kvs_kv_cache_truncate(c, len) != KVS_OK) {
        kvs_kv_cache_free(c);
        return NULL;
    }
    return c;
}

kvs_status kvs_kv_prefix_lookup(kvs_kv_prefix *p, const kvs_token *tokens, uint32_t n, kvs_kv_cache **out,
                                uint32_t *n_hit) {
    *out = NULL;
    *n_hit = 0;
    p->stats.lookups++;
    if (n < 2) return KVS_OK;
    /* candidates, deepest first: a whole snapshot that is a prefix, then block keys */
    const uint32_t max_len = n - 1; /* at least one token left to run */
    uint32_t best_len = 0, best_snap = 0;
    uint64_t key = 0;
    for (uint32_t j = 0; (j + 1) * KVS_PREFIX_BLOCK <= max_len; j++) {
        key = chain(key, tokens + (size_t)j * KVS_PREFIX_BLOCK);
        const block_key *k = find_key(p, key, (j + 1) * KVS_PREFIX_BLOCK);
        if (!k) break;
        best_len = k->len;
        best_snap = k->snap;
    }
    /* a snapshot whose exact tokens are a prefix (its length need not be a block's) */
    for (uint32_t s = 0; s < p->n_snaps; s++) {
        const snapshot *sn = &p->snaps[s];
        if (sn->kv && sn->n > best_len && sn->n <= max_len && !memcmp(sn->tokens, tokens, sizeof *tokens * sn->n)) {
            best_len = sn->n;
            best_snap = s;
        }
    }
    while (best_len) {
        snapshot *sn = &p->snaps[best_snap];
        if (!memcmp(sn->tokens, tokens, sizeof *tokens * best_len)) {
            kvs_kv_cache *c = cut(sn, best_len);
            if (c) {
                sn->last_used = ++p->clock;
                p->stats.hits++;
                p->stats.tokens_hit += best_len;
                *out = c;
                *n_hit = best_len;
                return KVS_OK;
            }
        }
        /* this cut failed: the next shallower block any snapshot holds */
        uint32_t len = best_len - 1 - (best_len - 1) % KVS_PREFIX_BLOCK, found = 0;
        for (; len && !found; len -= KVS_PREFIX_BLOCK) {
            key = 0;
            for (uint32_t j = 0; j < len / KVS_PREFIX_BLOCK; j++) key = chain(key, tokens + (size_t)j * KVS_PREFIX_BLOCK);
            const block_key *k = find_key(p, key, len);
            if (k) { found = len; best_snap = k->snap; }
        }
        best_len = found;
    }
    return KVS_OK;
}

bool kvs_kv_prefix_evict_one(kvs_kv_prefix *p) {
    uint32_t lru = UINT32_MAX;
    for (uint32_t s = 0; s < p->n_snaps; s++)
        if (p->snaps[s].kv && (lru == UINT32_MAX || p->snaps[s].last_used < p->snaps[lru].last_used)) lru = s;
    if (lru == UINT32_MAX) return false;
    drop_snapshot(p, lru);
    return true;
}

kvs_kv_prefix_stats kvs_kv_prefix_get_stats(const kvs_kv_prefix *p) { return p->stats; }
