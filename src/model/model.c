/* Model loading: open the GGUF, pick the architecture by
 * general.architecture, let it read its hyper-parameters and bind its weights
 * (src/arch/), count the weights, build the tokenizer. Any inconsistency is a
 * KVS_ERR_FORMAT naming the tensor or key. */
#include "model/model.h"
#include "model/key_center.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "model/loader.h"

static const kvs_arch_ops *const ARCHES[] = {
    &kvs_arch_llama,
    &kvs_arch_qwen2,
    &kvs_arch_qwen3,
    &kvs_arch_deepseek2,
    &kvs_arch_deepseek4,
    &kvs_arch_gemma3, &kvs_arch_gemma4,
};
#define N_ARCHES (sizeof ARCHES / sizeof *ARCHES)

const kvs_arch_ops *kvs_arch_find(const char *name) {
    for (size_t i = 0; name && i < N_ARCHES; i++)
        if (strcmp(name, ARCHES[i]->name) == 0) return ARCHES[i];
    return NULL;
}

void kvs_model_count_weights(kvs_model *m) {
    m->weight_bytes = m->n_params = 0;
    for (uint64_t i = 0; i < kvs_gguf_n_tensors(m->gguf); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(m->gguf, i);
        m->weight_bytes += t->nbytes;
        uint64_t ne = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) ne *= (uint64_t)t->ne[d];
        m->n_params += ne;
    }
    m->decode_weight_bytes = m->weight_bytes;
    if (m->output.data != m->tok_embd.data)
        m->decode_weight_bytes -= (uint64_t)m->tok_embd.row_bytes * (uint64_t)(m->hp.n_vocab - 1);
}

kvs_model_params kvs_model_params_default(void) {
    kvs_model_params p = {.use_mmap = true, .repack = true};
    return p;
}

void kvs_model_free(kvs_model *m) {
    if (!m) return;
    kvs_tokenizer_free(m->tok);
    kvs_gguf_close(m->gguf);
    for (size_t i = 0; m->owned && m->owned[i]; i++) kvs_free(m->owned[i]);
    kvs_free(m->owned);
    kvs_key_center_free(m->key_center);
    kvs_free(m);
}

static kvs_status load(kvs_model *m, kvs_loader *L, const char *path, const kvs_model_params *p) {
    KVS_TRY(kvs_gguf_open(path, p->use_mmap, &m->gguf));
    const char *arch = kvs_gguf_get_str(m->gguf, "general.architecture");
    if (!arch) return kvs_fail(KVS_ERR_FORMAT, "model: '%s' has no general.architecture", path);
    if (!(m->ops = kvs_arch_find(arch))) {
        char names[256] = "";
        for (size_t i = 0; i < N_ARCHES; i++) {
            size_t u = strlen(names);
            snprintf(names + u, sizeof names - u, "%s%s", i ? ", " : "", ARCHES[i]->name);
        }
        return kvs_fail(KVS_ERR_UNSUPPORTED, "model: architecture '%s' is not supported (supported: %s)", arch, names);
    }
    snprintf(m->arch_name, sizeof m->arch_name, "%s", arch);
    L->arch = m->arch_name;
    KVS_TRY(m->ops->load(L));
    kvs_model_count_weights(m);
    KVS_TRY(kvs_tokenizer_load(m->gguf, &m->tok));
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
    kvs_loader L = {.m = m, .repack = p.repack};
    kvs_status st = load(m, &L, path, &p);
    kvs_free(L.x8_src);
    kvs_free(L.x8_dst);
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
    o->repacked_bytes = m->repacked_bytes;
    o->bos = kvs_tokenizer_bos(m->tok);
    o->eos = kvs_tokenizer_eos(m->tok);
}

void kvs_model_full_schemes(const kvs_model *m, kvs_dtype kv_type, kvs_kv_scheme *out) {
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

char *kvs_chat_format_user(const kvs_model *m, const char *msg) { return m ? kvs_tokenizer_chat_user(m->tok, msg) : NULL; }
char *kvs_chat_format(const kvs_model *m, const kvs_chat_message *msgs, size_t n, bool add_assistant) {
    return m ? kvs_tokenizer_chat_format(m->tok, msgs, n, add_assistant) : NULL;
}
