/* Prometheus text and JSON renderings of a metrics snapshot; see metrics.h. */
#include "server/metrics.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void counter(srv_buf *b, const char *name, const char *help, double v) {
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %.17g\n", name, help, name, name, v);
}

static void gauge(srv_buf *b, const char *name, const char *help, double v) {
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

void srv_metrics_prometheus(const srv_metrics *m, srv_buf *b) {
    srv_buf_printf(b, "# HELP kvslim_requests_total Completion requests by outcome.\n"
                      "# TYPE kvslim_requests_total counter\n"
                      "kvslim_requests_total{outcome=\"ok\"} %llu\n"
                      "kvslim_requests_total{outcome=\"error\"} %llu\n"
                      "kvslim_requests_total{outcome=\"cancelled\"} %llu\n"
                      "kvslim_requests_total{outcome=\"rejected\"} %llu\n",
                   (unsigned long long)m->requests_ok, (unsigned long long)m->requests_error,
                   (unsigned long long)m->requests_cancelled, (unsigned long long)m->requests_rejected);
    srv_buf_puts(b, "# HELP kvslim_http_responses_total HTTP responses by status class.\n"
                    "# TYPE kvslim_http_responses_total counter\n");
    for (int c = 1; c <= 5; c++)
        srv_buf_printf(b, "kvslim_http_responses_total{class=\"%dxx\"} %llu\n", c, (unsigned long long)m->http_status[c]);
    counter(b, "kvslim_prompt_tokens_total", "Prompt tokens of admitted requests.", (double)m->prompt_tokens);
    counter(b, "kvslim_cached_prompt_tokens_total", "Prompt tokens served from the prefix cache.", (double)m->cached_tokens);
    counter(b, "kvslim_generated_tokens_total", "Tokens generated.", (double)m->generated_tokens);
    counter(b, "kvslim_steps_total", "Batched engine calls.", (double)m->steps);
    counter(b, "kvslim_step_tokens_total", "Tokens run through the model in those calls.", (double)m->step_tokens);
    counter(b, "kvslim_step_seconds_total", "Seconds spent in the engine.", m->step_seconds);
    counter(b, "kvslim_prefix_cache_hits_total", "Requests that forked a cached prefix.", (double)m->prefix_hits);
    counter(b, "kvslim_prefix_cache_misses_total", "Requests that found no cached prefix.", (double)m->prefix_misses);
    gauge(b, "kvslim_requests_running", "Requests holding a sequence.", m->running);
    gauge(b, "kvslim_requests_queued", "Requests waiting for admission.", m->queued);
    gauge(b, "kvslim_parallel", "Most requests running at once (--parallel).", m->parallel);
    gauge(b, "kvslim_queue_capacity", "Most requests waiting (--queue).", m->queue_max);
    gauge(b, "kvslim_sequences", "Sequences open in the engine (requests and cached prefixes).", m->n_seqs);
    gauge(b, "kvslim_prefix_cache_entries", "Cached prefixes.", m->prefix_entries);
    gauge(b, "kvslim_kv_bytes", "Bytes of KV pages in the pool (each shared page once).", (double)m->kv_bytes);
    gauge(b, "kvslim_kv_budget_bytes", "The pool's byte budget.", (double)m->kv_budget);
    gauge(b, "kvslim_kv_reserved_bytes", "Bytes the running requests may still claim (admission control).",
          (double)m->kv_reserved);
    gauge(b, "kvslim_generated_tokens_per_second", "Generation rate over the last seconds.", m->gen_tokens_per_s);
    gauge(b, "kvslim_uptime_seconds", "Seconds since start.", m->uptime_s);
    gauge(b, "kvslim_context_tokens", "Context of each sequence.", m->n_ctx);
}

void srv_metrics_json(const srv_metrics *m, srv_buf *b) {
    json_t *seqs = json_array();
    for (uint32_t i = 0; i < m->n_listed; i++)
        json_array_append_new(seqs, json_pack("{sI sI sI}", "tokens", (json_int_t)m->seq_tokens[i], "kv_bytes",
                                              (json_int_t)m->seq_bytes[i], "cached_tokens", (json_int_t)m->seq_cached[i]));
    uint64_t lookups = m->prefix_hits + m->prefix_misses;
    json_t *o = json_pack(
        "{ss ss sI sI sI sI sI sI sI sI sI sI sI sI sI sI sI sf sf sf sI sI so}", "model", m->model_id ? m->model_id : "",
        "kv_scheme", m->kv_scheme ? m->kv_scheme : "", "n_ctx", (json_int_t)m->n_ctx, "kv_bytes",
        (json_int_t)m->kv_bytes, "kv_budget", (json_int_t)m->kv_budget, "kv_reserved", (json_int_t)m->kv_reserved,
        "running", (json_int_t)m->running, "queued", (json_int_t)m->queued, "parallel", (json_int_t)m->parallel,
        "sequences", (json_int_t)m->n_seqs, "prefix_entries", (json_int_t)m->prefix_entries, "prefix_hits",
        (json_int_t)m->prefix_hits, "prefix_misses", (json_int_t)m->prefix_misses, "requests_ok",
        (json_int_t)m->requests_ok, "requests_error", (json_int_t)m->requests_error, "generated_tokens",
        (json_int_t)m->generated_tokens, "prompt_tokens", (json_int_t)m->prompt_tokens, "prefix_hit_rate",
        lookups ? (double)m->prefix_hits / (double)lookups : 0.0, "tokens_per_s", m->gen_tokens_per_s, "uptime_s",
        m->uptime_s, "cached_tokens", (json_int_t)m->cached_tokens, "requests_rejected",
        (json_int_t)m->requests_rejected, "seqs", seqs);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s) srv_buf_puts(b, s);
    else b->oom = true;
    free(s);
}
