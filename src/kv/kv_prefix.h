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
 * KVS_ERR_UNSUPPORTED where the cache cannot be forked (eviction). to_disk:
 * also write it to the disk tier now (else only when it is evicted). */
kvs_status kvs_kv_prefix_store(kvs_kv_prefix *p, const kvs_kv_cache *c, const kvs_token *tokens, uint32_t n,
                               bool to_disk);

/* A new cache holding the longest cached prefix of tokens[0..n) that leaves
 * at least one token to run (so the caller gets logits), or NULL with
 * *n_hit = 0 when none is cached. */
kvs_status kvs_kv_prefix_lookup(kvs_kv_prefix *p, const kvs_token *tokens, uint32_t n, kvs_kv_cache **out,
                                uint32_t *n_hit);

/* Give back the pages of the least recently used snapshot held in memory
 * (with a disk tier it is written there first and stays findable); false
 * when no snapshot holds pages. */
bool kvs_kv_prefix_evict_one(kvs_kv_prefix *p);
/* Whether a snapshot holds exactly tokens[0..n) (in memory or on disk). */
bool kvs_kv_prefix_has(const kvs_kv_prefix *p, const kvs_token *tokens, uint32_t n);
/* Forget every snapshot (and delete their files). */
void kvs_kv_prefix_clear(kvs_kv_prefix *p);

/* The disk tier: snapshots leave their pages in files in dir (sequence files,
 * kv/kv_file.h) when evicted or when stored with to_disk, up to cap_bytes (0:
 * no cap; the least recently used files go first), and are loaded back on a
 * hit. Files an earlier run left there for the same model, schemes and
 * context are found again now. like: the cache whose schemes and pool a
 * loaded snapshot gets. */
kvs_status kvs_kv_prefix_set_dir(kvs_kv_prefix *p, const kvs_kv_cache *like, uint64_t model_id, const char *dir,
                                 uint64_t cap_bytes);

typedef struct kvs_kv_prefix_stats {
    uint64_t lookups, hits, tokens_hit; /* lookups, lookups that found a prefix, tokens they mapped */
    uint32_t snapshots;                 /* snapshots whose pages are in memory */
    uint64_t tokens_held;               /* tokens those snapshots hold */
    uint32_t disk_snapshots;            /* snapshots with a file in the disk tier */
    uint64_t disk_bytes, disk_hits;     /* bytes of those files; hits loaded from them */
} kvs_kv_prefix_stats;
kvs_kv_prefix_stats kvs_kv_prefix_get_stats(const kvs_kv_prefix *p);

#endif
