/* HTTP transport over libmicrohttpd: one thread per connection, bodies
 * collected up to a byte limit (413 beyond it, before reading it), Bearer
 * API key checked in constant time for /v1/ and /metrics, idle and stalled
 * connections dropped after a timeout, a connection limit. Handlers answer
 * with a whole body (srv_reply*) or a stream (srv_reply_stream) and may
 * block; srv_conn_gone tells them the client hung up. */
#ifndef KVS_SERVER_HTTP_H
#define KVS_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "server/error.h"

typedef struct srv_conn srv_conn;
typedef struct srv_http srv_http;

/* Answers one request (body complete, auth passed); returns what srv_reply* returned. */
typedef int (*srv_handler)(void *user, srv_conn *c, const char *method, const char *path, const char *body, size_t n);

typedef struct srv_http_config {
    const char *host;          /* numeric IPv4 or IPv6 address */
    uint16_t port;             /* 0: any free port (srv_http_port says which) */
    const char *api_key;       /* NULL: no auth */
    size_t max_body;           /* bytes */
    uint32_t max_conns;
    uint32_t idle_timeout_s;   /* a connection silent this long is closed */
    void (*note)(void *user, int status); /* each response's status, for metrics */
} srv_http_config;

/* Binds and starts serving; on failure err gets why. */
bool srv_http_start(const srv_http_config *cfg, srv_handler h, void *user, srv_http **out, char *err, size_t cap);
uint16_t srv_http_port(const srv_http *h);
/* Stops accepting connections; those open go on. */
void srv_http_quiesce(srv_http *h);
/* Closes every connection (after their handlers return) and frees. */
void srv_http_stop(srv_http *h);
/* Wait (at most `seconds`) until every open connection has closed, so the
 * last event of a request cut at shutdown reaches its client before the
 * daemon stops. */
void srv_http_drain(srv_http *h, double seconds);

int srv_reply(srv_conn *c, int status, const char *content_type, const char *body, size_t n);
int srv_reply_error(srv_conn *c, const srv_error *e);
/* A streamed body: read() fills buf with up to max bytes and returns how
 * many (> 0), or -1 at the end, -2 to cut the connection; it may block (and
 * should call srv_stream_gone now and then). free_state runs once at the end. */
typedef ssize_t (*srv_stream_read)(void *state, char *buf, size_t max);
int srv_reply_stream(srv_conn *c, const char *content_type, srv_stream_read read, void *state,
                     void (*free_state)(void *));
/* Has the client hung up? (poll on the socket; cheap) */
bool srv_conn_gone(srv_conn *c);
/* The socket of c, for stream readers to poll with srv_fd_gone. */
int srv_conn_fd(srv_conn *c);
bool srv_fd_gone(int fd);
/* Suspends the idle timeout while a handler waits on the model, or
 * restores it (and restarts its clock). */
void srv_conn_busy(srv_conn *c, bool busy);
uint32_t srv_http_idle_timeout(const srv_conn *c);

#endif
