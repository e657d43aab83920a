/* Status/error plumbing shared by every module: kvs_fail() records a
 * formatted message in a thread-local buffer (read back with kvs_last_error)
 * and returns the status, so failures read as `return kvs_fail(...)`.
 * An argument may be kvs_last_error() itself: wrapping the previous error,
 * kvs_fail(st, "model: %s", kvs_last_error()), is safe. */
#ifndef KVS_CORE_ERROR_H
#define KVS_CORE_ERROR_H

#include "kvslim.h"

#if defined(__GNUC__)
#define KVS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KVS_PRINTF(a, b)
#endif

#define KVS_ERROR_MAX 512 /* bytes of a message, NUL included (longer ones are cut) */

kvs_status kvs_fail(kvs_status st, const char *fmt, ...) KVS_PRINTF(2, 3);
void kvs_clear_error(void);

/* Return the status of x from the calling function unless it is KVS_OK. */
#define KVS_TRY(x) do { kvs_status st_ = (x); if (st_ != KVS_OK) return st_; } while (0)

#endif
