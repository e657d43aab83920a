/* Attention: float64 reference and the tiled online-softmax kernel. */
#include "attn/attn.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "attn/attn_latent.h"
#include "attn/attn_simd.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/error.h"
#include "core/tq.h"

#define ATTN_TILE_MAX 64 /* key rows dequantized per tile (upper bound) */
#define ATTN_TILE_BYTES 16384 /* K+V f32 tile kept within L1            */
#define ATTN_TILE_ALIAS_BYTES 147456 /* latent K(=V) f32 tile, in L2: 64 rows of 576 */
#define ATTN_FUSED_CHUNK 64 /* rows per fused-kernel call (decode)    */
#define ATTN_QBLOCK 32   /* queries sharing a decoded tile in prefill */
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
                        const int *hi, float scale, float *state, size_t state_stride, int dk, int dv, int ldv,
                        float *scratch);
static const kvs_attn_vec g_vec_scalar = {vec_dot_scalar, vec_axpy_scalar, vec_scale_scalar,
                                          vec_exp_sum_scalar, tile_scalar, NULL};

void kvs_attn_tile_generic(const kvs_attn_vec *vec, const float *const *qrows, int R, const float *k,
                           const float *v, const int *lo, const int *hi, float scale, float *state,
                           size_t state_stride, int dk, int dv, int ldv, float *scratch) {
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
        for (int t = a; t < b; t++) vec->axpy(st + 2, scratch[t - a], v + (size_t)t * ldv, dv);
    }
}

static void tile_scalar(const float *const *qrows, int R, const float *k, const float *v, const int *lo,
                        const int *hi, float scale, float *state, size_t state_stride, int dk, int dv, int ldv,
                        float *scratch) {
    kvs_attn_tile_generic(&g_vec_scalar, qrows, R, k, v, lo, hi, scale, state, state_stride, dk, dv, ldv, scratch);
}
const kvs_attn_vec *kvs_attn_vec_scalar(void) { return &g_vec_scalar; }

const kvs_attn_vec *kvs_attn_vec_get(void) {
    const kvs_cpu_features *f = kvs_cpu();
    return f->avx512 ? kvs_attn_vec_avx512() : f->avx2 ? kvs_attn_vec_avx2() : &g_vec_scalar;
}

/* ---- visibility ---------------------------------------------------------- */

/* Visible key positions of a query at qp, as up to two intervals [lo, hi):
 * the sinks (windowed attention only) and the causal (windowed) range. */
typedef struct vis { int64_t lo[2], hi[2]; } vis;

static inline vis visible(const kvs_attn_args *a, int32_t qp) {
    vis v = {{0, 0}, {0, 0}};
    int64_t hi = (int64_t)qp + 1;
    if (!a->window) { v.hi[1] = hi; return v; }
    int64_t S = a->sinks;
    v.hi[0] = S < hi ? S : hi;
    int64_t lo = (int64_t)qp - a->window + 1;
    v.lo[1] = lo > S ? lo : S;
    v.hi[1] = hi;
    if (v.lo[1] > v.hi[1]) v.lo[1] = v.hi[1];
    return v;
}

/* Is this segment's V the first dv elements of its K rows (latent/MLA)? */
static bool v_aliases_k(const kvs_kv_segment *sg, int dk, int dv) {
    return !sg->decode && sg->v == sg->k && sg->v_row == sg->k_row && sg->v_type == sg->k_type &&
           sg->v_head_stride == sg->k_head_stride && dv <= dk;
}

/* ---- int8 query for q8_0/q4_0/tq keys ----------------------------------- */

/* A decode (one query) over q8_0/q4_0 keys, and over rotated-codebook (tq)
 * keys, scores with integer dot products (AVX2 for q8_0/q4_0; AVX-512 VNNI
 * for tq keys of head size 64, attn_tq_vnni.c), so the query is rounded first, in blocks of 32 elements like
 * the keys: each block to int8 with one f32 scale, qs = max|q| / 127,
 * qi = round(q / qs) (nearest, ties to even), and the scores use qi * qs in
 * place of q (head sizes that are not multiples of 32 end in a short block). Every path of a
 * decode (fused integer kernel, f32 tiles, the float64 reference) uses the
 * same rounded query, so they agree to float rounding; the rounding itself
 * (error <= 1/254 of the block's largest element, as for q8_0 keys) is the format's cost, as with llama.cpp's
 * q8_0 "vec_dot_type". Prefill (several queries) keeps the f32 query.
 * Latent rows (V aliasing K) are not rounded. */
static bool int8_keys(const kvs_kv_segment *sg, int dk, int dv) {
    return !sg->decode && (sg->k_type == KVS_TYPE_Q8_0 || sg->k_type == KVS_TYPE_Q4_0 || kvs_tq_bits(sg->k_type, 0)) &&
           !v_aliases_k(sg, dk, dv);
}

void kvs_attn_round_query(const float *q, int d, int8_t *qi, float *qs, float *qr) {
    for (int b = 0; b * 32 < d; b++) {
        const int i0 = 32 * b, i1 = i0 + 32 < d ? i0 + 32 : d;
        float amax = 0.0f;
        for (int i = i0; i < i1; i++) amax = fabsf(q[i]) > amax ? fabsf(q[i]) : amax;
        const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
        for (int i = i0; i < i1; i++) {
            /* round to nearest even by the 1.5 * 2^23 sum (|q * inv| <= 127.5, so
             * exact, and what nearbyintf gives), clamped; vectorizes, no libm call */
            float r = (q[i] * inv + 12582912.0f) - 12582912.0f;
            r = r != r ? 0.0f : r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r; /* NaN (a non-finite q): 0 */
            qi[i] = (int8_t)r;
            qr[i] = r * s;
        }
        qs[b] = s;
    }
}

/* ---- float64 reference --------------------------------------------------- */

void kvs_attn_ref(const kvs_attn_args *a) {
    int32_t dk = a->head_dim_k, dv = a->head_dim_v;
    int32_t group = a->n_head / a->n_kv_heads;
    int64_t n_keys = 0;
    for (int s = 0; s < a->n_segs; s++) n_keys += a->segs[s].n;
    float *row = kvs_malloc(sizeof(float) * (size_t)(dk + dv) * 2); /* row, then the rounded query */
    int8_t *qi = kvs_malloc((size_t)dk);
    float *qsb = kvs_malloc(sizeof(float) * (size_t)(dk / 32 + 1));
    double *sc = kvs_malloc(sizeof(double) * (size_t)(n_keys ? n_keys : 1));
    double *acc = kvs_malloc(sizeof(double) * (size_t)dv);
    if (!row || !qi || !qsb || !sc || !acc) {
        kvs_free(row); kvs_free(qi); kvs_free(qsb); kvs_free(sc); kvs_free(acc);
        return;
    }
    float *qr = row + dk + dv;
    for (int64_t i = 0; i < a->n_q; i++) {
        vis v = visible(a, a->q_pos[i]);
        for (int32_t h = 0; h < a->n_head; h++) {
            int32_t kh = h / group;
            const float *q = a->q + (i * a->n_head + h) * dk;
            kvs_attn_round_query(q, dk, qi, qsb, qr);
            double m = -INFINITY, sum = 0.0;
            int64_t j = 0;
            for (int s = 0; s < a->n_segs; s++) {
                const kvs_kv_segment *g = &a->segs[s];
                const kvs_type_traits *kt = kvs_type_traits_ref(g->k_type);
                const float *qq = a->n_q == 1 && int8_keys(g, dk, dv) ? qr : q;
                for (int64_t t = 0; t < g->n; t++, j++) {
                    int64_t p = g->pos0 + t;
                    sc[j] = -INFINITY;
                    if (!((p >= v.lo[0] && p < v.hi[0]) || (p >= v.lo[1] && p < v.hi[1]))) continue;
                    if (g->decode) g->decode(g, true, true, kh, t, 1, row);
                    else kt->to_float(g->k + kh * g->k_head_stride + (size_t)t * g->k_row, row, dk);
                    double d = 0.0;
                    for (int32_t e = 0; e < dk; e++) d += (double)qq[e] * row[e];
                    sc[j] = d * a->scale;
                    if (sc[j] > m) m = sc[j];
                }
            }
            for (int32_t e = 0; e < dv; e++) acc[e] = 0.0;
            j = 0;
            for (int s = 0; s < a->n_segs; s++) {
                const kvs_kv_segment *g = &a->segs[s];
                const kvs_type_traits *vt = kvs_type_traits_ref(g->v_type);
                for (int64_t t = 0; t < g->n; t++, j++) {
                    if (sc[j] == -INFINITY) continue;
                    double w = exp(sc[j] - m);
                    sum += w;
                    if (g->decode) g->decode(g, false, true, kh, t, 1, row + dk);
                    else vt->to_float(g->v + kh * g->v_head_stride + (size_t)t * g->v_row, row + dk, dv);
                    for (int32_t e = 0; e < dv; e++) acc[e] += w * row[dk + e];
                }
            }
            float *o = a->out + (i * a->n_head + h) * dv;
            for (int32_t e = 0; e < dv; e++) o[e] = sum > 0 ? (float)(acc[e] / sum) : 0.0f;
        }
    }
    kvs_free(row); kvs_free(qi); kvs_free(qsb); kvs_free(sc); kvs_free(acc);
}

/* ---- fast kernel --------------------------------------------------------- */

struct kvs_attn {
    int n_threads;
    float *thread_buf;      /* per thread: K tile, V tile, scores */
    size_t thread_floats;
    float *partial;         /* per item: (qblock*group) x (m, l, acc[dv]) */
    size_t partial_floats;
    float *qround;          /* decode over q8_0/q4_0 keys: (n_head, dk) rounded query, */
    int8_t *qint;           /* (n_head, dk) its int8 values, (n_head, nqb) block scales */
    float *qscale;
    size_t q_cap;           /* floats (bytes) qround (qint) hold, over all calls of a dispatch */
    size_t qs_cap;          /* floats qscale holds */
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
    kvs_free(at->qround);
    kvs_free(at->qint);
    kvs_free(at->qscale);
    kvs_free(at);
}

typedef struct attn_task {
    const kvs_attn_args *a;
    kvs_attn *at;
    const kvs_attn_vec *vec;
    kvs_attn_latent_fn latent; /* many-head latent decode (attn_latent.h) */
    int32_t group, dk, dv, tile, tile_alias; /* tile rows: K+V tiles; latent K-only tiles */
    size_t tile_floats;     /* K+V tile floats at the start of each thread buffer */
    int64_t qblock;         /* queries per item: ATTN_QBLOCK, fewer for wide groups */
    int64_t n_qblocks, n_split, n_items, split_len, n_keys;
    size_t state_floats;    /* floats of one (query, head) state: 2 + dv */
    size_t item_floats;     /* qblock * group * state_floats */
    bool qround;            /* qround/qint/qscale hold the rounded query */
    int32_t n_qblk;         /* its scales per head row: ceil(dk / 32) */
    size_t thread_need;     /* floats of one thread buffer this task needs */
    float *partial;         /* (n_items, item_floats) states: this task's part of at->partial */
    float *qround_buf;      /* (n_head, dk) / (n_head, dk) / (n_head, n_qblk): its part of at->q* */
    int8_t *qint_buf;
    float *qscale_buf;
} attn_task;

/* Keys per tile: the f32 K and V tiles together stay within L1. */
static int tile_rows(int dk, int dv) {
    int t = ATTN_TILE_BYTES / ((dk + dv) * (int)sizeof(float));
    t &= ~3;
    return t < 8 ? 8 : t > ATTN_TILE_MAX ? ATTN_TILE_MAX : t;
}

/* Keys per latent tile (V aliases K): more rows per tile amortise the
 * accumulator loads of the p*V product over many heads (L2-resident). */
static int tile_rows_alias(int dk) {
    int t = ATTN_TILE_ALIAS_BYTES / (dk * (int)sizeof(float));
    t &= ~3;
    return t < 8 ? 8 : t > ATTN_TILE_MAX ? ATTN_TILE_MAX : t;
}

/* Ask for bytes [p, p + n) in L2 (one prefetch per 64-byte line). */
static void prefetch_rows(const uint8_t *p, size_t n) {
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch(p + o, 0, 2);
}


/* Per-channel (KIVI) segment: key group blocks + per-token value rows. */
static bool kivi_segment(const kvs_kv_segment *sg) {
    return sg->decode && sg->k_type == KVS_TYPE_COUNT && sg->v_type == KVS_TYPE_COUNT && sg->group > 0;
}

/* Ask for the K and V bytes of rows [t0, t0 + n) of KV head kh of a segment
 * (block rows, or the per-channel key groups holding them) to come to L2. A
 * decode streams every row once from DRAM; the hardware prefetchers stop at
 * 4 KiB page edges and pages of the cache are separate allocations, so the
 * kernel asks for the next chunk while it computes on this one. */
static void prefetch_chunk(const kvs_kv_segment *sg, int64_t kh, int64_t t0, int64_t n) {
    if (n <= 0) return;
    const uint8_t *k = sg->k + kh * sg->k_head_stride, *v = sg->v + kh * sg->v_head_stride;
    if (kivi_segment(sg)) {
        const int64_t G = sg->group, g0 = t0 / G, g1 = (t0 + n + G - 1) / G;
        prefetch_rows(k + (size_t)g0 * sg->k_row, (size_t)(g1 - g0) * sg->k_row);
    } else {
        prefetch_rows(k + (size_t)t0 * sg->k_row, (size_t)n * sg->k_row);
    }
    prefetch_rows(v + (size_t)t0 * sg->v_row, (size_t)n * sg->v_row);
}

/* Decode (one query, so every row of the group sees the same keys): feed
 * the visible rows [t_lo, t_hi) of a segment to the fused kernel in chunks
 * (per-channel chunks stop at key group edges), prefetching the next chunk,
 * or the first rows [0, next_n) of the next segment `next` after the last.
 * Returns false, having done nothing, when the fused kernel does not take
 * this segment. */
static bool fused_segment(const attn_task *tk, const kvs_kv_segment *sg, int64_t kh, const vis *qv,
                          const float *const *qrows, const int8_t *const *qi, const float *const *qs, void *qprep,
                          bool *qprep_ok, int R, int64_t t_lo, int64_t t_hi, float *state, float *scratch,
                          const kvs_kv_segment *next, int64_t next_n) {
    const int32_t dk = tk->dk, dv = tk->dv;
    const bool kivi = kivi_segment(sg);
    if (sg->decode && !kivi) return false;
    kvs_attn_rows rw = {.k_row = sg->k_row, .v_row = sg->v_row, .k_type = sg->k_type, .v_type = sg->v_type,
                        .group = (int)sg->group, .k_bits = (int)sg->k_bits, .v_bits = (int)sg->v_bits,
                        .v_sym = sg->v_sym != 0, .qi = qi, .qs = qs, .qprep = qi ? qprep : NULL,
                        .qprep_ok = qprep_ok};
    const uint8_t *kbase = sg->k + kh * sg->k_head_stride, *vbase = sg->v + kh * sg->v_head_stride;
    bool first = true;
    for (int w = 0; w < 2; w++) {
        int64_t l = qv->lo[w] - sg->pos0, h = qv->hi[w] - sg->pos0;
        if (l < t_lo) l = t_lo;
        if (h > t_hi) h = t_hi;
        for (int64_t t0 = l; t0 < h; t0 += rw.n) {
            int64_t nt = h - t0 < ATTN_FUSED_CHUNK ? h - t0 : ATTN_FUSED_CHUNK;
            if (kivi) {
                const int64_t G = sg->group, off = t0 % G;
                if (nt > G - off) nt = G - off;
                rw.k = kbase + (size_t)(t0 / G) * sg->k_row;
                rw.k_t0 = (int)off;
            } else {
                rw.k = kbase + (size_t)t0 * sg->k_row;
            }
            rw.v = vbase + (size_t)t0 * sg->v_row;
            rw.n = (int)nt;
            /* the next chunk: the rest of this segment, else the next segment's first rows */
            const kvs_kv_segment *ps = t0 + nt < h ? sg : w == 1 ? next : NULL;
            const int64_t pt = ps == sg ? t0 + nt : 0;
            int64_t pn = ps == sg ? h - t0 - nt : next_n;
            if (pn > ATTN_FUSED_CHUNK) pn = ATTN_FUSED_CHUNK;
            rw.pf_k = rw.pf_v = NULL;
            rw.pf_n = 0;
            if (ps && kivi) {
                prefetch_chunk(ps, kh, pt, pn); /* per-channel kernels take no prefetch pointers */
            } else if (ps && !ps->decode && ps->k_row == sg->k_row && ps->v_row == sg->v_row) {
                rw.pf_k = ps->k + kh * ps->k_head_stride + (size_t)pt * ps->k_row; /* spread over the chunk */
                rw.pf_v = ps->v + kh * ps->v_head_stride + (size_t)pt * ps->v_row;
                rw.pf_n = (int)pn;
            }
            if (!tk->vec->fused(&rw, qrows, R, tk->a->scale, state, tk->state_floats, dk, dv, scratch)) {
                if (first) return false;
                /* same segment, same formats: cannot change mid-way */
            }
            first = false;
        }
    }
    return true;
}

/* Decode with many heads over latent segments (V aliases K): every visible
 * row range of the item's key span [r0, r1) goes to the latent kernel in one
 * call (scratch: the whole thread buffer). Returns false, having done
 * nothing, when a segment is not a latent view or the kernel does not take
 * its format. */
#define ATTN_LATENT_RANGES 64
static bool latent_item(const attn_task *tk, float *tbuf, const vis *qv, const float *const *qrows, int R,
                        int64_t r0, int64_t r1, float *state) {
    const kvs_attn_args *a = tk->a;
    kvs_attn_rows rws[ATTN_LATENT_RANGES];
    int n = 0;
    bool first = true;
    for (int s = 0; s < a->n_segs; s++)
        if (!v_aliases_k(&a->segs[s], tk->dk, tk->dv)) return false;
    int64_t base = 0;
    for (int s = 0; s < a->n_segs; base += a->segs[s].n, s++) {
        const kvs_kv_segment *sg = &a->segs[s];
        int64_t t_lo = r0 > base ? r0 - base : 0, t_hi = r1 - base < sg->n ? r1 - base : sg->n;
        if (t_lo >= t_hi) continue;
        for (int w = 0; w < 2; w++) {
            int64_t l = qv->lo[w] - sg->pos0, h = qv->hi[w] - sg->pos0;
            if (l < t_lo) l = t_lo;
            if (h > t_hi) h = t_hi;
            if (l >= h) continue;
            rws[n++] = (kvs_attn_rows){.k = sg->k + (size_t)l * sg->k_row, .v = sg->v + (size_t)l * sg->v_row,
                                       .k_row = sg->k_row, .v_row = sg->v_row, .k_type = sg->k_type,
                                       .v_type = sg->v_type, .n = (int)(h - l)};
            if (n == ATTN_LATENT_RANGES) {
                if (!tk->latent(rws, n, qrows, R, a->scale, state, tk->state_floats, tk->dk, tk->dv, tbuf) && first)
                    return false;
                first = false;
                n = 0;
            }
        }
    }
    if (n > 0 && !tk->latent(rws, n, qrows, R, a->scale, state, tk->state_floats, tk->dk, tk->dv, tbuf) && first)
        return false;
    return true;
}

/* One item: KV head kh, queries [q0, q1), the keys whose index in the
 * concatenated segments lies in [r0, r1). Writes the unnormalised state
 * (m, l, acc) of each (query, head of the group). */
static void attn_item(const attn_task *tk, float *tbuf, int64_t kh, int64_t q0, int64_t q1,
                      int64_t r0, int64_t r1, float *state) {
    const kvs_attn_args *a = tk->a;
    const int32_t group = tk->group, dk = tk->dk, dv = tk->dv;
    float *scratch = tbuf + tk->tile_floats;
    const int64_t nq = q1 - q0;
    const int R = (int)(nq * group);
    const float *qrows[ATTN_MAX_ROWS], *qrows_r[ATTN_MAX_ROWS];
    const int8_t *qi_rows[ATTN_MAX_ROWS];
    const float *qs_rows[ATTN_MAX_ROWS];
    _Alignas(64) unsigned char qprep[KVS_ATTN_QPREP_BYTES]; /* a kernel's form of the rounded query, this item */
    bool qprep_ok = false;
    vis qv[ATTN_MAX_ROWS];
    int lo[ATTN_MAX_ROWS], hi[ATTN_MAX_ROWS];
    int64_t ulo = INT64_MAX, uhi = INT64_MIN; /* union of visible positions of the block */
    for (int64_t i = 0; i < nq; i++) {
        qv[i] = visible(a, a->q_pos[q0 + i]);
        for (int w = 0; w < 2; w++) {
            if (qv[i].lo[w] >= qv[i].hi[w]) continue;
            if (qv[i].lo[w] < ulo) ulo = qv[i].lo[w];
            if (qv[i].hi[w] > uhi) uhi = qv[i].hi[w];
        }
        for (int32_t g = 0; g < group; g++) {
            const int64_t hr = (q0 + i) * a->n_head + kh * group + g; /* (query, head) row */
            qrows[i * group + g] = a->q + hr * dk;
            if (tk->qround) { /* decode: one query */
                qrows_r[g] = tk->qround_buf + hr * dk;
                qi_rows[g] = tk->qint_buf + hr * dk;
                qs_rows[g] = tk->qscale_buf + hr * tk->n_qblk;
            }
        }
    }
    for (int r = 0; r < R; r++) {
        float *st = state + (size_t)r * tk->state_floats;
        st[0] = -INFINITY; st[1] = 0.0f;
        memset(st + 2, 0, sizeof(float) * (size_t)dv);
    }
    /* a decode only: the scratch is sized for it, and a prefill keeps the
     * f32 query (its last query block may hold a single query) */
    if (a->n_q == 1 && R >= KVS_ATTN_LATENT_MIN_ROWS && latent_item(tk, tbuf, &qv[0], qrows, R, r0, r1, state))
        return;
    int64_t base = 0; /* key index of the current segment's first row */
    for (int s = 0; s < a->n_segs; base += a->segs[s].n, s++) {
        const kvs_kv_segment *sg = &a->segs[s];
        /* rows of this segment inside [r0, r1), then inside the visible union */
        int64_t t_lo = r0 > base ? r0 - base : 0, t_hi = r1 - base < sg->n ? r1 - base : sg->n;
        if (ulo - sg->pos0 > t_lo) t_lo = ulo - sg->pos0;
        if (uhi - sg->pos0 < t_hi) t_hi = uhi - sg->pos0;
        if (t_lo >= t_hi) continue;
        const bool rq = tk->qround && int8_keys(sg, dk, dv);
        const float *const *qq = rq ? qrows_r : qrows; /* the query this segment's scores use */
        if (nq == 1 && tk->vec->fused) {
            /* the next segment's first rows this item reads, for prefetching */
            const kvs_kv_segment *nx = s + 1 < a->n_segs && base + sg->n < r1 ? &a->segs[s + 1] : NULL;
            int64_t nx_n = nx ? (r1 - base - sg->n < nx->n ? r1 - base - sg->n : nx->n) : 0;
            if (fused_segment(tk, sg, kh, &qv[0], qq, rq ? qi_rows : NULL, qs_rows, qprep, &qprep_ok, R, t_lo, t_hi,
                              state, scratch, nx, nx_n))
                continue;
        }
        const bool alias = v_aliases_k(sg, dk, dv);
        const int T = alias ? tk->tile_alias : tk->tile;
        float *kbuf = tbuf, *vbuf = tbuf + (size_t)T * dk;
        const kvs_type_traits *kt = kvs_type_traits_of(sg->k_type), *vt = kvs_type_traits_of(sg->v_type);
        const uint8_t *kbase = sg->k + kh * sg->k_head_stride, *vbase = sg->v + kh * sg->v_head_stride;
        { /* tiles start at multiples of T from the split's first row in the segment, whatever the
             query block sees, so a query's online softmax takes the same steps in any chunking */
            const int64_t t_start = r0 > base ? r0 - base : 0;
            t_lo = t_start + (t_lo - t_start) / T * T;
        }
        for (int64_t t0 = t_lo; t0 < t_hi; t0 += T) {
            int64_t t1 = t0 + T < t_hi ? t0 + T : t_hi, nt = t1 - t0;
            int64_t p0 = sg->pos0 + t0, p1 = sg->pos0 + t1; /* positions of the tile */
            bool loaded = false;
            const float *kf = kbuf, *vf = vbuf;
            int ldv = dv;
            for (int w = 0; w < 2; w++) {
                bool any = false;
                for (int64_t i = 0; i < nq; i++) {
                    int64_t l = qv[i].lo[w] > p0 ? qv[i].lo[w] : p0, h = qv[i].hi[w] < p1 ? qv[i].hi[w] : p1;
                    bool on = l < h;
                    any |= on;
                    for (int32_t g = 0; g < group; g++) {
                        lo[i * group + g] = on ? (int)(l - p0) : 0;
                        hi[i * group + g] = on ? (int)(h - p0) : 0;
                    }
                }
                if (!any) continue;
                if (!loaded && sg->decode) {
                    sg->decode(sg, true, false, kh, t0, nt, kbuf);
                    sg->decode(sg, false, false, kh, t0, nt, vbuf);
                    loaded = true;
                }
                if (!loaded) {
                    /* f32 rows are used in place only when they are packed tiles */
                    if (sg->k_type == KVS_TYPE_F32 && sg->k_row == (size_t)dk * sizeof(float))
                        kf = (const float *)(kbase + (size_t)t0 * sg->k_row);
                    else if (sg->k_row == kvs_row_bytes(sg->k_type, dk)) /* packed rows: one call per tile */
                        kt->to_float(kbase + (size_t)t0 * sg->k_row, kbuf, nt * dk);
                    else for (int64_t t = 0; t < nt; t++) kt->to_float(kbase + (size_t)(t0 + t) * sg->k_row, kbuf + t * dk, dk);
                    if (alias) { /* latent: V is the first dv elements of each converted K row */
                        vf = kf;
                        ldv = dk;
                    } else if (sg->v_type == KVS_TYPE_F32 && sg->v_row == (size_t)dv * sizeof(float))
                        vf = (const float *)(vbase + (size_t)t0 * sg->v_row);
                    else if (sg->v_row == kvs_row_bytes(sg->v_type, dv))
                        vt->to_float(vbase + (size_t)t0 * sg->v_row, vbuf, nt * dv);
                    else for (int64_t t = 0; t < nt; t++) vt->to_float(vbase + (size_t)(t0 + t) * sg->v_row, vbuf + t * dv, dv);
                    loaded = true;
                    /* the next tile's rows towards L2 while this one computes: a
                     * latent tile is compute-bound, so its DRAM reads overlap */
                    if (t1 < t_hi) {
                        int64_t t2 = t1 + T < t_hi ? t1 + T : t_hi;
                        prefetch_rows(kbase + (size_t)t1 * sg->k_row, (size_t)(t2 - t1) * sg->k_row);
                        if (!alias) prefetch_rows(vbase + (size_t)t1 * sg->v_row, (size_t)(t2 - t1) * sg->v_row);
                    }
                }
                tk->vec->tile(qq, R, kf, vf, lo, hi, a->scale, state, tk->state_floats, dk, dv, ldv, scratch);
            }
        }
    }
}

/* Several attention calls run as one dispatch (the sequences of a batched
 * step): their items are numbered one after the other and taken by the
 * threads one at a time from a shared counter (sequences of different
 * depths, or a thread preempted on a busy machine, leave no thread waiting
 * at the end for long); each item writes its own partial state with the
 * same arithmetic as in a call alone, whichever thread runs it. */
typedef struct attn_multi {
    attn_task *tasks;
    int n_tasks;
    int64_t n_items;        /* all tasks' items */
    kvs_attn *at;
    _Atomic int64_t next;   /* first item not yet taken */
} attn_multi;

static void attn_worker(void *ctx, int ith, int nth) {
    attn_multi *mt = ctx;
    (void)nth;
    float *tbuf = mt->at->thread_buf + (size_t)ith * mt->at->thread_floats;
    int j = 0;
    int64_t base = 0; /* first item of task j */
    for (;;) {
        const int64_t g = atomic_fetch_add_explicit(&mt->next, 1, memory_order_relaxed);
        if (g >= mt->n_items) break;
        while (g >= base + mt->tasks[j].n_items) base += mt->tasks[j++].n_items; /* g grows per thread */
        const attn_task *tk = &mt->tasks[j];
        const int64_t it = g - base;
        /* item = ((kh * n_qblocks) + qb) * n_split + split */
        int64_t sp = it % tk->n_split, rest = it / tk->n_split;
        int64_t qb = rest % tk->n_qblocks, kh = rest / tk->n_qblocks;
        int64_t q0 = qb * tk->qblock, q1 = q0 + tk->qblock < tk->a->n_q ? q0 + tk->qblock : tk->a->n_q;
        int64_t r0 = sp * tk->split_len, r1 = r0 + tk->split_len;
        attn_item(tk, tbuf, kh, q0, q1, r0, r1, tk->partial + (size_t)it * tk->item_floats);
    }
}

/* The shape of one call's work: items, tiles, splits, scratch sizes. */
static kvs_status attn_plan(const kvs_attn_args *a, int nth, attn_task *out) {
    attn_task tk = {.a = a, .vec = kvs_attn_vec_get(), .latent = kvs_attn_latent_get()};
    tk.dk = a->head_dim_k;
    tk.dv = a->head_dim_v;
    const int32_t n_kv_heads = a->n_kv_heads;
    if (n_kv_heads <= 0 || a->n_head % n_kv_heads)
        return kvs_fail(KVS_ERR_INTERNAL, "attention: %d heads over %d kv heads", a->n_head, n_kv_heads);
    tk.group = a->n_head / n_kv_heads;
    if (tk.group > ATTN_MAX_ROWS)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "attention: %d query heads per KV head (max %d)", tk.group, ATTN_MAX_ROWS);
    if (tk.dk % 8 || tk.dv % 8)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "attention: head sizes %d/%d must be multiples of 8", tk.dk, tk.dv);
    for (int s = 0; s < a->n_segs; s++) tk.n_keys += a->segs[s].n;
    tk.qblock = ATTN_MAX_ROWS / tk.group < ATTN_QBLOCK ? ATTN_MAX_ROWS / tk.group : ATTN_QBLOCK;
    tk.tile = tile_rows(tk.dk, tk.dv);
    tk.tile_alias = tile_rows_alias(tk.dk);
    tk.n_qblocks = (a->n_q + tk.qblock - 1) / tk.qblock;
    tk.n_split = 1;
    if (a->n_q == 1 && nth > 1) { /* decode: split the keys across threads */
        int64_t want = (2 * nth + n_kv_heads - 1) / n_kv_heads; /* >= 2 items per thread */
        int64_t max_split = (tk.n_keys + ATTN_MIN_SEG - 1) / ATTN_MIN_SEG;
        tk.n_split = want < max_split ? want : max_split;
        if (tk.n_split < 1) tk.n_split = 1;
    }
    tk.split_len = (tk.n_keys + tk.n_split - 1) / tk.n_split;
    if (tk.split_len < 1) tk.split_len = 1;
    tk.n_items = (int64_t)n_kv_heads * tk.n_qblocks * tk.n_split;
    tk.state_floats = 2 + (size_t)tk.dv;
    tk.item_floats = (size_t)tk.qblock * tk.group * tk.state_floats;

    /* K+V tile (or a latent K tile), then scratch for scores/weights of every
     * row of a tile (or a fused chunk) and the fused kernel's folded queries */
    tk.tile_floats = (size_t)tk.tile * (tk.dk + tk.dv);
    if ((size_t)tk.tile_alias * tk.dk > tk.tile_floats) tk.tile_floats = (size_t)tk.tile_alias * tk.dk;
    tk.tile_floats = (tk.tile_floats + 15) & ~(size_t)15;
    int max_t = tk.tile > tk.tile_alias ? tk.tile : tk.tile_alias;
    if (max_t < ATTN_FUSED_CHUNK) max_t = ATTN_FUSED_CHUNK;
    size_t tf = tk.tile_floats + (size_t)ATTN_MAX_ROWS * max_t + (size_t)KVS_ATTN_FUSED_MAX_ROWS * tk.dk + 16;
    if (a->n_q == 1 && tk.group >= KVS_ATTN_LATENT_MIN_ROWS && tk.dk % 32 == 0 && tk.dv % 32 == 0) {
        size_t lf = kvs_attn_latent_scratch_floats(tk.group, tk.dk, tk.dv);
        if (lf > tf) tf = lf;
    }
    tk.thread_need = tf;
    if (a->n_q == 1) /* decode over q8_0/q4_0 keys: the query is rounded once for every item */
        for (int s = 0; s < a->n_segs && !tk.qround; s++) tk.qround = int8_keys(&a->segs[s], tk.dk, tk.dv);
    tk.n_qblk = (tk.dk + 31) / 32;
    *out = tk;
    return KVS_OK;
}

/* Merge a task's key splits and normalise into its output. */
static void attn_merge(const attn_task *tk) {
    const kvs_attn_args *a = tk->a;
    for (int64_t kh = 0; kh < a->n_kv_heads; kh++) {
        for (int64_t qb = 0; qb < tk->n_qblocks; qb++) {
            int64_t q0 = qb * tk->qblock, q1 = q0 + tk->qblock < a->n_q ? q0 + tk->qblock : a->n_q;
            for (int64_t i = q0; i < q1; i++) {
                for (int32_t g = 0; g < tk->group; g++) {
                    size_t off = (size_t)((i - q0) * tk->group + g) * tk->state_floats;
                    int64_t it0 = (kh * tk->n_qblocks + qb) * tk->n_split;
                    float m = -INFINITY;
                    for (int64_t sp = 0; sp < tk->n_split; sp++) {
                        float ms = tk->partial[(size_t)(it0 + sp) * tk->item_floats + off];
                        if (ms > m) m = ms;
                    }
                    float *o = a->out + (i * a->n_head + kh * tk->group + g) * tk->dv;
                    memset(o, 0, sizeof(float) * (size_t)tk->dv);
                    if (m == -INFINITY) continue;
                    float l = 0.0f;
                    for (int64_t sp = 0; sp < tk->n_split; sp++) {
                        const float *st = tk->partial + (size_t)(it0 + sp) * tk->item_floats + off;
                        if (st[0] == -INFINITY) continue;
                        float w = expf(st[0] - m);
                        l += st[1] * w;
                        tk->vec->axpy(o, w, st + 2, tk->dv);
                    }
                    tk->vec->scale(o, 1.0f / l, tk->dv);
                }
            }
        }
    }
}

#define ATTN_MAX_TASKS 64 /* calls per dispatch; more are run in several */

kvs_status kvs_attn_run_many(kvs_attn *at, kvs_pool *pool, const kvs_attn_args *args, int n) {
    for (; n > ATTN_MAX_TASKS; args += ATTN_MAX_TASKS, n -= ATTN_MAX_TASKS) {
        kvs_status st = kvs_attn_run_many(at, pool, args, ATTN_MAX_TASKS);
        if (st != KVS_OK) return st;
    }
    if (n <= 0) return KVS_OK;
    attn_task tasks[ATTN_MAX_TASKS];
    const int nth = kvs_pool_size(pool);
    size_t tf = 0, pf = 0, qf = 0, qs = 0;
    int64_t n_items = 0;
    for (int i = 0; i < n; i++) {
        kvs_status st = attn_plan(&args[i], nth, &tasks[i]);
        if (st != KVS_OK) return st;
        tasks[i].at = at;
        if (tasks[i].thread_need > tf) tf = tasks[i].thread_need;
        pf += tasks[i].item_floats * (size_t)tasks[i].n_items;
        if (tasks[i].qround) {
            qf += (size_t)args[i].n_head * (size_t)tasks[i].dk;
            qs += (size_t)args[i].n_head * (size_t)tasks[i].n_qblk;
        }
        n_items += tasks[i].n_items;
    }
    if (tf > at->thread_floats || nth > at->n_threads) {
        kvs_aligned_free(at->thread_buf);
        at->n_threads = nth > at->n_threads ? nth : at->n_threads;
        at->thread_buf = kvs_aligned_alloc(sizeof(float) * tf * (size_t)at->n_threads);
        at->thread_floats = at->thread_buf ? tf : 0;
        if (!at->thread_buf) return kvs_fail(KVS_ERR_NOMEM, "attention scratch: out of memory");
    }
    if (pf > at->partial_floats) {
        kvs_aligned_free(at->partial);
        at->partial = kvs_aligned_alloc(sizeof(float) * pf);
        at->partial_floats = at->partial ? pf : 0;
        if (!at->partial) return kvs_fail(KVS_ERR_NOMEM, "attention scratch: out of memory");
    }
    if (qf > at->q_cap || qs > at->qs_cap) {
        kvs_free(at->qround); kvs_free(at->qint); kvs_free(at->qscale);
        at->qround = kvs_malloc(sizeof(float) * qf);
        at->qint = kvs_malloc(qf);
        at->qscale = kvs_malloc(sizeof(float) * qs);
        const bool ok = at->qround && at->qint && at->qscale;
        at->q_cap = ok ? qf : 0;
        at->qs_cap = ok ? qs : 0;
        if (!ok) return kvs_fail(KVS_ERR_NOMEM, "attention scratch: out of memory");
    }
    size_t po = 0, qo = 0, so = 0;
    for (int i = 0; i < n; i++) {
        attn_task *tk = &tasks[i];
        tk->partial = at->partial + po;
        po += tk->item_floats * (size_t)tk->n_items;
        if (!tk->qround) continue;
        const kvs_attn_args *a = tk->a;
        tk->qround_buf = at->qround + qo;
        tk->qint_buf = at->qint + qo;
        tk->qscale_buf = at->qscale + so;
        qo += (size_t)a->n_head * (size_t)tk->dk;
        so += (size_t)a->n_head * (size_t)tk->n_qblk;
        for (int32_t h = 0; h < a->n_head; h++)
            kvs_attn_round_query(a->q + (size_t)h * tk->dk, tk->dk, tk->qint_buf + (size_t)h * tk->dk,
                                 tk->qscale_buf + (size_t)h * (size_t)tk->n_qblk, tk->qround_buf + (size_t)h * tk->dk);
    }
    attn_multi mt = {.tasks = tasks, .n_tasks = n, .n_items = n_items, .at = at};
    atomic_init(&mt.next, 0);
    kvs_pool_run(pool, attn_worker, &mt);
    for (int i = 0; i < n; i++) attn_merge(&tasks[i]);
    return KVS_OK;
}

kvs_status kvs_attn_run(kvs_attn *at, kvs_pool *pool, const kvs_attn_args *a) {
    return kvs_attn_run_many(at, pool, a, 1);
}
