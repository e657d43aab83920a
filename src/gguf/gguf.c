/* GGUF reader (v2/v3, little-endian). Owns the file image (mmap or a heap
 * copy; borrowed for kvs_gguf_open_memory) and one block that holds the kv
 * table, the tensor table, the sorted lookup indexes, the string-array
 * element table and the string arena.
 *
 * Parsing runs twice over the same bytes: pass 1 validates the whole layout
 * and sums what must be allocated (arena bytes, string-array elements) while
 * allocating nothing, so a hostile count can never drive an allocation;
 * pass 2 fills the tables, then tensor extents, overlaps and duplicate
 * names/keys are checked. Every failure is KVS_ERR_FORMAT (or IO/NOMEM) with
 * a message naming the problem, and frees everything. */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/error.h"

#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_HEADER_BYTES 24u
/* Smallest possible encodings, used to bound counts by the bytes left. */
#define GGUF_MIN_KV_BYTES 14u     /* key len(8) + 1 key byte + type(4) + 1 value byte */
#define GGUF_MIN_TENSOR_BYTES 33u /* name len(8) + 1 + n_dims(4) + ne(8) + type(4) + offset(8) */

struct kvs_gguf {
    const uint8_t *base;   /* the file image */
    size_t size;
    void *map;             /* mmap'd image (or NULL) */
    size_t map_len;
    void *buf;             /* heap copy of the image (or NULL) */
    void *block;           /* one allocation: tables, indexes, arena */

    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;  /* absolute offset of the tensor data section */

    uint64_t n_kv;
    kvs_gguf_kv *kvs;                      /* (n_kv) file order */
    const kvs_gguf_kv **kv_index;          /* (n_kv) sorted by key */
    uint64_t n_tensors;
    kvs_gguf_tensor *tensors;              /* (n_tensors) file order */
    const kvs_gguf_tensor **tensor_index;  /* (n_tensors) sorted by name */
};

/* Element sizes of the value types; 0 for STRING/ARRAY (variable). */
static const uint8_t k_vsize[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *kvs_gguf_vtype_name(uint32_t t) {
    static const char *names[13] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                    "bool", "string", "array", "u64", "i64", "f64"};
    return t < 13 ? names[t] : "unknown";
}

/* ---- byte cursor ------------------------------------------------------- */

typedef struct parser {
    const uint8_t *d;
    size_t n;
    size_t pos;
    char ctx[160];          /* what is being parsed, for messages */
    uint64_t alignment;
    /* pass 1 totals */
    uint64_t arena_bytes;
    uint64_t n_strs;
    /* pass 2 sinks; NULL during pass 1 */
    kvs_gguf *g;
    char *arena_at;
    kvs_gguf_str *strs_at;
} parser;

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

static size_t left(const parser *ps) { return ps->n - ps->pos; }

static kvs_status need(parser *ps, uint64_t nbytes, const char *what) {
    if (nbytes > left(ps))
        return kvs_fail(KVS_ERR_FORMAT,
                        "gguf: truncated file: %s: %s needs %llu bytes at offset %zu, only %zu left "
                        "(file size %zu)",
                        ps->ctx, what, (unsigned long long)nbytes, ps->pos, left(ps), ps->n);
    return KVS_OK;
}

static kvs_status rd_u32(parser *ps, uint32_t *v, const char *what) {
    kvs_status st = need(ps, 4, what);
    if (st) return st;
    *v = le32(ps->d + ps->pos);
    ps->pos += 4;
    return KVS_OK;
}

static kvs_status rd_u64(parser *ps, uint64_t *v, const char *what) {
    kvs_status st = need(ps, 8, what);
    if (st) return st;
    *v = le64(ps->d + ps->pos);
    ps->pos += 8;
    return KVS_OK;
}

/* A length-prefixed string. `name` rejects empty strings and NUL bytes
 * (keys and tensor names must be usable as C strings). Pass 2 copies it
 * into the arena, NUL-terminated. */
static kvs_status rd_str(parser *ps, kvs_gguf_str *out, bool name, const char *what) {
    uint64_t len;
    kvs_status st = rd_u64(ps, &len, what);
    if (st) return st;
    if (len > left(ps))
        return kvs_fail(KVS_ERR_FORMAT,
                        "gguf: %s: %s length %llu at offset %zu exceeds the %zu bytes left in the file",
                        ps->ctx, what, (unsigned long long)len, ps->pos - 8, left(ps));
    const uint8_t *s = ps->d + ps->pos;
    if (name) {
        if (len == 0) return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: empty %s", ps->ctx, what);
        if (memchr(s, 0, (size_t)len))
            return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: %s contains a NUL byte", ps->ctx, what);
    }
    ps->pos += (size_t)len;
    if (ps->g) {
        memcpy(ps->arena_at, s, (size_t)len);
        ps->arena_at[len] = '\0';
        out->s = ps->arena_at;
        out->len = len;
        ps->arena_at += len + 1;
    } else {
        ps->arena_bytes += len + 1; /* len <= file size: cannot overflow */
        out->s = NULL;
        out->len = len;
    }
    return KVS_OK;
}

/* ---- metadata ---------------------------------------------------------- */

static void widen_scalar(uint32_t type, const uint8_t *p, kvs_gguf_kv *kv) {
    switch (type) {
    case KVS_GGUF_U8: kv->v.u64 = p[0]; break;
    case KVS_GGUF_I8: kv->v.i64 = (int8_t)p[0]; break;
    case KVS_GGUF_U16: kv->v.u64 = le16(p); break;
    case KVS_GGUF_I16: kv->v.i64 = (int16_t)le16(p); break;
    case KVS_GGUF_U32: kv->v.u64 = le32(p); break;
    case KVS_GGUF_I32: kv->v.i64 = (int32_t)le32(p); break;
    case KVS_GGUF_F32: {
        uint32_t bits = le32(p);
        float f;
        memcpy(&f, &bits, 4);
        kv->v.f64 = f;
        break;
    }
    case KVS_GGUF_BOOL: kv->v.b = p[0] != 0; break;
    case KVS_GGUF_U64: kv->v.u64 = le64(p); break;
    case KVS_GGUF_I64: {
        uint64_t u = le64(p);
        memcpy(&kv->v.i64, &u, 8);
        break;
    }
    case KVS_GGUF_F64: {
        uint64_t bits = le64(p);
        memcpy(&kv->v.f64, &bits, 8);
        break;
    }
    default: break;
    }
}

static kvs_status rd_array(parser *ps, kvs_gguf_kv *kv) {
    uint32_t et;
    uint64_t n;
    kvs_status st = rd_u32(ps, &et, "array element type");
    if (st) return st;
    if (et == KVS_GGUF_ARRAY)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: nested arrays are not supported", ps->ctx);
    if (et > KVS_GGUF_F64)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: unknown array element type %u", ps->ctx, et);
    if ((st = rd_u64(ps, &n, "array length"))) return st;
    kv->v.arr.type = et;
    kv->v.arr.n = n;
    kv->v.arr.data = NULL;
    kv->v.arr.strs = NULL;
    if (et == KVS_GGUF_STRING) {
        if (n > left(ps) / 8)
            return kvs_fail(KVS_ERR_FORMAT,
                            "gguf: %s: array length %llu of strings exceeds the %zu bytes left in the file",
                            ps->ctx, (unsigned long long)n, left(ps));
        kvs_gguf_str *strs = NULL;
        if (ps->g) {
            strs = ps->strs_at;
            ps->strs_at += n;
            kv->v.arr.strs = strs;
        } else {
            ps->n_strs += n;
        }
        kvs_gguf_str scratch;
        for (uint64_t j = 0; j < n; j++) {
            if ((st = rd_str(ps, strs ? &strs[j] : &scratch, false, "string array element")))
                return st;
        }
        return KVS_OK;
    }
    size_t es = k_vsize[et];
    if (n > left(ps) / es)
        return kvs_fail(KVS_ERR_FORMAT,
                        "gguf: %s: array length %llu of %s exceeds the %zu bytes left in the file",
                        ps->ctx, (unsigned long long)n, kvs_gguf_vtype_name(et), left(ps));
    kv->v.arr.data = ps->d + ps->pos;
    ps->pos += (size_t)n * es;
    return KVS_OK;
}

static kvs_status rd_kv(parser *ps, uint64_t i, kvs_gguf_kv *kv) {
    snprintf(ps->ctx, sizeof ps->ctx, "kv #%llu", (unsigned long long)i);
    kvs_status st = rd_str(ps, &kv->key, true, "key");
    if (st) return st;
    const uint8_t *key = ps->d + ps->pos - kv->key.len;
    int klen = kv->key.len > 64 ? 64 : (int)kv->key.len;
    snprintf(ps->ctx, sizeof ps->ctx, "kv #%llu '%.*s'", (unsigned long long)i, klen,
             (const char *)key);
    uint32_t type;
    if ((st = rd_u32(ps, &type, "value type"))) return st;
    if (type > KVS_GGUF_F64)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: unknown value type %u", ps->ctx, type);
    kv->type = type;
    if (type == KVS_GGUF_STRING) {
        if ((st = rd_str(ps, &kv->v.str, false, "string value"))) return st;
    } else if (type == KVS_GGUF_ARRAY) {
        if ((st = rd_array(ps, kv))) return st;
    } else {
        if ((st = need(ps, k_vsize[type], "value"))) return st;
        widen_scalar(type, ps->d + ps->pos, kv);
        ps->pos += k_vsize[type];
    }
    if (kv->key.len == 17 && memcmp(key, "general.alignment", 17) == 0) {
        if (type != KVS_GGUF_U32)
            return kvs_fail(KVS_ERR_FORMAT, "gguf: general.alignment must be u32, found %s",
                            kvs_gguf_vtype_name(type));
        uint64_t a = kv->v.u64;
        if (a == 0 || (a & (a - 1)) != 0)
            return kvs_fail(KVS_ERR_FORMAT,
                            "gguf: general.alignment %llu is not a non-zero power of two",
                            (unsigned long long)a);
        ps->alignment = a;
    }
    return KVS_OK;
}

/* ---- tensor infos ------------------------------------------------------ */

static kvs_status rd_tensor(parser *ps, uint64_t i, kvs_gguf_tensor *t) {
    snprintf(ps->ctx, sizeof ps->ctx, "tensor #%llu", (unsigned long long)i);
    kvs_status st = rd_str(ps, &t->name, true, "tensor name");
    if (st) return st;
    const uint8_t *name = ps->d + ps->pos - t->name.len;
    int nlen = t->name.len > 64 ? 64 : (int)t->name.len;
    snprintf(ps->ctx, sizeof ps->ctx, "tensor #%llu '%.*s'", (unsigned long long)i, nlen,
             (const char *)name);
    uint32_t n_dims;
    if ((st = rd_u32(ps, &n_dims, "n_dims"))) return st;
    if (n_dims == 0 || n_dims > KVS_GGUF_MAX_DIMS)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: n_dims %u out of range 1..%d", ps->ctx, n_dims,
                        KVS_GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    uint64_t nel = 1;
    for (uint32_t j = 0; j < KVS_GGUF_MAX_DIMS; j++) {
        uint64_t d = 1;
        if (j < n_dims && (st = rd_u64(ps, &d, "dimension"))) return st;
        if (d == 0 || d > (uint64_t)INT64_MAX)
            return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: dimension ne[%u] = %lld is not positive",
                            ps->ctx, j, (long long)(int64_t)d);
        if (nel > (uint64_t)INT64_MAX / d)
            return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: element count overflows int64", ps->ctx);
        nel *= d;
        t->ne[j] = (int64_t)d;
    }
    uint32_t type;
    if ((st = rd_u32(ps, &type, "tensor type"))) return st;
    t->type = type;
    const kvs_type_traits *ttr = kvs_type_traits_of(type);
    if (ttr && ttr->kv_only)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: tensor type %u is not a GGML type", ps->ctx, type);
    size_t row = kvs_row_bytes(type, t->ne[0]);
    if (row == 0) {
        const kvs_type_traits *tr = kvs_type_traits_of(type);
        if (!tr)
            return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: unknown tensor type %u", ps->ctx, type);
        return kvs_fail(KVS_ERR_FORMAT,
                        "gguf: %s: ne[0] = %lld is not a multiple of the block size %d of type %s",
                        ps->ctx, (long long)t->ne[0], (int)tr->block_size, kvs_dtype_name(type));
    }
    uint64_t rows = nel / (uint64_t)t->ne[0];
    if (rows > UINT64_MAX / row)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: byte size overflows", ps->ctx);
    t->nbytes = rows * row;
    if ((st = rd_u64(ps, &t->offset, "data offset"))) return st;
    if (t->offset % ps->alignment != 0)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: %s: data offset %llu is not a multiple of the alignment %llu",
                        ps->ctx, (unsigned long long)t->offset, (unsigned long long)ps->alignment);
    t->data = NULL;
    return KVS_OK;
}

/* ---- whole file -------------------------------------------------------- */

static kvs_status parse(parser *ps, uint32_t *version, uint64_t *n_tensors, uint64_t *n_kv) {
    snprintf(ps->ctx, sizeof ps->ctx, "header");
    ps->pos = 0;
    ps->alignment = GGUF_DEFAULT_ALIGNMENT;
    kvs_status st = need(ps, 4, "magic");
    if (st) return st;
    if (memcmp(ps->d, "GGUF", 4) != 0)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: bad magic %02x %02x %02x %02x (expected 'GGUF')",
                        ps->d[0], ps->d[1], ps->d[2], ps->d[3]);
    ps->pos = 4;
    uint32_t ver;
    if ((st = rd_u32(ps, &ver, "version"))) return st;
    if (ver == 1)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: version 1 (32-bit counts) is not supported; "
                                        "convert the file to v3");
    if (ver != 2 && ver != 3) {
        uint32_t sw = (ver >> 24) | ((ver >> 8) & 0xff00u) | ((ver << 8) & 0xff0000u) | (ver << 24);
        if (sw >= 1 && sw <= 3)
            return kvs_fail(KVS_ERR_FORMAT,
                            "gguf: unsupported version 0x%08x: the file looks big-endian (only "
                            "little-endian GGUF is supported)", ver);
        return kvs_fail(KVS_ERR_FORMAT, "gguf: unsupported version %u (supported: 2, 3)", ver);
    }
    *version = ver;
    if ((st = rd_u64(ps, n_tensors, "tensor count"))) return st;
    if ((st = rd_u64(ps, n_kv, "kv count"))) return st;
    if (*n_kv > left(ps) / GGUF_MIN_KV_BYTES)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: n_kv %llu is more than a %zu-byte file can hold",
                        (unsigned long long)*n_kv, ps->n);
    if (*n_tensors > left(ps) / GGUF_MIN_TENSOR_BYTES)
        return kvs_fail(KVS_ERR_FORMAT, "gguf: n_tensors %llu is more than a %zu-byte file can hold",
                        (unsigned long long)*n_tensors, ps->n);

    kvs_gguf_kv kv_scratch;
    for (uint64_t i = 0; i < *n_kv; i++) {
        kvs_gguf_kv *kv = ps->g ? &ps->g->kvs[i] : &kv_scratch;
        memset(kv, 0, sizeof *kv);
        if ((st = rd_kv(ps, i, kv))) return st;
    }
    kvs_gguf_tensor t_scratch;
    for (uint64_t i = 0; i < *n_tensors; i++) {
        kvs_gguf_tensor *t = ps->g ? &ps->g->tensors[i] : &t_scratch;
        memset(t, 0, sizeof *t);
        if ((st = rd_tensor(ps, i, t))) return st;
    }
    return KVS_OK;
}

static int cmp_kv(const void *a, const void *b) {
    const kvs_gguf_kv *x = *(const kvs_gguf_kv *const *)a, *y = *(const kvs_gguf_kv *const *)b;
    return strcmp(x->key.s, y->key.s);
}
static int cmp_tensor_name(const void *a, const void *b) {
    const kvs_gguf_tensor *x = *(const kvs_gguf_tensor *const *)a;
    const kvs_gguf_tensor *y = *(const kvs_gguf_tensor *const *)b;
    return strcmp(x->name.s, y->name.s);
}
static int cmp_tensor_off(const void *a, const void *b) {
    const kvs_gguf_tensor *x = *(const kvs_gguf_tensor *const *)a;
    const kvs_gguf_tensor *y = *(const kvs_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Adds n*elem to *total; false on overflow. */
static bool add_bytes(uint64_t *total, uint64_t n, uint64_t elem) {
    if (elem && n > UINT64_MAX / elem) return false;
    if (*total > UINT64_MAX - n * elem) return false;
    *total += n * elem;
    return true;
}

/* Parses g->base/g->size into g (tables in g->block). */
static kvs_status parse_image(kvs_gguf *g) {
    static const uint8_t empty[1];
    parser ps;
    memset(&ps, 0, sizeof ps);
    ps.d = g->base ? g->base : empty;
    ps.n = g->size;
    uint64_t n_tensors, n_kv;
    kvs_status st = parse(&ps, &g->version, &n_tensors, &n_kv);
    if (st) return st;

    /* Layout of the block: kvs | tensors | strs | kv_index | tensor_index |
     * tensor_by_offset (scratch) | arena. All counts are bounded by the file
     * size (checked in pass 1), but sum with overflow checks anyway. */
    uint64_t off_kvs = 0, total = 0;
    bool ok = add_bytes(&total, n_kv, sizeof(kvs_gguf_kv));
    uint64_t off_tensors = total;
    ok = ok && add_bytes(&total, n_tensors, sizeof(kvs_gguf_tensor));
    uint64_t off_strs = total;
    ok = ok && add_bytes(&total, ps.n_strs, sizeof(kvs_gguf_str));
    uint64_t off_kv_index = total;
    ok = ok && add_bytes(&total, n_kv, sizeof(void *));
    uint64_t off_t_index = total;
    ok = ok && add_bytes(&total, n_tensors, sizeof(void *));
    uint64_t off_t_byoff = total;
    ok = ok && add_bytes(&total, n_tensors, sizeof(void *));
    uint64_t off_arena = total;
    ok = ok && add_bytes(&total, ps.arena_bytes, 1);
    if (!ok || total > SIZE_MAX)
        return kvs_fail(KVS_ERR_NOMEM, "gguf: metadata tables too large for this address space");
    uint8_t *block = kvs_malloc((size_t)total);
    if (!block)
        return kvs_fail(KVS_ERR_NOMEM, "gguf: out of memory allocating %llu bytes of metadata tables",
                        (unsigned long long)total);
    g->block = block;
    g->kvs = (kvs_gguf_kv *)(block + off_kvs);
    g->tensors = (kvs_gguf_tensor *)(block + off_tensors);
    g->kv_index = (const kvs_gguf_kv **)(block + off_kv_index);
    g->tensor_index = (const kvs_gguf_tensor **)(block + off_t_index);
    const kvs_gguf_tensor **by_off = (const kvs_gguf_tensor **)(block + off_t_byoff);

    /* pass 2: same bytes, same checks, now filling the tables */
    uint64_t n_strs = ps.n_strs, arena_bytes = ps.arena_bytes;
    ps.g = g;
    ps.strs_at = (kvs_gguf_str *)(block + off_strs);
    ps.arena_at = (char *)(block + off_arena);
    ps.arena_bytes = 0;
    ps.n_strs = 0;
    uint64_t n_tensors2, n_kv2;
    uint32_t version2;
    if ((st = parse(&ps, &version2, &n_tensors2, &n_kv2))) return st;
    if (n_tensors2 != n_tensors || n_kv2 != n_kv ||
        ps.strs_at != (kvs_gguf_str *)(block + off_strs) + n_strs ||
        ps.arena_at != (char *)(block + off_arena) + arena_bytes)
        return kvs_fail(KVS_ERR_INTERNAL, "gguf: parser passes disagree");
    g->n_kv = n_kv;
    g->n_tensors = n_tensors;
    g->alignment = ps.alignment;

    /* duplicate keys */
    for (uint64_t i = 0; i < n_kv; i++) g->kv_index[i] = &g->kvs[i];
    if (n_kv > 1) qsort(g->kv_index, (size_t)n_kv, sizeof(void *), cmp_kv);
    for (uint64_t i = 1; i < n_kv; i++)
        if (strcmp(g->kv_index[i - 1]->key.s, g->kv_index[i]->key.s) == 0)
            return kvs_fail(KVS_ERR_FORMAT, "gguf: duplicate key '%.64s'", g->kv_index[i]->key.s);

    /* duplicate tensor names */
    for (uint64_t i = 0; i < n_tensors; i++) g->tensor_index[i] = by_off[i] = &g->tensors[i];
    if (n_tensors > 1) qsort(g->tensor_index, (size_t)n_tensors, sizeof(void *), cmp_tensor_name);
    for (uint64_t i = 1; i < n_tensors; i++)
        if (strcmp(g->tensor_index[i - 1]->name.s, g->tensor_index[i]->name.s) == 0)
            return kvs_fail(KVS_ERR_FORMAT, "gguf: duplicate tensor name '%.64s'",
                            g->tensor_index[i]->name.s);

    /* data section: starts at the first aligned offset after the infos */
    uint64_t pos = ps.pos, a = g->alignment;
    uint64_t data_off = pos + (a - pos % a) % a; /* pos <= size, a <= 2^32: no overflow */
    g->data_offset = data_off;
    if (n_tensors > 0 && data_off > g->size)
        return kvs_fail(KVS_ERR_FORMAT,
                        "gguf: truncated file: tensor data section would start at %llu, past the "
                        "end of the file (size %zu)", (unsigned long long)data_off, g->size);
    uint64_t data_len = n_tensors > 0 ? g->size - data_off : 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        kvs_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_len || t->nbytes > data_len - t->offset)
            return kvs_fail(KVS_ERR_FORMAT,
                            "gguf: tensor '%.64s' data [%llu, +%llu) lies outside the file "
                            "(data section has %llu bytes)",
                            t->name.s, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                            (unsigned long long)data_len);
        t->data = g->base + data_off + t->offset;
    }
    if (n_tensors > 1) qsort(by_off, (size_t)n_tensors, sizeof(void *), cmp_tensor_off);
    for (uint64_t i = 1; i < n_tensors; i++) {
        const kvs_gguf_tensor *p = by_off[i - 1], *q = by_off[i];
        if (p->offset + p->nbytes > q->offset)
            return kvs_fail(KVS_ERR_FORMAT, "gguf: tensors '%.64s' and '%.64s' overlap in the data section",
                            p->name.s, q->name.s);
    }
    return KVS_OK;
}

void kvs_gguf_close(kvs_gguf *g) {
    if (!g) return;
    if (g->map) munmap(g->map, g->map_len);
    kvs_free(g->buf);
    kvs_free(g->block);
    kvs_free(g);
}

static kvs_status finish_open(kvs_gguf *g, kvs_gguf **out) {
    kvs_status st = parse_image(g);
    if (st) {
        kvs_gguf_close(g);
        return st;
    }
    *out = g;
    return KVS_OK;
}

kvs_status kvs_gguf_open_memory(const void *data, size_t size, kvs_gguf **out) {
    if (!out || (!data && size)) return kvs_fail(KVS_ERR_INVALID_ARG, "gguf: NULL argument");
    *out = NULL;
    kvs_gguf *g = kvs_calloc(1, sizeof *g);
    if (!g) return kvs_fail(KVS_ERR_NOMEM, "gguf: out of memory");
    g->base = data;
    g->size = size;
    return finish_open(g, out);
}

kvs_status kvs_gguf_open(const char *path, bool use_mmap, kvs_gguf **out) {
    if (!out || !path) return kvs_fail(KVS_ERR_INVALID_ARG, "gguf: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kvs_fail(KVS_ERR_IO, "gguf: cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return kvs_fail(KVS_ERR_IO, "gguf: cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return kvs_fail(KVS_ERR_IO, "gguf: '%s' is not a regular file", path);
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return kvs_fail(KVS_ERR_IO, "gguf: '%s' is too large for this address space", path);
    }
    size_t size = (size_t)sb.st_size;
    kvs_gguf *g = kvs_calloc(1, sizeof *g);
    if (!g) {
        close(fd);
        return kvs_fail(KVS_ERR_NOMEM, "gguf: out of memory");
    }
    if (size > 0 && use_mmap) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            kvs_free(g);
            return kvs_fail(KVS_ERR_IO, "gguf: cannot mmap '%s': %s", path, strerror(e));
        }
        g->map = m;
        g->map_len = size;
        g->base = m;
    } else if (size > 0) {
        g->buf = kvs_malloc(size);
        if (!g->buf) {
            close(fd);
            kvs_free(g);
            return kvs_fail(KVS_ERR_NOMEM, "gguf: out of memory reading '%s' (%zu bytes)", path, size);
        }
        size_t got = 0;
        while (got < size) {
            ssize_t r = read(fd, (uint8_t *)g->buf + got, size - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                int e = r < 0 ? errno : 0;
                close(fd);
                kvs_gguf_close(g);
                return kvs_fail(KVS_ERR_IO, "gguf: read of '%s' failed at byte %zu: %s", path, got,
                                e ? strerror(e) : "unexpected end of file");
            }
            got += (size_t)r;
        }
        g->base = g->buf;
    }
    close(fd);
    g->size = size;
    return finish_open(g, out);
}

/* ---- accessors --------------------------------------------------------- */

uint32_t kvs_gguf_version(const kvs_gguf *g) { return g->version; }
uint64_t kvs_gguf_alignment(const kvs_gguf *g) { return g->alignment; }
uint64_t kvs_gguf_file_size(const kvs_gguf *g) { return g->size; }
uint64_t kvs_gguf_n_kv(const kvs_gguf *g) { return g->n_kv; }
uint64_t kvs_gguf_n_tensors(const kvs_gguf *g) { return g->n_tensors; }

const kvs_gguf_kv *kvs_gguf_kv_at(const kvs_gguf *g, uint64_t i) {
    return i < g->n_kv ? &g->kvs[i] : NULL;
}
const kvs_gguf_tensor *kvs_gguf_tensor_at(const kvs_gguf *g, uint64_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const kvs_gguf_kv *kvs_gguf_find(const kvs_gguf *g, const char *key) {
    if (!g || !key) return NULL;
    uint64_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, g->kv_index[mid]->key.s);
        if (c == 0) return g->kv_index[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const kvs_gguf_tensor *kvs_gguf_find_tensor(const kvs_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    uint64_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, g->tensor_index[mid]->name.s);
        if (c == 0) return g->tensor_index[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

static bool is_unsigned(uint32_t t) {
    return t == KVS_GGUF_U8 || t == KVS_GGUF_U16 || t == KVS_GGUF_U32 || t == KVS_GGUF_U64;
}
static bool is_signed(uint32_t t) {
    return t == KVS_GGUF_I8 || t == KVS_GGUF_I16 || t == KVS_GGUF_I32 || t == KVS_GGUF_I64;
}

/* Integer kv as a (negative, magnitude) pair; false if not an integer. */
static bool kv_int(const kvs_gguf *g, const char *key, bool *neg, uint64_t *mag) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return false;
    if (is_unsigned(kv->type)) {
        *neg = false;
        *mag = kv->v.u64;
        return true;
    }
    if (is_signed(kv->type)) {
        int64_t v = kv->v.i64;
        *neg = v < 0;
        *mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        return true;
    }
    return false;
}

bool kvs_gguf_get_u32(const kvs_gguf *g, const char *key, uint32_t *out) {
    bool neg;
    uint64_t m;
    if (!kv_int(g, key, &neg, &m) || neg || m > UINT32_MAX) return false;
    *out = (uint32_t)m;
    return true;
}

bool kvs_gguf_get_i32(const kvs_gguf *g, const char *key, int32_t *out) {
    bool neg;
    uint64_t m;
    if (!kv_int(g, key, &neg, &m)) return false;
    if (neg ? m > (uint64_t)INT32_MAX + 1 : m > (uint64_t)INT32_MAX) return false;
    *out = neg ? (int32_t)(-(int64_t)m) : (int32_t)m;
    return true;
}

bool kvs_gguf_get_u64(const kvs_gguf *g, const char *key, uint64_t *out) {
    bool neg;
    uint64_t m;
    if (!kv_int(g, key, &neg, &m) || neg) return false;
    *out = m;
    return true;
}

bool kvs_gguf_get_f32(const kvs_gguf *g, const char *key, float *out) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv || (kv->type != KVS_GGUF_F32 && kv->type != KVS_GGUF_F64)) return false;
    *out = (float)kv->v.f64;
    return true;
}

bool kvs_gguf_get_bool(const kvs_gguf *g, const char *key, bool *out) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv || kv->type != KVS_GGUF_BOOL) return false;
    *out = kv->v.b;
    return true;
}

const char *kvs_gguf_get_str(const kvs_gguf *g, const char *key) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    return kv && kv->type == KVS_GGUF_STRING ? kv->v.str.s : NULL;
}

int64_t kvs_gguf_arr_int(const kvs_gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != KVS_GGUF_ARRAY || i >= kv->v.arr.n || !kv->v.arr.data) return 0;
    const uint8_t *p = kv->v.arr.data + i * k_vsize[kv->v.arr.type];
    switch (kv->v.arr.type) {
    case KVS_GGUF_U8: return p[0];
    case KVS_GGUF_I8: return (int8_t)p[0];
    case KVS_GGUF_U16: return le16(p);
    case KVS_GGUF_I16: return (int16_t)le16(p);
    case KVS_GGUF_U32: return le32(p);
    case KVS_GGUF_I32: return (int32_t)le32(p);
    case KVS_GGUF_BOOL: return p[0] != 0;
    case KVS_GGUF_U64: /* values above INT64_MAX wrap, as two's complement */
    case KVS_GGUF_I64: {
        uint64_t u = le64(p);
        int64_t v;
        memcpy(&v, &u, 8);
        return v;
    }
    default: return 0;
    }
}

double kvs_gguf_arr_float(const kvs_gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != KVS_GGUF_ARRAY || i >= kv->v.arr.n || !kv->v.arr.data) return 0;
    const uint8_t *p = kv->v.arr.data + i * k_vsize[kv->v.arr.type];
    switch (kv->v.arr.type) {
    case KVS_GGUF_F32: {
        uint32_t bits = le32(p);
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    case KVS_GGUF_F64: {
        uint64_t bits = le64(p);
        double d;
        memcpy(&d, &bits, 8);
        return d;
    }
    case KVS_GGUF_U64: return (double)le64(p);
    default: return (double)kvs_gguf_arr_int(kv, i);
    }
}

uint64_t kvs_gguf_identity(const kvs_gguf *g) {
    uint64_t h = 0xcbf29ce484222325ull;
    const uint64_t n = g->data_offset < g->size ? g->data_offset : g->size;
    for (uint64_t i = 0; i < n; i++) h = (h ^ g->base[i]) * 0x100000001b3ull;
    return h;
}
