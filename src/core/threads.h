/* A small persistent thread pool for data-parallel kernels. The calling
 * thread is worker 0; kvs_pool_run() returns when all workers finished.
 * Workers spin briefly on a generation counter and then sleep, so dispatch
 * costs about a microsecond in a decode loop and nothing when idle. */
#ifndef KVS_CORE_THREADS_H
#define KVS_CORE_THREADS_H

#include "kvslim.h"

typedef struct kvs_pool kvs_pool;
typedef void (*kvs_task_fn)(void *ctx, int ith, int nth);

kvs_status kvs_pool_new(int n_threads, kvs_pool **out);
void kvs_pool_free(kvs_pool *p);
int kvs_pool_size(const kvs_pool *p);
/* Run fn(ctx, i, n) for i in [0, n) on n = pool size threads. Not reentrant.
 * Returns KVS_OK, or the first failure a task reported with kvs_task_fail,
 * its message then in the caller's kvs_last_error(). */
kvs_status kvs_pool_run(kvs_pool *p, kvs_task_fn fn, void *ctx);

/* Run fn(ctx, lo, hi) over near-equal chunks of [0, n), one per thread;
 * inline on the caller when n < min_parallel (small batches, decode).
 * Failures as for kvs_pool_run. */
typedef void (*kvs_range_fn)(void *ctx, int64_t lo, int64_t hi);
kvs_status kvs_pool_for(kvs_pool *p, int64_t n, int64_t min_parallel, kvs_range_fn fn, void *ctx);

/* Called by a task (on whatever thread runs it) that failed, after the
 * kvs_fail() that wrote its message: `kvs_task_fail(kvs_fail(...))` or
 * `if (st != KVS_OK) kvs_task_fail(st)`. Messages are thread-local, so the
 * pool copies status and message into the run's slot (the first failure
 * wins) and kvs_pool_run / kvs_pool_for re-raise them on the calling
 * thread. st == KVS_OK does nothing. */
void kvs_task_fail(kvs_status st);

/* Split [0, n) into nth near-equal contiguous chunks; chunk ith is [*lo, *hi). */
static inline void kvs_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}

#endif
