/* Persistent pthread pool: generation counter + spin-then-sleep workers,
 * and the per-run failure slot that carries a task's error message from a
 * worker thread back to the caller. */
#include "core/threads.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

#define KVS_SPIN_ITERS 200000

/* The first failure of one run: claimed by one thread, written before that
 * thread finishes the task (the caller reads it only after every worker's
 * release of `pending`, or after its own share). */
typedef struct run_err {
    _Atomic int claimed;
    kvs_status st;
    char msg[KVS_ERROR_MAX];
} run_err;

static _Thread_local run_err *t_run_err; /* the slot of the run this thread is executing a task of */

void kvs_task_fail(kvs_status st) {
    run_err *e = t_run_err;
    if (st == KVS_OK || !e) return; /* outside a run the message already sits on the caller's thread */
    int expect = 0;
    if (!atomic_compare_exchange_strong(&e->claimed, &expect, 1)) return;
    e->st = st;
    memcpy(e->msg, kvs_last_error(), sizeof e->msg);
    e->msg[sizeof e->msg - 1] = '\0';
}

/* The caller's side after a run: re-raise the slot's failure on this thread. */
static kvs_status run_result(const run_err *e) {
    if (!atomic_load(&e->claimed)) return KVS_OK;
    return kvs_fail(e->st, "%s", e->msg);
}

struct kvs_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t generation;
    _Atomic int pending;     /* workers still running the current task */
    _Atomic int quit;
    kvs_task_fn fn;
    void *ctx;
    run_err *err; /* the current run's failure slot */
};

typedef struct { kvs_pool *p; int ith; } worker_arg;

static void *worker_main(void *arg) {
    kvs_pool *p = ((worker_arg *)arg)->p;
    int ith = ((worker_arg *)arg)->ith;
    kvs_free(arg);
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen) {
            if (atomic_load(&p->quit)) return NULL;
            if (++spins > KVS_SPIN_ITERS) {
                pthread_mutex_lock(&p->mu);
                while (atomic_load(&p->generation) == seen && !atomic_load(&p->quit))
                    pthread_cond_wait(&p->cv, &p->mu);
                pthread_mutex_unlock(&p->mu);
                spins = 0;
            }
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = gen;
        t_run_err = p->err;
        p->fn(p->ctx, ith, p->n);
        t_run_err = NULL;
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
}

kvs_status kvs_pool_new(int n_threads, kvs_pool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 512) return kvs_fail(KVS_ERR_INVALID_ARG, "too many threads: %d", n_threads);
    kvs_pool *p = kvs_calloc(1, sizeof *p);
    if (!p) return kvs_fail(KVS_ERR_NOMEM, "thread pool: out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->threads = kvs_calloc((size_t)n_threads, sizeof *p->threads);
        if (!p->threads) { kvs_pool_free(p); return kvs_fail(KVS_ERR_NOMEM, "thread pool: out of memory"); }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *a = kvs_malloc(sizeof *a);
            if (!a) { p->n = i; kvs_pool_free(p); return kvs_fail(KVS_ERR_NOMEM, "thread pool: out of memory"); }
            a->p = p; a->ith = i;
            int e = pthread_create(&p->threads[i], NULL, worker_main, a);
            if (e != 0) {
                kvs_free(a); p->n = i; kvs_pool_free(p);
                return kvs_fail(e == EAGAIN ? KVS_ERR_NOMEM : KVS_ERR_INTERNAL, "thread pool: cannot start thread %d of %d: %s",
                                i + 1, n_threads, strerror(e));
            }
        }
    }
    *out = p;
    return KVS_OK;
}

void kvs_pool_free(kvs_pool *p) {
    if (!p) return;
    atomic_store(&p->quit, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n && p->threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    kvs_free(p->threads);
    kvs_free(p);
}

int kvs_pool_size(const kvs_pool *p) { return p ? p->n : 1; }

/* fn(ctx, 0, 1) on the calling thread with slot e (saved and restored: a
 * task may itself run an inline loop). */
static void run_inline_task(kvs_task_fn fn, void *ctx, int ith, int nth, run_err *e) {
    run_err *saved = t_run_err;
    t_run_err = e;
    fn(ctx, ith, nth);
    t_run_err = saved;
}

kvs_status kvs_pool_run(kvs_pool *p, kvs_task_fn fn, void *ctx) {
    run_err err; /* msg is written only by the claiming thread */
    atomic_init(&err.claimed, 0);
    if (!p || p->n == 1) {
        run_inline_task(fn, ctx, 0, 1, &err);
        return run_result(&err);
    }
    p->fn = fn;
    p->ctx = ctx;
    p->err = &err;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_inline_task(fn, ctx, 0, p->n, &err);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#else
        sched_yield();
#endif
    }
    p->err = NULL;
    return run_result(&err);
}

typedef struct range_task { kvs_range_fn fn; void *ctx; int64_t n; } range_task;

static void range_worker(void *vctx, int ith, int nth) {
    const range_task *t = vctx;
    int64_t lo, hi;
    kvs_split(t->n, ith, nth, &lo, &hi);
    if (lo < hi) t->fn(t->ctx, lo, hi);
}

kvs_status kvs_pool_for(kvs_pool *p, int64_t n, int64_t min_parallel, kvs_range_fn fn, void *ctx) {
    if (n <= 0) return KVS_OK;
    range_task t = {fn, ctx, n};
    if (!p || p->n == 1 || n < min_parallel) return kvs_pool_run(NULL, range_worker, &t);
    return kvs_pool_run(p, range_worker, &t);
}
