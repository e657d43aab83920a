/* The attention step of a retrofitted latent layer (see retrofit.h for the
 * row layout): project the chunk's K/V into the latent row and store it,
 * then attend.
 *
 * Mode PRE (correct, not fast): every stored row is read back, the pre-RoPE
 * keys rebuilt (Bk^T c_k), rotated at their true positions, and attended
 * per KV head with the value latent c_v shared by all heads (head stride 0).
 * Mode KEEP: the cached rows are attended as they are, as one KV head
 * (MQA) with dk = rv + rk + keep and dv = rv: each query is absorbed into
 * the row space, q_x = [0 (rv) | Bk_g q (rk) | q at its head's kept dims],
 * so q_x . row = q . k_rebuilt exactly.
 * Both modes lift the attended value latent per head after: out_h = Bv_g^T a.
 * tests/test_compress.c checks both against full attention on the rebuilt
 * keys and values. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "kv/kv_chunk.h"
#include "model/session.h"
#include "retrofit/retrofit.h"

struct kvs_retro_state {
    int64_t cap, n_batch, dmax, rvmax;
    float *rows;   /* (max(cap, n_batch), dmax) latent rows, f32          */
    float *krec;   /* PRE: (n_kv, cap, dk) rebuilt, rotated keys          */
    int32_t *pos;  /* (cap) 0, 1, 2, ...                                  */
    float *qx;     /* KEEP: (n_batch, n_head, dmax) absorbed queries     */
    float *lat;    /* (n_batch, n_head, rvmax) attended value latents      */
};

bool kvs_retro_layer_latent(const kvs_session *s, const kvs_retro *r, int32_t layer) {
    if (!r || r->mode == KVS_RETRO_NONE) return false;
    const kvs_kv_layer *L = &s->kv->layers[layer];
    const kvs_kv_layer *src = &s->kv->layers[L->source];
    return src->scheme.store == KVS_KV_STORE_LATENT && r->layers[L->source].rv > 0;
}

void kvs_retro_state_free(kvs_retro_state *st) {
    if (!st) return;
    kvs_aligned_free(st->rows);
    kvs_aligned_free(st->krec);
    kvs_free(st->pos);
    kvs_aligned_free(st->qx);
    kvs_aligned_free(st->lat);
    kvs_free(st);
}

kvs_status kvs_retro_state_new(kvs_session *s, const kvs_retro *r, kvs_retro_state **out) {
    *out = NULL;
    const kvs_hparams *hp = &s->model->hp;
    int64_t dmax = 0, rvmax = 0;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        const kvs_kv_layer *L = &s->kv->layers[i];
        const kvs_retro_layer *rl = &r->layers[i];
        if (L->scheme.store == KVS_KV_STORE_LATENT && !rl->rv)
            return kvs_fail(KVS_ERR_INVALID_ARG, "retrofit: layer %d is latent but the model has no projections for it", i);
        if (L->scheme.store != KVS_KV_STORE_LATENT) continue;
        if ((int64_t)L->scheme.latent_rank != rl->rv || (int64_t)L->scheme.rope_dim != rl->rk + rl->keep)
            return kvs_fail(KVS_ERR_INVALID_ARG, "retrofit: layer %d's latent scheme %u+%u differs from its projections %d+%d",
                            i, L->scheme.latent_rank, L->scheme.rope_dim, rl->rv, rl->rk + rl->keep);
        if (L->scheme.window || L->scheme.rotate)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "retrofit: layer %d: latent retrofit layers cannot be windowed or rotated yet", i);
        int64_t d = rl->rv + rl->rk + rl->keep;
        const kvs_type_traits *tt = kvs_type_traits_of(L->scheme.k_type);
        if (d % 8 || rl->rv % 8 || !tt || rl->rv % tt->block_size || d % tt->block_size)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "retrofit: layer %d: latent row %d (value part %d) must be a multiple of 8 and of the %s block",
                            i, (int)d, rl->rv, kvs_dtype_name(L->scheme.k_type));
        if (d > dmax) dmax = d;
        if (rl->rv > rvmax) rvmax = rl->rv;
    }
    kvs_retro_state *st = kvs_calloc(1, sizeof *st);
    if (!st) return kvs_fail(KVS_ERR_NOMEM, "retrofit: out of memory");
    st->cap = s->params.n_ctx;
    st->n_batch = s->params.n_batch;
    st->dmax = dmax;
    st->rvmax = rvmax;
    int64_t rows = st->cap > st->n_batch ? st->cap : st->n_batch;
    if (dmax) {
        st->rows = kvs_aligned_alloc(sizeof(float) * (size_t)(rows * dmax));
        st->lat = kvs_aligned_alloc(sizeof(float) * (size_t)(st->n_batch * hp->n_head * rvmax));
        st->pos = kvs_malloc(sizeof(int32_t) * (size_t)st->cap);
        if (r->mode == KVS_RETRO_PRE)
            st->krec = kvs_aligned_alloc(sizeof(float) * (size_t)(hp->n_head_kv * st->cap * hp->head_dim_k));
        else
            st->qx = kvs_aligned_alloc(sizeof(float) * (size_t)(st->n_batch * hp->n_head * dmax));
        if (!st->rows || !st->lat || !st->pos || (r->mode == KVS_RETRO_PRE ? !st->krec : !st->qx)) {
            kvs_retro_state_free(st);
            return kvs_fail(KVS_ERR_NOMEM, "retrofit: cannot allocate latent attention scratch");
        }
        for (int64_t p = 0; p < st->cap; p++) st->pos[p] = (int32_t)p;
    }
    *out = st;
    return KVS_OK;
}

/* y (rows) = B x for a (rows, cols) row-major B. */
static void mat_vec(float *y, const float *B, const float *x, int32_t rows, int32_t cols) {
    for (int32_t j = 0; j < rows; j++) {
        const float *b = B + (size_t)j * cols;
        float acc = 0.0f;
        for (int32_t i = 0; i < cols; i++) acc += b[i] * x[i];
        y[j] = acc;
    }
}

/* Latent rows of the chunk: [Bv v | Bk k | k at kept dims]. */
static void make_rows(const kvs_retro_layer *rl, const float *k, const float *v, int64_t n, int32_t kd, int32_t vd,
                      float *rows, int64_t d, float *tmp) {
    for (int64_t t = 0; t < n; t++) {
        float *row = rows + t * d;
        const float *kt = k + t * kd, *vt = v + t * vd;
        for (int32_t e = 0; e < vd; e++)
            tmp[e] = (vt[e] - (rl->v_mean ? rl->v_mean[e] : 0.0f)) * (rl->v_dim ? rl->v_dim[e] : 1.0f);
        mat_vec(row, rl->v_basis, tmp, rl->rv, vd);
        for (int32_t e = 0; e < kd; e++)
            tmp[e] = (kt[e] - (rl->k_mean ? rl->k_mean[e] : 0.0f)) * (rl->k_dim ? rl->k_dim[e] : 1.0f);
        mat_vec(row + rl->rv, rl->k_basis, tmp, rl->rk, kd);
        if (rl->v_scale) for (int32_t j = 0; j < rl->rv; j++) row[j] /= rl->v_scale[j];
        if (rl->k_scale) for (int32_t j = 0; j < rl->rk; j++) row[rl->rv + j] /= rl->k_scale[j];
        for (int32_t i = 0; i < rl->keep; i++) row[rl->rv + rl->rk + i] = kt[rl->keep_idx[i]];
    }
}

/* s->att (n, n_head, dv) = per head Bv_g^T lat (n, n_head, rv). */
static void lift_values(kvs_session *s, const kvs_retro_layer *rl, const float *lat, int64_t n) {
    const kvs_hparams *hp = &s->model->hp;
    const int32_t dv = hp->head_dim_v, vd = hp->n_head_kv * dv, group = hp->n_head / hp->n_head_kv;
    for (int64_t t = 0; t < n; t++)
        for (int32_t h = 0; h < hp->n_head; h++) {
            const float *a = lat + ((size_t)t * hp->n_head + h) * rl->rv;
            float *o = s->att + ((size_t)t * hp->n_head + h) * dv;
            const int32_t off = (h / group) * dv;
            memset(o, 0, sizeof(float) * (size_t)dv);
            for (int32_t j = 0; j < rl->rv; j++) {
                const float *b = rl->v_basis + (size_t)j * vd + off;
                const float aj = rl->v_scale ? a[j] * rl->v_scale[j] : a[j];
                for (int32_t e = 0; e < dv; e++) o[e] += aj * b[e];
            }
            if (rl->v_dim) for (int32_t e = 0; e < dv; e++) o[e] /= rl->v_dim[off + e];
            if (rl->v_mean) for (int32_t e = 0; e < dv; e++) o[e] += rl->v_mean[off + e];
        }
}

/* Dequantized rows of positions [0, n_past + n) into st->rows (T, d). */
static void read_rows(kvs_session *s, kvs_retro_state *st, int32_t layer, int64_t d) {
    const kvs_kv_view view = kvs_kv_layer_view(s->kv, layer, NULL, NULL); /* positions [0, n_past + n) */
    for (int g = 0; g < view.n_segs; g++) {
        const kvs_kv_segment *sg = &view.segs[g];
        const kvs_type_traits *tt = kvs_type_traits_of(sg->k_type);
        for (int64_t t = 0; t < sg->n; t++)
            tt->to_float(sg->k + (size_t)t * sg->k_row, st->rows + (sg->pos0 + t) * d, d);
    }
}

static kvs_status attend_pre(kvs_session *s, const kvs_retro_layer *rl, kvs_retro_state *st, int32_t layer, int64_t n,
                             const kvs_rope *rope, float scale) {
    const kvs_hparams *hp = &s->model->hp;
    const int32_t dk = hp->head_dim_k, kd = hp->n_head_kv * dk;
    const int64_t d = rl->rv + rl->rk + rl->keep, T = (int64_t)s->kv->n_past + n;
    kvs_rope_apply(rope, s->q, n, hp->n_head, dk, s->pos);
    read_rows(s, st, layer, d);
    float tmp[1024]; /* one rebuilt key row (kd) */
    float *kr = kd <= 1024 ? tmp : NULL;
    if (!kr) return kvs_fail(KVS_ERR_UNSUPPORTED, "retrofit: key width %d too large", kd);
    for (int64_t p = 0; p < T; p++) {
        const float *ck = st->rows + p * d + rl->rv;
        memset(kr, 0, sizeof(float) * (size_t)kd);
        for (int32_t j = 0; j < rl->rk; j++) {
            const float *b = rl->k_basis + (size_t)j * kd;
            const float c = rl->k_scale ? ck[j] * rl->k_scale[j] : ck[j];
            for (int32_t e = 0; e < kd; e++) kr[e] += c * b[e];
        }
        if (rl->k_dim) for (int32_t e = 0; e < kd; e++) kr[e] /= rl->k_dim[e];
        if (rl->k_mean) for (int32_t e = 0; e < kd; e++) kr[e] += rl->k_mean[e];
        for (int32_t g = 0; g < hp->n_head_kv; g++)
            memcpy(st->krec + ((size_t)g * T + p) * dk, kr + (size_t)g * dk, sizeof(float) * (size_t)dk);
    }
    for (int32_t g = 0; g < hp->n_head_kv; g++)
        kvs_rope_apply(rope, st->krec + (size_t)g * T * dk, T, 1, dk, st->pos);
    kvs_kv_segment sg = {
        .k = (const uint8_t *)st->krec, .v = (const uint8_t *)st->rows,
        .k_head_stride = (size_t)T * dk * sizeof(float), .v_head_stride = 0,
        .k_row = (size_t)dk * sizeof(float), .v_row = (size_t)d * sizeof(float),
        .k_type = KVS_TYPE_F32, .v_type = KVS_TYPE_F32, .pos0 = 0, .n = T,
    };
    kvs_attn_args aa = {
        .segs = &sg, .n_segs = 1, .n_kv_heads = hp->n_head_kv, .head_dim_k = dk, .head_dim_v = rl->rv,
        .q = s->q, .n_q = n, .n_head = hp->n_head, .q_pos = s->pos, .scale = scale, .out = st->lat,
    };
    return kvs_attn_run(s->attn, s->pool, &aa);
}

static kvs_status attend_keep(kvs_session *s, const kvs_retro_layer *rl, kvs_retro_state *st, int32_t layer, int64_t n,
                              float scale) {
    const kvs_hparams *hp = &s->model->hp;
    const int32_t dk = hp->head_dim_k, kd = hp->n_head_kv * dk, group = hp->n_head / hp->n_head_kv;
    const int64_t d = rl->rv + rl->rk + rl->keep;
    for (int64_t t = 0; t < n; t++)
        for (int32_t h = 0; h < hp->n_head; h++) {
            const float *q = s->q + ((size_t)t * hp->n_head + h) * dk;
            float *x = st->qx + ((size_t)t * hp->n_head + h) * d;
            const int32_t g = h / group;
            memset(x, 0, sizeof(float) * (size_t)rl->rv);
            for (int32_t j = 0; j < rl->rk; j++) {
                const float *b = rl->k_basis + (size_t)j * kd + (size_t)g * dk;
                float acc = 0.0f;
                if (rl->k_dim)
                    for (int32_t e = 0; e < dk; e++) acc += b[e] * q[e] / rl->k_dim[(size_t)g * dk + e];
                else
                    for (int32_t e = 0; e < dk; e++) acc += b[e] * q[e];
                x[rl->rv + j] = rl->k_scale ? acc * rl->k_scale[j] : acc;
            }
            for (int32_t i = 0; i < rl->keep; i++) {
                int32_t idx = rl->keep_idx[i];
                x[rl->rv + rl->rk + i] = idx / dk == g ? q[idx % dk] : 0.0f;
            }
        }
    const kvs_kv_view view = kvs_kv_layer_view(s->kv, layer, NULL, NULL);
    kvs_attn_args aa = {
        .segs = view.segs, .n_segs = view.n_segs, .n_kv_heads = 1, .head_dim_k = (int32_t)d, .head_dim_v = rl->rv,
        .q = st->qx, .n_q = n, .n_head = hp->n_head, .q_pos = s->pos, .scale = scale, .out = st->lat,
    };
    return kvs_attn_run(s->attn, s->pool, &aa);
}

kvs_status kvs_retro_attend(kvs_session *s, const kvs_retro *r, kvs_retro_state *st, int32_t layer, int64_t n,
                            const kvs_rope *rope, float scale) {
    const kvs_hparams *hp = &s->model->hp;
    const int32_t kd = hp->n_head_kv * hp->head_dim_k, vd = hp->n_head_kv * hp->head_dim_v;
    const kvs_kv_layer *L = &s->kv->layers[layer];
    const kvs_retro_layer *rl = &r->layers[L->source];
    const int64_t d = rl->rv + rl->rk + rl->keep;
    const bool own = L->pages != NULL;
    if (r->mode == KVS_RETRO_KEEP) {
        kvs_rope_apply(rope, s->q, n, hp->n_head, hp->head_dim_k, s->pos);
        kvs_rope_apply(rope, s->k, n, hp->n_head_kv, hp->head_dim_k, s->pos);
    }
    if (own) {
        float tmp[2048]; /* one weighted K or V row */
        if (kd > 2048 || vd > 2048) return kvs_fail(KVS_ERR_UNSUPPORTED, "retrofit: K/V width %d/%d too large", kd, vd);
        make_rows(rl, s->k, s->v, n, kd, vd, st->rows, d, tmp);
        kvs_status e = kvs_kv_put_rows(s->kv, layer, st->rows, NULL);
        if (e != KVS_OK) return e;
    }
    kvs_status e = r->mode == KVS_RETRO_PRE ? attend_pre(s, rl, st, layer, n, rope, scale)
                                            : attend_keep(s, rl, st, layer, n, scale);
    if (e != KVS_OK) return e;
    lift_values(s, rl, st->lat, n);
    return KVS_OK;
}
