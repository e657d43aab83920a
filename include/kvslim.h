/* kvslim public API.
 *
 * Handles: an immutable, mmapped kvs_model; a kvs_session that owns a KV
 * cache and scratch buffers; a kvs_engine that runs many kvs_seq sequences
 * over one KV pool in batched steps. Options structs come with *_default(). Every
 * call that can fail returns a kvs_status; the message for the most recent
 * failure on the calling thread is kvs_last_error(). Library code never prints
 * and never exits. *_free(NULL) is a no-op. No tensor internals are exposed.
 */
#ifndef KVSLIM_H
#define KVSLIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One status enum across the library. Explicit values, append only. */
typedef enum kvs_status {
    KVS_OK              = 0,
    KVS_ERR_INVALID_ARG = 1, /* caller passed something unusable            */
    KVS_ERR_IO          = 2, /* open/read/mmap failed                       */
    KVS_ERR_FORMAT      = 3, /* malformed or hostile file                   */
    KVS_ERR_UNSUPPORTED = 4, /* valid but not implemented (arch, type, ...) */
    KVS_ERR_NOMEM       = 5, /* allocation failed                           */
    KVS_ERR_CONTEXT     = 6, /* sequence would exceed the session context   */
    KVS_ERR_BUDGET      = 7, /* KV byte budget exhausted                    */
    KVS_ERR_INTERNAL    = 8, /* a bug: please report                        */
} kvs_status;

const char *kvs_status_name(kvs_status st);
/* Human-readable message for the last failure on this thread ("" if none). */
const char *kvs_last_error(void);

typedef int32_t kvs_token;
typedef struct kvs_model kvs_model;
typedef struct kvs_session kvs_session;

/* ---- model ------------------------------------------------------------- */

typedef struct kvs_model_params {
    bool use_mmap;     /* map the file instead of reading it (default true) */
    bool repack;       /* keep a copy of the q4_0/q4_1/q5_0/q5_1/q8_0 matrices in the interleaved
                          layout the matmul kernels read in place (default true: faster
                          decode, batched decode and prefill for the memory of that copy;
                          the file stays untouched) */
} kvs_model_params;
kvs_model_params kvs_model_params_default(void);

kvs_status kvs_model_load(const char *path, const kvs_model_params *params, kvs_model **out);
void kvs_model_free(kvs_model *model);

typedef struct kvs_model_info {
    const char *arch;        /* general.architecture, e.g. "llama"        */
    const char *name;        /* general.name or ""                         */
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    float   rope_freq_base;
    uint64_t n_params;       /* total elements in all tensors              */
    uint64_t weight_bytes;   /* bytes of all tensor data                   */
    uint64_t decode_weight_bytes; /* weight bytes read per decoded token
                                     (everything but unused embedding rows) */
    kvs_token bos, eos;      /* -1 if absent                               */
    uint64_t repacked_bytes; /* heap bytes of the repacked matrices (params.repack);
                                decode reads these instead of their file bytes */
} kvs_model_info;
void kvs_model_get_info(const kvs_model *model, kvs_model_info *out);

/* ---- tokenizer --------------------------------------------------------- */

/* Tokenize UTF-8 text. add_bos follows the model's metadata when add_bos < 0.
 * parse_special: recognise special/control token text such as "<|im_start|>".
 * Writes at most cap tokens; *n_out gets the full count (call again with a
 * larger buffer if it exceeds cap). */
kvs_status kvs_tokenize(const kvs_model *model, const char *text, size_t len, int add_bos,
                        bool parse_special, kvs_token *out, size_t cap, size_t *n_out);
/* Bytes for one token (raw, may be a partial UTF-8 sequence). Returns the
 * length written (<= cap) or a negative value if the token id is invalid. */
int kvs_token_to_piece(const kvs_model *model, kvs_token tok, char *buf, size_t cap);
bool kvs_token_is_eog(const kvs_model *model, kvs_token tok);
/* Chat prompts in the model's convention (ChatML, Gemma, Llama 3, Llama 2):
 * from the GGUF's tokenizer.chat_template or, when the file has none, from
 * the turn tokens of its vocabulary (Gemma 3 files ship without one).
 * Roles are "system", "user" and "assistant". kvs_chat_format renders n
 * messages and, with add_assistant, the assistant's opening; it returns a
 * malloc'd string (caller frees) or NULL when the model has no known
 * convention. kvs_chat_format_user is the single-user-message case. */
typedef struct kvs_chat_message {
    const char *role;
    const char *content;
} kvs_chat_message;
char *kvs_chat_format(const kvs_model *model, const kvs_chat_message *msgs, size_t n, bool add_assistant);
char *kvs_chat_format_user(const kvs_model *model, const char *user_msg);

/* ---- session ----------------------------------------------------------- */

/* Element format of stored K/V rows (per token, per KV head). */
typedef enum kvs_kv_type {
    KVS_KV_F32  = 0,
    KVS_KV_F16  = 1,
    KVS_KV_BF16 = 2,
    KVS_KV_Q8_0 = 3,
    KVS_KV_Q4_0 = 4,
    /* rotated-codebook rows (TurboQuant-style), 64-element blocks with one
     * f16 scale: 2.25 / 2.75 / 3.25 / 3.75 / 4.25 bits per element all-in */
    KVS_KV_TQ2   = 5,
    KVS_KV_TQ2_5 = 6,
    KVS_KV_TQ3   = 7,
    KVS_KV_TQ3_5 = 8,
    KVS_KV_TQ4   = 9,
    /* tq2 / tq3 plus a 1-bit QJL sketch of the residual (3.5 / 4.5 bits) */
    KVS_KV_TQ2J  = 10,
    KVS_KV_TQ3J  = 11,
} kvs_kv_type;
/* Every setting a KV rule (kvs_session_params.kv_layers) may hold. */
#define KVS_KV_SETTINGS                                                                               \
    "f32 f16 bf16 q8_0 q4_0 tqB tqXkYv qXkYv group=G recent=R first=S clip vsym rotate[=k|v|kv|none] center[=none] " \
    "full window=W[+S] " \
    "sinks=S page=P shared=L h2o=B[+R] snapkv=B[+W] noevict"
/* "f16" -> KVS_KV_F16 ...; returns false for an unknown name. */
bool kvs_kv_type_from_name(const char *name, kvs_kv_type *out);
const char *kvs_kv_type_name(kvs_kv_type t);

typedef struct kvs_session_params {
    uint32_t n_ctx;        /* 0 = the model's training context            */
    uint32_t n_batch;      /* max tokens per forward call chunk (512)     */
    int32_t  n_threads;    /* 0 = all online CPUs                         */
    /* The KV scheme of every layer starts from the model's own (full
     * attention per KV head, or what the architecture prescribes) and is
     * then rewritten by these settings, in this order: */
    kvs_kv_type kv_type;   /* element format (F16)                        */
    uint32_t kv_window;    /* > 0: keep only the last kv_window positions */
    uint32_t kv_sinks;     /* with a window: also keep the first kv_sinks */
    uint32_t kv_page;      /* tokens per cache page (0 = 256)             */
    uint64_t kv_budget;    /* max bytes of KV pages (0 = no limit); past
                              it kvs_decode fails with KVS_ERR_BUDGET     */
    /* KV rules, ';'-separated, applied last in order, e.g.
     * "0-9:window=512+4;10-29:shared=9;30:q8_0" or "q4k3v,group=64,rotate".
     * A rule is [RANGE:]SETTING[,SETTING...]; RANGE is N or N-M (default:
     * every layer). Settings (KVS_KV_SETTINGS lists them all):
     *   f32 f16 bf16 q8_0 q4_0  element format of stored rows; q8_0/q4_0 are
     *                           Hadamard-rotated by default where the head
     *                           size is a power of two (rotate=none: plain)
     *   tq2 tq2.5 tq3 tq3.5 tq4 rotated-codebook rows (TurboQuant-style, core/tq.h):
     *                           the Hadamard-rotated head vector in blocks of 64,
     *                           each coordinate the nearest of a fixed Lloyd-Max
     *                           codebook (2/2.5/3/3.5/4 bits) times one f16 scale
     *                           per block: 2.25..4.25 bits per element all-in; head
     *                           sizes a power of two >= 64; always rotated
     *   tq2j tq3j               tq2 / tq3 plus a 1-bit QJL sketch of the
     *                           residual (3.5 / 4.5 bits, core/tq.h)
     *   tqXkYv                  the same with keys at X and values at Y bits,
     *                           X, Y in 2 2.5 3 3.5 4 2j 3j (e.g. tq4k3v, tq3jk3v)
     *   qXkYv                   per-channel keys at X bits, per-token values
     *                           at Y bits (1-8), in groups of group=G tokens (32)
     *   group=G recent=R first=S clip vsym
     *                           per-channel extras: an f16 residual of the newest
     *                           R tokens, the first S tokens kept in f16, a
     *                           least-squares clipping quantizer, symmetric value
     *                           groups (one f16 scale, no minimum; for rotate=v)
     *   rotate rotate=k|v|kv|none  Hadamard rotation of keys / values
     *   center center=none      keys stored minus the model's mean key of the
     *                           layer (exact for attention); on by default for
     *                           quantized rows (q8_0, q4_0, tq) where the
     *                           architecture can measure it (llama, qwen2,
     *                           qwen3, gemma3): model/key_center.h
     *   window=W[+S] sinks=S full  sliding window of W positions plus S sinks;
     *                           full: no window
     *   page=P                  tokens per page
     *   shared=L                read layer L's cache (L < this layer)
     *   h2o=B[+R] snapkv=B[+W] noevict
     *                           token eviction to B tokens per KV head: H2O keeps
     *                           4 sinks, the newest R (32) and the heaviest
     *                           hitters; SnapKV compresses each prompt chunk with
     *                           an observation window of W (32) queries
     * Layers a setting cannot apply to ignore it (shared layers keep their
     * source's format; eviction needs full, unwindowed row layers). NULL = none. */
    const char *kv_layers;
} kvs_session_params;
kvs_session_params kvs_session_params_default(void);

kvs_status kvs_session_new(const kvs_model *model, const kvs_session_params *params,
                           kvs_session **out);
void kvs_session_free(kvs_session *s);
/* Forget all cached tokens. */
void kvs_session_reset(kvs_session *s);
uint32_t kvs_session_n_past(const kvs_session *s);
uint32_t kvs_session_n_ctx(const kvs_session *s);
/* Bytes of KV pages allocated now; the bytes the cache will hold at
 * n_tokens (the scheme formula the planner also uses); the growing bytes
 * per token (windowed and shared layers add none). */
uint64_t kvs_session_kv_bytes(const kvs_session *s);
uint64_t kvs_session_kv_bytes_at(const kvs_session *s, uint64_t n_tokens);
uint64_t kvs_session_kv_bytes_per_token(const kvs_session *s);
/* Human-readable KV scheme of one layer, e.g. "full 3x64 f16 page256". */
void kvs_session_kv_describe(const kvs_session *s, int32_t layer, char *buf, size_t cap);

/* ---- sequences sharing one KV pool ---- */

/* A new session over the same model, KV scheme and KV pool as s (one byte
 * budget for both), whose cached tokens are s's: every KV page is shared,
 * and a write to a shared page copies it first, so neither session changes
 * what the other reads. Prefill a system prompt or a document once, fork it
 * per request. The fork has its own activations and threads. Refused
 * (KVS_ERR_UNSUPPORTED) for token eviction and for architectures that carry
 * other per-sequence state (DeepSeek V4's compressor rings). */
kvs_status kvs_session_fork(const kvs_session *s, kvs_session **out);
/* Keep the first n_tokens cached tokens and forget the rest (rewind for an
 * edit or a retry); pages past them go back to the pool. Refused
 * (KVS_ERR_UNSUPPORTED, naming the layer) where a layer no longer holds what
 * the kept tokens need: a sliding window that wrapped, per-channel groups
 * already quantized, eviction, compressed layers. 0 always works. */
kvs_status kvs_session_truncate(kvs_session *s, uint32_t n_tokens);
/* Bytes the KV pool holds for all the sessions that share it (each shared
 * page once), and its budget (0 = none). kvs_session_kv_bytes counts the
 * pages one session holds, shared ones included. */
uint64_t kvs_session_pool_bytes(const kvs_session *s);
uint64_t kvs_session_pool_budget(const kvs_session *s);

/* Run the model on n tokens appended after the cached ones.
 * logits: NULL, or room for n_vocab floats (all_logits=false: last token
 * only) or n*n_vocab floats (all_logits=true: one row per token). */
kvs_status kvs_decode(kvs_session *s, const kvs_token *tokens, size_t n,
                      bool all_logits, float *logits);

/* ---- many sequences, one engine ---------------------------------------- */

/* An engine runs many sequences of one model over one KV pool (one byte
 * budget, kv_budget in its params) and one set of activation buffers sized
 * for n_batch tokens per step. Each step reads every weight matrix once for
 * the tokens of all the sequences in it; attention runs per sequence over its
 * own pages (continuous batching: new prompts and running decodes mix in the
 * same steps). A kvs_session is the same machinery with one sequence.
 * An engine and its sequences are used by one thread at a time. */
typedef struct kvs_engine kvs_engine;
typedef struct kvs_seq kvs_seq;

/* params as for kvs_session_new (n_batch: tokens per step, all sequences
 * together; n_ctx: the longest sequence). */
kvs_status kvs_engine_new(const kvs_model *model, const kvs_session_params *params, kvs_engine **out);
/* Frees the engine and every sequence still open in it. */
void kvs_engine_free(kvs_engine *e);
uint32_t kvs_engine_n_batch(const kvs_engine *e);
uint32_t kvs_engine_n_ctx(const kvs_engine *e);
/* Bytes the pool holds now (each shared page once) and its budget (0: none). */
uint64_t kvs_engine_kv_bytes(const kvs_engine *e);
uint64_t kvs_engine_kv_budget(const kvs_engine *e);
/* Sequences open now. */
uint32_t kvs_engine_n_seqs(const kvs_engine *e);

/* An empty sequence; a fork holding src's tokens (pages shared, copied on
 * write; refused where kvs_session_fork is). */
kvs_status kvs_seq_new(kvs_engine *e, kvs_seq **out);
kvs_status kvs_seq_fork(const kvs_seq *src, kvs_seq **out);
/* Gives the sequence's pages back to the pool. */
void kvs_seq_free(kvs_seq *q);
uint32_t kvs_seq_n_past(const kvs_seq *q);
/* Bytes of the pages the sequence holds (shared ones included). */
uint64_t kvs_seq_kv_bytes(const kvs_seq *q);
/* As kvs_session_truncate. */
kvs_status kvs_seq_truncate(kvs_seq *q, uint32_t n_tokens);

/* Prefix reuse. kvs_engine_cache_prefix keeps a snapshot of the tokens a
 * sequence holds (its pages are shared, not copied); a batch entry with
 * cache_prefix set leaves snapshots as it runs (every 256 tokens and at its
 * end), which is what lets sliding-window models (Gemma 3) resume a shorter
 * prefix than a whole earlier prompt. kvs_seq_new_cached starts a sequence for tokens[0..n) from the
 * longest cached prefix that leaves at least one token to run: *n_cached
 * tokens are already in it (0: none cached), the caller runs the rest.
 * Prefixes are matched in blocks of 16 tokens and by exact length; the
 * least recently used snapshots are dropped when the pool needs their pages.
 * Architectures whose sequences cannot be forked cache nothing. */
kvs_status kvs_engine_cache_prefix(kvs_engine *e, const kvs_seq *q);
kvs_status kvs_seq_new_cached(kvs_engine *e, const kvs_token *tokens, uint32_t n, kvs_seq **out, uint32_t *n_cached);
typedef struct kvs_prefix_stats {
    uint64_t lookups, hits, tokens_hit; /* kvs_seq_new_cached calls, those that found a prefix, tokens mapped */
    uint32_t snapshots;                 /* prefixes whose pages are in the pool */
    uint64_t tokens_held;               /* tokens they hold */
    uint32_t disk_snapshots;            /* prefixes with a file in the disk tier */
    uint64_t disk_bytes, disk_hits;     /* bytes of those files; hits loaded from them */
} kvs_prefix_stats;
kvs_prefix_stats kvs_engine_prefix_stats(const kvs_engine *e);
/* Drop every cached prefix (and its file in the disk tier). */
void kvs_engine_prefix_clear(kvs_engine *e);
/* Give back the pool pages of the least recently used cached prefix (with a
 * disk tier it stays findable on disk); false when none holds pages. */
bool kvs_engine_prefix_evict_one(kvs_engine *e);
/* Whether a cached prefix holds exactly tokens[0..n). */
bool kvs_engine_prefix_has(const kvs_engine *e, const kvs_token *tokens, uint32_t n);
/* The disk tier: prefixes whose pages the pool needs are written to dir
 * (sequence files) instead of being dropped, as are a cache_prefix entry's
 * last snapshot and kvs_engine_cache_prefix's at once, up to cap_bytes (0: no
 * cap; least recently used files go first); a hit loads them back. Files an
 * earlier run left in dir for this model, schemes and context are found
 * again, so a restart (even after kill -9) still reuses them. */
kvs_status kvs_engine_set_prefix_dir(kvs_engine *e, const char *dir, uint64_t cap_bytes);

/* The tokens a sequence holds (kvs_seq_n_past of them; valid until the
 * sequence next changes). */
const kvs_token *kvs_seq_tokens(const kvs_seq *q);
/* Save a sequence (its tokens, its KV pages and the layer schemes, tagged
 * with the model's identity: a hash of the GGUF's metadata and tensor table)
 * to path, replacing the file safely (a temporary, fsynced and renamed; a
 * symlink or special file is refused). Refused for token eviction and for
 * architectures with per-sequence state outside the cache (DeepSeek V4). */
kvs_status kvs_seq_save(const kvs_seq *q, const char *path);
/* A new sequence from a file kvs_seq_save wrote. A file for another model,
 * other KV schemes, another context, or a damaged file is refused
 * (KVS_ERR_FORMAT) with a message naming what differs; KVS_ERR_BUDGET when
 * its pages do not fit the pool. */
kvs_status kvs_seq_load(kvs_engine *e, const char *path, kvs_seq **out);

/* One entry of a batch: n_tokens tokens appended to seq, and optionally the
 * logits of its last token (n_vocab floats). */
typedef struct kvs_batch_entry {
    kvs_seq *seq;
    const kvs_token *tokens;
    uint32_t n_tokens;
    float *logits;      /* NULL, or room for n_vocab floats              */
    bool cache_prefix;  /* keep snapshots of these tokens for prefix reuse */
    kvs_status status;  /* out: KVS_OK, or why this entry did not run     */
} kvs_batch_entry;
/* Run every entry (each sequence at most once per call). Entries are
 * packed into steps of at most n_batch tokens; a long entry is split over
 * steps (chunked prefill) while the short ones ride along in the first.
 * An entry that cannot run (its tokens exceed the context, the pool's
 * budget is reached, a bad token) gets its own status and leaves its
 * sequence unchanged; the others still run. A failing forward pass (out of
 * memory) ends the call: every entry not finished gets its status, and its
 * sequence keeps the chunks that did run (kvs_seq_n_past). Returns KVS_OK
 * when every entry ran, otherwise the first failing entry's status
 * (entry.status says which). Each sequence's logits equal those of a session decoding it alone
 * with the same chunk boundaries, up to the summation order of the
 * many-row matmul (tests/test_engine.c states the tolerance). */
kvs_status kvs_engine_decode(kvs_engine *e, kvs_batch_entry *entries, size_t n_entries);

/* ---- sampling ---------------------------------------------------------- */

typedef struct kvs_sampler_params {
    float    temperature;   /* <= 0: greedy (default 0.8)                   */
    int32_t  top_k;         /* <= 0: off (default 40)                       */
    float    top_p;         /* >= 1: off (default 0.95)                     */
    float    min_p;         /* <= 0: off (default 0.05)                     */
    float    repeat_penalty;/* 1: off (default 1.0)                         */
    int32_t  repeat_last_n; /* window for the penalty, >= 0 (default 64)    */
    uint64_t seed;          /* default 0x5eed                               */
} kvs_sampler_params;
kvs_sampler_params kvs_sampler_params_default(void);

typedef struct kvs_sampler kvs_sampler;
/* KVS_ERR_INVALID_ARG, naming the parameter, for a NaN or infinite value,
 * top_p <= 0, min_p > 1, repeat_penalty <= 0 or repeat_last_n < 0. */
kvs_status kvs_sampler_new(const kvs_sampler_params *params, int32_t n_vocab, kvs_sampler **out);
void kvs_sampler_free(kvs_sampler *smp);
/* Choose a token from logits (modified in place). */
kvs_token kvs_sampler_sample(kvs_sampler *smp, float *logits);
/* Record a token as part of the history (prompt tokens and sampled ones). */
void kvs_sampler_accept(kvs_sampler *smp, kvs_token tok);

/* ---- machine ----------------------------------------------------------- */

/* Measured read bandwidth in bytes/s: a vectorized sum over `bytes` of memory
 * (>= 1 GiB recommended) on n_threads threads, best of `reps` passes. */
double kvs_measure_read_bandwidth(int n_threads, size_t bytes, int reps);
/* "avx2", "avx512" or "scalar": the SIMD path kernels use on this CPU. */
const char *kvs_simd_name(void);

/* ---- evaluation -------------------------------------------------------- */

/* Called after each unit of long work (a perplexity chunk, a benchmark
 * step); return false to cancel (the call then returns KVS_ERR_INVALID_ARG
 * with "cancelled"). */
typedef bool (*kvs_progress_fn)(void *user, uint64_t done, uint64_t total, double value);

typedef struct kvs_ppl_result {
    double ppl;            /* exp(mean NLL) */
    double nll;            /* mean negative log-likelihood (nats/token) */
    double nll_stderr;     /* standard error of the mean NLL */
    uint64_t n_scored;     /* predictions scored */
    uint64_t n_chunks;
} kvs_ppl_result;

/* Perplexity the way llama.cpp's `perplexity` computes it: the tokens are cut
 * into non-overlapping chunks of the session's context size; each chunk is
 * evaluated from an empty cache (its first token replaced by BOS when the
 * model adds one) and only the second half of each chunk is scored.
 * n_tokens must hold at least one whole chunk (n_ctx tokens). */
kvs_status kvs_perplexity(kvs_session *s, const kvs_token *tokens, size_t n_tokens,
                          kvs_progress_fn progress, void *user, kvs_ppl_result *out);


/* ---- quality meter (kvslim eval) ---------------------------------------- */

/* Divergence of one next-token distribution from a reference, both given as
 * logits over n_vocab entries: KL(P_ref || P) in nats, computed exactly in
 * double from the full log-softmax of each. */
double kvs_logits_kl(const float *ref_logits, const float *logits, int32_t n_vocab);
/* Index of the largest logit (the first one on ties). */
int32_t kvs_logits_argmax(const float *logits, int32_t n_vocab);

/* Quality of a session's cache against a reference session's on the same
 * tokens, accumulated over calls of kvs_compare; zero it before the first
 * call, kvs_cmp_finish() fills the summary fields, kvs_cmp_free() releases
 * the per-token KL values it keeps for the percentiles. */
typedef struct kvs_cmp_result {
    /* summary (after kvs_cmp_finish) */
    double ppl, nll, nll_stderr;   /* this session's perplexity                 */
    double kl_mean, kl_p99, kl_max;/* KL(P_ref || P) per scored token, nats     */
    double top1;                   /* fraction of tokens whose argmax agrees    */
    uint64_t n_scored, n_chunks;
    /* accumulators */
    double sum_nll, sum_nll2, sum_kl;
    uint64_t n_top1;
    double *kl_values;             /* (n_scored) */
    size_t kl_cap;
} kvs_cmp_result;

/* Perplexity, KL and top-1 agreement of n_cand candidate sessions against
 * ref, computed in lockstep so the reference logits are computed once and
 * never stored beyond one sub-batch: the tokens are cut into chunks of
 * n_ctx (the llama.cpp perplexity convention: each chunk from an empty
 * cache, first token BOS when the model adds one, second half scored); every
 * session prefills the first half, then the second half goes through all
 * sessions sub-batch by sub-batch and each candidate's logits are compared
 * with the reference's for the same positions. Every session needs a context
 * of at least n_ctx. ref_out accumulates the reference's own perplexity
 * (may be NULL); out has n_cand entries. progress gets the tokens decoded so
 * far summed over all sessions, of n_chunks x n_ctx x (n_cand + 1), after
 * every prefill and every scored sub-batch. */
kvs_status kvs_compare(kvs_session *ref, kvs_session *const *cand, int n_cand, const kvs_token *tokens,
                       size_t n_tokens, uint32_t n_ctx, kvs_progress_fn progress, void *user,
                       kvs_cmp_result *ref_out, kvs_cmp_result *out);
void kvs_cmp_finish(kvs_cmp_result *r);
void kvs_cmp_free(kvs_cmp_result *r);

/* Passkey retrieval prompt: an instruction, n_filler repetitions of a filler
 * paragraph with the sentence giving `key` inserted after
 * round(depth * n_filler) of them (depth in [0, 1]), then the question.
 * Returns a malloc'd string (caller frees) or NULL. */
char *kvs_passkey_text(uint32_t n_filler, double depth, uint32_t key);
/* The question at the end of kvs_passkey_text, for chat-formatted prompts:
 * the text before it and the question are split at this string. */
const char *kvs_passkey_question(void);
/* Exact match: the first run of digits in `answer` equals key's digits. */
bool kvs_passkey_match(const char *answer, uint32_t key);

/* ---- eviction ------------------------------------------------------------- */

typedef enum kvs_evict_policy {
    KVS_EVICT_NONE   = 0,
    KVS_EVICT_H2O    = 1, /* heavy hitters: accumulated attention mass       */
    KVS_EVICT_SNAPKV = 2, /* after each prompt chunk: attention of its last
                             `window` queries, max-pooled, picks the kept set */
} kvs_evict_policy;

/* Bound every full-attention layer (not windowed, not shared, row formats,
 * not per-channel) to `budget` cached tokens per KV head. H2O: the first
 * `sinks` and the newest `window` tokens are always kept, the rest by
 * accumulated attention. SnapKV: a prompt chunk is compressed to `budget`
 * tokens: the newest `window` (its observation window) plus the highest
 * scoring older ones; single-token steps append without evicting until the
 * next chunk. Call on a fresh or reset session; KVS_EVICT_NONE turns it off. */
kvs_status kvs_session_set_eviction(kvs_session *s, kvs_evict_policy policy, uint32_t budget, uint32_t window,
                                    uint32_t sinks);
/* KV bytes the session holds at n_tokens, counting evicting layers at their
 * budget (kvs_session_kv_bytes_at counts them as full layers). */
uint64_t kvs_session_kv_bytes_at_evict(const kvs_session *s, uint64_t n_tokens);

#ifdef __cplusplus
}
#endif
#endif /* KVSLIM_H */
