/* What the scheduler counts, as one snapshot struct, and its two renderings:
 * Prometheus text (GET /metrics) and a JSON twin (GET /metrics.json, read by
 * the dashboard). */
#ifndef KVS_SERVER_METRICS_H
#define KVS_SERVER_METRICS_H

#include <stdint.h>

#include "server/util.h"

#define SRV_METRICS_SEQS 64 /* running sequences listed one by one */

typedef struct srv_metrics {
    /* counters since start */
    uint64_t requests_ok, requests_error, requests_cancelled, requests_rejected;
    uint64_t prompt_tokens, cached_tokens, generated_tokens;
    uint64_t steps, step_tokens;
    double step_seconds;
    uint64_t prefix_hits, prefix_misses;
    uint64_t http_status[6];  /* responses by class: 1xx .. 5xx at [1..5] */
    /* gauges */
    uint32_t running, queued, parallel, queue_max, n_seqs, prefix_entries;
    uint64_t kv_bytes, kv_budget, kv_reserved;
    double gen_tokens_per_s;  /* over the last few seconds */
    double uptime_s;
    /* the running sequences */
    uint32_t n_listed;
    uint32_t seq_tokens[SRV_METRICS_SEQS];
    uint64_t seq_bytes[SRV_METRICS_SEQS];
    uint32_t seq_cached[SRV_METRICS_SEQS];
    /* static facts */
    const char *model_id;
    const char *kv_scheme;    /* one line per distinct layer scheme, '\n'-separated */
    uint32_t n_ctx;
} srv_metrics;

void srv_metrics_prometheus(const srv_metrics *m, srv_buf *out);
void srv_metrics_json(const srv_metrics *m, srv_buf *out);

#endif
