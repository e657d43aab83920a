/* Single-thread many-row (prefill) matmul per weight format: Y(nt, nr) =
 * X(nt, n) . W(nr, n)^T with W = nr rows of n, as the matmul driver runs it
 * per 16-row tile: the per-row dots (vec_dot_x4 over token quads where the
 * type has one, else vec_dot) against the type's gemm kernels (AVX2 and,
 * where the CPU has it, VNNI), in the same process, alternating, best of
 * several passes. Prints GMAC/s of each and the speedup of the gemm the
 * library dispatches, and the kernel over the x8-packed copy of the weights
 * (core/repack.h); asserts nothing.
 * Usage: bench_gemm [n] [nr] [nt] [type names...]   (defaults 2048 512 128) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/quant_internal.h"
#include "core/repack.h"

static volatile float g_sink;

#define TILE 16

static void run_dots(const kvs_type_traits *F, int64_t n, int64_t nr, int64_t nt, const uint8_t *w, size_t rb,
                     const uint8_t *x, size_t xb, float *y) {
    for (int64_t r0 = 0; r0 < nr; r0 += TILE) {
        const int64_t r1 = r0 + TILE < nr ? r0 + TILE : nr;
        int64_t t = 0;
        if (F->vec_dot_x4)
            for (; t + 4 <= nt; t += 4)
                for (int64_t r = r0; r < r1; r++) {
                    float s[4];
                    F->vec_dot_x4(n, s, w + (size_t)r * rb, x + (size_t)t * xb, xb);
                    for (int k = 0; k < 4; k++) y[(t + k) * nr + r] = s[k];
                }
        for (; t < nt; t++)
            for (int64_t r = r0; r < r1; r++) F->vec_dot(n, &y[t * nr + r], w + (size_t)r * rb, x + (size_t)t * xb);
    }
}

/* x8-packed weights: a tile of TILE rows is TILE / 8 groups */
static void run_gemm_x8(kvs_gemm_fn gemm, kvs_gemm_args a, int64_t nr) {
    const uint8_t *w = a.w;
    float *y = a.y;
    for (int64_t r0 = 0; r0 < nr; r0 += TILE) {
        a.nr = r0 + TILE < nr ? TILE : nr - r0;
        a.w = w + (size_t)(r0 / 8) * a.w_stride;
        a.y = y + r0;
        gemm(&a);
    }
}

static void run_gemm(kvs_gemm_fn gemm, kvs_gemm_args a, int64_t nr) {
    const uint8_t *w = a.w;
    float *y = a.y;
    for (int64_t r0 = 0; r0 < nr; r0 += TILE) {
        a.nr = r0 + TILE < nr ? TILE : nr - r0;
        a.w = w + (size_t)r0 * a.w_stride;
        a.y = y + r0;
        gemm(&a);
    }
}

int main(int argc, char **argv) {
    const int64_t n = argc > 1 ? atoll(argv[1]) : 2048, nr = argc > 2 ? atoll(argv[2]) : 512,
                  nt = argc > 3 ? atoll(argv[3]) : 128;
    kvs_dtype_init();
    static const uint32_t types[] = {KVS_TYPE_F32,  KVS_TYPE_F16,  KVS_TYPE_BF16, KVS_TYPE_Q8_0,
                                     KVS_TYPE_Q4_0, KVS_TYPE_Q4_1, KVS_TYPE_Q5_0, KVS_TYPE_Q5_1,
                                     KVS_TYPE_Q2_K, KVS_TYPE_Q3_K, KVS_TYPE_Q4_K, KVS_TYPE_Q5_K,
                                     KVS_TYPE_Q6_K};
    printf("bench_gemm: simd=%s, n=%lld, %lld weight rows, %lld activation rows, 1 thread\n", kvs_cpu_simd_name(),
           (long long)n, (long long)nr, (long long)nt);
    const int has_vnni = kvs_cpu()->avx512vnni;
    printf("%-6s %12s %12s %12s %8s %12s %8s\n", "type", "dots GMAC/s", "avx2 GMAC/s", "vnni GMAC/s", "speedup",
           "x8 GMAC/s", "x8/dots");
    float *f = malloc(sizeof(float) * (size_t)n);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t t = types[ti];
        const kvs_type_traits *F = kvs_type_traits_of(t), *R = kvs_type_traits_ref(t);
        if (!F || !F->vec_dot || n % R->block_size) continue;
        if (argc > 4) {
            int want = 0;
            for (int a = 4; a < argc; a++) want |= strcmp(argv[a], F->name) == 0;
            if (!want) continue;
        }
        const size_t rb = kvs_row_bytes(t, n);
        uint8_t *w = kvs_aligned_alloc(rb * (size_t)nr);
        for (int64_t r = 0; r < nr; r++) {
            for (int64_t i = 0; i < n; i++) f[i] = frand() * 0.05f;
            if (R->from_float_ref) R->from_float_ref(f, w + rb * (size_t)r, n);
            else for (size_t b = 0; b < rb; b++) w[rb * (size_t)r + b] = (uint8_t)(b * 7 + (size_t)r);
        }
        const uint32_t vt = F->vec_dot_type;
        const kvs_type_traits *V = kvs_type_traits_of(vt);
        const size_t xb = kvs_row_bytes(vt, n);
        uint8_t *x = kvs_aligned_alloc(xb * (size_t)nt);
        const size_t as = (size_t)(n / 32);
        kvs_q8_aux *aux = kvs_aligned_alloc(sizeof *aux * (as * (size_t)nt + 1));
        for (int64_t j = 0; j < nt; j++) {
            for (int64_t i = 0; i < n; i++) f[i] = frand();
            V->from_float(f, x + xb * (size_t)j, n);
            if (F->gemm_xaux) kvs_q8_aux_fill(vt, x + xb * (size_t)j, aux + as * (size_t)j, n);
        }
        float *y = malloc(sizeof(float) * (size_t)(nr * nt));
        void *scratch = F->gemm ? kvs_aligned_alloc(kvs_gemm_scratch_bytes(t, n) + 64) : NULL;
        const kvs_gemm_args a = {.n = n, .nt = nt, .w = w, .w_stride = rb, .x = x, .x_stride = xb, .xaux = aux,
                                 .xaux_stride = as, .y = y, .y_stride = (size_t)nr, .scratch = scratch};
        uint8_t *pw = NULL;
        kvs_gemm_args ap = a;
        if (F->gemm_x8) { /* the load-time copy (core/repack.h), timed with the kernel the CPU runs */
            pw = kvs_aligned_alloc(kvs_repack_bytes(t, n, nr));
            kvs_repack_x8(t, w, rb, n, nr, pw);
            ap.w = pw;
            ap.w_stride = kvs_repack_group_bytes(t, n);
        }
        double best_d = 1e30, best_g[2] = {1e30, 1e30}, best_p = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now_s();
            run_dots(F, n, nr, nt, w, rb, x, xb, y);
            double dt = now_s() - t0;
            if (rep && dt < best_d) best_d = dt;
            for (int v = 0; F->gemm && v <= has_vnni; v++) {
                t0 = now_s();
                run_gemm(kvs_gemm_variant(t, v), a, nr);
                dt = now_s() - t0;
                if (rep && dt < best_g[v]) best_g[v] = dt;
            }
            if (pw) {
                t0 = now_s();
                run_gemm_x8(F->gemm_x8, ap, nr);
                dt = now_s() - t0;
                if (rep && dt < best_p) best_p = dt;
            }
        }
        g_sink = y[0];
        const double macs = (double)n * (double)nr * (double)nt;
        if (F->gemm && pw)
            printf("%-6s %12.2f %12.2f %12.2f %7.2fx %12.2f %7.2fx\n", F->name, macs / best_d / 1e9,
                   macs / best_g[0] / 1e9, has_vnni ? macs / best_g[1] / 1e9 : 0.0, best_d / best_g[has_vnni],
                   macs / best_p / 1e9, best_d / best_p);
        else if (F->gemm)
            printf("%-6s %12.2f %12.2f %12.2f %7.2fx\n", F->name, macs / best_d / 1e9, macs / best_g[0] / 1e9,
                   has_vnni ? macs / best_g[1] / 1e9 : 0.0, best_d / best_g[has_vnni]);
        else
            printf("%-6s %12.2f %12s %12s %8s\n", F->name, macs / best_d / 1e9, "-", "-", "-");
        fflush(stdout);
        free(y);
        kvs_aligned_free(scratch);
        kvs_aligned_free(pw);
        kvs_aligned_free(aux);
        kvs_aligned_free(x);
        kvs_aligned_free(w);
    }
    free(f);
    return 0;
}
