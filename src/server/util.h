/* Small pieces the server's modules share: a growable byte buffer, UTF-8
 * boundaries and repair, constant-time comparison, monotonic time, ids. */
#ifndef KVS_SERVER_UTIL_H
#define KVS_SERVER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct srv_buf {
    char *p;      /* (cap) bytes, NUL-terminated at n when p != NULL */
    size_t n, cap;
    bool oom;     /* an append failed; the buffer keeps what it had */
} srv_buf;

bool srv_buf_put(srv_buf *b, const void *data, size_t n);
bool srv_buf_puts(srv_buf *b, const char *s);
bool srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_buf_free(srv_buf *b);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8
 * sequence which later bytes could still complete (n minus 0..3). */
size_t srv_utf8_complete(const char *s, size_t n);
/* Appends s[0..n) to b with every invalid UTF-8 byte replaced by U+FFFD. */
bool srv_utf8_append(srv_buf *b, const char *s, size_t n);

/* a == b, in time that depends only on the lengths. */
bool srv_ct_equal(const char *a, size_t na, const char *b, size_t nb);

double srv_now(void);          /* CLOCK_MONOTONIC seconds */
uint64_t srv_random_u64(void); /* for ids: getrandom, else time and address */

#endif
