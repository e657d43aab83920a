/* One pool of KV pages for any number of sequences: one byte budget across
 * all of them, and reference-counted pages so sequences can point at the
 * same page (a forked sequence shares all of its parent's; prefix reuse maps
 * cached ones). A sequence's cache (kv_cache.c) copies a shared page before
 * it writes into it, so sharing never changes what another sequence reads.
 *
 * A page is a 64-byte header (its reference count) followed by the page's
 * bytes, 64-byte aligned. The pool and the counts are used by one thread at
 * a time (whoever begins chunks, forks and frees sequences); worker threads
 * only read and write page contents. */
#ifndef KVS_KV_POOL_H
#define KVS_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"

typedef struct kvs_kv_pool {
    uint64_t budget;   /* bytes the pool may hold (0 = no limit) */
    uint64_t bytes;    /* bytes of pages held now, each counted once however shared */
    uint64_t n_pages;  /* pages held now */
    int32_t n_users;   /* caches (sequences) drawing on the pool */
} kvs_kv_pool;

kvs_status kvs_kv_pool_new(uint64_t budget, kvs_kv_pool **out);
/* Frees the pool; callers free every cache that uses it first. */
void kvs_kv_pool_free(kvs_kv_pool *p);
/* Whether `more` bytes still fit the budget. */
static inline int kvs_kv_pool_fits(const kvs_kv_pool *p, uint64_t more) {
    return !p->budget || p->bytes + more <= p->budget;
}

/* A new page of `bytes` (contents undefined) with one reference, charged to
 * the pool; NULL when memory runs out (the budget is the caller's check). */
uint8_t *kvs_kv_page_new(kvs_kv_pool *p, size_t bytes);
void kvs_kv_page_ref(uint8_t *page);
uint32_t kvs_kv_page_refs(const uint8_t *page);
/* Drop one reference; the last one frees the page and uncharges it. NULL is a no-op. */
void kvs_kv_page_release(kvs_kv_pool *p, uint8_t *page, size_t bytes);

#endif
