/* Many-row (prefill) kernels for AVX2 (+FMA, F16C): the gemm_impl.h template
 * with an 8-column x 4-token register tile. Entered only after
 * kvs_cpu()->avx2 (core/dtype.c). */
#define GEMM_VNNI 0
#define GEMM_SFX avx2
#include "core/gemm_impl.h"
