/* Machine read-bandwidth probe: the denominator of every "fraction of the
 * memory limit" figure. Sums a large buffer with wide loads on n threads. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/cpu.h"
#include "core/threads.h"
#include "kvslim.h"

typedef struct bw_ctx { const float *buf; size_t n; float sink[64]; } bw_ctx;

float kvs_membw_sum_avx2(const float *x, size_t n);

static float sum_scalar(const float *x, size_t n) {
    float a[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += x[i + j];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

static void bw_task(void *vctx, int ith, int nth) {
    bw_ctx *c = vctx;
    int64_t lo, hi;
    kvs_split((int64_t)(c->n / 64), ith, nth, &lo, &hi);
    const float *p = c->buf + lo * 64;
    size_t n = (size_t)(hi - lo) * 64;
    c->sink[ith % 64] = kvs_cpu()->avx2 ? kvs_membw_sum_avx2(p, n) : sum_scalar(p, n);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double kvs_measure_read_bandwidth(int n_threads, size_t bytes, int reps) {
    if (bytes < (1 << 20)) bytes = 1 << 20;
    if (reps < 1) reps = 1;
    kvs_pool *pool = NULL;
    if (kvs_pool_new(n_threads > 0 ? n_threads : kvs_cpu_count(), &pool) != KVS_OK) return 0.0;
    bw_ctx c = {.n = bytes / sizeof(float)};
    float *buf = kvs_aligned_alloc(bytes);
    if (!buf) { kvs_pool_free(pool); return 0.0; }
    for (size_t i = 0; i < c.n; i++) buf[i] = (float)(i & 7);
    c.buf = buf;
    kvs_pool_run(pool, bw_task, &c); /* warm-up: fault pages in */
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        kvs_pool_run(pool, bw_task, &c);
        double bw = (double)bytes / (now() - t0);
        if (bw > best) best = bw;
    }
    kvs_aligned_free(buf);
    kvs_pool_free(pool);
    return best;
}

const char *kvs_simd_name(void) { return kvs_cpu_simd_name(); }
