/* Weights repacked at load for the many-row kernels (the "x8" layout): the
 * 32-blocks of 8 consecutive rows interleaved so that one 32-byte load holds
 * 4 elements of each of the 8 rows, the order the register tiles of
 * core/gemm_impl.h consume. A tile then reads the weights straight from the
 * copy, with no per-call panel to decode and transpose (that panel is what
 * makes a gemm over a few activation rows, as in batched decode, barely
 * faster than per-row dots). This file owns the layout, the packer and the
 * reference product over it; the memory-mapped file is never written.
 *
 * Types: q4_0, q4_1, q5_0, q5_1, q8_0. For rows r0..r0+7 of a group and
 * block b, a record of exactly 8 x the type's block bytes:
 *   f16 d[8]         one per row (16 B)
 *   f16 m[8]         q4_1 and q5_1 only (16 B)
 *   qh               q5_0 and q5_1 only: 32 B, dword r = row r's qh (the fifth
 *                    bit of element j is its bit j)
 *   quant vectors    q4_*, q5_*: 4 x 32 B; vector k byte 4r+i = row r's qs[4k+i],
 *                    so its low nibbles are elements 4k+i and its high
 *                    nibbles elements 16+4k+i of row r;
 *                    q8_0: 8 x 32 B; vector k byte 4r+i = row r's qs[4k+i].
 * A group's records follow block order, groups follow row order; a last group
 * of fewer than 8 rows is padded with zero blocks (d = 0). */
#ifndef KVS_CORE_REPACK_H
#define KVS_CORE_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

bool kvs_repack_supported(uint32_t type);
/* Bytes of one group of 8 rows of n_in elements (0 when unsupported). */
size_t kvs_repack_group_bytes(uint32_t type, int64_t n_in);
/* Bytes of the whole copy of n_out rows: ceil(n_out / 8) groups. */
size_t kvs_repack_bytes(uint32_t type, int64_t n_in, int64_t n_out);
/* Packs n_out rows (row_bytes apart) into dst (kvs_repack_bytes of it). */
void kvs_repack_x8(uint32_t type, const void *w, size_t row_bytes, int64_t n_in, int64_t n_out, void *dst);
/* Row r (< 8) of a packed group back in the type's own block layout. */
void kvs_unpack_x8_row(uint32_t type, const void *group, int64_t n_in, int r, void *row);
/* The reference product over packed weights: a->w is the group holding row 0
 * of the nr rows, a->w_stride the group bytes; each row is unpacked and dotted
 * with vec_dot_ref (kvs_gemm_ref's arithmetic). */
void kvs_gemm_x8_ref(uint32_t type, const kvs_gemm_args *a);

#endif
