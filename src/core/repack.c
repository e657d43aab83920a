/* The x8 weight layout: packer, unpacker and reference product (see repack.h). */
#include "core/repack.h"

#include <stdlib.h>
#include <string.h>

#include "core/quant_internal.h"

bool kvs_repack_supported(uint32_t type) {
    return type == KVS_TYPE_Q4_0 || type == KVS_TYPE_Q4_1 || type == KVS_TYPE_Q5_0 || type == KVS_TYPE_Q5_1 ||
           type == KVS_TYPE_Q8_0;
}

static size_t block_bytes(uint32_t type) {
    switch (type) {
    case KVS_TYPE_Q4_0: return sizeof(kvs_block_q4_0);
    case KVS_TYPE_Q4_1: return sizeof(kvs_block_q4_1);
    case KVS_TYPE_Q5_0: return sizeof(kvs_block_q5_0);
    case KVS_TYPE_Q5_1: return sizeof(kvs_block_q5_1);
    case KVS_TYPE_Q8_0: return sizeof(kvs_block_q8_0);
    default: return 0;
    }
}

size_t kvs_repack_group_bytes(uint32_t type, int64_t n_in) {
    if (!kvs_repack_supported(type) || n_in <= 0 || n_in % KVS_QK) return 0;
    return (size_t)(n_in / KVS_QK) * 8 * block_bytes(type);
}

size_t kvs_repack_bytes(uint32_t type, int64_t n_in, int64_t n_out) {
    if (n_out <= 0) return 0;
    return (size_t)((n_out + 7) / 8) * kvs_repack_group_bytes(type, n_in);
}

/* Byte offsets inside one record: the m array (q4_1) and the quant vectors. */
static bool has_m(uint32_t type) { return type == KVS_TYPE_Q4_1 || type == KVS_TYPE_Q5_1; }
static size_t qh_offset(uint32_t type) { return has_m(type) ? 32 : 16; }
static bool has_qh(uint32_t type) { return type == KVS_TYPE_Q5_0 || type == KVS_TYPE_Q5_1; }
static size_t quant_offset(uint32_t type) { return qh_offset(type) + (has_qh(type) ? 32 : 0); }
static int n_vectors(uint32_t type) { return type == KVS_TYPE_Q8_0 ? 8 : 4; }

/* Pointers to one row's d, m and qs inside a block of its own layout. */
static void block_fields(uint32_t type, uint8_t *blk, uint16_t **d, uint16_t **m, uint8_t **qh, uint8_t **qs) {
    *m = NULL;
    *qh = NULL;
    switch (type) {
    case KVS_TYPE_Q5_0: {
        kvs_block_q5_0 *b = (kvs_block_q5_0 *)blk;
        *d = &b->d;
        *qh = b->qh;
        *qs = b->qs;
        break;
    }
    case KVS_TYPE_Q5_1: {
        kvs_block_q5_1 *b = (kvs_block_q5_1 *)blk;
        *d = &b->d;
        *m = &b->m;
        *qh = b->qh;
        *qs = b->qs;
        break;
    }
    case KVS_TYPE_Q4_0: {
        kvs_block_q4_0 *b = (kvs_block_q4_0 *)blk;
        *d = &b->d;
        *qs = b->qs;
        break;
    }
    case KVS_TYPE_Q4_1: {
        kvs_block_q4_1 *b = (kvs_block_q4_1 *)blk;
        *d = &b->d;
        *m = &b->m;
        *qs = b->qs;
        break;
    }
    default: {
        kvs_block_q8_0 *b = (kvs_block_q8_0 *)blk;
        *d = &b->d;
        *qs = (uint8_t *)b->qs;
        break;
    }
    }
}

void kvs_repack_x8(uint32_t type, const void *w, size_t row_bytes, int64_t n_in, int64_t n_out, void *dst) {
    const size_t bb = block_bytes(type), rec = 8 * bb, qo = quant_offset(type), gb = kvs_repack_group_bytes(type, n_in);
    const int64_t nb = n_in / KVS_QK;
    const int nv = n_vectors(type);
    uint8_t tmp[sizeof(kvs_block_q8_0)]; /* the largest of the blocks */
    for (int64_t g = 0; g < (n_out + 7) / 8; g++) {
        uint8_t *grp = (uint8_t *)dst + (size_t)g * gb;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *p = grp + (size_t)b * rec;
            memset(p, 0, rec);
            for (int r = 0; r < 8 && g * 8 + r < n_out; r++) {
                memcpy(tmp, (const uint8_t *)w + (size_t)(g * 8 + r) * row_bytes + (size_t)b * bb, bb);
                uint16_t *d, *m;
                uint8_t *qh, *qs;
                block_fields(type, tmp, &d, &m, &qh, &qs);
                memcpy(p + 2 * r, d, 2);
                if (m) memcpy(p + 16 + 2 * r, m, 2);
                if (qh) memcpy(p + qh_offset(type) + 4 * r, qh, 4);
                for (int k = 0; k < nv; k++) memcpy(p + qo + 32 * k + 4 * r, qs + 4 * k, 4);
            }
        }
    }
}

void kvs_unpack_x8_row(uint32_t type, const void *group, int64_t n_in, int r, void *row) {
    const size_t bb = block_bytes(type), rec = 8 * bb, qo = quant_offset(type);
    const int nv = n_vectors(type);
    for (int64_t b = 0; b < n_in / KVS_QK; b++) {
        const uint8_t *p = (const uint8_t *)group + (size_t)b * rec;
        uint8_t *blk = (uint8_t *)row + (size_t)b * bb;
        memset(blk, 0, bb);
        uint16_t *d, *m;
        uint8_t *qh, *qs;
        block_fields(type, blk, &d, &m, &qh, &qs);
        memcpy(d, p + 2 * r, 2);
        if (m) memcpy(m, p + 16 + 2 * r, 2);
        if (qh) memcpy(qh, p + qh_offset(type) + 4 * r, 4);
        for (int k = 0; k < nv; k++) memcpy(qs + 4 * k, p + qo + 32 * k + 4 * r, 4);
    }
}

void kvs_gemm_x8_ref(uint32_t type, const kvs_gemm_args *a) {
    const kvs_type_traits *tr = kvs_type_traits_ref(type);
    uint8_t *row = malloc(kvs_row_bytes(type, a->n));
    if (!row) abort(); /* a test helper: no allocation failure to report */
    for (int64_t r = 0; r < a->nr; r++) {
        const uint8_t *grp = (const uint8_t *)a->w + (size_t)(r / 8) * a->w_stride;
        kvs_unpack_x8_row(type, grp, a->n, (int)(r % 8), row);
        for (int64_t t = 0; t < a->nt; t++)
            tr->vec_dot_ref(a->n, &a->y[(size_t)t * a->y_stride + (size_t)r], row,
                            (const uint8_t *)a->x + (size_t)t * a->x_stride);
    }
    free(row);
}
