/* The per-layer KV scheme: what one attention layer stores per token, in
 * which element format, for how many tokens. This one struct is read by the
 * cache allocator (src/kv/kv_cache.c), the attention kernels (src/attn/) and
 * the planner (src/plan/), and kvs_kv_scheme_bytes() is the single byte
 * formula they all use, so predicted and allocated memory cannot disagree. */
#ifndef KVS_KV_SCHEME_H
#define KVS_KV_SCHEME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

typedef enum kvs_kv_store {
    KVS_KV_STORE_FULL       = 0, /* K and V per KV head                                */
    KVS_KV_STORE_LATENT     = 1, /* one latent of rank r + one shared rope key (MLA)  */
    KVS_KV_STORE_SHARED     = 2, /* nothing: reads layer `shared_from`'s cache        */
    KVS_KV_STORE_COMPRESSED = 3, /* one entry per `compress_ratio` tokens + raw window */
    KVS_KV_STORE_NONE       = 4, /* layer has no attention (e.g. recurrent/FFN-only)  */
} kvs_kv_store;

/* Element layout of stored K/V. BLOCK: per-token rows in `k_type`/`v_type`
 * (f32, f16, bf16, q8_0, q4_0). CHANNEL: KIVI-style keys quantized
 * per channel over groups of `group` tokens, values per token, both at
 * `k_bits`/`v_bits`, newest < group tokens kept in f16. */
typedef enum kvs_kv_layout {
    KVS_KV_LAYOUT_BLOCK   = 0,
    KVS_KV_LAYOUT_CHANNEL = 1,
} kvs_kv_layout;

typedef struct kvs_kv_scheme {
    kvs_kv_store store;
    kvs_kv_layout layout;
    /* FULL */
    uint32_t n_kv_heads;
    uint32_t head_dim_k, head_dim_v;
    /* LATENT: per token latent_rank + rope_dim elements */
    uint32_t latent_rank, rope_dim;
    /* SHARED */
    int32_t shared_from;          /* layer index, -1 if not shared */
    /* COMPRESSED (DeepSeek V4 CSA/HCA, NSA) */
    uint32_t compress_ratio;      /* m tokens per compressed entry              */
    uint32_t entry_dim;           /* elements per compressed entry (e.g. 512)   */
    uint32_t indexer_dim;         /* indexer key elements per compressed entry  */
    kvs_dtype indexer_type;
    /* bounds: window == 0 means unbounded (all tokens kept) */
    uint32_t window, sinks;
    /* formats */
    kvs_dtype k_type, v_type;     /* BLOCK layout element formats; latent uses k_type */
    uint32_t k_bits, v_bits, group; /* CHANNEL layout */
    uint32_t page_tokens;         /* allocation granule in tokens (0 = exact)  */
} kvs_kv_scheme;

/* A plain full-attention scheme (f16 unless told otherwise). */
kvs_kv_scheme kvs_kv_scheme_full(uint32_t n_kv_heads, uint32_t head_dim_k, uint32_t head_dim_v,
                                 kvs_dtype type);

/* Tokens a layer holds for a sequence of n_tokens (window + sinks bound). */
uint64_t kvs_kv_scheme_tokens_held(const kvs_kv_scheme *s, uint64_t n_tokens);
/* Bytes one sequence of n_tokens occupies in this layer's cache, including
 * page rounding. SHARED and NONE are 0. */
uint64_t kvs_kv_scheme_bytes(const kvs_kv_scheme *s, uint64_t n_tokens);
/* Marginal bytes per token for an unbounded layer (0 for bounded/shared). */
double kvs_kv_scheme_bytes_per_token(const kvs_kv_scheme *s);
/* Short human description, e.g. "full 3x64 f16", "shared<-9", "window 512+4". */
void kvs_kv_scheme_describe(const kvs_kv_scheme *s, char *buf, size_t cap);

#endif
