/* GGUF reader/writer: round trips of every value type (scalars, arrays of
 * each type, string arrays incl. a 100k-entry vocab), tensors, v2 files and
 * custom alignment; a hostile set (one corruption per case, exact status and
 * message); every truncated prefix; fail-the-Nth-allocation over open and
 * write; writer atomicity; and the real SmolLM2 file when present.
 *
 * `test_gguf --seeds DIR` writes a few small valid files for the fuzzer's
 * seed corpus (scripts/fuzz_gguf.sh) and exits. */
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "gguf/gguf.h"
#include "test_util.h"

/* ---- tiny byte builder for hand-made (possibly hostile) images ---------- */

typedef struct tb {
    uint8_t *p;
    size_t len, cap;
} tb;

static void tb_raw(tb *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void tb_u8(tb *b, uint8_t v) { tb_raw(b, &v, 1); }
static void tb_u32(tb *b, uint32_t v) {
    for (int i = 0; i < 4; i++) tb_u8(b, (uint8_t)(v >> (8 * i)));
}
static void tb_u64(tb *b, uint64_t v) {
    for (int i = 0; i < 8; i++) tb_u8(b, (uint8_t)(v >> (8 * i)));
}
static void tb_str(tb *b, const char *s) {
    tb_u64(b, strlen(s));
    tb_raw(b, s, strlen(s));
}
static void tb_header(tb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    tb_raw(b, "GGUF", 4);
    tb_u32(b, version);
    tb_u64(b, n_tensors);
    tb_u64(b, n_kv);
}
static void tb_kv_u32(tb *b, const char *k, uint32_t v) {
    tb_str(b, k);
    tb_u32(b, KVS_GGUF_U32);
    tb_u32(b, v);
}
static void tb_kv_str(tb *b, const char *k, const char *v) {
    tb_str(b, k);
    tb_u32(b, KVS_GGUF_STRING);
    tb_str(b, v);
}
static void tb_tensor(tb *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                      uint64_t off) {
    tb_str(b, name);
    tb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) tb_u64(b, (uint64_t)ne[i]);
    tb_u32(b, type);
    tb_u64(b, off);
}
static void tb_pad(tb *b, size_t a) {
    while (b->len % a) tb_u8(b, 0);
}
static void tb_fill(tb *b, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) tb_u8(b, (uint8_t)(seed + i * 7));
}
static void put_u32_at(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64_at(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The base image: 4 kvs, 2 tensors; offsets of every patchable field. */
typedef struct base_img {
    tb b;
    size_t o_version, o_ntensors, o_nkv;
    size_t o_key0_len, o_key0, o_type1, o_val0_len;
    size_t o_arr_type, o_arr_n, o_str_elem1_len;
    size_t o_farr_type, o_farr_n;
    size_t o_t0_name_len, o_t0_ndims, o_t0_ne0, o_t0_ne1, o_t0_type, o_t0_off;
    size_t o_t1_ndims, o_t1_ne0, o_t1_type, o_t1_off;
    size_t data_off, data_end;
} base_img;

static void build_base(base_img *im, uint32_t version) {
    memset(im, 0, sizeof *im);
    tb *b = &im->b;
    tb_raw(b, "GGUF", 4);
    im->o_version = b->len;
    tb_u32(b, version);
    im->o_ntensors = b->len;
    tb_u64(b, 2);
    im->o_nkv = b->len;
    tb_u64(b, 4);
    /* kv0: string */
    im->o_key0_len = b->len;
    tb_u64(b, strlen("general.architecture"));
    im->o_key0 = b->len;
    tb_raw(b, "general.architecture", strlen("general.architecture"));
    tb_u32(b, KVS_GGUF_STRING);
    im->o_val0_len = b->len;
    tb_str(b, "llama");
    /* kv1: u32 */
    tb_str(b, "a.u32");
    im->o_type1 = b->len;
    tb_u32(b, KVS_GGUF_U32);
    tb_u32(b, 7);
    /* kv2: string array */
    tb_str(b, "tok.tokens");
    tb_u32(b, KVS_GGUF_ARRAY);
    im->o_arr_type = b->len;
    tb_u32(b, KVS_GGUF_STRING);
    im->o_arr_n = b->len;
    tb_u64(b, 3);
    tb_str(b, "a");
    im->o_str_elem1_len = b->len;
    tb_str(b, "bc");
    tb_str(b, "");
    /* kv3: f32 array */
    tb_str(b, "tok.scores");
    tb_u32(b, KVS_GGUF_ARRAY);
    im->o_farr_type = b->len;
    tb_u32(b, KVS_GGUF_F32);
    im->o_farr_n = b->len;
    tb_u64(b, 3);
    float fs[3] = {1.0f, -2.5f, 3.25f};
    for (int i = 0; i < 3; i++) {
        uint32_t bits;
        memcpy(&bits, &fs[i], 4);
        tb_u32(b, bits);
    }
    /* t0: f32 (4, 2) at 0 -> 32 bytes */
    im->o_t0_name_len = b->len;
    tb_str(b, "w.f32");
    im->o_t0_ndims = b->len;
    tb_u32(b, 2);
    im->o_t0_ne0 = b->len;
    tb_u64(b, 4);
    im->o_t0_ne1 = b->len;
    tb_u64(b, 2);
    im->o_t0_type = b->len;
    tb_u32(b, KVS_TYPE_F32);
    im->o_t0_off = b->len;
    tb_u64(b, 0);
    /* t1: q8_0 (32) at 32 -> 34 bytes */
    tb_str(b, "w.q8");
    im->o_t1_ndims = b->len;
    tb_u32(b, 1);
    im->o_t1_ne0 = b->len;
    tb_u64(b, 32);
    im->o_t1_type = b->len;
    tb_u32(b, KVS_TYPE_Q8_0);
    im->o_t1_off = b->len;
    tb_u64(b, 32);
    tb_pad(b, 32);
    im->data_off = b->len;
    tb_fill(b, 32, 1);
    tb_fill(b, 34, 99);
    im->data_end = b->len;
    tb_pad(b, 32);
}

/* Opens an image and checks it fails with `want` and a message containing `needle`. */
static void expect_fail_img(const char *label, const uint8_t *p, size_t n, kvs_status want,
                            const char *needle) {
    kvs_gguf *g = (kvs_gguf *)0x1;
    kvs_status st = kvs_gguf_open_memory(p, n, &g);
    CHECKF(st == want, "%s: status %s, want %s (msg: %s)", label, kvs_status_name(st),
           kvs_status_name(want), kvs_last_error());
    CHECKF(g == NULL, "%s: out not NULL on failure", label);
    CHECKF(strstr(kvs_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", label,
           kvs_last_error(), needle);
    if (st == KVS_OK) kvs_gguf_close(g);
}

typedef struct patch {
    const char *label;
    int which;          /* 0: u32 patch, 1: u64 patch, 2: u8 patch */
    size_t off_field;   /* offsetof(base_img, o_*) */
    uint64_t value;
    const char *needle;
} patch;

#define O(f) offsetof(base_img, f)

static void test_hostile_patches(void) {
    const patch ps[] = {
        {"bad magic", 2, 0, 'X', "bad magic"},
        {"version 1", 0, O(o_version), 1, "version 1"},
        {"version 0", 0, O(o_version), 0, "unsupported version 0"},
        {"version 4", 0, O(o_version), 4, "unsupported version 4"},
        {"big-endian v3", 0, O(o_version), 0x03000000u, "big-endian"},
        {"big-endian v2", 0, O(o_version), 0x02000000u, "big-endian"},
        {"n_kv huge", 1, O(o_nkv), UINT64_MAX, "n_kv"},
        {"n_kv 2^60", 1, O(o_nkv), 1ull << 60, "n_kv"},
        {"n_tensors huge", 1, O(o_ntensors), UINT64_MAX, "n_tensors"},
        {"n_tensors 2^32", 1, O(o_ntensors), 1ull << 32, "n_tensors"},
        {"key length huge", 1, O(o_key0_len), UINT64_MAX, "key length"},
        {"key length past end", 1, O(o_key0_len), 100000, "key length"},
        {"key length 0", 1, O(o_key0_len), 0, "empty key"},
        {"key with NUL", 2, O(o_key0), 0, "NUL"},
        {"value type 13", 0, O(o_type1), 13, "unknown value type 13"},
        {"value type 0xffffffff", 0, O(o_type1), 0xffffffffu, "unknown value type"},
        {"string value length huge", 1, O(o_val0_len), UINT64_MAX - 3, "string value length"},
        {"nested array", 0, O(o_arr_type), KVS_GGUF_ARRAY, "nested arrays"},
        {"array elem type 99", 0, O(o_arr_type), 99, "unknown array element type 99"},
        {"string array n huge", 1, O(o_arr_n), UINT64_MAX, "array length"},
        {"string array n 2^40", 1, O(o_arr_n), 1ull << 40, "array length"},
        {"string elem length huge", 1, O(o_str_elem1_len), UINT64_MAX, "string array element length"},
        {"f32 array n 2^62 (n*4 wraps)", 1, O(o_farr_n), 1ull << 62, "array length"},
        {"f32 array n huge", 1, O(o_farr_n), UINT64_MAX, "array length"},
        {"f32 array n past end", 1, O(o_farr_n), 1000, "array length"},
        {"tensor name length 0", 1, O(o_t0_name_len), 0, "empty tensor name"},
        {"tensor name length huge", 1, O(o_t0_name_len), UINT64_MAX, "tensor name length"},
        {"n_dims 0", 0, O(o_t0_ndims), 0, "n_dims 0"},
        {"n_dims 5", 0, O(o_t0_ndims), 5, "n_dims 5"},
        {"n_dims huge", 0, O(o_t0_ndims), 0xffffffffu, "n_dims"},
        {"ne0 zero", 1, O(o_t0_ne0), 0, "ne[0] = 0 is not positive"},
        {"ne0 negative", 1, O(o_t0_ne0), (uint64_t)-4, "ne[0] = -4 is not positive"},
        {"ne1 negative", 1, O(o_t0_ne1), 1ull << 63, "ne[1]"},
        {"element count overflow", 1, O(o_t0_ne1), 1ull << 62, "overflow"},
        {"unknown tensor type 99", 0, O(o_t0_type), 99, "unknown tensor type 99"},
        {"unknown tensor type 37", 0, O(o_t0_type), 37, "unknown tensor type 37"}, /* 39 is MXFP4 now */
        {"tensor type huge", 0, O(o_t0_type), 0xffffffffu, "unknown tensor type"},
        {"KV-only tensor type tq3 (50)", 0, O(o_t0_type), 50, "tensor type 50 is not a GGML type"},
        {"ne0 not block multiple", 1, O(o_t1_ne0), 33, "block size"},
        {"ne0 not block multiple (16)", 1, O(o_t1_ne0), 16, "not a multiple of the block size 32"},
        {"misaligned offset", 1, O(o_t1_off), 33, "not a multiple of the alignment"},
        {"misaligned offset 8", 1, O(o_t1_off), 8, "alignment"},
        {"data past end", 1, O(o_t1_off), 64, "outside the file"},
        {"data far past end", 1, O(o_t1_off), 1ull << 40, "outside the file"},
        {"data offset near 2^64", 1, O(o_t1_off), UINT64_MAX - 31, "outside the file"},
        {"t0 nbytes past end", 1, O(o_t0_ne1), 1ull << 40, "outside the file"},
        {"overlapping tensors", 1, O(o_t1_off), 0, "overlap"},
    };
    base_img base;
    build_base(&base, 3);
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        uint8_t *img = malloc(base.b.len);
        memcpy(img, base.b.p, base.b.len);
        size_t off = ps[i].off_field ? *(const size_t *)((const char *)&base + ps[i].off_field) : 0;
        if (ps[i].which == 0) put_u32_at(img + off, (uint32_t)ps[i].value);
        else if (ps[i].which == 1) put_u64_at(img + off, ps[i].value);
        else img[off] = (uint8_t)ps[i].value;
        expect_fail_img(ps[i].label, img, base.b.len, KVS_ERR_FORMAT, ps[i].needle);
        free(img);
    }
    free(base.b.p);
}

static void test_hostile_structural(void) {
    tb b = {0};
    /* duplicate keys */
    tb_header(&b, 3, 0, 3);
    tb_kv_u32(&b, "x.b", 1);
    tb_kv_u32(&b, "x.a", 2);
    tb_kv_str(&b, "x.b", "again");
    expect_fail_img("duplicate key", b.p, b.len, KVS_ERR_FORMAT, "duplicate key 'x.b'");
    /* duplicate tensor names */
    b.len = 0;
    int64_t ne[1] = {8};
    tb_header(&b, 3, 2, 0);
    tb_tensor(&b, "t", 1, ne, KVS_TYPE_F32, 0);
    tb_tensor(&b, "t", 1, ne, KVS_TYPE_F32, 32);
    tb_pad(&b, 32);
    tb_fill(&b, 64, 0);
    expect_fail_img("duplicate tensor", b.p, b.len, KVS_ERR_FORMAT, "duplicate tensor name 't'");
    /* general.alignment 0, 48, wrong type */
    const uint32_t bad_al[] = {0, 48, 3, 0x80000001u};
    for (size_t i = 0; i < 4; i++) {
        b.len = 0;
        tb_header(&b, 3, 0, 1);
        tb_kv_u32(&b, "general.alignment", bad_al[i]);
        expect_fail_img("bad alignment", b.p, b.len, KVS_ERR_FORMAT, "power of two");
    }
    b.len = 0;
    tb_header(&b, 3, 0, 1);
    tb_kv_str(&b, "general.alignment", "32");
    expect_fail_img("alignment as string", b.p, b.len, KVS_ERR_FORMAT, "general.alignment must be u32");
    /* offset aligned to 32 but not to a declared 64 */
    b.len = 0;
    tb_header(&b, 3, 2, 1);
    tb_kv_u32(&b, "general.alignment", 64);
    tb_tensor(&b, "a", 1, ne, KVS_TYPE_F32, 0);
    tb_tensor(&b, "b", 1, ne, KVS_TYPE_F32, 32);
    tb_pad(&b, 64);
    tb_fill(&b, 128, 0);
    expect_fail_img("offset vs alignment 64", b.p, b.len, KVS_ERR_FORMAT, "alignment 64");
    /* tensor infos end exactly at EOF, data section missing */
    b.len = 0;
    tb_header(&b, 3, 1, 0);
    tb_tensor(&b, "a", 1, ne, KVS_TYPE_F32, 0);
    expect_fail_img("no data section", b.p, b.len, KVS_ERR_FORMAT, "tensor data section");
    /* key longer than the message buffer still reports cleanly */
    b.len = 0;
    char longkey[300];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    tb_header(&b, 3, 0, 2);
    tb_kv_u32(&b, longkey, 1);
    tb_kv_u32(&b, longkey, 2);
    expect_fail_img("duplicate long key", b.p, b.len, KVS_ERR_FORMAT, "duplicate key 'kkkk");
    /* empty file, NULL args */
    expect_fail_img("empty image", b.p, 0, KVS_ERR_FORMAT, "truncated");
    kvs_gguf *g = NULL;
    CHECK(kvs_gguf_open_memory(NULL, 10, &g) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_open_memory(b.p, b.len, NULL) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_open("/nonexistent/dir/x.gguf", true, &g) == KVS_ERR_IO && g == NULL);
    CHECK(strstr(kvs_last_error(), "cannot open") != NULL);
    CHECK(kvs_gguf_open("/tmp", true, &g) == KVS_ERR_IO);
    free(b.p);
}

/* Every prefix of a valid file: fails cleanly up to the last tensor byte. */
static void check_prefixes(const char *label, const uint8_t *p, size_t n, size_t need) {
    int bad = 0;
    for (size_t len = 0; len <= n; len++) {
        /* copy to an exact-size heap block so ASan sees any over-read */
        uint8_t *cp = malloc(len ? len : 1);
        memcpy(cp, p, len);
        kvs_gguf *g = NULL;
        kvs_status st = kvs_gguf_open_memory(cp, len, &g);
        if (len < need) {
            if (st != KVS_ERR_FORMAT || g != NULL) {
                if (bad++ < 5)
                    fprintf(stderr, "%s: prefix %zu: status %s (%s)\n", label, len,
                            kvs_status_name(st), kvs_last_error());
            } else if (!strstr(kvs_last_error(), "truncated") && !strstr(kvs_last_error(), "exceeds") &&
                       !strstr(kvs_last_error(), "can hold") && !strstr(kvs_last_error(), "outside")) {
                if (bad++ < 5) fprintf(stderr, "%s: prefix %zu: odd message %s\n", label, len,
                                       kvs_last_error());
            }
        } else if (st != KVS_OK) {
            if (bad++ < 5)
                fprintf(stderr, "%s: prefix %zu (>= %zu) should open: %s\n", label, len, need,
                        kvs_last_error());
        }
        kvs_gguf_close(g);
        free(cp);
    }
    CHECKF(bad == 0, "%s: %d bad prefixes", label, bad);
}

static void test_base_and_prefixes(void) {
    for (uint32_t ver = 2; ver <= 3; ver++) {
        base_img im;
        build_base(&im, ver);
        kvs_gguf *g = NULL;
        CHECKF(kvs_gguf_open_memory(im.b.p, im.b.len, &g) == KVS_OK, "base v%u: %s", ver, kvs_last_error());
        if (g) {
            CHECK(kvs_gguf_version(g) == ver);
            CHECK(kvs_gguf_alignment(g) == 32);
            CHECK(kvs_gguf_n_kv(g) == 4 && kvs_gguf_n_tensors(g) == 2);
            CHECK(strcmp(kvs_gguf_get_str(g, "general.architecture"), "llama") == 0);
            const kvs_gguf_kv *tok = kvs_gguf_find(g, "tok.tokens");
            CHECK(tok && tok->v.arr.n == 3 && strcmp(tok->v.arr.strs[1].s, "bc") == 0 &&
                  tok->v.arr.strs[2].len == 0 && tok->v.arr.strs[2].s[0] == 0);
            const kvs_gguf_kv *sc = kvs_gguf_find(g, "tok.scores");
            CHECK(sc && kvs_gguf_arr_float(sc, 1) == -2.5 && kvs_gguf_arr_float(sc, 3) == 0);
            const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, "w.q8");
            CHECK(t && t->nbytes == 34 && t->offset == 32 &&
                  (const uint8_t *)t->data == im.b.p + im.data_off + 32 &&
                  ((const uint8_t *)t->data)[0] == 99);
            t = kvs_gguf_find_tensor(g, "w.f32");
            CHECK(t && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 2 && t->ne[2] == 1 && t->nbytes == 32);
            CHECK(kvs_gguf_find_tensor(g, "w") == NULL && kvs_gguf_find_tensor(g, "w.q9") == NULL);
        }
        kvs_gguf_close(g);
        check_prefixes(ver == 2 ? "base v2 prefixes" : "base v3 prefixes", im.b.p, im.b.len, im.data_end);
        free(im.b.p);
    }
}

/* ---- round trip of every type via the writer ---------------------------- */

static char g_dir[256];

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
    size_t got = fread(p, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) {
        free(p);
        return NULL;
    }
    *n = got;
    return p;
}

#define N_VOCAB 100000
static char (*g_vocab_buf)[16];
static kvs_gguf_str *g_vocab;
static float g_tf32[12];
static uint16_t g_tf16[8];
static uint8_t g_tq8[68];

/* Element bytes for the numeric arrays (packed little-endian). */
static const uint8_t k_arr_u8[3] = {0, 200, 255};
static const uint8_t k_arr_i8[3] = {0x80, 0xff, 5};        /* -128, -1, 5 */
static const uint8_t k_arr_u16[4] = {0x34, 0x12, 0xff, 0xff}; /* 0x1234, 65535 */
static const uint8_t k_arr_i16[4] = {0x00, 0x80, 0x01, 0x00}; /* -32768, 1 */
static const uint8_t k_arr_u32[8] = {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0};
static const uint8_t k_arr_i32[8] = {0, 0, 0, 0x80, 0xfe, 0xff, 0xff, 0xff}; /* INT32_MIN, -2 */
static const uint8_t k_arr_f32[8] = {0, 0, 0xc0, 0x3f, 0, 0, 0x80, 0xff}; /* 1.5, -inf */
static const uint8_t k_arr_bool[3] = {1, 0, 1};
static const uint8_t k_arr_u64[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      7, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t k_arr_i64[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0xfd, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff}; /* INT64_MIN, -3 */
static const uint8_t k_arr_f64[8] = {0x18, 0x2d, 0x44, 0x54, 0xfb, 0x21, 0x09, 0x40}; /* pi */

typedef struct arr_case { const char *key; uint32_t type; uint64_t n; const uint8_t *data; } arr_case;
static const arr_case k_arrs[] = {
    {"arr.u8", KVS_GGUF_U8, 3, k_arr_u8},    {"arr.i8", KVS_GGUF_I8, 3, k_arr_i8},
    {"arr.u16", KVS_GGUF_U16, 2, k_arr_u16}, {"arr.i16", KVS_GGUF_I16, 2, k_arr_i16},
    {"arr.u32", KVS_GGUF_U32, 2, k_arr_u32}, {"arr.i32", KVS_GGUF_I32, 2, k_arr_i32},
    {"arr.f32", KVS_GGUF_F32, 2, k_arr_f32}, {"arr.bool", KVS_GGUF_BOOL, 3, k_arr_bool},
    {"arr.u64", KVS_GGUF_U64, 2, k_arr_u64}, {"arr.i64", KVS_GGUF_I64, 2, k_arr_i64},
    {"arr.f64", KVS_GGUF_F64, 1, k_arr_f64}, {"arr.empty", KVS_GGUF_I32, 0, NULL},
};

static kvs_status fill_writer(kvs_gguf_writer *w, int vocab) {
    kvs_status st;
#define TRY(x) do { if ((st = (x)) != KVS_OK) return st; } while (0)
    TRY(kvs_gguf_writer_set_str(w, "general.architecture", "llama"));
    TRY(kvs_gguf_writer_set_u32(w, "llama.block_count", 30));
    TRY(kvs_gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f));
    kvs_gguf_kv kv;
    struct { const char *k; uint32_t t; uint64_t u; int64_t i; double f; bool b; } sc[] = {
        {"s.u8", KVS_GGUF_U8, 200, 0, 0, 0},      {"s.i8", KVS_GGUF_I8, 0, -5, 0, 0},
        {"s.u16", KVS_GGUF_U16, 60000, 0, 0, 0},  {"s.i16", KVS_GGUF_I16, 0, -30000, 0, 0},
        {"s.u32", KVS_GGUF_U32, 4000000000u, 0, 0, 0}, {"s.i32", KVS_GGUF_I32, 0, -2000000000, 0, 0},
        {"s.f32", KVS_GGUF_F32, 0, 0, 0.15625, 0}, {"s.bool", KVS_GGUF_BOOL, 0, 0, 0, true},
        {"s.u64", KVS_GGUF_U64, (1ull << 63) + 5, 0, 0, 0}, {"s.i64", KVS_GGUF_I64, 0, INT64_MIN + 1, 0, 0},
        {"s.f64", KVS_GGUF_F64, 0, 0, 3.141592653589793, 0}, {"s.boolf", KVS_GGUF_BOOL, 0, 0, 0, false},
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) {
        memset(&kv, 0, sizeof kv);
        kv.key.s = sc[i].k;
        kv.key.len = strlen(sc[i].k);
        kv.type = sc[i].t;
        if (sc[i].t == KVS_GGUF_F32 || sc[i].t == KVS_GGUF_F64) kv.v.f64 = sc[i].f;
        else if (sc[i].t == KVS_GGUF_BOOL) kv.v.b = sc[i].b;
        else if (sc[i].t == KVS_GGUF_I8 || sc[i].t == KVS_GGUF_I16 || sc[i].t == KVS_GGUF_I32 ||
                 sc[i].t == KVS_GGUF_I64) kv.v.i64 = sc[i].i;
        else kv.v.u64 = sc[i].u;
        TRY(kvs_gguf_writer_copy_kv(w, &kv));
    }
    /* a string with an embedded NUL keeps its length */
    memset(&kv, 0, sizeof kv);
    kv.key.s = "s.str";
    kv.key.len = 5;
    kv.type = KVS_GGUF_STRING;
    kv.v.str.s = "ab\0cd";
    kv.v.str.len = 5;
    TRY(kvs_gguf_writer_copy_kv(w, &kv));
    for (size_t i = 0; i < sizeof k_arrs / sizeof k_arrs[0]; i++) {
        memset(&kv, 0, sizeof kv);
        kv.key.s = k_arrs[i].key;
        kv.key.len = strlen(k_arrs[i].key);
        kv.type = KVS_GGUF_ARRAY;
        kv.v.arr.type = k_arrs[i].type;
        kv.v.arr.n = k_arrs[i].n;
        kv.v.arr.data = k_arrs[i].data;
        TRY(kvs_gguf_writer_copy_kv(w, &kv));
    }
    memset(&kv, 0, sizeof kv);
    kv.key.s = "tokenizer.ggml.tokens";
    kv.key.len = strlen(kv.key.s);
    kv.type = KVS_GGUF_ARRAY;
    kv.v.arr.type = KVS_GGUF_STRING;
    kv.v.arr.n = vocab ? N_VOCAB : 4;
    kv.v.arr.strs = g_vocab;
    TRY(kvs_gguf_writer_copy_kv(w, &kv));
    int64_t ne_f32[2] = {4, 3}, ne_f16[1] = {8}, ne_q8[2] = {32, 2};
    TRY(kvs_gguf_writer_add_tensor(w, "token_embd.weight", KVS_TYPE_F32, 2, ne_f32, g_tf32, sizeof g_tf32));
    TRY(kvs_gguf_writer_add_tensor(w, "norm.weight", KVS_TYPE_F16, 1, ne_f16, g_tf16, sizeof g_tf16));
    TRY(kvs_gguf_writer_add_tensor(w, "blk.0.q8", KVS_TYPE_Q8_0, 2, ne_q8, g_tq8, sizeof g_tq8));
#undef TRY
    return KVS_OK;
}

static void init_fixtures(void) {
    g_vocab_buf = malloc(sizeof(*g_vocab_buf) * N_VOCAB);
    g_vocab = malloc(sizeof(*g_vocab) * N_VOCAB);
    for (int i = 0; i < N_VOCAB; i++) {
        int n = snprintf(g_vocab_buf[i], sizeof g_vocab_buf[i], "tok%d", i);
        if (i == 1) n = 0; /* an empty token */
        g_vocab[i].s = g_vocab_buf[i];
        g_vocab[i].len = (uint64_t)n;
    }
    for (int i = 0; i < 12; i++) g_tf32[i] = (float)i * 0.5f - 1.0f;
    for (int i = 0; i < 8; i++) g_tf16[i] = (uint16_t)(0x3c00 + i);
    for (int i = 0; i < 68; i++) g_tq8[i] = (uint8_t)(i * 13);
}

static void check_all_types(kvs_gguf *g, int vocab, const char *label) {
    uint32_t u32 = 0;
    int32_t i32 = 0;
    uint64_t u64 = 0;
    float f = 0;
    bool b = false;
    CHECKF(kvs_gguf_version(g) == 3 && kvs_gguf_alignment(g) == 32, "%s header", label);
    CHECK(strcmp(kvs_gguf_get_str(g, "general.architecture"), "llama") == 0);
    CHECK(kvs_gguf_get_u32(g, "llama.block_count", &u32) && u32 == 30);
    CHECK(kvs_gguf_get_f32(g, "llama.rope.freq_base", &f) && f == 10000.0f);
    CHECK(kvs_gguf_get_u32(g, "s.u8", &u32) && u32 == 200);
    CHECK(kvs_gguf_get_i32(g, "s.i8", &i32) && i32 == -5);
    CHECK(kvs_gguf_get_u32(g, "s.i8", &u32) == false);
    CHECK(kvs_gguf_get_u64(g, "s.u16", &u64) && u64 == 60000);
    CHECK(kvs_gguf_get_i32(g, "s.i16", &i32) && i32 == -30000);
    CHECK(kvs_gguf_get_u32(g, "s.u32", &u32) && u32 == 4000000000u);
    CHECK(kvs_gguf_get_i32(g, "s.u32", &i32) == false); /* out of range */
    CHECK(kvs_gguf_get_i32(g, "s.i32", &i32) && i32 == -2000000000);
    CHECK(kvs_gguf_get_f32(g, "s.f32", &f) && f == 0.15625f);
    CHECK(kvs_gguf_get_bool(g, "s.bool", &b) && b == true);
    CHECK(kvs_gguf_get_bool(g, "s.boolf", &b) && b == false);
    CHECK(kvs_gguf_get_u64(g, "s.u64", &u64) && u64 == (1ull << 63) + 5);
    CHECK(kvs_gguf_get_u32(g, "s.u64", &u32) == false);
    const kvs_gguf_kv *kv = kvs_gguf_find(g, "s.i64");
    CHECK(kv && kv->type == KVS_GGUF_I64 && kv->v.i64 == INT64_MIN + 1);
    CHECK(kvs_gguf_get_u64(g, "s.i64", &u64) == false);
    kv = kvs_gguf_find(g, "s.f64");
    CHECK(kv && kv->type == KVS_GGUF_F64 && kv->v.f64 == 3.141592653589793);
    CHECK(kvs_gguf_get_f32(g, "s.f64", &f) && f == (float)3.141592653589793);
    CHECK(kvs_gguf_get_u32(g, "s.f32", &u32) == false);
    CHECK(kvs_gguf_get_bool(g, "s.u8", &b) == false);
    CHECK(kvs_gguf_get_str(g, "s.u8") == NULL && kvs_gguf_get_str(g, "nope") == NULL);
    kv = kvs_gguf_find(g, "s.str");
    CHECK(kv && kv->type == KVS_GGUF_STRING && kv->v.str.len == 5 && memcmp(kv->v.str.s, "ab\0cd", 6) == 0);
    CHECK(kvs_gguf_find(g, "") == NULL && kvs_gguf_find(g, "s.u") == NULL && kvs_gguf_find(g, "zzz") == NULL);

    const struct { const char *k; int64_t iv[3]; double fv[3]; } want[] = {
        {"arr.u8", {0, 200, 255}, {0, 200, 255}},
        {"arr.i8", {-128, -1, 5}, {-128, -1, 5}},
        {"arr.u16", {0x1234, 65535, 0}, {0x1234, 65535, 0}},
        {"arr.i16", {-32768, 1, 0}, {-32768, 1, 0}},
        {"arr.u32", {4294967295ll, 1, 0}, {4294967295.0, 1, 0}},
        {"arr.i32", {INT32_MIN, -2, 0}, {INT32_MIN, -2, 0}},
        {"arr.f32", {0, 0, 0}, {1.5, -INFINITY, 0}},
        {"arr.bool", {1, 0, 1}, {1, 0, 1}},
        {"arr.u64", {-1, 7, 0}, {18446744073709551615.0, 7, 0}},
        {"arr.i64", {INT64_MIN, -3, 0}, {(double)INT64_MIN, -3, 0}},
        {"arr.f64", {0, 0, 0}, {3.141592653589793, 0, 0}},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        kv = kvs_gguf_find(g, want[i].k);
        CHECKF(kv && kv->type == KVS_GGUF_ARRAY && kv->v.arr.type == k_arrs[i].type &&
               kv->v.arr.n == k_arrs[i].n, "%s: %s", label, want[i].k);
        if (!kv) continue;
        for (uint64_t j = 0; j < kv->v.arr.n; j++) {
            CHECKF(kvs_gguf_arr_int(kv, j) == want[i].iv[j], "%s[%llu] int", want[i].k, (unsigned long long)j);
            CHECKF(kvs_gguf_arr_float(kv, j) == want[i].fv[j], "%s[%llu] float", want[i].k, (unsigned long long)j);
        }
        CHECK(kvs_gguf_arr_int(kv, kv->v.arr.n) == 0 && kvs_gguf_arr_float(kv, UINT64_MAX) == 0);
    }
    kv = kvs_gguf_find(g, "arr.empty");
    CHECK(kv && kv->v.arr.n == 0 && kvs_gguf_arr_int(kv, 0) == 0);
    kv = kvs_gguf_find(g, "tokenizer.ggml.tokens");
    uint64_t nv = vocab ? N_VOCAB : 4;
    CHECK(kv && kv->v.arr.type == KVS_GGUF_STRING && kv->v.arr.n == nv);
    if (kv && kv->v.arr.n == nv) {
        int bad = 0;
        for (uint64_t j = 0; j < nv; j++) {
            const kvs_gguf_str *s = &kv->v.arr.strs[j];
            if (s->len != g_vocab[j].len || memcmp(s->s, g_vocab[j].s, s->len) != 0 || s->s[s->len] != 0)
                bad++;
        }
        CHECKF(bad == 0, "%s: %d vocab strings differ", label, bad);
        CHECK(kvs_gguf_arr_int(kv, 0) == 0); /* not numeric */
    }
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->type == KVS_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 3 &&
          t->ne[3] == 1 && t->nbytes == sizeof g_tf32 && memcmp(t->data, g_tf32, sizeof g_tf32) == 0);
    t = kvs_gguf_find_tensor(g, "norm.weight");
    CHECK(t && t->type == KVS_TYPE_F16 && t->nbytes == 16 && memcmp(t->data, g_tf16, 16) == 0);
    t = kvs_gguf_find_tensor(g, "blk.0.q8");
    CHECK(t && t->type == KVS_TYPE_Q8_0 && t->ne[1] == 2 && t->nbytes == 68 && memcmp(t->data, g_tq8, 68) == 0);
    for (uint64_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
        t = kvs_gguf_tensor_at(g, i);
        CHECKF(t->offset % 32 == 0, "%s: tensor offset %llu", label, (unsigned long long)t->offset);
        CHECK(kvs_gguf_find_tensor(g, t->name.s) == t);
    }
    CHECK(kvs_gguf_tensor_at(g, kvs_gguf_n_tensors(g)) == NULL && kvs_gguf_kv_at(g, kvs_gguf_n_kv(g)) == NULL);
    for (uint64_t i = 0; i < kvs_gguf_n_kv(g); i++)
        CHECK(kvs_gguf_find(g, kvs_gguf_kv_at(g, i)->key.s) == kvs_gguf_kv_at(g, i));
}

static int count_tmp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void test_roundtrip(void) {
    char path[512], path2[512];
    snprintf(path, sizeof path, "%s/all.gguf", g_dir);
    snprintf(path2, sizeof path2, "%s/all2.gguf", g_dir);
    kvs_gguf_writer *w = NULL;
    CHECK(kvs_gguf_writer_new(&w) == KVS_OK);
    CHECKF(fill_writer(w, 1) == KVS_OK, "fill: %s", kvs_last_error());
    CHECKF(kvs_gguf_writer_write(w, path) == KVS_OK, "write: %s", kvs_last_error());
    kvs_gguf_writer_free(w);
    CHECK(count_tmp_files() == 0);

    for (int mode = 0; mode < 3; mode++) {
        kvs_gguf *g = NULL;
        size_t n = 0;
        uint8_t *img = NULL;
        kvs_status st;
        if (mode < 2) st = kvs_gguf_open(path, mode == 0, &g);
        else {
            img = slurp(path, &n);
            st = kvs_gguf_open_memory(img, n, &g);
        }
        CHECKF(st == KVS_OK, "open mode %d: %s", mode, kvs_last_error());
        if (g) {
            check_all_types(g, 1, mode == 0 ? "mmap" : mode == 1 ? "read" : "memory");
            if (mode == 0) {
                struct stat sb;
                stat(path, &sb);
                CHECK(kvs_gguf_file_size(g) == (uint64_t)sb.st_size);
                /* copy every kv and tensor into a new writer: byte-identical file */
                kvs_gguf_writer *w2 = NULL;
                CHECK(kvs_gguf_writer_new(&w2) == KVS_OK);
                for (uint64_t i = 0; i < kvs_gguf_n_kv(g); i++)
                    CHECK(kvs_gguf_writer_copy_kv(w2, kvs_gguf_kv_at(g, i)) == KVS_OK);
                for (uint64_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
                    const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
                    CHECK(kvs_gguf_writer_add_tensor(w2, t->name.s, t->type, t->n_dims, t->ne, t->data,
                                                     t->nbytes) == KVS_OK);
                }
                CHECK(kvs_gguf_writer_write(w2, path2) == KVS_OK);
                kvs_gguf_writer_free(w2);
                size_t n1 = 0, n2 = 0;
                uint8_t *a = slurp(path, &n1), *b = slurp(path2, &n2);
                CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0);
                free(a);
                free(b);
            }
        }
        kvs_gguf_close(g);
        free(img);
    }
    kvs_gguf_close(NULL);
    kvs_gguf_writer_free(NULL);

    /* small variant: every prefix fails cleanly */
    char small[512];
    snprintf(small, sizeof small, "%s/small.gguf", g_dir);
    CHECK(kvs_gguf_writer_new(&w) == KVS_OK);
    CHECK(fill_writer(w, 0) == KVS_OK);
    CHECK(kvs_gguf_writer_write(w, small) == KVS_OK);
    kvs_gguf_writer_free(w);
    size_t n = 0;
    uint8_t *img = slurp(small, &n);
    CHECK(img != NULL);
    if (img) {
        kvs_gguf *g = NULL;
        CHECK(kvs_gguf_open_memory(img, n, &g) == KVS_OK);
        size_t need = 0;
        if (g) {
            check_all_types(g, 0, "small");
            for (uint64_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
                const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
                size_t end = (size_t)((const uint8_t *)t->data - img) + t->nbytes;
                if (end > need) need = end;
            }
        }
        kvs_gguf_close(g);
        check_prefixes("writer file prefixes", img, n, need);

        /* fail the Nth allocation over the whole open (memory and read paths) */
        for (int path_mode = 0; path_mode < 2; path_mode++) {
            int64_t k;
            int bad = 0;
            for (k = 0; k < 100; k++) {
                kvs_gguf *gg = NULL;
                kvs_alloc_fail_after(k);
                kvs_status st = path_mode == 0 ? kvs_gguf_open_memory(img, n, &gg)
                                               : kvs_gguf_open(small, false, &gg);
                kvs_alloc_fail_after(-1);
                if (st == KVS_OK) {
                    check_all_types(gg, 0, "after alloc failures");
                    kvs_gguf_close(gg);
                    break;
                }
                if (st != KVS_ERR_NOMEM || gg != NULL) bad++;
            }
            CHECKF(bad == 0 && k > 0 && k < 100, "fail-nth open mode %d: bad %d, k %lld", path_mode,
                   bad, (long long)k);
        }
        free(img);
    }

    /* fail the Nth allocation over building + writing: never a partial file,
     * never clobbers the existing target */
    size_t n_before = 0;
    uint8_t *before = slurp(small, &n_before);
    int64_t k;
    int bad = 0;
    for (k = 0; k < 10000; k++) {
        kvs_gguf_writer *ww = NULL;
        kvs_alloc_fail_after(k);
        kvs_status st = kvs_gguf_writer_new(&ww);
        if (st == KVS_OK) st = fill_writer(ww, 0);
        if (st == KVS_OK) st = kvs_gguf_writer_set_str(ww, "general.name", "changed");
        if (st == KVS_OK) st = kvs_gguf_writer_write(ww, small);
        kvs_alloc_fail_after(-1);
        kvs_gguf_writer_free(ww);
        if (st == KVS_OK) break;
        if (st != KVS_ERR_NOMEM) bad++;
        size_t n_now = 0;
        uint8_t *now = slurp(small, &n_now);
        if (!now || n_now != n_before || memcmp(now, before, n_now) != 0) bad++;
        free(now);
    }
    CHECKF(bad == 0 && k < 10000, "fail-nth write: bad %d k %lld", bad, (long long)k);
    CHECK(count_tmp_files() == 0);
    free(before);
    kvs_gguf *g = NULL;
    CHECK(kvs_gguf_open(small, true, &g) == KVS_OK && g &&
          strcmp(kvs_gguf_get_str(g, "general.name"), "changed") == 0);
    kvs_gguf_close(g);
}

static void test_writer_errors(void) {
    kvs_gguf_writer *w = NULL;
    CHECK(kvs_gguf_writer_new(&w) == KVS_OK);
    float d[8] = {0};
    int64_t ne[2] = {8, 1}, ne_bad[2] = {0, 1}, ne_q[1] = {16};
    CHECK(kvs_gguf_writer_add_tensor(w, "a", KVS_TYPE_F32, 2, ne, d, sizeof d) == KVS_OK);
    CHECK(kvs_gguf_writer_add_tensor(w, "a", KVS_TYPE_F32, 2, ne, d, sizeof d) == KVS_ERR_INVALID_ARG);
    CHECK(strstr(kvs_last_error(), "duplicate") != NULL);
    CHECK(kvs_gguf_writer_add_tensor(w, "b", KVS_TYPE_F32, 2, ne, d, 4) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_add_tensor(w, "c", KVS_TYPE_F32, 0, ne, d, sizeof d) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_add_tensor(w, "c", KVS_TYPE_F32, 5, ne, d, sizeof d) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_add_tensor(w, "c", KVS_TYPE_F32, 2, ne_bad, d, 0) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_add_tensor(w, "c", 99, 1, ne, d, sizeof d) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_add_tensor(w, "c", KVS_TYPE_Q8_0, 1, ne_q, d, 17) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_set_u32(w, "general.alignment", 48) == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_set_str(w, "general.alignment", "32") == KVS_ERR_INVALID_ARG);
    CHECK(kvs_gguf_writer_set_str(w, "", "x") == KVS_ERR_INVALID_ARG);
    kvs_gguf_kv kv = {.key = {"n", 1}, .type = KVS_GGUF_ARRAY};
    kv.v.arr.type = KVS_GGUF_ARRAY;
    CHECK(kvs_gguf_writer_copy_kv(w, &kv) == KVS_ERR_INVALID_ARG);
    kv.type = 13;
    CHECK(kvs_gguf_writer_copy_kv(w, &kv) == KVS_ERR_INVALID_ARG);
    /* replacing a key keeps one entry */
    CHECK(kvs_gguf_writer_set_u32(w, "x", 1) == KVS_OK);
    CHECK(kvs_gguf_writer_set_str(w, "x", "two") == KVS_OK);
    /* alignment 64 is honoured */
    CHECK(kvs_gguf_writer_set_u32(w, "general.alignment", 64) == KVS_OK);
    CHECK(kvs_gguf_writer_add_tensor(w, "b", KVS_TYPE_F32, 1, ne, d, sizeof d) == KVS_OK);
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/dir/x.gguf", g_dir);
    CHECK(kvs_gguf_writer_write(w, path) == KVS_ERR_IO);
    CHECK(strstr(kvs_last_error(), "temporary") != NULL);
    snprintf(path, sizeof path, "%s/al64.gguf", g_dir);
    CHECK(kvs_gguf_writer_write(w, path) == KVS_OK);
    kvs_gguf_writer_free(w);
    kvs_gguf *g = NULL;
    CHECK(kvs_gguf_open(path, true, &g) == KVS_OK);
    if (g) {
        CHECK(kvs_gguf_alignment(g) == 64 && kvs_gguf_n_kv(g) == 2 &&
              strcmp(kvs_gguf_get_str(g, "x"), "two") == 0);
        const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, "b");
        CHECK(t && t->offset == 64 && ((uintptr_t)t->data - (uintptr_t)kvs_gguf_tensor_at(g, 0)->data) == 64);
    }
    kvs_gguf_close(g);
}

static void test_model(void) {
    const char *p = test_model_path();
    if (!p) {
        printf("note: test_gguf: models/smollm2-135m-instruct-q4_1.gguf absent; real-file checks "
               "skipped (make models)\n");
        return;
    }
    for (int mm = 0; mm < 2; mm++) {
        kvs_gguf *g = NULL;
        kvs_status st = kvs_gguf_open(p, mm == 0, &g);
        CHECKF(st == KVS_OK, "open %s: %s", p, kvs_last_error());
        if (!g) continue;
        uint32_t n_layer = 0;
        CHECK(kvs_gguf_get_str(g, "general.architecture") &&
              strcmp(kvs_gguf_get_str(g, "general.architecture"), "llama") == 0);
        CHECK(kvs_gguf_get_u32(g, "llama.block_count", &n_layer) && n_layer == 30);
        const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, "token_embd.weight");
        CHECK(t && t->ne[0] == 576);
        const kvs_gguf_kv *tok = kvs_gguf_find(g, "tokenizer.ggml.tokens");
        CHECK(tok && tok->type == KVS_GGUF_ARRAY && tok->v.arr.type == KVS_GGUF_STRING &&
              tok->v.arr.n == 49152);
        CHECK(kvs_gguf_n_tensors(g) > 200);
        kvs_gguf_close(g);
    }
}

/* Writes a few small valid files (fuzz seed corpus). */
static int write_seeds(const char *dir) {
    char path[1024];
    base_img im;
    for (uint32_t ver = 2; ver <= 3; ver++) {
        build_base(&im, ver);
        snprintf(path, sizeof path, "%s/base_v%u.gguf", dir, ver);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(im.b.p, 1, im.b.len, f) != im.b.len) return 1;
        fclose(f);
        free(im.b.p);
    }
    kvs_gguf_writer *w = NULL;
    if (kvs_gguf_writer_new(&w) || fill_writer(w, 0)) return 1;
    snprintf(path, sizeof path, "%s/all_types.gguf", dir);
    if (kvs_gguf_writer_write(w, path)) return 1;
    kvs_gguf_writer_free(w);
    int64_t ne[1] = {8};
    float d[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    if (kvs_gguf_writer_new(&w) || kvs_gguf_writer_set_u32(w, "general.alignment", 64) ||
        kvs_gguf_writer_add_tensor(w, "a", KVS_TYPE_F32, 1, ne, d, sizeof d) ||
        kvs_gguf_writer_add_tensor(w, "b", KVS_TYPE_F32, 1, ne, d, sizeof d))
        return 1;
    snprintf(path, sizeof path, "%s/align64.gguf", dir);
    if (kvs_gguf_writer_write(w, path)) return 1;
    kvs_gguf_writer_free(w);
    printf("wrote seeds to %s\n", dir);
    return 0;
}

/* I32 (DeepSeek V4's hash table) and MXFP4 (its routed experts) tensors:
 * read with the right sizes; an MXFP4 row that is not a whole number of
 * 32-blocks is refused with the type named. */
static void test_table_types(void) {
    for (int bad = 0; bad < 2; bad++) {
        tb b = {0};
        tb_header(&b, 3, 2, 1);
        tb_kv_str(&b, "general.architecture", "x");
        const int64_t ne_i[2] = {3, 2}, ne_m[2] = {bad ? 48 : 64, 2};
        tb_tensor(&b, "ids", 2, ne_i, KVS_TYPE_I32, 0);
        tb_tensor(&b, "experts", 2, ne_m, KVS_TYPE_MXFP4, 32);
        tb_pad(&b, 32);
        for (int32_t v = 0; v < 6; v++) tb_raw(&b, &v, 4);
        tb_pad(&b, 32);
        tb_fill(&b, 68, 7);
        kvs_gguf *g = NULL;
        kvs_status st = kvs_gguf_open_memory(b.p, b.len, &g);
        if (!bad) {
            CHECKF(st == KVS_OK, "i32 + mxfp4: %s", kvs_last_error());
            const kvs_gguf_tensor *ti = g ? kvs_gguf_find_tensor(g, "ids") : NULL;
            const kvs_gguf_tensor *tm = g ? kvs_gguf_find_tensor(g, "experts") : NULL;
            CHECK(ti && ti->type == KVS_TYPE_I32 && ti->nbytes == 24 && ((const int32_t *)ti->data)[5] == 5);
            CHECK(tm && tm->type == KVS_TYPE_MXFP4 && tm->nbytes == 68);
        } else {
            CHECKF(st == KVS_ERR_FORMAT && strstr(kvs_last_error(), "mxfp4"), "mxfp4 ne[0]=48: %d '%s'", st,
                   kvs_last_error());
        }
        kvs_gguf_close(g);
        free(b.p);
    }
}

int main(int argc, char **argv) {
    init_fixtures();
    if (argc == 3 && strcmp(argv[1], "--seeds") == 0) {
        int rc = write_seeds(argv[2]);
        free(g_vocab);
        free(g_vocab_buf);
        return rc;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/kvs_test_gguf.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_base_and_prefixes();
    test_hostile_patches();
    test_hostile_structural();
    test_table_types();
    test_roundtrip();
    test_writer_errors();
    test_model();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_dir);
    free(g_vocab);
    free(g_vocab_buf);
    return test_finish("test_gguf");
}
