/* Tokenizer built from GGUF metadata (tokenizer.ggml.*): byte-level BPE
 * ("gpt2" model, with the pre-tokenizer regex chosen by tokenizer.ggml.pre)
 * and SentencePiece-style ("llama" model: score-driven merges, U+2581 for
 * spaces, <0xXX> byte fallback). Special/control tokens are matched verbatim
 * in the input when parse_special is set. Also owns the chat convention. */
#ifndef KVS_TOK_TOKENIZER_H
#define KVS_TOK_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#include "gguf/gguf.h"
#include "kvslim.h"

typedef struct kvs_tokenizer kvs_tokenizer;

kvs_status kvs_tokenizer_load(const kvs_gguf *g, kvs_tokenizer **out);
void kvs_tokenizer_free(kvs_tokenizer *t);

int32_t kvs_tokenizer_n_vocab(const kvs_tokenizer *t);
kvs_token kvs_tokenizer_bos(const kvs_tokenizer *t); /* -1 if none */
kvs_token kvs_tokenizer_eos(const kvs_tokenizer *t); /* -1 if none */
bool kvs_tokenizer_add_bos_default(const kvs_tokenizer *t);
bool kvs_tokenizer_is_eog(const kvs_tokenizer *t, kvs_token tok); /* eos, eot, <|im_end|>, ... */

/* add_bos: explicit (resolved by the caller). Semantics as kvs_tokenize. */
kvs_status kvs_tokenizer_encode(const kvs_tokenizer *t, const char *text, size_t len,
                                bool add_bos, bool parse_special, kvs_token *out, size_t cap,
                                size_t *n_out);
/* Raw bytes of one token (byte-level unmapping / SPM space and byte fallback
 * decoding applied). Returns bytes written, or -1 for an invalid id. Control
 * tokens decode to "" unless render_special. A piece longer than cap is
 * truncated to cap bytes (no token of a real vocabulary exceeds 256 bytes). */
int kvs_tokenizer_piece(const kvs_tokenizer *t, kvs_token tok, bool render_special, char *buf,
                        size_t cap);

/* Chat prompts in the model's convention (ChatML, Gemma, Llama-3, Llama-2),
 * read from tokenizer.chat_template or, when the file has none, from the
 * turn tokens its vocabulary holds. kvs_tokenizer_chat_format renders a
 * conversation (roles "system", "user", "assistant"), ending with the
 * assistant's opening when add_assistant is set; chat_user is the one-turn
 * case. Both return a kvs_malloc'd string, or NULL when the model has no
 * known convention (or out of memory). */
bool kvs_tokenizer_has_chat(const kvs_tokenizer *t);
char *kvs_tokenizer_chat_format(const kvs_tokenizer *t, const kvs_chat_message *msgs, size_t n, bool add_assistant);
char *kvs_tokenizer_chat_user(const kvs_tokenizer *t, const char *user_msg);

#endif
