/* DeepSeek V4 ("deepseek4") internals shared by src/arch/deepseek4*.c:
 * hyper-parameters, per-layer weights, the session state (mHC buffers,
 * compressor rings, scratch) and the attention entry point. Internal header;
 * see docs/arch-deepseek4.md for the architecture and the GGUF names. */
#ifndef KVS_ARCH_DEEPSEEK4_H
#define KVS_ARCH_DEEPSEEK4_H

#include "model/session.h"

#define DS4_MAX_HC 16

/* One softmax-gated pooling compressor (main entries or indexer keys). */
typedef struct ds4_comp {
    kvs_weight wkv, wgate;       /* (coff*d, n_embd) */
    const float *ape;            /* (m, coff*d): per-slot score offsets */
    const float *norm;           /* (d) */
    int32_t d, coff;             /* coff 2 = overlapping (m == 4) */
} ds4_comp;

typedef struct ds4_layer {
    int32_t ratio;               /* 0 window-only, 4 CSA (indexer), else HCA */
    const float *attn_norm, *ffn_norm;
    kvs_weight hc_fn[2];         /* attn, ffn: ((2+hc)*hc, hc*n_embd) */
    const float *hc_base[2], *hc_scale[2];
    const float *sinks;          /* (n_head) */
    kvs_weight wq_a, wq_b, wkv, wo_b;
    kvs_weight *wo_a;            /* (groups) row views of attn_output_a: (o_lora, H*hd/G) each */
    const float *q_norm, *kv_norm;
    ds4_comp comp, icomp;        /* icomp: CSA layers only */
    kvs_weight iq_b, iproj;      /* indexer query (nih*ihd, q_lora), head weights (nih, n_embd) */
    kvs_weight gate_inp;         /* (n_expert, n_embd) */
    const float *exp_bias;       /* (n_expert), NULL on hash layers */
    int32_t *tid2eid;            /* (n_vocab, n_used) on hash layers */
    kvs_weight *gate_exps, *up_exps, *down_exps; /* (n_expert) views */
    kvs_weight gate_sh, up_sh, down_sh;
    float clamp, clamp_sh;       /* SwiGLU limits (0 = none) */
} ds4_layer;

typedef struct ds4_model {
    int32_t hc, sinkhorn_iters;
    float hc_eps;
    int32_t q_lora, o_lora, o_groups, window, rope_dim;
    int32_t idx_heads, idx_dim, idx_topk;
    int32_t n_expert, n_used, n_ff, n_hash;
    float route_scale;
    bool route_norm;             /* expert_weights_norm: routed weights divided by their sum */
    bool weights_norm;
    double freq[2][256];         /* rope frequencies: [0] window-only layers, [1] compressed (YaRN) */
    ds4_layer *layers;
    kvs_weight hc_head_fn;       /* (hc, hc*n_embd) */
    const float *hc_head_base, *hc_head_scale;
} ds4_model;

/* Compressor ring: the raw (pre-pooling) rows of the newest coff*m tokens. */
typedef struct ds4_ring {
    float *kv, *score;           /* (coff*m, coff*d); score includes ape */
} ds4_ring;

typedef struct ds4_state {
    ds4_ring *ring, *iring;      /* (n_layer) main and indexer compressors */
    float *h;                    /* (B, hc*D) residual streams */
    float *mix;                  /* (B, mix) */
    float *hpre, *hpost, *hcomb; /* (B, hc), (B, hc), (B, hc*hc) */
    float *x, *xn, *out;         /* (B, D) */
    float *qr, *q, *kv, *o, *og, *mid; /* attention activations */
    float *ckv, *csc;            /* (B, 2*max(hd, ihd)) compressor projections */
    float *iq, *iw;              /* (B, nih*ihd), (B, nih) */
    float *logit, *wts;          /* (B, E), (B, K) */
    int32_t *sel, *rows;         /* (B, K), (B) */
    float *xg, *gg, *uu, *dd;    /* expert batch: (B, D), (B, F), (B, F), (B, D) */
    float *shg, *shu;            /* (B, F) shared expert */
    float *tmp;                  /* (hc*D) */
    float *iscore;               /* (n_ctx / 4 + 1) indexer scores of one decode query */
    float *iselect;              /* (n_ctx / 4 + 1) scratch of the decode top-k selection */
} ds4_state;

/* Attention sublayer of layer l for the chunk's normed inputs st->xn (n rows at
 * positions s->kv->n_past ..): compressors (entries stored in the cache as their
 * groups complete), indexer top-k, MQA over raw window + entries with sinks,
 * inverse RoPE and the grouped output projection into st->out. */
kvs_status ds4_attention(kvs_session *s, int32_t l, int64_t n);

/* RoPE (adjacent pairs) on the last rope_dim elements of each of n_heads rows
 * of width d, at position pos; inverse rotates by -pos. */
void ds4_rope(const double *freq, int32_t rope_dim, float *x, int32_t n_heads, int32_t d, int64_t pos,
              bool inverse);

/* Inner loops of the attention: scalar references and AVX2 twins (the
 * latter only after kvs_cpu()->avx2); ds4_dot/ds4_axpy pick one. */
float ds4_dot_ref(const float *a, const float *b, int64_t n);
void ds4_axpy_ref(float *y, float a, const float *x, int64_t n);
float ds4_dot_avx2(const float *a, const float *b, int64_t n);
void ds4_axpy_avx2(float *y, float a, const float *x, int64_t n);

/* MQA over nk key rows stored in `type` (rows[k] points at one cache row):
 * scores[h*nk + k] = (q_h . k) * scale for the H query heads, and
 * o_h = sum_k p[h*nk + k] k_k. Each row is read once for all heads. The
 * dispatchers pick the AVX2 kernels for f16/f32 rows (hd % 8 == 0), else
 * convert rows one by one (tmp: hd floats); the *_ref twins always convert
 * with the scalar conversions and use ds4_dot_ref/ds4_axpy_ref. */
void ds4_mqa_scores(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *q, int64_t H, int64_t hd,
                    float scale, float *scores, float *tmp);
void ds4_mqa_accum(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *p, int64_t H, int64_t hd,
                   float *o, float *tmp);
void ds4_mqa_scores_ref(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *q, int64_t H, int64_t hd,
                        float scale, float *scores, float *tmp);
void ds4_mqa_accum_ref(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *p, int64_t H, int64_t hd,
                       float *o, float *tmp);
void ds4_mqa_scores_avx2(bool f16, const uint8_t *const *rows, int64_t nk, const float *q, int64_t H, int64_t hd,
                         float scale, float *scores);
void ds4_mqa_accum_avx2(bool f16, const uint8_t *const *rows, int64_t nk, const float *p, int64_t H, int64_t hd,
                        float *o);

/* 8-bit lightning indexer. Keys are stored as q8_0 rows (ihd/32 blocks of an
 * f16 scale + 32 int8, the cache's indexer_type); each query head is
 * quantized per token with ds4_quant_query: one f32 scale per head,
 * d = amax/127, q = round-half-even(x / d) (x * (1/d)), clamped to +-127.
 * ds4_iscore_q8 scores n consecutive key rows:
 *   sc[j] = sum_h relu(v_jh) w[h] (h in order, relu(v) w added as 0 when v <= 0),
 *   v_jh = (((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))) * dq_h,
 *   l_i = fma(isum_jhb_i, dk_jb, l_i) over blocks b in order, where
 *   isum_jhb_i = the exact integer dot of elements 4i..4i+3 of block b.
 * That is the AVX2 kernel's exact operation order, so the twins agree bit
 * for bit. */
void ds4_quant_query(const float *x, int32_t nih, int32_t ihd, int8_t *q, float *d);
void ds4_iscore_q8_ref(const void *keys, int64_t n, const int8_t *q, const float *dq, const float *w, int32_t nih,
                       int32_t ihd, float *sc);
void ds4_iscore_q8_avx2(const void *keys, int64_t n, const int8_t *q, const float *dq, const float *w, int32_t nih,
                        int32_t ihd, float *sc);

/* Top-k of sc[0..n) by (higher score, then lower index), written to idx[0..k)
 * in ascending index order; O(n) expected: a strided sample gives a threshold
 * that ~2k scores reach, the k-th value is selected among those candidates
 * (all n when fewer than k reach it) in tmp[0..n), then one pass collects.
 * Requires 0 < k < n. */
void ds4_select_topk(const float *sc, int64_t n, int64_t k, float *tmp, int32_t *idx);

#endif
