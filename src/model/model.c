/* Model loading: open the GGUF, read hyper-parameters for the architecture
 * family, bind and validate every weight (name, shape, type), build the
 * tokenizer. Any inconsistency is a KVS_ERR_FORMAT naming the tensor/key. */
#include "model/model.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct loader {
    kvs_model *m;
    const char *arch;
    void **owned;
    int n_owned, cap_owned;
} loader;

static const char *akey(const loader *L, char *buf, size_t cap, const char *suffix) {
    snprintf(buf, cap, "%s.%s", L->arch, suffix);
    return buf;
}

static kvs_status need_u32(const loader *L, const char *suffix, int32_t *out) {
    char k[128];
    uint32_t v;
    akey(L, k, sizeof k, suffix);
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

static int32_t opt_u32(const loader *L, const char *suffix, int32_t def) {
    char k[128];
    uint32_t v;
    akey(L, k, sizeof k, suffix);
    return kvs_gguf_get_u32(L->m->gguf, k, &v) && v > 0 && v <= (1u << 24) ? (int32_t)v : def;
}

static float opt_f32(const loader *L, const char *suffix, float def) {
    char k[128];
    float v;
    akey(L, k, sizeof k, suffix);
    return kvs_gguf_get_f32(L->m->gguf, k, &v) ? v : def;
}

static kvs_status bind_matrix(loader *L, const char *name, int64_t n_in, int64_t n_out,
                              kvs_weight *w, bool required) {
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(L->m->gguf, name);
    memset(w, 0, sizeof *w);
    if (!t) return required ? kvs_fail(KVS_ERR_FORMAT, "model: missing tensor '%s'", name) : KVS_OK;
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return kvs_fail(KVS_ERR_FORMAT,
                        "model: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld]", name,
                        (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                        (long long)n_in, (long long)n_out);
    const kvs_type_traits *tr = kvs_type_traits_of(t->type);
    if (!tr || !tr->vec_dot || !tr->to_float)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: tensor '%s' has unsupported type %s", name,
                        kvs_dtype_name(t->type));
    w->name = t->name.s;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = kvs_row_bytes(t->type, n_in);
    w->data = t->data;
    return KVS_OK;
}

static kvs_status bind_vector(loader *L, const char *name, int64_t n, const float **out, bool required) {
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
    if (L->n_owned == L->cap_owned) {
        int nc = L->cap_owned ? 2 * L->cap_owned : 16;
        void **p = kvs_realloc(L->owned, sizeof(void *) * (size_t)nc);
        if (!p) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
        L->owned = p;
        L->cap_owned = nc;
    }
    float *f = kvs_malloc(sizeof(float) * (size_t)n);
    if (!f) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    L->owned[L->n_owned++] = f;
    tr->to_float(t->data, f, n);
    *out = f;
    return KVS_OK;
}

#define TRY(x) do { kvs_status st_ = (x); if (st_ != KVS_OK) return st_; } while (0)

static kvs_status load_hparams(loader *L) {
    kvs_model *m = L->m;
    kvs_hparams *hp = &m->hp;
    TRY(need_u32(L, "block_count", &hp->n_layer));
    TRY(need_u32(L, "embedding_length", &hp->n_embd));
    TRY(need_u32(L, "feed_forward_length", &hp->n_ff));
    TRY(need_u32(L, "attention.head_count", &hp->n_head));
    hp->n_head_kv = opt_u32(L, "attention.head_count_kv", hp->n_head);
    hp->n_ctx_train = opt_u32(L, "context_length", 2048);
    if (hp->n_embd % hp->n_head) return kvs_fail(KVS_ERR_FORMAT, "model: embedding %d not divisible by %d heads", hp->n_embd, hp->n_head);
    hp->head_dim_k = opt_u32(L, "attention.key_length", hp->n_embd / hp->n_head);
    hp->head_dim_v = opt_u32(L, "attention.value_length", hp->head_dim_k);
    if (hp->n_head % hp->n_head_kv)
        return kvs_fail(KVS_ERR_FORMAT, "model: %d heads not a multiple of %d KV heads", hp->n_head, hp->n_head_kv);
    if (hp->head_dim_k > 1024 || hp->head_dim_v > 1024 || (hp->head_dim_k & 1))
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: head size %d/%d not supported", hp->head_dim_k, hp->head_dim_v);
    hp->norm_eps = opt_f32(L, "attention.layer_norm_rms_epsilon", 1e-5f);
    hp->rope.mode = m->arch == KVS_ARCH_LLAMA ? KVS_ROPE_NORM : KVS_ROPE_NEOX;
    hp->rope.n_dims = opt_u32(L, "rope.dimension_count", hp->head_dim_k);
    if (hp->rope.n_dims > hp->head_dim_k || (hp->rope.n_dims & 1))
        return kvs_fail(KVS_ERR_FORMAT, "model: rope dimension %d invalid for head size %d", hp->rope.n_dims, hp->head_dim_k);
    hp->rope.freq_base = opt_f32(L, "rope.freq_base", 10000.0f);
    hp->rope.freq_scale = 1.0f;
    char k[128];
    const char *stype = kvs_gguf_get_str(m->gguf, akey(L, k, sizeof k, "rope.scaling.type"));
    if (stype && strcmp(stype, "none") != 0) {
        if (strcmp(stype, "linear") != 0)
            return kvs_fail(KVS_ERR_UNSUPPORTED, "model: rope scaling '%s' not supported", stype);
        float f = opt_f32(L, "rope.scaling.factor", 1.0f);
        if (!(f > 0.0f)) return kvs_fail(KVS_ERR_FORMAT, "model: bad rope.scaling.factor");
        hp->rope.freq_scale = 1.0f / f;
    }
    return KVS_OK;
}

static kvs_status bind_weights(loader *L) {
    kvs_model *m = L->m;
    const kvs_hparams *hp = &m->hp;
    const kvs_gguf_tensor *te = kvs_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te) return kvs_fail(KVS_ERR_FORMAT, "model: missing tensor 'token_embd.weight'");
    m->hp.n_vocab = (int32_t)te->ne[1];
    if (te->ne[1] <= 0 || te->ne[1] > (1 << 24)) return kvs_fail(KVS_ERR_FORMAT, "model: bad vocabulary size");
    TRY(bind_matrix(L, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd, true));
    TRY(bind_matrix(L, "output.weight", hp->n_embd, hp->n_vocab, &m->output, false));
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    TRY(bind_vector(L, "output_norm.weight", hp->n_embd, &m->output_norm, true));
    const float *freqs = NULL;
    TRY(bind_vector(L, "rope_freqs.weight", hp->rope.n_dims / 2, &freqs, false));
    m->hp.rope.freq_factors = freqs;

    m->layers = kvs_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    int64_t qd = (int64_t)hp->n_head * hp->head_dim_k, kd = (int64_t)hp->n_head_kv * hp->head_dim_k;
    int64_t vd = (int64_t)hp->n_head_kv * hp->head_dim_v, od = (int64_t)hp->n_head * hp->head_dim_v;
    bool biases = m->arch == KVS_ARCH_QWEN2;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        kvs_layer_weights *w = &m->layers[i];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", i, s), n)
        TRY(bind_vector(L, NAME("attn_norm.weight"), hp->n_embd, &w->attn_norm, true));
        TRY(bind_vector(L, NAME("ffn_norm.weight"), hp->n_embd, &w->ffn_norm, true));
        TRY(bind_matrix(L, NAME("attn_q.weight"), hp->n_embd, qd, &w->wq, true));
        TRY(bind_matrix(L, NAME("attn_k.weight"), hp->n_embd, kd, &w->wk, true));
        TRY(bind_matrix(L, NAME("attn_v.weight"), hp->n_embd, vd, &w->wv, true));
        TRY(bind_matrix(L, NAME("attn_output.weight"), od, hp->n_embd, &w->wo, true));
        TRY(bind_vector(L, NAME("attn_q.bias"), qd, &w->bq, biases));
        TRY(bind_vector(L, NAME("attn_k.bias"), kd, &w->bk, biases));
        TRY(bind_vector(L, NAME("attn_v.bias"), vd, &w->bv, biases));
        TRY(bind_matrix(L, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, &w->ffn_gate, true));
        TRY(bind_matrix(L, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, &w->ffn_up, true));
        TRY(bind_matrix(L, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, &w->ffn_down, true));
#undef NAME
    }
    for (uint64_t i = 0; i < kvs_gguf_n_tensors(m->gguf); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(m->gguf, i);
        m->weight_bytes += t->nbytes;
        uint64_t ne = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) ne *= (uint64_t)t->ne[d];
        m->n_params += ne;
    }
    /* decode reads every weight once, except the embedding table, of which
     * it reads one row (unless the table doubles as the output head) */
    m->decode_weight_bytes = m->weight_bytes;
    if (m->output.data != m->tok_embd.data)
        m->decode_weight_bytes -= (uint64_t)m->tok_embd.row_bytes * (uint64_t)(m->hp.n_vocab - 1);
    return KVS_OK;
}

kvs_model_params kvs_model_params_default(void) {
    kvs_model_params p = {.use_mmap = true};
    return p;
}

void kvs_model_free(kvs_model *m) {
    if (!m) return;
    kvs_tokenizer_free(m->tok);
    kvs_gguf_close(m->gguf);
    kvs_free(m->layers);
    for (size_t i = 0; m->owned && m->owned[i]; i++) kvs_free(m->owned[i]);
    kvs_free(m->owned);
    kvs_free(m);
}

static kvs_status load(kvs_model *m, loader *L, const char *path, const kvs_model_params *p) {
    TRY(kvs_gguf_open(path, p->use_mmap, &m->gguf));
    const char *arch = kvs_gguf_get_str(m->gguf, "general.architecture");
    if (!arch) return kvs_fail(KVS_ERR_FORMAT, "model: '%s' has no general.architecture", path);
    if (strcmp(arch, "llama") == 0) m->arch = KVS_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0) m->arch = KVS_ARCH_QWEN2;
    else return kvs_fail(KVS_ERR_UNSUPPORTED, "model: architecture '%s' is not supported yet (supported: llama, qwen2)", arch);
    snprintf(m->arch_name, sizeof m->arch_name, "%s", arch);
    L->arch = m->arch_name;
    TRY(load_hparams(L));
    TRY(bind_weights(L));
    TRY(kvs_tokenizer_load(m->gguf, &m->tok));
    if (kvs_tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
        return kvs_fail(KVS_ERR_FORMAT, "model: tokenizer has %d tokens but the embedding only %d",
                        kvs_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    return KVS_OK;
}

kvs_status kvs_model_load(const char *path, const kvs_model_params *params, kvs_model **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_model_load: out is NULL");
    *out = NULL;
    if (!path) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_model_load: path is NULL");
    kvs_dtype_init();
    kvs_model_params p = params ? *params : kvs_model_params_default();
    kvs_model *m = kvs_calloc(1, sizeof *m);
    if (!m) return kvs_fail(KVS_ERR_NOMEM, "model: out of memory");
    loader L = {.m = m};
    kvs_status st = load(m, &L, path, &p);
    /* owned vectors are kept as a NULL-terminated list */
    if (L.n_owned) {
        void **list = kvs_realloc(L.owned, sizeof(void *) * (size_t)(L.n_owned + 1));
        if (!list) { for (int i = 0; i < L.n_owned; i++) kvs_free(L.owned[i]); kvs_free(L.owned); if (st == KVS_OK) st = kvs_fail(KVS_ERR_NOMEM, "model: out of memory"); }
        else { list[L.n_owned] = NULL; m->owned = list; }
    } else {
        kvs_free(L.owned);
    }
    if (st != KVS_OK) { kvs_model_free(m); return st; }
    *out = m;
    return KVS_OK;
}

void kvs_model_get_info(const kvs_model *m, kvs_model_info *o) {
    memset(o, 0, sizeof *o);
    o->arch = m->arch_name;
    const char *name = kvs_gguf_get_str(m->gguf, "general.name");
    o->name = name ? name : "";
    o->n_vocab = m->hp.n_vocab;
    o->n_ctx_train = m->hp.n_ctx_train;
    o->n_embd = m->hp.n_embd;
    o->n_layer = m->hp.n_layer;
    o->n_head = m->hp.n_head;
    o->n_head_kv = m->hp.n_head_kv;
    o->head_dim = m->hp.head_dim_k;
    o->n_ff = m->hp.n_ff;
    o->rope_freq_base = m->hp.rope.freq_base;
    o->n_params = m->n_params;
    o->weight_bytes = m->weight_bytes;
    o->decode_weight_bytes = m->decode_weight_bytes;
    o->bos = kvs_tokenizer_bos(m->tok);
    o->eos = kvs_tokenizer_eos(m->tok);
}

void kvs_model_default_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out) {
    for (int32_t i = 0; i < m->hp.n_layer; i++)
        out[i] = kvs_kv_scheme_full((uint32_t)m->hp.n_head_kv, (uint32_t)m->hp.head_dim_k,
                                    (uint32_t)m->hp.head_dim_v, kv_type);
}

/* ---- tokenizer front-end ------------------------------------------------- */

kvs_status kvs_tokenize(const kvs_model *m, const char *text, size_t len, int add_bos,
                        bool parse_special, kvs_token *out, size_t cap, size_t *n_out) {
    if (!m || (!text && len) || !n_out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_tokenize: NULL argument");
    bool bos = add_bos < 0 ? kvs_tokenizer_add_bos_default(m->tok) : add_bos > 0;
    return kvs_tokenizer_encode(m->tok, text ? text : "", len, bos, parse_special, out, cap, n_out);
}

int kvs_token_to_piece(const kvs_model *m, kvs_token tok, char *buf, size_t cap) {
    return kvs_tokenizer_piece(m->tok, tok, false, buf, cap);
}

bool kvs_token_is_eog(const kvs_model *m, kvs_token tok) { return kvs_tokenizer_is_eog(m->tok, tok); }

char *kvs_chat_format_user(const kvs_model *m, const char *msg) { return kvs_tokenizer_chat_user(m->tok, msg); }
