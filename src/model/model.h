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

struct kvs_loader;

/* One architecture family: how to load it, which KV scheme each layer gets
 * by default, and its forward pass. Each lives in src/arch/<name>.c and is
 * listed in model.c's table. */
typedef struct kvs_arch_ops {
    const char *name;   /* general.architecture */
    /* hyper-parameters (m->hp), weights (m->layers or m->ext), rope mode */
    kvs_status (*load)(struct kvs_loader *L);
    /* per-layer schemes with the given element type for full K/V layers */
    void (*default_schemes)(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out);
    /* optional: extra per-session state (s->ext), created after the
     * session's standard buffers and freed with it */
    kvs_status (*session_init)(kvs_session *s);
    void (*session_free)(kvs_session *s);
    /* n (<= n_batch) tokens at positions n_past..; appends them to the cache
     * and advances n_past. logits: NULL, (n_vocab) for the last token, or
     * (n, n_vocab) when all_logits. */
    kvs_status (*forward)(kvs_session *s, const kvs_token *tokens, int64_t n, bool all_logits, float *logits);
    /* one head_count / head_count_kv for every layer (kvs_load_common_hparams):
     * a per-layer array must hold a single value (model/hparams.h) */
    bool one_head_count;
} kvs_arch_ops;

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
    const kvs_arch_ops *ops;
    char arch_name[32];
    kvs_hparams hp;
    kvs_weight tok_embd, output;              /* output may alias tok_embd (tied) */
    const float *output_norm;
    kvs_layer_weights *layers;                /* (n_layer) llama family; NULL for others */
    void *ext;                                /* architecture-specific weights (owned) */
    void **owned;                             /* NULL-terminated list: f32 copies of non-f32 vectors */
    uint64_t n_params, weight_bytes, decode_weight_bytes;
};

/* Full K/V in every layer: the default for plain GQA models. */
void kvs_model_full_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out);

/* Bytes a decode step reads from the weights: all of them, except only one
 * row of the embedding table unless it doubles as the output head. */
void kvs_model_count_weights(kvs_model *m);

/* The architecture named general.architecture = name, or NULL. */
const kvs_arch_ops *kvs_model_find_arch(const char *name);

extern const kvs_arch_ops kvs_arch_llama, kvs_arch_qwen2;
extern const kvs_arch_ops kvs_arch_deepseek2;
extern const kvs_arch_ops kvs_arch_deepseek4;
extern const kvs_arch_ops kvs_arch_gemma3, kvs_arch_gemma4;

#endif
