/* The server's pieces without HTTP: UTF-8 repair and boundaries, the
 * constant-time compare, OpenAI request parsing (good, wrong types, hostile)
 * and response shapes, and the prefix cache over a real engine (default
 * model; skipped without it unless KVS_REQUIRE_MODELS=1). tests/server/ runs
 * the whole server. */
#include <string.h>

#include "server/oai.h"
#include "server/prefix.h"
#include "server/util.h"
#include "test_util.h"

static void test_utf8(void) {
    CHECK(srv_utf8_complete("abc", 3) == 3);
    CHECK(srv_utf8_complete("a\xc3", 2) == 1);             /* a 2-byte lead waits */
    CHECK(srv_utf8_complete("a\xc3\xa9", 3) == 3);
    CHECK(srv_utf8_complete("\xe2\x82", 2) == 0);          /* 2 of 3 bytes */
    CHECK(srv_utf8_complete("\xf0\x9f\x98", 3) == 0);      /* 3 of 4 */
    CHECK(srv_utf8_complete("\xf0\x9f\x98\x80", 4) == 4);
    CHECK(srv_utf8_complete("x\x80", 2) == 2);             /* a stray continuation: nothing to wait for */
    CHECK(srv_utf8_complete("\xc3" "a", 2) == 2);          /* broken already */
    srv_buf b = {0};
    CHECK(srv_utf8_append(&b, "ok \xff\xc3\xa9 \xed\xa0\x80!", 11));
    CHECK(b.n == strlen("ok \xef\xbf\xbd\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!"));
    CHECK(!strcmp(b.p, "ok \xef\xbf\xbd\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!")); /* surrogates refused */
    srv_buf_free(&b);
    CHECK(srv_ct_equal("key", 3, "key", 3));
    CHECK(!srv_ct_equal("kez", 3, "key", 3));
    CHECK(!srv_ct_equal("ke", 2, "key", 3));
    CHECK(!srv_ct_equal("keyy", 4, "key", 3));
    CHECK(!srv_ct_equal("", 0, "key", 3));
}

static bool parse(oai_kind k, const char *body, oai_request *r, srv_error *e) {
    return oai_parse(k, body, strlen(body), 1000, r, e);
}

static void test_parse(void) {
    oai_request r;
    srv_error e;
    CHECK(parse(OAI_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                          "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],"
                          "\"max_tokens\":7,\"temperature\":0,\"stop\":[\"x\",\"\",\"yy\"],\"stream\":true,"
                          "\"stream_options\":{\"include_usage\":true},\"unknown\":{\"deep\":[1,2,3]},\"seed\":5,\"n\":1}",
                &r, &e));
    CHECK(r.n_msgs == 2 && !strcmp(r.msgs[0].role, "system") && !strcmp(r.msgs[1].content, "ab"));
    CHECK(r.max_tokens_set && r.max_tokens == 7 && r.temperature_set && r.temperature == 0);
    CHECK(r.n_stop == 2 && r.stop_len[1] == 2 && r.stream && r.include_usage && r.seed_set && r.seed == 5);
    CHECK(r.top_logprobs == -1 && !strcmp(r.model, "m"));
    oai_request_free(&r);
    CHECK(parse(OAI_CHAT, "{\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},{\"role\":\"assistant\",\"content\":null}],"
                          "\"logprobs\":true,\"top_logprobs\":3,\"max_tokens\":null}", &r, &e));
    CHECK(!strcmp(r.msgs[0].role, "system") && !strcmp(r.msgs[1].content, "") && r.top_logprobs == 3 && !r.max_tokens_set);
    oai_request_free(&r);
    CHECK(parse(OAI_COMPLETION, "{\"prompt\":[\"one\"],\"logprobs\":2}", &r, &e));
    CHECK(r.prompt && !strcmp(r.prompt, "one") && r.top_logprobs == 2);
    oai_request_free(&r);
    CHECK(parse(OAI_COMPLETION, "{\"prompt\":[1,2,999]}", &r, &e));
    CHECK(!r.prompt && r.n_prompt_tokens == 3 && r.prompt_tokens[2] == 999);
    oai_request_free(&r);
    struct { oai_kind k; const char *body, *msg, *param; } bad[] = {
        {OAI_CHAT, "", "malformed JSON", NULL},
        {OAI_CHAT, "{\"messages\": [", "malformed JSON", NULL},
        {OAI_CHAT, "{\"a\":1,\"a\":2}", "malformed JSON", NULL}, /* duplicate keys */
        {OAI_CHAT, "17", "malformed JSON", NULL},
        {OAI_CHAT, "[1]", "JSON object", NULL},
        {OAI_CHAT, "{}", "required", "messages"},
        {OAI_CHAT, "{\"messages\":{}}", "must be an array", "messages"},
        {OAI_CHAT, "{\"messages\":[]}", "at least one", "messages"},
        {OAI_CHAT, "{\"messages\":[7]}", "must be an object", "messages"},
        {OAI_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "role must be a string", "messages[].role"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", "content is required", "messages[].content"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":5}]}]}", "text must be", "messages[].content"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1.5}", "integer", "max_tokens"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "from 1", "max_tokens"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":0}", "above 0", "top_p"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":-1}", "at least 0", "temperature"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":\"s\"}", "integer", "seed"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", "strings", "stop"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "at most 4", "stop"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":[]}", "object", "stream_options"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", "needs", "top_logprobs"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":3}", "string", "model"},
        {OAI_COMPLETION, "{\"prompt\":5}", "string or an array", "prompt"},
        {OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "one per request", "prompt"},
        {OAI_COMPLETION, "{\"prompt\":[1,1000]}", "token id", "prompt"},
        {OAI_COMPLETION, "{\"prompt\":[-1]}", "token id", "prompt"},
        {OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":9}", "0 to 5", "logprobs"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool ok = parse(bad[i].k, bad[i].body, &r, &e);
        CHECKF(!ok && e.http == 400 && strstr(e.message, bad[i].msg), "%s -> %s", bad[i].body, ok ? "accepted" : e.message);
        CHECKF(!ok && (bad[i].param ? e.param && !strcmp(e.param, bad[i].param) : !e.param), "%s: param %s", bad[i].body,
               e.param ? e.param : "(null)");
        oai_request_free(&r);
    }
    /* deep nesting and a NUL in a string are refused, not crashed on */
    char deep[40000];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    CHECK(!parse(OAI_CHAT, deep, &r, &e) && e.http == 400);
    oai_request_free(&r);
    CHECK(!oai_parse(OAI_COMPLETION, "{\"prompt\":\"a\0b\"}", 16, 1000, &r, &e) && e.http == 400);
    oai_request_free(&r);
}

static void test_json_out(void) {
    srv_error e;
    srv_error_set(&e, 429, "rate_limit_error", "queue_full", NULL, "busy \"now\"");
    char *j = oai_error_json(&e);
    CHECK(j && !strcmp(j, "{\"error\":{\"message\":\"busy \\\"now\\\"\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":\"queue_full\"}}"));
    free(j);
    oai_usage u = {.prompt_tokens = 5, .completion_tokens = 2, .cached_tokens = 3};
    j = oai_response_json(OAI_CHAT, "id1", 7, "m", "hi", 2, "stop", &u, NULL);
    CHECK(j && strstr(j, "\"message\":{\"role\":\"assistant\",\"content\":\"hi\"}") && strstr(j, "\"finish_reason\":\"stop\""));
    CHECK(j && strstr(j, "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,"
                         "\"prompt_tokens_details\":{\"cached_tokens\":3}}"));
    free(j);
    j = oai_chunk_json(OAI_CHAT, "id1", 7, "m", "assistant", NULL, 0, NULL, NULL);
    CHECK(j && strstr(j, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}") && strstr(j, "\"finish_reason\":null"));
    free(j);
    j = oai_chunk_json(OAI_COMPLETION, "id1", 7, "m", NULL, "x", 1, "length", NULL);
    CHECK(j && strstr(j, "\"object\":\"text_completion\"") && strstr(j, "\"text\":\"x\"") && strstr(j, "\"finish_reason\":\"length\""));
    free(j);
    j = oai_usage_chunk_json(OAI_CHAT, "id1", 7, "m", &u);
    CHECK(j && strstr(j, "\"choices\":[]") && strstr(j, "\"cached_tokens\":3"));
    free(j);
}

static void test_prefix(void) {
    const char *path = test_model_path();
    if (!path) {
        const char *req = getenv("KVS_REQUIRE_MODELS");
        printf("skip prefix cache checks: default model absent (make models)\n");
        if (req && !strcmp(req, "1")) CHECK(!"the default model is required");
        return;
    }
    kvs_model *m = NULL;
    CHECK(kvs_model_load(path, NULL, &m) == KVS_OK);
    if (!m) return;
    kvs_session_params p = kvs_session_params_default();
    p.n_ctx = 256;
    p.n_threads = 2;
    p.kv_page = 16;
    kvs_engine *e = NULL;
    CHECK(kvs_engine_new(m, &p, &e) == KVS_OK);
    srv_prefix *pc = srv_prefix_new(e, 2);
    kvs_token t[64];
    for (int i = 0; i < 64; i++) t[i] = 100 + i;
    kvs_seq *q = NULL, *f = NULL;
    uint32_t nc = 99;
    srv_prefix_lookup(pc, t, 40, &f, &nc);
    CHECK(!f && nc == 0 && srv_prefix_misses(pc) == 1);
    CHECK(kvs_seq_new(e, &q) == KVS_OK);
    kvs_batch_entry x = {.seq = q, .tokens = t, .n_tokens = 20};
    CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
    CHECK(!srv_prefix_register(pc, t, 19, q));          /* n_past must equal the tokens given */
    CHECK(srv_prefix_register(pc, t, 20, q) && srv_prefix_has(pc, t, 20) && srv_prefix_n_entries(pc) == 1);
    CHECK(srv_prefix_register(pc, t, 20, q) && srv_prefix_n_entries(pc) == 1); /* refreshed, not doubled */
    srv_prefix_lookup(pc, t, 20, &f, &nc);              /* a whole prompt leaves one token to run: */
    CHECK(f && nc == 16 && kvs_seq_n_past(f) == 16);    /* the cut is at the last whole block      */
    kvs_seq_free(f);
    f = NULL;
    kvs_token other[40];
    memcpy(other, t, sizeof other);
    other[5] = 7;
    srv_prefix_lookup(pc, other, 40, &f, &nc);          /* differs inside the first block */
    CHECK(!f && nc == 0 && srv_prefix_misses(pc) == 2);
    srv_prefix_lookup(pc, t, 40, &f, &nc);
    CHECK(f && nc == 20 && kvs_seq_n_past(f) == 20 && srv_prefix_hits(pc) == 2);
    /* the fork continues like the original would: same logits */
    float *a = malloc(sizeof(float) * 49152 * 2), *b = a + 49152;
    kvs_batch_entry y[2] = {{.seq = f, .tokens = t + 20, .n_tokens = 4, .logits = a},
                            {.seq = q, .tokens = t + 20, .n_tokens = 4, .logits = b}};
    CHECK(kvs_engine_decode(e, &y[0], 1) == KVS_OK && kvs_engine_decode(e, &y[1], 1) == KVS_OK);
    CHECK(!memcmp(a, b, sizeof(float) * 49152));
    free(a);
    /* a longer entry wins; the LRU one goes when the cache is full */
    CHECK(srv_prefix_register(pc, t, 24, f));
    kvs_seq_free(f);
    srv_prefix_lookup(pc, t, 40, &f, &nc);
    CHECK(f && nc == 24);
    kvs_seq_free(f);
    kvs_seq *r = NULL;
    CHECK(kvs_seq_new(e, &r) == KVS_OK);
    x = (kvs_batch_entry){.seq = r, .tokens = other, .n_tokens = 32};
    CHECK(kvs_engine_decode(e, &x, 1) == KVS_OK);
    CHECK(srv_prefix_register(pc, other, 32, r) && srv_prefix_n_entries(pc) == 2);
    CHECK(!srv_prefix_has(pc, t, 20) && srv_prefix_has(pc, t, 24)); /* t[0..20) was used least recently */
    uint64_t before = kvs_engine_kv_bytes(e);
    kvs_seq_free(r);
    kvs_seq_free(q);
    while (srv_prefix_evict_one(pc)) {}
    CHECK(srv_prefix_n_entries(pc) == 0 && kvs_engine_kv_bytes(e) < before && kvs_engine_n_seqs(e) == 0);
    srv_prefix_free(pc);
    srv_prefix_free(NULL);
    kvs_engine_free(e);
    kvs_model_free(m);
}

int main(void) {
    test_utf8();
    test_parse();
    test_json_out();
    test_prefix();
    return test_finish("test_srv");
}
