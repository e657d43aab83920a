/* The Gemma family: Gemma 3 (gemma3) and Gemma 4 E2B/E4B-style text decoders
 * (gemma4). Loading (hyper-parameters, the sliding/global layer pattern,
 * per-layer weights) and the forward pass:
 *   x = token_embd[tok] * sqrt(n_embd)
 *   per layer: h = rmsnorm(x) * attn_norm; q, k, v = h Wq, h Wk, h Wv;
 *     q, k: per-head RMSNorm with gains (QK-norm); gemma4 also rms-normalizes
 *     v without a gain; RoPE (NeoX pairs) with the local base on sliding
 *     layers and the global base (+ rope_freqs on gemma4) on global ones;
 *     attention over the layer's KV scheme (a window ring on sliding layers,
 *     another layer's cache on gemma4's shared layers);
 *     x += rmsnorm(o Wo) * post_attention_norm;
 *     x += rmsnorm(GeGLU FFN(rmsnorm(x) * ffn_norm)) * post_ffw_norm;
 *     gemma4: x += rmsnorm((gelu(x W_inp_gate) * ple[l]) W_proj) * post_norm
 *     (per-layer embeddings), then x *= layer_output_scale;
 *   logits = rmsnorm(x) * output_norm, times the (tied) embedding, with the
 *   final soft-cap when the GGUF declares one.
 * Sliding layers get a window-sized cache from default_schemes; gemma4's last
 * shared_kv_layers layers read the cache of the last non-shared layer of the
 * same attention type and allocate nothing. A Gemma 3 file retrofitted by
 * `kvslim compress` (docs/compress.md) has latent global layers: they attend
 * through src/retrofit/latent_attn.c; the calibration hook sees q/k/v after
 * the QK-norm, before RoPE. Facts from the Gemma 3 report,
 * HF transformers' Gemma3/Gemma3n/Gemma4 modelling and llama.cpp (GGUF names
 * and keys); see docs/arch-gemma.md. */
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

#define PAR_MIN_TOKENS KVS_PAR_MIN_TOKENS
#define GEMMA3_SWA_PERIOD 6 /* llama.cpp: every 6th layer global when the GGUF has no pattern */

typedef struct gemma_layer {
    const float *attn_norm, *q_norm, *k_norm, *post_attn_norm, *ffn_norm, *post_ffw_norm;
    kvs_weight wq, wk, wv, wo, ffn_gate, ffn_up, ffn_down;
    bool swa;            /* sliding-window (local) layer */
    bool has_kv;         /* computes and stores its own K/V (false: shared) */
    bool v_from_k;       /* gemma4 without attn_v: V is the (un-normed) K projection */
    int32_t kv_source;   /* layer whose cache it reads (itself unless shared) */
    /* gemma4 per-layer embeddings */
    kvs_weight ple_gate, ple_proj;
    const float *ple_post_norm;
    float out_scale;     /* layer_output_scale (1 = none) */
} gemma_layer;

typedef struct gemma_model {
    gemma_layer *layers;
    bool gemma4;
    uint32_t window;
    kvs_rope rope_local, rope_global;
    float attn_scale, softcap;
    int32_t n_ple;               /* per-layer embedding width (0 = none) */
    int32_t kv_from;             /* first shared layer (n_layer = none) */
    kvs_weight ple_embd, ple_model_proj;
    const float *ple_proj_norm;
    const kvs_retro *retro;      /* kvslim compress projections, or NULL */
} gemma_model;

/* Per-session scratch for per-layer embeddings. */
typedef struct gemma_session {
    float *ple;      /* (n_batch, n_layer * n_ple) per-layer inputs */
    float *ple_tok;  /* (n_layer * n_ple) one token's embedding row */
    float *ple_g;    /* (n_batch, n_ple) gate activations */
    kvs_capture_fn capture;      /* calibration hook (retrofit), or NULL */
    void *capture_ctx;
    kvs_retro_state *retro;      /* latent attention scratch, or NULL */
} gemma_session;

/* ---- per-token stages -------------------------------------------------- */

/* For token rows [lo, hi): if delta: delta = rmsnorm(delta) * post,
 * x += delta; then x *= scale (if != 1); then if next: y = rmsnorm(x) * next. */
typedef struct res_task {
    float *x, *delta, *y;
    const float *post, *next;
    float scale;
    int64_t d;
    float eps;
} res_task;

static void res_rows(void *ctx, int64_t lo, int64_t hi) {
    const res_task *t = ctx;
    const int64_t d = t->d, n = hi - lo;
    float *x = t->x + lo * d;
    if (t->delta) {
        float *dl = t->delta + lo * d;
        kvs_rmsnorm(dl, dl, t->post, n, d, t->eps);
        kvs_add(x, dl, n * d);
    }
    if (t->scale != 1.0f) for (int64_t i = 0; i < n * d; i++) x[i] *= t->scale;
    if (t->next) kvs_rmsnorm(t->y + lo * d, x, t->next, n, d, t->eps);
}

static void res_run(kvs_session *s, int64_t n, float *delta, const float *post, float scale, float *y,
                    const float *next) {
    res_task t = {s->x, delta, y, post, next, scale, s->model->hp.n_embd, s->model->hp.norm_eps};
    kvs_pool_for(s->pool, n, PAR_MIN_TOKENS, res_rows, &t);
}

/* QK-norm (and gemma4's gain-free V norm) per head, rows [lo, hi). */
typedef struct qkv_norm_task {
    kvs_session *s; const gemma_layer *w; bool v_norm;
} qkv_norm_task;

static void qkv_norm_rows(void *ctx, int64_t lo, int64_t hi) {
    const qkv_norm_task *t = ctx;
    kvs_session *s = t->s;
    const kvs_hparams *hp = &s->model->hp;
    const int64_t dk = hp->head_dim_k, dv = hp->head_dim_v, n = hi - lo;
    const int64_t qd = hp->n_head * dk, kd = hp->n_head_kv * dk, vd = hp->n_head_kv * dv;
    float *q = s->q + lo * qd;
    kvs_rmsnorm(q, q, t->w->q_norm, n * hp->n_head, dk, hp->norm_eps);
    if (!t->w->has_kv) return;
    float *k = s->k + lo * kd, *v = s->v + lo * vd;
    if (t->w->v_from_k) memcpy(v, k, sizeof(float) * (size_t)(n * kd));
    kvs_rmsnorm(k, k, t->w->k_norm, n * hp->n_head_kv, dk, hp->norm_eps);
    if (t->v_norm) kvs_rmsnorm(v, v, NULL, n * hp->n_head_kv, dv, hp->norm_eps);
}

/* gemma4 per-layer inputs for the chunk: ple[t] = (rmsnorm(x[t] Wp / sqrt(d))
 * * proj_norm + ple_embd[tok] * sqrt(n_ple)) / sqrt(2), per layer slice; x is
 * the scaled token embedding. */
static kvs_status ple_inputs(kvs_session *s, const kvs_token *tokens, int64_t n) {
    const kvs_model *m = s->model;
    const gemma_model *g = m->ext;
    gemma_session *gs = s->ext;
    const int64_t P = g->n_ple, L = m->hp.n_layer, W = P * L;
    kvs_mm_out o = {.w = &g->ple_model_proj, .y = gs->ple, .y_stride = W};
    kvs_status st = kvs_matmul_run(s->mm, s->pool, s->x, n, &o, 1);
    if (st != KVS_OK) return st;
    const float proj_scale = 1.0f / sqrtf((float)m->hp.n_embd), tok_scale = sqrtf((float)P);
    const float mix = 1.0f / sqrtf(2.0f);
    for (int64_t t = 0; t < n; t++) {
        float *row = gs->ple + t * W;
        for (int64_t i = 0; i < W; i++) row[i] *= proj_scale;
        kvs_rmsnorm(row, row, g->ple_proj_norm, L, P, m->hp.norm_eps);
        kvs_get_row(gs->ple_tok, g->ple_embd.data, g->ple_embd.type, W, tokens[t]);
        for (int64_t i = 0; i < W; i++) row[i] = (row[i] + gs->ple_tok[i] * tok_scale) * mix;
    }
    return KVS_OK;
}

/* gemma4: x += rmsnorm((gelu(x W_gate) * ple[l]) W_proj) * post_norm. */
static kvs_status ple_apply(kvs_session *s, int32_t l, int64_t n) {
    const kvs_model *m = s->model;
    const gemma_model *g = m->ext;
    const gemma_layer *w = &g->layers[l];
    gemma_session *gs = s->ext;
    const int64_t P = g->n_ple, W = P * m->hp.n_layer;
    kvs_mm_out o = {.w = &w->ple_gate, .y = gs->ple_g, .y_stride = P};
    kvs_status st = kvs_matmul_run(s->mm, s->pool, s->x, n, &o, 1);
    if (st != KVS_OK) return st;
    for (int64_t t = 0; t < n; t++) kvs_geglu(gs->ple_g + t * P, gs->ple_g + t * P, gs->ple + t * W + l * P, P);
    kvs_mm_out p = {.w = &w->ple_proj, .y = s->up, .y_stride = m->hp.n_embd};
    if ((st = kvs_matmul_run(s->mm, s->pool, gs->ple_g, n, &p, 1)) != KVS_OK) return st;
    res_run(s, n, s->up, w->ple_post_norm, 1.0f, NULL, NULL);
    return KVS_OK;
}

/* ---- forward ----------------------------------------------------------- */

static kvs_status gemma_forward(kvs_session *s, const kvs_token *tokens, int64_t n, bool all_logits, float *logits) {
    const kvs_model *m = s->model;
    const kvs_hparams *hp = &m->hp;
    const gemma_model *g = m->ext;
    const int64_t d = hp->n_embd;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim_k, kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    const int64_t vd = (int64_t)hp->n_head_kv * hp->head_dim_v;
    const float emb_scale = sqrtf((float)d);
    kvs_status st;

    for (int64_t t = 0; t < n; t++) {
        float *xr = s->x + t * d;
        kvs_get_row(xr, m->tok_embd.data, m->tok_embd.type, d, tokens[t]);
        for (int64_t i = 0; i < d; i++) xr[i] *= emb_scale;
    }
    if (g->n_ple && (st = ple_inputs(s, tokens, n)) != KVS_OK) return st;

    for (int32_t l = 0; l < hp->n_layer; l++) {
        const gemma_layer *w = &g->layers[l];
        res_run(s, n, NULL, NULL, 1.0f, s->xn, w->attn_norm);
        kvs_mm_out qkv[3] = {
            {.w = &w->wq, .y = s->q, .y_stride = qd},
            {.w = &w->wk, .y = s->k, .y_stride = kd},
            {.w = &w->wv, .y = s->v, .y_stride = vd},
        };
        int n_out = !w->has_kv ? 1 : w->v_from_k ? 2 : 3;
        if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, qkv, n_out)) != KVS_OK) return st;
        qkv_norm_task nt = {s, w, g->gemma4};
        kvs_pool_for(s->pool, n, PAR_MIN_TOKENS, qkv_norm_rows, &nt);
        const kvs_rope *rope = w->swa ? &g->rope_local : &g->rope_global;
        const gemma_session *gs = s->ext;
        if (gs && gs->capture) gs->capture(gs->capture_ctx, l, n, s->pos, s->q, s->k, s->v, rope);
        if (gs && gs->retro && kvs_retro_layer_latent(s, g->retro, l))
            st = kvs_retro_attend(s, g->retro, gs->retro, l, n, rope, g->attn_scale);
        else
            st = kvs_arch_attend(s, l, n, rope, g->attn_scale);
        if (st != KVS_OK) return st;

        kvs_mm_out o = {.w = &w->wo, .y = s->xn, .y_stride = d};
        if ((st = kvs_matmul_run(s->mm, s->pool, s->att, n, &o, 1)) != KVS_OK) return st;
        /* x += rmsnorm(o) * post_attention_norm; xn = rmsnorm(x) * ffn_norm
         * (xn is both the delta and the next norm's output: row-wise safe) */
        res_run(s, n, s->xn, w->post_attn_norm, 1.0f, s->xn, w->ffn_norm);
        kvs_mm_out gu[2] = {
            {.w = &w->ffn_gate, .y = s->gate, .y_stride = hp->n_ff},
            {.w = &w->ffn_up, .y = s->up, .y_stride = hp->n_ff},
        };
        if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, gu, 2)) != KVS_OK) return st;
        kvs_stage_glu(s, n, s->gate, s->up, hp->n_ff, true);
        kvs_mm_out dn = {.w = &w->ffn_down, .y = s->up, .y_stride = d};
        if ((st = kvs_matmul_run(s->mm, s->pool, s->gate, n, &dn, 1)) != KVS_OK) return st;
        res_run(s, n, s->up, w->post_ffw_norm, g->n_ple ? 1.0f : w->out_scale, NULL, NULL);
        if (g->n_ple) {
            if ((st = ple_apply(s, l, n)) != KVS_OK) return st;
            if (w->out_scale != 1.0f) res_run(s, n, NULL, NULL, w->out_scale, NULL, NULL);
        }
    }

    if (logits) {
        int64_t rows;
        if ((st = kvs_stage_head(s, n, all_logits, logits, &rows)) != KVS_OK) return st;
        if (g->softcap > 0.0f) {
            const float c = g->softcap;
            for (int64_t i = 0; i < rows * hp->n_vocab; i++) logits[i] = c * tanhf(logits[i] / c);
        }
    }
    return KVS_OK;
}

/* ---- sessions ----------------------------------------------------------- */

static kvs_status gemma_session_init(kvs_session *s) {
    const gemma_model *g = s->model->ext;
    gemma_session *gs = kvs_calloc(1, sizeof *gs);
    if (!gs) return kvs_fail(KVS_ERR_NOMEM, "session: out of memory");
    s->ext = gs;
    if (g->retro && g->retro->mode != KVS_RETRO_NONE) KVS_TRY(kvs_retro_state_new(s, g->retro, &gs->retro));
    if (!g->n_ple) return KVS_OK;
    size_t B = s->params.n_batch, W = (size_t)g->n_ple * (size_t)s->model->hp.n_layer;
    gs->ple = kvs_malloc(sizeof(float) * B * W);
    gs->ple_tok = kvs_malloc(sizeof(float) * W);
    gs->ple_g = kvs_malloc(sizeof(float) * B * (size_t)g->n_ple);
    if (!gs->ple || !gs->ple_tok || !gs->ple_g) return kvs_fail(KVS_ERR_NOMEM, "session: out of memory");
    return KVS_OK;
}

static void gemma_session_free(kvs_session *s) {
    gemma_session *gs = s->ext;
    if (!gs) return;
    kvs_free(gs->ple);
    kvs_free(gs->ple_tok);
    kvs_free(gs->ple_g);
    kvs_retro_state_free(gs->retro);
    kvs_free(gs);
    s->ext = NULL;
}

static kvs_status gemma_set_capture(kvs_session *s, kvs_capture_fn fn, void *ctx) {
    gemma_session *gs = s->ext;
    gs->capture = fn;
    gs->capture_ctx = ctx;
    return KVS_OK;
}

static const kvs_retro *gemma_retro(const kvs_model *m) {
    const gemma_model *g = m->ext;
    return g ? g->retro : NULL;
}

/* Sliding layers hold a window-sized ring; gemma4's shared layers read their
 * source's cache (ring or full) and hold nothing. */
static void gemma_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out) {
    const gemma_model *g = m->ext;
    kvs_model_full_schemes(m, kv_type, out);
    for (int32_t i = 0; i < m->hp.n_layer; i++) {
        const gemma_layer *w = &g->layers[i];
        if (w->swa) out[i].window = g->window;
        if (!w->has_kv) {
            out[i].store = KVS_KV_STORE_SHARED;
            out[i].shared_from = w->kv_source;
        }
    }
    kvs_retro_apply_schemes(m, g->retro, out);
}

/* ---- loading ------------------------------------------------------------ */

/* Sliding-window pattern from the GGUF alone (the loader and the planner
 * read it here): a per-layer bool array ("true" = sliding), a period (every
 * n-th layer global), or the architecture's default period (Gemma 3: 6;
 * none for Gemma 4). swa: (n_layer). */
static kvs_status sliding_layers(const kvs_gguf *g, int32_t n_layer, int32_t def_period, bool *swa) {
    char k[128];
    const char *arch = kvs_gguf_get_str(g, "general.architecture");
    snprintf(k, sizeof k, "%s.attention.sliding_window_pattern", arch ? arch : "?");
    const kvs_gguf_kv *kv = kvs_gguf_find(g, k);
    if (kv && kv->type == KVS_GGUF_ARRAY) {
        if (kv->v.arr.n != (uint64_t)n_layer || kv->v.arr.type == KVS_GGUF_STRING || kv->v.arr.type == KVS_GGUF_F32)
            return kvs_fail(KVS_ERR_FORMAT, "model: '%s' needs %d booleans (one per layer)", k, n_layer);
        for (int32_t i = 0; i < n_layer; i++) swa[i] = kvs_gguf_arr_int(kv, (uint64_t)i) != 0;
        return KVS_OK;
    }
    int32_t period = def_period;
    if (kv) {
        uint32_t p;
        if (!kvs_gguf_get_u32(g, k, &p)) return kvs_fail(KVS_ERR_FORMAT, "model: bad '%s'", k);
        period = (int32_t)p;
    }
    if (period <= 0) return kvs_fail(KVS_ERR_FORMAT, "model: no sliding-window pattern ('%s')", k);
    for (int32_t i = 0; i < n_layer; i++) swa[i] = period > 1 && i % period < period - 1;
    return KVS_OK;
}
static kvs_status gemma3_sliding(const kvs_gguf *g, int32_t n_layer, bool *swa) {
    return sliding_layers(g, n_layer, GEMMA3_SWA_PERIOD, swa);
}
static kvs_status gemma4_sliding(const kvs_gguf *g, int32_t n_layer, bool *swa) {
    return sliding_layers(g, n_layer, 0, swa);
}

static kvs_status load_pattern(kvs_loader *L, gemma_model *g, int32_t n_layer) {
    bool *swa = kvs_calloc((size_t)n_layer, sizeof *swa);
    if (!swa) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    kvs_status st = L->m->ops->sliding_layers(L->m->gguf, n_layer, swa);
    for (int32_t i = 0; st == KVS_OK && i < n_layer; i++) g->layers[i].swa = swa[i];
    kvs_free(swa);
    return st;
}

static kvs_status load_gemma(kvs_loader *L, bool gemma4) {
    kvs_model *m = L->m;
    kvs_hparams *hp = &m->hp;
    KVS_TRY(kvs_load_common_hparams(L));
    hp->rope.mode = KVS_ROPE_NEOX;
    KVS_TRY(kvs_load_norm_eps(L, 1e-6f, &hp->norm_eps));
    if (hp->head_dim_k != hp->head_dim_v)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: %s with key size %d != value size %d", L->arch, hp->head_dim_k,
                        hp->head_dim_v);
    KVS_TRY(kvs_load_embeddings(L));
    gemma_model *g = kvs_load_alloc(L, sizeof *g);
    if (!g) return KVS_ERR_NOMEM;
    m->ext = g;
    g->gemma4 = gemma4;
    g->layers = kvs_load_alloc(L, (size_t)hp->n_layer * sizeof *g->layers);
    if (!g->layers) return KVS_ERR_NOMEM;
    int32_t window = 0;
    KVS_TRY(kvs_load_need_u32(L, "attention.sliding_window", &window));
    g->window = (uint32_t)window;
    KVS_TRY(load_pattern(L, g, hp->n_layer));

    /* RoPE: global layers use rope.freq_base (+ linear scaling, + gemma4's
     * rope_freqs); local ones the local base, no scaling, no factors. */
    g->rope_global = hp->rope;
    g->rope_local = hp->rope;
    g->rope_local.freq_scale = 1.0f;
    g->rope_local.freq_factors = NULL;
    KVS_TRY(kvs_load_positive_f32(L, "rope.freq_base_swa", 10000.0f, 1e30f, &g->rope_local.freq_base));
    if (!gemma4) g->rope_global.freq_factors = NULL; /* gemma3 GGUFs carry none */
    g->softcap = kvs_load_opt_f32(L, "final_logit_softcapping", 0.0f);
    if (!(g->softcap >= 0.0f && isfinite(g->softcap))) /* 0: off; inf or NaN would make logits NaN */
        return kvs_fail(KVS_ERR_FORMAT, "model: '%s.final_logit_softcapping' = %g: want a finite number >= 0", L->arch,
                        (double)g->softcap);
    /* gemma3: q scaled by query_pre_attn_scalar^-1/2, which llama.cpp takes as
     * the head size (n_embd / n_head for the 27B); gemma4: no scaling */
    if (gemma4) g->attn_scale = 1.0f;
    else g->attn_scale = 1.0f / sqrtf((float)(hp->n_layer == 62 ? hp->n_embd / hp->n_head : hp->head_dim_k));

    g->kv_from = hp->n_layer;
    if (gemma4) {
        int32_t kd_swa = kvs_load_opt_u32(L, "attention.key_length_swa", hp->head_dim_k);
        int32_t vd_swa = kvs_load_opt_u32(L, "attention.value_length_swa", hp->head_dim_v);
        if (kd_swa != hp->head_dim_k || vd_swa != hp->head_dim_v)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "model: gemma4 with sliding-layer head size %d/%d != global %d/%d "
                            "(attention.key_length_swa) is not supported yet", kd_swa, vd_swa, hp->head_dim_k, hp->head_dim_v);
        char k[128];
        uint32_t shared = 0;
        if (kvs_gguf_find(m->gguf, kvs_load_key(L, k, sizeof k, "attention.shared_kv_layers")) &&
            (!kvs_gguf_get_u32(m->gguf, k, &shared) || shared >= (uint32_t)hp->n_layer))
            return kvs_fail(KVS_ERR_FORMAT, "model: '%s' must be a count below block_count (%d)", k, hp->n_layer);
        g->kv_from = hp->n_layer - (int32_t)shared;
        g->n_ple = kvs_load_opt_u32(L, "embedding_length_per_layer_input", 0);
    }
    for (int32_t i = 0; i < hp->n_layer; i++) {
        gemma_layer *w = &g->layers[i];
        w->has_kv = i < g->kv_from;
        w->kv_source = i;
        if (!w->has_kv) { /* the last non-shared layer of the same type */
            w->kv_source = -1;
            for (int32_t j = g->kv_from - 1; j >= 0 && w->kv_source < 0; j--)
                if (g->layers[j].swa == w->swa) w->kv_source = j;
            if (w->kv_source < 0)
                return kvs_fail(KVS_ERR_FORMAT, "model: shared layer %d has no earlier %s layer with its own KV", i,
                                w->swa ? "sliding" : "global");
        }
    }

    const int64_t d = hp->n_embd, dk = hp->head_dim_k;
    const int64_t qd = (int64_t)hp->n_head * dk, kd = (int64_t)hp->n_head_kv * dk, vd = (int64_t)hp->n_head_kv * hp->head_dim_v;
    const int64_t od = (int64_t)hp->n_head * hp->head_dim_v;
    if (g->n_ple) {
        const int64_t W = (int64_t)g->n_ple * hp->n_layer;
        KVS_TRY(kvs_load_matrix(L, "per_layer_token_embd.weight", W, hp->n_vocab, &g->ple_embd, true));
        kvs_load_drop_x8(L, &g->ple_embd); /* only read row by row */
        KVS_TRY(kvs_load_matrix(L, "per_layer_model_proj.weight", d, W, &g->ple_model_proj, true));
        KVS_TRY(kvs_load_vector(L, "per_layer_proj_norm.weight", g->n_ple, &g->ple_proj_norm, true));
    }
    for (int32_t i = 0; i < hp->n_layer; i++) {
        gemma_layer *w = &g->layers[i];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", i, s), n)
        KVS_TRY(kvs_load_vector(L, NAME("attn_norm.weight"), d, &w->attn_norm, true));
        KVS_TRY(kvs_load_matrix(L, NAME("attn_q.weight"), d, qd, &w->wq, true));
        KVS_TRY(kvs_load_vector(L, NAME("attn_q_norm.weight"), dk, &w->q_norm, true));
        if (w->has_kv) {
            KVS_TRY(kvs_load_matrix(L, NAME("attn_k.weight"), d, kd, &w->wk, true));
            KVS_TRY(kvs_load_vector(L, NAME("attn_k_norm.weight"), dk, &w->k_norm, true));
            KVS_TRY(kvs_load_matrix(L, NAME("attn_v.weight"), d, vd, &w->wv, !gemma4));
            w->v_from_k = !w->wv.data;
            if (w->v_from_k && kd != vd)
                return kvs_fail(KVS_ERR_FORMAT, "model: missing tensor '%s' (K and V sizes differ)", NAME("attn_v.weight"));
        }
        KVS_TRY(kvs_load_matrix(L, NAME("attn_output.weight"), od, d, &w->wo, true));
        KVS_TRY(kvs_load_vector(L, NAME("post_attention_norm.weight"), d, &w->post_attn_norm, true));
        KVS_TRY(kvs_load_vector(L, NAME("ffn_norm.weight"), d, &w->ffn_norm, true));
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_gate.weight"), d, hp->n_ff, &w->ffn_gate, true));
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_up.weight"), d, hp->n_ff, &w->ffn_up, true));
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_down.weight"), hp->n_ff, d, &w->ffn_down, true));
        KVS_TRY(kvs_load_vector(L, NAME("post_ffw_norm.weight"), d, &w->post_ffw_norm, true));
        w->out_scale = 1.0f;
        if (gemma4) {
            const float *sc = NULL;
            KVS_TRY(kvs_load_vector(L, NAME("layer_output_scale.weight"), 1, &sc, false));
            if (sc) w->out_scale = sc[0];
        }
        if (g->n_ple) {
            KVS_TRY(kvs_load_matrix(L, NAME("inp_gate.weight"), d, g->n_ple, &w->ple_gate, true));
            KVS_TRY(kvs_load_matrix(L, NAME("proj.weight"), g->n_ple, d, &w->ple_proj, true));
            KVS_TRY(kvs_load_vector(L, NAME("post_norm.weight"), d, &w->ple_post_norm, true));
        }
#undef NAME
    }
    if (!gemma4) KVS_TRY(kvs_retro_load(L, &g->retro));
    return KVS_OK;
}

static kvs_status load_gemma3(kvs_loader *L) { return load_gemma(L, false); }
static kvs_status load_gemma4(kvs_loader *L) { return load_gemma(L, true); }

const kvs_arch_ops kvs_arch_gemma3 = {
    .name = "gemma3", .load = load_gemma3, .default_schemes = gemma_schemes,
    .session_init = gemma_session_init, .session_free = gemma_session_free, .forward = gemma_forward,
    .retro = gemma_retro, .set_capture = gemma_set_capture, .sliding_layers = gemma3_sliding,
    .one_head_count = true,
};
const kvs_arch_ops kvs_arch_gemma4 = {
    .name = "gemma4", .load = load_gemma4, .default_schemes = gemma_schemes,
    .session_init = gemma_session_init, .session_free = gemma_session_free, .forward = gemma_forward,
    .sliding_layers = gemma4_sliding,
    .one_head_count = true,
};
