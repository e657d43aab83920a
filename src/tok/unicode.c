/* Unicode tables and the BPE pre-tokenizers.
 *
 * Pre-tokenization follows llama.cpp's model: a list of regexes is applied in
 * stages; each stage splits every chunk produced by the previous stage into
 * its matches and the unmatched gaps between them (both kept as chunks).
 * Each regex is implemented by hand as a "match at pos" function over code
 * points, where look-ahead never crosses the end of the current chunk. */
#include "tok/unicode.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "tok/unicode_tables.h"

int kvs_ucat(uint32_t cp) {
    if (cp < 0x80) { /* fast path, same answer as the table */
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return KVS_UCAT_L;
        if (cp >= '0' && cp <= '9') return KVS_UCAT_N;
    }
    size_t lo = 0, hi = KVS_UCAT_N_RANGES;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kvs_ucat_ranges[mid].lo > cp) {
            hi = mid;
        } else if ((kvs_ucat_ranges[mid].hi_cat >> 8) < cp) {
            lo = mid + 1;
        } else {
            return (int)(kvs_ucat_ranges[mid].hi_cat & 0xff);
        }
    }
    return KVS_UCAT_UNDEFINED;
}

bool kvs_uis_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0d);
    if (cp < 0x85) return false;
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

uint32_t kvs_utf8_decode(const uint8_t *s, size_t n, size_t *len) {
    uint8_t c = s[0];
    *len = 1;
    if (c < 0x80) return c;
    size_t need;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
        need = 2; cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        need = 3; cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        need = 4; cp = c & 0x07;
    } else {
        return 0xfffd; /* continuation byte or 0xf8.. */
    }
    if (need > n) return 0xfffd;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0xfffd;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    *len = need;
    return cp;
}

size_t kvs_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* GPT-2: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order. */
static bool byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
}

uint32_t kvs_byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++) n += !byte_is_printable(i);
    return 0x100 + n;
}

int kvs_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100, n = 0;
    for (unsigned b = 0; b < 256; b++) {
        if (!byte_is_printable(b)) {
            if (n == k) return (int)b;
            n++;
        }
    }
    return -1;
}

/* ---- pre-tokenizer ---------------------------------------------------- */

/* Per code point flags: category in the low 3 bits, plus: */
#define F_SPACE 0x10
#define F_VALID 0x80 /* set for every in-range position (out of range reads 0) */

typedef struct pt_ctx {
    const uint32_t *cps; /* (ncp) */
    const uint8_t *fl;   /* (ncp) */
} pt_ctx;

static inline uint8_t fl_at(const pt_ctx *c, size_t i, size_t end) { return i < end ? c->fl[i] : 0; }
static inline bool f_letter(uint8_t f) { return (f & 7) == KVS_UCAT_L; }
static inline bool f_number(uint8_t f) { return (f & 7) == KVS_UCAT_N; }
static inline bool f_space(uint8_t f) { return (f & F_SPACE) != 0; }
/* [^\s\p{L}\p{N}], in range */
static inline bool f_other(uint8_t f) {
    return (f & F_VALID) && !f_space(f) && !f_letter(f) && !f_number(f);
}

typedef size_t (*pt_match_fn)(const pt_ctx *c, size_t pos, size_t end, int arg);

/* \p{N} */
static size_t m_digit(const pt_ctx *c, size_t pos, size_t end, int arg) {
    (void)end; (void)arg;
    return f_number(c->fl[pos]) ? 1 : 0;
}

/* \p{N}+ */
static size_t m_digits(const pt_ctx *c, size_t pos, size_t end, int arg) {
    (void)arg;
    size_t p = pos;
    while (p < end && f_number(c->fl[p])) p++;
    return p - pos;
}

/* [0-9][0-9][0-9] */
static size_t m_three(const pt_ctx *c, size_t pos, size_t end, int arg) {
    (void)arg;
    if (pos + 3 > end) return 0;
    for (size_t i = 0; i < 3; i++)
        if (c->cps[pos + i] < '0' || c->cps[pos + i] > '9') return 0;
    return 3;
}

/* [\p{P}\$\+<=>\^~\|]+ */
static bool is_punct_ext(const pt_ctx *c, size_t i) {
    uint32_t cp = c->cps[i];
    return (c->fl[i] & 7) == KVS_UCAT_P || cp == '$' || cp == '+' || cp == '<' || cp == '=' ||
           cp == '>' || cp == '^' || cp == '~' || cp == '|';
}
static size_t m_punct(const pt_ctx *c, size_t pos, size_t end, int arg) {
    (void)arg;
    size_t p = pos;
    while (p < end && is_punct_ext(c, p)) p++;
    return p - pos;
}

static inline uint32_t ascii_lower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; }

/* Contractions 's 't 're 've 'm 'll 'd (case-insensitive when ci). */
static size_t m_contraction(const pt_ctx *c, size_t pos, size_t end, bool ci) {
    if (c->cps[pos] != '\'' || pos + 1 >= end) return 0;
    uint32_t a = c->cps[pos + 1];
    if (ci) a = ascii_lower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= end) return 0;
    uint32_t b = c->cps[pos + 2];
    if (ci) b = ascii_lower(b);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t m_gpt2(const pt_ctx *c, size_t pos, size_t end, int arg) {
    (void)arg;
    size_t m = m_contraction(c, pos, end, false);
    if (m) return m;
    uint32_t cp = c->cps[pos];
    size_t sp = cp == ' ';
    uint8_t f2 = fl_at(c, pos + sp, end);
    if (f_letter(f2)) {
        size_t p = pos + sp;
        while (f_letter(fl_at(c, p, end))) p++;
        return p - pos;
    }
    if (f_number(f2)) {
        size_t p = pos + sp;
        while (f_number(fl_at(c, p, end))) p++;
        return p - pos;
    }
    if (f_other(f2)) {
        size_t p = pos + sp;
        while (f_other(fl_at(c, p, end))) p++;
        return p - pos;
    }
    size_t nws = 0;
    while (f_space(fl_at(c, pos + nws, end))) nws++;
    if (nws > 1 && pos + nws < end) return nws - 1; /* \s+(?!\S): leave one for the next word */
    if (nws > 0) return nws;
    return 1;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,arg}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t m_llama3(const pt_ctx *c, size_t pos, size_t end, int max_digits) {
    size_t m = m_contraction(c, pos, end, true);
    if (m) return m;
    uint32_t cp = c->cps[pos];
    uint8_t f = c->fl[pos];
    if (!(cp == '\r' || cp == '\n' || f_number(f))) {
        if (f_letter(f) || f_letter(fl_at(c, pos + 1, end))) {
            size_t p = pos + 1;
            while (f_letter(fl_at(c, p, end))) p++;
            return p - pos;
        }
    }
    if (f_number(f)) {
        size_t p = pos;
        while (p < end && f_number(c->fl[p]) && p - pos < (size_t)max_digits) p++;
        return p - pos;
    }
    size_t sp = cp == ' ';
    uint8_t f2 = fl_at(c, pos + sp, end);
    if (f_other(f2) || (sp && f2 == 0)) {
        size_t p = pos + sp;
        while (f_other(fl_at(c, p, end))) p++;
        while (p < end && (c->cps[p] == '\r' || c->cps[p] == '\n')) p++;
        if (p > pos) return p - pos;
    }
    size_t nws = 0, last_rn = 0;
    while (f_space(fl_at(c, pos + nws, end))) {
        uint32_t w = c->cps[pos + nws];
        if (w == '\r' || w == '\n') last_rn = nws + 1;
        nws++;
    }
    if (last_rn) return last_rn;                    /* \s*[\r\n]+ */
    if (nws > 1 && pos + nws < end) return nws - 1; /* \s+(?!\S) */
    if (nws > 0) return nws;
    return 1;
}

typedef struct pt_vec { size_t *v; size_t n, cap; } pt_vec;

static bool vec_push(pt_vec *a, size_t x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        size_t *nv = kvs_realloc(a->v, nc * sizeof *nv);
        if (!nv) return false;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return true;
}

/* One stage: split every chunk of `in` (cp end offsets) into matches and gaps. */
static bool run_stage(const pt_ctx *c, const pt_vec *in, pt_vec *out, pt_match_fn fn, int arg) {
    out->n = 0;
    size_t ini = 0;
    for (size_t k = 0; k < in->n; k++) {
        size_t end = in->v[k];
        size_t pos = ini, gap = ini;
        while (pos < end) {
            size_t m = fn(c, pos, end, arg);
            if (m == 0) {
                pos++;
                continue;
            }
            if (pos > gap && !vec_push(out, pos)) return false;
            pos += m;
            if (!vec_push(out, pos)) return false;
            gap = pos;
        }
        if (gap < end && !vec_push(out, end)) return false;
        ini = end;
    }
    return true;
}

kvs_status kvs_pretokenize(kvs_pretok kind, const char *text, size_t len, size_t **ends,
                           size_t *n_ends) {
    *ends = NULL;
    *n_ends = 0;
    if (len == 0) return KVS_OK;
    const uint8_t *s = (const uint8_t *)text;
    /* cps: (ncp) code points; boff: (ncp + 1) byte offsets; fl: (ncp) flags */
    uint32_t *cps = kvs_malloc(len * sizeof *cps);
    size_t *boff = kvs_malloc((len + 1) * sizeof *boff);
    uint8_t *fl = kvs_malloc(len);
    pt_vec a = {0}, b = {0};
    kvs_status st = KVS_OK;
    if (!cps || !boff || !fl) {
        st = kvs_fail(KVS_ERR_NOMEM, "tokenizer: out of memory pre-tokenizing %zu bytes", len);
        goto done;
    }
    size_t ncp = 0;
    for (size_t i = 0; i < len;) {
        size_t l;
        uint32_t cp = kvs_utf8_decode(s + i, len - i, &l);
        cps[ncp] = cp;
        boff[ncp] = i;
        fl[ncp] = (uint8_t)(F_VALID | kvs_ucat(cp) | (kvs_uis_space(cp) ? F_SPACE : 0));
        ncp++;
        i += l;
    }
    boff[ncp] = len;
    pt_ctx c = {cps, fl};
    if (!vec_push(&a, ncp)) goto nomem;

    struct { pt_match_fn fn; int arg; } stages[4];
    int ns = 0;
    switch (kind) {
    case KVS_PRETOK_GPT2: stages[ns].fn = m_gpt2; stages[ns++].arg = 0; break;
    case KVS_PRETOK_LLAMA3: stages[ns].fn = m_llama3; stages[ns++].arg = 3; break;
    case KVS_PRETOK_QWEN2: stages[ns].fn = m_llama3; stages[ns++].arg = 1; break;
    case KVS_PRETOK_SMOLLM:
        stages[ns].fn = m_digit; stages[ns++].arg = 0;
        stages[ns].fn = m_gpt2; stages[ns++].arg = 0;
        break;
    case KVS_PRETOK_DEFAULT:
        stages[ns].fn = m_punct; stages[ns++].arg = 0;
        stages[ns].fn = m_gpt2; stages[ns++].arg = 0;
        stages[ns].fn = m_digits; stages[ns++].arg = 0;
        stages[ns].fn = m_three; stages[ns++].arg = 0;
        break;
    default:
        st = kvs_fail(KVS_ERR_INTERNAL, "tokenizer: unknown pre-tokenizer kind %d", (int)kind);
        goto done;
    }
    for (int i = 0; i < ns; i++) {
        if (!run_stage(&c, &a, &b, stages[i].fn, stages[i].arg)) goto nomem;
        pt_vec t = a; a = b; b = t;
    }
    for (size_t i = 0; i < a.n; i++) a.v[i] = boff[a.v[i]];
    *ends = a.v;
    *n_ends = a.n;
    a.v = NULL;
    goto done;
nomem:
    st = kvs_fail(KVS_ERR_NOMEM, "tokenizer: out of memory pre-tokenizing %zu bytes", len);
done:
    kvs_free(a.v);
    kvs_free(b.v);
    kvs_free(cps);
    kvs_free(boff);
    kvs_free(fl);
    return st;
}
