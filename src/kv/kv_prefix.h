/* The prefix cache: snapshots of sequences' caches keyed by their tokens, so
 * a new sequence whose tokens start with a cached prefix maps the snapshot's
 * pages (shared, copied on write) instead of recomputing them, as vLLM's
 * automatic prefix caching does.
 *
 * A snapshot is a fork of a sequence's cache (kv_cache.c): it holds
 * references to the sequence's pages, so the pool holds each page once
 * whoever points at it. Its tokens are keyed per block of KVS_PREFIX_BLOCK
 * tokens by a hash chain (key_j = hash(key_{j-1}, block j's tokens)); the
 * model and the layer schemes are the pool's, so they need no key. A lookup
 * walks the chain of the new tokens and takes the deepest block any snapshot
 * holds, checks the tokens themselves (a hash collision is never a hit), and
 * forks that snapshot truncated to the block (kvs_kv_cache_truncate: layers
 * that cannot be cut there, a wrapped window or quantized groups, fall back
 * to a shallower block or the snapshot's exact length). Least recently used
 * snapshots go first when the pool needs room.
 *
 * Sliding-window layers: a ring that has wrapped no longer holds what a
 * shorter prefix needs, so a snapshot of such a sequence is reused only
 * whole. A prompt that asks for it (kvs_batch_entry.cache_prefix) therefore
 * leaves a snapshot every KVS_PREFIX_CHECKPOINT tokens, its chunks ending
 * there: a checkpoint shares the ring's pages and the sequence copies a
 * ring page only when it writes into it, so each checkpoint costs at most
 * one ring per windowed layer (full layers' pages are shared as they are). */
#ifndef KVS_KV_PREFIX_H
#define KVS_KV_PREFIX_H

#include "kv/kv_cache.h"

#define KVS_PREFIX_BLOCK 16       /* tokens per key */
#define KVS_PREFIX_CHECKPOINT 256 /* tokens between the snapshots a prompt leaves (model/engine.c) */

typedef struct kvs_kv_prefix kvs_kv_prefix;

kvs_status kvs_kv_prefix_new(kvs_kv_prefix **out);
/* Frees every snapshot (their pages go back to the pool). */
void kvs_kv_prefix_free(kvs_kv_prefix *p);

/* Keep a snapshot of c's first n tokens (tokens[0..n), n <= c->n_past;
 * n < c->n_past truncates the snapshot). Nothing is kept for fewer than one
 * block, or when a snapshot already holds these tokens (it is marked used).
 * KVS_ERR_UNSUPPORTED where the cache cannot be forked (eviction). */
kvs_status kvs_kv_prefix_store(kvs_kv_prefix *p, const kvs_kv_cache *c, const kvs_token *tokens, uint32_t n);

/* A new cache holding the longest cached prefix of tokens[0..n) that leaves
 * at least one token to run (so the caller gets logits), or NULL with
 * *n_hit = 0 when none is cached. */
kvs_status kvs_kv_prefix_lookup(kvs_kv_prefix *p, const kvs_token *tokens, uint32_t n, kvs_kv_cache **out,
                                uint32_t *n_hit);

/* Drop the least recently used snapshot; false when there is none. */
bool kvs_kv_prefix_evict_one(kvs_kv_prefix *p);

typedef struct kvs_kv_prefix_stats {
    uint64_t lookups, hits, tokens_hit; /* lookups, lookups that found a prefix, tokens they mapped */
    uint32_t snapshots;                 /* snapshots held now */
    uint64_t tokens_held;               /* tokens those snapshots hold */
} kvs_kv_prefix_stats;
kvs_kv_prefix_stats kvs_kv_prefix_get_stats(const kvs_kv_prefix *p);

#endif
