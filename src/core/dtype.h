/* Element and block formats (GGML numbering, so GGUF type ids map 1:1) and
 * their trait table: block geometry, dequantizers, quantizers and dot
 * products. Every fast function has a scalar reference twin (*_ref) that the
 * tests compare against; kvs_type_traits_of() returns the best path the CPU
 * supports (chosen once at first use; see core/cpu.h).
 *
 * Dot-product contract: vec_dot(n, &s, w, x) computes s = sum_i w[i]*x[i] for
 * n elements (n a multiple of block_size), where `w` is a row in this type and
 * `x` is the activation row already converted with
 * kvs_type_traits_of(vec_dot_type)->from_float. */
#ifndef KVS_CORE_DTYPE_H
#define KVS_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kvs_dtype {
    KVS_TYPE_F32  = 0,
    KVS_TYPE_F16  = 1,
    KVS_TYPE_Q4_0 = 2,
    KVS_TYPE_Q4_1 = 3,
    KVS_TYPE_Q5_0 = 6,
    KVS_TYPE_Q5_1 = 7,
    KVS_TYPE_Q8_0 = 8,
    KVS_TYPE_Q8_1 = 9,
    KVS_TYPE_Q2_K = 10,
    KVS_TYPE_Q3_K = 11,
    KVS_TYPE_Q4_K = 12,
    KVS_TYPE_Q5_K = 13,
    KVS_TYPE_Q6_K = 14,
    KVS_TYPE_Q8_K = 15,
    KVS_TYPE_I32  = 26, /* integer tables (DeepSeek V4 hash routing); no kernels */
    KVS_TYPE_BF16 = 30,
    KVS_TYPE_MXFP4 = 39, /* OCP MX FP4 (E2M1 x 32, one E8M0 scale): routed experts */
    /* kvslim's own KV row formats (core/tq.h: rotated-codebook blocks of 64);
     * not GGML types: the GGUF reader refuses them (traits.kv_only) */
    KVS_TYPE_TQ2   = 48,
    KVS_TYPE_TQ2_5 = 49,
    KVS_TYPE_TQ3   = 50,
    KVS_TYPE_TQ3_5 = 51,
    KVS_TYPE_TQ4   = 52,
    KVS_TYPE_TQ2J  = 53, /* tq2 + a 1-bit QJL sketch of the residual (core/tq.h) */
    KVS_TYPE_TQ3J  = 54, /* tq3 + the same sketch */
    KVS_TYPE_COUNT = 56, /* upper bound for table sizes; GGUF ids >= this are unknown */
} kvs_dtype;

typedef void (*kvs_to_float_fn)(const void *x, float *y, int64_t n);
typedef void (*kvs_from_float_fn)(const float *x, void *y, int64_t n);
typedef void (*kvs_vec_dot_fn)(int64_t n, float *s, const void *w, const void *x);
/* s[j] = dot(w, x + j*x_stride_bytes) for j = 0..3: one weight row against
 * four activation rows, decoding the weight block once (prefill GEMM). */
typedef void (*kvs_vec_dot_x4_fn)(int64_t n, float *s, const void *w, const void *x,
                                  size_t x_stride_bytes);

/* Per 32-block of a q8_0 / q8_1 activation row, what the many-row kernels
 * read instead of the f16 fields: the scale as a float, and the integer sum
 * of the 32 quants (q8_0) or the stored s = d * sum as a float (q8_1). */
typedef struct kvs_q8_aux {
    float d;
    union { int32_t sum; float s; };
} kvs_q8_aux;

/* Many-row product over a block of weight rows (prefill GEMM):
 *   y[t * y_stride + r] = dot(w row r, x row t)   for r < nr, t < nt
 * w rows are w_stride bytes apart (in this type), x rows x_stride bytes apart
 * (already converted to vec_dot_type). xaux: for types with gemm_xaux, the
 * kvs_q8_aux of every block of each x row (rows xaux_stride entries apart,
 * see kvs_q8_aux_fill), else unused. scratch: kvs_gemm_scratch_bytes(type, n)
 * bytes, 32-byte aligned, owned by the calling thread. The reference is
 * vec_dot_ref for every (t, r) pair (kvs_gemm_ref); the fast kernels agree
 * with it within float reassociation. */
typedef struct kvs_gemm_args {
    int64_t n;                /* elements per row (a block multiple) */
    int64_t nr, nt;           /* weight rows, activation rows */
    const void *w;
    size_t w_stride;
    const void *x;
    size_t x_stride;
    const kvs_q8_aux *xaux;
    size_t xaux_stride;
    float *y;
    size_t y_stride;          /* in floats */
    void *scratch;
} kvs_gemm_args;
typedef void (*kvs_gemm_fn)(const kvs_gemm_args *a);

typedef struct kvs_type_traits {
    const char *name;          /* "q4_K", "f16", ... as ggml spells them    */
    int32_t block_size;        /* elements per block (1 for float types)    */
    size_t type_size;          /* bytes per block                           */
    bool is_quantized;
    kvs_dtype vec_dot_type;    /* format vec_dot expects for activations    */
    kvs_to_float_fn to_float;  kvs_to_float_fn to_float_ref;
    kvs_from_float_fn from_float; kvs_from_float_fn from_float_ref; /* NULL if none */
    kvs_vec_dot_fn vec_dot;    kvs_vec_dot_fn vec_dot_ref;            /* NULL if none */
    kvs_vec_dot_x4_fn vec_dot_x4; /* optional fast path, may be NULL          */
    kvs_gemm_fn gemm;          /* optional many-row kernel, NULL in the reference table */
    bool gemm_xaux;            /* gemm reads kvs_gemm_args.xaux              */
    int32_t gemm_min_rows;     /* fewest activation rows where gemm beats vec_dot */
    kvs_gemm_fn gemm_x8;       /* optional kernel over x8-packed weights (core/repack.h):
                                  w = the group of row 0, w_stride = group bytes */
    int32_t gemm_x8_min_rows;  /* fewest activation rows where it beats vec_dot */
    bool kv_only;              /* a KV cache row format, never a tensor type  */
} kvs_type_traits;

/* Traits with the fastest supported functions, or NULL if `t` is unknown or
 * not implemented. Thread-safe after the first call (call kvs_dtype_init()
 * early to make that trivially true). */
const kvs_type_traits *kvs_type_traits_of(uint32_t t);
/* Same table but with every function pointer set to the scalar reference. */
const kvs_type_traits *kvs_type_traits_ref(uint32_t t);
void kvs_dtype_init(void);
/* Scratch bytes one call of traits->gemm needs for rows of n elements. */
size_t kvs_gemm_scratch_bytes(uint32_t t, int64_t n);
/* The reference many-row product: vec_dot_ref of type t for every pair. */
void kvs_gemm_ref(uint32_t t, const kvs_gemm_args *a);
/* The kvs_q8_aux of each 32-block of a q8_0 or q8_1 row of n elements. */
void kvs_q8_aux_fill(uint32_t t, const void *x, kvs_q8_aux *aux, int64_t n);
const char *kvs_dtype_name(uint32_t t); /* "unknown(N)"-safe: never NULL */
/* Bytes for n elements of type t; 0 if t unknown or n not a block multiple. */
size_t kvs_row_bytes(uint32_t t, int64_t n);

#endif
