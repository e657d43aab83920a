/* The server's view of the engine's prefix cache (kv/kv_prefix.c): entries
 * are snapshots of a prompt prefix (a system prompt, a conversation so far);
 * a request starts from the longest cached prefix of its prompt, matched in
 * 16-token blocks, and prefills only the rest. This layer adds the server's
 * entry cap (--prefix-cache) and its hit and miss counts; entries are dropped
 * least recently used when the cap or the KV pool needs it. Used by the
 * scheduler thread only (the engine is single-threaded). */
#ifndef KVS_SERVER_PREFIX_H
#define KVS_SERVER_PREFIX_H

#include <stdbool.h>
#include <stdint.h>

#include "kvslim.h"

typedef struct srv_prefix srv_prefix;

/* max_entries 0: caching off (lookups miss, registrations are ignored). */
srv_prefix *srv_prefix_new(kvs_engine *e, uint32_t max_entries);
void srv_prefix_free(srv_prefix *p);

/* The longest entry whose tokens are a proper prefix of tokens[0..n): *out
 * gets a fork of it (n_past = *n_cached), or NULL with *n_cached = 0 on a
 * miss or when the fork fails (the request then prefills everything). */
void srv_prefix_lookup(srv_prefix *p, const kvs_token *tokens, uint32_t n, kvs_seq **out, uint32_t *n_cached);
/* Offer q, whose cached tokens are exactly tokens[0..n), as an entry (the
 * cache keeps a fork of it; q is not taken). An existing equal entry is
 * refreshed instead. Returns true when the cache holds the prefix after. */
bool srv_prefix_register(srv_prefix *p, const kvs_token *tokens, uint32_t n, const kvs_seq *q);
/* True when an entry for exactly tokens[0..n) exists. */
bool srv_prefix_has(const srv_prefix *p, const kvs_token *tokens, uint32_t n);
/* Drops the least recently used entry; false when there is none. */
bool srv_prefix_evict_one(srv_prefix *p);

uint32_t srv_prefix_n_entries(const srv_prefix *p);
uint64_t srv_prefix_hits(const srv_prefix *p);
uint64_t srv_prefix_misses(const srv_prefix *p);

#endif
