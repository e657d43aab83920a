/* Writing a retrofitted GGUF: every key and tensor of the input, then the
 * kvslim.* keys and the per-layer projection tensors of the plan (names in
 * retrofit.h, documented in docs/compress.md). The writer goes through a
 * temporary file and a rename, so a failure leaves no partial output. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "gguf/gguf.h"
#include "retrofit/retrofit.h"

kvs_status kvs_retro_write(const kvs_gguf *in, const kvs_retro_plan *p, const char *rules, const char *out) {
    kvs_gguf_writer *w = NULL;
    kvs_status st = kvs_gguf_writer_new(&w);
    for (uint64_t i = 0; st == KVS_OK && i < kvs_gguf_n_kv(in); i++) st = kvs_gguf_writer_copy_kv(w, kvs_gguf_kv_at(in, i));
    if (st == KVS_OK) st = kvs_gguf_writer_set_u32(w, KVS_RETRO_KEY_VER, 1);
    if (st == KVS_OK && rules[0]) st = kvs_gguf_writer_set_str(w, KVS_RETRO_KEY_RULES, rules);
    char *ranks = NULL;
    if (st == KVS_OK && p->mode != KVS_RETRO_NONE) {
        size_t cap = (size_t)p->n_layer * 40 + 1, len = 0;
        ranks = kvs_malloc(cap);
        if (!ranks) st = kvs_fail(KVS_ERR_NOMEM, "compress: out of memory");
        for (int32_t l = 0; st == KVS_OK && l < p->n_layer; l++)
            len += (size_t)snprintf(ranks + len, cap - len, "%s%d/%d/%d", l ? ";" : "", p->rk[l], p->rv[l], p->keep[l]);
        if (st == KVS_OK) st = kvs_gguf_writer_set_str(w, KVS_RETRO_KEY_MODE, p->mode == KVS_RETRO_PRE ? "pre" : "keep");
        if (st == KVS_OK) st = kvs_gguf_writer_set_str(w, KVS_RETRO_KEY_RANKS, ranks);
    }
    kvs_free(ranks);
    for (uint64_t i = 0; st == KVS_OK && i < kvs_gguf_n_tensors(in); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(in, i);
        st = kvs_gguf_writer_add_tensor(w, t->name.s, t->type, t->n_dims, t->ne, t->data, (size_t)t->nbytes);
    }
    float *idx = NULL;
    for (int32_t l = 0; st == KVS_OK && p->mode != KVS_RETRO_NONE && l < p->n_layer; l++) {
        if (!p->rv[l]) continue;
        char name[96];
        int64_t ne[2];
        if (p->rk[l]) {
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_KBASIS);
            ne[0] = p->kd; ne[1] = p->rk[l];
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 2, ne, p->k_basis[l], sizeof(float) * (size_t)p->kd * p->rk[l]);
        }
        snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_VBASIS);
        ne[0] = p->vd; ne[1] = p->rv[l];
        if (st == KVS_OK)
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 2, ne, p->v_basis[l], sizeof(float) * (size_t)p->vd * p->rv[l]);
        if (st == KVS_OK && p->k_scale && p->rk[l]) {
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_KSCALE);
            ne[0] = p->rk[l];
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 1, ne, p->k_scale[l], sizeof(float) * (size_t)p->rk[l]);
        }
        if (st == KVS_OK && p->v_scale) {
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_VSCALE);
            ne[0] = p->rv[l];
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 1, ne, p->v_scale[l], sizeof(float) * (size_t)p->rv[l]);
        }
        if (st == KVS_OK && p->k_dim && p->k_dim[l] && p->rk[l]) {
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_KDIM);
            ne[0] = p->kd;
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 1, ne, p->k_dim[l], sizeof(float) * (size_t)p->kd);
        }
        if (st == KVS_OK && p->v_dim && p->v_dim[l]) {
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_VDIM);
            ne[0] = p->vd;
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 1, ne, p->v_dim[l], sizeof(float) * (size_t)p->vd);
        }
        if (st == KVS_OK && p->k_mean && p->k_mean[l]) {
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_KMEAN);
            ne[0] = p->kd;
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 1, ne, p->k_mean[l], sizeof(float) * (size_t)p->kd);
        }
        if (st == KVS_OK && p->v_mean && p->v_mean[l]) {
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_VMEAN);
            ne[0] = p->vd;
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 1, ne, p->v_mean[l], sizeof(float) * (size_t)p->vd);
        }
        if (st == KVS_OK && p->keep[l]) {
            kvs_free(idx);
            idx = kvs_malloc(sizeof(float) * (size_t)p->keep[l]);
            if (!idx) { st = kvs_fail(KVS_ERR_NOMEM, "compress: out of memory"); break; }
            for (int32_t j = 0; j < p->keep[l]; j++) idx[j] = (float)p->keep_idx[l][j];
            snprintf(name, sizeof name, "blk.%d.%s", l, KVS_RETRO_T_KEEP);
            ne[0] = p->keep[l];
            st = kvs_gguf_writer_add_tensor(w, name, KVS_TYPE_F32, 1, ne, idx, sizeof(float) * (size_t)p->keep[l]);
        }
    }
    kvs_free(idx);
    if (st == KVS_OK) st = kvs_gguf_writer_write(w, out);
    kvs_gguf_writer_free(w);
    return st;
}

