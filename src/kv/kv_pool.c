/* KV page pool: budget accounting and reference-counted pages (kv_pool.h). */
#include "kv/kv_pool.h"

#include "core/alloc.h"
#include "core/error.h"

#define PAGE_HEADER 64 /* keeps the page's bytes 64-byte aligned */

typedef struct page_header {
    uint32_t refs;
} page_header;

static page_header *header_of(const uint8_t *page) { return (page_header *)(void *)(page - PAGE_HEADER); }

kvs_status kvs_kv_pool_new(uint64_t budget, kvs_kv_pool **out) {
    *out = kvs_calloc(1, sizeof **out);
    if (!*out) return kvs_fail(KVS_ERR_NOMEM, "kv pool: out of memory");
    (*out)->budget = budget;
    return KVS_OK;
}

void kvs_kv_pool_free(kvs_kv_pool *p) { kvs_free(p); }

uint8_t *kvs_kv_page_new(kvs_kv_pool *p, size_t bytes) {
    uint8_t *raw = kvs_aligned_alloc(bytes + PAGE_HEADER);
    if (!raw) return NULL;
    ((page_header *)(void *)raw)->refs = 1;
    p->bytes += bytes;
    p->n_pages++;
    return raw + PAGE_HEADER;
}

void kvs_kv_page_ref(uint8_t *page) { header_of(page)->refs++; }

uint32_t kvs_kv_page_refs(const uint8_t *page) { return header_of(page)->refs; }

void kvs_kv_page_release(kvs_kv_pool *p, uint8_t *page, size_t bytes) {
    if (!page) return;
    page_header *h = header_of(page);
    if (--h->refs) return;
    p->bytes -= bytes;
    p->n_pages--;
    kvs_aligned_free(h);
}
