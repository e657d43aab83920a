/* Block layouts of the GGML quantized formats (bit-compatible with GGUF files)
 * and the prototypes of the scalar (quant_ref.c) and AVX2 (quant_avx2.c)
 * kernels that core/dtype.c puts into the trait table. Internal to core/ and
 * the quantization tests. */
#ifndef KVS_CORE_QUANT_INTERNAL_H
#define KVS_CORE_QUANT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"

#define KVS_QK   32  /* elements per block of the legacy formats */
#define KVS_QK_K 256 /* elements per super-block of the K formats  */
#define KVS_K_SCALE_SIZE 12

/* All halves are stored as raw IEEE binary16 bits (uint16_t). */
typedef struct { uint16_t d; uint8_t qs[KVS_QK / 2]; } kvs_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[KVS_QK / 2]; } kvs_block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[KVS_QK / 2]; } kvs_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[KVS_QK / 2]; } kvs_block_q5_1;
typedef struct { uint16_t d; int8_t qs[KVS_QK]; } kvs_block_q8_0;
/* MXFP4 (OCP microscaling): 32 E2M1 values, low nibbles elements 0..15, high
 * nibbles 16..31, one shared E8M0 exponent e. As ggml stores it, a nibble
 * indexes kvs_mxfp4_values (twice the E2M1 value) and the block scale is
 * kvs_e8m0_half(e) = 2^(e-128), so x = value * scale exactly. */
typedef struct { uint8_t e; uint8_t qs[KVS_QK / 2]; } kvs_block_mxfp4;
extern const int8_t kvs_mxfp4_values[16];
static inline float kvs_e8m0_half(uint8_t e) {
    /* 2^(e-128): subnormal for e < 2 (bit patterns as ggml_e8m0_to_fp32_half) */
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
/* s = d * sum(qs) */
typedef struct { uint16_t d, s; int8_t qs[KVS_QK]; } kvs_block_q8_1;

/* 16 sub-blocks of 16: 4-bit scale (low) and 4-bit min (high) per sub-block;
 * 2-bit quants: x = d*sc*q - dmin*m. */
typedef struct {
    uint8_t scales[KVS_QK_K / 16];
    uint8_t qs[KVS_QK_K / 4];
    uint16_t d, dmin;
} kvs_block_q2_K;
/* 3-bit: 2 low bits in qs, high bit in hmask (set = +0, clear = -4),
 * 16 6-bit signed scales (offset 32) packed in 12 bytes. */
typedef struct {
    uint8_t hmask[KVS_QK_K / 8];
    uint8_t qs[KVS_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} kvs_block_q3_K;
/* 8 sub-blocks of 32 with 6-bit scale and min each, packed in 12 bytes:
 * x = d*sc*q - dmin*m. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[KVS_K_SCALE_SIZE];
    uint8_t qs[KVS_QK_K / 2];
} kvs_block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[KVS_K_SCALE_SIZE];
    uint8_t qh[KVS_QK_K / 8];
    uint8_t qs[KVS_QK_K / 2];
} kvs_block_q5_K;
/* 16 sub-blocks of 16 with signed 8-bit scales; 6-bit quants offset 32. */
typedef struct {
    uint8_t ql[KVS_QK_K / 2];
    uint8_t qh[KVS_QK_K / 4];
    int8_t scales[KVS_QK_K / 16];
    uint16_t d;
} kvs_block_q6_K;
/* Activation format for the K dots: float scale, bsums = sums of 16 quants. */
typedef struct {
    float d;
    int8_t qs[KVS_QK_K];
    int16_t bsums[KVS_QK_K / 16];
} kvs_block_q8_K;

_Static_assert(sizeof(kvs_block_q4_0) == 18, "q4_0 size");
_Static_assert(sizeof(kvs_block_q4_1) == 20, "q4_1 size");
_Static_assert(sizeof(kvs_block_q5_0) == 22, "q5_0 size");
_Static_assert(sizeof(kvs_block_q5_1) == 24, "q5_1 size");
_Static_assert(sizeof(kvs_block_q8_0) == 34, "q8_0 size");
_Static_assert(sizeof(kvs_block_mxfp4) == 17, "mxfp4 size");
_Static_assert(sizeof(kvs_block_q8_1) == 36, "q8_1 size");
_Static_assert(sizeof(kvs_block_q2_K) == 84, "q2_K size");
_Static_assert(sizeof(kvs_block_q3_K) == 110, "q3_K size");
_Static_assert(sizeof(kvs_block_q4_K) == 144, "q4_K size");
_Static_assert(sizeof(kvs_block_q5_K) == 176, "q5_K size");
_Static_assert(sizeof(kvs_block_q6_K) == 210, "q6_K size");
_Static_assert(sizeof(kvs_block_q8_K) == 292, "q8_K size");

/* Unpacks the 12-byte 6-bit scale/min field of q4_K/q5_K into sc[8], m[8]. */
static inline void kvs_k4_scales(const uint8_t *q, uint8_t *sc, uint8_t *m) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#define KVS_DECL_TYPE(T)                                                              \
    void kvs_##T##_to_float_ref(const void *x, float *y, int64_t n);                  \
    void kvs_##T##_from_float_ref(const float *x, void *y, int64_t n);                \
    void kvs_##T##_vec_dot_ref(int64_t n, float *s, const void *w, const void *x);
KVS_DECL_TYPE(f32)
KVS_DECL_TYPE(f16)
KVS_DECL_TYPE(bf16)
KVS_DECL_TYPE(q4_0)
KVS_DECL_TYPE(q4_1)
KVS_DECL_TYPE(q5_0)
KVS_DECL_TYPE(q5_1)
KVS_DECL_TYPE(q8_0)
KVS_DECL_TYPE(q2_K)
KVS_DECL_TYPE(q3_K)
KVS_DECL_TYPE(q4_K)
KVS_DECL_TYPE(q5_K)
KVS_DECL_TYPE(q6_K)
KVS_DECL_TYPE(mxfp4)
#undef KVS_DECL_TYPE
void kvs_q8_1_to_float_ref(const void *x, float *y, int64_t n);
void kvs_q8_1_from_float_ref(const float *x, void *y, int64_t n);
void kvs_q8_K_to_float_ref(const void *x, float *y, int64_t n);
void kvs_q8_K_from_float_ref(const float *x, void *y, int64_t n);

/* AVX2 kernels (quant_avx2.c): only call when kvs_cpu()->avx2. */
void kvs_f32_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_f16_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_bf16_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q4_0_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q4_1_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q5_0_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q5_1_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q8_0_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_mxfp4_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q4_K_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q5_K_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q6_K_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q2_K_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);
void kvs_q3_K_vec_dot_avx2(int64_t n, float *s, const void *w, const void *x);

void kvs_f32_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_f16_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q4_0_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q4_1_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q8_0_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_mxfp4_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q4_K_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q5_K_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q6_K_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q2_K_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);
void kvs_q3_K_vec_dot_x4_avx2(int64_t n, float *s, const void *w, const void *x, size_t xs);

/* Many-row kernels (gemm_impl.h, built as gemm_avx2.c and gemm_vnni.c),
 * see kvs_gemm_args in core/dtype.h. */
#define KVS_DECL_GEMM(T)                                   \
    void kvs_##T##_gemm_avx2(const kvs_gemm_args *a);      \
    void kvs_##T##_gemm_vnni(const kvs_gemm_args *a);
KVS_DECL_GEMM(f32)
KVS_DECL_GEMM(f16)
KVS_DECL_GEMM(bf16)
KVS_DECL_GEMM(q4_0)
KVS_DECL_GEMM(q4_1)
KVS_DECL_GEMM(q5_0)
KVS_DECL_GEMM(q5_1)
KVS_DECL_GEMM(q8_0)
KVS_DECL_GEMM(mxfp4)
KVS_DECL_GEMM(q2_K)
KVS_DECL_GEMM(q3_K)
KVS_DECL_GEMM(q4_K)
KVS_DECL_GEMM(q5_K)
KVS_DECL_GEMM(q6_K)
/* the same over x8-packed weights (core/repack.h) */
KVS_DECL_GEMM(q4_0_x8)
KVS_DECL_GEMM(q4_1_x8)
KVS_DECL_GEMM(q5_0_x8)
KVS_DECL_GEMM(q5_1_x8)
KVS_DECL_GEMM(q8_0_x8)
#undef KVS_DECL_GEMM
/* The AVX2 (vnni = 0) or VNNI (1) gemm of type t, or NULL; for tests and
 * benchmarks (the trait table holds the one the CPU runs best). */
kvs_gemm_fn kvs_gemm_variant(uint32_t t, int vnni);
/* The same for the kernels over x8-packed weights (core/repack.h). */
kvs_gemm_fn kvs_gemm_x8_variant(uint32_t t, int vnni);
/* Panel bytes the gemm kernels keep per 8 weight rows and block (per element
 * for the float types): see the layouts in gemm_impl.h. */
#define KVS_GEMM_PANEL_LEGACY   288  /* q4_0, q5_0, q8_0, mxfp4 per 32-block */
#define KVS_GEMM_PANEL_LEGACY_M 320  /* q4_1, q5_1 */
#define KVS_GEMM_PANEL_K8      2624  /* q4_K, q5_K per 256-block */
#define KVS_GEMM_PANEL_K16     2880  /* q2_K, q3_K, q6_K */
#define KVS_GEMM_PANEL_FLOAT     32  /* f32, f16, bf16 per element */

void kvs_f16_to_float_avx2(const void *x, float *y, int64_t n);
void kvs_bf16_to_float_avx2(const void *x, float *y, int64_t n);
void kvs_q4_0_to_float_avx2(const void *x, float *y, int64_t n);
void kvs_q4_1_to_float_avx2(const void *x, float *y, int64_t n);
void kvs_q8_0_to_float_avx2(const void *x, float *y, int64_t n);
void kvs_mxfp4_to_float_avx2(const void *x, float *y, int64_t n);
void kvs_q4_K_to_float_avx2(const void *x, float *y, int64_t n);
void kvs_q6_K_to_float_avx2(const void *x, float *y, int64_t n);

void kvs_f16_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_bf16_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_q8_0_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_q8_1_from_float_avx2(const float *x, void *y, int64_t n);
void kvs_q8_K_from_float_avx2(const float *x, void *y, int64_t n);

#endif
