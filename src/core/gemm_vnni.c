/* Many-row (prefill) kernels for AVX-512 VL with VNNI (vpdpbusd / vpdpwssd,
 * 32 vector registers): the gemm_impl.h template with an 8-column x 8-token
 * register tile on 256-bit vectors, and from 16 tokens on a 16-column x
 * 8-token tile on 512-bit vectors (x8-packed weights, K-quant panels). Entered only after
 * kvs_cpu()->avx512vnni (core/dtype.c). */
#define GEMM_VNNI 1
#define GEMM_SFX vnni
#include "core/gemm_impl.h"
