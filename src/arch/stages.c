/* Shared per-token stages of the forward passes (see stages.h). */
#include "arch/stages.h"

#include "arch/attend.h"

typedef struct norm_task {
    float *x; const float *delta; float *y; const float *w;
    int64_t d; float eps;
} norm_task;

static void norm_rows(void *ctx, int64_t lo, int64_t hi) {
    const norm_task *t = ctx;
    if (t->delta) kvs_add(t->x + lo * t->d, t->delta + lo * t->d, (hi - lo) * t->d);
    kvs_rmsnorm(t->y + lo * t->d, t->x + lo * t->d, t->w, hi - lo, t->d, t->eps);
}

void kvs_stage_add_norm(kvs_session *s, int64_t n, float *x, const float *delta, float *y, const float *w,
                        int64_t d, float eps) {
    norm_task t = {x, delta, y, w, d, eps};
    kvs_pool_for(s->pool, n, KVS_PAR_MIN_TOKENS, norm_rows, &t);
}

typedef struct glu_task { float *gate; const float *up; int64_t n_ff; bool gelu; } glu_task;

static void glu_rows(void *ctx, int64_t lo, int64_t hi) {
    const glu_task *t = ctx;
    float *g = t->gate + lo * t->n_ff;
    const float *u = t->up + lo * t->n_ff;
    if (t->gelu) kvs_geglu(g, g, u, (hi - lo) * t->n_ff);
    else kvs_swiglu(g, g, u, (hi - lo) * t->n_ff);
}

void kvs_stage_glu(kvs_session *s, int64_t n, float *gate, const float *up, int64_t n_ff, bool gelu) {
    glu_task t = {gate, up, n_ff, gelu};
    kvs_pool_for(s->pool, n, KVS_PAR_MIN_TOKENS, glu_rows, &t);
}

kvs_status kvs_stage_head(kvs_session *s, int64_t n, bool all_logits, float *logits, int64_t *rows) {
    const kvs_model *m = s->model;
    const kvs_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd;
    if (all_logits) {
        *rows = n;
        kvs_rmsnorm(s->xn, s->x, m->output_norm, n, d, hp->norm_eps);
    } else {
        *rows = s->n_out;
        for (int64_t i = 0; i < s->n_out; i++)
            kvs_rmsnorm(s->xn + i * d, s->x + s->out_rows[i] * d, m->output_norm, 1, d, hp->norm_eps);
    }
    kvs_mm_out lo = {.w = &m->output, .y = logits, .y_stride = hp->n_vocab};
    return kvs_matmul_run(s->mm, s->pool, s->xn, *rows, &lo, 1);
}
