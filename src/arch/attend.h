/* The attention step every decoder architecture shares: RoPE (and the
 * optional Hadamard rotation) on the chunk's q and k, storing k and v in the
 * layer's KV scheme, and attention of the chunk's queries over what the layer
 * can see (its own cache, its ring plus the staged chunk, or the layer it
 * shares). Internal header for src/arch/. */
#ifndef KVS_ATTEND_H
#define KVS_ATTEND_H

#include "model/session.h"

#define KVS_PAR_MIN_TOKENS 4 /* below this, per-token stages run on the caller */

/* Inputs: s->q (n, n_head*head_dim_k), s->k (n, n_head_kv*head_dim_k) before
 * RoPE, s->v (n, n_head_kv*head_dim_v); positions s->pos[0..n). Output:
 * s->att (n, n_head*head_dim_v). Attention scale `scale`. The cache must have
 * been reserved for n_past + n tokens. q and k are rotated in place. */
kvs_status kvs_arch_attend(kvs_session *s, int32_t layer, int64_t n, const kvs_rope *rope, float scale);

#endif
