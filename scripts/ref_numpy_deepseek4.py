#!/usr/bin/env python3
"""Float64 numpy reference forward pass for DeepSeek V4 ("deepseek4") GGUF files.

Independent of kvslim: reads the GGUF with the PyPI `gguf` package and runs
the whole sequence at once (causal masks over full-sequence tensors, no
decode state), every activation float64. Written from the DeepSeek V4 report
and the official inference code's semantics (read for facts):

  h = embed[tok] repeated hc times                      (mHC residual streams)
  per layer, for the attention and the FFN sublayer:
    mixes = (hc_fn @ flat(h)) * rsqrt(mean(flat(h)^2) + eps)
    pre  = sigmoid(mixes[:hc]*s0 + b) + hc_eps;  post = 2 sigmoid(mixes[hc:2hc]*s1 + b)
    comb = Sinkhorn(softmax_rows(mixes[2hc:]*s2 + b) + hc_eps)   (col-normalize first, then
           iters-1 rounds of row, col; every divisor + hc_eps)
    y = sum_i pre_i h_i;  out = sublayer(rmsnorm(y));  h_j <- post_j out + sum_i comb[i,j] h_i
  attention (one 512-dim K=V head, MQA, H query heads):
    qr = rmsnorm(x Wq_a) q_norm; q = qr Wq_b per head, rms-normalized (no weight), RoPE tail
    kv = rmsnorm(x Wkv) kv_norm, RoPE tail (raw window entries)
    compressor (ratio m): kv_c = x Wc_kv, s = x Wc_gate; entry j pools tokens
      [jm, (j+1)m) per channel with softmax over (s + ape[slot]); m == 4 overlaps: also the
      previous block's tokens through the first half of the 2d channels (the current block
      uses the second half); then RMSNorm, RoPE tail at position j*m
    query t sees raw kv of tokens t-W+1..t and compressed entries j < (t+1)//m:
      HCA (m=128) all of them, CSA (m=4) the indexer's top-k:
      score_j = sum_h relu(qi_h . ki_j) * (x Wproj)_h / sqrt(ihd * nih)
      (qi = qr Wi_q per indexer head, RoPE tail; ki from the indexer's own compressor)
    o_h = softmax([q_h.k / sqrt(hd)] ++ [sink_h]) without the sink's value;
    inverse RoPE on o's tail; grouped output: o split into G groups, each through its
    o_lora rows of Wo_a, then Wo_b
    RoPE: adjacent pairs (2i, 2i+1) of the last rope_dim elements; window-only layers
    base rope.freq_base, compressed layers compress_rope_freq_base with YaRN frequency
    blending (factor, original context, beta fast/slow); no attention rescale
  MoE: s = sqrt(softplus(x Wg)); experts = topk(s + bias) or tid2eid[token] (hash layers);
    w = s[experts] / sum * route_scale; expert(x) = W2 (silu(min(W1 x, c)) * clamp(W3 x, -c, c));
    plus the shared expert
  head: pre = sigmoid(mixes*s + b) + hc_eps (hc mixes from output_hc_fn); y = sum pre_i h_i;
    logits = rmsnorm(y) output_norm @ output^T
Not simulated (f32/f16 inference here): FP8/FP4 activation quantization, the
indexer's Hadamard rotation (orthonormal on both q and k, so scores are
unchanged without quantization).

--indexer-q8 simulates kvslim's 8-bit indexer instead of the exact f64 scores
(the rule, written from the docs, not from the C code):
  keys: per 32 elements (float32 values), d = amax / 127, q = round-half-even(x * (1/d))
    clamped to +-127, d stored as f16 (q8_0); queries: the same rule over each head's whole
    row with the scale kept in f32; score_j = sum_h relu(dq_h sum_b isum_hb dk_jb) w_h with
    exact integer block dots isum (the sums themselves in f64 here).

Writes a binary reference file: magic "DS4R", u32 n_tokens, n_vocab, n_rows,
min_margin(f32), then tokens (u32), row positions (u32), logits rows (f32).
min_margin is the smallest gap, relative to the score scale, between the k-th
and (k+1)-th indexer score over all CSA queries: a top-k selection an f32
engine could flip needs a gap near f32 rounding.

usage: scripts/ref_numpy_deepseek4.py MODEL.gguf OUT.bin [--tokens N] [--seed S] [--indexer-q8]
(needs: pip install gguf numpy)
"""
import argparse
import struct
import sys

import numpy as np
import gguf


def field(r, key, default=None):
    if key not in r.fields:
        if default is None:
            sys.exit(f"missing key {key}")
        return default
    f = r.fields[key]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[-1]).decode()
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.parts[i].tolist()[0] for i in f.data]
    return f.parts[f.data[0]].tolist()[0]


def rms(x, w=None, eps=1e-6):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * w if w is not None else y


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


class Model:
    q8 = False  # --indexer-q8

    def __init__(self, path):
        r = gguf.GGUFReader(path)
        A = "deepseek4"
        if field(r, "general.architecture") != A:
            sys.exit("not a deepseek4 GGUF")
        g = lambda k, d=None: field(r, f"{A}.{k}", d)
        self.L = g("block_count")
        self.D = g("embedding_length")
        self.H = g("attention.head_count")
        self.hd = g("attention.key_length")
        self.rd = g("rope.dimension_count")
        self.eps = g("attention.layer_norm_rms_epsilon")
        self.W = g("attention.sliding_window")
        self.ratios = g("attention.compress_ratios")
        self.base = g("rope.freq_base")
        self.cbase = g("attention.compress_rope_freq_base")
        self.yarn_factor = g("rope.scaling.factor", 1.0)
        self.yarn_orig = g("rope.scaling.original_context_length", 0)
        self.beta_fast = g("rope.scaling.yarn_beta_fast", 32.0)
        self.beta_slow = g("rope.scaling.yarn_beta_slow", 1.0)
        self.G = g("attention.output_group_count")
        self.olr = g("attention.output_lora_rank")
        self.nih = g("attention.indexer.head_count")
        self.ihd = g("attention.indexer.key_length")
        self.topk = g("attention.indexer.top_k")
        self.hc = g("hyper_connection.count")
        self.iters = g("hyper_connection.sinkhorn_iterations")
        self.hc_eps = g("hyper_connection.epsilon")
        self.n_hash = g("hash_layer_count", 0)
        self.E = g("expert_count")
        self.K = g("expert_used_count")
        self.route_scale = g("expert_weights_scale", 1.0)
        self.clamp = g("swiglu_clamp_exp", [0.0] * self.L)
        self.clamp_sh = g("swiglu_clamp_shexp", [0.0] * self.L)
        self.w = {}
        for t in r.tensors:
            if t.tensor_type == gguf.GGMLQuantizationType.I32:  # the hash routing table
                a = np.asarray(t.data, dtype=np.int32).astype(np.float64)
            else:
                a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
            self.w[t.name] = a.reshape(list(reversed([int(x) for x in t.shape])))

    def freqs(self, ratio):
        rd = self.rd
        base = self.cbase if ratio else self.base
        f = 1.0 / base ** (np.arange(0, rd, 2, dtype=np.float64) / rd)
        if ratio and self.yarn_orig > 0:
            def corr(rot):
                return rd * np.log(self.yarn_orig / (rot * 2 * np.pi)) / (2 * np.log(base))
            low = max(np.floor(corr(self.beta_fast)), 0)
            high = min(np.ceil(corr(self.beta_slow)), rd - 1)
            ramp = np.clip((np.arange(rd // 2) - low) / max(high - low, 1e-3), 0, 1)
            smooth = 1 - ramp
            f = f / self.yarn_factor * (1 - smooth) + f * smooth
        return f

    def rope(self, x, pos, f, inverse=False):
        """x (..., n, [heads,] d) tail rotated at positions pos (n,)."""
        x = x.copy()
        ang = np.outer(pos, f)  # (n, rd/2)
        c, s = np.cos(ang), np.sin(ang)
        if inverse:
            s = -s
        if x.ndim == 3:
            c, s = c[:, None, :], s[:, None, :]
        t = x[..., -self.rd:]
        a, b = t[..., 0::2].copy(), t[..., 1::2].copy()
        t[..., 0::2] = a * c - b * s
        t[..., 1::2] = a * s + b * c
        return x

    def hc_split(self, mixes, scale, base):
        hc = self.hc
        pre = sigmoid(mixes[:, :hc] * scale[0] + base[:hc]) + self.hc_eps
        post = 2 * sigmoid(mixes[:, hc:2 * hc] * scale[1] + base[hc:2 * hc])
        comb = (mixes[:, 2 * hc:] * scale[2] + base[2 * hc:]).reshape(-1, hc, hc)
        comb = softmax(comb, -1) + self.hc_eps
        comb = comb / (comb.sum(-2, keepdims=True) + self.hc_eps)
        for _ in range(self.iters - 1):
            comb = comb / (comb.sum(-1, keepdims=True) + self.hc_eps)
            comb = comb / (comb.sum(-2, keepdims=True) + self.hc_eps)
        return pre, post, comb

    def hc_mixes(self, h, fn):
        flat = h.reshape(h.shape[0], -1)
        return (flat @ fn.T) / np.sqrt(np.mean(flat * flat, -1, keepdims=True) + self.eps)

    def compress(self, x, p, name, m, d, f):
        """Entries (T//m, d) of compressor `name`, normed and roped at positions j*m."""
        T = x.shape[0]
        n = T // m
        if n == 0:
            return np.zeros((0, d))
        kv = x @ self.w[p + name + "_kv.weight"].T
        sc = x @ self.w[p + name + "_gate.weight"].T
        ape = self.w[p + name + "_ape.weight"]  # (m, coff*d)
        out = np.zeros((n, d))
        for j in range(n):
            blk = slice(j * m, (j + 1) * m)
            if m == 4:
                vals = kv[blk, d:]
                scores = sc[blk, d:] + ape[:, d:]
                if j > 0:
                    pb = slice((j - 1) * m, j * m)
                    vals = np.concatenate([kv[pb, :d], vals])
                    scores = np.concatenate([sc[pb, :d] + ape[:, :d], scores])
            else:
                vals, scores = kv[blk], sc[blk] + ape
            out[j] = np.sum(vals * softmax(scores, 0), 0)
        out = rms(out, self.w[p + name + "_norm.weight"], self.eps)
        return self.rope(out, np.arange(n) * m, f)

    @staticmethod
    def quant8(x, f16_scale, block=32):
        """Per-block int8 quantization of the last axis: (q as f64 (..., nblk, block), scales as f64)."""
        x = np.asarray(x, np.float32)
        b = x.reshape(x.shape[:-1] + (-1, block))
        d = np.max(np.abs(b), -1) / np.float32(127)
        inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
        q = np.clip(np.rint(b * inv[..., None]), -127, 127)
        if f16_scale:
            d = d.astype(np.float16)
        return q.astype(np.float64), d.astype(np.float64)

    def topk_margin(self, s, dots, order):
        """How far this query's top-k selection is from changing under rounding: the
        relative gap between the k-th and (k+1)-th score, or, when they tie at exactly
        zero (all relu inputs negative), how close any zero-scored entry's relu inputs
        come to zero (ties are broken by the lower index in both engines)."""
        a, b = s[order[self.topk - 1]], s[order[self.topk]]
        scale = np.max(np.abs(s)) + 1e-30
        if a != b:
            return (a - b) / scale
        if a != 0.0:
            return 0.0
        zero = s == 0.0
        return np.min(np.abs(dots[:, zero])) / (np.max(np.abs(dots)) + 1e-30)

    def attention(self, x, li, margins):
        p = f"blk.{li}."
        w = self.w
        T, H, hd, m = x.shape[0], self.H, self.hd, self.ratios[li]
        f = self.freqs(m)
        pos = np.arange(T)
        qr = rms(x @ w[p + "attn_q_a.weight"].T, w[p + "attn_q_a_norm.weight"], self.eps)
        q = (qr @ w[p + "attn_q_b.weight"].T).reshape(T, H, hd)
        q = self.rope(rms(q, None, self.eps), pos, f)
        kv = self.rope(rms(x @ w[p + "attn_kv.weight"].T, w[p + "attn_kv_a_norm.weight"], self.eps), pos, f)
        comp = self.compress(x, p, "attn_compressor", m, hd, f) if m else np.zeros((0, hd))
        if m == 4:
            ik = self.compress(x, p, "indexer_compressor", m, self.ihd, f)
            iq = self.rope((qr @ w[p + "indexer.attn_q_b.weight"].T).reshape(T, self.nih, self.ihd), pos, f)
            iw = (x @ w[p + "indexer.proj.weight"].T) / np.sqrt(self.ihd * self.nih)
            if self.q8:
                kq, kd = self.quant8(ik, True)
                qq, qd = self.quant8(iq, False, self.ihd)  # (T, nih, 1, ihd), (T, nih, 1)
                qq = qq.reshape(T, self.nih, -1, 32)
                qd = qd.reshape(T, self.nih)
        sinks = w[p + "attn_sinks.weight"]
        o = np.zeros((T, H, hd))
        for t in range(T):
            keys = kv[max(0, t - self.W + 1):t + 1]
            if m:
                nv = (t + 1) // m
                if m == 4 and nv > self.topk:
                    if self.q8:
                        # (nih, nblk, 32) x (nv, nblk, 32) -> exact block sums, scaled per block
                        isum = np.einsum("hbe,jbe->hjb", qq[t], kq[:nv])
                        dots = np.einsum("hjb,jb->hj", isum, kd[:nv]) * qd[t][:, None]
                    else:
                        dots = iq[t] @ ik[:nv].T  # (nih, nv)
                    s = (np.maximum(dots, 0) * iw[t][:, None]).sum(0)
                    order = np.argsort(-s, kind="stable")  # ties: the lower index first
                    margins.append(self.topk_margin(s, dots, order))
                    sel = np.sort(order[:self.topk])
                    keys = np.concatenate([keys, comp[sel]])
                else:
                    keys = np.concatenate([keys, comp[:nv]])
            sc = q[t] @ keys.T / np.sqrt(hd)  # (H, n)
            mx = np.maximum(sc.max(-1), sinks)
            e = np.exp(sc - mx[:, None])
            den = e.sum(-1) + np.exp(sinks - mx)
            o[t] = (e @ keys) / den[:, None]
        o = self.rope(o, pos, f, inverse=True)
        G, olr = self.G, self.olr
        og = o.reshape(T, G, -1)
        wa = w[p + "attn_output_a.weight"].reshape(G, olr, -1)
        mid = np.einsum("tgd,grd->tgr", og, wa).reshape(T, G * olr)
        return mid @ w[p + "attn_output_b.weight"].T

    def moe(self, x, li, tokens):
        p = f"blk.{li}."
        w = self.w
        T = x.shape[0]
        s = np.sqrt(np.logaddexp(0, x @ w[p + "ffn_gate_inp.weight"].T))
        if li < self.n_hash:
            idx = w[p + "ffn_gate_tid2eid.weight"][tokens].astype(np.int64)
        else:
            sel = s + w[p + "exp_probs_b.bias"]
            idx = np.argsort(-sel, axis=-1, kind="stable")[:, :self.K]
        wts = np.take_along_axis(s, idx, -1)
        wts = wts / wts.sum(-1, keepdims=True) * self.route_scale

        def expert(xx, g, u, d, c):
            a, b = xx @ g.T, xx @ u.T
            if c > 0:
                b = np.clip(b, -c, c)
                a = np.minimum(a, c)
            return (a * sigmoid(a) * b) @ d.T
        y = expert(x, w[p + "ffn_gate_shexp.weight"], w[p + "ffn_up_shexp.weight"], w[p + "ffn_down_shexp.weight"],
                   self.clamp_sh[li])
        for t in range(T):
            for k in range(self.K):
                e = idx[t, k]
                y[t] += wts[t, k] * expert(x[t:t + 1], w[p + "ffn_gate_exps.weight"][e],
                                           w[p + "ffn_up_exps.weight"][e], w[p + "ffn_down_exps.weight"][e],
                                           self.clamp[li])[0]
        return y

    def sublayer(self, h, li, kind, fn):
        p = f"blk.{li}."
        w = self.w
        pre, post, comb = self.hc_split(self.hc_mixes(h, w[p + f"hc_{kind}_fn.weight"]),
                                        w[p + f"hc_{kind}_scale.weight"], w[p + f"hc_{kind}_base.weight"])
        y = np.einsum("ti,tid->td", pre, h)
        out = fn(rms(y, w[p + f"{kind}_norm.weight"], self.eps))
        return post[:, :, None] * out[:, None, :] + np.einsum("tij,tid->tjd", comb, h)

    def forward(self, tokens):
        w = self.w
        T = len(tokens)
        h = np.repeat(w["token_embd.weight"][tokens][:, None, :], self.hc, axis=1)
        margins = []
        for li in range(self.L):
            h = self.sublayer(h, li, "attn", lambda x: self.attention(x, li, margins))
            h = self.sublayer(h, li, "ffn", lambda x: self.moe(x, li, tokens))
        mixes = self.hc_mixes(h, w["output_hc_fn.weight"])
        pre = sigmoid(mixes * w["output_hc_scale.weight"][0] + w["output_hc_base.weight"]) + self.hc_eps
        y = np.einsum("ti,tid->td", pre, h)
        logits = rms(y, w["output_norm.weight"], self.eps) @ w["output.weight"].T
        return logits, (min(margins) if margins else 1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--tokens", type=int, default=701)
    ap.add_argument("--seed", type=int, default=9)  # the committed references (token sequence)
    ap.add_argument("--every", type=int, default=25, help="store every Nth logits row (plus the last 4)")
    ap.add_argument("--indexer-q8", action="store_true", help="simulate the 8-bit indexer (see the docstring)")
    a = ap.parse_args()
    m = Model(a.model)
    m.q8 = a.indexer_q8
    V = m.w["token_embd.weight"].shape[0]
    tokens = np.random.default_rng(a.seed).integers(3, V, a.tokens)
    logits, margin = m.forward(tokens)
    rows = sorted(set(range(0, a.tokens, a.every)) | set(range(a.tokens - 4, a.tokens)))
    print(f"tokens {a.tokens}, rows {len(rows)}, min indexer top-k margin {margin:.3g}, "
          f"logit rms {np.sqrt(np.mean(logits ** 2)):.3f}")
    with open(a.out, "wb") as fo:
        fo.write(b"DS4R" + struct.pack("<IIIf", a.tokens, V, len(rows), margin))
        fo.write(np.asarray(tokens, "<u4").tobytes())
        fo.write(np.asarray(rows, "<u4").tobytes())
        fo.write(logits[rows].astype("<f4").tobytes())


if __name__ == "__main__":
    main()
