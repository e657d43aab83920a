/* Shared attention step of the decoder architectures (see attend.h). */
#include "arch/attend.h"

#include "kv/kv_chunk.h"

typedef struct rope_task {
    kvs_session *s;
    const kvs_rope *rope;
} rope_task;

static void rope_rows(void *ctx, int64_t lo, int64_t hi) {
    const rope_task *t = ctx;
    kvs_session *s = t->s;
    const kvs_hparams *hp = &s->model->hp;
    int64_t qd = (int64_t)hp->n_head * hp->head_dim_k, kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    kvs_rope_apply(t->rope, s->q + lo * qd, hi - lo, hp->n_head, hp->head_dim_k, s->pos + lo);
    kvs_rope_apply(t->rope, s->k + lo * kd, hi - lo, hp->n_head_kv, hp->head_dim_k, s->pos + lo);
}

/* Spans attended per dispatch (a step's sequences; more go in several). */
#define ATTEND_GROUP 64

/* A sequence's rows of the step: its chunk API calls around attention over
 * its view. The spans of a group are prepared, attended in one dispatch
 * (kvs_attn_run_many: each with the numbers it would get alone), then
 * committed. */
static kvs_status attend_spans(kvs_session *s, const kvs_span *spans, int n, int32_t layer, float scale) {
    const kvs_hparams *hp = &s->model->hp;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim_k, kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    const int64_t vd = (int64_t)hp->n_head_kv * hp->head_dim_v, od = (int64_t)hp->n_head * hp->head_dim_v;
    kvs_attn_args aa[ATTEND_GROUP] = {0};
    kvs_kv_rows rows[ATTEND_GROUP];
    kvs_status st;
    for (int i = 0; i < n; i++) {
        const kvs_span *sp = &spans[i];
        rows[i] = (kvs_kv_rows){.c = sp->kv, .q = s->q + sp->row0 * qd, .k = s->k + sp->row0 * kd,
                                .v = s->v + sp->row0 * vd};
    }
    if ((st = kvs_kv_layers_prepare(s->pool, layer, hp->n_head, rows, n)) != KVS_OK) return st;
    for (int i = 0; i < n; i++) {
        const kvs_span *sp = &spans[i];
        float *q = rows[i].q, *k = rows[i].k, *v = rows[i].v;
        const kvs_kv_view view = kvs_kv_layer_view(sp->kv, layer, k, v);
        aa[i] = (kvs_attn_args){
            .segs = view.segs, .n_segs = view.n_segs, .n_kv_heads = hp->n_head_kv,
            .head_dim_k = hp->head_dim_k, .head_dim_v = hp->head_dim_v,
            .q = q, .n_q = sp->n, .n_head = hp->n_head, .q_pos = s->pos + sp->row0,
            .window = view.window, .sinks = view.sinks,
            .scale = scale, .out = s->att + sp->row0 * od,
        };
    }
    if ((st = kvs_attn_run_many(s->attn, s->pool, aa, n)) != KVS_OK) return st;
    for (int i = 0; i < n; i++) {
        const kvs_span *sp = &spans[i];
        float *q = s->q + sp->row0 * qd, *k = s->k + sp->row0 * kd, *v = s->v + sp->row0 * vd;
        if ((st = kvs_kv_layer_commit(sp->kv, s->pool, layer, q, hp->n_head, k, v, s->att + sp->row0 * od, scale)) !=
            KVS_OK)
            return st;
    }
    return KVS_OK;
}

kvs_status kvs_arch_attend(kvs_session *s, int32_t layer, int64_t n, const kvs_rope *rope, float scale) {
    kvs_status st;
    rope_task rt = {.s = s, .rope = rope};
    if ((st = kvs_pool_for(s->pool, n, KVS_PAR_MIN_TOKENS, rope_rows, &rt)) != KVS_OK) return st;
    if (!s->n_spans) { /* outside a step (a direct call): the rows are one sequence, s->kv's */
        const kvs_span one = {.kv = s->kv, .row0 = 0, .n = n};
        return attend_spans(s, &one, 1, layer, scale);
    }
    for (int i = 0; i < s->n_spans; i += ATTEND_GROUP) {
        const int g = s->n_spans - i < ATTEND_GROUP ? s->n_spans - i : ATTEND_GROUP;
        if ((st = attend_spans(s, &s->spans[i], g, layer, scale)) != KVS_OK) return st;
    }
    return KVS_OK;
}
