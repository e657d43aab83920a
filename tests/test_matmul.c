/* ops/matmul: kvs_matmul_run over 1, 2 and 3 threads gives the same bits.
 * Each 16-row tile's arithmetic does not depend on which thread runs it or
 * when: the threads take tiles from a shared counter in shrinking grabs
 * (ops/matmul.c), so a scheduling bug (a tile skipped, done twice, or a
 * grab past the end) shows as a difference between thread counts or
 * against the plain per-row dot products checked here too.
 *
 * Cases: three outputs reading one input (as Q/K/V do: 1000, 264 and 40 rows,
 * the last with a bias; row counts not multiples of the tile), q4_1 and
 * q8_0 weights with and without their x8 copy (core/repack.h), q6_K
 * (the panel gemm), f16 (no gemm), for 1, 3, 8 and 64 tokens.
 * Tolerance against kvs vec_dot per (token, row): |d| <= 1e-4 * S + 1e-6,
 * S = sum |w| |x| over the dequantized weights (the gemm tiles sum in
 * another order than vec_dot). */
#include <string.h>

#include "core/dtype.h"
#include "core/repack.h"
#include "ops/matmul.h"
#include "test_util.h"

#define N_IN 512
#define N_OUTS 3
static const int64_t k_rows[N_OUTS] = {1000, 264, 40};

typedef struct weights {
    kvs_weight w[N_OUTS];
    void *data[N_OUTS], *x8[N_OUTS];
} weights;

static void make(weights *ws, uint32_t type, int packed, uint64_t *rng) {
    const kvs_type_traits *tr = kvs_type_traits_of(type);
    float *row = malloc(sizeof(float) * N_IN);
    for (int j = 0; j < N_OUTS; j++) {
        const size_t rb = kvs_row_bytes(type, N_IN);
        uint8_t *d = malloc(rb * (size_t)k_rows[j]);
        for (int64_t r = 0; r < k_rows[j]; r++) {
            for (int i = 0; i < N_IN; i++) row[i] = test_rng_normal(rng) * (1.0f + (float)(r % 5));
            tr->from_float(row, d + (size_t)r * rb, N_IN);
        }
        kvs_weight w = {.name = "w", .type = type, .n_in = N_IN, .n_out = k_rows[j], .row_bytes = rb, .data = d};
        ws->data[j] = d;
        ws->x8[j] = NULL;
        if (packed && kvs_repack_supported(type)) {
            ws->x8[j] = malloc(kvs_repack_bytes(type, N_IN, k_rows[j]));
            kvs_repack_x8(type, d, rb, N_IN, k_rows[j], ws->x8[j]);
            w.x8 = ws->x8[j];
            w.x8_group_bytes = kvs_repack_group_bytes(type, N_IN);
        }
        ws->w[j] = w;
    }
    free(row);
}

static void drop(weights *ws) {
    for (int j = 0; j < N_OUTS; j++) {
        free(ws->data[j]);
        free(ws->x8[j]);
    }
}

/* Y of every output for nt tokens on a pool of nth threads, into y[j]. */
static void run(const weights *ws, const float *x, int64_t nt, const float *bias, int nth, float *y[N_OUTS]) {
    kvs_pool *pool = NULL;
    kvs_matmul *mm = NULL;
    CHECK(kvs_pool_new(nth, &pool) == KVS_OK);
    CHECK(kvs_matmul_new(&mm) == KVS_OK);
    kvs_mm_out outs[N_OUTS];
    for (int j = 0; j < N_OUTS; j++) {
        for (int64_t i = 0; i < nt * k_rows[j]; i++) y[j][i] = NAN; /* every element must be written */
        outs[j] = (kvs_mm_out){.w = &ws->w[j], .y = y[j], .y_stride = k_rows[j],
                               .bias = j == N_OUTS - 1 ? bias : NULL};
    }
    CHECK(kvs_matmul_run(mm, pool, x, nt, outs, N_OUTS) == KVS_OK);
    kvs_matmul_free(mm);
    kvs_pool_free(pool);
}

static void test_case(uint32_t type, int packed, int64_t nt, uint64_t *rng) {
    weights ws;
    make(&ws, type, packed, rng);
    float *x = malloc(sizeof(float) * (size_t)(nt * N_IN)), bias[64];
    for (int64_t i = 0; i < nt * N_IN; i++) x[i] = test_rng_normal(rng);
    for (int i = 0; i < 64; i++) bias[i] = test_rng_uniform(rng);
    float *y[3][N_OUTS];
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < N_OUTS; j++) y[k][j] = malloc(sizeof(float) * (size_t)(nt * k_rows[j]));
    for (int k = 0; k < 3; k++) run(&ws, x, nt, bias, k + 1, y[k]);

    const char *what = kvs_dtype_name(type);
    const kvs_type_traits *tr = kvs_type_traits_of(type);
    const kvs_type_traits *vt = kvs_type_traits_of(tr->vec_dot_type);
    uint8_t *xq = malloc(kvs_row_bytes(tr->vec_dot_type, N_IN));
    float *wf = malloc(sizeof(float) * N_IN);
    int differ = 0, off = 0;
    for (int j = 0; j < N_OUTS; j++) {
        for (int k = 1; k < 3; k++) differ += memcmp(y[0][j], y[k][j], sizeof(float) * (size_t)(nt * k_rows[j])) != 0;
        for (int64_t t = 0; t < nt; t++) {
            if (tr->vec_dot_type == KVS_TYPE_F32) memcpy(xq, x + t * N_IN, sizeof(float) * N_IN);
            else vt->from_float(x + t * N_IN, xq, N_IN);
            for (int64_t r = 0; r < k_rows[j]; r++) {
                const uint8_t *wr = (const uint8_t *)ws.data[j] + (size_t)r * ws.w[j].row_bytes;
                float want;
                tr->vec_dot(N_IN, &want, wr, xq);
                if (j == N_OUTS - 1) want += bias[r];
                tr->to_float(wr, wf, N_IN);
                double s = 0;
                for (int i = 0; i < N_IN; i++) s += fabs((double)wf[i] * x[t * N_IN + i]);
                const float got = y[0][j][t * k_rows[j] + r];
                off += !(fabs((double)got - want) <= 1e-4 * s + 1e-6);
            }
        }
    }
    CHECKF(differ == 0, "%s%s nt=%lld: %d outputs differ between 1, 2 and 3 threads", what, packed ? " x8" : "",
           (long long)nt, differ);
    CHECKF(off == 0, "%s%s nt=%lld: %d elements off vec_dot", what, packed ? " x8" : "", (long long)nt, off);
    free(xq);
    free(wf);
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < N_OUTS; j++) free(y[k][j]);
    free(x);
    drop(&ws);
}

int main(void) {
    uint64_t rng = 0x6d61746d756cULL;
    const struct { uint32_t type; int packed; } cases[] = {
        {KVS_TYPE_Q4_1, 1}, {KVS_TYPE_Q4_1, 0}, {KVS_TYPE_Q8_0, 1}, {KVS_TYPE_Q8_0, 0},
        {KVS_TYPE_Q6_K, 0}, {KVS_TYPE_F16, 0},
    };
    const int64_t tokens[] = {1, 3, 8, 64};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++) test_case(cases[c].type, cases[c].packed, tokens[t], &rng);
    return test_finish("matmul");
}
