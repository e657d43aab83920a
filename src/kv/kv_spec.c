/* Parser for per-layer KV scheme rules; see kv_spec.h. */
#include "kv/kv_spec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/tq.h"

static const struct { const char *name; kvs_kv_type t; kvs_dtype d; } g_types[] = {
    {"f32", KVS_KV_F32, KVS_TYPE_F32}, {"f16", KVS_KV_F16, KVS_TYPE_F16}, {"bf16", KVS_KV_BF16, KVS_TYPE_BF16},
    {"q8_0", KVS_KV_Q8_0, KVS_TYPE_Q8_0}, {"q4_0", KVS_KV_Q4_0, KVS_TYPE_Q4_0},
    {"tq2", KVS_KV_TQ2, KVS_TYPE_TQ2}, {"tq2.5", KVS_KV_TQ2_5, KVS_TYPE_TQ2_5}, {"tq3", KVS_KV_TQ3, KVS_TYPE_TQ3},
    {"tq3.5", KVS_KV_TQ3_5, KVS_TYPE_TQ3_5}, {"tq4", KVS_KV_TQ4, KVS_TYPE_TQ4},
    {"tq2j", KVS_KV_TQ2J, KVS_TYPE_TQ2J}, {"tq3j", KVS_KV_TQ3J, KVS_TYPE_TQ3J},
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

bool kvs_kv_tq_from_name(const char *name, kvs_dtype *kt, kvs_dtype *vt) {
    kvs_kv_type x, y;
    if (!name || strncmp(name, "tq", 2) != 0) return false;
    if (kvs_kv_type_from_name(name, &x)) { /* tq3: keys and values alike */
        *kt = *vt = kvs_kv_type_dtype(x);
        return true;
    }
    const char *k = strchr(name, 'k'); /* tq4k3v, tq3.5k2.5v */
    size_t n = strlen(name);
    if (!k || k == name + 2 || n < 6 || name[n - 1] != 'v') return false;
    char a[8], b[8];
    size_t la = (size_t)(k - name - 2), lb = (size_t)(name + n - 1 - (k + 1));
    if (lb == 0 || la + 3 > sizeof a || lb + 3 > sizeof b) return false;
    memcpy(a, "tq", 2); memcpy(a + 2, name + 2, la); a[la + 2] = '\0';
    memcpy(b, "tq", 2); memcpy(b + 2, k + 1, lb); b[lb + 2] = '\0';
    if (!kvs_kv_type_from_name(a, &x) || !kvs_kv_type_from_name(b, &y)) return false;
    *kt = kvs_kv_type_dtype(x);
    *vt = kvs_kv_type_dtype(y);
    return kvs_tq_rotated_type(*kt) && kvs_tq_rotated_type(*vt);
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

/* Settings a rule named explicitly (set[layer] bits), so the defaults below
 * leave them alone. */
#define SET_ROTATE 1u
#define SET_CENTER 2u

/* One setting (text [s, s+n)) applied to layers [a, b]. */
static kvs_status apply_setting(kvs_kv_scheme *sc, int32_t a, int32_t b, const char *s, size_t n, const char *rule,
                                uint8_t *set) {
    const char *eq = memchr(s, '=', n);
    size_t kl = eq ? (size_t)(eq - s) : n;
    const char *v = eq ? eq + 1 : NULL;
    size_t vl = eq ? n - kl - 1 : 0;
    uint32_t x = 0, y = 0;
    for (int32_t i = a; i <= b; i++) {
        kvs_kv_scheme *L = &sc[i];
        if (!eq) {
            char name[24];
            if (kl >= sizeof name) goto bad;
            memcpy(name, s, kl);
            name[kl] = '\0';
            kvs_kv_type t;
            unsigned kb, vb;
            char tail;
            if (!strcmp(name, "full")) { L->window = 0; L->sinks = 0; continue; }
            if (!strcmp(name, "rotate")) { L->rotate = 1; if (set) set[i] |= SET_ROTATE; continue; }
            if (!strcmp(name, "center")) { L->center = 1; if (set) set[i] |= SET_CENTER; continue; }
            if (!strcmp(name, "noevict")) { L->evict = 0; L->evict_budget = L->evict_window = L->evict_sinks = 0; continue; }
            if (!strcmp(name, "clip")) { L->clip = 1; continue; }
            if (!strcmp(name, "vsym")) { L->v_sym = 1; continue; }
            if (sscanf(name, "q%uk%uv%c", &kb, &vb, &tail) == 2 && kb >= 1 && kb <= 8 && vb >= 1 && vb <= 8) {
                if (L->store == KVS_KV_STORE_SHARED) continue;
                L->layout = KVS_KV_LAYOUT_CHANNEL;
                L->k_bits = kb;
                L->v_bits = vb;
                if (!L->group) L->group = 32;
                continue;
            }
            kvs_dtype tk, tv;
            if (kvs_kv_tq_from_name(name, &tk, &tv)) {
                if (L->store == KVS_KV_STORE_SHARED) continue;
                L->k_type = tk;
                L->v_type = tv;
                L->layout = KVS_KV_LAYOUT_BLOCK;
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
            else if (vl == 4 && !memcmp(v, "none", 4)) { L->rotate = 0; L->rotate_v = 0; }
            else goto bad;
            if (set) set[i] |= SET_ROTATE;
        } else if (kl == 6 && !memcmp(s, "center", 6)) {
            if (vl == 4 && !memcmp(v, "none", 4)) L->center = 0;
            else goto bad;
            if (set) set[i] |= SET_CENTER;
        } else if ((kl == 3 && !memcmp(s, "h2o", 3)) || (kl == 6 && !memcmp(s, "snapkv", 6))) {
            /* h2o=B[+R]: B tokens, 4 sinks, the newest R (32); snapkv=B[+W]: observation window W (32) */
            const char *plus = memchr(v, '+', vl);
            size_t bl = plus ? (size_t)(plus - v) : vl;
            y = 32;
            if (!parse_u32(v, bl, &x) || x == 0 || x > (1u << 24)) goto bad;
            if (plus && !parse_u32(plus + 1, vl - bl - 1, &y)) goto bad;
            if (y > x)
                return kvs_fail(KVS_ERR_INVALID_ARG, "kv rule '%s': '%.*s': the window (%u) must not exceed the budget (%u)",
                                rule, (int)n, s, y, x);
            L->evict = kl == 3 ? KVS_EVICT_H2O : KVS_EVICT_SNAPKV;
            L->evict_budget = x;
            L->evict_window = y;
            L->evict_sinks = kl == 3 && 4 + y <= x ? 4 : 0;
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
                    "kv rule '%s': cannot use '%.*s' (settings: " KVS_KV_SETTINGS ")",
                    rule, (int)n, s);
}

/* Quantized row formats are Hadamard-rotated unless a rule says otherwise
 * (llama.cpp's quantized cache is rotated by default too): keys where the
 * key head size is a power of two, values where the value head size is. */
static bool quantized(kvs_dtype t) {
    const kvs_type_traits *tr = kvs_type_traits_of(t);
    return tr && tr->is_quantized;
}

static void default_rotation(kvs_kv_scheme *L) {
    if (L->store != KVS_KV_STORE_FULL || L->layout != KVS_KV_LAYOUT_BLOCK) return;
    bool pow2k = L->head_dim_k && !(L->head_dim_k & (L->head_dim_k - 1));
    bool pow2v = L->head_dim_v && !(L->head_dim_v & (L->head_dim_v - 1));
    if (pow2k && quantized(L->k_type)) L->rotate = 1;
    if (pow2v && quantized(L->v_type)) L->rotate_v = 1;
}

/* Quantized keys are centered unless a rule says otherwise: the session
 * measures the model's mean key where the architecture can (it clears
 * `center` where it cannot). */
static void default_center(kvs_kv_scheme *L) {
    if (L->store == KVS_KV_STORE_FULL && L->layout == KVS_KV_LAYOUT_BLOCK && quantized(L->k_type)) L->center = 1;
}

static kvs_status apply_rules(kvs_kv_scheme *sc, int32_t n_layers, const char *spec, uint8_t *set);

kvs_status kvs_kv_spec_apply(kvs_kv_scheme *sc, int32_t n_layers, const char *spec) {
    uint8_t *set = kvs_calloc(n_layers > 0 ? (size_t)n_layers : 1, sizeof *set);
    if (!set) return kvs_fail(KVS_ERR_NOMEM, "kv rules: out of memory");
    kvs_status st = apply_rules(sc, n_layers, spec, set);
    for (int32_t i = 0; st == KVS_OK && i < n_layers; i++) {
        if (!(set[i] & SET_ROTATE)) default_rotation(&sc[i]);
        if (!(set[i] & SET_CENTER)) default_center(&sc[i]);
    }
    kvs_free(set);
    return st;
}

static kvs_status apply_rules(kvs_kv_scheme *sc, int32_t n_layers, const char *spec, uint8_t *set) {
    char rule[256];
    const char *p = spec ? spec : "";
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
            kvs_status st = apply_setting(sc, a, b, q, n, rule, set);
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
            (sc[i].recent || sc[i].first || sc[i].clip || sc[i].v_sym))
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv rules: layer %d: recent=, first=, clip and vsym need a "
                            "per-channel layout (qXkYv)", i);
        if (sc[i].layout == KVS_KV_LAYOUT_CHANNEL && sc[i].group && sc[i].recent % sc[i].group)
            return kvs_fail(KVS_ERR_INVALID_ARG, "kv rules: layer %d: recent=%u is not a multiple of group=%u", i,
                            sc[i].recent, sc[i].group);
    }
    return KVS_OK;
}
