/* GGUF metadata -> planner model (no tensor data is read: the reader maps
 * the file and we only look at keys and tensor sizes). Uses the llama.cpp
 * key names: {arch}.block_count, .attention.head_count[_kv] (scalar or
 * per-layer array), .attention.key_length/.value_length,
 * .attention.sliding_window (+ .attention.sliding_window_pattern; for the
 * architectures the engine runs, their own reading: kvs_arch_ops.sliding_layers), .attention.kv_lora_rank with
 * .rope.dimension_count (deepseek2 MLA), .attention.shared_kv_layers
 * (gemma3n), .expert_count/.expert_used_count (MoE active bytes),
 * .attention.compress_ratios (+ .attention.indexer.key_length/.top_k,
 * deepseek4: the engine's COMPRESSED schemes, kvs_kv_scheme_compressed).
 * context_length and, for the architectures the engine runs, the head
 * counts pass the loader's own checks (model/hparams.h): plan and run
 * accept the same files.
 * A file written by `kvslim compress` (docs/compress.md) adds
 * kvslim.latent.ranks (its latent layers) and kvslim.kv.rules (formats,
 * shared layers), read here the way the engine reads them, so plan, info
 * and the allocator agree on its bytes.
 * Weight bytes are the exact tensor bytes; KV defaults to f16 (llama.cpp). */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/repack.h"
#include "gguf/gguf.h"
#include "kv/kv_spec.h"
#include "model/hparams.h"
#include "model/model.h"
#include "plan/plan.h"

/* kvslim compress keys (the engine's names: src/retrofit/retrofit.h). */
#define RETRO_KEY_RANKS "kvslim.latent.ranks"
#define RETRO_KEY_RULES "kvslim.kv.rules"

/* Latent layers ("rk/rv/keep;..." one per layer: row = rv + rk + keep
 * elements, as src/retrofit/load.c builds the scheme), then the rules. */
static kvs_status apply_retrofit(const kvs_gguf *g, const char *path, kvs_plan_model *out) {
    const char *ranks = kvs_gguf_get_str(g, RETRO_KEY_RANKS), *rules = kvs_gguf_get_str(g, RETRO_KEY_RULES);
    const uint32_t nl = out->n_layer;
    if (ranks) {
        const char *p = ranks;
        for (uint32_t i = 0; i < nl; i++) {
            long v[3];
            for (int j = 0; j < 3; j++) {
                char *end;
                v[j] = strtol(p, &end, 10);
                char want = j < 2 ? '/' : (i + 1 < nl ? ';' : '\0');
                if (end == p || v[j] < 0 || v[j] > 1000000 || *end != want)
                    return kvs_fail(KVS_ERR_FORMAT, "%s: %s: cannot read layer %u's entry (want rk/rv/keep;...)", path,
                                    RETRO_KEY_RANKS, i);
                p = end + (*end != '\0');
            }
            if (!v[1]) continue;
            kvs_kv_scheme *s = &out->layers[i].kv;
            *s = kvs_kv_scheme_full(0, 0, 0, KVS_TYPE_F16);
            s->store = KVS_KV_STORE_LATENT;
            s->latent_rank = (uint32_t)v[1];
            s->rope_dim = (uint32_t)(v[0] + v[2]);
        }
    }
    if (!rules) return KVS_OK;
    kvs_kv_scheme *tmp = kvs_calloc(nl, sizeof *tmp);
    if (!tmp) return kvs_fail(KVS_ERR_NOMEM, "plan: out of memory");
    for (uint32_t i = 0; i < nl; i++) tmp[i] = out->layers[i].kv;
    kvs_status st = kvs_kv_spec_apply(tmp, (int32_t)nl, rules);
    if (st == KVS_OK)
        for (uint32_t i = 0; i < nl; i++) out->layers[i].kv = tmp[i];
    kvs_free(tmp);
    if (st != KVS_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s", kvs_last_error());
        return kvs_fail(KVS_ERR_FORMAT, "%s: %s: %s", path, RETRO_KEY_RULES, msg);
    }
    return KVS_OK;
}

static bool key_u32(const kvs_gguf *g, const char *arch, const char *suffix, uint32_t *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return kvs_gguf_get_u32(g, key, out);
}

/* Per-layer value of a key that may be a scalar or an array. */
static bool key_layer_u32(const kvs_gguf *g, const char *arch, const char *suffix, uint32_t il, uint32_t *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return false;
    if (kv->type == KVS_GGUF_ARRAY) {
        if (il >= kv->v.arr.n || kv->v.arr.type == KVS_GGUF_STRING) return false;
        int64_t v = kvs_gguf_arr_int(kv, il);
        if (v < 0 || v > 0xFFFFFFFFLL) return false;
        *out = (uint32_t)v;
        return true;
    }
    return kvs_gguf_get_u32(g, key, out);
}

kvs_status kvs_plan_from_gguf(const char *path, kvs_plan_model *out) {
    if (!path || !out) return kvs_fail(KVS_ERR_INVALID_ARG, "-m: missing GGUF path");
    memset(out, 0, sizeof *out);
    kvs_gguf *g = NULL;
    kvs_status st = kvs_gguf_open(path, true, &g);
    if (st != KVS_OK) return st;
    const char *arch = kvs_gguf_get_str(g, "general.architecture");
    if (!arch) { kvs_gguf_close(g); return kvs_fail(KVS_ERR_FORMAT, "%s: no general.architecture key", path); }
    uint32_t nl = 0, nh = 0, embd = 0, ctx = 0, window = 0, kv_lora = 0, rope = 0, n_shared = 0, n_exp = 0, n_used = 0;
    if (!key_u32(g, arch, "block_count", &nl) || nl == 0 || nl > 100000) {
        /* the message first: arch points into g */
        st = kvs_fail(KVS_ERR_FORMAT, "%s: missing or bad %s.block_count (want 1 to 100000 layers)", path, arch);
        kvs_gguf_close(g);
        return st;
    }
    /* the loader's checks on what both read: an absurd context_length, and
     * per-layer head counts for an architecture the engine runs with one */
    if ((st = kvs_hp_check_plan(g, arch, nl)) != KVS_OK) {
        st = kvs_fail(st, "%s: %s", path, kvs_last_error());
        kvs_gguf_close(g);
        return st;
    }
    key_layer_u32(g, arch, "attention.head_count", 0, &nh);
    key_u32(g, arch, "embedding_length", &embd);
    key_u32(g, arch, "context_length", &ctx);
    key_u32(g, arch, "attention.sliding_window", &window);
    key_u32(g, arch, "attention.kv_lora_rank", &kv_lora);
    key_u32(g, arch, "rope.dimension_count", &rope);
    key_u32(g, arch, "attention.shared_kv_layers", &n_shared);
    key_u32(g, arch, "expert_count", &n_exp);
    key_u32(g, arch, "expert_used_count", &n_used);
    if (n_shared >= nl) n_shared = 0;

    char key[160];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", arch);
    const kvs_gguf_kv *pattern = kvs_gguf_find(g, key);
    uint32_t swp_scalar = 0;
    if (pattern && pattern->type != KVS_GGUF_ARRAY) kvs_gguf_get_u32(g, key, &swp_scalar);

    st = kvs_plan_model_init(out, nl);
    if (st != KVS_OK) { kvs_gguf_close(g); return st; }
    /* an architecture the engine runs says itself which layers slide (the
     * loader reads the same function); others follow the generic keys */
    const kvs_arch_ops *ops = kvs_arch_find(arch);
    bool *swa = NULL;
    if (window && ops && ops->sliding_layers) {
        if (!(swa = kvs_calloc(nl, sizeof *swa))) st = kvs_fail(KVS_ERR_NOMEM, "plan: out of memory");
        if (st == KVS_OK && (st = ops->sliding_layers(g, (int32_t)nl, swa)) != KVS_OK) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", kvs_last_error());
            st = kvs_fail(st, "%s: %s", path, msg);
        }
        if (st != KVS_OK) { kvs_free(swa); kvs_gguf_close(g); kvs_plan_model_free(out); return st; }
    }
    const char *name = kvs_gguf_get_str(g, "general.name");
    snprintf(out->name, sizeof out->name, "%s", name && *name ? name : arch);
    snprintf(out->arch, sizeof out->arch, "%s", arch);
    out->n_ctx_train = ctx;
    out->n_embd = embd;
    out->n_head = nh;

    /* DeepSeek V4 (llama.cpp's deepseek4 keys): per-layer compress_ratios,
     * the same COMPRESSED scheme the engine allocates (src/arch/deepseek4.c) */
    snprintf(key, sizeof key, "%s.attention.compress_ratios", arch);
    const kvs_gguf_kv *ratios = kvs_gguf_find(g, key);
    if (ratios && (ratios->type != KVS_GGUF_ARRAY || ratios->v.arr.type == KVS_GGUF_STRING || ratios->v.arr.n < nl))
        ratios = NULL;
    uint32_t idx_dim = 0, idx_topk = 0;
    key_u32(g, arch, "attention.indexer.key_length", &idx_dim);
    key_u32(g, arch, "attention.indexer.top_k", &idx_topk);

    uint32_t first_shared = nl - n_shared;
    int32_t last_local = -1, last_global = -1;
    for (uint32_t i = 0; i < nl; i++) {
        kvs_plan_layer *L = &out->layers[i];
        uint32_t h = nh, hkv = 0, dk = 0, dv = 0;
        key_layer_u32(g, arch, "attention.head_count", i, &h);
        if (!key_layer_u32(g, arch, "attention.head_count_kv", i, &hkv)) hkv = h;
        if (!key_u32(g, arch, "attention.key_length", &dk)) dk = h ? embd / h : 0;
        if (!key_u32(g, arch, "attention.value_length", &dv)) dv = dk;
        if (ratios) {
            int64_t r = kvs_gguf_arr_int(ratios, i);
            uint32_t ratio = r > 0 && r <= 65536 ? (uint32_t)r : 0;
            L->kv = kvs_kv_scheme_compressed(ratio, dk, ratio == 4 ? idx_dim : 0, window, KVS_TYPE_F16);
            L->read_topk = ratio == 4 ? idx_topk : 0;
            continue;
        }
        bool local = window > 0;
        if (swa)
            local = swa[i];
        else if (pattern && pattern->type == KVS_GGUF_ARRAY && i < pattern->v.arr.n && pattern->v.arr.type != KVS_GGUF_STRING)
            local = window > 0 && kvs_gguf_arr_int(pattern, i) != 0;
        else if (swp_scalar)
            local = window > 0 && (i % swp_scalar) != swp_scalar - 1;
        if (i >= first_shared) {
            int32_t src = local ? last_local : last_global;
            if (src < 0) src = local ? last_global : last_local;
            if (src >= 0) {
                L->kv = out->layers[src].kv;
                L->kv.store = KVS_KV_STORE_SHARED;
                L->kv.shared_from = src;
                continue;
            }
        }
        if (kv_lora) {
            L->kv = kvs_kv_scheme_full(0, 0, 0, KVS_TYPE_F16);
            L->kv.store = KVS_KV_STORE_LATENT;
            L->kv.latent_rank = kv_lora;
            L->kv.rope_dim = rope;
        } else if (hkv == 0) {
            L->kv.store = KVS_KV_STORE_NONE; /* recurrent / attention-free layer */
            continue;
        } else {
            L->kv = kvs_kv_scheme_full(hkv, dk, dv, KVS_TYPE_F16);
            if (local) L->kv.window = window;
        }
        if (local) last_local = (int32_t)i; else last_global = (int32_t)i;
    }

    kvs_free(swa);

    double total_b = 0, expert_b = 0, total_p = 0, expert_p = 0, repack_b = 0;
    const bool untied = kvs_gguf_find_tensor(g, "output.weight") != NULL;
    for (uint64_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        double ne = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) ne *= (double)t->ne[d];
        total_b += (double)t->nbytes;
        /* the loader's x8 copies (model/loader.c): 2-D matrices of the repacked types but the
         * embedding tables it reads row by row */
        const bool row_table = !strcmp(t->name.s, "per_layer_token_embd.weight") ||
                               (untied && !strcmp(t->name.s, "token_embd.weight"));
        if (t->n_dims == 2 && kvs_repack_supported(t->type) && !row_table)
            repack_b += (double)kvs_repack_bytes(t->type, (int64_t)t->ne[0], (int64_t)t->ne[1]);
        total_p += ne;
        if (strstr(t->name.s, "_exps")) { expert_b += (double)t->nbytes; expert_p += ne; }
    }
    double frac = (n_exp && n_used && n_used <= n_exp) ? (double)n_used / n_exp : 1.0;
    out->params_total = total_p;
    out->params_active = total_p - expert_p * (1.0 - frac);
    out->weight_bytes = total_b;
    out->active_weight_bytes = total_b - expert_b * (1.0 - frac);
    out->repack_bytes = repack_b;
    snprintf(out->weight_format, sizeof out->weight_format, "gguf tensors");
    snprintf(out->source, sizeof out->source, "%s (GGUF metadata, arch %s)", path, arch);
    st = apply_retrofit(g, path, out);
    kvs_gguf_close(g);
    if (st != KVS_OK) { kvs_plan_model_free(out); return st; }
    for (uint32_t i = 0; i < nl; i++) {
        if (kvs_kv_scheme_validate(&out->layers[i].kv) != KVS_OK) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s", kvs_last_error());
            kvs_plan_model_free(out);
            return kvs_fail(KVS_ERR_FORMAT, "%s: layer %u: %s", path, i, msg);
        }
    }
    return KVS_OK;
}
