/* `kvslim serve`: the OpenAI-compatible HTTP server (src/server/) on one
 * model and one KV pool, until SIGTERM or SIGINT. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "server/server.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kvslim serve [options]\n"
            "An OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions,\n"
            "GET /v1/models, /health, /metrics (Prometheus), /metrics.json, / (dashboard).\n\n%s"
            "      --host ADDR        numeric address to bind (default 127.0.0.1)\n"
            "      --port N           TCP port (default 8080; 0: any free port)\n"
            "      --api-key KEY      require 'Authorization: Bearer KEY' on /v1/ and /metrics\n"
            "                         (default: $KVSLIM_API_KEY when set)\n"
            "      --alias NAME       the model's name in /v1/models (default: the file name)\n"
            "      --parallel N       requests running at once (default 4)\n"
            "      --queue N          requests waiting for admission; beyond: 429 (default 16)\n"
            "      --timeout S        seconds per request, waiting included; then 503 (default 600)\n"
            "      --max-body N       request body bytes (default 1M; beyond: 413)\n"
            "      --max-prompt N     prompt tokens (default: the context less one)\n"
            "      --max-tokens N     cap and default of max_tokens (default: the context)\n"
            "      --max-conns N      open connections (default 64)\n"
            "      --idle-timeout S   close a connection silent for S seconds (default 30)\n"
            "      --prefix-cache N   cached prompt prefixes (system prompts, conversations) (default 32, 0: off)\n"
            "      --kv-dir DIR       the prefix cache's disk tier: prefixes the pool evicts are kept there and\n"
            "                         found again after a restart\n"
            "      --kv-dir-bytes N   cap of the disk tier (e.g. 4G; default: no cap)\n"
            "      --grace S          on SIGTERM, seconds running requests get to finish (default 10)\n"
            "      --ignore-eos       generate to max_tokens past end-of-generation tokens (load tests)\n"
            "      --quiet            no line per request on stderr\n"
            "Without --kv-budget the pool holds --parallel + 1 full contexts.\n",
            cli_common_help());
}

static void log_line(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "kvslim serve: %s\n", line);
}

/* "smollm2-135m-instruct-q4_1" from ".../smollm2-135m-instruct-q4_1.gguf" */
static void model_id_from_path(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, cap, "%s", b);
    size_t l = strlen(out);
    if (l > 5 && !strcmp(out + l - 5, ".gguf")) out[l - 5] = '\0';
}

int cmd_serve(int argc, char **argv) {
    cli_common c;
    cli_common_init(&c);
    srv_config cfg = srv_config_default();
    const char *alias = NULL;
    double grace = 10;
    bool quiet = false;
    long long v;
    unsigned long long u;
    double f;
    cfg.http.api_key = getenv("KVSLIM_API_KEY");
    for (int i = 1; i < argc; i++) {
        int r = cli_common_option(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *val;
#define VAL() do { if (!(val = cli_value(argc, argv, &i))) return 2; } while (0)
#define BAD(want) do { fprintf(stderr, "kvslim serve: bad value '%s' for %s: want %s\n", val, a, want); return 2; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "--host")) { VAL(); cfg.http.host = val; }
        else if (!strcmp(a, "--port")) { VAL(); if (!cli_parse_int(val, 0, 65535, &v)) BAD("a port from 0 to 65535"); cfg.http.port = (uint16_t)v; }
        else if (!strcmp(a, "--api-key")) { VAL(); if (!*val) BAD("a non-empty key"); cfg.http.api_key = val; }
        else if (!strcmp(a, "--alias")) { VAL(); if (!*val || strlen(val) > 200) BAD("a name of 1-200 characters"); alias = val; }
        else if (!strcmp(a, "--parallel")) { VAL(); if (!cli_parse_int(val, 1, 64, &v)) BAD("1 to 64"); cfg.sched.parallel = (uint32_t)v; }
        else if (!strcmp(a, "--queue")) { VAL(); if (!cli_parse_int(val, 1, 4096, &v)) BAD("1 to 4096"); cfg.sched.queue_max = (uint32_t)v; }
        else if (!strcmp(a, "--timeout")) { VAL(); if (!cli_parse_float(val, &f) || !(f >= 0 && f <= 1e7)) BAD("seconds >= 0 (0: none)"); cfg.timeout_s = f; }
        else if (!strcmp(a, "--max-body")) { VAL(); if (!cli_parse_count(val, &u) || u < 64 || u > (1ull << 30)) BAD("64 to 1G bytes"); cfg.http.max_body = (size_t)u; }
        else if (!strcmp(a, "--max-prompt")) { VAL(); if (!cli_parse_count(val, &u) || u < 1 || u > (1u << 26)) BAD("a token count >= 1"); cfg.max_prompt = (uint32_t)u; }
        else if (!strcmp(a, "--max-tokens")) { VAL(); if (!cli_parse_count(val, &u) || u < 1 || u > (1u << 26)) BAD("a token count >= 1"); cfg.sched.max_tokens = (uint32_t)u; }
        else if (!strcmp(a, "--max-conns")) { VAL(); if (!cli_parse_int(val, 1, 4096, &v)) BAD("1 to 4096"); cfg.http.max_conns = (uint32_t)v; }
        else if (!strcmp(a, "--idle-timeout")) { VAL(); if (!cli_parse_int(val, 1, 86400, &v)) BAD("1 to 86400 seconds"); cfg.http.idle_timeout_s = (uint32_t)v; }
        else if (!strcmp(a, "--kv-dir")) { VAL(); cfg.kv_dir = val; }
        else if (!strcmp(a, "--kv-dir-bytes")) {
            VAL();
            unsigned long long b;
            if (!cli_parse_count(val, &b)) BAD("a byte count such as 4G");
            cfg.kv_dir_bytes = b;
        }
        else if (!strcmp(a, "--prefix-cache")) { VAL(); if (!cli_parse_int(val, 0, 4096, &v)) BAD("0 to 4096"); cfg.sched.prefix_entries = (uint32_t)v; }
        else if (!strcmp(a, "--grace")) { VAL(); if (!cli_parse_float(val, &f) || !(f >= 0 && f <= 86400)) BAD("seconds from 0 to 86400"); grace = f; }
        else if (!strcmp(a, "--quiet")) quiet = true;
        else if (!strcmp(a, "--ignore-eos")) cfg.sched.ignore_eos = true;
        else { fprintf(stderr, "kvslim serve: unknown option '%s' (see --help)\n", a); return 2; }
#undef VAL
#undef BAD
    }
    if (cfg.http.api_key && !*cfg.http.api_key) cfg.http.api_key = NULL;
    if (!strcmp(cfg.http.host, "localhost")) cfg.http.host = "127.0.0.1";
    kvs_model *m = cli_load_model(&c);
    if (!m) return 1;
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    char id[256];
    if (alias) snprintf(id, sizeof id, "%s", alias);
    else model_id_from_path(c.model ? c.model : "models/smollm2-135m-instruct-q4_1.gguf", id, sizeof id);
    cfg.model_id = id;
    if (!quiet) { cfg.log = log_line; cfg.log_user = NULL; }

    kvs_session_params sp =
        cli_session_params(m, &c, (uint32_t)(info.n_ctx_train > 0 ? info.n_ctx_train : 4096));

    /* the signals wait for sigwait below: every thread started from here blocks them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_server *s = NULL;
    char err[512];
    if (srv_server_start(m, &sp, &cfg, &s, err, sizeof err) != KVS_OK) {
        fprintf(stderr, "kvslim serve: %s\n", err);
        kvs_model_free(m);
        return 1;
    }
    fprintf(stderr, "kvslim serve: %s, context %u, --parallel %u, KV pool budget %.1f MiB\n", id, kvs_engine_n_ctx(s->e),
            cfg.sched.parallel, (double)kvs_engine_kv_budget(s->e) / 1048576.0);
    fprintf(stderr, "kvslim serve: KV scheme:\n  ");
    for (const char *p = s->kv_scheme; *p; p++) fputs(*p == '\n' ? "\n  " : (char[2]){*p, 0}, stderr);
    fputc('\n', stderr);
    fprintf(stderr, "kvslim serve: listening on http://%s%s%s:%u%s\n", strchr(cfg.http.host, ':') ? "[" : "",
            cfg.http.host, strchr(cfg.http.host, ':') ? "]" : "", (unsigned)srv_server_port(s),
            cfg.http.api_key ? " (API key required)" : "");
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "kvslim serve: %s: shutting down (running requests get %.0f s)\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", grace);
    srv_server_shutdown(s, grace);
    srv_server_free(s);
    kvs_model_free(m);
    fprintf(stderr, "kvslim serve: stopped\n");
    return 0;
}
