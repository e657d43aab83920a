/* Strict recursive-descent JSON reader (see json.h). Recursion depth is
 * bounded by KVS_JSON_MAX_DEPTH; every read checks the end of the buffer. */
#include "core/json.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct parser {
    const char *s;
    size_t len, pos;
    kvs_status st;
} parser;

static void where(const parser *p, size_t pos, unsigned *line, unsigned *col) {
    unsigned l = 1, c = 1;
    for (size_t i = 0; i < pos && i < p->len; i++) {
        if (p->s[i] == '\n') { l++; c = 1; } else c++;
    }
    *line = l; *col = c;
}

static kvs_json *perr(parser *p, const char *what) {
    if (p->st == KVS_OK) {
        unsigned line, col;
        where(p, p->pos, &line, &col);
        if (p->pos >= p->len)
            p->st = kvs_fail(KVS_ERR_FORMAT, "config.json: %s at line %u col %u (input ends early: truncated?)",
                             what, line, col);
        else
            p->st = kvs_fail(KVS_ERR_FORMAT, "config.json: %s at line %u col %u", what, line, col);
    }
    return NULL;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->pos++;
        else break;
    }
}

static kvs_json *new_node(parser *p, kvs_json_type t) {
    kvs_json *j = kvs_calloc(1, sizeof *j);
    if (!j) {
        if (p->st == KVS_OK) p->st = kvs_fail(KVS_ERR_NOMEM, "config.json: out of memory");
        return NULL;
    }
    j->type = t;
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

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *p, unsigned *out) {
    if (p->len - p->pos < 4) return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + i]);
        if (h < 0) return false;
        v = v * 16 + (unsigned)h;
    }
    p->pos += 4;
    *out = v;
    return true;
}

/* Parses a string at p->pos (which is at '"'); returns a malloc'd copy. */
static char *parse_string(parser *p, size_t *out_len) {
    p->pos++; /* opening quote */
    size_t cap = 16;
    char *buf = kvs_malloc(cap);
    size_t n = 0;
    if (!buf) { perr(p, "out of memory"); return NULL; }
    for (;;) {
        if (p->pos >= p->len) { kvs_free(buf); perr(p, "unterminated string"); return NULL; }
        unsigned char c = (unsigned char)p->s[p->pos];
        char tmp[4];
        size_t tn = 0;
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) { kvs_free(buf); perr(p, "control character in string"); return NULL; }
        if (c == '\\') {
            p->pos++;
            if (p->pos >= p->len) { kvs_free(buf); perr(p, "unterminated escape"); return NULL; }
            char e = p->s[p->pos++];
            switch (e) {
            case '"': tmp[tn++] = '"'; break;
            case '\\': tmp[tn++] = '\\'; break;
            case '/': tmp[tn++] = '/'; break;
            case 'b': tmp[tn++] = '\b'; break;
            case 'f': tmp[tn++] = '\f'; break;
            case 'n': tmp[tn++] = '\n'; break;
            case 'r': tmp[tn++] = '\r'; break;
            case 't': tmp[tn++] = '\t'; break;
            case 'u': {
                unsigned u;
                if (!read_hex4(p, &u)) { kvs_free(buf); perr(p, "bad \\u escape"); return NULL; }
                if (u >= 0xD800 && u <= 0xDBFF) {
                    unsigned lo;
                    if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                        kvs_free(buf); perr(p, "unpaired UTF-16 surrogate"); return NULL;
                    }
                    p->pos += 2;
                    if (!read_hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        kvs_free(buf); perr(p, "unpaired UTF-16 surrogate"); return NULL;
                    }
                    u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                } else if (u >= 0xDC00 && u <= 0xDFFF) {
                    kvs_free(buf); perr(p, "unpaired UTF-16 surrogate"); return NULL;
                }
                if (u < 0x80) tmp[tn++] = (char)u;
                else if (u < 0x800) { tmp[tn++] = (char)(0xC0 | (u >> 6)); tmp[tn++] = (char)(0x80 | (u & 0x3F)); }
                else if (u < 0x10000) {
                    tmp[tn++] = (char)(0xE0 | (u >> 12)); tmp[tn++] = (char)(0x80 | ((u >> 6) & 0x3F));
                    tmp[tn++] = (char)(0x80 | (u & 0x3F));
                } else {
                    tmp[tn++] = (char)(0xF0 | (u >> 18)); tmp[tn++] = (char)(0x80 | ((u >> 12) & 0x3F));
                    tmp[tn++] = (char)(0x80 | ((u >> 6) & 0x3F)); tmp[tn++] = (char)(0x80 | (u & 0x3F));
                }
                break;
            }
            default: kvs_free(buf); p->pos--; perr(p, "bad escape"); return NULL;
            }
        } else {
            tmp[tn++] = (char)c;
            p->pos++;
        }
        if (n + tn + 1 > cap) {
            size_t nc = cap * 2;
            while (nc < n + tn + 1) nc *= 2;
            char *nb = kvs_realloc(buf, nc);
            if (!nb) { kvs_free(buf); perr(p, "out of memory"); return NULL; }
            buf = nb; cap = nc;
        }
        memcpy(buf + n, tmp, tn);
        n += tn;
    }
    buf[n] = '\0';
    *out_len = n;
    return buf;
}

static kvs_json *parse_value(parser *p, int depth);

static kvs_json *parse_number(parser *p) {
    size_t st = p->pos, i = p->pos;
    const char *s = p->s;
    if (i < p->len && s[i] == '-') i++;
    if (i >= p->len) { p->pos = i; return perr(p, "bad number"); }
    if (s[i] == '0') i++;
    else if (s[i] >= '1' && s[i] <= '9') { while (i < p->len && s[i] >= '0' && s[i] <= '9') i++; }
    else { p->pos = i; return perr(p, "bad number"); }
    if (i < p->len && s[i] == '.') {
        i++;
        if (i >= p->len || s[i] < '0' || s[i] > '9') { p->pos = i; return perr(p, "bad number"); }
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || s[i] < '0' || s[i] > '9') { p->pos = i; return perr(p, "bad number"); }
        while (i < p->len && s[i] >= '0' && s[i] <= '9') i++;
    }
    size_t n = i - st;
    if (n > 64) return perr(p, "number too long");
    char tmp[72];
    memcpy(tmp, s + st, n);
    tmp[n] = '\0';
    double v = strtod(tmp, NULL);
    if (!isfinite(v)) return perr(p, "number out of range");
    kvs_json *j = new_node(p, KVS_JSON_NUMBER);
    if (!j) return NULL;
    j->num = v;
    p->pos = i;
    return j;
}

static bool match_lit(parser *p, const char *lit) {
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0) return false;
    p->pos += n;
    return true;
}

static kvs_json *parse_container(parser *p, int depth, bool is_obj) {
    char close = is_obj ? '}' : ']';
    kvs_json *j = new_node(p, is_obj ? KVS_JSON_OBJECT : KVS_JSON_ARRAY);
    if (!j) return NULL;
    p->pos++;
    kvs_json **tail = &j->child;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return j; }
    for (;;) {
        char *key = NULL;
        size_t klen = 0;
        skip_ws(p);
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"') { kvs_json_free(j); return perr(p, "expected member name"); }
            key = parse_string(p, &klen);
            if (!key) { kvs_json_free(j); return NULL; }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') { kvs_free(key); kvs_json_free(j); return perr(p, "expected ':'"); }
            p->pos++;
        }
        kvs_json *v = parse_value(p, depth + 1);
        if (!v) { kvs_free(key); kvs_json_free(j); return NULL; }
        v->key = key;
        *tail = v;
        tail = &v->next;
        j->n++;
        skip_ws(p);
        if (p->pos >= p->len) { kvs_json_free(j); return perr(p, is_obj ? "unterminated object" : "unterminated array"); }
        char c = p->s[p->pos];
        if (c == ',') { p->pos++; continue; }
        if (c == close) { p->pos++; return j; }
        kvs_json_free(j);
        return perr(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static kvs_json *parse_value(parser *p, int depth) {
    if (depth > KVS_JSON_MAX_DEPTH) return perr(p, "nesting too deep");
    skip_ws(p);
    if (p->pos >= p->len) return perr(p, "expected a value");
    char c = p->s[p->pos];
    if (c == '{') return parse_container(p, depth, true);
    if (c == '[') return parse_container(p, depth, false);
    if (c == '"') {
        size_t n = 0;
        char *s = parse_string(p, &n);
        if (!s) return NULL;
        kvs_json *j = new_node(p, KVS_JSON_STRING);
        if (!j) { kvs_free(s); return NULL; }
        j->str = s;
        j->len = n;
        return j;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
    if (match_lit(p, "true")) { kvs_json *j = new_node(p, KVS_JSON_BOOL); if (j) j->b = true; return j; }
    if (match_lit(p, "false")) return new_node(p, KVS_JSON_BOOL);
    if (match_lit(p, "null")) return new_node(p, KVS_JSON_NULL);
    return perr(p, "unexpected character");
}

kvs_status kvs_json_parse(const char *text, size_t len, kvs_json **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_json_parse: NULL out");
    *out = NULL;
    if (!text) return kvs_fail(KVS_ERR_INVALID_ARG, "kvs_json_parse: NULL text");
    parser p = {text, len, 0, KVS_OK};
    /* Skip a UTF-8 byte order mark. */
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
        (unsigned char)text[2] == 0xBF)
        p.pos = 3;
    kvs_json *j = parse_value(&p, 0);
    if (!j) return p.st != KVS_OK ? p.st : kvs_fail(KVS_ERR_FORMAT, "config.json: parse error");
    skip_ws(&p);
    if (p.pos != p.len) {
        kvs_json_free(j);
        perr(&p, "trailing data after the JSON value");
        return p.st;
    }
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
