/* Public session API: creation (cache + buffers), reset, decode in chunks. */
#include "model/session.h"

#include <string.h>

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/error.h"
#include "kv/kv_chunk.h"
#include "kv/kv_evict.h"
#include "kv/kv_spec.h"
#include "model/hparams.h"
#include "model/key_center.h"

kvs_session_params kvs_session_params_default(void) {
    kvs_session_params p = {.n_ctx = 0, .n_batch = 512, .n_threads = 0, .kv_type = KVS_KV_F16};
    return p;
}

void kvs_session_free(kvs_session *s) {
    if (!s) return;
    if (s->ext && s->model->ops->session_free) s->model->ops->session_free(s);
    kvs_kv_cache_free(s->kv);
    kvs_pool_free(s->pool);
    kvs_matmul_free(s->mm);
    kvs_attn_free(s->attn);
    kvs_aligned_free(s->block);
    kvs_free(s);
}

static float *carve(uint8_t **p, size_t n_floats) {
    float *r = (float *)*p;
    *p += (n_floats * sizeof(float) + 63) & ~(size_t)63;
    return r;
}

kvs_status kvs_session_new(const kvs_model *m, const kvs_session_params *params, kvs_session **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_session_new: out is NULL");
    *out = NULL;
    if (!m) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_session_new: model is NULL");
    kvs_session_params p = params ? *params : kvs_session_params_default();
    const kvs_hparams *hp = &m->hp;
    if (p.n_ctx == 0) p.n_ctx = (uint32_t)hp->n_ctx_train;
    if (p.n_ctx > KVS_MAX_CTX) return kvs_fail(KVS_ERR_INVALID_ARG, "context %u is too large (at most %u)", p.n_ctx, KVS_MAX_CTX);
    if (p.n_batch == 0) p.n_batch = 512;
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (p.n_threads <= 0) p.n_threads = kvs_cpu_count();
    if (kvs_kv_type_dtype(p.kv_type) == KVS_TYPE_COUNT)
        return kvs_fail(KVS_ERR_INVALID_ARG, "unknown KV type %d", (int)p.kv_type);
    if (p.kv_sinks && !p.kv_window) return kvs_fail(KVS_ERR_INVALID_ARG, "KV sinks need a KV window");

    kvs_session *s = kvs_calloc(1, sizeof *s);
    if (!s) return kvs_fail(KVS_ERR_NOMEM, "session: out of memory");
    s->model = m;
    s->params = p;
    kvs_status st;
    kvs_kv_scheme *schemes = kvs_calloc((size_t)hp->n_layer, sizeof *schemes);
    if (!schemes) { kvs_session_free(s); return kvs_fail(KVS_ERR_NOMEM, "session: out of memory"); }
    m->ops->default_schemes(m, kvs_kv_type_dtype(p.kv_type), schemes);
    for (int32_t i = 0; i < hp->n_layer; i++) {
        if (p.kv_window) { schemes[i].window = p.kv_window; schemes[i].sinks = p.kv_sinks; }
        if (p.kv_page) schemes[i].page_tokens = p.kv_page;
    }
    st = kvs_kv_spec_apply(schemes, hp->n_layer, p.kv_layers);
    for (int32_t i = 0; st == KVS_OK && i < hp->n_layer; i++)
        if (schemes[i].rotate && (hp->head_dim_k & (hp->head_dim_k - 1)))
            st = kvs_fail(KVS_ERR_INVALID_ARG, "kv rules: layer %d: rotate needs a power-of-two head size (got %d)", i,
                          hp->head_dim_k);
    /* centered keys (model/key_center.h): where the format has a use for it
       and the architecture can measure the mean */
    bool center = false;
    for (int32_t i = 0; st == KVS_OK && i < hp->n_layer; i++) {
        if (schemes[i].center && (!kvs_key_center_available(m) || !kvs_kv_key_offset_useful(&schemes[i])))
            schemes[i].center = 0;
        center |= schemes[i].center != 0;
    }
    s->center_pending = center; /* measured at the first decode (kvs_session_prepare) */
    if (st == KVS_OK) st = kvs_kv_cache_new(schemes, hp->n_layer, p.n_ctx, p.kv_budget, &s->kv);
    if (st == KVS_OK) st = kvs_kv_evict_new(s->kv, p.n_batch, &s->kv->evict);
    kvs_free(schemes);
    s->params.kv_layers = NULL; /* not owned; only read here */
    if (st == KVS_OK) st = kvs_kv_chunk_init(s->kv, p.n_batch);
    if (st == KVS_OK) st = kvs_pool_new(p.n_threads, &s->pool);
    if (st == KVS_OK) st = kvs_matmul_new(&s->mm);
    if (st == KVS_OK) st = kvs_attn_new(p.n_threads, &s->attn);
    if (st != KVS_OK) { kvs_session_free(s); return st; }

    size_t B = p.n_batch;
    size_t qd = (size_t)hp->n_head * hp->head_dim_k, kd = (size_t)hp->n_head_kv * hp->head_dim_k;
    size_t vd = (size_t)hp->n_head_kv * hp->head_dim_v, od = (size_t)hp->n_head * hp->head_dim_v;
    size_t sizes[] = {B * hp->n_embd, B * hp->n_embd, B * qd, B * kd, B * vd, B * od,
                      B * hp->n_ff, B * hp->n_ff, B};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) total += (sizes[i] * 4 + 63) & ~(size_t)63;
    s->block = kvs_aligned_alloc(total);
    if (!s->block) { kvs_session_free(s); return kvs_fail(KVS_ERR_NOMEM, "session: cannot allocate %zu bytes of activations", total); }
    uint8_t *c = s->block;
    s->x = carve(&c, sizes[0]);
    s->xn = carve(&c, sizes[1]);
    s->q = carve(&c, sizes[2]);
    s->k = carve(&c, sizes[3]);
    s->v = carve(&c, sizes[4]);
    s->att = carve(&c, sizes[5]);
    s->gate = carve(&c, sizes[6]);
    s->up = carve(&c, sizes[7]);
    s->pos = (int32_t *)carve(&c, sizes[8]);
    if (m->ops->session_init && (st = m->ops->session_init(s)) != KVS_OK) { kvs_session_free(s); return st; }
    *out = s;
    return KVS_OK;
}

kvs_status kvs_session_prepare(kvs_session *s) {
    if (!s->center_pending) return KVS_OK;
    const kvs_hparams *hp = &s->model->hp;
    const float *means = NULL;
    KVS_TRY(kvs_key_center_offsets(s->model, s->params.n_ctx, s->params.n_threads, &means));
    for (int32_t i = 0; i < hp->n_layer; i++)
        if (s->kv->layers[i].scheme.center && s->kv->layers[i].source == i)
            kvs_kv_cache_set_key_offset(s->kv, i, means + (size_t)i * hp->n_head_kv * hp->head_dim_k);
    s->center_pending = false;
    return KVS_OK;
}

void kvs_session_reset(kvs_session *s) {
    if (!s) return;
    kvs_kv_cache_clear(s->kv);
}
uint32_t kvs_session_n_past(const kvs_session *s) { return (uint32_t)s->kv->n_past; }
uint32_t kvs_session_n_ctx(const kvs_session *s) { return s->params.n_ctx; }
uint64_t kvs_session_kv_bytes(const kvs_session *s) { return s->kv->bytes; }
uint64_t kvs_session_pool_bytes(const kvs_session *s) { return s->kv->pool->bytes; }
uint64_t kvs_session_pool_budget(const kvs_session *s) { return s->kv->pool->budget; }

kvs_status kvs_session_fork(const kvs_session *s, kvs_session **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_session_fork: out is NULL");
    *out = NULL;
    if (!s) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_session_fork: session is NULL");
    if (s->model->ops->sequence_state)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "fork: %s keeps per-sequence state outside the KV cache", s->model->arch_name);
    /* the fork's cache copies s's key offsets: measure them first (s's one
       lazily filled state, see center_pending) */
    KVS_TRY(kvs_session_prepare((kvs_session *)s));
    kvs_kv_cache *kv;
    KVS_TRY(kvs_kv_cache_fork(s->kv, &kv));
    kvs_session_params p = s->params; /* buffers as s's; the cache is replaced by the fork */
    p.kv_layers = NULL;
    p.kv_window = p.kv_sinks = 0;
    p.kv_budget = 0;
    kvs_session *f;
    kvs_status st = kvs_session_new(s->model, &p, &f);
    if (st != KVS_OK) { kvs_kv_cache_free(kv); return st; }
    kvs_kv_cache_free(f->kv);
    f->kv = kv;
    f->params = s->params;
    f->center_pending = false;
    *out = f;
    return KVS_OK;
}

kvs_status kvs_session_truncate(kvs_session *s, uint32_t n_tokens) {
    if (!s) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_session_truncate: session is NULL");
    if (n_tokens && s->model->ops->sequence_state)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "truncate: %s keeps per-sequence state outside the KV cache",
                        s->model->arch_name);
    if (n_tokens == 0) { kvs_session_reset(s); return KVS_OK; }
    return kvs_kv_cache_truncate(s->kv, n_tokens);
}

uint64_t kvs_session_kv_bytes_at(const kvs_session *s, uint64_t n_tokens) {
    uint64_t b = 0;
    for (int32_t i = 0; i < s->kv->n_layers; i++) b += kvs_kv_scheme_bytes(&s->kv->layers[i].scheme, n_tokens);
    return b;
}

void kvs_session_kv_describe(const kvs_session *s, int32_t layer, char *buf, size_t cap) {
    if (layer < 0 || layer >= s->kv->n_layers) { if (cap) buf[0] = '\0'; return; }
    kvs_kv_scheme_describe(&s->kv->layers[layer].scheme, buf, cap);
}

uint64_t kvs_session_kv_bytes_per_token(const kvs_session *s) {
    double b = 0;
    for (int32_t i = 0; i < s->kv->n_layers; i++) b += kvs_kv_scheme_bytes_per_token(&s->kv->layers[i].scheme);
    return (uint64_t)(b + 0.5);
}

kvs_status kvs_decode(kvs_session *s, const kvs_token *tokens, size_t n, bool all_logits, float *logits) {
    if (!s || (!tokens && n)) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_decode: NULL argument");
    if (n == 0) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_decode: no tokens");
    if (s->kv->n_past + n > s->params.n_ctx)
        return kvs_fail(KVS_ERR_CONTEXT, "%zu tokens after %llu cached exceed the context of %u tokens",
                        n, (unsigned long long)s->kv->n_past, s->params.n_ctx);
    int32_t n_vocab = s->model->hp.n_vocab;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return kvs_fail(KVS_ERR_INVALID_ARG, "token %d at index %zu is outside the vocabulary (%d)",
                            tokens[i], i, n_vocab);
    KVS_TRY(kvs_session_prepare(s));
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < s->params.n_batch ? n - done : s->params.n_batch;
        bool last = done + chunk == n;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + done * (size_t)n_vocab;
        else if (logits && last) lg = logits;
        /* the chunk's pages are reserved before anything runs: a budget failure changes nothing */
        kvs_status st = kvs_kv_chunk_begin(s->kv, (int64_t)chunk, s->pos);
        const kvs_span span = {.kv = s->kv, .row0 = 0, .n = (int64_t)chunk};
        const int64_t last_row = (int64_t)chunk - 1;
        if (st == KVS_OK) st = kvs_step_forward(s, &span, 1, tokens + done, (int64_t)chunk, &last_row, 1, all_logits, lg);
        if (st != KVS_OK) return st;
        kvs_kv_chunk_end(s->kv);
        done += chunk;
    }
    return KVS_OK;
}
