/* HF config.json -> planner model. Reads the attention shape per layer
 * (GQA, sliding windows via layer_types / sliding_window_pattern, KV sharing
 * via num_kv_shared_layers, MLA via kv_lora_rank, DSA indexer keys via
 * index_head_dim, DeepSeek V4 compression via compress_ratios) and estimates
 * parameter counts from the dimensions (dense and MoE, active vs total).
 * Multimodal configs keep the language model under "text_config". KV element
 * format: bf16 (configs do not say how a cache is stored; use --kv). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "plan/plan.h"

typedef struct cfg {
    const kvs_json *t, *top;  /* text_config (or top) and the top object */
} cfg;

static const kvs_json *cget(const cfg *c, const char *key) {
    const kvs_json *v = kvs_json_get(c->t, key);
    if (!v && c->t != c->top) v = kvs_json_get(c->top, key);
    return v;
}

/* Integer field; *present false when absent or null. Error when present but
 * not a non-negative integer. */
static kvs_status cu32(const cfg *c, const char *key, uint32_t *out, bool *present) {
    const kvs_json *v = cget(c, key);
    *present = false;
    if (!v || v->type == KVS_JSON_NULL) return KVS_OK;
    if (v->type != KVS_JSON_NUMBER || !(v->num >= 0 && v->num < 4294967296.0) || v->num != floor(v->num))
        return kvs_fail(KVS_ERR_FORMAT, "config.json: \"%s\" must be a non-negative integer", key);
    *out = (uint32_t)v->num;
    *present = true;
    return KVS_OK;
}

#define REQ(key, var)                                                                          \
    do {                                                                                       \
        bool p_;                                                                               \
        kvs_status s_ = cu32(&c, key, &(var), &p_);                                            \
        if (s_ != KVS_OK) goto fail_st;                                                        \
        if (!p_) { st = kvs_fail(KVS_ERR_FORMAT, "config.json: missing \"%s\"", key); goto fail; } \
    } while (0)
#define OPT(key, var, def)                                                                     \
    do {                                                                                       \
        bool p_;                                                                               \
        kvs_status s_ = cu32(&c, key, &(var), &p_);                                            \
        if (s_ != KVS_OK) goto fail_st;                                                        \
        if (!p_) (var) = (def);                                                                \
    } while (0)

kvs_status kvs_plan_from_config_json(const char *text, size_t len, kvs_plan_model *out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "config.json: NULL output");
    memset(out, 0, sizeof *out);
    kvs_json *root = NULL;
    kvs_status st = kvs_json_parse(text, len, &root);
    if (st != KVS_OK) return st;
    if (root->type != KVS_JSON_OBJECT) {
        kvs_json_free(root);
        return kvs_fail(KVS_ERR_FORMAT, "config.json: top level must be an object");
    }
    cfg c = {root, root};
    const kvs_json *tc = kvs_json_get(root, "text_config");
    if (tc && tc->type == KVS_JSON_OBJECT) c.t = tc;

    uint32_t nl, nh, nkv, hd, hidden, vocab, inter, ctx, window, n_shared, kv_lora, rope, v_hd, nope, q_lora;
    uint32_t idx_dim, idx_topk, n_exp, n_exp_used, moe_inter, n_shared_exp, first_dense, swp, ghd, gkv;
    REQ("num_hidden_layers", nl);
    REQ("num_attention_heads", nh);
    OPT("num_key_value_heads", nkv, nh);
    OPT("hidden_size", hidden, 0);
    OPT("head_dim", hd, (hidden && nh) ? hidden / nh : 0);
    OPT("vocab_size", vocab, 0);
    OPT("intermediate_size", inter, 0);
    OPT("max_position_embeddings", ctx, 0);
    OPT("sliding_window", window, 0);
    OPT("num_kv_shared_layers", n_shared, 0);
    OPT("kv_lora_rank", kv_lora, 0);
    OPT("qk_rope_head_dim", rope, 0);
    OPT("qk_nope_head_dim", nope, 0);
    OPT("v_head_dim", v_hd, 0);
    OPT("q_lora_rank", q_lora, 0);
    OPT("index_head_dim", idx_dim, 0);
    OPT("index_topk", idx_topk, 0);
    OPT("n_routed_experts", n_exp, 0);
    if (n_exp == 0) OPT("num_experts", n_exp, 0);
    if (n_exp == 0) OPT("num_local_experts", n_exp, 0);
    OPT("num_experts_per_tok", n_exp_used, 0);
    OPT("moe_intermediate_size", moe_inter, inter);
    OPT("n_shared_experts", n_shared_exp, 0);
    OPT("first_k_dense_replace", first_dense, 0);
    OPT("sliding_window_pattern", swp, 0);
    if (swp == 0) OPT("_sliding_window_pattern", swp, 0);
    OPT("global_head_dim", ghd, hd);
    OPT("num_global_key_value_heads", gkv, nkv);
    uint32_t shared_exp_inter = 0;
    OPT("shared_expert_intermediate_size", shared_exp_inter, 0);
    if (shared_exp_inter && !n_shared_exp) n_shared_exp = 1;
    if (!shared_exp_inter) shared_exp_inter = moe_inter;

    if (nl == 0 || nl > 100000) { st = kvs_fail(KVS_ERR_FORMAT, "config.json: num_hidden_layers %u out of range", nl); goto fail; }
    if (nh == 0 || nkv == 0 || nkv > nh) { st = kvs_fail(KVS_ERR_FORMAT, "config.json: bad head counts (heads %u, kv heads %u)", nh, nkv); goto fail; }
    if (!kv_lora && hd == 0) { st = kvs_fail(KVS_ERR_FORMAT, "config.json: cannot tell head_dim (need head_dim or hidden_size)"); goto fail; }
    if (hd > 65536 || ghd > 65536 || kv_lora > 65536 || rope > 65536 || idx_dim > 65536) {
        st = kvs_fail(KVS_ERR_FORMAT, "config.json: head dimension out of range"); goto fail;
    }
    if (n_shared >= nl) { st = kvs_fail(KVS_ERR_FORMAT, "config.json: num_kv_shared_layers %u >= layers %u", n_shared, nl); goto fail; }

    const char *mt = kvs_json_get_str(c.t, "model_type");
    if (!mt) mt = kvs_json_get_str(root, "model_type");
    if (!mt) mt = "unknown";
    bool use_sw = true;
    if (kvs_json_get_bool(c.t, "use_sliding_window", &use_sw) && !use_sw) window = 0;

    const kvs_json *types = cget(&c, "layer_types");
    if (types && types->type != KVS_JSON_ARRAY && types->type != KVS_JSON_NULL) {
        st = kvs_fail(KVS_ERR_FORMAT, "config.json: \"layer_types\" must be an array"); goto fail;
    }
    if (types && types->type == KVS_JSON_ARRAY && types->n != nl) {
        st = kvs_fail(KVS_ERR_FORMAT, "config.json: layer_types has %zu entries for %u layers", types->n, nl); goto fail;
    }
    const kvs_json *ratios = cget(&c, "compress_ratios");
    if (ratios && ratios->type != KVS_JSON_ARRAY && ratios->type != KVS_JSON_NULL) {
        st = kvs_fail(KVS_ERR_FORMAT, "config.json: \"compress_ratios\" must be an array"); goto fail;
    }
    if (ratios && ratios->type == KVS_JSON_ARRAY && ratios->n < nl) {
        st = kvs_fail(KVS_ERR_FORMAT, "config.json: compress_ratios has %zu entries for %u layers", ratios->n, nl); goto fail;
    }
    if (!strncmp(mt, "gemma3", 6) && swp == 0 && !types) swp = 6;

    st = kvs_plan_model_init(out, nl);
    if (st != KVS_OK) goto fail_st;
    snprintf(out->name, sizeof out->name, "%s", mt);
    snprintf(out->arch, sizeof out->arch, "%s", mt);
    out->n_ctx_train = ctx;
    out->n_embd = hidden;
    out->n_head = nh;

    uint32_t first_shared = nl - n_shared;
    int32_t last_local = -1, last_global = -1;
    for (uint32_t i = 0; i < nl; i++) {
        kvs_plan_layer *L = &out->layers[i];
        bool local = window > 0;
        if (types && types->type == KVS_JSON_ARRAY) {
            const kvs_json *ty = kvs_json_at(types, i);
            if (!ty || ty->type != KVS_JSON_STRING) {
                st = kvs_fail(KVS_ERR_FORMAT, "config.json: layer_types[%u] must be a string", i); goto fail_model;
            }
            local = strstr(ty->str, "sliding") != NULL || strstr(ty->str, "local") != NULL;
            if (local && window == 0) {
                st = kvs_fail(KVS_ERR_FORMAT, "config.json: layer %u is sliding but sliding_window is missing", i); goto fail_model;
            }
        } else if (swp) {
            local = window > 0 && (i % swp) != swp - 1;
        }
        if (ratios && ratios->type == KVS_JSON_ARRAY) {
            const kvs_json *r = kvs_json_at(ratios, i);
            if (!r || r->type != KVS_JSON_NUMBER || r->num < 0 || r->num > 1048576 || r->num != floor(r->num)) {
                st = kvs_fail(KVS_ERR_FORMAT, "config.json: compress_ratios[%u] must be an integer >= 0", i); goto fail_model;
            }
            L->kv = kvs_kv_scheme_full(0, 0, 0, KVS_TYPE_BF16);
            L->kv.store = KVS_KV_STORE_COMPRESSED;
            L->kv.compress_ratio = (uint32_t)r->num;
            L->kv.entry_dim = hd;
            L->kv.window = window ? window : 128;
            if (L->kv.compress_ratio && L->kv.compress_ratio <= 4 && idx_dim) {
                L->kv.indexer_dim = idx_dim;
                L->read_topk = idx_topk;
            }
            continue;
        }
        if (i >= first_shared) {
            int32_t src = local ? last_local : last_global;
            if (src < 0) src = local ? last_global : last_local;
            if (src < 0) { st = kvs_fail(KVS_ERR_FORMAT, "config.json: shared layer %u has no source layer", i); goto fail_model; }
            L->kv = out->layers[src].kv;
            L->kv.store = KVS_KV_STORE_SHARED;
            L->kv.shared_from = src;
            continue;
        }
        if (kv_lora) {
            L->kv = kvs_kv_scheme_full(0, 0, 0, KVS_TYPE_BF16);
            L->kv.store = KVS_KV_STORE_LATENT;
            L->kv.latent_rank = kv_lora;
            L->kv.rope_dim = rope;
            if (idx_dim) { L->kv.indexer_dim = idx_dim; L->read_topk = idx_topk; }
        } else if (local) {
            L->kv = kvs_kv_scheme_full(nkv, hd, hd, KVS_TYPE_BF16);
            L->kv.window = window;
        } else {
            L->kv = kvs_kv_scheme_full(gkv, ghd, ghd, KVS_TYPE_BF16);
        }
        if (local) last_local = (int32_t)i; else last_global = (int32_t)i;
    }

    /* Parameter estimate from the dimensions. */
    {
        double H = hidden, V = vocab, total = 0, active = 0;
        bool tie = false;
        if (!kvs_json_get_bool(c.t, "tie_word_embeddings", &tie)) (void)kvs_json_get_bool(root, "tie_word_embeddings", &tie);
        total = V * H * (tie ? 1 : 2);
        active = total;
        for (uint32_t i = 0; i < nl; i++) {
            double attn;
            if (kv_lora) {
                double qk = (double)(nope ? nope : 128) + rope, vh = v_hd ? v_hd : 128;
                attn = (q_lora ? H * q_lora + (double)q_lora * nh * qk : H * nh * qk) + H * ((double)kv_lora + rope) +
                       (double)kv_lora * nh * ((nope ? nope : 128) + vh) + nh * vh * H;
            } else {
                attn = H * nh * hd + 2 * H * nkv * hd + (double)nh * hd * H;
            }
            double mlp_t, mlp_a;
            if (n_exp && i >= first_dense) {
                double ex = 3 * H * moe_inter;
                mlp_t = n_exp * ex + n_shared_exp * 3 * H * shared_exp_inter + H * n_exp;
                mlp_a = n_exp_used * ex + n_shared_exp * 3 * H * shared_exp_inter + H * n_exp;
            } else {
                mlp_t = mlp_a = 3 * H * inter;
            }
            total += attn + mlp_t;
            active += attn + mlp_a;
        }
        out->params_total = total;
        out->params_active = active;
        double bits = 16;
        const char *fmt = "bf16 (torch_dtype)";
        const char *dt = kvs_json_get_str(c.t, "torch_dtype");
        if (!dt) dt = kvs_json_get_str(root, "torch_dtype");
        if (dt && !strcmp(dt, "float32")) { bits = 32; fmt = "f32 (torch_dtype)"; }
        const kvs_json *q = kvs_json_get(root, "quantization_config");
        const char *qm = q ? kvs_json_get_str(q, "quant_method") : NULL;
        if (qm && !strcmp(qm, "fp8")) { bits = 8; fmt = "fp8 (quantization_config)"; }
        kvs_plan_model_set_weight_bits(out, bits, fmt);
    }
    snprintf(out->source, sizeof out->source, "config.json (model_type %s); parameter counts estimated from dimensions", mt);
    for (uint32_t i = 0; i < nl; i++) {
        if (kvs_kv_scheme_validate(&out->layers[i].kv) != KVS_OK) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s", kvs_last_error());
            st = kvs_fail(KVS_ERR_FORMAT, "config.json: layer %u: %s", i, msg);
            goto fail_model;
        }
    }
    kvs_json_free(root);
    return KVS_OK;

fail_model:
    kvs_plan_model_free(out);
    kvs_json_free(root);
    return st;
fail_st:
    st = KVS_ERR_FORMAT;
fail:
    kvs_plan_model_free(out);
    kvs_json_free(root);
    return st;
}

kvs_status kvs_plan_from_config_file(const char *path, kvs_plan_model *out) {
    if (!path || !out) return kvs_fail(KVS_ERR_INVALID_ARG, "--config: missing path");
    FILE *f = fopen(path, "rb");
    if (!f) return kvs_fail(KVS_ERR_IO, "--config: cannot open '%s'", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = kvs_malloc(cap);
    if (!buf) { fclose(f); return kvs_fail(KVS_ERR_NOMEM, "--config: out of memory"); }
    for (;;) {
        if (n == cap) {
            if (cap >= ((size_t)64 << 20)) {
                kvs_free(buf); fclose(f);
                return kvs_fail(KVS_ERR_FORMAT, "--config: '%s' is larger than 64 MiB: not a config.json", path);
            }
            char *nb = kvs_realloc(buf, cap * 2);
            if (!nb) { kvs_free(buf); fclose(f); return kvs_fail(KVS_ERR_NOMEM, "--config: out of memory"); }
            buf = nb; cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) { kvs_free(buf); return kvs_fail(KVS_ERR_IO, "--config: read error on '%s'", path); }
    kvs_status st = kvs_plan_from_config_json(buf, n, out);
    kvs_free(buf);
    if (st == KVS_OK) {
        char tmp[sizeof out->source];
        memcpy(tmp, out->source, sizeof tmp);
        snprintf(out->source, sizeof out->source, "%.100s: %.200s", path, tmp);
    }
    return st;
}
