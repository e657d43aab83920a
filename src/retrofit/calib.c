/* Calibration for the retrofit: runs the model over calibration tokens with
 * the llama capture hook installed and accumulates, per layer, the second
 * moments of pre-RoPE keys, post-RoPE keys and values (f64 kd x kd / vd x vd
 * matrices, so memory does not grow with the text), per-dim query energy,
 * and the cross-layer dot products that measure how well one layer's K/V
 * stands in for another's. Activations are never stored beyond one chunk. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/safe_file.h"
#include "model/session.h"
#include "retrofit/retrofit.h"

void kvs_calib_free(kvs_calib *c) {
    if (!c) return;
    kvs_free(c->kk);
    kvs_free(c->kk_rot);
    kvs_free(c->vv);
    kvs_free(c->qq);
    kvs_free(c->k2);
    kvs_free(c->v2);
    kvs_free(c->ks);
    kvs_free(c->ks_rot);
    kvs_free(c->vs);
    kvs_free(c->dot_k);
    kvs_free(c->dot_v);
    kvs_free(c->chunk_k);
    kvs_free(c->chunk_v);
    kvs_free(c->rot);
    kvs_free(c);
}

/* m (d, d) upper triangle += sum over n rows x (n, d) of x x^T. */
static void add_outer(double *m, const float *x, int64_t n, int32_t d, double *col) {
    /* col: (d, n) transposed copy, so each (i, j) term is one stride-1 dot */
    for (int64_t t = 0; t < n; t++)
        for (int32_t i = 0; i < d; i++) col[(size_t)i * n + t] = x[t * d + i];
    for (int32_t i = 0; i < d; i++) {
        const double *a = col + (size_t)i * n;
        for (int32_t j = i; j < d; j++) {
            const double *b = col + (size_t)j * n;
            double s0 = 0, s1 = 0;
            int64_t t = 0;
            for (; t + 1 < n; t += 2) { s0 += a[t] * b[t]; s1 += a[t + 1] * b[t + 1]; }
            if (t < n) s0 += a[t] * b[t];
            m[(size_t)i * d + j] += s0 + s1;
        }
    }
}

static double dot_rows(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef struct capture_ctx { kvs_calib *c; double *col; } capture_ctx;

static void on_capture(void *ctx, int32_t l, int64_t n, const int32_t *pos, const float *q, const float *k,
                       const float *v, const kvs_rope *rope) {
    capture_ctx *cc = ctx;
    kvs_calib *c = cc->c;
    const int32_t kd = c->kd, vd = c->vd, group = c->n_head / c->n_kv;
    add_outer(c->kk + (size_t)l * kd * kd, k, n, kd, cc->col);
    add_outer(c->vv + (size_t)l * vd * vd, v, n, vd, cc->col);
    memcpy(c->rot, k, sizeof(float) * (size_t)(n * kd));
    kvs_rope_apply(rope, c->rot, n, c->n_kv, c->dk, pos);
    add_outer(c->kk_rot + (size_t)l * kd * kd, c->rot, n, kd, cc->col);
    for (int64_t t = 0; t < n; t++) {
        for (int32_t i = 0; i < kd; i++) {
            c->ks[(size_t)l * kd + i] += k[t * kd + i];
            c->ks_rot[(size_t)l * kd + i] += c->rot[t * kd + i];
        }
        for (int32_t i = 0; i < vd; i++) c->vs[(size_t)l * vd + i] += v[t * vd + i];
    }
    /* query energy per key dim (pre-RoPE; a rotary pair's sum is invariant) */
    double *qq = c->qq + (size_t)l * kd;
    for (int64_t t = 0; t < n; t++)
        for (int32_t h = 0; h < c->n_head; h++) {
            const float *qh = q + ((size_t)t * c->n_head + h) * c->dk;
            double *dst = qq + (size_t)(h / group) * c->dk;
            for (int32_t e = 0; e < c->dk; e++) dst[e] += (double)qh[e] * qh[e];
        }
    float *ck = c->chunk_k + (size_t)l * c->n_batch * kd, *cv = c->chunk_v + (size_t)l * c->n_batch * vd;
    memcpy(ck, k, sizeof(float) * (size_t)(n * kd));
    memcpy(cv, v, sizeof(float) * (size_t)(n * vd));
    c->k2[l] += dot_rows(k, k, n * kd);
    c->v2[l] += dot_rows(v, v, n * vd);
    for (int32_t j = 0; j < l; j++) {
        c->dot_k[(size_t)l * c->n_layer + j] += dot_rows(ck, c->chunk_k + (size_t)j * c->n_batch * kd, n * kd);
        c->dot_v[(size_t)l * c->n_layer + j] += dot_rows(cv, c->chunk_v + (size_t)j * c->n_batch * vd, n * vd);
    }
    if (l == c->n_layer - 1) c->n_tokens += (uint64_t)n;
}

kvs_status kvs_retro_set_capture(kvs_session *s, kvs_capture_fn fn, void *ctx) {
    if (!s || !s->model->ops->set_capture || !s->ext)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "capture: architecture '%s' has no capture hook (llama, qwen2, gemma3)",
                        s ? s->model->arch_name : "?");
    return s->model->ops->set_capture(s, fn, ctx);
}

static kvs_status calib_alloc(const kvs_model *m, int64_t n_batch, kvs_calib **out) {
    const kvs_hparams *hp = &m->hp;
    kvs_calib *c = kvs_calloc(1, sizeof *c);
    if (!c) return kvs_fail(KVS_ERR_NOMEM, "calibration: out of memory");
    c->n_layer = hp->n_layer;
    c->n_head = hp->n_head;
    c->n_kv = hp->n_head_kv;
    c->dk = hp->head_dim_k;
    c->dv = hp->head_dim_v;
    c->kd = c->n_kv * c->dk;
    c->vd = c->n_kv * c->dv;
    c->n_batch = n_batch;
    c->rope = hp->rope;
    size_t L = (size_t)c->n_layer, kd = (size_t)c->kd, vd = (size_t)c->vd;
    c->kk = kvs_calloc(L * kd * kd, sizeof(double));
    c->kk_rot = kvs_calloc(L * kd * kd, sizeof(double));
    c->vv = kvs_calloc(L * vd * vd, sizeof(double));
    c->qq = kvs_calloc(L * kd, sizeof(double));
    c->k2 = kvs_calloc(L, sizeof(double));
    c->v2 = kvs_calloc(L, sizeof(double));
    c->dot_k = kvs_calloc(L * L, sizeof(double));
    c->ks = kvs_calloc(L * kd, sizeof(double));
    c->ks_rot = kvs_calloc(L * kd, sizeof(double));
    c->vs = kvs_calloc(L * vd, sizeof(double));
    c->dot_v = kvs_calloc(L * L, sizeof(double));
    c->chunk_k = kvs_malloc(sizeof(float) * L * (size_t)n_batch * kd);
    c->chunk_v = kvs_malloc(sizeof(float) * L * (size_t)n_batch * vd);
    c->rot = kvs_malloc(sizeof(float) * (size_t)n_batch * kd);
    if (!c->kk || !c->kk_rot || !c->vv || !c->qq || !c->k2 || !c->v2 || !c->dot_k || !c->dot_v || !c->ks || !c->ks_rot || !c->vs || !c->chunk_k ||
        !c->chunk_v || !c->rot) {
        kvs_calib_free(c);
        return kvs_fail(KVS_ERR_NOMEM, "calibration: out of memory");
    }
    *out = c;
    return KVS_OK;
}

static void symmetrize(double *m, int32_t d) {
    for (int32_t i = 0; i < d; i++)
        for (int32_t j = 0; j < i; j++) m[(size_t)i * d + j] = m[(size_t)j * d + i];
}

kvs_status kvs_calib_run(const kvs_model *m, const kvs_token *tokens, int64_t n_tokens, uint32_t ctx,
                         int32_t n_threads, void (*progress)(void *, int64_t, int64_t), void *pctx,
                         kvs_calib **out) {
    *out = NULL;
    const kvs_hparams *hp = &m->hp;
    int64_t kd = (int64_t)hp->n_head_kv * hp->head_dim_k, vd = (int64_t)hp->n_head_kv * hp->head_dim_v;
    int64_t need = 2 * (kd > vd ? kd : vd);
    if (need < 256) need = 256;
    if (n_tokens < need)
        return kvs_fail(KVS_ERR_INVALID_ARG, "calibration text has %lld tokens; this model needs at least %lld "
                        "(2 x the K/V width, and at least 256)", (long long)n_tokens, (long long)need);
    if (ctx < 16) return kvs_fail(KVS_ERR_INVALID_ARG, "calibration context %u is too small (min 16)", ctx);
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = ctx;
    p.n_batch = ctx < 512 ? ctx : 512;
    p.n_threads = n_threads;
    p.kv_type = KVS_KV_F32;
    kvs_session *s = NULL;
    kvs_calib *c = NULL;
    double *col = NULL;
    kvs_status st = kvs_session_new(m, &p, &s);
    if (st == KVS_OK) st = calib_alloc(m, p.n_batch, &c);
    if (st == KVS_OK) {
        int64_t w = kd > vd ? kd : vd;
        col = kvs_malloc(sizeof(double) * (size_t)(w * p.n_batch));
        if (!col) st = kvs_fail(KVS_ERR_NOMEM, "calibration: out of memory");
    }
    capture_ctx cc = {c, col};
    if (st == KVS_OK) st = kvs_retro_set_capture(s, on_capture, &cc);
    for (int64_t off = 0; st == KVS_OK && off < n_tokens; off += ctx) {
        int64_t len = n_tokens - off < ctx ? n_tokens - off : ctx;
        if (len < 2) break;
        kvs_session_reset(s);
        st = kvs_decode(s, tokens + off, (size_t)len, false, NULL);
        if (st == KVS_OK && progress) progress(pctx, off + len, n_tokens);
    }
    kvs_free(col);
    kvs_session_free(s);
    if (st != KVS_OK) { kvs_calib_free(c); return st; }
    for (int32_t l = 0; l < c->n_layer; l++) {
        symmetrize(c->kk + (size_t)l * c->kd * c->kd, c->kd);
        symmetrize(c->kk_rot + (size_t)l * c->kd * c->kd, c->kd);
        symmetrize(c->vv + (size_t)l * c->vd * c->vd, c->vd);
    }
    *out = c;
    return KVS_OK;
}

/* ---- statistics file (--calib-cache): a header of dims, then the f64 arrays */
#define CALIB_MAGIC 0x6b7673636c696232ull /* "kvsclib2" */

static bool calib_io(FILE *f, kvs_calib *c, bool wr) {
    size_t L = (size_t)c->n_layer, kd = (size_t)c->kd, vd = (size_t)c->vd;
    struct { double *p; size_t n; } a[] = {
        {c->kk, L * kd * kd}, {c->kk_rot, L * kd * kd}, {c->vv, L * vd * vd}, {c->qq, L * kd},
        {c->k2, L}, {c->v2, L}, {c->dot_k, L * L}, {c->dot_v, L * L},
        {c->ks, L * kd}, {c->ks_rot, L * kd}, {c->vs, L * vd},
    };
    for (size_t i = 0; i < sizeof a / sizeof *a; i++)
        if ((wr ? fwrite(a[i].p, sizeof(double), a[i].n, f) : fread(a[i].p, sizeof(double), a[i].n, f)) != a[i].n)
            return false;
    return true;
}

/* Through src/core/safe_file.c: all or nothing, never onto a non-regular path. */
kvs_status kvs_calib_save(const kvs_calib *c, const char *path) {
    kvs_safe_file *sf = NULL;
    if (kvs_safe_open(path, &sf) != KVS_OK) return kvs_fail(KVS_ERR_IO, "calibration cache: %s", kvs_last_error());
    FILE *f = kvs_safe_stream(sf);
    uint64_t h[8] = {CALIB_MAGIC, (uint64_t)c->n_layer, (uint64_t)c->n_head, (uint64_t)c->n_kv,
                     (uint64_t)c->dk, (uint64_t)c->dv, c->n_tokens, 0};
    if (!(fwrite(h, sizeof h, 1, f) == 1 && calib_io(f, (kvs_calib *)c, true))) {
        kvs_safe_abort(sf);
        return kvs_fail(KVS_ERR_IO, "calibration cache: cannot write '%s'", path);
    }
    if (kvs_safe_commit(sf) != KVS_OK) return kvs_fail(KVS_ERR_IO, "calibration cache: %s", kvs_last_error());
    return KVS_OK;
}

kvs_status kvs_calib_load(const kvs_model *m, const char *path, kvs_calib **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kvs_fail(KVS_ERR_IO, "calibration cache: cannot open '%s'", path);
    const kvs_hparams *hp = &m->hp;
    uint64_t h[8];
    kvs_calib *c = NULL;
    kvs_status st = KVS_OK;
    if (fread(h, sizeof h, 1, f) != 1 || h[0] != CALIB_MAGIC || h[1] != (uint64_t)hp->n_layer ||
        h[2] != (uint64_t)hp->n_head || h[3] != (uint64_t)hp->n_head_kv || h[4] != (uint64_t)hp->head_dim_k ||
        h[5] != (uint64_t)hp->head_dim_v)
        st = kvs_fail(KVS_ERR_FORMAT, "calibration cache '%s' is not for this model's geometry", path);
    if (st == KVS_OK) st = calib_alloc(m, 1, &c);
    if (st == KVS_OK && !calib_io(f, c, false)) st = kvs_fail(KVS_ERR_FORMAT, "calibration cache '%s' is truncated", path);
    fclose(f);
    if (st != KVS_OK) { kvs_calib_free(c); return st; }
    c->n_tokens = h[6];
    *out = c;
    return KVS_OK;
}
