/* Status names and the thread-local last-error message. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_last_error[KVS_ERROR_MAX];

const char *kvs_status_name(kvs_status st) {
    switch (st) {
    case KVS_OK: return "ok";
    case KVS_ERR_INVALID_ARG: return "invalid argument";
    case KVS_ERR_IO: return "i/o error";
    case KVS_ERR_FORMAT: return "bad file format";
    case KVS_ERR_UNSUPPORTED: return "unsupported";
    case KVS_ERR_NOMEM: return "out of memory";
    case KVS_ERR_CONTEXT: return "context full";
    case KVS_ERR_BUDGET: return "KV budget exhausted";
    case KVS_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *kvs_last_error(void) { return g_last_error; }

void kvs_clear_error(void) { g_last_error[0] = '\0'; }

/* Formatted into a temporary first: an argument may be kvs_last_error()
 * itself (an error that wraps the previous one), and vsnprintf into the
 * buffer it reads from is undefined. */
kvs_status kvs_fail(kvs_status st, const char *fmt, ...) {
    char tmp[KVS_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) snprintf(tmp, sizeof tmp, "%s (and the message could not be formatted)", kvs_status_name(st));
    memcpy(g_last_error, tmp, sizeof tmp);
    return st;
}
