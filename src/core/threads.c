/* Persistent pthread pool: generation counter + spin-then-sleep workers. */
#include "core/threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "core/alloc.h"
#include "core/error.h"

#define KVS_SPIN_ITERS 200000

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
        p->fn(p->ctx, ith, p->n);
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
            if (pthread_create(&p->threads[i], NULL, worker_main, a) != 0) {
                kvs_free(a); p->n = i; kvs_pool_free(p);
                return kvs_fail(KVS_ERR_INTERNAL, "thread pool: pthread_create failed");
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

void kvs_pool_run(kvs_pool *p, kvs_task_fn fn, void *ctx) {
    if (!p || p->n == 1) { fn(ctx, 0, 1); return; }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#else
        sched_yield();
#endif
    }
}

typedef struct range_task { kvs_range_fn fn; void *ctx; int64_t n; } range_task;

static void range_worker(void *vctx, int ith, int nth) {
    const range_task *t = vctx;
    int64_t lo, hi;
    kvs_split(t->n, ith, nth, &lo, &hi);
    if (lo < hi) t->fn(t->ctx, lo, hi);
}

void kvs_pool_for(kvs_pool *p, int64_t n, int64_t min_parallel, kvs_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n < min_parallel) { fn(ctx, 0, n); return; }
    range_task t = {fn, ctx, n};
    kvs_pool_run(p, range_worker, &t);
}
