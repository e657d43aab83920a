/* Minimal test harness: CHECK() records a failure with file:line and keeps
 * going; TEST_MAIN_END returns non-zero if anything failed (and says so). */
#ifndef KVS_TEST_UTIL_H
#define KVS_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int g_test_failures = 0;
static int g_test_checks = 0;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        g_test_checks++;                                                            \
        if (!(cond)) {                                                              \
            g_test_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

#define CHECKF(cond, ...)                                                           \
    do {                                                                            \
        g_test_checks++;                                                            \
        if (!(cond)) {                                                              \
            g_test_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fputc('\n', stderr);                                                    \
        }                                                                           \
    } while (0)

static inline int test_finish(const char *name) {
    if (g_test_failures) {
        fprintf(stderr, "FAIL %s: %d of %d checks failed\n", name, g_test_failures, g_test_checks);
        return 1;
    }
    if (g_test_checks == 0) {
        fprintf(stderr, "FAIL %s: no checks ran\n", name);
        return 1;
    }
    printf("ok   %s (%d checks)\n", name, g_test_checks);
    return 0;
}

/* Deterministic xorshift RNG for test inputs. */
static inline uint64_t test_rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}
static inline float test_rng_uniform(uint64_t *s) { /* [-1, 1) */
    return (float)((test_rng_next(s) >> 40) * (2.0 / 16777216.0) - 1.0);
}
static inline float test_rng_normal(uint64_t *s) {
    double u1 = ((test_rng_next(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (test_rng_next(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Whole file, NUL-terminated (malloc'd), or NULL. */
static inline char *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (b) { b[n] = '\0'; *len = (size_t)n; }
    return b;
}

/* Path to the default model if present (KVS_MODEL overrides), else NULL. */
static inline const char *test_model_path(void) {
    const char *p = getenv("KVS_MODEL");
    if (p && *p) return p;
    static const char *def = "models/smollm2-135m-instruct-q4_1.gguf";
    FILE *f = fopen(def, "rb");
    if (!f) return NULL;
    fclose(f);
    return def;
}

#endif
