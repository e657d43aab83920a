#!/usr/bin/env python3
"""A random-weight GGUF of the qwen3 architecture (Qwen3 dense: llama-style
blocks, GQA, NeoX RoPE, per-head RMSNorm of q and k before RoPE, no QKV
biases, head_dim decoupled from the embedding), with the keys and tensor
names llama.cpp's converter writes (conversion/qwen.py Qwen3Model over
conversion/base.py: key_length/value_length from head_dim, rope.freq_base,
attn_q_norm / attn_k_norm of head_dim elements, tied output when
tie_word_embeddings).

Shape (tests/data/qwen3_tiny.gguf, default seed): 4 layers, hidden 64, 4
query heads and 2 KV heads of 32 dims (4 x 32 = 128 != 64, as Qwen3-0.6B's
16 x 128 != 1024), ffn 128, vocabulary 96 (a SentencePiece-style list, as
the other fixtures: the real files' byte-level BPE list is irrelevant to
the logits), tied embeddings, f16 matrices, f32 vectors.

usage: scripts/gen_fixture_qwen3.py [OUT.gguf] [--seed N]   (needs numpy, gguf)
"""
import argparse

import numpy as np
import gguf

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF, N_VOCAB = 4, 64, 4, 2, 32, 128, 96


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="tests/data/qwen3_tiny.gguf")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)

    w = gguf.GGUFWriter(a.out, "qwen3")
    w.add_name("kvslim qwen3 tiny random fixture")
    w.add_block_count(N_LAYER)
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    toks = ["<unk>", "<s>", "</s>"] + [f"\u2581t{i}" for i in range(3, N_VOCAB)]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * 3 + [-float(i) for i in range(3, N_VOCAB)])
    w.add_token_types([2, 3, 3] + [1] * (N_VOCAB - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    def mat(n_out, n_in, scale=1.0):
        return (rng.standard_normal((n_out, n_in)) * scale / np.sqrt(n_in)).astype(np.float16)

    def vec(n, spread=0.1):
        return (1.0 + spread * rng.standard_normal(n)).astype(np.float32)

    # tied: the table is also the output head; std 0.3 keeps the logits O(1)
    w.add_tensor("token_embd.weight", (0.3 * rng.standard_normal((N_VOCAB, N_EMBD))).astype(np.float16))
    w.add_tensor("output_norm.weight", vec(N_EMBD))
    qd, kd = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", vec(N_EMBD))
        w.add_tensor(p + "attn_q.weight", mat(qd, N_EMBD))
        w.add_tensor(p + "attn_k.weight", mat(kd, N_EMBD))
        w.add_tensor(p + "attn_v.weight", mat(kd, N_EMBD))
        # QK-norm weights away from 1, so a missing or misplaced norm shows
        w.add_tensor(p + "attn_q_norm.weight", vec(HEAD_DIM, 0.3) * 1.5)
        w.add_tensor(p + "attn_k_norm.weight", vec(HEAD_DIM, 0.3))
        w.add_tensor(p + "attn_output.weight", mat(N_EMBD, qd))
        w.add_tensor(p + "ffn_norm.weight", vec(N_EMBD))
        w.add_tensor(p + "ffn_gate.weight", mat(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", mat(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", mat(N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
