/* Prefix cache over kvs_seq_fork: a small table of (tokens, sequence)
 * entries with LRU stamps; see prefix.h. Lookups scan the table (it holds
 * tens of entries; the engine's hash-chained page index replaces it). */
#include "server/prefix.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    kvs_token *tokens; /* (n) */
    uint32_t n;
    kvs_seq *seq;      /* n_past == n */
    uint64_t used;     /* LRU stamp */
} entry;

struct srv_prefix {
    kvs_engine *e;
    entry *ents;       /* (max) */
    uint32_t n, max;
    uint64_t clock, hits, misses;
};

srv_prefix *srv_prefix_new(kvs_engine *e, uint32_t max_entries) {
    srv_prefix *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->e = e;
    p->max = max_entries;
    if (max_entries && !(p->ents = calloc(max_entries, sizeof *p->ents))) { free(p); return NULL; }
    return p;
}

static void drop(srv_prefix *p, uint32_t i) {
    kvs_seq_free(p->ents[i].seq);
    free(p->ents[i].tokens);
    p->ents[i] = p->ents[--p->n];
}

void srv_prefix_free(srv_prefix *p) {
    if (!p) return;
    while (p->n) drop(p, p->n - 1);
    free(p->ents);
    free(p);
}

static bool is_prefix(const entry *x, const kvs_token *tokens, uint32_t n) {
    return x->n <= n && !memcmp(x->tokens, tokens, sizeof *tokens * x->n);
}

void srv_prefix_lookup(srv_prefix *p, const kvs_token *tokens, uint32_t n, kvs_seq **out, uint32_t *n_cached) {
    *out = NULL;
    *n_cached = 0;
    int best = -1;
    for (uint32_t i = 0; i < p->n; i++)
        if (p->ents[i].n < n && is_prefix(&p->ents[i], tokens, n) && (best < 0 || p->ents[i].n > p->ents[best].n))
            best = (int)i;
    if (best < 0) { p->misses++; return; }
    if (kvs_seq_fork(p->ents[best].seq, out) != KVS_OK) { *out = NULL; p->misses++; return; }
    p->ents[best].used = ++p->clock;
    *n_cached = p->ents[best].n;
    p->hits++;
}

bool srv_prefix_has(const srv_prefix *p, const kvs_token *tokens, uint32_t n) {
    for (uint32_t i = 0; i < p->n; i++)
        if (p->ents[i].n == n && is_prefix(&p->ents[i], tokens, n)) return true;
    return false;
}

bool srv_prefix_register(srv_prefix *p, const kvs_token *tokens, uint32_t n, const kvs_seq *q) {
    if (!p->max || !n || kvs_seq_n_past(q) != n) return false;
    for (uint32_t i = 0; i < p->n; i++)
        if (p->ents[i].n == n && is_prefix(&p->ents[i], tokens, n)) { p->ents[i].used = ++p->clock; return true; }
    entry x = {.n = n, .used = ++p->clock};
    if (!(x.tokens = malloc(sizeof *tokens * n))) return false;
    memcpy(x.tokens, tokens, sizeof *tokens * n);
    if (kvs_seq_fork(q, &x.seq) != KVS_OK) { free(x.tokens); return false; }
    if (p->n == p->max) srv_prefix_evict_one(p);
    p->ents[p->n++] = x;
    return true;
}

bool srv_prefix_evict_one(srv_prefix *p) {
    if (!p->n) return false;
    uint32_t lru = 0;
    for (uint32_t i = 1; i < p->n; i++)
        if (p->ents[i].used < p->ents[lru].used) lru = i;
    drop(p, lru);
    return true;
}

uint32_t srv_prefix_n_entries(const srv_prefix *p) { return p->n; }
uint64_t srv_prefix_hits(const srv_prefix *p) { return p->hits; }
uint64_t srv_prefix_misses(const srv_prefix *p) { return p->misses; }
