/* GGUF writer: collects kvs (each pre-encoded as its GGUF value bytes) and
 * tensors (data copied at add time), then writes a v3 file with the tensor
 * data aligned (general.alignment if set, else 32) and each tensor padded.
 * The file goes through src/core/safe_file.c: a temporary in the target's
 * directory renamed over the target once fully written and synced, so a
 * failure never leaves a partial file nor clobbers an existing one, and a
 * target that is not a regular file (a symlink, /dev/null) is refused. */
#include "gguf/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/safe_file.h"

static const uint8_t k_wsize[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

typedef struct wkv {
    char *key;
    uint8_t *val;      /* type (u32) + encoded value, as in the file */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[KVS_GGUF_MAX_DIMS];
    void *data;
    size_t nbytes;
} wtensor;

struct kvs_gguf_writer {
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
    uint32_t alignment;
};

/* growable byte buffer; `oom` latches the first allocation failure */
typedef struct bbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} bbuf;

static void bb_put(bbuf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (n > SIZE_MAX - b->len) {
        b->oom = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        uint8_t *p = kvs_realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void bb_u32(bbuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bb_put(b, x, 4);
}
static void bb_u64(bbuf *b, uint64_t v) {
    bb_u32(b, (uint32_t)v);
    bb_u32(b, (uint32_t)(v >> 32));
}
static void bb_str(bbuf *b, const char *s, uint64_t len) {
    bb_u64(b, len);
    bb_put(b, s, (size_t)len);
}

kvs_status kvs_gguf_writer_new(kvs_gguf_writer **out) {
    if (!out) return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: NULL argument");
    *out = kvs_calloc(1, sizeof **out);
    if (!*out) return kvs_fail(KVS_ERR_NOMEM, "gguf writer: out of memory");
    (*out)->alignment = 32;
    return KVS_OK;
}

void kvs_gguf_writer_free(kvs_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        kvs_free(w->kvs[i].key);
        kvs_free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        kvs_free(w->tensors[i].name);
        kvs_free(w->tensors[i].data);
    }
    kvs_free(w->kvs);
    kvs_free(w->tensors);
    kvs_free(w);
}

/* Takes ownership of val (freed on failure). Replaces an existing key in place. */
static kvs_status put_kv(kvs_gguf_writer *w, const char *key, bbuf *val) {
    if (val->oom) {
        kvs_free(val->p);
        return kvs_fail(KVS_ERR_NOMEM, "gguf writer: out of memory encoding '%.64s'", key);
    }
    uint32_t type = val->p[0] | (val->p[1] << 8) | (val->p[2] << 16) | ((uint32_t)val->p[3] << 24);
    if (strcmp(key, "general.alignment") == 0) {
        uint32_t a = 0;
        if (type == KVS_GGUF_U32 && val->len == 8)
            a = val->p[4] | (val->p[5] << 8) | (val->p[6] << 16) | ((uint32_t)val->p[7] << 24);
        if (a == 0 || (a & (a - 1)) != 0) {
            kvs_free(val->p);
            return kvs_fail(KVS_ERR_INVALID_ARG,
                            "gguf writer: general.alignment must be a u32 power of two");
        }
        w->alignment = a;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            kvs_free(w->kvs[i].val);
            w->kvs[i].val = val->p;
            w->kvs[i].val_len = val->len;
            return KVS_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *p = kvs_realloc(w->kvs, cap * sizeof *p);
        if (!p) {
            kvs_free(val->p);
            return kvs_fail(KVS_ERR_NOMEM, "gguf writer: out of memory");
        }
        w->kvs = p;
        w->cap_kv = cap;
    }
    char *k = kvs_strdup(key);
    if (!k) {
        kvs_free(val->p);
        return kvs_fail(KVS_ERR_NOMEM, "gguf writer: out of memory");
    }
    w->kvs[w->n_kv++] = (wkv){.key = k, .val = val->p, .val_len = val->len};
    return KVS_OK;
}

static kvs_status check_key(kvs_gguf_writer *w, const char *key) {
    if (!w || !key || !*key) return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: NULL or empty key");
    return KVS_OK;
}

kvs_status kvs_gguf_writer_set_u32(kvs_gguf_writer *w, const char *key, uint32_t v) {
    kvs_status st = check_key(w, key);
    if (st) return st;
    bbuf b = {0};
    bb_u32(&b, KVS_GGUF_U32);
    bb_u32(&b, v);
    return put_kv(w, key, &b);
}

kvs_status kvs_gguf_writer_set_f32(kvs_gguf_writer *w, const char *key, float v) {
    kvs_status st = check_key(w, key);
    if (st) return st;
    uint32_t bits;
    memcpy(&bits, &v, 4);
    bbuf b = {0};
    bb_u32(&b, KVS_GGUF_F32);
    bb_u32(&b, bits);
    return put_kv(w, key, &b);
}

kvs_status kvs_gguf_writer_set_str(kvs_gguf_writer *w, const char *key, const char *v) {
    kvs_status st = check_key(w, key);
    if (st) return st;
    if (!v) return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: NULL string value for '%.64s'", key);
    bbuf b = {0};
    bb_u32(&b, KVS_GGUF_STRING);
    bb_str(&b, v, strlen(v));
    return put_kv(w, key, &b);
}

static void put_scalar(bbuf *b, uint32_t type, const kvs_gguf_kv *kv) {
    uint64_t u = 0;
    switch (type) {
    case KVS_GGUF_U8: case KVS_GGUF_U16: case KVS_GGUF_U32: case KVS_GGUF_U64: u = kv->v.u64; break;
    case KVS_GGUF_I8: case KVS_GGUF_I16: case KVS_GGUF_I32: case KVS_GGUF_I64:
        memcpy(&u, &kv->v.i64, 8);
        break;
    case KVS_GGUF_F32: {
        float f = (float)kv->v.f64;
        uint32_t bits;
        memcpy(&bits, &f, 4);
        u = bits;
        break;
    }
    case KVS_GGUF_F64: memcpy(&u, &kv->v.f64, 8); break;
    case KVS_GGUF_BOOL: u = kv->v.b ? 1 : 0; break;
    default: break;
    }
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(u >> (8 * i));
    bb_put(b, x, k_wsize[type]);
}

kvs_status kvs_gguf_writer_copy_kv(kvs_gguf_writer *w, const kvs_gguf_kv *kv) {
    if (!kv) return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: NULL kv");
    kvs_status st = check_key(w, kv->key.s);
    if (st) return st;
    const char *key = kv->key.s;
    uint32_t type = kv->type;
    if (type > KVS_GGUF_F64)
        return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: '%.64s': unknown value type %u", key, type);
    bbuf b = {0};
    bb_u32(&b, type);
    if (type == KVS_GGUF_STRING) {
        if (!kv->v.str.s && kv->v.str.len) {
            kvs_free(b.p);
            return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: '%.64s': NULL string", key);
        }
        bb_str(&b, kv->v.str.s, kv->v.str.len);
    } else if (type == KVS_GGUF_ARRAY) {
        uint32_t et = kv->v.arr.type;
        uint64_t n = kv->v.arr.n;
        if (et == KVS_GGUF_ARRAY || et > KVS_GGUF_F64) {
            kvs_free(b.p);
            return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: '%.64s': bad array element type %u",
                            key, et);
        }
        bool str = et == KVS_GGUF_STRING;
        if (n && (str ? !kv->v.arr.strs : !kv->v.arr.data)) {
            kvs_free(b.p);
            return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: '%.64s': array without elements", key);
        }
        if (!str && n > SIZE_MAX / k_wsize[et]) {
            kvs_free(b.p);
            return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: '%.64s': array too large", key);
        }
        bb_u32(&b, et);
        bb_u64(&b, n);
        if (str) {
            for (uint64_t i = 0; i < n && !b.oom; i++) {
                const kvs_gguf_str *s = &kv->v.arr.strs[i];
                if (!s->s && s->len) {
                    kvs_free(b.p);
                    return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: '%.64s': NULL string element",
                                    key);
                }
                bb_str(&b, s->s, s->len);
            }
        } else {
            bb_put(&b, kv->v.arr.data, (size_t)n * k_wsize[et]);
        }
    } else {
        put_scalar(&b, type, kv);
    }
    return put_kv(w, key, &b);
}

kvs_status kvs_gguf_writer_add_tensor(kvs_gguf_writer *w, const char *name, uint32_t type,
                                      uint32_t n_dims, const int64_t *ne, const void *data,
                                      size_t nbytes) {
    if (!w || !name || !*name || !ne || (!data && nbytes))
        return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: NULL argument or empty tensor name");
    if (n_dims == 0 || n_dims > KVS_GGUF_MAX_DIMS)
        return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: tensor '%.64s': n_dims %u out of range",
                        name, n_dims);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: duplicate tensor name '%.64s'", name);
    wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .nbytes = nbytes};
    uint64_t rows = 1;
    for (uint32_t j = 0; j < n_dims; j++) {
        if (ne[j] <= 0)
            return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: tensor '%.64s': ne[%u] = %lld", name,
                            j, (long long)ne[j]);
        t.ne[j] = ne[j];
        if (j > 0) {
            if (rows > (uint64_t)INT64_MAX / (uint64_t)ne[j])
                return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: tensor '%.64s' too large", name);
            rows *= (uint64_t)ne[j];
        }
    }
    size_t row = kvs_row_bytes(type, ne[0]);
    if (row == 0)
        return kvs_fail(KVS_ERR_INVALID_ARG,
                        "gguf writer: tensor '%.64s': unknown type %u or ne[0] = %lld not a block "
                        "multiple", name, type, (long long)ne[0]);
    if (rows > SIZE_MAX / row || rows * row != nbytes)
        return kvs_fail(KVS_ERR_INVALID_ARG,
                        "gguf writer: tensor '%.64s': %zu bytes given, shape needs %llu", name,
                        nbytes, (unsigned long long)rows * row);
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 16;
        wtensor *p = kvs_realloc(w->tensors, cap * sizeof *p);
        if (!p) return kvs_fail(KVS_ERR_NOMEM, "gguf writer: out of memory");
        w->tensors = p;
        w->cap_tensors = cap;
    }
    t.name = kvs_strdup(name);
    t.data = kvs_malloc(nbytes);
    if (!t.name || !t.data) {
        kvs_free(t.name);
        kvs_free(t.data);
        return kvs_fail(KVS_ERR_NOMEM, "gguf writer: out of memory copying tensor '%.64s'", name);
    }
    memcpy(t.data, data, nbytes);
    w->tensors[w->n_tensors++] = t;
    return KVS_OK;
}

static bool write_pad(FILE *f, uint64_t *pos, uint64_t align) {
    static const uint8_t zeros[256];
    uint64_t pad = (align - *pos % align) % align;
    while (pad > 0) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        if (fwrite(zeros, 1, n, f) != n) return false;
        pad -= n;
        *pos += n;
    }
    return true;
}

kvs_status kvs_gguf_writer_write(kvs_gguf_writer *w, const char *path) {
    if (!w || !path || !*path) return kvs_fail(KVS_ERR_INVALID_ARG, "gguf writer: NULL argument");
    uint64_t align = w->alignment;

    /* header, kvs and tensor infos are encoded in memory first */
    bbuf h = {0};
    bb_put(&h, "GGUF", 4);
    bb_u32(&h, 3);
    bb_u64(&h, w->n_tensors);
    bb_u64(&h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        bb_str(&h, w->kvs[i].key, strlen(w->kvs[i].key));
        bb_put(&h, w->kvs[i].val, w->kvs[i].val_len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        bb_str(&h, t->name, strlen(t->name));
        bb_u32(&h, t->n_dims);
        for (uint32_t j = 0; j < t->n_dims; j++) bb_u64(&h, (uint64_t)t->ne[j]);
        bb_u32(&h, t->type);
        bb_u64(&h, off);
        off += t->nbytes;
        off += (align - off % align) % align;
    }
    if (h.oom) {
        kvs_free(h.p);
        return kvs_fail(KVS_ERR_NOMEM, "gguf writer: out of memory encoding the header");
    }

    kvs_safe_file *sf = NULL;
    kvs_status st = kvs_safe_open(path, &sf);
    if (st != KVS_OK) {
        kvs_free(h.p);
        return kvs_fail(st, "gguf writer: %s", kvs_last_error());
    }
    FILE *f = kvs_safe_stream(sf);
    uint64_t pos = h.len;
    errno = 0;
    bool ok = fwrite(h.p, 1, h.len, f) == h.len;
    kvs_free(h.p);
    ok = ok && write_pad(f, &pos, align);
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        ok = fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
        pos += t->nbytes;
        ok = ok && write_pad(f, &pos, align);
    }
    if (!ok) {
        int e = errno;
        kvs_safe_abort(sf);
        return kvs_fail(KVS_ERR_IO, "gguf writer: writing '%s' failed: %s", path, e ? strerror(e) : "short write");
    }
    st = kvs_safe_commit(sf);
    if (st != KVS_OK) return kvs_fail(st, "gguf writer: %s", kvs_last_error());
    return KVS_OK;
}
