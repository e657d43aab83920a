/* Session internals: the KV cache, the thread pool, and activation buffers
 * sized for one batch chunk, and the step in flight (which rows belong to
 * which sequence). Shared by the public session API (model/session.c), the
 * engine (model/engine.c) and the architecture forward passes (src/arch/). */
#ifndef KVS_SESSION_H
#define KVS_SESSION_H

#include "attn/attn.h"
#include "core/threads.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "ops/matmul.h"

/* One sequence's rows in a forward step: activation rows [row0, row0 + n)
 * are its tokens, at positions s->pos[row0..], stored in kv. */
typedef struct kvs_span {
    kvs_kv_cache *kv;
    int64_t row0, n;
} kvs_span;

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
    /* centered key layers whose offsets are not measured yet: the
     * measurement (a forward pass over model/key_center.h's text) runs at
     * the first decode (kvs_session_prepare), so describing a session
     * (info, plan, the server's estimates) costs no forward pass */
    bool center_pending;
    /* the step in flight (kvs_step_forward): its rows, one span per sequence
     * in row order, and the rows whose logits the head computes unless
     * all_logits (the last row of each sequence that wants them) */
    const kvs_span *spans;
    int n_spans;
    const int64_t *out_rows;
    int64_t n_out;
};

/* Makes s ready to store and read keys: measures the key centering offsets
 * when they are still pending (once per model and context; see
 * center_pending). Called before the first step of s, and of every cache
 * made like s's (engine sequences, forks). */
kvs_status kvs_session_prepare(kvs_session *s);

/* One forward step over the n rows of tokens: each span's chunk is begun
 * (kvs_kv_chunk_begin, positions into s->pos) by the caller; logits: NULL,
 * (n_out, n_vocab) for out_rows, or (n, n_vocab) when all_logits. The
 * caller ends the chunks when it succeeds. */
kvs_status kvs_step_forward(kvs_session *s, const kvs_span *spans, int n_spans, const kvs_token *tokens, int64_t n,
                            const int64_t *out_rows, int64_t n_out, bool all_logits, float *logits);

#endif
