/* Rotated-codebook KV rows (TurboQuant-style; Zandieh et al. 2025, arXiv
 * 2504.19874): a K or V head vector is first rotated by the scheme's
 * orthonormal Hadamard transform with random signs (kv/kivi.h kvs_hadamard,
 * applied by kv/kv_chunk.c: keys and queries alike, values rotated back
 * after attention), which makes every coordinate distributed like a
 * coordinate of a random unit vector times the norm. Each block of 64
 * rotated coordinates is then divided by its RMS and every coordinate is
 * rounded to the nearest centroid of a fixed Lloyd-Max codebook for that
 * distribution (core/tq_tables.h, made by scripts/gen_tq_codebook.py): no
 * calibration, no per-channel statistics. One f16 scale per block is stored:
 * the least-squares fit s = <x, c> / <c, c> of the decoded centroids c to the
 * input x (TurboQuant stores the norm; the fit is the norm with the
 * codebook's shrinkage corrected, never worse in squared error).
 *
 * These are kvs_dtypes (core/dtype.h) of block size 64, so they are row
 * formats of the BLOCK layout: full layers, sliding-window rings and
 * evicted caches all take them, and kvs_row_bytes() sizes them for the
 * scheme formula (kv/kv_scheme.c). They are KV-only: the GGUF reader
 * refuses them as tensor types. A scheme with a tq key format must rotate
 * keys and one with a tq value format must rotate values (kv_scheme.c
 * validates it), since the codebook assumes rotated coordinates.
 *
 * BLOCK (64 elements) = one f16 scale + two sub-blocks of 32 coordinates,
 * sub-block 0 (elements 0..31) at b0 bits, sub-block 1 (32..63) at b1 bits:
 *
 *   type     b0 b1  bytes  bits/element (all-in)
 *   tq2       2  2    18   2.25
 *   tq2.5     3  2    22   2.75
 *   tq3       3  3    26   3.25
 *   tq3.5     4  3    30   3.75
 *   tq4       4  4    34   4.25
 *
 *   [0, 2)     f16 scale s
 *   [2, ...)   sub-block 0, then sub-block 1; a sub-block of b bits is
 *              8 bytes: the low 2 bits of code i at bits [2i, 2i+2) of a
 *                       little-endian uint64 (i = 0..31),
 *              then for b = 3: 4 bytes, bit i of a little-endian uint32 is
 *                       bit 2 of code i;
 *                   for b = 4: 8 bytes, bits [2i, 2i+2) of a little-endian
 *                       uint64 are bits 2..3 of code i.
 *   (sub-block bytes: 8, 12, 16 for 2, 3, 4 bits)
 *
 * Decode: x_i = s * cb_b[code_i] with cb_b the b-bit codebook (ascending).
 * After the rotation all coordinates are alike, so which half gets the extra
 * bit does not matter (the paper's 2.5/3.5-bit settings split channels the
 * same way, by outlier sets).
 *
 * Quantization (runs once per stored row; the AVX2 twin below): sigma = RMS of the finite inputs
 * of the block (double accumulation); code = the nearest centroid of
 * x / sigma (a NaN counts as 0, +-inf take the end codes); s = the
 * least-squares scale of those codes over the finite inputs; then 3 more
 * rounds of codes for x / s and the least-squares s for them (a Lloyd step
 * on the one scale: -8% squared error on Gaussian blocks). s is 0 for an
 * all-zero or non-finite block and saturates to 65504.
 *
 * QJL SKETCH (tq2j, tq3j: the paper's inner-product variant). The block is
 * a tq2 / tq3 block, then the residual r = x - decode(block) (in the rotated
 * domain, 64 coordinates) as an f16 norm g = |r| and 64 sign bits
 * z = sign(S r), S = 8 H D' (H the orthonormal Walsh-Hadamard matrix of
 * order 64, D' = diag(+-1) from the fixed KVS_TQ_QJL_SIGNS: rows of +-1,
 * the structured stand-in for the paper's Gaussian matrix):
 *
 *   type   base  bytes  bits/element (all-in)
 *   tq2j   tq2     28   3.5
 *   tq3j   tq3     36   4.5
 *
 *   [0, base bytes)  the tq block;  then f16 g;  then 8 bytes, bit i
 *                    (byte i / 8, bit i % 8) set when (S r)_i >= 0.
 *
 * QJL estimates <q, r> as sqrt(pi/2)/64 * g * <S q, z>, unbiased for a
 * Gaussian S, and that is linear in q: it is <q, r~> with
 *     r~ = sqrt(pi/2)/8 * g * D' H z,
 * so a row decodes to decode(block) + r~ and every kernel reads it as a
 * vector (no fused decode kernel takes these types: the tile path
 * dequantizes). |r~| = 1.25 g, and E|r - r~|^2 = (pi/2 - 1) g^2 for a
 * Gaussian residual: the sketch removes 43% of the residual's squared error,
 * less than a codebook bit does (tq3's error is about 30% of tq2's), and
 * adds variance that softmax attention amplifies; it is here to be measured
 * (BENCHMARKS.md). A non-finite input contributes no residual.
 *
 * Re-quantizing a decoded block is not always the identity (the scale
 * rounds start from the decoded block's RMS): on Gaussian blocks 0-1.3% of
 * blocks (tq2 .. tq4) come back with a code moved by one cell. Only the
 * shared-window path stores decoded rows again (kv/kv_chunk.c
 * commit_staged, Gemma 4 style sharing); its sharer then reads rows that
 * differ from the ring's in those codes. */
#ifndef KVS_CORE_TQ_H
#define KVS_CORE_TQ_H

#include <stddef.h>
#include <stdint.h>

#define KVS_TQ_BLOCK 64
#define KVS_TQ_SCALE_ROUNDS 4 /* rounds of codes + least-squares scale: Gaussian NMSE -8% vs one (tq4 .0087 -> .0080) */

/* Sub-block bits of a tq dtype (core/dtype.h); 0 for other types. */
int kvs_tq_bits(uint32_t type, int sub);
/* Bytes of one block of a tq dtype (0 for other types). */
size_t kvs_tq_block_bytes(uint32_t type);
/* Byte offset of sub-block `sub` (0 or 1) inside a block. */
size_t kvs_tq_sub_offset(uint32_t type, int sub);
/* The ascending 2^bits-entry codebook for bits 1..4 (NULL otherwise). */
const float *kvs_tq_codebook(int bits);
/* The codebook of bits 2..4 on its int8 grid (the codebooks are snapped to
 * it, scripts/gen_tq_codebook.py): grid[i] = round(cb[i] * C) with
 * C = 127 / max|cb|, zeros past 2^bits; returns C (0 for other bits). The
 * integer-score kernels read centroids as grid[code] / C. */
float kvs_tq_codebook_grid(int bits, int8_t grid[16]);

/* The QJL types: the tq type a block starts with (0 for other types), and
 * the bytes of a block (0 for other types). */
#define KVS_TQ_QJL_SIGNS 0x9E3779B97F4A7C15ull /* D' of the sketch: bit i set, element i negated */
#define KVS_TQ_QJL_GAIN 0.15666426716813f      /* sqrt(pi/2) / 8 */
uint32_t kvs_tq_qjl_base(uint32_t type);
size_t kvs_tq_qjl_block_bytes(uint32_t type);
void kvs_tq2j_to_float_ref(const void *x, float *y, int64_t n);
void kvs_tq3j_to_float_ref(const void *x, float *y, int64_t n);
void kvs_tq2j_from_float_ref(const float *x, void *y, int64_t n);
void kvs_tq3j_from_float_ref(const float *x, void *y, int64_t n);
/* A format of the tq family (tq or QJL): it needs rotated coordinates. */
static inline int kvs_tq_rotated_type(uint32_t type) { return kvs_tq_bits(type, 0) || kvs_tq_qjl_base(type); }

/* Reference codec (dtype trait functions; n a multiple of 64). */
void kvs_tq2_to_float_ref(const void *x, float *y, int64_t n);
void kvs_tq2_5_to_float_ref(const void *x, float *y, int64_t n);
void kvs_tq3_to_float_ref(const void *x, float *y, int64_t n);
void kvs_tq3_5_to_float_ref(const void *x, float *y, int64_t n);
void kvs_tq4_to_float_ref(const void *x, float *y, int64_t n);
void kvs_tq2_from_float_ref(const float *x, void *y, int64_t n);
void kvs_tq2_5_from_float_ref(const float *x, void *y, int64_t n);
void kvs_tq3_from_float_ref(const float *x, void *y, int64_t n);
void kvs_tq3_5_from_float_ref(const float *x, void *y, int64_t n);
void kvs_tq4_from_float_ref(const float *x, void *y, int64_t n);

/* The same quantization with the arithmetic in AVX2 lanes (core/tq_avx2.c):
 * the same codes, float midpoints and scale rounds, the sums in double lanes
 * in another order, so a code at a cell edge can differ (tests/test_tq.c
 * bounds how often); blocks with a zero, infinite or NaN RMS or a non-finite
 * input go to the reference. The dtype table's from_float on AVX2 CPUs. */
void kvs_tq2_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_tq2_5_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_tq3_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_tq3_5_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_tq4_from_float_avx2(const float *x, void *y, int64_t n);

/* Code i (0..31) of a sub-block of `bits` bits starting at p. */
static inline unsigned kvs_tq_code(const uint8_t *p, int bits, int i) {
    unsigned lo = (p[i >> 2] >> (2 * (i & 3))) & 3u;
    if (bits == 3) lo |= ((p[8 + (i >> 3)] >> (i & 7)) & 1u) << 2;
    else if (bits == 4) lo |= ((p[8 + (i >> 2)] >> (2 * (i & 3))) & 3u) << 2;
    return lo;
}

#endif
