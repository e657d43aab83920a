/* Key centering: the model's mean post-RoPE key per layer (see key_center.h). */
#include "model/key_center.h"

#include <pthread.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/f16.h"
#include "model/session.h"

/* Plain prose of mixed register (narrative, numbers, instructions, a little
 * dialogue), written for this purpose. */
static const char KVS_KEY_CENTER_TEXT[] =
    "The ferry left the harbour at seven, an hour later than the timetable promised, because the fog had not "
    "lifted from the estuary until after six. Most of the passengers were regulars: farmers taking crates of "
    "apples to the market on the far bank, two nurses coming off a night shift, and a teacher who graded essays "
    "on her knee while the engine hummed below the deck. \"It will be calmer on the way back,\" the captain said, "
    "though nobody had asked him. The crossing takes about twenty-five minutes when the tide is with you and "
    "nearly forty when it is not.\n\n"
    "To make the bread that the bakery on the quay is known for, mix 500 grams of flour with 350 millilitres of "
    "warm water, 10 grams of salt and a little yeast. Knead the dough for ten minutes, let it rise for two hours, "
    "shape it into a loaf and bake it at 230 degrees until the crust is dark and sounds hollow when tapped. "
    "Leave it to cool before slicing; cutting it too early makes the crumb gummy.\n\n"
    "In the afternoon the town council met to discuss the new bridge. Supporters argued that it would cut the "
    "journey to the hospital from an hour to ten minutes and bring trade to the shops. Opponents worried about "
    "the cost, which had already risen from 12 million to 19 million, and about the herons that nest in the reeds "
    "under the planned span. After three hours of debate the vote was postponed until spring.";

typedef struct center_pass {
    double *sum;    /* (n_layer, kd) pre-RoPE keys summed */
    kvs_rope *rope; /* (n_layer) each layer's RoPE */
    int64_t kd;
    int64_t *count; /* (n_layer) keys summed */
} center_pass;

static void on_capture(void *ctx, int32_t layer, int64_t n, const int32_t *pos, const float *q, const float *k,
                       const float *v, const kvs_rope *rope) {
    center_pass *cp = ctx;
    cp->rope[layer] = *rope;
    double *s = cp->sum + (size_t)layer * (size_t)cp->kd;
    for (int64_t t = 0; t < n; t++) {
        if (pos[t] == 0) continue; /* the BOS key is an attention sink, far from the rest */
        for (int64_t e = 0; e < cp->kd; e++) s[e] += k[t * cp->kd + e];
        cp->count[layer]++;
    }
}

/* Offsets for one context length, kept for the model's lifetime. */
typedef struct center_ctx {
    uint32_t n_ctx;
    float *offset; /* (n_layer, kd) */
    struct center_ctx *next;
} center_ctx;

struct kvs_key_center {
    float *mean;    /* (n_layer, kd) pre-RoPE mean keys */
    kvs_rope *rope; /* (n_layer) */
    center_ctx *ctxs;
};

void kvs_key_center_free(kvs_key_center *kc) {
    if (!kc) return;
    for (center_ctx *c = kc->ctxs, *nx; c; c = nx) { nx = c->next; kvs_free(c->offset); kvs_free(c); }
    kvs_free(kc->mean);
    kvs_free(kc->rope);
    kvs_free(kc);
}

bool kvs_key_center_available(const kvs_model *m) { return m && m->ops->set_capture && m->tok; }

/* The pre-RoPE mean keys over the built-in text. */
static kvs_status measure(const kvs_model *m, int n_threads, kvs_key_center **out) {
    const kvs_hparams *hp = &m->hp;
    const int64_t kd = (int64_t)hp->n_head_kv * hp->head_dim_k, L = hp->n_layer;
    kvs_token toks[1024];
    size_t n = 0;
    KVS_TRY(kvs_tokenize(m, KVS_KEY_CENTER_TEXT, sizeof KVS_KEY_CENTER_TEXT - 1, -1, false, toks,
                         sizeof toks / sizeof *toks, &n));
    if (n > sizeof toks / sizeof *toks) n = sizeof toks / sizeof *toks;
    if (hp->n_ctx_train > 0 && n > (size_t)hp->n_ctx_train) n = (size_t)hp->n_ctx_train;
    if (n < 16) return kvs_fail(KVS_ERR_INTERNAL, "key centering: the built-in text is only %zu tokens", n);
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = (uint32_t)n;
    p.n_batch = (uint32_t)n;
    p.n_threads = n_threads;
    p.kv_type = KVS_KV_F32;
    kvs_session *s = NULL;
    center_pass cp = {.kd = kd};
    cp.sum = kvs_calloc((size_t)(L * kd), sizeof *cp.sum);
    cp.rope = kvs_calloc((size_t)L, sizeof *cp.rope);
    cp.count = kvs_calloc((size_t)L, sizeof *cp.count);
    kvs_key_center *kc = kvs_calloc(1, sizeof *kc);
    if (kc) kc->mean = kvs_malloc(sizeof(float) * (size_t)(L * kd));
    kvs_status st = cp.sum && cp.rope && cp.count && kc && kc->mean ? KVS_OK
                                                                    : kvs_fail(KVS_ERR_NOMEM, "key centering: out of memory");
    if (st == KVS_OK) st = kvs_session_new(m, &p, &s);
    if (st == KVS_OK) st = m->ops->set_capture(s, on_capture, &cp);
    if (st == KVS_OK) st = kvs_decode(s, toks, n, false, NULL);
    for (int64_t l = 0; st == KVS_OK && l < L; l++) {
        if (cp.count[l] == 0) { st = kvs_fail(KVS_ERR_INTERNAL, "key centering: layer %lld saw no keys", (long long)l); break; }
        for (int64_t e = 0; e < kd; e++) kc->mean[l * kd + e] = (float)(cp.sum[l * kd + e] / (double)cp.count[l]);
    }
    kvs_session_free(s);
    kvs_free(cp.sum);
    kvs_free(cp.count);
    if (kc) kc->rope = cp.rope;
    else kvs_free(cp.rope);
    if (st != KVS_OK) { kvs_key_center_free(kc); return st; }
    *out = kc;
    return KVS_OK;
}

/* The best constant for keys at positions 0 .. C-1: RoPE turns a constant
 * pre-RoPE part mu of rotary pair i by p * theta_i, so the mean post-RoPE
 * key over the positions is [[A_i, -B_i], [B_i, A_i]] mu_i with A_i, B_i
 * the mean cos and sin; a pair that turns many times over the context
 * averages out, a slow one keeps its mean. A and B come from the layer's
 * own kvs_rope_apply on a probe (1, 0) in every pair, so every RoPE
 * variant (NORM/NEOX pairs, partial rotary dims, frequency factors, YaRN)
 * is covered by the code that rotates the keys. ab: (2, head_dim) */
static kvs_status turn_means(const kvs_rope *r, int32_t dk, uint32_t C, double *ab) {
    const int32_t half = r->n_dims / 2;
    float *buf = kvs_calloc((size_t)C * (size_t)dk, sizeof *buf);
    int32_t *pos = kvs_malloc(sizeof *pos * C);
    if (!buf || !pos) { kvs_free(buf); kvs_free(pos); return kvs_fail(KVS_ERR_NOMEM, "key centering: out of memory"); }
    for (uint32_t t = 0; t < C; t++) {
        pos[t] = (int32_t)t;
        for (int32_t i = 0; i < half; i++) buf[(size_t)t * dk + (r->mode == KVS_ROPE_NORM ? 2 * i : i)] = 1.0f;
    }
    kvs_rope_apply(r, buf, C, 1, dk, pos);
    for (int32_t i = 0; i < half; i++) {
        const int32_t a = r->mode == KVS_ROPE_NORM ? 2 * i : i, b = r->mode == KVS_ROPE_NORM ? 2 * i + 1 : i + half;
        double sa = 0, sb = 0;
        for (uint32_t t = 0; t < C; t++) { sa += buf[(size_t)t * dk + a]; sb += buf[(size_t)t * dk + b]; }
        ab[i] = sa / C;
        ab[dk + i] = sb / C;
    }
    kvs_free(buf);
    kvs_free(pos);
    return KVS_OK;
}

static kvs_status offsets_for(const kvs_model *m, const kvs_key_center *kc, uint32_t C, float **out) {
    const kvs_hparams *hp = &m->hp;
    const int32_t dk = hp->head_dim_k, nkv = hp->n_head_kv, L = hp->n_layer;
    const int64_t kd = (int64_t)nkv * dk;
    float *off = kvs_malloc(sizeof(float) * (size_t)(L * kd));
    double *ab = kvs_malloc(sizeof(double) * 2 * (size_t)dk);
    kvs_status st = off && ab ? KVS_OK : kvs_fail(KVS_ERR_NOMEM, "key centering: out of memory");
    for (int32_t l = 0; st == KVS_OK && l < L; l++) {
        const kvs_rope *r = &kc->rope[l];
        if (l == 0 || memcmp(r, &kc->rope[l - 1], sizeof *r)) st = turn_means(r, dk, C, ab);
        if (st != KVS_OK) break;
        const int32_t half = r->n_dims / 2;
        for (int32_t h = 0; h < nkv; h++) {
            const float *mu = kc->mean + l * kd + (int64_t)h * dk;
            float *o = off + l * kd + (int64_t)h * dk;
            for (int32_t e = 0; e < dk; e++) o[e] = mu[e]; /* dims past the rotary ones do not turn */
            for (int32_t i = 0; i < half; i++) {
                const int32_t a = r->mode == KVS_ROPE_NORM ? 2 * i : i, b = r->mode == KVS_ROPE_NORM ? 2 * i + 1 : i + half;
                o[a] = (float)(ab[i] * mu[a] - ab[dk + i] * mu[b]);
                o[b] = (float)(ab[dk + i] * mu[a] + ab[i] * mu[b]);
            }
            for (int32_t e = 0; e < dk; e++) o[e] = kvs_f16_to_f32(kvs_f32_to_f16(o[e]));
        }
    }
    kvs_free(ab);
    if (st != KVS_OK) { kvs_free(off); return st; }
    *out = off;
    return KVS_OK;
}

static pthread_mutex_t g_center_lock = PTHREAD_MUTEX_INITIALIZER;

kvs_status kvs_key_center_offsets(const kvs_model *m, uint32_t n_ctx, int n_threads, const float **out) {
    *out = NULL;
    if (!kvs_key_center_available(m))
        return kvs_fail(KVS_ERR_UNSUPPORTED, "key centering: architecture '%s' has no capture hook", m ? m->arch_name : "?");
    if (n_ctx == 0) return kvs_fail(KVS_ERR_INVALID_ARG, "key centering: context 0");
    kvs_model *mm = (kvs_model *)m; /* the one lazily filled field (model.h) */
    kvs_status st = KVS_OK;
    pthread_mutex_lock(&g_center_lock);
    if (!mm->key_center) st = measure(m, n_threads, &mm->key_center);
    center_ctx *c = NULL;
    if (st == KVS_OK) {
        for (c = mm->key_center->ctxs; c && c->n_ctx != n_ctx; c = c->next) {}
        if (!c) {
            float *off = NULL;
            if ((st = offsets_for(m, mm->key_center, n_ctx, &off)) == KVS_OK && !(c = kvs_calloc(1, sizeof *c))) {
                kvs_free(off);
                st = kvs_fail(KVS_ERR_NOMEM, "key centering: out of memory");
            }
            if (st == KVS_OK) {
                c->n_ctx = n_ctx;
                c->offset = off;
                c->next = mm->key_center->ctxs;
                mm->key_center->ctxs = c;
            }
        }
    }
    pthread_mutex_unlock(&g_center_lock);
    if (st == KVS_OK) *out = c->offset;
    return st;
}
