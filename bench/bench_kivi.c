/* KIVI dequantization throughput (kv/kivi.h), single thread: a ~64 MiB
 * array of key group blocks (or value rows) for one head dimension is
 * dequantized block by block into an L1-resident buffer, as an attention
 * kernel would; reported as GB/s of code bytes read (scales/mins excluded),
 * GB/s of all bytes read, and G floats/s written, best of several passes.
 * Also the scalar reference on a slice and the Hadamard transform.
 * Usage: bench_kivi [MiB] [d] [G]   (prints numbers; asserts nothing) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "kv/kivi.h"

static volatile float g_sink;

typedef void (*keys_fn)(const uint8_t *, int, int, int, int, int, float *);
typedef void (*val_fn)(const uint8_t *, int, int, int, bool, float *);

/* best seconds over `reps` passes of dequantizing `nb` key blocks */
static double time_keys(keys_fn f, const uint8_t *buf, size_t bb, size_t nb, int d, int G, int bits,
                        float *out, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now_s();
        for (size_t b = 0; b < nb; b++) f(buf + b * bb, d, G, bits, 0, G, out);
        const double t = now_s() - t0;
        g_sink = out[(size_t)G * (size_t)d - 1];
        if (t < best) best = t;
    }
    return best;
}

static double time_vals(val_fn f, const uint8_t *buf, size_t rb, size_t nr, int d, int G, int bits,
                        float *out, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now_s();
        /* 64 consecutive rows land in one (64, d) tile, like a V tile */
        for (size_t i = 0; i < nr; i++) f(buf + i * rb, d, G, bits, false, out + (i & 63) * (size_t)d);
        const double t = now_s() - t0;
        g_sink = out[0];
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    const double mib = argc > 1 ? atof(argv[1]) : 64.0;
    const int d = argc > 2 ? atoi(argv[2]) : 128;
    const int G = argc > 3 ? atoi(argv[3]) : 32;
    if (mib <= 0 || d <= 0 || G <= 0) {
        fprintf(stderr, "usage: bench_kivi [MiB] [d] [G]\n");
        return 2;
    }
    printf("bench_kivi: simd=%s, d=%d G=%d, ~%.0f MiB per array, 1 thread\n", kvs_cpu_simd_name(), d, G, mib);
    printf("%-6s %4s %12s %12s %12s %12s\n", "kind", "bits", "codes GB/s", "total GB/s", "Gfloat/s", "ref Gfl/s");
    float *src = malloc((size_t)G * (size_t)d * sizeof(float));
    float *out = kvs_aligned_alloc((size_t)(G > 64 ? G : 64) * (size_t)d * sizeof(float));
    static const int bits_list[] = {2, 3, 4};
    for (int bi = 0; bi < 3; bi++) {
        const int bits = bits_list[bi];
        /* keys */
        const size_t bb = kvs_kivi_key_block_bytes(d, G, bits);
        const size_t nb = (size_t)(mib * 1048576.0 / (double)bb) + 1;
        uint8_t *buf = kvs_aligned_alloc(bb * nb);
        for (size_t b = 0; b < nb; b++) {
            if (b < 16) {
                for (size_t i = 0; i < (size_t)G * (size_t)d; i++) src[i] = frand();
                kvs_kivi_quantize_keys(src, d, G, bits, buf + b * bb);
            } else {
                memcpy(buf + b * bb, buf + (b % 16) * bb, bb);
            }
        }
        const double codes = (double)(bb - 4 * (size_t)d) * (double)nb, total = (double)bb * (double)nb;
        const double floats = (double)G * d * (double)nb;
        double t = time_keys(kvs_kivi_dequantize_keys, buf, bb, nb, d, G, bits, out, 5);
        const size_t nref = nb / 16 + 1;
        double tr = time_keys(kvs_kivi_dequantize_keys_ref, buf, bb, nref, d, G, bits, out, 2);
        printf("%-6s %4d %12.2f %12.2f %12.2f %12.2f\n", "keys", bits, codes / t / 1e9, total / t / 1e9,
               floats / t / 1e9, (double)G * d * (double)nref / tr / 1e9);
        kvs_aligned_free(buf);
        /* values */
        const size_t rb = kvs_kivi_value_row_bytes(d, G, bits, false);
        const size_t nr = (size_t)(mib * 1048576.0 / (double)rb) + 1;
        buf = kvs_aligned_alloc(rb * nr);
        for (size_t i = 0; i < nr; i++) {
            if (i < 256) {
                for (int c = 0; c < d; c++) src[c] = frand();
                kvs_kivi_quantize_value(src, d, G, bits, false, buf + i * rb);
            } else {
                memcpy(buf + i * rb, buf + (i % 256) * rb, rb);
            }
        }
        const size_t cb = ((size_t)d * (size_t)bits + 7) / 8;
        t = time_vals(kvs_kivi_dequantize_value, buf, rb, nr, d, G, bits, out, 5);
        /* 64 rows per call (a V tile) through the multi-row entry point */
        double tm = 1e30;
        for (int r = 0; r < 5; r++) {
            const double t0 = now_s();
            for (size_t i = 0; i + 64 <= nr; i += 64)
                kvs_kivi_dequantize_values(buf + i * rb, rb, 64, d, G, bits, false, out);
            const double tt = now_s() - t0;
            g_sink = out[0];
            if (tt < tm) tm = tt;
        }
        const size_t nvr = nr / 16 + 1;
        tr = time_vals(kvs_kivi_dequantize_value_ref, buf, rb, nvr, d, G, bits, out, 2);
        printf("%-6s %4d %12.2f %12.2f %12.2f %12.2f\n", "values", bits, (double)cb * (double)nr / t / 1e9,
               (double)rb * (double)nr / t / 1e9, (double)d * (double)nr / t / 1e9,
               (double)d * (double)nvr / tr / 1e9);
        const double nr64 = (double)(nr / 64 * 64);
        printf("%-6s %4d %12.2f %12.2f %12.2f   (64-row calls)\n", "vals64", bits,
               (double)cb * nr64 / tm / 1e9, (double)rb * nr64 / tm / 1e9, (double)d * nr64 / tm / 1e9);
        kvs_aligned_free(buf);
    }
    /* Hadamard on d-dim vectors (one query/key head each), cache resident */
    if ((d & (d - 1)) == 0) {
        const size_t nv = (size_t)(16384 / d) + 1, passes = 64;
        float *x = kvs_aligned_alloc(nv * (size_t)d * sizeof(float));
        for (size_t i = 0; i < nv * (size_t)d; i++) x[i] = frand();
        double best = 1e30, bref = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = now_s();
            for (size_t k = 0; k < passes; k++)
                for (size_t i = 0; i < nv; i++) kvs_hadamard(x + i * (size_t)d, d, 0x5EED);
            double t = now_s() - t0;
            if (t < best) best = t;
            t0 = now_s();
            for (size_t k = 0; k < passes; k++)
                for (size_t i = 0; i < nv; i++) kvs_hadamard_ref(x + i * (size_t)d, d, 0x5EED);
            t = now_s() - t0;
            if (t < bref) bref = t;
        }
        g_sink = x[0];
        printf("hadamard d=%d (signed): %.1f ns/vector (%.2f Gfloat/s), ref %.1f ns/vector\n", d,
               best / (double)(nv * passes) * 1e9, (double)(nv * passes) * d / best / 1e9,
               bref / (double)(nv * passes) * 1e9);
        kvs_aligned_free(x);
    }
    free(src);
    kvs_aligned_free(out);
    return 0;
}
