/* Allocation hook with a fail-after-N switch for out-of-memory tests. */
#include "core/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int64_t g_fail_after = -1;
static _Atomic uint64_t g_count = 0;

/* Counting down by compare-and-swap: two threads allocating at once must
 * not both take the last allowed allocation (a plain load then decrement
 * went past 0 to -1, which switched the hook off mid-run). */
static int should_fail(void) {
    atomic_fetch_add(&g_count, 1);
    int64_t left = atomic_load(&g_fail_after);
    for (;;) {
        if (left < 0) return 0;
        if (left == 0) return 1;
        if (atomic_compare_exchange_weak(&g_fail_after, &left, left - 1)) return 0;
    }
}

void kvs_alloc_fail_after(int64_t n) { atomic_store(&g_fail_after, n); }
uint64_t kvs_alloc_count(void) { return atomic_load(&g_count); }

void *kvs_malloc(size_t n) {
    if (should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *kvs_calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    if (should_fail()) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *kvs_realloc(void *p, size_t n) {
    if (should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

void *kvs_aligned_alloc(size_t n) {
    if (n > SIZE_MAX - 64) return NULL;
    if (should_fail()) return NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) memset(p, 0, rounded ? rounded : 64);
    return p;
}

void kvs_aligned_free(void *p) { free(p); }
void kvs_free(void *p) { free(p); }

char *kvs_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = kvs_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
