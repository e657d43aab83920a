#!/usr/bin/env python3
"""Float64 numpy reference forward pass for Gemma 4 (E2B/E4B-style) GGUFs.

Independent of kvslim: weights dequantized with the PyPI `gguf` package,
every activation float64, the whole sequence at once with explicit masks.
Written from the Gemma 3 / Gemma 3n / Gemma 4 model descriptions (HF
transformers modelling) and llama.cpp's GGUF conventions (norm gains already
include Gemma's +1; GGUF matrices are [n_in, n_out]):

  x = token_embd[tok] * sqrt(d)
  ple = (rmsnorm(x Wp / sqrt(d)) * proj_norm + ple_embd[tok] * sqrt(P)) / sqrt(2),
        per layer slice of width P
  per layer l:
    h = rmsnorm(x) * attn_norm
    q = rmsnorm_head(h Wq) * q_norm -> RoPE
    own K/V layers: k = rmsnorm_head(h Wk) * k_norm -> RoPE;
                    v = rmsnorm_head(h Wv) (no gain; V = raw K projection when
                    attn_v is absent)
    shared layers (l >= n_layer - shared_kv_layers): k, v of the last
                    non-shared layer of the same type (sliding/global)
    RoPE: NeoX halves, base rope.freq_base_swa on sliding layers,
          rope.freq_base with rope_freqs divisors on global ones
    attention: scale 1, causal; sliding layers see keys j with i - W < j <= i
    x += rmsnorm(o Wo) * post_attention_norm
    x += rmsnorm(FFN(rmsnorm(x) * ffn_norm)) * post_ffw_norm,
         FFN(u) = (gelu_tanh(u Wg) * (u Wu)) Wd
    x += rmsnorm((gelu_tanh(x W_inp_gate) * ple_l) W_proj) * post_norm
    x *= layer_output_scale
  logits = softcap * tanh((rmsnorm(x) * output_norm) E^T / softcap)

usage: scripts/ref_numpy_gemma4.py tests/data/gemma4_tiny.gguf
           --out tests/data/gemma4_tiny_ref.json [--n 64] [--seed 1]
(needs: pip install gguf numpy)
"""
import argparse
import json

import numpy as np
import gguf


def field(r, key, default=None):
    if key not in r.fields:
        return default
    f = r.fields[key]
    if len(f.data) != 1:
        return [f.parts[i].tolist()[0] for i in f.data]
    v = f.parts[f.data[0]]
    return v.tolist()[0] if len(v) == 1 else v.tolist()


def rmsnorm(x, w, eps):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * w if w is not None else y


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def rope(x, pos, base, factors):
    """x: (T, H, D), NeoX halves: pairs (i, i + D/2)."""
    D = x.shape[-1]
    inv = base ** (-np.arange(0, D // 2, dtype=np.float64) * 2.0 / D)
    if factors is not None:
        inv = inv / factors
    ang = pos[:, None] * inv[None, :]          # (T, D/2)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


class Model:
    """gemma4, or gemma3 (used by ref_numpy_gemma3.py): gemma3 has no V norm,
    no shared layers, no per-layer embeddings, local RoPE base 10000, every
    6th layer global, and q scaled by head_dim^-1/2 (llama.cpp's reading of
    query_pre_attn_scalar for all sizes but the 27B)."""

    def __init__(self, path):
        r = gguf.GGUFReader(path)
        A = bytes(r.fields["general.architecture"].parts[-1]).decode()
        if A not in ("gemma3", "gemma4"):
            raise SystemExit(f"architecture {A!r} is neither gemma3 nor gemma4")
        self.gemma4 = A == "gemma4"
        g = lambda k, d=None: field(r, f"{A}.{k}", d)
        self.L, self.d = g("block_count"), g("embedding_length")
        self.H, self.Hkv = g("attention.head_count"), g("attention.head_count_kv")
        self.D = g("attention.key_length")
        self.eps = g("attention.layer_norm_rms_epsilon")
        self.base, self.base_swa = g("rope.freq_base"), g("rope.freq_base_swa", 10000.0)
        self.W = g("attention.sliding_window")
        pat = g("attention.sliding_window_pattern", 6)
        self.swa = [bool(v) for v in pat] if isinstance(pat, list) else [i % pat < pat - 1 for i in range(self.L)]
        self.scale = 1.0 if self.gemma4 else 1.0 / np.sqrt(self.D)
        self.kv_from = self.L - g("attention.shared_kv_layers", 0)
        self.P = g("embedding_length_per_layer_input", 0)
        self.cap = g("final_logit_softcapping", 0.0)
        self.w = {}
        for t in r.tensors:
            a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
            ne = [int(x) for x in t.shape]
            self.w[t.name] = a.reshape(list(reversed(ne))) if len(ne) > 1 else a.reshape(-1)

    def source(self, l):
        if l < self.kv_from:
            return l
        return max(j for j in range(self.kv_from) if self.swa[j] == self.swa[l])

    def forward(self, toks):
        w, T, d, P, L = self.w, len(toks), self.d, self.P, self.L
        pos = np.arange(T, dtype=np.float64)
        x = w["token_embd.weight"][toks] * np.sqrt(d)
        ple = None
        if P:
            proj = (x @ w["per_layer_model_proj.weight"].T / np.sqrt(d)).reshape(T, L, P)
            proj = rmsnorm(proj, w["per_layer_proj_norm.weight"], self.eps)
            ple = (proj + w["per_layer_token_embd.weight"][toks].reshape(T, L, P) * np.sqrt(P)) / np.sqrt(2.0)
        factors = w.get("rope_freqs.weight") if self.gemma4 else None
        kv = {}
        i_idx, j_idx = np.arange(T)[:, None], np.arange(T)[None, :]
        for l in range(L):
            p = f"blk.{l}."
            h = rmsnorm(x, w[p + "attn_norm.weight"], self.eps)
            base, fac = (self.base_swa, None) if self.swa[l] else (self.base, factors)
            q = rmsnorm((h @ w[p + "attn_q.weight"].T).reshape(T, self.H, self.D), w[p + "attn_q_norm.weight"], self.eps)
            q = rope(q, pos, base, fac)
            if l < self.kv_from:
                kraw = (h @ w[p + "attn_k.weight"].T).reshape(T, self.Hkv, self.D)
                vraw = (h @ w[p + "attn_v.weight"].T).reshape(T, self.Hkv, self.D) if p + "attn_v.weight" in w else kraw
                k = rope(rmsnorm(kraw, w[p + "attn_k_norm.weight"], self.eps), pos, base, fac)
                v = rmsnorm(vraw, None, self.eps) if self.gemma4 else vraw
                kv[l] = (k, v)
            k, v = kv[self.source(l)]
            mask = j_idx <= i_idx
            if self.swa[l]:
                mask = mask & (j_idx > i_idx - self.W)
            o = np.zeros((T, self.H, self.D))
            g = self.H // self.Hkv
            for hh in range(self.H):
                s = (q[:, hh, :] @ k[:, hh // g, :].T) * self.scale
                s = np.where(mask, s, -np.inf)
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                o[:, hh, :] = s @ v[:, hh // g, :]
            a = o.reshape(T, -1) @ w[p + "attn_output.weight"].T
            x = x + rmsnorm(a, w[p + "post_attention_norm.weight"], self.eps)
            u = rmsnorm(x, w[p + "ffn_norm.weight"], self.eps)
            f = (gelu(u @ w[p + "ffn_gate.weight"].T) * (u @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
            x = x + rmsnorm(f, w[p + "post_ffw_norm.weight"], self.eps)
            if P:
                gt = gelu(x @ w[p + "inp_gate.weight"].T) * ple[:, l, :]
                x = x + rmsnorm(gt @ w[p + "proj.weight"].T, w[p + "post_norm.weight"], self.eps)
            if p + "layer_output_scale.weight" in w:
                x = x * w[p + "layer_output_scale.weight"][0]
        out = w.get("output.weight", w["token_embd.weight"])
        logits = rmsnorm(x, w["output_norm.weight"], self.eps) @ out.T
        if self.cap:
            logits = self.cap * np.tanh(logits / self.cap)
        return logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    m = Model(a.model)
    rng = np.random.default_rng(a.seed)
    n_vocab = m.w["token_embd.weight"].shape[0]
    toks = [2] + [int(t) for t in rng.integers(4, n_vocab, a.n - 1)]
    logits = m.forward(np.array(toks))
    res = {"engine": "numpy float64 (scripts/ref_numpy_gemma4.py)", "model": a.model.split("/")[-1],
           "tokens": toks, "n_vocab": int(n_vocab),
           "logits": [[round(float(v), 6) for v in row] for row in logits]}
    with open(a.out, "w") as f:
        json.dump(res, f)
    print(f"wrote {a.out}: {len(toks)} tokens, logits |max| {np.abs(logits).max():.3f}, std {logits.std():.3f}")


if __name__ == "__main__":
    main()
