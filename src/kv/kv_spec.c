/* Parser for per-layer KV scheme rules; see kv_spec.h. */
#include "kv/kv_spec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static const struct { const char *name; kvs_kv_type t; kvs_dtype d; } g_types[] = {
    {"f32", KVS_KV_F32, KVS_TYPE_F32}, {"f16", KVS_KV_F16, KVS_TYPE_F16}, {"bf16", KVS_KV_BF16, KVS_TYPE_BF16},
    {"q8_0", KVS_KV_Q8_0, KVS_TYPE_Q8_0}, {"q4_0", KVS_KV_Q4_0, KVS_TYPE_Q4_0},
};
#define N_TYPES (sizeof g_types / sizeof *g_types)

bool kvs_kv_type_from_name(const char *name, kvs_kv_type *out) {
    for (size_t i = 0; name && i < N_TYPES; i++)
        if (!strcmp(name, g_types[i].name)) { *out = g_types[i].t; return true; }
    return false;
}

const char *kvs_kv_type_name(kvs_kv_type t) {
    for (size_t i = 0; i < N_TYPES; i++) if (g_types[i].t == t) return g_types[i].name;
    return "unknown";
}

kvs_dtype kvs_kv_type_dtype(kvs_kv_type t) {
    for (size_t i = 0; i < N_TYPES; i++) if (g_types[i].t == t) return g_types[i].d;
    return KVS_TYPE_COUNT;
}

static bool parse_u32(const char *s, size_t n, uint32_t *out) {
    char buf[32];
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (errno || *end || buf[0] == '-' || v > (1ul << 30)) return false;
    *out = (uint32_t)v;
    return true;
}

/* One setting (text [s, s+n)) applied to layers [a, b]. */
static kvs_status apply_setting(kvs_kv_scheme *sc, int32_t a, int32_t b, const char *s, size_t n, const char *rule) {
    const char *eq = memchr(s, '=', n);
    size_t kl = eq ? (size_t)(eq - s) : n;
    const char *v = eq ? eq + 1 : NULL;
    size_t vl = eq ? n - kl - 1 : 0;
    uint32_t x = 0, y = 0;
    for (int32_t i = a; i <= b; i++) {
        kvs_kv_scheme *L = &sc[i];
        if (!eq) {
            char name[16];
            if (kl >= sizeof name) goto bad;
            memcpy(name, s, kl);
            name[kl] = '\0';
            kvs_kv_type t;
            unsigned kb, vb;
            char tail;
            if (!strcmp(name, "full")) { L->window = 0; L->sinks = 0; continue; }
            if (!strcmp(name, "rotate")) { L->rotate = 1; continue; }
            if (!strcmp(name, "clip")) { L->clip = 1; continue; }
            if (sscanf(name, "q%uk%uv%c", &kb, &vb, &tail) == 2 && kb >= 1 && kb <= 8 && vb >= 1 && vb <= 8) {
                if (L->store == KVS_KV_STORE_SHARED) continue;
                L->layout = KVS_KV_LAYOUT_CHANNEL;
                L->k_bits = kb;
                L->v_bits = vb;
                if (!L->group) L->group = 32;
                continue;
            }
            if (!kvs_kv_type_from_name(name, &t)) goto bad;
            if (L->store == KVS_KV_STORE_SHARED) continue; /* formats follow the source */
            L->k_type = L->v_type = kvs_kv_type_dtype(t);
            L->layout = KVS_KV_LAYOUT_BLOCK;
        } else if (kl == 6 && !memcmp(s, "window", 6)) {
            const char *plus = memchr(v, '+', vl);
            size_t wl = plus ? (size_t)(plus - v) : vl;
            if (!parse_u32(v, wl, &x) || x == 0) goto bad;
            if (plus && !parse_u32(plus + 1, vl - wl - 1, &y)) goto bad;
            L->window = x;
            if (plus) L->sinks = y;
        } else if (kl == 5 && !memcmp(s, "sinks", 5)) {
            if (!parse_u32(v, vl, &x)) goto bad;
            L->sinks = x;
        } else if (kl == 6 && !memcmp(s, "rotate", 6)) {
            if (vl == 1 && v[0] == 'k') { L->rotate = 1; L->rotate_v = 0; }
            else if (vl == 1 && v[0] == 'v') { L->rotate = 0; L->rotate_v = 1; }
            else if (vl == 2 && !memcmp(v, "kv", 2)) { L->rotate = 1; L->rotate_v = 1; }
            else goto bad;
        } else if (kl == 6 && !memcmp(s, "recent", 6)) {
            if (!parse_u32(v, vl, &x) || x > 65536) goto bad;
            L->recent = x;
        } else if (kl == 5 && !memcmp(s, "first", 5)) {
            if (!parse_u32(v, vl, &x) || x > 65536) goto bad;
            L->first = x;
        } else if (kl == 5 && !memcmp(s, "group", 5)) {
            if (!parse_u32(v, vl, &x) || x == 0 || x > 4096) goto bad;
            L->group = x;
        } else if (kl == 4 && !memcmp(s, "page", 4)) {
            if (!parse_u32(v, vl, &x) || x == 0 || x > 65536) goto bad;
            L->page_tokens = x;
        } else if (kl == 6 && !memcmp(s, "shared", 6)) {
            if (!parse_u32(v, vl, &x)) goto bad;
            if ((int32_t)x >= i)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv rule '%s': layer %d can only share an earlier layer, not %u", rule, i, x);
            L->store = KVS_KV_STORE_SHARED;
            L->shared_from = (int32_t)x;
        } else {
            goto bad;
        }
    }
    return KVS_OK;
bad:
    return kvs_fail(KVS_ERR_INVALID_ARG,
                    "kv rule '%s': cannot use '%.*s' (settings: f32 f16 bf16 q8_0 q4_0 qXkYv group=G recent=R first=S clip rotate[=k|v|kv] full window=W[+S] sinks=S page=P shared=L)",
                    rule, (int)n, s);
}

kvs_status kvs_kv_spec_apply(kvs_kv_scheme *sc, int32_t n_layers, const char *spec) {
    if (!spec) return KVS_OK;
    char rule[256];
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ';');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) { p += e ? 1 : 0; if (!e) break; continue; }
        if (len >= sizeof rule) return kvs_fail(KVS_ERR_INVALID_ARG, "kv rule too long: '%.40s...'", p);
        memcpy(rule, p, len);
        rule[len] = '\0';
        int32_t a = 0, b = n_layers - 1;
        const char *body = rule, *colon = strchr(rule, ':');
        if (colon) {
            const char *dash = memchr(rule, '-', (size_t)(colon - rule));
            uint32_t x, y;
            size_t l1 = dash ? (size_t)(dash - rule) : (size_t)(colon - rule);
            if (!parse_u32(rule, l1, &x) || (dash && !parse_u32(dash + 1, (size_t)(colon - dash - 1), &y)))
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv rule '%s': bad layer range (use N or N-M)", rule);
            if (!dash) y = x;
            if (x > y || y >= (uint32_t)n_layers)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv rule '%s': layers %u-%u outside 0-%d", rule, x, y, n_layers - 1);
            a = (int32_t)x;
            b = (int32_t)y;
            body = colon + 1;
        }
        for (const char *q = body; *q;) {
            const char *c = strchr(q, ',');
            size_t n = c ? (size_t)(c - q) : strlen(q);
            if (n == 0) return kvs_fail(KVS_ERR_INVALID_ARG, "kv rule '%s': empty setting", rule);
            kvs_status st = apply_setting(sc, a, b, q, n, rule);
            if (st != KVS_OK) return st;
            q += n + (c ? 1 : 0);
        }
        if (!e) break;
        p = e + 1;
    }
    for (int32_t i = 0; i < n_layers; i++) {
        if (sc[i].sinks && !sc[i].window)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv rules: layer %d has sinks but no window", i);
        if (sc[i].store != KVS_KV_STORE_SHARED && sc[i].layout == KVS_KV_LAYOUT_BLOCK &&
            (sc[i].recent || sc[i].first || sc[i].clip))
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv rules: layer %d: recent=, first= and clip need a per-channel "
                            "layout (qXkYv)", i);
        if (sc[i].layout == KVS_KV_LAYOUT_CHANNEL && sc[i].group && sc[i].recent % sc[i].group)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv rules: layer %d: recent=%u is not a multiple of group=%u", i,
                            sc[i].recent, sc[i].group);
    }
    return KVS_OK;
}
