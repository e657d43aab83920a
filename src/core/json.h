/* A strict JSON (RFC 8259) reader (HF config.json, test references) over
 * jansson. It builds a tree of nodes, rejects hostile input with
 * KVS_ERR_FORMAT and a message naming the line and column (truncation,
 * garbage, bad escapes, invalid UTF-16 surrogates, NaN/Infinity, duplicate
 * member names, nesting deeper than 64, trailing data), and never reads
 * outside the given buffer. */
#ifndef KVS_CORE_JSON_H
#define KVS_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "kvslim.h"

typedef enum kvs_json_type {
    KVS_JSON_NULL = 0,
    KVS_JSON_BOOL = 1,
    KVS_JSON_NUMBER = 2,
    KVS_JSON_STRING = 3,
    KVS_JSON_ARRAY = 4,
    KVS_JSON_OBJECT = 5,
} kvs_json_type;

typedef struct kvs_json kvs_json;
struct kvs_json {
    kvs_json_type type;
    bool b;
    double num;
    char *str;          /* STRING: NUL-terminated UTF-8 (may contain NUL; see len) */
    size_t len;
    char *key;          /* member name when inside an object, else NULL */
    kvs_json *child;    /* ARRAY/OBJECT: first element */
    kvs_json *next;     /* next sibling */
    size_t n;           /* ARRAY/OBJECT: element count */
};

#define KVS_JSON_MAX_DEPTH 64

kvs_status kvs_json_parse(const char *text, size_t len, kvs_json **out);
void kvs_json_free(kvs_json *j);

/* Object member lookup (first match); NULL if absent or obj is not an object. */
const kvs_json *kvs_json_get(const kvs_json *obj, const char *key);
/* Array element i, NULL if out of range. */
const kvs_json *kvs_json_at(const kvs_json *arr, size_t i);
/* Typed getters: true when the member exists with that type. get_u32 needs
 * an integral number in [0, 2^32). */
bool kvs_json_get_num(const kvs_json *obj, const char *key, double *out);
bool kvs_json_get_u32(const kvs_json *obj, const char *key, unsigned *out);
bool kvs_json_get_bool(const kvs_json *obj, const char *key, bool *out);
const char *kvs_json_get_str(const kvs_json *obj, const char *key);

#endif
