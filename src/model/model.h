/* The immutable model: the mapped GGUF, the tokenizer, hyper-parameters and
 * validated weight views for the architecture family. Internal header; the
 * public handle is opaque (include/kvslim.h). */
#ifndef KVS_MODEL_H
#define KVS_MODEL_H

#include <stdbool.h>

#include "gguf/gguf.h"
#include "kv/kv_scheme.h"
#include "ops/matmul.h"
#include "ops/ops.h"
#include "tok/tokenizer.h"

typedef enum kvs_arch {
    KVS_ARCH_LLAMA = 0,
    KVS_ARCH_QWEN2 = 1,
} kvs_arch;

typedef struct kvs_hparams {
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv;
    int32_t head_dim_k, head_dim_v, n_ff;
    float norm_eps;
    kvs_rope rope;
} kvs_hparams;

typedef struct kvs_layer_weights {
    const float *attn_norm, *ffn_norm;        /* (n_embd) */
    kvs_weight wq, wk, wv, wo;                /* q: (n_head*dk, n_embd) ... */
    const float *bq, *bk, *bv;                /* optional biases (qwen2) */
    kvs_weight ffn_gate, ffn_up, ffn_down;
} kvs_layer_weights;

struct kvs_model {
    kvs_gguf *gguf;
    kvs_tokenizer *tok;
    kvs_arch arch;
    char arch_name[32];
    kvs_hparams hp;
    kvs_weight tok_embd, output;              /* output may alias tok_embd (tied) */
    const float *output_norm;
    kvs_layer_weights *layers;                /* (n_layer) */
    void **owned;                             /* NULL-terminated list: f32 copies of non-f32 vectors */
    uint64_t n_params, weight_bytes, decode_weight_bytes;
};

/* Default per-layer KV schemes for this model with the given element type. */
void kvs_model_default_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out);

#endif
