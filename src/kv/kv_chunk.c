/* The chunk API (see kv_chunk.h): when and how each layer's scheme stores
 * the chunk's keys and values, what attention reads, rotations and
 * eviction. */
#include "kv/kv_chunk.h"

#include <stdio.h>

#include "core/alloc.h"
#include "core/error.h"
#include "kv/kivi.h"
#include "kv/kv_evict.h"

#define ROTATE_SEED 0x6b76736c696dull   /* fixed: keys and queries rotate alike */
#define ROTATE_SEED_V 0x6b76736c7676ull /* values: rotated when stored, rotated back after attention */
#define PAR_MIN_TOKENS 4                /* below this, per-token work runs on the caller */

kvs_status kvs_kv_chunk_init(kvs_kv_cache *c, uint32_t n_batch) {
    size_t staging = 0;
    int segs = 1;
    for (int32_t i = 0; i < c->n_layers; i++) {
        const kvs_kv_layer *L = &c->layers[i];
        if (L->scheme.window && L->pages) {
            size_t b = kvs_kv_cache_staging_bytes(c, i, n_batch);
            if (b > staging) staging = b;
        }
        int ms = kvs_kv_cache_max_segments(c, i) + 1;
        if (ms > segs) segs = ms;
    }
    kvs_free(c->segs);
    kvs_aligned_free(c->staging);
    c->staging = NULL;
    c->n_batch = n_batch;
    c->max_segs = segs;
    c->segs = kvs_calloc((size_t)segs, sizeof *c->segs);
    if (staging) c->staging = kvs_aligned_alloc(staging);
    if (!c->segs || (staging && !c->staging)) return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory");
    return KVS_OK;
}

kvs_status kvs_kv_cache_new_like(const kvs_kv_cache *like, kvs_kv_cache **out) {
    *out = NULL;
    kvs_kv_scheme *schemes = kvs_malloc(sizeof *schemes * (size_t)like->n_layers);
    if (!schemes) return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory");
    for (int32_t i = 0; i < like->n_layers; i++) schemes[i] = like->layers[i].scheme;
    kvs_kv_cache *c;
    kvs_status st = kvs_kv_cache_new_in(like->pool, schemes, like->n_layers, like->capacity, &c);
    kvs_free(schemes);
    if (st != KVS_OK) return st;
    c->own_pool = like->own_pool;
    for (int32_t i = 0; i < like->n_layers; i++) c->layers[i].key_offset = like->layers[i].key_offset;
    if (like->evict) st = kvs_kv_evict_new(c, like->n_batch, &c->evict);
    if (st == KVS_OK && like->n_batch) st = kvs_kv_chunk_init(c, like->n_batch);
    if (st != KVS_OK) { kvs_kv_cache_free(c); return st; }
    *out = c;
    return KVS_OK;
}

kvs_status kvs_kv_chunk_begin(kvs_kv_cache *c, int64_t n, int32_t *pos) {
    c->chunk_n = 0;
    if (n <= 0 || (c->n_batch && (uint64_t)n > c->n_batch))
        return kvs_fail(KVS_ERR_INTERNAL, "kv chunk: %lld tokens (1..%u)", (long long)n, c->n_batch);
    kvs_status st = kvs_kv_cache_reserve(c, c->n_past + (uint64_t)n); /* a budget failure changes nothing */
    if (st != KVS_OK) return st;
    for (int64_t t = 0; pos && t < n; t++) pos[t] = (int32_t)(c->n_past + (uint64_t)t);
    c->chunk_n = n;
    return KVS_OK;
}

void kvs_kv_chunk_end(kvs_kv_cache *c) {
    c->n_past += (uint64_t)c->chunk_n;
    c->chunk_n = 0;
}

/* ---- full layers: prepare / view / commit ------------------------------------ */

/* The last layer that reads layer src's cache, or -1. */
static int32_t last_sharer(const kvs_kv_cache *c, int32_t src) {
    int32_t last = -1;
    for (int32_t j = src + 1; j < c->n_layers; j++)
        if (c->layers[j].source == src) last = j;
    return last;
}

/* How a layer meets the chunk: an ordinary layer stores it before attention
 * and reads its cache; a windowed one reads its ring before the chunk
 * overwrites it, plus the chunk staged in the ring's format, and stores it
 * after; a shared layer reads its source, which stored the chunk already -
 * except a windowed source with sharers: it keeps the chunk staged (its ring
 * must still hold the positions before the chunk, which a chunk longer than
 * the ring's slack would overwrite) and its last sharer stores it, so sharers
 * read the ring plus the source's staged chunk. Per-channel layers store
 * whole groups in order (not split over threads); evicting layers store
 * after scoring. */
typedef struct layer_plan {
    const kvs_kv_layer *L, *src;
    bool own, win, shared_win, grouped, evict, rot_k, rot_v, store_first;
} layer_plan;

static layer_plan plan_of(const kvs_kv_cache *c, int32_t layer) {
    layer_plan p = {.L = &c->layers[layer]};
    p.src = &c->layers[p.L->source];
    const kvs_kv_scheme *ls = &p.src->scheme;
    p.own = p.L->pages != NULL;
    p.win = p.own && p.L->scheme.window;
    p.shared_win = !p.own && p.src->pages && ls->window;
    p.grouped = p.own && p.L->scheme.layout == KVS_KV_LAYOUT_CHANNEL;
    p.evict = kvs_kv_evict_on(c->evict, layer);
    p.rot_k = ls->rotate != 0;
    /* sum_j p_j (H D v_j) = H D (sum_j p_j v_j): values may be stored rotated
     * and each head's output rotated back (full stores; latent V is the key row) */
    p.rot_v = ls->rotate_v && ls->store == KVS_KV_STORE_FULL;
    p.store_first = p.own && !p.win && !p.grouped && !p.evict;
    return p;
}

/* The chunk a windowed layer staged in buf, as kvs_kv_cache_stage laid it
 * out (plain rows: K of every head, then V). */
static kvs_kv_segment staged_view(const kvs_kv_layer *L, const uint8_t *buf, uint64_t pos0, int64_t n) {
    kvs_kv_segment sg = {
        .k = buf, .v = buf + (size_t)L->scheme.n_kv_heads * (size_t)n * L->k_row,
        .k_head_stride = (size_t)n * L->k_row, .v_head_stride = (size_t)n * L->v_row,
        .k_row = L->k_row, .v_row = L->v_row, .k_type = L->scheme.k_type, .v_type = L->scheme.v_type,
        .pos0 = (int64_t)pos0, .n = n,
    };
    return sg;
}

/* Rotation and the store before attention, for tokens [lo, hi). */
typedef struct prepare_task {
    kvs_kv_cache *c;
    int32_t layer, n_head, n_kv, dk, dv;
    float *q, *k, *v;
    const float *k_off;     /* (n_kv, dk) subtracted from each key row, or NULL */
    bool rot_k, rot_v, store;
} prepare_task;

static void prepare_rows(void *ctx, int64_t lo, int64_t hi) {
    prepare_task *t = ctx;
    const int64_t kd = (int64_t)t->n_kv * t->dk, vd = (int64_t)t->n_kv * t->dv;
    if (t->k_off)
        for (int64_t r = lo; r < hi; r++)
            for (int64_t e = 0; e < kd; e++) t->k[r * kd + e] -= t->k_off[e];
    if (t->rot_k) {
        for (int64_t r = lo * t->n_head; r < hi * t->n_head; r++) kvs_hadamard(t->q + r * t->dk, t->dk, ROTATE_SEED);
        for (int64_t r = lo * t->n_kv; r < hi * t->n_kv; r++) kvs_hadamard(t->k + r * t->dk, t->dk, ROTATE_SEED);
    }
    if (t->rot_v) /* undone on the attention output (kvs_kv_layer_commit) */
        for (int64_t r = lo * t->n_kv; r < hi * t->n_kv; r++) kvs_hadamard(t->v + r * t->dv, t->dv, ROTATE_SEED_V);
    if (!t->store) return;
    kvs_status st = kvs_kv_cache_store(t->c, t->layer, t->c->n_past + (uint64_t)lo, hi - lo, t->k + lo * kd,
                                       t->v + lo * vd);
    if (st != KVS_OK) kvs_task_fail(st); /* the pool carries the message back to the caller */
}

static prepare_task prepare_of(kvs_kv_cache *c, int32_t layer, int32_t n_head, float *q, float *k, float *v,
                               bool *grouped) {
    const layer_plan p = plan_of(c, layer);
    const kvs_kv_scheme *ls = &p.src->scheme;
    *grouped = p.grouped;
    return (prepare_task){.c = c, .layer = layer, .n_head = n_head, .n_kv = (int32_t)ls->n_kv_heads,
                          .dk = (int32_t)ls->head_dim_k, .dv = (int32_t)ls->head_dim_v, .q = q, .k = k, .v = v,
                          .k_off = p.own ? p.L->key_offset : NULL,
                          .rot_k = p.rot_k, .rot_v = p.rot_v, .store = p.store_first};
}

static bool prepare_needed(const prepare_task *t) { return t->k_off || t->rot_k || t->rot_v || t->store; }

static kvs_status prepare_failed(kvs_status st, int32_t layer) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", kvs_last_error());
    return kvs_fail(st, "layer %d: %s", layer, msg);
}

static kvs_status check_chunk(const kvs_kv_cache *c, int32_t layer) {
    if (layer < 0 || layer >= c->n_layers || c->chunk_n <= 0)
        return kvs_fail(KVS_ERR_INTERNAL, "kv chunk: layer %d outside a chunk", layer);
    return KVS_OK;
}

kvs_status kvs_kv_layer_prepare(kvs_kv_cache *c, kvs_pool *pool, int32_t layer, float *q, int32_t n_head, float *k,
                                float *v) {
    kvs_status st = check_chunk(c, layer);
    if (st != KVS_OK) return st;
    const int64_t n = c->chunk_n;
    bool grouped;
    prepare_task pt = prepare_of(c, layer, n_head, q, k, v, &grouped);
    if (prepare_needed(&pt) && (st = kvs_pool_for(pool, n, PAR_MIN_TOKENS, prepare_rows, &pt)) != KVS_OK)
        return prepare_failed(st, layer);
    if (grouped) return kvs_kv_cache_store(c, layer, c->n_past, n, k, v);
    return KVS_OK;
}

/* Sequences [lo, hi) of a step whose chunks are all short: each one's whole
 * prepare (rows, then a grouped layer's in-order store) in one task. */
typedef struct prepare_many_task {
    const kvs_kv_rows *rows;
    int32_t layer, n_head;
} prepare_many_task;

static void prepare_seqs(void *ctx, int64_t lo, int64_t hi) {
    const prepare_many_task *t = ctx;
    for (int64_t i = lo; i < hi; i++) {
        const kvs_kv_rows *r = &t->rows[i];
        bool grouped;
        prepare_task pt = prepare_of(r->c, t->layer, t->n_head, r->q, r->k, r->v, &grouped);
        if (prepare_needed(&pt)) prepare_rows(&pt, 0, r->c->chunk_n);
        kvs_status st = grouped ? kvs_kv_cache_store(r->c, t->layer, r->c->n_past, r->c->chunk_n, r->k, r->v) : KVS_OK;
        if (st != KVS_OK) kvs_task_fail(st);
    }
}

kvs_status kvs_kv_layers_prepare(kvs_pool *pool, int32_t layer, int32_t n_head, const kvs_kv_rows *rows, int n) {
    bool all_short = n > 1;
    kvs_status st;
    for (int i = 0; i < n; i++) {
        if ((st = check_chunk(rows[i].c, layer)) != KVS_OK) return st;
        if (rows[i].c->chunk_n >= PAR_MIN_TOKENS) all_short = false;
    }
    if (!all_short) {
        for (int i = 0; i < n; i++)
            if ((st = kvs_kv_layer_prepare(rows[i].c, pool, layer, rows[i].q, n_head, rows[i].k, rows[i].v)) != KVS_OK)
                return st;
        return KVS_OK;
    }
    prepare_many_task t = {.rows = rows, .layer = layer, .n_head = n_head};
    if ((st = kvs_pool_for(pool, n, 2, prepare_seqs, &t)) != KVS_OK) return prepare_failed(st, layer);
    return KVS_OK;
}

kvs_kv_view kvs_kv_layer_view(kvs_kv_cache *c, int32_t layer, const float *k, const float *v) {
    const int64_t n = c->chunk_n;
    const layer_plan p = plan_of(c, layer);
    int ns;
    if (p.evict) {
        ns = kvs_kv_evict_segments(c->evict, c, layer, c->n_past, n, k, v, c->segs, c->max_segs);
    } else if (p.win) {
        ns = kvs_kv_cache_segments(c, layer, c->n_past, c->segs, c->max_segs - 1);
        c->segs[ns++] = kvs_kv_cache_stage(c, layer, c->staging, c->n_past, n, k, v);
    } else if (p.shared_win) {
        ns = kvs_kv_cache_segments(c, layer, c->n_past, c->segs, c->max_segs - 1);
        c->segs[ns++] = staged_view(p.src, c->staging, c->n_past, n);
    } else {
        ns = kvs_kv_cache_segments(c, layer, c->n_past + (uint64_t)n, c->segs, c->max_segs);
    }
    kvs_kv_view view = {.segs = c->segs, .n_segs = ns, .window = p.src->scheme.window, .sinks = p.src->scheme.sinks};
    return view;
}

/* Store windowed layer src's staged chunk into its ring once its last
 * sharer has read the ring: the rows are decoded into k / v (free again
 * after the sharer's attention) and stored; converting back gives the same
 * bytes (f16/bf16 exactly; q8_0/q4_0 re-quantize a decoded block to itself;
 * tq rows almost: core/tq.h),
 * which tests/test_gemma4.c checks against an unshared twin. */
static kvs_status commit_staged(kvs_kv_cache *c, int32_t src, float *k, float *v) {
    const int64_t n = c->chunk_n;
    const kvs_kv_layer *L = &c->layers[src];
    const kvs_kv_segment sg = staged_view(L, c->staging, c->n_past, n);
    const kvs_type_traits *kt = kvs_type_traits_of(sg.k_type), *vt = kvs_type_traits_of(sg.v_type);
    const int64_t H = L->scheme.n_kv_heads, dk = L->scheme.head_dim_k, dv = L->scheme.head_dim_v;
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < H; h++) {
            kt->to_float(sg.k + h * sg.k_head_stride + t * sg.k_row, k + (t * H + h) * dk, dk);
            vt->to_float(sg.v + h * sg.v_head_stride + t * sg.v_row, v + (t * H + h) * dv, dv);
        }
    return kvs_kv_cache_store(c, src, c->n_past, n, k, v);
}

kvs_status kvs_kv_layer_commit(kvs_kv_cache *c, kvs_pool *pool, int32_t layer, const float *q, int32_t n_head,
                               float *k, float *v, float *out, float scale) {
    const int64_t n = c->chunk_n;
    const layer_plan p = plan_of(c, layer);
    const int32_t dv = (int32_t)p.src->scheme.head_dim_v;
    kvs_status st;
    if (p.rot_v)
        for (int64_t r = 0; r < n * n_head; r++) kvs_hadamard_inv(out + r * dv, dv, ROTATE_SEED_V);
    if (p.win && last_sharer(c, layer) < 0 && (st = kvs_kv_cache_store(c, layer, c->n_past, n, k, v)) != KVS_OK)
        return st;
    if (p.shared_win && last_sharer(c, p.L->source) == layer && (st = commit_staged(c, p.L->source, k, v)) != KVS_OK)
        return st;
    if (p.evict && (st = kvs_kv_evict_update(c->evict, c, layer, pool, q, n_head, n, k, v, scale)) != KVS_OK)
        return st;
    return KVS_OK;
}

/* ---- rows of latent and compressed layers --------------------------------------- */

kvs_status kvs_kv_put_rows(kvs_kv_cache *c, int32_t layer, const float *k, const float *v) {
    return kvs_kv_cache_store(c, layer, c->n_past, c->chunk_n, k, v);
}

kvs_status kvs_kv_put_raw(kvs_kv_cache *c, int32_t layer, uint64_t pos, const float *row) {
    uint8_t *dst = kvs_kv_cache_raw_row(c, layer, pos);
    if (!dst)
        return kvs_fail(KVS_ERR_INTERNAL, "kv cache: layer %d raw position %llu not reserved", layer,
                        (unsigned long long)pos);
    kvs_kv_format_row(c, layer, row, dst);
    return KVS_OK;
}

kvs_status kvs_kv_put_entry(kvs_kv_cache *c, int32_t layer, uint64_t j, const float *entry, bool index) {
    uint8_t *ik = NULL, *row = kvs_kv_cache_entry_row(c, layer, j, &ik);
    if (!row || (index && !ik))
        return kvs_fail(KVS_ERR_INTERNAL, "kv cache: layer %d entry %llu not reserved", layer, (unsigned long long)j);
    const kvs_kv_scheme *s = &c->layers[layer].scheme;
    kvs_type_traits_of(index ? s->indexer_type : s->k_type)->from_float(entry, index ? ik : row,
                                                                        index ? s->indexer_dim : s->entry_dim);
    return KVS_OK;
}

void kvs_kv_format_row(const kvs_kv_cache *c, int32_t layer, const float *row, uint8_t *buf) {
    const kvs_kv_scheme *s = &c->layers[layer].scheme;
    kvs_type_traits_of(s->k_type)->from_float(row, buf, s->entry_dim);
}

kvs_status kvs_kv_round_rows(const kvs_kv_cache *c, int32_t layer, float *rows, int64_t n) {
    const kvs_kv_scheme *s = &c->layers[layer].scheme;
    const kvs_type_traits *tr = kvs_type_traits_of(s->k_type);
    uint8_t buf[4096];
    if (kvs_row_bytes(s->k_type, s->entry_dim) > sizeof buf)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d rows of %u elements are too wide", layer, s->entry_dim);
    for (int64_t t = 0; t < n; t++) {
        tr->from_float(rows + t * s->entry_dim, buf, s->entry_dim);
        tr->to_float(buf, rows + t * s->entry_dim, s->entry_dim);
    }
    return KVS_OK;
}

void kvs_kv_cache_set_key_offset(kvs_kv_cache *c, int32_t layer, const float *off) {
    if (layer >= 0 && layer < c->n_layers) c->layers[layer].key_offset = off;
}

bool kvs_kv_key_offset_useful(const kvs_kv_scheme *s) {
    return s->store == KVS_KV_STORE_FULL && s->layout == KVS_KV_LAYOUT_BLOCK && s->k_type != KVS_TYPE_F32 &&
           s->k_type != KVS_TYPE_F16 && s->k_type != KVS_TYPE_BF16;
}
