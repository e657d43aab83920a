/* The JSON reader of json.h over jansson (the one parser the project uses for
 * JSON, request bodies and config.json alike): jansson parses strictly, and
 * its tree is copied into ours; nesting deeper than KVS_JSON_MAX_DEPTH is
 * refused before parsing. */
#include "core/json.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

static kvs_json *new_node(kvs_json_type t) {
    kvs_json *j = kvs_calloc(1, sizeof *j);
    if (j) j->type = t;
    return j;
}

void kvs_json_free(kvs_json *j) {
    while (j) {
        kvs_json *next = j->next;
        kvs_json_free(j->child);
        kvs_free(j->str);
        kvs_free(j->key);
        kvs_free(j);
        j = next;
    }
}

static char *copy(const char *s, size_t n) {
    char *c = kvs_malloc(n + 1);
    if (c) { memcpy(c, s, n); c[n] = '\0'; }
    return c;
}

/* jansson's tree as ours; NULL when out of memory. */
static kvs_json *convert(json_t *v) {
    kvs_json *j = NULL;
    switch (json_typeof(v)) {
    case JSON_NULL: return new_node(KVS_JSON_NULL);
    case JSON_TRUE:
    case JSON_FALSE:
        if ((j = new_node(KVS_JSON_BOOL))) j->b = json_is_true(v);
        return j;
    case JSON_INTEGER:
    case JSON_REAL:
        if ((j = new_node(KVS_JSON_NUMBER))) j->num = json_number_value(v);
        return j;
    case JSON_STRING:
        if (!(j = new_node(KVS_JSON_STRING))) return NULL;
        j->len = json_string_length(v);
        if (!(j->str = copy(json_string_value(v), j->len))) { kvs_free(j); return NULL; }
        return j;
    case JSON_ARRAY:
    case JSON_OBJECT: {
        bool obj = json_is_object(v);
        if (!(j = new_node(obj ? KVS_JSON_OBJECT : KVS_JSON_ARRAY))) return NULL;
        kvs_json **tail = &j->child;
        if (obj) {
            const char *key;
            json_t *m;
            json_object_foreach(v, key, m) { /* in document order */
                kvs_json *c = convert(m);
                if (!c || !(c->key = copy(key, strlen(key)))) { kvs_json_free(c); kvs_json_free(j); return NULL; }
                *tail = c;
                tail = &c->next;
                j->n++;
            }
        } else {
            size_t i;
            json_t *m;
            json_array_foreach(v, i, m) {
                kvs_json *c = convert(m);
                if (!c) { kvs_json_free(j); return NULL; }
                *tail = c;
                tail = &c->next;
                j->n++;
            }
        }
        return j;
    }
    }
    return NULL;
}

/* Deeper nesting than KVS_JSON_MAX_DEPTH anywhere (strings skipped)? */
static bool too_deep(const char *s, size_t len) {
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > KVS_JSON_MAX_DEPTH) return true;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return false;
}

kvs_status kvs_json_parse(const char *text, size_t len, kvs_json **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_json_parse: NULL out");
    *out = NULL;
    if (!text) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_json_parse: NULL text");
    /* Skip a UTF-8 byte order mark. */
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF) {
        text += 3;
        len -= 3;
    }
    if (too_deep(text, len))
        return kvs_fail(KVS_ERR_FORMAT, "config.json: nesting too deep (more than %d levels) at line 1", KVS_JSON_MAX_DEPTH);
    json_error_t e;
    json_t *root = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, &e);
    if (!root)
        return kvs_fail(KVS_ERR_FORMAT, "config.json: %s at line %d col %d%s", e.text, e.line, e.column,
                        e.position >= (int)len ? " (input ends early: truncated?)" : "");
    kvs_json *j = convert(root);
    json_decref(root);
    if (!j) return kvs_fail(KVS_ERR_NOMEM, "config.json: out of memory");
    *out = j;
    return KVS_OK;
}

const kvs_json *kvs_json_get(const kvs_json *obj, const char *key) {
    if (!obj || obj->type != KVS_JSON_OBJECT || !key) return NULL;
    for (const kvs_json *c = obj->child; c; c = c->next)
        if (c->key && strcmp(c->key, key) == 0) return c;
    return NULL;
}

const kvs_json *kvs_json_at(const kvs_json *arr, size_t i) {
    if (!arr || arr->type != KVS_JSON_ARRAY) return NULL;
    const kvs_json *c = arr->child;
    while (c && i--) c = c->next;
    return c;
}

bool kvs_json_get_num(const kvs_json *obj, const char *key, double *out) {
    const kvs_json *v = kvs_json_get(obj, key);
    if (!v || v->type != KVS_JSON_NUMBER) return false;
    *out = v->num;
    return true;
}

bool kvs_json_get_u32(const kvs_json *obj, const char *key, unsigned *out) {
    double d;
    if (!kvs_json_get_num(obj, key, &d)) return false;
    if (!(d >= 0 && d < 4294967296.0) || d != floor(d)) return false;
    *out = (unsigned)d;
    return true;
}

bool kvs_json_get_bool(const kvs_json *obj, const char *key, bool *out) {
    const kvs_json *v = kvs_json_get(obj, key);
    if (!v || v->type != KVS_JSON_BOOL) return false;
    *out = v->b;
    return true;
}

const char *kvs_json_get_str(const kvs_json *obj, const char *key) {
    const kvs_json *v = kvs_json_get(obj, key);
    return v && v->type == KVS_JSON_STRING ? v->str : NULL;
}
