/* Shared GGUF hyper-parameter checks (see hparams.h). */
#include "model/hparams.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "model/loader.h"
#include "model/model.h"

static const char *key_of(char *buf, size_t cap, const char *arch, const char *suffix) {
    snprintf(buf, cap, "%s.%s", arch, suffix);
    return buf;
}

kvs_status kvs_hp_context_length(const kvs_gguf *g, const char *arch, uint32_t def, uint32_t *out) {
    char k[160];
    key_of(k, sizeof k, arch, "context_length");
    if (!kvs_gguf_find(g, k)) { *out = def; return KVS_OK; }
    uint64_t v;
    if (!kvs_gguf_get_u64(g, k, &v)) return kvs_fail(KVS_ERR_FORMAT, "'%s' is not a token count", k);
    if (v == 0 || v > KVS_MAX_CTX)
        return kvs_fail(KVS_ERR_FORMAT, "'%s' = %llu is out of range (1 to %u tokens, the largest context a session takes)",
                        k, (unsigned long long)v, KVS_MAX_CTX);
    *out = (uint32_t)v;
    return KVS_OK;
}

#define MAX_HEADS (1u << 24)

kvs_status kvs_hp_head_count(const kvs_gguf *g, const char *arch, const char *suffix, uint32_t n_layer, bool *present,
                             uint32_t *out) {
    char k[160];
    key_of(k, sizeof k, arch, suffix);
    const kvs_gguf_kv *kv = kvs_gguf_find(g, k);
    *present = kv != NULL;
    if (!kv) return KVS_OK;
    int64_t v;
    if (kv->type == KVS_GGUF_ARRAY) {
        const uint32_t et = kv->v.arr.type;
        if (et == KVS_GGUF_STRING || et == KVS_GGUF_F32 || et == KVS_GGUF_F64 || et == KVS_GGUF_BOOL)
            return kvs_fail(KVS_ERR_FORMAT, "'%s' is an array of %s, not of head counts", k, kvs_gguf_vtype_name(et));
        if (kv->v.arr.n != n_layer)
            return kvs_fail(KVS_ERR_FORMAT, "'%s' has %llu per-layer values for %u layers", k,
                            (unsigned long long)kv->v.arr.n, n_layer);
        v = n_layer ? kvs_gguf_arr_int(kv, 0) : 0;
        for (uint32_t i = 1; i < n_layer; i++) {
            int64_t vi = kvs_gguf_arr_int(kv, i);
            if (vi != v)
                return kvs_fail(KVS_ERR_UNSUPPORTED,
                                "'%s' differs between layers (%lld in layer 0, %lld in layer %u): per-layer %s counts "
                                "are not supported for architecture %s", k, (long long)v, (long long)vi, i,
                                strstr(suffix, "_kv") ? "KV head" : "head", arch);
        }
    } else {
        uint64_t u;
        if (!kvs_gguf_get_u64(g, k, &u)) return kvs_fail(KVS_ERR_FORMAT, "'%s' is not a head count", k);
        v = u > MAX_HEADS ? (int64_t)MAX_HEADS + 1 : (int64_t)u;
    }
    if (v < 1 || v > (int64_t)MAX_HEADS)
        return kvs_fail(KVS_ERR_FORMAT, "'%s' = %lld is out of range (1 to %u)", k, (long long)v, MAX_HEADS);
    *out = (uint32_t)v;
    return KVS_OK;
}

kvs_status kvs_hp_positive_f32(const kvs_gguf *g, const char *arch, const char *suffix, float def, float max,
                               float *out) {
    char k[160];
    key_of(k, sizeof k, arch, suffix);
    if (!kvs_gguf_find(g, k)) { *out = def; return KVS_OK; }
    float v;
    if (!kvs_gguf_get_f32(g, k, &v)) return kvs_fail(KVS_ERR_FORMAT, "'%s' is not a float", k);
    if (!(v > 0.0f && v <= max)) /* NaN fails both */
        return kvs_fail(KVS_ERR_FORMAT, "'%s' = %g: want a finite number above 0 and at most %g", k, (double)v, (double)max);
    *out = v;
    return KVS_OK;
}

kvs_status kvs_hp_check_plan(const kvs_gguf *g, const char *arch, uint32_t n_layer) {
    uint32_t v;
    bool present;
    KVS_TRY(kvs_hp_context_length(g, arch, 0, &v));
    const kvs_arch_ops *ops = kvs_arch_find(arch);
    if (!ops || !ops->one_head_count) return KVS_OK;
    KVS_TRY(kvs_hp_head_count(g, arch, "attention.head_count", n_layer, &present, &v));
    KVS_TRY(kvs_hp_head_count(g, arch, "attention.head_count_kv", n_layer, &present, &v));
    return KVS_OK;
}
