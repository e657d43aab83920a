/* Hostile hyper-parameters in GGUF metadata: each is a clear error naming
 * the key, at load and in the planner alike (src/model/hparams.c), instead
 * of a silent default or a misleading message further on:
 *   - attention.layer_norm_rms_epsilon NaN, negative, zero or infinite (NaN
 *     made every logit NaN and sampling returned token 0 forever);
 *   - context_length 0 or above the session's cap of 2^26 (2^32 - 1 used to
 *     be shown as the training context by `plan` and replaced by 2048 at load);
 *   - attention.head_count_kv as a per-layer array: values that differ are
 *     "per-layer KV head counts are not supported" at load and in the plan
 *     (the load said a tensor had the wrong shape while the plan accepted
 *     the file); one value repeated reads as that value in both;
 *   - a planner-only architecture keeps its per-layer KV head counts.
 * The files are metadata-only llama GGUFs written here: the loader checks
 * hyper-parameters before any tensor, so a file that passes them fails
 * later, on the first missing tensor. */
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "gguf/gguf.h"
#include "kvslim.h"
#include "plan/plan.h"
#include "test_util.h"

static char g_path[64];

typedef struct extra {
    const char *arch;                 /* default llama */
    bool eps_set; float eps;
    bool ctx_set; uint32_t ctx;
    const int32_t *hkv; uint32_t n_hkv; /* head_count_kv as an i32 array */
} extra;

#define N_LAYER 4

static void write_file(const extra *x) {
    const char *arch = x->arch ? x->arch : "llama";
    char k[96];
    kvs_gguf_writer *w = NULL;
    CHECK(kvs_gguf_writer_new(&w) == KVS_OK);
    if (!w) return;
    kvs_gguf_writer_set_str(w, "general.architecture", arch);
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    kvs_gguf_writer_set_u32(w, KEY("block_count"), N_LAYER);
    kvs_gguf_writer_set_u32(w, KEY("embedding_length"), 64);
    kvs_gguf_writer_set_u32(w, KEY("feed_forward_length"), 128);
    kvs_gguf_writer_set_u32(w, KEY("attention.head_count"), 4);
    if (x->eps_set) kvs_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), x->eps);
    if (x->ctx_set) kvs_gguf_writer_set_u32(w, KEY("context_length"), x->ctx);
    if (x->hkv) {
        kvs_gguf_kv kv;
        memset(&kv, 0, sizeof kv);
        kv.key.s = KEY("attention.head_count_kv");
        kv.key.len = strlen(kv.key.s);
        kv.type = KVS_GGUF_ARRAY;
        kv.v.arr.type = KVS_GGUF_I32;
        kv.v.arr.n = x->n_hkv;
        kv.v.arr.data = (const uint8_t *)x->hkv;
        CHECK(kvs_gguf_writer_copy_kv(w, &kv) == KVS_OK);
    } else {
        kvs_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), 2);
    }
#undef KEY
    float data[64] = {0};
    int64_t ne[1] = {64};
    kvs_gguf_writer_add_tensor(w, "output_norm.weight", KVS_TYPE_F32, 1, ne, data, sizeof data);
    CHECKF(kvs_gguf_writer_write(w, g_path) == KVS_OK, "%s", kvs_last_error());
    kvs_gguf_writer_free(w);
}

/* Load fails with want, naming needle. */
static void expect_load(const char *label, const extra *x, kvs_status want, const char *needle) {
    write_file(x);
    kvs_model *m = NULL;
    kvs_status st = kvs_model_load(g_path, NULL, &m);
    CHECKF(st == want && !m && strstr(kvs_last_error(), needle), "%s: load gave %s '%s' (want %s naming '%s')", label,
           kvs_status_name(st), kvs_last_error(), kvs_status_name(want), needle);
    kvs_model_free(m);
}

/* Plan: fails with want naming needle (want != OK), or succeeds. */
static void expect_plan(const char *label, const extra *x, kvs_status want, const char *needle, kvs_plan_model *keep) {
    write_file(x);
    kvs_plan_model pm = {0};
    kvs_status st = kvs_plan_from_gguf(g_path, &pm);
    if (want == KVS_OK) {
        CHECKF(st == KVS_OK, "%s: plan failed: %s", label, kvs_last_error());
    } else {
        CHECKF(st == want && strstr(kvs_last_error(), needle), "%s: plan gave %s '%s' (want %s naming '%s')", label,
               kvs_status_name(st), kvs_last_error(), kvs_status_name(want), needle);
    }
    if (st == KVS_OK) {
        if (keep) *keep = pm;
        else kvs_plan_model_free(&pm);
    }
}

static void test_eps(void) {
    const float bad[] = {NAN, -1e-5f, 0.0f, INFINITY, -INFINITY, 2.0f};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char label[32];
        snprintf(label, sizeof label, "eps %g", (double)bad[i]);
        extra x = {.eps_set = true, .eps = bad[i]};
        expect_load(label, &x, KVS_ERR_FORMAT, "llama.attention.layer_norm_rms_epsilon");
    }
    /* a good one passes the hyper-parameters: the first missing tensor next */
    extra ok = {.eps_set = true, .eps = 1e-5f};
    expect_load("eps 1e-5", &ok, KVS_ERR_FORMAT, "token_embd.weight");
}

static void test_context(void) {
    const uint32_t bad[] = {0xFFFFFFFFu, (1u << 26) + 1, 0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char label[48];
        snprintf(label, sizeof label, "context_length %u", bad[i]);
        extra x = {.ctx_set = true, .ctx = bad[i]};
        expect_load(label, &x, KVS_ERR_FORMAT, "llama.context_length");
        expect_plan(label, &x, KVS_ERR_FORMAT, "llama.context_length", NULL);
        /* planner-only architectures get the same check */
        extra y = x;
        y.arch = "openelm";
        expect_plan(label, &y, KVS_ERR_FORMAT, "openelm.context_length", NULL);
    }
    extra cap = {.ctx_set = true, .ctx = 1u << 26};
    expect_load("context_length 2^26", &cap, KVS_ERR_FORMAT, "token_embd.weight");
    kvs_plan_model pm = {0};
    expect_plan("context_length 2^26", &cap, KVS_OK, NULL, &pm);
    if (pm.n_layer) {
        CHECK(pm.n_ctx_train == (1u << 26));
        kvs_plan_model_free(&pm);
    }
}

static void test_kv_heads(void) {
    static const int32_t differ[N_LAYER] = {2, 2, 1, 2};
    extra x = {.hkv = differ, .n_hkv = N_LAYER};
    expect_load("head_count_kv 2,2,1,2", &x, KVS_ERR_UNSUPPORTED, "per-layer KV head counts are not supported");
    expect_plan("head_count_kv 2,2,1,2", &x, KVS_ERR_UNSUPPORTED, "per-layer KV head counts are not supported", NULL);
    CHECK(strstr(kvs_last_error(), "architecture llama") != NULL);
    /* wrong length, zero heads */
    static const int32_t short_arr[2] = {2, 2}, zero[N_LAYER] = {0, 0, 0, 0};
    extra s = {.hkv = short_arr, .n_hkv = 2};
    expect_load("head_count_kv of 2 for 4 layers", &s, KVS_ERR_FORMAT, "llama.attention.head_count_kv");
    expect_plan("head_count_kv of 2 for 4 layers", &s, KVS_ERR_FORMAT, "llama.attention.head_count_kv", NULL);
    extra z = {.hkv = zero, .n_hkv = N_LAYER};
    expect_load("head_count_kv 0", &z, KVS_ERR_FORMAT, "llama.attention.head_count_kv");
    expect_plan("head_count_kv 0", &z, KVS_ERR_FORMAT, "llama.attention.head_count_kv", NULL);
    /* one value repeated: read as that value, by both */
    static const int32_t same[N_LAYER] = {2, 2, 2, 2};
    extra u = {.hkv = same, .n_hkv = N_LAYER};
    expect_load("head_count_kv 2,2,2,2", &u, KVS_ERR_FORMAT, "token_embd.weight");
    kvs_plan_model pm = {0};
    expect_plan("head_count_kv 2,2,2,2", &u, KVS_OK, NULL, &pm);
    if (pm.n_layer) {
        /* f16: 4 layers x 2 heads x (16 + 16) x 2 bytes */
        CHECK(kvs_plan_kv_bytes(&pm, 1) == 4 * 2 * 32 * 2);
        kvs_plan_model_free(&pm);
    }
    /* an architecture only the planner models keeps per-layer counts */
    extra o = x;
    o.arch = "openelm";
    memset(&pm, 0, sizeof pm);
    expect_plan("openelm head_count_kv 2,2,1,2", &o, KVS_OK, NULL, &pm);
    if (pm.n_layer) {
        CHECK(kvs_plan_kv_bytes(&pm, 1) == (2 + 2 + 1 + 2) * 32 * 2);
        kvs_plan_model_free(&pm);
    }
}

int main(void) {
    snprintf(g_path, sizeof g_path, "/tmp/kvs_test_hparams_XXXXXX");
    int fd = mkstemp(g_path);
    if (fd < 0) { perror("mkstemp"); return 1; }
    close(fd);
    test_eps();
    test_context();
    test_kv_heads();
    remove(g_path);
    return test_finish("hparams");
}
