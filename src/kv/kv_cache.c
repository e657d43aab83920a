/* Paged KV cache: on-demand pages, windows as rings of slots, shared layers,
 * segment views for attention; see kv_cache.h. */
#include "kv/kv_cache.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

#define KVS_DEFAULT_PAGE 256

static uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

static bool windowed(const kvs_kv_layer *L) { return L->scheme.window != 0; }
static bool latent(const kvs_kv_layer *L) { return L->scheme.store == KVS_KV_STORE_LATENT; }
static uint32_t n_heads(const kvs_kv_layer *L) { return latent(L) ? 1 : L->scheme.n_kv_heads; }

/* Slot of absolute position p (valid once p < number of stored positions). */
static uint64_t slot_of(const kvs_kv_layer *L, uint64_t p) {
    uint64_t S = L->scheme.sinks;
    if (!windowed(L) || p < S) return p;
    return S + (p - S) % (L->slots - S);
}

kvs_status kvs_kv_cache_new(const kvs_kv_scheme *schemes, int32_t n_layers, uint32_t capacity,
                            uint64_t budget_bytes, kvs_kv_cache **out) {
    *out = NULL;
    if (n_layers <= 0 || capacity == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: need layers and a non-zero context");
    kvs_kv_cache *c = kvs_calloc(1, sizeof *c);
    kvs_kv_layer *L = kvs_calloc((size_t)n_layers, sizeof *L);
    if (!c || !L) { kvs_free(c); kvs_free(L); return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory"); }
    c->n_layers = n_layers;
    c->capacity = capacity;
    c->layers = L;
    c->budget = budget_bytes;
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
            if (L[src].scheme.window) {
                kvs_kv_cache_free(c);
                return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d shares windowed layer %d (not supported yet)", i, src);
            }
            L[i].source = src;
            continue;
        }
        bool is_latent = s->store == KVS_KV_STORE_LATENT;
        if ((s->store != KVS_KV_STORE_FULL && !is_latent) || s->layout != KVS_KV_LAYOUT_BLOCK ||
            s->entry_bytes || s->indexer_bytes || s->indexer_dim) {
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d: only full and latent per-token layouts are implemented so far", i);
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
        uint32_t P = s->page_tokens ? s->page_tokens : KVS_DEFAULT_PAGE;
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
        for (uint64_t p = 0; p < div_up(L->slots, L->page_tokens); p++) {
            kvs_aligned_free(L->pages[p]);
            L->pages[p] = NULL;
        }
        L->n_pages_alloc = 0;
    }
    c->bytes = 0;
}

void kvs_kv_cache_free(kvs_kv_cache *c) {
    if (!c) return;
    kvs_kv_cache_clear(c);
    for (int32_t i = 0; i < c->n_layers; i++) kvs_free(c->layers[i].pages);
    kvs_free(c->layers);
    kvs_free(c);
}

kvs_status kvs_kv_cache_reserve(kvs_kv_cache *c, uint64_t n_pos) {
    if (n_pos > c->capacity)
        return kvs_fail(KVS_ERR_CONTEXT, "kv cache: %llu positions exceed the context of %u",
                        (unsigned long long)n_pos, c->capacity);
    uint64_t need = 0;
    for (int32_t i = 0; i < c->n_layers; i++) {
        const kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        uint64_t used = n_pos < L->slots ? n_pos : L->slots;
        uint64_t pages = div_up(used, L->page_tokens);
        if (pages > L->n_pages_alloc) need += (pages - L->n_pages_alloc) * L->page_bytes;
    }
    if (!need) return KVS_OK;
    if (c->budget && c->bytes + need > c->budget)
        return kvs_fail(KVS_ERR_BUDGET, "KV budget of %.1f MiB exhausted: %llu positions need %.1f MiB",
                        (double)c->budget / 1048576.0, (unsigned long long)n_pos,
                        (double)(c->bytes + need) / 1048576.0);
    for (int32_t i = 0; i < c->n_layers; i++) {
        kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        uint64_t used = n_pos < L->slots ? n_pos : L->slots;
        uint64_t pages = div_up(used, L->page_tokens);
        for (uint64_t p = L->n_pages_alloc; p < pages; p++) {
            L->pages[p] = kvs_aligned_alloc(L->page_bytes);
            if (!L->pages[p])
                return kvs_fail(KVS_ERR_NOMEM, "kv cache: cannot allocate a %.1f KiB page", (double)L->page_bytes / 1024.0);
            L->n_pages_alloc = (uint32_t)p + 1;
            c->bytes += L->page_bytes;
        }
    }
    return KVS_OK;
}

/* Pointers to head 0 of slot `slot` in a layer's pages. */
static void slot_ptrs(const kvs_kv_layer *L, uint64_t slot, uint8_t **k, uint8_t **v) {
    uint8_t *page = L->pages[slot / L->page_tokens];
    uint64_t o = slot % L->page_tokens;
    *k = page + o * L->k_row;
    *v = latent(L) ? *k : page + (size_t)L->scheme.n_kv_heads * L->page_tokens * L->k_row + o * L->v_row;
}

kvs_status kvs_kv_cache_store(kvs_kv_cache *c, int32_t layer, uint64_t pos0, int64_t n,
                              const float *k, const float *v) {
    if (layer < 0 || layer >= c->n_layers) return kvs_fail(KVS_ERR_INTERNAL, "kv store: bad layer");
    const kvs_kv_layer *L = &c->layers[layer];
    if (!L->pages) return KVS_OK; /* shared or no attention */
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

int kvs_kv_cache_segments(const kvs_kv_cache *c, int32_t layer, uint64_t n_pos, kvs_kv_segment *out, int cap) {
    if (layer < 0 || layer >= c->n_layers) return 0;
    const kvs_kv_layer *L = &c->layers[c->layers[layer].source];
    if (!L->pages || n_pos == 0) return 0;
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
    if (!windowed(L)) return (int)div_up(L->slots, L->page_tokens) + 1;
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
