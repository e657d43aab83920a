/* Sequence files (see kv_file.h): writer through core/safe_file, reader over
 * a file image with every count checked before use. */
#include "kv/kv_file.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/safe_file.h"
#include "kv/kv_pool.h"

static const char MAGIC[8] = {'K', 'V', 'S', 'L', 'I', 'M', 'S', 'Q'};

_Static_assert(sizeof(kvs_kv_scheme) % 4 == 0, "kvs_kv_scheme is written as 32-bit fields");

static uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* ---- writing ---------------------------------------------------------------- */

typedef struct writer {
    FILE *f;
    uint64_t hash;
    bool ok;
} writer;

static void put(writer *w, const void *p, size_t n) {
    if (!w->ok || !n) return;
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) w->hash = (w->hash ^ b[i]) * 0x100000001b3ull;
    if (fwrite(p, 1, n, w->f) != n) w->ok = false;
}
static void put_u8(writer *w, uint8_t v) { put(w, &v, 1); }
static void put_u32(writer *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}
static void put_u64(writer *w, uint64_t v) { put_u32(w, (uint32_t)v); put_u32(w, (uint32_t)(v >> 32)); }

kvs_status kvs_kv_file_save(const kvs_kv_cache *c, uint64_t model_id, const kvs_token *tokens, const char *path) {
    if (c->evict)
        return kvs_fail(KVS_ERR_UNSUPPORTED, "save: a cache with token eviction keeps scores outside its pages and "
                        "is not saved");
    if (c->chunk_n) return kvs_fail(KVS_ERR_INVALID_ARG, "save: inside a chunk");
    kvs_safe_file *sf;
    KVS_TRY(kvs_safe_open(path, &sf));
    writer w = {.f = kvs_safe_stream(sf), .hash = 0xcbf29ce484222325ull, .ok = true};
    put(&w, MAGIC, sizeof MAGIC);
    put_u32(&w, KVS_KV_FILE_VERSION);
    put_u32(&w, (uint32_t)c->n_layers);
    put_u64(&w, model_id);
    put_u64(&w, c->n_past);
    put_u32(&w, c->capacity);
    put_u32(&w, (uint32_t)sizeof(kvs_kv_scheme));
    for (int32_t i = 0; i < c->n_layers; i++) {
        uint32_t f[sizeof(kvs_kv_scheme) / 4];
        memcpy(f, &c->layers[i].scheme, sizeof f);
        for (size_t k = 0; k < sizeof f / 4; k++) put_u32(&w, f[k]);
    }
    for (uint64_t t = 0; t < c->n_past; t++) put_u32(&w, (uint32_t)tokens[t]);
    for (int32_t i = 0; i < c->n_layers; i++) {
        const kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        put_u32(&w, L->n_pages_alloc);
        put_u32(&w, L->n_cpages_alloc);
        put_u8(&w, L->resid != NULL);
        put_u64(&w, L->n_stored);
        for (uint32_t p = 0; p < L->n_pages_alloc; p++) put(&w, L->pages[p], L->page_bytes);
        for (uint32_t p = 0; p < L->n_cpages_alloc; p++) put(&w, L->cpages[p], L->cpage_bytes);
        if (L->resid) put(&w, L->resid, kvs_kv_layer_resid_bytes(L));
    }
    put_u64(&w, w.hash);
    if (!w.ok) {
        kvs_safe_abort(sf);
        return kvs_fail(KVS_ERR_IO, "save: cannot write '%s'", path);
    }
    return kvs_safe_commit(sf);
}

/* ---- reading ---------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p, *end;
} reader;

static bool take(reader *r, void *out, size_t n) {
    if ((size_t)(r->end - r->p) < n) return false;
    if (out) memcpy(out, r->p, n);
    r->p += n;
    return true;
}
static bool get_u32(reader *r, uint32_t *v) {
    uint8_t b[4];
    if (!take(r, b, 4)) return false;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return true;
}
static bool get_u64(reader *r, uint64_t *v) {
    uint32_t lo, hi;
    if (!get_u32(r, &lo) || !get_u32(r, &hi)) return false;
    *v = (uint64_t)hi << 32 | lo;
    return true;
}

#define TRUNCATED() kvs_fail(KVS_ERR_FORMAT, "sequence file: truncated")

static kvs_status parse(kvs_kv_cache *c, uint64_t model_id, const uint8_t *data, size_t size, kvs_token **tokens) {
    if (size < sizeof MAGIC + 8 || memcmp(data, MAGIC, sizeof MAGIC))
        return kvs_fail(KVS_ERR_FORMAT, "not a kvslim sequence file (bad magic)");
    /* the checksum covers everything before its 8 bytes */
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size - 8; i++) h = (h ^ data[i]) * 0x100000001b3ull;
    reader r = {data + sizeof MAGIC, data + size - 8}, tail = {data + size - 8, data + size};
    uint64_t stored_hash, file_model, n_past;
    uint32_t version, n_layers, capacity, scheme_bytes;
    if (!get_u64(&tail, &stored_hash)) return TRUNCATED();
    if (!get_u32(&r, &version)) return TRUNCATED();
    if (version != KVS_KV_FILE_VERSION)
        return kvs_fail(KVS_ERR_FORMAT, "sequence file: version %u (this build reads %u)", version, KVS_KV_FILE_VERSION);
    if (stored_hash != h) return kvs_fail(KVS_ERR_FORMAT, "sequence file: checksum mismatch (damaged or truncated)");
    if (!get_u32(&r, &n_layers) || !get_u64(&r, &file_model) || !get_u64(&r, &n_past) || !get_u32(&r, &capacity) ||
        !get_u32(&r, &scheme_bytes))
        return TRUNCATED();
    if (file_model != model_id)
        return kvs_fail(KVS_ERR_FORMAT, "sequence file: written for another model (identity %016llx, this model %016llx)",
                        (unsigned long long)file_model, (unsigned long long)model_id);
    if (n_layers != (uint32_t)c->n_layers || scheme_bytes != sizeof(kvs_kv_scheme))
        return kvs_fail(KVS_ERR_FORMAT, "sequence file: %u layers of %u-byte schemes, this cache has %d of %zu", n_layers,
                        scheme_bytes, c->n_layers, sizeof(kvs_kv_scheme));
    for (int32_t i = 0; i < c->n_layers; i++) {
        uint32_t f[sizeof(kvs_kv_scheme) / 4];
        for (size_t k = 0; k < sizeof f / 4; k++)
            if (!get_u32(&r, &f[k])) return TRUNCATED();
        if (memcmp(f, &c->layers[i].scheme, sizeof f)) {
            kvs_kv_scheme fs;
            memcpy(&fs, f, sizeof fs);
            char a[96], b[96];
            kvs_kv_scheme_describe(&fs, a, sizeof a);
            kvs_kv_scheme_describe(&c->layers[i].scheme, b, sizeof b);
            return kvs_fail(KVS_ERR_FORMAT, "sequence file: layer %d was saved as \"%s\", this cache is \"%s\"", i, a, b);
        }
    }
    if (n_past > capacity || capacity != c->capacity)
        return kvs_fail(KVS_ERR_FORMAT, "sequence file: %llu tokens in a context of %u; this cache's context is %u",
                        (unsigned long long)n_past, capacity, c->capacity);
    if ((size_t)(r.end - r.p) / 4 < n_past) return TRUNCATED();
    kvs_token *t = kvs_malloc(sizeof *t * (n_past ? n_past : 1));
    if (!t) return kvs_fail(KVS_ERR_NOMEM, "sequence file: out of memory");
    for (uint64_t i = 0; i < n_past; i++) {
        uint32_t v;
        get_u32(&r, &v);
        t[i] = (kvs_token)v;
    }
    kvs_status st = KVS_OK;
    for (int32_t i = 0; i < c->n_layers && st == KVS_OK; i++) {
        kvs_kv_layer *L = &c->layers[i];
        if (!L->pages) continue;
        uint32_t np, ncp;
        uint8_t has_resid;
        uint64_t n_stored;
        if (!get_u32(&r, &np) || !get_u32(&r, &ncp) || !take(&r, &has_resid, 1) || !get_u64(&r, &n_stored)) {
            st = TRUNCATED();
            break;
        }
        const uint64_t max_p = div_up(L->slots, L->page_tokens), max_cp = L->cpages ? div_up(L->cslots, L->page_tokens) : 0;
        const bool channel = L->scheme.layout == KVS_KV_LAYOUT_CHANNEL;
        if (np > max_p || ncp > max_cp || has_resid > 1 || (has_resid && !channel) || n_stored > n_past) {
            st = kvs_fail(KVS_ERR_FORMAT, "sequence file: layer %d: %u pages, %u compressed, residual %u, %llu stored "
                          "(at most %llu, %llu)", i, np, ncp, has_resid, (unsigned long long)n_stored,
                          (unsigned long long)max_p, (unsigned long long)max_cp);
            break;
        }
        const size_t rb = has_resid ? kvs_kv_layer_resid_bytes(L) : 0;
        const uint64_t need = (uint64_t)np * L->page_bytes + (uint64_t)ncp * L->cpage_bytes + rb;
        if ((uint64_t)(r.end - r.p) < need) { st = TRUNCATED(); break; }
        if (!kvs_kv_pool_fits(c->pool, need)) {
            st = kvs_fail(KVS_ERR_BUDGET, "sequence file: KV budget of %.1f MiB exhausted loading layer %d",
                          (double)c->pool->budget / 1048576.0, i);
            break;
        }
        for (uint32_t p = 0; p < np && st == KVS_OK; p++) {
            if (!(L->pages[p] = kvs_kv_page_new(c->pool, L->page_bytes))) { st = kvs_fail(KVS_ERR_NOMEM, "sequence file: out of memory"); break; }
            L->n_pages_alloc = p + 1;
            c->bytes += L->page_bytes;
            take(&r, L->pages[p], L->page_bytes);
        }
        for (uint32_t p = 0; p < ncp && st == KVS_OK; p++) {
            if (!(L->cpages[p] = kvs_kv_page_new(c->pool, L->cpage_bytes))) { st = kvs_fail(KVS_ERR_NOMEM, "sequence file: out of memory"); break; }
            L->n_cpages_alloc = p + 1;
            c->bytes += L->cpage_bytes;
            take(&r, L->cpages[p], L->cpage_bytes);
        }
        if (st == KVS_OK && has_resid) {
            if (!(L->resid = (uint16_t *)(void *)kvs_kv_page_new(c->pool, rb))) st = kvs_fail(KVS_ERR_NOMEM, "sequence file: out of memory");
            else { c->bytes += rb; take(&r, L->resid, rb); }
        }
        L->n_stored = n_stored;
    }
    if (st == KVS_OK && r.p != r.end) st = kvs_fail(KVS_ERR_FORMAT, "sequence file: %zu bytes past the last layer", (size_t)(r.end - r.p));
    if (st != KVS_OK) {
        kvs_kv_cache_clear(c);
        kvs_free(t);
        return st;
    }
    c->n_past = n_past;
    *tokens = t;
    return KVS_OK;
}

kvs_status kvs_kv_file_peek(const kvs_kv_cache *like, uint64_t model_id, const char *path, kvs_token **tokens,
                            uint32_t *n_tokens) {
    *tokens = NULL;
    *n_tokens = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return kvs_fail(KVS_ERR_IO, "cannot open sequence file '%s'", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return kvs_fail(KVS_ERR_IO, "sequence file '%s' is not a regular file", path);
    }
    const size_t head = sizeof MAGIC + 4 + 4 + 8 + 8 + 4 + 4 + (size_t)like->n_layers * sizeof(kvs_kv_scheme);
    uint8_t *buf = kvs_malloc(head);
    kvs_status st = KVS_OK;
    if (!buf) st = kvs_fail(KVS_ERR_NOMEM, "sequence file: out of memory");
    else if (pread(fd, buf, head, 0) != (ssize_t)head) st = kvs_fail(KVS_ERR_FORMAT, "sequence file '%s': truncated", path);
    uint64_t n_past = 0;
    if (st == KVS_OK) {
        reader r = {buf, buf + head};
        uint32_t version = 0, n_layers = 0, capacity = 0, scheme_bytes = 0;
        uint64_t model = 0;
        take(&r, NULL, sizeof MAGIC);
        get_u32(&r, &version);
        get_u32(&r, &n_layers);
        get_u64(&r, &model);
        get_u64(&r, &n_past);
        get_u32(&r, &capacity);
        get_u32(&r, &scheme_bytes);
        if (memcmp(buf, MAGIC, sizeof MAGIC) || version != KVS_KV_FILE_VERSION || model != model_id ||
            n_layers != (uint32_t)like->n_layers || scheme_bytes != sizeof(kvs_kv_scheme) ||
            capacity != like->capacity || n_past > capacity)
            st = kvs_fail(KVS_ERR_FORMAT, "sequence file '%s': not one of this model's, schemes and context", path);
        for (int32_t i = 0; st == KVS_OK && i < like->n_layers; i++) {
            uint32_t f[sizeof(kvs_kv_scheme) / 4];
            for (size_t k = 0; k < sizeof f / 4; k++) get_u32(&r, &f[k]);
            if (memcmp(f, &like->layers[i].scheme, sizeof f))
                st = kvs_fail(KVS_ERR_FORMAT, "sequence file '%s': layer %d has another scheme", path, i);
        }
    }
    kvs_token *t = NULL;
    if (st == KVS_OK && !(t = kvs_malloc(sizeof *t * (n_past ? n_past : 1))))
        st = kvs_fail(KVS_ERR_NOMEM, "sequence file: out of memory");
    if (st == KVS_OK && n_past &&
        pread(fd, t, sizeof *t * n_past, (off_t)head) != (ssize_t)(sizeof *t * n_past))
        st = kvs_fail(KVS_ERR_FORMAT, "sequence file '%s': truncated", path);
    for (uint64_t i = 0; st == KVS_OK && i < n_past; i++) { /* little-endian on disk */
        const uint8_t *b = (const uint8_t *)&t[i];
        t[i] = (kvs_token)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
    }
    close(fd);
    kvs_free(buf);
    if (st != KVS_OK) { kvs_free(t); return st; }
    *tokens = t;
    *n_tokens = (uint32_t)n_past;
    return KVS_OK;
}

kvs_status kvs_kv_file_parse(kvs_kv_cache *c, uint64_t model_id, const uint8_t *data, size_t size, kvs_token **tokens) {
    *tokens = NULL;
    if (c->n_past || c->chunk_n) return kvs_fail(KVS_ERR_INVALID_ARG, "sequence file: load into an empty cache");
    if (c->evict) return kvs_fail(KVS_ERR_UNSUPPORTED, "sequence file: caches with token eviction are not saved");
    return parse(c, model_id, data, size, tokens);
}

kvs_status kvs_kv_file_load(kvs_kv_cache *c, uint64_t model_id, const char *path, kvs_token **tokens) {
    *tokens = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a fifo must not block the open */
    if (fd < 0) return kvs_fail(KVS_ERR_IO, "cannot open sequence file '%s'", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return kvs_fail(KVS_ERR_IO, "sequence file '%s' is not a regular file", path);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) { close(fd); return kvs_fail(KVS_ERR_IO, "cannot open sequence file '%s'", path); }
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    kvs_status st = KVS_OK;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            uint8_t *nb = kvs_realloc(buf, cap);
            if (!nb) { st = kvs_fail(KVS_ERR_NOMEM, "sequence file: out of memory reading '%s'", path); break; }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) st = kvs_fail(KVS_ERR_IO, "cannot read sequence file '%s'", path);
            break;
        }
    }
    fclose(f);
    if (st == KVS_OK) st = kvs_kv_file_parse(c, model_id, buf, n, tokens);
    kvs_free(buf);
    return st;
}
