/* The prefix cache (see kv_prefix.h): snapshots, their block keys, lookup
 * by the deepest matching block, least-recently-used eviction. A server
 * holds tens to hundreds of snapshots, so keys sit in one flat array scanned
 * per block; the tokens are compared on every hit. */
#include "kv/kv_prefix.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "kv/kv_chunk.h"
#include "kv/kv_file.h"

typedef struct snapshot {
    bool used;            /* false: a free slot */
    kvs_kv_cache *kv;     /* the pages (hot), or NULL: only on disk (cold) */
    char *file;           /* its file in the disk tier, or NULL */
    uint64_t file_bytes;
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
    /* the disk tier (kvs_kv_prefix_set_dir), or dir NULL */
    char *dir;
    uint64_t cap_bytes, model_id;
    const kvs_kv_cache *like;  /* the schemes and pool a loaded snapshot gets */
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

/* Delete a snapshot's file (it stays in memory if it is hot). */
static void drop_file(kvs_kv_prefix *p, snapshot *sn) {
    if (!sn->file) return;
    unlink(sn->file);
    p->stats.disk_bytes -= sn->file_bytes;
    p->stats.disk_snapshots--;
    kvs_free(sn->file);
    sn->file = NULL;
    sn->file_bytes = 0;
}

/* Forget a snapshot entirely (its pages, its file, its keys). */
static void drop_snapshot(kvs_kv_prefix *p, uint32_t s) {
    snapshot *sn = &p->snaps[s];
    if (sn->kv) {
        p->stats.snapshots--;
        p->stats.tokens_held -= sn->n;
    }
    drop_file(p, sn);
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
        kvs_free(p->snaps[s].file); /* files stay: the disk tier outlives the process */
    }
    kvs_free(p->snaps);
    kvs_free(p->keys);
    kvs_free(p->dir);
    kvs_free(p);
}

static const block_key *find_key(const kvs_kv_prefix *p, uint64_t key, uint32_t len) {
    for (size_t i = 0; i < p->n_keys; i++)
        if (p->keys[i].key == key && p->keys[i].len == len) return &p->keys[i];
    return NULL;
}

static kvs_status add_snapshot(kvs_kv_prefix *p, kvs_kv_cache *kv, kvs_token *tokens, uint32_t n, uint32_t *slot);
static void persist(kvs_kv_prefix *p, uint32_t s);

kvs_status kvs_kv_prefix_store(kvs_kv_prefix *p, const kvs_kv_cache *c, const kvs_token *tokens, uint32_t n,
                               bool to_disk) {
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
        if (to_disk) persist(p, k->snap);
        return KVS_OK;
    }
    kvs_token *copy = kvs_malloc(sizeof *tokens * n);
    if (!copy) return kvs_fail(KVS_ERR_NOMEM, "prefix cache: out of memory");
    memcpy(copy, tokens, sizeof *tokens * n);
    kvs_kv_cache *kv = NULL;
    kvs_status st = kvs_kv_cache_fork(c, &kv);
    if (st == KVS_OK && n < c->n_past) st = kvs_kv_cache_truncate(kv, n);
    uint32_t s = 0;
    if (st == KVS_OK) st = add_snapshot(p, kv, copy, n, &s);
    if (st != KVS_OK) {
        kvs_kv_cache_free(kv);
        kvs_free(copy);
        return st;
    }
    if (to_disk) persist(p, s);
    return KVS_OK;
}

/* Registers a snapshot (kv NULL: on disk only) and its block keys; takes tokens. */
static kvs_status add_snapshot(kvs_kv_prefix *p, kvs_kv_cache *kv, kvs_token *tokens, uint32_t n, uint32_t *slot) {
    const uint32_t nb = n / KVS_PREFIX_BLOCK;
    uint32_t s = 0;
    while (s < p->n_snaps && p->snaps[s].used) s++;
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
    p->snaps[s] = (snapshot){.used = true, .kv = kv, .tokens = tokens, .n = n, .last_used = ++p->clock};
    if (s == p->n_snaps) p->n_snaps++;
    uint64_t key = 0;
    for (uint32_t j = 0; j < nb; j++) {
        key = chain(key, tokens + (size_t)j * KVS_PREFIX_BLOCK);
        p->keys[p->n_keys++] = (block_key){.key = key, .snap = s, .len = (j + 1) * KVS_PREFIX_BLOCK};
    }
    if (kv) {
        p->stats.snapshots++;
        p->stats.tokens_held += n;
    }
    *slot = s;
    return KVS_OK;
}

/* ---- the disk tier ---------------------------------------------------------- */

/* Writes hot snapshot s to the directory (best effort: a snapshot that
 * cannot be written stays in memory only), then keeps the directory under
 * its cap by deleting the least recently used files. */
static void persist(kvs_kv_prefix *p, uint32_t s) {
    snapshot *sn = &p->snaps[s];
    if (!p->dir || sn->file || !sn->kv) return;
    uint64_t key = 0;
    for (uint32_t j = 0; j < sn->n / KVS_PREFIX_BLOCK; j++) key = chain(key, sn->tokens + (size_t)j * KVS_PREFIX_BLOCK);
    char name[64];
    snprintf(name, sizeof name, "/%016llx-%u.kvs", (unsigned long long)key, sn->n);
    size_t len = strlen(p->dir) + strlen(name) + 1;
    char *path = kvs_malloc(len);
    if (!path) return;
    snprintf(path, len, "%s%s", p->dir, name);
    struct stat sb;
    if (kvs_kv_file_save(sn->kv, p->model_id, sn->tokens, path) != KVS_OK || stat(path, &sb) != 0) {
        kvs_free(path);
        return;
    }
    sn->file = path;
    sn->file_bytes = (uint64_t)sb.st_size;
    p->stats.disk_bytes += sn->file_bytes;
    p->stats.disk_snapshots++;
    while (p->cap_bytes && p->stats.disk_bytes > p->cap_bytes) {
        uint32_t lru = UINT32_MAX;
        for (uint32_t i = 0; i < p->n_snaps; i++)
            if (p->snaps[i].file && i != s && (lru == UINT32_MAX || p->snaps[i].last_used < p->snaps[lru].last_used))
                lru = i;
        if (lru == UINT32_MAX) { drop_file(p, sn); break; } /* alone over the cap */
        if (p->snaps[lru].kv) drop_file(p, &p->snaps[lru]);
        else drop_snapshot(p, lru);
    }
}

kvs_status kvs_kv_prefix_set_dir(kvs_kv_prefix *p, const kvs_kv_cache *like, uint64_t model_id, const char *dir,
                                 uint64_t cap_bytes) {
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return kvs_fail(KVS_ERR_IO, "prefix cache: '%s' is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d) return kvs_fail(KVS_ERR_IO, "prefix cache: cannot read directory '%s'", dir);
    kvs_free(p->dir);
    p->dir = kvs_malloc(strlen(dir) + 1);
    if (!p->dir) { closedir(d); return kvs_fail(KVS_ERR_NOMEM, "prefix cache: out of memory"); }
    strcpy(p->dir, dir);
    p->like = like;
    p->model_id = model_id;
    p->cap_bytes = cap_bytes;
    /* what an earlier run left: cold snapshots (files of other models or schemes are left alone) */
    struct dirent *de;
    kvs_status st = KVS_OK;
    while (st == KVS_OK && (de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".kvs") || strstr(de->d_name, ".tmp.")) continue;
        size_t len = strlen(dir) + nl + 2;
        char *path = kvs_malloc(len);
        if (!path) { st = kvs_fail(KVS_ERR_NOMEM, "prefix cache: out of memory"); break; }
        snprintf(path, len, "%s/%s", dir, de->d_name);
        kvs_token *tokens = NULL;
        uint32_t n = 0, s = 0;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || kvs_kv_file_peek(like, model_id, path, &tokens, &n) != KVS_OK ||
            n < KVS_PREFIX_BLOCK || add_snapshot(p, NULL, tokens, n, &s) != KVS_OK) {
            kvs_free(tokens);
            kvs_free(path);
            continue;
        }
        p->snaps[s].file = path;
        p->snaps[s].file_bytes = (uint64_t)sb.st_size;
        p->snaps[s].last_used = (uint64_t)sb.st_mtime; /* older files go first */
        p->stats.disk_bytes += (uint64_t)sb.st_size;
        p->stats.disk_snapshots++;
    }
    closedir(d);
    if (p->clock < (uint64_t)time(NULL)) p->clock = (uint64_t)time(NULL); /* new uses rank after the files' times */
    return st;
}

/* Makes snapshot s hot (its file loaded into the pool); false if the file
 * is gone or refused, and then the snapshot is forgotten. */
static bool warm(kvs_kv_prefix *p, uint32_t s) {
    snapshot *sn = &p->snaps[s];
    if (sn->kv) return true;
    kvs_kv_cache *c = NULL;
    kvs_token *tokens = NULL;
    kvs_status st = kvs_kv_cache_new_like(p->like, &c);
    if (st == KVS_OK) st = kvs_kv_file_load(c, p->model_id, sn->file, &tokens);
    if (st == KVS_OK && (c->n_past != sn->n || memcmp(tokens, sn->tokens, sizeof *tokens * sn->n)))
        st = KVS_ERR_FORMAT;
    kvs_free(tokens);
    if (st != KVS_OK) {
        kvs_kv_cache_free(c);
        if (st != KVS_ERR_BUDGET) drop_snapshot(p, s); /* a full pool is no reason to forget the file */
        return false;
    }
    sn->kv = c;
    p->stats.snapshots++;
    p->stats.tokens_held += sn->n;
    p->stats.disk_hits++;
    return true;
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
        if (sn->used && sn->n > best_len && sn->n <= max_len && !memcmp(sn->tokens, tokens, sizeof *tokens * sn->n)) {
            best_len = sn->n;
            best_snap = s;
        }
    }
    while (best_len) {
        snapshot *sn = &p->snaps[best_snap];
        if (sn->used && !memcmp(sn->tokens, tokens, sizeof *tokens * best_len) && warm(p, best_snap)) {
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
    snapshot *sn = &p->snaps[lru];
    if (p->dir) persist(p, lru); /* spill: the pages leave memory, the file stays */
    if (!sn->file) { drop_snapshot(p, lru); return true; }
    kvs_kv_cache_free(sn->kv);
    sn->kv = NULL;
    p->stats.snapshots--;
    p->stats.tokens_held -= sn->n;
    return true;
}

bool kvs_kv_prefix_has(const kvs_kv_prefix *p, const kvs_token *tokens, uint32_t n) {
    for (uint32_t s = 0; s < p->n_snaps; s++)
        if (p->snaps[s].used && p->snaps[s].n == n && !memcmp(p->snaps[s].tokens, tokens, sizeof *tokens * n)) return true;
    return false;
}

void kvs_kv_prefix_clear(kvs_kv_prefix *p) {
    for (uint32_t s = 0; s < p->n_snaps; s++)
        if (p->snaps[s].used) drop_snapshot(p, s);
}

kvs_kv_prefix_stats kvs_kv_prefix_get_stats(const kvs_kv_prefix *p) { return p->stats; }
