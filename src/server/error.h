/* An HTTP error in OpenAI's shape: {"error": {"message", "type", "param",
 * "code"}} with its status and, for 429/503, a Retry-After. */
#ifndef KVS_SERVER_ERROR_H
#define KVS_SERVER_ERROR_H

#include <stdarg.h>
#include <stdio.h>

typedef struct srv_error {
    int http;            /* 400, 401, 404, 405, 413, 429, 500, 503 */
    const char *type;    /* "invalid_request_error", "server_error", ... (static) */
    const char *code;    /* static or NULL */
    const char *param;   /* static or NULL */
    int retry_after;     /* seconds; 0: no Retry-After header */
    char message[512];
} srv_error;

static inline void srv_error_set(srv_error *e, int http, const char *type, const char *code, const char *param,
                                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static inline void srv_error_set(srv_error *e, int http, const char *type, const char *code, const char *param,
                                 const char *fmt, ...) {
    e->http = http;
    e->type = type;
    e->code = code;
    e->param = param;
    e->retry_after = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

#endif
