/* The retrofit plan from calibration statistics: which layers share an
 * earlier layer's KV (least relative error of the substitution), which
 * rotary pairs stay exact (mode KEEP: largest key x query energy per KV
 * head), the principal subspaces of K and V (eigenvectors of the second
 * moment matrices, LAPACKE dsyevd) and per-layer ranks (fixed, or chosen
 * greedily from the normalized spectra under a byte budget). */
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "retrofit/retrofit.h"

kvs_status kvs_lowrank_eig(const double *a, int32_t n, double *w, double *vec) {
    double *m = kvs_malloc(sizeof(double) * (size_t)n * n);
    double *ew = kvs_malloc(sizeof(double) * (size_t)n);
    if (!m || !ew) { kvs_free(m); kvs_free(ew); return kvs_fail(KVS_ERR_NOMEM, "eig: out of memory"); }
    memcpy(m, a, sizeof(double) * (size_t)n * n);
    /* column-major: eigenvector j is m[j*n .. j*n+n), eigenvalues ascending */
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', n, m, n, ew);
    if (info != 0) {
        kvs_free(m);
        kvs_free(ew);
        return kvs_fail(KVS_ERR_INTERNAL, "eig: LAPACKE_dsyevd failed (info %d) on a %d x %d matrix", (int)info, n, n);
    }
    for (int32_t r = 0; r < n; r++) {
        w[r] = ew[n - 1 - r] > 0 ? ew[n - 1 - r] : 0;
        memcpy(vec + (size_t)r * n, m + (size_t)(n - 1 - r) * n, sizeof(double) * (size_t)n);
    }
    kvs_free(m);
    kvs_free(ew);
    return KVS_OK;
}

void kvs_retro_plan_free(kvs_retro_plan *p) {
    if (!p) return;
    for (int32_t i = 0; i < p->n_layer; i++) {
        if (p->k_basis) kvs_free(p->k_basis[i]);
        if (p->k_scale) kvs_free(p->k_scale[i]);
        if (p->k_dim) kvs_free(p->k_dim[i]);
        if (p->k_mean) kvs_free(p->k_mean[i]);
        if (p->v_mean) kvs_free(p->v_mean[i]);
        if (p->v_dim) kvs_free(p->v_dim[i]);
        if (p->v_scale) kvs_free(p->v_scale[i]);
        if (p->v_basis) kvs_free(p->v_basis[i]);
        if (p->keep_idx) kvs_free(p->keep_idx[i]);
    }
    kvs_free(p->rk); kvs_free(p->rv); kvs_free(p->keep); kvs_free(p->shared);
    kvs_free(p->k_basis); kvs_free(p->v_basis); kvs_free(p->k_scale); kvs_free(p->v_scale);
    kvs_free(p->k_dim); kvs_free(p->v_dim); kvs_free(p->k_mean); kvs_free(p->v_mean); kvs_free(p->keep_idx);
    kvs_free(p->k_lost); kvs_free(p->v_lost);
    kvs_free(p);
}

/* Relative squared error of using layer j's K and V in layer i. */
static double share_cost(const kvs_calib *c, int32_t i, int32_t j) {
    size_t L = (size_t)c->n_layer;
    double ek = (c->k2[i] + c->k2[j] - 2 * c->dot_k[i * L + j]) / (c->k2[i] > 0 ? c->k2[i] : 1);
    double ev = (c->v2[i] + c->v2[j] - 2 * c->dot_v[i * L + j]) / (c->v2[i] > 0 ? c->v2[i] : 1);
    return 0.5 * (ek + ev);
}

/* Pairs are of layers with the same default window (Gemma 3: sliding with
 * sliding, global with global), so a shared layer keeps its attention span. */
static void choose_shared(const kvs_calib *c, const uint32_t *window, int32_t n_share, int32_t *shared) {
    int32_t L = c->n_layer;
    for (int32_t i = 0; i < L; i++) shared[i] = -1;
    bool *is_src = kvs_calloc((size_t)L, sizeof(bool));
    if (!is_src) return;
    for (int32_t k = 0; k < n_share; k++) {
        double best = INFINITY;
        int32_t bi = -1, bj = -1;
        for (int32_t i = 1; i < L; i++) {
            if (shared[i] >= 0 || is_src[i]) continue;
            for (int32_t j = 0; j < i; j++) {
                if (shared[j] >= 0 || window[i] != window[j]) continue;
                double e = share_cost(c, i, j);
                if (e < best) { best = e; bi = i; bj = j; }
            }
        }
        if (bi < 0) break;
        shared[bi] = bj;
        is_src[bj] = true;
    }
    kvs_free(is_src);
}

/* Kept dims of one layer: the `pairs` rotary pairs per KV head with the
 * largest sqrt(E|k_pair|^2 E|q_pair|^2). Writes ascending dims, returns count. */
static int32_t choose_keep(const kvs_calib *c, int32_t l, int32_t pairs, kvs_rope_mode mode, int32_t n_rot,
                           int32_t *idx) {
    const int32_t dk = c->dk, kd = c->kd, np = n_rot / 2;
    const double *kk = c->kk + (size_t)l * kd * kd, *qq = c->qq + (size_t)l * kd;
    int32_t n = 0;
    char *taken = kvs_calloc((size_t)np, 1);
    if (!taken) return -1;
    for (int32_t g = 0; g < c->n_kv; g++) {
        memset(taken, 0, (size_t)np);
        for (int32_t k = 0; k < pairs && k < np; k++) {
            double best = -1;
            int32_t bp = -1;
            for (int32_t p = 0; p < np; p++) {
                if (taken[p]) continue;
                int32_t a = g * dk + (mode == KVS_ROPE_NEOX ? p : 2 * p);
                int32_t b = g * dk + (mode == KVS_ROPE_NEOX ? p + n_rot / 2 : 2 * p + 1);
                double ke = kk[(size_t)a * kd + a] + kk[(size_t)b * kd + b], qe = qq[a] + qq[b];
                double sc = sqrt(ke * qe);
                if (sc > best) { best = sc; bp = p; }
            }
            taken[bp] = 1;
            idx[n++] = g * dk + (mode == KVS_ROPE_NEOX ? bp : 2 * bp);
            idx[n++] = g * dk + (mode == KVS_ROPE_NEOX ? bp + n_rot / 2 : 2 * bp + 1);
        }
    }
    kvs_free(taken);
    /* ascending */
    for (int32_t i = 1; i < n; i++)
        for (int32_t j = i; j > 0 && idx[j - 1] > idx[j]; j--) { int32_t t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
    return n;
}

/* Eigen-decomposition of m restricted to the dims not in skip (nskip of
 * them), eigenvectors embedded back into d dims (zeros at skipped dims). */
static kvs_status sub_eig(const double *m, int32_t d, const int32_t *skip, int32_t nskip, double *w, double *vec) {
    int32_t n = d - nskip;
    int32_t *map = kvs_malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    double *sub = kvs_malloc(sizeof(double) * (size_t)(n ? n * n : 1));
    double *sv = kvs_malloc(sizeof(double) * (size_t)(n ? n * n : 1));
    if (!map || !sub || !sv) { kvs_free(map); kvs_free(sub); kvs_free(sv); return kvs_fail(KVS_ERR_NOMEM, "eig: out of memory"); }
    int32_t k = 0, s = 0;
    for (int32_t i = 0; i < d; i++) {
        if (s < nskip && skip[s] == i) { s++; continue; }
        map[k++] = i;
    }
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < n; j++) sub[(size_t)i * n + j] = m[(size_t)map[i] * d + map[j]];
    kvs_status st = n ? kvs_lowrank_eig(sub, n, w, sv) : KVS_OK;
    if (st == KVS_OK) {
        memset(vec, 0, sizeof(double) * (size_t)n * d);
        for (int32_t r = 0; r < n; r++)
            for (int32_t i = 0; i < n; i++) vec[(size_t)r * d + map[i]] = sv[(size_t)r * n + i];
    }
    kvs_free(map); kvs_free(sub); kvs_free(sv);
    return st;
}

static int32_t round_to(int32_t x, int32_t g, int32_t lo, int32_t hi) {
    int32_t r = (x + g / 2) / g * g;
    if (r < lo) r = lo;
    if (r > hi) r = hi;
    return r;
}

/* Per-direction RMS (sqrt(eigenvalue / tokens)), floored at 1e-3 of the
 * largest so an empty direction cannot blow up the stored coordinate. */
static void rms_scales(const double *w, int32_t r, uint64_t n_tokens, float *out) {
    double n = n_tokens ? (double)n_tokens : 1.0, top = r ? sqrt(w[0] / n) : 0.0;
    for (int32_t j = 0; j < r; j++) {
        double s = sqrt(w[j] / n);
        if (s < 1e-3 * top) s = 1e-3 * top;
        out[j] = s > 0 ? (float)s : 1.0f;
    }
}

/* D = sqrt(w / mean(w)), floored at 0.01: per-dim weights of unit mean square. */
static void normalize_weights(const double *w, int32_t n, float *out) {
    double mean = 0;
    for (int32_t i = 0; i < n; i++) mean += w[i];
    mean /= n > 0 ? n : 1;
    for (int32_t i = 0; i < n; i++) {
        double d = mean > 0 ? sqrt(w[i] / mean) : 1.0;
        out[i] = (float)(d < 0.01 ? 0.01 : d);
    }
}

/* Key dims weighted by the query energy that multiplies them; a rotary
 * pair shares one weight (RoPE mixes the two dims). */
static void key_weights(const kvs_calib *c, const kvs_hparams *hp, int32_t l, float *out) {
    const int32_t dk = c->dk, n_rot = hp->rope.n_dims < dk ? hp->rope.n_dims : dk, half = n_rot / 2;
    const double *qq = c->qq + (size_t)l * c->kd;
    double w[4096];
    for (int32_t i = 0; i < c->kd; i++) w[i] = qq[i];
    for (int32_t g = 0; g < c->n_kv; g++)
        for (int32_t p = 0; p < half; p++) {
            int32_t a = g * dk + (hp->rope.mode == KVS_ROPE_NEOX ? p : 2 * p);
            int32_t b = g * dk + (hp->rope.mode == KVS_ROPE_NEOX ? p + half : 2 * p + 1);
            w[a] = w[b] = 0.5 * (qq[a] + qq[b]);
        }
    normalize_weights(w, c->kd, out);
}

/* Value dims weighted by the squared norms of the W_o columns they feed
 * (summed over the query heads of the KV group). */
static kvs_status value_weights(const kvs_calib *c, const kvs_model *m, int32_t l, float *out) {
    /* read from the file, so every architecture's weight layout works */
    char name[96];
    snprintf(name, sizeof name, "blk.%d.attn_output.weight", l);
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(m->gguf, name);
    const int64_t n_in = t && t->n_dims == 2 ? t->ne[0] : 0, n_out = t && t->n_dims == 2 ? t->ne[1] : 0;
    const kvs_type_traits *tt = t ? kvs_type_traits_of(t->type) : NULL;
    const int32_t group = c->n_head / c->n_kv, dv = c->dv;
    double *col = kvs_calloc((size_t)(n_in ? n_in : 1), sizeof(double));
    float *row = kvs_malloc(sizeof(float) * (size_t)(n_in ? n_in : 1));
    double w[4096];
    if (!col || !row || !tt || !tt->to_float || c->vd > 4096 || n_in != (int64_t)c->n_head * dv) {
        kvs_free(col); kvs_free(row);
        return kvs_fail(KVS_ERR_UNSUPPORTED, "compress: cannot read layer %d's output projection '%s'", l, name);
    }
    const size_t row_bytes = kvs_row_bytes(t->type, n_in);
    for (int64_t r = 0; r < n_out; r++) {
        tt->to_float((const uint8_t *)t->data + (size_t)r * row_bytes, row, n_in);
        for (int64_t i = 0; i < n_in; i++) col[i] += (double)row[i] * row[i];
    }
    for (int32_t i = 0; i < c->vd; i++) w[i] = 0;
    for (int32_t h = 0; h < c->n_head; h++)
        for (int32_t e = 0; e < dv; e++) w[(h / group) * dv + e] += col[(size_t)h * dv + e];
    normalize_weights(w, c->vd, out);
    kvs_free(col);
    kvs_free(row);
    return KVS_OK;
}

/* out = D m D for per-dim weights D (NULL: copy). */
static void weigh(const double *m, const float *D, int32_t d, double *out) {
    for (int32_t i = 0; i < d; i++)
        for (int32_t j = 0; j < d; j++)
            out[(size_t)i * d + j] = m[(size_t)i * d + j] * (D ? (double)D[i] * D[j] : 1.0);
}

/* out = m - s s^T / N: the second moment about the mean (sum s of N rows). */
static void center(const double *m, const double *s, double N, int32_t d, double *out) {
    for (int32_t i = 0; i < d; i++)
        for (int32_t j = 0; j < d; j++) out[(size_t)i * d + j] = m[(size_t)i * d + j] - s[i] * s[j] / N;
}

typedef struct cand { double v; int32_t layer; bool key; } cand;

static int cand_cmp(const void *a, const void *b) {
    double x = ((const cand *)a)->v, y = ((const cand *)b)->v;
    return x < y ? 1 : x > y ? -1 : 0;
}

kvs_status kvs_retro_plan_build(const kvs_calib *c, const kvs_model *m, const kvs_retro_opts *o,
                                kvs_retro_plan **out) {
    *out = NULL;
    const kvs_hparams *hp = &m->hp;
    if (hp->n_layer != c->n_layer || hp->n_head_kv * hp->head_dim_k != c->kd || hp->n_head_kv * hp->head_dim_v != c->vd)
        return kvs_fail(KVS_ERR_INVALID_ARG, "compress: calibration statistics do not match the model");
    if (c->kd > 4096 || c->vd > 4096)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "compress: K/V width %d/%d above 4096", c->kd, c->vd);
    const int32_t L = c->n_layer, kd = c->kd, vd = c->vd;
    if (o->rank < 0 || o->budget < 0 || o->rope_keep < 0 || o->share < 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "compress: negative rank, budget, --rope-keep or --share");
    if (o->share >= L) return kvs_fail(KVS_ERR_INVALID_ARG, "--share %d: the model has only %d layers", o->share, L);
    if (o->mode != KVS_RETRO_NONE && o->rank > 0 && (o->rank > kd || o->rank > vd))
        return kvs_fail(KVS_ERR_INVALID_ARG, "--latent r=%d: rank larger than the layer's key/value width "
                        "(%d KV heads x head dim %d = %d)", o->rank, c->n_kv, c->dk, kd < vd ? kd : vd);
    const int32_t gran = o->granule > 0 ? o->granule : 8;
    if (o->mode != KVS_RETRO_NONE && o->rank > 0 && o->rank % gran)
        return kvs_fail(KVS_ERR_INVALID_ARG, "--latent r=%d: rank must be a multiple of %d for this element format",
                        o->rank, gran);
    if (o->mode == KVS_RETRO_KEEP && (o->rope_keep < 1 || 2 * o->rope_keep > hp->rope.n_dims))
        return kvs_fail(KVS_ERR_INVALID_ARG, "--rope-keep %d: keep 1..%d rotary pairs per KV head", o->rope_keep,
                        hp->rope.n_dims / 2);
    kvs_retro_plan *p = kvs_calloc(1, sizeof *p);
    if (!p) return kvs_fail(KVS_ERR_NOMEM, "compress: out of memory");
    p->mode = o->mode;
    p->n_layer = L;
    p->kd = kd;
    p->vd = vd;
    size_t n = (size_t)L;
    p->rk = kvs_calloc(n, sizeof(int32_t)); p->rv = kvs_calloc(n, sizeof(int32_t));
    p->keep = kvs_calloc(n, sizeof(int32_t)); p->shared = kvs_calloc(n, sizeof(int32_t));
    p->k_basis = kvs_calloc(n, sizeof(float *)); p->v_basis = kvs_calloc(n, sizeof(float *));
    p->k_scale = kvs_calloc(n, sizeof(float *)); p->v_scale = kvs_calloc(n, sizeof(float *));
    p->k_dim = kvs_calloc(n, sizeof(float *)); p->v_dim = kvs_calloc(n, sizeof(float *));
    p->k_mean = kvs_calloc(n, sizeof(float *)); p->v_mean = kvs_calloc(n, sizeof(float *));
    double *ktr = kvs_calloc(n, sizeof(double)), *vtr = kvs_calloc(n, sizeof(double));
    double *kvar = kvs_calloc(n, sizeof(double)), *vvar = kvs_calloc(n, sizeof(double));
    double *wm = kvs_malloc(sizeof(double) * (size_t)(kd > vd ? kd : vd) * (kd > vd ? kd : vd));
    double *cm = kvs_malloc(sizeof(double) * (size_t)(kd > vd ? kd : vd) * (kd > vd ? kd : vd));
    p->keep_idx = kvs_calloc(n, sizeof(int32_t *));
    p->k_lost = kvs_calloc(n, sizeof(double)); p->v_lost = kvs_calloc(n, sizeof(double));
    double *kw = kvs_malloc(sizeof(double) * n * kd), *vw = kvs_malloc(sizeof(double) * n * vd);
    double *kvec = kvs_malloc(sizeof(double) * n * kd * kd), *vvec = kvs_malloc(sizeof(double) * n * vd * vd);
    cand *cands = kvs_malloc(sizeof(cand) * n * (size_t)(kd + vd));
    /* layers the architecture gives a window (Gemma 3's sliding layers) keep
     * their window cache: only unbounded full layers become latent */
    kvs_kv_scheme *defs = kvs_calloc(n, sizeof *defs);
    uint32_t *window = kvs_calloc(n, sizeof *window);
    bool *skip = kvs_calloc(n, sizeof *skip);
    kvs_status st = KVS_OK;
    if (defs && window && skip) {
        m->ops->default_schemes(m, KVS_TYPE_F16, defs);
        for (int32_t l = 0; l < L; l++) {
            window[l] = defs[l].window;
            skip[l] = defs[l].window != 0 || defs[l].store != KVS_KV_STORE_FULL;
        }
    }
    kvs_free(defs);
    if (!p->rk || !p->rv || !p->keep || !p->shared || !p->k_basis || !p->v_basis || !p->k_scale || !p->v_scale || !p->k_dim || !p->v_dim || !p->k_mean || !p->v_mean || !ktr || !vtr || !kvar || !vvar || !wm || !cm || !p->keep_idx || !p->k_lost ||
        !p->v_lost || !kw || !vw || !kvec || !vvec || !cands || !window || !skip)
        st = kvs_fail(KVS_ERR_NOMEM, "compress: out of memory");
    if (st == KVS_OK) choose_shared(c, window, o->share, p->shared);
    /* spectra of every layer with its own cache */
    for (int32_t l = 0; st == KVS_OK && o->mode != KVS_RETRO_NONE && l < L; l++) {
        if (p->shared[l] >= 0 || skip[l]) continue;
        const double *kk = (o->mode == KVS_RETRO_PRE ? c->kk : c->kk_rot) + (size_t)l * kd * kd;
        if (o->mode == KVS_RETRO_KEEP) {
            p->keep_idx[l] = kvs_malloc(sizeof(int32_t) * (size_t)kd);
            if (!p->keep_idx[l]) { st = kvs_fail(KVS_ERR_NOMEM, "compress: out of memory"); break; }
            p->keep[l] = choose_keep(c, l, o->rope_keep, hp->rope.mode, hp->rope.n_dims, p->keep_idx[l]);
        }
        if (o->weighted) {
            p->k_dim[l] = kvs_malloc(sizeof(float) * (size_t)kd);
            p->v_dim[l] = kvs_malloc(sizeof(float) * (size_t)vd);
            if (!p->k_dim[l] || !p->v_dim[l]) { st = kvs_fail(KVS_ERR_NOMEM, "compress: out of memory"); break; }
            key_weights(c, hp, l, p->k_dim[l]);
            if ((st = value_weights(c, m, l, p->v_dim[l])) != KVS_OK) break;
        }
        /* centered (--center): the mean is stored exactly (or cancels in
         * softmax); otherwise the mean is 0 and the directions are those of
         * the raw second moments, which map 0 to 0 - measured better at low
         * rank (an attention sink's near-zero value stays near zero) */
        const double *ksum = (o->mode == KVS_RETRO_PRE ? c->ks : c->ks_rot) + (size_t)l * kd;
        const double *vsum = c->vs + (size_t)l * vd;
        p->k_mean[l] = kvs_malloc(sizeof(float) * (size_t)kd);
        p->v_mean[l] = kvs_malloc(sizeof(float) * (size_t)vd);
        if (!p->k_mean[l] || !p->v_mean[l]) { st = kvs_fail(KVS_ERR_NOMEM, "compress: out of memory"); break; }
        const double N = c->n_tokens ? (double)c->n_tokens : 1.0;
        for (int32_t i = 0; i < kd; i++) p->k_mean[l][i] = (float)(ksum[i] / N);
        for (int32_t i = 0; i < vd; i++) p->v_mean[l][i] = (float)(vsum[i] / N);
        if (!o->center) {
            memset(p->k_mean[l], 0, sizeof(float) * (size_t)kd);
            memset(p->v_mean[l], 0, sizeof(float) * (size_t)vd);
            memcpy(cm, kk, sizeof(double) * (size_t)kd * kd);
        } else
        center(kk, ksum, N, kd, cm);
        weigh(cm, p->k_dim[l], kd, wm);
        for (int32_t i = 0; i < kd; i++) {
            double dd = p->k_dim[l] ? (double)p->k_dim[l][i] * p->k_dim[l][i] : 1.0;
            bool kept = false;
            for (int32_t j = 0; j < p->keep[l]; j++) kept |= p->keep_idx[l][j] == i;
            if (!kept) kvar[l] += dd * (kk[(size_t)i * kd + i] - ksum[i] * ksum[i] / N);
        }
        for (int32_t i = 0; i < kd; i++) ktr[l] += wm[(size_t)i * kd + i];
        st = sub_eig(wm, kd, p->keep_idx[l], p->keep[l], kw + (size_t)l * kd, kvec + (size_t)l * kd * kd);
        if (!o->center) memcpy(cm, c->vv + (size_t)l * vd * vd, sizeof(double) * (size_t)vd * vd);
        else
        center(c->vv + (size_t)l * vd * vd, vsum, N, vd, cm);
        weigh(cm, p->v_dim[l], vd, wm);
        for (int32_t i = 0; i < vd; i++) {
            double dd = p->v_dim[l] ? (double)p->v_dim[l][i] * p->v_dim[l][i] : 1.0;
            vvar[l] += dd * (c->vv[(size_t)l * vd * vd + (size_t)i * vd + i] - vsum[i] * vsum[i] / N);
        }
        for (int32_t i = 0; i < vd; i++) vtr[l] += wm[(size_t)i * vd + i];
        if (st == KVS_OK) st = kvs_lowrank_eig(wm, vd, vw + (size_t)l * vd, vvec + (size_t)l * vd * vd);
    }
    /* ranks */
    if (st == KVS_OK && o->mode != KVS_RETRO_NONE) {
        size_t nc = 0;
        double fixed_el = 0;
        for (int32_t l = 0; l < L; l++) {
            if (p->shared[l] >= 0 || skip[l]) continue;
            int32_t mk = kd - p->keep[l];
            fixed_el += p->keep[l];
            /* each direction's share of its layer's variance (the centered
             * trace): the mean direction of uncentered keys would otherwise
             * make every other key direction look negligible */
            double tk = kvar[l], tv = vvar[l];
            for (int32_t i = 0; i < mk; i++) cands[nc++] = (cand){kw[(size_t)l * kd + i] / (tk > 0 ? tk : 1), l, true};
            for (int32_t i = 0; i < vd; i++) cands[nc++] = (cand){vw[(size_t)l * vd + i] / (tv > 0 ? tv : 1), l, false};
            p->rk[l] = p->rv[l] = 0;
        }
        if (o->rank > 0) {
            for (int32_t l = 0; l < L; l++) {
                if (p->shared[l] >= 0 || skip[l]) continue;
                p->rk[l] = o->rank < kd - p->keep[l] ? o->rank : kd - p->keep[l];
                p->rv[l] = o->rank;
            }
        } else {
            double el_bytes = (double)kvs_row_bytes(o->latent_type, 32) / 32.0;
            double avail = o->budget / el_bytes - fixed_el;
            if (avail < 0) avail = 0;
            qsort(cands, nc, sizeof *cands, cand_cmp);
            for (size_t i = 0; i < nc && (double)i < avail; i++) {
                if (cands[i].key) p->rk[cands[i].layer]++;
                else p->rv[cands[i].layer]++;
            }
        }
        for (int32_t l = 0; l < L; l++) {
            if (p->shared[l] >= 0 || skip[l]) continue;
            /* the row [rv | rk + keep] must split on granules; at least the kept dims */
            int32_t lo = (p->keep[l] + gran - 1) / gran * gran;
            if (lo < gran) lo = gran;
            p->rk[l] = round_to(p->rk[l] + p->keep[l], gran, lo, kd / gran * gran) - p->keep[l];
            p->rv[l] = round_to(p->rv[l], gran, gran, vd);
        }
    }
    /* bases (f32 rows) and energy dropped */
    for (int32_t l = 0; st == KVS_OK && o->mode != KVS_RETRO_NONE && l < L; l++) {
        if (p->shared[l] >= 0 || skip[l]) continue;
        p->k_basis[l] = kvs_malloc(sizeof(float) * (size_t)(p->rk[l] ? p->rk[l] : 1) * kd);
        p->v_basis[l] = kvs_malloc(sizeof(float) * (size_t)p->rv[l] * vd);
        p->k_scale[l] = kvs_malloc(sizeof(float) * (size_t)(p->rk[l] ? p->rk[l] : 1));
        p->v_scale[l] = kvs_malloc(sizeof(float) * (size_t)p->rv[l]);
        if (!p->k_basis[l] || !p->v_basis[l] || !p->k_scale[l] || !p->v_scale[l]) {
            st = kvs_fail(KVS_ERR_NOMEM, "compress: out of memory");
            break;
        }
        rms_scales(kw + (size_t)l * kd, p->rk[l], c->n_tokens, p->k_scale[l]);
        rms_scales(vw + (size_t)l * vd, p->rv[l], c->n_tokens, p->v_scale[l]);
        for (size_t i = 0; i < (size_t)p->rk[l] * kd; i++) p->k_basis[l][i] = (float)kvec[(size_t)l * kd * kd + i];
        for (size_t i = 0; i < (size_t)p->rv[l] * vd; i++) p->v_basis[l][i] = (float)vvec[(size_t)l * vd * vd + i];
        double tk = ktr[l], dk_ = 0, tv = vtr[l], dv_ = 0;
        for (int32_t i = p->rk[l]; i < kd - p->keep[l]; i++) dk_ += kw[(size_t)l * kd + i];
        for (int32_t i = p->rv[l]; i < vd; i++) dv_ += vw[(size_t)l * vd + i];
        p->k_lost[l] = tk > 0 ? dk_ / tk : 0;
        p->v_lost[l] = tv > 0 ? dv_ / tv : 0;
    }
    kvs_free(kw); kvs_free(vw); kvs_free(kvec); kvs_free(vvec); kvs_free(cands);
    kvs_free(ktr); kvs_free(vtr); kvs_free(kvar); kvs_free(vvar); kvs_free(wm); kvs_free(cm);
    kvs_free(window); kvs_free(skip);
    if (st != KVS_OK) { kvs_retro_plan_free(p); return st; }
    *out = p;
    return KVS_OK;
}
