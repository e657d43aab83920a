/* The scheduler thread: admission against the KV budget, continuous batching
 * over kvs_engine_decode, sampling, stop sequences and text emission; see
 * sched.h. Locking: s->mu guards the queue, the stop flag and the metrics;
 * j->mu guards a job's output. The engine, the prefix cache and the running
 * list belong to the scheduler thread alone. */
#include "server/sched.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/prefix.h"

#define MIN_PREFIX_TOKENS 8 /* shorter prefixes are not worth an entry */

struct srv_sched {
    const kvs_model *m;
    kvs_engine *e;
    const kvs_session *est;
    srv_prefix *prefix;
    srv_sched_config cfg;
    uint32_t n_ctx, n_batch;
    int32_t n_vocab;
    uint64_t budget, page_bytes;
    double t_start;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_job *q_head, *q_tail;   /* under mu */
    uint32_t n_queued;          /* under mu */
    bool stopping;              /* under mu */
    double stop_deadline;       /* under mu */
    srv_metrics met;            /* under mu */

    srv_job **run;              /* (parallel) running jobs */
    uint32_t n_run;
    kvs_batch_entry *ents;      /* (parallel) */
    srv_job **ent_job;          /* (parallel) */
    double rate_t0;
    uint64_t rate_gen0;
};

/* ---- jobs ---------------------------------------------------------------- */

srv_job *srv_job_new(kvs_token *prompt, uint32_t n_prompt) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    j->prompt = prompt;
    j->n_prompt = n_prompt;
    j->refs = 1;
    j->sp = kvs_sampler_params_default();
    atomic_init(&j->cancel, false);
    j->top_logprobs = -1;
    return j;
}

void srv_job_release(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    free(j->prompt);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    srv_buf_free(&j->out);
    srv_buf_free(&j->gen);
    free(j->logits);
    free(j->lp_logits);
    free(j->lps);
    kvs_sampler_free(j->smp);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void srv_job_cancel(srv_job *j) { atomic_store(&j->cancel, true); }

/* ---- admission ------------------------------------------------------------- */

uint64_t srv_sched_need(const srv_sched *s, uint64_t n_tokens) {
    uint64_t P = s->cfg.kv_page;
    uint64_t n = (n_tokens + P - 1) / P * P;
    /* one page more per layer: the copy of a shared partial page on a fork */
    return kvs_session_kv_bytes_at(s->est, n) + s->page_bytes;
}

/* Bytes the running jobs may still claim. */
static uint64_t reserved(const srv_sched *s) {
    uint64_t r = 0;
    for (uint32_t i = 0; i < s->n_run; i++) {
        const srv_job *j = s->run[i];
        uint64_t held = j->seq ? kvs_seq_kv_bytes(j->seq) : 0;
        if (j->need > held) r += j->need - held;
    }
    return r;
}

static bool fits(const srv_sched *s, const srv_job *j) {
    if (!s->budget) return true;
    uint64_t used = kvs_engine_kv_bytes(s->e) + reserved(s);
    return used <= s->budget && j->need <= s->budget - used;
}

bool srv_sched_submit(srv_sched *s, srv_job *j, srv_error *err) {
    uint32_t room = s->n_ctx > j->n_prompt ? s->n_ctx - j->n_prompt : 0;
    if (!room) {
        srv_error_set(err, 400, "invalid_request_error", "context_length_exceeded", NULL,
                      "the prompt has %u tokens; the context holds %u, with room for at least one new token", j->n_prompt,
                      s->n_ctx);
        return false;
    }
    if (j->max_tokens > room) {
        srv_error_set(err, 400, "invalid_request_error", "context_length_exceeded", "max_tokens",
                      "the prompt (%u tokens) and max_tokens (%u) exceed the context of %u tokens", j->n_prompt,
                      j->max_tokens, s->n_ctx);
        return false;
    }
    if (!j->max_tokens) { /* as many as the context, the server's cap and the pool allow */
        uint32_t m = room;
        if (s->cfg.max_tokens && m > s->cfg.max_tokens) m = s->cfg.max_tokens;
        if (s->budget && srv_sched_need(s, (uint64_t)j->n_prompt + m) > s->budget) {
            uint32_t lo = 0, hi = m; /* the largest m that fits alone */
            while (lo < hi) {
                uint32_t mid = lo + (hi - lo + 1) / 2;
                if (srv_sched_need(s, (uint64_t)j->n_prompt + mid) <= s->budget) lo = mid;
                else hi = mid - 1;
            }
            m = lo;
        }
        j->max_tokens = m;
    }
    j->need = srv_sched_need(s, (uint64_t)j->n_prompt + j->max_tokens);
    if (!j->max_tokens || (s->budget && j->need > s->budget)) {
        srv_error_set(err, 400, "invalid_request_error", "kv_budget_exceeded", j->max_tokens ? "max_tokens" : NULL,
                      "the prompt (%u tokens) and %u new tokens need %llu bytes of KV cache; the pool holds %llu "
                      "(--kv-budget)", j->n_prompt, j->max_tokens ? j->max_tokens : 1,
                      (unsigned long long)srv_sched_need(s, (uint64_t)j->n_prompt + (j->max_tokens ? j->max_tokens : 1)),
                      (unsigned long long)s->budget);
        return false;
    }
    pthread_mutex_lock(&s->mu);
    bool ok = false;
    if (s->stopping) {
        srv_error_set(err, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
        err->retry_after = 5;
    } else if (s->n_queued >= s->cfg.queue_max) {
        srv_error_set(err, 429, "rate_limit_error", "queue_full", NULL,
                      "the server is busy: %u requests are waiting already (--queue %u); retry later",
                      s->n_queued, s->cfg.queue_max);
        err->retry_after = 1;
    } else {
        pthread_mutex_lock(&j->mu);
        j->refs++;
        j->state = SRV_JOB_QUEUED;
        pthread_mutex_unlock(&j->mu);
        j->next = NULL;
        if (s->q_tail) s->q_tail->next = j;
        else s->q_head = j;
        s->q_tail = j;
        s->n_queued++;
        ok = true;
        pthread_cond_signal(&s->cv);
    }
    if (!ok) s->met.requests_rejected++;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* ---- output ------------------------------------------------------------------ */

/* Moves generated bytes [gen_emitted, upto) to the client's buffer. */
static void emit(srv_job *j, size_t upto) {
    if (upto <= j->gen_emitted) return;
    pthread_mutex_lock(&j->mu);
    srv_utf8_append(&j->out, j->gen.p + j->gen_emitted, upto - j->gen_emitted);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    j->gen_emitted = upto;
}

/* Ends a job: its text so far out, its sequence back to the pool. The
 * scheduler's reference goes when the job leaves its list (sweep). */
static void finish(srv_sched *s, srv_job *j, srv_finish why, const srv_error *err) {
    if (why != SRV_FINISH_ERROR) emit(j, j->gen.n);
    kvs_seq_free(j->seq);
    j->seq = NULL;
    bool cancelled = atomic_load(&j->cancel);
    pthread_mutex_lock(&j->mu);
    j->state = SRV_JOB_DONE;
    j->finish = why;
    if (err) j->err = *err;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&s->mu);
    if (cancelled) s->met.requests_cancelled++;
    else if (why == SRV_FINISH_ERROR) s->met.requests_error++;
    else s->met.requests_ok++;
    pthread_mutex_unlock(&s->mu);
    j->ended = true;
}

/* Ended jobs leave the running list. */
static void sweep(srv_sched *s) {
    for (uint32_t i = 0; i < s->n_run;) {
        srv_job *j = s->run[i];
        if (!j->ended) { i++; continue; }
        s->run[i] = s->run[--s->n_run];
        srv_job_release(j);
    }
    pthread_mutex_lock(&s->mu);
    s->met.running = s->n_run;
    pthread_mutex_unlock(&s->mu);
}

static void fail(srv_sched *s, srv_job *j, int http, const char *type, const char *code, const char *msg, int retry) {
    srv_error e;
    srv_error_set(&e, http, type, code, NULL, "%s", msg);
    e.retry_after = retry;
    finish(s, j, SRV_FINISH_ERROR, &e);
}

/* After appending a piece: a stop sequence ends the job (true); otherwise
 * emit what can no longer become one. */
static bool check_stop(srv_job *j, size_t prev_len) {
    const char *g = j->gen.p;
    size_t n = j->gen.n, maxl = 0;
    for (int k = 0; k < j->n_stop; k++) if (j->stop_len[k] > maxl) maxl = j->stop_len[k];
    size_t from = prev_len + 1 > maxl ? prev_len + 1 - maxl : 0;
    size_t best = SIZE_MAX;
    for (int k = 0; k < j->n_stop; k++) {
        const char *hit = memmem(g + from, n - from, j->stop[k], j->stop_len[k]);
        if (hit && (size_t)(hit - g) < best) best = (size_t)(hit - g);
    }
    if (best != SIZE_MAX) {
        j->gen.n = best < j->gen_emitted ? j->gen_emitted : best; /* the stop text itself is not returned */
        return true;
    }
    size_t safe = n;
    for (int k = 0; k < j->n_stop; k++) /* hold back a tail that may grow into a stop sequence */
        for (size_t l = j->stop_len[k] - 1 < n ? j->stop_len[k] - 1 : n; l > 0; l--)
            if (!memcmp(g + n - l, j->stop[k], l)) { if (n - l < safe) safe = n - l; break; }
    if (safe < j->gen_emitted) safe = j->gen_emitted;
    safe = j->gen_emitted + srv_utf8_complete(g + j->gen_emitted, safe - j->gen_emitted);
    emit(j, safe);
    return false;
}

/* The log-probability of t and the k likeliest tokens, from the model's logits x. */
static void logprobs_of(const float *x, int32_t V, kvs_token t, int k, oai_token_lp *out) {
    float mx = x[0];
    for (int32_t i = 1; i < V; i++) if (x[i] > mx) mx = x[i];
    double sum = 0;
    for (int32_t i = 0; i < V; i++) sum += exp((double)x[i] - mx);
    double lse = mx + log(sum);
    out->tok = t;
    out->lp = (float)(x[t] - lse);
    out->n_top = 0;
    for (int32_t i = 0; i < V; i++) { /* insertion into a sorted top-k */
        int n = out->n_top;
        if (n == k && (n == 0 || x[i] <= x[out->top[n - 1]])) continue;
        int p = n < k ? n : k - 1;
        while (p > 0 && x[out->top[p - 1]] < x[i]) { out->top[p] = out->top[p - 1]; p--; }
        out->top[p] = i;
        if (n < k) out->n_top++;
    }
    for (int i = 0; i < out->n_top; i++) out->top_lp[i] = (float)(x[out->top[i]] - lse);
}

/* The job's logits hold its next token: sample, stop or go on. */
static void next_token(srv_sched *s, srv_job *j) {
    if (j->top_logprobs >= 0) memcpy(j->lp_logits, j->logits, sizeof *j->logits * (size_t)s->n_vocab);
    kvs_token t = kvs_sampler_sample(j->smp, j->logits);
    kvs_sampler_accept(j->smp, t);
    if (!s->cfg.ignore_eos && kvs_token_is_eog(s->m, t)) { finish(s, j, SRV_FINISH_STOP, NULL); return; }
    oai_token_lp lp;
    if (j->top_logprobs >= 0) logprobs_of(j->lp_logits, s->n_vocab, t, j->top_logprobs, &lp);
    pthread_mutex_lock(&j->mu);
    j->n_gen++;
    if (j->top_logprobs >= 0) {
        if (j->n_lps == j->cap_lps) {
            size_t cap = j->cap_lps ? 2 * j->cap_lps : 64;
            oai_token_lp *q = realloc(j->lps, sizeof *q * cap);
            if (q) { j->lps = q; j->cap_lps = cap; }
        }
        if (j->n_lps < j->cap_lps) j->lps[j->n_lps++] = lp;
    }
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&s->mu);
    s->met.generated_tokens++;
    pthread_mutex_unlock(&s->mu);
    char piece[256];
    int np = kvs_token_to_piece(s->m, t, piece, sizeof piece);
    size_t prev = j->gen.n;
    if (np > 0 && !srv_buf_put(&j->gen, piece, (size_t)np)) {
        fail(s, j, 500, "server_error", NULL, "out of memory for the generated text", 0);
        return;
    }
    if (check_stop(j, prev)) { finish(s, j, SRV_FINISH_STOP, NULL); return; }
    if (j->n_gen >= j->max_tokens) { finish(s, j, SRV_FINISH_LENGTH, NULL); return; }
    j->last = t;
}

/* ---- the loop ------------------------------------------------------------------- */

/* A newly admitted job gets its sequence (forked from a cached prefix when
 * one matches), its sampler and logits, or fails. */
static void start(srv_sched *s, srv_job *j) {
    uint32_t n_cached = 0;
    srv_prefix_lookup(s->prefix, j->prompt, j->n_prompt, &j->seq, &n_cached);
    if (!j->seq && kvs_seq_new(s->e, &j->seq) != KVS_OK) {
        fail(s, j, 500, "server_error", NULL, kvs_last_error(), 0);
        return;
    }
    j->n_fed = n_cached;
    j->want_register = s->cfg.prefix_entries && j->n_prefix >= MIN_PREFIX_TOKENS && j->n_prefix > n_cached &&
                       j->n_prefix < j->n_prompt && !srv_prefix_has(s->prefix, j->prompt, j->n_prefix);
    if (kvs_sampler_new(&j->sp, s->n_vocab, &j->smp) != KVS_OK ||
        !(j->logits = malloc(sizeof *j->logits * (size_t)s->n_vocab)) ||
        (j->top_logprobs >= 0 && !(j->lp_logits = malloc(sizeof *j->lp_logits * (size_t)s->n_vocab)))) {
        fail(s, j, 500, "server_error", NULL, "cannot create the sampler", 0);
        return;
    }
    for (uint32_t i = 0; i < j->n_prompt; i++) kvs_sampler_accept(j->smp, j->prompt[i]);
    pthread_mutex_lock(&j->mu);
    j->n_cached = n_cached;
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&s->mu);
    s->met.prompt_tokens += j->n_prompt;
    s->met.cached_tokens += n_cached;
    pthread_mutex_unlock(&s->mu);
}

static void fail_queue_head(srv_sched *s, int http, const char *code, const char *msg, int retry) {
    srv_job *j = s->q_head;
    s->q_head = j->next;
    if (!s->q_head) s->q_tail = NULL;
    s->n_queued--;
    pthread_mutex_unlock(&s->mu);
    if (atomic_load(&j->cancel)) finish(s, j, SRV_FINISH_ERROR, NULL);
    else fail(s, j, http, http == 503 ? "server_error" : "invalid_request_error", code, msg, retry);
    srv_job_release(j);
    pthread_mutex_lock(&s->mu);
}

/* Under s->mu: drop cancelled and expired queued jobs, admit what fits.
 * Admitted jobs are appended to s->run with no sequence yet. */
static void admit(srv_sched *s, double now) {
    /* cancelled or expired jobs anywhere in the queue */
    for (srv_job **pp = &s->q_head; *pp;) {
        srv_job *j = *pp;
        bool gone = atomic_load(&j->cancel), late = j->deadline && now > j->deadline;
        if (!gone && !late && !s->stopping) { pp = &j->next; continue; }
        *pp = j->next;
        if (s->q_tail == j) s->q_tail = NULL;
        s->n_queued--;
        pthread_mutex_unlock(&s->mu);
        if (gone) finish(s, j, SRV_FINISH_ERROR, NULL);
        else if (late) fail(s, j, 503, "server_error", "timeout", "the request waited in the queue past its timeout (--timeout)", 1);
        else fail(s, j, 503, "server_error", "shutting_down", "the server is shutting down", 5);
        srv_job_release(j);
        pthread_mutex_lock(&s->mu);
        pp = &s->q_head; /* the list may have grown meanwhile: start over */
    }
    if (!s->q_tail) for (srv_job *j = s->q_head; j; j = j->next) s->q_tail = j;
    while (s->q_head && s->n_run < s->cfg.parallel) {
        srv_job *j = s->q_head;
        while (!fits(s, j) && srv_prefix_evict_one(s->prefix)) {}
        if (!fits(s, j)) {
            if (s->n_run) break; /* wait for a running job to give its pages back */
            fail_queue_head(s, 400, "kv_budget_exceeded", "the request does not fit in the KV pool (--kv-budget)", 0);
            continue;
        }
        s->q_head = j->next;
        if (!s->q_head) s->q_tail = NULL;
        s->n_queued--;
        j->next = NULL;
        s->run[s->n_run++] = j;
        pthread_mutex_lock(&j->mu);
        j->state = SRV_JOB_RUNNING;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
    s->met.running = s->n_run; /* before the job's first text can reach its client */
    s->met.queued = s->n_queued;
}

static void snapshot(srv_sched *s, double now) {
    srv_metrics *m = &s->met;
    m->running = s->n_run;
    m->queued = s->n_queued;
    m->n_seqs = kvs_engine_n_seqs(s->e);
    m->kv_bytes = kvs_engine_kv_bytes(s->e);
    m->kv_reserved = reserved(s);
    m->prefix_entries = srv_prefix_n_entries(s->prefix);
    m->prefix_hits = srv_prefix_hits(s->prefix);
    m->prefix_misses = srv_prefix_misses(s->prefix);
    m->n_listed = 0;
    for (uint32_t i = 0; i < s->n_run && m->n_listed < SRV_METRICS_SEQS; i++) {
        const srv_job *j = s->run[i];
        if (!j->seq) continue;
        m->seq_tokens[m->n_listed] = kvs_seq_n_past(j->seq);
        m->seq_bytes[m->n_listed] = kvs_seq_kv_bytes(j->seq);
        m->seq_cached[m->n_listed++] = j->n_cached;
    }
    if (now - s->rate_t0 >= 2.0) {
        m->gen_tokens_per_s = (double)(m->generated_tokens - s->rate_gen0) / (now - s->rate_t0);
        s->rate_t0 = now;
        s->rate_gen0 = m->generated_tokens;
    }
}

static void *sched_main(void *arg) {
    srv_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        double now = srv_now();
        if (!s->n_run && !s->q_head && !s->stopping) {
            snapshot(s, now);
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 250 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        uint32_t first_new = s->n_run;
        admit(s, now);
        bool cut = s->stopping && now > s->stop_deadline;
        bool done = s->stopping && !s->n_run && !s->q_head;
        uint32_t n_admitted = s->n_run - first_new;
        pthread_mutex_unlock(&s->mu);
        if (done) break;
        for (uint32_t i = first_new; i < first_new + n_admitted; i++) start(s, s->run[i]);
        for (uint32_t i = 0; i < s->n_run; i++) { /* gone clients, timeouts, shutdown */
            srv_job *j = s->run[i];
            if (j->ended) continue;
            if (atomic_load(&j->cancel)) finish(s, j, SRV_FINISH_ERROR, NULL);
            else if (j->deadline && now > j->deadline)
                fail(s, j, 503, "server_error", "timeout", "the request ran past its timeout (--timeout)", 1);
            else if (cut) fail(s, j, 503, "server_error", "shutting_down", "the server is shutting down", 5);
        }
        sweep(s);
        /* the call: one decode row per decoding job, then prompt chunks up to n_batch tokens */
        size_t n = 0;
        uint32_t rows = 0;
        for (uint32_t i = 0; i < s->n_run; i++) {
            srv_job *j = s->run[i];
            if (!j->decoding) continue;
            j->chunk = 1;
            s->ents[n] = (kvs_batch_entry){.seq = j->seq, .tokens = &j->last, .n_tokens = 1, .logits = j->logits};
            s->ent_job[n++] = j;
            rows++;
        }
        for (uint32_t i = 0; i < s->n_run; i++) {
            srv_job *j = s->run[i];
            if (j->decoding || rows >= s->n_batch) continue;
            uint32_t take = j->n_prompt - j->n_fed;
            if (j->want_register && j->n_fed < j->n_prefix && take > j->n_prefix - j->n_fed) take = j->n_prefix - j->n_fed;
            if (take > s->n_batch - rows) take = s->n_batch - rows;
            j->chunk = take;
            bool last = j->n_fed + take == j->n_prompt;
            s->ents[n] = (kvs_batch_entry){.seq = j->seq, .tokens = j->prompt + j->n_fed, .n_tokens = take,
                                           .logits = last ? j->logits : NULL};
            s->ent_job[n++] = j;
            rows += take;
        }
        if (!n) continue;
        for (size_t k = 0; k < n; k++) s->ent_job[k]->past0 = kvs_seq_n_past(s->ent_job[k]->seq);
        double t0 = srv_now();
        kvs_status call = kvs_engine_decode(s->e, s->ents, n);
        double t1 = srv_now();
        for (size_t k = 0; k < n; k++) {
            srv_job *j = s->ent_job[k];
            kvs_status st = s->ents[k].status;
            /* a forward pass that fails ends the call: entries after it say KVS_OK without having run */
            if (st == KVS_OK && call != KVS_OK && kvs_seq_n_past(j->seq) != j->past0 + s->ents[k].n_tokens) st = call;
            if (st == KVS_ERR_BUDGET) {
                fail(s, j, 503, "server_error", "kv_budget", "the KV pool's budget was reached; retry later", 2);
            } else if (st != KVS_OK) {
                char msg[300];
                snprintf(msg, sizeof msg, "the engine failed: %s", kvs_status_name(st));
                fail(s, j, 500, "server_error", NULL, msg, 0);
            } else if (!j->decoding) {
                j->n_fed += j->chunk;
                if (j->want_register && j->n_fed == j->n_prefix) {
                    srv_prefix_register(s->prefix, j->prompt, j->n_prefix, j->seq);
                    j->want_register = false;
                }
                if (j->n_fed == j->n_prompt) {
                    j->decoding = true;
                    next_token(s, j);
                }
            } else {
                next_token(s, j);
            }
        }
        sweep(s);
        pthread_mutex_lock(&s->mu);
        s->met.steps++;
        s->met.step_tokens += rows;
        s->met.step_seconds += t1 - t0;
        snapshot(s, t1);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* ---- lifetime ------------------------------------------------------------------ */

kvs_status srv_sched_new(const kvs_model *m, kvs_engine *e, const kvs_session *est, const srv_sched_config *cfg,
                         srv_sched **out) {
    *out = NULL;
    if (!cfg->parallel || cfg->parallel > kvs_engine_n_batch(e))
        return KVS_ERR_INVALID_ARG;
    srv_sched *s = calloc(1, sizeof *s);
    if (!s) return KVS_ERR_NOMEM;
    s->m = m;
    s->e = e;
    s->est = est;
    s->cfg = *cfg;
    if (!s->cfg.kv_page) s->cfg.kv_page = 256;
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    s->n_vocab = info.n_vocab;
    s->n_ctx = kvs_engine_n_ctx(e);
    s->n_batch = kvs_engine_n_batch(e);
    s->budget = kvs_engine_kv_budget(e);
    s->page_bytes = kvs_session_kv_bytes_at(est, s->cfg.kv_page);
    s->t_start = s->rate_t0 = srv_now();
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->run = calloc(cfg->parallel, sizeof *s->run);
    s->ents = calloc(cfg->parallel, sizeof *s->ents);
    s->ent_job = calloc(cfg->parallel, sizeof *s->ent_job);
    s->prefix = srv_prefix_new(e, cfg->prefix_entries);
    s->met.parallel = cfg->parallel;
    s->met.queue_max = cfg->queue_max;
    s->met.kv_budget = s->budget;
    s->met.n_ctx = s->n_ctx;
    if (!s->run || !s->ents || !s->ent_job || !s->prefix) { srv_sched_free(s); return KVS_ERR_NOMEM; }
    if (pthread_create(&s->thread, NULL, sched_main, s)) { srv_sched_free(s); return KVS_ERR_NOMEM; }
    s->thread_started = true;
    *out = s;
    return KVS_OK;
}

void srv_sched_shutdown(srv_sched *s, double grace) {
    if (!s || !s->thread_started) return;
    pthread_mutex_lock(&s->mu);
    if (!s->stopping) {
        s->stopping = true;
        s->stop_deadline = srv_now() + grace;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
}

bool srv_sched_stopping(srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    bool st = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return st;
}

void srv_sched_free(srv_sched *s) {
    if (!s) return;
    srv_sched_shutdown(s, 0);
    for (uint32_t i = 0; i < s->n_run; i++) { /* none after a shutdown; kept for a failed start */
        kvs_seq_free(s->run[i]->seq);
        s->run[i]->seq = NULL;
        srv_job_release(s->run[i]);
    }
    srv_prefix_free(s->prefix);
    free(s->run);
    free(s->ents);
    free(s->ent_job);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void srv_sched_metrics(srv_sched *s, srv_metrics *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->met;
    out->uptime_s = srv_now() - s->t_start;
    pthread_mutex_unlock(&s->mu);
}

void srv_sched_note_response(srv_sched *s, int http_status, bool rejected) {
    pthread_mutex_lock(&s->mu);
    int c = http_status / 100;
    if (c >= 1 && c <= 5) s->met.http_status[c]++;
    if (rejected) s->met.requests_rejected++;
    pthread_mutex_unlock(&s->mu);
}
