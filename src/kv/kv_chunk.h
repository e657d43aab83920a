/* The chunk API: the one door through which an architecture writes and
 * reads its KV cache, in the shape of llama.cpp's memory context. What is
 * stored, where, in which format, when a windowed ring or a shared source is
 * written and when tokens are evicted is decided here from the layer's
 * kvs_kv_scheme; an architecture only computes q/k/v and runs attention
 * over the view it is given.
 *
 *   kvs_kv_chunk_begin    reserve pages for n more tokens, all-or-nothing,
 *                         and give their absolute positions
 *   per attention layer:
 *     kvs_kv_layer_prepare  after RoPE: the scheme's rotations of q/k/v and
 *                           the stores that come before attention
 *     kvs_kv_layer_view     the segments attention reads (cache + staged chunk)
 *     kvs_kv_layer_commit   after attention: the stores that had to wait
 *                           (windows, the last sharer of a shared ring),
 *                           eviction scores, the inverse value rotation
 *   kvs_kv_chunk_end      the chunk's tokens join the sequence (n_past)
 *
 * Layers with their own layouts call the row API instead of prepare/view/
 * commit: latent and compressed rows go in with kvs_kv_put_rows /
 * kvs_kv_put_raw / kvs_kv_put_entry (f32 in, the scheme's format stored) and
 * are read where they lie (kvs_kv_cache_raw_row / kvs_kv_cache_entry_row).
 * A chunk that fails before kvs_kv_chunk_end leaves n_past unchanged; the
 * next chunk at the same positions overwrites what it stored. */
#ifndef KVS_KV_CHUNK_H
#define KVS_KV_CHUNK_H

#include "core/threads.h"
#include "kv/kv_cache.h"

/* Chunk buffers for chunks of up to n_batch tokens (staging for windowed
 * layers, the segment list of a layer's view); call once after
 * kvs_kv_cache_new and any eviction setup. */
kvs_status kvs_kv_chunk_init(kvs_kv_cache *c, uint32_t n_batch);

/* A new, empty sequence in like's pool with like's schemes, context, chunk
 * buffers and eviction settings (the engine's sequences, model/engine.c). */
kvs_status kvs_kv_cache_new_like(const kvs_kv_cache *like, kvs_kv_cache **out);

/* Begin a chunk of n (1..n_batch) tokens after the c->n_past stored ones:
 * pages for positions [0, n_past + n) are reserved in every layer or none
 * is (KVS_ERR_BUDGET / KVS_ERR_CONTEXT); pos (n) gets n_past, n_past+1, ... */
kvs_status kvs_kv_chunk_begin(kvs_kv_cache *c, int64_t n, int32_t *pos);
/* The chunk's tokens are now part of the sequence. */
void kvs_kv_chunk_end(kvs_kv_cache *c);

/* q (n, n_head, dk) and k (n, n_kv_heads, dk) with RoPE applied, v (n,
 * n_kv_heads, dv), for the chunk begun: rotates them in place as the layer's
 * scheme asks (Hadamard keys with their queries, values) and stores k and v
 * where the layer stores before attention. */
kvs_status kvs_kv_layer_prepare(kvs_kv_cache *c, kvs_pool *pool, int32_t layer, float *q, int32_t n_head, float *k,
                                float *v);

/* kvs_kv_layer_prepare for the chunks of several sequences of one step (each
 * cache with its chunk begun): short chunks (decode rows) are prepared one
 * sequence per task across the pool, long ones token-parallel one after the
 * other. Each sequence gets the bytes it would get alone. */
typedef struct kvs_kv_rows {
    kvs_kv_cache *c;
    float *q, *k, *v; /* as for kvs_kv_layer_prepare */
} kvs_kv_rows;
kvs_status kvs_kv_layers_prepare(kvs_pool *pool, int32_t layer, int32_t n_head, const kvs_kv_rows *rows, int n);

/* What attention of `layer` reads for the chunk: segments in increasing
 * position order (valid until the next call), and the mask's window and
 * sinks. k, v as given to prepare. */
typedef struct kvs_kv_view {
    const kvs_kv_segment *segs;
    int n_segs;
    uint32_t window, sinks;
} kvs_kv_view;
kvs_kv_view kvs_kv_layer_view(kvs_kv_cache *c, int32_t layer, const float *k, const float *v);

/* After attention of the chunk's queries q (n, n_head, dk) wrote out (n,
 * n_head, dv): the stores that waited for attention (k and v may be used as
 * scratch and are clobbered), eviction, and the inverse value rotation of
 * out. scale: the attention scale (eviction scores use it). */
kvs_status kvs_kv_layer_commit(kvs_kv_cache *c, kvs_pool *pool, int32_t layer, const float *q, int32_t n_head,
                               float *k, float *v, float *out, float scale);

/* Rows of layers without prepare/view/commit, for the chunk begun:
 * put_rows stores n rows at positions n_past.. (latent rows: k is (n, rank +
 * rope), v unused); put_raw converts one f32 row of a compressed layer's raw
 * window at position pos; put_entry one compressed entry j (its indexer key
 * when index is set). */
kvs_status kvs_kv_put_rows(kvs_kv_cache *c, int32_t layer, const float *k, const float *v);
kvs_status kvs_kv_put_raw(kvs_kv_cache *c, int32_t layer, uint64_t pos, const float *row);
kvs_status kvs_kv_put_entry(kvs_kv_cache *c, int32_t layer, uint64_t j, const float *entry, bool index);
/* One row in a compressed layer's entry format (for a chunk's own raw rows,
 * which its queries read before they are stored): buf gets the stored bytes. */
void kvs_kv_format_row(const kvs_kv_cache *c, int32_t layer, const float *row, uint8_t *buf);
/* Round n rows (n, entry_dim) of a compressed layer through its stored
 * format in place, so a chunk's own keys equal what later steps read back. */
kvs_status kvs_kv_round_rows(const kvs_kv_cache *c, int32_t layer, float *rows, int64_t n);

#endif
