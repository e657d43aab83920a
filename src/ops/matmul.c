/* Y = X W^T over quantized weights, threaded; see ops/matmul.h. */
#include "ops/matmul.h"

#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/error.h"

#define MM_ROW_TILE 16
_Static_assert(MM_ROW_TILE % 8 == 0, "a row tile starts an x8 group");
#define MM_MAX_OUTS 4
#define MM_GRABS 4 /* grabs per thread of a light matmul */

struct kvs_matmul {
    void *xq[KVS_TYPE_COUNT];   /* converted activations per vec_dot_type, grown on demand */
    size_t xq_cap[KVS_TYPE_COUNT];
    kvs_q8_aux *aux[KVS_TYPE_COUNT]; /* (n_tokens, n_in / 32) per q8_0 / q8_1 row, for gemm */
    size_t aux_cap[KVS_TYPE_COUNT];
    uint8_t *scratch;           /* (n_threads, scratch_stride) gemm panels */
    size_t scratch_cap;
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
    for (int i = 0; i < KVS_TYPE_COUNT; i++) {
        kvs_aligned_free(m->xq[i]);
        kvs_aligned_free(m->aux[i]);
    }
    kvs_aligned_free(m->scratch);
    kvs_free(m);
}

typedef struct mm_task {
    const kvs_mm_out *outs;
    int n_outs;
    const void *xq[MM_MAX_OUTS];
    size_t xq_stride[MM_MAX_OUTS];
    const kvs_q8_aux *aux[MM_MAX_OUTS];
    size_t aux_stride[MM_MAX_OUTS];
    bool gemm[MM_MAX_OUTS];
    bool x8[MM_MAX_OUTS];                 /* through the weight's x8 copy (core/repack.h) */
    int64_t n_tokens;
    int64_t n_tiles[MM_MAX_OUTS];
    int64_t total_tiles;
    int64_t chunk;          /* tiles per grab */
    _Atomic int64_t next;   /* first tile not yet taken */
    uint8_t *scratch;
    size_t scratch_stride;
} mm_task;

/* Activation rows converted to a vec_dot_type and, for the gemm tiles,
 * their per-block aux (d, sums) filled, one dispatch for both. */
typedef struct conv_task {
    uint32_t vt;
    const float *x;
    uint8_t *out;
    int64_t n_in;
    size_t stride;
    kvs_q8_aux *aux; /* NULL: no aux wanted */
    size_t aux_stride;
} conv_task;

static void conv_rows(void *ctx, int64_t lo, int64_t hi) {
    const conv_task *c = ctx;
    const kvs_type_traits *tr = kvs_type_traits_of(c->vt);
    for (int64_t t = lo; t < hi; t++) {
        uint8_t *row = c->out + (size_t)t * c->stride;
        if (c->vt == KVS_TYPE_F32) memcpy(row, c->x + t * c->n_in, c->stride);
        else tr->from_float(c->x + t * c->n_in, row, c->n_in);
        if (c->aux) kvs_q8_aux_fill(c->vt, row, c->aux + (size_t)t * c->aux_stride, c->n_in);
    }
}

static void mm_tile(const mm_task *tk, int j, int64_t tile, int ith) {
    const kvs_mm_out *o = &tk->outs[j];
    const kvs_weight *w = o->w;
    const kvs_type_traits *tr = kvs_type_traits_of(w->type);
    int64_t r0 = tile * MM_ROW_TILE;
    int64_t r1 = r0 + MM_ROW_TILE < w->n_out ? r0 + MM_ROW_TILE : w->n_out;
    const uint8_t *xq = tk->xq[j];
    size_t xs = tk->xq_stride[j];
    int64_t t = 0;
    if (tk->x8[j]) { /* MM_ROW_TILE is a multiple of 8: the tile starts a group */
        const kvs_gemm_args a = {
            .n = w->n_in, .nr = r1 - r0, .nt = tk->n_tokens,
            .w = (const uint8_t *)w->x8 + (size_t)(r0 / 8) * w->x8_group_bytes, .w_stride = w->x8_group_bytes,
            .x = xq, .x_stride = xs, .xaux = tk->aux[j], .xaux_stride = tk->aux_stride[j],
            .y = o->y + r0, .y_stride = (size_t)o->y_stride,
        };
        tr->gemm_x8(&a);
        t = tk->n_tokens;
    } else if (tk->gemm[j]) {
        const kvs_gemm_args a = {
            .n = w->n_in, .nr = r1 - r0, .nt = tk->n_tokens,
            .w = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes, .w_stride = w->row_bytes,
            .x = xq, .x_stride = xs, .xaux = tk->aux[j], .xaux_stride = tk->aux_stride[j],
            .y = o->y + r0, .y_stride = (size_t)o->y_stride,
            .scratch = tk->scratch + (size_t)ith * tk->scratch_stride,
        };
        tr->gemm(&a);
        t = tk->n_tokens;
    } else if (tr->vec_dot_x4) {
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

/* Tiles are taken in chunks from a shared counter rather than split up
 * front, so a thread that runs while another is preempted (a busy machine)
 * keeps taking work instead of waiting at the end. Grabs shrink as the
 * work runs out (guided: at most a 2 nth-th of what is left, at least one
 * tile), so the threads finish within about one tile of each other while
 * the early grabs stay long contiguous runs. */
static void mm_worker(void *ctx, int ith, int nth) {
    mm_task *tk = ctx;
    int j = 0;
    int64_t base = 0;
    int64_t lo = atomic_load_explicit(&tk->next, memory_order_relaxed);
    for (;;) {
        if (lo >= tk->total_tiles) break;
        int64_t c = (tk->total_tiles - lo) / (2 * (int64_t)nth);
        if (c > tk->chunk) c = tk->chunk;
        if (c < 1) c = 1;
        if (!atomic_compare_exchange_weak_explicit(&tk->next, &lo, lo + c, memory_order_relaxed,
                                                   memory_order_relaxed))
            continue; /* lo now holds the counter's value */
        const int64_t hi = lo + c < tk->total_tiles ? lo + c : tk->total_tiles;
        for (int64_t g = lo; g < hi; g++) { /* g grows per thread: j, base only move forward */
            while (g >= base + tk->n_tiles[j]) base += tk->n_tiles[j++];
            mm_tile(tk, j, g - base, ith);
        }
        lo = atomic_load_explicit(&tk->next, memory_order_relaxed);
    }
}

kvs_status kvs_matmul_run(kvs_matmul *m, kvs_pool *pool, const float *x, int64_t n_tokens,
                          const kvs_mm_out *outs, int n_outs) {
    if (n_outs < 1 || n_outs > MM_MAX_OUTS || n_tokens < 1)
        return kvs_fail(KVS_ERR_INTERNAL, "matmul: bad arguments");
    mm_task tk = {.outs = outs, .n_outs = n_outs, .n_tokens = n_tokens};
    int64_t n_in = outs[0].w->n_in;
    bool want[KVS_TYPE_COUNT] = {0}, want_aux[KVS_TYPE_COUNT] = {0};
    size_t scratch_need = 0;
    /* the kernel of each output, and the activation forms they read */
    for (int j = 0; j < n_outs; j++) {
        const kvs_weight *w = outs[j].w;
        if (w->n_in != n_in) return kvs_fail(KVS_ERR_INTERNAL, "matmul: mixed input widths");
        const kvs_type_traits *tr = kvs_type_traits_of(w->type);
        if (!tr || !tr->vec_dot)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "matmul: no kernel for %s (%s)", w->name,
                            kvs_dtype_name(w->type));
        const uint32_t vt = tr->vec_dot_type;
        want[vt] = true;
        tk.x8[j] = w->x8 && tr->gemm_x8 && n_tokens >= tr->gemm_x8_min_rows;
        tk.gemm[j] = !tk.x8[j] && tr->gemm && n_tokens >= tr->gemm_min_rows;
        if (tk.gemm[j]) {
            size_t sb = (kvs_gemm_scratch_bytes(w->type, n_in) + 63) & ~(size_t)63;
            if (sb > scratch_need) scratch_need = sb;
        }
        if ((tk.gemm[j] || tk.x8[j]) && tr->gemm_xaux) want_aux[vt] = true;
        tk.n_tiles[j] = (w->n_out + MM_ROW_TILE - 1) / MM_ROW_TILE;
        tk.total_tiles += tk.n_tiles[j];
    }
    for (uint32_t vt = 0; vt < KVS_TYPE_COUNT; vt++) {
        if (!want[vt]) continue;
        const size_t stride = kvs_row_bytes(vt, n_in);
        const size_t need = stride * (size_t)n_tokens;
        if (need > m->xq_cap[vt]) {
            kvs_aligned_free(m->xq[vt]);
            m->xq[vt] = kvs_aligned_alloc(need);
            m->xq_cap[vt] = m->xq[vt] ? need : 0;
            if (!m->xq[vt]) return kvs_fail(KVS_ERR_NOMEM, "matmul: out of memory");
        }
        const size_t as = (size_t)(n_in / 32);
        if (want_aux[vt]) {
            const size_t aneed = as * (size_t)n_tokens * sizeof(kvs_q8_aux);
            if (aneed > m->aux_cap[vt]) {
                kvs_aligned_free(m->aux[vt]);
                m->aux[vt] = kvs_aligned_alloc(aneed);
                m->aux_cap[vt] = m->aux[vt] ? aneed : 0;
                if (!m->aux[vt]) return kvs_fail(KVS_ERR_NOMEM, "matmul: out of memory");
            }
        }
        conv_task ct = {vt, x, m->xq[vt], n_in, stride, want_aux[vt] ? m->aux[vt] : NULL, as};
        kvs_pool_for(pool, n_tokens, 8, conv_rows, &ct);
    }
    for (int j = 0; j < n_outs; j++) {
        const uint32_t vt = kvs_type_traits_of(outs[j].w->type)->vec_dot_type;
        tk.xq[j] = m->xq[vt];
        tk.xq_stride[j] = kvs_row_bytes(vt, n_in);
        if (want_aux[vt] && (tk.gemm[j] || tk.x8[j])) {
            tk.aux[j] = m->aux[vt];
            tk.aux_stride[j] = (size_t)(n_in / 32);
        }
    }
    if (scratch_need) {
        size_t need = scratch_need * (size_t)kvs_pool_size(pool);
        if (need > m->scratch_cap) {
            kvs_aligned_free(m->scratch);
            m->scratch = kvs_aligned_alloc(need);
            m->scratch_cap = m->scratch ? need : 0;
            if (!m->scratch) return kvs_fail(KVS_ERR_NOMEM, "matmul: out of memory");
        }
        tk.scratch = m->scratch;
        tk.scratch_stride = scratch_need;
    }
    /* one tile per grab when tiles are heavy (many rows through gemm), else
     * MM_GRABS grabs per thread: a few rows per step (decode, a batched
     * decode of up to 63 sequences) stream the weights, and a thread's grab is
     * one contiguous run of rows the prefetchers can follow (a 16-row tile
     * per grab alternated between the threads: 5 KB runs of SmolLM2's
     * weights, and a B=8 step 10-30% slower) */
    bool heavy = false;
    for (int j = 0; j < n_outs; j++) heavy |= tk.gemm[j] || (tk.x8[j] && n_tokens >= 64);
    tk.chunk = heavy ? 1 : tk.total_tiles / (MM_GRABS * (int64_t)kvs_pool_size(pool));
    if (tk.chunk < 1) tk.chunk = 1;
    atomic_init(&tk.next, 0);
    kvs_pool_run(pool, mm_worker, &tk);
    return KVS_OK;
}
