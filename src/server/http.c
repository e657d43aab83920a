/* libmicrohttpd transport; see http.h. */
#include "server/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/oai.h"
#include "server/util.h"

struct srv_http {
    struct MHD_Daemon *d;
    srv_http_config cfg;
    srv_handler handler;
    void *user;
    uint16_t port;
    bool quiesced;
};

struct srv_conn {
    srv_http *h;
    struct MHD_Connection *mc;
    srv_buf body;
    bool too_big, answered;
    int status;
};

/* ---- replies ------------------------------------------------------------------ */

static int queue(srv_conn *c, int status, struct MHD_Response *r) {
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Cache-Control", "no-store");
    srv_conn_busy(c, false);
    enum MHD_Result q = MHD_queue_response(c->mc, (unsigned)status, r);
    MHD_destroy_response(r);
    c->answered = true;
    c->status = status;
    if (c->h->cfg.note) c->h->cfg.note(c->h->user, status);
    return q;
}

int srv_reply(srv_conn *c, int status, const char *content_type, const char *body, size_t n) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", content_type);
    return queue(c, status, r);
}

int srv_reply_error(srv_conn *c, const srv_error *e) {
    char *j = oai_error_json(e);
    if (!j) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(j), j, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(j); return MHD_NO; }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (e->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", e->retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    if (e->http == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    return queue(c, e->http, r);
}

typedef struct stream_ctx {
    srv_stream_read read;
    void *state;
    void (*free_state)(void *);
} stream_ctx;

static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *s = cls;
    ssize_t n = s->read(s->state, buf, max);
    if (n == -1) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free(void *cls) {
    stream_ctx *s = cls;
    if (s->free_state) s->free_state(s->state);
    free(s);
}

int srv_reply_stream(srv_conn *c, const char *content_type, srv_stream_read read, void *state,
                     void (*free_state)(void *)) {
    stream_ctx *s = malloc(sizeof *s);
    if (!s) { if (free_state) free_state(state); return MHD_NO; }
    *s = (stream_ctx){.read = read, .state = state, .free_state = free_state};
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_cb, s, stream_free);
    if (!r) { stream_free(s); return MHD_NO; }
    MHD_add_response_header(r, "Content-Type", content_type);
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return queue(c, 200, r);
}

int srv_conn_fd(srv_conn *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

bool srv_fd_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

bool srv_conn_gone(srv_conn *c) { return srv_fd_gone(srv_conn_fd(c)); }

void srv_conn_busy(srv_conn *c, bool busy) {
    /* going from 0 to a value restarts the connection's timeout clock */
    MHD_set_connection_option(c->mc, MHD_CONNECTION_OPTION_TIMEOUT, busy ? 0u : (unsigned)c->h->cfg.idle_timeout_s);
}

uint32_t srv_http_idle_timeout(const srv_conn *c) { return c->h->cfg.idle_timeout_s; }

/* ---- the request cycle ---------------------------------------------------------- */

static bool needs_auth(const char *path) { return !strncmp(path, "/v1/", 4) || !strncmp(path, "/metrics", 8); }

static bool authorized(srv_http *h, struct MHD_Connection *mc) {
    const char *key = h->cfg.api_key;
    if (!key || !*key) return true;
    const char *a = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
    if (!a || strncasecmp(a, "Bearer ", 7)) return false;
    a += 7;
    while (*a == ' ') a++;
    return srv_ct_equal(a, strlen(a), key, strlen(key));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    srv_http *h = cls;
    srv_conn *c = *con_cls;
    srv_error e;
    if (!c) { /* headers are in: refuse early what must be refused */
        if (!(c = calloc(1, sizeof *c))) return MHD_NO;
        c->h = h;
        c->mc = mc;
        *con_cls = c;
        if (needs_auth(url) && !authorized(h, mc)) {
            srv_error_set(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
                          "missing or wrong API key: send the header 'Authorization: Bearer KEY'");
            return (enum MHD_Result)srv_reply_error(c, &e);
        }
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->cfg.max_body) {
            srv_error_set(&e, 413, "invalid_request_error", "body_too_large", NULL,
                          "the request body has %.20s bytes; at most %zu are accepted", cl, h->cfg.max_body);
            return (enum MHD_Result)srv_reply_error(c, &e);
        }
        return MHD_YES;
    }
    if (c->answered) { *upload_size = 0; return MHD_YES; } /* refused early: discard what follows */
    if (*upload_size) {
        if (c->body.n + *upload_size > h->cfg.max_body) c->too_big = true;
        else if (!srv_buf_put(&c->body, upload, *upload_size)) c->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->too_big) {
        srv_error_set(&e, 413, "invalid_request_error", "body_too_large",
                      NULL, "the request body exceeds %zu bytes", h->cfg.max_body);
        return (enum MHD_Result)srv_reply_error(c, &e);
    }
    /* the path without a query string */
    char path[256];
    size_t pl = strcspn(url, "?");
    if (pl >= sizeof path) pl = sizeof path - 1;
    memcpy(path, url, pl);
    path[pl] = '\0';
    int r = h->handler(h->user, c, method, path, c->body.p ? c->body.p : "", c->body.n);
    if (!c->answered && r != MHD_NO) { /* a handler that did not answer: a bug, but never a hang */
        srv_error_set(&e, 500, "server_error", NULL, NULL, "no response");
        r = srv_reply_error(c, &e);
    }
    return (enum MHD_Result)r;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe) {
    srv_conn *c = *con_cls;
    if (!c) return;
    srv_buf_free(&c->body);
    free(c);
    *con_cls = NULL;
}

bool srv_http_start(const srv_http_config *cfg, srv_handler handler, void *user, srv_http **out, char *err, size_t cap) {
    *out = NULL;
    srv_http *h = calloc(1, sizeof *h);
    if (!h) { snprintf(err, cap, "out of memory"); return false; }
    h->cfg = *cfg;
    h->handler = handler;
    h->user = user;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(cfg->port);
    } else if (inet_pton(AF_INET6, cfg->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, cap, "--host '%s' is not a numeric IPv4 or IPv6 address", cfg->host);
        free(h);
        return false;
    }
    h->d = MHD_start_daemon(flags, cfg->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_conns, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)cfg->idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, cap, "cannot listen on %s port %u (in use, or not an address of this machine)", cfg->host,
                 (unsigned)cfg->port);
        free(h);
        return false;
    }
    h->port = cfg->port;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_LISTEN_FD);
    if (di) {
        struct sockaddr_storage b;
        socklen_t bl = sizeof b;
        if (!getsockname(di->listen_fd, (struct sockaddr *)&b, &bl))
            h->port = ntohs(b.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&b)->sin6_port : ((struct sockaddr_in *)&b)->sin_port);
    }
    *out = h;
    return true;
}

uint16_t srv_http_port(const srv_http *h) { return h->port; }

void srv_http_quiesce(srv_http *h) {
    if (!h || h->quiesced) return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    h->quiesced = true;
}

void srv_http_drain(srv_http *h, double seconds) {
    if (!h) return;
    for (int i = 0; i < (int)(seconds * 100); i++) { /* 10 ms polls, bounded */
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!info || info->num_connections == 0) return;
        usleep(10000);
    }
}

void srv_http_stop(srv_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    free(h);
}
