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
#include "kvslim.h"

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
    /* ---- appended fields (zero = not used) ---------------------------- */
    /* Explicit byte layouts for element formats that have no kvs_dtype
     * (FP8 e4m3 with scales, mixed FP8/BF16 rows, FP4 indexer keys):
     * entry_bytes replaces the element-format size of one stored LATENT
     * token or one COMPRESSED entry / raw-window token; indexer_bytes
     * replaces the size of one indexer key. Example: DeepSeek V3.2 in
     * FlashMLA's FP8 layout, entry_bytes = 656 (512 x e4m3 + 4 x fp32
     * scales + 64 x bf16 rope), indexer_bytes = 132 (128 x e4m3 + fp32). */
    uint32_t entry_bytes;
    uint32_t indexer_bytes;
    uint32_t rotate;              /* 1: keys (and queries) pass through an orthonormal
                                     Hadamard rotation before storage (outlier spreading) */
    /* CHANNEL layout extras (zero = off). KIVI's full-precision residual:
     * `recent` (a multiple of `group`) newest tokens are kept in f16 beyond
     * the partial group, and the first `first` tokens (attention sinks)
     * stay in f16 for good; quantized groups start after them. */
    uint32_t recent, first;
    uint32_t clip;                /* 1: the quantizer picks each group's range by
                                     least squared error (clipping outliers) */
    uint32_t rotate_v;            /* 1: values pass through the Hadamard rotation before
                                     storage; the attention output is rotated back */
    /* Token eviction (kv/kv_evict.h): a policy (kvs_evict_policy, 0 = none)
     * bounding the layer to evict_budget tokens per KV head, of which the
     * first evict_sinks and (H2O) the newest evict_window are always kept;
     * for SnapKV evict_window is the observation window. Honoured on full,
     * unwindowed, unshared layers with row formats; one setting per cache. */
    uint32_t evict, evict_budget, evict_window, evict_sinks;
    /* 1: keys are stored minus the model's mean key of the layer (measured
     * once per model, model/key_center.h): a constant subtracted from every
     * key leaves every softmax unchanged, and a quantizer then spends its
     * range on what varies. On by default for quantized BLOCK rows of
     * architectures that can measure it (kvs_kv_key_offset_useful). */
    uint32_t center;
    /* CHANNEL layout: 1: value groups are symmetric around zero, stored as
     * one f16 scale each (the zero implied, kv/kivi.h): for rotated values,
     * whose coordinates are centred, it halves the values' side bytes. */
    uint32_t v_sym;
} kvs_kv_scheme;

/* A plain full-attention scheme (f16 unless told otherwise). */
kvs_kv_scheme kvs_kv_scheme_full(uint32_t n_kv_heads, uint32_t head_dim_k, uint32_t head_dim_v,
                                 kvs_dtype type);

/* A DeepSeek V4 style compressed layer: one entry_dim entry per `ratio`
 * tokens (0 = window-only), indexer keys of indexer_dim per entry (0 = none),
 * a raw window of `window` tokens; entries and raw rows in `type`, allocated
 * in pages of KVS_KV_COMPRESSED_PAGE entries/tokens. Indexer keys are q8_0
 * (int8 + an f16 scale per 32: 8-bit keys, as DeepSeek's own indexer cache
 * keeps them low-precision) when indexer_dim is a multiple of 32 and `type`
 * is not f32; otherwise `type` (f32 keeps the exact f32 indexer). The engine
 * (arch/deepseek4.c) and the planner (plan/plan_gguf.c) both build their
 * schemes here, so they agree on the indexer bytes. */
#define KVS_KV_COMPRESSED_PAGE 64
kvs_kv_scheme kvs_kv_scheme_compressed(uint32_t ratio, uint32_t entry_dim, uint32_t indexer_dim, uint32_t window,
                                       kvs_dtype type);

/* Tokens a layer holds for a sequence of n_tokens (window + sinks bound). */
uint64_t kvs_kv_scheme_tokens_held(const kvs_kv_scheme *s, uint64_t n_tokens);
/* Bytes one sequence of n_tokens occupies in this layer's cache, including
 * page rounding. SHARED and NONE are 0. */
uint64_t kvs_kv_scheme_bytes(const kvs_kv_scheme *s, uint64_t n_tokens);
/* CHANNEL layout: tokens of a sequence of `held` tokens that sit in
 * quantized groups (after the `first` f16 sinks, leaving >= `recent` f16). */
uint64_t kvs_kv_scheme_channel_quantized(const kvs_kv_scheme *s, uint64_t held);
/* Marginal bytes per token for an unbounded layer (0 for bounded/shared). */
double kvs_kv_scheme_bytes_per_token(const kvs_kv_scheme *s);
/* KVS_OK if the scheme is self-consistent (dims non-zero where needed,
 * element formats known and dims a multiple of their block size, group and
 * bits in range); otherwise KVS_ERR_INVALID_ARG with a message naming the
 * problem. kvs_kv_scheme_bytes() returns 0 for a scheme that fails this. */
kvs_status kvs_kv_scheme_validate(const kvs_kv_scheme *s);
/* Bytes of one stored FULL token, LATENT token or COMPRESSED entry (K and V
 * together, indexer key excluded); 0 for SHARED/NONE or invalid schemes.
 * CHANNEL layout: the f16 bytes of an unquantized residual token. */
uint64_t kvs_kv_scheme_entry_bytes(const kvs_kv_scheme *s);
/* Short human description, e.g. "full 3x64 f16", "shared<-9", "window 512+4". */
void kvs_kv_scheme_describe(const kvs_kv_scheme *s, char *buf, size_t cap);

#endif
