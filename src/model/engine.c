/* Many sequences, one KV pool: the engine and its sequences (public API in
 * kvslim.h), and the forward step both the engine and kvs_decode run.
 *
 * The engine is a session used as a workspace: its activation buffers, thread
 * pool and kernels serve every step, and its own cache is the template that
 * every sequence's cache copies its schemes from (it never holds tokens). A
 * sequence is a cache in the template's pool. A step packs the next tokens of
 * several sequences into consecutive activation rows (one span per sequence),
 * so each matmul reads its weights once for all of them; attention runs per
 * span (arch/attend.c). Architectures that read the cache outside that path
 * (DeepSeek V4's compressors, retrofitted latent layers) run one sequence per
 * step; V4 also gives each sequence its own compressor state (s->ext). */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "kv/kv_chunk.h"
#include "kv/kv_file.h"
#include "kv/kv_prefix.h"
#include "model/session.h"
#include "retrofit/retrofit.h"

#define STEP_MAX_SEQS 64 /* sequences per step: bounds the logits buffer (STEP_MAX_SEQS, n_vocab) */

struct kvs_engine {
    kvs_session *ws;           /* workspace; ws->kv is the empty template */
    kvs_kv_prefix *prefix;     /* cached prefixes; NULL where sequences cannot fork */
    bool one_per_step;         /* the architecture reads s->kv outside the span path */
    bool seq_state;            /* each sequence carries architecture state (ops->sequence_state) */
    kvs_seq **seqs;            /* (cap) open sequences, n_seqs of them */
    uint32_t n_seqs, cap;
    uint32_t max_spans;        /* sequences per step */
    kvs_token *tokens;         /* (n_batch) the step's tokens */
    kvs_span *spans;           /* (max_spans) */
    int64_t *out_rows;         /* (max_spans) */
    size_t *out_entry;         /* (max_spans) entry of each out row */
    size_t *span_entry;        /* (max_spans) entry of each span */
    float *logits;             /* (max_spans, n_vocab) */
    uint32_t *done;            /* (n_entries capacity) tokens of each entry run so far */
    size_t done_cap;
};

struct kvs_seq {
    kvs_engine *e;
    kvs_kv_cache *kv;
    kvs_token *tokens;         /* (cap_tokens) the kv->n_past tokens the sequence holds */
    uint32_t cap_tokens;
    void *ext;                 /* per-sequence architecture state, or NULL */
    uint32_t index;            /* in e->seqs */
    bool in_call;              /* named by an entry of the kvs_engine_decode in progress */
};

/* Room in q's token history for n tokens. */
static kvs_status history_reserve(kvs_seq *q, uint64_t n) {
    if (n <= q->cap_tokens) return KVS_OK;
    uint64_t cap = q->cap_tokens ? q->cap_tokens : 256;
    while (cap < n) cap *= 2;
    kvs_token *t = kvs_realloc(q->tokens, sizeof *t * cap);
    if (!t) return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory for a sequence's tokens");
    q->tokens = t;
    q->cap_tokens = (uint32_t)cap;
    return KVS_OK;
}

/* ---- the step ------------------------------------------------------------ */

kvs_status kvs_step_forward(kvs_session *s, const kvs_span *spans, int n_spans, const kvs_token *tokens, int64_t n,
                            const int64_t *out_rows, int64_t n_out, bool all_logits, float *logits) {
    kvs_kv_cache *own = s->kv;
    if (n_spans == 1) s->kv = spans[0].kv; /* architectures that read s->kv directly see the step's sequence */
    s->spans = spans;
    s->n_spans = n_spans;
    s->out_rows = out_rows;
    s->n_out = n_out;
    kvs_status st = s->model->ops->forward(s, tokens, n, all_logits, logits);
    s->kv = own;
    s->spans = NULL;
    s->n_spans = 0;
    s->out_rows = NULL;
    s->n_out = 0;
    return st;
}

/* ---- engine ------------------------------------------------------------- */

kvs_status kvs_engine_new(const kvs_model *model, const kvs_session_params *params, kvs_engine **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_engine_new: out is NULL");
    *out = NULL;
    kvs_engine *e = kvs_calloc(1, sizeof *e);
    if (!e) return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory");
    kvs_status st = kvs_session_new(model, params, &e->ws);
    if (st != KVS_OK) { kvs_free(e); return st; }
    /* every sequence's cache is made like the workspace's: offsets first */
    if ((st = kvs_session_prepare(e->ws)) != KVS_OK) { kvs_session_free(e->ws); kvs_free(e); return st; }
    const kvs_arch_ops *ops = model->ops;
    const kvs_retro *r = ops->retro ? ops->retro(model) : NULL;
    e->seq_state = ops->sequence_state;
    e->one_per_step = ops->sequence_state || (r && r->mode != KVS_RETRO_NONE);
    if (!e->seq_state && (st = kvs_kv_prefix_new(&e->prefix)) != KVS_OK) { kvs_engine_free(e); return st; }
    uint32_t B = e->ws->params.n_batch;
    e->max_spans = e->one_per_step ? 1 : (B < STEP_MAX_SEQS ? B : STEP_MAX_SEQS);
    e->tokens = kvs_malloc(sizeof *e->tokens * B);
    e->spans = kvs_malloc(sizeof *e->spans * e->max_spans);
    e->out_rows = kvs_malloc(sizeof *e->out_rows * e->max_spans);
    e->out_entry = kvs_malloc(sizeof *e->out_entry * e->max_spans);
    e->span_entry = kvs_malloc(sizeof *e->span_entry * e->max_spans);
    e->logits = kvs_malloc(sizeof *e->logits * e->max_spans * (size_t)model->hp.n_vocab);
    if (!e->tokens || !e->spans || !e->out_rows || !e->out_entry || !e->span_entry || !e->logits) {
        kvs_engine_free(e);
        return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory");
    }
    *out = e;
    return KVS_OK;
}

void kvs_engine_free(kvs_engine *e) {
    if (!e) return;
    while (e->n_seqs) kvs_seq_free(e->seqs[e->n_seqs - 1]);
    kvs_kv_prefix_free(e->prefix);
    kvs_free(e->seqs);
    kvs_free(e->tokens);
    kvs_free(e->spans);
    kvs_free(e->out_rows);
    kvs_free(e->out_entry);
    kvs_free(e->span_entry);
    kvs_free(e->logits);
    kvs_free(e->done);
    kvs_session_free(e->ws); /* the template cache goes last: the pool goes with its last user */
    kvs_free(e);
}

uint32_t kvs_engine_n_batch(const kvs_engine *e) { return e->ws->params.n_batch; }
uint32_t kvs_engine_n_ctx(const kvs_engine *e) { return e->ws->params.n_ctx; }
uint64_t kvs_engine_kv_bytes(const kvs_engine *e) { return e->ws->kv->pool->bytes; }
uint64_t kvs_engine_kv_budget(const kvs_engine *e) { return e->ws->kv->pool->budget; }
uint32_t kvs_engine_n_seqs(const kvs_engine *e) { return e->n_seqs; }

/* ---- sequences ------------------------------------------------------------ */

/* Registers q (its kv set) in e, with architecture state of its own when the
 * architecture keeps some. Frees q's cache on failure. */
static kvs_status seq_add(kvs_engine *e, kvs_seq *q, kvs_seq **out) {
    kvs_status st = KVS_OK;
    if (e->n_seqs == e->cap) {
        uint32_t cap = e->cap ? 2 * e->cap : 8;
        kvs_seq **s = kvs_realloc(e->seqs, sizeof *s * cap);
        if (!s) st = kvs_fail(KVS_ERR_NOMEM, "engine: out of memory");
        else { e->seqs = s; e->cap = cap; }
    }
    if (st == KVS_OK && e->seq_state) { /* the architecture's state for this sequence, made on the workspace */
        kvs_session *ws = e->ws;
        void *shared = ws->ext;
        ws->ext = NULL;
        st = ws->model->ops->session_init(ws);
        q->ext = ws->ext;
        ws->ext = shared;
    }
    if (st == KVS_OK) st = history_reserve(q, q->kv->n_past);
    if (st != KVS_OK) {
        kvs_kv_cache_free(q->kv);
        kvs_free(q->tokens);
        kvs_free(q);
        return st;
    }
    q->e = e;
    q->index = e->n_seqs;
    e->seqs[e->n_seqs++] = q;
    *out = q;
    return KVS_OK;
}

kvs_status kvs_seq_new(kvs_engine *e, kvs_seq **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_new: out is NULL");
    *out = NULL;
    if (!e) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_new: engine is NULL");
    kvs_seq *q = kvs_calloc(1, sizeof *q);
    if (!q) return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory");
    kvs_status st = kvs_kv_cache_new_like(e->ws->kv, &q->kv);
    if (st != KVS_OK) { kvs_free(q); return st; }
    return seq_add(e, q, out);
}

kvs_status kvs_seq_fork(const kvs_seq *src, kvs_seq **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_fork: out is NULL");
    *out = NULL;
    if (!src) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_fork: sequence is NULL");
    kvs_engine *e = src->e;
    if (e->seq_state)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "fork: %s keeps per-sequence state outside the KV cache",
                        e->ws->model->arch_name);
    kvs_seq *q = kvs_calloc(1, sizeof *q);
    if (!q) return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory");
    kvs_status st = kvs_kv_cache_fork(src->kv, &q->kv);
    if (st != KVS_OK) { kvs_free(q); return st; }
    KVS_TRY(seq_add(e, q, out));
    memcpy(q->tokens, src->tokens, sizeof *q->tokens * q->kv->n_past);
    return KVS_OK;
}

void kvs_seq_free(kvs_seq *q) {
    if (!q) return;
    kvs_engine *e = q->e;
    if (q->ext) {
        kvs_session *ws = e->ws;
        void *shared = ws->ext;
        ws->ext = q->ext;
        ws->model->ops->session_free(ws);
        ws->ext = shared;
    }
    kvs_kv_cache_free(q->kv);
    kvs_free(q->tokens);
    kvs_seq *last = e->seqs[--e->n_seqs];
    e->seqs[q->index] = last;
    last->index = q->index;
    kvs_free(q);
}

uint32_t kvs_seq_n_past(const kvs_seq *q) { return q ? (uint32_t)q->kv->n_past : 0; }
uint64_t kvs_seq_kv_bytes(const kvs_seq *q) { return q ? q->kv->bytes : 0; }

kvs_status kvs_seq_truncate(kvs_seq *q, uint32_t n_tokens) {
    if (!q) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_truncate: sequence is NULL");
    if (n_tokens && q->e->seq_state)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "truncate: %s keeps per-sequence state outside the KV cache",
                        q->e->ws->model->arch_name);
    if (n_tokens == 0) { kvs_kv_cache_clear(q->kv); return KVS_OK; }
    return kvs_kv_cache_truncate(q->kv, n_tokens);
}

/* ---- files -------------------------------------------------------------------- */

const kvs_token *kvs_seq_tokens(const kvs_seq *q) { return q ? q->tokens : NULL; }

kvs_status kvs_seq_save(const kvs_seq *q, const char *path) {
    if (!q || !path) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_save: NULL argument");
    if (q->e->seq_state)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "save: %s keeps per-sequence state outside the KV cache",
                        q->e->ws->model->arch_name);
    return kvs_kv_file_save(q->kv, kvs_gguf_identity(q->e->ws->model->gguf), q->tokens, path);
}

kvs_status kvs_seq_load(kvs_engine *e, const char *path, kvs_seq **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_load: out is NULL");
    *out = NULL;
    if (!e || !path) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_load: NULL argument");
    if (e->seq_state)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "load: %s keeps per-sequence state outside the KV cache",
                        e->ws->model->arch_name);
    kvs_seq *q = kvs_calloc(1, sizeof *q);
    if (!q) return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory");
    kvs_status st = kvs_kv_cache_new_like(e->ws->kv, &q->kv);
    kvs_token *tokens = NULL;
    if (st == KVS_OK) st = kvs_kv_file_load(q->kv, kvs_gguf_identity(e->ws->model->gguf), path, &tokens);
    if (st != KVS_OK) { kvs_kv_cache_free(q->kv); kvs_free(q); return st; }
    q->tokens = tokens;
    q->cap_tokens = (uint32_t)q->kv->n_past;
    return seq_add(e, q, out);
}

/* ---- prefix reuse ------------------------------------------------------------ */

kvs_status kvs_engine_cache_prefix(kvs_engine *e, const kvs_seq *q) {
    if (!e || !q) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_engine_cache_prefix: NULL argument");
    if (q->e != e) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_engine_cache_prefix: a sequence of another engine");
    if (!e->prefix || q->kv->evict) return KVS_OK; /* sequences that cannot fork: nothing to keep */
    return kvs_kv_prefix_store(e->prefix, q->kv, q->tokens, (uint32_t)q->kv->n_past, true);
}

kvs_status kvs_seq_new_cached(kvs_engine *e, const kvs_token *tokens, uint32_t n, kvs_seq **out, uint32_t *n_cached) {
    if (!out || !n_cached) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_new_cached: NULL argument");
    *out = NULL;
    *n_cached = 0;
    if (!e || (!tokens && n)) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_seq_new_cached: NULL argument");
    kvs_kv_cache *kv = NULL;
    if (e->prefix) KVS_TRY(kvs_kv_prefix_lookup(e->prefix, tokens, n, &kv, n_cached));
    if (!kv) return kvs_seq_new(e, out);
    kvs_seq *q = kvs_calloc(1, sizeof *q);
    if (!q) { kvs_kv_cache_free(kv); *n_cached = 0; return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory"); }
    q->kv = kv;
    kvs_status st = seq_add(e, q, out);
    if (st != KVS_OK) { *n_cached = 0; return st; }
    memcpy(q->tokens, tokens, sizeof *tokens * *n_cached);
    return KVS_OK;
}

kvs_prefix_stats kvs_engine_prefix_stats(const kvs_engine *e) {
    kvs_prefix_stats r = {0};
    if (!e || !e->prefix) return r;
    kvs_kv_prefix_stats s = kvs_kv_prefix_get_stats(e->prefix);
    r.lookups = s.lookups;
    r.hits = s.hits;
    r.tokens_hit = s.tokens_hit;
    r.snapshots = s.snapshots;
    r.tokens_held = s.tokens_held;
    r.disk_snapshots = s.disk_snapshots;
    r.disk_bytes = s.disk_bytes;
    r.disk_hits = s.disk_hits;
    return r;
}

void kvs_engine_prefix_clear(kvs_engine *e) {
    if (e && e->prefix) kvs_kv_prefix_clear(e->prefix);
}

bool kvs_engine_prefix_evict_one(kvs_engine *e) { return e && e->prefix && kvs_kv_prefix_evict_one(e->prefix); }

bool kvs_engine_prefix_has(const kvs_engine *e, const kvs_token *tokens, uint32_t n) {
    return e && e->prefix && tokens && kvs_kv_prefix_has(e->prefix, tokens, n);
}

kvs_status kvs_engine_set_prefix_dir(kvs_engine *e, const char *dir, uint64_t cap_bytes) {
    if (!e || !dir) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_engine_set_prefix_dir: NULL argument");
    if (!e->prefix)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "prefix cache: %s sequences cannot be snapshotted", e->ws->model->arch_name);
    return kvs_kv_prefix_set_dir(e->prefix, e->ws->kv, kvs_gguf_identity(e->ws->model->gguf), dir, cap_bytes);
}

/* Pages for kv up to n_pos positions (a chunk begun when pos is set), making
 * room by dropping cached prefixes, least recently used first, while the
 * pool's budget is what stands in the way. */
static kvs_status reserve(kvs_engine *e, kvs_kv_cache *kv, uint64_t n_pos, int32_t *pos) {
    for (;;) {
        kvs_status st = pos ? kvs_kv_chunk_begin(kv, (int64_t)(n_pos - kv->n_past), pos) : kvs_kv_cache_reserve(kv, n_pos);
        if (st != KVS_ERR_BUDGET || !e->prefix || !kvs_kv_prefix_evict_one(e->prefix)) return st;
    }
}

/* ---- batched decode -------------------------------------------------------- */

/* Why entry x cannot run at all, or KVS_OK. */
static kvs_status check_entry(kvs_engine *e, const kvs_batch_entry *x, size_t i) {
    if (!x->seq || x->seq->e != e)
        return kvs_fail(KVS_ERR_INVALID_ARG, "batch entry %zu: %s", i, x->seq ? "sequence of another engine" : "no sequence");
    if (x->seq->in_call) return kvs_fail(KVS_ERR_INVALID_ARG, "batch entry %zu: its sequence is in an earlier entry", i);
    if (!x->n_tokens || !x->tokens) return kvs_fail(KVS_ERR_INVALID_ARG, "batch entry %zu: no tokens", i);
    const kvs_kv_cache *kv = x->seq->kv;
    const uint32_t n_ctx = e->ws->params.n_ctx;
    if (kv->n_past + x->n_tokens > n_ctx)
        return kvs_fail(KVS_ERR_CONTEXT, "batch entry %zu: %u tokens after %llu cached exceed the context of %u tokens",
                        i, x->n_tokens, (unsigned long long)kv->n_past, n_ctx);
    const int32_t n_vocab = e->ws->model->hp.n_vocab;
    for (uint32_t t = 0; t < x->n_tokens; t++)
        if (x->tokens[t] < 0 || x->tokens[t] >= n_vocab)
            return kvs_fail(KVS_ERR_INVALID_ARG, "batch entry %zu: token %d at index %u is outside the vocabulary (%d)",
                            i, x->tokens[t], t, n_vocab);
    return KVS_OK;
}

/* Runs one step: the pending entries' next tokens, in entry order, while rows
 * and spans last. An entry whose chunk cannot begin (the pool's budget) is
 * failed alone. A failed forward pass fails the step's entries and the call. */
static kvs_status run_step(kvs_engine *e, kvs_batch_entry *xs, size_t n_entries, size_t *cursor) {
    kvs_session *ws = e->ws;
    const uint32_t B = ws->params.n_batch;
    const size_t V = (size_t)ws->model->hp.n_vocab;
    while (*cursor < n_entries && (xs[*cursor].status != KVS_OK || e->done[*cursor] == xs[*cursor].n_tokens))
        (*cursor)++;
    int64_t rows = 0;
    int n_spans = 0, n_out = 0;
    for (size_t i = *cursor; i < n_entries && n_spans < (int)e->max_spans && rows < B; i++) {
        kvs_batch_entry *x = &xs[i];
        if (x->status != KVS_OK || e->done[i] == x->n_tokens) continue;
        uint32_t left = x->n_tokens - e->done[i], take = left < B - rows ? left : (uint32_t)(B - rows);
        if (x->cache_prefix && e->prefix) { /* end the chunk at the next checkpoint: a snapshot is taken there */
            uint64_t past = x->seq->kv->n_past, next = (past / KVS_PREFIX_CHECKPOINT + 1) * KVS_PREFIX_CHECKPOINT;
            if (past + take > next) take = (uint32_t)(next - past);
        }
        kvs_status st = reserve(e, x->seq->kv, x->seq->kv->n_past + take, ws->pos + rows);
        if (st != KVS_OK) { x->status = st; continue; }
        memcpy(e->tokens + rows, x->tokens + e->done[i], sizeof *e->tokens * take);
        e->span_entry[n_spans] = i;
        e->spans[n_spans++] = (kvs_span){.kv = x->seq->kv, .row0 = rows, .n = take};
        rows += take;
        if (x->logits && take == left) { e->out_rows[n_out] = rows - 1; e->out_entry[n_out++] = i; }
    }
    if (!rows) return KVS_OK;
    void *shared = ws->ext;
    if (e->seq_state) ws->ext = xs[e->span_entry[0]].seq->ext; /* one span: its sequence's own state */
    kvs_status st = kvs_step_forward(ws, e->spans, n_spans, e->tokens, rows, e->out_rows, n_out, false,
                                     n_out ? e->logits : NULL);
    ws->ext = shared;
    for (int j = 0; j < n_spans; j++) {
        kvs_batch_entry *x = &xs[e->span_entry[j]];
        if (st != KVS_OK) { x->status = st; continue; } /* the chunk is not ended: n_past stays */
        kvs_seq *q = x->seq;
        memcpy(q->tokens + q->kv->n_past, x->tokens + e->done[e->span_entry[j]], sizeof *q->tokens * e->spans[j].n);
        kvs_kv_chunk_end(e->spans[j].kv);
        e->done[e->span_entry[j]] += (uint32_t)e->spans[j].n;
        /* checkpoints: at every KVS_PREFIX_CHECKPOINT tokens and at the entry's end (a snapshot that fails,
         * out of memory, only costs the reuse) */
        if (x->cache_prefix && e->prefix &&
            (q->kv->n_past % KVS_PREFIX_CHECKPOINT == 0 || e->done[e->span_entry[j]] == x->n_tokens))
            (void)kvs_kv_prefix_store(e->prefix, q->kv, q->tokens, (uint32_t)q->kv->n_past,
                                      e->done[e->span_entry[j]] == x->n_tokens); /* the end goes to disk at once */
    }
    if (st != KVS_OK) return st;
    for (int j = 0; j < n_out; j++) memcpy(xs[e->out_entry[j]].logits, e->logits + (size_t)j * V, sizeof(float) * V);
    return KVS_OK;
}

kvs_status kvs_engine_decode(kvs_engine *e, kvs_batch_entry *xs, size_t n_entries) {
    if (!e || (!xs && n_entries)) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_engine_decode: NULL argument");
    if (n_entries > e->done_cap) {
        uint32_t *d = kvs_realloc(e->done, sizeof *d * n_entries);
        if (!d) return kvs_fail(KVS_ERR_NOMEM, "engine: out of memory");
        e->done = d;
        e->done_cap = n_entries;
    }
    kvs_status first = KVS_OK;
    for (size_t i = 0; i < n_entries; i++) {
        e->done[i] = 0;
        xs[i].status = check_entry(e, &xs[i], i);
        if (xs[i].status == KVS_OK) xs[i].seq->in_call = true;
    }
    for (size_t i = 0; i < n_entries; i++)
        if (xs[i].seq && xs[i].seq->e == e) xs[i].seq->in_call = false;
    /* a long entry's pages are reserved whole before its first step, so a
     * budget failure leaves its sequence as it was (eviction reserves per
     * chunk: what it keeps is decided as it goes) */
    for (size_t i = 0; i < n_entries; i++)
        if (xs[i].status == KVS_OK) xs[i].status = history_reserve(xs[i].seq, xs[i].seq->kv->n_past + xs[i].n_tokens);
    for (size_t i = 0; i < n_entries; i++) {
        kvs_kv_cache *kv = xs[i].status == KVS_OK ? xs[i].seq->kv : NULL;
        if (kv && !kv->evict && xs[i].n_tokens > 1) xs[i].status = reserve(e, kv, kv->n_past + xs[i].n_tokens, NULL);
    }
    size_t cursor = 0;
    kvs_status st = KVS_OK;
    while (cursor < n_entries && st == KVS_OK) st = run_step(e, xs, n_entries, &cursor);
    /* a failed step ends the call: entries it left unrun or unfinished fail with it (their sequences hold the
     * chunks that did run: kvs_seq_n_past says how many) */
    for (size_t i = 0; st != KVS_OK && i < n_entries; i++)
        if (xs[i].status == KVS_OK && e->done[i] < xs[i].n_tokens) xs[i].status = st;
    for (size_t i = 0; i < n_entries; i++)
        if (xs[i].status != KVS_OK) { first = xs[i].status; break; }
    return st != KVS_OK ? st : first;
}
