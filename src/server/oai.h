/* The OpenAI JSON mapping (jansson): request bodies of /v1/chat/completions
 * and /v1/completions parsed into an oai_request (unknown fields ignored,
 * wrong types refused naming the field), and the response, stream chunk,
 * usage and error objects built back. No HTTP and no engine here. */
#ifndef KVS_SERVER_OAI_H
#define KVS_SERVER_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"
#include "server/error.h"
#include "server/util.h"

#define OAI_MAX_STOP 4        /* as OpenAI's API */
#define OAI_MAX_STOP_LEN 256  /* bytes per stop sequence */
#define OAI_MAX_TOP_LOGPROBS 20

typedef enum oai_kind { OAI_CHAT = 0, OAI_COMPLETION = 1 } oai_kind;

typedef struct oai_request {
    oai_kind kind;
    bool stream, include_usage;
    const char *model;            /* or NULL */
    /* chat: messages with roles system / user / assistant ("developer" reads as system) */
    kvs_chat_message *msgs;       /* (n_msgs) */
    size_t n_msgs;
    /* completion: a text prompt, or token ids */
    const char *prompt;           /* NULL when token ids were given */
    size_t prompt_len;
    kvs_token *prompt_tokens;     /* (n_prompt_tokens) */
    size_t n_prompt_tokens;
    /* sampling */
    bool max_tokens_set, temperature_set, top_p_set, seed_set;
    uint32_t max_tokens;
    double temperature, top_p;
    uint64_t seed;
    const char *stop[OAI_MAX_STOP];
    size_t stop_len[OAI_MAX_STOP];
    int n_stop;
    int top_logprobs;             /* -1: no logprobs; else alternatives per token (0-20) */
    /* owned storage the pointers above point into */
    void *root;                   /* json_t */
    char **owned;
    size_t n_owned;
} oai_request;

/* Parses a body; on failure fills err (400, naming the field) and returns
 * false. n_vocab bounds token ids in a completion prompt. */
bool oai_parse(oai_kind kind, const char *body, size_t n, int32_t n_vocab, oai_request *out, srv_error *err);
void oai_request_free(oai_request *r);

/* One generated token's log-probability under the model (before
 * temperature and truncation) and its most likely alternatives. */
typedef struct oai_token_lp {
    kvs_token tok;
    float lp;
    uint8_t n_top;
    kvs_token top[OAI_MAX_TOP_LOGPROBS];
    float top_lp[OAI_MAX_TOP_LOGPROBS];
} oai_token_lp;

typedef struct oai_logprobs {
    const kvs_model *m;           /* for the tokens' text */
    const oai_token_lp *items;    /* (n) */
    size_t n;
    size_t text_offset;           /* completions: offset of the first token's text */
} oai_logprobs;

typedef struct oai_usage {
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
} oai_usage;

/* Each returns a malloc'd compact JSON text, or NULL when out of memory.
 * text must be valid UTF-8 (the scheduler repairs what it emits). */
char *oai_error_json(const srv_error *e);
char *oai_response_json(oai_kind kind, const char *id, long long created, const char *model, const char *text,
                        size_t text_len, const char *finish_reason, const oai_usage *u, const oai_logprobs *lp);
/* A stream chunk: the role opening (chat, role != NULL), a text delta, or
 * the closing chunk with finish_reason (text NULL). */
char *oai_chunk_json(oai_kind kind, const char *id, long long created, const char *model, const char *role,
                     const char *text, size_t text_len, const char *finish_reason, const oai_logprobs *lp);
/* The usage chunk of stream_options.include_usage: no choices, usage set. */
char *oai_usage_chunk_json(oai_kind kind, const char *id, long long created, const char *model, const oai_usage *u);
char *oai_models_json(const char *model_id, long long created, uint32_t n_ctx);

#endif
