/* Compile-time facts of the stored row formats the fused decode kernels
 * read in place (attn_avx2.c, attn_avx512.c, attn_tq_vnni.c): block sizes of
 * the rotated-codebook rows (core/tq.h) as constants the loops fold, the f16
 * block scale, the prefetch of the next chunk's rows and the query row groups
 * of the 16-lane kernels. Include only from files built with F16C (the SIMD
 * kernels). */
#ifndef KVS_ATTN_ROWS_H
#define KVS_ATTN_ROWS_H

#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"

#define KVS_AI static inline __attribute__((always_inline))

KVS_AI float kvs_row_f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

KVS_AI bool kvs_row_is_tq(const uint32_t type) {
    return type == KVS_TYPE_TQ2 || type == KVS_TYPE_TQ2_5 || type == KVS_TYPE_TQ3 || type == KVS_TYPE_TQ3_5 ||
           type == KVS_TYPE_TQ4;
}
/* tq block bytes and sub-block bits (core/tq.h) */
KVS_AI size_t kvs_row_tq_block_bytes(const uint32_t type) {
    return type == KVS_TYPE_TQ2 ? 18 : type == KVS_TYPE_TQ2_5 ? 22 : type == KVS_TYPE_TQ3 ? 26 : type == KVS_TYPE_TQ3_5 ? 30 : 34;
}
KVS_AI int kvs_row_tq_bits0(const uint32_t type) {
    return type == KVS_TYPE_TQ2 ? 2 : type == KVS_TYPE_TQ2_5 || type == KVS_TYPE_TQ3 ? 3 : 4;
}
KVS_AI int kvs_row_tq_bits1(const uint32_t type) {
    return type == KVS_TYPE_TQ2 || type == KVS_TYPE_TQ2_5 ? 2 : type == KVS_TYPE_TQ3 || type == KVS_TYPE_TQ3_5 ? 3 : 4;
}
KVS_AI size_t kvs_row_tq_sub_bytes(const int bits) { return bits == 2 ? 8 : bits == 3 ? 12 : 16; }

/* Rows [t, t + m) at pf (row bytes apart) towards L2: the kernels spread the
 * next chunk's prefetches over their key loop, a few lines per key block.
 * L2, not L1: a chunk of prefetches into L1 (prefetcht0) held the L1 miss
 * slots the kernel's own loads needed and streamed a 2048-key f16 decode at
 * 8.5 GB/s on one core; prefetcht1 lets it reach 14 (bench --attn). */
KVS_AI void kvs_row_prefetch(const uint8_t *pf, size_t row, int t, int m) {
    const char *p = (const char *)(pf + (size_t)t * row);
    for (size_t o = 0; o < (size_t)m * row; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
}

/* The next chunk's rows matching a step's [t0, t0 + m): where they start
 * and how many exist (0: none to ask for). */
KVS_AI const uint8_t *kvs_row_next(const uint8_t *pf, size_t row, int t0) { return pf ? pf + (size_t)t0 * row : NULL; }
KVS_AI int kvs_row_next_n(const uint8_t *pf, int pf_n, int t0, int m) {
    if (!pf || t0 >= pf_n) return 0;
    return pf_n - t0 < m ? pf_n - t0 : m;
}

/* Query rows the 16-lane kernels take in one pass over the keys, from row r0
 * of R: groups of at most 4 (5 -> 3+2, 6 -> 3+3, 7 -> 4+3, 8 -> 4+4). */
KVS_AI int kvs_row_group(int R, int r0) {
    const int left = R - r0;
    if (left <= 4) return left;
    return left == 5 || left == 6 ? 3 : 4;
}

/* Runs CALL(T) with T the row type `type` as a compile-time constant, so a
 * kernel's loops are instantiated once per stored format the fused kernels
 * read (f32 for anything else). */
#define KVS_ROW_TYPE_DISPATCH(type, CALL)                                                                      \
    do {                                                                                                         \
        switch (type) {                                                                                          \
        case KVS_TYPE_F16: CALL(KVS_TYPE_F16); break;                                                            \
        case KVS_TYPE_BF16: CALL(KVS_TYPE_BF16); break;                                                          \
        case KVS_TYPE_Q8_0: CALL(KVS_TYPE_Q8_0); break;                                                          \
        case KVS_TYPE_Q4_0: CALL(KVS_TYPE_Q4_0); break;                                                          \
        case KVS_TYPE_TQ2: CALL(KVS_TYPE_TQ2); break;                                                            \
        case KVS_TYPE_TQ2_5: CALL(KVS_TYPE_TQ2_5); break;                                                        \
        case KVS_TYPE_TQ3: CALL(KVS_TYPE_TQ3); break;                                                            \
        case KVS_TYPE_TQ3_5: CALL(KVS_TYPE_TQ3_5); break;                                                        \
        case KVS_TYPE_TQ4: CALL(KVS_TYPE_TQ4); break;                                                            \
        default: CALL(KVS_TYPE_F32); break;                                                                      \
        }                                                                                                        \
    } while (0)

#endif
