/* H2O and SnapKV token eviction for full-attention layers; see kv_evict.h. */
#include "kv/kv_evict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "model/session.h"

#define SNAPKV_POOL 3 /* max-pool the observation scores over 7 neighbouring tokens */

typedef struct ev_layer {
    bool on;
    uint64_t n_kept;  /* slots in use (every head keeps the same count) */
    uint64_t n_seen;  /* true positions processed */
    float *acc;       /* H2O: (n_kv_heads, cap) accumulated attention per slot */
} ev_layer;

struct kvs_kv_evict {
    kvs_evict_policy policy;
    uint32_t budget, window, sinks, n_batch;
    int32_t n_layers;
    ev_layer *L;
    uint64_t cap;          /* slots a layer can reach: context + one chunk */
    uint8_t *staging;      /* one chunk in a layer's formats */
    float *kbuf;           /* (n_kv_heads, cap, dk) decoded keys of one layer */
    float *score;          /* (n_kv_heads, cap) this step's scores */
    int32_t *pos;          /* (n_batch) true positions of the chunk */
    bool *keep;            /* (cap) */
    struct ranked { float s; uint64_t i; } *rank; /* (cap) */
};

static bool eligible(const kvs_kv_cache *c, int32_t i) {
    const kvs_kv_layer *L = &c->layers[i];
    if (!L->pages || L->scheme.store != KVS_KV_STORE_FULL || L->scheme.layout != KVS_KV_LAYOUT_BLOCK || L->scheme.window)
        return false;
    for (int32_t j = 0; j < c->n_layers; j++)
        if (j != i && c->layers[j].source == i) return false; /* another layer reads these slots */
    return true;
}

void kvs_kv_evict_free(kvs_kv_evict *e) {
    if (!e) return;
    for (int32_t i = 0; e->L && i < e->n_layers; i++) kvs_free(e->L[i].acc);
    kvs_free(e->L);
    kvs_aligned_free(e->staging);
    kvs_free(e->kbuf);
    kvs_free(e->score);
    kvs_free(e->pos);
    kvs_free(e->keep);
    kvs_free(e->rank);
    kvs_free(e);
}

kvs_status kvs_kv_evict_new(const kvs_kv_cache *c, uint32_t n_batch, kvs_kv_evict **out) {
    *out = NULL;
    /* the settings come from the layer schemes (rule settings h2o= / snapkv=);
     * layers that cannot evict ignore them, as shared layers ignore formats */
    const kvs_kv_scheme *set = NULL;
    int32_t set_layer = -1;
    bool asked = false;
    for (int32_t i = 0; i < c->n_layers; i++) {
        const kvs_kv_scheme *s = &c->layers[i].scheme;
        if (!s->evict) continue;
        asked = true;
        if (!eligible(c, i)) continue;
        if (!set) { set = s; set_layer = i; continue; }
        if (s->evict != set->evict || s->evict_budget != set->evict_budget || s->evict_window != set->evict_window ||
            s->evict_sinks != set->evict_sinks)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "eviction: layers %d and %d ask for different settings; one eviction "
                            "setting per cache is supported", set_layer, i);
    }
    if (!asked) return KVS_OK;
    if (!set)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "eviction: no layer can evict (needs full attention, no window, "
                        "row formats such as f16/q8_0/q4_0 rather than per-channel keys, not shared)");
    kvs_evict_policy policy = (kvs_evict_policy)set->evict;
    uint32_t budget = set->evict_budget, window = set->evict_window, sinks = set->evict_sinks;
    if (policy != KVS_EVICT_H2O && policy != KVS_EVICT_SNAPKV)
        return kvs_fail(KVS_ERR_INVALID_ARG, "eviction: unknown policy %d", (int)policy);
    if (budget == 0 || (uint64_t)window + sinks > budget || n_batch == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "eviction: budget %u cannot hold %u sinks + a window of %u", budget, sinks, window);
    if (policy == KVS_EVICT_SNAPKV && window == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "eviction: snapkv needs an observation window > 0");
    kvs_kv_evict *e = kvs_calloc(1, sizeof *e);
    if (!e) return kvs_fail(KVS_ERR_NOMEM, "eviction: out of memory");
    e->policy = policy;
    e->budget = budget;
    e->window = window;
    e->sinks = sinks;
    e->n_batch = n_batch;
    e->n_layers = c->n_layers;
    e->cap = (uint64_t)c->capacity + n_batch;
    e->L = kvs_calloc((size_t)c->n_layers, sizeof *e->L);
    if (!e->L) { kvs_kv_evict_free(e); return kvs_fail(KVS_ERR_NOMEM, "eviction: out of memory"); }
    size_t stage = 0, H = 0, dk = 0;
    for (int32_t i = 0; i < c->n_layers; i++) {
        const kvs_kv_scheme *s = &c->layers[i].scheme;
        if (!s->evict || !eligible(c, i)) continue;
        e->L[i].on = true;
        size_t b = kvs_kv_cache_staging_bytes(c, i, n_batch);
        if (b > stage) stage = b;
        if (s->n_kv_heads > H) H = s->n_kv_heads;
        if (s->head_dim_k > dk) dk = s->head_dim_k;
        if (policy == KVS_EVICT_H2O && !(e->L[i].acc = kvs_calloc((size_t)s->n_kv_heads * e->cap, sizeof(float)))) {
            kvs_kv_evict_free(e);
            return kvs_fail(KVS_ERR_NOMEM, "eviction: out of memory");
        }
    }
    e->staging = kvs_aligned_alloc(stage);
    e->kbuf = kvs_malloc(sizeof(float) * H * e->cap * dk);
    e->score = kvs_malloc(sizeof(float) * H * e->cap);
    e->pos = kvs_malloc(sizeof(int32_t) * n_batch);
    e->keep = kvs_malloc(sizeof(bool) * e->cap);
    e->rank = kvs_malloc(sizeof *e->rank * e->cap);
    if (!e->staging || !e->kbuf || !e->score || !e->pos || !e->keep || !e->rank) {
        kvs_kv_evict_free(e);
        return kvs_fail(KVS_ERR_NOMEM, "eviction: out of memory");
    }
    *out = e;
    return KVS_OK;
}

void kvs_kv_evict_clear(kvs_kv_evict *e) {
    if (!e) return;
    for (int32_t i = 0; i < e->n_layers; i++) { e->L[i].n_kept = 0; e->L[i].n_seen = 0; }
}

bool kvs_kv_evict_on(const kvs_kv_evict *e, int32_t layer) {
    return e && layer >= 0 && layer < e->n_layers && e->L[layer].on;
}

uint64_t kvs_kv_evict_slots(const kvs_kv_evict *e, int32_t layer, uint64_t n_pos) {
    const ev_layer *L = &e->L[layer];
    return n_pos > L->n_seen ? L->n_kept + (n_pos - L->n_seen) : L->n_kept;
}

uint32_t kvs_kv_evict_budget(const kvs_kv_evict *e) { return e->budget; }
uint64_t kvs_kv_evict_kept(const kvs_kv_evict *e, int32_t layer) { return e->L[layer].n_kept; }

int kvs_kv_evict_segments(kvs_kv_evict *e, const kvs_kv_cache *c, int32_t layer, uint64_t pos0, int64_t n,
                          const float *k, const float *v, kvs_kv_segment *out, int cap) {
    int ns = kvs_kv_cache_segments(c, layer, e->L[layer].n_kept, out, cap - 1);
    out[ns++] = kvs_kv_cache_stage(c, layer, e->staging, pos0, n, k, v);
    return ns;
}

kvs_status kvs_kv_evict_score_ref(const float *q, int64_t nq, int32_t group, const int32_t *qpos, const float *cached,
                                  int64_t nc, const float *chunk, const int32_t *cpos, int64_t n, int32_t dk, float scale,
                                  float *score) {
    double *lg = kvs_malloc(sizeof(double) * (size_t)(nc + n));
    if (!lg) return kvs_fail(KVS_ERR_NOMEM, "eviction: out of memory scoring %lld keys", (long long)(nc + n));
    for (int64_t i = 0; i < nq; i++)
        for (int32_t g = 0; g < group; g++) {
            const float *qi = q + (i * group + g) * dk;
            double mx = -INFINITY;
            int64_t vis = nc;
            for (int64_t j = 0; j < nc + n; j++) {
                if (j >= nc && cpos[j - nc] > qpos[i]) { lg[j] = -INFINITY; continue; }
                const float *kj = j < nc ? cached + j * dk : chunk + (j - nc) * dk;
                double d = 0;
                for (int32_t e = 0; e < dk; e++) d += (double)qi[e] * kj[e];
                lg[j] = d * scale;
                if (lg[j] > mx) mx = lg[j];
                if (j >= nc) vis = j + 1;
            }
            double z = 0;
            for (int64_t j = 0; j < vis; j++) if (lg[j] > -INFINITY) z += exp(lg[j] - mx);
            for (int64_t j = 0; j < vis; j++) if (lg[j] > -INFINITY) score[j] += (float)(exp(lg[j] - mx) / z);
        }
    kvs_free(lg);
    return KVS_OK;
}

static int cmp_rank(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i > y->i ? -1 : x->i < y->i; /* ties: keep the newer */
}

static uint64_t select_with(struct ranked *rank, const float *score, uint64_t n_tot, uint32_t budget, uint32_t window,
                            uint32_t sinks, int pool, bool *keep) {
    if (n_tot <= budget) {
        for (uint64_t j = 0; j < n_tot; j++) keep[j] = true;
        return n_tot;
    }
    uint64_t lo = sinks, hi = n_tot - window; /* middle [lo, hi): ranked */
    for (uint64_t j = 0; j < n_tot; j++) keep[j] = j < lo || j >= hi;
    uint64_t want = budget - sinks - window, m = 0;
    for (uint64_t j = lo; j < hi; j++) {
        float s = score[j];
        if (pool > 0) {
            uint64_t a = j >= lo + (uint64_t)pool ? j - (uint64_t)pool : lo, b = j + (uint64_t)pool < hi ? j + (uint64_t)pool : hi - 1;
            for (uint64_t t = a; t <= b; t++) if (score[t] > s) s = score[t];
        }
        rank[m].s = s;
        rank[m].i = j;
        m++;
    }
    qsort(rank, (size_t)m, sizeof *rank, cmp_rank);
    for (uint64_t r = 0; r < want && r < m; r++) keep[rank[r].i] = true;
    return budget;
}

uint64_t kvs_kv_evict_select(const float *score, uint64_t n_tot, uint32_t budget, uint32_t window, uint32_t sinks,
                             int pool, bool *keep) {
    if ((uint64_t)window + sinks > budget) return 0;
    struct ranked *rank = kvs_malloc(sizeof *rank * (size_t)(n_tot ? n_tot : 1));
    if (!rank) return 0;
    uint64_t r = select_with(rank, score, n_tot, budget, window, sinks, pool, keep);
    kvs_free(rank);
    return r;
}

/* ---- one step -------------------------------------------------------------- */

typedef struct score_task {
    kvs_kv_evict *e; const kvs_kv_cache *c; int32_t layer;
    const float *q; int32_t n_head; int64_t n, q0; const float *k; float scale;
} score_task;

/* Scores of KV heads [lo, hi): decode the kept keys, then the reference
 * scoring of the selected queries against kept + chunk keys. */
static void score_heads(void *ctx, int64_t lo, int64_t hi) {
    score_task *t = ctx;
    kvs_kv_evict *e = t->e;
    const kvs_kv_layer *L = &t->c->layers[t->layer];
    const int32_t H = (int32_t)L->scheme.n_kv_heads, dk = (int32_t)L->scheme.head_dim_k, G = t->n_head / H;
    const uint64_t nc = e->L[t->layer].n_kept;
    const kvs_type_traits *kt = kvs_type_traits_of(L->scheme.k_type);
    float *qh = kvs_malloc(sizeof(float) * (size_t)(t->n - t->q0) * G * dk);
    float *ch = kvs_malloc(sizeof(float) * (size_t)t->n * dk);
    if (!qh || !ch) {
        kvs_free(qh);
        kvs_free(ch);
        kvs_task_fail(kvs_fail(KVS_ERR_NOMEM, "eviction: layer %d: out of memory for the scoring buffers", t->layer));
        return;
    }
    for (int64_t h = lo; h < hi; h++) {
        float *kb = e->kbuf + (size_t)h * e->cap * dk;
        for (uint64_t j = 0; j < nc; j++) {
            uint8_t *kr, *vr;
            kvs_kv_cache_row(t->c, t->layer, j, (int32_t)h, &kr, &vr);
            kt->to_float(kr, kb + j * dk, dk);
        }
        /* this head's group of queries and its chunk keys, packed */
        for (int64_t i = t->q0; i < t->n; i++)
            memcpy(qh + ((i - t->q0) * G) * dk, t->q + (i * t->n_head + h * G) * dk, sizeof(float) * G * dk);
        for (int64_t i = 0; i < t->n; i++) memcpy(ch + i * dk, t->k + (i * H + h) * dk, sizeof(float) * dk);
        float *sc = e->score + (size_t)h * e->cap;
        memset(sc, 0, sizeof(float) * (nc + (uint64_t)t->n));
        kvs_status st = kvs_kv_evict_score_ref(qh, t->n - t->q0, G, e->pos + t->q0, kb, (int64_t)nc, ch, e->pos, t->n,
                                               dk, t->scale, sc);
        if (st != KVS_OK) { kvs_task_fail(st); break; }
    }
    kvs_free(qh);
    kvs_free(ch);
}

/* Move kept rows (and H2O scores) of one head down to slots 0..kept-1. */
static void compact_head(kvs_kv_evict *e, const kvs_kv_cache *c, int32_t layer, int32_t h, uint64_t n_tot) {
    const kvs_kv_layer *L = &c->layers[layer];
    float *acc = e->L[layer].acc ? e->L[layer].acc + (size_t)h * e->cap : NULL;
    uint64_t dst = 0;
    for (uint64_t src = 0; src < n_tot; src++) {
        if (!e->keep[src]) continue;
        if (dst != src) {
            uint8_t *ks, *vs, *kd, *vd;
            kvs_kv_cache_row(c, layer, src, h, &ks, &vs);
            kvs_kv_cache_row(c, layer, dst, h, &kd, &vd);
            memcpy(kd, ks, L->k_row);
            memcpy(vd, vs, L->v_row);
            if (acc) acc[dst] = acc[src];
        }
        dst++;
    }
}

kvs_status kvs_kv_evict_update(kvs_kv_evict *e, kvs_kv_cache *c, int32_t layer, kvs_pool *pool, const float *q,
                               int32_t n_head, int64_t n, const float *k, const float *v, float scale) {
    ev_layer *EL = &e->L[layer];
    const kvs_kv_layer *L = &c->layers[layer];
    const int32_t H = (int32_t)L->scheme.n_kv_heads;
    if (n <= 0 || n > (int64_t)e->n_batch) return kvs_fail(KVS_ERR_INTERNAL, "eviction: layer %d: step of %lld tokens", layer, (long long)n);
    const uint64_t nc = EL->n_kept, n_tot = nc + (uint64_t)n;
    for (int64_t i = 0; i < n; i++) e->pos[i] = (int32_t)(EL->n_seen + (uint64_t)i);
    /* SnapKV selects after a prompt chunk only; single tokens are appended */
    bool snap = e->policy == KVS_EVICT_SNAPKV;
    bool evict = n_tot > e->budget && (!snap || n > 1);
    bool need_scores = e->policy == KVS_EVICT_H2O || evict;
    if (need_scores) {
        int64_t q0 = snap && n > (int64_t)e->window ? n - (int64_t)e->window : 0; /* SnapKV: the observation window */
        score_task t = {.e = e, .c = c, .layer = layer, .q = q, .n_head = n_head, .n = n, .q0 = q0, .k = k, .scale = scale};
        kvs_status sst = kvs_pool_for(pool, H, 2, score_heads, &t);
        if (sst != KVS_OK) return sst;
    }
    kvs_status st = kvs_kv_cache_store(c, layer, nc, n, k, v);
    if (st != KVS_OK) return st;
    if (e->policy == KVS_EVICT_H2O)
        for (int32_t h = 0; h < H; h++) {
            float *acc = EL->acc + (size_t)h * e->cap, *sc = e->score + (size_t)h * e->cap;
            for (uint64_t j = 0; j < nc; j++) acc[j] += sc[j];
            for (uint64_t j = nc; j < n_tot; j++) acc[j] = sc[j];
        }
    uint64_t kept = n_tot;
    if (evict)
        for (int32_t h = 0; h < H; h++) {
            const float *sc = snap ? e->score + (size_t)h * e->cap : EL->acc + (size_t)h * e->cap;
            kept = select_with(e->rank, sc, n_tot, e->budget, e->window, e->sinks, snap ? SNAPKV_POOL : 0, e->keep);
            compact_head(e, c, layer, h, n_tot);
        }
    EL->n_kept = kept;
    EL->n_seen += (uint64_t)n;
    return KVS_OK;
}

/* ---- session API ------------------------------------------------------------ */

kvs_status kvs_session_set_eviction(kvs_session *s, kvs_evict_policy policy, uint32_t budget, uint32_t window,
                                    uint32_t sinks) {
    if (!s) return kvs_fail(KVS_ERR_INVALID_ARG, "eviction: NULL session");
    if (s->kv->n_past) return kvs_fail(KVS_ERR_INVALID_ARG, "eviction: set it on an empty session (reset first)");
    kvs_kv_cache *c = s->kv;
    kvs_kv_scheme *saved = kvs_malloc(sizeof *saved * (size_t)c->n_layers);
    if (!saved) return kvs_fail(KVS_ERR_NOMEM, "eviction: out of memory");
    for (int32_t i = 0; i < c->n_layers; i++) { /* the same as the rule setting on every layer */
        kvs_kv_scheme *L = &c->layers[i].scheme;
        saved[i] = *L;
        L->evict = (uint32_t)policy;
        L->evict_budget = policy ? budget : 0;
        L->evict_window = policy ? window : 0;
        L->evict_sinks = policy ? sinks : 0;
    }
    kvs_kv_evict *e = NULL;
    kvs_status st = kvs_kv_evict_new(c, s->params.n_batch, &e);
    if (st == KVS_OK && policy != KVS_EVICT_NONE && !e) st = kvs_fail(KVS_ERR_INVALID_ARG, "eviction: unknown policy %d", (int)policy);
    if (st != KVS_OK) {
        for (int32_t i = 0; i < c->n_layers; i++) c->layers[i].scheme = saved[i];
        kvs_free(saved);
        return st;
    }
    kvs_free(saved);
    kvs_kv_evict_free(c->evict);
    c->evict = e;
    kvs_kv_cache_clear(c);
    return KVS_OK;
}

uint64_t kvs_session_kv_bytes_at_evict(const kvs_session *s, uint64_t n_tokens) {
    uint64_t b = 0;
    const kvs_kv_evict *e = s->kv->evict;
    for (int32_t i = 0; i < s->kv->n_layers; i++) {
        uint64_t n = n_tokens;
        if (kvs_kv_evict_on(e, i) && n > e->budget) n = e->budget;
        b += kvs_kv_scheme_bytes(&s->kv->layers[i].scheme, n);
    }
    return b;
}
