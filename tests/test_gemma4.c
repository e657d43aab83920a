/* Gemma 4 (E2B/E4B-style) on a small random-weight GGUF fixture
 * (scripts/gen_fixture_gemma4.py -> tests/data/gemma4_tiny.gguf: 7 layers,
 * sliding/global pattern, window 16, per-layer embeddings, the last 3 layers
 * sharing the KV of layer 2 (sliding) and layer 3 (global), one layer with
 * V = K, proportional rope_freqs, soft-capped logits) against an independent
 * float64 numpy forward pass (scripts/ref_numpy_gemma4.py ->
 * tests/data/gemma4_tiny_ref.json), all 64 positions x 96 logits:
 *   - prefill of the 64 tokens in one chunk, token-by-token decode, chunks
 *     of 7 and 16, and a 40-token prefill followed by decode, with the
 *     default 256-token pages and with 8-token pages (the 16-slot rings of
 *     the sliding layers then wrap four times, and a chunk longer than the
 *     ring is staged while the shared layers read the ring), with an f32
 *     cache: max |dlogit| <= LOGIT_TOL_F32 (observed 8e-5: f32 arithmetic
 *     against f64 on logits of scale ~19 max / 4.3 std; the f16 weights are
 *     exact in both), and with the default f16 cache: <= LOGIT_TOL (observed
 *     0.044, all of it the f16 rounding of stored K/V). Storing a shared
 *     ring's chunk before its sharers read it (the bug this guards) gives
 *     7.6-8.4.
 *   - shared layers allocate nothing: no pages, and the cache holds exactly
 *     the 4 own layers' pages (the allocator's count = the scheme formula);
 *   - the staged chunk of a shared ring is stored by re-encoding its decoded
 *     rows: that round trip is exact for every KV row format;
 *   - every allocation failing in turn (load, session with per-layer
 *     embedding buffers, decode) gives KVS_ERR_NOMEM, never a crash;
 *   - bad input: a gemma4 GGUF missing a tensor or with an inconsistent
 *     shape fails to load with an error naming the tensor; a window rule
 *     that puts a windowed layer with its own ring between a ring and its
 *     sharers is refused with a clear error. */
#include <string.h>
#include <unistd.h>

#include "kvslim.h"
#include "core/alloc.h"
#include "core/dtype.h"
#include "core/json.h"
#include "gguf/gguf.h"
#include "model/session.h"
#include "test_util.h"

#define FIXTURE "tests/data/gemma4_tiny.gguf"
#define REF "tests/data/gemma4_tiny_ref.json"
#define LOGIT_TOL 0.15
#define LOGIT_TOL_F32 1e-3

static const kvs_json *g_logits;
static kvs_token g_toks[64];
static int g_n;
static int32_t g_vocab;

static double max_err(const float *out, int first, int n) {
    double md = 0;
    for (int i = 0; i < n; i++)
        for (int32_t v = 0; v < g_vocab; v++) {
            double d = fabs(out[(size_t)i * g_vocab + v] - kvs_json_at(kvs_json_at(g_logits, first + i), v)->num);
            if (d > md) md = d;
        }
    return md;
}

/* Decode the sequence: `prefill` tokens in chunks of `batch`, then the rest
 * one at a time; compare every position's logits with the reference. */
static void run(kvs_model *m, uint32_t batch, int prefill, uint32_t page, kvs_kv_type kt) {
    kvs_session_params sp = kvs_session_params_default();
    sp.kv_type = kt;
    sp.n_ctx = 128;
    sp.n_batch = batch;
    sp.kv_page = page;
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_OK);
    if (!s) return;
    float *out = malloc(sizeof(float) * (size_t)g_n * (size_t)g_vocab);
    CHECK(kvs_decode(s, g_toks, (size_t)prefill, true, out) == KVS_OK);
    for (int i = prefill; i < g_n; i++)
        CHECK(kvs_decode(s, g_toks + i, 1, false, out + (size_t)i * g_vocab) == KVS_OK);
    double e = max_err(out, 0, g_n);
    double tol = kt == KVS_KV_F32 ? LOGIT_TOL_F32 : LOGIT_TOL;
    printf("%s cache, pages %3u, %2d-token prefill in chunks of %2u, then decode: max |dlogit| vs f64 %.2e\n",
           kvs_kv_type_name(kt), page ? page : 256, prefill, batch, e);
    CHECKF(e <= tol, "batch %u prefill %d page %u: max |dlogit| %.4g", batch, prefill, page, e);

    /* shared layers own no storage; the cache holds the own layers' pages */
    const kvs_kv_cache *kv = s->kv;
    for (int l = 4; l < 7; l++) CHECK(kv->layers[l].pages == NULL && kv->layers[l].n_pages_alloc == 0);
    CHECK(kv->layers[4].source == 2 && kv->layers[5].source == 2 && kv->layers[6].source == 3);
    uint64_t row = 2 * 32 * (kt == KVS_KV_F32 ? 4 : 2); /* K + V, one head of 32 */
    uint64_t want = page == 8 ? 2 * (16 * row) + 2 * (64 * row) : 4 * (256 * row);
    CHECKF(kvs_session_kv_bytes(s) == want && kvs_session_kv_bytes_at(s, (uint64_t)g_n) == want,
           "KV bytes %llu, formula %llu, expected %llu", (unsigned long long)kvs_session_kv_bytes(s),
           (unsigned long long)kvs_session_kv_bytes_at(s, (uint64_t)g_n), (unsigned long long)want);
    free(out);
    kvs_session_free(s);
}

static void check_round_trip(void) {
    const kvs_dtype types[] = {KVS_TYPE_F32, KVS_TYPE_F16, KVS_TYPE_BF16, KVS_TYPE_Q8_0, KVS_TYPE_Q4_0};
    uint64_t rng = 11;
    float x[256], y[256];
    uint8_t a[1024], b[1024];
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const kvs_type_traits *tr = kvs_type_traits_of(types[ti]);
        int bad = 0;
        for (int rep = 0; rep < 50; rep++) {
            for (int i = 0; i < 256; i++) x[i] = (rep % 5 + 1) * test_rng_normal(&rng);
            tr->from_float(x, a, 256);
            tr->to_float(a, y, 256);
            tr->from_float(y, b, 256);
            bad += memcmp(a, b, kvs_row_bytes(types[ti], 256)) != 0;
        }
        CHECKF(bad == 0, "%s: encode(decode(row)) differs in %d of 50 rows", kvs_dtype_name(types[ti]), bad);
    }
}

/* Copy the fixture without tensor `drop`, or with `reshape` given ne
 * swapped, to path; load it and expect an error naming the tensor. */
static void check_bad(const char *drop, const char *reshape) {
    kvs_gguf *g = NULL;
    CHECK(kvs_gguf_open(FIXTURE, false, &g) == KVS_OK);
    if (!g) return;
    kvs_gguf_writer *w = NULL;
    CHECK(kvs_gguf_writer_new(&w) == KVS_OK);
    for (uint64_t i = 0; i < kvs_gguf_n_kv(g); i++) CHECK(kvs_gguf_writer_copy_kv(w, kvs_gguf_kv_at(g, i)) == KVS_OK);
    for (uint64_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        if (drop && strcmp(t->name.s, drop) == 0) continue;
        int64_t ne[KVS_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (reshape && strcmp(t->name.s, reshape) == 0) { int64_t tmp = ne[0]; ne[0] = ne[1]; ne[1] = tmp; }
        CHECK(kvs_gguf_writer_add_tensor(w, t->name.s, t->type, t->n_dims, ne, t->data, t->nbytes) == KVS_OK);
    }
    char path[64]; /* not under build/: `make SAN=1 test` has only build-san/ */
    snprintf(path, sizeof path, "/tmp/kvslim_gemma4_bad_%ld.gguf", (long)getpid());
    CHECK(kvs_gguf_writer_write(w, path) == KVS_OK);
    kvs_gguf_writer_free(w);
    kvs_gguf_close(g);
    kvs_model *m = NULL;
    kvs_status st = kvs_model_load(path, NULL, &m);
    const char *name = drop ? drop : reshape;
    printf("%s %s: %s\n", drop ? "without" : "reshaped", name, kvs_last_error());
    CHECKF(st == KVS_ERR_FORMAT && !m && strstr(kvs_last_error(), name), "%s: status %d, '%s'", name, (int)st,
           kvs_last_error());
    kvs_model_free(m);
    remove(path);
}

static void check_alloc_failures(void) {
    int nomem = 0, ok = 0;
    for (int64_t n = 0; n < 100000; n++) {
        kvs_alloc_fail_after(n);
        kvs_model *m = NULL;
        kvs_session *s = NULL;
        kvs_status st = kvs_model_load(FIXTURE, NULL, &m);
        if (st == KVS_OK) {
            kvs_session_params sp = kvs_session_params_default();
            sp.n_ctx = 32;
            sp.n_batch = 8;
            sp.kv_page = 8;
            st = kvs_session_new(m, &sp, &s);
        }
        if (st == KVS_OK) st = kvs_decode(s, g_toks, 20, false, NULL);
        kvs_alloc_fail_after(-1);
        kvs_session_free(s);
        kvs_model_free(m);
        if (st == KVS_OK) { ok = 1; break; }
        if (st != KVS_ERR_NOMEM) { CHECKF(0, "allocation %lld failing gave %s: %s", (long long)n, kvs_status_name(st), kvs_last_error()); break; }
        nomem++;
    }
    printf("allocation failure injected at each of %d allocations: all KVS_ERR_NOMEM, then success\n", nomem);
    CHECK(ok && nomem > 10);
}

int main(void) {
    size_t jl;
    char *jtext = test_read_file(REF, &jl);
    kvs_json *ref = NULL;
    CHECK(jtext && kvs_json_parse(jtext, jl, &ref) == KVS_OK);
    kvs_model *m = NULL;
    CHECK(kvs_model_load(FIXTURE, NULL, &m) == KVS_OK);
    if (!ref || !m) return test_finish("gemma4");
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    CHECK(strcmp(info.arch, "gemma4") == 0 && info.n_layer == 7);
    g_vocab = info.n_vocab;
    const kvs_json *tk = kvs_json_get(ref, "tokens");
    g_logits = kvs_json_get(ref, "logits");
    g_n = (int)tk->n;
    CHECK(g_n == 64 && g_logits->n == 64 && g_vocab == 96);
    for (int i = 0; i < g_n; i++) g_toks[i] = (kvs_token)kvs_json_at(tk, i)->num;

    const uint32_t pages[2] = {0, 8};
    for (int k = 0; k < 2; k++)
        for (int p = 0; p < 2; p++) {
            kvs_kv_type kt = k ? KVS_KV_F16 : KVS_KV_F32;
            run(m, 64, 64, pages[p], kt);
            run(m, 1, 1, pages[p], kt);
            run(m, 7, 64, pages[p], kt);
            run(m, 16, 64, pages[p], kt);
            run(m, 64, 40, pages[p], kt);
        }
    check_round_trip();
    check_alloc_failures();

    /* a windowed layer with its own ring between ring 2 and its sharers */
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 64;
    sp.kv_layers = "3:window=16";
    kvs_session *s = NULL;
    CHECK(kvs_session_new(m, &sp, &s) == KVS_ERR_UNSUPPORTED && !s);
    printf("rule 3:window=16: %s\n", kvs_last_error());
    CHECK(strstr(kvs_last_error(), "layer 4 shares windowed layer 2 across windowed layer 3") != NULL);
    kvs_model_free(m);

    check_bad("blk.2.attn_k_norm.weight", NULL);
    check_bad("per_layer_model_proj.weight", NULL);
    check_bad(NULL, "blk.5.inp_gate.weight");
    check_bad(NULL, "blk.1.attn_v.weight");

    kvs_json_free(ref);
    free(jtext);
    return test_finish("gemma4");
}
