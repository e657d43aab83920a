/* The deepseek2 architecture (MLA + MoE) against an independent float64
 * numpy forward pass.
 *
 * Fixtures (scripts/gen_fixture_deepseek2.py, random weights, tensor names
 * and keys as llama.cpp's converter writes them):
 *   deepseek2_a.gguf  V2-Lite-like: no query LoRA, softmax gating, 1 leading
 *                     dense layer, YaRN (factor 4), split attn_k_b/attn_v_b
 *   deepseek2_b.gguf  V3-like: query LoRA, sigmoid gating with exp_probs_b,
 *                     normalized weights, routed scale 2.5, 4 groups (2 used),
 *                     YaRN factor 40 (mscale^2 = 1.87 in the attention scale)
 *   deepseek2_c.gguf  the weights of (a) in the legacy combined attn_kv_b
 *                     format: must give (a)'s logits
 *   deepseek2_d.gguf  (a) with 16 heads and latent 64 + rope 32: decode
 *                     runs the many-head latent kernel (attn_latent.h)
 * Reference (scripts/ref_numpy_deepseek2.py, float64, EXPANDED attention
 * per head, from the DeepSeek papers and model.py):
 *   a: ref_numpy_deepseek2.py deepseek2_a.gguf deepseek2_a.ref.gguf --seed 2
 *   b: ref_numpy_deepseek2.py deepseek2_b.gguf deepseek2_b.ref.gguf --seed 8
 *   d: ref_numpy_deepseek2.py deepseek2_d.gguf deepseek2_d.ref.gguf --seed 6
 * 64 tokens; the reference refuses seeds whose closest expert/group choice is
 * within 1e-4 (here >= 1.3e-3), so float32 rounding cannot flip a routing.
 *
 * Checked paths, each against all 64 rows of reference logits: one prefill
 * chunk, several chunks (uneven calls 5+17+1+41, and n_batch 16 splitting one
 * call), token-by-token decode, 1 and 2 threads.
 *
 * Error = max |got - ref| / max |ref| over all logits. Tolerance with an f32
 * KV cache: 1e-5. Weights are f16 (exactly representable; kvslim multiplies
 * them with f32 activations), so what remains is f32 arithmetic through 3
 * layers (observed <= 7.4e-7 over all paths). A real defect (wrong YaRN ramp,
 * missing mscale, rope on the wrong pairs, a routing or normalization error,
 * absorbed != expanded) moves logits by >= 1e-2. With an f16 cache (the
 * default) the stored latent is rounded to 2^-11: tolerance 5e-3. With a
 * q8_0 cache (d only: its rows are whole 32-element blocks) token-by-token
 * decode stores rows rounded to absmax/254 and, with 16 heads, scores them
 * with the query quantized the same way (int8 path): tolerance 5e-2.
 *
 * Also: malformed files (a missing tensor, misshaped tensors) fail to load
 * with KVS_ERR_FORMAT and a message naming the tensor; a layer sharing an
 * earlier layer's latent cache runs; routing unit cases; YaRN angles against
 * a direct formula; every allocation failing in turn is a clean NOMEM. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "gguf/gguf.h"
#include "kvslim.h"
#include "ops/moe.h"
#include "ops/ops.h"
#include "test_util.h"

#define NT 64

typedef struct ref { int32_t tokens[NT]; float *logits; int32_t n_vocab; } ref;

static bool load_ref(const char *path, ref *r) {
    kvs_gguf *g = NULL;
    if (kvs_gguf_open(path, false, &g) != KVS_OK) { fprintf(stderr, "%s: %s\n", path, kvs_last_error()); return false; }
    const kvs_gguf_tensor *tt = kvs_gguf_find_tensor(g, "tokens"), *tl = kvs_gguf_find_tensor(g, "logits");
    bool ok = tt && tl && tt->ne[0] == NT && tt->type == 0 && tl->ne[1] == NT && tl->type == 0;
    if (ok) {
        for (int i = 0; i < NT; i++) r->tokens[i] = (int32_t)((const float *)tt->data)[i];
        r->n_vocab = (int32_t)tl->ne[0];
        r->logits = malloc((size_t)tl->nbytes);
        memcpy(r->logits, tl->data, (size_t)tl->nbytes);
    }
    kvs_gguf_close(g);
    return ok;
}

static double rel_err(const float *got, const float *want, size_t n) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d; /* NaN propagates as a failure */
        if (fabs(want[i]) > mw) mw = fabs(want[i]);
    }
    return md / mw;
}

static kvs_session *new_session(kvs_model *m, uint32_t n_batch, int threads, kvs_kv_type kv) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 128;
    sp.n_batch = n_batch;
    sp.n_threads = threads;
    sp.kv_type = kv;
    kvs_session *s = NULL;
    kvs_status st = kvs_session_new(m, &sp, &s);
    CHECKF(st == KVS_OK, "session: %s", kvs_last_error());
    return s;
}

static double g_worst_f32, g_worst_f16, g_worst_q8 = -1.0;

static void check_paths(const char *model_path, const ref *r) {
    kvs_model *m = NULL;
    kvs_status st = kvs_model_load(model_path, NULL, &m);
    CHECKF(st == KVS_OK, "%s: %s", model_path, kvs_last_error());
    if (!m) return;
    const size_t V = (size_t)r->n_vocab;
    float *lg = malloc(NT * V * sizeof(float));
    for (int threads = 1; threads <= 2; threads++) {
        /* one chunk */
        kvs_session *s = new_session(m, 64, threads, KVS_KV_F32);
        if (!s) break;
        CHECK(kvs_decode(s, (const kvs_token *)r->tokens, NT, true, lg) == KVS_OK);
        double e1 = rel_err(lg, r->logits, NT * V);
        /* uneven chunks */
        kvs_session_reset(s);
        static const int parts[] = {5, 17, 1, 41};
        int done = 0;
        for (int i = 0; i < 4; i++) {
            CHECK(kvs_decode(s, (const kvs_token *)r->tokens + done, (size_t)parts[i], true, lg + done * V) == KVS_OK);
            done += parts[i];
        }
        double e2 = rel_err(lg, r->logits, NT * V);
        /* token by token */
        kvs_session_reset(s);
        for (int t = 0; t < NT; t++)
            CHECK(kvs_decode(s, (const kvs_token *)r->tokens + t, 1, false, lg + t * V) == KVS_OK);
        double e3 = rel_err(lg, r->logits, NT * V);
        kvs_session_free(s);
        /* n_batch 16: the session splits one call into 4 chunks */
        s = new_session(m, 16, threads, KVS_KV_F32);
        if (!s) break;
        CHECK(kvs_decode(s, (const kvs_token *)r->tokens, NT, true, lg) == KVS_OK);
        double e4 = rel_err(lg, r->logits, NT * V);
        kvs_session_free(s);
        printf("  %s, %d thread(s), f32 KV: prefill %.2e, chunks 5+17+1+41 %.2e, decode %.2e, n_batch 16 %.2e\n",
               model_path, threads, e1, e2, e3, e4);
        double e[4] = {e1, e2, e3, e4};
        for (int i = 0; i < 4; i++) {
            CHECKF(e[i] <= 1e-5, "%s path %d: error %.3g > 1e-5", model_path, i, e[i]);
            if (e[i] > g_worst_f32 || e[i] != e[i]) g_worst_f32 = e[i];
        }
    }
    /* default f16 cache: decode token by token */
    kvs_session *s = new_session(m, 64, 2, KVS_KV_F16);
    if (s) {
        for (int t = 0; t < NT; t++)
            CHECK(kvs_decode(s, (const kvs_token *)r->tokens + t, 1, false, lg + t * V) == KVS_OK);
        double e = rel_err(lg, r->logits, NT * V);
        printf("  %s, f16 KV decode: %.2e\n", model_path, e);
        CHECKF(e <= 5e-3, "%s f16 KV: error %.3g > 5e-3", model_path, e);
        if (e > g_worst_f16 || e != e) g_worst_f16 = e;
        kvs_session_free(s);
    }
    /* q8_0 cache where the latent rows are whole blocks */
    s = strstr(model_path, "deepseek2_d") ? new_session(m, 64, 2, KVS_KV_Q8_0) : NULL;
    if (s) {
        for (int t = 0; t < NT; t++)
            CHECK(kvs_decode(s, (const kvs_token *)r->tokens + t, 1, false, lg + t * V) == KVS_OK);
        double e = rel_err(lg, r->logits, NT * V);
        printf("  %s, q8_0 KV decode: %.2e\n", model_path, e);
        CHECKF(e <= 5e-2, "%s q8_0 KV: error %.3g > 5e-2", model_path, e);
        if (e > g_worst_q8 || e != e) g_worst_q8 = e;
        kvs_session_free(s);
    }
    /* the forward writes latent rows: a rule making a layer full is refused */
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 64;
    sp.kv_layers = "1:shared=0";
    s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK); /* sharing a latent layer is fine */
    if (s) {
        CHECK(kvs_decode(s, (const kvs_token *)r->tokens, 8, false, lg) == KVS_OK);
        kvs_session_free(s);
    }
    free(lg);
    kvs_model_free(m);
}

/* Copy `src` to `dst`, dropping tensor `drop` or giving tensor `reshape`
 * the shape ne (same byte count). */
static bool write_variant(const char *src, const char *dst, const char *drop, const char *reshape,
                          uint32_t n_dims, const int64_t *ne) {
    kvs_gguf *g = NULL;
    kvs_gguf_writer *w = NULL;
    if (kvs_gguf_open(src, false, &g) != KVS_OK || kvs_gguf_writer_new(&w) != KVS_OK) return false;
    bool ok = true;
    for (uint64_t i = 0; ok && i < kvs_gguf_n_kv(g); i++) ok = kvs_gguf_writer_copy_kv(w, kvs_gguf_kv_at(g, i)) == KVS_OK;
    for (uint64_t i = 0; ok && i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        if (drop && !strcmp(t->name.s, drop)) continue;
        bool re = reshape && !strcmp(t->name.s, reshape);
        ok = kvs_gguf_writer_add_tensor(w, t->name.s, t->type, re ? n_dims : t->n_dims, re ? ne : t->ne, t->data,
                                        (size_t)t->nbytes) == KVS_OK;
    }
    ok = ok && kvs_gguf_writer_write(w, dst) == KVS_OK;
    kvs_gguf_writer_free(w);
    kvs_gguf_close(g);
    return ok;
}

static void expect_load_error(const char *path, const char *tensor) {
    kvs_model *m = NULL;
    kvs_status st = kvs_model_load(path, NULL, &m);
    const char *msg = kvs_last_error();
    CHECKF(st == KVS_ERR_FORMAT && m == NULL && strstr(msg, tensor), "%s: status %d, message '%s' (want '%s')", path,
           (int)st, msg, tensor);
    printf("  bad file -> \"%s\"\n", msg);
    kvs_model_free(m);
}

static void test_bad_files(void) {
    const char *a = "tests/data/deepseek2_a.gguf", *b = "tests/data/deepseek2_b.gguf";
    char path[] = "/tmp/kvs_test_ds2_XXXXXX.gguf";
    int fd = mkstemps(path, 5);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    CHECK(write_variant(a, path, "blk.1.attn_kv_a_mqa.weight", NULL, 0, NULL));
    expect_load_error(path, "blk.1.attn_kv_a_mqa.weight");
    const int64_t kb[4] = {32, 16, 8, 1}; /* true [32, 32, 4]: same bytes, wrong latent rank */
    CHECK(write_variant(a, path, NULL, "blk.2.attn_k_b.weight", 3, kb));
    expect_load_error(path, "blk.2.attn_k_b.weight");
    const int64_t ex[4] = {64, 32, 8, 1}; /* true [64, 16, 16] */
    CHECK(write_variant(b, path, NULL, "blk.1.ffn_up_exps.weight", 3, ex));
    expect_load_error(path, "blk.1.ffn_up_exps.weight");
    CHECK(write_variant(b, path, "blk.2.attn_q_a_norm.weight", NULL, 0, NULL));
    expect_load_error(path, "blk.2.attn_q_a_norm.weight");
    remove(path);
}

static void test_routing(void) {
    float scratch[64], w[4];
    int32_t ids[4];
    /* softmax, top 2 of 4, unnormalized, scale 1 */
    const float lg[4] = {0.0f, 2.0f, 1.0f, 2.0f};
    kvs_moe_router r = {.n_expert = 4, .n_used = 2, .gating = KVS_MOE_SOFTMAX, .scale = 1.0f};
    kvs_moe_route(&r, lg, ids, w, scratch);
    double z = 1 + 2 * exp(2.0) + exp(1.0);
    CHECK(ids[0] == 1 && ids[1] == 3); /* tie: lower index first */
    CHECK(fabs(w[0] - exp(2.0) / z) < 1e-6 && fabs(w[1] - exp(2.0) / z) < 1e-6);
    /* sigmoid: the bias moves the choice but not the weights; normalized, scaled */
    const float bias[4] = {0.0f, 0.0f, 0.5f, -0.5f};
    kvs_moe_router rs = {.n_expert = 4, .n_used = 2, .gating = KVS_MOE_SIGMOID, .norm = true, .scale = 2.5f, .bias = bias};
    kvs_moe_route(&rs, lg, ids, w, scratch);
    double s1 = 1 / (1 + exp(-2.0)), s2 = 1 / (1 + exp(-1.0));
    CHECK(ids[0] == 2 && ids[1] == 1); /* selection 1.23 (expert 2), 0.88 (1), 0.38 (3) */
    CHECK(fabs(w[0] - 2.5 * s2 / (s1 + s2)) < 1e-6 && fabs(w[1] - 2.5 * s1 / (s1 + s2)) < 1e-6);
    /* groups: 4 groups of 2, keep 1; the best single expert (7) is in a
     * group whose top-2 sum loses to group 1 */
    const float lg8[8] = {0.1f, 0.2f, 0.9f, 0.8f, 0.0f, 0.0f, 0.0f, 1.0f};
    const float zb[8] = {0};
    kvs_moe_router rg = {.n_expert = 8, .n_used = 2, .n_group = 4, .n_group_used = 1, .gating = KVS_MOE_SIGMOID,
                         .norm = true, .scale = 1.0f, .bias = zb};
    kvs_moe_route(&rg, lg8, ids, w, scratch);
    CHECK(ids[0] == 2 && ids[1] == 3);
    rg.bias = NULL; /* without bias a group scores its best expert: group 3 wins */
    rg.n_used = 1;
    kvs_moe_route(&rg, lg8, ids, w, scratch);
    CHECK(ids[0] == 7 && fabs(w[0] - 1.0) < 1e-6);
}

static void test_yarn(void) {
    kvs_rope r = {.mode = KVS_ROPE_NORM, .n_dims = 16, .freq_base = 10000.0f, .freq_scale = 0.25f};
    kvs_rope_yarn(&r, 256, 32.0f, 1.0f, 1.0f);
    CHECK(r.yarn_low == 0.0f && r.yarn_high == 4.0f); /* 16*ln(256/(2 pi b))/(2 ln 1e4): b=32 -> 0.2, b=1 -> 3.2 */
    float x[16], y[16];
    for (int i = 0; i < 16; i++) x[i] = y[i] = (float)(i + 1) * 0.1f;
    int32_t pos = 37;
    kvs_rope_apply(&r, y, 1, 1, 16, &pos);
    double worst = 0;
    for (int i = 0; i < 8; i++) {
        double ex = 37.0 * pow(10000.0, -2.0 * i / 16.0), ramp = i / 4.0 > 1 ? 1 : i / 4.0;
        double th = ex * 0.25 * ramp + ex * (1 - ramp); /* low pairs extrapolate, high pairs interpolate */
        double a = x[2 * i] * cos(th) - x[2 * i + 1] * sin(th), b = x[2 * i] * sin(th) + x[2 * i + 1] * cos(th);
        worst = fmax(worst, fmax(fabs(a - y[2 * i]), fabs(b - y[2 * i + 1])));
    }
    CHECKF(worst < 1e-5, "yarn angle error %.3g", worst);
}

/* Failing each allocation in turn during load, session creation and a
 * decode of fixture b (LoRA, MoE workspace) gives KVS_ERR_NOMEM and frees
 * everything (ASan builds check the leaks), until the run succeeds. */
static void test_alloc_failures(void) {
    int nomem = 0, ok = 0;
    for (int64_t n = 0; n < 100000; n++) {
        kvs_alloc_fail_after(n);
        kvs_model *m = NULL;
        kvs_session *s = NULL;
        kvs_status st = kvs_model_load("tests/data/deepseek2_b.gguf", NULL, &m);
        if (st == KVS_OK) {
            kvs_session_params sp = kvs_session_params_default();
            sp.n_ctx = 32;
            sp.n_threads = 1; /* cleanup paths, not threading: keep it quick */
            st = kvs_session_new(m, &sp, &s);
        }
        if (st == KVS_OK) {
            kvs_token t[3] = {5, 6, 7};
            st = kvs_decode(s, t, 3, false, NULL);
        }
        kvs_alloc_fail_after(-1);
        kvs_session_free(s);
        kvs_model_free(m);
        if (st == KVS_OK) { ok = 1; break; }
        if (st != KVS_ERR_NOMEM) {
            CHECKF(0, "allocation %lld failing gave %d: %s", (long long)n, (int)st, kvs_last_error());
            break;
        }
        nomem++;
    }
    printf("  allocation failure injected at each of %d allocations: all KVS_ERR_NOMEM, then success\n", nomem);
    CHECK(ok && nomem > 10);
}

int main(void) {
    test_routing();
    test_yarn();
    ref ra = {0}, rb = {0}, rd = {0};
    bool oka = load_ref("tests/data/deepseek2_a.ref.gguf", &ra), okb = load_ref("tests/data/deepseek2_b.ref.gguf", &rb);
    bool okd = load_ref("tests/data/deepseek2_d.ref.gguf", &rd);
    CHECK(oka && okb && okd);
    if (oka) check_paths("tests/data/deepseek2_a.gguf", &ra);
    if (oka) check_paths("tests/data/deepseek2_c.gguf", &ra);
    if (okb) check_paths("tests/data/deepseek2_b.gguf", &rb);
    if (okd) check_paths("tests/data/deepseek2_d.gguf", &rd);
    CHECK(g_worst_q8 >= 0.0); /* the q8_0 path ran */
    printf("  worst: f32 KV %.2e (tolerance 1e-5), f16 KV %.2e (tolerance 5e-3), q8_0 KV %.2e (tolerance 5e-2)\n",
           g_worst_f32, g_worst_f16, g_worst_q8);
    test_bad_files();
    test_alloc_failures();
    free(ra.logits);
    free(rb.logits);
    free(rd.logits);
    return test_finish("test_deepseek2");
}
