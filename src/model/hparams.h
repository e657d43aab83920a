/* Hyper-parameters read from GGUF metadata by both the loader
 * (src/model/loader.c) and the planner (src/plan/plan_gguf.c), with one set
 * of checks, so `kvslim plan` and `kvslim run` accept and reject the same
 * files in the same words. Messages name the key and the value and carry
 * no prefix: callers wrap them ("model: ...", "FILE: ..."). Internal header. */
#ifndef KVS_MODEL_HPARAMS_H
#define KVS_MODEL_HPARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/gguf.h"

/* The largest context a session takes (src/model/session.c), and so the
 * largest training context a file may claim. */
#define KVS_MAX_CTX (1u << 26)

/* "<arch>.context_length": absent -> def; otherwise an integer in
 * [1, KVS_MAX_CTX], else KVS_ERR_FORMAT. */
kvs_status kvs_hp_context_length(const kvs_gguf *g, const char *arch, uint32_t def, uint32_t *out);

/* A head count "<arch>.<suffix>" stored as a scalar or as an array of one
 * value per layer, for an architecture that runs one count in every layer:
 * absent -> *present = false; an array of n_layer equal values reads as
 * that value; values that differ are KVS_ERR_UNSUPPORTED ("per-layer head
 * counts are not supported for architecture ..."); anything else that is
 * not a count in [1, 2^24] is KVS_ERR_FORMAT. */
kvs_status kvs_hp_head_count(const kvs_gguf *g, const char *arch, const char *suffix, uint32_t n_layer, bool *present,
                             uint32_t *out);

/* A positive finite float "<arch>.<suffix>" no larger than max (an epsilon,
 * a RoPE base): absent -> def; NaN, infinite, zero, negative, above max or
 * not a float -> KVS_ERR_FORMAT. */
kvs_status kvs_hp_positive_f32(const kvs_gguf *g, const char *arch, const char *suffix, float def, float max,
                               float *out);

/* The checks above for the keys the planner reads, as the engine's loader
 * for `arch` applies them: context_length for every architecture; the head
 * counts for the architectures the engine runs with one count in all
 * layers (kvs_arch_ops.one_head_count). */
kvs_status kvs_hp_check_plan(const kvs_gguf *g, const char *arch, uint32_t n_layer);

#endif
