/* Shared attention step of the decoder architectures (see attend.h). */
#include "arch/attend.h"

#include "core/error.h"
#include "kv/kivi.h"
#include "kv/kv_evict.h"

#define ROTATE_SEED 0x6b76736c696dull /* fixed: keys and queries rotate alike */
#define ROTATE_SEED_V 0x6b76736c7676ull /* values: rotated when stored, rotated back after attention */

/* RoPE on q and k, the optional Hadamard rotation of both, then (store) k
 * and v in the cache, for tokens [lo, hi). */
typedef struct rope_store_task {
    kvs_session *s; const kvs_rope *rope; int32_t layer; bool store, rotate, rotate_v;
} rope_store_task;

static void rope_store_rows(void *ctx, int64_t lo, int64_t hi) {
    rope_store_task *t = ctx;
    kvs_session *s = t->s;
    const kvs_hparams *hp = &s->model->hp;
    int64_t qd = (int64_t)hp->n_head * hp->head_dim_k, kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    int64_t vd = (int64_t)hp->n_head_kv * hp->head_dim_v;
    kvs_rope_apply(t->rope, s->q + lo * qd, hi - lo, hp->n_head, hp->head_dim_k, s->pos + lo);
    kvs_rope_apply(t->rope, s->k + lo * kd, hi - lo, hp->n_head_kv, hp->head_dim_k, s->pos + lo);
    if (t->rotate) {
        for (int64_t r = lo * hp->n_head; r < hi * hp->n_head; r++) kvs_hadamard(s->q + r * hp->head_dim_k, hp->head_dim_k, ROTATE_SEED);
        for (int64_t r = lo * hp->n_head_kv; r < hi * hp->n_head_kv; r++) kvs_hadamard(s->k + r * hp->head_dim_k, hp->head_dim_k, ROTATE_SEED);
    }
    if (t->rotate_v) /* undone on the attention output (kvs_arch_attend) */
        for (int64_t r = lo * hp->n_head_kv; r < hi * hp->n_head_kv; r++) kvs_hadamard(s->v + r * hp->head_dim_v, hp->head_dim_v, ROTATE_SEED_V);
    if (!t->store) return;
    kvs_status st = kvs_kv_cache_store(s->kv, t->layer, s->n_past + (uint32_t)lo, hi - lo, s->k + lo * kd,
                                       s->v + lo * vd);
    kvs_task_fail(st); /* the pool carries the message back to kvs_arch_attend */
}

/* The last layer that reads layer src's cache, or -1. */
static int32_t last_sharer(const kvs_kv_cache *c, int32_t src) {
    int32_t last = -1;
    for (int32_t j = src + 1; j < c->n_layers; j++)
        if (c->layers[j].source == src) last = j;
    return last;
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

/* Store windowed layer src's staged chunk into its ring once its last
 * sharer has read the ring: the rows are decoded into s->k / s->v (free
 * again after the sharer's attention) and stored; converting back gives the
 * same bytes (f16/bf16 exactly; q8_0/q4_0 re-quantize a decoded block to
 * itself), which tests/test_gemma4.c checks against an unshared twin. */
static kvs_status commit_staged(kvs_session *s, int32_t src, int64_t n) {
    const kvs_kv_layer *L = &s->kv->layers[src];
    const kvs_kv_segment sg = staged_view(L, s->staging, s->n_past, n);
    const kvs_type_traits *kt = kvs_type_traits_of(sg.k_type), *vt = kvs_type_traits_of(sg.v_type);
    const int64_t H = L->scheme.n_kv_heads, dk = L->scheme.head_dim_k, dv = L->scheme.head_dim_v;
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < H; h++) {
            kt->to_float(sg.k + h * sg.k_head_stride + t * sg.k_row, s->k + (t * H + h) * dk, dk);
            vt->to_float(sg.v + h * sg.v_head_stride + t * sg.v_row, s->v + (t * H + h) * dv, dv);
        }
    return kvs_kv_cache_store(s->kv, src, s->n_past, n, s->k, s->v);
}

kvs_status kvs_arch_attend(kvs_session *s, int32_t layer, int64_t n, const kvs_rope *rope, float scale) {
    const kvs_hparams *hp = &s->model->hp;
    kvs_status st;
    /* Where this layer's keys come from: an ordinary layer stores the
     * chunk and reads its cache; a windowed one reads its ring before the
     * chunk overwrites it, plus the chunk staged in the ring's format; a
     * shared layer reads its source, which stored the chunk already -
     * except a windowed source with sharers: it keeps the chunk staged (its
     * ring must still hold the positions before the chunk, which a chunk
     * longer than the ring's slack would overwrite) and its last sharer
     * stores it, so sharers read the ring plus the source's staged chunk. */
    const kvs_kv_layer *L = &s->kv->layers[layer], *src = &s->kv->layers[L->source];
    const kvs_kv_scheme *ls = &src->scheme;
    const bool own = L->pages != NULL, win = own && L->scheme.window;
    const bool shared_win = !own && src->pages && ls->window;
    const bool grouped = own && L->scheme.layout == KVS_KV_LAYOUT_CHANNEL; /* groups span chunk splits */
    const bool evict = kvs_kv_evict_on(s->kv->evict, layer); /* kept tokens + the chunk, stored after scoring */
    /* sum_j p_j (H D v_j) = H D (sum_j p_j v_j): values may be stored rotated
     * and each head's output rotated back (full stores; latent V is the key row) */
    const bool rot_v = ls->rotate_v && ls->store == KVS_KV_STORE_FULL;
    rope_store_task rt = {.s = s, .rope = rope, .layer = layer, .store = own && !win && !grouped && !evict,
                          .rotate = ls->rotate != 0, .rotate_v = rot_v};
    if ((st = kvs_pool_for(s->pool, n, KVS_PAR_MIN_TOKENS, rope_store_rows, &rt)) != KVS_OK)
        return kvs_fail(st, "layer %d: %s", layer, kvs_last_error());
    if (grouped && (st = kvs_kv_cache_store(s->kv, layer, s->n_past, n, s->k, s->v)) != KVS_OK) return st;
    int n_segs;
    if (evict) {
        n_segs = kvs_kv_evict_segments(s->kv->evict, s->kv, layer, s->n_past, n, s->k, s->v, s->segs, s->max_segs);
    } else if (win) {
        n_segs = kvs_kv_cache_segments(s->kv, layer, s->n_past, s->segs, s->max_segs - 1);
        s->segs[n_segs++] = kvs_kv_cache_stage(s->kv, layer, s->staging, s->n_past, n, s->k, s->v);
    } else if (shared_win) {
        n_segs = kvs_kv_cache_segments(s->kv, layer, s->n_past, s->segs, s->max_segs - 1);
        s->segs[n_segs++] = staged_view(src, s->staging, s->n_past, n);
    } else {
        n_segs = kvs_kv_cache_segments(s->kv, layer, s->n_past + (uint64_t)n, s->segs, s->max_segs);
    }
    kvs_attn_args aa = {
        .segs = s->segs, .n_segs = n_segs, .n_kv_heads = hp->n_head_kv,
        .head_dim_k = hp->head_dim_k, .head_dim_v = hp->head_dim_v,
        .q = s->q, .n_q = n, .n_head = hp->n_head, .q_pos = s->pos,
        .window = ls->window, .sinks = ls->sinks,
        .scale = scale, .out = s->att,
    };
    if ((st = kvs_attn_run(s->attn, s->pool, &aa)) != KVS_OK) return st;
    if (rot_v)
        for (int64_t r = 0; r < n * hp->n_head; r++) kvs_hadamard_inv(s->att + r * hp->head_dim_v, hp->head_dim_v, ROTATE_SEED_V);
    if (win && last_sharer(s->kv, layer) < 0 && (st = kvs_kv_cache_store(s->kv, layer, s->n_past, n, s->k, s->v)) != KVS_OK)
        return st;
    if (shared_win && last_sharer(s->kv, L->source) == layer && (st = commit_staged(s, L->source, n)) != KVS_OK) return st;
    if (evict && (st = kvs_kv_evict_update(s->kv->evict, s->kv, layer, s->pool, s->q, hp->n_head, n, s->k, s->v, scale)) != KVS_OK)
        return st;
    return KVS_OK;
}
