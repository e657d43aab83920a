/* Sequence files: one sequence's tokens and KV pages on disk, to restore it
 * later (kvs_seq_save / kvs_seq_load) or in another process.
 *
 * Layout (little-endian; version KVS_KV_FILE_VERSION below):
 *   "KVSLIMSQ"  u32 version  u32 n_layers  u64 model identity (the GGUF's
 *   metadata and tensor table hashed, kvs_gguf_identity)  u64 n_past
 *   u32 capacity  u32 bytes per scheme
 *   n_layers x kvs_kv_scheme (as in memory: 32-bit fields only)
 *   n_past x i32 tokens
 *   per layer with storage of its own: u32 pages, u32 compressed pages,
 *     u8 has residual, u64 n_stored, then the pages' bytes, the compressed
 *     pages' bytes and the residual's bytes, each exactly the size the scheme
 *     gives
 *   u64 FNV-1a of every byte before it
 * A reader trusts nothing: every count is checked against what the schemes
 * allow before anything is allocated, the checksum before anything is used,
 * and a file for another model, other schemes, another context or a damaged
 * one is refused with a message naming which. Files are replaced safely
 * (core/safe_file.h). Token eviction keeps scores outside the pages, so such
 * caches are not saved. */
#ifndef KVS_KV_FILE_H
#define KVS_KV_FILE_H

#include "kv/kv_cache.h"

/* 2: keys of a layer with a key offset (kv/kv_cache.h) are stored minus it;
 * the offset follows from the model and the scheme, which the file names.
 * 3: schemes carry `center` (keys minus the model's measured mean key,
 * model/key_center.h)
 * 4: the tq codebooks lie on an int8 grid (core/tq_tables.h): rows of
 * version 3 would decode to other centroids */
#define KVS_KV_FILE_VERSION 4

kvs_status kvs_kv_file_save(const kvs_kv_cache *c, uint64_t model_id, const kvs_token *tokens, const char *path);

/* Fills the empty cache c (the schemes the file must match) from the file
 * image (data, size) and gives its tokens (*tokens: malloc'd, c->n_past of
 * them). On failure c is left empty. */
kvs_status kvs_kv_file_parse(kvs_kv_cache *c, uint64_t model_id, const uint8_t *data, size_t size,
                             kvs_token **tokens);
/* The tokens of a file (*tokens malloc'd, *n_tokens of them) without its
 * pages, after checking that its header matches like's model, schemes and
 * context (the pages and the checksum are checked when it is loaded). */
kvs_status kvs_kv_file_peek(const kvs_kv_cache *like, uint64_t model_id, const char *path, kvs_token **tokens,
                            uint32_t *n_tokens);
/* kvs_kv_file_parse of a file's contents. */
kvs_status kvs_kv_file_load(kvs_kv_cache *c, uint64_t model_id, const char *path, kvs_token **tokens);

#endif
