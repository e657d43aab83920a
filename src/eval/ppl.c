/* Perplexity over non-overlapping chunks, scoring the second half of each
 * (the llama.cpp convention, so numbers compare across engines). */
#include <math.h>

#include "core/alloc.h"
#include "core/error.h"
#include "model/session.h"

kvs_status kvs_perplexity(kvs_session *s, const kvs_token *tokens, size_t n_tokens,
                          kvs_progress_fn progress, void *user, kvs_ppl_result *out) {
    if (!s || !tokens || !out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_perplexity: NULL argument");
    const uint32_t n_ctx = s->params.n_ctx;
    const size_t n_chunks = n_tokens / n_ctx;
    if (n_ctx < 4) return kvs_fail(KVS_ERR_INVALID_ARG, "perplexity: context %u is too small", n_ctx);
    if (n_chunks == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG,
                        "perplexity: the text has %zu tokens, fewer than one chunk of %u (use a longer text or a smaller -c)",
                        n_tokens, n_ctx);
    const int32_t n_vocab = s->model->hp.n_vocab;
    const uint32_t first = n_ctx / 2;
    const uint32_t sub = s->params.n_batch;
    float *logits = kvs_malloc(sizeof(float) * (size_t)sub * (size_t)n_vocab);
    kvs_token *buf = kvs_malloc(sizeof(kvs_token) * n_ctx);
    if (!logits || !buf) { kvs_free(logits); kvs_free(buf); return kvs_fail(KVS_ERR_NOMEM, "perplexity: out of memory"); }
    const kvs_model *m = s->model;
    bool add_bos = kvs_tokenizer_add_bos_default(m->tok) && kvs_tokenizer_bos(m->tok) >= 0;
    double sum = 0.0, sum2 = 0.0;
    uint64_t count = 0;
    kvs_status st = KVS_OK;
    for (size_t c = 0; c < n_chunks && st == KVS_OK; c++) {
        const kvs_token *chunk = tokens + c * n_ctx;
        for (uint32_t i = 0; i < n_ctx; i++) buf[i] = chunk[i];
        if (add_bos) buf[0] = kvs_tokenizer_bos(m->tok);
        kvs_session_reset(s);
        /* first half: no logits needed */
        if ((st = kvs_decode(s, buf, first, false, NULL)) != KVS_OK) break;
        /* second half in sub-batches with logits for every position; the
         * logits of position j predict token j+1 */
        for (uint32_t j0 = first; j0 < n_ctx; j0 += sub) {
            uint32_t nb = n_ctx - j0 < sub ? n_ctx - j0 : sub;
            if ((st = kvs_decode(s, buf + j0, nb, true, logits)) != KVS_OK) break;
            for (uint32_t r = 0; r < nb; r++) {
                uint32_t j = j0 + r;
                if (j + 1 >= n_ctx) break;
                const float *lg = logits + (size_t)r * n_vocab;
                float mx = lg[0];
                for (int32_t v = 1; v < n_vocab; v++) if (lg[v] > mx) mx = lg[v];
                double z = 0.0;
                for (int32_t v = 0; v < n_vocab; v++) z += exp((double)lg[v] - mx);
                double nll = -((double)lg[chunk[j + 1]] - mx - log(z));
                sum += nll;
                sum2 += nll * nll;
                count++;
            }
        }
        if (st == KVS_OK && progress && !progress(user, c + 1, n_chunks, exp(sum / (double)count)))
            st = kvs_fail(KVS_ERR_INVALID_ARG, "perplexity: cancelled");
    }
    kvs_free(logits);
    kvs_free(buf);
    kvs_session_reset(s);
    if (st != KVS_OK) return st;
    double mean = sum / (double)count;
    double var = sum2 / (double)count - mean * mean;
    out->nll = mean;
    out->ppl = exp(mean);
    out->nll_stderr = count > 1 && var > 0 ? sqrt(var / (double)(count - 1)) : 0.0;
    out->n_scored = count;
    out->n_chunks = n_chunks;
    return KVS_OK;
}
