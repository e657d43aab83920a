/* Mixture-of-experts routing and routed-expert FFNs (see moe.h). */
#include "ops/moe.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ops/ops.h"

struct kvs_moe_ws {
    int64_t n_batch, n_embd, n_ff;
    float *xg, *g, *u, *y;   /* gathered rows, gate, up, down output */
    int64_t *rows;           /* token of each gathered row            */
    float *w;                /* routing weight of each gathered row   */
};

/* Index of the largest v[i] over allowed entries (v[i] > -inf), lowest index
 * on ties; -1 if none. */
static int32_t argmax_allowed(const float *v, const unsigned char *taken, int32_t n) {
    int32_t best = -1;
    for (int32_t i = 0; i < n; i++)
        if (!taken[i] && v[i] != -INFINITY && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

/* Restrict sel to the n_group_used best groups (others -> -inf). */
static void limit_groups(const kvs_moe_router *r, float *sel, float *gscore) {
    int32_t gs = r->n_expert / r->n_group;
    for (int32_t g = 0; g < r->n_group; g++) {
        const float *v = sel + (size_t)g * gs;
        float b1 = -INFINITY, b2 = -INFINITY;
        for (int32_t i = 0; i < gs; i++) {
            if (v[i] > b1) { b2 = b1; b1 = v[i]; }
            else if (v[i] > b2) b2 = v[i];
        }
        gscore[g] = r->bias && gs > 1 ? b1 + b2 : b1;
    }
    unsigned char keep[256] = {0}, taken[256] = {0}; /* n_group <= 256 (checked by callers) */
    for (int32_t k = 0; k < r->n_group_used; k++) {
        int32_t g = argmax_allowed(gscore, taken, r->n_group);
        if (g < 0) break;
        taken[g] = keep[g] = 1;
    }
    for (int32_t g = 0; g < r->n_group; g++)
        if (!keep[g])
            for (int32_t i = 0; i < gs; i++) sel[(size_t)g * gs + i] = -INFINITY;
}

void kvs_moe_route(const kvs_moe_router *r, const float *logits, int32_t *ids, float *weights, float *scratch) {
    const int32_t X = r->n_expert;
    float *score = scratch, *sel = scratch + X;
    if (r->gating == KVS_MOE_SIGMOID) {
        for (int32_t i = 0; i < X; i++) score[i] = 1.0f / (1.0f + expf(-logits[i]));
    } else {
        memcpy(score, logits, (size_t)X * sizeof *score);
        kvs_softmax(score, X);
    }
    for (int32_t i = 0; i < X; i++) sel[i] = score[i] + (r->bias ? r->bias[i] : 0.0f);
    if (r->n_group > 1 && r->n_group_used > 0 && r->n_group_used < r->n_group) {
        float gscore[256];
        limit_groups(r, sel, gscore);
    }
    unsigned char taken[1024] = {0}; /* n_expert <= 1024 (checked by callers) */
    float sum = 0.0f;
    for (int32_t k = 0; k < r->n_used; k++) {
        int32_t e = argmax_allowed(sel, taken, X);
        if (e < 0) e = 0; /* cannot happen with n_used <= experts allowed; keeps ids valid */
        taken[e] = 1;
        ids[k] = e;
        weights[k] = score[e];
        sum += score[e];
    }
    float f = r->scale;
    if (r->norm && sum > 0.0f) f /= sum;
    for (int32_t k = 0; k < r->n_used; k++) weights[k] *= f;
}

kvs_status kvs_moe_ws_new(int64_t n_batch, int64_t n_embd, int64_t n_ff, int32_t n_expert, kvs_moe_ws **out) {
    (void)n_expert;
    kvs_moe_ws *ws = kvs_calloc(1, sizeof *ws);
    if (!ws) return kvs_fail(KVS_ERR_NOMEM, "moe: out of memory");
    ws->n_batch = n_batch;
    ws->n_embd = n_embd;
    ws->n_ff = n_ff;
    ws->xg = kvs_aligned_alloc((size_t)(n_batch * n_embd) * sizeof(float));
    ws->y = kvs_aligned_alloc((size_t)(n_batch * n_embd) * sizeof(float));
    ws->g = kvs_aligned_alloc((size_t)(n_batch * n_ff) * sizeof(float));
    ws->u = kvs_aligned_alloc((size_t)(n_batch * n_ff) * sizeof(float));
    ws->rows = kvs_malloc((size_t)n_batch * sizeof *ws->rows);
    ws->w = kvs_malloc((size_t)n_batch * sizeof *ws->w);
    if (!ws->xg || !ws->y || !ws->g || !ws->u || !ws->rows || !ws->w) {
        kvs_moe_ws_free(ws);
        return kvs_fail(KVS_ERR_NOMEM, "moe: out of memory");
    }
    *out = ws;
    return KVS_OK;
}

void kvs_moe_ws_free(kvs_moe_ws *ws) {
    if (!ws) return;
    kvs_aligned_free(ws->xg);
    kvs_aligned_free(ws->y);
    kvs_aligned_free(ws->g);
    kvs_aligned_free(ws->u);
    kvs_free(ws->rows);
    kvs_free(ws->w);
    kvs_free(ws);
}

kvs_status kvs_moe_ffn(kvs_moe_ws *ws, kvs_matmul *mm, kvs_pool *pool, const kvs_moe_experts *ex, const float *x,
                       int64_t n, const int32_t *ids, const float *weights, int32_t n_used, float *out) {
    if (n > ws->n_batch || ex->n_embd != ws->n_embd || ex->n_ff > ws->n_ff)
        return kvs_fail(KVS_ERR_INTERNAL, "moe: %lld tokens exceed the workspace", (long long)n);
    const int64_t d = ex->n_embd, f = ex->n_ff;
    kvs_status st;
    /* one expert at a time, over the tokens routed to it: its weights are
     * read once for the whole chunk (a GEMM when several tokens share it) */
    for (int32_t e = 0; e < ex->n_expert; e++) {
        int64_t cnt = 0;
        for (int64_t t = 0; t < n; t++)
            for (int32_t j = 0; j < n_used; j++)
                if (ids[t * n_used + j] == e) {
                    ws->rows[cnt] = t;
                    ws->w[cnt] = weights[t * n_used + j];
                    memcpy(ws->xg + cnt * d, x + t * d, (size_t)d * sizeof(float));
                    cnt++;
                }
        if (!cnt) continue;
        kvs_mm_out gu[2] = {
            {.w = &ex->gate[e], .y = ws->g, .y_stride = f},
            {.w = &ex->up[e], .y = ws->u, .y_stride = f},
        };
        if ((st = kvs_matmul_run(mm, pool, ws->xg, cnt, gu, 2)) != KVS_OK) return st;
        kvs_swiglu(ws->g, ws->g, ws->u, cnt * f);
        kvs_mm_out dn = {.w = &ex->down[e], .y = ws->y, .y_stride = d};
        if ((st = kvs_matmul_run(mm, pool, ws->g, cnt, &dn, 1)) != KVS_OK) return st;
        for (int64_t r = 0; r < cnt; r++) {
            float *o = out + ws->rows[r] * d;
            const float *yr = ws->y + r * d;
            for (int64_t i = 0; i < d; i++) o[i] += ws->w[r] * yr[i];
        }
    }
    return KVS_OK;
}
