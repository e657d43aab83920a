/* KV cache allocation from per-layer schemes and row stores; see kv_cache.h. */
#include "kv/kv_cache.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

kvs_status kvs_kv_cache_new(const kvs_kv_scheme *schemes, int32_t n_layers, uint32_t capacity,
                            kvs_kv_cache **out) {
    *out = NULL;
    if (n_layers <= 0 || capacity == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kv cache: need layers and a non-zero context");
    kvs_kv_cache *c = kvs_calloc(1, sizeof *c);
    kvs_kv_layer *L = kvs_calloc((size_t)n_layers, sizeof *L);
    if (!c || !L) { kvs_free(c); kvs_free(L); return kvs_fail(KVS_ERR_NOMEM, "kv cache: out of memory"); }
    c->n_layers = n_layers;
    c->capacity = capacity;
    c->layers = L;
    uint64_t total = 0;
    for (int32_t i = 0; i < n_layers; i++) {
        const kvs_kv_scheme *s = &schemes[i];
        L[i].scheme = *s;
        if (s->store == KVS_KV_STORE_SHARED || s->store == KVS_KV_STORE_NONE) continue;
        if (s->store != KVS_KV_STORE_FULL || s->layout != KVS_KV_LAYOUT_BLOCK || s->window) {
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d: scheme not supported yet", i);
        }
        L[i].k_row = kvs_row_bytes(s->k_type, s->head_dim_k);
        L[i].v_row = kvs_row_bytes(s->v_type, s->head_dim_v);
        if (!L[i].k_row || !L[i].v_row) {
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_UNSUPPORTED, "kv cache: layer %d: bad element type or head size", i);
        }
        L[i].k_head_stride = L[i].k_row * capacity;
        L[i].v_head_stride = L[i].v_row * capacity;
        L[i].bytes = kvs_kv_scheme_bytes(s, capacity);
        uint64_t layout_bytes = (uint64_t)(L[i].k_head_stride + L[i].v_head_stride) * s->n_kv_heads;
        if (L[i].bytes != layout_bytes) {
            kvs_kv_cache_free(c);
            return kvs_fail(KVS_ERR_INTERNAL, "kv cache: layer %d: scheme bytes %llu != layout %llu", i,
                            (unsigned long long)L[i].bytes, (unsigned long long)layout_bytes);
        }
        total += (L[i].bytes + 63) & ~(uint64_t)63;
    }
    if (total > SIZE_MAX / 2) { kvs_kv_cache_free(c); return kvs_fail(KVS_ERR_NOMEM, "kv cache: too large"); }
    c->block = kvs_aligned_alloc((size_t)total);
    if (!c->block && total) {
        kvs_kv_cache_free(c);
        return kvs_fail(KVS_ERR_NOMEM, "kv cache: cannot allocate %.1f MiB for %u tokens",
                        (double)total / 1048576.0, capacity);
    }
    uint8_t *p = c->block;
    for (int32_t i = 0; i < n_layers; i++) {
        if (!L[i].bytes) continue;
        L[i].k = p;
        L[i].v = p + L[i].k_head_stride * L[i].scheme.n_kv_heads;
        p += (L[i].bytes + 63) & ~(uint64_t)63;
    }
    c->bytes = total;
    *out = c;
    return KVS_OK;
}

void kvs_kv_cache_free(kvs_kv_cache *c) {
    if (!c) return;
    kvs_aligned_free(c->block);
    kvs_free(c->layers);
    kvs_free(c);
}

kvs_status kvs_kv_cache_store(kvs_kv_cache *c, int32_t layer, uint32_t pos0, int64_t n,
                              const float *k, const float *v) {
    if (layer < 0 || layer >= c->n_layers) return kvs_fail(KVS_ERR_INTERNAL, "kv store: bad layer");
    kvs_kv_layer *L = &c->layers[layer];
    const kvs_kv_scheme *s = &L->scheme;
    if (s->store != KVS_KV_STORE_FULL) return KVS_OK;
    if ((uint64_t)pos0 + (uint64_t)n > c->capacity)
        return kvs_fail(KVS_ERR_CONTEXT, "kv store: position %llu beyond context %u",
                        (unsigned long long)pos0 + (unsigned long long)n, c->capacity);
    const kvs_type_traits *kt = kvs_type_traits_of(s->k_type), *vt = kvs_type_traits_of(s->v_type);
    int32_t H = (int32_t)s->n_kv_heads, dk = (int32_t)s->head_dim_k, dv = (int32_t)s->head_dim_v;
    for (int64_t t = 0; t < n; t++) {
        for (int32_t h = 0; h < H; h++) {
            const float *kr = k + (t * H + h) * dk, *vr = v + (t * H + h) * dv;
            uint8_t *kd = L->k + h * L->k_head_stride + (size_t)(pos0 + t) * L->k_row;
            uint8_t *vd = L->v + h * L->v_head_stride + (size_t)(pos0 + t) * L->v_row;
            kt->from_float(kr, kd, dk);
            vt->from_float(vr, vd, dv);
        }
    }
    return KVS_OK;
}
