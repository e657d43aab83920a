/* Byte buffer, UTF-8 repair, constant-time compare, clock; see util.h. */
#include "server/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

bool srv_buf_put(srv_buf *b, const void *data, size_t n) {
    if (b->oom) return false;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = true; return false; }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

bool srv_buf_puts(srv_buf *b, const char *s) { return srv_buf_put(b, s, strlen(s)); }

bool srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return false;
    if ((size_t)n < sizeof tmp) return srv_buf_put(b, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) { b->oom = true; return false; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    bool ok = srv_buf_put(b, big, (size_t)n);
    free(big);
    return ok;
}

void srv_buf_free(srv_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Length of the sequence a lead byte opens (0: not a lead byte). */
static int utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return 2;
    if (c >= 0xe0 && c <= 0xef) return 3;
    if (c >= 0xf0 && c <= 0xf4) return 4;
    return 0;
}

/* Bytes of a valid sequence at s (n available), or 0. */
static int utf8_valid(const unsigned char *s, size_t n) {
    int l = utf8_len(s[0]);
    if (!l || (size_t)l > n) return 0;
    for (int i = 1; i < l; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (l == 3) {
        if (s[0] == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
        if (s[0] == 0xed && s[1] > 0x9f) return 0; /* surrogates */
    }
    if (l == 4) {
        if (s[0] == 0xf0 && s[1] < 0x90) return 0;
        if (s[0] == 0xf4 && s[1] > 0x8f) return 0;
    }
    return l;
}

size_t srv_utf8_complete(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    /* find the last lead byte within the last 3 bytes */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = u[n - back];
        if ((c & 0xc0) == 0x80) continue; /* continuation: look further back */
        int l = utf8_len(c);
        if (l > (int)back) {
            for (size_t i = 1; i < back; i++)
                if ((u[n - back + i] & 0xc0) != 0x80) return n; /* already broken: nothing to wait for */
            return n - back;
        }
        return n;
    }
    return n;
}

bool srv_utf8_append(srv_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        int l = utf8_valid(u + i, n - i);
        if (l) { i += (size_t)l; continue; }
        if (!srv_buf_put(b, s + run, i - run) || !srv_buf_put(b, "\xef\xbf\xbd", 3)) return false;
        i++;
        run = i;
    }
    return srv_buf_put(b, s + run, n - run);
}

bool srv_ct_equal(const char *a, size_t na, const char *b, size_t nb) {
    /* compare against b's length always, so the time does not reveal a prefix */
    volatile unsigned char d = (unsigned char)(na != nb);
    for (size_t i = 0; i < nb; i++) d |= (unsigned char)((i < na ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return d == 0;
}

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint64_t srv_random_u64(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v) return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&v;
    return v;
}
