/* Mixture-of-experts feed-forward: routing (softmax or sigmoid gating,
 * bias-corrected top-k selection, optional group-limited selection,
 * normalization and a routed scaling factor, as DeepSeek-V2/V3 define them)
 * and the routed experts' SwiGLU FFNs run through kvs_matmul, with the tokens
 * of a batch grouped by expert so each expert's weights are read once per
 * chunk. Shared experts are an ordinary FFN and stay with the caller. */
#ifndef KVS_OPS_MOE_H
#define KVS_OPS_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/threads.h"
#include "ops/matmul.h"

/* Values of the GGUF key <arch>.expert_gating_func. */
typedef enum kvs_moe_gating {
    KVS_MOE_SOFTMAX = 1,
    KVS_MOE_SIGMOID = 2,
} kvs_moe_gating;

typedef struct kvs_moe_router {
    int32_t n_expert, n_used;
    /* group-limited routing when n_group > 1 and 0 < n_group_used < n_group:
     * experts are n_group equal consecutive groups; a group scores its best
     * selection score (no bias) or the sum of its best two (with bias, as
     * DeepSeek-V3), and only the n_group_used best groups compete */
    int32_t n_group, n_group_used;
    kvs_moe_gating gating;
    bool norm;           /* divide the selected weights by their sum       */
    float scale;         /* routed scaling factor, applied last            */
    const float *bias;   /* (n_expert) selection-only bias, or NULL        */
} kvs_moe_router;

/* One token: gate logits (n_expert) -> the n_used selected experts in
 * decreasing selection score (ties: lower index first) and their weights.
 * Selection uses score + bias; weights are the unbiased scores.
 * scratch: 2 * n_expert floats. */
void kvs_moe_route(const kvs_moe_router *r, const float *logits, int32_t *ids, float *weights, float *scratch);

/* The routed experts: (n_expert) views of the 3-D stacks, gate/up
 * [n_embd -> n_ff], down [n_ff -> n_embd]. */
typedef struct kvs_moe_experts {
    const kvs_weight *gate, *up, *down;
    int32_t n_expert;
    int64_t n_embd, n_ff;
} kvs_moe_experts;

typedef struct kvs_moe_ws kvs_moe_ws;   /* buffers for up to n_batch tokens */
kvs_status kvs_moe_ws_new(int64_t n_batch, int64_t n_embd, int64_t n_ff, int32_t n_expert, kvs_moe_ws **out);
void kvs_moe_ws_free(kvs_moe_ws *ws);

/* out (n, n_embd) += for each token t and slot j < n_used:
 * weights[t*n_used+j] * down(silu(gate x_t) * up x_t) of expert ids[t*n_used+j].
 * x: (n, n_embd), n <= the workspace's n_batch. */
kvs_status kvs_moe_ffn(kvs_moe_ws *ws, kvs_matmul *mm, kvs_pool *pool, const kvs_moe_experts *ex, const float *x,
                       int64_t n, const int32_t *ids, const float *weights, int32_t n_used, float *out);

#endif
