/* qwen3 (llama-style blocks with a per-head RMSNorm of q and k before RoPE,
 * head_dim from key_length, decoupled from n_embd / n_head) and the KV scheme
 * machinery on it. tests/data/qwen3_tiny.gguf (scripts/gen_fixture_qwen3.py):
 * 4 layers, hidden 64, 4 x 32 query heads (128 != 64), 2 KV heads, tied
 * embeddings. Its logits are checked against llama.cpp in tests/test_peer.c;
 * here:
 *   - the hyper-parameters (head size 32, not 64 / 4 = 16) and the bytes per
 *     token every consumer reports (the scheme, the allocator, the formula);
 *   - prefill in chunks == token-by-token decode (f32 cache: max 1e-5 of
 *     the logit RMS; observed 4.7e-6);
 *   - KV schemes on the 32-dim heads against the f32 cache over 160 tokens:
 *     RMS of the logit difference relative to the logit RMS, bounds 2.3-4x
 *     the observed values (5.2e-4, 1.3e-2, 0.20, 0.17): f16 2e-3, q8_0
 *     (Hadamard-rotated) 3e-2, q4_0 (rotated) and per-channel q4k4v 0.5 (4-bit keys
 *     move logits visibly; a cache read of the wrong rows is O(1): the
 *     window run below shows 3x the logit RMS at the max); window=64+4:
 *     identical to the full cache while the window holds every position
 *     (< 68 tokens), then different; h2o=64+16 runs; after every run the
 *     allocator's bytes equal the scheme formula;
 *   - a qwen3 file without attn_q_norm is refused with the tensor named. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "kvslim.h"
#include "model/model.h"
#include "test_util.h"

#define FIXTURE "tests/data/qwen3_tiny.gguf"
#define N 160

static kvs_token g_tok[N];

static double rms(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s / (double)n);
}

static double rms_diff(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d == d ? d : INFINITY;
    }
    return m;
}

/* All N positions' logits with the given rules; decode = one token per call. */
static float *run(kvs_model *m, kvs_kv_type kv, const char *rules, bool decode, uint32_t V, uint64_t *bytes_ok) {
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = 256;
    sp.n_batch = 48;
    sp.n_threads = 2;
    sp.kv_type = kv;
    sp.kv_layers = rules;
    kvs_session *s = NULL;
    kvs_status st = kvs_session_new(m, &sp, &s);
    CHECKF(st == KVS_OK, "session (%s): %s", rules ? rules : "-", kvs_last_error());
    if (st != KVS_OK) return NULL;
    float *out = malloc(sizeof(float) * (size_t)N * V);
    if (decode) {
        for (int i = 0; st == KVS_OK && i < N; i++) st = kvs_decode(s, g_tok + i, 1, false, out + (size_t)i * V);
    } else {
        st = kvs_decode(s, g_tok, N, true, out);
    }
    CHECKF(st == KVS_OK, "decode (%s): %s", rules ? rules : "-", kvs_last_error());
    if (bytes_ok) *bytes_ok = kvs_session_kv_bytes(s) == kvs_session_kv_bytes_at(s, N);
    kvs_session_free(s);
    if (st != KVS_OK) { free(out); return NULL; }
    return out;
}

static void check_missing_norm(void) {
    /* rewrite the fixture with blk.1.attn_q_norm.weight renamed */
    size_t len = 0;
    char *buf = test_read_file(FIXTURE, &len);
    CHECK(buf != NULL);
    if (!buf) return;
    const char *needle = "blk.1.attn_q_norm.weight";
    char *p = NULL;
    for (size_t i = 0; i + strlen(needle) <= len; i++)
        if (memcmp(buf + i, needle, strlen(needle)) == 0) { p = buf + i; break; }
    CHECK(p != NULL);
    if (p) {
        p[10] = 'x'; /* attn_q_norm -> attn_x_norm */
        char path[] = "/tmp/kvs_qwen3_XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        if (fd >= 0) {
            FILE *f = fdopen(fd, "wb");
            CHECK(f && fwrite(buf, 1, len, f) == len);
            if (f) fclose(f);
            kvs_model *m = NULL;
            kvs_status st = kvs_model_load(path, NULL, &m);
            CHECKF(st != KVS_OK && strstr(kvs_last_error(), "blk.1.attn_q_norm.weight"),
                   "missing q_norm: status %d, '%s'", st, kvs_last_error());
            printf("  without blk.1.attn_q_norm: \"%s\"\n", kvs_last_error());
            kvs_model_free(m);
            remove(path);
        }
    }
    free(buf);
}

int main(void) {
    kvs_model *m = NULL;
    kvs_status st = kvs_model_load(FIXTURE, NULL, &m);
    CHECKF(st == KVS_OK, "load: %s", kvs_last_error());
    if (st != KVS_OK) return test_finish("qwen3");
    kvs_model_info info;
    kvs_model_get_info(m, &info);
    CHECK(strcmp(m->arch_name, "qwen3") == 0);
    CHECK(m->hp.n_embd == 64 && m->hp.n_head == 4 && m->hp.n_head_kv == 2 && m->hp.head_dim_k == 32 &&
          m->hp.head_dim_v == 32 && m->hp.rope.mode == KVS_ROPE_NEOX && m->hp.rope.n_dims == 32);
    CHECK(m->layers[0].q_norm && m->layers[3].k_norm && !m->layers[0].bq);
    const uint32_t V = (uint32_t)info.n_vocab;
    uint64_t rng = 31;
    for (int i = 0; i < N; i++) g_tok[i] = (kvs_token)(3 + test_rng_next(&rng) % (V - 3));

    uint64_t ok = 0;
    float *ref = run(m, KVS_KV_F32, NULL, false, V, &ok);
    CHECK(ref && ok);
    if (!ref) return test_finish("qwen3");
    const size_t nv = (size_t)N * V;
    const double r = rms(ref, nv);
    float *dec = run(m, KVS_KV_F32, NULL, true, V, &ok);
    if (dec) {
        double e = max_diff(dec, ref, nv) / r;
        printf("  f32 cache: decode vs prefill max %.2e (of logit rms %.2f)\n", e, r);
        CHECK(e <= 1e-5 && ok);
        free(dec);
    }

    struct { const char *rules; kvs_kv_type kv; double bound; } schemes[] = {
        {NULL, KVS_KV_F16, 2e-3},
        {"q8_0", KVS_KV_F16, 3e-2},
        {"q4_0", KVS_KV_F16, 0.5},
        {"q4k4v", KVS_KV_F16, 0.5},
    };
    for (size_t k = 0; k < sizeof schemes / sizeof *schemes; k++) {
        float *y = run(m, schemes[k].kv, schemes[k].rules, false, V, &ok);
        if (!y) continue;
        double e = rms_diff(y, ref, nv) / r, mx = max_diff(y, ref, nv) / r;
        printf("  %-6s vs f32 cache: rms %.2e (bound %.0e), max %.2e, of the logit rms\n",
               schemes[k].rules ? schemes[k].rules : "f16", e, schemes[k].bound, mx);
        CHECKF(e <= schemes[k].bound && ok, "%s: %.3e", schemes[k].rules ? schemes[k].rules : "f16", e);
        free(y);
    }
    /* window 64 + 4 sinks: exact while it holds every position, then not */
    float *w = run(m, KVS_KV_F32, "window=64+4", true, V, &ok);
    if (w) {
        double early = max_diff(w, ref, (size_t)68 * V) / r;
        double late = max_diff(w + (size_t)120 * V, ref + (size_t)120 * V, (size_t)40 * V) / r;
        printf("  window=64+4: positions < 68 max %.2e, positions 120-159 max %.2e\n", early, late);
        CHECK(early <= 1e-5 && late > 1e-3 && ok);
        free(w);
    }
    float *h = run(m, KVS_KV_F32, "h2o=64+16", true, V, &ok);
    if (h) {
        double e = rms_diff(h, ref, nv) / r;
        printf("  h2o=64+16: rms %.2e of the logit rms\n", e);
        CHECK(isfinite(e) && ok);
        free(h);
    }
    free(ref);
    check_missing_norm();
    kvs_model_free(m);
    return test_finish("qwen3");
}
