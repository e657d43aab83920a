/* Attention: float64 reference and the tiled online-softmax kernel. */
#include "attn/attn.h"

#include <math.h>
#include <string.h>

#include "attn/attn_simd.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/error.h"

#define ATTN_TILE_MAX 64 /* key rows dequantized per tile (upper bound) */
#define ATTN_TILE_BYTES 16384 /* K+V f32 tile kept within L1            */
#define ATTN_QBLOCK 8    /* queries sharing a tile during prefill  */
#define ATTN_MAX_ROWS 128 /* query rows (queries x group) per item  */
#define ATTN_MIN_SEG 256 /* smallest decode segment per thread     */

/* ---- vector primitives: scalar ------------------------------------------ */

static float vec_dot_scalar(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static void vec_axpy_scalar(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}
static void vec_scale_scalar(float *y, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= a;
}
static float vec_exp_sum_scalar(float *y, const float *x, float m, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) { y[i] = expf(x[i] - m); s += y[i]; }
    return s;
}
static void tile_scalar(const float *const *qrows, int R, const float *k, const float *v, const int *lo,
                        const int *hi, float scale, float *state, size_t state_stride, int dk, int dv,
                        float *scratch);
static const kvs_attn_vec g_vec_scalar = {vec_dot_scalar, vec_axpy_scalar, vec_scale_scalar,
                                          vec_exp_sum_scalar, tile_scalar};

void kvs_attn_tile_generic(const kvs_attn_vec *vec, const float *const *qrows, int R, const float *k,
                           const float *v, const int *lo, const int *hi, float scale, float *state,
                           size_t state_stride, int dk, int dv, float *scratch) {
    for (int r = 0; r < R; r++) {
        int a = lo[r], b = hi[r];
        if (a >= b) continue;
        const float *q = qrows[r];
        float *st = state + (size_t)r * state_stride;
        float tmax = -INFINITY;
        for (int t = a; t < b; t++) {
            float sc = vec->dot(q, k + (size_t)t * dk, dk) * scale;
            scratch[t - a] = sc;
            if (sc > tmax) tmax = sc;
        }
        float m_new = tmax > st[0] ? tmax : st[0];
        if (st[0] != -INFINITY && m_new > st[0]) {
            float corr = expf(st[0] - m_new);
            st[1] *= corr;
            vec->scale(st + 2, corr, dv);
        }
        st[0] = m_new;
        st[1] += vec->exp_sum(scratch, scratch, m_new, b - a);
        for (int t = a; t < b; t++) vec->axpy(st + 2, scratch[t - a], v + (size_t)t * dv, dv);
    }
}

static void tile_scalar(const float *const *qrows, int R, const float *k, const float *v, const int *lo,
                        const int *hi, float scale, float *state, size_t state_stride, int dk, int dv,
                        float *scratch) {
    kvs_attn_tile_generic(&g_vec_scalar, qrows, R, k, v, lo, hi, scale, state, state_stride, dk, dv, scratch);
}
const kvs_attn_vec *kvs_attn_vec_scalar(void) { return &g_vec_scalar; }

const kvs_attn_vec *kvs_attn_vec_get(void) {
    return kvs_cpu()->avx2 ? kvs_attn_vec_avx2() : &g_vec_scalar;
}

/* ---- visibility ---------------------------------------------------------- */

/* Key positions [*lo, *hi) visible to a query at position qp. */
static inline void visible_range(const kvs_attn_args *a, int32_t qp, int64_t *lo, int64_t *hi) {
    int64_t h = (int64_t)qp + 1;
    if (h > a->n_kv) h = a->n_kv;
    int64_t l = 0;
    if (a->window && (int64_t)qp - (int64_t)a->window + 1 > 0) l = (int64_t)qp - a->window + 1;
    *lo = l;
    *hi = h;
}

/* ---- float64 reference --------------------------------------------------- */

void kvs_attn_ref(const kvs_attn_args *a) {
    const kvs_kv_layer *L = a->kv;
    const kvs_kv_scheme *s = &L->scheme;
    int32_t dk = (int32_t)s->head_dim_k, dv = (int32_t)s->head_dim_v;
    int32_t group = a->n_head / (int32_t)s->n_kv_heads;
    const kvs_type_traits *kt = kvs_type_traits_ref(s->k_type), *vt = kvs_type_traits_ref(s->v_type);
    float *krow = kvs_malloc(sizeof(float) * (size_t)(dk + dv));
    double *sc = kvs_malloc(sizeof(double) * (a->n_kv ? a->n_kv : 1));
    double *acc = kvs_malloc(sizeof(double) * (size_t)dv);
    if (!krow || !sc || !acc) { kvs_free(krow); kvs_free(sc); kvs_free(acc); return; }
    float *vrow = krow + dk;
    for (int64_t i = 0; i < a->n_q; i++) {
        int64_t lo, hi;
        visible_range(a, a->q_pos[i], &lo, &hi);
        for (int32_t h = 0; h < a->n_head; h++) {
            int32_t kh = h / group;
            const float *q = a->q + (i * a->n_head + h) * dk;
            double m = -INFINITY;
            for (int64_t p = lo; p < hi; p++) {
                kt->to_float(L->k + kh * L->k_head_stride + (size_t)p * L->k_row, krow, dk);
                double d = 0.0;
                for (int32_t j = 0; j < dk; j++) d += (double)q[j] * krow[j];
                sc[p] = d * a->scale;
                if (sc[p] > m) m = sc[p];
            }
            double sum = 0.0;
            for (int32_t j = 0; j < dv; j++) acc[j] = 0.0;
            for (int64_t p = lo; p < hi; p++) {
                double w = exp(sc[p] - m);
                sum += w;
                vt->to_float(L->v + kh * L->v_head_stride + (size_t)p * L->v_row, vrow, dv);
                for (int32_t j = 0; j < dv; j++) acc[j] += w * vrow[j];
            }
            float *o = a->out + (i * a->n_head + h) * dv;
            for (int32_t j = 0; j < dv; j++) o[j] = hi > lo ? (float)(acc[j] / sum) : 0.0f;
        }
    }
    kvs_free(krow); kvs_free(sc); kvs_free(acc);
}

/* ---- fast kernel --------------------------------------------------------- */

struct kvs_attn {
    int n_threads;
    float *thread_buf;      /* per thread: K tile, V tile, scores */
    size_t thread_floats;
    float *partial;         /* per item: (qblock*group) x (m, l, acc[dv]) */
    size_t partial_floats;
};

kvs_status kvs_attn_new(int n_threads, kvs_attn **out) {
    *out = kvs_calloc(1, sizeof(kvs_attn));
    if (!*out) return kvs_fail(KVS_ERR_NOMEM, "attention scratch: out of memory");
    (*out)->n_threads = n_threads < 1 ? 1 : n_threads;
    return KVS_OK;
}

void kvs_attn_free(kvs_attn *at) {
    if (!at) return;
    kvs_aligned_free(at->thread_buf);
    kvs_aligned_free(at->partial);
    kvs_free(at);
}

typedef struct attn_task {
    const kvs_attn_args *a;
    kvs_attn *at;
    const kvs_attn_vec *vec;
    int32_t group, dk, dv, tile;
    int64_t qblock;         /* queries per item: ATTN_QBLOCK, fewer for wide groups */
    int64_t n_qblocks, n_seg, n_items, seg_len;
    size_t state_floats;    /* floats of one (query, head) state: 2 + dv */
    size_t item_floats;     /* qblock * group * state_floats */
} attn_task;

/* Keys per tile: the f32 K and V tiles together stay within L1. */
static int tile_rows(int dk, int dv) {
    int t = ATTN_TILE_BYTES / ((dk + dv) * (int)sizeof(float));
    t &= ~3;
    return t < 8 ? 8 : t > ATTN_TILE_MAX ? ATTN_TILE_MAX : t;
}

/* One item: KV head kh, queries [q0, q1), key positions [s0, s1). Writes the
 * unnormalised state (m, l, acc) for each (query, head of the group). */
static void attn_item(const attn_task *tk, float *tbuf, int64_t kh, int64_t q0, int64_t q1,
                      int64_t s0, int64_t s1, float *state) {
    const kvs_attn_args *a = tk->a;
    const kvs_kv_layer *L = a->kv;
    const kvs_type_traits *kt = kvs_type_traits_of(L->scheme.k_type);
    const kvs_type_traits *vt = kvs_type_traits_of(L->scheme.v_type);
    int32_t group = tk->group, dk = tk->dk, dv = tk->dv, T = tk->tile;
    float *kbuf = tbuf, *vbuf = tbuf + (size_t)T * dk, *scratch = vbuf + (size_t)T * dv;
    int64_t nq = q1 - q0;
    int R = (int)(nq * group);
    const float *qrows[ATTN_MAX_ROWS];
    int64_t qlo[ATTN_MAX_ROWS], qhi[ATTN_MAX_ROWS];
    int lo[ATTN_MAX_ROWS], hi[ATTN_MAX_ROWS];
    int64_t ulo = INT64_MAX, uhi = 0; /* union of visible ranges, clipped to the segment */
    for (int64_t i = 0; i < nq; i++) {
        visible_range(a, a->q_pos[q0 + i], &qlo[i], &qhi[i]);
        if (qlo[i] < s0) qlo[i] = s0;
        if (qhi[i] > s1) qhi[i] = s1;
        if (qlo[i] < ulo) ulo = qlo[i];
        if (qhi[i] > uhi) uhi = qhi[i];
        for (int32_t g = 0; g < group; g++)
            qrows[i * group + g] = a->q + ((q0 + i) * a->n_head + kh * group + g) * dk;
    }
    for (int r = 0; r < R; r++) {
        float *st = state + (size_t)r * tk->state_floats;
        st[0] = -INFINITY; st[1] = 0.0f;
        memset(st + 2, 0, sizeof(float) * (size_t)dv);
    }
    const uint8_t *kbase = L->k + kh * L->k_head_stride, *vbase = L->v + kh * L->v_head_stride;
    for (int64_t t0 = ulo; t0 < uhi; t0 += T) {
        int64_t t1 = t0 + T < uhi ? t0 + T : uhi;
        int64_t nt = t1 - t0;
        for (int64_t i = 0; i < nq; i++) {
            int64_t l = qlo[i] > t0 ? qlo[i] : t0, h = qhi[i] < t1 ? qhi[i] : t1;
            for (int32_t g = 0; g < group; g++) {
                lo[i * group + g] = l < h ? (int)(l - t0) : 0;
                hi[i * group + g] = l < h ? (int)(h - t0) : 0;
            }
        }
        const float *kt_f = kbuf, *vt_f = vbuf;
        if (L->scheme.k_type == KVS_TYPE_F32) kt_f = (const float *)(kbase + (size_t)t0 * L->k_row);
        else for (int64_t t = 0; t < nt; t++) kt->to_float(kbase + (size_t)(t0 + t) * L->k_row, kbuf + t * dk, dk);
        if (L->scheme.v_type == KVS_TYPE_F32) vt_f = (const float *)(vbase + (size_t)t0 * L->v_row);
        else for (int64_t t = 0; t < nt; t++) vt->to_float(vbase + (size_t)(t0 + t) * L->v_row, vbuf + t * dv, dv);
        tk->vec->tile(qrows, R, kt_f, vt_f, lo, hi, a->scale, state, tk->state_floats, dk, dv, scratch);
    }
}

static void attn_worker(void *ctx, int ith, int nth) {
    const attn_task *tk = ctx;
    int64_t lo, hi;
    kvs_split(tk->n_items, ith, nth, &lo, &hi);
    float *tbuf = tk->at->thread_buf + (size_t)ith * tk->at->thread_floats;
    for (int64_t it = lo; it < hi; it++) {
        /* item = ((kh * n_qblocks) + qb) * n_seg + seg */
        int64_t seg = it % tk->n_seg, rest = it / tk->n_seg;
        int64_t qb = rest % tk->n_qblocks, kh = rest / tk->n_qblocks;
        int64_t q0 = qb * tk->qblock, q1 = q0 + tk->qblock < tk->a->n_q ? q0 + tk->qblock : tk->a->n_q;
        int64_t s0 = seg * tk->seg_len, s1 = s0 + tk->seg_len;
        attn_item(tk, tbuf, kh, q0, q1, s0, s1, tk->at->partial + (size_t)it * tk->item_floats);
    }
}

kvs_status kvs_attn_run(kvs_attn *at, kvs_pool *pool, const kvs_attn_args *a) {
    const kvs_kv_scheme *s = &a->kv->scheme;
    if (s->store != KVS_KV_STORE_FULL || s->layout != KVS_KV_LAYOUT_BLOCK)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "attention: layout not supported");
    attn_task tk = {.a = a, .at = at, .vec = kvs_attn_vec_get()};
    tk.dk = (int32_t)s->head_dim_k;
    tk.dv = (int32_t)s->head_dim_v;
    int32_t n_kv_heads = (int32_t)s->n_kv_heads;
    if (n_kv_heads <= 0 || a->n_head % n_kv_heads)
        return kvs_fail(KVS_ERR_INTERNAL, "attention: %d heads over %d kv heads", a->n_head, n_kv_heads);
    tk.group = a->n_head / n_kv_heads;
    if (tk.group > ATTN_MAX_ROWS)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "attention: %d query heads per KV head (max %d)", tk.group, ATTN_MAX_ROWS);
    if (tk.dk % 8 || tk.dv % 8)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "attention: head sizes %d/%d must be multiples of 8", tk.dk, tk.dv);
    tk.qblock = ATTN_MAX_ROWS / tk.group < ATTN_QBLOCK ? ATTN_MAX_ROWS / tk.group : ATTN_QBLOCK;
    tk.tile = tile_rows(tk.dk, tk.dv);
    int nth = kvs_pool_size(pool);
    tk.n_qblocks = (a->n_q + tk.qblock - 1) / tk.qblock;
    tk.n_seg = 1;
    if (a->n_q == 1 && nth > 1) {
        int64_t want = (2 * nth + n_kv_heads - 1) / n_kv_heads; /* >= 2 items per thread */
        int64_t max_seg = (a->n_kv + ATTN_MIN_SEG - 1) / ATTN_MIN_SEG;
        tk.n_seg = want < max_seg ? want : max_seg;
        if (tk.n_seg < 1) tk.n_seg = 1;
    }
    tk.seg_len = ((int64_t)a->n_kv + tk.n_seg - 1) / tk.n_seg;
    if (tk.seg_len < 1) tk.seg_len = 1;
    tk.n_items = (int64_t)n_kv_heads * tk.n_qblocks * tk.n_seg;
    tk.state_floats = 2 + (size_t)tk.dv;
    tk.item_floats = (size_t)tk.qblock * tk.group * tk.state_floats;

    size_t tf = (size_t)tk.tile * (tk.dk + tk.dv) + (size_t)tk.tile + 16;
    if (tf > at->thread_floats || nth > at->n_threads) {
        kvs_aligned_free(at->thread_buf);
        at->n_threads = nth > at->n_threads ? nth : at->n_threads;
        at->thread_buf = kvs_aligned_alloc(sizeof(float) * tf * (size_t)at->n_threads);
        at->thread_floats = at->thread_buf ? tf : 0;
        if (!at->thread_buf) return kvs_fail(KVS_ERR_NOMEM, "attention scratch: out of memory");
    }
    size_t pf = tk.item_floats * (size_t)tk.n_items;
    if (pf > at->partial_floats) {
        kvs_aligned_free(at->partial);
        at->partial = kvs_aligned_alloc(sizeof(float) * pf);
        at->partial_floats = at->partial ? pf : 0;
        if (!at->partial) return kvs_fail(KVS_ERR_NOMEM, "attention scratch: out of memory");
    }
    kvs_pool_run(pool, attn_worker, &tk);

    /* merge segments and normalise */
    for (int64_t kh = 0; kh < n_kv_heads; kh++) {
        for (int64_t qb = 0; qb < tk.n_qblocks; qb++) {
            int64_t q0 = qb * tk.qblock, q1 = q0 + tk.qblock < a->n_q ? q0 + tk.qblock : a->n_q;
            for (int64_t i = q0; i < q1; i++) {
                for (int32_t g = 0; g < tk.group; g++) {
                    size_t off = (size_t)((i - q0) * tk.group + g) * tk.state_floats;
                    int64_t it0 = (kh * tk.n_qblocks + qb) * tk.n_seg;
                    float m = -INFINITY;
                    for (int64_t sg = 0; sg < tk.n_seg; sg++) {
                        float ms = at->partial[(size_t)(it0 + sg) * tk.item_floats + off];
                        if (ms > m) m = ms;
                    }
                    float *o = a->out + (i * a->n_head + kh * tk.group + g) * tk.dv;
                    memset(o, 0, sizeof(float) * (size_t)tk.dv);
                    if (m == -INFINITY) continue;
                    float l = 0.0f;
                    for (int64_t sg = 0; sg < tk.n_seg; sg++) {
                        const float *st = at->partial + (size_t)(it0 + sg) * tk.item_floats + off;
                        if (st[0] == -INFINITY) continue;
                        float w = expf(st[0] - m);
                        l += st[1] * w;
                        tk.vec->axpy(o, w, st + 2, tk.dv);
                    }
                    tk.vec->scale(o, 1.0f / l, tk.dv);
                }
            }
        }
    }
    return KVS_OK;
}
