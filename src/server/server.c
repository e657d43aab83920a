/* Assembly of the server: engine, byte-formula session, scheduler, HTTP;
 * see server.h. */
#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

srv_config srv_config_default(void) {
    srv_config c;
    memset(&c, 0, sizeof c);
    c.http.host = "127.0.0.1";
    c.http.port = 8080;
    c.http.max_body = 1u << 20;
    c.http.max_conns = 64;
    c.http.idle_timeout_s = 30;
    c.sched.parallel = 4;
    c.sched.queue_max = 16;
    c.sched.prefix_entries = 32;
    c.timeout_s = 600;
    c.model_id = "kvslim";
    c.sampling = kvs_sampler_params_default();
    return c;
}

static void note(void *user, int status) {
    srv_server *s = user;
    if (s->sched) srv_sched_note_response(s->sched, status, false);
}

/* "layers 0-29: full 3x64 f16 page256" lines, equal neighbours merged */
static void describe_scheme(srv_server *s) {
    char prev[256] = "", cur[256];
    int32_t from = 0;
    size_t used = 0;
    s->kv_scheme[0] = '\0';
    for (int32_t l = 0; l <= s->info.n_layer; l++) {
        if (l < s->info.n_layer) kvs_session_kv_describe(s->est, l, cur, sizeof cur);
        else cur[0] = '\0';
        if (l && (l == s->info.n_layer || strcmp(cur, prev))) {
            int w = from == l - 1 ? snprintf(s->kv_scheme + used, sizeof s->kv_scheme - used, "%slayer %d: %s",
                                             used ? "\n" : "", from, prev)
                                  : snprintf(s->kv_scheme + used, sizeof s->kv_scheme - used, "%slayers %d-%d: %s",
                                             used ? "\n" : "", from, l - 1, prev);
            if (w < 0 || (size_t)w >= sizeof s->kv_scheme - used) break;
            used += (size_t)w;
            from = l;
        }
        memcpy(prev, cur, sizeof prev);
    }
}

kvs_status srv_server_start(const kvs_model *m, const kvs_session_params *params, const srv_config *cfg,
                            srv_server **out, char *err, size_t cap) {
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, cap, "out of memory"); return KVS_ERR_NOMEM; }
    s->m = m;
    s->cfg = *cfg;
    kvs_model_get_info(m, &s->info);
    s->t_created = (long long)time(NULL);
    kvs_session_params ep = *params;
    ep.n_batch = 1;
    ep.n_threads = 1;
    ep.kv_budget = 0;
    kvs_status st = kvs_session_new(m, &ep, &s->est);
    if (st != KVS_OK) { snprintf(err, cap, "cannot create the session: %s", kvs_last_error()); goto fail; }
    describe_scheme(s);
    kvs_session_params pp = *params;
    if (!pp.kv_budget) /* no budget given: room for --parallel full contexts and one more for cached prefixes */
        pp.kv_budget = (uint64_t)(cfg->sched.parallel + 1) * kvs_session_kv_bytes_at(s->est, kvs_session_n_ctx(s->est));
    if ((st = kvs_engine_new(m, &pp, &s->e)) != KVS_OK) {
        snprintf(err, cap, "cannot create the engine: %s", kvs_last_error());
        goto fail;
    }
    /* the directory is made when missing (its parent must exist), as llama-server's --slot-save-path is */
    if (cfg->kv_dir && mkdir(cfg->kv_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, cap, "--kv-dir: cannot create '%s': %s", cfg->kv_dir, strerror(errno));
        st = KVS_ERR_IO;
        goto fail;
    }
    if (cfg->kv_dir && (st = kvs_engine_set_prefix_dir(s->e, cfg->kv_dir, cfg->kv_dir_bytes)) != KVS_OK) {
        snprintf(err, cap, "--kv-dir: %s", kvs_last_error());
        goto fail;
    }
    s->cfg.sched.kv_page = params->kv_page ? params->kv_page : 256;
    if (s->cfg.sched.parallel > kvs_engine_n_batch(s->e)) {
        snprintf(err, cap, "--parallel %u exceeds the batch of %u tokens per step (-b)", s->cfg.sched.parallel,
                 kvs_engine_n_batch(s->e));
        st = KVS_ERR_INVALID_ARG;
        goto fail;
    }
    if ((st = srv_sched_new(m, s->e, s->est, &s->cfg.sched, &s->sched)) != KVS_OK) {
        snprintf(err, cap, "cannot start the scheduler: %s", kvs_status_name(st));
        goto fail;
    }
    srv_http_config hc = s->cfg.http;
    hc.note = note;
    if (!srv_http_start(&hc, srv_api_handle, s, &s->http, err, cap)) { st = KVS_ERR_IO; goto fail; }
    *out = s;
    return KVS_OK;
fail:
    srv_server_free(s);
    return st;
}

uint16_t srv_server_port(const srv_server *s) { return srv_http_port(s->http); }

void srv_server_shutdown(srv_server *s, double grace) {
    if (!s) return;
    s->stopping = true;
    srv_http_quiesce(s->http);
    srv_sched_shutdown(s->sched, grace);
}

void srv_server_free(srv_server *s) {
    if (!s) return;
    srv_server_shutdown(s, 0);
    srv_http_drain(s->http, 5.0); /* the cut requests' error events reach their clients */
    srv_http_stop(s->http); /* waits for the connection threads, which see their jobs done */
    srv_sched_free(s->sched);
    kvs_session_free(s->est);
    kvs_engine_free(s->e);
    free(s);
}
