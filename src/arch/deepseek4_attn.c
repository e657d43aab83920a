/* DeepSeek V4 compressed attention (CSA / HCA / window-only layers):
 * the softmax-gated pooling compressors (with their ring state carried
 * between calls, so entries appear exactly when a block completes, in prefill
 * and decode alike), the lightning indexer's top-k, and MQA over one K=V head
 * of the raw window plus the visible compressed entries, with per-head
 * attention sinks, inverse RoPE on the output's rotary tail and the grouped
 * low-rank output projection. Rows go into the session's KV cache through
 * the chunk API (kvs_kv_put_raw / kvs_kv_put_entry, which convert them to
 * the scheme's formats) and are read where they lie (kvs_kv_cache_raw_row /
 * kvs_kv_cache_entry_row).
 *
 * The per-query loops are contiguous dot/axpy loops over f32 rows: scalar
 * references here, AVX2 twins in deepseek4_avx2.c (tests/test_deepseek4.c
 * checks the pair, and the whole forward against
 * scripts/ref_numpy_deepseek4.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arch/attend.h"
#include "arch/deepseek4.h"
#include "kv/kv_chunk.h"
#include "core/alloc.h"
#include "core/cpu.h"
#include "core/error.h"
#include "core/f16.h"
#include "model/loader.h"

void ds4_rope(const double *freq, int32_t rope_dim, float *x, int32_t n_heads, int32_t d, int64_t pos, bool inverse) {
    float c[256], sn[256];
    for (int32_t i = 0; i < rope_dim / 2; i++) {
        double a = (double)pos * freq[i];
        c[i] = (float)cos(a);
        sn[i] = (float)(inverse ? -sin(a) : sin(a));
    }
    for (int32_t h = 0; h < n_heads; h++) {
        float *t = x + (int64_t)h * d + (d - rope_dim);
        for (int32_t i = 0; i < rope_dim / 2; i++) {
            float a = t[2 * i], b = t[2 * i + 1];
            t[2 * i] = a * c[i] - b * sn[i];
            t[2 * i + 1] = a * sn[i] + b * c[i];
        }
    }
}

float ds4_dot_ref(const float *a, const float *b, int64_t n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

void ds4_axpy_ref(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static float ds4_dot(const float *a, const float *b, int64_t n) {
    return kvs_cpu()->avx2 ? ds4_dot_avx2(a, b, n) : ds4_dot_ref(a, b, n);
}

static void ds4_axpy(float *y, float a, const float *x, int64_t n) {
    if (kvs_cpu()->avx2) ds4_axpy_avx2(y, a, x, n);
    else ds4_axpy_ref(y, a, x, n);
}


/* ---- MQA over key rows in the cache's format ------------------------------- */

void ds4_mqa_scores_ref(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *q, int64_t H, int64_t hd,
                        float scale, float *scores, float *tmp) {
    const kvs_type_traits *tr = kvs_type_traits_ref(type);
    for (int64_t k = 0; k < nk; k++) {
        tr->to_float(rows[k], tmp, hd);
        for (int64_t h = 0; h < H; h++) scores[h * nk + k] = ds4_dot_ref(q + h * hd, tmp, hd) * scale;
    }
}

void ds4_mqa_accum_ref(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *p, int64_t H, int64_t hd,
                       float *o, float *tmp) {
    const kvs_type_traits *tr = kvs_type_traits_ref(type);
    memset(o, 0, sizeof(float) * (size_t)(H * hd));
    for (int64_t k = 0; k < nk; k++) {
        tr->to_float(rows[k], tmp, hd);
        for (int64_t h = 0; h < H; h++) ds4_axpy_ref(o + h * hd, p[h * nk + k], tmp, hd);
    }
}

/* AVX2 kernels read f16/f32 rows directly (hd a multiple of 8); other formats
 * convert row by row. */
static bool mqa_fast(kvs_dtype type, int64_t hd) {
    return kvs_cpu()->avx2 && hd % 8 == 0 && (type == KVS_TYPE_F16 || type == KVS_TYPE_F32);
}

void ds4_mqa_scores(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *q, int64_t H, int64_t hd,
                    float scale, float *scores, float *tmp) {
    if (mqa_fast(type, hd)) {
        ds4_mqa_scores_avx2(type == KVS_TYPE_F16, rows, nk, q, H, hd, scale, scores);
        return;
    }
    const kvs_type_traits *tr = kvs_type_traits_of(type);
    for (int64_t k = 0; k < nk; k++) {
        tr->to_float(rows[k], tmp, hd);
        for (int64_t h = 0; h < H; h++) scores[h * nk + k] = ds4_dot(q + h * hd, tmp, hd) * scale;
    }
}

void ds4_mqa_accum(kvs_dtype type, const uint8_t *const *rows, int64_t nk, const float *p, int64_t H, int64_t hd,
                   float *o, float *tmp) {
    if (mqa_fast(type, hd)) {
        ds4_mqa_accum_avx2(type == KVS_TYPE_F16, rows, nk, p, H, hd, o);
        return;
    }
    const kvs_type_traits *tr = kvs_type_traits_of(type);
    memset(o, 0, sizeof(float) * (size_t)(H * hd));
    for (int64_t k = 0; k < nk; k++) {
        tr->to_float(rows[k], tmp, hd);
        for (int64_t h = 0; h < H; h++) ds4_axpy(o + h * hd, p[h * nk + k], tmp, hd);
    }
}

/* ---- decode profile (KVS_DS4_PROFILE=1) --------------------------------------
 * CPU-time counters (the calling thread's) of the single-token decode path by
 * stage, printed to stderr at exit: a tool for finding what grows with depth,
 * off by default (one branch per stage when off). CPU time, not wall time:
 * on a shared machine wall time also counts the time the thread waited for a
 * core. Not thread-safe: decode stages run on the calling thread except the
 * indexer scan, which is timed around its pool call (the caller's share plus
 * its wait for the other workers). */
enum { PR_PROJ, PR_COMP, PR_INDEX, PR_TOPK, PR_GATHER, PR_MQA, PR_STORE, PR_OUT, PR_N };
static const char *const pr_name[PR_N] = {"proj", "compress", "index", "topk", "gather", "mqa", "store", "out"};
static int pr_on = -1;
static double pr_sec[PR_N];
static long pr_calls;

static void pr_dump(void) {
    fprintf(stderr, "ds4 profile (thread CPU time): %ld decode attention calls\n", pr_calls);
    for (int i = 0; i < PR_N; i++)
        fprintf(stderr, "  %-9s %10.3f ms total %9.2f us/call\n", pr_name[i], 1e3 * pr_sec[i],
                pr_calls ? 1e6 * pr_sec[i] / (double)pr_calls : 0.0);
}

static bool pr_enabled(void) {
    if (pr_on < 0) {
        const char *e = getenv("KVS_DS4_PROFILE");
        pr_on = e && *e && *e != '0';
        if (pr_on) atexit(pr_dump);
    }
    return pr_on;
}

static double pr_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Adds the time since *t0 to stage i and restarts the clock (only when on). */
static void pr_lap(bool on, int i, double *t0) {
    if (!on) return;
    double t = pr_now();
    pr_sec[i] += t - *t0;
    *t0 = t;
}

/* ---- compressor ------------------------------------------------------------ */

/* Pool the block that ends at position p (ratio m) from the ring into out (d):
 * per channel, softmax over the block's scores (plus, when overlapping, the
 * previous block's first-half channels) of the matching kv values. */
static void pool_block(const ds4_comp *c, const ds4_ring *r, int32_t m, int64_t p, float *out) {
    const int64_t d = c->d, w = (int64_t)c->coff * d, rows = (int64_t)c->coff * m;
    const int64_t j = p / m, first = j * m;
    for (int64_t ch = 0; ch < d; ch++) {
        float mx = -INFINITY;
        /* values: (slot, column) pairs */
        for (int pass = 0; pass < 2; pass++) {
            float sum = 0, acc = 0;
            for (int64_t half = (c->coff == 2 && j > 0) ? 0 : 1; half < 2; half++) {
                int64_t start = half == 0 ? first - m : first;
                int64_t col = c->coff == 2 ? (half == 0 ? ch : d + ch) : ch;
                for (int64_t i = 0; i < m; i++) {
                    int64_t slot = (start + i) % rows;
                    float sc = r->score[slot * w + col];
                    if (pass == 0) { mx = sc > mx ? sc : mx; continue; }
                    float e = expf(sc - mx);
                    sum += e;
                    acc += e * r->kv[slot * w + col];
                }
            }
            if (pass == 1) out[ch] = acc / sum;
        }
    }
}

/* Feed the chunk's projections (kv, score rows of width coff*d for n tokens at
 * positions pos0..) through the ring; every completed block becomes an entry:
 * pooled, RMSNorm'ed, RoPE'd at its first position, written to the cache
 * (entry row, or the indexer key of that entry when `index` is set). */
static kvs_status run_compressor(kvs_session *s, int32_t l, const ds4_comp *c, ds4_ring *r, const float *kv,
                                 const float *sc, int64_t n, bool index) {
    const ds4_model *x = s->model->ext;
    const int32_t m = x->layers[l].ratio;
    const int64_t w = (int64_t)c->coff * c->d, rows = (int64_t)c->coff * m;
    const uint64_t pos0 = s->kv->n_past;
    float ent[2048];
    if (c->d > 2048) return kvs_fail(KVS_ERR_UNSUPPORTED, "deepseek4: entry width %d above 2048", c->d);
    for (int64_t t = 0; t < n; t++) {
        uint64_t p = pos0 + (uint64_t)t;
        int64_t slot = (int64_t)(p % (uint64_t)rows);
        const float *ape = c->ape + (int64_t)(p % (uint64_t)m) * w;
        memcpy(r->kv + slot * w, kv + t * w, sizeof(float) * (size_t)w);
        for (int64_t i = 0; i < w; i++) r->score[slot * w + i] = sc[t * w + i] + ape[i];
        if ((p + 1) % (uint64_t)m) continue;
        pool_block(c, r, m, (int64_t)p, ent);
        kvs_rmsnorm(ent, ent, c->norm, 1, c->d, s->model->hp.norm_eps);
        uint64_t j = p / (uint64_t)m;
        ds4_rope(x->freq[1], x->rope_dim, ent, 1, c->d, (int64_t)(j * (uint64_t)m), false);
        KVS_TRY(kvs_kv_put_entry(s->kv, l, j, ent, index));
    }
    return KVS_OK;
}

/* ---- top-k ------------------------------------------------------------------ */

/* The k-th largest of v[0..n) (quickselect, reorders v). */
static float kth_largest(float *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float piv = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > piv) i++;
            while (v[j] < piv) j--;
            if (i <= j) { float t = v[i]; v[i] = v[j]; v[j] = t; i++; j--; }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return v[want];
}

/* A threshold that about 2k of the n scores reach, from a strided sample
 * (written to tmp[0..ns)); -INFINITY when a sample cannot help (n small). */
static float sample_threshold(const float *sc, int64_t n, int64_t k, float *tmp) {
    enum { NS = 1024 };
    if (n < 4 * NS || 4 * k > n) return -INFINITY;
    const int64_t stride = n / NS;
    for (int64_t i = 0; i < NS; i++) tmp[i] = sc[i * stride];
    int64_t r = (2 * k * NS + n - 1) / n; /* rank in the sample for ~2k above */
    return kth_largest(tmp, NS, r);
}

void ds4_select_topk(const float *sc, int64_t n, int64_t k, float *tmp, int32_t *idx) {
    /* The k-th largest score, found among the candidates >= a sampled
     * threshold t: when at least k scores reach t, the k-th largest of all is
     * one of them (and everything above it is too), so the answer is exact;
     * otherwise (an unlucky sample) fall back to all n scores. One read of
     * the scores and a select over ~2k values instead of n. */
    const float t = sample_threshold(sc, n, k, tmp);
    int64_t nc = 0;
    if (t != -INFINITY)
        for (int64_t j = 0; j < n; j++)
            if (sc[j] >= t) tmp[nc++] = sc[j];
    if (nc < k) {
        memcpy(tmp, sc, sizeof(float) * (size_t)n);
        nc = n;
    }
    const float thr = kth_largest(tmp, nc, k);
    /* everything above the threshold, then ties at it by lower index (the
     * reference's rule), both in ascending index order; every score above
     * thr is among the candidates */
    int64_t above = 0, nk = 0;
    for (int64_t j = 0; j < nc; j++) above += tmp[j] > thr;
    int64_t ties = k - above;
    for (int64_t j = 0; j < n; j++) {
        if (sc[j] > thr) idx[nk++] = (int32_t)j;
        else if (sc[j] == thr && ties > 0) { idx[nk++] = (int32_t)j; ties--; }
    }
}

/* ---- 8-bit indexer (scalar reference; AVX2 twin in deepseek4_avx2.c) ---------- */

void ds4_quant_query(const float *x, int32_t nih, int32_t ihd, int8_t *q, float *d) {
    for (int32_t h = 0; h < nih; h++) {
        const float *xh = x + (int64_t)h * ihd;
        float amax = 0;
        for (int32_t i = 0; i < ihd; i++) amax = fmaxf(amax, fabsf(xh[i]));
        const float dh = amax / 127.0f, id = dh != 0.0f ? 1.0f / dh : 0.0f;
        for (int32_t i = 0; i < ihd; i++) {
            float v = nearbyintf(xh[i] * id); /* ties to even, as the q8_0 key rule */
            q[(int64_t)h * ihd + i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
        d[h] = dh;
    }
}

typedef struct { uint16_t d; int8_t qs[32]; } ds4_q8_block; /* the q8_0 block layout */

void ds4_iscore_q8_ref(const void *keys, int64_t n, const int8_t *q, const float *dq, const float *w, int32_t nih,
                       int32_t ihd, float *sc) {
    const int32_t nb = ihd / 32;
    for (int64_t j = 0; j < n; j++) {
        const ds4_q8_block *k = (const ds4_q8_block *)keys + j * nb;
        float acc = 0;
        for (int32_t h = 0; h < nih; h++) {
            float lane[8] = {0};
            for (int32_t b = 0; b < nb; b++) {
                const int8_t *qb = q + (int64_t)h * ihd + b * 32;
                const float dk = kvs_f16_to_f32(k[b].d);
                for (int i = 0; i < 8; i++) {
                    int32_t isum = 0;
                    for (int e = 4 * i; e < 4 * i + 4; e++) isum += (int32_t)k[b].qs[e] * qb[e];
                    lane[i] = fmaf((float)isum, dk, lane[i]);
                }
            }
            float v = (((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))) * dq[h];
            acc += v > 0 ? v * w[h] : 0.0f;
        }
        sc[j] = acc;
    }
}

static void iscore_q8(const void *keys, int64_t n, const int8_t *q, const float *dq, const float *w, int32_t nih,
                      int32_t ihd, float *sc) {
    if (kvs_cpu()->avx2) ds4_iscore_q8_avx2(keys, n, q, dq, w, nih, ihd, sc);
    else ds4_iscore_q8_ref(keys, n, q, dq, w, nih, ihd, sc);
}

/* ---- attention ------------------------------------------------------------ */

typedef struct attn_task {
    kvs_session *s;
    int32_t l;
    int64_t n;
} attn_task; /* failures go through kvs_task_fail */

/* Indexer scores of query t over entries [a, b) into sc. */
typedef struct idx_task {
    kvs_session *s;
    int32_t l;
    const float *q, *wt; /* (nih, ihd), (nih) */
    const int8_t *q8;    /* q8_0 keys: the query quantized per head (nih*ihd), */
    const float *dq;     /* its per-head scales (nih) */
    float *sc;
} idx_task;

static void index_scores(void *ctx, int64_t a, int64_t b) {
    const idx_task *it = ctx;
    kvs_session *s = it->s;
    const ds4_model *x = s->model->ext;
    const kvs_kv_scheme *sch = &s->kv->layers[it->l].scheme;
    const kvs_type_traits *tr = kvs_type_traits_of(sch->indexer_type);
    const int64_t ihd = x->idx_dim, nih = x->idx_heads, P = s->kv->layers[it->l].page_tokens;
    if (sch->indexer_type == KVS_TYPE_Q8_0) {
        /* a page's keys are one contiguous stream of q8_0 rows: score a run at a time */
        for (int64_t j = a; j < b;) {
            int64_t run = P - j % P;
            if (run > b - j) run = b - j;
            uint8_t *ik = NULL;
            kvs_kv_cache_entry_row(s->kv, it->l, (uint64_t)j, &ik);
            iscore_q8(ik, run, it->q8, it->dq, it->wt, (int32_t)nih, (int32_t)ihd, it->sc + j);
            j += run;
        }
        return;
    }
    /* a page's indexer keys are one contiguous stream: convert a run at a time */
    float keys[32 * 1024];
    const int64_t run_max = (int64_t)(sizeof keys / sizeof *keys) / ihd;
    for (int64_t j = a; j < b;) {
        int64_t run = P - j % P;
        if (run > b - j) run = b - j;
        if (run > run_max) run = run_max;
        uint8_t *ik = NULL;
        kvs_kv_cache_entry_row(s->kv, it->l, (uint64_t)j, &ik);
        tr->to_float(ik, keys, run * ihd);
        for (int64_t r = 0; r < run; r++) {
            float acc = 0;
            for (int64_t h = 0; h < nih; h++) {
                float v = ds4_dot(it->q + h * ihd, keys + r * ihd, ihd);
                if (v > 0) acc += v * it->wt[h];
            }
            it->sc[j + r] = acc;
        }
        j += run;
    }
}

/* Per-thread scratch of the attention. */
typedef struct attn_scratch {
    const uint8_t **rows; /* (max_keys) key rows in the cache's format */
    uint8_t *local;       /* (window) chunk-local raw rows converted to that format */
    float *scores;        /* (H, max_keys) */
    float *tmp;           /* (hd) one converted row (reference kernels) */
    int32_t *idx;         /* (nent) */
    float *isc, *isel;    /* (nent) indexer scores, top-k scratch */
    int8_t *q8;           /* (nih*ihd) quantized indexer query */
    float *dq;            /* (nih) its per-head scales */
} attn_scratch;

/* One query token t of the chunk: collect key rows (raw window, entries), MQA. */
static kvs_status attend_token(kvs_session *s, int32_t l, int64_t t, attn_scratch *sc, bool decode) {
    const kvs_model *m = s->model;
    const ds4_model *x = m->ext;
    const ds4_layer *w = &x->layers[l];
    ds4_state *st = s->ext;
    const kvs_kv_scheme *sch = &s->kv->layers[l].scheme;
    const int64_t H = m->hp.n_head, hd = m->hp.head_dim_k, W = x->window;
    const size_t rb = kvs_row_bytes(sch->k_type, hd);
    const uint64_t pos0 = s->kv->n_past, p = pos0 + (uint64_t)t;
    int64_t nk = 0, nlocal = 0;
    const bool on = decode && pr_enabled();
    double t0 = on ? pr_now() : 0;
    /* raw window: positions max(0, p-W+1)..p; older than the chunk from the ring,
     * the chunk's own rows converted to the cache format (they are already
     * rounded through it, so this is exact) */
    uint64_t lo = p + 1 > (uint64_t)W ? p + 1 - (uint64_t)W : 0;
    for (uint64_t q = lo; q <= p; q++, nk++) {
        if (q >= pos0) {
            uint8_t *row = sc->local + (size_t)nlocal++ * rb;
            kvs_kv_format_row(s->kv, l, st->kv + (int64_t)(q - pos0) * hd, row);
            sc->rows[nk] = row;
        } else {
            sc->rows[nk] = kvs_kv_cache_raw_row(s->kv, l, q);
            if (!sc->rows[nk])
                return kvs_fail(KVS_ERR_INTERNAL, "deepseek4: layer %d raw position %llu missing", l, (unsigned long long)q);
        }
    }
    pr_lap(on, PR_GATHER, &t0);
    /* compressed entries visible to p: j < (p+1)/m; CSA keeps the indexer's top-k */
    if (w->ratio) {
        int64_t nv = (int64_t)((p + 1) / (uint64_t)w->ratio), nsel = nv;
        const int32_t *idx = NULL;
        if (w->ratio == 4 && nv > x->idx_topk) {
            idx_task it = {.s = s, .l = l, .q = st->iq + t * x->idx_heads * x->idx_dim,
                           .wt = st->iw + t * x->idx_heads, .q8 = sc->q8, .dq = sc->dq, .sc = sc->isc};
            if (sch->indexer_type == KVS_TYPE_Q8_0)
                ds4_quant_query(it.q, x->idx_heads, x->idx_dim, sc->q8, sc->dq);
            if (decode) kvs_pool_for(s->pool, nv, 256, index_scores, &it); /* decode: split entries */
            else index_scores(&it, 0, nv);
            pr_lap(on, PR_INDEX, &t0);
            ds4_select_topk(sc->isc, nv, x->idx_topk, sc->isel, sc->idx);
            idx = sc->idx;
            nsel = x->idx_topk;
            pr_lap(on, PR_TOPK, &t0);
        }
        for (int64_t k = 0; k < nsel; k++, nk++) {
            int64_t j = idx ? idx[k] : k;
            sc->rows[nk] = kvs_kv_cache_entry_row(s->kv, l, (uint64_t)j, NULL);
            if (!sc->rows[nk]) return kvs_fail(KVS_ERR_INTERNAL, "deepseek4: layer %d entry %lld missing", l, (long long)j);
        }
    }
    pr_lap(on, PR_GATHER, &t0);
    /* MQA with sinks: p_h = softmax([q_h . k / sqrt(hd)] ++ [sink_h]); o_h = sum p k */
    const float scale = 1.0f / sqrtf((float)hd);
    const float *q = st->q + t * H * hd;
    float *o = st->o + t * H * hd;
    ds4_mqa_scores(sch->k_type, sc->rows, nk, q, H, hd, scale, sc->scores, sc->tmp);
    for (int64_t h = 0; h < H; h++) {
        float *sh = sc->scores + h * nk, mx = w->sinks[h];
        for (int64_t k = 0; k < nk; k++) mx = sh[k] > mx ? sh[k] : mx;
        float sum = expf(w->sinks[h] - mx);
        for (int64_t k = 0; k < nk; k++) sum += (sh[k] = expf(sh[k] - mx));
        for (int64_t k = 0; k < nk; k++) sh[k] /= sum;
    }
    ds4_mqa_accum(sch->k_type, sc->rows, nk, sc->scores, H, hd, o, sc->tmp);
    ds4_rope(x->freq[w->ratio ? 1 : 0], x->rope_dim, o, (int32_t)H, (int32_t)hd, (int64_t)p, true);
    pr_lap(on, PR_MQA, &t0);
    return KVS_OK;
}

static void attend_rows(void *ctx, int64_t a, int64_t b) {
    attn_task *at = ctx;
    kvs_session *s = at->s;
    const ds4_model *x = s->model->ext;
    const int64_t hd = s->model->hp.head_dim_k, H = s->model->hp.n_head;
    const int32_t ratio = x->layers[at->l].ratio;
    const int64_t nent = ratio ? (int64_t)(s->kv->n_past + (uint64_t)at->n) / ratio + 1 : 1; /* entries visible at most */
    const int64_t max_keys = x->window + (ratio == 4 && nent > x->idx_topk ? x->idx_topk : nent);
    const bool decode = at->n == 1;
    const int64_t ni = (int64_t)x->idx_heads * x->idx_dim;
    const size_t rb = kvs_row_bytes(s->kv->layers[at->l].scheme.k_type, hd);
    ds4_state *st = s->ext;
    attn_scratch sc;
    /* one block: pointers, then floats, then int32/int8/bytes */
    size_t nfl = (size_t)(H * max_keys + hd + (decode ? 0 : 2 * nent) + x->idx_heads + 1);
    size_t bytes = sizeof(void *) * (size_t)max_keys + sizeof(float) * nfl + sizeof(int32_t) * (size_t)nent +
                   (size_t)ni + rb * (size_t)x->window;
    uint8_t *blk = kvs_malloc(bytes);
    if (!blk) {
        kvs_task_fail(kvs_fail(KVS_ERR_NOMEM, "deepseek4: out of memory for attention scratch"));
        return;
    }
    sc.rows = (const uint8_t **)blk;
    float *f = (float *)(blk + sizeof(void *) * (size_t)max_keys);
    sc.scores = f;
    sc.tmp = sc.scores + H * max_keys;
    sc.dq = sc.tmp + hd;
    sc.isc = decode ? st->iscore : sc.dq + x->idx_heads + 1;
    sc.isel = decode ? st->iselect : sc.isc + nent;
    sc.idx = (int32_t *)(f + nfl);
    sc.q8 = (int8_t *)(sc.idx + nent);
    sc.local = (uint8_t *)(sc.q8 + ni);
    for (int64_t t = a; t < b; t++) {
        kvs_status r = attend_token(s, at->l, t, &sc, decode);
        if (r != KVS_OK) { kvs_task_fail(r); break; }
    }
    kvs_free(blk);
}

kvs_status ds4_attention(kvs_session *s, int32_t l, int64_t n) {
    const kvs_model *m = s->model;
    const kvs_hparams *hp = &m->hp;
    const ds4_model *x = m->ext;
    const ds4_layer *w = &x->layers[l];
    ds4_state *st = s->ext;
    const int64_t D = hp->n_embd, H = hp->n_head, hd = hp->head_dim_k;
    const int64_t G = x->o_groups, din = H * hd / G;
    const double *freq = x->freq[w->ratio ? 1 : 0];
    const bool on = n == 1 && pr_enabled();
    double t0 = on ? pr_now() : 0;
    if (on) pr_calls++;

    /* projections: qr = q_norm(x Wq_a); q = qr Wq_b; kv = kv_norm(x Wkv) */
    kvs_mm_out a[3]; /* the matmul takes at most 4 outputs per input */
    int na = 0;
    a[na++] = (kvs_mm_out){.w = &w->wq_a, .y = st->qr, .y_stride = x->q_lora};
    a[na++] = (kvs_mm_out){.w = &w->wkv, .y = st->kv, .y_stride = hd};
    if (w->ratio == 4) a[na++] = (kvs_mm_out){.w = &w->iproj, .y = st->iw, .y_stride = x->idx_heads};
    KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->xn, n, a, na));
    kvs_rmsnorm(st->qr, st->qr, w->q_norm, n, x->q_lora, hp->norm_eps);
    kvs_rmsnorm(st->kv, st->kv, w->kv_norm, n, hd, hp->norm_eps);
    kvs_mm_out b[2];
    int nb = 0;
    b[nb++] = (kvs_mm_out){.w = &w->wq_b, .y = st->q, .y_stride = H * hd};
    if (w->ratio == 4) b[nb++] = (kvs_mm_out){.w = &w->iq_b, .y = st->iq, .y_stride = x->idx_heads * x->idx_dim};
    KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->qr, n, b, nb));
    kvs_rmsnorm(st->q, st->q, NULL, n * H, hd, hp->norm_eps); /* per-head, no gain */
    for (int64_t t = 0; t < n; t++) {
        int64_t p = (int64_t)s->kv->n_past + t;
        ds4_rope(freq, x->rope_dim, st->q + t * H * hd, (int32_t)H, (int32_t)hd, p, false);
        ds4_rope(freq, x->rope_dim, st->kv + t * hd, 1, (int32_t)hd, p, false);
        if (w->ratio == 4) {
            ds4_rope(freq, x->rope_dim, st->iq + t * x->idx_heads * x->idx_dim, x->idx_heads, x->idx_dim, p, false);
            float iscale = 1.0f / sqrtf((float)x->idx_dim * (float)x->idx_heads);
            for (int64_t h = 0; h < x->idx_heads; h++) st->iw[t * x->idx_heads + h] *= iscale;
        }
    }
    KVS_TRY(kvs_kv_round_rows(s->kv, l, st->kv, n)); /* chunk keys as later steps read them back */
    pr_lap(on, PR_PROJ, &t0);

    /* compressors: entries (and indexer keys) for every block completing in the chunk */
    if (w->ratio) {
        kvs_mm_out cm[2] = {
            {.w = &w->comp.wkv, .y = st->ckv, .y_stride = w->comp.wkv.n_out},
            {.w = &w->comp.wgate, .y = st->csc, .y_stride = w->comp.wgate.n_out},
        };
        KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->xn, n, cm, 2));
        KVS_TRY(run_compressor(s, l, &w->comp, &st->ring[l], st->ckv, st->csc, n, false));
        if (w->ratio == 4) {
            kvs_mm_out c[2] = {
                {.w = &w->icomp.wkv, .y = st->ckv, .y_stride = w->icomp.wkv.n_out},
                {.w = &w->icomp.wgate, .y = st->csc, .y_stride = w->icomp.wgate.n_out},
            };
            KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->xn, n, c, 2));
            KVS_TRY(run_compressor(s, l, &w->icomp, &st->iring[l], st->ckv, st->csc, n, true));
        }
    }

    pr_lap(on, PR_COMP, &t0);
    /* attention per query token */
    attn_task at = {.s = s, .l = l, .n = n};
    /* decode runs inline (index_scores splits its entries over the pool) */
    KVS_TRY(kvs_pool_for(n == 1 ? NULL : s->pool, n, KVS_PAR_MIN_TOKENS, attend_rows, &at));
    if (on) t0 = pr_now(); /* attend_token timed its own stages */

    /* the chunk's raw rows join the window ring only now: its queries read them from st->kv */
    for (int64_t t = 0; t < n; t++) KVS_TRY(kvs_kv_put_raw(s->kv, l, s->kv->n_past + (uint64_t)t, st->kv + t * hd));
    pr_lap(on, PR_STORE, &t0);

    /* grouped output: o (n, G, din) -> per group o_lora rows of Wo_a -> Wo_b */
    for (int64_t g = 0; g < G; g++)
        for (int64_t t = 0; t < n; t++)
            memcpy(st->og + (g * n + t) * din, st->o + t * H * hd + g * din, sizeof(float) * (size_t)din);
    for (int64_t g = 0; g < G; g++) {
        kvs_mm_out o = {.w = &w->wo_a[g], .y = st->mid + g * x->o_lora, .y_stride = G * x->o_lora};
        KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->og + g * n * din, n, &o, 1));
    }
    kvs_mm_out ob = {.w = &w->wo_b, .y = st->out, .y_stride = D};
    KVS_TRY(kvs_matmul_run(s->mm, s->pool, st->mid, n, &ob, 1));
    pr_lap(on, PR_OUT, &t0);
    return KVS_OK;
}
