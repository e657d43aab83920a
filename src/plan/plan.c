/* Planner core: model lifetime, KV sums over layers (all through
 * kvs_kv_scheme_bytes), what-if transforms, context-list parsing and the
 * memory / speed / cost arithmetic of kvs_plan_compute(). */
#include "plan/plan.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "kv/kv_spec.h"

/* ---- model lifetime ------------------------------------------------------ */

kvs_status kvs_plan_model_init(kvs_plan_model *m, uint32_t n_layer) {
    if (!m) return kvs_fail(KVS_ERR_INVALID_ARG, "plan: NULL model");
    memset(m, 0, sizeof *m);
    if (n_layer == 0 || n_layer > 100000)
        return kvs_fail(KVS_ERR_INVALID_ARG, "plan: layer count %u out of range (1..100000)", n_layer);
    m->layers = kvs_calloc(n_layer, sizeof *m->layers);
    if (!m->layers) return kvs_fail(KVS_ERR_NOMEM, "plan: out of memory for %u layers", n_layer);
    m->n_layer = n_layer;
    for (uint32_t i = 0; i < n_layer; i++) {
        m->layers[i].kv.store = KVS_KV_STORE_NONE;
        m->layers[i].kv.shared_from = -1;
        m->layers[i].kv.k_type = m->layers[i].kv.v_type = KVS_TYPE_BF16;
    }
    return KVS_OK;
}

void kvs_plan_model_free(kvs_plan_model *m) {
    if (!m) return;
    kvs_free(m->layers);
    m->layers = NULL;
    m->n_layer = 0;
}

kvs_status kvs_plan_model_copy(kvs_plan_model *dst, const kvs_plan_model *src) {
    if (!dst || !src) return kvs_fail(KVS_ERR_INVALID_ARG, "plan: NULL model");
    *dst = *src;
    dst->layers = kvs_calloc(src->n_layer ? src->n_layer : 1, sizeof *dst->layers);
    if (!dst->layers) {
        dst->n_layer = 0;
        return kvs_fail(KVS_ERR_NOMEM, "plan: out of memory copying a model");
    }
    if (src->n_layer) memcpy(dst->layers, src->layers, src->n_layer * sizeof *dst->layers);
    return KVS_OK;
}

void kvs_plan_model_set_weight_bits(kvs_plan_model *m, double bits, const char *format) {
    m->weight_bytes = m->params_total * bits / 8.0;
    m->active_weight_bytes = m->params_active * bits / 8.0;
    snprintf(m->weight_format, sizeof m->weight_format, "%s", format ? format : "");
}

/* ---- sums over layers ---------------------------------------------------- */

uint64_t kvs_plan_kv_bytes(const kvs_plan_model *m, uint64_t n_ctx) {
    uint64_t sum = 0;
    for (uint32_t i = 0; m && i < m->n_layer; i++) sum += kvs_kv_scheme_bytes(&m->layers[i].kv, n_ctx);
    return sum;
}

static uint64_t layer_read_bytes(const kvs_plan_layer *L, uint64_t n) {
    const kvs_kv_scheme *s = &L->kv;
    uint64_t all = kvs_kv_scheme_bytes(s, n);
    if (!L->read_topk) return all;
    uint64_t E = kvs_kv_scheme_entry_bytes(s);
    uint64_t entries = 0;
    if (s->store == KVS_KV_STORE_LATENT) entries = kvs_kv_scheme_tokens_held(s, n);
    else if (s->store == KVS_KV_STORE_COMPRESSED && s->compress_ratio) entries = n / s->compress_ratio;
    if (entries <= L->read_topk) return all;
    /* The indexer keys are all read; only topk of the entries themselves. */
    return all - (entries - L->read_topk) * E;
}

uint64_t kvs_plan_kv_read_bytes(const kvs_plan_model *m, uint64_t n_ctx) {
    uint64_t sum = 0;
    for (uint32_t i = 0; m && i < m->n_layer; i++) {
        const kvs_kv_scheme *s = &m->layers[i].kv;
        if (s->store == KVS_KV_STORE_SHARED && s->shared_from >= 0 && (uint32_t)s->shared_from < m->n_layer)
            sum += layer_read_bytes(&m->layers[s->shared_from], n_ctx); /* re-read the source cache */
        else
            sum += layer_read_bytes(&m->layers[i], n_ctx);
    }
    return sum;
}

double kvs_plan_kv_bytes_per_token(const kvs_plan_model *m) {
    double sum = 0;
    for (uint32_t i = 0; m && i < m->n_layer; i++) sum += kvs_kv_scheme_bytes_per_token(&m->layers[i].kv);
    return sum;
}

double kvs_plan_kv_fixed_bytes(const kvs_plan_model *m) {
    const uint64_t big = (uint64_t)1 << 26;
    double fixed = 0;
    for (uint32_t i = 0; m && i < m->n_layer; i++) {
        const kvs_kv_scheme *s = &m->layers[i].kv;
        double f = (double)kvs_kv_scheme_bytes(s, big) - kvs_kv_scheme_bytes_per_token(s) * (double)big;
        if (f > 0.5) fixed += f;
    }
    return fixed;
}

/* ---- parsing helpers ----------------------------------------------------- */

static bool parse_u64_suffix(const char *s, size_t n, uint64_t *out, bool ctx_units) {
    char tmp[64];
    if (n == 0 || n >= sizeof tmp) return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double v = strtod(tmp, &end);
    if (end == tmp || errno || !isfinite(v) || v < 0) return false;
    double mul = 1;
    if (*end) {
        char c = (char)tolower((unsigned char)*end);
        if (c == 'k') mul = 1024.0;
        else if (c == 'm') mul = 1048576.0;
        else if (c == 'g' && !ctx_units) mul = 1073741824.0;
        else return false;
        end++;
        if (*end) return false;
    }
    v *= mul;
    if (v >= 1.8e19) return false;
    *out = (uint64_t)llround(v);
    return true;
}

kvs_status kvs_plan_parse_ctx_list(const char *s, uint64_t *out, size_t cap, size_t *n_out) {
    size_t n = 0;
    if (!s || !*s) return kvs_fail(KVS_ERR_INVALID_ARG, "--ctx: empty list");
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        uint64_t v;
        if (!parse_u64_suffix(p, len, &v, true) || v == 0 || v > ((uint64_t)1 << 40))
            return kvs_fail(KVS_ERR_INVALID_ARG, "--ctx: bad context length '%.*s' (use e.g. 4096, 4k, 128k, 1m)",
                            (int)len, p);
        if (n >= cap) return kvs_fail(KVS_ERR_INVALID_ARG, "--ctx: more than %zu values", cap);
        out[n++] = v;
        if (!e) break;
        p = e + 1;
    }
    *n_out = n;
    return KVS_OK;
}

static bool dtype_from_name(const char *s, size_t n, kvs_dtype *out) {
    static const struct { const char *name; kvs_dtype t; } tab[] = {
        {"f32", KVS_TYPE_F32}, {"f16", KVS_TYPE_F16}, {"fp16", KVS_TYPE_F16}, {"bf16", KVS_TYPE_BF16},
        {"q8_0", KVS_TYPE_Q8_0}, {"q4_0", KVS_TYPE_Q4_0}, {"q4_1", KVS_TYPE_Q4_1},
        {"q5_0", KVS_TYPE_Q5_0}, {"q5_1", KVS_TYPE_Q5_1},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strlen(tab[i].name) == n && strncmp(tab[i].name, s, n) == 0) { *out = tab[i].t; return true; }
    return false;
}

/* ---- transforms ---------------------------------------------------------- */

static bool is_attn(const kvs_kv_scheme *s) {
    return s->store == KVS_KV_STORE_FULL || s->store == KVS_KV_STORE_LATENT ||
           s->store == KVS_KV_STORE_COMPRESSED;
}

static kvs_status check_all(const kvs_plan_model *m, const char *what) {
    for (uint32_t i = 0; i < m->n_layer; i++) {
        if (kvs_kv_scheme_validate(&m->layers[i].kv) != KVS_OK) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", kvs_last_error());
            return kvs_fail(KVS_ERR_INVALID_ARG, "%s: layer %u: %s", what, i, msg);
        }
    }
    return KVS_OK;
}

static kvs_status set_type(kvs_plan_model *m, kvs_dtype t) {
    for (uint32_t i = 0; i < m->n_layer; i++) {
        kvs_kv_scheme *s = &m->layers[i].kv;
        if (!is_attn(s)) continue;
        s->layout = KVS_KV_LAYOUT_BLOCK;
        s->k_type = s->v_type = t;
        s->entry_bytes = 0;
        if (s->indexer_dim) { s->indexer_type = t; s->indexer_bytes = 0; }
        else s->indexer_bytes = 0;
    }
    return KVS_OK;
}

/* Rotated-codebook rows (core/tq.h) on the full K/V layers, rotated as the
 * engine's rules rotate them (kv/kv_spec.c); other stores keep their format. */
static kvs_status set_tq(kvs_plan_model *m, kvs_dtype kt, kvs_dtype vt) {
    unsigned n_full = 0;
    for (uint32_t i = 0; i < m->n_layer; i++) {
        kvs_kv_scheme *s = &m->layers[i].kv;
        if (s->store != KVS_KV_STORE_FULL) continue;
        s->layout = KVS_KV_LAYOUT_BLOCK;
        s->k_type = kt;
        s->v_type = vt;
        s->rotate = s->rotate_v = 1;
        n_full++;
    }
    if (n_full == 0)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "tq: the model has no full K/V layers (latent/compressed stores "
                                             "have no rotated-codebook rows); use q8_0/q4_0 instead");
    return KVS_OK;
}

static kvs_status set_kivi(kvs_plan_model *m, uint32_t kb, uint32_t vb, uint32_t g) {
    if (kb < 1 || kb > 8 || vb < 1 || vb > 8 || g == 0 || g > 4096)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kivi: bits must be 1..8 and group 1..4096 (k=%u v=%u g=%u)", kb, vb, g);
    unsigned n_full = 0;
    for (uint32_t i = 0; i < m->n_layer; i++) {
        kvs_kv_scheme *s = &m->layers[i].kv;
        if (s->store != KVS_KV_STORE_FULL) continue;
        s->layout = KVS_KV_LAYOUT_CHANNEL;
        s->k_bits = kb; s->v_bits = vb; s->group = g;
        n_full++;
    }
    if (n_full == 0)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "kivi: the model has no full K/V layers (latent/compressed stores "
                                             "have no per-channel keys); use q8_0/q4_0 instead");
    return KVS_OK;
}

typedef struct kvarg { const char *key; size_t klen; uint64_t val; bool has; } kvarg;

/* Splits "a=1" into key/val. */
static bool split_kv(const char *s, size_t n, const char **key, size_t *klen, const char **val, size_t *vlen) {
    const char *eq = memchr(s, '=', n);
    if (!eq) return false;
    *key = s; *klen = (size_t)(eq - s);
    *val = eq + 1; *vlen = n - *klen - 1;
    return true;
}

static bool key_is(const char *k, size_t kl, const char *name) {
    return strlen(name) == kl && strncmp(k, name, kl) == 0;
}

/* One transform with its parameters (already split). */
typedef struct xform {
    char name[32];
    uint64_t a, b, c;     /* primary values */
    bool has_a, has_b, has_c;
} xform;

static kvs_status apply_one(kvs_plan_model *m, const xform *x) {
    const char *n = x->name;
    if (!strcmp(n, "gqa") || !strcmp(n, "base") || !strcmp(n, "none") || !strcmp(n, "mha") || !strcmp(n, "asis"))
        return KVS_OK;
    if (!strcmp(n, "latent") || !strcmp(n, "mla")) {
        if (!x->has_a || x->a == 0 || x->a > 65536)
            return kvs_fail(KVS_ERR_INVALID_ARG, "what-if %s: needs r=RANK (1..65536), e.g. %s:r=256", n, n);
        uint32_t rope = x->has_b ? (uint32_t)x->b : 64;
        unsigned changed = 0;
        for (uint32_t i = 0; i < m->n_layer; i++) {
            kvs_kv_scheme *s = &m->layers[i].kv;
            if (s->store != KVS_KV_STORE_FULL && s->store != KVS_KV_STORE_LATENT) continue;
            kvs_dtype t = s->layout == KVS_KV_LAYOUT_CHANNEL ? KVS_TYPE_F16 : s->k_type;
            if (s->store == KVS_KV_STORE_FULL) s->entry_bytes = 0;
            s->store = KVS_KV_STORE_LATENT;
            s->layout = KVS_KV_LAYOUT_BLOCK;
            s->latent_rank = (uint32_t)x->a;
            s->rope_dim = rope;
            s->k_type = s->v_type = t;
            s->entry_bytes = 0;
            changed++;
        }
        if (!changed) return kvs_fail(KVS_ERR_UNSUPPORTED, "what-if %s: no full or latent layers to convert", n);
        return KVS_OK;
    }
    if (!strcmp(n, "window")) {
        if (!x->has_a || x->a == 0 || x->a > 0xFFFFFFFFu || x->b > 0xFFFFFFFFu)
            return kvs_fail(KVS_ERR_INVALID_ARG, "what-if window: needs window=N[+SINKS], N >= 1");
        for (uint32_t i = 0; i < m->n_layer; i++) {
            kvs_kv_scheme *s = &m->layers[i].kv;
            if (s->store != KVS_KV_STORE_FULL && s->store != KVS_KV_STORE_LATENT) continue;
            if (s->window == 0 || s->window > x->a) { s->window = (uint32_t)x->a; s->sinks = (uint32_t)x->b; }
        }
        return KVS_OK;
    }
    if (!strcmp(n, "share")) {
        if (!x->has_a || x->a < 1 || x->a > m->n_layer)
            return kvs_fail(KVS_ERR_INVALID_ARG, "what-if share: needs share=K with 1 <= K <= %u layers", m->n_layer);
        uint32_t k = (uint32_t)x->a;
        for (uint32_t i = 0; i < m->n_layer; i++) {
            if (i % k == 0) continue;
            uint32_t src = i - i % k;
            kvs_kv_scheme *s = &m->layers[i].kv;
            if (!is_attn(s) || !is_attn(&m->layers[src].kv)) continue;
            kvs_kv_scheme sh = *s;
            sh.store = KVS_KV_STORE_SHARED;
            sh.shared_from = (int32_t)src;
            *s = sh;
        }
        return KVS_OK;
    }
    if (!strcmp(n, "compress")) {
        if (!x->has_a || x->a < 2 || x->a > 65536)
            return kvs_fail(KVS_ERR_INVALID_ARG, "what-if compress: needs compress=M with 2 <= M <= 65536");
        uint32_t raw = x->has_b ? (uint32_t)x->b : (uint32_t)x->a;
        for (uint32_t i = 0; i < m->n_layer; i++) {
            kvs_kv_scheme *s = &m->layers[i].kv;
            if (s->store != KVS_KV_STORE_FULL && s->store != KVS_KV_STORE_LATENT) continue;
            if (s->window) continue; /* already bounded: leave local layers as they are */
            uint32_t dim;
            kvs_dtype t = s->layout == KVS_KV_LAYOUT_CHANNEL ? KVS_TYPE_F16 : s->k_type;
            if (s->store == KVS_KV_STORE_FULL) dim = s->n_kv_heads * (s->head_dim_k + s->head_dim_v);
            else dim = s->latent_rank + s->rope_dim;
            uint32_t eb = s->store == KVS_KV_STORE_LATENT ? s->entry_bytes : 0;
            uint32_t ib = s->indexer_bytes, idim = s->indexer_dim;
            kvs_dtype it = s->indexer_type;
            kvs_kv_scheme c;
            memset(&c, 0, sizeof c);
            c.store = KVS_KV_STORE_COMPRESSED;
            c.shared_from = -1;
            c.compress_ratio = (uint32_t)x->a;
            c.entry_dim = dim;
            c.entry_bytes = eb;
            c.indexer_dim = idim; c.indexer_bytes = ib; c.indexer_type = it;
            c.k_type = c.v_type = t;
            c.window = raw;
            c.page_tokens = s->page_tokens;
            *s = c;
        }
        return KVS_OK;
    }
    if (!strcmp(n, "page")) {
        if (!x->has_a || x->a > 1048576) return kvs_fail(KVS_ERR_INVALID_ARG, "what-if page: needs page=P tokens");
        for (uint32_t i = 0; i < m->n_layer; i++) m->layers[i].kv.page_tokens = (uint32_t)x->a;
        return KVS_OK;
    }
    if (!strcmp(n, "kivi")) {
        return set_kivi(m, x->has_a ? (uint32_t)x->a : 4, x->has_b ? (uint32_t)x->b : 2,
                        x->has_c ? (uint32_t)x->c : 32);
    }
    kvs_dtype t, tv;
    if (dtype_from_name(n, strlen(n), &t)) return set_type(m, t);
    if (kvs_kv_tq_from_name(n, &t, &tv)) return set_tq(m, t, tv);
    /* qXkYv shorthand */
    unsigned kb, vb;
    char tail;
    if (sscanf(n, "q%uk%uv%c", &kb, &vb, &tail) == 2) return set_kivi(m, kb, vb, x->has_c ? (uint32_t)x->c : 32);
    return kvs_fail(KVS_ERR_INVALID_ARG,
                    "unknown what-if '%s' (known: gqa, latent:r=R[,rope=D], mla:r=R, window=N[+S], share=K, "
                    "compress=M[,raw=W], f16, bf16, f32, q8_0, q4_0, q4_1, q5_0, q5_1, tqB, tqXkYv, qXkYv, kivi:k=X,v=Y[,g=G], page=P)",
                    n);
}

/* Parses "name[:k=v]" / "name=v" into a new transform, or a parameter
 * "k=v" attaching to the current one. */
static kvs_status parse_item(const char *s, size_t n, xform *cur, bool *is_new) {
    const char *key, *val;
    size_t kl, vl;
    const char *colon = memchr(s, ':', n);
    *is_new = false;
    if (colon) {
        xform x;
        memset(&x, 0, sizeof x);
        size_t nl = (size_t)(colon - s);
        if (nl == 0 || nl >= sizeof x.name) return kvs_fail(KVS_ERR_INVALID_ARG, "what-if: bad item '%.*s'", (int)n, s);
        memcpy(x.name, s, nl);
        *cur = x;
        *is_new = true;
        s = colon + 1;
        n -= nl + 1;
        if (n == 0) return KVS_OK;
    } else if (!memchr(s, '=', n)) {
        xform x;
        memset(&x, 0, sizeof x);
        if (n == 0 || n >= sizeof x.name) return kvs_fail(KVS_ERR_INVALID_ARG, "what-if: empty or overlong item");
        memcpy(x.name, s, n);
        *cur = x;
        *is_new = true;
        return KVS_OK;
    }
    if (!split_kv(s, n, &key, &kl, &val, &vl))
        return kvs_fail(KVS_ERR_INVALID_ARG, "what-if: bad item '%.*s'", (int)n, s);
    /* Transforms written as name=value. */
    static const char *direct[] = {"window", "share", "compress", "page"};
    for (size_t i = 0; i < sizeof direct / sizeof direct[0]; i++) {
        if (key_is(key, kl, direct[i])) {
            xform x;
            memset(&x, 0, sizeof x);
            snprintf(x.name, sizeof x.name, "%s", direct[i]);
            const char *plus = memchr(val, '+', vl);
            size_t al = plus ? (size_t)(plus - val) : vl;
            if (!parse_u64_suffix(val, al, &x.a, true))
                return kvs_fail(KVS_ERR_INVALID_ARG, "what-if %s: bad number '%.*s'", direct[i], (int)vl, val);
            x.has_a = true;
            if (plus) {
                if (strcmp(direct[i], "window") != 0 ||
                    !parse_u64_suffix(plus + 1, vl - al - 1, &x.b, true))
                    return kvs_fail(KVS_ERR_INVALID_ARG, "what-if %s: bad value '%.*s'", direct[i], (int)vl, val);
                x.has_b = true;
            }
            *cur = x;
            *is_new = true;
            return KVS_OK;
        }
    }
    if (!cur->name[0])
        return kvs_fail(KVS_ERR_INVALID_ARG, "what-if: parameter '%.*s' has no transform before it", (int)n, s);
    uint64_t v;
    if (!parse_u64_suffix(val, vl, &v, true))
        return kvs_fail(KVS_ERR_INVALID_ARG, "what-if %s: bad number in '%.*s'", cur->name, (int)n, s);
    const char *nm = cur->name;
    bool lat = !strcmp(nm, "latent") || !strcmp(nm, "mla");
    if (lat && (key_is(key, kl, "r") || key_is(key, kl, "rank"))) { cur->a = v; cur->has_a = true; }
    else if (lat && key_is(key, kl, "rope")) { cur->b = v; cur->has_b = true; }
    else if (!strcmp(nm, "compress") && key_is(key, kl, "raw")) { cur->b = v; cur->has_b = true; }
    else if (!strcmp(nm, "window") && key_is(key, kl, "sinks")) { cur->b = v; cur->has_b = true; }
    else if (!strcmp(nm, "kivi") && key_is(key, kl, "k")) { cur->a = v; cur->has_a = true; }
    else if (!strcmp(nm, "kivi") && key_is(key, kl, "v")) { cur->b = v; cur->has_b = true; }
    else if ((!strcmp(nm, "kivi") || nm[0] == 'q') && key_is(key, kl, "g")) { cur->c = v; cur->has_c = true; }
    else
        return kvs_fail(KVS_ERR_INVALID_ARG, "what-if %s: unknown parameter '%.*s'", nm, (int)kl, key);
    return KVS_OK;
}

kvs_status kvs_plan_apply_whatif(kvs_plan_model *m, const char *spec) {
    if (!m || !spec || !*spec) return kvs_fail(KVS_ERR_INVALID_ARG, "what-if: empty spec");
    xform cur;
    memset(&cur, 0, sizeof cur);
    bool pending = false;
    const char *p = spec;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        bool is_new;
        xform before = cur;
        kvs_status st = parse_item(p, len, &cur, &is_new);
        if (st != KVS_OK) return st;
        if (is_new && pending) {
            st = apply_one(m, &before);
            if (st != KVS_OK) return st;
        }
        pending = true;
        if (!e) break;
        p = e + 1;
    }
    if (pending) {
        kvs_status st = apply_one(m, &cur);
        if (st != KVS_OK) return st;
    }
    return check_all(m, "what-if");
}

kvs_status kvs_plan_apply_kv_type(kvs_plan_model *m, const char *type) {
    if (!m || !type || !*type) return kvs_fail(KVS_ERR_INVALID_ARG, "--kv: empty type");
    kvs_dtype t;
    unsigned kb, vb;
    char tail;
    kvs_status st;
    kvs_dtype tv;
    if (!strncmp(type, "kivi", 4) || sscanf(type, "q%uk%uv%c", &kb, &vb, &tail) == 2 ||
        dtype_from_name(type, strlen(type), &t) || kvs_kv_tq_from_name(type, &t, &tv))
        st = kvs_plan_apply_whatif(m, type);
    else
        return kvs_fail(KVS_ERR_INVALID_ARG,
                        "--kv: unknown KV type '%s' (known: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 tq2 tq2.5 tq3 tq3.5 tq4 tq2j tq3j "
                        "tqXkYv qXkYv kivi:k=X,v=Y)",
                        type);
    return st;
}

/* ---- compute ------------------------------------------------------------- */

kvs_status kvs_plan_compute(const kvs_plan_model *m, const char *label, const uint64_t *ctx,
                            size_t n_ctx, uint32_t batch, const kvs_plan_hw *hw,
                            kvs_plan_result *out) {
    if (!m || !out || (n_ctx && !ctx)) return kvs_fail(KVS_ERR_INVALID_ARG, "plan: NULL argument");
    if (n_ctx > KVS_PLAN_MAX_CTX) return kvs_fail(KVS_ERR_INVALID_ARG, "plan: at most %d contexts", KVS_PLAN_MAX_CTX);
    if (batch == 0) return kvs_fail(KVS_ERR_INVALID_ARG, "plan: --batch must be >= 1");
    kvs_status st = check_all(m, "plan");
    if (st != KVS_OK) return st;
    memset(out, 0, sizeof *out);
    snprintf(out->label, sizeof out->label, "%s", label && *label ? label : "base");
    out->model = m;
    out->batch = batch;
    out->kv_per_token = kvs_plan_kv_bytes_per_token(m);
    out->kv_fixed = kvs_plan_kv_fixed_bytes(m);
    out->n_points = n_ctx;
    double free_mem = 0;
    if (hw) {
        out->has_hw = true;
        out->hw = *hw;
        free_mem = hw->kv_budget > 0 ? hw->kv_budget : hw->mem_bytes - m->weight_bytes - m->repack_bytes;
        out->weights_fit = hw->kv_budget > 0 || free_mem >= 0;
    }
    for (size_t i = 0; i < n_ctx; i++) {
        kvs_plan_point *p = &out->points[i];
        p->ctx = ctx[i];
        p->kv_seq = kvs_plan_kv_bytes(m, ctx[i]);
        p->kv_read = kvs_plan_kv_read_bytes(m, ctx[i]);
        p->kv_batch = p->kv_seq * batch;
        p->usd_per_mtok = -1;
        if (!hw) continue;
        p->fits = out->weights_fit && (double)p->kv_batch <= free_mem;
        if (!out->weights_fit) p->concurrency = 0;
        else if (p->kv_seq == 0) p->concurrency = KVS_PLAN_UNBOUNDED;
        else p->concurrency = (uint64_t)(free_mem / (double)p->kv_seq);
        double step = m->active_weight_bytes + (double)batch * (double)p->kv_read;
        if (step > 0 && out->weights_fit && hw->bw_bytes_s > 0) { /* no speed for a model that does not load */
            p->tok_s_seq = hw->bw_bytes_s / step;
            p->tok_s_total = p->tok_s_seq * batch;
        }
        if (hw->price_hour > 0 && p->tok_s_total > 0)
            p->usd_per_mtok = hw->price_hour / (p->tok_s_total * 3600.0) * 1e6;
    }
    if (hw) {
        if (!out->weights_fit) out->max_ctx = 0;
        else {
            uint64_t cap = (uint64_t)1 << 40;
            if ((double)kvs_plan_kv_bytes(m, cap) * batch <= free_mem) out->max_ctx = KVS_PLAN_UNBOUNDED;
            else {
                uint64_t lo = 0, hi = cap; /* invariant: lo fits, hi does not */
                while (hi - lo > 1) {
                    uint64_t mid = lo + (hi - lo) / 2;
                    if ((double)kvs_plan_kv_bytes(m, mid) * batch <= free_mem) lo = mid;
                    else hi = mid;
                }
                out->max_ctx = lo;
            }
        }
    }
    return KVS_OK;
}

/* ---- formatting ---------------------------------------------------------- */

void kvs_plan_fmt_bytes(double b, char *buf, size_t cap) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int i = 0;
    double v = b;
    while (fabs(v) >= 1024.0 && i < 5) { v /= 1024.0; i++; }
    if (i == 0) snprintf(buf, cap, "%.0f B", v);
    else snprintf(buf, cap, "%.2f %s", v, u[i]);
}

void kvs_plan_fmt_ctx(uint64_t n, char *buf, size_t cap) {
    if (n == KVS_PLAN_UNBOUNDED) snprintf(buf, cap, "unbounded");
    else if (n >= 1048576 && n % 1048576 == 0) snprintf(buf, cap, "%lluM", (unsigned long long)(n / 1048576));
    else if (n >= 1024 && n % 1024 == 0) snprintf(buf, cap, "%lluK", (unsigned long long)(n / 1024));
    else snprintf(buf, cap, "%llu", (unsigned long long)n);
}
