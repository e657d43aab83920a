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
struct kvs_retro;
typedef struct kvs_key_center kvs_key_center;

/* Called by the forward pass for every layer after the Q/K/V projections
 * (and Gemma's QK-norm), before RoPE: q (n, n_head*dk), k (n, n_kv*dk),
 * v (n, n_kv*dv) at positions pos; rope is the layer's RoPE (Gemma 3: local
 * or global base). Used by calibration (src/retrofit/calib.c). */
typedef void (*kvs_capture_fn)(void *ctx, int32_t layer, int64_t n, const int32_t *pos, const float *q,
                               const float *k, const float *v, const kvs_rope *rope);

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
    /* n (<= n_batch) tokens of the chunk kvs_decode began (positions in
     * s->pos, pages reserved), stored through the chunk API; kvs_decode ends
     * the chunk. logits: NULL, (n_vocab) for the last token, or (n, n_vocab)
     * when all_logits. */
    kvs_status (*forward)(kvs_session *s, const kvs_token *tokens, int64_t n, bool all_logits, float *logits);
    /* optional, for retrofit (src/retrofit/): the latent layers a compressed
     * file carries (NULL: none), and the capture hook on a session (fn NULL
     * removes it). Absent: the architecture cannot be retrofitted. */
    const struct kvs_retro *(*retro)(const kvs_model *m);
    kvs_status (*set_capture)(kvs_session *s, kvs_capture_fn fn, void *ctx);
    /* optional: which layers have a sliding window, from the GGUF metadata
     * alone; the loader and the planner (src/plan/plan_gguf.c) both call it,
     * so they cannot disagree. swa: (n_layer). */
    kvs_status (*sliding_layers)(const kvs_gguf *g, int32_t n_layer, bool *swa);
    /* the forward pass keeps per-sequence state outside the KV cache (in
     * s->ext), so a session cannot be forked or truncated */
    bool sequence_state;
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
    const float *q_norm, *k_norm;             /* per-head RMSNorm of q, k before RoPE (qwen3), (head_dim) */
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
    uint64_t repacked_bytes;                  /* x8 copies of matrices (core/repack.h) */
    /* mean keys, measured on first use (model/key_center.h; the only field
     * filled after loading), or NULL */
    struct kvs_key_center *key_center;
};

/* Full K/V in every layer: the default for plain GQA models. */
void kvs_model_full_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out);

/* Bytes a decode step reads from the weights: all of them, except only one
 * row of the embedding table unless it doubles as the output head. */
void kvs_model_count_weights(kvs_model *m);

/* The architecture a GGUF's general.architecture names, or NULL. */
const kvs_arch_ops *kvs_arch_find(const char *name);

extern const kvs_arch_ops kvs_arch_llama, kvs_arch_qwen2, kvs_arch_qwen3;
extern const kvs_arch_ops kvs_arch_deepseek2;
extern const kvs_arch_ops kvs_arch_deepseek4;
extern const kvs_arch_ops kvs_arch_gemma3, kvs_arch_gemma4;

#endif
