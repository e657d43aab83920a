/* The deepseek2 architecture (DeepSeek-V2, V2-Lite, V3 and their GGUFs):
 * loading and the forward pass of multi-head latent attention (MLA) and the
 * DeepSeekMoE feed-forward.
 *
 * Attention (DeepSeek-V2 paper, sec. 2.1). Per token the KV cache holds only
 * the latent row [c ; k_rope]: c = RMSNorm(W_DKV x) of rank r and one RoPE key
 * of d_r dims shared by all heads (a LATENT kvs_kv_scheme). Queries come from
 * x directly (V2-Lite) or through a low-rank LoRA with its own RMSNorm (V2,
 * V3). Each head's non-rotary query is absorbed through that head's W_UK
 * (q' = W_UK^T q_nope, rank r), so attention is MQA over the latent with
 * dk = r + d_r and dv = r, after which W_UV maps each head's latent output back
 * to d_v. Prefill and decode both run absorbed: one code path, and the cache
 * is never expanded. RoPE is the interleaved-pair form with YaRN; the
 * attention scale is mscale^2 / sqrt(d_nope + d_r), mscale = 1 +
 * yarn_log_multiplier * ln(factor) (the GGUF key holds 0.1 * mscale_all_dim).
 *
 * Weights: the split attn_k_b [d_nope, r, H] / attn_v_b [r, d_v, H] that
 * llama.cpp's converter writes, or the legacy combined attn_kv_b
 * [r, H * (d_nope + d_v)], whose key half is transposed to f32 at load.
 *
 * FFN: the first leading_dense_block_count layers are dense SwiGLU; the rest
 * are MoE (ops/moe.h: softmax or sigmoid gating, optional selection bias
 * exp_probs_b, groups, normalization, routed scale) plus shared experts. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch/attend.h"
#include "arch/stages.h"
#include "core/alloc.h"
#include "core/error.h"
#include "model/loader.h"
#include "model/session.h"
#include "ops/moe.h"

#define PAR_MIN_TOKENS KVS_PAR_MIN_TOKENS

typedef struct ds2_layer {
    const float *attn_norm, *ffn_norm, *q_a_norm, *kv_a_norm;
    kvs_weight wq, wq_a, wq_b, wkv_a, wo;
    kvs_weight *k_b, *v_b;     /* (n_head): k_b[h] d_nope -> r, v_b[h] r -> d_v */
    bool moe;
    kvs_weight ffn_gate, ffn_up, ffn_down;          /* dense layers */
    kvs_weight gate_inp;
    const float *exp_bias;
    kvs_weight *gate_exps, *up_exps, *down_exps;    /* (n_expert) */
    kvs_weight gate_sh, up_sh, down_sh;
} ds2_layer;

typedef struct ds2_model {
    int32_t n_head, q_lora, rank, rope_dim, nope, dk, dv;
    int32_t n_dense, n_ff_dense, n_expert, n_used, n_shared, n_ff_exp;
    kvs_moe_router router;     /* bias set per layer */
    float kq_scale;
    kvs_rope rope, no_rope;    /* no_rope: n_dims 0, for the shared attention step */
    ds2_layer *layers;
} ds2_model;

typedef struct ds2_session {
    float *qa;      /* (n_batch, q_lora)                 */
    float *qf;      /* (n_batch, n_head * dk)            */
    float *kva;     /* (n_batch, rank + rope)            */
    float *oh;      /* (n_batch, n_head * dv)            */
    float *rlog;    /* (n_batch, n_expert) router logits */
    float *moe_out; /* (n_batch, n_embd)                 */
    float *ffn_out; /* (n_batch, n_embd) FFN result: the pending residual delta
                       (s->up may be narrower than n_embd: V2-Lite's 1408 < 2048) */
    float *wts;     /* (n_batch, n_used)                 */
    int32_t *ids;   /* (n_batch, n_used)                 */
    float *route_scratch; /* (2 * n_expert)              */
    uint8_t *mv_scratch;  /* per thread: one converted activation row */
    float *gather;        /* (n_batch, max(nope, rank)): one head's inputs of a chunk */
    size_t mv_bytes;
    int n_threads;
    kvs_moe_ws *ws;
} ds2_session;

/* ---- forward ---------------------------------------------------------- */

/* y[t, h] = W[h] x[t, h] for every token and head: the per-head absorption
 * (W_UK^T) and expansion (W_UV) products. Decode (few tokens): one dispatch
 * of (token, head) jobs, each converting its input row once into the weight's
 * activation format and dotting it with the head's rows. */
typedef struct head_mv_task {
    const kvs_weight *w;
    const float *x; int64_t x_tok, x_head;
    float *y; int64_t y_tok, y_head;
    int64_t n, n_head;
    uint8_t *scratch; size_t scratch_bytes;
} head_mv_task;

static void head_mv_worker(void *ctx, int ith, int nth) {
    const head_mv_task *k = ctx;
    int64_t lo, hi;
    kvs_split(k->n * k->n_head, ith, nth, &lo, &hi);
    uint8_t *xq = k->scratch + (size_t)ith * k->scratch_bytes;
    for (int64_t job = lo; job < hi; job++) {
        int64_t t = job / k->n_head, h = job % k->n_head;
        const kvs_weight *W = &k->w[h];
        const kvs_type_traits *tr = kvs_type_traits_of(W->type);
        kvs_type_traits_of(tr->vec_dot_type)->from_float(k->x + t * k->x_tok + h * k->x_head, xq, W->n_in);
        float *yr = k->y + t * k->y_tok + h * k->y_head;
        const uint8_t *row = W->data;
        for (int64_t o = 0; o < W->n_out; o++, row += W->row_bytes) tr->vec_dot(W->n_in, &yr[o], row, xq);
    }
}

static kvs_status head_mv(kvs_session *s, const kvs_weight *w, const float *x, int64_t x_tok, int64_t x_head,
                          float *y, int64_t y_tok, int64_t y_head, int64_t n) {
    ds2_session *ds = s->ext;
    const ds2_model *dm = s->model->ext;
    if (n >= PAR_MIN_TOKENS) {
        /* a chunk: per head, gather its input rows and run the GEMM kernel
         * (each weight tile read once per token quad) */
        for (int64_t h = 0; h < dm->n_head; h++) {
            const int64_t ni = w[h].n_in;
            for (int64_t t = 0; t < n; t++)
                memcpy(ds->gather + t * ni, x + t * x_tok + h * x_head, (size_t)ni * sizeof(float));
            kvs_mm_out o = {.w = &w[h], .y = y + h * y_head, .y_stride = y_tok};
            kvs_status st = kvs_matmul_run(s->mm, s->pool, ds->gather, n, &o, 1);
            if (st != KVS_OK) return st;
        }
        return KVS_OK;
    }
    head_mv_task k = {.w = w, .x = x, .x_tok = x_tok, .x_head = x_head, .y = y, .y_tok = y_tok, .y_head = y_head,
                      .n = n, .n_head = dm->n_head, .scratch = ds->mv_scratch, .scratch_bytes = ds->mv_bytes};
    kvs_pool_run(s->pool, head_mv_worker, &k);
    return KVS_OK;
}

/* Per token: the latent row [RMSNorm(c) ; RoPE(k_rope)] into s->k, RoPE on
 * each head's query rope part, copied behind the absorbed part in s->q. */
typedef struct prep_task { kvs_session *s; const ds2_layer *w; } prep_task;

static void prep_rows(void *ctx, int64_t lo, int64_t hi) {
    const prep_task *pt = ctx;
    kvs_session *s = pt->s;
    const ds2_model *dm = s->model->ext;
    const ds2_session *ds = s->ext;
    const int64_t R = dm->rank, DR = dm->rope_dim, H = dm->n_head, DK = dm->dk, DN = dm->nope;
    for (int64_t t = lo; t < hi; t++) {
        float *lat = s->k + t * (R + DR);
        const float *kva = ds->kva + t * (R + DR);
        kvs_rmsnorm(lat, kva, pt->w->kv_a_norm, 1, R, s->model->hp.norm_eps);
        memcpy(lat + R, kva + R, (size_t)DR * sizeof(float));
        kvs_rope_apply(&dm->rope, lat + R, 1, 1, (int32_t)(R + DR), s->pos + t);
        float *qf = ds->qf + t * H * DK;
        kvs_rope_apply(&dm->rope, qf + DN, 1, (int32_t)H, (int32_t)DK, s->pos + t);
        for (int64_t h = 0; h < H; h++)
            memcpy(s->q + (t * H + h) * (R + DR) + R, qf + h * DK + DN, (size_t)DR * sizeof(float));
    }
}

/* out = down(silu(gate xn) * up xn) for n rows; gate/up scratch s->gate/s->up. */
static kvs_status swiglu_ffn(kvs_session *s, const kvs_weight *g, const kvs_weight *u, const kvs_weight *d, int64_t n,
                             float *out) {
    kvs_status st;
    int64_t nff = g->n_out;
    kvs_mm_out gu[2] = {{.w = g, .y = s->gate, .y_stride = nff}, {.w = u, .y = s->up, .y_stride = nff}};
    if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, gu, 2)) != KVS_OK) return st;
    kvs_stage_glu(s, n, s->gate, s->up, nff, false);
    kvs_mm_out dn = {.w = d, .y = out, .y_stride = s->model->hp.n_embd};
    return kvs_matmul_run(s->mm, s->pool, s->gate, n, &dn, 1);
}

static kvs_status attention(kvs_session *s, int32_t l, int64_t n) {
    const kvs_model *m = s->model;
    const ds2_model *dm = m->ext;
    const ds2_layer *w = &dm->layers[l];
    ds2_session *ds = s->ext;
    const int64_t R = dm->rank, DR = dm->rope_dim, H = dm->n_head, DK = dm->dk, DV = dm->dv;
    kvs_status st;
    kvs_mm_out a[2] = {
        {.w = dm->q_lora ? &w->wq_a : &w->wq, .y = dm->q_lora ? ds->qa : ds->qf,
         .y_stride = dm->q_lora ? dm->q_lora : H * DK},
        {.w = &w->wkv_a, .y = ds->kva, .y_stride = R + DR},
    };
    if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, a, 2)) != KVS_OK) return st;
    if (dm->q_lora) {
        kvs_rmsnorm(ds->qa, ds->qa, w->q_a_norm, n, dm->q_lora, m->hp.norm_eps);
        kvs_mm_out b = {.w = &w->wq_b, .y = ds->qf, .y_stride = H * DK};
        if ((st = kvs_matmul_run(s->mm, s->pool, ds->qa, n, &b, 1)) != KVS_OK) return st;
    }
    prep_task pt = {s, w};
    kvs_pool_for(s->pool, n, PAR_MIN_TOKENS, prep_rows, &pt);
    /* absorb: q'[t, h, 0:r] = W_UK[h]^T q_nope[t, h] */
    if ((st = head_mv(s, w->k_b, ds->qf, H * DK, DK, s->q, H * (R + DR), R + DR, n)) != KVS_OK) return st;
    if ((st = kvs_arch_attend(s, l, n, &dm->no_rope, dm->kq_scale)) != KVS_OK) return st;
    /* expand: o[t, h] = W_UV[h] att[t, h] */
    if ((st = head_mv(s, w->v_b, s->att, H * R, R, ds->oh, H * DV, DV, n)) != KVS_OK) return st;
    kvs_mm_out o = {.w = &w->wo, .y = s->xn, .y_stride = m->hp.n_embd};
    return kvs_matmul_run(s->mm, s->pool, ds->oh, n, &o, 1);
}

/* MoE FFN of layer l on s->xn; result (routed + shared) in ds->ffn_out. */
static kvs_status moe(kvs_session *s, int32_t l, int64_t n) {
    const kvs_model *m = s->model;
    const ds2_model *dm = m->ext;
    const ds2_layer *w = &dm->layers[l];
    ds2_session *ds = s->ext;
    const int64_t d = m->hp.n_embd;
    kvs_status st;
    kvs_mm_out r = {.w = &w->gate_inp, .y = ds->rlog, .y_stride = dm->n_expert};
    if ((st = kvs_matmul_run(s->mm, s->pool, s->xn, n, &r, 1)) != KVS_OK) return st;
    kvs_moe_router rt = dm->router;
    rt.bias = w->exp_bias;
    for (int64_t t = 0; t < n; t++)
        kvs_moe_route(&rt, ds->rlog + t * dm->n_expert, ds->ids + t * dm->n_used, ds->wts + t * dm->n_used,
                      ds->route_scratch);
    memset(ds->moe_out, 0, (size_t)(n * d) * sizeof(float));
    kvs_moe_experts ex = {.gate = w->gate_exps, .up = w->up_exps, .down = w->down_exps, .n_expert = dm->n_expert,
                          .n_embd = d, .n_ff = dm->n_ff_exp};
    if ((st = kvs_moe_ffn(ds->ws, s->mm, s->pool, &ex, s->xn, n, ds->ids, ds->wts, dm->n_used, ds->moe_out)) != KVS_OK)
        return st;
    if ((st = swiglu_ffn(s, &w->gate_sh, &w->up_sh, &w->down_sh, n, ds->ffn_out)) != KVS_OK) return st;
    kvs_add(ds->ffn_out, ds->moe_out, n * d);
    return KVS_OK;
}

static kvs_status ds2_forward(kvs_session *s, const kvs_token *tokens, int64_t n, bool all_logits, float *logits) {
    const kvs_model *m = s->model;
    const kvs_hparams *hp = &m->hp;
    const ds2_model *dm = m->ext;
    const int64_t d = hp->n_embd;
    kvs_status st;

    for (int64_t t = 0; t < n; t++) kvs_get_row(s->x + t * d, m->tok_embd.data, m->tok_embd.type, d, tokens[t]);
    const float *pending = NULL; /* previous FFN output, added in the next norm */
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const ds2_layer *w = &dm->layers[l];
        kvs_stage_add_norm(s, n, s->x, pending, s->xn, w->attn_norm, d, hp->norm_eps);
        if ((st = attention(s, l, n)) != KVS_OK) return st;
        kvs_stage_add_norm(s, n, s->x, s->xn, s->xn, w->ffn_norm, d, hp->norm_eps);
        if (w->moe) st = moe(s, l, n);
        else st = swiglu_ffn(s, &w->ffn_gate, &w->ffn_up, &w->ffn_down, n, ((ds2_session *)s->ext)->ffn_out);
        if (st != KVS_OK) return st;
        pending = ((ds2_session *)s->ext)->ffn_out;
    }
    kvs_add(s->x, pending, n * d);
    if (logits) {
        int64_t rows;
        if ((st = kvs_stage_head(s, n, all_logits, logits, &rows)) != KVS_OK) return st;
    }
    return KVS_OK;
}

/* ---- sessions ----------------------------------------------------------- */

static void ds2_session_free(kvs_session *s) {
    ds2_session *ds = s->ext;
    if (!ds) return;
    kvs_moe_ws_free(ds->ws);
    kvs_aligned_free(ds->qa);
    kvs_aligned_free(ds->qf);
    kvs_aligned_free(ds->kva);
    kvs_aligned_free(ds->oh);
    kvs_aligned_free(ds->rlog);
    kvs_aligned_free(ds->moe_out);
    kvs_aligned_free(ds->ffn_out);
    kvs_free(ds->wts);
    kvs_free(ds->ids);
    kvs_free(ds->route_scratch);
    kvs_aligned_free(ds->mv_scratch);
    kvs_aligned_free(ds->gather);
    kvs_free(ds);
    s->ext = NULL;
}

static kvs_status ds2_session_init(kvs_session *s) {
    const kvs_model *m = s->model;
    const ds2_model *dm = m->ext;
    /* the forward writes latent rows: every layer must keep (or share) one */
    for (int32_t l = 0; l < m->hp.n_layer; l++) {
        const kvs_kv_layer *L = &s->kv->layers[l];
        const kvs_kv_scheme *sc = &s->kv->layers[L->source].scheme;
        if (sc->store != KVS_KV_STORE_LATENT || sc->latent_rank != (uint32_t)dm->rank ||
            sc->rope_dim != (uint32_t)dm->rope_dim || sc->rotate) {
            char desc[128];
            kvs_kv_scheme_describe(sc, desc, sizeof desc);
            return kvs_fail(KVS_ERR_INVALID_ARG,
                            "deepseek2: layer %d: KV scheme '%s' is not supported; MLA layers need a latent "
                            "%d+%d scheme without rotation", l, desc, dm->rank, dm->rope_dim);
        }
    }
    ds2_session *ds = kvs_calloc(1, sizeof *ds);
    if (!ds) return kvs_fail(KVS_ERR_NOMEM, "session: out of memory");
    s->ext = ds;
    size_t B = s->params.n_batch;
    const int64_t H = dm->n_head;
    ds->n_threads = kvs_pool_size(s->pool);
    int64_t max_in = dm->nope > dm->rank ? dm->nope : dm->rank;
    ds->mv_bytes = ((size_t)max_in * 4 + 64 + 63) & ~(size_t)63; /* >= any activation format's row */
    ds->mv_scratch = kvs_aligned_alloc(ds->mv_bytes * (size_t)ds->n_threads);
    ds->gather = kvs_aligned_alloc(B * (size_t)max_in * sizeof(float));
    ds->qa = dm->q_lora ? kvs_aligned_alloc(B * (size_t)dm->q_lora * sizeof(float)) : NULL;
    ds->qf = kvs_aligned_alloc(B * (size_t)(H * dm->dk) * sizeof(float));
    ds->kva = kvs_aligned_alloc(B * (size_t)(dm->rank + dm->rope_dim) * sizeof(float));
    ds->oh = kvs_aligned_alloc(B * (size_t)(H * dm->dv) * sizeof(float));
    ds->ffn_out = kvs_aligned_alloc(B * (size_t)m->hp.n_embd * sizeof(float));
    bool bad = !ds->mv_scratch || !ds->gather || (dm->q_lora && !ds->qa) || !ds->qf || !ds->kva || !ds->oh || !ds->ffn_out;
    if (dm->n_expert) {
        ds->rlog = kvs_aligned_alloc(B * (size_t)dm->n_expert * sizeof(float));
        ds->moe_out = kvs_aligned_alloc(B * (size_t)m->hp.n_embd * sizeof(float));
        ds->wts = kvs_malloc(B * (size_t)dm->n_used * sizeof(float));
        ds->ids = kvs_malloc(B * (size_t)dm->n_used * sizeof(int32_t));
        ds->route_scratch = kvs_malloc(2 * (size_t)dm->n_expert * sizeof(float));
        bad = bad || !ds->rlog || !ds->moe_out || !ds->wts || !ds->ids || !ds->route_scratch;
        if (!bad) {
            kvs_status st = kvs_moe_ws_new((int64_t)B, m->hp.n_embd, dm->n_ff_exp, dm->n_expert, &ds->ws);
            if (st != KVS_OK) { ds2_session_free(s); return st; }
        }
    }
    if (bad) { ds2_session_free(s); return kvs_fail(KVS_ERR_NOMEM, "session: out of memory"); }
    return KVS_OK;
}

/* Every layer keeps one latent row per token: rank + rope elements. */
static void ds2_default_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out) {
    const ds2_model *dm = m->ext;
    for (int32_t i = 0; i < m->hp.n_layer; i++) {
        kvs_kv_scheme sc;
        memset(&sc, 0, sizeof sc);
        sc.store = KVS_KV_STORE_LATENT;
        sc.layout = KVS_KV_LAYOUT_BLOCK;
        sc.n_kv_heads = 1;
        sc.head_dim_k = (uint32_t)(dm->rank + dm->rope_dim);
        sc.head_dim_v = (uint32_t)dm->rank;
        sc.latent_rank = (uint32_t)dm->rank;
        sc.rope_dim = (uint32_t)dm->rope_dim;
        sc.shared_from = -1;
        sc.k_type = sc.v_type = kv_type;
        out[i] = sc;
    }
}

/* ---- loading ------------------------------------------------------------ */

/* Hyper-parameters and the RoPE/YaRN setup (keys as llama.cpp's converter
 * writes them). */
static kvs_status load_hparams(kvs_loader *L, ds2_model *dm) {
    kvs_model *m = L->m;
    kvs_hparams *hp = &m->hp;
    char k[128];
    KVS_TRY(kvs_load_need_u32(L, "block_count", &hp->n_layer));
    KVS_TRY(kvs_load_need_u32(L, "embedding_length", &hp->n_embd));
    KVS_TRY(kvs_load_need_u32(L, "attention.head_count", &dm->n_head));
    KVS_TRY(kvs_load_need_u32(L, "attention.kv_lora_rank", &dm->rank));
    KVS_TRY(kvs_load_need_u32(L, "rope.dimension_count", &dm->rope_dim));
    dm->q_lora = kvs_load_opt_u32(L, "attention.q_lora_rank", 0);
    if (kvs_gguf_find(m->gguf, kvs_load_key(L, k, sizeof k, "attention.key_length_mla"))) {
        KVS_TRY(kvs_load_need_u32(L, "attention.key_length_mla", &dm->dk));
        KVS_TRY(kvs_load_need_u32(L, "attention.value_length_mla", &dm->dv));
    } else { /* legacy files: the per-head sizes are the plain key/value lengths */
        KVS_TRY(kvs_load_need_u32(L, "attention.key_length", &dm->dk));
        KVS_TRY(kvs_load_need_u32(L, "attention.value_length", &dm->dv));
    }
    dm->nope = dm->dk - dm->rope_dim;
    if (dm->nope <= 0 || (dm->rope_dim & 1) || dm->rank + dm->rope_dim > 2048 || dm->dv > 1024)
        return kvs_fail(KVS_ERR_FORMAT, "model: deepseek2 head sizes (key %d, rope %d, value %d, latent %d) are inconsistent",
                        dm->dk, dm->rope_dim, dm->dv, dm->rank);
    KVS_TRY(kvs_load_context_length(L, 4096, &hp->n_ctx_train));
    KVS_TRY(kvs_load_norm_eps(L, 1e-6f, &hp->norm_eps));
    dm->n_dense = kvs_load_opt_u32(L, "leading_dense_block_count", 0);
    if (dm->n_dense > hp->n_layer) dm->n_dense = hp->n_layer;
    if (dm->n_dense > 0) KVS_TRY(kvs_load_need_u32(L, "feed_forward_length", &dm->n_ff_dense));
    if (dm->n_dense < hp->n_layer) {
        KVS_TRY(kvs_load_need_u32(L, "expert_count", &dm->n_expert));
        KVS_TRY(kvs_load_need_u32(L, "expert_used_count", &dm->n_used));
        KVS_TRY(kvs_load_need_u32(L, "expert_shared_count", &dm->n_shared));
        KVS_TRY(kvs_load_need_u32(L, "expert_feed_forward_length", &dm->n_ff_exp));
        if (dm->n_expert > 1024 || dm->n_used > dm->n_expert)
            return kvs_fail(KVS_ERR_FORMAT, "model: deepseek2.expert_used_count %d / expert_count %d out of range",
                            dm->n_used, dm->n_expert);
        kvs_moe_router *r = &dm->router;
        r->n_expert = dm->n_expert;
        r->n_used = dm->n_used;
        r->gating = (kvs_moe_gating)kvs_load_opt_u32(L, "expert_gating_func", KVS_MOE_SOFTMAX);
        if (r->gating != KVS_MOE_SOFTMAX && r->gating != KVS_MOE_SIGMOID)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "model: deepseek2.expert_gating_func %d is not supported", (int)r->gating);
        bool norm = false;
        kvs_gguf_get_bool(m->gguf, kvs_load_key(L, k, sizeof k, "expert_weights_norm"), &norm);
        r->norm = norm;
        r->scale = kvs_load_opt_f32(L, "expert_weights_scale", 1.0f);
        r->n_group = kvs_load_opt_u32(L, "expert_group_count", 0);
        r->n_group_used = kvs_load_opt_u32(L, "expert_group_used_count", 0);
        if (r->n_group > 1 && (r->n_group > 256 || dm->n_expert % r->n_group ||
                               r->n_group_used * (dm->n_expert / r->n_group) < dm->n_used))
            return kvs_fail(KVS_ERR_FORMAT, "model: deepseek2.expert_group_count %d (using %d) does not fit %d experts, %d used",
                            r->n_group, r->n_group_used, dm->n_expert, dm->n_used);
    }
    /* session buffers: the attention step sees MQA over the latent */
    hp->n_head = dm->n_head;
    hp->n_head_kv = 1;
    hp->head_dim_k = dm->rank + dm->rope_dim;
    hp->head_dim_v = dm->rank;
    int32_t nff_sh = dm->n_ff_exp * dm->n_shared;
    hp->n_ff = dm->n_ff_dense > nff_sh ? dm->n_ff_dense : nff_sh;
    if (hp->n_ff < 1) hp->n_ff = 1;

    kvs_rope *rp = &dm->rope;
    rp->mode = KVS_ROPE_NORM;
    rp->n_dims = dm->rope_dim;
    KVS_TRY(kvs_load_positive_f32(L, "rope.freq_base", 10000.0f, 1e30f, &rp->freq_base));
    rp->freq_scale = 1.0f;
    float mscale = 1.0f;
    const char *stype = kvs_gguf_get_str(m->gguf, kvs_load_key(L, k, sizeof k, "rope.scaling.type"));
    if (stype && strcmp(stype, "none") != 0) {
        float f = kvs_load_opt_f32(L, "rope.scaling.factor", 1.0f);
        if (!(f > 0.0f)) return kvs_fail(KVS_ERR_FORMAT, "model: bad deepseek2.rope.scaling.factor");
        rp->freq_scale = 1.0f / f;
        if (strcmp(stype, "yarn") == 0) {
            int32_t orig = kvs_load_opt_u32(L, "rope.scaling.original_context_length", hp->n_ctx_train);
            kvs_rope_yarn(rp, orig, kvs_load_opt_f32(L, "rope.scaling.yarn_beta_fast", 32.0f),
                          kvs_load_opt_f32(L, "rope.scaling.yarn_beta_slow", 1.0f),
                          kvs_load_opt_f32(L, "rope.scaling.yarn_ext_factor", 1.0f));
            if (kvs_load_opt_f32(L, "rope.scaling.yarn_attn_factor", 1.0f) != 1.0f ||
                kvs_load_opt_f32(L, "rope.scaling.attn_factor", 1.0f) != 1.0f)
                return kvs_fail(KVS_ERR_UNSUPPORTED, "model: deepseek2 YaRN attention factor other than 1 is not supported");
            if (f > 1.0f) mscale = 1.0f + kvs_load_opt_f32(L, "rope.scaling.yarn_log_multiplier", 0.0f) * logf(f);
        } else if (strcmp(stype, "linear") != 0) {
            return kvs_fail(KVS_ERR_UNSUPPORTED, "model: rope scaling '%s' not supported", stype);
        }
    }
    dm->kq_scale = mscale * mscale / sqrtf((float)dm->dk);
    dm->no_rope = *rp;
    dm->no_rope.n_dims = 0;
    hp->rope = *rp;
    return KVS_OK;
}

/* W_UK of the legacy combined attn_kv_b, transposed per head to f32 rows
 * (r rows of d_nope) so absorption is a plain product; W_UV is a view. */
static kvs_status split_kv_b(kvs_loader *L, const ds2_model *dm, const kvs_weight *kvb, ds2_layer *w) {
    const int64_t R = dm->rank, DN = dm->nope, DV = dm->dv;
    float *kt = kvs_load_alloc(L, (size_t)(dm->n_head * R * DN) * sizeof(float));
    float *row = kvs_load_alloc(L, (size_t)R * sizeof(float));
    if (!kt || !row) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    const kvs_type_traits *tr = kvs_type_traits_of(kvb->type);
    for (int64_t h = 0; h < dm->n_head; h++) {
        for (int64_t i = 0; i < DN; i++) {
            tr->to_float((const uint8_t *)kvb->data + (size_t)(h * (DN + DV) + i) * kvb->row_bytes, row, R);
            for (int64_t o = 0; o < R; o++) kt[(h * R + o) * DN + i] = row[o];
        }
        w->k_b[h] = (kvs_weight){.name = kvb->name, .type = KVS_TYPE_F32, .n_in = DN, .n_out = R,
                                 .row_bytes = (size_t)DN * sizeof(float), .data = kt + h * R * DN};
        w->v_b[h] = (kvs_weight){.name = kvb->name, .type = kvb->type, .n_in = R, .n_out = DV,
                                 .row_bytes = kvb->row_bytes,
                                 .data = (const uint8_t *)kvb->data + (size_t)(h * (DN + DV) + DN) * kvb->row_bytes};
    }
    return KVS_OK;
}

static kvs_status load_layer(kvs_loader *L, ds2_model *dm, int32_t i) {
    const kvs_hparams *hp = &L->m->hp;
    ds2_layer *w = &dm->layers[i];
    const int64_t E = hp->n_embd, H = dm->n_head, R = dm->rank, DR = dm->rope_dim;
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", i, s), n)
    KVS_TRY(kvs_load_vector(L, NAME("attn_norm.weight"), E, &w->attn_norm, true));
    KVS_TRY(kvs_load_vector(L, NAME("ffn_norm.weight"), E, &w->ffn_norm, true));
    if (dm->q_lora) {
        KVS_TRY(kvs_load_matrix(L, NAME("attn_q_a.weight"), E, dm->q_lora, &w->wq_a, true));
        KVS_TRY(kvs_load_vector(L, NAME("attn_q_a_norm.weight"), dm->q_lora, &w->q_a_norm, true));
        KVS_TRY(kvs_load_matrix(L, NAME("attn_q_b.weight"), dm->q_lora, H * dm->dk, &w->wq_b, true));
    } else {
        KVS_TRY(kvs_load_matrix(L, NAME("attn_q.weight"), E, H * dm->dk, &w->wq, true));
    }
    KVS_TRY(kvs_load_matrix(L, NAME("attn_kv_a_mqa.weight"), E, R + DR, &w->wkv_a, true));
    KVS_TRY(kvs_load_vector(L, NAME("attn_kv_a_norm.weight"), R, &w->kv_a_norm, true));
    w->k_b = kvs_load_alloc(L, (size_t)H * sizeof *w->k_b);
    w->v_b = kvs_load_alloc(L, (size_t)H * sizeof *w->v_b);
    if (!w->k_b || !w->v_b) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    if (kvs_gguf_find_tensor(L->m->gguf, NAME("attn_k_b.weight")) || !kvs_gguf_find_tensor(L->m->gguf, NAME("attn_kv_b.weight"))) {
        KVS_TRY(kvs_load_matrix_stack(L, NAME("attn_k_b.weight"), dm->nope, R, H, w->k_b, true));
        KVS_TRY(kvs_load_matrix_stack(L, NAME("attn_v_b.weight"), R, dm->dv, H, w->v_b, true));
    } else {
        kvs_weight kvb;
        KVS_TRY(kvs_load_matrix(L, NAME("attn_kv_b.weight"), R, H * (dm->nope + dm->dv), &kvb, true));
        KVS_TRY(split_kv_b(L, dm, &kvb, w));
    }
    KVS_TRY(kvs_load_matrix(L, NAME("attn_output.weight"), H * dm->dv, E, &w->wo, true));
    if (i < dm->n_dense) {
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_gate.weight"), E, dm->n_ff_dense, &w->ffn_gate, true));
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_up.weight"), E, dm->n_ff_dense, &w->ffn_up, true));
        KVS_TRY(kvs_load_matrix(L, NAME("ffn_down.weight"), dm->n_ff_dense, E, &w->ffn_down, true));
        return KVS_OK;
    }
    const int64_t X = dm->n_expert, F = dm->n_ff_exp, FS = (int64_t)dm->n_ff_exp * dm->n_shared;
    w->moe = true;
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_gate_inp.weight"), E, X, &w->gate_inp, true));
    KVS_TRY(kvs_load_vector(L, NAME("exp_probs_b.bias"), X, &w->exp_bias, false));
    w->gate_exps = kvs_load_alloc(L, (size_t)X * sizeof(kvs_weight));
    w->up_exps = kvs_load_alloc(L, (size_t)X * sizeof(kvs_weight));
    w->down_exps = kvs_load_alloc(L, (size_t)X * sizeof(kvs_weight));
    if (!w->gate_exps || !w->up_exps || !w->down_exps) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    KVS_TRY(kvs_load_matrix_stack(L, NAME("ffn_gate_exps.weight"), E, F, X, w->gate_exps, true));
    KVS_TRY(kvs_load_matrix_stack(L, NAME("ffn_up_exps.weight"), E, F, X, w->up_exps, true));
    KVS_TRY(kvs_load_matrix_stack(L, NAME("ffn_down_exps.weight"), F, E, X, w->down_exps, true));
    if (FS <= 0) return kvs_fail(KVS_ERR_UNSUPPORTED, "model: deepseek2 MoE without shared experts is not supported");
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_gate_shexp.weight"), E, FS, &w->gate_sh, true));
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_up_shexp.weight"), E, FS, &w->up_sh, true));
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_down_shexp.weight"), FS, E, &w->down_sh, true));
#undef NAME
    return KVS_OK;
}

static kvs_status ds2_load(kvs_loader *L) {
    kvs_model *m = L->m;
    ds2_model *dm = kvs_load_alloc(L, sizeof *dm);
    if (!dm) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    m->ext = dm;
    KVS_TRY(load_hparams(L, dm));
    KVS_TRY(kvs_load_embeddings(L));
    if (m->hp.rope.freq_factors)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: deepseek2 with rope_freqs.weight is not supported");
    dm->layers = kvs_load_alloc(L, (size_t)m->hp.n_layer * sizeof *dm->layers);
    if (!dm->layers) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    for (int32_t i = 0; i < m->hp.n_layer; i++) KVS_TRY(load_layer(L, dm, i));
    return KVS_OK;
}

const kvs_arch_ops kvs_arch_deepseek2 = {
    .name = "deepseek2", .load = ds2_load, .default_schemes = ds2_default_schemes,
    .session_init = ds2_session_init, .session_free = ds2_session_free, .forward = ds2_forward,
};
