/* Retrofit of latent (low-rank) KV and cross-layer sharing onto ordinary GQA
 * models (llama, qwen2; gemma3's global layers): calibration statistics
 * (calib.c), the principal subspaces and ranks (lowrank.c), loading the
 * projections a compressed GGUF carries (load.c) and the attention step of a
 * latent layer (latent_attn.c). Internal header for src/retrofit/,
 * src/arch/llama.c, src/arch/gemma.c and tools/cmd_compress.c.
 *
 * A latent layer stores one row per token, shared by all heads:
 *
 *     [ c_v (rv) | c_k (rk) | kept key dims (keep) ]
 *
 * c_v = Sv^-1 Bv v (v: the layer's n_kv*dv values), c_k = Sk^-1 Bk k;
 * Bk (rk, kd) and Bv (rv, vd) have orthonormal rows (principal directions of
 * calibration activations) and S = diag(scale) is each direction's RMS on
 * the calibration text, so every stored coordinate has unit scale (a block
 * format then spends its range evenly instead of on the first direction);
 * the reconstruction is Bk^T Sk c_k, Bv^T Sv c_v. Optional per-dim weights
 * D (attention-aware: how much an error in that dim costs - query energy for
 * keys, W_o column norms for values) make the subspace that of D k:
 * c = S^-1 B (D k), k = D^-1 B^T S c. The directions are those of the
 * centered activations: the calibration mean m is subtracted before
 * projecting (c = S^-1 B D (k - m)) and added back after (values: the
 * attention weights sum to 1, so out_h = m_v + lifted latent; PRE keys:
 * k = m + ...). KEEP keys never add it back: q . m is the same for every
 * key of a query, and softmax ignores a constant. Mode PRE
 * compresses pre-RoPE keys and rebuilds them (then RoPE at true positions)
 * before attention. Mode KEEP keeps `keep` rotary dims of the post-RoPE keys
 * exactly and compresses the other post-RoPE dims (Bk is zero on the kept
 * dims), so attention runs on the rows directly with queries absorbed
 * (q_lat = Bk q). Values are attended in latent space and lifted per head
 * after (out_h = Bv_h^T (sum_t p_t c_v,t)).
 *
 * In the layer's kvs_kv_scheme (store LATENT): latent_rank = rv and
 * rope_dim = rk + keep, so the one byte formula counts the row exactly. */
#ifndef KVS_RETROFIT_H
#define KVS_RETROFIT_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

struct kvs_loader;

typedef enum kvs_retro_mode {
    KVS_RETRO_NONE = 0,
    KVS_RETRO_PRE  = 1, /* (a) pre-RoPE keys compressed, rebuilt before RoPE   */
    KVS_RETRO_KEEP = 2, /* (b) kept rotary dims exact + post-RoPE latent       */
} kvs_retro_mode;

typedef struct kvs_retro_layer {
    int32_t rk, rv, keep;       /* all 0: the layer is not latent          */
    const float *k_basis;       /* (rk, kd) orthonormal rows               */
    const float *v_basis;       /* (rv, vd)                                */
    const float *k_scale;       /* (rk) stored coordinate = (Bk k)_j / k_scale_j */
    const float *v_scale;       /* (rv)                                    */
    const float *k_dim, *v_dim; /* (kd), (vd) per-dim weights D, or NULL   */
    const float *k_mean, *v_mean; /* (kd), (vd) calibration means, or NULL */
    int32_t *keep_idx;          /* (keep) ascending dims of (n_kv*dk)      */
} kvs_retro_layer;

typedef struct kvs_retro {
    kvs_retro_mode mode;
    int32_t n_layer;
    kvs_retro_layer *layers;    /* (n_layer) */
    const char *rules;          /* kvslim.kv.rules, or NULL                */
} kvs_retro;

/* ---- metadata keys and tensor names (docs/compress.md) ------------------ */
#define KVS_RETRO_KEY_MODE  "kvslim.latent.mode"   /* "pre" | "keep"                  */
#define KVS_RETRO_KEY_RANKS "kvslim.latent.ranks"  /* "rk/rv/keep;..." one per layer  */
#define KVS_RETRO_KEY_RULES "kvslim.kv.rules"      /* kv_spec.c rule grammar          */
#define KVS_RETRO_KEY_VER   "kvslim.compress.version"
#define KVS_RETRO_T_KBASIS  "kvs_k_basis"          /* blk.N.kvs_k_basis F32 [kd, rk]  */
#define KVS_RETRO_T_VBASIS  "kvs_v_basis"          /* blk.N.kvs_v_basis F32 [vd, rv]  */
#define KVS_RETRO_T_KSCALE  "kvs_k_scale"          /* blk.N.kvs_k_scale F32 [rk]      */
#define KVS_RETRO_T_VSCALE  "kvs_v_scale"          /* blk.N.kvs_v_scale F32 [rv]      */
#define KVS_RETRO_T_KDIM    "kvs_k_dim"            /* blk.N.kvs_k_dim   F32 [kd]      */
#define KVS_RETRO_T_VDIM    "kvs_v_dim"            /* blk.N.kvs_v_dim   F32 [vd]      */
#define KVS_RETRO_T_KMEAN   "kvs_k_mean"           /* blk.N.kvs_k_mean  F32 [kd]      */
#define KVS_RETRO_T_VMEAN   "kvs_v_mean"           /* blk.N.kvs_v_mean  F32 [vd]      */
#define KVS_RETRO_T_KEEP    "kvs_k_keep"           /* blk.N.kvs_k_keep  F32 [keep] dim indices */

/* Reads the keys above (if any) into *out (NULL when the file carries no
 * retrofit). Errors name the key or tensor. Memory is owned by the model. */
kvs_status kvs_retro_load(struct kvs_loader *L, const kvs_retro **out);
/* Per-layer schemes of a retrofitted model: full (kv_type) or latent rows
 * (kv_type), then the file's rules. */
void kvs_retro_schemes(const kvs_model *m, const kvs_retro *r, kvs_dtype kv_type, kvs_kv_scheme *out);
/* The same on top of an architecture's own schemes (e.g. Gemma 3's windows):
 * latent layers become LATENT stores, then the file's rules apply. */
void kvs_retro_apply_schemes(const kvs_model *m, const kvs_retro *r, kvs_kv_scheme *out);
/* The retrofit a loaded model carries (llama, qwen2, gemma3), or NULL. */
const kvs_retro *kvs_retro_of(const kvs_model *m);

/* ---- capture hook (calibration) ---------------------------------------- */
/* The capture hook (kvs_capture_fn, model/model.h) on a session whose
 * architecture has one (kvs_arch_ops.set_capture: llama, qwen2, Gemma 3;
 * KVS_ERR_UNSUPPORTED otherwise). fn NULL removes it. */
kvs_status kvs_retro_set_capture(kvs_session *s, kvs_capture_fn fn, void *ctx);

/* ---- latent attention -------------------------------------------------- */
typedef struct kvs_retro_state kvs_retro_state;
kvs_status kvs_retro_state_new(kvs_session *s, const kvs_retro *r, kvs_retro_state **out);
void kvs_retro_state_free(kvs_retro_state *st);
/* The attention step of a layer whose cache source is latent: s->q, s->k,
 * s->v as for kvs_arch_attend (pre-RoPE); writes s->att. */
kvs_status kvs_retro_attend(kvs_session *s, const kvs_retro *r, kvs_retro_state *st, int32_t layer, int64_t n,
                            const kvs_rope *rope, float scale);
/* True if layer reads a latent retrofit cache. */
bool kvs_retro_layer_latent(const kvs_session *s, const kvs_retro *r, int32_t layer);

/* ---- calibration -------------------------------------------------------- */
typedef struct kvs_calib {
    int32_t n_layer, n_head, n_kv, dk, dv, kd, vd;
    uint64_t n_tokens;
    double *kk;       /* (n_layer, kd, kd) sum k k^T, pre-RoPE          */
    double *kk_rot;   /* (n_layer, kd, kd) sum k k^T, post-RoPE         */
    double *vv;       /* (n_layer, vd, vd) sum v v^T                    */
    double *qq;       /* (n_layer, kd) per key dim: sum over the group's query heads of q^2 (post-RoPE) */
    double *k2, *v2;  /* (n_layer) sum |k|^2, |v|^2                     */
    double *ks, *ks_rot, *vs; /* (n_layer, kd|vd) sums of k (pre/post-RoPE) and v */
    double *dot_k, *dot_v; /* (n_layer, n_layer) [i][j] sum k_i . k_j (j < i) */
    /* capture scratch */
    float *chunk_k, *chunk_v; /* (n_layer, n_batch, kd|vd) this chunk's activations */
    float *rot;               /* (n_batch, max(kd, qd)) */
    int64_t n_batch;
    kvs_rope rope;
} kvs_calib;

/* Runs the model over tokens in windows of ctx tokens (the cache reset
 * between windows) and accumulates the statistics above. progress (may be
 * NULL) is called after each window. */
kvs_status kvs_calib_run(const kvs_model *m, const kvs_token *tokens, int64_t n_tokens, uint32_t ctx,
                         int32_t n_threads, void (*progress)(void *, int64_t done, int64_t total), void *pctx,
                         kvs_calib **out);
void kvs_calib_free(kvs_calib *c);
/* The statistics to / from a file (reuse across compress runs); loading
 * checks the model geometry. */
kvs_status kvs_calib_save(const kvs_calib *c, const char *path);
kvs_status kvs_calib_load(const kvs_model *m, const char *path, kvs_calib **out);

/* ---- subspaces and ranks (lowrank.c) ------------------------------------ */
/* Eigen-decomposition of a symmetric n x n matrix (LAPACKE dsyevd):
 * eigenvalues descending into w (n), eigenvectors as rows of vec (n, n). */
kvs_status kvs_lowrank_eig(const double *a, int32_t n, double *w, double *vec);

typedef struct kvs_retro_plan {
    kvs_retro_mode mode;
    int32_t n_layer, kd, vd;
    int32_t *rk, *rv, *keep;      /* (n_layer) */
    int32_t *shared;              /* (n_layer) source layer or -1 */
    float **k_basis, **v_basis;   /* (n_layer) -> (rk, kd), (rv, vd) */
    float **k_scale, **v_scale;   /* (n_layer) -> (rk), (rv) */
    float **k_dim, **v_dim;       /* (n_layer) -> (kd), (vd), NULL = unweighted */
    float **k_mean, **v_mean;     /* (n_layer) -> (kd), (vd) */
    int32_t **keep_idx;           /* (n_layer) -> (keep) */
    double *k_lost, *v_lost;      /* (n_layer) fraction of calibration energy dropped */
} kvs_retro_plan;

typedef struct kvs_retro_opts {
    kvs_retro_mode mode;          /* NONE: no latent (sharing / formats only) */
    int32_t rank;                 /* > 0: fixed rank for K and for V          */
    double budget;                /* > 0: bytes per token, all layers         */
    int32_t rope_keep;            /* KEEP: rotary pairs kept per KV head      */
    int32_t share;                /* layers to share                          */
    kvs_dtype latent_type;        /* element format of latent rows            */
    bool weighted;                /* attention-aware per-dim weights          */
    bool center;                  /* subspaces of centered activations        */
    int32_t granule;              /* rank granule (8 float, 32 block formats) */
} kvs_retro_opts;

/* Chooses shared layers, ranks, bases and kept dims. Errors name the option. */
kvs_status kvs_retro_plan_build(const kvs_calib *c, const kvs_model *m, const kvs_retro_opts *o,
                                kvs_retro_plan **out);
void kvs_retro_plan_free(kvs_retro_plan *p);

/* Writes in's keys and tensors plus the plan's (rules: kvslim.kv.rules, ""
 * for none) to path via a temporary file; path must not be in's file. */
struct kvs_gguf;
kvs_status kvs_retro_write(const struct kvs_gguf *in, const kvs_retro_plan *p, const char *rules, const char *path);

#endif
