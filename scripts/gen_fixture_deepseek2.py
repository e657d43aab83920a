#!/usr/bin/env python3
"""Random-weight GGUF fixtures of the deepseek2 architecture (DeepSeek-V2/V3:
MLA + MoE), written with the tensor names and metadata keys of the GGUF
ecosystem (gguf-py constants, as llama.cpp's converter writes them), so other
engines load the same files.

Configurations (--config):
  a      V2-Lite-like: no query LoRA, softmax gating, 1 leading dense layer,
         YaRN, split attn_k_b / attn_v_b (the current converter's format).
  b      V3-like: query LoRA, sigmoid gating with exp_probs_b bias,
         normalized weights, routed scaling 2.5, expert groups (4, 2 used).
  c      as (a) but in the legacy format: one combined attn_kv_b per layer
         and no key_length_mla/value_length_mla keys.
  d      as (a) with 16 heads and latent 64 + rope 32 (rows of 96 = three
         32-element blocks): decode runs the many-head latent kernel
         (src/attn/attn_latent*.c), incl. its int8 path with a q8_0 cache.
  lite   as (a) with V2-Lite's 27 layers (narrow: hidden 32, 2 heads; MoE in the last
         2, so a 64-token reference has a clear routing margin): the file
         llama.cpp reads through its "lite" path (no query LoRA, decided by
         the layer count)
  bench  DeepSeek-V2-Lite-shaped attention (27 layers, hidden 2048, 16
         heads, latent 512 + rope 64, nope 128, v 128) with a small dense FFN
         in every layer and Q4_0 weights; for speed runs only (~350 MB,
         git-ignored).

Small fixtures store matrices in f16 and vectors in f32: kvslim multiplies f16
weights with f32 activations, so the numpy reference
(scripts/ref_numpy_deepseek2.py, float64 on the same stored values) can be
compared tightly.

usage: gen_fixture_deepseek2.py --config a|b|c|d|lite|bench -o OUT.gguf [--seed N] [--n-layer N]
needs: numpy, gguf (PyPI)
"""
import argparse
import math

import numpy as np
import gguf

ARCH = "deepseek2"

CONFIGS = {
    "a": dict(n_layer=3, n_embd=64, n_head=4, q_lora=0, kv_lora=32, rope=16, nope=32, v=24,
              n_ff=96, n_expert=8, n_used=2, n_shared=2, n_ff_exp=16, n_dense=1,
              gating=1, norm=False, scale=1.0, n_group=0, n_group_used=0, bias=False,
              yarn=dict(factor=4.0, orig=256, log_mul=0.0707, beta_fast=32.0, beta_slow=1.0),
              vocab=320, ctx=1024, kvb_split=True, quant=None),
    "b": dict(n_layer=3, n_embd=64, n_head=4, q_lora=48, kv_lora=32, rope=16, nope=32, v=32,
              n_ff=96, n_expert=16, n_used=4, n_shared=1, n_ff_exp=16, n_dense=1,
              gating=2, norm=True, scale=2.5, n_group=4, n_group_used=2, bias=True,
              yarn=dict(factor=40.0, orig=128, log_mul=0.1, beta_fast=32.0, beta_slow=1.0),
              vocab=320, ctx=4096, kvb_split=True, quant=None),
    "bench": dict(n_layer=27, n_embd=2048, n_head=16, q_lora=0, kv_lora=512, rope=64, nope=128, v=128,
                  n_ff=1408, n_expert=0, n_used=0, n_shared=0, n_ff_exp=0, n_dense=27,
                  gating=1, norm=False, scale=1.0, n_group=0, n_group_used=0, bias=False,
                  yarn=dict(factor=40.0, orig=4096, log_mul=0.0707, beta_fast=32.0, beta_slow=1.0),
                  vocab=1024, ctx=163840, kvb_split=True, quant="q4_0"),
}
CONFIGS["c"] = dict(CONFIGS["a"], kvb_split=False)
# V2-Lite's form exactly: 27 layers (llama.cpp's "lite" test is the layer count) and no
# q_lora_rank key, at small widths (tests/data/deepseek2_lite.gguf)
CONFIGS["lite"] = dict(CONFIGS["a"], n_layer=27, n_embd=32, n_head=2, kv_lora=32, rope=16, nope=16, v=16,
                       n_ff=64, n_expert=4, n_used=2, n_shared=1, n_ff_exp=16, vocab=288, n_dense=25)
CONFIGS["d"] = dict(CONFIGS["a"], n_head=16, kv_lora=64, rope=32)


def tokenizer(w, n_vocab):
    """A SentencePiece-style ('llama') vocabulary: <unk> <s> </s>, the 256
    byte tokens, then filler pieces; enough for loaders to accept it."""
    toks, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        toks.append("<0x%02X>" % b); scores.append(0.0); types.append(6)
    i = 0
    while len(toks) < n_vocab:
        toks.append("\u2581tok%d" % i); scores.append(-float(i)); types.append(1); i += 1
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, choices=sorted(CONFIGS))
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--n-layer", type=int, default=None,
                    help="override the layer count (llama.cpp takes a deepseek2 file without "
                         "q_lora_rank only when it has 27 layers, V2-Lite's count)")
    ap.add_argument("--n-dense", type=int, default=None, help="override the leading dense layer count")
    a = ap.parse_args()
    c = dict(CONFIGS[a.config])
    if a.n_layer:
        c["n_layer"] = a.n_layer
    if a.n_dense is not None:
        c["n_dense"] = a.n_dense
    seed = a.seed if a.seed is not None else {"a": 11, "b": 22, "c": 11, "d": 33, "lite": 44, "bench": 7}[a.config]
    rng = np.random.default_rng(seed)
    qtype = gguf.GGMLQuantizationType.Q4_0 if c["quant"] == "q4_0" else None

    w = gguf.GGUFWriter(a.out, ARCH)
    w.add_name("kvslim deepseek2 fixture " + a.config)
    E, H, R, DR, DN, DV = c["n_embd"], c["n_head"], c["kv_lora"], c["rope"], c["nope"], c["v"]
    w.add_block_count(c["n_layer"])
    w.add_context_length(c["ctx"])
    w.add_embedding_length(E)
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(H)
    w.add_head_count_kv(1 if c["kvb_split"] else H)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(c["vocab"])
    if c["q_lora"]:
        w.add_q_lora_rank(c["q_lora"])
    elif c["n_layer"] not in (26, 27):
        # llama.cpp reads q_lora_rank unless the layer count is a lite model's (26, 27):
        # a no-LoRA file of another depth states 0 (its loader then takes attn_q); the
        # converter never meets this case, every real model without query LoRA is lite
        w.add_q_lora_rank(0)
    w.add_kv_lora_rank(R)
    if c["kvb_split"]:
        # the converter's MLA layout: the cache row is the latent + rope key
        w.add_key_length(R + DR)
        w.add_value_length(R)
        w.add_key_length_mla(DN + DR)
        w.add_value_length_mla(DV)
    else:
        w.add_key_length(DN + DR)
        w.add_value_length(DV)
    w.add_rope_dimension_count(DR)
    w.add_leading_dense_block_count(c["n_dense"])
    if c["n_expert"]:
        w.add_expert_count(c["n_expert"])
        w.add_expert_used_count(c["n_used"])
        w.add_expert_shared_count(c["n_shared"])
        w.add_expert_feed_forward_length(c["n_ff_exp"])
        w.add_expert_weights_scale(c["scale"])
        w.add_expert_weights_norm(c["norm"])
        w.add_expert_gating_func(gguf.ExpertGatingFuncType(c["gating"]))
        if c["n_group"]:
            w.add_uint32("%s.expert_group_count" % ARCH, c["n_group"])
            w.add_uint32("%s.expert_group_used_count" % ARCH, c["n_group_used"])
    else:
        # dense everywhere; llama.cpp still reads these keys for deepseek2
        w.add_expert_count(0)
        w.add_expert_used_count(0)
        w.add_expert_shared_count(0)
        w.add_expert_feed_forward_length(c["n_ff"])
        w.add_expert_weights_scale(1.0)
    y = c["yarn"]
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(y["factor"])
    w.add_rope_scaling_orig_ctx_len(y["orig"])
    w.add_rope_scaling_yarn_log_mul(y["log_mul"])   # = 0.1 * mscale_all_dim, as the converter writes it
    tokenizer(w, c["vocab"])

    def mat(n_out, n_in, std=None, lead=()):
        s = std if std is not None else 1.0 / math.sqrt(n_in)
        return (rng.standard_normal(tuple(lead) + (n_out, n_in)) * s).astype(np.float32)

    def norm_w(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def add(name, arr, vector=False):
        if qtype is not None and not vector and arr.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(arr, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
        elif not vector:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, arr)

    V = c["vocab"]
    add("token_embd.weight", mat(V, E, std=1.0))
    add("output_norm.weight", norm_w(E), vector=True)
    add("output.weight", mat(V, E))
    for i in range(c["n_layer"]):
        p = "blk.%d." % i
        add(p + "attn_norm.weight", norm_w(E), vector=True)
        if c["q_lora"]:
            add(p + "attn_q_a.weight", mat(c["q_lora"], E))
            add(p + "attn_q_a_norm.weight", norm_w(c["q_lora"]), vector=True)
            add(p + "attn_q_b.weight", mat(H * (DN + DR), c["q_lora"]))
        else:
            add(p + "attn_q.weight", mat(H * (DN + DR), E))
        add(p + "attn_kv_a_mqa.weight", mat(R + DR, E))
        add(p + "attn_kv_a_norm.weight", norm_w(R), vector=True)
        kvb = mat(H * (DN + DV), R)          # rows per head: DN key rows, then DV value rows
        if c["kvb_split"]:
            per = kvb.reshape(H, DN + DV, R)
            k_b = np.ascontiguousarray(per[:, :DN, :].transpose(0, 2, 1))   # (H, R, DN): ne [DN, R, H]
            v_b = np.ascontiguousarray(per[:, DN:, :])                      # (H, DV, R): ne [R, DV, H]
            add(p + "attn_k_b.weight", k_b)
            add(p + "attn_v_b.weight", v_b)
        else:
            add(p + "attn_kv_b.weight", kvb)
        add(p + "attn_output.weight", mat(E, H * DV))
        add(p + "ffn_norm.weight", norm_w(E), vector=True)
        if i < c["n_dense"]:
            add(p + "ffn_gate.weight", mat(c["n_ff"], E))
            add(p + "ffn_up.weight", mat(c["n_ff"], E))
            add(p + "ffn_down.weight", mat(E, c["n_ff"]))
        else:
            X, F, S = c["n_expert"], c["n_ff_exp"], c["n_shared"]
            add(p + "ffn_gate_inp.weight", mat(X, E, std=1.0 / math.sqrt(E) * 2.0))
            if c["bias"]:
                add(p + "exp_probs_b.bias", (0.05 * rng.standard_normal(X)).astype(np.float32), vector=True)
            add(p + "ffn_gate_exps.weight", mat(F, E, lead=(X,)))
            add(p + "ffn_up_exps.weight", mat(F, E, lead=(X,)))
            add(p + "ffn_down_exps.weight", mat(E, F, lead=(X,)))
            add(p + "ffn_gate_shexp.weight", mat(F * S, E))
            add(p + "ffn_up_shexp.weight", mat(F * S, E))
            add(p + "ffn_down_shexp.weight", mat(E, F * S))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
