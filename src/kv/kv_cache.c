/* Paged KV cache: on-demand pages, windows as rings of slots, shared layers,
 * segment views for attention; see kv_cache.h. */
#include "kv/kv_cache.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/f16.h"
#include "kv/kivi.h"
#include "kv/kv_chunk.h"
#include "kv/kv_evict.h"

#define KVS_DEFAULT_PAGE 256

static uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

static bool windowed(const kvs_kv_layer *L) { return L->scheme.window != 0; }
static bool latent(const kvs_kv_layer *L) { return L->scheme.store == KVS_KV_STORE_LATENT; }
static uint32_t n_heads(const kvs_kv_layer *L) { return latent(L) ? 1 : L->scheme.n_kv_heads; }
static bool channel(const kvs_kv_layer *L) { return L->scheme.layout == KVS_KV_LAYOUT_CHANNEL; }
/* Per-channel f16 buffer: the `first` sinks, (H, S, dk) keys then (H, S, dv)
 * values, followed by a ring of R + G slots for the newest unquantized
 * tokens, (H, R + G, dk) keys then (H, R + G, dv) values. Stream index i =
 * position - S lives in ring slot i % (R + G); R is a multiple of G, so a
 * complete group occupies G consecutive slots. */
static size_t resid_bytes(const kvs_kv_layer *L) {
    const kvs_kv_scheme *s = &L->scheme;
    return ((size_t)s->first + s->recent + s->group) * s->n_kv_heads * (s->head_dim_k + s->head_dim_v) *
           sizeof(uint16_t);
}

size_t kvs_kv_layer_resid_bytes(const kvs_kv_layer *L) { return resid_bytes(L); }
static uint64_t ring_slots(const kvs_kv_layer *L) { return (uint64_t)L->scheme.recent + L->scheme.group; }
static uint16_t *sink_k(const kvs_kv_layer *L) { return L->resid; }
static uint16_t *sink_v(const kvs_kv_layer *L) {
    return L->resid + (size_t)L->scheme.n_kv_heads * L->scheme.first * L->scheme.head_dim_k;
}
static uint16_t *ring_k(const kvs_kv_layer *L) {
    const kvs_kv_scheme *s = &L->scheme;
    return L->resid + (size_t)s->n_kv_heads * s->first * (s->head_dim_k + s->head_dim_v);
}
static uint16_t *ring_v(const kvs_kv_layer *L) {
    return ring_k(L) + (size_t)L->scheme.n_kv_heads * ring_slots(L) * L->scheme.head_dim_k;
}

/* Slot of absolute position p (valid once p < number of stored positions). */
static uint64_t slot_of(const kvs_kv_layer *L, uint64_t p) {
    uint64_t S = L->scheme.sinks;
    if (!windowed(L) || p < S) return p;
    return S + (p - S) % (L->slots - S);
}

/* COMPRESSED layer (DeepSeek V4 CSA/HCA, window-only): the raw window is a
 * ring of page_round(window + sinks) one-row slots in `pages` (k_row = one
 * entry row, v_row = 0); compressed entries live in `cpages`, each page
 * (page_tokens entries) laid out as all entry rows, then all indexer keys,
 * so an indexer scan reads one contiguous stream. */
static kvs_status compressed_init(kvs_kv_layer *L, int32_t i, uint32_t capacity) {
    const kvs_kv_scheme *s = &L->scheme;
    if (s->entry_bytes || s->indexer_bytes || s->layout != KVS_KV_LAYOUT_BLOCK)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d: compressed store with packed byte layouts "
                        "(entry_bytes/indexer_bytes) is a planner-only scheme", i);
    const kvs_type_traits *kt = kvs_type_traits_of(s->k_type), *it = kvs_type_traits_of(s->indexer_type);
    size_t E = s->entry_dim ? kvs_row_bytes(s->k_type, s->entry_dim) : 0;
    size_t I = s->indexer_dim ? kvs_row_bytes(s->indexer_type, s->indexer_dim) : 0;
    if (!E || !kt || !kt->from_float || !kt->to_float || (s->indexer_dim && (!I || !it || !it->from_float)))
        return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d: %s cannot hold %u-element compressed entries "
                        "(indexer %s x %u)", i, kvs_dtype_name(s->k_type), s->entry_dim,
                        kvs_dtype_name(s->indexer_type), s->indexer_dim);
    uint32_t P = s->page_tokens ? s->page_tokens : KVS_DEFAULT_PAGE;
    L->scheme.page_tokens = P;
    L->page_tokens = P;
    L->k_row = E;
    L->v_row = 0;
    L->i_row = I;
    L->page_bytes = E * (size_t)P;
    L->cpage_bytes = (E + I) * (size_t)P;
    L->slots = s->window ? div_up((uint64_t)s->window + s->sinks, P) * P : 0;
    if (L->slots > capacity) L->slots = div_up(capacity, P) * P;
    L->cslots = s->compress_ratio ? capacity / s->compress_ratio : 0;
    L->pages = kvs_calloc((size_t)div_up(L->slots, P) + 1, sizeof *L->pages);
    L->cpages = kvs_calloc((size_t)div_up(L->cslots, P) + 1, sizeof *L->cpages);
    if (!L->pages || !L->cpages) return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory");
    return KVS_OK;
}

static bool compressed(const kvs_kv_layer *L) { return L->scheme.store == KVS_KV_STORE_COMPRESSED; }
/* Complete entries of a sequence of n_pos tokens (the incomplete group is in the raw window). */
static uint64_t compressed_entries(const kvs_kv_layer *L, uint64_t n_pos) {
    return L->scheme.compress_ratio ? n_pos / L->scheme.compress_ratio : 0;
}

kvs_status kvs_kv_cache_new(const kvs_kv_scheme *schemes, int32_t n_layers, uint32_t capacity,
                            uint64_t budget_bytes, kvs_kv_cache **out) {
    *out = NULL;
    kvs_kv_pool *pool;
    kvs_status st = kvs_kv_pool_new(budget_bytes, &pool);
    if (st != KVS_OK) return st;
    st = kvs_kv_cache_new_in(pool, schemes, n_layers, capacity, out);
    if (st != KVS_OK) { kvs_kv_pool_free(pool); return st; }
    (*out)->own_pool = true;
    return KVS_OK;
}

kvs_status kvs_kv_cache_new_in(kvs_kv_pool *pool, const kvs_kv_scheme *schemes, int32_t n_layers, uint32_t capacity,
                               kvs_kv_cache **out) {
    *out = NULL;
    if (n_layers <= 0 || capacity == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: need layers and a non-zero context");
    kvs_kv_cache *c = kvs_calloc(1, sizeof *c);
    kvs_kv_layer *L = kvs_calloc((size_t)n_layers, sizeof *L);
    if (!c || !L) { kvs_free(c); kvs_free(L); return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory"); }
    c->n_layers = n_layers;
    c->capacity = capacity;
    c->layers = L;
    c->pool = pool;
    pool->n_users++;
    for (int32_t i = 0; i < n_layers; i++) {
        const kvs_kv_scheme *s = &schemes[i];
        L[i].scheme = *s;
        L[i].source = i;
        if (s->store == KVS_KV_STORE_NONE) continue;
        if (s->store == KVS_KV_STORE_SHARED) {
            int32_t src = s->shared_from;
            if (src < 0 || src >= i ||
                (L[src].scheme.store != KVS_KV_STORE_FULL && L[src].scheme.store != KVS_KV_STORE_LATENT)) {
                kvs_kv_cache_free(c);
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: layer %d shares layer %d, which is not an earlier layer with its own cache", i, src);
            }
            /* A windowed source defers storing each chunk until its last
             * sharer has read the ring (arch/attend.c), with the chunk staged
             * in the session's one staging buffer: no other windowed layer
             * with its own ring may stage in between, and the staged rows
             * must be plain (not latent). */
            if (L[src].scheme.window && L[src].scheme.store == KVS_KV_STORE_LATENT) {
                kvs_kv_cache_free(c);
                return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d shares windowed latent layer %d (not supported)", i, src);
            }
            for (int32_t j = src + 1; L[src].scheme.window && j < i; j++)
                if (schemes[j].window && (schemes[j].store == KVS_KV_STORE_FULL || schemes[j].store == KVS_KV_STORE_LATENT)) {
                    kvs_kv_cache_free(c);
                    return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d shares windowed layer %d across windowed layer %d "
                                    "with its own cache (not supported)", i, src, j);
                }
            L[i].source = src;
            continue;
        }
        if (s->store == KVS_KV_STORE_COMPRESSED) {
            kvs_status st = compressed_init(&L[i], i, capacity);
            if (st != KVS_OK) { kvs_kv_cache_free(c); return st; }
            continue;
        }
        bool is_latent = s->store == KVS_KV_STORE_LATENT;
        if ((s->store != KVS_KV_STORE_FULL && !is_latent) || s->entry_bytes || s->indexer_bytes || s->indexer_dim ||
            (s->layout == KVS_KV_LAYOUT_CHANNEL && (is_latent || s->window))) {
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d: this scheme is not implemented yet "
                            "(implemented: full or latent rows, per-channel keys without a window)", i);
        }
        uint32_t P = s->page_tokens ? s->page_tokens : KVS_DEFAULT_PAGE;
        if (s->layout == KVS_KV_LAYOUT_CHANNEL) {
            L[i].scheme.page_tokens = P;
            if (kvs_kv_scheme_validate(&L[i].scheme) != KVS_OK) {
                kvs_kv_cache_free(c);
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: layer %d: per-channel keys need k/v bits 1-8, a group, and pages of whole groups", i);
            }
            L[i].key_block = kvs_kivi_key_block_bytes((int)s->head_dim_k, (int)s->group, (int)s->k_bits);
            L[i].value_row = kvs_kivi_value_row_bytes((int)s->head_dim_v, (int)s->group, (int)s->v_bits, s->v_sym != 0);
            L[i].page_tokens = P;
            L[i].page_bytes = s->n_kv_heads * ((size_t)(P / s->group) * L[i].key_block + (size_t)P * L[i].value_row);
            L[i].slots = capacity;
            L[i].pages = kvs_calloc((size_t)div_up(capacity, P), sizeof *L[i].pages);
            size_t dmax = s->head_dim_k > s->head_dim_v ? s->head_dim_k : s->head_dim_v;
            L[i].scratch = kvs_malloc(sizeof(float) * s->group * dmax);
            if (!L[i].pages || !L[i].scratch) { kvs_kv_cache_free(c); return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory"); }
            continue;
        }
        if (is_latent) {
            /* one row of rank + rope elements; V is the first `rank` of them */
            L[i].scheme.v_type = s->k_type;
            L[i].k_row = kvs_row_bytes(s->k_type, (int64_t)s->latent_rank + s->rope_dim);
            L[i].v_row = 0;
            if (!s->latent_rank || kvs_row_bytes(s->k_type, s->latent_rank) == 0) L[i].k_row = 0;
        } else {
            L[i].k_row = kvs_row_bytes(s->k_type, s->head_dim_k);
            L[i].v_row = kvs_row_bytes(s->v_type, s->head_dim_v);
        }
        const kvs_type_traits *kt = kvs_type_traits_of(s->k_type), *vt = kvs_type_traits_of(L[i].scheme.v_type);
        if (!L[i].k_row || (!L[i].v_row && !is_latent) || !kt || !vt || !kt->from_float || !vt->from_float ||
            (!is_latent && !s->n_kv_heads)) {
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d: %s/%s cannot hold rows of %u/%u elements", i,
                            kvs_dtype_name(s->k_type), kvs_dtype_name(s->v_type), s->head_dim_k, s->head_dim_v);
        }
        if (kvs_kv_scheme_validate(s) != KVS_OK) { /* e.g. a rotated-codebook format without the rotation */
            char msg[256];
            snprintf(msg, sizeof msg, "%s", kvs_last_error());
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: layer %d: %s", i, msg);
        }
        L[i].scheme.page_tokens = P;
        L[i].page_tokens = P;
        L[i].page_bytes = (L[i].k_row + L[i].v_row) * n_heads(&L[i]) * (size_t)P;
        uint64_t slots = capacity;
        if (s->window) {
            uint64_t ring = div_up((uint64_t)s->window + s->sinks, P) * P;
            if (ring < slots) slots = ring;
        }
        L[i].slots = slots;
        L[i].pages = kvs_calloc((size_t)div_up(slots, P), sizeof *L[i].pages);
        if (!L[i].pages) { kvs_kv_cache_free(c); return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory"); }
    }
    /* shared layers read storage of identical geometry */
    for (int32_t i = 0; i < n_layers; i++) {
        if (L[i].scheme.store != KVS_KV_STORE_SHARED) continue;
        const kvs_kv_scheme *a = &L[i].scheme, *b = &L[L[i].source].scheme;
        if (b->store == KVS_KV_STORE_LATENT) {
            L[i].scheme.latent_rank = b->latent_rank;
            L[i].scheme.rope_dim = b->rope_dim;
        } else if (a->n_kv_heads != b->n_kv_heads || a->head_dim_k != b->head_dim_k || a->head_dim_v != b->head_dim_v) {
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: layer %d cannot share layer %d: different head geometry", i, L[i].source);
        }
        L[i].scheme.k_type = b->k_type;
        L[i].scheme.v_type = b->v_type;
    }
    *out = c;
    return KVS_OK;
}

void kvs_kv_cache_clear(kvs_kv_cache *c) {
    if (!c) return;
    for (int32_t i = 0; i < c->n_layers; i++) {
        kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        for (uint32_t p = 0; p < L->n_pages_alloc; p++) {
            kvs_kv_page_release(c->pool, L->pages[p], L->page_bytes);
            L->pages[p] = NULL;
        }
        L->n_pages_alloc = 0;
        for (uint32_t p = 0; L->cpages && p < L->n_cpages_alloc; p++) {
            kvs_kv_page_release(c->pool, L->cpages[p], L->cpage_bytes);
            L->cpages[p] = NULL;
        }
        L->n_cpages_alloc = 0;
        if (L->resid) kvs_kv_page_release(c->pool, (uint8_t *)L->resid, resid_bytes(L));
        L->resid = NULL;
        L->n_stored = 0;
    }
    c->bytes = 0;
    c->n_past = 0;
    c->chunk_n = 0;
    kvs_kv_evict_clear(c->evict);
}

void kvs_kv_cache_free(kvs_kv_cache *c) {
    if (!c) return;
    kvs_kv_cache_clear(c);
    kvs_kv_evict_free(c->evict);
    for (int32_t i = 0; i < c->n_layers; i++) {
        kvs_free(c->layers[i].pages);
        kvs_free(c->layers[i].cpages);
        kvs_free(c->layers[i].scratch);
    }
    kvs_free(c->layers);
    kvs_free(c->segs);
    kvs_aligned_free(c->staging);
    if (c->pool && --c->pool->n_users == 0 && c->own_pool) kvs_kv_pool_free(c->pool); /* the last user of its pool */
    kvs_free(c);
}

/* Pages [*p0, *p1) of `pages` and [*c0, *c1) of `cpages` that storing
 * positions [from, to) may write: the slots those positions map to, the
 * quantized groups they complete, the compressed entries they complete; a
 * ring (windowed layer, compressed raw window) or an evicting layer's
 * compaction may write any of its pages. */
static void written_pages(const kvs_kv_cache *c, int32_t i, uint64_t from, uint64_t to, uint64_t *p0, uint64_t *p1,
                          uint64_t *c0, uint64_t *c1) {
    const kvs_kv_layer *L = &c->layers[i];
    const uint64_t P = L->page_tokens, all = div_up(L->slots, P);
    *c0 = *c1 = 0;
    if (kvs_kv_evict_on(c->evict, i) || windowed(L) || (compressed(L) && L->slots)) {
        *p0 = 0;
        *p1 = all;
    } else if (channel(L)) {
        *p0 = kvs_kv_scheme_channel_quantized(&L->scheme, from) / P;
        *p1 = div_up(kvs_kv_scheme_channel_quantized(&L->scheme, to), P);
    } else {
        *p0 = from / P;
        *p1 = div_up(to, P);
    }
    if (*p1 > all) *p1 = all;
    if (compressed(L)) {
        *c0 = compressed_entries(L, from) / P;
        *c1 = div_up(compressed_entries(L, to), P);
    }
}

/* A private copy of *page when another sequence shares it (copy on write). */
static kvs_status unshare(kvs_kv_pool *pool, uint8_t **page, size_t bytes) {
    if (!*page || kvs_kv_page_refs(*page) == 1) return KVS_OK;
    uint8_t *copy = kvs_kv_page_new(pool, bytes);
    if (!copy) return kvs_fail(KVS_ERR_NOMEM, "kv cache: cannot copy a shared %.1f KiB page", (double)bytes / 1024.0);
    memcpy(copy, *page, bytes);
    kvs_kv_page_release(pool, *page, bytes);
    *page = copy;
    return KVS_OK;
}

static uint64_t shared_in(uint8_t *const *pages, uint64_t lo, uint64_t hi, uint64_t n_alloc, size_t bytes) {
    uint64_t b = 0;
    for (uint64_t p = lo; p < hi && p < n_alloc; p++)
        if (pages[p] && kvs_kv_page_refs(pages[p]) > 1) b += bytes;
    return b;
}

kvs_status kvs_kv_cache_reserve(kvs_kv_cache *c, uint64_t n_pos) {
    if (n_pos > c->capacity)
        return kvs_fail(KVS_ERR_CONTEXT, "kv cache: %llu positions exceed the context of %u",
                        (unsigned long long)n_pos, c->capacity);
    const uint64_t from = c->n_past < n_pos ? c->n_past : n_pos;
    uint64_t need = 0;
    for (int32_t i = 0; i < c->n_layers; i++) {
        const kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        uint64_t used = n_pos < L->slots ? n_pos : L->slots;
        if (kvs_kv_evict_on(c->evict, i)) used = kvs_kv_evict_slots(c->evict, i, n_pos); /* kept + this chunk */
        if (channel(L)) {
            used = kvs_kv_scheme_channel_quantized(&L->scheme, n_pos); /* quantized groups only */
            if (n_pos && !L->resid) need += resid_bytes(L);
            else if (L->resid && kvs_kv_page_refs((const uint8_t *)L->resid) > 1) need += resid_bytes(L);
        }
        uint64_t pages = div_up(used, L->page_tokens);
        if (pages > L->n_pages_alloc) need += (pages - L->n_pages_alloc) * L->page_bytes;
        uint64_t p0, p1, c0, c1;
        written_pages(c, i, from, n_pos, &p0, &p1, &c0, &c1);
        need += shared_in(L->pages, p0, p1, L->n_pages_alloc, L->page_bytes);
        if (compressed(L)) {
            uint64_t cp = div_up(compressed_entries(L, n_pos), L->page_tokens);
            if (cp > L->n_cpages_alloc) need += (cp - L->n_cpages_alloc) * L->cpage_bytes;
            need += shared_in(L->cpages, c0, c1, L->n_cpages_alloc, L->cpage_bytes);
        }
    }
    if (!need) return KVS_OK;
    if (!kvs_kv_pool_fits(c->pool, need))
        return kvs_fail(KVS_ERR_BUDGET, "KV budget of %.1f MiB exhausted: %llu positions need %.1f MiB more, %.1f MiB "
                        "in use", (double)c->pool->budget / 1048576.0, (unsigned long long)n_pos,
                        (double)need / 1048576.0, (double)c->pool->bytes / 1048576.0);
    for (int32_t i = 0; i < c->n_layers; i++) {
        kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        uint64_t used = n_pos < L->slots ? n_pos : L->slots;
        if (kvs_kv_evict_on(c->evict, i)) used = kvs_kv_evict_slots(c->evict, i, n_pos);
        if (channel(L)) {
            used = kvs_kv_scheme_channel_quantized(&L->scheme, n_pos);
            if (n_pos && !L->resid) {
                L->resid = (uint16_t *)(void *)kvs_kv_page_new(c->pool, resid_bytes(L));
                if (!L->resid) return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory");
                c->bytes += resid_bytes(L);
            } else if (L->resid) {
                uint8_t *r = (uint8_t *)L->resid;
                KVS_TRY(unshare(c->pool, &r, resid_bytes(L)));
                L->resid = (uint16_t *)(void *)r;
            }
        }
        uint64_t p0, p1, c0, c1;
        written_pages(c, i, from, n_pos, &p0, &p1, &c0, &c1);
        for (uint64_t p = p0; p < p1 && p < L->n_pages_alloc; p++) KVS_TRY(unshare(c->pool, &L->pages[p], L->page_bytes));
        uint64_t pages = div_up(used, L->page_tokens);
        for (uint64_t p = L->n_pages_alloc; p < pages; p++) {
            L->pages[p] = kvs_kv_page_new(c->pool, L->page_bytes);
            if (!L->pages[p])
                return kvs_fail(KVS_ERR_NOMEM, "kv cache: cannot allocate a %.1f KiB page", (double)L->page_bytes / 1024.0);
            L->n_pages_alloc = (uint32_t)p + 1;
            c->bytes += L->page_bytes;
        }
        if (!compressed(L)) continue;
        for (uint64_t p = c0; p < c1 && p < L->n_cpages_alloc; p++) KVS_TRY(unshare(c->pool, &L->cpages[p], L->cpage_bytes));
        uint64_t cp = div_up(compressed_entries(L, n_pos), L->page_tokens);
        for (uint64_t p = L->n_cpages_alloc; p < cp; p++) {
            L->cpages[p] = kvs_kv_page_new(c->pool, L->cpage_bytes);
            if (!L->cpages[p])
                return kvs_fail(KVS_ERR_NOMEM, "kv cache: cannot allocate a %.1f KiB page", (double)L->cpage_bytes / 1024.0);
            L->n_cpages_alloc = (uint32_t)p + 1;
            c->bytes += L->cpage_bytes;
        }
    }
    return KVS_OK;
}

/* ---- sequence operations --------------------------------------------------- */

kvs_status kvs_kv_cache_fork(const kvs_kv_cache *src, kvs_kv_cache **out) {
    *out = NULL;
    if (src->evict)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: a sequence with token eviction cannot be forked (its kept "
                        "set is scored per sequence)");
    if (src->chunk_n) return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: cannot fork inside a chunk");
    kvs_kv_cache *c;
    KVS_TRY(kvs_kv_cache_new_like(src, &c)); /* same schemes, pool and chunk buffers; no eviction (refused above) */
    for (int32_t i = 0; i < c->n_layers; i++) {
        kvs_kv_layer *L = &c->layers[i];
        const kvs_kv_layer *S = &src->layers[i];
        if (S->resid) { /* small and written every step: a private copy */
            const bool fits = kvs_kv_pool_fits(c->pool, resid_bytes(S));
            if (!fits || !(L->resid = (uint16_t *)(void *)kvs_kv_page_new(c->pool, resid_bytes(S)))) {
                kvs_kv_cache_free(c);
                return kvs_fail(fits ? KVS_ERR_NOMEM : KVS_ERR_BUDGET, "kv cache: no room to fork layer %d's f16 residual", i);
            }
            memcpy(L->resid, S->resid, resid_bytes(S));
            c->bytes += resid_bytes(S);
        }
        for (uint32_t p = 0; p < S->n_pages_alloc; p++) {
            L->pages[p] = S->pages[p];
            kvs_kv_page_ref(L->pages[p]);
            L->n_pages_alloc = p + 1;
            c->bytes += L->page_bytes;
        }
        for (uint32_t p = 0; p < S->n_cpages_alloc; p++) {
            L->cpages[p] = S->cpages[p];
            kvs_kv_page_ref(L->cpages[p]);
            L->n_cpages_alloc = p + 1;
            c->bytes += L->cpage_bytes;
        }
        L->n_stored = S->n_stored;
    }
    c->n_past = src->n_past;
    c->own_pool = src->own_pool;
    *out = c;
    return KVS_OK;
}

kvs_status kvs_kv_cache_truncate(kvs_kv_cache *c, uint64_t n) {
    if (n > c->n_past)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: cannot truncate %llu tokens to %llu",
                        (unsigned long long)c->n_past, (unsigned long long)n);
    if (c->chunk_n) return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: cannot truncate inside a chunk");
    if (n == c->n_past) return KVS_OK;
    if (n == 0) { kvs_kv_cache_clear(c); return KVS_OK; }
    for (int32_t i = 0; i < c->n_layers; i++) { /* every layer must still hold what positions < n left */
        const kvs_kv_layer *L = &c->layers[i];
        const char *why = NULL;
        if (!L->pages) continue;
        if (kvs_kv_evict_on(c->evict, i)) why = "evicts tokens";
        else if (compressed(L)) why = "holds compressed entries";
        else if (windowed(L) && c->n_past > L->slots) why = "is a sliding window whose ring has wrapped";
        else if (channel(L) && kvs_kv_scheme_channel_quantized(&L->scheme, n) !=
                                   kvs_kv_scheme_channel_quantized(&L->scheme, c->n_past))
            why = "has quantized those positions in groups"; /* the f16 residual holds only the newest */
        if (why)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: cannot truncate to %llu tokens: layer %d %s",
                            (unsigned long long)n, i, why);
    }
    for (int32_t i = 0; i < c->n_layers; i++) {
        kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        if (channel(L)) { L->n_stored = n; continue; }
        uint64_t keep = div_up(n < L->slots ? n : L->slots, L->page_tokens); /* pages beyond n go back */
        for (uint64_t p = keep; p < L->n_pages_alloc; p++) {
            kvs_kv_page_release(c->pool, L->pages[p], L->page_bytes);
            L->pages[p] = NULL;
            c->bytes -= L->page_bytes;
        }
        if (keep < L->n_pages_alloc) L->n_pages_alloc = (uint32_t)keep;
    }
    c->n_past = n;
    return KVS_OK;
}

/* ---- COMPRESSED layers ---------------------------------------------------- */

uint8_t *kvs_kv_cache_raw_row(kvs_kv_cache *c, int32_t layer, uint64_t pos) {
    if (layer < 0 || layer >= c->n_layers) return NULL;
    kvs_kv_layer *L = &c->layers[layer];
    if (!compressed(L) || !L->slots) return NULL;
    uint64_t slot = slot_of(L, pos);
    if (slot / L->page_tokens >= L->n_pages_alloc) return NULL;
    return L->pages[slot / L->page_tokens] + (slot % L->page_tokens) * L->k_row;
}

uint8_t *kvs_kv_cache_entry_row(kvs_kv_cache *c, int32_t layer, uint64_t j, uint8_t **index_key) {
    if (index_key) *index_key = NULL;
    if (layer < 0 || layer >= c->n_layers) return NULL;
    kvs_kv_layer *L = &c->layers[layer];
    if (!compressed(L) || j >= L->cslots || j / L->page_tokens >= L->n_cpages_alloc) return NULL;
    uint8_t *page = L->cpages[j / L->page_tokens];
    uint64_t o = j % L->page_tokens;
    if (index_key && L->i_row) *index_key = page + (size_t)L->page_tokens * L->k_row + o * L->i_row;
    return page + o * L->k_row;
}

/* Pointers to head 0 of slot `slot` in a layer's pages. */
static void slot_ptrs(const kvs_kv_layer *L, uint64_t slot, uint8_t **k, uint8_t **v) {
    uint8_t *page = L->pages[slot / L->page_tokens];
    uint64_t o = slot % L->page_tokens;
    *k = page + o * L->k_row;
    *v = latent(L) ? *k : page + (size_t)L->scheme.n_kv_heads * L->page_tokens * L->k_row + o * L->v_row;
}

void kvs_kv_cache_row(const kvs_kv_cache *c, int32_t layer, uint64_t slot, int32_t head, uint8_t **k, uint8_t **v) {
    const kvs_kv_layer *L = &c->layers[layer];
    slot_ptrs(L, slot, k, v);
    *k += (size_t)head * L->page_tokens * L->k_row;
    *v += (size_t)head * L->page_tokens * L->v_row;
}

/* Quantize the group of stream tokens [first, first + G) (first a multiple
 * of G) from the f16 ring into its page. */
static void flush_group(kvs_kv_layer *L, uint64_t first) {
    const kvs_kv_scheme *s = &L->scheme;
    const int H = (int)s->n_kv_heads, dk = (int)s->head_dim_k, dv = (int)s->head_dim_v, G = (int)s->group;
    const uint64_t RG = ring_slots(L), slot = first % RG;
    uint8_t *page = L->pages[first / L->page_tokens];
    uint64_t gi = (first % L->page_tokens) / (uint64_t)G, ti = first % L->page_tokens;
    size_t kblocks = (size_t)(L->page_tokens / s->group) * L->key_block;
    float *f = L->scratch; /* (G, max(dk, dv)) */
    for (int h = 0; h < H; h++) {
        const uint16_t *rk = ring_k(L) + ((size_t)h * RG + slot) * dk;
        const uint16_t *rv = ring_v(L) + ((size_t)h * RG + slot) * dv;
        for (int i = 0; i < G * dk; i++) f[i] = kvs_f16_to_f32(rk[i]);
        uint8_t *kblk = page + (size_t)h * kblocks + gi * L->key_block;
        if (s->clip) kvs_kivi_quantize_keys_clip(f, dk, G, (int)s->k_bits, kblk);
        else kvs_kivi_quantize_keys(f, dk, G, (int)s->k_bits, kblk);
        uint8_t *vrows = page + (size_t)H * kblocks + ((size_t)h * L->page_tokens + ti) * L->value_row;
        for (int i = 0; i < G * dv; i++) f[i] = kvs_f16_to_f32(rv[i]);
        for (int t = 0; t < G; t++) {
            uint8_t *row = vrows + (size_t)t * L->value_row;
            if (s->clip) kvs_kivi_quantize_value_clip(f + (size_t)t * dv, dv, G, (int)s->v_bits, s->v_sym != 0, row);
            else kvs_kivi_quantize_value(f + (size_t)t * dv, dv, G, (int)s->v_bits, s->v_sym != 0, row);
        }
    }
}

static kvs_status store_channel(kvs_kv_layer *L, int32_t layer, uint64_t pos0, int64_t n, const float *k,
                                const float *v) {
    const kvs_kv_scheme *s = &L->scheme;
    const int H = (int)s->n_kv_heads, dk = (int)s->head_dim_k, dv = (int)s->head_dim_v, G = (int)s->group;
    const uint64_t S = s->first, RG = ring_slots(L);
    if (pos0 != L->n_stored)
        return kvs_fail(KVS_ERR_INTERNAL, "kv store: layer %d appends at %llu but holds %llu positions", layer,
                        (unsigned long long)pos0, (unsigned long long)L->n_stored);
    if (!L->resid) return kvs_fail(KVS_ERR_INTERNAL, "kv store: layer %d is not reserved", layer);
    for (int64_t t = 0; t < n; t++) {
        uint64_t p = pos0 + (uint64_t)t;
        for (int h = 0; h < H; h++) {
            uint16_t *rk, *rv;
            if (p < S) {
                rk = sink_k(L) + ((size_t)h * S + p) * dk;
                rv = sink_v(L) + ((size_t)h * S + p) * dv;
            } else {
                rk = ring_k(L) + ((size_t)h * RG + (p - S) % RG) * dk;
                rv = ring_v(L) + ((size_t)h * RG + (p - S) % RG) * dv;
            }
            const float *ks = k + (t * H + h) * dk, *vs = v + (t * H + h) * dv;
            for (int e = 0; e < dk; e++) rk[e] = kvs_f32_to_f16(ks[e]);
            for (int e = 0; e < dv; e++) rv[e] = kvs_f32_to_f16(vs[e]);
        }
        /* the ring had room for p: its slot's previous token was quantized */
        uint64_t q0 = kvs_kv_scheme_channel_quantized(s, p), q1 = kvs_kv_scheme_channel_quantized(s, p + 1);
        if (q1 > q0) {
            uint64_t first = q1 - (uint64_t)G;
            if (first / L->page_tokens >= L->n_pages_alloc)
                return kvs_fail(KVS_ERR_INTERNAL, "kv store: layer %d position %llu has no page", layer, (unsigned long long)p);
            flush_group(L, first);
        }
    }
    L->n_stored = pos0 + (uint64_t)n;
    return KVS_OK;
}

kvs_status kvs_kv_cache_store(kvs_kv_cache *c, int32_t layer, uint64_t pos0, int64_t n,
                              const float *k, const float *v) {
    if (layer < 0 || layer >= c->n_layers) return kvs_fail(KVS_ERR_INTERNAL, "kv store: bad layer");
    kvs_kv_layer *L = &c->layers[layer];
    if (!L->pages) return KVS_OK; /* shared or no attention */
    if (compressed(L))
        return kvs_fail(KVS_ERR_INTERNAL, "kv store: layer %d is compressed (use kvs_kv_cache_raw_row/entry_row)", layer);
    if (channel(L)) return store_channel(L, layer, pos0, n, k, v);
    const kvs_kv_scheme *s = &L->scheme;
    const kvs_type_traits *kt = kvs_type_traits_of(s->k_type), *vt = kvs_type_traits_of(s->v_type);
    if (latent(L)) { /* k: (n, rank + rope) */
        const int32_t d = (int32_t)(s->latent_rank + s->rope_dim);
        for (int64_t t = 0; t < n; t++) {
            uint64_t slot = slot_of(L, pos0 + (uint64_t)t);
            if (slot / L->page_tokens >= L->n_pages_alloc)
                return kvs_fail(KVS_ERR_INTERNAL, "kv store: layer %d has no page", layer);
            uint8_t *kd, *vd;
            slot_ptrs(L, slot, &kd, &vd);
            kt->from_float(k + t * d, kd, d);
        }
        return KVS_OK;
    }
    const int32_t H = (int32_t)s->n_kv_heads, dk = (int32_t)s->head_dim_k, dv = (int32_t)s->head_dim_v;
    const size_t ks = (size_t)L->page_tokens * L->k_row, vs = (size_t)L->page_tokens * L->v_row;
    for (int64_t t = 0; t < n; t++) {
        uint64_t slot = slot_of(L, pos0 + (uint64_t)t);
        if (slot / L->page_tokens >= L->n_pages_alloc)
            return kvs_fail(KVS_ERR_INTERNAL, "kv store: layer %d position %llu has no page", layer,
                            (unsigned long long)(pos0 + (uint64_t)t));
        uint8_t *kd, *vd;
        slot_ptrs(L, slot, &kd, &vd);
        for (int32_t h = 0; h < H; h++) {
            kt->from_float(k + (t * H + h) * dk, kd + h * ks, dk);
            vt->from_float(v + (t * H + h) * dv, vd + h * vs, dv);
        }
    }
    return KVS_OK;
}

static void segment_at(const kvs_kv_layer *L, uint64_t slot, int64_t pos0, int64_t n, kvs_kv_segment *sg) {
    uint8_t *k, *v;
    slot_ptrs(L, slot, &k, &v);
    memset(sg, 0, sizeof *sg);
    sg->k = k;
    sg->v = v;
    sg->k_head_stride = (size_t)L->page_tokens * L->k_row;
    sg->v_head_stride = (size_t)L->page_tokens * L->v_row;
    sg->k_row = L->k_row;
    sg->v_row = latent(L) ? L->k_row : L->v_row;
    if (latent(L)) sg->v_head_stride = sg->k_head_stride;
    sg->k_type = L->scheme.k_type;
    sg->v_type = L->scheme.v_type;
    sg->pos0 = pos0;
    sg->n = n;
}

/* Append segments for positions [a, b) (all stored), split where slots
 * wrap or cross a page. */
static int emit_range(const kvs_kv_layer *L, uint64_t a, uint64_t b, kvs_kv_segment *out, int n, int cap) {
    while (a < b && n < cap) {
        uint64_t slot = slot_of(L, a);
        uint64_t run = L->page_tokens - slot % L->page_tokens;        /* to the page end */
        if (windowed(L) && a >= L->scheme.sinks && L->slots - slot < run) run = L->slots - slot; /* ring wrap */
        if (b - a < run) run = b - a;
        segment_at(L, slot, (int64_t)a, (int64_t)run, &out[n++]);
        a += run;
    }
    return n;
}

/* Per-channel pages: keys in group blocks (k_row = bytes of one block),
 * values in per-token rows. */
static void channel_decode(const kvs_kv_segment *sg, bool key, bool ref, int64_t head, int64_t t0, int64_t nt,
                           float *out) {
    const int G = (int)sg->group;
    if (key) {
        const uint8_t *base = sg->k + head * sg->k_head_stride;
        while (nt > 0) {
            int64_t g = t0 / G, off = t0 % G, cnt = G - off < nt ? G - off : nt;
            if (ref) kvs_kivi_dequantize_keys_ref(base + g * sg->k_row, (int)sg->dk, G, (int)sg->k_bits, (int)off, (int)cnt, out);
            else kvs_kivi_dequantize_keys(base + g * sg->k_row, (int)sg->dk, G, (int)sg->k_bits, (int)off, (int)cnt, out);
            out += cnt * sg->dk;
            t0 += cnt;
            nt -= cnt;
        }
    } else {
        const uint8_t *rows = sg->v + head * sg->v_head_stride + (size_t)t0 * sg->v_row;
        if (ref) kvs_kivi_dequantize_values_ref(rows, sg->v_row, (int)nt, (int)sg->dv, G, (int)sg->v_bits, sg->v_sym != 0, out);
        else kvs_kivi_dequantize_values(rows, sg->v_row, (int)nt, (int)sg->dv, G, (int)sg->v_bits, sg->v_sym != 0, out);
    }
}

/* f16 rows of the sink buffer or the ring: `rows` keys per head from k, values from v. */
static kvs_kv_segment f16_segment(const kvs_kv_layer *L, const uint16_t *k, const uint16_t *v, uint64_t rows,
                                  uint64_t pos0, uint64_t n) {
    const kvs_kv_scheme *s = &L->scheme;
    return (kvs_kv_segment){
        .k = (const uint8_t *)k, .v = (const uint8_t *)v, .k_head_stride = rows * s->head_dim_k * 2,
        .v_head_stride = rows * s->head_dim_v * 2, .k_row = (size_t)s->head_dim_k * 2,
        .v_row = (size_t)s->head_dim_v * 2, .k_type = KVS_TYPE_F16, .v_type = KVS_TYPE_F16,
        .pos0 = (int64_t)pos0, .n = (int64_t)n,
    };
}

/* Sinks (f16), quantized pages, then the f16 ring (split where it wraps). */
static int channel_segments(const kvs_kv_layer *L, uint64_t n_pos, kvs_kv_segment *out, int cap) {
    const kvs_kv_scheme *s = &L->scheme;
    const uint64_t G = s->group, P = L->page_tokens, H = s->n_kv_heads, S = s->first, RG = ring_slots(L);
    int n = 0;
    if (!L->resid || n_pos == 0) return 0;
    if (S && n < cap) out[n++] = f16_segment(L, sink_k(L), sink_v(L), S, 0, n_pos < S ? n_pos : S);
    if (n_pos <= S) return n;
    /* groups are quantized as the stream grows: what is quantized depends on
     * the positions stored, not on the positions asked for */
    uint64_t m = n_pos - S, q = kvs_kv_scheme_channel_quantized(s, L->n_stored);
    if (q > m) q = m;
    size_t kblocks = (size_t)(P / G) * L->key_block;
    for (uint64_t a = 0; a < q && n < cap; a += P) {
        const uint8_t *page = L->pages[a / P];
        out[n++] = (kvs_kv_segment){
            .k = page, .v = page + H * kblocks, .k_head_stride = kblocks, .v_head_stride = (size_t)P * L->value_row,
            .k_row = L->key_block, .v_row = L->value_row, .k_type = KVS_TYPE_COUNT, .v_type = KVS_TYPE_COUNT,
            .pos0 = (int64_t)(S + a), .n = (int64_t)(q - a < P ? q - a : P), .decode = channel_decode,
            .dk = s->head_dim_k, .dv = s->head_dim_v, .group = s->group, .k_bits = s->k_bits, .v_bits = s->v_bits,
            .v_sym = s->v_sym,
        };
    }
    for (uint64_t i = q; i < m && n < cap;) {
        uint64_t slot = i % RG, run = RG - slot < m - i ? RG - slot : m - i;
        out[n++] = f16_segment(L, ring_k(L) + slot * s->head_dim_k, ring_v(L) + slot * s->head_dim_v, RG, S + i, run);
        i += run;
    }
    return n;
}

int kvs_kv_cache_segments(const kvs_kv_cache *c, int32_t layer, uint64_t n_pos, kvs_kv_segment *out, int cap) {
    if (layer < 0 || layer >= c->n_layers) return 0;
    const kvs_kv_layer *L = &c->layers[c->layers[layer].source];
    if (!L->pages || n_pos == 0 || compressed(L)) return 0;
    if (channel(L)) return channel_segments(L, n_pos < L->n_stored ? n_pos : L->n_stored, out, cap);
    if (!windowed(L)) return emit_range(L, 0, n_pos, out, 0, cap);
    uint64_t S = L->scheme.sinks, W = L->scheme.window;
    uint64_t sink_end = n_pos < S ? n_pos : S;
    int n = emit_range(L, 0, sink_end, out, 0, cap);
    uint64_t lo = n_pos > W ? n_pos - W : 0;
    if (lo < S) lo = S;
    if (lo < n_pos) n = emit_range(L, lo, n_pos, out, n, cap);
    return n;
}

int kvs_kv_cache_max_segments(const kvs_kv_cache *c, int32_t layer) {
    const kvs_kv_layer *L = &c->layers[c->layers[layer].source];
    if (!L->pages) return 1;
    if (channel(L)) return (int)div_up(L->slots, L->page_tokens) + 4; /* sinks, pages, ring in two */
    if (!windowed(L)) return (int)div_up(L->slots, L->page_tokens) + 2;
    return (int)(div_up(L->scheme.sinks, L->page_tokens) + div_up(L->scheme.window, L->page_tokens) + 3);
}

size_t kvs_kv_cache_staging_bytes(const kvs_kv_cache *c, int32_t layer, int64_t n) {
    const kvs_kv_layer *L = &c->layers[c->layers[layer].source];
    return (L->k_row + L->v_row) * n_heads(L) * (size_t)n;
}

kvs_kv_segment kvs_kv_cache_stage(const kvs_kv_cache *c, int32_t layer, uint8_t *buf, uint64_t pos0,
                                  int64_t n, const float *k, const float *v) {
    const kvs_kv_layer *L = &c->layers[c->layers[layer].source];
    const kvs_kv_scheme *s = &L->scheme;
    const kvs_type_traits *kt = kvs_type_traits_of(s->k_type), *vt = kvs_type_traits_of(s->v_type);
    if (latent(L)) {
        const int32_t d = (int32_t)(s->latent_rank + s->rope_dim);
        kvs_kv_segment sg = {.k = buf, .v = buf, .k_head_stride = (size_t)n * L->k_row,
                             .v_head_stride = (size_t)n * L->k_row, .k_row = L->k_row, .v_row = L->k_row,
                             .k_type = s->k_type, .v_type = s->k_type, .pos0 = (int64_t)pos0, .n = n};
        for (int64_t t = 0; t < n; t++) kt->from_float(k + t * d, buf + (size_t)t * L->k_row, d);
        return sg;
    }
    const int32_t H = (int32_t)s->n_kv_heads, dk = (int32_t)s->head_dim_k, dv = (int32_t)s->head_dim_v;
    kvs_kv_segment sg = {
        .k = buf, .v = buf + (size_t)H * n * L->k_row,
        .k_head_stride = (size_t)n * L->k_row, .v_head_stride = (size_t)n * L->v_row,
        .k_row = L->k_row, .v_row = L->v_row, .k_type = s->k_type, .v_type = s->v_type,
        .pos0 = (int64_t)pos0, .n = n,
    };
    for (int64_t t = 0; t < n; t++)
        for (int32_t h = 0; h < H; h++) {
            kt->from_float(k + (t * H + h) * dk, (uint8_t *)sg.k + h * sg.k_head_stride + (size_t)t * L->k_row, dk);
            vt->from_float(v + (t * H + h) * dv, (uint8_t *)sg.v + h * sg.v_head_stride + (size_t)t * L->v_row, dv);
        }
    return sg;
}
