/* libFuzzer target for the GGUF reader: parses the input with
 * kvs_gguf_open_memory and, when it opens, walks every kv (scalars, strings,
 * every array element through the accessors, lookups by key) and every
 * tensor (lookup by name, first and last data byte), so ASan/UBSan see any
 * table or pointer the reader exposes that is not actually valid.
 * Built and run by scripts/fuzz_gguf.sh. */
#include <stdint.h>
#include <string.h>

#include "gguf/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvs_gguf *g = NULL;
    if (kvs_gguf_open_memory(data, size, &g) != KVS_OK) {
        if (g) __builtin_trap();               /* out must stay NULL on failure */
        if (!kvs_last_error()[0]) __builtin_trap(); /* failures always explain themselves */
        return 0;
    }
    uint64_t acc = kvs_gguf_version(g) + kvs_gguf_alignment(g) + kvs_gguf_file_size(g);
    for (uint64_t i = 0; i < kvs_gguf_n_kv(g); i++) {
        const kvs_gguf_kv *kv = kvs_gguf_kv_at(g, i);
        if (kvs_gguf_find(g, kv->key.s) != kv) __builtin_trap();
        if (strlen(kv->key.s) != kv->key.len) __builtin_trap();
        acc += (uint64_t)strlen(kvs_gguf_vtype_name(kv->type));
        if (kv->type == KVS_GGUF_STRING) {
            if (kv->v.str.s[kv->v.str.len] != 0) __builtin_trap();
            acc += kv->v.str.len ? (uint8_t)kv->v.str.s[0] : 0;
        } else if (kv->type == KVS_GGUF_ARRAY) {
            for (uint64_t j = 0; j < kv->v.arr.n; j++) {
                if (kv->v.arr.type == KVS_GGUF_STRING) {
                    const kvs_gguf_str *s = &kv->v.arr.strs[j];
                    if (s->s[s->len] != 0) __builtin_trap();
                    acc += s->len;
                } else {
                    acc += (uint64_t)kvs_gguf_arr_int(kv, j);
                    double d = kvs_gguf_arr_float(kv, j);
                    acc += d == d;
                }
            }
        } else {
            uint32_t u32;
            int32_t i32;
            uint64_t u64;
            float f;
            bool b;
            acc += kvs_gguf_get_u32(g, kv->key.s, &u32) + kvs_gguf_get_i32(g, kv->key.s, &i32) +
                   kvs_gguf_get_u64(g, kv->key.s, &u64) + kvs_gguf_get_f32(g, kv->key.s, &f) +
                   kvs_gguf_get_bool(g, kv->key.s, &b);
        }
    }
    for (uint64_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        if (kvs_gguf_find_tensor(g, t->name.s) != t) __builtin_trap();
        if (t->n_dims < 1 || t->n_dims > KVS_GGUF_MAX_DIMS || t->nbytes == 0) __builtin_trap();
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size) __builtin_trap();
        acc += p[0] + p[t->nbytes - 1];
    }
    g_sink = acc;
    kvs_gguf_close(g);
    return 0;
}
