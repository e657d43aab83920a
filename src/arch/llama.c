/* Forward pass of the llama family (llama, qwen2): pre-norm decoder blocks
 * with RMSNorm, RoPE, grouped-query attention over the session's KV cache
 * and a SwiGLU FFN. Batched: n tokens go through each matmul together.
 * Attention and cache layout stay behind kv/ and attn/. */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "model/session.h"

kvs_status kvs_llama_forward(kvs_session *s, const kvs_token *tokens, int64_t n, bool all_logits,
                             float *logits) {
    const kvs_model *m = s->model;
    const kvs_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim_k;
    const int64_t kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    const int64_t vd = (int64_t)hp->n_head_kv * hp->head_dim_v;
    kvs_status st;

    for (int64_t t = 0; t < n; t++) {
        s->pos[t] = (int32_t)(s->n_past + t);
        kvs_get_row(s->x + t * d, m->tok_embd.data, m->tok_embd.type, d, tokens[t]);
    }

    for (int32_t l = 0; l < hp->n_layer; l++) {
        const kvs_layer_weights *w = &m->layers[l];
        kvs_rmsnorm(s->xn, s->x, w->attn_norm, n, d, hp->norm_eps);
        kvs_mm_out qkv[3] = {
            {.w = &w->wq, .y = s->q, .y_stride = qd, .bias = w->bq},
            {.w = &w->wk, .y = s->k, .y_stride = kd, .bias = w->bk},
            {.w = &w->wv, .y = s->v, .y_stride = vd, .bias = w->bv},
        };
        if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, qkv, 3)) != KVS_OK) return st;
        kvs_rope_apply(&hp->rope, s->q, n, hp->n_head, hp->head_dim_k, s->pos);
        kvs_rope_apply(&hp->rope, s->k, n, hp->n_head_kv, hp->head_dim_k, s->pos);
        if ((st = kvs_kv_cache_store(s->kv, l, s->n_past, n, s->k, s->v)) != KVS_OK) return st;

        kvs_attn_args aa = {
            .kv = &s->kv->layers[l], .q = s->q, .n_q = n, .n_head = hp->n_head, .q_pos = s->pos,
            .n_kv = s->n_past + (uint32_t)n, .window = 0,
            .scale = 1.0f / sqrtf((float)hp->head_dim_k), .out = s->att,
        };
        if ((st = kvs_attn_run(s->attn, s->pool, &aa)) != KVS_OK) return st;

        kvs_mm_out o = {.w = &w->wo, .y = s->xn, .y_stride = d};
        if ((st = kvs_matmul_run(s->mm, s->pool, s->att, n, &o, 1)) != KVS_OK) return st;
        kvs_add(s->x, s->xn, n * d);

        kvs_rmsnorm(s->xn, s->x, w->ffn_norm, n, d, hp->norm_eps);
        kvs_mm_out gu[2] = {
            {.w = &w->ffn_gate, .y = s->gate, .y_stride = hp->n_ff},
            {.w = &w->ffn_up, .y = s->up, .y_stride = hp->n_ff},
        };
        if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, gu, 2)) != KVS_OK) return st;
        kvs_swiglu(s->gate, s->gate, s->up, n * hp->n_ff);
        kvs_mm_out dn = {.w = &w->ffn_down, .y = s->xn, .y_stride = d};
        if ((st = kvs_matmul_run(s->mm, s->pool, s->gate, n, &dn, 1)) != KVS_OK) return st;
        kvs_add(s->x, s->xn, n * d);
    }

    if (logits) {
        int64_t first = all_logits ? 0 : n - 1, rows = n - first;
        kvs_rmsnorm(s->xn, s->x + first * d, m->output_norm, rows, d, hp->norm_eps);
        kvs_mm_out lo = {.w = &m->output, .y = logits, .y_stride = hp->n_vocab};
        if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, rows, &lo, 1)) != KVS_OK) return st;
    }
    s->n_past += (uint32_t)n;
    return KVS_OK;
}
