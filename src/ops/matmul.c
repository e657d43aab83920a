/* Y = X W^T over quantized weights, threaded; see ops/matmul.h. */
#include "ops/matmul.h"

#include <string.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/error.h"

#define MM_ROW_TILE 16
#define MM_MAX_OUTS 4

struct kvs_matmul {
    void *xq[KVS_TYPE_COUNT];   /* converted activations per vec_dot_type, grown on demand */
    size_t xq_cap[KVS_TYPE_COUNT];
};

kvs_status kvs_matmul_new(kvs_matmul **out) {
    *out = NULL;
    kvs_matmul *m = kvs_calloc(1, sizeof *m);
    if (!m) return kvs_fail(KVS_ERR_NOMEM, "matmul scratch: out of memory");
    *out = m;
    return KVS_OK;
}

void kvs_matmul_free(kvs_matmul *m) {
    if (!m) return;
    for (int i = 0; i < KVS_TYPE_COUNT; i++) kvs_aligned_free(m->xq[i]);
    kvs_free(m);
}

typedef struct mm_task {
    const kvs_mm_out *outs;
    int n_outs;
    const void *xq[MM_MAX_OUTS];
    size_t xq_stride[MM_MAX_OUTS];
    int64_t n_tokens;
    int64_t n_tiles[MM_MAX_OUTS];
    int64_t total_tiles;
} mm_task;

typedef struct conv_task {
    const kvs_type_traits *tr;
    const float *x;
    uint8_t *out;
    int64_t n_in;
    size_t stride;
} conv_task;

static void conv_rows(void *ctx, int64_t lo, int64_t hi) {
    const conv_task *c = ctx;
    for (int64_t t = lo; t < hi; t++) c->tr->from_float(c->x + t * c->n_in, c->out + (size_t)t * c->stride, c->n_in);
}

static void mm_tile(const mm_task *tk, int j, int64_t tile) {
    const kvs_mm_out *o = &tk->outs[j];
    const kvs_weight *w = o->w;
    const kvs_type_traits *tr = kvs_type_traits_of(w->type);
    int64_t r0 = tile * MM_ROW_TILE;
    int64_t r1 = r0 + MM_ROW_TILE < w->n_out ? r0 + MM_ROW_TILE : w->n_out;
    const uint8_t *xq = tk->xq[j];
    size_t xs = tk->xq_stride[j];
    int64_t t = 0;
    if (tr->vec_dot_x4) {
        for (; t + 4 <= tk->n_tokens; t += 4) {
            for (int64_t r = r0; r < r1; r++) {
                float s[4];
                tr->vec_dot_x4(w->n_in, s, (const uint8_t *)w->data + (size_t)r * w->row_bytes,
                               xq + (size_t)t * xs, xs);
                for (int k = 0; k < 4; k++) o->y[(t + k) * o->y_stride + r] = s[k];
            }
        }
    }
    for (; t < tk->n_tokens; t++) {
        const uint8_t *xt = xq + (size_t)t * xs;
        float *yt = o->y + t * o->y_stride;
        for (int64_t r = r0; r < r1; r++)
            tr->vec_dot(w->n_in, &yt[r], (const uint8_t *)w->data + (size_t)r * w->row_bytes, xt);
    }
    if (o->bias)
        for (int64_t tt = 0; tt < tk->n_tokens; tt++)
            for (int64_t r = r0; r < r1; r++) o->y[tt * o->y_stride + r] += o->bias[r];
}

static void mm_worker(void *ctx, int ith, int nth) {
    const mm_task *tk = ctx;
    int64_t lo, hi;
    kvs_split(tk->total_tiles, ith, nth, &lo, &hi);
    int j = 0;
    int64_t base = 0;
    for (int64_t g = lo; g < hi; g++) {
        while (g >= base + tk->n_tiles[j]) base += tk->n_tiles[j++];
        mm_tile(tk, j, g - base);
    }
}

kvs_status kvs_matmul_run(kvs_matmul *m, kvs_pool *pool, const float *x, int64_t n_tokens,
                          const kvs_mm_out *outs, int n_outs) {
    if (n_outs < 1 || n_outs > MM_MAX_OUTS || n_tokens < 1)
        return kvs_fail(KVS_ERR_INTERNAL, "matmul: bad arguments");
    mm_task tk = {.outs = outs, .n_outs = n_outs, .n_tokens = n_tokens};
    int64_t n_in = outs[0].w->n_in;
    bool converted[KVS_TYPE_COUNT] = {0};
    for (int j = 0; j < n_outs; j++) {
        const kvs_weight *w = outs[j].w;
        if (w->n_in != n_in) return kvs_fail(KVS_ERR_INTERNAL, "matmul: mixed input widths");
        const kvs_type_traits *tr = kvs_type_traits_of(w->type);
        if (!tr || !tr->vec_dot)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "matmul: no kernel for %s (%s)", w->name,
                            kvs_dtype_name(w->type));
        uint32_t vt = tr->vec_dot_type;
        size_t stride = kvs_row_bytes(vt, n_in);
        if (!converted[vt]) {
            size_t need = stride * (size_t)n_tokens;
            if (need > m->xq_cap[vt]) {
                kvs_aligned_free(m->xq[vt]);
                m->xq[vt] = kvs_aligned_alloc(need);
                m->xq_cap[vt] = m->xq[vt] ? need : 0;
                if (!m->xq[vt]) return kvs_fail(KVS_ERR_NOMEM, "matmul: out of memory");
            }
            if (vt == KVS_TYPE_F32) {
                memcpy(m->xq[vt], x, need);
            } else {
                conv_task ct = {kvs_type_traits_of(vt), x, m->xq[vt], n_in, stride};
                kvs_pool_for(pool, n_tokens, 8, conv_rows, &ct);
            }
            converted[vt] = true;
        }
        tk.xq[j] = m->xq[vt];
        tk.xq_stride[j] = stride;
        tk.n_tiles[j] = (w->n_out + MM_ROW_TILE - 1) / MM_ROW_TILE;
        tk.total_tiles += tk.n_tiles[j];
    }
    kvs_pool_run(pool, mm_worker, &tk);
    return KVS_OK;
}
