/* CPU feature detection (x86 via GCC builtins; other targets: scalar). */
#include "core/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static kvs_cpu_features g_feat;
static int g_init;

const kvs_cpu_features *kvs_cpu(void) {
    if (!g_init) {
        kvs_cpu_features f = {0};
        const char *force = getenv("KVS_FORCE_SCALAR");
        bool scalar = force && strcmp(force, "0") != 0 && force[0] != '\0';
#if defined(__x86_64__) || defined(__i386__)
        if (!scalar) {
            __builtin_cpu_init();
            unsigned a, b, c, d;
            bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C); /* clang lacks "f16c" here */
            f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
            f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                       __builtin_cpu_supports("avx512dq");
            f.avx512vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
            const char *cap = getenv("KVS_FORCE_AVX2"); /* test the AVX2 kernels on an AVX-512 CPU */
            if (cap && strcmp(cap, "0") != 0 && cap[0] != '\0') f.avx512 = f.avx512vnni = false;
        }
#endif
        g_feat = f;
        g_init = 1;
    }
    return &g_feat;
}

const char *kvs_cpu_simd_name(void) {
    const kvs_cpu_features *f = kvs_cpu();
    return f->avx512 ? "avx512" : f->avx2 ? "avx2" : "scalar";
}

int kvs_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
