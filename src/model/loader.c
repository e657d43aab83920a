/* Loader helpers shared by the architectures (see loader.h). */
#include "model/loader.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/repack.h"
#include "model/hparams.h"

const char *kvs_load_key(const kvs_loader *L, char *buf, size_t cap, const char *suffix) {
    snprintf(buf, cap, "%s.%s", L->arch, suffix);
    return buf;
}

kvs_status kvs_load_need_u32(const kvs_loader *L, const char *suffix, int32_t *out) {
    char k[128];
    uint32_t v;
    kvs_load_key(L, k, sizeof k, suffix);
    if (!kvs_gguf_get_u32(L->m->gguf, k, &v)) {
        const kvs_gguf_kv *kv = kvs_gguf_find(L->m->gguf, k);
        if (kv && kv->type == KVS_GGUF_ARRAY)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "model: per-layer '%s' is not supported", k);
        return kvs_fail(KVS_ERR_FORMAT, "model: missing or invalid metadata key '%s'", k);
    }
    if (v == 0 || v > (1u << 24)) return kvs_fail(KVS_ERR_FORMAT, "model: '%s' = %u is out of range", k, v);
    *out = (int32_t)v;
    return KVS_OK;
}

int32_t kvs_load_opt_u32(const kvs_loader *L, const char *suffix, int32_t def) {
    char k[128];
    uint32_t v;
    kvs_load_key(L, k, sizeof k, suffix);
    return kvs_gguf_get_u32(L->m->gguf, k, &v) && v > 0 && v <= (1u << 24) ? (int32_t)v : def;
}

float kvs_load_opt_f32(const kvs_loader *L, const char *suffix, float def) {
    char k[128];
    float v;
    kvs_load_key(L, k, sizeof k, suffix);
    return kvs_gguf_get_f32(L->m->gguf, k, &v) ? v : def;
}

static bool own(kvs_loader *L, void *p);

/* The x8 copy of a matrix, made once per tensor. */
static kvs_status x8_copy(kvs_loader *L, kvs_weight *w) {
    w->x8_group_bytes = kvs_repack_group_bytes(w->type, w->n_in);
    for (int i = 0; i < L->n_x8; i++)
        if (L->x8_src[i] == w->data) {
            w->x8 = L->x8_dst[i];
            return KVS_OK;
        }
    if (L->n_x8 == L->cap_x8) {
        int nc = L->cap_x8 ? 2 * L->cap_x8 : 64;
        const void **s = kvs_realloc(L->x8_src, sizeof *s * (size_t)nc);
        if (s) L->x8_src = s;
        const void **d = s ? kvs_realloc(L->x8_dst, sizeof *d * (size_t)nc) : NULL;
        if (!d) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
        L->x8_dst = d;
        L->cap_x8 = nc;
    }
    const size_t bytes = kvs_repack_bytes(w->type, w->n_in, w->n_out);
    void *p = kvs_malloc(bytes);
    if (!p || !own(L, p)) {
        kvs_free(p);
        return kvs_fail(KVS_ERR_NOMEM, "model: out of memory for the repacked copy of '%s' (%zu bytes)", w->name,
                        bytes);
    }
    kvs_repack_x8(w->type, w->data, w->row_bytes, w->n_in, w->n_out, p);
    L->x8_src[L->n_x8] = w->data;
    L->x8_dst[L->n_x8++] = p;
    L->m->repacked_bytes += bytes;
    w->x8 = p;
    return KVS_OK;
}

void kvs_load_drop_x8(kvs_loader *L, kvs_weight *w) {
    if (!w->x8) return;
    for (int i = 0; i < L->n_owned; i++)
        if (L->owned[i] == w->x8) {
            L->m->repacked_bytes -= kvs_repack_bytes(w->type, w->n_in, w->n_out);
            kvs_free(L->owned[i]);
            L->owned[i] = L->owned[--L->n_owned];
            break;
        }
    for (int i = 0; i < L->n_x8; i++)
        if (L->x8_dst[i] == w->x8) {
            L->x8_src[i] = L->x8_src[--L->n_x8];
            L->x8_dst[i] = L->x8_dst[L->n_x8];
            break;
        }
    w->x8 = NULL;
    w->x8_group_bytes = 0;
}

static kvs_status bind(kvs_loader *L, const char *name, int64_t n_in, int64_t n_out, int64_t n_mat,
                       kvs_weight *w, bool required) {
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(L->m->gguf, name);
    memset(w, 0, sizeof *w * (size_t)n_mat);
    if (!t) return required ? kvs_fail(KVS_ERR_FORMAT, "model: missing tensor '%s'", name) : KVS_OK;
    uint32_t dims = n_mat > 1 ? 3 : 2;
    if (t->n_dims != dims || t->ne[0] != n_in || t->ne[1] != n_out || (dims == 3 && t->ne[2] != n_mat)) {
        if (dims == 3)
            return kvs_fail(KVS_ERR_FORMAT,
                            "model: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld]", name,
                            (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)n_in,
                            (long long)n_out, (long long)n_mat);
        return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld]",
                        name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)n_in,
                        (long long)n_out);
    }
    const kvs_type_traits *tr = kvs_type_traits_of(t->type);
    if (!tr || !tr->vec_dot || !tr->to_float)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: tensor '%s' has unsupported type %s", name,
                        kvs_dtype_name(t->type));
    size_t row_bytes = kvs_row_bytes(t->type, n_in);
    for (int64_t i = 0; i < n_mat; i++) {
        w[i].name = t->name.s;
        w[i].type = t->type;
        w[i].n_in = n_in;
        w[i].n_out = n_out;
        w[i].row_bytes = row_bytes;
        w[i].data = (const uint8_t *)t->data + (size_t)i * row_bytes * (size_t)n_out;
    }
    if (n_mat == 1 && L->repack && tr->gemm_x8) return x8_copy(L, w);
    return KVS_OK;
}

kvs_status kvs_load_matrix(kvs_loader *L, const char *name, int64_t n_in, int64_t n_out, kvs_weight *w,
                           bool required) {
    return bind(L, name, n_in, n_out, 1, w, required);
}

kvs_status kvs_load_matrix_stack(kvs_loader *L, const char *name, int64_t n_in, int64_t n_out, int64_t n_mat,
                                 kvs_weight *w, bool required) {
    if (n_mat < 1) return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s': empty stack", name);
    return bind(L, name, n_in, n_out, n_mat, w, required);
}

static bool own(kvs_loader *L, void *p) {
    if (L->n_owned == L->cap_owned) {
        int nc = L->cap_owned ? 2 * L->cap_owned : 16;
        void **q = kvs_realloc(L->owned, sizeof(void *) * (size_t)nc);
        if (!q) return false;
        L->owned = q;
        L->cap_owned = nc;
    }
    L->owned[L->n_owned++] = p;
    return true;
}

void *kvs_load_alloc(kvs_loader *L, size_t bytes) {
    void *p = kvs_calloc(1, bytes ? bytes : 1);
    if (p && !own(L, p)) { kvs_free(p); p = NULL; }
    if (!p) kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    return p;
}

kvs_status kvs_load_vector(kvs_loader *L, const char *name, int64_t n, const float **out, bool required) {
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(L->m->gguf, name);
    *out = NULL;
    if (!t) return required ? kvs_fail(KVS_ERR_FORMAT, "model: missing tensor '%s'", name) : KVS_OK;
    if (t->n_dims != 1 || t->ne[0] != n)
        return kvs_fail(KVS_ERR_FORMAT, "model: tensor '%s' has %lld elements in %u dims, expected %lld",
                        name, (long long)t->ne[0], t->n_dims, (long long)n);
    if (t->type == KVS_TYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return KVS_OK;
    }
    const kvs_type_traits *tr = kvs_type_traits_of(t->type);
    if (!tr || !tr->to_float)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: tensor '%s' has unsupported type %s", name,
                        kvs_dtype_name(t->type));
    float *f = kvs_load_alloc(L, sizeof(float) * (size_t)n);
    if (!f) return KVS_ERR_NOMEM;
    tr->to_float(t->data, f, n);
    *out = f;
    return KVS_OK;
}

kvs_status kvs_load_context_length(kvs_loader *L, int32_t def, int32_t *out) {
    uint32_t v;
    if (kvs_hp_context_length(L->m->gguf, L->arch, (uint32_t)def, &v) != KVS_OK)
        return kvs_fail(KVS_ERR_FORMAT, "model: %s", kvs_last_error());
    *out = (int32_t)v;
    return KVS_OK;
}

kvs_status kvs_load_positive_f32(kvs_loader *L, const char *suffix, float def, float max, float *out) {
    if (kvs_hp_positive_f32(L->m->gguf, L->arch, suffix, def, max, out) != KVS_OK)
        return kvs_fail(KVS_ERR_FORMAT, "model: %s", kvs_last_error());
    return KVS_OK;
}

/* head_count[_kv]: a scalar or a per-layer array of one value (hparams.h). */
static kvs_status head_count(kvs_loader *L, const char *suffix, int32_t def, bool required, int32_t *out) {
    bool present;
    uint32_t v;
    kvs_status st = kvs_hp_head_count(L->m->gguf, L->arch, suffix, (uint32_t)L->m->hp.n_layer, &present, &v);
    if (st != KVS_OK) return kvs_fail(st, "model: %s", kvs_last_error());
    if (!present && required) return kvs_fail(KVS_ERR_FORMAT, "model: missing metadata key '%s.%s'", L->arch, suffix);
    *out = present ? (int32_t)v : def;
    return KVS_OK;
}

kvs_status kvs_load_common_hparams(kvs_loader *L) {
    kvs_model *m = L->m;
    kvs_hparams *hp = &m->hp;
    KVS_TRY(kvs_load_need_u32(L, "block_count", &hp->n_layer));
    KVS_TRY(kvs_load_need_u32(L, "embedding_length", &hp->n_embd));
    KVS_TRY(kvs_load_need_u32(L, "feed_forward_length", &hp->n_ff));
    KVS_TRY(head_count(L, "attention.head_count", 0, true, &hp->n_head));
    KVS_TRY(head_count(L, "attention.head_count_kv", hp->n_head, false, &hp->n_head_kv));
    KVS_TRY(kvs_load_context_length(L, 2048, &hp->n_ctx_train));
    if (hp->n_embd % hp->n_head && !kvs_load_opt_u32(L, "attention.key_length", 0))
        return kvs_fail(KVS_ERR_FORMAT, "model: embedding %d not divisible by %d heads", hp->n_embd, hp->n_head);
    hp->head_dim_k = kvs_load_opt_u32(L, "attention.key_length", hp->n_embd / hp->n_head);
    hp->head_dim_v = kvs_load_opt_u32(L, "attention.value_length", hp->head_dim_k);
    if (hp->n_head % hp->n_head_kv)
        return kvs_fail(KVS_ERR_FORMAT, "model: %d heads not a multiple of %d KV heads", hp->n_head, hp->n_head_kv);
    if (hp->head_dim_k > 1024 || hp->head_dim_v > 1024 || (hp->head_dim_k & 1))
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: head size %d/%d not supported", hp->head_dim_k, hp->head_dim_v);
    KVS_TRY(kvs_load_norm_eps(L, 1e-5f, &hp->norm_eps));
    hp->rope.n_dims = kvs_load_opt_u32(L, "rope.dimension_count", hp->head_dim_k);
    if (hp->rope.n_dims > hp->head_dim_k || (hp->rope.n_dims & 1))
        return kvs_fail(KVS_ERR_FORMAT, "model: rope dimension %d invalid for head size %d", hp->rope.n_dims, hp->head_dim_k);
    KVS_TRY(kvs_load_positive_f32(L, "rope.freq_base", 10000.0f, 1e30f, &hp->rope.freq_base));
    hp->rope.freq_scale = 1.0f;
    char k[128];
    const char *stype = kvs_gguf_get_str(m->gguf, kvs_load_key(L, k, sizeof k, "rope.scaling.type"));
    if (stype && strcmp(stype, "none") != 0) {
        if (strcmp(stype, "linear") != 0)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "model: rope scaling '%s' not supported", stype);
        float f = kvs_load_opt_f32(L, "rope.scaling.factor", 1.0f);
        if (!(f > 0.0f)) return kvs_fail(KVS_ERR_FORMAT, "model: bad rope.scaling.factor");
        hp->rope.freq_scale = 1.0f / f;
    }
    return KVS_OK;
}

kvs_status kvs_load_embeddings(kvs_loader *L) {
    kvs_model *m = L->m;
    const kvs_gguf_tensor *te = kvs_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te) return kvs_fail(KVS_ERR_FORMAT, "model: missing tensor 'token_embd.weight'");
    if (te->n_dims != 2 || te->ne[1] <= 0 || te->ne[1] > (1 << 24))
        return kvs_fail(KVS_ERR_FORMAT, "model: bad vocabulary size in 'token_embd.weight'");
    m->hp.n_vocab = (int32_t)te->ne[1];
    KVS_TRY(kvs_load_matrix(L, "token_embd.weight", m->hp.n_embd, m->hp.n_vocab, &m->tok_embd, true));
    KVS_TRY(kvs_load_matrix(L, "output.weight", m->hp.n_embd, m->hp.n_vocab, &m->output, false));
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    else kvs_load_drop_x8(L, &m->tok_embd);      /* only read row by row */
    KVS_TRY(kvs_load_vector(L, "output_norm.weight", m->hp.n_embd, &m->output_norm, true));
    const float *freqs = NULL;
    KVS_TRY(kvs_load_vector(L, "rope_freqs.weight", m->hp.rope.n_dims / 2, &freqs, false));
    m->hp.rope.freq_factors = freqs;
    return KVS_OK;
}
