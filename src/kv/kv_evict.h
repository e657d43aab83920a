/* Token eviction for full-attention layers (H2O, SnapKV): the cache keeps at
 * most `budget` tokens per KV head and chooses which by attention scores.
 *
 * How positions work once kept tokens are no longer contiguous: keys are
 * stored after RoPE (and the optional rotation), so a kept key already
 * carries its true position and attention never needs it again except for
 * the causal mask. An evicting layer therefore stores its kept tokens
 * compacted in slot order 0..n_kept-1 (each KV head keeps its own set; the
 * order of true positions is preserved) and hands them to the attention
 * kernels as one run of positions 0..n_kept-1, all below any query's true
 * position, followed by the current chunk staged at its true positions
 * (causal within the chunk). The mask therefore stays exact and src/attn/
 * is unchanged.
 *
 * Per step (kvs_arch_attend): attention over [kept cache | staged chunk],
 * then kvs_kv_evict_update scores the cached and chunk keys by the
 * softmax attention of the chunk's queries (a separate plain C pass), stores
 * the chunk after the kept slots and compacts each head down to the budget. */
#ifndef KVS_KV_EVICT_H
#define KVS_KV_EVICT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/threads.h"
#include "kv/kv_cache.h"
#include "kvslim.h"

typedef struct kvs_kv_evict kvs_kv_evict;

/* Eviction state for a cache, from its layer schemes' evict settings:
 * *out = NULL when no layer asks for eviction. n_batch bounds the tokens of
 * one step. Fails naming the reason when layers ask but none can evict, when
 * evicting layers disagree, or when the budget cannot hold sinks + window. */
kvs_status kvs_kv_evict_new(const kvs_kv_cache *c, uint32_t n_batch, kvs_kv_evict **out);
void kvs_kv_evict_free(kvs_kv_evict *e);
void kvs_kv_evict_clear(kvs_kv_evict *e);
bool kvs_kv_evict_on(const kvs_kv_evict *e, int32_t layer);
/* Slots layer needs so that the positions up to n_pos fit (for reserve). */
uint64_t kvs_kv_evict_slots(const kvs_kv_evict *e, int32_t layer, uint64_t n_pos);
uint32_t kvs_kv_evict_budget(const kvs_kv_evict *e);
uint64_t kvs_kv_evict_kept(const kvs_kv_evict *e, int32_t layer);

/* Attention view of an evicting layer for a chunk of n tokens at true
 * positions pos0..: the kept tokens as positions 0..n_kept-1, then the chunk
 * k/v (f32, (n, n_kv_heads, d)) staged at pos0. Returns the count. */
int kvs_kv_evict_segments(kvs_kv_evict *e, const kvs_kv_cache *c, int32_t layer, uint64_t pos0, int64_t n,
                          const float *k, const float *v, kvs_kv_segment *out, int cap);

/* After attention: score, store the chunk, evict down to the budget.
 * q: (n, n_head, dk) as attention saw it; k, v as for segments. */
kvs_status kvs_kv_evict_update(kvs_kv_evict *e, kvs_kv_cache *c, int32_t layer, kvs_pool *pool, const float *q,
                               int32_t n_head, int64_t n, const float *k, const float *v, float scale);

/* Reference scoring, exposed for tests: for one KV head, probabilities of
 * the queries q (nq, group, dk) at true positions qpos over keys
 * [cached (nc, dk) | chunk (n, dk) at chunk positions cpos], summed over
 * queries and heads of the group, added into score (nc + n). A query sees
 * every cached key and the chunk keys at positions <= its own. Fails only
 * for want of memory. */
kvs_status kvs_kv_evict_score_ref(const float *q, int64_t nq, int32_t group, const int32_t *qpos, const float *cached,
                                  int64_t nc, const float *chunk, const int32_t *cpos, int64_t n, int32_t dk, float scale,
                                  float *score);

/* Choose which of n_tot slots to keep: the first `sinks`, the last
 * `window`, and the highest scoring others (ties: the newer), up to budget
 * in all. pool > 0: max-pool the scores over that many neighbours each side
 * first (SnapKV). keep gets n_tot flags; returns the count kept. */
uint64_t kvs_kv_evict_select(const float *score, uint64_t n_tot, uint32_t budget, uint32_t window, uint32_t sinks,
                             int pool, bool *keep);

#endif
