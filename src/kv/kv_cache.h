/* The KV cache of one session, laid out from each layer's kvs_kv_scheme.
 *
 * Storage is paged: a layer's positions live in fixed-size pages of
 * `page_tokens` slots, allocated on demand (so memory grows with the
 * sequence) and charged against an optional byte budget. Within a page, K and
 * V are head-major, (n_kv_heads, page_tokens, head_dim) in the scheme's
 * element format, so one head's run of positions is one contiguous stream.
 *
 * A per-channel (KIVI) layer quantizes keys per channel over groups of G
 * tokens and values per token; positions must be appended in order. The
 * first `first` tokens stay in f16, and a group is quantized only once
 * `recent` newer tokens follow it (the newest tokens wait in an f16 ring).
 *
 * A latent (MLA) layer stores one row of latent_rank + rope_dim elements per
 * token for all heads; readers see it as one KV head whose V is the first
 * latent_rank elements of the same row (absorbed attention is then MQA with
 * dk = rank + rope, dv = rank).
 *
 * A windowed layer (window W, sinks S) keeps the first S positions in fixed
 * slots and the rest in a ring of page_round(W + S) - S slots, so its memory
 * stops growing at page_round(W + S) slots whatever the context. A shared
 * layer stores nothing and reads another layer's storage.
 *
 * Bytes held always equal kvs_kv_scheme_bytes(scheme, tokens) - the number
 * the planner predicts - because both count whole pages of the same size.
 *
 * Readers get the stored positions as segments: runs of consecutive
 * positions that are contiguous in memory (attn/ iterates them). */
#ifndef KVS_KV_CACHE_H
#define KVS_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kv/kv_pool.h"
#include "kv/kv_scheme.h"
#include "kvslim.h"

typedef struct kvs_kv_segment kvs_kv_segment;
/* Decode rows [t0, t0 + nt) of one KV head of a segment into f32 (nt, d):
 * keys (key = true) or values; ref selects the scalar reference decoders. */
typedef void (*kvs_kv_decode_fn)(const kvs_kv_segment *sg, bool key, bool ref, int64_t head, int64_t t0,
                                 int64_t nt, float *out);

/* Positions pos0 .. pos0+n-1, stored contiguously for every KV head. */
struct kvs_kv_segment {
    const uint8_t *k, *v;               /* head 0, first row            */
    size_t k_head_stride, v_head_stride; /* bytes between heads          */
    size_t k_row, v_row;                /* bytes per row (one position) */
    uint32_t k_type, v_type;            /* kvs_dtype of the rows        */
    int64_t pos0, n;
    /* Rows that are not independent blocks (per-channel key groups) come
     * with a decoder; NULL means: decode each row with its type's to_float. */
    kvs_kv_decode_fn decode;
    uint32_t dk, dv, group, k_bits, v_bits; /* parameters for `decode` */
    uint32_t v_sym;                     /* per-channel values: symmetric rows (kv/kivi.h) */
};

typedef struct kvs_kv_layer {
    kvs_kv_scheme scheme;
    int32_t source;          /* layer whose storage is read (itself unless shared) */
    size_t k_row, v_row;     /* bytes of one position for one head */
    size_t page_bytes;       /* K and V of all heads for page_tokens positions */
    uint32_t page_tokens;
    uint64_t slots;          /* slot capacity: capacity, or page_round(W+S) if windowed */
    uint8_t **pages;         /* (ceil(slots / page_tokens)), NULL until touched */
    uint32_t n_pages_alloc;  /* pages currently allocated */
    /* per-channel (KIVI) layout: complete groups are quantized into pages
     * ((n_kv_heads, page/group) key blocks, then (n_kv_heads, page) value
     * rows); `resid` holds, in f16, the `first` sink tokens and a ring of
     * recent + group slots for the newest unquantized tokens (kv_cache.c) */
    size_t key_block, value_row;
    uint16_t *resid;
    float *scratch;          /* (group, max(dk, dv)) for quantizing a group */
    uint64_t n_stored;       /* positions stored so far (channel layout appends in order) */
    /* COMPRESSED store: `pages` hold the raw-window ring (k_row = one entry
     * row, v_row = 0); `cpages` the compressed entries, page_tokens per page,
     * entry rows first, then their indexer keys (i_row bytes each) */
    uint8_t **cpages;
    uint32_t n_cpages_alloc;
    uint64_t cslots;         /* entry capacity: capacity / compress_ratio */
    size_t i_row, cpage_bytes;
    /* (n_kv_heads, head_dim_k) subtracted from every key before it is
     * rotated and stored, or NULL (kvs_kv_cache_set_key_offset) */
    const float *key_offset;
} kvs_kv_layer;

typedef struct kvs_kv_cache {
    int32_t n_layers;
    uint32_t capacity;       /* positions per sequence (the session context) */
    kvs_kv_layer *layers;    /* (n_layers) */
    kvs_kv_pool *pool;       /* where the pages come from (kv/kv_pool.h), its budget shared */
    bool own_pool;           /* the pool goes with its last user (kvs_kv_cache_new and its forks) */
    uint64_t bytes;          /* bytes of the pages this sequence holds (shared ones included) */
    struct kvs_kv_evict *evict; /* token eviction (kv/kv_evict.h), NULL = none */
    /* the sequence and its chunk in flight (kv/kv_chunk.h) */
    uint64_t n_past;         /* positions stored */
    int64_t chunk_n;         /* tokens of the chunk begun, 0 = none */
    uint32_t n_batch;        /* most tokens per chunk */
    uint8_t *staging;        /* one chunk in a windowed layer's formats */
    kvs_kv_segment *segs;    /* (max_segs) attention view of one layer */
    int max_segs;
} kvs_kv_cache;

/* Validates the schemes (shared sources must be earlier, non-shared layers
 * of identical geometry) and allocates no pages yet. kvs_kv_cache_new
 * draws on a pool of its own with budget_bytes (0 = unlimited);
 * kvs_kv_cache_new_in on a pool that other sequences share (free every
 * sequence before the pool). */
kvs_status kvs_kv_cache_new(const kvs_kv_scheme *schemes, int32_t n_layers, uint32_t capacity,
                            uint64_t budget_bytes, kvs_kv_cache **out);
kvs_status kvs_kv_cache_new_in(kvs_kv_pool *pool, const kvs_kv_scheme *schemes, int32_t n_layers,
                               uint32_t capacity, kvs_kv_cache **out);
/* A new sequence in src's pool holding the same tokens: it shares every page
 * (a write to a shared page copies it first) and copies the small per-layer
 * f16 residuals. Sequences with token eviction cannot fork yet. */
kvs_status kvs_kv_cache_fork(const kvs_kv_cache *src, kvs_kv_cache **out);
/* Keep only the first n stored positions (rewind for an edit or a retry);
 * pages past them go back to the pool. Refused (KVS_ERR_UNSUPPORTED, naming
 * the layer) where a layer no longer holds what positions < n need: a
 * window ring that wrapped, quantized groups, evicted or compressed
 * layers; n = 0 always works. */
kvs_status kvs_kv_cache_truncate(kvs_kv_cache *c, uint64_t n);
void kvs_kv_cache_free(kvs_kv_cache *c);
/* Bytes of a per-channel layer's f16 residual (L->resid). */
size_t kvs_kv_layer_resid_bytes(const kvs_kv_layer *L);
/* Drop every stored position (n_past = 0) and give all pages back. */
void kvs_kv_cache_clear(kvs_kv_cache *c);

/* Make sure every layer has pages for positions [0, n_pos) (the slots those
 * positions map to), and that the pages positions [n_past, n_pos) will write
 * are this sequence's own (shared ones are copied). Fails with
 * KVS_ERR_BUDGET, changing nothing, when the pool's budget would be exceeded. */
kvs_status kvs_kv_cache_reserve(kvs_kv_cache *c, uint64_t n_pos);

/* Store n tokens' K and V at absolute positions pos0..pos0+n-1 (pages must
 * be reserved). k: (n, n_kv_heads, head_dim_k) f32; v likewise. Latent
 * layers: k is (n, rank + rope) and v is unused. Shared layers ignore
 * stores. Thread-safe for disjoint position ranges. */
kvs_status kvs_kv_cache_store(kvs_kv_cache *c, int32_t layer, uint64_t pos0, int64_t n,
                              const float *k, const float *v);

/* Segments holding the stored positions < n_pos that a query at position
 * n_pos - 1 or later may still see, in increasing position order. Returns
 * the count (<= cap; kvs_kv_cache_max_segments bounds it). */
int kvs_kv_cache_segments(const kvs_kv_cache *c, int32_t layer, uint64_t n_pos,
                          kvs_kv_segment *out, int cap);
int kvs_kv_cache_max_segments(const kvs_kv_cache *c, int32_t layer);

/* COMPRESSED layers (DeepSeek V4): the caller converts rows with the
 * scheme's formats (k_type for entries and raw rows, indexer_type for
 * indexer keys). The raw row of position pos lives in a ring of
 * page_round(window + sinks) slots (valid for the newest window positions);
 * entry j (tokens [j*m, (j+1)*m)) is stored once its group completes. Both
 * return NULL when the layer is not compressed or the slot is not reserved.
 * kvs_kv_cache_store() and kvs_kv_cache_segments() do not serve these layers. */
uint8_t *kvs_kv_cache_raw_row(kvs_kv_cache *c, int32_t layer, uint64_t pos);
uint8_t *kvs_kv_cache_entry_row(kvs_kv_cache *c, int32_t layer, uint64_t j, uint8_t **index_key);

/* Convert n rows of f32 K/V, (n, n_kv_heads, head_dim), into a buffer in the
 * layer's formats laid out as one segment at positions pos0.. (for chunk
 * staging). buf needs kvs_kv_cache_staging_bytes(c, layer, n) bytes. */
size_t kvs_kv_cache_staging_bytes(const kvs_kv_cache *c, int32_t layer, int64_t n);
kvs_kv_segment kvs_kv_cache_stage(const kvs_kv_cache *c, int32_t layer, uint8_t *buf, uint64_t pos0,
                                  int64_t n, const float *k, const float *v);

/* Pointers to one KV head's key and value rows in a slot of a row-format
 * (non-latent, non-per-channel) layer's pages (token eviction moves rows). */
void kvs_kv_cache_row(const kvs_kv_cache *c, int32_t layer, uint64_t slot, int32_t head, uint8_t **k, uint8_t **v);

/* Store layer's keys minus a fixed vector off (n_kv_heads, head_dim_k;
 * the caller keeps it alive, e.g. a model's key bias): a query's scores all
 * move by q . off, which its softmax does not see, so attention is unchanged
 * while a large constant channel (Qwen2's key biases reach 350) no longer
 * takes the range of every quantized key row. Set before the first chunk;
 * caches made like this one (forks, sequences) keep it. */
void kvs_kv_cache_set_key_offset(kvs_kv_cache *c, int32_t layer, const float *off);
/* Whether a key offset pays for layer's scheme: its own full rows in a
 * quantized block format (f16/bf16/f32 rows and per-channel keys have no use
 * for it). */
bool kvs_kv_key_offset_useful(const kvs_kv_scheme *s);

#endif
