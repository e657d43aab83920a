/* Session internals: the KV cache, the thread pool, and activation buffers
 * sized for one batch chunk. Shared by the public session API
 * (model/session.c) and the architecture forward passes (src/arch/). */
#ifndef KVS_SESSION_H
#define KVS_SESSION_H

#include "attn/attn.h"
#include "core/threads.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "ops/matmul.h"

struct kvs_session {
    const kvs_model *model;
    kvs_session_params params;
    kvs_kv_cache *kv;      /* the sequence's cache; kv->n_past tokens stored */
    kvs_pool *pool;
    kvs_matmul *mm;
    kvs_attn *attn;
    /* activations for up to n_batch tokens, carved from one block */
    void *block;
    float *x;        /* (n_batch, n_embd) residual stream        */
    float *xn;       /* (n_batch, n_embd) normed                 */
    float *q;        /* (n_batch, n_head * head_dim_k)           */
    float *k;        /* (n_batch, n_head_kv * head_dim_k)        */
    float *v;        /* (n_batch, n_head_kv * head_dim_v)        */
    float *att;      /* (n_batch, n_head * head_dim_v)           */
    float *gate;     /* (n_batch, n_ff)                          */
    float *up;       /* (n_batch, n_ff)                          */
    int32_t *pos;    /* (n_batch) positions of the chunk (kvs_kv_chunk_begin) */
    void *ext;       /* architecture-specific state (kvs_arch_ops.session_init) */
};

#endif
