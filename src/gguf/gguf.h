/* GGUF reader (v2 and v3) and a small writer.
 *
 * The reader maps (or reads) the whole file, validates every structure
 * before exposing it, and rejects hostile input with KVS_ERR_FORMAT and a
 * message naming the problem: bad magic/version, truncation, counts or sizes
 * that overflow, unknown value or tensor types, duplicate keys or tensor
 * names, tensors outside the file or misaligned. After a successful open all
 * accessors are O(1)/O(log n) and never fail on structure.
 *
 * Strings (keys, values, string-array elements, tensor names) are copied into
 * an arena owned by the kvs_gguf and NUL-terminated; `len` is kept too.
 * Numeric array elements stay in the file image (possibly unaligned): read
 * them through the kvs_gguf_arr_* accessors. */
#ifndef KVS_GGUF_H
#define KVS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"

typedef enum kvs_gguf_vtype {
    KVS_GGUF_U8 = 0, KVS_GGUF_I8 = 1, KVS_GGUF_U16 = 2, KVS_GGUF_I16 = 3,
    KVS_GGUF_U32 = 4, KVS_GGUF_I32 = 5, KVS_GGUF_F32 = 6, KVS_GGUF_BOOL = 7,
    KVS_GGUF_STRING = 8, KVS_GGUF_ARRAY = 9, KVS_GGUF_U64 = 10, KVS_GGUF_I64 = 11,
    KVS_GGUF_F64 = 12,
} kvs_gguf_vtype;

typedef struct kvs_gguf_str { const char *s; uint64_t len; } kvs_gguf_str;

typedef struct kvs_gguf_kv {
    kvs_gguf_str key;
    uint32_t type;               /* kvs_gguf_vtype */
    union {
        uint64_t u64; int64_t i64; double f64; bool b;  /* scalars, widened */
        kvs_gguf_str str;
        struct {
            uint32_t type;       /* element type (never ARRAY: nested arrays rejected) */
            uint64_t n;
            const uint8_t *data; /* numeric elements, packed, in the file image */
            kvs_gguf_str *strs;  /* string elements (arena), when type == STRING */
        } arr;
    } v;
} kvs_gguf_kv;

#define KVS_GGUF_MAX_DIMS 4
typedef struct kvs_gguf_tensor {
    kvs_gguf_str name;
    uint32_t n_dims;
    int64_t ne[KVS_GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims = 1 */
    uint32_t type;                 /* kvs_dtype id */
    uint64_t offset;               /* relative to the data section */
    uint64_t nbytes;
    const void *data;              /* into the file image */
} kvs_gguf_tensor;

typedef struct kvs_gguf kvs_gguf;

kvs_status kvs_gguf_open(const char *path, bool use_mmap, kvs_gguf **out);
/* Parse an image already in memory (not copied; must outlive the handle). */
kvs_status kvs_gguf_open_memory(const void *data, size_t size, kvs_gguf **out);
void kvs_gguf_close(kvs_gguf *g);

uint32_t kvs_gguf_version(const kvs_gguf *g);
uint64_t kvs_gguf_alignment(const kvs_gguf *g);
uint64_t kvs_gguf_file_size(const kvs_gguf *g);
/* A 64-bit hash (FNV-1a) of the file's metadata and tensor table: every byte
 * before the tensor data. Names one model for session files. */
uint64_t kvs_gguf_identity(const kvs_gguf *g);

uint64_t kvs_gguf_n_kv(const kvs_gguf *g);
const kvs_gguf_kv *kvs_gguf_kv_at(const kvs_gguf *g, uint64_t i);
const kvs_gguf_kv *kvs_gguf_find(const kvs_gguf *g, const char *key); /* NULL if absent */

/* Typed getters: true if the key exists and converts losslessly (any integer
 * type in range for ints, f32/f64 for floats). *out untouched otherwise. */
bool kvs_gguf_get_u32(const kvs_gguf *g, const char *key, uint32_t *out);
bool kvs_gguf_get_i32(const kvs_gguf *g, const char *key, int32_t *out);
bool kvs_gguf_get_u64(const kvs_gguf *g, const char *key, uint64_t *out);
bool kvs_gguf_get_f32(const kvs_gguf *g, const char *key, float *out);
bool kvs_gguf_get_bool(const kvs_gguf *g, const char *key, bool *out);
const char *kvs_gguf_get_str(const kvs_gguf *g, const char *key); /* NULL if absent/not string */

/* Array element access; i must be < arr.n (checked: returns 0 otherwise). */
int64_t kvs_gguf_arr_int(const kvs_gguf_kv *kv, uint64_t i);
double kvs_gguf_arr_float(const kvs_gguf_kv *kv, uint64_t i);

uint64_t kvs_gguf_n_tensors(const kvs_gguf *g);
const kvs_gguf_tensor *kvs_gguf_tensor_at(const kvs_gguf *g, uint64_t i);
const kvs_gguf_tensor *kvs_gguf_find_tensor(const kvs_gguf *g, const char *name);

const char *kvs_gguf_vtype_name(uint32_t t);

/* ---- writer (fixtures, converted models) ------------------------------ */
typedef struct kvs_gguf_writer kvs_gguf_writer;
kvs_status kvs_gguf_writer_new(kvs_gguf_writer **out);
void kvs_gguf_writer_free(kvs_gguf_writer *w);
kvs_status kvs_gguf_writer_set_u32(kvs_gguf_writer *w, const char *key, uint32_t v);
kvs_status kvs_gguf_writer_set_f32(kvs_gguf_writer *w, const char *key, float v);
kvs_status kvs_gguf_writer_set_str(kvs_gguf_writer *w, const char *key, const char *v);
/* Copies the kv (any type, arrays included) from an open reader. */
kvs_status kvs_gguf_writer_copy_kv(kvs_gguf_writer *w, const kvs_gguf_kv *kv);
/* Tensor data is copied at add time. ne as in kvs_gguf_tensor. */
kvs_status kvs_gguf_writer_add_tensor(kvs_gguf_writer *w, const char *name, uint32_t type,
                                      uint32_t n_dims, const int64_t *ne, const void *data,
                                      size_t nbytes);
/* Write to path via a temporary file + rename (never leaves a partial file). */
kvs_status kvs_gguf_writer_write(kvs_gguf_writer *w, const char *path);

#endif
