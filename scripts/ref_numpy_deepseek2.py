#!/usr/bin/env python3
"""Independent float64 numpy forward pass of a deepseek2 GGUF (DeepSeek-V2/V3),
written from the DeepSeek-V2 paper (MLA, sec. 2.1; DeepSeekMoE, sec. 2.2), the
DeepSeek-V3 report (sigmoid gating with bias-corrected top-k, group-limited
routing) and DeepSeek's reference inference code (model.py: YaRN frequency
correction and the softmax mscale), reading the weights from the GGUF with the
gguf package (dequantized to float64, so it sees the stored values exactly).

Attention here is the EXPANDED form the paper writes: per head, keys
[W_UK c_t ; k_rope_t] and values W_UV c_t are materialised and ordinary
multi-head softmax attention runs over them. kvslim runs the absorbed form
(query through W_UK^T, attention over the latent); agreement checks both the
algebra and the code.

Output: a small GGUF with tensor `logits` (n_tokens, n_vocab) f32, the input
`tokens` (as f32), and metadata `ref.min_route_margin`: the smallest gap, over all
tokens and MoE layers, between the last selected and the first rejected expert
(or group) score. A gap near float32 rounding would make the routing of an
f32 engine legitimately differ; the script refuses to write below 1e-4.

usage: ref_numpy_deepseek2.py MODEL.gguf OUT.gguf [--n-tokens 64] [--seed 5]
"""
import argparse
import math
import sys

import numpy as np
import gguf

ARCH = "deepseek2"


class Model:
    def __init__(self, path):
        self.r = gguf.GGUFReader(path)
        self.kv = {f.name: f for f in self.r.fields.values()}
        self.t = {t.name: t for t in self.r.tensors}

    def key(self, k, default=None):
        f = self.kv.get(ARCH + "." + k)
        if f is None:
            return default
        v = f.parts[f.data[0]]
        return v.item() if v.size == 1 else v

    def has(self, name):
        return name in self.t

    def w(self, name):
        t = self.t[name]
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # numpy order
        return a.reshape(shape)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def yarn_freqs(dim, base, factor, orig, beta_fast, beta_slow):
    """model.py precompute_freqs_cis: per pair frequency with the YaRN ramp
    between interpolated (low frequencies) and extrapolated (high)."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if factor <= 1.0:
        return freqs

    def corr_dim(n_rot):
        return dim * math.log(orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(corr_dim(beta_fast)), 0)
    high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    smooth = 1.0 - ramp
    return freqs / factor * (1.0 - smooth) + freqs * smooth


def rope(x, pos, freqs):
    """Interleaved pairs (2i, 2i+1) rotated by pos * freqs[i] (complex view,
    as model.py apply_rotary_emb). x: (..., dim) for one position."""
    ang = pos * freqs
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def compare_llama_cpp(path, toks, ref):
    """Second opinion from another engine: llama.cpp's logits for the same
    tokens, as max |diff| / max |ref| (its f32 paths differ from float64).
    llama.cpp is the peer of scripts/setup_peers.sh (scripts/peer.py)."""
    import peer
    llama_cpp = peer.llama_cpp()
    llm = llama_cpp.Llama(model_path=path, n_ctx=max(128, len(toks) + 8), n_batch=len(toks), n_ubatch=len(toks),
                          n_threads=2, logits_all=True, verbose=False, type_k=0, type_v=0)   # f32 KV cache
    llm.eval([int(t) for t in toks])
    got = np.array(llm.scores[:len(toks)], dtype=np.float64)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print("llama.cpp %s vs float64 reference: max|diff|/max|ref| = %.3g (argmax agree %d/%d)" %
          (llama_cpp.__version__, err, int((got.argmax(1) == ref.argmax(1)).sum()), len(toks)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--n-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--llama-cpp", action="store_true",
                    help="also run llama.cpp (llama-cpp-python, scripts/setup_peers.sh) on the same tokens and report the difference")
    a = ap.parse_args()
    if a.llama_cpp:
        import peer
        peer.llama_cpp()   # into the reference Python before any work
    M = Model(a.model)

    L = M.key("block_count")
    E = M.key("embedding_length")
    H = M.key("attention.head_count")
    eps = M.key("attention.layer_norm_rms_epsilon")
    R = M.key("attention.kv_lora_rank")
    DR = M.key("rope.dimension_count")
    if M.key("attention.key_length_mla") is not None:
        DK, DV = M.key("attention.key_length_mla"), M.key("attention.value_length_mla")
    else:
        DK, DV = M.key("attention.key_length"), M.key("attention.value_length")
    DN = DK - DR
    n_dense = M.key("leading_dense_block_count", 0)
    n_used = M.key("expert_used_count", 0)
    n_group = M.key("expert_group_count", 0)
    n_group_used = M.key("expert_group_used_count", 0)
    gating = M.key("expert_gating_func", 1)   # 1 softmax, 2 sigmoid
    norm_w = bool(M.key("expert_weights_norm", False))
    route_scale = M.key("expert_weights_scale", 1.0)
    base = M.key("rope.freq_base", 10000.0)
    factor = M.key("rope.scaling.factor", 1.0)
    orig = M.key("rope.scaling.original_context_length", 4096)
    log_mul = M.key("rope.scaling.yarn_log_multiplier", 0.0)
    freqs = yarn_freqs(DR, base, factor, orig, 32.0, 1.0)
    # model.py: softmax_scale = qk_head_dim^-0.5 * mscale^2 with
    # mscale = 0.1 * mscale_all_dim * ln(factor) + 1; the GGUF key holds
    # 0.1 * mscale_all_dim
    mscale = 1.0 + log_mul * math.log(factor) if factor > 1.0 else 1.0
    scale = mscale * mscale / math.sqrt(DK)

    emb = M.w("token_embd.weight")
    V = emb.shape[0]
    rng = np.random.default_rng(a.seed)
    toks = rng.integers(3, V, size=a.n_tokens).astype(np.int32)
    T = len(toks)
    x = emb[toks].copy()                      # (T, E)
    min_margin = math.inf

    for l in range(L):
        p = "blk.%d." % l
        h = rmsnorm(x, M.w(p + "attn_norm.weight"), eps)
        if M.has(p + "attn_q_a.weight"):
            qa = rmsnorm(h @ M.w(p + "attn_q_a.weight").T, M.w(p + "attn_q_a_norm.weight"), eps)
            q = qa @ M.w(p + "attn_q_b.weight").T
        else:
            q = h @ M.w(p + "attn_q.weight").T
        q = q.reshape(T, H, DK)
        q_nope, q_pe = q[:, :, :DN], q[:, :, DN:]
        kv = h @ M.w(p + "attn_kv_a_mqa.weight").T           # (T, R + DR)
        c = rmsnorm(kv[:, :R], M.w(p + "attn_kv_a_norm.weight"), eps)
        k_pe = kv[:, R:]
        if M.has(p + "attn_k_b.weight"):
            W_UK = M.w(p + "attn_k_b.weight").transpose(0, 2, 1)   # (H, DN, R)
            W_UV = M.w(p + "attn_v_b.weight")                      # (H, DV, R)
        else:
            kvb = M.w(p + "attn_kv_b.weight").reshape(H, DN + DV, R)
            W_UK, W_UV = kvb[:, :DN, :], kvb[:, DN:, :]
        qr = np.stack([rope(q_pe[t], t, freqs) for t in range(T)])      # (T, H, DR)
        kr = np.stack([rope(k_pe[t], t, freqs) for t in range(T)])      # (T, DR)
        k_nope = np.einsum("hnr,tr->thn", W_UK, c)                       # (T, H, DN)
        vals = np.einsum("hvr,tr->thv", W_UV, c)                         # (T, H, DV)
        att = np.zeros((T, H, DV))
        for t in range(T):
            s = (np.einsum("hn,shn->hs", q_nope[t], k_nope[:t + 1]) +
                 np.einsum("hd,sd->hs", qr[t], kr[:t + 1])) * scale      # (H, t+1)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            att[t] = np.einsum("hs,shv->hv", s, vals[:t + 1])
        x = x + att.reshape(T, H * DV) @ M.w(p + "attn_output.weight").T

        h = rmsnorm(x, M.w(p + "ffn_norm.weight"), eps)
        if l < n_dense:
            g = h @ M.w(p + "ffn_gate.weight").T
            u = h @ M.w(p + "ffn_up.weight").T
            x = x + (silu(g) * u) @ M.w(p + "ffn_down.weight").T
            continue
        logits = h @ M.w(p + "ffn_gate_inp.weight").T                   # (T, X)
        X = logits.shape[1]
        scores = 1.0 / (1.0 + np.exp(-logits)) if gating == 2 else \
            np.exp(logits - logits.max(1, keepdims=True)) / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)
        sel = scores.copy()
        has_bias = M.has(p + "exp_probs_b.bias")
        if has_bias:
            sel = sel + M.w(p + "exp_probs_b.bias")
        Wg, Wu, Wd = M.w(p + "ffn_gate_exps.weight"), M.w(p + "ffn_up_exps.weight"), M.w(p + "ffn_down_exps.weight")
        out = np.zeros_like(h)
        for t in range(T):
            st = sel[t].copy()
            if n_group > 1 and 0 < n_group_used < n_group:
                gs = st.reshape(n_group, X // n_group)
                # model.py: group score = max without bias, sum of the top 2 with it
                gsc = np.sort(gs, axis=1)[:, -2:].sum(1) if has_bias else gs.max(1)
                order = np.argsort(-gsc, kind="stable")
                min_margin = min(min_margin, gsc[order[n_group_used - 1]] - gsc[order[n_group_used]])
                keep = np.zeros(n_group, bool)
                keep[order[:n_group_used]] = True
                st = np.where(np.repeat(keep, X // n_group), st, -np.inf)
            order = np.argsort(-st, kind="stable")
            ids = order[:n_used]
            if np.isfinite(st[order[n_used]]):
                min_margin = min(min_margin, st[order[n_used - 1]] - st[order[n_used]])
            wts = scores[t, ids]
            if norm_w:
                wts = wts / wts.sum()
            wts = wts * route_scale
            for e, we in zip(ids, wts):
                out[t] += we * ((silu(Wg[e] @ h[t]) * (Wu[e] @ h[t])) @ Wd[e].T)
        sg = h @ M.w(p + "ffn_gate_shexp.weight").T
        su = h @ M.w(p + "ffn_up_shexp.weight").T
        out += (silu(sg) * su) @ M.w(p + "ffn_down_shexp.weight").T
        x = x + out

    x = rmsnorm(x, M.w("output_norm.weight"), eps)
    out_w = M.w("output.weight") if M.has("output.weight") else emb
    logits = x @ out_w.T
    print("tokens %d vocab %d  max|logit| %.4f  min routing margin %.3g" % (T, V, np.abs(logits).max(), min_margin))
    if a.llama_cpp:
        compare_llama_cpp(a.model, toks, logits)
    if min_margin < 1e-4:
        sys.exit("routing margin %.3g too small: pick another --seed" % min_margin)
    w = gguf.GGUFWriter(a.out, "kvslim-ref")
    w.add_string("ref.model", a.model.split("/")[-1])
    w.add_float32("ref.min_route_margin", float(min_margin))
    w.add_tensor("tokens", toks.astype(np.float32))   # f32: exact for ids < 2^24
    w.add_tensor("logits", logits.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
