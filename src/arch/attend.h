/* The attention step every decoder architecture shares: RoPE on the chunk's
 * q and k, then the KV chunk API (src/kv/kv_chunk.h) - the scheme's
 * rotations and stores, the view attention reads - and attention of the
 * chunk's queries over that view. Internal header for src/arch/. */
#ifndef KVS_ATTEND_H
#define KVS_ATTEND_H

#include "model/session.h"

#define KVS_PAR_MIN_TOKENS 4 /* below this, per-token stages run on the caller */

/* Inputs: s->q (n, n_head*head_dim_k), s->k (n, n_head_kv*head_dim_k) before
 * RoPE, s->v (n, n_head_kv*head_dim_v); positions s->pos[0..n). Output:
 * s->att (n, n_head*head_dim_v). Attention scale `scale`. Inside a step
 * (kvs_step_forward): each span of rows attends over its own sequence's
 * cache. q, k and v are rotated in place. */
kvs_status kvs_arch_attend(kvs_session *s, int32_t layer, int64_t n, const kvs_rope *rope, float scale);

#endif
