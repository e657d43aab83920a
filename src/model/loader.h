/* Helpers every architecture's loader uses: metadata keys under the
 * "<arch>." prefix, weight binding with shape/type validation (every failure
 * is a KVS_ERR_FORMAT naming the key or tensor), and allocations owned by the
 * model (freed with it). Internal header. */
#ifndef KVS_LOADER_H
#define KVS_LOADER_H

#include "core/error.h"
#include "model/model.h"

typedef struct kvs_loader {
    kvs_model *m;
    const char *arch;   /* metadata prefix, e.g. "llama" */
    void **owned;
    int n_owned, cap_owned;
    bool repack;        /* bind gives q4_0/q4_1/q5_0/q5_1/q8_0 matrices an x8 copy (core/repack.h) */
    const void **x8_src; /* tensors already copied (a tied head shares the embedding's) */
    const void **x8_dst;
    int n_x8, cap_x8;
} kvs_loader;

/* "<arch>.<suffix>" into buf. */
const char *kvs_load_key(const kvs_loader *L, char *buf, size_t cap, const char *suffix);
/* Required u32 in (0, 2^24]; a per-layer array is KVS_ERR_UNSUPPORTED. */
kvs_status kvs_load_need_u32(const kvs_loader *L, const char *suffix, int32_t *out);
int32_t kvs_load_opt_u32(const kvs_loader *L, const char *suffix, int32_t def);
float kvs_load_opt_f32(const kvs_loader *L, const char *suffix, float def);
/* Optional, checked (model/hparams.h): a bad value is an error naming the
 * key, never a silent default. context_length in [1, KVS_MAX_CTX]; a
 * positive finite float at most max. */
kvs_status kvs_load_context_length(kvs_loader *L, int32_t def, int32_t *out);
kvs_status kvs_load_positive_f32(kvs_loader *L, const char *suffix, float def, float max, float *out);
/* attention.layer_norm_rms_epsilon: (0, 1] (NaN would make every logit NaN). */
#define kvs_load_norm_eps(L, def, out) kvs_load_positive_f32((L), "attention.layer_norm_rms_epsilon", (def), 1.0f, (out))
/* A 2-D weight of shape [n_in, n_out] (GGUF ne order); missing + !required
 * leaves w zeroed. */
/* Drops a matrix's x8 copy (one the forward pass never multiplies by, e.g. an
 * embedding table read row by row). */
void kvs_load_drop_x8(kvs_loader *L, kvs_weight *w);
kvs_status kvs_load_matrix(kvs_loader *L, const char *name, int64_t n_in, int64_t n_out, kvs_weight *w,
                           bool required);
/* A 3-D stack of n_mat weights [n_in, n_out, n_mat] (e.g. MoE experts):
 * w[i] views matrix i. */
kvs_status kvs_load_matrix_stack(kvs_loader *L, const char *name, int64_t n_in, int64_t n_out, int64_t n_mat,
                                 kvs_weight *w, bool required);
/* A 1-D vector of n elements as f32 (copied and owned if stored otherwise). */
kvs_status kvs_load_vector(kvs_loader *L, const char *name, int64_t n, const float **out, bool required);
/* Zeroed memory freed with the model. */
void *kvs_load_alloc(kvs_loader *L, size_t bytes);

/* The hyper-parameters most decoders share: block_count, embedding_length,
 * feed_forward_length, head counts (a per-layer array must hold one value),
 * key/value lengths, context_length, RMS epsilon, RoPE dimension
 * count/base/linear scaling. rope.mode is left to the caller. */
kvs_status kvs_load_common_hparams(kvs_loader *L);
/* token_embd (sets n_vocab), output (tied when absent), output_norm,
 * optional rope_freqs. */
kvs_status kvs_load_embeddings(kvs_loader *L);


#endif
