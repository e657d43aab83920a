/* Attention over one layer's KV cache.
 *
 * kvs_attn_ref is the float64 reference: plain softmax(q.k * scale) v over
 * the visible keys, dequantizing rows with the reference dequantizers.
 * kvs_attn_run is the fast kernel: for each KV head it dequantizes a tile
 * of K/V rows once and uses it for every query head of the group and for a
 * block of queries (prefill), with an online (flash-style) softmax; a long
 * decode is split into segments across threads and merged (flash-decoding).
 * A decode with few heads per KV head reads the stored rows in place
 * (fused kernel: formats converted in registers, per-channel codes scored
 * directly); see attn_simd.h and docs/kv.md "Kernels".
 * Keys come as segments (kv/kv_cache.h: runs of consecutive positions,
 * any element format with a dequantizer). Both kernels implement the same
 * masking: query i sees key position p iff p <= q_pos[i] and, when
 * window > 0, p > q_pos[i] - window or p < sinks. */
#ifndef KVS_ATTN_H
#define KVS_ATTN_H

#include <stdint.h>

#include "core/threads.h"
#include "kv/kv_cache.h"

typedef struct kvs_attn_args {
    const kvs_kv_segment *segs; /* keys/values, in increasing position order         */
    int n_segs;
    int32_t n_kv_heads, head_dim_k, head_dim_v;
    const float *q;          /* (n_q, n_head, head_dim_k), RoPE applied             */
    int64_t n_q;
    int32_t n_head;          /* multiple of n_kv_heads                              */
    const int32_t *q_pos;    /* (n_q) absolute positions                            */
    uint32_t window, sinks;  /* window 0 = full causal attention                    */
    float scale;
    float *out;              /* (n_q, n_head, head_dim_v)                           */
} kvs_attn_args;

void kvs_attn_ref(const kvs_attn_args *a);

typedef struct kvs_attn kvs_attn;   /* per-session scratch */
kvs_status kvs_attn_new(int n_threads, kvs_attn **out);
void kvs_attn_free(kvs_attn *at);
kvs_status kvs_attn_run(kvs_attn *at, kvs_pool *pool, const kvs_attn_args *a);
/* n calls (a batched step's sequences) in one dispatch over the pool: the
 * same numbers as each call alone, one hand-off to the threads. */
kvs_status kvs_attn_run_many(kvs_attn *at, kvs_pool *pool, const kvs_attn_args *args, int n);

#endif
