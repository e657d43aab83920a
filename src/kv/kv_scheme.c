/* The single KV byte formula (see kv_scheme.h). The cache allocator, the
 * attention kernels and the planner all size a layer's cache through
 * kvs_kv_scheme_bytes(), so predicted and allocated bytes cannot disagree.
 *
 * Per store kind, for a sequence of n tokens (P(x) = x rounded up to a
 * multiple of page_tokens, identity when page_tokens == 0):
 *
 *   held(n)   = n                          window == 0
 *             = min(n, window + sinks)     window  > 0
 *
 *   FULL, BLOCK    P(held) * n_kv_heads * (row(k_type, dk) + row(v_type, dv))
 *                  row() = kvs_row_bytes (block formats: f32 f16 bf16 q8_0 q4_0 ...;
 *                  the rotated-codebook tq2..tq4 are 64-element blocks of one
 *                  f16 scale + codes, 18/22/26/30/34 bytes, core/tq.h: every
 *                  side-information byte is in the row size)
 *
 *   FULL, CHANNEL  KIVI-style, G = group, S = first (f16 sinks), R = recent
 *                  (f16 residual, a multiple of G): after the S sinks, complete
 *                  groups of the stream are quantized once R newer tokens
 *                  follow them: q = floor(max(held - S - R, 0) / G) * G
 *                  tokens in pages, t = P(q) (page_tokens must be a multiple
 *                  of G); the sinks and the newest held - S - q < R + G
 *                  tokens wait in one f16 buffer of S + R + G tokens,
 *                  allocated with the first token:
 *                  keys   per channel over each group of G tokens:
 *                         (t/G) * n_kv*dk * (ceil(G*k_bits/8) + 4)
 *                         (the 4 = one f16 scale + one f16 zero per channel per group)
 *                  values per token, channels grouped by G within each head:
 *                         t * n_kv * (ceil(dv*v_bits/8) + ceil(dv/G)*Z)
 *                         (Z = 4: f16 scale + zero per group; v_sym: Z = 2,
 *                         the scale alone, the zero implied)
 *                  residual (held > 0 ? S + R + G : 0) * n_kv * (dk + dv) * 2
 *
 *   LATENT         P(held) * (E + I), E = entry_bytes or row(k_type, rank+rope),
 *                  I = indexer key per token (indexer_bytes or row(indexer_type,
 *                  indexer_dim); 0 when indexer_dim == 0 and indexer_bytes == 0)
 *
 *   COMPRESSED     one entry per compress_ratio tokens, complete groups only
 *                  (the incomplete group lives in the raw window):
 *                  P(floor(n/m)) * (E + I) + P(raw) * E
 *                  E = entry_bytes or row(k_type, entry_dim), I as above (one
 *                  indexer key per compressed entry), raw = min(n, window+sinks)
 *                  when window > 0, else 0. For this store `window` is the raw
 *                  recent window, not a bound on the compressed entries;
 *                  compress_ratio == 0 means a window-only layer (no entries).
 *
 *   SHARED, NONE   0
 *
 * entry_bytes / indexer_bytes model exact per-token layouts that have no
 * kvs_dtype (FP8 e4m3 + scales, mixed FP8/BF16 rows, FP4 keys); they are
 * documented where a preset sets them (src/plan/presets.c). */
#include "kv/kv_scheme.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/tq.h"

static uint64_t page_round(const kvs_kv_scheme *s, uint64_t x) {
    uint64_t p = s->page_tokens;
    if (p == 0 || x == 0) return x;
    return ((x + p - 1) / p) * p;
}

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

kvs_kv_scheme kvs_kv_scheme_full(uint32_t n_kv_heads, uint32_t head_dim_k, uint32_t head_dim_v,
                                 kvs_dtype type) {
    kvs_kv_scheme s;
    memset(&s, 0, sizeof s);
    s.store = KVS_KV_STORE_FULL;
    s.layout = KVS_KV_LAYOUT_BLOCK;
    s.n_kv_heads = n_kv_heads;
    s.head_dim_k = head_dim_k;
    s.head_dim_v = head_dim_v;
    s.shared_from = -1;
    s.k_type = type;
    s.v_type = type;
    s.indexer_type = type;
    return s;
}

kvs_kv_scheme kvs_kv_scheme_compressed(uint32_t ratio, uint32_t entry_dim, uint32_t indexer_dim, uint32_t window,
                                       kvs_dtype type) {
    kvs_kv_scheme s = kvs_kv_scheme_full(0, 0, 0, type);
    s.store = KVS_KV_STORE_COMPRESSED;
    s.compress_ratio = ratio;
    s.entry_dim = entry_dim;
    s.indexer_dim = indexer_dim;
    s.window = window;
    s.page_tokens = KVS_KV_COMPRESSED_PAGE;
    /* 8-bit indexer keys unless the cache is f32 (see kv_scheme.h) */
    if (indexer_dim && indexer_dim % 32 == 0 && type != KVS_TYPE_F32) s.indexer_type = KVS_TYPE_Q8_0;
    return s;
}

uint64_t kvs_kv_scheme_tokens_held(const kvs_kv_scheme *s, uint64_t n_tokens) {
    if (!s) return 0;
    switch (s->store) {
    case KVS_KV_STORE_SHARED:
    case KVS_KV_STORE_NONE:
        return 0;
    case KVS_KV_STORE_COMPRESSED:
        if (s->window == 0) return 0;
        break;
    default:
        if (s->window == 0) return n_tokens;
        break;
    }
    uint64_t cap = (uint64_t)s->window + s->sinks;
    return n_tokens < cap ? n_tokens : cap;
}

/* Indexer key bytes (per LATENT token or per COMPRESSED entry). */
static uint64_t indexer_bytes(const kvs_kv_scheme *s) {
    if (s->indexer_bytes) return s->indexer_bytes;
    if (s->indexer_dim == 0) return 0;
    return kvs_row_bytes(s->indexer_type, s->indexer_dim);
}

kvs_status kvs_kv_scheme_validate(const kvs_kv_scheme *s) {
    if (!s) return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: NULL");
    if (s->layout != KVS_KV_LAYOUT_BLOCK && s->layout != KVS_KV_LAYOUT_CHANNEL)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: unknown layout %d", (int)s->layout);
    if ((s->indexer_dim || s->indexer_bytes) && s->store != KVS_KV_STORE_LATENT &&
        s->store != KVS_KV_STORE_COMPRESSED)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: indexer keys need a latent or compressed store");
    if (s->indexer_dim && !s->indexer_bytes && kvs_row_bytes(s->indexer_type, s->indexer_dim) == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: indexer format %s cannot hold %u elements",
                        kvs_dtype_name(s->indexer_type), s->indexer_dim);
    switch (s->store) {
    case KVS_KV_STORE_FULL:
        if (!s->n_kv_heads || !s->head_dim_k || !s->head_dim_v)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: full store needs heads and head dims (got %ux%u/%u)",
                            s->n_kv_heads, s->head_dim_k, s->head_dim_v);
        if (s->layout == KVS_KV_LAYOUT_BLOCK) {
            if (kvs_row_bytes(s->k_type, s->head_dim_k) == 0)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: key format %s cannot hold a %u-element head",
                                kvs_dtype_name(s->k_type), s->head_dim_k);
            if (kvs_row_bytes(s->v_type, s->head_dim_v) == 0)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: value format %s cannot hold a %u-element head",
                                kvs_dtype_name(s->v_type), s->head_dim_v);
        } else {
            if (s->k_bits < 1 || s->k_bits > 8 || s->v_bits < 1 || s->v_bits > 8)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: channel layout bits must be 1..8 (k=%u v=%u)",
                                s->k_bits, s->v_bits);
            if (s->group == 0)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: channel layout needs a group size");
            if (s->page_tokens % s->group)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: page of %u tokens is not a multiple of the group %u",
                                s->page_tokens, s->group);
            if (s->recent % s->group)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: recent=%u is not a multiple of the group %u",
                                s->recent, s->group);
        }
        if (s->layout == KVS_KV_LAYOUT_BLOCK && kvs_tq_rotated_type(s->k_type) && !s->rotate)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: key format %s needs rotated keys (its codebook is for "
                            "rotated coordinates: rotate=k or kv, a key head size that is a power of two; got %u)",
                            kvs_dtype_name(s->k_type), s->head_dim_k);
        if (s->layout == KVS_KV_LAYOUT_BLOCK && kvs_tq_rotated_type(s->v_type) && !s->rotate_v)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: value format %s needs rotated values (its codebook is "
                            "for rotated coordinates: rotate=v or kv, a value head size that is a power of two; got %u)",
                            kvs_dtype_name(s->v_type), s->head_dim_v);
        if (s->layout == KVS_KV_LAYOUT_BLOCK && (s->recent || s->first || s->clip || s->v_sym))
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: recent/first/clip/vsym need the per-channel layout (qXkYv)");
        return KVS_OK;
    case KVS_KV_STORE_LATENT:
        if (s->layout != KVS_KV_LAYOUT_BLOCK)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: latent store supports only the block layout");
        if (s->latent_rank + s->rope_dim == 0)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: latent store needs a rank");
        if (!s->entry_bytes && kvs_row_bytes(s->k_type, (int64_t)s->latent_rank + s->rope_dim) == 0)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: format %s cannot hold a %u-element latent",
                            kvs_dtype_name(s->k_type), s->latent_rank + s->rope_dim);
        return KVS_OK;
    case KVS_KV_STORE_COMPRESSED:
        if (s->layout != KVS_KV_LAYOUT_BLOCK)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: compressed store supports only the block layout");
        if (s->compress_ratio == 0 && s->window == 0)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: compressed store needs a ratio or a raw window");
        if (!s->entry_bytes && (s->entry_dim == 0 || kvs_row_bytes(s->k_type, s->entry_dim) == 0))
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: format %s cannot hold a %u-element entry",
                            kvs_dtype_name(s->k_type), s->entry_dim);
        return KVS_OK;
    case KVS_KV_STORE_SHARED:
        if (s->shared_from < 0)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: shared store needs a source layer");
        return KVS_OK;
    case KVS_KV_STORE_NONE:
        return KVS_OK;
    }
    return kvs_fail(KVS_ERR_INVALID_ARG, "kv scheme: unknown store %d", (int)s->store);
}

uint64_t kvs_kv_scheme_entry_bytes(const kvs_kv_scheme *s) {
    if (!s || kvs_kv_scheme_validate(s) != KVS_OK) return 0;
    switch (s->store) {
    case KVS_KV_STORE_FULL:
        if (s->layout == KVS_KV_LAYOUT_CHANNEL)
            return (uint64_t)s->n_kv_heads * (s->head_dim_k + s->head_dim_v) * 2;
        return (uint64_t)s->n_kv_heads *
               (kvs_row_bytes(s->k_type, s->head_dim_k) + kvs_row_bytes(s->v_type, s->head_dim_v));
    case KVS_KV_STORE_LATENT:
        if (s->entry_bytes) return s->entry_bytes;
        return kvs_row_bytes(s->k_type, (int64_t)s->latent_rank + s->rope_dim);
    case KVS_KV_STORE_COMPRESSED:
        if (s->entry_bytes) return s->entry_bytes;
        return kvs_row_bytes(s->k_type, s->entry_dim);
    default:
        return 0;
    }
}

/* Quantized storage of t tokens (t a multiple of the group). */
static uint64_t channel_bytes(const kvs_kv_scheme *s, uint64_t t) {
    uint64_t G = s->group;
    uint64_t nkv = s->n_kv_heads, dk = s->head_dim_k, dv = s->head_dim_v;
    uint64_t kb = (t / G) * nkv * dk * (ceil_div(G * s->k_bits, 8) + 4);
    uint64_t vb = t * nkv * (ceil_div(dv * s->v_bits, 8) + ceil_div(dv, G) * (s->v_sym ? 2 : 4));
    return kb + vb;
}

uint64_t kvs_kv_scheme_channel_quantized(const kvs_kv_scheme *s, uint64_t held) {
    uint64_t f = (uint64_t)s->first + s->recent;
    if (!s->group || held <= f) return 0;
    return (held - f) / s->group * s->group;
}

uint64_t kvs_kv_scheme_bytes(const kvs_kv_scheme *s, uint64_t n_tokens) {
    if (!s || kvs_kv_scheme_validate(s) != KVS_OK) return 0;
    uint64_t held = kvs_kv_scheme_tokens_held(s, n_tokens);
    switch (s->store) {
    case KVS_KV_STORE_FULL: {
        if (s->layout == KVS_KV_LAYOUT_CHANNEL) {
            uint64_t q = kvs_kv_scheme_channel_quantized(s, held);
            uint64_t f16_tok = (uint64_t)s->first + s->recent + s->group;
            uint64_t resid = held ? f16_tok * s->n_kv_heads * (s->head_dim_k + s->head_dim_v) * 2 : 0;
            return channel_bytes(s, page_round(s, q)) + resid;
        }
        return page_round(s, held) * kvs_kv_scheme_entry_bytes(s);
    }
    case KVS_KV_STORE_LATENT:
        return page_round(s, held) * (kvs_kv_scheme_entry_bytes(s) + indexer_bytes(s));
    case KVS_KV_STORE_COMPRESSED: {
        uint64_t e = s->compress_ratio ? n_tokens / s->compress_ratio : 0;
        uint64_t E = kvs_kv_scheme_entry_bytes(s);
        return page_round(s, e) * (E + indexer_bytes(s)) + page_round(s, held) * E;
    }
    default:
        return 0;
    }
}

double kvs_kv_scheme_bytes_per_token(const kvs_kv_scheme *s) {
    if (!s || kvs_kv_scheme_validate(s) != KVS_OK) return 0.0;
    switch (s->store) {
    case KVS_KV_STORE_FULL:
        if (s->window) return 0.0;
        if (s->layout == KVS_KV_LAYOUT_CHANNEL) {
            double G = s->group, nkv = s->n_kv_heads, dk = s->head_dim_k;
            double kb = nkv * dk * ((double)ceil_div((uint64_t)G * s->k_bits, 8) + 4.0) / G;
            double vb = nkv * ((double)ceil_div(s->head_dim_v * (uint64_t)s->v_bits, 8) +
                               (double)ceil_div(s->head_dim_v, s->group) * (s->v_sym ? 2.0 : 4.0));
            return kb + vb;
        }
        return (double)kvs_kv_scheme_entry_bytes(s);
    case KVS_KV_STORE_LATENT:
        if (s->window) return 0.0;
        return (double)(kvs_kv_scheme_entry_bytes(s) + indexer_bytes(s));
    case KVS_KV_STORE_COMPRESSED:
        if (!s->compress_ratio) return 0.0;
        return (double)(kvs_kv_scheme_entry_bytes(s) + indexer_bytes(s)) / s->compress_ratio;
    default:
        return 0.0;
    }
}

static const char *type_name(kvs_dtype t) { return kvs_dtype_name(t); }

void kvs_kv_scheme_describe(const kvs_kv_scheme *s, char *buf, size_t cap) {
    if (!buf || cap == 0) return;
    buf[0] = '\0';
    if (!s) return;
    char win[48] = "";
    if (s->window && s->store != KVS_KV_STORE_COMPRESSED) {
        if (s->sinks) snprintf(win, sizeof win, "window %u+%u ", s->window, s->sinks);
        else snprintf(win, sizeof win, "window %u ", s->window);
    }
    char idx[48] = "";
    if (s->indexer_bytes) snprintf(idx, sizeof idx, " +idx %uB", s->indexer_bytes);
    else if (s->indexer_dim) snprintf(idx, sizeof idx, " +idx %u %s", s->indexer_dim, type_name(s->indexer_type));
    switch (s->store) {
    case KVS_KV_STORE_FULL:
        if (s->layout == KVS_KV_LAYOUT_CHANNEL)
            snprintf(buf, cap, "%sfull %ux%u kivi k%u/v%u g%u", win, s->n_kv_heads, s->head_dim_k,
                     s->k_bits, s->v_bits, s->group);
        else if (s->head_dim_k == s->head_dim_v && s->k_type == s->v_type)
            snprintf(buf, cap, "%sfull %ux%u %s", win, s->n_kv_heads, s->head_dim_k, type_name(s->k_type));
        else
            snprintf(buf, cap, "%sfull %ux(%u %s, %u %s)", win, s->n_kv_heads, s->head_dim_k,
                     type_name(s->k_type), s->head_dim_v, type_name(s->v_type));
        break;
    case KVS_KV_STORE_LATENT:
        if (s->entry_bytes)
            snprintf(buf, cap, "%slatent %u+%u (%uB)%s", win, s->latent_rank, s->rope_dim, s->entry_bytes, idx);
        else
            snprintf(buf, cap, "%slatent %u+%u %s%s", win, s->latent_rank, s->rope_dim, type_name(s->k_type), idx);
        break;
    case KVS_KV_STORE_COMPRESSED: {
        char ent[48];
        if (s->entry_bytes) snprintf(ent, sizeof ent, "%uB", s->entry_bytes);
        else snprintf(ent, sizeof ent, "%u %s", s->entry_dim, type_name(s->k_type));
        char raw[40] = "";
        if (s->window) snprintf(raw, sizeof raw, " + raw %u", s->window);
        if (s->compress_ratio)
            snprintf(buf, cap, "compressed 1/%u %s%s%s", s->compress_ratio, ent, idx, raw);
        else
            snprintf(buf, cap, "window-only %s%s", ent, raw);
        break;
    }
    case KVS_KV_STORE_SHARED:
        snprintf(buf, cap, "shared<-%d", (int)s->shared_from);
        break;
    case KVS_KV_STORE_NONE:
        snprintf(buf, cap, "none");
        break;
    default:
        snprintf(buf, cap, "invalid(%d)", (int)s->store);
        break;
    }
    if (s->layout == KVS_KV_LAYOUT_CHANNEL && (s->recent || s->first)) {
        size_t len = strlen(buf);
        if (len < cap) snprintf(buf + len, cap - len, " f16 first %u recent %u", s->first, s->recent);
    }
    if (s->clip) {
        size_t len = strlen(buf);
        if (len < cap) snprintf(buf + len, cap - len, " clip");
    }
    if (s->v_sym) {
        size_t len = strlen(buf);
        if (len < cap) snprintf(buf + len, cap - len, " vsym");
    }
    if (s->rotate) {
        size_t len = strlen(buf);
        if (len < cap) snprintf(buf + len, cap - len, " rotated");
    }
    if (s->rotate_v) {
        size_t len = strlen(buf);
        if (len < cap) snprintf(buf + len, cap - len, " v-rotated");
    }
    if (s->center) {
        size_t len = strlen(buf);
        if (len < cap) snprintf(buf + len, cap - len, " centered");
    }
    if (s->page_tokens) {
        size_t len = strlen(buf);
        if (len < cap) snprintf(buf + len, cap - len, " page%u", s->page_tokens);
    }
    if (s->evict) {
        size_t len = strlen(buf);
        if (len < cap)
            snprintf(buf + len, cap - len, " %s=%u+%u", s->evict == KVS_EVICT_H2O ? "h2o" : "snapkv", s->evict_budget,
                     s->evict_window);
    }
}
