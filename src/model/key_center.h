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
 * shares its pages and of every file it is saved to, so it follows from the
 * model and the context length alone. The model's pre-RoPE mean key is
 * measured once, on first use, over a fixed built-in English text (about
 * 240 tokens through an f32 cache; the BOS position is left out, its key is
 * an attention sink far from the rest). RoPE turns that constant by a
 * different angle at every position, so the offset of a context of C
 * positions is its mean post-RoPE value over positions 0 .. C-1: slow
 * rotary pairs keep their mean, fast ones average out. (A post-RoPE mean
 * over the text's own 240 positions helped at 2048 tokens and hurt at 8192:
 * mid-frequency pairs that look constant over 240 positions turn over
 * thousands.) Each offset is rounded to f16 precision. The architectures
 * with a capture hook (llama, qwen2, qwen3, gemma3) can measure it; the
 * session clears `center` elsewhere, and asks for the offsets at its first
 * decode (kvs_session_prepare), so a session made only to be described
 * (info, the server's estimates) costs no forward pass. */
#ifndef KVS_KEY_CENTER_H
#define KVS_KEY_CENTER_H

#include "model/model.h"

/* Whether the architecture can measure its mean keys. */
bool kvs_key_center_available(const kvs_model *m);

/* The key offsets for sequences of n_ctx positions, (n_layer, n_head_kv *
 * head_dim_k): measured on the first call (n_threads for that pass) and
 * kept by the model, per n_ctx; *out stays valid as long as the model.
 * Thread-safe. */
kvs_status kvs_key_center_offsets(const kvs_model *m, uint32_t n_ctx, int n_threads, const float **out);

void kvs_key_center_free(kvs_key_center *kc);

#endif
