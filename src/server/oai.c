/* OpenAI request parsing and response building with jansson; see oai.h.
 * Optional fields may be null (read as absent); a present field of the
 * wrong type is refused with a 400 that names it. */
#include "server/oai.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BAD(param, ...) do { srv_error_set(err, 400, "invalid_request_error", NULL, param, __VA_ARGS__); return false; } while (0)

static bool own(oai_request *r, char *s) {
    char **o = realloc(r->owned, sizeof *o * (r->n_owned + 1));
    if (!o) { free(s); return false; }
    r->owned = o;
    r->owned[r->n_owned++] = s;
    return true;
}

/* a string field without NUL bytes: the chat templates and the tokenizer read C strings */
static bool plain_string(json_t *v) { return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v); }

/* message content: a string, or an array of {"type": "text", "text": ...} parts (joined) */
static bool parse_content(oai_request *r, json_t *c, size_t i, const char **out, srv_error *err) {
    const char *param = "messages[].content";
    if (json_is_null(c)) { *out = ""; return true; } /* an assistant turn with tool calls only */
    if (json_is_string(c)) {
        if (!plain_string(c)) BAD(param, "messages[%zu].content contains a NUL character", i);
        *out = json_string_value(c);
        return true;
    }
    if (!json_is_array(c)) BAD(param, "messages[%zu].content must be a string or an array of text parts", i);
    srv_buf b = {0};
    srv_buf_puts(&b, "");
    size_t k;
    json_t *part;
    json_array_foreach(c, k, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type)) {
            srv_buf_free(&b);
            BAD(param, "messages[%zu].content[%zu] must be an object with a \"type\"", i, k);
        }
        if (strcmp(json_string_value(type), "text")) {
            srv_buf_free(&b);
            srv_error_set(err, 400, "invalid_request_error", "unsupported_content", param,
                          "messages[%zu].content[%zu]: content parts of type \"%.64s\" are not supported (only \"text\")",
                          i, k, json_string_value(type));
            return false;
        }
        if (!plain_string(text)) {
            srv_buf_free(&b);
            BAD(param, "messages[%zu].content[%zu].text must be a string without NUL characters", i, k);
        }
        srv_buf_put(&b, json_string_value(text), json_string_length(text));
    }
    if (b.oom) { srv_buf_free(&b); srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory"); return false; }
    if (!own(r, b.p)) { srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory"); return false; }
    *out = b.p;
    return true;
}

static bool parse_messages(oai_request *r, json_t *msgs, srv_error *err) {
    if (!msgs || json_is_null(msgs)) BAD("messages", "\"messages\" is required");
    if (!json_is_array(msgs)) BAD("messages", "\"messages\" must be an array");
    size_t n = json_array_size(msgs);
    if (!n) BAD("messages", "\"messages\" must hold at least one message");
    if (n > 4096) BAD("messages", "\"messages\" holds %zu messages; at most 4096", n);
    if (!(r->msgs = calloc(n, sizeof *r->msgs))) { srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory"); return false; }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) BAD("messages", "messages[%zu] must be an object", i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) BAD("messages[].role", "messages[%zu].role must be a string", i);
        const char *ro = json_string_value(role);
        if (!strcmp(ro, "developer")) ro = "system";
        if (strcmp(ro, "system") && strcmp(ro, "user") && strcmp(ro, "assistant"))
            BAD("messages[].role", "messages[%zu].role \"%.64s\" is not one of system, developer, user, assistant", i, ro);
        json_t *c = json_object_get(m, "content");
        if (!c) BAD("messages[].content", "messages[%zu].content is required", i);
        r->msgs[i].role = ro;
        if (!parse_content(r, c, i, &r->msgs[i].content, err)) return false;
        r->n_msgs = i + 1;
    }
    return true;
}

static bool parse_prompt(oai_request *r, json_t *p, int32_t n_vocab, srv_error *err) {
    if (!p || json_is_null(p)) BAD("prompt", "\"prompt\" is required");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) p = json_array_get(p, 0);
    if (json_is_string(p)) {
        if (!plain_string(p)) BAD("prompt", "\"prompt\" contains a NUL character");
        r->prompt = json_string_value(p);
        r->prompt_len = json_string_length(p);
        return true;
    }
    if (!json_is_array(p)) BAD("prompt", "\"prompt\" must be a string or an array of token ids");
    size_t n = json_array_size(p);
    if (!n) BAD("prompt", "\"prompt\" is empty");
    if (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0)))
        BAD("prompt", "\"prompt\" holds %zu prompts; this server takes one per request", n);
    if (!(r->prompt_tokens = malloc(sizeof *r->prompt_tokens * n))) {
        srv_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(p, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= n_vocab)
            BAD("prompt", "prompt[%zu] must be a token id from 0 to %d", i, n_vocab - 1);
        r->prompt_tokens[i] = (kvs_token)json_integer_value(t);
    }
    r->n_prompt_tokens = n;
    return true;
}

/* a present, non-null field */
static json_t *field(json_t *root, const char *name) {
    json_t *v = json_object_get(root, name);
    return json_is_null(v) ? NULL : v;
}

static bool get_number(json_t *root, const char *name, double lo, double hi, bool lo_open, double *out, bool *set,
                       srv_error *err) {
    json_t *v = field(root, name);
    if (!v) return true;
    if (!json_is_number(v)) BAD(name, "\"%s\" must be a number", name);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
        BAD(name, "\"%s\" is %g; it must be %s %g and at most %g", name, d, lo_open ? "above" : "at least", lo, hi);
    *out = d;
    *set = true;
    return true;
}

static bool get_bool(json_t *root, const char *name, bool *out, srv_error *err) {
    json_t *v = field(root, name);
    if (!v) return true;
    if (!json_is_boolean(v)) BAD(name, "\"%s\" must be true or false", name);
    *out = json_is_true(v);
    return true;
}

static bool parse_stop(oai_request *r, json_t *root, srv_error *err) {
    json_t *v = field(root, "stop");
    if (!v) return true;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    json_t *arr[OAI_MAX_STOP];
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > OAI_MAX_STOP) BAD("stop", "\"stop\" holds %zu sequences; at most %d", n, OAI_MAX_STOP);
        for (size_t i = 0; i < n; i++) arr[i] = json_array_get(v, i);
        items = arr;
    } else if (!json_is_string(v)) {
        BAD("stop", "\"stop\" must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        if (!plain_string(items[i])) BAD("stop", "\"stop\" entries must be strings without NUL characters");
        size_t l = json_string_length(items[i]);
        if (!l) continue; /* an empty stop sequence stops nothing */
        if (l > OAI_MAX_STOP_LEN) BAD("stop", "a stop sequence has %zu bytes; at most %d", l, OAI_MAX_STOP_LEN);
        r->stop[r->n_stop] = json_string_value(items[i]);
        r->stop_len[r->n_stop++] = l;
    }
    return true;
}

bool oai_parse(oai_kind kind, const char *body, size_t n, int32_t n_vocab, oai_request *r, srv_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    json_error_t je;
    json_t *root = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
    if (!root) BAD(NULL, "malformed JSON at line %d, column %d: %s", je.line, je.column, je.text);
    r->root = root;
    if (!json_is_object(root)) BAD(NULL, "the request body must be a JSON object");
    json_t *v;
    if ((v = field(root, "model"))) {
        if (!json_is_string(v)) BAD("model", "\"model\" must be a string");
        r->model = json_string_value(v);
    }
    if (kind == OAI_CHAT ? !parse_messages(r, json_object_get(root, "messages"), err)
                         : !parse_prompt(r, json_object_get(root, "prompt"), n_vocab, err))
        return false;
    /* max_completion_tokens is the chat API's newer name; max_tokens wins when both are given */
    const char *mt_names[2] = {"max_completion_tokens", "max_tokens"};
    for (int k = 0; k < 2; k++) {
        if (!(v = field(root, mt_names[k]))) continue;
        if (!json_is_integer(v)) BAD(mt_names[k], "\"%s\" must be an integer", mt_names[k]);
        json_int_t x = json_integer_value(v);
        if (x < 1 || x > (1 << 26)) BAD(mt_names[k], "\"%s\" is %lld; it must be from 1 to %d", mt_names[k], (long long)x, 1 << 26);
        r->max_tokens = (uint32_t)x;
        r->max_tokens_set = true;
    }
    if (!get_number(root, "temperature", 0, 2, false, &r->temperature, &r->temperature_set, err)) return false;
    if (!get_number(root, "top_p", 0, 1, true, &r->top_p, &r->top_p_set, err)) return false;
    /* accepted and not used: checked for type only */
    bool dummy_set;
    double dummy;
    if (!get_number(root, "frequency_penalty", -2, 2, false, &dummy, &dummy_set, err)) return false;
    if (!get_number(root, "presence_penalty", -2, 2, false, &dummy, &dummy_set, err)) return false;
    if ((v = field(root, "seed"))) {
        if (!json_is_integer(v)) BAD("seed", "\"seed\" must be an integer");
        r->seed = (uint64_t)json_integer_value(v);
        r->seed_set = true;
    }
    if ((v = field(root, "n"))) {
        if (!json_is_integer(v)) BAD("n", "\"n\" must be an integer");
        if (json_integer_value(v) != 1) BAD("n", "\"n\" is %lld; this server generates one choice per request (n = 1)",
                                            (long long)json_integer_value(v));
    }
    if (!get_bool(root, "stream", &r->stream, err)) return false;
    if ((v = field(root, "stream_options"))) {
        if (!json_is_object(v)) BAD("stream_options", "\"stream_options\" must be an object");
        json_t *u = field(v, "include_usage");
        if (u && !json_is_boolean(u)) BAD("stream_options.include_usage", "\"stream_options.include_usage\" must be true or false");
        r->include_usage = u && json_is_true(u);
    }
    if (!parse_stop(r, root, err)) return false;
    r->top_logprobs = -1;
    if (kind == OAI_CHAT) { /* "logprobs": bool, "top_logprobs": 0-20 */
        bool lp = false;
        if (!get_bool(root, "logprobs", &lp, err)) return false;
        if ((v = field(root, "top_logprobs"))) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > OAI_MAX_TOP_LOGPROBS)
                BAD("top_logprobs", "\"top_logprobs\" must be an integer from 0 to %d", OAI_MAX_TOP_LOGPROBS);
            if (!lp) BAD("top_logprobs", "\"top_logprobs\" needs \"logprobs\": true");
            r->top_logprobs = (int)json_integer_value(v);
        } else if (lp) {
            r->top_logprobs = 0;
        }
    } else if ((v = field(root, "logprobs"))) { /* completions: "logprobs": 0-5 alternatives */
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 5)
            BAD("logprobs", "\"logprobs\" must be an integer from 0 to 5");
        r->top_logprobs = (int)json_integer_value(v);
    }
    return true;
}

void oai_request_free(oai_request *r) {
    if (!r) return;
    json_decref((json_t *)r->root);
    free(r->msgs);
    free(r->prompt_tokens);
    for (size_t i = 0; i < r->n_owned; i++) free(r->owned[i]);
    free(r->owned);
    memset(r, 0, sizeof *r);
}

/* ---- responses --------------------------------------------------------- */

static char *dump(json_t *j) {
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

char *oai_error_json(const srv_error *e) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_t *m = json_string(e->message); /* NULL for invalid UTF-8 echoed from a request */
    json_object_set_new(o, "message", m ? m : json_string("invalid request (the message was not valid UTF-8)"));
    json_object_set_new(o, "type", json_string(e->type ? e->type : "server_error"));
    json_object_set_new(o, "param", e->param ? json_string(e->param) : json_null());
    json_object_set_new(o, "code", e->code ? json_string(e->code) : json_null());
    return dump(json_pack("{so}", "error", o));
}

static json_t *usage_obj(const oai_usage *u) {
    return json_pack("{sI sI sI s{sI}}", "prompt_tokens", (json_int_t)u->prompt_tokens, "completion_tokens",
                     (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)u->prompt_tokens + (json_int_t)u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", (json_int_t)u->cached_tokens);
}

static json_t *base(oai_kind kind, bool chunk, const char *id, long long created, const char *model) {
    const char *object = kind == OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
    return json_pack("{ss ss sI ss ss}", "id", id, "object", object, "created", (json_int_t)created, "model", model,
                     "system_fingerprint", "kvslim");
}

/* A token's text as a JSON string (invalid UTF-8 of a partial token repaired) and its bytes. */
static json_t *piece_json(const kvs_model *m, kvs_token t, json_t **bytes, size_t *len) {
    char piece[256];
    int n = kvs_token_to_piece(m, t, piece, sizeof piece);
    if (n < 0) n = 0;
    *len = (size_t)n;
    if (bytes) {
        *bytes = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(*bytes, json_integer((unsigned char)piece[i]));
    }
    srv_buf b = {0};
    srv_utf8_append(&b, piece, (size_t)n);
    json_t *s = json_stringn(b.p ? b.p : "", b.n);
    srv_buf_free(&b);
    return s;
}

static json_t *logprobs_obj(oai_kind kind, const oai_logprobs *lp) {
    if (!lp) return json_null();
    if (kind == OAI_CHAT) {
        json_t *content = json_array();
        for (size_t i = 0; i < lp->n; i++) {
            const oai_token_lp *x = &lp->items[i];
            json_t *bytes, *tops = json_array();
            size_t len;
            for (int k = 0; k < x->n_top; k++) {
                json_t *tb;
                json_t *ts = piece_json(lp->m, x->top[k], &tb, &len);
                json_array_append_new(tops, json_pack("{so sf so}", "token", ts, "logprob", (double)x->top_lp[k], "bytes", tb));
            }
            json_t *s = piece_json(lp->m, x->tok, &bytes, &len);
            json_array_append_new(content, json_pack("{so sf so so}", "token", s, "logprob", (double)x->lp, "bytes",
                                                     bytes, "top_logprobs", tops));
        }
        return json_pack("{so}", "content", content);
    }
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = lp->text_offset, len;
    for (size_t i = 0; i < lp->n; i++) {
        const oai_token_lp *x = &lp->items[i];
        json_array_append_new(toks, piece_json(lp->m, x->tok, NULL, &len));
        json_array_append_new(lps, json_real(x->lp));
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += len;
        json_t *t = json_object();
        for (int k = 0; k < x->n_top; k++) {
            size_t l2;
            json_t *ts = piece_json(lp->m, x->top[k], NULL, &l2);
            if (ts) json_object_set_new(t, json_string_value(ts), json_real(x->top_lp[k]));
            json_decref(ts);
        }
        json_array_append_new(tops, t);
    }
    return json_pack("{so so so so}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops, "text_offset", offs);
}

char *oai_response_json(oai_kind kind, const char *id, long long created, const char *model, const char *text,
                        size_t text_len, const char *finish_reason, const oai_usage *u, const oai_logprobs *lp) {
    json_t *o = base(kind, false, id, created, model);
    json_t *t = json_stringn(text, text_len);
    if (!o || !t) { json_decref(o); json_decref(t); return NULL; }
    json_t *choice = kind == OAI_CHAT
                         ? json_pack("{sI s{ss so} so ss}", "index", (json_int_t)0, "message", "role", "assistant",
                                     "content", t, "logprobs", logprobs_obj(kind, lp), "finish_reason", finish_reason)
                         : json_pack("{sI so so ss}", "index", (json_int_t)0, "text", t, "logprobs",
                                     logprobs_obj(kind, lp), "finish_reason", finish_reason);
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    json_object_set_new(o, "usage", usage_obj(u));
    return dump(o);
}

char *oai_chunk_json(oai_kind kind, const char *id, long long created, const char *model, const char *role,
                     const char *text, size_t text_len, const char *finish_reason, const oai_logprobs *lp) {
    json_t *o = base(kind, true, id, created, model);
    if (!o) return NULL;
    json_t *fr = finish_reason ? json_string(finish_reason) : json_null();
    json_t *choice;
    if (kind == OAI_CHAT) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string(role));
        if (role || text) json_object_set_new(delta, "content", text ? json_stringn(text, text_len) : json_string(""));
        choice = json_pack("{sI so so so}", "index", (json_int_t)0, "delta", delta, "logprobs",
                           logprobs_obj(kind, lp), "finish_reason", fr);
    } else {
        choice = json_pack("{sI so so so}", "index", (json_int_t)0, "text",
                           text ? json_stringn(text, text_len) : json_string(""), "logprobs",
                           logprobs_obj(kind, lp), "finish_reason", fr);
    }
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    return dump(o);
}

char *oai_usage_chunk_json(oai_kind kind, const char *id, long long created, const char *model, const oai_usage *u) {
    json_t *o = base(kind, true, id, created, model);
    if (!o) return NULL;
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage_obj(u));
    return dump(o);
}

char *oai_models_json(const char *model_id, long long created, uint32_t n_ctx) {
    return dump(json_pack("{ss s[{ss ss sI ss sI}]}", "object", "list", "data", "id", model_id, "object", "model",
                          "created", (json_int_t)created, "owned_by", "kvslim", "context_length", (json_int_t)n_ctx));
}
