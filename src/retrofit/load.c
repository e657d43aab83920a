/* Loading a retrofitted (compressed) model: the kvslim.latent.* and
 * kvslim.kv.rules metadata and the per-layer projection tensors, validated
 * against the model's geometry, and the per-layer schemes they imply. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kv/kv_spec.h"
#include "model/loader.h"
#include "retrofit/retrofit.h"

/* blk.N.<suffix> as an F32 matrix [cols, rows] (GGUF ne order). */
static kvs_status load_basis(kvs_loader *L, int32_t layer, const char *suffix, int32_t rows, int32_t cols,
                             const float **out) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", layer, suffix);
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(L->m->gguf, name);
    if (!t) return kvs_fail(KVS_ERR_FORMAT, "model: %s says layer %d is latent but tensor '%s' is missing",
                            KVS_RETRO_KEY_RANKS, layer, name);
    if (t->type != KVS_TYPE_F32 || t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows ||
        ((uintptr_t)t->data % sizeof(float)))
        return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s' must be F32 [%d, %d] (got type %u, %u dims, [%lld, %lld])",
                        name, cols, rows, t->type, t->n_dims, (long long)t->ne[0], (long long)t->ne[1]);
    *out = t->data;
    return KVS_OK;
}

/* Optional blk.N.<suffix> of n positive scales (absent: all 1). */
static kvs_status load_scale(kvs_loader *L, int32_t layer, const char *suffix, int32_t n, const float **out) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", layer, suffix);
    *out = NULL;
    if (!n) return KVS_OK;
    KVS_TRY(kvs_load_vector(L, name, n, out, false));
    for (int32_t j = 0; *out && j < n; j++)
        if (!((*out)[j] > 0) || !isfinite((*out)[j]))
            return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s': entry %d (%g) is not a positive scale", name, j,
                            (double)(*out)[j]);
    return KVS_OK;
}

/* "rk/rv/keep;rk/rv/keep;..." with exactly n_layer entries. */
static kvs_status parse_ranks(const char *s, kvs_retro *r, const kvs_hparams *hp) {
    int32_t kd = hp->n_head_kv * hp->head_dim_k, vd = hp->n_head_kv * hp->head_dim_v;
    const char *p = s;
    for (int32_t i = 0; i < r->n_layer; i++) {
        char *end;
        long v[3];
        for (int j = 0; j < 3; j++) {
            v[j] = strtol(p, &end, 10);
            if (end == p || v[j] < 0 || (j < 2 && *end != '/') || (j == 2 && *end != ';' && *end != '\0'))
                return kvs_fail(KVS_ERR_FORMAT, "model: %s: cannot read layer %d's entry (want rk/rv/keep;...)",
                                KVS_RETRO_KEY_RANKS, i);
            p = end + 1;
        }
        if (v[0] > kd || v[1] > vd || v[2] > kd || v[0] + v[2] > kd || (v[0] + v[2] == 0) != (v[1] == 0) ||
            (r->mode == KVS_RETRO_PRE && v[2]))
            return kvs_fail(KVS_ERR_FORMAT, "model: %s: layer %d ranks %ld/%ld/%ld do not fit K %d, V %d (mode %s)",
                            KVS_RETRO_KEY_RANKS, i, v[0], v[1], v[2], kd, vd,
                            r->mode == KVS_RETRO_PRE ? "pre" : "keep");
        r->layers[i].rk = (int32_t)v[0];
        r->layers[i].rv = (int32_t)v[1];
        r->layers[i].keep = (int32_t)v[2];
        if (*end == '\0' && i != r->n_layer - 1)
            return kvs_fail(KVS_ERR_FORMAT, "model: %s has %d entries, the model %d layers", KVS_RETRO_KEY_RANKS,
                            i + 1, r->n_layer);
        if (*end == '\0') p = end;
    }
    if (*p) return kvs_fail(KVS_ERR_FORMAT, "model: %s has more entries than the model's %d layers",
                            KVS_RETRO_KEY_RANKS, r->n_layer);
    return KVS_OK;
}

kvs_status kvs_retro_load(kvs_loader *L, const kvs_retro **out) {
    *out = NULL;
    kvs_model *m = L->m;
    const kvs_hparams *hp = &m->hp;
    const char *mode = kvs_gguf_get_str(m->gguf, KVS_RETRO_KEY_MODE);
    const char *ranks = kvs_gguf_get_str(m->gguf, KVS_RETRO_KEY_RANKS);
    const char *rules = kvs_gguf_get_str(m->gguf, KVS_RETRO_KEY_RULES);
    if (!mode && !ranks && !rules) return KVS_OK;
    kvs_retro *r = kvs_load_alloc(L, sizeof *r);
    if (!r) return KVS_ERR_NOMEM;
    r->n_layer = hp->n_layer;
    r->layers = kvs_load_alloc(L, sizeof *r->layers * (size_t)hp->n_layer);
    if (!r->layers) return KVS_ERR_NOMEM;
    if (rules) {
        /* check the grammar now, so a bad file fails at load, not per session */
        kvs_kv_scheme *tmp = kvs_load_alloc(L, sizeof *tmp * (size_t)hp->n_layer);
        if (!tmp) return KVS_ERR_NOMEM;
        kvs_model_full_schemes(m, KVS_TYPE_F16, tmp);
        if (kvs_kv_spec_apply(tmp, hp->n_layer, rules) != KVS_OK)
            return kvs_fail(KVS_ERR_FORMAT, "model: %s: %s", KVS_RETRO_KEY_RULES, kvs_last_error());
        r->rules = rules;
    }
    if (!mode != !ranks)
        return kvs_fail(KVS_ERR_FORMAT, "model: %s and %s must come together", KVS_RETRO_KEY_MODE, KVS_RETRO_KEY_RANKS);
    if (mode) {
        if (!strcmp(mode, "pre")) r->mode = KVS_RETRO_PRE;
        else if (!strcmp(mode, "keep")) r->mode = KVS_RETRO_KEEP;
        else return kvs_fail(KVS_ERR_FORMAT, "model: %s is '%s' (want pre or keep)", KVS_RETRO_KEY_MODE, mode);
        KVS_TRY(parse_ranks(ranks, r, hp));
        int32_t kd = hp->n_head_kv * hp->head_dim_k, vd = hp->n_head_kv * hp->head_dim_v;
        for (int32_t i = 0; i < hp->n_layer; i++) {
            kvs_retro_layer *rl = &r->layers[i];
            if (!rl->rv) continue;
            if (rl->rk) KVS_TRY(load_basis(L, i, KVS_RETRO_T_KBASIS, rl->rk, kd, &rl->k_basis));
            KVS_TRY(load_basis(L, i, KVS_RETRO_T_VBASIS, rl->rv, vd, &rl->v_basis));
            KVS_TRY(load_scale(L, i, KVS_RETRO_T_KSCALE, rl->rk, &rl->k_scale));
            KVS_TRY(load_scale(L, i, KVS_RETRO_T_VSCALE, rl->rv, &rl->v_scale));
            KVS_TRY(load_scale(L, i, KVS_RETRO_T_KDIM, rl->rk ? kd : 0, &rl->k_dim));
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", i, KVS_RETRO_T_KMEAN);
            KVS_TRY(kvs_load_vector(L, name, kd, &rl->k_mean, false));
            snprintf(name, sizeof name, "blk.%d.%s", i, KVS_RETRO_T_VMEAN);
            KVS_TRY(kvs_load_vector(L, name, vd, &rl->v_mean, false));
            KVS_TRY(load_scale(L, i, KVS_RETRO_T_VDIM, vd, &rl->v_dim));
            if (!rl->keep) continue;
            snprintf(name, sizeof name, "blk.%d.%s", i, KVS_RETRO_T_KEEP);
            const float *idx;
            KVS_TRY(kvs_load_vector(L, name, rl->keep, &idx, true));
            rl->keep_idx = kvs_load_alloc(L, sizeof(int32_t) * (size_t)rl->keep);
            if (!rl->keep_idx) return KVS_ERR_NOMEM;
            for (int32_t j = 0; j < rl->keep; j++) {
                float f = idx[j];
                if (!(f >= 0 && f < kd) || f != (float)(int32_t)f || (j && (int32_t)f <= rl->keep_idx[j - 1]))
                    return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s': entry %d (%g) is not an ascending key dim < %d",
                                    name, j, (double)f, kd);
                rl->keep_idx[j] = (int32_t)f;
            }
        }
    }
    *out = r;
    return KVS_OK;
}

void kvs_retro_schemes(const kvs_model *m, const kvs_retro *r, kvs_dtype kv_type, kvs_kv_scheme *out) {
    kvs_model_full_schemes(m, kv_type, out);
    kvs_retro_apply_schemes(m, r, out);
}

const kvs_retro *kvs_retro_of(const kvs_model *m) {
    if (!m) return NULL;
    return m->ops->retro ? m->ops->retro(m) : NULL;
}

void kvs_retro_apply_schemes(const kvs_model *m, const kvs_retro *r, kvs_kv_scheme *out) {
    if (!r) return;
    for (int32_t i = 0; i < m->hp.n_layer && r->mode != KVS_RETRO_NONE; i++) {
        const kvs_retro_layer *rl = &r->layers[i];
        if (!rl->rv) continue;
        out[i].store = KVS_KV_STORE_LATENT;
        out[i].latent_rank = (uint32_t)rl->rv;
        out[i].rope_dim = (uint32_t)(rl->rk + rl->keep);
    }
    /* checked at load; a failure here would leave the schemes as they are */
    if (r->rules) (void)kvs_kv_spec_apply(out, m->hp.n_layer, r->rules);
}
