/* The planner: "how much context fits, for how many users, how fast, at what
 * cost, on this hardware, with this model and this KV choice?" — answered
 * from a model description without loading weights.
 *
 * A kvs_plan_model is a per-layer list of KV schemes (kv/kv_scheme.h, the
 * same struct and byte formula the cache allocator uses) plus the weight
 * sizes the decode-speed bound needs. Models come from built-in presets
 * (presets.c, every number cited), an HF config.json (config.c) or GGUF
 * metadata (plan_gguf.c). What-if transforms rewrite the schemes; hardware
 * specs (hw.c) give memory, read bandwidth and price; kvs_plan_compute()
 * turns all that into numbers and the render functions print them.
 * Library code: no printing except to a FILE* the caller passes in. */
#ifndef KVS_PLAN_PLAN_H
#define KVS_PLAN_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kv/kv_scheme.h"
#include "kvslim.h"

typedef struct kvs_plan_layer {
    kvs_kv_scheme kv;
    /* Sparse attention: a decode step reads at most this many stored tokens
     * (LATENT) or compressed entries (COMPRESSED) chosen by the indexer,
     * plus every indexer key and the raw window. 0 = reads everything. */
    uint32_t read_topk;
} kvs_plan_layer;

typedef struct kvs_plan_model {
    char name[96];
    char source[320];        /* where the numbers come from */
    char arch[32];
    uint32_t n_layer;
    kvs_plan_layer *layers;  /* (n_layer) */
    uint32_t n_ctx_train;
    uint32_t n_embd, n_head;
    double params_total;     /* parameters, all experts                    */
    double params_active;    /* parameters touched per token (MoE: routed top-k) */
    double weight_bytes;     /* bytes of all weights as stored             */
    double active_weight_bytes; /* bytes read per decoded token            */
    double repack_bytes;     /* heap copies kvslim makes at load (the x8 layout of
                                core/repack.h; GGUF sources only): memory, not traffic */
    char weight_format[48];  /* e.g. "bf16", "fp8 e4m3", "gguf q4_1"       */
} kvs_plan_model;

void kvs_plan_model_free(kvs_plan_model *m);   /* frees layers; m itself is the caller's */
kvs_status kvs_plan_model_copy(kvs_plan_model *dst, const kvs_plan_model *src);
/* Allocates n_layer default-initialized layers (NONE store). */
kvs_status kvs_plan_model_init(kvs_plan_model *m, uint32_t n_layer);
/* Sets weight_bytes/active_weight_bytes from params at bits per weight. */
void kvs_plan_model_set_weight_bits(kvs_plan_model *m, double bits, const char *format);

/* ---- inputs ------------------------------------------------------------ */
size_t kvs_plan_preset_count(void);
/* Name and one-line title of preset i (NULL past the end). */
const char *kvs_plan_preset_name(size_t i, const char **title);
kvs_status kvs_plan_preset(const char *name, kvs_plan_model *out);
kvs_status kvs_plan_from_config_json(const char *text, size_t len, kvs_plan_model *out);
kvs_status kvs_plan_from_config_file(const char *path, kvs_plan_model *out);
kvs_status kvs_plan_from_gguf(const char *path, kvs_plan_model *out);

/* ---- what-if transforms ------------------------------------------------ */
/* Element format for every stored K/V/latent/entry: f32 f16 bf16 q8_0 q4_0
 * q4_1 q5_0 q5_1, or "qXkYv" / "kivi:k=X,v=Y[,g=G]" for the KIVI channel
 * layout. Clears explicit byte layouts (entry_bytes). */
kvs_status kvs_plan_apply_kv_type(kvs_plan_model *m, const char *type);
/* A comma-separated chain of transforms, applied left to right:
 *   gqa | base | none              no change (a label for --compare)
 *   latent:r=R[,rope=D] | mla:r=R  full layers -> latent rank R (+ rope D, default 64)
 *   window=N[+S]                   bound every attention layer to N (+S sinks)
 *   share=K                        cross-layer sharing: each run of K layers reads the first's cache
 *   compress=M[,raw=W]             one entry per M tokens + raw window W (default M)
 *   f16 | bf16 | q8_0 | q4_0 | ... element format (as --kv)
 *   qXkYv | kivi:k=X,v=Y[,g=G]     KIVI channel layout
 *   page=P                         page rounding to P tokens */
kvs_status kvs_plan_apply_whatif(kvs_plan_model *m, const char *spec);

/* ---- hardware ---------------------------------------------------------- */
typedef struct kvs_plan_hw {
    char name[64];
    double mem_bytes;        /* memory for weights + KV                     */
    double bw_bytes_s;       /* sustained read bandwidth                    */
    double price_hour;       /* USD per hour (rent or amortized), 0 = unknown */
    char note[160];
    double kv_budget;        /* > 0: the KV memory for concurrency and max context
                                (a server's --kv-budget), instead of mem - weights */
} kvs_plan_hw;

size_t kvs_plan_hw_count(void);
const kvs_plan_hw *kvs_plan_hw_at(size_t i);
/* A preset name, "this" (measured), or "custom:mem=24G,bw=1000G,price=0.5"
 * (mem in GiB-style binary units: K/M/G/T = 2^10..2^40; bw in decimal bytes
 * per second: K/M/G/T = 1e3..1e12; price USD/hour). Rejects impossible
 * values (zero/negative/non-finite memory or bandwidth, negative price). */
kvs_status kvs_plan_hw_parse(const char *spec, kvs_plan_hw *out);

/* ---- numbers ----------------------------------------------------------- */
/* "4k,32k,128k,1m,5000": k = 1024, m = 1048576. At most cap values. */
kvs_status kvs_plan_parse_ctx_list(const char *s, uint64_t *out, size_t cap, size_t *n_out);

uint64_t kvs_plan_kv_bytes(const kvs_plan_model *m, uint64_t n_ctx);       /* one sequence */
uint64_t kvs_plan_kv_read_bytes(const kvs_plan_model *m, uint64_t n_ctx);  /* per decode step */
double kvs_plan_kv_bytes_per_token(const kvs_plan_model *m);               /* growing part */
/* Bytes that do not grow with context (windows, raw windows, sinks), i.e.
 * kv_bytes(n) - growing*n at a large n (exact when dims are powers of two). */
double kvs_plan_kv_fixed_bytes(const kvs_plan_model *m);

#define KVS_PLAN_MAX_CTX 32
#define KVS_PLAN_UNBOUNDED UINT64_MAX

typedef struct kvs_plan_point {
    uint64_t ctx;
    uint64_t kv_seq;          /* KV bytes for one sequence                  */
    uint64_t kv_read;         /* KV bytes read per decode step, one sequence */
    uint64_t kv_batch;        /* kv_seq * batch                             */
    /* with hardware: */
    bool fits;                /* weights + kv_batch <= memory               */
    uint64_t concurrency;     /* sequences of this context that fit         */
    double tok_s_seq;         /* decode upper bound per sequence at `batch` */
    double tok_s_total;       /* tok_s_seq * batch                          */
    double usd_per_mtok;      /* price / (tok_s_total * 3600) * 1e6; <0 unknown */
} kvs_plan_point;

typedef struct kvs_plan_result {
    char label[96];           /* scheme label ("base", "latent:r=256", ...) */
    const kvs_plan_model *model;
    uint32_t batch;
    double kv_per_token;      /* growing bytes per token                    */
    double kv_fixed;          /* fixed bytes                                */
    size_t n_points;
    kvs_plan_point points[KVS_PLAN_MAX_CTX];
    bool has_hw;
    kvs_plan_hw hw;
    bool weights_fit;
    uint64_t max_ctx;         /* largest context for `batch` sequences; KVS_PLAN_UNBOUNDED if KV never grows */
} kvs_plan_result;

kvs_status kvs_plan_compute(const kvs_plan_model *m, const char *label, const uint64_t *ctx,
                            size_t n_ctx, uint32_t batch, const kvs_plan_hw *hw,
                            kvs_plan_result *out);

/* ---- rendering (to a caller's FILE*) ------------------------------------- */
/* results[0] is the primary scheme (gets the per-layer breakdown); others
 * are comparisons. breakdown_ctx: context for the per-layer column. */
void kvs_plan_render_text(FILE *f, const kvs_plan_result *results, size_t n, uint64_t breakdown_ctx);
void kvs_plan_render_json(FILE *f, const kvs_plan_result *results, size_t n, uint64_t breakdown_ctx);
void kvs_plan_render_csv(FILE *f, const kvs_plan_result *results, size_t n);
/* SVG: KV bytes of one sequence vs context (log x from 1K to max_ctx). */
void kvs_plan_render_svg(FILE *f, const kvs_plan_result *results, size_t n, uint64_t max_ctx);

/* "1.50 GiB", "656 B", ... */
void kvs_plan_fmt_bytes(double b, char *buf, size_t cap);
/* "4K", "128K", "1M", "5000" */
void kvs_plan_fmt_ctx(uint64_t n, char *buf, size_t cap);

#endif
