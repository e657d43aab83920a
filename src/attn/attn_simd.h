/* Vector primitives the attention kernel is built from, with a scalar, an
 * AVX2 (attn_avx2.c) and an AVX-512 implementation (AVX2 primitives with the
 * fused decode kernel of attn_avx512.c), selected at run time. */
#ifndef KVS_ATTN_SIMD_H
#define KVS_ATTN_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Online-softmax update of R query rows against one tile of T keys/values
 * (f32, row-major: key t at k + t*dk, value t at v + t*ldv, ldv >= dv so a
 * latent tile can serve as its own V). Row r sees tile keys [lo[r], hi[r])
 * (empty ranges skip the row) and keeps its running state at
 * state + r * state_stride as (max, sum, acc[dv]). scratch: R * T floats. */
typedef void (*kvs_attn_tile_fn)(const float *const *qrows, int R, const float *k, const float *v,
                                 const int *lo, const int *hi, float scale, float *state,
                                 size_t state_stride, int dk, int dv, int ldv, float *scratch);

/* n consecutive stored rows of one KV head, read in place by a fused kernel.
 * Block formats: k_type/v_type are kvs_dtypes and row t is at k + t*k_row.
 * Per-channel (KIVI) rows: k_type == v_type == KVS_TYPE_COUNT, k is one key
 * group block (kv/kivi.h) and the rows are its tokens [k_t0, k_t0 + n)
 * (k_t0 + n <= group); values are per-token rows at v + t*v_row. */
typedef struct kvs_attn_rows {
    const uint8_t *k, *v;
    size_t k_row, v_row;
    uint32_t k_type, v_type;
    int n;
    int k_t0, group, k_bits, v_bits; /* per-channel rows only */
    bool v_sym;                       /* per-channel values: symmetric rows (kv/kivi.h) */
    /* q8_0/q4_0/tq keys in a decode: the query rows rounded to int8 (qi[r],
     * dk each, one scale per 32 elements in qs[r]; qrows then hold qi * qs);
     * NULL: score in f32 */
    const int8_t *const *qi;
    const float *const *qs;
    /* with qi: KVS_ATTN_QPREP_BYTES (64-aligned) where a kernel may keep its
     * own form of the rounded query across the calls of one item (the
     * caller clears *qprep_ok when the item starts); NULL: none */
    void *qprep;
    bool *qprep_ok;
    /* block formats: the next chunk's first pf_n K and V rows (same row
     * sizes), prefetched while this chunk computes; NULL: none */
    const uint8_t *pf_k, *pf_v;
    int pf_n;
} kvs_attn_rows;

/* Round a query row to int8 in blocks of 32 (see attn.c): per block
 * qs[b] = max|q| / 127, qi = round(q / qs[b]), qr = qi * qs[b]. Shared by
 * the kernels and the reference. */
void kvs_attn_round_query(const float *q, int d, int8_t *qi, float *qs, float *qr);

/* Online-softmax update of R query rows that all see the same n rows,
 * scoring and accumulating straight from the stored format (no f32 tile).
 * Returns false, touching nothing, when the formats or R are not handled
 * (the caller then converts a tile and uses `tile`). scratch: R * n floats. */
#define KVS_ATTN_FUSED_MAX_ROWS 8 /* query rows (heads per KV head) the fused kernel takes */
#define KVS_ATTN_QPREP_BYTES 4096 /* kvs_attn_rows.qprep: a kernel's prepared query */
#define KVS_ATTN_TQ_VNNI_ROW_BLOCKS 16 /* query rows x 64-element blocks the tq VNNI scores take */
typedef bool (*kvs_attn_fused_fn)(const kvs_attn_rows *rows, const float *const *qrows, int R, float scale,
                                  float *state, size_t state_stride, int dk, int dv, float *scratch);

typedef struct kvs_attn_vec {
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);   /* y += a x   */
    void (*scale)(float *y, float a, int64_t n);                  /* y *= a     */
    /* y[i] = exp(x[i] - m) for i < n; returns the sum of the y[i]. */
    float (*exp_sum)(float *y, const float *x, float m, int64_t n);
    kvs_attn_tile_fn tile;
    kvs_attn_fused_fn fused; /* NULL: no fused path */
} kvs_attn_vec;

/* The tile update written with a kvs_attn_vec's primitives (scalar path and
 * fallback for head sizes the SIMD tile does not handle). */
void kvs_attn_tile_generic(const kvs_attn_vec *vec, const float *const *qrows, int R, const float *k,
                           const float *v, const int *lo, const int *hi, float scale, float *state,
                           size_t state_stride, int dk, int dv, int ldv, float *scratch);

const kvs_attn_vec *kvs_attn_vec_get(void);
const kvs_attn_vec *kvs_attn_vec_scalar(void);
const kvs_attn_vec *kvs_attn_vec_avx2(void);
const kvs_attn_vec *kvs_attn_vec_avx512(void); /* only where kvs_cpu()->avx512 */

/* The AVX-512 fused kernel (attn_avx512.c); hands what it does not take to
 * the AVX2 one. */
bool kvs_attn_fused_avx512(const kvs_attn_rows *rows, const float *const *qrows, int R, float scale, float *state,
                           size_t state_stride, int dk, int dv, float *scratch);
/* Scores sc[r * sc_stride + t] = scale * <q_r, key t> of n rotated-codebook
 * keys of head size dk (a multiple of 64; R * dk / 64 <=
 * KVS_ATTN_TQ_VNNI_ROW_BLOCKS) against R query rows
 * rounded to int8 (qi, qs as in kvs_attn_rows), with VNNI integer dots
 * (attn_tq_vnni.c; only where kvs_cpu()->avx512vnni): rw's k, k_row, n,
 * k_type, qi, qs, prefetch rows, and qprep if set. */
void kvs_attn_tq_scores_vnni(const kvs_attn_rows *rw, int R, int dk, float scale, float *sc, size_t sc_stride);

#endif
