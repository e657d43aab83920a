/* Quality of a compressed KV cache against a reference cache: perplexity,
 * exact KL divergence of the next-token distributions and top-1 agreement,
 * with every session run in lockstep over the same chunks so reference
 * logits live for one sub-batch only (memory: two sub-batches of logits,
 * whatever the text length or number of candidates). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "model/session.h"

/* Sub-batch of scored positions decoded per step: bounds the logits held
 * (SUB x n_vocab floats per session in flight, plus SUB x n_vocab doubles of
 * reference log-probabilities). */
#define SUB 64

/* log-softmax of one row into out (double), returns nothing; the row's
 * argmax into *arg. */
static void log_softmax(const float *lg, int32_t n, double *out, int32_t *arg) {
    int32_t a = 0;
    for (int32_t v = 1; v < n; v++) if (lg[v] > lg[a]) a = v;
    double mx = lg[a], z = 0.0;
    for (int32_t v = 0; v < n; v++) z += exp((double)lg[v] - mx);
    double lz = mx + log(z);
    for (int32_t v = 0; v < n; v++) out[v] = (double)lg[v] - lz;
    if (arg) *arg = a;
}

/* KL(P || Q) from P's log-probs and Q's logits. Terms with p = 0 (underflow)
 * contribute 0, which is their limit. */
static double kl_from(const double *lp, const float *lq_logits, int32_t n, double *lz_out) {
    float mx = lq_logits[0];
    for (int32_t v = 1; v < n; v++) if (lq_logits[v] > mx) mx = lq_logits[v];
    double z = 0.0;
    for (int32_t v = 0; v < n; v++) z += exp((double)lq_logits[v] - mx);
    double lz = (double)mx + log(z), kl = 0.0;
    if (lz_out) *lz_out = lz;
    for (int32_t v = 0; v < n; v++) {
        double p = exp(lp[v]);
        if (p > 0.0) kl += p * (lp[v] - ((double)lq_logits[v] - lz));
    }
    return kl > 0.0 ? kl : 0.0; /* rounding can leave -1e-17 for identical inputs */
}

double kvs_logits_kl(const float *ref_logits, const float *logits, int32_t n_vocab) {
    if (!ref_logits || !logits || n_vocab <= 0) return NAN;
    double *lp = kvs_malloc(sizeof(double) * (size_t)n_vocab);
    if (!lp) return NAN;
    log_softmax(ref_logits, n_vocab, lp, NULL);
    double kl = kl_from(lp, logits, n_vocab, NULL);
    kvs_free(lp);
    return kl;
}

int32_t kvs_logits_argmax(const float *logits, int32_t n_vocab) {
    int32_t a = 0;
    for (int32_t v = 1; v < n_vocab; v++) if (logits[v] > logits[a]) a = v;
    return a;
}

static bool push_kl(kvs_cmp_result *r, double kl) {
    if (r->n_scored >= r->kl_cap) {
        size_t cap = r->kl_cap ? r->kl_cap * 2 : 4096;
        double *nv = realloc(r->kl_values, sizeof(double) * cap);
        if (!nv) return false;
        r->kl_values = nv;
        r->kl_cap = cap;
    }
    r->kl_values[r->n_scored] = kl;
    return true;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void kvs_cmp_finish(kvs_cmp_result *r) {
    if (!r || !r->n_scored) return;
    double n = (double)r->n_scored, mean = r->sum_nll / n, var = r->sum_nll2 / n - mean * mean;
    r->nll = mean;
    r->ppl = exp(mean);
    r->nll_stderr = r->n_scored > 1 && var > 0 ? sqrt(var / (n - 1)) : 0.0;
    r->kl_mean = r->sum_kl / n;
    r->top1 = (double)r->n_top1 / n;
    if (r->kl_values) {
        double *tmp = malloc(sizeof(double) * r->n_scored);
        if (tmp) {
            memcpy(tmp, r->kl_values, sizeof(double) * r->n_scored);
            qsort(tmp, r->n_scored, sizeof(double), cmp_double);
            size_t i99 = (size_t)ceil(0.99 * n) - 1; /* nearest-rank percentile */
            r->kl_p99 = tmp[i99 < r->n_scored ? i99 : r->n_scored - 1];
            r->kl_max = tmp[r->n_scored - 1];
            free(tmp);
        }
    }
}

void kvs_cmp_free(kvs_cmp_result *r) {
    if (!r) return;
    free(r->kl_values);
    r->kl_values = NULL;
    r->kl_cap = 0;
}

/* NLL of `next` from log-probs. */
static double nll_of(const double *lp, kvs_token next) { return -lp[next]; }

kvs_status kvs_compare(kvs_session *ref, kvs_session *const *cand, int n_cand, const kvs_token *tokens,
                       size_t n_tokens, uint32_t n_ctx, kvs_progress_fn progress, void *user,
                       kvs_cmp_result *ref_out, kvs_cmp_result *out) {
    if (!ref || !tokens || (n_cand > 0 && (!cand || !out)) || n_cand < 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "compare: NULL argument");
    if (n_ctx < 4) return kvs_fail(KVS_ERR_INVALID_ARG, "compare: context %u is too small", n_ctx);
    const kvs_model *m = ref->model;
    for (int i = 0; i < n_cand; i++)
        if (!cand[i] || cand[i]->model != m)
            return kvs_fail(KVS_ERR_INVALID_ARG, "compare: candidate %d is missing or uses another model", i);
    for (int i = -1; i < n_cand; i++) {
        const kvs_session *s = i < 0 ? ref : cand[i];
        if (s->params.n_ctx < n_ctx)
            return kvs_fail(KVS_ERR_INVALID_ARG, "compare: a session has a context of %u, less than the chunk of %u",
                            s->params.n_ctx, n_ctx);
    }
    const size_t n_chunks = n_tokens / n_ctx;
    if (n_chunks == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG,
                        "compare: the text has %zu tokens, fewer than one chunk of %u (use a longer text or a smaller -c)",
                        n_tokens, n_ctx);
    const int32_t V = m->hp.n_vocab;
    const uint32_t first = n_ctx / 2;
    float *ref_lg = kvs_malloc(sizeof(float) * SUB * (size_t)V);
    float *lg = kvs_malloc(sizeof(float) * SUB * (size_t)V);
    double *lp = kvs_malloc(sizeof(double) * SUB * (size_t)V);
    int32_t *ref_arg = kvs_malloc(sizeof(int32_t) * SUB);
    kvs_token *buf = kvs_malloc(sizeof(kvs_token) * n_ctx);
    kvs_status st = KVS_OK;
    if (!ref_lg || !lg || !lp || !ref_arg || !buf) { st = kvs_fail(KVS_ERR_NOMEM, "compare: out of memory"); goto done; }
    const bool add_bos = kvs_tokenizer_add_bos_default(m->tok) && kvs_tokenizer_bos(m->tok) >= 0;
    /* progress counts tokens decoded, summed over the sessions */
    const uint64_t total = (uint64_t)n_chunks * n_ctx * (uint64_t)(n_cand + 1);
    uint64_t done = 0;
    for (size_t c = 0; c < n_chunks && st == KVS_OK; c++) {
        const kvs_token *chunk = tokens + c * n_ctx;
        memcpy(buf, chunk, sizeof(kvs_token) * n_ctx);
        if (add_bos) buf[0] = kvs_tokenizer_bos(m->tok);
        for (int i = -1; i < n_cand && st == KVS_OK; i++) {
            kvs_session *s = i < 0 ? ref : cand[i];
            kvs_session_reset(s);
            st = kvs_decode(s, buf, first, false, NULL);
            done += first;
            if (st == KVS_OK && progress && !progress(user, done, total, 0.0))
                st = kvs_fail(KVS_ERR_INVALID_ARG, "compare: cancelled");
        }
        for (uint32_t j0 = first; j0 < n_ctx && st == KVS_OK; j0 += SUB) {
            uint32_t nb = n_ctx - j0 < SUB ? n_ctx - j0 : SUB;
            if ((st = kvs_decode(ref, buf + j0, nb, true, ref_lg)) != KVS_OK) break;
            /* logits of position j predict token j + 1; the last position of
             * the chunk has nothing to predict */
            uint32_t ns = j0 + nb >= n_ctx ? nb - 1 : nb;
            for (uint32_t r = 0; r < ns; r++) {
                double *l = lp + (size_t)r * V;
                log_softmax(ref_lg + (size_t)r * V, V, l, &ref_arg[r]);
                if (ref_out) {
                    double nll = nll_of(l, chunk[j0 + r + 1]);
                    ref_out->sum_nll += nll;
                    ref_out->sum_nll2 += nll * nll;
                    ref_out->n_top1++;
                    ref_out->n_scored++;
                }
            }
            for (int i = 0; i < n_cand && st == KVS_OK; i++) {
                if ((st = kvs_decode(cand[i], buf + j0, nb, true, lg)) != KVS_OK) break;
                kvs_cmp_result *o = &out[i];
                for (uint32_t r = 0; r < ns; r++) {
                    const float *row = lg + (size_t)r * V;
                    const double *l = lp + (size_t)r * V;
                    double lz;
                    double kl = kl_from(l, row, V, &lz);
                    double nll = -((double)row[chunk[j0 + r + 1]] - lz); /* as the reference's -lp[next] */
                    o->sum_nll += nll;
                    o->sum_nll2 += nll * nll;
                    o->sum_kl += kl;
                    if (kvs_logits_argmax(row, V) == ref_arg[r]) o->n_top1++;
                    if (!push_kl(o, kl)) { st = kvs_fail(KVS_ERR_NOMEM, "compare: out of memory"); break; }
                    o->n_scored++;
                }
            }
            done += (uint64_t)nb * (uint64_t)(n_cand + 1);
            if (st == KVS_OK && progress && !progress(user, done, total, 0.0))
                st = kvs_fail(KVS_ERR_INVALID_ARG, "compare: cancelled");
        }
        if (st != KVS_OK) break;
        if (ref_out) ref_out->n_chunks++;
        for (int i = 0; i < n_cand; i++) out[i].n_chunks++;
    }
done:
    kvs_free(ref_lg);
    kvs_free(lg);
    kvs_free(lp);
    kvs_free(ref_arg);
    kvs_free(buf);
    kvs_session_reset(ref);
    for (int i = 0; i < n_cand; i++) if (cand[i]) kvs_session_reset(cand[i]);
    return st;
}
