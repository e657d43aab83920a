/* DeepSeek V4 ("deepseek4"): loading (GGUF names of the llama.cpp ecosystem,
 * docs/arch-deepseek4.md), the per-layer KV schemes (COMPRESSED: raw
 * 128-token window + one entry per compress_ratio tokens + indexer keys on
 * CSA layers), per-session state (compressor rings, mHC buffers) and the
 * forward pass: manifold-constrained hyper-connections around every
 * sublayer, the compressed attention (deepseek4_attn.c) and the V4 MoE
 * (sqrt-softplus gate with a selection bias, hash routing in the first
 * layers, SwiGLU clamp, one shared expert). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch/deepseek4.h"
#include "core/alloc.h"
#include "core/error.h"
#include "model/loader.h"

/* ---- KV schemes ------------------------------------------------------------ */

/* Indexer keys come out of kvs_kv_scheme_compressed as 8-bit q8_0 (scored by
 * the integer kernel) unless the session's KV type is f32, which keeps f32
 * keys and the float scorer (the exact path the numpy reference checks); a
 * key width that is not a multiple of 32 keeps the KV type. KV rules
 * (--kv-layer) change the entry/raw-row format only, so "--kv f16
 * --kv-layer f32" gives f32 entries with 8-bit keys. */
static void ds4_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out) {
    const ds4_model *x = m->ext;
    for (int32_t i = 0; i < m->hp.n_layer; i++) {
        int32_t r = x->layers[i].ratio;
        out[i] = kvs_kv_scheme_compressed((uint32_t)r, (uint32_t)m->hp.head_dim_k,
                                          r == 4 ? (uint32_t)x->idx_dim : 0, (uint32_t)x->window, kv_type);
    }
}

/* ---- loading ----------------------------------------------------------------- */

static float per_layer_f32(const kvs_loader *L, const char *suffix, int32_t layer, float def) {
    char k[128];
    kvs_load_key(L, k, sizeof k, suffix);
    const kvs_gguf_kv *kv = kvs_gguf_find(L->m->gguf, k);
    if (!kv) return def;
    if (kv->type == KVS_GGUF_ARRAY)
        return (uint64_t)layer < kv->v.arr.n ? (float)kvs_gguf_arr_float(kv, (uint64_t)layer) : def;
    float v;
    return kvs_gguf_get_f32(L->m->gguf, k, &v) ? v : def;
}

/* YaRN frequency blending (DeepSeek's precompute_freqs_cis): frequencies
 * below the slow-rotation bound are divided by `factor`, above the fast bound
 * kept, linear ramp between. */
static void rope_freqs(double *f, int32_t rd, double base, double factor, double orig, double bfast, double bslow) {
    for (int32_t i = 0; i < rd / 2; i++) f[i] = 1.0 / pow(base, (2.0 * i) / rd);
    if (orig <= 0 || factor == 1.0) return;
    double lo = floor(rd * log(orig / (bfast * 2 * M_PI)) / (2 * log(base)));
    double hi = ceil(rd * log(orig / (bslow * 2 * M_PI)) / (2 * log(base)));
    if (lo < 0) lo = 0;
    if (hi > rd - 1) hi = rd - 1;
    double span = hi - lo > 1e-3 ? hi - lo : 1e-3;
    for (int32_t i = 0; i < rd / 2; i++) {
        double ramp = (i - lo) / span;
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double smooth = 1 - ramp;
        f[i] = f[i] / factor * (1 - smooth) + f[i] * smooth;
    }
}

static kvs_status load_comp(kvs_loader *L, int32_t il, const char *name, int32_t m, int32_t d, ds4_comp *c) {
    const kvs_hparams *hp = &L->m->hp;
    char n[128];
    c->d = d;
    c->coff = m == 4 ? 2 : 1;
    kvs_weight ape;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s_%s", il, name, s), n)
    KVS_TRY(kvs_load_matrix(L, NAME("kv.weight"), hp->n_embd, (int64_t)c->coff * d, &c->wkv, true));
    KVS_TRY(kvs_load_matrix(L, NAME("gate.weight"), hp->n_embd, (int64_t)c->coff * d, &c->wgate, true));
    KVS_TRY(kvs_load_matrix(L, NAME("ape.weight"), (int64_t)c->coff * d, m, &ape, true));
    if (ape.type != KVS_TYPE_F32)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: tensor '%s' must be f32", ape.name);
    c->ape = ape.data;
    KVS_TRY(kvs_load_vector(L, NAME("norm.weight"), d, &c->norm, true));
#undef NAME
    return KVS_OK;
}

/* The hash routing table, [n_used, n_vocab]: I32 as llama.cpp's converter
 * writes it (conversion/deepseek.py), or F32 holding exact small integers
 * (kvslim's fixtures before the reader had I32; still accepted). */
static kvs_status load_tid2eid(kvs_loader *L, const char *name, int32_t n_vocab, int32_t k, int32_t n_expert,
                               int32_t **out) {
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(L->m->gguf, name);
    if (!t) return kvs_fail(KVS_ERR_FORMAT, "model: missing tensor '%s' (hash-routed layer)", name);
    if (t->n_dims != 2 || t->ne[0] != k || t->ne[1] != n_vocab)
        return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s' has shape [%lld, %lld], expected [%d, %d]", name,
                        (long long)t->ne[0], (long long)t->ne[1], k, n_vocab);
    if (t->type != KVS_TYPE_I32 && t->type != KVS_TYPE_F32)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: tensor '%s': expert ids must be i32 (or f32), not %s", name,
                        kvs_dtype_name(t->type));
    int32_t *ids = kvs_load_alloc(L, sizeof(int32_t) * (size_t)n_vocab * (size_t)k);
    if (!ids) return KVS_ERR_NOMEM;
    for (int64_t i = 0; i < (int64_t)n_vocab * k; i++) {
        if (t->type == KVS_TYPE_I32) {
            int32_t v;
            memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
            if (v < 0 || v >= n_expert)
                return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s': entry %lld (%d) is not an expert id below %d",
                                name, (long long)i, v, n_expert);
            ids[i] = v;
        } else {
            float f;
            memcpy(&f, (const uint8_t *)t->data + 4 * i, 4);
            if (!(f >= 0 && f < (float)n_expert) || f != floorf(f))
                return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s': entry %lld (%g) is not an expert id below %d",
                                name, (long long)i, (double)f, n_expert);
            ids[i] = (int32_t)f;
        }
    }
    *out = ids;
    return KVS_OK;
}

static kvs_status load_layer(kvs_loader *L, ds4_model *x, int32_t il, int32_t ratio) {
    const kvs_hparams *hp = &L->m->hp;
    ds4_layer *w = &x->layers[il];
    const int64_t D = hp->n_embd, H = hp->n_head, hd = hp->head_dim_k, hc = x->hc;
    const int64_t mix = (2 + hc) * hc, G = x->o_groups;
    char n[128];
    w->ratio = ratio;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
    KVS_TRY(kvs_load_vector(L, NAME("attn_norm.weight"), D, &w->attn_norm, true));
    KVS_TRY(kvs_load_vector(L, NAME("ffn_norm.weight"), D, &w->ffn_norm, true));
    static const char *sub[2] = {"attn", "ffn"};
    for (int k = 0; k < 2; k++) {
        char s[48];
        snprintf(s, sizeof s, "hc_%s_fn.weight", sub[k]);
        KVS_TRY(kvs_load_matrix(L, NAME(s), hc * D, mix, &w->hc_fn[k], true));
        snprintf(s, sizeof s, "hc_%s_base.weight", sub[k]);
        KVS_TRY(kvs_load_vector(L, NAME(s), mix, &w->hc_base[k], true));
        snprintf(s, sizeof s, "hc_%s_scale.weight", sub[k]);
        KVS_TRY(kvs_load_vector(L, NAME(s), 3, &w->hc_scale[k], true));
    }
    KVS_TRY(kvs_load_vector(L, NAME("attn_sinks.weight"), H, &w->sinks, true));
    KVS_TRY(kvs_load_matrix(L, NAME("attn_q_a.weight"), D, x->q_lora, &w->wq_a, true));
    KVS_TRY(kvs_load_vector(L, NAME("attn_q_a_norm.weight"), x->q_lora, &w->q_norm, true));
    KVS_TRY(kvs_load_matrix(L, NAME("attn_q_b.weight"), x->q_lora, H * hd, &w->wq_b, true));
    KVS_TRY(kvs_load_matrix(L, NAME("attn_kv.weight"), D, hd, &w->wkv, true));
    KVS_TRY(kvs_load_vector(L, NAME("attn_kv_a_norm.weight"), hd, &w->kv_norm, true));
    kvs_weight wo_a;
    KVS_TRY(kvs_load_matrix(L, NAME("attn_output_a.weight"), H * hd / G, G * x->o_lora, &wo_a, true));
    w->wo_a = kvs_load_alloc(L, sizeof *w->wo_a * (size_t)G);
    if (!w->wo_a) return KVS_ERR_NOMEM;
    for (int64_t g = 0; g < G; g++) { /* group g owns rows [g*o_lora, (g+1)*o_lora) */
        w->wo_a[g] = wo_a;
        w->wo_a[g].n_out = x->o_lora;
        w->wo_a[g].data = (const uint8_t *)wo_a.data + (size_t)g * x->o_lora * wo_a.row_bytes;
    }
    KVS_TRY(kvs_load_matrix(L, NAME("attn_output_b.weight"), G * x->o_lora, D, &w->wo_b, true));
    if (ratio) KVS_TRY(load_comp(L, il, "attn_compressor", ratio, (int32_t)hd, &w->comp));
    if (ratio == 4) {
        KVS_TRY(load_comp(L, il, "indexer_compressor", ratio, x->idx_dim, &w->icomp));
        KVS_TRY(kvs_load_matrix(L, NAME("indexer.attn_q_b.weight"), x->q_lora, (int64_t)x->idx_heads * x->idx_dim,
                                &w->iq_b, true));
        KVS_TRY(kvs_load_matrix(L, NAME("indexer.proj.weight"), D, x->idx_heads, &w->iproj, true));
    }
    const int64_t E = x->n_expert, F = x->n_ff;
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_gate_inp.weight"), D, E, &w->gate_inp, true));
    if (il < x->n_hash) {
        KVS_TRY(load_tid2eid(L, NAME("ffn_gate_tid2eid.weight"), hp->n_vocab, x->n_used, x->n_expert, &w->tid2eid));
    } else {
        KVS_TRY(kvs_load_vector(L, NAME("exp_probs_b.bias"), E, &w->exp_bias, false));
    }
    w->gate_exps = kvs_load_alloc(L, sizeof(kvs_weight) * (size_t)E * 3);
    if (!w->gate_exps) return KVS_ERR_NOMEM;
    w->up_exps = w->gate_exps + E;
    w->down_exps = w->up_exps + E;
    KVS_TRY(kvs_load_matrix_stack(L, NAME("ffn_gate_exps.weight"), D, F, E, w->gate_exps, true));
    KVS_TRY(kvs_load_matrix_stack(L, NAME("ffn_up_exps.weight"), D, F, E, w->up_exps, true));
    KVS_TRY(kvs_load_matrix_stack(L, NAME("ffn_down_exps.weight"), F, D, E, w->down_exps, true));
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_gate_shexp.weight"), D, F, &w->gate_sh, true));
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_up_shexp.weight"), D, F, &w->up_sh, true));
    KVS_TRY(kvs_load_matrix(L, NAME("ffn_down_shexp.weight"), F, D, &w->down_sh, true));
#undef NAME
    w->clamp = per_layer_f32(L, "swiglu_clamp_exp", il, 0.0f);
    /* absent: the routed experts' limit, as llama.cpp's loader reads it */
    w->clamp_sh = per_layer_f32(L, "swiglu_clamp_shexp", il, w->clamp);
    return KVS_OK;
}

static kvs_status need(const kvs_loader *L, const char *suffix, int32_t *out) { return kvs_load_need_u32(L, suffix, out); }

static kvs_status load_deepseek4(kvs_loader *L) {
    kvs_model *m = L->m;
    kvs_hparams *hp = &m->hp;
    ds4_model *x = kvs_load_alloc(L, sizeof *x);
    if (!x) return KVS_ERR_NOMEM;
    m->ext = x;
    KVS_TRY(need(L, "block_count", &hp->n_layer));
    /* trailing multi-token-prediction blocks are not part of the decoder stack */
    int32_t nextn = kvs_load_opt_u32(L, "nextn_predict_layers", 0);
    if (nextn >= hp->n_layer)
        return kvs_fail(KVS_ERR_FORMAT, "model: %s.nextn_predict_layers = %d leaves no decoder layers", L->arch, nextn);
    hp->n_layer -= nextn;
    KVS_TRY(need(L, "embedding_length", &hp->n_embd));
    KVS_TRY(need(L, "attention.head_count", &hp->n_head));
    KVS_TRY(need(L, "attention.key_length", &hp->head_dim_k));
    hp->head_dim_v = hp->head_dim_k;
    hp->n_head_kv = 1;
    KVS_TRY(kvs_load_context_length(L, 4096, &hp->n_ctx_train));
    KVS_TRY(kvs_load_norm_eps(L, 1e-6f, &hp->norm_eps));
    KVS_TRY(need(L, "rope.dimension_count", &x->rope_dim));
    KVS_TRY(need(L, "attention.q_lora_rank", &x->q_lora));
    KVS_TRY(need(L, "attention.output_lora_rank", &x->o_lora));
    KVS_TRY(need(L, "attention.output_group_count", &x->o_groups));
    KVS_TRY(need(L, "attention.sliding_window", &x->window));
    KVS_TRY(need(L, "hyper_connection.count", &x->hc));
    KVS_TRY(need(L, "expert_count", &x->n_expert));
    KVS_TRY(need(L, "expert_used_count", &x->n_used));
    KVS_TRY(need(L, "expert_feed_forward_length", &x->n_ff));
    x->sinkhorn_iters = kvs_load_opt_u32(L, "hyper_connection.sinkhorn_iterations", 20);
    KVS_TRY(kvs_load_positive_f32(L, "hyper_connection.epsilon", 1e-6f, 1.0f, &x->hc_eps));
    x->n_hash = kvs_load_opt_u32(L, "hash_layer_count", 0);
    x->route_scale = kvs_load_opt_f32(L, "expert_weights_scale", 1.0f);
    char kn[128];
    bool norm = true;
    x->route_norm = kvs_gguf_get_bool(m->gguf, kvs_load_key(L, kn, sizeof kn, "expert_weights_norm"), &norm) ? norm : true;
    int32_t gating = kvs_load_opt_u32(L, "expert_gating_func", 4);
    if (gating != 4)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: %s.expert_gating_func = %d is not supported (DeepSeek V4 uses 4, "
                        "sqrt(softplus))", L->arch, gating);
    if (x->hc < 1 || x->hc > DS4_MAX_HC)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: %s.hyper_connection.count = %d not supported (1..%d)", L->arch,
                        x->hc, DS4_MAX_HC);
    if (x->n_used > x->n_expert)
        return kvs_fail(KVS_ERR_FORMAT, "model: expert_used_count %d exceeds expert_count %d", x->n_used, x->n_expert);
    if (x->rope_dim > hp->head_dim_k || (x->rope_dim & 1) || x->rope_dim > 512)
        return kvs_fail(KVS_ERR_FORMAT, "model: rope.dimension_count %d invalid for key_length %d", x->rope_dim,
                        hp->head_dim_k);
    if (((int64_t)hp->n_head * hp->head_dim_k) % x->o_groups)
        return kvs_fail(KVS_ERR_FORMAT, "model: %d heads x %d not divisible into %d output groups", hp->n_head,
                        hp->head_dim_k, x->o_groups);
    char k[128];
    const kvs_gguf_kv *ratios = kvs_gguf_find(m->gguf, kvs_load_key(L, k, sizeof k, "attention.compress_ratios"));
    if (!ratios || ratios->type != KVS_GGUF_ARRAY || ratios->v.arr.type == KVS_GGUF_STRING ||
        ratios->v.arr.n < (uint64_t)hp->n_layer)
        return kvs_fail(KVS_ERR_FORMAT, "model: '%s' missing or not a per-layer integer array", k);
    bool csa = false;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        int64_t r = kvs_gguf_arr_int(ratios, (uint64_t)i);
        if (r < 0 || r == 1 || r > 65536)
            return kvs_fail(KVS_ERR_FORMAT, "model: %s[%d] = %lld (expected 0 or a ratio >= 2)", k, i, (long long)r);
        csa |= r == 4;
    }
    if (csa) {
        KVS_TRY(need(L, "attention.indexer.head_count", &x->idx_heads));
        KVS_TRY(need(L, "attention.indexer.key_length", &x->idx_dim));
        KVS_TRY(need(L, "attention.indexer.top_k", &x->idx_topk));
        if (x->idx_dim > 4096 || x->idx_heads > 1024)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "model: indexer %d heads x %d not supported", x->idx_heads, x->idx_dim);
        if (x->idx_dim < x->rope_dim)
            return kvs_fail(KVS_ERR_FORMAT, "model: indexer key_length %d below the rope dimension %d", x->idx_dim,
                            x->rope_dim);
    }
    /* RoPE: window-only layers rope.freq_base; compressed layers their own base with YaRN */
    float fbase, fcbase;
    KVS_TRY(kvs_load_positive_f32(L, "rope.freq_base", 10000.0f, 1e30f, &fbase));
    KVS_TRY(kvs_load_positive_f32(L, "attention.compress_rope_freq_base", fbase, 1e30f, &fcbase));
    double base = fbase, cbase = fcbase;
    double factor = 1.0, orig = 0;
    const char *stype = kvs_gguf_get_str(m->gguf, kvs_load_key(L, k, sizeof k, "rope.scaling.type"));
    if (stype && strcmp(stype, "yarn") == 0) {
        factor = kvs_load_opt_f32(L, "rope.scaling.factor", 1.0f);
        orig = kvs_load_opt_u32(L, "rope.scaling.original_context_length", 0);
    } else if (stype && strcmp(stype, "none") != 0) {
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: %s rope scaling '%s' not supported (yarn or none)", L->arch, stype);
    }
    double bfast = kvs_load_opt_f32(L, "rope.scaling.yarn_beta_fast", 32.0f);
    double bslow = kvs_load_opt_f32(L, "rope.scaling.yarn_beta_slow", 1.0f);
    rope_freqs(x->freq[0], x->rope_dim, base, 1.0, 0, bfast, bslow);
    rope_freqs(x->freq[1], x->rope_dim, cbase, factor, orig, bfast, bslow);
    hp->rope.mode = KVS_ROPE_NORM;
    hp->rope.n_dims = x->rope_dim;
    hp->rope.freq_base = (float)base;
    hp->rope.freq_scale = 1.0f;
    hp->n_ff = x->n_ff;

    KVS_TRY(kvs_load_embeddings(L));
    const int64_t hc = x->hc, D = hp->n_embd;
    KVS_TRY(kvs_load_matrix(L, "output_hc_fn.weight", hc * D, hc, &x->hc_head_fn, true));
    KVS_TRY(kvs_load_vector(L, "output_hc_base.weight", hc, &x->hc_head_base, true));
    KVS_TRY(kvs_load_vector(L, "output_hc_scale.weight", 1, &x->hc_head_scale, true));
    x->layers = kvs_load_alloc(L, sizeof *x->layers * (size_t)hp->n_layer);
    if (!x->layers) return KVS_ERR_NOMEM;
    for (int32_t i = 0; i < hp->n_layer; i++)
        KVS_TRY(load_layer(L, x, i, (int32_t)kvs_gguf_arr_int(ratios, (uint64_t)i)));
    return KVS_OK;
}

/* ---- session state ------------------------------------------------------- */

static void ds4_session_free(kvs_session *s) {
    ds4_state *st = s->ext;
    if (!st) return;
    for (int32_t i = 0; st->ring && i < s->model->hp.n_layer; i++) {
        kvs_free(st->ring[i].kv);
        kvs_free(st->iring[i].kv);
    }
    kvs_free(st->ring);
    kvs_free(st->h);
    kvs_free(st);
    s->ext = NULL;
}

static kvs_status ds4_session_init(kvs_session *s) {
    const kvs_model *m = s->model;
    const ds4_model *x = m->ext;
    const kvs_hparams *hp = &m->hp;
    /* the attention reads a raw window of `window` tokens and one entry per ratio
     * tokens: KV rules may change formats and pages, not that geometry */
    for (int32_t i = 0; i < hp->n_layer; i++) {
        const kvs_kv_scheme *k = &s->kv->layers[i].scheme;
        int32_t r = x->layers[i].ratio;
        if (k->store != KVS_KV_STORE_COMPRESSED || k->compress_ratio != (uint32_t)r ||
            k->entry_dim != (uint32_t)hp->head_dim_k || k->window + k->sinks < (uint32_t)x->window ||
            k->indexer_dim != (r == 4 ? (uint32_t)x->idx_dim : 0u))
            return kvs_fail(KVS_ERR_UNSUPPORTED, "deepseek4: layer %d needs its compressed KV scheme (ratio %d, "
                            "%d-dim entries, raw window >= %d); --kv-window/--kv-layer may only change element "
                            "formats and pages", i, r, hp->head_dim_k, x->window);
    }
    ds4_state *st = kvs_calloc(1, sizeof *st);
    if (!st) return kvs_fail(KVS_ERR_NOMEM, "session: out of memory");
    s->ext = st;
    const int32_t nl = hp->n_layer;
    st->ring = kvs_calloc((size_t)nl * 2, sizeof *st->ring);
    if (!st->ring) { ds4_session_free(s); return kvs_fail(KVS_ERR_NOMEM, "session: out of memory"); }
    st->iring = st->ring + nl;
    for (int32_t i = 0; i < nl; i++) {
        const ds4_layer *w = &x->layers[i];
        for (int k = 0; k < 2; k++) {
            const ds4_comp *c = k ? &w->icomp : &w->comp;
            ds4_ring *r = k ? &st->iring[i] : &st->ring[i];
            if (!w->ratio || (k && w->ratio != 4)) continue;
            size_t rows = (size_t)c->coff * w->ratio, width = (size_t)c->coff * c->d;
            r->kv = kvs_malloc(sizeof(float) * rows * width * 2);
            if (!r->kv) { ds4_session_free(s); return kvs_fail(KVS_ERR_NOMEM, "session: out of memory"); }
            r->score = r->kv + rows * width;
        }
    }
    const size_t B = s->params.n_batch, D = (size_t)hp->n_embd, hc = (size_t)x->hc, mix = (2 + hc) * hc;
    const size_t qd = (size_t)hp->n_head * hp->head_dim_k, hd = (size_t)hp->head_dim_k;
    const size_t cw = 2 * (hd > (size_t)x->idx_dim ? hd : (size_t)x->idx_dim);
    const size_t F = (size_t)x->n_ff, E = (size_t)x->n_expert, K = (size_t)x->n_used;
    const size_t G = (size_t)x->o_groups * x->o_lora;
    const size_t ni = (size_t)x->idx_heads * x->idx_dim;
    size_t sizes[] = {B * hc * D, B * mix, B * hc, B * hc, B * hc * hc, B * D, B * D, B * D,
                      B * x->q_lora, B * qd, B * hd, B * qd, B * qd, B * G, B * cw, B * cw,
                      B * ni + 1, B * x->idx_heads + 1, B * E, B * K, B * K, B, B * D, B * F, B * F, B * D,
                      B * F, B * F, hc * D, s->params.n_ctx / 4 + 2, s->params.n_ctx / 4 + 2};
    float **dst[] = {&st->h, &st->mix, &st->hpre, &st->hpost, &st->hcomb, &st->x, &st->xn, &st->out,
                     &st->qr, &st->q, &st->kv, &st->o, &st->og, &st->mid, &st->ckv, &st->csc,
                     &st->iq, &st->iw, &st->logit, &st->wts, (float **)&st->sel, (float **)&st->rows, &st->xg,
                     &st->gg, &st->uu, &st->dd, &st->shg, &st->shu, &st->tmp, &st->iscore,
                     &st->iselect};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) total += (sizes[i] + 15) & ~(size_t)15;
    float *p = kvs_malloc(sizeof(float) * total);
    if (!p) { ds4_session_free(s); return kvs_fail(KVS_ERR_NOMEM, "session: cannot allocate %zu bytes", total * 4); }
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        *dst[i] = p;
        p += (sizes[i] + 15) & ~(size_t)15;
    }
    return KVS_OK;
}

/* ---- mHC ------------------------------------------------------------------ */

static float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

/* pre/post/comb of one token from its mixes (see the Sinkhorn projection in
 * docs/arch-deepseek4.md): comb rows softmaxed, then column/row normalized. */
static void hc_split(const ds4_model *x, const float *mix, const float *scale, const float *base, float *pre,
                     float *post, float *comb) {
    const int hc = x->hc;
    const float eps = x->hc_eps;
    for (int i = 0; i < hc; i++) {
        pre[i] = sigmoidf(mix[i] * scale[0] + base[i]) + eps;
        post[i] = 2.0f * sigmoidf(mix[hc + i] * scale[1] + base[hc + i]);
    }
    for (int i = 0; i < hc; i++) {
        float *r = comb + i * hc, mx = -INFINITY, sum = 0;
        for (int j = 0; j < hc; j++) {
            r[j] = mix[2 * hc + i * hc + j] * scale[2] + base[2 * hc + i * hc + j];
            mx = r[j] > mx ? r[j] : mx;
        }
        for (int j = 0; j < hc; j++) sum += (r[j] = expf(r[j] - mx));
        for (int j = 0; j < hc; j++) r[j] = r[j] / sum + eps;
    }
    for (int it = 0; it < x->sinkhorn_iters; it++) {
        if (it > 0)
            for (int i = 0; i < hc; i++) {
                float sum = eps;
                for (int j = 0; j < hc; j++) sum += comb[i * hc + j];
                for (int j = 0; j < hc; j++) comb[i * hc + j] /= sum;
            }
        for (int j = 0; j < hc; j++) {
            float sum = eps;
            for (int i = 0; i < hc; i++) sum += comb[i * hc + j];
            for (int i = 0; i < hc; i++) comb[i * hc + j] /= sum;
        }
    }
}

/* mixes = fn @ flat(h) * rsqrt(mean(flat(h)^2) + eps), for n tokens. */
static kvs_status hc_mixes(kvs_session *s, const kvs_weight *fn, int64_t n) {
    ds4_state *st = s->ext;
    const int64_t w = fn->n_in, mix = fn->n_out;
    kvs_mm_out o = {.w = fn, .y = st->mix, .y_stride = mix};
    KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->h, n, &o, 1));
    for (int64_t t = 0; t < n; t++) {
        const float *h = st->h + t * w;
        double ss = 0;
        for (int64_t i = 0; i < w; i++) ss += (double)h[i] * h[i];
        float r = (float)(1.0 / sqrt(ss / (double)w + s->model->hp.norm_eps));
        for (int64_t i = 0; i < mix; i++) st->mix[t * mix + i] *= r;
    }
    return KVS_OK;
}

/* Sublayer input: y = sum_i pre_i h_i, xn = rmsnorm(y) * norm. */
static kvs_status hc_pre(kvs_session *s, const ds4_layer *w, int k, const float *norm, int64_t n) {
    ds4_state *st = s->ext;
    const ds4_model *x = s->model->ext;
    const int64_t D = s->model->hp.n_embd, hc = x->hc, mix = (2 + hc) * hc;
    KVS_TRY(hc_mixes(s, &w->hc_fn[k], n));
    for (int64_t t = 0; t < n; t++) {
        float *pre = st->hpre + t * hc;
        hc_split(x, st->mix + t * mix, w->hc_scale[k], w->hc_base[k], pre, st->hpost + t * hc, st->hcomb + t * hc * hc);
        float *y = st->x + t * D;
        const float *h = st->h + t * hc * D;
        for (int64_t d = 0; d < D; d++) {
            float a = 0;
            for (int64_t i = 0; i < hc; i++) a += pre[i] * h[i * D + d];
            y[d] = a;
        }
    }
    kvs_rmsnorm(st->xn, st->x, norm, n, D, s->model->hp.norm_eps);
    return KVS_OK;
}

/* h_j <- post_j * out + sum_i comb[i][j] * h_i. */
static void hc_post(kvs_session *s, int64_t n) {
    ds4_state *st = s->ext;
    const ds4_model *x = s->model->ext;
    const int64_t D = s->model->hp.n_embd, hc = x->hc;
    for (int64_t t = 0; t < n; t++) {
        float *h = st->h + t * hc * D;
        const float *post = st->hpost + t * hc, *comb = st->hcomb + t * hc * hc, *out = st->out + t * D;
        memcpy(st->tmp, h, sizeof(float) * (size_t)(hc * D));
        for (int64_t j = 0; j < hc; j++) {
            float *hj = h + j * D;
            for (int64_t d = 0; d < D; d++) hj[d] = post[j] * out[d];
            for (int64_t i = 0; i < hc; i++) {
                const float c = comb[i * hc + j], *hi = st->tmp + i * D;
                for (int64_t d = 0; d < D; d++) hj[d] += c * hi[d];
            }
        }
    }
}

/* ---- MoE ------------------------------------------------------------------ */

/* gate := silu(min(gate, c)) * clamp(up, -c, c) (no clamp when c <= 0). */
static void swiglu_clamped(float *gate, const float *up, int64_t n, float c) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], u = up[i];
        if (c > 0) {
            g = g < c ? g : c;
            u = u < -c ? -c : u > c ? c : u;
        }
        gate[i] = g / (1.0f + expf(-g)) * u;
    }
}

static kvs_status moe(kvs_session *s, const ds4_layer *w, const kvs_token *tokens, int64_t n) {
    ds4_state *st = s->ext;
    const ds4_model *x = s->model->ext;
    const int64_t D = s->model->hp.n_embd, E = x->n_expert, K = x->n_used, F = x->n_ff;
    /* shared expert over all tokens */
    kvs_mm_out gu[3] = {
        {.w = &w->gate_sh, .y = st->shg, .y_stride = F},
        {.w = &w->up_sh, .y = st->shu, .y_stride = F},
        {.w = &w->gate_inp, .y = st->logit, .y_stride = E},
    };
    KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->xn, n, gu, 3));
    swiglu_clamped(st->shg, st->shu, n * F, w->clamp_sh);
    kvs_mm_out dn = {.w = &w->down_sh, .y = st->out, .y_stride = D};
    KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->shg, n, &dn, 1));
    /* routing: scores sqrt(softplus(logit)); top-k of score + bias, or the token's hash ids */
    for (int64_t t = 0; t < n; t++) {
        float *sc = st->logit + t * E;
        for (int64_t e = 0; e < E; e++) {
            float v = sc[e];
            sc[e] = sqrtf(v > 20.0f ? v : log1pf(expf(v)));
        }
        int32_t *sel = st->sel + t * K;
        if (w->tid2eid) {
            for (int64_t k = 0; k < K; k++) sel[k] = w->tid2eid[(int64_t)tokens[t] * K + k];
        } else {
            for (int64_t k = 0; k < K; k++) { /* K is small: repeated argmax, lower index wins ties */
                int32_t best = -1;
                float bv = -INFINITY;
                for (int32_t e = 0; e < E; e++) {
                    bool used = false;
                    for (int64_t j = 0; j < k; j++) used |= sel[j] == e;
                    float v = sc[e] + (w->exp_bias ? w->exp_bias[e] : 0.0f);
                    if (!used && (best < 0 || v > bv)) { best = e; bv = v; }
                }
                sel[k] = best;
            }
        }
        float sum = 0, *wt = st->wts + t * K;
        for (int64_t k = 0; k < K; k++) sum += (wt[k] = sc[sel[k]]);
        if (!x->route_norm) sum = 1.0f;
        for (int64_t k = 0; k < K; k++) wt[k] = wt[k] / sum * x->route_scale;
    }
    /* each expert over the tokens routed to it, as one batch */
    for (int32_t e = 0; e < E; e++) {
        int64_t m = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t k = 0; k < K; k++)
                if (st->sel[t * K + k] == e) {
                    st->rows[m] = (int32_t)(t * K + k);
                    memcpy(st->xg + m * D, st->xn + t * D, sizeof(float) * (size_t)D);
                    m++;
                }
        if (!m) continue;
        kvs_mm_out eu[2] = {
            {.w = &w->gate_exps[e], .y = st->gg, .y_stride = F},
            {.w = &w->up_exps[e], .y = st->uu, .y_stride = F},
        };
        KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->xg, m, eu, 2));
        swiglu_clamped(st->gg, st->uu, m * F, w->clamp);
        for (int64_t r = 0; r < m; r++) {
            float c = st->wts[st->rows[r]];
            for (int64_t i = 0; i < F; i++) st->gg[r * F + i] *= c;
        }
        kvs_mm_out ed = {.w = &w->down_exps[e], .y = st->dd, .y_stride = D};
        KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->gg, m, &ed, 1));
        for (int64_t r = 0; r < m; r++) kvs_add(st->out + (st->rows[r] / K) * D, st->dd + r * D, D);
    }
    return KVS_OK;
}

/* ---- forward -------------------------------------------------------------- */

static kvs_status ds4_forward(kvs_session *s, const kvs_token *tokens, int64_t n, bool all_logits, float *logits) {
    const kvs_model *m = s->model;
    const kvs_hparams *hp = &m->hp;
    const ds4_model *x = m->ext;
    ds4_state *st = s->ext;
    const int64_t D = hp->n_embd, hc = x->hc;
    for (int64_t t = 0; t < n; t++) {
        float *h = st->h + t * hc * D;
        kvs_get_row(h, m->tok_embd.data, m->tok_embd.type, D, tokens[t]);
        for (int64_t i = 1; i < hc; i++) memcpy(h + i * D, h, sizeof(float) * (size_t)D);
    }
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const ds4_layer *w = &x->layers[l];
        KVS_TRY(hc_pre(s, w, 0, w->attn_norm, n));
        KVS_TRY(ds4_attention(s, l, n));
        hc_post(s, n);
        KVS_TRY(hc_pre(s, w, 1, w->ffn_norm, n));
        KVS_TRY(moe(s, w, tokens, n));
        hc_post(s, n);
    }
    if (logits) {
        int64_t first = all_logits ? 0 : n - 1, rows = n - first;
        /* head: y = sum_i (sigmoid(mix_i * scale + base_i) + eps) h_i over the kept rows */
        if (first) memmove(st->h, st->h + first * hc * D, sizeof(float) * (size_t)(rows * hc * D));
        KVS_TRY(hc_mixes(s, &x->hc_head_fn, rows));
        for (int64_t t = 0; t < rows; t++) {
            float pre[DS4_MAX_HC];
            for (int64_t i = 0; i < hc; i++)
                pre[i] = sigmoidf(st->mix[t * hc + i] * x->hc_head_scale[0] + x->hc_head_base[i]) + x->hc_eps;
            const float *h = st->h + t * hc * D;
            for (int64_t d = 0; d < D; d++) {
                float a = 0;
                for (int64_t i = 0; i < hc; i++) a += pre[i] * h[i * D + d];
                st->x[t * D + d] = a;
            }
        }
        kvs_rmsnorm(st->xn, st->x, m->output_norm, rows, D, hp->norm_eps);
        kvs_mm_out lo = {.w = &m->output, .y = logits, .y_stride = hp->n_vocab};
        KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->xn, rows, &lo, 1));
    }
    return KVS_OK;
}

const kvs_arch_ops kvs_arch_deepseek4 = {
    .name = "deepseek4",
    .load = load_deepseek4,
    .default_schemes = ds4_schemes,
    .session_init = ds4_session_init,
    .session_free = ds4_session_free,
    .forward = ds4_forward,
    .sequence_state = true, /* the compressors' rings */
};
