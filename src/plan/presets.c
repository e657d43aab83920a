/* Built-in model presets for the planner. Every architecture number below is
 * taken from the model's HF config.json (or the paper / reference code where
 * the config does not say it) and the source is cited next to it. Parameter
 * counts are from the model cards. KV element formats default to BF16 (the
 * checkpoints' dtype) except where the model card / reference kernels
 * define a packed layout (DeepSeek V3.2 and V4), which is spelled out.
 *
 * Layer patterns (which layers are local/global/shared/compressed) follow
 * the configs' `layer_types`, `sliding_window_pattern`, `compress_ratios`
 * and `num_kv_shared_layers` fields. */
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "plan/plan.h"

/* ---- layer builders ------------------------------------------------------ */

static void L_full(kvs_plan_layer *L, uint32_t nkv, uint32_t dk, uint32_t dv, uint32_t window) {
    L->kv = kvs_kv_scheme_full(nkv, dk, dv, KVS_TYPE_BF16);
    L->kv.window = window;
    L->read_topk = 0;
}

static void L_latent(kvs_plan_layer *L, uint32_t rank, uint32_t rope) {
    L->kv = kvs_kv_scheme_full(0, 0, 0, KVS_TYPE_BF16);
    L->kv.store = KVS_KV_STORE_LATENT;
    L->kv.latent_rank = rank;
    L->kv.rope_dim = rope;
    L->read_topk = 0;
}

static void L_shared(kvs_plan_layer *L, const kvs_plan_layer *src, int32_t from) {
    L->kv = src->kv;
    L->kv.store = KVS_KV_STORE_SHARED;
    L->kv.shared_from = from;
    L->read_topk = 0;
}

/* DeepSeek V4 packed entry (see DeepSeek-V4 paper: "BF16 for the RoPE
 * dimensions, FP8 for the rest"; byte layout as in vLLM's
 * deepseek_v4_ops/cache_utils.py): 448 x e4m3 + 64 x bf16 + 8 bytes of
 * ue8m0 scales (7 used + 1 pad) = 584 bytes per compressed entry and per
 * raw-window token. Indexer keys (CSA only) in FP4 e2m1 as the V4 serving
 * recipes use (use_fp4_indexer_cache): 128 x 4 bit = 64 B + one ue8m0 scale
 * per 32 elements = 68 B per compressed entry. The V4 report trains and runs
 * the indexer's QK path in FP4, and these 68 B reproduce its stated KV cost
 * at 1M tokens (10% / 7% of V3.2 for Pro / Flash); vLLM's default V4 indexer
 * cache is FP8 e4m3 + one f32 scale per key (132 B, as V3.2), giving 11.5% /
 * 8.0%. kvslim's own engine stores q8_0 keys (136 B at 128 dims). */
#define V4_ENTRY_BYTES 584u
#define V4_INDEXER_BYTES 68u

static void L_v4(kvs_plan_layer *L, uint32_t ratio) {
    L->kv = kvs_kv_scheme_full(0, 0, 0, KVS_TYPE_BF16);
    L->kv.store = KVS_KV_STORE_COMPRESSED;
    L->kv.compress_ratio = ratio;          /* 0: window-only layer */
    L->kv.entry_dim = 512;                 /* head_dim: one K=V 512-dim head */
    L->kv.entry_bytes = V4_ENTRY_BYTES;
    L->kv.window = 128;                    /* sliding_window */
    if (ratio == 4) {                      /* CSA: lightning indexer keys */
        L->kv.indexer_dim = 128;           /* index_head_dim */
        L->kv.indexer_bytes = V4_INDEXER_BYTES;
        L->read_topk = 512;                /* index_topk */
    } else {
        L->read_topk = 0;                  /* HCA reads every compressed entry */
    }
}

/* ---- preset table -------------------------------------------------------- */

typedef struct preset {
    const char *name;
    const char *aliases;       /* space separated */
    const char *title;
    const char *source;
    kvs_status (*build)(kvs_plan_model *m);
} preset;

static kvs_status start(kvs_plan_model *m, uint32_t n_layer, const char *name, const char *arch,
                        uint32_t n_ctx, uint32_t n_embd, uint32_t n_head, double total, double active) {
    kvs_status st = kvs_plan_model_init(m, n_layer);
    if (st != KVS_OK) return st;
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    m->n_ctx_train = n_ctx;
    m->n_embd = n_embd;
    m->n_head = n_head;
    m->params_total = total;
    m->params_active = active;
    return KVS_OK;
}

/* Uniform GQA: every layer full (optionally all windowed). */
static kvs_status gqa(kvs_plan_model *m, const char *name, uint32_t nl, uint32_t nh, uint32_t nkv, uint32_t hd,
                      uint32_t embd, uint32_t ctx, double params, uint32_t window) {
    kvs_status st = start(m, nl, name, "llama", ctx, embd, nh, params, params);
    if (st != KVS_OK) return st;
    for (uint32_t i = 0; i < nl; i++) L_full(&m->layers[i], nkv, hd, hd, window);
    kvs_plan_model_set_weight_bits(m, 16, "bf16");
    return KVS_OK;
}

/* meta-llama/Llama-3.1-8B config.json: num_hidden_layers 32, num_attention_heads 32,
 * num_key_value_heads 8, hidden_size 4096 (head_dim 128), max_position_embeddings 131072.
 * 8.03B params (model card). */
static kvs_status b_llama31_8b(kvs_plan_model *m) {
    return gqa(m, "Llama-3.1-8B", 32, 32, 8, 128, 4096, 131072, 8.03e9, 0);
}
/* meta-llama/Llama-3.1-70B config.json: 80 layers, 64 heads, 8 KV heads, hidden 8192
 * (head_dim 128), 131072 ctx. 70.6B params. */
static kvs_status b_llama31_70b(kvs_plan_model *m) {
    return gqa(m, "Llama-3.1-70B", 80, 64, 8, 128, 8192, 131072, 70.6e9, 0);
}
/* meta-llama/Llama-3.1-405B config.json: 126 layers, 128 heads, 8 KV heads, hidden 16384
 * (head_dim 128), 131072 ctx. 405.9B params. */
static kvs_status b_llama31_405b(kvs_plan_model *m) {
    return gqa(m, "Llama-3.1-405B", 126, 128, 8, 128, 16384, 131072, 405.9e9, 0);
}
/* Qwen/Qwen2.5-7B config.json: 28 layers, 28 heads, 4 KV heads, hidden 3584 (head_dim 128),
 * max_position_embeddings 131072, use_sliding_window false. 7.61B params. */
static kvs_status b_qwen25_7b(kvs_plan_model *m) {
    kvs_status st = gqa(m, "Qwen2.5-7B", 28, 28, 4, 128, 3584, 131072, 7.61e9, 0);
    if (st == KVS_OK) snprintf(m->arch, sizeof m->arch, "qwen2");
    return st;
}
/* Qwen/Qwen3-8B config.json: 36 layers, 32 heads, 8 KV heads, head_dim 128, hidden 4096,
 * max_position_embeddings 40960. 8.19B params. */
static kvs_status b_qwen3_8b(kvs_plan_model *m) {
    kvs_status st = gqa(m, "Qwen3-8B", 36, 32, 8, 128, 4096, 40960, 8.19e9, 0);
    if (st == KVS_OK) snprintf(m->arch, sizeof m->arch, "qwen3");
    return st;
}
/* mistralai/Mistral-7B-v0.1 config.json: 32 layers, 32 heads, 8 KV heads, hidden 4096
 * (head_dim 128), sliding_window 4096 on every layer, max_position_embeddings 32768.
 * 7.24B params. */
static kvs_status b_mistral_7b(kvs_plan_model *m) {
    return gqa(m, "Mistral-7B-v0.1", 32, 32, 8, 128, 4096, 32768, 7.24e9, 4096);
}
/* HuggingFaceTB/SmolLM2-135M config.json: 30 layers, 9 heads, 3 KV heads, hidden 576
 * (head_dim 64), max_position_embeddings 8192, tied embeddings. 134.5M params. */
static kvs_status b_smollm2(kvs_plan_model *m) {
    return gqa(m, "SmolLM2-135M", 30, 9, 3, 64, 576, 8192, 134.5e6, 0);
}

/* Gemma 3: layer i is global when i % 6 == 5 (sliding_window_pattern 6 /
 * layer_types: five "sliding_attention" then one "full_attention"). */
static kvs_status gemma3(kvs_plan_model *m, const char *name, uint32_t nl, uint32_t nh, uint32_t nkv,
                         uint32_t hd, uint32_t embd, uint32_t ctx, uint32_t window, double params) {
    kvs_status st = start(m, nl, name, "gemma3", ctx, embd, nh, params, params);
    if (st != KVS_OK) return st;
    for (uint32_t i = 0; i < nl; i++) L_full(&m->layers[i], nkv, hd, hd, i % 6 == 5 ? 0 : window);
    kvs_plan_model_set_weight_bits(m, 16, "bf16");
    return KVS_OK;
}
/* google/gemma-3-270m config.json: 18 layers, 4 heads, 1 KV head, head_dim 256, hidden 640,
 * sliding_window 512, layer_types 5 sliding : 1 full, max_position_embeddings 32768.
 * 268M params (model card: 170M embedding + 100M transformer). */
static kvs_status b_gemma3_270m(kvs_plan_model *m) {
    return gemma3(m, "Gemma-3-270M", 18, 4, 1, 256, 640, 32768, 512, 268e6);
}
/* google/gemma-3-27b-it config.json (text_config): 62 layers, 32 heads, 16 KV heads,
 * head_dim 128, hidden 5376, sliding_window 1024, sliding_window_pattern 6,
 * max_position_embeddings 131072. 27.0B language-model params (27.4B with SigLIP). */
static kvs_status b_gemma3_27b(kvs_plan_model *m) {
    return gemma3(m, "Gemma-3-27B", 62, 32, 16, 128, 5376, 131072, 1024, 27.0e9);
}

/* Gemma 3n: layer_types 4 sliding : 1 full (i % 5 == 4 is full); the last
 * num_kv_shared_layers layers store nothing and read the cache of the last
 * non-shared layer of the same type (Gemma3n modeling code). */
static kvs_status gemma3n(kvs_plan_model *m, const char *name, uint32_t nl, uint32_t n_shared, double total,
                          double active) {
    kvs_status st = start(m, nl, name, "gemma3n", 32768, 2048, 8, total, active);
    if (st != KVS_OK) return st;
    uint32_t first_shared = nl - n_shared;
    int32_t last_local = -1, last_global = -1;
    for (uint32_t i = 0; i < nl; i++) {
        bool global = i % 5 == 4;
        if (i < first_shared) {
            L_full(&m->layers[i], 2, 256, 256, global ? 0 : 512);
            if (global) last_global = (int32_t)i; else last_local = (int32_t)i;
        } else {
            int32_t src = global ? last_global : last_local;
            L_shared(&m->layers[i], &m->layers[src], src);
        }
    }
    kvs_plan_model_set_weight_bits(m, 16, "bf16");
    return KVS_OK;
}
/* google/gemma-3n-E2B config.json (text_config): 30 layers, 8 heads, 2 KV heads,
 * head_dim 256, sliding_window 512, num_kv_shared_layers 10, max_position_embeddings 32768.
 * Model card: 5B raw params, 2B "effective" (per-layer embeddings are looked up, not
 * streamed) — used as the active bytes for the bandwidth bound. */
static kvs_status b_gemma3n_e2b(kvs_plan_model *m) { return gemma3n(m, "Gemma-3n-E2B", 30, 10, 5.44e9, 1.91e9); }
/* google/gemma-3n-E4B config.json: 35 layers, 8 heads, 2 KV heads, head_dim 256,
 * sliding_window 512, num_kv_shared_layers 15. Model card: 8B raw, 4B effective. */
static kvs_status b_gemma3n_e4b(kvs_plan_model *m) { return gemma3n(m, "Gemma-3n-E4B", 35, 15, 7.85e9, 3.97e9); }

/* Gemma 4 E2B/E4B: local layers head_dim 256, global layers head_dim 512
 * (global_head_dim), sliding_window 512; KV shared across the last layers per
 * type. Numbers from google/gemma.cpp gemma/configs.cc (ConfigGemma4_2B_LM,
 * ConfigGemma4_E4B_LM), which mirror google/gemma-4-E2B / E4B config.json:
 *   E2B: 35 layers, 8 heads, 1 KV head, global at i % 5 == 4, layers 15..34 share
 *        (local <- 13, global <- 14), 128K ctx. Model card: 2.3B effective, 5.1B with embeddings.
 *   E4B: 42 layers, 8 heads, 2 KV heads, global at i % 6 == 5, layers 24..41 share
 *        (local <- 22, global <- 23), 128K ctx. Model card: 4.5B effective, 8B with embeddings. */
static kvs_status gemma4(kvs_plan_model *m, const char *name, uint32_t nl, uint32_t nkv, uint32_t period,
                         uint32_t first_shared, uint32_t embd, double total, double active) {
    kvs_status st = start(m, nl, name, "gemma4", 131072, embd, 8, total, active);
    if (st != KVS_OK) return st;
    int32_t last_local = -1, last_global = -1;
    for (uint32_t i = 0; i < nl; i++) {
        bool global = i % period == period - 1;
        if (i < first_shared) {
            if (global) { L_full(&m->layers[i], nkv, 512, 512, 0); last_global = (int32_t)i; }
            else { L_full(&m->layers[i], nkv, 256, 256, 512); last_local = (int32_t)i; }
        } else {
            int32_t src = global ? last_global : last_local;
            L_shared(&m->layers[i], &m->layers[src], src);
        }
    }
    kvs_plan_model_set_weight_bits(m, 16, "bf16");
    return KVS_OK;
}
static kvs_status b_gemma4_e2b(kvs_plan_model *m) { return gemma4(m, "Gemma-4-E2B", 35, 1, 5, 15, 1536, 5.1e9, 2.3e9); }
static kvs_status b_gemma4_e4b(kvs_plan_model *m) { return gemma4(m, "Gemma-4-E4B", 42, 2, 6, 24, 2560, 8.0e9, 4.5e9); }

/* MLA models: every layer stores kv_lora_rank + qk_rope_head_dim elements. */
static kvs_status mla(kvs_plan_model *m, const char *name, uint32_t nl, uint32_t nh, uint32_t embd, uint32_t ctx,
                      double total, double active, double wbits, const char *wfmt) {
    kvs_status st = start(m, nl, name, "deepseek2", ctx, embd, nh, total, active);
    if (st != KVS_OK) return st;
    for (uint32_t i = 0; i < nl; i++) L_latent(&m->layers[i], 512, 64);
    kvs_plan_model_set_weight_bits(m, wbits, wfmt);
    return KVS_OK;
}
/* deepseek-ai/DeepSeek-V2-Lite config.json: 27 layers, 16 heads, hidden 2048,
 * kv_lora_rank 512, qk_rope_head_dim 64, max_position_embeddings 163840. 15.7B total,
 * 2.4B active (model card). BF16 weights. */
static kvs_status b_dsv2_lite(kvs_plan_model *m) {
    return mla(m, "DeepSeek-V2-Lite", 27, 16, 2048, 163840, 15.7e9, 2.4e9, 16, "bf16");
}
/* deepseek-ai/DeepSeek-V2 config.json: 60 layers, 128 heads, hidden 5120, kv_lora_rank 512,
 * qk_rope_head_dim 64, max_position_embeddings 163840. 236B total, 21B active. BF16. */
static kvs_status b_dsv2(kvs_plan_model *m) {
    return mla(m, "DeepSeek-V2", 60, 128, 5120, 163840, 236e9, 21e9, 16, "bf16");
}
/* deepseek-ai/DeepSeek-V3 (and R1, same architecture) config.json: num_hidden_layers 61,
 * 128 heads, hidden 7168, kv_lora_rank 512, qk_rope_head_dim 64, max_position_embeddings
 * 163840, FP8 e4m3 weights with 128x128 block scales. 671B total, 37B active (the MTP
 * module, +14B, is not counted). KV per token at BF16: 61 x 576 x 2 = 70,272 B. */
static kvs_status b_dsv3(kvs_plan_model *m) {
    return mla(m, "DeepSeek-V3", 61, 128, 7168, 163840, 671e9, 37e9, 8, "fp8 e4m3");
}
/* deepseek-ai/DeepSeek-V3.2(-Exp) config.json: the V3 shape (61 layers, kv_lora_rank 512,
 * qk_rope_head_dim 64) plus the DSA lightning indexer: index_head_dim 128, index_topk 2048.
 * KV as the model card / FlashMLA store it: per token per layer 656 B = 512 x e4m3 latent +
 * 4 x fp32 scales (one per 128) + 64 x bf16 rope (FlashMLA README, "FP8 KV cache"), and the
 * indexer key 132 B = 128 x e4m3 + one fp32 scale. Decode reads the top-2048 latents. */
static kvs_status b_dsv32(kvs_plan_model *m) {
    kvs_status st = mla(m, "DeepSeek-V3.2", 61, 128, 7168, 163840, 671e9, 37e9, 8, "fp8 e4m3");
    if (st != KVS_OK) return st;
    for (uint32_t i = 0; i < m->n_layer; i++) {
        m->layers[i].kv.entry_bytes = 656;
        m->layers[i].kv.indexer_dim = 128;
        m->layers[i].kv.indexer_bytes = 132;
        m->layers[i].read_topk = 2048;
    }
    return KVS_OK;
}
/* moonshotai/Kimi-K2-Instruct config.json: DeepSeek-V3 architecture, 61 layers, 64 heads,
 * hidden 7168, kv_lora_rank 512, qk_rope_head_dim 64, 384 experts (8 active),
 * max_position_embeddings 131072, FP8 block-quantized weights. 1.04T total, 32.6B active. */
static kvs_status b_kimi_k2(kvs_plan_model *m) {
    return mla(m, "Kimi-K2", 61, 64, 7168, 131072, 1.04e12, 32.6e9, 8, "fp8 e4m3");
}

/* DeepSeek V4: every layer keeps a 128-token raw window (sliding_window 128);
 * compress_ratios gives 0 (window only), 4 (CSA, with indexer, top-512) or
 * 128 (HCA). deepseek-ai/DeepSeek-V4-Flash config.json: 43 layers, hidden 4096,
 * head_dim 512, index_head_dim 128, index_topk 512, compress_ratios
 * [0, 0, 4, 128, 4, 128, ..., 4] (layers 0-1 window-only, then even CSA / odd HCA;
 * the trailing entry is the MTP layer), max_position_embeddings 1048576. 284B total,
 * 13B active. DeepSeek-V4-Pro config.json: 61 layers, hidden 7168, same head/indexer
 * shape; layers 0-1 HCA, then even CSA / odd HCA (30 CSA + 31 HCA). 1.6T total, 49B
 * active. Weights: routed experts FP4 (MXFP4) + the rest FP8: ~4.5 bits/param on
 * average (estimate from the released checkpoint sizes). */
static kvs_status v4(kvs_plan_model *m, const char *name, uint32_t nl, uint32_t embd, uint32_t nh, bool pro,
                     double total, double active) {
    kvs_status st = start(m, nl, name, "deepseek4", 1048576, embd, nh, total, active);
    if (st != KVS_OK) return st;
    for (uint32_t i = 0; i < nl; i++) {
        uint32_t ratio;
        if (i < 2) ratio = pro ? 128 : 0;
        else ratio = (i % 2 == 0) ? 4 : 128;
        L_v4(&m->layers[i], ratio);
    }
    kvs_plan_model_set_weight_bits(m, 4.5, "fp4 experts + fp8");
    return KVS_OK;
}
static kvs_status b_v4_flash(kvs_plan_model *m) { return v4(m, "DeepSeek-V4-Flash", 43, 4096, 64, false, 284e9, 13e9); }
static kvs_status b_v4_pro(kvs_plan_model *m) { return v4(m, "DeepSeek-V4-Pro", 61, 7168, 128, true, 1.6e12, 49e9); }

/* poolside/Laguna-XS.2 config.json: 40 layers, 48 query heads, 8 KV heads, head_dim 128,
 * hidden 2048, sliding_window 512, 256 experts (8 active), max_position_embeddings 131072;
 * layer_types: 30 sliding (SWA-512) + 10 full attention. We place the full layers at
 * i % 4 == 3 (only the counts affect bytes). 33B total, 3B active (model card). BF16. */
static kvs_status b_laguna(kvs_plan_model *m) {
    kvs_status st = start(m, 40, "Laguna-XS.2", "laguna", 131072, 2048, 48, 33e9, 3e9);
    if (st != KVS_OK) return st;
    for (uint32_t i = 0; i < 40; i++) L_full(&m->layers[i], 8, 128, 128, i % 4 == 3 ? 0 : 512);
    kvs_plan_model_set_weight_bits(m, 16, "bf16");
    return KVS_OK;
}

static const preset k_presets[] = {
    {"llama-3.1-8b", "llama3.1-8b llama-8b", "Llama-3.1 8B (GQA 32x8x128)", "meta-llama/Llama-3.1-8B config.json", b_llama31_8b},
    {"llama-3.1-70b", "llama3.1-70b llama-70b", "Llama-3.1 70B (GQA 80x8x128)", "meta-llama/Llama-3.1-70B config.json", b_llama31_70b},
    {"llama-3.1-405b", "llama3.1-405b llama-405b", "Llama-3.1 405B (GQA 126x8x128)", "meta-llama/Llama-3.1-405B config.json", b_llama31_405b},
    {"qwen2.5-7b", "qwen-2.5-7b", "Qwen2.5 7B (GQA 28x4x128)", "Qwen/Qwen2.5-7B config.json", b_qwen25_7b},
    {"qwen3-8b", "qwen-3-8b", "Qwen3 8B (GQA 36x8x128)", "Qwen/Qwen3-8B config.json", b_qwen3_8b},
    {"mistral-7b", "mistral-7b-v0.1", "Mistral 7B v0.1 (SWA 4096 on all layers)", "mistralai/Mistral-7B-v0.1 config.json", b_mistral_7b},
    {"smollm2-135m", "smollm2", "SmolLM2 135M (GQA 30x3x64)", "HuggingFaceTB/SmolLM2-135M config.json", b_smollm2},
    {"gemma-3-270m", "gemma3-270m", "Gemma 3 270M (5 local SWA-512 : 1 global)", "google/gemma-3-270m config.json", b_gemma3_270m},
    {"gemma-3-27b", "gemma3-27b", "Gemma 3 27B (5 local SWA-1024 : 1 global)", "google/gemma-3-27b-it config.json", b_gemma3_27b},
    {"gemma-3n-e2b", "gemma3n-e2b", "Gemma 3n E2B (last 10 layers share KV)", "google/gemma-3n-E2B config.json", b_gemma3n_e2b},
    {"gemma-3n-e4b", "gemma3n-e4b", "Gemma 3n E4B (last 15 layers share KV)", "google/gemma-3n-E4B config.json", b_gemma3n_e4b},
    {"gemma-4-e2b", "gemma4-e2b", "Gemma 4 E2B (last 20 layers share KV per type)", "google/gemma-4-E2B config.json via google/gemma.cpp configs.cc", b_gemma4_e2b},
    {"gemma-4-e4b", "gemma4-e4b", "Gemma 4 E4B (last 18 layers share KV per type)", "google/gemma-4-E4B config.json via google/gemma.cpp configs.cc", b_gemma4_e4b},
    {"deepseek-v2-lite", "dsv2-lite", "DeepSeek-V2-Lite (MLA 512+64, MoE 15.7B/2.4B)", "deepseek-ai/DeepSeek-V2-Lite config.json", b_dsv2_lite},
    {"deepseek-v2", "dsv2", "DeepSeek-V2 (MLA 512+64, MoE 236B/21B)", "deepseek-ai/DeepSeek-V2 config.json", b_dsv2},
    {"deepseek-v3", "dsv3 deepseek-r1 dsr1 deepseek-v3/r1", "DeepSeek-V3 / R1 (MLA 512+64, MoE 671B/37B)", "deepseek-ai/DeepSeek-V3 config.json", b_dsv3},
    {"deepseek-v3.2", "dsv3.2 deepseek-v3.2-exp", "DeepSeek-V3.2 (MLA FP8 656 B + indexer, DSA top-2048)", "deepseek-ai/DeepSeek-V3.2-Exp config.json; FlashMLA FP8 KV layout", b_dsv32},
    {"deepseek-v4-flash", "dsv4-flash v4-flash", "DeepSeek-V4-Flash (CSA 4 / HCA 128 / window 128)", "deepseek-ai/DeepSeek-V4-Flash config.json; DeepSeek-V4 paper", b_v4_flash},
    {"deepseek-v4-pro", "dsv4-pro v4-pro", "DeepSeek-V4-Pro (CSA 4 / HCA 128 / window 128)", "deepseek-ai/DeepSeek-V4-Pro config.json; DeepSeek-V4 paper", b_v4_pro},
    {"kimi-k2", "kimi-k2-instruct", "Kimi K2 (MLA 512+64, MoE 1.04T/32.6B)", "moonshotai/Kimi-K2-Instruct config.json", b_kimi_k2},
    {"laguna-xs.2", "laguna-xs2 laguna", "Laguna XS.2 (30 SWA-512 + 10 global, MoE 33B/3B)", "poolside/Laguna-XS.2 config.json", b_laguna},
};

size_t kvs_plan_preset_count(void) { return sizeof k_presets / sizeof k_presets[0]; }

const char *kvs_plan_preset_name(size_t i, const char **title) {
    if (i >= kvs_plan_preset_count()) return NULL;
    if (title) *title = k_presets[i].title;
    return k_presets[i].name;
}

static bool alias_match(const char *aliases, const char *name) {
    size_t n = strlen(name);
    const char *p = aliases;
    while (p && *p) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncasecmp(p, name, n) == 0) return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

kvs_status kvs_plan_preset(const char *name, kvs_plan_model *out) {
    if (!name || !out) return kvs_fail(KVS_ERR_INVALID_ARG, "--preset: missing name");
    for (size_t i = 0; i < kvs_plan_preset_count(); i++) {
        const preset *p = &k_presets[i];
        if (strcasecmp(p->name, name) == 0 || alias_match(p->aliases, name)) {
            kvs_status st = p->build(out);
            if (st != KVS_OK) { kvs_plan_model_free(out); return st; }
            snprintf(out->source, sizeof out->source, "preset %s: %s", p->name, p->source);
            return KVS_OK;
        }
    }
    return kvs_fail(KVS_ERR_INVALID_ARG, "unknown preset '%s' (run `kvslim plan --list` for the %zu presets)", name,
                    kvs_plan_preset_count());
}
