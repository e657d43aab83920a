#!/usr/bin/env python3
"""Random-weight DeepSeek V4 ("deepseek4") GGUF fixtures.

Writes a small model with the llama.cpp ecosystem's deepseek4 tensor names
and metadata keys (see docs/arch-deepseek4.md): per-layer
attention.compress_ratios mixing window-only (0), CSA (4, with the lightning
indexer) and HCA (128) layers, one 128-token raw window, mHC residual streams
(hyper_connection.count copies), the V4 MoE (sqrt-softplus gate with a
selection bias, hash-routed first layers through ffn_gate_tid2eid, a shared
expert, SwiGLU clamp). Weights are random; matrices f16, vectors f32.

Shapes:
  small  the committed test fixtures: tests/data/deepseek4_tiny.gguf (--experts f16,
         default seed) and tests/data/deepseek4_mxfp4.gguf (default seed), ~0.5 MB
  small8 the same with a 4 x 64 indexer (tests/data/deepseek4_q8.gguf, --experts f16,
         default seed)
  bench  a V4-shaped attention for scripts/bench_deepseek4.sh: 512-dim K=V
         entries, 64 rope dims, 128-token window, 128-dim indexer keys, top-512,
         hc 4; small elsewhere (hidden 256, 4 heads, 4 experts): ~10M params
  gqa    a llama-architecture random fixture of similar size (~9M params):
         hidden 512, 8 heads, 2 KV heads (GQA), full f16 KV

The layout is the one llama.cpp's converter writes (conversion/deepseek.py,
DeepseekV4Model): ffn_gate_tid2eid as I32, the routed experts
(ffn_{gate,up,down}_exps) as MXFP4 (quantized with gguf-py, so expert widths
are multiples of 32), embedding_length_out = hidden * hc. Both llama.cpp and
kvslim load these files (tests/test_peer.c compares their logits). Facts of
llama.cpp's loader a fixture has to respect: the indexer key length is a
multiple of 64 (llama.cpp always Hadamard-rotates the lightning indexer's keys,
in blocks of at least 64), and at least one layer is CSA (ratio 4): with none,
llama.cpp dies with SIGFPE while making the context.

--experts f16 stores the routed experts as F16 instead (llama.cpp and kvslim
read both): the fixtures checked against the float64 numpy reference at 1e-4
use it, because an MXFP4 dot quantizes its activations to 8 bits (in both
engines), ~1e-3 relative, which that reference does not simulate.

usage: scripts/gen_fixture_deepseek4.py OUT.gguf [--shape small|small8|bench|gqa] [--seed N]
           [--experts mxfp4|f16]
(needs: pip install gguf numpy)
"""
import argparse

import numpy as np
import gguf

ARCH = "deepseek4"

SHAPES = {
    "small": dict(n_layer=5, ratios=[0, 4, 128, 4, 0], n_embd=64, n_head=4, head_dim=32, rope_dim=8,
                  q_lora=32, o_groups=2, o_lora=16, window=128, idx_heads=8, idx_dim=64, idx_topk=96,
                  hc=4, sinkhorn=20, n_expert=4, n_used=2, n_ff=32, n_hash=1, vocab=96, ctx=4096),
    # "small" with 4 indexer heads: the 8-bit indexer fixture
    "small8": dict(n_layer=5, ratios=[0, 4, 128, 4, 0], n_embd=64, n_head=4, head_dim=32, rope_dim=8,
                   q_lora=32, o_groups=2, o_lora=16, window=128, idx_heads=4, idx_dim=64, idx_topk=96,
                   hc=4, sinkhorn=20, n_expert=4, n_used=2, n_ff=32, n_hash=1, vocab=96, ctx=4096),
    "bench": dict(n_layer=4, ratios=[0, 4, 128, 4], n_embd=256, n_head=4, head_dim=512, rope_dim=64,
                  q_lora=128, o_groups=2, o_lora=128, window=128, idx_heads=4, idx_dim=128, idx_topk=512,
                  hc=4, sinkhorn=20, n_expert=4, n_used=2, n_ff=256, n_hash=1, vocab=1024, ctx=131072),
}


def tokenizer(w, vocab):
    toks = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, vocab)]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([2, 3, 3] + [1] * (vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)


def gen_deepseek4(path, c, seed, experts="mxfp4"):
    rng = np.random.default_rng(seed)
    f16 = np.float16

    def mat(n_out, n_in, scale=1.0, dtype=f16):
        return (rng.standard_normal((n_out, n_in)) * scale / np.sqrt(n_in)).astype(dtype)

    def vec(n, mean=1.0, spread=0.1):
        return (mean + spread * rng.standard_normal(n)).astype(np.float32)

    D, H, hd, rd = c["n_embd"], c["n_head"], c["head_dim"], c["rope_dim"]
    hc, L, V = c["hc"], c["n_layer"], c["vocab"]
    mix = (2 + hc) * hc
    w = gguf.GGUFWriter(path, ARCH)
    w.add_name("deepseek4-random-" + ("tiny" if D < 256 else "bench"))
    w.add_uint32(f"{ARCH}.block_count", L)
    w.add_uint32(f"{ARCH}.context_length", c["ctx"])
    w.add_uint32(f"{ARCH}.embedding_length", D)
    w.add_uint32(f"{ARCH}.embedding_length_out", D * hc)
    w.add_uint32(f"{ARCH}.attention.head_count", H)
    w.add_uint32(f"{ARCH}.attention.head_count_kv", 1)
    w.add_uint32(f"{ARCH}.attention.key_length", hd)
    w.add_uint32(f"{ARCH}.attention.value_length", hd)
    w.add_uint32(f"{ARCH}.rope.dimension_count", rd)
    w.add_float32(f"{ARCH}.rope.freq_base", 10000.0)
    w.add_string(f"{ARCH}.rope.scaling.type", "yarn")
    w.add_float32(f"{ARCH}.rope.scaling.factor", 16.0)
    w.add_uint32(f"{ARCH}.rope.scaling.original_context_length", 256 if D < 256 else 65536)
    w.add_float32(f"{ARCH}.rope.scaling.yarn_beta_fast", 32.0)
    w.add_float32(f"{ARCH}.rope.scaling.yarn_beta_slow", 1.0)
    w.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_uint32(f"{ARCH}.attention.q_lora_rank", c["q_lora"])
    w.add_uint32(f"{ARCH}.attention.output_lora_rank", c["o_lora"])
    w.add_uint32(f"{ARCH}.attention.output_group_count", c["o_groups"])
    w.add_uint32(f"{ARCH}.attention.sliding_window", c["window"])
    w.add_array(f"{ARCH}.attention.compress_ratios", [int(r) for r in c["ratios"]])
    w.add_float32(f"{ARCH}.attention.compress_rope_freq_base", 160000.0)
    w.add_uint32(f"{ARCH}.attention.indexer.head_count", c["idx_heads"])
    w.add_uint32(f"{ARCH}.attention.indexer.key_length", c["idx_dim"])
    w.add_uint32(f"{ARCH}.attention.indexer.top_k", c["idx_topk"])
    w.add_uint32(f"{ARCH}.hyper_connection.count", hc)
    w.add_uint32(f"{ARCH}.hyper_connection.sinkhorn_iterations", c["sinkhorn"])
    w.add_float32(f"{ARCH}.hyper_connection.epsilon", 1e-6)
    w.add_uint32(f"{ARCH}.hash_layer_count", c["n_hash"])
    w.add_uint32(f"{ARCH}.expert_count", c["n_expert"])
    w.add_uint32(f"{ARCH}.expert_used_count", c["n_used"])
    w.add_uint32(f"{ARCH}.expert_shared_count", 1)
    w.add_uint32(f"{ARCH}.expert_feed_forward_length", c["n_ff"])
    w.add_float32(f"{ARCH}.expert_weights_scale", 1.5)
    w.add_bool(f"{ARCH}.expert_weights_norm", True)
    w.add_uint32(f"{ARCH}.expert_gating_func", 4)  # sqrt(softplus)
    w.add_array(f"{ARCH}.swiglu_clamp_exp", [2.0] * L)
    w.add_array(f"{ARCH}.swiglu_clamp_shexp", [2.0] * L)
    tokenizer(w, V)

    w.add_tensor("token_embd.weight", mat(V, D, np.sqrt(D)))
    w.add_tensor("output_norm.weight", vec(D))
    w.add_tensor("output.weight", mat(V, D))
    w.add_tensor("output_hc_fn.weight", mat(hc, hc * D, 1.0, np.float32))
    w.add_tensor("output_hc_base.weight", vec(hc, 0.0, 0.5))
    w.add_tensor("output_hc_scale.weight", vec(1, 1.0, 0.1))
    E, F, K = c["n_expert"], c["n_ff"], c["n_used"]
    nih, ihd = c["idx_heads"], c["idx_dim"]
    G, olr = c["o_groups"], c["o_lora"]
    for i, m in enumerate(c["ratios"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", vec(D))
        w.add_tensor(p + "ffn_norm.weight", vec(D))
        for s in ("attn", "ffn"):
            w.add_tensor(p + f"hc_{s}_fn.weight", mat(mix, hc * D))
            w.add_tensor(p + f"hc_{s}_base.weight", vec(mix, 0.0, 0.5))
            w.add_tensor(p + f"hc_{s}_scale.weight", vec(3, 1.0, 0.2))
        w.add_tensor(p + "attn_sinks.weight", vec(H, 0.0, 1.0))
        w.add_tensor(p + "attn_q_a.weight", mat(c["q_lora"], D))
        w.add_tensor(p + "attn_q_a_norm.weight", vec(c["q_lora"]))
        w.add_tensor(p + "attn_q_b.weight", mat(H * hd, c["q_lora"]))
        w.add_tensor(p + "attn_kv.weight", mat(hd, D))
        w.add_tensor(p + "attn_kv_a_norm.weight", vec(hd))
        w.add_tensor(p + "attn_output_a.weight", mat(G * olr, H * hd // G))
        w.add_tensor(p + "attn_output_b.weight", mat(D, G * olr))
        if m:
            coff = 2 if m == 4 else 1
            comps = [("attn_compressor", hd)] + ([("indexer_compressor", ihd)] if m == 4 else [])
            for name, d in comps:
                w.add_tensor(p + f"{name}_ape.weight", (rng.standard_normal((m, coff * d)) * 0.5).astype(np.float32))
                w.add_tensor(p + f"{name}_kv.weight", mat(coff * d, D))
                w.add_tensor(p + f"{name}_gate.weight", mat(coff * d, D))
                w.add_tensor(p + f"{name}_norm.weight", vec(d))
            if m == 4:
                w.add_tensor(p + "indexer.attn_q_b.weight", mat(nih * ihd, c["q_lora"]))
                w.add_tensor(p + "indexer.proj.weight", mat(nih, D))
        w.add_tensor(p + "ffn_gate_inp.weight", mat(E, D))
        if i < c["n_hash"]:
            ids = np.stack([rng.permutation(E)[:K] for _ in range(V)]).astype(np.int32)
            w.add_tensor(p + "ffn_gate_tid2eid.weight", ids)
        else:
            w.add_tensor(p + "exp_probs_b.bias", vec(E, 0.0, 0.3))
        for nm, shape, fan_in in (("gate", (E, F, D), D), ("up", (E, F, D), D), ("down", (E, D, F), F)):
            a = rng.standard_normal(shape) / np.sqrt(fan_in)
            if experts == "mxfp4":
                mxfp4(w, p + f"ffn_{nm}_exps.weight", a)
            else:
                w.add_tensor(p + f"ffn_{nm}_exps.weight", a.astype(f16))
        w.add_tensor(p + "ffn_gate_shexp.weight", mat(F, D))
        w.add_tensor(p + "ffn_up_shexp.weight", mat(F, D))
        w.add_tensor(p + "ffn_down_shexp.weight", mat(D, F))
    finish(w)


def mxfp4(w, name, a):
    """Routed experts as the converter stores them: MXFP4 blocks along the input dimension."""
    qt = gguf.GGMLQuantizationType.MXFP4
    q = gguf.quants.quantize(a.astype(np.float32), qt)
    w.add_tensor(name, q, raw_dtype=qt)


def gen_gqa(path, seed):
    """llama-arch random fixture with per-token weight compute close to the bench V4 shape."""
    rng = np.random.default_rng(seed)
    D, L, H, Hkv, hd, F, V = 512, 4, 8, 2, 64, 1024, 1024
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("llama-random-gqa-bench")
    w.add_uint32("llama.block_count", L)
    w.add_uint32("llama.context_length", 131072)
    w.add_uint32("llama.embedding_length", D)
    w.add_uint32("llama.feed_forward_length", F)
    w.add_uint32("llama.attention.head_count", H)
    w.add_uint32("llama.attention.head_count_kv", Hkv)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32("llama.rope.freq_base", 10000.0)
    tokenizer(w, V)

    def mat(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float16)
    w.add_tensor("token_embd.weight", mat(V, D))
    w.add_tensor("output_norm.weight", np.ones(D, np.float32))
    w.add_tensor("output.weight", mat(V, D))
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(D, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(D, np.float32))
        w.add_tensor(p + "attn_q.weight", mat(H * hd, D))
        w.add_tensor(p + "attn_k.weight", mat(Hkv * hd, D))
        w.add_tensor(p + "attn_v.weight", mat(Hkv * hd, D))
        w.add_tensor(p + "attn_output.weight", mat(D, H * hd))
        w.add_tensor(p + "ffn_gate.weight", mat(F, D))
        w.add_tensor(p + "ffn_up.weight", mat(F, D))
        w.add_tensor(p + "ffn_down.weight", mat(D, F))
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", default="small", choices=["small", "small8", "bench", "gqa"])
    ap.add_argument("--seed", type=int, default=5)  # the committed tiny fixture
    ap.add_argument("--experts", default="mxfp4", choices=["mxfp4", "f16"])
    a = ap.parse_args()
    if a.shape == "gqa":
        gen_gqa(a.out, a.seed)
    else:
        gen_deepseek4(a.out, SHAPES[a.shape], a.seed, a.experts)


if __name__ == "__main__":
    main()
