/* The server's prefix cache over the engine's (kv/kv_prefix.c: snapshots
 * keyed by a 16-token block hash chain, pages shared copy-on-write, LRU, the
 * disk tier); see prefix.h. This file only keeps the server's entry cap and
 * its hit and miss counts. */
#include "server/prefix.h"

#include <stdlib.h>

struct srv_prefix {
    kvs_engine *e;
    uint32_t max;
    uint64_t hits, misses;
};

srv_prefix *srv_prefix_new(kvs_engine *e, uint32_t max_entries) {
    srv_prefix *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->e = e;
    p->max = max_entries;
    return p;
}

void srv_prefix_free(srv_prefix *p) { free(p); }

void srv_prefix_lookup(srv_prefix *p, const kvs_token *tokens, uint32_t n, kvs_seq **out, uint32_t *n_cached) {
    *out = NULL;
    *n_cached = 0;
    if (!p->max || kvs_seq_new_cached(p->e, tokens, n, out, n_cached) != KVS_OK || !*n_cached) {
        kvs_seq_free(*out); /* a miss: the request prefills everything in a sequence of its own */
        *out = NULL;
        *n_cached = 0;
        p->misses++;
        return;
    }
    p->hits++;
}

bool srv_prefix_has(const srv_prefix *p, const kvs_token *tokens, uint32_t n) {
    return kvs_engine_prefix_has(p->e, tokens, n);
}

bool srv_prefix_register(srv_prefix *p, const kvs_token *tokens, uint32_t n, const kvs_seq *q) {
    if (!p->max || !n || kvs_seq_n_past(q) != n) return false;
    (void)tokens; /* q holds exactly these: the engine keeps its own copy */
    while (kvs_engine_prefix_stats(p->e).snapshots >= p->max && kvs_engine_prefix_evict_one(p->e)) {}
    return kvs_engine_cache_prefix(p->e, q) == KVS_OK;
}

bool srv_prefix_evict_one(srv_prefix *p) { return kvs_engine_prefix_evict_one(p->e); }

uint32_t srv_prefix_n_entries(const srv_prefix *p) { return kvs_engine_prefix_stats(p->e).snapshots; }
uint64_t srv_prefix_hits(const srv_prefix *p) { return p->hits; }
uint64_t srv_prefix_misses(const srv_prefix *p) { return p->misses; }
