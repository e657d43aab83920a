/* MLA absorbed decode equals the expanded computation (DeepSeek-V2, sec. 2.1).
 *
 * Expanded (what the paper writes, computed here in float64): per head h and
 * token t, k_h,t = [W_UK[h] c_t ; k_rope_t] and v_h,t = W_UV[h] c_t are
 * materialised, and o_h = softmax(q_h . k_h,t / sqrt(d_nope + d_rope)) v_h,t
 * over the causally visible tokens.
 *
 * Absorbed (what the engine runs): the cache stores one row [c_t ; k_rope_t]
 * per token in a LATENT kvs_kv_cache; the query becomes
 * q'_h = [W_UK[h]^T q_nope_h ; q_rope_h], kvs_attn_run does MQA over one KV
 * head with dk = r + d_rope, dv = r (V is the first r elements of the same
 * row), and out_h = W_UV[h] o'_h.
 *
 * Shapes: DeepSeek-V2-Lite (16 heads, r 512, rope 64, nope 128, v 128) and a
 * tiny one (1 and 3 heads, r 32, rope 8, nope 16, v 16); T = 1, 17, 300,
 * 2000 tokens; decode (one query at T-1) and a 5-query causal prefill block;
 * 1 and 2 threads; cache formats f32, f16, bf16 (all shapes) and q8_0, q4_0
 * (where r and r + rope are block multiples: the DeepSeek shape; at 2000
 * tokens the DeepSeek shape runs f32 and q8_0 only, to bound the float64
 * expansion time; the tiny shapes cover f16/bf16 at 2000 tokens).
 *
 * Errors are max |got - want| over every output element, divided by
 * max |want| (outputs are O(1) averages of O(1) values, so this is a relative
 * error of the output's scale):
 *  - kernel vs expanded on the latent the cache actually holds (read back
 *    from its segments with the reference dequantizers): <= 1e-4. What is
 *    left is f32 arithmetic (q' rounded to f32, f32 dots over <= 576
 *    elements, a polynomial exp, online-softmax rescaling, f32 o' before the
 *    float64 W_UV product): each is ~1e-6 relative; observed ~1e-6. A real
 *    defect (wrong row stride, missing rope part, V not aliasing the latent,
 *    off-by-one mask) is O(1).
 *  - the library's float64 reference kvs_attn_ref on the same latent
 *    segments vs expanded: <= 1e-5 (only q' and o' are rounded to f32).
 *  - quantized caches vs the exact (unquantized) expanded result: the
 *    storage error itself (relative element error f16 ~2^-11, bf16 ~2^-8,
 *    q8_0 ~absmax/254, q4_0 ~absmax/16, moving scores of std ~2 and so the
 *    softmax weights), bounded loosely per format: f16 5e-3, bf16 4e-2,
 *    q8_0 8e-2 (observed over several seeds at most 1e-3, 8e-3, 1.9e-2:
 *    4-5x margin) and q4_0 0.6 (observed 0.23: only a sanity bound; its
 *    kernel error is held to 1e-4 by the first check like every format).
 *  - decode with many heads (>= KVS_ATTN_LATENT_MIN_ROWS) over a q8_0 cache:
 *    the latent kernel scores with the query quantized to int8 per 32-element
 *    block, so "kernel vs expanded" is bounded by that quantization, 5e-2
 *    (observed 1.4e-2); the kernel must equal kvs_attn_ref run with that
 *    dequantized query within 1e-4 (observed 1e-6).
 * The cache must also hold exactly kvs_kv_scheme_bytes(scheme, T) bytes
 * after reserving T positions.
 *
 * KVS_SKIP_SLOW=1 (and sanitizer builds, unless KVS_SKIP_SLOW=0) drop the
 * 2000-token DeepSeek-shape cases, whose float64 expansion dominates. */
#include <string.h>

#include "attn/attn.h"
#include "attn/attn_latent.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "kv/kv_cache.h"
#include "kv/kv_scheme.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define KVS_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVS_TEST_SANITIZED 1
#endif
#endif
#ifndef KVS_TEST_SANITIZED
#define KVS_TEST_SANITIZED 0
#endif

#define NQ_MAX 5 /* queries per prefill block; decode uses the last one */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

typedef struct shape {
    const char *name;
    int H, r, dr, dn, dv; /* heads, latent rank, rope dim, nope dim, value dim */
} shape;

/* Worst error seen per check kind, for the summary line. */
enum { W_KERNEL, W_REF, W_EXACT_F16, W_EXACT_BF16, W_EXACT_Q8, W_EXACT_Q4, W_INT8Q, W_INT8Q_REF, W_COUNT };
static double g_worst[W_COUNT];
static const char *const g_worst_name[W_COUNT] = {"kernel vs expanded (same latent)", "f64 ref vs expanded",
                                                  "f16 cache vs exact", "bf16 cache vs exact",
                                                  "q8_0 cache vs exact", "q4_0 cache vs exact",
                                                  "q8_0 int8-query decode vs expanded", "q8_0 int8-query decode vs ref"};

/* Random model pieces for one (shape, T). */
typedef struct mla_inputs {
    shape s;
    int T;
    float *rows;    /* (T, r + dr): [c_t ; k_rope_t]                          */
    double *wukT;   /* (H, r, dn): W_UK[h] transposed, for the expansion       */
    double *wuvT;   /* (H, r, dv): W_UV[h] transposed                          */
    double *wuk;    /* (H, dn, r)                                              */
    double *wuv;    /* (H, dv, r)                                              */
    float *qn;      /* (NQ_MAX, H, dn)                                         */
    float *qr;      /* (NQ_MAX, H, dr)                                         */
    int32_t pos[NQ_MAX];
    int nq;         /* queries in the prefill block: min(NQ_MAX, T)            */
} mla_inputs;

static void inputs_free(mla_inputs *in) {
    free(in->rows); free(in->wukT); free(in->wuvT); free(in->wuk); free(in->wuv); free(in->qn); free(in->qr);
}

static void inputs_make(mla_inputs *in, shape s, int T) {
    memset(in, 0, sizeof *in);
    in->s = s;
    in->T = T;
    const int D = s.r + s.dr;
    in->rows = malloc(sizeof(float) * (size_t)T * D);
    in->wuk = malloc(sizeof(double) * (size_t)s.H * s.dn * s.r);
    in->wuv = malloc(sizeof(double) * (size_t)s.H * s.dv * s.r);
    in->wukT = malloc(sizeof(double) * (size_t)s.H * s.dn * s.r);
    in->wuvT = malloc(sizeof(double) * (size_t)s.H * s.dv * s.r);
    in->qn = malloc(sizeof(float) * (size_t)NQ_MAX * s.H * s.dn);
    in->qr = malloc(sizeof(float) * (size_t)NQ_MAX * s.H * s.dr);
    /* c, k_rope ~ N(0,1); W ~ N(0, 1/r) so k_nope and v are ~N(0,1); queries
     * ~N(0,4) so scores have std ~2: a softmax neither flat nor one-hot. */
    for (size_t i = 0; i < (size_t)T * D; i++) in->rows[i] = test_rng_normal(&g_rng);
    const double ws = 1.0 / sqrt((double)s.r);
    for (int h = 0; h < s.H; h++) {
        for (int j = 0; j < s.dn; j++)
            for (int i = 0; i < s.r; i++) {
                double w = (double)test_rng_normal(&g_rng) * ws;
                in->wuk[((size_t)h * s.dn + j) * s.r + i] = w;
                in->wukT[((size_t)h * s.r + i) * s.dn + j] = w;
            }
        for (int j = 0; j < s.dv; j++)
            for (int i = 0; i < s.r; i++) {
                double w = (double)test_rng_normal(&g_rng) * ws;
                in->wuv[((size_t)h * s.dv + j) * s.r + i] = w;
                in->wuvT[((size_t)h * s.r + i) * s.dv + j] = w;
            }
    }
    for (size_t i = 0; i < (size_t)NQ_MAX * s.H * s.dn; i++) in->qn[i] = 2.0f * test_rng_normal(&g_rng);
    for (size_t i = 0; i < (size_t)NQ_MAX * s.H * s.dr; i++) in->qr[i] = 2.0f * test_rng_normal(&g_rng);
    in->nq = T < NQ_MAX ? T : NQ_MAX;
    for (int i = 0; i < in->nq; i++) in->pos[i] = T - in->nq + i;
}

/* out (n, d) = lat (n, ld: first r columns) x wT (r, d) in float64. The
 * hot loop of the test (the DeepSeek shape at 2000 tokens expands 4G
 * multiply-adds per cache format), so it keeps a 4-token x 4-column block of
 * sums in registers (GCC/Clang vector extension: two doubles per vector, any
 * target). d must be a multiple of 4. */
typedef double v2d __attribute__((vector_size(16)));

static inline v2d load2(const double *p) {
    v2d v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void expand_rows(const double *lat, int ld, int n, const double *wT, int r, int d, double *out) {
    for (int t = 0; t < n; t += 4) {
        const int nt = n - t < 4 ? n - t : 4;
        const double *l[4];
        for (int k = 0; k < 4; k++) l[k] = lat + (size_t)(t + (k < nt ? k : 0)) * ld; /* pad with token t */
        for (int j = 0; j < d; j += 4) {
            v2d a[4][2];
            memset(a, 0, sizeof a);
            for (int i = 0; i < r; i++) {
                const v2d w0 = load2(wT + (size_t)i * d + j), w1 = load2(wT + (size_t)i * d + j + 2);
                for (int k = 0; k < 4; k++) {
                    const v2d b = {l[k][i], l[k][i]};
                    a[k][0] += b * w0;
                    a[k][1] += b * w1;
                }
            }
            for (int k = 0; k < nt; k++) memcpy(out + (size_t)(t + k) * d + j, a[k], sizeof a[k]);
        }
    }
}

/* The expanded computation for heads [lo, hi): materialise K and V of each
 * head from the latent rows `lat` (T, r + dr) and attend every prefill query
 * (causal) in float64. out: (nq, H, dv). */
typedef struct expand_ctx {
    const mla_inputs *in;
    const double *lat;
    double *out;
    double *scratch; /* per head: K (T, dn), V (T, dv), scores (T) */
    size_t scratch_per_head;
} expand_ctx;

static void expand_heads(void *vctx, int64_t lo, int64_t hi) {
    const expand_ctx *x = vctx;
    const mla_inputs *in = x->in;
    const shape s = in->s;
    const int T = in->T, D = s.r + s.dr;
    const double scale = 1.0 / sqrt((double)(s.dn + s.dr));
    for (int64_t h = lo; h < hi; h++) {
        double *K = x->scratch + (size_t)h * x->scratch_per_head, *V = K + (size_t)T * s.dn, *p = V + (size_t)T * s.dv;
        expand_rows(x->lat, D, T, in->wukT + (size_t)h * s.r * s.dn, s.r, s.dn, K);
        expand_rows(x->lat, D, T, in->wuvT + (size_t)h * s.r * s.dv, s.r, s.dv, V);
        for (int qi = 0; qi < in->nq; qi++) {
            const float *qn = in->qn + ((size_t)qi * s.H + h) * s.dn, *qr = in->qr + ((size_t)qi * s.H + h) * s.dr;
            const int n = in->pos[qi] + 1; /* causal: tokens 0..pos */
            double m = -INFINITY;
            for (int t = 0; t < n; t++) {
                double d = 0.0;
                for (int j = 0; j < s.dn; j++) d += (double)qn[j] * K[(size_t)t * s.dn + j];
                for (int j = 0; j < s.dr; j++) d += (double)qr[j] * x->lat[(size_t)t * D + s.r + j];
                p[t] = d * scale;
                if (p[t] > m) m = p[t];
            }
            double sum = 0.0;
            for (int t = 0; t < n; t++) sum += (p[t] = exp(p[t] - m));
            double *o = x->out + ((size_t)qi * s.H + h) * s.dv;
            for (int j = 0; j < s.dv; j++) o[j] = 0.0;
            for (int t = 0; t < n; t++)
                for (int j = 0; j < s.dv; j++) o[j] += p[t] / sum * V[(size_t)t * s.dv + j];
        }
    }
}

static void expanded(kvs_pool *pool, const mla_inputs *in, const double *lat, double *out) {
    const shape s = in->s;
    expand_ctx x = {.in = in, .lat = lat, .out = out};
    x.scratch_per_head = (size_t)in->T * (s.dn + s.dv + 1);
    x.scratch = malloc(sizeof(double) * x.scratch_per_head * (size_t)s.H);
    kvs_pool_for(pool, s.H, 2, expand_heads, &x);
    free(x.scratch);
}

/* max |got - want| / max |want| over n elements. */
static double rel_err(const double *want, const double *got, size_t n) {
    double e = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= e)) e = d; /* NaN propagates */
        if (fabs(want[i]) > m) m = fabs(want[i]);
    }
    return m > 0.0 ? e / m : e;
}

/* Absorbed queries q' (n, H, r + dr) for prefill queries [q0, q0 + n). */
static void absorb_queries(const mla_inputs *in, int q0, int n, float *qa) {
    const shape s = in->s;
    const int D = s.r + s.dr;
    for (int qi = 0; qi < n; qi++)
        for (int h = 0; h < s.H; h++) {
            const float *qn = in->qn + ((size_t)(q0 + qi) * s.H + h) * s.dn;
            const float *qr = in->qr + ((size_t)(q0 + qi) * s.H + h) * s.dr;
            float *o = qa + ((size_t)qi * s.H + h) * D;
            const double *w = in->wuk + (size_t)h * s.dn * s.r; /* (dn, r) */
            for (int i = 0; i < s.r; i++) {
                double acc = 0.0;
                for (int j = 0; j < s.dn; j++) acc += w[(size_t)j * s.r + i] * qn[j];
                o[i] = (float)acc;
            }
            memcpy(o + s.r, qr, sizeof(float) * (size_t)s.dr);
        }
}

/* out (n, H, dv) = W_UV[h] o'_h for latent outputs o' (n, H, r). */
static void project_out(const mla_inputs *in, int n, const float *ol, double *out) {
    const shape s = in->s;
    for (int qi = 0; qi < n; qi++)
        for (int h = 0; h < s.H; h++) {
            const float *o = ol + ((size_t)qi * s.H + h) * s.r;
            const double *w = in->wuv + (size_t)h * s.dv * s.r;
            for (int j = 0; j < s.dv; j++) {
                double acc = 0.0;
                for (int i = 0; i < s.r; i++) acc += w[(size_t)j * s.r + i] * o[i];
                out[((size_t)qi * s.H + h) * s.dv + j] = acc;
            }
        }
}

static double exact_tol(kvs_dtype t, int *slot) {
    switch (t) {
    case KVS_TYPE_F16: *slot = W_EXACT_F16; return 5e-3;
    case KVS_TYPE_BF16: *slot = W_EXACT_BF16; return 4e-2;
    case KVS_TYPE_Q8_0: *slot = W_EXACT_Q8; return 8e-2;
    case KVS_TYPE_Q4_0: *slot = W_EXACT_Q4; return 0.6;
    default: *slot = W_KERNEL; return 1e-4;
    }
}

static void note(int slot, double e) {
    if (!(e <= g_worst[slot])) g_worst[slot] = e;
}

/* One cache format for one set of inputs: build the latent cache, read back
 * the latent it holds, expand it in float64, and compare the absorbed kernel
 * (decode and prefill, 1 and 2 threads) and the float64 reference against it;
 * for lossy formats also compare with the exact expansion `exact`. */
static void run_format(kvs_pool *pools[2], const mla_inputs *in, kvs_dtype type, uint32_t page, const double *exact) {
    const shape s = in->s;
    const int T = in->T, D = s.r + s.dr, nq = in->nq;
    char what[160];
    snprintf(what, sizeof what, "%s heads %d T %d %s page %u", s.name, s.H, T, kvs_dtype_name(type), page);

    kvs_kv_scheme sc;
    memset(&sc, 0, sizeof sc);
    sc.store = KVS_KV_STORE_LATENT;
    sc.layout = KVS_KV_LAYOUT_BLOCK;
    sc.latent_rank = (uint32_t)s.r;
    sc.rope_dim = (uint32_t)s.dr;
    sc.shared_from = -1;
    sc.k_type = type;
    sc.v_type = type;
    sc.page_tokens = page;
    CHECKF(kvs_kv_scheme_validate(&sc) == KVS_OK, "%s: scheme invalid", what);
    kvs_kv_cache *kv = NULL;
    CHECKF(kvs_kv_cache_new(&sc, 1, (uint32_t)T, 0, &kv) == KVS_OK, "%s: cache_new", what);
    if (!kv) return;
    CHECKF(kvs_kv_cache_reserve(kv, (uint64_t)T) == KVS_OK, "%s: reserve", what);
    CHECKF(kv->bytes == kvs_kv_scheme_bytes(&sc, (uint64_t)T), "%s: cache holds %llu bytes, scheme says %llu", what,
           (unsigned long long)kv->bytes, (unsigned long long)kvs_kv_scheme_bytes(&sc, (uint64_t)T));
    CHECKF(kv->bytes == ((uint64_t)T + page - 1) / page * page * kvs_row_bytes(type, D), "%s: %llu bytes", what,
           (unsigned long long)kv->bytes);
    /* store in uneven chunks, as prefill then decode would */
    static const int chunks[] = {1, 7, 64, 200, 3};
    for (int p = 0, ci = 0; p < T; ci++) {
        int n = chunks[ci % 5] < T - p ? chunks[ci % 5] : T - p;
        CHECKF(kvs_kv_cache_store(kv, 0, (uint64_t)p, n, in->rows + (size_t)p * D, NULL) == KVS_OK, "%s: store", what);
        p += n;
    }
    int max_segs = kvs_kv_cache_max_segments(kv, 0);
    kvs_kv_segment *segs = calloc((size_t)max_segs, sizeof *segs);
    int n_segs = kvs_kv_cache_segments(kv, 0, (uint64_t)T, segs, max_segs);

    /* the latent the cache holds, (T, D), via the reference dequantizer */
    double *lat = malloc(sizeof(double) * (size_t)T * D);
    float *row = malloc(sizeof(float) * (size_t)D);
    const kvs_type_traits *ref = kvs_type_traits_ref(type);
    int64_t next = 0;
    for (int g = 0; g < n_segs; g++) {
        const kvs_kv_segment *sg = &segs[g];
        CHECKF(sg->pos0 == next && sg->v == sg->k && sg->k_row == kvs_row_bytes(type, D) && sg->v_row == sg->k_row &&
                   sg->k_type == (uint32_t)type && sg->v_type == (uint32_t)type,
               "%s: segment %d (pos0 %lld, n %lld) is not a latent row view", what, g, (long long)sg->pos0,
               (long long)sg->n);
        for (int64_t t = 0; t < sg->n && sg->pos0 + t < T; t++) {
            ref->to_float(sg->k + (size_t)t * sg->k_row, row, D);
            for (int e = 0; e < D; e++) lat[(size_t)(sg->pos0 + t) * D + e] = row[e];
        }
        next = sg->pos0 + sg->n;
    }
    CHECKF(next == T, "%s: segments cover %lld of %d positions", what, (long long)next, T);
    size_t changed = 0;
    for (size_t i = 0; i < (size_t)T * D; i++) changed += lat[i] != (double)in->rows[i];
    if (type == KVS_TYPE_F32) CHECKF(changed == 0, "%s: %zu latent elements changed in f32 storage", what, changed);

    const size_t n_out = (size_t)nq * s.H * s.dv;
    double *want = malloc(sizeof(double) * n_out), *got = malloc(sizeof(double) * n_out);
    if (changed) expanded(pools[1], in, lat, want);
    else memcpy(want, exact, sizeof(double) * n_out); /* same latent: the exact expansion */
    float *qa = malloc(sizeof(float) * (size_t)nq * s.H * D), *ol = malloc(sizeof(float) * (size_t)nq * s.H * s.r);
    absorb_queries(in, 0, nq, qa);
    kvs_attn_args a = {.segs = segs, .n_segs = n_segs, .n_kv_heads = 1, .head_dim_k = D, .head_dim_v = s.r,
                       .q = qa, .n_q = nq, .n_head = s.H, .q_pos = in->pos, .scale = 1.0f / sqrtf((float)(s.dn + s.dr)),
                       .out = ol};

    /* float64 reference kernel on the latent segments: prefill block */
    memset(ol, 0, sizeof(float) * (size_t)nq * s.H * s.r);
    kvs_attn_ref(&a);
    project_out(in, nq, ol, got);
    double e = rel_err(want, got, n_out);
    note(W_REF, e);
    CHECKF(e <= 1e-5, "%s: kvs_attn_ref absorbed vs expanded: rel err %.3g", what, e);

    const size_t last = (size_t)(nq - 1) * s.H * s.dv; /* decode query = last of the block */
    for (int th = 0; th < 2; th++) {
        kvs_attn *at = NULL;
        CHECK(kvs_attn_new(th + 1, &at) == KVS_OK);
        if (!at) break;
        /* prefill block: nq queries at T-nq .. T-1, causal */
        for (size_t i = 0; i < (size_t)nq * s.H * s.r; i++) ol[i] = NAN;
        a.q = qa;
        a.n_q = nq;
        a.q_pos = in->pos;
        CHECKF(kvs_attn_run(at, pools[th], &a) == KVS_OK, "%s: attn_run prefill", what);
        project_out(in, nq, ol, got);
        e = rel_err(want, got, n_out);
        note(W_KERNEL, e);
        CHECKF(e <= 1e-4, "%s threads %d: prefill %d queries absorbed vs expanded: rel err %.3g", what, th + 1, nq, e);
        int slot;
        double tol = exact_tol(type, &slot);
        if (type != KVS_TYPE_F32) {
            e = rel_err(exact, got, n_out);
            note(slot, e);
            CHECKF(e <= tol, "%s threads %d: prefill vs exact (unquantized) expansion: rel err %.3g > %.3g", what,
                   th + 1, e, tol);
        }
        /* decode: one query at T-1 */
        for (size_t i = 0; i < (size_t)s.H * s.r; i++) ol[i] = NAN;
        a.q = qa + (size_t)(nq - 1) * s.H * D;
        a.n_q = 1;
        a.q_pos = &in->pos[nq - 1];
        CHECKF(kvs_attn_run(at, pools[th], &a) == KVS_OK, "%s: attn_run decode", what);
        project_out(in, 1, ol, got);
        e = rel_err(want + last, got, (size_t)s.H * s.dv);
        /* many heads over q8_0 rows: the latent kernel scores with the query
         * quantized to int8 per 32-block (attn_latent.h); that moves scores
         * of std ~2 by ~1e-2 (bound 5e-2, observed ~1.5e-2), and the kernel
         * must match the float64 reference given that quantized query */
        const bool int8_q = type == KVS_TYPE_Q8_0 && s.H >= KVS_ATTN_LATENT_MIN_ROWS;
        note(int8_q ? W_INT8Q : W_KERNEL, e);
        CHECKF(e <= (int8_q ? 5e-2 : 1e-4), "%s threads %d: decode absorbed vs expanded: rel err %.3g", what, th + 1, e);
        if (int8_q) {
            float *qq = malloc(sizeof(float) * (size_t)s.H * D), *ol2 = malloc(sizeof(float) * (size_t)s.H * s.r);
            int16_t *qi = malloc(sizeof(int16_t) * (size_t)D);
            float *qd = malloc(sizeof(float) * (size_t)(D / 32));
            double *got2 = malloc(sizeof(double) * (size_t)s.H * s.dv);
            for (int h = 0; h < s.H; h++) {
                kvs_attn_latent_quant_q(a.q + (size_t)h * D, D, 1.0f, qi, qd);
                for (int c = 0; c < D; c++) qq[(size_t)h * D + c] = (float)qi[c] * qd[c / 32];
            }
            kvs_attn_args aq = a;
            aq.q = qq;
            aq.out = ol2;
            kvs_attn_ref(&aq);
            project_out(in, 1, ol2, got2);
            e = rel_err(got2, got, (size_t)s.H * s.dv);
            note(W_INT8Q_REF, e);
            CHECKF(e <= 1e-4, "%s threads %d: decode vs float64 ref with the int8 query: rel err %.3g", what, th + 1, e);
            free(qq); free(ol2); free(qi); free(qd); free(got2);
        }
        if (type != KVS_TYPE_F32) {
            e = rel_err(exact + last, got, (size_t)s.H * s.dv);
            note(slot, e);
            CHECKF(e <= tol, "%s threads %d: decode vs exact expansion: rel err %.3g > %.3g", what, th + 1, e, tol);
        }
        kvs_attn_free(at);
    }
    free(qa); free(ol); free(want); free(got); free(lat); free(row); free(segs);
    kvs_kv_cache_free(kv);
}

/* formats: every one whose block size divides r and r + dr, or only f32 and
 * q8_0 when `few` (the 2000-token DeepSeek shape: each lossy format costs one
 * more float64 expansion of 4G multiply-adds) */
static void run_shape(kvs_pool *pools[2], shape s, int T, uint32_t page, int few) {
    mla_inputs in;
    inputs_make(&in, s, T);
    const int D = s.r + s.dr;
    /* exact expansion: on the f32 latent as generated */
    double *lat = malloc(sizeof(double) * (size_t)T * D);
    for (size_t i = 0; i < (size_t)T * D; i++) lat[i] = in.rows[i];
    double *exact = malloc(sizeof(double) * (size_t)in.nq * s.H * s.dv);
    expanded(pools[1], &in, lat, exact);
    static const kvs_dtype types[] = {KVS_TYPE_F32, KVS_TYPE_F16, KVS_TYPE_BF16, KVS_TYPE_Q8_0, KVS_TYPE_Q4_0};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const kvs_type_traits *tr = kvs_type_traits_of(types[ti]);
        if (!tr || s.r % tr->block_size || D % tr->block_size) continue;
        if (few && types[ti] != KVS_TYPE_F32 && types[ti] != KVS_TYPE_Q8_0) continue;
        run_format(pools, &in, types[ti], page, exact);
    }
    free(lat);
    free(exact);
    inputs_free(&in);
}

int main(void) {
    kvs_dtype_init();
    const char *skip = getenv("KVS_SKIP_SLOW");
    const int slow = skip && *skip ? strcmp(skip, "0") == 0 : !KVS_TEST_SANITIZED;
    kvs_pool *pools[2] = {NULL, NULL};
    CHECK(kvs_pool_new(1, &pools[0]) == KVS_OK);
    CHECK(kvs_pool_new(2, &pools[1]) == KVS_OK);
    if (!pools[0] || !pools[1]) return test_finish("mla");

    static const shape lite = {"deepseek-v2-lite", 16, 512, 64, 128, 128};
    static const shape tiny1 = {"tiny", 1, 32, 8, 16, 16}, tiny3 = {"tiny", 3, 32, 8, 16, 16};
    static const int Ts[] = {1, 17, 300, 2000};
    static const uint32_t pages[] = {16, 64, 256};
    for (size_t i = 0; i < 4; i++) {
        run_shape(pools, tiny1, Ts[i], pages[i % 3], 0);
        run_shape(pools, tiny3, Ts[i], pages[(i + 1) % 3], 0);
        if (Ts[i] < 2000 || slow) run_shape(pools, lite, Ts[i], 256, Ts[i] >= 2000);
    }
    if (!slow) printf("skipped the 2000-token %s cases (KVS_SKIP_SLOW / sanitizer build)\n", lite.name);
    for (int w = 0; w < W_COUNT; w++) printf("  worst %-34s %.3g\n", g_worst_name[w], g_worst[w]);
    kvs_pool_free(pools[0]);
    kvs_pool_free(pools[1]);
    return test_finish("mla");
}
