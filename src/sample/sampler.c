/* Token sampling: repetition penalty, then greedy, or top-k -> top-p ->
 * min-p -> temperature -> draw from a seeded generator (llama.cpp order, so
 * settings mean the same thing in both). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "kvslim.h"

typedef struct cand { float logit; int32_t id; } cand;

struct kvs_sampler {
    kvs_sampler_params p;
    int32_t n_vocab;
    uint64_t rng;
    cand *c;              /* (n_vocab) */
    kvs_token *hist;      /* ring of the last repeat_last_n tokens */
    int32_t hist_n, hist_pos;
};

kvs_sampler_params kvs_sampler_params_default(void) {
    kvs_sampler_params p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0x5eed};
    return p;
}

kvs_status kvs_sampler_new(const kvs_sampler_params *params, int32_t n_vocab, kvs_sampler **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_sampler_new: out is NULL");
    *out = NULL;
    kvs_sampler_params p = params ? *params : kvs_sampler_params_default();
    if (n_vocab <= 0) return kvs_fail(KVS_ERR_INVALID_ARG, "sampler: vocabulary size %d", n_vocab);
    /* each parameter on its own, named (NaN fails every comparison) */
    if (!isfinite(p.temperature))
        return kvs_fail(KVS_ERR_INVALID_ARG, "sampler: temperature %g: want a finite number (<= 0 for greedy)",
                        (double)p.temperature);
    if (!(p.top_p > 0.0f) || !isfinite(p.top_p))
        return kvs_fail(KVS_ERR_INVALID_ARG, "sampler: top_p %g: want a finite number > 0 (>= 1 for off)", (double)p.top_p);
    if (!(p.min_p <= 1.0f) || !isfinite(p.min_p))
        return kvs_fail(KVS_ERR_INVALID_ARG, "sampler: min_p %g: want a finite number <= 1 (<= 0 for off)", (double)p.min_p);
    if (!(p.repeat_penalty > 0.0f) || !isfinite(p.repeat_penalty))
        return kvs_fail(KVS_ERR_INVALID_ARG, "sampler: repeat_penalty %g: want a finite number > 0 (1 for off)",
                        (double)p.repeat_penalty);
    if (p.repeat_last_n < 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "sampler: repeat_last_n %d: want a token count >= 0 (0 for off)",
                        p.repeat_last_n);
    kvs_sampler *s = kvs_calloc(1, sizeof *s);
    if (!s) return kvs_fail(KVS_ERR_NOMEM, "sampler: out of memory");
    s->p = p;
    s->n_vocab = n_vocab;
    s->rng = p.seed ^ 0x9e3779b97f4a7c15ull;
    s->c = kvs_calloc((size_t)n_vocab, sizeof *s->c);
    s->hist = kvs_calloc((size_t)(p.repeat_last_n ? p.repeat_last_n : 1), sizeof *s->hist);
    if (!s->c || !s->hist) { kvs_sampler_free(s); return kvs_fail(KVS_ERR_NOMEM, "sampler: out of memory"); }
    *out = s;
    return KVS_OK;
}

void kvs_sampler_free(kvs_sampler *s) {
    if (!s) return;
    kvs_free(s->c);
    kvs_free(s->hist);
    kvs_free(s);
}

void kvs_sampler_accept(kvs_sampler *s, kvs_token tok) {
    if (!s->p.repeat_last_n) return;
    s->hist[s->hist_pos] = tok;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_n < s->p.repeat_last_n) s->hist_n++;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cmp_cand_desc(const void *a, const void *b) {
    float x = ((const cand *)a)->logit, y = ((const cand *)b)->logit;
    if (x > y) return -1;
    if (x < y) return 1;
    return ((const cand *)a)->id - ((const cand *)b)->id;
}

/* Move the k largest to the front (unordered), by quickselect. */
static void select_top(cand *c, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = c[(lo + hi) / 2].logit;
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (c[i].logit > pivot) i++;
            while (c[j].logit < pivot) j--;
            if (i <= j) { cand t = c[i]; c[i] = c[j]; c[j] = t; i++; j--; }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

kvs_token kvs_sampler_sample(kvs_sampler *s, float *logits) {
    const kvs_sampler_params *p = &s->p;
    if (p->repeat_penalty != 1.0f) {
        for (int32_t i = 0; i < s->hist_n; i++) {
            kvs_token t = s->hist[i];
            if (t < 0 || t >= s->n_vocab) continue;
            /* apply once per distinct token */
            bool seen = false;
            for (int32_t j = 0; j < i; j++) if (s->hist[j] == t) { seen = true; break; }
            if (seen) continue;
            logits[t] = logits[t] > 0 ? logits[t] / p->repeat_penalty : logits[t] * p->repeat_penalty;
        }
    }
    if (p->temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < s->n_vocab; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    int32_t n = s->n_vocab;
    for (int32_t i = 0; i < n; i++) { s->c[i].logit = logits[i]; s->c[i].id = i; }
    if (p->top_k > 0 && p->top_k < n) { select_top(s->c, n, p->top_k); n = p->top_k; }
    qsort(s->c, (size_t)n, sizeof *s->c, cmp_cand_desc);
    /* probabilities at temperature 1 for the top-p / min-p filters */
    float mx = s->c[0].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)s->c[i].logit - mx);
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += exp((double)s->c[i].logit - mx) / sum;
            if (cum >= p->top_p) { n = i + 1; break; }
        }
    }
    if (p->min_p > 0.0f) {
        double floor_logit = mx + log((double)p->min_p);
        int32_t keep = 1;
        while (keep < n && s->c[keep].logit >= floor_logit) keep++;
        n = keep;
    }
    double tot = 0.0;
    for (int32_t i = 0; i < n; i++) tot += exp(((double)s->c[i].logit - mx) / p->temperature);
    double r = (double)(splitmix(&s->rng) >> 11) / 9007199254740992.0 * tot;
    for (int32_t i = 0; i < n; i++) {
        r -= exp(((double)s->c[i].logit - mx) / p->temperature);
        if (r <= 0.0) return s->c[i].id;
    }
    return s->c[n - 1].id;
}
