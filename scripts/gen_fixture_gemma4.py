#!/usr/bin/env python3
"""Small random-weight Gemma 4 (E2B/E4B-style) GGUF fixture for kvslim's tests.

Uses the tensor names and metadata keys of the GGUF ecosystem for the gemma4
architecture (gguf-py's MODEL_ARCH.GEMMA4 / llama.cpp): per-layer sliding
window pattern (bool array), rope.freq_base + rope.freq_base_swa,
attention.shared_kv_layers (the last layers reuse the KV of the last
non-shared layer of the same attention type), per-layer embeddings
(per_layer_token_embd, per_layer_model_proj, per_layer_proj_norm,
blk.N.inp_gate / proj / post_norm), layer_output_scale, rope_freqs for the
global layers, final_logit_softcapping, and one layer without attn_v (V = K).

Layout (7 layers): sliding, global, sliding, global, sliding, sliding, global;
shared_kv_layers = 3, so layers 4, 5 (sliding) read layer 2's cache and
layer 6 (global) reads layer 3's. Layer 3 has no attn_v.

usage: scripts/gen_fixture_gemma4.py [OUT.gguf] [--seed N]
(needs: pip install gguf numpy)
"""
import argparse

import numpy as np
import gguf

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF, N_PLE = 7, 64, 2, 1, 32, 64, 16
N_VOCAB, WINDOW, N_SHARED = 96, 16, 3
SWA = [True, False, True, False, True, True, False]
NO_V = {3}


def vocab():
    toks = ["<pad>", "<eos>", "<bos>", "<unk>"]
    types = [3, 3, 3, 2]
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(N_VOCAB - len(toks)):
        toks.append("\u2581" + letters[i % 26] * (1 + i // 26) if i % 2 else letters[i % 26] * (1 + i // 26))
        types.append(1)
    return toks, [0.0] * 4 + [-float(i) for i in range(N_VOCAB - 4)], types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="tests/data/gemma4_tiny.gguf")
    ap.add_argument("--seed", type=int, default=4)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)

    w = gguf.GGUFWriter(a.out, "gemma4")
    w.add_name("kvslim gemma4 tiny random fixture")
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_key_length_swa(HEAD_DIM)
    w.add_value_length_swa(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1000000.0)
    w.add_rope_freq_base_swa(10000.0)
    w.add_sliding_window(WINDOW)
    w.add_sliding_window_pattern(SWA)
    w.add_shared_kv_layers(N_SHARED)
    w.add_embedding_length_per_layer_input(N_PLE)
    w.add_final_logit_softcapping(30.0)
    toks, scores, types = vocab()
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)

    def mat(n_out, n_in, scale=1.0):  # numpy (n_out, n_in) = GGUF ne [n_in, n_out]
        return (rng.standard_normal((n_out, n_in)) * scale / np.sqrt(n_in)).astype(np.float16)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w.add_tensor("token_embd.weight", (rng.standard_normal((N_VOCAB, N_EMBD)) * 0.5).astype(np.float16))
    w.add_tensor("output_norm.weight", norm(N_EMBD))
    # proportional RoPE on global layers: the last quarter of the pairs not rotated
    freqs = np.ones(HEAD_DIM // 2, dtype=np.float32)
    freqs[3 * HEAD_DIM // 8:] = 1e30
    w.add_tensor("rope_freqs.weight", freqs)
    w.add_tensor("per_layer_token_embd.weight", (rng.standard_normal((N_VOCAB, N_LAYER * N_PLE)) * 0.5).astype(np.float16))
    w.add_tensor("per_layer_model_proj.weight", mat(N_LAYER * N_PLE, N_EMBD, 4.0))
    w.add_tensor("per_layer_proj_norm.weight", norm(N_PLE))
    kv_from = N_LAYER - N_SHARED
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "attn_q.weight", mat(N_HEAD * HEAD_DIM, N_EMBD))
        w.add_tensor(p + "attn_q_norm.weight", norm(HEAD_DIM))
        if i < kv_from:
            w.add_tensor(p + "attn_k.weight", mat(N_HEAD_KV * HEAD_DIM, N_EMBD))
            w.add_tensor(p + "attn_k_norm.weight", norm(HEAD_DIM))
            if i not in NO_V:
                w.add_tensor(p + "attn_v.weight", mat(N_HEAD_KV * HEAD_DIM, N_EMBD))
        w.add_tensor(p + "attn_output.weight", mat(N_EMBD, N_HEAD * HEAD_DIM))
        w.add_tensor(p + "post_attention_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "ffn_gate.weight", mat(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", mat(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", mat(N_EMBD, N_FF))
        w.add_tensor(p + "post_ffw_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "inp_gate.weight", mat(N_PLE, N_EMBD))
        w.add_tensor(p + "proj.weight", mat(N_EMBD, N_PLE))
        w.add_tensor(p + "post_norm.weight", norm(N_EMBD))
        w.add_tensor(p + "layer_output_scale.weight", np.array([0.7 + 0.1 * i], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
