/* The endpoints: OpenAI completions and chat completions (a job per
 * request, answered whole or as server-sent events), models, health,
 * metrics and the dashboard page. Runs on the request's connection thread;
 * the engine is reached only through the scheduler. */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/oai.h"
#include "server/server.h"

#define PING_SECONDS 5.0 /* an SSE comment when no token came for this long (at most a third of the
                            idle timeout): the connection's idle timeout sees traffic while the model works */

static void wait_tick(srv_job *j, double seconds) { /* under j->mu */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = (long)(seconds * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec += ns % 1000000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&j->cv, &j->mu, &ts);
}

static const char *finish_name(srv_finish f) { return f == SRV_FINISH_LENGTH ? "length" : "stop"; }

/* Tokens of text, or NULL (err set). */
static kvs_token *tokenize(const kvs_model *m, const char *text, size_t len, size_t *n, srv_error *err) {
    size_t cap = len + 16;
    kvs_token *t = malloc(sizeof *t * cap);
    if (!t) goto oom;
    if (kvs_tokenize(m, text, len, -1, true, t, cap, n) != KVS_OK) {
        free(t);
        srv_error_set(err, 400, "invalid_request_error", NULL, NULL, "cannot tokenize the prompt: %s", kvs_last_error());
        return NULL;
    }
    if (*n > cap) {
        free(t);
        cap = *n;
        if (!(t = malloc(sizeof *t * cap))) goto oom;
        if (kvs_tokenize(m, text, len, -1, true, t, cap, n) != KVS_OK) { free(t); goto oom; }
    }
    return t;
oom:
    srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory for the prompt's tokens");
    return NULL;
}

/* The job of a parsed request: its prompt tokens (and a cacheable prefix
 * for chats: the conversation up to its last message), sampling, stops. */
static srv_job *make_job(srv_server *s, const oai_request *r, srv_error *err) {
    kvs_token *toks = NULL;
    size_t n = 0;
    uint32_t n_prefix = 0;
    if (r->kind == OAI_CHAT) {
        char *text = kvs_chat_format(s->m, r->msgs, r->n_msgs, true);
        if (!text) {
            srv_error_set(err, 400, "invalid_request_error", "no_chat_template", "messages",
                          "this model has no chat template the server knows; use /v1/completions");
            return NULL;
        }
        toks = tokenize(s->m, text, strlen(text), &n, err);
        free(text);
        if (!toks) return NULL;
        char *ptext = kvs_chat_format(s->m, r->msgs, r->n_msgs - 1, false);
        size_t np = 0;
        kvs_token *pt = ptext && *ptext ? tokenize(s->m, ptext, strlen(ptext), &np, err) : NULL;
        if (pt && np < n && !memcmp(pt, toks, sizeof *pt * np)) n_prefix = (uint32_t)np;
        free(pt);
        free(ptext);
    } else if (r->prompt) {
        if (!(toks = tokenize(s->m, r->prompt, r->prompt_len, &n, err))) return NULL;
    } else {
        n = r->n_prompt_tokens;
        if (!(toks = malloc(sizeof *toks * n))) {
            srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
            return NULL;
        }
        memcpy(toks, r->prompt_tokens, sizeof *toks * n);
    }
    uint32_t n_ctx = kvs_engine_n_ctx(s->e);
    uint32_t max_prompt = s->cfg.max_prompt && s->cfg.max_prompt < n_ctx ? s->cfg.max_prompt : n_ctx - 1;
    if (!n) {
        free(toks);
        srv_error_set(err, 400, "invalid_request_error", NULL, r->kind == OAI_CHAT ? "messages" : "prompt",
                      "the prompt is empty");
        return NULL;
    }
    if (n > max_prompt) {
        free(toks);
        srv_error_set(err, 400, "invalid_request_error", "context_length_exceeded",
                      r->kind == OAI_CHAT ? "messages" : "prompt",
                      "the prompt has %zu tokens; this server takes at most %u (context %u)", n, max_prompt, n_ctx);
        return NULL;
    }
    srv_job *j = srv_job_new(toks, (uint32_t)n);
    if (!j) { free(toks); srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory"); return NULL; }
    j->n_prefix = n_prefix;
    j->max_tokens = r->max_tokens_set ? r->max_tokens : 0;
    j->sp = s->cfg.sampling;
    if (r->temperature_set) j->sp.temperature = (float)r->temperature;
    if (r->top_p_set) j->sp.top_p = (float)r->top_p;
    j->sp.seed = r->seed_set ? r->seed : srv_random_u64();
    for (int k = 0; k < r->n_stop; k++) {
        if (!(j->stop[k] = malloc(r->stop_len[k] + 1))) {
            srv_job_release(j);
            srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
            return NULL;
        }
        memcpy(j->stop[k], r->stop[k], r->stop_len[k] + 1);
        j->stop_len[k] = r->stop_len[k];
        j->n_stop = k + 1;
    }
    if (s->cfg.timeout_s > 0) j->deadline = srv_now() + s->cfg.timeout_s;
    j->top_logprobs = r->top_logprobs;
    return j;
}

static void log_done(srv_server *s, const char *path, int status, srv_job *j, double t0) {
    if (!s->cfg.log) return;
    char line[512];
    pthread_mutex_lock(&j->mu);
    snprintf(line, sizeof line, "POST %s %d prompt=%u cached=%u generated=%u finish=%s %.2fs", path, status,
             j->n_prompt, j->n_cached, j->n_gen,
             j->state != SRV_JOB_DONE ? "disconnected"
             : j->finish == SRV_FINISH_ERROR ? (j->err.code ? j->err.code : "error") : finish_name(j->finish),
             srv_now() - t0);
    pthread_mutex_unlock(&j->mu);
    s->cfg.log(s->cfg.log_user, line);
}

/* ---- streaming ------------------------------------------------------------------ */

typedef struct sse_state {
    srv_server *s;
    srv_job *j;
    oai_kind kind;
    bool include_usage;
    char id[48], path[64];
    long long created;
    int fd;
    srv_buf pend;
    size_t off, text_read, lp_read;
    int phase;           /* 0 role, 1 text, 2 end */
    double t_last, t0, ping;
} sse_state;

static void sse_put(sse_state *st, char *json) {
    if (!json) { st->pend.oom = true; return; }
    srv_buf_puts(&st->pend, "data: ");
    srv_buf_puts(&st->pend, json);
    srv_buf_puts(&st->pend, "\n\n");
    free(json);
}

static ssize_t sse_read(void *p, char *buf, size_t max) {
    sse_state *st = p;
    srv_job *j = st->j;
    const char *model = st->s->cfg.model_id;
    for (;;) {
        if (st->pend.oom) return -2;
        if (st->off < st->pend.n) {
            size_t k = st->pend.n - st->off < max ? st->pend.n - st->off : max;
            memcpy(buf, st->pend.p + st->off, k);
            st->off += k;
            if (st->off == st->pend.n) st->off = st->pend.n = 0;
            st->t_last = srv_now();
            return (ssize_t)k;
        }
        if (st->phase == 2) return -1;
        if (st->phase == 0) {
            st->phase = 1;
            if (st->kind == OAI_CHAT)
                sse_put(st, oai_chunk_json(st->kind, st->id, st->created, model, "assistant", NULL, 0, NULL, NULL));
            continue;
        }
        pthread_mutex_lock(&j->mu);
        while (j->out.n == st->text_read && j->state != SRV_JOB_DONE) {
            wait_tick(j, 0.1);
            if (srv_fd_gone(st->fd)) {
                pthread_mutex_unlock(&j->mu);
                srv_job_cancel(j);
                return -2;
            }
            if (srv_now() - st->t_last >= st->ping) break;
        }
        if (j->out.n > st->text_read) {
            oai_logprobs lp = {.m = st->s->m, .items = j->lps + st->lp_read, .n = j->n_lps - st->lp_read,
                               .text_offset = st->text_read};
            sse_put(st, oai_chunk_json(st->kind, st->id, st->created, model, NULL, j->out.p + st->text_read,
                                       j->out.n - st->text_read, NULL, j->top_logprobs >= 0 ? &lp : NULL));
            st->text_read = j->out.n;
            st->lp_read = j->n_lps;
            pthread_mutex_unlock(&j->mu);
            continue;
        }
        if (j->state != SRV_JOB_DONE) { /* a keep-alive comment */
            pthread_mutex_unlock(&j->mu);
            srv_buf_puts(&st->pend, ": keep-alive\n\n");
            continue;
        }
        srv_finish f = j->finish;
        srv_error err = j->err;
        oai_usage u = {.prompt_tokens = j->n_prompt, .completion_tokens = j->n_gen, .cached_tokens = j->n_cached};
        pthread_mutex_unlock(&j->mu);
        if (f == SRV_FINISH_ERROR) {
            sse_put(st, oai_error_json(&err));
        } else {
            sse_put(st, oai_chunk_json(st->kind, st->id, st->created, model, NULL, NULL, 0, finish_name(f), NULL));
            if (st->include_usage) sse_put(st, oai_usage_chunk_json(st->kind, st->id, st->created, model, &u));
        }
        srv_buf_puts(&st->pend, "data: [DONE]\n\n");
        st->phase = 2;
    }
}

static void sse_free(void *p) {
    sse_state *st = p;
    pthread_mutex_lock(&st->j->mu);
    bool done = st->j->state == SRV_JOB_DONE;
    pthread_mutex_unlock(&st->j->mu);
    if (!done) srv_job_cancel(st->j);
    log_done(st->s, st->path, 200, st->j, st->t0);
    srv_job_release(st->j);
    srv_buf_free(&st->pend);
    free(st);
}

/* ---- completions ------------------------------------------------------------------- */

static int completion(srv_server *s, srv_conn *c, oai_kind kind, const char *path, const char *body, size_t n) {
    double t0 = srv_now();
    oai_request r;
    srv_error err;
    if (!oai_parse(kind, body, n, s->info.n_vocab, &r, &err)) {
        oai_request_free(&r);
        srv_sched_note_response(s->sched, 0, true);
        return srv_reply_error(c, &err);
    }
    srv_job *j = make_job(s, &r, &err);
    bool stream = r.stream, include_usage = r.include_usage;
    oai_request_free(&r);
    if (!j || !srv_sched_submit(s->sched, j, &err)) {
        if (j) srv_sched_note_response(s->sched, 0, err.http != 429 && err.http != 503);
        else srv_sched_note_response(s->sched, 0, true);
        srv_job_release(j);
        return srv_reply_error(c, &err);
    }
    char id[48];
    snprintf(id, sizeof id, "%s-%016llx", kind == OAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)srv_random_u64());
    long long created = (long long)time(NULL);
    srv_conn_busy(c, true);
    /* wait: for the end (whole answers), or for admission (streams, so a refusal still gets its status) */
    pthread_mutex_lock(&j->mu);
    while (stream ? j->state == SRV_JOB_QUEUED : j->state != SRV_JOB_DONE) {
        wait_tick(j, 0.1);
        if (srv_conn_gone(c)) {
            pthread_mutex_unlock(&j->mu);
            srv_job_cancel(j);
            log_done(s, path, 499, j, t0);
            srv_job_release(j);
            return MHD_NO;
        }
    }
    bool failed = j->state == SRV_JOB_DONE && j->finish == SRV_FINISH_ERROR;
    pthread_mutex_unlock(&j->mu);
    int rc;
    if (failed) {
        rc = srv_reply_error(c, &j->err);
        log_done(s, path, j->err.http, j, t0);
        srv_job_release(j);
        return rc;
    }
    if (!stream) {
        oai_usage u = {.prompt_tokens = j->n_prompt, .completion_tokens = j->n_gen, .cached_tokens = j->n_cached};
        oai_logprobs lp = {.m = s->m, .items = j->lps, .n = j->n_lps};
        char *json = oai_response_json(kind, id, created, s->cfg.model_id, j->out.p ? j->out.p : "", j->out.n,
                                       finish_name(j->finish), &u, j->top_logprobs >= 0 ? &lp : NULL);
        if (!json) {
            srv_error_set(&err, 500, "server_error", NULL, NULL, "out of memory for the response");
            rc = srv_reply_error(c, &err);
        } else {
            rc = srv_reply(c, 200, "application/json", json, strlen(json));
            free(json);
        }
        log_done(s, path, json ? 200 : 500, j, t0);
        srv_job_release(j);
        return rc;
    }
    sse_state *st = calloc(1, sizeof *st);
    if (!st) { srv_job_cancel(j); srv_job_release(j); return MHD_NO; }
    *st = (sse_state){.s = s, .j = j, .kind = kind, .include_usage = include_usage, .created = created,
                      .fd = srv_conn_fd(c), .t_last = srv_now(), .t0 = t0,
                      .ping = srv_http_idle_timeout(c) / 3.0 < PING_SECONDS ? srv_http_idle_timeout(c) / 3.0 : PING_SECONDS};
    memcpy(st->id, id, sizeof id);
    snprintf(st->path, sizeof st->path, "%s", path);
    return srv_reply_stream(c, "text/event-stream", sse_read, st, sse_free);
}

/* ---- the rest ------------------------------------------------------------------------- */

static int reply_json(srv_conn *c, int status, char *json) {
    if (!json) {
        srv_error e;
        srv_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        return srv_reply_error(c, &e);
    }
    int rc = srv_reply(c, status, "application/json", json, strlen(json));
    free(json);
    return rc;
}

static int metrics(srv_server *s, srv_conn *c, bool json) {
    srv_metrics m;
    srv_sched_metrics(s->sched, &m);
    m.model_id = s->cfg.model_id;
    m.kv_scheme = s->kv_scheme;
    srv_buf b = {0};
    if (json) srv_metrics_json(&m, &b);
    else srv_metrics_prometheus(&m, &b);
    int rc;
    if (b.oom || !b.p) {
        srv_error e;
        srv_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        rc = srv_reply_error(c, &e);
    } else {
        rc = srv_reply(c, 200, json ? "application/json" : "text/plain; version=0.0.4; charset=utf-8", b.p, b.n);
    }
    srv_buf_free(&b);
    return rc;
}

int srv_api_handle(void *user, srv_conn *c, const char *method, const char *path, const char *body, size_t n) {
    srv_server *s = user;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    srv_error e;
    struct { const char *path; bool post; } routes[] = {
        {"/v1/chat/completions", true}, {"/v1/completions", true}, {"/v1/models", false}, {"/health", false},
        {"/metrics", false}, {"/metrics.json", false}, {"/", false},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].path)) continue;
        if (routes[i].post ? !post : !get) {
            srv_error_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL, "%s wants %s, not %.16s", path,
                          routes[i].post ? "POST" : "GET", method);
            return srv_reply_error(c, &e);
        }
        switch (i) {
        case 0: return completion(s, c, OAI_CHAT, path, body, n);
        case 1: return completion(s, c, OAI_COMPLETION, path, body, n);
        case 2: return reply_json(c, 200, oai_models_json(s->cfg.model_id, s->t_created, kvs_engine_n_ctx(s->e)));
        case 3: {
            bool stopping = s->stopping || srv_sched_stopping(s->sched);
            const char *b = stopping ? "{\"status\":\"shutting down\"}" : "{\"status\":\"ok\"}";
            return srv_reply(c, stopping ? 503 : 200, "application/json", b, strlen(b));
        }
        case 4: return metrics(s, c, false);
        case 5: return metrics(s, c, true);
        default: {
            const char *html = srv_dashboard_html();
            return srv_reply(c, 200, "text/html; charset=utf-8", html, strlen(html));
        }
        }
    }
    srv_error_set(&e, 404, "invalid_request_error", "not_found", NULL, "no endpoint %.200s %.200s", method, path);
    return srv_reply_error(c, &e);
}
