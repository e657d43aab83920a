/* Per-token stages the decoder forward passes share, split across the
 * session's thread pool for batches (on the caller below
 * KVS_PAR_MIN_TOKENS tokens). Internal header for src/arch/. */
#ifndef KVS_STAGES_H
#define KVS_STAGES_H

#include "model/session.h"

/* For token rows [0, n) of width d: x += delta (when delta is not NULL),
 * then y = rmsnorm(x) * w. y may be delta (each row is read before written). */
void kvs_stage_add_norm(kvs_session *s, int64_t n, float *x, const float *delta, float *y, const float *w,
                        int64_t d, float eps);
/* gate = silu(gate) * up, or gelu_tanh(gate) * up when gelu, over (n, n_ff). */
void kvs_stage_glu(kvs_session *s, int64_t n, float *gate, const float *up, int64_t n_ff, bool gelu);

/* The output head: logits (rows, n_vocab) = (rmsnorm(x) * output_norm) W_out
 * for the step's out rows (s->out_rows: the last token of each sequence
 * that wants logits), or for all n rows of s->x when all_logits. Sets *rows
 * to the rows written. */
kvs_status kvs_stage_head(kvs_session *s, int64_t n, bool all_logits, float *logits, int64_t *rows);

#endif
