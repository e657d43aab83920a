/* Key centering: each layer's mean key, measured once per model.
 *
 * Softmax attention is unchanged when one constant vector is subtracted from
 * every key a query sees (q.mu is the same for all of them), so a cache may
 * store k - mu for any fixed mu, exactly. Real models' keys sit far from the
 * origin in a few channels (the low RoPE frequencies of SmolLM2, Qwen2's key
 * bias, Gemma 3 after its QK-norm); a per-token quantizer with a rotation
 * then spreads that constant into every coordinate's error. Storing keys
 * minus their mean takes it out: on SmolLM2 rotated q4_0 and tq4 keys lose
 * 20-40% less KL (BENCHMARKS.md "Key centering").
 *
 * mu must be the same for every key of a sequence, of every sequence that
 * shares its pages and of every file it is saved to, so it is a property of
 * the model alone: the mean post-RoPE key over a fixed built-in English text
 * (KVS_KEY_CENTER_TEXT, about 240 tokens, the BOS position left out since
 * it is an attention sink far from the rest), run once through an f32
 * cache on first use. Each mean is rounded to f16 precision so the
 * threads' arithmetic cannot move it. The architectures with a capture hook
 * (llama, qwen2, qwen3, gemma3) can measure it; the session clears `center`
 * elsewhere. */
#ifndef KVS_KEY_CENTER_H
#define KVS_KEY_CENTER_H

#include "model/model.h"

/* Whether the architecture can measure its mean keys. */
bool kvs_key_center_available(const kvs_model *m);

/* The mean keys, (n_layer, n_head_kv * head_dim_k), measured on the first
 * call (n_threads for that pass) and kept by the model; *out stays valid as
 * long as the model. Thread-safe. */
kvs_status kvs_key_center_means(const kvs_model *m, int n_threads, const float **out);

#endif
