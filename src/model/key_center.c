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
    const kvs_model *m;
    double *sum;   /* (n_layer, kd) */
    float *row;    /* (kd) one key, RoPE applied */
    int64_t kd;
    int64_t *count; /* (n_layer) keys summed */
} center_pass;

static void on_capture(void *ctx, int32_t layer, int64_t n, const int32_t *pos, const float *q, const float *k,
                       const float *v, const kvs_rope *rope) {
    center_pass *cp = ctx;
    const kvs_hparams *hp = &cp->m->hp;
    for (int64_t t = 0; t < n; t++) {
        if (pos[t] == 0) continue; /* the BOS key is an attention sink, far from the rest */
        memcpy(cp->row, k + t * cp->kd, sizeof(float) * (size_t)cp->kd);
        kvs_rope_apply(rope, cp->row, 1, hp->n_head_kv, hp->head_dim_k, &pos[t]);
        double *s = cp->sum + (size_t)layer * (size_t)cp->kd;
        for (int64_t e = 0; e < cp->kd; e++) s[e] += cp->row[e];
        cp->count[layer]++;
    }
}

bool kvs_key_center_available(const kvs_model *m) { return m && m->ops->set_capture && m->tok; }

static kvs_status measure(const kvs_model *m, int n_threads, float **out) {
    const kvs_hparams *hp = &m->hp;
    const int64_t kd = (int64_t)hp->n_head_kv * hp->head_dim_k, L = hp->n_layer;
    kvs_token toks[1024];
    size_t n = 0;
    KVS_TRY(kvs_tokenize(m, KVS_KEY_CENTER_TEXT, sizeof KVS_KEY_CENTER_TEXT - 1, -1, false, toks,
                         sizeof toks / sizeof *toks, &n));
    if (n > sizeof toks / sizeof *toks) n = sizeof toks / sizeof *toks;
    if (n < 16) return kvs_fail(KVS_ERR_INTERNAL, "key centering: the built-in text is only %zu tokens", n);
    if (hp->n_ctx_train > 0 && n > (size_t)hp->n_ctx_train) n = (size_t)hp->n_ctx_train;
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = (uint32_t)n;
    p.n_batch = (uint32_t)n;
    p.n_threads = n_threads;
    p.kv_type = KVS_KV_F32;
    kvs_session *s = NULL;
    center_pass cp = {.m = m, .kd = kd};
    cp.sum = kvs_calloc((size_t)(L * kd), sizeof *cp.sum);
    cp.row = kvs_malloc(sizeof(float) * (size_t)kd);
    cp.count = kvs_calloc((size_t)L, sizeof *cp.count);
    float *mean = kvs_malloc(sizeof(float) * (size_t)(L * kd));
    kvs_status st = cp.sum && cp.row && cp.count && mean ? KVS_OK : kvs_fail(KVS_ERR_NOMEM, "key centering: out of memory");
    if (st == KVS_OK) st = kvs_session_new(m, &p, &s);
    if (st == KVS_OK) st = m->ops->set_capture(s, on_capture, &cp);
    if (st == KVS_OK) st = kvs_decode(s, toks, n, false, NULL);
    for (int64_t l = 0; st == KVS_OK && l < L; l++) {
        if (cp.count[l] == 0) { st = kvs_fail(KVS_ERR_INTERNAL, "key centering: layer %lld saw no keys", (long long)l); break; }
        for (int64_t e = 0; e < kd; e++)
            mean[l * kd + e] = kvs_f16_to_f32(kvs_f32_to_f16((float)(cp.sum[l * kd + e] / (double)cp.count[l])));
    }
    kvs_session_free(s);
    kvs_free(cp.sum);
    kvs_free(cp.row);
    kvs_free(cp.count);
    if (st != KVS_OK) { kvs_free(mean); return st; }
    *out = mean;
    return KVS_OK;
}

static pthread_mutex_t g_center_lock = PTHREAD_MUTEX_INITIALIZER;

kvs_status kvs_key_center_means(const kvs_model *m, int n_threads, const float **out) {
    *out = NULL;
    if (!kvs_key_center_available(m))
        return kvs_fail(KVS_ERR_UNSUPPORTED, "key centering: architecture '%s' has no capture hook", m ? m->arch_name : "?");
    kvs_model *mm = (kvs_model *)m; /* the one lazily filled field (model.h) */
    kvs_status st = KVS_OK;
    pthread_mutex_lock(&g_center_lock);
    if (!mm->key_means) {
        float *means = NULL;
        st = measure(m, n_threads, &means);
        if (st == KVS_OK) mm->key_means = means;
    }
    pthread_mutex_unlock(&g_center_lock);
    *out = m->key_means;
    return st;
}
