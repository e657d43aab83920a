/* KIVI-style KV codec: asymmetric min-max integer quantization of keys per
 * channel over a group of G tokens and of values per token with channels
 * grouped by G (KIVI, Liu et al. 2024), plus an orthonormal fast
 * Walsh-Hadamard rotation that spreads outlier channels before quantizing.
 * This file owns the byte layouts below; the sizes equal the CHANNEL formula
 * in kv/kv_scheme.c, so the planner, the cache and the kernels agree.
 *
 * Element codes: `bits` in 1..8 (kvslim uses 2, 3, 4). For a group with f16
 * scale s and f16 minimum m, code q in [0, 2^bits-1] decodes to
 *     x = (float)q * s + m
 * (q*s is exact in f32 since q < 2^8 and s has an 11-bit significand, so
 * this is one rounding, identical with or without FMA).
 *
 * Code streams are packed LSB-first: code number j of a stream occupies bits
 * [j*bits, (j+1)*bits) counting from bit 0 of byte 0 (bit i lives in byte
 * i/8 at position i%8). Unused trailing bits/bytes are zero.
 *
 * KEY GROUP BLOCK  (one KV head, G consecutive tokens x d channels)
 *   bytes = d * (ceil(G*bits/8) + 4)              (kvs_kivi_key_block_bytes)
 *   [0,     2d)   f16 scale[d]   per channel
 *   [2d,    4d)   f16 min[d]     per channel
 *   [4d,  ...)    codes, token-major: code(t, c) is stream element t*d + c,
 *                 i.e. token t's d codes are contiguous (byte aligned when
 *                 d*bits % 8 == 0), followed by zero padding to the block end.
 *                 G*d*bits bits <= 8*d*ceil(G*bits/8), so this always fits.
 *   Token-major codes let an attention kernel fold the per-channel scales
 *   into the query once per block (q'_c = q_c*s_c) and stream token rows.
 *
 * VALUE ROW  (one KV head, one token, d channels in ng = ceil(d/G) groups;
 *             group g = channels [g*G, min(d, (g+1)*G)) )
 *   bytes = ceil(d*bits/8) + ng*4                 (kvs_kivi_value_row_bytes)
 *   [0,     2ng)  f16 scale[ng]
 *   [2ng,   4ng)  f16 min[ng]
 *   [4ng, ...)    codes: code(c) is stream element c, ceil(d*bits/8) bytes.
 *
 * SYMMETRIC VALUE ROW (`sym`: for rotated values, whose coordinates are
 *             centred on zero, the minimum is implied and not stored)
 *   bytes = ceil(d*bits/8) + ng*2
 *   [0,     2ng)  f16 scale[ng]
 *   [2ng, ...)    codes as above; code q decodes to q*s + m with
 *                 m = -s*(2^bits-1)/2 (kvs_kivi_sym_min: exact in f32), i.e.
 *                 the levels (q - (2^bits-1)/2)*s, symmetric around zero.
 *
 * Quantization (scalar; runs once per token/group, not on the read path;
 * the *_clip quantizers may pick a narrower range, see below):
 *   - min/max are taken over the FINITE inputs of the group. The f16 min is
 *     rounded toward -inf and the f16 scale toward +inf, so [min, max] lies
 *     inside the representable range and only float rounding can clip.
 *   - q = clamp(round_half_up((x - m) * (1/s)), 0, 2^bits-1) using the
 *     stored (f16-decoded) m and s. A constant group (max == min) has s = 0, all
 *     codes 0, and round-trips exactly when the constant is an f16 value.
 *   - Non-finite inputs never cause UB: +inf -> code 2^bits-1, -inf and NaN
 *     -> code 0 (they decode to the group's max / min). A group with no
 *     finite input stores s = 0, m = 0. Finite inputs beyond the f16 range
 *     saturate: m >= -65504 and s <= 65504, codes clamp (the top code may
 *     decode slightly above 65504 since s rounds up).
 *
 * Dequantizers: *_ref are the scalar references; the unsuffixed entry points
 * pick the AVX2 twin when kvs_cpu()->avx2 (KVS_FORCE_SCALAR=1 forces the
 * reference). The AVX2 results are bit-identical to the references.
 *
 * Argument contract (callers are internal; violations are not diagnosed):
 * d >= 1, G >= 1, 1 <= bits <= 8, 0 <= t0, nt >= 0, t0 + nt <= G. */
#ifndef KVS_KV_KIVI_H
#define KVS_KV_KIVI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- keys: per channel over G tokens ---- */
size_t kvs_kivi_key_block_bytes(int d, int G, int bits);
/* k: (G, d) f32 rows -> one key group block of kvs_kivi_key_block_bytes(). */
void kvs_kivi_quantize_keys(const float *k, int d, int G, int bits, uint8_t *blk);
/* token rows [t0, t0+nt) of a key block -> out (nt, d) f32 */
void kvs_kivi_dequantize_keys(const uint8_t *blk, int d, int G, int bits, int t0, int nt, float *out);
void kvs_kivi_dequantize_keys_ref(const uint8_t *blk, int d, int G, int bits, int t0, int nt,
                                  float *out);

/* Same block, each channel's range chosen by least squared error over
 * min-max and ranges clipped at the top, the bottom or both (5%..50%):
 * out-of-range inputs clamp to the end codes. Decoders are unchanged. */
void kvs_kivi_quantize_keys_clip(const float *k, int d, int G, int bits, uint8_t *blk);

/* ---- values: per token, channels grouped by G ----
 * `sym` selects the symmetric row (scale only) over the min-max row. */
/* bytes before a value row's codes: ceil(d/G) f16 scales (+ as many minima) */
static inline size_t kvs_kivi_value_codes_offset(int d, int G, bool sym) {
    return (((size_t)d + (size_t)G - 1) / (size_t)G) * (sym ? 2u : 4u);
}
/* the implied minimum of a symmetric group of scale s: -s*(2^bits-1)/2 */
static inline float kvs_kivi_sym_min(float s, int bits) { return -0.5f * (float)((1u << bits) - 1u) * s; }
size_t kvs_kivi_value_row_bytes(int d, int G, int bits, bool sym);
/* v: (d) f32 -> one value row of kvs_kivi_value_row_bytes(). */
void kvs_kivi_quantize_value(const float *v, int d, int G, int bits, bool sym, uint8_t *row);
/* Same row with each group's range chosen by least squared error (as keys). */
void kvs_kivi_quantize_value_clip(const float *v, int d, int G, int bits, bool sym, uint8_t *row);
/* one value row -> out (d) f32 */
void kvs_kivi_dequantize_value(const uint8_t *row, int d, int G, int bits, bool sym, float *out);
void kvs_kivi_dequantize_value_ref(const uint8_t *row, int d, int G, int bits, bool sym, float *out);
/* n value rows, row i at rows + i*row_stride (e.g. one head's rows in a
 * (tokens, n_kv_heads) cache page) -> out (n, d) f32; same results as n
 * single-row calls, with the per-call setup hoisted. */
void kvs_kivi_dequantize_values(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym,
                                float *out);
void kvs_kivi_dequantize_values_ref(const uint8_t *rows, size_t row_stride, int n, int d, int G,
                                    int bits, bool sym, float *out);

/* ---- attention on the codes (decode fast path, attn/) ----
 * Scores of R query rows against tokens [t0, t0 + n) of one key block:
 *     out[r*out_stride + i] = sum_c q[r][c] * key(t0 + i, c)
 * where key = code*s_c + m_c. The fast twin folds the per-channel scale into
 * the query once per call (q_c*s_c) and the minimum into one bias per row
 * (sum_c q_c*m_c), then dots the integer codes (f32 rounding differs from
 * the reference's dequantize-then-dot by a few ulps of the score's terms).
 * fold: R*d floats of scratch for the fast twin (unused by the reference). */
void kvs_kivi_key_scores(const uint8_t *blk, int d, int G, int bits, int t0, int n, const float *const *q,
                         int R, float *out, size_t out_stride, float *fold);
void kvs_kivi_key_scores_ref(const uint8_t *blk, int d, int G, int bits, int t0, int n, const float *const *q,
                             int R, float *out, size_t out_stride);
/* acc[r*acc_stride + c] += sum_i p[r*p_stride + i] * value_i[c] over n value
 * rows (row i at rows + i*row_stride, row_stride >= the row's bytes), each
 * dequantized in registers. */
void kvs_kivi_value_accum(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym, const float *p,
                          size_t p_stride, int R, float *acc, size_t acc_stride);
void kvs_kivi_value_accum_ref(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym,
                              const float *p, size_t p_stride, int R, float *acc, size_t acc_stride);

/* ---- Hadamard rotation ----
 * x <- H * D * x in place, H the orthonormal Walsh-Hadamard matrix of order d
 * (Sylvester ordering, entries +-1/sqrt(d)), D = diag(+-1) drawn from
 * sign_seed (sign_seed == 0: D = I, so the transform is its own inverse).
 * The same seed gives the same D everywhere, so rotating q and k with one
 * seed leaves q.k unchanged. Returns 0, or -1 (x untouched) when d is not a
 * power of two >= 1. */
int kvs_hadamard(float *x, int d, uint64_t sign_seed);
int kvs_hadamard_ref(float *x, int d, uint64_t sign_seed);
/* Inverse: x <- D * H * x (undoes kvs_hadamard with the same seed). */
int kvs_hadamard_inv(float *x, int d, uint64_t sign_seed);
/* Bit i of the result is set when D flips index 64*word + i (0 for seed 0). */
uint64_t kvs_hadamard_sign_word(uint64_t sign_seed, uint64_t word);

/* AVX2 twins (kv/kivi_avx2.c): call only when kvs_cpu()->avx2. Shapes the
 * vector loops do not cover fall back to the references internally. */
void kvs_kivi_dequantize_keys_avx2(const uint8_t *blk, int d, int G, int bits, int t0, int nt,
                                   float *out);
void kvs_kivi_dequantize_value_avx2(const uint8_t *row, int d, int G, int bits, bool sym, float *out);
void kvs_kivi_dequantize_values_avx2(const uint8_t *rows, size_t row_stride, int n, int d, int G,
                                     int bits, bool sym, float *out);
void kvs_kivi_key_scores_avx2(const uint8_t *blk, int d, int G, int bits, int t0, int n, const float *const *q,
                              int R, float *out, size_t out_stride, float *fold);
void kvs_kivi_value_accum_avx2(const uint8_t *rows, size_t row_stride, int n, int d, int G, int bits, bool sym,
                               const float *p, size_t p_stride, int R, float *acc, size_t acc_stride);
int kvs_hadamard_avx2(float *x, int d, uint64_t sign_seed);

#endif
