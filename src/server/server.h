/* kvslim serve as a library module: an OpenAI-compatible HTTP server over
 * one engine (one KV pool). srv_server_start builds the engine, the
 * scheduler thread and the HTTP listener; srv_server_shutdown drains it.
 * Calls only the public API of include/kvslim.h into the engine. */
#ifndef KVS_SERVER_SERVER_H
#define KVS_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"
#include "server/http.h"
#include "server/sched.h"

typedef struct srv_config {
    srv_http_config http;
    srv_sched_config sched;
    const char *model_id;       /* the name /v1/models lists and responses carry */
    uint32_t max_prompt;        /* prompt tokens at most (0: the context less one) */
    const char *kv_dir;         /* the prefix cache's disk tier (NULL: none) */
    uint64_t kv_dir_bytes;      /* its cap (0: none) */
    double timeout_s;           /* per request, queue wait included (0: none) */
    kvs_sampler_params sampling;/* defaults of temperature, top_p and the rest */
    /* one line per finished completion request (NULL: quiet) */
    void (*log)(void *user, const char *line);
    void *log_user;
} srv_config;

srv_config srv_config_default(void);

typedef struct srv_server {
    const kvs_model *m;
    kvs_model_info info;
    srv_config cfg;
    kvs_engine *e;
    kvs_session *est;           /* the byte formula of the engine's scheme */
    srv_sched *sched;
    srv_http *http;
    long long t_created;        /* unix seconds */
    char kv_scheme[2048];
    bool stopping;
} srv_server;

/* params: the engine's (context, batch, threads, KV scheme and budget).
 * On failure err says why. */
kvs_status srv_server_start(const kvs_model *m, const kvs_session_params *params, const srv_config *cfg,
                            srv_server **out, char *err, size_t cap);
uint16_t srv_server_port(const srv_server *s);
/* Stop accepting, let running requests finish for up to grace seconds, cut the rest. */
void srv_server_shutdown(srv_server *s, double grace);
void srv_server_free(srv_server *s);

/* The request handler (api.c). */
int srv_api_handle(void *user, srv_conn *c, const char *method, const char *path, const char *body, size_t n);
/* The dashboard page (dashboard.c). */
const char *srv_dashboard_html(void);

#endif
