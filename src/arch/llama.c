/* The llama family (llama, qwen2, qwen3): loading (hyper-parameters, per-layer
 * weights) and the forward pass: pre-norm decoder blocks with RMSNorm, RoPE,
 * grouped-query attention over the session's KV cache and a SwiGLU FFN;
 * qwen3 adds a per-head RMSNorm of q and k (weights of head_dim elements)
 * between the projections and RoPE, with head_dim set by key_length rather
 * than n_embd / n_head. Batched: n tokens go through each matmul together, and
 * the per-token stages (residual + norm, RoPE + cache store, SwiGLU) are
 * split across the thread pool for batches. The attention step (RoPE, cache
 * store, attention over the layer's scheme) is shared: arch/attend.c.
 * A retrofitted file (kvslim compress) adds latent layers, which attend
 * through src/retrofit/latent_attn.c, and an optional capture hook (for
 * calibration) sees each layer's pre-RoPE q/k/v; both live in the session's
 * llama_state and cost one NULL check when unused. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "arch/attend.h"
#include "arch/stages.h"
#include "model/loader.h"
#include "model/session.h"
#include "retrofit/retrofit.h"


/* Per-session state (s->ext). */
typedef struct llama_state {
    kvs_capture_fn capture;
    void *capture_ctx;
    kvs_retro_state *retro;  /* latent attention scratch; NULL without latent layers */
} llama_state;

static kvs_status llama_forward(kvs_session *s, const kvs_token *tokens, int64_t n, bool all_logits,
                             float *logits) {
    const kvs_model *m = s->model;
    const kvs_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim_k;
    const int64_t kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    const int64_t vd = (int64_t)hp->n_head_kv * hp->head_dim_v;
    kvs_status st;

    for (int64_t t = 0; t < n; t++) kvs_get_row(s->x + t * d, m->tok_embd.data, m->tok_embd.type, d, tokens[t]);
    /* s->up holds the pending residual delta (the previous FFN output) so
     * the add fuses into the next norm; NULL before the first layer */
    const float *pending = NULL;
    const llama_state *ls = s->ext;
    const kvs_retro *retro = m->ext;

    for (int32_t l = 0; l < hp->n_layer; l++) {
        const kvs_layer_weights *w = &m->layers[l];
        kvs_stage_add_norm(s, n, s->x, pending, s->xn, w->attn_norm, d, hp->norm_eps);
        kvs_mm_out qkv[3] = {
            {.w = &w->wq, .y = s->q, .y_stride = qd, .bias = w->bq},
            {.w = &w->wk, .y = s->k, .y_stride = kd, .bias = w->bk},
            {.w = &w->wv, .y = s->v, .y_stride = vd, .bias = w->bv},
        };
        if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, qkv, 3)) != KVS_OK) return st;
        if (w->q_norm) { /* qwen3: every head of every token, before RoPE (and before a capture sees them) */
            kvs_rmsnorm(s->q, s->q, w->q_norm, n * hp->n_head, hp->head_dim_k, hp->norm_eps);
            kvs_rmsnorm(s->k, s->k, w->k_norm, n * hp->n_head_kv, hp->head_dim_k, hp->norm_eps);
        }
        if (ls && ls->capture) ls->capture(ls->capture_ctx, l, n, s->pos, s->q, s->k, s->v, &hp->rope);
        const float scale = 1.0f / sqrtf((float)hp->head_dim_k);
        if (ls && ls->retro && kvs_retro_layer_latent(s, retro, l))
            st = kvs_retro_attend(s, retro, ls->retro, l, n, &hp->rope, scale);
        else
            st = kvs_arch_attend(s, l, n, &hp->rope, scale);
        if (st != KVS_OK) return st;

        kvs_mm_out o = {.w = &w->wo, .y = s->xn, .y_stride = d};
        if ((st = kvs_matmul_run(s->mm, s->pool, s->att, n, &o, 1)) != KVS_OK) return st;
        /* x += attention output; xn = ffn_norm(x). The norm writes xn in place
         * of the delta it reads: each row is read fully before it is written. */
        kvs_stage_add_norm(s, n, s->x, s->xn, s->xn, w->ffn_norm, d, hp->norm_eps);
        kvs_mm_out gu[2] = {
            {.w = &w->ffn_gate, .y = s->gate, .y_stride = hp->n_ff},
            {.w = &w->ffn_up, .y = s->up, .y_stride = hp->n_ff},
        };
        if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, gu, 2)) != KVS_OK) return st;
        kvs_stage_glu(s, n, s->gate, s->up, hp->n_ff, false);
        kvs_mm_out dn = {.w = &w->ffn_down, .y = s->up, .y_stride = d};
        if ((st = kvs_matmul_run(s->mm, s->pool, s->gate, n, &dn, 1)) != KVS_OK) return st;
        pending = s->up;
    }
    kvs_add(s->x, pending, n * d);

    if (logits) {
        int64_t rows;
        if ((st = kvs_stage_head(s, n, all_logits, logits, &rows)) != KVS_OK) return st;
    }
    return KVS_OK;
}

/* ---- loading ---------------------------------------------------------- */

static kvs_status load_family(kvs_loader *L, kvs_rope_mode mode, bool biases, bool qk_norm) {
    kvs_model *m = L->m;
    const kvs_hparams *hp = &m->hp;
    KVS_TRY(kvs_load_common_hparams(L));
    m->hp.rope.mode = mode;
    KVS_TRY(kvs_load_embeddings(L));
    m->layers = kvs_load_alloc(L, (size_t)hp->n_layer * sizeof *m->layers);
    if (!m->layers) return KVS_ERR_NOMEM;
    int64_t qd = (int64_t)hp->n_head * hp->head_dim_k, kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    int64_t vd = (int64_t)hp->n_head_kv * hp->head_dim_v, od = (int64_t)hp->n_head * hp->head_dim_v;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        kvs_layer_weights *w = &m->layers[i];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", i, s), n)
        KVS_TRY(kvs_load_vector(L, NAME("attn_norm.weight"), hp->n_embd, &w->attn_norm, true));
        KVS_TRY(kvs_load_vector(L, NAME("ffn_norm.weight"), hp->n_embd, &w->ffn_norm, true));
        KVS_TRY(kvs_load_matrix(L, NAME("attn_q.weight"), hp->n_embd, qd, &w->wq, true));
        KVS_TRY(kvs_load_matrix(L, NAME("attn_k.weight"), hp->n_embd, kd, &w->wk, true));
        KVS_TRY(kvs_load_matrix(L, NAME("attn_v.weight"), hp->n_embd, vd, &w->wv, true));
        KVS_TRY(kvs_load_matrix(L, NAME("attn_output.weight"), od, hp->n_embd, &w->wo, true));
        KVS_TRY(kvs_load_vector(L, NAME("attn_q.bias"), qd, &w->bq, biases));
        KVS_TRY(kvs_load_vector(L, NAME("attn_k.bias"), kd, &w->bk, biases));
        KVS_TRY(kvs_load_vector(L, NAME("attn_v.bias"), vd, &w->bv, biases));
        if (qk_norm) {
            KVS_TRY(kvs_load_vector(L, NAME("attn_q_norm.weight"), hp->head_dim_k, &w->q_norm, true));
            KVS_TRY(kvs_load_vector(L, NAME("attn_k_norm.weight"), hp->head_dim_k, &w->k_norm, true));
        }
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, &w->ffn_gate, true));
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, &w->ffn_up, true));
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, &w->ffn_down, true));
#undef NAME
    }
    const kvs_retro *retro;
    KVS_TRY(kvs_retro_load(L, &retro));
    m->ext = (void *)retro;
    return KVS_OK;
}

static void llama_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out) {
    kvs_retro_schemes(m, m->ext, kv_type, out);
}

static void llama_session_free(kvs_session *s) {
    llama_state *ls = s->ext;
    if (!ls) return;
    kvs_retro_state_free(ls->retro);
    kvs_free(ls);
    s->ext = NULL;
}

static kvs_status llama_session_init(kvs_session *s) {
    llama_state *ls = kvs_calloc(1, sizeof *ls);
    if (!ls) return kvs_fail(KVS_ERR_NOMEM, "session: out of memory");
    s->ext = ls;
    const kvs_retro *r = s->model->ext;
    if (r && r->mode != KVS_RETRO_NONE) return kvs_retro_state_new(s, r, &ls->retro);
    return KVS_OK;
}

static kvs_status llama_set_capture(kvs_session *s, kvs_capture_fn fn, void *ctx) {
    llama_state *ls = s->ext;
    ls->capture = fn;
    ls->capture_ctx = ctx;
    return KVS_OK;
}

static const kvs_retro *llama_retro(const kvs_model *m) { return m->ext; }

static kvs_status load_llama(kvs_loader *L) { return load_family(L, KVS_ROPE_NORM, false, false); }
static kvs_status load_qwen2(kvs_loader *L) { return load_family(L, KVS_ROPE_NEOX, true, false); }
/* qwen3: no QKV biases (llama.cpp's loader and converter: none), QK-norm */
static kvs_status load_qwen3(kvs_loader *L) { return load_family(L, KVS_ROPE_NEOX, false, true); }

const kvs_arch_ops kvs_arch_llama = {
    .name = "llama", .load = load_llama, .default_schemes = llama_schemes, .session_init = llama_session_init,
    .session_free = llama_session_free, .forward = llama_forward, .retro = llama_retro,
    .set_capture = llama_set_capture, .one_head_count = true,
};
const kvs_arch_ops kvs_arch_qwen2 = {
    .name = "qwen2", .load = load_qwen2, .default_schemes = llama_schemes, .session_init = llama_session_init,
    .session_free = llama_session_free, .forward = llama_forward, .retro = llama_retro,
    .set_capture = llama_set_capture, .one_head_count = true,
};
const kvs_arch_ops kvs_arch_qwen3 = {
    .name = "qwen3", .load = load_qwen3, .default_schemes = llama_schemes, .session_init = llama_session_init,
    .session_free = llama_session_free, .forward = llama_forward, .retro = llama_retro,
    .set_capture = llama_set_capture, .one_head_count = true,
};
