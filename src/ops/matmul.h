/* Matrix multiplication against quantized weights: Y = X W^T (+ bias).
 * X rows are converted once into the weight's activation format
 * (vec_dot_type), then output rows are split across the thread pool. With
 * several tokens the kernel walks row tiles x token quads so each weight
 * tile is read from memory once per tile (GEMM); one token is a GEMV.
 * Several weights that read the same input (Q/K/V, gate/up) run in one
 * dispatch. */
#ifndef KVS_OPS_MATMUL_H
#define KVS_OPS_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "core/threads.h"
#include "kvslim.h"

typedef struct kvs_weight {
    const char *name;
    uint32_t type;         /* kvs_dtype */
    int64_t n_in, n_out;   /* (n_out rows, n_in cols) */
    size_t row_bytes;
    const void *data;
    const void *x8;        /* NULL, or the rows in core/repack.h's x8 layout (the matmul reads it) */
    size_t x8_group_bytes; /* bytes per group of 8 rows in x8 */
} kvs_weight;

typedef struct kvs_mm_out {
    const kvs_weight *w;
    float *y;              /* (n_tokens, y_stride) output, row t at y + t*y_stride */
    int64_t y_stride;
    const float *bias;     /* (n_out) or NULL */
} kvs_mm_out;

typedef struct kvs_matmul kvs_matmul;
kvs_status kvs_matmul_new(kvs_matmul **out);
void kvs_matmul_free(kvs_matmul *m);

/* x: (n_tokens, n_in) f32, contiguous. All outs must share n_in. */
kvs_status kvs_matmul_run(kvs_matmul *m, kvs_pool *pool, const float *x, int64_t n_tokens,
                          const kvs_mm_out *outs, int n_outs);

#endif
