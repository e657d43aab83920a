/* The dtype trait table: block geometry plus the kernels for each format.
 * Two tables: g_ref (scalar references only) and g_fast (AVX2 where the CPU
 * has it, else identical to g_ref), filled once by kvs_dtype_init(). */
#include "core/dtype.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/cpu.h"
#include "core/f16.h"
#include "core/quant_internal.h"
#include "core/tq.h"

static kvs_type_traits g_ref[KVS_TYPE_COUNT];
static kvs_type_traits g_fast[KVS_TYPE_COUNT];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#define REF_ENTRY(T, id, nm, bs, sz, q, vdt, has_from)                             \
    g_ref[id] = (kvs_type_traits){                                                 \
        .name = nm, .block_size = bs, .type_size = sz, .is_quantized = q,          \
        .vec_dot_type = vdt,                                                       \
        .to_float = kvs_##T##_to_float_ref, .to_float_ref = kvs_##T##_to_float_ref, \
        .from_float = (has_from) ? kvs_##T##_from_float_ref : NULL,                \
        .from_float_ref = (has_from) ? kvs_##T##_from_float_ref : NULL,            \
        .vec_dot = kvs_##T##_vec_dot_ref, .vec_dot_ref = kvs_##T##_vec_dot_ref,    \
        .vec_dot_x4 = NULL,                                                        \
    }

static void dtype_init_once(void) {
    REF_ENTRY(f32, KVS_TYPE_F32, "f32", 1, 4, false, KVS_TYPE_F32, 1);
    REF_ENTRY(f16, KVS_TYPE_F16, "f16", 1, 2, false, KVS_TYPE_F32, 1);
    REF_ENTRY(bf16, KVS_TYPE_BF16, "bf16", 1, 2, false, KVS_TYPE_F32, 1);
    REF_ENTRY(q4_0, KVS_TYPE_Q4_0, "q4_0", KVS_QK, sizeof(kvs_block_q4_0), true, KVS_TYPE_Q8_0, 1);
    REF_ENTRY(q4_1, KVS_TYPE_Q4_1, "q4_1", KVS_QK, sizeof(kvs_block_q4_1), true, KVS_TYPE_Q8_1, 1);
    REF_ENTRY(q5_0, KVS_TYPE_Q5_0, "q5_0", KVS_QK, sizeof(kvs_block_q5_0), true, KVS_TYPE_Q8_0, 1);
    REF_ENTRY(q5_1, KVS_TYPE_Q5_1, "q5_1", KVS_QK, sizeof(kvs_block_q5_1), true, KVS_TYPE_Q8_1, 1);
    REF_ENTRY(q8_0, KVS_TYPE_Q8_0, "q8_0", KVS_QK, sizeof(kvs_block_q8_0), true, KVS_TYPE_Q8_0, 1);
    REF_ENTRY(q2_K, KVS_TYPE_Q2_K, "q2_K", KVS_QK_K, sizeof(kvs_block_q2_K), true, KVS_TYPE_Q8_K, 0);
    REF_ENTRY(q3_K, KVS_TYPE_Q3_K, "q3_K", KVS_QK_K, sizeof(kvs_block_q3_K), true, KVS_TYPE_Q8_K, 0);
    REF_ENTRY(q4_K, KVS_TYPE_Q4_K, "q4_K", KVS_QK_K, sizeof(kvs_block_q4_K), true, KVS_TYPE_Q8_K, 1);
    REF_ENTRY(q5_K, KVS_TYPE_Q5_K, "q5_K", KVS_QK_K, sizeof(kvs_block_q5_K), true, KVS_TYPE_Q8_K, 1);
    REF_ENTRY(q6_K, KVS_TYPE_Q6_K, "q6_K", KVS_QK_K, sizeof(kvs_block_q6_K), true, KVS_TYPE_Q8_K, 1);
    REF_ENTRY(mxfp4, KVS_TYPE_MXFP4, "mxfp4", KVS_QK, sizeof(kvs_block_mxfp4), true, KVS_TYPE_Q8_0, 1);
    /* integer tables: a GGUF tensor type the loaders read directly (no
     * conversion, no dot product, so never bound as a weight) */
    g_ref[KVS_TYPE_I32] = (kvs_type_traits){
        .name = "i32", .block_size = 1, .type_size = 4, .is_quantized = false, .vec_dot_type = KVS_TYPE_I32,
    };
    /* KV-only row formats (core/tq.h): no dot product, never a tensor */
#define TQ_ENTRY(T, id, nm, bytes)                                                                   \
    g_ref[id] = (kvs_type_traits){                                                                   \
        .name = nm, .block_size = KVS_TQ_BLOCK, .type_size = bytes, .is_quantized = true,            \
        .vec_dot_type = KVS_TYPE_F32, .to_float = kvs_##T##_to_float_ref, .to_float_ref = kvs_##T##_to_float_ref, \
        .from_float = kvs_##T##_from_float_ref, .from_float_ref = kvs_##T##_from_float_ref, .kv_only = true, \
    }
    TQ_ENTRY(tq2, KVS_TYPE_TQ2, "tq2", kvs_tq_block_bytes(KVS_TYPE_TQ2));
    TQ_ENTRY(tq2_5, KVS_TYPE_TQ2_5, "tq2.5", kvs_tq_block_bytes(KVS_TYPE_TQ2_5));
    TQ_ENTRY(tq3, KVS_TYPE_TQ3, "tq3", kvs_tq_block_bytes(KVS_TYPE_TQ3));
    TQ_ENTRY(tq3_5, KVS_TYPE_TQ3_5, "tq3.5", kvs_tq_block_bytes(KVS_TYPE_TQ3_5));
    TQ_ENTRY(tq4, KVS_TYPE_TQ4, "tq4", kvs_tq_block_bytes(KVS_TYPE_TQ4));
    TQ_ENTRY(tq2j, KVS_TYPE_TQ2J, "tq2j", kvs_tq_qjl_block_bytes(KVS_TYPE_TQ2J)); /* with the QJL sketch */
    TQ_ENTRY(tq3j, KVS_TYPE_TQ3J, "tq3j", kvs_tq_qjl_block_bytes(KVS_TYPE_TQ3J));
#undef TQ_ENTRY
    /* activation-only formats: no dot product of their own */
    g_ref[KVS_TYPE_Q8_1] = (kvs_type_traits){
        .name = "q8_1", .block_size = KVS_QK, .type_size = sizeof(kvs_block_q8_1), .is_quantized = true,
        .vec_dot_type = KVS_TYPE_Q8_1,
        .to_float = kvs_q8_1_to_float_ref, .to_float_ref = kvs_q8_1_to_float_ref,
        .from_float = kvs_q8_1_from_float_ref, .from_float_ref = kvs_q8_1_from_float_ref,
    };
    g_ref[KVS_TYPE_Q8_K] = (kvs_type_traits){
        .name = "q8_K", .block_size = KVS_QK_K, .type_size = sizeof(kvs_block_q8_K), .is_quantized = true,
        .vec_dot_type = KVS_TYPE_Q8_K,
        .to_float = kvs_q8_K_to_float_ref, .to_float_ref = kvs_q8_K_to_float_ref,
        .from_float = kvs_q8_K_from_float_ref, .from_float_ref = kvs_q8_K_from_float_ref,
    };

    for (int t = 0; t < KVS_TYPE_COUNT; t++) g_fast[t] = g_ref[t];

#if defined(__x86_64__) || defined(__i386__)
    if (kvs_cpu()->avx2) {
        kvs_type_traits *f = g_fast;
        f[KVS_TYPE_F32].vec_dot = kvs_f32_vec_dot_avx2;
        f[KVS_TYPE_F32].vec_dot_x4 = kvs_f32_vec_dot_x4_avx2;
        f[KVS_TYPE_F16].vec_dot = kvs_f16_vec_dot_avx2;
        f[KVS_TYPE_F16].vec_dot_x4 = kvs_f16_vec_dot_x4_avx2;
        f[KVS_TYPE_F16].to_float = kvs_f16_to_float_avx2;
        f[KVS_TYPE_F16].from_float = kvs_f16_from_float_avx2;
        f[KVS_TYPE_BF16].vec_dot = kvs_bf16_vec_dot_avx2;
        f[KVS_TYPE_BF16].to_float = kvs_bf16_to_float_avx2;
        f[KVS_TYPE_BF16].from_float = kvs_bf16_from_float_avx2;

        f[KVS_TYPE_Q4_0].vec_dot = kvs_q4_0_vec_dot_avx2;
        f[KVS_TYPE_Q4_0].vec_dot_x4 = kvs_q4_0_vec_dot_x4_avx2;
        f[KVS_TYPE_Q4_0].to_float = kvs_q4_0_to_float_avx2;
        f[KVS_TYPE_Q4_1].vec_dot = kvs_q4_1_vec_dot_avx2;
        f[KVS_TYPE_Q4_1].vec_dot_x4 = kvs_q4_1_vec_dot_x4_avx2;
        f[KVS_TYPE_Q4_1].to_float = kvs_q4_1_to_float_avx2;
        f[KVS_TYPE_Q5_0].vec_dot = kvs_q5_0_vec_dot_avx2;
        f[KVS_TYPE_Q5_1].vec_dot = kvs_q5_1_vec_dot_avx2;
        f[KVS_TYPE_Q8_0].vec_dot = kvs_q8_0_vec_dot_avx2;
        f[KVS_TYPE_Q8_0].vec_dot_x4 = kvs_q8_0_vec_dot_x4_avx2;
        f[KVS_TYPE_Q8_0].to_float = kvs_q8_0_to_float_avx2;
        f[KVS_TYPE_Q8_0].from_float = kvs_q8_0_from_float_avx2;
        f[KVS_TYPE_MXFP4].vec_dot = kvs_mxfp4_vec_dot_avx2;
        f[KVS_TYPE_MXFP4].vec_dot_x4 = kvs_mxfp4_vec_dot_x4_avx2;
        f[KVS_TYPE_MXFP4].to_float = kvs_mxfp4_to_float_avx2;
        f[KVS_TYPE_Q8_1].from_float = kvs_q8_1_from_float_avx2;
        f[KVS_TYPE_Q8_K].from_float = kvs_q8_K_from_float_avx2;
        f[KVS_TYPE_TQ2].from_float = kvs_tq2_from_float_avx2;
        f[KVS_TYPE_TQ2_5].from_float = kvs_tq2_5_from_float_avx2;
        f[KVS_TYPE_TQ3].from_float = kvs_tq3_from_float_avx2;
        f[KVS_TYPE_TQ3_5].from_float = kvs_tq3_5_from_float_avx2;
        f[KVS_TYPE_TQ4].from_float = kvs_tq4_from_float_avx2;

        f[KVS_TYPE_Q4_K].vec_dot = kvs_q4_K_vec_dot_avx2;
        f[KVS_TYPE_Q4_K].vec_dot_x4 = kvs_q4_K_vec_dot_x4_avx2;
        f[KVS_TYPE_Q4_K].to_float = kvs_q4_K_to_float_avx2;
        f[KVS_TYPE_Q5_K].vec_dot = kvs_q5_K_vec_dot_avx2;
        f[KVS_TYPE_Q5_K].vec_dot_x4 = kvs_q5_K_vec_dot_x4_avx2;
        f[KVS_TYPE_Q6_K].vec_dot = kvs_q6_K_vec_dot_avx2;
        f[KVS_TYPE_Q6_K].vec_dot_x4 = kvs_q6_K_vec_dot_x4_avx2;
        f[KVS_TYPE_Q6_K].to_float = kvs_q6_K_to_float_avx2;
        f[KVS_TYPE_Q2_K].vec_dot = kvs_q2_K_vec_dot_avx2;
        f[KVS_TYPE_Q2_K].vec_dot_x4 = kvs_q2_K_vec_dot_x4_avx2;
        f[KVS_TYPE_Q3_K].vec_dot = kvs_q3_K_vec_dot_avx2;
        f[KVS_TYPE_Q3_K].vec_dot_x4 = kvs_q3_K_vec_dot_x4_avx2;

        /* many-row kernels; gemm_min_rows: the fewest activation rows where
         * they beat the per-row dots (bench_gemm, per ISA: a panel costs
         * about 2 rows of kernel work for the 32-blocks, 10 for the
         * K-quants, and the float types have good 4-row dots) */
        const bool vnni = kvs_cpu()->avx512vnni;
#define GEMM(T, ID, aux, rows_avx2, rows_vnni)                                                  \
    (f[ID].gemm = vnni ? kvs_##T##_gemm_vnni : kvs_##T##_gemm_avx2, f[ID].gemm_xaux = (aux), \
     f[ID].gemm_min_rows = vnni ? (rows_vnni) : (rows_avx2))
        GEMM(f32, KVS_TYPE_F32, false, 32, 16);
        GEMM(f16, KVS_TYPE_F16, false, 32, 16);
        GEMM(bf16, KVS_TYPE_BF16, false, 16, 16);
        GEMM(q4_0, KVS_TYPE_Q4_0, true, 2, 2);
        GEMM(q4_1, KVS_TYPE_Q4_1, true, 3, 3);
        GEMM(q5_0, KVS_TYPE_Q5_0, true, 2, 2);
        GEMM(q5_1, KVS_TYPE_Q5_1, true, 2, 2);
        GEMM(q8_0, KVS_TYPE_Q8_0, true, 4, 2);
        GEMM(mxfp4, KVS_TYPE_MXFP4, true, 2, 2); /* q5_0's panel path; not timed separately */
        GEMM(q2_K, KVS_TYPE_Q2_K, false, 12, 6);
        /* over x8-packed weights there is no panel to amortize: faster than the
         * per-row dots from one row on (bench_gemm) */
        for (uint32_t t = 0; t < KVS_TYPE_COUNT; t++)
            if ((f[t].gemm_x8 = kvs_gemm_x8_variant(t, vnni))) f[t].gemm_x8_min_rows = 1;
        GEMM(q3_K, KVS_TYPE_Q3_K, false, 12, 6);
        GEMM(q4_K, KVS_TYPE_Q4_K, false, 16, 12);
        GEMM(q5_K, KVS_TYPE_Q5_K, false, 12, 6);
        GEMM(q6_K, KVS_TYPE_Q6_K, false, 8, 6);
#undef GEMM
    }
#endif
}

void kvs_dtype_init(void) { pthread_once(&g_once, dtype_init_once); }

const kvs_type_traits *kvs_type_traits_of(uint32_t t) {
    kvs_dtype_init();
    if (t >= KVS_TYPE_COUNT || !g_fast[t].name) return NULL;
    return &g_fast[t];
}

const kvs_type_traits *kvs_type_traits_ref(uint32_t t) {
    kvs_dtype_init();
    if (t >= KVS_TYPE_COUNT || !g_ref[t].name) return NULL;
    return &g_ref[t];
}

const char *kvs_dtype_name(uint32_t t) {
    const kvs_type_traits *tr = kvs_type_traits_ref(t);
    if (tr) return tr->name;
    static _Thread_local char buf[32];
    snprintf(buf, sizeof buf, "unknown(%u)", t);
    return buf;
}

size_t kvs_row_bytes(uint32_t t, int64_t n) {
    const kvs_type_traits *tr = kvs_type_traits_ref(t);
    if (!tr || n < 0 || n % tr->block_size) return 0;
    return (size_t)(n / tr->block_size) * tr->type_size;
}

size_t kvs_gemm_scratch_bytes(uint32_t t, int64_t n) {
    const kvs_type_traits *tr = kvs_type_traits_ref(t);
    if (!tr || n <= 0 || n % tr->block_size) return 0;
    const size_t nb = (size_t)(n / tr->block_size);
    switch (t) {
    case KVS_TYPE_F32: case KVS_TYPE_F16: case KVS_TYPE_BF16: return nb * KVS_GEMM_PANEL_FLOAT;
    case KVS_TYPE_Q4_0: case KVS_TYPE_Q5_0: case KVS_TYPE_Q8_0: case KVS_TYPE_MXFP4: return nb * KVS_GEMM_PANEL_LEGACY;
    case KVS_TYPE_Q4_1: case KVS_TYPE_Q5_1: return nb * KVS_GEMM_PANEL_LEGACY_M;
    /* K-quants: two panels (16 rows) for the VNNI 16-column tile */
    case KVS_TYPE_Q4_K: case KVS_TYPE_Q5_K: return 2 * nb * KVS_GEMM_PANEL_K8;
    case KVS_TYPE_Q2_K: case KVS_TYPE_Q3_K: case KVS_TYPE_Q6_K: return 2 * nb * KVS_GEMM_PANEL_K16;
    default: return 0;
    }
}

void kvs_gemm_ref(uint32_t t, const kvs_gemm_args *a) {
    const kvs_type_traits *tr = kvs_type_traits_ref(t);
    for (int64_t i = 0; i < a->nt; i++)
        for (int64_t r = 0; r < a->nr; r++)
            tr->vec_dot_ref(a->n, &a->y[(size_t)i * a->y_stride + (size_t)r],
                            (const uint8_t *)a->w + (size_t)r * a->w_stride,
                            (const uint8_t *)a->x + (size_t)i * a->x_stride);
}

void kvs_q8_aux_fill(uint32_t t, const void *x, kvs_q8_aux *aux, int64_t n) {
    if (t == KVS_TYPE_Q8_1) {
        const kvs_block_q8_1 *b = x;
        for (int64_t i = 0; i < n / KVS_QK; i++) {
            aux[i].d = kvs_f16_to_f32(b[i].d);
            aux[i].s = kvs_f16_to_f32(b[i].s);
        }
        return;
    }
    const kvs_block_q8_0 *b = x;
    for (int64_t i = 0; i < n / KVS_QK; i++) {
        int32_t sum = 0;
        for (int j = 0; j < KVS_QK; j++) sum += b[i].qs[j];
        aux[i].d = kvs_f16_to_f32(b[i].d);
        aux[i].sum = sum;
    }
}

kvs_gemm_fn kvs_gemm_x8_variant(uint32_t t, int vnni) {
    switch (t) {
    case KVS_TYPE_Q4_0: return vnni ? kvs_q4_0_x8_gemm_vnni : kvs_q4_0_x8_gemm_avx2;
    case KVS_TYPE_Q4_1: return vnni ? kvs_q4_1_x8_gemm_vnni : kvs_q4_1_x8_gemm_avx2;
    case KVS_TYPE_Q5_0: return vnni ? kvs_q5_0_x8_gemm_vnni : kvs_q5_0_x8_gemm_avx2;
    case KVS_TYPE_Q5_1: return vnni ? kvs_q5_1_x8_gemm_vnni : kvs_q5_1_x8_gemm_avx2;
    case KVS_TYPE_Q8_0: return vnni ? kvs_q8_0_x8_gemm_vnni : kvs_q8_0_x8_gemm_avx2;
    default: return NULL;
    }
}

kvs_gemm_fn kvs_gemm_variant(uint32_t t, int vnni) {
#define V(T) return vnni ? kvs_##T##_gemm_vnni : kvs_##T##_gemm_avx2
    switch (t) {
    case KVS_TYPE_F32: V(f32);
    case KVS_TYPE_F16: V(f16);
    case KVS_TYPE_BF16: V(bf16);
    case KVS_TYPE_Q4_0: V(q4_0);
    case KVS_TYPE_Q4_1: V(q4_1);
    case KVS_TYPE_Q5_0: V(q5_0);
    case KVS_TYPE_Q5_1: V(q5_1);
    case KVS_TYPE_Q8_0: V(q8_0);
    case KVS_TYPE_MXFP4: V(mxfp4);
    case KVS_TYPE_Q2_K: V(q2_K);
    case KVS_TYPE_Q3_K: V(q3_K);
    case KVS_TYPE_Q4_K: V(q4_K);
    case KVS_TYPE_Q5_K: V(q5_K);
    case KVS_TYPE_Q6_K: V(q6_K);
    default: return NULL;
    }
#undef V
}
