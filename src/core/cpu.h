/* Runtime CPU feature detection; the single place that decides which SIMD
 * paths may run. KVS_FORCE_SCALAR=1 in the environment disables all SIMD
 * and KVS_FORCE_AVX2=1 all AVX-512 (used by tests to exercise the
 * fallbacks). */
#ifndef KVS_CORE_CPU_H
#define KVS_CORE_CPU_H

#include <stdbool.h>

typedef struct kvs_cpu_features {
    bool avx2;     /* AVX2 + FMA + F16C */
    bool avx512;   /* AVX-512 F/BW/VL/DQ */
    bool avx512vnni; /* avx512 plus AVX512_VNNI (vpdpbusd / vpdpwssd) */
} kvs_cpu_features;

const kvs_cpu_features *kvs_cpu(void);
int kvs_cpu_count(void);
const char *kvs_cpu_simd_name(void); /* "avx512", "avx2" or "scalar" */

#endif
