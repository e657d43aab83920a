/* The KV cache of one session: per layer storage laid out from that layer's
 * kvs_kv_scheme and sized with kvs_kv_scheme_bytes(), so the planner's
 * prediction and the allocation are the same number. One allocation for all
 * layers, carved per layer (64-byte aligned).
 *
 * FULL layout: K and V are head-major, (n_kv_heads, capacity, head_dim) in
 * the scheme's element type, so one head's history is one contiguous stream
 * for the attention kernels. Positions are absolute token indices. */
#ifndef KVS_KV_CACHE_H
#define KVS_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kv/kv_scheme.h"
#include "kvslim.h"

typedef struct kvs_kv_layer {
    kvs_kv_scheme scheme;
    uint8_t *k, *v;          /* (n_kv_heads, capacity, head_dim_{k,v}) */
    size_t k_row, v_row;     /* bytes of one token's row for one head   */
    size_t k_head_stride, v_head_stride; /* bytes between heads          */
    uint64_t bytes;          /* bytes allocated for this layer           */
} kvs_kv_layer;

typedef struct kvs_kv_cache {
    int32_t n_layers;
    uint32_t capacity;       /* tokens per sequence */
    kvs_kv_layer *layers;    /* (n_layers) */
    void *block;             /* the single data allocation */
    uint64_t bytes;          /* total data bytes */
} kvs_kv_cache;

kvs_status kvs_kv_cache_new(const kvs_kv_scheme *schemes, int32_t n_layers, uint32_t capacity,
                            kvs_kv_cache **out);
void kvs_kv_cache_free(kvs_kv_cache *c);

/* Store n tokens' K and V, rows at absolute positions pos0..pos0+n-1.
 * k: (n, n_kv_heads, head_dim_k) f32; v: (n, n_kv_heads, head_dim_v) f32. */
kvs_status kvs_kv_cache_store(kvs_kv_cache *c, int32_t layer, uint32_t pos0, int64_t n,
                              const float *k, const float *v);

#endif
