/* The one allocation hook. All library heap memory goes through kvs_malloc /
 * kvs_calloc / kvs_aligned_alloc / kvs_free so tests can make the Nth
 * allocation fail (kvs_alloc_fail_after) and check we fail cleanly. */
#ifndef KVS_CORE_ALLOC_H
#define KVS_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *kvs_malloc(size_t n);
void *kvs_calloc(size_t count, size_t size);  /* checks count*size overflow */
void *kvs_realloc(void *p, size_t n);
/* 64-byte aligned, zeroed; free with kvs_aligned_free. */
void *kvs_aligned_alloc(size_t n);
void kvs_aligned_free(void *p);
void kvs_free(void *p);
char *kvs_strdup(const char *s);

/* Test hook: after `n` more successful allocations, every allocation fails
 * (n < 0 disables). Returns the number of allocations made so far. */
void kvs_alloc_fail_after(int64_t n);
uint64_t kvs_alloc_count(void);

#endif
