/* Single-thread GEMV throughput per weight format: a ~64 MiB weight matrix
 * (rows of n = 4096) streamed through vec_dot against one activation row,
 * reported as GB/s of weight bytes read (best of several passes). Also the
 * 4-row vec_dot_x4 (same bytes, 4 activation rows per pass), the scalar
 * reference on a slice, and a plain read-bandwidth baseline.
 * Usage: bench_quant [MiB] [type names...]   (prints numbers; asserts nothing) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"

static volatile float g_sink;

static double read_baseline(const uint8_t *p, size_t bytes) {
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        const double t0 = now_s();
        uint64_t acc = 0;
        const uint64_t *q = (const uint64_t *)p;
        for (size_t i = 0; i < bytes / 8; i += 4) acc += q[i] ^ q[i + 1] ^ q[i + 2] ^ q[i + 3];
        const double t = now_s() - t0;
        g_sink = (float)acc;
        if (t < best) best = t;
    }
    return (double)bytes / best / 1e9;
}

int main(int argc, char **argv) {
    const double mib = argc > 1 ? atof(argv[1]) : 64.0;
    kvs_dtype_init();
    const int64_t n = 4096;
    static const uint32_t types[] = {KVS_TYPE_F32,  KVS_TYPE_F16,  KVS_TYPE_BF16, KVS_TYPE_Q8_0,
                                     KVS_TYPE_Q4_0, KVS_TYPE_Q4_1, KVS_TYPE_Q5_0, KVS_TYPE_Q5_1,
                                     KVS_TYPE_Q2_K, KVS_TYPE_Q3_K, KVS_TYPE_Q4_K, KVS_TYPE_Q5_K,
                                     KVS_TYPE_Q6_K};
    printf("bench_quant: simd=%s, n=%lld per row, ~%.0f MiB weights, 1 thread\n", kvs_cpu_simd_name(),
           (long long)n, mib);
    float *xf = malloc((size_t)n * 4 * 4), *wf = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n * 4; i++) xf[i] = frand();
    {
        const size_t bytes = (size_t)(mib * 1048576.0);
        uint8_t *p = kvs_aligned_alloc(bytes);
        for (size_t i = 0; i < bytes; i += 64) p[i] = (uint8_t)i;
        printf("%-6s %10.2f GB/s  (plain 64-bit read loop)\n", "read", read_baseline(p, bytes));
        kvs_aligned_free(p);
    }
    printf("%-6s %10s %10s %12s %10s\n", "type", "vec_dot", "x4", "x4 tok/row", "ref");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t t = types[ti];
        const kvs_type_traits *F = kvs_type_traits_of(t), *R = kvs_type_traits_ref(t);
        if (!F || !F->vec_dot) continue;
        if (argc > 2) {
            int want = 0;
            for (int a = 2; a < argc; a++) want |= strcmp(argv[a], F->name) == 0;
            if (!want) continue;
        }
        const size_t rb = kvs_row_bytes(t, n);
        const int64_t rows = (int64_t)(mib * 1048576.0 / (double)rb);
        uint8_t *w = kvs_aligned_alloc(rb * (size_t)rows);
        /* 16 distinct quantized rows, replicated */
        for (int64_t r = 0; r < rows; r++) {
            if (r < 16) {
                for (int64_t i = 0; i < n; i++) wf[i] = frand() * 0.05f;
                if (R->from_float_ref) R->from_float_ref(wf, w + rb * (size_t)r, n);
                else for (size_t b = 0; b < rb; b++) w[rb * (size_t)r + b] = (uint8_t)(b * 7 + (size_t)r);
            } else {
                memcpy(w + rb * (size_t)r, w + rb * (size_t)(r % 16), rb);
            }
        }
        const kvs_type_traits *V = kvs_type_traits_of(F->vec_dot_type);
        const size_t xb = kvs_row_bytes(F->vec_dot_type, n);
        uint8_t *xq = kvs_aligned_alloc(xb * 4);
        for (int j = 0; j < 4; j++) V->from_float(xf + n * j, xq + xb * (size_t)j, n);
        float *out = malloc((size_t)rows * 4 * sizeof(float));
        const double total = (double)rb * (double)rows;

        double best = 1e30;
        for (int rep = 0; rep < 6; rep++) {
            const double t0 = now_s();
            for (int64_t r = 0; r < rows; r++) F->vec_dot(n, &out[r], w + rb * (size_t)r, xq);
            const double dt = now_s() - t0;
            if (rep > 0 && dt < best) best = dt; /* first pass warms up */
        }
        const double gbs = total / best / 1e9;
        double gbs4 = 0;
        if (F->vec_dot_x4) {
            double best4 = 1e30;
            for (int rep = 0; rep < 4; rep++) {
                const double t0 = now_s();
                for (int64_t r = 0; r < rows; r++) F->vec_dot_x4(n, &out[4 * r], w + rb * (size_t)r, xq, xb);
                const double dt = now_s() - t0;
                if (dt < best4) best4 = dt;
            }
            gbs4 = total / best4 / 1e9;
        }
        /* scalar reference on a slice (it is slow) */
        const int64_t rrows = rows < 2048 ? rows : 2048;
        double t0 = now_s();
        for (int64_t r = 0; r < rrows; r++) R->vec_dot_ref(n, &out[r], w + rb * (size_t)r, xq);
        const double gbs_ref = (double)rb * (double)rrows / (now_s() - t0) / 1e9;
        g_sink = out[0];
        if (F->vec_dot_x4)
            printf("%-6s %10.2f %10.2f %12.2f %10.2f  GB/s   (%lld rows x %zu B)\n", F->name, gbs, gbs4,
                   gbs4 * 4, gbs_ref, (long long)rows, rb);
        else
            printf("%-6s %10.2f %10s %12s %10.2f  GB/s   (%lld rows x %zu B)\n", F->name, gbs, "-", "-", gbs_ref,
                   (long long)rows, rb);
        free(out);
        kvs_aligned_free(xq);
        kvs_aligned_free(w);
    }
    printf("x4: weight GB/s with 4 activation rows per pass; 'x4 tok/row' = 4x that (weight bytes per token-row)\n");
    free(xf);
    free(wf);
    return 0;
}
